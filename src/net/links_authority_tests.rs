//! Owned rooms: the owner's tokens, their limits, expiry and renewal, revocation, and tokens
//! that are forged, expired or replayed.

use super::*;
use crate::net::{CapabilityToken, OwnerKey, PlayerIdentity, RoomAuthority, RoomOwner, TokenHolder, CLOCK_SKEW_MS};

const OWNER_SEED: [u8; 32] = [0x0e; 32];
const THIEF: PeerUuid = PeerUuid([4; 16]);

fn owner_key() -> OwnerKey {
    OwnerKey::from_secret(&crate::secret::SecretKey::from_bytes(OWNER_SEED))
}

/// `settings` as the room's owner, granting at most `grantable`, tokens valid for `lifetime`.
fn as_owner(mut settings: LinkSettings, grantable: Permissions, lifetime: Duration) -> LinkSettings {
    settings.authority = RoomAuthority::Owner(RoomOwner { key: owner_key(), grantable, token_lifetime: lifetime });
    settings
}

/// `settings` as a member of the room owned by [`owner_key`].
fn as_member(mut settings: LinkSettings) -> LinkSettings {
    settings.authority = RoomAuthority::Member(owner_key().public());
    settings
}

/// A owner owning the room (A) and two member players (B, C).
fn owned_room(lifetime: Duration) -> Room {
    Room::new(&[(1, as_owner(owner(), Permissions::COORDINATOR, lifetime)), (2, as_member(player())), (3, as_member(player()))])
}

fn unix_ms() -> u64 {
    web_time::SystemTime::now().duration_since(web_time::UNIX_EPOCH).expect("after 1970").as_millis() as u64
}

fn lost(events: &[SessionEvent]) -> Vec<(PeerUuid, LostReason)> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::PeerLost { peer, reason } => Some((*peer, *reason)),
            _ => None,
        })
        .collect()
}

/// A hello to player B (player 2) from a key holder that is not in the room's good books:
/// a valid proof of its own identity, with `token`.
fn intruder_hello(room: &mut Room, intruder: &PlayerIdentity, token: Option<CapabilityToken>) -> Vec<u8> {
    let b_nonce = room.player(2).links.session_nonce();
    let keys = room.exchange_keys_as_stranger(2, THIEF, &KEY);
    let hello = Hello {
        model_hash: MODEL,
        capabilities: capabilities("intruder"),
        permissions: Permissions::COORDINATOR,
        identity: intruder.public(),
        token,
        proof: Some(intruder.prove(THIEF, B, &b_nonce, &keys.binding())),
        grant: None,
        acknowledged: true,
        session_nonce: [9; 16],
    };
    encode_frame(&keys, THIEF, B, Lane::Control.base() + 1, &Message::Hello(hello))
}

/// What player B makes of `frame` from the intruder.
fn handshake_at_b(room: &mut Room, frame: &[u8]) -> Vec<SessionEvent> {
    let (now, mut events) = (room.now, Vec::new());
    let b = &mut room.player(2).links;
    b.receive(THIEF, frame, now, &mut events);
    events
}

#[test]
fn in_an_owned_room_members_trust_each_other_with_the_permissions_the_owner_granted() {
    let mut room = owned_room(Duration::from_secs(600));
    room.run(Duration::from_millis(400));
    assert_eq!(sorted(trusted(&room.player(1).events)), vec![(B, Permissions::RUN_STAGES), (C, Permissions::RUN_STAGES)]);
    assert_eq!(sorted(trusted(&room.player(2).events)), vec![(A, Permissions::COORDINATOR), (C, Permissions::RUN_STAGES)]);
    assert_eq!(sorted(trusted(&room.player(3).events)), vec![(A, Permissions::COORDINATOR), (B, Permissions::RUN_STAGES)]);
    let c_at_b = room.player(2).links.link(C).and_then(|l| l.hello.clone()).expect("C's hello");
    let token = c_at_b.token.expect("C presents the owner's token");
    assert_eq!((token.holder.peer, token.holder.identity, token.permissions), (C, c_at_b.identity, Permissions::RUN_STAGES));
    assert_eq!(room.players.iter().map(|p| p.links.rejected_total()).sum::<u64>(), 0);
}

#[test]
fn the_owner_grants_no_more_than_it_allows_whatever_a_member_asks() {
    let mut greedy = as_member(player());
    greedy.permissions = Permissions::COORDINATOR;
    let mut room = Room::new(&[(1, as_owner(owner(), Permissions::RUN_STAGES, Duration::from_secs(600))), (2, greedy), (3, as_member(player()))]);
    room.run(Duration::from_millis(400));
    assert!(trusted(&room.player(1).events).contains(&(B, Permissions::RUN_STAGES)));
    assert!(trusted(&room.player(3).events).contains(&(B, Permissions::RUN_STAGES)), "C believes B's token, not its claim");
    // So C refuses a stage input from B: B may not submit requests.
    room.player(2).links.send_tensor(&to(C, 1, 1, Direction::StageInput), &stage_input(8), TransferDtype::F32).expect("trusted");
    room.step();
    assert_eq!(rejections(&room.player(3).events), vec![RejectReason::NotPermitted("tensor")]);
}

#[test]
fn a_member_never_trusts_a_peer_without_a_token_and_refuses_forged_expired_and_replayed_ones() {
    let mut room = owned_room(Duration::from_secs(600));
    room.run(Duration::from_millis(400));
    let intruder = PlayerIdentity::generate().unwrap();
    let holder = TokenHolder { identity: intruder.public(), peer: THIEF, session_nonce: [9; 16] };
    let in_an_hour = unix_ms() + 3_600_000;

    let no_token = intruder_hello(&mut room, &intruder, None);
    let events = handshake_at_b(&mut room, &no_token);
    assert!(events.is_empty(), "waits for a token: {events:?}");
    assert_eq!(room.player(2).links.link(THIEF).map(|l| l.state), Some(LinkState::Handshaking));

    let cases = [
        ("forged", OwnerKey::generate().unwrap().issue(holder, Permissions::COORDINATOR, in_an_hour), TokenError::Forged),
        ("replayed from another session", owner_key().issue(TokenHolder { session_nonce: [8; 16], ..holder }, Permissions::COORDINATOR, in_an_hour), TokenError::NotTheHolder),
    ];
    for (case, token, error) in cases {
        let mut room = owned_room(Duration::from_secs(600));
        room.run(Duration::from_millis(400));
        let frame = intruder_hello(&mut room, &intruder, Some(token));
        let events = handshake_at_b(&mut room, &frame);
        assert_eq!(events, vec![SessionEvent::HandshakeFailed { peer: THIEF, reason: HandshakeError::Token(error) }], "{case}");
    }
    let mut room = owned_room(Duration::from_secs(600));
    room.run(Duration::from_millis(400));
    let expired = owner_key().issue(holder, Permissions::COORDINATOR, unix_ms() - CLOCK_SKEW_MS - 1_000);
    let frame = intruder_hello(&mut room, &intruder, Some(expired));
    let events = handshake_at_b(&mut room, &frame);
    assert!(matches!(events[..], [SessionEvent::HandshakeFailed { peer: THIEF, reason: HandshakeError::Token(TokenError::Expired { .. }) }]), "{events:?}");
}

#[test]
fn the_owner_renews_tokens_in_time_and_without_it_a_members_token_expires() {
    let mut room = owned_room(Duration::from_secs(2));
    room.run(Duration::from_secs(5));
    for player in &room.players {
        assert!(lost(&player.events).is_empty(), "renewed tokens keep everyone: {:?}", player.events);
    }
    // The owner goes quiet: its members lose it, then each other once their tokens run out.
    room.player(1).muted = true;
    room.run(Duration::from_millis(2_500 + CLOCK_SKEW_MS));
    assert_eq!(lost(&room.player(2).events), vec![(A, LostReason::Silent), (C, LostReason::TokenExpired)]);
    assert_eq!(lost(&room.player(3).events), vec![(A, LostReason::Silent), (B, LostReason::TokenExpired)]);
}

#[test]
fn a_revoked_player_is_lost_to_everyone_and_its_frames_are_dropped_unread() {
    let mut room = owned_room(Duration::from_secs(600));
    room.run(Duration::from_millis(400));
    let mut events = Vec::new();
    assert_eq!(room.player(2).links.revoke(C, &mut events), Err(RevokeError::NotOwner));
    assert_eq!(room.player(1).links.revoke(THIEF, &mut events), Err(RevokeError::UnknownPeer));
    room.player(1).links.revoke(C, &mut events).expect("the owner revokes");
    assert_eq!(lost(&events), vec![(C, LostReason::Revoked)]);
    room.step();
    assert_eq!(lost(&room.player(2).events), vec![(C, LostReason::Revoked)], "the owner told B");
    // What C sends now is not even authenticated, at the owner or at B.
    room.player(3).events.clear();
    room.player(1).events.clear();
    room.player(2).events.clear();
    room.run(Duration::from_millis(200));
    for (player, id) in [(1, C), (2, C)] {
        let rejected = rejections(&room.player(player).events);
        assert!(!rejected.is_empty() && rejected.iter().all(|r| *r == RejectReason::Refused), "{id}: {rejected:?}");
        assert!(trusted(&room.player(player).events).is_empty());
    }
    assert_eq!(room.player(2).links.link(A).map(|l| l.state), Some(LinkState::Trusted), "the rest of the room goes on");
}

#[test]
fn only_the_owner_may_revoke_a_member() {
    let mut room = owned_room(Duration::from_secs(600));
    room.run(Duration::from_millis(400));
    let c_identity = room.player(2).links.link(C).and_then(|l| l.hello.as_ref()).map(|h| h.identity).expect("C's hello");
    let keys = room.player(2).links.link_keys(A).expect("linked").clone();
    let forged = encode_frame(&keys, B, A, Lane::Control.base() + (1 << 40), &Message::Revoke { peer: C, identity: c_identity });
    let (now, mut events) = (room.now, Vec::new());
    room.player(1).links.receive(B, &forged, now, &mut events);
    assert_eq!(rejections(&events), vec![RejectReason::NotPermitted("revoke")]);
    assert_eq!(room.player(1).links.link(C).map(|l| l.state), Some(LinkState::Trusted));
}

#[test]
fn a_member_whose_transport_is_rebuilt_under_a_new_peer_id_is_granted_a_new_token() {
    let mut room = owned_room(Duration::from_secs(600));
    room.run(Duration::from_millis(400));
    let (now, mut events) = (room.now, Vec::new());
    let renamed = PeerUuid([5; 16]);
    let b = room.player(2);
    b.links.reset(&mut events);
    b.links.set_own_id(renamed);
    b.id = renamed;
    b.events.clear();
    for other in [A, C] {
        b.links.peer_connected(other, now);
    }
    for other in [1, 3] {
        room.player(other).links.peer_connected(renamed, now);
    }
    room.run(Duration::from_millis(400));
    assert!(trusted(&room.player(3).events).contains(&(renamed, Permissions::RUN_STAGES)), "{:?}", room.player(3).events);
    assert_eq!(sorted(trusted(&room.player(5).events)), vec![(A, Permissions::COORDINATOR), (C, Permissions::RUN_STAGES)]);
}

#[path = "links_integrity_tests.rs"]
mod integrity;
