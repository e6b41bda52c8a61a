//! sagellm-bench: a benchmark harness for LLM inference.
//!
//! A run takes [workloads](workload::Workload), sends their requests to a
//! [backend](backend::Backend) through the [runner], which stamps every streamed token on the
//! backend's [clock](clock::Clock), hands a [raw record](record::RequestRecord) per request to
//! [reporters](report) (which stream it to disk), keeps a compact
//! [sample](samples::RequestSample) of it, [aggregates](metrics) the samples, and hands the
//! results to the reporters, which write the documented JSON files and print tables. See
//! `docs/METRICS.md` for every definition.

// The layers, top to bottom: harness, compare, report, run, results, backend, workload. A
// module imports only from its own layer and the ones below it (docs/ARCHITECTURE.md).
pub mod backend;
pub mod compare;
mod harness;
pub mod report;
pub mod results;
pub mod run;
pub mod workload;

pub use backend::Backend;
pub use harness::main;
pub use results::summary::Summary;
pub use results::WorkloadResult;
pub use run::interrupt::Interrupt;
pub use run::runner::{run, run_with, RunControl, RunError};
pub use workload::setup::{PromptError, Prompts, Response, ResponseCheck, Setup};
pub use workload::{Arrival, OpenLoop, Workload};

/// Declares a benchmark workload that `cargo bench` runs. See `docs/WORKLOADS.md` for every
/// option, with examples.
///
/// ```
/// use sagellm_bench::workload;
///
/// #[workload(prompt_tokens = 128, output_tokens = 128, requests = 5)]
/// fn short_input() {}
/// # fn main() {}
/// ```
pub use sagellm_bench_macros::workload;

/// Compiles (and runs) every example of `docs/WORKLOADS.md` as a doctest, so the guide cannot
/// drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../../docs/WORKLOADS.md")]
pub struct WorkloadsGuide;

/// Used by code that `#[workload]` generates; not a public API.
#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

/// Entry points for the fuzz targets in `fuzz/`; not a public API. They reach the SSE parser
/// and the charts, so they need those features.
#[cfg(all(feature = "openai", feature = "charts"))]
#[doc(hidden)]
#[path = "fuzz_entry.rs"]
pub mod __fuzz;
