//! Delivered load: whether a closed loop kept the number of requests in flight it was asked
//! for. Between one request's end and the next one's send, a worker of the client is idle; a
//! slow client (parsing, scheduling, a new connection) widens those gaps, and the server then
//! sees less load than the run's name says. See `docs/METRICS.md`, "Delivered load".
//!
//! A pure function of the per-request samples: over the sending phase, from the first moment
//! all `c` workers (`min(concurrency, requests)`) are in flight to the last send (after it the
//! loop only drains), the time-weighted mean number in flight, how long fewer than `c` were,
//! and how many times their number fell below `c`.

use crate::results::samples::{in_flight_steps, RequestSample};

/// A closed loop whose mean number in flight was more than this share below its target
/// delivered visibly less load than asked for: the run warns. (The time below the target is no
/// measure of that: with 64 workers, one of them between two requests puts the loop below.)
pub const DELIVERY_SHORTFALL_WARNING: f64 = 0.05;

/// How well a closed loop kept its requests in flight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delivery {
    /// Workers: the concurrency, or the request count when smaller.
    pub target: usize,
    /// From the first request's send to the moment all workers were first in flight, ms.
    pub ramp_ms: f64,
    /// The sending phase's length: from the end of the ramp to the last send, ms.
    pub phase_ms: f64,
    /// Time-weighted mean number in flight over the phase (the target when the phase is empty).
    pub mean_in_flight: f64,
    /// Time within the phase with fewer than `target` in flight, ms.
    pub below_target_ms: f64,
    /// Times within the phase the number in flight fell below `target`.
    pub dips: u64,
}

impl Delivery {
    /// The mean number in flight as a share of the target: 1 when every worker always was.
    pub fn delivered_share(&self) -> f64 {
        self.mean_in_flight / self.target as f64
    }

    /// Whether the loop delivered less than `1 - DELIVERY_SHORTFALL_WARNING` of its target.
    pub fn fell_short(&self) -> bool {
        self.delivered_share() < 1.0 - DELIVERY_SHORTFALL_WARNING
    }

    /// The share of the sending phase spent below the target (0 for an empty phase).
    pub fn below_target_share(&self) -> f64 {
        if self.phase_ms > 0.0 {
            self.below_target_ms / self.phase_ms
        } else {
            0.0
        }
    }
}

/// The delivered load of a closed loop of `concurrency` whose requests gave `samples`, failed
/// ones included (they were in flight too); `None` without requests, or when the workers were
/// never all in flight at once.
pub fn closed_loop(concurrency: usize, samples: &[RequestSample]) -> Option<Delivery> {
    let target = concurrency.min(samples.len()) as i64;
    if target == 0 {
        return None;
    }
    let steps = in_flight_steps(samples);
    let first_send = steps.first()?.at;
    let last_send = samples
        .iter()
        .map(RequestSample::start_ms)
        .fold(f64::NEG_INFINITY, f64::max);

    let mut phase_start = None::<f64>;
    let (mut weighted, mut below_ms, mut dips) = (0.0, 0.0, 0u64);
    for (k, step) in steps.iter().enumerate() {
        if step.at > last_send {
            break;
        }
        // The time until the next step (or the last send) holds `step.after`.
        let until = steps.get(k + 1).map_or(last_send, |s| s.at.min(last_send));
        if phase_start.is_none() && step.after >= target {
            phase_start = Some(step.at);
        }
        if phase_start.is_some() {
            let span = until - step.at;
            weighted += step.after as f64 * span;
            // At the last send the drain begins: a fall there is no dip.
            if step.after < target && step.at < last_send {
                below_ms += span;
                if step.before >= target {
                    dips += 1;
                }
            }
        }
    }
    let start = phase_start?;
    let phase_ms = last_send - start;
    Some(Delivery {
        target: target as usize,
        ramp_ms: start - first_send,
        phase_ms,
        mean_in_flight: if phase_ms > 0.0 {
            weighted / phase_ms
        } else {
            target as f64
        },
        below_target_ms: below_ms,
        dips,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::record::test_record;

    /// A request sent at `start` that ends `length` ms later (its one token then).
    fn request(index: usize, start: f64, length: f64) -> RequestSample {
        RequestSample::of(&test_record(index, start, &[length], None))
    }

    #[test]
    fn a_loop_whose_workers_send_as_they_finish_delivers_its_target() {
        // Concurrency 2, requests of 10 ms: worker A at 0, 10, 20; worker B at 0, 10, 20.
        let samples: Vec<RequestSample> = (0..6)
            .map(|i| request(i, 10.0 * (i / 2) as f64, 10.0))
            .collect();
        let d = closed_loop(2, &samples).unwrap();
        assert_eq!(
            d,
            Delivery {
                target: 2,
                ramp_ms: 0.0,
                phase_ms: 20.0,
                mean_in_flight: 2.0,
                below_target_ms: 0.0,
                dips: 0,
            }
        );
        assert!(!d.fell_short());
    }

    #[test]
    fn gaps_between_a_worker_s_requests_are_time_below_target() {
        // Concurrency 2. A: 0-10, then sends 1 ms late 11-21, then 21-31 (no gap).
        // B: starts 2 ms late, 2-12, then 14-24 (2 ms gap), then 24-34.
        let samples = [
            request(0, 0.0, 10.0),
            request(1, 2.0, 10.0),
            request(2, 11.0, 10.0),
            request(3, 14.0, 10.0),
            request(4, 21.0, 10.0),
            request(5, 24.0, 10.0),
        ];
        let d = closed_loop(2, &samples).unwrap();
        // Ramp 0 to 2. Phase 2 to 24 (the last send): 22 ms. Below 2 in flight: 10-11 (A's
        // gap) and 12-14 (B's): 3 ms in 2 dips; at 21 A's end and next send coincide.
        assert_eq!((d.target, d.ramp_ms, d.phase_ms), (2, 2.0, 22.0));
        assert_eq!((d.below_target_ms, d.dips), (3.0, 2));
        // In flight: 2 for 19 ms, 1 for 3 ms: (38 + 3) / 22.
        assert!((d.mean_in_flight - 41.0 / 22.0).abs() < 1e-12, "{d:?}");
        assert!((d.below_target_share() - 3.0 / 22.0).abs() < 1e-12);
        // 41 / 44 = 0.93 of the target: short of it by more than 5%.
        assert!(d.fell_short());
    }

    #[test]
    fn fewer_requests_than_workers_target_the_request_count_and_none_is_empty() {
        let samples = [request(0, 0.0, 10.0), request(1, 0.0, 10.0)];
        let d = closed_loop(8, &samples).unwrap();
        assert_eq!((d.target, d.phase_ms, d.mean_in_flight), (2, 0.0, 2.0));
        assert_eq!(closed_loop(4, &[]), None);
        // Never both in flight: the target was never reached.
        let apart = [request(0, 0.0, 5.0), request(1, 6.0, 5.0)];
        assert_eq!(closed_loop(2, &apart), None);
    }
}
