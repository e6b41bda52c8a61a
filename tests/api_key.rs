//! The API key reaches the server but never any file the tool writes, nor its logs.

use std::process::Command;

use sagellm_test_server::{Script, TestServer};

const SECRET: &str = "sk-test-7f3a9c1e5b2d4086a1b2c3d4e5f60718";

fn benchmark() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
}

#[test]
fn the_api_key_is_sent_but_never_written_or_logged() {
    let server = TestServer::start(
        Script {
            ttft: std::time::Duration::from_millis(1),
            itl: std::time::Duration::from_millis(1),
            api_key: Some(SECRET.to_string()),
            ..Script::default()
        },
        1,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tiny.toml");
    std::fs::write(
        &config,
        "[workloads.tiny]\nprompt_tokens = 8\noutput_tokens = 4\nnum_requests = 3\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let output = benchmark()
        .args(["run", "--backend", "openai", "--base-url", &server.url()])
        .args([
            "--api-key-env",
            "SAGELLM_TEST_API_KEY",
            "--workload",
            "tiny",
        ])
        .arg("--config")
        .arg(&config)
        .arg("-o")
        .arg(&out)
        .arg("-v")
        .env("SAGELLM_TEST_API_KEY", SECRET)
        .env("SAGELLM_LOG", "trace")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));
    // The key worked: the server accepted every request.
    let summary = std::fs::read_to_string(out.join("benchmark_summary.json")).unwrap();
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["overall"]["failed_requests"], 0, "{summary}");
    assert_eq!(
        summary["provenance"]["backend_settings"]["api_key_env"],
        "SAGELLM_TEST_API_KEY"
    );
    let mut files = 0;
    for entry in std::fs::read_dir(&out).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(SECRET));
        files += 1;
    }
    assert!(files >= 3);

    // A wrong key: every request fails with HTTP 401, counted, and the run still writes files.
    let out = dir.path().join("wrong");
    let output = benchmark()
        .args(["run", "--backend", "openai", "--base-url", &server.url()])
        .args([
            "--api-key-env",
            "SAGELLM_TEST_API_KEY",
            "--workload",
            "tiny",
        ])
        .args(["--model", "test-model", "-q"])
        .arg("--config")
        .arg(&config)
        .arg("-o")
        .arg(&out)
        .env("SAGELLM_TEST_API_KEY", "sk-wrong")
        .output()
        .unwrap();
    // Nothing was measured: the run fails and names the first failure.
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("every request of tiny failed") && stderr.contains("http: HTTP 401"),
        "{stderr}"
    );
    let summary = std::fs::read_to_string(out.join("benchmark_summary.json")).unwrap();
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["overall"]["failed_requests"], 3);
    let records = std::fs::read_to_string(out.join("tiny_requests.jsonl")).unwrap();
    assert!(records.contains("401"), "{records}");
}

#[test]
fn a_missing_key_variable_is_a_clear_error() {
    let output = benchmark()
        .args([
            "run",
            "--backend",
            "openai",
            "--base-url",
            "http://127.0.0.1:9",
        ])
        .args([
            "--api-key-env",
            "SAGELLM_TEST_UNSET_VARIABLE",
            "--model",
            "m",
        ])
        .env_remove("SAGELLM_TEST_UNSET_VARIABLE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("SAGELLM_TEST_UNSET_VARIABLE") && stderr.contains("not set"),
        "{stderr}"
    );
}
