//! Multi-turn sessions: conversations whose turns grow on the answers the backend returned.
//!
//! A session is one user's conversation. Turn `k`'s request holds the whole conversation so
//! far (the system prompt, every earlier user message and the answer the backend actually
//! gave to each) plus the next user message, so an engine with a prefix cache serves the
//! growing history from it. Between an answer and the next turn the user thinks for a while
//! ([`ThinkTime`]). Sessions interleave under the workload's arrival process: a closed loop
//! of concurrency `c` keeps `c` sessions going at once; an open loop starts sessions at its
//! rate. A session's turns are always sent one after the other.
//!
//! User messages come from a synthetic generator (seeded words, like single-turn prompts) or
//! from a file of conversations ([`Conversations`]: ShareGPT with all its turns, or JSON Lines
//! of `messages` arrays). The answers are never taken from a file: they are the backend's.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::workload::setup::{non_empty, read, sharegpt_turns, PromptError};

/// Who speaks a message of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The instructions the conversation starts with.
    System,
    /// The user's message.
    User,
    /// The model's answer.
    Assistant,
}

impl Role {
    /// The role's name in an OpenAI `messages` array.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Who says it.
    pub role: Role,
    /// What is said.
    pub content: String,
}

/// How long a user waits between an answer and their next message.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ThinkTime {
    /// No pause: the next turn is sent as soon as the answer has arrived.
    #[default]
    None,
    /// The same pause every time.
    Fixed(Duration),
    /// Exponentially distributed pauses with this mean, seeded by the workload's seed, the
    /// session and the turn (the same run pauses the same way every time).
    Exponential(Duration),
}

impl ThinkTime {
    /// Reads `0`, `MS` (fixed milliseconds) or `exp:MS` (exponential with that mean).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (exponential, number) = match text.trim().strip_prefix("exp:") {
            Some(rest) => (true, rest),
            None => (false, text.trim()),
        };
        let ms: f64 = number
            .trim()
            .parse()
            .ok()
            .filter(|ms: &f64| ms.is_finite() && *ms >= 0.0 && *ms <= MAX_THINK_MS)
            .ok_or_else(|| {
                format!(
                    "think time `{text}` must be milliseconds from 0 to {MAX_THINK_MS}, fixed (`500`) or exponential with that mean (`exp:500`)"
                )
            })?;
        let duration = Duration::from_secs_f64(ms / 1000.0);
        Ok(match (ms == 0.0, exponential) {
            (true, _) => ThinkTime::None,
            (false, false) => ThinkTime::Fixed(duration),
            (false, true) => ThinkTime::Exponential(duration),
        })
    }

    /// The pause after turn `turn` (0-based) of `session`, deterministic in all three inputs.
    pub fn after(&self, seed: u64, session: usize, turn: usize) -> Duration {
        match *self {
            ThinkTime::None => Duration::ZERO,
            ThinkTime::Fixed(d) => d,
            ThinkTime::Exponential(mean) => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed ^ THINK_SEED);
                rng.set_stream(((session as u64) << 20) ^ turn as u64);
                let u: f64 = rng.gen();
                // Inverse CDF; 1 - u lies in (0, 1]. Capped so a rare draw cannot stall a run.
                let secs = (-(1.0 - u).ln() * mean.as_secs_f64()).min(MAX_THINK_MS / 1000.0);
                Duration::from_secs_f64(secs)
            }
        }
    }
}

/// The most turns one session may have (a turn index is kept in 16 bits per request).
pub const MAX_TURNS: usize = 10_000;

/// The longest think time, ms (one hour): beyond it a session is not a conversation.
pub const MAX_THINK_MS: f64 = 3_600_000.0;

/// Keeps think-time draws apart from the prompts' and the schedule's random streams.
const THINK_SEED: u64 = 0x7468_696e_6b00_0000;

/// Conversations read from a file: each holds an optional system prompt and its user messages
/// in order (the file's answers are dropped: the backend gives its own).
#[derive(Debug, Clone, PartialEq)]
pub struct Conversations(Arc<Vec<Conversation>>);

/// One conversation of a [`Conversations`] file.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    /// The system prompt, if the conversation has one.
    pub system: Option<String>,
    /// The user's messages, one per turn; never empty.
    pub user_turns: Vec<String>,
}

impl Conversations {
    /// Conversations given in code; each must hold at least one user turn.
    pub fn new(conversations: Vec<Conversation>) -> Result<Self, String> {
        if conversations.is_empty() {
            return Err("no conversation given".into());
        }
        if let Some(i) = conversations.iter().position(|c| c.user_turns.is_empty()) {
            return Err(format!("conversation {i} has no user turn"));
        }
        Ok(Conversations(Arc::new(conversations)))
    }

    /// Reads a ShareGPT file with every turn: `system` turns give the system prompt, `human`
    /// (or `user`) turns the user messages; `gpt` answers are dropped. Conversations without a
    /// human turn are skipped, as real ShareGPT dumps hold some.
    pub fn sharegpt(path: impl AsRef<Path>) -> Result<Self, PromptError> {
        let path = path.as_ref();
        Self::parse_sharegpt(&read(path)?, &path.display().to_string())
    }

    /// Parses the text of a ShareGPT file; `name` names it in errors.
    pub fn parse_sharegpt(text: &str, name: &str) -> Result<Self, PromptError> {
        let conversations = sharegpt_turns(text, name)?
            .into_iter()
            .map(|turns| {
                let mut conversation = Conversation {
                    system: None,
                    user_turns: Vec::new(),
                };
                for (from, value) in turns {
                    if value.trim().is_empty() {
                        continue;
                    }
                    match from.as_str() {
                        "system" => conversation.system = Some(value),
                        "human" | "user" => conversation.user_turns.push(value),
                        _ => {}
                    }
                }
                conversation
            })
            .filter(|c| !c.user_turns.is_empty())
            .collect::<Vec<_>>();
        Ok(Conversations(non_empty(conversations, name)?))
    }

    /// Reads JSON Lines of conversations, one per line:
    /// `{"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
    /// {"role": "assistant", "content": "..."}, ...]}`. Assistant messages are dropped; a line
    /// without a user message is an error naming the file and the line.
    pub fn jsonl(path: impl AsRef<Path>) -> Result<Self, PromptError> {
        let path = path.as_ref();
        Self::parse_jsonl(&read(path)?, &path.display().to_string())
    }

    /// Parses the text of a conversations JSON Lines file; `name` names it in errors.
    pub fn parse_jsonl(text: &str, name: &str) -> Result<Self, PromptError> {
        #[derive(Deserialize)]
        struct Line {
            messages: Vec<JsonMessage>,
        }
        #[derive(Deserialize)]
        struct JsonMessage {
            role: String,
            content: String,
        }
        let invalid = |line: usize, message: String| PromptError::Conversation {
            file: name.to_string(),
            line,
            message,
        };
        let mut conversations = Vec::new();
        for (i, text) in text.lines().enumerate() {
            if text.trim().is_empty() {
                continue;
            }
            let line: Line = serde_json::from_str(text)
                .map_err(|e| invalid(i + 1, format!("expected {{\"messages\": [{{\"role\": \"user\", \"content\": \"...\"}}, ...]}}: {e}")))?;
            let mut conversation = Conversation {
                system: None,
                user_turns: Vec::new(),
            };
            for (j, message) in line.messages.into_iter().enumerate() {
                match message.role.as_str() {
                    "system" if conversation.user_turns.is_empty() => {
                        conversation.system = Some(message.content)
                    }
                    "system" => {
                        return Err(invalid(
                            i + 1,
                            format!("messages[{j}]: a system message must come before the first user message"),
                        ))
                    }
                    "user" => conversation.user_turns.push(message.content),
                    "assistant" => {}
                    other => {
                        return Err(invalid(
                            i + 1,
                            format!("messages[{j}].role: `{other}` is not system, user or assistant"),
                        ))
                    }
                }
            }
            if conversation.user_turns.is_empty() {
                return Err(invalid(
                    i + 1,
                    "messages: the conversation has no user turn; give at least one {\"role\": \"user\"} message".into(),
                ));
            }
            conversations.push(conversation);
        }
        Ok(Conversations(non_empty(conversations, name)?))
    }

    /// How many conversations there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The conversation session `index` uses (sessions beyond the file's end start over).
    pub fn get(&self, index: usize) -> &Conversation {
        &self.0[index % self.0.len()]
    }
}

/// A multi-turn workload's sessions. Every measured request is one turn; the workload's
/// `num_requests` is the sum of the sessions' turns ([`Sessions::total_turns`]), and its
/// `output_tokens` the length asked of every answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Sessions {
    /// How many sessions run.
    pub count: usize,
    /// Turns of each synthetic session; the most turns taken of a file's conversation.
    pub turns: usize,
    /// Words of the synthetic system prompt each session starts with and keeps through its
    /// turns (0: none). Files bring their own.
    pub system_prompt_tokens: usize,
    /// Whether that system prompt is the same text in every session (one application's
    /// prompt, which a prefix cache shares across sessions) rather than each session's own.
    pub system_prompt_shared: bool,
    /// Words of each synthetic user message.
    pub user_tokens: usize,
    /// The pause between an answer and the next turn.
    pub think_time: ThinkTime,
    /// User messages from a file instead of synthetic ones.
    pub conversations: Option<Conversations>,
}

impl Sessions {
    /// `count` synthetic sessions of `turns` turns, each user message `user_tokens` words.
    pub fn synthetic(count: usize, turns: usize, user_tokens: usize) -> Self {
        Sessions {
            count,
            turns,
            system_prompt_tokens: 0,
            system_prompt_shared: false,
            user_tokens,
            think_time: ThinkTime::None,
            conversations: None,
        }
    }

    /// `count` sessions over the conversations of a file, at most `max_turns` turns each.
    pub fn from_conversations(
        count: usize,
        max_turns: usize,
        conversations: Conversations,
    ) -> Self {
        Sessions {
            count,
            turns: max_turns,
            system_prompt_tokens: 0,
            system_prompt_shared: false,
            user_tokens: 0,
            think_time: ThinkTime::None,
            conversations: Some(conversations),
        }
    }

    /// The number of turns session `session` has.
    pub fn turns_of(&self, session: usize) -> usize {
        match &self.conversations {
            None => self.turns,
            Some(c) => c.get(session).user_turns.len().min(self.turns),
        }
    }

    /// Turns over all sessions: the workload's measured requests.
    pub fn total_turns(&self) -> usize {
        match &self.conversations {
            None => self.count.saturating_mul(self.turns),
            // Sessions cycle through the file, so whole passes repeat the same sum.
            Some(c) => {
                let per_pass: usize = (0..c.len()).map(|s| self.turns_of(s)).sum();
                let (passes, rest) = (self.count / c.len(), self.count % c.len());
                per_pass
                    .saturating_mul(passes)
                    .saturating_add((0..rest).map(|s| self.turns_of(s)).sum::<usize>())
            }
        }
    }

    /// Checks the fields; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.count == 0 {
            return Err("sessions must be at least 1".into());
        }
        if self.turns == 0 || self.turns > MAX_TURNS {
            return Err(format!("turns must be from 1 to {MAX_TURNS}"));
        }
        if self.conversations.is_none() && self.user_tokens == 0 {
            return Err("user_tokens (the words of each user message) must be at least 1".into());
        }
        Ok(())
    }

    /// The user message of turn `turn` (0-based) of session `session`.
    pub fn user_message(&self, seed: u64, session: usize, turn: usize) -> String {
        match &self.conversations {
            Some(c) => c.get(session).user_turns[turn].clone(),
            None => words(
                seed,
                ((session as u64) << 16) | turn as u64,
                self.user_tokens,
            ),
        }
    }

    /// The system prompt of session `session`: the file's, or the synthetic shared one.
    pub fn system_of(&self, seed: u64, session: usize) -> Option<String> {
        match &self.conversations {
            Some(c) => c.get(session).system.clone(),
            None => (self.system_prompt_tokens > 0).then(|| {
                let stream = if self.system_prompt_shared {
                    SHARED_SYSTEM_STREAM
                } else {
                    OWN_SYSTEM_STREAMS | session as u64
                };
                words(seed, stream, self.system_prompt_tokens)
            }),
        }
    }
}

/// The streams synthetic system prompts draw from, apart from every user message's (whose
/// streams are `session << 16 | turn`, below 2^62 for any session count a run can hold).
const SHARED_SYSTEM_STREAM: u64 = u64::MAX;
const OWN_SYSTEM_STREAMS: u64 = 1 << 62;

/// `count` words of the synthetic vocabulary, from stream `stream` of `seed`.
fn words(seed: u64, stream: u64, count: usize) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ SESSION_SEED);
    rng.set_stream(stream);
    let vocabulary = crate::workload::VOCABULARY;
    (0..count)
        .map(|_| vocabulary[rng.gen_range(0..vocabulary.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Keeps session words apart from single-turn prompts' streams.
const SESSION_SEED: u64 = 0x7365_7373_0000_0000;

/// A conversation as far as a turn: the messages to send, and the same as one text for
/// backends that take a prompt (completions endpoints, the mock, the cpu backend).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    messages: Vec<Message>,
}

/// What separates the messages of a conversation rendered as one prompt: whitespace, so the
/// mock's word tokenizer counts only the messages' own words, and so each turn's prompt starts
/// with the whole of the previous turn's prompt and answer.
pub const TURN_SEPARATOR: &str = "\n\n";

impl History {
    /// A history that starts with `system`, if given.
    pub fn new(system: Option<String>) -> Self {
        History {
            messages: system
                .map(|content| Message {
                    role: Role::System,
                    content,
                })
                .into_iter()
                .collect(),
        }
    }

    /// Adds a message.
    pub fn push(&mut self, role: Role, content: String) {
        self.messages.push(Message { role, content });
    }

    /// The messages so far.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The messages as one prompt text, separated by [`TURN_SEPARATOR`].
    pub fn render(&self) -> String {
        self.messages
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join(TURN_SEPARATOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn think_time_parses_and_draws_deterministically() {
        assert_eq!(ThinkTime::parse("0").unwrap(), ThinkTime::None);
        assert_eq!(
            ThinkTime::parse("250").unwrap(),
            ThinkTime::Fixed(Duration::from_millis(250))
        );
        let exp = ThinkTime::parse("exp:100").unwrap();
        assert_eq!(exp, ThinkTime::Exponential(Duration::from_millis(100)));
        for bad in ["-1", "x", "exp:", "1e9", "NaN"] {
            assert!(ThinkTime::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(exp.after(1, 2, 3), exp.after(1, 2, 3));
        assert_ne!(exp.after(1, 2, 3), exp.after(1, 2, 4));
        // The mean of 4000 exponential draws lies within 5 % of 100 ms (σ/√n ≈ 1.6 %).
        let mean = (0..4000)
            .map(|i| exp.after(9, i, 0).as_secs_f64())
            .sum::<f64>()
            / 4000.0;
        assert!((mean - 0.1).abs() < 0.005, "{mean}");
    }

    #[test]
    fn synthetic_sessions_have_their_own_or_a_shared_system_prompt() {
        let mut s = Sessions::synthetic(3, 4, 5);
        s.system_prompt_tokens = 7;
        assert_eq!(s.total_turns(), 12);
        let system = s.system_of(1, 0).unwrap();
        assert_eq!(system.split_whitespace().count(), 7);
        assert_ne!(s.system_of(1, 2), Some(system.clone()));
        assert_eq!(s.system_of(1, 0), Some(system));
        s.system_prompt_shared = true;
        assert_eq!(s.system_of(1, 0), s.system_of(1, 2));
        assert_eq!(Sessions::synthetic(3, 4, 5).system_of(1, 0), None);
        let u = s.user_message(1, 0, 0);
        assert_eq!(u.split_whitespace().count(), 5);
        assert_ne!(u, s.user_message(1, 0, 1));
        assert_ne!(u, s.user_message(1, 1, 0));
        assert_eq!(u, s.user_message(1, 0, 0));
    }

    #[test]
    fn a_history_renders_each_turn_as_a_prefix_of_the_next() {
        let mut h = History::new(Some("sys".into()));
        h.push(Role::User, "q1".into());
        let first = h.render();
        h.push(Role::Assistant, "a1".into());
        h.push(Role::User, "q2".into());
        assert_eq!(first, "sys\n\nq1");
        assert!(h.render().starts_with(&first));
        assert_eq!(h.render(), "sys\n\nq1\n\na1\n\nq2");
        assert_eq!(h.messages().len(), 4);
    }

    #[test]
    fn sharegpt_keeps_every_human_turn_and_drops_the_answers() {
        let c = Conversations::parse_sharegpt(
            r#"[{"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q1"},
                 {"from": "gpt", "value": "a1"}, {"from": "human", "value": "q2"}]},
                {"conversations": [{"from": "gpt", "value": "only"}]},
                {"conversations": [{"from": "human", "value": "r1"}]}]"#,
            "s.json",
        )
        .unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(0).system.as_deref(), Some("s"));
        assert_eq!(c.get(0).user_turns, ["q1", "q2"]);
        assert_eq!(c.get(3).user_turns, ["r1"]);
        let sessions = Sessions::from_conversations(5, 8, c.clone());
        // Sessions 0..5 take conversations 0, 1, 0, 1, 0: 2 + 1 + 2 + 1 + 2 turns.
        assert_eq!(sessions.total_turns(), 8);
        assert_eq!(Sessions::from_conversations(5, 1, c).total_turns(), 5);
    }

    #[test]
    fn jsonl_conversations_name_the_line_and_the_field() {
        let ok = Conversations::parse_jsonl(
            "{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"a\"}, {\"role\": \"user\", \"content\": \"q2\"}]}\n\n",
            "c.jsonl",
        )
        .unwrap();
        assert_eq!(ok.get(0).user_turns, ["q", "q2"]);
        let cases = [
            ("{\"messages\": [{\"role\": \"assistant\", \"content\": \"a\"}]}", "c.jsonl:1", "no user turn"),
            ("{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}\n{\"messages\": [{\"role\": \"bot\", \"content\": \"q\"}]}", "c.jsonl:2", "messages[0].role"),
            ("{\"prompt\": \"q\"}", "c.jsonl:1", "messages"),
            ("{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"system\", \"content\": \"s\"}]}", "c.jsonl:1", "messages[1]"),
        ];
        for (text, place, field) in cases {
            let err = Conversations::parse_jsonl(text, "c.jsonl")
                .unwrap_err()
                .to_string();
            assert!(err.contains(place) && err.contains(field), "{err}");
        }
        assert!(Conversations::parse_jsonl("\n", "c.jsonl")
            .unwrap_err()
            .to_string()
            .contains("no prompt"));
    }
}
