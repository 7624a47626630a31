//! Property-based fuzzing of the wire decoder and the reassembler: whatever bytes arrive,
//! decoding returns a value or an error, never panics, and never yields a tensor that was not
//! sent by someone holding the room key.

use std::time::Instant;

use bevy_p2p_inference::tensor::TransferDtype;
use bevy_p2p_inference::tensor::quant::encode_values;
use bevy_p2p_inference::net::codec::split_into_chunks;
use bevy_p2p_inference::net::{decode_frame, encode_frame, Direction, Message, PeerUuid, Reassembler, ReassemblyLimits, RoomKeys, TensorHeader};
use proptest::prelude::*;

const A: PeerUuid = PeerUuid([0xa; 16]);
const B: PeerUuid = PeerUuid([0xb; 16]);

fn tensor_frames(values: &[f32], dtype: TransferDtype) -> Vec<Vec<u8>> {
    let keys = RoomKeys::derive("fuzz room");
    let (bytes, params) = encode_values(values, dtype);
    let header = TensorHeader {
        request: 1,
        stage: 1,
        direction: Direction::StageInput,
        dtype,
        shape: vec![values.len() as u32],
        params,
        total_bytes: bytes.len() as u32,
        onward: None,
        trace: Vec::new(),
    };
    split_into_chunks(header, &bytes)
        .into_iter()
        .enumerate()
        .map(|(i, c)| encode_frame(&keys, A, B, i as u64, &Message::Tensor(c)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_and_never_authenticate(bytes in proptest::collection::vec(any::<u8>(), 0..70_000)) {
        let keys = RoomKeys::derive("fuzz room");
        prop_assert!(decode_frame(&keys, A, B, &bytes).is_err());
    }

    #[test]
    fn a_mutated_frame_is_rejected(values in proptest::collection::vec(-10.0f32..10.0, 1..20_000), at in any::<prop::sample::Index>(), xor in 1u8..) {
        let keys = RoomKeys::derive("fuzz room");
        let mut frame = tensor_frames(&values, TransferDtype::F32).remove(0);
        let i = at.index(frame.len());
        frame[i] ^= xor;
        prop_assert!(decode_frame(&keys, A, B, &frame).is_err());
    }

    #[test]
    fn any_subset_and_order_of_authentic_chunks_yields_the_sent_tensor_or_nothing(
        values in proptest::collection::vec(-10.0f32..10.0, 1..40_000),
        order in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let keys = RoomKeys::derive("fuzz room");
        let frames = tensor_frames(&values, TransferDtype::F32);
        let mut reassembler = Reassembler::new(ReassemblyLimits::default());
        let now = Instant::now();
        for pick in order {
            let (_, message) = decode_frame(&keys, A, B, &frames[pick.index(frames.len())]).unwrap();
            let Message::Tensor(chunk) = message else { unreachable!() };
            if let Ok(Some(received)) = reassembler.push(A, chunk, now) {
                prop_assert_eq!(received.shared.tensor.data(), &values[..]);
            }
        }
    }
}
