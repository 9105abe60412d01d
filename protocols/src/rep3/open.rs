//! Revealing a shared vector: party `i` misses component `i + 2`, which party `i + 2 = i - 1` holds as its
//! own; so every party sends its own component to the next party (one round, one word per element).
//! Semi-honest: the value is revealed to all three, which is what opening means.

use crate::error::Result;
use crate::net::Net;

use super::{next_party, prev_party, Party, RepShare};

impl<N: Net> Party<N> {
    /// Reveals `x` to every party (one round, 8 bytes per element sent by each party).
    pub fn open(&mut self, x: &RepShare) -> Result<Vec<u64>> {
        self.refuse_unproven("unchecked opening")?;
        self.send(next_party(self.me), crate::ring::to_bytes(&x.own))?;
        let missing = self.recv_words(prev_party(self.me), x.len())?;
        Ok(x.own
            .iter()
            .zip(&x.next)
            .zip(&missing)
            .map(|((&a, &b), &c)| a.wrapping_add(b).wrapping_add(c))
            .collect())
    }
}
