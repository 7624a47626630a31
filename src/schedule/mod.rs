//! Main-world scheduling: requests become stage jobs for the render world, and finished jobs
//! become predictions. With one peer every request is a single local job.

pub mod continuous;
pub mod frame_budget;
pub mod image_request;
pub mod layer_slices;
pub mod request_output;
pub mod run_cadence;
pub mod stage_record;
pub(crate) mod sliced;

use std::sync::Arc;
use std::time::Duration;

use bevy::platform::time::Instant;

use bevy::asset::LoadState;
use bevy::prelude::*;
use crossbeam_channel::{Receiver, Sender};
use thiserror::Error;

use crate::gpu::GpuError;
pub(crate) use crate::job::{JobOutcome, JobTag, StageJob};
use crate::job::JobError;
use crate::model::ir::Graph;
use crate::model::{Model, ModelError};
use crate::tensor::Tensor;
use layer_slices::{LayerSliceRecord, SliceAcrossFrames};

/// Asks for one inference: spawn it on any entity; a [`Prediction`] is added when it is done.
#[derive(Component, Clone, Debug)]
pub struct InferenceRequest {
    /// The model to run.
    pub model: Handle<Model>,
    /// The input tensor (its first dimension is the batch).
    pub input: Tensor,
}

impl InferenceRequest {
    /// A request to run `model` on `input`.
    pub fn new(model: Handle<Model>, input: Tensor) -> Self {
        Self { model, input }
    }
}

/// The result of an [`InferenceRequest`], added to the request's entity.
#[derive(Component, Clone, Debug)]
pub struct Prediction {
    /// The model output.
    pub output: Tensor,
    /// Top classes of the first batch row with softmax probabilities, best first.
    pub top_k: Vec<(usize, f32)>,
    /// From the request being handed to the GPU (a split request: admitted into the pipeline,
    /// which keeps K in flight) to the result reaching the main world.
    pub latency: Duration,
    /// Per-stage breakdown when the request was split across peers (empty when it ran whole).
    pub stages: Vec<stage_record::StageRecord>,
    /// Stage runs repeated because a peer was lost or sent data that was rejected.
    pub reruns: u32,
    /// For a request run whole on this peer: from its result being read back from the GPU to
    /// the main world taking it (under one frame: the render side's submission thread
    /// polls the map while the request is in flight, and results are taken at the start and the
    /// end of every frame). `None` for a split request.
    pub handover: Option<Duration>,
    /// For a request run whole on this peer: its GPU time, from timestamps around its compute
    /// passes, where the device writes them. `None` otherwise (a split request's are in
    /// [`Self::stages`]).
    pub gpu: Option<Duration>,
    /// For a request run across frames ([`SliceAcrossFrames`]): how each layer slice ran
    /// (empty otherwise). [`Self::gpu`] is then the slices' GPU time together.
    pub slices: Vec<LayerSliceRecord>,
}

impl Prediction {
    /// The prediction of a request split across peers: `output` with its `top_k` classes, and
    /// the split's records.
    #[cfg(feature = "p2p")]
    pub(crate) fn split(output: Tensor, top_k: usize, latency: Duration, stages: Vec<stage_record::StageRecord>, reruns: u32) -> Self {
        Self { top_k: output.top_k(0, top_k), output, latency, stages, reruns, handover: None, gpu: None, slices: Vec::new() }
    }

    /// Whether this (split) prediction gave `reference`'s (single-peer) result: bit-identical
    /// outputs where every cut travels as f32 (`exact`), else the same top class, since f16 and
    /// int8 cuts round the activations.
    pub fn matches(&self, reference: &Prediction, exact: bool) -> bool {
        if exact {
            self.output.shape() == reference.output.shape() && self.output.data().iter().zip(reference.output.data()).all(|(a, b)| a.to_bits() == b.to_bits())
        } else {
            self.top_k.first().map(|t| t.0) == reference.top_k.first().map(|t| t.0)
        }
    }
}

/// Triggered on the request's entity when its [`Prediction`] is ready: observe it on the entity
/// (`commands.spawn(request).observe(|ready: On<PredictionReady>| ..)`) or globally.
#[derive(EntityEvent, Clone, Debug)]
pub struct PredictionReady {
    /// The request's entity.
    pub entity: Entity,
    /// The prediction (also added to the entity).
    pub prediction: Prediction,
}

/// Why an inference request failed.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum InferenceError {
    /// The model asset failed to load.
    #[error("the model failed to load: {0}")]
    ModelLoad(String),
    /// The model has no graph for this input (a shape its symbolic dimensions do not allow).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The GPU could not run the model on this input (wrong shape, limits, readback).
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// A split model could not be cut into its plan's stages for this input's batch (a model
    /// exported with a dynamic batch is cut again for each batch).
    #[error(transparent)]
    Staging(#[from] crate::model::StagingError),
    /// The render side's submission thread died while it held the request.
    #[error("the submission thread stopped while it held the request: {0}")]
    SubmissionThreadLost(String),
    /// A split request was re-run as often as the session allows
    /// ([`crate::PeerSessionPlugin::max_reruns`]) without a result.
    #[error("abandoned after {reruns} reruns without a result")]
    Abandoned {
        /// How often it was re-run.
        reruns: u32,
    },
    /// An image request's image could not be preprocessed into the model's input (a texture
    /// format it cannot read, a size the preprocessing does not fit, an image that never
    /// reached the GPU).
    #[error(transparent)]
    ImageInput(#[from] crate::gpu::ImageInputError),
    /// A request's output could not be written into its
    /// [`OutputToImage`](request_output::OutputToImage) texture (a format
    /// the kernel does not write, an output that is not an image of the texture's size).
    #[error(transparent)]
    ImageOutput(#[from] crate::gpu::ImageOutputError),
    /// A request's output could not be copied into its
    /// [`OutputToBuffer`](request_output::OutputToBuffer) buffer (one without `COPY_DST`,
    /// smaller than the output, or that never reached the GPU).
    #[error(transparent)]
    BufferOutput(#[from] crate::gpu::BufferOutputError),
    /// An image request's image failed to load, or is not an asset (any more).
    #[error("the image failed to load: {0}")]
    ImageLoad(String),
    /// The slices of a request whose batch was split across players came back with outputs
    /// that do not stack (their shapes past the batch axis differ).
    #[error("the slices of a split batch do not stack: {0}")]
    SlicesDisagree(crate::tensor::TensorError),
}

impl From<JobError> for InferenceError {
    fn from(error: JobError) -> Self {
        match error {
            JobError::Gpu(GpuError::ImageInput(error)) => InferenceError::ImageInput(error),
            JobError::Gpu(GpuError::ImageOutput(error)) => InferenceError::ImageOutput(error),
            JobError::Gpu(GpuError::BufferOutput(error)) => InferenceError::BufferOutput(error),
            JobError::Gpu(error) => InferenceError::Gpu(error),
            JobError::SubmissionThreadLost(reason) => InferenceError::SubmissionThreadLost(reason),
        }
    }
}

/// Triggered on the request's entity when it fails; also added to the entity as a component.
#[derive(EntityEvent, Component, Clone, Debug)]
pub struct InferenceFailed {
    /// The request's entity.
    pub entity: Entity,
    /// What went wrong.
    pub error: InferenceError,
}

/// Marks a request that the peer session splits across players; the single-peer path leaves
/// it alone.
#[derive(Component, Debug)]
pub struct SplitRequest;

/// Marks a request that must run whole on this peer even when a session could split it (used
/// to compare split results with single-peer ones).
#[derive(Component, Debug)]
pub struct LocalOnly;

/// Marks a request that has been handed to the render world.
#[derive(Component, Debug)]
pub struct Submitted;

/// Where this crate's main-world systems run, for ordering a game's systems around them.
#[derive(SystemSet, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InferenceSystems {
    /// In `PreUpdate` (after [`Self::ReceiveResults`] and the session) and again in
    /// `PostUpdate`: requests spawned since are handed to the render side, which starts them at
    /// once where their block has commands recorded.
    SubmitRequests,
    /// In `PreUpdate`, `PostUpdate` (before [`Self::SubmitRequests`]) and `Last`: finished
    /// results become [`Prediction`]s (and [`PredictionReady`] triggers), so that one the GPU
    /// finished during a frame is in the ECS before that frame ends. Each runs only when a
    /// result is there.
    ReceiveResults,
    /// In `PreUpdate`, after [`Self::ReceiveResults`], and again in `Last`: the peer session's
    /// systems (feature `p2p`): stage results, the socket, the pipeline of split requests, the
    /// shared tensors and collectives. Its run in `Last` moves on what arrived during the frame
    /// (a request's last output, a stage's result) in that frame.
    Session,
}

/// Sends jobs to the render side, which starts them without waiting for the frame's extract
/// where their block has commands recorded (see `crate::render`).
#[derive(Resource)]
pub(crate) struct JobQueue(pub Sender<StageJob>);

impl JobQueue {
    /// Hands `job` to the render side. The receiving end lives as long as the render app; a job
    /// sent after it is gone is dropped with the app.
    pub fn push(&mut self, job: StageJob) {
        let _ = self.0.send(job);
    }
}

/// Finished jobs that belong to a split request or to another peer, for the session systems.
#[derive(Resource, Default)]
pub(crate) struct StageOutcomes(pub Vec<JobOutcome>);

/// The receiving end of finished jobs.
#[derive(Resource)]
pub(crate) struct JobResults {
    /// Where the render side's outcomes arrive.
    pub receiver: Receiver<JobOutcome>,
    /// The same channel's sending end, for job replies that also hand the outcome to the main
    /// world (a local stage whose output goes on to other peers by itself).
    #[cfg_attr(not(feature = "p2p"), allow(dead_code))]
    pub sender: Sender<JobOutcome>,
}

/// How many classes [`Prediction::top_k`] lists.
#[derive(Resource, Clone, Copy)]
pub(crate) struct TopK(pub usize);

/// Requests for the single-peer path: not yet handed out, not failed, not split across
/// players or frames.
/// A request whose output goes into a texture or a buffer runs whole in one frame even with
/// [`SliceAcrossFrames`].
type SinglePeerRequest = (Without<Submitted>, Without<InferenceFailed>, Without<SplitRequest>, Or<(Without<SliceAcrossFrames>, request_output::OutputKeptOnGpu)>);

pub(crate) fn submit_requests(
    mut commands: Commands,
    requests: Query<(Entity, &InferenceRequest, request_output::OutputRequest), SinglePeerRequest>,
    models: Res<Assets<Model>>,
    outputs: request_output::OutputAssets,
    mut queue: ResMut<JobQueue>,
) {
    for (entity, request, output) in &requests {
        let Some(output) = request_output::job_output(&mut commands, entity, &output, &outputs) else { continue };
        let Some(graph) = request_graph(&mut commands, entity, request, &models, &outputs.server) else { continue };
        queue.push(StageJob {
            tag: JobTag::Request,
            entity,
            model: request.model.id(),
            graph,
            input: request.input.clone().into(),
            started: Instant::now(),
            output,
            reply: None,
        });
        commands.entity(entity).insert(Submitted);
    }
}

/// The graph `request` (on `entity`) runs: `None` while its model loads, or after failing the
/// request because the model failed to load or has no graph for the input's shape.
pub(crate) fn request_graph(commands: &mut Commands, entity: Entity, request: &InferenceRequest, models: &Assets<Model>, server: &AssetServer) -> Option<Arc<Graph>> {
    model_graph(commands, entity, &request.model, request.input.shape(), models, server)
}

/// The graph of `model` for an input of `shape`, for the request on `entity`: `None` while the
/// model loads, or after failing the request because the model failed to load or has no graph
/// for the shape.
pub(crate) fn model_graph(commands: &mut Commands, entity: Entity, model: &Handle<Model>, shape: &[usize], models: &Assets<Model>, server: &AssetServer) -> Option<Arc<Graph>> {
    let Some(loaded) = models.get(model) else {
        if let Some(LoadState::Failed(error)) = server.get_load_state(model) {
            fail(commands, entity, InferenceError::ModelLoad(error.to_string()));
        }
        return None;
    };
    // A model exported with dynamic axes has one graph per input shape.
    loaded.graph_for(shape).map_err(|error| fail(commands, entity, InferenceError::Model(error))).ok()
}

pub(crate) fn fail(commands: &mut Commands, entity: Entity, error: InferenceError) {
    let failed = InferenceFailed { entity, error };
    commands.entity(entity).insert(failed.clone());
    commands.trigger(failed);
}

/// Puts `prediction` on `entity` and triggers [`PredictionReady`] (where the entity still
/// exists): [`fail`]'s counterpart.
pub(crate) fn deliver(commands: &mut Commands, entity: Entity, prediction: Prediction) {
    if let Ok(mut target) = commands.get_entity(entity) {
        target.insert(prediction.clone());
        commands.trigger(PredictionReady { entity, prediction });
    }
}

pub(crate) fn receive_results(mut commands: Commands, results: Res<JobResults>, top_k: Res<TopK>, mut stages: ResMut<StageOutcomes>) {
    for outcome in results.receiver.try_iter() {
        if outcome.tag != JobTag::Request {
            stages.0.push(outcome);
            continue;
        }
        if commands.get_entity(outcome.entity).is_err() {
            continue;
        }
        match outcome.result {
            Ok(output) => {
                let prediction = Prediction {
                    top_k: outcome.top_k.unwrap_or_else(|| output.top_k(0, top_k.0)),
                    output,
                    latency: outcome.started.elapsed(),
                    stages: Vec::new(),
                    reruns: 0,
                    handover: Some(outcome.finished.elapsed()),
                    gpu: outcome.gpu,
                    slices: Vec::new(),
                };
                deliver(&mut commands, outcome.entity, prediction);
            }
            Err(error) => fail(&mut commands, outcome.entity, error.into()),
        }
    }
}
