//! [`Distributed`]: the session's main-world state: the model's stages, the pipeline of split
//! requests, the players and what this peer serves for others.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bevy::prelude::*;

use crossbeam_channel::{Receiver, Sender};

use super::spot_check::{CheckedRun, SpotCheck, Verdict};
use super::spot_check_tally::{SpotCheckTallies, SpotCheckTally};
use super::{Placement, PeerSessionPlugin, SessionProblem};
use crate::job::{ImageJobInput, JobInput};
use crate::model::ir::Graph;
use crate::model::{Model, PartitionPlan, StagedModel};
use crate::net::PeerUuid;
use crate::session::capacity::{Capacity, MeasuredSpeed};
use crate::session::pipeline::{assign_stages, Pipeline, PipelineAction, RequestId, StageAssignment, StageInput, PlayerSpeed};
use crate::schedule::stage_record::{Executor, StageRecord};
use crate::schedule::InferenceError;
use crate::tensor::{Tensor, TransferDtype};

/// Where the session is.
pub(super) enum Phase {
    /// Waiting for the model and the plan to load.
    Loading,
    /// The warm-up runs are on the GPU; `pending` of them have yet to finish.
    Calibrating { pending: usize },
    /// The room is joined.
    Running,
    /// The model or plan was unusable (a [`super::SessionProblem`] said why).
    Failed,
}

/// One split request on the owner.
pub(super) struct Tracked {
    /// The request's entity.
    pub entity: Entity,
    /// Bytes on the wire for it so far.
    pub bytes: u64,
    /// Which slice of a split batch it is, if it is one.
    pub part: Option<SlicePart>,
    /// The image its stage 0 reads on this GPU, for an image request.
    pub image: Option<ImageJobInput>,
}

/// Which slice of which split request a pipeline request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SlicePart {
    /// The split request (the id of its first slice).
    pub batch: RequestId,
    /// The slice's place among them.
    pub index: usize,
}

/// A split request's slices as they come back.
pub(super) struct SplitBatch {
    /// The request's entity.
    pub entity: Entity,
    /// Each slice's output, once in.
    pub parts: Vec<Option<Tensor>>,
    /// The slices' stage records so far.
    pub stages: Vec<StageRecord>,
    /// The slices' reruns so far.
    pub reruns: u32,
    /// The slowest slice's time in flight so far.
    pub latency: std::time::Duration,
}

/// The split requests in flight, by the id of their first slice.
#[derive(Default)]
pub(super) struct SplitBatches(pub HashMap<RequestId, SplitBatch>);

/// The traffic of the requests finished so far, as running totals (constant memory however
/// long the session runs), for the `peer` example's summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestTraffic {
    /// Requests finished.
    pub requests: u64,
    /// Bytes on the wire for them: frames this owner sent (headers and MACs included) plus
    /// the payloads it received back.
    pub bytes: u64,
}

impl RequestTraffic {
    /// Counts one more finished request of `bytes`.
    pub fn record(&mut self, bytes: u64) {
        self.requests += 1;
        self.bytes += bytes;
    }

    /// Bytes per finished request (0 before the first).
    pub fn bytes_per_request(&self) -> u64 {
        self.bytes / self.requests.max(1)
    }
}

/// How work stealing went for this player's requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StolenWork {
    /// Remote hand-overs copied to another player predicted to finish them sooner.
    pub copied: u64,
    /// Copies that came back before the straggler's answer (which, should it come, is
    /// dropped).
    pub won: u64,
}

/// State of the split: the model's stages, the pipeline, the request map.
#[derive(Resource)]
pub struct Distributed {
    pub(super) settings: PeerSessionPlugin,
    pub(super) phase: Phase,
    pub(super) model: Handle<Model>,
    pub(super) plan: Handle<PartitionPlan>,
    /// The model cut into the plan's stages, once both have loaded.
    pub(super) staged: Option<Arc<Mutex<StagedModel>>>,
    pub(super) input_dtypes: Vec<TransferDtype>,
    pub(super) pipeline: Pipeline,
    pub(super) assignment: StageAssignment,
    /// The players that run stages for this one.
    pub(super) players: HashSet<PeerUuid>,
    /// How fast each executor is, as measured from the stages that came back.
    pub(super) capacity: Capacity,
    /// The speed each player was placed by, for [`PeerSessionPlugin::replan_drift`].
    placed_at: HashMap<PeerUuid, f64>,
    /// How often the stages were placed again after a speed drifted.
    pub replans: u64,
    /// Hand-overs copied to another player predicted to finish them sooner, and how often such
    /// a copy came back first (see [`PeerSessionPlugin::work_stealing`]).
    pub stolen: StolenWork,
    /// Timeouts in a row, per player.
    pub(super) timeouts: HashMap<PeerUuid, u32>,
    /// Players excluded for timing out too often or failing a spot check: they get no more
    /// work in this session.
    pub(super) excluded: HashSet<PeerUuid>,
    /// Requests whose remote stages this GPU is running again before they are delivered.
    pub(super) checks: HashMap<RequestId, SpotCheck>,
    /// How each peer fared in the spot checks.
    spot_checks: SpotCheckTallies,
    pub(super) tracked: HashMap<RequestId, Tracked>,
    /// Requests whose batch was split, until all their slices are in.
    pub(super) splits: SplitBatches,
    pub(super) next_request: RequestId,
    /// Pipeline actions decided this frame, carried out by `advance_pipeline`.
    pub(super) actions: Vec<PipelineAction>,
    /// The traffic of the finished requests, in total.
    pub finished_traffic: RequestTraffic,
    /// Stages this peer ran for other peers (counted when their output is on the wire).
    pub stages_served: u64,
    /// When the first player that asks trusted this one, and when this one's first stage for
    /// another player was on the wire: how soon a player that joins gets work.
    pub first_work: (Option<bevy::platform::time::Instant>, Option<bevy::platform::time::Instant>),
    /// Problems with stages served for peers, from the transport's and the render side's
    /// threads.
    pub(super) served_problems: (Sender<SessionProblem>, Receiver<SessionProblem>),
}

impl Distributed {
    pub(super) fn new(settings: PeerSessionPlugin) -> Self {
        Self {
            pipeline: Pipeline::new(settings.max_in_flight, settings.max_reruns),
            assignment: assign_stages(0, &[]),
            settings,
            phase: Phase::Loading,
            model: Handle::default(),
            plan: Handle::default(),
            staged: None,
            input_dtypes: Vec::new(),
            players: HashSet::new(),
            capacity: Capacity::default(),
            placed_at: HashMap::new(),
            replans: 0,
            stolen: StolenWork::default(),
            timeouts: HashMap::new(),
            excluded: HashSet::new(),
            checks: HashMap::new(),
            spot_checks: SpotCheckTallies::default(),
            tracked: HashMap::new(),
            splits: SplitBatches::default(),
            next_request: first_request_id(),
            served_problems: crossbeam_channel::unbounded(),
            actions: Vec::new(),
            finished_traffic: RequestTraffic::default(),
            stages_served: 0,
            first_work: (None, None),
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

    /// How many stages the model is cut into (0 until it has loaded).
    pub(super) fn stage_count(&self) -> usize {
        self.staged.as_ref().map_or(0, |staged| lock(staged).stage_count())
    }

    /// A fresh id for a request this player coordinates.
    pub(super) fn take_request_id(&mut self) -> RequestId {
        let id = self.next_request;
        self.next_request = id.wrapping_add(1);
        id
    }

    /// What the render side runs `request`'s stage on: the tensor, or the request's image on
    /// this GPU.
    pub(super) fn job_input(&self, request: RequestId, input: StageInput) -> Result<JobInput, InferenceError> {
        match input {
            StageInput::Tensor(tensor) => Ok(JobInput::Tensor(tensor)),
            StageInput::OnThisGpu { .. } => match self.tracked.get(&request).and_then(|t| t.image.clone()) {
                Some(image) => Ok(JobInput::Image(image)),
                None => Err(InferenceError::ImageLoad("the request's image is no longer held".into())),
            },
        }
    }

    /// Stage `stage`'s graph for an input whose batch (first axis) is `batch`.
    pub(super) fn stage_graph(&self, stage: usize, batch: usize) -> Result<Arc<Graph>, InferenceError> {
        let staged = self.staged.as_ref().expect("stages run only once the model is cut");
        Ok(lock(staged).stage(stage, batch)?)
    }

    /// The shape stage `stage`'s output must have for `request` (`None` for a request not in
    /// flight or a stage past the plan).
    pub(super) fn expected_output(&self, request: RequestId, stage: usize) -> Option<Vec<usize>> {
        let batch = self.pipeline.batch_of(request)?;
        let shapes = lock(self.staged.as_ref()?).boundary_shapes(batch).ok()?;
        shapes.stage_output(stage).map(<[usize]>::to_vec)
    }

    /// Every executor's measured speed and share of the stage work, this player first.
    pub fn measured_speeds(&self) -> Vec<MeasuredSpeed> {
        self.capacity.speeds()
    }

    /// Places the stages on the players known now, by their speeds (see [`Placement`]).
    pub(super) fn reassign(&mut self) {
        let speed = |peer: PeerUuid| match self.settings.placement {
            Placement::Measured => self.capacity.speed(Executor::Peer(peer)).unwrap_or(f64::NAN),
            Placement::Equal => 1.0,
        };
        let players: Vec<PlayerSpeed> = self.players.iter().map(|&peer| PlayerSpeed { peer, speed: speed(peer) }).collect();
        self.placed_at = players.iter().map(|w| (w.peer, w.speed)).collect();
        self.assignment = assign_stages(self.stage_count(), &players).routed(self.settings.routing);
    }

    /// A player joined, with the calibration time its hello claims: the prior of its speed.
    pub(super) fn add_player(&mut self, peer: PeerUuid, calibration: std::time::Duration) {
        if let Some(flops) = self.model_flops() {
            self.capacity.set_prior(Executor::Peer(peer), flops, calibration);
        }
        self.players.insert(peer);
        self.reassign();
        self.pipeline.welcome(peer);
    }

    /// This player calibrated in `calibration`: the prior of its own speed.
    pub(super) fn set_own_prior(&mut self, calibration: std::time::Duration) {
        if let Some(flops) = self.model_flops() {
            self.capacity.set_prior(Executor::Local, flops, calibration);
        }
    }

    /// The whole model's FLOPs at batch 1 (what calibration runs).
    fn model_flops(&self) -> Option<u64> {
        let flops = lock(self.staged.as_ref()?).stage_flops(1).ok()?;
        Some(flops.iter().sum())
    }

    /// Measures the executors of a finished request's stages (its output's batch is
    /// `batch`); places the stages again if a player's speed drifted past
    /// [`PeerSessionPlugin::replan_drift`].
    pub(super) fn measure(&mut self, records: &[StageRecord], batch: usize) {
        let Some(flops) = self.staged.as_ref().and_then(|staged| lock(staged).stage_flops(batch).ok()) else { return };
        self.capacity.observe_request(records, &flops);
        self.replan_if_drifted();
    }

    /// Places the stages again if a player's share of the players' speed drifted past
    /// [`PeerSessionPlugin::replan_drift`] from the share it was placed by.
    fn replan_if_drifted(&mut self) {
        let now = |peer: PeerUuid| self.capacity.speed(Executor::Peer(peer));
        if self.settings.placement == Placement::Measured && shares_drifted(&self.placed_at, now, self.settings.replan_drift) {
            self.replans += 1;
            self.reassign();
        }
    }

    /// A copy of the hand-over from `stage` came back from `by` before `executors` answered,
    /// after they held it for `waited` (at `batch`): the one of them (other than `by`) that
    /// stalled is measured no faster than that ([`Capacity::observe_outpaced`]).
    pub(super) fn note_outpaced(&mut self, stage: usize, executors: &[Executor], by: PeerUuid, waited: std::time::Duration, batch: usize) {
        self.stolen.won += 1;
        let Some(flops) = self.staged.as_ref().and_then(|staged| lock(staged).stage_flops(batch).ok()) else { return };
        let late: Vec<(Executor, u64)> = (stage..).zip(executors).filter(|(_, e)| **e != Executor::Peer(by)).map(|(s, &e)| (e, flops.get(s).copied().unwrap_or(0))).collect();
        self.capacity.observe_outpaced(&late, waited);
        self.replan_if_drifted();
    }

    /// Counts a timeout against each of `late` (the players of hand-overs that timed out);
    /// returns those that reached [`PeerSessionPlugin::max_timeouts`] in a row, now excluded.
    pub(super) fn count_timeouts(&mut self, late: &[PeerUuid], now: bevy::platform::time::Instant) -> Vec<(PeerUuid, u32)> {
        let mut excluded = Vec::new();
        for &peer in late {
            self.capacity.observe_timeout(Executor::Peer(peer));
            let count = self.timeouts.entry(peer).or_default();
            *count += 1;
            if *count >= self.settings.max_timeouts && !self.excluded.contains(&peer) {
                excluded.push((peer, *count));
                self.exclude(peer, now);
            }
        }
        if !late.is_empty() {
            self.reassign();
        }
        excluded
    }

    /// Gives `peer` no more work in this session and re-runs what it holds elsewhere; whether
    /// it was not excluded before.
    pub(super) fn exclude(&mut self, peer: PeerUuid, now: bevy::platform::time::Instant) -> bool {
        let newly = self.excluded.insert(peer);
        if newly {
            self.drop_player(peer, now);
        }
        newly
    }

    /// Whether a finished split request is one to spot-check: one in
    /// [`PeerSessionPlugin::spot_check_every`], drawn at random, so that no peer can tell
    /// which of its results will be checked.
    pub(super) fn spot_check_due(&mut self) -> bool {
        let mut draw = [0; 8];
        // Without randomness every request is checked rather than none.
        let draw = crate::secret::random_bytes(&mut draw).map_or(0, |()| u64::from_le_bytes(draw));
        is_drawn(draw, self.settings.spot_check_every)
    }

    /// A spot check of `run` found `verdict`: every peer of it is counted as checked, those
    /// blamed as failed, and excluded (returned).
    pub(super) fn conclude_check(&mut self, run: &CheckedRun, verdict: &Verdict, now: bevy::platform::time::Instant) -> Vec<PeerUuid> {
        let blamed = match verdict {
            Verdict::Agree => Vec::new(),
            Verdict::Mismatch { peers, .. } => peers.clone(),
        };
        self.spot_checks.record(&run.peers(), &blamed);
        for &peer in &blamed {
            if self.exclude(peer, now) {
                self.spot_checks.excluded(peer);
            }
        }
        blamed
    }

    /// How each peer fared in this player's spot checks, in order of their ids.
    pub fn spot_checks(&self) -> Vec<(PeerUuid, SpotCheckTally)> {
        self.spot_checks.all()
    }

    /// Forgets a player (lost, or it refused a frame) and re-runs what it held elsewhere.
    /// Re-runs `request` where `peer` holds it (see [`Pipeline::rerun_request`]): an answer it
    /// sent was dropped, or it dropped the input.
    pub(super) fn rerun_request(&mut self, request: RequestId, peer: PeerUuid, now: bevy::platform::time::Instant) {
        let reruns = self.pipeline.rerun_request(request, peer, &self.assignment, now);
        self.actions.extend(reruns);
    }

    pub(super) fn drop_player(&mut self, peer: PeerUuid, now: bevy::platform::time::Instant) {
        self.players.remove(&peer);
        self.capacity.forget(Executor::Peer(peer));
        self.reassign();
        let assignment = self.assignment.clone();
        let reruns = self.pipeline.rerun_peer(peer, &assignment, now);
        self.actions.extend(reruns);
    }
}

/// Whether a request whose random `draw` this is is checked, at one in `every` (never at 0).
fn is_drawn(draw: u64, every: u32) -> bool {
    every > 0 && draw.is_multiple_of(every as u64)
}

/// Where a session's request ids start: at random, so that ids from an earlier session (a
/// late or replayed stage output) do not name this session's requests. Counting from 0 where
/// no randomness is to be had only weakens that.
fn first_request_id() -> RequestId {
    let mut bytes = [0; 8];
    match crate::secret::random_bytes(&mut bytes) {
        // Leaves room to count up without wrapping.
        Ok(()) => u64::from_le_bytes(bytes) >> 1,
        Err(_) => 0,
    }
}

/// How long the hand-over from `stage` on `executors` should take at `batch`, from their
/// measured speeds in `capacity` (transfers included); `None` until every one has a speed.
pub(super) fn predicted_handover(staged: &Mutex<StagedModel>, capacity: &Capacity, stage: usize, executors: &[Executor], batch: usize) -> Option<std::time::Duration> {
    let flops = lock(staged).stage_flops(batch).ok()?;
    let seconds = executors.iter().enumerate().map(|(i, &e)| Some(*flops.get(stage + i)? as f64 / capacity.speed(e)?)).sum::<Option<f64>>()?;
    std::time::Duration::try_from_secs_f64(seconds).ok()
}

/// Locks state the session shares across threads (the staged model, a stage quota, a serving
/// budget); a panic while it was locked leaves it usable (caches of stage graphs, counters and
/// a bucket of GPU time, each consistent after every step).
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The batch of a stage's input tensor (its first axis).
pub(super) fn batch_of_tensor(tensor: &crate::tensor::Tensor) -> usize {
    tensor.shape().first().copied().unwrap_or(1)
}

/// Whether a player's share of the players' total speed moved by more than `drift` (a
/// fraction of it) from its share in `placed` (the speeds the stages were placed by), or a
/// speed was unknown when they were placed. Placement depends only on the ratios of the speeds:
/// players that slow down or speed up together (the whole room busier for a moment, a frame
/// that waited) keep the same placement, and so does a lone player.
pub(crate) fn shares_drifted(placed: &HashMap<PeerUuid, f64>, now: impl Fn(PeerUuid) -> Option<f64>, drift: f64) -> bool {
    if placed.values().any(|speed| !speed.is_finite() || *speed <= 0.0) {
        return true;
    }
    let current: Vec<(f64, f64)> = placed.iter().map(|(&peer, &at)| (at, now(peer).filter(|s| s.is_finite() && *s > 0.0).unwrap_or(at))).collect();
    let (placed_total, now_total) = current.iter().fold((0.0, 0.0), |(p, n), (at, speed)| (p + at, n + speed));
    current.iter().any(|(at, speed)| ((speed / now_total) / (at / placed_total) - 1.0).abs() > drift)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::StagedModel;
    use crate::net::RoomKey;
    use crate::session::PeerRole;
    use crate::tensor::Tensor;

    #[test]
    fn finished_traffic_is_a_running_total_that_holds_no_record_per_request() {
        let mut traffic = RequestTraffic::default();
        assert_eq!(traffic.bytes_per_request(), 0);
        for bytes in [6_000, 7_000, 8_000] {
            traffic.record(bytes);
        }
        assert_eq!((traffic.requests, traffic.bytes, traffic.bytes_per_request()), (3, 21_000, 7_000));
        assert_eq!(std::mem::size_of_val(&traffic), 16, "two counters, whatever the number of requests");
    }

    /// The fashion model cut in three (int8 cuts), with `players` (equally fast) placed: the
    /// session state the unit tests of `session` start from.
    pub(in crate::session) fn fashion_session(players: &[PeerUuid]) -> Distributed {
        let path = |p: &str| format!("{}/assets/{p}", env!("CARGO_MANIFEST_DIR"));
        let model = Model::from_onnx_bytes(&std::fs::read(path("models/fashion_mobilenetv2.onnx")).unwrap()).unwrap();
        let plan = PartitionPlan::from_ron(&std::fs::read_to_string(path("plans/fashion_3_int8.plan.ron")).unwrap()).unwrap();
        let settings = PeerSessionPlugin::new("ws://127.0.0.1:3536/test", RoomKey::from_bytes([1; 32]), PeerRole::Player, "m", "p");
        let mut state = Distributed::new(settings);
        state.staged = Some(Arc::new(Mutex::new(StagedModel::new(model, plan).unwrap())));
        state.players.extend(players);
        state.reassign();
        state
    }

    #[test]
    fn a_stage_output_must_have_the_shape_of_the_next_cut_for_the_request_s_batch() {
        let mut state = fashion_session(&[]);
        state.pipeline.submit(7, Tensor::zeros(vec![2, 1, 28, 28]));
        let assignment = state.assignment.clone();
        state.pipeline.start_waiting(&assignment, bevy::platform::time::Instant::now());

        let boundaries = lock(state.staged.as_ref().unwrap()).boundary_shapes(2).unwrap();
        assert_eq!(state.expected_output(7, 0).as_deref(), boundaries.stage_input(1));
        assert_eq!(state.expected_output(7, 2), Some(vec![2, 10]), "the last stage's is the model's output");
        assert_eq!(state.expected_output(7, 3), None, "past the plan");
        assert_eq!(state.expected_output(8, 0), None, "a request not in flight");
    }

    fn session(spot_check_every: u32) -> Distributed {
        let mut settings = PeerSessionPlugin::new("ws://127.0.0.1:3536/test", RoomKey::from_bytes([1; 32]), PeerRole::Player, "m", "p");
        settings.spot_check_every = spot_check_every;
        Distributed::new(settings)
    }

    #[test]
    fn requests_to_spot_check_are_drawn_at_random_one_in_n_not_every_n_th() {
        let mut state = session(4);
        let due: Vec<bool> = (0..4000).map(|_| state.spot_check_due()).collect();
        let checked = due.iter().filter(|d| **d).count();
        assert!((800..1200).contains(&checked), "about one in 4: {checked} of 4000");
        let every_4th: Vec<bool> = (1..=4000).map(|i| i % 4 == 0).collect();
        assert!(due != every_4th, "a peer must not be able to tell which request is checked");
        assert!(due.windows(2).any(|w| w[0] && w[1]), "two in a row happen");
        let mut never = session(0);
        assert!((0..100).all(|_| !never.spot_check_due()), "0: never");
        assert!(is_drawn(12, 4) && !is_drawn(13, 4) && is_drawn(7, 1) && !is_drawn(0, 0));
    }

    #[test]
    fn a_spot_check_counts_every_peer_it_ran_and_excludes_only_those_blamed() {
        let [w1, w2, w3] = peers(3)[..] else { unreachable!() };
        let mut state = session(1);
        let now = bevy::platform::time::Instant::now();
        let claimed = |peers: Vec<PeerUuid>, stage| crate::session::spot_check::CheckedHandover { stage, last: stage, peers, claimed: Tensor::zeros(vec![1]) };
        let run = CheckedRun { first: 1, input: Tensor::zeros(vec![1]), handovers: vec![claimed(vec![w1], 1), claimed(vec![w2, w3], 2)] };
        assert_eq!(state.conclude_check(&run, &Verdict::Agree, now), []);
        assert_eq!(state.conclude_check(&run, &Verdict::Mismatch { stage: 1, peers: vec![w1] }, now), [w1]);
        assert_eq!(state.conclude_check(&run, &Verdict::Mismatch { stage: 1, peers: vec![w1] }, now), [w1], "blamed again, excluded once");
        let tally = |checks, failures, exclusions| SpotCheckTally { checks, failures, exclusions };
        assert_eq!(state.spot_checks(), [(w1, tally(3, 2, 1)), (w2, tally(3, 0, 0)), (w3, tally(3, 0, 0))]);
        assert!(state.excluded.contains(&w1) && !state.excluded.contains(&w2));
    }

    fn peers(n: u8) -> Vec<PeerUuid> {
        (1..=n).map(|i| PeerUuid([i; 16])).collect()
    }

    #[test]
    fn players_that_slow_down_together_keep_their_placement() {
        let [a, b] = peers(2)[..] else { unreachable!() };
        let placed = HashMap::from([(a, 100.0), (b, 50.0)]);
        let halved = |peer: PeerUuid| Some(if peer == a { 50.0 } else { 25.0 });
        assert!(!shares_drifted(&placed, halved, 0.25), "both at half speed: the same shares");
        let alone = HashMap::from([(a, 100.0)]);
        assert!(!shares_drifted(&alone, |_| Some(10.0), 0.25), "a lone player has every stage whatever its speed");
    }

    #[test]
    fn a_player_whose_share_moves_past_the_drift_is_placed_again() {
        let [a, b] = peers(2)[..] else { unreachable!() };
        let placed = HashMap::from([(a, 100.0), (b, 100.0)]);
        // a's share 0.5 -> 0.6 (+20 %), b's 0.5 -> 0.4 (-20 %): within 25 %.
        assert!(!shares_drifted(&placed, |p| Some(if p == a { 150.0 } else { 100.0 }), 0.25));
        // a's share 0.5 -> 2/3 (+33 %), b's 0.5 -> 1/3 (-33 %): past it.
        assert!(shares_drifted(&placed, |p| Some(if p == a { 200.0 } else { 100.0 }), 0.25));
        assert!(shares_drifted(&placed, |p| Some(if p == a { 100.0 } else { 50.0 }), 0.25), "one player at half speed");
    }

    #[test]
    fn a_placement_made_without_a_speed_is_made_again_once_there_is_one() {
        let [a, b] = peers(2)[..] else { unreachable!() };
        let placed = HashMap::from([(a, f64::NAN), (b, 100.0)]);
        assert!(shares_drifted(&placed, |_| Some(100.0), 0.25));
        let known = HashMap::from([(a, 100.0), (b, 100.0)]);
        assert!(!shares_drifted(&known, |_| None, 0.25), "no measurement yet: the speeds placed by still hold");
    }
}
