//! What the link state machine reports ([`SessionEvent`]) and why things fail: its vocabulary,
//! shared by the scheduler, the overlay and the examples.

use std::time::Duration;

use thiserror::Error;

use super::auth::{PeerUuid, Permissions};
use super::codec::{Capabilities, FrameError};
use super::reassembly::{ChunkError, ReceivedTensor};

/// Why a message from a peer was dropped.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum RejectReason {
    /// The frame failed to decode or authenticate.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A tensor chunk broke a reassembly rule.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// The peer has not completed the handshake (or was refused) and sent something else.
    #[error("a {0} message from a peer that is not trusted")]
    Untrusted(&'static str),
    /// A key-exchange message that does not parse or that SPAKE2 refuses.
    #[error(transparent)]
    KeyExchange(#[from] super::pake::ExchangeError),
    /// An authenticated frame before the link's key exchange agreed its keys.
    #[error("an authenticated frame before the key exchange")]
    BeforeKeyExchange,
    /// A new key-exchange start from a peer that has not proved the room key on this link: a
    /// stranger's second guess, never answered.
    #[error("a second key-exchange start from a peer that has not proved the room key")]
    UnprovenRestart,
    /// A new key-exchange start sooner than [`super::RESTART_INTERVAL`] after the last one
    /// answered, or beyond [`super::MAX_UNPROVEN_RESTARTS`] answered with none adopted.
    #[error("a key-exchange start sooner than a second after the last, or one too many never finished")]
    RestartTooSoon,
    /// A value of a shared tensor from a player that does not own it.
    #[error("a value of {0:?}, which another player owns")]
    NotOwner(String),
    /// The peer's token does not allow what the message asks.
    #[error("the peer's token does not allow sending a {0}")]
    NotPermitted(&'static str),
    /// A tensor chunk's payload did not open under the link's session key (sealed for another
    /// session or link, or changed by someone holding the room key).
    #[error(transparent)]
    Unsealed(#[from] super::seal::Unsealed),
    /// The peer was refused (its handshake failed); its frames are dropped unread.
    #[error("a frame from a refused peer")]
    Refused,
    /// The peer sent more frames than its per-second budget: this one and the rest of the
    /// flood are dropped unread (only its first frame is reported).
    #[error("more than {0} frames per second")]
    Flooding(u32),
    /// A trusted peer's renewed token, or the owner's grant for this player, did not verify.
    #[error(transparent)]
    Token(#[from] super::token::TokenError),
    /// A chained stage input whose route ticket does not hold.
    #[error(transparent)]
    Ticket(#[from] super::route_ticket::TicketError),
}

impl RejectReason {
    /// A stable name for the reason, for logs and machine-read reports (JSON lines).
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::Frame(FrameError::BadMac) => "bad_mac",
            RejectReason::Frame(FrameError::Replay { .. }) => "replay",
            RejectReason::Frame(_) => "malformed_frame",
            RejectReason::Chunk(_) => "bad_chunk",
            RejectReason::KeyExchange(_) => "key_exchange",
            RejectReason::BeforeKeyExchange => "before_key_exchange",
            RejectReason::UnprovenRestart => "unproven_restart",
            RejectReason::RestartTooSoon => "restart_too_soon",
            RejectReason::Untrusted(_) => "untrusted",
            RejectReason::NotPermitted(_) => "not_permitted",
            RejectReason::NotOwner(_) => "not_owner",
            RejectReason::Unsealed(_) => "unsealed",
            RejectReason::Refused => "refused",
            RejectReason::Flooding(_) => "flooding",
            RejectReason::Token(_) => "token",
            RejectReason::Ticket(_) => "route_ticket",
        }
    }
}

/// Why a handshake failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The peer's proof of identity or its token does not verify, or the owner revoked it.
    #[error(transparent)]
    Token(#[from] super::token::TokenError),
    /// The peer's first authenticated frame does not verify under the keys of the key exchange:
    /// it does not hold the room key.
    #[error("the peer does not hold the room key")]
    WrongRoomKey,
    /// The peer runs another model.
    #[error("the peer runs a different model")]
    ModelMismatch,
    /// No valid hello in time.
    #[error("no handshake within {0:?}")]
    Timeout(Duration),
}

/// Why a peer is no longer part of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// Matchbox reported the connection closed.
    Disconnected,
    /// No frame for `LinkSettings::lost_after`.
    Silent,
    /// The room's owner revoked the peer (this player is the owner, or the owner said so).
    Revoked,
    /// The peer's token expired without the owner renewing it.
    TokenExpired,
    /// The peer dropped its link to this player (it found this player silent, or started
    /// over): what was sent to it meanwhile may have been dropped unread. Its hello that said
    /// so starts a new handshake, and it is trusted again at once where it still may be.
    Reset,
}

/// Why a peer could not be revoked.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum RevokeError {
    /// Only the room's owner revokes.
    #[error("only the room's owner can revoke a player")]
    NotOwner,
    /// No handshake with the peer has been seen, so its identity is unknown.
    #[error("no hello from that peer yet")]
    UnknownPeer,
}

/// Something the session observed, for the scheduler and the overlay.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// A peer completed the handshake.
    PeerTrusted {
        /// The peer.
        peer: PeerUuid,
        /// Its capabilities.
        capabilities: Capabilities,
        /// What its token allows.
        permissions: Permissions,
    },
    /// A trusted or handshaking peer is gone.
    PeerLost {
        /// The peer.
        peer: PeerUuid,
        /// How it was noticed.
        reason: LostReason,
    },
    /// A peer's handshake failed; it is refused for the rest of the session.
    HandshakeFailed {
        /// The peer.
        peer: PeerUuid,
        /// Why.
        reason: HandshakeError,
    },
    /// A message was dropped.
    Rejected {
        /// Its sender.
        peer: PeerUuid,
        /// Why.
        reason: RejectReason,
        /// The request a stage output was for, where its frame verified (so its header is the
        /// sender's own) and the output was lost all the same; `None` for anything else.
        lost_output: Option<u64>,
    },
    /// A trusted peer dropped a stage input of this player's request because it arrived while
    /// that peer did not trust its sender (yet, or again): the stage will not run there.
    StageInputDropped {
        /// The peer that dropped it.
        peer: PeerUuid,
        /// The request.
        request: u64,
        /// The stage.
        stage: u16,
    },
    /// A whole tensor arrived from a trusted peer, within its permissions.
    Tensor(ReceivedTensor),
    /// The transport was rebuilt because too few peers connected in time.
    Reconnected {
        /// Rebuilds so far.
        attempt: u32,
    },
    /// A tensor asked for with [`super::session::PeerSession::send_tensor`] is on the wire.
    TensorSent {
        /// What was sent, and to whom.
        tensor: SentTensor,
        /// Bytes put on the wire (every chunk's frame).
        bytes: u64,
    },
    /// A tensor asked for with [`super::session::PeerSession::send_tensor`] could not be sent.
    SendFailed {
        /// What was to be sent, and to whom.
        tensor: SentTensor,
        /// Why not.
        error: SendError,
    },
}

/// A tensor to send: its receiver, its place in a request, and where a stage input's output
/// goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentTensor {
    /// The receiver.
    pub peer: PeerUuid,
    /// The request it belongs to.
    pub request: u64,
    /// The stage it is the input or output of.
    pub stage: u16,
    /// Input or output.
    pub direction: super::codec::Direction,
    /// For a stage input: where its output goes, when that is not back to the sender.
    pub onward: Option<super::codec::Onward>,
    /// The remote stages already run for it, with their times (see
    /// [`super::codec::TensorHeader::trace`]).
    pub trace: Vec<super::codec::StageTiming>,
    /// For a shared tensor's value or a collective's contribution: whose it is and its name
    /// (see [`super::codec::TensorHeader::shared`]).
    pub shared: Option<super::codec::SharedKey>,
    /// For a collective's contribution: the collective (see
    /// [`super::codec::TensorHeader::collective`]).
    pub collective: Option<super::codec::CollectiveTag>,
}

impl SentTensor {
    /// For a stage input passed along a chain (the output of the stage before): the same
    /// tensor as that stage's output, back to the chain's owner, for when the next peer cannot
    /// be reached. `None` for anything else.
    pub fn back_to_owner(&self) -> Option<SentTensor> {
        let onward = self.onward.as_ref()?;
        let stage = self.stage.checked_sub(1).filter(|_| self.direction == super::codec::Direction::StageInput)?;
        let direction = super::codec::Direction::StageOutput;
        Some(SentTensor { peer: onward.owner, request: self.request, stage, direction, onward: None, trace: self.trace.clone(), shared: None, collective: None })
    }
}

/// Why a tensor could not be sent.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The peer is not (or no longer) trusted.
    #[error("peer is not trusted")]
    NotTrusted,
    /// The transport did not take a frame (its message loop has stopped).
    #[error("the socket is closed")]
    SocketClosed,
    /// The tensor has too many dimensions or values, or its route too many stages, for the
    /// wire format.
    #[error("the tensor is too large for the wire format")]
    TooLarge,
    /// A shared tensor's value or a collective's contribution without its key (or a
    /// contribution without its tag), a key or tag on anything else, a name longer than
    /// [`super::codec::MAX_SHARED_NAME`] bytes, or more than [`super::codec::MAX_MEMBERS`]
    /// members.
    #[error("a shared tensor's key or a collective's tag is missing, misplaced or too long")]
    InvalidSharedKey,
}
