//! [`ReconnectPolicy`]: when the transport rebuilds a socket whose connections never came up.

use std::time::Duration;

use bevy::platform::time::Instant;

use super::link_events::SessionEvent;

/// When to rebuild the transport: matchbox's connection setup occasionally hangs, so while fewer
/// than the expected peers have become trusted, a rebuild is due once none has for a while. Only
/// the initial connection is retried: once every expected peer was trusted, a missing one is a
/// lost peer, handled by the scheduler, not a stalled socket.
#[derive(Clone, Debug)]
pub struct ReconnectPolicy {
    /// Peers to wait for (0: no expectation, never rebuild).
    pub expected_peers: usize,
    /// How long without a new trusted peer before a rebuild.
    pub reconnect_after: Duration,
    last_progress: Instant,
    reached_expected: bool,
    attempts: u32,
}

impl ReconnectPolicy {
    /// Starts counting from `now`.
    pub fn new(expected_peers: usize, reconnect_after: Duration, now: Instant) -> Self {
        Self { expected_peers, reconnect_after, last_progress: now, reached_expected: false, attempts: 0 }
    }

    /// Takes this frame's events and the number of trusted peers; returns whether to rebuild
    /// the transport now (and then counts the attempt and starts waiting again).
    pub fn rebuild_due(&mut self, events: &[SessionEvent], trusted: usize, now: Instant) -> bool {
        if events.iter().any(|e| matches!(e, SessionEvent::PeerTrusted { .. })) {
            self.last_progress = now;
        }
        self.reached_expected |= trusted >= self.expected_peers;
        if self.reached_expected || now - self.last_progress <= self.reconnect_after {
            return false;
        }
        self.rebuilt(now);
        true
    }

    /// Counts a rebuild (due, or forced by a transport error) and starts waiting again.
    pub fn rebuilt(&mut self, now: Instant) -> u32 {
        self.attempts += 1;
        self.last_progress = now;
        self.reached_expected = false;
        self.attempts
    }

    /// Rebuilds so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}
