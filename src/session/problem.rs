//! [`SessionProblem`]: what went wrong in the session, as a typed message.

use bevy::prelude::Message;

use crate::model::PlanError;
use super::shared::SharedRefusal;
use crate::net::{PeerUuid, SendError};
use crate::session::pipeline::StaleResult;
use crate::schedule::InferenceError;

/// Why the session could not start or a stage could not be handled.
#[derive(Message, thiserror::Error, Clone, Debug, PartialEq)]
pub enum SessionProblem {
    /// The model asset failed to load; the session does not start.
    #[error("the model failed to load: {0}")]
    ModelLoad(String),
    /// The partition plan asset failed to load; the session does not start.
    #[error("the partition plan failed to load: {0}")]
    PlanLoad(String),
    /// The partition plan does not fit the loaded model; the session does not start.
    #[error("the partition plan does not fit the model: {0}")]
    PlanDoesNotFit(PlanError),
    /// A warm-up run before joining failed.
    #[error("calibration failed: {0}")]
    CalibrationFailed(InferenceError),
    /// A stage result arrived for a request or stage that does not expect it.
    #[error(transparent)]
    StaleResult(StaleResult),
    /// A stage run for a peer could not be sent back.
    #[error("cannot return stage {stage} of request {request}: {error}")]
    CannotReturnStage {
        /// The peer's request.
        request: u64,
        /// The stage.
        stage: u16,
        /// Why.
        error: SendError,
    },
    /// A stage run for a peer failed on this GPU.
    #[error("stage {stage} of request {request} for a peer failed: {error}")]
    ServedStageFailed {
        /// The peer's request.
        request: u64,
        /// The stage.
        stage: u16,
        /// Why.
        error: InferenceError,
    },
    /// A player's stages timed out `timeouts` times in a row: it gets no more work in this
    /// session, and what it held runs elsewhere.
    #[error("peer {peer} timed out {timeouts} times in a row and is excluded")]
    PeerExcluded {
        /// The player.
        peer: crate::net::PeerUuid,
        /// Its timeouts in a row.
        timeouts: u32,
    },
    /// A peer sent a stage's input or output whose shape is not the one the plan puts at that
    /// cut for the request's batch: it is dropped (an output's stage runs again elsewhere).
    #[error("peer {peer} sent stage {stage} of request {request} with shape {got:?}, not {expected:?}")]
    WrongShape {
        /// The sender.
        peer: crate::net::PeerUuid,
        /// The request (the sender's own id for a stage input, this player's for an output).
        request: u64,
        /// The stage.
        stage: u16,
        /// The shape at that cut.
        expected: Vec<usize>,
        /// The shape received.
        got: Vec<usize>,
    },
    /// A peer already has its quota of stages running on this GPU: its next stage input is
    /// dropped.
    #[error("peer {peer} already has {quota} stages running here; its stage {stage} of request {request} is dropped")]
    OverQuota {
        /// The peer.
        peer: crate::net::PeerUuid,
        /// Its request.
        request: u64,
        /// The stage.
        stage: u16,
        /// Its quota.
        quota: usize,
    },
    /// This player's GPU budget for the others' stages ([`super::ServeBudget`]) is spent and
    /// as many stages as it holds already wait for it: a peer's stage input is handed back
    /// (dropped here; its owner runs it elsewhere once it is overdue).
    #[error("the serving budget is spent and {waiting} stages wait; stage {stage} of request {request} from peer {peer} is handed back")]
    OverBudget {
        /// The peer.
        peer: crate::net::PeerUuid,
        /// Its request.
        request: u64,
        /// The stage.
        stage: u16,
        /// Stages waiting for the budget.
        waiting: usize,
    },
    /// A peer sent a stage input of a batch larger than this player serves
    /// ([`super::PeerSessionPlugin::max_served_batch`]): it is dropped.
    #[error("peer {peer} sent stage {stage} of request {request} with a batch of {batch}, over the {limit} served")]
    BatchTooLarge {
        /// The peer.
        peer: crate::net::PeerUuid,
        /// Its request.
        request: u64,
        /// The stage.
        stage: u16,
        /// The batch it sent.
        batch: usize,
        /// The largest batch served.
        limit: usize,
    },
    /// A spot check found an output the peers returned for a request different from this
    /// GPU's: the peers of the first hand-over that disagrees (where that cannot be told, every
    /// peer of the check) are excluded, and the request gets this GPU's output.
    #[error("request {request}: peers {peers:?} returned an output this GPU does not agree with; they are excluded")]
    ResultMismatch {
        /// This owner's request.
        request: u64,
        /// The peers blamed, now excluded.
        peers: Vec<crate::net::PeerUuid>,
    },
    /// This GPU could not run a spot check's stages; the peers' output is delivered unchecked.
    #[error("request {request}: the spot check failed on this GPU: {error}")]
    SpotCheckFailed {
        /// This owner's request.
        request: u64,
        /// Why.
        error: InferenceError,
    },
    /// A stage input could not be sent to its peer; the stage runs elsewhere.
    #[error("cannot send stage {stage} of request {request}: {error}; running it elsewhere")]
    CannotSendStage {
        /// This owner's request.
        request: u64,
        /// The stage.
        stage: usize,
        /// Why.
        error: SendError,
    },
    /// A value of another player's shared tensor was not taken.
    #[error("a value of {name:?} from {peer} was refused: {reason}")]
    SharedTensorRefused {
        /// The player that sent it.
        peer: PeerUuid,
        /// The tensor's name.
        name: String,
        /// Why.
        reason: SharedRefusal,
    },
    /// A value of this player's shared tensor could not be sent to a player.
    #[error("cannot share {name:?} with {peer}: {error}")]
    CannotShare {
        /// The player.
        peer: PeerUuid,
        /// The tensor's name.
        name: String,
        /// Why.
        error: SendError,
    },
    /// A [`super::PublishedTensor`]'s name is longer than [`crate::net::MAX_SHARED_NAME`]
    /// bytes; it is not shared.
    #[error("the shared tensor name {0:?} is longer than the wire allows")]
    SharedNameTooLong(String),
    /// A part for a collective that this player has started or finished, or beyond the parts
    /// (count or bytes) it keeps for collectives it has not started yet: it is dropped.
    #[error("a part of collective {name:?} round {round} from {peer} was refused: {reason}")]
    CollectivePartRefused {
        /// The player that sent it.
        peer: PeerUuid,
        /// The collective's name.
        name: String,
        /// Its round.
        round: u64,
        /// Why.
        reason: super::collective::PartRefusal,
    },
}
