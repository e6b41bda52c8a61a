//! The raw record of one request, and the per-request metrics derived from it.
//!
//! Times are milliseconds. `start_ms` counts from the workload's start; every other time counts
//! from the request's own `t0`, the moment it was handed to the backend.

use serde::{Deserialize, Serialize};

use crate::backend::RequestError;

/// One request, as measured. Written one per line to `<workload>_requests.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// 0-based position among the workload's measured requests.
    pub index: usize,
    /// When the request was handed to the backend, from the workload's start.
    pub start_ms: f64,
    /// When an open-loop schedule meant to send it, from the workload's start (`None` for
    /// closed-loop workloads). `start_ms - scheduled_ms` is the scheduling lag.
    pub scheduled_ms: Option<f64>,
    pub prompt_tokens: usize,
    /// `n`: output tokens, from the backend's usage report where it gave one, else from a local
    /// tokenizer where one was given, else counted from the stream (see `output_tokens_source`).
    pub output_tokens: usize,
    pub output_tokens_source: TokenCountSource,
    /// Output tokens counted from the streamed events.
    pub stream_tokens: usize,
    /// Output tokens as the backend's usage report gave them, if it did.
    pub usage_tokens: Option<usize>,
    /// Time of each content event after `t0`, in arrival order.
    pub token_times_ms: Vec<f64>,
    /// Tokens carried by each content event (a chunk may carry several).
    pub token_counts: Vec<usize>,
    /// Of each content event's tokens, those that were reasoning (a reasoning model's thinking
    /// before its answer); empty when the request streamed no reasoning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasoning_counts: Vec<usize>,
    /// Reasoning tokens, as the stream's reasoning events counted them (the sum of
    /// `reasoning_counts`); part of `output_tokens`. Not written when 0, so a request without
    /// reasoning is written as before reasoning was counted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reasoning_tokens: usize,
    /// When the stream ended (finished or failed), after `t0`.
    pub finish_ms: f64,
    pub success: bool,
    pub error: Option<RequestError>,
    /// Per-request metrics, derived from the fields above (kept here for convenience).
    pub ttft_ms: Option<f64>,
    /// Time to first output token for a request that streamed reasoning: the first answer
    /// (not reasoning) token's time after `t0`, `None` when no answer token came. `None` (and
    /// not written) for a request without reasoning, whose TTFO is its TTFT: see
    /// [`RequestRecord::ttfo`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttfo_ms: Option<f64>,
    pub e2el_ms: Option<f64>,
    pub tbt_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub throughput_tps: Option<f64>,
    /// Prompt tokens the engine served from its prefix cache, where the backend said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_prompt_tokens: Option<usize>,
    /// The multi-turn session (0-based) this request is a turn of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<usize>,
    /// Its turn within the session (0-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<usize>,
}

/// Where a request sits in a multi-turn workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    /// The session, 0-based.
    pub session: usize,
    /// The turn within it, 0-based.
    pub turn: usize,
}

/// Where a request's output token count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenCountSource {
    /// The backend's usage report (a server's `usage.completion_tokens`).
    Usage,
    /// The token counts carried by the streamed events.
    Stream,
    /// The streamed text, tokenized with the tokenizer given by `--tokenizer`.
    Tokenizer,
    /// The streamed text, counted by the server's own tokenizer through its `/tokenize`
    /// endpoint, after the request finished.
    ServerTokenizer,
}

impl RequestRecord {
    /// Builds a record from raw stamps and fills in the per-request metrics:
    ///
    /// - TTFT = `first_token_at - t0`, the first token of either kind (reasoning or answer)
    /// - TTFO = `first_answer_token_at - t0`
    /// - E2E latency = `done_at - t0`, where `done_at` is the last content event
    /// - TBT = `(done_at - first_token_at) / (n - 1)`, only for `n >= 2`
    /// - TPOT = `e2el / n`
    /// - throughput = `n / e2el` tokens per second
    pub fn new(raw: RawRequest) -> Self {
        let RawRequest {
            index,
            start_ms,
            scheduled_ms,
            prompt_tokens,
            token_times_ms,
            token_counts,
            reasoning_counts,
            finish_ms,
            usage_tokens,
            tokenizer_tokens,
            tokenizer_on_server,
            error,
            cached_prompt_tokens,
            turn,
        } = raw;
        let stream_tokens: usize = token_counts.iter().sum();
        // No reasoning is written as no list at all; a list is one entry per event.
        let reasoning_counts = match reasoning_counts.iter().any(|&r| r > 0) {
            true => reasoning_counts,
            false => Vec::new(),
        };
        let reasoning_tokens: usize = reasoning_counts.iter().sum();
        // A tokenizer counts the answer's text; the reasoning tokens are the stream's count.
        let counted = tokenizer_tokens.map(|n| n + reasoning_tokens);
        let (output_tokens, output_tokens_source) = match (usage_tokens, counted) {
            (Some(n), _) => (n, TokenCountSource::Usage),
            (None, Some(n)) if tokenizer_on_server => (n, TokenCountSource::ServerTokenizer),
            (None, Some(n)) => (n, TokenCountSource::Tokenizer),
            (None, None) => (stream_tokens, TokenCountSource::Stream),
        };
        let ttfo_ms = token_times_ms
            .iter()
            .zip(&token_counts)
            .enumerate()
            .find(|&(i, (_, &count))| count > reasoning_counts.get(i).copied().unwrap_or(0))
            .map(|(_, (&at, _))| at)
            .filter(|_| reasoning_tokens > 0);
        let success = error.is_none();
        let mut record = RequestRecord {
            index,
            start_ms,
            scheduled_ms,
            prompt_tokens,
            output_tokens,
            output_tokens_source,
            stream_tokens,
            usage_tokens,
            token_times_ms,
            token_counts,
            reasoning_counts,
            reasoning_tokens,
            finish_ms,
            success,
            error,
            ttft_ms: None,
            ttfo_ms,
            e2el_ms: None,
            tbt_ms: None,
            tpot_ms: None,
            throughput_tps: None,
            cached_prompt_tokens,
            session: turn.map(|t| t.session),
            turn: turn.map(|t| t.turn),
        };
        let (Some(&first), Some(&done)) =
            (record.token_times_ms.first(), record.token_times_ms.last())
        else {
            return record;
        };
        record.ttft_ms = Some(first);
        record.e2el_ms = Some(done);
        (record.tbt_ms, record.tpot_ms, record.throughput_tps) =
            per_token_metrics(first, done, record.output_tokens);
        record
    }

    /// The gaps between consecutive content events, in milliseconds.
    pub fn inter_token_gaps(&self) -> impl Iterator<Item = f64> + '_ {
        self.token_times_ms.windows(2).map(|w| w[1] - w[0])
    }

    /// The gaps between consecutive events carrying answer tokens, leaving reasoning events
    /// and the gap from the last of them to the answer out; the same as
    /// [`inter_token_gaps`](Self::inter_token_gaps) for a request without reasoning.
    pub fn answer_gaps(&self) -> impl Iterator<Item = f64> + '_ {
        let answers = self
            .token_times_ms
            .iter()
            .zip(&self.token_counts)
            .enumerate()
            .filter(|&(i, (_, &count))| count > self.reasoning_counts.get(i).copied().unwrap_or(0))
            .map(|(_, (&at, _))| at);
        answers
            .clone()
            .zip(answers.skip(1))
            .map(|(before, after)| after - before)
    }

    /// Time to first output (answer) token: `ttfo_ms` for a request that streamed reasoning,
    /// its TTFT otherwise.
    pub fn ttfo(&self) -> Option<f64> {
        match self.reasoning_tokens {
            0 => self.ttft_ms,
            _ => self.ttfo_ms,
        }
    }

    /// Output tokens that were the answer: `output_tokens - reasoning_tokens`.
    pub fn answer_tokens(&self) -> usize {
        self.output_tokens.saturating_sub(self.reasoning_tokens)
    }

    /// When the request's stream ended, from the workload's start.
    pub fn end_ms(&self) -> f64 {
        self.start_ms + self.finish_ms
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// TBT, TPOT and throughput of a request whose first and last content events came `ttft_ms` and
/// `e2el_ms` after its `t0` and which produced `n` tokens, as [`RequestRecord::new`] defines
/// them; `None` where undefined.
pub fn per_token_metrics(
    ttft_ms: f64,
    e2el_ms: f64,
    n: usize,
) -> (Option<f64>, Option<f64>, Option<f64>) {
    let tbt = (n >= 2).then(|| (e2el_ms - ttft_ms) / (n - 1) as f64);
    let tpot = (n >= 1).then(|| e2el_ms / n as f64);
    let throughput = (n >= 1 && e2el_ms > 0.0).then(|| n as f64 / (e2el_ms / 1000.0));
    (tbt, tpot, throughput)
}

/// The stamps the runner takes for one request, before any metric is derived.
#[derive(Debug, Clone, Default)]
pub struct RawRequest {
    pub index: usize,
    pub start_ms: f64,
    pub scheduled_ms: Option<f64>,
    pub prompt_tokens: usize,
    pub token_times_ms: Vec<f64>,
    pub token_counts: Vec<usize>,
    /// Of each event's tokens, the reasoning ones (one entry per event, or empty: none).
    pub reasoning_counts: Vec<usize>,
    pub finish_ms: f64,
    pub usage_tokens: Option<usize>,
    /// Output tokens as a tokenizer counted the streamed answer text, when there was no usage
    /// report and a tokenizer was given (`n` is this plus the reasoning tokens).
    pub tokenizer_tokens: Option<usize>,
    /// The tokenizer of `tokenizer_tokens` was the server's (`/tokenize`), not a local one.
    pub tokenizer_on_server: bool,
    pub error: Option<RequestError>,
    /// Prompt tokens the engine served from its prefix cache, where the backend said.
    pub cached_prompt_tokens: Option<usize>,
    /// For a multi-turn workload: the session (0-based) and the turn within it (0-based).
    pub turn: Option<Turn>,
}

/// Records for unit tests: one content event per time in `times` (ms after `t0`), failed with
/// `error` when given.
#[cfg(test)]
pub(crate) fn test_record(
    index: usize,
    start_ms: f64,
    times: &[f64],
    error: Option<&str>,
) -> RequestRecord {
    RequestRecord::new(RawRequest {
        index,
        start_ms,
        prompt_tokens: 8,
        token_times_ms: times.to_vec(),
        token_counts: vec![1; times.len()],
        finish_ms: times.last().copied().unwrap_or(3.0),
        error: error.map(|m| RequestError::new(crate::backend::ErrorKind::Engine, m)),
        ..RawRequest::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ErrorKind;

    fn record(times: &[f64], counts: &[usize], usage: Option<usize>) -> RequestRecord {
        RequestRecord::new(RawRequest {
            prompt_tokens: 10,
            token_times_ms: times.to_vec(),
            token_counts: counts.to_vec(),
            finish_ms: times.last().copied().unwrap_or(0.0),
            usage_tokens: usage,
            ..RawRequest::default()
        })
    }

    #[test]
    fn per_request_metrics_by_hand() {
        // Tokens at 100, 110, 125, 140 ms: TTFT 100, E2E 140, TBT (140-100)/3 = 13.333...,
        // TPOT 140/4 = 35, throughput 4 / 0.14 s = 28.571... tokens/s.
        let r = record(&[100.0, 110.0, 125.0, 140.0], &[1, 1, 1, 1], None);
        assert_eq!(r.output_tokens, 4);
        assert_eq!(r.output_tokens_source, TokenCountSource::Stream);
        assert_eq!(r.ttft_ms, Some(100.0));
        assert_eq!(r.e2el_ms, Some(140.0));
        assert!((r.tbt_ms.unwrap() - 40.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.tpot_ms, Some(35.0));
        assert!((r.throughput_tps.unwrap() - 4.0 / 0.14).abs() < 1e-9);
        assert_eq!(
            r.inter_token_gaps().collect::<Vec<_>>(),
            vec![10.0, 15.0, 15.0]
        );
    }

    #[test]
    fn one_output_token_has_no_tbt() {
        let r = record(&[50.0], &[1], None);
        assert_eq!(r.ttft_ms, Some(50.0));
        assert_eq!(r.e2el_ms, Some(50.0));
        assert_eq!(r.tbt_ms, None);
        assert_eq!(r.tpot_ms, Some(50.0));
        assert_eq!(r.throughput_tps, Some(20.0));
        assert_eq!(r.inter_token_gaps().count(), 0);
    }

    #[test]
    fn usage_count_wins_over_stream_count_and_both_are_kept() {
        // Two chunks carrying 3 and 2 tokens; the server says 5.
        let r = record(&[20.0, 60.0], &[3, 2], Some(5));
        assert_eq!(r.output_tokens, 5);
        assert_eq!(r.stream_tokens, 5);
        assert_eq!(r.usage_tokens, Some(5));
        assert_eq!(r.output_tokens_source, TokenCountSource::Usage);
        // TBT uses n = 5 tokens, not the 2 chunks: (60 - 20) / 4.
        assert_eq!(r.tbt_ms, Some(10.0));
        assert_eq!(r.tpot_ms, Some(12.0));
    }

    #[test]
    fn tokenizer_count_stands_in_for_a_missing_usage_report() {
        // Two chunks the stream counts as one token each; the tokenizer finds 6 tokens in the
        // text. TBT (60 - 20) / 5 = 8, TPOT 60 / 6 = 10.
        let mut raw = RawRequest {
            token_times_ms: vec![20.0, 60.0],
            token_counts: vec![1, 1],
            finish_ms: 60.0,
            tokenizer_tokens: Some(6),
            ..RawRequest::default()
        };
        let r = RequestRecord::new(raw.clone());
        assert_eq!(r.output_tokens_source, TokenCountSource::Tokenizer);
        assert_eq!((r.output_tokens, r.stream_tokens), (6, 2));
        assert_eq!((r.tbt_ms, r.tpot_ms), (Some(8.0), Some(10.0)));
        // A usage report still wins.
        raw.usage_tokens = Some(5);
        let r = RequestRecord::new(raw);
        assert_eq!(r.output_tokens_source, TokenCountSource::Usage);
        assert_eq!(r.output_tokens, 5);
    }

    fn reasoning(times: &[f64], counts: &[usize], reasoning: &[usize]) -> RequestRecord {
        RequestRecord::new(RawRequest {
            token_times_ms: times.to_vec(),
            token_counts: counts.to_vec(),
            reasoning_counts: reasoning.to_vec(),
            finish_ms: times.last().copied().unwrap_or(0.0),
            ..RawRequest::default()
        })
    }

    #[test]
    fn reasoning_then_answer_by_hand() {
        // Thinking at 10, 20, 30 ms, the answer at 50, 55, 60: TTFT is the first token of
        // either kind (10), TTFO the first answer token (50). n = 6, 3 of them reasoning.
        let r = reasoning(
            &[10.0, 20.0, 30.0, 50.0, 55.0, 60.0],
            &[1; 6],
            &[1, 1, 1, 0, 0, 0],
        );
        assert_eq!((r.ttft_ms, r.ttfo_ms), (Some(10.0), Some(50.0)));
        assert_eq!(r.ttfo(), Some(50.0));
        assert_eq!(
            (r.output_tokens, r.reasoning_tokens, r.answer_tokens()),
            (6, 3, 3)
        );
        // All gaps: 10, 10, 20, 5, 5; the answer's: 5, 5 (the 20 ms to the answer is neither).
        assert_eq!(
            r.inter_token_gaps().collect::<Vec<_>>(),
            [10.0, 10.0, 20.0, 5.0, 5.0]
        );
        assert_eq!(r.answer_gaps().collect::<Vec<_>>(), [5.0, 5.0]);
        // TBT and TPOT stay over all tokens: (60 - 10) / 5 = 10, 60 / 6 = 10.
        assert_eq!((r.tbt_ms, r.tpot_ms), (Some(10.0), Some(10.0)));
    }

    #[test]
    fn without_reasoning_ttfo_is_ttft_and_the_line_is_written_as_before() {
        let r = reasoning(&[20.0, 60.0], &[1, 1], &[0, 0]);
        assert_eq!(
            (r.ttfo(), r.ttfo_ms, r.reasoning_tokens),
            (Some(20.0), None, 0)
        );
        assert!(r.reasoning_counts.is_empty());
        // No reasoning field at all: the line of a request without reasoning is unchanged.
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            !json.contains("reasoning") && !json.contains("ttfo"),
            "{json}"
        );
        let back: RequestRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.ttfo(), Some(20.0));
        // A request with reasoning reads back with its TTFO.
        let r = reasoning(&[5.0, 20.0], &[1, 1], &[1, 0]);
        let back: RequestRecord =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!((back.ttfo(), back.reasoning_tokens), (Some(20.0), 1));
    }

    #[test]
    fn reasoning_between_answer_events_and_a_tokenizer_count() {
        // Answer at 5, a reasoning event at 10, answer at 20: TTFO 5, the answer's gap 15.
        let mut raw = RawRequest {
            token_times_ms: vec![5.0, 10.0, 20.0],
            token_counts: vec![1, 2, 1],
            reasoning_counts: vec![0, 2, 0],
            finish_ms: 20.0,
            tokenizer_tokens: Some(4),
            ..RawRequest::default()
        };
        let r = RequestRecord::new(raw.clone());
        assert_eq!((r.ttft_ms, r.ttfo()), (Some(5.0), Some(5.0)));
        assert_eq!(r.answer_gaps().collect::<Vec<_>>(), [15.0]);
        // The tokenizer counted the answer text (4); the 2 reasoning tokens are added.
        assert_eq!((r.output_tokens, r.answer_tokens()), (6, 4));
        assert_eq!(r.output_tokens_source, TokenCountSource::Tokenizer);
        raw.tokenizer_on_server = true;
        let r = RequestRecord::new(raw);
        assert_eq!(r.output_tokens_source, TokenCountSource::ServerTokenizer);
        // Only reasoning: no TTFO.
        let r = reasoning(&[5.0, 9.0], &[1, 1], &[1, 1]);
        assert_eq!(
            (r.ttft_ms, r.ttfo_ms, r.answer_tokens()),
            (Some(5.0), None, 0)
        );
    }

    #[test]
    fn failed_request_keeps_its_tokens_and_error() {
        let err = RequestError::new(ErrorKind::Connection, "reset");
        let r = RequestRecord::new(RawRequest {
            index: 3,
            start_ms: 5.0,
            token_times_ms: vec![10.0, 20.0],
            token_counts: vec![1, 1],
            finish_ms: 30.0,
            error: Some(err),
            ..RawRequest::default()
        });
        assert!(!r.success);
        assert_eq!(r.stream_tokens, 2);
        assert_eq!(r.end_ms(), 35.0);
        assert_eq!(r.error.unwrap().kind, ErrorKind::Connection);
    }

    #[test]
    fn failure_before_any_token_has_no_latencies() {
        let err = RequestError::new(ErrorKind::Http, "500");
        let r = RequestRecord::new(RawRequest {
            start_ms: 7.0,
            finish_ms: 3.0,
            error: Some(err),
            ..RawRequest::default()
        });
        assert_eq!((r.ttft_ms, r.e2el_ms, r.tpot_ms), (None, None, None));
        assert_eq!(r.end_ms(), 10.0);
    }
}
