//! A windowed demo of the inspector overlay: classifies the shipped images in rotation and shows
//! the predictions, the peers and the stage timings (F3 toggles the overlay). With `--room` it
//! is a player of a small game: it joins the room, splits its requests by `--plan` across the
//! other players while it runs their stages, shares its latest prediction with them (the overlay
//! lists every player's), and every `--ensemble-every` predictions averages its class
//! probabilities with theirs (an all-reduce: every player logs the same ensemble). Start it
//! in several windows on one room: every member of a collective must run it.
//!
//! ```text
//! cargo run --release --features window --example overlay
//! cargo run --release --features window --example overlay -- --room ws://127.0.0.1:3536/demo --key KEY
//! ```

use std::time::Duration;

use bevy::prelude::*;
use bevy_p2p_inference::prelude::*;
use bevy_p2p_inference::net::{CollectiveOp, Reduction, RoomKey};
use bevy_p2p_inference::tensor::TransferDtype;
use bevy_p2p_inference::{CollectiveDone, CollectiveFailedEvent, CollectiveRequest, InferenceOverlayPlugin, PeerRole, PeerSessionPlugin, PublishedTensor};
use clap::Parser;

const CLASSES: [&str; 10] = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
const MODEL: &str = "models/fashion_mobilenetv2.onnx";

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "Classify the shipped images in rotation with the inspector overlay")]
struct Args {
    /// Join this matchbox room as a player.
    #[arg(long)]
    room: Option<String>,
    /// The room key.
    #[arg(long, default_value = "demo-room-key")]
    key: String,
    /// The partition plan used in a room, relative to assets/.
    #[arg(long, default_value = "plans/fashion_3_int8.plan.ron")]
    plan: String,
    /// Seconds between requests.
    #[arg(long, default_value_t = 0.5)]
    interval: f32,
    /// In a room: run the ensemble every this many predictions.
    #[arg(long, default_value_t = 10)]
    ensemble_every: usize,
}

/// In a room: the entity sharing this player's latest prediction, and the predictions since
/// the last ensemble.
#[derive(Resource)]
struct Sharing {
    prediction: Option<Entity>,
    since_ensemble: usize,
    ensemble_every: usize,
}

/// The shipped images as input tensors, and the rotation timer.
#[derive(Resource)]
struct Rotation {
    images: Vec<Tensor>,
    next: usize,
    timer: Timer,
    model: Handle<Model>,
}

fn main() -> AppExit {
    let args = Args::parse();
    let mut images = Vec::new();
    for entry in std::fs::read_dir("assets/images").expect("run from the repository root") {
        let path = entry.expect("readable folder").path();
        let bytes = std::fs::read(&path).expect("readable image");
        images.push(Tensor::from_image_bytes(&bytes, 1, 28, 28).expect("a PNG image"));
    }
    let mut app = App::new();
    app.add_plugins(DefaultPlugins)
        .add_plugins(P2pInferencePlugin::default())
        .add_plugins(InferenceOverlayPlugin { class_names: CLASSES.iter().map(|s| s.to_string()).collect(), ..default() })
        .insert_resource(Rotation { images, next: 0, timer: Timer::from_seconds(args.interval, TimerMode::Repeating), model: Handle::default() })
        .add_systems(Startup, setup)
        .add_systems(Update, request_next)
        .add_systems(Last, remove_finished);
    if let Some(room) = args.room {
        let key = match RoomKey::from_text(&args.key, &room) {
            Ok(key) => key,
            Err(error) => {
                eprintln!("--key: {error}");
                return AppExit::error();
            }
        };
        let mut session = PeerSessionPlugin::new(room, key, PeerRole::Player, MODEL, args.plan);
        session.stage_timeout = Duration::from_secs(2);
        app.add_plugins(session)
            .insert_resource(Sharing { prediction: None, since_ensemble: 0, ensemble_every: args.ensemble_every.max(1) })
            .add_systems(PostUpdate, share_predictions)
            .add_observer(|done: On<CollectiveDone>, mut commands: Commands| {
                let values = done.result.output.data();
                let top = (0..values.len()).max_by(|&a, &b| values[a].total_cmp(&values[b])).unwrap_or(0);
                info!("ensemble of {} players: {} ({:.3})", done.result.members.len(), CLASSES.get(top).unwrap_or(&"?"), values[top]);
                commands.entity(done.entity).despawn();
            })
            .add_observer(|failed: On<CollectiveFailedEvent>, mut commands: Commands| {
                warn!("ensemble failed: {}", failed.error);
                commands.entity(failed.entity).despawn();
            });
    }
    app.run()
}

fn setup(mut commands: Commands, assets: Res<AssetServer>, mut rotation: ResMut<Rotation>) {
    commands.spawn(Camera2d);
    rotation.model = assets.load(MODEL);
}

/// Spawns a request for the next image on every tick.
fn request_next(mut commands: Commands, time: Res<Time>, mut rotation: ResMut<Rotation>) {
    if rotation.timer.tick(time.delta()).just_finished() && !rotation.images.is_empty() {
        let input = rotation.images[rotation.next % rotation.images.len()].clone();
        rotation.next += 1;
        commands.spawn(InferenceRequest::new(rotation.model.clone(), input));
    }
}

/// Shares each new prediction's output as "prediction", and every `ensemble_every` predictions
/// asks the room for the ensemble of the players' class probabilities.
fn share_predictions(mut commands: Commands, mut sharing: ResMut<Sharing>, ready: Query<&Prediction, Added<Prediction>>) {
    for prediction in &ready {
        let shared = PublishedTensor { name: "prediction".into(), tensor: prediction.output.clone(), dtype: TransferDtype::F32 };
        match sharing.prediction {
            Some(entity) => {
                commands.entity(entity).insert(shared);
            }
            None => sharing.prediction = Some(commands.spawn(shared).id()),
        }
        sharing.since_ensemble += 1;
        if sharing.since_ensemble >= sharing.ensemble_every {
            sharing.since_ensemble = 0;
            let probabilities = prediction.output.softmax_rows();
            let op = CollectiveOp::AllReduce(Reduction::Mean);
            commands.spawn(CollectiveRequest { name: "ensemble".into(), op, input: Some(probabilities), dtype: TransferDtype::F32 });
        }
    }
}

/// Removes finished requests once the overlay's history has recorded them (`PostUpdate`).
/// Requests that have an outcome.
type Finished = Or<(With<Prediction>, With<InferenceFailed>)>;

fn remove_finished(mut commands: Commands, done: Query<Entity, Finished>) {
    for entity in &done {
        commands.entity(entity).despawn();
    }
}
