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
    /// Makes sure every message sent so far is on its way, without waiting for it to be received. A
    /// transport may hold sent messages until the party's next `recv` (to batch a round's writes); a party
    /// calls this before it stops using the link for a while (the end of an inference), so that no peer
    /// waits on a message still held here. Nothing to do for a transport that sends at once (the default).
    fn flush(&mut self) -> Result<(), NetError> {
        Ok(())
    }
    /// Waits until every other party of the committee reached the same point: a start line, so that the
    /// parties' online clocks start together (a party that finished its offline phase first would otherwise
    /// count the others' preparation as online waiting). Not protocol traffic: [`CountedNet`] neither
    /// counts nor times it, so bytes and rounds are the same whether or not the transport does anything.
    /// Every party calls it at the same point of the program (messages between a pair keep their order).
    /// Nothing to do for a transport whose committee waits elsewhere (the in-memory mesh: its runs share an
    /// in-process start line) — the default.
    fn start_line(&mut self) -> Result<(), NetError> {
        Ok(())
    }
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
    fn flush(&mut self) -> Result<(), NetError> {
        (**self).flush()
    }
    fn start_line(&mut self) -> Result<(), NetError> {
        (**self).start_line()
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

/// Where [`CountedNet`] reads the time it charges to `wait`. Injected so that the accounting can be driven by
/// a simulated clock (the lab) or tested without sleeping; [`SystemClock`] by default.
pub trait Clock: Send {
    /// The current instant; must never go backwards.
    fn now(&self) -> Instant;
}

/// The monotonic system clock, [`Instant::now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A [`Net`] with accounting; what protocols use. `C` is the clock that times waits.
pub struct CountedNet<N: Net, C: Clock = SystemClock> {
    inner: N,
    stats: NetStats,
    sent_since_recv: bool,
    clock: C,
}

impl<N: Net> CountedNet<N> {
    /// Wraps a transport, timing waits with the system clock.
    pub fn new(inner: N) -> Self {
        Self::with_clock(inner, SystemClock)
    }
}

impl<N: Net, C: Clock> CountedNet<N, C> {
    /// Wraps a transport, timing waits with `clock`.
    pub fn with_clock(inner: N, clock: C) -> Self {
        Self {
            inner,
            stats: NetStats::default(),
            sent_since_recv: false,
            clock,
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

impl<N: Net, C: Clock> Net for CountedNet<N, C> {
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
        let start = self.clock.now();
        let msg = self.inner.recv(from);
        self.stats.wait += self.clock.now().saturating_duration_since(start);
        let msg = msg?;
        self.stats.bytes_received += msg.len() as u64;
        Ok(msg)
    }
    fn flush(&mut self) -> Result<(), NetError> {
        self.inner.flush()
    }
    fn start_line(&mut self) -> Result<(), NetError> {
        self.inner.start_line()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::mem_net::MemNet;

    /// A clock that advances by a fixed step on every reading.
    struct Stepping {
        now: Arc<Mutex<Instant>>,
        step: Duration,
    }

    impl Clock for Stepping {
        fn now(&self) -> Instant {
            let mut now = self
                .now
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *now += self.step;
            *now
        }
    }

    #[test]
    fn waits_are_timed_by_the_injected_clock_and_rounds_by_send_then_receive() {
        let mut mesh = MemNet::mesh(2, Duration::from_secs(1));
        let b = mesh.pop().unwrap();
        let a = mesh.pop().unwrap();
        let clock = Stepping {
            now: Arc::new(Mutex::new(Instant::now())),
            step: Duration::from_millis(7),
        };
        let mut a = CountedNet::with_clock(a, clock);
        let mut b = CountedNet::new(b);
        a.send(1, vec![1, 2, 3]).unwrap();
        b.send(0, vec![4; 5]).unwrap();
        b.send(0, vec![6]).unwrap();
        assert_eq!(a.recv(1).unwrap(), vec![4; 5]);
        assert_eq!(a.recv(1).unwrap(), vec![6]);
        assert_eq!(b.recv(0).unwrap(), vec![1, 2, 3]);
        let s = a.stats();
        // Two receives, each timed by two readings 7 ms apart.
        assert_eq!(s.wait, Duration::from_millis(14));
        assert_eq!(
            (s.bytes_sent, s.bytes_received, s.messages_sent, s.rounds),
            (3, 6, 1, 1)
        );
        assert_eq!(b.stats().rounds, 1);
    }

    /// A transport that only counts its flushes.
    struct Flushes(Arc<Mutex<usize>>);

    impl Net for Flushes {
        fn party(&self) -> usize {
            0
        }
        fn parties(&self) -> usize {
            2
        }
        fn send(&mut self, _to: usize, _payload: Vec<u8>) -> Result<(), NetError> {
            Ok(())
        }
        fn recv(&mut self, from: usize) -> Result<Vec<u8>, NetError> {
            Err(NetError::Disconnected { peer: from })
        }
        fn flush(&mut self) -> Result<(), NetError> {
            *self.0.lock().unwrap() += 1;
            Ok(())
        }
    }

    #[test]
    fn flush_reaches_the_transport_through_the_counter_and_a_box() {
        let count = Arc::new(Mutex::new(0));
        let mut counted = CountedNet::new(Flushes(count.clone()));
        counted.flush().unwrap();
        let mut boxed: Box<dyn Net> = Box::new(CountedNet::new(Flushes(count.clone())));
        boxed.flush().unwrap();
        assert_eq!(*count.lock().unwrap(), 2);
        assert_eq!(counted.stats(), &NetStats::default());
    }

    /// A transport whose start line is one message each way (as over QUIC), counting its start lines.
    struct Lines {
        inner: MemNet,
        lines: Arc<Mutex<usize>>,
    }

    impl Net for Lines {
        fn party(&self) -> usize {
            self.inner.party()
        }
        fn parties(&self) -> usize {
            self.inner.parties()
        }
        fn send(&mut self, to: usize, payload: Vec<u8>) -> Result<(), NetError> {
            self.inner.send(to, payload)
        }
        fn recv(&mut self, from: usize) -> Result<Vec<u8>, NetError> {
            self.inner.recv(from)
        }
        fn start_line(&mut self) -> Result<(), NetError> {
            *self.lines.lock().unwrap() += 1;
            let peer = 1 - self.party();
            self.inner.send(peer, Vec::new())?;
            self.inner.recv(peer).map(|_| ())
        }
    }

    #[test]
    fn the_start_line_reaches_the_transport_and_is_not_counted_as_traffic() {
        let lines = Arc::new(Mutex::new(0));
        let mut nets = MemNet::mesh(2, Duration::from_secs(5)).into_iter();
        let (a, b) = (nets.next().unwrap(), nets.next().unwrap());
        let mut a = CountedNet::new(Lines {
            inner: a,
            lines: lines.clone(),
        });
        let mut b: Box<dyn Net> = Box::new(CountedNet::new(Lines {
            inner: b,
            lines: lines.clone(),
        }));
        let other = std::thread::spawn(move || {
            b.start_line().unwrap();
            b.send(0, vec![7]).unwrap();
        });
        a.start_line().unwrap();
        assert_eq!(a.recv(1).unwrap(), vec![7]);
        other.join().unwrap();
        assert_eq!(*lines.lock().unwrap(), 2);
        let s = a.stats();
        assert_eq!(
            (s.bytes_sent, s.bytes_received, s.messages_sent, s.rounds),
            (0, 1, 0, 0),
            "only the protocol message is counted"
        );
    }
}
