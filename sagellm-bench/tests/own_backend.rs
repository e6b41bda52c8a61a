//! Backends a crate registers with `#[backend]`, run by the `cargo bench` harness in-process:
//! an engine on its own thread timed when it pushes tokens, its own KV and memory figures, and
//! an engine that misbehaves in every way a stream can (each failure counted with its kind,
//! every file written).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use sagellm_bench::__private::run_harness;
use sagellm_bench::{
    backend, workload, Backend, BackendError, EngineFigures, FigureSource, GenerationRequest,
    KvFigures, MemoryFigures, StreamEvent, TokenSink, Usage,
};
use serde_json::Value;

/// Scripted engine timing: the first token this long after the request, then one every
/// `TOKEN_GAP`.
const FIRST_TOKEN: Duration = Duration::from_millis(30);
const TOKEN_GAP: Duration = Duration::from_millis(10);

/// An engine that decodes on a thread of its own per request and sleeps the scripted time per
/// token. Its stream blocks the reading thread until the whole script has run, as a runner busy
/// elsewhere would: stamped when read, every token would arrive at once after the script; the
/// figures can only match the script if each token is stamped when it is pushed.
struct Sleepy;

#[async_trait]
impl Backend for Sleepy {
    fn name(&self) -> &str {
        "sleepy"
    }

    fn model(&self) -> &str {
        "scripted-sleeps"
    }

    fn generate(&self, request: GenerationRequest) -> BoxStream<'static, StreamEvent> {
        let (mut sink, stream) = TokenSink::channel(&self.clock());
        std::thread::spawn(move || {
            std::thread::sleep(FIRST_TOKEN);
            for i in 0..request.max_output_tokens {
                if i > 0 {
                    std::thread::sleep(TOKEN_GAP);
                }
                if !sink.push(" tok", 1) {
                    return;
                }
            }
            sink.done(Some(Usage {
                prompt_tokens: request.prompt_tokens,
                completion_tokens: request.max_output_tokens,
            }));
        });
        let script = FIRST_TOKEN + TOKEN_GAP * request.max_output_tokens as u32;
        let late_reader = futures::stream::once(async move {
            std::thread::sleep(script + Duration::from_millis(50));
        })
        .filter_map(|()| async { None });
        late_reader.chain(stream).boxed()
    }

    async fn finish_workload(&self) -> Result<EngineFigures, BackendError> {
        Ok(EngineFigures {
            kv: Some(KvFigures {
                used_tokens: 4096,
                used_bytes: 8 << 20,
                prefix_hit_tokens: 30,
                prefix_query_tokens: 120,
                evict_count: 3,
                evict_ms: 1.5,
            }),
            memory: Some(MemoryFigures {
                peak_mb: 512.0,
                avg_mb: 384.0,
            }),
            source: Some(FigureSource::Measured),
            ..EngineFigures::default()
        })
    }
}

#[backend]
fn sleepy() -> Result<Sleepy, std::convert::Infallible> {
    Ok(Sleepy)
}

/// Each request misbehaves its own way, by its number.
struct Misbehaving {
    requests: AtomicUsize,
}

#[async_trait]
impl Backend for Misbehaving {
    fn name(&self) -> &str {
        "misbehaving"
    }

    fn model(&self) -> &str {
        "chaos"
    }

    fn generate(&self, _request: GenerationRequest) -> BoxStream<'static, StreamEvent> {
        let one = |text: &str| StreamEvent::Tokens {
            text: text.into(),
            tokens: 1,
        };
        match self.requests.fetch_add(1, Ordering::SeqCst) {
            0 => futures::stream::iter([one("a"), StreamEvent::Done { usage: None }]).boxed(),
            1 => panic!("the engine panicked in generate"),
            2 => futures::stream::iter([one("a")])
                .chain(futures::stream::poll_fn(|_| {
                    panic!("the engine panicked while streaming")
                }))
                .boxed(),
            // Hangs after one token: never another event.
            3 => futures::stream::iter([one("a")])
                .chain(futures::stream::pending())
                .boxed(),
            // Ends without Done or Error.
            4 => futures::stream::iter([one("a"), one("b")]).boxed(),
            // Its engine thread drops the sink without finishing.
            _ => {
                let (mut sink, stream) = TokenSink::channel(&self.clock());
                std::thread::spawn(move || {
                    sink.push("a", 1);
                });
                stream
            }
        }
    }
}

#[backend(name = "misbehaving")]
fn misbehaving_engine() -> Misbehaving {
    Misbehaving {
        requests: AtomicUsize::new(0),
    }
}

#[backend]
fn broken() -> Result<Sleepy, String> {
    Err("no accelerator found".to_string())
}

#[backend]
fn panics_when_built() -> Sleepy {
    panic!("the driver library is missing")
}

#[workload(
    backend = "sleepy",
    prompt_tokens = 16,
    output_tokens = 12,
    requests = 4,
    warmup = 0
)]
fn timed_by_push() {}

#[workload(backend = "misbehaving", output_tokens = 4, requests = 6, warmup = 0)]
fn every_fault() {}

#[workload(output_tokens = 4, requests = 2, warmup = 0)]
fn any_backend() {}

fn bench(out: &Path, args: &[&str]) -> u8 {
    let mut all = vec![
        "bench-binary",
        "--bench",
        "-q",
        "--output",
        out.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    run_harness(all)
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn an_engine_on_its_own_thread_is_timed_when_it_pushes_and_reports_its_own_figures() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(bench(dir.path(), &["--backend", "sleepy"]), 0);
    // Only the workloads for this backend, and those for any backend, ran.
    assert!(!dir.path().join("every_fault_metrics.json").exists());
    assert!(dir.path().join("any_backend_metrics.json").exists());
    let m = json(&dir.path().join("timed_by_push_metrics.json"));
    assert_eq!(m["backend"], "sleepy");
    assert_eq!(m["successful_requests"], 4);
    // Thread sleeps overshoot (the OS wakes a thread late, more so on a loaded machine), never
    // undershoot: each figure is at least the script's and at most 20 ms over it.
    let ttft = m["avg_ttft_ms"].as_f64().unwrap();
    let first = FIRST_TOKEN.as_secs_f64() * 1e3;
    assert!(ttft >= first && ttft < first + 20.0, "TTFT {ttft} ms");
    let tbt = m["avg_tbt_ms"].as_f64().unwrap();
    let gap = TOKEN_GAP.as_secs_f64() * 1e3;
    assert!(tbt >= gap && tbt < gap + 20.0, "TBT {tbt} ms");
    // The engine's own figures, marked measured.
    assert_eq!(m["kv_used_tokens"], 4096);
    assert_eq!(m["kv_used_bytes"], 8 << 20);
    assert_eq!(m["prefix_hit_rate"], 0.25);
    assert_eq!(m["evict_count"], 3);
    assert_eq!(m["peak_mem_mb"], 512.0);
    assert_eq!(m["avg_mem_mb"], 384.0);
    assert_eq!(m["sources"]["kv_cache"], "measured");
    assert_eq!(m["sources"]["memory"], "measured");
    let summary = json(&dir.path().join("benchmark_summary.json"));
    assert_eq!(summary["provenance"]["backend"], "sleepy");
}

#[test]
fn every_way_a_backend_can_fail_is_a_counted_failure_and_every_file_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let status = bench(
        dir.path(),
        &[
            "--backend",
            "misbehaving",
            "--stall-timeout",
            "0.3",
            "every_fault",
        ],
    );
    assert_eq!(
        status, 0,
        "one request succeeded, so the run measured something"
    );
    let m = json(&dir.path().join("every_fault_metrics.json"));
    assert_eq!(m["total_requests"], 6);
    assert_eq!(m["successful_requests"], 1);
    assert_eq!(m["failed_requests"], 5);
    let mut kinds: Vec<(u64, String, String)> =
        records(&dir.path().join("every_fault_requests.jsonl"))
            .iter()
            .filter(|r| !r["error"].is_null())
            .map(|r| {
                (
                    r["index"].as_u64().unwrap(),
                    r["error"]["kind"].as_str().unwrap().to_string(),
                    r["error"]["message"].as_str().unwrap().to_string(),
                )
            })
            .collect();
    kinds.sort();
    let expected = [
        (1, "engine", "panicked in generate"),
        (2, "engine", "panicked while streaming"),
        (3, "timeout", "stall timeout"),
        (4, "protocol", "without a final event"),
        (5, "engine", "without finishing"),
    ];
    assert_eq!(kinds.len(), expected.len(), "{kinds:?}");
    for ((index, kind, message), (e_index, e_kind, e_words)) in kinds.iter().zip(expected) {
        assert_eq!((*index, kind.as_str()), (e_index, e_kind), "{message}");
        assert!(message.contains(e_words), "{index}: {message}");
    }
    for file in [
        "benchmark_summary.json",
        "index.html",
        "every_fault_ttft_cdf.svg",
    ] {
        assert!(dir.path().join(file).exists(), "{file}");
    }
}

#[test]
fn a_backend_that_cannot_be_built_is_an_error_naming_it_and_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        bench(dir.path(), &["--backend", "broken", "any_backend"]),
        1
    );
    assert!(!dir.path().join("benchmark_summary.json").exists());
}

#[test]
fn flags_no_registered_backend_reads_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // --model names a built-in backend's model; a registered engine picks its own.
    assert_eq!(
        bench(
            dir.path(),
            &["--backend", "sleepy", "--model", "x", "any_backend"]
        ),
        2
    );
    assert_eq!(
        bench(dir.path(), &["--backend", "nonexistent", "any_backend"]),
        2
    );
}

#[test]
fn a_smoke_test_runs_every_workload_on_the_mock() {
    // Without --bench (cargo test --benches), workloads for a registered backend run on the mock
    // too, so a test run never needs the engine.
    assert_eq!(run_harness(["bench-binary", "-q"]), 0);
}
