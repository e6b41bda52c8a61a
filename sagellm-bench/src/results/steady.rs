//! Steady state: the part of a workload during which the load was at its target, and the
//! figures over it. Whole-run figures mix in the ramp (the server filling up) and the drain
//! (the last requests running on an emptying server, faster than under load); the steady
//! window leaves both out. See `docs/METRICS.md`, "Steady state".
//!
//! A pure function of the per-request samples and the workload's arrival process:
//!
//! - closed loop of `c` workers (`min(concurrency, requests)`): the window runs from the first
//!   moment at least `ceil(0.95 c)` requests are in flight to the last moment their number
//!   falls below that level;
//! - open loop: from the first completion (until then requests only arrive: the ramp) to the
//!   last send (after it requests only leave: the drain).
//!
//! The figures are over the successful requests that started and ended inside the window.

use crate::results::metrics::{percentile, Stats};
use crate::results::samples::{in_flight_steps, RequestSample};
use crate::workload::Arrival;

/// Share of a closed loop's workers that must be in flight for the load to count as at its
/// target.
pub const CLOSED_LOOP_LEVEL: f64 = 0.95;

/// Fewer requests than this inside the window, or a window shorter than
/// [`MIN_WINDOW_SHARE`] of the wall time, makes the steady figures too short to trust.
pub const MIN_WINDOW_REQUESTS: u64 = 10;

/// See [`MIN_WINDOW_REQUESTS`].
pub const MIN_WINDOW_SHARE: f64 = 0.5;

/// A workload's steady window and the figures over it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SteadyState {
    /// Window bounds, ms from the workload's start (the origin of each sample's `start_ms`).
    pub start_ms: f64,
    pub end_ms: f64,
    /// Successful requests that started and ended inside the window.
    pub requests: u64,
    /// Their output tokens over the window's length.
    pub output_throughput_tps: f64,
    /// Their count over the window's length.
    pub request_throughput_rps: f64,
    pub avg_ttft_ms: f64,
    pub p99_ttft_ms: f64,
    pub avg_tpot_ms: f64,
    pub p99_e2el_ms: f64,
    /// Too few requests, or too small a share of the wall time, to trust the figures.
    pub too_short: bool,
}

/// The steady window of a workload run with `arrival` whose requests gave `samples`: `None`
/// when the load never reached its target (a closed loop with no request, an open loop whose
/// last send came before its first completion).
pub fn window(arrival: &Arrival, samples: &[RequestSample]) -> Option<(f64, f64)> {
    if samples.is_empty() {
        return None;
    }
    match arrival.concurrency() {
        Some(concurrency) => {
            let workers = concurrency.min(samples.len());
            let level = (CLOSED_LOOP_LEVEL * workers as f64).ceil().max(1.0) as i64;
            closed_window(samples, level)
        }
        None => {
            let first_end = samples
                .iter()
                .map(RequestSample::end_ms)
                .fold(f64::INFINITY, f64::min);
            let last_send = samples
                .iter()
                .map(RequestSample::start_ms)
                .fold(f64::NEG_INFINITY, f64::max);
            (last_send > first_end).then_some((first_end, last_send))
        }
    }
}

/// From the first moment `level` requests are in flight to the last moment fewer are.
/// Sends and ends at the same instant are applied together: a closed-loop worker's next send
/// at the end of its previous request is no dip.
fn closed_window(samples: &[RequestSample], level: i64) -> Option<(f64, f64)> {
    let (mut start, mut end) = (None, None);
    for step in in_flight_steps(samples) {
        if start.is_none() && step.after >= level {
            start = Some(step.at);
        }
        if start.is_some() && step.before >= level && step.after < level {
            end = Some(step.at);
        }
    }
    Some((start?, end?))
}

/// The steady state of a workload run with `arrival`, whose wall time was `wall_time_s`.
pub fn steady_state(
    arrival: &Arrival,
    samples: &[RequestSample],
    wall_time_s: f64,
) -> Option<SteadyState> {
    let (start_ms, end_ms) = window(arrival, samples)?;
    let inside: Vec<&RequestSample> = samples
        .iter()
        .filter(|s| s.success() && s.start_ms() >= start_ms && s.end_ms() <= end_ms)
        .collect();
    let seconds = (end_ms - start_ms) / 1000.0;
    let per_second = |n: f64| if seconds > 0.0 { n / seconds } else { 0.0 };
    let values = |f: fn(&RequestSample) -> Option<f64>| -> Vec<f64> {
        let mut v: Vec<f64> = inside.iter().filter_map(|s| f(s)).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (ttft, tpot, e2el) = (
        values(RequestSample::ttft_ms),
        values(RequestSample::tpot_ms),
        values(RequestSample::e2el_ms),
    );
    let requests = inside.len() as u64;
    let tokens: usize = inside.iter().map(|s| s.output_tokens()).sum();
    Some(SteadyState {
        start_ms,
        end_ms,
        requests,
        output_throughput_tps: per_second(tokens as f64),
        request_throughput_rps: per_second(requests as f64),
        avg_ttft_ms: Stats::of(&ttft).mean,
        p99_ttft_ms: percentile(&ttft, 99.0),
        avg_tpot_ms: Stats::of(&tpot).mean,
        p99_e2el_ms: percentile(&e2el, 99.0),
        too_short: requests < MIN_WINDOW_REQUESTS || seconds < MIN_WINDOW_SHARE * wall_time_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::record::test_record;

    /// A successful request sent at `start` whose `tokens` tokens arrive every 10 ms from 10.
    fn request(index: usize, start: f64, tokens: usize) -> RequestSample {
        let times: Vec<f64> = (1..=tokens).map(|k| 10.0 * k as f64).collect();
        RequestSample::of(&test_record(index, start, &times, None))
    }

    #[test]
    fn a_closed_loop_window_runs_from_the_full_level_to_the_first_worker_left_idle() {
        // Concurrency 2, five requests of 3 tokens (30 ms each). Worker A: 0-30, 30-60, 60-90;
        // worker B starts late at 5: 5-35, 35-65. In flight: 1 at 0, 2 from 5, (A's end and
        // next send at 30 together) 2, ... at 65 B finds nothing: 1. Level ceil(0.95 * 2) = 2:
        // window [5, 65].
        let samples = [
            request(0, 0.0, 3),
            request(1, 5.0, 3),
            request(2, 30.0, 3),
            request(3, 35.0, 3),
            request(4, 60.0, 3),
        ];
        let closed = Arrival::Closed { concurrency: 2 };
        assert_eq!(window(&closed, &samples), Some((5.0, 65.0)));
        // Inside: 1 (5-35), 2 (30-60), 3 (35-65): 9 tokens over 60 ms = 150 tok/s, 50 req/s.
        let s = steady_state(&closed, &samples, 0.090).unwrap();
        assert_eq!(s.requests, 3);
        assert!((s.output_throughput_tps - 150.0).abs() < 1e-9);
        assert!((s.request_throughput_rps - 50.0).abs() < 1e-9);
        assert_eq!((s.avg_ttft_ms, s.p99_e2el_ms), (10.0, 30.0));
        // 3 requests are fewer than 10: too short to trust.
        assert!(s.too_short);
    }

    #[test]
    fn an_open_loop_window_runs_from_the_first_completion_to_the_last_send() {
        // Sends at 0, 10, 20, 30, each 25 ms long: the first ends at 25, the last is sent at 30.
        let samples: Vec<RequestSample> = (0..4)
            .map(|i| {
                let times = [10.0, 25.0];
                RequestSample::of(&test_record(i, 10.0 * i as f64, &times, None))
            })
            .collect();
        let open = Arrival::Constant { rate: 100.0 };
        assert_eq!(window(&open, &samples), Some((25.0, 30.0)));
        // No request both starts and ends in [25, 30].
        assert_eq!(steady_state(&open, &samples, 0.055).unwrap().requests, 0);
        // One request: its last send is its first completion's start, no window.
        assert_eq!(window(&open, &samples[..1]), None);
    }

    #[test]
    fn a_run_that_never_reaches_the_level_has_no_window() {
        // Concurrency 4 over 4 requests, but they never overlap: at most 1 in flight.
        let samples: Vec<RequestSample> = (0..4).map(|i| request(i, 40.0 * i as f64, 3)).collect();
        assert_eq!(window(&Arrival::Closed { concurrency: 4 }, &samples), None);
        assert_eq!(window(&Arrival::Closed { concurrency: 4 }, &[]), None);
    }
}
