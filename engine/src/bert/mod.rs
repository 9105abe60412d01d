//! BERT sentence encoders in the Hugging Face layout (all-MiniLM-L6-v2 and its kin): configuration,
//! tokeniser, the encoder in burn, and the sentence embedding (mean pooling, L2 normalisation).
//!
//! A model directory holds `config.json`, `model.safetensors`, `tokenizer.json` and, optionally,
//! `sentence_bert_config.json` (its `max_seq_length` is where text is truncated; 256 for all-MiniLM-L6-v2).
//!
//! | module | one job |
//! | --- | --- |
//! | [`config`] | `config.json` and `sentence_bert_config.json`, checked |
//! | [`model`] | the encoder from burn modules, its weights, the plaintext forward pass |
//! | [`tokenize`] | text to token ids, as sentence-transformers does it |
//! | [`random`] | small encoders with random weights, for tests without the real model |
//! | [`pretrained`] | a pretrained encoder's public id, and loading it checked against that id |
//! | [`private`] | the encoder on secret shares (public weights, secret text) and what each party learns |
//! | [`run`] | private embeddings on a local committee (semi2k or spdz2k) |

pub mod config;
pub mod model;
pub mod pretrained;
pub mod private;
pub mod random;
pub mod run;
pub mod tokenize;

#[cfg(test)]
mod tests;

use std::path::Path;

use burn::tensor::Device;

pub use config::{BertConfig, SentenceConfig};
pub use model::{cosine, Bert};
pub use tokenize::TextTokenizer;

use crate::error::{EngineError, Result};

/// A sentence encoder: tokeniser and BERT from one model directory.
#[derive(Debug)]
pub struct SentenceEncoder {
    /// Text to token ids.
    pub tokenizer: TextTokenizer,
    /// The encoder.
    pub bert: Bert,
}

impl SentenceEncoder {
    /// Loads the model directory `dir` (see the module doc).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map_err(|e| EngineError::ModelFile(format!("{}: {e}", dir.join(name).display())))
        };
        let config = BertConfig::parse(&read("config.json")?)?;
        let max_len = match read("sentence_bert_config.json") {
            Ok(text) => SentenceConfig::parse(&text)?.max_seq_length,
            Err(_) => config.max_position_embeddings,
        }
        .min(config.max_position_embeddings);
        let tokenizer = TextTokenizer::load(&dir.join("tokenizer.json"), max_len)?;
        let bert = Bert::load(&dir.join("model.safetensors"), config, device)?;
        Ok(Self { tokenizer, bert })
    }

    /// The plaintext sentence embedding of `text`.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>> {
        let ids = self.tokenizer.ids(text)?;
        self.bert.embed(&ids)
    }
}
