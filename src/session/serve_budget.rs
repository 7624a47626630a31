//! The frame budget of a serving player: the others' stages start on this GPU only while
//! [`FrameBudget`] has GPU time left for them; the rest wait for the next frames, and past a
//! bound are handed back. The transport's handler offers each stage, a main-world system
//! releases the waiting ones every frame, and each stage's reply settles what it really took.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bevy::platform::time::Instant;
use bevy::prelude::Resource;
use crossbeam_channel::Sender;

use super::state::lock;
use crate::job::{JobOutcome, StageJob};
use crate::schedule::frame_budget::{Admission, CostKey, FrameBudget};

/// How much GPU time a player gives the others' stages (see
/// [`super::PeerSessionPlugin::serve_budget`]): `gpu_per_frame` of every `frame`, at most one
/// frame's worth at once. A stage is charged what the same stage took here last time; a stage
/// that takes longer than its charge is paid back from the next frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeBudget {
    /// GPU time per frame for the others' stages (e.g. 2 ms).
    pub gpu_per_frame: Duration,
    /// The frame the budget is per (e.g. 1/60 s for a 60 fps game).
    pub frame: Duration,
    /// Stages that may wait for the budget; one more is handed back to its owner.
    pub max_waiting: usize,
}

impl ServeBudget {
    /// `gpu_per_frame` of every 1/60 s, with up to 16 stages waiting.
    pub fn per_frame_at_60_fps(gpu_per_frame: Duration) -> Self {
        Self { gpu_per_frame, frame: Duration::from_secs(1) / 60, max_waiting: 16 }
    }
}

/// What a serving player's budget let through so far, for the overlay, logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ServeBudgetReport {
    /// Stages that ran.
    pub stages: u64,
    /// Their GPU time together (their timestamps' span where the GPU writes them, else the
    /// time from their start to their read-back).
    pub gpu: Duration,
    /// The GPU time of the longest of them.
    pub longest: Duration,
    /// From the first one's start to the last one's read-back.
    pub span: Duration,
    /// Stages that had to wait for a later frame.
    pub waited: u64,
    /// Stages handed back because too many waited.
    pub handed_back: u64,
}

/// A stage waiting for the budget, with where its charge is written once it starts.
pub(super) struct GatedStage {
    job: StageJob,
    charge: Arc<AtomicU64>,
}

/// A serving player's budget in front of its GPU, shared by the transport's handler, the
/// stages' replies and the system that releases waiting stages each frame; a resource while
/// [`super::PeerSessionPlugin::serve_budget`] is set, for its [`BudgetGate::report`].
#[derive(Clone, Resource)]
pub struct BudgetGate {
    budget: Arc<Mutex<FrameBudget<GatedStage>>>,
    metered: Arc<Mutex<Metered>>,
    jobs: Sender<StageJob>,
}

/// What the gate has let through, and since when.
#[derive(Default)]
struct Metered {
    report: ServeBudgetReport,
    /// When the first stage started, for [`ServeBudgetReport::span`].
    first_started: Option<Instant>,
}

/// What became of a stage offered to the gate.
pub(super) enum Gated {
    /// Started now, or waiting for a later frame.
    Accepted,
    /// Handed back: this many wait already.
    HandedBack(usize),
}

impl BudgetGate {
    /// A gate for `budget` in front of the render side's queue `jobs`.
    pub(super) fn new(budget: ServeBudget, jobs: Sender<StageJob>, now: Instant) -> Self {
        let bucket = FrameBudget::new(budget.gpu_per_frame, budget.frame, budget.max_waiting, now);
        Self { budget: Arc::new(Mutex::new(bucket)), metered: Arc::default(), jobs }
    }

    /// What the budget let through so far.
    pub fn report(&self) -> ServeBudgetReport {
        lock(&self.metered).report
    }

    /// Offers the stage `job` of `key`, whose reply already calls [`Self::settle`] with
    /// `charge` (where its charge is written once it starts).
    pub(super) fn offer(&self, key: CostKey, job: StageJob, charge: Arc<AtomicU64>, now: Instant) -> Gated {
        let mut budget = lock(&self.budget);
        match budget.offer(key, GatedStage { job, charge }, now) {
            Admission::Start { job, charged } => {
                drop(budget);
                self.start(job, charged, now);
                Gated::Accepted
            }
            Admission::Queued => {
                lock(&self.metered).report.waited += 1;
                Gated::Accepted
            }
            Admission::Refused(_) => {
                lock(&self.metered).report.handed_back += 1;
                Gated::HandedBack(budget.waiting())
            }
        }
    }

    /// Starts the waiting stages whose turn has come (once a frame).
    pub(super) fn release(&self, now: Instant) {
        let started = lock(&self.budget).release(now);
        for (stage, charged) in started {
            self.start(stage, charged, now);
        }
    }

    fn start(&self, stage: GatedStage, charged: Duration, now: Instant) {
        stage.charge.store(charged.as_nanos() as u64, Ordering::Release);
        // Its run is timed from here, not from when it arrived.
        let job = StageJob { started: now, ..stage.job };
        // The render side's end is gone only when the app is.
        let _ = self.jobs.send(job);
    }

    /// Settles the stage of `key` that was charged what `charge` holds once `outcome` is in.
    pub(super) fn settle(&self, key: CostKey, charge: &AtomicU64, outcome: &JobOutcome) {
        let gpu = outcome.gpu.unwrap_or_else(|| outcome.finished.saturating_duration_since(outcome.started));
        lock(&self.budget).settle(key, Duration::from_nanos(charge.load(Ordering::Acquire)), gpu);
        let mut metered = lock(&self.metered);
        let first = *metered.first_started.get_or_insert(outcome.started);
        let report = &mut metered.report;
        report.stages += 1;
        report.gpu += gpu;
        report.longest = report.longest.max(gpu);
        report.span = report.span.max(outcome.finished.saturating_duration_since(first));
    }
}
