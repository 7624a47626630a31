//! [`Links`]' decisions about trust: a peer's hello admitted, refused or held (see
//! [`Credentials::admit`]), the owner's grants taken, and revocations.

use super::*;
use crate::net::credentials::Admission;
use crate::net::peer_link::LinkCiphers;
use crate::net::token::IdentityKey;

impl Links {
    /// A hello from `from`: trusts it, refuses it or waits (see [`Credentials::admit`]); from a
    /// trusted peer, takes its renewed token, and from the owner, this player's grant.
    pub(super) fn handle_hello(&mut self, from: PeerUuid, own: PeerUuid, hello: Hello, now: Instant, events: &mut Vec<SessionEvent>) {
        let binding = self.keys.get(&from).and_then(|k| k.exchange.keys()).expect("a hello is authenticated under the link's keys").binding();
        let admission = self.credentials.admit(from, &hello, own, &self.session_nonce, &binding, now);
        let link = self.links.get_mut(&from).expect("the caller's link");
        if link.state == LinkState::Trusted {
            // Another identity on a trusted link (to escape a revocation of the one it showed)
            // is refused; a renewed token is taken.
            match admission {
                Admission::Refuse(error) => return link.reject(from, error.into(), events),
                Admission::Admit(_) if link.hello.as_ref().is_some_and(|held| held.token != hello.token) => link.hello = Some(hello.clone()),
                _ => {}
            }
            return self.take_grant(from, own, &hello, now, events);
        }
        let permissions = match admission {
            _ if hello.model_hash != self.settings.model_hash => {
                // The peer proved the room key: tell it which model this player runs, so that
                // it can say why too, then refuse it.
                self.greet(from, own, now);
                let link = self.links.get_mut(&from).expect("the caller's link");
                link.state = LinkState::Refused;
                return events.push(SessionEvent::HandshakeFailed { peer: from, reason: HandshakeError::ModelMismatch });
            }
            Admission::Refuse(error) => {
                link.state = LinkState::Refused;
                return events.push(SessionEvent::HandshakeFailed { peer: from, reason: error.into() });
            }
            // A proven peer still waiting for its token is not timed out meanwhile.
            Admission::Wait if hello.proof.is_some() => {
                link.connected_at = now;
                return;
            }
            Admission::Wait => return,
            Admission::Admit(permissions) => permissions,
        };
        link.state = LinkState::Trusted;
        link.permissions = permissions;
        self.credentials.pin(from, hello.identity);
        link.grant = self.credentials.grant(from, &hello, permissions, now);
        let keys = self.keys.get(&from).and_then(|k| k.exchange.keys()).expect("a hello is authenticated under the link's keys");
        link.ciphers = Some(LinkCiphers {
            sending: keys.tensor_cipher(own, from, &self.session_nonce, &hello.session_nonce),
            receiving: keys.tensor_cipher(from, own, &hello.session_nonce, &self.session_nonce),
        });
        events.push(SessionEvent::PeerTrusted { peer: from, capabilities: hello.capabilities.clone(), permissions });
        link.hello = Some(hello.clone());
        // Tell the peer right away that its hello was accepted (and, from the owner, its grant).
        link.owe_hello = true;
        self.take_grant(from, own, &hello, now, events);
    }

    /// This player's token in `hello` from the trusted owner: kept if valid and newer, and
    /// then shown to every peer.
    pub(super) fn take_grant(&mut self, from: PeerUuid, own: PeerUuid, hello: &Hello, now: Instant, events: &mut Vec<SessionEvent>) {
        let Some(grant) = hello.grant.filter(|_| self.credentials.is_owner_identity(hello.identity)) else { return };
        match self.credentials.accept_grant(grant, own, self.session_nonce, now) {
            Ok(true) => {
                for (peer, link) in &mut self.links {
                    link.owe_hello = true;
                    // A peer that has proved the room key waited for this player's token: it
                    // gets its full handshake time again (a stranger does not).
                    if link.state == LinkState::Handshaking && self.keys.get(peer).is_some_and(|k| k.proven) {
                        link.connected_at = now;
                    }
                }
            }
            Ok(false) => {}
            Err(error) => self.links.get_mut(&from).expect("the caller's link").reject(from, error.into(), events),
        }
    }

    /// The room's owner revokes `peer`, by its peer id and the identity pinned to it: its
    /// frames are dropped unread from now on, every member is told to refuse it too (now, and
    /// each member trusted later when it is trusted), and it is reported lost (so that its work
    /// runs elsewhere). It lasts for this session; a player that rejoins under a new peer id
    /// and a new identity must be revoked again (or the room key changed).
    pub fn revoke(&mut self, peer: PeerUuid, events: &mut Vec<SessionEvent>) -> Result<(), RevokeError> {
        if self.credentials.owner().is_none() {
            return Err(RevokeError::NotOwner);
        }
        let shown = self.links.get(&peer).and_then(|l| l.hello.as_ref()).map(|h| h.identity);
        let identities: Vec<IdentityKey> = self.credentials.pinned(peer).into_iter().chain(shown).collect();
        if identities.is_empty() {
            return Err(RevokeError::UnknownPeer);
        }
        for identity in identities {
            self.credentials.revoke(peer, identity);
        }
        self.refuse_revoked(events);
        self.tell_revocations();
        Ok(())
    }

    /// The owner's side: sends each trusted member that trusts it back the revocations it has
    /// not been told yet (every one, to a member trusted after them).
    pub(super) fn tell_revocations(&mut self) {
        if self.credentials.owner().is_none() {
            return;
        }
        let revocations = self.credentials.revocations().to_vec();
        let mut members: Vec<PeerUuid> = self
            .links
            .iter()
            .filter(|(_, l)| l.state == LinkState::Trusted && l.they_acknowledged && l.revocations_told < revocations.len())
            .map(|(id, _)| *id)
            .collect();
        members.sort();
        for member in members {
            let told = self.links.get(&member).map_or(0, |l| l.revocations_told);
            for &(peer, identity) in &revocations[told..] {
                self.send(member, &Message::Revoke { peer, identity });
            }
            if let Some(link) = self.links.get_mut(&member) {
                link.revocations_told = revocations.len();
            }
        }
    }

    /// Refuses every link to a revoked peer id or identity, reporting trusted ones lost.
    pub(super) fn refuse_revoked(&mut self, events: &mut Vec<SessionEvent>) {
        let mut revoked: Vec<PeerUuid> = self
            .links
            .iter()
            .filter(|(id, l)| l.state != LinkState::Refused && self.credentials.is_revoked(**id, l.hello.as_ref().map(|h| h.identity)))
            .map(|(id, _)| *id)
            .collect();
        revoked.sort();
        for peer in revoked {
            let link = self.links.get_mut(&peer).expect("listed above");
            let was_trusted = link.state == LinkState::Trusted;
            link.state = LinkState::Refused;
            link.ciphers = None;
            self.reassembler.forget_peer(peer);
            if was_trusted {
                events.push(SessionEvent::PeerLost { peer, reason: LostReason::Revoked });
            }
        }
    }
}
