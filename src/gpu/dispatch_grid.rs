//! What the compiler's lowerings share: its error type and the workgroup grids of 1-D kernels.

use thiserror::Error;

use crate::model::ir::Node;
use crate::model::ModelError;

/// Why a graph could not be compiled for the GPU.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CompileError {
    /// Shape inference failed (wrong input shape, inconsistent graph).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A node's configuration has no GPU kernel.
    #[error("node '{node}': no GPU kernel for this case: {reason}")]
    Unsupported {
        /// Node name.
        node: String,
        /// What is not supported.
        reason: String,
    },
}

/// Workgroups one grid dimension may hold (WebGPU's `maxComputeWorkgroupsPerDimension` default).
pub(super) const MAX_GROUPS: usize = 65535;

/// The grid of a 1-D kernel of 64-wide workgroups over `total` invocations.
pub(crate) fn grid_1d(total: usize) -> [u32; 3] {
    let groups = total.div_ceil(64).max(1);
    let x = groups.min(MAX_GROUPS);
    [x as u32, groups.div_ceil(x) as u32, 1]
}

/// A node the GPU cannot run, and why.
pub(super) fn unsupported(node: &Node, reason: String) -> CompileError {
    CompileError::Unsupported { node: node.name.clone(), reason }
}
