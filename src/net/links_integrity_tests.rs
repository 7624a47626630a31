//! A malicious member, or a stranger, against the link state machine: guessing the room key,
//! restarting links, replaying across a re-created link, relaying handshakes with the key,
//! shedding a revocation, and sharing without the permission to.

use super::*;
use crate::net::codec::decode_frame;
use crate::net::{RouteTicket, TicketError};

/// A stranger with a lower id than every player: it starts its key exchanges.
const STRANGER: PeerUuid = PeerUuid([0; 16]);

fn guess(n: u8) -> RoomKey {
    RoomKey::from_bytes([n; 32])
}

/// What `player` sends `to`, after `ticks` housekeeping steps.
fn sent_to(room: &mut Room, player: u8, to: PeerUuid, ticks: usize) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for _ in 0..ticks {
        room.now += STEP;
        let now = room.now;
        let p = room.player(player);
        p.links.tick(now, &mut p.events);
        frames.extend(p.links.drain_outgoing().into_iter().filter(|f| f.to == to).map(|f| f.bytes));
    }
    frames
}

#[test]
fn a_stranger_gets_one_guess_per_connection_and_nothing_to_test_it_offline() {
    let mut room = Room::new(&[(1, owner()), (2, player())]);
    room.run(Duration::from_millis(200));
    let now = room.now;
    room.player(2).links.peer_connected(STRANGER, now);
    let mut first = LinkKeyExchange::new(&guess(1), STRANGER, B);
    for start in first.drain_outgoing() {
        let b = room.player(2);
        b.links.receive(STRANGER, &start, now, &mut b.events);
    }
    // B answers the start, and then, however long the stranger waits, nothing authenticated:
    // no frame it could check its guess against.
    let answered = sent_to(&mut room, 2, STRANGER, 100);
    assert!(!answered.is_empty() && answered.iter().all(|f| is_exchange_frame(f)), "only the exchange's answer, no hello under its keys");
    for frame in &answered {
        let _ = first.receive(frame);
    }
    // A second start on the same connection (a second guess) is not answered.
    let mut second = LinkKeyExchange::new(&guess(2), STRANGER, B);
    room.player(2).events.clear();
    for start in second.drain_outgoing() {
        let (now, b) = (room.now, room.player(2));
        b.links.receive(STRANGER, &start, now, &mut b.events);
    }
    assert_eq!(rejections(&room.player(2).events), vec![RejectReason::UnprovenRestart]);
    assert!(sent_to(&mut room, 2, STRANGER, 5).iter().all(|f| is_exchange_frame(f)));
    // The first guess, tried online, fails, and the link is refused for the connection.
    let keys = first.keys().expect("the stranger finished its exchange").clone();
    let (now, b) = (room.now, room.player(2));
    b.links.receive(STRANGER, &encode_frame(&keys, STRANGER, B, Lane::Control.base() + 1, &Message::Ping { nonce: 0 }), now, &mut b.events);
    assert!(b.events.contains(&SessionEvent::HandshakeFailed { peer: STRANGER, reason: HandshakeError::WrongRoomKey }));
    assert_eq!(b.links.link(STRANGER).map(|l| l.state), Some(LinkState::Refused));
}

#[test]
fn a_start_injected_on_a_trusted_link_changes_nothing_until_the_peer_proves_the_new_keys() {
    let mut room = Room::new(&[(1, owner()), (2, player())]);
    room.run(Duration::from_millis(300));
    for key in [guess(1), KEY.clone()] {
        // A signaling server in the middle sends B a new start in A's name (with or without the
        // room key: it cannot finish the exchange as A, who never sent it).
        let injected = LinkKeyExchange::new(&key, A, B).drain_outgoing().remove(0);
        let (now, b) = (room.now, room.player(2));
        b.links.receive(A, &injected, now, &mut b.events);
        room.run(Duration::from_millis(1_500));
    }
    for (player, peer) in [(1, B), (2, A)] {
        let events = &room.player(player).events;
        assert!(!events.iter().any(|e| matches!(e, SessionEvent::PeerLost { .. } | SessionEvent::HandshakeFailed { .. })), "{events:?}");
        assert_eq!(room.player(player).links.link(peer).map(|l| l.state), Some(LinkState::Trusted));
    }
}

#[test]
fn an_injector_gets_a_restart_answered_once_a_second_and_a_few_times_in_all_never_a_guess_a_second() {
    let mut room = Room::new(&[(1, owner()), (2, player())]);
    room.run(Duration::from_millis(300));
    let mut answered = Vec::new();
    for attempt in 0..6u8 {
        // Two starts in one step: the second is always too soon.
        let mut this_second = 0;
        for key in [guess(attempt), guess(attempt + 100)] {
            let start = LinkKeyExchange::new(&key, A, B).drain_outgoing().remove(0);
            let (now, b) = (room.now, room.player(2));
            b.events.clear();
            b.links.receive(A, &start, now, &mut b.events);
            this_second += usize::from(rejections(&b.events).is_empty());
        }
        answered.push(this_second);
        room.run(RESTART_INTERVAL);
    }
    assert_eq!(answered, [1, 1, 1, 0, 0, 0], "one a second, and no more than {MAX_UNPROVEN_RESTARTS} with none adopted");
    assert_eq!(room.player(2).links.link(A).map(|l| l.state), Some(LinkState::Trusted), "the link went on meanwhile");
}

#[test]
fn frames_recorded_before_a_link_was_re_created_do_not_replay() {
    let sharing = LinkSettings { permissions: Permissions::RUN_STAGES.union(Permissions::SHARE), ..player() };
    let mut room = Room::new(&[(1, owner()), (2, sharing)]);
    // Someone on the path records everything B sends A: its hellos, heartbeats, a shared value.
    let mut recorded = Vec::new();
    for _ in 0..15 {
        recorded.extend(room.step().into_iter().filter(|f| f.to == A).map(|f| f.bytes));
    }
    let shared = SentTensor { shared: Some(SharedKey { owner: B, name: "score".into() }), ..to(A, 0, 0, Direction::Shared) };
    room.player(2).links.send_tensor(&shared, &stage_input(4), TransferDtype::F32).expect("trusted");
    recorded.extend(room.step().into_iter().filter(|f| f.to == A).map(|f| f.bytes));
    // B vanishes; A drops its link for silence. The recording is played to A again.
    room.player(2).muted = true;
    room.run(Duration::from_millis(1_000));
    assert!(room.player(1).links.link(B).is_none(), "dropped for silence");
    room.player(1).events.clear();
    for frame in &recorded {
        let (now, a) = (room.now, room.player(1));
        a.links.receive(B, frame, now, &mut a.events);
    }
    let events = &room.player(1).events;
    assert!(!events.iter().any(|e| matches!(e, SessionEvent::Tensor(_) | SessionEvent::PeerTrusted { .. })), "the recording was taken for B: {events:?}");
    assert!(!events.is_empty() && rejections(events).iter().all(|r| matches!(r, RejectReason::Frame(FrameError::Replay { .. }))), "{events:?}");
}

/// Relays every frame between `a` and `b` through a key holder in the middle, which agreed its
/// own keys with each side (posing as B to A and as A to B) and re-authenticates each frame.
fn relay_through_a_key_holder(a: &mut Links, b: &mut Links, now: &mut Instant, events: (&mut Vec<SessionEvent>, &mut Vec<SessionEvent>)) {
    let mut as_b = LinkKeyExchange::new(&KEY, B, A);
    let mut as_a = LinkKeyExchange::new(&KEY, A, B);
    let mut sequence = 0;
    for _ in 0..100 {
        let frames: Vec<(PeerUuid, Vec<u8>)> = a.drain_outgoing().into_iter().map(|f| (A, f.bytes)).chain(b.drain_outgoing().into_iter().map(|f| (B, f.bytes))).collect();
        for (from, frame) in frames {
            let (to, (inward, outward)) = if from == A { (B, (&mut as_b, &mut as_a)) } else { (A, (&mut as_a, &mut as_b)) };
            if is_exchange_frame(&frame) {
                let _ = inward.receive(&frame);
                continue;
            }
            let (Some(inward_keys), Some(outward_keys)) = (inward.keys(), outward.keys()) else { continue };
            let Ok((_, message)) = decode_frame(inward_keys, from, to, &frame) else { continue };
            sequence += 1;
            let relayed = encode_frame(outward_keys, from, to, message.lane().base() + sequence, &message);
            if to == B { b.receive(A, &relayed, *now, events.1) } else { a.receive(B, &relayed, *now, events.0) }
        }
        for frame in as_b.drain_outgoing() {
            a.receive(B, &frame, *now, events.0);
        }
        for frame in as_a.drain_outgoing() {
            b.receive(A, &frame, *now, events.1);
        }
        *now += STEP;
        a.tick(*now, events.0);
        b.tick(*now, events.1);
    }
}

#[test]
fn a_key_holder_in_the_middle_cannot_relay_two_players_handshakes() {
    let mut now = Instant::now();
    let (mut a, mut b) = (Links::new(owner(), now), Links::new(player(), now));
    a.set_own_id(A);
    b.set_own_id(B);
    a.peer_connected(B, now);
    b.peer_connected(A, now);
    let (mut a_events, mut b_events) = (Vec::new(), Vec::new());
    relay_through_a_key_holder(&mut a, &mut b, &mut now, (&mut a_events, &mut b_events));
    // Each side's proof is bound to the keys it agreed with the relay, not to the keys the
    // relay agreed with the other side: the first proof relayed (B's, to A, the starter) does
    // not verify, A refuses B and never proves itself to it, and neither trusts the other.
    assert!(trusted(&a_events).is_empty() && trusted(&b_events).is_empty(), "{a_events:?} {b_events:?}");
    assert_eq!(a_events.first(), Some(&SessionEvent::HandshakeFailed { peer: B, reason: HandshakeError::Token(TokenError::BadProof) }));
}

#[test]
fn a_member_cannot_shed_a_revocation_by_greeting_the_owner_under_a_fresh_identity() {
    let mut room = owned_room(Duration::from_secs(600));
    room.run(Duration::from_millis(400));
    // B greets the owner again under a fresh identity, with a valid proof of it.
    let fresh = PlayerIdentity::generate().unwrap();
    let keys = room.player(2).links.link_keys(A).expect("linked").clone();
    let hello = Hello {
        model_hash: MODEL,
        capabilities: capabilities("player gpu"),
        permissions: Permissions::RUN_STAGES,
        identity: fresh.public(),
        token: None,
        proof: Some(fresh.prove(B, A, &room.player(1).links.session_nonce(), &keys.binding())),
        grant: None,
        acknowledged: true,
        session_nonce: room.player(2).links.session_nonce(),
    };
    let frame = encode_frame(&keys, B, A, Lane::Control.base() + (1 << 40), &Message::Hello(hello));
    let (now, a) = (room.now, room.player(1));
    a.events.clear();
    a.links.receive(B, &frame, now, &mut a.events);
    assert_eq!(rejections(&a.events), vec![RejectReason::Token(TokenError::IdentityChanged)]);
    // The owner revokes B: the identity the members know is the one revoked.
    let (mut events, now) = (Vec::new(), room.now);
    room.player(1).links.revoke(B, &mut events).expect("the owner");
    room.player(3).events.clear();
    room.run(Duration::from_millis(200));
    assert_eq!(lost(&room.player(3).events), vec![(B, LostReason::Revoked)]);
    let _ = now;
}

#[test]
fn a_member_who_joins_after_a_revocation_is_told_of_it_and_refuses_the_revoked_player() {
    let mut room = owned_room(Duration::from_secs(600));
    room.run(Duration::from_millis(400));
    let mut events = Vec::new();
    room.player(1).links.revoke(C, &mut events).expect("the owner");
    room.run(Duration::from_millis(200));
    // D joins: the transport connects it to everyone, C (still a key holder with a valid token)
    // included.
    let (now, d) = (room.now, PeerUuid([5; 16]));
    let mut links = Links::new(as_member(player()), now);
    links.set_own_id(d);
    for other in [A, B, C] {
        links.peer_connected(other, now);
        room.player(other.0[0]).links.peer_connected(d, now);
    }
    room.players.push(Player { id: d, links, events: Vec::new(), muted: false });
    room.run(Duration::from_secs(1));
    // D may trust C before the owner's word reaches it, but not after.
    let c_state = room.player(5).links.link(C).map(|l| l.state);
    let d_events = &room.player(5).events;
    assert!(trusted(d_events).contains(&(A, Permissions::COORDINATOR)) && trusted(d_events).contains(&(B, Permissions::RUN_STAGES)), "{d_events:?}");
    assert_eq!(c_state, Some(LinkState::Refused), "{d_events:?}");
    if trusted(d_events).contains(&(C, Permissions::RUN_STAGES)) {
        assert_eq!(lost(d_events), vec![(C, LostReason::Revoked)]);
    }
    assert!(!rejections(d_events).iter().any(|r| matches!(r, RejectReason::Untrusted(_) | RejectReason::NotPermitted(_))), "{d_events:?}");
}

#[test]
fn in_an_owned_room_only_a_member_granted_the_permission_to_share_may_send_shared_values() {
    let sharing = LinkSettings { permissions: Permissions::ALL, ..player() };
    let mut room = Room::new(&[(1, as_owner(owner(), Permissions::COORDINATOR, Duration::from_secs(600))), (2, as_member(sharing)), (3, as_member(player()))]);
    room.run(Duration::from_millis(400));
    assert_eq!(room.player(3).links.link(B).map(|l| l.permissions()), Some(Permissions::COORDINATOR), "the owner granted no sharing");
    let shared = SentTensor { shared: Some(SharedKey { owner: B, name: "position".into() }), ..to(C, 0, 0, Direction::Shared) };
    room.player(2).links.send_tensor(&shared, &stage_input(4), TransferDtype::F32).expect("trusted");
    room.player(3).events.clear();
    room.step();
    let events = &room.player(3).events;
    assert_eq!(rejections(events), vec![RejectReason::NotPermitted("tensor")]);
    assert!(!events.iter().any(|e| matches!(e, SessionEvent::Tensor(_))));
}

/// The stage inputs `player` received, with who sent them.
fn inputs(room: &mut Room, player: u8) -> Vec<ReceivedTensor> {
    room.player(player).events.iter().filter_map(|e| if let SessionEvent::Tensor(t) = e { Some(t.clone()) } else { None }).collect()
}

#[test]
fn a_chained_input_needs_the_owner_s_route_ticket_and_must_come_from_the_hop_before() {
    let mut room = Room::new(&[(1, owner()), (2, player()), (3, player()), (4, player())]);
    room.run(Duration::from_millis(300));
    let d = PeerUuid([4; 16]);
    // A starts a chain B -> C for its request 7: its links sign the route.
    let start = SentTensor { onward: Some(Onward { owner: A, route: vec![C], ticket: None }), ..to(B, 7, 1, Direction::StageInput) };
    room.player(1).links.send_tensor(&start, &stage_input(6), TransferDtype::F32).expect("trusted");
    room.step();
    let at_b = inputs(&mut room, 2).pop().expect("B got the chain's first input");
    let ticket = at_b.header.onward.clone().and_then(|o| o.ticket).expect("signed by A");
    assert_eq!((ticket.first_stage, ticket.route.clone()), (1, vec![B, C]));
    // B passes it on as the route says: C takes it.
    let onward = |route: Vec<PeerUuid>, ticket: Option<Box<RouteTicket>>| Some(Onward { owner: A, route, ticket });
    let pass_on = SentTensor { onward: onward(vec![], Some(ticket.clone())), ..to(C, 7, 2, Direction::StageInput) };
    room.player(2).links.send_tensor(&pass_on, &stage_input(6), TransferDtype::F32).expect("trusted");
    room.step();
    assert_eq!(inputs(&mut room, 3).len(), 1, "{:?}", room.player(3).events);
    // What B may not do: an input for A's request without a ticket, with the ticket for another
    // request, to a player off the route, or skipping ahead on it.
    let forged = [
        (C, SentTensor { onward: onward(vec![], None), ..to(C, 8, 2, Direction::StageInput) }, TicketError::Missing),
        (C, SentTensor { onward: onward(vec![], Some(ticket.clone())), ..to(C, 8, 2, Direction::StageInput) }, TicketError::Forged),
        (d, SentTensor { onward: onward(vec![], Some(ticket.clone())), ..to(d, 7, 2, Direction::StageInput) }, TicketError::NotOnRoute),
        (C, SentTensor { onward: onward(vec![], Some(Box::new(RouteTicket { route: vec![B, C], ..(*ticket).clone() }))), ..to(C, 7, 3, Direction::StageInput) }, TicketError::NotOnRoute),
    ];
    for (receiver, tensor, error) in forged {
        let id = receiver.0[0];
        room.player(id).events.clear();
        room.player(2).links.send_tensor(&tensor, &stage_input(6), TransferDtype::F32).expect("trusted");
        room.step();
        assert_eq!(rejections(&room.player(id).events), vec![RejectReason::Ticket(error)], "{tensor:?}");
        assert!(inputs(&mut room, id).is_empty());
    }
    // D, not on the route, replays the first hop's input to C: not the hop before C.
    room.player(3).events.clear();
    room.player(4).links.send_tensor(&pass_on, &stage_input(6), TransferDtype::F32).expect("trusted");
    room.step();
    assert_eq!(rejections(&room.player(3).events), vec![RejectReason::Ticket(TicketError::NotPreviousHop)]);
    // Owned by a player that may not submit requests (or by the sender itself): refused as before.
    for owner in [C, B] {
        room.player(3).events.clear();
        let chained = SentTensor { onward: Some(Onward { owner, route: vec![], ticket: None }), ..to(C, 4, 2, Direction::StageInput) };
        room.player(2).links.send_tensor(&chained, &stage_input(6), TransferDtype::F32).expect("trusted");
        room.step();
        assert_eq!(rejections(&room.player(3).events), [RejectReason::NotPermitted("tensor")], "owner {owner}");
    }
}
