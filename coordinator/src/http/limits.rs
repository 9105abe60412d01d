//! Limits at the HTTPS edge, applied before a request reaches the state: rates per client key, per source
//! address and in all (token buckets; 429), a cap on requests served at once (503) and a timeout per
//! request (408). Body sizes are limited per route (see [`super::router`]); connection count, handshake and
//! header timeouts in [`super::serve`].

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::Semaphore;
use veil_node::api::ErrorBody;

use super::drain::DrainOnDrop;

use super::Caller;
use crate::config::{EdgeLimits, Rate};

/// Most keys or addresses tracked per table; past it, buckets that have refilled are forgotten (they hold
/// no debt), and if none has, the table starts over (the global bucket still bounds the total).
const MAX_TRACKED: usize = 65_536;

/// The source address of a connection, attached to each of its requests.
#[derive(Clone, Copy, Debug)]
pub(super) struct Peer(pub SocketAddr);

/// One token bucket. Invariant: `0 <= tokens <= rate.burst`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(rate.burst),
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * f64::from(rate.per_second)).min(f64::from(rate.burst));
        self.at = now;
    }

    /// Takes one token if there is one.
    fn take(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Token buckets by key, at one rate. Invariant: at most [`MAX_TRACKED`] buckets.
struct Buckets<K> {
    rate: Rate,
    map: HashMap<K, Bucket>,
}

impl<K: Eq + Hash> Buckets<K> {
    fn new(rate: Rate) -> Self {
        Buckets {
            rate,
            map: HashMap::new(),
        }
    }

    fn take(&mut self, key: K, now: Instant) -> bool {
        if self.map.len() >= MAX_TRACKED && !self.map.contains_key(&key) {
            let rate = self.rate;
            self.map.retain(|_, b| {
                b.refill(rate, now);
                b.tokens < f64::from(rate.burst)
            });
            if self.map.len() >= MAX_TRACKED {
                self.map.clear();
            }
        }
        let rate = self.rate;
        self.map
            .entry(key)
            .or_insert_with(|| Bucket::full(rate, now))
            .take(rate, now)
    }
}

/// Which limit a request ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limited {
    /// The client key's rate.
    Key,
    /// The source address's rate.
    Address,
    /// The coordinator's total rate.
    Global,
}

impl Limited {
    fn name(self) -> &'static str {
        match self {
            Limited::Key => "client key",
            Limited::Address => "source address",
            Limited::Global => "coordinator",
        }
    }
}

/// The rate limits, per key, per address and in all.
pub struct RateLimits {
    global: Bucket,
    global_rate: Rate,
    by_address: Buckets<IpAddr>,
    by_key: Buckets<[u8; 32]>,
}

impl RateLimits {
    /// Fresh buckets (all full) at `limits`' rates.
    pub fn new(limits: &EdgeLimits, now: Instant) -> RateLimits {
        RateLimits {
            global: Bucket::full(limits.global, now),
            global_rate: limits.global,
            by_address: Buckets::new(limits.per_address),
            by_key: Buckets::new(limits.per_key),
        }
    }

    /// Admits one request from `address` (and `key`, if the caller proved one), or says which limit it
    /// exceeded. A refused request takes no token from the later buckets.
    pub fn admit(
        &mut self,
        address: IpAddr,
        key: Option<[u8; 32]>,
        now: Instant,
    ) -> Result<(), Limited> {
        if !self.by_address.take(address, now) {
            return Err(Limited::Address);
        }
        if let Some(k) = key {
            if !self.by_key.take(k, now) {
                return Err(Limited::Key);
            }
        }
        if !self.global.take(self.global_rate, now) {
            return Err(Limited::Global);
        }
        Ok(())
    }
}

/// Why the edge refused a request (counted for the metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A rate limit (429).
    Rate(Limited),
    /// The concurrency cap (503).
    Overloaded,
    /// The request timeout (408).
    Timeout,
}

impl Refusal {
    /// Every refusal, in the order of [`Refusal::index`].
    pub const ALL: [Refusal; 5] = [
        Refusal::Rate(Limited::Key),
        Refusal::Rate(Limited::Address),
        Refusal::Rate(Limited::Global),
        Refusal::Overloaded,
        Refusal::Timeout,
    ];

    fn index(self) -> usize {
        match self {
            Refusal::Rate(Limited::Key) => 0,
            Refusal::Rate(Limited::Address) => 1,
            Refusal::Rate(Limited::Global) => 2,
            Refusal::Overloaded => 3,
            Refusal::Timeout => 4,
        }
    }

    /// Its metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Rate(Limited::Key) => "rate_key",
            Refusal::Rate(Limited::Address) => "rate_address",
            Refusal::Rate(Limited::Global) => "rate_global",
            Refusal::Overloaded => "concurrency",
            Refusal::Timeout => "request_timeout",
        }
    }
}

/// What the edge middleware shares between requests.
pub struct Edge {
    rates: Mutex<RateLimits>,
    in_flight: Arc<Semaphore>,
    request_timeout: Duration,
    /// Requests refused, by [`Refusal::index`].
    refused: [AtomicU64; 5],
    max_json_bytes: usize,
}

impl Edge {
    /// The edge state for `limits`.
    pub fn new(limits: &EdgeLimits) -> Edge {
        Edge {
            rates: Mutex::new(RateLimits::new(limits, Instant::now())),
            in_flight: Arc::new(Semaphore::new(limits.max_concurrent_requests as usize)),
            request_timeout: Duration::from_millis(limits.request_timeout_ms),
            refused: Default::default(),
            max_json_bytes: limits.max_json_bytes,
        }
    }

    /// The body limit of JSON routes, bytes.
    pub fn max_json_bytes(&self) -> usize {
        self.max_json_bytes
    }

    /// Requests refused for `reason` since start.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused[reason.index()].load(Ordering::Relaxed)
    }

    fn count(&self, reason: Refusal) {
        self.refused[reason.index()].fetch_add(1, Ordering::Relaxed);
    }
}

fn refuse(status: StatusCode, error: String) -> Response {
    let mut response = (status, Json(ErrorBody { error })).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The middleware: rates, then the concurrency cap, then the request's timeout. Every body is wrapped in
/// [`DrainOnDrop`] first, so a refusal given before the body is read still reaches the client.
pub(super) async fn enforce(edge: Arc<Edge>, req: Request, next: Next) -> Response {
    let req = req.map(|body| axum::body::Body::new(DrainOnDrop::new(body)));
    let address = req
        .extensions()
        .get::<Peer>()
        .map_or(IpAddr::from([0u8; 4]), |p| p.0.ip());
    let key = req
        .extensions()
        .get::<Caller>()
        .and_then(|c| c.0)
        .map(|k| k.0);
    let admitted = match edge.rates.lock() {
        Ok(mut rates) => rates.admit(address, key, Instant::now()),
        // A panic elsewhere while holding the buckets: start them over rather than refuse everyone.
        Err(poisoned) => {
            let mut rates = poisoned.into_inner();
            rates.admit(address, key, Instant::now())
        }
    };
    if let Err(limit) = admitted {
        tracing::debug!(%address, limit = limit.name(), "rate limited");
        edge.count(Refusal::Rate(limit));
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            format!("rate limited: too many requests for this {}", limit.name()),
        );
    }
    let Ok(_permit) = edge.in_flight.clone().try_acquire_owned() else {
        edge.count(Refusal::Overloaded);
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded: too many requests in progress".into(),
        );
    };
    match tokio::time::timeout(edge.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            edge.count(Refusal::Timeout);
            refuse(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request took more than {} ms",
                    edge.request_timeout.as_millis()
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(key: u32, address: u32, global: u32) -> EdgeLimits {
        let rate = |burst| Rate {
            per_second: 1,
            burst,
        };
        EdgeLimits {
            per_key: rate(key),
            per_address: rate(address),
            global: rate(global),
            ..EdgeLimits::default()
        }
    }

    #[test]
    fn each_bucket_refuses_past_its_burst_and_refills_at_its_rate() {
        let t0 = Instant::now();
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        let mut r = RateLimits::new(&limits(2, 3, 5), t0);
        // Per key: two, then refused; another key from the same address still passes.
        assert_eq!(r.admit(a, Some([1; 32]), t0), Ok(()));
        assert_eq!(r.admit(a, Some([1; 32]), t0), Ok(()));
        assert_eq!(r.admit(a, Some([1; 32]), t0), Err(Limited::Key));
        // That refusal took the address's third token: the address is now spent.
        assert_eq!(r.admit(a, Some([2; 32]), t0), Err(Limited::Address));
        // Another address passes until the global bucket (5) is empty: 2 taken so far.
        assert_eq!(r.admit(b, None, t0), Ok(()));
        assert_eq!(r.admit(b, None, t0), Ok(()));
        assert_eq!(r.admit(b, None, t0), Ok(()));
        assert_eq!(
            r.admit(IpAddr::from([10, 0, 0, 3]), None, t0),
            Err(Limited::Global)
        );
        // One second later one token is back in each bucket.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(r.admit(IpAddr::from([10, 0, 0, 3]), None, t1), Ok(()));
        assert_eq!(
            r.admit(IpAddr::from([10, 0, 0, 4]), None, t1),
            Err(Limited::Global)
        );
    }

    #[test]
    fn a_full_table_forgets_refilled_buckets_and_stays_bounded() {
        let t0 = Instant::now();
        let mut table = Buckets::new(Rate {
            per_second: 1,
            burst: 1,
        });
        for i in 0..MAX_TRACKED as u32 {
            assert!(table.take(i, t0));
        }
        assert_eq!(table.map.len(), MAX_TRACKED);
        // Later every bucket has refilled: the table forgets them to admit a new key.
        let t1 = t0 + Duration::from_secs(2);
        assert!(table.take(u32::MAX, t1));
        assert_eq!(table.map.len(), 1);
        assert!(!table.take(u32::MAX, t1));
    }
}
