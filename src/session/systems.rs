//! The session's systems, in the order they run each frame (see the module doc).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bevy::asset::{LoadState, UntypedAssetId};
use bevy::platform::time::Instant;
use bevy::prelude::*;

use super::spot_check::{as_sent, judge, CheckedRun, SpotCheck, Verdict};
use super::stage_server::{StageQuota, StageServer};
use super::state::{batch_of_tensor, predicted_handover, Phase};
use super::{BudgetGate, Distributed, PeerSessionEvent, PeerSessionPlugin, PolledEvents, SessionProblem};
use crate::job::{JobOutcome, JobOutput, JobReply, JobTag, StageJob};
use crate::model::ir::Graph;
use crate::model::{Model, PartitionPlan, StagedModel, StagingError};
use crate::net::session::{PeerSession, SessionConfig};
use crate::net::codec::Onward;
use crate::net::{Capabilities, Direction, LinkSettings, LinkState, PeerUuid, Permissions, SendError, SentTensor, SessionEvent};
use crate::render::GpuCapabilities;
use crate::schedule::request_output::OutputNotKeptOnGpu;
use crate::session::pipeline::{PipelineAction, StageInput};
use crate::schedule::stage_record::Executor;
use crate::schedule::{deliver, InferenceError, InferenceFailed, InferenceRequest, JobQueue, JobResults, LocalOnly, Prediction, SplitRequest, StageOutcomes, Submitted, TopK};
use crate::tensor::Tensor;

/// Starts loading the model and the plan.
pub(super) fn load_assets(mut state: ResMut<Distributed>, server: Res<AssetServer>) {
    state.model = server.load(state.settings.model.clone());
    state.plan = server.load(state.settings.plan.clone());
}

/// Once the model and the plan are loaded: validates the plan, builds the stage graphs, and
/// hands the warm-up runs to the GPU. Every stage block (and the whole model, which is what gets
/// timed) is compiled and run once before joining, so that no frame later stalls on pipeline
/// creation, at batch 1. Stage graphs leave the batch open, except those of a model exported
/// with a dynamic batch, which [`StagedModel`] cuts again for each batch a request brings.
pub(super) fn prepare_stages(
    mut state: ResMut<Distributed>,
    models: Res<Assets<Model>>,
    plans: Res<Assets<PartitionPlan>>,
    server: Res<AssetServer>,
    mut queue: ResMut<JobQueue>,
    mut problems: MessageWriter<SessionProblem>,
    mut commands: Commands,
) {
    if !matches!(state.phase, Phase::Loading) {
        return;
    }
    let failed = |handle: UntypedAssetId| match server.get_load_state(handle) {
        Some(LoadState::Failed(error)) => Some(error.to_string()),
        _ => None,
    };
    let problem = failed(state.model.id().untyped())
        .map(SessionProblem::ModelLoad)
        .or_else(|| failed(state.plan.id().untyped()).map(SessionProblem::PlanLoad));
    if let Some(problem) = problem {
        problems.write(problem);
        state.phase = Phase::Failed;
        return;
    }
    let (Some(model), Some(plan)) = (models.get(&state.model), plans.get(&state.plan)) else { return };
    let graph = model.graph().clone();
    let staged = match StagedModel::new(model.clone(), plan.clone()) {
        Ok(staged) => staged,
        Err(StagingError::Plan { error, .. }) => {
            problems.write(SessionProblem::PlanDoesNotFit(error));
            state.phase = Phase::Failed;
            return;
        }
        Err(error @ (StagingError::Model(_) | StagingError::NoCutShape(_))) => {
            problems.write(SessionProblem::ModelLoad(error.to_string()));
            state.phase = Phase::Failed;
            return;
        }
    };
    state.pipeline = crate::session::pipeline::Pipeline::new(state.settings.max_in_flight, state.settings.max_reruns);
    state.input_dtypes = staged.input_dtypes().to_vec();
    let stages = staged.declared_stages();
    state.staged = Some(Arc::new(Mutex::new(staged)));
    state.reassign();
    let batch_one = |g: &Graph| -> Vec<usize> { g.input.dims.iter().map(|d| d.unwrap_or(1)).collect() };
    let started = Instant::now();
    let graphs: Vec<Arc<Graph>> = std::iter::once(graph).chain(stages).collect();
    let model = state.model.id();
    state.phase = Phase::Calibrating { pending: graphs.len() };
    for graph in graphs {
        let input = Tensor::zeros(batch_one(&graph));
        let entity = commands.spawn_empty().id();
        queue.push(StageJob { tag: JobTag::Calibration, entity, model, graph, input: input.into(), started, output: JobOutput::default(), reply: None });
    }
}

/// Takes this frame's outcomes with tags matching `wanted` out of the shared list.
fn take_outcomes(outcomes: &mut StageOutcomes, wanted: impl Fn(&JobTag) -> bool) -> Vec<JobOutcome> {
    outcomes.0.extract_if(.., |o| wanted(&o.tag)).collect()
}

/// Counts finished warm-up runs; after the last, joins the room with this GPU's capabilities
/// and the time the warm-up took.
#[expect(clippy::too_many_arguments, reason = "a Bevy system: its parameters are what it reads and writes")]
pub(super) fn join_when_calibrated(
    mut commands: Commands,
    mut state: ResMut<Distributed>,
    mut outcomes: ResMut<StageOutcomes>,
    models: Res<Assets<Model>>,
    gpu: Option<Res<GpuCapabilities>>,
    queue: Res<JobQueue>,
    mut problems: MessageWriter<SessionProblem>,
    #[cfg(feature = "fault-injection")] faults: Res<crate::testing::FaultInjection>,
) {
    for outcome in take_outcomes(&mut outcomes, |tag| *tag == JobTag::Calibration) {
        commands.entity(outcome.entity).despawn();
        if let Err(error) = outcome.result {
            problems.write(SessionProblem::CalibrationFailed(error.into()));
        }
        let Phase::Calibrating { pending } = &mut state.phase else { continue };
        *pending -= 1;
        if *pending > 0 {
            continue;
        }
        let Some(model) = models.get(&state.model) else { continue };
        let gpu = gpu.as_deref().cloned().unwrap_or_default();
        let calibration = outcome.started.elapsed();
        state.set_own_prior(calibration);
        let config = session_config(&state.settings, model.hash(), gpu, calibration);
        let mut session = PeerSession::connect(config);
        let Some(staged) = state.staged.clone() else { continue };
        let server = StageServer {
            staged,
            model: state.model.id(),
            input_dtypes: state.input_dtypes.clone(),
            jobs: queue.0.clone(),
            sender: session.tensor_sender(),
            problems: state.served_problems.0.clone(),
            quota: StageQuota::new(state.settings.max_served_per_peer),
            max_batch: state.settings.max_served_batch,
            budget: state.settings.serve_budget.map(|budget| BudgetGate::new(budget, queue.0.clone(), Instant::now())),
            #[cfg(feature = "fault-injection")]
            wrong_results: faults.wrong_served_results.clone(),
            #[cfg(all(feature = "fault-injection", not(target_arch = "wasm32")))]
            slowdown: faults.served_stage_slowdown.clone(),
        };
        if let Some(gate) = &server.budget {
            commands.insert_resource(gate.clone());
        }
        if state.settings.role.serves() {
            session.serve_stage_inputs(server.into_handler());
        }
        commands.insert_resource(session);
        state.phase = Phase::Running;
    }
}

fn session_config(settings: &PeerSessionPlugin, model_hash: [u8; 32], gpu: GpuCapabilities, calibration: Duration) -> SessionConfig {
    let capabilities = Capabilities {
        adapter: gpu.adapter,
        backend: gpu.backend,
        shader_f16: gpu.shader_f16,
        subgroup_sizes: gpu.subgroup_sizes,
        max_storage_binding: gpu.max_storage_binding,
        calibration_us: calibration.as_micros().min(u32::MAX as u128) as u32,
    };
    let mut link = LinkSettings::new(settings.room_key.clone(), settings.role.permissions(), model_hash, capabilities);
    link.authority = settings.authority.clone();
    let mut config = SessionConfig::new(settings.room_url.clone(), link);
    config.expected_peers = settings.expected_peers;
    config.ice_servers = settings.ice_servers.clone();
    config.signaling_roots = settings.signaling_roots.clone();
    config
}

/// Stages of this owner's requests that ran on this GPU: the pipeline moves on, or the
/// request fails.
pub(super) fn take_local_stage_results(
    mut commands: Commands,
    mut state: ResMut<Distributed>,
    mut outcomes: ResMut<StageOutcomes>,
    mut problems: MessageWriter<SessionProblem>,
) {
    let now = Instant::now();
    for outcome in take_outcomes(&mut outcomes, |tag| matches!(tag, JobTag::PipelineStage { .. })) {
        let JobTag::PipelineStage { request, stage } = outcome.tag else { continue };
        match outcome.result {
            Ok(output) => {
                let run = outcome.finished.saturating_duration_since(outcome.started);
                state.pipeline.note_local_run(request, stage, run, outcome.gpu);
                let assignment = state.assignment.clone();
                // As of its readback, when a chain it starts was sent its output.
                match state.pipeline.stage_finished(request, stage, Executor::Local, output, &assignment, outcome.finished) {
                    Ok(next) => state.actions.extend(next),
                    Err(stale) => {
                        problems.write(SessionProblem::StaleResult(stale));
                    }
                }
            }
            Err(error) => {
                let assignment = state.assignment.clone();
                let next = state.pipeline.abort(request, &assignment, now);
                state.actions.extend(next);
                if let Some(tracked) = state.tracked.remove(&request) {
                    state.fail_tracked(&mut commands, tracked, error.into());
                }
            }
        }
    }
}

/// Reports what went wrong with stages served for peers: they run and return off the frame
/// (see [`super::stage_server`]), and only their problems come through here.
pub(super) fn report_served_stage_problems(state: Res<Distributed>, mut problems: MessageWriter<SessionProblem>) {
    for problem in state.served_problems.1.try_iter() {
        problems.write(problem);
    }
}

/// Starts the others' stages that waited for this frame's serving budget, if there is one.
pub(super) fn release_budgeted_stages(gate: Option<Res<BudgetGate>>) {
    if let Some(gate) = gate {
        gate.release(Instant::now());
    }
}

/// Lets the session handle what arrived, send what is due and notice lost peers; keeps the
/// events for this crate's systems ([`PolledEvents`]) and reports each as a [`PeerSessionEvent`].
pub(super) fn poll_session(session: Option<ResMut<PeerSession>>, mut polled: ResMut<PolledEvents>, mut events: MessageWriter<PeerSessionEvent>) {
    polled.0.clear();
    let Some(mut session) = session else { return };
    polled.0.extend(session.poll(Instant::now()));
    events.write_batch(polled.0.iter().cloned().map(PeerSessionEvent));
}

/// Acts on the session's events: players join and leave the assignment, sends are counted or
/// re-run elsewhere, received stage outputs move the pipeline on.
pub(super) fn handle_session_events(
    mut state: ResMut<Distributed>,
    session: Option<Res<PeerSession>>,
    polled: Res<PolledEvents>,
    mut problems: MessageWriter<SessionProblem>,
) {
    let now = Instant::now();
    for event in &polled.0 {
        match event {
            SessionEvent::PeerTrusted { peer, capabilities, permissions } => {
                if permissions.contains(Permissions::SUBMIT_REQUESTS) {
                    state.first_work.0.get_or_insert(now);
                }
                if permissions.contains(Permissions::RUN_STAGES) && !state.excluded.contains(peer) {
                    state.add_player(*peer, Duration::from_micros(capabilities.calibration_us as u64));
                }
            }
            SessionEvent::PeerLost { peer, .. } => state.drop_player(*peer, now),
            // A trusted peer's answer was dropped: that one request is re-run. Anything else
            // dropped names no request (its frame did not verify); a lost answer among it is
            // re-run when its stage is overdue.
            SessionEvent::Rejected { peer, lost_output: Some(request), .. } if session.as_ref().is_some_and(|s| s.links().link(*peer).is_some_and(|l| l.state == LinkState::Trusted)) => {
                state.rerun_request(*request, *peer, now);
            }
            // A peer dropped the input of a stage of ours (it did not trust the sender at that
            // moment): that request runs again now rather than at its stage timeout.
            SessionEvent::StageInputDropped { peer, request, .. } => state.rerun_request(*request, *peer, now),
            // A tensor with a trace carries the output of a stage this peer ran for another
            // (passed on along a chain, or back); one without is this owner's own input.
            // Shared tensors' values and collectives' contributions are their own business.
            SessionEvent::TensorSent { tensor, .. } | SessionEvent::SendFailed { tensor, .. } if matches!(tensor.direction, Direction::Shared | Direction::Collective) => {}
            SessionEvent::TensorSent { tensor, .. } if !tensor.trace.is_empty() => {
                state.stages_served += 1;
                state.first_work.1.get_or_insert(now);
            }
            SessionEvent::TensorSent { tensor, bytes } => {
                if let Some(t) = state.tracked.get_mut(&tensor.request) {
                    t.bytes += bytes;
                }
            }
            SessionEvent::SendFailed { tensor, error } => {
                let (request, stage, error) = (tensor.request, tensor.stage, error.clone());
                match tensor.direction {
                    Direction::StageInput => {
                        problems.write(SessionProblem::CannotSendStage { request, stage: stage as usize, error });
                        // The peer is gone: drop it and run the stage elsewhere.
                        state.drop_player(tensor.peer, now);
                    }
                    Direction::StageOutput => {
                        problems.write(SessionProblem::CannotReturnStage { request, stage, error });
                    }
                    Direction::Shared | Direction::Collective => {}
                }
            }
            SessionEvent::Tensor(received) => match received.direction {
                // Taken on the transport's side by the stage server, which starts the stage at
                // once; shared tensors' values by the shared tensors.
                Direction::StageInput | Direction::Shared | Direction::Collective => {}
                Direction::StageOutput => {
                    if let Some(problem) = state.take_stage_output(received, now) {
                        problems.write(problem);
                    }
                }
            },
            _ => {}
        }
    }
}

/// Re-runs overdue stages, admits waiting requests up to K, and carries out every action
/// decided this frame: local stages become jobs, remote ones are sent, finished requests become
/// predictions.
pub(super) fn advance_pipeline(
    mut commands: Commands,
    mut state: ResMut<Distributed>,
    mut session: Option<ResMut<PeerSession>>,
    mut queue: ResMut<JobQueue>,
    results: Res<JobResults>,
    mut problems: MessageWriter<SessionProblem>,
    top_k: Res<TopK>,
) {
    let now = Instant::now();
    let state = &mut *state;
    let assignment = state.assignment.clone();
    let late = state.pipeline.overdue_peers(state.settings.stage_timeout, now);
    let overdue = state.pipeline.rerun_overdue(state.settings.stage_timeout, &assignment, now);
    state.actions.extend(overdue);
    if let Some(policy) = state.settings.work_stealing {
        let (pipeline, staged, capacity) = (&mut state.pipeline, &state.staged, &state.capacity);
        let predict = |stage: usize, executors: &[Executor], batch: usize| predicted_handover(staged.as_deref()?, capacity, stage, executors, batch);
        let copies = pipeline.steal_from_stragglers(&policy, &assignment, predict, now);
        state.stolen.copied += copies.len() as u64;
        state.actions.extend(copies);
    }
    for (peer, timeouts) in state.count_timeouts(&late, now) {
        problems.write(SessionProblem::PeerExcluded { peer, timeouts });
    }
    let assignment = state.assignment.clone();
    let admitted = state.pipeline.start_waiting(&assignment, now);
    state.actions.extend(admitted);
    while let Some(action) = state.actions.pop() {
        match action {
            PipelineAction::Run { request, stage, executor, input, onward } => match (executor, input) {
                (Executor::Peer(peer), StageInput::Tensor(input)) => {
                    let dtype = state.input_dtypes[stage];
                    let own = session.as_deref().and_then(PeerSession::id);
                    // A chain needs this peer's id as its owner; until it has one, stages go one at a time.
                    let onward = own.filter(|_| !onward.is_empty()).map(|owner| Onward { owner, route: onward, ticket: None });
                    let sent = SentTensor { peer, request, stage: stage as u16, direction: Direction::StageInput, onward, trace: Vec::new(), shared: None, collective: None };
                    let queued = session.as_deref_mut().ok_or(SendError::SocketClosed).and_then(|s| s.send_tensor(sent, input, dtype));
                    if let Err(error) = queued {
                        problems.write(SessionProblem::CannotSendStage { request, stage, error });
                        // The transport is gone: drop the peer and run the stage elsewhere.
                        state.drop_player(peer, now);
                    }
                }
                // A local stage, or one that reads the request's own input on this GPU.
                (_, input) => {
                    let job = state.stage_graph(stage, input.batch()).and_then(|graph| Ok((graph, state.job_input(request, input)?)));
                    let (graph, input) = match job {
                        Ok(job) => job,
                        Err(error) => {
                            let next = state.pipeline.abort(request, &assignment, now);
                            state.actions.extend(next);
                            if let Some(tracked) = state.tracked.remove(&request) {
                                state.fail_tracked(&mut commands, tracked, error);
                            }
                            continue;
                        }
                    };
                    let reply = pass_on(&onward, request, stage, state, session.as_deref(), &results);
                    if reply.is_none() {
                        state.pipeline.keep_local_output(request);
                    }
                    queue.push(StageJob {
                        tag: JobTag::PipelineStage { request, stage },
                        entity: state.tracked.get(&request).map_or(Entity::PLACEHOLDER, |t| t.entity),
                        model: state.model.id(),
                        graph,
                        input,
                        started: now,
                        output: JobOutput::default(),
                        reply,
                    });
                }
            },
            PipelineAction::Outpaced { request: _, stage, executors, by, waited, batch } => {
                state.note_outpaced(stage, &executors, by, waited, batch);
            }
            PipelineAction::Abandoned { request, reruns } => {
                if let Some(tracked) = state.tracked.remove(&request) {
                    state.fail_tracked(&mut commands, tracked, InferenceError::Abandoned { reruns });
                }
            }
            PipelineAction::Finished { request, output, stages, reruns, in_flight, handovers } => {
                let Some(tracked) = state.tracked.remove(&request) else { continue };
                state.measure(&stages, batch_of_tensor(&output));
                state.finished_traffic.record(tracked.bytes);
                if let Some(part) = tracked.part {
                    state.finish_slice(&mut commands, part, output, stages, reruns, in_flight, top_k.0);
                    continue;
                }
                // Every remote hand-over, from the last input this player computed itself.
                if let Some(run) = CheckedRun::of(&handovers).filter(|_| state.spot_check_due()) {
                    let input = as_sent(&run.input, state.input_dtypes[run.first]);
                    if let Ok(graph) = state.stage_graph(run.first, batch_of_tensor(&input)) {
                        queue.push(spot_check_job(state, request, run.first, tracked.entity, graph, input, now));
                        let check = SpotCheck { entity: tracked.entity, run, locals: Vec::new(), stages, reruns, in_flight, started: now };
                        state.checks.insert(request, check);
                        continue;
                    }
                }
                deliver(&mut commands, tracked.entity, Prediction::split(output, top_k.0, in_flight, stages, reruns));
            }
        }
    }
}

/// Runs the next stage of each spot check on this GPU; once its last stage is back, delivers
/// the prediction if this GPU agrees with every output the peers returned, or else excludes
/// the peers blamed ([`judge`]) and delivers its own output.
pub(super) fn continue_spot_checks(
    mut commands: Commands,
    mut state: ResMut<Distributed>,
    mut outcomes: ResMut<StageOutcomes>,
    mut queue: ResMut<JobQueue>,
    mut problems: MessageWriter<SessionProblem>,
    top_k: Res<TopK>,
) {
    let now = Instant::now();
    for outcome in take_outcomes(&mut outcomes, |tag| matches!(tag, JobTag::SpotCheck { .. })) {
        let JobTag::SpotCheck { request, stage } = outcome.tag else { continue };
        let Some(check) = state.checks.get_mut(&request) else { continue };
        let (entity, last) = (check.entity, check.run.last());
        let ran = match outcome.result {
            Ok(local) => {
                if check.run.ends_handover(stage) {
                    check.locals.push(local.clone());
                }
                match stage < last {
                    true => {
                        let input = as_sent(&local, state.input_dtypes[stage + 1]);
                        match state.stage_graph(stage + 1, batch_of_tensor(&input)) {
                            Ok(graph) => {
                                queue.push(spot_check_job(&state, request, stage + 1, entity, graph, input, now));
                                continue;
                            }
                            Err(error) => Err(error),
                        }
                    }
                    false => Ok(()),
                }
            }
            Err(error) => Err(error.into()),
        };
        let check = state.checks.remove(&request).expect("present above");
        let Some(claimed) = check.run.claimed_output().cloned() else { continue };
        let output = match ran {
            Ok(()) => {
                let verdict = judge(&check.run, &check.locals, &state.input_dtypes);
                let blamed = state.conclude_check(&check.run, &verdict, now);
                match (verdict, check.locals.last()) {
                    (Verdict::Mismatch { .. }, Some(local)) => {
                        problems.write(SessionProblem::ResultMismatch { request, peers: blamed });
                        local.clone()
                    }
                    _ => claimed,
                }
            }
            Err(error) => {
                problems.write(SessionProblem::SpotCheckFailed { request, error });
                claimed
            }
        };
        let latency = check.in_flight + now.saturating_duration_since(check.started);
        deliver(&mut commands, check.entity, Prediction::split(output, top_k.0, latency, check.stages, check.reruns));
    }
}

/// The job that runs `stage` of `request` again on this GPU for a spot check.
fn spot_check_job(state: &Distributed, request: u64, stage: usize, entity: Entity, graph: Arc<Graph>, input: Tensor, now: Instant) -> StageJob {
    StageJob { tag: JobTag::SpotCheck { request, stage }, entity, model: state.model.id(), graph, input: input.into(), started: now, output: JobOutput::default(), reply: None }
}

/// For a local stage whose output starts the chain `onward`: a job reply that sends the output
/// to the chain's first peer the moment it is read back, then hands the outcome to the main
/// world as usual. `None` where there is no such chain, or no session to send it through.
fn pass_on(onward: &[PeerUuid], request: u64, stage: usize, state: &Distributed, session: Option<&PeerSession>, results: &JobResults) -> Option<JobReply> {
    let (&first, route) = onward.split_first()?;
    let session = session?;
    let owner = session.id()?;
    let dtype = *state.input_dtypes.get(stage + 1)?;
    let next = SentTensor { peer: first, request, stage: (stage + 1) as u16, direction: Direction::StageInput, onward: Some(Onward { owner, route: route.to_vec(), ticket: None }), trace: Vec::new(), shared: None, collective: None };
    let (sender, main_world) = (session.tensor_sender(), results.sender.clone());
    Some(JobReply(Arc::new(move |outcome: JobOutcome| {
        if let Ok(output) = &outcome.result {
            // A failure comes back as a `SendFailed` event, which re-runs the chain elsewhere.
            let _ = sender.send(next.clone(), output.clone(), dtype);
        }
        let _ = main_world.send(outcome);
    })))
}

/// Requests neither handed out, failed, claimed by the pipeline, nor pinned to this peer (by
/// [`LocalOnly`], or by an output kept on this GPU).
type UnclaimedRequest = (Without<Submitted>, Without<SplitRequest>, Without<InferenceFailed>, Without<LocalOnly>, OutputNotKeptOnGpu);

/// Marks requests for the split model so that the single-peer path leaves them to the pipeline.
pub(super) fn claim_requests(mut commands: Commands, mut state: ResMut<Distributed>, session: Option<Res<PeerSession>>, requests: Query<(Entity, &InferenceRequest), UnclaimedRequest>) {
    if !state.settings.role.asks() || state.stage_count() == 0 {
        return;
    }
    for (entity, request) in &requests {
        if request.model.id() != state.model.id() {
            continue;
        }
        state.admit(entity, &request.input, session.as_deref());
        commands.entity(entity).insert((SplitRequest, Submitted));
    }
}
