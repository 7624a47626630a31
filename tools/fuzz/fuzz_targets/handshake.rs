//! Fuzzes the answering side of the link key exchange and handshake: a fresh victim `Links`
//! (peer id 2, an open room) and a stranger with a lower id (1, so the stranger starts every key
//! exchange). Each record of the input is one move of the stranger:
//!
//! - start a new key exchange (SPAKE2's side A) with the room key or with a wrong key (chosen by
//!   a byte), and send its start to the victim; or send the current start again;
//! - feed the victim's key-exchange frames (those it sent the stranger) to the stranger's
//!   current exchange, and optionally send the victim what that exchange queued in return;
//! - send the victim a frame MACed under keys the stranger holds (those of any of its exchanges
//!   that agreed, or keys from a fuzzed secret): a fuzzed kind and body, or a hello with fuzzed
//!   fields whose proof is made by the stranger's identity over the victim's nonce and the
//!   keys' binding (or over fuzzed values);
//! - send the victim raw bytes (key-exchange frames among them);
//! - let time pass and tick the victim; or have the transport connect the stranger again.
//!
//! Invariants (an assert that fires is a finding):
//! 1. A stranger that never used the right room key is never trusted (no `PeerTrusted` for it,
//!    its link never `Trusted`) and is never sent a frame other than a key-exchange frame: it gets
//!    nothing to test its guess against offline.
//! 2. Per connection, the victim sends the stranger no frame other than a key-exchange frame
//!    before a frame from the stranger verified under the victim's keys for the link (keys the
//!    stranger can only have from an exchange with the right room key); and it is never trusted
//!    before that either.
//! 3. A frame under keys the stranger agreed with a wrong room key (or made up) never verifies
//!    under the victim's keys for the link.
//! 4. The victim's agreed keys for the link change (other than by a reconnection) only at a
//!    frame that verifies under the new keys: a restart on a proven link stays pending until the
//!    stranger proves the new keys, and a key-exchange frame alone never replaces agreed keys.
//!
//! Whatever arrives, the victim must not panic. SPAKE2 is costly: at most a few exchanges (and
//! exchange frames the victim has to compute on) per input.
//!
//! Record: op u8 | arg u8 | length u16 (little-endian) | that many bytes.

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bevy_p2p_inference::net::{
    decode_frame, encode_frame, seal_frame, Capabilities, Hello, LinkKeyExchange, LinkKeys, LinkSettings, LinkState, Links, Message, PeerUuid, Permissions, PlayerIdentity, RoomKey, SessionEvent,
};
use libfuzzer_sys::fuzz_target;

const KEY: RoomKey = RoomKey::from_bytes([0x4b; 32]);
const MODEL: [u8; 32] = [7; 32];
const STRANGER: PeerUuid = PeerUuid([1; 16]);
const VICTIM: PeerUuid = PeerUuid([2; 16]);
/// SPAKE2 computations (the stranger's starts and finishes, the victim's answers) per input.
const MAX_SPAKE: usize = 8;
const EXCHANGE_KIND: u8 = 6;

fn capabilities(adapter: &str) -> Capabilities {
    Capabilities { adapter: adapter.into(), backend: "none".into(), shader_f16: false, subgroup_sizes: (0, 0), max_storage_binding: 1 << 27, calibration_us: 1 }
}

fn victim_settings() -> LinkSettings {
    let mut settings = LinkSettings::new(KEY.clone(), Permissions::ALL, MODEL, capabilities("victim"));
    settings.limits.max_partial_bytes = 1 << 20;
    settings
}

/// The stranger's identity, made once (key generation draws from the OS).
fn identity() -> &'static PlayerIdentity {
    static IDENTITY: OnceLock<PlayerIdentity> = OnceLock::new();
    IDENTITY.get_or_init(|| PlayerIdentity::generate().expect("OS randomness"))
}

fn is_exchange(frame: &[u8]) -> bool {
    frame.len() >= 4 && frame[0..2] == *b"BP" && frame[3] == EXCHANGE_KIND
}

/// A fingerprint of a link's keys (they do not compare).
fn fingerprint(keys: &LinkKeys) -> [u8; 32] {
    keys.frame_tag(STRANGER, VICTIM, b"fingerprint")
}

/// One of the stranger's key exchanges, and whether it used the room key.
struct Exchange {
    exchange: LinkKeyExchange,
    right_key: bool,
}

struct Harness {
    victim: Links,
    now: Instant,
    events: Vec<SessionEvent>,
    /// The stranger's exchanges, the latest last.
    exchanges: Vec<Exchange>,
    /// Frames the victim sent the stranger that the stranger has not read yet.
    inbox: Vec<Vec<u8>>,
    /// The stranger started an exchange with the right room key (ever).
    used_right_key: bool,
    /// A frame from the stranger verified under the victim's keys on this connection.
    proven: bool,
    spake: usize,
    sequence: u64,
}

impl Harness {
    fn new() -> Self {
        let now = Instant::now();
        let mut victim = Links::new(victim_settings(), now);
        victim.set_own_id(VICTIM);
        victim.peer_connected(STRANGER, now);
        let mut harness = Self { victim, now, events: Vec::new(), exchanges: Vec::new(), inbox: Vec::new(), used_right_key: false, proven: false, spake: 0, sequence: 0 };
        harness.collect();
        harness
    }

    /// Takes what the victim sent, checking invariants 1 and 2 on every frame and event to the stranger.
    fn collect(&mut self) {
        for frame in self.victim.drain_outgoing() {
            assert_eq!(frame.to, STRANGER, "the victim knows no one else");
            if !is_exchange(&frame.bytes) {
                assert!(self.used_right_key, "a non-exchange frame to a stranger that never used the room key (an offline oracle)");
                assert!(self.proven, "a non-exchange frame before the stranger proved the link's keys");
            }
            self.inbox.push(frame.bytes);
        }
        for event in self.events.drain(..) {
            if let SessionEvent::PeerTrusted { peer, .. } = event {
                assert_eq!(peer, STRANGER);
                assert!(self.used_right_key, "a stranger without the room key trusted");
                assert!(self.proven, "trusted before any frame verified");
            }
        }
        let state = self.victim.link(STRANGER).map(|l| l.state);
        if state == Some(LinkState::Trusted) {
            assert!(self.used_right_key && self.proven, "the stranger's link is trusted without the room key");
        }
        // Bound what an input can pile up.
        if self.inbox.len() > 64 {
            self.inbox.drain(..self.inbox.len() - 64);
        }
    }

    /// Delivers `frame` from the stranger, checking invariant 4; returns whether it verified
    /// under the victim's keys for the link (those agreed before it, or those it made the
    /// victim adopt).
    fn deliver(&mut self, frame: &[u8]) -> bool {
        if is_exchange(frame) {
            // The victim computes on a well-formed start (SPAKE2's side B).
            if frame.len() == 37 {
                if self.spake >= MAX_SPAKE {
                    return false;
                }
                self.spake += 1;
            }
        }
        let before = self.victim.link_keys(STRANGER).cloned();
        let verified_before = before.as_ref().is_some_and(|k| decode_frame(k, STRANGER, VICTIM, frame).is_ok());
        self.victim.receive(STRANGER, frame, self.now, &mut self.events);
        let after = self.victim.link_keys(STRANGER).cloned();
        let verified_after = after.as_ref().is_some_and(|k| decode_frame(k, STRANGER, VICTIM, frame).is_ok());
        if let (Some(before), Some(after)) = (&before, &after)
            && fingerprint(before) != fingerprint(after)
        {
            assert!(!is_exchange(frame), "a key-exchange frame replaced the link's agreed keys");
            assert!(verified_after, "the link's keys changed at a frame that does not verify under the new ones");
        }
        if verified_before || verified_after {
            self.proven = true;
        }
        self.collect();
        verified_before || verified_after
    }

    /// Keys the stranger holds: those of one of its exchanges (with whether that exchange used
    /// the room key), or of a fuzzed secret (`None`).
    fn keys(&self, pick: u8, secret: u8) -> (LinkKeys, Option<bool>) {
        let agreed: Vec<(&LinkKeys, bool)> = self.exchanges.iter().filter_map(|e| Some((e.exchange.keys()?, e.right_key))).collect();
        match agreed.get(pick as usize % (agreed.len() + 1)) {
            Some((keys, right)) => ((*keys).clone(), Some(*right)),
            None => (LinkKeys::from_secret(&[secret; 32]), None),
        }
    }

    /// Sends the victim `frame`, authenticated under keys the stranger got as `right` says:
    /// if it verifies under the victim's keys, the stranger must have agreed them with the
    /// room key.
    fn deliver_authenticated(&mut self, frame: &[u8], right: Option<bool>) {
        if self.deliver(frame) {
            assert_eq!(right, Some(true), "a frame under keys the stranger agreed without the room key (or never agreed) verifies under the victim's keys");
        }
    }

    fn next_sequence(&mut self, arg: u8, bytes: &[u8]) -> u64 {
        if arg & 0x80 != 0 && bytes.len() >= 8 {
            return u64::from_le_bytes(bytes[..8].try_into().unwrap());
        }
        self.sequence += 1;
        self.sequence
    }

    fn step(&mut self, op: u8, arg: u8, bytes: &[u8]) {
        match op % 8 {
            // A new exchange, with the room key or a wrong one, its start sent.
            0 => {
                if self.exchanges.len() >= 4 || self.spake >= MAX_SPAKE {
                    return;
                }
                self.spake += 1;
                let right = arg & 1 == 0;
                // A wrong key is never the room key: its last byte differs (a fuzzed first run found
                // that `0x4c ^ 7` is the room key's byte, which the harness took for a wrong key).
                let mut wrong = [0x4c ^ (arg >> 1); 32];
                wrong[31] = 0x4c;
                let key = if right { KEY.clone() } else { RoomKey::from_bytes(wrong) };
                self.used_right_key |= right;
                let mut exchange = LinkKeyExchange::new(&key, STRANGER, VICTIM);
                let starts = exchange.drain_outgoing();
                self.exchanges.push(Exchange { exchange, right_key: right });
                for start in starts {
                    self.deliver(&start);
                }
            }
            // The current start again.
            1 => {
                let Some(current) = self.exchanges.last_mut() else { return };
                current.exchange.repeat_start();
                for frame in current.exchange.drain_outgoing() {
                    self.deliver(&frame);
                }
            }
            // The victim's exchange frames to the stranger's current exchange, and (arg bit 0)
            // what that exchange queued back to the victim.
            2 => {
                let frames: Vec<Vec<u8>> = std::mem::take(&mut self.inbox).into_iter().filter(|f| is_exchange(f)).collect();
                let Some(current) = self.exchanges.last_mut() else { return };
                for frame in frames.iter().take(4) {
                    if self.spake >= MAX_SPAKE {
                        break;
                    }
                    if current.exchange.awaits_answer() {
                        self.spake += 1;
                    }
                    let _ = current.exchange.receive(frame);
                }
                let back = current.exchange.drain_outgoing();
                if arg & 1 != 0 {
                    for frame in back {
                        self.deliver(&frame);
                    }
                }
            }
            // A fuzzed body of a fuzzed kind under keys the stranger holds.
            3 => {
                let (keys, right) = self.keys(arg, bytes.first().copied().unwrap_or(0));
                let sequence = self.next_sequence(arg, bytes);
                let kind = bytes.get(1).copied().unwrap_or(2) % 8;
                let body = bytes.get(2..).unwrap_or(&[]);
                let frame = seal_frame(&keys, STRANGER, VICTIM, sequence, kind, body);
                self.deliver_authenticated(&frame, right);
            }
            // A hello under keys the stranger holds, proved by its identity.
            4 => {
                let (keys, right) = self.keys(arg, bytes.first().copied().unwrap_or(0));
                let sequence = self.next_sequence(arg, bytes);
                let hello = self.hello(&keys, bytes);
                let frame = encode_frame(&keys, STRANGER, VICTIM, sequence, &Message::Hello(hello));
                self.deliver_authenticated(&frame, right);
            }
            // Raw bytes.
            5 => {
                self.deliver(bytes);
            }
            // Time passes; the victim ticks.
            6 => {
                self.now += Duration::from_millis(arg as u64 * 10 + 1);
                self.victim.tick(self.now, &mut self.events);
                self.collect();
            }
            // The transport connects the stranger again: a new connection, nothing proven.
            _ => {
                self.victim.peer_connected(STRANGER, self.now);
                self.proven = false;
                self.inbox.clear();
                self.collect();
            }
        }
    }

    /// A hello from fuzzed fields: flags | permissions | nonce byte | proof flags | adapter...
    fn hello(&self, keys: &LinkKeys, bytes: &[u8]) -> Hello {
        let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
        let (flags, proof_flags) = (at(2), at(5));
        let victim_nonce = self.victim.session_nonce();
        let nonce = if proof_flags & 1 == 0 { victim_nonce } else { [at(4); 16] };
        let binding = if proof_flags & 2 == 0 { keys.binding() } else { [at(4); 32] };
        let (sender, receiver) = if proof_flags & 4 == 0 { (STRANGER, VICTIM) } else { (VICTIM, STRANGER) };
        let identity = if proof_flags & 8 == 0 { identity().public() } else { bevy_p2p_inference::net::IdentityKey([at(6); 32]) };
        let proof = (flags & 1 == 0).then(|| identity_proof(sender, receiver, &nonce, &binding));
        let proof = match proof {
            Some(mut proof) if proof_flags & 16 != 0 => {
                proof[at(7) as usize % 64] ^= at(8) | 1;
                Some(proof)
            }
            other => other,
        };
        let adapter = String::from_utf8_lossy(bytes.get(9..).unwrap_or(&[])).chars().take(64).collect::<String>();
        Hello {
            model_hash: if flags & 2 == 0 { MODEL } else { [at(6); 32] },
            capabilities: capabilities(&adapter),
            permissions: Permissions::from_bits(at(3)),
            identity,
            token: None,
            proof,
            grant: None,
            acknowledged: flags & 4 != 0,
            session_nonce: [at(4) ^ 0x5a; 16],
        }
    }
}

fn identity_proof(sender: PeerUuid, receiver: PeerUuid, nonce: &[u8; 16], binding: &[u8; 32]) -> [u8; 64] {
    identity().prove(sender, receiver, nonce, binding)
}

fuzz_target!(|data: &[u8]| {
    let mut harness = Harness::new();
    let mut rest = data;
    let mut records = 0;
    while rest.len() >= 4 && records < 64 {
        records += 1;
        let (op, arg) = (rest[0], rest[1]);
        let length = (u16::from_le_bytes([rest[2], rest[3]]) as usize).min(rest.len() - 4);
        let bytes = &rest[4..4 + length];
        rest = &rest[4 + length..];
        harness.step(op, arg, bytes);
    }
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        let link = harness.victim.link(STRANGER);
        eprintln!(
            "records {records}: state {:?}, rejected {:?}, used right key {}, proven {}, exchanges {}, SPAKE2 steps {}",
            link.map(|l| l.state),
            link.map(|l| l.rejected),
            harness.used_right_key,
            harness.proven,
            harness.exchanges.len(),
            harness.spake
        );
    }
});
