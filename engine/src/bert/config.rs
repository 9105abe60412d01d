//! The Hugging Face `config.json` of a BERT encoder, and the sentence-transformers settings beside it.
//!
//! Invariant: a [`BertConfig`] that [`BertConfig::parse`] accepted describes a model this engine runs: the
//! `bert` model type, absolute positions, an exact-erf GELU, heads dividing the hidden size, and every size
//! positive and bounded (so that no later allocation is driven by an absurd file).

use serde::Deserialize;

use crate::error::{EngineError, Result};

/// Bound on every size read from a configuration file.
const MAX_SIZE: usize = 1 << 20;

/// The fields of `config.json` this engine uses; the rest is ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    /// `bert`.
    pub model_type: String,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// `gelu` (the exact, erf-based form).
    pub hidden_act: String,
    /// Rows of the position table.
    pub max_position_embeddings: usize,
    /// Rows of the token-type table.
    pub type_vocab_size: usize,
    /// Rows of the word table.
    pub vocab_size: usize,
    /// LayerNorm's epsilon.
    pub layer_norm_eps: f64,
    /// `absolute` (the default).
    #[serde(default = "absolute")]
    pub position_embedding_type: String,
}

fn absolute() -> String {
    "absolute".into()
}

fn bad(what: impl Into<String>) -> EngineError {
    EngineError::ModelFile(format!("config.json: {}", what.into()))
}

impl BertConfig {
    /// Parses and checks `config.json`.
    pub fn parse(text: &str) -> Result<Self> {
        let c: BertConfig = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if c.model_type != "bert" {
            return Err(bad(format!("model_type {:?} is not bert", c.model_type)));
        }
        if c.hidden_act != "gelu" {
            return Err(bad(format!(
                "hidden_act {:?}: only the exact gelu is supported",
                c.hidden_act
            )));
        }
        if c.position_embedding_type != "absolute" {
            return Err(bad("only absolute position embeddings are supported"));
        }
        let sizes = [
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.intermediate_size,
            c.max_position_embeddings,
            c.type_vocab_size,
            c.vocab_size,
        ];
        if sizes.iter().any(|s| *s == 0 || *s > MAX_SIZE) {
            return Err(bad(format!("sizes must be in 1..={MAX_SIZE}")));
        }
        if !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(bad("num_attention_heads must divide hidden_size"));
        }
        if !(c.layer_norm_eps > 0.0 && c.layer_norm_eps < 1.0) {
            return Err(bad("layer_norm_eps must be in (0, 1)"));
        }
        Ok(c)
    }

    /// Width of one attention head.
    pub fn head_size(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// sentence-transformers' `sentence_bert_config.json`: the sequence length it truncates to.
#[derive(Debug, Clone, Deserialize)]
pub struct SentenceConfig {
    /// Tokens kept, special tokens included.
    pub max_seq_length: usize,
}

impl SentenceConfig {
    /// Parses and checks the file.
    pub fn parse(text: &str) -> Result<Self> {
        let c: SentenceConfig = serde_json::from_str(text)
            .map_err(|e| EngineError::ModelFile(format!("sentence_bert_config.json: {e}")))?;
        if c.max_seq_length < 2 || c.max_seq_length > MAX_SIZE {
            return Err(EngineError::ModelFile(
                "sentence_bert_config.json: max_seq_length must be at least 2".into(),
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const MINILM: &str = r#"{"architectures":["BertModel"],"hidden_act":"gelu",
        "hidden_size":384,"intermediate_size":1536,"layer_norm_eps":1e-12,"max_position_embeddings":512,
        "model_type":"bert","num_attention_heads":12,"num_hidden_layers":6,"type_vocab_size":2,
        "vocab_size":30522,"position_embedding_type":"absolute"}"#;

    #[test]
    fn parses_minilm_and_rejects_what_it_cannot_run() {
        let c = BertConfig::parse(MINILM).unwrap();
        assert_eq!(c.head_size(), 32);
        for (from, to) in [
            ("\"gelu\"", "\"gelu_new\""),
            ("\"bert\"", "\"roberta\""),
            ("\"num_attention_heads\":12", "\"num_attention_heads\":7"),
            ("\"hidden_size\":384", "\"hidden_size\":0"),
            ("1e-12", "0"),
        ] {
            assert!(
                BertConfig::parse(&MINILM.replace(from, to)).is_err(),
                "{to}"
            );
        }
        assert!(BertConfig::parse("{").is_err());
    }
}
