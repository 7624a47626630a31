//! [`P2pInferencePlugin`]: the one plugin a game adds.

use bevy::ecs::schedule::ScheduleConfigs;
use bevy::ecs::system::ScheduleSystem;
use bevy::prelude::*;

use crate::gpu::KernelOptions;
use crate::secret::SecretKey;
use crate::render::{GpuTransfers, RenderInferencePlugin};
use crate::schedule::continuous::{forward_run_failure, forward_run_prediction, start_continuous_runs, ContinuousInference};
use crate::schedule::image_request::{submit_image_requests, ImageInferenceRequest};
use crate::model::{Model, OnnxLoader, PartitionPlan, PlanLoader};
use crate::schedule::sliced::{receive_layer_slices, start_layer_slices, submit_layer_slices, LayerSlicer};
use crate::schedule::layer_slices::SliceAcrossFrames;
use crate::schedule::{receive_results, submit_requests, InferenceRequest, InferenceSystems, JobQueue, JobResults, StageOutcomes, TopK};

/// Runs [`crate::InferenceRequest`]s on the GPU and reports [`crate::Prediction`]s.
#[derive(Clone, Debug)]
pub struct P2pInferencePlugin {
    /// How many classes each prediction lists (default 3).
    pub top_k: usize,
    /// Which kernels run the blocks: subgroup variants where offered and f32 storage by
    /// default; `StoragePrecision::F16` halves the memory tensors take (on an H100 it is not
    /// faster: BENCHMARKS.md).
    pub kernels: KernelOptions,
    /// The most compiled blocks (a graph for one input shape, with its activation buffers)
    /// the GPU keeps (default 32); the least recently used beyond it are dropped and compiled
    /// again if asked for, so that inputs of ever new shapes cannot fill GPU memory.
    pub max_compiled_blocks: usize,
    /// The key `.onnx.sealed` models are opened with (see [`crate::model::seal_model`]);
    /// `None`: sealed models fail to load with [`crate::model::SealError::NoKey`]. With a key,
    /// every model must be sealed: a plain `.onnx` fails with
    /// [`crate::model::SealError::NotSealed`], so that none can be put in a sealed one's place.
    pub model_key: Option<SecretKey>,
}

impl Default for P2pInferencePlugin {
    fn default() -> Self {
        Self { top_k: 3, kernels: KernelOptions::default(), max_compiled_blocks: 32, model_key: None }
    }
}

impl Plugin for P2pInferencePlugin {
    fn build(&self, app: &mut App) {
        let (results, results_rx) = crossbeam_channel::unbounded();
        let (jobs, jobs_rx) = crossbeam_channel::unbounded();
        #[cfg(feature = "fault-injection")]
        let fault_injection = crate::testing::FaultInjection::default();
        #[cfg(feature = "fault-injection")]
        app.insert_resource(fault_injection.clone());
        let transfers = GpuTransfers::default();
        app.init_asset::<Model>()
            .register_asset_loader(OnnxLoader { key: self.model_key.clone() })
            .init_asset::<PartitionPlan>()
            .register_asset_loader(PlanLoader)
            .insert_resource(JobQueue(jobs))
            .init_resource::<StageOutcomes>()
            .insert_resource(JobResults { receiver: results_rx, sender: results.clone() })
            .insert_resource(TopK(self.top_k))
            .insert_resource(transfers.clone())
            .init_resource::<LayerSlicer>()
            // Every system here runs only when it has something to do: a game that asks for
            // nothing pays for the checks, not for the systems (BENCHMARKS.md, idle frame).
            .add_systems(PreUpdate, receiving().in_set(InferenceSystems::ReceiveResults))
            // Requests made since the last frame's submission (spawned between frames, by an
            // observer of the last frame's predictions, or in `First`) go to the GPU at the start
            // of the frame, not at its end; those made in `Update` in `PostUpdate`.
            .configure_sets(PreUpdate, InferenceSystems::SubmitRequests.after(InferenceSystems::ReceiveResults))
            .add_systems(PreUpdate, submitting().in_set(InferenceSystems::SubmitRequests))
            .add_systems(PostUpdate, receiving().in_set(InferenceSystems::ReceiveResults))
            .add_systems(Last, receiving().in_set(InferenceSystems::ReceiveResults))
            .configure_sets(PostUpdate, InferenceSystems::ReceiveResults.before(InferenceSystems::SubmitRequests))
            .add_systems(
                PostUpdate,
                (submitting(), (start_layer_slices.run_if(any_with_component::<SliceAcrossFrames>), submit_layer_slices).chain()).in_set(InferenceSystems::SubmitRequests),
            )
            .add_systems(
                PostUpdate,
                start_continuous_runs
                    .run_if(any_with_component::<ContinuousInference>)
                    .after(InferenceSystems::ReceiveResults)
                    .before(InferenceSystems::SubmitRequests),
            )
            .add_observer(forward_run_prediction)
            .add_observer(forward_run_failure)
            .add_plugins(RenderInferencePlugin {
                jobs: jobs_rx,
                results,
                transfers,
                kernels: self.kernels,
                max_blocks: self.max_compiled_blocks,
                #[cfg(feature = "fault-injection")]
                fault_injection: fault_injection.clone(),
            });
    }
}

/// Takes the render side's outcomes into the main world, where there are any.
fn receiving() -> ScheduleConfigs<ScheduleSystem> {
    (
        receive_results.run_if(|results: Res<JobResults>| !results.receiver.is_empty()),
        receive_layer_slices.run_if(|outcomes: Res<StageOutcomes>| !outcomes.0.is_empty()),
    )
        .chain()
}

/// Hands requests (tensors and images) to the render side, where there are any.
fn submitting() -> ScheduleConfigs<ScheduleSystem> {
    (submit_requests.run_if(any_with_component::<InferenceRequest>), submit_image_requests.run_if(any_with_component::<ImageInferenceRequest>)).into_configs()
}
