//! `/v1/models`: deployments of models' public parts (caller: the owner), their list and their split into
//! stages (anyone).

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use veil_node::api::{self, DeployRequest, ModelView, StagesView};

use super::{now_ms, with_state, Caller, HttpResult, Shared};

/// The routes of models.
pub(super) fn router() -> Router<Shared> {
    Router::new()
        .route(api::MODELS, get(list_models).post(deploy))
        .route("/v1/models/{id}/stages", get(model_stages))
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
    with_state(&s, move |c| c.deploy(&key, req, now_ms()))
        .await
        .map(Json)
}

async fn model_stages(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> HttpResult<Json<StagesView>> {
    with_state(&s, move |c| c.model_stages(&id)).await.map(Json)
}
