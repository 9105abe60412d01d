//! Opening shared values: one round in which every party broadcasts its shares and sums (or XORs) what it
//! receives. Several values can be opened in the same round.
//!
//! Every message's length is known in advance from public shapes; a message of any other length is rejected
//! before it is read.

use crate::bits;
use crate::error::{ProtocolError, Result};
use crate::net::Net;
use crate::ring;

use super::Party;

/// One value to open in a round.
#[derive(Clone)]
enum Part {
    /// Additively shared ring elements.
    Words(Vec<u64>),
    /// XOR-shared bit vectors: `nodes` vectors of `len` bits, each in `words_for(len)` words.
    Bits {
        words: Vec<u64>,
        nodes: usize,
        len: usize,
    },
}

impl Part {
    fn wire_len(&self) -> usize {
        match self {
            Part::Words(w) => w.len() * 8,
            Part::Bits { nodes, len, .. } => (nodes * len).div_ceil(8),
        }
    }
}

/// The values to open together in one round.
#[derive(Default)]
pub(crate) struct Round {
    parts: Vec<Part>,
}

impl Round {
    /// Adds additively shared elements; returns the part's index in the opened result.
    pub(crate) fn words(&mut self, share: Vec<u64>) -> usize {
        self.parts.push(Part::Words(share));
        self.parts.len() - 1
    }

    /// Adds `nodes` XOR-shared bit vectors of `len` bits each; returns the part's index.
    pub(crate) fn bits(&mut self, share: Vec<u64>, nodes: usize, len: usize) -> usize {
        self.parts.push(Part::Bits {
            words: share,
            nodes,
            len,
        });
        self.parts.len() - 1
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.parts.iter().map(Part::wire_len).sum());
        for part in &self.parts {
            match part {
                Part::Words(w) => out.extend_from_slice(&ring::to_bytes(w)),
                Part::Bits { words, nodes, len } => bits::pack_nodes(words, *nodes, *len, &mut out),
            }
        }
        out
    }
}

impl<N: Net> Party<N> {
    /// Opens every part of `round` in one communication round; results come in the parts' order.
    pub(crate) fn open_round(&mut self, round: Round) -> Result<Vec<Vec<u64>>> {
        let message = round.encode();
        let me = self.id();
        for peer in (0..self.parties()).filter(|&p| p != me) {
            self.net.send(peer, message.clone())?;
        }
        let mut opened = round.parts;
        for peer in (0..self.parties()).filter(|&p| p != me) {
            let received = self.net.recv(peer)?;
            if received.len() != message.len() {
                return Err(ProtocolError::MessageLength {
                    from: peer,
                    got: received.len(),
                    expected: message.len(),
                });
            }
            let mut offset = 0;
            for part in opened.iter_mut() {
                let size = part.wire_len();
                let chunk = &received[offset..offset + size];
                offset += size;
                match part {
                    Part::Words(w) => {
                        let theirs =
                            ring::from_bytes(chunk).ok_or(ProtocolError::MessageLength {
                                from: peer,
                                got: chunk.len(),
                                expected: w.len() * 8,
                            })?;
                        ring::add_assign(w, &theirs);
                    }
                    Part::Bits { words, nodes, len } => {
                        bits::xor_assign(words, &bits::unpack_nodes(chunk, *nodes, *len));
                    }
                }
            }
        }
        if let Some(transcript) = self.transcript.as_mut() {
            transcript.push(
                Round {
                    parts: opened.clone(),
                }
                .encode(),
            );
        }
        Ok(opened
            .into_iter()
            .map(|p| match p {
                Part::Words(w) | Part::Bits { words: w, .. } => w,
            })
            .collect())
    }

    /// Reveals a shared vector to every party (one round).
    pub fn open(&mut self, share: &[u64]) -> Result<Vec<u64>> {
        let mut round = Round::default();
        round.words(share.to_vec());
        let mut opened = self.open_round(round)?;
        Ok(opened.swap_remove(0))
    }
}
