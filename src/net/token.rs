//! Capability tokens: the room owner's Ed25519 signature on what one player may do in one
//! session, and until when. A token is bound to the player's own identity key, its peer id and
//! its session nonce, so that it is worth nothing to anyone else or in another session.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use thiserror::Error;

use super::auth::{PeerUuid, Permissions};
use super::seal::SESSION_NONCE_BYTES;
use crate::secret::{parse_hex, to_hex, SecretKey, SecretKeyError};

/// Bytes of a token on the wire.
pub const TOKEN_BYTES: usize = 32 + 16 + SESSION_NONCE_BYTES + 1 + 8 + 64;

/// How far a verifier's clock may run ahead of the owner's before a token it renewed in time
/// reads as expired: a token is void only this long after its expiry.
pub const CLOCK_SKEW_MS: u64 = 30_000;

const TOKEN_CONTEXT: &[u8] = b"bevy_p2p_inference token v1";
const PROOF_CONTEXT: &[u8] = b"bevy_p2p_inference hello proof v2";

/// Why a token or a proof of identity was not accepted.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// The signature is not the room owner's (forged, altered, or issued by another owner).
    #[error("the token is not signed by the room's owner")]
    Forged,
    /// The token's time is up.
    #[error("the token expired at {expired_at_ms} ms (now {now_ms} ms, Unix time)")]
    Expired {
        /// When it expired.
        expired_at_ms: u64,
        /// The verifier's clock.
        now_ms: u64,
    },
    /// The token was issued to another player, peer id or session (a stolen or replayed token).
    #[error("the token was issued to another player or session")]
    NotTheHolder,
    /// The owner revoked the player.
    #[error("the player was revoked by the room's owner")]
    Revoked,
    /// The peer proved another identity on this link before: an identity is pinned to its
    /// peer id for the session, so that a revocation of one reaches the player.
    #[error("the peer showed another identity before")]
    IdentityChanged,
    /// The hello is not signed by the identity key it names, over this player's fresh nonce.
    #[error("the hello does not prove its identity key over this session's nonce")]
    BadProof,
    /// A key on the wire or in the configuration is not a valid Ed25519 key.
    #[error("not a valid Ed25519 key")]
    BadKey,
}

/// The public half of a player's session identity: what its token is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdentityKey(pub [u8; 32]);

/// The room owner's signing key: whoever holds it grants and revokes players' permissions.
/// Wiped from memory when dropped, never printed.
#[derive(Clone)]
pub struct OwnerKey(SigningKey);

impl std::fmt::Debug for OwnerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OwnerKey(public {})", self.public().to_hex())
    }
}

impl OwnerKey {
    /// A fresh key from the operating system's (or the browser's) random generator.
    pub fn generate() -> Result<Self, SecretKeyError> {
        Ok(Self::from_secret(&SecretKey::generate()?))
    }

    /// The key whose 32-byte seed is `seed` (a [`SecretKey`], handed over as hex).
    pub fn from_secret(seed: &SecretKey) -> Self {
        Self(SigningKey::from_bytes(seed.bytes()))
    }

    /// The seed, to store or hand to the owner's configuration: a secret.
    pub fn to_secret(&self) -> SecretKey {
        SecretKey::from_bytes(self.0.to_bytes())
    }

    /// The public key every member of the room is configured with.
    pub fn public(&self) -> OwnerPublicKey {
        OwnerPublicKey(self.0.verifying_key())
    }

    pub(super) fn identity(&self) -> PlayerIdentity {
        PlayerIdentity(self.0.clone())
    }

    /// Signs a token granting `permissions` to the player `holder` until `expires_at_ms`.
    pub fn issue(&self, holder: TokenHolder, permissions: Permissions, expires_at_ms: u64) -> CapabilityToken {
        let mut token = CapabilityToken { holder, permissions, expires_at_ms, signature: [0; 64] };
        token.signature = self.0.sign(&token.signed_bytes()).to_bytes();
        token
    }
}

/// The room owner's public key: members accept only tokens it verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnerPublicKey(VerifyingKey);

impl OwnerPublicKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, TokenError> {
        VerifyingKey::from_bytes(&bytes).map(Self).map_err(|_| TokenError::BadKey)
    }

    /// The key from 64 hex digits (as [`Self::to_hex`] writes it).
    pub fn from_hex(text: &str) -> Result<Self, TokenError> {
        Self::from_bytes(parse_hex(text).ok_or(TokenError::BadKey)?)
    }

    /// The key as 64 hex digits.
    pub fn to_hex(&self) -> String {
        to_hex(self.0.as_bytes())
    }

    /// The owner's identity key: the owner plays under its owner key.
    pub fn identity(&self) -> IdentityKey {
        IdentityKey(self.0.to_bytes())
    }
}

/// A player's signing key for one session. Its public half goes in every hello; its
/// signature over the receiver's fresh session nonce proves the hello is the player's own.
#[derive(Clone)]
pub struct PlayerIdentity(SigningKey);

impl std::fmt::Debug for PlayerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlayerIdentity(public {})", to_hex(&self.public().0))
    }
}

impl PlayerIdentity {
    /// A fresh identity.
    pub fn generate() -> Result<Self, SecretKeyError> {
        Ok(Self(SigningKey::from_bytes(SecretKey::generate()?.bytes())))
    }

    pub(super) fn signing_key(&self) -> &SigningKey {
        &self.0
    }

    /// The public key.
    pub fn public(&self) -> IdentityKey {
        IdentityKey(self.0.verifying_key().to_bytes())
    }

    /// Signs that this player, as `sender`, greets `receiver` in the receiver's session
    /// `receiver_nonce`, over the link whose keys' channel binding is `binding`
    /// ([`super::LinkKeys::binding`]): a proof relayed onto another link (by a key holder in
    /// the middle, who agreed other keys with each side) does not verify there.
    pub fn prove(&self, sender: PeerUuid, receiver: PeerUuid, receiver_nonce: &[u8; SESSION_NONCE_BYTES], binding: &[u8; 32]) -> [u8; 64] {
        self.0.sign(&proof_bytes(sender, receiver, receiver_nonce, binding)).to_bytes()
    }
}

/// Checks a hello's proof: signed by `identity` for `sender` greeting `receiver` in the
/// receiver's session `receiver_nonce`, over the link whose channel binding is `binding`.
pub fn verify_proof(identity: IdentityKey, sender: PeerUuid, receiver: PeerUuid, receiver_nonce: &[u8; SESSION_NONCE_BYTES], binding: &[u8; 32], proof: &[u8; 64]) -> Result<(), TokenError> {
    let key = VerifyingKey::from_bytes(&identity.0).map_err(|_| TokenError::BadKey)?;
    key.verify(&proof_bytes(sender, receiver, receiver_nonce, binding), &Signature::from_bytes(proof)).map_err(|_| TokenError::BadProof)
}

fn proof_bytes(sender: PeerUuid, receiver: PeerUuid, receiver_nonce: &[u8; SESSION_NONCE_BYTES], binding: &[u8; 32]) -> Vec<u8> {
    [PROOF_CONTEXT, &sender.0, &receiver.0, receiver_nonce, binding].concat()
}

/// The player a token is issued to: its identity key, its peer id and its session nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenHolder {
    /// The player's identity key.
    pub identity: IdentityKey,
    /// Its peer id in the room.
    pub peer: PeerUuid,
    /// Its nonce for this session.
    pub session_nonce: [u8; SESSION_NONCE_BYTES],
}

/// What the room's owner lets one player do in one session, until when, signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapabilityToken {
    /// The player it was issued to.
    pub holder: TokenHolder,
    /// What it may do.
    pub permissions: Permissions,
    /// Unix time in milliseconds after which it is void.
    pub expires_at_ms: u64,
    /// The owner's Ed25519 signature over the fields above.
    pub signature: [u8; 64],
}

impl CapabilityToken {
    fn signed_bytes(&self) -> Vec<u8> {
        let h = &self.holder;
        [TOKEN_CONTEXT, &h.identity.0, &h.peer.0, &h.session_nonce, &[self.permissions.bits()], &self.expires_at_ms.to_le_bytes()].concat()
    }

    /// Whether the token is `owner`'s, issued to `presenter`, and not expired at `now_ms` (by
    /// more than [`CLOCK_SKEW_MS`]).
    pub fn verify(&self, owner: &OwnerPublicKey, presenter: &TokenHolder, now_ms: u64) -> Result<(), TokenError> {
        owner.0.verify(&self.signed_bytes(), &Signature::from_bytes(&self.signature)).map_err(|_| TokenError::Forged)?;
        if self.holder != *presenter {
            return Err(TokenError::NotTheHolder);
        }
        self.check_expiry(now_ms)
    }

    /// Whether the token has expired at `now_ms`, by more than [`CLOCK_SKEW_MS`].
    pub fn check_expiry(&self, now_ms: u64) -> Result<(), TokenError> {
        if now_ms > self.expires_at_ms.saturating_add(CLOCK_SKEW_MS) {
            return Err(TokenError::Expired { expired_at_ms: self.expires_at_ms, now_ms });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: PeerUuid = PeerUuid([1; 16]);
    const B: PeerUuid = PeerUuid([2; 16]);

    fn holder(identity: &PlayerIdentity, peer: PeerUuid, nonce: u8) -> TokenHolder {
        TokenHolder { identity: identity.public(), peer, session_nonce: [nonce; SESSION_NONCE_BYTES] }
    }

    #[test]
    fn a_token_verifies_for_its_holder_until_it_expires_by_more_than_the_clock_skew_allowed() {
        let owner = OwnerKey::generate().unwrap();
        let player = PlayerIdentity::generate().unwrap();
        let token = owner.issue(holder(&player, A, 7), Permissions::RUN_STAGES, 1_000);
        assert_eq!(token.verify(&owner.public(), &holder(&player, A, 7), 1_000), Ok(()));
        let skewed = 1_000 + CLOCK_SKEW_MS;
        assert_eq!(token.verify(&owner.public(), &holder(&player, A, 7), skewed), Ok(()), "a verifier's clock 30 s ahead of the owner's");
        assert_eq!(token.verify(&owner.public(), &holder(&player, A, 7), skewed + 1), Err(TokenError::Expired { expired_at_ms: 1_000, now_ms: skewed + 1 }));
    }

    #[test]
    fn a_token_of_another_owner_or_with_changed_fields_is_forged() {
        let owner = OwnerKey::generate().unwrap();
        let player = PlayerIdentity::generate().unwrap();
        let token = owner.issue(holder(&player, A, 7), Permissions::RUN_STAGES, 1_000);
        let other_owner = OwnerKey::generate().unwrap();
        assert_eq!(token.verify(&other_owner.public(), &holder(&player, A, 7), 0), Err(TokenError::Forged));
        let widened = CapabilityToken { permissions: Permissions::COORDINATOR, ..token };
        assert_eq!(widened.verify(&owner.public(), &holder(&player, A, 7), 0), Err(TokenError::Forged));
        let extended = CapabilityToken { expires_at_ms: u64::MAX, ..token };
        assert_eq!(extended.verify(&owner.public(), &holder(&player, A, 7), 0), Err(TokenError::Forged));
        let self_signed = other_owner.issue(holder(&player, A, 7), Permissions::COORDINATOR, u64::MAX);
        assert_eq!(self_signed.verify(&owner.public(), &holder(&player, A, 7), 0), Err(TokenError::Forged));
    }

    #[test]
    fn a_token_presented_by_another_player_peer_or_session_is_not_the_holders() {
        let owner = OwnerKey::generate().unwrap();
        let player = PlayerIdentity::generate().unwrap();
        let thief = PlayerIdentity::generate().unwrap();
        let token = owner.issue(holder(&player, A, 7), Permissions::RUN_STAGES, 1_000);
        for presenter in [holder(&thief, A, 7), holder(&player, B, 7), holder(&player, A, 8)] {
            assert_eq!(token.verify(&owner.public(), &presenter, 0), Err(TokenError::NotTheHolder));
        }
    }

    #[test]
    fn a_proof_verifies_only_for_its_sender_receiver_the_receivers_nonce_and_the_link_it_was_made_on() {
        let player = PlayerIdentity::generate().unwrap();
        let (nonce, link) = ([3; SESSION_NONCE_BYTES], [5; 32]);
        let proof = player.prove(A, B, &nonce, &link);
        assert_eq!(verify_proof(player.public(), A, B, &nonce, &link, &proof), Ok(()));
        assert_eq!(verify_proof(player.public(), A, B, &[4; SESSION_NONCE_BYTES], &link, &proof), Err(TokenError::BadProof), "an old session's hello");
        assert_eq!(verify_proof(player.public(), B, A, &nonce, &link, &proof), Err(TokenError::BadProof));
        assert_eq!(verify_proof(player.public(), A, B, &nonce, &[6; 32], &proof), Err(TokenError::BadProof), "relayed onto another link");
        assert_eq!(verify_proof(PlayerIdentity::generate().unwrap().public(), A, B, &nonce, &link, &proof), Err(TokenError::BadProof));
    }

    #[test]
    fn owner_keys_round_trip_through_their_secret_and_are_never_printed() {
        let owner = OwnerKey::generate().unwrap();
        let again = OwnerKey::from_secret(&SecretKey::from_hex(&owner.to_secret().to_hex()).unwrap());
        assert_eq!(again.public(), owner.public());
        assert_eq!(OwnerPublicKey::from_hex(&owner.public().to_hex()), Ok(owner.public()));
        assert!(!format!("{owner:?}").contains(owner.to_secret().to_hex().as_str()));
        assert_eq!(OwnerPublicKey::from_hex(&"g".repeat(64)), Err(TokenError::BadKey));
        assert_eq!(OwnerPublicKey::from_hex("ab"), Err(TokenError::BadKey));
    }
}
