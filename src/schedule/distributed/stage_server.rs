//! Serving stages for other players without waiting for a frame: the handler the session's
//! transport calls with each verified stage input (natively on its own thread) turns it into a
//! GPU job at once, and the job's reply sends the output back to the peer that asked the moment
//! it is read back. Failures reach the main world as [`SessionProblem`]s.

use std::sync::{Arc, Mutex};

use bevy::asset::AssetId;
use bevy::platform::time::Instant;
use bevy::prelude::Entity;
use crossbeam_channel::Sender;

use super::state::{batch_of_tensor, lock};
use super::SessionProblem;
use crate::job::{JobOutcome, JobReply, JobTag, StageJob};
use crate::model::{Model, StagedModel};
use crate::net::session::{StageInputHandler, TensorSender};
use crate::net::{Direction, ReceivedTensor, SentTensor};
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
}

impl StageServer {
    /// The handler for [`crate::net::session::PeerSession::serve_stage_inputs`].
    pub fn into_handler(self) -> StageInputHandler {
        Box::new(move |received| self.serve(received))
    }

    /// Starts the stage `received` is the input of, or returns a tensor that is not a stage
    /// input. Stage 0 (which only the owner runs) and stages past the plan are dropped.
    fn serve(&self, received: ReceivedTensor) -> Option<ReceivedTensor> {
        if received.direction != Direction::StageInput {
            return Some(received);
        }
        let (from, request, stage) = (received.from, received.shared.request, received.shared.stage);
        let index = stage as usize;
        let batch = batch_of_tensor(&received.shared.tensor);
        let graph = {
            let mut staged = lock(&self.staged);
            if index == 0 || index >= staged.stage_count() {
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
        let dtype = self.input_dtypes.get(index + 1).copied().unwrap_or(TransferDtype::F32);
        let (sender, problems) = (self.sender.clone(), self.problems.clone());
        let reply = move |outcome: JobOutcome| {
            let problem = match outcome.result {
                Ok(output) => {
                    let sent = SentTensor { peer: from, request, stage, direction: Direction::StageOutput };
                    match sender.send(sent, output, dtype, outcome.started.elapsed()) {
                        Ok(()) => return,
                        Err(error) => SessionProblem::CannotReturnStage { request, stage, error },
                    }
                }
                Err(error) => SessionProblem::ServedStageFailed { request, stage, error: InferenceError::from(error) },
            };
            let _ = problems.send(problem);
        };
        let job = StageJob {
            tag: JobTag::ServedStage,
            entity: Entity::PLACEHOLDER,
            model: self.model,
            graph,
            input: received.shared.tensor,
            started: Instant::now(),
            reply: Some(JobReply(Arc::new(reply))),
        };
        // The render side's end is gone only when the app is.
        let _ = self.jobs.send(job);
        None
    }
}
