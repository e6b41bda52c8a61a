//! Shards: one part of a run that several client processes (pods of a Kubernetes Indexed Job,
//! ranks of a Slurm job) send together.
//!
//! Every shard builds the same seeded global schedule (prompts, arrival times, sessions) and
//! sends only its own part: request `i` belongs to shard `i mod N`, a multi-turn session `s` (all
//! its turns) to shard `s mod N`. An open loop keeps each request's global time, so the shards'
//! rates add up to the whole; a closed loop's concurrency is divided among the shards. Merging
//! the shards' folders (`sagellm-benchmark merge`) gives back the whole run's requests.

use serde::{Deserialize, Serialize};

/// Shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based.
    pub index: usize,
    /// How many shards the run has, at least 1.
    pub count: usize,
}

/// The most shards one run may have.
pub const MAX_SHARDS: usize = 4096;

impl Shard {
    /// Reads `K/N` (0-based `K`, e.g. `0/4` .. `3/4`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad =
            || format!("shard `{text}` must be K/N with 0 <= K < N <= {MAX_SHARDS}, e.g. 0/4");
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            index.trim().parse().map_err(|_| bad())?,
            count.trim().parse().map_err(|_| bad())?,
        );
        Self::new(index, count).ok_or_else(bad)
    }

    /// Shard `index` of `count`, if `index < count <= MAX_SHARDS`.
    pub fn new(index: usize, count: usize) -> Option<Self> {
        (index < count && count <= MAX_SHARDS).then_some(Shard { index, count })
    }

    /// The shard the job scheduler started this process as, from its environment: a Kubernetes
    /// Indexed Job's `JOB_COMPLETION_INDEX` with `count` (the Job's `completions`, which the
    /// pod is not told), or Slurm's `SLURM_PROCID` and `SLURM_NTASKS`. `None` when neither is
    /// set; an error when one is set but unusable.
    pub fn from_env(count: Option<usize>) -> Result<Option<Self>, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let number = |name: &str, value: String| -> Result<usize, String> {
            value
                .trim()
                .parse()
                .map_err(|_| format!("{name}={value} is not a whole number"))
        };
        if let Some(index) = var("JOB_COMPLETION_INDEX") {
            let index = number("JOB_COMPLETION_INDEX", index)?;
            let count = count.ok_or(
                "JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but not the number of shards: give --shard-count N (the Job's completions)",
            )?;
            return Self::new(index, count).map(Some).ok_or_else(|| {
                format!("JOB_COMPLETION_INDEX={index} is not below --shard-count {count}")
            });
        }
        if let (Some(index), Some(tasks)) = (var("SLURM_PROCID"), var("SLURM_NTASKS")) {
            let (index, tasks) = (
                number("SLURM_PROCID", index)?,
                number("SLURM_NTASKS", tasks)?,
            );
            if count.is_some_and(|c| c != tasks) {
                return Err(format!(
                    "--shard-count {} disagrees with SLURM_NTASKS={tasks}",
                    count.unwrap_or_default()
                ));
            }
            return Self::new(index, tasks)
                .map(Some)
                .ok_or_else(|| format!("SLURM_PROCID={index} is not below SLURM_NTASKS={tasks}"));
        }
        Ok(None)
    }

    /// Whether item `i` (a request, or a session) of the global schedule is this shard's.
    pub fn owns(&self, i: usize) -> bool {
        i % self.count == self.index
    }

    /// How many of `total` items are this shard's.
    pub fn owned_of(&self, total: usize) -> usize {
        total / self.count + usize::from(self.index < total % self.count)
    }

    /// This shard's part of a closed loop's `concurrency`: the whole divided as evenly as it
    /// goes, the first `concurrency mod N` shards taking one more.
    pub fn concurrency(&self, concurrency: usize) -> usize {
        self.owned_of(concurrency)
    }

    /// `K/N`, as the command line writes it.
    pub fn label(&self) -> String {
        format!("{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_split_the_schedule_between_them() {
        let s = Shard::parse("1/4").unwrap();
        assert_eq!((s.index, s.count), (1, 4));
        for bad in ["4/4", "1", "a/2", "0/0", "0/5000", "-1/2"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        // 10 requests over 4 shards: 3, 3, 2, 2, and every request owned exactly once.
        let shards: Vec<Shard> = (0..4).map(|k| Shard::new(k, 4).unwrap()).collect();
        let owned: Vec<usize> = shards.iter().map(|s| s.owned_of(10)).collect();
        assert_eq!(owned, [3, 3, 2, 2]);
        for i in 0..10 {
            assert_eq!(shards.iter().filter(|s| s.owns(i)).count(), 1);
        }
        assert_eq!(
            (0..10).filter(|&i| shards[1].owns(i)).collect::<Vec<_>>(),
            [1, 5, 9]
        );
        // Concurrency 6 over 4 shards: 2, 2, 1, 1 (sums to 6).
        let c: Vec<usize> = shards.iter().map(|s| s.concurrency(6)).collect();
        assert_eq!(c, [2, 2, 1, 1]);
    }
}
