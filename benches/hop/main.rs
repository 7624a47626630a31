//! What one tensor hop costs the CPU between two players, without the network: the sender's
//! `Links::send_tensor` (encode, quantize, chunk, seal, MAC) and the receiver's `Links::receive`
//! of every frame (MAC, replay and rate checks, open, reassemble, the finite and size checks),
//! in memory, on two links that did their real key exchange; and, for scale, the parts of it
//! that are security alone: ChaCha20-Poly1305 over the payload and HMAC-SHA256 over the frame.
//!
//! ```text
//! cargo bench --bench hop
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use bevy_p2p_inference::net::{Capabilities, Direction, LinkSettings, Links, PeerUuid, Permissions, RoomKey, SentTensor, SessionEvent};
use bevy_p2p_inference::tensor::{Tensor, TransferDtype};
use chacha20poly1305::aead::{Aead, KeyInit};
use hmac::{Hmac, Mac};

/// The shipped model's cuts (fashion, three stages): what the three-player demo sends.
const CUTS: [(&str, usize); 2] = [("stage 1 input, 32x14x14", 6272), ("stage 2 input, 64x7x7", 3136)];

fn settings(permissions: Permissions) -> LinkSettings {
    let capabilities = Capabilities { adapter: "bench".into(), backend: "Vulkan".into(), shader_f16: false, subgroup_sizes: (0, 0), max_storage_binding: 1 << 27, calibration_us: 1000 };
    LinkSettings::new(RoomKey::from_bytes([0x4b; 32]), permissions, [7; 32], capabilities)
}

/// Two trusted links: a requester (1) and a player that runs its stages (2).
fn trusted_pair() -> (Links, Links, Instant) {
    let mut now = Instant::now();
    let (a, b) = (PeerUuid([1; 16]), PeerUuid([2; 16]));
    let mut requester = Links::new(settings(Permissions::COORDINATOR), now);
    let mut player = Links::new(settings(Permissions::RUN_STAGES), now);
    requester.set_own_id(a);
    player.set_own_id(b);
    requester.peer_connected(b, now);
    player.peer_connected(a, now);
    let mut events = Vec::new();
    for _ in 0..20 {
        for frame in requester.drain_outgoing() {
            player.receive(a, &frame.bytes, now, &mut events);
        }
        for frame in player.drain_outgoing() {
            requester.receive(b, &frame.bytes, now, &mut events);
        }
        now += Duration::from_millis(20);
        requester.tick(now, &mut events);
        player.tick(now, &mut events);
    }
    assert_eq!(events.iter().filter(|e| matches!(e, SessionEvent::PeerTrusted { .. })).count(), 2, "both sides trust each other: {events:?}");
    (requester, player, now)
}

/// Request `request`'s stage 1 input, for `peer`.
fn stage_input(peer: PeerUuid, request: u64) -> SentTensor {
    SentTensor { peer, request, stage: 1, direction: Direction::StageInput, onward: None, trace: Vec::new(), shared: None, collective: None }
}

/// Median microseconds of `run` over about half a second, after a warm-up.
fn median_us(mut run: impl FnMut()) -> f64 {
    for _ in 0..50 {
        run();
    }
    let mut samples = Vec::new();
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        let t = Instant::now();
        run();
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let (mut requester, mut player, now) = trusted_pair();
    let (a, b) = (PeerUuid([1; 16]), PeerUuid([2; 16]));
    println!("| tensor | dtype | frame bytes | send (µs) | receive (µs) | ChaCha20-Poly1305 seal + open of the payload (µs) | HMAC-SHA256 of the frame, twice (µs) |");
    println!("|---|---|---|---|---|---|---|");
    let mut request = 0;
    for (name, values) in CUTS {
        let tensor = Tensor::new(vec![1, values], (0..values).map(|i| (i % 97) as f32 * 0.01).collect()).unwrap();
        for dtype in [TransferDtype::Int8, TransferDtype::F32] {
            let mut frames = Vec::new();
            let send = median_us(|| {
                request += 1;
                requester.send_tensor(&stage_input(b, request), &tensor, dtype).expect("trusted");
                frames = requester.drain_outgoing();
            });
            // The frames of one more send, received again and again would be replays: send
            // a fresh tensor for each receive, timing only the receive.
            let mut received = 0usize;
            let mut receive_samples = Vec::new();
            for i in 0..2000 {
                request += 1;
                requester.send_tensor(&stage_input(b, request), &tensor, dtype).expect("trusted");
                let frames = requester.drain_outgoing();
                let mut events = Vec::new();
                let t = Instant::now();
                for frame in &frames {
                    player.receive(a, &frame.bytes, now, &mut events);
                }
                if i >= 50 {
                    receive_samples.push(t.elapsed().as_secs_f64() * 1e6);
                }
                received += events.iter().filter(|e| matches!(e, SessionEvent::Tensor(_))).count();
            }
            assert_eq!(received, 2000, "every tensor arrived whole");
            receive_samples.sort_by(f64::total_cmp);
            let receive = receive_samples[receive_samples.len() / 2];
            let frame_bytes: usize = frames.iter().map(|f| f.bytes.len()).sum();
            let payload = vec![0x5au8; frame_bytes];
            let cipher = chacha20poly1305::ChaCha20Poly1305::new(&[9u8; 32].into());
            let aead = median_us(|| {
                let sealed = cipher.encrypt(&[0u8; 12].into(), payload.as_slice()).unwrap();
                black_box(cipher.decrypt(&[0u8; 12].into(), sealed.as_slice()).unwrap());
            });
            let mac = median_us(|| {
                for _ in 0..2 {
                    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&[3u8; 32]).unwrap();
                    mac.update(&payload);
                    black_box(mac.finalize());
                }
            });
            println!("| {name} | {dtype:?} | {frame_bytes} | {send:.1} | {receive:.1} | {aead:.1} | {mac:.1} |");
        }
    }
}
