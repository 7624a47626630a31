//! The socket side of a [`super::session::PeerSession`]: it owns the matchbox socket and moves
//! frames between it and the [`Links`] state machine, off the game's frame. Natively it runs on
//! a thread of its own that sleeps until a frame or a peer change arrives, the game asks for a
//! send, or the next tick is due ([`TICK`]): heartbeats are answered, MACs checked and tensors
//! chunked and reassembled as they come, and round-trip times measure the network, not the frame
//! rate. In the browser (no threads) the game's frame pumps it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bevy::platform::time::Instant;
use bevy::tasks::{IoTaskPool, TaskPool};
use crossbeam_channel::Sender;
use super::ice::{merged, IceServer};
use matchbox_socket::{ChannelConfig, Packet, PeerId, PeerState, RtcIceServerConfig, WebRtcChannel, WebRtcSocket};

use super::auth::PeerUuid;
use super::codec::{Direction, Lane};
use super::links::{LinkSettings, Links, ReconnectPolicy, SendError, SentTensor, SessionEvent};
use super::reassembly::ReceivedTensor;
use crate::tensor::{Tensor, TransferDtype};

/// How often the transport ticks the links (hellos, heartbeats, loss, expiry) when nothing
/// arrives.
#[cfg(not(target_arch = "wasm32"))]
const TICK: Duration = Duration::from_millis(5);

/// How to join a room, and the link settings to use with the peers found there.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Matchbox room URL, e.g. `ws://127.0.0.1:3536/inference`.
    pub room_url: String,
    /// STUN and TURN servers for ICE (a URL converts into one; a TURN relay takes a username
    /// and credential, see [`IceServer::turn_rest`]). Empty by default: host candidates only,
    /// which reach peers on the same machine or network and contact no outside server. Players
    /// behind different NATs need a STUN server, and behind symmetric NATs a TURN relay.
    pub ice_servers: Vec<IceServer>,
    /// Certificates (DER) trusted for a `wss://` room URL besides the web's public roots: a
    /// signalling server with the game's own certificate authority, or a self-signed one in
    /// development. Natively only; in the browser the browser's trust store decides.
    pub signaling_roots: Vec<Vec<u8>>,
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
        Self { room_url: room_url.into(), ice_servers: Vec::new(), signaling_roots: Vec::new(), reconnect_after: Duration::from_secs(8), expected_peers: 0, link }
    }
}

/// What the game asks of the transport.
#[expect(clippy::large_enum_variant, reason = "commands pass through a channel one at a time; the tensor variant is the common one")]
pub(super) enum SessionCommand {
    /// Encode, chunk and send a tensor; answered by [`SessionEvent::TensorSent`] or
    /// [`SessionEvent::SendFailed`].
    SendTensor {
        /// Receiver and place in a request.
        tensor: SentTensor,
        /// The values.
        value: Tensor,
        /// How they travel.
        dtype: TransferDtype,
    },
    /// From now on, pass every verified stage input through this handler as it arrives.
    ServeStageInputs(StageInputHandler),
}

/// Takes the stage inputs peers send on the transport's side, the moment they are verified,
/// so that the stage can start without waiting for the game's frame. It returns the tensors it
/// does not take; those reach the game as [`SessionEvent::Tensor`].
pub type StageInputHandler = Box<dyn FnMut(ReceivedTensor) -> Option<ReceivedTensor> + Send + Sync>;

/// Why the transport woke up.
enum Wake {
    /// Its tick (or, in the browser, the game's frame).
    Tick,
    /// A frame arrived.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    Packet(Lane, PeerId, Packet),
    /// A peer connected or left.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    Peer(PeerId, PeerState),
    /// The game asked for something.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    Command(SessionCommand),
    /// The socket's message loop ended.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    SocketClosed,
    /// The session was dropped.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    Stopped,
}

/// A socket's two data channels, one per [`Lane`]: tensor chunks in order on `bulk`; control
/// frames on `control`, reliable but unordered, which SCTP sends ahead of queued ordered data.
struct Channels {
    bulk: WebRtcChannel,
    control: WebRtcChannel,
}

impl Channels {
    fn lane(&mut self, lane: Lane) -> &mut WebRtcChannel {
        match lane {
            Lane::Bulk => &mut self.bulk,
            Lane::Control => &mut self.control,
        }
    }
}

/// The matchbox socket and its channels, the links it feeds, and the channels to the game.
pub(super) struct Transport {
    config: SessionConfig,
    socket: WebRtcSocket,
    channels: Channels,
    ids: HashMap<PeerUuid, PeerId>,
    links: Arc<Mutex<Links>>,
    reconnect: ReconnectPolicy,
    commands: async_channel::Receiver<SessionCommand>,
    events: Sender<SessionEvent>,
    stage_inputs: Option<StageInputHandler>,
}

fn open_socket(config: &SessionConfig) -> (WebRtcSocket, Channels) {
    let (ice, dropped) = merged(&config.ice_servers);
    for server in dropped {
        bevy::log::error!("ICE server {:?} left out: the transport takes one set of TURN credentials (those of {:?})", server.urls, ice.urls);
    }
    #[allow(unused_mut)]
    let mut builder = WebRtcSocket::builder(&config.room_url)
        .ice_server(RtcIceServerConfig { urls: ice.urls, username: ice.username, credential: ice.credential })
        .add_reliable_channel()
        .add_channel(ChannelConfig { ordered: false, max_retransmits: None });
    #[cfg(not(target_arch = "wasm32"))]
    if !config.signaling_roots.is_empty() {
        match super::signaller::TrustingSignallerBuilder::new(&config.signaling_roots) {
            Ok(signaller) => builder = builder.signaller_builder(Arc::new(signaller)),
            Err(error) => bevy::log::error!("{error}: the signaling server is trusted only if the web's public roots vouch for it"),
        }
    }
    let (mut socket, message_loop) = builder.build();
    let pool = IoTaskPool::get_or_init(TaskPool::new);
    pool.spawn(async move {
        if let Err(error) = message_loop.await {
            bevy::log::warn!("matchbox message loop ended: {error}");
        }
    })
    .detach();
    let bulk = socket.take_channel(0).expect("the socket was built with two channels");
    let control = socket.take_channel(1).expect("the socket was built with two channels");
    (socket, Channels { bulk, control })
}

fn uuid(peer: PeerId) -> PeerUuid {
    PeerUuid(peer.0.into_bytes())
}

/// Locks the links; a panic while they were locked leaves them usable (every method leaves
/// them consistent between calls).
pub(super) fn lock(links: &Mutex<Links>) -> MutexGuard<'_, Links> {
    links.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Transport {
    /// Joins the room; the connection is set up in the background.
    pub(super) fn connect(config: SessionConfig, links: Arc<Mutex<Links>>, commands: async_channel::Receiver<SessionCommand>, events: Sender<SessionEvent>) -> Self {
        let (socket, channels) = open_socket(&config);
        let reconnect = ReconnectPolicy::new(config.expected_peers, config.reconnect_after, Instant::now());
        Self { config, socket, channels, ids: HashMap::new(), links, reconnect, commands, events, stage_inputs: None }
    }

    /// Runs the transport on a thread of its own until the session is dropped.
    #[cfg(not(target_arch = "wasm32"))]
    pub(super) fn spawn(self) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("p2p transport".into())
            .spawn(move || async_io::block_on(self.run()))
            .expect("the OS refused a thread for the p2p transport")
    }

    #[cfg(not(target_arch = "wasm32"))]
    async fn run(mut self) {
        loop {
            match self.next_wake().await {
                Wake::Stopped => break,
                wake => self.pump(Instant::now(), wake),
            }
        }
        self.socket.close();
    }

    /// Sleeps until something arrives or the next tick is due.
    #[cfg(not(target_arch = "wasm32"))]
    async fn next_wake(&mut self) -> Wake {
        use futures_lite::future::or;
        use futures_lite::StreamExt;
        let Self { socket, channels: Channels { bulk, control }, commands, .. } = self;
        let command = async { commands.recv().await.map_or(Wake::Stopped, Wake::Command) };
        let control = async { control.next().await.map_or(Wake::SocketClosed, |(peer, packet)| Wake::Packet(Lane::Control, peer, packet)) };
        let bulk = async { bulk.next().await.map_or(Wake::SocketClosed, |(peer, packet)| Wake::Packet(Lane::Bulk, peer, packet)) };
        let packet = or(control, bulk);
        let peer = async { socket.next().await.map_or(Wake::SocketClosed, |(peer, state)| Wake::Peer(peer, state)) };
        let tick = async {
            async_io::Timer::after(TICK).await;
            Wake::Tick
        };
        or(or(command, packet), or(peer, tick)).await
    }

    /// Pumps once from the game's frame (in the browser, where there is no thread).
    #[cfg(target_arch = "wasm32")]
    pub(super) fn pump_from_frame(&mut self, now: Instant) {
        self.pump(now, Wake::Tick);
    }

    /// Handles what woke the transport and everything else that arrived meanwhile, ticks the
    /// links, rebuilds the socket when the reconnect policy says so, sends what the links
    /// queued, and hands the events to the game.
    fn pump(&mut self, now: Instant, wake: Wake) {
        let mut events = Vec::new();
        let links = self.links.clone();
        let mut links = lock(&links);
        if links.own_id().is_none()
            && let Some(id) = self.socket.id()
        {
            links.set_own_id(uuid(id));
        }
        let mut closed = matches!(wake, Wake::SocketClosed);
        let mut first_packet = None;
        let mut commands = Vec::new();
        match wake {
            Wake::Peer(peer, state) => self.peer_changed(&mut links, peer, state, now, &mut events),
            Wake::Packet(lane, peer, packet) => first_packet = Some((lane, peer, packet)),
            Wake::Command(command) => commands.push(command),
            Wake::Tick | Wake::SocketClosed | Wake::Stopped => {}
        }
        match self.socket.try_update_peers() {
            Ok(changes) => changes.into_iter().for_each(|(peer, state)| self.peer_changed(&mut links, peer, state, now, &mut events)),
            Err(_) => closed = true,
        }
        if closed {
            let attempt = self.reconnect.rebuilt(now);
            self.rebuild(&mut links, attempt, &mut events);
            drop(links);
            self.publish(events);
            return;
        }
        if links.own_id().is_some() {
            // Each packet is stamped as it is handled, so that a tensor's receiving time
            // covers its chunks' arrival and checks rather than one wake-up's batch.
            // Control frames first: a hello that arrived beside a tensor's chunks lets them in.
            let (mut control, mut bulk) = (Vec::new(), Vec::new());
            if let Some((lane, peer, packet)) = first_packet {
                if lane == Lane::Control { &mut control } else { &mut bulk }.push((peer, packet));
            }
            control.extend(self.channels.control.receive());
            bulk.extend(self.channels.bulk.receive());
            for (peer, packet) in control.into_iter().chain(bulk) {
                links.receive(uuid(peer), &packet, Instant::now(), &mut events);
            }
        }
        commands.extend(std::iter::from_fn(|| self.commands.try_recv().ok()));
        for command in commands {
            self.command(&mut links, command, &mut events);
        }
        links.tick(now, &mut events);
        if self.reconnect.rebuild_due(&events, links.trusted_count(), now) {
            let attempt = self.reconnect.attempts();
            self.rebuild(&mut links, attempt, &mut events);
        } else {
            self.flush(&mut links);
        }
        drop(links);
        self.publish(events);
    }

    fn peer_changed(&mut self, links: &mut Links, peer: PeerId, state: PeerState, now: Instant, events: &mut Vec<SessionEvent>) {
        match state {
            PeerState::Connected => {
                self.ids.insert(uuid(peer), peer);
                links.peer_connected(uuid(peer), now);
            }
            PeerState::Disconnected => {
                self.ids.remove(&uuid(peer));
                links.peer_disconnected(uuid(peer), events);
            }
        }
    }

    fn command(&mut self, links: &mut Links, command: SessionCommand, events: &mut Vec<SessionEvent>) {
        match command {
            // A chain's next stage that is this player's own: straight back in, as if received.
            SessionCommand::SendTensor { tensor, value, dtype } if links.own_id() == Some(tensor.peer) => match links.loop_back(&tensor, &value, dtype) {
                Ok(received) => events.extend([SessionEvent::Tensor(received), SessionEvent::TensorSent { tensor, bytes: 0 }]),
                Err(error) => events.push(SessionEvent::SendFailed { tensor, error }),
            },
            SessionCommand::SendTensor { tensor, value, dtype } => {
                // A chain's next peer that is not (yet, or no longer) trusted here: the output
                // goes back to the chain's owner, which moves the request on from there.
                let (tensor, sent) = match (links.send_tensor(&tensor, &value, dtype), tensor.back_to_owner()) {
                    (Err(SendError::NotTrusted), Some(back)) => {
                        let sent = links.send_tensor(&back, &value, dtype);
                        (back, sent)
                    }
                    (sent, _) => (tensor, sent),
                };
                let sent = sent.and_then(|bytes| if self.flush(links) { Ok(bytes) } else { Err(SendError::SocketClosed) });
                events.push(match sent {
                    Ok(bytes) => SessionEvent::TensorSent { tensor, bytes },
                    Err(error) => SessionEvent::SendFailed { tensor, error },
                });
            }
            SessionCommand::ServeStageInputs(handler) => self.stage_inputs = Some(handler),
        }
    }

    fn rebuild(&mut self, links: &mut Links, attempt: u32, events: &mut Vec<SessionEvent>) {
        self.socket.close();
        (self.socket, self.channels) = open_socket(&self.config);
        links.reset(events);
        self.ids.clear();
        events.push(SessionEvent::Reconnected { attempt });
    }

    /// Sends the frames the links queued; `false` if the socket refused one.
    fn flush(&mut self, links: &mut Links) -> bool {
        let mut all_sent = true;
        for frame in links.drain_outgoing() {
            let sent = self.ids.get(&frame.to).is_some_and(|&id| self.channels.lane(frame.lane).try_send(Packet::from(frame.bytes), id).is_ok());
            all_sent &= sent;
        }
        all_sent
    }

    fn publish(&mut self, events: Vec<SessionEvent>) {
        for event in events {
            let event = match (event, &mut self.stage_inputs) {
                (SessionEvent::Tensor(received), Some(handler)) if received.direction == Direction::StageInput => match handler(received) {
                    Some(untaken) => SessionEvent::Tensor(untaken),
                    None => continue,
                },
                (event, _) => event,
            };
            // The game's end is gone only when the session is being dropped.
            let _ = self.events.send(event);
        }
    }
}
