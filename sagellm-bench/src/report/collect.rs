//! A reporter that keeps each workload's result in memory, for code that reads the results
//! after the run (the harness's baselines and smoke test, tests).

use std::sync::{Arc, Mutex};

use super::{Report, ReportError};
use crate::results::WorkloadResult;

/// Keeps every finished workload's result. Clones share one list, so a caller can hand a clone
/// to [`Reports`](super::Reports) (which owns its reporters) and read the results afterwards.
#[derive(Debug, Clone, Default)]
pub struct Collect {
    results: Arc<Mutex<Vec<WorkloadResult>>>,
}

impl Collect {
    /// The results so far, in the order the workloads finished.
    pub fn results(&self) -> Vec<WorkloadResult> {
        match self.results.lock() {
            Ok(results) => results.clone(),
            // A reporter that panicked mid-push left nothing half-written: a push is atomic.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl Report for Collect {
    fn workload_finished(&mut self, result: &WorkloadResult) -> Result<(), ReportError> {
        match self.results.lock() {
            Ok(mut results) => results.push(result.clone()),
            Err(poisoned) => poisoned.into_inner().push(result.clone()),
        }
        Ok(())
    }
}
