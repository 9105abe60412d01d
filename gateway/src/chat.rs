//! `POST /v1/chat/completions` over a [`ChatBackend`]: OpenAI's request fields (`messages`, `max_tokens` /
//! `max_completion_tokens`, `temperature`, `top_p`, `seed`, `stop`, `stream`, `stream_options`), its
//! `chat.completion` answer and its `chat.completion.chunk` event stream ending in `data: [DONE]`.
//!
//! Stop sequences are applied here, on the opened text, whatever the backend: text is released only once
//! no stop sequence can still begin in it, and generation is stopped at the first match (which is cut,
//! as OpenAI does).

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::backend::{ChatMessage, ChatParams, FinishReason};
use crate::error::ApiError;
use crate::routes::{acquire, authorize, blocking, json_object, model_field, unix_now, Object};
use crate::stream::ChannelBody;
use crate::{BackendError, ChatBackend, Gateway, CHAT_MODEL_NAMES};

/// Most stop sequences (OpenAI's limit).
const MAX_STOPS: usize = 4;
/// Longest stop sequence, bytes.
const MAX_STOP_BYTES: usize = 256;
/// Longest message, bytes.
const MAX_MESSAGE_BYTES: usize = 64 << 10;

/// A parsed chat request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChatRequest {
    pub model: String,
    pub params: ChatParams,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

fn bad(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message).param(param)
}

fn message_text(i: usize, content: Option<&Value>) -> Result<String, ApiError> {
    let text = match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (part.get("type"), part.get("text")) {
                    (Some(Value::String(t)), Some(Value::String(s))) if t == "text" => {
                        text.push_str(s)
                    }
                    _ => {
                        return Err(bad(
                            "messages",
                            format!("messages[{i}].content: only text parts are accepted"),
                        ))
                    }
                }
            }
            text
        }
        _ => {
            return Err(bad(
                "messages",
                format!("messages[{i}].content must be a string or an array of text parts"),
            ))
        }
    };
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(bad(
            "messages",
            format!("messages[{i}] has more than {MAX_MESSAGE_BYTES} bytes"),
        ));
    }
    Ok(text)
}

fn number(
    request: &Object,
    name: &'static str,
    default: f32,
    range: (f32, f32),
) -> Result<f32, ApiError> {
    match request.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if x >= f64::from(range.0) && x <= f64::from(range.1) => Ok(x as f32),
            _ => Err(bad(
                name,
                format!("`{name}` must be between {} and {}", range.0, range.1),
            )),
        },
        Some(_) => Err(bad(name, format!("`{name}` must be a number"))),
    }
}

/// Parses a chat request (see the module doc) within `limits`.
pub(crate) fn parse(request: &Object, limits: &crate::Limits) -> Result<ChatRequest, ApiError> {
    let model = model_field(request)?;
    let Some(Value::Array(items)) = request.get("messages") else {
        return Err(bad("messages", "`messages` must be an array of messages"));
    };
    if items.is_empty() {
        return Err(bad("messages", "`messages` must not be empty"));
    }
    if items.len() > limits.max_messages {
        return Err(bad(
            "messages",
            format!("{} messages: at most {}", items.len(), limits.max_messages),
        ));
    }
    let mut messages = Vec::with_capacity(items.len());
    for (i, m) in items.iter().enumerate() {
        let role = match m.get("role") {
            Some(Value::String(r)) if r == "system" || r == "developer" => "system",
            Some(Value::String(r)) if r == "user" => "user",
            Some(Value::String(r)) if r == "assistant" => "assistant",
            _ => {
                return Err(bad(
                    "messages",
                    format!("messages[{i}].role must be system, developer, user or assistant"),
                ))
            }
        };
        messages.push(ChatMessage {
            role: role.to_string(),
            content: message_text(i, m.get("content"))?,
        });
    }
    let max_tokens = match (
        request
            .get("max_completion_tokens")
            .filter(|v| !v.is_null()),
        request.get("max_tokens").filter(|v| !v.is_null()),
    ) {
        (Some(v), _) => Some(("max_completion_tokens", v)),
        (None, Some(v)) => Some(("max_tokens", v)),
        (None, None) => None,
    };
    let max_tokens = match max_tokens {
        None => limits.max_completion_tokens,
        Some((name, v)) => match v.as_u64() {
            Some(n) if n >= 1 && n <= u64::from(limits.max_completion_tokens) => n as u32,
            _ => {
                return Err(bad(
                    if name == "max_tokens" {
                        "max_tokens"
                    } else {
                        "max_completion_tokens"
                    },
                    format!(
                        "`{name}` must be an integer from 1 to {}",
                        limits.max_completion_tokens
                    ),
                ))
            }
        },
    };
    let temperature = number(request, "temperature", 1.0, (0.0, 2.0))?;
    let top_p = number(request, "top_p", 1.0, (0.0, 1.0))?;
    let seed = match request.get("seed") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
            (Some(s), _) => Some(s),
            (None, Some(s)) => Some(s as u64),
            _ => return Err(bad("seed", "`seed` must be an integer")),
        },
        Some(_) => return Err(bad("seed", "`seed` must be an integer")),
    };
    let stop = match request.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if items.len() <= MAX_STOPS => items
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("stop", "`stop` must be a string or an array of strings"))?,
        Some(_) => {
            return Err(bad(
                "stop",
                format!("`stop` must be a string or an array of at most {MAX_STOPS} strings"),
            ))
        }
    };
    if stop
        .iter()
        .any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES)
    {
        return Err(bad(
            "stop",
            format!("each stop sequence must have 1 to {MAX_STOP_BYTES} bytes"),
        ));
    }
    match request.get("n") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_u64() == Some(1) => {}
        Some(_) => return Err(bad("n", "only `n` = 1 is served")),
    }
    let stream = match request.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("stream", "`stream` must be a boolean")),
    };
    let include_usage = request
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(ChatRequest {
        model,
        params: ChatParams {
            messages,
            max_tokens,
            temperature,
            top_p,
            seed,
            stop: stop.clone(),
        },
        stop,
        stream,
        include_usage,
    })
}

/// Holds back generated text until no stop sequence can begin in it.
/// Invariant: `released <= text.len()`, on a char boundary; `text[..released]` holds no stop sequence.
#[derive(Debug, Default)]
pub(crate) struct StopFilter {
    stops: Vec<String>,
    text: String,
    released: usize,
    stopped: bool,
}

impl StopFilter {
    pub(crate) fn new(stops: Vec<String>) -> StopFilter {
        StopFilter {
            stops,
            ..StopFilter::default()
        }
    }

    /// Adds a piece of generated text; returns the text now safe to release, and whether a stop
    /// sequence ended the generation.
    pub(crate) fn push(&mut self, piece: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        self.text.push_str(piece);
        // Search from where a stop sequence overlapping the released text could start.
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let mut from = self.released.saturating_sub(longest);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|p| from + p))
            .min();
        if let Some(at) = hit {
            let out = self.text[self.released.min(at)..at].to_string();
            self.released = at;
            self.text.truncate(at);
            self.stopped = true;
            return (out, true);
        }
        let mut safe = self.text.len().saturating_sub(longest.saturating_sub(1));
        while !self.text.is_char_boundary(safe) {
            safe -= 1;
        }
        let safe = safe.max(self.released);
        let out = self.text[self.released..safe].to_string();
        self.released = safe;
        (out, false)
    }

    /// The text held back at the end of a generation no stop sequence ended.
    pub(crate) fn finish(&mut self) -> String {
        let out = self.text[self.released..].to_string();
        self.released = self.text.len();
        out
    }

    /// Whether a stop sequence ended the generation.
    pub(crate) fn stopped(&self) -> bool {
        self.stopped
    }
}

/// The chat backend serving `model`, or the matching error.
fn chat_backend(gateway: &Gateway, model: &str) -> Result<Arc<dyn ChatBackend>, ApiError> {
    if let Some(chat) = &gateway.chat {
        if chat.models().iter().any(|m| m.id == model) {
            return Ok(chat.clone());
        }
    }
    if let Some(m) = gateway.backend.models().iter().find(|m| m.id == model) {
        return Err(BackendError::WrongKind {
            model: model.to_string(),
            kind: m.kind,
        }
        .into());
    }
    if gateway.chat.is_none() && CHAT_MODEL_NAMES.contains(&model) {
        return Err(ApiError {
            message: format!(
                "the chat model `{model}` is not served by this gateway: start it with the model fetched (veil models fetch {model}) or with --model {model}"
            ),
            ..ApiError::model_not_found(model)
        }
        .code("model_not_available"));
    }
    Err(ApiError::model_not_found(model))
}

fn finish_name(stopped: bool, reason: FinishReason) -> FinishReason {
    if stopped {
        FinishReason::Stop
    } else {
        reason
    }
}

/// `POST /v1/chat/completions`.
pub(crate) async fn completions(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match completions_inner(gateway, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn completions_inner(
    gateway: Arc<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorize(&gateway, &headers)?;
    let object = json_object(&gateway, body)?;
    let request = parse(&object, &gateway.limits)?;
    let backend = chat_backend(&gateway, &request.model)?;
    let permit = acquire(&gateway)?;
    let created = unix_now();
    let id = format!(
        "chatcmpl-veil-{created}-{}",
        gateway.completions.fetch_add(1, Ordering::Relaxed)
    );
    if request.stream {
        return Ok(stream(backend, request, id, created, permit));
    }
    let out = blocking(move || {
        let mut filter = StopFilter::new(request.stop.clone());
        let mut content = String::new();
        let result = backend.complete(&request.model, &request.params, &mut |piece| {
            let (text, stopped) = filter.push(piece);
            content.push_str(&text);
            if stopped {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if !filter.stopped() {
            content.push_str(&filter.finish());
        }
        result.map(|out| (request.model, content, filter.stopped(), out))
    })
    .await?;
    drop(permit);
    let (model, content, stopped, out) = out?;
    Ok(Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": content },
            "logprobs": null,
            "finish_reason": finish_name(stopped, out.finish_reason),
        }],
        "usage": {
            "prompt_tokens": out.prompt_tokens,
            "completion_tokens": out.completion_tokens,
            "total_tokens": out.prompt_tokens + out.completion_tokens,
        },
        "veil": out.veil,
    }))
    .into_response())
}

fn event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// The `stream: true` answer: a thread runs the generation and queues the events; the body sends them.
fn stream(
    backend: Arc<dyn ChatBackend>,
    request: ChatRequest,
    id: String,
    created: u64,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Response {
    // Unbounded, as a backend may call `on_text` from inside its own runtime (where a blocking send would
    // panic); bounded all the same: at most `max_tokens` text events plus five (role, held-back text,
    // finish, usage or error, [DONE]).
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let model = request.model.clone();
    let chunk = move |delta: Value, finish: Option<FinishReason>, extra: Option<(&str, Value)>| {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        });
        if let (Some((key, value)), Some(map)) = (extra, c.as_object_mut()) {
            map.insert(key.to_string(), value);
        }
        c
    };
    let spawned = std::thread::Builder::new()
        .name("veil-gateway-chat".into())
        .spawn(move || {
            // Held until the generation ends, whether or not the client still reads.
            let _permit = permit;
            let send = |bytes: Bytes| tx.send(bytes).is_ok();
            if !send(event(&chunk(
                json!({"role": "assistant", "content": ""}),
                None,
                None,
            ))) {
                return;
            }
            let mut filter = StopFilter::new(request.stop.clone());
            let result = backend.complete(&request.model, &request.params, &mut |piece| {
                let (text, stopped) = filter.push(piece);
                let open =
                    text.is_empty() || send(event(&chunk(json!({ "content": text }), None, None)));
                if stopped || !open {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            match result {
                Ok(out) => {
                    if !filter.stopped() {
                        let rest = filter.finish();
                        if !rest.is_empty()
                            && !send(event(&chunk(json!({ "content": rest }), None, None)))
                        {
                            return;
                        }
                    }
                    let last = chunk(
                        json!({}),
                        Some(finish_name(filter.stopped(), out.finish_reason)),
                        Some((
                            "veil",
                            serde_json::to_value(&out.veil).unwrap_or(Value::Null),
                        )),
                    );
                    if !send(event(&last)) {
                        return;
                    }
                    if request.include_usage {
                        let mut usage = chunk(
                            json!({}),
                            None,
                            Some((
                                "usage",
                                json!({
                                    "prompt_tokens": out.prompt_tokens,
                                    "completion_tokens": out.completion_tokens,
                                    "total_tokens": out.prompt_tokens + out.completion_tokens,
                                }),
                            )),
                        );
                        if let Some(map) = usage.as_object_mut() {
                            map.insert("choices".into(), json!([]));
                        }
                        if !send(event(&usage)) {
                            return;
                        }
                    }
                }
                Err(e) => {
                    if !send(event(&ApiError::from(e).body())) {
                        return;
                    }
                }
            }
            let _ = send(Bytes::from_static(b"data: [DONE]\n\n"));
        });
    if let Err(e) = spawned {
        return ApiError::internal(format!("starting a chat thread: {e}")).into_response();
    }
    let mut response = Body::new(ChannelBody::new(rx)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::StopFilter;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut f = StopFilter::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let (text, stopped) = f.push(p);
            out.push_str(&text);
            if stopped {
                return (out, true);
            }
        }
        out.push_str(&f.finish());
        (out, false)
    }

    #[test]
    fn a_stop_sequence_split_across_pieces_is_cut() {
        assert_eq!(
            run(&["\n\n"], &["Paris", " is\n", "\nthe capital"]),
            ("Paris is".to_string(), true)
        );
        assert_eq!(
            run(&["END"], &["abcE", "N", "Dxyz"]),
            ("abc".to_string(), true)
        );
    }

    #[test]
    fn text_without_a_stop_sequence_is_released_whole() {
        assert_eq!(
            run(&["###"], &["Paris is ", "the ", "capital#", "#"]),
            ("Paris is the capital##".to_string(), false)
        );
        assert_eq!(run(&[], &["a", "é", "b"]), ("aéb".to_string(), false));
        assert_eq!(run(&["ü"], &["aé", "bü"]), ("aéb".to_string(), true));
    }
}
