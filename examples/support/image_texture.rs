//! Shared by the `peer` and `web` examples: an image tensor sent to the GPU as a texture.

use bevy::image::Image;
use bevy::render::render_resource::{Extent3d, TextureDimension, TextureFormat};
use bevy_p2p_inference::tensor::preprocess::{ChannelOrder, ResizeFilter};
use bevy_p2p_inference::{ImagePreprocessing, Tensor};

/// A `[1, C, H, W]` image tensor of values in `[0, 1]` (grey for one channel, RGB for three) as
/// an 8-bit sRGB texture (grey in each colour channel, as a grey PNG stores it), with the
/// preprocessing that reads it back into that tensor on the GPU; `None` for another shape.
pub fn image_texture(input: &Tensor) -> Option<(Image, ImagePreprocessing)> {
    let &[1, channels @ (1 | 3), height, width] = input.shape() else { return None };
    let (plane, data) = (height * width, input.data());
    let byte = |v: f32| (v * 255.0).round().clamp(0.0, 255.0) as u8;
    let rgba: Vec<u8> = (0..plane)
        .flat_map(|i| {
            let [r, g, b] = if channels == 1 { [data[i]; 3] } else { [data[i], data[plane + i], data[2 * plane + i]] };
            [byte(r), byte(g), byte(b), 255]
        })
        .collect();
    let size = Extent3d { width: width as u32, height: height as u32, depth_or_array_layers: 1 };
    let order = if channels == 1 { ChannelOrder::Gray } else { ChannelOrder::Rgb };
    let preprocessing = ImagePreprocessing::resized(size.width, size.height, ResizeFilter::Area, order);
    Some((Image::new(size, TextureDimension::D2, rgba, TextureFormat::Rgba8UnormSrgb, Default::default()), preprocessing))
}
