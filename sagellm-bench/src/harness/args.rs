//! The harness's arguments: libtest's, the backend flags shared with `sagellm-benchmark run`
//! (each also read from `SAGELLM_BENCH_<FLAG>`), baselines.

use std::path::PathBuf;

use clap::{Args as _, CommandFactory, Parser};

use crate::report::names::NEW_RUN;
use crate::run::args::BackendArgs;

/// Command-line arguments after `cargo bench --`. Every option also reads a `SAGELLM_BENCH_*`
/// environment variable, so CI can set them without editing files.
#[derive(Parser, Debug)]
#[command(
    name = "cargo bench --",
    about = "Runs the #[workload] functions of this bench target (sagellm-bench)",
    after_help = "Examples:\n  cargo bench                                 all workloads on the mock backend\n  cargo bench -- short                        workloads whose name contains `short`\n  cargo bench -- --list\n  cargo bench -- --save-baseline before\n  cargo bench -- --baseline before --fail-on-regression\n  cargo bench -- --load-baseline after --baseline before"
)]
pub(super) struct Args {
    /// Run only workloads whose name contains one of these
    pub(super) filters: Vec<String>,
    /// Filters must match a name exactly
    #[arg(long)]
    pub(super) exact: bool,
    /// Skip workloads whose name contains this (repeatable)
    #[arg(long, value_name = "FILTER")]
    pub(super) skip: Vec<String>,
    /// List the workloads instead of running them
    #[arg(long)]
    pub(super) list: bool,
    /// Listing format: `pretty`, or `terse` (one `name: bench` line each, for test runners)
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = ListFormat::Pretty)]
    pub(super) format: ListFormat,
    /// Run only workloads marked `ignore`
    #[arg(long)]
    pub(super) ignored: bool,
    /// Run ignored workloads too
    #[arg(long)]
    pub(super) include_ignored: bool,
    /// Benchmark mode (cargo bench passes this); without it, each workload runs once as a test
    #[arg(long)]
    pub(super) bench: bool,

    /// Which backend, and its settings: the same flags as `sagellm-benchmark run`, each also
    /// read from `SAGELLM_BENCH_<FLAG>` (see [`command`]).
    #[command(flatten)]
    pub(super) backend: BackendArgs,
    /// Where to write results [default: <target>/sagellm-bench]
    #[arg(long, short = 'o', env = "SAGELLM_BENCH_OUTPUT")]
    pub(super) output: Option<PathBuf>,
    /// A workload config file; its [mock] table sets the mock engine's parameters
    #[arg(long, env = "SAGELLM_BENCH_CONFIG", value_name = "FILE")]
    pub(super) config: Option<PathBuf>,

    /// Save this run as baseline NAME (comparing with the previous NAME first, if any)
    #[arg(long, env = "SAGELLM_BENCH_SAVE_BASELINE", value_name = "NAME", value_parser = baseline_name)]
    pub(super) save_baseline: Option<String>,
    /// Compare with baseline NAME, without overwriting it
    #[arg(
        long,
        env = "SAGELLM_BENCH_BASELINE",
        value_name = "NAME",
        value_parser = baseline_name,
        conflicts_with = "save_baseline"
    )]
    pub(super) baseline: Option<String>,
    /// Do not run: compare the saved baseline NAME with --baseline
    #[arg(
        long,
        env = "SAGELLM_BENCH_LOAD_BASELINE",
        value_name = "NAME",
        value_parser = baseline_name,
        requires = "baseline"
    )]
    pub(super) load_baseline: Option<String>,
    /// Exit with status 1 when any metric regressed
    #[arg(long, env = "SAGELLM_BENCH_FAIL_ON_REGRESSION")]
    pub(super) fail_on_regression: bool,
    /// Changes smaller than this fraction are noise
    #[arg(long, env = "SAGELLM_BENCH_NOISE_THRESHOLD", default_value_t = 0.02)]
    pub(super) noise_threshold: f64,
    /// Run the selected workloads N times, each run in <output>/runs/run_<i>/, and write
    /// runs/repeats.json: each figure's mean, 95% interval and CV (as `sagellm-benchmark run
    /// --num-runs`); overrides the workloads' `num_runs`. Saves and compares no baseline
    #[arg(long, env = "SAGELLM_BENCH_NUM_RUNS", value_name = "N", value_parser = clap::value_parser!(u64).range(1..=crate::run::repeat::MAX_RUNS as u64))]
    pub(super) num_runs: Option<u64>,

    /// With several runs: the CV above which a figure is flagged as noisy
    #[arg(long, env = "SAGELLM_BENCH_CV_BOUND", default_value_t = crate::results::repeats::DEFAULT_CV_BOUND, value_name = "FRACTION")]
    pub(super) cv_bound: f64,

    /// Instead of one run: search each selected workload's largest concurrency in LOW..HIGH
    /// meeting its objectives (`--goodput` or the workload's `goodput`), as `sagellm-benchmark
    /// search` does, into <output>/search/<workload>/
    #[arg(long, env = "SAGELLM_BENCH_SEARCH_CONCURRENCY", value_name = "LOW..HIGH", value_parser = crate::run::search::parse_range, conflicts_with = "search_rate")]
    pub(super) search_concurrency: Option<(f64, f64)>,

    /// As --search-concurrency, over an open loop's rate (the workload's arrival spacing, or
    /// Poisson)
    #[arg(long, env = "SAGELLM_BENCH_SEARCH_RATE", value_name = "LOW..HIGH", value_parser = crate::run::search::parse_range)]
    pub(super) search_rate: Option<(f64, f64)>,

    /// The search's objectives, e.g. ttft:200,e2el:5000 (overrides the workloads' `goodput`)
    #[arg(long, env = "SAGELLM_BENCH_GOODPUT", value_name = "SLOS", value_parser = crate::workload::slo::Slo::parse)]
    pub(super) goodput: Option<crate::workload::slo::Slo>,

    /// The share of requests that must meet every objective for a load to pass
    #[arg(
        long,
        env = "SAGELLM_BENCH_SLO_FRACTION",
        default_value_t = 0.95,
        value_name = "FRACTION"
    )]
    pub(super) slo_fraction: f64,

    /// The highest error rate a passing load may have
    #[arg(
        long,
        env = "SAGELLM_BENCH_MAX_ERROR_RATE",
        default_value_t = 0.05,
        value_name = "FRACTION"
    )]
    pub(super) max_error_rate: f64,

    /// How close the search's answer must come (a number, or a percentage such as 5%)
    #[arg(long, env = "SAGELLM_BENCH_SEARCH_STEP", value_name = "STEP", value_parser = crate::run::search::Step::parse)]
    pub(super) search_step: Option<crate::run::search::Step>,

    /// The most probes per search
    #[arg(
        long,
        env = "SAGELLM_BENCH_MAX_PROBES",
        default_value_t = 16,
        value_name = "N"
    )]
    pub(super) max_probes: usize,

    /// Do not print the results
    #[arg(long, short)]
    pub(super) quiet: bool,

    /// Print the full results table and every baseline comparison in full, instead of a line
    /// per workload
    #[arg(long, short, conflicts_with = "quiet")]
    pub(super) verbose: bool,

    // Accepted for libtest compatibility (cargo test, nextest, IDEs pass them); no effect.
    #[arg(long, hide = true)]
    pub(super) nocapture: bool,
    #[arg(long, hide = true)]
    pub(super) show_output: bool,
    #[arg(long, hide = true)]
    pub(super) test_threads: Option<String>,
    #[arg(long, hide = true)]
    pub(super) color: Option<String>,
    #[arg(long = "Z", short = 'Z', hide = true)]
    pub(super) unstable: Option<String>,
    #[arg(long, hide = true)]
    pub(super) report_time: bool,
}

impl Args {
    /// Whether a workload for `backend` (its `backend = "..."` option) runs in this run: in
    /// bench mode only on that backend; a smoke test runs every workload on the mock.
    pub(super) fn bench_backend_fits(&self, backend: Option<&str>) -> bool {
        !self.bench || backend.map_or(true, |name| name == self.backend.backend.as_str())
    }
}

/// How `--list` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum ListFormat {
    Pretty,
    Terse,
}

/// A baseline name becomes a folder beside each workload's `new/`: one plain path component.
pub(super) fn baseline_name(name: &str) -> Result<String, String> {
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
pub(super) fn command() -> clap::Command {
    let backend_flags = BackendArgs::augment_args(clap::Command::new("backend"));
    backend_flags
        .get_arguments()
        .map(|arg| arg.get_id().to_string())
        .fold(Args::command(), |command, id| {
            let variable = format!("SAGELLM_BENCH_{}", id.to_ascii_uppercase());
            command.mut_arg(id, |arg| arg.env(variable))
        })
}
