//! `sagellm-benchmark`: the command-line door into sagellm-bench. Thin: parse flags, build the
//! backend and workloads, hand them to the library's runner and reporters.
//!
//! It lives in the library (feature `cli`) so that a crate with engines of its own can offer
//! the whole command line with them: its binary calls [`main`], and every backend it registers
//! with `#[crate::backend]` is one more `--backend` value.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::compare::baseline;
use crate::report::files::SavedRun;
use crate::report::names::{self, SUMMARY_FILE};
use crate::report::progress::ProgressBars;
use crate::report::table::TablePrinter;
use crate::report::{export, html, markdown, table, Reports};
use crate::results::catalogue::Better;
use crate::results::summary::{Provenance, Summary};
use crate::run::args::BackendArgs;
use crate::run::config::Config;
use crate::run::interrupt::Interrupt;
use crate::run::runner::RunControl;
use crate::workload::Workload;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "sagellm-benchmark",
    version,
    about = "Benchmark LLM inference engines: time to first token, time between tokens, throughput, memory and KV-cache figures",
    long_about = None,
    after_help = "Examples:\n  sagellm-benchmark run --workload year1 --backend mock\n  sagellm-benchmark run --workload stress --backend mock -v -o ./my_results\n  sagellm-benchmark run --workload short --backend mock --num-runs 5\n  sagellm-benchmark search --backend vllm --workload short --num-requests 200 --concurrency 1..256 --goodput ttft:500,tbt:50\n  sagellm-benchmark report --format markdown > REPORT.md\n  sagellm-benchmark report --format html"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run benchmark workloads and write the JSON results
    #[command(
        after_help = "Files written to the output directory:\n  <workload>_metrics.json    every aggregate of one workload\n  <workload>_requests.jsonl  one raw record per request\n  benchmark_summary.json     all workloads, overall counts, provenance\n  *.svg                      charts of each workload and of the run\n  index.html                 the report: tables, charts, provenance (opens from disk)\n\nWorkloads (Year 1):\n  short   short_input: 128 prompt / 128 output tokens, 5 sequential requests\n  long    long_input:  200 prompt / 200 output tokens, 3 sequential requests\n  stress  stress_test: 256 prompt / 256 output tokens, 10 concurrent requests\n\nLoad shapes and sweeps (one run, one folder, one table):\n  sagellm-benchmark run --backend vllm --workload short --concurrency 1,4,16 --num-requests 64\n  sagellm-benchmark run --backend vllm --workload short --request-rate 1,2,4,8 --arrival constant\n\nMulti-turn sessions and trace replay:\n  sagellm-benchmark run --backend mock --workload short --sessions 8 --turns 4 --concurrency 4 --think-time exp:500\n  sagellm-benchmark run --backend mock --workload short --trace mooncake examples/traces/mooncake_small.jsonl\n\nRepeated runs (each in <output>/run_<i>/; repeats.json: mean, 95% CI (Student t) and CV per figure):\n  sagellm-benchmark run --backend vllm --workload short --num-runs 5\n\nSteady state: the steady_* figures cover only the window in which the load is at its target\n(closed loop: 95% of the workers in flight; open loop: first completion to last send)"
    )]
    Run(RunArgs),
    /// Find the largest load (concurrency or request rate) that meets latency objectives
    #[command(
        after_help = "Every probe is a whole run, kept in <output>/probes/<workload>_c<N>/ (or _r<RATE>/); \
<output>/search.json holds the answer and every probe, <output>/search_capacity.svg the chart.\n\n\
A probe passes when at least --slo-fraction of its requests succeed and meet every --goodput objective \
and its error rate is at most --max-error-rate; it stops early once it can no longer pass. The search \
probes the range's low end, doubles until a probe fails, then bisects until the largest passing and the \
first failing load are --search-step apart.\n\n\
Examples:\n  sagellm-benchmark search --backend vllm --workload short --num-requests 200 \\\n      --concurrency 1..256 --goodput ttft:500,tbt:50 --slo-fraction 0.95\n  \
sagellm-benchmark search --backend mock --workload short --num-requests 100 \\\n      --request-rate 1..64 --arrival constant --goodput e2el:3000 --search-step 10%\n\n\
Exit status: 0 the capacity was found (or the whole range passed), 1 no load in the range passed or \
an error, 130 interrupted (search.json says where it stopped)."
    )]
    Search(SearchArgs),
    /// Print a report from saved results
    Report(ReportArgs),
    /// Run the same workloads against several servers (or load saved results) and write
    /// comparison.json and comparison.md side by side
    #[command(
        after_help = "Examples:\n  sagellm-benchmark compare --target vllm=http://127.0.0.1:8000 --target sglang=http://127.0.0.1:30000 --workload short\n  sagellm-benchmark compare --result before=./run_a --result after=./run_b\n\nEach target's own results go to <output>/<NAME>/; relative differences are to the first target."
    )]
    Compare(CompareArgs),
    /// Merge the result folders of a run's shards (run --shard K/N) into one, recomputed from
    /// their request records
    #[command(
        after_help = "Example:\n  sagellm-benchmark run --backend vllm --shard 0/2 --barrier /shared/run1 -o /shared/run1/shard-{shard}   # on two hosts,\n  sagellm-benchmark run --backend vllm --shard 1/2 --barrier /shared/run1 -o /shared/run1/shard-{shard}   # or as an Indexed Job\n  sagellm-benchmark merge /shared/run1/shard-* -o /shared/run1/merged\n\nShards of different runs are refused; missing and unfinished shards are named, and what the others recorded is merged, marked incomplete."
    )]
    Merge(MergeArgs),
}

// Help headings: every flag of a command under one of these (or its flattened group's own), so
// that none lands under the heading of the group flattened before it.
const RUN: &str = "Run";
const OUTPUT: &str = "Output";
const TARGETS: &str = "Targets";
const INPUT: &str = "Input";
const BASELINE: &str = "Baseline (report --baseline)";

#[derive(clap::Args)]
struct MergeArgs {
    /// The shards' result folders
    #[arg(required = true, value_name = "DIR")]
    shards: Vec<PathBuf>,

    /// Folder to write the merged results into
    #[arg(short, long, default_value = "./benchmark_results/merged")]
    output: PathBuf,

    /// Do not print the merged table
    #[arg(short, long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct CompareArgs {
    /// A server to benchmark, as NAME=URL (repeat; the first is the reference)
    #[arg(long = "target", value_name = "NAME=URL", help_heading = TARGETS)]
    targets: Vec<String>,

    /// Saved results to compare without re-running, as NAME=DIR (a run's output folder)
    #[arg(long = "result", value_name = "NAME=DIR", help_heading = TARGETS)]
    results: Vec<String>,

    /// Workloads to run against each target (as for `run`)
    #[arg(long, default_value = "year1", value_name = "WORKLOAD", help_heading = RUN)]
    workload: String,

    /// The server preset and its settings: the flags of `run`, with --backend defaulting to
    /// openai (see `command`)
    #[command(flatten)]
    backend: BackendArgs,

    /// Output directory
    #[arg(short, long, default_value = "./comparison_results", help_heading = OUTPUT)]
    output: PathBuf,

    /// Workload config file (TOML), as for `run`
    #[arg(long, value_name = "FILE", help_heading = RUN)]
    config: Option<PathBuf>,

    /// Latency objectives for goodput, as for `run` (e.g. ttft:200,tbt:50,e2el:5000)
    #[arg(long, value_name = "SLOS", value_parser = crate::workload::slo::Slo::parse, help_heading = RUN)]
    goodput: Option<crate::workload::slo::Slo>,

    /// Enable verbose (debug) logging on stderr
    #[arg(short, long, help_heading = OUTPUT)]
    verbose: bool,

    /// Do not print the comparison
    #[arg(short, long, help_heading = OUTPUT)]
    quiet: bool,

    /// After Ctrl-C or SIGTERM, how long requests in flight may take to finish; then the
    /// targets measured so far are compared and written (a second signal stops at once)
    #[arg(long, default_value_t = 30.0, value_name = "SECS", value_parser = non_negative_seconds, help_heading = RUN)]
    grace_period: f64,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Workloads to run: year1 (short, long and stress), short, long, stress, all (year1 plus
    /// every workload in --config), or a comma-separated list of workload names
    #[arg(long, default_value = "year1", value_name = "WORKLOAD", help_heading = RUN)]
    workload: String,

    #[command(flatten)]
    backend: BackendArgs,

    /// Output directory
    #[arg(short, long, default_value = "./benchmark_results", help_heading = OUTPUT)]
    output: PathBuf,

    /// Workload config file (TOML): override preset fields, define workloads, set the mock
    /// engine's parameters. See docs/CONFIG.md
    #[arg(long, value_name = "FILE", help_heading = RUN)]
    config: Option<PathBuf>,

    /// Enable verbose (debug) logging on stderr
    #[arg(short, long, help_heading = OUTPUT)]
    verbose: bool,

    /// Do not print the results table or the progress bars
    #[arg(short, long, help_heading = OUTPUT)]
    quiet: bool,

    /// After Ctrl-C or SIGTERM, how long requests in flight may take to finish before the
    /// results are written without them (a second signal stops at once)
    #[arg(long, default_value_t = 30.0, value_name = "SECS", value_parser = non_negative_seconds, help_heading = RUN)]
    grace_period: f64,

    #[command(flatten)]
    load: LoadArgs,

    #[command(flatten)]
    repeats: RepeatArgs,

    #[command(flatten)]
    shard: ShardArgs,
}

/// One shard of a run that several client processes send together.
#[derive(clap::Args)]
#[command(next_help_heading = "Shards: one run from several client processes (docs/SHARDS.md)")]
struct ShardArgs {
    /// Send only shard K of N of every workload: requests i with i mod N = K (whole sessions
    /// for --sessions), concurrency divided among the shards, open-loop times kept. `auto`
    /// reads a Kubernetes Indexed Job's JOB_COMPLETION_INDEX (with --shard-count) or Slurm's
    /// SLURM_PROCID and SLURM_NTASKS. Merge the shards' folders with `sagellm-benchmark merge`
    #[arg(long, value_name = "K/N|auto")]
    shard: Option<String>,

    /// The number of shards, for --shard auto under a Kubernetes Indexed Job (its completions)
    #[arg(long, value_name = "N")]
    shard_count: Option<usize>,

    /// Start the measured run at this Unix time (seconds), so that shards begin together
    #[arg(
        long,
        value_name = "UNIX_TIME",
        requires = "shard",
        conflicts_with = "barrier"
    )]
    start_at: Option<f64>,

    /// Start once every shard has written its file into this directory (a volume all shards
    /// mount); a fresh directory per run
    #[arg(long, value_name = "DIR", requires = "shard")]
    barrier: Option<PathBuf>,

    /// How long to wait at the --barrier for the other shards
    #[arg(long, value_name = "SECS", default_value_t = 600.0, value_parser = non_negative_seconds)]
    barrier_timeout: f64,
}

impl ShardArgs {
    /// The shard this process sends, if any.
    fn shard(&self) -> Result<Option<crate::workload::shard::Shard>, String> {
        use crate::workload::shard::Shard;
        match self.shard.as_deref() {
            None => {
                if self.shard_count.is_some() {
                    return Err("--shard-count is for --shard auto".into());
                }
                Ok(None)
            }
            Some("auto") => match Shard::from_env(self.shard_count)? {
                Some(shard) => Ok(Some(shard)),
                None => Err(
                    "--shard auto found neither JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) nor SLURM_PROCID and SLURM_NTASKS; give --shard K/N"
                        .into(),
                ),
            },
            Some(given) => {
                if self.shard_count.is_some() {
                    return Err("--shard-count is for --shard auto; K/N already gives N".into());
                }
                Shard::parse(given).map(Some).map_err(|e| format!("--shard: {e}"))
            }
        }
    }
}

/// Repetitions of the whole run.
#[derive(clap::Args)]
#[command(next_help_heading = "Repeated runs")]
struct RepeatArgs {
    /// Run everything N times, each run in <output>/run_<i>/, and write repeats.json: per
    /// workload and figure, the mean over runs, its 95% confidence interval (Student t) and the
    /// coefficient of variation, flagging figures whose CV is above --cv-bound
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=crate::run::repeat::MAX_RUNS as u64))]
    num_runs: u64,

    /// With --num-runs: the CV above which a figure is flagged as noisy
    #[arg(long, default_value_t = crate::results::repeats::DEFAULT_CV_BOUND, value_name = "FRACTION", value_parser = cv_bound)]
    cv_bound: f64,
}

fn cv_bound(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "`{text}` is not a CV bound; give a positive fraction, e.g. 0.05 for 5%"
        )),
    }
}

#[derive(clap::Args)]
struct SearchArgs {
    /// The one workload to search with: short, long, stress or a workload name from --config
    #[arg(long, default_value = "short", value_name = "WORKLOAD", help_heading = RUN)]
    workload: String,

    #[command(flatten)]
    backend: BackendArgs,

    /// Output directory: search.json, the chart, and probes/<probe>/ for every probe
    #[arg(short, long, default_value = "./search_results", help_heading = OUTPUT)]
    output: PathBuf,

    /// Workload config file (TOML), as for `run`
    #[arg(long, value_name = "FILE", help_heading = RUN)]
    config: Option<PathBuf>,

    /// Enable verbose (debug) logging on stderr
    #[arg(short, long, help_heading = OUTPUT)]
    verbose: bool,

    /// Print only the answer, not a line per probe or the progress bars
    #[arg(short, long, help_heading = OUTPUT)]
    quiet: bool,

    /// After Ctrl-C or SIGTERM, how long requests in flight may take to finish; the probes so
    /// far are kept and search.json says where the search stopped
    #[arg(long, default_value_t = 30.0, value_name = "SECS", value_parser = non_negative_seconds, help_heading = RUN)]
    grace_period: f64,

    #[command(flatten)]
    search: SearchRange,
}

/// What the search varies and what a probe must meet.
#[derive(clap::Args)]
#[command(next_help_heading = "Search")]
struct SearchRange {
    /// Search a closed loop's concurrency over LOW..HIGH, e.g. 1..256
    #[arg(long, value_name = "LOW..HIGH", value_parser = search_range, required_unless_present = "request_rate", conflicts_with = "request_rate")]
    concurrency: Option<(f64, f64)>,

    /// Search an open loop's rate (requests per second) over LOW..HIGH, e.g. 0.5..64
    #[arg(long, value_name = "LOW..HIGH", value_parser = search_range)]
    request_rate: Option<(f64, f64)>,

    /// How --request-rate spaces requests: poisson or constant [default: poisson]
    #[arg(long, value_enum, requires = "request_rate")]
    arrival: Option<ArrivalArg>,

    /// Latency objectives in ms, e.g. ttft:200,tbt:50,e2el:5000 (any subset; as for `run`)
    #[arg(long, value_name = "SLOS", value_parser = crate::workload::slo::Slo::parse, required = true)]
    goodput: Option<crate::workload::slo::Slo>,

    /// The share of requests that must succeed and meet every objective for a load to pass
    /// (0.95: 95% of them, so each objective's p95 is within its limit)
    #[arg(long, default_value_t = 0.95, value_name = "FRACTION")]
    slo_fraction: f64,

    /// The highest error rate a passing load may have
    #[arg(long, default_value_t = 0.05, value_name = "FRACTION")]
    max_error_rate: f64,

    /// Stop when the largest passing and the first failing load are this close: a number in
    /// the load's unit, or a percentage of the passing load [default: 1 for --concurrency, 5%
    /// for --request-rate]
    #[arg(long, value_name = "STEP", value_parser = crate::run::search::Step::parse)]
    search_step: Option<crate::run::search::Step>,

    /// The most probes to run
    #[arg(long, default_value_t = 16, value_name = "N")]
    max_probes: usize,

    /// The longest the whole search may take; a probe running then is stopped, and the answer
    /// is what the probes so far show
    #[arg(long, value_name = "SECS", value_parser = non_negative_seconds)]
    max_search_time: Option<f64>,

    /// Measured requests per probe (more make each verdict surer)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=crate::workload::MAX_REQUESTS as u64))]
    num_requests: Option<u64>,

    /// Seed of the prompts and of the Poisson schedule
    #[arg(long, value_name = "N")]
    seed: Option<u64>,

    /// Real prompts instead of synthetic ones, as for `run`: sharegpt FILE or jsonl FILE
    #[arg(long, num_args = 2, value_names = ["KIND", "FILE"])]
    dataset: Option<Vec<String>>,
}

fn search_range(text: &str) -> Result<(f64, f64), String> {
    crate::run::search::parse_range(text)
}

/// Load shape over every selected workload (overrides the presets and --config).
#[derive(clap::Args)]
#[command(next_help_heading = "Load shape (overrides the workloads' own values)")]
#[command(group = clap::ArgGroup::new("open_rate").args(["request_rate", "ramp_up_strategy"]).multiple(false))]
struct LoadArgs {
    /// Measured requests per workload (vLLM's --num-prompts)
    #[arg(long, visible_alias = "num-prompts", value_name = "N", value_parser = clap::value_parser!(u64).range(1..=crate::workload::MAX_REQUESTS as u64))]
    num_requests: Option<u64>,

    /// Closed loop: keep this many requests in flight. A list (1,4,16) is a sweep: each
    /// workload runs once per value, named <workload>_c<N>
    #[arg(long, value_name = "LIST", value_parser = concurrency_list, conflicts_with = "request_rate")]
    concurrency: Option<Sweep<usize>>,

    /// Open loop: start requests at this rate (requests per second) whatever the server is
    /// doing, and record each one's scheduling lag. A list (1,2.5,10) is a sweep: each workload
    /// runs once per value, named <workload>_r<RATE>
    #[arg(long, value_name = "LIST", value_parser = rate_list)]
    request_rate: Option<Sweep<f64>>,

    /// How --request-rate spaces requests: poisson (random gaps averaging 1/rate, as vLLM's
    /// --request-rate) or constant (one every 1/rate seconds) [default: poisson]
    #[arg(long, value_enum, requires = "open_rate")]
    arrival: Option<ArrivalArg>,

    /// At most C requests in flight (vLLM's --max-concurrency). With --request-rate, a ramp
    /// or a --trace: an open loop whose request, when its time comes with C in flight, waits
    /// for one to finish and is sent then (its TTFT and start count from then, as vLLM's; the
    /// wait is in its scheduling lag, and capped_requests counts such requests). Alone: C in
    /// flight all the time, the same as --concurrency C (vLLM's default rate is infinite)
    #[arg(long, value_name = "C", value_parser = clap::value_parser!(u64).range(1..=crate::workload::MAX_REQUESTS as u64))]
    max_concurrency: Option<u64>,

    /// Gamma-distributed gaps for --request-rate or a ramp (vLLM's --burstiness): shape B,
    /// mean 1/rate, seeded by --seed. 1 is Poisson, below 1 burstier, above 1 steadier
    #[arg(long, value_name = "B")]
    burstiness: Option<f64>,

    /// Ramp the open loop's rate from --ramp-up-start-rps to --ramp-up-end-rps over each
    /// workload's requests: linear or exponential (vLLM's flags; see docs/WORKLOADS.md). The
    /// gaps are Poisson unless --arrival constant or --burstiness
    #[arg(long, value_enum, value_name = "STRATEGY", requires_all = ["ramp_up_start_rps", "ramp_up_end_rps"])]
    ramp_up_strategy: Option<RampArg>,

    /// The ramp's first rate, requests per second
    #[arg(long, value_name = "RPS", requires = "ramp_up_strategy")]
    ramp_up_start_rps: Option<f64>,

    /// The ramp's last rate, requests per second
    #[arg(long, value_name = "RPS", requires = "ramp_up_strategy")]
    ramp_up_end_rps: Option<f64>,

    /// More percentiles of TTFT, TPOT, ITL and E2E latency, e.g. 50,90,99.9 (vLLM's
    /// --metric-percentiles): each one p<P>_<metric>_ms in the metrics JSON (p90_ttft_ms), and
    /// a row in the table and reports. p50, p95 and p99 are always there
    #[arg(long, visible_alias = "metric-percentiles", value_name = "LIST", value_parser = percentile_list)]
    percentiles: Option<Sweep<f64>>,

    // vLLM's names of what this tool does its own way: each gives the flag to type instead.
    #[arg(long, hide = true)]
    save_result: bool,
    #[arg(long, hide = true, value_name = "DIR")]
    result_dir: Option<String>,
    #[arg(long, hide = true, value_name = "FILE")]
    result_filename: Option<String>,
    #[arg(long, hide = true, value_name = "NAME")]
    dataset_name: Option<String>,
    #[arg(long, hide = true, value_name = "FILE")]
    dataset_path: Option<String>,

    /// Seed of the prompts and of the Poisson schedule
    #[arg(long, value_name = "N")]
    seed: Option<u64>,

    /// Real prompts for every workload instead of synthetic ones: `sharegpt FILE` (a ShareGPT
    /// JSON array; each conversation's first human turn) or `jsonl FILE` (one {"prompt": "..."}
    /// per line). Requests cycle through them in order; prompt lengths are the prompts' own
    /// (vLLM's --dataset-name and --dataset-path in one flag)
    #[arg(long, num_args = 2, value_names = ["KIND", "FILE"])]
    dataset: Option<Vec<String>>,

    /// Multi-turn: run each workload as N sessions of --turns turns. Each turn sends the
    /// whole conversation so far (earlier messages and the answers the backend gave) plus a
    /// new user message of the workload's prompt length, so a prefix cache can serve the
    /// history. --concurrency counts sessions in flight; --request-rate starts sessions. With
    /// --dataset, user messages come from its conversations (every human turn of a ShareGPT
    /// file; jsonl: one {"messages": [...]} per line). See docs/WORKLOADS.md
    #[arg(long, value_name = "N", help_heading = "Multi-turn sessions", value_parser = clap::value_parser!(u64).range(1..=crate::workload::MAX_REQUESTS as u64))]
    sessions: Option<u64>,

    /// Turns of each session (at most, for --dataset conversations) [default: 4]
    #[arg(long, value_name = "N", requires = "sessions", help_heading = "Multi-turn sessions", value_parser = clap::value_parser!(u64).range(1..=crate::workload::session::MAX_TURNS as u64))]
    turns: Option<u64>,

    /// Pause between an answer and the session's next turn: MS fixed, or exp:MS exponential
    /// with that mean, seeded [default: 0]
    #[arg(long, value_name = "MS", requires = "sessions", help_heading = "Multi-turn sessions", value_parser = crate::workload::session::ThinkTime::parse)]
    think_time: Option<crate::workload::session::ThinkTime>,

    /// Words of a system prompt each synthetic session starts with and keeps, each session's
    /// own unless --shared-system-prompt [default: 0]
    #[arg(long, value_name = "N", requires = "sessions", help_heading = "Multi-turn sessions", value_parser = clap::value_parser!(u64).range(0..=crate::workload::MAX_TOKENS as u64))]
    system_prompt_tokens: Option<u64>,

    /// Give every session the same system prompt (one application's), so a prefix cache
    /// shares it across sessions too
    #[arg(
        long,
        requires = "system_prompt_tokens",
        help_heading = "Multi-turn sessions"
    )]
    shared_system_prompt: bool,

    /// Replay a timestamped trace instead of the workloads' own requests: `mooncake FILE`
    /// ({"timestamp": MS, "input_length", "output_length", "hash_ids"} per line; equal hash ids
    /// share prompt blocks) or `jsonl FILE` ({"timestamp_ms", "prompt" or "prompt_tokens",
    /// "output_tokens", "session_id"} per line). Each request's replay lag is recorded and a
    /// client that falls behind is flagged. See docs/WORKLOADS.md
    #[arg(long, num_args = 2, value_names = ["FORMAT", "FILE"], help_heading = "Trace replay")]
    trace: Option<Vec<String>>,

    /// Replay the trace this many times faster (2) or slower (0.5) than recorded [default: 1]
    #[arg(
        long,
        value_name = "X",
        requires = "trace",
        help_heading = "Trace replay"
    )]
    trace_speed: Option<f64>,

    /// Cut idle gaps between consecutive trace requests to at most this many seconds
    #[arg(long, value_name = "SECS", requires = "trace", help_heading = "Trace replay", value_parser = non_negative_seconds)]
    trace_max_gap: Option<f64>,

    /// Replay only the trace's requests within START..END seconds of its start (60..120, ..30)
    #[arg(long, value_name = "START..END", requires = "trace", help_heading = "Trace replay", value_parser = crate::workload::trace::parse_window)]
    trace_window: Option<(std::time::Duration, std::time::Duration)>,

    /// Prompt tokens one mooncake hash id stands for [default: 512, the published traces']
    #[arg(long, value_name = "N", requires = "trace", help_heading = "Trace replay", value_parser = clap::value_parser!(u64).range(1..=crate::workload::MAX_TOKENS as u64))]
    trace_block_size: Option<u64>,

    /// Latency objectives in ms, e.g. ttft:200,tbt:50,e2el:5000 (any subset): adds goodput,
    /// the successful requests meeting every one, per second and as a fraction of all requests.
    /// tbt is what vLLM's --goodput calls tpot
    #[arg(long, value_name = "SLOS", value_parser = crate::workload::slo::Slo::parse)]
    goodput: Option<crate::workload::slo::Slo>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ArrivalArg {
    /// Exponential gaps, seeded: the bursts of independent users
    Poisson,
    /// Evenly spaced: request i at i/rate seconds
    Constant,
}

#[derive(Clone, Copy, ValueEnum)]
enum RampArg {
    /// The rate grows by the same step each request
    Linear,
    /// The rate grows by the same factor each request
    Exponential,
}

/// A comma-separated list of percentiles, each above 0 and at most 100.
fn percentile_list(text: &str) -> Result<Sweep<f64>, String> {
    sweep(text, "50,90,99", |part| match part.parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
        _ => Err(format!(
            "`{part}` is not a percentile; give numbers above 0 and at most 100, e.g. 50,90,99.9"
        )),
    })
}

/// The prompts `--dataset KIND FILE` names.
fn dataset(given: &[String]) -> Result<crate::Prompts, String> {
    use crate::Prompts;
    let (kind, file) = dataset_kind_and_file(given)?;
    let loaded = match kind {
        "sharegpt" => Prompts::sharegpt(file),
        "jsonl" => Prompts::jsonl(file),
        other => {
            return Err(format!(
                "--dataset: `{other}` is not a dataset kind; give sharegpt FILE (a ShareGPT JSON array) or jsonl FILE (one {{\"prompt\": \"...\"}} per line)"
            ))
        }
    };
    loaded.map_err(|e| format!("--dataset: {e}"))
}

/// A comma-separated list of load values, each checked, none repeated.
#[derive(Clone, Debug)]
struct Sweep<T>(Vec<T>);

/// Splits a comma-separated list, checking each item with `item` and refusing repeats.
fn sweep<T: PartialEq + std::fmt::Display>(
    text: &str,
    example: &str,
    item: impl Fn(&str) -> Result<T, String>,
) -> Result<Sweep<T>, String> {
    let mut values: Vec<T> = Vec::new();
    for part in text.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!(
                "`{text}` holds an empty item; give values separated by single commas, e.g. {example}"
            ));
        }
        let value = item(part)?;
        if values.contains(&value) {
            return Err(format!(
                "`{text}` lists {value} twice; each value is one run"
            ));
        }
        values.push(value);
    }
    Ok(Sweep(values))
}

fn concurrency_list(text: &str) -> Result<Sweep<usize>, String> {
    sweep(text, "1,4,16", |part| match part.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "`{part}` is not a concurrency; give whole numbers of at least 1, e.g. 1,4,16"
        )),
    })
}

fn rate_list(text: &str) -> Result<Sweep<f64>, String> {
    use crate::workload::MIN_RATE;
    sweep(text, "1,2.5,10", |part| {
        match part.parse::<f64>() {
        Ok(rate) if rate == f64::INFINITY => Err(
            "`inf`: vLLM's --request-rate inf (every request at once, up to --max-concurrency) is a closed loop here: give --concurrency N (or --max-concurrency N) and no --request-rate"
                .to_string(),
        ),
        Ok(rate) if rate.is_finite() && rate >= MIN_RATE => Ok(rate),
        _ => Err(format!(
            "`{part}` is not a rate; give requests per second of at least {MIN_RATE}, e.g. 1,2.5,10"
        )),
    }
    })
}

impl LoadArgs {
    /// The error for a vLLM flag this tool spells its own way, naming the flag to type.
    fn vllm_flag(&self) -> Option<String> {
        if self.save_result || self.result_dir.is_some() || self.result_filename.is_some() {
            let flag = if self.save_result {
                "--save-result"
            } else if self.result_dir.is_some() {
                "--result-dir"
            } else {
                "--result-filename"
            };
            return Some(format!(
                "{flag} is vLLM's; sagellm-benchmark always saves its results, as JSON files named after each workload, in the folder --output DIR gives (default ./benchmark_results): drop {flag}{}",
                self.result_dir
                    .as_ref()
                    .map(|dir| format!(" and give --output {dir}"))
                    .unwrap_or_default()
            ));
        }
        if self.dataset_name.is_some() || self.dataset_path.is_some() {
            let kind = match self.dataset_name.as_deref() {
                Some("sharegpt") => "sharegpt",
                Some("custom") | None => "jsonl",
                Some(other) => {
                    return Some(format!(
                        "--dataset-name {other} is vLLM's; sagellm-benchmark reads --dataset sharegpt FILE or --dataset jsonl FILE (one {{\"prompt\": \"...\"}} per line), and without --dataset sends synthetic prompts of each workload's prompt_tokens (vLLM's random)"
                    ))
                }
            };
            let file = self.dataset_path.as_deref().unwrap_or("FILE");
            return Some(format!(
                "--dataset-name and --dataset-path are vLLM's; sagellm-benchmark takes both in one flag: --dataset {kind} {file}"
            ));
        }
        None
    }

    fn shape(&self) -> Result<crate::workload::load::LoadShape, String> {
        use crate::OpenLoop;
        if let Some(message) = self.vllm_flag() {
            return Err(message);
        }
        Ok(crate::workload::load::LoadShape {
            max_concurrency: self.max_concurrency.map(|c| c as usize),
            burstiness: self.burstiness,
            ramp: self.ramp_up_strategy.map(|strategy| {
                (
                    match strategy {
                        RampArg::Linear => crate::workload::RampStrategy::Linear,
                        RampArg::Exponential => crate::workload::RampStrategy::Exponential,
                    },
                    self.ramp_up_start_rps.unwrap_or_default(),
                    self.ramp_up_end_rps.unwrap_or_default(),
                )
            }),
            percentiles: self.percentiles.clone().map(|s| s.0).unwrap_or_default(),
            num_requests: self.num_requests.map(|n| n as usize),
            concurrency: self.concurrency.clone().map(|s| s.0).unwrap_or_default(),
            request_rates: self.request_rate.clone().map(|s| s.0).unwrap_or_default(),
            arrival: match self.arrival {
                None | Some(ArrivalArg::Poisson) => OpenLoop::Poisson,
                Some(ArrivalArg::Constant) => OpenLoop::Constant,
            },
            seed: self.seed,
            goodput: self.goodput,
            prompts: match self.sessions {
                Some(_) => None,
                None => self.dataset.as_deref().map(dataset).transpose()?,
            },
            sessions: self.sessions().transpose()?,
            trace: self
                .trace
                .as_deref()
                .map(|t| self.load_trace(t))
                .transpose()?,
            shard: None,
        })
    }

    /// The sessions `--sessions` and its flags ask for (`None` without `--sessions`).
    fn sessions(&self) -> Option<Result<crate::workload::session::Sessions, String>> {
        use crate::workload::session::Sessions;
        let count = self.sessions? as usize;
        let turns = self.turns.map_or(DEFAULT_TURNS, |t| t as usize);
        let mut sessions = match self.dataset.as_deref().map(conversations) {
            None => Sessions::synthetic(count, turns, 0),
            Some(Ok(conversations)) => Sessions::from_conversations(count, turns, conversations),
            Some(Err(e)) => return Some(Err(e)),
        };
        if let Some(think_time) = self.think_time {
            sessions.think_time = think_time;
        }
        if let Some(words) = self.system_prompt_tokens {
            if sessions.conversations.is_some() {
                return Some(Err(
                    "--system-prompt-tokens is for synthetic sessions; a --dataset's conversations bring their own system prompts"
                        .into(),
                ));
            }
            sessions.system_prompt_tokens = words as usize;
            sessions.system_prompt_shared = self.shared_system_prompt;
        }
        Some(Ok(sessions))
    }

    /// The trace `--trace FORMAT FILE` names, with the replay flags applied.
    fn load_trace(&self, given: &[String]) -> Result<crate::workload::trace::Trace, String> {
        use crate::workload::trace::{Trace, TraceFormat, TraceOptions};
        let [format, file] = given else {
            return Err(
                "--trace takes a format and a file, e.g. --trace mooncake trace.jsonl".into(),
            );
        };
        let format = TraceFormat::parse(format).ok_or_else(|| {
            format!("--trace: `{format}` is not a trace format; give mooncake FILE or jsonl FILE")
        })?;
        let mut options = TraceOptions {
            window: self.trace_window,
            max_gap: self.trace_max_gap.map(std::time::Duration::from_secs_f64),
            ..TraceOptions::default()
        };
        if let Some(speed) = self.trace_speed {
            options.speed = speed;
        }
        if let Some(block) = self.trace_block_size {
            options.block_size = block as usize;
        }
        Trace::load(file, format, options).map_err(|e| format!("--trace: {e}"))
    }
}

/// Turns per session when `--sessions` is given without `--turns`.
const DEFAULT_TURNS: usize = 4;

/// The two values of `--dataset KIND FILE`.
fn dataset_kind_and_file(given: &[String]) -> Result<(&str, &str), String> {
    match given {
        [kind, file] => Ok((kind, file)),
        _ => Err(
            "--dataset takes a kind and a file, e.g. --dataset sharegpt ShareGPT_V3.json".into(),
        ),
    }
}

/// The conversations `--dataset KIND FILE` names, for a multi-turn run.
fn conversations(given: &[String]) -> Result<crate::workload::session::Conversations, String> {
    use crate::workload::session::Conversations;
    let (kind, file) = dataset_kind_and_file(given)?;
    let loaded = match kind {
        "sharegpt" => Conversations::sharegpt(file),
        "jsonl" => Conversations::jsonl(file),
        other => {
            return Err(format!(
                "--dataset: `{other}` is not a dataset kind; give sharegpt FILE (a ShareGPT JSON array) or jsonl FILE (one {{\"messages\": [...]}} per line, with --sessions)"
            ))
        }
    };
    loaded.map_err(|e| format!("--dataset: {e}"))
}

#[derive(clap::Args)]
struct ReportArgs {
    /// Input summary JSON file
    #[arg(short, long, default_value_t = format!("./benchmark_results/{SUMMARY_FILE}"), help_heading = INPUT)]
    input: String,

    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table, help_heading = OUTPUT)]
    format: Format,

    /// Folder to write the HTML report into (--format html only; default: the folder of --input)
    #[arg(short, long, value_name = "DIR", help_heading = OUTPUT)]
    output: Option<PathBuf>,

    /// Compare with an earlier run: its benchmark_summary.json or its folder (the request
    /// records must lie beside it). Prints each key metric's change, a 95% confidence interval
    /// and a verdict
    #[arg(long, value_name = "OLD", help_heading = BASELINE)]
    baseline: Option<PathBuf>,

    /// With --baseline: exit with status 1 when any metric regressed
    #[arg(long, requires = "baseline", help_heading = BASELINE)]
    fail_on_regression: bool,

    /// With --baseline: changes smaller than this fraction are noise
    #[arg(long, default_value_t = 0.02, value_name = "FRACTION", help_heading = BASELINE)]
    noise_threshold: f64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Terminal table
    Table,
    /// The summary JSON
    Json,
    /// GitHub-flavoured markdown (for REPORT.md or a CI job summary), linking the SVG charts:
    /// relative to the file stdout is redirected to (`> DIR/REPORT.md`), else to the results
    /// folder
    Markdown,
    /// index.html and the SVG charts, redrawn from the saved JSON files; prints the page's path
    Html,
    /// Bencher Metric Format JSON (`bencher run --adapter json --file ...`): latencies in ns with
    /// their p50 and p99 as lower and upper values, throughputs, and every other figure
    Bencher,
    /// github-action-benchmark's `customSmallerIsBetter` JSON: the figures where lower is better
    GithubSmaller,
    /// github-action-benchmark's `customBiggerIsBetter` JSON: the figures where higher is better
    GithubBigger,
    /// A GitHub job summary (markdown, with the baseline verdicts under --baseline), appended to
    /// $GITHUB_STEP_SUMMARY when it is set, else printed
    GithubSummary,
}

/// The command line: the derived flags, with `compare`'s --backend naming a server preset.
fn command() -> clap::Command {
    Cli::command().mut_subcommand("compare", |compare| {
        compare
            .mut_arg("backend", |arg| {
                arg.default_value("openai")
                    .value_parser(crate::backend::spec::BackendName::server_parser())
                    .help("Backend preset for the targets")
            })
            .mut_arg("model", |arg| {
                arg.help("The served model name (asked from each server's /v1/models when omitted)")
            })
            // The cpu backend's flags, which no target reads (refused when given).
            .mut_arg("dtype", |arg| arg.hide(true))
            .mut_arg("threads", |arg| arg.hide(true))
    })
}

/// Runs `sagellm-benchmark` on this process's arguments: `fn main() -> ExitCode {
/// sagellm_bench::cli::main() }` is a whole binary.
pub fn main() -> ExitCode {
    if let Err(message) = crate::backend::spec::check_registered() {
        eprintln!("Error: {message}");
        return ExitCode::FAILURE;
    }
    let matches = command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let backend = match &cli.command {
        Command::Run(args) => Some(&args.backend),
        Command::Search(args) => Some(&args.backend),
        Command::Compare(args) => Some(&args.backend),
        Command::Report(_) | Command::Merge(_) => None,
    };
    if let (Some(backend), Some((name, sub))) = (backend, matches.subcommand()) {
        if let Some(misplaced) = backend.misplaced_flag(sub) {
            // The usage line of the subcommand, as clap prints it for its own errors.
            let mut command = command();
            command.build();
            let sub_command = command.find_subcommand_mut(name).cloned();
            sub_command
                .unwrap_or(command)
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("{misplaced}; drop it or choose the backend it is for"),
                )
                .exit()
        }
    }
    // As vLLM and SGLang do: every connection to a server is a file handle, and the default
    // soft limit (often 1024) is far below what a machine allows.
    crate::run::limits::raise_open_files_limit();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Search(args) => search(args),
        Command::Merge(args) => merge(args),
        Command::Report(args) => report(args).map(|()| ExitCode::SUCCESS),
        Command::Compare(args) => compare(args),
    };
    // Whatever the command wrote after its run's reporters flushed (baselines, charts, an
    // interrupted run's files) reaches the disk before the process says it is done.
    let result = match crate::report::files::flush_to_disk() {
        Ok(()) => result,
        Err(e) => result.and(Err(e.to_string())),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("Error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn non_negative_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => Ok(s),
        _ => Err(format!(
            "`{text}` is not a number of seconds between 0 and 86400"
        )),
    }
}

/// Colour codes only for a person: stderr is a terminal and NO_COLOR (https://no-color.org) is
/// unset or empty, so a redirected `-v` log holds plain text.
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").map_or(true, |v| v.is_empty())
}

fn init_logging(verbose: bool) {
    let default = if verbose {
        "sagellm_bench=debug,sagellm_benchmark=debug"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SAGELLM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour_on_stderr())
        .init();
}

fn run(mut args: RunArgs) -> Result<ExitCode, String> {
    init_logging(args.verbose);
    let config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    let workloads = config
        .select(&args.workload)
        .map_err(|e| format!("--workload: {e}"))?;
    let shard = args.shard.shard()?;
    if shard.is_some() && args.repeats.num_runs > 1 {
        // Each repetition would need its own common start and its own merge.
        return Err(
            "--num-runs and --shard do not go together: run the sharded command once per repetition, each into its own folder, and merge each"
                .into(),
        );
    }
    let mut shape = args.load.shape()?;
    shape.shard = shard;
    let workloads = shape.apply(workloads)?;
    if let Some(shard) = shard {
        // `-o results/shard-{shard}` gives every shard its own folder from one command line.
        let shown = args.output.to_string_lossy();
        if shown.contains("{shard}") {
            args.output = PathBuf::from(shown.replace("{shard}", &shard.index.to_string()));
        }
    }
    if args.backend.backend.is_server() {
        crate::run::limits::check_connections(&workloads)?;
    }
    if args.backend.server.session_header.is_some()
        && !workloads.iter().any(Workload::has_session_ids)
    {
        return Err(
            "--session-header sends each request's session id, but no workload has sessions: add --sessions N (multi-turn), or --trace with a session_id per line"
                .into(),
        );
    }
    // Before the backend: loading a model or reaching a server can take a while. Held to the
    // end: no other run writes into this folder meanwhile.
    let folder = crate::report::files::claim(&args.output).map_err(|e| e.to_string())?;
    if let Some((aside, count)) = folder.moved_aside() {
        eprintln!(
            "The earlier run's {count} files in {} were moved to {}",
            args.output.display(),
            aside.display()
        );
    }
    let spec = args.backend.spec(&config).map_err(|e| e.to_string())?;
    let backend = spec.build().map_err(|e| e.to_string())?;
    let provenance = Provenance::now(backend.name(), backend.model(), backend.settings());
    tracing::debug!(
        workloads = %workloads.iter().map(|w| w.name.as_str()).collect::<Vec<_>>().join(","),
        "running"
    );
    if args.repeats.num_runs > 1 {
        return run_repeated(&args, backend, &workloads, provenance);
    }

    let mut reports = Reports::files(&args.output);
    if !args.quiet {
        // Debug logging writes a line per request to stderr, which would tear the bars apart.
        if !args.verbose {
            reports.push(Box::new(ProgressBars::on_stderr()));
        }
        reports.push(Box::new(TablePrinter));
    }
    let control = RunControl {
        interrupt: Interrupt::on_signals()
            .map_err(|e| format!("cannot listen for SIGINT and SIGTERM: {e}"))?,
        grace: std::time::Duration::from_secs_f64(args.grace_period),
    };
    let shard_info = match shard {
        Some(shard) => {
            let virtual_clock = matches!(backend.clock(), crate::Clock::Virtual(_));
            Some(start_shard(
                shard,
                &args,
                &workloads,
                &control,
                virtual_clock,
            )?)
        }
        None => None,
    };
    let summary = crate::run_with(backend, &workloads, provenance, &mut reports, &control)
        .map_err(|e| e.to_string())?;
    if let Some(mut info) = shard_info {
        info.finished = summary.complete;
        crate::run::shard::write_info(&args.output, &info)?;
    }
    if !summary.complete {
        eprintln!(
            "Run incomplete ({}): {} of {} workloads, {} requests recorded in {}",
            summary
                .incomplete_reason
                .as_deref()
                .unwrap_or("stopped early"),
            summary.overall.total_workloads,
            workloads.len(),
            summary.overall.total_requests,
            args.output.display()
        );
        return Ok(ExitCode::from(130));
    }
    if !args.quiet {
        println!(
            "Results written to {} ({} workloads)",
            args.output.display(),
            summary.overall.total_workloads
        );
    }
    // A workload of which no request succeeded measured nothing: every file is written, but
    // the run fails, and says why without making the user open the records.
    if let Some(why) = crate::report::files::nothing_measured(&summary, &args.output) {
        eprintln!("Error: {why}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn search(args: SearchArgs) -> Result<ExitCode, String> {
    use crate::run::search::{Dimension, Objective, SearchSpec, Step};
    init_logging(args.verbose);
    let config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    let selected = config
        .select(&args.workload)
        .map_err(|e| format!("--workload: {e}"))?;
    let r = &args.search;
    let shape = crate::workload::load::LoadShape {
        num_requests: r.num_requests.map(|n| n as usize),
        seed: r.seed,
        prompts: r.dataset.as_deref().map(dataset).transpose()?,
        ..Default::default()
    };
    let mut selected = shape.apply(selected)?;
    if selected.len() != 1 {
        return Err(format!(
            "--workload {} selects {} workloads; a search runs one (e.g. --workload short)",
            args.workload,
            selected.len()
        ));
    }
    let workload = selected.remove(0);
    let (dimension, (low, high)) = match (r.concurrency, r.request_rate) {
        (Some(range), _) => (Dimension::Concurrency, range),
        (None, Some(range)) => (
            Dimension::rate(match r.arrival {
                None | Some(ArrivalArg::Poisson) => crate::OpenLoop::Poisson,
                Some(ArrivalArg::Constant) => crate::OpenLoop::Constant,
            }),
            range,
        ),
        (None, None) => {
            return Err("give --concurrency LOW..HIGH or --request-rate LOW..HIGH".into())
        }
    };
    let spec = SearchSpec {
        workload,
        dimension,
        low,
        high,
        objective: Objective {
            slo: r.goodput.unwrap_or_default(),
            fraction: r.slo_fraction,
            max_error_rate: r.max_error_rate,
        },
        step: r
            .search_step
            .unwrap_or_else(|| Step::default_for(dimension)),
        max_probes: r.max_probes,
        max_time: r.max_search_time.map(std::time::Duration::from_secs_f64),
    };
    spec.validate()?;
    if args.backend.backend.is_server() {
        crate::run::limits::check_connections(&[spec.probe_workload(spec.high)])?;
    }
    let _folder = crate::report::files::claim(&args.output).map_err(|e| e.to_string())?;
    let backend = args
        .backend
        .spec(&config)
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| e.to_string())?;
    let provenance = Provenance::now(backend.name(), backend.model(), backend.settings());
    let control = RunControl {
        interrupt: Interrupt::on_signals()
            .map_err(|e| format!("cannot listen for SIGINT and SIGTERM: {e}"))?,
        grace: std::time::Duration::from_secs_f64(args.grace_period),
    };
    let mut files = crate::report::search::SearchFiles::new(
        &args.output,
        !args.quiet,
        !args.quiet && !args.verbose,
    );
    if let Some(aside) = files.move_earlier_aside().map_err(|e| e.to_string())? {
        eprintln!(
            "The earlier search in {} was moved to {}",
            args.output.display(),
            aside.display()
        );
    }
    let outcome = crate::run::search::search(backend, &spec, provenance, &mut files, &control)
        .map_err(|e| e.to_string())?;
    files.finish(&outcome).map_err(|e| e.to_string())?;
    println!("{}", outcome.verdict);
    println!(
        "Search written to {} ({} probes)",
        args.output.join(names::SEARCH_FILE).display(),
        outcome.probes.len()
    );
    if control.interrupt.is_requested() {
        return Ok(ExitCode::from(130));
    }
    if outcome.largest_passing.is_none() {
        eprintln!("Error: {}", no_capacity_advice(&outcome));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// What to do when no load in the range passed: objectives no request met even at the lowest
/// load can never be met on this backend; otherwise the range starts too high.
fn no_capacity_advice(outcome: &crate::run::search::SearchOutcome) -> String {
    use crate::run::search::Dimension;
    let label = |load| outcome.dimension.label(load);
    match outcome.probes.iter().find(|p| !p.cut_short) {
        None => "no probe finished, so there is no answer".to_string(),
        // One request at a time is the least load there is: objectives it misses every time
        // no load can meet.
        Some(lowest)
            if lowest.goodput_fraction == 0.0
                && lowest.requests > 0
                && outcome.dimension == Dimension::Concurrency
                && lowest.load == 1.0 =>
        {
            format!(
                "no request met the objectives ({}) even one at a time (c1): they cannot be met on this backend; loosen --goodput",
                crate::run::search::slo_words(&outcome.objective.slo)
            )
        }
        Some(lowest) => format!(
            "the lowest load of the range, {}, already fails: start the range lower, or loosen --goodput or --slo-fraction",
            label(lowest.load)
        ),
    }
}

/// `run --num-runs N` with N > 1: every run in its own folder, then `repeats.json` and the
/// table of means, intervals and CVs.
fn run_repeated(
    args: &RunArgs,
    backend: std::sync::Arc<dyn crate::backend::Backend>,
    workloads: &[crate::Workload],
    provenance: Provenance,
) -> Result<ExitCode, String> {
    use crate::results::repeats::RepeatSummary;
    let runs = args.repeats.num_runs as usize;
    let control = RunControl {
        interrupt: Interrupt::on_signals()
            .map_err(|e| format!("cannot listen for SIGINT and SIGTERM: {e}"))?,
        grace: std::time::Duration::from_secs_f64(args.grace_period),
    };
    let bars = !args.quiet && !args.verbose;
    let mut reporter = |i: usize| -> Result<Box<dyn crate::Report>, crate::ReportError> {
        if !args.quiet {
            eprintln!("Run {i} of {runs}");
        }
        let mut reports = Reports::files(names::repeat_dir(&args.output, i));
        if bars {
            reports.push(Box::new(ProgressBars::on_stderr()));
        }
        Ok(Box::new(reports))
    };
    let repeated = crate::run::repeat::repeat(
        backend,
        workloads,
        provenance,
        runs,
        &mut reporter,
        &control,
    )
    .map_err(|e| e.to_string())?;
    let completed: Vec<(String, Summary)> = repeated
        .completed()
        .map(|(i, s)| (format!("run_{i}"), s.clone()))
        .collect();
    let mut summary = RepeatSummary::of(&completed, runs, args.repeats.cv_bound);
    summary.stopped = repeated.stopped.clone();
    crate::report::repeats::write(&args.output, &summary).map_err(|e| e.to_string())?;
    if !args.quiet {
        print!("{}", crate::report::repeats::render(&summary));
    }
    println!(
        "Repeated runs written to {} ({} of {runs} runs)",
        args.output.join(names::REPEATS_FILE).display(),
        summary.runs
    );
    if let Some(stopped) = &repeated.stopped {
        eprintln!("Repeated run incomplete: {stopped}");
        return Ok(ExitCode::from(130));
    }
    if let Some(why) =
        crate::report::files::nothing_measured_in_runs(repeated.completed(), &args.output)
    {
        eprintln!("Error: {why}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits for the shards' common start and writes this shard's `shard.json` (not finished yet,
/// so a shard killed mid-run says so).
fn start_shard(
    shard: crate::workload::shard::Shard,
    args: &RunArgs,
    workloads: &[Workload],
    control: &RunControl,
    virtual_clock: bool,
) -> Result<crate::run::shard::ShardInfo, String> {
    use crate::run::shard::{self, ShardInfo, ShardedWorkload, StartAt};
    let start = StartAt {
        unix: args.shard.start_at,
        barrier: args.shard.barrier.clone(),
        timeout: std::time::Duration::from_secs_f64(args.shard.barrier_timeout),
    };
    let started = shard::wait(shard, &start, &control.interrupt)?;
    if let Some(late) = started.late_s.filter(|l| *l > 1.0) {
        eprintln!(
            "Shard {} started {late:.1} s after the planned common start",
            shard.label()
        );
    }
    let info = ShardInfo {
        shard,
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        run: workloads.iter().map(ShardedWorkload::of).collect(),
        planned_start_unix: started.planned_unix,
        started_unix: started.started_unix,
        start_late_s: started.late_s,
        clock_offset_s: started.clock_offset_s,
        finished: false,
        virtual_clock,
    };
    shard::write_info(&args.output, &info)?;
    Ok(info)
}

fn merge(args: MergeArgs) -> Result<ExitCode, String> {
    init_logging(false);
    let mut also = Reports::default();
    if !args.quiet {
        also.push(Box::new(TablePrinter));
    }
    let (summary, found) =
        crate::report::merge::merge(&args.shards, &args.output, also).map_err(|e| e.to_string())?;
    if !found.missing.is_empty() || !found.incomplete.is_empty() {
        eprintln!(
            "Merged incompletely: {}; written to {}",
            summary
                .incomplete_reason
                .as_deref()
                .unwrap_or("shards missing"),
            args.output.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    if !args.quiet {
        println!(
            "Merged {} shards into {} (clock offsets within {:.3} s)",
            found.merged.len(),
            args.output.display(),
            found.clock_offset_spread_s
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn report(args: ReportArgs) -> Result<(), String> {
    init_logging(false);
    let input = std::path::Path::new(&args.input);
    if let Some(repeats) = repeats_file(input) {
        return report_repeats(&repeats, &args);
    }
    let folder_summary;
    let input = if input.is_dir() {
        folder_summary = summary_in(input)?;
        folder_summary.as_path()
    } else {
        input
    };
    let load = || Summary::load(input).map_err(|e| e.to_string());
    let text = match args.format {
        Format::Table => table::render(&load()?),
        Format::Markdown => {
            let results = match input.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => std::path::Path::new("."),
            };
            let written_in = stdout_file_dir().unwrap_or_else(|| results.to_path_buf());
            markdown::render_linked(&load()?, results, &written_in)
        }
        Format::Json => serde_json::to_string_pretty(&load()?).map_err(|e| e.to_string())? + "\n",
        Format::Bencher => pretty(&export::bencher(&load()?))?,
        Format::GithubSmaller => pretty(&export::github_benchmark(&load()?, Better::Lower))?,
        Format::GithubBigger => pretty(&export::github_benchmark(&load()?, Better::Higher))?,
        // Chart links would point into the runner's disk; a job summary shows only the tables.
        Format::GithubSummary => markdown::render_with_charts(&load()?, None),
        Format::Html => {
            let saved = SavedRun::load(input).map_err(|e| e.to_string())?;
            let dir = args.output.clone().unwrap_or_else(|| saved.dir.clone());
            let index = html::write_report(&dir, &saved.summary, &saved.samples)
                .map_err(|e| e.to_string())?;
            format!("HTML report written to {}\n", index.display())
        }
    };
    if let Format::GithubSummary = args.format {
        return github_summary(input, &args, text);
    }
    match &args.baseline {
        None => print!("{text}"),
        Some(old) => {
            let comparisons = compare_with_baseline(input, old, args.noise_threshold)?;
            let base_name = old.display().to_string();
            match args.format {
                Format::Json => {
                    let value =
                        serde_json::json!({ "baseline": base_name, "comparisons": comparisons });
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?
                    );
                }
                Format::Markdown => print!(
                    "{text}\n{}",
                    baseline::render_markdown(&comparisons, &base_name)
                ),
                _ => print!("{text}{}", baseline::render(&comparisons, &base_name)),
            }
            let regressed = baseline::regressed(&comparisons);
            if args.fail_on_regression && !regressed.is_empty() {
                return Err(format!("regressed: {}", regressed.join(", ")));
            }
        }
    }
    Ok(())
}

/// The folder of the file stdout is redirected to (`report --format markdown > DIR/REPORT.md`),
/// so the markdown's chart links resolve from where it is written; `None` for a terminal, a
/// pipe, or where the platform does not say (Linux's /proc does).
fn stdout_file_dir() -> Option<PathBuf> {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() || !cfg!(target_os = "linux") {
        return None;
    }
    // A pipe reads as `pipe:[N]` and a deleted file as `... (deleted)`: neither is a file.
    let file = std::fs::read_link("/proc/self/fd/1").ok()?;
    if !std::fs::metadata(&file).ok()?.is_file() {
        return None;
    }
    file.parent().map(std::path::Path::to_path_buf)
}

/// The summary in a run's output folder, for `report --input DIR`.
fn summary_in(dir: &std::path::Path) -> Result<PathBuf, String> {
    let file = dir.join(SUMMARY_FILE);
    // Whatever is there, loading it says what is wrong with it (a pipe, a folder, bad JSON).
    if file.exists() {
        Ok(file)
    } else {
        Err(format!(
            "{} is a folder without {SUMMARY_FILE}; give a run's output folder (sagellm-benchmark run -o DIR) or the summary file itself",
            dir.display()
        ))
    }
}

/// The `repeats.json` that `path` names, itself or in its folder, when it names one.
fn repeats_file(path: &std::path::Path) -> Option<PathBuf> {
    let file = if path.is_dir() {
        path.join(names::REPEATS_FILE)
    } else {
        path.to_path_buf()
    };
    (file.file_name().is_some_and(|n| n == names::REPEATS_FILE) && file.is_file()).then_some(file)
}

/// Each completed run's metrics of every workload, in run order, read from the folders a
/// repeated run's `repeats.json` lists.
fn runs_of(
    repeats: &std::path::Path,
) -> Result<indexmap::IndexMap<String, Vec<crate::results::metrics::WorkloadMetrics>>, String> {
    let summary = crate::report::repeats::load(repeats).map_err(|e| e.to_string())?;
    let dir = repeats.parent().unwrap_or(std::path::Path::new("."));
    let mut runs: indexmap::IndexMap<String, Vec<_>> = indexmap::IndexMap::new();
    for folder in &summary.run_folders {
        let file = dir.join(folder).join(SUMMARY_FILE);
        let run = Summary::load(&file).map_err(|e| format!("{}: {e}", repeats.display()))?;
        for (name, metrics) in run.workloads {
            runs.entry(name).or_default().push(metrics);
        }
    }
    Ok(runs)
}

/// `report --input <repeated run>`: its table of means, intervals and CVs, or its JSON; with
/// `--baseline` another repeated run, compared run by run (`compare::baseline::compare_runs`).
fn report_repeats(repeats: &std::path::Path, args: &ReportArgs) -> Result<(), String> {
    let summary = crate::report::repeats::load(repeats).map_err(|e| e.to_string())?;
    match args.format {
        Format::Table => print!("{}", crate::report::repeats::render(&summary)),
        Format::Json => print!("{}", pretty(&summary)?),
        _ => {
            return Err(format!(
                "{} is a repeated run's summary, which prints as --format table or json; give one run's summary for the other formats, e.g. --input {}",
                repeats.display(),
                repeats
                    .with_file_name(summary.run_folders.first().map_or("run_1", |f| f.as_str()))
                    .join(SUMMARY_FILE)
                    .display()
            ))
        }
    }
    let Some(old) = &args.baseline else {
        return Ok(());
    };
    let old_repeats = repeats_file(old).ok_or_else(|| {
        format!(
            "--baseline {}: a repeated run (--num-runs) is compared with another repeated run; give its folder or its {}",
            old.display(),
            names::REPEATS_FILE
        )
    })?;
    if !(args.noise_threshold.is_finite() && args.noise_threshold >= 0.0) {
        return Err(format!(
            "--noise-threshold must be a non-negative fraction (0.02 = 2%), not {}",
            args.noise_threshold
        ));
    }
    let settings = baseline::CompareSettings {
        noise_threshold: args.noise_threshold,
        ..Default::default()
    };
    let (new_runs, old_runs) = (runs_of(repeats)?, runs_of(&old_repeats)?);
    let comparisons: Vec<baseline::Comparison> = new_runs
        .iter()
        .filter_map(|(name, new)| {
            let base = old_runs.get(name)?;
            Some(baseline::compare_runs(name, base, new, &settings))
        })
        .collect();
    if comparisons.is_empty() {
        return Err(format!(
            "--baseline {} shares no workload with {}",
            old.display(),
            repeats.display()
        ));
    }
    let base_name = old.display().to_string();
    print!(
        "Compared run by run (the mean over each side's runs; 95% Welch intervals)\n{}",
        baseline::render(&comparisons, &base_name)
    );
    let regressed = baseline::regressed(&comparisons);
    if args.fail_on_regression && !regressed.is_empty() {
        return Err(format!("regressed: {}", regressed.join(", ")));
    }
    Ok(())
}

fn pretty(value: &impl serde::Serialize) -> Result<String, String> {
    serde_json::to_string_pretty(value)
        .map(|text| text + "\n")
        .map_err(|e| e.to_string())
}

/// `report --format github-summary`: the summary's tables and, with `--baseline`, the verdicts,
/// appended to the file `$GITHUB_STEP_SUMMARY` names (GitHub shows it on the job's page), or
/// printed when it is not set.
fn github_summary(
    input: &std::path::Path,
    args: &ReportArgs,
    mut text: String,
) -> Result<(), String> {
    let mut regressed = Vec::new();
    if let Some(old) = &args.baseline {
        let comparisons = compare_with_baseline(input, old, args.noise_threshold)?;
        text.push('\n');
        text.push_str(&baseline::render_markdown(
            &comparisons,
            &old.display().to_string(),
        ));
        regressed = baseline::regressed(&comparisons);
    }
    match std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) {
        Some(path) => {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| {
                    format!(
                        "cannot append to $GITHUB_STEP_SUMMARY ({}): {e}",
                        path.to_string_lossy()
                    )
                })?;
            file.write_all(text.as_bytes()).map_err(|e| {
                format!(
                    "cannot append to $GITHUB_STEP_SUMMARY ({}): {e}",
                    path.to_string_lossy()
                )
            })?;
            eprintln!("job summary appended to {}", path.to_string_lossy());
        }
        None => print!("{text}"),
    }
    if args.fail_on_regression && !regressed.is_empty() {
        return Err(format!("regressed: {}", regressed.join(", ")));
    }
    Ok(())
}

/// Compares every workload present in both the run at `input` and the one at `old`.
fn compare_with_baseline(
    input: &std::path::Path,
    old: &std::path::Path,
    noise_threshold: f64,
) -> Result<Vec<baseline::Comparison>, String> {
    if !(noise_threshold.is_finite() && noise_threshold >= 0.0) {
        return Err(format!(
            "--noise-threshold must be a non-negative fraction (0.02 = 2%), not {noise_threshold}"
        ));
    }
    let old = if old.is_dir() {
        old.join(SUMMARY_FILE)
    } else {
        old.to_path_buf()
    };
    let new_run = SavedRun::load(input).map_err(|e| e.to_string())?;
    let old_run = SavedRun::load(&old).map_err(|e| format!("--baseline: {e}"))?;
    let settings = baseline::CompareSettings {
        noise_threshold,
        ..Default::default()
    };
    let mut comparisons = Vec::new();
    let mut not_in_baseline = Vec::new();
    for (name, metrics) in &new_run.summary.workloads {
        let (Some(old_metrics), Some(old_samples)) = (
            old_run.summary.workloads.get(name),
            old_run.samples.get(name),
        ) else {
            not_in_baseline.push(name.as_str());
            continue;
        };
        let base = baseline::Saved {
            metrics: old_metrics.clone(),
            samples: old_samples.clone(),
        };
        let new = baseline::Saved {
            metrics: metrics.clone(),
            samples: new_run.samples.get(name).cloned().unwrap_or_default(),
        };
        comparisons.push(baseline::compare(&base, &new, &settings));
    }
    if comparisons.is_empty() {
        return Err(format!(
            "--baseline {} shares no workload with {}",
            old.display(),
            input.display()
        ));
    }
    // A workload compared with nothing must not pass for one that held steady.
    if !not_in_baseline.is_empty() {
        eprintln!(
            "note: not compared, the baseline {} has no workload {}",
            old.display(),
            not_in_baseline.join(", ")
        );
    }
    let only_in_baseline: Vec<&str> = old_run
        .summary
        .workloads
        .keys()
        .filter(|name| !new_run.summary.workloads.contains_key(*name))
        .map(String::as_str)
        .collect();
    if !only_in_baseline.is_empty() {
        eprintln!(
            "note: not compared, {} has no workload {} of the baseline",
            input.display(),
            only_in_baseline.join(", ")
        );
    }
    Ok(comparisons)
}

/// Draws, for every workload all runs share, their TTFT, TPOT and E2E distributions on one
/// chart each: `compare_<workload>_<metric>_cdf.svg` in `dir`. Runs whose request records are
/// missing are left out of the charts (the comparison tables do not need them).
fn write_overlays(dir: &std::path::Path, summaries: &[(String, PathBuf)]) -> Result<(), String> {
    use crate::report::svg::overlay_charts;
    let mut runs = Vec::new();
    for (name, path) in summaries {
        match SavedRun::load(path) {
            Ok(run) => runs.push((name.as_str(), run)),
            Err(e) => tracing::warn!("no distribution charts for {name}: {e}"),
        }
    }
    let Some((_, first)) = runs.first() else {
        return Ok(());
    };
    let labels: Vec<&str> = runs.iter().map(|(n, _)| *n).collect();
    let context = format!("runs: {}", labels.join(" vs "));
    for workload in first.samples.keys() {
        let sets: Vec<(&str, &crate::results::samples::WorkloadSamples)> = runs
            .iter()
            .filter_map(|(name, run)| run.samples.get(workload).map(|s| (*name, s.as_ref())))
            .collect();
        if sets.len() < 2 {
            continue;
        }
        let charts =
            overlay_charts(&sets, &format!("{workload}; {context}")).map_err(|e| e.to_string())?;
        for (key, chart) in charts {
            let file = dir.join(names::comparison_chart_file(workload, key));
            crate::report::files::write_atomically(&file, chart.svg.as_bytes())
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Splits `NAME=VALUE`, checking that NAME can name a folder.
fn name_value<'a>(flag: &str, given: &'a str) -> Result<(&'a str, &'a str), String> {
    let (name, value) = given.split_once('=').ok_or_else(|| {
        format!("{flag} `{given}` must be NAME=VALUE, e.g. {flag} fast=http://127.0.0.1:8000")
    })?;
    if name.is_empty() || name.starts_with('.') || !name.chars().all(crate::workload::is_name_char)
    {
        return Err(format!(
            "{flag} name `{name}` may only hold letters, digits, `_`, `-` and `.` (it names a folder)"
        ));
    }
    if value.trim().is_empty() {
        return Err(format!(
            "{flag} `{given}` has nothing after `=`; give NAME=VALUE, e.g. {flag} fast=http://127.0.0.1:8000"
        ));
    }
    Ok((name, value))
}

/// Refuses a name given twice: each names a folder and a column of the comparison.
fn check_unique<'a>(seen: &mut Vec<&'a str>, name: &'a str) -> Result<(), String> {
    if seen.contains(&name) {
        return Err(format!(
            "the name `{name}` is given twice; each --target and --result needs its own name"
        ));
    }
    seen.push(name);
    Ok(())
}

fn compare(args: CompareArgs) -> Result<ExitCode, String> {
    init_logging(args.verbose);
    if args.targets.is_empty() && args.results.is_empty() {
        return Err("give at least two --target NAME=URL or --result NAME=DIR to compare".into());
    }
    let mut names = Vec::new();
    for given in args
        .targets
        .iter()
        .map(|t| ("--target", t))
        .chain(args.results.iter().map(|r| ("--result", r)))
    {
        check_unique(&mut names, name_value(given.0, given.1)?.0)?;
    }
    let mut runs: Vec<(String, String, Summary)> = Vec::new();
    let mut summaries: Vec<(String, PathBuf)> = Vec::new();
    let mut interrupted = None;
    if !args.targets.is_empty() {
        let config = match &args.config {
            Some(path) => Config::load(path).map_err(|e| e.to_string())?,
            None => Config::default(),
        };
        let workloads = config
            .select(&args.workload)
            .map_err(|e| format!("--workload: {e}"))?;
        let workloads = crate::workload::load::LoadShape {
            goodput: args.goodput,
            ..Default::default()
        }
        .apply(workloads)?;
        let preset = args.backend.backend;
        if !preset.is_server() {
            return Err(format!(
                "compare --target runs server backends; --backend {preset} is not one (use openai, vllm, sglang, lmdeploy or llamacpp, or compare saved results with --result)"
            ));
        }
        crate::run::limits::check_connections(&workloads)?;
        let control = RunControl {
            interrupt: Interrupt::on_signals()
                .map_err(|e| format!("cannot listen for SIGINT and SIGTERM: {e}"))?,
            grace: std::time::Duration::from_secs_f64(args.grace_period),
        };
        for target in &args.targets {
            if control.interrupt.is_requested() {
                break;
            }
            let (name, url) = name_value("--target", target)?;
            let mut flags = args.backend.clone();
            flags.server.base_url = Some(url.to_string());
            let spec = flags.spec(&config).map_err(|e| e.to_string())?;
            let backend = spec.build().map_err(|e| format!("target {name}: {e}"))?;
            let provenance = Provenance::now(backend.name(), backend.model(), backend.settings());
            if !args.quiet {
                eprintln!(
                    "Running {} workload(s) against {name} ({url})",
                    workloads.len()
                );
            }
            let mut reports = Reports::files(args.output.join(name));
            let summary = crate::run_with(backend, &workloads, provenance, &mut reports, &control)
                .map_err(|e| format!("target {name}: {e}"))?;
            summaries.push((name.to_string(), args.output.join(name).join(SUMMARY_FILE)));
            runs.push((name.to_string(), url.to_string(), summary));
        }
        interrupted = control.interrupt.reason();
    }
    for result in &args.results {
        let (name, dir) = name_value("--result", result)?;
        let path = std::path::Path::new(dir);
        let file = if path.is_dir() {
            path.join(SUMMARY_FILE)
        } else {
            path.to_path_buf()
        };
        let summary = Summary::load(&file).map_err(|e| format!("--result {name}: {e}"))?;
        summaries.push((name.to_string(), file.clone()));
        runs.push((name.to_string(), file.display().to_string(), summary));
    }
    if let Some(reason) = &interrupted {
        // What was measured is on disk in each target's folder; compare it if there is enough.
        let measured: Vec<String> = runs
            .iter()
            .map(|(name, _, s)| {
                if s.complete {
                    name.clone()
                } else {
                    format!("{name} (cut short)")
                }
            })
            .collect();
        eprintln!(
            "Comparison incomplete ({reason}): measured {} of {} targets: {}",
            runs.len(),
            args.targets.len(),
            if measured.is_empty() {
                "none".to_string()
            } else {
                measured.join(", ")
            }
        );
        if runs.len() < 2 {
            eprintln!(
                "Too few runs to compare; each target's results are in its folder under {}",
                args.output.display()
            );
            return Ok(ExitCode::from(130));
        }
    }
    if runs.len() < 2 {
        return Err("a comparison needs at least two targets or results".into());
    }
    let comparison = crate::compare::side_by_side::Comparison::new(&runs);
    comparison.write(&args.output).map_err(|e| e.to_string())?;
    write_overlays(&args.output, &summaries)?;
    if !args.quiet {
        print!("{}", comparison.to_markdown());
        println!(
            "\nComparison written to {}",
            args.output.join(names::COMPARISON_JSON).display()
        );
    }
    if interrupted.is_some() {
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::SUCCESS)
}
