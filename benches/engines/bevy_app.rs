//! End to end in a headless Bevy app: request spawned to prediction in the ECS, one at a time
//! and with several in flight, and where a request's frames go.

use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy::render::pipelined_rendering::PipelinedRenderingPlugin;
use bevy_p2p_inference::prelude::*;
use crate::statistics::*;
use bevy_p2p_inference::{headless_plugins, update_until_prediction, update_until_prediction_with};

/// When the last [`PredictionReady`] was triggered: the moment a prediction is in the ECS, where
/// an observer or any later system of the same frame sees it.
#[derive(Resource, Default)]
pub struct LastPredictionReady(pub Option<Instant>);

/// End to end in a Bevy app, one request at a time.
pub struct EndToEnd {
    /// Request spawned to `PredictionReady` (median, p95 in ms).
    pub to_ready: Result<(f64, f64), String>,
    /// Request spawned to the end of the `update` that delivered it.
    pub to_frame_end: Result<(f64, f64), String>,
    /// Median `update` calls per request.
    pub frames: String,
    /// Median and largest `Prediction::handover`.
    pub handover: String,
}

pub fn end_to_end(app: &mut App, model: &Handle<Model>, x: &Tensor, seconds: f64) -> EndToEnd {
    let (mut frames, mut handovers, mut to_ready) = (Vec::new(), Vec::new(), Vec::new());
    let to_frame_end = time_it(seconds, || {
        let spawned = Instant::now();
        let entity = app.world_mut().spawn(InferenceRequest::new(model.clone(), x.clone())).id();
        let result = update_until_prediction(app, entity, Duration::from_secs(600))
            .map(|(prediction, f)| {
                frames.push(f);
                handovers.extend(prediction.handover.map(|h| h.as_secs_f64() * 1e3));
            })
            .map_err(|e| e.to_string());
        if let Some(ready) = app.world_mut().resource_mut::<LastPredictionReady>().0.take() {
            to_ready.push((ready - spawned).as_secs_f64() * 1e3);
        }
        app.world_mut().despawn(entity);
        result
    });
    // The first sample is the warm-up, as in `time_it`.
    let to_ready = to_frame_end.clone().and_then(|_| median_p95(to_ready.get_mut(1..).unwrap_or_default()));
    frames.sort();
    handovers.sort_by(f64::total_cmp);
    EndToEnd {
        to_ready,
        to_frame_end,
        frames: frames.get(frames.len() / 2).map_or("-".into(), |f| f.to_string()),
        handover: match (handovers.get(handovers.len() / 2), handovers.last()) {
            (Some(median), Some(max)) => format!("{median:.3} ms (max {max:.3})"),
            _ => "-".into(),
        },
    }
}

/// A headless app with this crate's plugin; `pipelined` keeps Bevy's default of rendering
/// frame N on a render thread while the main world runs frame N+1.
pub fn bench_app(pipelined: bool) -> App {
    let mut app = headless_app(pipelined, true);
    app.init_resource::<LastPredictionReady>();
    app.add_observer(|_: On<PredictionReady>, mut last: ResMut<LastPredictionReady>| last.0 = Some(Instant::now()));
    app
}

/// The same headless app without this crate's plugin: what Bevy alone costs a frame.
pub fn bevy_alone_app() -> App {
    headless_app(true, false)
}

fn headless_app(pipelined: bool, with_plugin: bool) -> App {
    let mut app = App::new();
    let plugins = headless_plugins().set(bevy::log::LogPlugin { level: bevy::log::Level::ERROR, ..default() });
    match pipelined {
        true => app.add_plugins(plugins),
        false => app.add_plugins(plugins.disable::<PipelinedRenderingPlugin>()),
    };
    if with_plugin {
        app.add_plugins(P2pInferencePlugin::default());
    }
    app.finish();
    app.cleanup();
    app
}

/// Median and p95 frame time (ms) of each app with nothing to do, sampled in turn for about
/// `seconds`, so that a change of clocks hits them alike.
pub fn idle_frames(apps: &mut [&mut App], seconds: f64) -> Vec<Result<(f64, f64), String>> {
    let mut samples = vec![Vec::new(); apps.len()];
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut round = 0;
    while Instant::now() < deadline || round < 4 {
        for (app, samples) in apps.iter_mut().zip(&mut samples) {
            let t = Instant::now();
            app.update();
            // The first rounds are the warm-up.
            if round >= 3 {
                samples.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        round += 1;
    }
    samples.iter_mut().map(|s| median_p95(s)).collect()
}

/// Milliseconds per request with `in_flight` requests kept in flight in the app: each
/// prediction is replaced by a new request, and completions are counted for about `seconds`
/// after the first round. The requests start one frame apart, so that one request's upload can
/// overlap another's GPU work instead of all of them moving in lockstep.
pub fn pipelined(app: &mut App, model: &Handle<Model>, x: &Tensor, in_flight: usize, seconds: f64) -> Result<f64, String> {
    let spawn = |app: &mut App| app.world_mut().spawn(InferenceRequest::new(model.clone(), x.clone())).id();
    let mut pending: Vec<Entity> = Vec::new();
    let (mut completed, mut measured_since) = (0usize, None::<(Instant, usize)>);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds + 60.0);
    loop {
        if pending.len() < in_flight {
            pending.push(spawn(app));
        }
        app.update();
        for slot in pending.iter_mut() {
            let world = app.world_mut();
            if let Some(failed) = world.get::<InferenceFailed>(*slot) {
                return Err(failed.error.to_string());
            }
            if world.get::<Prediction>(*slot).is_some() {
                world.despawn(*slot);
                *slot = spawn(app);
                completed += 1;
            }
        }
        match measured_since {
            None if completed >= in_flight => measured_since = Some((Instant::now(), completed)),
            Some((since, first)) => {
                let counted = completed - first;
                if since.elapsed().as_secs_f64() >= seconds && counted >= 3 * in_flight {
                    for entity in pending {
                        app.world_mut().despawn(entity);
                    }
                    return Ok(since.elapsed().as_secs_f64() * 1e3 / counted as f64);
                }
            }
            None => {}
        }
        if Instant::now() > deadline {
            return Err("timed out".into());
        }
    }
}

/// The duration of every frame of one request, for finding where end-to-end time goes.
pub fn print_frame_costs(app: &mut App, model: &Handle<Model>, x: &Tensor, name: &str, batch: usize) {
    let entity = app.world_mut().spawn(InferenceRequest::new(model.clone(), x.clone())).id();
    let mut frames = Vec::new();
    let mut frame_start = Instant::now();
    let outcome = update_until_prediction_with(app, entity, Duration::from_secs(60), |_| {
        frames.push(format!("{:.2}", frame_start.elapsed().as_secs_f64() * 1e3));
        frame_start = Instant::now();
    });
    app.world_mut().despawn(entity);
    match outcome {
        Ok(_) => println!("frames of one request, {name} batch {batch} (ms): {}", frames.join(" ")),
        Err(e) => println!("frames of one request, {name} batch {batch}: {e} after {}", frames.join(" ")),
    }
}

