//! [`FrameBudget`]: a token bucket that caps how many frames a peer may make this player
//! authenticate per second, so that a flood costs a counter, not a MAC per frame.

use std::time::Duration;

use bevy::platform::time::Instant;

/// Frames a peer may still send now: refilled at `per_second`, holding at most one second's
/// worth, so that a burst (a large tensor's chunks) passes and a sustained flood does not.
#[derive(Clone, Debug)]
pub struct FrameBudget {
    per_second: u32,
    available: f64,
    refilled: Instant,
    /// Whether the last frame was over the budget: a flood is reported once, when it starts.
    limited: bool,
}

/// What the budget says about one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameAdmission {
    /// Within the budget: check and handle it.
    Admitted,
    /// Over the budget, the first frame of a flood: drop it and report it.
    FloodStarted,
    /// Over the budget, within a flood already reported: drop it.
    Flooding,
}

impl FrameBudget {
    /// A full budget of `per_second` frames per second.
    pub fn new(per_second: u32, now: Instant) -> Self {
        Self { per_second, available: per_second as f64, refilled: now, limited: false }
    }

    /// Takes one frame from the budget, if any is left at `now`.
    pub fn admit(&mut self, now: Instant) -> FrameAdmission {
        let elapsed = now.saturating_duration_since(self.refilled).min(Duration::from_secs(1));
        self.available = (self.available + elapsed.as_secs_f64() * self.per_second as f64).min(self.per_second as f64);
        self.refilled = now;
        if self.available >= 1.0 {
            self.available -= 1.0;
            self.limited = false;
            return FrameAdmission::Admitted;
        }
        match std::mem::replace(&mut self.limited, true) {
            false => FrameAdmission::FloodStarted,
            true => FrameAdmission::Flooding,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_one_second_passes_and_a_flood_is_cut_and_reported_once() {
        let start = Instant::now();
        let mut budget = FrameBudget::new(100, start);
        let admitted = (0..100).filter(|_| budget.admit(start) == FrameAdmission::Admitted).count();
        assert_eq!(admitted, 100);
        assert_eq!(budget.admit(start), FrameAdmission::FloodStarted);
        assert_eq!(budget.admit(start), FrameAdmission::Flooding);
        let later = start + Duration::from_millis(50);
        for _ in 0..5 {
            assert_eq!(budget.admit(later), FrameAdmission::Admitted, "50 ms refill 5 frames");
        }
        assert_eq!(budget.admit(later), FrameAdmission::FloodStarted, "a new flood is reported again");
    }

    #[test]
    fn a_long_silence_refills_no_more_than_one_second() {
        let start = Instant::now();
        let mut budget = FrameBudget::new(10, start);
        let later = start + Duration::from_secs(60);
        let admitted = (0..100).filter(|_| budget.admit(later) == FrameAdmission::Admitted).count();
        assert_eq!(admitted, 10);
    }
}
