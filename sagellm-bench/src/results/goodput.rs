//! Goodput: the requests that met every latency objective (SLO) given, per second of workload
//! wall time, as vLLM's `benchmark_serving --goodput` defines it. See `docs/METRICS.md`.
//!
//! Computed from per-request figures only ([`RequestLatency`]), so it does not depend on how
//! the records are stored.

use crate::workload::slo::Slo;

/// The figures of one request that objectives are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RequestLatency {
    pub success: bool,
    pub ttft_ms: Option<f64>,
    /// `None` for a request with one output token: it has no gap to time.
    pub tbt_ms: Option<f64>,
    pub e2el_ms: Option<f64>,
}

/// A workload's goodput.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Goodput {
    /// Requests that succeeded and met every objective.
    pub good_requests: u64,
    /// `good_requests` per second of workload wall time.
    pub request_goodput_rps: f64,
    /// `good_requests` over all measured requests (failed ones included).
    pub goodput_fraction: f64,
}

impl Slo {
    /// Whether `request` succeeded and met every objective set. A request without a TBT (one
    /// output token) meets a TBT objective, as vLLM counts its TPOT as 0.
    pub fn met_by(&self, request: &RequestLatency) -> bool {
        let within = |limit: Option<f64>, value: Option<f64>, absent_meets: bool| match limit {
            None => true,
            Some(limit) => value.map_or(absent_meets, |v| v <= limit),
        };
        request.success
            && within(self.ttft_ms, request.ttft_ms, false)
            && within(self.tbt_ms, request.tbt_ms, true)
            && within(self.e2el_ms, request.e2el_ms, false)
    }
}

/// The goodput of a workload whose requests had `latencies`, over `wall_time_s` seconds.
pub fn goodput(
    slo: &Slo,
    latencies: impl IntoIterator<Item = RequestLatency>,
    wall_time_s: f64,
) -> Goodput {
    let (mut good, mut total) = (0u64, 0u64);
    for request in latencies {
        total += 1;
        good += u64::from(slo.met_by(&request));
    }
    let ratio = |n: f64, d: f64| if d > 0.0 { n / d } else { 0.0 };
    Goodput {
        good_requests: good,
        request_goodput_rps: ratio(good as f64, wall_time_s),
        goodput_fraction: ratio(good as f64, total as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ttft: f64, tbt: Option<f64>, e2el: f64) -> RequestLatency {
        RequestLatency {
            success: true,
            ttft_ms: Some(ttft),
            tbt_ms: tbt,
            e2el_ms: Some(e2el),
        }
    }

    #[test]
    fn goodput_by_hand() {
        // SLO: TTFT <= 100, TBT <= 20.
        // A (50, 10, 500) meets both; B (100, 20, 900) meets both at the limits;
        // C (150, 10, 600) misses TTFT; D (80, 25, 700) misses TBT; E (60, none, 60) has one
        // token and meets; F failed with fine latencies: not good.
        let slo = Slo {
            ttft_ms: Some(100.0),
            tbt_ms: Some(20.0),
            e2el_ms: None,
        };
        let mut failed = ok(10.0, Some(5.0), 100.0);
        failed.success = false;
        let requests = [
            ok(50.0, Some(10.0), 500.0),
            ok(100.0, Some(20.0), 900.0),
            ok(150.0, Some(10.0), 600.0),
            ok(80.0, Some(25.0), 700.0),
            ok(60.0, None, 60.0),
            failed,
        ];
        // 3 good of 6, over 2 s of wall time: 1.5 req/s, fraction 0.5.
        let g = goodput(&slo, requests, 2.0);
        assert_eq!(g.good_requests, 3);
        assert_eq!(g.request_goodput_rps, 1.5);
        assert_eq!(g.goodput_fraction, 0.5);
        // Adding E2E <= 650 drops B (900): 2 good.
        let tighter = Slo {
            e2el_ms: Some(650.0),
            ..slo
        };
        assert_eq!(goodput(&tighter, requests, 2.0).good_requests, 2);
    }

    #[test]
    fn empty_workload_gives_zeros() {
        let g = goodput(&Slo::parse("ttft:1").unwrap(), [], 0.0);
        assert_eq!(
            (g.good_requests, g.request_goodput_rps, g.goodput_fraction),
            (0, 0.0, 0.0)
        );
    }
}
