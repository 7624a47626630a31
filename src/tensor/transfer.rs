//! How an activation travels between peers: the dtype a partition plan names for each cut.

use serde::{Deserialize, Serialize};

/// How a cut's activation is encoded on the wire.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransferDtype {
    /// 4 bytes per value, bit-exact.
    F32,
    /// 2 bytes per value (IEEE half precision).
    F16,
    /// 1 byte per value, with a per-tensor scale and zero point computed when sent.
    Int8,
}

impl TransferDtype {
    /// Bytes per value on the wire.
    pub fn bytes_per_value(self) -> usize {
        match self {
            TransferDtype::F32 => 4,
            TransferDtype::F16 => 2,
            TransferDtype::Int8 => 1,
        }
    }
}
