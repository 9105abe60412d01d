//! Text to token ids with a Hugging Face `tokenizer.json`, as sentence-transformers does it: no padding, and
//! truncation at the model's `max_seq_length` (the shipped all-MiniLM-L6-v2 `tokenizer.json` pads and
//! truncates to 128; sentence-transformers overrides both, and so does this).
//!
//! The token ids of a text are the secret input of a private embedding; only their number is public.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{EngineError, Result};

/// Largest text accepted, bytes (truncation happens after tokenisation, so bound the work before it).
pub const MAX_TEXT_BYTES: usize = 1 << 20;

/// A tokeniser with padding off and truncation at `max_len` tokens (special tokens included).
pub struct TextTokenizer {
    inner: Tokenizer,
    max_len: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TextTokenizer(max_len {})", self.max_len)
    }
}

fn err(what: impl std::fmt::Display) -> EngineError {
    EngineError::ModelFile(format!("tokenizer: {what}"))
}

/// Checks every `TemplateProcessing` in a post-processor's JSON form (a `Sequence` nests them): each
/// `SpecialToken` piece of its `single` and `pair` templates names a key of its `special_tokens`.
fn check_templates(processor: &serde_json::Value) -> Result<()> {
    if let Some(nested) = processor.get("processors").and_then(|p| p.as_array()) {
        for p in nested {
            check_templates(p)?;
        }
    }
    if processor.get("type").and_then(|t| t.as_str()) != Some("TemplateProcessing") {
        return Ok(());
    }
    let known = processor.get("special_tokens").and_then(|s| s.as_object());
    for template in ["single", "pair"] {
        let pieces = processor.get(template).and_then(|t| t.as_array());
        for piece in pieces.into_iter().flatten() {
            let Some(special) = piece.get("SpecialToken") else {
                continue;
            };
            let id = special
                .get("id")
                .and_then(|i| i.as_str())
                .unwrap_or_default();
            if !known.is_some_and(|k| k.contains_key(id)) {
                return Err(err(format!(
                    "the {template} template names the special token {id:?}, which is not defined"
                )));
            }
        }
    }
    Ok(())
}

impl TextTokenizer {
    /// Loads `tokenizer.json` and sets padding off, truncation at `max_len`.
    pub fn load(path: &Path, max_len: usize) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        Self::from_bytes(&bytes, max_len)
    }

    /// Parses a `tokenizer.json`'s bytes; see [`Self::load`].
    ///
    /// Two checks stand before `tokenizers` 0.22 where it would panic rather than return an error (found by
    /// `engine/tests/fuzz_model_files.rs`): the bytes must be well-formed JSON (parsed in full; skipping with
    /// `IgnoredAny` does not validate string escapes), since a syntax error inside the `decoder` object hits an
    /// `expect`; and every special token a `TemplateProcessing` post-processor's templates name must be among
    /// its `special_tokens`, since encoding indexes that map unchecked.
    pub fn from_bytes(bytes: &[u8], max_len: usize) -> Result<Self> {
        serde_json::from_slice::<serde_json::Value>(bytes).map_err(err)?;
        let mut inner = Tokenizer::from_bytes(bytes).map_err(err)?;
        if let Some(processor) = inner.get_post_processor() {
            check_templates(&serde_json::to_value(processor).map_err(err)?)?;
        }
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(err)?;
        Ok(Self { inner, max_len })
    }

    /// The token ids of `text`, with the special tokens the tokenizer adds (`[CLS]` ... `[SEP]`).
    pub fn ids(&self, text: &str) -> Result<Vec<u32>> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(err(format!(
                "text of {} bytes exceeds {MAX_TEXT_BYTES}",
                text.len()
            )));
        }
        let encoding = self.inner.encode(text, true).map_err(err)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The truncation length.
    pub fn max_len(&self) -> usize {
        self.max_len
    }
}
