//! [`SharedInbox`]: whether a value of another player's shared tensor is taken, sans IO: newer
//! than the one held, within the size limit, and of the shape the game declared for its name.
//! (That the sender owns the tensor is checked below, by the link: see
//! [`crate::net::RejectReason::NotOwner`].)

use std::collections::HashMap;

use thiserror::Error;

use crate::net::{PeerUuid, SharedKey};

/// What this player accepts of the tensors others share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedTensorRules {
    /// The most values one shared tensor may have (default 1 Mi).
    pub max_values: usize,
    /// The most names one player may share with this one (default 64); a value under a new
    /// name beyond it is refused.
    pub max_names_per_owner: usize,
    /// The most bytes (as f32) the values one player shares may take here together (default
    /// 64 MiB); a value that would take them past it is refused.
    pub max_bytes_per_owner: usize,
    /// The shape each named tensor must have, for the names the game declares; a value of
    /// another shape is refused. Names not declared may have any shape.
    pub shapes: HashMap<String, Vec<usize>>,
}

impl Default for SharedTensorRules {
    fn default() -> Self {
        Self { max_values: 1 << 20, max_names_per_owner: 64, max_bytes_per_owner: 64 << 20, shapes: HashMap::new() }
    }
}

impl SharedTensorRules {
    /// Declares the shape that values shared under `name` must have.
    pub fn with_shape(mut self, name: impl Into<String>, shape: Vec<usize>) -> Self {
        self.shapes.insert(name.into(), shape);
        self
    }
}

/// Why a value of a shared tensor was not taken.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SharedRefusal {
    /// Not newer than the value held.
    #[error("version {version} is not newer than the {held} held")]
    Stale {
        /// The version received.
        version: u64,
        /// The version held.
        held: u64,
    },
    /// More values than [`SharedTensorRules::max_values`].
    #[error("{values} values exceed the limit of {limit}")]
    TooLarge {
        /// Values received.
        values: usize,
        /// The limit.
        limit: usize,
    },
    /// A new name from a player that already shares [`SharedTensorRules::max_names_per_owner`].
    #[error("its owner already shares {limit} names")]
    TooManyNames {
        /// The limit.
        limit: usize,
    },
    /// Its owner's values would take more than [`SharedTensorRules::max_bytes_per_owner`].
    #[error("its owner's values would take {bytes} bytes, over the limit of {limit}")]
    OwnerOverBudget {
        /// The bytes its owner's values would take with it.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// Not the shape declared for its name.
    #[error("shape {got:?}, where {expected:?} is declared")]
    WrongShape {
        /// The declared shape.
        expected: Vec<usize>,
        /// The shape received.
        got: Vec<usize>,
    },
}

/// The versions held of the tensors other players share.
#[derive(Clone, Debug, Default)]
pub struct SharedInbox {
    rules: SharedTensorRules,
    /// Each tensor's version held and its bytes.
    held: HashMap<SharedKey, (u64, usize)>,
}

impl SharedInbox {
    /// An inbox that accepts what `rules` allow.
    pub fn new(rules: SharedTensorRules) -> Self {
        Self { rules, held: HashMap::new() }
    }

    /// Takes `version` of `key`, of `shape`, or says why not.
    pub fn accept(&mut self, key: &SharedKey, version: u64, shape: &[usize]) -> Result<(), SharedRefusal> {
        if let Some(&(held, _)) = self.held.get(key).filter(|(held, _)| version <= *held) {
            return Err(SharedRefusal::Stale { version, held });
        }
        let values = shape.iter().product::<usize>();
        if values > self.rules.max_values {
            return Err(SharedRefusal::TooLarge { values, limit: self.rules.max_values });
        }
        if let Some(expected) = self.rules.shapes.get(&key.name).filter(|expected| expected.as_slice() != shape) {
            return Err(SharedRefusal::WrongShape { expected: expected.clone(), got: shape.to_vec() });
        }
        let others = self.held.iter().filter(|(k, _)| k.owner == key.owner && *k != key);
        let (names, bytes) = others.fold((0, 0usize), |(n, b), (_, (_, bytes))| (n + 1, b.saturating_add(*bytes)));
        if !self.held.contains_key(key) && names >= self.rules.max_names_per_owner {
            return Err(SharedRefusal::TooManyNames { limit: self.rules.max_names_per_owner });
        }
        let bytes = bytes.saturating_add(values.saturating_mul(4));
        if bytes > self.rules.max_bytes_per_owner {
            return Err(SharedRefusal::OwnerOverBudget { bytes, limit: self.rules.max_bytes_per_owner });
        }
        self.held.insert(key.clone(), (version, values.saturating_mul(4)));
        Ok(())
    }

    /// Forgets what `owner` shared (it left); returns the keys it held.
    pub fn forget_owner(&mut self, owner: PeerUuid) -> Vec<SharedKey> {
        let mut keys: Vec<SharedKey> = self.held.keys().filter(|k| k.owner == owner).cloned().collect();
        keys.sort();
        self.held.retain(|k, _| k.owner != owner);
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(owner: u8, name: &str) -> SharedKey {
        SharedKey { owner: PeerUuid([owner; 16]), name: name.into() }
    }

    #[test]
    fn only_newer_values_within_the_limit_and_of_the_declared_shape_are_taken() {
        let rules = SharedTensorRules { max_values: 100, ..SharedTensorRules::default() }.with_shape("prediction", vec![1, 10]);
        let mut inbox = SharedInbox::new(rules);
        assert_eq!(inbox.accept(&key(1, "prediction"), 1, &[1, 10]), Ok(()));
        assert_eq!(inbox.accept(&key(1, "prediction"), 3, &[1, 10]), Ok(()));
        assert_eq!(inbox.accept(&key(1, "prediction"), 2, &[1, 10]), Err(SharedRefusal::Stale { version: 2, held: 3 }));
        assert_eq!(inbox.accept(&key(2, "prediction"), 1, &[1, 10]), Ok(()), "another owner's tensor of the same name");
        assert_eq!(inbox.accept(&key(2, "prediction"), 2, &[1, 11]), Err(SharedRefusal::WrongShape { expected: vec![1, 10], got: vec![1, 11] }));
        assert_eq!(inbox.accept(&key(2, "embedding"), 1, &[2, 51]), Err(SharedRefusal::TooLarge { values: 102, limit: 100 }));
        assert_eq!(inbox.accept(&key(2, "embedding"), 1, &[2, 50]), Ok(()), "undeclared names may take any shape");
        assert_eq!(inbox.forget_owner(PeerUuid([2; 16])), vec![key(2, "embedding"), key(2, "prediction")]);
        assert_eq!(inbox.accept(&key(2, "prediction"), 1, &[1, 10]), Ok(()), "a player that comes back starts over");
    }

    #[test]
    fn a_player_shares_at_most_so_many_names_and_bytes_with_this_one() {
        let rules = SharedTensorRules { max_names_per_owner: 2, max_bytes_per_owner: 400, ..SharedTensorRules::default() };
        let mut inbox = SharedInbox::new(rules);
        assert_eq!(inbox.accept(&key(1, "a"), 1, &[50]), Ok(()), "200 bytes");
        assert_eq!(inbox.accept(&key(1, "b"), 1, &[50]), Ok(()), "400 bytes");
        assert_eq!(inbox.accept(&key(1, "c"), 1, &[1]), Err(SharedRefusal::TooManyNames { limit: 2 }));
        assert_eq!(inbox.accept(&key(1, "b"), 2, &[51]), Err(SharedRefusal::OwnerOverBudget { bytes: 404, limit: 400 }));
        assert_eq!(inbox.accept(&key(1, "b"), 3, &[10]), Ok(()), "a new value of a name held replaces its bytes");
        assert_eq!(inbox.accept(&key(2, "c"), 1, &[100]), Ok(()), "another player's names and bytes are its own");
        inbox.forget_owner(PeerUuid([1; 16]));
        assert_eq!(inbox.accept(&key(1, "c"), 1, &[1]), Ok(()), "a player that left leaves nothing counted");
    }
}
