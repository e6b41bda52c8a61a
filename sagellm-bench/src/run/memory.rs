//! Resident memory of this process, sampled on a background thread during a workload.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::backend::MemoryFigures;

/// Samples this process's resident set size every `interval` until stopped.
pub struct MemorySampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<u64>>,
}

impl MemorySampler {
    pub fn start(interval: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            loop {
                if let Some(stats) = memory_stats::memory_stats() {
                    samples.push(stats.physical_mem as u64);
                }
                if flag.load(Ordering::Relaxed) {
                    return samples;
                }
                std::thread::sleep(interval);
            }
        });
        MemorySampler { stop, thread }
    }

    /// Stops sampling (taking one last sample) and returns peak and mean, in MiB.
    pub fn stop(self) -> MemoryFigures {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.thread.join().unwrap_or_default();
        figures(&samples)
    }
}

/// Peak and mean of equally spaced samples, in MiB.
fn figures(samples: &[u64]) -> MemoryFigures {
    const MB: f64 = 1024.0 * 1024.0;
    if samples.is_empty() {
        return MemoryFigures::default();
    }
    let peak = samples.iter().copied().max().unwrap_or(0) as f64 / MB;
    let avg = samples.iter().map(|&b| b as f64).sum::<f64>() / samples.len() as f64 / MB;
    MemoryFigures {
        peak_mb: peak,
        avg_mb: avg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_by_hand() {
        let mb = 1024 * 1024;
        let f = figures(&[100 * mb, 300 * mb, 200 * mb]);
        assert_eq!(f.peak_mb, 300.0);
        assert_eq!(f.avg_mb, 200.0);
        assert_eq!(figures(&[]), MemoryFigures::default());
    }

    #[test]
    fn sampler_sees_a_large_allocation() {
        let sampler = MemorySampler::start(Duration::from_millis(2));
        std::thread::sleep(Duration::from_millis(20));
        // Touch 256 MiB so it is resident, hold it while samples are taken, then free it.
        let block = std::hint::black_box(vec![1u8; 256 << 20]);
        std::thread::sleep(Duration::from_millis(50));
        let before_free = sampler.stop();
        drop(std::hint::black_box(block));
        assert!(
            before_free.peak_mb >= 256.0,
            "peak {} MiB",
            before_free.peak_mb
        );
        assert!(before_free.avg_mb <= before_free.peak_mb);
    }
}
