//! Work stealing: a remote hand-over that another player is predicted to finish far sooner
//! (it is late, past what its executors' measured speeds predict, or they are known to be
//! slow) is copied to the player predicted to finish it first. Whichever copy comes back first
//! moves the request on; the other is a [`super::StaleResult`] and is dropped, so that a result
//! that arrives twice is used once. The straggler's wait is reported
//! ([`super::PipelineAction::Outpaced`]) so that its measured speed drops without it ever
//! answering.

use std::collections::HashMap;
use std::time::Duration;

use bevy::platform::time::Instant;

use super::{Active, Executor, Pipeline, PipelineAction, StageAssignment};
use crate::net::auth::PeerUuid;

/// When a remote hand-over is copied to another player.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StealPolicy {
    /// A copy is made where it is predicted to finish this many times sooner than the
    /// hand-over's expected rest: before its predicted time, what is left of it; after, how
    /// late it is already.
    pub margin: f64,
    /// No hand-over is copied before it has waited this long, so that jitter on a fast GPU
    /// never doubles work.
    pub min_wait: Duration,
    /// Copies in flight at once, at most. Copies add work: where every player is late because
    /// all are overloaded (players sharing one machine, say), more copies would only make each
    /// slower and every hand-over later.
    pub max_copies: usize,
}

impl Default for StealPolicy {
    /// Twice as soon, not before 100 ms, one copy at a time.
    fn default() -> Self {
        Self { margin: 2.0, min_wait: Duration::from_millis(100), max_copies: 1 }
    }
}

impl StealPolicy {
    /// Whether a hand-over predicted to take `predicted` that has waited `waited` is worth a
    /// copy that would finish in `copy`.
    pub fn is_worth_copying(&self, waited: Duration, predicted: Duration, copy: Duration) -> bool {
        waited >= self.min_wait && self.margin * copy.as_secs_f64() <= predicted.abs_diff(waited).as_secs_f64()
    }
}

/// A copy of a hand-over given to another player: it runs all of the hand-over's stages.
pub(super) struct StolenCopy {
    thief: PeerUuid,
    stages: usize,
    at: Instant,
}

impl StolenCopy {
    /// Who runs each of the copy's stages: the thief, all of them.
    fn executors(&self) -> Vec<Executor> {
        vec![Executor::Peer(self.thief); self.stages]
    }

    /// Who runs `stage` of the copy of a hand-over that starts at `first`.
    pub(super) fn executor_of(&self, first: usize, stage: usize) -> Option<Executor> {
        stage.checked_sub(first).filter(|i| *i < self.stages).map(|_| Executor::Peer(self.thief))
    }
}

impl Active {
    /// The copy came back first: it becomes the hand-over, and the executors it was taken from
    /// are returned with how long they held it.
    pub(super) fn take_stolen(&mut self, now: Instant) -> (Vec<Executor>, Duration) {
        let copy = self.stolen.take().expect("a copy was found");
        let thief = copy.executors();
        self.route[self.stage..=self.last].copy_from_slice(&thief);
        let holders = std::mem::replace(&mut self.executors, thief);
        let waited = now - self.stage_started;
        self.stage_started = copy.at;
        (holders, waited)
    }

    /// `gone` left: a copy it held is dropped; a hand-over it held whose copy is on another
    /// player goes on as that copy, so that it is not re-run.
    pub(super) fn settle_copy_without(&mut self, gone: Executor, now: Instant) {
        let Some(copy) = &self.stolen else { return };
        if Executor::Peer(copy.thief) == gone {
            self.stolen = None;
        } else if self.executors.contains(&gone) {
            self.take_stolen(now);
        }
    }
}

impl Pipeline {
    /// Copies remote hand-overs, oldest first, to the player of `assignment` predicted to
    /// finish a copy first, where [`StealPolicy::is_worth_copying`]: a player's finish is its
    /// part of the predicted rest of the hand-overs it holds for this pipeline (none of those
    /// already late), plus the whole copy (it runs all of the hand-over's stages). `predict`
    /// gives the time of stages from a first one on the executors given, at a batch (`None`
    /// where that is not known yet: then nothing is copied). The player that holds all of a
    /// hand-over never takes its copy, and no player takes the same hand-over's copy twice. A
    /// copy that is late itself by the same rule (its thief stalled too) gives its place to a
    /// copy on a player not tried yet; at most [`StealPolicy::max_copies`] copies are in flight.
    pub fn steal_from_stragglers(
        &mut self,
        policy: &StealPolicy,
        assignment: &StageAssignment,
        predict: impl Fn(usize, &[Executor], usize) -> Option<Duration>,
        now: Instant,
    ) -> Vec<PipelineAction> {
        // Nothing is copied before it waited `min_wait`: most frames end here, after one scan.
        let since = |a: &Active| a.stolen.as_ref().map_or(a.stage_started, |copy| copy.at);
        if !self.active.values().any(|a| now - since(a) >= policy.min_wait) {
            return Vec::new();
        }
        // What each player has yet to do for this pipeline, as predicted.
        let mut load: HashMap<PeerUuid, Duration> = assignment.shares().iter().map(|(peer, _)| (*peer, Duration::ZERO)).collect();
        // Hand-overs (or their copies) that may be copied: since when they waited, and how long
        // they were predicted to take.
        let mut candidates = Vec::new();
        // Only a tensor can be copied to another player (a request's own input on this GPU
        // starts a local hand-over anyway).
        for (&request, a) in self.active.iter().filter(|(_, a)| a.executors[0] != Executor::Local && a.input.tensor().is_some()) {
            let predicted = predict(a.stage, &a.executors, a.batch());
            if let Some(copy) = &a.stolen {
                let predicted_copy = predict(a.stage, &copy.executors(), a.batch());
                *load.entry(copy.thief).or_default() += predicted_copy.unwrap_or_default().saturating_sub(now - copy.at);
                candidates.extend(predicted_copy.map(|p| (copy.at, request, p)));
            } else if let Some(predicted) = predicted {
                candidates.push((a.stage_started, request, predicted));
            }
            // The rest of a hand-over not late yet, shared over its executors by their stages'
            // predicted times.
            let rest = predicted.unwrap_or_default().saturating_sub(now - a.stage_started);
            let parts: Vec<f64> = (0..a.executors.len()).map(|i| predict(a.stage + i, &a.executors[i..=i], a.batch()).unwrap_or_default().as_secs_f64()).collect();
            let total: f64 = parts.iter().sum();
            for (executor, part) in a.executors.iter().zip(parts).filter(|_| total > 0.0 && !rest.is_zero()) {
                *load.entry(executor.peer().expect("a remote hand-over")).or_default() += rest.mul_f64(part / total);
            }
        }
        candidates.sort_by_key(|&(started, request, _)| (started, request));
        let mut copies = self.active.values().filter(|a| a.stolen.is_some()).count();
        let mut actions = Vec::new();
        for (started, request, predicted) in candidates {
            let active = self.active.get_mut(&request).expect("listed above");
            // A late copy is replaced in its own place; a new copy needs a free one.
            if active.stolen.is_none() && copies >= policy.max_copies {
                continue;
            }
            let (stages, batch, waited) = (active.executors.len(), active.batch(), now - started);
            let holds_all = |peer: PeerUuid| active.executors.iter().all(|e| *e == Executor::Peer(peer));
            let finish = |peer: PeerUuid| Some(load[&peer] + predict(active.stage, &vec![Executor::Peer(peer); stages], batch)?);
            let best = assignment
                .shares()
                .iter()
                .filter(|(peer, _)| !holds_all(*peer) && !active.copied_to.contains(peer))
                .filter_map(|(peer, _)| Some((finish(*peer)?, active.executors.contains(&Executor::Peer(*peer)), *peer)))
                .min_by_key(|&(finish, in_chain, _)| (finish, in_chain));
            let Some((finish, _, thief)) = best.filter(|(finish, _, _)| policy.is_worth_copying(waited, predicted, *finish)) else { continue };
            *load.get_mut(&thief).expect("a player of the assignment") = finish;
            copies += active.stolen.is_none() as usize;
            active.stolen = Some(StolenCopy { thief, stages, at: now });
            active.copied_to.push(thief);
            let (stage, input) = (active.stage, active.input.clone());
            actions.push(PipelineAction::Run { request, stage, executor: Executor::Peer(thief), input, onward: vec![thief; stages - 1] });
        }
        actions
    }
}
