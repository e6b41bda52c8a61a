//! sagellm-bench: a benchmark harness for LLM inference.
//!
//! A run takes [workloads](workload::Workload), sends their requests to a
//! [backend](backend::Backend) through the [runner], which stamps every streamed token on the
//! backend's [clock](clock::Clock), keeps a [raw record](record::RequestRecord) per request,
//! [aggregates](metrics) them, and hands the results to [reporters](report) that write the
//! documented JSON files and print tables. See `docs/METRICS.md` for every definition.

pub mod backend;
pub mod clock;
pub mod compare;
pub mod config;
mod memory;
pub mod metrics;
pub mod record;
pub mod report;
pub mod runner;
pub mod summary;
pub mod workload;

pub use backend::Backend;
pub use runner::{run, RunError, WorkloadResult};
pub use summary::Summary;
pub use workload::{Arrival, Workload};

/// Used by code that `#[workload]` generates; not a public API.
#[doc(hidden)]
pub mod __private {}
