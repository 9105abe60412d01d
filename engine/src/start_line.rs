//! A start line for the parties of an in-process committee: after each party has prepared its material for
//! the next inference (the offline phase), they wait here so that every party's online clock starts at the
//! same moment. Without it, a party that finished preparing first would count the others' preparation as
//! online waiting.
//!
//! A party that leaves the run early (an error, an abort) abandons the line when its guard drops, and every
//! party waiting or arriving later gets an error instead of waiting forever; a wait also ends after a timeout.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use veil_protocols::ProtocolError;

#[derive(Default)]
struct Line {
    /// Parties at the line in the current generation.
    arrived: usize,
    /// Completed starts.
    generation: u64,
    /// Set when a party has left the run.
    abandoned: bool,
}

/// The shared line; see the module doc.
pub struct StartLine {
    parties: usize,
    timeout: Duration,
    line: Mutex<Line>,
    ready: Condvar,
}

impl StartLine {
    /// A line for `parties` parties; a wait gives up after `timeout`.
    pub fn new(parties: usize, timeout: Duration) -> Self {
        Self {
            parties,
            timeout,
            line: Mutex::new(Line::default()),
            ready: Condvar::new(),
        }
    }

    /// Waits until every party has arrived. Errors if a party abandoned the line or the wait timed out.
    pub fn wait(&self) -> Result<(), ProtocolError> {
        let mut line = self.line.lock().unwrap_or_else(PoisonError::into_inner);
        if line.abandoned {
            return Err(abandoned());
        }
        line.arrived += 1;
        if line.arrived == self.parties {
            line.arrived = 0;
            line.generation += 1;
            self.ready.notify_all();
            return Ok(());
        }
        let generation = line.generation;
        let deadline = Instant::now() + self.timeout;
        while line.generation == generation && !line.abandoned {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ProtocolError::Abandoned(format!(
                    "the other parties did not finish preparing within {:?}",
                    self.timeout
                )));
            }
            line = self
                .ready
                .wait_timeout(line, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        if line.generation == generation {
            return Err(abandoned());
        }
        Ok(())
    }

    /// A guard that abandons the line when dropped: hold it for as long as the party takes part.
    pub fn guard(&self) -> LeaveGuard<'_> {
        LeaveGuard(self)
    }

    fn abandon(&self) {
        let mut line = self.line.lock().unwrap_or_else(PoisonError::into_inner);
        line.abandoned = true;
        self.ready.notify_all();
    }
}

fn abandoned() -> ProtocolError {
    ProtocolError::Abandoned("another party left the run before the next inference".into())
}

/// Abandons its [`StartLine`] on drop (see [`StartLine::guard`]).
pub struct LeaveGuard<'a>(&'a StartLine);

impl Drop for LeaveGuard<'_> {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_party_passes_together_for_many_generations() {
        let line = StartLine::new(3, Duration::from_secs(10));
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..50 {
                        line.wait().expect("all parties arrive");
                    }
                });
            }
        });
    }

    #[test]
    fn a_party_that_leaves_releases_the_others_with_an_error() {
        let line = StartLine::new(3, Duration::from_secs(10));
        std::thread::scope(|s| {
            let waiter = s.spawn(|| line.wait());
            let leaver = s.spawn(|| {
                let _guard = line.guard();
            });
            leaver.join().expect("no panic");
            assert!(waiter.join().expect("no panic").is_err());
        });
        assert!(
            line.wait().is_err(),
            "a later arrival sees the abandoned line"
        );
    }

    #[test]
    fn a_wait_times_out_when_a_party_never_arrives() {
        let line = StartLine::new(2, Duration::from_millis(50));
        assert!(line.wait().is_err());
    }
}
