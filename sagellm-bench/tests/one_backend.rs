//! A crate that registers exactly one backend: `cargo bench` without `--backend` runs on it
//! (and says so), `--backend mock` still picks the simulated engine.

use futures::stream::{BoxStream, StreamExt};
use sagellm_bench::__private::run_harness;
use sagellm_bench::{backend, workload, Backend, GenerationRequest, StreamEvent};

/// Answers every request with its tokens at once, stamped when read.
struct Instant;

impl Backend for Instant {
    fn name(&self) -> &str {
        "instant"
    }

    fn model(&self) -> &str {
        "instant-1"
    }

    fn generate(&self, request: GenerationRequest) -> BoxStream<'static, StreamEvent> {
        let tokens = (0..request.max_output_tokens).map(|_| StreamEvent::Tokens {
            text: " x".into(),
            tokens: 1,
        });
        futures::stream::iter(tokens.chain([StreamEvent::Done { usage: None }])).boxed()
    }
}

#[backend]
fn instant() -> Instant {
    Instant
}

#[workload(output_tokens = 3, requests = 2, warmup = 0)]
fn tiny() {}

fn summary_backend(dir: &std::path::Path) -> String {
    let text = std::fs::read_to_string(dir.join("benchmark_summary.json")).unwrap();
    let summary: serde_json::Value = serde_json::from_str(&text).unwrap();
    summary["provenance"]["backend"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn without_backend_the_one_registered_backend_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    assert_eq!(run_harness(["b", "--bench", "-q", "--output", out]), 0);
    assert_eq!(summary_backend(dir.path()), "instant");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let args = ["b", "--bench", "-q", "--backend", "mock", "--output", out];
    assert_eq!(run_harness(args), 0);
    assert_eq!(summary_backend(dir.path()), "mock");
}
