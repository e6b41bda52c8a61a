//! What a workload keeps in memory of its requests: one compact sample per request, the pooled
//! inter-token gaps as a histogram, and the per-token series of the charts in bounded time bins.
//!
//! The full [`RequestRecord`] (every token's time) is written to `<workload>_requests.jsonl`
//! as the request finishes and then dropped; [`WorkloadSamples::add`] takes from it all that
//! the metrics, the charts, the HTML report and the baseline comparison need. Memory then grows
//! by one [`RequestSample`] (96 bytes) a request, not by the request's tokens.

use std::sync::Arc;

use crate::backend::{ErrorKind, RequestError};
use crate::results::itl::ItlStats;
use crate::results::record::{per_token_metrics, RequestRecord, TokenCountSource};
use crate::results::time_bins::TimeBins;

/// A workload's samples, shared rather than copied between the reporters that keep them.
pub type Samples = Arc<WorkloadSamples>;

/// The failures kept with their messages (those of the lowest request indices), for the HTML
/// report and the test-mode summary; every failure is counted in the samples.
pub const KEPT_FAILURES: usize = 20;

/// One request's scalars: everything of its record but the per-token stamps.
#[derive(Debug, Clone, Copy)]
pub struct RequestSample {
    index: usize,
    prompt_tokens: usize,
    output_tokens: usize,
    stream_tokens: usize,
    start_ms: f64,
    finish_ms: f64,
    /// NaN when absent: an `Option<f64>` would take 16 bytes instead of 8.
    scheduled_ms: f64,
    ttft_ms: f64,
    /// NaN when no answer token came.
    ttfo_ms: f64,
    e2el_ms: f64,
    reasoning_tokens: usize,
    output_tokens_source: TokenCountSource,
    error_kind: Option<ErrorKind>,
    /// The turn within its multi-turn session, 0-based; `NO_TURN` for a single-turn request
    /// (validation keeps sessions below it).
    turn: u16,
    /// Prompt tokens served from the prefix cache; `ABSENT` when the backend did not say.
    cached_prompt_tokens: u32,
}

/// What `cached_prompt_tokens` holds when absent, and `turn` when the request is no turn: a
/// narrow integer and a sentinel keep the sample at 80 bytes, where an `Option<usize>` would
/// take 16 bytes each.
const ABSENT: u32 = u32::MAX;
const NO_TURN: u16 = u16::MAX;

fn narrow(value: Option<usize>) -> u32 {
    value.map_or(ABSENT, |v| {
        u32::try_from(v).unwrap_or(ABSENT - 1).min(ABSENT - 1)
    })
}

fn present(value: f64) -> Option<f64> {
    (!value.is_nan()).then_some(value)
}

impl PartialEq for RequestSample {
    fn eq(&self, other: &Self) -> bool {
        let counts = |s: &Self| {
            (
                s.index,
                s.prompt_tokens,
                s.output_tokens,
                s.stream_tokens,
                s.reasoning_tokens,
                s.output_tokens_source,
                s.error_kind,
                s.turn,
                s.cached_prompt_tokens,
            )
        };
        // Compared through the accessors, where an absent value (NaN) equals another.
        let times = |s: &Self| {
            (
                s.start_ms,
                s.finish_ms,
                s.scheduled_ms(),
                s.ttft_ms(),
                s.ttfo_ms(),
                s.e2el_ms(),
            )
        };
        counts(self) == counts(other) && times(self) == times(other)
    }
}

impl RequestSample {
    /// The scalars of `record`. TBT, TPOT and throughput are not stored: they follow from TTFT,
    /// E2E latency and `n` by the definitions [`RequestRecord::new`] applies.
    pub fn of(record: &RequestRecord) -> Self {
        RequestSample {
            index: record.index,
            prompt_tokens: record.prompt_tokens,
            output_tokens: record.output_tokens,
            stream_tokens: record.stream_tokens,
            start_ms: record.start_ms,
            finish_ms: record.finish_ms,
            scheduled_ms: record.scheduled_ms.unwrap_or(f64::NAN),
            ttft_ms: record.ttft_ms.unwrap_or(f64::NAN),
            ttfo_ms: record.ttfo().unwrap_or(f64::NAN),
            e2el_ms: record.e2el_ms.unwrap_or(f64::NAN),
            reasoning_tokens: record.reasoning_tokens,
            output_tokens_source: record.output_tokens_source,
            error_kind: match (&record.error, record.success) {
                (Some(e), _) => Some(e.kind),
                // A hand-edited file may mark a request failed without saying why.
                (None, false) => Some(ErrorKind::Protocol),
                (None, true) => None,
            },
            turn: record.turn.map_or(NO_TURN, |t| {
                u16::try_from(t).unwrap_or(NO_TURN - 1).min(NO_TURN - 1)
            }),
            cached_prompt_tokens: narrow(record.cached_prompt_tokens),
        }
    }

    /// The turn within its multi-turn session (0-based), for a turn of one.
    pub fn turn(&self) -> Option<usize> {
        (self.turn != NO_TURN).then_some(self.turn as usize)
    }

    /// Prompt tokens the engine served from its prefix cache, where the backend said.
    pub fn cached_prompt_tokens(&self) -> Option<usize> {
        (self.cached_prompt_tokens != ABSENT).then_some(self.cached_prompt_tokens as usize)
    }

    /// 0-based position among the workload's measured requests.
    pub fn index(&self) -> usize {
        self.index
    }
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }
    /// `n`: output tokens (see [`RequestRecord::output_tokens`]).
    pub fn output_tokens(&self) -> usize {
        self.output_tokens
    }
    /// Output tokens counted from the streamed events.
    pub fn stream_tokens(&self) -> usize {
        self.stream_tokens
    }
    pub fn output_tokens_source(&self) -> TokenCountSource {
        self.output_tokens_source
    }
    /// When the request was handed to the backend, from the workload's start.
    pub fn start_ms(&self) -> f64 {
        self.start_ms
    }
    /// When an open-loop schedule meant to send it, from the workload's start.
    pub fn scheduled_ms(&self) -> Option<f64> {
        present(self.scheduled_ms)
    }
    /// When the stream ended (finished or failed), after the request's `t0`.
    pub fn finish_ms(&self) -> f64 {
        self.finish_ms
    }
    /// When the stream ended, from the workload's start.
    pub fn end_ms(&self) -> f64 {
        self.start_ms + self.finish_ms
    }
    pub fn success(&self) -> bool {
        self.error_kind.is_none()
    }
    pub fn error_kind(&self) -> Option<ErrorKind> {
        self.error_kind
    }
    pub fn ttft_ms(&self) -> Option<f64> {
        present(self.ttft_ms)
    }
    pub fn e2el_ms(&self) -> Option<f64> {
        present(self.e2el_ms)
    }
    /// Time to first output (answer) token; see [`RequestRecord::ttfo`].
    pub fn ttfo_ms(&self) -> Option<f64> {
        present(self.ttfo_ms)
    }
    /// Reasoning tokens among the output tokens (see [`RequestRecord::reasoning_tokens`]).
    pub fn reasoning_tokens(&self) -> usize {
        self.reasoning_tokens
    }
    /// Output tokens that were the answer: `n` minus the reasoning tokens.
    pub fn answer_tokens(&self) -> usize {
        self.output_tokens.saturating_sub(self.reasoning_tokens)
    }
    /// The answer's TBT, `(e2el - ttfo) / (answer_tokens - 1)`: its decode pace, leaving the
    /// thinking out. `None` under two answer tokens.
    pub fn answer_tbt_ms(&self) -> Option<f64> {
        let (ttfo, e2el) = (self.ttfo_ms()?, self.e2el_ms()?);
        let n = self.answer_tokens();
        (n >= 2).then(|| (e2el - ttfo) / (n - 1) as f64)
    }
    /// The answer's TPOT, `e2el / answer_tokens`: the time the user waited per token of the
    /// answer they read. `None` without an answer token.
    pub fn answer_tpot_ms(&self) -> Option<f64> {
        let e2el = self.e2el_ms()?;
        let n = self.answer_tokens();
        (n >= 1 && self.ttfo_ms().is_some()).then(|| e2el / n as f64)
    }
    pub fn tbt_ms(&self) -> Option<f64> {
        self.per_token().0
    }
    pub fn tpot_ms(&self) -> Option<f64> {
        self.per_token().1
    }
    pub fn throughput_tps(&self) -> Option<f64> {
        self.per_token().2
    }

    /// The figures latency objectives (goodput) are checked against.
    pub fn latency(&self) -> crate::results::goodput::RequestLatency {
        crate::results::goodput::RequestLatency {
            success: self.success(),
            ttft_ms: self.ttft_ms(),
            tbt_ms: self.tbt_ms(),
            e2el_ms: self.e2el_ms(),
        }
    }

    fn per_token(&self) -> (Option<f64>, Option<f64>, Option<f64>) {
        match (self.ttft_ms(), self.e2el_ms()) {
            (Some(first), Some(done)) => per_token_metrics(first, done, self.output_tokens),
            _ => (None, None, None),
        }
    }
}

/// A failed request's index and error, as its record gave them.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub index: usize,
    pub error: RequestError,
}

/// Everything a workload keeps of its requests, fed one record at a time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkloadSamples {
    requests: Vec<RequestSample>,
    /// Gaps between consecutive content events of successful requests.
    itl: ItlStats,
    /// Gaps between consecutive answer events of successful requests (reasoning left out).
    answer_itl: ItlStats,
    /// Output tokens streamed, by event time from the workload's start (failed requests too).
    streamed_tokens: TimeBins,
    /// Changes of the tokens held by requests in flight (prompt plus tokens streamed so far),
    /// by time from the workload's start.
    held_tokens: TimeBins,
    /// The failures of the lowest indices, in index order, at most [`KEPT_FAILURES`].
    failures: Vec<Failure>,
}

impl WorkloadSamples {
    /// Room for `requests` samples, so a run of known length allocates once.
    pub fn with_capacity(requests: usize) -> Self {
        WorkloadSamples {
            requests: Vec::with_capacity(requests),
            ..WorkloadSamples::default()
        }
    }

    /// The samples of `records`, in index order.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a RequestRecord>) -> Self {
        let mut samples = WorkloadSamples::default();
        records.into_iter().for_each(|r| samples.add(r));
        samples.sort_by_index();
        samples
    }

    /// Takes what is kept of one finished request.
    pub fn add(&mut self, record: &RequestRecord) {
        let sample = RequestSample::of(record);
        self.requests.push(sample);
        if sample.success() {
            record
                .inter_token_gaps()
                .for_each(|g| self.itl.record_ms(g));
            record
                .answer_gaps()
                .for_each(|g| self.answer_itl.record_ms(g));
        }
        let events = || {
            record
                .token_times_ms
                .iter()
                .zip(&record.token_counts)
                .map(|(t, c)| (*t, *c as f64))
        };
        for (t, count) in events() {
            self.streamed_tokens.add(record.start_ms + t, count);
        }
        // Tokens held while in flight: the prompt from the send, each event's tokens from its
        // arrival, all released when the stream ends.
        let mut held = record.prompt_tokens as f64;
        self.held_tokens.add(record.start_ms, held);
        for (t, count) in events().filter(|(t, _)| *t <= record.finish_ms) {
            self.held_tokens.add(record.start_ms + t, count);
            held += count;
        }
        self.held_tokens.add(record.end_ms(), -held);
        if let (false, Some(error)) = (sample.success(), &record.error) {
            self.keep_failure(record.index, error);
        }
    }

    fn keep_failure(&mut self, index: usize, error: &RequestError) {
        let at = self.failures.partition_point(|f| f.index <= index);
        if at < KEPT_FAILURES {
            self.failures.insert(
                at,
                Failure {
                    index,
                    error: error.clone(),
                },
            );
            self.failures.truncate(KEPT_FAILURES);
        }
    }

    /// Puts the per-request samples in index order (they arrive in completion order).
    pub fn sort_by_index(&mut self) {
        self.requests.sort_by_key(|r| r.index);
    }

    /// One sample per request.
    pub fn requests(&self) -> &[RequestSample] {
        &self.requests
    }

    /// The pooled inter-token gaps of successful requests.
    pub fn itl(&self) -> &ItlStats {
        &self.itl
    }

    /// The pooled gaps between answer events of successful requests (see
    /// [`RequestRecord::answer_gaps`]).
    pub fn answer_itl(&self) -> &ItlStats {
        &self.answer_itl
    }

    /// Output tokens streamed per time bin, from the workload's start (failed requests too).
    pub fn streamed_tokens(&self) -> &TimeBins {
        &self.streamed_tokens
    }

    /// The change, per time bin, of the tokens held by requests in flight.
    pub fn held_tokens(&self) -> &TimeBins {
        &self.held_tokens
    }

    /// The failures of the lowest indices with their errors, at most [`KEPT_FAILURES`].
    pub fn failures(&self) -> &[Failure] {
        &self.failures
    }

    /// How many requests failed.
    pub fn failed(&self) -> usize {
        self.requests.iter().filter(|r| !r.success()).count()
    }
}

/// One change in the number of requests in flight: at `at` ms it went from `before` to
/// `after`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct InFlightStep {
    pub at: f64,
    pub before: i64,
    pub after: i64,
}

/// The number of requests in flight over time, from their sends and ends. Sends and ends at
/// one instant apply together, as one step: a closed-loop worker's next send at the very end
/// of its previous request is no dip. (What the steady window and the delivered load read.)
pub(crate) fn in_flight_steps(samples: &[RequestSample]) -> Vec<InFlightStep> {
    let mut events: Vec<(f64, i64)> = samples
        .iter()
        .flat_map(|s| [(s.start_ms(), 1), (s.end_ms(), -1)])
        .collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut steps = Vec::new();
    let (mut in_flight, mut i) = (0i64, 0);
    while i < events.len() {
        let at = events[i].0;
        let before = in_flight;
        while i < events.len() && events[i].0 == at {
            in_flight += events[i].1;
            i += 1;
        }
        steps.push(InFlightStep {
            at,
            before,
            after: in_flight,
        });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(index: usize, start: f64, times: &[f64], error: Option<&str>) -> RequestRecord {
        crate::results::record::test_record(index, start, times, error)
    }

    #[test]
    fn a_sample_gives_back_every_per_request_figure_of_its_record() {
        let mut r = record(4, 2.5, &[100.0, 110.0, 125.0, 140.0], None);
        r.scheduled_ms = Some(2.0);
        let s = RequestSample::of(&r);
        assert_eq!(s.index(), 4);
        assert_eq!((s.ttft_ms(), s.e2el_ms()), (r.ttft_ms, r.e2el_ms));
        assert_eq!(
            (s.tbt_ms(), s.tpot_ms(), s.throughput_tps()),
            (r.tbt_ms, r.tpot_ms, r.throughput_tps)
        );
        assert_eq!((s.scheduled_ms(), s.end_ms()), (Some(2.0), r.end_ms()));
        assert!(s.success());
        assert_eq!(std::mem::size_of::<RequestSample>(), 96);
    }

    #[test]
    fn gaps_of_failed_requests_are_left_out_and_failures_kept_in_index_order() {
        let records = [
            record(2, 0.0, &[10.0, 20.0], Some("late")),
            record(0, 0.0, &[10.0, 20.0, 40.0], None),
            record(1, 5.0, &[5.0], Some("early")),
        ];
        let samples = WorkloadSamples::from_records(&records);
        let indices: Vec<usize> = samples.requests().iter().map(|r| r.index()).collect();
        assert_eq!(indices, [0, 1, 2]);
        // Gaps of request 0 only: 10 and 20 ms.
        assert_eq!(samples.itl().count(), 2);
        assert_eq!(samples.itl().mean_ms(), 15.0);
        let failed: Vec<(usize, &str)> = samples
            .failures()
            .iter()
            .map(|f| (f.index, f.error.message.as_str()))
            .collect();
        assert_eq!(failed, [(1, "early"), (2, "late")]);
        assert_eq!(samples.failed(), 2);
        // Streamed tokens: 2 + 3 + 1, failed requests included.
        assert_eq!(samples.streamed_tokens().sums().iter().sum::<f64>(), 6.0);
    }

    #[test]
    fn only_the_first_failures_by_index_keep_their_messages() {
        let records: Vec<RequestRecord> = (0..KEPT_FAILURES + 5)
            .rev()
            .map(|i| record(i, 0.0, &[], Some("boom")))
            .collect();
        let samples = WorkloadSamples::from_records(&records);
        assert_eq!(samples.failures().len(), KEPT_FAILURES);
        assert_eq!(samples.failures()[0].index, 0);
        assert_eq!(
            samples.failures()[KEPT_FAILURES - 1].index,
            KEPT_FAILURES - 1
        );
        assert_eq!(samples.failed(), KEPT_FAILURES + 5);
    }

    #[test]
    fn held_tokens_rise_and_return_to_zero() {
        // A: sent at 0, tokens at 10 and 20, ends at 20. B: sent at 5, one token at 15 (20
        // from the workload's start), ends there. Held: 8 at 0, 16 at 5, 17 at 10, then at 20
        // A's second token arrives and both end: 0.
        let samples = WorkloadSamples::from_records(&[
            record(0, 0.0, &[10.0, 20.0], None),
            record(1, 5.0, &[15.0], None),
        ]);
        let bins = samples.held_tokens();
        let mut level = 0.0;
        let levels: Vec<f64> = bins
            .sums()
            .iter()
            .filter(|d| **d != 0.0)
            .map(|d| {
                level += d;
                level
            })
            .collect();
        assert_eq!(levels, [8.0, 16.0, 17.0, 0.0]);
    }
}
