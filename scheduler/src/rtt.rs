//! Round-trip times between nodes: a sparse map of measured RTTs, and per-region-pair estimates for every
//! pair that has no measurement.
//!
//! A node's report is a claim: one end alone could report near-zero RTTs to make itself and its friends look
//! close. So a pair counts as measured only when **both ends have reported it**, and its value is the
//! **larger** of the two reports (a node can make a link look slower, never faster than its peer says).
//!
//! Invariants: `peers[a]` holds the RTTs node `a` reported, sorted by peer, at most [`MAX_PEERS`] entries;
//! `measured(a, b) == measured(b, a)`, and it is `Some` only when `a` reported `b` and `b` reported `a`.
//! Region estimates are symmetric: configured values win; otherwise the running mean of the pairs measured
//! (both ends) between the two regions; otherwise the intra/inter-region defaults.

use serde::{Deserialize, Serialize};

/// The most measured peers kept per node; when full, a new peer replaces the slowest one kept (a slow link is
/// the one the region estimate describes best, and the least likely to be chosen anyway).
pub const MAX_PEERS: usize = 64;

/// Sparse reported RTTs, in microseconds, indexed by the reporting node's index.
#[derive(Clone, Debug, Default)]
pub struct RttMap {
    peers: Vec<Vec<(u32, u32)>>,
}

impl RttMap {
    /// Makes room for node index `n - 1`.
    pub fn ensure(&mut self, n: usize) {
        if self.peers.len() < n {
            self.peers.resize_with(n, Vec::new);
        }
    }

    fn set_one(&mut self, a: u32, b: u32, rtt_us: u32) {
        let list = &mut self.peers[a as usize];
        match list.binary_search_by_key(&b, |&(p, _)| p) {
            Ok(i) => list[i].1 = rtt_us,
            Err(i) => {
                if list.len() < MAX_PEERS {
                    list.insert(i, (b, rtt_us));
                } else if let Some((worst, &(_, w))) =
                    list.iter().enumerate().max_by_key(|(_, &(_, r))| r)
                {
                    if rtt_us < w {
                        list.remove(worst);
                        let j = list
                            .binary_search_by_key(&b, |&(p, _)| p)
                            .unwrap_or_else(|j| j);
                        list.insert(j, (b, rtt_us));
                    }
                }
            }
        }
    }

    /// Records `a`'s report of its RTT to `b` (both must be `< n` after [`RttMap::ensure`]). Returns the
    /// pair's measured RTT if `b` has reported `a` too (the larger of the two reports).
    pub fn report(&mut self, a: u32, b: u32, rtt_us: u32) -> Option<u32> {
        if a == b {
            return None;
        }
        self.set_one(a, b, rtt_us);
        self.measured(a, b)
    }

    /// Restores a persisted report of `a` (see [`RttMap::peers_of`]).
    pub fn restore(&mut self, a: u32, b: u32, rtt_us: u32) {
        if a != b {
            self.set_one(a, b, rtt_us);
        }
    }

    /// What `a` reported about `b`, if anything.
    #[inline]
    fn reported(&self, a: u32, b: u32) -> Option<u32> {
        let list = self.peers.get(a as usize)?;
        list.binary_search_by_key(&b, |&(p, _)| p)
            .ok()
            .map(|i| list[i].1)
    }

    /// The measured RTT between `a` and `b`: the larger of the two ends' reports, if both reported.
    #[inline]
    pub fn measured(&self, a: u32, b: u32) -> Option<u32> {
        Some(self.reported(a, b)?.max(self.reported(b, a)?))
    }

    /// The reports of `a` (one end each: see [`RttMap::measured`] for what counts).
    pub fn peers_of(&self, a: u32) -> &[(u32, u32)] {
        self.peers.get(a as usize).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Pairs measured (both ends reported), each counted once.
    pub fn len(&self) -> usize {
        self.peers
            .iter()
            .enumerate()
            .map(|(a, list)| {
                list.iter()
                    .filter(|&&(b, _)| self.reported(b, a as u32).is_some())
                    .count()
            })
            .sum::<usize>()
            / 2
    }

    /// True when no pair is measured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One region pair's estimate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RegionPair {
    /// A value set by the operator of the coordinator, in microseconds (wins over measurements).
    pub configured_us: Option<u32>,
    /// Sum of measured RTTs between the two regions, microseconds.
    pub measured_sum_us: f64,
    /// Number of measurements summed.
    pub measured_count: u64,
}

/// RTT estimates between regions (dense, symmetric, indexed by interned region id).
#[derive(Clone, Debug, Default)]
pub struct RegionRtt {
    n: usize,
    pairs: Vec<RegionPair>,
    /// The cached estimate of every pair, kept in step with `pairs`.
    cache: Vec<u32>,
    intra_us: u32,
    inter_us: u32,
}

impl RegionRtt {
    /// An empty table with the given defaults.
    pub fn new(intra_us: u32, inter_us: u32) -> RegionRtt {
        RegionRtt {
            n: 0,
            pairs: Vec::new(),
            cache: Vec::new(),
            intra_us,
            inter_us,
        }
    }

    /// Grows the table to `n` regions.
    pub fn ensure(&mut self, n: usize) {
        if n <= self.n {
            return;
        }
        let mut pairs = vec![RegionPair::default(); n * n];
        for a in 0..self.n {
            for b in 0..self.n {
                pairs[a * n + b] = self.pairs[a * self.n + b];
            }
        }
        self.n = n;
        self.pairs = pairs;
        self.cache = vec![0; n * n];
        for a in 0..n {
            for b in 0..n {
                self.refresh(a, b);
            }
        }
    }

    fn refresh(&mut self, a: usize, b: usize) {
        let p = self.pairs[a * self.n + b];
        let v = if let Some(c) = p.configured_us {
            c
        } else if p.measured_count > 0 {
            (p.measured_sum_us / p.measured_count as f64)
                .round()
                .clamp(0.0, u32::MAX as f64) as u32
        } else if a == b {
            self.intra_us
        } else {
            self.inter_us
        };
        self.cache[a * self.n + b] = v;
    }

    /// Sets an estimate by hand (both directions).
    pub fn configure(&mut self, a: usize, b: usize, rtt_us: u32) {
        self.ensure(a.max(b) + 1);
        for (x, y) in [(a, b), (b, a)] {
            self.pairs[x * self.n + y].configured_us = Some(rtt_us);
            self.refresh(x, y);
        }
    }

    /// Folds one measurement between a node of region `a` and one of region `b` into the mean.
    pub fn observe(&mut self, a: usize, b: usize, rtt_us: u32) {
        self.ensure(a.max(b) + 1);
        let mut pairs = [(a, b), (b, a)];
        let count = if a == b { 1 } else { 2 };
        for &mut (x, y) in &mut pairs[..count] {
            let p = &mut self.pairs[x * self.n + y];
            p.measured_sum_us += f64::from(rtt_us);
            p.measured_count += 1;
            self.refresh(x, y);
        }
    }

    /// The estimate between regions `a` and `b` (the defaults for unknown regions).
    #[inline]
    pub fn estimate(&self, a: usize, b: usize) -> u32 {
        if a < self.n && b < self.n {
            self.cache[a * self.n + b]
        } else if a == b {
            self.intra_us
        } else {
            self.inter_us
        }
    }

    /// Every pair's raw state, row-major over `regions()` x `regions()`, for persistence.
    pub fn pairs(&self) -> &[RegionPair] {
        &self.pairs
    }

    /// Number of regions in the table.
    pub fn regions(&self) -> usize {
        self.n
    }

    /// Rebuilds a table from [`RegionRtt::pairs`] (ignored if the length is not `n * n`).
    pub fn from_pairs(intra_us: u32, inter_us: u32, n: usize, pairs: Vec<RegionPair>) -> RegionRtt {
        let mut t = RegionRtt::new(intra_us, inter_us);
        t.ensure(n);
        if pairs.len() == n * n {
            t.pairs = pairs;
            for a in 0..n {
                for b in 0..n {
                    t.refresh(a, b);
                }
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_measured_only_once_both_ends_reported_and_at_the_larger_report() {
        let mut map = RttMap::default();
        map.ensure(3);
        assert_eq!(map.report(0, 1, 5), None, "one end alone");
        assert_eq!(map.measured(1, 0), None);
        assert_eq!(map.len(), 0);
        assert_eq!(
            map.report(1, 0, 40_000),
            Some(40_000),
            "the larger of 5 and 40 000"
        );
        assert_eq!(map.measured(0, 1), Some(40_000));
        assert_eq!(map.measured(1, 0), Some(40_000));
        // The pair is never below either end's report: one end claiming a fast link does not make it one.
        assert_eq!(
            map.report(1, 0, 10),
            Some(10),
            "both ends now claim 5 and 10"
        );
        assert_eq!(map.report(0, 1, 30_000), Some(30_000));
        assert_eq!(map.len(), 1);
        assert_eq!(map.report(2, 2, 1), None, "self pairs are ignored");
    }
}
