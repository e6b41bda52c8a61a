//! What a `#[workload]` function's body supplies beyond the attribute: prompts, a check of each
//! response, or any field of the workload set in code.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::workload::Workload;

/// Handed to a `#[workload]` function that takes `&mut Setup`.
///
/// ```
/// use sagellm_bench::{workload, Prompts, Setup};
///
/// #[workload(requests = 4, output_tokens = 32)]
/// fn greetings(setup: &mut Setup) {
///     setup.prompts(Prompts::from_texts(["Hello", "Bonjour", "Hallo"]));
///     setup.check(|response| {
///         if response.output_tokens == 32 { Ok(()) } else { Err("short answer".into()) }
///     });
/// }
/// # fn main() {}
/// ```
#[derive(Debug)]
pub struct Setup {
    workload: Workload,
}

impl Setup {
    #[doc(hidden)]
    pub fn new(workload: Workload) -> Self {
        Setup { workload }
    }

    #[doc(hidden)]
    pub fn into_workload(self) -> Workload {
        self.workload
    }

    /// The workload as the attribute and the command line defined it.
    pub fn workload(&self) -> &Workload {
        &self.workload
    }

    /// Changes any field of the workload in code.
    pub fn workload_mut(&mut self) -> &mut Workload {
        &mut self.workload
    }

    /// Sends these prompts instead of synthetic ones; request `i` gets prompt `i % len`.
    pub fn prompts(&mut self, prompts: Prompts) -> &mut Self {
        self.workload.prompts = Some(prompts);
        self
    }

    /// Makes the workload multi-turn: every measured request is a turn of one of `sessions`
    /// (see [`Sessions`](crate::workload::session::Sessions)); the attribute's `requests` is
    /// replaced by the sessions' turns, its `prompt_tokens` is each synthetic user message's
    /// length unless `sessions` sets one.
    pub fn sessions(&mut self, mut sessions: crate::workload::session::Sessions) -> &mut Self {
        if sessions.user_tokens == 0 {
            sessions.user_tokens = self.workload.prompt_tokens;
        }
        self.workload.set_sessions(sessions);
        self
    }

    /// Replays `trace` instead of the workload's own requests: its prompts, lengths and times.
    pub fn trace(&mut self, trace: crate::workload::trace::Trace) -> &mut Self {
        self.workload.set_trace(trace);
        self
    }

    /// Checks each successful response; an `Err` counts the request as failed, with the message
    /// as its reason.
    pub fn check(
        &mut self,
        check: impl Fn(&Response<'_>) -> Result<(), String> + Send + Sync + 'static,
    ) -> &mut Self {
        self.workload.check = Some(ResponseCheck(Arc::new(check)));
        self
    }
}

/// A finished request, as a response check sees it.
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    /// The request's index among the measured requests.
    pub index: usize,
    /// The prompt that was sent.
    pub prompt: &'a str,
    /// The streamed output text.
    pub text: &'a str,
    /// Output tokens, as counted for the record (usage block, tokenizer or stream).
    pub output_tokens: usize,
}

/// The function behind a [`ResponseCheck`].
pub type CheckFn = dyn Fn(&Response<'_>) -> Result<(), String> + Send + Sync;

/// A check of each response (see [`Setup::check`]).
#[derive(Clone)]
pub struct ResponseCheck(Arc<CheckFn>);

impl ResponseCheck {
    /// Checks one successful response; the error says why it fails.
    pub fn check(&self, response: &Response<'_>) -> Result<(), String> {
        (self.0)(response)
    }
}

impl fmt::Debug for ResponseCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseCheck(..)")
    }
}

impl PartialEq for ResponseCheck {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Prompts for a workload, in the order requests use them.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompts(Arc<Vec<String>>);

/// A prompt file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PromptError {
    /// The file could not be read.
    #[error("cannot read prompt file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line of a JSON Lines file is not a `{"prompt": "..."}` object.
    #[error("{file}:{line}: expected {{\"prompt\": \"...\"}}: {source}")]
    Line {
        file: String,
        /// 1-based.
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    /// A line of a conversations JSON Lines file cannot be used; `message` names the field.
    #[error("{file}:{line}: {message}")]
    Conversation {
        file: String,
        /// 1-based.
        line: usize,
        message: String,
    },
    /// The file is not a ShareGPT JSON array of conversations.
    #[error("{file}: not a ShareGPT file: {source}")]
    NotShareGpt {
        file: String,
        #[source]
        source: serde_json::Error,
    },
    /// The file holds no non-empty prompt.
    #[error("{file} holds no prompt; a prompt file needs at least one non-empty prompt")]
    Empty { file: String },
}

impl Prompts {
    /// Prompts given in code.
    pub fn from_texts<I, S>(texts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Prompts(Arc::new(texts.into_iter().map(Into::into).collect()))
    }

    /// Reads a JSON Lines file with one `{"prompt": "..."}` object per line (blank lines are
    /// skipped; other fields are ignored).
    pub fn jsonl(path: impl AsRef<Path>) -> Result<Self, PromptError> {
        let path = path.as_ref();
        Self::parse_jsonl(&read(path)?, &path.display().to_string())
    }

    /// Parses the text of a JSON Lines prompt file; `name` names it in errors.
    pub fn parse_jsonl(text: &str, name: &str) -> Result<Self, PromptError> {
        #[derive(Deserialize)]
        struct Line {
            prompt: String,
        }
        let mut prompts = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let line: Line = serde_json::from_str(line).map_err(|source| PromptError::Line {
                file: name.to_string(),
                line: i + 1,
                source,
            })?;
            prompts.push(line.prompt);
        }
        Ok(Prompts(non_empty(prompts, name)?))
    }

    /// Reads a ShareGPT file (a JSON array of `{"conversations": [{"from": "human", "value":
    /// "..."}, ...]}`); each conversation's first human turn becomes a prompt.
    pub fn sharegpt(path: impl AsRef<Path>) -> Result<Self, PromptError> {
        let path = path.as_ref();
        Self::parse_sharegpt(&read(path)?, &path.display().to_string())
    }

    /// Parses the text of a ShareGPT file; `name` names it in errors.
    pub fn parse_sharegpt(text: &str, name: &str) -> Result<Self, PromptError> {
        let prompts = sharegpt_turns(text, name)?
            .into_iter()
            .filter_map(|turns| turns.into_iter().find(|(from, _)| from == "human"))
            .map(|(_, value)| value)
            .filter(|v| !v.trim().is_empty())
            .collect();
        Ok(Prompts(non_empty(prompts, name)?))
    }

    /// How many prompts there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The prompt request `index` uses (empty when there are no prompts, which
    /// [`Workload::validate`](crate::Workload::validate) rejects before a run).
    pub fn get(&self, index: usize) -> &str {
        match self.0.len() {
            0 => "",
            n => &self.0[index % n],
        }
    }
}

/// The turns of every conversation of a ShareGPT file (a JSON array of `{"conversations":
/// [{"from": "human", "value": "..."}, ...]}`), as (from, value) pairs; `name` names it in
/// errors.
pub(crate) fn sharegpt_turns(
    text: &str,
    name: &str,
) -> Result<Vec<Vec<(String, String)>>, PromptError> {
    #[derive(Deserialize)]
    struct Conversation {
        conversations: Vec<Turn>,
    }
    #[derive(Deserialize)]
    struct Turn {
        from: String,
        value: String,
    }
    let conversations: Vec<Conversation> =
        serde_json::from_str(text).map_err(|source| PromptError::NotShareGpt {
            file: name.to_string(),
            source,
        })?;
    Ok(conversations
        .into_iter()
        .map(|c| {
            c.conversations
                .into_iter()
                .map(|t| (t.from, t.value))
                .collect()
        })
        .collect())
}

/// `items`, shared, unless the file `name` gave none.
pub(crate) fn non_empty<T>(items: Vec<T>, name: &str) -> Result<Arc<Vec<T>>, PromptError> {
    if items.is_empty() {
        return Err(PromptError::Empty {
            file: name.to_string(),
        });
    }
    Ok(Arc::new(items))
}

/// The text of a prompt or conversation file.
pub(crate) fn read(path: &Path) -> Result<String, PromptError> {
    crate::workload::input::read_to_string(path).map_err(|source| PromptError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_reads_prompts_and_reports_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.jsonl");
        std::fs::write(
            &path,
            "{\"prompt\": \"a b\"}\n\n{\"prompt\": \"c\", \"x\": 1}\n",
        )
        .unwrap();
        let p = Prompts::jsonl(&path).unwrap();
        assert_eq!(
            (p.len(), p.get(0), p.get(1), p.get(2)),
            (2, "a b", "c", "a b")
        );
        std::fs::write(&path, "{\"prompt\": \"a\"}\n{\"text\": \"b\"}\n").unwrap();
        let err = Prompts::jsonl(&path).unwrap_err().to_string();
        assert!(err.contains("p.jsonl:2"), "{err}");
        std::fs::write(&path, "\n").unwrap();
        assert!(Prompts::jsonl(&path)
            .unwrap_err()
            .to_string()
            .contains("no prompt"));
    }

    #[test]
    fn sharegpt_takes_the_first_human_turn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(
            &path,
            r#"[{"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q1"}, {"from": "gpt", "value": "a1"}]},
                {"conversations": [{"from": "gpt", "value": "only"}]},
                {"conversations": [{"from": "human", "value": "q2"}]}]"#,
        )
        .unwrap();
        let p = Prompts::sharegpt(&path).unwrap();
        assert_eq!((p.len(), p.get(0), p.get(1)), (2, "q1", "q2"));
    }
}
