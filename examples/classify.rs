//! Classifies a Fashion-MNIST-style image with the shipped model and prints the top-3 classes
//! and the measured latency. Headless by default; `--window` (needs `--features window`) also
//! opens a window showing the result in its title.
//!
//! ```text
//! cargo run --release --example classify -- assets/images/ankle_boot.png
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bevy::prelude::*;
use bevy_p2p_inference::prelude::*;
use bevy_p2p_inference::{headless_plugins, update_until_prediction};
use clap::Parser;

/// Fashion-MNIST class names, in label order.
const CLASSES: [&str; 10] = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
];

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "Classify an image with the shipped Fashion-MNIST MobileNetV2")]
struct Args {
    /// A PNG image (converted to 28x28 grayscale).
    image: PathBuf,
    /// The model, relative to assets/.
    #[arg(long, default_value = "models/fashion_mobilenetv2.onnx")]
    model: String,
    /// Open a window (build with `--features window`).
    #[arg(long)]
    window: bool,
}

fn run(args: Args) -> Result<(), String> {
    let bytes = std::fs::read(&args.image).map_err(|e| format!("cannot read {}: {e}", args.image.display()))?;
    let input = Tensor::from_image_bytes(&bytes, 1, 28, 28).map_err(|e| format!("{}: {e}", args.image.display()))?;
    let mut app = App::new();
    if args.window {
        if !cfg!(feature = "window") {
            return Err("--window needs the `window` feature: cargo run --release --features window --example classify -- --window IMAGE".into());
        }
        app.add_plugins(DefaultPlugins.set(bevy::log::LogPlugin { level: bevy::log::Level::ERROR, ..default() }));
    } else {
        app.add_plugins(headless_plugins().set(bevy::log::LogPlugin { level: bevy::log::Level::ERROR, ..default() }));
    }
    app.add_plugins(P2pInferencePlugin::default());
    app.finish();
    app.cleanup();
    let model: Handle<Model> = app.world().resource::<AssetServer>().load(args.model.clone());
    let entity = app.world_mut().spawn(InferenceRequest::new(model.clone(), input.clone())).id();
    // The first request compiles pipelines and uploads weights; the second shows steady state.
    let (first, _) = update_until_prediction(&mut app, entity, Duration::from_secs(300)).map_err(|e| e.to_string())?;
    let again = app.world_mut().spawn(InferenceRequest::new(model, input)).id();
    let (prediction, frames) = update_until_prediction(&mut app, again, Duration::from_secs(300)).map_err(|e| e.to_string())?;
    println!("{}", args.image.display());
    for (class, probability) in &prediction.top_k {
        println!("  {:<12} {:6.2}%", CLASSES.get(*class).unwrap_or(&"?"), probability * 100.0);
    }
    println!(
        "latency: {:.2} ms ({} frames; first request incl. set-up {:.2} ms)",
        prediction.latency.as_secs_f64() * 1e3,
        frames,
        first.latency.as_secs_f64() * 1e3
    );
    if args.window {
        let (class, p) = prediction.top_k[0];
        let title = format!("{}: {:.1}% ({:.2} ms)", CLASSES[class], p * 100.0, prediction.latency.as_secs_f64() * 1e3);
        let mut windows = app.world_mut().query::<&mut Window>();
        for mut window in windows.iter_mut(app.world_mut()) {
            window.title = title.clone();
        }
        app.run();
    }
    Ok(())
}

fn main() -> ExitCode {
    // Without a desktop session, Mesa's Vulkan device-selection layer only looks for a Wayland
    // display and prints two "XDG_RUNTIME_DIR is invalid" errors: it is turned off there. Set
    // before any thread starts.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: the first thing main does, while this is the only thread.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
