//! The `image_input` kernel against the CPU reference of preprocessing
//! (`ImagePreprocessing::apply`), on random images of random sizes in each texture format a
//! game hands it.

use bevy_p2p_inference::gpu::{ImageInputError, ImageInputKernel, TextureReading};
use bevy_p2p_inference::tensor::preprocess::{ChannelOrder, ImagePreprocessing, ImageSize, Resize, ResizeFilter, ResizeTo, RgbaImage, TensorLayout};
use rand::{Rng, SeedableRng};

use crate::support::*;

/// A texture of `format` holding `bytes`, and the view the kernel reads.
fn texture(gpu: &Gpu, format: wgpu::TextureFormat, size: ImageSize, bytes: &[u8]) -> wgpu::TextureView {
    let extent = wgpu::Extent3d { width: size.width, height: size.height, depth_or_array_layers: 1 };
    let texture = gpu.device.create_texture(&wgpu::TextureDescriptor {
        label: Some("test image"),
        size: extent,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    let bytes_per_texel = format.block_copy_size(None).expect("a colour format");
    gpu.queue.write_texture(
        texture.as_image_copy(),
        bytes,
        wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(size.width * bytes_per_texel), rows_per_image: None },
        extent,
    );
    texture.create_view(&wgpu::TextureViewDescriptor::default())
}

/// Preprocesses `image` (whose texture holds `bytes` as `format`) on the GPU and on the CPU, and
/// returns the largest difference.
fn largest_difference(format: wgpu::TextureFormat, image: &RgbaImage, bytes: &[u8], preprocessing: &ImagePreprocessing) -> f32 {
    let want = preprocessing.apply(image).expect("the preprocessing fits");
    let gpu = gpu().lock().unwrap();
    let view = texture(&gpu, format, image.size, bytes);
    let plan = preprocessing.plan(image.size).unwrap();
    let reading = TextureReading::of(format, preprocessing.channels).unwrap();
    let kernel = ImageInputKernel::new(&gpu.device);
    let got = kernel.run_blocking(&gpu.device, &gpu.queue, &view, &plan, reading).expect("runs");
    assert_eq!(got.shape(), want.shape());
    got.data().iter().zip(want.data()).fold(0f32, |m, (a, b)| m.max((a - b).abs()))
}

fn random_rgba8(rng: &mut impl Rng, size: ImageSize) -> (RgbaImage, Vec<u8>) {
    let bytes: Vec<u8> = (0..4 * size.width * size.height).map(|_| rng.random()).collect();
    (RgbaImage::from_rgba8(size, &bytes).unwrap(), bytes)
}

/// The preprocessings tried on every image: bilinear up and down, area down, crops, each
/// channel order, both layouts, normalization.
fn preprocessings(source: ImageSize) -> Vec<ImagePreprocessing> {
    let exact = |width, height, filter| Some(Resize { to: ResizeTo::Exact(ImageSize { width, height }), filter });
    vec![
        ImagePreprocessing::default(),
        ImagePreprocessing { resize: exact(source.width * 2 + 3, source.height + 5, ResizeFilter::Bilinear), ..Default::default() },
        ImagePreprocessing { resize: exact(source.width / 3 + 1, source.height / 2 + 1, ResizeFilter::Bilinear), channels: ChannelOrder::Bgr, ..Default::default() },
        ImagePreprocessing { resize: exact(source.width / 3 + 1, source.height / 4 + 1, ResizeFilter::Area), channels: ChannelOrder::Gray, ..Default::default() },
        ImagePreprocessing {
            resize: Some(Resize { to: ResizeTo::ShorterSide(20), filter: ResizeFilter::Area }),
            center_crop: Some(ImageSize { width: 16, height: 20 }),
            channels: ChannelOrder::Rgba,
            layout: TensorLayout::Nhwc,
            scale: 255.0,
            mean: vec![120.0, 110.0, 100.0, 90.0],
            std: vec![60.0, 50.0, 40.0, 30.0],
        },
        ImagePreprocessing { resize: Some(Resize { to: ResizeTo::ShorterSide(24), filter: ResizeFilter::Bilinear }), center_crop: Some(ImageSize { width: 24, height: 24 }), ..ImagePreprocessing::imagenet() },
    ]
}

#[test]
fn gpu_preprocessing_of_rgba8_textures_equals_the_cpu_reference() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    for _ in 0..4 {
        let size = ImageSize { width: rng.random_range(20..90), height: rng.random_range(20..90) };
        let (image, bytes) = random_rgba8(&mut rng, size);
        for preprocessing in preprocessings(size) {
            let difference = largest_difference(wgpu::TextureFormat::Rgba8Unorm, &image, &bytes, &preprocessing);
            // Relative to the largest value (255 - 90) / 30 of the normalized case, f32 rounding.
            assert!(difference < 2e-5 * 6.0, "{size:?} {preprocessing:?}: {difference}");
        }
    }
}

#[test]
fn an_srgb_texture_is_read_as_its_stored_bytes_not_linearised() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(20);
    let size = ImageSize { width: 37, height: 29 };
    let (image, bytes) = random_rgba8(&mut rng, size);
    for preprocessing in preprocessings(size) {
        let difference = largest_difference(wgpu::TextureFormat::Rgba8UnormSrgb, &image, &bytes, &preprocessing);
        // Decoded by the texture unit, encoded and rounded to 8 bits again by the kernel: the
        // stored bytes exactly (linearised values would be off by up to a fifth of the range).
        assert!(difference < 2e-5 * 6.0, "{preprocessing:?}: {difference}");
    }
}

#[test]
fn float_and_single_channel_textures_are_read_too() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let size = ImageSize { width: 33, height: 41 };
    let texels: Vec<[f32; 4]> = (0..size.width * size.height).map(|_| std::array::from_fn(|_| rng.random_range(-1.0..2.0))).collect();
    let image = RgbaImage { size, texels: texels.clone() };
    let bytes: Vec<u8> = texels.iter().flat_map(|t| t.iter().flat_map(|v| v.to_le_bytes())).collect();
    for preprocessing in preprocessings(size) {
        let difference = largest_difference(wgpu::TextureFormat::Rgba32Float, &image, &bytes, &preprocessing);
        assert!(difference < 1e-4, "{preprocessing:?}: {difference}");
    }
    let grey: Vec<u8> = (0..size.width * size.height).map(|_| rng.random()).collect();
    let image = RgbaImage { size, texels: grey.iter().map(|g| [*g as f32 / 255.0, 0.0, 0.0, 1.0]).collect() };
    let gray = ImagePreprocessing { resize: Some(Resize { to: ResizeTo::ShorterSide(28), filter: ResizeFilter::Area }), channels: ChannelOrder::Gray, ..Default::default() };
    // The CPU reference's grey of (g, 0, 0) is a luma; a one-channel texture's grey is g itself.
    let single = RgbaImage { size, texels: image.texels.iter().map(|t| [t[0], t[0], t[0], 1.0]).collect() };
    let difference = largest_difference(wgpu::TextureFormat::R8Unorm, &single, &grey, &gray);
    assert!(difference < 1e-5, "{difference}");
}

#[test]
fn textures_the_kernel_cannot_read_are_refused_by_name() {
    use wgpu::TextureFormat as F;
    for format in [F::R32Uint, F::Rgba8Sint, F::Depth32Float, F::Depth24PlusStencil8] {
        assert_eq!(TextureReading::of(format, ChannelOrder::Rgb), Err(ImageInputError::UnsupportedFormat { format }));
    }
    assert_eq!(TextureReading::of(F::Rg8Unorm, ChannelOrder::Rgb), Err(ImageInputError::TooFewChannels { format: F::Rg8Unorm, has: 2, channels: ChannelOrder::Rgb, needs: 3 }));
    assert_eq!(TextureReading::of(F::Rgba8UnormSrgb, ChannelOrder::Gray), Ok(TextureReading { srgb: true, single_channel: false }));
    let sampled = wgpu::TextureUsages::TEXTURE_BINDING;
    assert!(TextureReading::check_binding(wgpu::TextureUsages::RENDER_ATTACHMENT, wgpu::TextureDimension::D2, 1, 1).is_err());
    assert!(TextureReading::check_binding(sampled, wgpu::TextureDimension::D2, 6, 1).is_err());
    assert!(TextureReading::check_binding(sampled, wgpu::TextureDimension::D2, 1, 4).is_err());
    assert_eq!(TextureReading::check_binding(sampled | wgpu::TextureUsages::RENDER_ATTACHMENT, wgpu::TextureDimension::D2, 1, 1), Ok(()));
}
