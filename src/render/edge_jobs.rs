//! Recording a job that reads a texture, keeps its output on the GPU or reads back less than its
//! output: the `image_input` kernel preprocesses an image's texture into the block's input
//! buffer, the `image_output` kernel writes the block's output into a texture, a copy puts it
//! into a game's storage buffer, and the `top_k` kernel reduces it to its top classes, in the
//! same command encoder as the block, so that none of it leaves the GPU. Only what is asked for
//! is read back.

use std::task::Poll;

use bevy::asset::AssetId;
use bevy::ecs::system::SystemParam;
use bevy::prelude::Res;
use bevy::render::render_asset::{RenderAsset, RenderAssets};
use bevy::render::storage::GpuShaderBuffer;
use bevy::render::texture::GpuImage;

use super::readback::{InFlight, OutputReading};
use super::state::{BlockKey, GpuInference};
use super::submission::record_request;
use crate::gpu::image_output::output_params;
use crate::gpu::{DeviceRefusal, GpuBlock, GpuError, RequestTimestamps, ImageInputError, ImageInputKernel, ImageOutputError, ImageOutputKernel, TextureReading, TopKKernel};
use crate::gpu::top_k::scores_bytes;
use crate::gpu::{buffer_output, BufferOutputError};
use crate::job::{JobError, JobInput, JobOutcome, ReadBack, StageJob};
use crate::tensor::preprocess::ImageSize;

/// Frames a job waits for its images to reach the render world before it fails (the main
/// world saw them loaded, so they are normally there the same frame).
const MAX_FRAMES_WITHOUT_TEXTURE: u32 = 120;

/// What became of a job with work at its edges (a texture read, an output kept on the GPU or
/// reduced before it is read back).
pub(super) enum EdgeRecording {
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

/// The render assets a job may read or write.
#[derive(SystemParam)]
pub(super) struct JobAssets<'w> {
    images: Res<'w, RenderAssets<GpuImage>>,
    buffers: Res<'w, RenderAssets<GpuShaderBuffer>>,
}

/// Records `job` (whose block, `key`, is ready) into `encoder`: its input uploaded or
/// preprocessed from its texture, the block, and its output read back or written into its
/// texture or buffer. Everything is checked before anything is recorded.
pub(super) fn record_edge_job(
    state: &mut GpuInference,
    device: &wgpu::Device,
    assets: &JobAssets,
    encoder: &mut wgpu::CommandEncoder,
    mut job: StageJob,
    key: BlockKey,
) -> EdgeRecording {
    let reads_texture = matches!(job.input, JobInput::Image(_));
    let mut ready = Ok(true);
    if reads_texture {
        ready = kernel_ready(state.image_input.get_or_insert_with(|| ImageInputKernel::new(device)).check());
    }
    if job.output.image.is_some() && ready == Ok(true) {
        ready = kernel_ready(state.image_output.get_or_insert_with(|| ImageOutputKernel::new(device)).check());
    }
    if matches!(job.output.read_back, ReadBack::TopK(_)) && ready == Ok(true) {
        ready = kernel_ready(state.top_k.get_or_insert_with(|| TopKKernel::new(device)).check());
    }
    match ready {
        Ok(true) => {}
        Ok(false) => return EdgeRecording::Waiting(job),
        Err(error) => return fail(state, &job, error),
    }

    // The textures and the buffer, once the render world has them.
    let found = (|| {
        let source = match &mut job.input {
            JobInput::Tensor(_) => None,
            JobInput::Image(input) => Some(on_gpu(&assets.images, input.image, &mut input.frames_waited, |frames| ImageInputError::NotOnGpu { frames }.into())?),
        };
        let target = match job.output.image.as_deref_mut() {
            None => None,
            Some(output) => Some(on_gpu(&assets.images, output.image, &mut output.frames_waited, |frames| ImageOutputError::NotOnGpu { frames }.into())?),
        };
        let buffer = match job.output.buffer.as_mut() {
            None => None,
            Some(output) => Some(&on_gpu(&assets.buffers, output.buffer, &mut output.frames_waited, |frames| BufferOutputError::NotOnGpu { frames }.into())?.buffer),
        };
        Ok((source, target, buffer))
    })();
    let (source, target, buffer) = match found {
        Ok(found) => found,
        Err(NotOnGpuYet::Waiting) => return EdgeRecording::Waiting(job),
        Err(NotOnGpuYet::GaveUp(error)) => return fail(state, &job, error),
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
    let writing = match (&job.output.image, target) {
        (Some(output), Some(image)) => match output_params(&image.texture, block.output_shape(), &output.mapping) {
            Ok(params) => Some(params),
            Err(error) => return fail(state, &job, error.into()),
        },
        _ => None,
    };
    if let Some(buffer) = buffer
        && let Err(error) = buffer_output::check_target(buffer.usage(), buffer.size(), block.output_bytes()) {
            return fail(state, &job, error.into());
        }

    let library = state.library.as_ref().expect("built with the block");
    let (upload, input) = match &job.input {
        JobInput::Image(input) => {
            let Some((image, reading)) = source.zip(reading) else { return EdgeRecording::Waiting(job) };
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
    if job.output.read_back_whole_only() {
        let readback = block.create_readback(device);
        let clock = record_request(device, library, block, encoder, &input, &readback, state.clock);
        let reading = OutputReading::Tensor(block.output_shape().to_vec());
        return EdgeRecording::Recorded(InFlight { job, block: key, upload, readback, reading, block_readback: true, clock });
    }
    // The block's output stays in a storage buffer, its timestamps (where the device writes
    // them) behind it.
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
    if let (Some(output), Some((image, params))) = (&job.output.image, target.zip(writing)) {
        let kernel = state.image_output.as_ref().expect("checked above");
        kernel.encode(device, encoder, &result, &params, &output.mapping, &image.texture);
    }
    if let Some(buffer) = buffer {
        encoder.copy_buffer_to_buffer(&result, 0, buffer, 0, block.output_bytes());
    }
    // Read back only what is asked for, and the timestamps; with neither, four bytes, so that
    // the map tells when the GPU is done.
    let (payload, reading) = match job.output.read_back {
        ReadBack::Whole => (Some((result.clone(), block.output_bytes())), OutputReading::Tensor(block.output_shape().to_vec())),
        ReadBack::Nothing => (None, OutputReading::Tensor(vec![0])),
        ReadBack::TopK(k) => {
            let bytes = scores_bytes(k);
            let scores = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("request top k"),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let classes = block.output_shape().last().copied().unwrap_or(0) as u32;
            state.top_k.as_ref().expect("checked above").encode(device, encoder, &result, classes, k, &scores);
            (Some((scores, bytes)), OutputReading::TopK(k))
        }
    };
    let payload_bytes = payload.as_ref().map_or(0, |(_, bytes)| *bytes);
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("request readback"),
        size: (payload_bytes + stamp_bytes).max(4),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    if let Some((buffer, bytes)) = payload {
        encoder.copy_buffer_to_buffer(&buffer, 0, &readback, 0, bytes);
    }
    if stamp_bytes > 0 {
        encoder.copy_buffer_to_buffer(&result, block.output_bytes(), &readback, payload_bytes, stamp_bytes);
    }
    let clock = stamps.map(|(clock, _)| clock);
    // Sized for what this job reads back: not for the block's next request.
    EdgeRecording::Recorded(InFlight { job, block: key, upload, readback, reading, block_readback: false, clock })
}

/// Why a job's texture or buffer is not there to record it with.
enum NotOnGpuYet {
    /// The job waits for it (next frame).
    Waiting,
    /// The job waited too long: it fails with this error.
    GaveUp(GpuError),
}

/// `asset` once the render world has it; [`NotOnGpuYet::Waiting`] while the job still waits
/// for it (counted in `frames_waited`), else the error `not_on_gpu` makes of the frames waited.
fn on_gpu<'a, A: RenderAsset>(assets: &'a RenderAssets<A>, asset: AssetId<A::SourceAsset>, frames_waited: &mut u32, not_on_gpu: impl FnOnce(u32) -> GpuError) -> Result<&'a A, NotOnGpuYet> {
    if let Some(prepared) = assets.get(asset) {
        return Ok(prepared);
    }
    *frames_waited += 1;
    match *frames_waited > MAX_FRAMES_WITHOUT_TEXTURE {
        true => Err(NotOnGpuYet::GaveUp(not_on_gpu(*frames_waited))),
        false => Err(NotOnGpuYet::Waiting),
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

fn fail(state: &GpuInference, job: &StageJob, error: GpuError) -> EdgeRecording {
    job.deliver(JobOutcome::of(job, Err(JobError::Gpu(error))), &state.route.results);
    EdgeRecording::Failed
}
