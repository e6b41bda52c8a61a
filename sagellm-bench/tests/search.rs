//! The SLO capacity search (`run::search`), on the mock (deterministic queueing: the capacity
//! follows from its step model, docs/MOCK.md) and against the scripted test server with a
//! capacity of its own; and the searches that cannot answer: objectives never met, a range
//! whose low end already fails, a search interrupted in the middle of a probe.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sagellm_bench::backend::mock::{MockBackend, MockConfig};
use sagellm_bench::backend::openai::{OpenAiBackend, OpenAiConfig};
use sagellm_bench::backend::Backend;
use sagellm_bench::report::names::{probe_dir, SEARCH_FILE};
use sagellm_bench::report::search::SearchFiles;
use sagellm_bench::report::{Report, ReportError, Reports};
use sagellm_bench::results::record::RequestRecord;
use sagellm_bench::results::summary::Provenance;
use sagellm_bench::run::search::{
    search, Dimension, Objective, Probe, ProbeReports, SearchOutcome, SearchSpec, Step,
};
use sagellm_bench::{Arrival, Interrupt, OpenLoop, RunControl, Slo, Workload};
use sagellm_test_server::{Script, TestServer};

mod support;
use support::Collect;

fn provenance() -> Provenance {
    Provenance::now("test", "test", serde_json::Value::Null)
}

/// The mock with prefill free and a budget that takes every prompt at once: each decode step
/// then lasts exactly 8 ms + 0.4 ms per running sequence, whatever joins the batch.
fn flat_mock() -> Arc<dyn Backend> {
    let config = MockConfig {
        prefill_us_per_token: 0.0,
        max_batched_tokens: 1 << 16,
        ..MockConfig::default()
    };
    Arc::new(MockBackend::new(config, None).unwrap())
}

fn spec(workload: Workload, dimension: Dimension, range: (f64, f64), slo: &str) -> SearchSpec {
    SearchSpec {
        workload,
        dimension,
        low: range.0,
        high: range.1,
        objective: Objective {
            slo: Slo::parse(slo).unwrap(),
            fraction: 0.95,
            max_error_rate: 0.05,
        },
        step: Step::default_for(dimension),
        max_probes: 16,
        max_time: None,
    }
}

fn run_search(backend: Arc<dyn Backend>, spec: &SearchSpec, dir: &Path) -> SearchOutcome {
    let mut files = SearchFiles::new(dir, false, false);
    let outcome = search(
        backend,
        spec,
        provenance(),
        &mut files,
        &RunControl::default(),
    )
    .unwrap();
    files.finish(&outcome).unwrap();
    outcome
}

fn loads(outcome: &SearchOutcome) -> Vec<f64> {
    outcome.probes.iter().map(|p| p.load).collect()
}

#[test]
fn on_the_mock_the_capacity_is_the_concurrency_the_step_model_gives() {
    // By hand: at concurrency c every request decodes in lockstep with the others, each step
    // 8 + 0.4 c ms, so each request's TBT is 8 + 0.4 c ms. TBT <= 12.2 ms holds for c <= 10
    // (12.0 ms) and fails for c = 11 (12.4 ms).
    let dir = tempfile::tempdir().unwrap();
    let workload = Workload {
        warmup_requests: 0,
        ..Workload::new("flat", 32, 32, 60)
    };
    let spec = spec(workload, Dimension::Concurrency, (1.0, 64.0), "tbt:12.2");
    let outcome = run_search(flat_mock(), &spec, dir.path());
    assert_eq!(outcome.largest_passing, Some(10.0), "{}", outcome.verdict);
    assert_eq!(outcome.first_failing, Some(11.0));
    assert!(outcome.complete);
    // Bracketing doubles from 1 until 16 fails, then bisection: 12, 10, 11.
    assert_eq!(
        loads(&outcome),
        [1.0, 2.0, 4.0, 8.0, 16.0, 12.0, 10.0, 11.0]
    );
    let reason = outcome.failing_reason.as_deref().unwrap();
    assert!(reason.contains("TBT 12.4 ms against 12.2 ms"), "{reason}");
    let at10 = outcome.probe(10.0).unwrap();
    assert!((at10.figures.tbt_ms.unwrap() - 12.0).abs() < 1e-9);
    // A probe that can no longer pass stops early: 16 does after 3 misses of 60 (3 > 5% of 60).
    let at16 = outcome.probe(16.0).unwrap();
    assert!(
        at16.stopped_early.is_some() && at16.requests < 60,
        "{at16:?}"
    );
    // Every probe keeps a whole run folder, and the answer is on disk with its chart.
    for probe in &outcome.probes {
        let folder = probe_dir(dir.path(), &probe.workload);
        assert!(
            folder.join("benchmark_summary.json").is_file(),
            "{}",
            folder.display()
        );
    }
    let saved: SearchOutcome =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(SEARCH_FILE)).unwrap())
            .unwrap();
    assert_eq!(saved, outcome);
    let chart = std::fs::read_to_string(dir.path().join("search_capacity.svg")).unwrap();
    assert!(
        chart.contains("largest passing") && chart.contains("p95 TBT"),
        "chart legend"
    );
}

#[test]
fn on_the_mock_a_rate_search_agrees_with_an_exhaustive_sweep_of_the_same_points() {
    // Open loop, evenly spaced, E2E <= 1500 ms: past the engine's throughput the queue grows
    // and E2E with it. The sweep runs every whole rate of the range to its end and judges it
    // as a probe is judged (95% good, at most 5% failed); the search, with a step of 1 req/s,
    // must land on the sweep's largest passing rate.
    let workload = Workload {
        warmup_requests: 0,
        ..Workload::new("open", 64, 64, 60)
    };
    let dimension = Dimension::rate(OpenLoop::Constant);
    let mut spec = spec(workload, dimension, (1.0, 40.0), "e2el:1500");
    spec.step = Step::Absolute(1.0);
    let backend: Arc<dyn Backend> =
        Arc::new(MockBackend::new(MockConfig::default(), None).unwrap());
    let verdicts: Vec<(f64, bool)> = (1..=40)
        .map(|rate| {
            let w = spec.probe_workload(rate as f64);
            assert_eq!(w.arrival, Arrival::Constant { rate: rate as f64 });
            let mut collect = Collect::default();
            sagellm_bench::run(backend.clone(), &[w], provenance(), &mut collect).unwrap();
            let m = collect.measured().remove(0).metrics;
            let pass = m.goodput_fraction.unwrap() >= 0.95 && m.error_rate <= 0.05;
            (rate as f64, pass)
        })
        .collect();
    let largest = verdicts
        .iter()
        .filter(|v| v.1)
        .map(|v| v.0)
        .fold(0.0, f64::max);
    // The sweep is one step: every rate up to the capacity passes, every one above fails.
    assert!((2.0..40.0).contains(&largest), "sweep: {verdicts:?}");
    assert!(
        verdicts
            .iter()
            .all(|&(rate, pass)| pass == (rate <= largest)),
        "{verdicts:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let outcome = run_search(backend, &spec, dir.path());
    assert_eq!(
        outcome.largest_passing,
        Some(largest),
        "{}",
        outcome.verdict
    );
    assert_eq!(outcome.first_failing, Some(largest + 1.0));
    assert!(
        outcome.probes.len() < 40 / 2,
        "fewer probes than the sweep: {:?}",
        loads(&outcome)
    );
}

#[test]
fn against_the_test_server_the_capacity_is_its_scripted_number_of_streams() {
    // The server streams at most 4 requests at once; a fifth waits for one to end (about
    // 20 + 15 x 5 = 95 ms). TTFT <= 60 ms: up to 4 in flight every request starts at once
    // (TTFT about 20 ms); at 5 or more some request of each round waits (TTFT about 115 ms), 1
    // in 5 or more, above the 5% allowed.
    let server = TestServer::start(
        Script {
            ttft: Duration::from_millis(20),
            itl: Duration::from_millis(5),
            max_running: Some(4),
            ..Script::default()
        },
        2,
    )
    .unwrap();
    let config = OpenAiConfig {
        base_url: Some(server.url()),
        stall_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        ..OpenAiConfig::default()
    };
    let backend: Arc<dyn Backend> = Arc::new(OpenAiBackend::connect("openai", config).unwrap());
    let workload = Workload {
        warmup_requests: 0,
        ..Workload::new("served", 16, 16, 40)
    };
    let spec = spec(workload, Dimension::Concurrency, (1.0, 16.0), "ttft:60");
    let dir = tempfile::tempdir().unwrap();
    let outcome = run_search(backend, &spec, dir.path());
    assert_eq!(outcome.largest_passing, Some(4.0), "{}", outcome.verdict);
    assert_eq!(outcome.first_failing, Some(5.0));
    let at4 = outcome.probe(4.0).unwrap();
    assert!(at4.figures.ttft_ms.unwrap() < 60.0, "{at4:?}");
}

#[test]
fn objectives_no_request_can_meet_end_the_search_at_the_first_probe() {
    // TTFT <= 0.001 ms: the mock's first token takes at least one 8 ms step.
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(
        Workload::new("never", 32, 8, 20),
        Dimension::Concurrency,
        (1.0, 64.0),
        "ttft:0.001",
    );
    let outcome = run_search(flat_mock(), &spec, dir.path());
    assert_eq!(loads(&outcome), [1.0]);
    assert_eq!(
        (outcome.largest_passing, outcome.first_failing),
        (None, Some(1.0))
    );
    assert!(!outcome.complete);
    assert_eq!(outcome.probes[0].goodput_fraction, 0.0);
    assert!(
        outcome
            .verdict
            .starts_with("no capacity in the range: concurrency 1 already fails"),
        "{}",
        outcome.verdict
    );
}

#[test]
fn a_range_whose_low_end_already_fails_says_so_and_probes_nothing_more() {
    // TBT <= 12.2 ms passes up to concurrency 10 (see above); a range from 11 has no answer.
    let dir = tempfile::tempdir().unwrap();
    let workload = Workload {
        warmup_requests: 0,
        ..Workload::new("flat", 32, 32, 60)
    };
    let spec = spec(workload, Dimension::Concurrency, (11.0, 64.0), "tbt:12.2");
    let outcome = run_search(flat_mock(), &spec, dir.path());
    assert_eq!(loads(&outcome), [11.0]);
    assert_eq!(outcome.largest_passing, None);
    assert!(
        outcome.verdict.contains("TBT 12.4 ms against 12.2 ms"),
        "{}",
        outcome.verdict
    );
}

/// The search's files, plus a reporter that throws the run's interrupt at the `at`-th request
/// of the `probe`-th probe, as a Ctrl-C would.
struct InterruptAt {
    files: SearchFiles,
    interrupt: Interrupt,
    probe: usize,
    at: usize,
    probes: usize,
}

struct Thrower {
    interrupt: Interrupt,
    at: Option<usize>,
    seen: usize,
}

impl Report for Thrower {
    fn request_finished(&mut self, _: &Workload, _: &RequestRecord) -> Result<(), ReportError> {
        self.seen += 1;
        if Some(self.seen) == self.at {
            self.interrupt.request("interrupted by SIGINT");
        }
        Ok(())
    }
}

impl ProbeReports for InterruptAt {
    fn probe_reporter(&mut self, workload: &Workload) -> Result<Box<dyn Report>, ReportError> {
        self.probes += 1;
        let thrower = Thrower {
            interrupt: self.interrupt.clone(),
            at: (self.probes == self.probe).then_some(self.at),
            seen: 0,
        };
        Ok(Box::new(Reports::new(vec![
            self.files.probe_reporter(workload)?,
            Box::new(thrower),
        ])))
    }

    fn probe_finished(&mut self, probe: &Probe, so_far: &SearchOutcome) -> Result<(), ReportError> {
        self.files.probe_finished(probe, so_far)
    }
}

#[test]
fn an_interrupted_search_keeps_its_probes_and_says_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let workload = Workload {
        warmup_requests: 0,
        ..Workload::new("flat", 32, 32, 60)
    };
    let spec = spec(workload, Dimension::Concurrency, (1.0, 64.0), "tbt:12.2");
    let control = RunControl {
        grace: Duration::ZERO,
        ..RunControl::default()
    };
    let mut reports = InterruptAt {
        files: SearchFiles::new(dir.path(), false, false),
        interrupt: control.interrupt.clone(),
        probe: 3,
        at: 5,
        probes: 0,
    };
    let outcome = search(flat_mock(), &spec, provenance(), &mut reports, &control).unwrap();
    // Probes 1 and 2 passed; the third (concurrency 4) was cut after its 5th request.
    assert_eq!(loads(&outcome), [1.0, 2.0, 4.0]);
    let cut = &outcome.probes[2];
    assert!(cut.cut_short && !cut.passed, "{cut:?}");
    assert!(cut.requests >= 5 && cut.requests < 60, "{cut:?}");
    assert_eq!(outcome.largest_passing, Some(2.0));
    assert_eq!(outcome.first_failing, None, "a cut probe is no failure");
    assert!(!outcome.complete);
    let stopped = outcome.stopped.as_deref().unwrap();
    assert!(
        stopped.starts_with("interrupted by SIGINT during the probe at c4"),
        "{stopped}"
    );
    assert!(
        outcome.verdict.contains("search stopped early"),
        "{}",
        outcome.verdict
    );
    // What ran is on disk: each probe's folder (the cut one marked incomplete) and the
    // search.json written after the cut probe.
    let cut_summary = probe_dir(dir.path(), &cut.workload).join("benchmark_summary.json");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cut_summary).unwrap()).unwrap();
    assert_eq!(summary["complete"], false);
    let saved: SearchOutcome =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(SEARCH_FILE)).unwrap())
            .unwrap();
    assert_eq!(saved.stopped, outcome.stopped);
    assert_eq!(saved.probes.len(), 3);
}

#[test]
fn a_search_is_bounded_in_probes() {
    let dir = tempfile::tempdir().unwrap();
    let workload = Workload {
        warmup_requests: 0,
        ..Workload::new("flat", 32, 32, 60)
    };
    let mut spec = spec(workload, Dimension::Concurrency, (1.0, 64.0), "tbt:12.2");
    spec.max_probes = 3;
    let outcome = run_search(flat_mock(), &spec, dir.path());
    assert_eq!(loads(&outcome), [1.0, 2.0, 4.0]);
    assert!(!outcome.complete);
    assert_eq!(outcome.largest_passing, Some(4.0));
    assert!(
        outcome
            .stopped
            .as_deref()
            .unwrap()
            .contains("probe limit (3)"),
        "{:?}",
        outcome.stopped
    );
}

#[test]
fn the_time_bound_cuts_the_probe_running_at_the_deadline() {
    // Requests of about 1 s (10 chunks 100 ms apart), 8 a probe at concurrency 1: the first
    // probe would take 8 s; the search may take 1.5 s.
    let server = TestServer::start(Script::paced(100, 100), 1).unwrap();
    let config = OpenAiConfig {
        base_url: Some(server.url()),
        ..OpenAiConfig::default()
    };
    let backend: Arc<dyn Backend> = Arc::new(OpenAiBackend::connect("openai", config).unwrap());
    let workload = Workload {
        warmup_requests: 0,
        ..Workload::new("timed", 8, 10, 8)
    };
    let mut spec = spec(workload, Dimension::Concurrency, (1.0, 8.0), "ttft:500");
    spec.max_time = Some(Duration::from_millis(1500));
    let dir = tempfile::tempdir().unwrap();
    let mut files = SearchFiles::new(dir.path(), false, false);
    let control = RunControl {
        grace: Duration::ZERO,
        ..RunControl::default()
    };
    let started = std::time::Instant::now();
    let outcome = search(backend, &spec, provenance(), &mut files, &control).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(loads(&outcome), [1.0]);
    assert!(outcome.probes[0].cut_short);
    assert_eq!(
        (outcome.largest_passing, outcome.first_failing),
        (None, None)
    );
    let stopped = outcome.stopped.as_deref().unwrap();
    assert!(
        stopped.starts_with("the search's time limit (1.5 s) was reached during the probe at c1"),
        "{stopped}"
    );
}
