//! An in-memory [`Net`] for tests and benchmarks: one channel per ordered pair of parties.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
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
    view: Option<Vec<(usize, Vec<u8>)>>,
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

    /// Starts recording every received message.
    pub fn record_view(&mut self) {
        self.view = Some(Vec::new());
    }

    /// The recorded messages (empty unless recording).
    pub fn view(&self) -> &[(usize, Vec<u8>)] {
        self.view.as_deref().unwrap_or(&[])
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
        if let Some(view) = self.view.as_mut() {
            view.push((from, msg.clone()));
        }
        Ok(msg)
    }
}
