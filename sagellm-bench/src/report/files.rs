//! The JSON files of a run: `<workload>_metrics.json`, `<workload>_requests.jsonl` and
//! `benchmark_summary.json`, each written atomically (to a temporary file, then renamed), so an
//! interrupted run never leaves a half-written file.

use std::io::Write;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use super::{Report, ReportError};
use crate::metrics::WorkloadMetrics;
use crate::record::{Records, RequestRecord};
use crate::runner::WorkloadResult;
use crate::summary::{Provenance, Summary};
use crate::workload::Workload;

/// The summary's file name.
pub const SUMMARY_FILE: &str = "benchmark_summary.json";

/// Writes the documented JSON files into one folder.
///
/// Records are appended to `<workload>_requests.jsonl` as each request finishes, so a killed
/// process loses at most the requests in flight; when the workload ends the file is rewritten,
/// atomically, in request order. After each workload `benchmark_summary.json` is rewritten with
/// the workloads so far and `"complete": false`; the last write, at the end of the run, says
/// whether the run completed.
pub struct JsonFiles {
    dir: PathBuf,
    /// The requests file of the running workload, open for appending.
    appending: Option<std::fs::File>,
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
        self.dir.join(format!("{workload}_metrics.json"))
    }

    pub fn requests_path(&self, workload: &str) -> PathBuf {
        self.dir.join(format!("{workload}_requests.jsonl"))
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
        let path = self.requests_path(&workload.name);
        let file = std::fs::File::create(&path)
            .map_err(|e| ReportError(format!("cannot write {}: {e}", path.display())))?;
        self.appending = Some(file);
        Ok(())
    }

    fn request_finished(
        &mut self,
        workload: &Workload,
        record: &RequestRecord,
    ) -> Result<(), ReportError> {
        if let Some(file) = &mut self.appending {
            // One write per line: a kill can cut at most the last line short, which the loader
            // reports by line number.
            let line = records_to_jsonl(std::slice::from_ref(record))?;
            file.write_all(&line).map_err(|e| {
                ReportError(format!(
                    "cannot append to {}: {e}",
                    self.requests_path(&workload.name).display()
                ))
            })?;
        }
        Ok(())
    }

    fn workload_finished(&mut self, result: &WorkloadResult) -> Result<(), ReportError> {
        self.appending = None;
        let name = &result.workload.name;
        write_json(&self.metrics_path(name), &result.metrics)?;
        write_jsonl_atomically(&self.requests_path(name), &result.records)?;
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

/// A run read back from its folder: the summary and, per workload, the raw request records.
/// Enough to draw every chart and write every report again without a re-run.
#[derive(Debug, Clone)]
pub struct SavedRun {
    /// The folder holding the files.
    pub dir: PathBuf,
    pub summary: Summary,
    /// Workload name -> its records, in the summary's order.
    pub records: IndexMap<String, Records>,
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
        let mut records = IndexMap::new();
        for name in summary.workloads.keys() {
            let path = files.requests_path(&super::svg::file_stem(name));
            records.insert(name.clone(), std::sync::Arc::new(load_requests(&path)?));
        }
        Ok(SavedRun {
            dir,
            summary,
            records,
        })
    }
}

/// Request records as JSON Lines, one record per line.
pub fn records_to_jsonl(records: &[RequestRecord]) -> Result<Vec<u8>, ReportError> {
    let mut lines = Vec::new();
    for record in records {
        serde_json::to_writer(&mut lines, record).map_err(|e| ReportError(e.to_string()))?;
        lines.push(b'\n');
    }
    Ok(lines)
}

/// Reads a `<workload>_requests.jsonl` file.
pub fn load_requests(path: &Path) -> Result<Vec<RequestRecord>, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ReportError(format!(
            "cannot read {}: {e}; the charts and the HTML report are drawn from the request \
             records saved beside benchmark_summary.json, so keep that file with the summary or \
             re-run: sagellm-benchmark run",
            path.display()
        ))
    })?;
    parse_requests(&text, &path.display().to_string())
}

/// Parses the text of a `<workload>_requests.jsonl` file; `name` names it in errors.
pub fn parse_requests(text: &str, name: &str) -> Result<Vec<RequestRecord>, ReportError> {
    // A process killed while appending leaves its last line without a newline, perhaps cut
    // short; such a line is the request that was being written, not damage elsewhere.
    let cut_short = !text.is_empty() && !text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut records = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(record) => records.push(record),
            Err(_) if cut_short && n + 1 == lines.len() => {
                tracing::warn!("{name}: ignoring the last line, cut short when the run was stopped");
            }
            Err(e) => {
                return Err(ReportError(format!(
                    "{name} line {}: not a request record ({e}); re-create it with sagellm-benchmark run",
                    n + 1
                )))
            }
        }
    }
    Ok(records)
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

/// Writes request records as JSON Lines, atomically, streaming them to disk (a long run's
/// records are never held twice in memory).
pub fn write_jsonl_atomically(path: &Path, records: &[RequestRecord]) -> Result<(), ReportError> {
    write_atomically_with(path, |w| {
        for record in records {
            serde_json::to_writer(&mut *w, record)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
}

/// Lets `write` fill a temporary file beside `path`, flushes it, then renames it over `path`.
fn write_atomically_with(
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
