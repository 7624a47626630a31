//! A stage output that came back from a peer, as plain logic on [`Distributed`]: checked
//! against the plan's shape, then handed to the pipeline.

use bevy::platform::time::Instant;

use super::state::Distributed;
use super::SessionProblem;
use crate::net::ReceivedTensor;
use crate::schedule::stage_record::Executor;

impl Distributed {
    /// `received`, a stage output from a peer: a wrong shape re-runs what the peer holds and is
    /// reported; otherwise the pipeline moves on (its next actions are queued), and the sender's
    /// timeouts in a row are cleared.
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
        self.timeouts.remove(&peer);
        self.pipeline.note_remote_runs(request, &received.header.trace, received.transfer.estimate());
        if let Ok(next) = self.pipeline.stage_finished(request, stage, Executor::Peer(peer), received.shared.tensor.clone(), &assignment, now) {
            self.actions.extend(next);
        }
        None
    }
}
