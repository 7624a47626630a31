//! Requests run across frames in layer slices ([`SliceAcrossFrames`]): the request's model is
//! cut ([`super::layer_slices`]), one slice is handed to the render side per frame, and each
//! slice's output, once read back, is the next slice's input in the next frame. The last
//! slice's output is the prediction, and the slices' GPU times size the next request's cut.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bevy::asset::AssetId;
use bevy::platform::time::Instant;
use bevy::prelude::*;

use super::layer_slices::{cut_into_slices, LayerSlice, LayerSliceRecord, SliceAcrossFrames, SliceCounter};
use super::{deliver, fail, request_graph, InferenceError, InferenceFailed, InferenceRequest, JobQueue, Prediction, SplitRequest, StageOutcomes, Submitted, TopK};
use super::request_output::OutputNotKeptOnGpu;
use crate::job::{JobOutput, JobTag, StageJob};
use crate::model::ir::Graph;
use crate::model::plan::{most_stages, PlanError};
use crate::model::{Model, StagingError};
use crate::tensor::Tensor;

/// What a model's slices are kept by: one graph of one model, for one input shape and budget.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SliceKey {
    model: AssetId<Model>,
    /// The graph's address (the graph is held by [`SlicedModel`], so the address stays its own).
    graph: usize,
    input_shape: Vec<usize>,
    budget: Duration,
}

/// One model's slices for one input shape and budget, and how many slices it needs.
struct SlicedModel {
    /// Held so that its address, part of the key, is not reused by another graph.
    _graph: Arc<Graph>,
    counter: SliceCounter,
    /// The cut for the counter's count, once made.
    cut: Option<Arc<[LayerSlice]>>,
}

/// The layer slices of every model, input shape and budget requests were sliced for.
#[derive(Resource, Default)]
pub(crate) struct LayerSlicer {
    models: HashMap<SliceKey, SlicedModel>,
}

impl LayerSlicer {
    /// The slices the next request of `key` runs in (cut again when the count changed).
    fn slices(&mut self, key: &SliceKey, graph: &Arc<Graph>) -> Result<Arc<[LayerSlice]>, PlanError> {
        let model = self.models.entry(key.clone()).or_insert_with(|| SlicedModel { _graph: graph.clone(), counter: SliceCounter::new(key.budget, most_stages(graph)), cut: None });
        match &model.cut {
            Some(cut) if cut.len() == model.counter.count() => Ok(cut.clone()),
            _ => {
                let cut: Arc<[LayerSlice]> = cut_into_slices(graph, &key.input_shape, model.counter.count())?.into();
                model.cut = Some(cut.clone());
                Ok(cut)
            }
        }
    }

    /// A request of `key` ran its slices in `gpu` each.
    fn observe(&mut self, key: &SliceKey, gpu: &[Duration]) {
        if let Some(model) = self.models.get_mut(key) {
            model.counter.observe(gpu);
        }
    }
}

/// A request on its way through its slices.
#[derive(Component)]
pub(crate) struct SlicedRun {
    key: SliceKey,
    slices: Arc<[LayerSlice]>,
    /// The next slice's input, once the previous slice's output is back (the request's input
    /// for the first).
    ready: Option<Tensor>,
    /// How the slices handed over so far ran.
    records: Vec<LayerSliceRecord>,
    /// Each finished slice's GPU time (or, where the device writes no timestamps, its time
    /// from hand-over to read-back), for the next cut.
    timed: Vec<Duration>,
    /// When the request's model was cut (its first slice is handed over in the same frame).
    started: Instant,
}

/// Sliced requests not yet handed out, failed or claimed by the peer session (one whose output
/// stays on the GPU runs whole, in one frame).
type NewSlicedRequest = (Without<Submitted>, Without<InferenceFailed>, Without<SplitRequest>, OutputNotKeptOnGpu);

/// Cuts new sliced requests' models; their first slice is handed over by
/// [`submit_layer_slices`], which runs after this.
pub(crate) fn start_layer_slices(
    mut commands: Commands,
    new: Query<(Entity, &InferenceRequest, &SliceAcrossFrames), NewSlicedRequest>,
    models: Res<Assets<Model>>,
    server: Res<AssetServer>,
    mut slicer: ResMut<LayerSlicer>,
) {
    for (entity, request, sliced) in &new {
        let Some(graph) = request_graph(&mut commands, entity, request, &models, &server) else { continue };
        let key = SliceKey { model: request.model.id(), graph: Arc::as_ptr(&graph) as usize, input_shape: request.input.shape().to_vec(), budget: sliced.gpu_per_frame };
        let slices = match slicer.slices(&key, &graph) {
            Ok(slices) => slices,
            Err(error) => {
                let batch = key.input_shape.first().copied().unwrap_or(1);
                fail(&mut commands, entity, InferenceError::Staging(StagingError::Plan { batch, error }));
                continue;
            }
        };
        let run = SlicedRun { key, slices, ready: Some(request.input.clone()), records: Vec::new(), timed: Vec::new(), started: Instant::now() };
        commands.entity(entity).insert((run, Submitted));
    }
}

/// Hands each sliced request's next slice to the render side where its input is back: at
/// most one slice per request per frame.
pub(crate) fn submit_layer_slices(mut runs: Query<(Entity, &mut SlicedRun)>, mut queue: ResMut<JobQueue>, mut frame: Local<u64>) {
    *frame += 1;
    for (entity, mut run) in &mut runs {
        hand_over(entity, &mut run, &mut queue, *frame);
    }
}

/// Hands `run`'s next slice to the render side, if its input is back.
fn hand_over(entity: Entity, run: &mut SlicedRun, queue: &mut JobQueue, frame: u64) {
    let Some(input) = run.ready.take() else { return };
    let slice = run.records.len();
    let Some(next) = run.slices.get(slice) else { return };
    run.records.push(LayerSliceRecord { nodes: next.nodes.clone(), flops: next.flops, gpu: None, frame });
    queue.push(StageJob { tag: JobTag::LayerSlice { slice }, entity, model: run.key.model, graph: next.graph.clone(), input: input.into(), started: Instant::now(), output: JobOutput::default(), reply: None });
}

/// Takes finished slices: the next slice's input, or (after the last) the prediction.
pub(crate) fn receive_layer_slices(mut commands: Commands, mut outcomes: ResMut<StageOutcomes>, mut runs: Query<&mut SlicedRun>, mut slicer: ResMut<LayerSlicer>, top_k: Res<TopK>) {
    let finished: Vec<_> = outcomes.0.extract_if(.., |o| matches!(o.tag, JobTag::LayerSlice { .. })).collect();
    for outcome in finished {
        let JobTag::LayerSlice { slice } = outcome.tag else { continue };
        // A request despawned while its slice ran is dropped with its slices.
        let Ok(mut run) = runs.get_mut(outcome.entity) else { continue };
        let Some(record) = run.records.get_mut(slice) else { continue };
        record.gpu = outcome.gpu;
        run.timed.push(outcome.gpu.unwrap_or_else(|| outcome.finished.saturating_duration_since(outcome.started)));
        match outcome.result {
            Err(error) => {
                commands.entity(outcome.entity).remove::<SlicedRun>();
                fail(&mut commands, outcome.entity, error.into());
            }
            Ok(output) if slice + 1 < run.slices.len() => run.ready = Some(output),
            Ok(output) => {
                slicer.observe(&run.key, &run.timed);
                let gpu = run.records.iter().map(|r| r.gpu).sum::<Option<Duration>>();
                let prediction = Prediction {
                    top_k: output.top_k(0, top_k.0),
                    output,
                    latency: run.started.elapsed(),
                    stages: Vec::new(),
                    reruns: 0,
                    handover: Some(outcome.finished.elapsed()),
                    gpu,
                    slices: std::mem::take(&mut run.records),
                };
                commands.entity(outcome.entity).remove::<SlicedRun>();
                deliver(&mut commands, outcome.entity, prediction);
            }
        }
    }
}
