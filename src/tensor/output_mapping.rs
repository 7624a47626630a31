//! How a model's output tensor becomes an RGBA image a game can show: an image-to-image
//! model's channels as colours, or a segmentation's classes as a colour map. The GPU kernel
//! (`shaders/image_output.wgsl`) writes the same colours into a texture; this is its CPU
//! reference.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::preprocess::{ChannelOrder, ImageSize, RgbaImage, TensorLayout};
use super::Tensor;

/// How an output tensor of shape `[1, C, H, W]` (or `[1, H, W, C]`) maps to an `H` x `W` RGBA
/// image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OutputMapping {
    /// The channels are colours: `clamp(value * scale + offset, 0, 1)`; alpha is 1 unless the
    /// channels include it.
    Colours {
        /// Which channels the tensor holds, in its order (`C` must match).
        channels: ChannelOrder,
        /// The tensor's layout.
        layout: TensorLayout,
        /// Multiplies each value (1/255 for a model that outputs byte values).
        scale: f32,
        /// Added after scaling (0.5 with a scale of 0.5 maps `[-1, 1]` to `[0, 1]`).
        offset: f32,
    },
    /// Each pixel's class (the channel with the largest value, the first on ties) picks its
    /// colour from the palette: a segmentation mask as a colour map.
    ClassColours {
        /// One RGBA colour per class, at least `C`.
        palette: Vec<[f32; 4]>,
        /// The tensor's layout.
        layout: TensorLayout,
    },
}

impl OutputMapping {
    /// RGB channels in NCHW, values in `[0, 1]` shown as they are.
    pub fn rgb() -> Self {
        OutputMapping::Colours { channels: ChannelOrder::Rgb, layout: TensorLayout::Nchw, scale: 1.0, offset: 0.0 }
    }

    /// The layout of the tensor it reads.
    pub fn layout(&self) -> TensorLayout {
        match self {
            OutputMapping::Colours { layout, .. } | OutputMapping::ClassColours { layout, .. } => *layout,
        }
    }

    /// Checks that an output of `shape` maps to an image, and returns the image's size and the
    /// tensor's channel count.
    pub fn image_of(&self, shape: &[usize]) -> Result<(ImageSize, usize), OutputMappingError> {
        let [1, a, b, c] = shape else { return Err(OutputMappingError::NotAnImage { shape: shape.to_vec() }) };
        let (channels, height, width) = match self.layout() {
            TensorLayout::Nchw => (*a, *b, *c),
            TensorLayout::Nhwc => (*c, *a, *b),
        };
        let size = ImageSize { width: u32::try_from(width).unwrap_or(u32::MAX), height: u32::try_from(height).unwrap_or(u32::MAX) };
        match self {
            OutputMapping::Colours { channels: order, .. } if order.count() != channels => {
                Err(OutputMappingError::ChannelsDiffer { shape: shape.to_vec(), channels: order.count() })
            }
            OutputMapping::ClassColours { palette, .. } if palette.len() < channels || channels == 0 => {
                Err(OutputMappingError::PaletteTooShort { classes: channels, colours: palette.len() })
            }
            _ => Ok((size, channels)),
        }
    }

    /// The CPU reference: `output`'s RGBA image.
    pub fn apply(&self, output: &Tensor) -> Result<RgbaImage, OutputMappingError> {
        let (size, channels) = self.image_of(output.shape())?;
        let (width, height) = (size.width as usize, size.height as usize);
        let value = |x: usize, y: usize, c: usize| {
            output.data()[match self.layout() {
                TensorLayout::Nchw => (c * height + y) * width + x,
                TensorLayout::Nhwc => (y * width + x) * channels + c,
            }]
        };
        let mut texels = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                texels.push(match self {
                    OutputMapping::Colours { channels: order, scale, offset, .. } => {
                        let colour = |c: usize| (value(x, y, c) * scale + offset).clamp(0.0, 1.0);
                        match order {
                            ChannelOrder::Rgb => [colour(0), colour(1), colour(2), 1.0],
                            ChannelOrder::Bgr => [colour(2), colour(1), colour(0), 1.0],
                            ChannelOrder::Gray => [colour(0), colour(0), colour(0), 1.0],
                            ChannelOrder::Rgba => [colour(0), colour(1), colour(2), colour(3)],
                        }
                    }
                    OutputMapping::ClassColours { palette, .. } => {
                        let class = (1..channels).fold(0, |best, c| if value(x, y, c) > value(x, y, best) { c } else { best });
                        palette[class]
                    }
                });
            }
        }
        Ok(RgbaImage { size, texels })
    }
}

/// Why an output does not map to an image.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum OutputMappingError {
    /// The output is not one image (`[1, C, H, W]` or `[1, H, W, C]`).
    #[error("an output of shape {shape:?} is not one image ([1, C, H, W] or [1, H, W, C])")]
    NotAnImage {
        /// The output's shape.
        shape: Vec<usize>,
    },
    /// The output's channels are not the mapping's.
    #[error("an output of shape {shape:?} does not have the mapping's {channels} channels")]
    ChannelsDiffer {
        /// The output's shape.
        shape: Vec<usize>,
        /// The mapping's channels.
        channels: usize,
    },
    /// The palette has fewer colours than the output has classes.
    #[error("{classes} classes but {colours} palette colours")]
    PaletteTooShort {
        /// The output's classes.
        classes: usize,
        /// The palette's colours.
        colours: usize,
    },
}
