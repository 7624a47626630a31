//! The handshake message ([`Hello`]) and how it is written on the wire.
//!
//! ```text
//! hello = model_hash [32] | capabilities | permissions u8 | identity [32]
//!       | token? | proof? [64] | grant? | acknowledged u8 | session_nonce [16]
//! token = identity [32] | peer [16] | session_nonce [16] | permissions u8 | expires_at_ms u64
//!       | signature [64]
//! x?    = 0 | 1 x
//! ```

use super::auth::{PeerUuid, Permissions};
use super::wire::{FrameError, Reader, Writer};
use super::seal::SESSION_NONCE_BYTES;
use super::token::{CapabilityToken, IdentityKey, TokenHolder};

/// What a peer says about itself in the handshake.
#[derive(Clone, Debug, PartialEq)]
pub struct Capabilities {
    /// Adapter name (e.g. "llvmpipe", "NVIDIA H100").
    pub adapter: String,
    /// Graphics backend (e.g. "Vulkan").
    pub backend: String,
    /// The adapter offers `SHADER_F16`.
    pub shader_f16: bool,
    /// Subgroup sizes (min, max), or (0, 0) without subgroup support.
    pub subgroup_sizes: (u32, u32),
    /// `max_storage_buffer_binding_size`.
    pub max_storage_binding: u64,
    /// Microseconds the calibration block took on this peer (lower is faster).
    pub calibration_us: u32,
}

/// The handshake message, sent until the other side acknowledges it (and again when the
/// sender's token changes).
#[derive(Clone, Debug, PartialEq)]
pub struct Hello {
    /// SHA-256 of the model both peers must run.
    pub model_hash: [u8; 32],
    /// The sender's capabilities.
    pub capabilities: Capabilities,
    /// What the sender asks to do: believed in an open room, granted within the owner's limits
    /// by the owner, and otherwise only as far as its token says.
    pub permissions: Permissions,
    /// The sender's identity key for this session.
    pub identity: IdentityKey,
    /// The room owner's token for the sender (none in an open room, from the owner itself, or
    /// before the owner has granted one).
    pub token: Option<CapabilityToken>,
    /// The sender's signature (by `identity`) over sender, receiver and the receiver's session
    /// nonce, once the sender has seen it: the hello is fresh and the identity the sender's.
    pub proof: Option<[u8; 64]>,
    /// From the room's owner: the receiver's token.
    pub grant: Option<CapabilityToken>,
    /// The sender has received and accepted the receiver's hello.
    pub acknowledged: bool,
    /// The sender's nonce for this session: with the receiver's, it keys the tensor payloads
    /// between them (see [`crate::net::TensorCipher`]).
    pub session_nonce: [u8; SESSION_NONCE_BYTES],
}

pub(super) fn write_hello(w: &mut Writer, hello: &Hello) {
    w.bytes(&hello.model_hash);
    let c = &hello.capabilities;
    w.text(&c.adapter);
    w.text(&c.backend);
    w.u8(c.shader_f16 as u8);
    w.u32(c.subgroup_sizes.0);
    w.u32(c.subgroup_sizes.1);
    w.u64(c.max_storage_binding);
    w.u32(c.calibration_us);
    w.u8(hello.permissions.bits());
    w.bytes(&hello.identity.0);
    write_optional(w, hello.token.as_ref(), write_token);
    write_optional(w, hello.proof.as_ref(), |w, proof| w.bytes(proof));
    write_optional(w, hello.grant.as_ref(), write_token);
    w.u8(hello.acknowledged as u8);
    w.bytes(&hello.session_nonce);
}

pub(super) fn read_hello(r: &mut Reader) -> Result<Hello, FrameError> {
    let model_hash = r.array()?;
    let capabilities = Capabilities {
        adapter: r.text()?,
        backend: r.text()?,
        shader_f16: r.bool()?,
        subgroup_sizes: (r.u32()?, r.u32()?),
        max_storage_binding: r.u64()?,
        calibration_us: r.u32()?,
    };
    Ok(Hello {
        model_hash,
        capabilities,
        permissions: Permissions::from_bits(r.u8()?),
        identity: IdentityKey(r.array()?),
        token: read_optional(r, read_token)?,
        proof: read_optional(r, |r| r.array())?,
        grant: read_optional(r, read_token)?,
        acknowledged: r.bool()?,
        session_nonce: r.array()?,
    })
}

fn write_optional<T>(w: &mut Writer, value: Option<&T>, write: impl Fn(&mut Writer, &T)) {
    w.u8(value.is_some() as u8);
    if let Some(value) = value {
        write(w, value);
    }
}

fn read_optional<'a, T>(r: &mut Reader<'a>, read: impl Fn(&mut Reader<'a>) -> Result<T, FrameError>) -> Result<Option<T>, FrameError> {
    Ok(if r.bool()? { Some(read(r)?) } else { None })
}

fn write_token(w: &mut Writer, token: &CapabilityToken) {
    w.bytes(&token.holder.identity.0);
    w.bytes(&token.holder.peer.0);
    w.bytes(&token.holder.session_nonce);
    w.u8(token.permissions.bits());
    w.u64(token.expires_at_ms);
    w.bytes(&token.signature);
}

fn read_token(r: &mut Reader) -> Result<CapabilityToken, FrameError> {
    let holder = TokenHolder { identity: IdentityKey(r.array()?), peer: PeerUuid(r.array()?), session_nonce: r.array()? };
    // Unknown permission bits are dropped: the owner signs none, so such a token fails to verify.
    let permissions = Permissions::from_bits(r.u8()?);
    Ok(CapabilityToken { holder, permissions, expires_at_ms: r.u64()?, signature: r.array()? })
}
