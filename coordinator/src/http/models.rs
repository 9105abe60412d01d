//! `/v1/models`: deployments of models' public parts (caller: the owner), their list and their split into
//! stages (anyone); an ONNX model's file, uploaded by its owner and fetched by members and clients.
//!
//! An ONNX file is read up to [`MAX_ONNX_BYTES`] while its body arrives (a longer body is refused there,
//! never buffered whole), checked (SHA-256 against the id, import) and stored
//! ([`crate::model_files`]) outside the state lock; only then is the deployment recorded under the lock.
//!
//! The split into stages is computed from the architecture's shapes (no tensor is built), outside the state
//! lock, and cached per model: a deployed model's id names its architecture, so the split of an id only
//! changes with the configured stage memory, which is part of the cache key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::Uri;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Json, Router};
use http_body_util::BodyExt;
use veil_node::api::{self, DeployRequest, ModelView, StagesView};
use veil_node::manifest::MAX_ARCHITECTURE_BYTES;
use veil_node::onnx_model::MAX_ONNX_BYTES;

use super::{blocking, now_ms, with_state, Caller, HttpResult, Shared};
use crate::error::{Error, Result};
use crate::model_files::ModelFiles;

/// The directory of model files under the coordinator's data directory.
pub const MODEL_FILES_DIR: &str = "models";

/// Most ONNX uploads read and checked at once (each holds up to [`MAX_ONNX_BYTES`] and its import).
pub const MAX_CONCURRENT_UPLOADS: usize = 2;
/// Most model files read into memory to be served at once.
pub const MAX_CONCURRENT_DOWNLOADS: usize = 4;

/// Invariant: the memory that model files take in this process is bounded: an upload holds a permit of
/// `UPLOADS` from before its body is read until its deployment is recorded, a download one of
/// [`downloads`] from before its file is read until its reply's body is dropped ([`Permitted`]).
static UPLOADS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CONCURRENT_UPLOADS);

fn downloads() -> Arc<tokio::sync::Semaphore> {
    static DOWNLOADS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    DOWNLOADS
        .get_or_init(|| Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_DOWNLOADS)))
        .clone()
}

/// A reply body that holds a download permit until it is sent or dropped.
struct Permitted {
    body: http_body_util::Full<axum::body::Bytes>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl axum::body::HttpBody for Permitted {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<hyper::body::Frame<Self::Data>, Self::Error>>>
    {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Most splits cached; the cache is emptied when it would grow past this (deployments are few and each is
/// cheap to recompute, so a simple bound is enough).
const MAX_CACHED_SPLITS: usize = 1024;

/// Splits into stages already computed, by model id and stage memory.
/// Invariant: holds at most [`MAX_CACHED_SPLITS`] entries; an entry is what [`crate::core::stages_of`]
/// returns for its key.
#[derive(Default)]
struct StagesCache(Mutex<HashMap<(String, u64), StagesView>>);

impl StagesCache {
    fn get(&self, key: &(String, u64)) -> Option<StagesView> {
        self.0.lock().ok()?.get(key).cloned()
    }

    fn put(&self, key: (String, u64), view: StagesView) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= MAX_CACHED_SPLITS {
                map.clear();
            }
            map.insert(key, view);
        }
    }
}

/// The routes of models.
pub(super) fn router() -> Router<Shared> {
    Router::new()
        .route(
            api::MODELS,
            get(list_models)
                .post(deploy)
                .layer(DefaultBodyLimit::max(4 * MAX_ARCHITECTURE_BYTES)),
        )
        .route("/v1/models/{id}/stages", get(model_stages))
        // The body of an upload is bounded while it is read (`read_onnx`), not by the default limit.
        .route("/v1/models/{id}/onnx", get(get_onnx).put(put_onnx))
        .layer(Extension(Arc::new(StagesCache::default())))
}

async fn list_models(State(s): State<Shared>) -> HttpResult<Json<Vec<ModelView>>> {
    with_state(&s, |c| Ok(c.models())).await.map(Json)
}

async fn deploy(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<DeployRequest>,
) -> HttpResult<Json<ModelView>> {
    let key = caller.key()?;
    if req.onnx {
        return Err(Error::malformed(
            "onnx",
            "an ONNX model deploys by uploading its file: PUT /v1/models/{id}/onnx",
        )
        .into());
    }
    with_state(&s, move |c| c.deploy(&key, req, now_ms()))
        .await
        .map(Json)
}

/// The model files under the configured data directory.
async fn model_files(s: &Shared) -> HttpResult<ModelFiles> {
    with_state(s, |c| {
        Ok(ModelFiles::new(c.config().data_dir.join(MODEL_FILES_DIR)))
    })
    .await
}

/// The ONNX deployment that `PUT /v1/models/{id}/onnx?parties=N&frac_bits=F&protocol=P` asks for (each
/// parameter once; `protocol` defaults to semi2k); its file is checked apart.
pub fn onnx_deployment(id: &str, query: Option<&str>) -> Result<DeployRequest> {
    let id = veil_node::onnx_model::check_id(id).map_err(|e| Error::malformed("model id", e))?;
    let (mut parties, mut frac_bits, mut protocol) = (None, None, None);
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let twice = || Error::malformed("query", format!("{name} given twice"));
        match name {
            "parties" if parties.is_none() => {
                parties = Some(value.parse().map_err(|e| Error::malformed("parties", e))?)
            }
            "frac_bits" if frac_bits.is_none() => {
                frac_bits = Some(
                    value
                        .parse()
                        .map_err(|e| Error::malformed("frac_bits", e))?,
                )
            }
            "protocol" if protocol.is_none() => protocol = Some(value.chars().take(32).collect()),
            "parties" | "frac_bits" | "protocol" => return Err(twice()),
            _ => {
                return Err(Error::malformed(
                    "query",
                    "only parties, frac_bits and protocol are accepted",
                ))
            }
        }
    }
    Ok(DeployRequest {
        id,
        architecture: String::new(),
        weights: "public".into(),
        parties: parties.ok_or_else(|| Error::malformed("parties", "missing"))?,
        frac_bits: frac_bits.ok_or_else(|| Error::malformed("frac_bits", "missing"))?,
        protocol: protocol
            .unwrap_or_else(|| veil_protocols::protocol::Protocol::default().name().into()),
        pretrained: None,
        onnx: true,
        onnx_file: None,
    })
}

/// Reads an upload's body, refusing it as soon as more than `max` bytes arrived (nothing past that is
/// buffered).
pub async fn read_bounded(body: Body, max: usize) -> Result<Vec<u8>> {
    match http_body_util::Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Error::TooLong {
            field: "ONNX file",
            max,
        }),
        Err(e) => Err(Error::malformed("body", e)),
    }
}

/// Deploys an ONNX model from its uploaded file: the body read up to [`MAX_ONNX_BYTES`], the file checked
/// against the id and imported once ([`crate::core::check_onnx`]) and stored, all outside the state lock;
/// then the deployment, with what the coordinator keeps of the file, recorded under it.
async fn put_onnx(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    uri: Uri,
    body: Body,
) -> HttpResult<Json<ModelView>> {
    let key = caller.key()?;
    let mut req = onnx_deployment(&id, uri.query())?;
    let _permit = UPLOADS.acquire().await.map_err(Error::invariant)?;
    let bytes = read_bounded(body, MAX_ONNX_BYTES).await?;
    let files = model_files(&s).await?;
    let req = blocking(move || {
        let file = crate::core::check_onnx(&req, &bytes)?;
        files.put(&req.id, &bytes)?;
        req.onnx_file = Some(file);
        Ok(req)
    })
    .await?;
    with_state(&s, move |c| c.deploy(&key, req, now_ms()))
        .await
        .map(Json)
}

/// The file of deployed ONNX model `id` (any authenticated caller: its weights are public to the parties,
/// and members and clients check it against the id themselves), read outside the state lock.
async fn get_onnx(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> HttpResult<axum::response::Response> {
    caller.key()?;
    let files = model_files(&s).await?;
    let known = id.clone();
    with_state(&s, move |c| c.onnx_model(&known).map(|_| ())).await?;
    let permit = downloads()
        .acquire_owned()
        .await
        .map_err(Error::invariant)?;
    let bytes = blocking(move || files.get(&id)).await?;
    let body = Permitted {
        body: http_body_util::Full::new(bytes.into()),
        _permit: permit,
    };
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        Body::new(body),
    )
        .into_response())
}

async fn model_stages(
    State(s): State<Shared>,
    Extension(cache): Extension<Arc<StagesCache>>,
    Path(id): Path<String>,
) -> HttpResult<Json<StagesView>> {
    let max = with_state(&s, |c| Ok(c.config().max_stage_memory_bytes)).await?;
    let key = (id, max);
    if let Some(view) = cache.get(&key) {
        return Ok(Json(view));
    }
    let id = key.0.clone();
    // Under the lock only the lookup; the arithmetic runs outside it.
    let architecture = with_state(&s, move |c| c.model_architecture(&id)).await?;
    let id = key.0.clone();
    let view = blocking(move || crate::core::stages_of(&id, &architecture, max)).await?;
    cache.put(key, view.clone());
    Ok(Json(view))
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_node::Identity;

    fn open(dir: &std::path::Path) -> crate::Coordinator {
        let text = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            dir.display()
        );
        let config: crate::config::CoordinatorConfig = toml::from_str(&text).unwrap();
        crate::Coordinator::open(config, Identity::generate().unwrap(), now_ms()).unwrap()
    }

    #[tokio::test]
    async fn an_upload_is_refused_as_soon_as_it_passes_the_bound() {
        let err = read_bounded(Body::from(vec![1u8; 1001]), 1000)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "ONNX file is longer than 1000 bytes");
        assert_eq!(err.kind(), crate::error::ErrorKind::Invalid);
        let read = read_bounded(Body::from(vec![1u8; 1000]), 1000).await;
        assert_eq!(read.unwrap().len(), 1000);
    }

    #[tokio::test]
    async fn a_download_holds_its_permit_until_its_body_is_consumed() {
        let semaphore = Arc::new(tokio::sync::Semaphore::new(1));
        let body = Permitted {
            body: http_body_util::Full::new(vec![7u8; 10].into()),
            _permit: semaphore.clone().acquire_owned().await.unwrap(),
        };
        assert_eq!(semaphore.available_permits(), 0);
        let bytes = Body::new(body).collect().await.unwrap().to_bytes();
        assert_eq!(bytes.as_ref(), &[7u8; 10]);
        assert_eq!(semaphore.available_permits(), 1);
    }

    #[test]
    fn the_deployment_of_an_upload_comes_from_its_query() {
        let id = "AB".repeat(32);
        let req = onnx_deployment(&id, Some("parties=3&frac_bits=16&protocol=spdz2k")).unwrap();
        assert_eq!(req.id, "ab".repeat(32));
        assert_eq!((req.parties, req.frac_bits), (3, 16));
        assert_eq!(req.protocol, "spdz2k");
        assert!(req.onnx && req.onnx_file.is_none() && req.architecture.is_empty());
        let semi = onnx_deployment(&id, Some("parties=2&frac_bits=12")).unwrap();
        assert_eq!(semi.protocol, "semi2k");
        for bad in [
            "frac_bits=16",
            "parties=3",
            "parties=3&parties=4&frac_bits=16",
            "parties=3&frac_bits=16&weights=shared",
            "parties=x&frac_bits=16",
        ] {
            assert!(onnx_deployment(&id, Some(bad)).is_err(), "{bad}");
        }
        assert!(onnx_deployment("../etc", Some("parties=3&frac_bits=16")).is_err());
    }

    #[test]
    fn a_deployed_onnx_file_and_its_record_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/onnx/cnn.onnx");
        let bytes = std::fs::read(path).unwrap();
        let id = veil_node::onnx_model::model_id(&bytes);
        let mut req = onnx_deployment(&id, Some("parties=3&frac_bits=16")).unwrap();
        let file = crate::core::check_onnx(&req, &bytes).unwrap();
        let files = ModelFiles::new(dir.path().join(MODEL_FILES_DIR));
        files.put(&id, &bytes).unwrap();
        req.onnx_file = Some(file);
        let owner = Identity::generate().unwrap().public_key();
        {
            let mut c = open(dir.path());
            let view = c.deploy(&owner, req, now_ms()).unwrap();
            assert_eq!(view.deployment.onnx_file, Some(file));
        }
        // A new process on the same data directory: the record and the file are there.
        let mut c = open(dir.path());
        assert_eq!(c.onnx_model(&id).unwrap(), file);
        assert_eq!(
            ModelFiles::new(c.config().data_dir.join(MODEL_FILES_DIR))
                .get(&id)
                .unwrap(),
            bytes
        );
        // Not an ONNX model, or unknown: not found.
        assert_eq!(
            c.onnx_model(&"cd".repeat(32)).unwrap_err().kind(),
            crate::error::ErrorKind::NotFound
        );
        // A file record comes only with an ONNX deployment.
        let mut other = onnx_deployment(&"cd".repeat(32), Some("parties=3&frac_bits=16")).unwrap();
        other.onnx = false;
        other.onnx_file = Some(file);
        assert_eq!(
            c.deploy(&owner, other, now_ms()).unwrap_err().kind(),
            crate::error::ErrorKind::Invalid
        );
    }
}
