//! The Year-1 workloads and one of this crate's own, on its candle engine:
//!
//!   cargo bench                                   # on candle_llama (the engine on its thread)
//!   cargo bench -- --backend candle_llama_queued  # the same engine behind a bounded queue
//!   cargo bench -- --backend mock                 # the simulated engine, for comparison
//!   cargo bench -- --list

use sagellm_bench::workload;

own_engine::register_backends!();

// The usage guide's Year-1 workloads, with their names and shapes.
#[workload(prompt_tokens = 128, output_tokens = 128, requests = 5)]
fn short_input() {}

#[workload(prompt_tokens = 200, output_tokens = 200, requests = 3)]
fn long_input() {}

#[workload(prompt_tokens = 256, output_tokens = 256, requests = 10, concurrency = 10)]
fn stress_test() {}

/// This crate's own: short chat turns, four at a time, on the queued engine only (its queue
/// holds two requests, so two of the four wait in it: their wait is part of their TTFT).
#[workload(
    prompt_tokens = 48,
    output_tokens = 24,
    requests = 8,
    concurrency = 4,
    backend = "candle_llama_queued"
)]
fn chat_burst() {}

fn main() -> std::process::ExitCode {
    sagellm_bench::main()
}
