//! The byte-level BPE tokenizer of a GGUF file (`tokenizer.ggml.model = "gpt2"`), built with the
//! `tokenizers` crate from the file's vocabulary (`tokenizer.ggml.tokens`), merges (`tokenizer.ggml.merges`)
//! and token types (`tokenizer.ggml.token_type`: control tokens, type 3, are matched whole in text).
//!
//! Pre-tokenization follows `tokenizer.ggml.pre`: `smollm` splits every digit apart first (Hugging Face's
//! `Digits(individual_digits)`), then applies GPT-2's pattern (`ByteLevel` with its regex); the default
//! (`gpt2` and unset) applies GPT-2's pattern only.
//!
//! Token ids are the client's secret: only their count leaves the client.

use std::collections::HashMap;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer};

use crate::gguf::Gguf;

use super::{inconsistent, LlamaError, Result};

/// Largest text encoded, bytes.
pub const MAX_TEXT_BYTES: usize = 1 << 20;

/// Text to ids and back, from a GGUF vocabulary.
pub struct ChatTokenizer {
    inner: Tokenizer,
    tokens: Vec<String>,
    /// End-of-sequence id (`tokenizer.ggml.eos_token_id`).
    pub eos: u32,
    /// Beginning-of-sequence id, if the file names one.
    pub bos: Option<u32>,
}

impl std::fmt::Debug for ChatTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChatTokenizer({} tokens)", self.tokens.len())
    }
}

fn err(e: impl std::fmt::Display) -> LlamaError {
    LlamaError::Tokenizer(e.to_string())
}

impl ChatTokenizer {
    /// Builds the tokenizer of `g`.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let model = g.str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(LlamaError::Unsupported {
                what: "tokenizer.ggml.model",
                value: model.to_string(),
            });
        }
        let tokens: Vec<String> = g
            .strings("tokenizer.ggml.tokens")?
            .into_iter()
            .map(str::to_string)
            .collect();
        let types = g.integers("tokenizer.ggml.token_type")?;
        if types.len() != tokens.len() {
            return Err(inconsistent("token types and tokens differ in number"));
        }
        let merges = g
            .strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| inconsistent("a merge is not two tokens"))
            })
            .collect::<Result<Vec<_>>>()?;
        let id = |k: &str| -> Result<Option<u32>> {
            match g.u64(k) {
                Ok(v) if (v as usize) < tokens.len() => Ok(Some(v as u32)),
                Ok(_) => Err(inconsistent("a special token id is outside the vocabulary")),
                Err(_) => Ok(None),
            }
        };
        let eos = id("tokenizer.ggml.eos_token_id")?.ok_or_else(|| inconsistent("no eos token"))?;
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let vocab: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        if vocab.len() != tokens.len() {
            return Err(inconsistent("the vocabulary repeats a token"));
        }
        let bpe = BPE::builder()
            .vocab_and_merges(
                vocab
                    .into_iter()
                    .collect::<tokenizers::models::bpe::Vocab>(),
                merges,
            )
            .build()
            .map_err(err)?;
        let mut inner = Tokenizer::new(bpe);
        let byte_level = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
        let pre = match g.str("tokenizer.ggml.pre").unwrap_or("gpt2") {
            "smollm" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                byte_level,
            ])),
            "gpt2" | "default" => byte_level,
            other => {
                return Err(LlamaError::Unsupported {
                    what: "tokenizer.ggml.pre",
                    value: other.to_string(),
                })
            }
        };
        inner.with_pre_tokenizer(Some(pre));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| **t == 3)
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        inner.add_special_tokens(&special);
        Ok(Self {
            inner,
            tokens,
            eos,
            bos,
        })
    }

    /// The ids of `text` (control tokens written in the text, such as `<|im_start|>`, become their ids).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(LlamaError::TextTooLong {
                bytes: text.len(),
                limit: MAX_TEXT_BYTES,
            });
        }
        Ok(self
            .inner
            .encode(text, false)
            .map_err(err)?
            .get_ids()
            .to_vec())
    }

    /// The text of `ids` (control tokens left out).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(err)
    }

    /// The token string of `id`, if any.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Vocabulary size.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the vocabulary is empty (never, for a loaded tokenizer).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}
