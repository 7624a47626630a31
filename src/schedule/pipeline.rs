//! The coordinator's bookkeeping for split requests, as plain logic: which executor runs each
//! stage, up to K requests in flight, and re-running a stage when its peer is lost or its
//! result is rejected, so that no request is lost.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bevy::platform::time::Instant;

use thiserror::Error;

use crate::net::auth::PeerUuid;
use crate::tensor::Tensor;

/// The coordinator's id for a request, also carried on the wire.
pub type RequestId = u64;

/// Who runs a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Executor {
    /// This peer's GPU.
    Local,
    /// Another player's GPU.
    Peer(PeerUuid),
}

impl std::fmt::Display for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Executor::Local => f.write_str("local"),
            Executor::Peer(peer) => write!(f, "peer {peer}"),
        }
    }
}

/// Which executor runs each stage of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageAssignment {
    /// One executor per stage.
    pub executors: Vec<Executor>,
}

/// A worker that may run stages, with its measured calibration time (lower is faster).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerSpeed {
    /// The worker.
    pub peer: PeerUuid,
    /// Microseconds its calibration block took.
    pub calibration_us: u32,
}

/// Stage 0 runs where the request is (it reads the request's input); later stages go to the
/// workers, fastest first, in turn. Without workers every stage is local.
pub fn assign_stages(stages: usize, workers: &[WorkerSpeed]) -> StageAssignment {
    let mut by_speed = workers.to_vec();
    by_speed.sort_by_key(|w| (w.calibration_us, w.peer));
    let executors = (0..stages)
        .map(|s| match s {
            0 => Executor::Local,
            _ if by_speed.is_empty() => Executor::Local,
            _ => Executor::Peer(by_speed[(s - 1) % by_speed.len()].peer),
        })
        .collect();
    StageAssignment { executors }
}

/// What the coordinator must do next.
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
        /// The stage's input.
        input: Tensor,
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
    },
}

/// How one stage of a request went.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StageRecord {
    /// The stage.
    pub stage: usize,
    /// Who ran it.
    pub executor: Executor,
    /// From handing the input over to the output being back at the coordinator.
    pub duration: Duration,
    /// For a remote stage, the part of `duration` spent on the peer that ran it, as it
    /// reported; the rest is the two hops.
    pub remote_run: Option<Duration>,
}

impl StageRecord {
    /// Time spent travelling to and from the peer (both hops), for remote stages.
    pub fn hops(&self) -> Option<Duration> {
        self.remote_run.map(|run| self.duration.saturating_sub(run))
    }
}

/// A stage result that does not match what the coordinator is waiting for.
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

struct Active {
    stage: usize,
    executor: Executor,
    input: Tensor,
    stage_started: Instant,
    admitted: Instant,
    remote_run: Option<Duration>,
    records: Vec<StageRecord>,
    reruns: u32,
}

/// Requests waiting and in flight on the coordinator.
pub struct Pipeline {
    max_in_flight: usize,
    waiting: VecDeque<(RequestId, Tensor)>,
    active: HashMap<RequestId, Active>,
}

impl Pipeline {
    /// A pipeline keeping at most `max_in_flight` requests (K) in flight.
    pub fn new(max_in_flight: usize) -> Self {
        Self { max_in_flight: max_in_flight.max(1), waiting: VecDeque::new(), active: HashMap::new() }
    }

    /// Queues a request.
    pub fn submit(&mut self, request: RequestId, input: Tensor) {
        self.waiting.push_back((request, input));
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
        while self.active.len() < self.max_in_flight {
            let Some((request, input)) = self.waiting.pop_front() else { break };
            let executor = assignment.executors[0];
            actions.push(PipelineAction::Run { request, stage: 0, executor, input: input.clone() });
            self.active.insert(request, Active { stage: 0, executor, input, stage_started: now, admitted: now, remote_run: None, records: Vec::new(), reruns: 0 });
        }
        actions
    }

    /// A stage's output arrived from `from`: the next stage starts, or the request finishes
    /// (and a waiting request takes its slot).
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
        if active.stage != stage || active.executor != from {
            return Err(StaleResult::Unexpected { request, stage, from });
        }
        let remote_run = active.remote_run.take();
        active.records.push(StageRecord { stage, executor: from, duration: now - active.stage_started, remote_run });
        let mut actions = Vec::new();
        if stage + 1 == assignment.executors.len() {
            let done = self.active.remove(&request).expect("present");
            actions.push(PipelineAction::Finished { request, output, stages: done.records, reruns: done.reruns, in_flight: now - done.admitted });
            actions.extend(self.start_waiting(assignment, now));
        } else {
            active.stage = stage + 1;
            active.executor = assignment.executors[stage + 1];
            active.input = output.clone();
            active.stage_started = now;
            actions.push(PipelineAction::Run { request, stage: stage + 1, executor: active.executor, input: output });
        }
        Ok(actions)
    }

    /// Notes how long `from` says it took for `stage` of `request`, before its output is passed
    /// to [`Self::stage_finished`]; ignored unless that is where the request is now.
    pub fn note_remote_run(&mut self, request: RequestId, stage: usize, from: Executor, run: Duration) {
        if let Some(active) = self.active.get_mut(&request)
            && active.stage == stage
            && active.executor == from
        {
            active.remote_run = Some(run);
        }
    }

    /// Re-runs, on the current assignment, every stage in flight on `peer` (lost, or it sent
    /// data that was rejected).
    pub fn rerun_peer(&mut self, peer: PeerUuid, assignment: &StageAssignment, now: Instant) -> Vec<PipelineAction> {
        self.rerun_where(|a| a.executor == Executor::Peer(peer), assignment, now)
    }

    /// Re-runs every remote stage that has waited longer than `timeout`.
    pub fn rerun_overdue(&mut self, timeout: Duration, assignment: &StageAssignment, now: Instant) -> Vec<PipelineAction> {
        self.rerun_where(|a| a.executor != Executor::Local && now - a.stage_started > timeout, assignment, now)
    }

    fn rerun_where(&mut self, affected: impl Fn(&Active) -> bool, assignment: &StageAssignment, now: Instant) -> Vec<PipelineAction> {
        let mut actions = Vec::new();
        let mut ids: Vec<RequestId> = self.active.iter().filter(|(_, a)| affected(a)).map(|(id, _)| *id).collect();
        ids.sort();
        for request in ids {
            let active = self.active.get_mut(&request).expect("listed above");
            active.executor = assignment.executors[active.stage];
            active.stage_started = now;
            active.reruns += 1;
            actions.push(PipelineAction::Run { request, stage: active.stage, executor: active.executor, input: active.input.clone() });
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W1: PeerUuid = PeerUuid([1; 16]);
    const W2: PeerUuid = PeerUuid([2; 16]);

    fn t(v: f32) -> Tensor {
        Tensor::new(vec![1], vec![v]).unwrap()
    }

    fn three_stages() -> StageAssignment {
        assign_stages(3, &[WorkerSpeed { peer: W2, calibration_us: 900 }, WorkerSpeed { peer: W1, calibration_us: 500 }])
    }

    #[test]
    fn stage_zero_is_local_and_faster_workers_come_first() {
        assert_eq!(three_stages().executors, [Executor::Local, Executor::Peer(W1), Executor::Peer(W2)]);
        assert_eq!(assign_stages(3, &[]).executors, [Executor::Local; 3]);
        assert_eq!(assign_stages(3, &[WorkerSpeed { peer: W1, calibration_us: 1 }]).executors, [Executor::Local, Executor::Peer(W1), Executor::Peer(W1)]);
    }

    #[test]
    fn at_most_k_requests_are_in_flight_and_finishing_one_starts_the_next() {
        let a = three_stages();
        let now = Instant::now();
        let mut p = Pipeline::new(2);
        for r in 0..3 {
            p.submit(r, t(r as f32));
        }
        assert_eq!(p.start_waiting(&a, now).len(), 2);
        assert_eq!((p.in_flight(), p.waiting()), (2, 1));
        let next = p.stage_finished(0, 0, Executor::Local, t(10.0), &a, now).unwrap();
        assert_eq!(next, vec![PipelineAction::Run { request: 0, stage: 1, executor: Executor::Peer(W1), input: t(10.0) }]);
        p.note_remote_run(0, 1, Executor::Peer(W1), Duration::from_millis(1));
        let later = now + Duration::from_millis(3);
        p.stage_finished(0, 1, Executor::Peer(W1), t(11.0), &a, later).unwrap();
        let done = p.stage_finished(0, 2, Executor::Peer(W2), t(12.0), &a, later).unwrap();
        assert!(matches!(&done[0], PipelineAction::Finished { request: 0, stages, reruns: 0, .. } if stages.len() == 3));
        let PipelineAction::Finished { stages, .. } = &done[0] else { unreachable!() };
        assert_eq!(stages[1].hops(), Some(Duration::from_millis(2)), "3 ms at the coordinator, 1 ms on the worker");
        assert_eq!(stages[2].hops(), None, "stage 2 reported no run time");
        assert!(matches!(&done[1], PipelineAction::Run { request: 2, stage: 0, .. }));
    }

    #[test]
    fn results_from_the_wrong_peer_or_stage_are_refused() {
        let a = three_stages();
        let now = Instant::now();
        let mut p = Pipeline::new(2);
        p.submit(0, t(0.0));
        p.start_waiting(&a, now);
        p.stage_finished(0, 0, Executor::Local, t(1.0), &a, now).unwrap();
        assert!(matches!(p.stage_finished(0, 1, Executor::Peer(W2), t(2.0), &a, now), Err(StaleResult::Unexpected { .. })));
        assert!(matches!(p.stage_finished(0, 2, Executor::Peer(W1), t(2.0), &a, now), Err(StaleResult::Unexpected { .. })));
        assert_eq!(p.stage_finished(9, 0, Executor::Local, t(2.0), &a, now), Err(StaleResult::UnknownRequest(9)));
    }

    #[test]
    fn a_lost_peer_s_stages_rerun_elsewhere_from_the_kept_input() {
        let a = three_stages();
        let now = Instant::now();
        let mut p = Pipeline::new(2);
        p.submit(0, t(0.0));
        p.start_waiting(&a, now);
        p.stage_finished(0, 0, Executor::Local, t(5.0), &a, now).unwrap();
        let without_w1 = assign_stages(3, &[WorkerSpeed { peer: W2, calibration_us: 900 }]);
        let rerun = p.rerun_peer(W1, &without_w1, now);
        assert_eq!(rerun, vec![PipelineAction::Run { request: 0, stage: 1, executor: Executor::Peer(W2), input: t(5.0) }]);
        // A late answer from the lost peer no longer counts.
        assert!(p.stage_finished(0, 1, Executor::Peer(W1), t(6.0), &without_w1, now).is_err());
        p.stage_finished(0, 1, Executor::Peer(W2), t(6.0), &without_w1, now).unwrap();
        let done = p.stage_finished(0, 2, Executor::Peer(W2), t(7.0), &without_w1, now).unwrap();
        assert!(matches!(&done[0], PipelineAction::Finished { output, reruns: 1, .. } if *output == t(7.0)));
    }

    #[test]
    fn overdue_remote_stages_are_rerun_but_local_ones_wait() {
        let a = three_stages();
        let start = Instant::now();
        let mut p = Pipeline::new(2);
        p.submit(0, t(0.0));
        p.submit(1, t(1.0));
        p.start_waiting(&a, start);
        p.stage_finished(0, 0, Executor::Local, t(5.0), &a, start).unwrap();
        let later = start + Duration::from_secs(3);
        let rerun = p.rerun_overdue(Duration::from_secs(2), &a, later);
        assert_eq!(rerun.len(), 1, "request 1 is still on the local GPU");
        assert!(matches!(rerun[0], PipelineAction::Run { request: 0, stage: 1, .. }));
    }
}
