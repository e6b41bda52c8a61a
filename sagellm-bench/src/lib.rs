//! sagellm-bench: a benchmark harness for LLM inference.
//!
//! A run takes [workloads](workload::Workload), sends their requests to a
//! [backend](backend::Backend) through the [runner], which stamps every streamed token on the
//! backend's [clock](clock::Clock), hands a [raw record](record::RequestRecord) per request to
//! [reporters](report) (which stream it to disk), keeps a compact
//! [sample](samples::RequestSample) of it, [aggregates](metrics) the samples, and hands the
//! results to the reporters, which write the documented JSON files and print tables. See
//! `docs/METRICS.md` for every definition.

pub mod backend;
pub mod baseline;
pub mod clock;
pub mod compare;
pub mod config;
pub mod goodput;
mod harness;
pub mod interrupt;
pub mod itl;
pub mod load;
mod memory;
pub mod metrics;
pub mod record;
pub mod report;
pub mod runner;
pub mod samples;
mod setup;
pub mod summary;
pub mod time_bins;
pub mod token_counter;
pub mod workload;

pub use backend::Backend;
pub use harness::main;
pub use interrupt::Interrupt;
pub use runner::{run, run_with, RunControl, RunError, WorkloadResult};
pub use setup::{PromptError, Prompts, Response, ResponseCheck, Setup};
pub use summary::Summary;
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

/// Entry points for the fuzz targets in `fuzz/`; not a public API.
#[doc(hidden)]
#[path = "fuzz_entry.rs"]
pub mod __fuzz;
