//! The Year-1 workloads as `cargo bench` runs them.
//!
//! `cargo bench` runs all three on the mock backend and writes the same files as
//! `sagellm-benchmark run --workload year1` into `target/sagellm-bench/`. Choose another
//! backend with `cargo bench -- --backend NAME --model MODEL` (or `SAGELLM_BENCH_BACKEND`).

use sagellm_bench::workload;

/// Basic inference latency.
#[workload(prompt_tokens = 128, output_tokens = 128, requests = 5)]
fn short_input() {}

/// Long-context handling.
#[workload(prompt_tokens = 200, output_tokens = 200, requests = 3)]
fn long_input() {}

/// Concurrent requests and KV-cache pressure.
#[workload(
    prompt_tokens = 256,
    output_tokens = 256,
    requests = 10,
    concurrency = 10
)]
fn stress_test() {}

fn main() -> std::process::ExitCode {
    sagellm_bench::main()
}
