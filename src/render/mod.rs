//! The Bevy integration of the engine: render-world systems that compile blocks, record and
//! submit jobs, and hand results back to the main world. It knows jobs (the crate's `job` module), not
//! requests or peers, and no system here waits on the GPU.
//!
//! ```text
//!  main world                      render side                                   GPU
//!  ----------                      -----------                                   ---
//!  JobQueue ──jobs──► submission thread (native) ──Queue::submit────────────────► runs
//!                       │  block armed? submit now                                  │
//!                       └──to_record──► render world, RenderGraph schedule          │
//!  (wasm: the render world          record_jobs: compile block, record job          │
//!   takes `jobs` itself)            submit_recorded: flush the frame's commands ──► runs
//!                                   arm_submissions: record the next requests'      │
//!                                     commands for returned buffers (pool) ◄─┐      │
//!                                   map_readbacks, poll_device               │      │
//!                                                                            │      ▼
//!  JobResults ◄──outcomes── map callback (readback): read output ──returned buffers─┘
//! ```
//!
//! Three threads: the main world, the render world (Bevy's pipelined rendering), and the
//! submission thread (`submission_thread`, native only). Channels: `jobs`
//! (main world → submission thread, or the render world on wasm and after the thread died),
//! `to_record` (submission thread → render world), `outcomes` (map callbacks → main world),
//! `returned` (map callbacks → the submission pool (`submission`)) and `wake`
//! (render world → submission thread, when it registers maps to poll for).
//!
//! A finished request gives its upload buffer (mapped for writing again) and its readback buffer
//! back to the submission pool, which records the next request's commands for them after the
//! frame's submission. A request that finds such a submission only writes its input into memory
//! that is already allocated and mapped, and hands the finished command buffer over.
//!
//! The submission thread is supervised: if it dies, the job it held fails, the render world logs
//! why and records every job itself from then on.

mod capabilities;
mod edge_jobs;
mod readback;
mod recency;
mod state;
mod submission;
#[cfg(not(target_arch = "wasm32"))]
mod submission_thread;
mod systems;
mod transfers;

use bevy::prelude::*;
use bevy::render::renderer::{RenderGraph, RenderGraphSystems};
use bevy::render::{Render, RenderApp, RenderSystems};
use crossbeam_channel::{Receiver, Sender};

pub use capabilities::GpuCapabilities;
pub use transfers::{GpuTransfers, TransferTotals};
use crate::gpu::KernelOptions;
use crate::job::{JobOutcome, StageJob};
use state::GpuInference;
use systems::{arm_submissions, map_readbacks, poll_device, record_jobs, submit_recorded};

/// Adds the render-world half of inference.
pub(crate) struct RenderInferencePlugin {
    /// Jobs from the main world.
    pub jobs: Receiver<StageJob>,
    /// Outcomes for the main world.
    pub results: Sender<JobOutcome>,
    /// The transfer counts, also a main-world resource.
    pub transfers: GpuTransfers,
    /// Which kernels run the blocks.
    pub kernels: KernelOptions,
    /// The most compiled blocks kept (see [`crate::P2pInferencePlugin::max_compiled_blocks`]).
    pub max_blocks: usize,
    /// The main world's test hooks (feature `fault-injection`).
    #[cfg(feature = "fault-injection")]
    pub fault_injection: crate::testing::FaultInjection,
}

impl Plugin for RenderInferencePlugin {
    fn build(&self, app: &mut App) {
        app.add_systems(Startup, capabilities::describe_gpu);
        let Some(render_app) = app.get_sub_app_mut(RenderApp) else {
            warn!("no render app: GPU inference is unavailable");
            return;
        };
        #[allow(unused_mut)]
        let mut state = GpuInference::new(self.jobs.clone(), self.results.clone(), self.transfers.clone(), self.kernels, self.max_blocks);
        #[cfg(feature = "fault-injection")]
        {
            state.fault_injection = self.fault_injection.clone();
        }
        render_app
            .insert_resource(state)
            // Each runs only when it has something to do, so that a frame without inference
            // costs nothing here.
            .add_systems(RenderGraph, record_jobs.run_if(GpuInference::has_jobs).in_set(RenderGraphSystems::Render))
            .add_systems(RenderGraph, submit_recorded.run_if(GpuInference::has_recorded_or_waiting).in_set(RenderGraphSystems::Submit))
            .add_systems(RenderGraph, arm_submissions.run_if(GpuInference::has_graphs).after(submit_recorded))
            // Readbacks are mapped once their commands have been submitted.
            .add_systems(Render, (map_readbacks.run_if(GpuInference::has_recorded), poll_device.run_if(GpuInference::has_outstanding_maps)).chain().in_set(RenderSystems::Cleanup));
        render_app.add_systems(bevy::render::RenderStartup, systems::read_gpu_clock);
        #[cfg(not(target_arch = "wasm32"))]
        render_app.add_systems(bevy::render::RenderStartup, systems::start_submission_thread);
    }
}
