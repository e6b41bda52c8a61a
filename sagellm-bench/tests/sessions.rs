//! Multi-turn sessions and trace replay on the mock, against figures derived by hand from the
//! conversation's lengths and the mock's documented step model (step 8 ms + 0.04 ms per
//! prefilled token; 16-token KV blocks; full prompt blocks cached).

use std::sync::Arc;
use std::time::Duration;

use sagellm_bench::backend::mock::{MockBackend, MockConfig};
use sagellm_bench::backend::ErrorKind;
use sagellm_bench::results::summary::Provenance;
use sagellm_bench::workload::session::{Sessions, ThinkTime};
use sagellm_bench::workload::trace::{Trace, TraceFormat, TraceOptions};
use sagellm_bench::{Arrival, Workload};

mod support;
use support::{Collect, Measured};

fn run_one(config: MockConfig, workload: Workload) -> Measured {
    let backend = Arc::new(MockBackend::new(config, None).unwrap());
    let mut collect = Collect::default();
    let provenance = Provenance::now("mock", "mock", serde_json::Value::Null);
    sagellm_bench::run(backend, &[workload], provenance, &mut collect).unwrap();
    collect.measured().remove(0)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// 3 sessions of 4 turns: a 400-word system prompt of each session's own, 40-word user
/// messages, 24-token answers.
fn conversation(concurrency: usize) -> Workload {
    let mut sessions = Sessions::synthetic(3, 4, 40);
    sessions.system_prompt_tokens = 400;
    let mut w = Workload::multi_turn("chat", sessions, 24);
    w.arrival = Arrival::Closed { concurrency };
    w
}

// By hand: turn k's prompt is 440 + 64k words (system 400, user 40, then 24 + 40 per turn).
// The mock caches the full 16-token blocks of every prompt it has prefilled, and turn k's
// prompt starts with turn k-1's, so turn k finds floor((440 + 64(k-1)) / 16) blocks cached:
// 27, 31, 35 blocks = 432, 496, 560 tokens. Uncached: 440 at turn 0, then 72 every turn.
const PROMPTS: [usize; 4] = [440, 504, 568, 632];
const CACHED: [usize; 4] = [0, 432, 496, 560];

#[test]
fn each_turn_carries_the_conversation_and_finds_the_previous_turn_cached() {
    let r = run_one(MockConfig::default(), conversation(1));
    assert_eq!(r.records.len(), 12);
    for record in &r.records {
        let turn = record.turn.unwrap();
        assert_eq!(record.session, Some(record.index / 4));
        assert_eq!(turn, record.index % 4);
        assert_eq!(record.prompt_tokens, PROMPTS[turn], "{record:?}");
        assert_eq!(record.cached_prompt_tokens, Some(CACHED[turn]));
        // Sequential, one prefill step: 8 ms + 0.04 ms per uncached token.
        let uncached = (PROMPTS[turn] - CACHED[turn]) as f64;
        assert!(close(record.ttft_ms.unwrap(), 8.0 + 0.04 * uncached));
    }
    let turns = &r.metrics.turns;
    assert_eq!(turns.len(), 4);
    // TTFT falls from 25.6 ms at turn 0 to 10.88 ms once the conversation is cached.
    assert!(close(turns[0].avg_ttft_ms, 25.6));
    for (k, t) in turns.iter().enumerate().skip(1) {
        assert!(close(t.avg_ttft_ms, 10.88), "turn {k}: {}", t.avg_ttft_ms);
        let rate = CACHED[k] as f64 / PROMPTS[k] as f64;
        assert!(close(t.prefix_hit_rate.unwrap(), rate));
        assert_eq!(t.avg_prompt_tokens, PROMPTS[k] as f64);
    }
    assert_eq!(turns[0].prefix_hit_rate, Some(0.0));
    // The engine's own figure over the workload agrees: cached over prompt tokens.
    let cached: usize = 3 * CACHED.iter().sum::<usize>();
    let prompt: usize = 3 * PROMPTS.iter().sum::<usize>();
    assert!(close(
        r.metrics.prefix_hit_rate,
        cached as f64 / prompt as f64
    ));
    let s = r.metrics.sessions.as_ref().unwrap();
    assert_eq!(
        (s.sessions, s.completed_sessions, s.turns, s.turns_not_sent),
        (3, 3, 12, 0)
    );
}

#[test]
fn interleaved_sessions_find_the_same_prefixes() {
    // Three sessions at once: their turns batch together, yet every prompt still starts with
    // its own session's previous turn, so the cached counts are the sequential ones.
    let r = run_one(MockConfig::default(), conversation(3));
    for record in &r.records {
        let turn = record.turn.unwrap();
        assert_eq!(
            record.cached_prompt_tokens,
            Some(CACHED[turn]),
            "{record:?}"
        );
    }
    // Without a prefix cache nothing is cached and every turn prefills its whole prompt, so
    // its TTFT grows with the conversation.
    let off = MockConfig {
        prefix_caching: false,
        ..MockConfig::default()
    };
    let r = run_one(off, conversation(1));
    let ttft: Vec<f64> = r.metrics.turns.iter().map(|t| t.avg_ttft_ms).collect();
    for (k, t) in ttft.iter().enumerate() {
        assert!(close(*t, 8.0 + 0.04 * PROMPTS[k] as f64), "{ttft:?}");
    }
    assert!(r.metrics.turns.iter().all(|t| t.prefix_hit_rate.is_none()));
}

#[test]
fn think_time_separates_an_answer_from_the_next_turn() {
    let mut w = conversation(1);
    w.sessions.as_mut().unwrap().think_time = ThinkTime::Fixed(Duration::from_millis(250));
    let r = run_one(MockConfig::default(), w);
    for pair in r.records.windows(2) {
        let gap = pair[1].start_ms - (pair[0].start_ms + pair[0].finish_ms);
        let same_session = pair[0].session == pair[1].session;
        // Within a session: the think time, exactly, on the virtual clock; between sessions the
        // closed loop starts the next one at once.
        let expected = if same_session { 250.0 } else { 0.0 };
        assert!(
            (gap - expected).abs() < 1e-6,
            "{gap} after {:?}",
            pair[0].index
        );
    }
}

#[test]
fn a_failed_turn_leaves_the_rest_of_its_session_counted_as_not_sent() {
    // Every third request fails (arrival order, the one warm-up request first): arrivals 3, 6
    // and 9 are session 0's turn 1, session 1's turn 2 and session 2's turn 2.
    let failing = MockConfig {
        fail_every: 3,
        ..MockConfig::default()
    };
    let r = run_one(failing, conversation(1));
    assert_eq!(r.records.len(), 12, "no turn is lost");
    let kinds: Vec<Option<ErrorKind>> = r
        .records
        .iter()
        .map(|r| r.error.as_ref().map(|e| e.kind))
        .collect();
    use ErrorKind::{Engine, NotSent};
    assert_eq!(
        kinds,
        [
            None,
            Some(Engine),
            Some(NotSent),
            Some(NotSent),
            None,
            None,
            Some(Engine),
            Some(NotSent),
            None,
            None,
            Some(Engine),
            Some(NotSent)
        ]
    );
    let message = &r.records[2].error.as_ref().unwrap().message;
    assert!(message.contains("turn 1"), "{message}");
    let m = &r.metrics;
    assert_eq!((m.total_requests, m.failed_requests), (12, 7));
    let s = m.sessions.as_ref().unwrap();
    assert_eq!(
        (s.sessions, s.completed_sessions, s.turns, s.turns_not_sent),
        (3, 0, 12, 4)
    );
}

/// One mooncake line.
fn line(ms: u64, input: usize, output: usize, hash_ids: &[u64]) -> String {
    format!(
        "{{\"timestamp\": {ms}, \"input_length\": {input}, \"output_length\": {output}, \"hash_ids\": {hash_ids:?}}}\n"
    )
}

/// The prompt tokens a mock with 16-token blocks finds cached for each request of a trace with
/// 16-token hash blocks, replayed one request at a time: the longest run of leading hash ids an
/// earlier request also began with and held as full blocks, within the blocks before the
/// request's last token (which is always computed).
fn implied_hits(requests: &[(usize, Vec<u64>)]) -> Vec<usize> {
    requests
        .iter()
        .enumerate()
        .map(|(i, (input, ids))| {
            let shared = requests[..i]
                .iter()
                .map(|(earlier_input, earlier)| {
                    let common = earlier.iter().zip(ids).take_while(|(a, b)| a == b).count();
                    common.min(earlier_input / 16)
                })
                .max()
                .unwrap_or(0);
            shared.min((input - 1) / 16) * 16
        })
        .collect()
}

#[test]
fn a_mooncake_trace_replays_at_its_times_and_its_shared_blocks_hit_the_cache() {
    // A trace whose requests come 1 s apart, each finished long before the next (16 output
    // tokens take about 140 ms): the cache holds every earlier prompt's full blocks.
    let requests: Vec<(usize, Vec<u64>)> = vec![
        (48, vec![1, 2, 3]),
        (48, vec![1, 2, 4]),
        (60, vec![1, 2, 3, 5]),
        (10, vec![6]),
        (32, vec![1, 7]),
        (64, vec![1, 2, 4, 8]),
        (40, vec![9, 10, 11]),
        (47, vec![9, 10, 12]),
    ];
    let text: String = requests
        .iter()
        .enumerate()
        .map(|(i, (input, ids))| line(5_000 + 1000 * i as u64, *input, 16, ids))
        .collect();
    let options = TraceOptions {
        block_size: 16,
        ..TraceOptions::default()
    };
    let trace = Trace::parse(&text, "t.jsonl", TraceFormat::Mooncake, options).unwrap();
    let r = run_one(MockConfig::default(), Workload::replay("trace", trace));
    let hits = implied_hits(&requests);
    // The last request's 47 tokens hold two full blocks (9, 10) of which both are shared.
    assert_eq!(hits, [0, 32, 48, 0, 16, 48, 0, 32]);
    for (record, (input, _)) in r.records.iter().zip(&requests) {
        assert_eq!(record.prompt_tokens, *input);
        assert_eq!(record.output_tokens, 16);
        assert_eq!(record.scheduled_ms, Some(1000.0 * record.index as f64));
        assert!(close(record.start_ms, record.scheduled_ms.unwrap()));
        assert_eq!(record.cached_prompt_tokens, Some(hits[record.index]));
    }
    let prompt: usize = requests.iter().map(|(i, _)| i).sum();
    let cached: usize = hits.iter().sum();
    assert!(close(
        r.metrics.prefix_hit_rate,
        cached as f64 / prompt as f64
    ));
    // On the virtual clock the client is never late.
    assert_eq!(r.metrics.schedule_lag_p99_ms, Some(0.0));
    assert_eq!(r.metrics.client_overloaded, Some(false));
}

#[test]
fn a_faster_replay_keeps_the_order_and_divides_the_gaps() {
    let text: String = (0..4).map(|i| line(1000 * i, 20, 4, &[i])).collect();
    let options = TraceOptions {
        speed: 4.0,
        block_size: 16,
        ..TraceOptions::default()
    };
    let trace = Trace::parse(&text, "t", TraceFormat::Mooncake, options).unwrap();
    let r = run_one(MockConfig::default(), Workload::replay("fast", trace));
    let scheduled: Vec<f64> = r.records.iter().map(|r| r.scheduled_ms.unwrap()).collect();
    assert_eq!(scheduled, [0.0, 250.0, 500.0, 750.0]);
}

#[test]
fn sources_that_contradict_each_other_are_refused() {
    let trace = Trace::parse(
        &line(0, 8, 2, &[]),
        "t",
        TraceFormat::Mooncake,
        TraceOptions::default(),
    )
    .unwrap();
    let mut w = conversation(1);
    w.trace = Some(trace.clone());
    assert!(w.validate().unwrap_err().contains("not both"));
    let mut w = conversation(1);
    w.num_requests = 5;
    assert!(w.validate().unwrap_err().contains("turns (12)"));
    let mut w = Workload::replay("t", trace);
    w.arrival = Arrival::Closed { concurrency: 2 };
    assert!(w.validate().unwrap_err().contains("trace"));
    let mut w = Workload::short_input();
    w.arrival = Arrival::Trace;
    assert!(w.validate().unwrap_err().contains("no trace"));
}
