//! Tests of the wire codec.

use super::*;
use crate::net::{CapabilityToken, OwnerKey, Permissions, PlayerIdentity, TokenHolder};

const A: PeerUuid = PeerUuid([0xa; 16]);
const B: PeerUuid = PeerUuid([0xb; 16]);

fn keys() -> LinkKeys {
    LinkKeys::from_secret(&[1; 32])
}

fn chunk() -> TensorChunk {
    TensorChunk {
        header: TensorHeader {
            request: 7,
            stage: 2,
            direction: Direction::StageInput,
            dtype: TransferDtype::Int8,
            shape: vec![1, 32, 4, 4],
            params: QuantParams { scale: 0.02, zero_point: -3 },
            total_bytes: 512,
            onward: Some(Onward { owner: A, route: vec![B], ticket: None }),
            trace: vec![StageTiming { stage: 1, run_us: 1500, gpu_us: Some(900), network_us: None }],
            shared: None,
            collective: None,
        },
        index: 0,
        count: 1,
        payload: (0..=255).cycle().take(512).collect(),
    }
}

fn hello() -> Hello {
    Hello {
        model_hash: [9; 32],
        capabilities: Capabilities {
            adapter: "llvmpipe".into(),
            backend: "Vulkan".into(),
            shader_f16: true,
            subgroup_sizes: (8, 8),
            max_storage_binding: 128 << 20,
            calibration_us: 1234,
        },
        permissions: Permissions::RUN_STAGES,
        identity: PlayerIdentity::generate().unwrap().public(),
        token: Some(token(A)),
        proof: Some([0x70; 64]),
        grant: None,
        acknowledged: false,
        session_nonce: [0x5e; 16],
    }
}

fn token(peer: PeerUuid) -> CapabilityToken {
    let holder = TokenHolder { identity: PlayerIdentity::generate().unwrap().public(), peer, session_nonce: [3; 16] };
    OwnerKey::generate().unwrap().issue(holder, Permissions::RUN_STAGES, 1_700_000_000_000)
}

#[test]
fn every_message_kind_round_trips() {
    let granting = Hello { token: None, grant: Some(token(B)), acknowledged: true, ..hello() };
    let revoke = Message::Revoke { peer: PeerUuid([9; 16]), identity: PlayerIdentity::generate().unwrap().public() };
    let shared = Message::Tensor(shared_chunk(SharedKey { owner: A, name: "prédiction".repeat(5) }));
    for (seq, message) in [Message::Hello(hello()), Message::Hello(granting), Message::Ping { nonce: 3 }, Message::Pong { nonce: 4 }, Message::Tensor(chunk()), shared, revoke, Message::Dropped { request: 77, stage: 2 }]
        .into_iter()
        .enumerate()
    {
        let frame = encode_frame(&keys(), A, B, seq as u64, &message);
        assert_ne!(frame[3], crate::net::EXCHANGE_KIND, "{message:?} would pass for a key-exchange frame");
        assert_eq!(decode_frame(&keys(), A, B, &frame), Ok((seq as u64, message)));
    }
}

/// A value of the shared tensor `key`, version 12.
fn shared_chunk(key: SharedKey) -> TensorChunk {
    let header = TensorHeader { request: 12, stage: 0, direction: Direction::Shared, onward: None, trace: Vec::new(), shared: Some(key), ..chunk().header };
    TensorChunk { header, ..chunk() }
}

#[test]
fn a_shared_tensor_key_goes_only_with_the_shared_direction_and_within_its_length() {
    let key = SharedKey { owner: A, name: "prediction".into() };
    let stage_with_key = TensorChunk { header: TensorHeader { shared: Some(key.clone()), ..chunk().header }, ..chunk() };
    let shared_without_key = TensorChunk { header: TensorHeader { shared: None, ..shared_chunk(key).header }, ..chunk() };
    let too_long = shared_chunk(SharedKey { owner: A, name: "n".repeat(MAX_SHARED_NAME + 1) });
    for chunk in [stage_with_key, shared_without_key, too_long] {
        let frame = encode_frame(&keys(), A, B, 1, &Message::Tensor(chunk));
        assert!(matches!(decode_frame(&keys(), A, B, &frame), Err(FrameError::Malformed { kind: "tensor", .. })));
    }
}

#[test]
fn any_flipped_bit_is_rejected() {
    let frame = encode_frame(&keys(), A, B, 1, &Message::Tensor(chunk()));
    for byte in 0..frame.len() {
        let mut bad = frame.clone();
        bad[byte] ^= 0x10;
        assert!(decode_frame(&keys(), A, B, &bad).is_err(), "flip in byte {byte} accepted");
    }
}

#[test]
fn frames_from_another_room_or_peer_are_rejected() {
    let frame = encode_frame(&LinkKeys::from_secret(&[2; 32]), A, B, 1, &Message::Ping { nonce: 1 });
    assert_eq!(decode_frame(&keys(), A, B, &frame), Err(FrameError::BadMac));
    let frame = encode_frame(&keys(), A, B, 1, &Message::Ping { nonce: 1 });
    assert_eq!(decode_frame(&keys(), B, A, &frame), Err(FrameError::BadMac), "reflected");
}

#[test]
fn truncated_oversize_and_foreign_frames_are_rejected_by_kind() {
    let frame = encode_frame(&keys(), A, B, 1, &Message::Ping { nonce: 1 });
    assert_eq!(decode_frame(&keys(), A, B, &frame[..20]), Err(FrameError::TooShort(20)));
    assert!(matches!(decode_frame(&keys(), A, B, &frame[..frame.len() - 1]), Err(FrameError::LengthMismatch { .. })));
    assert_eq!(decode_frame(&keys(), A, B, &vec![0; MAX_FRAME_BYTES + 1]), Err(FrameError::Oversize(MAX_FRAME_BYTES + 1)));
    let mut other = frame.clone();
    other[0] = b'X';
    assert_eq!(decode_frame(&keys(), A, B, &other), Err(FrameError::BadMagic));
    let mut future = frame.clone();
    future[2] = 9;
    assert_eq!(decode_frame(&keys(), A, B, &future), Err(FrameError::UnsupportedVersion(9)));
}

#[test]
fn an_authenticated_but_malformed_body_is_rejected_not_trusted() {
    // A peer holding the room key sends a tensor chunk claiming rank 200.
    let mut body = Writer::default();
    body.u64(1);
    body.u16(0);
    body.u8(0);
    body.u8(0);
    body.u8(200);
    let mut frame = Vec::new();
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&[PROTOCOL_VERSION, 4]);
    frame.extend_from_slice(&5u64.to_le_bytes());
    frame.extend_from_slice(&(body.0.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body.0);
    let tag = keys().frame_tag(A, B, &frame);
    frame.extend_from_slice(&tag);
    assert!(matches!(decode_frame(&keys(), A, B, &frame), Err(FrameError::Malformed { kind: "tensor", .. })));
}

#[test]
fn a_replayed_or_duplicated_frame_is_rejected_after_authentication() {
    let frames: Vec<Vec<u8>> = (1..=3).map(|seq| encode_frame(&keys(), A, B, seq, &Message::Ping { nonce: seq })).collect();
    let mut guard = ReplayGuard::default();
    for frame in &frames[..2] {
        let (seq, _) = decode_frame(&keys(), A, B, frame).unwrap();
        guard.accept(seq).unwrap();
    }
    let (seq, _) = decode_frame(&keys(), A, B, &frames[0]).unwrap();
    assert_eq!(guard.accept(seq), Err(FrameError::Replay { got: 1, last: 2 }));
    let (seq, _) = decode_frame(&keys(), A, B, &frames[1]).unwrap();
    assert_eq!(guard.accept(seq), Err(FrameError::Replay { got: 2, last: 2 }));
    let (seq, _) = decode_frame(&keys(), A, B, &frames[2]).unwrap();
    assert_eq!(guard.accept(seq), Ok(()));
}

#[test]
fn chunks_of_a_large_payload_each_fit_a_frame() {
    let payload = vec![7u8; MAX_CHUNK_PAYLOAD * 3 + 5];
    let header = TensorHeader { total_bytes: payload.len() as u32, ..chunk().header };
    let chunks = split_into_chunks(header, &payload);
    assert_eq!(chunks.len(), 4);
    for c in &chunks {
        let header = TensorHeader { shape: vec![u32::MAX; MAX_RANK], ..c.header.clone() };
        let frame = encode_frame(&keys(), A, B, u64::MAX, &Message::Tensor(TensorChunk { header, ..c.clone() }));
        assert!(frame.len() <= MAX_FRAME_BYTES, "{} bytes", frame.len());
    }
    assert_eq!(chunks.iter().flat_map(|c| c.payload.clone()).collect::<Vec<_>>(), payload);
}

#[test]
fn a_route_or_a_trace_longer_than_the_limit_is_malformed() {
    let mut long_route = chunk();
    long_route.header.onward = Some(Onward { owner: A, route: vec![B; MAX_ROUTE + 1], ticket: None });
    let mut long_trace = chunk();
    long_trace.header.trace = vec![StageTiming { stage: 1, run_us: 1, gpu_us: Some(1), network_us: Some(1) }; MAX_ROUTE + 1];
    for chunk in [long_route, long_trace] {
        let frame = encode_frame(&keys(), A, B, 1, &Message::Tensor(chunk));
        assert!(matches!(decode_frame(&keys(), A, B, &frame), Err(FrameError::Malformed { .. })));
    }
}

#[test]
fn the_longest_header_still_fits_a_full_chunk_in_a_frame() {
    let mut c = chunk();
    c.header.shape = vec![u32::MAX; MAX_RANK];
    c.header.onward = Some(Onward { owner: A, route: vec![B; MAX_ROUTE], ticket: None });
    c.header.trace = vec![StageTiming { stage: 1, run_us: 1, gpu_us: Some(1), network_us: Some(1) }; MAX_ROUTE];
    c.payload = vec![1; MAX_CHUNK_PAYLOAD];
    let frame = encode_frame(&keys(), A, B, 1, &Message::Tensor(c.clone()));
    assert!(frame.len() <= MAX_FRAME_BYTES, "{} bytes", frame.len());
    assert_eq!(decode_frame(&keys(), A, B, &frame), Ok((1, Message::Tensor(c))));
}
