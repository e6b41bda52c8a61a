//! The hooks the runner calls as a run goes. Every hook has an empty default, so a reporter
//! implements only what it needs; the reporters themselves (files, table, charts) are in
//! `report/`, above this layer.

use crate::results::record::RequestRecord;
use crate::results::summary::{Provenance, Summary};
use crate::results::WorkloadResult;
use crate::workload::Workload;

/// A reporter could not do its work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// A file or folder could not be read, written or created (the disk is full, a folder is
    /// not writable, a file is missing).
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done: `read`, `write`, `create`, `append to`.
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Anything else: a file that is not what it should be, a folder another run holds, a
    /// chart that could not be drawn, or a custom reporter's own failure. The message says
    /// which.
    #[error("{0}")]
    Other(String),
}

impl ReportError {
    /// A failure to `action` (e.g. `write`) the file or folder at `path`.
    pub fn io(
        action: &'static str,
        path: impl Into<std::path::PathBuf>,
        source: std::io::Error,
    ) -> Self {
        ReportError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// A failure described by `message`.
    pub fn other(message: impl Into<String>) -> Self {
        ReportError::Other(message.into())
    }
}

/// Receives a run's results as they arrive.
pub trait Report {
    /// The run starts, with these workloads.
    fn run_started(
        &mut self,
        _provenance: &Provenance,
        _workloads: &[Workload],
    ) -> Result<(), ReportError> {
        Ok(())
    }
    /// A workload starts (after its warm-up).
    fn workload_started(&mut self, _workload: &Workload) -> Result<(), ReportError> {
        Ok(())
    }
    /// A measured request finished, successfully or not.
    fn request_finished(
        &mut self,
        _workload: &Workload,
        _record: &RequestRecord,
    ) -> Result<(), ReportError> {
        Ok(())
    }
    /// A workload finished; its result holds the aggregates.
    fn workload_finished(&mut self, _result: &WorkloadResult) -> Result<(), ReportError> {
        Ok(())
    }
    /// The run ended (completed or stopped early, as the summary says).
    fn run_finished(&mut self, _summary: &Summary) -> Result<(), ReportError> {
        Ok(())
    }
}
