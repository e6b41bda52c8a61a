//! The figures of a multi-turn workload: per turn index over all sessions (the TTFT curve that
//! shows a prefix cache serving the growing conversation), and per-session totals.

use serde::{Deserialize, Serialize};

use crate::backend::ErrorKind;
use crate::results::metrics::Stats;
use crate::results::samples::RequestSample;

/// One turn index over every session that reached it (`<workload>_metrics.json`'s `turns`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnFigures {
    /// The turn, 0-based: 0 is every session's first request.
    pub turn: usize,
    /// Requests of this turn, sent or recorded as not sent.
    pub requests: u64,
    pub successful_requests: u64,
    /// TTFT over the turn's successful requests.
    pub avg_ttft_ms: f64,
    pub p50_ttft_ms: f64,
    pub p99_ttft_ms: f64,
    /// Mean prompt length of the turn's successful requests: the conversation so far.
    pub avg_prompt_tokens: f64,
    /// Prompt tokens served from the prefix cache over prompt tokens, over the turn's
    /// successful requests whose backend said how many were cached; absent when none did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_hit_rate: Option<f64>,
}

/// A multi-turn workload's sessions as a whole (`<workload>_metrics.json`'s `sessions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionFigures {
    /// Sessions whose first turn was recorded.
    pub sessions: u64,
    /// Sessions none of whose turns failed (every turn recorded succeeded).
    pub completed_sessions: u64,
    /// Turns recorded, over all sessions.
    pub turns: u64,
    /// Turns never sent because an earlier turn of their session failed.
    pub turns_not_sent: u64,
}

/// The per-turn figures of `requests`, in turn order; empty when no request is a turn.
pub fn per_turn(requests: &[RequestSample]) -> Vec<TurnFigures> {
    let Some(last) = requests.iter().filter_map(RequestSample::turn).max() else {
        return Vec::new();
    };
    (0..=last)
        .map(|turn| {
            let of_turn: Vec<&RequestSample> =
                requests.iter().filter(|r| r.turn() == Some(turn)).collect();
            let ok: Vec<&&RequestSample> = of_turn.iter().filter(|r| r.success()).collect();
            let ttft = Stats::of(&ok.iter().filter_map(|r| r.ttft_ms()).collect::<Vec<_>>());
            let prompt: u64 = ok.iter().map(|r| r.prompt_tokens() as u64).sum();
            let (cached, of_prompt) = ok
                .iter()
                .filter_map(|r| r.cached_prompt_tokens().map(|c| (c, r.prompt_tokens())))
                .fold((0u64, 0u64), |(c, p), (cached, prompt)| {
                    (c + cached as u64, p + prompt as u64)
                });
            let reported = ok.iter().any(|r| r.cached_prompt_tokens().is_some());
            TurnFigures {
                turn,
                requests: of_turn.len() as u64,
                successful_requests: ok.len() as u64,
                avg_ttft_ms: ttft.mean,
                p50_ttft_ms: ttft.p50,
                p99_ttft_ms: ttft.p99,
                avg_prompt_tokens: if ok.is_empty() {
                    0.0
                } else {
                    prompt as f64 / ok.len() as f64
                },
                prefix_hit_rate: (reported && of_prompt > 0)
                    .then(|| cached as f64 / of_prompt as f64),
            }
        })
        .collect()
}

/// The session totals of `requests`; `None` when no request is a turn.
pub fn sessions(requests: &[RequestSample]) -> Option<SessionFigures> {
    let turns: Vec<&RequestSample> = requests.iter().filter(|r| r.turn().is_some()).collect();
    if turns.is_empty() {
        return None;
    }
    let sessions = turns.iter().filter(|r| r.turn() == Some(0)).count() as u64;
    let not_sent = turns
        .iter()
        .filter(|r| r.error_kind() == Some(ErrorKind::NotSent))
        .count() as u64;
    // A session stops at its first failed turn, so each failed session has exactly one failed
    // turn that was sent.
    let failed_sessions = turns
        .iter()
        .filter(|r| !r.success() && r.error_kind() != Some(ErrorKind::NotSent))
        .count() as u64;
    Some(SessionFigures {
        sessions,
        completed_sessions: sessions.saturating_sub(failed_sessions),
        turns: turns.len() as u64,
        turns_not_sent: not_sent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::RequestError;
    use crate::results::record::{RawRequest, RequestRecord, Turn};

    fn turn(
        session: usize,
        turn: usize,
        ttft: f64,
        prompt: usize,
        cached: Option<usize>,
        error: Option<ErrorKind>,
    ) -> RequestSample {
        RequestSample::of(&RequestRecord::new(RawRequest {
            prompt_tokens: prompt,
            token_times_ms: if error.is_some() {
                vec![]
            } else {
                vec![ttft, ttft + 1.0]
            },
            token_counts: if error.is_some() { vec![] } else { vec![1, 1] },
            finish_ms: ttft + 1.0,
            cached_prompt_tokens: cached,
            turn: Some(Turn { session, turn }),
            error: error.map(|k| RequestError::new(k, "x")),
            ..RawRequest::default()
        }))
    }

    #[test]
    fn per_turn_figures_by_hand() {
        // Two sessions of three turns; session 1 fails at turn 1, so its turn 2 is not sent.
        let requests = [
            turn(0, 0, 40.0, 10, Some(0), None),
            turn(0, 1, 20.0, 30, Some(16), None),
            turn(0, 2, 10.0, 50, Some(32), None),
            turn(1, 0, 60.0, 10, Some(8), None),
            turn(1, 1, 0.0, 30, None, Some(ErrorKind::Http)),
            turn(1, 2, 0.0, 0, None, Some(ErrorKind::NotSent)),
        ];
        let t = per_turn(&requests);
        assert_eq!(t.len(), 3);
        // Turn 0: TTFT 40 and 60 → mean 50; prompts 10 and 10; cached 0 + 8 of 20 = 0.4.
        assert_eq!((t[0].requests, t[0].successful_requests), (2, 2));
        assert_eq!((t[0].avg_ttft_ms, t[0].p50_ttft_ms), (50.0, 50.0));
        assert_eq!(t[0].avg_prompt_tokens, 10.0);
        assert_eq!(t[0].prefix_hit_rate, Some(0.4));
        // Turn 1: only session 0 succeeded: 16 of 30 cached.
        assert_eq!((t[1].requests, t[1].successful_requests), (2, 1));
        assert_eq!(t[1].avg_ttft_ms, 20.0);
        assert_eq!(t[1].prefix_hit_rate, Some(16.0 / 30.0));
        assert_eq!(t[2].prefix_hit_rate, Some(32.0 / 50.0));
        let s = sessions(&requests).unwrap();
        assert_eq!(
            (s.sessions, s.completed_sessions, s.turns, s.turns_not_sent),
            (2, 1, 6, 1)
        );
    }

    #[test]
    fn single_turn_requests_have_no_turn_figures() {
        let r = RequestSample::of(&crate::results::record::test_record(0, 0.0, &[5.0], None));
        assert!(per_turn(&[r]).is_empty());
        assert_eq!(sessions(&[r]), None);
        // A backend that never says what it cached gives no hit rate.
        let t = per_turn(&[turn(0, 0, 5.0, 8, None, None)]);
        assert_eq!(t[0].prefix_hit_rate, None);
    }
}
