//! Render-world systems. Jobs come from the main world over a channel. On native targets a
//! [`SubmissionWorker`] thread takes them first and submits at once those whose block has
//! commands recorded ahead of time; the rest reach [`record_jobs`], which compiles the block if
//! needed and records them into the frame's command encoder from the `RenderGraph` schedule.
//! Results come back through async maps whose callbacks send them over a channel (see
//! [`super::readback`]). No system waits on the GPU.
//!
//! A finished request gives its upload buffer (mapped for writing again) and its readback buffer
//! back to a [`SubmissionPool`], which records the next request's commands for them after the
//! frame's submission. A request that finds such a submission only writes its input into memory
//! that is already allocated and mapped, and hands the finished command buffer over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bevy::asset::AssetId;
use bevy::platform::time::Instant;
use bevy::prelude::*;
use bevy::render::renderer::{FlushCommands, RenderContext, RenderDevice, RenderGraph, RenderGraphSystems};
use bevy::render::{Render, RenderApp, RenderSystems};
use crossbeam_channel::{Receiver, Sender};

use super::engine::{GpuBlock, GpuError, ResidentWeights};
use super::library::{KernelLibrary, KernelOptions};
use super::readback::{InFlight, OutstandingMaps, ResultRoute};
use super::submission::{arm, lock, SubmissionPool};
#[cfg(not(target_arch = "wasm32"))]
use super::worker::{SubmissionWorker, WorkerSetup};
use crate::model::ir::Graph;
use crate::model::Model;
use crate::schedule::{JobOutcome, StageJob};

/// Adds the render-world half of inference.
pub(crate) struct RenderInferencePlugin {
    /// Jobs from the main world.
    pub jobs: Receiver<StageJob>,
    /// Outcomes for the main world.
    pub results: Sender<JobOutcome>,
    pub kernels: KernelOptions,
}

impl Plugin for RenderInferencePlugin {
    fn build(&self, app: &mut App) {
        let Some(render_app) = app.get_sub_app_mut(RenderApp) else {
            warn!("no render app: GPU inference is unavailable");
            return;
        };
        render_app
            .insert_resource(GpuInference::new(self.jobs.clone(), self.results.clone(), self.kernels))
            .add_systems(RenderGraph, record_jobs.in_set(RenderGraphSystems::Render))
            .add_systems(RenderGraph, submit_recorded.in_set(RenderGraphSystems::Submit))
            .add_systems(RenderGraph, arm_submissions.after(submit_recorded))
            // Readbacks are mapped once their commands have been submitted.
            .add_systems(Render, (map_readbacks, poll_device).chain().in_set(RenderSystems::Cleanup));
        #[cfg(not(target_arch = "wasm32"))]
        render_app.add_systems(bevy::render::RenderStartup, start_worker);
    }
}

/// Identifies a graph (a whole model or one stage of it) by its asset and its shared allocation.
type GraphKey = (AssetId<Model>, usize);

/// Identifies a compiled block: its graph and input shape.
type BlockKey = (GraphKey, Vec<usize>);

fn graph_key(job: &StageJob) -> GraphKey {
    (job.model, Arc::as_ptr(&job.graph) as usize)
}

fn block_key(job: &StageJob) -> BlockKey {
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
struct GpuInference {
    kernels: KernelOptions,
    library: Option<KernelLibrary>,
    weights: HashMap<GraphKey, ResidentGraph>,
    blocks: HashMap<BlockKey, GpuBlock>,
    /// Jobs from the main world: the worker's to take while it runs, else this world's.
    jobs: Receiver<StageJob>,
    /// Jobs the worker forwards because their block has no recorded submission ready.
    #[cfg(not(target_arch = "wasm32"))]
    to_record: (Sender<StageJob>, Receiver<StageJob>),
    /// Recorded into this frame; mapped once the frame is submitted.
    recorded: Vec<InFlight<BlockKey>>,
    submissions: Arc<Mutex<SubmissionPool<BlockKey>>>,
    route: ResultRoute<BlockKey>,
    #[cfg(not(target_arch = "wasm32"))]
    worker: Option<SubmissionWorker>,
}

impl GpuInference {
    fn new(jobs: Receiver<StageJob>, results: Sender<JobOutcome>, kernels: KernelOptions) -> Self {
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
            worker: None,
        }
    }

    /// Jobs for this frame to record.
    fn incoming(&self) -> Vec<StageJob> {
        #[cfg(not(target_arch = "wasm32"))]
        if self.worker.is_some() {
            return self.to_record.1.try_iter().collect();
        }
        self.jobs.try_iter().collect()
    }

    /// Drops the weights, blocks and recorded submissions of every graph that only this world
    /// still holds (a model asset unloaded or replaced, a session's old stages): no job can name
    /// them again. The graphs go last, so that no new graph can take the address in their key
    /// while something is left under it.
    fn release_unused_graphs(&mut self) {
        let released: Vec<(GraphKey, ResidentGraph)> = self.weights.extract_if(|_, resident| Arc::strong_count(&resident.graph) == 1).collect();
        if released.is_empty() {
            return;
        }
        self.blocks.retain(|(graph, _), _| !released.iter().any(|(key, _)| key == graph));
        lock(&self.submissions).retain_blocks(&self.blocks);
        drop(released);
    }

    fn block_for(&mut self, device: &wgpu::Device, job: &StageJob) -> Result<&GpuBlock, GpuError> {
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

/// Starts the submission thread on the render device (again after a device was recovered).
#[cfg(not(target_arch = "wasm32"))]
fn start_worker(device: Res<RenderDevice>, queue: Res<bevy::render::renderer::RenderQueue>, mut state: ResMut<GpuInference>) {
    let setup = WorkerSetup {
        device: device.wgpu_device().clone(),
        queue: wgpu::Queue::clone(&queue),
        jobs: state.jobs.clone(),
        to_record: state.to_record.0.clone(),
        pool: state.submissions.clone(),
        route: state.route.clone(),
        block_of: block_key,
    };
    state.worker = match SubmissionWorker::start(setup) {
        Ok(worker) => Some(worker),
        Err(error) => {
            warn!("no submission thread ({error}): requests wait for the render world and results for its poll");
            None
        }
    };
}

fn record_jobs(mut ctx: RenderContext, device: Res<RenderDevice>, mut state: ResMut<GpuInference>) {
    let device = device.wgpu_device();
    let state = &mut *state;
    for job in state.incoming() {
        if let Err(error) = state.block_for(device, &job) {
            let _ = state.route.results.send(JobOutcome { tag: job.tag, entity: job.entity, started: job.started, finished: Instant::now(), result: Err(error) });
            continue;
        }
        let key = block_key(&job);
        let block = &state.blocks[&key];
        let library = state.library.as_ref().expect("built with the block");
        // Taken in its own statement, so that the pool's lock is released before recording.
        let armed = lock(&state.submissions).take(&key);
        let request = match armed {
            Some(armed) => {
                let (commands, request) = armed.start(job, key);
                ctx.add_command_buffer(commands);
                request
            }
            None => {
                let (upload, readback) = (block.create_upload(device), block.create_readback(device));
                GpuBlock::fill_upload(&upload, &job.input);
                block.encode(library, ctx.command_encoder(), &upload, &readback);
                InFlight { job, block: key, upload, readback, output_shape: block.output_shape().to_vec() }
            }
        };
        state.recorded.push(request);
    }
}

/// Submits the frame's pending command buffers (ours among them). Apps with Bevy's core
/// pipeline submit them too; a second flush finds nothing left to submit.
fn submit_recorded(mut flush: FlushCommands) {
    flush.flush();
}

/// Records submissions for the buffers finished requests gave back, after this frame's
/// submission so that no request waits for it. First releases what was compiled for graphs
/// that nothing else holds any more.
fn arm_submissions(device: Res<RenderDevice>, mut state: ResMut<GpuInference>) {
    state.release_unused_graphs();
    if let Some(library) = &state.library {
        arm(&state.submissions, device.wgpu_device(), library, &state.blocks);
    }
}

fn map_readbacks(mut state: ResMut<GpuInference>) {
    if state.recorded.is_empty() {
        return;
    }
    for request in std::mem::take(&mut state.recorded) {
        state.route.map(request);
    }
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(worker) = &state.worker {
        worker.wake();
    }
}

fn poll_device(device: Res<RenderDevice>) {
    // Non-blocking: runs map callbacks of finished submissions.
    let _ = device.poll(wgpu::PollType::Poll);
}
