//! `sagellm-benchmark`: the command line of sagellm-bench (`sagellm_bench::cli`).

fn main() -> std::process::ExitCode {
    sagellm_bench::cli::main()
}
