//! Per-request samples -> workload aggregates, as defined in `docs/METRICS.md`.
//!
//! Percentiles of per-request figures (TTFT, TPOT, E2E) are exact order statistics with linear
//! interpolation between the two nearest ranks, the estimator numpy's `percentile` uses by
//! default and vLLM's benchmark reports. With a handful of samples (the Year-1 workloads send 3
//! to 10 requests) a histogram's value-at-quantile would quantise and disagree with those tools;
//! sorting one number per request costs little. The pooled inter-token gaps, one per token, go
//! through an HDR histogram instead (see [`crate::results::itl`]): same estimator, within 0.05 %.
//! Standard deviations are population standard deviations (numpy's default, `ddof = 0`).

use serde::{Deserialize, Serialize};

use crate::backend::{EngineFigures, FigureSource};
use crate::results::goodput::{goodput, RequestLatency};
use crate::results::record::{RequestRecord, TokenCountSource};
use crate::results::samples::{RequestSample, WorkloadSamples};
use crate::results::turns::{self, SessionFigures, TurnFigures};
use crate::workload::slo::Slo;

/// The version of the JSON files' shape. Bumped when a field changes meaning; adding a field
/// does not bump it.
pub const SCHEMA_VERSION: u32 = 1;

/// Every aggregate of one workload: the contents of `<workload>_metrics.json`.
///
/// Latency aggregates are over successful requests; a figure that cannot be computed (no
/// successful request, or no request with two tokens for TBT) is 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadMetrics {
    pub schema_version: u32,
    pub workload: String,
    pub backend: String,
    pub model: String,

    pub avg_ttft_ms: f64,
    pub p50_ttft_ms: f64,
    pub p95_ttft_ms: f64,
    pub p99_ttft_ms: f64,
    pub std_ttft_ms: f64,
    pub avg_tbt_ms: f64,
    pub avg_tpot_ms: f64,
    pub p50_tpot_ms: f64,
    pub p95_tpot_ms: f64,
    pub p99_tpot_ms: f64,
    pub std_tpot_ms: f64,
    pub avg_itl_ms: f64,
    pub p50_itl_ms: f64,
    pub p95_itl_ms: f64,
    pub p99_itl_ms: f64,
    pub std_itl_ms: f64,
    pub avg_e2el_ms: f64,
    pub p50_e2el_ms: f64,
    pub p95_e2el_ms: f64,
    pub p99_e2el_ms: f64,
    pub std_e2el_ms: f64,
    /// Percentiles asked for beside p50, p95 and p99 (`--percentiles`), as vLLM's
    /// `--metric-percentiles` writes them: one `p<P>_<metric>_ms` key each (`p90_ttft_ms`,
    /// `p99.9_itl_ms`), for ttft, tpot, itl and e2el; absent unless asked for.
    #[serde(flatten)]
    pub percentiles: ExtraPercentiles,

    /// Reasoning figures (see docs/METRICS.md, "Reasoning models"): present only when some
    /// successful request streamed reasoning tokens. TTFO: time to first output (answer)
    /// token, beside the TTFT, which counts the first token of either kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_ttfo_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ttfo_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_ttfo_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ttfo_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std_ttfo_ms: Option<f64>,
    /// Reasoning and answer tokens of the successful requests; they add up to
    /// `total_output_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_reasoning_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_answer_tokens: Option<u64>,
    /// The answer-only variants of TBT, TPOT and ITL, the thinking left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_answer_tbt_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_answer_tpot_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_answer_tpot_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_answer_tpot_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_answer_itl_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_answer_itl_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_answer_itl_ms: Option<f64>,

    pub avg_throughput_tps: f64,
    pub output_throughput_tps: f64,
    pub input_throughput_tps: f64,
    pub total_throughput_tps: f64,
    pub request_throughput_rps: f64,
    /// Successful requests that met every `--goodput` objective, per second of wall time;
    /// absent when no objective was set (see [`WorkloadMetrics::set_goodput`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_goodput_rps: Option<f64>,
    /// Those requests over all measured requests; absent when no objective was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goodput_fraction: Option<f64>,
    /// The objectives goodput was measured against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goodput_slo: Option<Slo>,
    pub total_input_tokens: u64,
    pub total_output_tokens: u64,

    pub total_requests: u64,
    pub successful_requests: u64,
    pub failed_requests: u64,
    pub error_rate: f64,

    pub peak_mem_mb: f64,
    pub avg_mem_mb: f64,

    pub kv_used_tokens: u64,
    pub kv_used_bytes: u64,
    pub prefix_hit_rate: f64,
    pub evict_count: u64,
    pub evict_ms: f64,
    pub spec_accept_rate: f64,
    /// Tokens per speculative step on average (see docs/METRICS.md); absent where the backend
    /// does not count it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_mean_acceptance_length: Option<f64>,

    /// TCP connections the client opened during the measured requests; absent for backends
    /// without connections (mock, cpu). More than the concurrency means the server closed
    /// connections the client wanted to keep, and each new one's handshake is inside a TTFT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_opened: Option<u64>,
    /// Requests sent a second time on a fresh connection because their reused connection
    /// closed before any byte of the answer; absent for backends without connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried_requests: Option<u64>,

    /// The server's own mean time per request in its queue, to its first token, in prefill
    /// and in decode, from its metrics (see docs/SERVERS.md for each engine's); absent where
    /// the server does not give it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_avg_queue_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_avg_ttft_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_avg_prefill_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_avg_decode_ms: Option<f64>,
    /// `avg_ttft_ms` minus the server's: `server_avg_ttft_ms` where given, else
    /// `server_avg_queue_ms + server_avg_prefill_ms` (what of them the server gives). The share
    /// of the TTFT a user sees that the network, the HTTP stack and the client add.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_outside_server_ms: Option<f64>,

    pub total_time_s: f64,
    pub start_time: f64,
    pub end_time: f64,

    /// Where each group of figures came from.
    pub sources: FigureSources,

    /// False when the run was interrupted during this workload: the figures cover only the
    /// requests that finished.
    #[serde(default = "yes")]
    pub complete: bool,

    /// Open loop only: the 99th percentile of each request's scheduling lag (`start_ms -
    /// scheduled_ms`), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_lag_p99_ms: Option<f64>,
    /// Open loop only: requests whose scheduled time came while every one of the client's
    /// in-flight slots was busy, so that they waited for one (`run::limits::open_loop_slots`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_held_requests: Option<u64>,
    /// Open loop only: the client fell behind its schedule (a request was held, or the lag's
    /// p99 passed 10 ms), so the server saw a lower rate than asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_overloaded: Option<bool>,
    /// Open loop with a cap only (`--max-concurrency`): the cap on requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<usize>,
    /// Open loop with a cap only: requests whose scheduled time came while the cap was full,
    /// so that they waited for a slot (and were sent, and timed, from then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capped_requests: Option<u64>,

    /// Multi-turn workloads only: the figures of each turn index over all sessions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turns: Vec<TurnFigures>,
    /// Multi-turn workloads only: the sessions as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<SessionFigures>,

    /// The steady window (see `results::steady` and docs/METRICS.md, "Steady state"): its
    /// bounds in ms from the workload's start; absent when the load never reached its target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady_start_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady_end_ms: Option<f64>,
    /// Successful requests that started and ended inside the steady window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady_requests: Option<u64>,
    /// Their output tokens, and their count, over the window's length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady_output_throughput_tps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady_request_throughput_rps: Option<f64>,
    /// Their latencies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady_avg_ttft_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady_p99_ttft_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady_avg_tpot_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady_p99_e2el_ms: Option<f64>,
    /// True when the window holds fewer than 10 requests or under half the wall time: its
    /// figures are too few to trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady_too_short: Option<bool>,

    /// Closed loop only (not multi-turn): the time-weighted mean number of requests in flight
    /// while the loop was sending, from when all its workers were first in flight to the last
    /// send (`results::delivery`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_concurrency: Option<f64>,
    /// Closed loop only: time in that phase with fewer requests in flight than the loop's
    /// workers, ms, and how many times their number fell below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below_target_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below_target_dips: Option<u64>,
    /// Closed loop only: from the first send to all workers in flight, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_ramp_ms: Option<f64>,
}

fn yes() -> bool {
    true
}

impl WorkloadMetrics {
    /// Fills the goodput fields: the requests with `latencies` measured against `slo`, over
    /// this workload's wall time.
    pub fn set_goodput(&mut self, slo: &Slo, latencies: impl IntoIterator<Item = RequestLatency>) {
        let g = goodput(slo, latencies, self.total_time_s);
        self.request_goodput_rps = Some(g.request_goodput_rps);
        self.goodput_fraction = Some(g.goodput_fraction);
        self.goodput_slo = Some(*slo);
    }

    /// Fills the steady-state fields from a workload run with `arrival` whose requests gave
    /// `samples`; leaves them absent when the load never reached its target.
    pub fn set_steady_state(
        &mut self,
        arrival: &crate::workload::Arrival,
        samples: &[RequestSample],
    ) {
        let Some(s) = crate::results::steady::steady_state(arrival, samples, self.total_time_s)
        else {
            return;
        };
        self.steady_start_ms = Some(s.start_ms);
        self.steady_end_ms = Some(s.end_ms);
        self.steady_requests = Some(s.requests);
        self.steady_output_throughput_tps = Some(s.output_throughput_tps);
        self.steady_request_throughput_rps = Some(s.request_throughput_rps);
        self.steady_avg_ttft_ms = Some(s.avg_ttft_ms);
        self.steady_p99_ttft_ms = Some(s.p99_ttft_ms);
        self.steady_avg_tpot_ms = Some(s.avg_tpot_ms);
        self.steady_p99_e2el_ms = Some(s.p99_e2el_ms);
        self.steady_too_short = Some(s.too_short);
    }
}

impl WorkloadMetrics {
    /// Fills the delivered-load fields of a closed loop of `concurrency` whose requests gave
    /// `samples`, and returns what they were computed from.
    pub fn set_delivery(
        &mut self,
        concurrency: usize,
        samples: &[RequestSample],
    ) -> Option<crate::results::delivery::Delivery> {
        let d = crate::results::delivery::closed_loop(concurrency, samples)?;
        self.delivered_concurrency = Some(d.mean_in_flight);
        self.below_target_ms = Some(d.below_target_ms);
        self.below_target_dips = Some(d.dips);
        self.concurrency_ramp_ms = Some(d.ramp_ms);
        Some(d)
    }
}

/// Where each group of figures in a [`WorkloadMetrics`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FigureSources {
    /// TTFT, TBT, TPOT, ITL, E2E, wall time and throughput, always stamped by the runner:
    /// `measured` on the machine's clock, `simulated` on a virtual clock (the mock's).
    pub latency: FigureSource,
    /// `output_tokens`: the backend's usage report, a local tokenizer, the stream's token
    /// counts, or a mix of them.
    pub output_tokens: OutputTokenSource,
    pub memory: FigureSource,
    pub kv_cache: FigureSource,
    pub speculative: FigureSource,
}

/// Which count `n` came from, over a workload's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputTokenSource {
    Usage,
    Stream,
    /// Counted by tokenizing the streamed text (`--tokenizer`).
    Tokenizer,
    /// Counted by the server's tokenizer, through its `/tokenize` endpoint.
    ServerTokenizer,
    Mixed,
    /// No request produced output.
    None,
}

/// The moments bounding a workload, for wall time and the Unix timestamps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WallClock {
    /// Unix time (seconds) of the workload's first send.
    pub start_unix_s: f64,
    /// Workload wall time: first send to last completion, in seconds.
    pub total_time_s: f64,
}

/// Summary statistics of one sample set.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stats {
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub std: f64,
}

impl Stats {
    /// All zero for an empty sample.
    pub fn of(samples: &[f64]) -> Stats {
        if samples.is_empty() {
            return Stats::default();
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len() as f64;
        let mean = sorted.iter().sum::<f64>() / n;
        let var = sorted.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        Stats {
            mean,
            p50: percentile(&sorted, 50.0),
            p95: percentile(&sorted, 95.0),
            p99: percentile(&sorted, 99.0),
            std: var.sqrt(),
        }
    }
}

/// The `p`-th percentile (0..=100) of ascending `sorted` samples, interpolating linearly between
/// the order statistics at ranks `floor(h)` and `ceil(h)`, `h = (n - 1) p / 100`.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        1 => sorted[0],
        n => {
            let h = (n - 1) as f64 * p / 100.0;
            let lo = h.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (h - lo as f64)
        }
    }
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

/// Computes every aggregate of one workload from its measured requests' records.
pub fn aggregate(
    workload: &str,
    backend: &str,
    model: &str,
    records: &[RequestRecord],
    wall: WallClock,
    engine: &EngineFigures,
) -> WorkloadMetrics {
    let samples = WorkloadSamples::from_records(records);
    aggregate_samples(workload, backend, model, &samples, wall, engine)
}

/// Computes every aggregate of one workload from what it kept of its requests.
pub fn aggregate_samples(
    workload: &str,
    backend: &str,
    model: &str,
    samples: &WorkloadSamples,
    wall: WallClock,
    engine: &EngineFigures,
) -> WorkloadMetrics {
    let records = samples.requests();
    let ok: Vec<&RequestSample> = records.iter().filter(|r| r.success()).collect();
    let of = |value: fn(&RequestSample) -> Option<f64>| -> Vec<f64> {
        ok.iter().filter_map(|r| value(r)).collect()
    };
    let (ttft_s, tpot_s, e2el_s) = (
        Stats::of(&of(RequestSample::ttft_ms)),
        Stats::of(&of(RequestSample::tpot_ms)),
        Stats::of(&of(RequestSample::e2el_ms)),
    );
    let tbt = of(RequestSample::tbt_ms);
    let tput = of(RequestSample::throughput_tps);
    let itl = samples.itl();

    let total_input: u64 = ok.iter().map(|r| r.prompt_tokens() as u64).sum();
    let total_output: u64 = ok.iter().map(|r| r.output_tokens() as u64).sum();
    let total = records.len() as u64;
    let successful = ok.len() as u64;
    let failed = total - successful;
    let wall_s = wall.total_time_s;

    let kv = engine.kv.unwrap_or_default();
    let memory = engine.memory.unwrap_or_default();
    let spec = engine.spec.unwrap_or_default();
    let engine_source = engine.source.unwrap_or(FigureSource::Unavailable);
    let source_of = |present: bool| {
        if present {
            engine_source
        } else {
            FigureSource::Unavailable
        }
    };
    let server = ServerMeans::of(engine.server_timings.as_ref(), successful);
    let reasoning = Reasoning::of(&ok, samples);
    let output_tokens = {
        let mut sources = records
            .iter()
            .filter(|r| r.stream_tokens() > 0)
            .map(|r| r.output_tokens_source());
        match sources.next() {
            None => OutputTokenSource::None,
            Some(first) if sources.all(|s| s == first) => match first {
                TokenCountSource::Usage => OutputTokenSource::Usage,
                TokenCountSource::Stream => OutputTokenSource::Stream,
                TokenCountSource::Tokenizer => OutputTokenSource::Tokenizer,
                TokenCountSource::ServerTokenizer => OutputTokenSource::ServerTokenizer,
            },
            Some(_) => OutputTokenSource::Mixed,
        }
    };

    WorkloadMetrics {
        schema_version: SCHEMA_VERSION,
        workload: workload.to_string(),
        backend: backend.to_string(),
        model: model.to_string(),
        avg_ttft_ms: ttft_s.mean,
        p50_ttft_ms: ttft_s.p50,
        p95_ttft_ms: ttft_s.p95,
        p99_ttft_ms: ttft_s.p99,
        std_ttft_ms: ttft_s.std,
        avg_tbt_ms: Stats::of(&tbt).mean,
        avg_tpot_ms: tpot_s.mean,
        p50_tpot_ms: tpot_s.p50,
        p95_tpot_ms: tpot_s.p95,
        p99_tpot_ms: tpot_s.p99,
        std_tpot_ms: tpot_s.std,
        avg_itl_ms: itl.mean_ms(),
        p50_itl_ms: itl.percentile_ms(50.0),
        p95_itl_ms: itl.percentile_ms(95.0),
        p99_itl_ms: itl.percentile_ms(99.0),
        std_itl_ms: itl.std_ms(),
        avg_e2el_ms: e2el_s.mean,
        p50_e2el_ms: e2el_s.p50,
        p95_e2el_ms: e2el_s.p95,
        p99_e2el_ms: e2el_s.p99,
        std_e2el_ms: e2el_s.std,
        avg_ttfo_ms: reasoning.as_ref().map(|r| r.ttfo.mean),
        p50_ttfo_ms: reasoning.as_ref().map(|r| r.ttfo.p50),
        p95_ttfo_ms: reasoning.as_ref().map(|r| r.ttfo.p95),
        p99_ttfo_ms: reasoning.as_ref().map(|r| r.ttfo.p99),
        std_ttfo_ms: reasoning.as_ref().map(|r| r.ttfo.std),
        total_reasoning_tokens: reasoning.as_ref().map(|r| r.reasoning_tokens),
        total_answer_tokens: reasoning.as_ref().map(|r| r.answer_tokens),
        avg_answer_tbt_ms: reasoning.as_ref().map(|r| r.tbt_mean),
        avg_answer_tpot_ms: reasoning.as_ref().map(|r| r.tpot.mean),
        p50_answer_tpot_ms: reasoning.as_ref().map(|r| r.tpot.p50),
        p99_answer_tpot_ms: reasoning.as_ref().map(|r| r.tpot.p99),
        avg_answer_itl_ms: reasoning.as_ref().map(|r| r.itl_mean),
        p50_answer_itl_ms: reasoning.as_ref().map(|r| r.itl_p50),
        p99_answer_itl_ms: reasoning.as_ref().map(|r| r.itl_p99),
        avg_throughput_tps: Stats::of(&tput).mean,
        output_throughput_tps: ratio(total_output as f64, wall_s),
        input_throughput_tps: ratio(total_input as f64, wall_s),
        total_throughput_tps: ratio((total_input + total_output) as f64, wall_s),
        request_throughput_rps: ratio(successful as f64, wall_s),
        request_goodput_rps: None,
        goodput_fraction: None,
        goodput_slo: None,
        total_input_tokens: total_input,
        total_output_tokens: total_output,
        total_requests: total,
        successful_requests: successful,
        failed_requests: failed,
        error_rate: ratio(failed as f64, total as f64),
        peak_mem_mb: memory.peak_mb,
        avg_mem_mb: memory.avg_mb,
        kv_used_tokens: kv.used_tokens,
        kv_used_bytes: kv.used_bytes,
        prefix_hit_rate: ratio(kv.prefix_hit_tokens as f64, kv.prefix_query_tokens as f64),
        evict_count: kv.evict_count,
        evict_ms: kv.evict_ms,
        spec_accept_rate: ratio(spec.accepted_tokens as f64, spec.draft_tokens as f64),
        spec_mean_acceptance_length: engine.spec_mean_acceptance_length,
        connections_opened: engine.connections.map(|c| c.opened),
        retried_requests: engine.connections.map(|c| c.retried_requests),
        server_avg_queue_ms: server.queue,
        server_avg_ttft_ms: server.ttft,
        server_avg_prefill_ms: server.prefill,
        server_avg_decode_ms: server.decode,
        ttft_outside_server_ms: server
            .inside_ttft()
            .filter(|_| successful > 0)
            .map(|inside| ttft_s.mean - inside),
        total_time_s: wall_s,
        start_time: wall.start_unix_s,
        end_time: wall.start_unix_s + wall_s,
        sources: FigureSources {
            latency: FigureSource::Measured,
            output_tokens,
            memory: source_of(engine.memory.is_some()),
            kv_cache: source_of(engine.kv.is_some()),
            speculative: source_of(engine.spec.is_some()),
        },
        complete: true,
        schedule_lag_p99_ms: None,
        max_concurrency: None,
        capped_requests: None,
        percentiles: ExtraPercentiles::default(),
        client_held_requests: None,
        client_overloaded: None,
        turns: turns::per_turn(records),
        sessions: turns::sessions(records),
        steady_start_ms: None,
        steady_end_ms: None,
        steady_requests: None,
        steady_output_throughput_tps: None,
        steady_request_throughput_rps: None,
        steady_avg_ttft_ms: None,
        steady_p99_ttft_ms: None,
        steady_avg_tpot_ms: None,
        steady_p99_e2el_ms: None,
        steady_too_short: None,
        delivered_concurrency: None,
        below_target_ms: None,
        below_target_dips: None,
        concurrency_ramp_ms: None,
    }
}

/// The four latency figures at one percentile asked for beside p50, p95 and p99.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExtraPercentile {
    /// The percentile, above 0 and at most 100.
    pub p: f64,
    pub ttft_ms: f64,
    pub tpot_ms: f64,
    /// From the ITL histogram, as `p50_itl_ms` and the others.
    pub itl_ms: f64,
    pub e2el_ms: f64,
}

/// The percentiles a workload reports beside p50, p95 and p99, in ascending order. In the
/// metrics JSON, flattened into `p<P>_<metric>_ms` keys; reading a file back takes every key
/// of that form and leaves the others to their fields.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExtraPercentiles(pub Vec<ExtraPercentile>);

/// The metrics of each extra percentile, in the order of their keys, as vLLM names them.
const EXTRA_METRICS: [&str; 4] = ["ttft", "tpot", "itl", "e2el"];

impl ExtraPercentile {
    fn values(&self) -> [f64; 4] {
        [self.ttft_ms, self.tpot_ms, self.itl_ms, self.e2el_ms]
    }
}

impl ExtraPercentiles {
    /// How a percentile is written in a key and a label: `90`, `99.9` (vLLM's spelling: an
    /// integer without a decimal point, other numbers as Rust prints them, the shortest that
    /// reads back as the same number).
    pub fn label(p: f64) -> String {
        if p.fract() == 0.0 {
            format!("{}", p as u64)
        } else {
            format!("{p}")
        }
    }

    /// The JSON key of `metric` (ttft, tpot, itl, e2el) at percentile `p`: `p90_ttft_ms`.
    pub fn key(p: f64, metric: &str) -> String {
        format!("p{}_{metric}_ms", Self::label(p))
    }

    /// Reads a key of the form `p<P>_<metric>_ms` back: the percentile and the metric's index.
    fn parse_key(key: &str) -> Option<(f64, usize)> {
        let rest = key.strip_prefix('p')?.strip_suffix("_ms")?;
        let (text, metric) = rest.split_once('_')?;
        let index = EXTRA_METRICS.iter().position(|m| *m == metric)?;
        let p: f64 = text.parse().ok()?;
        // Only the spelling this version writes: `p90`, not `p90.0` or `p090`.
        (p > 0.0 && p <= 100.0 && Self::label(p) == text).then_some((p, index))
    }
}

impl Serialize for ExtraPercentiles {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len() * EXTRA_METRICS.len()))?;
        for extra in &self.0 {
            for (metric, value) in EXTRA_METRICS.iter().zip(extra.values()) {
                map.serialize_entry(&Self::key(extra.p, metric), &value)?;
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ExtraPercentiles {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = ExtraPercentiles;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("p<P>_<metric>_ms keys")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut found: Vec<(f64, [Option<f64>; 4])> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let Some((p, index)) = ExtraPercentiles::parse_key(&key) else {
                        // A field of a newer version, or one this version names elsewhere.
                        map.next_value::<serde::de::IgnoredAny>()?;
                        continue;
                    };
                    let value: f64 = map.next_value()?;
                    match found.iter_mut().find(|(q, _)| *q == p) {
                        Some((_, values)) => values[index] = Some(value),
                        None => {
                            let mut values = [None; 4];
                            values[index] = Some(value);
                            found.push((p, values));
                        }
                    }
                }
                found.sort_by(|a, b| a.0.total_cmp(&b.0));
                let mut extras = Vec::with_capacity(found.len());
                for (p, values) in found {
                    let [Some(ttft_ms), Some(tpot_ms), Some(itl_ms), Some(e2el_ms)] = values else {
                        return Err(serde::de::Error::custom(format!(
                            "percentile {} is given for some of ttft, tpot, itl and e2el but not all ({} missing)",
                            ExtraPercentiles::label(p),
                            EXTRA_METRICS
                                .iter()
                                .zip(values)
                                .filter(|(_, v)| v.is_none())
                                .map(|(m, _)| ExtraPercentiles::key(p, m))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    };
                    extras.push(ExtraPercentile {
                        p,
                        ttft_ms,
                        tpot_ms,
                        itl_ms,
                        e2el_ms,
                    });
                }
                Ok(ExtraPercentiles(extras))
            }
        }
        deserializer.deserialize_map(Keys)
    }
}

/// The percentiles every workload reports under their own fields, which `--percentiles`
/// does not repeat.
pub const FIXED_PERCENTILES: [f64; 3] = [50.0, 95.0, 99.0];

impl WorkloadMetrics {
    /// Fills the extra percentiles of `asked` (those not among p50, p95 and p99, each once,
    /// ascending) from the successful requests of `samples`: exact order statistics with
    /// linear interpolation, as the fixed ones ([`percentile`]), the ITL from its histogram.
    pub fn set_percentiles(&mut self, asked: &[f64], samples: &WorkloadSamples) {
        let mut ps: Vec<f64> = asked
            .iter()
            .copied()
            .filter(|p| !FIXED_PERCENTILES.contains(p))
            .collect();
        ps.sort_by(f64::total_cmp);
        ps.dedup();
        let ok: Vec<&RequestSample> = samples.requests().iter().filter(|r| r.success()).collect();
        let sorted = |value: fn(&RequestSample) -> Option<f64>| -> Vec<f64> {
            let mut v: Vec<f64> = ok.iter().filter_map(|r| value(r)).collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let (ttft, tpot, e2el) = (
            sorted(RequestSample::ttft_ms),
            sorted(RequestSample::tpot_ms),
            sorted(RequestSample::e2el_ms),
        );
        let itl = samples.itl();
        self.percentiles = ExtraPercentiles(
            ps.into_iter()
                .map(|p| ExtraPercentile {
                    p,
                    ttft_ms: percentile(&ttft, p),
                    tpot_ms: percentile(&tpot, p),
                    itl_ms: itl.percentile_ms(p),
                    e2el_ms: percentile(&e2el, p),
                })
                .collect(),
        );
    }
}

/// Lag p99 above which an open loop counts as fallen behind its schedule, ms.
pub const LAG_BEHIND_MS: f64 = 10.0;

/// The 99th percentile of the requests' scheduling lag (`start_ms - scheduled_ms`, at least
/// 0), over the requests that had a scheduled time; `None` when none had.
pub fn schedule_lag_p99(samples: &WorkloadSamples) -> Option<f64> {
    let mut lags: Vec<f64> = samples
        .requests()
        .iter()
        .filter_map(|r| r.scheduled_ms().map(|s| (r.start_ms() - s).max(0.0)))
        .filter(|lag| lag.is_finite())
        .collect();
    lags.sort_by(f64::total_cmp);
    (!lags.is_empty()).then(|| percentile(&lags, 99.0))
}

/// Whether an open loop fell behind its schedule: a request waited for an in-flight slot, or
/// the lag's p99 passed [`LAG_BEHIND_MS`].
pub fn fell_behind(held_requests: u64, lag_p99_ms: Option<f64>) -> bool {
    held_requests > 0 || lag_p99_ms.is_some_and(|p| p > LAG_BEHIND_MS)
}

/// The reasoning figures of a workload's successful requests.
struct Reasoning {
    ttfo: Stats,
    reasoning_tokens: u64,
    answer_tokens: u64,
    tbt_mean: f64,
    tpot: Stats,
    itl_mean: f64,
    itl_p50: f64,
    itl_p99: f64,
}

impl Reasoning {
    /// `None` when no successful request streamed reasoning: the figures would repeat the
    /// TTFT, TBT, TPOT and ITL and only lengthen every report. Requests without reasoning in a
    /// workload that has some count with their TTFT as TTFO and all their tokens as answer.
    fn of(ok: &[&RequestSample], samples: &WorkloadSamples) -> Option<Reasoning> {
        if ok.iter().all(|r| r.reasoning_tokens() == 0) {
            return None;
        }
        let of = |value: fn(&RequestSample) -> Option<f64>| -> Vec<f64> {
            ok.iter().filter_map(|r| value(r)).collect()
        };
        let itl = samples.answer_itl();
        Some(Reasoning {
            ttfo: Stats::of(&of(RequestSample::ttfo_ms)),
            reasoning_tokens: ok.iter().map(|r| r.reasoning_tokens() as u64).sum(),
            answer_tokens: ok.iter().map(|r| r.answer_tokens() as u64).sum(),
            tbt_mean: Stats::of(&of(RequestSample::answer_tbt_ms)).mean,
            tpot: Stats::of(&of(RequestSample::answer_tpot_ms)),
            itl_mean: itl.mean_ms(),
            itl_p50: itl.percentile_ms(50.0),
            itl_p99: itl.percentile_ms(99.0),
        })
    }
}

/// The server's per-request means, in milliseconds.
#[derive(Default)]
struct ServerMeans {
    queue: Option<f64>,
    ttft: Option<f64>,
    prefill: Option<f64>,
    decode: Option<f64>,
}

impl ServerMeans {
    /// Each phase's total over the requests the server counted, or over the workload's
    /// successful requests where its metric has no count.
    fn of(timings: Option<&crate::backend::ServerTimings>, successful: u64) -> Self {
        let Some(t) = timings else {
            return ServerMeans::default();
        };
        let mean = |phase: &Option<crate::backend::ServerTiming>| {
            let phase = phase.as_ref()?;
            let n = phase.requests.unwrap_or(successful);
            (n > 0).then(|| phase.total_ms / n as f64)
        };
        ServerMeans {
            queue: mean(&t.queue),
            ttft: mean(&t.ttft),
            prefill: mean(&t.prefill),
            decode: mean(&t.decode),
        }
    }

    /// The server's share of the TTFT: its own TTFT, else its queue and prefill times.
    fn inside_ttft(&self) -> Option<f64> {
        self.ttft.or(match (self.queue, self.prefill) {
            (None, None) => None,
            (q, p) => Some(q.unwrap_or(0.0) + p.unwrap_or(0.0)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{ErrorKind, KvFigures, RequestError, SpecFigures};
    use crate::results::record::RawRequest;

    fn ok(index: usize, start: f64, times: &[f64]) -> RequestRecord {
        crate::results::record::test_record(index, start, times, None)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * (1.0 + b.abs())
    }

    #[test]
    fn percentiles_on_five_samples_match_numpy_linear() {
        // numpy.percentile([10, 20, 30, 40, 100], q) with the default (linear) method:
        // h = 4q/100. q=50: h=2 -> 30. q=95: h=3.8 -> 40 + 0.8*60 = 88. q=99: h=3.96 -> 97.6.
        let s = [100.0, 20.0, 40.0, 10.0, 30.0];
        let st = Stats::of(&s);
        assert_eq!(st.p50, 30.0);
        assert!(close(st.p95, 88.0));
        assert!(close(st.p99, 97.6));
        assert_eq!(st.mean, 40.0);
        // Population variance: (900 + 400 + 100 + 0 + 3600) / 5 = 1000.
        assert!(close(st.std, 1000f64.sqrt()));
    }

    #[test]
    fn percentile_edge_cases() {
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[1.0, 3.0], 50.0), 2.0);
        assert_eq!(percentile(&[1.0, 3.0], 0.0), 1.0);
        assert_eq!(percentile(&[1.0, 3.0], 100.0), 3.0);
    }

    #[test]
    fn aggregates_by_hand_with_a_failed_request() {
        // A: sent at 0, tokens at 10, 20, 30 (n = 3): TTFT 10, E2E 30, TBT 10, TPOT 10.
        // B: sent at 30, tokens at 20, 50 (n = 2): TTFT 20, E2E 50, TBT 30, TPOT 25.
        // C: sent at 80, one token at 5 then fails at 15: counted as failed, ignored for latency.
        let a = ok(0, 0.0, &[10.0, 20.0, 30.0]);
        let b = ok(1, 30.0, &[20.0, 50.0]);
        let c = RequestRecord::new(RawRequest {
            index: 2,
            start_ms: 80.0,
            prompt_tokens: 8,
            token_times_ms: vec![5.0],
            token_counts: vec![1],
            finish_ms: 15.0,
            error: Some(RequestError::new(ErrorKind::Engine, "boom")),
            ..RawRequest::default()
        });
        let wall = WallClock {
            start_unix_s: 1000.0,
            total_time_s: 0.095, // first send 0 ms to last completion 80 + 15 = 95 ms
        };
        let engine = EngineFigures {
            kv: Some(KvFigures {
                used_tokens: 24,
                used_bytes: 2048,
                prefix_hit_tokens: 16,
                prefix_query_tokens: 64,
                evict_count: 3,
                evict_ms: 0.15,
            }),
            spec: Some(SpecFigures {
                draft_tokens: 10,
                accepted_tokens: 7,
            }),
            source: Some(FigureSource::Simulated),
            ..EngineFigures::default()
        };
        let m = aggregate("w", "mock", "m", &[a, b, c], wall, &engine);
        assert_eq!(
            (m.total_requests, m.successful_requests, m.failed_requests),
            (3, 2, 1)
        );
        assert!(close(m.error_rate, 1.0 / 3.0));
        assert!(close(m.avg_ttft_ms, 15.0));
        assert!(close(m.p50_ttft_ms, 15.0));
        assert!(close(m.p99_ttft_ms, 10.0 + 0.99 * 10.0));
        assert!(close(m.std_ttft_ms, 5.0));
        assert!(close(m.avg_tbt_ms, 20.0));
        assert!(close(m.avg_tpot_ms, 17.5));
        assert!(close(m.avg_e2el_ms, 40.0));
        // Pooled gaps of successful requests: 10, 10 (A) and 30 (B).
        assert!(close(m.avg_itl_ms, 50.0 / 3.0));
        // The histogram's bucket middles (9.998336 and 30.007296 ms) are clamped to the exact
        // minimum and maximum, 10 and 30; p95: h = 1.9, 10 + 0.9 * (30 - 10) = 28.
        assert!(close(m.p50_itl_ms, 10.0));
        assert!(close(m.p95_itl_ms, 28.0));
        // Population std of 10, 10, 30: sqrt(((20/3)^2 * 2 + (40/3)^2) / 3) = sqrt(800/9).
        assert!(close(m.std_itl_ms, (800.0f64 / 9.0).sqrt()));
        // Per-request throughput: A 3/0.03 = 100, B 2/0.05 = 40; mean 70.
        assert!(close(m.avg_throughput_tps, 70.0));
        // Successful tokens over wall time: output 5 / 0.095 s, input 16 / 0.095 s.
        assert_eq!((m.total_output_tokens, m.total_input_tokens), (5, 16));
        assert!(close(m.output_throughput_tps, 5.0 / 0.095));
        assert!(close(m.input_throughput_tps, 16.0 / 0.095));
        assert!(close(m.total_throughput_tps, 21.0 / 0.095));
        assert!(close(m.request_throughput_rps, 2.0 / 0.095));
        assert!(close(m.prefix_hit_rate, 0.25));
        assert!(close(m.spec_accept_rate, 0.7));
        assert_eq!(
            (m.kv_used_tokens, m.kv_used_bytes, m.evict_count),
            (24, 2048, 3)
        );
        assert!(close(m.end_time, 1000.095));
        assert_eq!(m.sources.kv_cache, FigureSource::Simulated);
        assert_eq!(m.sources.memory, FigureSource::Unavailable);
        assert_eq!(m.sources.output_tokens, OutputTokenSource::Stream);
    }

    #[test]
    fn reasoning_figures_by_hand_and_absent_without_reasoning() {
        // A: thinking at 10, 20, 30, the answer at 50, 55, 60 (n = 6): TTFO 50, answer TBT
        // (60 - 50) / 2 = 5, answer TPOT 60 / 3 = 20, answer gaps 5 and 5.
        // B: no reasoning, tokens at 20 and 30: TTFO = TTFT = 20, answer TBT 10, answer TPOT
        // 30 / 2 = 15, answer gap 10.
        let a = RequestRecord::new(RawRequest {
            index: 0,
            prompt_tokens: 8,
            token_times_ms: vec![10.0, 20.0, 30.0, 50.0, 55.0, 60.0],
            token_counts: vec![1; 6],
            reasoning_counts: vec![1, 1, 1, 0, 0, 0],
            finish_ms: 60.0,
            ..RawRequest::default()
        });
        let b = ok(1, 60.0, &[20.0, 30.0]);
        let wall = WallClock {
            start_unix_s: 0.0,
            total_time_s: 0.09,
        };
        let engine = EngineFigures::default();
        let m = aggregate("w", "b", "m", &[a, b.clone()], wall, &engine);
        // TTFT stays the first token of either kind: (10 + 20) / 2.
        assert!(close(m.avg_ttft_ms, 15.0));
        assert_eq!(m.avg_ttfo_ms, Some(35.0));
        assert_eq!(m.p50_ttfo_ms, Some(35.0));
        assert!(close(m.p99_ttfo_ms.unwrap(), 20.0 + 0.99 * 30.0));
        assert_eq!(m.std_ttfo_ms, Some(15.0));
        assert_eq!(
            (m.total_reasoning_tokens, m.total_answer_tokens),
            (Some(3), Some(5))
        );
        assert_eq!(m.total_output_tokens, 8);
        assert_eq!(m.avg_answer_tbt_ms, Some(7.5));
        assert_eq!(m.avg_answer_tpot_ms, Some(17.5));
        assert!(close(m.avg_answer_itl_ms.unwrap(), 20.0 / 3.0));
        // Pooled answer gaps 5, 5, 10: p50 5, p99 5 + 0.98 * 5 (within the histogram's 0.05 %).
        assert!((m.p50_answer_itl_ms.unwrap() - 5.0).abs() < 5.0 * 5e-4);
        assert!((m.p99_answer_itl_ms.unwrap() - 9.9).abs() < 9.9 * 5e-4);
        // The all-token ITL still holds the thinking's gaps: 10, 10, 20, 5, 5 and 10.
        assert!(close(m.avg_itl_ms, 60.0 / 6.0));

        let plain = aggregate("w", "b", "m", &[b], wall, &engine);
        assert_eq!(
            (plain.avg_ttfo_ms, plain.total_reasoning_tokens),
            (None, None)
        );
        assert_eq!(plain.avg_answer_itl_ms, None);
        let json = serde_json::to_string(&plain).unwrap();
        assert!(!json.contains("ttfo") && !json.contains("answer"), "{json}");
    }

    #[test]
    fn no_successful_request_gives_zeros_not_nan() {
        let c = RequestRecord::new(RawRequest {
            finish_ms: 1.0,
            error: Some(RequestError::new(ErrorKind::Http, "500")),
            ..RawRequest::default()
        });
        let wall = WallClock {
            start_unix_s: 0.0,
            total_time_s: 0.001,
        };
        let m = aggregate("w", "b", "m", &[c], wall, &EngineFigures::default());
        assert_eq!(m.error_rate, 1.0);
        assert_eq!(m.avg_ttft_ms, 0.0);
        assert_eq!(m.p99_tpot_ms, 0.0);
        assert_eq!(m.prefix_hit_rate, 0.0);
        assert_eq!(m.spec_accept_rate, 0.0);
        let json = serde_json::to_string(&m).unwrap();
        assert!(!json.contains("NaN") && !json.contains("null"));
    }
}
