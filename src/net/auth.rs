//! Each link's keys ([`LinkKeys`]), peers' ids on the wire, and what a peer may do.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::seal::{TensorCipher, SESSION_NONCE_BYTES};

type HmacSha256 = Hmac<Sha256>;

/// A peer's 16-byte identity on the wire (matchbox's peer UUID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerUuid(pub [u8; 16]);

impl std::fmt::Display for PeerUuid {
    /// The first three bytes in hex: enough to tell the players of a room apart in logs and UI.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02x}{:02x}{:02x}", self.0[0], self.0[1], self.0[2])
    }
}

/// What a peer is allowed to ask of others: claimed in its hello, granted by the room's owner in
/// its [`super::CapabilityToken`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u8);

impl Permissions {
    /// May receive stage inputs, run stages and send back their outputs.
    pub const RUN_STAGES: Permissions = Permissions(1);
    /// May send stage inputs (own requests) and receive the results.
    pub const SUBMIT_REQUESTS: Permissions = Permissions(2);
    /// Submits requests and runs stages.
    pub const COORDINATOR: Permissions = Permissions(3);
    /// May send shared tensors' values and take part in collectives (so that, in an owned room,
    /// a player can be let run stages without being let make the others hold its data).
    pub const SHARE: Permissions = Permissions(4);
    /// Everything.
    pub const ALL: Permissions = Permissions(7);
    /// Nothing.
    pub const NONE: Permissions = Permissions(0);

    /// The permissions of either.
    pub const fn union(self, other: Permissions) -> Permissions {
        Permissions(self.0 | other.0)
    }

    /// Whether every permission of `other` is included.
    pub fn contains(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }

    /// The permissions in both.
    pub fn intersection(self, other: Permissions) -> Permissions {
        Permissions(self.0 & other.0)
    }

    /// The wire byte.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// From the wire byte; unknown bits are dropped.
    pub fn from_bits(bits: u8) -> Self {
        Permissions(bits & Self::ALL.0)
    }
}

/// The keys of one link in one session, derived with HKDF-SHA256 from the secret its two
/// players agreed on in their key exchange (see [`super::LinkKeyExchange`]): one authenticates
/// every frame between them, the other is the root of their tensor ciphers. Only the two
/// players, and only if both hold the room key, have them; a recorded session's keys are gone
/// with it. Wiped from memory when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct LinkKeys {
    frame: [u8; 32],
    seal: [u8; 32],
}

impl std::fmt::Debug for LinkKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKeys(..)")
    }
}

impl LinkKeys {
    /// The keys of a link whose key exchange agreed on `secret`.
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(b"bevy_p2p_inference/v6 link"), secret);
        let mut keys = Self { frame: [0; 32], seal: [0; 32] };
        hkdf.expand(b"frame", &mut keys.frame).expect("32 bytes is a valid HKDF-SHA256 length");
        hkdf.expand(b"seal", &mut keys.seal).expect("32 bytes is a valid HKDF-SHA256 length");
        keys
    }

    /// The link's channel binding: a value only the two players of this exchange know, signed
    /// into their hellos' proofs, so that a proof made on one link does not verify on another
    /// (a key holder relaying two players' handshakes agrees different keys with each).
    pub fn binding(&self) -> [u8; 32] {
        let hkdf = Hkdf::<Sha256>::new(Some(b"bevy_p2p_inference/v6 binding"), &self.seal);
        let mut binding = [0; 32];
        hkdf.expand(b"hello proof", &mut binding).expect("32 bytes is a valid HKDF-SHA256 length");
        binding
    }

    /// The cipher of the tensor payloads `sender` sends `receiver` in the session where their
    /// hellos carried `sender_nonce` and `receiver_nonce`.
    pub fn tensor_cipher(&self, sender: PeerUuid, receiver: PeerUuid, sender_nonce: &[u8; SESSION_NONCE_BYTES], receiver_nonce: &[u8; SESSION_NONCE_BYTES]) -> TensorCipher {
        let salt = [&sender_nonce[..], &receiver_nonce[..]].concat();
        let hkdf = Hkdf::<Sha256>::new(Some(&salt), &self.seal);
        let mut key = zeroize::Zeroizing::new([0; 32]);
        let info = [&b"tensor"[..], &sender.0, &receiver.0].concat();
        hkdf.expand(&info, &mut *key).expect("32 bytes is a valid HKDF-SHA256 length");
        TensorCipher::new(&key)
    }

    /// The MAC of a frame sent from `sender` to `receiver`.
    pub fn frame_tag(&self, sender: PeerUuid, receiver: PeerUuid, frame: &[u8]) -> [u8; 32] {
        self.frame_mac(sender, receiver, frame).finalize().into_bytes().into()
    }

    /// Checks a frame's MAC in constant time.
    pub fn verify_frame(&self, sender: PeerUuid, receiver: PeerUuid, frame: &[u8], tag: &[u8]) -> bool {
        self.frame_mac(sender, receiver, frame).verify_slice(tag).is_ok()
    }

    /// HMAC-SHA256 under the frame key over sender, receiver and frame, not yet finalized.
    fn frame_mac(&self, sender: PeerUuid, receiver: PeerUuid, frame: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.frame).expect("32-byte key");
        mac.update(&sender.0);
        mac.update(&receiver.0);
        mac.update(frame);
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: PeerUuid = PeerUuid([1; 16]);
    const B: PeerUuid = PeerUuid([2; 16]);

    #[test]
    fn a_frame_tag_binds_sender_receiver_and_bytes() {
        let room = LinkKeys::from_secret(&[1; 32]);
        let tag = room.frame_tag(A, B, b"hello");
        assert!(room.verify_frame(A, B, b"hello", &tag));
        assert!(!room.verify_frame(B, A, b"hello", &tag), "reflected back to its sender");
        assert!(!room.verify_frame(A, B, b"hellp", &tag));
        assert!(!room.verify_frame(A, B, b"hello", &tag[..31]));
    }

    #[test]
    fn permissions_compose() {
        assert!(Permissions::COORDINATOR.contains(Permissions::RUN_STAGES));
        assert!(!Permissions::RUN_STAGES.contains(Permissions::SUBMIT_REQUESTS));
        assert_eq!(Permissions::from_bits(0xff), Permissions::ALL);
        assert_eq!(Permissions::COORDINATOR.union(Permissions::SHARE), Permissions::ALL);
        assert_eq!(Permissions::COORDINATOR.intersection(Permissions::RUN_STAGES), Permissions::RUN_STAGES);
        assert_eq!(Permissions::SUBMIT_REQUESTS.intersection(Permissions::RUN_STAGES), Permissions::NONE);
    }
}
