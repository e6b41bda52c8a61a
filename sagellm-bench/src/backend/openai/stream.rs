//! One streamed chunk of an OpenAI-compatible server, read as the servers really send it.
//!
//! What counts as output: completion `text`, chat `delta.content` and tool-call deltas (the
//! answer), and reasoning deltas (`delta.reasoning_content` as DeepSeek, vLLM and SGLang name
//! it, `delta.reasoning` as newer vLLM and Ollama do), kept apart from the answer so that the
//! time to first output token and the answer-only figures can leave the thinking out. A
//! role-only or empty delta is not output.
//! `choices[].index` is not trusted (some servers send 1 for the only choice): every choice of a
//! chunk is read. `usage` may ride in a chunk with empty `choices` or in the last one with
//! choices; an `error` object may arrive in place of a chunk.
//!
//! Token count per chunk: the OpenAI streaming format does not say how many tokens a chunk
//! holds. Each content-bearing choice counts as one token (one answer token, one reasoning
//! token, or one of each when its delta carries both); a chunk carrying several tokens (vLLM
//! under load, speculative decoding) is therefore undercounted in `stream_tokens`, and the
//! request's `n` comes from the server's `usage.completion_tokens`, which the backend always
//! asks for. The per-chunk timestamps (ITL) are exact either way.

use std::borrow::Cow;

use serde::Deserialize;

use crate::backend::{ErrorKind, Usage};

/// Most tokens a usage block may count for one request.
const MAX_USAGE_TOKENS: u64 = 1 << 32;

/// What one chunk tells.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ChunkContent {
    /// The answer text of every choice, concatenated.
    pub text: String,
    /// Answer-bearing choices in the chunk (one token each, see the module documentation).
    pub tokens: usize,
    /// The reasoning text of every choice, concatenated.
    pub reasoning_text: String,
    /// Reasoning-bearing choices in the chunk (one token each).
    pub reasoning_tokens: usize,
    pub usage: Option<Usage>,
    /// Prompt tokens the server served from its prefix cache, where it says:
    /// `usage.prompt_tokens_details.cached_tokens` (OpenAI's field, which vLLM sends with
    /// `--enable-prompt-tokens-details` and SGLang with `--enable-cache-report`) or llama.cpp's
    /// `timings.cache_n`.
    pub cached_prompt_tokens: Option<usize>,
    /// True when a choice carried a `finish_reason`.
    pub finished: bool,
    /// The server's error message, when the chunk is an error object.
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    usage: Option<UsageBlock>,
    #[serde(default)]
    timings: Option<Timings>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// A `usage` block: the counts, and the cached part of the prompt where the server says.
#[derive(Deserialize)]
struct UsageBlock {
    prompt_tokens: usize,
    completion_tokens: usize,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<usize>,
}

/// llama.cpp's per-request timings, sent in the last chunk.
#[derive(Deserialize)]
struct Timings {
    #[serde(default)]
    cache_n: Option<usize>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<Vec<serde::de::IgnoredAny>>,
}

/// What one server-sent event means for its request.
#[derive(Debug, PartialEq)]
pub(crate) enum EventMeaning {
    /// A keep-alive, an empty event, or a chunk with no output, usage or finish: read on.
    Nothing,
    /// `data: [DONE]`: the stream is complete.
    Done,
    /// The request failed, with the kind and the reason.
    Failed(ErrorKind, String),
    /// A chunk to account for.
    Chunk(ChunkContent),
}

/// Reads one event: its `event:` name (empty when the server sent none) and its `data`.
pub(crate) fn interpret(event_name: &str, data: &str) -> EventMeaning {
    if event_name == "error" {
        return EventMeaning::Failed(ErrorKind::Engine, super::clip(data));
    }
    let data = data.trim();
    if data == "[DONE]" {
        return EventMeaning::Done;
    }
    if data.is_empty() {
        return EventMeaning::Nothing;
    }
    match parse_chunk(data) {
        Err(message) => EventMeaning::Failed(ErrorKind::Protocol, message),
        Ok(ChunkContent {
            error: Some(message),
            ..
        }) => EventMeaning::Failed(
            ErrorKind::Engine,
            format!("the server reported an error mid-stream: {message}"),
        ),
        Ok(chunk) => EventMeaning::Chunk(chunk),
    }
}

/// Parses the `data` of one server-sent event (not `[DONE]`).
pub(crate) fn parse_chunk(data: &str) -> Result<ChunkContent, String> {
    let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
        let shown: String = data.chars().take(120).collect();
        format!("malformed JSON in a stream chunk ({e}): {shown}")
    })?;
    if let Some(u) = &chunk.usage {
        // Sums over a workload must not wrap: a count this large is a broken server's, not a
        // request's (the longest contexts are a few million tokens).
        if u.prompt_tokens.max(u.completion_tokens) as u64 > MAX_USAGE_TOKENS {
            return Err(format!(
                "the usage block counts {} prompt and {} completion tokens for one request, more than any request holds",
                u.prompt_tokens, u.completion_tokens
            ));
        }
    }
    let cached = chunk
        .usage
        .as_ref()
        .and_then(|u| u.prompt_tokens_details.as_ref()?.cached_tokens)
        .or_else(|| chunk.timings.as_ref()?.cache_n);
    // A cached count beyond the prompt's is a broken server's: dropped, not believed.
    let prompt = chunk.usage.as_ref().map(|u| u.prompt_tokens);
    let cached = cached.filter(|&c| prompt.map_or(c as u64 <= MAX_USAGE_TOKENS, |p| c <= p));
    let mut out = ChunkContent {
        usage: chunk.usage.as_ref().map(|u| Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        }),
        cached_prompt_tokens: cached,
        error: chunk.error.map(|e| error_message(&e)),
        ..ChunkContent::default()
    };
    for choice in &chunk.choices {
        let (mut answer, mut reasoning) = (false, false);
        let push = |into: &mut String, s: &Option<Cow<'_, str>>| match s.as_deref() {
            Some(s) if !s.is_empty() => {
                into.push_str(s);
                true
            }
            _ => false,
        };
        answer |= push(&mut out.text, &choice.text);
        if let Some(delta) = &choice.delta {
            answer |= push(&mut out.text, &delta.content);
            reasoning |= push(&mut out.reasoning_text, &delta.reasoning_content);
            reasoning |= push(&mut out.reasoning_text, &delta.reasoning);
            if delta.tool_calls.as_ref().is_some_and(|t| !t.is_empty()) {
                answer = true;
            }
        }
        out.tokens += usize::from(answer);
        out.reasoning_tokens += usize::from(reasoning);
        if choice.finish_reason.is_some() {
            out.finished = true;
        }
    }
    Ok(out)
}

/// The message of an OpenAI-style error object (`{"message": ...}`), or the object itself.
pub(crate) fn error_message(error: &serde_json::Value) -> String {
    error
        .get("message")
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_only_and_empty_chunks_are_not_output() {
        let c =
            parse_chunk(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#)
                .unwrap();
        assert_eq!(c.tokens, 0);
        let c = parse_chunk(r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#).unwrap();
        assert_eq!(c.tokens, 0);
        let c = parse_chunk(r#"{"choices":[{"index":0,"text":""}]}"#).unwrap();
        assert_eq!(c.tokens, 0);
    }

    #[test]
    fn reasoning_and_tool_call_deltas_are_output() {
        let c = parse_chunk(r#"{"choices":[{"delta":{"reasoning_content":"hmm"}}]}"#).unwrap();
        assert_eq!((c.tokens, c.text.as_str()), (0, ""));
        assert_eq!((c.reasoning_tokens, c.reasoning_text.as_str()), (1, "hmm"));
        let c = parse_chunk(r#"{"choices":[{"delta":{"reasoning":"so"}}]}"#).unwrap();
        assert_eq!((c.tokens, c.reasoning_tokens), (0, 1));
        // The chunk where the thinking ends and the answer begins holds one of each.
        let c =
            parse_chunk(r#"{"choices":[{"delta":{"reasoning_content":"done.","content":"Yes"}}]}"#)
                .unwrap();
        assert_eq!((c.tokens, c.text.as_str()), (1, "Yes"));
        assert_eq!(
            (c.reasoning_tokens, c.reasoning_text.as_str()),
            (1, "done.")
        );
        // An empty reasoning field beside the answer (as vLLM sends `"reasoning_content": null`
        // or "") is no reasoning token.
        let c = parse_chunk(r#"{"choices":[{"delta":{"reasoning_content":"","content":"a"}}]}"#)
            .unwrap();
        assert_eq!((c.tokens, c.reasoning_tokens), (1, 0));
        let c = parse_chunk(
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}"#,
        )
        .unwrap();
        assert_eq!(c.tokens, 1);
    }

    #[test]
    fn cached_prompt_tokens_from_usage_details_or_llama_cpp_timings() {
        let c = parse_chunk(
            r#"{"choices":[],"usage":{"prompt_tokens":50,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":32}}}"#,
        )
        .unwrap();
        assert_eq!(c.cached_prompt_tokens, Some(32));
        let c = parse_chunk(
            r#"{"choices":[{"text":"x","finish_reason":"length"}],"timings":{"cache_n":12,"prompt_n":3}}"#,
        )
        .unwrap();
        assert_eq!(c.cached_prompt_tokens, Some(12));
        // More cached than the prompt holds: a broken count, dropped.
        let c = parse_chunk(
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":9}}}"#,
        )
        .unwrap();
        assert_eq!(c.cached_prompt_tokens, None);
        let c = parse_chunk(r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"prompt_tokens_details":null}}"#).unwrap();
        assert_eq!(c.cached_prompt_tokens, None);
    }

    #[test]
    fn usage_in_a_chunk_with_empty_choices_and_in_the_last_chunk() {
        let c = parse_chunk(
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#,
        )
        .unwrap();
        assert_eq!(c.tokens, 0);
        assert_eq!(
            c.usage,
            Some(Usage {
                prompt_tokens: 5,
                completion_tokens: 7
            })
        );
        let c = parse_chunk(
            r#"{"choices":[{"index":3,"text":"end","finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":7}}"#,
        )
        .unwrap();
        assert_eq!((c.tokens, c.finished), (1, true));
        assert_eq!(c.usage.map(|u| u.completion_tokens), Some(7));
        let c = parse_chunk(r#"{"choices":[{"text":"x"}],"usage":null}"#).unwrap();
        assert_eq!(c.usage, None);
    }

    #[test]
    fn escaped_text_and_untrusted_indices() {
        let c = parse_chunk(r#"{"choices":[{"index":7,"text":"a\"b\n"}]}"#).unwrap();
        assert_eq!(c.text, "a\"b\n");
        assert_eq!(c.tokens, 1);
    }

    #[test]
    fn error_objects_and_malformed_json() {
        let c = parse_chunk(r#"{"error":{"message":"out of memory","code":500}}"#).unwrap();
        assert_eq!(c.error.as_deref(), Some("out of memory"));
        let e = parse_chunk(r#"{"choices": [{"text": "broken"#).unwrap_err();
        assert!(e.contains("malformed JSON"), "{e}");
    }
}
