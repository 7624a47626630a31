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
    /// The shape each named tensor must have, for the names the game declares; a value of
    /// another shape is refused. Names not declared may have any shape.
    pub shapes: HashMap<String, Vec<usize>>,
}

impl Default for SharedTensorRules {
    fn default() -> Self {
        Self { max_values: 1 << 20, shapes: HashMap::new() }
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
    held: HashMap<SharedKey, u64>,
}

impl SharedInbox {
    /// An inbox that accepts what `rules` allow.
    pub fn new(rules: SharedTensorRules) -> Self {
        Self { rules, held: HashMap::new() }
    }

    /// Takes `version` of `key`, of `shape`, or says why not.
    pub fn accept(&mut self, key: &SharedKey, version: u64, shape: &[usize]) -> Result<(), SharedRefusal> {
        if let Some(&held) = self.held.get(key).filter(|&&held| version <= held) {
            return Err(SharedRefusal::Stale { version, held });
        }
        let values = shape.iter().product::<usize>();
        if values > self.rules.max_values {
            return Err(SharedRefusal::TooLarge { values, limit: self.rules.max_values });
        }
        if let Some(expected) = self.rules.shapes.get(&key.name).filter(|expected| expected.as_slice() != shape) {
            return Err(SharedRefusal::WrongShape { expected: expected.clone(), got: shape.to_vec() });
        }
        self.held.insert(key.clone(), version);
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
}
