//! Images on the GPU into requests. An [`ImageInferenceRequest`] runs a model on an image that
//! is already on the GPU (a camera's render target, an image asset): the render side
//! preprocesses its texture into the model's input with the `image_input` kernel, so that the
//! pixels are never read back or uploaded (where its output goes: [`super::request_output`]).
//! The result arrives like any request's: a [`Prediction`](super::Prediction) and a
//! [`PredictionReady`](super::PredictionReady) on the entity, or [`InferenceFailed`].

use bevy::asset::RenderAssetUsages;
use bevy::image::Image;
use bevy::platform::time::Instant;
use bevy::prelude::*;

use super::request_output::{job_output, loaded_image, OutputAssets, OutputRequest};
use super::{fail, model_graph, InferenceFailed, JobQueue, JobTag, StageJob, Submitted};
use crate::gpu::{ImageInputError, TextureReading};
use crate::job::{ImageJobInput, JobInput};
use crate::model::Model;
use crate::tensor::preprocess::{ImagePreprocessing, ImageSize, PreprocessPlan};

/// Asks for one inference on an image, preprocessed on the GPU as the model wants it: spawn it
/// on any entity; a [`Prediction`](super::Prediction) is added when it is done. The image is
/// read as it is when the request is recorded on the render side (the frame it is spawned in,
/// where the model and image are loaded). In a peer session, a request for the split model runs
/// its stage 0 here, on the image, when the pipeline admits it (the image is read then), and
/// its activation travels to the players of the later stages like any request's.
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
    requests: Query<(Entity, &ImageInferenceRequest, OutputRequest), PendingImageRequest>,
    models: Res<Assets<Model>>,
    outputs: OutputAssets,
    mut queue: ResMut<JobQueue>,
) {
    for (entity, request, output) in &requests {
        let Some(input) = image_job_input(&mut commands, entity, request, &outputs.images, &outputs.server) else { continue };
        let Some(output) = job_output(&mut commands, entity, &output, &outputs) else { continue };
        let Some(graph) = model_graph(&mut commands, entity, &request.model, &input.plan.output_shape(), &models, &outputs.server) else { continue };
        queue.push(StageJob {
            tag: JobTag::Request,
            entity,
            model: request.model.id(),
            graph,
            input: JobInput::Image(input),
            started: Instant::now(),
            output,
            reply: None,
        });
        commands.entity(entity).insert(Submitted);
    }
}

/// What the render side reads for `request` (on `entity`): its image's texture with the
/// preprocessing checked against it; `None` while the image loads, or after failing the request
/// because it cannot be preprocessed so.
pub(crate) fn image_job_input(commands: &mut Commands, entity: Entity, request: &ImageInferenceRequest, images: &Assets<Image>, server: &AssetServer) -> Option<ImageJobInput> {
    let image = loaded_image(commands, entity, &request.image, images, server)?;
    match texture_input(image, &request.preprocessing) {
        Ok(plan) => Some(ImageJobInput { image: request.image.id(), plan, frames_waited: 0 }),
        Err(error) => {
            fail(commands, entity, error.into());
            None
        }
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
