//! `/v1/jobs`: submission and listing, a job's status, and (callers: the submitter) cancellation, input
//! uploads per attempt, output and owner-material downloads.

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use veil_node::api::{self, JobView, NodeView, SubmitRequest};
use veil_scheduler::JobDemand;

use super::{
    blocking, now_ms, read_blob, with_state, with_uploaded_blob, Caller, HttpResult, Shared,
};
use crate::core::{demand_for, encoder_demand_for, generation_demand_for, onnx_demand_for};
use crate::error::Error;

/// The routes of jobs.
pub(super) fn router(max_blob: usize) -> Router<Shared> {
    Router::new()
        .route(api::JOBS, get(list_jobs).post(submit))
        .route("/v1/jobs/{id}", get(job_status))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/explain", get(explain))
        .route("/v1/beacon", get(beacon))
        .route(
            "/v1/jobs/{id}/attempts/{attempt}/inputs/{party}",
            put(upload_input).layer(DefaultBodyLimit::max(max_blob)),
        )
        .route("/v1/jobs/{id}/outputs/{party}", get(download_output))
        .route(
            "/v1/jobs/{id}/attempts/{attempt}/owner",
            get(download_owner),
        )
}

/// Jobs per page of `GET /v1/jobs` when the caller names no `limit`.
pub const DEFAULT_PAGE: usize = 100;
/// Largest `limit` of `GET /v1/jobs`: a page is bounded whatever the caller asks.
pub const MAX_PAGE: usize = 1000;

/// A page of the caller's jobs: `GET /v1/jobs?after=ID&limit=N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Only jobs with a larger id (0: from the first); pass the last id of a page to get the next.
    pub after: u64,
    /// Jobs at most; invariant: `1..=MAX_PAGE`.
    pub limit: usize,
}

/// Parses the query of `GET /v1/jobs` (`after` and `limit`, each at most once; nothing else).
pub fn parse_page(query: Option<&str>) -> crate::error::Result<Page> {
    let mut page = Page {
        after: 0,
        limit: DEFAULT_PAGE,
    };
    let (mut seen_after, mut seen_limit) = (false, false);
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "after" if !seen_after => {
                seen_after = true;
                page.after = value.parse().map_err(|e| Error::malformed("after", e))?;
            }
            "limit" if !seen_limit => {
                seen_limit = true;
                let limit: usize = value.parse().map_err(|e| Error::malformed("limit", e))?;
                if limit == 0 || limit > MAX_PAGE {
                    return Err(Error::malformed(
                        "limit",
                        format!("{limit} is not in 1..={MAX_PAGE}"),
                    ));
                }
                page.limit = limit;
            }
            "after" | "limit" => {
                return Err(Error::malformed("query", format!("{name} given twice")))
            }
            _ => {
                return Err(Error::malformed(
                    "query",
                    "only after and limit are accepted",
                ))
            }
        }
    }
    Ok(page)
}

/// The caller's own jobs, a page at a time, oldest first (other clients' jobs are not listed).
async fn list_jobs(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> HttpResult<Json<Vec<JobView>>> {
    let key = caller.key()?;
    let page = parse_page(uri.query())?;
    with_state(&s, move |c| Ok(c.jobs_of(&key, page.after, page.limit)))
        .await
        .map(Json)
}

async fn submit(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<SubmitRequest>,
) -> HttpResult<Json<JobView>> {
    let key = caller.key()?;
    let check = req.clone();
    let r = req.clone();
    if let Some(file) = with_state(&s, move |c| c.job_onnx(&r)).await? {
        // From the figures recorded at deploy: nothing is imported per submission.
        let demand = onnx_demand_for(&check, &file)?;
        return with_state(&s, move |c| {
            check_fits(&c.nodes(), &demand)?;
            c.submit(&key, req, demand, now_ms())
        })
        .await
        .map(Json);
    }
    let r = req.clone();
    if let Some(name) = with_state(&s, move |c| c.job_encoder(&r)).await? {
        let demand = match name == veil_node::generation::SMOLLM2 {
            true => generation_demand_for(&check, &name)?,
            false => encoder_demand_for(&check, &name)?,
        };
        return with_state(&s, move |c| {
            check_fits(&c.nodes(), &demand)?;
            c.submit(&key, req, demand, now_ms())
        })
        .await
        .map(Json);
    }
    let architecture = match req.model.is_some() {
        true => {
            let r = req.clone();
            Some(with_state(&s, move |c| c.job_architecture(&r)).await?)
        }
        false => None,
    };
    let demand = blocking(move || demand_for(&check, architecture.as_ref())).await?;
    with_state(&s, move |c| {
        check_fits(&c.nodes(), &demand)?;
        c.submit(&key, req, demand, now_ms())
    })
    .await
    .map(Json)
}

/// Refuses a job that no registered node could hold: its dealer's material or a party's share needs more
/// memory than the largest node offers (nodes down or rejected are not counted), with both numbers in the
/// error. While no node is registered the job may wait for one.
pub fn check_fits(nodes: &[NodeView], demand: &JobDemand) -> crate::error::Result<()> {
    let largest = nodes
        .iter()
        .filter(|n| n.state != "down" && n.state != "rejected")
        .map(|n| n.hardware.memory_bytes)
        .max();
    let Some(largest) = largest else {
        return Ok(());
    };
    for (role, needed) in [
        ("dealer", demand.dealer.map_or(0, |r| r.memory_bytes)),
        ("party", demand.party.memory_bytes),
    ] {
        if needed > largest {
            return Err(Error::TooMuchMemory {
                role,
                needed,
                largest,
            });
        }
    }
    Ok(())
}

/// A job's status; with a [`api::JobWait`] query a long poll ([`held_job_view`]). A query that does not
/// parse is a plain status request.
async fn job_status(
    State(s): State<Shared>,
    Path(id): Path<u64>,
    uri: Uri,
) -> HttpResult<Json<JobView>> {
    match api::JobWait::parse(uri.query()) {
        Some(wait) => held_job_view(&s, id, wait).await.map(Json),
        None => with_state(&s, move |c| c.job_view(id)).await.map(Json),
    }
}

/// Job `id`'s status as a long poll: answered at once if it is no longer what `wait` describes, else held
/// (no lock across the wait) until the job changes so that it is not ([`crate::holds`]) or the wait ends,
/// and then answered with the status of that moment.
pub(crate) async fn held_job_view(s: &Shared, id: u64, wait: api::JobWait) -> HttpResult<JobView> {
    let wait_ms = wait.wait_ms;
    let unchanged = wait.clone();
    let (view, hold) = with_state(s, move |c| {
        let view = c.job_view(id)?;
        let hold = if unchanged.unchanged(&view) {
            c.hold_job(id, wait_ms)
        } else {
            None
        };
        Ok((view, hold))
    })
    .await?;
    let Some(mut hold) = hold else {
        return Ok(view);
    };
    let deadline = tokio::time::Instant::now() + hold.wait;
    loop {
        let woken = tokio::time::timeout_at(deadline, hold.changed()).await;
        let view = with_state(s, move |c| c.job_view(id)).await?;
        if !matches!(woken, Ok(true)) || !wait.unchanged(&view) {
            return Ok(view);
        }
    }
}

/// Why the current committee: the draws, recheckable (`veil job N --explain`).
async fn explain(
    State(s): State<Shared>,
    Path(id): Path<u64>,
) -> HttpResult<Json<veil_scheduler::explain::JobExplanation>> {
    with_state(&s, move |c| c.explanation(id, now_ms()))
        .await
        .map(Json)
}

/// The draw beacon's anchor and last revealed secret.
async fn beacon(State(s): State<Shared>) -> HttpResult<Json<crate::core::beacon::BeaconView>> {
    with_state(&s, move |c| Ok(c.beacon_view(now_ms())))
        .await
        .map(Json)
}

async fn cancel(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<u64>,
) -> HttpResult<Json<JobView>> {
    let key = caller.key()?;
    with_state(&s, move |c| c.cancel(&key, id, now_ms()))
        .await
        .map(Json)
}

async fn upload_input(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((id, attempt, party)): Path<(u64, u32, usize)>,
    body: Bytes,
) -> HttpResult<StatusCode> {
    let key = caller.key()?;
    with_uploaded_blob(&s, body.into(), move |c, bytes| {
        c.upload_input(&key, id, attempt, party, bytes, now_ms())
    })
    .await
    .map(|()| StatusCode::NO_CONTENT)
}

async fn download_output(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((id, party)): Path<(u64, usize)>,
) -> HttpResult<Vec<u8>> {
    let key = caller.key()?;
    read_blob(&s, move |c| c.download_output(&key, id, party)).await
}

async fn download_owner(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((id, attempt)): Path<(u64, u32)>,
) -> HttpResult<Vec<u8>> {
    let key = caller.key()?;
    read_blob(&s, move |c| c.download_owner(&key, id, attempt)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(state: &str, memory_bytes: u64) -> NodeView {
        NodeView {
            id: 0,
            public_key: String::new(),
            operator: String::new(),
            declared_operator: String::new(),
            region: String::new(),
            address: None,
            state: state.into(),
            reputation: 1.0,
            last_heartbeat_ms: 0,
            load: 0.0,
            queue_len: 0,
            active_jobs: 0,
            successes: 0,
            failures: 0,
            timeouts: 0,
            hardware: veil_node::api::HardwareReport {
                cores: 1,
                memory_bytes,
                gpu_model: None,
                gpu_memory_bytes: None,
                bandwidth_bytes_per_s: 1,
            },
            measured_rtts: Vec::new(),
            claimed_ops_per_s: 0,
            measured_ops_per_s: None,
            ops_per_s: 0,
        }
    }

    #[test]
    fn a_job_no_node_could_hold_is_refused_with_its_numbers() {
        let request = SubmitRequest {
            workload: "network-a".into(),
            model_seed: 7,
            weights: "shared".into(),
            frac_bits: 16,
            batch: 1,
            inferences: 10,
            parties: 2,
            model: None,
            output_key: None,
            protocol: veil_protocols::protocol::Protocol::Spdz2k.to_string(),
            stage: None,
            threads: None,
            shaping: None,
        };
        let demand = demand_for(&request, None).unwrap();
        let dealer = demand.dealer.expect("spdz2k has a dealer").memory_bytes;
        let party = demand.party.memory_bytes;
        let (role, needed) = if dealer >= party {
            ("dealer", dealer)
        } else {
            ("party", party)
        };
        // No node yet: the job may wait.
        check_fits(&[], &demand).unwrap();
        check_fits(&[node("active", needed)], &demand).unwrap();
        let err = check_fits(&[node("active", needed - 1)], &demand).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(role)
                && text.contains(&needed.to_string())
                && text.contains(&(needed - 1).to_string()),
            "{text}"
        );
        assert_eq!(err.kind(), crate::error::ErrorKind::Invalid);
        // A big node that is down does not count.
        assert!(check_fits(&[node("down", u64::MAX), node("active", 1)], &demand).is_err());
    }

    #[test]
    fn a_page_is_bounded_and_its_query_strict() {
        assert_eq!(
            parse_page(None).unwrap(),
            Page {
                after: 0,
                limit: DEFAULT_PAGE
            }
        );
        assert_eq!(
            parse_page(Some("after=41&limit=7")).unwrap(),
            Page {
                after: 41,
                limit: 7
            }
        );
        assert_eq!(
            parse_page(Some(&format!("limit={MAX_PAGE}")))
                .unwrap()
                .limit,
            MAX_PAGE
        );
        for bad in [
            "limit=0",
            &format!("limit={}", MAX_PAGE + 1),
            "limit=-1",
            "after=x",
            "after=1&after=2",
            "offset=3",
            "limit",
        ] {
            assert!(parse_page(Some(bad)).is_err(), "{bad}");
        }
    }
}
