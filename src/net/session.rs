//! [`PeerSession`]: this player's session in a matchbox room, as the game sees it. The socket
//! side (`super::transport`) runs off the frame, on a thread of its own (in the browser, pumped by
//! the frame): the game takes the events it produced with [`PeerSession::poll`], asks for sends
//! with [`PeerSession::send_tensor`], and reads the links' state through [`PeerSession::links`].
//! It is a Bevy resource but holds no ECS logic.

use std::sync::{Arc, Mutex, MutexGuard};

use bevy::platform::time::Instant;
use bevy::prelude::Resource;
use crossbeam_channel::Receiver;

use super::auth::PeerUuid;
use super::links::{Links, RevokeError, SendError, SentTensor, SessionEvent};
use super::transport::{lock, SessionCommand, Transport};
pub use super::transport::{SessionConfig, StageInputHandler};
use crate::tensor::{Tensor, TransferDtype};

/// This player's session in a matchbox room.
#[derive(Resource)]
pub struct PeerSession {
    config: SessionConfig,
    links: Arc<Mutex<Links>>,
    commands: async_channel::Sender<SessionCommand>,
    events: Receiver<SessionEvent>,
    /// Events of the game's own calls ([`Self::revoke`]), delivered with the next poll.
    own_events: Vec<SessionEvent>,
    #[cfg(not(target_arch = "wasm32"))]
    transport: Option<std::thread::JoinHandle<()>>,
    #[cfg(target_arch = "wasm32")]
    transport: Transport,
}

impl PeerSession {
    /// Joins the room (the connection is set up in the background).
    pub fn connect(config: SessionConfig) -> Self {
        let links = Arc::new(Mutex::new(Links::new(config.link.clone(), Instant::now())));
        let (commands, command_receiver) = async_channel::unbounded();
        let (event_sender, events) = crossbeam_channel::unbounded();
        let transport = Transport::connect(config.clone(), links.clone(), command_receiver, event_sender);
        #[cfg(not(target_arch = "wasm32"))]
        let transport = Some(transport.spawn());
        Self { config, links, commands, events, own_events: Vec::new(), transport }
    }

    /// This peer's id, once the signaling server has assigned one.
    pub fn id(&self) -> Option<PeerUuid> {
        self.links().own_id()
    }

    /// The session's configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Messages dropped since joining, from every peer (including peers that have left).
    pub fn rejected_total(&self) -> u64 {
        self.links().rejected_total()
    }

    /// The links to every peer seen, locked while the guard lives (the transport waits for it:
    /// keep it short).
    pub fn links(&self) -> MutexGuard<'_, Links> {
        lock(&self.links)
    }

    /// Everything the session observed since the last call: peers trusted and lost, rejected
    /// messages, tensors received, sends done or failed. Call once per frame.
    pub fn poll(&mut self, now: Instant) -> Vec<SessionEvent> {
        #[cfg(target_arch = "wasm32")]
        self.transport.pump_from_frame(now);
        #[cfg(not(target_arch = "wasm32"))]
        let _ = now;
        let mut events = std::mem::take(&mut self.own_events);
        events.extend(self.events.try_iter());
        events
    }

    /// As the room's owner, revokes `peer` (see [`Links::revoke`]): the next [`Self::poll`]
    /// reports it lost, so that its work runs elsewhere, and every other player is told to
    /// refuse it.
    pub fn revoke(&mut self, peer: PeerUuid) -> Result<(), RevokeError> {
        let mut events = Vec::new();
        lock(&self.links).revoke(peer, &mut events)?;
        self.own_events.extend(events);
        Ok(())
    }

    /// Asks the transport to encode `value` as `dtype`, chunk it and send it as `tensor` says
    /// (to a trusted peer). The outcome comes
    /// back from [`Self::poll`] as [`SessionEvent::TensorSent`] or [`SessionEvent::SendFailed`];
    /// an error here means the transport has stopped.
    pub fn send_tensor(&mut self, tensor: SentTensor, value: Tensor, dtype: TransferDtype) -> Result<(), SendError> {
        self.tensor_sender().send(tensor, value, dtype)?;
        #[cfg(target_arch = "wasm32")]
        self.transport.pump_from_frame(Instant::now());
        Ok(())
    }

    /// A handle that sends tensors through this session from any thread (a stage's readback
    /// callback, say); outcomes come back from [`Self::poll`] as for [`Self::send_tensor`].
    pub fn tensor_sender(&self) -> TensorSender {
        TensorSender(self.commands.clone())
    }

    /// Passes every verified stage input through `handler` on the transport's side as it
    /// arrives (natively, on the transport's thread), so that a served stage starts at once.
    pub fn serve_stage_inputs(&mut self, handler: StageInputHandler) {
        let _ = self.commands.try_send(SessionCommand::ServeStageInputs(handler));
    }

    /// Fault injection for tests and demos (feature `fault-injection`): flips one bit of the
    /// next tensor frame after it has been authenticated, as a corrupting network or a
    /// tampering peer would.
    #[cfg(feature = "fault-injection")]
    pub fn corrupt_next_tensor_frame(&mut self) {
        self.links().corrupt_next_tensor_frame();
    }
}

/// Sends tensors through a [`PeerSession`] from any thread: see [`PeerSession::tensor_sender`].
#[derive(Clone)]
pub struct TensorSender(async_channel::Sender<SessionCommand>);

impl TensorSender {
    /// A sender whose session is gone: every send fails with [`SendError::SocketClosed`]. For
    /// tests of what hands tensors to a session.
    #[cfg(test)]
    pub(crate) fn closed() -> Self {
        let (sender, _) = async_channel::bounded(1);
        Self(sender)
    }

    /// As [`PeerSession::send_tensor`].
    pub fn send(&self, tensor: SentTensor, value: Tensor, dtype: TransferDtype) -> Result<(), SendError> {
        self.0.try_send(SessionCommand::SendTensor { tensor, value, dtype }).map_err(|_| SendError::SocketClosed)
    }
}

impl Drop for PeerSession {
    /// Stops the transport, which closes the socket.
    fn drop(&mut self) {
        self.commands.close();
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(thread) = self.transport.take() {
            let _ = thread.join();
        }
    }
}

