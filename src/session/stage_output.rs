//! A stage output that came back from a peer, as plain logic on [`Distributed`]: checked
//! against the plan's shape, then handed to the pipeline.

use bevy::platform::time::Instant;

use super::state::Distributed;
use super::SessionProblem;
use crate::net::ReceivedTensor;
use crate::schedule::stage_record::Executor;

impl Distributed {
    /// `received`, a stage output from a peer: a wrong shape re-runs what the peer holds and is
    /// reported; otherwise the pipeline moves on (its next actions are queued), and where it took
    /// the output (the sender held that stage of that request), the sender's timeouts in a row
    /// are cleared.
    pub(super) fn take_stage_output(&mut self, received: &ReceivedTensor, now: Instant) -> Option<SessionProblem> {
        let assignment = self.assignment.clone();
        let (request, stage) = (received.shared.request, received.shared.stage as usize);
        let got = received.shared.tensor.shape();
        let peer = received.from;
        if let Some(expected) = self.expected_output(request, stage).filter(|expected| expected != got) {
            let reruns = self.pipeline.rerun_peer(peer, &assignment, now);
            self.actions.extend(reruns);
            return Some(SessionProblem::WrongShape { peer, request, stage: stage as u16, expected, got: got.to_vec() });
        }
        if let Some(t) = self.tracked.get_mut(&request) {
            t.bytes += received.header.total_bytes as u64;
        }
        self.pipeline.note_remote_runs(request, &received.header.trace, received.transfer.estimate());
        if let Ok(next) = self.pipeline.stage_finished(request, stage, Executor::Peer(peer), received.shared.tensor.clone(), &assignment, now) {
            self.actions.extend(next);
            // Only an answer the pipeline took, for a request this peer held, ends its timeouts
            // in a row: any other output (a request unknown or held by another) would let a
            // peer that never answers stay clear of exclusion.
            self.timeouts.remove(&peer);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{Direction, PeerUuid, TensorHeader, TransferTiming};
    use crate::session::state::tests::fashion_session as session;
    use crate::tensor::quant::QuantParams;
    use crate::tensor::{SharedTensor, Tensor, TransferDtype};

    const W1: PeerUuid = PeerUuid([1; 16]);
    const W2: PeerUuid = PeerUuid([2; 16]);

    /// `tensor` as `from`'s output of `stage` of `request`.
    fn output(from: PeerUuid, request: u64, stage: u16, tensor: Tensor) -> ReceivedTensor {
        let header = TensorHeader {
            request,
            stage,
            direction: Direction::StageOutput,
            dtype: TransferDtype::F32,
            shape: tensor.shape().iter().map(|&d| d as u32).collect(),
            params: QuantParams::NONE,
            total_bytes: (tensor.len() * 4) as u32,
            onward: None,
            trace: Vec::new(),
            shared: None,
            collective: None,
        };
        let shared = SharedTensor { request, stage, tensor, dtype: TransferDtype::F32 };
        ReceivedTensor { from, direction: Direction::StageOutput, header, shared, transfer: TransferTiming::default() }
    }

    #[test]
    fn only_an_output_the_pipeline_takes_from_the_peer_holding_the_request_clears_its_timeouts() {
        let now = Instant::now();
        let mut state = session(&[W1]);
        state.pipeline.submit(7, Tensor::zeros(vec![1, 1, 28, 28]));
        let assignment = state.assignment.clone();
        state.pipeline.start_waiting(&assignment, now);
        let first_cut = state.expected_output(7, 0).unwrap();
        state.pipeline.stage_finished(7, 0, Executor::Local, Tensor::zeros(first_cut), &assignment, now).unwrap();
        state.timeouts.extend([(W1, 2), (W2, 2)]);
        let logits = || Tensor::zeros(vec![1, 10]);

        assert_eq!(state.take_stage_output(&output(W1, 999, 2, logits()), now), None);
        assert_eq!(state.timeouts.get(&W1), Some(&2), "an output for a request not in flight clears nothing");
        assert_eq!(state.take_stage_output(&output(W2, 7, 2, logits()), now), None);
        assert_eq!(state.timeouts.get(&W2), Some(&2), "nor one for a request another peer holds");
        assert_eq!(state.take_stage_output(&output(W1, 7, 2, logits()), now), None);
        assert_eq!(state.timeouts.get(&W1), None, "the peer holding it answered: its timeouts in a row end");
        assert!(state.actions.iter().any(|a| matches!(a, crate::session::pipeline::PipelineAction::Finished { request: 7, .. })));
    }
}
