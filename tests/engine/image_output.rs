//! The `image_output` kernel against the CPU reference of output mappings
//! (`OutputMapping::apply`), on random tensors, for every texture format it writes.

use bevy_p2p_inference::gpu::image_output::output_params;
use bevy_p2p_inference::gpu::{ImageOutputError, ImageOutputKernel, TextureWriting};
use bevy_p2p_inference::tensor::output_mapping::{OutputMapping, OutputMappingError};
use bevy_p2p_inference::tensor::preprocess::{ChannelOrder, ImageSize, TensorLayout};
use bevy_p2p_inference::Tensor;
use rand::{Rng, SeedableRng};
use wgpu::util::DeviceExt;

use crate::support::*;

/// The colours a texture of `format` holds, read back as RGBA values (sRGB ones decoded to
/// the stored encoding, not linearised: `encode` applied to the reference gives the same).
fn written(format: wgpu::TextureFormat, tensor: &Tensor, mapping: &OutputMapping, size: ImageSize) -> Vec<[f32; 4]> {
    let gpu = gpu().lock().unwrap();
    let (device, queue) = (&gpu.device, &gpu.queue);
    let extent = wgpu::Extent3d { width: size.width, height: size.height, depth_or_array_layers: 1 };
    let texture = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("output image"),
        size: extent,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::COPY_DST | wgpu::TextureUsages::COPY_SRC | wgpu::TextureUsages::TEXTURE_BINDING,
        view_formats: &[],
    });
    let output = device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some("output"), contents: bytemuck::cast_slice(tensor.data()), usage: wgpu::BufferUsages::STORAGE });
    let params = output_params(&texture, tensor.shape(), mapping).expect("the output maps to the texture");
    let kernel = ImageOutputKernel::new(device);
    let texel_bytes = format.block_copy_size(None).unwrap();
    let row = (size.width * texel_bytes).next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT);
    let readback = device.create_buffer(&wgpu::BufferDescriptor { label: Some("texels"), size: (row * size.height) as u64, usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST, mapped_at_creation: false });
    let mut encoder = device.create_command_encoder(&Default::default());
    kernel.encode(device, &mut encoder, &output, &params, mapping, &texture);
    encoder.copy_texture_to_buffer(
        texture.as_image_copy(),
        wgpu::TexelCopyBufferInfo { buffer: &readback, layout: wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(row), rows_per_image: None } },
        extent,
    );
    queue.submit([encoder.finish()]);
    readback.slice(..).map_async(wgpu::MapMode::Read, |r| r.unwrap());
    device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    let bytes = readback.slice(..).get_mapped_range().to_vec();
    let mut texels = Vec::new();
    for y in 0..size.height as usize {
        for x in 0..size.width as usize {
            let at = y * row as usize + x * texel_bytes as usize;
            let t = &bytes[at..at + texel_bytes as usize];
            let unorm = |b: u8| b as f32 / 255.0;
            texels.push(match format {
                wgpu::TextureFormat::Rgba8Unorm | wgpu::TextureFormat::Rgba8UnormSrgb => [unorm(t[0]), unorm(t[1]), unorm(t[2]), unorm(t[3])],
                wgpu::TextureFormat::Bgra8Unorm | wgpu::TextureFormat::Bgra8UnormSrgb => [unorm(t[2]), unorm(t[1]), unorm(t[0]), unorm(t[3])],
                wgpu::TextureFormat::Rgba16Float => std::array::from_fn(|i| half::f16::from_le_bytes([t[2 * i], t[2 * i + 1]]).to_f32()),
                _ => std::array::from_fn(|i| f32::from_le_bytes(t[4 * i..4 * i + 4].try_into().unwrap())),
            });
        }
    }
    texels
}

fn encode_srgb(v: f32) -> f32 {
    if v <= 0.0031308 { 12.92 * v } else { 1.055 * v.powf(1.0 / 2.4) - 0.055 }
}

/// A random `[1, C, H, W]` (or NHWC) tensor of values in `[-1.5, 1.5]`.
fn random_output(rng: &mut impl Rng, layout: TensorLayout, channels: usize, size: ImageSize) -> Tensor {
    let (h, w) = (size.height as usize, size.width as usize);
    let shape = match layout {
        TensorLayout::Nchw => vec![1, channels, h, w],
        TensorLayout::Nhwc => vec![1, h, w, channels],
    };
    Tensor::new(shape, (0..channels * h * w).map(|_| rng.random_range(-1.5..1.5)).collect()).unwrap()
}

#[test]
fn outputs_written_into_textures_of_every_format_are_the_cpu_references_colours() {
    use wgpu::TextureFormat as F;
    let mut rng = rand::rngs::StdRng::seed_from_u64(29);
    let palette = vec![[1.0, 0.0, 0.0, 1.0], [0.0, 0.5, 1.0, 1.0], [0.2, 0.9, 0.1, 0.5], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]];
    let mappings = [
        (OutputMapping::Colours { channels: ChannelOrder::Rgb, layout: TensorLayout::Nchw, scale: 0.5, offset: 0.5 }, 3),
        (OutputMapping::Colours { channels: ChannelOrder::Bgr, layout: TensorLayout::Nhwc, scale: 1.0, offset: 0.0 }, 3),
        (OutputMapping::Colours { channels: ChannelOrder::Gray, layout: TensorLayout::Nchw, scale: 0.4, offset: 0.5 }, 1),
        (OutputMapping::Colours { channels: ChannelOrder::Rgba, layout: TensorLayout::Nhwc, scale: 0.5, offset: 0.5 }, 4),
        (OutputMapping::ClassColours { palette: palette.clone(), layout: TensorLayout::Nchw }, 5),
        (OutputMapping::ClassColours { palette, layout: TensorLayout::Nhwc }, 4),
    ];
    for format in [F::Rgba8Unorm, F::Rgba8UnormSrgb, F::Bgra8Unorm, F::Bgra8UnormSrgb, F::Rgba16Float, F::Rgba32Float] {
        // Half a byte step for 8-bit formats, f16 rounding for half floats.
        let tolerance = match format {
            F::Rgba32Float => 1e-6,
            F::Rgba16Float => 1e-3,
            _ => 0.5 / 255.0 + 1e-4,
        };
        for (mapping, channels) in &mappings {
            let size = ImageSize { width: rng.random_range(3..70), height: rng.random_range(3..40) };
            let tensor = random_output(&mut rng, mapping.layout(), *channels, size);
            let want = mapping.apply(&tensor).unwrap();
            let got = written(format, &tensor, mapping, size);
            for (i, (got, want)) in got.iter().zip(&want.texels).enumerate() {
                let want = match format.is_srgb() {
                    true => [encode_srgb(want[0]), encode_srgb(want[1]), encode_srgb(want[2]), want[3]],
                    false => *want,
                };
                let difference = got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(difference <= tolerance, "{format:?} {mapping:?} texel {i}: {got:?} vs {want:?}");
            }
        }
    }
}

#[test]
fn outputs_that_do_not_map_to_the_texture_are_refused_by_name() {
    let gpu = gpu().lock().unwrap();
    let texture = |format, usage| {
        gpu.device.create_texture(&wgpu::TextureDescriptor {
            label: None,
            size: wgpu::Extent3d { width: 8, height: 6, depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format,
            usage,
            view_formats: &[],
        })
    };
    let writable = wgpu::TextureUsages::COPY_DST | wgpu::TextureUsages::TEXTURE_BINDING;
    let rgb = OutputMapping::rgb();
    let target = texture(wgpu::TextureFormat::Rgba8Unorm, writable);
    assert_eq!(output_params(&target, &[1, 3, 6, 8], &rgb).map(drop), Ok(()));
    assert_eq!(output_params(&target, &[1, 3, 8, 8], &rgb), Err(ImageOutputError::SizeDiffers { output: ImageSize { width: 8, height: 8 }, texture: ImageSize { width: 8, height: 6 } }));
    assert_eq!(output_params(&target, &[1, 10], &rgb), Err(ImageOutputError::Mapping(OutputMappingError::NotAnImage { shape: vec![1, 10] })));
    assert_eq!(output_params(&target, &[1, 2, 6, 8], &rgb), Err(ImageOutputError::Mapping(OutputMappingError::ChannelsDiffer { shape: vec![1, 2, 6, 8], channels: 3 })));
    let two_colours = OutputMapping::ClassColours { palette: vec![[0.0; 4]; 2], layout: TensorLayout::Nchw };
    assert_eq!(output_params(&target, &[1, 3, 6, 8], &two_colours), Err(ImageOutputError::Mapping(OutputMappingError::PaletteTooShort { classes: 3, colours: 2 })));
    let integer = texture(wgpu::TextureFormat::R32Uint, writable);
    assert_eq!(output_params(&integer, &[1, 3, 6, 8], &rgb), Err(ImageOutputError::UnsupportedFormat { format: wgpu::TextureFormat::R32Uint }));
    let read_only = texture(wgpu::TextureFormat::Rgba8Unorm, wgpu::TextureUsages::TEXTURE_BINDING);
    assert!(matches!(output_params(&read_only, &[1, 3, 6, 8], &rgb), Err(ImageOutputError::NotWritable(_))));
    assert!(TextureWriting::of(wgpu::TextureFormat::Rgba8UnormSrgb).is_ok());
}
