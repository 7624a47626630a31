//! Fuzzes the session's stores of what other players send. Their types are public only with the
//! crate's `p2p` feature; with this crate's `session` feature the target uses them from there.
//! Without it (the default: `p2p` builds matchbox's WebRTC stack and rebuilds Bevy with other
//! features), it compiles the same three sans-IO source files, `src/session/shared/inbox.rs`,
//! `src/session/collective/early.rs` and `src/session/collective/run.rs`, into itself, with
//! `crate::net` and `crate::tensor` standing for the crate's own modules.
//!
//! - `SharedInbox::accept` / `forget_owner` (rules: at most 4096 values per tensor, 4 names and
//!   8 KiB per owner, a shape declared for the name "a") with fuzzed owners, names, versions and
//!   shapes, against a model of what it has taken;
//! - `EarlyParts` (the parts kept for collectives not started here: a 4 KiB budget, a 2 s age)
//!   with `keep` / `take` / `forget` / `expire` and time advancing, against a model;
//! - one `CollectiveRun` per input (fuzzed operation, members and input) fed fuzzed parts.
//!
//! Invariants (an assert that fires is a finding):
//! - inbox: per owner never more names than `max_names_per_owner` nor more bytes (4 per value)
//!   than `max_bytes_per_owner` taken; a version not newer than the one held is refused as
//!   `Stale`, a newer one is never; a value over `max_values`, or of another shape than the one
//!   declared for its name, is never taken; `forget_owner` returns exactly the owner's names
//!   taken (sorted) and frees them;
//! - early parts: `held()` is what the model holds (count and bytes), so never more than
//!   `MAX_EARLY_PARTS` parts nor more bytes than the budget; `take` returns exactly the parts
//!   kept for that key and not expired, in the order they came; a part kept is never older than
//!   the age limit once `expire` ran;
//! - collective: no panic; `receive` takes a part only from a member it still waits for, and of
//!   its own part's shape where it has one; `result` is there exactly when nothing is missing,
//!   and has the shape and size the operation makes of the parts.
//!
//! Record: op u8 | a u8 | b u8 | c u8 | d u8.

#![no_main]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bevy_p2p_inference::net::{CollectiveOp, CollectiveTag, PeerUuid, Reduction, SharedKey};
use bevy_p2p_inference::tensor::Tensor;
#[cfg(feature = "session")]
use bevy_p2p_inference::session::collective::{CollectiveRun, EarlyPart, EarlyParts, PartRefusal, MAX_EARLY_PARTS};
#[cfg(feature = "session")]
use bevy_p2p_inference::session::shared::{SharedInbox, SharedRefusal, SharedTensorRules};

#[cfg(not(feature = "session"))]
use {
    early::{EarlyPart, EarlyParts, PartRefusal, MAX_EARLY_PARTS},
    inbox::{SharedInbox, SharedRefusal, SharedTensorRules},
    run::CollectiveRun,
};

/// What the included files call `crate::net` and `crate::tensor`.
#[cfg(not(feature = "session"))]
mod net {
    pub use bevy_p2p_inference::net::*;
}
#[cfg(not(feature = "session"))]
mod tensor {
    pub use bevy_p2p_inference::tensor::*;
}
#[cfg(not(feature = "session"))]
#[allow(dead_code)]
#[path = "../../../src/session/shared/inbox.rs"]
mod inbox;
#[cfg(not(feature = "session"))]
#[allow(dead_code)]
#[path = "../../../src/session/collective/early.rs"]
mod early;
#[cfg(not(feature = "session"))]
#[allow(dead_code)]
#[path = "../../../src/session/collective/run.rs"]
mod run;
use libfuzzer_sys::fuzz_target;

const PEERS: [PeerUuid; 4] = [PeerUuid([1; 16]), PeerUuid([2; 16]), PeerUuid([3; 16]), PeerUuid([4; 16])];
const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
const EARLY_BYTES: usize = 4096;
const EARLY_AGE: Duration = Duration::from_secs(2);

fn rules() -> SharedTensorRules {
    SharedTensorRules { max_values: 4096, max_names_per_owner: 4, max_bytes_per_owner: 8192, ..SharedTensorRules::default() }.with_shape("a", vec![2, 3])
}

/// A shape from two bytes: rank 0 to 3, small dimensions (a zero among them sometimes).
fn shape(a: u8, b: u8) -> Vec<usize> {
    let rank = (a % 4) as usize;
    (0..rank).map(|d| ((b.rotate_left(d as u32 * 3) as usize) % 48) << (a >> 6)).collect()
}

struct InboxModel {
    inbox: SharedInbox,
    /// What the inbox has taken: each key's version and bytes.
    held: BTreeMap<SharedKey, (u64, usize)>,
}

impl InboxModel {
    fn accept(&mut self, key: SharedKey, version: u64, shape: &[usize]) {
        let rules = rules();
        let result = self.inbox.accept(&key, version, shape);
        let values: usize = shape.iter().product();
        match self.held.get(&key) {
            Some(&(held, _)) if version <= held => assert_eq!(result, Err(SharedRefusal::Stale { version, held }), "a version not newer than the one held"),
            _ => assert!(!matches!(result, Err(SharedRefusal::Stale { .. })), "a newer version refused as stale"),
        }
        if result.is_err() {
            return;
        }
        assert!(values <= rules.max_values, "a value over the limit taken");
        if let Some(declared) = rules.shapes.get(&key.name) {
            assert_eq!(declared.as_slice(), shape, "a value of another shape than its name's taken");
        }
        self.held.insert(key.clone(), (version, values * 4));
        let (names, bytes) = self.held.iter().filter(|(k, _)| k.owner == key.owner).fold((0, 0), |(n, b), (_, (_, bytes))| (n + 1, b + bytes));
        assert!(names <= rules.max_names_per_owner, "{names} names taken from one owner");
        assert!(bytes <= rules.max_bytes_per_owner, "{bytes} bytes taken from one owner");
    }

    fn forget(&mut self, owner: PeerUuid) {
        let forgotten = self.inbox.forget_owner(owner);
        let expected: Vec<SharedKey> = self.held.keys().filter(|k| k.owner == owner).cloned().collect();
        assert_eq!(forgotten, expected, "forget_owner returns the owner's names taken");
        self.held.retain(|k, _| k.owner != owner);
    }
}

struct EarlyModel {
    early: EarlyParts,
    /// What it keeps: (key, sender, bytes, arrived), in order.
    kept: Vec<((String, u64), PeerUuid, usize, Instant)>,
}

impl EarlyModel {
    fn expire(&mut self, now: Instant) {
        self.kept.retain(|p| now.saturating_duration_since(p.3) <= EARLY_AGE);
    }

    fn check(&self) {
        let bytes: usize = self.kept.iter().map(|p| p.2).sum();
        assert_eq!(self.early.held(), (self.kept.len(), bytes), "early parts held differ from what was kept");
        assert!(bytes <= EARLY_BYTES && self.kept.len() <= MAX_EARLY_PARTS);
    }

    fn keep(&mut self, part: EarlyPart, now: Instant) {
        let (key, from, bytes) = (part.0.clone(), part.1, part.3.len() * 4);
        let result = self.early.keep(part, now);
        self.expire(now);
        let total: usize = self.kept.iter().map(|p| p.2).sum::<usize>() + bytes;
        let expected = if self.kept.len() >= MAX_EARLY_PARTS {
            Err(PartRefusal::TooManyParts { limit: MAX_EARLY_PARTS })
        } else if total > EARLY_BYTES {
            Err(PartRefusal::OverBudget { bytes: total, limit: EARLY_BYTES })
        } else {
            Ok(())
        };
        assert_eq!(result, expected);
        if result.is_ok() {
            self.kept.push((key, from, bytes, now));
        }
    }

    fn take(&mut self, key: (String, u64)) {
        let taken = self.early.take(&key);
        let expected: Vec<(PeerUuid, usize)> = self.kept.iter().filter(|p| p.0 == key).map(|p| (p.1, p.2)).collect();
        assert_eq!(taken.iter().map(|p| (p.1, p.3.len() * 4)).collect::<Vec<_>>(), expected, "take returns the parts kept for the key");
        assert!(taken.iter().all(|p| p.0 == key));
        self.kept.retain(|p| p.0 != key);
    }
}

/// A tensor of a small shape (rank 0 to 3, at most 1331 values).
fn tensor(a: u8, b: u8) -> Tensor {
    let shape: Vec<usize> = (0..(a % 4) as usize).map(|d| (b.rotate_left(d as u32 * 3) as usize) % 12).collect();
    let len: usize = shape.iter().product();
    Tensor::new(shape, (0..len).map(|i| (i % 7) as f32 - 3.0).collect()).expect("its shape")
}

fn op(a: u8, b: u8) -> CollectiveOp {
    match a % 6 {
        0 => CollectiveOp::Broadcast { root: PEERS[(b % 4) as usize] },
        1 => CollectiveOp::AllGather,
        2 => CollectiveOp::AllReduce(Reduction::Sum),
        3 => CollectiveOp::AllReduce(Reduction::Mean),
        4 => CollectiveOp::AllReduce(Reduction::Max),
        _ => CollectiveOp::Scatter { root: PEERS[(b % 4) as usize] },
    }
}

fn members(bits: u8) -> Vec<PeerUuid> {
    PEERS.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, p)| *p).collect()
}

fuzz_target!(|data: &[u8]| {
    let mut inbox = InboxModel { inbox: SharedInbox::new(rules()), held: BTreeMap::new() };
    let start = Instant::now();
    let mut now = start;
    let mut early = EarlyModel { early: EarlyParts::new(EARLY_BYTES, EARLY_AGE), kept: Vec::new() };
    let own = PEERS[0];
    // The collective: started by the first collective record, fed by the next ones.
    let mut run: Option<(CollectiveRun, Option<Vec<usize>>)> = None;
    for record in data.chunks_exact(5).take(256) {
        let (kind, a, b, c, d) = (record[0], record[1], record[2], record[3], record[4]);
        match kind % 10 {
            0 | 1 => {
                let key = SharedKey { owner: PEERS[(a % 4) as usize], name: NAMES[(a as usize >> 2) % NAMES.len()].to_string() };
                inbox.accept(key, (b % 8) as u64, &shape(c, d));
            }
            2 => inbox.forget(PEERS[(a % 4) as usize]),
            3 | 4 => {
                let tag = CollectiveTag { op: CollectiveOp::AllGather, members: members(b) };
                let part: EarlyPart = ((NAMES[(a % 3) as usize].to_string(), (a >> 4) as u64 % 3), PEERS[(b >> 4) as usize % 4], tag, tensor(c, d));
                early.keep(part, now);
            }
            5 => early.take((NAMES[(a % 3) as usize].to_string(), (a >> 4) as u64 % 3)),
            6 => {
                let peer = PEERS[(a % 4) as usize];
                early.early.forget(peer);
                early.kept.retain(|p| p.1 != peer);
            }
            7 => {
                now += Duration::from_millis(a as u64 * 20);
                if b & 1 != 0 {
                    early.early.expire(now);
                    early.expire(now);
                    assert!(early.kept.iter().all(|p| now.saturating_duration_since(p.3) <= EARLY_AGE));
                }
            }
            _ => match &mut run {
                None => {
                    let input = (c & 0x80 == 0).then(|| tensor(c, d));
                    let own_shape = input.as_ref().map(|t| t.shape().to_vec());
                    let op = op(a, b);
                    // tools/fuzz/findings/inboxes-scatter-empty-input-panics.bin (a scatter of
                    // rows without values) panicked here until fixed; it is fuzzed like the rest.
                    if let Ok((started, parts)) = CollectiveRun::start(op, own, members(b | 1), input) {
                        for part in &parts {
                            assert!(started.tag().members.contains(&part.to) && part.to != own, "a part for a non-member or for this player");
                        }
                        let own_part = matches!(op, CollectiveOp::AllGather | CollectiveOp::AllReduce(_));
                        run = Some((started, own_shape.filter(|_| own_part)));
                    }
                }
                Some((run, own_shape)) => {
                    let from = PEERS[(a % 4) as usize];
                    let tag = if b & 0x80 == 0 { run.tag().clone() } else { CollectiveTag { op: op(a, b), members: members(b) } };
                    let part = tensor(c, d);
                    let shape = part.shape().to_vec();
                    let missing = run.missing();
                    let taken = run.receive(from, &tag, part).is_ok();
                    if taken {
                        assert!(missing.contains(&from), "a part taken from a member not waited for");
                        assert_eq!(tag, *run.tag(), "a part taken under another tag");
                        if let Some(own_shape) = own_shape {
                            assert_eq!(&shape, own_shape, "a part of another shape than this player's taken");
                        }
                    }
                    let missing = run.missing();
                    let result = run.result();
                    assert_eq!(result.is_some(), missing.is_empty(), "a result while parts are missing, or none when all are in");
                    if let Some(result) = result {
                        let members = run.tag().members.len();
                        assert_eq!(result.len(), result.shape().iter().product::<usize>());
                        match (run.tag().op, own_shape.as_deref()) {
                            (CollectiveOp::AllReduce(_), Some(own)) => assert_eq!(result.shape(), own),
                            (CollectiveOp::AllGather, Some(own)) => assert_eq!(result.len(), own.iter().product::<usize>() * members),
                            _ => {}
                        }
                    }
                }
            },
        }
        early.check();
    }
});
