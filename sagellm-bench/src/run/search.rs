//! SLO capacity search: the largest load (a closed loop's concurrency or an open loop's
//! rate) at which a workload still meets its latency objectives.
//!
//! A layer above the runner: every probe is one ordinary run of the workload at one load
//! ([`crate::run::runner::run_with`]), written by the reporters the door hands in, so each
//! probe keeps a whole run folder. The search brackets (the range's low end, then doubling up
//! to its high end) until a point fails, then bisects between the largest passing point and
//! the first failing one until they are one step apart, within a bound on probes and on time.
//!
//! A probe passes when it ran to its end, at least `fraction` of its requests met every
//! objective (the goodput fraction, failed requests counting as misses) and its error rate is
//! at most `max_error_rate`. It stops early once it can no longer pass: more requests missed
//! than the fraction allows, more failed than the error limit allows, or (open loop) the client
//! fell more than [`LAG_LIMIT_MS`] behind its schedule, so the rate was never offered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::results::goodput::RequestLatency;
use crate::results::metrics::percentile;
use crate::results::record::RequestRecord;
use crate::results::summary::{Provenance, Summary};
use crate::results::WorkloadResult;
use crate::run::hooks::{Report, ReportError};
use crate::run::interrupt::Interrupt;
use crate::run::runner::{RunControl, RunError};
use crate::workload::load::rate_label;
use crate::workload::slo::Slo;
use crate::workload::{Arrival, OpenLoop, Workload, MIN_RATE};

/// An open-loop probe whose client falls this far behind its schedule stops: the server was
/// not offered the rate being probed.
pub const LAG_LIMIT_MS: f64 = 1000.0;

/// What load the search varies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// Closed loop: requests in flight (whole numbers).
    Concurrency,
    /// Open loop: requests per second, at Poisson arrivals.
    PoissonRate,
    /// Open loop: requests per second, evenly spaced.
    ConstantRate,
}

impl Dimension {
    /// The open loop of a rate, spaced as `arrival` says.
    pub fn rate(arrival: OpenLoop) -> Self {
        match arrival {
            OpenLoop::Poisson => Dimension::PoissonRate,
            OpenLoop::Constant => Dimension::ConstantRate,
        }
    }

    /// `concurrency` or `request rate`, as messages name it.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Concurrency => "concurrency",
            Dimension::PoissonRate | Dimension::ConstantRate => "request rate",
        }
    }

    /// The load's unit on a chart's axis.
    pub fn unit(self) -> &'static str {
        match self {
            Dimension::Concurrency => "requests in flight",
            Dimension::PoissonRate => "requests/s (Poisson arrivals)",
            Dimension::ConstantRate => "requests/s (evenly spaced)",
        }
    }

    /// A load as names and messages write it: `c8`, `r2.5`.
    pub fn label(self, load: f64) -> String {
        match self {
            Dimension::Concurrency => format!("c{}", load as usize),
            _ => format!("r{}", rate_label(load)),
        }
    }

    fn arrival(self, load: f64) -> Arrival {
        match self {
            Dimension::Concurrency => Arrival::Closed {
                concurrency: load as usize,
            },
            Dimension::PoissonRate => OpenLoop::Poisson.at(load),
            Dimension::ConstantRate => OpenLoop::Constant.at(load),
        }
    }
}

/// How close the largest passing and the first failing point must come.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// In the load's own unit (requests in flight, or requests per second).
    Absolute(f64),
    /// A fraction of the largest passing point (0.05: within 5 % of it).
    Relative(f64),
}

impl Step {
    /// Parses `1`, `0.5` (absolute) or `5%` (relative).
    pub fn parse(text: &str) -> Result<Step, String> {
        let bad = || {
            format!("`{text}` is not a search step; give a positive number (e.g. 1, 0.5) or a percentage (e.g. 5%)")
        };
        match text.trim().strip_suffix('%') {
            Some(percent) => match percent.trim().parse::<f64>() {
                Ok(p) if p.is_finite() && p > 0.0 && p < 100.0 => Ok(Step::Relative(p / 100.0)),
                _ => Err(bad()),
            },
            None => match text.trim().parse::<f64>() {
                Ok(v) if v.is_finite() && v > 0.0 => Ok(Step::Absolute(v)),
                _ => Err(bad()),
            },
        }
    }

    /// The default: one request in flight, or 5 % of the rate.
    pub fn default_for(dimension: Dimension) -> Step {
        match dimension {
            Dimension::Concurrency => Step::Absolute(1.0),
            _ => Step::Relative(0.05),
        }
    }

    fn close_enough(self, pass: f64, fail: f64) -> bool {
        let gap = fail - pass;
        match self {
            Step::Absolute(step) => gap <= step + 1e-9,
            Step::Relative(share) => gap <= share * pass + 1e-9,
        }
    }
}

/// What a probe must achieve to pass.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    /// The latency objectives (the goodput objectives).
    pub slo: Slo,
    /// The share of requests that must meet every objective, in (0, 1].
    pub fraction: f64,
    /// The highest error rate a passing probe may have, in [0, 1].
    pub max_error_rate: f64,
}

/// A search: which workload, over what range of which load, against what objective.
#[derive(Debug, Clone)]
pub struct SearchSpec {
    /// The workload every probe runs, its arrival replaced by the probed load.
    pub workload: Workload,
    pub dimension: Dimension,
    /// The range searched, both ends included.
    pub low: f64,
    pub high: f64,
    pub objective: Objective,
    pub step: Step,
    /// The most probes the search runs.
    pub max_probes: usize,
    /// The longest the search runs: a probe running at the deadline is stopped, and the search
    /// answers with what it has.
    pub max_time: Option<Duration>,
}

impl SearchSpec {
    /// Checks the settings against each other; the message names the flag and the fix.
    pub fn validate(&self) -> Result<(), String> {
        let o = &self.objective;
        if matches!(self.workload.arrival, Arrival::Trace) {
            return Err(format!(
                "workload `{}` replays a trace at the trace's own times; a search varies the load, so give it a workload without a trace",
                self.workload.name
            ));
        }
        if o.slo.is_empty() {
            return Err(
                "the search needs objectives: give --goodput, e.g. --goodput ttft:200,e2el:5000"
                    .into(),
            );
        }
        if !(o.fraction > 0.0 && o.fraction <= 1.0) {
            return Err(format!(
                "--slo-fraction {} must be above 0 and at most 1 (0.95: 95% of requests meet every objective)",
                o.fraction
            ));
        }
        if !(0.0..=1.0).contains(&o.max_error_rate) {
            return Err(format!(
                "--max-error-rate {} must be between 0 and 1",
                o.max_error_rate
            ));
        }
        let min = match self.dimension {
            Dimension::Concurrency => 1.0,
            _ => MIN_RATE,
        };
        if !(self.low.is_finite() && self.high.is_finite() && self.low >= min) {
            return Err(format!(
                "the search range {}..{} must start at {min} or more",
                self.low, self.high
            ));
        }
        if self.dimension == Dimension::Concurrency
            && (self.low.fract() != 0.0 || self.high.fract() != 0.0)
        {
            return Err(format!(
                "the concurrency range {}..{} must be whole numbers",
                self.low, self.high
            ));
        }
        if self.low >= self.high {
            return Err(format!(
                "the search range {}..{} is empty: give LOW..HIGH with LOW below HIGH",
                self.low, self.high
            ));
        }
        if self.max_probes < 2 {
            return Err(format!(
                "--max-probes {} leaves no room to search; give at least 2",
                self.max_probes
            ));
        }
        let probe = self.probe_workload(self.high);
        probe
            .validate()
            .map_err(|e| format!("workload `{}`: {e}", probe.name))
    }

    /// The workload run at `load`: named `<workload>_<label>`, e.g. `short_input_c8`.
    pub fn probe_workload(&self, load: f64) -> Workload {
        Workload {
            name: format!("{}_{}", self.workload.name, self.dimension.label(load)),
            arrival: self.dimension.arrival(load),
            goodput: Some(self.objective.slo),
            ..self.workload.clone()
        }
    }

    /// Halfway between a passing and a failing point: whole numbers for a concurrency; for a
    /// rate the fewest significant digits (at least three) that stay strictly inside the
    /// interval, so that probe names stay short.
    fn midpoint(&self, pass: f64, fail: f64) -> f64 {
        let mid = (pass + fail) / 2.0;
        match self.dimension {
            Dimension::Concurrency => mid.floor(),
            _ => (3..=15)
                .map(|digits| round_significant(mid, digits))
                .find(|&rounded| rounded > pass && rounded < fail)
                .unwrap_or(mid),
        }
    }
}

/// Parses a search range, `LOW..HIGH`: two positive numbers, LOW below HIGH.
pub fn parse_range(text: &str) -> Result<(f64, f64), String> {
    let bad = || format!("`{text}` is not a range; give LOW..HIGH, e.g. 1..64");
    let (low, high) = text.split_once("..").ok_or_else(bad)?;
    let number = |t: &str| {
        t.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    match (number(low), number(high)) {
        (Some(low), Some(high)) if low < high => Ok((low, high)),
        (Some(low), Some(high)) => Err(format!(
            "the range {text} is empty: LOW ({low}) must be below HIGH ({high})"
        )),
        _ => Err(bad()),
    }
}

fn round_significant(value: f64, digits: i32) -> f64 {
    if value <= 0.0 {
        return value;
    }
    let scale = 10f64.powi(digits - 1 - value.log10().floor() as i32);
    (value * scale).round() / scale
}

/// The objectives' figures at one probe: each objective's percentile at the required fraction
/// (p95 for `fraction` 0.95) over the successful requests, and how many requests missed it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ObjectiveFigures {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tbt_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2el_ms: Option<f64>,
    /// Requests over each limit (successful ones only; failures are counted apart).
    pub ttft_misses: u64,
    pub tbt_misses: u64,
    pub e2el_misses: u64,
}

/// One probed point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// The load probed.
    pub load: f64,
    /// The probe's workload name, which is also its folder's name.
    pub workload: String,
    pub passed: bool,
    /// Stopped by an interrupt or the search's time limit: neither a pass nor a failure, left
    /// out of the answer (its folder keeps what it measured).
    #[serde(default)]
    pub cut_short: bool,
    /// Why it failed, in words naming the figures; absent for a pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why it stopped before its last request, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_early: Option<String>,
    /// Requests recorded (fewer than the workload's when it stopped early).
    pub requests: u64,
    pub failed_requests: u64,
    pub goodput_fraction: f64,
    pub request_goodput_rps: f64,
    pub error_rate: f64,
    /// The objectives' percentiles at the required fraction, and the misses.
    pub figures: ObjectiveFigures,
}

/// Where a search ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchOutcome {
    pub workload: String,
    pub dimension: Dimension,
    pub low: f64,
    pub high: f64,
    pub objective: Objective,
    pub step: Step,
    /// Every probe, in the order it ran.
    pub probes: Vec<Probe>,
    /// The largest load that passed; absent when none did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub largest_passing: Option<f64>,
    /// The smallest load above it that failed; absent when the whole range passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_failing: Option<f64>,
    /// Why that point failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_reason: Option<String>,
    /// True when the search converged (or the whole range passed); false when it stopped
    /// early (interrupted, out of time or probes) or found no passing point.
    pub complete: bool,
    /// Why it stopped before converging, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// The answer in one sentence, as the terminal prints it.
    pub verdict: String,
}

impl SearchOutcome {
    fn new(spec: &SearchSpec) -> Self {
        SearchOutcome {
            workload: spec.workload.name.clone(),
            dimension: spec.dimension,
            low: spec.low,
            high: spec.high,
            objective: spec.objective,
            step: spec.step,
            probes: Vec::new(),
            largest_passing: None,
            first_failing: None,
            failing_reason: None,
            complete: false,
            stopped: None,
            verdict: String::new(),
        }
    }

    /// The probe at `load`, if there was one.
    pub fn probe(&self, load: f64) -> Option<&Probe> {
        self.probes.iter().find(|p| p.load == load)
    }

    /// Sets the bracket from the probes so far and writes the verdict.
    fn settle(&mut self) {
        self.largest_passing = self
            .probes
            .iter()
            .filter(|p| p.passed)
            .map(|p| p.load)
            .fold(None, |m: Option<f64>, l| Some(m.map_or(l, |m| m.max(l))));
        let above = self.largest_passing.unwrap_or(f64::NEG_INFINITY);
        let first_failing = self
            .probes
            .iter()
            .filter(|p| !p.passed && !p.cut_short && p.load > above)
            .min_by(|a, b| a.load.total_cmp(&b.load));
        self.first_failing = first_failing.map(|p| p.load);
        self.failing_reason = first_failing.and_then(|p| p.reason.clone());
        let d = self.dimension;
        let fraction = self.objective.fraction * 100.0;
        let slo = slo_words(&self.objective.slo);
        let mut verdict = match (self.largest_passing, self.first_failing) {
            (Some(pass), Some(fail)) => format!(
                "capacity: {} {} ({} of requests within {slo}); {} {} fails: {}",
                d.name(),
                number(pass),
                format_percent(fraction),
                d.name(),
                number(fail),
                self.failing_reason.as_deref().unwrap_or("it failed")
            ),
            (Some(pass), None) => format!(
                "capacity: at least {} {}, the top of the range: every probe passed ({} of requests within {slo}); search a higher range to find the limit",
                d.name(),
                number(pass),
                format_percent(fraction)
            ),
            (None, Some(fail)) => format!(
                "no capacity in the range: {} {} already fails: {}",
                d.name(),
                number(fail),
                self.failing_reason.as_deref().unwrap_or("it failed")
            ),
            (None, None) => "no probe finished".to_string(),
        };
        if let Some(stopped) = &self.stopped {
            verdict.push_str(&format!(" (search stopped early: {stopped})"));
        }
        self.verdict = verdict;
    }
}

fn number(v: f64) -> String {
    rate_label(v)
}

fn format_percent(p: f64) -> String {
    format!("{}%", rate_label((p * 1000.0).round() / 1000.0))
}

/// The objectives in words: `TTFT <= 200 ms, E2E <= 5000 ms`.
pub fn slo_words(slo: &Slo) -> String {
    [
        ("TTFT", slo.ttft_ms),
        ("TBT", slo.tbt_ms),
        ("E2E", slo.e2el_ms),
    ]
    .iter()
    .filter_map(|(name, limit)| limit.map(|ms| format!("{name} <= {} ms", rate_label(ms))))
    .collect::<Vec<_>>()
    .join(", ")
}

/// What the search hands each probe's run and tells as it goes: the door's reporters.
pub trait ProbeReports {
    /// The reporters of the probe about to run `workload` (typically the files of a run
    /// folder named after it).
    fn probe_reporter(&mut self, workload: &Workload) -> Result<Box<dyn Report>, ReportError>;

    /// A probe finished; `so_far` is the outcome with it included (write it, print it).
    fn probe_finished(
        &mut self,
        _probe: &Probe,
        _so_far: &SearchOutcome,
    ) -> Result<(), ReportError> {
        Ok(())
    }
}

/// Runs the search on `backend`. An interrupt through `control` stops the probe in flight
/// (its folder keeps what it measured) and the search, whose outcome then says where it
/// stopped; so do the time and probe bounds.
pub fn search(
    backend: Arc<dyn Backend>,
    spec: &SearchSpec,
    provenance: Provenance,
    reports: &mut dyn ProbeReports,
    control: &RunControl,
) -> Result<SearchOutcome, RunError> {
    spec.validate()
        .map_err(|message| RunError::InvalidWorkload {
            workload: spec.workload.name.clone(),
            message,
        })?;
    let started = Instant::now();
    let deadline = spec.max_time.map(|t| started + t);
    let mut outcome = SearchOutcome::new(spec);
    let mut next = Some(spec.low);
    while let Some(load) = next {
        if let Some(reason) = control.interrupt.reason() {
            outcome.stopped = Some(format!(
                "{reason} before probing {}",
                spec.dimension.label(load)
            ));
            break;
        }
        if outcome.probes.len() >= spec.max_probes {
            outcome.stopped = Some(format!(
                "the probe limit ({}) was reached before probing {}",
                spec.max_probes,
                spec.dimension.label(load)
            ));
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            outcome.stopped = Some(format!(
                "the time limit ({} s) was reached before probing {}",
                spec.max_time.unwrap_or_default().as_secs_f64(),
                spec.dimension.label(load)
            ));
            break;
        }
        let mut probe = run_probe(
            backend.clone(),
            spec,
            load,
            &provenance,
            reports,
            control,
            deadline,
        )?;
        // A probe cut by the user or the clock is no verdict on its load: kept, not counted.
        let external = control.interrupt.reason().or_else(|| {
            probe
                .stopped_early
                .clone()
                .filter(|reason| reason.starts_with(TIME_LIMIT))
        });
        if let Some(reason) = &external {
            probe.cut_short = true;
            probe.passed = false;
            outcome.stopped = Some(format!(
                "{reason} during the probe at {} (its requests so far are in its folder)",
                spec.dimension.label(load)
            ));
        }
        outcome.probes.push(probe);
        outcome.settle();
        reports
            .probe_finished(outcome.probes.last().expect("just pushed"), &outcome)
            .map_err(RunError::Report)?;
        if external.is_some() {
            break;
        }
        next = next_load(spec, &outcome);
        if next.is_none() {
            outcome.complete = outcome.largest_passing.is_some();
        }
    }
    outcome.settle();
    Ok(outcome)
}

/// What the next probe is: doubling while every probe passed, then the midpoint of the
/// bracket; `None` once the bracket is one step wide, the top of the range passed, or the
/// bottom failed.
fn next_load(spec: &SearchSpec, outcome: &SearchOutcome) -> Option<f64> {
    let pass = outcome.largest_passing?;
    match outcome.first_failing {
        None if pass >= spec.high => None,
        None => Some((pass * 2.0).min(spec.high)),
        Some(fail) if spec.step.close_enough(pass, fail) => None,
        Some(fail) => {
            let mid = spec.midpoint(pass, fail);
            (mid > pass && mid < fail).then_some(mid)
        }
    }
}

/// The start of the reason a probe stopped at the search's deadline.
const TIME_LIMIT: &str = "the search's time limit";

/// Runs one probe and judges it.
fn run_probe(
    backend: Arc<dyn Backend>,
    spec: &SearchSpec,
    load: f64,
    provenance: &Provenance,
    reports: &mut dyn ProbeReports,
    control: &RunControl,
    deadline: Option<Instant>,
) -> Result<Probe, RunError> {
    let workload = spec.probe_workload(load);
    // The probe's own switch: the judge throws it alone; the run's interrupt throws it too.
    let stop = control.interrupt.child();
    let watcher = Watcher::start(stop.clone(), deadline, spec.max_time);
    let mut judge = Judge::new(&workload, spec.objective, stop.clone());
    let mut files = reports.probe_reporter(&workload)?;
    let probe_control = RunControl {
        interrupt: stop.clone(),
        grace: control.grace,
    };
    let summary = {
        let mut both = Both(files.as_mut(), &mut judge);
        crate::run::runner::run_with(
            backend,
            std::slice::from_ref(&workload),
            provenance.clone(),
            &mut both,
            &probe_control,
        )
    };
    watcher.finish();
    let summary: Summary = summary?;
    Ok(judge.verdict(load, &workload.name, &summary, stop.reason()))
}

/// Throws one probe's switch at the search's deadline (real time: a thread that looks every
/// 10 ms).
struct Watcher {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(probe: Interrupt, deadline: Option<Instant>, max_time: Option<Duration>) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let thread = deadline.and_then(|deadline| {
            std::thread::Builder::new()
                .name("sagellm-bench-search".into())
                .spawn(move || {
                    while !flag.load(Ordering::SeqCst) && !probe.is_requested() {
                        if Instant::now() >= deadline {
                            probe.request(format!(
                                "{TIME_LIMIT} ({} s) was reached",
                                max_time.unwrap_or_default().as_secs_f64()
                            ));
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
                .ok()
        });
        Watcher { done, thread }
    }

    fn finish(mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Two reporters behind one: the door's files, then the judge.
struct Both<'a>(&'a mut dyn Report, &'a mut Judge);

impl Report for Both<'_> {
    fn run_started(&mut self, p: &Provenance, w: &[Workload]) -> Result<(), ReportError> {
        self.0.run_started(p, w)?;
        self.1.run_started(p, w)
    }
    fn workload_started(&mut self, w: &Workload) -> Result<(), ReportError> {
        self.0.workload_started(w)?;
        self.1.workload_started(w)
    }
    fn request_finished(&mut self, w: &Workload, r: &RequestRecord) -> Result<(), ReportError> {
        self.0.request_finished(w, r)?;
        self.1.request_finished(w, r)
    }
    fn workload_finished(&mut self, r: &WorkloadResult) -> Result<(), ReportError> {
        self.0.workload_finished(r)?;
        self.1.workload_finished(r)
    }
    fn run_finished(&mut self, s: &Summary) -> Result<(), ReportError> {
        self.0.run_finished(s)?;
        self.1.run_finished(s)
    }
}

/// Watches one probe's requests as they finish, stops it once it can no longer pass, and
/// judges it at the end.
struct Judge {
    objective: Objective,
    requests: usize,
    stop: Interrupt,
    /// Most requests that may miss (fail or break an objective) for the probe to pass.
    allowed_misses: u64,
    /// Most requests that may fail for the probe to pass.
    allowed_failures: u64,
    misses: u64,
    failures: u64,
    latencies: Vec<RequestLatency>,
}

impl Judge {
    fn new(workload: &Workload, objective: Objective, stop: Interrupt) -> Self {
        let n = workload.num_requests as f64;
        // A small tolerance, so that 0.95 x 100 allows 5 misses despite binary rounding.
        let allowed = |share: f64| (share * n + 1e-9).floor() as u64;
        Judge {
            objective,
            requests: workload.num_requests,
            stop,
            allowed_misses: allowed(1.0 - objective.fraction),
            allowed_failures: allowed(objective.max_error_rate),
            misses: 0,
            failures: 0,
            latencies: Vec::with_capacity(workload.num_requests),
        }
    }

    /// The probe's verdict from its summary and, if it was stopped, the reason.
    fn verdict(&self, load: f64, name: &str, summary: &Summary, stopped: Option<String>) -> Probe {
        let metrics = summary.workloads.values().next();
        let figures = self.figures();
        let recorded = self.latencies.len() as u64;
        let goodput_fraction = metrics.and_then(|m| m.goodput_fraction).unwrap_or(0.0);
        let error_rate = metrics.map_or(0.0, |m| m.error_rate);
        let o = &self.objective;
        let mut reasons = Vec::new();
        if let Some(why) = &stopped {
            reasons.push(format!("stopped early: {why}"));
        } else {
            if goodput_fraction + 1e-12 < o.fraction {
                reasons.push(format!(
                    "{} of {recorded} requests met every objective ({}), below the {} required",
                    recorded - self.misses.min(recorded),
                    format_percent(goodput_fraction * 100.0),
                    format_percent(o.fraction * 100.0)
                ));
            }
            if error_rate > o.max_error_rate + 1e-12 {
                reasons.push(format!(
                    "error rate {} above the {} allowed",
                    format_percent(error_rate * 100.0),
                    format_percent(o.max_error_rate * 100.0)
                ));
            }
        }
        if !reasons.is_empty() {
            reasons.push(self.misses_words(&figures));
        }
        Probe {
            load,
            workload: name.to_string(),
            passed: reasons.is_empty(),
            cut_short: false,
            reason: (!reasons.is_empty()).then(|| {
                reasons
                    .into_iter()
                    .filter(|r| !r.is_empty())
                    .collect::<Vec<_>>()
                    .join("; ")
            }),
            stopped_early: stopped,
            requests: recorded,
            failed_requests: self.failures,
            goodput_fraction,
            request_goodput_rps: metrics.and_then(|m| m.request_goodput_rps).unwrap_or(0.0),
            error_rate,
            figures,
        }
    }

    /// Which objectives the misses broke, with each one's percentile: `p95 TTFT 97.1 ms > 60
    /// ms (12 requests over)`.
    fn misses_words(&self, f: &ObjectiveFigures) -> String {
        let q = rate_label((self.objective.fraction * 1000.0).round() / 10.0);
        let slo = &self.objective.slo;
        let mut parts = Vec::new();
        for (name, limit, value, misses) in [
            ("TTFT", slo.ttft_ms, f.ttft_ms, f.ttft_misses),
            ("TBT", slo.tbt_ms, f.tbt_ms, f.tbt_misses),
            ("E2E", slo.e2el_ms, f.e2el_ms, f.e2el_misses),
        ] {
            let (Some(limit), Some(value)) = (limit, value) else {
                continue;
            };
            if misses > 0 {
                parts.push(format!(
                    "p{q} {name} {value:.1} ms against {} ms ({misses} requests over)",
                    rate_label(limit)
                ));
            }
        }
        if self.failures > 0 {
            parts.push(format!("{} requests failed", self.failures));
        }
        parts.join(", ")
    }

    /// Each objective's percentile at the required fraction over the successful requests, and
    /// its misses.
    fn figures(&self) -> ObjectiveFigures {
        let ok: Vec<&RequestLatency> = self.latencies.iter().filter(|l| l.success).collect();
        let q = self.objective.fraction * 100.0;
        let at = |limit: Option<f64>, value: fn(&RequestLatency) -> Option<f64>| {
            limit?;
            let mut v: Vec<f64> = ok.iter().filter_map(|l| value(l)).collect();
            v.sort_by(f64::total_cmp);
            (!v.is_empty()).then(|| percentile(&v, q))
        };
        let over = |limit: Option<f64>, value: fn(&RequestLatency) -> Option<f64>| {
            limit.map_or(0, |limit| {
                ok.iter()
                    .filter(|l| value(l).is_some_and(|v| v > limit))
                    .count() as u64
            })
        };
        let slo = &self.objective.slo;
        ObjectiveFigures {
            ttft_ms: at(slo.ttft_ms, |l| l.ttft_ms),
            tbt_ms: at(slo.tbt_ms, |l| l.tbt_ms),
            e2el_ms: at(slo.e2el_ms, |l| l.e2el_ms),
            ttft_misses: over(slo.ttft_ms, |l| l.ttft_ms),
            tbt_misses: over(slo.tbt_ms, |l| l.tbt_ms),
            e2el_misses: over(slo.e2el_ms, |l| l.e2el_ms),
        }
    }
}

impl Report for Judge {
    fn request_finished(
        &mut self,
        _: &Workload,
        record: &RequestRecord,
    ) -> Result<(), ReportError> {
        let latency = RequestLatency {
            success: record.success,
            ttft_ms: record.ttft_ms,
            tbt_ms: record.tbt_ms,
            e2el_ms: record.e2el_ms,
        };
        self.latencies.push(latency);
        self.failures += u64::from(!latency.success);
        self.misses += u64::from(!self.objective.slo.met_by(&latency));
        let n = self.requests;
        if self.stop.is_requested() {
            return Ok(());
        }
        if self.misses > self.allowed_misses {
            self.stop.request(format!(
                "{} of its {n} requests already missed the objectives, more than the {} that {} allows",
                self.misses,
                self.allowed_misses,
                format_percent(self.objective.fraction * 100.0)
            ));
        } else if self.failures > self.allowed_failures {
            self.stop.request(format!(
                "{} of its {n} requests already failed, more than the {} the error limit of {} allows",
                self.failures,
                self.allowed_failures,
                format_percent(self.objective.max_error_rate * 100.0)
            ));
        } else if let Some(scheduled) = record.scheduled_ms {
            let lag = record.start_ms - scheduled;
            if lag > LAG_LIMIT_MS {
                self.stop.request(format!(
                    "the client fell {lag:.0} ms behind its schedule (over {LAG_LIMIT_MS} ms): the rate was not offered to the server"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dimension: Dimension, low: f64, high: f64) -> SearchSpec {
        SearchSpec {
            workload: Workload::new("w", 8, 8, 20),
            dimension,
            low,
            high,
            objective: Objective {
                slo: Slo::parse("ttft:100").unwrap(),
                fraction: 0.95,
                max_error_rate: 0.05,
            },
            step: Step::default_for(dimension),
            max_probes: 16,
            max_time: None,
        }
    }

    #[test]
    fn steps_parse_as_numbers_or_percentages() {
        assert_eq!(Step::parse("2").unwrap(), Step::Absolute(2.0));
        assert_eq!(Step::parse("0.5").unwrap(), Step::Absolute(0.5));
        assert_eq!(Step::parse("5%").unwrap(), Step::Relative(0.05));
        for bad in ["0", "-1", "x", "0%", "100%", "NaN", ""] {
            assert!(
                Step::parse(bad).unwrap_err().contains("search step"),
                "{bad}"
            );
        }
        // 1 apart closes a concurrency bracket; 5% of 20 is 1 req/s.
        assert!(Step::Absolute(1.0).close_enough(10.0, 11.0));
        assert!(!Step::Absolute(1.0).close_enough(10.0, 12.0));
        assert!(Step::Relative(0.05).close_enough(20.0, 21.0));
        assert!(!Step::Relative(0.05).close_enough(20.0, 21.5));
    }

    #[test]
    fn midpoints_are_whole_concurrencies_and_short_rates_inside_the_bracket() {
        let c = spec(Dimension::Concurrency, 1.0, 64.0);
        assert_eq!(c.midpoint(8.0, 16.0), 12.0);
        assert_eq!(c.midpoint(10.0, 13.0), 11.0);
        let r = spec(Dimension::PoissonRate, 1.0, 64.0);
        assert_eq!(r.midpoint(1.0, 2.0), 1.5);
        // 3 significant digits: (10 + 10.4567) / 2 = 10.22835 -> 10.2.
        assert_eq!(r.midpoint(10.0, 10.4567), 10.2);
        // Too narrow for 3 digits: as many as it takes.
        assert_eq!(r.midpoint(10.0, 10.01), 10.005);
        assert_eq!(c.probe_workload(12.0).name, "w_c12");
        assert_eq!(r.probe_workload(2.5).name, "w_r2.5");
        assert_eq!(
            r.probe_workload(2.5).arrival,
            Arrival::Poisson { rate: 2.5 }
        );
    }

    #[test]
    fn a_probe_may_miss_exactly_the_share_the_fraction_leaves() {
        // 95% of 20: at most 1 miss; the second stops the probe.
        let stop = Interrupt::new();
        let s = spec(Dimension::Concurrency, 1.0, 8.0);
        let mut judge = Judge::new(&s.workload, s.objective, stop.clone());
        let record = |ttft: f64| {
            let mut r = crate::results::record::test_record(0, 0.0, &[ttft, ttft + 1.0], None);
            r.ttft_ms = Some(ttft);
            r
        };
        let w = &s.workload;
        judge.request_finished(w, &record(50.0)).unwrap();
        judge.request_finished(w, &record(150.0)).unwrap();
        assert!(!stop.is_requested(), "1 miss of 20 is allowed");
        judge.request_finished(w, &record(150.0)).unwrap();
        let reason = stop.reason().unwrap();
        assert!(
            reason.contains("2 of its 20 requests already missed")
                && reason.contains("the 1 that 95%"),
            "{reason}"
        );
    }

    #[test]
    fn bad_settings_name_the_flag() {
        let mut s = spec(Dimension::Concurrency, 1.0, 8.0);
        s.objective.fraction = 0.0;
        assert!(s.validate().unwrap_err().contains("--slo-fraction"));
        let mut s = spec(Dimension::Concurrency, 1.5, 8.0);
        assert!(s.validate().unwrap_err().contains("whole numbers"));
        s.low = 8.0;
        assert!(s.validate().unwrap_err().contains("is empty"));
        let mut s = spec(Dimension::ConstantRate, 1.0, 8.0);
        s.objective.slo = Slo::default();
        assert!(s.validate().unwrap_err().contains("--goodput"));
        let mut s = spec(Dimension::ConstantRate, 1.0, 8.0);
        s.max_probes = 1;
        assert!(s.validate().unwrap_err().contains("--max-probes"));
    }
}
