//! Images on the GPU in and out of requests. An [`ImageInferenceRequest`] runs a model on an
//! image that is already on the GPU (a camera's render target, an image asset): the render side
//! preprocesses its texture into the model's input with the `image_input` kernel, so that the
//! pixels are never read back or uploaded. [`OutputToImage`] on a request writes its output
//! into a texture with the `image_output` kernel instead of reading it back. The result arrives
//! like any request's: a [`Prediction`](super::Prediction) and a
//! [`PredictionReady`](super::PredictionReady) on the entity, or [`InferenceFailed`].

use bevy::asset::{LoadState, RenderAssetUsages};
use bevy::image::Image;
use bevy::platform::time::Instant;
use bevy::prelude::*;

use super::request_output::{job_output, OutputAssets, OutputRequest};
use super::{fail, model_graph, InferenceError, InferenceFailed, JobQueue, JobTag, StageJob, Submitted};
use crate::gpu::{ImageInputError, ImageOutputError, TextureReading, TextureWriting};
use crate::job::{ImageJobInput, ImageJobOutput, JobInput};
use crate::tensor::output_mapping::OutputMapping;
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

/// Put next to an [`ImageInferenceRequest`] or an [`InferenceRequest`](super::InferenceRequest):
/// the output is written into `image` on the GPU, mapped to colours as `mapping` says, and is
/// there for anything rendered after the request's [`PredictionReady`](super::PredictionReady)
/// (the same or the next frame). The output is read back only with `read_back`; without it
/// [`Prediction::output`](super::Prediction::output) is empty. Such a request runs whole on this
/// player, in one frame (a peer session does not split it; [`SliceAcrossFrames`](super::SliceAcrossFrames)
/// does not slice it).
#[derive(Component, Clone, Debug)]
pub struct OutputToImage {
    /// The texture written: rgba8unorm(-srgb), bgra8unorm(-srgb), rgba16float or rgba32float,
    /// with `COPY_DST` usage, the output image's size.
    pub image: Handle<Image>,
    /// How the output maps to colours.
    pub mapping: OutputMapping,
    /// Also read the output tensor back into the prediction.
    pub read_back: bool,
}

impl OutputToImage {
    /// Writes the output into `image` as `mapping` says, without reading it back.
    pub fn new(image: Handle<Image>, mapping: OutputMapping) -> Self {
        Self { image, mapping, read_back: false }
    }
}

/// Image requests not yet handed out or failed.
type PendingImageRequest = (Without<Submitted>, Without<InferenceFailed>);

/// `handle`'s image for the request on `entity`: `None` while it loads, or after failing the
/// request because it failed to load or names no image.
fn loaded_image<'a>(commands: &mut Commands, entity: Entity, handle: &Handle<Image>, images: &'a Assets<Image>, server: &AssetServer) -> Option<&'a Image> {
    if let Some(image) = images.get(handle) {
        return Some(image);
    }
    match server.get_load_state(handle) {
        Some(LoadState::Loading | LoadState::NotLoaded) => {}
        Some(LoadState::Failed(error)) => fail(commands, entity, InferenceError::ImageLoad(error.to_string())),
        Some(LoadState::Loaded) | None => fail(commands, entity, InferenceError::ImageLoad("the handle names no image asset".into())),
    }
    None
}

/// The job output for `output` on the request on `entity`: `Some(None)` without one,
/// `Some(Some(..))` once its texture is loaded and can be written, `None` while it loads or
/// after failing the request.
pub(crate) fn output_target(commands: &mut Commands, entity: Entity, output: Option<&OutputToImage>, images: &Assets<Image>, server: &AssetServer) -> Option<Option<Box<ImageJobOutput>>> {
    let Some(output) = output else { return Some(None) };
    let image = loaded_image(commands, entity, &output.image, images, server)?;
    let texture = &image.texture_descriptor;
    let checked = TextureWriting::check_target(texture.usage, texture.dimension, texture.size.depth_or_array_layers, texture.sample_count)
        .and_then(|()| TextureWriting::of(texture.format).map(drop))
        .and_then(|()| match image.asset_usage.contains(RenderAssetUsages::RENDER_WORLD) {
            true => Ok(()),
            false => Err(ImageOutputError::NotWritable("its asset usage lacks RENDER_WORLD, so it never reaches the GPU")),
        });
    if let Err(error) = checked {
        fail(commands, entity, error.into());
        return None;
    }
    Some(Some(Box::new(ImageJobOutput { image: output.image.id(), mapping: output.mapping.clone(), frames_waited: 0 })))
}

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
