//! The jobs the main world hands to the render side, and what comes back: the only types the
//! two halves share. A job names a block (a graph and its input) and carries an opaque
//! [`JobTag`] that the render side returns untouched: it knows jobs, not requests or peers.

use std::sync::Arc;

use bevy::asset::AssetId;
use bevy::platform::time::Instant;
use bevy::prelude::Entity;
use thiserror::Error;

use crate::gpu::GpuError;
use crate::model::ir::Graph;
use crate::model::Model;
use crate::tensor::output_mapping::OutputMapping;
use crate::tensor::preprocess::PreprocessPlan;
use crate::tensor::Tensor;

/// What a job is for, so that its outcome reaches the right place in the main world.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JobTag {
    /// A whole request run on this peer (its entity holds the request).
    Request,
    /// One layer slice of a request run across frames on this peer (its entity holds the
    /// request).
    LayerSlice {
        /// The slice's index.
        slice: usize,
    },
    /// A stage of a request this peer coordinates.
    #[cfg(feature = "p2p")]
    PipelineStage {
        /// The owner's id for the request.
        request: u64,
        /// The stage's index in the plan.
        stage: usize,
    },
    /// A stage run for another peer; its outcome goes to the job's [`JobReply`].
    #[cfg(feature = "p2p")]
    ServedStage,
    /// A stage run again on this GPU to check a peer's result.
    #[cfg(feature = "p2p")]
    SpotCheck {
        /// The owner's id for the request.
        request: u64,
        /// The stage's index in the plan.
        stage: usize,
    },
    /// The calibration run measured before joining a session.
    #[cfg(feature = "p2p")]
    Calibration,
}

/// One block of one request, to be run by the render side.
#[derive(Clone, Debug)]
pub(crate) struct StageJob {
    /// Returned with the outcome.
    pub tag: JobTag,
    /// The entity the outcome belongs to (`Entity::PLACEHOLDER` for none).
    pub entity: Entity,
    /// The model the graph comes from (weights are kept per model and graph).
    pub model: AssetId<Model>,
    /// The graph to run: a whole model or one stage of it.
    pub graph: Arc<Graph>,
    /// Its input.
    pub input: JobInput,
    /// When the main world handed it over.
    pub started: Instant,
    /// Where its output goes: read back, written into a texture, reduced to its top classes.
    pub output: JobOutput,
    /// Where the outcome goes instead of the main world, if anywhere (a stage served for a
    /// peer goes back to the network the moment it is read back).
    pub reply: Option<JobReply>,
}

impl StageJob {
    /// Sends `outcome` (this job's) to the job's reply, or else to `main_world`.
    pub fn deliver(&self, outcome: JobOutcome, main_world: &crossbeam_channel::Sender<JobOutcome>) {
        match &self.reply {
            Some(reply) => (reply.0)(outcome),
            // The main world's end is gone only when the app is.
            None => drop(main_world.send(outcome)),
        }
    }
}

/// A job's input: a tensor from the CPU, or a texture already on the GPU.
#[derive(Clone, Debug)]
pub(crate) enum JobInput {
    /// Uploaded into the block's input.
    Tensor(Tensor),
    /// Preprocessed on the GPU into the block's input.
    Image(ImageJobInput),
}

impl JobInput {
    /// The shape of the tensor the block takes.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            JobInput::Tensor(tensor) => tensor.shape().to_vec(),
            JobInput::Image(image) => image.plan.output_shape(),
        }
    }

    /// The tensor, for an input from the CPU (native only: the submission thread's question).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub fn tensor(&self) -> Option<&Tensor> {
        match self {
            JobInput::Tensor(tensor) => Some(tensor),
            JobInput::Image(_) => None,
        }
    }
}

impl From<Tensor> for JobInput {
    fn from(tensor: Tensor) -> Self {
        JobInput::Tensor(tensor)
    }
}

/// An image asset's texture, preprocessed on the GPU into a block's input.
#[derive(Clone, Debug)]
pub(crate) struct ImageJobInput {
    /// The image (its texture in the render world's `RenderAssets<GpuImage>`).
    pub image: AssetId<bevy::image::Image>,
    /// The preprocessing, checked against the image's size when the job was made.
    pub plan: PreprocessPlan,
    /// Frames the render world has waited for the texture.
    pub frames_waited: u32,
}

/// Where a job's output goes: by default it is read back whole; it may also be written into a
/// texture, and what is read back may be less (its top classes, or nothing).
#[derive(Clone, Debug, Default)]
pub(crate) struct JobOutput {
    /// A texture the output is written into on the GPU, if any.
    pub image: Option<Box<ImageJobOutput>>,
    /// A storage buffer the output is copied into on the GPU, if any.
    pub buffer: Option<BufferJobOutput>,
    /// What of it is read back to the CPU.
    pub read_back: ReadBack,
}

impl JobOutput {
    /// Whether the output is only read back whole (nothing runs after the block).
    pub fn read_back_whole_only(&self) -> bool {
        self.image.is_none() && self.buffer.is_none() && self.read_back == ReadBack::Whole
    }
}

/// A storage buffer a job's output is copied into on the GPU.
#[derive(Clone, Debug)]
pub(crate) struct BufferJobOutput {
    /// The buffer (its GPU buffer in the render world's `RenderAssets<GpuShaderBuffer>`).
    pub buffer: AssetId<bevy::render::storage::ShaderBuffer>,
    /// Frames the render world has waited for the buffer.
    pub frames_waited: u32,
}

/// What of a job's output is read back to the CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum ReadBack {
    /// The whole output tensor.
    #[default]
    Whole,
    /// Only the top `k` classes of its first batch row, taken on the GPU.
    TopK(u32),
    /// Nothing (an output written into a texture): only that the GPU is done.
    Nothing,
}

/// A texture a job's output is written into on the GPU.
#[derive(Clone, Debug)]
pub(crate) struct ImageJobOutput {
    /// The image (its texture in the render world's `RenderAssets<GpuImage>`).
    pub image: AssetId<bevy::image::Image>,
    /// How the output maps to colours.
    pub mapping: OutputMapping,
    /// Frames the render world has waited for the texture.
    pub frames_waited: u32,
}

/// A callback that takes a job's outcome where it is produced (the render side's submission
/// thread or readback callback), for outcomes that should not wait for the main world's frame.
#[derive(Clone)]
pub(crate) struct JobReply(pub std::sync::Arc<dyn Fn(JobOutcome) + Send + Sync>);

impl std::fmt::Debug for JobReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobReply")
    }
}

/// Why the render side could not run a job.
#[derive(Debug, Error, Clone, PartialEq)]
pub(crate) enum JobError {
    /// The GPU could not run the block (wrong shape, limits, readback).
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// The render side's submission thread died while it held the job (native only: the web
    /// has no submission thread).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    #[error("the submission thread stopped while it held the job: {0}")]
    SubmissionThreadLost(String),
}

/// What the render side sends back for a job.
#[derive(Debug)]
pub(crate) struct JobOutcome {
    /// The job's tag.
    pub tag: JobTag,
    /// The job's entity.
    pub entity: Entity,
    /// When the job was handed over.
    pub started: Instant,
    /// When the result was read back (or the job failed) on the render side.
    pub finished: Instant,
    /// The output, or why there is none (an empty tensor where it was not read back).
    pub result: Result<Tensor, JobError>,
    /// The top classes of the first batch row, where only they were read back.
    pub top_k: Option<Vec<(usize, f32)>>,
    /// The job's GPU time, from timestamps around its compute passes, where the device can
    /// write them.
    pub gpu: Option<std::time::Duration>,
}

impl JobOutcome {
    /// The outcome of `job`, finished now.
    pub fn of(job: &StageJob, result: Result<Tensor, JobError>) -> Self {
        Self { tag: job.tag, entity: job.entity, started: job.started, finished: Instant::now(), result, top_k: None, gpu: None }
    }
}
