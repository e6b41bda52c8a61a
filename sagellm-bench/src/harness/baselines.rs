//! The baseline store: `<root>/<workload>/<name>/`, written as the run goes (`new/`), loaded
//! for comparison.

use std::path::{Path, PathBuf};

use crate::compare::baseline::{self, Saved};
use crate::report::names::{baseline_dir, NEW_RUN};
use crate::report::{Report, ReportError};
use crate::results::WorkloadResult;
use crate::workload::Workload;

pub(super) fn load_baseline(root: &Path, workload: &str, name: &str) -> Result<Saved, String> {
    let dir = baseline_dir(root, workload, name);
    if !dir.exists() {
        return Err(format!(
            "no baseline `{name}` for workload `{workload}` in {}; save one with `cargo bench -- --save-baseline {name}`",
            root.display()
        ));
    }
    baseline::load(&dir).map_err(|e| e.to_string())
}

/// Writes each workload's results to `<root>/<workload>/new/`, its records as they arrive.
pub(super) struct BaselineWriter {
    root: PathBuf,
    writing: Option<baseline::BaselineFiles>,
}

impl BaselineWriter {
    /// Writes under `root`.
    pub(super) fn new(root: PathBuf) -> Self {
        BaselineWriter {
            root,
            writing: None,
        }
    }
}

impl Report for BaselineWriter {
    fn workload_started(&mut self, workload: &Workload) -> Result<(), ReportError> {
        let dir = baseline_dir(&self.root, &workload.name, NEW_RUN);
        self.writing = Some(baseline::BaselineFiles::create(&dir)?);
        Ok(())
    }

    fn request_finished(
        &mut self,
        _: &Workload,
        record: &crate::results::record::RequestRecord,
    ) -> Result<(), ReportError> {
        match &mut self.writing {
            Some(files) => files.append(record),
            None => Ok(()),
        }
    }

    fn workload_finished(&mut self, result: &WorkloadResult) -> Result<(), ReportError> {
        match self.writing.take() {
            Some(files) => files.finish(&result.metrics),
            None => Ok(()),
        }
    }
}
