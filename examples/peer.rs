//! One player of a split-inference room, headless.
//!
//! An asker classifies a folder of images (default: the shipped test images), first whole
//! on its own GPU (the single-peer reference), then split across the room, and leaves. Servers
//! (dedicated servers) run the stages they are sent until no one asks any more (or
//! `--lifetime-s` passes). A player does both: it classifies its images split across the room
//! while it runs the other players' stages, and stays, serving, until it has had nothing to
//! run for 3 s.
//!
//! Standard output is JSON lines, one event per line, for scripts and tests: `{"event":
//! "peer_trusted" | "peer_lost" | "handshake_failed" | "rejected" | "reconnected" | "problem" |
//! "request" | "summary" | "serving_summary" (called "worker_summary" before), ...}` (a player prints both summaries: its requests'
//! when they are done, what it served and the last value of each shared tensor it received
//! when it leaves). A readable summary goes to standard
//! error.
//!
//! ```text
//! cargo run --example signaling &
//! cargo run --example peer -- --role server --room ws://127.0.0.1:3536/demo --key secret &
//! cargo run --example peer -- --role server --room ws://127.0.0.1:3536/demo --key secret &
//! cargo run --example peer -- --role asker --room ws://127.0.0.1:3536/demo --key secret
//! ```
//! WebRTC skips loopback candidates, so run the peers where another interface exists (see
//! `tools/p2p_demo.sh`, which makes a network namespace for them).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy_p2p_inference::model::plan::PartitionPlan;
use bevy_p2p_inference::tensor::TransferDtype;
use bevy_p2p_inference::net::session::PeerSession;
use bevy_p2p_inference::net::{IceServer, Permissions};
use bevy_p2p_inference::prelude::*;
use bevy_p2p_inference::session::{BudgetGate, Distributed, Placement, ServeBudget};
use bevy_p2p_inference::session::pipeline::Routing;
use bevy_p2p_inference::schedule::stage_record::Executor;
use bevy_p2p_inference::{headless_plugins, update_until_prediction_with, GpuTransfers, ImageInferenceRequest, ImagePreprocessing, LocalOnly, PeerRole, PeerSessionEvent, PeerSessionPlugin, CollectiveFailed, CollectiveRequest, CollectiveResult, PublishedTensor, RemoteTensor, RemoteTensorChanged, SessionProblem, SharedTensors};
use bevy_p2p_inference::net::{CollectiveOp, Direction, Reduction, SentTensor, SharedKey};
use bevy_p2p_inference::net::{OwnerKey, OwnerPublicKey, RoomAuthority, RoomKey, RoomOwner, SessionEvent};
use bevy_p2p_inference::secret::SecretKey;
use clap::{Parser, ValueEnum};
#[path = "support/image_texture.rs"]
mod image_texture;
use image_texture::image_texture;
use serde_json::json;

/// This process's role.
#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Role {
    /// Asks (and serves while it does), then leaves (called `coordinator` before).
    #[value(alias = "coordinator")]
    Asker,
    /// Only serves: a dedicated server (called `worker` before).
    #[value(alias = "worker")]
    Server,
    /// Asks and serves, and stays until it has had nothing to serve for a while.
    Player,
}

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "A player of a split-inference room")]
struct Args {
    /// Asker, server or player.
    #[arg(long, value_enum)]
    role: Role,
    /// Matchbox room URL.
    #[arg(long)]
    room: String,
    /// The room key: 64 hex digits (`cargo run --example room_key` makes one), or a
    /// passphrase, stretched with Argon2id for this room.
    #[arg(long)]
    key: String,
    /// The model, relative to assets/.
    #[arg(long, default_value = "models/fashion_mobilenetv2.onnx")]
    model: String,
    /// The partition plan (RON), relative to assets/.
    #[arg(long, default_value = "plans/fashion_3_int8.plan.ron")]
    plan: String,
    /// Asker: folder of PNG images to classify.
    #[arg(long, default_value = "assets/images")]
    images: PathBuf,
    /// Asker: what each image is decoded and resized to, CxHxW (the model's input
    /// without its batch; channels 1 or 3): 3x224x224 for an ImageNet-shaped model.
    #[arg(long, default_value = "1x28x28", value_parser = parse_image_shape)]
    image_shape: ImageShape,
    /// Asker: send each image to the GPU as a texture, read there by an
    /// `ImageInferenceRequest` (stage 0 runs on this player's GPU, on the image, and its
    /// activation travels), instead of a tensor from the CPU; the references are image
    /// requests run whole here.
    #[arg(long, conflicts_with = "batch")]
    image_requests: bool,
    /// Asker: rounds over the images.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Asker: keep asking, over the images again and again, for this many seconds instead of
    /// --rounds (a soak); a progress line every minute.
    #[arg(long)]
    for_s: Option<f64>,
    /// Asker: classify the images as batches of this many rows (the images over and
    /// over) instead of one at a time; a batch may be split across the servers.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Asker: let a batch be split across the servers in slices of rows
    /// (`PeerSessionPlugin::batch_split`); without it a batch runs whole as a chain.
    #[arg(long)]
    batch_split: bool,
    /// Requests in flight (K).
    #[arg(long, default_value_t = 2)]
    k: usize,
    /// Asker: servers to wait for before starting (`--workers` before).
    #[arg(long, alias = "workers", default_value_t = 2)]
    servers: usize,
    /// Asker: also wait until this many other peers are connected, trusted or not (a
    /// room with guests that cannot serve stages). Defaults to the number of servers.
    #[arg(long)]
    room_size: Option<usize>,
    /// Give up (asker) or leave (server) after this many seconds.
    #[arg(long, default_value_t = 120)]
    lifetime_s: u64,
    /// Asker: seconds without an answer before a remote stage is run elsewhere (a browser
    /// server on a software WebGPU adapter needs several).
    #[arg(long, default_value_t = 2.0)]
    stage_timeout_s: f64,
    /// Sleep between frames, in microseconds (default: none for an asker, 200 for a
    /// server). Players that share a machine's cores with browser tabs leave them CPU time with
    /// a few milliseconds (`tools/web/room.mjs` passes 2000).
    #[arg(long)]
    frame_sleep_us: Option<u64>,
    /// Server: corrupt the first tensor frame it sends (fault injection for tests).
    #[arg(long)]
    tamper_once: bool,
    /// Server: return a wrong (shifted) output for every stage it runs (fault injection for
    /// tests: a lying peer).
    #[arg(long)]
    wrong_results: bool,
    /// Asker: run every remote hand-over of one split request in N (drawn at random) again on
    /// its own GPU and compare (0: never).
    #[arg(long, default_value_t = 0)]
    spot_check_every: u32,
    /// Own the room: the owner key's secret, 64 hex digits (`room_key --owner` makes a pair).
    /// This player grants the others' tokens; without `--owner-key` or `--owner` the room is
    /// open.
    #[arg(long, conflicts_with = "owner")]
    owner_key: Option<String>,
    /// Join a room owned by this public key (64 hex digits): peers are trusted only with the
    /// owner's tokens.
    #[arg(long)]
    owner: Option<String>,
    /// Asker that owns the room: revoke a server once this many requests have finished
    /// (its stages then run elsewhere).
    #[arg(long)]
    revoke_after: Option<usize>,
    /// Share each prediction's output with the room as the shared tensor "prediction" (f32),
    /// the latest replacing the one before.
    #[arg(long)]
    share_predictions: bool,
    /// Player: once its requests are done, average its last prediction's class probabilities
    /// with every other player's (an all-reduce, the collective "ensemble") and print the
    /// result.
    #[arg(long)]
    ensemble: bool,
    /// Once its first request is done, send every other player a value of that player's own
    /// shared tensor "prediction" as if this one owned it (a test aid: it must be refused).
    #[arg(long)]
    forge_shared_once: bool,
    /// Make this player slow on purpose (a test aid): every stage it runs for a peer takes this
    /// many times as long.
    #[arg(long)]
    slowdown: Option<u32>,
    /// GPU time per frame this player gives the others' stages (default: no budget, each
    /// starts as it arrives); the rest wait for later frames.
    #[arg(long)]
    serve_budget_ms: Option<f64>,
    /// The frame `--serve-budget-ms` is per, in milliseconds (a 60 fps frame by default).
    #[arg(long, default_value_t = 1000.0 / 60.0)]
    budget_frame_ms: f64,
    /// How a player spreads its remote stages over the servers: by their measured speed, or in
    /// equal turns (for comparison).
    #[arg(long, value_enum, default_value = "measured")]
    placement: PlacementArg,
    /// How a request's remote stages go over the servers: a server each, as a chain, or all
    /// on one server.
    #[arg(long, value_enum, default_value = "per-stage")]
    routing: RoutingArg,
    /// Never copy a late hand-over to another server (`PeerSessionPlugin::work_stealing` off,
    /// for comparison): a straggler is re-run only at the stage timeout.
    #[arg(long)]
    no_work_stealing: bool,
    /// Seconds a collective may wait for the other players' parts.
    #[arg(long, default_value_t = 60)]
    collective_timeout_s: u64,
    /// A TURN relay's URL (`turn:host:3478?transport=udp`), for players whose direct paths are
    /// blocked; its credentials are made from `--turn-secret` (coturn's use-auth-secret).
    #[arg(long, requires = "turn_secret")]
    turn: Option<String>,
    /// The TURN relay's shared secret (its `static-auth-secret`).
    #[arg(long)]
    turn_secret: Option<String>,
    /// A certificate (PEM) to trust for a `wss://` room besides the web's public roots: the
    /// signaling server's own, or the authority that signed it.
    #[arg(long)]
    signaling_root: Option<std::path::PathBuf>,
}

/// [`Placement`] on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum PlacementArg {
    Measured,
    Equal,
}

/// [`Routing`] on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RoutingArg {
    PerStage,
    PerRequest,
}

/// The room's authority as the arguments say.
fn authority(args: &Args) -> Result<RoomAuthority, String> {
    if let Some(secret) = &args.owner_key {
        let seed = SecretKey::from_hex(secret).map_err(|e| format!("--owner-key: {e}"))?;
        return Ok(RoomAuthority::Owner(RoomOwner::new(OwnerKey::from_secret(&seed))));
    }
    if let Some(public) = &args.owner {
        return Ok(RoomAuthority::Member(OwnerPublicKey::from_hex(public).map_err(|e| format!("--owner: {e}"))?));
    }
    Ok(RoomAuthority::Open)
}

fn build_app(args: &Args) -> Result<App, String> {
    let key = RoomKey::from_text(&args.key, &args.room).map_err(|e| format!("--key: {e}"))?;
    let mut app = App::new();
    app.add_plugins(headless_plugins().set(bevy::log::LogPlugin { level: bevy::log::Level::ERROR, ..default() }));
    app.add_plugins(P2pInferencePlugin::default());
    let role = match args.role {
        Role::Asker | Role::Player => PeerRole::Player,
        Role::Server => PeerRole::Server,
    };
    let mut session = PeerSessionPlugin::new(args.room.clone(), key, role, args.model.clone(), args.plan.clone());
    session.authority = authority(args)?;
    if let (Some(url), Some(secret)) = (&args.turn, &args.turn_secret) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        session.ice_servers = vec![IceServer::turn_rest([url.as_str()], secret.as_bytes(), "peer", Duration::from_secs(3_600), now)];
    }
    if let Some(path) = &args.signaling_root {
        use rustls_pki_types::pem::PemObject;
        let certificates = rustls_pki_types::CertificateDer::pem_file_iter(path).and_then(|certs| certs.collect::<Result<Vec<_>, _>>());
        session.signaling_roots = certificates.map_err(|e| format!("--signaling-root {}: {e}", path.display()))?.iter().map(|c| c.to_vec()).collect();
    }
    session.max_in_flight = args.k;
    session.stage_timeout = Duration::from_secs_f64(args.stage_timeout_s);
    session.expected_peers = if args.role == Role::Server { 0 } else { args.servers };
    session.spot_check_every = args.spot_check_every;
    session.batch_split = args.batch_split;
    if args.no_work_stealing {
        session.work_stealing = None;
    }
    session.collective_timeout = Duration::from_secs(args.collective_timeout_s);
    session.placement = match args.placement {
        PlacementArg::Measured => Placement::Measured,
        PlacementArg::Equal => Placement::Equal,
    };
    session.routing = match args.routing {
        RoutingArg::PerStage => Routing::PerStage,
        RoutingArg::PerRequest => Routing::PerRequest,
    };
    session.serve_budget = args.serve_budget_ms.map(|ms| ServeBudget {
        gpu_per_frame: Duration::from_secs_f64(ms / 1e3),
        frame: Duration::from_secs_f64(args.budget_frame_ms / 1e3),
        ..ServeBudget::per_frame_at_60_fps(Duration::ZERO)
    });
    app.add_plugins(session).init_resource::<SeenShared>().add_observer(record_shared);
    inject_faults(&app, args)?;
    app.finish();
    app.cleanup();
    Ok(app)
}

/// Breaks things on purpose, for this crate's tests and demos (`--wrong-results`, `--slowdown`):
/// needs the crate's `fault-injection` feature, which this repository's own builds have (its
/// dev-dependency on itself turns it on) and a build from the published package does not.
#[cfg(feature = "fault-injection")]
fn inject_faults(app: &App, args: &Args) -> Result<(), String> {
    let faults = app.world().resource::<bevy_p2p_inference::testing::FaultInjection>();
    if args.wrong_results {
        faults.serve_wrong_results();
    }
    if let Some(factor) = args.slowdown {
        faults.slow_served_stages(factor);
    }
    Ok(())
}

#[cfg(not(feature = "fault-injection"))]
fn inject_faults(_: &App, args: &Args) -> Result<(), String> {
    match args.wrong_results || args.slowdown.is_some() || args.tamper_once {
        true => Err("--wrong-results, --slowdown and --tamper-once need the fault-injection feature".into()),
        false => Ok(()),
    }
}

/// The latest value of every other player's shared tensor that arrived, by (owner, name):
/// kept after its owner leaves (when the session despawns its entity), for the summary.
#[derive(Resource, Default)]
struct SeenShared(std::collections::BTreeMap<(String, String), (u64, Vec<f32>)>);

fn record_shared(changed: On<RemoteTensorChanged>, tensors: Query<&RemoteTensor>, mut seen: ResMut<SeenShared>) {
    if let Ok(value) = tensors.get(changed.entity) {
        seen.0.insert((value.key.owner.to_string(), value.key.name.clone()), (value.version, value.tensor.data().to_vec()));
    }
}

/// One session event as a JSON line (`None` for received tensors, which are not reported).
fn session_event_json(event: &SessionEvent) -> Option<serde_json::Value> {
    Some(match event {
        SessionEvent::PeerTrusted { peer, capabilities, permissions } => {
            json!({"event": "peer_trusted", "peer": peer.to_string(), "adapter": capabilities.adapter, "permissions": permissions.bits()})
        }
        SessionEvent::PeerLost { peer, reason } => json!({"event": "peer_lost", "peer": peer.to_string(), "reason": format!("{reason:?}")}),
        SessionEvent::HandshakeFailed { peer, reason } => {
            json!({"event": "handshake_failed", "peer": peer.to_string(), "reason": format!("{reason:?}")})
        }
        SessionEvent::Rejected { peer, reason, lost_output } => {
            json!({"event": "rejected", "peer": peer.to_string(), "reason": reason.code(), "detail": reason.to_string(), "lost_output": lost_output})
        }
        SessionEvent::Reconnected { attempt } => json!({"event": "reconnected", "attempt": attempt}),
        SessionEvent::StageInputDropped { peer, request, stage } => {
            json!({"event": "stage_input_dropped", "peer": peer.to_string(), "request": request, "stage": stage})
        }
        SessionEvent::SendFailed { tensor, error } => {
            json!({"event": "send_failed", "peer": tensor.peer.to_string(), "request": tensor.request, "stage": tensor.stage, "detail": error.to_string()})
        }
        SessionEvent::Tensor(_) | SessionEvent::TensorSent { .. } => return None,
    })
}

/// Prints session events and problems as they happen, as JSON lines. Returns the problem that
/// keeps the session from starting, if one was reported.
fn report_events(app: &mut App) -> Option<SessionProblem> {
    let world = app.world_mut();
    let events: Vec<PeerSessionEvent> = world.resource_mut::<Messages<PeerSessionEvent>>().drain().collect();
    for PeerSessionEvent(event) in events {
        if let Some(line) = session_event_json(&event) {
            println!("{line}");
        }
    }
    let problems: Vec<SessionProblem> = world.resource_mut::<Messages<SessionProblem>>().drain().collect();
    let mut fatal = None;
    for problem in problems {
        let line = match &problem {
            SessionProblem::ResultMismatch { request, peers } => {
                json!({"event": "result_mismatch", "request": request, "peers": peers.iter().map(|p| p.to_string()).collect::<Vec<_>>()})
            }
            _ => json!({"event": "problem", "detail": problem.to_string()}),
        };
        println!("{line}");
        if matches!(problem, SessionProblem::ModelLoad(_) | SessionProblem::PlanLoad(_) | SessionProblem::PlanDoesNotFit(_)) {
            fatal = Some(problem);
        }
    }
    fatal
}

/// [`report_events`] for [`update_until_prediction_with`], which cannot stop on a problem.
fn report_events_only(app: &mut App) {
    report_events(app);
}

/// How long a server stays once no player that asks is there: long enough for a link that
/// went silent to be handshaken again (a 3 s wait once ended a soak's servers after a stall).
const ALONE_FOR: Duration = Duration::from_secs(10);

/// The frames a server keeps for its frame-time figures (the last ones).
const MAX_FRAMES: usize = 200_000;

/// How often a soaking asker prints its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

/// The pause between frames this player takes.
fn frame_sleep(args: &Args) -> Duration {
    let default_us = if args.role == Role::Asker { 0 } else { 200 };
    Duration::from_micros(args.frame_sleep_us.unwrap_or(default_us))
}

/// The shape images are decoded to: channels, height, width.
#[derive(Clone, Copy, Debug)]
struct ImageShape {
    channels: usize,
    height: usize,
    width: usize,
}

fn parse_image_shape(text: &str) -> Result<ImageShape, String> {
    let dims: Vec<usize> = text.split('x').map(|d| d.parse::<usize>().map_err(|e| format!("'{d}' in '{text}': {e}"))).collect::<Result<_, _>>()?;
    match dims[..] {
        [channels @ (1 | 3), height, width] if height > 0 && width > 0 => Ok(ImageShape { channels, height, width }),
        _ => Err(format!("'{text}' is not CxHxW with 1 or 3 channels")),
    }
}

/// What a request classifies: a tensor from the CPU, or an image texture on the GPU.
#[derive(Clone)]
enum RequestInput {
    Tensor(Tensor),
    Texture(Handle<Image>, ImagePreprocessing),
}

impl RequestInput {
    /// The image `tensor` (`[1, C, H, W]`, values in `[0, 1]`) as `--image-requests` says: a
    /// texture of its pixels, preprocessed on the GPU into the same tensor.
    fn new(tensor: Tensor, as_texture: bool, textures: &mut Assets<Image>) -> Result<Self, String> {
        if !as_texture {
            return Ok(RequestInput::Tensor(tensor));
        }
        let Some((texture, preprocessing)) = image_texture(&tensor) else { return Err(format!("--image-requests takes one image per request, not {:?}", tensor.shape())) };
        Ok(RequestInput::Texture(textures.add(texture), preprocessing))
    }

    /// Spawns a request of `model` on this input, pinned to this player with `local_only`.
    fn spawn(&self, world: &mut World, model: &Handle<Model>, local_only: bool) -> Entity {
        let mut request = match self {
            RequestInput::Tensor(tensor) => world.spawn(InferenceRequest::new(model.clone(), tensor.clone())),
            RequestInput::Texture(image, preprocessing) => world.spawn(ImageInferenceRequest::new(model.clone(), image.clone(), preprocessing.clone())),
        };
        if local_only {
            request.insert(LocalOnly);
        }
        request.id()
    }
}

fn load_images(dir: &Path, shape: ImageShape) -> Result<Vec<(String, Tensor)>, String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(format!("no PNG images in {}", dir.display()));
    }
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            let tensor = Tensor::from_image_bytes(&bytes, shape.channels, shape.height, shape.width).map_err(|e| format!("{}: {e}", p.display()))?;
            Ok((p.file_stem().unwrap_or_default().to_string_lossy().into_owned(), tensor))
        })
        .collect()
}

/// `images` as one request of `batch` rows (the images over and over), or as they are for a
/// batch of one.
fn batched(images: Vec<(String, Tensor)>, batch: usize) -> Result<Vec<(String, Tensor)>, String> {
    if batch <= 1 {
        return Ok(images);
    }
    let rows: Vec<Tensor> = images.iter().cycle().take(batch).map(|(_, image)| image.clone()).collect();
    let stacked = Tensor::stack_rows(&rows).map_err(|e| format!("--batch: {e}"))?;
    Ok(vec![(format!("batch{batch}"), stacked)])
}

/// One stage's times over the asker's requests, in milliseconds.
#[derive(Default)]
struct StageSamples {
    span: Vec<f64>,
    transfers: Vec<f64>,
    network: Vec<f64>,
    queue: Vec<f64>,
    gpu: Vec<f64>,
    returned: Vec<f64>,
}

impl StageSamples {
    /// Adds `record`'s times; a chain's span and transfers only at its first stage.
    fn push(&mut self, record: &bevy_p2p_inference::schedule::stage_record::StageRecord, first_of_span: bool) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        if first_of_span {
            self.span.push(ms(record.duration));
            self.transfers.extend(record.transfers.map(ms));
        }
        self.network.extend(record.hop.network.map(ms));
        self.queue.extend(record.hop.queue().map(ms));
        self.gpu.extend(record.hop.gpu.map(ms));
        self.returned.extend(record.returned.map(ms));
    }

    /// Each list with what it measures.
    fn lists(&mut self) -> [(&'static str, &mut Vec<f64>); 6] {
        [
            ("hand-over to output back (a chain: its whole span)", &mut self.span),
            ("of which transfers", &mut self.transfers),
            ("input's network hop", &mut self.network),
            ("queue", &mut self.queue),
            ("GPU", &mut self.gpu),
            ("output's network hop back", &mut self.returned),
        ]
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Classifies the images, single-peer and then split across the room, and prints the summary;
/// returns the app, still in the room, and the last prediction's output.
fn run_asker(args: &Args) -> Result<(App, Option<Tensor>), String> {
    let mut app = build_app(args)?;
    let mut textures = app.world_mut().resource_mut::<Assets<Image>>();
    let images: Vec<(String, RequestInput)> = batched(load_images(&args.images, args.image_shape)?, args.batch)?
        .into_iter()
        .map(|(name, tensor)| Ok((name, RequestInput::new(tensor, args.image_requests, &mut textures)?)))
        .collect::<Result<_, String>>()?;
    let deadline = Instant::now() + Duration::from_secs(args.lifetime_s);
    let joining = Instant::now();
    // Wait for the servers.
    loop {
        app.update();
        std::thread::sleep(frame_sleep(args));
        if let Some(problem) = report_events(&mut app) {
            return Err(problem.to_string());
        }
        let session = app.world().get_resource::<PeerSession>();
        let trusted = session.map_or(0, |s| s.links().trusted_with(Permissions::RUN_STAGES).len());
        let connected = session.map_or(0, |s| s.links().links().count());
        let room_size = args.room_size.unwrap_or(args.servers);
        if trusted >= args.servers && connected >= room_size {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("only {trusted} of {} servers and {connected} of {room_size} peers joined in time", args.servers));
        }
    }
    // The room formed (for this player): every server it waits for trusted.
    let room_formed_ms = joining.elapsed().as_secs_f64() * 1e3;
    eprintln!("placement: {:?}", app.world().resource::<Distributed>().assignment().shares());
    // The session is running, so the plan has loaded.
    let plan: Handle<PartitionPlan> = app.world().resource::<AssetServer>().load(args.plan.clone());
    let all_f32 = app.world().resource::<Assets<PartitionPlan>>().get(&plan).is_some_and(|p| p.cuts.iter().all(|d| *d == TransferDtype::F32));
    let model: Handle<Model> = app.world().resource::<AssetServer>().load(args.model.clone());
    // Single-peer references first (whole model on this GPU), one at a time so that no frame
    // carries much GPU work (on a software rasterizer it runs on the frame's CPU time).
    let mut reference_outputs = Vec::new();
    for (_, input) in &images {
        let entity = input.spawn(app.world_mut(), &model, true);
        // Report session events meanwhile too: peers keep talking while references run.
        let pause = frame_sleep(args);
        let (prediction, _) = update_until_prediction_with(&mut app, entity, Duration::from_secs(60), |app| {
            report_events_only(app);
            std::thread::sleep(pause);
        })
            .map_err(|e| format!("single-peer reference: {e}"))?;
        reference_outputs.push(prediction);
    }
    // Requests are spawned a few at a time (the session keeps K of them in flight) and
    // despawned once read, so that a long run holds no more of them than a short one.
    let mut queue = (0..args.rounds).flat_map(|round| images.iter().enumerate().map(move |(i, (name, _))| (format!("{name}#{round}"), i)));
    let window = (args.k * 2).max(4);
    let soak_until = args.for_s.map(|s| Instant::now() + Duration::from_secs_f64(s));
    let mut in_flight: Vec<(String, Entity, usize)> = Vec::new();
    let mut asked = 0usize;
    let started = Instant::now();
    let transfers_before = app.world().resource::<GpuTransfers>().totals();
    let mut latencies = Vec::new();
    let (mut matches, mut lost, mut served_by_others, mut finished) = (0, 0, 0, 0usize);
    // Per stage: hand-over times (a chain once, at its first stage), transfers, and runs on peers.
    let mut samples: Vec<StageSamples> = Vec::new();
    let mut revoke_after = args.revoke_after;
    let mut forge = args.forge_shared_once;
    let mut published = None;
    let mut last_output = None;
    let mut published_entity: Option<Entity> = None;
    let mut next_progress = Instant::now() + PROGRESS_EVERY;
    while Instant::now() < deadline {
        let soaking = soak_until.is_some_and(|until| Instant::now() < until);
        while in_flight.len() < window {
            let next = match soaking {
                true => Some((format!("{}#{}", images[asked % images.len()].0, asked / images.len()), asked % images.len())),
                false if soak_until.is_some() => None,
                false => queue.next(),
            };
            let Some((name, image)) = next else { break };
            let entity = images[image].1.spawn(app.world_mut(), &model, false);
            in_flight.push((name, entity, image));
            asked += 1;
        }
        if in_flight.is_empty() {
            break;
        }
        if Instant::now() >= next_progress {
            next_progress += PROGRESS_EVERY;
            println!("{}", json!({"event": "progress", "seconds": started.elapsed().as_secs(), "asked": asked, "finished": finished, "matches_single_peer": matches, "lost": lost}));
        }
        app.update();
        std::thread::sleep(frame_sleep(args));
        report_events_only(&mut app);
        if revoke_after.is_some_and(|n| finished >= n) {
            revoke_after = None;
            revoke_a_server(&mut app)?;
        }
        if forge && finished > 0 {
            forge = false;
            forge_shared_value(&mut app)?;
        }
        let mut index = 0;
        while index < in_flight.len() {
            let (name, split, image) = (&in_flight[index].0, in_flight[index].1, in_flight[index].2);
            let world = app.world();
            if let Some(failed) = world.get::<InferenceFailed>(split) {
                lost += 1;
                println!("{}", json!({"event": "request_failed", "name": name, "error": failed.error.to_string()}));
                app.world_mut().despawn(split);
                in_flight.swap_remove(index);
                continue;
            }
            let Some(split) = world.get::<Prediction>(split) else {
                index += 1;
                continue;
            };
            finished += 1;
            let same = split.matches(&reference_outputs[image], all_f32);
            let reference = &reference_outputs[image].output;
            // The largest difference from the single-peer output, relative to its largest value:
            // a split batch runs some kernels at another batch size, which may sum in another order.
            let scale = reference.data().iter().fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
            let max_relative_error = (split.output.shape() == reference.shape())
                .then(|| split.output.data().iter().zip(reference.data()).fold(0.0f32, |m, (a, b)| m.max((a - b).abs())) / scale);
            let output = split.output.clone();
            last_output = Some(output.clone());
            served_by_others += split.stages.iter().filter(|s| s.executor != Executor::Local).count();
            matches += same as usize;
            let ms = split.latency.as_secs_f64() * 1e3;
            latencies.push(ms);
            let stages: Vec<serde_json::Value> = split
                .stages
                .iter()
                .map(|s| {
                    let executor = match s.executor {
                        Executor::Local => "local".to_string(),
                        Executor::Peer(peer) => peer.to_string(),
                    };
                    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
                    json!({"stage": s.stage, "remote": s.executor != Executor::Local, "executor": executor, "ms": ms(s.duration), "span": s.span,
                           "transfers_ms": s.transfers.map(ms), "network_ms": s.hop.network.map(ms), "run_ms": s.hop.run.map(ms),
                           "queue_ms": s.hop.queue().map(ms), "gpu_ms": s.hop.gpu.map(ms), "returned_ms": s.returned.map(ms)})
                })
                .collect();
            let mut span_start = 0;
            for (index, s) in split.stages.iter().enumerate() {
                if samples.len() <= s.stage {
                    samples.resize_with(s.stage + 1, StageSamples::default);
                }
                // A chain's records share its span: count it once, at its first stage.
                let first_of_span = index == span_start;
                if first_of_span {
                    span_start += s.span.max(1);
                }
                samples[s.stage].push(s, first_of_span);
            }
            let (top1, probability) = split.top_k[0];
            println!(
                "{}",
                json!({"event": "request", "name": name, "latency_ms": ms, "top1": top1, "probability": probability,
                       "matches_single_peer": same, "max_relative_error": max_relative_error, "reruns": split.reruns, "stages": stages})
            );
            if args.share_predictions {
                let shared = PublishedTensor { name: "prediction".into(), tensor: output, dtype: TransferDtype::F32 };
                published = Some(shared.tensor.data().to_vec());
                match published_entity {
                    Some(entity) => {
                        app.world_mut().entity_mut(entity).insert(shared);
                    }
                    None => published_entity = Some(app.world_mut().spawn(shared).id()),
                }
            }
            let (_, entity, _) = in_flight.swap_remove(index);
            app.world_mut().despawn(entity);
        }
    }
    // What was not finished in time: in flight, and (asked for by rounds) not yet spawned.
    lost += in_flight.len() + if soak_until.is_some() { 0 } else { queue.count() };
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let bytes_per_request = app.world().resource::<Distributed>().finished_traffic.bytes_per_request();
    let (median, p95) = if latencies.is_empty() { (0.0, 0.0) } else { (quantile(&latencies, 0.5), quantile(&latencies, 0.95)) };
    // What this GPU moved while the split requests ran (it serves nothing for the servers).
    let (now, before) = (app.world().resource::<GpuTransfers>().totals(), transfers_before);
    let transfers = json!({"tensor_uploads": now.tensor_uploads - before.tensor_uploads, "image_inputs": now.image_inputs - before.image_inputs, "readbacks": now.readbacks - before.readbacks});
    eprintln!("summary: {} requests in {elapsed:.2} s ({:.1} requests/s with K={})", latencies.len(), latencies.len() as f64 / elapsed, args.k);
    eprintln!("  latency median {median:.2} ms, p95 {p95:.2} ms");
    for (stage, samples) in samples.iter_mut().enumerate() {
        eprint!("  stage {stage}:");
        for (what, list) in samples.lists() {
            if !list.is_empty() {
                list.sort_by(f64::total_cmp);
                eprint!(" {what} median {:.3} ms, p95 {:.3} ms;", quantile(list, 0.5), quantile(list, 0.95));
            }
        }
        eprintln!();
    }
    eprintln!("  bytes per request: {bytes_per_request}");
    let distributed = app.world().resource::<Distributed>();
    let executor_name = |executor: Executor| match executor {
        Executor::Local => "local".to_string(),
        Executor::Peer(peer) => peer.to_string(),
    };
    let measured: Vec<serde_json::Value> = distributed
        .measured_speeds()
        .iter()
        .map(|m| json!({"executor": executor_name(m.executor), "gflops": m.flops_per_s / 1e9, "share": m.share, "samples": m.samples}))
        .collect();
    let placed: Vec<serde_json::Value> = distributed.assignment().shares().iter().map(|(peer, share)| json!({"peer": peer.to_string(), "share": share})).collect();
    for m in distributed.measured_speeds() {
        eprintln!("  {}: measured {:.2} GFLOP/s over {} stage runs, {:.1}% of the stage work", executor_name(m.executor), m.flops_per_s / 1e9, m.samples, m.share * 100.0);
    }
    println!(
        "{}",
        json!({"event": "summary", "id": app.world().get_resource::<PeerSession>().and_then(PeerSession::id).map(|id| id.to_string()),
               "published": published, "requests": finished + lost, "matches_single_peer": matches, "lost": lost,
               "served_by_others": served_by_others, "median_ms": median, "p95_ms": p95, "bytes_per_request": bytes_per_request,
               "requests_per_s": latencies.len() as f64 / elapsed, "measured": measured, "placed": placed, "replans": distributed.replans,
               "stolen": {"copied": distributed.stolen.copied, "won": distributed.stolen.won}, "transfers": transfers,
               "room_formed_ms": room_formed_ms, "links": links_cost(&app), "latencies_ms": latencies})
    );
    Ok((app, last_output))
}

/// What this player's links cost it so far, over all of them: how many, and the bytes sent and
/// received (tensors, heartbeats, handshakes and all).
fn links_cost(app: &App) -> serde_json::Value {
    let Some(session) = app.world().get_resource::<PeerSession>() else { return json!(null) };
    let links = session.links();
    let (count, bytes_in, bytes_out) = links.links().fold((0, 0, 0), |(n, i, o), (_, link)| (n + 1, i + link.bytes_in, o + link.bytes_out));
    json!({"count": count, "bytes_in": bytes_in, "bytes_out": bytes_out})
}

/// Sends every trusted peer a value of its own shared tensor "prediction", as if this player
/// owned it (a test aid: each must refuse it), and reports it.
fn forge_shared_value(app: &mut App) -> Result<(), String> {
    let mut session = app.world_mut().resource_mut::<PeerSession>();
    let victims: Vec<_> = session.links().trusted_with(Permissions::NONE).iter().map(|(id, _)| *id).collect();
    for &victim in &victims {
        let forged = SentTensor {
            peer: victim,
            request: u64::MAX,
            stage: 0,
            direction: Direction::Shared,
            onward: None,
            trace: Vec::new(),
            shared: Some(SharedKey { owner: victim, name: "prediction".into() }),
            collective: None,
        };
        session.send_tensor(forged, Tensor::zeros(vec![1, 10]), TransferDtype::F32).map_err(|e| format!("--forge-shared-once: {e}"))?;
    }
    println!("{}", json!({"event": "forged", "peers": victims.iter().map(|p| p.to_string()).collect::<Vec<_>>()}));
    Ok(())
}

/// Revokes the first trusted server (as the room's owner) and reports it.
fn revoke_a_server(app: &mut App) -> Result<(), String> {
    let mut session = app.world_mut().resource_mut::<PeerSession>();
    let server = session.links().trusted_with(Permissions::RUN_STAGES).first().map(|(id, _)| *id).ok_or("no server to revoke")?;
    session.revoke(server).map_err(|e| format!("--revoke-after: {e}"))?;
    println!("{}", json!({"event": "revoked", "peer": server.to_string()}));
    Ok(())
}

/// The ensemble: every player's last class probabilities averaged by an all-reduce; prints
/// `{"event": "ensemble", "members", "top1", "values"}` (or `"ensemble_failed"`).
fn ensemble(mut app: App, args: &Args, last: Option<Tensor>) -> Result<App, String> {
    let probabilities = last.ok_or("no prediction to ensemble")?.softmax_rows();
    let op = CollectiveOp::AllReduce(Reduction::Mean);
    let request = app.world_mut().spawn(CollectiveRequest { name: "ensemble".into(), op, input: Some(probabilities), dtype: TransferDtype::F32 }).id();
    let deadline = Instant::now() + Duration::from_secs(args.collective_timeout_s + 5);
    while Instant::now() < deadline {
        app.update();
        report_events_only(&mut app);
        std::thread::sleep(frame_sleep(args));
        let world = app.world();
        if let Some(result) = world.get::<CollectiveResult>(request) {
            let values = result.output.data();
            let top1 = (0..values.len()).max_by(|&a, &b| values[a].total_cmp(&values[b])).unwrap_or(0);
            println!("{}", json!({"event": "ensemble", "members": result.members.len(), "top1": top1, "values": values}));
            return Ok(app);
        }
        if let Some(failed) = world.get::<CollectiveFailed>(request) {
            println!("{}", json!({"event": "ensemble_failed", "error": failed.error.to_string()}));
            return Ok(app);
        }
    }
    println!("{}", json!({"event": "ensemble_failed", "error": "no result in time"}));
    Ok(app)
}

/// When a serving player leaves.
#[derive(Clone, Copy, PartialEq)]
enum Leave {
    /// Once no player that asks has been there for [`ALONE_FOR`] (a stalled one comes back).
    WhenNoOneAsks,
    /// Once it has had no stage to run for 3 s.
    WhenIdle,
}

/// Runs the stages the others send until `leave` says so (or `--lifetime-s` passes), then
/// prints what it served.
fn serve(mut app: App, args: &Args, leave: Leave) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(args.lifetime_s);
    #[cfg(feature = "fault-injection")]
    let mut tampered = !args.tamper_once;
    let mut saw_asker = false;
    let mut alone_since: Option<Instant> = None;
    let mut last_served = (0, Instant::now());
    let mut first_served: Option<Instant> = None;
    // Each frame's start and how long its update took, for the frame times while serving: the
    // last MAX_FRAMES of them, so that a server running for hours holds no more.
    let mut frames: std::collections::VecDeque<(Instant, f64)> = std::collections::VecDeque::new();
    while Instant::now() < deadline {
        let frame = Instant::now();
        app.update();
        if frames.len() == MAX_FRAMES {
            frames.pop_front();
        }
        frames.push_back((frame, frame.elapsed().as_secs_f64() * 1e3));
        if let Some(problem) = report_events(&mut app) {
            return Err(problem.to_string());
        }
        #[cfg(feature = "fault-injection")]
        if let Some(mut session) = app.world_mut().get_resource_mut::<PeerSession>().filter(|_| !tampered) {
            session.corrupt_next_tensor_frame();
            tampered = true;
        }
        if let Some(session) = app.world().get_resource::<PeerSession>() {
            let askers = session.links().trusted_with(Permissions::SUBMIT_REQUESTS).len();
            saw_asker |= askers > 0;
            if leave == Leave::WhenNoOneAsks && saw_asker && askers == 0 {
                if alone_since.get_or_insert_with(Instant::now).elapsed() > ALONE_FOR {
                    break;
                }
            } else {
                alone_since = None;
            }
        }
        let served = app.world().resource::<Distributed>().stages_served;
        if served != last_served.0 {
            last_served = (served, Instant::now());
            first_served.get_or_insert(last_served.1);
        }
        if leave == Leave::WhenIdle && last_served.1.elapsed() > Duration::from_secs(3) {
            break;
        }
        std::thread::sleep(frame_sleep(args));
    }
    let served = app.world().resource::<Distributed>().stages_served;
    let first_work_ms = match app.world().resource::<Distributed>().first_work {
        (Some(trusted), Some(served)) => Some(served.saturating_duration_since(trusted).as_secs_f64() * 1e3),
        _ => None,
    };
    let rejected = app.world().get_resource::<PeerSession>().map_or(0, |s| s.rejected_total());
    let shared_updates = app.world().resource::<SharedTensors>().updates_received;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut serving: Vec<f64> = frames.iter().filter(|(at, _)| first_served.is_some_and(|first| *at >= first && *at <= last_served.1)).map(|(_, ms)| *ms).collect();
    serving.sort_by(f64::total_cmp);
    let frame_ms = (!serving.is_empty()).then(|| json!({"frames": serving.len(), "p50": quantile(&serving, 0.5), "p99": quantile(&serving, 0.99), "max": serving[serving.len() - 1]}));
    let budget = app.world().get_resource::<BudgetGate>().map(|gate| {
        let r = gate.report();
        json!({"stages": r.stages, "gpu_ms": ms(r.gpu), "longest_ms": ms(r.longest), "span_ms": ms(r.span), "waited": r.waited, "handed_back": r.handed_back})
    });
    let shared: Vec<serde_json::Value> = app
        .world()
        .resource::<SeenShared>()
        .0
        .iter()
        .map(|((owner, name), (version, values))| json!({"owner": owner, "name": name, "version": version, "values": values}))
        .collect();
    println!(
        "{}",
        json!({"event": "serving_summary", "id": app.world().get_resource::<PeerSession>().and_then(PeerSession::id).map(|id| id.to_string()), "stages_served": served, "first_stage_after_trust_ms": first_work_ms, "rejected": rejected, "saw_asker": saw_asker,
               "shared_updates": shared_updates, "shared": shared, "serve_budget": budget, "frame_ms_while_serving": frame_ms})
    );
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
    let args = Args::parse();
    let result = match args.role {
        Role::Asker => run_asker(&args).map(drop),
        Role::Server => build_app(&args).and_then(|app| serve(app, &args, Leave::WhenNoOneAsks)),
        Role::Player => run_asker(&args)
            .and_then(|(app, last)| if args.ensemble { ensemble(app, &args, last) } else { Ok(app) })
            .and_then(|app| serve(app, &args, Leave::WhenIdle)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
