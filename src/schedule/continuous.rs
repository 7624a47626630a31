//! Continuous inference on an image on the GPU (a camera's render target): a
//! [`ContinuousInference`] component keeps starting [`ImageInferenceRequest`]s on its image,
//! every N frames or when the game asks, with at most K in flight and within a GPU budget per
//! frame ([`RunCadence`]). Each run's result lands on the component's entity as its latest
//! [`Prediction`](super::Prediction) and a [`PredictionReady`] trigger, so that a game keeps a
//! live classification or segmentation of what a camera sees.

use std::time::Duration;

use bevy::image::Image;
use bevy::prelude::*;

use super::image_request::ImageInferenceRequest;
use super::request_output::{OutputToImage, ReadBackTopK};
use super::run_cadence::{Cadence, RunCadence};
use super::{deliver, fail, InferenceFailed, PredictionReady};
use crate::model::Model;
use crate::tensor::preprocess::ImagePreprocessing;

/// Keeps running a model on an image that is on the GPU. Its results arrive on this entity:
/// each run's [`Prediction`](super::Prediction) replaces the last, with a [`PredictionReady`]
/// trigger. A failed run adds [`InferenceFailed`] here and stops the runs (remove it to resume).
/// Changes to the cadence, K and budget apply from the next frame.
#[derive(Component, Clone, Debug)]
pub struct ContinuousInference {
    /// The model to run.
    pub model: Handle<Model>,
    /// The image, read as it is when each run is recorded (a camera's `RenderTarget::Image`).
    pub image: Handle<Image>,
    /// How the model wants the image turned into its input.
    pub preprocessing: ImagePreprocessing,
    /// Where each run's output goes on the GPU, if anywhere (a segmentation's colour map).
    pub output: Option<OutputToImage>,
    /// Read back only each run's top classes, taken on the GPU (a classifier's), if set.
    pub top_k: Option<ReadBackTopK>,
    /// How often a run starts.
    pub cadence: Cadence,
    /// The most runs in flight at once.
    pub max_in_flight: usize,
    /// The GPU time the runs may take per frame on average, where the device measures it.
    pub gpu_per_frame: Option<Duration>,
    /// Set by the game to ask for a run (with [`Cadence::OnDemand`], or one more between
    /// scheduled ones); cleared when the run starts.
    pub run_now: bool,
}

impl ContinuousInference {
    /// Runs `model` on `image` every frame, with up to two runs in flight and no budget.
    pub fn new(model: Handle<Model>, image: Handle<Image>, preprocessing: ImagePreprocessing) -> Self {
        Self { model, image, preprocessing, output: None, top_k: None, cadence: Cadence::EveryFrames(1), max_in_flight: 2, gpu_per_frame: None, run_now: false }
    }

    /// Starts a run every `frames` frames.
    pub fn every(self, frames: u32) -> Self {
        Self { cadence: Cadence::EveryFrames(frames), ..self }
    }

    /// Keeps at most `runs` in flight.
    pub fn in_flight(self, runs: usize) -> Self {
        Self { max_in_flight: runs, ..self }
    }

    /// Keeps the runs' GPU time within `budget` per frame on average.
    pub fn gpu_per_frame(self, budget: Duration) -> Self {
        Self { gpu_per_frame: Some(budget), ..self }
    }

    /// Writes each run's output into a texture.
    pub fn with_output(self, output: OutputToImage) -> Self {
        Self { output: Some(output), ..self }
    }

    /// Reads back only each run's top `k` classes, taken on the GPU (see [`ReadBackTopK`]).
    pub fn top_k(self, k: u32) -> Self {
        Self { top_k: Some(ReadBackTopK(k)), ..self }
    }
}

/// What a [`ContinuousInference`] has done so far; added to its entity with the first frame.
#[derive(Component, Debug)]
pub struct ContinuousRuns {
    cadence: RunCadence,
    /// Runs started.
    pub started: u64,
    /// Runs whose result arrived.
    pub finished: u64,
}

impl ContinuousRuns {
    fn of(inference: &ContinuousInference) -> Self {
        Self { cadence: RunCadence::new(inference.cadence, inference.max_in_flight, inference.gpu_per_frame), started: 0, finished: 0 }
    }

    /// Runs started and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.cadence.in_flight()
    }
}

/// Marks a request entity as one run of the [`ContinuousInference`] on `owner`; it is despawned
/// once its result has been handed on.
#[derive(Component, Debug)]
pub struct ContinuousRun {
    /// The entity with the [`ContinuousInference`].
    pub owner: Entity,
}

/// Starts the runs that are due, as image requests on their own entities.
pub(crate) fn start_continuous_runs(mut commands: Commands, mut owners: Query<(Entity, &mut ContinuousInference, Option<&mut ContinuousRuns>), Without<InferenceFailed>>) {
    for (owner, mut inference, runs) in &mut owners {
        let mut fresh = None;
        let runs = match runs {
            Some(runs) => runs.into_inner(),
            None => fresh.insert(ContinuousRuns::of(&inference)),
        };
        runs.cadence.configure(inference.cadence, inference.max_in_flight, inference.gpu_per_frame);
        if runs.cadence.frame(inference.run_now) {
            if inference.run_now {
                inference.run_now = false;
            }
            runs.started += 1;
            let request = ImageInferenceRequest::new(inference.model.clone(), inference.image.clone(), inference.preprocessing.clone());
            let mut run = commands.spawn((request, ContinuousRun { owner }));
            if let Some(output) = &inference.output {
                run.insert(output.clone());
            }
            if let Some(top_k) = inference.top_k {
                run.insert(top_k);
            }
        }
        if let Some(runs) = fresh {
            commands.entity(owner).insert(runs);
        }
    }
}

/// Hands a run's prediction to its owner and despawns the run.
pub(crate) fn forward_run_prediction(ready: On<PredictionReady>, runs: Query<&ContinuousRun>, mut owners: Query<&mut ContinuousRuns>, mut commands: Commands) {
    let Ok(run) = runs.get(ready.entity) else { return };
    if let Ok(mut state) = owners.get_mut(run.owner) {
        state.cadence.finished(ready.prediction.gpu);
        state.finished += 1;
    }
    deliver(&mut commands, run.owner, ready.prediction.clone());
    commands.entity(ready.entity).despawn();
}

/// Hands a run's failure to its owner (which stops its runs) and despawns the run.
pub(crate) fn forward_run_failure(failed: On<InferenceFailed>, runs: Query<&ContinuousRun>, mut owners: Query<&mut ContinuousRuns>, mut commands: Commands) {
    let Ok(run) = runs.get(failed.entity) else { return };
    if let Ok(mut state) = owners.get_mut(run.owner) {
        state.cadence.finished(None);
    }
    if commands.get_entity(run.owner).is_ok() {
        fail(&mut commands, run.owner, failed.error.clone());
    }
    commands.entity(failed.entity).despawn();
}
