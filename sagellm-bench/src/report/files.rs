//! The JSON files of a run: `<workload>_metrics.json`, `<workload>_requests.jsonl` and
//! `benchmark_summary.json`, each written atomically (to a temporary file, then renamed), so an
//! interrupted run never leaves a half-written file.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use super::{Report, ReportError};
use crate::record::RequestRecord;
use crate::runner::WorkloadResult;
use crate::summary::{Provenance, Summary};
use crate::workload::Workload;

/// The summary's file name.
pub const SUMMARY_FILE: &str = "benchmark_summary.json";

/// Writes the documented JSON files into one folder.
pub struct JsonFiles {
    dir: PathBuf,
}

impl JsonFiles {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JsonFiles { dir: dir.into() }
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
    fn run_started(&mut self, _: &Provenance, _: &[Workload]) -> Result<(), ReportError> {
        prepare_dir(&self.dir)
    }

    fn workload_finished(&mut self, result: &WorkloadResult) -> Result<(), ReportError> {
        let name = &result.workload.name;
        write_json(&self.metrics_path(name), &result.metrics)?;
        write_atomically(
            &self.requests_path(name),
            &records_to_jsonl(&result.records)?,
        )
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
    pub records: IndexMap<String, Vec<RequestRecord>>,
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
            records.insert(name.clone(), load_requests(&path)?);
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
    let file = std::fs::File::open(path).map_err(|e| {
        ReportError(format!(
            "cannot read {}: {e}; the charts and the HTML report are drawn from the request \
             records saved beside benchmark_summary.json, so keep that file with the summary or \
             re-run: sagellm-benchmark run",
            path.display()
        ))
    })?;
    let mut records = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| ReportError(format!("cannot read {}: {e}", path.display())))?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line).map_err(|e| {
            ReportError(format!(
                "{} line {}: not a request record ({e}); re-create it with sagellm-benchmark run",
                path.display(),
                n + 1
            ))
        })?;
        records.push(record);
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
    let fail = |e: std::io::Error| ReportError(format!("cannot write {}: {e}", path.display()));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| {
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
