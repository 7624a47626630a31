//! [`SecretKey`]: 256 secret bits, drawn at random or handed over as hex, wiped from memory
//! when dropped and never printed; what a room key and a sealed model's key are made of.

use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Bytes of a [`SecretKey`].
pub const SECRET_KEY_BYTES: usize = 32;

/// Why a secret key could not be made.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SecretKeyError {
    /// The operating system (or the browser) gave no random bytes.
    #[error("no randomness for a new key: {0}")]
    NoRandomness(String),
    /// The text is not 64 hex digits.
    #[error("a key is {} hex digits", 2 * SECRET_KEY_BYTES)]
    NotHex,
}

/// 256 secret bits. Make one with [`Self::generate`] and hand its [`Self::to_hex`] text to whoever
/// must hold it, out of band.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; SECRET_KEY_BYTES]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// A fresh key from the operating system's (or the browser's) random generator.
    pub fn generate() -> Result<Self, SecretKeyError> {
        let mut key = [0; SECRET_KEY_BYTES];
        random_bytes(&mut key)?;
        Ok(Self(key))
    }

    /// A key made elsewhere (a key exchange, a secret store).
    pub const fn from_bytes(bytes: [u8; SECRET_KEY_BYTES]) -> Self {
        Self(bytes)
    }

    /// The key as 64 lowercase hex digits; wiped when dropped.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(to_hex(&self.0))
    }

    /// Parses [`Self::to_hex`]'s text (either case, surrounding blanks ignored).
    pub fn from_hex(text: &str) -> Result<Self, SecretKeyError> {
        parse_hex(text).map(Self).ok_or(SecretKeyError::NotHex)
    }

    /// The key's bytes, for the crate's ciphers and key derivations.
    pub(crate) fn bytes(&self) -> &[u8; SECRET_KEY_BYTES] {
        &self.0
    }
}

/// 32 bytes from 64 hex digits (either case, surrounding blanks ignored).
pub(crate) fn parse_hex(text: &str) -> Option<[u8; SECRET_KEY_BYTES]> {
    let mut bytes = [0; SECRET_KEY_BYTES];
    hex::decode_to_slice(text.trim(), &mut bytes).ok()?;
    Some(bytes)
}

/// `bytes` as lowercase hex digits.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Fills `bytes` from the operating system's (or the browser's) random generator.
pub(crate) fn random_bytes(bytes: &mut [u8]) -> Result<(), SecretKeyError> {
    getrandom::getrandom(bytes).map_err(|e| SecretKeyError::NoRandomness(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_random_survives_its_hex_form_and_is_never_printed() {
        let (a, b) = (SecretKey::generate().unwrap(), SecretKey::generate().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.to_hex().len(), 64);
        assert_eq!(SecretKey::from_hex(&a.to_hex()).unwrap(), a);
        assert_eq!(SecretKey::from_hex(&a.to_hex().to_uppercase()).unwrap(), a);
        assert_eq!(SecretKey::from_hex("00ff"), Err(SecretKeyError::NotHex));
        assert_eq!(SecretKey::from_hex(&"g".repeat(64)), Err(SecretKeyError::NotHex));
        assert_eq!(format!("{a:?}"), "SecretKey(..)");
    }
}
