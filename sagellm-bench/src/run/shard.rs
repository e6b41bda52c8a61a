//! Starting the shards of a run together, and what each records about itself (`shard.json`).
//!
//! Two ways to a common start: `--start-at UNIX_TIME` (every shard sleeps until then on its own
//! clock, so the hosts' clocks must agree, as NTP keeps them to a few ms), or `--barrier DIR`, a
//! directory every shard can write (a volume all pods mount): each shard writes
//! `shard-K-of-N.ready` and starts once all N files are there. A barrier file's modification
//! time is set by the clock of the file system that holds it (a file server's for NFS), so
//! reading it back measures this host's offset from that common clock; the offsets go into
//! each shard's metadata, and `merge` uses them to place the shards' requests on one time line.
//! Latencies are measured on one host each and need no offset; only the merged throughput
//! window does.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::run::interrupt::Interrupt;
use crate::workload::shard::Shard;
use crate::workload::Workload;

/// What a shard writes beside its results, as `shard.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// This shard.
    pub shard: Shard,
    /// The host it ran on.
    pub host: String,
    /// The workloads of the run: every shard of one run lists the same.
    pub run: Vec<ShardedWorkload>,
    /// When the shards were to start, Unix seconds on the common clock (`--start-at`, or the
    /// barrier's last arrival); `None` without either.
    pub planned_start_unix: Option<f64>,
    /// When this shard started, Unix seconds on its own clock.
    pub started_unix: f64,
    /// How much later than planned it started, seconds, on the common clock.
    pub start_late_s: Option<f64>,
    /// This host's clock minus the common clock (the barrier's file system), seconds; 0 when
    /// there is no barrier (the hosts' clocks are taken as agreeing).
    pub clock_offset_s: f64,
    /// False until the run finished: a shard killed mid-run leaves it false.
    pub finished: bool,
    /// The backend ran on a virtual clock (the mock): every shard's time starts at zero
    /// together, whatever the real moments they started at.
    #[serde(default)]
    pub virtual_clock: bool,
}

/// The identity of one workload of a sharded run, which all shards must agree on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardedWorkload {
    pub name: String,
    /// Measured requests of the whole run (all shards).
    pub num_requests: usize,
    pub seed: u64,
    /// The arrival, as [`crate::Arrival::describe`] gives it.
    pub arrival: String,
}

impl ShardedWorkload {
    /// The identity of `w`.
    pub fn of(w: &Workload) -> Self {
        ShardedWorkload {
            name: w.name.clone(),
            num_requests: w.num_requests,
            seed: w.seed,
            arrival: w.arrival.describe(),
        }
    }
}

/// The file a shard's metadata is written to, in its output folder.
pub const SHARD_FILE: &str = "shard.json";

/// How a shard's start is coordinated.
#[derive(Debug, Clone, Default)]
pub struct StartAt {
    /// Start at this Unix time (seconds).
    pub unix: Option<f64>,
    /// Start once every shard has written its file into this directory.
    pub barrier: Option<PathBuf>,
    /// How long to wait for the barrier.
    pub timeout: Duration,
}

/// When a shard actually started, against when it was to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Started {
    pub planned_unix: Option<f64>,
    pub started_unix: f64,
    pub late_s: Option<f64>,
    pub clock_offset_s: f64,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn unix_of(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The barrier file of shard `index` of `count`.
pub fn barrier_file(dir: &Path, shard: Shard) -> PathBuf {
    dir.join(format!("shard-{}-of-{}.ready", shard.index, shard.count))
}

/// Waits until `start` says the shard may begin; an interrupt ends the wait with an error.
pub fn wait(shard: Shard, start: &StartAt, interrupt: &Interrupt) -> Result<Started, String> {
    let sleep_until = |deadline: f64| -> Result<(), String> {
        loop {
            if interrupt.is_requested() {
                return Err("interrupted while waiting for the shards' common start".into());
            }
            let left = deadline - unix_now();
            if left <= 0.0 {
                return Ok(());
            }
            std::thread::sleep(Duration::from_secs_f64(left.min(0.05)));
        }
    };
    if let Some(dir) = &start.barrier {
        let (planned, offset) = barrier(dir, shard, start.timeout, interrupt)?;
        // The planned start on this host's clock; sleep out what is left of it (none, unless
        // the clocks disagree).
        sleep_until(planned + offset)?;
        let started = unix_now();
        return Ok(Started {
            planned_unix: Some(planned),
            started_unix: started,
            late_s: Some(started - offset - planned),
            clock_offset_s: offset,
        });
    }
    if let Some(at) = start.unix {
        if at + 1.0 < unix_now() {
            tracing::warn!("--start-at {at} is already past; starting now");
        }
        sleep_until(at)?;
        let started = unix_now();
        return Ok(Started {
            planned_unix: Some(at),
            started_unix: started,
            late_s: Some(started - at),
            clock_offset_s: 0.0,
        });
    }
    Ok(Started {
        planned_unix: None,
        started_unix: unix_now(),
        late_s: None,
        clock_offset_s: 0.0,
    })
}

/// Writes this shard's barrier file and waits for the others'; returns the common start (the
/// last file's modification time) and this host's clock offset from the directory's clock.
fn barrier(
    dir: &Path,
    shard: Shard,
    timeout: Duration,
    interrupt: &Interrupt,
) -> Result<(f64, f64), String> {
    let mine = barrier_file(dir, shard);
    if mine.exists() {
        return Err(format!(
            "{} is already there, left by an earlier run: give every run a barrier directory of its own (e.g. named after the job)",
            mine.display()
        ));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the barrier directory {}: {e}", dir.display()))?;
    let before = unix_now();
    std::fs::write(
        &mine,
        format!("{}\n", gethostname::gethostname().to_string_lossy()),
    )
    .map_err(|e| format!("cannot write {}: {e}", mine.display()))?;
    let after = unix_now();
    let stamped = std::fs::metadata(&mine)
        .and_then(|m| m.modified())
        .map_err(|e| format!("cannot read the time of {}: {e}", mine.display()))?;
    // The write happened between `before` and `after` on this clock, at `stamped` on the
    // file system's.
    let offset = (before + after) / 2.0 - unix_of(stamped);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut last = None;
        let mut missing = Vec::new();
        for k in 0..shard.count {
            let file = barrier_file(
                dir,
                Shard {
                    index: k,
                    count: shard.count,
                },
            );
            match std::fs::metadata(&file).and_then(|m| m.modified()) {
                Ok(time) => last = Some(last.map_or(unix_of(time), |l: f64| l.max(unix_of(time)))),
                Err(_) => missing.push(k),
            }
        }
        if missing.is_empty() {
            return Ok((last.unwrap_or(after), offset));
        }
        if interrupt.is_requested() {
            return Err("interrupted while waiting at the barrier".into());
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "waited {:.0} s at the barrier {} but shards {missing:?} of {} never arrived; start them, or raise --barrier-timeout",
                timeout.as_secs_f64(),
                dir.display(),
                shard.count
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `shard.json` into `dir`.
pub fn write_info(dir: &Path, info: &ShardInfo) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(info).map_err(|e| e.to_string())?;
    let path = dir.join(SHARD_FILE);
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
