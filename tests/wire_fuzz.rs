//! Property-based fuzzing of the wire decoder and the reassembler: whatever bytes arrive,
//! decoding returns a value or an error, never panics, and never yields a tensor that was not
//! sent by someone holding the room key.

use std::time::Instant;

use bevy_p2p_inference::tensor::TransferDtype;
use bevy_p2p_inference::tensor::quant::encode_values;
use bevy_p2p_inference::net::codec::split_into_chunks;
use bevy_p2p_inference::net::codec::{Onward, TensorChunk};
use bevy_p2p_inference::net::{decode_frame, encode_frame, seal_frame, Direction, Message, PeerUuid, Reassembler, ReassemblyLimits, LinkKeys, TensorHeader};
use bevy_p2p_inference::tensor::quant::QuantParams;
use proptest::prelude::*;

const A: PeerUuid = PeerUuid([0xa; 16]);
const B: PeerUuid = PeerUuid([0xb; 16]);

fn tensor_frames(values: &[f32], dtype: TransferDtype) -> Vec<Vec<u8>> {
    let keys = LinkKeys::from_secret(&[0xf; 32]);
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
        shared: None,
        collective: None,
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
        let keys = LinkKeys::from_secret(&[0xf; 32]);
        prop_assert!(decode_frame(&keys, A, B, &bytes).is_err());
    }

    #[test]
    fn a_mutated_frame_is_rejected(values in proptest::collection::vec(-10.0f32..10.0, 1..20_000), at in any::<prop::sample::Index>(), xor in 1u8..) {
        let keys = LinkKeys::from_secret(&[0xf; 32]);
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
        let keys = LinkKeys::from_secret(&[0xf; 32]);
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

    /// A peer holding the room key may authenticate any body: whatever it sends, decoding
    /// returns a message or an error.
    #[test]
    fn an_authenticated_body_of_any_kind_and_content_never_panics(kind in 0u8..8, body in proptest::collection::vec(any::<u8>(), 0..4_000)) {
        let keys = LinkKeys::from_secret(&[0xf; 32]);
        let frame = seal_frame(&keys, A, B, 7, kind, &body);
        let _ = decode_frame(&keys, A, B, &frame);
    }

    /// The same peer mutating a real tensor chunk's body: what still decodes goes through the
    /// reassembler, which never panics and never holds more than its byte budget.
    #[test]
    fn an_authenticated_mutated_chunk_never_panics_the_reassembler(
        values in proptest::collection::vec(-10.0f32..10.0, 1..5_000),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..), 1..6),
    ) {
        let keys = LinkKeys::from_secret(&[0xf; 32]);
        let frame = tensor_frames(&values, TransferDtype::F32).remove(0);
        let mut body = frame[16..frame.len() - 32].to_vec();
        for (at, xor) in flips {
            let i = at.index(body.len());
            body[i] ^= xor;
        }
        let limits = ReassemblyLimits { max_tensor_bytes: 1 << 20, max_partial_bytes: 2 << 20, ..Default::default() };
        let mut reassembler = Reassembler::new(limits);
        if let Ok((_, Message::Tensor(chunk))) = decode_frame(&keys, A, B, &seal_frame(&keys, A, B, 7, 4, &body)) {
            let _ = reassembler.push(A, chunk, Instant::now());
        }
        prop_assert!(reassembler.held_bytes() <= limits.max_partial_bytes);
    }

    /// Chunks with arbitrary headers from many peers: the reassembler answers each with a
    /// tensor, nothing yet or an error, and all of them together stay within the byte budget.
    #[test]
    fn chunks_with_arbitrary_headers_stay_within_the_reassembler_s_limits(
        chunks in proptest::collection::vec(
            (0u8..6, proptest::collection::vec(any::<u32>(), 0..9), any::<u32>(), 0u8..3, any::<u16>(), any::<u16>(), proptest::collection::vec(any::<u8>(), 0..64), any::<bool>()),
            1..40,
        ),
    ) {
        let limits = ReassemblyLimits { max_tensor_bytes: 1 << 20, max_partial_bytes: 3 << 20, ..Default::default() };
        let mut reassembler = Reassembler::new(limits);
        let now = Instant::now();
        for (peer, shape, total_bytes, dtype, index, count, payload, chained) in chunks {
            let dtype = [TransferDtype::F32, TransferDtype::F16, TransferDtype::Int8][dtype as usize];
            let header = TensorHeader {
                request: peer as u64,
                stage: 1,
                direction: Direction::StageInput,
                dtype,
                shape,
                params: QuantParams { scale: 0.1, zero_point: 0 },
                total_bytes,
                onward: chained.then(|| Onward { owner: A, route: vec![B], ticket: None }),
                trace: Vec::new(),
                shared: None,
                collective: None,
            };
            let _ = reassembler.push(PeerUuid([peer; 16]), TensorChunk { header, index, count, payload }, now);
            prop_assert!(reassembler.held_bytes() <= limits.max_partial_bytes);
        }
    }
}
