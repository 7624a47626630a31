//! Requests whose batch is split across the players (see [`crate::session::batch_split`]):
//! each slice of rows is a request of its own in the pipeline, its remote stages pinned to one
//! player, and the slices' outputs are stacked back into the request's prediction once all of
//! them are in. A slice that fails fails the request; the others are then dropped as they come.

use std::time::Duration;

use bevy::prelude::*;

use super::state::{lock, SlicePart, SplitBatch, Tracked};
use super::Distributed;
use crate::net::session::PeerSession;
use crate::net::PeerUuid;
use crate::session::batch_split::{plan_batch, BatchPlan, BatchSlice, RemoteWork};
use crate::session::pipeline::{RequestId, PlayerSpeed};
use crate::schedule::stage_record::{Executor, StageRecord};
use crate::schedule::{deliver, fail, InferenceError, Prediction};
use crate::tensor::Tensor;

impl Distributed {
    /// How `input`'s batch runs: split where [`plan_batch`] predicts it finishes first over
    /// the players' measured speeds (a link's median round trip as the hop), else whole.
    fn batch_plan(&self, first_id: RequestId, input: &Tensor, session: Option<&PeerSession>) -> BatchPlan {
        let batch = input.shape().first().copied().unwrap_or(1);
        if !self.settings.batch_split || batch < 2 {
            return BatchPlan::Pipeline;
        }
        let Some(flops) = self.staged.as_ref().and_then(|staged| lock(staged).stage_flops(1).ok()) else { return BatchPlan::Pipeline };
        let speed = |peer: PeerUuid| self.capacity.speed(Executor::Peer(peer)).unwrap_or(f64::NAN);
        let mut players: Vec<PlayerSpeed> = self.assignment.shares().iter().map(|&(peer, _)| PlayerSpeed { peer, speed: speed(peer) }).collect();
        players.sort_by_key(|w| w.peer);
        let route_speeds: Vec<f64> = self
            .assignment
            .for_request(first_id, 0)
            .iter()
            .skip(1)
            .map(|executor| match executor {
                Executor::Peer(peer) => speed(*peer),
                Executor::Local => f64::NAN,
            })
            .collect();
        let rtt = |peer: &PeerUuid| session.and_then(|s| s.links().link(*peer).and_then(|l| l.rtt.median()));
        let hop = players.iter().filter_map(|w| rtt(&w.peer)).max().unwrap_or_default();
        let work = RemoteWork { flops_per_row: flops.iter().skip(1).map(|&f| f as f64).collect(), hop_s: hop.as_secs_f64() };
        plan_batch(batch, &work, &route_speeds, &players)
    }

    /// Puts the request of `entity` with `input` into the pipeline: whole, or as slices of its
    /// batch, one request each.
    pub(super) fn admit(&mut self, entity: Entity, input: &Tensor, session: Option<&PeerSession>) {
        let first = self.next_request;
        let slices = match self.batch_plan(first, input, session) {
            BatchPlan::Split(slices) => slices,
            BatchPlan::Pipeline => {
                let first = self.take_request_id();
                self.pipeline.submit(first, input.clone());
                self.tracked.insert(first, Tracked { entity, bytes: 0, part: None, image: None });
                return;
            }
        };
        for (index, BatchSlice { player, rows }) in slices.iter().cloned().enumerate() {
            let id = self.take_request_id();
            let slice = input.rows(rows).expect("the slices cover the batch");
            self.pipeline.submit_to(id, slice, player);
            self.tracked.insert(id, Tracked { entity, bytes: 0, part: Some(SlicePart { batch: first, index }), image: None });
        }
        let batch = SplitBatch { entity, parts: vec![None; slices.len()], stages: Vec::new(), reruns: 0, latency: Duration::ZERO };
        self.splits.0.insert(first, batch);
    }

    /// `tracked`'s request failed with `error`: its entity is told, and a split request's
    /// other slices are dropped as they come.
    pub(super) fn fail_tracked(&mut self, commands: &mut Commands, tracked: Tracked, error: InferenceError) {
        if let Some(part) = tracked.part
            && self.splits.0.remove(&part.batch).is_none() {
                return;
            }
        fail(commands, tracked.entity, error);
    }

    /// A slice's `output` is in, with its records: once every slice is, the outputs stacked in
    /// order are delivered as the request's prediction (its latency the slowest slice's).
    #[expect(clippy::too_many_arguments, reason = "a slice's whole outcome, each part used once")]
    pub(super) fn finish_slice(&mut self, commands: &mut Commands, part: SlicePart, output: Tensor, stages: Vec<StageRecord>, reruns: u32, latency: Duration, top_k: usize) {
        let Some(batch) = self.splits.0.get_mut(&part.batch) else { return };
        batch.parts[part.index] = Some(output);
        batch.stages.extend(stages);
        batch.reruns += reruns;
        batch.latency = batch.latency.max(latency);
        if batch.parts.iter().any(Option::is_none) {
            return;
        }
        let batch = self.splits.0.remove(&part.batch).expect("looked up above");
        let parts: Vec<Tensor> = batch.parts.into_iter().flatten().collect();
        match Tensor::stack_rows(&parts) {
            Ok(output) => deliver(commands, batch.entity, Prediction::split(output, top_k, batch.latency, batch.stages, batch.reruns)),
            Err(error) => fail(commands, batch.entity, InferenceError::SlicesDisagree(error)),
        }
    }
}
