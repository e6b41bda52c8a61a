//! `sagellm-benchmark merge`: one result folder from the folders of a run's shards, recomputed
//! from their raw request records.
//!
//! Every figure a single run computes from its requests is computed again over the union of
//! the shards' records: exact percentiles, the inter-token histogram rebuilt from every gap,
//! goodput per request, per-turn figures. The shards' requests are placed on one time line by
//! each shard's workload start (Unix time) less its clock offset (see `run::shard`), so the
//! throughput window is the union's, first send to last completion. Engine-side figures
//! (memory, KV cache, speculation, server timings) were observed by each shard on its own and
//! are not added up: the merged files mark them unavailable, and each shard's folder keeps its
//! own.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::files::{parse_requests, write_json, JsonFiles};
use super::{Report, ReportError};
use crate::backend::EngineFigures;
use crate::results::metrics::{self, WallClock, WorkloadMetrics};
use crate::results::record::RequestRecord;
use crate::results::samples::{RequestSample, WorkloadSamples};
use crate::results::summary::{Provenance, Summary};
use crate::results::WorkloadResult;
use crate::run::shard::{ShardInfo, ShardedWorkload, SHARD_FILE};
use crate::workload::Workload;

/// Why shard folders cannot be merged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError {
    /// A folder is not a shard's, or its files cannot be read.
    #[error("{}: {message}", dir.display())]
    Folder { dir: PathBuf, message: String },
    /// The folders are shards of different runs, or the same shard twice.
    #[error("{0}")]
    Mismatch(String),
    /// The merged folder could not be written.
    #[error(transparent)]
    Write(#[from] ReportError),
}

/// One shard's folder, read.
struct ShardFolder {
    dir: PathBuf,
    info: ShardInfo,
    summary: Option<Summary>,
}

/// What `merge` found and did, as `merge.json` records it.
#[derive(Debug, Clone, Serialize)]
pub struct MergeReport {
    /// Shards the run had.
    pub shard_count: usize,
    /// Shards merged, by index, with their folders.
    pub merged: Vec<MergedShard>,
    /// Shards of the run whose folder was not given.
    pub missing: Vec<usize>,
    /// Shards merged that did not finish (killed or interrupted): what they recorded is in.
    pub incomplete: Vec<usize>,
    /// The largest spread of the shards' clock offsets, seconds: the uncertainty it leaves in
    /// the merged throughput window.
    pub clock_offset_spread_s: f64,
    /// The latest start of a shard after the planned common start, seconds.
    pub max_start_late_s: Option<f64>,
}

/// One merged shard.
#[derive(Debug, Clone, Serialize)]
pub struct MergedShard {
    pub index: usize,
    pub dir: String,
    pub host: String,
    pub clock_offset_s: f64,
    pub start_late_s: Option<f64>,
    pub finished: bool,
}

fn read_folder(dir: &Path) -> Result<ShardFolder, MergeError> {
    let fail = |message: String| MergeError::Folder {
        dir: dir.to_path_buf(),
        message,
    };
    let info_path = dir.join(SHARD_FILE);
    let text = crate::workload::input::read_to_string(&info_path).map_err(|e| {
        fail(format!(
            "no readable {SHARD_FILE} ({e}): not the folder of a shard (run with --shard K/N)"
        ))
    })?;
    let info: ShardInfo = serde_json::from_str(&text)
        .map_err(|e| fail(format!("{SHARD_FILE} is not a shard's metadata: {e}")))?;
    let summary_path = JsonFiles::new(dir).summary_path();
    // A shard killed before its first workload finished has no summary yet; its records may
    // still be there.
    let summary = match summary_path.exists() {
        true => Some(Summary::load(&summary_path).map_err(|e| fail(e.to_string()))?),
        false => None,
    };
    Ok(ShardFolder {
        dir: dir.to_path_buf(),
        info,
        summary,
    })
}

/// Checks that the folders are distinct shards of one run; returns the run's identity.
fn check_same_run(shards: &[ShardFolder]) -> Result<(usize, Vec<ShardedWorkload>), MergeError> {
    let first = shards
        .first()
        .ok_or_else(|| MergeError::Mismatch("give at least one shard folder".into()))?;
    let (count, run) = (first.info.shard.count, first.info.run.clone());
    let mut seen = vec![None::<&Path>; count];
    for s in shards {
        let i = &s.info;
        if i.shard.count != count {
            return Err(MergeError::Mismatch(format!(
                "{} is shard {} of a run of {} shards, but {} is of a run of {count}: these are not shards of one run",
                s.dir.display(),
                i.shard.label(),
                i.shard.count,
                first.dir.display()
            )));
        }
        if i.run != run {
            let differs = i
                .run
                .iter()
                .zip(&run)
                .find(|(a, b)| a != b)
                .map(|(a, b)| {
                    format!(
                        "workload `{}` ({} requests, seed {}, {}) against `{}` ({} requests, seed {}, {})",
                        a.name, a.num_requests, a.seed, a.arrival, b.name, b.num_requests, b.seed, b.arrival
                    )
                })
                .unwrap_or_else(|| "a different list of workloads".into());
            return Err(MergeError::Mismatch(format!(
                "{} and {} are shards of different runs: {differs}",
                s.dir.display(),
                first.dir.display()
            )));
        }
        if let Some(other) = seen[i.shard.index].replace(&s.dir) {
            return Err(MergeError::Mismatch(format!(
                "{} and {} are both shard {}",
                other.display(),
                s.dir.display(),
                i.shard.label()
            )));
        }
    }
    Ok((count, run))
}

/// Merges the shard folders `dirs` into `out` (written as a run's folder, plus `merge.json`);
/// `also` (a table printer, say) sees the merged run too.
pub fn merge(
    dirs: &[PathBuf],
    out: &Path,
    also: super::Reports,
) -> Result<(Summary, MergeReport), MergeError> {
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if let Some(dir) = dirs.iter().find(|d| same(d, out)) {
        return Err(MergeError::Mismatch(format!(
            "the merged folder {} is one of the shards' folders; give --output a folder of its own",
            dir.display()
        )));
    }
    let shards = dirs
        .iter()
        .map(|d| read_folder(d))
        .collect::<Result<Vec<_>, _>>()?;
    let (count, run) = check_same_run(&shards)?;
    let missing: Vec<usize> = (0..count)
        .filter(|k| !shards.iter().any(|s| s.info.shard.index == *k))
        .collect();
    let finished =
        |s: &ShardFolder| s.info.finished && s.summary.as_ref().is_some_and(|m| m.complete);
    let incomplete: Vec<usize> = shards
        .iter()
        .filter(|s| !finished(s))
        .map(|s| s.info.shard.index)
        .collect();

    let first_summary = shards.iter().find_map(|s| s.summary.as_ref());
    let mut provenance = match first_summary {
        Some(s) => s.provenance.clone(),
        None => Provenance::now("unknown", "unknown", serde_json::Value::Null),
    };
    provenance.host = shards
        .iter()
        .map(|s| s.info.host.clone())
        .collect::<Vec<_>>()
        .join(",");
    provenance.command = std::env::args().collect::<Vec<_>>().join(" ");

    let workloads: Vec<Workload> = run
        .iter()
        .map(|w| {
            let mut workload = Workload::new(&w.name, 1, 1, w.num_requests.max(1));
            workload.seed = w.seed;
            workload
        })
        .collect();
    super::files::prepare_dir(out)?;
    let mut all = super::Reports::files(out);
    all.push(Box::new(also));
    all.run_started(&provenance, &workloads)?;
    let mut results = Vec::new();
    for workload in &workloads {
        let result = merge_workload(&shards, workload, &provenance)?;
        let Some((result, records)) = result else {
            continue;
        };
        all.workload_started(workload)?;
        for record in &records {
            all.request_finished(workload, record)?;
        }
        all.workload_finished(&result)?;
        results.push(result);
    }
    let mut summary = Summary::new(provenance, &results);
    if !missing.is_empty() || !incomplete.is_empty() {
        summary.complete = false;
        summary.incomplete_reason = Some(format!(
            "merged {} of {count} shards{}{}",
            shards.len() - incomplete.len(),
            if missing.is_empty() {
                String::new()
            } else {
                format!("; shards {missing:?} missing")
            },
            if incomplete.is_empty() {
                String::new()
            } else {
                format!("; shards {incomplete:?} did not finish (their completed requests are in)")
            }
        ));
    }
    all.run_finished(&summary)?;
    let offsets: Vec<f64> = shards.iter().map(|s| s.info.clock_offset_s).collect();
    let spread = offsets.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
        - offsets.iter().cloned().fold(f64::INFINITY, f64::min);
    let report = MergeReport {
        shard_count: count,
        merged: shards
            .iter()
            .map(|s| MergedShard {
                index: s.info.shard.index,
                dir: s.dir.display().to_string(),
                host: s.info.host.clone(),
                clock_offset_s: s.info.clock_offset_s,
                start_late_s: s.info.start_late_s,
                finished: finished(s),
            })
            .collect(),
        missing,
        incomplete,
        clock_offset_spread_s: if spread.is_finite() { spread } else { 0.0 },
        max_start_late_s: shards
            .iter()
            .filter_map(|s| s.info.start_late_s)
            .fold(None, |m: Option<f64>, l| Some(m.map_or(l, |m| m.max(l)))),
    };
    write_json(&out.join(MERGE_FILE), &report)?;
    Ok((summary, report))
}

/// The file `merge` writes its findings to, beside the merged results.
pub const MERGE_FILE: &str = "merge.json";

/// What one shard recorded of a workload.
struct Part<'a> {
    records: Vec<RequestRecord>,
    /// The workload's start on the common clock, when the shard finished it (and the clock
    /// is real).
    origin: Option<f64>,
    /// Its metrics, when it finished the workload.
    metrics: Option<&'a WorkloadMetrics>,
}

/// One workload over every shard that recorded some of it, its records on one time line;
/// `None` when no shard did.
fn merge_workload(
    shards: &[ShardFolder],
    workload: &Workload,
    provenance: &Provenance,
) -> Result<Option<(WorkloadResult, Vec<RequestRecord>)>, MergeError> {
    let name = &workload.name;
    // On a virtual clock (the mock) every shard's time line starts at zero together, whatever
    // the real moments the shards started at.
    let virtual_clock = shards.iter().any(|s| s.info.virtual_clock);
    let mut parts = Vec::new();
    for s in shards {
        let path = JsonFiles::new(&s.dir).requests_path(name);
        if !path.exists() {
            continue;
        }
        let text =
            crate::workload::input::read_to_string(&path).map_err(|e| MergeError::Folder {
                dir: s.dir.clone(),
                message: format!("cannot read {}: {e}", path.display()),
            })?;
        let records = parse_requests(&text, &path.display().to_string())?;
        let metrics = s.summary.as_ref().and_then(|m| m.workloads.get(name));
        // The workload's start on the common clock: its first send's Unix time less that
        // send's offset in the records, less the shard's clock offset.
        let first = records
            .iter()
            .map(|r| r.start_ms)
            .fold(f64::INFINITY, f64::min);
        let first_s = if first.is_finite() {
            first / 1000.0
        } else {
            0.0
        };
        let origin = metrics
            .filter(|_| !virtual_clock)
            .map(|m| m.start_time - first_s - s.info.clock_offset_s);
        parts.push(Part {
            records,
            origin,
            metrics,
        });
    }
    if parts.is_empty() {
        return Ok(None);
    }
    // A shard killed mid-workload wrote no metrics, so no start: it started with the others
    // (a common start), so it takes theirs.
    let common = parts
        .iter()
        .filter_map(|p| p.origin)
        .fold(f64::INFINITY, f64::min);
    let base = if common.is_finite() {
        common
    } else {
        // No start known: the earliest shard start stands for the workload's.
        shards
            .iter()
            .map(|s| s.info.started_unix - s.info.clock_offset_s)
            .fold(f64::INFINITY, f64::min)
    };
    let shard_metrics: Vec<&WorkloadMetrics> = parts.iter().filter_map(|p| p.metrics).collect();
    let complete = parts.len() == shards.len()
        && shard_metrics.len() == parts.len()
        && shard_metrics.iter().all(|s| s.complete);
    let mut records = Vec::new();
    for part in parts {
        let shift_ms = (part.origin.unwrap_or(base) - base) * 1000.0;
        records.extend(part.records.into_iter().map(|mut r| {
            r.start_ms += shift_ms;
            r.scheduled_ms = r.scheduled_ms.map(|s| s + shift_ms);
            r
        }));
    }
    records.sort_by_key(|r| r.index);
    let samples = WorkloadSamples::from_records(&records);
    let requests = samples.requests();
    let first = requests
        .iter()
        .map(RequestSample::start_ms)
        .fold(f64::INFINITY, f64::min);
    let first = if first.is_finite() { first } else { 0.0 };
    let last = requests
        .iter()
        .map(RequestSample::end_ms)
        .fold(0.0, f64::max);
    let wall = WallClock {
        start_unix_s: base + first / 1000.0,
        total_time_s: (last - first).max(0.0) / 1000.0,
    };
    let mut m = metrics::aggregate_samples(
        name,
        &provenance.backend,
        &provenance.model,
        &samples,
        wall,
        &EngineFigures::default(),
    );
    m.complete = complete;
    if virtual_clock {
        m.sources.latency = crate::backend::FigureSource::Simulated;
    }
    if let Some(slo) = shard_metrics.iter().find_map(|s| s.goodput_slo) {
        m.set_goodput(&slo, requests.iter().map(RequestSample::latency));
    }
    if shard_metrics
        .iter()
        .any(|s| s.client_held_requests.is_some())
    {
        let held = shard_metrics
            .iter()
            .filter_map(|s| s.client_held_requests)
            .sum();
        m.schedule_lag_p99_ms = metrics::schedule_lag_p99(&samples);
        m.client_held_requests = Some(held);
        // Under a cap the lag holds the waits for a slot, the cap's doing: each shard judged
        // its own client by how late it woke, so their verdicts stand for the lag.
        let capped = shard_metrics.iter().any(|s| s.max_concurrency.is_some());
        if capped {
            m.max_concurrency = Some(shard_metrics.iter().filter_map(|s| s.max_concurrency).sum());
            m.capped_requests = Some(shard_metrics.iter().filter_map(|s| s.capped_requests).sum());
        }
        let lag = if capped { None } else { m.schedule_lag_p99_ms };
        m.client_overloaded = Some(
            metrics::fell_behind(held, lag)
                || shard_metrics
                    .iter()
                    .any(|s| s.client_overloaded == Some(true)),
        );
    }
    // The extra percentiles the shards report, over the merged requests.
    if let Some(first) = shard_metrics.first() {
        let asked: Vec<f64> = first.percentiles.0.iter().map(|p| p.p).collect();
        m.set_percentiles(&asked, &samples);
    }
    let result = WorkloadResult {
        workload: workload.clone(),
        metrics: m,
        samples: Arc::new(samples),
    };
    Ok(Some((result, records)))
}
