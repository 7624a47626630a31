//! Serving stages for other players without waiting for a frame: the handler the session's
//! transport calls with each verified stage input (natively on its own thread) turns it into a
//! GPU job at once, and the job's reply sends the output back to the peer that asked the moment
//! it is read back. Failures reach the main world as [`SessionProblem`]s.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use bevy::asset::AssetId;
use bevy::platform::time::Instant;
use bevy::prelude::Entity;
use crossbeam_channel::Sender;

use super::serve_budget::{BudgetGate, Gated};
use super::state::{batch_of_tensor, lock};
use super::SessionProblem;
use crate::job::{JobOutcome, JobOutput, JobReply, JobTag, StageJob};
use crate::model::{Model, StagedModel};
use crate::net::session::{StageInputHandler, TensorSender};
use crate::net::codec::{Onward, StageTiming, TensorHeader};
use crate::net::{Direction, PeerUuid, ReceivedTensor, SentTensor};
use crate::schedule::InferenceError;
use crate::tensor::TransferDtype;

/// What the handler needs: the model's stages, where jobs go, how outputs travel back, and
/// where problems are reported.
pub(super) struct StageServer {
    /// The model's stages (cut again for each new batch, hence the lock).
    pub staged: Arc<Mutex<StagedModel>>,
    /// The model the stages come from.
    pub model: AssetId<Model>,
    /// How each stage's input travels (stage k's output travels as stage k+1's input).
    pub input_dtypes: Vec<TransferDtype>,
    /// The render side's job queue.
    pub jobs: Sender<StageJob>,
    /// The session's sending end.
    pub sender: TensorSender,
    /// The main world's end of problems.
    pub problems: Sender<SessionProblem>,
    /// How many stages each peer has running here.
    pub quota: StageQuota,
    /// The largest batch served.
    pub max_batch: usize,
    /// The GPU budget the stages wait for, if this player has one.
    pub budget: Option<BudgetGate>,
    /// Set by [`crate::testing::FaultInjection::serve_wrong_results`].
    #[cfg(feature = "fault-injection")]
    pub wrong_results: Arc<std::sync::atomic::AtomicBool>,
    /// Set by [`crate::testing::FaultInjection::slow_served_stages`] (natively: a browser tab
    /// has no thread to hold an output back on).
    #[cfg(all(feature = "fault-injection", not(target_arch = "wasm32")))]
    pub slowdown: Arc<std::sync::atomic::AtomicU32>,
}

/// Counts each peer's stages running on this GPU, up to a quota per peer.
#[derive(Clone)]
pub(super) struct StageQuota {
    per_peer: usize,
    running: Arc<Mutex<HashMap<PeerUuid, usize>>>,
}

/// One of a peer's stages counted against its quota until dropped (with the job's reply,
/// whether it ran or not).
pub(super) struct QuotaSlot {
    peer: PeerUuid,
    running: Arc<Mutex<HashMap<PeerUuid, usize>>>,
}

impl StageQuota {
    /// A quota of `per_peer` stages at once.
    pub fn new(per_peer: usize) -> Self {
        Self { per_peer, running: Arc::default() }
    }

    /// A slot for one more of `peer`'s stages, unless it has its quota running.
    pub fn take(&self, peer: PeerUuid) -> Option<QuotaSlot> {
        let mut running = lock(&self.running);
        let count = running.entry(peer).or_default();
        if *count >= self.per_peer {
            return None;
        }
        *count += 1;
        Some(QuotaSlot { peer, running: self.running.clone() })
    }
}

impl Drop for QuotaSlot {
    fn drop(&mut self) {
        let mut running = lock(&self.running);
        if let Some(count) = running.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                running.remove(&self.peer);
            }
        }
    }
}

impl StageServer {
    /// The handler for [`crate::net::session::PeerSession::serve_stage_inputs`].
    pub fn into_handler(self) -> StageInputHandler {
        Box::new(move |received| self.serve(received))
    }

    /// Starts the stage `received` (a stage input: the transport passes no other tensor) is the
    /// input of. Stage 0 (which only the owner runs) and stages past the plan are dropped.
    fn serve(&self, received: ReceivedTensor) -> Option<ReceivedTensor> {
        let (from, request, stage) = (received.from, received.shared.request, received.shared.stage);
        let header = received.header.clone();
        let network_us = received.transfer.estimate().map(StageTiming::micros);
        let index = stage as usize;
        let batch = batch_of_tensor(&received.shared.tensor);
        if batch > self.max_batch {
            let _ = self.problems.send(SessionProblem::BatchTooLarge { peer: from, request, stage, batch, limit: self.max_batch });
            return None;
        }
        let graph = {
            let mut staged = lock(&self.staged);
            if index == 0 || index >= staged.stage_count() {
                return None;
            }
            let got = received.shared.tensor.shape();
            let expected = staged.boundary_shapes(batch).ok().and_then(|shapes| shapes.stage_input(index).map(<[usize]>::to_vec));
            if let Some(expected) = expected.filter(|expected| expected != got) {
                let _ = self.problems.send(SessionProblem::WrongShape { peer: from, request, stage, expected, got: got.to_vec() });
                return None;
            }
            staged.stage(index, batch)
        };
        let graph = match graph {
            Ok(graph) => graph,
            Err(error) => {
                let _ = self.problems.send(SessionProblem::ServedStageFailed { request, stage, error: error.into() });
                return None;
            }
        };
        let Some(slot) = self.quota.take(from) else {
            let _ = self.problems.send(SessionProblem::OverQuota { peer: from, request, stage, quota: self.quota.per_peer });
            return None;
        };
        let dtype = self.input_dtypes.get(index + 1).copied().unwrap_or(TransferDtype::F32);
        let (sender, problems) = (self.sender.clone(), self.problems.clone());
        #[cfg(feature = "fault-injection")]
        let lie = self.wrong_results.clone();
        #[cfg(all(feature = "fault-injection", not(target_arch = "wasm32")))]
        let slowdown = self.slowdown.load(std::sync::atomic::Ordering::Acquire);
        let slot = Arc::new(slot);
        let reply = move |outcome: JobOutcome| {
            let running = slot.clone();
            let problem = match outcome.result {
                Ok(output) => {
                    #[cfg(feature = "fault-injection")]
                    let output = match lie.load(std::sync::atomic::Ordering::Acquire) {
                        true => crate::tensor::Tensor::new(output.shape().to_vec(), output.data().iter().map(|v| v + 1.0).collect()).expect("the same shape"),
                        false => output,
                    };
                    let run = outcome.finished.saturating_duration_since(outcome.started);
                    #[cfg(all(feature = "fault-injection", not(target_arch = "wasm32")))]
                    let (run, held) = match slowdown {
                        factor @ 2.. => (run * factor, Some(run * (factor - 1))),
                        _ => (run, None),
                    };
                    let timing = StageTiming { stage: header.stage, run_us: StageTiming::micros(run), gpu_us: outcome.gpu.map(StageTiming::micros), network_us };
                    let sent = next_hop(from, &header, timing);
                    #[cfg(all(feature = "fault-injection", not(target_arch = "wasm32")))]
                    if let Some(held) = held {
                        let (sender, problems) = (sender.clone(), problems.clone());
                        std::thread::spawn(move || {
                            let _running = running;
                            std::thread::sleep(held);
                            if let Err(error) = sender.send(sent, output, dtype) {
                                let _ = problems.send(SessionProblem::CannotReturnStage { request, stage, error });
                            }
                        });
                        return;
                    }
                    drop(running);
                    match sender.send(sent, output, dtype) {
                        Ok(()) => return,
                        Err(error) => SessionProblem::CannotReturnStage { request, stage, error },
                    }
                }
                Err(error) => SessionProblem::ServedStageFailed { request, stage, error: InferenceError::from(error) },
            };
            let _ = problems.send(problem);
        };
        let now = Instant::now();
        let mut job = StageJob {
            tag: JobTag::ServedStage,
            entity: Entity::PLACEHOLDER,
            model: self.model,
            graph,
            input: received.shared.tensor.into(),
            started: now,
            output: JobOutput::default(),
            reply: None,
        };
        let Some(gate) = &self.budget else {
            job.reply = Some(JobReply(Arc::new(reply)));
            // The render side's end is gone only when the app is.
            let _ = self.jobs.send(job);
            return None;
        };
        let (key, charge, settling) = ((stage, batch), Arc::new(AtomicU64::new(0)), gate.clone());
        let charged = charge.clone();
        job.reply = Some(JobReply(Arc::new(move |outcome: JobOutcome| {
            settling.settle(key, &charged, &outcome);
            reply(outcome);
        })));
        if let Gated::HandedBack(waiting) = gate.offer(key, job, charge, now) {
            let _ = self.problems.send(SessionProblem::OverBudget { peer: from, request, stage, waiting });
        }
        None
    }
}

/// Where the output of the stage whose input came from `from` with `header` goes, once it ran
/// as `timing` says: on to the next peer of its chain, back to the chain's owner, or (not
/// chained) back to `from`. Its trace gains `timing`.
pub(super) fn next_hop(from: PeerUuid, header: &TensorHeader, timing: StageTiming) -> SentTensor {
    let mut trace = header.trace.clone();
    trace.push(timing);
    let (request, stage) = (header.request, header.stage);
    match &header.onward {
        Some(onward @ Onward { owner, route, .. }) => match route.split_first() {
            Some((next, rest)) => {
                let onward = Some(Onward { route: rest.to_vec(), ..onward.clone() });
                SentTensor { peer: *next, request, stage: stage + 1, direction: Direction::StageInput, onward, trace, shared: None, collective: None }
            }
            None => SentTensor { peer: *owner, request, stage, direction: Direction::StageOutput, onward: None, trace, shared: None, collective: None },
        },
        None => SentTensor { peer: from, request, stage, direction: Direction::StageOutput, onward: None, trace, shared: None, collective: None },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::StagedModel;
    use crate::session::ServeBudget;
    use crate::tensor::quant::QuantParams;

    const OWNER: PeerUuid = PeerUuid([1; 16]);
    const W1: PeerUuid = PeerUuid([2; 16]);
    const W2: PeerUuid = PeerUuid([3; 16]);

    fn input(stage: u16, onward: Option<Onward>, trace: Vec<StageTiming>) -> TensorHeader {
        TensorHeader {
            request: 5,
            stage,
            direction: Direction::StageInput,
            dtype: TransferDtype::F32,
            shape: vec![1, 4],
            params: QuantParams::NONE,
            total_bytes: 16,
            onward,
            trace,
            shared: None,
            collective: None,
        }
    }

    /// A stage server for the shipped model cut three ways, with a quota of one stage per peer
    /// and batches up to 2; the jobs it starts and the problems it reports.
    fn server() -> (StageServer, crossbeam_channel::Receiver<StageJob>, crossbeam_channel::Receiver<SessionProblem>) {
        let path = |p: &str| format!("{}/assets/{p}", env!("CARGO_MANIFEST_DIR"));
        let model = Model::from_onnx_bytes(&std::fs::read(path("models/fashion_mobilenetv2.onnx")).unwrap()).unwrap();
        let plan = crate::model::PartitionPlan::from_ron(&std::fs::read_to_string(path("plans/fashion_3_int8.plan.ron")).unwrap()).unwrap();
        let staged = StagedModel::new(model, plan).unwrap();
        let input_dtypes = staged.input_dtypes().to_vec();
        let (jobs, started) = crossbeam_channel::unbounded();
        let (problems, reported) = crossbeam_channel::unbounded();
        let server = StageServer {
            staged: Arc::new(Mutex::new(staged)),
            model: AssetId::default(),
            input_dtypes,
            jobs,
            sender: TensorSender::closed(),
            problems,
            quota: StageQuota::new(1),
            max_batch: 2,
            budget: None,
            #[cfg(feature = "fault-injection")]
            wrong_results: Default::default(),
            #[cfg(feature = "fault-injection")]
            slowdown: Default::default(),
        };
        (server, started, reported)
    }

    fn stage_one_input(shape: Vec<usize>) -> ReceivedTensor {
        let tensor = crate::tensor::Tensor::zeros(shape.clone());
        let mut header = input(1, None, vec![]);
        header.shape = shape.iter().map(|&d| d as u32).collect();
        ReceivedTensor {
            from: OWNER,
            direction: Direction::StageInput,
            shared: crate::tensor::SharedTensor { request: 5, stage: 1, tensor, dtype: TransferDtype::F32 },
            header,
            transfer: Default::default(),
        }
    }

    #[test]
    fn a_stage_input_of_the_wrong_shape_or_too_large_a_batch_or_over_the_quota_is_dropped_and_reported() {
        let (server, started, reported) = server();
        let boundary = lock(&server.staged).boundary_shapes(1).unwrap().stage_input(1).unwrap().to_vec();
        let mut wrong = boundary.clone();
        wrong[1] += 1;
        assert!(server.serve(stage_one_input(wrong.clone())).is_none());
        assert_eq!(reported.try_recv(), Ok(SessionProblem::WrongShape { peer: OWNER, request: 5, stage: 1, expected: boundary.clone(), got: wrong }));
        let mut batch_of_three = boundary.clone();
        batch_of_three[0] = 3;
        server.serve(stage_one_input(batch_of_three));
        assert_eq!(reported.try_recv(), Ok(SessionProblem::BatchTooLarge { peer: OWNER, request: 5, stage: 1, batch: 3, limit: 2 }));
        assert!(started.is_empty(), "nothing reached the GPU");

        server.serve(stage_one_input(boundary.clone()));
        let running = started.try_recv().expect("a stage of the right shape starts");
        assert_eq!(running.input.shape(), boundary);
        server.serve(stage_one_input(boundary.clone()));
        assert!(matches!(reported.try_recv(), Ok(SessionProblem::OverQuota { peer: OWNER, quota: 1, .. })));
        drop(running);
        server.serve(stage_one_input(boundary));
        assert!(started.try_recv().is_ok(), "the finished stage made room");
    }

    #[test]
    fn with_a_serving_budget_a_stage_past_it_waits_for_a_later_frame_and_one_more_is_handed_back() {
        let (mut server, started, reported) = server();
        server.quota = StageQuota::new(8);
        // A frame long enough that the bucket does not refill while the test runs.
        let frame = Duration::from_secs(1000);
        let budget = ServeBudget { gpu_per_frame: Duration::from_millis(2), frame, max_waiting: 1 };
        let gate = BudgetGate::new(budget, server.jobs.clone(), Instant::now());
        server.budget = Some(gate.clone());
        let boundary = lock(&server.staged).boundary_shapes(1).unwrap().stage_input(1).unwrap().to_vec();
        for _ in 0..3 {
            server.serve(stage_one_input(boundary.clone()));
        }
        let first = started.try_recv().expect("the budget starts full");
        assert!(started.is_empty(), "the second waits for the budget");
        assert_eq!(reported.try_recv(), Ok(SessionProblem::OverBudget { peer: OWNER, request: 5, stage: 1, waiting: 1 }));
        // It ran in 1 ms: settled, and reported.
        let reply = first.reply.clone().expect("a served stage replies");
        let outcome = JobOutcome { gpu: Some(Duration::from_millis(1)), ..JobOutcome::of(&first, Ok(crate::tensor::Tensor::zeros(vec![1]))) };
        (reply.0)(outcome);
        let report = gate.report();
        assert_eq!((report.stages, report.gpu, report.longest, report.waited, report.handed_back), (1, Duration::from_millis(1), Duration::from_millis(1), 1, 1));
        gate.release(Instant::now() + frame);
        assert!(started.try_recv().is_ok(), "a frame later the waiting stage starts");
    }

    #[test]
    fn a_peer_gets_its_quota_of_running_stages_and_a_finished_one_makes_room() {
        let quota = StageQuota::new(2);
        let first = quota.take(OWNER).expect("room for one");
        let _second = quota.take(OWNER).expect("room for two");
        assert!(quota.take(OWNER).is_none(), "a third is over the quota");
        assert!(quota.take(W1).is_some(), "another peer has its own quota");
        drop(first);
        assert!(quota.take(OWNER).is_some(), "a finished stage makes room");
    }

    #[test]
    fn an_unchained_stage_returns_its_output_to_the_sender_with_its_time() {
        let timing = StageTiming { stage: 1, run_us: 300, gpu_us: Some(120), network_us: Some(90) };
        let sent = next_hop(OWNER, &input(1, None, vec![]), timing);
        let trace = vec![timing];
        assert_eq!(sent, SentTensor { peer: OWNER, request: 5, stage: 1, direction: Direction::StageOutput, onward: None, trace, shared: None, collective: None });
    }

    #[test]
    fn a_chained_stage_passes_its_output_on_as_the_next_stage_s_input_and_the_last_returns_it_to_the_owner() {
        let chain = Some(Onward { owner: OWNER, route: vec![W2], ticket: None });
        let first = StageTiming { stage: 1, run_us: 300, gpu_us: Some(120), network_us: Some(90) };
        let forwarded = next_hop(OWNER, &input(1, chain, vec![]), first);
        let onward = Some(Onward { owner: OWNER, route: vec![], ticket: None });
        assert_eq!(forwarded, SentTensor { peer: W2, request: 5, stage: 2, direction: Direction::StageInput, onward: onward.clone(), trace: vec![first], shared: None, collective: None });
        let second = StageTiming { stage: 2, run_us: 400, gpu_us: None, network_us: Some(80) };
        let back = next_hop(W1, &input(2, onward, vec![first]), second);
        let trace = vec![first, second];
        assert_eq!(back, SentTensor { peer: OWNER, request: 5, stage: 2, direction: Direction::StageOutput, onward: None, trace, shared: None, collective: None });
    }
}
