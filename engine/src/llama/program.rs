//! A Llama step as a [`Program`] of the one party program ([`crate::session::PartySession`]): each
//! inference is one step of `items` positions after the positions this party's cache share holds, and
//! returns the logits of all of them. A generation job is a sequence of such inferences on one party: the
//! prompt's chunks, then one decode step per token (see [`StepShape::generation_requests`], the material's
//! order).
//!
//! Invariant: the cache share only grows, by exactly the positions of each step that succeeded; a failed
//! step fails the job (its cache is never used again).

use std::sync::Mutex;

use veil_protocols::domain::Domain;
use veil_protocols::material::Request;
use veil_protocols::net::Net;
use veil_protocols::semi2k::Party;

use super::private::{CacheShare, PrivateLlama, StepShape};
use crate::error::Result;
use crate::private::StepProfile;
use crate::session::Program;

/// One party's side of a conversation: the public model and this party's share of the cache.
pub struct CachedLlama<'m, D: Domain> {
    model: &'m PrivateLlama,
    /// Invariant: holds the keys and values of every position run so far (see the module doc).
    cache: Mutex<CacheShare<D::Arith>>,
}

impl<'m, D: Domain> CachedLlama<'m, D> {
    /// An empty conversation on `model`.
    pub fn new(model: &'m PrivateLlama) -> Self {
        Self {
            model,
            cache: Mutex::new(model.empty_cache()),
        }
    }

    /// Positions cached.
    pub fn cached(&self) -> usize {
        self.cache.lock().map_or(0, |c| c.len())
    }

    /// The public shape of the model's steps.
    pub fn shape(&self) -> StepShape {
        self.model.shape()
    }
}

impl<D: Domain> Program<D> for CachedLlama<'_, D> {
    fn input_len(&self, items: usize) -> usize {
        items * self.model.config().hidden
    }

    /// The material of the next step of `items` positions (it depends on the positions cached).
    fn requests(&self, items: usize) -> Vec<Request> {
        self.model.requests(self.cached(), items, items)
    }

    /// A step's material is expanded as it is consumed (the job's material is dealt for all its steps).
    fn expands_ahead(&self) -> bool {
        false
    }

    fn run<N: Net>(
        &self,
        party: &mut Party<N, D>,
        input: D::Arith,
        items: usize,
        profile: Option<&mut Vec<StepProfile>>,
    ) -> Result<D::Arith> {
        let mut cache = self.cache.lock().map_err(|_| {
            veil_protocols::ProtocolError::Committee("a cache lock was poisoned".into())
        })?;
        Ok(self
            .model
            .step(party, &mut cache, input, items, items, profile)?)
    }
}
