//! Trace replay: requests at the times, with the lengths, a timestamped trace gives.
//!
//! Two formats, one JSON object per line:
//!
//! - **mooncake** (the format of the Mooncake traces, as AIPerf and GuideLLM read it):
//!   `{"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, ..]}`
//!   with `timestamp` in milliseconds. Each hash id names one block of `block_size` prompt
//!   tokens (512 in the published traces): requests that list the same leading hash ids share
//!   those prompt blocks word for word, so a prefix cache sees the reuse the trace recorded.
//! - **jsonl**: `{"timestamp_ms": 0.0, "prompt": "..." | "prompt_tokens": 128,
//!   "output_tokens": 64, "session_id": "user-7"}`; `session_id` is optional and is sent in the
//!   session header when one is set.
//!
//! Times count from the trace's first request. [`TraceOptions`] takes a window of the trace,
//! caps idle gaps and speeds time up or slows it down, in that order.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

/// The formats a trace file may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceFormat {
    /// Mooncake's `timestamp`, `input_length`, `output_length`, `hash_ids`.
    Mooncake,
    /// `timestamp_ms`, `prompt` or `prompt_tokens`, `output_tokens`, `session_id`.
    Jsonl,
}

impl TraceFormat {
    /// Reads `mooncake` or `jsonl`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "mooncake" => Some(TraceFormat::Mooncake),
            "jsonl" => Some(TraceFormat::Jsonl),
            _ => None,
        }
    }
}

/// How a trace is replayed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceOptions {
    /// Time runs this many times faster than recorded (2: twice as fast; 0.5: half as fast).
    pub speed: f64,
    /// Idle gaps between consecutive requests longer than this are cut to it.
    pub max_gap: Option<Duration>,
    /// Only requests recorded within `[start, end)` of the trace's time are replayed; the first
    /// of them is sent at once.
    pub window: Option<(Duration, Duration)>,
    /// Prompt tokens one mooncake hash id stands for.
    pub block_size: usize,
}

/// The block size of the published Mooncake traces.
pub const MOONCAKE_BLOCK_SIZE: usize = 512;

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            speed: 1.0,
            max_gap: None,
            window: None,
            block_size: MOONCAKE_BLOCK_SIZE,
        }
    }
}

/// Parses `START..END` in seconds of trace time (either side may be left out).
pub fn parse_window(text: &str) -> Result<(Duration, Duration), String> {
    let bad =
        || format!("trace window `{text}` must be START..END in seconds, e.g. 60..120 or ..30");
    let (start, end) = text.split_once("..").ok_or_else(bad)?;
    let seconds = |s: &str, default: f64| -> Result<f64, String> {
        if s.trim().is_empty() {
            return Ok(default);
        }
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0 && *v < MAX_TRACE_S)
            .ok_or_else(bad)
    };
    let (start, end) = (seconds(start, 0.0)?, seconds(end, MAX_TRACE_S)?);
    if end <= start {
        return Err(format!(
            "trace window `{text}`: the end must come after the start"
        ));
    }
    Ok((Duration::from_secs_f64(start), Duration::from_secs_f64(end)))
}

/// The longest trace time, seconds (a year): beyond it a timestamp is not a trace's.
const MAX_TRACE_S: f64 = 366.0 * 86_400.0;

/// A trace file that cannot be replayed; each variant says where and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The file could not be read.
    #[error("cannot read trace file {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line cannot be used; `message` names the field.
    #[error("{file}:{line}: {message}")]
    Line {
        file: String,
        /// 1-based.
        line: usize,
        message: String,
    },
    /// The replay options cannot be used.
    #[error("{message}")]
    Options { message: String },
    /// No request is left to replay.
    #[error("{file}: {message}")]
    Empty { file: String, message: String },
}

/// What one trace request asks for as its prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum TracePrompt {
    /// This text.
    Text(String),
    /// `tokens` words, the leading blocks of `block_size` words named by `hash_ids` (equal ids
    /// give equal words), the rest the request's own.
    Blocks { tokens: usize, hash_ids: Vec<u64> },
}

/// One request of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRequest {
    /// When it is sent, after the replay's start (the options applied).
    pub at: Duration,
    /// Its prompt.
    pub prompt: TracePrompt,
    /// Tokens it asks for.
    pub output_tokens: usize,
    /// The session it belongs to, if the trace says.
    pub session_id: Option<String>,
}

/// A trace ready to replay: its requests in time order, with the options applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace(Arc<TraceData>);

#[derive(Debug, PartialEq)]
struct TraceData {
    requests: Vec<TraceRequest>,
    options: TraceOptions,
    /// The file it came from, for descriptions.
    source: String,
}

impl Trace {
    /// Reads a trace file.
    pub fn load(
        path: impl AsRef<Path>,
        format: TraceFormat,
        options: TraceOptions,
    ) -> Result<Self, TraceError> {
        let path = path.as_ref();
        let text =
            crate::workload::input::read_to_string(path).map_err(|source| TraceError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        Self::parse(&text, &path.display().to_string(), format, options)
    }

    /// Parses the text of a trace file; `file` names it in errors.
    pub fn parse(
        text: &str,
        file: &str,
        format: TraceFormat,
        options: TraceOptions,
    ) -> Result<Self, TraceError> {
        let line_error = |line: usize, message: String| TraceError::Line {
            file: file.to_string(),
            line,
            message,
        };
        if !(options.speed.is_finite() && options.speed > 0.0) {
            return Err(TraceError::Options {
                message: format!(
                    "the replay speed (--trace-speed) must be a positive number, not {}",
                    options.speed
                ),
            });
        }
        if options.block_size == 0 {
            return Err(TraceError::Options {
                message: "the trace block size (--trace-block-size) must be at least 1".into(),
            });
        }
        // (recorded time in ms, request) for every line, in file order.
        let mut recorded: Vec<(f64, TraceRequest)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let number = i + 1;
            let (time_ms, request) = match format {
                TraceFormat::Mooncake => parse_mooncake(line, options.block_size),
                TraceFormat::Jsonl => parse_jsonl(line),
            }
            .map_err(|message| line_error(number, message))?;
            if let Some((previous, _)) = recorded.last() {
                if time_ms < *previous {
                    return Err(line_error(
                        number,
                        format!(
                            "timestamp {time_ms} ms is earlier than the line before it ({previous} ms); a trace must be in time order (sort it by its timestamp)"
                        ),
                    ));
                }
            }
            recorded.push((time_ms, request));
        }
        let Some(&(first_ms, _)) = recorded.first() else {
            return Err(TraceError::Empty {
                file: file.to_string(),
                message: "the trace holds no request".into(),
            });
        };
        let requests = replay_times(recorded, first_ms, &options);
        if requests.is_empty() {
            return Err(TraceError::Empty {
                file: file.to_string(),
                message: "no request of the trace falls inside the --trace-window".into(),
            });
        }
        Ok(Trace(Arc::new(TraceData {
            requests,
            options,
            source: file.to_string(),
        })))
    }

    /// Builds a trace from requests given in code (their `at` used as is).
    pub fn from_requests(requests: Vec<TraceRequest>, source: &str) -> Result<Self, String> {
        if requests.is_empty() {
            return Err("a trace needs at least one request".into());
        }
        if requests.windows(2).any(|w| w[1].at < w[0].at) {
            return Err("the trace's requests must be in time order".into());
        }
        Ok(Trace(Arc::new(TraceData {
            requests,
            options: TraceOptions::default(),
            source: source.to_string(),
        })))
    }

    /// The trace's first `count` requests (at least one).
    pub fn first(&self, count: usize) -> Trace {
        let mut requests = self.0.requests.clone();
        requests.truncate(count.max(1));
        Trace(Arc::new(TraceData {
            requests,
            options: self.0.options,
            source: self.0.source.clone(),
        }))
    }

    /// The requests, in time order.
    pub fn requests(&self) -> &[TraceRequest] {
        &self.0.requests
    }

    /// How many requests are replayed.
    pub fn len(&self) -> usize {
        self.0.requests.len()
    }

    /// Whether there is none (never, for a loaded trace).
    pub fn is_empty(&self) -> bool {
        self.0.requests.is_empty()
    }

    /// The options it was loaded with.
    pub fn options(&self) -> &TraceOptions {
        &self.0.options
    }

    /// A short human description, e.g. "trace t.jsonl (40 requests, 2x)".
    pub fn describe(&self) -> String {
        let speed = self.0.options.speed;
        let speed = if speed == 1.0 {
            String::new()
        } else {
            format!(", {speed}x")
        };
        format!("trace {} ({} requests{speed})", self.0.source, self.len())
    }

    /// The words of request `index`'s prompt, and their count; deterministic in (seed, index).
    pub fn prompt(&self, index: usize, seed: u64) -> (String, usize) {
        let request = &self.0.requests[index % self.0.requests.len()];
        match &request.prompt {
            TracePrompt::Text(text) => (text.clone(), text.split_whitespace().count()),
            TracePrompt::Blocks { tokens, hash_ids } => {
                let block = self.0.options.block_size;
                let mut words: Vec<&str> = Vec::with_capacity(*tokens);
                for &hash in hash_ids {
                    if words.len() >= *tokens {
                        break;
                    }
                    let take = block.min(*tokens - words.len());
                    push_words(&mut words, seed, hash, take);
                }
                // Beyond the named blocks, words of the request's own.
                let rest = *tokens - words.len();
                push_words(&mut words, seed ^ OWN_WORDS, index as u64, rest);
                (words.join(" "), *tokens)
            }
        }
    }
}

/// Keeps a request's own words apart from every block's.
const OWN_WORDS: u64 = 0x6f77_6e00_0000_0000;

fn push_words(words: &mut Vec<&'static str>, seed: u64, stream: u64, count: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ TRACE_SEED);
    rng.set_stream(stream);
    let vocabulary = crate::workload::VOCABULARY;
    words.extend((0..count).map(|_| vocabulary[rng.gen_range(0..vocabulary.len())]));
}

/// Keeps trace words apart from the other synthetic prompts' streams.
const TRACE_SEED: u64 = 0x7472_6163_6500_0000;

/// The most tokens one trace request may ask for, as a workload may.
fn check_tokens(field: &str, value: u64) -> Result<usize, String> {
    let max = crate::workload::MAX_TOKENS as u64;
    if value == 0 || value > max {
        return Err(format!("{field} must be from 1 to {max}, not {value}"));
    }
    Ok(value as usize)
}

fn check_time(field: &str, ms: f64) -> Result<f64, String> {
    if !(0.0..MAX_TRACE_S * 1000.0).contains(&ms) {
        return Err(format!(
            "{field} must be a number of milliseconds from 0, not {ms}"
        ));
    }
    Ok(ms)
}

fn parse_mooncake(line: &str, block_size: usize) -> Result<(f64, TraceRequest), String> {
    #[derive(Deserialize)]
    struct Line {
        timestamp: f64,
        input_length: u64,
        output_length: u64,
        #[serde(default)]
        hash_ids: Vec<u64>,
    }
    let line: Line = serde_json::from_str(line).map_err(|e| {
        format!("expected {{\"timestamp\": MS, \"input_length\": N, \"output_length\": N, \"hash_ids\": [..]}}: {e}")
    })?;
    let tokens = check_tokens("input_length", line.input_length)?;
    let blocks = tokens.div_ceil(block_size);
    if line.hash_ids.len() > blocks {
        return Err(format!(
            "hash_ids: {} ids name more blocks of {block_size} tokens than input_length {tokens} holds ({blocks}); is the block size right (--trace-block-size)?",
            line.hash_ids.len()
        ));
    }
    Ok((
        check_time("timestamp", line.timestamp)?,
        TraceRequest {
            at: Duration::ZERO,
            prompt: TracePrompt::Blocks {
                tokens,
                hash_ids: line.hash_ids,
            },
            output_tokens: check_tokens("output_length", line.output_length)?,
            session_id: None,
        },
    ))
}

fn parse_jsonl(line: &str) -> Result<(f64, TraceRequest), String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        timestamp_ms: f64,
        prompt: Option<String>,
        prompt_tokens: Option<u64>,
        output_tokens: u64,
        session_id: Option<String>,
    }
    let line: Line = serde_json::from_str(line).map_err(|e| {
        format!("expected {{\"timestamp_ms\": MS, \"prompt\": \"...\" or \"prompt_tokens\": N, \"output_tokens\": N, \"session_id\": \"...\"}}: {e}")
    })?;
    let prompt = match (line.prompt, line.prompt_tokens) {
        (Some(text), None) if !text.trim().is_empty() => TracePrompt::Text(text),
        (Some(_), None) => return Err("prompt is empty".into()),
        (None, Some(n)) => TracePrompt::Blocks {
            tokens: check_tokens("prompt_tokens", n)?,
            hash_ids: Vec::new(),
        },
        (Some(_), Some(_)) => return Err("give prompt or prompt_tokens, not both".into()),
        (None, None) => return Err("give prompt (a text) or prompt_tokens (a length)".into()),
    };
    Ok((
        check_time("timestamp_ms", line.timestamp_ms)?,
        TraceRequest {
            at: Duration::ZERO,
            prompt,
            output_tokens: check_tokens("output_tokens", line.output_tokens)?,
            session_id: line.session_id,
        },
    ))
}

/// Applies the window, the gap cap and the speed, in that order, to recorded times (ms).
fn replay_times(
    recorded: Vec<(f64, TraceRequest)>,
    first_ms: f64,
    options: &TraceOptions,
) -> Vec<TraceRequest> {
    let (start, end) = options
        .window
        .map(|(s, e)| (s.as_secs_f64() * 1000.0, e.as_secs_f64() * 1000.0))
        .unwrap_or((0.0, f64::INFINITY));
    let max_gap = options.max_gap.map(|g| g.as_secs_f64() * 1000.0);
    let mut replay_ms = 0.0f64;
    let mut previous: Option<f64> = None;
    let mut requests = Vec::new();
    for (time_ms, mut request) in recorded {
        let since_start = time_ms - first_ms;
        if since_start < start || since_start >= end {
            continue;
        }
        if let Some(previous) = previous {
            let gap = time_ms - previous;
            replay_ms += max_gap.map_or(gap, |cap| gap.min(cap));
        }
        previous = Some(time_ms);
        request.at = Duration::from_secs_f64(replay_ms / options.speed / 1000.0);
        requests.push(request);
    }
    requests
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(trace: &Trace) -> Vec<u128> {
        trace.requests().iter().map(|r| r.at.as_millis()).collect()
    }

    const MOONCAKE: &str = "{\"timestamp\": 1000, \"input_length\": 10, \"output_length\": 3, \"hash_ids\": [1, 2, 3]}\n\
        {\"timestamp\": 1500, \"input_length\": 8, \"output_length\": 2, \"hash_ids\": [1, 2]}\n\
        \n\
        {\"timestamp\": 9500, \"input_length\": 4, \"output_length\": 1, \"hash_ids\": [7]}\n";

    fn blocks_of_4() -> TraceOptions {
        TraceOptions {
            block_size: 4,
            ..TraceOptions::default()
        }
    }

    #[test]
    fn mooncake_times_count_from_the_first_request_and_shared_ids_share_words() {
        let t = Trace::parse(MOONCAKE, "m.jsonl", TraceFormat::Mooncake, blocks_of_4()).unwrap();
        assert_eq!(ms(&t), [0, 500, 8500]);
        assert_eq!(t.requests()[0].output_tokens, 3);
        let (a, n) = t.prompt(0, 42);
        let (b, m) = t.prompt(1, 42);
        assert_eq!((n, m), (10, 8));
        let (a, b): (Vec<&str>, Vec<&str>) = (a.split(' ').collect(), b.split(' ').collect());
        assert_eq!((a.len(), b.len()), (10, 8));
        // Hash ids 1 and 2: the first two blocks of 4 words are the same in both.
        assert_eq!(a[..8], b[..8]);
        let (c, _) = t.prompt(2, 42);
        assert_ne!(c.split(' ').collect::<Vec<_>>(), a[..4]);
        assert_eq!(t.prompt(0, 42), t.prompt(0, 42));
    }

    #[test]
    fn window_gap_cap_and_speed_apply_in_order() {
        let options = TraceOptions {
            max_gap: Some(Duration::from_secs(2)),
            speed: 2.0,
            ..blocks_of_4()
        };
        // Gaps 500 and 8000 ms; capped: 500 and 2000; at 2x: 250 and 1000.
        let t = Trace::parse(MOONCAKE, "m", TraceFormat::Mooncake, options).unwrap();
        assert_eq!(ms(&t), [0, 250, 1250]);
        let window = TraceOptions {
            window: Some(parse_window("0.4..").unwrap()),
            ..blocks_of_4()
        };
        let t = Trace::parse(MOONCAKE, "m", TraceFormat::Mooncake, window).unwrap();
        assert_eq!(ms(&t), [0, 8000]);
        let none = TraceOptions {
            window: Some(parse_window("..0.1").unwrap()),
            ..blocks_of_4()
        };
        assert!(Trace::parse(MOONCAKE, "m", TraceFormat::Mooncake, none)
            .map(|t| t.len())
            .is_ok_and(|n| n == 1));
        assert!(parse_window("5..2").is_err() && parse_window("x").is_err());
    }

    #[test]
    fn bad_lines_name_the_file_the_line_and_the_field() {
        let cases = [
            (TraceFormat::Mooncake, "{\"timestamp\": 5, \"input_length\": 4, \"output_length\": 1}\n{\"timestamp\": 4, \"input_length\": 4, \"output_length\": 1}", "t:2", "time order"),
            (TraceFormat::Mooncake, "{\"timestamp\": 5, \"input_length\": 0, \"output_length\": 1}", "t:1", "input_length"),
            (TraceFormat::Mooncake, "{\"timestamp\": 5, \"input_length\": 4, \"output_length\": 1, \"hash_ids\": [1, 2]}", "t:1", "hash_ids"),
            (TraceFormat::Mooncake, "{\"timestamp\": -5, \"input_length\": 4, \"output_length\": 1}", "t:1", "timestamp"),
            (TraceFormat::Jsonl, "{\"timestamp_ms\": 0, \"output_tokens\": 3}", "t:1", "prompt"),
            (TraceFormat::Jsonl, "{\"timestamp_ms\": 0, \"prompt\": \"a\", \"prompt_tokens\": 3, \"output_tokens\": 3}", "t:1", "not both"),
            (TraceFormat::Jsonl, "{\"timestamp_ms\": 0, \"prompt\": \"a\", \"output_tokens\": 3, \"extra\": 1}", "t:1", "extra"),
        ];
        for (format, text, place, field) in cases {
            let options = TraceOptions {
                block_size: 4,
                ..TraceOptions::default()
            };
            let err = Trace::parse(text, "t", format, options)
                .unwrap_err()
                .to_string();
            assert!(err.contains(place) && err.contains(field), "{err}");
        }
        assert!(
            Trace::parse("\n", "t", TraceFormat::Jsonl, TraceOptions::default())
                .unwrap_err()
                .to_string()
                .contains("no request")
        );
    }

    #[test]
    fn jsonl_traces_carry_texts_lengths_and_sessions() {
        let t = Trace::parse(
            "{\"timestamp_ms\": 10, \"prompt\": \"hello there\", \"output_tokens\": 4, \"session_id\": \"u1\"}\n\
             {\"timestamp_ms\": 35.5, \"prompt_tokens\": 6, \"output_tokens\": 2}",
            "t",
            TraceFormat::Jsonl,
            TraceOptions::default(),
        )
        .unwrap();
        assert_eq!(t.requests()[1].at, Duration::from_micros(25_500));
        assert_eq!(t.prompt(0, 1), ("hello there".to_string(), 2));
        assert_eq!(t.prompt(1, 1).1, 6);
        assert_eq!(t.prompt(1, 1).0.split(' ').count(), 6);
        assert_eq!(t.requests()[0].session_id.as_deref(), Some("u1"));
    }
}
