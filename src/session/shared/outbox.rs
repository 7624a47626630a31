//! [`SharedOutbox`]: which players still need the latest value of each tensor this player
//! shares, sans IO. Latest wins: a value goes to a player only when no earlier value of the same
//! tensor is still on its way there; meanwhile newer values replace one another, and only the
//! newest follows once the one on its way is out. A tensor changed every frame therefore costs
//! each link at most one value in flight, whatever the frame rate.

use std::collections::{BTreeMap, BTreeSet};

use crate::net::PeerUuid;

/// A value due to a player: the tensor's name and the version to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueValue {
    /// The receiver.
    pub peer: PeerUuid,
    /// The shared tensor's name.
    pub name: String,
    /// The version to send (the newest).
    pub version: u64,
}

/// Per tensor and player, what was sent and what is on its way.
#[derive(Clone, Debug, Default)]
pub struct SharedOutbox {
    /// The newest version of every tensor shared now.
    latest: BTreeMap<String, u64>,
    /// The players to keep up to date.
    peers: BTreeSet<PeerUuid>,
    /// Per (player, name): the version on its way there.
    in_flight: BTreeMap<(PeerUuid, String), u64>,
    /// Per (player, name): the newest version that reached the wire for it.
    sent: BTreeMap<(PeerUuid, String), u64>,
}

impl SharedOutbox {
    /// The tensor `name` has a new value (or is shared for the first time): returns its version.
    pub fn changed(&mut self, name: &str) -> u64 {
        let version = self.latest.entry(name.to_owned()).or_insert(0);
        *version += 1;
        *version
    }

    /// The tensor `name` is no longer shared: nothing more of it is sent.
    pub fn withdrawn(&mut self, name: &str) {
        self.latest.remove(name);
    }

    /// A player joined: every tensor's newest value is due to it.
    pub fn peer_joined(&mut self, peer: PeerUuid) {
        self.peers.insert(peer);
    }

    /// A player left.
    pub fn peer_left(&mut self, peer: PeerUuid) {
        self.peers.remove(&peer);
        self.in_flight.retain(|(p, _), _| *p != peer);
        self.sent.retain(|(p, _), _| *p != peer);
    }

    /// `version` of `name` is on the wire to `peer`.
    pub fn sent(&mut self, peer: PeerUuid, name: &str, version: u64) {
        let key = (peer, name.to_owned());
        if self.in_flight.get(&key) == Some(&version) {
            self.in_flight.remove(&key);
        }
        let sent = self.sent.entry(key).or_insert(0);
        *sent = (*sent).max(version);
    }

    /// `version` of `name` could not be sent to `peer`: the newest is due again.
    pub fn failed(&mut self, peer: PeerUuid, name: &str, version: u64) {
        let key = (peer, name.to_owned());
        if self.in_flight.get(&key) == Some(&version) {
            self.in_flight.remove(&key);
        }
    }

    /// The values to send now, each marked as on its way: for every player and tensor, the
    /// newest version, where the player has not had it and no other is on its way.
    pub fn due(&mut self) -> Vec<DueValue> {
        let mut due = Vec::new();
        for &peer in &self.peers {
            for (name, &version) in &self.latest {
                let key = (peer, name.clone());
                let had = self.sent.get(&key).is_some_and(|&sent| sent >= version);
                if had || self.in_flight.contains_key(&key) {
                    continue;
                }
                self.in_flight.insert(key, version);
                due.push(DueValue { peer, name: name.clone(), version });
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: PeerUuid = PeerUuid([1; 16]);
    const B: PeerUuid = PeerUuid([2; 16]);

    fn due(peer: PeerUuid, name: &str, version: u64) -> DueValue {
        DueValue { peer, name: name.into(), version }
    }

    #[test]
    fn a_value_changed_every_frame_keeps_one_in_flight_per_player_and_the_newest_follows() {
        let mut outbox = SharedOutbox::default();
        outbox.peer_joined(A);
        outbox.changed("prediction");
        assert_eq!(outbox.due(), vec![due(A, "prediction", 1)]);
        // Three more frames change it while version 1 is still on its way: nothing is sent.
        for _ in 0..3 {
            outbox.changed("prediction");
            assert_eq!(outbox.due(), vec![]);
        }
        // Version 1 is out: only the newest, 4, follows; 2 and 3 are never sent.
        outbox.sent(A, "prediction", 1);
        assert_eq!(outbox.due(), vec![due(A, "prediction", 4)]);
        outbox.sent(A, "prediction", 4);
        assert_eq!(outbox.due(), vec![], "the player is up to date");
    }

    #[test]
    fn a_late_joiner_gets_every_current_value_and_a_withdrawn_one_is_not_sent() {
        let mut outbox = SharedOutbox::default();
        outbox.peer_joined(A);
        outbox.changed("prediction");
        outbox.changed("embedding");
        outbox.changed("embedding");
        for value in outbox.due() {
            outbox.sent(value.peer, &value.name, value.version);
        }
        outbox.withdrawn("embedding");
        outbox.peer_joined(B);
        assert_eq!(outbox.due(), vec![due(B, "prediction", 1)]);
    }

    #[test]
    fn a_failed_send_is_due_again_and_a_player_that_left_gets_nothing() {
        let mut outbox = SharedOutbox::default();
        outbox.peer_joined(A);
        outbox.peer_joined(B);
        outbox.changed("prediction");
        assert_eq!(outbox.due(), vec![due(A, "prediction", 1), due(B, "prediction", 1)]);
        outbox.failed(A, "prediction", 1);
        outbox.peer_left(B);
        outbox.changed("prediction");
        assert_eq!(outbox.due(), vec![due(A, "prediction", 2)]);
    }
}
