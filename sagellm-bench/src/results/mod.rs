//! What a run measured: raw per-request records, the compact samples kept of them, the
//! inter-token histogram and time bins, the aggregates, goodput, steady state, delivered load
//! and the run's summary.
//!
//! Imports from `backend/` and `workload/`, never from the layers above.

pub(crate) mod catalogue;
pub mod delivery;
pub mod goodput;
pub mod itl;
pub mod metrics;
pub mod record;
pub mod repeats;
pub mod samples;
pub mod steady;
pub mod summary;
pub mod time_bins;
pub mod turns;

use crate::results::metrics::WorkloadMetrics;
use crate::results::samples::Samples;
use crate::workload::Workload;

/// Everything measured for one workload.
#[derive(Debug, Clone)]
pub struct WorkloadResult {
    /// The workload as it ran.
    pub workload: Workload,
    /// Its aggregates, as written to `<workload>_metrics.json`.
    pub metrics: WorkloadMetrics,
    /// What was kept of the measured requests (per-request samples in index order, the pooled
    /// inter-token gaps, the charts' series); the full records are in the reporters' files.
    pub samples: Samples,
}
