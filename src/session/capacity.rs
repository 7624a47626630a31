//! [`Capacity`]: how fast each executor runs stage work, measured by the player that asks from
//! the stages it gets back, as plain logic. A peer's own word (the calibration time in its
//! hello) is only the prior: every finished request replaces it bit by bit with what this
//! player saw.
//!
//! What counts for a stage is its time as this player saw it: a local stage's run (queue and
//! GPU), and for a remote hand-over the whole span from sending its input to its output being
//! back, split over the stages it covers by their reported runs (the transfers, which the
//! reports cannot hide, are shared equally). A peer that under-reports its runs only moves time
//! onto the other stages of its own chain; a peer alone on a hand-over is measured by the
//! requester's clock alone.

use std::collections::HashMap;
use std::time::Duration;

use crate::schedule::stage_record::{Executor, StageRecord};

/// How fast one executor runs stage work, as measured (or, before any work came back, as its
/// calibration claims).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeasuredSpeed {
    /// The executor.
    pub executor: Executor,
    /// Floating-point operations per second of stage work, transfers included.
    pub flops_per_s: f64,
    /// Stage runs measured so far (0: the speed is the calibration prior).
    pub samples: u32,
    /// Its part of the stage work done recently (FLOPs, decayed), between 0 and 1.
    pub share: f64,
}

/// One executor's smoothed time per FLOP, its prior and its recent work.
#[derive(Clone, Copy, Debug, Default)]
struct Estimate {
    /// Seconds per FLOP as measured, once any work came back.
    measured: Option<f64>,
    /// Seconds per FLOP its calibration claims.
    prior: Option<f64>,
    samples: u32,
    work: f64,
}

/// The measured speed of every executor this player has given work to or heard a prior for.
#[derive(Clone, Debug)]
pub struct Capacity {
    smoothing: f64,
    decay: f64,
    estimates: HashMap<Executor, Estimate>,
    /// The estimates of executors that left, so that one that comes back (a reconnection)
    /// finds what was measured, and no fresh prior.
    departed: HashMap<Executor, Estimate>,
}

/// How many executors that left are remembered (beyond it, one of them is forgotten to make
/// room: a player cycling through new peer ids is not one this table can follow anyway).
const MAX_DEPARTED: usize = 256;

impl Default for Capacity {
    /// Each measurement moves the estimate a fifth of the way; recent work halves in weight
    /// every ~35 stage runs.
    fn default() -> Self {
        Self::new(0.2, 0.98)
    }
}

impl Capacity {
    /// A capacity table where a measurement moves an executor's estimate by `smoothing` of the
    /// difference (0 < smoothing <= 1) and past work weighs `decay` per stage run measured.
    pub fn new(smoothing: f64, decay: f64) -> Self {
        Self { smoothing: smoothing.clamp(f64::MIN_POSITIVE, 1.0), decay: decay.clamp(0.0, 1.0), estimates: HashMap::new(), departed: HashMap::new() }
    }

    /// Sets `executor`'s prior: it ran `flops` in `took` when it calibrated (ignored when either
    /// is zero). Until its own work is measured, its speed is this prior scaled the way this
    /// player's own calibration compares with its own measured speed: calibrations include
    /// one-off costs (compiling kernels), so only their ratios are believed, and only until
    /// work comes back. An executor that left and comes back gets what was measured of it
    /// before, and no prior: a claim is believed once, not once per reconnection.
    pub fn set_prior(&mut self, executor: Executor, flops: u64, took: Duration) {
        if let Some(before) = self.departed.remove(&executor) {
            self.estimates.insert(executor, Estimate { prior: None, work: 0.0, ..before });
            return;
        }
        if let Some(prior) = per_flop(flops, took) {
            self.estimates.entry(executor).or_default().prior = Some(prior);
        }
    }

    /// `executor` ran `flops` of stage work in `took`, as this player saw it.
    pub fn observe(&mut self, executor: Executor, flops: u64, took: Duration) {
        let Some(observed) = per_flop(flops, took) else { return };
        for estimate in self.estimates.values_mut() {
            estimate.work *= self.decay;
        }
        let smoothing = self.smoothing;
        let estimate = self.estimates.entry(executor).or_default();
        estimate.measured = Some(match estimate.measured {
            None => observed,
            Some(before) => before + smoothing * (observed - before),
        });
        estimate.samples += 1;
        estimate.work += flops as f64;
    }

    /// `executor` held `flops` of stage work for `waited` without an answer before another
    /// player's copy of it came back (see [`super::pipeline::StealPolicy`]): a lower bound on
    /// its time. Its estimate moves towards it where it is slower than the estimate, as a
    /// measurement would; the work counts for nothing in its share.
    pub fn observe_at_least(&mut self, executor: Executor, flops: u64, waited: Duration) {
        let Some(observed) = per_flop(flops, waited) else { return };
        let current = self.seconds_per_flop(executor);
        if current.is_some_and(|current| current >= observed) {
            return;
        }
        let smoothing = self.smoothing;
        let estimate = self.estimates.entry(executor).or_default();
        estimate.measured = Some(match current {
            None => observed,
            Some(before) => before + smoothing * (observed - before),
        });
        estimate.samples += 1;
    }

    /// A chain that held `stages` (each stage's executor and work) for `waited` without an
    /// answer was outpaced by a copy: one of its members stalled, and the others are not to
    /// blame. The member predicted to take longest (or one never measured) is the straggler:
    /// its work took at least `waited` less the others' predicted time
    /// ([`Self::observe_at_least`]); the others' estimates are kept.
    pub fn observe_outpaced(&mut self, stages: &[(Executor, u64)], waited: Duration) {
        let mut members: Vec<(Executor, u64)> = Vec::new();
        for &(executor, flops) in stages {
            match members.iter_mut().find(|(e, _)| *e == executor) {
                Some((_, work)) => *work += flops,
                None => members.push((executor, flops)),
            }
        }
        let predicted = |(executor, flops): (Executor, u64)| self.seconds_per_flop(executor).map(|s| Duration::from_secs_f64(s * flops as f64));
        let blamed = members.iter().copied().max_by_key(|&member| (predicted(member).is_none(), predicted(member)));
        let Some(blamed) = blamed else { return };
        let others: Duration = members.iter().filter(|m| m.0 != blamed.0).filter_map(|&m| predicted(m)).sum();
        self.observe_at_least(blamed.0, blamed.1, waited.saturating_sub(others));
    }

    /// `executor` let a hand-over time out: its speed is halved, so that it gets less work
    /// until it proves faster.
    pub fn observe_timeout(&mut self, executor: Executor) {
        let Some(seconds_per_flop) = self.seconds_per_flop(executor) else { return };
        let estimate = self.estimates.entry(executor).or_default();
        estimate.measured = Some(seconds_per_flop * 2.0);
        estimate.samples = estimate.samples.max(1);
    }

    /// `executor` left: it is no longer listed, and what was measured of it is kept for when
    /// it comes back ([`Self::set_prior`]).
    pub fn forget(&mut self, executor: Executor) {
        if let Some(estimate) = self.estimates.remove(&executor) {
            if self.departed.len() >= MAX_DEPARTED
                && let Some(&oldest) = self.departed.keys().next()
            {
                self.departed.remove(&oldest);
            }
            self.departed.insert(executor, estimate);
        }
    }

    fn seconds_per_flop(&self, executor: Executor) -> Option<f64> {
        let estimate = self.estimates.get(&executor)?;
        if let Some(measured) = estimate.measured {
            return Some(measured);
        }
        let prior = estimate.prior?;
        match self.estimates.get(&Executor::Local) {
            Some(Estimate { measured: Some(own_measured), prior: Some(own_prior), .. }) => Some(prior * own_measured / own_prior),
            _ => Some(prior),
        }
    }

    /// Notes every stage of a finished request: `flops[s]` is stage `s`'s work at the
    /// request's batch.
    pub fn observe_request(&mut self, records: &[StageRecord], flops: &[u64]) {
        for (executor, work, took) in stage_times(records, flops) {
            self.observe(executor, work, took);
        }
    }

    /// `executor`'s speed (FLOP/s), if known.
    pub fn speed(&self, executor: Executor) -> Option<f64> {
        self.seconds_per_flop(executor).map(|s| 1.0 / s)
    }

    /// Every known executor's speed and share, local first, then peers by id.
    pub fn speeds(&self) -> Vec<MeasuredSpeed> {
        let total: f64 = self.estimates.values().map(|e| e.work).sum();
        let mut speeds: Vec<MeasuredSpeed> = self
            .estimates
            .iter()
            .filter_map(|(&executor, e)| {
                Some(MeasuredSpeed {
                    executor,
                    flops_per_s: self.speed(executor)?,
                    samples: e.samples,
                    share: if total > 0.0 { e.work / total } else { 0.0 },
                })
            })
            .collect();
        speeds.sort_by_key(|s| executor_order(s.executor));
        speeds
    }
}

/// Local first, then peers by id.
pub(crate) fn executor_order(executor: Executor) -> (u8, [u8; 16]) {
    match executor {
        Executor::Local => (0, [0; 16]),
        Executor::Peer(peer) => (1, peer.0),
    }
}

fn per_flop(flops: u64, took: Duration) -> Option<f64> {
    (flops > 0 && !took.is_zero()).then(|| took.as_secs_f64() / flops as f64)
}

/// What each stage of a finished request cost its executor, as this player saw it: a local
/// stage its run; the stages of a remote hand-over the hand-over's span, each its reported run
/// plus an equal part of the rest (or an equal part of the span where a run went unreported).
pub fn stage_times(records: &[StageRecord], flops: &[u64]) -> Vec<(Executor, u64, Duration)> {
    let work = |s: usize| flops.get(s).copied().unwrap_or(0);
    let mut times = Vec::with_capacity(records.len());
    let mut i = 0;
    while i < records.len() {
        let record = &records[i];
        if record.executor == Executor::Local {
            times.push((Executor::Local, work(record.stage), record.hop.run.unwrap_or(record.duration)));
            i += 1;
            continue;
        }
        let chain = &records[i..(i + record.span.max(1)).min(records.len())];
        let span = record.duration;
        let runs: Option<Vec<Duration>> = chain.iter().map(|r| r.hop.run.map(|run| run.min(span))).collect();
        let n = chain.len() as u32;
        match runs {
            Some(runs) if runs.iter().sum::<Duration>() <= span => {
                let rest = (span - runs.iter().sum::<Duration>()) / n;
                times.extend(chain.iter().zip(runs).map(|(r, run)| (r.executor, work(r.stage), run + rest)));
            }
            _ => times.extend(chain.iter().map(|r| (r.executor, work(r.stage), span / n))),
        }
        i += chain.len();
    }
    times
}

#[cfg(test)]
#[path = "capacity_tests.rs"]
mod tests;
