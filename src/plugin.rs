//! [`P2pInferencePlugin`]: the one plugin a game adds.

use bevy::prelude::*;

use crate::gpu::{KernelOptions, RenderInferencePlugin};
use crate::model::{Model, OnnxLoader, PartitionPlan, PlanLoader};
use crate::schedule::{receive_results, submit_requests, InferenceSystems, JobQueue, JobResults, StageOutcomes, TopK};

/// Runs [`crate::InferenceRequest`]s on the GPU and reports [`crate::Prediction`]s.
#[derive(Clone, Debug)]
pub struct P2pInferencePlugin {
    /// How many classes each prediction lists (default 3).
    pub top_k: usize,
    /// Which kernels run the blocks: subgroup variants where offered and f32 storage by
    /// default; `StoragePrecision::F16` halves the memory tensors take (on an H100 it is not
    /// faster: BENCHMARKS.md).
    pub kernels: KernelOptions,
}

impl Default for P2pInferencePlugin {
    fn default() -> Self {
        Self { top_k: 3, kernels: KernelOptions::default() }
    }
}

impl Plugin for P2pInferencePlugin {
    fn build(&self, app: &mut App) {
        let (results, results_rx) = crossbeam_channel::unbounded();
        let (jobs, jobs_rx) = crossbeam_channel::unbounded();
        app.init_asset::<Model>()
            .register_asset_loader(OnnxLoader)
            .init_asset::<PartitionPlan>()
            .register_asset_loader(PlanLoader)
            .insert_resource(JobQueue(jobs))
            .init_resource::<StageOutcomes>()
            .insert_resource(JobResults(results_rx))
            .insert_resource(TopK(self.top_k))
            .add_systems(PreUpdate, receive_results.in_set(InferenceSystems::ReceiveResults))
            .add_systems(Last, receive_results.in_set(InferenceSystems::ReceiveResults))
            .add_systems(PostUpdate, submit_requests.in_set(InferenceSystems::SubmitRequests))
            .add_plugins(RenderInferencePlugin { jobs: jobs_rx, results, kernels: self.kernels });
    }
}

/// Bevy's default plugins without windowing or input: for servers, tools and tests that only
/// need the renderer (runs the app loop with no frame pacing).
pub fn headless_plugins() -> impl PluginGroup {
    DefaultPlugins.set(WindowPlugin {
        primary_window: None,
        exit_condition: bevy::window::ExitCondition::DontExit,
        ..default()
    })
}

/// Why [`update_until_prediction`] returned without a prediction.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The request failed.
    #[error(transparent)]
    Failed(#[from] crate::InferenceError),
    /// No result arrived in time.
    #[error("no result after {0:?}")]
    Timeout(std::time::Duration),
}

/// Runs `app.update()` until the request on `entity` has a prediction or fails: for command-line
/// tools and tests that drive an app by hand. Returns the prediction and the frames it took.
pub fn update_until_prediction(
    app: &mut App,
    entity: Entity,
    timeout: std::time::Duration,
) -> Result<(crate::Prediction, u32), WaitError> {
    update_until_prediction_with(app, entity, timeout, |_| {})
}

/// [`update_until_prediction`], calling `after_update` after every frame (to report a session's
/// events as they happen, say).
pub fn update_until_prediction_with(
    app: &mut App,
    entity: Entity,
    timeout: std::time::Duration,
    mut after_update: impl FnMut(&mut App),
) -> Result<(crate::Prediction, u32), WaitError> {
    let deadline = std::time::Instant::now() + timeout;
    let mut frames = 0;
    loop {
        if let Some(p) = app.world().get::<crate::Prediction>(entity) {
            return Ok((p.clone(), frames));
        }
        if let Some(f) = app.world().get::<crate::InferenceFailed>(entity) {
            return Err(f.error.clone().into());
        }
        if std::time::Instant::now() > deadline {
            return Err(WaitError::Timeout(timeout));
        }
        app.update();
        after_update(app);
        frames += 1;
    }
}
