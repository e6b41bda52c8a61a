//! The JSON files of a run: `<workload>_metrics.json`, `<workload>_requests.jsonl` and
//! `benchmark_summary.json`, each written atomically (to a temporary file, then renamed), so an
//! interrupted run never leaves a half-written file.
//!
//! Every file written into a results folder is created new, never opened through a symlink:
//! temporary files get unpredictable names (`tempfile`) and are renamed over the final name,
//! which replaces a link planted there instead of writing to its target.

use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use super::names::{self, SUMMARY_FILE};
use super::{Report, ReportError};
use crate::results::metrics::WorkloadMetrics;
use crate::results::record::RequestRecord;
use crate::results::samples::{Samples, WorkloadSamples};
use crate::results::summary::{Provenance, Summary};
use crate::results::WorkloadResult;
use crate::workload::Workload;

mod durable;
mod folder;
pub use durable::flush_to_disk;
pub use folder::{claim, Claim, LOCK_FILE, PREVIOUS_PREFIX};

// Reading a summary is a file concern, so it lives beside the file's name.
impl Summary {
    /// Reads a summary file, with errors that say what to do. A leading UTF-8 byte-order mark
    /// is skipped; a summary of a newer layout, or whose counts disagree, is refused naming the
    /// field. A run stopped during a workload left that workload's records but not its
    /// metrics: they are rebuilt from the records (see [`Summary::load_recovering`]).
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let (summary, rebuilt) = Self::load_recovering(path)?;
        for note in rebuilt {
            tracing::warn!("{note}");
        }
        Ok(summary)
    }

    /// [`Summary::load`], returning instead of logging a note for each workload whose metrics
    /// were rebuilt from its request records.
    pub fn load_recovering(path: &Path) -> Result<(Self, Vec<String>), LoadError> {
        if path.is_dir() {
            return Err(LoadError::IsDirectory {
                path: path.to_path_buf(),
            });
        }
        let text = crate::workload::input::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LoadError::NotFound {
                path: path.to_path_buf(),
            },
            _ => LoadError::Io {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
        let mut summary = Self::parse_checked(&text).map_err(|e| e.at(path))?;
        let rebuilt = if summary.complete {
            Vec::new()
        } else {
            rebuild_unfinished(path, &mut summary)
        };
        Ok((summary, rebuilt))
    }

    /// Parses a summary's text as [`Summary::load`] reads it: a byte-order mark skipped, the
    /// layout version and the counts checked.
    pub fn parse_checked(text: &str) -> Result<Self, SummaryError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        // The version first: a newer layout may not parse as this one, and should say why.
        #[derive(serde::Deserialize)]
        struct Layout {
            schema_version: Option<u64>,
        }
        if let Ok(Layout {
            schema_version: Some(found),
        }) = serde_json::from_str(text)
        {
            if found > u64::from(crate::results::metrics::SCHEMA_VERSION) {
                return Err(SummaryError::Newer { found });
            }
        }
        let summary = Summary::parse(text).map_err(SummaryError::Json)?;
        summary.check_counts()?;
        Ok(summary)
    }

    /// Checks that the counts agree: each workload's successes and failures make its total,
    /// and the overall figures are the workloads' sums.
    fn check_counts(&self) -> Result<(), SummaryError> {
        let wrong =
            |field: String, detail: String| Err(SummaryError::Inconsistent { field, detail });
        for (name, m) in &self.workloads {
            if m.successful_requests.checked_add(m.failed_requests) != Some(m.total_requests) {
                return wrong(
                    format!("workloads.{name}.total_requests"),
                    format!(
                        "{}, not successful_requests {} + failed_requests {}",
                        m.total_requests, m.successful_requests, m.failed_requests
                    ),
                );
            }
        }
        let sum = |f: fn(&WorkloadMetrics) -> u64| {
            self.workloads
                .values()
                .try_fold(0u64, |acc, m| acc.checked_add(f(m)))
        };
        let overall = &self.overall;
        for (field, stated, summed) in [
            (
                "overall.total_workloads",
                overall.total_workloads,
                Some(self.workloads.len() as u64),
            ),
            (
                "overall.total_requests",
                overall.total_requests,
                sum(|m| m.total_requests),
            ),
            (
                "overall.successful_requests",
                overall.successful_requests,
                sum(|m| m.successful_requests),
            ),
            (
                "overall.failed_requests",
                overall.failed_requests,
                sum(|m| m.failed_requests),
            ),
        ] {
            if Some(stated) != summed {
                return wrong(
                    field.to_string(),
                    format!(
                        "{stated}, but the workloads listed add up to {}",
                        summed.map_or("more than 2^64".to_string(), |n| n.to_string())
                    ),
                );
            }
        }
        Ok(())
    }
}

/// Adds to an incomplete `summary` every workload whose request records lie beside it but
/// whose metrics it lacks (the run was stopped during that workload), its metrics rebuilt from
/// the records; returns a note for each.
fn rebuild_unfinished(path: &Path, summary: &mut Summary) -> Vec<String> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let workload = name.strip_suffix("_requests.jsonl")?.to_string();
            (!workload.is_empty()
                && names::requests_file(&workload) == name
                && !summary.workloads.contains_key(&workload))
            .then(|| (workload, e.path()))
        })
        .collect();
    found.sort();
    let mut notes = Vec::new();
    let mut workloads = summary.workloads.clone();
    for (workload, records) in found {
        let samples = match load_samples(&records) {
            Ok(samples) if !samples.requests().is_empty() => samples,
            _ => continue,
        };
        let requests = samples.requests();
        let first = requests
            .iter()
            .map(|r| r.start_ms())
            .fold(f64::INFINITY, f64::min);
        let last = requests.iter().map(|r| r.end_ms()).fold(0.0, f64::max);
        let first = if first.is_finite() { first } else { 0.0 };
        let wall = crate::results::metrics::WallClock {
            start_unix_s: summary.provenance.start_time + first / 1000.0,
            total_time_s: (last - first).max(0.0) / 1000.0,
        };
        let mut metrics = crate::results::metrics::aggregate_samples(
            &workload,
            &summary.provenance.backend,
            &summary.provenance.model,
            &samples,
            wall,
            &Default::default(),
        );
        metrics.complete = false;
        // The records do not say which clock stamped them; the run's other workloads and its
        // backend do.
        let simulated = summary.provenance.backend == "mock"
            || summary
                .workloads
                .values()
                .any(|m| m.sources.latency == crate::backend::FigureSource::Simulated);
        if simulated {
            metrics.sources.latency = crate::backend::FigureSource::Simulated;
        }
        notes.push(format!(
            "{}: the run was stopped during workload {workload}; its figures are rebuilt from the {} request records in {} (no engine or server figures)",
            path.display(),
            requests.len(),
            records.display()
        ));
        workloads.insert(workload, metrics);
    }
    if !notes.is_empty() {
        let (complete, reason) = (summary.complete, summary.incomplete_reason.take());
        *summary = Summary::from_metrics(summary.provenance.clone(), workloads);
        summary.complete = complete;
        summary.incomplete_reason = reason;
    }
    notes
}

/// Why a summary's text is not one this version reads.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error("{0}")]
    Json(serde_json::Error),
    #[error("schema_version {found} is newer than this sagellm-benchmark reads ({}); read it with a newer release", crate::results::metrics::SCHEMA_VERSION)]
    Newer { found: u64 },
    #[error("`{field}` is {detail}; the file was edited or damaged")]
    Inconsistent { field: String, detail: String },
}

impl SummaryError {
    fn at(self, path: &Path) -> LoadError {
        let path = path.to_path_buf();
        match self {
            SummaryError::Json(source) => LoadError::Invalid { path, source },
            other => LoadError::Refused {
                path,
                reason: other.to_string(),
            },
        }
    }
}

/// Why a summary file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("File not found: {}\nRun benchmark first:\n  sagellm-benchmark run --workload year1 --backend mock", path.display())]
    NotFound { path: PathBuf },
    #[error("{} is a folder; give the summary file inside it: {}", path.display(), path.join(SUMMARY_FILE).display())]
    IsDirectory { path: PathBuf },
    #[error("could not read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a valid benchmark summary: {source}\nRe-create it with: sagellm-benchmark run --workload year1 --backend mock", path.display())]
    Invalid {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: {reason}", path.display())]
    Refused { path: PathBuf, reason: String },
}

/// Writes the documented JSON files into one folder.
///
/// Records are appended to `<workload>_requests.jsonl` as each request finishes (a
/// [`RequestsLog`]), so a killed process loses at most the requests in flight; when the
/// workload ends the file is rewritten, atomically, in request order. After each workload `benchmark_summary.json` is rewritten with
/// the workloads so far and `"complete": false`; the last write, at the end of the run, says
/// whether the run completed.
pub struct JsonFiles {
    dir: PathBuf,
    /// The requests file of the running workload, open for appending.
    appending: Option<RequestsLog>,
    provenance: Option<Provenance>,
    finished: IndexMap<String, WorkloadMetrics>,
    /// The folder's lock, from the start of the run until this writer is dropped.
    claim: Option<std::sync::Arc<Claim>>,
}

impl JsonFiles {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JsonFiles {
            dir: dir.into(),
            appending: None,
            provenance: None,
            finished: IndexMap::new(),
            claim: None,
        }
    }

    pub fn metrics_path(&self, workload: &str) -> PathBuf {
        self.dir.join(names::metrics_file(workload))
    }

    pub fn requests_path(&self, workload: &str) -> PathBuf {
        self.dir.join(names::requests_file(workload))
    }

    pub fn summary_path(&self) -> PathBuf {
        self.dir.join(SUMMARY_FILE)
    }
}

impl JsonFiles {
    /// Writes the summary of the workloads finished so far, marked incomplete.
    fn write_progress(&self) -> Result<(), ReportError> {
        if let Some(provenance) = &self.provenance {
            let mut so_far = Summary::from_metrics(provenance.clone(), self.finished.clone());
            so_far.complete = false;
            so_far.incomplete_reason =
                Some("the run was still going when this file was written".to_string());
            write_json(&self.summary_path(), &so_far)?;
        }
        Ok(())
    }
}

impl Report for JsonFiles {
    fn run_started(&mut self, provenance: &Provenance, _: &[Workload]) -> Result<(), ReportError> {
        self.provenance = Some(provenance.clone());
        self.finished.clear();
        let claim = claim(&self.dir)?;
        if let Some((aside, count)) = claim.moved_aside() {
            tracing::info!(
                "moved the earlier run's {count} files to {}",
                aside.display()
            );
        }
        self.claim = Some(claim);
        // From the first moment a summary `report` can read, even if the process is killed
        // during the first workload (its records are then read back, see `Summary::load`).
        self.write_progress()
    }

    fn workload_started(&mut self, workload: &Workload) -> Result<(), ReportError> {
        self.appending = Some(RequestsLog::create(self.requests_path(&workload.name))?);
        Ok(())
    }

    fn request_finished(
        &mut self,
        _workload: &Workload,
        record: &RequestRecord,
    ) -> Result<(), ReportError> {
        match &mut self.appending {
            Some(log) => log.append(record),
            None => Ok(()),
        }
    }

    fn workload_finished(&mut self, result: &WorkloadResult) -> Result<(), ReportError> {
        let name = &result.workload.name;
        write_json(&self.metrics_path(name), &result.metrics)?;
        if let Some(log) = self.appending.take() {
            log.finish()?;
        }
        self.finished.insert(name.clone(), result.metrics.clone());
        self.write_progress()
    }

    fn run_finished(&mut self, summary: &Summary) -> Result<(), ReportError> {
        write_json(&self.summary_path(), summary)
    }
}

/// A run read back from its folder: the summary and, per workload, the samples of its request
/// records. Enough to draw every chart and write every report again without a re-run.
#[derive(Debug, Clone)]
pub struct SavedRun {
    /// The folder holding the files.
    pub dir: PathBuf,
    pub summary: Summary,
    /// Workload name -> its samples, in the summary's order.
    pub samples: IndexMap<String, Samples>,
}

impl SavedRun {
    /// Reads `benchmark_summary.json` at `summary_path` and the `<workload>_requests.jsonl`
    /// files beside it.
    pub fn load(summary_path: &Path) -> Result<Self, ReportError> {
        let summary = Summary::load(summary_path).map_err(|e| ReportError::Other(e.to_string()))?;
        let dir = match summary_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let files = JsonFiles::new(&dir);
        let mut samples = IndexMap::new();
        for name in summary.workloads.keys() {
            let path = files.requests_path(name);
            samples.insert(name.clone(), std::sync::Arc::new(load_samples(&path)?));
        }
        Ok(SavedRun {
            dir,
            summary,
            samples,
        })
    }
}

/// Reads a `<workload>_requests.jsonl` file one line at a time, keeping only the samples of its
/// records, so a long run's file is read back in as little memory as it was written.
pub fn load_samples(path: &Path) -> Result<WorkloadSamples, ReportError> {
    let mut samples = WorkloadSamples::default();
    read_requests_file(path, |r| samples.add(&r))?;
    samples.sort_by_index();
    Ok(samples)
}

fn read_requests_file(path: &Path, each: impl FnMut(RequestRecord)) -> Result<(), ReportError> {
    let cannot_read = |e: std::io::Error| {
        ReportError::Other(format!(
            "cannot read {}: {e}; the charts and the HTML report are drawn from the request \
             records saved beside benchmark_summary.json, so keep that file with the summary or \
             re-run: sagellm-benchmark run",
            path.display()
        ))
    };
    let file = crate::workload::input::open(path).map_err(cannot_read)?;
    for_each_request(
        std::io::BufReader::new(file),
        &path.display().to_string(),
        each,
    )
    .map_err(|e| match e {
        LineError::Io(e) => cannot_read(e),
        LineError::Report(e) => e,
    })
}

/// Why the run measured nothing, when a workload of it had no request succeed (see
/// [`Summary::unmeasured_workloads`]): the workloads and the first failure in the records
/// written to `dir`, so the user need not open them.
pub fn nothing_measured(summary: &Summary, dir: &Path) -> Option<String> {
    let unmeasured = summary.unmeasured_workloads();
    let first = unmeasured.first()?;
    let path = JsonFiles::new(dir).requests_path(first);
    let mut failure = None;
    // A read error leaves the pointer to the file, which says the rest.
    let _ = read_requests_file(&path, |r| {
        if failure.is_none() {
            failure = r.error.map(|e| {
                let kind = serde_json::to_value(e.kind).unwrap_or_default();
                format!("{}: {}", kind.as_str().unwrap_or("error"), e.message)
            });
        }
    });
    Some(format!(
        "every request of {} failed, so nothing was measured; the first failure: {}",
        unmeasured.join(", "),
        failure.unwrap_or_else(|| format!("see {}", path.display()))
    ))
}

/// Why repeated runs measured nothing, when one of them did (see [`nothing_measured`]): the
/// first such run, how many more, and its first failure. `runs` are the completed runs with
/// their 1-based numbers, written to [`names::repeat_dir`] of `dir`; means and intervals over
/// a run that measured nothing say nothing either.
pub fn nothing_measured_in_runs<'a>(
    runs: impl IntoIterator<Item = (usize, &'a Summary)>,
    dir: &Path,
) -> Option<String> {
    let mut empty = runs.into_iter().filter_map(|(i, summary)| {
        nothing_measured(summary, &names::repeat_dir(dir, i)).map(|why| (i, why))
    });
    let (first, why) = empty.next()?;
    Some(match empty.count() {
        0 => format!("in run {first}, {why}"),
        more => format!("in run {first} (and {more} more runs), {why}"),
    })
}

/// Parses the text of a `<workload>_requests.jsonl` file; `name` names it in errors.
pub fn parse_requests(text: &str, name: &str) -> Result<Vec<RequestRecord>, ReportError> {
    let mut records = Vec::new();
    for_each_request(text.as_bytes(), name, |r| records.push(r)).map_err(|e| match e {
        LineError::Io(e) => ReportError::Other(format!("cannot read {name}: {e}")),
        LineError::Report(e) => e,
    })?;
    Ok(records)
}

enum LineError {
    Io(std::io::Error),
    Report(ReportError),
}

/// Hands every record of a requests file to `each`, one line at a time.
fn for_each_request(
    mut reader: impl BufRead,
    name: &str,
    mut each: impl FnMut(RequestRecord),
) -> Result<(), LineError> {
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(LineError::Io)? == 0 {
            return Ok(());
        }
        number += 1;
        // A process killed while appending leaves its last line without a newline, perhaps
        // cut short; such a line is the request that was being written, not damage elsewhere.
        let cut_short = line.last() != Some(&b'\n');
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        match serde_json::from_slice(&line) {
            Ok(record) => each(record),
            Err(_) if cut_short => {
                tracing::warn!("{name}: ignoring the last line, cut short when the run was stopped");
            }
            Err(e) => {
                return Err(LineError::Report(ReportError::Other(format!(
                    "{name} line {number}: not a request record ({e}); re-create it with sagellm-benchmark run"
                ))))
            }
        }
    }
}

/// A `<workload>_requests.jsonl` being written: each record is appended as its request
/// finishes, then [`RequestsLog::finish`] puts the lines in index order.
///
/// Only each line's position is kept in memory (24 bytes a request), never the records.
pub struct RequestsLog {
    path: PathBuf,
    file: std::fs::File,
    /// Bytes written so far.
    written: u64,
    lines: Vec<LinePosition>,
}

/// Where one request's line lies in the appended file.
struct LinePosition {
    index: usize,
    offset: u64,
    len: u64,
}

impl RequestsLog {
    /// Creates the file at `path`, new: whatever was there (a file, or a symlink, which is
    /// removed, never followed) is replaced.
    pub fn create(path: PathBuf) -> Result<Self, ReportError> {
        let fail = |e: std::io::Error| ReportError::io("write", &path, e);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e)),
            _ => {}
        }
        // `create_new` (O_EXCL) fails on anything at the name, a link planted since included.
        let file = open_nofollow(
            std::fs::File::options()
                .read(true)
                .write(true)
                .create_new(true),
            &path,
        )
        .map_err(fail)?;
        durable::remember(&path);
        Ok(RequestsLog {
            path,
            file,
            written: 0,
            lines: Vec::new(),
        })
    }

    /// Appends `record` as one line, in one write: a kill can cut at most the last line short,
    /// which the loader ignores.
    pub fn append(&mut self, record: &RequestRecord) -> Result<(), ReportError> {
        let mut line = serde_json::to_vec(record).map_err(|e| ReportError::Other(e.to_string()))?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(|e| ReportError::io("append to", &self.path, e))?;
        self.lines.push(LinePosition {
            index: record.index,
            offset: self.written,
            len: line.len() as u64,
        });
        self.written += line.len() as u64;
        Ok(())
    }

    /// Rewrites the file with its lines in index order, atomically: the lines are copied one
    /// at a time from the appended file into a temporary one renamed over it, so the records
    /// are never all in memory and a kill leaves the appended file whole.
    pub fn finish(mut self) -> Result<(), ReportError> {
        if self.lines.windows(2).all(|w| w[0].index <= w[1].index) {
            return Ok(());
        }
        // Stable: a repeated index (never made by the runner) keeps its order of arrival.
        self.lines.sort_by_key(|l| l.index);
        let (from, lines) = (&mut self.file, &self.lines);
        let mut line = Vec::new();
        write_atomically_with(&self.path, |to| {
            for l in lines {
                line.resize(l.len as usize, 0);
                from.seek(SeekFrom::Start(l.offset))?;
                from.read_exact(&mut line)?;
                to.write_all(&line)?;
            }
            Ok(())
        })
    }
}

/// The start of the name of the empty file that checks a folder takes files.
pub(crate) const WRITE_PROBE_PREFIX: &str = ".sagellm-write-probe-";

/// Creates the output folder, or says clearly why it cannot be used.
pub fn prepare_dir(dir: &Path) -> Result<(), ReportError> {
    if dir.exists() && !dir.is_dir() {
        return Err(ReportError::Other(format!(
            "output path {} exists and is not a directory; choose another with --output",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        ReportError::Other(format!(
            "cannot create output directory {}: {e}; choose another with --output",
            dir.display()
        ))
    })?;
    // A folder can exist and still refuse files (permissions, a read-only mount); find out now,
    // not after the first workload has run for an hour.
    tempfile::Builder::new()
        .prefix(WRITE_PROBE_PREFIX)
        .tempfile_in(dir)
        .and_then(|probe| match probe.close() {
            // Removed already, by a run that claimed the folder meanwhile (see `claim`).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        })
        .map_err(|e| {
            ReportError::Other(format!(
                "cannot write in output directory {}: {e}; choose another with --output",
                dir.display()
            ))
        })
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), ReportError> {
    let mut bytes =
        serde_json::to_vec_pretty(value).map_err(|e| ReportError::Other(e.to_string()))?;
    bytes.push(b'\n');
    write_atomically(path, &bytes)
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`; it reaches
/// the disk with the next [`flush_to_disk`].
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    write_atomically_with(path, |w| w.write_all(bytes))
}

/// Lets `write` fill a temporary file beside `path`, then renames it over `path`; it reaches
/// the disk with the next [`flush_to_disk`] (a killed process leaves the old file or the new
/// one whole either way: see `files/durable.rs`).
///
/// The temporary file is created new under an unpredictable name (`.<name>.<random>.tmp`), so
/// no planted link is followed; the rename replaces whatever is at `path`, a link included,
/// and never writes through it.
pub fn write_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<(), ReportError> {
    let fail = |e: std::io::Error| ReportError::io("write", path, e);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let prefix = format!(".{file_name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // As `File::create` would: readable by others unless the umask says otherwise (tempfile's
    // default, 0600, would hide results meant to be shared).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let temp = builder.tempfile_in(dir).map_err(fail)?;
    // Dropping `temp_path` on any failure below removes the temporary file.
    let (file, temp_path) = temp.into_parts();
    let mut writer = std::io::BufWriter::new(file);
    write(&mut writer).map_err(fail)?;
    let file = writer.into_inner().map_err(|e| fail(e.into_error()))?;
    drop(file);
    temp_path.persist(path).map_err(|e| fail(e.error))?;
    durable::remember(path);
    Ok(())
}

/// Opens `path` with `options`, refusing to follow a symlink at its last component (unix).
pub(crate) fn open_nofollow(
    options: &mut std::fs::OpenOptions,
    path: &Path,
) -> std::io::Result<std::fs::File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
    }

    #[cfg(unix)]
    #[test]
    fn writes_replace_a_planted_symlink_and_never_touch_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let json = out.join("a.json");
        let records = out.join("a_requests.jsonl");
        std::os::unix::fs::symlink(&victim, &json).unwrap();
        std::os::unix::fs::symlink(&victim, &records).unwrap();
        // The name the writer used before its temporary names became unpredictable.
        let old_temp = out.join(format!(".a.json.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &old_temp).unwrap();

        write_atomically(&json, b"new").unwrap();
        let mut log = RequestsLog::create(records.clone()).unwrap();
        log.append(&RequestRecord::new(Default::default())).unwrap();
        log.finish().unwrap();

        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        for path in [&json, &records] {
            let meta = std::fs::symlink_metadata(path).unwrap();
            assert!(
                meta.file_type().is_file(),
                "{} is still a link",
                path.display()
            );
        }
        assert_eq!(std::fs::read(&json).unwrap(), b"new");
    }

    #[test]
    fn a_byte_order_mark_is_skipped_and_a_newer_layout_or_wrong_count_refused() {
        let provenance = Provenance::now("mock", "m", serde_json::json!({}));
        let text =
            serde_json::to_string(&Summary::from_metrics(provenance, IndexMap::new())).unwrap();
        Summary::parse_checked(&format!("\u{feff}{text}")).unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
        value["schema_version"] = serde_json::json!(99);
        let err = Summary::parse_checked(&value.to_string())
            .unwrap_err()
            .to_string();
        assert!(err.contains("schema_version 99 is newer"), "{err}");
        value["schema_version"] = serde_json::json!(1);
        value["overall"]["total_requests"] = serde_json::json!(7);
        let err = Summary::parse_checked(&value.to_string())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`overall.total_requests` is 7"), "{err}");
    }

    #[test]
    fn an_output_path_that_is_a_file_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let err = prepare_dir(&file).unwrap_err().to_string();
        assert!(
            err.contains("not a directory") && err.contains("--output"),
            "{err}"
        );
    }

    #[test]
    fn a_file_that_cannot_be_written_is_an_io_error_with_its_path_and_cause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-folder").join("x.json");
        let err = write_atomically(&path, b"{}").unwrap_err();
        match &err {
            ReportError::Io {
                action,
                path: at,
                source,
            } => {
                assert_eq!(*action, "write");
                assert_eq!(at, &path);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().starts_with("cannot write "), "{err}");
    }
}
