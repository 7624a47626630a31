//! Where a request's output goes. By default it is read back to the CPU whole; an
//! [`OutputToImage`] writes it into a texture and an [`OutputToBuffer`] copies it into a
//! storage buffer, both on the GPU, and a [`ReadBackTopK`] reduces a classifier's output to its
//! top classes on the GPU, so that only they are read back.

use bevy::asset::{LoadState, RenderAssetUsages};
use bevy::ecs::query::QueryData;
use bevy::ecs::system::SystemParam;
use bevy::image::Image;
use bevy::prelude::*;
use bevy::render::storage::ShaderBuffer;

use super::{fail, InferenceError};
use crate::gpu::{BufferOutputError, ImageOutputError, TextureWriting};
use crate::job::{BufferJobOutput, ImageJobOutput, JobOutput, ReadBack};
use crate::tensor::output_mapping::OutputMapping;

/// Put next to an [`InferenceRequest`](super::InferenceRequest) or an
/// [`ImageInferenceRequest`](super::image_request::ImageInferenceRequest) of a classifier: the
/// top `k` classes of the output's first batch row (its last axis: the classes) are taken on
/// the GPU with their softmax probabilities, and only they are read back, into
/// [`Prediction::top_k`](super::Prediction::top_k); [`Prediction::output`](super::Prediction::output)
/// is empty. It applies to a request run whole on this player's GPU (one split across players
/// or sliced across frames gets its whole output, and its top classes from it).
#[derive(Component, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadBackTopK(pub u32);

/// Put next to a request: its output (f32, row-major in the output's shape) is copied on the
/// GPU into `buffer`, a storage buffer a game's shader can bind (a material's
/// `#[storage(..)]`), there for anything rendered after the request's
/// [`PredictionReady`](super::PredictionReady). The output is read back only with `read_back`.
/// Such a request runs whole on this player, in one frame, like one with [`OutputToImage`].
#[derive(Component, Clone, Debug)]
pub struct OutputToBuffer {
    /// The buffer written: `COPY_DST` usage (a [`ShaderBuffer`]'s default), at least the
    /// output's size.
    pub buffer: Handle<ShaderBuffer>,
    /// Also read the output tensor back into the prediction.
    pub read_back: bool,
}

impl OutputToBuffer {
    /// Copies the output into `buffer`, without reading it back.
    pub fn new(buffer: Handle<ShaderBuffer>) -> Self {
        Self { buffer, read_back: false }
    }
}

/// Put next to an [`ImageInferenceRequest`](super::image_request::ImageInferenceRequest) or an
/// [`InferenceRequest`](super::InferenceRequest):
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

/// `handle`'s image for the request on `entity`: `None` while it loads, or after failing the
/// request because it failed to load or names no image.
pub(crate) fn loaded_image<'a>(commands: &mut Commands, entity: Entity, handle: &Handle<Image>, images: &'a Assets<Image>, server: &AssetServer) -> Option<&'a Image> {
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

/// Requests whose output is kept on this GPU (in a texture or a buffer): they run whole here, in
/// one frame.
pub(crate) type OutputKeptOnGpu = Or<(With<OutputToImage>, With<OutputToBuffer>)>;

/// Requests whose output is not kept on this GPU: a session may split them and a frame budget
/// may slice them.
pub(crate) type OutputNotKeptOnGpu = (Without<OutputToImage>, Without<OutputToBuffer>);

/// A request's components that say where its output goes.
#[derive(QueryData)]
pub(crate) struct OutputRequest {
    image: Option<&'static OutputToImage>,
    buffer: Option<&'static OutputToBuffer>,
    top_k: Option<&'static ReadBackTopK>,
}

/// The assets an output may go into.
#[derive(SystemParam)]
pub(crate) struct OutputAssets<'w> {
    pub images: Res<'w, Assets<Image>>,
    buffers: Res<'w, Assets<ShaderBuffer>>,
    pub server: Res<'w, AssetServer>,
}

/// Where the output of the request on `entity` goes, as its components say: `None` while an
/// output texture loads, or after failing the request because its output cannot go there.
pub(crate) fn job_output(commands: &mut Commands, entity: Entity, request: &OutputRequestItem, assets: &OutputAssets) -> Option<JobOutput> {
    let image = output_target(commands, entity, request.image, &assets.images, &assets.server)?;
    let buffer = match request.buffer {
        None => None,
        Some(output) => match buffer_target(output, &assets.buffers) {
            Ok(target) => Some(target),
            Err(error) => {
                fail(commands, entity, error);
                return None;
            }
        },
    };
    // Each target on the GPU, and whether it asks for the output on the CPU too.
    let targets = [request.image.map(|o| o.read_back), request.buffer.map(|o| o.read_back)];
    let read_back = match request.top_k {
        Some(ReadBackTopK(k)) => ReadBack::TopK(*k),
        None if targets.iter().all(Option::is_none) || targets.iter().flatten().any(|asked| *asked) => ReadBack::Whole,
        None => ReadBack::Nothing,
    };
    Some(JobOutput { image, buffer, read_back })
}

/// The job output for `output`, or why the output cannot go there (its size is checked on the
/// render side, against the block's output).
fn buffer_target(output: &OutputToBuffer, buffers: &Assets<ShaderBuffer>) -> Result<BufferJobOutput, InferenceError> {
    let not_writable = |why| InferenceError::BufferOutput(BufferOutputError::NotWritable(why));
    let buffer = buffers.get(&output.buffer).ok_or_else(|| not_writable("the handle names no buffer asset"))?;
    if !buffer.buffer_description.usage.contains(wgpu::BufferUsages::COPY_DST) {
        return Err(not_writable("its usage lacks COPY_DST"));
    }
    if !buffer.asset_usage.contains(RenderAssetUsages::RENDER_WORLD) {
        return Err(not_writable("its asset usage lacks RENDER_WORLD, so it never reaches the GPU"));
    }
    Ok(BufferJobOutput { buffer: output.buffer.id(), frames_waited: 0 })
}
