//! Layer slices, as plain logic: a model cut into consecutive slices of about equal FLOPs, so
//! that a request can run one slice per frame and no frame spends more than a budget of GPU
//! time on it (as Unity's `ScheduleIterable` runs a model a few layers per frame). Where the
//! model is cut comes from the partition planner; how many slices comes from [`SliceCounter`],
//! which learns it from the GPU time the slices took last time.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use crate::model::ir::Graph;
use crate::model::plan::{most_stages, propose_plan, stage_costs, PlanError};
use crate::model::shape::infer_shapes;
use crate::tensor::TransferDtype;

/// One slice of a model: a sub-graph of consecutive nodes that reads the previous slice's
/// output (or the request's input) and writes the next one's input (or the model's output).
#[derive(Clone, Debug)]
pub struct LayerSlice {
    /// The slice as a graph of its own.
    pub graph: Arc<Graph>,
    /// Its nodes, as indices into the whole model's nodes.
    pub nodes: RangeInclusive<usize>,
    /// Its floating-point operations for the input shape it was cut for.
    pub flops: u64,
}

/// Runs an [`crate::InferenceRequest`] over several frames: add it to the request's entity.
/// The model is cut into layer slices, one slice is handed to the GPU per frame, and each
/// slice is sized so that its GPU time stays within `gpu_per_frame`, so that a long model never
/// makes a frame spike. The first request of a model, input shape and budget is cut into
/// [`FIRST_SLICES`] slices; later ones into as many as the slices' measured GPU time needs
/// ([`SliceCounter`]). The result is the same as the model run whole, bit for bit; its
/// [`crate::Prediction::slices`] tells how each slice ran. Several sliced requests run side
/// by side, each with its own budget. A request the peer session splits across players (one
/// for the session's model without [`crate::LocalOnly`]) is not sliced.
#[derive(bevy::prelude::Component, Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceAcrossFrames {
    /// The most GPU time a slice may take (e.g. 2 ms of a 16.7 ms frame); zero cuts the model
    /// into [`FIRST_SLICES`] slices and keeps it so.
    pub gpu_per_frame: Duration,
}

/// How one layer slice of a request run across frames ran, in [`crate::Prediction::slices`].
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSliceRecord {
    /// Its nodes, as indices into the model's nodes.
    pub nodes: RangeInclusive<usize>,
    /// Its floating-point operations.
    pub flops: u64,
    /// Its GPU time, from timestamps around its compute passes, where the device writes them.
    pub gpu: Option<Duration>,
    /// The frame it was handed to the GPU in, counted by the plugin from the app's start (one
    /// slice per frame: consecutive slices have increasing frames).
    pub frame: u64,
}

/// Cuts `graph`, for an input of `input_shape`, into `count` slices with the smallest largest
/// slice in FLOPs (the planner's cuts: only where exactly one value crosses). `count` is
/// capped at [`most_stages`]; a slice's output travels to the next as f32, so that the slices
/// together compute exactly what the whole graph does.
pub fn cut_into_slices(graph: &Graph, input_shape: &[usize], count: usize) -> Result<Vec<LayerSlice>, PlanError> {
    let count = count.clamp(1, most_stages(graph));
    let plan = propose_plan(graph, input_shape, count, TransferDtype::F32)?.validate(graph)?;
    let costs = stage_costs(graph, &plan, input_shape)?;
    let shapes = infer_shapes(graph, input_shape).map_err(|e| PlanError::Shapes(e.to_string()))?;
    Ok(plan
        .stages
        .iter()
        .zip(costs)
        .enumerate()
        .map(|(s, (stage, cost))| LayerSlice { graph: Arc::new(plan.stage_graph(graph, s, Some(&shapes))), nodes: stage.nodes.clone(), flops: cost.flops })
        .collect())
}

/// Slices a model is cut into before its slices were ever timed (or all it has, if fewer):
/// fine enough that a slice fits a small budget on a slow GPU, few enough that the compiled
/// slices stay well within the render side's block cache.
pub const FIRST_SLICES: usize = 16;

/// The share of the budget a slice is sized for, so that a slice a little slower than last
/// time still fits.
const HEADROOM: f64 = 0.75;

/// How many slices one model (for one input shape and budget) is cut into, learned from the
/// GPU time its slices took: enough that their total fits into slices of 3/4 of the budget
/// each, and never as few as a count whose slowest slice went over the budget.
#[derive(Clone, Debug, PartialEq)]
pub struct SliceCounter {
    budget: Duration,
    most: usize,
    count: usize,
    /// The largest count whose slowest slice took longer than the budget (0: none did).
    overran_at: usize,
}

impl SliceCounter {
    /// A counter for a model that can be cut into at most `most` slices, each to take at most
    /// `budget` of GPU time; it starts at [`FIRST_SLICES`] (or `most`, if fewer).
    pub fn new(budget: Duration, most: usize) -> Self {
        let most = most.max(1);
        Self { budget, most, count: FIRST_SLICES.min(most), overran_at: 0 }
    }

    /// How many slices the next request is cut into.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The slices of a request cut into [`Self::count`] slices took `gpu` each: the next count
    /// is the total over 3/4 of the budget (rounded up), but more than any count that overran.
    pub fn observe(&mut self, gpu: &[Duration]) {
        let (Some(slowest), false) = (gpu.iter().max(), self.budget.is_zero()) else { return };
        if *slowest > self.budget {
            self.overran_at = self.overran_at.max(gpu.len());
        }
        let total: Duration = gpu.iter().sum();
        let wanted = (total.as_secs_f64() / (self.budget.as_secs_f64() * HEADROOM)).ceil() as usize;
        self.count = wanted.max(self.overran_at + 1).clamp(1, self.most);
    }
}

#[cfg(test)]
#[path = "layer_slices_tests.rs"]
mod tests;
