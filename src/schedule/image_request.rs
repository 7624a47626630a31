//! Requests on an image that is already on the GPU (a camera's render target, an image asset):
//! the render side preprocesses its texture into the model's input with the `image_input`
//! kernel, so that the pixels are never read back or uploaded. The result arrives like any
//! request's: a [`Prediction`](super::Prediction) and a [`PredictionReady`](super::PredictionReady)
//! on the entity, or [`InferenceFailed`].

use bevy::asset::{LoadState, RenderAssetUsages};
use bevy::image::Image;
use bevy::platform::time::Instant;
use bevy::prelude::*;

use super::{fail, model_graph, InferenceError, InferenceFailed, JobQueue, JobTag, StageJob, Submitted};
use crate::gpu::{ImageInputError, TextureReading};
use crate::job::{ImageJobInput, JobInput};
use crate::model::Model;
use crate::tensor::preprocess::{ImagePreprocessing, ImageSize, PreprocessPlan};

/// Asks for one inference on an image, preprocessed on the GPU as the model wants it: spawn it
/// on any entity; a [`Prediction`](super::Prediction) is added when it is done. The image is
/// read as it is when the request is recorded on the render side (the frame it is spawned in,
/// where the model and image are loaded). It runs on this player's GPU: a peer session does not
/// split image requests.
#[derive(Component, Clone, Debug)]
pub struct ImageInferenceRequest {
    /// The model to run.
    pub model: Handle<Model>,
    /// The image: any 2D colour texture a shader can read (a `RenderTarget::Image` is one).
    pub image: Handle<Image>,
    /// How the model wants the image turned into its input; declare it once per model.
    pub preprocessing: ImagePreprocessing,
}

impl ImageInferenceRequest {
    /// A request to run `model` on `image`, preprocessed as `preprocessing` says.
    pub fn new(model: Handle<Model>, image: Handle<Image>, preprocessing: ImagePreprocessing) -> Self {
        Self { model, image, preprocessing }
    }
}

/// Image requests not yet handed out or failed.
type PendingImageRequest = (Without<Submitted>, Without<InferenceFailed>);

/// Hands image requests whose model and image are loaded to the render side, after checking
/// that the image's texture can be preprocessed as the request says and that the model takes
/// the result.
pub(crate) fn submit_image_requests(
    mut commands: Commands,
    requests: Query<(Entity, &ImageInferenceRequest), PendingImageRequest>,
    models: Res<Assets<Model>>,
    images: Res<Assets<Image>>,
    server: Res<AssetServer>,
    mut queue: ResMut<JobQueue>,
) {
    for (entity, request) in &requests {
        let Some(image) = images.get(&request.image) else {
            match server.get_load_state(&request.image) {
                Some(LoadState::Loading | LoadState::NotLoaded) => {}
                Some(LoadState::Failed(error)) => fail(&mut commands, entity, InferenceError::ImageLoad(error.to_string())),
                Some(LoadState::Loaded) | None => fail(&mut commands, entity, InferenceError::ImageLoad("the handle names no image asset".into())),
            }
            continue;
        };
        let plan = match texture_input(image, &request.preprocessing) {
            Ok(plan) => plan,
            Err(error) => {
                fail(&mut commands, entity, error.into());
                continue;
            }
        };
        let Some(graph) = model_graph(&mut commands, entity, &request.model, &plan.output_shape(), &models, &server) else { continue };
        queue.push(StageJob {
            tag: JobTag::Request,
            entity,
            model: request.model.id(),
            graph,
            input: JobInput::Image(ImageJobInput { image: request.image.id(), plan, frames_waited: 0 }),
            started: Instant::now(),
            reply: None,
        });
        commands.entity(entity).insert(Submitted);
    }
}

/// How `image`'s texture is preprocessed by `preprocessing`, or why it cannot be (the render
/// side checks the texture again when it records the job).
fn texture_input(image: &Image, preprocessing: &ImagePreprocessing) -> Result<PreprocessPlan, ImageInputError> {
    if !image.asset_usage.contains(RenderAssetUsages::RENDER_WORLD) {
        return Err(ImageInputError::NotReadable("its asset usage lacks RENDER_WORLD, so it never reaches the GPU"));
    }
    let texture = &image.texture_descriptor;
    TextureReading::check_binding(texture.usage, texture.dimension, texture.size.depth_or_array_layers, texture.sample_count)?;
    TextureReading::of(texture.format, preprocessing.channels)?;
    Ok(preprocessing.plan(ImageSize { width: texture.size.width, height: texture.size.height })?)
}
