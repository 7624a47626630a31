//! The CPU reference of image preprocessing, against values worked out by hand.

use super::*;

fn size(width: u32, height: u32) -> ImageSize {
    ImageSize { width, height }
}

/// A `width` x 1 image whose red channel is `reds`, green 0.5, blue 0.25, alpha 1.
fn row(reds: &[f32]) -> RgbaImage {
    RgbaImage { size: size(reds.len() as u32, 1), texels: reds.iter().map(|r| [*r, 0.5, 0.25, 1.0]).collect() }
}

fn red_plane(tensor: &Tensor, width: usize) -> Vec<f32> {
    tensor.data()[..width].to_vec()
}

#[test]
fn without_steps_the_texels_are_laid_out_channel_by_channel() {
    let image = RgbaImage::from_rgba8(size(2, 1), &[255, 0, 51, 255, 0, 102, 255, 255]).unwrap();
    let tensor = ImagePreprocessing::default().apply(&image).unwrap();
    assert_eq!(tensor.shape(), &[1, 3, 1, 2]);
    assert_eq!(tensor.data(), &[1.0, 0.0, 0.0, 0.4, 0.2, 1.0]);
}

#[test]
fn nhwc_keeps_each_pixels_channels_together_and_bgr_reverses_them() {
    let image = RgbaImage::from_rgba8(size(2, 1), &[255, 0, 51, 255, 0, 102, 255, 255]).unwrap();
    let preprocessing = ImagePreprocessing { channels: ChannelOrder::Bgr, layout: TensorLayout::Nhwc, ..Default::default() };
    let tensor = preprocessing.apply(&image).unwrap();
    assert_eq!(tensor.shape(), &[1, 1, 2, 3]);
    assert_eq!(tensor.data(), &[0.2, 0.0, 1.0, 1.0, 0.4, 0.0]);
}

#[test]
fn bilinear_upscaling_puts_pixel_centers_at_half_integers_and_clamps_at_the_edges() {
    let preprocessing = ImagePreprocessing::resized(4, 1, ResizeFilter::Bilinear, ChannelOrder::Rgb);
    let tensor = preprocessing.apply(&row(&[0.0, 1.0])).unwrap();
    assert_eq!(red_plane(&tensor, 4), vec![0.0, 0.25, 0.75, 1.0]);
}

#[test]
fn area_downscaling_averages_the_pixels_each_output_covers() {
    let preprocessing = ImagePreprocessing::resized(2, 1, ResizeFilter::Area, ChannelOrder::Rgb);
    let tensor = preprocessing.apply(&row(&[0.0, 0.5, 1.0, 0.25])).unwrap();
    assert_eq!(red_plane(&tensor, 2), vec![0.25, 0.625]);
    // 3 -> 2: each output covers two texels, the middle one shared.
    let tensor = preprocessing.apply(&row(&[0.0, 0.5, 1.0])).unwrap();
    assert_eq!(red_plane(&tensor, 2), vec![0.25, 0.75]);
}

#[test]
fn gray_is_the_rec709_luma_and_normalization_scales_then_subtracts_then_divides() {
    let preprocessing = ImagePreprocessing { channels: ChannelOrder::Gray, scale: 2.0, mean: vec![0.5], std: vec![0.25], ..Default::default() };
    let tensor = preprocessing.apply(&row(&[1.0])).unwrap();
    let luma = 0.2126 * 1.0 + 0.7152 * 0.5 + 0.0722 * 0.25;
    assert_eq!(tensor.shape(), &[1, 1, 1, 1]);
    assert!((tensor.data()[0] - (luma * 2.0 - 0.5) / 0.25).abs() < 1e-6);
}

#[test]
fn the_imagenet_recipe_resizes_the_shorter_side_and_crops_the_center() {
    let plan = ImagePreprocessing::imagenet().plan(size(640, 480)).unwrap();
    assert_eq!(plan.resized, size(341, 256));
    assert_eq!(plan.crop_offset, [58, 16]);
    assert_eq!(plan.output_shape(), vec![1, 3, 224, 224]);
    assert_eq!(plan.mean, [0.485, 0.456, 0.406, 0.406]);
}

#[test]
fn a_center_crop_takes_the_middle_pixels() {
    let preprocessing = ImagePreprocessing { center_crop: Some(size(2, 1)), ..Default::default() };
    let tensor = preprocessing.apply(&row(&[0.0, 0.25, 0.5, 0.75])).unwrap();
    assert_eq!(red_plane(&tensor, 2), vec![0.25, 0.5]);
}

#[test]
fn steps_that_do_not_fit_the_image_are_errors() {
    let crop = ImagePreprocessing { center_crop: Some(size(5, 1)), ..Default::default() };
    assert_eq!(crop.plan(size(4, 4)), Err(PreprocessError::CropOutside { crop: size(5, 1), resized: size(4, 4) }));
    let mean = ImagePreprocessing { mean: vec![0.1, 0.2], ..Default::default() };
    assert_eq!(mean.plan(size(4, 4)), Err(PreprocessError::PerChannelValues { name: "mean", given: 2, channels: 3 }));
    let std = ImagePreprocessing { std: vec![0.0], ..Default::default() };
    assert_eq!(std.plan(size(4, 4)), Err(PreprocessError::NonFiniteNormalization));
    assert_eq!(ImagePreprocessing::default().plan(size(0, 4)), Err(PreprocessError::EmptyImage));
    let to_nothing = ImagePreprocessing::resized(0, 4, ResizeFilter::Bilinear, ChannelOrder::Rgb);
    assert_eq!(to_nothing.plan(size(4, 4)), Err(PreprocessError::ResizedToNothing { image: size(4, 4) }));
    assert_eq!(RgbaImage::from_rgba8(size(2, 2), &[0; 15]), Err(PreprocessError::WrongByteCount { size: size(2, 2), bytes: 15 }));
}
