//! Tensor payloads sealed end to end: every chunk's payload is encrypted and authenticated with
//! ChaCha20-Poly1305 under a key for one direction of one link in one session, derived from the
//! room key and both players' session nonces (exchanged in their hellos). A signaling server in
//! the middle, which never holds the room key, learns nothing of the activations, and a chunk
//! recorded in another session does not open in this one.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use thiserror::Error;

/// Bytes the seal adds to a payload (the Poly1305 tag).
pub const SEAL_TAG_BYTES: usize = 16;

/// Bytes of a player's session nonce.
pub const SESSION_NONCE_BYTES: usize = 16;

/// A chunk's payload did not open.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("a tensor chunk's payload does not open under this link's session key")]
pub struct Unsealed;

/// Seals and opens the tensor payloads of one direction of one link.
#[derive(Clone)]
pub struct TensorCipher(ChaCha20Poly1305);

impl std::fmt::Debug for TensorCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TensorCipher(..)")
    }
}

impl TensorCipher {
    /// The cipher for a 32-byte key.
    pub(super) fn new(key: &[u8; 32]) -> Self {
        Self(ChaCha20Poly1305::new(key.into()))
    }

    /// Seals `payload`, sent in the frame numbered `sequence` (each sequence number is used
    /// once per direction of a link, so it is the nonce).
    pub fn seal(&self, sequence: u64, payload: &[u8]) -> Vec<u8> {
        self.0.encrypt(&nonce(sequence), payload).expect("ChaCha20-Poly1305 seals any chunk")
    }

    /// Opens a payload sealed by [`Self::seal`] with the same `sequence`.
    pub fn open(&self, sequence: u64, sealed: &[u8]) -> Result<Vec<u8>, Unsealed> {
        self.0.decrypt(&nonce(sequence), sealed).map_err(|_| Unsealed)
    }
}

fn nonce(sequence: u64) -> Nonce {
    let mut bytes = [0; 12];
    bytes[..8].copy_from_slice(&sequence.to_le_bytes());
    bytes.into()
}

/// A fresh session nonce: random, or, where no randomness is to be had, zero (the keys then
/// still differ per room and per pair of players, but not per session).
pub(super) fn session_nonce() -> [u8; SESSION_NONCE_BYTES] {
    let mut nonce = [0; SESSION_NONCE_BYTES];
    if crate::secret::random_bytes(&mut nonce).is_err() {
        bevy::log::warn!("no randomness for a session nonce: tensor keys are not renewed per session");
        nonce = [0; SESSION_NONCE_BYTES];
    }
    nonce
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{LinkKeys, PeerUuid};

    const A: PeerUuid = PeerUuid([1; 16]);
    const B: PeerUuid = PeerUuid([2; 16]);

    #[test]
    fn a_payload_opens_only_in_its_direction_session_and_frame() {
        let keys = LinkKeys::from_secret(&[5; 32]);
        let (na, nb) = ([1; SESSION_NONCE_BYTES], [2; SESSION_NONCE_BYTES]);
        let a_to_b = keys.tensor_cipher(A, B, &na, &nb);
        let sealed = a_to_b.seal(7, b"activations");
        assert_eq!(sealed.len(), b"activations".len() + SEAL_TAG_BYTES);
        assert!(!sealed.windows(11).any(|w| w == b"activations"));
        assert_eq!(keys.tensor_cipher(A, B, &na, &nb).open(7, &sealed).as_deref(), Ok(&b"activations"[..]));
        assert_eq!(a_to_b.open(8, &sealed), Err(Unsealed), "another frame's nonce");
        assert_eq!(keys.tensor_cipher(B, A, &nb, &na).open(7, &sealed), Err(Unsealed), "the other direction");
        assert_eq!(keys.tensor_cipher(A, B, &na, &[3; SESSION_NONCE_BYTES]).open(7, &sealed), Err(Unsealed), "another session");
        let other_link = LinkKeys::from_secret(&[6; 32]);
        assert_eq!(other_link.tensor_cipher(A, B, &na, &nb).open(7, &sealed), Err(Unsealed), "another link's keys");
    }
}
