//! Inference on what a camera renders, without a CPU round trip. A small 3D scene (a card
//! showing a Fashion-MNIST garment, turning in front of the camera) renders into a texture;
//! the shipped classifier runs on that texture every few frames, reading back only its top-3
//! (taken on the GPU), which the inspector overlay lists (and which are printed as they
//! change); a small U-Net (the test zoo's, random weights) runs on the same texture and writes
//! its two-class segmentation into a second texture as a colour map. A 2D camera shows the
//! scene, the map and the overlay side by side: into a window with `--window` (feature
//! `window`), else into a texture that `--screenshot FILE.png` saves after `--frames` frames.
//!
//! `cargo run --release --features scene --example render_target -- --frames 240 --screenshot shot.png`

use std::path::PathBuf;

use bevy::camera::visibility::RenderLayers;
use bevy::camera::RenderTarget;
use bevy::image::Image;
use bevy::prelude::*;
use bevy::render::gpu_readback::{Readback, ReadbackComplete};
use bevy::render::render_resource::{Extent3d, TextureDimension, TextureFormat, TextureUsages};
use bevy_p2p_inference::prelude::*;
use bevy_p2p_inference::tensor::preprocess::{ChannelOrder, ResizeFilter, TensorLayout};
use bevy_egui::{EguiGlobalSettings, PrimaryEguiContext};
use bevy_p2p_inference::overlay::OverlayPlacement;
use bevy_p2p_inference::{headless_plugins, ContinuousInference, InferenceOverlayPlugin, OutputMapping, OutputToImage};
use clap::Parser;

/// Fashion-MNIST class names, in label order; the shipped images are named after them.
const CLASSES: [&str; 10] = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
const IMAGES: [&str; 10] = ["t_shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"];
/// The scene's render target: what the models see.
const SCENE_SIZE: u32 = 112;
/// The headless view's size: the scene and the map, 256 pixels each, and the overlay.
const VIEW: (u32, u32) = (1000, 460);
/// Seconds each garment is shown.
const SECONDS_PER_GARMENT: f32 = 1.5;

#[derive(Parser, Resource, Clone)]
struct Args {
    /// Frames to run (headless; 0: until closed).
    #[arg(long, default_value_t = 240)]
    frames: u32,
    /// Save the composed view as a PNG at the end (headless).
    #[arg(long)]
    screenshot: Option<PathBuf>,
    /// Show the view in a window (feature `window`).
    #[arg(long)]
    window: bool,
}

/// The card showing the garment, and the garment textures it cycles through.
#[derive(Component)]
struct Card {
    garments: Vec<Handle<Image>>,
    material: Handle<StandardMaterial>,
}

/// The headless view's texture, read back for the screenshot.
#[derive(Resource)]
struct View(Handle<Image>);

fn main() -> AppExit {
    let args = Args::parse();
    let window = args.window;
    let mut app = App::new();
    if window {
        #[cfg(feature = "window")]
        app.add_plugins(DefaultPlugins);
        #[cfg(not(feature = "window"))]
        {
            eprintln!("--window needs the `window` feature");
            return AppExit::error();
        }
    } else {
        app.add_plugins(headless_plugins().set(bevy::log::LogPlugin { level: bevy::log::Level::ERROR, ..default() }));
    }
    let class_names = CLASSES.iter().map(|c| c.to_string()).collect();
    app.add_plugins((P2pInferencePlugin::default(), InferenceOverlayPlugin { class_names, placement: OverlayPlacement::TopRight, ..default() }))
        // The overlay goes on the view's camera, not on the first camera (the scene's, which
        // the models see).
        .insert_resource(EguiGlobalSettings { auto_create_primary_context: false, ..default() })
        .insert_resource(args)
        .insert_resource(ClearColor(Color::BLACK))
        .add_systems(Startup, setup)
        .add_systems(Update, (turn_and_swap_card, finish))
        .add_observer(print_top_3);
    if window {
        return app.run();
    }
    // Headless: frames as fast as they come.
    app.finish();
    app.cleanup();
    loop {
        app.update();
        if let Some(exit) = app.should_exit() {
            return exit;
        }
    }
}

/// A texture a camera renders into or the U-Net writes into: readable by shaders.
fn texture(width: u32, height: u32, format: TextureFormat) -> Image {
    let mut image = Image::new_target_texture(width, height, format, None);
    image.texture_descriptor.usage |= TextureUsages::COPY_SRC;
    image
}

/// A shipped garment image as an sRGB texture.
fn garment(name: &str) -> Image {
    let path = format!("{}/assets/images/{name}.png", env!("CARGO_MANIFEST_DIR"));
    let pixels = image::open(&path).unwrap_or_else(|e| panic!("{path}: {e}")).to_rgba8();
    let size = Extent3d { width: pixels.width(), height: pixels.height(), depth_or_array_layers: 1 };
    Image::new(size, TextureDimension::D2, pixels.into_raw(), TextureFormat::Rgba8UnormSrgb, Default::default())
}

/// The test zoo's U-Net, exported with a dynamic batch (it runs on one image).
fn unet() -> Model {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/zoo/unet_small_dynamic_batch.onnx")).expect("the test zoo's U-Net");
    Model::from_onnx_bytes(&bytes).expect("the U-Net imports")
}

fn setup(
    mut commands: Commands,
    args: Res<Args>,
    assets: Res<AssetServer>,
    mut images: ResMut<Assets<Image>>,
    mut models: ResMut<Assets<Model>>,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<StandardMaterial>>,
) {
    // The 3D scene, on its own render layer, rendered into `scene`.
    let scene = images.add(texture(SCENE_SIZE, SCENE_SIZE, TextureFormat::Rgba8UnormSrgb));
    let garments: Vec<Handle<Image>> = IMAGES.iter().map(|name| images.add(garment(name))).collect();
    let material = materials.add(StandardMaterial { base_color_texture: Some(garments[9].clone()), unlit: true, ..default() });
    let layer = RenderLayers::layer(1);
    commands.spawn((Mesh3d(meshes.add(Rectangle::new(2.0, 2.0))), MeshMaterial3d(material.clone()), Transform::default(), Card { garments, material }, layer.clone()));
    commands.spawn((
        Camera3d::default(),
        // No tone mapping: its default needs the LUTs of Bevy's `tonemapping_luts` feature (without
        // them it draws magenta), and the models should see the colours as drawn.
        bevy::core_pipeline::tonemapping::Tonemapping::None,
        Camera { order: -1, clear_color: Color::BLACK.into(), ..default() },
        RenderTarget::Image(scene.clone().into()),
        Transform::from_xyz(0.0, 0.0, 2.6).looking_at(Vec3::ZERO, Vec3::Y),
        layer,
    ));

    // The classifier on the scene, every 5 frames.
    let classifier: Handle<Model> = assets.load("models/fashion_mobilenetv2.onnx");
    let grey_28 = ImagePreprocessing::resized(28, 28, ResizeFilter::Area, ChannelOrder::Gray);
    commands.spawn((ContinuousInference::new(classifier, scene.clone(), grey_28).every(5).in_flight(1).top_k(3), Name::new("classifier")));

    // The U-Net on the scene, its two classes written into `mask` as a colour map.
    let mask = images.add(texture(64, 64, TextureFormat::Rgba8UnormSrgb));
    let palette = vec![[0.05, 0.05, 0.2, 1.0], [1.0, 0.6, 0.1, 1.0]];
    let output = OutputToImage::new(mask.clone(), OutputMapping::ClassColours { palette, layout: TensorLayout::Nchw });
    let rgb_64 = ImagePreprocessing::resized(64, 64, ResizeFilter::Bilinear, ChannelOrder::Rgb);
    commands.spawn((ContinuousInference::new(models.add(unet()), scene.clone(), rgb_64).every(5).with_output(output), Name::new("segmentation")));

    // The view: the scene and the map side by side.
    // The scene and the map on the left of the view, the overlay on the right.
    let side = 256.0;
    let left = -(VIEW.0 as f32) / 2.0 + 4.0;
    commands.spawn((Sprite { image: scene, custom_size: Some(Vec2::splat(side)), ..default() }, Transform::from_xyz(left + side / 2.0, 0.0, 0.0)));
    commands.spawn((Sprite { image: mask, custom_size: Some(Vec2::splat(side)), ..default() }, Transform::from_xyz(left + side * 1.5 + 8.0, 0.0, 0.0)));
    if args.window {
        commands.spawn((Camera2d, PrimaryEguiContext));
    } else {
        let view = images.add(texture(VIEW.0, VIEW.1, TextureFormat::Rgba8UnormSrgb));
        commands.spawn((Camera2d, PrimaryEguiContext, RenderTarget::Image(view.clone().into())));
        commands.insert_resource(View(view));
    }
}

/// Turns the card a little and shows the next garment every few seconds.
fn turn_and_swap_card(time: Res<Time>, mut cards: Query<(&Card, &mut Transform)>, mut materials: ResMut<Assets<StandardMaterial>>) {
    let t = time.elapsed_secs();
    for (card, mut transform) in &mut cards {
        transform.rotation = Quat::from_rotation_y(0.35 * (t * 1.3).sin()) * Quat::from_rotation_z(0.1 * (t * 0.7).cos());
        let shown = ((t / SECONDS_PER_GARMENT) as usize + 9) % card.garments.len();
        if let Some(mut material) = materials.get_mut(&card.material)
            && material.base_color_texture.as_ref() != Some(&card.garments[shown]) {
                material.base_color_texture = Some(card.garments[shown].clone());
            }
    }
}

/// Prints the classifier's top-3 when its best class changes.
fn print_top_3(ready: On<PredictionReady>, names: Query<&Name>, mut last: Local<Option<usize>>) {
    if names.get(ready.entity).map(Name::as_str) != Ok("classifier") {
        return;
    }
    let top = &ready.prediction.top_k;
    if top.first().map(|t| t.0) == *last {
        return;
    }
    *last = top.first().map(|t| t.0);
    let line: Vec<String> = top.iter().map(|(class, p)| format!("{} {:.1}%", CLASSES[*class], p * 100.0)).collect();
    println!("{}", line.join(", "));
}

/// Stops after `--frames` frames, first saving the view when asked.
fn finish(mut commands: Commands, args: Res<Args>, view: Option<Res<View>>, mut frames: Local<u32>, mut exit: MessageWriter<AppExit>) {
    *frames += 1;
    if args.frames == 0 || *frames != args.frames {
        return;
    }
    match (&args.screenshot, view) {
        (Some(path), Some(view)) => {
            let path = path.clone();
            commands.spawn(Readback::texture(view.0.clone())).observe(move |done: On<ReadbackComplete>, mut exit: MessageWriter<AppExit>| {
                let (width, height) = (VIEW.0 as usize, VIEW.1 as usize);
                let row = (width * 4).next_multiple_of(256);
                let pixels: Vec<u8> = done.data.chunks(row).take(height).flat_map(|r| r[..width * 4].to_vec()).collect();
                image::RgbaImage::from_raw(width as u32, height as u32, pixels).expect("a whole view").save(&path).expect("the screenshot is written");
                println!("saved {}", path.display());
                exit.write(AppExit::Success);
            });
        }
        _ => {
            exit.write(AppExit::Success);
        }
    }
}
