//! The owner's bookkeeping for split requests, as plain logic: which executor runs each
//! stage, up to K requests in flight, chains of remote stages (each peer sends its output
//! straight to the next stage's peer, and only the last one's comes back), and re-running from
//! the last input the owner holds when a peer of a chain is lost or its result is
//! rejected, so that no request is lost.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bevy::platform::time::Instant;

use thiserror::Error;

use crate::net::auth::PeerUuid;
use crate::net::codec::{StageTiming, MAX_ROUTE};
use crate::schedule::stage_record::{Executor, HopTiming, StageRecord};
use crate::tensor::Tensor;

mod stage_input;
mod steal;
pub use stage_input::StageInput;
pub use steal::StealPolicy;

/// The owner's id for a request, also carried on the wire.
pub type RequestId = u64;

/// The peers among `executors`, each once, in order of their ids.
pub fn peers_of(executors: &[Executor]) -> Vec<PeerUuid> {
    let mut peers: Vec<PeerUuid> = executors.iter().filter_map(|e| e.peer()).collect();
    peers.sort();
    peers.dedup();
    peers
}

/// How many turns a [`StageAssignment`]'s table holds: divisible by 2 to 6, so that up to six
/// equally fast players get exactly equal turns.
const TURNS: usize = 60;

/// How a request's remote stages are spread over the players' turns (see [`StageAssignment`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// Every remote stage takes a turn of its own: a request's remote stages run as a chain
    /// over several players, each passing its output on to the next.
    PerStage,
    /// A request takes one turn for all of its remote stages: they run on one player, with no
    /// hop between players, and requests go to the players in proportion to their speeds.
    /// Where transfers cost more than compute (a fast GPU) this saves a hop per stage; where
    /// compute is everything (lavapipe) it costs nothing (BENCHMARKS.md). With work stealing, a
    /// slow player's hand-overs are copied whole and its copies lose, so that it is never
    /// measured at its own speed.
    PerRequest,
}

/// Which executor runs each stage of the plan: stage 0 where the request is (it reads the
/// request's input), every later stage on a player picked from a table of turns in which each
/// player appears in proportion to its speed (and at least once, so that a slow player keeps
/// being measured), a turn per stage or per request ([`Routing`]). Without players every stage
/// is local.
#[derive(Clone, Debug, PartialEq)]
pub struct StageAssignment {
    stages: usize,
    /// The players with their share of the turns, fastest first.
    shares: Vec<(PeerUuid, f64)>,
    /// The turns: player after player, interleaved by smooth weighted round robin.
    turns: Vec<PeerUuid>,
    routing: Routing,
}

impl StageAssignment {
    /// How many stages the plan has.
    pub fn stage_count(&self) -> usize {
        self.stages
    }

    /// The players with their planned share of the remote stage runs (0 to 1), fastest first.
    pub fn shares(&self) -> &[(PeerUuid, f64)] {
        &self.shares
    }

    /// Whether `peer` is one of the players placed.
    pub fn places(&self, peer: PeerUuid) -> bool {
        self.shares.iter().any(|(placed, _)| *placed == peer)
    }

    /// The same players and turns, with `routing`.
    pub fn routed(self, routing: Routing) -> Self {
        Self { routing, ..self }
    }

    /// The executors of `request`'s stages on its `attempt`-th run (0 for the first; a rerun
    /// moves on to other turns, so that it does not go back to the same players).
    pub fn for_request(&self, request: RequestId, attempt: u32) -> Vec<Executor> {
        let remote = self.stages.saturating_sub(1) as u64;
        let turn = request.wrapping_add(attempt as u64) % TURNS as u64;
        let turn_of = |stage: u64| match self.routing {
            Routing::PerStage => (turn * remote + stage - 1) % TURNS as u64,
            Routing::PerRequest => turn,
        };
        (0..self.stages)
            .map(|s| match s {
                0 => Executor::Local,
                _ if self.turns.is_empty() => Executor::Local,
                _ => Executor::Peer(self.turns[turn_of(s as u64) as usize]),
            })
            .collect()
    }
}

/// A player that may run stages, with its speed (any unit, the same for all: only the ratios
/// matter).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlayerSpeed {
    /// The player.
    pub peer: PeerUuid,
    /// How fast it is, e.g. its measured FLOP/s.
    pub speed: f64,
}

/// Places `stages` stages on `players` in proportion to their speeds (see [`StageAssignment`]),
/// a turn per stage ([`StageAssignment::routed`] for another [`Routing`]).
/// A player without a positive, finite speed counts as the slowest one.
pub fn assign_stages(stages: usize, players: &[PlayerSpeed]) -> StageAssignment {
    let slowest = players.iter().map(|w| w.speed).filter(|s| s.is_finite() && *s > 0.0).fold(f64::INFINITY, f64::min);
    let speed = |w: &PlayerSpeed| if w.speed.is_finite() && w.speed > 0.0 { w.speed } else if slowest.is_finite() { slowest } else { 1.0 };
    let mut by_speed: Vec<(PeerUuid, f64)> = players.iter().map(|w| (w.peer, speed(w))).collect();
    by_speed.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    by_speed.dedup_by_key(|w| w.0);
    let total: f64 = by_speed.iter().map(|w| w.1).sum();
    // Integer weights (thousandths of the total), so that equal speeds tie exactly; every
    // player gets at least one turn.
    let weights: Vec<i64> = by_speed.iter().map(|w| ((w.1 / total * 1000.0).round() as i64).max((1000 + TURNS as i64 - 1) / TURNS as i64)).collect();
    let weight_sum: i64 = weights.iter().sum();
    let mut credit = vec![0_i64; weights.len()];
    let turns = match by_speed.is_empty() {
        true => Vec::new(),
        false => (0..TURNS)
            .map(|_| {
                for (c, w) in credit.iter_mut().zip(&weights) {
                    *c += w;
                }
                let best = (0..credit.len()).fold(0, |best, i| if credit[i] > credit[best] { i } else { best });
                credit[best] -= weight_sum;
                by_speed[best].0
            })
            .collect(),
    };
    let shares = by_speed.iter().map(|&(peer, _)| (peer, turns.iter().filter(|p| **p == peer).count() as f64 / TURNS as f64)).collect();
    StageAssignment { stages, shares, turns, routing: Routing::PerStage }
}

/// What the owner must do next.
#[derive(Clone, Debug, PartialEq)]
pub enum PipelineAction {
    /// Run `stage` of `request` on `executor` with `input`.
    Run {
        /// The request.
        request: RequestId,
        /// The stage.
        stage: usize,
        /// Where.
        executor: Executor,
        /// The stage's input (a request's own input on this GPU runs here, whatever `executor`
        /// says).
        input: StageInput,
        /// The peers of the chain that this stage's output goes on to directly, stage after
        /// stage; the last one's output comes back. For a remote stage, the rest of its chain;
        /// for a local stage followed by a chain, that chain, which its output should start
        /// the moment it is read back (else [`Pipeline::keep_local_output`]). Empty otherwise.
        onward: Vec<PeerUuid>,
    },
    /// The request was given up: it was re-run as often as allowed without a result.
    Abandoned {
        /// The request.
        request: RequestId,
        /// How often it was re-run.
        reruns: u32,
    },
    /// A hand-over's copy on another player (see [`StealPolicy`]) came back first: the
    /// executors it was taken from had held it for `waited` without an answer, a lower bound on
    /// their time for its stages (their answer, should it come, is stale).
    Outpaced {
        /// The request.
        request: RequestId,
        /// The hand-over's first stage.
        stage: usize,
        /// Who held each of its stages.
        executors: Vec<Executor>,
        /// Who ran the copy (where it was also one of `executors`, its part was not late).
        by: PeerUuid,
        /// How long they held it.
        waited: Duration,
        /// The batch of the hand-over's input.
        batch: usize,
    },
    /// The last stage finished: the request's output.
    Finished {
        /// The request.
        request: RequestId,
        /// The model output.
        output: Tensor,
        /// One record per stage run that counted, in order.
        stages: Vec<StageRecord>,
        /// Stage runs that were repeated (lost peer, rejected data, timeout).
        reruns: u32,
        /// From admission into the pipeline (stage 0 starting) to the output arriving.
        in_flight: Duration,
        /// Every hand-over that counted, in order of their stages: each one's first stage,
        /// input, the players that ran its stages and the output this player got back (for a
        /// spot check of every remote hand-over; the last one's output is `output`).
        handovers: Vec<Handover>,
    },
}

/// One hand-over of a request: stages `stage..stage + executors.len()` run from `input`, and
/// what came back.
#[derive(Clone, Debug, PartialEq)]
pub struct Handover {
    /// Its first stage.
    pub stage: usize,
    /// The first stage's input, as this player held it.
    pub input: StageInput,
    /// Who ran each of its stages (a chain that returned early: the stages up to its output).
    pub executors: Vec<Executor>,
    /// The output of its last stage, as this player received it.
    pub output: Tensor,
}

impl Handover {
    /// Its last stage.
    pub fn last(&self) -> usize {
        self.stage + self.executors.len().max(1) - 1
    }
}

/// A stage result that does not match what the owner is waiting for.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StaleResult {
    /// The request is not in flight (finished, or never sent).
    #[error("request {0} is not in flight")]
    UnknownRequest(RequestId),
    /// The result is for another stage, or from an executor the stage is not assigned to.
    #[error("request {request}: stage {stage} from {from:?} was not expected")]
    Unexpected {
        /// The request.
        request: RequestId,
        /// The stage reported.
        stage: usize,
        /// Who reported it.
        from: Executor,
    },
}

/// A request in flight: the hand-over it waits for covers stages `stage..=last`, run by
/// `executors` (one per stage, a chain when there are several), on its `route`.
struct Active {
    /// Who runs each of its stages: fixed when it is admitted, so that a request in flight
    /// finishes on the assignment it started with; chosen again only when it is re-run.
    route: Vec<Executor>,
    stage: usize,
    last: usize,
    executors: Vec<Executor>,
    input: StageInput,
    stage_started: Instant,
    admitted: Instant,
    /// How the stages of the hand-over went where they ran, as reported so far.
    hops: HashMap<usize, HopTiming>,
    /// The hand-over's output's transfer back, where it came from a peer.
    returned: Option<Duration>,
    records: Vec<StageRecord>,
    /// The hand-overs that came back, in order.
    done: Vec<Handover>,
    reruns: u32,
    /// The chain a local stage's output was told to go on to by itself, once it is read back.
    passed_on: Option<Vec<Executor>>,
    /// A copy of the hand-over run by another player (see [`StealPolicy`]), while it waits.
    stolen: Option<steal::StolenCopy>,
    /// The players the hand-over was copied to so far: a copy that is late itself is copied
    /// again, to a player not tried yet.
    copied_to: Vec<PeerUuid>,
}

impl Active {
    /// Hands `input` over for `stage` on the request's route: a remote stage followed only by
    /// remote stages starts a chain to the end, and a local stage followed by such a chain
    /// passes its output on to it by itself. `None` where the hand-over was already made that
    /// way.
    fn hand_over(&mut self, request: RequestId, stage: usize, input: StageInput, now: Instant) -> Option<PipelineAction> {
        let executors = &self.route.clone();
        let remote_from = |s: usize| s < executors.len() && executors[s..].iter().all(|e| *e != Executor::Local);
        // A chain's last output carries a timing per stage: at most MAX_ROUTE stages.
        let chain_end = |s: usize| (executors.len() - 1).min(s + MAX_ROUTE - 1);
        self.last = if remote_from(stage) { chain_end(stage) } else { stage };
        let handed = executors[stage..=self.last].to_vec();
        let already_sent = self.passed_on.take().is_some_and(|chain| chain == handed);
        self.stage = stage;
        self.executors = handed;
        self.input = input.clone();
        self.stage_started = now;
        self.hops.clear();
        self.returned = None;
        self.stolen = None;
        self.copied_to.clear();
        let next_chain = match self.executors[0] {
            Executor::Local if remote_from(stage + 1) => executors[stage + 1..=chain_end(stage + 1)].to_vec(),
            Executor::Local => Vec::new(),
            Executor::Peer(_) => self.executors[1..].to_vec(),
        };
        if self.executors[0] == Executor::Local && !next_chain.is_empty() {
            self.passed_on = Some(next_chain.clone());
        }
        let onward = next_chain.iter().filter_map(|e| e.peer());
        (!already_sent).then(|| PipelineAction::Run { request, stage, executor: self.executors[0], input, onward: onward.collect() })
    }

    /// The batch (first axis) of the hand-over's input.
    fn batch(&self) -> usize {
        self.input.batch()
    }

    fn executor_of(&self, stage: usize) -> Option<Executor> {
        stage.checked_sub(self.stage).and_then(|i| self.executors.get(i)).copied()
    }
}

/// Requests waiting and in flight on the owner.
pub struct Pipeline {
    max_in_flight: usize,
    max_reruns: u32,
    /// Each with the player its remote stages are pinned to, if any (a slice of a split batch).
    waiting: VecDeque<(RequestId, StageInput, Option<PeerUuid>)>,
    active: HashMap<RequestId, Active>,
    /// Players that joined and have not been handed a stage yet (see [`Self::welcome`]).
    newcomers: Vec<PeerUuid>,
}

impl Pipeline {
    /// A pipeline keeping at most `max_in_flight` requests (K) in flight, each re-run at most
    /// `max_reruns` times before it is abandoned.
    pub fn new(max_in_flight: usize, max_reruns: u32) -> Self {
        Self { max_in_flight: max_in_flight.max(1), max_reruns, waiting: VecDeque::new(), active: HashMap::new(), newcomers: Vec::new() }
    }

    /// `peer` joined: the next request admitted runs its stage 1 there, even as one request
    /// beyond K in flight (never more), so that a newcomer serves (and is measured) within a
    /// request's first stage of joining instead of waiting for a slot and for its turns to come
    /// round; however small its share, every player runs a stage early on.
    pub fn welcome(&mut self, peer: PeerUuid) {
        if !self.newcomers.contains(&peer) {
            self.newcomers.push(peer);
        }
    }

    /// Drops `request` (its stage failed where nothing else can run it) and lets a waiting
    /// request take its slot.
    pub fn abort(&mut self, request: RequestId, assignment: &StageAssignment, now: Instant) -> Vec<PipelineAction> {
        match self.active.remove(&request) {
            Some(_) => self.start_waiting(assignment, now),
            None => {
                self.waiting.retain(|(id, _, _)| *id != request);
                Vec::new()
            }
        }
    }

    /// The peers of every remote hand-over that has waited longer than `timeout` (those
    /// [`Self::rerun_overdue`] re-runs), once per hand-over they belong to.
    pub fn overdue_peers(&self, timeout: Duration, now: Instant) -> Vec<PeerUuid> {
        let mut peers: Vec<PeerUuid> = self
            .active
            .values()
            .filter(|a| a.executors[0] != Executor::Local && now - a.stage_started > timeout)
            .flat_map(|a| peers_of(&a.executors))
            .collect();
        peers.sort();
        peers
    }

    /// Queues a request.
    pub fn submit(&mut self, request: RequestId, input: Tensor) {
        self.waiting.push_back((request, input.into(), None));
    }

    /// Queues a request whose input only this player can read (an image on its GPU, which
    /// its stage 0 reads there): `shape` is the tensor stage 0 takes. Its later stages are
    /// placed as any other request's, and their inputs travel as usual.
    pub fn submit_on_this_gpu(&mut self, request: RequestId, shape: Vec<usize>) {
        self.waiting.push_back((request, StageInput::OnThisGpu { shape }, None));
    }

    /// Queues `request` with all its remote stages on `player` (a slice of a split batch, see
    /// [`super::batch_split`]); should the player be gone when it starts, or the request be
    /// re-run, its stages are placed as any other request's.
    pub fn submit_to(&mut self, request: RequestId, input: Tensor, player: PeerUuid) {
        self.waiting.push_back((request, input.into(), Some(player)));
    }

    /// The batch (first axis) of `request`'s input, while it is in flight.
    pub fn batch_of(&self, request: RequestId) -> Option<usize> {
        self.active.get(&request).map(Active::batch)
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.active.len()
    }

    /// Requests waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Starts waiting requests while fewer than K are in flight.
    pub fn start_waiting(&mut self, assignment: &StageAssignment, now: Instant) -> Vec<PipelineAction> {
        let mut actions = Vec::new();
        // Only newcomers still placed get a welcome (one that left or was excluded does not).
        self.newcomers.retain(|&newcomer| assignment.places(newcomer));
        loop {
            let beyond_k = self.active.len() >= self.max_in_flight;
            let welcome = self.newcomers.first().copied().filter(|_| assignment.stages > 1);
            // One beyond K at most, and only for a welcome, which a slice pinned to its player
            // cannot give.
            let pinned_first = self.waiting.front().is_some_and(|(_, _, pinned)| pinned.is_some());
            if beyond_k && (self.active.len() > self.max_in_flight || welcome.is_none() || pinned_first) {
                break;
            }
            let Some((request, input, pinned)) = self.waiting.pop_front() else { break };
            let mut route = assignment.for_request(request, 0);
            if let Some(player) = pinned.filter(|&pinned| assignment.places(pinned)) {
                route[1..].fill(Executor::Peer(player));
            } else if let Some(newcomer) = welcome {
                match assignment.routing {
                    Routing::PerStage => route[1] = Executor::Peer(newcomer),
                    Routing::PerRequest => route[1..].fill(Executor::Peer(newcomer)),
                }
                self.newcomers.remove(0);
            }
            let mut active = Active {
                route,
                stage: 0,
                last: 0,
                executors: Vec::new(),
                input: input.clone(),
                stage_started: now,
                admitted: now,
                hops: HashMap::new(),
                returned: None,
                records: Vec::new(),
                done: Vec::new(),
                reruns: 0,
                passed_on: None,
                stolen: None,
                copied_to: Vec::new(),
            };
            actions.extend(active.hand_over(request, 0, input, now));
            self.active.insert(request, active);
        }
        actions
    }

    /// `stage`'s output arrived from `from`: the next stage starts, or the request finishes
    /// (and a waiting request takes its slot). Within a chain, an output from before its end
    /// (a peer that could not pass it on) moves the request on from there.
    pub fn stage_finished(
        &mut self,
        request: RequestId,
        stage: usize,
        from: Executor,
        output: Tensor,
        assignment: &StageAssignment,
        now: Instant,
    ) -> Result<Vec<PipelineAction>, StaleResult> {
        let active = self.active.get_mut(&request).ok_or(StaleResult::UnknownRequest(request))?;
        // The copy's answer: the thief's output of the hand-over's last stage (where the thief
        // also runs that stage of the chain, the chain's answer can only come later).
        let outpaced = match active.stolen.as_ref().and_then(|copy| copy.executor_of(active.stage, stage)) {
            Some(thief) if thief == from && stage == active.last => Some(active.take_stolen(now)),
            _ => None,
        };
        if stage > active.last || active.executor_of(stage) != Some(from) {
            return Err(StaleResult::Unexpected { request, stage, from });
        }
        let span = now - active.stage_started;
        let hop = |s: usize| active.hops.get(&s).copied().unwrap_or_default();
        let runs: Option<Duration> = (active.stage..=stage).map(|s| hop(s).run).sum();
        let transfers = match from {
            Executor::Peer(_) => runs.map(|runs| span.saturating_sub(runs)),
            Executor::Local => None,
        };
        let records: Vec<StageRecord> = (active.stage..=stage)
            .map(|s| StageRecord {
                stage: s,
                executor: active.executor_of(s).expect("within the hand-over"),
                duration: span,
                hop: hop(s),
                returned: if s == stage { active.returned } else { None },
                transfers,
                span: stage + 1 - active.stage,
            })
            .collect();
        active.records.extend(records);
        let ran = active.executors[..=stage - active.stage].to_vec();
        active.done.push(Handover { stage: active.stage, input: active.input.clone(), executors: ran, output: output.clone() });
        let batch = active.batch();
        let outpaced = outpaced.zip(from.peer()).map(|((executors, waited), by)| PipelineAction::Outpaced { request, stage: active.stage, executors, by, waited, batch });
        let mut actions: Vec<PipelineAction> = outpaced.into_iter().collect();
        if stage + 1 == active.route.len() {
            let done = self.active.remove(&request).expect("present");
            actions.push(PipelineAction::Finished { request, output, stages: done.records, reruns: done.reruns, in_flight: now - done.admitted, handovers: done.done });
            actions.extend(self.start_waiting(assignment, now));
        } else {
            actions.extend(active.hand_over(request, stage + 1, output.into(), now));
        }
        Ok(actions)
    }

    /// Notes how the stages of `request` went on the peers that ran them (an output's trace)
    /// and how its transfer back went (`returned`), before the output is passed to
    /// [`Self::stage_finished`]; timings of stages outside the hand-over the request waits for
    /// are ignored.
    pub fn note_remote_runs(&mut self, request: RequestId, trace: &[StageTiming], returned: Option<Duration>) {
        if let Some(active) = self.active.get_mut(&request) {
            for timing in trace {
                let stage = timing.stage as usize;
                if (active.stage..=active.last).contains(&stage) {
                    active.hops.insert(stage, reported_timing(timing));
                }
            }
            active.returned = returned;
        }
    }

    /// Notes how `request`'s `stage` went on this player's GPU (`run` from the job's hand-over
    /// to its readback, `gpu` of it on the GPU), before its output is passed to
    /// [`Self::stage_finished`].
    pub fn note_local_run(&mut self, request: RequestId, stage: usize, run: Duration, gpu: Option<Duration>) {
        if let Some(active) = self.active.get_mut(&request).filter(|a| a.executor_of(stage) == Some(Executor::Local)) {
            active.hops.insert(stage, HopTiming { network: None, run: Some(run), gpu });
        }
    }

    /// The output of `request`'s local stage could not be passed on by itself: the next
    /// hand-over is made as an action when the output arrives.
    pub fn keep_local_output(&mut self, request: RequestId) {
        if let Some(active) = self.active.get_mut(&request) {
            active.passed_on = None;
        }
    }

    /// Re-runs, on the current assignment, every hand-over in flight that `peer` has a stage
    /// of (lost, or it sent data that was rejected), from the input this owner holds;
    /// requests whose later stages it was to run are routed again on the current assignment.
    pub fn rerun_peer(&mut self, peer: PeerUuid, assignment: &StageAssignment, now: Instant) -> Vec<PipelineAction> {
        let gone = Executor::Peer(peer);
        for active in self.active.values_mut() {
            active.settle_copy_without(gone, now);
        }
        for (&request, active) in self.active.iter_mut().filter(|(_, a)| !a.executors.contains(&gone)) {
            if active.route[active.stage..].contains(&gone) {
                let mut route = assignment.for_request(request, active.reruns);
                // The stages before the one it waits for stay as they ran.
                route[..=active.stage].copy_from_slice(&active.route[..=active.stage]);
                active.route = route;
            }
        }
        self.rerun_where(|_, a| a.executors.contains(&gone), assignment, now)
    }

    /// Re-runs `request` where `peer` was running it and what it sent back for it was dropped
    /// (a chunk that did not open, broke a reassembly rule or was not permitted). Nothing where
    /// the request is not in `peer`'s hands: a peer cannot have another's work re-run by naming
    /// it.
    pub fn rerun_request(&mut self, request: RequestId, peer: PeerUuid, assignment: &StageAssignment, now: Instant) -> Vec<PipelineAction> {
        let held = Executor::Peer(peer);
        self.rerun_where(|id, a| id == request && a.executors.contains(&held), assignment, now)
    }

    /// Re-runs every remote hand-over that has waited longer than `timeout`.
    pub fn rerun_overdue(&mut self, timeout: Duration, assignment: &StageAssignment, now: Instant) -> Vec<PipelineAction> {
        self.rerun_where(|_, a| a.executors[0] != Executor::Local && now - a.stage_started > timeout, assignment, now)
    }

    fn rerun_where(&mut self, affected: impl Fn(RequestId, &Active) -> bool, assignment: &StageAssignment, now: Instant) -> Vec<PipelineAction> {
        let mut actions = Vec::new();
        let mut ids: Vec<RequestId> = self.active.iter().filter(|(id, a)| affected(**id, a)).map(|(id, _)| *id).collect();
        ids.sort();
        let mut abandoned = false;
        for request in ids {
            let active = self.active.get_mut(&request).expect("listed above");
            if active.reruns >= self.max_reruns {
                let reruns = active.reruns;
                self.active.remove(&request);
                actions.push(PipelineAction::Abandoned { request, reruns });
                abandoned = true;
                continue;
            }
            active.reruns += 1;
            active.route = assignment.for_request(request, active.reruns);
            let (stage, input) = (active.stage, active.input.clone());
            actions.extend(active.hand_over(request, stage, input, now));
        }
        if abandoned {
            actions.extend(self.start_waiting(assignment, now));
        }
        actions
    }
}

/// What a player reported of a stage it ran.
fn reported_timing(timing: &StageTiming) -> HopTiming {
    let micros = |us: u32| Duration::from_micros(us as u64);
    HopTiming { network: timing.network_us.map(micros), run: Some(micros(timing.run_us)), gpu: timing.gpu_us.map(micros) }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
