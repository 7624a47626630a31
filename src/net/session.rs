//! [`PeerSession`]: this player's link to the others of a matchbox room. It runs the handshake
//! (protocol version, model hash, capabilities, signed token), heartbeats, chunking and
//! authentication, and reports what happened as [`SessionEvent`]s. It is a Bevy resource but
//! holds no ECS logic: [`PeerSession::poll`] is called once per frame.

use std::collections::HashMap;
use std::time::Duration;

use bevy::platform::time::Instant;

use bevy::prelude::Resource;
use bevy::tasks::{IoTaskPool, TaskPool};
use matchbox_socket::{PeerId, PeerState, RtcIceServerConfig, WebRtcSocket};
use thiserror::Error;

use super::auth::{PeerUuid, Permissions, RoomKeys};
use super::codec::{decode_frame, encode_frame, split_into_chunks, ReplayGuard, Capabilities, Direction, FrameError, Hello, Message, TensorHeader};
use super::latency::RttStats;
use super::reassembly::{ChunkError, Reassembler, ReassemblyLimits, ReceivedTensor};
use crate::model::plan::TransferDtype;
use crate::model::quant::encode_values;
use crate::tensor::Tensor;

/// How to join a room and how strict to be with the peers found there.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Matchbox room URL, e.g. `ws://127.0.0.1:3536/inference`.
    pub room_url: String,
    /// The room's shared secret; frames and tokens are authenticated with keys derived from it.
    pub room_key: String,
    /// STUN/TURN server URLs for ICE. Empty by default: host candidates only, which reach
    /// peers on the same machine or network and contact no outside server. Players behind
    /// different NATs need a STUN (or TURN) server here.
    pub ice_servers: Vec<String>,
    /// What this peer's token lets it do.
    pub permissions: Permissions,
    /// SHA-256 of the model this peer runs; peers with another model are not trusted.
    pub model_hash: [u8; 32],
    /// What this peer tells others about itself.
    pub capabilities: Capabilities,
    /// Interval between heartbeat pings to each trusted peer.
    pub heartbeat: Duration,
    /// A peer not heard from for this long is declared lost.
    pub lost_after: Duration,
    /// A connected peer that has not completed the handshake in this time is given up on.
    pub handshake_timeout: Duration,
    /// Interval between repeated hellos until the other side acknowledges.
    pub hello_retry: Duration,
    /// Rebuild the socket when fewer than [`Self::expected_peers`] have become trusted this
    /// long after joining or after the last one did (matchbox's connection setup occasionally
    /// hangs). Once all expected peers were trusted, the socket is never rebuilt.
    pub reconnect_after: Duration,
    /// Peers this one waits for before considering the session complete (0: no expectation).
    pub expected_peers: usize,
    /// Limits on tensors being received.
    pub limits: ReassemblyLimits,
}

impl SessionConfig {
    /// A configuration with the defaults used by the examples: 100 ms heartbeat, lost after
    /// 800 ms of silence, 5 s handshake timeout.
    pub fn new(room_url: impl Into<String>, room_key: impl Into<String>, permissions: Permissions, model_hash: [u8; 32], capabilities: Capabilities) -> Self {
        Self {
            room_url: room_url.into(),
            room_key: room_key.into(),
            ice_servers: Vec::new(),
            permissions,
            model_hash,
            capabilities,
            heartbeat: Duration::from_millis(100),
            lost_after: Duration::from_millis(800),
            handshake_timeout: Duration::from_secs(5),
            hello_retry: Duration::from_millis(250),
            reconnect_after: Duration::from_secs(8),
            expected_peers: 0,
            limits: ReassemblyLimits::default(),
        }
    }
}

/// Where a link to a peer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Connected; hellos are being exchanged.
    Handshaking,
    /// The peer presented a valid token for the same model and protocol.
    Trusted,
    /// The handshake failed or timed out; everything it sends is dropped.
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
    connected_at: Instant,
    they_acknowledged: bool,
    owe_hello: bool,
    last_hello: Option<Instant>,
    last_ping: Instant,
    replay: ReplayGuard,
    pings: HashMap<u64, Instant>,
}

impl PeerLink {
    fn new(now: Instant) -> Self {
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
            replay: ReplayGuard::default(),
            pings: HashMap::new(),
        }
    }

    /// The peer's permissions, once trusted.
    pub fn permissions(&self) -> Permissions {
        match (&self.hello, self.state) {
            (Some(hello), LinkState::Trusted) => hello.token.permissions,
            _ => Permissions::NONE,
        }
    }
}

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
    /// The peer's token does not allow what the message asks.
    #[error("the peer's token does not allow sending a {0}")]
    NotPermitted(&'static str),
}

/// Why a handshake failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The token's signature or peer does not verify (wrong room key).
    #[error("invalid capability token")]
    InvalidToken,
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
    /// No frame for [`SessionConfig::lost_after`].
    Silent,
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
    },
    /// A whole tensor arrived from a trusted peer, within its permissions.
    Tensor(ReceivedTensor),
    /// The socket was rebuilt because too few peers connected in time.
    Reconnected {
        /// Rebuilds so far.
        attempt: u32,
    },
}

/// Why a tensor could not be sent.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The peer is not (or no longer) trusted.
    #[error("peer is not trusted")]
    NotTrusted,
    /// The socket's message loop has stopped.
    #[error("the socket is closed")]
    SocketClosed,
    /// The tensor has too many dimensions or values for the wire format.
    #[error("the tensor is too large for the wire format")]
    TooLarge,
}

/// This player's session in a matchbox room.
#[derive(Resource)]
pub struct PeerSession {
    config: SessionConfig,
    keys: RoomKeys,
    socket: WebRtcSocket,
    own: Option<PeerUuid>,
    ids: HashMap<PeerUuid, PeerId>,
    links: HashMap<PeerUuid, PeerLink>,
    send_sequences: HashMap<PeerUuid, u64>,
    reassembler: Reassembler,
    next_nonce: u64,
    last_progress: Instant,
    reconnects: u32,
    corrupt_next_tensor: bool,
    last_poll: Instant,
    reached_expected: bool,
    rejected_total: u64,
}

fn open_socket(url: &str, ice_servers: &[String]) -> WebRtcSocket {
    let (socket, message_loop) = WebRtcSocket::builder(url)
        .ice_server(RtcIceServerConfig { urls: ice_servers.to_vec(), username: None, credential: None })
        .add_reliable_channel()
        .build();
    let pool = IoTaskPool::get_or_init(TaskPool::new);
    pool.spawn(async move {
        if let Err(error) = message_loop.await {
            bevy::log::warn!("matchbox message loop ended: {error}");
        }
    })
    .detach();
    socket
}

impl PeerSession {
    /// Joins the room (the connection is set up in the background).
    pub fn connect(config: SessionConfig) -> Self {
        let socket = open_socket(&config.room_url, &config.ice_servers);
        Self {
            keys: RoomKeys::derive(&config.room_key),
            reassembler: Reassembler::new(config.limits),
            config,
            socket,
            own: None,
            ids: HashMap::new(),
            links: HashMap::new(),
            send_sequences: HashMap::new(),
            next_nonce: 0,
            last_progress: Instant::now(),
            reconnects: 0,
            corrupt_next_tensor: false,
            last_poll: Instant::now(),
            reached_expected: false,
            rejected_total: 0,
        }
    }

    /// This peer's id, once the signaling server has assigned one.
    pub fn id(&self) -> Option<PeerUuid> {
        self.own
    }

    /// The session's configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Messages dropped since joining, from every peer (including peers that have left).
    pub fn rejected_total(&self) -> u64 {
        self.rejected_total
    }

    /// Every peer seen, with its link state.
    pub fn links(&self) -> impl Iterator<Item = (PeerUuid, &PeerLink)> {
        self.links.iter().map(|(id, link)| (*id, link))
    }

    /// The link to `peer`.
    pub fn link(&self, peer: PeerUuid) -> Option<&PeerLink> {
        self.links.get(&peer)
    }

    /// Trusted peers whose token allows `permissions`.
    pub fn trusted_with(&self, permissions: Permissions) -> Vec<(PeerUuid, &PeerLink)> {
        let mut peers: Vec<_> = self.links().filter(|(_, l)| l.permissions().contains(permissions) && l.state == LinkState::Trusted).collect();
        peers.sort_by_key(|(id, _)| *id);
        peers
    }

    /// Handles everything that arrived since the last call, sends due hellos and heartbeats,
    /// and detects lost peers. Call once per frame.
    pub fn poll(&mut self, now: Instant) -> Vec<SessionEvent> {
        let mut events = Vec::new();
        // A long frame on this side (a hitch, a shader compile) is not the peers' silence:
        // frames they sent meanwhile are still queued, so credit them the stall.
        let stall = now.saturating_duration_since(self.last_poll);
        self.last_poll = now;
        if stall > self.config.heartbeat * 2 {
            for link in self.links.values_mut() {
                link.last_heard += stall;
            }
        }
        if self.own.is_none() {
            self.own = self.socket.id().map(|id| PeerUuid(id.0.into_bytes()));
        }
        let changes = match self.socket.try_update_peers() {
            Ok(changes) => changes,
            Err(_) => {
                self.rebuild(now, &mut events);
                return events;
            }
        };
        for (peer, state) in changes {
            let uuid = PeerUuid(peer.0.into_bytes());
            match state {
                PeerState::Connected => {
                    self.ids.insert(uuid, peer);
                    self.links.insert(uuid, PeerLink::new(now));
                }
                PeerState::Disconnected => {
                    self.ids.remove(&uuid);
                    if self.links.remove(&uuid).is_some() {
                        self.reassembler.forget_peer(uuid);
                        events.push(SessionEvent::PeerLost { peer: uuid, reason: LostReason::Disconnected });
                    }
                }
            }
        }
        if self.own.is_some() {
            for (peer, packet) in self.socket.channel_mut(0).receive() {
                self.handle_frame(PeerUuid(peer.0.into_bytes()), &packet, now, &mut events);
            }
        }
        for (peer, _, _) in self.reassembler.expire(now) {
            if let Some(link) = self.links.get_mut(&peer) {
                link.rejected += 1;
            }
        }
        self.housekeeping(now, &mut events);
        self.rejected_total += events.iter().filter(|e| matches!(e, SessionEvent::Rejected { .. })).count() as u64;
        events
    }

    fn handle_frame(&mut self, from: PeerUuid, frame: &[u8], now: Instant, events: &mut Vec<SessionEvent>) {
        let own = self.own.expect("frames are handled once the id is known");
        if !self.links.contains_key(&from) {
            if !self.ids.contains_key(&from) {
                return;
            }
            // Declared lost for silence but still connected and talking again (a long stall on
            // its side): start a fresh handshake instead of ignoring it forever.
            self.links.insert(from, PeerLink::new(now));
        }
        let link = self.links.get_mut(&from).expect("inserted above");
        let reject = |link: &mut PeerLink, events: &mut Vec<SessionEvent>, reason: RejectReason| {
            link.rejected += 1;
            events.push(SessionEvent::Rejected { peer: from, reason });
        };
        let (sequence, message) = match decode_frame(&self.keys, from, own, frame) {
            Ok(decoded) => decoded,
            Err(error) => return reject(link, events, error.into()),
        };
        if let Err(replay) = link.replay.accept(sequence) {
            return reject(link, events, replay.into());
        }
        link.last_heard = now;
        link.bytes_in += frame.len() as u64;
        if link.state == LinkState::Refused {
            return reject(link, events, RejectReason::Untrusted(message.kind_name()));
        }
        match message {
            Message::Hello(hello) => {
                // A hello that does not acknowledge ours means ours was lost (or the peer
                // restarted its handshake): send ours again.
                link.they_acknowledged = hello.acknowledged;
                link.owe_hello |= !hello.acknowledged;
                if link.state == LinkState::Trusted {
                    return;
                }
                let failure = if !self.keys.verify_token(from, &hello.token) {
                    Some(HandshakeError::InvalidToken)
                } else if hello.model_hash != self.config.model_hash {
                    Some(HandshakeError::ModelMismatch)
                } else {
                    None
                };
                if let Some(reason) = failure {
                    link.state = LinkState::Refused;
                    events.push(SessionEvent::HandshakeFailed { peer: from, reason });
                    return;
                }
                link.state = LinkState::Trusted;
                events.push(SessionEvent::PeerTrusted {
                    peer: from,
                    capabilities: hello.capabilities.clone(),
                    permissions: hello.token.permissions,
                });
                link.hello = Some(hello);
                // Tell the peer right away that its hello was accepted.
                link.owe_hello = true;
                self.last_progress = now;
            }
            other if link.state != LinkState::Trusted => reject(link, events, RejectReason::Untrusted(other.kind_name())),
            Message::Ping { nonce } => {
                self.send(from, &Message::Pong { nonce });
            }
            Message::Pong { nonce } => {
                if let Some(sent) = link.pings.remove(&nonce) {
                    link.rtt.record(now - sent);
                }
            }
            Message::Tensor(chunk) => {
                let needed = match chunk.header.direction {
                    Direction::StageInput => Permissions::SUBMIT_REQUESTS,
                    Direction::StageOutput => Permissions::RUN_STAGES,
                };
                let ours = match chunk.header.direction {
                    Direction::StageInput => Permissions::RUN_STAGES,
                    Direction::StageOutput => Permissions::SUBMIT_REQUESTS,
                };
                if !link.permissions().contains(needed) || !self.config.permissions.contains(ours) {
                    return reject(link, events, RejectReason::NotPermitted("tensor"));
                }
                match self.reassembler.push(from, chunk, now) {
                    Ok(Some(tensor)) => events.push(SessionEvent::Tensor(tensor)),
                    Ok(None) => {}
                    Err(error) => reject(link, events, error.into()),
                }
            }
        }
    }

    fn housekeeping(&mut self, now: Instant, events: &mut Vec<SessionEvent>) {
        let Some(own) = self.own else { return };
        let mut lost = Vec::new();
        let mut due_hellos = Vec::new();
        let mut due_pings = Vec::new();
        for (&peer, link) in &mut self.links {
            match link.state {
                LinkState::Handshaking if now - link.connected_at > self.config.handshake_timeout => {
                    link.state = LinkState::Refused;
                    events.push(SessionEvent::HandshakeFailed { peer, reason: HandshakeError::Timeout(self.config.handshake_timeout) });
                }
                LinkState::Trusted if now - link.last_heard > self.config.lost_after => lost.push(peer),
                _ => {}
            }
            let retry_due = !(link.state == LinkState::Trusted && link.they_acknowledged)
                && link.last_hello.is_none_or(|t| now - t >= self.config.hello_retry);
            if link.state != LinkState::Refused && (link.owe_hello || retry_due) {
                link.owe_hello = false;
                link.last_hello = Some(now);
                due_hellos.push((peer, link.state == LinkState::Trusted));
            }
            if link.state == LinkState::Trusted && now - link.last_ping >= self.config.heartbeat {
                link.last_ping = now;
                let nonce = self.next_nonce;
                self.next_nonce += 1;
                link.pings.retain(|_, sent| now - *sent < Duration::from_secs(5));
                link.pings.insert(nonce, now);
                due_pings.push((peer, nonce));
            }
        }
        for peer in lost {
            self.links.remove(&peer);
            self.reassembler.forget_peer(peer);
            events.push(SessionEvent::PeerLost { peer, reason: LostReason::Silent });
        }
        for (peer, acknowledged) in due_hellos {
            let hello = Hello {
                model_hash: self.config.model_hash,
                capabilities: self.config.capabilities.clone(),
                token: self.keys.issue_token(own, self.config.permissions),
                acknowledged,
            };
            self.send(peer, &Message::Hello(hello));
        }
        for (peer, nonce) in due_pings {
            self.send(peer, &Message::Ping { nonce });
        }
        // Only the initial connection is retried: once the expected peers were all here, a
        // missing one is a lost peer, handled by the scheduler, not a stalled socket.
        let trusted = self.links.values().filter(|l| l.state == LinkState::Trusted).count();
        self.reached_expected |= trusted >= self.config.expected_peers;
        if !self.reached_expected && now - self.last_progress > self.config.reconnect_after {
            self.rebuild(now, events);
        }
    }

    fn rebuild(&mut self, now: Instant, events: &mut Vec<SessionEvent>) {
        self.socket.close();
        self.socket = open_socket(&self.config.room_url, &self.config.ice_servers);
        self.own = None;
        for peer in self.links.keys() {
            events.push(SessionEvent::PeerLost { peer: *peer, reason: LostReason::Disconnected });
        }
        self.links.clear();
        self.ids.clear();
        self.send_sequences.clear();
        self.reassembler = Reassembler::new(self.config.limits);
        self.reconnects += 1;
        self.last_progress = now;
        self.reached_expected = false;
        events.push(SessionEvent::Reconnected { attempt: self.reconnects });
    }

    fn send(&mut self, peer: PeerUuid, message: &Message) -> bool {
        let (Some(own), Some(&id), Some(link)) = (self.own, self.ids.get(&peer), self.links.get_mut(&peer)) else {
            return false;
        };
        // Sequence numbers survive a link being re-created, so the peer's replay guard keeps
        // accepting this side's frames.
        let sequence = self.send_sequences.entry(peer).or_insert(0);
        *sequence += 1;
        let mut frame = encode_frame(&self.keys, own, peer, *sequence, message);
        if self.corrupt_next_tensor && matches!(message, Message::Tensor(_)) {
            self.corrupt_next_tensor = false;
            let middle = frame.len() / 2;
            frame[middle] ^= 0x01;
        }
        link.bytes_out += frame.len() as u64;
        self.socket.channel_mut(0).try_send(matchbox_socket::Packet::from(frame), id).is_ok()
    }

    /// Encodes `tensor` as `dtype`, chunks it and sends it to a trusted peer. `run` is how long
    /// this peer took for the stage (outputs only). Returns the bytes put on the wire.
    #[allow(clippy::too_many_arguments)]
    pub fn send_tensor(
        &mut self,
        peer: PeerUuid,
        request: u64,
        stage: u16,
        direction: Direction,
        tensor: &Tensor,
        dtype: TransferDtype,
        run: Duration,
    ) -> Result<u64, SendError> {
        if self.links.get(&peer).is_none_or(|l| l.state != LinkState::Trusted) {
            return Err(SendError::NotTrusted);
        }
        if tensor.shape().len() > super::codec::MAX_RANK || tensor.shape().iter().any(|&d| d > u32::MAX as usize) {
            return Err(SendError::TooLarge);
        }
        let (payload, params) = encode_values(tensor.data(), dtype);
        let total_bytes = u32::try_from(payload.len()).map_err(|_| SendError::TooLarge)?;
        let header = TensorHeader {
            request,
            stage,
            direction,
            dtype,
            shape: tensor.shape().iter().map(|&d| d as u32).collect(),
            params,
            total_bytes,
            run_us: run.as_micros().min(u32::MAX as u128) as u32,
        };
        let before = self.links[&peer].bytes_out;
        for chunk in split_into_chunks(header, &payload) {
            if !self.send(peer, &Message::Tensor(chunk)) {
                return Err(SendError::SocketClosed);
            }
        }
        Ok(self.links[&peer].bytes_out - before)
    }

    /// Fault injection for tests and demos: flips one bit of the next tensor frame after it
    /// has been authenticated, as a corrupting network or a tampering peer would.
    pub fn corrupt_next_tensor_frame(&mut self) {
        self.corrupt_next_tensor = true;
    }
}
