//! Bad input, one row each: every flag and every file format the CLI reads, given an invalid
//! value. Each row runs the real binary in a fresh folder and asserts the exit status (1 for an
//! error the tool explains, 2 for a command line clap rejects) and the words of the message: what
//! went wrong and what to do. No row may panic, and no row may leave a file outside its folder.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// One bad input.
struct Case {
    /// What is wrong, for the failure message.
    what: &'static str,
    /// Files to lay in the case's folder first: (relative path, contents).
    files: Vec<(&'static str, Vec<u8>)>,
    args: Vec<&'static str>,
    status: i32,
    /// Every one of these must appear on stderr.
    message: Vec<&'static str>,
}

fn case(what: &'static str, args: &[&'static str], status: i32, message: &[&'static str]) -> Case {
    Case {
        what,
        files: Vec::new(),
        args: args.to_vec(),
        status,
        message: message.to_vec(),
    }
}

impl Case {
    fn file(mut self, path: &'static str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((path, contents.into()));
        self
    }

    /// A config file `c.toml` holding `toml`, used with `run --config c.toml -q`.
    fn config(what: &'static str, toml: &'static str, message: &[&'static str]) -> Self {
        case(
            what,
            &["run", "--config", "c.toml", "--workload", "all", "-q"],
            1,
            message,
        )
        .file("c.toml", toml)
    }
}

/// A real run's files: `good/benchmark_summary.json` and its request records.
fn good_run() -> &'static Vec<(String, Vec<u8>)> {
    static RUN: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
            .args(["run", "--workload", "short", "-q", "-o"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&p).unwrap())
            })
            .collect()
    })
}

fn good_summary() -> Vec<u8> {
    good_run()
        .iter()
        .find(|(n, _)| n == "benchmark_summary.json")
        .map(|(_, b)| b.clone())
        .unwrap()
}

fn lay_good_run(dir: &Path, sub: &str) {
    std::fs::create_dir_all(dir.join(sub)).unwrap();
    for (name, bytes) in good_run() {
        std::fs::write(dir.join(sub).join(name), bytes).unwrap();
    }
}

/// A valid word-level tokenizer.json.
const WORD_TOKENIZER: &str = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"WhitespaceSplit"},"post_processor":null,"decoder":null,"model":{"type":"WordLevel","vocab":{"[UNK]":0,"tok":1},"unk_token":"[UNK]"}}"#;

fn cases() -> Vec<Case> {
    let summary = good_summary();
    let truncated = summary[..summary.len() / 2].to_vec();
    let edited = |edit: fn(&mut serde_json::Value)| {
        let mut value: serde_json::Value = serde_json::from_slice(&summary).unwrap();
        edit(&mut value);
        serde_json::to_vec_pretty(&value).unwrap()
    };
    let mut with_bom = "\u{feff}".as_bytes().to_vec();
    with_bom.extend_from_slice(&summary);
    let long_name: &'static str = Box::leak(
        format!(
            "[workloads.first]\nprompt_tokens = 8\noutput_tokens = 4\nnum_requests = 1\n\n\
             [workloads.{}]\nprompt_tokens = 8\noutput_tokens = 4\nnum_requests = 1\n",
            "n".repeat(200)
        )
        .into_boxed_str(),
    );
    vec![
        // ---- run: flags ----
        case(
            "unknown workload",
            &["run", "--workload", "nope"],
            1,
            &["unknown workload `nope`", "choose one of", "year1"],
        ),
        case(
            "misspelt workload",
            &["run", "--workload", "shrot"],
            1,
            &["did you mean `short`"],
        ),
        case(
            "empty workload list",
            &["run", "--workload", ""],
            1,
            &["empty workload name", "e.g. short,long"],
        ),
        case(
            "stray comma in the workload list",
            &["run", "--workload", "short,,long"],
            1,
            &["empty workload name"],
        ),
        case(
            "unknown backend",
            &["run", "--backend", "nope"],
            2,
            &["invalid value 'nope'", "--backend", "possible values"],
        ),
        case(
            "unknown flag",
            &["run", "--frobnicate"],
            2,
            &["unexpected argument '--frobnicate'"],
        ),
        case(
            "unknown command",
            &["frobnicate"],
            2,
            &["unrecognized subcommand"],
        ),
        case(
            "output is a file",
            &["run", "-q", "-o", "out"],
            1,
            &["exists and is not a directory", "--output"],
        )
        .file("out", "x"),
        case(
            "output under a file",
            &["run", "-q", "-o", "out/sub"],
            1,
            &["cannot create output directory", "--output"],
        )
        .file("out", "x"),
        case(
            "missing config",
            &["run", "--config", "missing.toml"],
            1,
            &["cannot read config file missing.toml", "TOML file"],
        ),
        case(
            "config is a folder",
            &["run", "--config", "."],
            1,
            &["cannot read config file", "TOML file"],
        ),
        case(
            "config not UTF-8",
            &["run", "--config", "c.toml"],
            1,
            &["cannot read config file", "UTF-8"],
        )
        .file("c.toml", vec![0xff, 0xfe, b'[']),
        // ---- run: server flags ----
        case(
            "base URL not a URL",
            &[
                "run",
                "--backend",
                "openai",
                "--model",
                "m",
                "--base-url",
                "notaurl",
            ],
            1,
            &["`notaurl` is not a URL", "http://127.0.0.1:8000"],
        ),
        case(
            "base URL of another scheme",
            &[
                "run",
                "--backend",
                "vllm",
                "--model",
                "m",
                "--base-url",
                "ftp://h/",
            ],
            1,
            &["must start with http:// or https://"],
        ),
        case(
            "base URL with a password",
            &[
                "run",
                "--backend",
                "openai",
                "--model",
                "m",
                "--base-url",
                "http://u:hunter2@127.0.0.1:9",
            ],
            1,
            &["user name or password", "--api-key-env"],
        ),
        case(
            "metrics URL not a URL",
            &[
                "run",
                "--backend",
                "openai",
                "--model",
                "m",
                "--base-url",
                "http://127.0.0.1:9",
                "--metrics-url",
                "nope",
            ],
            1,
            &["metrics URL `nope` is not a URL"],
        ),
        case(
            "zero request timeout",
            &[
                "run",
                "--backend",
                "openai",
                "--model",
                "m",
                "--request-timeout",
                "0",
            ],
            1,
            &[
                "--request-timeout must be a positive number of seconds",
                "not 0",
            ],
        ),
        case(
            "negative stall timeout",
            &[
                "run",
                "--backend",
                "openai",
                "--model",
                "m",
                "--stall-timeout=-1",
            ],
            1,
            &["--stall-timeout must be a positive number"],
        ),
        case(
            "NaN timeout",
            &[
                "run",
                "--backend",
                "openai",
                "--model",
                "m",
                "--request-timeout",
                "NaN",
            ],
            1,
            &["--request-timeout must be a positive number"],
        ),
        case(
            "timeout beyond 30 days",
            &[
                "run",
                "--backend",
                "openai",
                "--model",
                "m",
                "--request-timeout",
                "1e19",
            ],
            1,
            &["--request-timeout must lie between 0 and 2592000 seconds"],
        ),
        case(
            "timeout not a number",
            &["run", "--backend", "openai", "--request-timeout", "soon"],
            2,
            &["invalid value 'soon'", "--request-timeout"],
        ),
        case(
            "unknown api",
            &["run", "--backend", "openai", "--api", "grpc"],
            2,
            &["invalid value 'grpc'", "--api"],
        ),
        case(
            "unset API key variable",
            &[
                "run",
                "--backend",
                "openai",
                "--model",
                "m",
                "--api-key-env",
                "SAGELLM_BAD_INPUT_UNSET",
            ],
            1,
            &["SAGELLM_BAD_INPUT_UNSET is not set", "export"],
        ),
        case(
            "server not running and no --model",
            &[
                "run",
                "--backend",
                "openai",
                "--base-url",
                "http://127.0.0.1:9",
            ],
            1,
            &["could not learn the served model", "--model NAME"],
        ),
        // ---- run: flags that belong to another backend ----
        case(
            "server flag with the mock",
            &["run", "--base-url", "http://127.0.0.1:9"],
            2,
            &["--base-url is for server backends", "not --backend mock"],
        ),
        case(
            "server flag with the cpu backend",
            &[
                "run",
                "--backend",
                "cpu",
                "--model",
                "m.gguf",
                "--no-metrics",
            ],
            2,
            &["--no-metrics is for server backends", "not --backend cpu"],
        ),
        case(
            "cpu flag with a server",
            &["run", "--backend", "vllm", "--threads", "2"],
            2,
            &["--threads is for the cpu backend", "not --backend vllm"],
        ),
        case(
            "cpu flag with the mock",
            &["run", "--dtype", "f32"],
            2,
            &["--dtype is for the cpu backend", "not --backend mock"],
        ),
        // ---- run: cpu backend ----
        case(
            "cpu backend without a model",
            &["run", "--backend", "cpu"],
            1,
            &["Error: --model required for CPU backend"],
        ),
        case(
            "model path that does not exist",
            &["run", "--backend", "cpu", "--model", "missing.gguf"],
            1,
            &["`missing.gguf` does not exist", "pass a .gguf file"],
        ),
        case(
            "model file that is not GGUF",
            &["run", "--backend", "cpu", "--model", "m.gguf"],
            1,
            &["`m.gguf` is not a GGUF file", "pass a .gguf file"],
        )
        .file("m.gguf", "hello"),
        case(
            "truncated GGUF file",
            &["run", "--backend", "cpu", "--model", "m.gguf"],
            1,
            &[
                "not a readable GGUF file (truncated or corrupt?)",
                "download it again",
            ],
        )
        .file("m.gguf", b"GGUF\x03\x00".to_vec()),
        case(
            "model folder without weights",
            &["run", "--backend", "cpu", "--model", "m"],
            1,
            &["has no *.safetensors weights"],
        )
        .file("m/config.json", r#"{"model_type": "llama"}"#),
        case(
            "unsupported architecture",
            &["run", "--backend", "cpu", "--model", "m"],
            1,
            &["unsupported architecture `bert`", "llama, gpt2 and opt"],
        )
        .file("m/config.json", r#"{"model_type": "bert"}"#)
        .file("m/model.safetensors", "")
        .file("m/tokenizer.json", "{}"),
        case(
            "model folder with a broken config.json",
            &["run", "--backend", "cpu", "--model", "m"],
            1,
            &["config.json is not valid JSON"],
        )
        .file("m/config.json", "{")
        .file("m/model.safetensors", "")
        .file("m/tokenizer.json", "{}"),
        case(
            "unknown dtype",
            &[
                "run",
                "--backend",
                "cpu",
                "--model",
                "m.gguf",
                "--dtype",
                "f64",
            ],
            1,
            &["unknown --dtype `f64`", "choose one of", "q8_0"],
        ),
        case(
            "zero threads",
            &[
                "run",
                "--backend",
                "cpu",
                "--model",
                "m.gguf",
                "--threads",
                "0",
            ],
            1,
            &["threads (--threads) must be between 1 and 1024, not 0"],
        ),
        case(
            "absurd thread count",
            &[
                "run",
                "--backend",
                "cpu",
                "--model",
                "m.gguf",
                "--threads",
                "100000",
            ],
            1,
            &["threads (--threads) must be between 1 and 1024"],
        ),
        case(
            "negative thread count",
            &[
                "run",
                "--backend",
                "cpu",
                "--model",
                "m.gguf",
                "--threads=-2",
            ],
            2,
            &["invalid value '-2'", "--threads"],
        ),
        // ---- run: load-shape flags ----
        case(
            "zero concurrency flag",
            &["run", "--concurrency", "0"],
            2,
            &["--concurrency", "`0` is not a concurrency", "at least 1"],
        ),
        case(
            "concurrency not a number",
            &["run", "--concurrency", "1,four"],
            2,
            &["`four` is not a concurrency"],
        ),
        case(
            "empty item in the concurrency list",
            &["run", "--concurrency", "1,,4"],
            2,
            &["holds an empty item", "e.g. 1,4,16"],
        ),
        case(
            "empty concurrency list",
            &["run", "--concurrency", ""],
            2,
            &["holds an empty item"],
        ),
        case(
            "repeated concurrency",
            &["run", "--concurrency", "4,4"],
            2,
            &["lists 4 twice"],
        ),
        case(
            "negative request rate",
            &["run", "--request-rate=-1"],
            2,
            &[
                "--request-rate",
                "`-1` is not a rate",
                "requests per second",
            ],
        ),
        case(
            "zero request rate",
            &["run", "--request-rate", "2,0"],
            2,
            &["`0` is not a rate"],
        ),
        case(
            "request rate not a number",
            &["run", "--request-rate", "fast"],
            2,
            &["`fast` is not a rate"],
        ),
        case(
            "NaN request rate",
            &["run", "--request-rate", "NaN"],
            2,
            &["`NaN` is not a rate"],
        ),
        case(
            "concurrency and request rate together",
            &["run", "--concurrency", "2", "--request-rate", "2"],
            2,
            &["--concurrency", "cannot be used with", "--request-rate"],
        ),
        case(
            "arrival without a request rate",
            &["run", "--arrival", "constant"],
            2,
            &["--request-rate", "required"],
        ),
        case(
            "unknown arrival",
            &["run", "--request-rate", "2", "--arrival", "burst"],
            2,
            &["invalid value 'burst'", "--arrival", "possible values"],
        ),
        // vLLM's flags: what a `vllm bench serve` line brings, each told what to type here.
        case(
            "vLLM's --save-result",
            &["run", "--save-result"],
            1,
            &["--save-result is vLLM's", "always saves", "--output DIR"],
        ),
        case(
            "vLLM's --result-dir",
            &["run", "--result-dir", "out"],
            1,
            &["--result-dir is vLLM's", "give --output out"],
        ),
        case(
            "vLLM's --result-filename",
            &["run", "--result-filename", "r.json"],
            1,
            &["--result-filename is vLLM's", "--output DIR"],
        ),
        case(
            "vLLM's --dataset-name and --dataset-path",
            &["run", "--dataset-name", "sharegpt", "--dataset-path", "sg.json"],
            1,
            &["vLLM's", "in one flag: --dataset sharegpt sg.json"],
        ),
        case(
            "vLLM's custom dataset",
            &["run", "--dataset-name", "custom", "--dataset-path", "p.jsonl"],
            1,
            &["--dataset jsonl p.jsonl"],
        ),
        case(
            "vLLM's random dataset",
            &["run", "--dataset-name", "random"],
            1,
            &["--dataset-name random is vLLM's", "synthetic prompts"],
        ),
        case(
            "vLLM's infinite request rate",
            &["run", "--request-rate", "inf", "--max-concurrency", "4"],
            2,
            &["vLLM's --request-rate inf", "closed loop", "--concurrency N"],
        ),
        case(
            "zero max concurrency",
            &["run", "--request-rate", "2", "--max-concurrency", "0"],
            2,
            &["--max-concurrency", "0"],
        ),
        case(
            "max concurrency beside concurrency",
            &["run", "--concurrency", "2", "--max-concurrency", "3"],
            1,
            &["--concurrency", "--max-concurrency", "not both"],
        ),
        case(
            "max concurrency below the shard count",
            &["run", "--request-rate", "10", "--max-concurrency", "1", "--shard", "1/2"],
            1,
            &["max_concurrency 1 cannot be divided among 2 shards", "--max-concurrency of at least 2"],
        ),
        case(
            "burstiness without a rate",
            &["run", "--burstiness", "0.5"],
            1,
            &["--burstiness", "give --request-rate R"],
        ),
        case(
            "zero burstiness",
            &["run", "--request-rate", "2", "--burstiness", "0"],
            1,
            &["--burstiness must be above 0", "not 0"],
        ),
        case(
            "burstiness with constant arrivals",
            &["run", "--request-rate", "2", "--arrival", "constant", "--burstiness", "2"],
            1,
            &["--burstiness", "--arrival constant has none"],
        ),
        case(
            "ramp strategy without its rates",
            &["run", "--ramp-up-strategy", "linear"],
            2,
            &["--ramp-up-start-rps", "--ramp-up-end-rps", "required"],
        ),
        case(
            "ramp rate without a strategy",
            &["run", "--ramp-up-start-rps", "1"],
            2,
            &["--ramp-up-strategy", "required"],
        ),
        case(
            "unknown ramp strategy",
            &["run", "--ramp-up-strategy", "steep", "--ramp-up-start-rps", "1", "--ramp-up-end-rps", "2"],
            2,
            &["invalid value 'steep'", "linear", "exponential"],
        ),
        case(
            "ramp beside a request rate",
            &["run", "--request-rate", "2", "--ramp-up-strategy", "linear", "--ramp-up-start-rps", "1", "--ramp-up-end-rps", "2"],
            2,
            &["--request-rate", "cannot be used with", "--ramp-up-strategy"],
        ),
        case(
            "ramp from zero",
            &["run", "--ramp-up-strategy", "exponential", "--ramp-up-start-rps", "0", "--ramp-up-end-rps", "8"],
            1,
            &["--ramp-up-start-rps must be", "at least 0.000001", "not 0"],
        ),
        case(
            "zero percentile",
            &["run", "--percentiles", "50,0"],
            2,
            &["`0` is not a percentile", "at most 100"],
        ),
        case(
            "percentile above 100 by vLLM's name",
            &["run", "--metric-percentiles", "101"],
            2,
            &["`101` is not a percentile"],
        ),
        case(
            "repeated percentile",
            &["run", "--percentiles", "90,90"],
            2,
            &["lists 90 twice"],
        ),
        case(
            "zero requests flag",
            &["run", "--num-requests", "0"],
            2,
            &["--num-requests", "0 is not in 1..="],
        ),
        case(
            "negative requests flag",
            &["run", "--num-requests=-3"],
            2,
            &["--num-requests"],
        ),
        case(
            "absurd requests flag",
            &["run", "--num-requests", "100000000000"],
            2,
            &["--num-requests", "not in 1..=10000000"],
        ),
        case(
            "negative seed flag",
            &["run", "--seed=-1"],
            2,
            &["invalid value '-1'", "--seed"],
        ),
        case(
            "zero goodput limit",
            &["run", "--goodput", "ttft:0"],
            2,
            &["--goodput", "positive number of milliseconds"],
        ),
        case(
            "goodput limit not a number",
            &["run", "--goodput", "ttft:soon"],
            2,
            &["positive number of milliseconds"],
        ),
        case(
            "goodput item without a limit",
            &["run", "--goodput", "ttft"],
            2,
            &["must be KEY:MILLISECONDS", "ttft:200,tbt:50,e2el:5000"],
        ),
        case(
            "unknown goodput objective",
            &["run", "--goodput", "itl:5"],
            2,
            &["unknown objective `itl`", "ttft, tbt, e2el"],
        ),
        case(
            "vLLM's tpot objective",
            &["run", "--goodput", "tpot:5"],
            2,
            &["use tbt:MS"],
        ),
        case(
            "empty goodput",
            &["run", "--goodput", ""],
            2,
            &["no objective given"],
        ),
        case(
            "repeated goodput objective",
            &["run", "--goodput", "e2el:5,e2el:6"],
            2,
            &["`e2el` is given twice"],
        ),
        case(
            "missing tokenizer",
            &["run", "--backend", "openai", "--tokenizer", "missing.json"],
            2,
            &[
                "--tokenizer",
                "missing.json is not a file",
                "tokenizer.json",
            ],
        ),
        case(
            "tokenizer is a folder",
            &["run", "--backend", "openai", "--tokenizer", "."],
            2,
            &["is not a file"],
        ),
        case(
            "corrupt tokenizer",
            &["run", "--backend", "openai", "--tokenizer", "t.json"],
            2,
            &["t.json is not a tokenizer.json the tokenizers library can read"],
        )
        .file("t.json", "{\"model\": 3}"),
        case(
            "tokenizer on the mock",
            &["run", "--backend", "mock", "--tokenizer", "t.json", "-q"],
            2,
            &["--tokenizer is for server backends", "not --backend mock"],
        )
        .file("t.json", WORD_TOKENIZER),
        // ---- run: config files ----
        Case::config("not TOML", "[workloads.x\n", &["c.toml: not valid TOML"]),
        Case::config(
            "cpu: misspelt field",
            "[cpu]\ntemprature = 0.5\n",
            &["c.toml: [cpu]: unknown field `temprature`", "temperature"],
        ),
        Case::config(
            "cpu: unknown dtype",
            "[cpu]\ndtype = \"f64\"\n",
            &["c.toml: [cpu]: unknown variant `f64`", "q8_0"],
        ),
        Case::config(
            "cpu: negative temperature",
            "[cpu]\ntemperature = -1.0\n",
            &["c.toml: [cpu]: temperature must lie between 0 (greedy) and 100, not -1"],
        ),
        Case::config(
            "cpu: NaN temperature",
            "[cpu]\ntemperature = nan\n",
            &["c.toml: [cpu]: temperature must lie between 0"],
        ),
        Case::config(
            "cpu: top_p above 1",
            "[cpu]\ntemperature = 0.7\ntop_p = 1.5\n",
            &["c.toml: [cpu]: top_p must lie in (0, 1], not 1.5"],
        ),
        Case::config(
            "cpu: top_p with greedy decoding",
            "[cpu]\ntop_p = 0.9\n",
            &["c.toml: [cpu]: top_p samples, so it needs a temperature above 0"],
        ),
        Case::config(
            "cpu: zero threads",
            "[cpu]\nthreads = 0\n",
            &["c.toml: [cpu]: threads (--threads) must be between 1 and 1024, not 0"],
        ),
        Case::config(
            "cpu: zero batch",
            "[cpu]\nmax_batch = 0\n",
            &["c.toml: [cpu]: max_batch must be at least 1"],
        ),
        Case::config(
            "cpu: threads not a number",
            "[cpu]\nthreads = \"two\"\n",
            &["c.toml: [cpu]: invalid type: string \"two\""],
        ),
        Case::config(
            "unknown table",
            "[mocks]\n",
            &["unknown table `mocks`", "did you mean `mock`"],
        ),
        Case::config(
            "misspelt field",
            "[workloads.short_input]\nnum_request = 2\n",
            &[
                "workload `short_input`",
                "unknown field `num_request`",
                "did you mean `num_requests`",
            ],
        ),
        Case::config(
            "zero requests",
            "[workloads.short_input]\nnum_requests = 0\n",
            &["workload `short_input`", "num_requests must be at least 1"],
        ),
        Case::config(
            "negative requests",
            "[workloads.short_input]\nnum_requests = -5\n",
            &["field `num_requests` must be a non-negative integer, not -5"],
        ),
        Case::config(
            "fractional requests",
            "[workloads.short_input]\nnum_requests = 2.5\n",
            &["field `num_requests` must be a non-negative integer, not 2.5"],
        ),
        Case::config(
            "absurd request count",
            "[workloads.short_input]\nnum_requests = 1000000000000000\n",
            &["num_requests (1000000000000000) must be at most 10000000"],
        ),
        Case::config(
            "absurd warm-up count",
            "[workloads.short_input]\nwarmup_requests = 1000000000000\n",
            &["warmup_requests", "must be at most 10000000"],
        ),
        Case::config(
            "zero prompt tokens",
            "[workloads.long_input]\nprompt_tokens = 0\n",
            &["prompt_tokens must be at least 1"],
        ),
        Case::config(
            "zero output tokens",
            "[workloads.long_input]\noutput_tokens = 0\n",
            &["output_tokens must be at least 1"],
        ),
        Case::config(
            "absurd prompt length",
            "[workloads.long_input]\nprompt_tokens = 100000000\n",
            &["must be at most 1048576"],
        ),
        Case::config(
            "zero concurrency",
            "[workloads.stress_test]\nconcurrency = 0\n",
            &["concurrency must be at least 1"],
        ),
        Case::config(
            "negative rate",
            "[workloads.stress_test]\nrate = -1.0\n",
            &["rate must be a number of requests per second of at least"],
        ),
        Case::config(
            "NaN rate",
            "[workloads.stress_test]\nrate = nan\n",
            &["rate must be", "not NaN"],
        ),
        Case::config(
            "vanishing rate",
            "[workloads.stress_test]\nrate = 1e-300\n",
            &["rate must be a number of requests per second of at least 0.000001"],
        ),
        Case::config(
            "rate not a number",
            "[workloads.stress_test]\nrate = \"fast\"\n",
            &["field `rate` must be a number of requests per second"],
        ),
        Case::config(
            "unknown arrival in a config",
            "[workloads.stress_test]\nrate = 2.0\narrival = \"burst\"\n",
            &["field `arrival` must be \"poisson\" or \"constant\""],
        ),
        Case::config(
            "arrival on a closed loop",
            "[workloads.stress_test]\narrival = \"constant\"\n",
            &["workload `stress_test`", "set `rate`"],
        ),
        Case::config(
            "bad goodput in a config",
            "goodput = \"ttft:-1\"\n",
            &["c.toml: `goodput`", "positive number of milliseconds"],
        ),
        Case::config(
            "bad goodput for a workload",
            "[workloads.short_input]\ngoodput = \"x:1\"\n",
            &["workload `short_input`", "unknown objective `x`"],
        ),
        Case::config(
            "rate and concurrency",
            "[workloads.stress_test]\nrate = 2.0\nconcurrency = 3\n",
            &["not both"],
        ),
        Case::config(
            "negative seed",
            "[workloads.short_input]\nseed = -1\n",
            &["field `seed` must be a non-negative integer"],
        ),
        Case::config(
            "prefix longer than prompt",
            "[workloads.short_input]\nshared_prefix_tokens = 500\n",
            &["shared_prefix_tokens (500) is longer than prompt_tokens (128)"],
        ),
        Case::config(
            "new workload missing fields",
            "[workloads.mine]\nprompt_tokens = 8\n",
            &["workload `mine`", "must set output_tokens, num_requests"],
        ),
        Case::config(
            "workload name escaping the folder",
            "[workloads.\"../../x\"]\nprompt_tokens = 8\noutput_tokens = 4\nnum_requests = 1\n",
            &["workload name `../../x` may only hold letters"],
        ),
        Case::config(
            "workload name with a slash",
            "[workloads.\"a/b\"]\nprompt_tokens = 8\noutput_tokens = 4\nnum_requests = 1\n",
            &["workload name `a/b` may only hold letters"],
        ),
        Case::config(
            "workloads not a table",
            "workloads = 3\n",
            &["`workloads` must be a table of tables"],
        ),
        Case::config(
            "workload not a table",
            "[workloads]\nshort_input = 3\n",
            &["workload `short_input`", "must be a table"],
        ),
        Case::config(
            "unknown mock field",
            "[mock]\nkv_block = 40\n",
            &["[mock]", "kv_block"],
        ),
        Case::config(
            "zero KV blocks",
            "[mock]\nkv_blocks = 0\n",
            &["mock.kv_blocks must be at least 1"],
        ),
        Case::config(
            "absurd KV blocks",
            "[mock]\nkv_blocks = 1000000000000000\n",
            &["mock.kv_blocks must be at most 16777216"],
        ),
        Case::config(
            "absurd KV bytes per token",
            "[mock]\nkv_bytes_per_token = 4611686018427387904\n",
            &["mock.kv_bytes_per_token must be at most"],
        ),
        Case::config(
            "negative step time",
            "[mock]\nstep_base_us = -5.0\n",
            &["mock.step_base_us must be a number of microseconds"],
        ),
        Case::config(
            "acceptance beyond 1",
            "[mock]\nspec_accept_prob = 2.0\n",
            &["mock.spec_accept_prob must lie in [0, 1]"],
        ),
        Case::config(
            "a workload name too long for a file name, after one that would run first",
            long_name,
            &["is 200 bytes long; at most 160 fit in the file names"],
        ),
        case(
            "ten million requests, all in flight at once",
            &[
                "run",
                "--workload",
                "short",
                "--num-requests",
                "10000000",
                "--concurrency",
                "10000000",
                "-q",
            ],
            1,
            &[
                "workload `short_input`",
                "GiB of memory",
                "GiB available",
                "lower --concurrency",
            ],
        ),
        // ---- report ----
        case(
            "summary with a UTF-8 byte-order mark (read)",
            &["report", "-i", "s.json"],
            0,
            &[],
        )
        .file("s.json", with_bom),
        case(
            "summary of a newer schema",
            &["report", "-i", "s.json"],
            1,
            &[
                "s.json: schema_version 2 is newer than this sagellm-benchmark reads (1)",
                "newer release",
            ],
        )
        .file(
            "s.json",
            edited(|v| v["schema_version"] = serde_json::json!(2)),
        ),
        case(
            "summary whose overall count disagrees with its workloads",
            &["report", "--format", "json", "-i", "s.json"],
            1,
            &["s.json: `overall.total_requests` is 6, but the workloads listed add up to 5"],
        )
        .file(
            "s.json",
            edited(|v| v["overall"]["total_requests"] = serde_json::json!(6)),
        ),
        case(
            "summary whose workload's successes and failures do not make its total",
            &["report", "-i", "s.json"],
            1,
            &["`workloads.short_input.total_requests` is 5, not successful_requests 5 + failed_requests 3"],
        )
        .file(
            "s.json",
            edited(|v| v["workloads"]["short_input"]["failed_requests"] = serde_json::json!(3)),
        ),
        case(
            "compare --result of a newer schema",
            &["compare", "--result", "a=s.json", "--result", "b=s.json"],
            1,
            &["--result a", "schema_version 9 is newer"],
        )
        .file(
            "s.json",
            edited(|v| v["schema_version"] = serde_json::json!(9)),
        ),
        // ---- report ----
        case(
            "missing summary",
            &["report", "-i", "nothing.json"],
            1,
            &["File not found: nothing.json", "sagellm-benchmark run"],
        ),
        case(
            "summary is a folder",
            &["report", "-i", "."],
            1,
            &["is a folder", "benchmark_summary.json"],
        ),
        case(
            "empty summary",
            &["report", "-i", "s.json"],
            1,
            &[
                "s.json is not a valid benchmark summary",
                "EOF",
                "Re-create it",
            ],
        )
        .file("s.json", ""),
        case(
            "corrupt summary",
            &["report", "-i", "s.json"],
            1,
            &["s.json is not a valid benchmark summary", "Re-create it"],
        )
        .file("s.json", "\u{0}garbage{"),
        case(
            "truncated summary",
            &["report", "--format", "markdown", "-i", "s.json"],
            1,
            &["s.json is not a valid benchmark summary", "EOF"],
        )
        .file("s.json", truncated.clone()),
        case(
            "summary of another shape",
            &["report", "--format", "json", "-i", "s.json"],
            1,
            &["not a valid benchmark summary", "missing field"],
        )
        .file("s.json", "{\"workloads\": {}}"),
        case(
            "summary with a negative count",
            &["report", "-i", "s.json"],
            1,
            &["not a valid benchmark summary"],
        )
        .file(
            "s.json",
            String::from_utf8(summary.clone()).unwrap().replacen(
                "\"total_requests\": 5",
                "\"total_requests\": -5",
                1,
            ),
        ),
        case(
            "unknown report format",
            &["report", "--format", "pdf"],
            2,
            &["invalid value 'pdf'", "--format"],
        ),
        case(
            "html report without request records",
            &["report", "--format", "html", "-i", "s.json"],
            1,
            &[
                "short_input_requests.jsonl",
                "keep that file with the summary",
            ],
        )
        .file("s.json", summary.clone()),
        case(
            "html report with corrupt request records",
            &["report", "--format", "html", "-i", "s.json"],
            1,
            &["short_input_requests.jsonl line 1: not a request record"],
        )
        .file("s.json", summary.clone())
        .file("short_input_requests.jsonl", "{\"index\": \"zero\"}\n"),
        // ---- compare ----
        case(
            "nothing to compare",
            &["compare"],
            1,
            &["give at least two --target NAME=URL or --result NAME=DIR"],
        ),
        case(
            "target without a name",
            &["compare", "--target", "http://127.0.0.1:9"],
            1,
            &["must be NAME=VALUE"],
        ),
        case(
            "target name escaping the folder",
            &[
                "compare",
                "--target",
                "../../x=http://127.0.0.1:9",
                "--target",
                "b=http://127.0.0.1:9",
            ],
            1,
            &["--target name `../../x` may only hold letters"],
        ),
        case(
            "target name that is a dot folder",
            &[
                "compare",
                "--target",
                "..=http://127.0.0.1:9",
                "--target",
                "b=http://127.0.0.1:9",
            ],
            1,
            &["--target name `..` may only hold letters"],
        ),
        case(
            "target with an empty name",
            &[
                "compare",
                "--target",
                "=http://127.0.0.1:9",
                "--target",
                "b=http://127.0.0.1:9",
            ],
            1,
            &["--target name `` may only hold"],
        ),
        case(
            "target with an empty URL",
            &[
                "compare",
                "--target",
                "a=",
                "--target",
                "b=http://127.0.0.1:9",
            ],
            1,
            &["has nothing after `=`"],
        ),
        case(
            "target URL not a URL",
            &[
                "compare",
                "--model",
                "m",
                "--target",
                "a=notaurl",
                "--target",
                "b=http://127.0.0.1:9",
            ],
            1,
            &["target a", "`notaurl` is not a URL"],
        ),
        case(
            "target on the mock backend",
            &[
                "compare",
                "--backend",
                "mock",
                "--target",
                "a=http://127.0.0.1:9",
                "--target",
                "b=http://127.0.0.1:9",
            ],
            // compare --help offers the server presets only, and clap refuses the others.
            2,
            &[
                "invalid value 'mock' for '--backend",
                "[possible values: openai, vllm, lmdeploy, sglang, llamacpp]",
            ],
        ),
        case(
            "target with a bad timeout",
            &[
                "compare",
                "--model",
                "m",
                "--request-timeout",
                "0",
                "--target",
                "a=http://127.0.0.1:9",
                "--target",
                "b=http://127.0.0.1:9",
            ],
            1,
            &["--request-timeout must be a positive number"],
        ),
        case(
            "duplicate target names",
            &[
                "compare",
                "--target",
                "a=http://127.0.0.1:9",
                "--target",
                "a=http://127.0.0.1:10",
            ],
            1,
            &["the name `a` is given twice"],
        ),
        case(
            "duplicate result names",
            &["compare", "--result", "a=one", "--result", "a=two"],
            1,
            &["the name `a` is given twice"],
        ),
        case(
            "result name escaping the folder",
            &["compare", "--result", "../x=one", "--result", "b=one"],
            1,
            &["--result name `../x` may only hold letters"],
        ),
        case(
            "missing result",
            &["compare", "--result", "a=nowhere", "--result", "b=nowhere"],
            1,
            &["--result a", "File not found"],
        ),
        case(
            "corrupt result",
            &[
                "compare",
                "--result",
                "a=bad.json",
                "--result",
                "b=bad.json",
            ],
            1,
            &["--result a", "bad.json is not a valid benchmark summary"],
        )
        .file("bad.json", "{"),
        case(
            "one result only",
            &["compare", "--result", "a=good.json"],
            1,
            &["needs at least two"],
        )
        .file("good.json", summary.clone()),
        case(
            "comparison output is a file",
            &[
                "compare",
                "-q",
                "-o",
                "out",
                "--result",
                "a=good.json",
                "--result",
                "b=good.json",
            ],
            1,
            &["exists and is not a directory", "--output"],
        )
        .file("good.json", summary.clone())
        .file("out", "x"),
        case(
            "unknown workload for targets",
            &[
                "compare",
                "--workload",
                "nope",
                "--target",
                "a=http://127.0.0.1:9",
                "--target",
                "b=http://127.0.0.1:9",
            ],
            1,
            &["--workload: unknown workload `nope`"],
        ),
    ]
}

#[test]
fn every_bad_input_gets_a_clear_error_and_exit_status() {
    let root = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, case) in cases().into_iter().enumerate() {
        // Each case in `root/<i>/work`, so a path that escapes by `../..` lands in `root`,
        // where it is seen.
        let dir = root.path().join(i.to_string()).join("work");
        std::fs::create_dir_all(&dir).unwrap();
        for (path, bytes) in &case.files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        let out = Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
            .args(&case.args)
            .current_dir(&dir)
            .env_remove("SAGELLM_LOG")
            .env_remove("SAGELLM_BAD_INPUT_UNSET")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut wrong = Vec::new();
        if out.status.code() != Some(case.status) {
            wrong.push(format!(
                "exit status {:?}, expected {}",
                out.status.code(),
                case.status
            ));
        }
        if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
            wrong.push("it panicked".to_string());
        }
        for words in &case.message {
            if !stderr.contains(words) {
                wrong.push(format!("stderr lacks {words:?}"));
            }
        }
        if case.status == 1 && !stderr.starts_with("Error: ") {
            wrong.push("stderr does not start with `Error: `".to_string());
        }
        let escaped: Vec<_> = std::fs::read_dir(root.path().join(i.to_string()))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "work")
            .collect();
        if !escaped.is_empty() {
            wrong.push(format!("wrote outside its folder: {escaped:?}"));
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{} ({:?}): {}\n  stderr: {}",
                case.what,
                case.args,
                wrong.join("; "),
                stderr.trim_end().replace('\n', "\n          ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} bad inputs mishandled:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The one case the table cannot hold: a folder that exists but cannot be written. Root writes
/// anywhere permissions allow nothing, so as root the case uses sysfs, which refuses new files
/// to everyone; it is skipped only where neither refuses.
#[test]
fn an_output_folder_that_cannot_be_written_is_a_clear_error_before_running() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    let refuses = |d: &Path| std::fs::write(d.join("probe"), b"").is_err();
    let target = if refuses(&locked) {
        locked
    } else if Path::new("/sys/kernel").is_dir() && refuses(Path::new("/sys/kernel")) {
        Path::new("/sys/kernel").to_path_buf()
    } else {
        eprintln!("no folder here refuses writes, skipped");
        return;
    };
    // The cpu backend would load its model first; the folder must be refused before that.
    let out = Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
        .args([
            "run",
            "--backend",
            "cpu",
            "--model",
            "missing.gguf",
            "-q",
            "-o",
        ])
        .arg(&target)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot write in output directory {}",
            target.display()
        )) && stderr.contains("choose another with --output")
            && !stderr.contains("missing.gguf")
            && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn a_good_run_lays_out_for_the_table() {
    // The fixture the table relies on is itself a complete run.
    let dir = tempfile::tempdir().unwrap();
    lay_good_run(dir.path(), "good");
    let out = Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
        .args([
            "compare", "-q", "--result", "a=good", "--result", "b=good", "-o", "cmp",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("cmp/comparison.json").is_file());
}

/// A summary is outside input too: a workload named to climb out of the folder still has its
/// HTML report, charts and records read and written inside the folder.
#[test]
fn workload_names_read_from_a_summary_never_leave_the_folder() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a").join("b");
    lay_good_run(&dir, "");
    let summary = std::fs::read_to_string(dir.join("benchmark_summary.json")).unwrap();
    std::fs::write(
        dir.join("benchmark_summary.json"),
        summary.replace("\"short_input\"", "\"../../evil\""),
    )
    .unwrap();
    std::fs::rename(
        dir.join("short_input_requests.jsonl"),
        dir.join("_.._evil_requests.jsonl"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
        .args(["report", "--format", "html", "-i", "benchmark_summary.json"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outside: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside, ["a"], "files escaped the run's folder");
    assert_eq!(std::fs::read_dir(root.path().join("a")).unwrap().count(), 1);
    assert!(dir.join("index.html").is_file());
}

/// A file that never ends (a device) or never starts (a named pipe with no writer), given
/// wherever the CLI reads a file: each is refused at once with the path and what it is.
/// Before, `--dataset sharegpt /dev/zero` filled 9 GB of memory in 20 s and a pipe as
/// `--config` hung the run before its first request; here a case that does not exit within
/// seconds is killed and reported.
#[cfg(unix)]
#[test]
fn a_device_or_a_named_pipe_as_an_input_file_is_refused_at_once() {
    use std::time::{Duration, Instant};

    let root = tempfile::tempdir().unwrap();
    let fifo = root.path().join("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo");
    // A saved run whose summary is the pipe, for the flags that take a run's folder.
    let run_dir = root.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    std::os::unix::fs::symlink(&fifo, run_dir.join("benchmark_summary.json")).unwrap();
    let shard_dir = root.path().join("shard");
    std::fs::create_dir(&shard_dir).unwrap();
    std::os::unix::fs::symlink(&fifo, shard_dir.join("shard.json")).unwrap();

    let fifo = fifo.to_str().unwrap();
    let run_dir = run_dir.to_str().unwrap();
    let shard_dir = shard_dir.to_str().unwrap();
    // (the file given, the command line); a run's flags follow `run -q --backend mock`.
    let mut cases: Vec<(&str, Vec<&str>)> = Vec::new();
    for input in ["/dev/zero", fifo] {
        for flags in [
            &["--config", input][..],
            &["--dataset", "sharegpt", input],
            &["--dataset", "jsonl", input],
            &["--trace", "mooncake", input],
            &["--trace", "jsonl", input],
        ] {
            let run = ["run", "-q", "--backend", "mock"];
            cases.push((input, run.iter().chain(flags).copied().collect()));
        }
        cases.push((
            input,
            vec!["run", "-q", "--backend", "cpu", "--model", input],
        ));
        cases.push((input, vec!["report", "--input", input]));
    }
    cases.push((fifo, vec!["report", "--input", run_dir]));
    cases.push((fifo, vec!["merge", shard_dir, shard_dir]));

    let mut failures = Vec::new();
    for (i, (input, args)) in cases.iter().enumerate() {
        let out_dir = root.path().join(format!("out{i}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
            .args(args)
            .arg("--output")
            .arg(&out_dir)
            .current_dir(root.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > Duration::from_secs(10) {
                child.kill().unwrap();
                child.wait().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        let named = stderr.contains(input)
            || args.contains(&run_dir) && stderr.contains("benchmark_summary.json")
            || args.contains(&shard_dir) && stderr.contains("shard.json");
        let said = stderr.contains("a device, a pipe or a socket");
        match status {
            None => failures.push(format!("{args:?}: still running after 10 s")),
            Some(s) if s.code() != Some(1) || !named || !said => failures.push(format!(
                "{args:?}: exit {:?}, stderr: {}",
                s.code(),
                stderr.trim_end()
            )),
            Some(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} inputs mishandled:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
