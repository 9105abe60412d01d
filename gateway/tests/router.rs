//! The gateway's HTTP schema over real sockets, in process, on a backend double (the network backend is
//! tested end to end by `tests/gateway_openai.rs`): auth, OpenAI's error object and status codes, the
//! edge cases of `input` and `inputs`, unknown fields ignored, base64 vectors, size and concurrency
//! limits, and the chat route's answer, event stream and stop sequences.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use veil_gateway::{
    ApiKeys, Backend, BackendError, ChatBackend, ChatOutput, ChatParams, EmbedOutput, FinishReason,
    Gateway, Limits, ModelEntry, ModelKind, PredictOutput, Prediction, VeilInfo,
};

const KEY: &str = "test-key-0123456789abcdef";

fn veil() -> VeilInfo {
    VeilInfo {
        protocol: "double".into(),
        model_id: "ab".repeat(32),
        jobs: Vec::new(),
        verified: false,
        seconds: 0.0,
        bytes: 0,
    }
}

fn entry(id: &str, kind: ModelKind) -> ModelEntry {
    ModelEntry {
        id: id.into(),
        kind,
        created: 1,
        owned_by: "owner".into(),
        protocol: "double".into(),
    }
}

/// Embeds a text as [bytes, words, 1]; more than 8 words is too many tokens. `gate`, when set, says
/// when a call entered and holds it until a message arrives (for the concurrency limit).
#[derive(Default)]
struct Double {
    gate: Option<Gate>,
}

struct Gate {
    entered: Mutex<std::sync::mpsc::Sender<()>>,
    release: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Backend for Double {
    fn models(&self) -> Vec<ModelEntry> {
        vec![
            entry("encoder", ModelKind::Embedding),
            entry("classifier", ModelKind::Classifier),
            entry("coordinator-down", ModelKind::Embedding),
            entry("job-fails", ModelKind::Embedding),
        ]
    }

    fn embed(&self, model: &str, texts: &[String]) -> Result<EmbedOutput, BackendError> {
        match model {
            "coordinator-down" => {
                return Err(BackendError::Unreachable("connection refused".into()))
            }
            "job-fails" => return Err(BackendError::JobFailed("job 7 failed".into())),
            _ => assert_eq!(model, "encoder"),
        }
        if let Some(gate) = &self.gate {
            let _ = gate.entered.lock().unwrap().send(());
            let _ = gate.release.lock().unwrap().recv();
        }
        let mut tokens = 0;
        let mut embeddings = Vec::new();
        for (index, t) in texts.iter().enumerate() {
            let words = t.split_whitespace().count();
            if words > 8 {
                return Err(BackendError::TooManyTokens { index, max: 10 });
            }
            tokens += words + 2;
            embeddings.push(vec![t.len() as f32, words as f32, 1.0]);
        }
        Ok(EmbedOutput {
            embeddings,
            prompt_tokens: tokens,
            veil: veil(),
        })
    }

    fn predict(&self, model: &str, rows: &[Vec<f32>]) -> Result<PredictOutput, BackendError> {
        assert_eq!(model, "classifier");
        Ok(PredictOutput {
            predictions: rows
                .iter()
                .enumerate()
                .map(|(index, r)| Prediction {
                    index,
                    scores: vec![r.iter().sum(), 0.0],
                    class: Some(0),
                    label: Some("sum".into()),
                })
                .collect(),
            veil: veil(),
        })
    }
}

/// Answers "Paris is the capital of France." in pieces; stops when told.
struct ChatDouble;

impl ChatBackend for ChatDouble {
    fn models(&self) -> Vec<ModelEntry> {
        vec![entry("smollm2-135m-instruct", ModelKind::Chat)]
    }

    fn complete(
        &self,
        _model: &str,
        params: &ChatParams,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<ChatOutput, BackendError> {
        let pieces = ["Paris", " is", " the", " capital", " of", " France", "."];
        let mut generated = 0;
        // As the SDK does: the pieces come from inside a runtime of the backend's own.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            for p in pieces.iter().take(params.max_tokens as usize) {
                generated += 1;
                if on_text(p).is_break() {
                    break;
                }
            }
        });
        Ok(ChatOutput {
            prompt_tokens: params.messages.len() * 5,
            completion_tokens: generated,
            finish_reason: if generated < pieces.len() {
                FinishReason::Length
            } else {
                FinishReason::Stop
            },
            veil: veil(),
        })
    }
}

struct Server {
    address: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

fn start(backend: Double, chat: bool, limits: Limits) -> Server {
    let keys = ApiKeys::parse(&format!("{KEY}\n")).unwrap();
    let chat: Option<Arc<dyn ChatBackend>> = chat.then(|| Arc::new(ChatDouble) as _);
    let gateway = Gateway::new(Arc::new(backend), chat, keys, limits);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = listener.local_addr().unwrap();
    runtime.spawn(veil_gateway::serve(
        listener,
        veil_gateway::router(gateway),
        std::future::pending(),
    ));
    Server {
        address,
        _runtime: runtime,
    }
}

fn server() -> Server {
    start(Double::default(), false, Limits::default())
}

/// Decodes a chunked body.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[end + 2 + size + 2..];
    }
}

/// One request; (status, body).
fn call(
    server: &Server,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let mut stream = TcpStream::connect(server.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, String::from_utf8(body).unwrap())
}

fn post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    let (status, text) = call(server, "POST", path, Some(KEY), body.to_string().as_bytes());
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Asserts OpenAI's error object and returns it.
fn error_of(status: u16, body: &Value, expected: u16) -> Value {
    assert_eq!(status, expected, "{body}");
    let error = body["error"].clone();
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    assert!(
        error.get("param").is_some() && error.get("code").is_some(),
        "{body}"
    );
    error
}

#[test]
fn a_missing_or_wrong_key_is_401_on_every_route() {
    let s = server();
    for (method, path) in [
        ("GET", "/v1/models"),
        ("POST", "/v1/embeddings"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/veil/predict"),
    ] {
        let body = json!({"model": "encoder", "input": "a"}).to_string();
        for key in [None, Some("wrong-key-0123456789abcdef"), Some("")] {
            let (status, text) = call(&s, method, path, key, body.as_bytes());
            let v: Value = serde_json::from_str(&text).unwrap();
            let e = error_of(status, &v, 401);
            assert_eq!(e["type"], "authentication_error");
        }
    }
    let (status, text) = call(&s, "GET", "/v1/models", Some(KEY), b"");
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["encoder", "classifier", "coordinator-down", "job-fails"]
    );
    assert_eq!(v["data"][0]["object"], "model");
    assert_eq!(v["data"][0]["veil"]["kind"], "embedding");
}

#[test]
fn embeddings_take_a_string_or_an_array_and_ignore_unknown_fields() {
    let s = server();
    let (status, v) = post(
        &s,
        "/v1/embeddings",
        json!({"model": "encoder", "input": "one two"}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "encoder");
    assert_eq!(v["data"][0]["object"], "embedding");
    assert_eq!(v["data"][0]["index"], 0);
    assert_eq!(v["data"][0]["embedding"], json!([7.0, 2.0, 1.0]));
    assert_eq!(v["usage"]["prompt_tokens"], 4);
    assert_eq!(v["usage"]["total_tokens"], 4);
    assert_eq!(v["veil"]["protocol"], "double");

    let (status, v) = post(
        &s,
        "/v1/embeddings",
        json!({
            "model": "encoder",
            "input": ["a", "b c d"],
            "user": "someone",
            "encoding_format": "float",
            "an_unknown_field": {"nested": [1, 2, 3]},
        }),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][1]["embedding"], json!([5.0, 3.0, 1.0]));
    assert_eq!(v["usage"]["prompt_tokens"], 3 + 5);
}

#[test]
fn base64_vectors_are_little_endian_f32() {
    let s = server();
    let (status, v) = post(
        &s,
        "/v1/embeddings",
        json!({"model": "encoder", "input": "one two", "encoding_format": "base64"}),
    );
    assert_eq!(status, 200, "{v}");
    // [7.0, 2.0, 1.0] as little-endian f32: 00 00 e0 40 | 00 00 00 40 | 00 00 80 3f.
    assert_eq!(v["data"][0]["embedding"], "AADgQAAAAEAAAIA/");
    let (status, v) = post(
        &s,
        "/v1/embeddings",
        json!({"model": "encoder", "input": "x", "encoding_format": "int8"}),
    );
    assert_eq!(error_of(status, &v, 400)["param"], "encoding_format");
}

#[test]
fn malformed_empty_and_oversized_inputs_are_400() {
    let s = start(
        Double::default(),
        false,
        Limits {
            max_inputs: 16,
            ..Limits::default()
        },
    );
    let huge: Vec<String> = (0..17).map(|i| format!("text {i}")).collect();
    for body in [
        json!({"model": "encoder", "input": []}),
        json!({"model": "encoder", "input": huge}),
        json!({"model": "encoder", "input": ""}),
        json!({"model": "encoder", "input": ["a", ""]}),
        json!({"model": "encoder", "input": 42}),
        json!({"model": "encoder", "input": [1, 2, 3]}),
        json!({"model": "encoder", "input": [[1, 2], [3]]}),
        json!({"model": "encoder", "input": ["a", null]}),
        json!({"model": "encoder", "input": {"text": "a"}}),
        json!({"model": "encoder"}),
        json!({"model": "encoder", "input": "a", "dimensions": "many"}),
    ] {
        let (status, v) = post(&s, "/v1/embeddings", body.clone());
        let e = error_of(status, &v, 400);
        assert_eq!(e["type"], "invalid_request_error", "{body}");
    }
    for body in [json!({"input": "a"}), json!({"model": 7, "input": "a"})] {
        let (status, v) = post(&s, "/v1/embeddings", body);
        assert_eq!(error_of(status, &v, 400)["param"], "model");
    }
    for raw in [&b"{not json"[..], b"[1, 2]", b"\"text\"", b""] {
        let (status, text) = call(&s, "POST", "/v1/embeddings", Some(KEY), raw);
        error_of(status, &serde_json::from_str(&text).unwrap(), 400);
    }
    // Too many tokens: the backend's limit, as OpenAI's context_length_exceeded.
    let (status, v) = post(
        &s,
        "/v1/embeddings",
        json!({"model": "encoder", "input": ["short", "one two three four five six seven eight nine"]}),
    );
    let e = error_of(status, &v, 400);
    assert_eq!(e["code"], "context_length_exceeded");
    assert_eq!(e["param"], "input");
    // A dimension count the model does not give.
    let (status, v) = post(
        &s,
        "/v1/embeddings",
        json!({"model": "encoder", "input": "a", "dimensions": 2}),
    );
    assert_eq!(error_of(status, &v, 400)["param"], "dimensions");
}

#[test]
fn unknown_models_and_routes_are_404_and_kinds_are_checked() {
    let s = server();
    let (status, v) = post(
        &s,
        "/v1/embeddings",
        json!({"model": "text-embedding-3-small", "input": "a"}),
    );
    let e = error_of(status, &v, 404);
    assert_eq!(e["code"], "model_not_found");
    assert_eq!(e["param"], "model");
    let (status, v) = post(
        &s,
        "/v1/veil/predict",
        json!({"model": "nope", "inputs": [[1.0]]}),
    );
    error_of(status, &v, 404);
    let (status, text) = call(&s, "GET", "/v1/models/nope", Some(KEY), b"");
    error_of(status, &serde_json::from_str(&text).unwrap(), 404);
    let (status, text) = call(&s, "GET", "/v1/models/encoder", Some(KEY), b"");
    assert_eq!(status, 200, "{text}");
    let (status, text) = call(&s, "POST", "/v1/completions", Some(KEY), b"{}");
    error_of(status, &serde_json::from_str(&text).unwrap(), 404);
    // An encoder on the classifiers' route and the reverse.
    let (status, v) = post(
        &s,
        "/v1/veil/predict",
        json!({"model": "encoder", "inputs": [[1.0]]}),
    );
    assert_eq!(error_of(status, &v, 400)["code"], "wrong_model_kind");
    let (status, v) = post(
        &s,
        "/v1/embeddings",
        json!({"model": "classifier", "input": "a"}),
    );
    assert_eq!(error_of(status, &v, 400)["code"], "wrong_model_kind");
}

#[test]
fn predict_takes_rows_of_numbers() {
    let s = server();
    let (status, v) = post(
        &s,
        "/v1/veil/predict",
        json!({"model": "classifier", "inputs": [[1.0, 2.0], [3, 4.5]], "extra": true}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][1]["object"], "prediction");
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][1]["scores"], json!([7.5, 0.0]));
    assert_eq!(v["data"][1]["label"], "sum");
    assert!(v["veil"].is_object());
    for body in [
        json!({"model": "classifier", "inputs": []}),
        json!({"model": "classifier", "inputs": [[]]}),
        json!({"model": "classifier", "inputs": [["1"]]}),
        json!({"model": "classifier", "inputs": [1, 2]}),
        json!({"model": "classifier", "inputs": [[1e39]]}),
        json!({"model": "classifier"}),
    ] {
        let (status, v) = post(&s, "/v1/veil/predict", body);
        assert_eq!(error_of(status, &v, 400)["param"], "inputs");
    }
}

#[test]
fn bodies_over_the_limit_are_413_and_busy_slots_429() {
    let s = start(
        Double::default(),
        false,
        Limits {
            max_body_bytes: 4096,
            ..Limits::default()
        },
    );
    let big = "x".repeat(8192);
    let (status, v) = post(
        &s,
        "/v1/embeddings",
        json!({"model": "encoder", "input": big}),
    );
    error_of(status, &v, 413);

    let (release, released) = std::sync::mpsc::channel();
    let (entering, entered) = std::sync::mpsc::channel();
    let s = Arc::new(start(
        Double {
            gate: Some(Gate {
                entered: Mutex::new(entering),
                release: Mutex::new(released),
            }),
        },
        false,
        Limits {
            max_concurrent: 1,
            ..Limits::default()
        },
    ));
    let first = {
        let s = s.clone();
        std::thread::spawn(move || {
            post(
                &s,
                "/v1/embeddings",
                json!({"model": "encoder", "input": "a"}),
            )
        })
    };
    // The first request holds the only slot (it is inside the backend); a second one is refused.
    entered
        .recv_timeout(Duration::from_secs(30))
        .expect("the first request reaches the backend");
    let (status, v) = post(
        &s,
        "/v1/embeddings",
        json!({"model": "encoder", "input": "b"}),
    );
    assert_eq!(error_of(status, &v, 429)["type"], "rate_limit_error");
    release.send(()).unwrap();
    let (status, v) = first.join().unwrap();
    assert_eq!(status, 200, "{v}");
}

#[test]
fn chat_models_without_a_chat_backend_answer_a_clear_404() {
    let s = server();
    let (status, v) = post(
        &s,
        "/v1/chat/completions",
        json!({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}]}),
    );
    let e = error_of(status, &v, 404);
    assert_eq!(e["code"], "model_not_available");
    assert!(e["message"].as_str().unwrap().contains("not served"), "{e}");
    let (status, v) = post(
        &s,
        "/v1/chat/completions",
        json!({"model": "encoder", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(error_of(status, &v, 400)["code"], "wrong_model_kind");
}

fn chat_server() -> Server {
    start(Double::default(), true, Limits::default())
}

#[test]
fn chat_completions_answer_with_usage_and_finish_reason() {
    let s = chat_server();
    let question = json!([
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]},
    ]);
    let (status, v) = post(
        &s,
        "/v1/chat/completions",
        json!({"model": "smollm2-135m-instruct", "messages": question, "temperature": 0, "seed": 7, "logit_bias": {}}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Paris is the capital of France."
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 10);
    assert_eq!(v["usage"]["completion_tokens"], 7);
    assert_eq!(v["usage"]["total_tokens"], 17);
    assert!(v["veil"].is_object());

    let (status, v) = post(
        &s,
        "/v1/chat/completions",
        json!({"model": "smollm2-135m-instruct", "messages": question, "max_completion_tokens": 2}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "Paris is");
    assert_eq!(v["choices"][0]["finish_reason"], "length");

    let (status, v) = post(
        &s,
        "/v1/chat/completions",
        json!({"model": "smollm2-135m-instruct", "messages": question, "stop": [" capital", "zzz"]}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "Paris is the");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    for (body, param) in [
        (
            json!({"model": "smollm2-135m-instruct", "messages": []}),
            "messages",
        ),
        (
            json!({"model": "smollm2-135m-instruct", "messages": "hi"}),
            "messages",
        ),
        (
            json!({"model": "smollm2-135m-instruct", "messages": [{"role": "tool", "content": "x"}]}),
            "messages",
        ),
        (
            json!({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": 3}]}),
            "messages",
        ),
        (
            json!({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}),
            "max_tokens",
        ),
        (
            json!({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "x"}], "temperature": 3}),
            "temperature",
        ),
        (
            json!({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]}),
            "stop",
        ),
        (
            json!({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "x"}], "n": 2}),
            "n",
        ),
        (
            json!({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}),
            "stream",
        ),
    ] {
        let (status, v) = post(&s, "/v1/chat/completions", body);
        assert_eq!(error_of(status, &v, 400)["param"], param);
    }
}

#[test]
fn streamed_chat_is_chunks_ending_in_done() {
    let s = chat_server();
    let body = json!({
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let (status, text) = call(
        &s,
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        body.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").expect("data events"))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Paris is the capital of France.");
    let finished: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["choices"][0]["finish_reason"], "stop");
    assert!(finished[0]["veil"].is_object());
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 7);
}

#[test]
fn an_unreachable_coordinator_is_503_and_a_failed_job_502() {
    let s = server();
    let (status, v) = post(
        &s,
        "/v1/embeddings",
        json!({"model": "coordinator-down", "input": "a"}),
    );
    let e = error_of(status, &v, 503);
    assert_eq!(e["code"], "coordinator_unreachable");
    let (status, v) = post(
        &s,
        "/v1/embeddings",
        json!({"model": "job-fails", "input": "a"}),
    );
    assert_eq!(error_of(status, &v, 502)["code"], "job_failed");
}

/// Property tests of every JSON body the gateway accepts (issue 21, fuzzing): arbitrary JSON values in
/// each field, and byte-level mutations of valid bodies, answer a 2xx or a 4xx carrying OpenAI's error
/// object; never a 5xx, a dropped connection, or a backend call with a model the route does not serve
/// (the doubles assert their model names, so such a call would panic the handler and drop the connection).
mod fuzz {
    use std::sync::OnceLock;

    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::{call, start, Double, Limits, Server, KEY};

    /// Cases per property: short enough for CI.
    const CASES: u32 = 128;

    /// One server for every case (embeddings, prediction and chat).
    fn shared() -> &'static Server {
        static SERVER: OnceLock<Server> = OnceLock::new();
        SERVER.get_or_init(|| start(Double::default(), true, Limits::default()))
    }

    /// Any JSON value, nested a few levels, with the numbers and strings that break parsers.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            Just(json!(1e308)),
            Just(json!(-0.0)),
            Just(json!(u64::MAX)),
            "\\PC{0,24}".prop_map(Value::String),
            (1usize..20_000).prop_map(|n| Value::String("w ".repeat(n))),
        ];
        leaf.prop_recursive(3, 48, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z_]{1,10}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A served model name, or anything else.
    fn model() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!("encoder")),
            Just(json!("classifier")),
            Just(json!("smollm2-135m-instruct")),
            value(),
        ]
    }

    /// Posts `body` and checks the property; returns the status.
    fn post_checked(path: &str, body: &[u8]) -> Result<u16, TestCaseError> {
        let (status, text) = call(shared(), "POST", path, Some(KEY), body);
        prop_assert!(
            (200..300).contains(&status) || (400..500).contains(&status),
            "{path} answered {status}: {text}"
        );
        if status >= 400 {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            prop_assert!(
                v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{status}: {text}"
            );
            prop_assert!(v["error"]["type"].is_string(), "{status}: {text}");
        }
        Ok(status)
    }

    /// Byte-level mutations of a valid body: flips, truncation, insertion.
    fn mutate(valid: &[u8], flips: &[(usize, u8)], cut: Option<usize>, insert: &[u8]) -> Vec<u8> {
        let mut b = valid.to_vec();
        for (at, x) in flips {
            let i = at % b.len();
            b[i] ^= x;
        }
        if let Some(c) = cut {
            b.truncate(c % (b.len() + 1));
        }
        let at = insert.len() % (b.len() + 1);
        b.splice(at..at, insert.iter().copied());
        b
    }

    const VALID: [(&str, &str); 3] = [
        (
            "/v1/embeddings",
            r#"{"model":"encoder","input":["a b","c"],"encoding_format":"base64"}"#,
        ),
        (
            "/v1/veil/predict",
            r#"{"model":"classifier","inputs":[[1.0,2.0],[3,4.5]]}"#,
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"smollm2-135m-instruct","messages":[{"role":"user","content":"hi"}],"max_tokens":3,"stop":["."],"stream":false}"#,
        ),
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: CASES, .. ProptestConfig::default() })]

        #[test]
        fn embeddings_bodies_with_arbitrary_fields_are_2xx_or_4xx(
            model in model(),
            input in value(),
            encoding_format in prop_oneof![Just(json!("float")), Just(json!("base64")), value()],
            dimensions in value(),
            extra in value(),
        ) {
            let body = json!({"model": model, "input": input, "encoding_format": encoding_format,
                              "dimensions": dimensions, "user": extra});
            post_checked("/v1/embeddings", body.to_string().as_bytes())?;
        }

        #[test]
        fn predict_bodies_with_arbitrary_fields_are_2xx_or_4xx(model in model(), inputs in value()) {
            let body = json!({"model": model, "inputs": inputs});
            post_checked("/v1/veil/predict", body.to_string().as_bytes())?;
        }

        #[test]
        fn chat_bodies_with_arbitrary_fields_are_2xx_or_4xx(
            model in model(),
            messages in prop_oneof![
                value(),
                proptest::collection::vec((value(), value()), 0..4).prop_map(|m| json!(m
                    .into_iter()
                    .map(|(role, content)| json!({"role": role, "content": content}))
                    .collect::<Vec<_>>())),
            ],
            max_tokens in value(),
            stop in value(),
            stream in prop_oneof![any::<bool>().prop_map(Value::Bool), value()],
            temperature in value(),
        ) {
            let body = json!({"model": model, "messages": messages, "max_tokens": max_tokens,
                              "stop": stop, "stream": stream, "temperature": temperature});
            post_checked("/v1/chat/completions", body.to_string().as_bytes())?;
        }

        #[test]
        fn mutated_valid_bodies_are_2xx_or_4xx(
            route in 0usize..3,
            flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 0..4),
            cut in proptest::option::of(any::<usize>()),
            insert in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let (path, valid) = VALID[route];
            let body = mutate(valid.as_bytes(), &flips, cut, &insert);
            post_checked(path, &body)?;
        }
    }

    /// The valid samples themselves are accepted (the 2xx branch of the properties is reachable).
    #[test]
    fn the_valid_samples_answer_200() {
        for (path, body) in VALID {
            let (status, text) = call(shared(), "POST", path, Some(KEY), body.as_bytes());
            assert_eq!(status, 200, "{path}: {text}");
        }
    }
}
