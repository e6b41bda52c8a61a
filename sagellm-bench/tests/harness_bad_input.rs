//! Bad input to a `cargo bench` target, one row each: every harness flag and `SAGELLM_BENCH_*`
//! variable given an invalid value. Each row runs the real harness in a child process (this
//! binary, re-executed with `CHILD` set) in a fresh folder and asserts the exit status (1 for an
//! error the harness explains, 2 for arguments clap rejects) and the words of the message.

use std::path::Path;
use std::process::{Command, ExitCode};

use sagellm_bench::workload;

/// Set in the child: run the harness on the arguments instead of the table.
const CHILD: &str = "SAGELLM_HARNESS_BAD_INPUT_CHILD";

#[workload(prompt_tokens = 16, output_tokens = 4, requests = 2, warmup = 0)]
fn hb_tiny() {}

/// 100 connections at once; run only by the open-files case.
#[workload(
    prompt_tokens = 16,
    output_tokens = 4,
    requests = 100,
    concurrency = 100,
    warmup = 0,
    ignore
)]
fn hb_wide() {}

struct Case {
    what: &'static str,
    args: Vec<&'static str>,
    env: Vec<(&'static str, &'static str)>,
    /// Files to lay in the case's folder first: (relative path, contents).
    files: Vec<(&'static str, &'static str)>,
    /// `ulimit -n` for the child (soft and hard), when the case needs one.
    open_files: Option<u32>,
    status: i32,
    /// Every one of these must appear on stderr.
    message: Vec<&'static str>,
}

fn case(what: &'static str, args: &[&'static str], status: i32, message: &[&'static str]) -> Case {
    Case {
        what,
        args: args.to_vec(),
        env: Vec::new(),
        files: Vec::new(),
        open_files: None,
        status,
        message: message.to_vec(),
    }
}

impl Case {
    fn env(mut self, name: &'static str, value: &'static str) -> Self {
        self.env.push((name, value));
        self
    }

    fn file(mut self, path: &'static str, contents: &'static str) -> Self {
        self.files.push((path, contents));
        self
    }

    fn open_files(mut self, limit: u32) -> Self {
        self.open_files = Some(limit);
        self
    }
}

/// A vLLM server on a port of the loopback where nothing listens.
const NOBODY_LISTENS: [&str; 7] = [
    "--backend",
    "vllm",
    "--base-url",
    "http://127.0.0.1:9",
    "--model",
    "m",
    "--no-metrics",
];

fn cases() -> Vec<Case> {
    vec![
        // ---- arguments clap rejects ----
        case(
            "unknown flag",
            &["--frobnicate"],
            2,
            &["unexpected argument '--frobnicate'"],
        ),
        case(
            "unknown listing format",
            &["--list", "--format", "xml"],
            2,
            &["invalid value 'xml'", "--format", "pretty", "terse"],
        ),
        case(
            "--load-baseline without --baseline",
            &["--bench", "--load-baseline", "a"],
            2,
            &["--baseline <NAME>"],
        ),
        case(
            "--save-baseline with --baseline",
            &["--bench", "--save-baseline", "a", "--baseline", "b"],
            2,
            &["cannot be used with"],
        ),
        case(
            "baseline name that climbs out of the folder",
            &["--bench", "--save-baseline", "../../escape"],
            2,
            &["`../../escape` cannot name a baseline", "e.g. main"],
        ),
        case(
            "empty baseline name",
            &["--bench", "--baseline", ""],
            2,
            &["`` cannot name a baseline"],
        ),
        case(
            "hidden baseline name",
            &["--bench", "--load-baseline", ".x", "--baseline", "a"],
            2,
            &["`.x` cannot name a baseline"],
        ),
        case(
            "baseline named like the latest run",
            &["--bench", "--save-baseline", "new"],
            2,
            &["`new` is where the latest run is kept"],
        ),
        case(
            "baseline name from the environment",
            &["--bench"],
            2,
            &["`a/b` cannot name a baseline"],
        )
        .env("SAGELLM_BENCH_SAVE_BASELINE", "a/b"),
        case(
            "noise threshold not a number",
            &["--bench", "--noise-threshold", "some"],
            2,
            &["invalid value 'some'", "--noise-threshold"],
        ),
        case(
            "noise threshold not a number, from the environment",
            &["--bench"],
            2,
            &["invalid value 'lots'", "--noise-threshold"],
        )
        .env("SAGELLM_BENCH_NOISE_THRESHOLD", "lots"),
        // ---- errors the harness explains ----
        case(
            "every request fails (nothing listens)",
            &[&["--bench", "--exact", "hb_tiny"][..], &NOBODY_LISTENS].concat(),
            1,
            &[
                "Error: every request of hb_tiny failed, so nothing was measured; the first failure: connection: ",
                "no baseline was saved",
            ],
        ),
        case(
            "every request of every repetition fails (nothing listens)",
            &[
                &["--bench", "--exact", "hb_tiny", "--num-runs", "2"][..],
                &NOBODY_LISTENS,
            ]
            .concat(),
            1,
            &[
                "Error: in run 1 (and 1 more runs), every request of hb_tiny failed, so nothing was measured; the first failure: connection: ",
            ],
        ),
        case(
            "more connections than open files allow",
            &[
                &["--bench", "--include-ignored", "--exact", "hb_wide"][..],
                &NOBODY_LISTENS,
            ]
            .concat(),
            1,
            &[
                "workload `hb_wide` keeps 100 connections open",
                "ulimit -n",
                "lower --concurrency",
            ],
        )
        .open_files(64),
        case(
            "negative noise threshold",
            &["--bench", "--noise-threshold=-0.1"],
            1,
            &[
                "--noise-threshold must be a non-negative fraction",
                "not -0.1",
            ],
        ),
        case(
            "NaN noise threshold",
            &["--bench", "--noise-threshold", "NaN"],
            1,
            &["--noise-threshold must be a non-negative fraction"],
        ),
        case(
            "baseline never saved",
            &["--bench", "--baseline", "never"],
            1,
            &[
                "no baseline `never` for workload `hb_tiny`",
                "--save-baseline never",
            ],
        ),
        case(
            "unknown backend",
            &["--bench", "--backend", "nope"],
            2,
            &[
                "invalid value 'nope'",
                "--backend",
                "possible values",
                "mock",
            ],
        ),
        case(
            "unknown backend, from the environment",
            &["--bench"],
            2,
            &["invalid value 'nope'", "--backend"],
        )
        .env("SAGELLM_BENCH_BACKEND", "nope"),
        case(
            "cpu backend without a model",
            &["--bench", "--backend", "cpu"],
            1,
            &["--model required for CPU backend"],
        ),
        case(
            "cpu backend with a model that does not exist",
            &["--bench", "--backend", "cpu", "--model", "missing.gguf"],
            1,
            &["`missing.gguf` does not exist"],
        ),
        case(
            "cpu settings from the config are checked",
            &[
                "--bench",
                "--backend",
                "cpu",
                "--model",
                "m.gguf",
                "--config",
                "c.toml",
            ],
            1,
            &["c.toml: [cpu]: top_p must lie in (0, 1], not 2"],
        )
        .file("c.toml", "[cpu]\ntemperature = 0.5\ntop_p = 2.0\n"),
        case(
            "server URL with the mock",
            &["--bench", "--base-url", "http://127.0.0.1:9"],
            2,
            &["--base-url is for server backends", "not --backend mock"],
        ),
        case(
            "base URL not a URL",
            &[
                "--bench",
                "--backend",
                "openai",
                "--model",
                "m",
                "--base-url",
                "nope",
            ],
            1,
            &["`nope` is not a URL"],
        ),
        case(
            "unset API key variable",
            &[
                "--bench",
                "--backend",
                "openai",
                "--model",
                "m",
                "--api-key-env",
                "SAGELLM_HARNESS_UNSET_KEY",
            ],
            1,
            &["SAGELLM_HARNESS_UNSET_KEY is not set"],
        ),
        case(
            "missing config",
            &["--bench", "--config", "missing.toml"],
            1,
            &["cannot read config file missing.toml"],
        ),
        case(
            "config with a misspelt field",
            &["--bench", "--config", "c.toml"],
            1,
            &["c.toml", "unknown table `mocks`", "did you mean `mock`"],
        )
        .file("c.toml", "[mocks]\n"),
        case(
            "output is a file",
            &["--bench", "--output", "out"],
            1,
            &["exists and is not a directory"],
        )
        .file("out", "x"),
        case(
            "output is a file, from the environment",
            &["--bench"],
            1,
            &["exists and is not a directory"],
        )
        .file("out", "x")
        .env("SAGELLM_BENCH_OUTPUT", "out"),
    ]
}

fn main() -> ExitCode {
    if std::env::var_os(CHILD).is_some() {
        return ExitCode::from(sagellm_bench::__private::run_harness(std::env::args_os()));
    }
    let root = match tempfile::tempdir() {
        Ok(root) => root,
        Err(e) => {
            eprintln!("cannot make a temporary folder: {e}");
            return ExitCode::FAILURE;
        }
    };
    let this = std::env::current_exe().expect("the test binary knows its path");
    let cases = cases();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let dir = root.path().join(i.to_string());
        if let Err(why) = check(&this, &dir, case) {
            failures.push(format!("- {}: {why}", case.what));
        }
    }
    // Nothing may be written above the cases' folders (a baseline name that escaped would be).
    let strays: Vec<String> = std::fs::read_dir(root.path())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
        })
        .into_iter()
        .flatten()
        .filter(|name| name.parse::<usize>().is_err())
        .collect();
    if !strays.is_empty() {
        failures.push(format!("- files outside every case's folder: {strays:?}"));
    }
    println!("harness bad input: {} cases", cases.len());
    if failures.is_empty() {
        println!("test result: ok");
        ExitCode::SUCCESS
    } else {
        println!(
            "{} bad inputs mishandled:\n{}",
            failures.len(),
            failures.join("\n")
        );
        ExitCode::FAILURE
    }
}

/// Runs one case in `dir/work` and says what is wrong with the outcome, if anything.
fn check(this: &Path, dir: &Path, case: &Case) -> Result<(), String> {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    for (path, contents) in &case.files {
        std::fs::write(work.join(path), contents).map_err(|e| e.to_string())?;
    }
    let mut child = match case.open_files {
        None => Command::new(this),
        Some(limit) => {
            let mut shell = Command::new("sh");
            shell
                .arg("-c")
                .arg(format!("ulimit -n {limit} || exit 99; exec \"$0\" \"$@\""))
                .arg(this);
            shell
        }
    };
    // The harness takes its arguments after the program name, as `cargo bench --` passes them.
    child.args(&case.args).current_dir(&work);
    // The case's own environment only: a CI's SAGELLM_BENCH_* must not leak in.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SAGELLM_") {
            child.env_remove(name);
        }
    }
    child.env(CHILD, "1").env("SAGELLM_BENCH_OUTPUT", "results");
    for (name, value) in &case.env {
        child.env(name, value);
    }
    let out = child.output().map_err(|e| format!("cannot run: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("panicked") {
        return Err(format!("panicked:\n{stderr}"));
    }
    if out.status.code() != Some(case.status) {
        return Err(format!(
            "exit status {:?}, expected {}:\n{stderr}",
            out.status.code(),
            case.status
        ));
    }
    let missing: Vec<&&str> = case
        .message
        .iter()
        .filter(|m| !stderr.contains(**m))
        .collect();
    if !missing.is_empty() {
        return Err(format!("stderr lacks {missing:?}:\n{stderr}"));
    }
    Ok(())
}
