//! A compiled block as data: the dispatches in order, the pooled slots they read and write, and
//! the steps the compiler hands to slot allocation.

use super::kernel::Kernel;
use super::params::KernelParams;

/// What a dispatch binds at an input position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operand {
    /// A pooled activation slot.
    Slot(usize),
    /// A resident weight (initializer) by value name.
    Constant(String),
    /// Nothing: the kernel does not read this binding for this dispatch.
    Unused,
}

/// One kernel dispatch.
#[derive(Clone, Debug, PartialEq)]
pub struct Dispatch {
    /// Which entry point.
    pub kernel: Kernel,
    /// What the kernel reads from binding 0.
    pub params: KernelParams,
    /// Bindings 1..=n.
    pub inputs: Vec<Operand>,
    /// The slot written.
    pub output: usize,
    /// Workgroup counts.
    pub workgroups: [u32; 3],
}

/// A compiled block: dispatches in order over `slot_sizes.len()` pooled buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    /// Dispatches in execution order.
    pub dispatches: Vec<Dispatch>,
    /// Size of each pooled slot, in `f32` values.
    pub slot_sizes: Vec<usize>,
    /// The slot the input is copied into.
    pub input_slot: usize,
    /// The slot holding the output after the last dispatch.
    pub output_slot: usize,
    /// Shape of the input.
    pub input_shape: Vec<usize>,
    /// Shape of the output.
    pub output_shape: Vec<usize>,
    /// Names of the initializers the dispatches read.
    pub constants: Vec<String>,
}

/// One kernel call before slot assignment: the kernel, its parameters, its operands by value
/// name (`None`: an unused binding) and its workgroup grid.
pub(super) type KernelCall = (Kernel, KernelParams, Vec<Option<String>>, [u32; 3]);

/// One step before slot assignment: either kernel calls producing a value, or an alias.
pub(super) enum Step {
    Compute { calls: Vec<KernelCall>, output: String },
    Alias { from: String, to: String },
}

