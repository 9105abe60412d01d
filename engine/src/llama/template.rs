//! The chat template of a GGUF file (`tokenizer.chat_template`, a Jinja template as Hugging Face writes
//! them), rendered with `minijinja` for a list of messages and the generation prompt.

use minijinja::{context, Environment, Error, ErrorKind};
use serde::Serialize;

use crate::gguf::Gguf;

use super::{LlamaError, Result};

/// Longest template read, bytes.
const MAX_TEMPLATE_BYTES: usize = 64 << 10;

/// One chat message.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message of `role` with `content`.
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// A parsed chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    source: String,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// The template of `g` (with its bos and eos token strings for templates that use them).
    pub fn from_gguf(g: &Gguf, bos: Option<&str>, eos: &str) -> Result<Self> {
        let source = g.str("tokenizer.chat_template")?.to_string();
        Self::new(source, bos.unwrap_or(""), eos)
    }

    /// A template from its source.
    pub fn new(source: String, bos: &str, eos: &str) -> Result<Self> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(LlamaError::TextTooLong {
                bytes: source.len(),
                limit: MAX_TEMPLATE_BYTES,
            });
        }
        let t = Self {
            source,
            bos: bos.to_string(),
            eos: eos.to_string(),
        };
        // Parse once now, so a broken template fails at load.
        t.render(&[Message::new("user", "")])?;
        Ok(t)
    }

    /// The prompt text for `messages`, ending with the assistant's generation prompt.
    pub fn render(&self, messages: &[Message]) -> Result<String> {
        let mut env = Environment::new();
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template("chat", &self.source)
            .map_err(|e| LlamaError::Template(e.to_string()))?;
        let tmpl = env
            .get_template("chat")
            .map_err(|e| LlamaError::Template(e.to_string()))?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => &self.bos,
            eos_token => &self.eos,
        })
        .map_err(|e| LlamaError::Template(e.to_string()))
    }
}
