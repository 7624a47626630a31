//! [`CollectiveRun`]: one collective on one player, sans IO: what this player sends, what it
//! waits for, what it refuses, and the result, computed on the CPU in the order of the players'
//! ids, so that every player that gets one gets the same bits.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::net::{CollectiveOp, CollectiveTag, PeerUuid, Reduction, MAX_MEMBERS};
use crate::tensor::Tensor;

/// Why a collective failed (on this player).
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CollectiveError {
    /// This player is not among the members, the root is not, or there are more than
    /// [`MAX_MEMBERS`].
    #[error("the members {0:?} do not include this player and the root, or are too many")]
    BadMembers(Vec<PeerUuid>),
    /// This player's input is missing where the operation reads it, or cannot be cut into
    /// one equal part per member (scatter).
    #[error("this player's input does not fit the operation: {0}")]
    BadInput(&'static str),
    /// A member counts other members, or runs another operation, under the same name and round.
    #[error("{peer} runs {theirs:?} where this player runs {ours:?}")]
    Disagreement {
        /// The member.
        peer: PeerUuid,
        /// Its account of the collective.
        theirs: CollectiveTag,
        /// This player's.
        ours: CollectiveTag,
    },
    /// A member's tensor has another shape than this player's.
    #[error("{peer}'s tensor has shape {got:?} where {expected:?} is needed")]
    ShapesDisagree {
        /// The member.
        peer: PeerUuid,
        /// The shape needed.
        expected: Vec<usize>,
        /// The shape it sent.
        got: Vec<usize>,
    },
    /// A player that is not a member, or that this player expects nothing from, sent a part.
    #[error("{0} is not expected to contribute")]
    Stranger(PeerUuid),
    /// A member this player waits for left the room first: the collective fails rather than
    /// give a result that other members, who may have had its part, would not share.
    #[error("{0} left before its part arrived")]
    PlayerLeft(PeerUuid),
    /// Parts were still missing when the time was up.
    #[error("no part from {missing:?} in time")]
    TimedOut {
        /// The members whose parts are missing.
        missing: Vec<PeerUuid>,
    },
    /// This player's part could not be sent to a member.
    #[error("cannot send this player's part to {0}")]
    CannotSend(PeerUuid),
}

/// A part of this player's to send: to whom, and what.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    /// The member.
    pub to: PeerUuid,
    /// The tensor.
    pub tensor: Tensor,
}

/// One collective on this player: the parts it holds and the ones it waits for.
#[derive(Clone, Debug)]
pub struct CollectiveRun {
    tag: CollectiveTag,
    own: PeerUuid,
    /// The parts this player combines, by member: its own and those that arrived.
    parts: BTreeMap<PeerUuid, Tensor>,
}

impl CollectiveRun {
    /// Starts `op` among `members` (this player included) with this player's `input` (where the
    /// operation reads it: every member's for all-gather and all-reduce, the root's for
    /// broadcast and scatter); returns the run and the parts to send.
    pub fn start(op: CollectiveOp, own: PeerUuid, mut members: Vec<PeerUuid>, input: Option<Tensor>) -> Result<(Self, Vec<Part>), CollectiveError> {
        members.sort();
        members.dedup();
        let root = match op {
            CollectiveOp::Broadcast { root } | CollectiveOp::Scatter { root } => Some(root),
            CollectiveOp::AllGather | CollectiveOp::AllReduce(_) => None,
        };
        if !members.contains(&own) || root.is_some_and(|r| !members.contains(&r)) || members.len() > MAX_MEMBERS {
            return Err(CollectiveError::BadMembers(members));
        }
        let others: Vec<PeerUuid> = members.iter().copied().filter(|m| *m != own).collect();
        let mut run = Self { tag: CollectiveTag { op, members: members.clone() }, own, parts: BTreeMap::new() };
        let sends_input = root.is_none_or(|r| r == own);
        if !sends_input {
            return Ok((run, Vec::new()));
        }
        let input = input.ok_or(CollectiveError::BadInput("the operation reads this player's input, and there is none"))?;
        let parts = match op {
            CollectiveOp::Scatter { .. } => {
                let mut pieces = split_rows(&input, members.len())?;
                let own_index = members.iter().position(|m| *m == own).expect("checked above");
                run.parts.insert(own, pieces[own_index].clone());
                members.iter().zip(pieces.drain(..)).filter(|(m, _)| **m != own).map(|(&to, tensor)| Part { to, tensor }).collect()
            }
            _ => {
                run.parts.insert(own, input.clone());
                others.iter().map(|&to| Part { to, tensor: input.clone() }).collect()
            }
        };
        Ok((run, parts))
    }

    /// The collective, as this player counts it.
    pub fn tag(&self) -> &CollectiveTag {
        &self.tag
    }

    /// The members whose parts this player still waits for.
    pub fn missing(&self) -> Vec<PeerUuid> {
        let expected: Vec<PeerUuid> = match self.tag.op {
            CollectiveOp::Broadcast { root } | CollectiveOp::Scatter { root } => vec![root],
            CollectiveOp::AllGather | CollectiveOp::AllReduce(_) => self.tag.members.clone(),
        };
        expected.into_iter().filter(|m| !self.parts.contains_key(m)).collect()
    }

    /// Takes `from`'s part, sent under `tag`.
    pub fn receive(&mut self, from: PeerUuid, tag: &CollectiveTag, tensor: Tensor) -> Result<(), CollectiveError> {
        if *tag != self.tag {
            return Err(CollectiveError::Disagreement { peer: from, theirs: tag.clone(), ours: self.tag.clone() });
        }
        if !self.missing().contains(&from) {
            return Err(CollectiveError::Stranger(from));
        }
        // Where this player has its own part (all-gather, all-reduce), every part has its shape.
        if let Some(expected) = self.parts.get(&self.own).map(|t| t.shape().to_vec())
            && tensor.shape() != expected.as_slice()
        {
            return Err(CollectiveError::ShapesDisagree { peer: from, expected, got: tensor.shape().to_vec() });
        }
        self.parts.insert(from, tensor);
        Ok(())
    }

    /// A member left: the collective fails if its part is still missing.
    pub fn member_left(&self, peer: PeerUuid) -> Option<CollectiveError> {
        self.missing().contains(&peer).then_some(CollectiveError::PlayerLeft(peer))
    }

    /// The result, once every part this player waits for is in.
    pub fn result(&self) -> Option<Tensor> {
        if !self.missing().is_empty() {
            return None;
        }
        Some(match self.tag.op {
            CollectiveOp::Broadcast { root } | CollectiveOp::Scatter { root } => self.parts.get(&root)?.clone(),
            CollectiveOp::AllGather => stack_rows(&self.parts.values().collect::<Vec<_>>()),
            CollectiveOp::AllReduce(reduction) => reduce(reduction, &self.parts.values().collect::<Vec<_>>()),
        })
    }
}

/// Combines `inputs` (all of one shape) value by value, in their order.
pub fn reduce(reduction: Reduction, inputs: &[&Tensor]) -> Tensor {
    let mut values = inputs[0].data().to_vec();
    for input in &inputs[1..] {
        for (value, &other) in values.iter_mut().zip(input.data()) {
            *value = match reduction {
                Reduction::Sum | Reduction::Mean => *value + other,
                Reduction::Max => value.max(other),
            };
        }
    }
    if reduction == Reduction::Mean {
        let count = inputs.len() as f32;
        values.iter_mut().for_each(|v| *v /= count);
    }
    Tensor::new(inputs[0].shape().to_vec(), values).expect("the inputs' shape")
}

/// `inputs` (all of one shape) one after another along the first axis.
fn stack_rows(inputs: &[&Tensor]) -> Tensor {
    let mut shape = inputs[0].shape().to_vec();
    if shape.is_empty() {
        shape.push(1);
    }
    shape[0] *= inputs.len();
    Tensor::new(shape, inputs.iter().flat_map(|t| t.data().iter().copied()).collect()).expect("rows of one shape")
}

/// `input` cut along its first axis into `count` equal parts.
fn split_rows(input: &Tensor, count: usize) -> Result<Vec<Tensor>, CollectiveError> {
    let rows = input.shape().first().copied().unwrap_or(0);
    if rows == 0 || rows % count != 0 {
        return Err(CollectiveError::BadInput("a scatter's input must have a first axis that splits into one equal part per member"));
    }
    let mut shape = input.shape().to_vec();
    shape[0] = rows / count;
    let size = input.len() / count;
    // Rows of no values (a shape like [4, 0]) split into empty parts.
    Ok((0..count).map(|i| Tensor::new(shape.clone(), input.data()[i * size..(i + 1) * size].to_vec()).expect("an equal part")).collect())
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
