//! What a collective's contribution says about the collective ([`CollectiveTag`]): the
//! operation, and the players taking part as the sender counts them (every member checks that
//! they agree). The collective's name and the sender travel as the tensor's
//! [`super::codec::SharedKey`].
//!
//! ```text
//! tag = op u8 (0 broadcast | 1 all-gather | 2 all-reduce | 3 scatter)
//!     | root [16] (broadcast, scatter) | reduction u8 (all-reduce: 0 sum | 1 mean | 2 max)
//!     | members u8 | member [16] * members
//! ```

use super::auth::PeerUuid;
use super::wire::{FrameError, Reader, Writer};

/// The most players one collective may have.
pub const MAX_MEMBERS: usize = 16;
/// The largest encoded tag.
pub(super) const MAX_TAG_BYTES: usize = 1 + 16 + 1 + 16 * MAX_MEMBERS;

/// How an all-reduce combines the players' tensors, value by value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// The sum.
    Sum,
    /// The sum divided by the number of players.
    Mean,
    /// The largest.
    Max,
}

/// What a collective does with the players' tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CollectiveOp {
    /// Every player gets `root`'s tensor.
    Broadcast {
        /// The player whose tensor everyone gets.
        root: PeerUuid,
    },
    /// Every player gets every player's tensor, stacked along the first axis in the order of
    /// the players' ids.
    AllGather,
    /// Every player gets the players' tensors combined value by value, in the order of the
    /// players' ids (so every player gets the same bits).
    AllReduce(Reduction),
    /// `root`'s tensor is cut along its first axis into one equal part per player, in the
    /// order of the players' ids; each player gets its part.
    Scatter {
        /// The player whose tensor is cut.
        root: PeerUuid,
    },
}

/// A contribution's account of its collective.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectiveTag {
    /// The operation.
    pub op: CollectiveOp,
    /// The players taking part, as the sender counts them, in the order of their ids.
    pub members: Vec<PeerUuid>,
}

pub(super) fn write_tag(w: &mut Writer, tag: &CollectiveTag) {
    match tag.op {
        CollectiveOp::Broadcast { root } => {
            w.u8(0);
            w.bytes(&root.0);
        }
        CollectiveOp::AllGather => w.u8(1),
        CollectiveOp::AllReduce(reduction) => {
            w.u8(2);
            w.u8(match reduction {
                Reduction::Sum => 0,
                Reduction::Mean => 1,
                Reduction::Max => 2,
            });
        }
        CollectiveOp::Scatter { root } => {
            w.u8(3);
            w.bytes(&root.0);
        }
    }
    w.u8(tag.members.len() as u8);
    for member in &tag.members {
        w.bytes(&member.0);
    }
}

pub(super) fn read_tag(r: &mut Reader) -> Result<CollectiveTag, FrameError> {
    let op = match r.u8()? {
        0 => CollectiveOp::Broadcast { root: PeerUuid(r.array()?) },
        1 => CollectiveOp::AllGather,
        2 => CollectiveOp::AllReduce(match r.u8()? {
            0 => Reduction::Sum,
            1 => Reduction::Mean,
            2 => Reduction::Max,
            other => return Err(r.malformed(format!("reduction {other}"))),
        }),
        3 => CollectiveOp::Scatter { root: PeerUuid(r.array()?) },
        other => return Err(r.malformed(format!("collective operation {other}"))),
    };
    let count = r.u8()? as usize;
    if count > MAX_MEMBERS {
        return Err(r.malformed(format!("{count} members exceed {MAX_MEMBERS}")));
    }
    let members = (0..count).map(|_| r.array().map(PeerUuid)).collect::<Result<Vec<_>, _>>()?;
    Ok(CollectiveTag { op, members })
}
