//! The server's own tokenizer, through its `POST /tokenize` endpoint: exact prompt lengths and
//! output counts without a `tokenizer.json` on this machine.
//!
//! Two request shapes are known. vLLM and SGLang take `{"model", "prompt",
//! "add_special_tokens"}` and answer `{"count", "tokens", "max_model_len"}`; llama.cpp's server
//! takes `{"content", "add_special"}` and answers `{"tokens"}`. Special tokens are added (a BOS
//! where the model has one), as the completions endpoint adds them, so a prompt counted here
//! holds as many tokens as the server's `usage.prompt_tokens` will say.
//!
//! The endpoint is probed once, at the first `start_workload`, before any clock runs: each
//! shape in turn (the preset's own first) tokenizes a probe text, and the first answer that is
//! sane is kept (a shape that gets no answer within 5 s ends the probe: the server does not
//! answer, whatever the shape). An answer is sane when it is JSON with `count` or `tokens`, both agree when
//! both are given, and the count is possible for the text: at least one token for a text with a
//! word in it, and at most one token per byte plus a few special ones. Anything else (404, an
//! HTML page, another shape, absurd counts, a timeout) means no `/tokenize`, said once, and the
//! run goes on as without one.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use serde::Serialize;

use super::body;

/// Most of a `/tokenize` answer read: the token ids of the longest prompts, as JSON numbers.
const TOKENIZE_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Longest wait for one `/tokenize` answer once the endpoint answered the probe.
const TOKENIZE_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait for the probe's answer: a server that answers its requests at all answers a
/// short text at once, and the wait delays the run's start (and an interrupt given then).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Special tokens a tokenizer may add to a text (BOS, EOS, a chat template's markers are not
/// counted here), beyond one token per byte.
const SPECIAL_ALLOWANCE: usize = 16;

/// The probe text: plain words every tokenizer splits into a handful of tokens.
const PROBE: &str = "the model server streams tokens to the bench";

/// Which request shape the server takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `{"model", "prompt", "add_special_tokens"}`: vLLM, SGLang.
    Vllm,
    /// `{"content", "add_special"}`: llama.cpp's server.
    LlamaCpp,
}

impl Dialect {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Dialect::Vllm => "vLLM/SGLang",
            Dialect::LlamaCpp => "llama.cpp",
        }
    }
}

#[derive(Serialize)]
struct VllmBody<'a> {
    model: &'a str,
    prompt: &'a str,
    add_special_tokens: bool,
}

#[derive(Serialize)]
struct LlamaBody<'a> {
    content: &'a str,
    add_special: bool,
}

/// Why a server's `/tokenize` is not used.
#[derive(Debug)]
pub(crate) struct ProbeFailure {
    /// Every shape was answered 404 or 405: the server has no such endpoint.
    pub(crate) absent: bool,
    /// What each shape got.
    pub(crate) reasons: String,
}

/// A server's `/tokenize`, known to answer sanely.
#[derive(Debug, Clone)]
pub(crate) struct ServerTokenizer {
    client: reqwest::Client,
    url: String,
    shown_url: String,
    model: String,
    dialect: Dialect,
    timeout: Duration,
}

/// Why one call of `/tokenize` gave no count.
enum Failure {
    /// No answer: the connection failed or the wait ran out. Trying another shape is no use.
    Unreachable(String),
    /// An answer that is no sane count.
    Answer(String),
}

impl ServerTokenizer {
    /// Finds the shape `url` answers sanely to, `preferred` first; `Err` says why there is no
    /// usable `/tokenize`, for the one message that the run goes on without it.
    pub(crate) async fn probe(
        client: reqwest::Client,
        url: String,
        shown_url: String,
        model: String,
        preferred: Dialect,
    ) -> Result<ServerTokenizer, ProbeFailure> {
        let other = match preferred {
            Dialect::Vllm => Dialect::LlamaCpp,
            Dialect::LlamaCpp => Dialect::Vllm,
        };
        let mut reasons = Vec::new();
        let mut absent = true;
        for dialect in [preferred, other] {
            let mut tokenizer = ServerTokenizer {
                client: client.clone(),
                url: url.clone(),
                shown_url: shown_url.clone(),
                model: model.clone(),
                dialect,
                timeout: PROBE_TIMEOUT,
            };
            match tokenizer.ask(PROBE).await {
                Ok(_) => {
                    tokenizer.timeout = TOKENIZE_TIMEOUT;
                    return Ok(tokenizer);
                }
                Err(Failure::Answer(e)) => {
                    absent &= e.starts_with("HTTP 404") || e.starts_with("HTTP 405");
                    reasons.push(format!("as {}: {e}", dialect.name()));
                }
                Err(Failure::Unreachable(e)) => {
                    reasons.push(format!("as {}: {e}", dialect.name()));
                    absent = false;
                    break;
                }
            }
        }
        Err(ProbeFailure {
            absent,
            reasons: reasons.join("; "),
        })
    }

    /// The endpoint, as messages show it.
    pub(crate) fn shown_url(&self) -> &str {
        &self.shown_url
    }

    pub(crate) fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The number of tokens the server counts in `text`, special tokens included.
    pub(crate) async fn count(&self, text: &str) -> Result<usize, String> {
        self.ask(text).await.map_err(|f| match f {
            Failure::Unreachable(e) | Failure::Answer(e) => e,
        })
    }

    async fn ask(&self, text: &str) -> Result<usize, Failure> {
        let body = match self.dialect {
            Dialect::Vllm => serde_json::to_vec(&VllmBody {
                model: &self.model,
                prompt: text,
                add_special_tokens: true,
            }),
            Dialect::LlamaCpp => serde_json::to_vec(&LlamaBody {
                content: text,
                add_special: true,
            }),
        }
        .map_err(|e| Failure::Answer(format!("cannot encode the request: {e}")))?;
        let request = self
            .client
            .post(&self.url)
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let unreachable =
            |e: reqwest::Error| Failure::Unreachable(super::error_chain(&e.without_url()));
        let response = super::connections::send_idempotent(request)
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let (answer, cut) = body::read_capped(response, TOKENIZE_BODY_LIMIT)
            .await
            .map_err(unreachable)?;
        if !status.is_success() {
            return Err(Failure::Answer(format!(
                "HTTP {status}: {}",
                super::clip(&answer)
            )));
        }
        if cut {
            return Err(Failure::Answer(format!(
                "the answer is longer than {} MiB",
                TOKENIZE_BODY_LIMIT / (1024 * 1024)
            )));
        }
        read_count(&answer, text).map_err(Failure::Answer)
    }
}

/// The token count in a `/tokenize` answer for `text`, checked as the module says.
pub(crate) fn read_count(answer: &str, text: &str) -> Result<usize, String> {
    let json: serde_json::Value = serde_json::from_str(answer)
        .map_err(|_| format!("the answer is not JSON: {}", super::clip(answer)))?;
    let count = match json.get("count") {
        None | Some(serde_json::Value::Null) => None,
        Some(c) => Some(
            c.as_u64()
                .ok_or_else(|| format!("`count` is not a whole number: {c}"))?,
        ),
    };
    let listed = json
        .get("tokens")
        .and_then(|t| t.as_array())
        .map(|t| t.len() as u64);
    let count = match (count, listed) {
        (None, None) => {
            return Err(format!(
                "the answer has neither `count` nor a `tokens` list: {}",
                super::clip(answer)
            ))
        }
        (Some(c), Some(l)) if c != l => {
            return Err(format!(
                "the answer's `count` ({c}) is not the length of its `tokens` list ({l})"
            ))
        }
        (Some(c), _) | (None, Some(c)) => c,
    };
    let most = (text.len() + SPECIAL_ALLOWANCE) as u64;
    if count > most {
        return Err(format!(
            "{count} tokens for a text of {} bytes: more than one a byte",
            text.len()
        ));
    }
    if count == 0 && !text.trim().is_empty() {
        return Err("no token at all for a text with words in it".to_string());
    }
    Ok(count as usize)
}

/// Calls of `/tokenize` one prompt's cut may take before it settles for the nearest count
/// below its target.
const CUT_CALLS: usize = 40;

/// The first `k` of `words`, repeated as often as `k` needs, joined by spaces.
fn text_of(words: &[&str], k: usize) -> String {
    let mut text = String::new();
    for (i, w) in words.iter().cycle().take(k).enumerate() {
        if i > 0 {
            text.push(' ');
        }
        text.push_str(w);
    }
    text
}

/// One cut's calls of `/tokenize`, counted against [`CUT_CALLS`].
struct Cutting<'a> {
    tokenizer: &'a ServerTokenizer,
    words: &'a [&'a str],
    calls: usize,
}

impl Cutting<'_> {
    async fn count(&mut self, text: &str) -> Result<usize, String> {
        self.calls += 1;
        self.tokenizer.count(text).await
    }

    async fn words(&mut self, k: usize) -> Result<usize, String> {
        let text = text_of(self.words, k);
        self.count(&text).await
    }

    fn spent(&self) -> bool {
        self.calls >= CUT_CALLS
    }
}

/// `words` cut (or extended, repeating them) to the longest prefix the server counts as at
/// most `target` tokens, then padded with the prompt's own words that add one token each up to
/// `target` where they fit: the text and its count as the server gives it.
pub(crate) async fn cut(
    tokenizer: &ServerTokenizer,
    words: &[&str],
    target: usize,
) -> Result<(String, usize), String> {
    if words.is_empty() || target == 0 {
        return Err("nothing to cut".to_string());
    }
    let mut cutting = Cutting {
        tokenizer,
        words,
        calls: 0,
    };
    // The largest k with count(k) <= target: bracket it from a proportional guess, then
    // bisect. Counts grow with k (a word added never takes tokens away).
    let (mut lo, mut lo_count) = (0, 0);
    let mut hi = None;
    let mut k = target;
    while !cutting.spent() {
        let c = cutting.words(k).await?;
        if c <= target {
            (lo, lo_count) = (k, c);
            if c == target {
                break;
            }
            // Too short: grow in proportion (a tokenizer that merges words).
            let next = (k * target / c.max(1)).max(k + 1);
            if hi.is_some_and(|h| next >= h) || next > 8 * target + 8 {
                break;
            }
            k = next;
        } else {
            hi = Some(k);
            let next = (k * target / c).max(lo + 1);
            if next >= k {
                break;
            }
            k = next;
        }
    }
    if let Some(mut h) = hi {
        while h - lo > 1 && lo_count < target && !cutting.spent() {
            let mid = lo + (h - lo) / 2;
            let c = cutting.words(mid).await?;
            if c <= target {
                (lo, lo_count) = (mid, c);
            } else {
                h = mid;
            }
        }
    }
    if lo == 0 {
        // Even one word is more than the target (a one-token prompt and a BOS).
        let text = text_of(words, 1);
        let count = cutting.count(&text).await?;
        return Ok((text, count));
    }
    let (mut text, mut count) = (text_of(words, lo), lo_count);
    // The next whole word would overshoot: pad with words that add exactly one token.
    let mut fillers: Vec<&str> = words.to_vec();
    fillers.sort_by_key(|w| (w.len(), *w));
    fillers.dedup();
    let mut tried = 0;
    while count < target && tried < fillers.len() && !cutting.spent() {
        let candidate = format!("{text} {}", fillers[tried]);
        let c = cutting.count(&candidate).await?;
        if c > count && c <= target {
            (text, count) = (candidate, c);
        } else {
            tried += 1;
        }
    }
    Ok((text, count))
}

/// Bytes of a prompt's end that its key hashes.
const KEY_TAIL: usize = 256;

/// One workload's prompts as `/tokenize` cut or counted them, looked up by the text the workload
/// built. The look-up runs inside the request's latency (after `t0`), so it does not hash the
/// whole prompt (SipHash over a 32k-token prompt costs a tenth of a millisecond): the key is
/// the length and the last [`KEY_TAIL`] bytes (where synthetic prompts differ: their shared
/// prefix leads), and a candidate is confirmed by comparing the texts, a `memcmp`.
#[derive(Debug, Default)]
pub(crate) struct Cuts {
    by_key: HashMap<u64, Vec<CutPrompt>>,
    len: usize,
}

#[derive(Debug)]
struct CutPrompt {
    original: String,
    /// The text to send instead; `None` sends the original (a given prompt, only counted).
    sent: Option<String>,
    tokens: usize,
}

fn key(text: &str) -> u64 {
    let bytes = text.as_bytes();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.len().hash(&mut hasher);
    bytes[bytes.len().saturating_sub(KEY_TAIL)..].hash(&mut hasher);
    hasher.finish()
}

impl Cuts {
    /// Keeps `original`'s cut: the text to send instead (`None`: itself) and its tokens.
    pub(crate) fn insert(&mut self, original: String, sent: Option<String>, tokens: usize) {
        let bucket = self.by_key.entry(key(&original)).or_default();
        if !bucket.iter().any(|c| c.original == original) {
            bucket.push(CutPrompt {
                original,
                sent,
                tokens,
            });
            self.len += 1;
        }
    }

    /// `text`'s cut, if it has one: the text to send instead (`None`: itself) and its tokens.
    pub(crate) fn get(&self, text: &str) -> Option<(Option<&str>, usize)> {
        let cut = self
            .by_key
            .get(&key(text))?
            .iter()
            .find(|c| c.original == text)?;
        Some((cut.sent.as_deref(), cut.tokens))
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_read_from_either_shape_and_checked() {
        let text = "a b c";
        assert_eq!(read_count(r#"{"count":3,"tokens":[1,2,3]}"#, text), Ok(3));
        assert_eq!(read_count(r#"{"tokens":[1,2,3,4]}"#, text), Ok(4));
        assert_eq!(read_count(r#"{"count":2,"max_model_len":8}"#, text), Ok(2));
        // llama.cpp's `with_pieces` answer lists objects.
        assert_eq!(
            read_count(
                r#"{"tokens":[{"id":1,"piece":"a"},{"id":2,"piece":" b"}]}"#,
                text
            ),
            Ok(2)
        );
        let error = |answer: &str| read_count(answer, text).unwrap_err();
        assert!(error("<html>nope</html>").contains("not JSON"));
        assert!(error(r#"{"ids":[1,2]}"#).contains("neither `count` nor"));
        assert!(error(r#"{"count":3,"tokens":[1]}"#).contains("not the length"));
        assert!(error(r#"{"count":1099511627776}"#).contains("more than one a byte"));
        // "a b c" is 5 bytes: with 16 special tokens at most 21 tokens, not 22.
        let listed = |n: usize| format!("{{\"tokens\":{:?}}}", vec![7; n]);
        assert!(error(&listed(22)).contains("more than one a byte"));
        assert_eq!(read_count(&listed(21), text), Ok(21));
        assert!(error(r#"{"count":0,"tokens":[]}"#).contains("no token at all"));
        assert!(error(r#"{"count":-1}"#).contains("not a whole number"));
        assert!(error(r#"{"count":"3"}"#).contains("not a whole number"));
        // An empty text may have no token.
        assert_eq!(read_count(r#"{"tokens":[]}"#, ""), Ok(0));
    }

    #[test]
    fn cuts_are_found_by_their_whole_text_even_when_their_keys_collide() {
        // Same length and the same last 256 bytes: one key, two prompts.
        let tail = "x".repeat(300);
        let (a, b) = (format!("a{tail}"), format!("b{tail}"));
        assert_eq!(key(&a), key(&b));
        let mut cuts = Cuts::default();
        cuts.insert(a.clone(), Some("cut a".into()), 3);
        cuts.insert(b.clone(), None, 5);
        cuts.insert(a.clone(), Some("again".into()), 9);
        assert_eq!(cuts.len(), 2);
        assert_eq!(cuts.get(&a), Some((Some("cut a"), 3)));
        assert_eq!(cuts.get(&b), Some((None, 5)));
        assert_eq!(cuts.get(&format!("c{tail}")), None);
        assert_eq!(cuts.get("short"), None);
    }
}
