//! The wire's primitives: the protocol version, the frame size limit, why a frame is dropped
//! ([`FrameError`]), and the little-endian writer and bounds-checked reader that message bodies
//! are encoded with.

use thiserror::Error;

/// The protocol version written in every frame and in the handshake.
pub const PROTOCOL_VERSION: u8 = 8;
/// The first two bytes of every frame.
pub(super) const MAGIC: [u8; 2] = *b"BP";
/// The largest frame sent or accepted (matchbox silently drops messages over 64 KiB).
pub const MAX_FRAME_BYTES: usize = 60 * 1024;
const MAX_TEXT: usize = 256;

/// Why a received frame was dropped.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than a header and a tag.
    #[error("frame of {0} bytes is too short")]
    TooShort(usize),
    /// Longer than [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    Oversize(usize),
    /// Not one of our frames.
    #[error("bad magic bytes")]
    BadMagic,
    /// Written by another protocol version.
    #[error("protocol version {0} is not supported (this peer speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    /// The declared body length does not match the frame.
    #[error("declared body length {declared} does not match the frame's {actual}")]
    LengthMismatch {
        /// Length in the header.
        declared: usize,
        /// Length present.
        actual: usize,
    },
    /// The MAC does not verify: tampered, or sent without the room key.
    #[error("authentication failed (tampered frame or wrong room key)")]
    BadMac,
    /// The sequence number was accepted before from this peer, or is too far behind the newest.
    #[error("replayed frame: sequence {got} (newest {last})")]
    Replay {
        /// Sequence received.
        got: u64,
        /// Last sequence accepted.
        last: u64,
    },
    /// A frame numbered on the other lane than its kind travels on (see `Lane`).
    #[error("a {kind} frame numbered on the wrong lane")]
    WrongLane {
        /// The message's kind.
        kind: &'static str,
    },
    /// The message kind is unknown.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The body does not parse.
    #[error("malformed {kind} body: {reason}")]
    Malformed {
        /// Message kind.
        kind: &'static str,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Default)]
pub(super) struct Writer(pub(super) Vec<u8>);

impl Writer {
    pub(super) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(super) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    pub(super) fn text(&mut self, v: &str) {
        let v = &v.as_bytes()[..v.len().min(MAX_TEXT)];
        self.u16(v.len() as u16);
        self.bytes(v);
    }
}

pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    kind: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads `bytes`, the body of a `kind` message (named in errors).
    pub(super) fn new(bytes: &'a [u8], kind: &'static str) -> Self {
        Self { bytes, kind }
    }
    pub(super) fn malformed(&self, reason: impl Into<String>) -> FrameError {
        FrameError::Malformed { kind: self.kind, reason: reason.into() }
    }
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.bytes.len() < n {
            return Err(self.malformed(format!("needs {n} more bytes, {} left", self.bytes.len())));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    pub(super) fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    pub(super) fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    pub(super) fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
    pub(super) fn bool(&mut self) -> Result<bool, FrameError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.malformed(format!("{other} is not a boolean"))),
        }
    }
    pub(super) fn text(&mut self) -> Result<String, FrameError> {
        let len = self.u16()? as usize;
        if len > MAX_TEXT {
            return Err(self.malformed(format!("text of {len} bytes is longer than {MAX_TEXT}")));
        }
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| self.malformed("text is not UTF-8"))
    }
    pub(super) fn finish(&self) -> Result<(), FrameError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.malformed(format!("{} trailing bytes", self.bytes.len())))
        }
    }
}

