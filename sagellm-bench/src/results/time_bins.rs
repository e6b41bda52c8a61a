//! Amounts summed into equal time bins whose number stays bounded however long a run lasts.
//!
//! Bins start 1/1024 ms wide. When an amount lands beyond the last of [`MAX_BINS`] bins, the
//! width doubles and neighbouring pairs merge, as often as needed. Widths are powers of two, so
//! every bin edge is exact and merging loses nothing but resolution: the sum over any merged
//! bin equals the sum of the amounts that fell in it, whatever order they arrived in.

/// The most bins kept (32 KiB of sums).
pub const MAX_BINS: usize = 4096;

/// The starting width: 2^-10 ms, about a microsecond.
const FIRST_WIDTH_MS: f64 = 1.0 / 1024.0;

/// Sums of amounts per time bin, from time 0.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeBins {
    width_ms: f64,
    sums: Vec<f64>,
}

impl Default for TimeBins {
    fn default() -> Self {
        TimeBins {
            width_ms: FIRST_WIDTH_MS,
            sums: Vec::new(),
        }
    }
}

impl TimeBins {
    /// Adds `amount` at `at_ms` (a negative time, possible only in a hand-edited file, counts
    /// as 0).
    pub fn add(&mut self, at_ms: f64, amount: f64) {
        let at_ms = at_ms.max(0.0);
        while at_ms >= self.width_ms * MAX_BINS as f64 && self.width_ms.is_finite() {
            self.double_width();
        }
        let i = ((at_ms / self.width_ms) as usize).min(MAX_BINS - 1);
        if i >= self.sums.len() {
            self.sums.resize(i + 1, 0.0);
        }
        self.sums[i] += amount;
    }

    fn double_width(&mut self) {
        self.sums = self.sums.chunks(2).map(|pair| pair.iter().sum()).collect();
        self.width_ms *= 2.0;
    }

    /// The same sums in at most `max_bins` bins (merging neighbouring pairs; `max_bins` >= 1).
    pub fn coarsened(&self, max_bins: usize) -> TimeBins {
        let mut bins = self.clone();
        while bins.sums.len() > max_bins.max(1) {
            bins.double_width();
        }
        bins
    }

    /// The width of every bin, in milliseconds.
    pub fn width_ms(&self) -> f64 {
        self.width_ms
    }

    /// The sum in each bin, from time 0; bin `i` covers `[i w, (i + 1) w)`. Bins after the last
    /// amount are not listed.
    pub fn sums(&self) -> &[f64] {
        &self.sums
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_land_in_their_bins() {
        let mut bins = TimeBins::default();
        bins.add(0.0, 1.0);
        bins.add(1.0, 2.0); // 1 ms = bin 1024
        bins.add(1.0005, 3.0); // same bin: [1, 1 + 1/1024)
        assert_eq!(bins.width_ms(), 1.0 / 1024.0);
        assert_eq!(bins.sums().len(), 1025);
        assert_eq!((bins.sums()[0], bins.sums()[1024]), (1.0, 5.0));
    }

    #[test]
    fn a_late_amount_doubles_the_width_until_it_fits_and_keeps_every_sum() {
        let mut bins = TimeBins::default();
        bins.add(0.0, 1.0);
        bins.add(3.9, 2.0);
        // 4 ms needs 4096 bins of 1/1024 ms plus one: the width doubles once, to 1/512 ms.
        bins.add(4.0, 4.0);
        assert_eq!(bins.width_ms(), 1.0 / 512.0);
        // 3.9 ms lies in bin floor(3.9 * 512) = 1996; 4 ms in bin 2048.
        assert_eq!(bins.sums()[1996], 2.0);
        assert_eq!(bins.sums()[2048], 4.0);
        // An hour later: still at most MAX_BINS bins, and the total is unchanged.
        bins.add(3_600_000.0, 8.0);
        assert!(bins.sums().len() <= MAX_BINS);
        assert_eq!(bins.sums().iter().sum::<f64>(), 15.0);
        // 3,600,000 ms / 4096 bins = 878.9 ms: the width is the next power of two, 1024 ms.
        assert_eq!(bins.width_ms(), 1024.0);
        assert_eq!(bins.sums()[0], 7.0);
    }

    #[test]
    fn coarsening_merges_pairs() {
        let mut bins = TimeBins::default();
        for i in 0..10 {
            bins.add(i as f64 / 1024.0, 1.0);
        }
        let coarse = bins.coarsened(4);
        assert_eq!(coarse.width_ms(), 4.0 / 1024.0);
        assert_eq!(coarse.sums(), &[4.0, 4.0, 2.0]);
    }

    #[test]
    fn absurd_times_do_not_hang_or_panic() {
        let mut bins = TimeBins::default();
        bins.add(-3.0, 1.0);
        bins.add(f64::MAX, 1.0);
        assert_eq!(bins.sums().iter().sum::<f64>(), 2.0);
    }
}
