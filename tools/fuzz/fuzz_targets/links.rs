//! Fuzzes one player's link state machine (A) with frames from two peers: B, which completed an
//! honest key exchange and handshake with A first and then turns hostile (it holds the link's
//! keys and its session's tensor key, so it can send anything a member can), and C, which never
//! completes either (its "authenticated" frames are under B's keys; its raw frames may be
//! key-exchange frames, kind 6). Each
//! record of the input is raw bytes, an authenticated body of any kind, or a sealed tensor chunk
//! with fuzzed header fields, delivered to A, with time advancing and A ticking between records.
//! Whatever arrives, A must not panic, and must never hand out a tensor from C.
//!
//! Record: flags u8 | kind u8 | length u16 (little-endian) | that many bytes.
//! flags bit 0: authenticate the bytes as a body of `kind` (else they are the whole frame);
//! bit 1: from C (else B); bit 2: tick 30 ms later first; bit 3: the sender (re)connects first;
//! bit 4: the bytes are a tensor chunk's fields and payload, sealed as a member seals them.

#![no_main]

use std::time::{Duration, Instant};

use bevy_p2p_inference::net::codec::TensorChunk;
use bevy_p2p_inference::net::{encode_frame, seal_frame, Capabilities, Direction, LinkSettings, LinkState, Links, Message, PeerUuid, Permissions, RoomKey, SessionEvent, TensorHeader};
use bevy_p2p_inference::tensor::quant::QuantParams;
use bevy_p2p_inference::tensor::TransferDtype;
use libfuzzer_sys::fuzz_target;

const KEY: RoomKey = RoomKey::from_bytes([0x4b; 32]);
const A: PeerUuid = PeerUuid([1; 16]);
const B: PeerUuid = PeerUuid([2; 16]);
const C: PeerUuid = PeerUuid([3; 16]);

fn settings(permissions: Permissions) -> LinkSettings {
    let capabilities = Capabilities {
        adapter: "fuzz".into(),
        backend: "none".into(),
        shader_f16: false,
        subgroup_sizes: (0, 0),
        max_storage_binding: 1 << 27,
        calibration_us: 1,
    };
    let mut settings = LinkSettings::new(KEY.clone(), permissions, [7; 32], capabilities);
    settings.limits.max_partial_bytes = 1 << 20;
    settings
}

/// A and B, trusting each other after an honest handshake.
fn handshake(now: &mut Instant) -> (Links, Links) {
    let mut a = Links::new(settings(Permissions::COORDINATOR), *now);
    let mut b = Links::new(settings(Permissions::RUN_STAGES), *now);
    a.set_own_id(A);
    b.set_own_id(B);
    a.peer_connected(B, *now);
    a.peer_connected(C, *now);
    b.peer_connected(A, *now);
    let mut events = Vec::new();
    for _ in 0..10 {
        // A's frames to C (which never answers) are not B's.
        for frame in a.drain_outgoing().into_iter().filter(|f| f.to == B) {
            b.receive(A, &frame.bytes, *now, &mut events);
        }
        for frame in b.drain_outgoing() {
            a.receive(B, &frame.bytes, *now, &mut events);
        }
        *now += Duration::from_millis(20);
        a.tick(*now, &mut events);
        b.tick(*now, &mut events);
    }
    assert_eq!(a.link(B).map(|l| l.state), Some(LinkState::Trusted), "the honest handshake");
    (a, b)
}

/// A tensor chunk from fuzzed bytes: header fields first, the rest is the payload.
fn chunk(bytes: &[u8]) -> Option<TensorChunk> {
    let (fields, payload) = (bytes.get(..24)?, &bytes[24..]);
    let u32_at = |i: usize| u32::from_le_bytes(fields[i..i + 4].try_into().unwrap());
    let rank = (fields[4] % 4) as usize + 1;
    let header = TensorHeader {
        request: fields[0] as u64,
        stage: (fields[1] % 4) as u16,
        direction: if fields[2] & 1 == 0 { Direction::StageInput } else { Direction::StageOutput },
        dtype: [TransferDtype::F32, TransferDtype::F16, TransferDtype::Int8][(fields[3] % 3) as usize],
        shape: (0..rank).map(|d| (fields[5 + d] as u32) << (fields[9] % 24)).collect(),
        params: QuantParams { scale: f32::from_bits(u32_at(10)), zero_point: fields[14] as i8 as i32 },
        total_bytes: u32_at(15),
        onward: None,
        trace: Vec::new(),
        shared: None,
        collective: None,
    };
    Some(TensorChunk { header, index: u16::from_le_bytes([fields[19], fields[20]]), count: u16::from_le_bytes([fields[21], fields[22]]), payload: payload.to_vec() })
}

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let (mut a, b) = handshake(&mut now);
    let keys = b.link_keys(A).expect("the honest key exchange").clone();
    let cipher = keys.tensor_cipher(B, A, &b.session_nonce(), &a.session_nonce());
    let mut events = Vec::new();
    let mut sequence = 1u64 << 40;
    let mut rest = data;
    while rest.len() >= 4 {
        let (flags, kind) = (rest[0], rest[1]);
        let length = (u16::from_le_bytes([rest[2], rest[3]]) as usize).min(rest.len() - 4);
        let body = &rest[4..4 + length];
        rest = &rest[4 + length..];
        let from = if flags & 2 != 0 { C } else { B };
        if flags & 4 != 0 {
            now += Duration::from_millis(30);
            a.tick(now, &mut events);
        }
        if flags & 8 != 0 {
            a.peer_connected(from, now);
        }
        sequence += 1;
        let frame = match chunk(body).filter(|_| flags & 16 != 0) {
            Some(chunk) => {
                let payload = cipher.seal(sequence, &chunk.payload);
                encode_frame(&keys, from, A, sequence, &Message::Tensor(TensorChunk { payload, ..chunk }))
            }
            None if flags & 1 != 0 => seal_frame(&keys, from, A, sequence, kind, body),
            None => body.to_vec(),
        };
        a.receive(from, &frame, now, &mut events);
        for event in events.drain(..) {
            if let SessionEvent::Tensor(tensor) = event {
                assert_eq!(tensor.from, B, "a tensor from a peer that never completed a handshake");
            }
        }
        assert_ne!(a.link(C).map(|l| l.state), Some(LinkState::Trusted));
    }
    let _ = a.drain_outgoing();
});
