//! Render-world systems: jobs extracted from the main world are recorded into the frame's
//! command encoder from the `RenderGraph` schedule; results come back through an async map
//! whose callback sends them over a channel, polled by a [`ReadbackPoller`] thread so that a
//! result reaches the main world the frame after the GPU finishes. No system waits on the GPU.
//!
//! A finished request gives its upload buffer (mapped for writing again) and its readback buffer
//! back to a [`SubmissionPool`], which records the next request's commands for them after the
//! frame's submission. A request that finds such a submission only writes its input into memory
//! that is already allocated and mapped, and hands the finished command buffer over; otherwise
//! its commands are recorded into the frame's encoder.

use std::collections::HashMap;
use std::sync::Arc;

use bevy::asset::AssetId;
use bevy::platform::time::Instant;
use bevy::prelude::*;
use bevy::render::renderer::{FlushCommands, RenderContext, RenderDevice, RenderGraph, RenderGraphSystems};
use bevy::render::{ExtractSchedule, MainWorld, Render, RenderApp, RenderSystems};
use crossbeam_channel::Sender;

use super::engine::{read_mapped, GpuBlock, GpuError, ResidentWeights};
use super::library::{KernelLibrary, KernelOptions};
use super::readback::ReadbackPoller;
use super::submission::{ReturnedBuffer, SubmissionPool};
use crate::model::Model;
use crate::schedule::{JobOutcome, JobQueue, StageJob};

/// Adds the render-world half of inference.
pub(crate) struct RenderInferencePlugin {
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
            .insert_resource(GpuInference::new(self.results.clone(), self.kernels))
            .add_systems(ExtractSchedule, extract_jobs)
            .add_systems(RenderGraph, record_jobs.in_set(RenderGraphSystems::Render))
            .add_systems(RenderGraph, submit_recorded.in_set(RenderGraphSystems::Submit))
            .add_systems(RenderGraph, arm_submissions.after(submit_recorded))
            // Readbacks are mapped once their commands have been submitted.
            .add_systems(Render, (map_readbacks, poll_device).chain().in_set(RenderSystems::Cleanup));
    }
}

/// A recorded request whose readback is mapped once its submission has been made; its upload
/// buffer is mapped for writing again, for reuse.
struct Recorded {
    job: StageJob,
    readback: wgpu::Buffer,
    upload: wgpu::Buffer,
    shape: Vec<usize>,
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

/// Render-world state: pipelines, resident weights, compiled blocks and jobs in flight.
#[derive(Resource)]
struct GpuInference {
    kernels: KernelOptions,
    library: Option<KernelLibrary>,
    weights: HashMap<GraphKey, Arc<ResidentWeights>>,
    blocks: HashMap<BlockKey, GpuBlock>,
    queued: Vec<StageJob>,
    recorded: Vec<Recorded>,
    submissions: SubmissionPool<BlockKey>,
    results: Sender<JobOutcome>,
    poller: Option<ReadbackPoller>,
}

impl GpuInference {
    fn new(results: Sender<JobOutcome>, kernels: KernelOptions) -> Self {
        Self {
            kernels,
            library: None,
            weights: HashMap::new(),
            blocks: HashMap::new(),
            queued: Vec::new(),
            recorded: Vec::new(),
            submissions: SubmissionPool::new(),
            results,
            poller: None,
        }
    }

    fn block_for(&mut self, device: &wgpu::Device, job: &StageJob) -> Result<&GpuBlock, GpuError> {
        let key = block_key(job);
        if !self.blocks.contains_key(&key) {
            let kernels = self.kernels;
            let library = self.library.get_or_insert_with(|| KernelLibrary::with_options(device, kernels));
            let weights = match self.weights.get(&key.0) {
                Some(w) => w.clone(),
                None => {
                    let w = Arc::new(ResidentWeights::upload(device, library, &job.graph)?);
                    self.weights.insert(key.0, w.clone());
                    w
                }
            };
            let block = GpuBlock::new(device, library, weights, &job.graph, job.input.shape())?;

            self.blocks.insert(key.clone(), block);
        }
        Ok(&self.blocks[&key])
    }
}

fn extract_jobs(mut main_world: ResMut<MainWorld>, mut state: ResMut<GpuInference>) {
    if let Some(mut queue) = main_world.get_resource_mut::<JobQueue>() {
        state.queued.append(&mut queue.take());
    }
}

fn record_jobs(mut ctx: RenderContext, device: Res<RenderDevice>, mut state: ResMut<GpuInference>) {
    let device = device.wgpu_device();
    let state = &mut *state;
    for job in std::mem::take(&mut state.queued) {
        if let Err(error) = state.block_for(device, &job) {
            let _ = state.results.send(JobOutcome { tag: job.tag, entity: job.entity, started: job.started, finished: Instant::now(), result: Err(error) });
            continue;
        }
        let key = block_key(&job);
        let block = &state.blocks[&key];
        let library = state.library.as_ref().expect("built with the block");
        let (upload, readback) = match state.submissions.take(&key) {
            Some(armed) => {
                GpuBlock::fill_upload(&armed.upload, &job.input);
                ctx.add_command_buffer(armed.commands);
                (armed.upload, armed.readback)
            }
            None => {
                let (upload, readback) = (block.create_upload(device), block.create_readback(device));
                GpuBlock::fill_upload(&upload, &job.input);
                block.encode(library, ctx.command_encoder(), &upload, &readback);
                (upload, readback)
            }
        };
        state.recorded.push(Recorded { job, readback, upload, shape: block.output_shape().to_vec() });
    }
}

/// Submits the frame's pending command buffers (ours among them). Apps with Bevy's core
/// pipeline submit them too; a second flush finds nothing left to submit.
fn submit_recorded(mut flush: FlushCommands) {
    flush.flush();
}

/// Records submissions for the buffers finished requests gave back, after this frame's
/// submission so that no request waits for it.
fn arm_submissions(device: Res<RenderDevice>, mut state: ResMut<GpuInference>) {
    let state = &mut *state;
    if let Some(library) = &state.library {
        state.submissions.arm(device.wgpu_device(), library, &state.blocks);
    }
}

fn map_readbacks(device: Res<RenderDevice>, mut state: ResMut<GpuInference>) {
    if state.recorded.is_empty() {
        return;
    }
    let state = &mut *state;
    let poller = state.poller.get_or_insert_with(|| ReadbackPoller::new(device.wgpu_device().clone()));
    for Recorded { job, readback, upload, shape } in std::mem::take(&mut state.recorded) {
        let key = block_key(&job);
        let results = state.results.clone();
        let (buffer, giver) = (readback.clone(), state.submissions.giver());
        let readback_key = key.clone();
        let outstanding = poller.register();
        readback.slice(..).map_async(wgpu::MapMode::Read, move |mapped| {
            let result = mapped
                .map(|()| read_mapped(&buffer, shape))
                .map_err(|e| GpuError::Readback(e.to_string()));
            let reusable = result.is_ok();
            let _ = results.send(JobOutcome { tag: job.tag, entity: job.entity, started: job.started, finished: Instant::now(), result });
            if reusable {
                let _ = giver.send(ReturnedBuffer::Readback(readback_key, buffer));
            }
            drop(outstanding);
        });
        // Mapped for writing once the request's copy has run; a failed map only costs the reuse.
        let (buffer, giver) = (upload.clone(), state.submissions.giver());
        let outstanding = poller.register();
        upload.slice(..).map_async(wgpu::MapMode::Write, move |mapped| {
            if mapped.is_ok() {
                let _ = giver.send(ReturnedBuffer::Upload(key, buffer));
            }
            drop(outstanding);
        });
    }
    poller.wake();
}

fn poll_device(device: Res<RenderDevice>) {
    // Non-blocking: runs map callbacks of finished submissions.
    let _ = device.poll(wgpu::PollType::Poll);
}
