//! The `cargo bench` entry: arguments, the registry of `#[workload]` functions, test mode.
//!
//! `cargo bench` runs a bench target with `--bench`; then every selected workload runs on the
//! chosen backend and writes the same files as `sagellm-benchmark run`, into
//! `<target>/sagellm-bench/`, plus a baseline folder per workload. Without `--bench` (as under
//! `cargo test --benches`, or nextest), each workload runs once, briefly, on the mock backend, and
//! the output follows libtest's format so test runners can read it.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args as _, CommandFactory, FromArgMatches, Parser};

use crate::__private::Entry;
use crate::backend::mock::MockConfig;
use crate::backend::spec::BackendSpec;
use crate::backend::Backend;
use crate::compare::baseline::{self, CompareSettings, Saved};
use crate::report::collect::Collect;
use crate::report::names::{baseline_dir, NEW_RUN};
use crate::report::progress::ProgressBars;
use crate::report::table::TablePrinter;
use crate::report::{Report, ReportError, Reports};
use crate::results::summary::Provenance;
use crate::results::WorkloadResult;
use crate::run::args::BackendArgs;
use crate::run::config::Config;
use crate::run::interrupt::Interrupt;
use crate::run::runner::RunControl;
use crate::workload::setup::Setup;
use crate::workload::{Arrival, Workload};

/// Command-line arguments after `cargo bench --`. Every option also reads a `SAGELLM_BENCH_*`
/// environment variable, so CI can set them without editing files.
#[derive(Parser, Debug)]
#[command(
    name = "cargo bench --",
    about = "Runs the #[workload] functions of this bench target (sagellm-bench)",
    after_help = "Examples:\n  cargo bench                                 all workloads on the mock backend\n  cargo bench -- short                        workloads whose name contains `short`\n  cargo bench -- --list\n  cargo bench -- --save-baseline before\n  cargo bench -- --baseline before --fail-on-regression\n  cargo bench -- --load-baseline after --baseline before"
)]
struct Args {
    /// Run only workloads whose name contains one of these
    filters: Vec<String>,
    /// Filters must match a name exactly
    #[arg(long)]
    exact: bool,
    /// Skip workloads whose name contains this (repeatable)
    #[arg(long, value_name = "FILTER")]
    skip: Vec<String>,
    /// List the workloads instead of running them
    #[arg(long)]
    list: bool,
    /// Listing format: `pretty`, or `terse` (one `name: bench` line each, for test runners)
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = ListFormat::Pretty)]
    format: ListFormat,
    /// Run only workloads marked `ignore`
    #[arg(long)]
    ignored: bool,
    /// Run ignored workloads too
    #[arg(long)]
    include_ignored: bool,
    /// Benchmark mode (cargo bench passes this); without it, each workload runs once as a test
    #[arg(long)]
    bench: bool,

    /// Which backend, and its settings: the same flags as `sagellm-benchmark run`, each also
    /// read from `SAGELLM_BENCH_<FLAG>` (see [`command`]).
    #[command(flatten)]
    backend: BackendArgs,
    /// Where to write results [default: <target>/sagellm-bench]
    #[arg(long, short = 'o', env = "SAGELLM_BENCH_OUTPUT")]
    output: Option<PathBuf>,
    /// A workload config file; its [mock] table sets the mock engine's parameters
    #[arg(long, env = "SAGELLM_BENCH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Save this run as baseline NAME (comparing with the previous NAME first, if any)
    #[arg(long, env = "SAGELLM_BENCH_SAVE_BASELINE", value_name = "NAME", value_parser = baseline_name)]
    save_baseline: Option<String>,
    /// Compare with baseline NAME, without overwriting it
    #[arg(
        long,
        env = "SAGELLM_BENCH_BASELINE",
        value_name = "NAME",
        value_parser = baseline_name,
        conflicts_with = "save_baseline"
    )]
    baseline: Option<String>,
    /// Do not run: compare the saved baseline NAME with --baseline
    #[arg(
        long,
        env = "SAGELLM_BENCH_LOAD_BASELINE",
        value_name = "NAME",
        value_parser = baseline_name,
        requires = "baseline"
    )]
    load_baseline: Option<String>,
    /// Exit with status 1 when any metric regressed
    #[arg(long, env = "SAGELLM_BENCH_FAIL_ON_REGRESSION")]
    fail_on_regression: bool,
    /// Changes smaller than this fraction are noise
    #[arg(long, env = "SAGELLM_BENCH_NOISE_THRESHOLD", default_value_t = 0.02)]
    noise_threshold: f64,
    /// Do not print the results table
    #[arg(long, short)]
    quiet: bool,

    // Accepted for libtest compatibility (cargo test, nextest, IDEs pass them); no effect.
    #[arg(long, hide = true)]
    nocapture: bool,
    #[arg(long, hide = true)]
    show_output: bool,
    #[arg(long, hide = true)]
    test_threads: Option<String>,
    #[arg(long, hide = true)]
    color: Option<String>,
    #[arg(long = "Z", short = 'Z', hide = true)]
    unstable: Option<String>,
    #[arg(long, hide = true)]
    report_time: bool,
}

/// How `--list` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ListFormat {
    Pretty,
    Terse,
}

/// A baseline name becomes a folder beside each workload's `new/`: one plain path component.
fn baseline_name(name: &str) -> Result<String, String> {
    let plain = name.chars().all(crate::workload::is_name_char);
    if name.is_empty() || !plain || name.starts_with('.') {
        return Err(format!(
            "`{name}` cannot name a baseline: use letters, digits, `-`, `_` and `.` (not first), e.g. main or before-fix"
        ));
    }
    if name == NEW_RUN {
        return Err(
            "`new` is where the latest run is kept; choose another baseline name".to_string(),
        );
    }
    Ok(name.to_string())
}

/// The harness's arguments: [`Args`], with every backend flag also read from the environment
/// as `SAGELLM_BENCH_<FLAG>` (`--base-url` from `SAGELLM_BENCH_BASE_URL`), so CI can set them
/// without editing files. The CLI shares the flags but not the variables.
fn command() -> clap::Command {
    let backend_flags = BackendArgs::augment_args(clap::Command::new("backend"));
    backend_flags
        .get_arguments()
        .map(|arg| arg.get_id().to_string())
        .fold(Args::command(), |command, id| {
            let variable = format!("SAGELLM_BENCH_{}", id.to_ascii_uppercase());
            command.mut_arg(id, |arg| arg.env(variable))
        })
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
    match run(args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("Error: {message}");
            1
        }
    }
}

/// A registered workload, expanded (a concurrency sweep gives several).
struct Declared {
    entry: &'static Entry,
    workload: Workload,
}

fn declared() -> Result<Vec<Declared>, String> {
    let mut entries: Vec<&'static Entry> = inventory::iter::<Entry>.into_iter().collect();
    // Declaration order: the registry's own order is unspecified.
    entries.sort_by_key(|e| (e.file, e.line, e.fn_name));
    let mut declared = Vec::new();
    for entry in entries {
        for workload in entry.workloads()? {
            declared.push(Declared { entry, workload });
        }
    }
    let mut names = std::collections::HashSet::new();
    for d in &declared {
        if !names.insert(d.workload.name.clone()) {
            return Err(format!(
                "two #[workload]s are named `{}` (one at {}:{}); give one a `name = \"...\"`",
                d.workload.name, d.entry.file, d.entry.line
            ));
        }
    }
    Ok(declared)
}

/// Whether `name` passes the positional filters, `--exact` and `--skip`.
fn matches_filters(args: &Args, name: &str) -> bool {
    let matches = |f: &String| {
        if args.exact {
            name == f
        } else {
            name.contains(f.as_str())
        }
    };
    (args.filters.is_empty() || args.filters.iter().any(matches))
        && !args.skip.iter().any(|s| name.contains(s.as_str()))
}

/// The workloads to run, and how many were filtered out and ignored.
fn selected(args: &Args, all: Vec<Declared>) -> (Vec<Declared>, usize, usize) {
    let mut chosen = Vec::new();
    let (mut filtered_out, mut ignored) = (0, 0);
    for d in all {
        if !matches_filters(args, &d.workload.name) {
            filtered_out += 1;
        } else if (args.ignored && !d.entry.ignore)
            || (!args.ignored && !args.include_ignored && d.entry.ignore)
        {
            ignored += 1;
        } else {
            chosen.push(d);
        }
    }
    (chosen, filtered_out, ignored)
}

fn run(args: Args) -> Result<u8, String> {
    let all = declared()?;
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
    let (chosen, filtered_out, ignored) = selected(&args, all);
    if args.bench {
        bench(&args, chosen)
    } else {
        Ok(smoke_test(chosen, filtered_out, ignored))
    }
}

/// Runs each workload's function body on its `Setup`.
fn set_up(declared: Vec<Declared>) -> Result<Vec<Workload>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime for workload setup: {e}"))?;
    declared
        .into_iter()
        .map(|d| {
            let mut setup = Setup::new(d.workload);
            runtime.block_on((d.entry.setup)(&mut setup)).map_err(|e| {
                format!(
                    "workload `{}` ({}:{}) failed to set up: {e}",
                    setup.workload().name,
                    d.entry.file,
                    d.entry.line
                )
            })?;
            let workload = setup.into_workload();
            workload
                .validate()
                .map_err(|e| format!("workload `{}`: {e}", workload.name))?;
            Ok(workload)
        })
        .collect()
}

/// Test mode: one short request per workload on the mock backend, reported like libtest.
fn smoke_test(chosen: Vec<Declared>, filtered_out: usize, ignored: usize) -> u8 {
    let started = Instant::now();
    let count = chosen.len();
    println!(
        "\nrunning {count} test{}",
        if count == 1 { "" } else { "s" }
    );
    let (mut passed, mut failed) = (0, Vec::new());
    for d in chosen {
        let name = d.workload.name.clone();
        let outcome = set_up(vec![d]).and_then(|mut w| {
            let mut w = w.remove(0);
            w.num_requests = 1;
            w.warmup_requests = 0;
            w.output_tokens = w.output_tokens.min(16);
            w.arrival = Arrival::Closed { concurrency: 1 };
            let backend = BackendSpec::Mock {
                config: MockConfig::default(),
                model: None,
            }
            .build()
            .map_err(|e| e.to_string())?;
            let mut collect = Collect::default();
            let provenance = Provenance::now("mock", "mock", serde_json::Value::Null);
            crate::run::runner::run(backend, &[w], provenance, &mut collect)
                .map_err(|e| e.to_string())?;
            match collect
                .results()
                .first()
                .and_then(|r| r.samples.failures().first().map(|f| f.error.clone()))
            {
                Some(error) => Err(format!("the request failed: {error}")),
                None => Ok(()),
            }
        });
        match outcome {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(e) => {
                println!("test {name} ... FAILED");
                failed.push((name, e));
            }
        }
    }
    if !failed.is_empty() {
        println!("\nfailures:\n");
        for (name, e) in &failed {
            println!("---- {name} ----\n{e}\n");
        }
        println!("failures:");
        for (name, _) in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; {ignored} ignored; 0 measured; {filtered_out} filtered out; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        0
    } else {
        101
    }
}

/// Where results go by default: `<target>/sagellm-bench`. The target folder is
/// `CARGO_TARGET_DIR`, else the one this bench binary was built into
/// (`<target>/<profile>/deps/<binary>`), else `./target`.
fn default_output() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("sagellm-bench");
    }
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        let deps = exe.parent()?;
        (deps.file_name()? == "deps").then(|| deps.parent()?.parent().map(Path::to_path_buf))?
    });
    from_exe
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("sagellm-bench")
}

/// Benchmark mode.
fn bench(args: &Args, chosen: Vec<Declared>) -> Result<u8, String> {
    let root = args.output.clone().unwrap_or_else(default_output);
    let settings = CompareSettings {
        noise_threshold: args.noise_threshold,
        ..CompareSettings::default()
    };
    if !(args.noise_threshold.is_finite() && args.noise_threshold >= 0.0) {
        return Err(format!(
            "--noise-threshold must be a non-negative fraction (0.02 = 2%), not {}",
            args.noise_threshold
        ));
    }
    let names: Vec<String> = chosen.iter().map(|d| d.workload.name.clone()).collect();

    // Compare two saved baselines without running.
    if let (Some(new_name), Some(base_name)) = (&args.load_baseline, &args.baseline) {
        let mut comparisons = Vec::new();
        for name in &names {
            let new = load_baseline(&root, name, new_name)?;
            let base = load_baseline(&root, name, base_name)?;
            comparisons.push(baseline::compare(&base, &new, &settings));
        }
        return Ok(verdict(args, &comparisons, base_name));
    }
    if let Some(base_name) = &args.baseline {
        // Fail before running, not after.
        for name in &names {
            load_baseline(&root, name, base_name)?;
        }
    }

    let config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    let workloads = set_up(chosen)?;
    if workloads.is_empty() {
        println!("no workload matches; `cargo bench -- --list` lists them");
        return Ok(0);
    }
    let backend = create_backend(args, config)?;
    let provenance = Provenance::now(backend.name(), backend.model(), backend.settings());
    let collect = Collect::default();
    let mut reports = Reports::files(&root);
    if !args.quiet {
        reports.push(Box::new(ProgressBars::on_stderr()));
        reports.push(Box::new(TablePrinter));
    }
    reports.push(Box::new(BaselineWriter {
        root: root.clone(),
        writing: None,
    }));
    reports.push(Box::new(collect.clone()));
    {
        let control = RunControl {
            interrupt: Interrupt::on_signals()
                .map_err(|e| format!("cannot listen for SIGINT and SIGTERM: {e}"))?,
            ..RunControl::default()
        };
        let summary =
            crate::run::runner::run_with(backend, &workloads, provenance, &mut reports, &control)
                .map_err(|e| e.to_string())?;
        if !summary.complete {
            eprintln!(
                "Run incomplete ({}): results so far in {}; no baseline was saved",
                summary
                    .incomplete_reason
                    .as_deref()
                    .unwrap_or("stopped early"),
                root.display()
            );
            return Ok(130);
        }
    }

    let compare_with = args
        .baseline
        .clone()
        .or_else(|| args.save_baseline.clone())
        .unwrap_or_else(|| "base".to_string());
    let collected = collect.results();
    let mut comparisons = Vec::new();
    for result in &collected {
        let dir = baseline_dir(&root, &result.workload.name, &compare_with);
        if dir.exists() {
            let base = baseline::load(&dir).map_err(|e| e.to_string())?;
            comparisons.push(baseline::compare(&base, &Saved::from(result), &settings));
            #[cfg(feature = "charts")]
            write_overlays(&root, &result.workload.name, &compare_with, &base, result)?;
        }
    }
    // `--baseline` compares only; otherwise the run becomes the baseline it was compared with.
    if args.baseline.is_none() {
        for result in &collected {
            let name = &result.workload.name;
            let saved = baseline_dir(&root, name, NEW_RUN);
            let dir = baseline_dir(&root, name, &compare_with);
            baseline::copy(&saved, &dir).map_err(|e| e.to_string())?;
        }
    }
    if !args.quiet {
        println!("Results written to {}", root.display());
    }
    if comparisons.is_empty() {
        return Ok(0);
    }
    Ok(verdict(args, &comparisons, &compare_with))
}

/// The backend the arguments name, with the config's `[mock]` and `[cpu]` tables.
fn create_backend(args: &Args, config: Config) -> Result<Arc<dyn Backend>, String> {
    let spec = args.backend.spec(&config).map_err(|e| e.to_string())?;
    spec.build().map_err(|e| e.to_string())
}

#[cfg(feature = "charts")]
/// Draws the baseline's and the new run's TTFT, TPOT and E2E distributions on one chart each,
/// in `<root>/<workload>/`: `<metric>_vs_<baseline>.svg`.
fn write_overlays(
    root: &Path,
    workload: &str,
    base_name: &str,
    base: &Saved,
    new: &WorkloadResult,
) -> Result<(), String> {
    let sets = [
        (base_name, base.samples.as_ref()),
        ("new", new.samples.as_ref()),
    ];
    let context = format!("{workload}: baseline `{base_name}` against this run");
    let charts = crate::report::svg::overlay_charts(&sets, &context).map_err(|e| e.to_string())?;
    for (key, chart) in charts {
        let file = root
            .join(workload)
            .join(crate::report::names::baseline_chart_file(key, base_name));
        crate::report::files::write_atomically(&file, chart.svg.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn load_baseline(root: &Path, workload: &str, name: &str) -> Result<Saved, String> {
    let dir = baseline_dir(root, workload, name);
    if !dir.exists() {
        return Err(format!(
            "no baseline `{name}` for workload `{workload}` in {}; save one with `cargo bench -- --save-baseline {name}`",
            root.display()
        ));
    }
    baseline::load(&dir).map_err(|e| e.to_string())
}

fn verdict(args: &Args, comparisons: &[baseline::Comparison], base_name: &str) -> u8 {
    print!("{}", baseline::render(comparisons, base_name));
    let regressed = baseline::regressed(comparisons);
    if regressed.is_empty() {
        return 0;
    }
    let message = format!("regressed: {}", regressed.join(", "));
    if args.fail_on_regression {
        eprintln!("Error: {message}");
        1
    } else {
        if std::io::stderr().is_terminal() {
            eprintln!("warning: {message} (add --fail-on-regression to fail on it)");
        }
        0
    }
}

/// Writes each workload's results to `<root>/<workload>/new/`, its records as they arrive.
struct BaselineWriter {
    root: PathBuf,
    writing: Option<baseline::BaselineFiles>,
}

impl Report for BaselineWriter {
    fn workload_started(&mut self, workload: &Workload) -> Result<(), ReportError> {
        let dir = baseline_dir(&self.root, &workload.name, NEW_RUN);
        self.writing = Some(baseline::BaselineFiles::create(&dir)?);
        Ok(())
    }

    fn request_finished(
        &mut self,
        _: &Workload,
        record: &crate::results::record::RequestRecord,
    ) -> Result<(), ReportError> {
        match &mut self.writing {
            Some(files) => files.append(record),
            None => Ok(()),
        }
    }

    fn workload_finished(&mut self, result: &WorkloadResult) -> Result<(), ReportError> {
        match self.writing.take() {
            Some(files) => files.finish(&result.metrics),
            None => Ok(()),
        }
    }
}
