//! The render world's systems: record jobs, submit the frame, arm the next submissions, map
//! readbacks and poll the device.

use std::task::Poll;

use bevy::prelude::*;
use bevy::render::renderer::{FlushCommands, RenderContext, RenderDevice};

use super::edge_jobs::{record_edge_job, JobAssets, EdgeRecording};
use super::readback::{InFlight, OutputReading};
use super::state::{block_key, GpuInference};
use super::submission::{arm, lock, record_request};
#[cfg(not(target_arch = "wasm32"))]
use super::submission_thread::{SubmissionThread, ThreadSetup};
use crate::gpu::{GpuBlock, GpuClock};
use crate::job::{JobInput, JobOutcome};

/// Starts the submission thread on the render device (again after a device was recovered).
#[cfg(not(target_arch = "wasm32"))]
pub(super) fn start_submission_thread(device: Res<RenderDevice>, queue: Res<bevy::render::renderer::RenderQueue>, mut state: ResMut<GpuInference>) {
    let setup = ThreadSetup {
        device: device.wgpu_device().clone(),
        queue: wgpu::Queue::clone(&queue),
        jobs: state.jobs.clone(),
        to_record: state.to_record.0.clone(),
        pool: state.submissions.clone(),
        route: state.route.clone(),
        block_of: block_key,
        #[cfg(feature = "fault-injection")]
        panic_on_next_job: state.fault_injection.panic_submission_thread.clone(),
    };
    state.submission_thread = match SubmissionThread::start(setup) {
        Ok(thread) => Some(thread),
        Err(error) => {
            warn!("no submission thread ({error}): requests wait for the render world and results for its poll");
            None
        }
    };
}

/// Reads the render device's timestamp clock (again after a device was recovered), so that
/// requests are timed on the GPU where it can write timestamps.
pub(super) fn read_gpu_clock(device: Res<RenderDevice>, queue: Res<bevy::render::renderer::RenderQueue>, mut state: ResMut<GpuInference>) {
    state.clock = GpuClock::of(device.wgpu_device(), &queue);
}

pub(super) fn record_jobs(mut ctx: RenderContext, device: Res<RenderDevice>, assets: JobAssets, mut state: ResMut<GpuInference>) {
    let device = device.wgpu_device();
    let state = &mut *state;
    let mut jobs = std::mem::take(&mut state.waiting);
    jobs.extend(state.incoming());
    for job in jobs {
        match state.ready_block(device, &job) {
            Poll::Pending => {
                state.waiting.push(job);
                continue;
            }
            Poll::Ready(Err(error)) => {
                job.deliver(JobOutcome::of(&job, Err(error.into())), &state.route.results);
                continue;
            }
            Poll::Ready(Ok(())) => {}
        }
        let key = block_key(&job);
        let input = match (&job.input, job.output.read_back_whole_only()) {
            (JobInput::Tensor(tensor), true) => tensor.clone(),
            _ => {
                match record_edge_job(state, device, &assets, ctx.command_encoder(), job, key) {
                    EdgeRecording::Recorded(request) => state.recorded.push(request),
                    EdgeRecording::Waiting(job) => state.waiting.push(job),
                    EdgeRecording::Failed => {}
                }
                continue;
            }
        };
        let block = &state.blocks[&key];
        let library = state.library.as_ref().expect("built with the block");
        // Taken in its own statement, so that the pool's lock is released before recording.
        let armed = lock(&state.submissions).take(&key);
        let request = match armed {
            Some(armed) => {
                let (commands, request) = armed.start(job, &input, key);
                ctx.add_command_buffer(commands);
                request
            }
            None => {
                let (upload, readback) = (block.create_upload(device), block.create_readback(device));
                GpuBlock::fill_upload(&upload, &input);
                let clock = record_request(device, library, block, ctx.command_encoder(), &upload, &readback, state.clock);
                InFlight { job, block: key, upload: Some(upload), readback, reading: OutputReading::Tensor(block.output_shape().to_vec()), block_readback: true, clock }
            }
        };
        state.recorded.push(request);
    }
}

/// Submits the frame's pending command buffers (ours among them). Apps with Bevy's core
/// pipeline submit them too; a second flush finds nothing left to submit.
pub(super) fn submit_recorded(mut flush: FlushCommands) {
    flush.flush();
}

/// Records submissions for the buffers finished requests gave back, after this frame's
/// submission so that no request waits for it. First releases what was compiled for graphs
/// that nothing else holds any more.
pub(super) fn arm_submissions(device: Res<RenderDevice>, mut state: ResMut<GpuInference>) {
    state.release_unused_graphs();
    if let Some(library) = &state.library {
        arm(&state.submissions, device.wgpu_device(), library, &state.blocks, state.clock);
    }
}

pub(super) fn map_readbacks(mut state: ResMut<GpuInference>) {
    if state.recorded.is_empty() {
        return;
    }
    for request in std::mem::take(&mut state.recorded) {
        state.route.map(request);
    }
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(thread) = &state.submission_thread {
        thread.wake();
    }
}

pub(super) fn poll_device(device: Res<RenderDevice>) {
    // Non-blocking: runs map callbacks of finished submissions.
    let _ = device.poll(wgpu::PollType::Poll);
}
