//! Llama chat models from GGUF files (SmolLM2-135M-Instruct and its kin): the architecture and weights
//! from the file's metadata and tensors, its tokenizer and chat template, the plaintext reference in burn,
//! and generation on secret shares with the key/value cache held by the committee.
//!
//! | module | one job |
//! | --- | --- |
//! | [`config`] | the architecture from `llama.*` metadata, checked |
//! | [`weights`] | f32 weights from GGUF tensors (or random, for tests), and back to GGUF |
//! | [`model`] | the model in burn with a key/value cache: the plaintext reference |
//! | [`reference`] | a straightforward f64 forward pass: the independent check in tests |
//! | [`tokenizer`] | byte-level BPE from the GGUF vocabulary and merges |
//! | [`template`] | the GGUF's chat template, rendered with minijinja |
//! | [`sample`] | greedy and nucleus sampling |
//! | [`private`] | prefill and decode steps on shares, and what each party learns |
//! | [`run`] | a chat turn on a local committee (the client's part and the parties') |

pub mod config;
pub mod model;
pub mod private;
pub mod program;
pub mod reference;
pub mod run;
pub mod sample;
pub mod template;
pub mod tokenizer;
pub mod weights;

use std::path::Path;

use burn::tensor::Device;
use thiserror::Error;

pub use config::LlamaConfig;
pub use model::{KvCache, Llama};
pub use sample::{Sampler, Sampling};
pub use template::{ChatTemplate, Message};
pub use tokenizer::ChatTokenizer;
pub use weights::LlamaWeights;

use crate::error::EngineError;
use crate::gguf::{Gguf, GgufError};

/// Why a chat model could not be loaded or run.
#[derive(Debug, Error)]
pub enum LlamaError {
    /// The GGUF file was refused.
    #[error("GGUF: {0}")]
    Gguf(#[from] GgufError),
    /// A metadata value or file feature this reader does not support.
    #[error("{what} {value:?} is not supported")]
    Unsupported {
        /// What it is (the metadata key or feature).
        what: &'static str,
        /// The value found.
        value: String,
    },
    /// Metadata or tensors that are out of range or contradict each other.
    #[error("the model file is inconsistent: {what}")]
    Inconsistent {
        /// What does not hold.
        what: &'static str,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    TokenOutOfVocabulary {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab: usize,
    },
    /// More positions than the model's context.
    #[error("{positions} positions exceed the context of {context}")]
    ContextExceeded {
        /// Positions asked for.
        positions: usize,
        /// The model's context length.
        context: usize,
    },
    /// A step whose input does not have `len x hidden` values, or that asks for more logit rows than it runs.
    #[error("a step of {len} positions got {values} values and asks for {logits_rows} logit rows")]
    StepShape {
        /// Positions of the step.
        len: usize,
        /// Values given.
        values: usize,
        /// Logit rows asked for.
        logits_rows: usize,
    },
    /// A text longer than the tokenizer reads.
    #[error("text of {bytes} bytes exceeds {limit}")]
    TextTooLong {
        /// Its length.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The `tokenizers` crate refused to build or run (its message).
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to parse or render (minijinja's message).
    #[error("chat template: {0}")]
    Template(String),
    /// A protocol other than semi2k for generation.
    #[error("private generation runs under semi2k, not {0:?}")]
    Protocol(crate::local::Protocol),
    /// The committee returned no logits.
    #[error("the committee returned no logits")]
    NoLogits,
    /// The engine (burn, the protocols) failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<LlamaError> for EngineError {
    fn from(e: LlamaError) -> Self {
        match e {
            LlamaError::Engine(e) => e,
            other => EngineError::Llama(Box::new(other)),
        }
    }
}

impl From<veil_protocols::ProtocolError> for LlamaError {
    fn from(e: veil_protocols::ProtocolError) -> Self {
        LlamaError::Engine(EngineError::Protocol(e))
    }
}

impl From<veil_protocols::ring::RingError> for LlamaError {
    fn from(e: veil_protocols::ring::RingError) -> Self {
        LlamaError::Engine(e.into())
    }
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, LlamaError>;

fn inconsistent(what: &'static str) -> LlamaError {
    LlamaError::Inconsistent { what }
}

/// A chat model loaded from one GGUF file: weights, tokenizer and template.
#[derive(Debug)]
pub struct ChatModel {
    /// The weights (f32).
    pub weights: LlamaWeights,
    /// Text to ids.
    pub tokenizer: ChatTokenizer,
    /// Messages to prompt text.
    pub template: ChatTemplate,
}

impl ChatModel {
    /// Loads `path`.
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_gguf(&Gguf::open(path)?)
    }

    /// Builds the model from a parsed file.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let config = LlamaConfig::from_gguf(g)?;
        let tokenizer = ChatTokenizer::from_gguf(g)?;
        if tokenizer.len() != config.vocab {
            return Err(inconsistent("the token list and llama.vocab_size differ"));
        }
        let bos = tokenizer.bos.and_then(|b| tokenizer.token(b));
        let eos = tokenizer.token(tokenizer.eos).unwrap_or("");
        let template = ChatTemplate::from_gguf(g, bos, eos)?;
        let weights = LlamaWeights::from_gguf(g, config)?;
        Ok(Self {
            weights,
            tokenizer,
            template,
        })
    }

    /// The prompt ids of a chat turn: the template rendered for an optional system message and the user's
    /// text (the template supplies its default system message when none is given), then tokenised.
    pub fn prompt_ids(&self, system: Option<&str>, user: &str) -> Result<Vec<u32>> {
        let mut messages = Vec::new();
        if let Some(s) = system {
            messages.push(Message::new("system", s));
        }
        messages.push(Message::new("user", user));
        let text = self.template.render(&messages)?;
        self.tokenizer.encode(&text)
    }

    /// The plaintext model in burn.
    pub fn plaintext(&self, device: &Device) -> Llama {
        Llama::new(&self.weights, device)
    }
}

/// A generated turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The prompt's ids.
    pub prompt_tokens: Vec<u32>,
    /// The generated ids (ending with the eos id when the model stopped).
    pub tokens: Vec<u32>,
}

/// Plaintext generation with burn: up to `max_tokens` tokens after `prompt`, stopping after eos.
/// `on_token` sees each token as it is chosen.
pub fn generate_plaintext(
    model: &Llama,
    prompt: &[u32],
    max_tokens: usize,
    eos: u32,
    sampler: &mut Sampler,
    mut on_token: impl FnMut(u32),
) -> Result<Generation> {
    let mut cache = KvCache::default();
    let mut tokens = Vec::new();
    let mut logits = model.forward(prompt, &mut cache, 1)?;
    for step in 0..max_tokens {
        let l: Vec<f64> = logits.iter().map(|v| f64::from(*v)).collect();
        let t = sampler.next(&l);
        tokens.push(t);
        on_token(t);
        if t == eos || step + 1 == max_tokens {
            break;
        }
        logits = model.forward(&[t], &mut cache, 1)?;
    }
    Ok(Generation {
        prompt_tokens: prompt.to_vec(),
        tokens,
    })
}

#[cfg(test)]
mod tests;
