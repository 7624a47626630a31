//! Links talking to each other in memory: frames delivered by hand, time advanced by hand.

use std::time::Duration;

use bevy::platform::time::Instant;

use super::*;
use crate::net::codec::{encode_frame, seal_frame, FrameError, Hello, Onward, SharedKey, StageTiming, TensorChunk, TensorHeader};
use crate::tensor::{decode_values, encode_values, Tensor, TransferDtype};
use crate::net::reassembly::ChunkError;
use crate::net::{Capabilities, LinkKeyExchange, ReceivedTensor, RoomKey, TensorCipher, TokenError, Unsealed};

const KEY: RoomKey = RoomKey::from_bytes([0x4b; 32]);
const MODEL: [u8; 32] = [7; 32];
const STEP: Duration = Duration::from_millis(20);

fn capabilities(adapter: &str) -> Capabilities {
    Capabilities {
        adapter: adapter.into(),
        backend: "Vulkan".into(),
        shader_f16: false,
        subgroup_sizes: (0, 0),
        max_storage_binding: 1 << 27,
        calibration_us: 1000,
    }
}

/// Players in one room, each with its links and the events it has seen.
struct Room {
    now: Instant,
    players: Vec<Player>,
}

struct Player {
    id: PeerUuid,
    links: Links,
    events: Vec<SessionEvent>,
    /// Frames from this player are dropped (a stalled or vanished peer).
    muted: bool,
}

impl Room {
    fn new(players: &[(u8, LinkSettings)]) -> Self {
        let now = Instant::now();
        let mut players: Vec<Player> = players
            .iter()
            .map(|(id, settings)| {
                let mut links = Links::new(settings.clone(), now);
                links.set_own_id(PeerUuid([*id; 16]));
                Player { id: PeerUuid([*id; 16]), links, events: Vec::new(), muted: false }
            })
            .collect();
        let ids: Vec<PeerUuid> = players.iter().map(|p| p.id).collect();
        for player in &mut players {
            for &other in ids.iter().filter(|&&o| o != player.id) {
                player.links.peer_connected(other, now);
            }
        }
        Self { now, players }
    }

    fn player(&mut self, id: u8) -> &mut Player {
        self.players.iter_mut().find(|p| p.id == PeerUuid([id; 16])).expect("a player of the room")
    }

    /// Delivers every queued frame (except a muted player's), then ticks everyone.
    fn step(&mut self) -> Vec<OutgoingFrame> {
        let mut delivered = Vec::new();
        let mut frames = Vec::new();
        for player in &mut self.players {
            let outgoing = player.links.drain_outgoing();
            if !player.muted {
                frames.extend(outgoing.into_iter().map(|f| (player.id, f)));
            }
        }
        for (from, frame) in frames {
            let now = self.now;
            if let Some(to) = self.players.iter_mut().find(|p| p.id == frame.to) {
                to.links.receive(from, &frame.bytes, now, &mut to.events);
            }
            delivered.push(frame);
        }
        self.now += STEP;
        let now = self.now;
        for player in &mut self.players {
            player.links.tick(now, &mut player.events);
        }
        delivered
    }

    fn run(&mut self, duration: Duration) {
        let steps = duration.as_millis() / STEP.as_millis();
        for _ in 0..steps {
            self.step();
        }
    }

    /// Connects `stranger`, who is not a player of the room, to player `id`, and runs the
    /// stranger's side of their key exchange with `room_key`: the link's keys as the stranger
    /// holds them. Frames from the player to anyone else meanwhile are dropped.
    fn exchange_keys_as_stranger(&mut self, id: u8, stranger: PeerUuid, room_key: &RoomKey) -> LinkKeys {
        let now = self.now;
        let player = self.player(id);
        player.links.peer_connected(stranger, now);
        let mut exchange = LinkKeyExchange::new(room_key, stranger, player.id);
        for _ in 0..2 {
            for frame in player.links.drain_outgoing().into_iter().filter(|f| f.to == stranger) {
                let _ = exchange.receive(&frame.bytes);
            }
            for bytes in exchange.drain_outgoing() {
                player.links.receive(stranger, &bytes, now, &mut player.events);
            }
        }
        exchange.keys().expect("the exchange finished").clone()
    }
}

fn owner() -> LinkSettings {
    LinkSettings::new(KEY.clone(), Permissions::COORDINATOR, MODEL, capabilities("owner gpu"))
}

fn player() -> LinkSettings {
    LinkSettings::new(KEY.clone(), Permissions::RUN_STAGES, MODEL, capabilities("player gpu"))
}

fn trusted(events: &[SessionEvent]) -> Vec<(PeerUuid, Permissions)> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::PeerTrusted { peer, permissions, .. } => Some((*peer, *permissions)),
            _ => None,
        })
        .collect()
}

fn rejections(events: &[SessionEvent]) -> Vec<RejectReason> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Rejected { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

fn sorted(mut v: Vec<(PeerUuid, Permissions)>) -> Vec<(PeerUuid, Permissions)> {
    v.sort_by_key(|(peer, _)| *peer);
    v
}

const A: PeerUuid = PeerUuid([1; 16]);
const B: PeerUuid = PeerUuid([2; 16]);
const C: PeerUuid = PeerUuid([3; 16]);

#[test]
fn in_an_open_room_peers_with_the_room_key_and_the_same_model_trust_each_other_with_the_permissions_they_claim() {
    let mut room = Room::new(&[(1, owner()), (2, player()), (3, player())]);
    room.run(Duration::from_millis(200));
    assert_eq!(sorted(trusted(&room.player(1).events)), vec![(B, Permissions::RUN_STAGES), (C, Permissions::RUN_STAGES)]);
    assert_eq!(sorted(trusted(&room.player(2).events)), vec![(A, Permissions::COORDINATOR), (C, Permissions::RUN_STAGES)]);
    let players: Vec<PeerUuid> = room.player(1).links.trusted_with(Permissions::RUN_STAGES).into_iter().map(|(id, _)| id).collect();
    assert_eq!(players, vec![B, C]);
    let link = room.player(2).links.link(A).expect("a link to the owner");
    assert_eq!(link.state, LinkState::Trusted);
    assert_eq!(link.hello.as_ref().map(|h| h.capabilities.adapter.as_str()), Some("owner gpu"));
    assert_eq!(room.player(1).links.rejected_total(), 0);
}

#[test]
fn a_lost_hello_is_repeated_until_the_other_side_acknowledges_it() {
    let mut room = Room::new(&[(1, owner()), (2, player())]);
    // The first hellos are lost on the way.
    room.player(1).muted = true;
    room.player(2).muted = true;
    room.step();
    room.step();
    assert!(trusted(&room.player(1).events).is_empty());
    room.player(1).muted = false;
    room.player(2).muted = false;
    room.run(Duration::from_millis(600));
    assert_eq!(trusted(&room.player(1).events), vec![(B, Permissions::RUN_STAGES)]);
    assert_eq!(trusted(&room.player(2).events), vec![(A, Permissions::COORDINATOR)]);
}

#[test]
fn a_peer_without_the_room_key_is_refused_at_its_first_authenticated_frame() {
    let mut stranger = player();
    stranger.room_key = RoomKey::from_bytes([0x4c; 32]);
    let mut room = Room::new(&[(1, owner()), (2, stranger)]);
    room.run(Duration::from_secs(6));
    // The starter's first hello reaches the answering side, which refuses it and never sends
    // anything authenticated (nothing that would let a stranger test its guess offline); the
    // starter times out.
    for (player, peer, reason) in [(1, B, HandshakeError::Timeout(Duration::from_secs(5))), (2, A, HandshakeError::WrongRoomKey)] {
        let events = &room.player(player).events;
        assert!(trusted(events).is_empty());
        let failures: Vec<&SessionEvent> = events.iter().filter(|e| matches!(e, SessionEvent::HandshakeFailed { .. })).collect();
        assert_eq!(failures, vec![&SessionEvent::HandshakeFailed { peer, reason }]);
        let refused_at = events.iter().position(|e| matches!(e, SessionEvent::HandshakeFailed { .. })).expect("refused");
        assert!(rejections(&events[..refused_at]).is_empty(), "the key exchange itself went through");
        assert!(rejections(&events[refused_at..]).iter().all(|r| *r == RejectReason::Refused), "once refused, its frames are not even authenticated");
        assert_eq!(room.player(player).links.link(peer).map(|l| l.state), Some(LinkState::Refused));
    }
}

#[test]
fn an_authenticated_frame_before_the_key_exchange_is_dropped() {
    let mut room = Room::new(&[(1, owner()), (2, player())]);
    let (now, mut events) = (room.now, Vec::new());
    let early = encode_frame(&LinkKeys::from_secret(&[1; 32]), B, A, 1, &Message::Ping { nonce: 1 });
    room.player(1).links.receive(B, &early, now, &mut events);
    assert_eq!(rejections(&events), vec![RejectReason::BeforeKeyExchange]);
    room.run(Duration::from_millis(200));
    assert_eq!(trusted(&room.player(1).events), vec![(B, Permissions::RUN_STAGES)], "the handshake is not disturbed");
}

#[test]
fn a_peer_that_begins_the_link_again_is_handshaken_anew_under_new_keys() {
    let mut room = Room::new(&[(1, owner()), (2, player())]);
    room.run(Duration::from_millis(200));
    let old_keys = room.player(2).links.link_keys(A).expect("linked").frame_tag(A, B, b"frame");
    // A's transport reports B connected again (B's side saw nothing): A starts a new exchange.
    let now = room.now;
    room.player(1).links.peer_connected(B, now);
    room.player(1).events.clear();
    room.run(Duration::from_millis(300));
    assert_eq!(room.player(2).events.iter().filter(|e| matches!(e, SessionEvent::PeerLost { .. })).count(), 1, "B lost the old link");
    assert_eq!(trusted(&room.player(1).events), vec![(B, Permissions::RUN_STAGES)]);
    assert_eq!(room.player(2).links.link(A).map(|l| l.state), Some(LinkState::Trusted));
    assert_ne!(room.player(2).links.link_keys(A).expect("linked").frame_tag(A, B, b"frame"), old_keys);
    let rejected = rejections(&room.player(1).events);
    assert!(rejected.iter().all(|r| *r == RejectReason::BeforeKeyExchange), "only what B sent under the old keys before the new start reached it: {rejected:?}");
}

#[test]
fn a_peer_running_another_model_is_refused_and_what_it_sends_next_is_rejected() {
    let mut other_model = player();
    other_model.model_hash = [8; 32];
    let mut room = Room::new(&[(1, owner()), (2, other_model)]);
    room.run(Duration::from_millis(100));
    let events = room.player(1).events.clone();
    assert!(events.contains(&SessionEvent::HandshakeFailed { peer: B, reason: HandshakeError::ModelMismatch }));
    assert!(trusted(&events).is_empty());
    // A refused peer's frames are dropped unread, whether they would authenticate or not.
    let keys = room.player(2).links.link_keys(A).expect("their key exchange went through").clone();
    let ping = encode_frame(&keys, B, A, Lane::Control.base() + 1_000, &Message::Ping { nonce: 1 });
    let forged = encode_frame(&LinkKeys::from_secret(&[0x4c; 32]), B, A, Lane::Control.base() + 1_001, &Message::Ping { nonce: 2 });
    let (now, mut events) = (room.now, Vec::new());
    room.player(1).links.receive(B, &ping, now, &mut events);
    room.player(1).links.receive(B, &forged, now, &mut events);
    assert_eq!(rejections(&events), vec![RejectReason::Refused, RejectReason::Refused]);
    assert_eq!(room.player(1).links.link(B).map(|l| l.state), Some(LinkState::Refused));
}

#[test]
fn heartbeats_measure_round_trips_and_silence_declares_a_peer_lost() {
    let mut room = Room::new(&[(1, owner()), (2, player())]);
    room.run(Duration::from_millis(500));
    let link = room.player(1).links.link(B).expect("linked");
    assert!(link.rtt.median().is_some(), "pings were answered");
    assert!(link.bytes_in > 0 && link.bytes_out > 0);
    room.player(2).muted = true;
    room.run(Duration::from_millis(1000));
    assert!(room.player(1).events.contains(&SessionEvent::PeerLost { peer: B, reason: LostReason::Silent }));
    assert!(room.player(1).links.link(B).is_none());
}

#[test]
fn a_peer_on_a_slow_path_is_given_longer_before_it_is_declared_lost() {
    let mut room = Room::new(&[(1, owner()), (2, player())]);
    room.run(Duration::from_millis(200));
    // The owner has measured 250 ms round trips to the player: silence is allowed 100 + 4 × 250 ms.
    let rtt = &mut room.player(1).links.links.get_mut(&B).expect("linked").rtt;
    (0..20).for_each(|_| rtt.record(Duration::from_millis(250)));
    room.player(2).muted = true;
    room.run(Duration::from_millis(1000));
    assert!(!room.player(1).events.iter().any(|e| matches!(e, SessionEvent::PeerLost { .. })), "lost after 1 s on a 250 ms path: {:?}", room.player(1).events);
    room.run(Duration::from_millis(300));
    assert!(room.player(1).events.contains(&SessionEvent::PeerLost { peer: B, reason: LostReason::Silent }));
}

#[test]
fn tensor_chunks_travel_on_the_bulk_lane_and_everything_else_on_the_control_lane() {
    let mut room = Room::new(&[(1, owner()), (2, player())]);
    let mut handshake = Vec::new();
    for _ in 0..10 {
        handshake.extend(room.step());
    }
    assert!(!handshake.is_empty() && handshake.iter().all(|f| f.lane == Lane::Control), "the key exchange, hellos and heartbeats");
    room.player(1).links.drain_outgoing();
    room.player(1).links.send_tensor(&to(B, 9, 1, Direction::StageInput), &stage_input(40_000), TransferDtype::F32).expect("trusted");
    let frames = room.player(1).links.drain_outgoing();
    assert_eq!(frames.iter().map(|f| f.lane).collect::<Vec<_>>(), vec![Lane::Bulk; 3], "three chunks");
}

#[test]
fn a_frame_numbered_on_the_other_lane_than_its_kind_is_rejected() {
    let mut room = Room::new(&[(1, owner()), (2, player())]);
    room.run(Duration::from_millis(200));
    let keys = room.player(2).links.link_keys(A).expect("linked").clone();
    let (now, a) = (room.now, room.player(1));
    a.events.clear();
    a.links.receive(B, &encode_frame(&keys, B, A, Lane::Bulk.base() + (1 << 40), &Message::Ping { nonce: 7 }), now, &mut a.events);
    assert_eq!(rejections(&a.events), vec![RejectReason::Frame(FrameError::WrongLane { kind: "ping" })]);
}

#[test]
fn a_hello_that_arrives_after_a_newer_one_changes_nothing() {
    let mut room = Room::new(&[(1, owner()), (2, player())]);
    // The player's first hello (not yet acknowledging the owner), held back by the network
    // while the later ones go through.
    let mut early = Vec::new();
    for _ in 0..20 {
        let player = room.player(2);
        for frame in player.links.drain_outgoing() {
            let hello = frame.bytes.get(3) == Some(&1);
            if hello && early.is_empty() { early.push(frame) } else { player.links.outgoing.push(frame) }
        }
        room.step();
    }
    assert_eq!(early.len(), 1, "the player sent a hello");
    room.run(Duration::from_millis(400));
    assert_eq!(room.player(1).links.link(B).map(|l| l.state), Some(LinkState::Trusted));
    room.player(1).events.clear();
    let now = room.now;
    let player_a = room.player(1);
    for frame in &early {
        player_a.links.receive(B, &frame.bytes, now, &mut player_a.events);
    }
    assert!(!player_a.events.iter().any(|e| matches!(e, SessionEvent::PeerLost { .. })), "a stale hello reset the link: {:?}", player_a.events);
    assert_eq!(player_a.links.link(B).map(|l| l.state), Some(LinkState::Trusted));
}

#[test]
fn a_peer_lost_for_silence_that_talks_again_is_trusted_again_after_a_new_handshake() {
    let mut room = Room::new(&[(1, owner()), (2, player())]);
    room.run(Duration::from_millis(200));
    room.player(2).muted = true;
    room.run(Duration::from_millis(1000));
    assert!(room.player(1).events.contains(&SessionEvent::PeerLost { peer: B, reason: LostReason::Silent }));
    room.player(1).events.clear();
    room.player(2).events.clear();
    room.player(2).muted = false;
    room.run(Duration::from_millis(600));
    assert_eq!(trusted(&room.player(1).events), vec![(B, Permissions::RUN_STAGES)]);
    assert_eq!(room.player(1).links.link(B).map(|l| l.state), Some(LinkState::Trusted));
    // The player never found the owner silent, but the owner dropped its link and
    // with it whatever the player sent meanwhile: the player learns so from its new hello.
    let player_events = &room.player(2).events;
    assert_eq!(player_events.iter().filter(|e| matches!(e, SessionEvent::PeerLost { .. })).collect::<Vec<_>>(), vec![&SessionEvent::PeerLost { peer: A, reason: LostReason::Reset }]);
    assert_eq!(trusted(player_events).len(), 1, "trusted again: {player_events:?}");
    assert_eq!(room.player(2).links.link(A).map(|l| l.state), Some(LinkState::Trusted));
    let replays = rejections(&room.player(1).events).into_iter().filter(|r| matches!(r, RejectReason::Frame(FrameError::Replay { .. }))).count();
    assert_eq!(replays, 0, "the player's sequence numbers carried on");
}

#[test]
fn a_flood_of_frames_beyond_the_per_second_budget_is_dropped_unread_and_reported_once() {
    let mut limited = owner();
    limited.max_frames_per_second = 50;
    let mut room = Room::new(&[(1, limited), (2, player())]);
    room.run(Duration::from_secs(1));
    let now = room.now;
    let mut events = Vec::new();
    room.player(2).links.drain_outgoing();
    for nonce in 0..200 {
        room.player(2).links.send(A, &Message::Ping { nonce });
    }
    for ping in room.player(2).links.drain_outgoing() {
        room.player(1).links.receive(B, &ping.bytes, now, &mut events);
    }
    assert_eq!(rejections(&events), vec![RejectReason::Flooding(50)]);
    let rejected = room.player(1).links.link(B).map(|l| l.rejected);
    assert!(rejected.is_some_and(|r| (140..=160).contains(&r)), "about 150 of 200 frames dropped: {rejected:?}");
    room.player(1).links.drain_outgoing();
    room.run(Duration::from_secs(1));
    assert_eq!(room.player(1).links.link(B).map(|l| l.state), Some(LinkState::Trusted), "the peer is not refused for it");
}

#[test]
fn a_replayed_frame_is_rejected_and_the_original_is_not() {
    let mut room = Room::new(&[(1, owner()), (2, player())]);
    room.run(Duration::from_millis(200));
    let captured = (0..20).find_map(|_| room.step().into_iter().find(|f| f.to == A)).expect("the player sent a frame");
    let now = room.now;
    let mut events = Vec::new();
    room.player(1).links.receive(B, &captured.bytes, now, &mut events);
    assert!(matches!(rejections(&events)[..], [RejectReason::Frame(FrameError::Replay { .. })]), "{events:?}");
}

#[test]
fn a_disconnected_peer_is_reported_lost_once() {
    let mut room = Room::new(&[(1, owner()), (2, player())]);
    room.run(Duration::from_millis(200));
    let mut events = Vec::new();
    room.player(1).links.peer_disconnected(B, &mut events);
    room.player(1).links.peer_disconnected(B, &mut events);
    assert_eq!(events, vec![SessionEvent::PeerLost { peer: B, reason: LostReason::Disconnected }]);
}

#[test]
fn a_shared_tensor_s_value_reaches_every_player_from_its_owner_only() {
    let sharing = LinkSettings { permissions: Permissions::RUN_STAGES.union(Permissions::SHARE), ..player() };
    let mut room = Room::new(&[(1, owner()), (2, sharing), (3, player())]);
    room.run(Duration::from_millis(300));
    let value = stage_input(10);
    let shared = |owner: PeerUuid, to: PeerUuid| SentTensor { shared: Some(SharedKey { owner, name: "prediction".into() }), ..self::to(to, 4, 0, Direction::Shared) };
    // B, allowed to share, shares its own tensor with A and C: both take it, whatever their
    // own permissions.
    for to in [A, C] {
        room.player(2).links.send_tensor(&shared(B, to), &value, TransferDtype::F32).expect("trusted");
    }
    room.step();
    for player in [1, 3] {
        let got: Vec<&ReceivedTensor> = room.player(player).events.iter().filter_map(|e| if let SessionEvent::Tensor(t) = e { Some(t) } else { None }).collect();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].direction, got[0].header.shared.clone(), &got[0].shared.tensor), (Direction::Shared, Some(SharedKey { owner: B, name: "prediction".into() }), &value));
    }
    // B sends a value of C's tensor: A refuses it, naming the tensor.
    room.player(1).events.clear();
    room.player(2).links.send_tensor(&shared(C, A), &value, TransferDtype::F32).expect("trusted");
    room.step();
    assert_eq!(rejections(&room.player(1).events), vec![RejectReason::NotOwner("prediction".into())]);
    assert!(!room.player(1).events.iter().any(|e| matches!(e, SessionEvent::Tensor(_))));
    // A key on a stage's tensor, or none on a shared one, is not sent at all.
    let keyed_stage = SentTensor { shared: Some(SharedKey { owner: B, name: "x".into() }), ..to(A, 4, 1, Direction::StageOutput) };
    assert_eq!(room.player(2).links.send_tensor(&keyed_stage, &value, TransferDtype::F32), Err(SendError::InvalidSharedKey));
    assert_eq!(room.player(2).links.send_tensor(&to(A, 4, 0, Direction::Shared), &value, TransferDtype::F32), Err(SendError::InvalidSharedKey));
}

/// A tensor for `peer`: request `request`'s `stage`, not chained.
fn to(peer: PeerUuid, request: u64, stage: u16, direction: Direction) -> SentTensor {
    SentTensor { peer, request, stage, direction, onward: None, trace: Vec::new(), shared: None, collective: None }
}

fn stage_input(values: usize) -> Tensor {
    Tensor::new(vec![1, values], (0..values).map(|i| i as f32 * 0.5).collect()).expect("shape fits")
}

#[test]
fn a_stage_input_reaches_a_player_whole_and_a_player_may_not_send_one() {
    let mut room = Room::new(&[(1, owner()), (2, player())]);
    room.run(Duration::from_millis(200));
    let tensor = stage_input(40_000);
    let bytes = room.player(1).links.send_tensor(&to(B, 9, 1, Direction::StageInput), &tensor, TransferDtype::F32).expect("trusted");
    assert!(bytes > 160_000, "{bytes} bytes for 160 kB of values");
    room.step();
    let received: Vec<&ReceivedTensor> = room.player(2).events.iter().filter_map(|e| if let SessionEvent::Tensor(t) = e { Some(t) } else { None }).collect();
    assert_eq!(received.len(), 1);
    assert_eq!((received[0].from, received[0].shared.request, received[0].shared.stage), (A, 9, 1));
    assert_eq!(received[0].shared.tensor, tensor);

    room.player(2).links.send_tensor(&to(A, 1, 1, Direction::StageInput), &stage_input(10), TransferDtype::F32).expect("queued");
    room.step();
    assert!(rejections(&room.player(1).events).contains(&RejectReason::NotPermitted("tensor")));
}

#[test]
fn a_stage_input_that_arrives_while_its_sender_is_not_trusted_is_dropped_and_its_owner_told_once() {
    let mut room = Room::new(&[(1, owner()), (2, player())]);
    room.run(Duration::from_millis(200));
    // The owner goes quiet long enough for the player to drop its link, not long enough for
    // the owner to drop the player's.
    room.player(1).muted = true;
    room.run(Duration::from_millis(1000));
    assert!(room.player(2).events.contains(&SessionEvent::PeerLost { peer: A, reason: LostReason::Silent }));
    assert_eq!(room.player(1).links.link(B).map(|l| l.state), Some(LinkState::Trusted));
    room.player(1).muted = false;
    room.player(1).events.clear();
    // Three chunks, sent before the owner hears the player's new hello.
    room.player(1).links.send_tensor(&to(B, 9, 1, Direction::StageInput), &stage_input(40_000), TransferDtype::F32).expect("trusted on the owner's side");
    room.step();
    let untrusted = rejections(&room.player(2).events).into_iter().filter(|r| *r == RejectReason::Untrusted("tensor")).count();
    assert_eq!(untrusted, 3, "every chunk dropped: {:?}", room.player(2).events);
    room.step();
    let dropped: Vec<&SessionEvent> = room.player(1).events.iter().filter(|e| matches!(e, SessionEvent::StageInputDropped { .. })).collect();
    assert_eq!(dropped, vec![&SessionEvent::StageInputDropped { peer: B, request: 9, stage: 1 }], "told once, for the whole tensor");
}

#[test]
fn a_chained_input_whose_next_peer_is_unreachable_goes_back_to_its_owner_as_the_stage_before_s_output() {
    let timing = StageTiming { stage: 1, run_us: 250, gpu_us: None, network_us: Some(40) };
    let forward = SentTensor { onward: Some(Onward { owner: A, route: vec![], ticket: None }), trace: vec![timing], ..to(C, 4, 2, Direction::StageInput) };
    assert_eq!(forward.back_to_owner(), Some(SentTensor { trace: vec![timing], ..to(A, 4, 1, Direction::StageOutput) }));
    assert_eq!(to(C, 4, 2, Direction::StageInput).back_to_owner(), None, "not chained");
}

#[test]
fn a_tensor_looped_back_to_its_sender_comes_in_rounded_as_the_wire_would_round_it() {
    let room = Room::new(&[(2, player())]);
    let value = stage_input(64);
    let chained = SentTensor { onward: Some(Onward { owner: A, route: vec![], ticket: None }), ..to(B, 4, 2, Direction::StageInput) };
    let received = room.players[0].links.loop_back(&chained, &value, TransferDtype::Int8).expect("fits the wire");
    let (bytes, params) = encode_values(value.data(), TransferDtype::Int8);
    let rounded = decode_values(&bytes, value.len(), TransferDtype::Int8, params).unwrap();
    assert_eq!(received.shared.tensor.data(), &rounded[..]);
    assert_ne!(received.shared.tensor, value, "int8 rounds");
    assert_eq!((received.from, received.direction, received.header.onward), (B, Direction::StageInput, chained.onward));
}

#[test]
fn a_tensor_for_a_peer_that_is_not_trusted_is_refused_before_it_is_sent() {
    let mut room = Room::new(&[(1, owner()), (2, player())]);
    let sent = room.player(1).links.send_tensor(&to(B, 0, 1, Direction::StageInput), &stage_input(4), TransferDtype::Int8);
    assert_eq!(sent, Err(SendError::NotTrusted));
}

#[cfg(feature = "fault-injection")]
#[test]
fn a_tensor_frame_corrupted_in_transit_is_rejected() {
    let mut room = Room::new(&[(1, owner()), (2, player())]);
    room.run(Duration::from_millis(200));
    room.player(1).links.corrupt_next_tensor_frame();
    room.player(1).links.send_tensor(&to(B, 3, 1, Direction::StageInput), &stage_input(8), TransferDtype::F16).expect("trusted");
    room.step();
    assert!(matches!(rejections(&room.player(2).events)[..], [RejectReason::Frame(_)]), "{:?}", room.player(2).events);
    assert!(!room.player(2).events.iter().any(|e| matches!(e, SessionEvent::Tensor(_))));
}

#[test]
fn a_reset_reports_every_peer_lost_and_forgets_them() {
    let mut room = Room::new(&[(1, owner()), (2, player()), (3, player())]);
    room.run(Duration::from_millis(200));
    let mut events = Vec::new();
    room.player(1).links.reset(&mut events);
    assert_eq!(
        events,
        vec![SessionEvent::PeerLost { peer: B, reason: LostReason::Disconnected }, SessionEvent::PeerLost { peer: C, reason: LostReason::Disconnected }]
    );
    assert_eq!(room.player(1).links.links().count(), 0);
    assert_eq!(room.player(1).links.own_id(), None);
}

#[test]
fn the_transport_is_rebuilt_only_while_expected_peers_are_missing() {
    let start = Instant::now();
    let mut policy = ReconnectPolicy::new(2, Duration::from_secs(8), start);
    assert!(!policy.rebuild_due(&[], 0, start + Duration::from_secs(7)));
    assert!(policy.rebuild_due(&[], 1, start + Duration::from_secs(9)));
    assert_eq!(policy.attempts(), 1);
    // The wait starts again after a rebuild, and a newly trusted peer also restarts it.
    let trusted = [SessionEvent::PeerTrusted { peer: B, capabilities: capabilities("gpu"), permissions: Permissions::RUN_STAGES }];
    assert!(!policy.rebuild_due(&trusted, 1, start + Duration::from_secs(16)));
    assert!(!policy.rebuild_due(&[], 1, start + Duration::from_secs(23)));
    assert!(policy.rebuild_due(&[], 1, start + Duration::from_secs(25)));
    // Once every expected peer was there, a missing one is never a reason to rebuild.
    assert!(!policy.rebuild_due(&[], 2, start + Duration::from_secs(26)));
    assert!(!policy.rebuild_due(&[], 1, start + Duration::from_secs(60)));
    assert_eq!(policy.attempts(), 2);
}

/// A player that holds the room key and turns hostile: it signs and seals whatever it likes.
struct Hostile {
    keys: LinkKeys,
    cipher: TensorCipher,
    sequence: u64,
}

impl Hostile {
    /// Player B of `room` (player 2), talking to the owner A (player 1).
    fn in_room(room: &mut Room) -> Self {
        let (b, a) = (room.player(2).links.session_nonce(), room.player(1).links.session_nonce());
        let keys = room.player(2).links.link_keys(A).expect("B's link to A has its keys").clone();
        Self { cipher: keys.tensor_cipher(B, A, &b, &a), keys, sequence: 1 << 40 }
    }

    fn frame(&mut self, message: &Message) -> Vec<u8> {
        self.sequence += 1;
        encode_frame(&self.keys, B, A, message.lane().base() + self.sequence, message)
    }

    fn output(&mut self, shape: Vec<u32>, total_bytes: u32, payload: Vec<u8>) -> Vec<u8> {
        let header = TensorHeader {
            request: 3,
            stage: 1,
            direction: Direction::StageOutput,
            dtype: TransferDtype::F32,
            shape,
            params: crate::tensor::quant::QuantParams::NONE,
            total_bytes,
            onward: None,
            trace: Vec::new(),
            shared: None,
            collective: None,
        };
        let payload = self.cipher.seal(self.sequence + 1, &payload);
        self.frame(&Message::Tensor(TensorChunk { header, index: 0, count: 1, payload }))
    }
}

#[test]
fn a_key_holding_player_that_sends_nans_oversize_headers_garbage_replays_and_stolen_tokens_is_rejected_each_time() {
    let mut room = Room::new(&[(1, owner()), (2, player()), (3, player())]);
    room.run(Duration::from_millis(300));
    let thief = PeerUuid([4; 16]);
    let mut hostile = Hostile::in_room(&mut room);
    let now = room.now;
    let nan = hostile.output(vec![1, 2], 8, [1.0f32, f32::NAN].iter().flat_map(|v| v.to_le_bytes()).collect());
    let oversize = hostile.output(vec![1 << 20, 1 << 20], u32::MAX, Vec::new());
    let garbage = {
        hostile.sequence += 1;
        seal_frame(&hostile.keys, B, A, hostile.sequence, 4, &[0xff; 40])
    };
    let stolen = {
        // Another peer presents B's hello: B's identity, its proof over A's nonce.
        let hello = room.player(1).links.link(B).and_then(|l| l.hello.clone()).expect("B's hello");
        hostile.sequence += 1;
        Message::Hello(Hello { capabilities: capabilities("thief"), ..hello })
    };
    let mut events = Vec::new();
    let thief_keys = room.exchange_keys_as_stranger(1, thief, &KEY);
    let stolen = encode_frame(&thief_keys, thief, A, Lane::Control.base() + 1, &stolen);
    let links = &mut room.player(1).links;
    links.receive(B, &nan, now, &mut events);
    links.receive(B, &oversize, now, &mut events);
    links.receive(B, &garbage, now, &mut events);
    links.receive(B, &nan, now, &mut events);
    links.receive(thief, &stolen, now, &mut events);
    assert!(matches!(
        rejections(&events)[..],
        [
            RejectReason::Chunk(ChunkError::NonFinite { index: 1 }),
            RejectReason::Chunk(ChunkError::Oversize { .. }),
            RejectReason::Frame(FrameError::Malformed { .. }),
            RejectReason::Frame(FrameError::Replay { .. }),
        ]
    ), "{events:?}");
    // Only the answers whose frames verified name the request they lose (for it alone to be
    // run again); garbage and a replay name nothing.
    let lost: Vec<Option<u64>> = events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Rejected { lost_output, .. } => Some(*lost_output),
            _ => None,
        })
        .collect();
    assert_eq!(lost, [Some(3), Some(3), None, None]);
    assert!(events.contains(&SessionEvent::HandshakeFailed { peer: thief, reason: HandshakeError::Token(TokenError::BadProof) }));
    assert!(!events.iter().any(|e| matches!(e, SessionEvent::Tensor(_))), "nothing it sent was taken");

    // Nothing is left broken: an honest player's tensor still arrives whole.
    room.player(1).events.clear();
    room.player(3).links.send_tensor(&to(A, 4, 1, Direction::StageOutput), &stage_input(1000), TransferDtype::F32).expect("trusted");
    room.step();
    assert!(room.player(1).events.iter().any(|e| matches!(e, SessionEvent::Tensor(t) if t.shared.request == 4)));
}

#[test]
fn tensor_payloads_are_sealed_on_the_wire_and_a_chunk_sealed_for_another_session_does_not_open() {
    let mut room = Room::new(&[(1, owner()), (2, player())]);
    room.run(Duration::from_millis(300));
    let values = Tensor::new(vec![1, 64], vec![0.75; 64]).unwrap();
    room.player(1).links.send_tensor(&to(B, 1, 1, Direction::StageInput), &values, TransferDtype::F32).expect("trusted");
    let frames = room.step();
    let plain: Vec<u8> = 0.75f32.to_le_bytes().repeat(8);
    assert!(frames.iter().all(|f| !f.bytes.windows(plain.len()).any(|w| w == plain)), "the values are not readable on the wire");
    assert!(room.player(2).events.iter().any(|e| matches!(e, SessionEvent::Tensor(t) if t.shared.tensor == values)));

    // The same player, its chunk sealed with a nonce of an earlier session.
    let mut hostile = Hostile::in_room(&mut room);
    hostile.cipher = hostile.keys.tensor_cipher(B, A, &[0; 16], &room.player(1).links.session_nonce());
    let old_session = hostile.output(vec![1, 2], 8, [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect());
    let (now, mut events) = (room.now, Vec::new());
    room.player(1).links.receive(B, &old_session, now, &mut events);
    assert_eq!(rejections(&events), vec![RejectReason::Unsealed(Unsealed)]);
    // Its frame verified, so the header is the player's own: the one request to run again.
    assert!(matches!(events[..], [SessionEvent::Rejected { peer: B, lost_output: Some(3), .. }]), "{events:?}");
}

#[path = "links_authority_tests.rs"]
mod authority;
