//! The pooled inter-token gaps of a workload, in memory that does not grow with their number.
//!
//! A long run streams millions of tokens; keeping every gap to sort it would grow memory by
//! 8 bytes a token. Instead each gap, rounded to whole nanoseconds, goes into an HDR histogram
//! (3 significant digits) and into exact integer sums:
//!
//! - count, mean and population standard deviation are exact (integer sums of the nanosecond
//!   gaps, so they do not depend on the order the gaps arrive in, and two runs merge exactly);
//! - the minimum and maximum are exact;
//! - a percentile is numpy's linear interpolation between the order statistics at ranks
//!   `floor(h)` and `floor(h) + 1`, `h = (n - 1) p / 100`, with each order statistic read from
//!   the histogram as the middle of its bucket and clamped to `[min, max]`. A bucket of the
//!   histogram spans at most 1/1024 of its values (values below 2048 ns are kept exactly), so
//!   each order statistic, and therefore the interpolated percentile, is within 1/2048 (0.05 %)
//!   of the exact one.

use hdrhistogram::Histogram;

/// Significant decimal digits the histogram keeps.
const SIGNIFICANT_DIGITS: u8 = 3;

/// Gaps are clamped to this many nanoseconds (about 78 hours), so the integer sums cannot
/// overflow on any realistic run and a hand-edited file cannot make them.
const MAX_GAP_NS: u64 = 1 << 48;

/// Count, exact moments and an HDR histogram of inter-token gaps.
#[derive(Debug, Clone)]
pub struct ItlStats {
    histogram: Histogram<u64>,
    count: u64,
    sum_ns: u128,
    sum_squares_ns: u128,
    min_ns: u64,
    max_ns: u64,
}

impl Default for ItlStats {
    fn default() -> Self {
        ItlStats::new()
    }
}

impl PartialEq for ItlStats {
    fn eq(&self, other: &Self) -> bool {
        self.histogram == other.histogram
            && (self.count, self.sum_ns, self.sum_squares_ns)
                == (other.count, other.sum_ns, other.sum_squares_ns)
            && (self.min_ns, self.max_ns) == (other.min_ns, other.max_ns)
    }
}

impl ItlStats {
    pub fn new() -> Self {
        ItlStats {
            // 3 significant digits is a valid setting, so creation cannot fail; the histogram
            // grows its range as larger gaps arrive.
            histogram: Histogram::new(SIGNIFICANT_DIGITS)
                .unwrap_or_else(|e| unreachable!("3 significant digits are valid: {e}")),
            count: 0,
            sum_ns: 0,
            sum_squares_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
        }
    }

    /// Records one gap given in milliseconds. It is rounded to whole nanoseconds (the clocks
    /// stamp whole nanoseconds, so a gap the runner measured is kept exactly); a negative gap,
    /// possible only in a hand-edited file, counts as 0.
    pub fn record_ms(&mut self, gap_ms: f64) {
        let ns = (gap_ms * 1e6).round();
        let ns = if ns > 0.0 {
            (ns as u64).min(MAX_GAP_NS)
        } else {
            0
        };
        // The histogram widens its range as needed; `ns` is at most 2^48, well within what it
        // can reach, so the clamping fallback is never taken.
        if self.histogram.record(ns).is_err() {
            self.histogram.saturating_record(ns);
        }
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(u128::from(ns));
        self.sum_squares_ns = self
            .sum_squares_ns
            .saturating_add(u128::from(ns) * u128::from(ns));
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    /// Adds another run's gaps: the result equals one run over both sets of gaps.
    pub fn merge(&mut self, other: &ItlStats) {
        if other.count == 0 {
            return;
        }
        for value in other.histogram.iter_recorded() {
            let (at, count) = (value.value_iterated_to(), value.count_at_value());
            if self.histogram.record_n(at, count).is_err() {
                self.histogram.saturating_record_n(at, count);
            }
        }
        self.count += other.count;
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.sum_squares_ns = self.sum_squares_ns.saturating_add(other.sum_squares_ns);
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// How many gaps were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The exact mean gap in milliseconds; 0 without a gap.
    pub fn mean_ms(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        self.sum_ns as f64 / self.count as f64 / 1e6
    }

    /// The exact population standard deviation in milliseconds; 0 without a gap.
    pub fn std_ms(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let n = u128::from(self.count);
        // n * sum(x^2) - (sum x)^2 = n^2 * variance, exact in integers while it fits.
        let variance_ns2 = match (
            n.checked_mul(self.sum_squares_ns),
            self.sum_ns.checked_mul(self.sum_ns),
        ) {
            (Some(a), Some(b)) => a.saturating_sub(b) as f64 / (n as f64 * n as f64),
            _ => {
                let mean = self.sum_ns as f64 / n as f64;
                (self.sum_squares_ns as f64 / n as f64 - mean * mean).max(0.0)
            }
        };
        variance_ns2.sqrt() / 1e6
    }

    /// The smallest gap in milliseconds; 0 without a gap.
    pub fn min_ms(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.min_ns as f64 / 1e6
        }
    }

    /// The largest gap in milliseconds; 0 without a gap.
    pub fn max_ms(&self) -> f64 {
        self.max_ns as f64 / 1e6
    }

    /// The `p`-th percentile (0..=100) in milliseconds, as the module documentation defines it;
    /// 0 without a gap.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let h = (self.count - 1) as f64 * p.clamp(0.0, 100.0) / 100.0;
        let lo = h.floor() as u64;
        let hi = (lo + 1).min(self.count - 1);
        let (x_lo, x_hi) = (self.order_statistic_ns(lo), self.order_statistic_ns(hi));
        (x_lo + (x_hi - x_lo) * (h - lo as f64)) / 1e6
    }

    /// The gap of 0-based rank `rank` in ascending order, in nanoseconds: the middle of the
    /// histogram bucket holding it, clamped to the exact minimum and maximum.
    fn order_statistic_ns(&self, rank: u64) -> f64 {
        let mut below = 0u64;
        for value in self.histogram.iter_recorded() {
            below += value.count_at_value();
            if rank < below {
                let middle = self.histogram.median_equivalent(value.value_iterated_to());
                return middle.clamp(self.min_ns, self.max_ns) as f64;
            }
        }
        self.max_ns as f64
    }

    /// The histogram's buckets that hold gaps, ascending: (the middle of the bucket in
    /// milliseconds, clamped to the exact extremes; how many gaps it holds).
    pub fn buckets_ms(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.histogram.iter_recorded().map(|value| {
            let middle = self.histogram.median_equivalent(value.value_iterated_to());
            (
                middle.clamp(self.min_ns, self.max_ns.max(self.min_ns)) as f64 / 1e6,
                value.count_at_value(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(gaps_ms: &[f64]) -> ItlStats {
        let mut itl = ItlStats::new();
        gaps_ms.iter().for_each(|&g| itl.record_ms(g));
        itl
    }

    #[test]
    fn no_gap_gives_zeros() {
        let itl = ItlStats::new();
        assert_eq!(itl.count(), 0);
        assert_eq!(
            (itl.mean_ms(), itl.std_ms(), itl.percentile_ms(50.0)),
            (0.0, 0.0, 0.0)
        );
        assert_eq!((itl.min_ms(), itl.max_ms()), (0.0, 0.0));
    }

    #[test]
    fn mean_and_std_are_exact() {
        // Gaps 10, 10, 30 ms: mean 50/3; deviations -20/3, -20/3, 40/3; population variance
        // (400/9 * 2 + 1600/9) / 3 = 800/9, std 9.428...
        let itl = of(&[10.0, 10.0, 30.0]);
        assert_eq!(itl.count(), 3);
        assert!((itl.mean_ms() - 50.0 / 3.0).abs() < 1e-12);
        assert!((itl.std_ms() - (800.0f64 / 9.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn percentiles_by_hand_read_bucket_middles() {
        // 3 significant digits: values in [1024 * 2^13, 2048 * 2^13) = [8.39, 16.8) ms share
        // buckets 8192 ns wide. 15 ms = 15,000,000 ns lies in the bucket starting at
        // 1831 * 8192 = 14,999,552 ns, whose middle is 14,999,552 + 4096 = 15,003,648 ns.
        // Gaps 10, 15, 15, 30 ms, p50: h = 3 * 0.5 = 1.5, between ranks 1 and 2, both 15 ms,
        // so p50 = 15.003648 ms (exact: 15; error 0.024 %, within 1/2048).
        let itl = of(&[10.0, 15.0, 15.0, 30.0]);
        assert_eq!(itl.percentile_ms(50.0), 15.003648);
        // Ranks 0 and 3 are the minimum and maximum; the bucket middles are clamped to them:
        // 10 ms's bucket middle is 9,998,336 ns (below 10 ms, not below the minimum) and 30 ms's
        // is 30,007,296 ns, clamped to 30 ms.
        assert_eq!(itl.percentile_ms(0.0), 10.0);
        assert_eq!(itl.percentile_ms(100.0), 30.0);
        // p99: h = 2.97, between rank 2 (15.003648) and rank 3 (30): 15.003648 + 0.97 * 14.996352.
        let p99 = 15.003648 + 0.97 * (30.0 - 15.003648);
        assert!((itl.percentile_ms(99.0) - p99).abs() < 1e-9);
    }

    #[test]
    fn small_gaps_are_exact() {
        // Below 2048 ns the histogram keeps single nanoseconds.
        let itl = of(&[0.001, 0.002, 0.0005]);
        assert_eq!(itl.percentile_ms(50.0), 0.001);
        assert_eq!(itl.min_ms(), 0.0005);
    }

    #[test]
    fn merging_equals_recording_both() {
        let (a, b) = ([1.0, 2.5, 7.0], [0.25, 300.0]);
        let mut merged = of(&a);
        merged.merge(&of(&b));
        let both: Vec<f64> = a.iter().chain(&b).copied().collect();
        assert_eq!(merged, of(&both));
    }

    #[test]
    fn absurd_gaps_from_a_file_do_not_panic() {
        let itl = of(&[-5.0, 1e300, 0.0]);
        assert_eq!(itl.count(), 3);
        assert_eq!(itl.min_ms(), 0.0);
        assert_eq!(itl.max_ms(), MAX_GAP_NS as f64 / 1e6);
        assert!(itl.percentile_ms(99.0).is_finite() && itl.std_ms().is_finite());
    }
}
