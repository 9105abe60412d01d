//! An in-memory [`Net`] for tests and benchmarks: one channel per ordered pair of parties.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::net::{Net, NetError};

/// Default time a party waits for a message before it gives up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// One party's end of an in-memory mesh.
pub struct MemNet {
    party: usize,
    parties: usize,
    to: Vec<Option<Sender<Vec<u8>>>>,
    from: Vec<Option<Receiver<Vec<u8>>>>,
    timeout: Duration,
    /// Every message received, with its sender, when recording is on (privacy tests read it).
    view: Option<ViewLog>,
}

/// A received message and its sender.
pub type Received = (usize, Vec<u8>);

/// The messages an endpoint received, with their senders, in order: a handle that stays readable after the
/// endpoint was wrapped (link shaping) or consumed.
#[derive(Clone, Default, Debug)]
pub struct ViewLog(Arc<Mutex<Vec<Received>>>);

impl ViewLog {
    /// The messages so far.
    pub fn messages(&self) -> Vec<Received> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn push(&self, from: usize, msg: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((from, msg.to_vec()));
    }
}

impl MemNet {
    /// A fully connected mesh of `parties` endpoints; endpoint `i` is party `i`.
    pub fn mesh(parties: usize, timeout: Duration) -> Vec<MemNet> {
        let mut nets: Vec<MemNet> = (0..parties)
            .map(|party| MemNet {
                party,
                parties,
                to: (0..parties).map(|_| None).collect(),
                from: (0..parties).map(|_| None).collect(),
                timeout,
                view: None,
            })
            .collect();
        for a in 0..parties {
            for b in 0..parties {
                if a != b {
                    let (tx, rx) = channel();
                    nets[a].to[b] = Some(tx);
                    nets[b].from[a] = Some(rx);
                }
            }
        }
        nets
    }

    /// Starts recording every received message; returns the log.
    pub fn record_view(&mut self) -> ViewLog {
        self.view.get_or_insert_with(ViewLog::default).clone()
    }

    /// The recorded messages (empty unless recording).
    pub fn view(&self) -> Vec<(usize, Vec<u8>)> {
        self.view
            .as_ref()
            .map(ViewLog::messages)
            .unwrap_or_default()
    }

    fn no_peer(&self, peer: usize) -> NetError {
        NetError::NoSuchPeer {
            me: self.party,
            peer,
            parties: self.parties,
        }
    }
}

impl Net for MemNet {
    fn party(&self) -> usize {
        self.party
    }

    fn parties(&self) -> usize {
        self.parties
    }

    fn send(&mut self, to: usize, payload: Vec<u8>) -> Result<(), NetError> {
        let tx = self
            .to
            .get(to)
            .and_then(Option::as_ref)
            .ok_or_else(|| self.no_peer(to))?;
        tx.send(payload)
            .map_err(|_| NetError::Disconnected { peer: to })
    }

    fn recv(&mut self, from: usize) -> Result<Vec<u8>, NetError> {
        let rx = self
            .from
            .get(from)
            .and_then(Option::as_ref)
            .ok_or_else(|| self.no_peer(from))?;
        let msg = rx.recv_timeout(self.timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => NetError::Timeout {
                from,
                waited: self.timeout,
            },
            RecvTimeoutError::Disconnected => NetError::Disconnected { peer: from },
        })?;
        if let Some(view) = &self.view {
            view.push(from, &msg);
        }
        Ok(msg)
    }
}
