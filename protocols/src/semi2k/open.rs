//! Opening shared values: one round in which every party broadcasts its shares and sums (or XORs) what it
//! receives. Several values can be opened in the same round. The share domain decides the wire form and
//! records what its check needs (nothing for `semi2k`, every opened value and MAC share for `spdz2k`).
//!
//! Every message's length is known in advance from public shapes; a message of any other length is rejected
//! before it is read.

use crate::adversary::Deviation;
use crate::bits;
use crate::domain::Domain;
use crate::error::{ProtocolError, Result};
use crate::net::Net;

use super::Party;

/// One value to open in a round.
enum Part<D: Domain> {
    /// Additively shared ring elements.
    Words(D::Arith),
    /// Additively shared ring elements opened in full width and not recorded for a MAC check (only a
    /// product check's masked product; see [`Domain::open_unchecked`]).
    Unchecked(D::Arith),
    /// XOR-shared bit vectors: `nodes` vectors of `len` bits, each in `words_for(len)` words.
    Bits {
        share: D::Bits,
        nodes: usize,
        len: usize,
    },
}

impl<D: Domain> Part<D> {
    fn wire_len(&self) -> usize {
        match self {
            Part::Words(w) | Part::Unchecked(w) => D::len(w) * D::WIRE_BYTES,
            Part::Bits { nodes, len, .. } => (nodes * len).div_ceil(8),
        }
    }
}

/// The values to open together in one round.
pub(crate) struct Round<D: Domain> {
    parts: Vec<Part<D>>,
}

impl<D: Domain> Default for Round<D> {
    fn default() -> Self {
        Self { parts: Vec::new() }
    }
}

impl<D: Domain> Round<D> {
    /// Adds additively shared elements; returns the part's index in the opened result.
    pub(crate) fn words(&mut self, share: D::Arith) -> usize {
        self.parts.push(Part::Words(share));
        self.parts.len() - 1
    }

    /// Adds additively shared elements to open without a MAC check (see [`Part::Unchecked`]); returns the
    /// part's index.
    pub(crate) fn unchecked(&mut self, share: D::Arith) -> usize {
        self.parts.push(Part::Unchecked(share));
        self.parts.len() - 1
    }

    /// Adds `nodes` XOR-shared bit vectors of `len` bits each; returns the part's index.
    pub(crate) fn bits(&mut self, share: D::Bits, nodes: usize, len: usize) -> usize {
        self.parts.push(Part::Bits { share, nodes, len });
        self.parts.len() - 1
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.parts.iter().map(Part::wire_len).sum());
        for part in &self.parts {
            match part {
                Part::Words(w) | Part::Unchecked(w) => D::encode(w, &mut out),
                Part::Bits { share, nodes, len } => {
                    bits::pack_nodes(D::bit_words(share), *nodes, *len, &mut out)
                }
            }
        }
        out
    }
}

impl<N: Net, D: Domain> Party<N, D> {
    /// Commits this round's deviation, if the party is an adversary and this is its round.
    fn deviate_in_round(&mut self, round: &mut Round<D>) -> Result<()> {
        let Some(a) = self.opening_deviation() else {
            return Ok(());
        };
        match a.kind {
            Deviation::FlipShare => match round.parts.first_mut() {
                Some(Part::Words(w) | Part::Unchecked(w)) => D::corrupt(w, 0, a.delta),
                Some(Part::Bits { share, .. }) => D::flip_bit(share, 0),
                None => {}
            },
            Deviation::BadMac => {
                match round.parts.iter_mut().find(|p| matches!(p, Part::Words(_))) {
                    Some(Part::Words(w)) => D::corrupt_mac(w, 0, a.delta),
                    _ => self.defer_deviation(a),
                }
            }
            Deviation::SkipRound => {
                // Silent from now on: send nothing, wait until the peers give up, then stop.
                let me = self.id();
                for peer in (0..self.parties()).filter(|&p| p != me) {
                    while self.net.recv(peer).is_ok() {}
                }
                return Err(ProtocolError::Deviated("stayed silent".into()));
            }
            Deviation::WrongTriple | Deviation::WrongOutput | Deviation::WrongProduct => {}
        }
        Ok(())
    }

    /// Opens every part of `round` in one communication round; results come in the parts' order, as words
    /// modulo 2^64 (ring elements) or packed bits.
    pub(crate) fn open_round(&mut self, mut round: Round<D>) -> Result<Vec<Vec<u64>>> {
        self.deviate_in_round(&mut round)?;
        let message = round.encode();
        let me = self.id();
        let peers: Vec<usize> = (0..self.parties()).filter(|&p| p != me).collect();
        let expected = message.len();
        // The last peer gets the buffer itself; the others a copy.
        if let Some((&last, others)) = peers.split_last() {
            for &peer in others {
                self.net.send(peer, message.clone())?;
            }
            self.net.send(last, message)?;
        }
        let mut received = Vec::with_capacity(peers.len());
        for &peer in &peers {
            let got = self.net.recv(peer)?;
            if got.len() != expected {
                return Err(ProtocolError::MessageLength {
                    from: peer,
                    got: got.len(),
                    expected,
                });
            }
            received.push(got);
        }
        let mut offset = 0;
        let mut opened = Vec::with_capacity(round.parts.len());
        let mut wire = Vec::new();
        for part in &round.parts {
            let size = part.wire_len();
            let chunks: Vec<&[u8]> = received.iter().map(|m| &m[offset..offset + size]).collect();
            offset += size;
            let value = match part {
                Part::Words(w) => {
                    let value = D::open(&mut self.state, w, &chunks);
                    if self.transcript.is_some() {
                        wire.extend(crate::ring::to_bytes(&value));
                    }
                    value
                }
                Part::Unchecked(w) => {
                    let value = D::open_unchecked(&mut self.state, w, &chunks);
                    if self.transcript.is_some() {
                        wire.extend(crate::ring::to_bytes(&value));
                    }
                    value
                }
                Part::Bits { share, nodes, len } => {
                    let mut words = D::bit_words(share).to_vec();
                    for chunk in &chunks {
                        bits::xor_assign(&mut words, &bits::unpack_nodes(chunk, *nodes, *len));
                    }
                    D::record_bits(&mut self.state, share, &words, *nodes, *len);
                    if self.transcript.is_some() {
                        bits::pack_nodes(&words, *nodes, *len, &mut wire);
                    }
                    words
                }
            };
            opened.push(value);
        }
        if let Some(transcript) = self.transcript.as_mut() {
            transcript.push(wire);
        }
        Ok(opened)
    }

    /// Reveals a shared vector to every party (one round).
    pub fn open(&mut self, share: &D::Arith) -> Result<Vec<u64>> {
        let mut round = Round::default();
        round.words(share.clone());
        let mut opened = self.open_round(round)?;
        Ok(opened.swap_remove(0))
    }
}
