//! How a model wants an image turned into its input tensor (resize, center crop, channels,
//! scale, per-channel mean and std, layout), the arithmetic of each output value, and a CPU
//! reference of the whole preprocessing. The GPU kernel (`shaders/image_input.wgsl`) computes
//! the same values from a texture, so that a render target reaches the model without leaving
//! the GPU.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{Tensor, TensorError};

/// Rec. 709 luma weights, as the `image` crate (and so [`Tensor::from_image_bytes`]) converts
/// RGB to grey.
pub const LUMA_WEIGHTS: [f32; 3] = [0.2126, 0.7152, 0.0722];

/// How a model wants an image preprocessed into its input: declared once per model and used for
/// every image request of it. The steps run in order: resize, center crop, channel selection,
/// `value * scale`, `(value - mean[c]) / std[c]`, layout. Pixel values start in `[0, 1]` (a
/// unorm texel as stored: an sRGB texture's values are not linearised).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImagePreprocessing {
    /// The resize, if any (else the source size is kept).
    pub resize: Option<Resize>,
    /// The size of the centered window kept after resizing, if any.
    pub center_crop: Option<ImageSize>,
    /// Which channels the model reads, in its order.
    pub channels: ChannelOrder,
    /// Multiplies each value first (255 for models that expect byte values).
    pub scale: f32,
    /// Subtracted per channel after scaling: one value for every channel, or one per channel.
    pub mean: Vec<f32>,
    /// Divides per channel after the mean: one value for every channel, or one per channel.
    pub std: Vec<f32>,
    /// How the values are laid out in the tensor.
    pub layout: TensorLayout,
}

impl Default for ImagePreprocessing {
    /// RGB, NCHW, values in `[0, 1]`, no resize or crop.
    fn default() -> Self {
        Self { resize: None, center_crop: None, channels: ChannelOrder::Rgb, scale: 1.0, mean: vec![0.0], std: vec![1.0], layout: TensorLayout::Nchw }
    }
}

impl ImagePreprocessing {
    /// torchvision's ImageNet recipe: shorter side to 256 (bilinear), center crop 224, RGB,
    /// normalized with the ImageNet mean and std, NCHW.
    pub fn imagenet() -> Self {
        Self {
            resize: Some(Resize { to: ResizeTo::ShorterSide(256), filter: ResizeFilter::Bilinear }),
            center_crop: Some(ImageSize { width: 224, height: 224 }),
            channels: ChannelOrder::Rgb,
            scale: 1.0,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            layout: TensorLayout::Nchw,
        }
    }

    /// Resizes to exactly `width` x `height` with `filter` and keeps `channels`, values in
    /// `[0, 1]`, NCHW.
    pub fn resized(width: u32, height: u32, filter: ResizeFilter, channels: ChannelOrder) -> Self {
        Self { resize: Some(Resize { to: ResizeTo::Exact(ImageSize { width, height }), filter }), channels, ..Self::default() }
    }

    /// Checks the steps against an image of `source`'s size and works out where each output
    /// pixel comes from.
    pub fn plan(&self, source: ImageSize) -> Result<PreprocessPlan, PreprocessError> {
        if source.width == 0 || source.height == 0 {
            return Err(PreprocessError::EmptyImage);
        }
        let channels = self.channels.count();
        for (name, values) in [("mean", &self.mean), ("std", &self.std)] {
            if values.len() != 1 && values.len() != channels {
                return Err(PreprocessError::PerChannelValues { name, given: values.len(), channels });
            }
        }
        if self.std.iter().any(|s| *s == 0.0 || !s.is_finite()) || self.mean.iter().any(|m| !m.is_finite()) || !self.scale.is_finite() {
            return Err(PreprocessError::NonFiniteNormalization);
        }
        let (resized, filter) = match &self.resize {
            None => (source, ResizeFilter::Bilinear),
            Some(resize) => (resize.to.size_for(source), resize.filter),
        };
        if resized.width == 0 || resized.height == 0 {
            return Err(PreprocessError::ResizedToNothing { image: source });
        }
        let output = self.center_crop.unwrap_or(resized);
        if output.width == 0 || output.height == 0 || output.width > resized.width || output.height > resized.height {
            return Err(PreprocessError::CropOutside { crop: output, resized });
        }
        let per_channel = |values: &[f32]| -> [f32; 4] { std::array::from_fn(|c| values[if values.len() == 1 { 0 } else { c.min(values.len() - 1) }]) };
        Ok(PreprocessPlan {
            source,
            resized,
            filter: if resized == source { ResizeFilter::Bilinear } else { filter },
            crop_offset: [(resized.width - output.width) / 2, (resized.height - output.height) / 2],
            output,
            channels: self.channels,
            scale: self.scale,
            mean: per_channel(&self.mean),
            std: per_channel(&self.std),
            layout: self.layout,
        })
    }

    /// The CPU reference: preprocesses `image` into the model's input tensor.
    pub fn apply(&self, image: &RgbaImage) -> Result<Tensor, PreprocessError> {
        let plan = self.plan(image.size)?;
        let mut data = vec![0.0; plan.output_len()];
        for y in 0..plan.output.height {
            for x in 0..plan.output.width {
                let rgba = plan.sample(x, y, |sx, sy| image.texel(sx, sy));
                let values = plan.channels.select(rgba);
                for (c, value) in values.iter().take(plan.channels.count()).enumerate() {
                    data[plan.index(x, y, c)] = plan.normalize(*value, c);
                }
            }
        }
        Ok(Tensor::new(plan.output_shape(), data)?)
    }
}

/// A size in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSize {
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
}

/// A resize step: to what size, with which filter.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resize {
    /// The size after resizing.
    pub to: ResizeTo,
    /// How source pixels are combined.
    pub filter: ResizeFilter,
}

/// The size an image is resized to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResizeTo {
    /// Exactly this size (the aspect ratio may change).
    Exact(ImageSize),
    /// The shorter side becomes this many pixels, keeping the aspect ratio (torchvision's
    /// `Resize(n)`: the longer side is truncated).
    ShorterSide(u32),
}

impl ResizeTo {
    /// The size an image of `source`'s size is resized to.
    pub fn size_for(self, source: ImageSize) -> ImageSize {
        match self {
            ResizeTo::Exact(size) => size,
            ResizeTo::ShorterSide(side) => {
                let (short, long) = (source.width.min(source.height) as u64, source.width.max(source.height) as u64);
                let longer = (long * side as u64 / short) as u32;
                if source.width <= source.height {
                    ImageSize { width: side, height: longer }
                } else {
                    ImageSize { width: longer, height: side }
                }
            }
        }
    }
}

/// How a resize combines source pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResizeFilter {
    /// Linear between the four nearest source pixels, pixel centers at half-integers and
    /// clamped at the edges (PyTorch's `interpolate(mode="bilinear", align_corners=False)`
    /// without antialiasing, ONNX Resize `linear` with `half_pixel`).
    Bilinear,
    /// The mean of the source pixels each output pixel covers (PyTorch's
    /// `interpolate(mode="area")`, adaptive average pooling).
    Area,
}

/// Which channels a model reads, in its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelOrder {
    /// Red, green, blue.
    Rgb,
    /// Blue, green, red (OpenCV-trained models).
    Bgr,
    /// One grey channel: Rec. 709 luma of RGB ([`LUMA_WEIGHTS`]), or a one-channel texture's
    /// only channel.
    Gray,
    /// Red, green, blue, alpha.
    Rgba,
}

impl ChannelOrder {
    /// How many channels the tensor has.
    pub fn count(self) -> usize {
        match self {
            ChannelOrder::Gray => 1,
            ChannelOrder::Rgb | ChannelOrder::Bgr => 3,
            ChannelOrder::Rgba => 4,
        }
    }

    /// The values of an RGBA sample in this order (the unused ones last).
    pub fn select(self, rgba: [f32; 4]) -> [f32; 4] {
        let [r, g, b, a] = rgba;
        match self {
            ChannelOrder::Rgb | ChannelOrder::Rgba => rgba,
            ChannelOrder::Bgr => [b, g, r, a],
            ChannelOrder::Gray => [LUMA_WEIGHTS[0] * r + LUMA_WEIGHTS[1] * g + LUMA_WEIGHTS[2] * b, 0.0, 0.0, 0.0],
        }
    }
}

/// How an image's values are laid out in the tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TensorLayout {
    /// `[1, channels, height, width]` (PyTorch).
    Nchw,
    /// `[1, height, width, channels]` (TensorFlow, Keras).
    Nhwc,
}

/// An image's texels as RGBA values in `[0, 1]`, row by row: the CPU reference's input.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbaImage {
    /// Its size.
    pub size: ImageSize,
    /// `width * height` texels, top row first.
    pub texels: Vec<[f32; 4]>,
}

impl RgbaImage {
    /// An image from 8-bit RGBA bytes (four per texel, as stored: an sRGB texture's bytes are
    /// taken as they are).
    pub fn from_rgba8(size: ImageSize, bytes: &[u8]) -> Result<Self, PreprocessError> {
        let texels = size.width as usize * size.height as usize;
        if bytes.len() != 4 * texels {
            return Err(PreprocessError::WrongByteCount { size, bytes: bytes.len() });
        }
        Ok(Self { size, texels: bytes.chunks_exact(4).map(|t| std::array::from_fn(|c| t[c] as f32 / 255.0)).collect() })
    }

    /// The texel at column `x`, row `y`.
    pub fn texel(&self, x: u32, y: u32) -> [f32; 4] {
        self.texels[y as usize * self.size.width as usize + x as usize]
    }
}

/// Preprocessing checked against one source size: where each output pixel comes from and
/// how its values are normalized. The GPU kernel's parameters are made from it.
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocessPlan {
    /// The source image's size.
    pub source: ImageSize,
    /// The size after resizing (the source's, when there is no resize).
    pub resized: ImageSize,
    /// The resize's filter (bilinear at an unchanged size, where it copies).
    pub filter: ResizeFilter,
    /// The crop's top-left corner in the resized image.
    pub crop_offset: [u32; 2],
    /// The output's size.
    pub output: ImageSize,
    /// The channels kept.
    pub channels: ChannelOrder,
    /// The scale applied first.
    pub scale: f32,
    /// The mean per output channel.
    pub mean: [f32; 4],
    /// The std per output channel.
    pub std: [f32; 4],
    /// The output's layout.
    pub layout: TensorLayout,
}

impl PreprocessPlan {
    /// The tensor's shape.
    pub fn output_shape(&self) -> Vec<usize> {
        let (c, h, w) = (self.channels.count(), self.output.height as usize, self.output.width as usize);
        match self.layout {
            TensorLayout::Nchw => vec![1, c, h, w],
            TensorLayout::Nhwc => vec![1, h, w, c],
        }
    }

    /// The tensor's number of values.
    pub fn output_len(&self) -> usize {
        self.output_shape().iter().product()
    }

    /// Where output pixel (`x`, `y`)'s channel `c` goes in the tensor.
    pub fn index(&self, x: u32, y: u32, c: usize) -> usize {
        let (w, h, channels) = (self.output.width as usize, self.output.height as usize, self.channels.count());
        let (x, y) = (x as usize, y as usize);
        match self.layout {
            TensorLayout::Nchw => (c * h + y) * w + x,
            TensorLayout::Nhwc => (y * w + x) * channels + c,
        }
    }

    /// `value` of channel `c` scaled and normalized.
    pub fn normalize(&self, value: f32, c: usize) -> f32 {
        (value * self.scale - self.mean[c]) / self.std[c]
    }

    /// The RGBA sample for output pixel (`x`, `y`), reading source texels with `texel`.
    pub fn sample(&self, x: u32, y: u32, texel: impl Fn(u32, u32) -> [f32; 4]) -> [f32; 4] {
        let (rx, ry) = (x + self.crop_offset[0], y + self.crop_offset[1]);
        match self.filter {
            ResizeFilter::Bilinear => {
                let (x0, x1, fx) = linear_taps(rx, self.resized.width, self.source.width);
                let (y0, y1, fy) = linear_taps(ry, self.resized.height, self.source.height);
                let (a, b, c, d) = (texel(x0, y0), texel(x1, y0), texel(x0, y1), texel(x1, y1));
                std::array::from_fn(|i| {
                    let top = a[i] + (b[i] - a[i]) * fx;
                    let bottom = c[i] + (d[i] - c[i]) * fx;
                    top + (bottom - top) * fy
                })
            }
            ResizeFilter::Area => {
                let (x0, x1) = area_span(rx, self.resized.width, self.source.width);
                let (y0, y1) = area_span(ry, self.resized.height, self.source.height);
                let mut sum = [0.0f32; 4];
                for sy in y0..y1 {
                    for sx in x0..x1 {
                        let t = texel(sx, sy);
                        for i in 0..4 {
                            sum[i] += t[i];
                        }
                    }
                }
                let count = ((x1 - x0) * (y1 - y0)) as f32;
                sum.map(|s| s / count)
            }
        }
    }
}

/// The two source texels a bilinear resize of `source` texels to `resized` reads for output
/// texel `i`, and the weight of the second.
fn linear_taps(i: u32, resized: u32, source: u32) -> (u32, u32, f32) {
    let position = ((i as f32 + 0.5) * (source as f32 / resized as f32) - 0.5).max(0.0);
    let first = (position.floor() as u32).min(source - 1);
    let second = (first + 1).min(source - 1);
    (first, second, position - first as f32)
}

/// The source texels `[start, end)` an area resize of `source` texels to `resized` averages
/// for output texel `i`.
fn area_span(i: u32, resized: u32, source: u32) -> (u32, u32) {
    let (i, resized, source) = (i as u64, resized as u64, source as u64);
    let start = i * source / resized;
    let end = ((i + 1) * source).div_ceil(resized);
    (start as u32, end.max(start + 1) as u32)
}

/// Why an image cannot be preprocessed as declared.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum PreprocessError {
    /// The image has no pixels.
    #[error("the image has no pixels")]
    EmptyImage,
    /// The resize makes the image empty.
    #[error("resizing a {image:?} image leaves no pixels")]
    ResizedToNothing {
        /// The image's size.
        image: ImageSize,
    },
    /// The crop does not fit inside the resized image.
    #[error("a {crop:?} center crop does not fit inside the {resized:?} resized image")]
    CropOutside {
        /// The crop.
        crop: ImageSize,
        /// The image after resizing.
        resized: ImageSize,
    },
    /// The mean or std has neither one value nor one per channel.
    #[error("{given} {name} values for {channels} channels (give one, or one per channel)")]
    PerChannelValues {
        /// "mean" or "std".
        name: &'static str,
        /// How many were given.
        given: usize,
        /// How many channels there are.
        channels: usize,
    },
    /// A std is zero, or a mean, std or the scale is not finite.
    #[error("the scale, mean and std must be finite and every std non-zero")]
    NonFiniteNormalization,
    /// The bytes do not hold the image's texels.
    #[error("{bytes} bytes do not hold a {size:?} RGBA8 image")]
    WrongByteCount {
        /// The image's size.
        size: ImageSize,
        /// How many bytes were given.
        bytes: usize,
    },
    /// The preprocessed tensor could not be built.
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

#[cfg(test)]
#[path = "preprocess_tests.rs"]
mod tests;
