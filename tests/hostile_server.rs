//! Servers that lie, leak and flood, each a few lines of raw HTTP on 127.0.0.1, against the
//! real binary: the API key a server quotes back, a credential in the URL's query, an endless
//! error body, an endless stream line, a usage count that would wrap the totals, escape
//! sequences in a model id, and a proxy in the environment. Nothing secret may reach a file or
//! the terminal, nothing may take memory or time in proportion to what the server sends, and
//! no number may wrap.

#[path = "common/raw_server.rs"]
mod raw_server;
#[path = "common/run_cli.rs"]
mod run_cli;

use std::io::Write;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use raw_server::{answer, completion_events, serve, stream};

/// Runs 2 requests of 4 tokens against `base_url`; returns the process output and the run,
/// whose folder holds the files.
fn run(base_url: &str, env: &[(&str, &str)], extra: &[&str]) -> (Output, run_cli::Run) {
    let mut args = vec![
        "--backend",
        "openai",
        "--no-metrics",
        "--base-url",
        base_url,
    ];
    args.extend_from_slice(extra);
    let run = run_cli::run(
        "w",
        "prompt_tokens = 8\noutput_tokens = 4\nnum_requests = 2\nwarmup_requests = 0",
        &args,
        env,
    );
    (run.output.clone(), run)
}

/// Every byte the run wrote: its stdout, its stderr and each file of its output folder.
fn everything_written(output: &Output, out: &Path) -> String {
    let mut all = String::from_utf8_lossy(&output.stdout).to_string();
    all.push_str(&String::from_utf8_lossy(&output.stderr));
    for entry in std::fs::read_dir(out).unwrap() {
        let path = entry.unwrap().path();
        all.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
    }
    all
}

/// A server that quotes the API key in its 401 answer: the key is in no file and not on the
/// terminal, even with `-v`.
#[test]
fn a_key_quoted_back_is_redacted() {
    let key = "sk-test-4242-very-secret";
    let (url, _) = serve(move |head, socket| {
        if head.starts_with("GET") {
            return answer(socket, "404 Not Found", "text/plain", "no");
        }
        let body = format!(
            "{{\"error\":{{\"message\":\"Incorrect API key provided: {key}. You can find your API key at ...\"}}}}"
        );
        answer(socket, "401 Unauthorized", "application/json", &body);
    });
    let (output, dir) = run(
        &url,
        &[("SAGELLM_HOSTILE_KEY", key)],
        &["--api-key-env", "SAGELLM_HOSTILE_KEY", "--model", "m", "-v"],
    );
    let all = everything_written(&output, &dir.out());
    assert!(!all.contains("4242-very"), "the key leaked:\n{all}");
    // Nothing was measured: the run fails, naming the first failure, redacted too.
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("the first failure: http: HTTP 401"),
        "{output:?}"
    );
    let r = dir.records("w");
    assert_eq!(r[0]["error"]["kind"], "http");
    assert!(
        r[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("<redacted>"),
        "{}",
        r[0]["error"]
    );
}

/// A credential in the base URL's query goes with every request (gateways authenticate so)
/// and into no file; the URL is not mangled by the `/v1` the tool appends.
#[test]
fn a_credential_in_the_url_query_is_sent_and_never_written() {
    let (url, seen) = serve(|head, socket| {
        if head.starts_with("GET") {
            return answer(socket, "404 Not Found", "text/plain", "no");
        }
        stream(socket, 4, "4");
    });
    let base = format!("{url}/v1?api_key=q-secret-777&api-version=2024");
    let (output, dir) = run(&base, &[], &["--model", "m"]);
    assert!(output.status.success(), "{output:?}");
    let posts: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("POST /v1/"))
        .cloned()
        .collect();
    assert_eq!(posts.len(), 2);
    assert!(
        posts[0].starts_with("POST /v1/completions?api_key=q-secret-777&api-version=2024 "),
        "{posts:?}"
    );
    // The probe of the server's /tokenize (answered with a stream here, so not used) carries
    // the query too.
    let probes: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("POST /tokenize"))
        .cloned()
        .collect();
    assert!(
        probes
            .iter()
            .all(|p| p.starts_with("POST /tokenize?api_key=q-secret-777&api-version=2024 ")),
        "{probes:?}"
    );
    let all = everything_written(&output, &dir.out());
    assert!(
        !all.contains("q-secret-777"),
        "the credential leaked:\n{all}"
    );
    assert!(
        all.contains("api-version=2024"),
        "the harmless query is kept"
    );
}

/// An error answer announcing 256 MiB and streaming it: the client reads a little of it,
/// keeps a short message, and is done in seconds.
#[test]
fn an_endless_error_body_is_read_only_in_part() {
    let (url, _) = serve(|head, socket| {
        if head.starts_with("GET") {
            return answer(socket, "404 Not Found", "text/plain", "no");
        }
        let _ = write!(
            socket,
            "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
            256u64 << 20
        );
        let block = vec![b'x'; 1 << 16];
        for _ in 0..4096 {
            if socket.write_all(&block).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let (_, dir) = run(&url, &[], &["--model", "m"]);
    assert!(started.elapsed() < Duration::from_secs(30));
    let r = dir.records("w");
    assert_eq!(r.len(), 2);
    assert_eq!(r[0]["error"]["kind"], "http");
    let size = std::fs::metadata(dir.out().join("w_requests.jsonl"))
        .unwrap()
        .len();
    assert!(size < 10_000, "records of {size} bytes");
}

/// A streamed answer whose one line never ends: the request fails as a protocol fault once the
/// line passes the limit, in time linear in the bytes, instead of buffering without bound.
#[test]
fn an_endless_stream_line_fails_its_request() {
    let (url, _) = serve(|head, socket| {
        if head.starts_with("GET") {
            return answer(socket, "404 Not Found", "text/plain", "no");
        }
        let _ = write!(
            socket,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\ndata: "
        );
        let block = vec![b'a'; 1 << 16];
        for _ in 0..1024 {
            if socket.write_all(&block).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let (_, dir) = run(&url, &[], &["--model", "m"]);
    assert!(started.elapsed() < Duration::from_secs(30));
    for r in dir.records("w") {
        assert_eq!(r["error"]["kind"], "protocol", "{r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("longer than 4 MiB"),
            "{r}"
        );
    }
}

/// A usage count near `u64::MAX` would wrap the workload's token totals: the request is a
/// protocol failure instead, and the totals hold.
#[test]
fn a_usage_count_that_would_wrap_is_refused() {
    let (url, _) = serve(|head, socket| {
        if head.starts_with("GET") {
            return answer(socket, "404 Not Found", "text/plain", "no");
        }
        stream(socket, 4, "18446744073709551615");
    });
    let (output, dir) = run(&url, &[], &["--model", "m"]);
    let r = dir.records("w");
    assert!(r.iter().all(|r| r["error"]["kind"] == "protocol"), "{r:?}");
    let metrics = dir.metrics("w");
    assert_eq!(metrics["total_output_tokens"], 0, "{output:?}");
}

/// Model ids with terminal escape sequences are printed without them.
#[test]
fn escape_sequences_from_the_server_are_not_printed() {
    let (url, _) = serve(|head, socket| {
        if head.starts_with("GET") {
            let body = "{\"data\":[{\"id\":\"evil\\u001b[31m\\u001b]0;pwned\\u0007\"},{\"id\":\"other\"}]}";
            return answer(socket, "200 OK", "application/json", body);
        }
        stream(socket, 4, "4");
    });
    let (output, _dir) = run(&url, &[("NO_COLOR", "1")], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("serves 2 models"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}

/// A proxy in the environment is not used for a server on loopback (the proxy here refuses
/// every connection, so any request through it would fail), and none is recorded.
#[test]
fn loopback_bypasses_the_environment_proxy() {
    let (url, _) = serve(|head, socket| {
        if head.starts_with("GET") {
            return answer(socket, "404 Not Found", "text/plain", "no");
        }
        stream(socket, 4, "4");
    });
    let refused = "http://127.0.0.1:9";
    let (output, dir) = run(
        &url,
        &[
            ("HTTP_PROXY", refused),
            ("http_proxy", refused),
            ("ALL_PROXY", refused),
        ],
        &["--model", "m"],
    );
    assert!(output.status.success(), "{output:?}");
    assert!(dir.records("w").iter().all(|r| r["success"] == true));
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.out().join("benchmark_summary.json")).unwrap(),
    )
    .unwrap();
    let settings = summary.to_string();
    assert!(settings.contains("\"proxy\":null"), "{settings}");
}

/// The stall timeout is "no byte for that long", not "no event": a server that sends one chunk
/// a byte at a time, each byte well inside the timeout but the whole chunk far past it, is slow,
/// not stalled; one that goes silent is stalled.
#[test]
fn the_stall_timeout_waits_for_bytes_not_events() {
    let (url, _) = serve(|head, socket| {
        if head.starts_with("GET") {
            return answer(socket, "404 Not Found", "text/plain", "no");
        }
        let _ = write!(
            socket,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
        );
        let first =
            "data: {\"choices\":[{\"index\":0,\"text\":\"tok \",\"finish_reason\":null}]}\n\n";
        for byte in first.bytes() {
            if socket.write_all(&[byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(15));
        }
        let _ = socket.write_all(completion_events(3, "4").as_bytes());
    });
    // About 75 bytes at 15 ms: over a second for the first event, with a 0.4 s stall limit.
    let (output, dir) = run(&url, &[], &["--model", "m", "--stall-timeout", "0.4"]);
    let r = dir.records("w");
    assert!(r.iter().all(|r| r["success"] == true), "{r:?} {output:?}");
    assert!(r[0]["ttft_ms"].as_f64().unwrap() > 800.0);
}

/// The first failure the run printed on stderr, for servers whose every request fails.
fn first_failure(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    stderr
}

#[test]
fn answers_that_are_not_an_event_stream_name_their_cause() {
    let cases: [(&str, &str, &str, &[&str]); 3] = [
        (
            "application/json",
            "",
            r#"{"id":"x","choices":[{"text":"hi","finish_reason":"length"}]}"#,
            &[
                "one JSON body (application/json)",
                "ignored `\"stream\": true`",
                "\"choices\"",
            ],
        ),
        (
            "text/html; charset=utf-8",
            "",
            "<html><title>Sign in</title></html>",
            &[
                "an HTML page (text/html)",
                "--base-url points at a web page",
                "Sign in",
            ],
        ),
        (
            "text/event-stream",
            "content-encoding: gzip\r\n",
            "\u{1f}\u{8b}\u{8}\u{0}binary",
            &[
                "compressed its answer (Content-Encoding: gzip)",
                "turn compression off",
            ],
        ),
    ];
    for (content_type, extra_header, body, words) in cases {
        let (url, _) = serve(move |head, socket| {
            if head.starts_with("GET") {
                return answer(socket, "404 Not Found", "text/plain", "no");
            }
            let _ = write!(
                socket,
                "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n{extra_header}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        });
        let (output, dir) = run(&url, &[], &["--model", "m"]);
        let stderr = first_failure(&output);
        for words in words {
            assert!(
                stderr.contains(words),
                "{content_type}: `{words}` not in {stderr}"
            );
        }
        for r in dir.records("w") {
            assert_eq!(r["error"]["kind"], "protocol", "{r}");
        }
    }
}

/// A listener answering every connection with `reply` once it has read something.
fn replying_with(reply: &'static [u8]) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { continue };
            std::thread::spawn(move || {
                use std::io::Read;
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf);
                let _ = socket.write_all(reply);
            });
        }
    });
    addr.to_string()
}

#[test]
fn a_scheme_the_server_does_not_speak_is_named() {
    // https to a plain HTTP server: it answers the TLS hello with a 400 in plain text.
    let plain = replying_with(
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    );
    let (output, _) = run(&format!("https://{plain}"), &[], &["--model", "m"]);
    let stderr = first_failure(&output);
    assert!(
        stderr.contains("the server does not speak TLS") && stderr.contains("use http://"),
        "{stderr}"
    );
    // The same without --model: the /v1/models lookup says it, before any request.
    let (output, _) = run(&format!("https://{plain}"), &[], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("use http:// in --base-url"), "{stderr}");

    // http to a TLS server: it answers the plain request with a TLS alert record.
    let tls = replying_with(&[0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46]);
    let (output, _) = run(&format!("http://{tls}"), &[], &["--model", "m"]);
    let stderr = first_failure(&output);
    assert!(
        stderr.contains("the answer is not HTTP") && stderr.contains("use https://"),
        "{stderr}"
    );
}
