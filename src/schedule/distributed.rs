//! [`PeerSessionPlugin`]: splits requests for one model across the players of a matchbox room
//! according to a [`PartitionPlan`]. Coordinators own requests and run stage 0; workers run
//! the stages they are sent. User code does not change: requests are still
//! [`InferenceRequest`]s and results still [`Prediction`]s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bevy::platform::time::Instant;

use bevy::prelude::*;
use bevy::render::renderer::{RenderAdapterInfo, RenderDevice};

use super::pipeline::{assign_stages, Executor, Pipeline, PipelineAction, RequestId, StageAssignment, WorkerSpeed};
use super::{fail, InferenceError, InferenceFailed, InferenceSystems, InferenceRequest, JobQueue, JobTag, LocalOnly, Prediction, PredictionReady, SplitRequest, StageJob, StageOutcomes, Submitted, TopK};
use crate::model::ir::Graph;
use crate::model::plan::{PartitionPlan, TransferDtype};
use crate::model::Model;
use crate::net::session::{LinkState, PeerSession, SessionConfig, SessionEvent};
use crate::net::{Capabilities, Direction, PeerUuid, Permissions};
use crate::tensor::Tensor;

/// Whether this player owns requests or only runs stages for others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRole {
    /// Owns requests, runs stage 0 and hands later stages to workers.
    Coordinator,
    /// Runs the stages coordinators send it.
    Worker,
}

/// Settings of [`PeerSessionPlugin`].
#[derive(Clone, Debug)]
pub struct SessionSettings {
    /// Matchbox room URL.
    pub room_url: String,
    /// The room's shared secret.
    pub room_key: String,
    /// This player's role.
    pub role: PeerRole,
    /// Asset path of the model to split.
    pub model: String,
    /// How to split it.
    pub plan: PartitionPlan,
    /// Requests in flight at once (K).
    pub max_in_flight: usize,
    /// Peers to wait for (the socket is rebuilt if they do not all arrive in time).
    pub expected_peers: usize,
    /// A remote stage without an answer for this long is re-run elsewhere.
    pub stage_timeout: Duration,
}

impl SessionSettings {
    /// Settings with K = 2 and a 2 s stage timeout.
    pub fn new(room_url: impl Into<String>, room_key: impl Into<String>, role: PeerRole, model: impl Into<String>, plan: PartitionPlan) -> Self {
        Self {
            room_url: room_url.into(),
            room_key: room_key.into(),
            role,
            model: model.into(),
            plan,
            max_in_flight: 2,
            expected_peers: 0,
            stage_timeout: Duration::from_secs(2),
        }
    }
}

/// Joins a matchbox room and splits requests for [`SessionSettings::model`] across its players.
pub struct PeerSessionPlugin {
    /// What room, which role, which model and plan.
    pub settings: SessionSettings,
}

/// Sent for everything the session observes (peers trusted and lost, rejected messages), for
/// logs, tests and the overlay.
#[derive(Message, Clone, Debug)]
pub struct PeerSessionEvent(pub SessionEvent);

/// Why the session could not start or a stage could not be handled.
#[derive(Message, Clone, Debug)]
pub struct SessionProblem(pub String);

impl Plugin for PeerSessionPlugin {
    fn build(&self, app: &mut App) {
        app.add_message::<PeerSessionEvent>()
            .add_message::<SessionProblem>()
            .insert_resource(Distributed::new(self.settings.clone()))
            .add_systems(Startup, load_model)
            .add_systems(PreUpdate, (prepare, drive).chain().after(InferenceSystems::ReceiveResults))
            .add_systems(PostUpdate, claim_requests.before(InferenceSystems::SubmitRequests));
    }
}

enum Phase {
    LoadingModel,
    Calibrating,
    Running,
    Failed,
}

/// One split request on the coordinator.
struct Tracked {
    entity: Entity,
    bytes: u64,
}

/// A request's traffic, for the `peer` example's summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestTraffic {
    /// Bytes on the wire for it: frames this coordinator sent (headers and MACs included) plus
    /// the payloads it received back.
    pub bytes: u64,
}

/// State of the split: the model's stages, the pipeline, the request map.
#[derive(Resource)]
pub struct Distributed {
    settings: SessionSettings,
    phase: Phase,
    model: Handle<Model>,
    stages: Vec<Arc<Graph>>,
    input_dtypes: Vec<TransferDtype>,
    pipeline: Pipeline,
    assignment: StageAssignment,
    workers: HashMap<PeerUuid, u32>,
    tracked: HashMap<RequestId, Tracked>,
    next_request: RequestId,
    /// Bytes sent per finished request, most recent last.
    pub finished_traffic: Vec<RequestTraffic>,
    /// Stages this peer ran for other peers.
    pub stages_served: u64,
    calibrating: usize,
}

impl Distributed {
    fn new(settings: SessionSettings) -> Self {
        let stages = settings.plan.stages.len();
        Self {
            pipeline: Pipeline::new(settings.max_in_flight),
            assignment: assign_stages(stages, &[]),
            settings,
            phase: Phase::LoadingModel,
            model: Handle::default(),
            stages: Vec::new(),
            input_dtypes: Vec::new(),
            workers: HashMap::new(),
            tracked: HashMap::new(),
            next_request: 0,
            finished_traffic: Vec::new(),
            stages_served: 0,
            calibrating: 0,
        }
    }

    /// Which executor runs each stage now.
    pub fn assignment(&self) -> &StageAssignment {
        &self.assignment
    }

    /// Whether the model is loaded, calibrated and the room joined.
    pub fn is_running(&self) -> bool {
        matches!(self.phase, Phase::Running)
    }

    /// Requests in flight and waiting.
    pub fn load(&self) -> (usize, usize) {
        (self.pipeline.in_flight(), self.pipeline.waiting())
    }

    fn reassign(&mut self) {
        let workers: Vec<WorkerSpeed> = self.workers.iter().map(|(&peer, &calibration_us)| WorkerSpeed { peer, calibration_us }).collect();
        self.assignment = assign_stages(self.stages.len(), &workers);
    }
}

fn load_model(mut state: ResMut<Distributed>, server: Res<AssetServer>) {
    state.model = server.load(state.settings.model.clone());
}

/// Once the model is loaded: validate the plan, build the stage graphs, and measure this GPU
/// on the whole model before joining the room.
fn prepare(mut state: ResMut<Distributed>, models: Res<Assets<Model>>, mut queue: ResMut<JobQueue>, mut problems: MessageWriter<SessionProblem>, mut commands: Commands) {
    if !matches!(state.phase, Phase::LoadingModel) {
        return;
    }
    let Some(model) = models.get(&state.model) else { return };
    let graph = model.graph().clone();
    let validated = match state.settings.plan.validate(&graph) {
        Ok(v) => v,
        Err(error) => {
            problems.write(SessionProblem(format!("the partition plan does not fit the model: {error}")));
            state.phase = Phase::Failed;
            return;
        }
    };
    state.input_dtypes = validated.stages.iter().map(|s| s.input_dtype).collect();
    state.stages = validated.stage_graphs(&graph).into_iter().map(Arc::new).collect();
    state.reassign();
    // Warm-up: every stage block (and the whole model, which is what gets timed) is compiled
    // and run once before joining, so no frame later stalls on pipeline creation. Stage graphs
    // declare their input dimensions with the batch left open; batch 1 is used.
    let batch_one = |g: &Graph| -> Vec<usize> { g.input.dims.iter().map(|d| d.unwrap_or(1)).collect() };
    let started = Instant::now();
    let jobs: Vec<(Arc<Graph>, Vec<usize>)> = std::iter::once(graph.clone()).chain(state.stages.iter().cloned()).map(|g| {
        let shape = batch_one(&g);
        (g, shape)
    }).collect();
    state.calibrating = jobs.len();
    let model = state.model.id();
    for (graph, shape) in jobs {
        let entity = commands.spawn_empty().id();
        queue.push(StageJob { tag: JobTag::Calibration, entity, model, graph, input: Tensor::zeros(shape), started });
    }
    state.phase = Phase::Calibrating;
}

/// Requests neither handed out, failed, claimed by the pipeline, nor pinned to this peer.
type UnclaimedRequest = (Without<Submitted>, Without<SplitRequest>, Without<InferenceFailed>, Without<LocalOnly>);

/// Marks requests for the split model so the single-peer path leaves them to the pipeline.
fn claim_requests(
    mut commands: Commands,
    mut state: ResMut<Distributed>,
    requests: Query<(Entity, &InferenceRequest), UnclaimedRequest>,
) {
    if state.settings.role != PeerRole::Coordinator || state.stages.is_empty() {
        return;
    }
    for (entity, request) in &requests {
        if request.model.id() != state.model.id() {
            continue;
        }
        let id = state.next_request;
        state.next_request += 1;
        state.pipeline.submit(id, request.input.clone());
        state.tracked.insert(id, Tracked { entity, bytes: 0 });
        commands.entity(entity).insert((SplitRequest, Submitted));
    }
}

#[allow(clippy::too_many_arguments)]
fn drive(
    mut commands: Commands,
    mut state: ResMut<Distributed>,
    session: Option<ResMut<PeerSession>>,
    mut outcomes: ResMut<StageOutcomes>,
    mut queue: ResMut<JobQueue>,
    models: Res<Assets<Model>>,
    adapter: Option<Res<RenderAdapterInfo>>,
    device: Option<Res<RenderDevice>>,
    top_k: Res<TopK>,
    mut events: MessageWriter<PeerSessionEvent>,
    mut problems: MessageWriter<SessionProblem>,
) {
    let now = Instant::now();
    let mut session = session;
    let mut actions = Vec::new();
    for outcome in std::mem::take(&mut outcomes.0) {
        match (outcome.tag, outcome.result) {
            (JobTag::Calibration, result) => {
                commands.entity(outcome.entity).despawn();
                if let Err(error) = result {
                    problems.write(SessionProblem(format!("calibration failed: {error}")));
                }
                state.calibrating -= 1;
                if state.calibrating > 0 {
                    continue;
                }
                let Some(model) = models.get(&state.model) else { continue };
                let config = session_config(&state.settings, model.hash(), adapter.as_deref(), device.as_deref(), outcome.started.elapsed());
                commands.insert_resource(PeerSession::connect(config));
                state.phase = Phase::Running;
            }
            (JobTag::PipelineStage { request, stage }, Ok(output)) => {
                let assignment = state.assignment.clone();
                match state.pipeline.stage_finished(request, stage, Executor::Local, output, &assignment, now) {
                    Ok(next) => actions.extend(next),
                    Err(stale) => {
                        problems.write(SessionProblem(stale.to_string()));
                    }
                }
            }
            (JobTag::PipelineStage { request, .. }, Err(error)) => {
                if let Some(tracked) = state.tracked.remove(&request) {
                    fail(&mut commands, tracked.entity, InferenceError::Gpu(error));
                }
            }
            (JobTag::RemoteStage { from, request, stage }, result) => {
                let Some(session) = session.as_deref_mut() else { continue };
                match result {
                    Ok(output) => {
                        state.stages_served += 1;
                        let dtype = state.input_dtypes.get(stage as usize + 1).copied().unwrap_or(TransferDtype::F32);
                        let run = outcome.started.elapsed();
                        if let Err(error) = session.send_tensor(from, request, stage, Direction::StageOutput, &output, dtype, run) {
                            problems.write(SessionProblem(format!("cannot return stage {stage} of request {request}: {error}")));
                        }
                    }
                    Err(error) => {
                        problems.write(SessionProblem(format!("stage {stage} of request {request} for a peer failed: {error}")));
                    }
                }
            }
            (JobTag::Request, _) => {}
        }
    }
    if let Some(session) = session.as_deref_mut() {
        for event in session.poll(now) {
            handle_event(&event, &mut state, session, &mut queue, &mut actions, now);
            events.write(PeerSessionEvent(event));
        }
    }
    let assignment = state.assignment.clone();
    let timeout = state.settings.stage_timeout;
    actions.extend(state.pipeline.rerun_overdue(timeout, &assignment, now));
    actions.extend(state.pipeline.start_waiting(&assignment, now));
    execute(actions, &mut state, session.as_deref_mut(), &mut queue, &mut commands, &mut problems, top_k.0, now);
}

fn session_config(
    settings: &SessionSettings,
    model_hash: [u8; 32],
    adapter: Option<&RenderAdapterInfo>,
    device: Option<&RenderDevice>,
    calibration: Duration,
) -> SessionConfig {
    let (adapter_name, backend) = adapter.map_or(("unknown".to_string(), "unknown".to_string()), |a| (a.name.clone(), format!("{:?}", a.backend)));
    let features = device.map(|d| d.features()).unwrap_or_default();
    let subgroup_sizes = match adapter {
        Some(a) if features.contains(wgpu::Features::SUBGROUP) => (a.subgroup_min_size, a.subgroup_max_size),
        _ => (0, 0),
    };
    let capabilities = Capabilities {
        adapter: adapter_name,
        backend,
        shader_f16: features.contains(wgpu::Features::SHADER_F16),
        subgroup_sizes,
        max_storage_binding: device.map_or(0, |d| d.limits().max_storage_buffer_binding_size),
        calibration_us: calibration.as_micros().min(u32::MAX as u128) as u32,
    };
    let permissions = match settings.role {
        PeerRole::Coordinator => Permissions::COORDINATOR,
        PeerRole::Worker => Permissions::RUN_STAGES,
    };
    let mut config = SessionConfig::new(settings.room_url.clone(), settings.room_key.clone(), permissions, model_hash, capabilities);
    config.expected_peers = settings.expected_peers;
    config
}

fn handle_event(event: &SessionEvent, state: &mut Distributed, session: &mut PeerSession, queue: &mut JobQueue, actions: &mut Vec<PipelineAction>, now: Instant) {
    match event {
        SessionEvent::PeerTrusted { peer, capabilities, permissions } if permissions.contains(Permissions::RUN_STAGES) => {
            state.workers.insert(*peer, capabilities.calibration_us);
            state.reassign();
        }
        SessionEvent::PeerLost { peer, .. } => {
            state.workers.remove(peer);
            state.reassign();
            let assignment = state.assignment.clone();
            actions.extend(state.pipeline.rerun_peer(*peer, &assignment, now));
        }
        SessionEvent::Rejected { peer, .. }
            // Data from this peer was dropped: whatever it was working on is re-run.
            if session.link(*peer).is_some_and(|l| l.state == LinkState::Trusted) => {
                let assignment = state.assignment.clone();
                actions.extend(state.pipeline.rerun_peer(*peer, &assignment, now));
            }
        SessionEvent::Tensor(received) => match received.direction {
            Direction::StageInput => {
                let stage = received.shared.stage as usize;
                if stage == 0 || stage >= state.stages.len() {
                    return;
                }
                queue.push(StageJob {
                    tag: JobTag::RemoteStage { from: received.from, request: received.shared.request, stage: received.shared.stage },
                    entity: Entity::PLACEHOLDER,
                    model: state.model.id(),
                    graph: state.stages[stage].clone(),
                    input: received.shared.tensor.clone(),
                    started: now,
                });
            }
            Direction::StageOutput => {
                let assignment = state.assignment.clone();
                let (request, stage) = (received.shared.request, received.shared.stage as usize);
                if let Some(t) = state.tracked.get_mut(&request) {
                    t.bytes += received.header.total_bytes as u64;
                }
                let run = Duration::from_micros(received.header.run_us as u64);
                state.pipeline.note_remote_run(request, stage, Executor::Peer(received.from), run);
                if let Ok(next) = state.pipeline.stage_finished(request, stage, Executor::Peer(received.from), received.shared.tensor.clone(), &assignment, now) {
                    actions.extend(next);
                }
            }
        },
        _ => {}
    }
}

#[allow(clippy::too_many_arguments)]
fn execute(
    mut actions: Vec<PipelineAction>,
    state: &mut Distributed,
    mut session: Option<&mut PeerSession>,
    queue: &mut JobQueue,
    commands: &mut Commands,
    problems: &mut MessageWriter<SessionProblem>,
    top_k: usize,
    now: Instant,
) {
    while let Some(action) = actions.pop() {
        match action {
            PipelineAction::Run { request, stage, executor: Executor::Local, input } => {
                queue.push(StageJob {
                    tag: JobTag::PipelineStage { request, stage },
                    entity: state.tracked.get(&request).map_or(Entity::PLACEHOLDER, |t| t.entity),
                    model: state.model.id(),
                    graph: state.stages[stage].clone(),
                    input,
                    started: now,
                });
            }
            PipelineAction::Run { request, stage, executor: Executor::Peer(peer), input } => {
                let dtype = state.input_dtypes[stage];
                let sent = session
                    .as_deref_mut()
                    .ok_or(crate::net::session::SendError::SocketClosed)
                    .and_then(|s| s.send_tensor(peer, request, stage as u16, Direction::StageInput, &input, dtype, Duration::ZERO));
                match sent {
                    Ok(bytes) => {
                        if let Some(t) = state.tracked.get_mut(&request) {
                            t.bytes += bytes;
                        }
                    }
                    Err(error) => {
                        problems.write(SessionProblem(format!("cannot send stage {stage} of request {request}: {error}; running it elsewhere")));
                        // The peer is gone: drop it and run the stage elsewhere.
                        state.workers.remove(&peer);
                        state.reassign();
                        let assignment = state.assignment.clone();
                        actions.extend(state.pipeline.rerun_peer(peer, &assignment, now));
                    }
                }
            }
            PipelineAction::Finished { request, output, stages, reruns, in_flight } => {
                let Some(tracked) = state.tracked.remove(&request) else { continue };
                state.finished_traffic.push(RequestTraffic { bytes: tracked.bytes });
                let prediction = Prediction { top_k: output.top_k(0, top_k), output, latency: in_flight, stages, reruns, handover: None };
                if let Ok(mut entity) = commands.get_entity(tracked.entity) {
                    entity.insert(prediction.clone());
                    commands.trigger(PredictionReady { entity: tracked.entity, prediction });
                }
            }
        }
    }
}
