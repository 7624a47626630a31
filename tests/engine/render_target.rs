//! A camera's render target as a request's input: the prediction equals the one made from the
//! same target read back to the CPU and sent as a tensor, the round trip the GPU path avoids.

use std::time::Duration;

use bevy::camera::visibility::RenderLayers;
use bevy::camera::RenderTarget;
use bevy::image::Image;
use bevy::prelude::*;
use bevy::render::render_resource::{Extent3d, TextureDimension, TextureFormat, TextureUsages};
use bevy_p2p_inference::prelude::*;
use bevy_p2p_inference::tensor::preprocess::{ChannelOrder, ImageSize, ResizeFilter, RgbaImage};
use bevy_p2p_inference::{update_until_prediction, GpuTransfers};

use crate::support::*;

const TIMEOUT: Duration = Duration::from_secs(120);
const SIZE: u32 = 84;

/// A camera rendering an unlit card that shows the shipped ankle boot into an 84x84 sRGB
/// render target; returns the target.
fn scene(app: &mut App) -> Handle<Image> {
    let path = format!("{}/assets/images/ankle_boot.png", env!("CARGO_MANIFEST_DIR"));
    let pixels = image::open(path).unwrap().to_rgba8();
    let extent = Extent3d { width: pixels.width(), height: pixels.height(), depth_or_array_layers: 1 };
    let world = app.world_mut();
    let garment = Image::new(extent, TextureDimension::D2, pixels.into_raw(), TextureFormat::Rgba8UnormSrgb, Default::default());
    let mut images = world.resource_mut::<Assets<Image>>();
    let garment = images.add(garment);
    let mut target = Image::new_target_texture(SIZE, SIZE, TextureFormat::Rgba8UnormSrgb, None);
    target.texture_descriptor.usage |= TextureUsages::COPY_SRC;
    let target = images.add(target);
    let material = world.resource_mut::<Assets<StandardMaterial>>().add(StandardMaterial { base_color_texture: Some(garment), unlit: true, ..default() });
    let mesh = world.resource_mut::<Assets<Mesh>>().add(Rectangle::new(2.0, 2.0));
    world.spawn((Mesh3d(mesh), MeshMaterial3d(material), Transform::default(), RenderLayers::layer(1)));
    world.spawn((
        Camera3d::default(),
        // No tone mapping: its default needs the LUTs of Bevy's `tonemapping_luts` feature (without
        // them it draws magenta), and the models should see the colours as drawn.
        bevy::core_pipeline::tonemapping::Tonemapping::None,
        Camera { clear_color: Color::BLACK.into(), ..default() },
        RenderTarget::Image(target.clone().into()),
        Transform::from_xyz(0.0, 0.0, 2.6).looking_at(Vec3::ZERO, Vec3::Y),
        RenderLayers::layer(1),
    ));
    target
}

#[test]
fn a_render_target_gives_the_prediction_of_the_same_target_read_back_and_uploaded() {
    let mut app = app();
    let target = scene(&mut app);
    let model: Handle<Model> = app.world().resource::<AssetServer>().load("models/fashion_mobilenetv2.onnx");
    // Until the camera has drawn the (still) scene: its pipelines compile over the first frames.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while read_texture(&mut app, target.clone(), SIZE as usize).chunks(4).filter(|t| t[1] > 64).count() < 500 {
        assert!(std::time::Instant::now() < deadline, "the camera never drew the garment");
    }
    let preprocessing = ImagePreprocessing::resized(28, 28, ResizeFilter::Area, ChannelOrder::Gray);
    let uploads = app.world().resource::<GpuTransfers>().totals().tensor_uploads;
    let on_gpu = app.world_mut().spawn(ImageInferenceRequest::new(model.clone(), target.clone(), preprocessing.clone())).id();
    let (from_target, _) = update_until_prediction(&mut app, on_gpu, TIMEOUT).unwrap();
    assert_eq!(app.world().resource::<GpuTransfers>().totals().tensor_uploads, uploads, "no input uploaded");

    let texels = read_texture(&mut app, target, SIZE as usize);
    let input = preprocessing.apply(&RgbaImage::from_rgba8(ImageSize { width: SIZE, height: SIZE }, &texels).unwrap()).unwrap();
    let uploaded = app.world_mut().spawn(InferenceRequest::new(model, input)).id();
    let (from_tensor, _) = update_until_prediction(&mut app, uploaded, TIMEOUT).unwrap();
    assert!(relative_error(&from_target.output, &from_tensor.output) <= 1e-4, "{:?} vs {:?}", from_target.output.data(), from_tensor.output.data());
    assert_eq!(from_target.top_k[0].0, 9, "the camera sees an ankle boot: {:?}", from_target.top_k);
}
