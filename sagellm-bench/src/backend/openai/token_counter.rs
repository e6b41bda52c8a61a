//! Counting output tokens with the model's own tokenizer (`--tokenizer tokenizer.json`), for
//! servers that stream without a `usage` block: without it the only count is one token per
//! streamed chunk, which undercounts chunks holding several tokens.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

/// A tokenizer loaded from a `tokenizer.json`, used only to count tokens.
pub struct TokenCounter {
    tokenizer: Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCounter")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl TokenCounter {
    /// Loads a Hugging Face `tokenizer.json`; the error names the file and what it must be.
    pub fn load(path: &Path) -> Result<Self, String> {
        if !path.is_file() {
            return Err(format!(
                "{} is not a file; give the model's tokenizer.json (from its Hugging Face folder)",
                path.display()
            ));
        }
        let tokenizer = Tokenizer::from_file(path).map_err(|e| {
            format!(
                "{} is not a tokenizer.json the tokenizers library can read: {e}",
                path.display()
            )
        })?;
        Ok(TokenCounter {
            tokenizer,
            path: path.to_path_buf(),
        })
    }

    /// The file the tokenizer came from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl crate::backend::CountTokens for TokenCounter {
    /// Without special tokens (a server's `completion_tokens` counts none); `None` when the
    /// tokenizer fails on the text.
    fn count(&self, text: &str) -> Option<usize> {
        self.tokenizer
            .encode(text, false)
            .ok()
            .map(|encoding| encoding.len())
    }
}
