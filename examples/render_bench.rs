//! Render-to-result latency and frame time of inference on a camera's render target: the GPU
//! path (an `ImageInferenceRequest` on the target: preprocessed on the GPU, nothing uploaded)
//! against the read-back-then-upload path a game takes without it (Bevy's readback of the
//! target, preprocessing on the CPU, an `InferenceRequest` with the tensor). The camera renders
//! a card showing the shipped ankle boot into a `--size` square target; the model is the
//! ImageNet-shaped MobileNetV2 with torchvision's recipe (shorter side 256, center crop 224).
//! Requests run one after another; prints one JSON line per path.
//!
//! `cargo run --release --features scene --example render_bench -- --size 512 --requests 30`

use std::time::{Duration, Instant};

use bevy::camera::visibility::RenderLayers;
use bevy::camera::RenderTarget;
use bevy::image::Image;
use bevy::prelude::*;
use bevy::render::gpu_readback::{Readback, ReadbackComplete};
use bevy::render::render_resource::{Extent3d, TextureDimension, TextureFormat, TextureUsages};
use bevy_p2p_inference::prelude::*;
use bevy_p2p_inference::tensor::preprocess::{ImageSize, RgbaImage};
use bevy_p2p_inference::{headless_plugins, GpuTransfers};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The render target's side, in pixels.
    #[arg(long, default_value_t = 224)]
    size: u32,
    /// Requests per path (after two warm-up requests).
    #[arg(long, default_value_t = 30)]
    requests: usize,
    /// The model (an ImageNet-shaped classifier, input [1, 3, 224, 224]).
    #[arg(long, default_value = "models/mobilenetv2_imagenet_synthetic.onnx")]
    model: String,
}

/// The last readback of the target, from Bevy's readback observer.
#[derive(Resource, Default)]
struct Read(Option<Vec<u8>>);

/// One request's measurements.
struct Sample {
    latency: Duration,
    frames: u32,
}

fn main() {
    let args = Args::parse();
    let mut app = App::new();
    app.add_plugins((headless_plugins(), P2pInferencePlugin::default())).init_resource::<Read>();
    app.finish();
    app.cleanup();
    let target = scene(&mut app, args.size);
    let model: Handle<Model> = app.world().resource::<AssetServer>().load(args.model.clone());
    for _ in 0..3 {
        app.update();
    }
    let preprocessing = ImagePreprocessing::imagenet();
    for path in ["gpu", "readback"] {
        let uploads = app.world().resource::<GpuTransfers>().totals();
        let mut samples = Vec::new();
        for i in 0..args.requests + 2 {
            let sample = match path {
                "gpu" => gpu_path(&mut app, &model, &target, &preprocessing),
                _ => readback_path(&mut app, &model, &target, &preprocessing, args.size),
            };
            if i >= 2 {
                samples.push(sample);
            }
        }
        let after = app.world().resource::<GpuTransfers>().totals();
        let mut latencies: Vec<f64> = samples.iter().map(|s| s.latency.as_secs_f64() * 1e3).collect();
        latencies.sort_by(f64::total_cmp);
        let frames: u32 = samples.iter().map(|s| s.frames).sum();
        let total: f64 = latencies.iter().sum();
        println!(
            "{{\"path\":\"{path}\",\"size\":{},\"requests\":{},\"median_ms\":{:.2},\"p95_ms\":{:.2},\"frames_per_request\":{:.2},\"mean_frame_ms\":{:.2},\"uploaded_bytes\":{},\"read_back_bytes\":{}}}",
            args.size,
            samples.len(),
            latencies[latencies.len() / 2],
            latencies[(latencies.len() * 95 / 100).min(latencies.len() - 1)],
            frames as f64 / samples.len() as f64,
            total / frames as f64,
            after.tensor_upload_bytes - uploads.tensor_upload_bytes,
            after.readback_bytes - uploads.readback_bytes,
        );
    }
}

/// A camera rendering an unlit card that shows the ankle boot into a `size` square target.
fn scene(app: &mut App, size: u32) -> Handle<Image> {
    let path = format!("{}/assets/images/ankle_boot.png", env!("CARGO_MANIFEST_DIR"));
    let pixels = image::open(path).expect("the shipped image").to_rgba8();
    let extent = Extent3d { width: pixels.width(), height: pixels.height(), depth_or_array_layers: 1 };
    let world = app.world_mut();
    let mut images = world.resource_mut::<Assets<Image>>();
    let garment = images.add(Image::new(extent, TextureDimension::D2, pixels.into_raw(), TextureFormat::Rgba8UnormSrgb, Default::default()));
    let mut target = Image::new_target_texture(size, size, TextureFormat::Rgba8UnormSrgb, None);
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

/// Updates `app` until `entity` has a prediction; returns the frames it took.
fn until_prediction(app: &mut App, entity: Entity) -> u32 {
    let mut frames = 0;
    loop {
        if app.world().get::<Prediction>(entity).is_some() {
            app.world_mut().despawn(entity);
            return frames;
        }
        if let Some(failed) = app.world().get::<InferenceFailed>(entity) {
            panic!("the request failed: {}", failed.error);
        }
        app.update();
        frames += 1;
    }
}

fn gpu_path(app: &mut App, model: &Handle<Model>, target: &Handle<Image>, preprocessing: &ImagePreprocessing) -> Sample {
    let start = Instant::now();
    let entity = app.world_mut().spawn(ImageInferenceRequest::new(model.clone(), target.clone(), preprocessing.clone())).id();
    let frames = until_prediction(app, entity);
    Sample { latency: start.elapsed(), frames }
}

fn readback_path(app: &mut App, model: &Handle<Model>, target: &Handle<Image>, preprocessing: &ImagePreprocessing, size: u32) -> Sample {
    let start = Instant::now();
    let reader = app.world_mut().spawn(Readback::texture(target.clone())).observe(|done: On<ReadbackComplete>, mut read: ResMut<Read>| read.0 = Some(done.data.clone())).id();
    let mut frames = 0;
    let padded = loop {
        app.update();
        frames += 1;
        if let Some(bytes) = app.world_mut().resource_mut::<Read>().0.take() {
            break bytes;
        }
    };
    app.world_mut().despawn(reader);
    let row = (size as usize * 4).next_multiple_of(256);
    let texels: Vec<u8> = padded.chunks(row).take(size as usize).flat_map(|r| r[..size as usize * 4].to_vec()).collect();
    let image = RgbaImage::from_rgba8(ImageSize { width: size, height: size }, &texels).expect("a whole target");
    let input = preprocessing.apply(&image).expect("the recipe fits");
    let entity = app.world_mut().spawn(InferenceRequest::new(model.clone(), input)).id();
    frames += until_prediction(app, entity);
    Sample { latency: start.elapsed(), frames }
}
