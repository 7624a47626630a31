//! [`P2pInferencePlugin`]: the one plugin a game adds.

use bevy::prelude::*;

use crate::gpu::RenderInferencePlugin;
use crate::model::{Model, OnnxLoader};
use crate::schedule::{receive_results, submit_requests, JobQueue, JobResults, TopK};

/// Runs [`crate::InferenceRequest`]s on the GPU and reports [`crate::Prediction`]s.
#[derive(Clone, Debug)]
pub struct P2pInferencePlugin {
    /// How many classes each prediction lists (default 3).
    pub top_k: usize,
}

impl Default for P2pInferencePlugin {
    fn default() -> Self {
        Self { top_k: 3 }
    }
}

impl Plugin for P2pInferencePlugin {
    fn build(&self, app: &mut App) {
        let (tx, rx) = crossbeam_channel::unbounded();
        app.init_asset::<Model>()
            .register_asset_loader(OnnxLoader)
            .init_resource::<JobQueue>()
            .insert_resource(JobResults(rx))
            .insert_resource(TopK(self.top_k))
            .add_systems(PreUpdate, receive_results)
            .add_systems(PostUpdate, submit_requests)
            .add_plugins(RenderInferencePlugin { results: tx });
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
