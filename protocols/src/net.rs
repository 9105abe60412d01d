//! The network seen by a protocol: point-to-point messages between the parties of one job, and their cost.
//!
//! A transport implements [`Net`]; protocols talk through a [`CountedNet`], which keeps the accounting, so every
//! transport (in-memory, QUIC) reports bytes and rounds the same way.
//!
//! Accounting rules:
//! - `bytes_sent` counts payload bytes only (no framing), per destination.
//! - A *round* is a communication phase: it ends when a party that has sent something starts to receive. Sending
//!   to all peers and then receiving from all of them is one round, however many peers there are.
//! - `wait` is the time spent blocked in `recv`: the communication part of latency as this party sees it.

use std::time::{Duration, Instant};

use thiserror::Error;

/// Transport failures.
#[derive(Debug, Error)]
pub enum NetError {
    /// The peer did not send within the configured timeout.
    #[error("timed out after {waited:?} waiting for party {from}")]
    Timeout {
        /// The silent peer.
        from: usize,
        /// How long this party waited.
        waited: Duration,
    },
    /// The peer's side of the link is gone.
    #[error("party {peer} disconnected")]
    Disconnected {
        /// The vanished peer.
        peer: usize,
    },
    /// A party index outside the committee, or this party itself.
    #[error("no link from party {me} to party {peer} in a committee of {parties}")]
    NoSuchPeer {
        /// This party.
        me: usize,
        /// The requested peer.
        peer: usize,
        /// Committee size.
        parties: usize,
    },
    /// A message larger than the transport accepts.
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Offending length.
        len: usize,
        /// Limit.
        limit: usize,
    },
    /// Any other transport failure, described.
    #[error("transport: {0}")]
    Transport(String),
}

/// Point-to-point messaging inside one committee. Messages between a pair arrive in the order they were sent.
pub trait Net: Send {
    /// This party's index in `0..parties()`.
    fn party(&self) -> usize;
    /// Committee size.
    fn parties(&self) -> usize;
    /// Queues `payload` for party `to`; does not wait for it to be received.
    fn send(&mut self, to: usize, payload: Vec<u8>) -> Result<(), NetError>;
    /// The next message from party `from`, waiting for it.
    fn recv(&mut self, from: usize) -> Result<Vec<u8>, NetError>;
}

impl<N: Net + ?Sized> Net for Box<N> {
    fn party(&self) -> usize {
        (**self).party()
    }
    fn parties(&self) -> usize {
        (**self).parties()
    }
    fn send(&mut self, to: usize, payload: Vec<u8>) -> Result<(), NetError> {
        (**self).send(to, payload)
    }
    fn recv(&mut self, from: usize) -> Result<Vec<u8>, NetError> {
        (**self).recv(from)
    }
}

/// What a party sent, received and waited for.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct NetStats {
    /// Payload bytes sent, all destinations.
    pub bytes_sent: u64,
    /// Payload bytes received, all sources.
    pub bytes_received: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Communication rounds (see the module doc).
    pub rounds: u64,
    /// Time blocked in `recv`.
    #[serde(serialize_with = "ser_secs")]
    pub wait: Duration,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl NetStats {
    /// The cost between an earlier snapshot and this one.
    pub fn since(&self, earlier: &NetStats) -> NetStats {
        NetStats {
            bytes_sent: self.bytes_sent - earlier.bytes_sent,
            bytes_received: self.bytes_received - earlier.bytes_received,
            messages_sent: self.messages_sent - earlier.messages_sent,
            rounds: self.rounds - earlier.rounds,
            wait: self.wait.saturating_sub(earlier.wait),
        }
    }
}

/// A [`Net`] with accounting; what protocols use.
pub struct CountedNet<N: Net> {
    inner: N,
    stats: NetStats,
    sent_since_recv: bool,
}

impl<N: Net> CountedNet<N> {
    /// Wraps a transport.
    pub fn new(inner: N) -> Self {
        Self {
            inner,
            stats: NetStats::default(),
            sent_since_recv: false,
        }
    }

    /// The totals so far.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// The transport.
    pub fn inner(&self) -> &N {
        &self.inner
    }

    /// Unwraps the transport.
    pub fn into_inner(self) -> N {
        self.inner
    }
}

impl<N: Net> Net for CountedNet<N> {
    fn party(&self) -> usize {
        self.inner.party()
    }
    fn parties(&self) -> usize {
        self.inner.parties()
    }
    fn send(&mut self, to: usize, payload: Vec<u8>) -> Result<(), NetError> {
        self.stats.bytes_sent += payload.len() as u64;
        self.stats.messages_sent += 1;
        self.sent_since_recv = true;
        self.inner.send(to, payload)
    }
    fn recv(&mut self, from: usize) -> Result<Vec<u8>, NetError> {
        if self.sent_since_recv {
            self.stats.rounds += 1;
            self.sent_since_recv = false;
        }
        let start = Instant::now();
        let msg = self.inner.recv(from);
        self.stats.wait += start.elapsed();
        let msg = msg?;
        self.stats.bytes_received += msg.len() as u64;
        Ok(msg)
    }
}
