//! `GET /v1/models`, `POST /v1/embeddings`, `POST /v1/veil/predict`, and what every route shares: the key
//! check, the concurrency permit, the body's parsing, and running a backend call off the async threads.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use tokio::sync::OwnedSemaphorePermit;

use crate::backend::{ModelEntry, ModelKind};
use crate::error::ApiError;
use crate::Gateway;

/// The request's JSON object.
pub(crate) type Object = Map<String, Value>;

/// 401 unless the request carries an accepted bearer key.
pub(crate) fn authorize(gateway: &Gateway, headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if gateway.keys.accepts(value) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

/// A slot of the concurrency limit, or 429.
pub(crate) fn acquire(gateway: &Gateway) -> Result<OwnedSemaphorePermit, ApiError> {
    gateway
        .permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::busy(gateway.limits.max_concurrent))
}

/// The body as a JSON object: 413 over the size limit, 400 if it is not one.
pub(crate) fn json_object(
    gateway: &Gateway,
    body: Result<Bytes, BytesRejection>,
) -> Result<Object, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(gateway.limits.max_body_bytes)
        } else {
            ApiError::bad_request(format!("unreadable request body: {rejection}"))
        }
    })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// The `model` field: a non-empty string.
pub(crate) fn model_field(request: &Object) -> Result<String, ApiError> {
    match request.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Ok(m.clone()),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(ApiError::bad_request("you must provide a model parameter").param("model"))
        }
        Some(_) => Err(ApiError::bad_request("`model` must be a string").param("model")),
    }
}

/// Runs `work` on a thread of its own (the SDK's calls block) and awaits its answer.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("veil-gateway-job".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| ApiError::internal(format!("starting a job thread: {e}")))?;
    rx.await
        .map_err(|_| ApiError::internal("the job thread ended without an answer"))
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn model_json(m: &ModelEntry) -> Value {
    json!({
        "id": m.id,
        "object": "model",
        "created": m.created,
        "owned_by": m.owned_by,
        "veil": { "kind": m.kind, "protocol": m.protocol },
    })
}

/// `GET /v1/models`.
pub(crate) async fn list_models(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authorize(&gateway, &headers) {
        return e.into_response();
    }
    let data: Vec<Value> = gateway.models().iter().map(model_json).collect();
    Json(json!({ "object": "list", "data": data })).into_response()
}

/// `GET /v1/models/{id}`.
pub(crate) async fn get_model(
    State(gateway): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authorize(&gateway, &headers) {
        return e.into_response();
    }
    match gateway.models().iter().find(|m| m.id == id) {
        Some(m) => Json(model_json(m)).into_response(),
        None => ApiError::model_not_found(&id).into_response(),
    }
}

/// Any other path.
pub(crate) async fn fallback() -> Response {
    ApiError::no_route().into_response()
}

/// How `/v1/embeddings` returns vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Float,
    Base64,
}

/// The texts of an embeddings request: `input` as a string or an array of strings, within the limits.
fn embedding_inputs(request: &Object, max_inputs: usize) -> Result<Vec<String>, ApiError> {
    let bad = |m: String| ApiError::bad_request(m).param("input");
    let texts = match request.get("input") {
        None | Some(Value::Null) => return Err(bad("you must provide an input".into())),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(bad("`input` must not be an empty array".into()));
            }
            if items.len() > max_inputs {
                return Err(bad(format!(
                    "`input` has {} items: at most {max_inputs} per request",
                    items.len()
                )));
            }
            let mut texts = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => texts.push(s.clone()),
                    Value::Number(_) | Value::Array(_) => {
                        return Err(bad(format!(
                            "input[{i}]: token arrays are not accepted: send text (veil tokenises with the model's own tokenizer)"
                        )))
                    }
                    _ => return Err(bad(format!("input[{i}] must be a string"))),
                }
            }
            texts
        }
        Some(_) => return Err(bad("`input` must be a string or an array of strings".into())),
    };
    if let Some(i) = texts.iter().position(|t| t.is_empty()) {
        return Err(bad(format!("input[{i}] is an empty string")));
    }
    Ok(texts)
}

fn encoding_format(request: &Object) -> Result<Encoding, ApiError> {
    match request.get("encoding_format") {
        None | Some(Value::Null) => Ok(Encoding::Float),
        Some(Value::String(s)) if s == "float" => Ok(Encoding::Float),
        Some(Value::String(s)) if s == "base64" => Ok(Encoding::Base64),
        Some(_) => Err(
            ApiError::bad_request("`encoding_format` must be \"float\" or \"base64\"")
                .param("encoding_format"),
        ),
    }
}

fn dimensions(request: &Object) -> Result<Option<usize>, ApiError> {
    match request.get("dimensions") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64().and_then(|d| usize::try_from(d).ok()) {
            Some(d) if d > 0 => Ok(Some(d)),
            _ => Err(
                ApiError::bad_request("`dimensions` must be a positive integer")
                    .param("dimensions"),
            ),
        },
        Some(_) => {
            Err(ApiError::bad_request("`dimensions` must be an integer").param("dimensions"))
        }
    }
}

/// Standard base64 (RFC 4648, padded) of `bytes`.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * k)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The vector as OpenAI's `base64` encoding has it: little-endian f32s, base64.
fn embedding_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64(&bytes)
}

/// Resolves `model` for a route of `kind`: 404 if unknown, 400 if of another kind.
fn check_model(gateway: &Gateway, model: &str, kind: ModelKind) -> Result<(), ApiError> {
    match gateway.models().iter().find(|m| m.id == model) {
        Some(m) if m.kind == kind => Ok(()),
        Some(m) => Err(crate::BackendError::WrongKind {
            model: model.to_string(),
            kind: m.kind,
        }
        .into()),
        None => Err(ApiError::model_not_found(model)),
    }
}

/// `POST /v1/embeddings`.
pub(crate) async fn embeddings(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match embeddings_inner(gateway, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn embeddings_inner(
    gateway: Arc<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorize(&gateway, &headers)?;
    let request = json_object(&gateway, body)?;
    let model = model_field(&request)?;
    let texts = embedding_inputs(&request, gateway.limits.max_inputs)?;
    let encoding = encoding_format(&request)?;
    let dimensions = dimensions(&request)?;
    check_model(&gateway, &model, ModelKind::Embedding)?;
    let _permit = acquire(&gateway)?;
    let backend = gateway.backend.clone();
    let name = model.clone();
    let out = blocking(move || backend.embed(&name, &texts)).await??;
    if let Some(d) = dimensions {
        let native = out.embeddings.first().map_or(0, Vec::len);
        if d != native {
            return Err(ApiError::bad_request(format!(
                "`dimensions` {d}: {model} gives {native} dimensions and cannot shorten them"
            ))
            .param("dimensions"));
        }
    }
    let data: Vec<Value> = out
        .embeddings
        .iter()
        .enumerate()
        .map(|(index, e)| {
            let embedding = match encoding {
                Encoding::Float => json!(e),
                Encoding::Base64 => json!(embedding_base64(e)),
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": out.prompt_tokens, "total_tokens": out.prompt_tokens },
        "veil": out.veil,
    }))
    .into_response())
}

/// The rows of a predict request: a non-empty array (at most `max_rows`) of non-empty arrays of finite
/// numbers.
fn predict_rows(request: &Object, max_rows: usize) -> Result<Vec<Vec<f32>>, ApiError> {
    let bad = |m: String| ApiError::bad_request(m).param("inputs");
    let Some(Value::Array(rows)) = request.get("inputs") else {
        return Err(bad(
            "`inputs` must be an array of rows (arrays of numbers)".into()
        ));
    };
    if rows.is_empty() {
        return Err(bad("`inputs` must not be empty".into()));
    }
    if rows.len() > max_rows {
        return Err(bad(format!(
            "`inputs` has {} rows: at most {max_rows} per request",
            rows.len()
        )));
    }
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let Value::Array(values) = row else {
            return Err(bad(format!("inputs[{i}] must be an array of numbers")));
        };
        if values.is_empty() {
            return Err(bad(format!("inputs[{i}] is empty")));
        }
        let mut r = Vec::with_capacity(values.len());
        for v in values {
            match v.as_f64() {
                Some(x) if x.is_finite() && (x as f32).is_finite() => r.push(x as f32),
                _ => {
                    return Err(bad(format!(
                        "inputs[{i}] holds a value that is not a finite number"
                    )))
                }
            }
        }
        out.push(r);
    }
    Ok(out)
}

/// `POST /v1/veil/predict`.
pub(crate) async fn predict(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match predict_inner(gateway, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn predict_inner(
    gateway: Arc<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorize(&gateway, &headers)?;
    let request = json_object(&gateway, body)?;
    let model = model_field(&request)?;
    let rows = predict_rows(&request, gateway.limits.max_rows)?;
    check_model(&gateway, &model, ModelKind::Classifier)?;
    let _permit = acquire(&gateway)?;
    let backend = gateway.backend.clone();
    let name = model.clone();
    let out = blocking(move || backend.predict(&name, &rows)).await??;
    let data: Vec<Value> = out
        .predictions
        .iter()
        .map(|p| {
            json!({
                "object": "prediction",
                "index": p.index,
                "scores": p.scores,
                "class": p.class,
                "label": p.label,
            })
        })
        .collect();
    Ok(
        Json(json!({ "object": "list", "model": model, "data": data, "veil": out.veil }))
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }
}
