//! What of a request's output comes back to the CPU. By default all of it; an
//! [`OutputToImage`] keeps it on the GPU in a texture, and a [`ReadBackTopK`] reduces a
//! classifier's output to its top classes on the GPU, so that only they are read back.

use bevy::image::Image;
use bevy::prelude::*;

use super::image_request::{output_target, OutputToImage};
use crate::job::{JobOutput, ReadBack};

/// Put next to an [`InferenceRequest`](super::InferenceRequest) or an
/// [`ImageInferenceRequest`](super::image_request::ImageInferenceRequest) of a classifier: the
/// top `k` classes of the output's first batch row (its last axis: the classes) are taken on
/// the GPU with their softmax probabilities, and only they are read back, into
/// [`Prediction::top_k`](super::Prediction::top_k); [`Prediction::output`](super::Prediction::output)
/// is empty. It applies to a request run whole on this player's GPU (one split across players
/// or sliced across frames gets its whole output, and its top classes from it).
#[derive(Component, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadBackTopK(pub u32);

/// Where the output of the request on `entity` goes, as its `image` and `top_k` components
/// say: `None` while an output texture loads, or after failing the request because it cannot
/// be written.
pub(crate) fn job_output(
    commands: &mut Commands,
    entity: Entity,
    image: Option<&OutputToImage>,
    top_k: Option<&ReadBackTopK>,
    images: &Assets<Image>,
    server: &AssetServer,
) -> Option<JobOutput> {
    let target = output_target(commands, entity, image, images, server)?;
    let read_back = match (top_k, image) {
        (Some(ReadBackTopK(k)), _) => ReadBack::TopK(*k),
        (None, Some(output)) if !output.read_back => ReadBack::Nothing,
        (None, _) => ReadBack::Whole,
    };
    Some(JobOutput { image: target, read_back })
}
