//! Reasoning streams and the server's `/tokenize`, against the scripted test server on
//! 127.0.0.1; and reasoning from a backend of one's own, through its `TokenSink`.
//!
//! Reasoning: the server streams `R` reasoning chunks `reasoning_itl` apart from `ttft`, then
//! the answer `itl` apart, so the first answer token is due at `ttft + R * reasoning_itl`. The
//! bounds are those of `openai_backend.rs` (each scripted instant is met within the timer's
//! millisecond plus scheduling delay on 2 shared cores): a measured TTFT or TTFO is never more
//! than 0.5 ms below the script, and its median at most 6 ms above it.
//!
//! `/tokenize`: the server counts `tokens_per_word` tokens per word, in its usage blocks and
//! its `/tokenize` alike, so a prompt cut through it must reach the server's usage count
//! exactly; every broken answer of the endpoint must leave the run as it is without one.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use sagellm_bench::backend::openai::{Api, OpenAiBackend, OpenAiConfig};
use sagellm_bench::report::Reports;
use sagellm_bench::results::record::TokenCountSource;
use sagellm_bench::results::summary::Provenance;
use sagellm_bench::{Arrival, Workload};
use sagellm_bench::{Backend, GenerationRequest, StreamEvent, TokenSink, Usage};
use sagellm_test_server::{ReasoningField, Script, TestServer, Tokenize, UsagePlacement};

mod support;
use support::{Collect, Measured};

fn workload(name: &str, prompt: usize, output: usize, requests: usize, conc: usize) -> Workload {
    Workload {
        warmup_requests: 1,
        arrival: Arrival::Closed { concurrency: conc },
        seed: 7,
        ..Workload::new(name, prompt, output, requests)
    }
}

fn config(server: &TestServer, api: Api) -> OpenAiConfig {
    OpenAiConfig {
        base_url: Some(server.url()),
        api,
        stall_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        no_metrics: true,
        ..OpenAiConfig::default()
    }
}

fn run(config: OpenAiConfig, workloads: &[Workload]) -> Vec<Measured> {
    let backend = Arc::new(OpenAiBackend::connect("openai", config).expect("backend"));
    let collected = Collect::default();
    let mut reports = Reports::new(vec![Box::new(collected.clone())]);
    let provenance = Provenance::now("openai", "test-model", serde_json::Value::Null);
    sagellm_bench::run(backend, workloads, provenance, &mut reports).expect("run");
    collected.measured()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    (values[(n - 1) / 2] + values[n / 2]) / 2.0
}

/// Checks `values` against a scripted instant, as the module says.
fn near_script(what: &str, values: Vec<f64>, script_ms: f64) {
    for v in &values {
        assert!(
            *v >= script_ms - 0.5,
            "{what} {v} ms below the script's {script_ms}"
        );
    }
    let m = median(values);
    eprintln!("{what}: median {m:.3} ms, script {script_ms} ms");
    assert!(
        m <= script_ms + 6.0,
        "{what} median {m} ms, script {script_ms}"
    );
}

#[test]
fn ttft_and_ttfo_match_a_scripted_reasoning_phase() {
    for (field, concurrency) in [
        (ReasoningField::ReasoningContent, 1),
        (ReasoningField::Reasoning, 4),
    ] {
        let (ttft, reasoning_itl, itl) = (30u64, 4u64, 2u64);
        let server = TestServer::start(
            Script {
                ttft: Duration::from_millis(ttft),
                itl: Duration::from_millis(itl),
                reasoning_tokens: 10,
                reasoning_itl: Duration::from_millis(reasoning_itl),
                reasoning_field: field,
                ..Script::default()
            },
            1,
        )
        .unwrap();
        let results = run(
            config(&server, Api::Chat),
            &[workload("think", 16, 20, 8, concurrency)],
        );
        let result = &results[0];
        let m = &result.metrics;
        assert_eq!(m.failed_requests, 0, "{:?}", result.records[0].error);
        for r in &result.records {
            // 20 tokens asked: the first 10 reasoning, the other 10 the answer, as usage says.
            assert_eq!((r.output_tokens, r.reasoning_tokens), (20, 10), "{field:?}");
            assert_eq!(r.answer_tokens(), 10);
            assert_eq!(r.output_tokens_source, TokenCountSource::Usage);
            assert_eq!(r.reasoning_counts, [[1; 10], [0; 10]].concat());
        }
        let of = |f: fn(&sagellm_bench::results::record::RequestRecord) -> Option<f64>| {
            result.records.iter().filter_map(f).collect::<Vec<f64>>()
        };
        // TTFT is the first token of either kind: the first reasoning chunk.
        near_script("TTFT", of(|r| r.ttft_ms), ttft as f64);
        // TTFO: after 10 reasoning chunks 4 ms apart.
        let ttfo_script = (ttft + 10 * reasoning_itl) as f64;
        near_script("TTFO", of(|r| r.ttfo_ms), ttfo_script);
        let p50 = m.p50_ttfo_ms.expect("TTFO aggregated in a reasoning run");
        assert!(
            (ttfo_script - 0.5..=ttfo_script + 6.0).contains(&p50),
            "{p50}"
        );
        assert_eq!(
            (m.total_reasoning_tokens, m.total_answer_tokens),
            (Some(80), Some(80))
        );
        assert_eq!(m.total_output_tokens, 160);
        // The answer's pace is its own 2 ms, where the ITL over all gaps mixes in the 4 ms
        // of the thinking: (10 * 4 + 9 * 2) / 19 = 3.05 ms.
        let answer_itl = m.avg_answer_itl_ms.unwrap();
        assert!((answer_itl - itl as f64).abs() < 1.0, "{answer_itl}");
        assert!((m.avg_itl_ms - 58.0 / 19.0).abs() < 1.0, "{}", m.avg_itl_ms);
        let answer_tbt = m.avg_answer_tbt_ms.unwrap();
        assert!((answer_tbt - itl as f64).abs() < 1.0, "{answer_tbt}");
        assert!(m.avg_answer_tpot_ms.unwrap() > m.avg_tpot_ms);
    }
}

#[test]
fn a_stream_without_reasoning_has_no_reasoning_figures() {
    // The completions endpoint never reasons: no TTFO, no answer-only figures in the file.
    let server = TestServer::start(
        Script {
            reasoning_tokens: 10,
            ..Script::default()
        },
        1,
    )
    .unwrap();
    let results = run(
        config(&server, Api::Completions),
        &[workload("plain", 16, 8, 3, 1)],
    );
    let m = &results[0].metrics;
    assert_eq!(m.failed_requests, 0);
    assert_eq!((m.avg_ttfo_ms, m.total_reasoning_tokens), (None, None));
    let r = &results[0].records[0];
    assert_eq!(
        (r.reasoning_tokens, r.ttfo_ms, r.ttfo()),
        (0, None, r.ttft_ms)
    );
    let json = serde_json::to_string(m).unwrap();
    assert!(
        !json.contains("ttfo") && !json.contains("answer_"),
        "{json}"
    );
}

#[test]
fn prompts_are_cut_to_the_exact_count_through_tokenize() {
    // Two tokens a word: a 64-token prompt is 32 words. 33 tokens cannot be reached in whole
    // words, so the nearest below (32) is sent and recorded.
    let server = TestServer::start(
        Script {
            tokens_per_word: 2,
            ttft: Duration::from_millis(5),
            itl: Duration::from_millis(1),
            ..Script::default()
        },
        1,
    )
    .unwrap();
    let results = run(
        config(&server, Api::Completions),
        &[workload("even", 64, 4, 5, 2), workload("odd", 33, 4, 3, 1)],
    );
    let probed = server.tokenize_requests();
    for (result, expected) in results.iter().zip([64, 32]) {
        assert_eq!(result.metrics.failed_requests, 0);
        for r in &result.records {
            // The record's prompt length is the server's usage count.
            assert_eq!(r.prompt_tokens, expected, "{}", result.workload.name);
        }
    }
    assert!(probed > 0);
    // A prompt without /tokenize keeps its 64 words, which the server counts as 128.
    let results = run(
        OpenAiConfig {
            no_tokenize: true,
            ..config(&server, Api::Completions)
        },
        &[workload("uncut", 64, 4, 2, 1)],
    );
    assert!(results[0].records.iter().all(|r| r.prompt_tokens == 128));
    assert_eq!(
        server.tokenize_requests(),
        probed,
        "--no-tokenize asks nothing"
    );
}

#[test]
fn output_without_usage_is_counted_by_the_servers_tokenize() {
    // Four tokens a chunk: the stream's count is 4 chunks, the server's tokenizer finds the 16
    // words of the answer.
    let server = TestServer::start(
        Script {
            usage: UsagePlacement::Omitted,
            tokens_per_chunk: 4,
            ttft: Duration::from_millis(5),
            itl: Duration::from_millis(1),
            ..Script::default()
        },
        1,
    )
    .unwrap();
    let results = run(
        config(&server, Api::Completions),
        &[workload("counted", 8, 16, 3, 1)],
    );
    for r in &results[0].records {
        assert_eq!(r.output_tokens_source, TokenCountSource::ServerTokenizer);
        assert_eq!((r.output_tokens, r.stream_tokens), (16, 4));
    }
    assert_eq!(
        results[0].metrics.sources.output_tokens,
        sagellm_bench::results::metrics::OutputTokenSource::ServerTokenizer
    );
}

#[test]
fn hostile_tokenize_answers_leave_the_run_as_without_one() {
    for answer in [
        Tokenize::Missing,
        Tokenize::NotJson,
        Tokenize::WrongShape,
        Tokenize::Absurd,
        Tokenize::Zero,
        Tokenize::Inconsistent,
    ] {
        let server = TestServer::start(
            Script {
                tokenize: answer,
                usage: UsagePlacement::Omitted,
                tokens_per_chunk: 4,
                ttft: Duration::from_millis(2),
                itl: Duration::from_millis(1),
                ..Script::default()
            },
            1,
        )
        .unwrap();
        let results = run(
            config(&server, Api::Completions),
            &[workload("a", 24, 8, 2, 1), workload("b", 24, 8, 2, 1)],
        );
        for result in &results {
            assert_eq!(result.metrics.failed_requests, 0, "{answer:?}");
            for r in &result.records {
                // Prompts as the workload built them (24 words), output counted per chunk.
                assert_eq!(r.prompt_tokens, 24, "{answer:?}");
                assert_eq!(
                    r.output_tokens_source,
                    TokenCountSource::Stream,
                    "{answer:?}"
                );
                assert_eq!(r.output_tokens, 2, "{answer:?}");
            }
        }
        // Probed once in each shape, at the first workload, and never asked again.
        assert_eq!(server.tokenize_requests(), 2, "{answer:?}");
    }
}

/// An engine of one's own that thinks for 3 tokens 10 ms apart, waits 20 ms, then answers with
/// 2 tokens 5 ms apart, pushing into its `TokenSink`.
struct Thinker;

#[async_trait::async_trait]
impl Backend for Thinker {
    fn name(&self) -> &str {
        "thinker"
    }

    fn model(&self) -> &str {
        "thinker"
    }

    fn generate(&self, request: GenerationRequest) -> BoxStream<'static, StreamEvent> {
        let (mut sink, stream) = TokenSink::channel(&self.clock());
        std::thread::spawn(move || {
            for i in 0..3 {
                std::thread::sleep(Duration::from_millis(if i == 0 { 5 } else { 10 }));
                sink.push_reasoning("hmm ", 1);
            }
            for i in 0..2 {
                std::thread::sleep(Duration::from_millis(if i == 0 { 20 } else { 5 }));
                sink.push("yes ", 1);
            }
            sink.done(Some(Usage {
                prompt_tokens: request.prompt_tokens,
                completion_tokens: 5,
            }));
        });
        stream
    }
}

#[test]
fn a_backend_of_ones_own_reports_reasoning_through_its_token_sink() {
    let collected = Collect::default();
    let mut reports = Reports::new(vec![Box::new(collected.clone())]);
    let provenance = Provenance::now("thinker", "thinker", serde_json::Value::Null);
    let w = workload("own", 4, 5, 3, 1);
    sagellm_bench::run(Arc::new(Thinker), &[w], provenance, &mut reports).expect("run");
    let results = collected.measured();
    for r in &results[0].records {
        assert_eq!((r.reasoning_tokens, r.answer_tokens()), (3, 2));
        assert_eq!(r.reasoning_counts, [1, 1, 1, 0, 0]);
        // The first answer token comes 20 ms after the third reasoning one, 40 ms after the
        // first: stamped when pushed, within scheduling noise.
        let gap = r.ttfo().unwrap() - r.ttft_ms.unwrap();
        assert!((40.0..60.0).contains(&gap), "TTFO - TTFT {gap}");
        assert_eq!(r.answer_gaps().count(), 1);
    }
    let m = &results[0].metrics;
    assert_eq!(
        (m.total_reasoning_tokens, m.total_answer_tokens),
        (Some(9), Some(6))
    );
}
