//! Recording a job whose input is a texture: the `image_input` kernel preprocesses the image's
//! texture into the block's input buffer, in the same command encoder as the block, so that the
//! pixels never leave the GPU. Only the block's output is read back.

use std::task::Poll;

use bevy::render::render_asset::RenderAssets;
use bevy::render::texture::GpuImage;

use super::readback::InFlight;
use super::state::{BlockKey, GpuInference};
use super::submission::record_request;
use crate::gpu::{GpuError, ImageInputError, ImageInputKernel, TextureReading};
use crate::job::{ImageJobInput, JobError, JobInput, JobOutcome, StageJob};
use crate::tensor::preprocess::ImageSize;

/// Frames a job waits for its image to reach the render world before it fails (the main world
/// saw the image loaded, so it is normally there the same frame).
const MAX_FRAMES_WITHOUT_TEXTURE: u32 = 120;

/// What became of a job with a texture input.
pub(super) enum ImageRecording {
    /// Recorded into the encoder.
    Recorded(InFlight<BlockKey>),
    /// Waiting for the kernel's check or the texture: try again next frame.
    Waiting(StageJob),
    /// Failed; its outcome has been delivered.
    Failed,
}

/// Records `job` (whose block, `key`, is ready, and whose input is `input`) into `encoder`: its
/// texture preprocessed into a new input buffer, then the block.
pub(super) fn record_image_job(
    state: &mut GpuInference,
    device: &wgpu::Device,
    images: &RenderAssets<GpuImage>,
    encoder: &mut wgpu::CommandEncoder,
    mut job: StageJob,
    mut input: ImageJobInput,
    key: BlockKey,
) -> ImageRecording {
    let kernel = state.image_input.get_or_insert_with(|| ImageInputKernel::new(device));
    match kernel.check() {
        Poll::Pending => return ImageRecording::Waiting(job),
        Poll::Ready(Err(refusal)) => return fail(state, &job, GpuError::Refused(refusal)),
        Poll::Ready(Ok(())) => {}
    }
    let Some(image) = images.get(input.image) else {
        input.frames_waited += 1;
        if input.frames_waited > MAX_FRAMES_WITHOUT_TEXTURE {
            let frames = input.frames_waited;
            return fail(state, &job, ImageInputError::NotOnGpu { frames }.into());
        }
        job.input = JobInput::Image(input);
        return ImageRecording::Waiting(job);
    };
    let texture = &image.texture_descriptor;
    let now = ImageSize { width: texture.size.width, height: texture.size.height };
    if now != input.plan.source {
        let planned = input.plan.source;
        return fail(state, &job, ImageInputError::SizeChanged { planned, now }.into());
    }
    // Checked again on the texture itself: the asset may have changed since the request.
    let checked = TextureReading::check_binding(texture.usage, texture.dimension, texture.size.depth_or_array_layers, texture.sample_count)
        .and_then(|()| TextureReading::of(texture.format, input.plan.channels));
    let reading = match checked {
        Ok(reading) => reading,
        Err(error) => return fail(state, &job, error.into()),
    };
    let view = image.texture.create_view(&wgpu::TextureViewDescriptor {
        label: Some("image input"),
        dimension: Some(wgpu::TextureViewDimension::D2),
        mip_level_count: Some(1),
        array_layer_count: Some(1),
        ..Default::default()
    });
    let kernel = state.image_input.as_ref().expect("built above");
    let tensor = kernel.encode(device, encoder, &view, &input.plan, reading);
    let block = &state.blocks[&key];
    let library = state.library.as_ref().expect("built with the block");
    let readback = block.create_readback(device);
    let clock = record_request(device, library, block, encoder, &tensor, &readback, state.clock);
    let output_shape = block.output_shape().to_vec();
    ImageRecording::Recorded(InFlight { job, block: key, upload: None, readback, output_shape, clock })
}

fn fail(state: &GpuInference, job: &StageJob, error: GpuError) -> ImageRecording {
    job.deliver(JobOutcome::of(job, Err(JobError::Gpu(error))), &state.route.results);
    ImageRecording::Failed
}
