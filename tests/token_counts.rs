//! Token counts through the real `sagellm-benchmark run` against the test server: the warning
//! when the server counts a prompt's length differently from the workload (by more than 5 %
//! and 50 tokens), its silence within the bounds and once `/tokenize` has cut the prompts, and a
//! reasoning run's figures in the written table.

#[path = "common/run_cli.rs"]
mod run_cli;

use std::process::Command;
use std::time::Duration;

use sagellm_test_server::{Script, TestServer, Tokenize};

const WARNING: &str = "usage.prompt_tokens is off from the prompt's length";

fn server(tokens_per_word: usize, tokenize: Tokenize) -> TestServer {
    let script = Script {
        tokens_per_word,
        tokenize,
        ttft: Duration::from_millis(2),
        itl: Duration::from_millis(1),
        ..Script::default()
    };
    TestServer::start(script, 1).unwrap()
}

fn run(server: &TestServer, prompt_tokens: usize, extra: &[&str]) -> run_cli::Run {
    let url = server.url();
    let mut args = vec![
        "--backend",
        "vllm",
        "--quiet",
        "--no-metrics",
        "--base-url",
        &url,
    ];
    args.extend_from_slice(extra);
    let run = run_cli::run(
        "counted",
        &format!(
            "prompt_tokens = {prompt_tokens}\noutput_tokens = 4\nnum_requests = 4\nconcurrency = 2\nwarmup_requests = 1"
        ),
        &args,
        &[],
    );
    assert!(run.output.status.success(), "{}", stderr(&run));
    run
}

fn stderr(run: &run_cli::Run) -> String {
    String::from_utf8_lossy(&run.output.stderr).into_owned()
}

fn prompt_lengths(run: &run_cli::Run) -> Vec<u64> {
    run.records("counted")
        .iter()
        .map(|r| r["prompt_tokens"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_prompt_the_server_counts_off_by_more_than_the_bounds_is_warned_about() {
    // Two tokens a word and no /tokenize: 128 words are 256 tokens, 128 off (> 50, > 5 %).
    let without = server(2, Tokenize::Missing);
    let run = run(&without, 128, &[]);
    let text = stderr(&run);
    assert!(text.contains(WARNING), "{text}");
    assert!(text.contains("e.g. 128 sent, 256 counted"), "{text}");
    assert!(text.contains("workload's word count"), "{text}");
    assert_eq!(
        prompt_lengths(&run),
        [256; 4],
        "the records take the server's count"
    );

    // 40 words are 80 tokens: 40 off is within the 50-token bound, so no warning.
    let run = self::run(&without, 40, &[]);
    assert!(!stderr(&run).contains(WARNING), "{}", stderr(&run));

    // With /tokenize the prompts are cut to exactly 128 tokens: nothing to warn about.
    let with = server(2, Tokenize::Words);
    let run = self::run(&with, 128, &[]);
    assert!(!stderr(&run).contains(WARNING), "{}", stderr(&run));
    assert_eq!(prompt_lengths(&run), [128; 4]);
    assert!(with.tokenize_requests() > 0);
}

#[test]
fn a_tokenize_that_disagrees_with_the_servers_usage_is_caught_by_the_warning() {
    // /tokenize counts each word twice, the usage blocks once: prompts cut to "128" tokens hold
    // 64 words, and the usage says 64.
    let lying = server(1, Tokenize::Doubled);
    let run = run(&lying, 128, &[]);
    let text = stderr(&run);
    assert!(text.contains(WARNING), "{text}");
    assert!(text.contains("e.g. 128 sent, 64 counted"), "{text}");
    assert!(text.contains("counted the prompt differently"), "{text}");
    assert_eq!(
        prompt_lengths(&run),
        [64; 4],
        "the records take the server's usage count"
    );
}

#[test]
fn given_prompts_counted_off_from_their_word_count_are_warned_about() {
    // Dataset prompts are never cut; the server's /tokenize says their 60 words are 120
    // tokens, which the run says before sending them.
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("prompts.jsonl");
    let prompt = vec!["word"; 60].join(" ");
    std::fs::write(&jsonl, format!("{{\"prompt\": \"{prompt}\"}}\n")).unwrap();
    let with = server(2, Tokenize::Words);
    let run = run(&with, 16, &["--dataset", "jsonl", jsonl.to_str().unwrap()]);
    let text = stderr(&run);
    assert!(
        text.contains("counts a length off from the workload's word count")
            && text.contains("e.g. 60 words, 120 tokens"),
        "{text}"
    );
    assert_eq!(prompt_lengths(&run), [120; 4]);
}

#[test]
fn a_reasoning_run_shows_its_ttfo_and_token_split_in_the_table() {
    let script = Script {
        ttft: Duration::from_millis(10),
        reasoning_tokens: 3,
        reasoning_itl: Duration::from_millis(5),
        itl: Duration::from_millis(1),
        ..Script::default()
    };
    let server = TestServer::start(script, 1).unwrap();
    let run = run(&server, 16, &["--api", "chat"]);
    let m = run.metrics("counted");
    assert_eq!(m["total_reasoning_tokens"], 12, "{m}");
    assert_eq!(m["total_answer_tokens"], 4, "{m}");
    let ttfo = m["avg_ttfo_ms"].as_f64().unwrap();
    assert!(
        ttfo >= 24.5,
        "{ttfo}: 10 ms + 3 reasoning chunks 5 ms apart"
    );
    let table = Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
        .args(["report", "--input"])
        .arg(run.out().join("benchmark_summary.json"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    for row in [
        "TTFO avg (ms)",
        "TTFO p50 / p95 / p99 (ms)",
        "Reasoning / answer tokens",
        "Answer ITL p50 / p99 (ms)",
    ] {
        assert!(table.contains(row), "{row} missing:\n{table}");
    }
    assert!(table.contains("12 / 4"), "{table}");
}
