//! Fuzzes `RouteTicket::check`. A ticket is signed once per process (OnceLock) by the owner O
//! for request 42, from stage 5, along the route B, C, D, expiring at a fixed time. Each input
//! mutates the ticket's fields (first stage, the route's peers, length and order, the expiry, the
//! signature's bytes) and a `Hop`'s fields (owner, owner's identity key, request, stage, the
//! route onward, sender, receiver, and the clock), then checks the ticket against the hop.
//!
//! Invariant (an assert that fires is a finding): `check` returns `Ok` exactly when the ticket
//! is the one signed, unmodified, presented for its owner, with the owner's identity key and the
//! signed request, not expired (by more than the clock skew allowed), and the hop is consistent
//! with the route: the receiver is the route's player for the stage, the route onward is the
//! rest of the signed route, and the sender is the hop before (the owner, for the route's first
//! player). A changed ticket, owner, identity or request is `Forged`, never another error.
//!
//! Input: a sequence of (op u8, value bytes) edits; see `edit`.

#![no_main]

use std::sync::OnceLock;

use bevy_p2p_inference::net::{Hop, IdentityKey, PeerUuid, PlayerIdentity, RouteTicket, TicketError, CLOCK_SKEW_MS};
use libfuzzer_sys::fuzz_target;

const O: PeerUuid = PeerUuid([1; 16]);
const B: PeerUuid = PeerUuid([2; 16]);
const C: PeerUuid = PeerUuid([3; 16]);
const D: PeerUuid = PeerUuid([4; 16]);
const X: PeerUuid = PeerUuid([9; 16]);
const PEERS: [PeerUuid; 5] = [O, B, C, D, X];
const REQUEST: u64 = 42;
const FIRST_STAGE: u16 = 5;
const EXPIRES: u64 = 1_000_000;

struct Fixture {
    owner: PlayerIdentity,
    other: PlayerIdentity,
    ticket: RouteTicket,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let owner = PlayerIdentity::generate().expect("OS randomness");
        let other = PlayerIdentity::generate().expect("OS randomness");
        let ticket = RouteTicket::sign(&owner, O, REQUEST, FIRST_STAGE, vec![B, C, D], EXPIRES);
        Fixture { owner, other, ticket }
    })
}

/// A hop with owned fields (a `Hop` borrows its route onward).
struct HopFields {
    owner: PeerUuid,
    owner_identity: IdentityKey,
    request: u64,
    stage: u16,
    onward: Vec<PeerUuid>,
    from: PeerUuid,
    receiver: PeerUuid,
    now_ms: u64,
}

fn peer(byte: u8) -> PeerUuid {
    match PEERS.get(byte as usize % 8) {
        Some(peer) => *peer,
        // A peer differing from one of the route's in one byte.
        None => {
            let mut id = PEERS[byte as usize % PEERS.len()].0;
            id[(byte as usize >> 3) % 16] ^= 0x80;
            PeerUuid(id)
        }
    }
}

fn u64_at(bytes: &[u8]) -> u64 {
    let mut word = [0; 8];
    let n = bytes.len().min(8);
    word[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(word)
}

/// Applies one edit (`op`, with its `value` bytes) to the ticket or the hop.
fn edit(ticket: &mut RouteTicket, hop: &mut HopFields, op: u8, value: &[u8]) {
    let v = |i: usize| value.get(i).copied().unwrap_or(0);
    let fixture = fixture();
    match op % 20 {
        0 => ticket.first_stage = ticket.first_stage.wrapping_add(v(0) as u16).wrapping_sub(v(1) as u16),
        1 => {
            if !ticket.route.is_empty() {
                let i = v(0) as usize % ticket.route.len();
                ticket.route[i] = peer(v(1));
            }
        }
        2 => {
            ticket.route.truncate(v(0) as usize % 5);
        }
        3 => {
            // Longer routes, up to beyond 255 hops (the signed length is one byte).
            let extra = if v(1) & 1 != 0 { 256 } else { 1 + v(0) as usize % 4 };
            for i in 0..extra {
                ticket.route.push(peer(v(2).wrapping_add(i as u8)));
            }
        }
        4 => {
            let n = ticket.route.len();
            if n >= 2 {
                ticket.route.swap(v(0) as usize % n, v(1) as usize % n);
            }
        }
        5 => ticket.expires_at_ms = u64_at(value),
        6 => ticket.expires_at_ms = ticket.expires_at_ms.wrapping_add(v(0) as u64 + 1),
        7 => {
            let i = v(0) as usize % 64;
            ticket.signature[i] ^= v(1);
        }
        8 => {
            for (i, byte) in value.iter().take(64).enumerate() {
                ticket.signature[i] = *byte;
            }
        }
        9 => hop.owner = peer(v(0)),
        10 => {
            hop.owner_identity = match v(0) % 4 {
                0 => fixture.owner.public(),
                1 => fixture.other.public(),
                2 => IdentityKey([v(1); 32]),
                _ => {
                    let mut key = fixture.owner.public().0;
                    key[v(1) as usize % 32] ^= v(2) | 1;
                    IdentityKey(key)
                }
            }
        }
        11 => hop.request = if v(0) & 1 == 0 { REQUEST ^ (v(1) as u64) } else { u64_at(&value[value.len().min(1)..]) },
        12 => hop.stage = FIRST_STAGE.wrapping_add(v(0) as u16 % 6).wrapping_sub(1),
        13 => hop.stage = u16::from_le_bytes([v(0), v(1)]),
        14 => hop.onward = value.iter().take(12).map(|&b| peer(b)).collect(),
        15 => {
            // The signed route's tail, from some position.
            let route = &fixture.ticket.route;
            hop.onward = route[v(0) as usize % (route.len() + 1)..].to_vec();
        }
        16 => hop.from = peer(v(0)),
        17 => hop.receiver = peer(v(0)),
        18 => hop.now_ms = EXPIRES + CLOCK_SKEW_MS - 2 + (v(0) as u64 % 5),
        _ => hop.now_ms = u64_at(value),
    }
}

/// Whether `check` must accept: the signed ticket, for its owner, identity and request, in time,
/// and the hop consistent with the route.
fn expected(ticket: &RouteTicket, hop: &HopFields) -> Result<(), TicketError> {
    let fixture = fixture();
    if *ticket != fixture.ticket || hop.owner != O || hop.owner_identity != fixture.owner.public() || hop.request != REQUEST {
        return Err(TicketError::Forged);
    }
    if hop.now_ms > EXPIRES + CLOCK_SKEW_MS {
        return Err(TicketError::Expired);
    }
    let route = &ticket.route;
    let position = hop.stage.checked_sub(FIRST_STAGE).map(usize::from).filter(|&i| route.get(i) == Some(&hop.receiver));
    let Some(position) = position else { return Err(TicketError::NotOnRoute) };
    if route[position + 1..] != hop.onward[..] {
        return Err(TicketError::NotOnRoute);
    }
    let previous = if position == 0 { O } else { route[position - 1] };
    if hop.from != previous {
        return Err(TicketError::NotPreviousHop);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let mut ticket = fixture.ticket.clone();
    // An honest hop first: C, the route's second player, receiving from B.
    let mut hop = HopFields { owner: O, owner_identity: fixture.owner.public(), request: REQUEST, stage: FIRST_STAGE + 1, onward: vec![D], from: B, receiver: C, now_ms: 0 };
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        let length = (tail.first().copied().unwrap_or(0) as usize % 16).min(tail.len().saturating_sub(1));
        let value = tail.get(1..1 + length).unwrap_or(&[]);
        edit(&mut ticket, &mut hop, op, value);
        rest = tail.get(1 + length..).unwrap_or(&[]);
    }
    let checked = ticket.check(
        &Hop { owner: hop.owner, owner_identity: hop.owner_identity, request: hop.request, stage: hop.stage, onward: &hop.onward, from: hop.from, receiver: hop.receiver },
        hop.now_ms,
    );
    let expected = expected(&ticket, &hop);
    match (&checked, &expected) {
        (Ok(()), Ok(())) => {}
        (Ok(()), Err(why)) => panic!("check accepted a ticket or hop it must refuse ({why:?}): {ticket:?}, hop stage {} from {:?} to {:?} onward {:?}", hop.stage, hop.from, hop.receiver, hop.onward),
        (Err(why), Ok(())) => panic!("check refused the signed ticket on a consistent hop: {why:?}"),
        // A changed ticket, owner, identity or request must read as forged.
        (Err(got), Err(TicketError::Forged)) => assert_eq!(*got, TicketError::Forged, "a changed ticket, owner, identity or request"),
        (Err(_), Err(_)) => {}
    }
});
