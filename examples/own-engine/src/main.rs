//! The whole `sagellm-benchmark` command line (run, report, compare), with this crate's engines
//! as two more `--backend` values:
//!
//!   cargo run --release -- run --backend candle_llama --workload year1 -o results
//!   cargo run --release -- report --input results/benchmark_summary.json

own_engine::register_backends!();

fn main() -> std::process::ExitCode {
    sagellm_bench::cli::main()
}
