//! [`EarlyParts`]: parts that arrived for collectives this player has not started yet, sans IO,
//! bounded in count, in bytes and in age, so that no member can make this player hold memory
//! for collectives that never come.

use std::time::Duration;

use bevy::platform::time::Instant;
use thiserror::Error;

use crate::net::{CollectiveTag, PeerUuid};
use crate::tensor::Tensor;

/// Parts kept at most, whatever their size.
pub const MAX_EARLY_PARTS: usize = 64;

/// Why a part of a collective was not taken.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PartRefusal {
    /// This player has already started (or finished) that collective's round.
    #[error("its round was started here already")]
    RoundStarted,
    /// [`MAX_EARLY_PARTS`] parts are already kept for collectives not started here.
    #[error("{limit} parts are already kept for collectives not started here")]
    TooManyParts {
        /// The limit.
        limit: usize,
    },
    /// Keeping it would take the early parts past their byte budget
    /// ([`crate::session::PeerSessionPlugin::max_early_collective_bytes`]).
    #[error("{bytes} bytes of early parts would exceed the budget of {limit}")]
    OverBudget {
        /// The bytes the early parts would take with it.
        bytes: usize,
        /// The budget.
        limit: usize,
    },
}

/// A part kept for a collective not started here: its (name, round), sender, tag and tensor.
pub type EarlyPart = ((String, u64), PeerUuid, CollectiveTag, Tensor);

/// The parts kept for collectives not started here yet.
#[derive(Debug)]
pub struct EarlyParts {
    max_bytes: usize,
    max_age: Duration,
    parts: Vec<(EarlyPart, Instant)>,
    bytes: usize,
}

impl EarlyParts {
    /// Keeps at most `max_bytes` of parts (and [`MAX_EARLY_PARTS`]), each for `max_age`.
    pub fn new(max_bytes: usize, max_age: Duration) -> Self {
        Self { max_bytes, max_age, parts: Vec::new(), bytes: 0 }
    }

    /// Keeps `part`, arrived `now`, or says why not (parts older than `max_age` go first).
    pub fn keep(&mut self, part: EarlyPart, now: Instant) -> Result<(), PartRefusal> {
        self.expire(now);
        if self.parts.len() >= MAX_EARLY_PARTS {
            return Err(PartRefusal::TooManyParts { limit: MAX_EARLY_PARTS });
        }
        let bytes = self.bytes.saturating_add(size_of_part(&part));
        if bytes > self.max_bytes {
            return Err(PartRefusal::OverBudget { bytes, limit: self.max_bytes });
        }
        self.bytes = bytes;
        self.parts.push((part, now));
        Ok(())
    }

    /// Takes the parts kept for `key` (its collective starts).
    pub fn take(&mut self, key: &(String, u64)) -> Vec<EarlyPart> {
        let (taken, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parts).into_iter().partition(|(part, _)| part.0 == *key);
        self.parts = kept;
        self.recount();
        taken.into_iter().map(|(part, _)| part).collect()
    }

    /// Drops the parts of `peer` (it left).
    pub fn forget(&mut self, peer: PeerUuid) {
        self.parts.retain(|(part, _)| part.1 != peer);
        self.recount();
    }

    /// Drops the parts kept longer than `max_age` (their collective would have timed out).
    pub fn expire(&mut self, now: Instant) {
        let max_age = self.max_age;
        self.parts.retain(|(_, at)| now.saturating_duration_since(*at) <= max_age);
        self.recount();
    }

    /// Parts kept, and their bytes.
    pub fn held(&self) -> (usize, usize) {
        (self.parts.len(), self.bytes)
    }

    fn recount(&mut self) {
        self.bytes = self.parts.iter().map(|(part, _)| size_of_part(part)).sum();
    }
}

/// The bytes a part's tensor holds here (as f32).
fn size_of_part(part: &EarlyPart) -> usize {
    part.3.len().saturating_mul(4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::CollectiveOp;

    const A: PeerUuid = PeerUuid([1; 16]);
    const B: PeerUuid = PeerUuid([2; 16]);

    fn part(from: PeerUuid, round: u64, values: usize) -> EarlyPart {
        let tag = CollectiveTag { op: CollectiveOp::AllGather, members: vec![A, B] };
        (("sum".to_string(), round), from, tag, Tensor::zeros(vec![values]))
    }

    #[test]
    fn early_parts_are_kept_within_a_byte_budget_and_a_count() {
        let now = Instant::now();
        let mut early = EarlyParts::new(1000, Duration::from_secs(10));
        assert_eq!(early.keep(part(A, 1, 200), now), Ok(()), "800 bytes");
        assert_eq!(early.keep(part(A, 2, 100), now), Err(PartRefusal::OverBudget { bytes: 1200, limit: 1000 }));
        assert_eq!(early.keep(part(B, 1, 50), now), Ok(()), "a smaller one still fits");
        assert_eq!(early.held(), (2, 1000));
        let mut many = EarlyParts::new(usize::MAX, Duration::from_secs(10));
        for round in 0..MAX_EARLY_PARTS as u64 {
            many.keep(part(A, round, 1), now).unwrap();
        }
        assert_eq!(many.keep(part(A, 999, 1), now), Err(PartRefusal::TooManyParts { limit: MAX_EARLY_PARTS }));
    }

    #[test]
    fn early_parts_expire_after_the_collective_timeout_and_free_their_bytes() {
        let now = Instant::now();
        let mut early = EarlyParts::new(1000, Duration::from_secs(10));
        early.keep(part(A, 1, 250), now).unwrap();
        assert_eq!(early.keep(part(A, 2, 250), now + Duration::from_secs(5)), Err(PartRefusal::OverBudget { bytes: 2000, limit: 1000 }));
        assert_eq!(early.keep(part(A, 2, 250), now + Duration::from_secs(11)), Ok(()), "the first is too old to keep");
        assert_eq!(early.take(&("sum".to_string(), 1)), vec![], "expired");
        assert_eq!(early.take(&("sum".to_string(), 2)).len(), 1);
        assert_eq!(early.held(), (0, 0));
        early.keep(part(B, 3, 10), now + Duration::from_secs(12)).unwrap();
        early.forget(B);
        assert_eq!(early.held(), (0, 0), "a player that left leaves nothing behind");
    }
}
