//! `/v1/models`: deployments of models' public parts (caller: the owner), their list and their split into
//! stages (anyone).
//!
//! The split into stages is computed from the architecture's shapes (no tensor is built), outside the state
//! lock, and cached per model: a deployed model's id names its architecture, so the split of an id only
//! changes with the configured stage memory, which is part of the cache key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use veil_node::api::{self, DeployRequest, ModelView, StagesView};
use veil_node::manifest::MAX_ARCHITECTURE_BYTES;

use super::{blocking, now_ms, with_state, Caller, HttpResult, Shared};

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
    let req = match req.onnx {
        // An ONNX model is imported once here, outside the state lock (the core checks only its fields).
        true => blocking(move || crate::core::check_onnx(&req).map(|()| req)).await?,
        false => req,
    };
    with_state(&s, move |c| c.deploy(&key, req, now_ms()))
        .await
        .map(Json)
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
