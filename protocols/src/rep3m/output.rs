//! Output release: after a passed check, each party hands the client both of its components, so the
//! client holds every component from both of its holders; it accepts the output only if the two copies of
//! each component agree (at least one holder is honest, so a deviating party's wrong component never
//! matches).

use crate::adversary::Deviation;
use crate::error::{ProtocolError, Result};
use crate::net::Net;
use crate::rep3::RepShare;

use super::Party;

impl<N: Net> Party<N> {
    /// Runs the check ([`Self::verify`]) and, if it passes, returns this party's share of `y` for the
    /// client (both components). Fails, releasing nothing, if the check fails.
    pub fn release(&mut self, y: &RepShare) -> Result<RepShare> {
        self.verify()?;
        let mut out = y.clone();
        if let Some(a) = self.adversary.filter(|a| a.kind == Deviation::WrongOutput) {
            let len = out.own.len();
            if len > 0 {
                let w = &mut out.own[a.at % len];
                *w = w.wrapping_add(a.delta);
            }
        }
        Ok(out)
    }
}

/// The client's side: the output from the three parties' released shares (party `i`'s at index `i`), or
/// [`ProtocolError::Verification`] if any component's two copies differ or the lengths disagree.
pub fn reconstruct_output(shares: &[RepShare; 3]) -> Result<Vec<u64>> {
    RepShare::reconstruct(shares).ok_or_else(|| {
        ProtocolError::Verification(
            "the parties' output shares disagree: a component's two holders sent different values"
                .into(),
        )
    })
}
