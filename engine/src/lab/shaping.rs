//! Network shaping without root: a [`Net`] wrapper that gives every link a one-way latency and paces each
//! party's outgoing traffic with a token bucket, so LAN and WAN conditions can be compared on one machine,
//! over any transport (in-memory or QUIC).
//!
//! Model (what a `tc netem delay L rate B` on each party's uplink would do, minus jitter and loss):
//! - Each party has one uplink of `bandwidth` bits per second, shared by all its peers. Sending charges the
//!   message's payload to a token bucket of capacity [`ShapingConfig::burst_bytes`]; a message that finds the
//!   bucket short finishes transmitting when the refill has paid for it, and later messages queue behind it.
//!   The sender is not blocked (an unbounded socket buffer): the message is stamped with the instant its last
//!   byte leaves the uplink.
//! - The receiver does not see a message before that stamp plus `latency`; `recv` sleeps until then.
//!
//! Invariants:
//! - Every message is delivered no earlier than `latency` after it was sent, so a protocol of `r` rounds takes
//!   at least `r x latency` (each round ends with a receive of a message sent in that round).
//! - Payloads reach the inner transport with an 8-byte delivery stamp in front; the wrapper removes it before
//!   the protocol sees the message. Accounting above this wrapper (`veil_protocols::net::CountedNet`) counts
//!   protocol payload only, so shaped and unshaped runs report identical bytes and rounds.
//! - Stamps are wall-clock (`SystemTime`) nanoseconds: every party of a shaped run must share a clock, which
//!   holds on one machine (the purpose of shaping). A stamp further in the future than the link allows for is
//!   cut to [`MAX_EXTRA_DELAY`] beyond the latency, so a bad peer cannot stall a party indefinitely.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use veil_protocols::mem_net::MemNet;
use veil_protocols::net::{Net, NetError};
use veil_protocols::semi2k::local::Link;

/// Bytes of the delivery stamp in front of every shaped message.
pub const STAMP_BYTES: usize = 8;

/// The longest a receiver waits beyond the configured latency for a message stamped in the future.
pub const MAX_EXTRA_DELAY: Duration = Duration::from_secs(60);

/// Link settings of a shaped run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShapingConfig {
    /// One-way latency of every link, milliseconds.
    pub latency_ms: f64,
    /// Uplink rate of every party, megabits per second; `None` for unlimited.
    pub bandwidth_mbps: Option<f64>,
    /// Token-bucket capacity: bytes a party may send at once, without pacing, after an idle period.
    pub burst_bytes: u64,
}

/// Invalid shaping settings.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ShapingError {
    /// Latency negative, not finite, or above an hour.
    #[error("latency must be between 0 and 3600000 ms, got {0}")]
    Latency(f64),
    /// Bandwidth not positive or not finite.
    #[error("bandwidth must be a positive number of Mbit/s, got {0}")]
    Bandwidth(f64),
}

/// Default token-bucket capacity: 64 KiB, about one TCP window's worth of unpaced burst.
pub const DEFAULT_BURST_BYTES: u64 = 64 * 1024;

impl ShapingConfig {
    /// Checked settings: `latency_ms` in `[0, 3.6e6]`, `bandwidth_mbps` positive and finite when given.
    pub fn new(latency_ms: f64, bandwidth_mbps: Option<f64>) -> Result<Self, ShapingError> {
        let config = Self {
            latency_ms,
            bandwidth_mbps,
            burst_bytes: DEFAULT_BURST_BYTES,
        };
        config.check()?;
        Ok(config)
    }

    /// Checks settings that arrived from elsewhere (a run request): the same rules as [`ShapingConfig::new`].
    pub fn check(&self) -> Result<(), ShapingError> {
        if !self.latency_ms.is_finite() || !(0.0..=3.6e6).contains(&self.latency_ms) {
            return Err(ShapingError::Latency(self.latency_ms));
        }
        if let Some(b) = self.bandwidth_mbps {
            if !b.is_finite() || b <= 0.0 {
                return Err(ShapingError::Bandwidth(b));
            }
        }
        Ok(())
    }

    /// The one-way latency.
    pub fn latency(&self) -> Duration {
        seconds(self.latency_ms / 1e3)
    }

    /// Uplink rate in bytes per second (`None`: unlimited).
    pub fn bytes_per_second(&self) -> Option<f64> {
        self.bandwidth_mbps.map(|m| m * 1e6 / 8.0)
    }

    /// The time a message of `bytes` payload bytes spends on an idle link with an empty bucket:
    /// serialisation at the uplink rate plus the latency. The estimate a report sets beside a measurement.
    pub fn transfer_time(&self, bytes: u64) -> Duration {
        let serialise = self
            .bytes_per_second()
            .map_or(0.0, |rate| bytes as f64 / rate);
        self.latency() + seconds(serialise)
    }
}

/// A token bucket in virtual time: tokens are bytes, refilled at `rate` up to `capacity`; the balance may go
/// negative, which is the queue of bytes still to leave the uplink.
#[derive(Debug, Clone)]
struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    fn new(rate: f64, capacity: u64, now: Instant) -> Self {
        Self {
            rate,
            capacity: capacity as f64,
            tokens: capacity as f64,
            updated: now,
        }
    }

    /// Charges `bytes` at `now`; returns how long after `now` the last of them leaves the uplink.
    fn charge(&mut self, bytes: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.updated = now;
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            seconds(-self.tokens / self.rate)
        }
    }
}

/// A transport with shaped links (see the module doc).
pub struct ShapedNet<N: Net> {
    inner: N,
    config: Option<ShapingConfig>,
    bucket: Option<TokenBucket>,
}

impl<N: Net> ShapedNet<N> {
    /// Wraps `inner`. Every party of the committee must wrap its transport with the same settings.
    pub fn new(inner: N, config: ShapingConfig) -> Self {
        Self::optional(inner, Some(config))
    }

    /// Wraps `inner` with `config`, or passes messages through untouched (no stamp, no delay) if `None`, so
    /// a runtime can hold one transport type whether or not a job is shaped.
    pub fn optional(inner: N, config: Option<ShapingConfig>) -> Self {
        let bucket = config.and_then(|c| {
            c.bytes_per_second()
                .map(|rate| TokenBucket::new(rate, c.burst_bytes, Instant::now()))
        });
        Self {
            inner,
            config,
            bucket,
        }
    }

    /// The settings (`None`: pass-through).
    pub fn config(&self) -> Option<&ShapingConfig> {
        self.config.as_ref()
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &N {
        &self.inner
    }

    /// Unwraps the transport.
    pub fn into_inner(self) -> N {
        self.inner
    }
}

/// A duration of `s` seconds; settings that bypassed [`ShapingConfig::check`] (negative, NaN or infinite
/// values) give zero delay or the longest wait, never a panic.
fn seconds(s: f64) -> Duration {
    if s.is_nan() || s <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(s).unwrap_or(MAX_EXTRA_DELAY)
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl<N: Net> Net for ShapedNet<N> {
    fn party(&self) -> usize {
        self.inner.party()
    }

    fn parties(&self) -> usize {
        self.inner.parties()
    }

    fn send(&mut self, to: usize, payload: Vec<u8>) -> Result<(), NetError> {
        let Some(config) = self.config else {
            return self.inner.send(to, payload);
        };
        let queued = match self.bucket.as_mut() {
            Some(bucket) => bucket.charge(payload.len(), Instant::now()),
            None => Duration::ZERO,
        };
        let deliver_at = SystemTime::now() + queued + config.latency();
        let mut framed = Vec::with_capacity(STAMP_BYTES + payload.len());
        framed.extend_from_slice(&unix_nanos(deliver_at).to_le_bytes());
        framed.extend_from_slice(&payload);
        self.inner.send(to, framed)
    }

    fn recv(&mut self, from: usize) -> Result<Vec<u8>, NetError> {
        let Some(config) = self.config else {
            return self.inner.recv(from);
        };
        let mut framed = self.inner.recv(from)?;
        let stamp: [u8; STAMP_BYTES] = framed
            .get(..STAMP_BYTES)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| {
                NetError::Transport(format!(
                    "shaped message of {} bytes from party {from} lacks its delivery stamp",
                    framed.len()
                ))
            })?;
        let deliver_at = u64::from_le_bytes(stamp);
        let now = unix_nanos(SystemTime::now());
        if deliver_at > now {
            let cap = config.latency() + MAX_EXTRA_DELAY;
            std::thread::sleep(Duration::from_nanos(deliver_at - now).min(cap));
        }
        framed.drain(..STAMP_BYTES);
        Ok(framed)
    }

    fn flush(&mut self) -> Result<(), NetError> {
        self.inner.flush()
    }

    /// The start line is not shaped: it is not protocol traffic (see [`Net::start_line`]).
    fn start_line(&mut self) -> Result<(), NetError> {
        self.inner.start_line()
    }
}

/// The committee link of a local run shaped by `config`: every party's mesh endpoint behind a [`ShapedNet`].
pub fn link(config: ShapingConfig) -> Link {
    std::sync::Arc::new(move |net: MemNet| Box::new(ShapedNet::optional(net, Some(config))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(config: ShapingConfig) -> (ShapedNet<MemNet>, ShapedNet<MemNet>) {
        let mut mesh = MemNet::mesh(2, Duration::from_secs(10)).into_iter();
        let a = mesh.next().map(|n| ShapedNet::new(n, config));
        let b = mesh.next().map(|n| ShapedNet::new(n, config));
        (a.unwrap(), b.unwrap())
    }

    #[test]
    fn rejects_bad_settings() {
        assert_eq!(
            ShapingConfig::new(-1.0, None),
            Err(ShapingError::Latency(-1.0))
        );
        assert!(ShapingConfig::new(f64::NAN, None).is_err());
        assert_eq!(
            ShapingConfig::new(1.0, Some(0.0)),
            Err(ShapingError::Bandwidth(0.0))
        );
        assert!(ShapingConfig::new(1.0, Some(f64::INFINITY)).is_err());
        assert!(ShapingConfig::new(0.0, Some(100.0)).is_ok());
    }

    #[test]
    fn delivers_the_payload_unchanged_after_the_latency() {
        let config = ShapingConfig::new(30.0, None).unwrap();
        let (mut a, mut b) = pair(config);
        let started = Instant::now();
        a.send(1, vec![1, 2, 3]).unwrap();
        assert_eq!(b.recv(0).unwrap(), vec![1, 2, 3]);
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn ping_pong_rounds_each_cost_the_latency() {
        let config = ShapingConfig::new(10.0, None).unwrap();
        let (mut a, mut b) = pair(config);
        let started = Instant::now();
        let echo = std::thread::spawn(move || {
            for _ in 0..5 {
                let m = b.recv(0).unwrap();
                b.send(0, m).unwrap();
            }
        });
        for i in 0..5u8 {
            a.send(1, vec![i]).unwrap();
            assert_eq!(a.recv(1).unwrap(), vec![i]);
        }
        echo.join().unwrap();
        // 10 one-way trips of 10 ms each.
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[test]
    fn pacing_spreads_a_large_message_over_its_serialisation_time() {
        // 8 Mbit/s = 1 MB/s; 200 KB beyond a 64 KiB burst takes about 136 ms to leave the uplink.
        let config = ShapingConfig::new(0.0, Some(8.0)).unwrap();
        let (mut a, mut b) = pair(config);
        let started = Instant::now();
        a.send(1, vec![0; 200_000]).unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "sending must not block"
        );
        assert_eq!(b.recv(0).unwrap().len(), 200_000);
        let expected = (200_000.0 - DEFAULT_BURST_BYTES as f64) / 1e6;
        assert!(started.elapsed().as_secs_f64() >= expected * 0.95);
    }

    #[test]
    fn queued_messages_wait_behind_each_other() {
        let config = ShapingConfig::new(0.0, Some(8.0)).unwrap();
        let (mut a, mut b) = pair(config);
        let started = Instant::now();
        for _ in 0..4 {
            a.send(1, vec![0; 50_000]).unwrap();
        }
        for _ in 0..4 {
            b.recv(0).unwrap();
        }
        let expected = (200_000.0 - DEFAULT_BURST_BYTES as f64) / 1e6;
        assert!(started.elapsed().as_secs_f64() >= expected * 0.95);
    }

    #[test]
    fn a_message_without_a_stamp_is_an_error_not_a_panic() {
        let mut mesh = MemNet::mesh(2, Duration::from_secs(1));
        let raw = mesh.remove(0);
        let mut shaped = ShapedNet::new(mesh.remove(0), ShapingConfig::new(0.0, None).unwrap());
        let mut raw = raw;
        raw.send(1, vec![1, 2]).unwrap();
        assert!(matches!(shaped.recv(0), Err(NetError::Transport(_))));
    }

    #[test]
    fn pass_through_adds_no_stamp_and_no_delay() {
        let mut mesh = MemNet::mesh(2, Duration::from_secs(1));
        let mut raw = mesh.remove(1);
        let mut plain = ShapedNet::optional(mesh.remove(0), None);
        plain.send(1, vec![7; 3]).unwrap();
        assert_eq!(raw.recv(0).unwrap(), vec![7; 3]);
        raw.send(0, vec![9]).unwrap();
        assert_eq!(plain.recv(1).unwrap(), vec![9]);
    }

    #[test]
    fn unchecked_settings_never_panic() {
        let wild = ShapingConfig {
            latency_ms: f64::INFINITY,
            bandwidth_mbps: Some(0.0),
            burst_bytes: 0,
        };
        assert_eq!(wild.latency(), MAX_EXTRA_DELAY);
        let nan = ShapingConfig {
            latency_ms: f64::NAN,
            bandwidth_mbps: None,
            burst_bytes: 0,
        };
        assert_eq!(nan.latency(), Duration::ZERO);
        let mut bucket = TokenBucket::new(0.0, 0, Instant::now());
        assert_eq!(bucket.charge(10, Instant::now()), MAX_EXTRA_DELAY);
    }

    #[test]
    fn transfer_time_is_latency_plus_serialisation() {
        let c = ShapingConfig::new(40.0, Some(100.0)).unwrap();
        let t = c.transfer_time(12_500_000).as_secs_f64();
        assert!((t - 1.04).abs() < 1e-9, "{t}");
    }
}
