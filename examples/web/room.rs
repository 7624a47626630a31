//! The web example as a player of a split-inference room (`?room=ws://…&key=…&role=server` or
//! `role=asker`): the same JSON lines as the native `peer` example, on the console.

use bevy::prelude::*;
use bevy_p2p_inference::model::plan::PartitionPlan;
use bevy_p2p_inference::net::session::PeerSession;
use bevy_p2p_inference::net::{Permissions, RoomKey, SessionEvent};
use bevy_p2p_inference::prelude::*;
use bevy_p2p_inference::schedule::stage_record::Executor;
use bevy_p2p_inference::session::Distributed;
use bevy_p2p_inference::tensor::TransferDtype;
use bevy_p2p_inference::{LocalOnly, PeerRole, PeerSessionEvent, PeerSessionPlugin, SessionProblem};
use serde_json::json;
use std::time::Duration;

use crate::browser::{report, set_status, PageOptions, Progress, IMAGES};

/// The room part of the page's query string.
#[derive(Resource, Clone, Debug)]
pub struct RoomOptions {
    /// Matchbox room URL.
    pub url: String,
    /// The room key.
    pub key: RoomKey,
    /// Asker or server.
    pub role: PeerRole,
    /// The partition plan, relative to the assets folder.
    pub plan: String,
    /// Asker: servers to wait for.
    pub servers: usize,
    /// Asker: rounds over the inputs.
    pub rounds: usize,
    /// Requests in flight (K).
    pub k: usize,
    /// Asker: seconds without an answer before a remote stage runs elsewhere.
    pub stage_timeout_s: f64,
}

impl RoomOptions {
    /// The room options, where the query string names a room.
    pub fn from_query(get: &impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let Some(url) = get("room") else { return Ok(None) };
        let key = get("key").ok_or("a room needs a key (?key=…)")?;
        let key = RoomKey::from_text(&key, &url).map_err(|e| format!("?key=…: {e}"))?;
        let role = match get("role").as_deref() {
            // `coordinator` and `worker` are what they were called before.
            Some("asker" | "coordinator") => PeerRole::Player,
            Some("server" | "worker") | None => PeerRole::Server,
            Some(other) => return Err(format!("unknown role '{other}' (asker or server)")),
        };
        let number = |name: &str, default: usize| get(name).and_then(|v| v.parse().ok()).unwrap_or(default);
        Ok(Some(Self {
            url,
            key,
            role,
            plan: get("plan").unwrap_or_else(|| "plans/fashion_3_int8.plan.ron".into()),
            servers: number("servers", 2),
            rounds: number("rounds", 1),
            k: number("k", 2),
            stage_timeout_s: get("stage_timeout_s").and_then(|v| v.parse().ok()).unwrap_or(10.0),
        }))
    }

    /// The session plugin these options describe.
    pub fn plugin(&self, model: &str) -> PeerSessionPlugin {
        let mut session = PeerSessionPlugin::new(self.url.clone(), self.key.clone(), self.role, model, self.plan.clone());
        session.max_in_flight = self.k;
        session.stage_timeout = Duration::from_secs_f64(self.stage_timeout_s);
        session.expected_peers = if self.role.asks() { self.servers } else { 0 };
        session
    }
}

/// Where a browser asker stands.
#[derive(Resource, Default)]
pub enum AskerPhase {
    /// Waiting for the servers to be trusted.
    #[default]
    WaitingForServers,
    /// Computing each input's single-peer reference, one at a time.
    References { outputs: Vec<Prediction>, running: Option<Entity> },
    /// The split requests are in flight.
    Split { references: Vec<Prediction>, pending: Vec<(String, Entity, usize)>, started: f64 },
    /// The summary is out.
    Finished,
}

/// Session events and problems as console lines and on the status line.
pub fn report_session(mut events: MessageReader<PeerSessionEvent>, mut problems: MessageReader<SessionProblem>) {
    for PeerSessionEvent(event) in events.read() {
        let line = match event {
            SessionEvent::PeerTrusted { peer, capabilities, .. } => json!({"event": "peer_trusted", "peer": peer.to_string(), "adapter": capabilities.adapter}),
            SessionEvent::PeerLost { peer, reason } => json!({"event": "peer_lost", "peer": peer.to_string(), "reason": format!("{reason:?}")}),
            SessionEvent::HandshakeFailed { peer, reason } => json!({"event": "handshake_failed", "peer": peer.to_string(), "reason": format!("{reason:?}")}),
            SessionEvent::Rejected { peer, reason, lost_output } => {
                json!({"event": "rejected", "peer": peer.to_string(), "reason": reason.code(), "detail": reason.to_string(), "lost_output": lost_output})
            }
            SessionEvent::Reconnected { attempt } => json!({"event": "reconnected", "attempt": attempt}),
            SessionEvent::StageInputDropped { peer, request, stage } => json!({"event": "stage_input_dropped", "peer": peer.to_string(), "request": request, "stage": stage}),
            SessionEvent::SendFailed { tensor, error } => {
                json!({"event": "send_failed", "peer": tensor.peer.to_string(), "request": tensor.request, "stage": tensor.stage, "detail": error.to_string()})
            }
            SessionEvent::Tensor(_) | SessionEvent::TensorSent { .. } => continue,
        };
        let status = format!("room: {}", line["event"].as_str().unwrap_or_default().replace('_', " "));
        report(line, &status);
    }
    for problem in problems.read() {
        report(json!({"event": "problem", "detail": problem.to_string()}), &format!("room problem: {problem}"));
    }
}

/// A browser server says its id once it has one (`joined`: how the room tells its stages from
/// native players'), and serves stages until the asker has been gone for 3 s.
pub fn server_watch(session: Option<Res<PeerSession>>, distributed: Res<Distributed>, time: Res<Time<Real>>, mut watch: Local<(bool, Option<f64>, bool, bool)>) {
    let (saw_asker, alone_since, finished, joined) = &mut *watch;
    let Some(session) = session else { return };
    if let Some(id) = session.id().filter(|_| !*joined) {
        *joined = true;
        report(json!({"event": "joined", "id": id.to_string()}), "joined the room");
    }
    if *finished {
        return;
    }
    let askers = session.links().trusted_with(Permissions::SUBMIT_REQUESTS).len();
    *saw_asker |= askers > 0;
    let now = time.elapsed_secs_f64();
    if *saw_asker && askers == 0 {
        if now - *alone_since.get_or_insert(now) > 3.0 {
            *finished = true;
            report(
                json!({"event": "serving_summary", "stages_served": distributed.stages_served, "rejected": session.rejected_total()}),
                &format!("the asker left; served {} stages", distributed.stages_served),
            );
            report(json!({"event": "done"}), "done");
        }
    } else {
        *alone_since = None;
        if askers > 0 {
            set_status(&format!("serving stages: {} so far", distributed.stages_served));
        }
    }
}

/// A browser asker: waits for its servers, computes single-peer references, then sends
/// every input `rounds` times split across the room and reports each request and a summary.
#[allow(clippy::too_many_arguments)]
pub fn coordinate(
    mut commands: Commands,
    mut phase: ResMut<AskerPhase>,
    room: Res<RoomOptions>,
    page: Res<PageOptions>,
    progress: Res<Progress>,
    session: Option<Res<PeerSession>>,
    assets: Res<AssetServer>,
    plans: Res<Assets<PartitionPlan>>,
    distributed: Res<Distributed>,
    time: Res<Time<Real>>,
    predictions: Query<&Prediction>,
    failures: Query<&InferenceFailed>,
    mut last_waiting: Local<Option<(bool, usize, usize)>>,
) {
    let model: Handle<Model> = assets.load(page.model.clone());
    match &mut *phase {
        AskerPhase::WaitingForServers => {
            let trusted = session.map_or(0, |s| s.links().trusted_with(Permissions::RUN_STAGES).len());
            let waiting = (distributed.is_running(), trusted, progress.inputs.len());
            if *last_waiting != Some(waiting) {
                *last_waiting = Some(waiting);
                report(
                    json!({"event": "waiting_for_servers", "joined": waiting.0, "trusted_servers": trusted, "servers": room.servers, "inputs": waiting.2}),
                    &format!("waiting for servers: {trusted} of {}", room.servers),
                );
            }
            if trusted >= room.servers && distributed.is_running() && progress.inputs.len() == IMAGES.len() {
                *phase = AskerPhase::References { outputs: Vec::new(), running: None };
            }
        }
        AskerPhase::References { outputs, running } => {
            if let Some(entity) = *running {
                let Ok(prediction) = predictions.get(entity) else { return };
                outputs.push(prediction.clone());
                commands.entity(entity).despawn();
            }
            if outputs.len() < progress.inputs.len() {
                let input = progress.inputs[outputs.len()].1.clone();
                *running = Some(commands.spawn((InferenceRequest::new(model, input), LocalOnly)).id());
                return;
            }
            let mut pending = Vec::new();
            for round in 0..room.rounds {
                for (i, (name, input)) in progress.inputs.iter().enumerate() {
                    let entity = commands.spawn(InferenceRequest::new(model.clone(), input.clone())).id();
                    pending.push((format!("{name}#{round}"), entity, i));
                }
            }
            *phase = AskerPhase::Split { references: std::mem::take(outputs), pending, started: time.elapsed_secs_f64() };
        }
        AskerPhase::Split { references, pending, started } => {
            let settled = pending.iter().filter(|(_, e, _)| predictions.contains(*e) || failures.contains(*e)).count();
            set_status(&format!("split requests: {settled} of {} settled", pending.len()));
            if settled < pending.len() {
                return;
            }
            let plan: Handle<PartitionPlan> = assets.load(room.plan.clone());
            let all_f32 = plans.get(&plan).is_some_and(|p| p.cuts.iter().all(|d| *d == TransferDtype::F32));
            let (mut matches, mut lost, mut latencies) = (0, 0, Vec::new());
            for (name, entity, image) in pending.iter() {
                let Ok(split) = predictions.get(*entity) else {
                    lost += 1;
                    let error = failures.get(*entity).map(|f| f.error.to_string()).unwrap_or_default();
                    report(json!({"event": "request_failed", "name": name, "error": error}), "a request failed");
                    continue;
                };
                let same = split.matches(&references[*image], all_f32);
                matches += same as usize;
                let ms = split.latency.as_secs_f64() * 1e3;
                latencies.push(ms);
                let remote: Vec<bool> = split.stages.iter().map(|s| s.executor != Executor::Local).collect();
                // Who ran each stage, as the `peer` example says it: "local" or the player's id.
                let executors: Vec<String> = split.stages.iter().map(|s| s.executor.peer().map_or("local".to_string(), |p| p.to_string())).collect();
                report(
                    json!({"event": "request", "name": name, "latency_ms": ms, "top1": split.top_k[0].0, "matches_single_peer": same, "reruns": split.reruns, "remote_stages": remote, "executors": executors}),
                    &format!("{name}: {ms:.0} ms"),
                );
            }
            latencies.sort_by(f64::total_cmp);
            let quantile = |q: f64| latencies.get(((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len().max(1)) - 1).copied().unwrap_or(0.0);
            let elapsed = time.elapsed_secs_f64() - *started;
            report(
                json!({"event": "summary", "requests": pending.len(), "matches_single_peer": matches, "lost": lost,
                       "median_ms": quantile(0.5), "p95_ms": quantile(0.95), "elapsed_s": elapsed}),
                &format!("{} requests, {matches} match single-peer, {lost} lost; median {:.0} ms", pending.len(), quantile(0.5)),
            );
            report(json!({"event": "done"}), "done");
            *phase = AskerPhase::Finished;
        }
        AskerPhase::Finished => {}
    }
}
