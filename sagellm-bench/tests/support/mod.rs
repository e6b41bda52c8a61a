//! Shared by the integration tests of sagellm-bench: a reporter that keeps what the runner
//! hands to reporters and then drops (every record), for the assertions.

// Each test binary compiles this module and uses its own part of it.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use sagellm_bench::report::{Report, ReportError};
use sagellm_bench::results::metrics::WorkloadMetrics;
use sagellm_bench::results::record::RequestRecord;
use sagellm_bench::{Workload, WorkloadResult};

/// One workload's metrics and its full records, in request order.
#[derive(Debug, Clone)]
pub struct Measured {
    pub workload: Workload,
    pub metrics: WorkloadMetrics,
    pub records: Vec<RequestRecord>,
}

/// Keeps every workload's metrics and records. Clones share the finished list, so a clone can
/// go into a `Reports` fan-out and the original read afterwards.
#[derive(Default, Clone)]
pub struct Collect {
    done: Arc<Mutex<Vec<Measured>>>,
    records: Vec<RequestRecord>,
}

impl Collect {
    /// The workloads finished so far.
    pub fn measured(&self) -> Vec<Measured> {
        self.done.lock().unwrap().clone()
    }
}

impl Report for Collect {
    fn request_finished(
        &mut self,
        _: &Workload,
        record: &RequestRecord,
    ) -> Result<(), ReportError> {
        self.records.push(record.clone());
        Ok(())
    }

    fn workload_finished(&mut self, result: &WorkloadResult) -> Result<(), ReportError> {
        let mut records = std::mem::take(&mut self.records);
        records.sort_by_key(|r| r.index);
        self.done.lock().unwrap().push(Measured {
            workload: result.workload.clone(),
            metrics: result.metrics.clone(),
            records,
        });
        Ok(())
    }
}
