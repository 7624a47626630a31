//! The wire codec: versioned little-endian frames, each authenticated with HMAC-SHA256 before
//! its body is parsed. A frame fits one matchbox message (at most [`MAX_FRAME_BYTES`]).
//!
//! ```text
//! frame  = magic "BP" | version u8 | kind u8 | sequence u64 | body_len u32 | body | tag [32]
//! tag    = HMAC-SHA256(the link's frame key, sender uuid | receiver uuid | frame up to the tag)
//! ```

use super::auth::{LinkKeys, PeerUuid};
pub use super::hello::{Capabilities, Hello};
use super::wire::{Reader, Writer};
pub use super::lane::{Lane, LaneGuards, ReplayGuard, REPLAY_WINDOW};
pub use super::wire::{FrameError, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use super::wire::MAGIC;
use super::hello::{read_hello, write_hello};
use super::collective_tag::{read_tag, write_tag, MAX_TAG_BYTES};
pub use super::collective_tag::{CollectiveOp, CollectiveTag, Reduction, MAX_MEMBERS};
use super::seal::SEAL_TAG_BYTES;
use super::token::IdentityKey;
use crate::tensor::TransferDtype;
use crate::tensor::quant::QuantParams;
pub use super::route_ticket::RouteTicket;

/// Bytes of the fixed frame header.
pub const FRAME_HEADER_BYTES: usize = 16;
/// Bytes of the MAC.
pub const TAG_BYTES: usize = 32;
/// The most stages one tensor header may route onward or report timings of.
pub const MAX_ROUTE: usize = 8;
/// The largest encoded tensor header: its fixed fields (69 bytes at most), an owner and
/// [`MAX_ROUTE`] peers onward (16 bytes each, two counts), [`MAX_ROUTE`] stage timings (14
/// bytes each)
/// for a shared tensor, its owner and name (two length bytes), and for a collective, its tag.
const MAX_TENSOR_HEADER_BYTES: usize = 69 + 1 + 16 + 1 + 16 * MAX_ROUTE + MAX_TICKET_BYTES + 1 + 14 * MAX_ROUTE + 1 + 16 + 2 + MAX_SHARED_NAME + 1 + MAX_TAG_BYTES;
/// A route ticket's flag and its fields, for a route of [`MAX_ROUTE`] + 1 players.
const MAX_TICKET_BYTES: usize = 1 + 2 + 1 + 16 * (MAX_ROUTE + 1) + 8 + 64;
/// The largest tensor payload carried by one chunk.
pub const MAX_CHUNK_PAYLOAD: usize = MAX_FRAME_BYTES - FRAME_HEADER_BYTES - TAG_BYTES - MAX_TENSOR_HEADER_BYTES;
/// The bytes of a tensor's encoded values each chunk carries (the last one the rest).
const CHUNK_PIECE_BYTES: usize = MAX_CHUNK_PAYLOAD - SEAL_TAG_BYTES;

/// How many chunks [`split_into_chunks`] makes of a tensor of `total_bytes`: one at least.
pub fn chunk_count(total_bytes: usize) -> usize {
    total_bytes.div_ceil(CHUNK_PIECE_BYTES).max(1)
}

/// The most dimensions a tensor on the wire may have.
pub const MAX_RANK: usize = 8;

/// Whether a tensor is a stage's input (to be run), its output (coming back), or the value of a
/// tensor a player shares with the room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Input of `stage`, sent by the requester (or, in a chain, by the peer that ran the stage
    /// before) to the peer that runs it.
    StageInput,
    /// Output of `stage`, sent back to the requester.
    StageOutput,
    /// A new value of a tensor its owner shares with every player (its version in the
    /// header's `request`, its owner and name in [`TensorHeader::shared`]).
    Shared,
    /// A player's part in a collective (its sender and the collective's name in
    /// [`TensorHeader::shared`], the collective in [`TensorHeader::collective`]).
    Collective,
}

/// The longest name of a shared tensor, in bytes.
pub const MAX_SHARED_NAME: usize = 64;

/// Which shared tensor a value is of: the player that owns it and the name it shares it under
/// (or, for a collective's contribution, the player contributing and the collective's name).
/// Only the owner may send values of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SharedKey {
    /// The player that publishes it.
    pub owner: PeerUuid,
    /// Its name (at most [`MAX_SHARED_NAME`] bytes).
    pub name: String,
}

/// Where a chained stage input's output goes: on to the peers of the following stages, and
/// from the last of them back to the request's owner, without passing through the owner in
/// between.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Onward {
    /// The peer that owns the request and receives the last stage's output.
    pub owner: PeerUuid,
    /// The peers that run the stages after this one, in order (at most [`MAX_ROUTE`]); empty
    /// when this stage is the chain's last.
    pub route: Vec<PeerUuid>,
    /// The owner's signature on the whole route ([`RouteTicket`]); the owner's links sign it
    /// when they send the chain's first input, and every hop passes it on.
    pub ticket: Option<Box<RouteTicket>>,
}

/// How a stage went on the peer that ran it: carried along a chain so that the owner can tell
/// the network, the queue and the GPU apart, hop by hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageTiming {
    /// The stage.
    pub stage: u16,
    /// Microseconds from its input arriving (verified and decoded) to its output being read
    /// back.
    pub run_us: u32,
    /// Microseconds of `run_us` the GPU spent on it, from timestamp queries, where that peer's
    /// device writes them.
    pub gpu_us: Option<u32>,
    /// Microseconds its input's transfer into that peer took, as it estimated it (see
    /// [`crate::net::TransferTiming::estimate`]); `None` before its link's first round trip.
    pub network_us: Option<u32>,
}

impl StageTiming {
    /// Microseconds of `duration`, saturating at the largest a timing holds.
    pub fn micros(duration: std::time::Duration) -> u32 {
        duration.as_micros().min(NOT_MEASURED as u128 - 1) as u32
    }
}

/// The wire value of a timing that was not measured.
const NOT_MEASURED: u32 = u32::MAX;

/// Describes the tensor a chunk belongs to; identical in every chunk of one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorHeader {
    /// The requester's id for the request.
    pub request: u64,
    /// The plan stage.
    pub stage: u16,
    /// Input or output of the stage.
    pub direction: Direction,
    /// Encoding of the payload.
    pub dtype: TransferDtype,
    /// Tensor dimensions.
    pub shape: Vec<u32>,
    /// Int8 parameters ([`QuantParams::NONE`] otherwise).
    pub params: QuantParams,
    /// Bytes of the whole payload across all chunks.
    pub total_bytes: u32,
    /// For a stage input: where its output goes, when that is not back to the sender.
    pub onward: Option<Onward>,
    /// The stages already run for this tensor on remote peers, with their times: for an output,
    /// every stage of its chain (one, unchained); for a chained input, the chain's stages so
    /// far (at most [`MAX_ROUTE`]).
    pub trace: Vec<StageTiming>,
    /// For a shared tensor or a collective's contribution ([`Direction::Shared`] or
    /// [`Direction::Collective`], and only then): whose it is and its name.
    pub shared: Option<SharedKey>,
    /// For a collective's contribution ([`Direction::Collective`], and only then): the
    /// collective.
    pub collective: Option<CollectiveTag>,
}

impl TensorHeader {
    /// Number of values the shape holds, if it does not overflow.
    pub fn values(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
    }
}

/// One chunk of a tensor's payload.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorChunk {
    /// The tensor this chunk belongs to.
    pub header: TensorHeader,
    /// Position of this chunk.
    pub index: u16,
    /// Number of chunks of the tensor.
    pub count: u16,
    /// This chunk's bytes of the payload.
    pub payload: Vec<u8>,
}

/// A message between peers.
#[derive(Clone, Debug, PartialEq)]
#[expect(clippy::large_enum_variant, reason = "a message is decoded, handled and dropped one at a time; boxing the hello would allocate for every frame's match")]
pub enum Message {
    /// Handshake.
    Hello(Hello),
    /// Heartbeat request, echoed as [`Message::Pong`].
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// Heartbeat answer.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// A chunk of a shared tensor.
    Tensor(TensorChunk),
    /// From the room's owner: the player with this peer id, and this identity (one of those it
    /// showed), is revoked; refuse both.
    Revoke {
        /// The revoked player's peer id.
        peer: PeerUuid,
        /// One identity key it showed.
        identity: IdentityKey,
    },
    /// A stage input for this request and stage arrived while the sender's link was not
    /// trusted here (a re-handshake in progress) and was dropped: told to the request's owner,
    /// which runs the stage again at once instead of waiting for its timeout.
    Dropped {
        /// The request.
        request: u64,
        /// The stage whose input was dropped.
        stage: u16,
    },
}

impl Message {
    fn kind(&self) -> u8 {
        match self {
            Message::Hello(_) => 1,
            Message::Ping { .. } => 2,
            Message::Pong { .. } => 3,
            Message::Tensor(_) => 4,
            Message::Revoke { .. } => 5,
            // 6 is the key exchange's frame (`pake::EXCHANGE_KIND`).
            Message::Dropped { .. } => 7,
        }
    }

    /// The lane it travels on: tensor chunks on the bulk lane, the rest on the control lane.
    pub fn lane(&self) -> Lane {
        if matches!(self, Message::Tensor(_)) { Lane::Bulk } else { Lane::Control }
    }

    /// A short name for events and logs.
    pub fn kind_name(&self) -> &'static str {
        kind_name(self.kind())
    }
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        1 => "hello",
        2 => "ping",
        3 => "pong",
        4 => "tensor",
        5 => "revoke",
        7 => "dropped",
        _ => "unknown",
    }
}

/// Encodes and authenticates `message` as one frame from `sender` to `receiver`.
pub fn encode_frame(keys: &LinkKeys, sender: PeerUuid, receiver: PeerUuid, sequence: u64, message: &Message) -> Vec<u8> {
    let mut body = Writer::default();
    match message {
        Message::Hello(hello) => write_hello(&mut body, hello),
        Message::Ping { nonce } | Message::Pong { nonce } => body.u64(*nonce),
        Message::Tensor(chunk) => write_chunk(&mut body, chunk),
        Message::Revoke { peer, identity } => {
            body.bytes(&peer.0);
            body.bytes(&identity.0);
        }
        Message::Dropped { request, stage } => {
            body.u64(*request);
            body.u16(*stage);
        }
    }
    let frame = seal_frame(keys, sender, receiver, sequence, message.kind(), &body.0);
    debug_assert!(frame.len() <= MAX_FRAME_BYTES, "callers chunk tensors to fit a frame");
    frame
}

/// Frames and authenticates an encoded message body of kind `kind` (what [`encode_frame`]
/// does once it has encoded a message). Public so that tests can play a peer that holds the
/// room key and sends bodies no honest peer would: anyone with the key can.
pub fn seal_frame(keys: &LinkKeys, sender: PeerUuid, receiver: PeerUuid, sequence: u64, kind: u8, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + body.len() + TAG_BYTES);
    frame.extend_from_slice(&MAGIC);
    frame.push(PROTOCOL_VERSION);
    frame.push(kind);
    frame.extend_from_slice(&sequence.to_le_bytes());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(body);
    let tag = keys.frame_tag(sender, receiver, &frame);
    frame.extend_from_slice(&tag);
    frame
}

/// Checks a frame's size, header and MAC, then parses its body. Returns the sequence number
/// (for the caller's replay check) and the message.
pub fn decode_frame(keys: &LinkKeys, sender: PeerUuid, receiver: PeerUuid, frame: &[u8]) -> Result<(u64, Message), FrameError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(FrameError::Oversize(frame.len()));
    }
    if frame.len() < FRAME_HEADER_BYTES + TAG_BYTES {
        return Err(FrameError::TooShort(frame.len()));
    }
    if frame[0..2] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    if frame[2] != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion(frame[2]));
    }
    let kind = frame[3];
    let sequence = u64::from_le_bytes(frame[4..12].try_into().expect("8 bytes"));
    let declared = u32::from_le_bytes(frame[12..16].try_into().expect("4 bytes")) as usize;
    let actual = frame.len() - FRAME_HEADER_BYTES - TAG_BYTES;
    if declared != actual {
        return Err(FrameError::LengthMismatch { declared, actual });
    }
    let (signed, tag) = frame.split_at(frame.len() - TAG_BYTES);
    if !keys.verify_frame(sender, receiver, signed, tag) {
        return Err(FrameError::BadMac);
    }
    let mut body = Reader::new(&signed[FRAME_HEADER_BYTES..], kind_name(kind));
    let message = match kind {
        1 => Message::Hello(read_hello(&mut body)?),
        2 => Message::Ping { nonce: body.u64()? },
        3 => Message::Pong { nonce: body.u64()? },
        4 => Message::Tensor(read_chunk(&mut body)?),
        5 => Message::Revoke { peer: PeerUuid(body.array()?), identity: IdentityKey(body.array()?) },
        7 => Message::Dropped { request: body.u64()?, stage: body.u16()? },
        other => return Err(FrameError::UnknownKind(other)),
    };
    body.finish()?;
    Ok((sequence, message))
}

/// Splits an encoded tensor payload into chunks that each fit a frame once sealed (see
/// [`crate::net::TensorCipher`]).
pub fn split_into_chunks(header: TensorHeader, payload: &[u8]) -> Vec<TensorChunk> {
    let piece = CHUNK_PIECE_BYTES;
    let pieces: Vec<&[u8]> = if payload.is_empty() { vec![&[][..]] } else { payload.chunks(piece).collect() };
    let count = pieces.len() as u16;
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| TensorChunk { header: header.clone(), index: i as u16, count, payload: piece.to_vec() })
        .collect()
}

fn write_chunk(w: &mut Writer, chunk: &TensorChunk) {
    let h = &chunk.header;
    w.u64(h.request);
    w.u16(h.stage);
    w.u8(match h.direction {
        Direction::StageInput => 0,
        Direction::StageOutput => 1,
        Direction::Shared => 2,
        Direction::Collective => 3,
    });
    w.u8(match h.dtype {
        TransferDtype::F32 => 0,
        TransferDtype::F16 => 1,
        TransferDtype::Int8 => 2,
    });
    w.u8(h.shape.len() as u8);
    for &d in &h.shape {
        w.u32(d);
    }
    w.u32(h.params.scale.to_bits());
    w.u32(h.params.zero_point as u32);
    w.u32(h.total_bytes);
    match &h.onward {
        None => w.u8(0),
        Some(onward) => {
            w.u8(1);
            w.bytes(&onward.owner.0);
            w.u8(onward.route.len() as u8);
            for peer in &onward.route {
                w.bytes(&peer.0);
            }
            match &onward.ticket {
                None => w.u8(0),
                Some(ticket) => {
                    w.u8(1);
                    w.u16(ticket.first_stage);
                    w.u8(ticket.route.len() as u8);
                    for peer in &ticket.route {
                        w.bytes(&peer.0);
                    }
                    w.u64(ticket.expires_at_ms);
                    w.bytes(&ticket.signature);
                }
            }
        }
    }
    w.u8(h.trace.len() as u8);
    for timing in &h.trace {
        w.u16(timing.stage);
        w.u32(timing.run_us);
        w.u32(timing.gpu_us.unwrap_or(NOT_MEASURED));
        w.u32(timing.network_us.unwrap_or(NOT_MEASURED));
    }
    match &h.shared {
        None => w.u8(0),
        Some(key) => {
            w.u8(1);
            w.bytes(&key.owner.0);
            w.text(&key.name);
        }
    }
    match &h.collective {
        None => w.u8(0),
        Some(tag) => {
            w.u8(1);
            write_tag(w, tag);
        }
    }
    w.u16(chunk.index);
    w.u16(chunk.count);
    w.u32(chunk.payload.len() as u32);
    w.bytes(&chunk.payload);
}

fn read_chunk(r: &mut Reader) -> Result<TensorChunk, FrameError> {
    let request = r.u64()?;
    let stage = r.u16()?;
    let direction = match r.u8()? {
        0 => Direction::StageInput,
        1 => Direction::StageOutput,
        2 => Direction::Shared,
        3 => Direction::Collective,
        other => return Err(r.malformed(format!("direction {other}"))),
    };
    let dtype = match r.u8()? {
        0 => TransferDtype::F32,
        1 => TransferDtype::F16,
        2 => TransferDtype::Int8,
        other => return Err(r.malformed(format!("dtype {other}"))),
    };
    let rank = r.u8()? as usize;
    if rank > MAX_RANK {
        return Err(r.malformed(format!("rank {rank} exceeds {MAX_RANK}")));
    }
    let shape = (0..rank).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
    let params = QuantParams { scale: f32::from_bits(r.u32()?), zero_point: r.u32()? as i32 };
    let total_bytes = r.u32()?;
    let onward = match r.u8()? {
        0 => None,
        1 => {
            let owner = PeerUuid(r.array()?);
            let hops = r.u8()? as usize;
            if hops > MAX_ROUTE {
                return Err(r.malformed(format!("a route of {hops} peers exceeds {MAX_ROUTE}")));
            }
            let route = (0..hops).map(|_| r.array().map(PeerUuid)).collect::<Result<Vec<_>, _>>()?;
            let ticket = match r.u8()? {
                0 => None,
                1 => {
                    let first_stage = r.u16()?;
                    let hops = r.u8()? as usize;
                    if hops > MAX_ROUTE + 1 {
                        return Err(r.malformed(format!("a ticket's route of {hops} peers exceeds {}", MAX_ROUTE + 1)));
                    }
                    let route = (0..hops).map(|_| r.array().map(PeerUuid)).collect::<Result<Vec<_>, _>>()?;
                    Some(Box::new(RouteTicket { first_stage, route, expires_at_ms: r.u64()?, signature: r.array()? }))
                }
                other => return Err(r.malformed(format!("ticket flag {other}"))),
            };
            Some(Onward { owner, route, ticket })
        }
        other => return Err(r.malformed(format!("onward flag {other}"))),
    };
    let timings = r.u8()? as usize;
    if timings > MAX_ROUTE {
        return Err(r.malformed(format!("{timings} stage timings exceed {MAX_ROUTE}")));
    }
    let measured = |us: u32| (us != NOT_MEASURED).then_some(us);
    let trace = (0..timings)
        .map(|_| Ok(StageTiming { stage: r.u16()?, run_us: r.u32()?, gpu_us: measured(r.u32()?), network_us: measured(r.u32()?) }))
        .collect::<Result<Vec<_>, FrameError>>()?;
    let shared = match r.u8()? {
        0 => None,
        1 => {
            let owner = PeerUuid(r.array()?);
            let name = r.text()?;
            if name.len() > MAX_SHARED_NAME {
                return Err(r.malformed(format!("a shared tensor name of {} bytes exceeds {MAX_SHARED_NAME}", name.len())));
            }
            Some(SharedKey { owner, name })
        }
        other => return Err(r.malformed(format!("shared flag {other}"))),
    };
    let collective = match r.u8()? {
        0 => None,
        1 => Some(read_tag(r)?),
        other => return Err(r.malformed(format!("collective flag {other}"))),
    };
    if shared.is_some() != matches!(direction, Direction::Shared | Direction::Collective) || collective.is_some() != (direction == Direction::Collective) {
        return Err(r.malformed("a shared tensor's key and a collective's tag go with their directions, and only with them"));
    }
    let index = r.u16()?;
    let count = r.u16()?;
    let len = r.u32()? as usize;
    let payload = r.take(len)?.to_vec();
    Ok(TensorChunk { header: TensorHeader { request, stage, direction, dtype, shape, params, total_bytes, onward, trace, shared, collective }, index, count, payload })
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
