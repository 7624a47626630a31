//! Fuzzes `Reassembler` (small limits: 3 partial tensors per peer, 200 KB of partial tensors in
//! all, 256 KB per tensor, a 1 s timeout) with chunks from three peers, with time advancing.
//! Each record makes a chunk: its header's fields (request, stage, direction, dtype, shape,
//! int8 parameters, an onward route with or without a route ticket, a shared key or collective
//! tag) and its index, count, total bytes and payload length. By default the harness fills in
//! what an honest sender would (total bytes from the shape and dtype, the chunk count from
//! `codec::chunk_count`, each chunk's share of the payload), so that tensors of several chunks
//! do complete; flag bits replace each of those with fuzzed values. One kind of record sends
//! every chunk of its tensor at once (in order, or last first, or with one left out). Other
//! records let time pass (expiring stale partial tensors) or forget a peer.
//!
//! Invariants (an assert that fires is a finding): no panic; `held_bytes() <= max_partial_bytes`
//! after every step; at most `max_in_flight_per_peer` partial tensors per peer (so at most 9 in
//! all); every completed tensor comes from the peer that pushed its last chunk, has as many
//! values as its header's shape says and that shape, only finite values, its header's
//! direction, and a total of bytes that the shape and dtype account for exactly.
//!
//! Record: op u8 | flags u8 | fields [24] | fill bytes (the payload repeats them).

#![no_main]

use std::time::{Duration, Instant};

use bevy_p2p_inference::net::codec::{chunk_count, Onward, TensorChunk, TensorHeader};
use bevy_p2p_inference::net::{CollectiveOp, CollectiveTag, Direction, PeerUuid, Reassembler, ReassemblyLimits, ReceivedTensor, RouteTicket, SharedKey};
use bevy_p2p_inference::tensor::quant::QuantParams;
use bevy_p2p_inference::tensor::TransferDtype;
use libfuzzer_sys::fuzz_target;

const PEERS: [PeerUuid; 3] = [PeerUuid([1; 16]), PeerUuid([2; 16]), PeerUuid([3; 16])];
const LIMITS: ReassemblyLimits = ReassemblyLimits { max_tensor_bytes: 256 << 10, max_in_flight_per_peer: 3, max_partial_bytes: 200_000, timeout: Duration::from_secs(1) };
/// The payload bytes one chunk carries when the sender splits a tensor (`codec`'s piece size).
fn piece_bytes() -> usize {
    // chunk_count(n) is 1 up to the piece size, 2 just above it.
    let (mut lo, mut hi) = (1usize, 1 << 20);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if chunk_count(mid) == 1 { lo = mid } else { hi = mid - 1 }
    }
    lo
}

fn u32_at(f: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(f[i..i + 4].try_into().unwrap())
}

/// A chunk from a record's fields. flags: bit 0 fuzzed total bytes, bit 1 fuzzed count, bit 2
/// fuzzed index (else `f[1]` modulo the count), bit 3 fuzzed payload length (else the chunk's
/// share), bit 4 fuzzed int8 parameters (else valid ones), bit 5 fuzzed rank-0 shape (scalar).
fn chunk(flags: u8, f: &[u8], fill: &[u8], piece: usize) -> TensorChunk {
    let direction = [Direction::StageInput, Direction::StageOutput, Direction::Shared, Direction::Collective][(f[2] % 4) as usize];
    let dtype = [TransferDtype::F32, TransferDtype::F16, TransferDtype::Int8][(f[3] % 3) as usize];
    let rank = if flags & 32 != 0 { 0 } else { (f[4] % 4) as usize + 1 };
    // Small dimensions, one of them scaled up by a shift: tensors of one chunk and of several.
    let shift = f[9] % 20;
    let shape: Vec<u32> = (0..rank).map(|d| if d == 0 { (f[5] as u32) << shift } else { f[5 + d] as u32 % 16 }).collect();
    let values = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64)).unwrap_or(u64::MAX);
    let honest_total = values.saturating_mul(dtype.bytes_per_value() as u64).min(u32::MAX as u64) as u32;
    let total_bytes = if flags & 1 != 0 { u32_at(f, 10) } else { honest_total };
    let honest_count = chunk_count(total_bytes as usize).min(u16::MAX as usize) as u16;
    let count = if flags & 2 != 0 { u16::from_le_bytes([f[14], f[15]]) } else { honest_count };
    let index = if flags & 4 != 0 { u16::from_le_bytes([f[16], f[17]]) } else { f[1] as u16 % count.max(1) };
    let share = (total_bytes as usize).saturating_sub(index as usize * piece).min(piece);
    let length = if flags & 8 != 0 { u16::from_le_bytes([f[18], f[19]]) as usize * 4 } else { share }.min(piece + 64);
    let payload: Vec<u8> = if fill.is_empty() { vec![0; length] } else { fill.iter().copied().cycle().take(length).collect() };
    let params = match (flags & 16 != 0, dtype) {
        (true, _) => QuantParams { scale: f32::from_bits(u32_at(f, 20)), zero_point: f[19] as i8 as i32 * 3 },
        (false, TransferDtype::Int8) => QuantParams { scale: 0.5, zero_point: f[19] as i8 as i32 },
        (false, _) => QuantParams::NONE,
    };
    let owner = PEERS[(f[8] % 3) as usize];
    let onward = match f[7] % 4 {
        0 | 1 => None,
        2 => Some(Onward { owner, route: vec![PEERS[0]; (f[8] % 3) as usize], ticket: None }),
        _ => Some(Onward {
            owner,
            route: vec![PEERS[1]],
            // `.into()`: the field is a `Box<RouteTicket>` (it was a `RouteTicket`).
            ticket: Some(RouteTicket { first_stage: f[0] as u16, route: vec![PEERS[2], PEERS[1]], expires_at_ms: f[10] as u64, signature: [f[11]; 64] }.into()),
        }),
    };
    let keyed = matches!(direction, Direction::Shared | Direction::Collective);
    let shared = keyed.then(|| SharedKey { owner, name: format!("t{}", f[6] % 4) });
    let collective = (direction == Direction::Collective).then(|| CollectiveTag { op: CollectiveOp::AllGather, members: PEERS[..(f[6] % 3) as usize + 1].to_vec() });
    let header = TensorHeader { request: (f[0] % 4) as u64, stage: ((f[0] >> 4) % 3) as u16, direction, dtype, shape, params, total_bytes, onward, trace: Vec::new(), shared, collective };
    TensorChunk { header, index, count, payload }
}

fn check_limits(reassembler: &Reassembler) {
    assert!(reassembler.held_bytes() <= LIMITS.max_partial_bytes, "partial tensors hold {} bytes, over the budget", reassembler.held_bytes());
    assert!(reassembler.in_flight() <= PEERS.len() * LIMITS.max_in_flight_per_peer, "more partial tensors than the peers may hold");
}

fn check_tensor(tensor: &ReceivedTensor, from: PeerUuid) {
    assert_eq!(tensor.from, from, "a tensor completed by another peer's chunk");
    let header = &tensor.header;
    let values = header.values().expect("a completed tensor's shape does not overflow");
    let got = &tensor.shared.tensor;
    assert_eq!(got.len(), values, "a completed tensor with other than its shape's number of values");
    assert_eq!(got.shape().iter().map(|&d| d as u64).collect::<Vec<_>>(), header.shape.iter().map(|&d| d as u64).collect::<Vec<_>>());
    assert_eq!(values * header.dtype.bytes_per_value(), header.total_bytes as usize, "total bytes the shape does not account for");
    assert!(got.data().iter().all(|v| v.is_finite()), "a non-finite value got through");
    assert_eq!(tensor.direction, header.direction);
    assert_eq!(tensor.shared.dtype, header.dtype);
}

fuzz_target!(|data: &[u8]| {
    let piece = piece_bytes();
    let mut reassembler = Reassembler::new(LIMITS);
    let mut now = Instant::now();
    let mut rest = data;
    let mut records = 0;
    let (mut completed, mut most_chunks) = (0, 0);
    while rest.len() >= 26 && records < 48 {
        records += 1;
        let (op, flags, fields) = (rest[0], rest[1], &rest[2..26]);
        let fill_len = (fields[23] as usize % 16).min(rest.len() - 26);
        let fill = &rest[26..26 + fill_len];
        rest = &rest[26 + fill_len..];
        match op % 8 {
            // Time passes; stale partial tensors expire.
            6 => {
                now += Duration::from_millis(fields[0] as u64 * 8);
                reassembler.expire(now);
            }
            7 => reassembler.forget_peer(PEERS[(fields[0] % 3) as usize]),
            // Every chunk of the record's tensor, in order (flag bit 7: last first; bit 6: one
            // left out), from one peer: what completes tensors of several chunks.
            5 => {
                let from = PEERS[(fields[22] % 3) as usize];
                let first = chunk(flags & !4, fields, fill, piece);
                let count = first.count.min(8);
                let skip = (flags & 64 != 0).then_some(fields[21] as u16 % count.max(1));
                let order: Vec<u16> = if flags & 128 != 0 { (0..count).rev().collect() } else { (0..count).collect() };
                for index in order.into_iter().filter(|i| Some(*i) != skip) {
                    let mut f = [0u8; 24];
                    f.copy_from_slice(fields);
                    f[1] = index as u8;
                    let chunk = chunk(flags & !4, &f, fill, piece);
                    let count = chunk.count;
                    if let Ok(Some(tensor)) = reassembler.push(from, chunk, now) {
                        completed += 1;
                        most_chunks = most_chunks.max(count);
                        check_tensor(&tensor, from);
                    }
                    check_limits(&reassembler);
                }
            }
            _ => {
                let from = PEERS[(op % 3) as usize];
                let chunk = chunk(flags, fields, fill, piece);
                let count = chunk.count;
                if let Ok(Some(tensor)) = reassembler.push(from, chunk, now) {
                    completed += 1;
                    most_chunks = most_chunks.max(count);
                    check_tensor(&tensor, from);
                }
            }
        }
        check_limits(&reassembler);
    }
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!("records {records}: completed {completed}, most chunks {most_chunks}, in flight {}, held {}", reassembler.in_flight(), reassembler.held_bytes());
    }
});
