//! Who decides what each player of a room may do ([`RoomAuthority`]), and this player's side of
//! it ([`Credentials`]): its session identity, the token the owner granted it, the owner's
//! grants and revocations, and a wall clock for expiry. Sans IO; [`super::Links`] asks it about
//! every hello.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bevy::platform::time::Instant;

use super::auth::{PeerUuid, Permissions};
use super::codec::Hello;
use super::route_ticket::RouteTicket;
use super::seal::SESSION_NONCE_BYTES;
use super::token::{verify_proof, CapabilityToken, IdentityKey, OwnerKey, OwnerPublicKey, PlayerIdentity, TokenError, TokenHolder};

/// Who decides what each player of a room may do.
#[derive(Clone, Debug, Default)]
pub enum RoomAuthority {
    /// No owner: the room key is the only credential, and the permissions each player claims
    /// are believed. For rooms whose players all trust each other.
    #[default]
    Open,
    /// This player owns the room: it grants every player that proves its identity a token for
    /// the permissions it asks (within [`RoomOwner::grantable`]), renews it, and may revoke it.
    Owner(RoomOwner),
    /// A room owned by the holder of this key's private half: another player is trusted only
    /// with a token signed by it (the owner itself with none).
    Member(OwnerPublicKey),
}

/// The owner's side of a room: its key and what it grants.
#[derive(Clone, Debug)]
pub struct RoomOwner {
    /// The key tokens are signed with; members are configured with its public half.
    pub key: OwnerKey,
    /// The most a token grants; a player asking more gets this much.
    pub grantable: Permissions,
    /// How long a token is valid. The owner renews each trusted player's token when half of it
    /// is left, so a player whose owner is gone loses its standing within this time.
    pub token_lifetime: Duration,
}

impl RoomOwner {
    /// An owner that grants what players ask, with tokens valid for ten minutes.
    pub fn new(key: OwnerKey) -> Self {
        Self { key, grantable: Permissions::ALL, token_lifetime: Duration::from_secs(600) }
    }
}

/// What this player decides about a hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// Trust the sender with these permissions.
    Admit(Permissions),
    /// Not yet: the sender has not seen this player's nonce (no proof), or has no token yet.
    Wait,
    /// Never: the proof or token is bad.
    Refuse(TokenError),
}

/// This player's credentials in a room and what it knows of the owner's decisions.
pub(super) struct Credentials {
    authority: RoomAuthority,
    identity: Option<PlayerIdentity>,
    own_token: Option<CapabilityToken>,
    /// The identity each peer proved first: pinned to its peer id for the session.
    pinned: HashMap<PeerUuid, IdentityKey>,
    /// Revoked identities and peer ids, each revocation as the owner sends it.
    revoked: HashSet<IdentityKey>,
    revoked_peers: HashSet<PeerUuid>,
    revocations: Vec<(PeerUuid, IdentityKey)>,
    /// Unix time in milliseconds at `clock_origin`.
    unix_ms_at_origin: u64,
    clock_origin: Instant,
}

impl Credentials {
    /// A fresh session identity (the owner's key, for the owner) under `authority`.
    pub(super) fn new(authority: RoomAuthority, now: Instant) -> Self {
        let identity = match &authority {
            RoomAuthority::Owner(owner) => Some(owner.key.identity()),
            _ => PlayerIdentity::generate()
                .inspect_err(|e| bevy::log::error!("{e}: this player cannot prove its identity, no peer will trust it"))
                .ok(),
        };
        let unix_ms_at_origin = web_time::SystemTime::now().duration_since(web_time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Self {
            authority,
            identity,
            own_token: None,
            pinned: HashMap::new(),
            revoked: HashSet::new(),
            revoked_peers: HashSet::new(),
            revocations: Vec::new(),
            unix_ms_at_origin,
            clock_origin: now,
        }
    }

    /// The wall clock at `now`, in Unix milliseconds.
    pub(super) fn unix_ms(&self, now: Instant) -> u64 {
        self.unix_ms_at_origin + now.saturating_duration_since(self.clock_origin).as_millis() as u64
    }

    /// This player's identity key.
    pub(super) fn identity(&self) -> IdentityKey {
        self.identity.as_ref().map_or(IdentityKey([0; 32]), PlayerIdentity::public)
    }

    /// The room owner's settings, if this player is it.
    pub(super) fn owner(&self) -> Option<&RoomOwner> {
        match &self.authority {
            RoomAuthority::Owner(owner) => Some(owner),
            _ => None,
        }
    }

    /// Whether `identity` is the room owner's.
    pub(super) fn is_owner_identity(&self, identity: IdentityKey) -> bool {
        match &self.authority {
            RoomAuthority::Open => false,
            RoomAuthority::Owner(owner) => owner.key.public().identity() == identity,
            RoomAuthority::Member(owner) => owner.identity() == identity,
        }
    }

    /// The token this player presents (the owner's grant; none in an open room or for the owner).
    pub(super) fn own_token(&self) -> Option<CapabilityToken> {
        self.own_token
    }

    /// This player's proof for a hello from `own` to `receiver` on the link whose channel
    /// binding is `binding`, once it knows the receiver's session nonce.
    pub(super) fn proof(&self, own: PeerUuid, receiver: PeerUuid, receiver_nonce: Option<&[u8; SESSION_NONCE_BYTES]>, binding: &[u8; 32]) -> Option<[u8; 64]> {
        Some(self.identity.as_ref()?.prove(own, receiver, receiver_nonce?, binding))
    }

    /// This player's route ticket, as `owner` of `request`, from `first_stage` along `route`.
    pub(super) fn sign_route(&self, owner: PeerUuid, request: u64, first_stage: u16, route: Vec<PeerUuid>, expires_at_ms: u64) -> Option<RouteTicket> {
        Some(RouteTicket::sign(self.identity.as_ref()?, owner, request, first_stage, route, expires_at_ms))
    }

    /// Decides on `hello`, from `from` to this player `own` whose session nonce is `own_nonce`,
    /// on the link whose channel binding is `binding`.
    pub(super) fn admit(&self, from: PeerUuid, hello: &Hello, own: PeerUuid, own_nonce: &[u8; SESSION_NONCE_BYTES], binding: &[u8; 32], now: Instant) -> Admission {
        let Some(proof) = hello.proof else { return Admission::Wait };
        if let Err(error) = verify_proof(hello.identity, from, own, own_nonce, binding, &proof) {
            return Admission::Refuse(error);
        }
        if self.revoked.contains(&hello.identity) || self.revoked_peers.contains(&from) {
            return Admission::Refuse(TokenError::Revoked);
        }
        if self.pinned.get(&from).is_some_and(|pinned| *pinned != hello.identity) {
            return Admission::Refuse(TokenError::IdentityChanged);
        }
        match &self.authority {
            RoomAuthority::Open => Admission::Admit(hello.permissions),
            RoomAuthority::Owner(owner) => Admission::Admit(hello.permissions.intersection(owner.grantable)),
            RoomAuthority::Member(owner) if owner.identity() == hello.identity => Admission::Admit(hello.permissions),
            RoomAuthority::Member(owner) => {
                let Some(token) = hello.token else { return Admission::Wait };
                match token.verify(owner, &holder(from, hello), self.unix_ms(now)) {
                    Ok(()) => Admission::Admit(token.permissions),
                    Err(error) => Admission::Refuse(error),
                }
            }
        }
    }

    /// The owner's token for `peer`, admitted with `permissions` on `hello`.
    pub(super) fn grant(&self, peer: PeerUuid, hello: &Hello, permissions: Permissions, now: Instant) -> Option<CapabilityToken> {
        let owner = self.owner()?;
        let expires_at_ms = self.unix_ms(now) + owner.token_lifetime.as_millis() as u64;
        Some(owner.key.issue(holder(peer, hello), permissions, expires_at_ms))
    }

    /// Takes `token`, granted to this player `own` by the owner, if it is valid and this
    /// player's; returns whether it replaced the one held.
    pub(super) fn accept_grant(&mut self, token: CapabilityToken, own: PeerUuid, own_nonce: [u8; SESSION_NONCE_BYTES], now: Instant) -> Result<bool, TokenError> {
        let RoomAuthority::Member(owner) = &self.authority else { return Ok(false) };
        let own = TokenHolder { identity: self.identity(), peer: own, session_nonce: own_nonce };
        token.verify(owner, &own, self.unix_ms(now))?;
        let newer = self.own_token.is_none_or(|held| token.expires_at_ms > held.expires_at_ms);
        if newer {
            self.own_token = Some(token);
        }
        Ok(newer)
    }

    /// Drops this player's token: it was bound to a peer id this player no longer has (the
    /// transport was rebuilt), and the owner grants a new one at the next handshake.
    pub(super) fn forget_own_token(&mut self) {
        self.own_token = None;
    }

    /// Whether a trusted peer's `hello` no longer holds: its token has expired.
    pub(super) fn expired(&self, hello: &Hello, now: Instant) -> Option<TokenError> {
        let token = hello.token.filter(|_| matches!(self.authority, RoomAuthority::Member(_)) && !self.is_owner_identity(hello.identity))?;
        token.check_expiry(self.unix_ms(now)).err()
    }

    /// Pins `identity`, which `peer` proved, to it for the session (the first one stays).
    pub(super) fn pin(&mut self, peer: PeerUuid, identity: IdentityKey) {
        self.pinned.entry(peer).or_insert(identity);
    }

    /// The identity pinned to `peer`.
    pub(super) fn pinned(&self, peer: PeerUuid) -> Option<IdentityKey> {
        self.pinned.get(&peer).copied()
    }

    /// From now on the player with `peer` id and `identity` is refused, under either.
    pub(super) fn revoke(&mut self, peer: PeerUuid, identity: IdentityKey) {
        self.revoked_peers.insert(peer);
        if self.revoked.insert(identity) {
            self.revocations.push((peer, identity));
        }
    }

    /// Whether `peer`, or a player showing `identity`, is revoked.
    pub(super) fn is_revoked(&self, peer: PeerUuid, identity: Option<IdentityKey>) -> bool {
        self.revoked_peers.contains(&peer) || identity.is_some_and(|i| self.revoked.contains(&i))
    }

    /// Every revocation so far, in order: what the owner tells each newly trusted member.
    pub(super) fn revocations(&self) -> &[(PeerUuid, IdentityKey)] {
        &self.revocations
    }
}

fn holder(peer: PeerUuid, hello: &Hello) -> TokenHolder {
    TokenHolder { identity: hello.identity, peer, session_nonce: hello.session_nonce }
}
