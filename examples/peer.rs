//! One player of a split-inference room, headless.
//!
//! The coordinator classifies a folder of images (default: the shipped test images), first whole
//! on its own GPU (the single-peer reference), then split across the room, and prints per-request
//! latency, a summary, and as its last line a JSON object. Workers run the stages they are
//! sent until the coordinator leaves (or `--lifetime-s` passes) and then print what they did.
//!
//! ```text
//! cargo run --example signaling &
//! cargo run --example peer -- --role worker --room ws://127.0.0.1:3536/demo --key secret &
//! cargo run --example peer -- --role worker --room ws://127.0.0.1:3536/demo --key secret &
//! cargo run --example peer -- --role coordinator --room ws://127.0.0.1:3536/demo --key secret
//! ```
//! WebRTC skips loopback candidates, so run the peers where another interface exists (see
//! `tools/p2p_demo.sh`, which makes a network namespace for them).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy_p2p_inference::model::plan::{PartitionPlan, TransferDtype};
use bevy_p2p_inference::net::session::PeerSession;
use bevy_p2p_inference::net::Permissions;
use bevy_p2p_inference::prelude::*;
use bevy_p2p_inference::schedule::distributed::Distributed;
use bevy_p2p_inference::{headless_plugins, update_until_prediction_with, LocalOnly, PeerRole, PeerSessionEvent, PeerSessionPlugin, SessionProblem, SessionSettings};
use clap::{Parser, ValueEnum};

/// This process's role.
#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Role {
    Coordinator,
    Worker,
}

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "A player of a split-inference room")]
struct Args {
    /// Coordinator or worker.
    #[arg(long, value_enum)]
    role: Role,
    /// Matchbox room URL.
    #[arg(long)]
    room: String,
    /// The room key.
    #[arg(long)]
    key: String,
    /// The model, relative to assets/.
    #[arg(long, default_value = "models/fashion_mobilenetv2.onnx")]
    model: String,
    /// The partition plan (RON).
    #[arg(long, default_value = "assets/plans/fashion_3_int8.plan.ron")]
    plan: PathBuf,
    /// Coordinator: folder of PNG images to classify.
    #[arg(long, default_value = "assets/images")]
    images: PathBuf,
    /// Coordinator: rounds over the images.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Requests in flight (K).
    #[arg(long, default_value_t = 2)]
    k: usize,
    /// Coordinator: workers to wait for before starting.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Coordinator: also wait until this many other peers are connected, trusted or not (a
    /// room with guests that cannot serve stages). Defaults to the number of workers.
    #[arg(long)]
    room_size: Option<usize>,
    /// Give up (coordinator) or leave (worker) after this many seconds.
    #[arg(long, default_value_t = 120)]
    lifetime_s: u64,
    /// Worker: corrupt the first tensor frame it sends (fault injection for tests).
    #[arg(long)]
    tamper_once: bool,
}

fn build_app(args: &Args, plan: PartitionPlan) -> App {
    let mut app = App::new();
    app.add_plugins(headless_plugins().set(bevy::log::LogPlugin { level: bevy::log::Level::ERROR, ..default() }));
    app.add_plugins(P2pInferencePlugin::default());
    let role = match args.role {
        Role::Coordinator => PeerRole::Coordinator,
        Role::Worker => PeerRole::Worker,
    };
    let mut settings = SessionSettings::new(args.room.clone(), args.key.clone(), role, args.model.clone(), plan);
    settings.max_in_flight = args.k;
    settings.expected_peers = if args.role == Role::Coordinator { args.workers } else { 0 };
    app.add_plugins(PeerSessionPlugin { settings });
    app.finish();
    app.cleanup();
    app
}

/// Prints session events and problems as they happen (to stderr).
fn report_events(app: &mut App) {
    let world = app.world_mut();
    let events: Vec<PeerSessionEvent> = world.resource_mut::<Messages<PeerSessionEvent>>().drain().collect();
    for PeerSessionEvent(event) in events {
        match event {
            bevy_p2p_inference::net::session::SessionEvent::Tensor(_) => {}
            other => eprintln!("session: {other:?}"),
        }
    }
    let problems: Vec<SessionProblem> = world.resource_mut::<Messages<SessionProblem>>().drain().collect();
    for SessionProblem(problem) in problems {
        eprintln!("problem: {problem}");
    }
}

fn load_images(dir: &Path) -> Result<Vec<(String, Tensor)>, String> {
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
            let tensor = Tensor::from_image_bytes(&bytes, 1, 28, 28).map_err(|e| format!("{}: {e}", p.display()))?;
            Ok((p.file_stem().unwrap_or_default().to_string_lossy().into_owned(), tensor))
        })
        .collect()
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn run_coordinator(args: &Args, plan: PartitionPlan) -> Result<(), String> {
    let all_f32 = plan.cuts.iter().all(|d| *d == TransferDtype::F32);
    let images = load_images(&args.images)?;
    let mut app = build_app(args, plan);
    let deadline = Instant::now() + Duration::from_secs(args.lifetime_s);
    // Wait for the workers.
    loop {
        app.update();
        report_events(&mut app);
        let session = app.world().get_resource::<PeerSession>();
        let trusted = session.map_or(0, |s| s.trusted_with(Permissions::RUN_STAGES).len());
        let connected = session.map_or(0, |s| s.links().count());
        let room_size = args.room_size.unwrap_or(args.workers);
        if trusted >= args.workers && connected >= room_size {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("only {trusted} of {} workers and {connected} of {room_size} peers joined in time", args.workers));
        }
    }
    eprintln!("assignment: {:?}", app.world().resource::<Distributed>().assignment().executors);
    let model: Handle<Model> = app.world().resource::<AssetServer>().load(args.model.clone());
    // Single-peer references first (whole model on this GPU), one at a time so that no frame
    // carries much GPU work (on a software rasterizer it runs on the frame's CPU time).
    let mut reference_outputs = Vec::new();
    for (_, input) in &images {
        let entity = app.world_mut().spawn((InferenceRequest::new(model.clone(), input.clone()), LocalOnly)).id();
        // Report session events meanwhile too: peers keep talking while references run.
        let (prediction, _) = update_until_prediction_with(&mut app, entity, Duration::from_secs(60), report_events)
            .map_err(|e| format!("single-peer reference: {e}"))?;
        reference_outputs.push(prediction);
    }
    let mut pending = Vec::new();
    for round in 0..args.rounds {
        for (i, (name, input)) in images.iter().enumerate() {
            let split = app.world_mut().spawn(InferenceRequest::new(model.clone(), input.clone())).id();
            pending.push((format!("{name}#{round}"), split, i));
        }
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    let (mut matches, mut lost) = (0, 0);
    let mut done = vec![false; pending.len()];
    // Per stage: whole hand-over times, and for remote stages the two hops alone.
    let mut stage_times: Vec<Vec<f64>> = Vec::new();
    let mut hop_times: Vec<Vec<f64>> = Vec::new();
    while done.iter().any(|d| !d) && Instant::now() < deadline {
        app.update();
        report_events(&mut app);
        for (i, (name, split, image)) in pending.iter().enumerate() {
            if done[i] {
                continue;
            }
            let world = app.world();
            if let Some(failed) = world.get::<InferenceFailed>(*split) {
                done[i] = true;
                lost += 1;
                eprintln!("{name}: failed: {}", failed.error);
                continue;
            }
            let Some(split) = world.get::<Prediction>(*split) else { continue };
            let whole = &reference_outputs[*image];
            done[i] = true;
            let same = if all_f32 {
                split.output.data().iter().zip(whole.output.data()).all(|(a, b)| a.to_bits() == b.to_bits())
            } else {
                split.top_k.first().map(|t| t.0) == whole.top_k.first().map(|t| t.0)
            };
            matches += same as usize;
            let ms = split.latency.as_secs_f64() * 1e3;
            latencies.push(ms);
            let stages: Vec<String> = split
                .stages
                .iter()
                .map(|s| format!("{} on {} {:.2} ms", s.stage, s.executor, s.duration.as_secs_f64() * 1e3))
                .collect();
            for s in &split.stages {
                if stage_times.len() <= s.stage {
                    stage_times.resize(s.stage + 1, Vec::new());
                    hop_times.resize(s.stage + 1, Vec::new());
                }
                stage_times[s.stage].push(s.duration.as_secs_f64() * 1e3);
                if let Some(hops) = s.hops() {
                    hop_times[s.stage].push(hops.as_secs_f64() * 1e3);
                }
            }
            println!(
                "request {name}: {ms:.2} ms, top-1 {} ({:.1}%), matches single-peer: {same}, reruns {}, stages [{}]",
                split.top_k[0].0,
                split.top_k[0].1 * 100.0,
                split.reruns,
                stages.join(", ")
            );
        }
    }
    lost += done.iter().filter(|d| !**d).count();
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let traffic = &app.world().resource::<Distributed>().finished_traffic;
    let bytes_per_request = traffic.iter().map(|t| t.bytes).sum::<u64>() / traffic.len().max(1) as u64;
    let (median, p95) = if latencies.is_empty() { (0.0, 0.0) } else { (quantile(&latencies, 0.5), quantile(&latencies, 0.95)) };
    eprintln!("summary: {} requests in {elapsed:.2} s ({:.1} requests/s with K={})", latencies.len(), latencies.len() as f64 / elapsed, args.k);
    eprintln!("  latency median {median:.2} ms, p95 {p95:.2} ms");
    for (stage, (times, hops)) in stage_times.iter_mut().zip(&mut hop_times).enumerate() {
        times.sort_by(f64::total_cmp);
        hops.sort_by(f64::total_cmp);
        if !times.is_empty() {
            eprint!("  stage {stage} (hand-over to output back): median {:.2} ms, p95 {:.2} ms", quantile(times, 0.5), quantile(times, 0.95));
        }
        if !hops.is_empty() {
            eprint!("; of which the two hops: median {:.2} ms, p95 {:.2} ms", quantile(hops, 0.5), quantile(hops, 0.95));
        }
        eprintln!();
    }
    eprintln!("  bytes per request: {bytes_per_request}");
    println!(
        "{{\"requests\":{},\"matches_single_peer\":{matches},\"lost\":{lost},\"median_ms\":{median:.3},\"p95_ms\":{p95:.3},\"bytes_per_request\":{bytes_per_request}}}",
        pending.len()
    );
    Ok(())
}

fn run_worker(args: &Args, plan: PartitionPlan) -> Result<(), String> {
    let mut app = build_app(args, plan);
    let deadline = Instant::now() + Duration::from_secs(args.lifetime_s);
    let mut tampered = !args.tamper_once;
    let mut saw_coordinator = false;
    let mut alone_since: Option<Instant> = None;
    while Instant::now() < deadline {
        app.update();
        report_events(&mut app);
        if let Some(mut session) = app.world_mut().get_resource_mut::<PeerSession>() {
            if !tampered {
                session.corrupt_next_tensor_frame();
                tampered = true;
            }
            // Leave once the coordinator has been gone for 3 s (a stalled one comes back).
            let coordinators = session.trusted_with(Permissions::SUBMIT_REQUESTS).len();
            saw_coordinator |= coordinators > 0;
            if saw_coordinator && coordinators == 0 {
                if alone_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(3) {
                    break;
                }
            } else {
                alone_since = None;
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let served = app.world().resource::<Distributed>().stages_served;
    let rejected = app.world().get_resource::<PeerSession>().map_or(0, |s| s.rejected_total());
    println!("{{\"stages_served\":{served},\"rejected\":{rejected},\"saw_coordinator\":{saw_coordinator}}}");
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = std::fs::read_to_string(&args.plan)
        .map_err(|e| format!("cannot read {}: {e}", args.plan.display()))
        .and_then(|text| PartitionPlan::from_ron(&text).map_err(|e| format!("{}: {e}", args.plan.display())))
        .and_then(|plan| match args.role {
            Role::Coordinator => run_coordinator(&args, plan),
            Role::Worker => run_worker(&args, plan),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
