//! One peer's link as [`super::Links`] keeps it ([`PeerLink`]), where it stands
//! ([`LinkState`]), and what this player presents and enforces ([`LinkSettings`]).

use std::collections::HashMap;
use std::time::Duration;

use bevy::platform::time::Instant;

use super::auth::{PeerUuid, Permissions};
use super::codec::{Capabilities, Hello};
use super::credentials::RoomAuthority;
use super::latency::RttStats;
use super::link_events::{RejectReason, SessionEvent};
use super::rate_limit::FrameBudget;
use super::reassembly::ReassemblyLimits;
use super::room_key::RoomKey;
use super::seal::{TensorCipher, SESSION_NONCE_BYTES};
use super::token::CapabilityToken;

/// What this player presents to others and how strict it is with them.
#[derive(Clone, Debug)]
pub struct LinkSettings {
    /// The room's shared secret; frames are authenticated and tensors sealed with keys derived
    /// from it.
    pub room_key: RoomKey,
    /// Who decides what each player may do (default: an open room, see [`RoomAuthority`]).
    pub authority: RoomAuthority,
    /// What this peer asks to do (its token, in an owned room, may grant less).
    pub permissions: Permissions,
    /// SHA-256 of the model this peer runs; peers with another model are not trusted.
    pub model_hash: [u8; 32],
    /// What this peer tells others about itself.
    pub capabilities: Capabilities,
    /// Interval between heartbeat pings to each trusted peer.
    pub heartbeat: Duration,
    /// A peer not heard from for this long is declared lost; longer where the round trips to
    /// it are long or unsteady (see [`super::latency::RttStats::silence_limit`]).
    pub lost_after: Duration,
    /// A connected peer that has not completed the handshake in this time is given up on.
    pub handshake_timeout: Duration,
    /// Interval between repeated hellos until the other side acknowledges.
    pub hello_retry: Duration,
    /// Limits on tensors being received.
    pub limits: ReassemblyLimits,
    /// Frames a peer may send per second (and at once, after a second of quiet); more are
    /// dropped before their MAC is checked.
    pub max_frames_per_second: u32,
}

impl LinkSettings {
    /// Settings with the defaults used by the examples: 100 ms heartbeat, lost after 800 ms of
    /// silence, 5 s handshake timeout, hellos repeated every 250 ms, at most 20,000 frames per
    /// second from each peer, in an open room.
    pub fn new(room_key: RoomKey, permissions: Permissions, model_hash: [u8; 32], capabilities: Capabilities) -> Self {
        Self {
            room_key,
            authority: RoomAuthority::Open,
            permissions,
            model_hash,
            capabilities,
            heartbeat: Duration::from_millis(100),
            lost_after: Duration::from_millis(800),
            handshake_timeout: Duration::from_secs(5),
            hello_retry: Duration::from_millis(250),
            limits: ReassemblyLimits::default(),
            max_frames_per_second: 20_000,
        }
    }
}

/// Where a link to a peer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Connected; hellos are being exchanged.
    Handshaking,
    /// The peer proved its identity (and presented a valid token, in an owned room) for the
    /// same model and protocol.
    Trusted,
    /// The handshake failed or timed out, or the peer was revoked; everything it sends is
    /// dropped.
    Refused,
}

/// What this peer knows about another one.
#[derive(Clone, Debug)]
pub struct PeerLink {
    /// Handshake state.
    pub state: LinkState,
    /// The peer's hello, once accepted.
    pub hello: Option<Hello>,
    /// Round-trip times from heartbeats.
    pub rtt: RttStats,
    /// When a valid frame last arrived from the peer.
    pub last_heard: Instant,
    /// Payload bytes received from the peer (accepted frames).
    pub bytes_in: u64,
    /// Bytes sent to the peer.
    pub bytes_out: u64,
    /// Frames or chunks from the peer that were dropped.
    pub rejected: u64,
    pub(super) connected_at: Instant,
    pub(super) they_acknowledged: bool,
    pub(super) owe_hello: bool,
    pub(super) last_hello: Option<Instant>,
    pub(super) last_ping: Instant,
    pub(super) pings: HashMap<u64, Instant>,
    pub(super) budget: FrameBudget,
    /// The tensor ciphers of this session, once the peer is trusted.
    pub(super) ciphers: Option<LinkCiphers>,
    /// The peer's session nonce, from its latest hello (what this player's proofs sign).
    pub(super) their_nonce: Option<[u8; SESSION_NONCE_BYTES]>,
    /// What the peer may do, once trusted.
    pub(super) permissions: Permissions,
    /// The owner's side: the token granted to the peer, sent in every hello to it.
    pub(super) grant: Option<CapabilityToken>,
    /// The owner's side: how many of its revocations the peer has been told.
    pub(super) revocations_told: usize,
    /// The last (request, stage) whose input from the peer was dropped untrusted and reported.
    pub(super) reported_drop: Option<(u64, u16)>,
}

/// The ciphers of a link's tensor payloads, one per direction.
#[derive(Clone, Debug)]
pub(super) struct LinkCiphers {
    pub(super) sending: TensorCipher,
    pub(super) receiving: TensorCipher,
}

impl PeerLink {
    pub(super) fn new(now: Instant, frames_per_second: u32) -> Self {
        Self {
            state: LinkState::Handshaking,
            hello: None,
            rtt: RttStats::default(),
            last_heard: now,
            bytes_in: 0,
            bytes_out: 0,
            rejected: 0,
            connected_at: now,
            they_acknowledged: false,
            owe_hello: false,
            last_hello: None,
            last_ping: now,
            pings: HashMap::new(),
            budget: FrameBudget::new(frames_per_second, now),
            ciphers: None,
            their_nonce: None,
            permissions: Permissions::NONE,
            grant: None,
            revocations_told: 0,
            reported_drop: None,
        }
    }

    /// Starts the handshake over (the peer dropped this link on its side): trust, its hello,
    /// ciphers and grant are forgotten; the budget and statistics are kept (and the replay
    /// guard, which lives with the link's keys).
    pub(super) fn restart_handshake(&mut self, now: Instant) {
        self.state = LinkState::Handshaking;
        self.hello = None;
        self.connected_at = now;
        self.they_acknowledged = false;
        self.last_hello = None;
        self.ciphers = None;
        self.permissions = Permissions::NONE;
        self.grant = None;
        self.revocations_told = 0;
    }

    /// Counts a message from `peer` (this link's) that was dropped, and reports it.
    pub(super) fn reject(&mut self, peer: PeerUuid, reason: RejectReason, events: &mut Vec<SessionEvent>) {
        self.reject_output(peer, None, reason, events);
    }

    /// Counts a message from `peer` that was dropped, naming the request whose stage output it
    /// carried (see [`SessionEvent::Rejected`]), and reports it.
    pub(super) fn reject_output(&mut self, peer: PeerUuid, lost_output: Option<u64>, reason: RejectReason, events: &mut Vec<SessionEvent>) {
        self.rejected += 1;
        events.push(SessionEvent::Rejected { peer, reason, lost_output });
    }

    /// The peer's permissions, once trusted.
    pub fn permissions(&self) -> Permissions {
        match self.state {
            LinkState::Trusted => self.permissions,
            _ => Permissions::NONE,
        }
    }
}
