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
        let admission = self.credentials.admit(from, &hello, own, &self.session_nonce, now);
        let link = self.links.get_mut(&from).expect("the caller's link");
        if link.state == LinkState::Trusted {
            if link.hello.as_ref().is_some_and(|held| held.token != hello.token) {
                match admission {
                    Admission::Admit(_) => link.hello = Some(hello.clone()),
                    Admission::Refuse(error) => link.reject(from, error.into(), events),
                    Admission::Wait => {}
                }
            }
            return self.take_grant(from, own, &hello, now, events);
        }
        let permissions = match admission {
            _ if hello.model_hash != self.settings.model_hash => {
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
        link.grant = self.credentials.grant(from, &hello, permissions, now);
        let keys = self.exchanges.get(&from).and_then(LinkKeyExchange::keys).expect("a hello is authenticated under the link's keys");
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
                for link in self.links.values_mut() {
                    link.owe_hello = true;
                    if link.state == LinkState::Handshaking {
                        link.connected_at = now;
                    }
                }
            }
            Ok(false) => {}
            Err(error) => self.links.get_mut(&from).expect("the caller's link").reject(from, error.into(), events),
        }
    }

    /// The room's owner revokes `peer`: its frames are dropped unread from now on, every other
    /// player is told to refuse it too, and it is reported lost (so that its work runs
    /// elsewhere). It lasts for this session; a player that rejoins under a new identity must be
    /// revoked again (or the room key changed).
    pub fn revoke(&mut self, peer: PeerUuid, events: &mut Vec<SessionEvent>) -> Result<(), RevokeError> {
        if self.credentials.owner().is_none() {
            return Err(RevokeError::NotOwner);
        }
        let identity = self.links.get(&peer).and_then(|l| l.hello.as_ref()).map(|h| h.identity).ok_or(RevokeError::UnknownPeer)?;
        self.credentials.revoke(identity);
        self.refuse_identity(identity, events);
        let mut told: Vec<PeerUuid> = self.links.iter().filter(|(_, l)| l.state == LinkState::Trusted).map(|(id, _)| *id).collect();
        told.sort();
        for other in told {
            self.send(other, &Message::Revoke { identity });
        }
        Ok(())
    }

    /// Refuses every link whose peer presented `identity`, reporting trusted ones lost.
    pub(super) fn refuse_identity(&mut self, identity: IdentityKey, events: &mut Vec<SessionEvent>) {
        let mut revoked: Vec<PeerUuid> = self.links.iter().filter(|(_, l)| l.hello.as_ref().is_some_and(|h| h.identity == identity)).map(|(id, _)| *id).collect();
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
