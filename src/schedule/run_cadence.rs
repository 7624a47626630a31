//! When a continuous inference starts its next run, as plain logic: every N frames or when the
//! game asks, never more than K runs in flight, and, with a GPU budget per frame, no more often
//! than the last run's measured GPU time allows (a run of 3 ms under a 1 ms budget starts at
//! most every third frame), so that the average stays within the budget.

use std::time::Duration;

/// How often a continuous inference runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cadence {
    /// Every this many frames (1: every frame), as far as runs in flight and the budget allow.
    EveryFrames(u32),
    /// Only when the game asks ([`crate::ContinuousInference::run_now`]).
    OnDemand,
}

/// The decision state of one continuous inference.
#[derive(Clone, Debug)]
pub struct RunCadence {
    cadence: Cadence,
    max_in_flight: usize,
    gpu_per_frame: Option<Duration>,
    /// Frames since the last run started (or since the start).
    frames_since_run: u32,
    in_flight: usize,
    /// GPU time the budget has accumulated and not yet spent.
    credit: Duration,
    /// The last finished run's GPU time, where it was measured.
    last_gpu: Option<Duration>,
}

impl RunCadence {
    /// A cadence with at most `max_in_flight` runs in flight (at least one) and an optional GPU
    /// budget per frame.
    pub fn new(cadence: Cadence, max_in_flight: usize, gpu_per_frame: Option<Duration>) -> Self {
        let first_due = match cadence {
            Cadence::EveryFrames(n) => n.saturating_sub(1),
            Cadence::OnDemand => 0,
        };
        Self { cadence, max_in_flight: max_in_flight.max(1), gpu_per_frame, frames_since_run: first_due, in_flight: 0, credit: Duration::ZERO, last_gpu: None }
    }

    /// Takes new settings, keeping the runs in flight and the budget's credit.
    pub fn configure(&mut self, cadence: Cadence, max_in_flight: usize, gpu_per_frame: Option<Duration>) {
        self.cadence = cadence;
        self.max_in_flight = max_in_flight.max(1);
        self.gpu_per_frame = gpu_per_frame;
    }

    /// One frame has passed: whether a run starts now. `asked`: the game asked for one this
    /// frame (it still waits for room in flight and for the budget).
    pub fn frame(&mut self, asked: bool) -> bool {
        self.frames_since_run = self.frames_since_run.saturating_add(1);
        if let Some(budget) = self.gpu_per_frame {
            // At most what one run costs (or one frame's budget) is saved up.
            let cap = self.last_gpu.map_or(budget, |cost| cost.max(budget));
            self.credit = (self.credit + budget).min(cap);
        }
        let due = asked || matches!(self.cadence, Cadence::EveryFrames(n) if self.frames_since_run >= n.max(1));
        let affordable = match (self.gpu_per_frame, self.last_gpu) {
            (Some(_), Some(cost)) => self.credit >= cost,
            _ => true,
        };
        if !(due && self.in_flight < self.max_in_flight && affordable) {
            return false;
        }
        self.in_flight += 1;
        self.frames_since_run = 0;
        if let Some(cost) = self.last_gpu {
            self.credit = self.credit.saturating_sub(cost);
        }
        true
    }

    /// A run finished, having taken `gpu` of GPU time where that was measured.
    pub fn finished(&mut self, gpu: Option<Duration>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if gpu.is_some() {
            self.last_gpu = gpu;
        }
    }

    /// Runs started and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

#[cfg(test)]
#[path = "run_cadence_tests.rs"]
mod tests;
