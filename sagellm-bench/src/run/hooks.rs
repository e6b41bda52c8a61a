//! The hooks the runner calls as a run goes. Every hook has an empty default, so a reporter
//! implements only what it needs; the reporters themselves (files, table, charts) are in
//! `report/`, above this layer.

use crate::results::record::RequestRecord;
use crate::results::summary::{Provenance, Summary};
use crate::results::WorkloadResult;
use crate::workload::Workload;

/// A reporter could not do its work (typically: could not write a file).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReportError(pub String);

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
