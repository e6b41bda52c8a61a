//! Between text and token ids: prompts cut to the exact length the workload asks for, and
//! generated ids turned back into text as they arrive.

use tokenizers::Tokenizer;

/// The model's tokenizer and the ids the engine needs to know.
pub struct TextCodec {
    tokenizer: Tokenizer,
    /// Ids that mark the end of a sequence (only consulted when stopping at EOS is asked for).
    pub eos_ids: Vec<u32>,
}

impl TextCodec {
    pub fn new(tokenizer: Tokenizer, eos_ids: Vec<u32>) -> Self {
        TextCodec { tokenizer, eos_ids }
    }

    /// Tokenizes `prompt` and cuts or repeats its tokens to exactly `length` ids. Leading
    /// special tokens the tokenizer adds (a BOS) stay first and are counted; the words after
    /// them are repeated when the text is too short, so the prompt keeps real vocabulary.
    pub fn prompt_ids(&self, prompt: &str, length: usize) -> Result<Vec<u32>, String> {
        if length == 0 {
            return Err("a prompt needs at least one token".to_string());
        }
        let encoding = self
            .tokenizer
            .encode(prompt, true)
            .map_err(|e| format!("cannot tokenize the prompt: {e}"))?;
        let ids = encoding.get_ids();
        let special = encoding.get_special_tokens_mask();
        let lead = special
            .iter()
            .take_while(|&&s| s == 1)
            .count()
            .min(ids.len());
        let body: Vec<u32> = ids[lead..]
            .iter()
            .zip(&special[lead..])
            .filter(|(_, &s)| s == 0)
            .map(|(&id, _)| id)
            .collect();
        let mut out: Vec<u32> = ids[..lead].to_vec();
        out.truncate(length);
        if body.is_empty() && out.len() < length {
            return Err(
                "the prompt has no text tokens to fill the requested length with".to_string(),
            );
        }
        let mut words = body.iter().cycle();
        while out.len() < length {
            match words.next() {
                Some(&id) => out.push(id),
                None => break,
            }
        }
        Ok(out)
    }

    /// Token ids of a text as it is, with the special tokens the tokenizer adds (a BOS): the
    /// prompt of a conversation's turn, whose length is the conversation's, not the workload's.
    pub fn text_ids(&self, prompt: &str) -> Result<Vec<u32>, String> {
        let ids = self
            .tokenizer
            .encode(prompt, true)
            .map_err(|e| format!("cannot tokenize the prompt: {e}"))?
            .get_ids()
            .to_vec();
        if ids.is_empty() {
            return Err("the prompt tokenizes to no token".to_string());
        }
        Ok(ids)
    }

    /// Token ids of a text, without special tokens (for tests and references).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, String> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| format!("cannot tokenize: {e}"))
    }

    fn decode(&self, ids: &[u32]) -> String {
        // Unknown ids decode to nothing rather than failing a request that already produced
        // its tokens: the text is for reading, the counts are what is measured.
        self.tokenizer.decode(ids, true).unwrap_or_default()
    }
}

/// Turns a growing list of ids into text pieces: a byte-level BPE token can end inside a UTF-8
/// character, so a piece is released only once the text decoded so far is whole.
#[derive(Default)]
pub struct IncrementalText {
    ids: Vec<u32>,
    emitted: usize,
}

impl IncrementalText {
    /// Adds one id and returns the text that became final (possibly empty).
    pub fn push(&mut self, codec: &TextCodec, id: u32) -> String {
        self.ids.push(id);
        let text = codec.decode(&self.ids);
        if text.ends_with('\u{FFFD}')
            || text.len() < self.emitted
            || !text.is_char_boundary(self.emitted)
        {
            return String::new();
        }
        let piece = text[self.emitted..].to_string();
        self.emitted = text.len();
        piece
    }
}
