//! [`Links`]' side of each link's key exchange (see `pake.rs`): started when a peer connects,
//! its frames queued, and a new exchange from the peer (it began the link again) honoured.

use super::*;
use crate::net::pake::ExchangeStep;

impl Links {
    /// Begins the key exchange with `peer` if there is none (and this player has its id).
    pub(super) fn start_exchange(&mut self, peer: PeerUuid, now: Instant) {
        let (Some(own), Some(link)) = (self.own, self.links.get_mut(&peer)) else { return };
        if self.exchanges.contains_key(&peer) {
            return;
        }
        self.exchanges.insert(peer, LinkKeyExchange::new(&self.settings.room_key, own, peer));
        link.last_hello = Some(now);
        self.flush_exchange(peer);
    }

    /// Queues the key-exchange frames for `peer`.
    pub(super) fn flush_exchange(&mut self, peer: PeerUuid) {
        let Some(exchange) = self.exchanges.get_mut(&peer) else { return };
        for bytes in exchange.drain_outgoing() {
            if let Some(link) = self.links.get_mut(&peer) {
                link.bytes_out += bytes.len() as u64;
            }
            self.outgoing.push(OutgoingFrame { to: peer, bytes });
        }
    }

    /// A key-exchange frame from `from`. When the peer began the link again (a new start after
    /// keys were agreed), the link starts over under the new keys.
    pub(super) fn handle_exchange(&mut self, from: PeerUuid, own: PeerUuid, frame: &[u8], now: Instant, events: &mut Vec<SessionEvent>) {
        let exchange = self.exchanges.entry(from).or_insert_with(|| LinkKeyExchange::new(&self.settings.room_key, own, from));
        let step = exchange.receive(frame);
        self.flush_exchange(from);
        let link = self.links.get_mut(&from).expect("the caller's link");
        match step {
            Ok(ExchangeStep::Agreed { restarted }) => {
                if restarted {
                    let was_trusted = link.state == LinkState::Trusted;
                    *link = PeerLink { rejected: link.rejected, ..PeerLink::new(now, self.settings.max_frames_per_second) };
                    self.reassembler.forget_peer(from);
                    if was_trusted {
                        events.push(SessionEvent::PeerLost { peer: from, reason: LostReason::Disconnected });
                    }
                }
                self.links.get_mut(&from).expect("the caller's link").owe_hello = true;
            }
            Ok(ExchangeStep::Repeated) => {}
            Err(error) => link.reject(from, error.into(), events),
        }
    }
}
