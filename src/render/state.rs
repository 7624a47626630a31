//! The render world's inference state: the kernel library, resident weights, compiled blocks,
//! the submission pool and the jobs recorded into the current frame.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bevy::asset::AssetId;
use bevy::prelude::*;
use crossbeam_channel::{Receiver, Sender};

use super::readback::{InFlight, OutstandingMaps, ResultRoute};
use super::recency::Recency;
use super::submission::{lock, SubmissionPool};
#[cfg(not(target_arch = "wasm32"))]
use super::submission_thread::{SubmissionThread, ThreadEnd};
use super::transfers::GpuTransfers;
use crate::gpu::{DeviceCheck, DeviceRefusal, GpuBlock, GpuClock, GpuError, ImageInputKernel, ImageOutputKernel, KernelLibrary, KernelOptions, ResidentWeights, TopKKernel};
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
    (graph_key(job), job.input.shape())
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
    /// Built with the first job whose input is a texture.
    pub image_input: Option<ImageInputKernel>,
    /// Built with the first job whose output goes into a texture.
    pub image_output: Option<ImageOutputKernel>,
    /// Built with the first job that reads back only its output's top classes.
    pub top_k: Option<TopKKernel>,
    weights: HashMap<GraphKey, ResidentGraph>,
    /// Compiled blocks by graph and input shape, once the device has accepted them.
    pub blocks: HashMap<BlockKey, GpuBlock>,
    /// Compiled blocks whose kernels, buffers or bind groups the device has yet to accept (in a
    /// browser its verdict comes after the page's next task); nothing is recorded for them.
    unchecked: HashMap<BlockKey, (GpuBlock, DeviceCheck)>,
    /// Blocks the device refused: later jobs for them fail at once.
    refused: HashMap<BlockKey, DeviceRefusal>,
    /// When each block (ready or refused) was last asked for.
    recency: Recency<BlockKey>,
    /// The most blocks (ready or refused) kept: the least recently used go beyond it.
    max_blocks: usize,
    /// Jobs waiting for their block's check.
    pub waiting: Vec<StageJob>,
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
    /// The render device's timestamp clock, where it can write timestamps: requests are then
    /// timed on the GPU.
    pub clock: Option<GpuClock>,
    /// The submission thread, while it runs.
    #[cfg(not(target_arch = "wasm32"))]
    pub submission_thread: Option<SubmissionThread>,
    /// Shared with the main world's `FaultInjection` resource.
    #[cfg(feature = "fault-injection")]
    pub fault_injection: crate::testing::FaultInjection,
}

impl GpuInference {
    pub fn new(jobs: Receiver<StageJob>, results: Sender<JobOutcome>, transfers: GpuTransfers, kernels: KernelOptions, max_blocks: usize) -> Self {
        let submissions = SubmissionPool::new();
        let route = ResultRoute { results, giver: submissions.giver(), outstanding: OutstandingMaps::default(), transfers };
        Self {
            kernels,
            library: None,
            image_input: None,
            image_output: None,
            top_k: None,
            weights: HashMap::new(),
            blocks: HashMap::new(),
            unchecked: HashMap::new(),
            refused: HashMap::new(),
            recency: Recency::new(),
            max_blocks: max_blocks.max(1),
            waiting: Vec::new(),
            jobs,
            #[cfg(not(target_arch = "wasm32"))]
            to_record: crossbeam_channel::unbounded(),
            recorded: Vec::new(),
            submissions: Arc::new(Mutex::new(submissions)),
            route,
            clock: None,
            #[cfg(not(target_arch = "wasm32"))]
            submission_thread: None,
            #[cfg(feature = "fault-injection")]
            fault_injection: Default::default(),
        }
    }

    /// Whether a job waits to be recorded by the render world: run condition of `record_jobs`.
    pub fn has_jobs(state: Res<Self>) -> bool {
        #[cfg(not(target_arch = "wasm32"))]
        if !state.to_record.1.is_empty() {
            return true;
        }
        !state.waiting.is_empty() || !state.jobs.is_empty()
    }

    /// Whether jobs were recorded into this frame: run condition of mapping their readbacks.
    pub fn has_recorded(state: Res<Self>) -> bool {
        !state.recorded.is_empty()
    }

    /// Whether jobs were recorded into this frame or wait for their texture (whose recording
    /// may have opened the frame's command encoder): run condition of the frame's submission.
    pub fn has_recorded_or_waiting(state: Res<Self>) -> bool {
        !state.recorded.is_empty() || !state.waiting.is_empty()
    }

    /// Whether any graph has weights on this GPU: run condition of arming submissions and
    /// releasing graphs nothing holds any more.
    pub fn has_graphs(state: Res<Self>) -> bool {
        !state.weights.is_empty()
    }

    /// Whether a readback's map callback has yet to run: run condition of polling the device.
    pub fn has_outstanding_maps(state: Res<Self>) -> bool {
        state.route.outstanding.any()
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
        let live = |(graph, _): &BlockKey| !released.iter().any(|(key, _)| key == graph);
        self.blocks.retain(|key, _| live(key));
        self.unchecked.retain(|key, _| live(key));
        self.refused.retain(|key, _| live(key));
        self.recency.retain(live);
        lock(&self.submissions).retain_blocks(&self.blocks);
        drop(released);
    }

    /// Whether `job`'s block is ready to record: compiles it (and uploads the graph's weights)
    /// the first time, inside a [`DeviceCheck`]; pending until the device has accepted the
    /// block and the kernels it dispatches, an error if it cannot be built or was refused.
    pub fn ready_block(&mut self, device: &wgpu::Device, job: &StageJob) -> Poll<Result<(), GpuError>> {
        let key = block_key(job);
        if self.blocks.contains_key(&key) {
            self.recency.touch(&key);
            return Poll::Ready(Ok(()));
        }
        if let Some(refusal) = self.refused.get(&key) {
            self.recency.touch(&key);
            return Poll::Ready(Err(refusal.clone().into()));
        }
        if !self.unchecked.contains_key(&key) {
            let kernels = self.kernels;
            #[cfg(feature = "fault-injection")]
            let broken = self.fault_injection.broken_shader();
            #[cfg(not(feature = "fault-injection"))]
            let broken = None;
            let library = self.library.get_or_insert_with(|| build_library(device, kernels, broken));
            let shape = job.input.shape();
            let what = format!("the block for input {shape:?} (its weights, buffers and bind groups)");
            let (block, check) = DeviceCheck::around(device, what, || -> Result<GpuBlock, GpuError> {
                let weights = match self.weights.get(&key.0) {
                    Some(resident) => resident.weights.clone(),
                    None => {
                        let weights = Arc::new(ResidentWeights::upload(device, library, &job.graph)?);
                        self.weights.insert(key.0, ResidentGraph { graph: job.graph.clone(), weights: weights.clone() });
                        weights
                    }
                };
                GpuBlock::new(device, library, weights, &job.graph, &shape)
            });
            if let Err(error) = block {
                return Poll::Ready(Err(error));
            }
            self.unchecked.insert(key.clone(), (block.expect("checked above"), check));
        }
        let library = self.library.as_ref().expect("built with the first block");
        let (block, check) = &self.unchecked[&key];
        let verdict = match (library.check(block.kernels()), check.poll()) {
            (Poll::Ready(Err(refusal)), _) | (_, Poll::Ready(Err(refusal))) => Err(refusal),
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => Ok(()),
            _ => return Poll::Pending,
        };
        let (block, _) = self.unchecked.remove(&key).expect("present above");
        self.recency.touch(&key);
        let evicted = self.recency.evict_beyond(self.max_blocks);
        if !evicted.is_empty() {
            for old in &evicted {
                self.blocks.remove(old);
                self.refused.remove(old);
            }
            lock(&self.submissions).retain_blocks(&self.blocks);
        }
        match verdict {
            Ok(()) => {
                self.blocks.insert(key, block);
                Poll::Ready(Ok(()))
            }
            Err(refusal) => {
                error!("{refusal}");
                self.refused.insert(key, refusal.clone());
                Poll::Ready(Err(refusal.into()))
            }
        }
    }
}

/// The kernel library, with one shader family made invalid where a test asked for it.
fn build_library(device: &wgpu::Device, kernels: KernelOptions, broken: Option<crate::gpu::KernelFamily>) -> KernelLibrary {
    match broken {
        #[cfg(feature = "fault-injection")]
        Some(family) => KernelLibrary::with_broken_family(device, kernels, family),
        _ => KernelLibrary::with_options(device, kernels),
    }
}
