//! The `cargo bench` entry: args.rs (its flags), registry.rs (the `#[workload]` functions),
//! libtest.rs (test mode), bench.rs (bench mode), brief.rs (its one line per workload),
//! baselines.rs (the baseline folders).
//!
//! `cargo bench` runs a bench target with `--bench`; then every selected workload runs on the
//! chosen backend and writes the same files as `sagellm-benchmark run`, into
//! `<target>/sagellm-bench/`, plus a baseline folder per workload. Without `--bench` (as under
//! `cargo test --benches`, or nextest), each workload runs once, briefly, on the mock backend, and
//! the output follows libtest's format so test runners can read it.

mod args;
mod baselines;
mod bench;
mod brief;
mod capacity;
mod libtest;
mod registry;

use std::process::ExitCode;

use clap::FromArgMatches;

use self::args::{command, Args, ListFormat};
use self::bench::bench;
use self::libtest::smoke_test;
use self::registry::{declared, matches_filters, selected, Declared};
use crate::backend::registered::registered;
use crate::backend::spec::{check_registered, BackendKind, BackendName};

/// The `--list` lines that name the backends `--backend` takes.
fn print_backends() {
    use clap::ValueEnum;
    let builtin: Vec<&str> = BackendKind::value_variants()
        .iter()
        .map(|k| k.name())
        .collect();
    println!("\nbackends (--backend NAME): {}", builtin.join(", "));
    for b in registered() {
        println!("  {}: registered at {}:{}", b.name, b.file, b.line);
    }
}

/// The entry point of a bench target: `fn main() -> ExitCode { sagellm_bench::main() }`.
pub fn main() -> ExitCode {
    ExitCode::from(main_with_args(std::env::args_os()))
}

/// Runs the harness on these arguments (the first is the program name) and returns the exit
/// status: 0 success, 1 error or regression under `--fail-on-regression`, 2 bad arguments, 101
/// a failed smoke test.
pub fn main_with_args<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let parsed = command()
        .try_get_matches_from(args)
        .and_then(|matches| Ok((Args::from_arg_matches(&matches)?, matches)));
    let (args, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    if let Some(misplaced) = args.backend.misplaced_flag(&matches) {
        let _ = command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                format!("{misplaced}; drop it or choose the backend it is for"),
            )
            .print();
        return 2;
    }
    let backend_given = matches!(
        matches.value_source("backend"),
        Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
    );
    // The baselines copied after the run, and its charts, reach the disk before the exit.
    let result = run(args, backend_given).and_then(|code| {
        crate::report::files::flush_to_disk().map_err(|e| e.to_string())?;
        Ok(code)
    });
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("Error: {message}");
            1
        }
    }
}

fn run(mut args: Args, backend_given: bool) -> Result<u8, String> {
    check_registered()?;
    let all = declared()?;
    for d in &all {
        if let Some(name) = d.entry.backend {
            if BackendName::find(name).is_none() {
                return Err(format!(
                    "#[workload] {} at {}:{} is for backend `{name}`, which is neither built in nor registered with #[backend]",
                    d.workload.name, d.entry.file, d.entry.line
                ));
            }
        }
    }
    if args.list {
        // Like libtest: every matching workload, ignored ones included unless --ignored.
        let listed: Vec<Declared> = all
            .into_iter()
            .filter(|d| {
                matches_filters(&args, &d.workload.name) && (!args.ignored || d.entry.ignore)
            })
            .collect();
        let kind = if args.bench { "bench" } else { "test" };
        for d in &listed {
            println!("{}: {kind}", d.workload.name);
        }
        if args.format == ListFormat::Pretty {
            print_backends();
            let n = listed.len();
            let plural =
                |k: usize, word: &str| format!("{k} {word}{}", if k == 1 { "" } else { "s" });
            let (tests, benches) = if args.bench { (0, n) } else { (n, 0) };
            println!(
                "\n{}, {}",
                plural(tests, "test"),
                plural(benches, "benchmark")
            );
        }
        return Ok(0);
    }
    if args.bench && !backend_given {
        match registered()[..] {
            [] => {}
            [only] => {
                // The crate registered its engine: that is what it means to benchmark.
                args.backend.backend = BackendName::Registered(only);
                eprintln!(
                    "no --backend given: running on `{}`, the one backend this crate registers ({}:{}); \
                     --backend mock runs the simulated engine",
                    only.name, only.file, only.line
                );
            }
            ref several => {
                let names: Vec<&str> = several.iter().map(|b| b.name).collect();
                eprintln!(
                    "no --backend given: running on the mock; this crate registers {}: choose one with --backend",
                    names.join(", ")
                );
            }
        }
    }
    let (chosen, filtered_out, ignored) = selected(&args, all);
    if args.bench {
        bench(&args, chosen)
    } else {
        Ok(smoke_test(chosen, filtered_out, ignored))
    }
}
