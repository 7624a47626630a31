//! A link's two lanes, and the replay guard each keeps.
//!
//! Control frames (key exchange, hellos, heartbeats, revocations, reports) travel on a data
//! channel of their own, which the transport makes unordered and reliable: SCTP sends unordered
//! data ahead of ordered data queued on the same association, so a heartbeat never waits behind
//! a megabyte of stage input, and the loss of one control frame does not hold back the next.
//! Tensor chunks travel on the ordered [`Lane::Bulk`].
//!
//! Each lane numbers its frames on its own: control sequences have the top bit set, bulk
//! sequences do not. A frame of one lane can never pass for the other's, and the seal's nonces
//! (bulk sequences) stay unique. Frames may arrive out of order within a lane (the control lane
//! is unordered), so each lane's [`ReplayGuard`] accepts any sequence it has not seen among the
//! last [`REPLAY_WINDOW`] (about 100 s of heartbeats).

use super::wire::FrameError;

/// How far behind the newest accepted sequence a frame may arrive and still be accepted once.
pub const REPLAY_WINDOW: u64 = 1024;

/// The top bit, set in every control sequence.
const CONTROL_BIT: u64 = 1 << 63;

/// Which of a link's two channels a frame travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Handshake, heartbeats, revocations and reports: small, sent ahead of bulk data, possibly
    /// out of order.
    Control,
    /// Tensor chunks, in order.
    Bulk,
}

impl Lane {
    /// The lane a frame numbered `sequence` was sent on.
    pub fn of_sequence(sequence: u64) -> Lane {
        if sequence & CONTROL_BIT != 0 { Lane::Control } else { Lane::Bulk }
    }

    /// The sequence before this lane's first (senders add one before each frame).
    pub fn base(self) -> u64 {
        match self {
            Lane::Control => CONTROL_BIT,
            Lane::Bulk => 0,
        }
    }
}

/// Rejects frames already accepted (a replayed or duplicated frame) and frames more than
/// [`REPLAY_WINDOW`] behind the newest one accepted, within one lane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayGuard {
    newest: Option<u64>,
    /// Bit `s % REPLAY_WINDOW`: sequence `s`, within the window, was accepted.
    seen: [u64; WORDS],
}

const WORDS: usize = (REPLAY_WINDOW / 64) as usize;

impl ReplayGuard {
    /// Accepts `sequence` if it has not been accepted before and is within the window.
    pub fn accept(&mut self, sequence: u64) -> Result<(), FrameError> {
        match self.newest {
            Some(newest) if sequence <= newest => {
                if newest - sequence >= REPLAY_WINDOW || self.is_seen(sequence) {
                    return Err(FrameError::Replay { got: sequence, last: newest });
                }
            }
            Some(newest) if sequence - newest < REPLAY_WINDOW => {
                // The window moves on: the slots of the sequences it takes in start empty.
                (newest + 1..sequence).for_each(|skipped| self.clear(skipped));
                self.newest = Some(sequence);
            }
            _ => (self.newest, self.seen) = (Some(sequence), [0; WORDS]),
        }
        let (word, bit) = Self::slot(sequence);
        self.seen[word] |= bit;
        Ok(())
    }

    fn slot(sequence: u64) -> (usize, u64) {
        let index = (sequence % REPLAY_WINDOW) as usize;
        (index / 64, 1 << (index % 64))
    }

    fn is_seen(&self, sequence: u64) -> bool {
        let (word, bit) = Self::slot(sequence);
        self.seen[word] & bit != 0
    }

    fn clear(&mut self, sequence: u64) {
        let (word, bit) = Self::slot(sequence);
        self.seen[word] &= !bit;
    }
}

/// One replay guard per lane, picked by the sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LaneGuards {
    control: ReplayGuard,
    bulk: ReplayGuard,
}

impl LaneGuards {
    /// Accepts `sequence` on its lane's guard.
    pub fn accept(&mut self, sequence: u64) -> Result<(), FrameError> {
        match Lane::of_sequence(sequence) {
            Lane::Control => self.control.accept(sequence),
            Lane::Bulk => self.bulk.accept(sequence),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_accepted_once_in_any_order_within_the_window_and_never_from_before_it() {
        let mut guard = ReplayGuard::default();
        for sequence in [5, 3, 4, 1, 2] {
            assert_eq!(guard.accept(sequence), Ok(()), "{sequence} arrives late but within the window");
        }
        for sequence in 1..=5 {
            assert_eq!(guard.accept(sequence), Err(FrameError::Replay { got: sequence, last: 5 }), "{sequence} again");
        }
        assert_eq!(guard.accept(5 + REPLAY_WINDOW), Ok(()));
        assert_eq!(guard.accept(6), Ok(()), "still within the window: never seen");
        assert_eq!(guard.accept(5), Err(FrameError::Replay { got: 5, last: 5 + REPLAY_WINDOW }), "fell out of the window");
        assert_eq!(guard.accept(5 + 3 * REPLAY_WINDOW), Ok(()));
        assert_eq!(guard.accept(7), Err(FrameError::Replay { got: 7, last: 5 + 3 * REPLAY_WINDOW }), "far behind, never seen, still refused");
        // A sequence skipped over as the window moves takes a slot an old one used: it is
        // still accepted when it comes.
        let mut guard = ReplayGuard::default();
        for sequence in [1, REPLAY_WINDOW, REPLAY_WINDOW + 2, REPLAY_WINDOW + 1] {
            assert_eq!(guard.accept(sequence), Ok(()), "{sequence}");
        }
        // Every sequence of a long run in order, each once: the slots the window reuses start
        // empty, and none of them lets an old frame back in.
        let mut guard = ReplayGuard::default();
        for sequence in 1..=5 * REPLAY_WINDOW {
            assert_eq!(guard.accept(sequence), Ok(()), "{sequence}");
            assert!(guard.accept(sequence).is_err(), "{sequence} twice");
            assert!(guard.accept(sequence.saturating_sub(REPLAY_WINDOW / 2).max(1)).is_err(), "{sequence}: one taken within the window, again");
            if sequence > REPLAY_WINDOW {
                assert!(guard.accept(sequence - REPLAY_WINDOW).is_err(), "{sequence}: one that left the window");
            }
        }
    }

    #[test]
    fn the_lanes_number_their_frames_apart_and_guard_them_apart() {
        assert_eq!(Lane::of_sequence(Lane::Control.base() + 1), Lane::Control);
        assert_eq!(Lane::of_sequence(Lane::Bulk.base() + 1), Lane::Bulk);
        let mut guards = LaneGuards::default();
        // Thousands of chunks ahead on the bulk lane leave a late control frame acceptable.
        assert_eq!(guards.accept(Lane::Bulk.base() + 5000), Ok(()));
        assert_eq!(guards.accept(Lane::Control.base() + 1), Ok(()));
        assert_eq!(guards.accept(Lane::Bulk.base() + 2), Err(FrameError::Replay { got: 2, last: 5000 }));
        assert!(guards.accept(Lane::Control.base() + 1).is_err(), "a control frame replayed");
    }
}
