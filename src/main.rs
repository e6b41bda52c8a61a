//! `sagellm-benchmark`: the command-line door into sagellm-bench. Thin: parse flags, build the
//! backend and workloads, hand them to the library's runner and reporters.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use sagellm_bench::backend;
use sagellm_bench::config::Config;
use sagellm_bench::report::files::{SavedRun, SUMMARY_FILE};
use sagellm_bench::report::progress::ProgressBars;
use sagellm_bench::report::table::TablePrinter;
use sagellm_bench::report::{html, markdown, table, Reports};
use sagellm_bench::summary::{Provenance, Summary};

#[derive(Parser)]
#[command(
    name = "sagellm-benchmark",
    version,
    about = "Benchmark LLM inference engines: time to first token, time between tokens, throughput, memory and KV-cache figures",
    long_about = None,
    after_help = "Examples:\n  sagellm-benchmark run --workload year1 --backend mock\n  sagellm-benchmark run --workload stress --backend mock -v -o ./my_results\n  sagellm-benchmark report --format markdown > REPORT.md\n  sagellm-benchmark report --format html"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run benchmark workloads and write the JSON results
    #[command(
        after_help = "Files written to the output directory:\n  <workload>_metrics.json    every aggregate of one workload\n  <workload>_requests.jsonl  one raw record per request\n  benchmark_summary.json     all workloads, overall counts, provenance\n  *.svg                      charts of each workload and of the run\n  index.html                 the report: tables, charts, provenance (opens from disk)\n\nWorkloads (Year 1):\n  short   short_input: 128 prompt / 128 output tokens, 5 sequential requests\n  long    long_input:  200 prompt / 200 output tokens, 3 sequential requests\n  stress  stress_test: 256 prompt / 256 output tokens, 10 concurrent requests"
    )]
    Run(RunArgs),
    /// Print a report from saved results
    Report(ReportArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Workloads to run: year1 (short, long and stress), short, long, stress, all (year1 plus
    /// every workload in --config), or a comma-separated list of workload names
    #[arg(long, default_value = "year1", value_name = "WORKLOAD")]
    workload: String,

    /// Backend engine to use
    #[arg(long, value_enum, default_value_t = BackendName::Mock)]
    backend: BackendName,

    /// Model path or name (required for non-mock backends), e.g. gpt2, facebook/opt-125m
    #[arg(long)]
    model: Option<String>,

    /// cpu backend: weight format (auto, keep, f32, q8_0, q4_0, q4k, q6k); auto keeps fast GGUF
    /// formats and converts slow ones (Q4_1, Q5_x) to q8_0
    #[arg(long, value_name = "DTYPE")]
    dtype: Option<String>,

    /// cpu backend: inference threads (default 1, leaving a core to the harness)
    #[arg(long, value_name = "N")]
    threads: Option<usize>,

    /// Output directory
    #[arg(short, long, default_value = "./benchmark_results")]
    output: PathBuf,

    /// Workload config file (TOML): override preset fields, define workloads, set the mock
    /// engine's parameters. See docs/CONFIG.md
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Enable verbose (debug) logging on stderr
    #[arg(short, long)]
    verbose: bool,

    /// Do not print the results table or the progress bars
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendName {
    /// Simulated engine on a virtual clock: no GPU, instant, deterministic
    Mock,
    /// CPU inference with candle: a GGUF file, a Hugging Face folder or hub id (--model)
    Cpu,
    /// Any OpenAI-compatible server (not built yet)
    Openai,
    /// vLLM (coming soon)
    Vllm,
    /// LMDeploy (coming soon)
    Lmdeploy,
}

impl BackendName {
    fn as_str(self) -> &'static str {
        match self {
            BackendName::Mock => "mock",
            BackendName::Cpu => "cpu",
            BackendName::Openai => "openai",
            BackendName::Vllm => "vllm",
            BackendName::Lmdeploy => "lmdeploy",
        }
    }
}

#[derive(clap::Args)]
struct ReportArgs {
    /// Input summary JSON file
    #[arg(short, long, default_value_t = format!("./benchmark_results/{SUMMARY_FILE}"))]
    input: String,

    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,

    /// Folder to write the HTML report into (--format html only; default: the folder of --input)
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Terminal table
    Table,
    /// The summary JSON
    Json,
    /// GitHub-flavoured markdown (for REPORT.md or a CI job summary), linking the SVG charts
    Markdown,
    /// index.html and the SVG charts, redrawn from the saved JSON files; prints the page's path
    Html,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Report(args) => report(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("Error: {message}");
            ExitCode::FAILURE
        }
    }
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
        .init();
}

fn run(args: RunArgs) -> Result<(), String> {
    init_logging(args.verbose);
    let config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    let workloads = config
        .select(&args.workload)
        .map_err(|e| format!("--workload: {e}"))?;
    let backend = match args.backend {
        BackendName::Cpu => {
            let mut cpu = config.cpu.clone();
            if let Some(dtype) = &args.dtype {
                cpu.dtype = backend::cpu::WeightDtype::parse(dtype).map_err(|e| e.to_string())?;
            }
            cpu.threads = args.threads.or(cpu.threads);
            backend::create_cpu(args.model.clone(), &cpu)
        }
        _ => backend::create(
            args.backend.as_str(),
            args.model.clone(),
            config.mock.clone(),
        ),
    }
    .map_err(|e| e.to_string())?;
    let provenance = Provenance::now(backend.name(), backend.model(), backend.settings());
    tracing::debug!(?workloads, "running");

    let mut reports = Reports::files(&args.output);
    if !args.quiet {
        // Debug logging writes a line per request to stderr, which would tear the bars apart.
        if !args.verbose {
            reports.0.push(Box::new(ProgressBars::on_stderr()));
        }
        reports.0.push(Box::new(TablePrinter));
    }
    let summary = sagellm_bench::run(backend, &workloads, provenance, &mut reports)
        .map_err(|e| e.to_string())?;
    if !args.quiet {
        println!(
            "Results written to {} ({} workloads)",
            args.output.display(),
            summary.overall.total_workloads
        );
    }
    Ok(())
}

fn report(args: ReportArgs) -> Result<(), String> {
    init_logging(false);
    let input = std::path::Path::new(&args.input);
    let load = || Summary::load(input).map_err(|e| e.to_string());
    let text = match args.format {
        Format::Table => table::render(&load()?),
        Format::Markdown => markdown::render_with_charts(&load()?, input.parent()),
        Format::Json => serde_json::to_string_pretty(&load()?).map_err(|e| e.to_string())? + "\n",
        Format::Html => {
            let saved = SavedRun::load(input).map_err(|e| e.to_string())?;
            let dir = args.output.unwrap_or_else(|| saved.dir.clone());
            let index = html::write_report(&dir, &saved.summary, &saved.records)
                .map_err(|e| e.to_string())?;
            format!("HTML report written to {}\n", index.display())
        }
    };
    print!("{text}");
    Ok(())
}
