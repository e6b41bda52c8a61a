//! `benchmark_summary.json`: every workload's metrics, the overall counts, and provenance.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::results::metrics::{WorkloadMetrics, SCHEMA_VERSION};
use crate::results::WorkloadResult;

/// The whole run, as written to `benchmark_summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The version of the JSON layout (see `docs/METRICS.md`).
    pub schema_version: u32,
    /// Workload name -> its metrics, in the order the workloads ran.
    pub workloads: IndexMap<String, WorkloadMetrics>,
    /// Counts over all workloads.
    pub overall: Overall,
    /// What produced the numbers.
    pub provenance: Provenance,
    /// False when the run stopped early (interrupted, or still running when this file was
    /// written); the workloads present hold what was completed.
    #[serde(default = "yes")]
    pub complete: bool,
    /// Why the run is incomplete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete_reason: Option<String>,
}

fn yes() -> bool {
    true
}

/// Counts over all workloads of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overall {
    /// Workloads run.
    pub total_workloads: u64,
    /// Measured requests, all workloads.
    pub total_requests: u64,
    /// Requests that succeeded.
    pub successful_requests: u64,
    /// Requests that failed.
    pub failed_requests: u64,
    /// `failed_requests / total_requests` (0 with no request).
    pub error_rate: f64,
}

/// What produced the numbers: enough to tell two runs apart and to repeat one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// `sagellm-bench`.
    pub tool: String,
    /// Its version.
    pub tool_version: String,
    /// The backend's name, e.g. `mock`.
    pub backend: String,
    /// The model it served.
    pub model: String,
    /// The backend's settings (for the mock: every simulated-engine parameter).
    pub backend_settings: serde_json::Value,
    /// The machine's host name.
    pub host: String,
    /// Unix seconds, and the same moment in RFC 3339.
    pub start_time: f64,
    /// The start in RFC 3339, UTC.
    pub start_time_utc: String,
    /// The command line that produced the run.
    pub command: String,
    /// How percentiles are computed.
    pub percentile_method: String,
}

impl Provenance {
    /// Provenance for a run starting now.
    pub fn now(backend: &str, model: &str, backend_settings: serde_json::Value) -> Self {
        let now = std::time::SystemTime::now();
        let unix = now
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Provenance {
            tool: "sagellm-bench".to_string(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            backend: backend.to_string(),
            model: model.to_string(),
            backend_settings,
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            start_time: unix,
            start_time_utc: humantime::format_rfc3339_seconds(now).to_string(),
            // Credentials in a URL's query (`--base-url ...?api_key=`) are not recorded.
            command: crate::backend::secrets::shown(
                &std::env::args().collect::<Vec<_>>().join(" "),
            ),
            percentile_method: "linear interpolation between order statistics (numpy default); \
                                ITL order statistics read from an HDR histogram, within 0.05%"
                .to_string(),
        }
    }
}

impl Summary {
    /// The workloads that sent requests of which none succeeded: they measured nothing, and a
    /// run that holds one fails (both doors exit 1, the harness saves no baseline).
    pub fn unmeasured_workloads(&self) -> Vec<&str> {
        self.workloads
            .iter()
            .filter(|(_, m)| m.total_requests > 0 && m.successful_requests == 0)
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// The summary of these workloads' results, in the order given.
    pub fn new(provenance: Provenance, results: &[WorkloadResult]) -> Self {
        Self::from_metrics(
            provenance,
            results
                .iter()
                .map(|r| (r.workload.name.clone(), r.metrics.clone()))
                .collect(),
        )
    }

    /// A summary of workloads' metrics, in the order given.
    pub fn from_metrics(
        provenance: Provenance,
        workloads: IndexMap<String, WorkloadMetrics>,
    ) -> Self {
        let sum = |f: fn(&WorkloadMetrics) -> u64| workloads.values().map(f).sum::<u64>();
        let total = sum(|m| m.total_requests);
        let failed = sum(|m| m.failed_requests);
        Summary {
            schema_version: SCHEMA_VERSION,
            overall: Overall {
                total_workloads: workloads.len() as u64,
                total_requests: total,
                successful_requests: sum(|m| m.successful_requests),
                failed_requests: failed,
                error_rate: if total > 0 {
                    failed as f64 / total as f64
                } else {
                    0.0
                },
            },
            workloads,
            provenance,
            complete: true,
            incomplete_reason: None,
        }
    }

    /// Parses the text of a summary file.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}
