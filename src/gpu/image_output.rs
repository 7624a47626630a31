//! Model outputs into textures on the GPU: the `image_output` kernel maps a block's output
//! buffer to RGBA colours ([`crate::tensor::output_mapping`]'s CPU reference), packs them as
//! the target texture stores them, and a buffer-to-texture copy puts them in the texture, so
//! that a game can show them in the same or the next frame without a readback.

use std::task::Poll;

use thiserror::Error;
use wgpu::util::DeviceExt;

use super::device_check::DeviceRefusal;
use super::edge_kernel::EdgeKernel;
use super::library::storage_entry;
use super::params::ImageOutputParams;
use crate::tensor::output_mapping::{OutputMapping, OutputMappingError};
use crate::tensor::preprocess::{ChannelOrder, ImageSize, TensorLayout};

/// The kernel's source.
pub(crate) const SHADER: &str = include_str!("../../shaders/image_output.wgsl");

/// Pixels per workgroup along each axis.
const TILE: u32 = 8;

/// Why a model's output cannot be written into a texture.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ImageOutputError {
    /// The texture's format is not one the kernel writes.
    #[error("outputs are written into rgba8unorm(-srgb), bgra8unorm(-srgb), rgba16float or rgba32float textures, not {format:?}")]
    UnsupportedFormat {
        /// The texture's format.
        format: wgpu::TextureFormat,
    },
    /// The texture cannot be written as a single 2D image by a copy.
    #[error("the texture cannot be written: {0}")]
    NotWritable(&'static str),
    /// The output does not map to an image.
    #[error(transparent)]
    Mapping(#[from] OutputMappingError),
    /// The output's image is not the texture's size.
    #[error("the output is a {output:?} image but the texture is {texture:?}")]
    SizeDiffers {
        /// The output image's size.
        output: ImageSize,
        /// The texture's size.
        texture: ImageSize,
    },
    /// The image asset never reached the render world.
    #[error("the output image was not on the GPU after {frames} frames")]
    NotOnGpu {
        /// How many frames the request waited.
        frames: u32,
    },
}

/// How texels are packed for a texture of one format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextureWriting {
    /// The kernel's code for the packing (see `ImageOutputParams::texel_format`).
    texel_format: u32,
    /// Bytes per texel.
    bytes_per_texel: u32,
    /// The texture is sRGB: colours are encoded before they are packed.
    srgb: bool,
}

impl TextureWriting {
    /// How a texture of `format` is written, or why it cannot be.
    pub fn of(format: wgpu::TextureFormat) -> Result<Self, ImageOutputError> {
        use wgpu::TextureFormat as F;
        let (texel_format, bytes_per_texel) = match format {
            F::Rgba8Unorm | F::Rgba8UnormSrgb => (0, 4),
            F::Bgra8Unorm | F::Bgra8UnormSrgb => (1, 4),
            F::Rgba16Float => (2, 8),
            F::Rgba32Float => (3, 16),
            _ => return Err(ImageOutputError::UnsupportedFormat { format }),
        };
        Ok(Self { texel_format, bytes_per_texel, srgb: format.is_srgb() })
    }

    /// Checks a texture described by `usage`, `dimension`, `layers` and `samples` for a copy
    /// into it as a single 2D image.
    pub fn check_target(usage: wgpu::TextureUsages, dimension: wgpu::TextureDimension, layers: u32, samples: u32) -> Result<(), ImageOutputError> {
        if !usage.contains(wgpu::TextureUsages::COPY_DST) {
            return Err(ImageOutputError::NotWritable("its usage lacks COPY_DST"));
        }
        if dimension != wgpu::TextureDimension::D2 || layers != 1 || samples != 1 {
            return Err(ImageOutputError::NotWritable("it is not a single-sampled 2D image"));
        }
        Ok(())
    }

    /// Bytes per row of the copy for `width` texels, padded as copies require.
    fn padded_row(self, width: u32) -> u32 {
        (width * self.bytes_per_texel).next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT)
    }
}

impl ImageOutputParams {
    /// The kernel's parameters for an output of `channels` channels mapped by `mapping` to an
    /// image of `size`, written as `writing` says.
    pub fn new(mapping: &OutputMapping, size: ImageSize, channels: usize, writing: TextureWriting) -> Self {
        let (classes, order, scale, offset) = match mapping {
            OutputMapping::Colours { channels: order, scale, offset, .. } => {
                let order = match order {
                    ChannelOrder::Rgb => 0,
                    ChannelOrder::Bgr => 1,
                    ChannelOrder::Gray => 2,
                    ChannelOrder::Rgba => 3,
                };
                (0, order, *scale, *offset)
            }
            OutputMapping::ClassColours { .. } => (1, 0, 1.0, 0.0),
        };
        Self {
            width: size.width,
            height: size.height,
            channels: channels as u32,
            nhwc: (mapping.layout() == TensorLayout::Nhwc) as u32,
            classes,
            order,
            texel_format: writing.texel_format,
            srgb: writing.srgb as u32,
            row_words: writing.padded_row(size.width) / 4,
            scale,
            offset,
            pad0: 0,
        }
    }
}

/// The `image_output` kernel's pipeline, built once per device.
pub struct ImageOutputKernel(EdgeKernel);

impl ImageOutputKernel {
    /// Compiles the kernel; the device's verdict on it comes from [`Self::check`].
    pub fn new(device: &wgpu::Device) -> Self {
        // The parameters, the output tensor and the palette, then the packed texels.
        Self(EdgeKernel::new(device, "image_output", SHADER, &[storage_entry(0, true), storage_entry(1, true), storage_entry(2, true), storage_entry(3, false)]))
    }

    /// The device's verdict on the kernel, pending until known.
    pub fn check(&self) -> Poll<Result<(), DeviceRefusal>> {
        self.0.check()
    }

    /// Records the mapping of `output` (a buffer holding the f32 tensor `params` was made for)
    /// by `mapping` into `texture` (see [`output_params`]).
    pub fn encode(&self, device: &wgpu::Device, encoder: &mut wgpu::CommandEncoder, output: &wgpu::Buffer, params: &ImageOutputParams, mapping: &OutputMapping, texture: &wgpu::Texture) {
        let size = ImageSize { width: params.width, height: params.height };
        let row = params.row_words * 4;
        let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some("image_output params"), contents: bytemuck::bytes_of(params), usage: wgpu::BufferUsages::STORAGE });
        let colours: Vec<[f32; 4]> = match mapping {
            OutputMapping::ClassColours { palette, .. } => palette.clone(),
            OutputMapping::Colours { .. } => vec![[0.0; 4]],
        };
        let palette = device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some("image_output palette"), contents: bytemuck::cast_slice(&colours), usage: wgpu::BufferUsages::STORAGE });
        let texels = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("image output texels"),
            size: (row * size.height) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let resources = [params.as_entire_binding(), output.as_entire_binding(), palette.as_entire_binding(), texels.as_entire_binding()];
        self.0.dispatch(device, encoder, &resources, [size.width.div_ceil(TILE), size.height.div_ceil(TILE), 1]);
        encoder.copy_buffer_to_texture(
            wgpu::TexelCopyBufferInfo { buffer: &texels, layout: wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(row), rows_per_image: None } },
            texture.as_image_copy(),
            wgpu::Extent3d { width: size.width, height: size.height, depth_or_array_layers: 1 },
        );
    }
}

/// The `image_output` kernel's parameters for writing an output of `output_shape` into
/// `texture` as `mapping` says, or why it cannot be written there.
pub fn output_params(texture: &wgpu::Texture, output_shape: &[usize], mapping: &OutputMapping) -> Result<ImageOutputParams, ImageOutputError> {
    let writing = TextureWriting::of(texture.format())?;
    TextureWriting::check_target(texture.usage(), texture.dimension(), texture.depth_or_array_layers(), texture.sample_count())?;
    let (size, channels) = mapping.image_of(output_shape)?;
    let target = ImageSize { width: texture.width(), height: texture.height() };
    if size != target {
        return Err(ImageOutputError::SizeDiffers { output: size, texture: target });
    }
    Ok(ImageOutputParams::new(mapping, size, channels, writing))
}
