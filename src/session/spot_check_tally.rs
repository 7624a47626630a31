//! [`SpotCheckTally`]: how each peer fared in this player's spot checks.

use std::collections::HashMap;

use crate::net::PeerUuid;

/// How one peer fared in this player's spot checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpotCheckTally {
    /// Checks that ran one of its stages again.
    pub checks: u64,
    /// Checks that blamed it.
    pub failures: u64,
    /// Times a check excluded it (once per session, unless it comes back as a new player).
    pub exclusions: u64,
}

/// Every peer's [`SpotCheckTally`].
#[derive(Clone, Debug, Default)]
pub(super) struct SpotCheckTallies(HashMap<PeerUuid, SpotCheckTally>);

impl SpotCheckTallies {
    /// A check ran stages of `checked` again and blamed `blamed`.
    pub fn record(&mut self, checked: &[PeerUuid], blamed: &[PeerUuid]) {
        for peer in checked {
            self.0.entry(*peer).or_default().checks += 1;
        }
        for peer in blamed {
            self.0.entry(*peer).or_default().failures += 1;
        }
    }

    /// A check excluded `peer`.
    pub fn excluded(&mut self, peer: PeerUuid) {
        self.0.entry(peer).or_default().exclusions += 1;
    }

    /// Every peer checked so far, in order of their ids.
    pub fn all(&self) -> Vec<(PeerUuid, SpotCheckTally)> {
        let mut all: Vec<(PeerUuid, SpotCheckTally)> = self.0.iter().map(|(peer, tally)| (*peer, *tally)).collect();
        all.sort_by_key(|(peer, _)| *peer);
        all
    }
}
