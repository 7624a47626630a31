//! [`FrameBudget`]: how much GPU time a player gives the others' stages, as plain logic: a
//! bucket of GPU time that fills at the budget's rate (say 2 ms per 16.7 ms frame) and holds at
//! most one frame's budget. A stage starts only while the bucket has time left, and is charged
//! the GPU time its stage took last time (a whole frame's budget the first time); once it ran,
//! the charge is corrected to what its timestamps measured. Stages beyond the budget wait, up to
//! a bound; past it they are refused, and the player that sent them runs them elsewhere.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bevy::platform::time::Instant;

/// What a served stage's cost is remembered by: its stage and batch.
pub type CostKey = (u16, usize);

/// What became of a stage offered to the budget.
#[derive(Debug, PartialEq)]
pub enum Admission<T> {
    /// It may start now; it was charged `charged` of GPU time.
    Start {
        /// The stage's job.
        job: T,
        /// What it was charged (its predicted GPU time).
        charged: Duration,
    },
    /// It waits for the bucket to fill ([`FrameBudget::release`]).
    Queued,
    /// Too many wait already: it is handed back.
    Refused(T),
}

/// A bucket of GPU time for the others' stages, and the stages waiting for it.
#[derive(Debug)]
pub struct FrameBudget<T> {
    per_frame: Duration,
    frame: Duration,
    max_waiting: usize,
    /// GPU time left, in nanoseconds (below zero after a stage that cost more than it was
    /// charged).
    credit: i128,
    refilled: Instant,
    costs: HashMap<CostKey, Duration>,
    waiting: VecDeque<(CostKey, T)>,
}

impl<T> FrameBudget<T> {
    /// A budget of `per_frame` GPU time every `frame`, with at most `max_waiting` stages
    /// waiting; it starts full.
    pub fn new(per_frame: Duration, frame: Duration, max_waiting: usize, now: Instant) -> Self {
        Self { per_frame, frame: frame.max(Duration::from_micros(1)), max_waiting, credit: per_frame.as_nanos() as i128, refilled: now, costs: HashMap::new(), waiting: VecDeque::new() }
    }

    /// The GPU time a stage of `key` is charged: what it took last time, or a whole frame's
    /// budget before it ever ran here.
    pub fn predicted(&self, key: CostKey) -> Duration {
        self.costs.get(&key).copied().unwrap_or(self.per_frame)
    }

    /// Stages waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_nanos() as i128;
        self.refilled = now;
        let (per_frame, frame) = (self.per_frame.as_nanos() as i128, self.frame.as_nanos() as i128);
        self.credit = (self.credit + elapsed * per_frame / frame).min(per_frame);
    }

    /// Offers a stage of `key`: it starts if nothing waits before it and the bucket has time
    /// left, else it waits (or is refused when `max_waiting` already wait).
    pub fn offer(&mut self, key: CostKey, job: T, now: Instant) -> Admission<T> {
        self.refill(now);
        if self.waiting.is_empty() && self.credit > 0 {
            let charged = self.predicted(key);
            self.credit -= charged.as_nanos() as i128;
            return Admission::Start { job, charged };
        }
        if self.waiting.len() >= self.max_waiting {
            return Admission::Refused(job);
        }
        self.waiting.push_back((key, job));
        Admission::Queued
    }

    /// The waiting stages whose turn has come, oldest first, each with its charge.
    pub fn release(&mut self, now: Instant) -> Vec<(T, Duration)> {
        self.refill(now);
        let mut started = Vec::new();
        while self.credit > 0 {
            let Some((key, job)) = self.waiting.pop_front() else { break };
            let charged = self.predicted(key);
            self.credit -= charged.as_nanos() as i128;
            started.push((job, charged));
        }
        started
    }

    /// A stage of `key` charged `charged` took `gpu` on the GPU: the bucket is corrected and
    /// the next stage of `key` is charged `gpu`.
    pub fn settle(&mut self, key: CostKey, charged: Duration, gpu: Duration) {
        self.credit = (self.credit + charged.as_nanos() as i128 - gpu.as_nanos() as i128).min(self.per_frame.as_nanos() as i128);
        self.costs.insert(key, gpu);
    }
}

#[cfg(test)]
#[path = "frame_budget_tests.rs"]
mod tests;
