//! Reassembly of chunked tensors, with limits on size, tensors in flight per peer and time.

use std::collections::HashMap;
use std::time::Duration;

use bevy::platform::time::Instant;

use thiserror::Error;

use super::auth::PeerUuid;
use super::codec::{chunk_count, Direction, TensorChunk, TensorHeader};
use crate::tensor::quant::{decode_values, DecodeValuesError};
use crate::tensor::{SharedTensor, Tensor};

/// Bounds that keep a peer from exhausting another's memory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReassemblyLimits {
    /// Largest tensor payload accepted, in bytes.
    pub max_tensor_bytes: usize,
    /// Most partially received tensors per peer.
    pub max_in_flight_per_peer: usize,
    /// Most bytes the partially received tensors of all peers together may declare: what many
    /// identities in one room can make this player hold at once.
    pub max_partial_bytes: usize,
    /// A partial tensor older than this is dropped.
    pub timeout: Duration,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        Self { max_tensor_bytes: 64 << 20, max_in_flight_per_peer: 8, max_partial_bytes: 256 << 20, timeout: Duration::from_secs(5) }
    }
}

/// Why a chunk was dropped.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ChunkError {
    /// The tensor is larger than [`ReassemblyLimits::max_tensor_bytes`].
    #[error("tensor of {bytes} bytes exceeds the {limit}-byte limit")]
    Oversize {
        /// Bytes declared.
        bytes: u64,
        /// The limit.
        limit: usize,
    },
    /// The peer already has [`ReassemblyLimits::max_in_flight_per_peer`] partial tensors.
    #[error("too many tensors in flight from this peer ({0})")]
    TooManyInFlight(usize),
    /// The partial tensors of all peers would declare more than
    /// [`ReassemblyLimits::max_partial_bytes`].
    #[error("a {bytes}-byte tensor would take the partial tensors past their {budget}-byte budget")]
    OverBudget {
        /// Bytes the new tensor declares.
        bytes: usize,
        /// The budget.
        budget: usize,
    },
    /// The chunk count is not the one the sender makes of the tensor's bytes.
    #[error("{count} chunks for a tensor the sender splits into {expected}")]
    ChunkCount {
        /// The count declared.
        count: u16,
        /// The count its bytes split into.
        expected: usize,
    },
    /// The chunk index or count is impossible.
    #[error("chunk {index} of {count} is out of range")]
    BadIndex {
        /// Index given.
        index: u16,
        /// Count given.
        count: u16,
    },
    /// The chunk's header differs from the first chunk's.
    #[error("chunk header differs from the tensor's first chunk")]
    InconsistentHeader,
    /// This chunk index was already received.
    #[error("duplicate chunk {0}")]
    Duplicate(u16),
    /// The payload does not match the shape and dtype.
    #[error("payload of {got} bytes does not match the declared total {declared}")]
    PayloadSize {
        /// Declared total.
        declared: u64,
        /// Received (or expected from the shape).
        got: u64,
    },
    /// The values could not be decoded.
    #[error(transparent)]
    Values(#[from] DecodeValuesError),
    /// A value is NaN or infinite: no stage's input or output may be.
    #[error("value {index} is not finite")]
    NonFinite {
        /// The first such value's position.
        index: usize,
    },
}

struct Partial {
    header: TensorHeader,
    chunks: Vec<Option<Vec<u8>>>,
    received: usize,
    bytes: usize,
    started: Instant,
}

/// A tensor received in full.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedTensor {
    /// Its sender.
    pub from: PeerUuid,
    /// Input or output of the stage.
    pub direction: Direction,
    /// The wire header.
    pub header: TensorHeader,
    /// The decoded activation.
    pub shared: SharedTensor,
    /// How its transfer went, as this player measured it.
    pub transfer: TransferTiming,
}

/// How a tensor's transfer went, as its receiver measured it on its own clock (the sender's
/// is another, so the one-way latency can only be estimated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferTiming {
    /// From its first chunk arriving to its last one, verified and decoded.
    pub receiving: Duration,
    /// The link's median heartbeat round trip to the sender when it arrived; `None` before the
    /// link's first sample.
    pub link_rtt: Option<Duration>,
}

impl TransferTiming {
    /// The transfer's estimated time from send to verified: half the link's round trip (the
    /// one-way latency up to the first chunk) plus the receiving time; `None` before the
    /// link's first round trip.
    pub fn estimate(&self) -> Option<Duration> {
        Some(self.link_rtt? / 2 + self.receiving)
    }
}

/// A tensor being received: its sender, the request's owner (request ids are unique per owner
/// only, and a chain passes on several owners' requests), request, stage and direction.
type Key = (PeerUuid, PeerUuid, u64, u16, Direction);

/// Collects chunks into tensors.
pub struct Reassembler {
    limits: ReassemblyLimits,
    partial: HashMap<Key, Partial>,
}

impl Reassembler {
    /// An empty reassembler with `limits`.
    pub fn new(limits: ReassemblyLimits) -> Self {
        Self { limits, partial: HashMap::new() }
    }

    /// Adds a chunk from `from`; returns the tensor once its last chunk has arrived. A chunk
    /// that breaks a rule is dropped with its reason and its tensor is discarded.
    pub fn push(&mut self, from: PeerUuid, chunk: TensorChunk, now: Instant) -> Result<Option<ReceivedTensor>, ChunkError> {
        let h = &chunk.header;
        let owner = h.onward.as_ref().map(|onward| onward.owner).or(h.shared.as_ref().map(|key| key.owner)).unwrap_or(from);
        let key = (from, owner, h.request, h.stage, h.direction);
        let result = self.accept(key, chunk, now);
        if result.is_err() {
            self.partial.remove(&key);
        }
        result
    }

    fn accept(&mut self, key: Key, chunk: TensorChunk, now: Instant) -> Result<Option<ReceivedTensor>, ChunkError> {
        let TensorChunk { header, index, count, payload } = chunk;
        if count == 0 || index >= count {
            return Err(ChunkError::BadIndex { index, count });
        }
        if header.total_bytes as usize > self.limits.max_tensor_bytes {
            return Err(ChunkError::Oversize { bytes: header.total_bytes as u64, limit: self.limits.max_tensor_bytes });
        }
        // As many chunks as the sender makes of that many bytes, so that the slots a partial
        // tensor holds are bounded by its bytes (a tiny tensor cannot claim 65,535 of them).
        let expected_chunks = chunk_count(header.total_bytes as usize);
        if count as usize != expected_chunks {
            return Err(ChunkError::ChunkCount { count, expected: expected_chunks });
        }
        let oversize = ChunkError::Oversize { bytes: u64::MAX, limit: self.limits.max_tensor_bytes };
        let values = header.values().ok_or(oversize.clone())?;
        let expected = values.checked_mul(header.dtype.bytes_per_value()).ok_or(oversize)?;
        if expected != header.total_bytes as usize {
            return Err(ChunkError::PayloadSize { declared: header.total_bytes as u64, got: expected as u64 });
        }
        if !self.partial.contains_key(&key) {
            let in_flight = self.partial.keys().filter(|k| k.0 == key.0).count();
            if in_flight >= self.limits.max_in_flight_per_peer {
                return Err(ChunkError::TooManyInFlight(in_flight));
            }
            if self.held_bytes() + expected > self.limits.max_partial_bytes {
                return Err(ChunkError::OverBudget { bytes: expected, budget: self.limits.max_partial_bytes });
            }
            self.partial.insert(
                key,
                Partial { header: header.clone(), chunks: vec![None; count as usize], received: 0, bytes: 0, started: now },
            );
        }
        let partial = self.partial.get_mut(&key).expect("inserted above");
        if partial.header != header || partial.chunks.len() != count as usize {
            return Err(ChunkError::InconsistentHeader);
        }
        let slot = &mut partial.chunks[index as usize];
        if slot.is_some() {
            return Err(ChunkError::Duplicate(index));
        }
        partial.bytes += payload.len();
        if partial.bytes > header.total_bytes as usize {
            return Err(ChunkError::PayloadSize { declared: header.total_bytes as u64, got: partial.bytes as u64 });
        }
        *slot = Some(payload);
        partial.received += 1;
        if partial.received < partial.chunks.len() {
            return Ok(None);
        }
        let partial = self.partial.remove(&key).expect("present");
        if partial.bytes != header.total_bytes as usize {
            return Err(ChunkError::PayloadSize { declared: header.total_bytes as u64, got: partial.bytes as u64 });
        }
        let bytes: Vec<u8> = partial.chunks.into_iter().flatten().flatten().collect();
        let data = decode_values(&bytes, values, header.dtype, header.params)?;
        if let Some(index) = data.iter().position(|v| !v.is_finite()) {
            return Err(ChunkError::NonFinite { index });
        }
        let shape: Vec<usize> = header.shape.iter().map(|&d| d as usize).collect();
        let tensor = Tensor::new(shape, data).expect("the value count was checked against the shape");
        Ok(Some(ReceivedTensor {
            from: key.0,
            direction: header.direction,
            shared: SharedTensor { request: header.request, stage: header.stage, tensor, dtype: header.dtype },
            header,
            transfer: TransferTiming { receiving: now.saturating_duration_since(partial.started), link_rtt: None },
        }))
    }

    /// Drops partial tensors older than the timeout; returns what was dropped (sender, request,
    /// stage).
    pub fn expire(&mut self, now: Instant) -> Vec<(PeerUuid, u64, u16)> {
        let timeout = self.limits.timeout;
        let mut dropped = Vec::new();
        self.partial.retain(|key, p| {
            let keep = now.duration_since(p.started) < timeout;
            if !keep {
                dropped.push((key.0, key.2, key.3));
            }
            keep
        });
        dropped
    }

    /// Drops everything partially received from `peer` (it left).
    pub fn forget_peer(&mut self, peer: PeerUuid) {
        self.partial.retain(|key, _| key.0 != peer);
    }

    /// Partial tensors held.
    pub fn in_flight(&self) -> usize {
        self.partial.len()
    }

    /// Bytes the partial tensors held declare (at most [`ReassemblyLimits::max_partial_bytes`]).
    pub fn held_bytes(&self) -> usize {
        self.partial.values().map(|p| p.header.total_bytes as usize).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TransferDtype;
    use crate::tensor::quant::{encode_values, QuantParams};
    use crate::net::codec::{split_into_chunks, MAX_CHUNK_PAYLOAD};

    const P: PeerUuid = PeerUuid([1; 16]);

    fn chunks_of(values: usize, dtype: TransferDtype) -> (Vec<f32>, Vec<TensorChunk>) {
        let data: Vec<f32> = (0..values).map(|i| (i as f32 * 0.01).cos()).collect();
        let (bytes, params) = encode_values(&data, dtype);
        let header = TensorHeader {
            request: 1,
            stage: 1,
            direction: Direction::StageInput,
            dtype,
            shape: vec![1, values as u32],
            params,
            total_bytes: bytes.len() as u32,
            onward: None,
            trace: Vec::new(),
            shared: None,
            collective: None,
        };
        (data, split_into_chunks(header, &bytes))
    }

    #[test]
    fn the_same_request_id_of_two_owners_passed_along_one_chain_is_kept_apart() {
        let (data, chunks) = chunks_of(MAX_CHUNK_PAYLOAD / 2, TransferDtype::F32);
        let for_owner = |owner: u8, chunk: &TensorChunk| {
            let onward = Some(crate::net::codec::Onward { owner: PeerUuid([owner; 16]), route: Vec::new(), ticket: None });
            TensorChunk { header: TensorHeader { onward, ..chunk.header.clone() }, ..chunk.clone() }
        };
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let now = Instant::now();
        // Both owners' chunks interleave, all but the last of each first.
        let (last, rest) = chunks.split_last().expect("chunks");
        for chunk in rest {
            assert_eq!(r.push(P, for_owner(7, chunk), now), Ok(None));
            assert_eq!(r.push(P, for_owner(8, chunk), now), Ok(None));
        }
        assert_eq!(r.in_flight(), 2);
        for owner in [7, 8] {
            let got = r.push(P, for_owner(owner, last), now).unwrap().expect("whole");
            assert_eq!(got.header.onward.map(|o| o.owner), Some(PeerUuid([owner; 16])));
            assert_eq!(got.shared.tensor.data(), &data[..]);
        }
    }

    #[test]
    fn a_tensor_must_come_in_as_many_chunks_as_its_bytes_split_into_so_that_slots_cost_no_more_than_bytes() {
        let now = Instant::now();
        let mut r = Reassembler::new(ReassemblyLimits::default());
        // An empty tensor declaring 65,535 chunks would hold 65,535 slots for 0 bytes.
        let (_, empty) = chunks_of(0, TransferDtype::F32);
        let greedy = TensorChunk { count: u16::MAX, ..empty[0].clone() };
        assert_eq!(r.push(P, greedy, now), Err(ChunkError::ChunkCount { count: u16::MAX, expected: 1 }));
        let (_, several) = chunks_of(MAX_CHUNK_PAYLOAD / 2, TransferDtype::F32);
        let n = several.len() as u16;
        assert_eq!(r.push(P, TensorChunk { count: n + 1, ..several[0].clone() }, now), Err(ChunkError::ChunkCount { count: n + 1, expected: n as usize }));
        assert_eq!(r.in_flight(), 0, "nothing held for either");
        assert!(r.push(P, empty[0].clone(), now).unwrap().is_some(), "the honest split is taken");
    }

    #[test]
    fn chunks_in_any_order_rebuild_the_tensor() {
        let (data, mut chunks) = chunks_of(MAX_CHUNK_PAYLOAD / 2, TransferDtype::F32);
        assert!(chunks.len() > 1);
        chunks.reverse();
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let now = Instant::now();
        let last = chunks.pop().unwrap();
        for c in chunks {
            assert_eq!(r.push(P, c, now), Ok(None));
        }
        let got = r.push(P, last, now).unwrap().unwrap();
        assert_eq!(got.shared.tensor.data(), &data[..]);
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn duplicates_and_inconsistent_chunks_discard_the_tensor() {
        let (_, chunks) = chunks_of(40_000, TransferDtype::F32);
        let now = Instant::now();
        let mut r = Reassembler::new(ReassemblyLimits::default());
        r.push(P, chunks[0].clone(), now).unwrap();
        assert_eq!(r.push(P, chunks[0].clone(), now), Err(ChunkError::Duplicate(0)));
        assert_eq!(r.in_flight(), 0);
        r.push(P, chunks[0].clone(), now).unwrap();
        let mut other = chunks[1].clone();
        other.header.shape = vec![2, 20_000];
        assert_eq!(r.push(P, other, now), Err(ChunkError::InconsistentHeader));
    }

    #[test]
    fn oversize_impossible_and_short_payloads_are_rejected() {
        let limits = ReassemblyLimits { max_tensor_bytes: 1000, ..Default::default() };
        let mut r = Reassembler::new(limits);
        let now = Instant::now();
        let (_, chunks) = chunks_of(1000, TransferDtype::F32);
        assert!(matches!(r.push(P, chunks[0].clone(), now), Err(ChunkError::Oversize { .. })));
        let (_, chunks) = chunks_of(100, TransferDtype::Int8);
        let mut c = chunks[0].clone();
        c.index = 3;
        assert_eq!(r.push(P, c, now), Err(ChunkError::BadIndex { index: 3, count: 1 }));
        let mut c = chunks[0].clone();
        c.payload.pop();
        assert!(matches!(r.push(P, c, now), Err(ChunkError::PayloadSize { .. })));
        let mut c = chunks[0].clone();
        c.header.shape = vec![1, 99];
        assert!(matches!(r.push(P, c, now), Err(ChunkError::PayloadSize { .. })));
        let mut c = chunks[0].clone();
        c.header.params = QuantParams { scale: -1.0, zero_point: 0 };
        assert!(matches!(r.push(P, c, now), Err(ChunkError::Values(_))));
    }

    #[test]
    fn a_peer_cannot_hold_more_than_its_share_and_stale_tensors_expire() {
        let limits = ReassemblyLimits { max_in_flight_per_peer: 2, timeout: Duration::from_millis(100), ..Default::default() };
        let mut r = Reassembler::new(limits);
        let now = Instant::now();
        let (_, chunks) = chunks_of(40_000, TransferDtype::F32);
        for request in 0..2 {
            let mut c = chunks[0].clone();
            c.header.request = request;
            r.push(P, c, now).unwrap();
        }
        let mut c = chunks[0].clone();
        c.header.request = 9;
        assert_eq!(r.push(P, c.clone(), now), Err(ChunkError::TooManyInFlight(2)));
        assert_eq!(r.push(PeerUuid([2; 16]), c, now), Ok(None), "another peer is unaffected");
        assert_eq!(r.expire(now + Duration::from_millis(150)).len(), 3);
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn a_shape_whose_byte_count_overflows_is_oversize_rather_than_a_panic() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let (_, chunks) = chunks_of(100, TransferDtype::F32);
        let mut c = chunks[0].clone();
        c.header.shape = vec![1 << 31, 1 << 31, 1 << 31];
        assert!(matches!(r.push(P, c.clone(), Instant::now()), Err(ChunkError::Oversize { .. })));
        c.header.shape = vec![1 << 31, 1 << 31];
        assert!(matches!(r.push(P, c, Instant::now()), Err(ChunkError::Oversize { .. } | ChunkError::PayloadSize { .. })));
    }

    #[test]
    fn the_partial_tensors_of_all_peers_share_one_byte_budget() {
        let (_, chunks) = chunks_of(40_000, TransferDtype::F32);
        let limits = ReassemblyLimits { max_partial_bytes: 2 * 160_000 + 1000, ..Default::default() };
        let mut r = Reassembler::new(limits);
        let now = Instant::now();
        for peer in 1..=2 {
            assert_eq!(r.push(PeerUuid([peer; 16]), chunks[0].clone(), now), Ok(None));
        }
        assert_eq!(r.push(PeerUuid([3; 16]), chunks[0].clone(), now), Err(ChunkError::OverBudget { bytes: 160_000, budget: limits.max_partial_bytes }));
        r.forget_peer(PeerUuid([1; 16]));
        assert_eq!(r.push(PeerUuid([3; 16]), chunks[0].clone(), now), Ok(None), "a finished or dropped tensor frees its share");
    }

    #[test]
    fn a_tensor_with_a_nan_or_an_infinity_is_rejected() {
        for bad in [f32::NAN, f32::INFINITY] {
            let mut data = vec![0.5f32; 64];
            data[17] = bad;
            let (bytes, params) = encode_values(&data, TransferDtype::F32);
            let (_, chunks) = chunks_of(64, TransferDtype::F32);
            let mut c = chunks[0].clone();
            (c.payload, c.header.params) = (bytes, params);
            let mut r = Reassembler::new(ReassemblyLimits::default());
            assert_eq!(r.push(P, c, Instant::now()), Err(ChunkError::NonFinite { index: 17 }));
        }
    }
}
