//! Why a texture cannot be preprocessed into a model's input: the `image_input` kernel's error,
//! in its own file so that the engine's [`super::GpuError`] can hold it without depending on
//! the kernel.

use thiserror::Error;

use crate::tensor::preprocess::{ChannelOrder, ImageSize, PreprocessError};

/// Why a texture cannot be preprocessed into a model's input.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ImageInputError {
    /// The texture's texels are not floating-point values a shader can load (depth, stencil,
    /// integer or multi-planar formats).
    #[error("a {format:?} texture cannot be read as colour values: use an unorm, snorm or float colour format")]
    UnsupportedFormat {
        /// The texture's format.
        format: wgpu::TextureFormat,
    },
    /// The texture has fewer channels than the preprocessing reads.
    #[error("a {format:?} texture has {has} channel(s); {channels:?} needs {needs}")]
    TooFewChannels {
        /// The texture's format.
        format: wgpu::TextureFormat,
        /// Its channels.
        has: u8,
        /// The channels asked for.
        channels: ChannelOrder,
        /// How many those need.
        needs: u32,
    },
    /// The texture cannot be bound for reading by a compute shader as a single 2D image.
    #[error("the texture cannot be read by a shader: {0}")]
    NotReadable(&'static str),
    /// The preprocessing does not fit the image's size.
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    /// The image asset never reached the render world.
    #[error("the image was not on the GPU after {frames} frames")]
    NotOnGpu {
        /// How many frames the request waited.
        frames: u32,
    },
    /// The image's size on the GPU is not the size the request was planned for (it was
    /// replaced between the request being handed over and recorded).
    #[error("the image is {now:?} on the GPU, not the {planned:?} it was when requested")]
    SizeChanged {
        /// The size the request was planned for.
        planned: ImageSize,
        /// The size on the GPU.
        now: ImageSize,
    },
}
