//! `run --dataset KIND FILE`: real prompts from the command line, as vLLM's `--dataset-name` and
//! `--dataset-path` give them.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_sagellm-benchmark");

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args([
            "run",
            "-q",
            "--workload",
            "short",
            "--num-requests",
            "4",
            "-o",
        ])
        .arg(dir.join("out"))
        .args(args)
        .output()
        .unwrap()
}

/// The prompt token counts of the run's records, in index order.
fn prompt_tokens(dir: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(dir.join("out/short_input_requests.jsonl")).unwrap();
    let mut records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    records.sort_by_key(|r| r["index"].as_u64());
    records
        .iter()
        .map(|r| r["prompt_tokens"].as_u64().unwrap())
        .collect()
}

#[test]
fn jsonl_and_sharegpt_prompts_replace_the_synthetic_ones_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("prompts.jsonl");
    std::fs::write(
        &jsonl,
        "{\"prompt\": \"one two three\"}\n{\"prompt\": \"a b c d e f g\"}\n",
    )
    .unwrap();
    let out = run(dir.path(), &["--dataset", "jsonl", jsonl.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The mock counts a word as a token; requests cycle through the two prompts.
    assert_eq!(prompt_tokens(dir.path()), [3, 7, 3, 7]);

    let dir = tempfile::tempdir().unwrap();
    let sharegpt = dir.path().join("sharegpt.json");
    std::fs::write(
        &sharegpt,
        r#"[{"conversations": [{"from": "human", "value": "hello there"}, {"from": "gpt", "value": "hi"}]},
            {"conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "what is a token anyway"}]}]"#,
    )
    .unwrap();
    let out = run(
        dir.path(),
        &["--dataset", "sharegpt", sharegpt.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(prompt_tokens(dir.path()), [2, 5, 2, 5]);
}

#[test]
fn a_bad_dataset_is_an_error_naming_the_kind_or_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["--dataset", "csv", "x.csv"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`csv` is not a dataset kind") && stderr.contains("sharegpt FILE"),
        "{stderr}"
    );
    let out = run(
        dir.path(),
        &["--dataset", "jsonl", "/nonexistent/prompts.jsonl"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read prompt file /nonexistent/prompts.jsonl"),
        "{stderr}"
    );
    assert!(!dir.path().join("out/short_input_metrics.json").exists());
    // One value only: clap says what it wants.
    let out = run(dir.path(), &["--dataset", "jsonl"]);
    assert_eq!(out.status.code(), Some(2));
}
