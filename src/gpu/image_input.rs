//! Textures into model inputs on the GPU: the `image_input` kernel reads a texture (a render
//! target, an image asset) and writes the preprocessed f32 tensor a block takes as its input,
//! so that the pixels never leave the GPU. What it computes is
//! [`crate::tensor::preprocess`]'s CPU reference.

use std::task::Poll;

use wgpu::util::DeviceExt;

use super::device_check::DeviceRefusal;
use super::edge_kernel::EdgeKernel;
use super::engine::{map_blocking, read_mapped, GpuError};
pub use super::image_input_error::ImageInputError;
use super::library::storage_entry;
use super::params::ImageInputParams;
use crate::tensor::preprocess::{ChannelOrder, PreprocessPlan, ResizeFilter, TensorLayout};
use crate::tensor::Tensor;

/// The kernel's source.
pub(crate) const SHADER: &str = include_str!("../../shaders/image_input.wgsl");

/// Output pixels per workgroup along each axis.
const TILE: u32 = 8;

/// How the kernel reads a texture of one format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextureReading {
    /// The texture is sRGB: loading linearises its texels, and the kernel encodes them again
    /// so that the model sees the values as stored (as a readback of the texture would).
    pub srgb: bool,
    /// The texture has one channel: grey is that channel.
    pub single_channel: bool,
}

impl TextureReading {
    /// How a texture of `format` is read for `channels`, or why it cannot be.
    pub fn of(format: wgpu::TextureFormat, channels: ChannelOrder) -> Result<Self, ImageInputError> {
        if format.is_depth_stencil_format() || format.is_multi_planar_format() {
            return Err(ImageInputError::UnsupportedFormat { format });
        }
        match format.sample_type(None, None) {
            Some(wgpu::TextureSampleType::Float { .. }) => {}
            _ => return Err(ImageInputError::UnsupportedFormat { format }),
        }
        let has = format.components();
        // As many source channels as it keeps (a grey model can read a one-channel image).
        let needs = channels.count() as u32;
        if (has as u32) < needs {
            return Err(ImageInputError::TooFewChannels { format, has, channels, needs });
        }
        Ok(Self { srgb: format.is_srgb(), single_channel: has == 1 })
    }

    /// Checks a texture described by `usage`, `dimension`, `layers` and `samples` for binding
    /// as a single 2D image.
    pub fn check_binding(usage: wgpu::TextureUsages, dimension: wgpu::TextureDimension, layers: u32, samples: u32) -> Result<(), ImageInputError> {
        if !usage.contains(wgpu::TextureUsages::TEXTURE_BINDING) {
            return Err(ImageInputError::NotReadable("its usage lacks TEXTURE_BINDING"));
        }
        if dimension != wgpu::TextureDimension::D2 || layers != 1 {
            return Err(ImageInputError::NotReadable("it is not a single 2D image (a 1D, 3D, array or cube texture)"));
        }
        if samples != 1 {
            return Err(ImageInputError::NotReadable("it is multisampled"));
        }
        Ok(())
    }
}

impl ImageInputParams {
    /// The kernel's parameters for `plan` over a texture read as `reading` says.
    pub fn new(plan: &PreprocessPlan, reading: TextureReading) -> Self {
        Self {
            source_width: plan.source.width,
            source_height: plan.source.height,
            resized_width: plan.resized.width,
            resized_height: plan.resized.height,
            output_width: plan.output.width,
            output_height: plan.output.height,
            crop_x: plan.crop_offset[0],
            crop_y: plan.crop_offset[1],
            area: (plan.filter == ResizeFilter::Area) as u32,
            channels: match plan.channels {
                ChannelOrder::Rgb => 0,
                ChannelOrder::Bgr => 1,
                ChannelOrder::Gray => 2,
                ChannelOrder::Rgba => 3,
            },
            nhwc: (plan.layout == TensorLayout::Nhwc) as u32,
            srgb: reading.srgb as u32,
            single_channel: reading.single_channel as u32,
            scale: plan.scale,
            pad0: 0,
            pad1: 0,
            mean: plan.mean,
            deviation: plan.std,
        }
    }
}

/// The `image_input` kernel's pipeline, built once per device.
pub struct ImageInputKernel(EdgeKernel);

impl ImageInputKernel {
    /// Compiles the kernel; the device's verdict on it comes from [`Self::check`].
    pub fn new(device: &wgpu::Device) -> Self {
        let texture = wgpu::BindGroupLayoutEntry {
            binding: 1,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Texture {
                // Unfilterable: the kernel loads texels, so rgba32float textures bind too.
                sample_type: wgpu::TextureSampleType::Float { filterable: false },
                view_dimension: wgpu::TextureViewDimension::D2,
                multisampled: false,
            },
            count: None,
        };
        Self(EdgeKernel::new(device, "image_input", SHADER, &[storage_entry(0, true), texture, storage_entry(2, false)]))
    }

    /// The device's verdict on the kernel, pending until known.
    pub fn check(&self) -> Poll<Result<(), DeviceRefusal>> {
        self.0.check()
    }

    /// Records the preprocessing of the texture behind `view` (read as `reading` says) by
    /// `plan` into `encoder`, and returns the buffer that will hold the tensor: a block's input
    /// buffer, copied from on the GPU like an upload.
    pub fn encode(&self, device: &wgpu::Device, encoder: &mut wgpu::CommandEncoder, view: &wgpu::TextureView, plan: &PreprocessPlan, reading: TextureReading) -> wgpu::Buffer {
        let params = ImageInputParams::new(plan, reading);
        let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some("image_input params"), contents: bytemuck::bytes_of(&params), usage: wgpu::BufferUsages::STORAGE });
        let output = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("image input tensor"),
            size: (plan.output_len() * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let resources = [params.as_entire_binding(), wgpu::BindingResource::TextureView(view), output.as_entire_binding()];
        self.0.dispatch(device, encoder, &resources, [plan.output.width.div_ceil(TILE), plan.output.height.div_ceil(TILE), 1]);
        output
    }

    /// Preprocesses the texture behind `view` and reads the tensor back, blocking the calling
    /// thread: for tests and tools that own a device. Inside a Bevy app the tensor stays on the
    /// GPU and goes straight into the model.
    pub fn run_blocking(&self, device: &wgpu::Device, queue: &wgpu::Queue, view: &wgpu::TextureView, plan: &PreprocessPlan, reading: TextureReading) -> Result<Tensor, GpuError> {
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("image_input run_blocking") });
        let output = self.encode(device, &mut encoder, view, plan, reading);
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("image input readback"),
            size: output.size(),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        encoder.copy_buffer_to_buffer(&output, 0, &readback, 0, output.size());
        queue.submit([encoder.finish()]);
        map_blocking(device, &readback).map_err(GpuError::Readback)?;
        Ok(read_mapped(&readback, plan.output_shape()))
    }
}
