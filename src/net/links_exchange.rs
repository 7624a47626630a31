//! [`Links`]' side of each link's key exchange (see `pake.rs`): started when a peer connects,
//! its frames queued, the keys it agrees and what guards them ([`PeerKeys`]).
//!
//! One guess per connection, for a stranger: the answering side sends nothing authenticated
//! before a frame from the starter verified under the agreed keys (so nothing it sends lets a
//! stranger test a guess offline), refuses the link when the starter's first authenticated
//! frame fails, and answers no second start on a link whose peer has not proved the room key.
//! A peer that has proved it may begin the link again (its transport reconnected it), at most
//! once per [`RESTART_INTERVAL`], and [`MAX_UNPROVEN_RESTARTS`] times with none adopted: the new
//! keys are kept aside, and the link starts over only at the first frame that verifies under
//! them, so a start injected by a signaling server in the middle changes nothing but the answer
//! (and gives it at most that many online guesses at the room key).

use super::*;
use crate::net::codec::{Lane, LaneGuards};
use crate::net::pake::ExchangeStep;

/// The shortest time between two restarts of one link that this player answers.
pub const RESTART_INTERVAL: Duration = Duration::from_secs(1);
/// The most new starts on one link this player answers whose keys no frame ever verified
/// under: each is a guess at the room key for whoever sent it, so a signaling server in the
/// middle gets this many, not one a second.
pub const MAX_UNPROVEN_RESTARTS: u8 = 3;

/// What this player holds of one peer's keys while the transport keeps the peer connected: the
/// exchange, whether the peer has proved the room key, and the replay guard of the frames under
/// these keys. It outlives the peer's [`PeerLink`] (a link dropped for silence and re-created
/// goes on with them), so a frame recorded before the link was re-created does not replay.
pub(super) struct PeerKeys {
    pub(super) exchange: LinkKeyExchange,
    /// A frame from the peer verified under the agreed keys: it holds the room key.
    pub(super) proven: bool,
    /// Sequence numbers of the frames accepted under these keys.
    pub(super) replay: LaneGuards,
    /// The sequence of the newest hello taken from the peer under these keys.
    pub(super) newest_hello: Option<u64>,
    /// When this player last answered a new start from the peer.
    last_restart: Option<Instant>,
    /// New starts answered whose keys no frame verified under yet.
    unproven_restarts: u8,
}

impl PeerKeys {
    fn new(exchange: LinkKeyExchange) -> Self {
        Self { exchange, proven: false, replay: LaneGuards::default(), newest_hello: None, last_restart: None, unproven_restarts: 0 }
    }

    /// The agreed keys, once this player may send under them: the starting side at once (its
    /// first frame is its proof), the answering side once the starter has proved the key.
    pub(super) fn sending_keys(&self) -> Option<&LinkKeys> {
        self.exchange.keys().filter(|_| self.proven || self.exchange.starts())
    }
}

/// A frame verified under a link's keys.
pub(super) enum Verified {
    /// Under the agreed keys.
    Agreed(u64, Message),
    /// Under the keys of a new start this player answered: the link starts over.
    Restarted(u64, Message),
}

impl Links {
    /// Begins the key exchange with `peer` if there is none (and this player has its id).
    pub(super) fn start_exchange(&mut self, peer: PeerUuid, now: Instant) {
        let (Some(own), Some(link)) = (self.own, self.links.get_mut(&peer)) else { return };
        if self.keys.contains_key(&peer) {
            return;
        }
        self.keys.insert(peer, PeerKeys::new(LinkKeyExchange::new(&self.settings.room_key, own, peer)));
        link.last_hello = Some(now);
        self.flush_exchange(peer);
    }

    /// Queues the key-exchange frames for `peer`.
    pub(super) fn flush_exchange(&mut self, peer: PeerUuid) {
        let Some(keys) = self.keys.get_mut(&peer) else { return };
        for bytes in keys.exchange.drain_outgoing() {
            if let Some(link) = self.links.get_mut(&peer) {
                link.bytes_out += bytes.len() as u64;
            }
            self.outgoing.push(OutgoingFrame { to: peer, lane: Lane::Control, bytes });
        }
    }

    /// A key-exchange frame from `from`. A new start after keys were agreed is answered only
    /// when the peer has proved the room key, not more often than [`RESTART_INTERVAL`], and at
    /// most [`MAX_UNPROVEN_RESTARTS`] times with none adopted.
    pub(super) fn handle_exchange(&mut self, from: PeerUuid, own: PeerUuid, frame: &[u8], now: Instant, events: &mut Vec<SessionEvent>) {
        let keys = self.keys.entry(from).or_insert_with(|| PeerKeys::new(LinkKeyExchange::new(&self.settings.room_key, own, from)));
        let step = keys.exchange.receive(frame);
        let link = self.links.get_mut(&from).expect("the caller's link");
        let step = match step {
            Ok(ExchangeStep::NewStart) if !keys.proven => Err(RejectReason::UnprovenRestart),
            Ok(ExchangeStep::NewStart) if keys.last_restart.is_some_and(|t| now - t < RESTART_INTERVAL) || keys.unproven_restarts >= MAX_UNPROVEN_RESTARTS => {
                Err(RejectReason::RestartTooSoon)
            }
            Ok(ExchangeStep::NewStart) => {
                keys.last_restart = Some(now);
                keys.unproven_restarts += 1;
                keys.exchange.answer_again(frame).map(|()| ExchangeStep::NewStart).map_err(RejectReason::from)
            }
            other => other.map_err(RejectReason::from),
        };
        match step {
            Ok(ExchangeStep::Agreed) => link.owe_hello = keys.exchange.starts(),
            Ok(_) => {}
            Err(reason) => link.reject(from, reason, events),
        }
        self.flush_exchange(from);
    }

    /// Verifies `frame` from `from` under the link's keys, or under the keys of a new start this
    /// player answered (which then become the link's). `None` when it verified under neither:
    /// what was wrong is reported, and the link refused when the peer had one guess at the room
    /// key and it failed.
    pub(super) fn verify(&mut self, from: PeerUuid, own: PeerUuid, frame: &[u8], events: &mut Vec<SessionEvent>) -> Option<Verified> {
        let link = self.links.get_mut(&from).expect("the caller's link");
        let Some(keys) = self.keys.get_mut(&from).filter(|k| k.exchange.keys().is_some()) else {
            link.reject(from, RejectReason::BeforeKeyExchange, events);
            return None;
        };
        let agreed = keys.exchange.keys().expect("filtered above");
        let error = match decode_frame(agreed, from, own, frame) {
            Ok((sequence, message)) => {
                // The peer just proved the key: the hello this player held back goes now, not at
                // the next retry.
                link.owe_hello |= !keys.proven;
                keys.proven = true;
                return Some(Verified::Agreed(sequence, message));
            }
            Err(error) => error,
        };
        if let Some(Ok((sequence, message))) = keys.exchange.pending_keys().map(|pending| decode_frame(pending, from, own, frame)) {
            keys.exchange.adopt();
            keys.replay = LaneGuards::default();
            keys.newest_hello = None;
            keys.unproven_restarts = 0;
            return Some(Verified::Restarted(sequence, message));
        }
        // The starter's first authenticated frame does not verify: the two sides agreed on
        // different keys, so the peer does not hold the room key. One guess per connection.
        if error == FrameError::BadMac && !keys.proven && !keys.exchange.starts() {
            link.state = LinkState::Refused;
            events.push(SessionEvent::HandshakeFailed { peer: from, reason: HandshakeError::WrongRoomKey });
        } else {
            link.reject(from, error.into(), events);
        }
        None
    }

    /// The link to `from` starts over under the keys of its new start: it is reported lost if
    /// it was trusted; its frame budget and counts are kept.
    pub(super) fn restart_link(&mut self, from: PeerUuid, now: Instant, events: &mut Vec<SessionEvent>) {
        let link = self.links.get_mut(&from).expect("the caller's link");
        let was_trusted = link.state == LinkState::Trusted;
        let fresh = PeerLink::new(now, self.settings.max_frames_per_second);
        *link = PeerLink { rejected: link.rejected, budget: link.budget.clone(), bytes_in: link.bytes_in, bytes_out: link.bytes_out, ..fresh };
        link.owe_hello = true;
        self.reassembler.forget_peer(from);
        if was_trusted {
            events.push(SessionEvent::PeerLost { peer: from, reason: LostReason::Disconnected });
        }
    }
}
