//! Where a request's output goes. By default it is read back to the CPU whole; an
//! [`OutputToImage`] writes it into a texture and an [`OutputToBuffer`] copies it into a
//! storage buffer, both on the GPU, and a [`ReadBackTopK`] reduces a classifier's output to its
//! top classes on the GPU, so that only they are read back.

use bevy::asset::RenderAssetUsages;
use bevy::ecs::query::QueryData;
use bevy::ecs::system::SystemParam;
use bevy::image::Image;
use bevy::prelude::*;
use bevy::render::storage::ShaderBuffer;

use super::image_request::{output_target, OutputToImage};
use super::{fail, InferenceError};
use crate::gpu::BufferOutputError;
use crate::job::{BufferJobOutput, JobOutput, ReadBack};

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
