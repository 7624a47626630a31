//! Recording a job that reads or writes a texture: the `image_input` kernel preprocesses an
//! image's texture into the block's input buffer, and the `image_output` kernel writes the
//! block's output into a texture, in the same command encoder as the block, so that neither
//! leaves the GPU. Only what is asked for is read back.

use std::task::Poll;

use bevy::asset::AssetId;
use bevy::image::Image;
use bevy::render::render_asset::RenderAssets;
use bevy::render::texture::GpuImage;

use super::readback::InFlight;
use super::state::{BlockKey, GpuInference};
use super::submission::record_request;
use crate::gpu::image_output::output_params;
use crate::gpu::{DeviceRefusal, GpuBlock, GpuError, RequestTimestamps, ImageInputError, ImageInputKernel, ImageOutputError, ImageOutputKernel, TextureReading};
use crate::job::{JobError, JobInput, JobOutcome, StageJob};
use crate::tensor::preprocess::ImageSize;

/// Frames a job waits for its images to reach the render world before it fails (the main
/// world saw them loaded, so they are normally there the same frame).
const MAX_FRAMES_WITHOUT_TEXTURE: u32 = 120;

/// What became of a job that reads or writes a texture.
pub(super) enum TextureRecording {
    /// Recorded into the encoder.
    Recorded(InFlight<BlockKey>),
    /// Waiting for a kernel's check or a texture: try again next frame.
    Waiting(StageJob),
    /// Failed; its outcome has been delivered.
    Failed,
}

/// Where a kernel's check stands, as a recording.
fn kernel_ready(check: Poll<Result<(), DeviceRefusal>>) -> Result<bool, GpuError> {
    match check {
        Poll::Pending => Ok(false),
        Poll::Ready(Ok(())) => Ok(true),
        Poll::Ready(Err(refusal)) => Err(GpuError::Refused(refusal)),
    }
}

/// Records `job` (whose block, `key`, is ready) into `encoder`: its input uploaded or
/// preprocessed from its texture, the block, and its output read back or written into its
/// texture. Everything is checked before anything is recorded.
pub(super) fn record_texture_job(
    state: &mut GpuInference,
    device: &wgpu::Device,
    images: &RenderAssets<GpuImage>,
    encoder: &mut wgpu::CommandEncoder,
    mut job: StageJob,
    key: BlockKey,
) -> TextureRecording {
    let reads_texture = matches!(job.input, JobInput::Image(_));
    let mut ready = Ok(true);
    if reads_texture {
        ready = kernel_ready(state.image_input.get_or_insert_with(|| ImageInputKernel::new(device)).check());
    }
    if job.output_image.is_some() && ready == Ok(true) {
        ready = kernel_ready(state.image_output.get_or_insert_with(|| ImageOutputKernel::new(device)).check());
    }
    match ready {
        Ok(true) => {}
        Ok(false) => return TextureRecording::Waiting(job),
        Err(error) => return fail(state, &job, error),
    }

    // The textures, once the render world has them.
    let source = match &mut job.input {
        JobInput::Tensor(_) => None,
        JobInput::Image(input) => match on_gpu(images, input.image, &mut input.frames_waited) {
            Ok(Some(image)) => Some(image),
            Ok(None) => return TextureRecording::Waiting(job),
            Err(frames) => return fail(state, &job, ImageInputError::NotOnGpu { frames }.into()),
        },
    };
    let target = match job.output_image.as_deref_mut() {
        None => None,
        Some(output) => match on_gpu(images, output.image, &mut output.frames_waited) {
            Ok(Some(image)) => Some(image),
            Ok(None) => return TextureRecording::Waiting(job),
            Err(frames) => return fail(state, &job, ImageOutputError::NotOnGpu { frames }.into()),
        },
    };

    // Checked on the textures themselves: the assets may have changed since the request.
    let block = &state.blocks[&key];
    let reading = match (&job.input, source) {
        (JobInput::Image(input), Some(image)) => match check_source(image, input.plan.source, input.plan.channels) {
            Ok(reading) => Some(reading),
            Err(error) => return fail(state, &job, error.into()),
        },
        _ => None,
    };
    let writing = match (&job.output_image, target) {
        (Some(output), Some(image)) => match output_params(&image.texture, block.output_shape(), &output.mapping) {
            Ok(params) => Some(params),
            Err(error) => return fail(state, &job, error.into()),
        },
        _ => None,
    };

    let library = state.library.as_ref().expect("built with the block");
    let (upload, input) = match &job.input {
        JobInput::Image(input) => {
            let Some((image, reading)) = source.zip(reading) else { return TextureRecording::Waiting(job) };
            let view = image.texture.create_view(&wgpu::TextureViewDescriptor {
                label: Some("image input"),
                dimension: Some(wgpu::TextureViewDimension::D2),
                mip_level_count: Some(1),
                array_layer_count: Some(1),
                ..Default::default()
            });
            let kernel = state.image_input.as_ref().expect("checked above");
            (None, kernel.encode(device, encoder, &view, &input.plan, reading))
        }
        JobInput::Tensor(tensor) => {
            let upload = block.create_upload(device);
            GpuBlock::fill_upload(&upload, tensor);
            (Some(upload.clone()), upload)
        }
    };
    let (readback, output_shape, clock) = match &job.output_image {
        Some(output) => {
            let Some((image, params)) = target.zip(writing) else { return TextureRecording::Waiting(job) };
            // The block's output stays in a storage buffer, its timestamps (where the device
            // writes them) behind it.
            let stamps = state.clock.and_then(|clock| Some((clock, RequestTimestamps::new(device, block)?)));
            let stamp_bytes = if stamps.is_some() { 8 * block.timestamps() as u64 } else { 0 };
            let result = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("request output"),
                size: block.output_bytes() + stamp_bytes,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            match &stamps {
                Some((_, stamps)) => block.encode_timed(library, encoder, &input, &result, stamps),
                None => block.encode(library, encoder, &input, &result),
            }
            let kernel = state.image_output.as_ref().expect("checked above");
            kernel.encode(device, encoder, &result, &params, &output.mapping, &image.texture);
            // Read back only what is asked for and the timestamps; with neither, four bytes, so
            // that the map tells when the GPU is done.
            let (from, shape) = match output.read_back {
                true => (0, block.output_shape().to_vec()),
                false => (block.output_bytes(), vec![0]),
            };
            let bytes = (block.output_bytes() + stamp_bytes - from).max(4);
            let from = from.min(block.output_bytes() + stamp_bytes - bytes);
            let readback = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("request readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            encoder.copy_buffer_to_buffer(&result, from, &readback, 0, bytes);
            (readback, shape, stamps.map(|(clock, _)| clock))
        }
        None => {
            let readback = block.create_readback(device);
            let clock = record_request(device, library, block, encoder, &input, &readback, state.clock);
            (readback, block.output_shape().to_vec(), clock)
        }
    };
    TextureRecording::Recorded(InFlight { job, block: key, upload, readback, output_shape, clock })
}

/// `image`'s texture once the render world has it; `Ok(None)` while the job still waits for it
/// (counted in `frames_waited`), `Err(frames)` once it has waited too long.
fn on_gpu<'a>(images: &'a RenderAssets<GpuImage>, image: AssetId<Image>, frames_waited: &mut u32) -> Result<Option<&'a GpuImage>, u32> {
    if let Some(texture) = images.get(image) {
        return Ok(Some(texture));
    }
    *frames_waited += 1;
    match *frames_waited > MAX_FRAMES_WITHOUT_TEXTURE {
        true => Err(*frames_waited),
        false => Ok(None),
    }
}

/// How `image`'s texture is read, after checking that it is still the `planned` size and can
/// be read for `channels`.
fn check_source(image: &GpuImage, planned: ImageSize, channels: crate::tensor::preprocess::ChannelOrder) -> Result<TextureReading, ImageInputError> {
    let texture = &image.texture_descriptor;
    let now = ImageSize { width: texture.size.width, height: texture.size.height };
    if now != planned {
        return Err(ImageInputError::SizeChanged { planned, now });
    }
    TextureReading::check_binding(texture.usage, texture.dimension, texture.size.depth_or_array_layers, texture.sample_count)?;
    TextureReading::of(texture.format, channels)
}

fn fail(state: &GpuInference, job: &StageJob, error: GpuError) -> TextureRecording {
    job.deliver(JobOutcome::of(job, Err(JobError::Gpu(error))), &state.route.results);
    TextureRecording::Failed
}
