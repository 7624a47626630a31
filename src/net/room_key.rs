//! [`RoomKey`]: the secret every player of a room holds: a [`SecretKey`] drawn at random, or
//! stretched from a passphrase for the room.

use argon2::Argon2;
use thiserror::Error;

use crate::secret::{SecretKey, SecretKeyError, SECRET_KEY_BYTES};

/// Why a room key could not be made.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RoomKeyError {
    /// No random or hex key.
    #[error(transparent)]
    Key(#[from] SecretKeyError),
    /// The passphrase is empty.
    #[error("an empty passphrase")]
    EmptyPassphrase,
    /// Argon2id refused its input.
    #[error("stretching the passphrase failed: {0}")]
    Stretching(String),
}

/// A room's shared secret. Every link's keys come from a key exchange (SPAKE2) that succeeds
/// only between two holders of it, so anyone who holds it is a member of the room. Make one
/// with [`Self::generate`] and hand its [`Self::to_hex`] text to the other players out of band; a human passphrase only
/// goes through [`Self::from_passphrase`], which makes each guess cost an Argon2id run.
/// Wiped from memory when dropped; prints as `RoomKey(..)`.
#[derive(Clone, PartialEq, Eq)]
pub struct RoomKey(SecretKey);

impl std::fmt::Debug for RoomKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoomKey(..)")
    }
}

impl RoomKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, RoomKeyError> {
        Ok(Self(SecretKey::generate()?))
    }

    /// A key made elsewhere (a game's own key exchange, a secret store).
    pub const fn from_bytes(bytes: [u8; SECRET_KEY_BYTES]) -> Self {
        Self(SecretKey::from_bytes(bytes))
    }

    /// The key as 64 hex digits, to hand to the other players; wiped when dropped.
    pub fn to_hex(&self) -> zeroize::Zeroizing<String> {
        self.0.to_hex()
    }

    /// Parses [`Self::to_hex`]'s text.
    pub fn from_hex(text: &str) -> Result<Self, RoomKeyError> {
        Ok(Self(SecretKey::from_hex(text)?))
    }

    /// Stretches a passphrase with Argon2id (19 MiB, two passes), salted with the room's name,
    /// so that every player who types it for that room gets the same key. Nothing on the wire
    /// lets a guess be tested offline (each link's keys come from a SPAKE2 exchange); the
    /// stretching protects the passphrase where the key itself is stored.
    pub fn from_passphrase(passphrase: &str, room: &str) -> Result<Self, RoomKeyError> {
        if passphrase.is_empty() {
            return Err(RoomKeyError::EmptyPassphrase);
        }
        // Argon2 wants at least 8 bytes of salt: the room's name under a fixed label.
        let salt = format!("bevy_p2p_inference room {room}");
        let mut key = zeroize::Zeroizing::new([0; SECRET_KEY_BYTES]);
        Argon2::default().hash_password_into(passphrase.as_bytes(), salt.as_bytes(), &mut *key).map_err(|e| RoomKeyError::Stretching(e.to_string()))?;
        Ok(Self::from_bytes(*key))
    }

    /// What a player typed or pasted for the room at `room_url`: a [`Self::to_hex`] key as it
    /// is, anything else as a passphrase for the room named by the URL's last path segment.
    pub fn from_text(text: &str, room_url: &str) -> Result<Self, RoomKeyError> {
        Self::from_hex(text).or_else(|_| Self::from_passphrase(text, room_name(room_url)))
    }

    /// The password of every link's key exchange, derived from the key with HKDF-SHA256 (so
    /// that the key itself is used for one thing only).
    pub(super) fn exchange_password(&self) -> zeroize::Zeroizing<[u8; SECRET_KEY_BYTES]> {
        let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"bevy_p2p_inference/v6"), self.0.bytes());
        let mut password = zeroize::Zeroizing::new([0; SECRET_KEY_BYTES]);
        hkdf.expand(b"link key exchange", &mut *password).expect("32 bytes is a valid HKDF-SHA256 length");
        password
    }
}

/// The room's name in a matchbox room URL (`ws://host:port/name` → `name`).
fn room_name(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url).trim_end_matches('/');
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passphrase_gives_one_key_per_room_and_a_hex_text_is_taken_as_a_key() {
        let demo = RoomKey::from_text("correct horse", "ws://127.0.0.1:3536/demo").unwrap();
        assert_eq!(demo, RoomKey::from_passphrase("correct horse", "demo").unwrap());
        assert_eq!(demo, RoomKey::from_text("correct horse", "wss://example.org/demo/").unwrap(), "the room's name, not the host, salts it");
        assert_ne!(demo, RoomKey::from_text("correct horse", "ws://127.0.0.1:3536/other").unwrap());
        assert_ne!(demo, RoomKey::from_text("correct horsf", "ws://127.0.0.1:3536/demo").unwrap());
        let key = RoomKey::generate().unwrap();
        assert_eq!(RoomKey::from_text(&key.to_hex(), "ws://127.0.0.1:3536/demo").unwrap(), key);
        assert_eq!(RoomKey::from_passphrase("", "demo"), Err(RoomKeyError::EmptyPassphrase));
        assert_eq!(format!("{key:?}"), "RoomKey(..)");
    }
}
