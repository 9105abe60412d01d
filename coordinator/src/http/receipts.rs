//! `/v1/receipts` and `/v1/jobs/{id}/receipt`: the audit log of verifiers' receipts (anyone).

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use veil_node::api::{self, ReceiptEntry};

use super::{with_state, HttpResult, Shared};

/// The routes of receipts.
pub(super) fn router() -> Router<Shared> {
    Router::new()
        .route(api::RECEIPTS, get(list_receipts))
        .route("/v1/jobs/{id}/receipt", get(job_receipt))
}

async fn list_receipts(State(s): State<Shared>) -> HttpResult<Json<Vec<ReceiptEntry>>> {
    with_state(&s, |c| Ok(c.receipts())).await.map(Json)
}

async fn job_receipt(
    State(s): State<Shared>,
    Path(id): Path<u64>,
) -> HttpResult<Json<ReceiptEntry>> {
    with_state(&s, move |c| c.receipt(id)).await.map(Json)
}
