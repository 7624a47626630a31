//! [`Links`]: the per-peer link state machine, sans IO. Frames and `now` go in; events and
//! outgoing frames come out. It runs the key exchange that gives each link its keys (see
//! `pake.rs`; a peer without the room key is refused at its first authenticated frame), the
//! handshake (protocol version, model hash, capabilities,
//! a proof of identity over the receiver's fresh nonce and, in an owned room, the owner's token;
//! hellos repeated until acknowledged, refused on a bad proof or token, another model or a
//! timeout), the owner's grants, renewals and revocations, heartbeats and round-trip times,
//! loss on silence, re-handshake when a peer declared lost talks again, replay protection,
//! permissions and reassembly of chunked tensors. The
//! transport (a matchbox socket, or another `Links` in a test) only moves bytes: see
//! `session.rs` for the adapter.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bevy::platform::time::Instant;

use super::auth::{LinkKeys, PeerUuid, Permissions};
use super::codec::{decode_frame, Direction, FrameError, Hello, Lane, Message, TensorChunk, TensorHeader};
use super::route_ticket::{Hop, RouteTicket, TicketError};
use super::credentials::Credentials;
use super::pake::{is_exchange_frame, LinkKeyExchange};
pub use super::peer_link::{LinkSettings, LinkState, PeerLink};
use super::rate_limit::FrameAdmission;
pub use super::reconnect::ReconnectPolicy;
use super::seal::{session_nonce, Unsealed, SESSION_NONCE_BYTES};
use super::reassembly::Reassembler;
pub use super::link_events::{HandshakeError, LostReason, RejectReason, RevokeError, SendError, SentTensor, SessionEvent};


/// A frame for the transport to deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingFrame {
    /// The receiver.
    pub to: PeerUuid,
    /// The channel it goes on.
    pub lane: Lane,
    /// The authenticated frame.
    pub bytes: Vec<u8>,
}

/// This player's links to every peer the transport has connected, as a state machine without
/// IO: the transport reports connections and frames, calls [`Links::tick`] once per frame, and
/// delivers [`Links::drain_outgoing`].
pub struct Links {
    settings: LinkSettings,
    /// Each connected peer's keys, kept while the transport keeps it connected (a link
    /// re-created after silence goes on with its keys and their replay guard).
    keys: HashMap<PeerUuid, PeerKeys>,
    credentials: Credentials,
    own: Option<PeerUuid>,
    /// Peers the transport reports connected (a link may have been dropped for silence).
    connected: HashSet<PeerUuid>,
    links: HashMap<PeerUuid, PeerLink>,
    send_sequences: HashMap<(PeerUuid, Lane), u64>,
    /// This player's nonce for this session, sent in its hellos.
    session_nonce: [u8; SESSION_NONCE_BYTES],
    reassembler: Reassembler,
    next_nonce: u64,
    last_tick: Instant,
    rejected_total: u64,
    outgoing: Vec<OutgoingFrame>,
    #[cfg(feature = "fault-injection")]
    corrupt_next_tensor: bool,
}

impl Links {
    /// No peers yet; this player's own id comes with [`Self::set_own_id`].
    pub fn new(settings: LinkSettings, now: Instant) -> Self {
        Self {
            keys: HashMap::new(),
            credentials: Credentials::new(settings.authority.clone(), now),
            reassembler: Reassembler::new(settings.limits),
            settings,
            own: None,
            connected: HashSet::new(),
            links: HashMap::new(),
            send_sequences: HashMap::new(),
            session_nonce: session_nonce(),
            next_nonce: 0,
            last_tick: now,
            rejected_total: 0,
            outgoing: Vec::new(),
            #[cfg(feature = "fault-injection")]
            corrupt_next_tensor: false,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &LinkSettings {
        &self.settings
    }

    /// This player's id, once the transport has one.
    pub fn own_id(&self) -> Option<PeerUuid> {
        self.own
    }

    /// This player's nonce for this session (see [`TensorCipher`](super::seal::TensorCipher)).
    pub fn session_nonce(&self) -> [u8; SESSION_NONCE_BYTES] {
        self.session_nonce
    }

    /// Sets this player's id (the signaling server assigns it). Frames are handled from then on.
    pub fn set_own_id(&mut self, id: PeerUuid) {
        self.own = Some(id);
    }

    /// Messages dropped since joining, from every peer (including peers that have left).
    pub fn rejected_total(&self) -> u64 {
        self.rejected_total
    }

    /// Every peer with a link, with its state.
    pub fn links(&self) -> impl Iterator<Item = (PeerUuid, &PeerLink)> {
        self.links.iter().map(|(id, link)| (*id, link))
    }

    /// The link to `peer`.
    pub fn link(&self, peer: PeerUuid) -> Option<&PeerLink> {
        self.links.get(&peer)
    }

    /// Trusted peers whose token allows `permissions`, by id.
    pub fn trusted_with(&self, permissions: Permissions) -> Vec<(PeerUuid, &PeerLink)> {
        let mut peers: Vec<_> = self.links().filter(|(_, l)| l.permissions().contains(permissions) && l.state == LinkState::Trusted).collect();
        peers.sort_by_key(|(id, _)| *id);
        peers
    }

    /// How many peers are trusted.
    pub fn trusted_count(&self) -> usize {
        self.links.values().filter(|l| l.state == LinkState::Trusted).count()
    }

    /// The keys of the link to `peer`, once its key exchange has agreed them: for tools that
    /// speak for this player (tests that play a hostile member, fuzzers).
    pub fn link_keys(&self, peer: PeerUuid) -> Option<&LinkKeys> {
        self.keys.get(&peer).and_then(|k| k.exchange.keys())
    }

    /// The transport connected `peer`: a key exchange and a handshake start.
    pub fn peer_connected(&mut self, peer: PeerUuid, now: Instant) {
        self.connected.insert(peer);
        self.links.insert(peer, PeerLink::new(now, self.settings.max_frames_per_second));
        self.keys.remove(&peer);
        self.start_exchange(peer, now);
    }

    /// The transport lost `peer`.
    pub fn peer_disconnected(&mut self, peer: PeerUuid, events: &mut Vec<SessionEvent>) {
        self.connected.remove(&peer);
        self.keys.remove(&peer);
        if self.links.remove(&peer).is_some() {
            self.reassembler.forget_peer(peer);
            events.push(SessionEvent::PeerLost { peer, reason: LostReason::Disconnected });
        }
    }

    /// Forgets every peer (the transport was rebuilt): each is reported lost.
    pub fn reset(&mut self, events: &mut Vec<SessionEvent>) {
        let mut peers: Vec<PeerUuid> = self.links.keys().copied().collect();
        peers.sort();
        for peer in peers {
            events.push(SessionEvent::PeerLost { peer, reason: LostReason::Disconnected });
        }
        self.own = None;
        self.credentials.forget_own_token();
        self.links.clear();
        self.keys.clear();
        self.connected.clear();
        self.send_sequences.clear();
        self.outgoing.clear();
        self.reassembler = Reassembler::new(self.settings.limits);
    }

    /// Handles one frame from `from`.
    pub fn receive(&mut self, from: PeerUuid, frame: &[u8], now: Instant, events: &mut Vec<SessionEvent>) {
        let before = events.len();
        self.handle_frame(from, frame, now, events);
        self.count_rejections(&events[before..]);
    }

    /// Sends due hellos and heartbeats, detects lost peers and handshake timeouts, and expires
    /// stale partial tensors. Call once per frame, after the frames that arrived.
    pub fn tick(&mut self, now: Instant, events: &mut Vec<SessionEvent>) {
        // A long frame on this side (a hitch, a shader compile) is not the peers' silence:
        // frames they sent meanwhile are still queued, so credit them the stall.
        let stall = now.saturating_duration_since(self.last_tick);
        self.last_tick = now;
        if stall > self.settings.heartbeat * 2 {
            for link in self.links.values_mut() {
                link.last_heard += stall;
            }
        }
        for (peer, _, _) in self.reassembler.expire(now) {
            if let Some(link) = self.links.get_mut(&peer) {
                link.rejected += 1;
            }
        }
        let before = events.len();
        self.housekeeping(now, events);
        self.count_rejections(&events[before..]);
    }

    /// The frames queued for the transport since the last call.
    pub fn drain_outgoing(&mut self) -> Vec<OutgoingFrame> {
        std::mem::take(&mut self.outgoing)
    }

    fn count_rejections(&mut self, events: &[SessionEvent]) {
        self.rejected_total += events.iter().filter(|e| matches!(e, SessionEvent::Rejected { .. })).count() as u64;
    }

    fn handle_frame(&mut self, from: PeerUuid, frame: &[u8], now: Instant, events: &mut Vec<SessionEvent>) {
        let Some(own) = self.own else { return };
        if !self.links.contains_key(&from) {
            if !self.connected.contains(&from) {
                return;
            }
            // Declared lost for silence but still connected and talking again (a long stall on
            // its side): start a fresh handshake instead of ignoring it forever.
            self.links.insert(from, PeerLink::new(now, self.settings.max_frames_per_second));
        }
        let link = self.links.get_mut(&from).expect("inserted above");
        // Checked before the MAC, so that neither a refused peer nor a flood costs one.
        if link.state == LinkState::Refused {
            return link.reject(from, RejectReason::Refused, events);
        }
        match link.budget.admit(now) {
            FrameAdmission::Admitted => {}
            FrameAdmission::FloodStarted => return link.reject(from, RejectReason::Flooding(self.settings.max_frames_per_second), events),
            FrameAdmission::Flooding => {
                link.rejected += 1;
                return;
            }
        }
        if is_exchange_frame(frame) {
            return self.handle_exchange(from, own, frame, now, events);
        }
        let (sequence, message) = match self.verify(from, own, frame, events) {
            None => return,
            Some(Verified::Agreed(sequence, message)) => (sequence, message),
            Some(Verified::Restarted(sequence, message)) => {
                self.restart_link(from, now, events);
                (sequence, message)
            }
        };
        let keys = self.keys.get_mut(&from).expect("verified under them");
        let link = self.links.get_mut(&from).expect("inserted above");
        if Lane::of_sequence(sequence) != message.lane() {
            return link.reject(from, FrameError::WrongLane { kind: message.kind_name() }.into(), events);
        }
        if let Err(replay) = keys.replay.accept(sequence) {
            return link.reject(from, replay.into(), events);
        }
        link.last_heard = now;
        link.bytes_in += frame.len() as u64;
        match message {
            // Control frames may arrive out of order: a hello older than one already taken says
            // nothing new (and its stale acknowledgement or grant would undo the newer one's).
            Message::Hello(_) if keys.newest_hello.is_some_and(|newest| sequence < newest) => {}
            Message::Hello(hello) => {
                keys.newest_hello = Some(sequence);
                // A trusted peer that had acknowledged this player and no longer does dropped
                // the link on its side: report it lost, so that the work it held runs again,
                // and take this hello as a new handshake.
                if link.state == LinkState::Trusted && link.they_acknowledged && !hello.acknowledged {
                    link.restart_handshake(now);
                    self.reassembler.forget_peer(from);
                    events.push(SessionEvent::PeerLost { peer: from, reason: LostReason::Reset });
                }
                // A hello that does not acknowledge ours means ours was lost (or the peer
                // restarted its handshake): send ours again.
                link.they_acknowledged = hello.acknowledged;
                link.owe_hello |= !hello.acknowledged;
                link.their_nonce = Some(hello.session_nonce);
                self.handle_hello(from, own, hello, now, events);
            }
            Message::Tensor(chunk) if link.state != LinkState::Trusted => {
                // A stage input its owner sent before this side trusted it again (a
                // re-handshake, or a hello still on its way): dropped, and the owner told at
                // once (once per tensor), so that it runs the stage again instead of waiting for
                // it. Only to the sender, and only for its own request: a report on anyone
                // else's word would let any key holder make this player disturb a third one.
                let drop = (chunk.header.request, chunk.header.stage);
                let own_request = chunk.header.onward.as_ref().is_none_or(|onward| onward.owner == from);
                let report = chunk.header.direction == Direction::StageInput && own_request && link.reported_drop.replace(drop) != Some(drop);
                link.reject(from, RejectReason::Untrusted("tensor"), events);
                if report {
                    self.send(from, &Message::Dropped { request: drop.0, stage: drop.1 });
                }
            }
            other if link.state != LinkState::Trusted => link.reject(from, RejectReason::Untrusted(other.kind_name()), events),
            Message::Dropped { request, stage } => events.push(SessionEvent::StageInputDropped { peer: from, request, stage }),
            Message::Revoke { peer, identity } => {
                if !link.hello.as_ref().is_some_and(|h| self.credentials.is_owner_identity(h.identity)) {
                    return link.reject(from, RejectReason::NotPermitted("revoke"), events);
                }
                self.credentials.revoke(peer, identity);
                self.refuse_revoked(events);
            }
            Message::Ping { nonce } => {
                self.send(from, &Message::Pong { nonce });
            }
            Message::Pong { nonce } => {
                if let Some(sent) = link.pings.remove(&nonce) {
                    link.rtt.record(now - sent);
                }
            }
            Message::Tensor(chunk) => {
                // A stage input comes from a peer that may submit requests, or, passed along a
                // chain, from a peer that runs stages on behalf of an owner this player trusts
                // to submit them.
                let forwarded_for = match (&chunk.header.direction, &chunk.header.onward) {
                    (Direction::StageInput, Some(onward)) if onward.owner != from => Some(onward.owner),
                    _ => None,
                };
                // A shared tensor's value and a collective's contribution need the permission to
                // share, and their owner's hand.
                let needed = match (chunk.header.direction, forwarded_for) {
                    (Direction::StageInput, None) => Permissions::SUBMIT_REQUESTS,
                    (Direction::StageInput, Some(_)) | (Direction::StageOutput, _) => Permissions::RUN_STAGES,
                    (Direction::Shared | Direction::Collective, _) => Permissions::SHARE,
                };
                let ours = match chunk.header.direction {
                    Direction::StageInput => Permissions::RUN_STAGES,
                    Direction::StageOutput => Permissions::SUBMIT_REQUESTS,
                    Direction::Shared | Direction::Collective => Permissions::NONE,
                };
                if let Some(key) = chunk.header.shared.as_ref().filter(|key| key.owner != from) {
                    let name = key.name.clone();
                    return self.links.get_mut(&from).expect("inserted above").reject(from, RejectReason::NotOwner(name), events);
                }
                let owner_may_submit = forwarded_for.is_none_or(|owner| {
                    self.links.get(&owner).is_some_and(|o| o.state == LinkState::Trusted && o.permissions().contains(Permissions::SUBMIT_REQUESTS))
                });
                // Past the MAC the header is the sender's own: a stage output it sent but that
                // is dropped here names the one request to run again.
                let lost_output = (chunk.header.direction == Direction::StageOutput).then_some(chunk.header.request);
                let link = self.links.get_mut(&from).expect("inserted above");
                if !link.permissions().contains(needed) || !self.settings.permissions.contains(ours) || !owner_may_submit {
                    return link.reject_output(from, lost_output, RejectReason::NotPermitted("tensor"), events);
                }
                let opened = link.ciphers.as_ref().ok_or(Unsealed).and_then(|c| c.receiving.open(sequence, &chunk.payload));
                let chunk = match opened {
                    Ok(payload) => TensorChunk { payload, ..chunk },
                    Err(unsealed) => return link.reject_output(from, lost_output, unsealed.into(), events),
                };
                match self.reassembler.push(from, chunk, now) {
                    Ok(Some(mut tensor)) => {
                        tensor.transfer.link_rtt = link.rtt.median();
                        if let Err(error) = self.check_ticket(from, own, &tensor.header, now) {
                            return self.links.get_mut(&from).expect("inserted above").reject(from, RejectReason::Ticket(error), events);
                        }
                        events.push(SessionEvent::Tensor(tensor));
                    }
                    Ok(None) => {}
                    Err(error) => link.reject_output(from, lost_output, error.into(), events),
                }
            }
        }
    }

    fn housekeeping(&mut self, now: Instant, events: &mut Vec<SessionEvent>) {
        let Some(own) = self.own else { return };
        let mut peers: Vec<PeerUuid> = self.links.keys().copied().collect();
        peers.sort();
        for peer in peers {
            self.start_exchange(peer, now);
            let (Some(link), Some(keys)) = (self.links.get_mut(&peer), self.keys.get_mut(&peer)) else { continue };
            let exchange = &mut keys.exchange;
            if exchange.awaits_answer() && link.state != LinkState::Refused && link.last_hello.is_none_or(|t| now - t >= self.settings.hello_retry) {
                link.last_hello = Some(now);
                exchange.repeat_start();
                self.flush_exchange(peer);
            }
        }
        let mut lost = Vec::new();
        let mut due_hellos = Vec::new();
        let renew_before = self.credentials.owner().map(|o| o.token_lifetime.as_millis() as u64 / 2);
        let unix_ms = self.credentials.unix_ms(now);
        let mut due_pings = Vec::new();
        for (&peer, link) in &mut self.links {
            match link.state {
                LinkState::Handshaking if now - link.connected_at > self.settings.handshake_timeout => {
                    link.state = LinkState::Refused;
                    events.push(SessionEvent::HandshakeFailed { peer, reason: HandshakeError::Timeout(self.settings.handshake_timeout) });
                }
                LinkState::Trusted if now - link.last_heard > link.rtt.silence_limit(self.settings.lost_after, self.settings.heartbeat) => lost.push((peer, LostReason::Silent)),
                LinkState::Trusted if link.hello.as_ref().and_then(|h| self.credentials.expired(h, now)).is_some() => {
                    lost.push((peer, LostReason::TokenExpired));
                }
                _ => {}
            }
            // The owner renews a token when half its time is left.
            if let (Some(grant), Some(renew_before), Some(hello)) = (link.grant, renew_before, &link.hello)
                && unix_ms + renew_before >= grant.expires_at_ms && link.state == LinkState::Trusted {
                    link.grant = self.credentials.grant(peer, hello, grant.permissions, now);
                    link.owe_hello = true;
                }
            let retry_due = !(link.state == LinkState::Trusted && link.they_acknowledged)
                && link.last_hello.is_none_or(|t| now - t >= self.settings.hello_retry);
            let keyed = self.keys.get(&peer).is_some_and(|k| k.sending_keys().is_some());
            if keyed && link.state != LinkState::Refused && (link.owe_hello || retry_due) {
                due_hellos.push(peer);
            }
            if link.state == LinkState::Trusted && now - link.last_ping >= self.settings.heartbeat {
                link.last_ping = now;
                let nonce = self.next_nonce;
                self.next_nonce += 1;
                link.pings.retain(|_, sent| now - *sent < Duration::from_secs(5));
                link.pings.insert(nonce, now);
                due_pings.push((peer, nonce));
            }
        }
        for (peer, reason) in lost {
            self.links.remove(&peer);
            self.reassembler.forget_peer(peer);
            events.push(SessionEvent::PeerLost { peer, reason });
        }
        for peer in due_hellos {
            self.greet(peer, own, now);
        }
        self.tell_revocations();
        for (peer, nonce) in due_pings {
            self.send(peer, &Message::Ping { nonce });
        }
    }

    /// A chained stage input's route ticket, checked against the owner's identity: see
    /// [`RouteTicket::check`]. Inputs that are not chained need none.
    fn check_ticket(&self, from: PeerUuid, own: PeerUuid, header: &TensorHeader, now: Instant) -> Result<(), TicketError> {
        let Some(onward) = header.onward.as_ref().filter(|_| header.direction == Direction::StageInput) else { return Ok(()) };
        let ticket = onward.ticket.as_ref().ok_or(TicketError::Missing)?;
        let owner_identity = self.links.get(&onward.owner).and_then(|l| l.hello.as_ref()).map(|h| h.identity).ok_or(TicketError::Forged)?;
        let hop = Hop { owner: onward.owner, owner_identity, request: header.request, stage: header.stage, onward: &onward.route, from, receiver: own };
        ticket.check(&hop, self.credentials.unix_ms(now))
    }

    /// Sends `peer` this player's hello: what it runs and presents, its proof of identity (once
    /// it knows the peer's nonce) bound to the link's keys, the peer's grant from the owner, and
    /// whether the peer's hello was accepted.
    fn greet(&mut self, peer: PeerUuid, own: PeerUuid, now: Instant) {
        let (Some(link), Some(keys)) = (self.links.get_mut(&peer), self.keys.get(&peer).and_then(PeerKeys::sending_keys)) else { return };
        link.owe_hello = false;
        link.last_hello = Some(now);
        let hello = Hello {
            model_hash: self.settings.model_hash,
            capabilities: self.settings.capabilities.clone(),
            permissions: self.settings.permissions,
            identity: self.credentials.identity(),
            token: self.credentials.own_token(),
            proof: self.credentials.proof(own, peer, link.their_nonce.as_ref(), &keys.binding()),
            grant: link.grant,
            acknowledged: link.state == LinkState::Trusted,
            session_nonce: self.session_nonce,
        };
        self.send(peer, &Message::Hello(hello));
    }

}

#[path = "links_exchange.rs"]
mod exchange;
use exchange::{PeerKeys, Verified};
pub use exchange::{MAX_UNPROVEN_RESTARTS, RESTART_INTERVAL};
#[path = "links_send.rs"]
mod send;
#[path = "links_trust.rs"]
mod trust;

#[cfg(test)]
#[path = "links_tests.rs"]
mod tests;

