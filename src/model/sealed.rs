//! Model files sealed at rest: the ONNX bytes encrypted and authenticated with
//! XChaCha20-Poly1305 under a key the game supplies when it loads them, so that a shipped
//! model's weights cannot be read or swapped without that key.
//!
//! A sealed file is `BPIM`, a format version byte, a 24-byte random nonce, then the ciphertext
//! with its 16-byte tag; the magic and version are authenticated too.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::secret::{random_bytes, SecretKey, SecretKeyError};

const MAGIC: &[u8; 4] = b"BPIM";
const VERSION: u8 = 1;
const NONCE_BYTES: usize = 24;
const HEADER_BYTES: usize = MAGIC.len() + 1 + NONCE_BYTES;

/// Why a sealed model could not be opened (or a model sealed).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SealError {
    /// The file is sealed and no key was given to the loader.
    #[error("the model is sealed and no key was given (P2pInferencePlugin::model_key)")]
    NoKey,
    /// A key is configured and the file is not sealed: a plain model put in place of the
    /// sealed one is refused.
    #[error("a model key is configured (P2pInferencePlugin::model_key) and the model is not sealed")]
    NotSealed,
    /// The key is not the one it was sealed with, or the file was changed since.
    #[error("the sealed model does not open with this key: a wrong key or a changed file")]
    WrongKeyOrTampered,
    /// The file ends before its header and tag.
    #[error("a sealed model of {0} bytes is truncated")]
    Truncated(usize),
    /// The file was sealed by a format version this crate does not read.
    #[error("sealed model format version {0} is not supported (this crate reads {VERSION})")]
    UnsupportedVersion(u8),
    /// No nonce could be drawn for sealing.
    #[error(transparent)]
    Randomness(#[from] SecretKeyError),
}

/// Whether `bytes` are a sealed model (by their magic).
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Seals `onnx` (a model file's bytes) under `key`, with a fresh random nonce.
pub fn seal_model(onnx: &[u8], key: &SecretKey) -> Result<Vec<u8>, SealError> {
    let mut nonce = [0; NONCE_BYTES];
    random_bytes(&mut nonce)?;
    let mut sealed = Vec::with_capacity(HEADER_BYTES + onnx.len() + 16);
    sealed.extend_from_slice(MAGIC);
    sealed.push(VERSION);
    sealed.extend_from_slice(&nonce);
    let aad = sealed[..MAGIC.len() + 1].to_vec();
    let ciphertext = cipher(key).encrypt(XNonce::from_slice(&nonce), Payload { msg: onnx, aad: &aad }).expect("XChaCha20-Poly1305 seals any length a Vec holds");
    sealed.extend_from_slice(&ciphertext);
    Ok(sealed)
}

/// Opens a sealed model with `key`: the ONNX bytes, wiped when dropped.
pub fn open_sealed(sealed: &[u8], key: &SecretKey) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if sealed.len() < HEADER_BYTES + 16 || !is_sealed(sealed) {
        return Err(SealError::Truncated(sealed.len()));
    }
    let version = sealed[MAGIC.len()];
    if version != VERSION {
        return Err(SealError::UnsupportedVersion(version));
    }
    let (header, ciphertext) = sealed.split_at(HEADER_BYTES);
    let nonce = XNonce::from_slice(&header[MAGIC.len() + 1..]);
    let payload = Payload { msg: ciphertext, aad: &header[..MAGIC.len() + 1] };
    cipher(key).decrypt(nonce, payload).map(Zeroizing::new).map_err(|_| SealError::WrongKeyOrTampered)
}

/// The ONNX bytes of a model file's `bytes` as the loader takes them: with a `key`, the file
/// must be sealed under it (a plain file in its place is [`SealError::NotSealed`]); without
/// one, it must be plain ([`SealError::NoKey`]).
pub fn model_bytes(bytes: Zeroizing<Vec<u8>>, key: Option<&SecretKey>) -> Result<Zeroizing<Vec<u8>>, SealError> {
    match (is_sealed(&bytes), key) {
        (true, Some(key)) => open_sealed(&bytes, key),
        (true, None) => Err(SealError::NoKey),
        (false, Some(_)) => Err(SealError::NotSealed),
        (false, None) => Ok(bytes),
    }
}

fn cipher(key: &SecretKey) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: &[u8] = b"\x08\x07\x12\x04some onnx bytes";

    #[test]
    fn a_sealed_model_opens_with_its_key_only() {
        let key = SecretKey::generate().unwrap();
        let sealed = seal_model(MODEL, &key).unwrap();
        assert!(is_sealed(&sealed) && !is_sealed(MODEL));
        assert!(!sealed.windows(MODEL.len()).any(|w| w == MODEL), "the bytes are not readable in the file");
        assert_eq!(&open_sealed(&sealed, &key).unwrap()[..], MODEL);
        assert_ne!(seal_model(MODEL, &key).unwrap(), sealed, "a fresh nonce each time");
        let other = SecretKey::generate().unwrap();
        assert_eq!(open_sealed(&sealed, &other), Err(SealError::WrongKeyOrTampered));
    }

    #[test]
    fn with_a_model_key_only_a_sealed_file_loads_and_without_one_only_a_plain_file() {
        let key = SecretKey::generate().unwrap();
        let sealed = seal_model(MODEL, &key).unwrap();
        let plain = || Zeroizing::new(MODEL.to_vec());
        assert_eq!(model_bytes(Zeroizing::new(sealed.clone()), Some(&key)).as_deref().map(Vec::as_slice), Ok(MODEL));
        assert_eq!(model_bytes(plain(), Some(&key)), Err(SealError::NotSealed), "a plain file put in place of the sealed one");
        assert_eq!(model_bytes(plain(), None).as_deref().map(Vec::as_slice), Ok(MODEL), "no key: plain models load");
        assert_eq!(model_bytes(Zeroizing::new(sealed), None), Err(SealError::NoKey));
    }

    #[test]
    fn a_changed_truncated_or_unknown_version_file_does_not_open() {
        let key = SecretKey::generate().unwrap();
        let sealed = seal_model(MODEL, &key).unwrap();
        for at in [MAGIC.len() + 2, HEADER_BYTES, sealed.len() - 1] {
            let mut changed = sealed.clone();
            changed[at] ^= 1;
            assert_eq!(open_sealed(&changed, &key), Err(SealError::WrongKeyOrTampered), "byte {at} changed");
        }
        assert_eq!(open_sealed(&sealed[..HEADER_BYTES + 10], &key), Err(SealError::Truncated(HEADER_BYTES + 10)));
        let mut future = sealed.clone();
        future[MAGIC.len()] = 9;
        assert_eq!(open_sealed(&future, &key), Err(SealError::UnsupportedVersion(9)));
    }
}
