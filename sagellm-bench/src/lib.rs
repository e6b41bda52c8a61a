//! sagellm-bench: a benchmark harness for LLM inference, used by `cargo bench`.
//!
//! Declare workloads with [`#[workload]`](macro@workload) in a bench target whose `main` is
//! [`main`]; `cargo bench` then runs each one against a [`Backend`] (the simulated mock by
//! default, a model in process, or an OpenAI-compatible server) and writes the documented JSON
//! files: TTFT, time between tokens, throughput, memory and KV-cache figures per workload, and
//! a [`Summary`] of the run. `cargo bench -- --save-baseline NAME` and `--baseline NAME`
//! compare runs with confidence intervals.
//!
//! ```toml
//! [dev-dependencies]
//! # The mock, the runner, the JSON files, the table and baselines; add "openai", "cpu" or
//! # "charts" for server backends, the in-process cpu backend, and SVG charts with index.html.
//! sagellm-bench = { version = "0.1", default-features = false }
//!
//! [[bench]]
//! name = "my_workloads"
//! harness = false
//! ```
//!
//! ```no_run
//! use sagellm_bench::{workload, Prompts, Setup};
//!
//! #[workload(prompt_tokens = 128, output_tokens = 64, requests = 10, concurrency = [1, 4])]
//! fn chat(setup: &mut Setup) {
//!     setup.prompts(Prompts::from_texts(["Hello!", "What is a KV cache?"]));
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     sagellm_bench::main()
//! }
//! ```
//!
//! Your own engine runs the same workloads by implementing [`Backend`]; [`run`] drives any
//! backend from code and feeds [`Report`]ers. Every option of the attribute is in
//! `docs/WORKLOADS.md`, every figure in `docs/METRICS.md`, the layers of this crate in
//! `docs/ARCHITECTURE.md`.

#![warn(missing_docs)]

// The layers, top to bottom: harness, compare, report, run, results, backend, workload. A
// module imports only from its own layer and the ones below it (docs/ARCHITECTURE.md). They
// are public for the `sagellm-benchmark` binary and the tests, and hidden from the docs: the
// API is what the root re-exports.
#[doc(hidden)]
pub mod backend;
#[cfg(feature = "cli")]
pub mod cli;
#[doc(hidden)]
pub mod compare;
mod harness;
#[doc(hidden)]
pub mod report;
#[doc(hidden)]
pub mod results;
#[doc(hidden)]
pub mod run;
#[doc(hidden)]
pub mod workload;

pub use backend::clock::Clock;
pub use backend::sink::TokenSink;
pub use backend::{
    Backend, BackendError, CountTokens, Counter, EngineFigures, ErrorKind, FigureSource,
    GenerationRequest, KvFigures, MemoryFigures, RequestError, SpecFigures, StreamEvent, Usage,
};
pub use harness::main;
pub use report::{Report, ReportError, Reports};
pub use results::summary::{Provenance, Summary};
pub use results::WorkloadResult;
pub use run::interrupt::Interrupt;
pub use run::runner::{run, run_with, RunControl, RunError};
pub use workload::session::{Conversations, Sessions, ThinkTime};
pub use workload::setup::{PromptError, Prompts, Response, ResponseCheck, Setup};
pub use workload::slo::Slo;
pub use workload::trace::{Trace, TraceError, TraceFormat, TraceOptions};
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

/// Registers a backend: the function builds your engine, and `cargo bench -- --backend NAME`
/// (NAME is the function's name, or `name = "..."`) runs the workloads on it, beside the
/// built-in backends. With one registered backend and no `--backend`, it is the one that runs.
/// See `docs/BACKENDS.md` for a complete engine.
///
/// ```
/// use sagellm_bench::{Backend, GenerationRequest, StreamEvent, TokenSink};
/// use futures::stream::BoxStream;
///
/// struct Echo;
///
/// impl Backend for Echo {
///     fn name(&self) -> &str { "echo" }
///     fn model(&self) -> &str { "echo-1" }
///     fn generate(&self, request: GenerationRequest) -> BoxStream<'static, StreamEvent> {
///         let (mut sink, stream) = TokenSink::channel(&self.clock());
///         for _ in 0..request.max_output_tokens {
///             sink.push(" echo", 1);
///         }
///         sink.done(None);
///         stream
///     }
/// }
///
/// #[sagellm_bench::backend]
/// fn echo() -> Result<Echo, std::convert::Infallible> {
///     Ok(Echo)
/// }
/// # fn main() {}
/// ```
pub use sagellm_bench_macros::backend;

/// Compiles (and runs) every example of `docs/WORKLOADS.md` as a doctest, so the guide cannot
/// drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../../docs/WORKLOADS.md")]
pub struct WorkloadsGuide;

/// Compiles and runs `docs/BACKENDS.md` as a doctest (its command-line example needs `cli`).
#[cfg(all(doctest, feature = "cli"))]
#[doc = include_str!("../../docs/BACKENDS.md")]
pub struct BackendsGuide;

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
