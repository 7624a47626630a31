//! The render world's inference state: the kernel library, resident weights, compiled blocks,
//! the submission pool and the jobs recorded into the current frame.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bevy::asset::AssetId;
use bevy::prelude::*;
use crossbeam_channel::{Receiver, Sender};

use super::readback::{InFlight, OutstandingMaps, ResultRoute};
use super::submission::{lock, SubmissionPool};
#[cfg(not(target_arch = "wasm32"))]
use super::submission_thread::{SubmissionThread, ThreadEnd};
use crate::gpu::{GpuBlock, GpuError, KernelLibrary, KernelOptions, ResidentWeights};
use crate::job::{JobOutcome, StageJob};
use crate::model::ir::Graph;
use crate::model::Model;

/// Identifies a graph (a whole model or one stage of it) by its asset and its shared allocation.
pub(super) type GraphKey = (AssetId<Model>, usize);

/// Identifies a compiled block: its graph and input shape.
pub(super) type BlockKey = (GraphKey, Vec<usize>);

pub(super) fn graph_key(job: &StageJob) -> GraphKey {
    (job.model, Arc::as_ptr(&job.graph) as usize)
}

pub(super) fn block_key(job: &StageJob) -> BlockKey {
    (graph_key(job), job.input.shape().to_vec())
}

/// A graph's resident weights, and the graph itself: held so that its address, part of the
/// key, cannot be reused by another graph while the weights and blocks compiled from it live.
struct ResidentGraph {
    graph: Arc<Graph>,
    weights: Arc<ResidentWeights>,
}

/// Render-world state: pipelines, resident weights, compiled blocks and jobs in flight.
#[derive(Resource)]
pub(super) struct GpuInference {
    kernels: KernelOptions,
    /// Built with the first block.
    pub library: Option<KernelLibrary>,
    weights: HashMap<GraphKey, ResidentGraph>,
    /// Compiled blocks by graph and input shape.
    pub blocks: HashMap<BlockKey, GpuBlock>,
    /// Jobs from the main world: the submission thread's to take while it runs, else this
    /// world's.
    pub jobs: Receiver<StageJob>,
    /// Jobs the submission thread forwards because their block has no recorded submission ready.
    #[cfg(not(target_arch = "wasm32"))]
    pub to_record: (Sender<StageJob>, Receiver<StageJob>),
    /// Recorded into this frame; mapped once the frame is submitted.
    pub recorded: Vec<InFlight<BlockKey>>,
    /// Submissions recorded ahead of time, shared with the submission thread.
    pub submissions: Arc<Mutex<SubmissionPool<BlockKey>>>,
    /// Where outcomes and returned buffers go.
    pub route: ResultRoute<BlockKey>,
    /// The submission thread, while it runs.
    #[cfg(not(target_arch = "wasm32"))]
    pub submission_thread: Option<SubmissionThread>,
    /// Shared with the main world's `FaultInjection` resource.
    #[cfg(feature = "fault-injection")]
    pub panic_submission_thread: Arc<std::sync::atomic::AtomicBool>,
}

impl GpuInference {
    pub fn new(jobs: Receiver<StageJob>, results: Sender<JobOutcome>, kernels: KernelOptions) -> Self {
        let submissions = SubmissionPool::new();
        let route = ResultRoute { results, giver: submissions.giver(), outstanding: OutstandingMaps::default() };
        Self {
            kernels,
            library: None,
            weights: HashMap::new(),
            blocks: HashMap::new(),
            jobs,
            #[cfg(not(target_arch = "wasm32"))]
            to_record: crossbeam_channel::unbounded(),
            recorded: Vec::new(),
            submissions: Arc::new(Mutex::new(submissions)),
            route,
            #[cfg(not(target_arch = "wasm32"))]
            submission_thread: None,
            #[cfg(feature = "fault-injection")]
            panic_submission_thread: Arc::default(),
        }
    }

    /// Jobs for this frame to record: those the submission thread forwarded, and, where no
    /// thread runs (wasm, or it died), the main world's.
    pub fn incoming(&mut self) -> Vec<StageJob> {
        let mut jobs = Vec::new();
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.supervise_submission_thread();
            jobs.extend(self.to_record.1.try_iter());
            if self.submission_thread.is_some() {
                return jobs;
            }
        }
        jobs.extend(self.jobs.try_iter());
        jobs
    }

    /// Notices a submission thread that has stopped and leaves its jobs to this world from now
    /// on; a panic is logged (the job it held has failed already), the end of a shutting-down
    /// app is not.
    #[cfg(not(target_arch = "wasm32"))]
    fn supervise_submission_thread(&mut self) {
        let Some(end) = self.submission_thread.as_mut().and_then(SubmissionThread::stopped) else { return };
        if let ThreadEnd::Panicked(reason) = end {
            error!("the inference submission thread panicked ({reason}); the render world records every request from now on");
        }
        self.submission_thread = None;
    }

    /// Drops the weights, blocks and recorded submissions of every graph that only this world
    /// still holds (a model asset unloaded or replaced, a session's old stages): no job can name
    /// them again. The graphs go last, so that no new graph can take the address in their key
    /// while something is left under it.
    pub fn release_unused_graphs(&mut self) {
        let released: Vec<(GraphKey, ResidentGraph)> = self.weights.extract_if(|_, resident| Arc::strong_count(&resident.graph) == 1).collect();
        if released.is_empty() {
            return;
        }
        self.blocks.retain(|(graph, _), _| !released.iter().any(|(key, _)| key == graph));
        lock(&self.submissions).retain_blocks(&self.blocks);
        drop(released);
    }

    pub fn block_for(&mut self, device: &wgpu::Device, job: &StageJob) -> Result<&GpuBlock, GpuError> {
        let key = block_key(job);
        if !self.blocks.contains_key(&key) {
            let kernels = self.kernels;
            let library = self.library.get_or_insert_with(|| KernelLibrary::with_options(device, kernels));
            let weights = match self.weights.get(&key.0) {
                Some(resident) => resident.weights.clone(),
                None => {
                    let weights = Arc::new(ResidentWeights::upload(device, library, &job.graph)?);
                    self.weights.insert(key.0, ResidentGraph { graph: job.graph.clone(), weights: weights.clone() });
                    weights
                }
            };
            let block = GpuBlock::new(device, library, weights, &job.graph, job.input.shape())?;

            self.blocks.insert(key.clone(), block);
        }
        Ok(&self.blocks[&key])
    }
}

