//! The JSON files of a run: `<workload>_metrics.json`, `<workload>_requests.jsonl` and
//! `benchmark_summary.json`, each written atomically (to a temporary file, then renamed), so an
//! interrupted run never leaves a half-written file.

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

// Reading a summary is a file concern, so it lives beside the file's name.
impl Summary {
    /// Reads a summary file, with errors that say what to do.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        if path.is_dir() {
            return Err(LoadError::IsDirectory {
                path: path.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LoadError::NotFound {
                path: path.to_path_buf(),
            },
            _ => LoadError::Io {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
        Self::parse(&text).map_err(|source| LoadError::Invalid {
            path: path.to_path_buf(),
            source,
        })
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
}

impl JsonFiles {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JsonFiles {
            dir: dir.into(),
            appending: None,
            provenance: None,
            finished: IndexMap::new(),
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

impl Report for JsonFiles {
    fn run_started(&mut self, provenance: &Provenance, _: &[Workload]) -> Result<(), ReportError> {
        self.provenance = Some(provenance.clone());
        self.finished.clear();
        prepare_dir(&self.dir)
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
        if let Some(provenance) = &self.provenance {
            let mut so_far = Summary::from_metrics(provenance.clone(), self.finished.clone());
            so_far.complete = false;
            so_far.incomplete_reason =
                Some("the run was still going when this file was written".to_string());
            write_json(&self.summary_path(), &so_far)?;
        }
        Ok(())
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
        let summary = Summary::load(summary_path).map_err(|e| ReportError(e.to_string()))?;
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
        ReportError(format!(
            "cannot read {}: {e}; the charts and the HTML report are drawn from the request \
             records saved beside benchmark_summary.json, so keep that file with the summary or \
             re-run: sagellm-benchmark run",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(cannot_read)?;
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

/// Parses the text of a `<workload>_requests.jsonl` file; `name` names it in errors.
pub fn parse_requests(text: &str, name: &str) -> Result<Vec<RequestRecord>, ReportError> {
    let mut records = Vec::new();
    for_each_request(text.as_bytes(), name, |r| records.push(r)).map_err(|e| match e {
        LineError::Io(e) => ReportError(format!("cannot read {name}: {e}")),
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
                return Err(LineError::Report(ReportError(format!(
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
    /// Creates (or empties) the file at `path`.
    pub fn create(path: PathBuf) -> Result<Self, ReportError> {
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| ReportError(format!("cannot write {}: {e}", path.display())))?;
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
        let mut line = serde_json::to_vec(record).map_err(|e| ReportError(e.to_string()))?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(|e| ReportError(format!("cannot append to {}: {e}", self.path.display())))?;
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

/// Creates the output folder, or says clearly why it cannot be used.
pub fn prepare_dir(dir: &Path) -> Result<(), ReportError> {
    if dir.exists() && !dir.is_dir() {
        return Err(ReportError(format!(
            "output path {} exists and is not a directory; choose another with --output",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        ReportError(format!(
            "cannot create output directory {}: {e}; choose another with --output",
            dir.display()
        ))
    })?;
    // A folder can exist and still refuse files (permissions, a read-only mount); find out now,
    // not after the first workload has run for an hour.
    let probe = dir.join(format!(".sagellm-write-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| {
            ReportError(format!(
                "cannot write in output directory {}: {e}; choose another with --output",
                dir.display()
            ))
        })
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), ReportError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| ReportError(e.to_string()))?;
    bytes.push(b'\n');
    write_atomically(path, &bytes)
}

/// Writes `bytes` to a temporary file beside `path`, flushes it, then renames it over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    write_atomically_with(path, |w| w.write_all(bytes))
}

/// Lets `write` fill a temporary file beside `path`, flushes it, then renames it over `path`.
pub fn write_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<(), ReportError> {
    let fail = |e: std::io::Error| ReportError(format!("cannot write {}: {e}", path.display()));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut writer = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        write(&mut writer)?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
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

    #[test]
    fn an_output_path_that_is_a_file_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let err = prepare_dir(&file).unwrap_err().0;
        assert!(
            err.contains("not a directory") && err.contains("--output"),
            "{err}"
        );
    }
}
