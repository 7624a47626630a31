//! [`PeerSession`]: the thin adapter between a matchbox WebRTC socket and the sans-IO
//! [`Links`] state machine. Once per frame it reports the socket's peer changes and frames to the
//! links, ticks them, rebuilds the socket when the [`ReconnectPolicy`] says so, and sends the
//! frames the links queued. It is a Bevy resource but holds no ECS logic.

use std::collections::HashMap;
use std::time::Duration;

use bevy::platform::time::Instant;
use bevy::prelude::Resource;
use bevy::tasks::{IoTaskPool, TaskPool};
use matchbox_socket::{PeerId, PeerState, RtcIceServerConfig, WebRtcSocket};

use super::auth::{PeerUuid, Permissions};
use super::codec::Direction;
use super::links::{LinkSettings, Links, PeerLink, ReconnectPolicy, SendError, SessionEvent};
use crate::tensor::{Tensor, TransferDtype};

/// How to join a room, and the link settings to use with the peers found there.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Matchbox room URL, e.g. `ws://127.0.0.1:3536/inference`.
    pub room_url: String,
    /// STUN/TURN server URLs for ICE. Empty by default: host candidates only, which reach
    /// peers on the same machine or network and contact no outside server. Players behind
    /// different NATs need a STUN (or TURN) server here.
    pub ice_servers: Vec<String>,
    /// Rebuild the socket when fewer than [`Self::expected_peers`] have become trusted this
    /// long after joining or after the last one did (matchbox's connection setup occasionally
    /// hangs). Once all expected peers were trusted, the socket is never rebuilt.
    pub reconnect_after: Duration,
    /// Peers this one waits for before considering the session complete (0: no expectation).
    pub expected_peers: usize,
    /// Handshake, heartbeats, limits.
    pub link: LinkSettings,
}

impl SessionConfig {
    /// A configuration for `room_url` with the link settings' defaults and an 8 s reconnect.
    pub fn new(room_url: impl Into<String>, link: LinkSettings) -> Self {
        Self { room_url: room_url.into(), ice_servers: Vec::new(), reconnect_after: Duration::from_secs(8), expected_peers: 0, link }
    }
}

/// This player's session in a matchbox room.
#[derive(Resource)]
pub struct PeerSession {
    config: SessionConfig,
    socket: WebRtcSocket,
    ids: HashMap<PeerUuid, PeerId>,
    links: Links,
    reconnect: ReconnectPolicy,
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

fn uuid(peer: PeerId) -> PeerUuid {
    PeerUuid(peer.0.into_bytes())
}

impl PeerSession {
    /// Joins the room (the connection is set up in the background).
    pub fn connect(config: SessionConfig) -> Self {
        let now = Instant::now();
        Self {
            socket: open_socket(&config.room_url, &config.ice_servers),
            links: Links::new(config.link.clone(), now),
            reconnect: ReconnectPolicy::new(config.expected_peers, config.reconnect_after, now),
            ids: HashMap::new(),
            config,
        }
    }

    /// This peer's id, once the signaling server has assigned one.
    pub fn id(&self) -> Option<PeerUuid> {
        self.links.own_id()
    }

    /// The session's configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Messages dropped since joining, from every peer (including peers that have left).
    pub fn rejected_total(&self) -> u64 {
        self.links.rejected_total()
    }

    /// Every peer seen, with its link state.
    pub fn links(&self) -> impl Iterator<Item = (PeerUuid, &PeerLink)> {
        self.links.links()
    }

    /// The link to `peer`.
    pub fn link(&self, peer: PeerUuid) -> Option<&PeerLink> {
        self.links.link(peer)
    }

    /// Trusted peers whose token allows `permissions`.
    pub fn trusted_with(&self, permissions: Permissions) -> Vec<(PeerUuid, &PeerLink)> {
        self.links.trusted_with(permissions)
    }

    /// Handles everything that arrived since the last call, sends due hellos and heartbeats,
    /// and detects lost peers. Call once per frame.
    pub fn poll(&mut self, now: Instant) -> Vec<SessionEvent> {
        let mut events = Vec::new();
        if self.links.own_id().is_none()
            && let Some(id) = self.socket.id()
        {
            self.links.set_own_id(uuid(id));
        }
        let Ok(changes) = self.socket.try_update_peers() else {
            let attempt = self.reconnect.rebuilt(now);
            self.rebuild(attempt, &mut events);
            return events;
        };
        for (peer, state) in changes {
            match state {
                PeerState::Connected => {
                    self.ids.insert(uuid(peer), peer);
                    self.links.peer_connected(uuid(peer), now);
                }
                PeerState::Disconnected => {
                    self.ids.remove(&uuid(peer));
                    self.links.peer_disconnected(uuid(peer), &mut events);
                }
            }
        }
        if self.links.own_id().is_some() {
            for (peer, packet) in self.socket.channel_mut(0).receive() {
                self.links.receive(uuid(peer), &packet, now, &mut events);
            }
        }
        self.links.tick(now, &mut events);
        if self.reconnect.rebuild_due(&events, self.links.trusted_count(), now) {
            let attempt = self.reconnect.attempts();
            self.rebuild(attempt, &mut events);
            return events;
        }
        self.flush();
        events
    }

    fn rebuild(&mut self, attempt: u32, events: &mut Vec<SessionEvent>) {
        self.socket.close();
        self.socket = open_socket(&self.config.room_url, &self.config.ice_servers);
        self.links.reset(events);
        self.ids.clear();
        events.push(SessionEvent::Reconnected { attempt });
    }

    /// Sends the frames the links queued; `false` if the socket refused one.
    fn flush(&mut self) -> bool {
        let mut all_sent = true;
        for frame in self.links.drain_outgoing() {
            let sent = self.ids.get(&frame.to).is_some_and(|&id| self.socket.channel_mut(0).try_send(matchbox_socket::Packet::from(frame.bytes), id).is_ok());
            all_sent &= sent;
        }
        all_sent
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
        let bytes = self.links.send_tensor(peer, request, stage, direction, tensor, dtype, run)?;
        if !self.flush() {
            return Err(SendError::SocketClosed);
        }
        Ok(bytes)
    }

    /// Fault injection for tests and demos (feature `fault-injection`): flips one bit of the
    /// next tensor frame after it has been authenticated, as a corrupting network or a
    /// tampering peer would.
    #[cfg(feature = "fault-injection")]
    pub fn corrupt_next_tensor_frame(&mut self) {
        self.links.corrupt_next_tensor_frame();
    }
}
