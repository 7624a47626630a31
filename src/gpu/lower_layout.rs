//! Lowering of data movement and reductions: transposes and strided slices become one strided
//! copy each, reductions one reduce dispatch.

use super::dispatch_grid::{grid_1d, unsupported, CompileError};
use super::kernel::Kernel;
use super::params::{GatherParams, KernelParams, LayerNormParams, PadParams, ReduceParams, SelectParams, SoftmaxParams, StridedCopyParams, MAX_RANK};
use crate::model::ir::{Node, ReduceOp};
use crate::model::layout::{normalize_axis, reduced_axes, slice_ranges, strides, DimRange};
use crate::model::shape::broadcast_strides;

/// Extents and strides padded to the kernels' fixed rank.
fn padded<T: Copy>(values: impl IntoIterator<Item = T>, fill: T) -> [T; MAX_RANK] {
    let mut out = [fill; MAX_RANK];
    for (slot, v) in out.iter_mut().zip(values) {
        *slot = v;
    }
    out
}

fn check_rank(node: &Node, rank: usize) -> Result<(), CompileError> {
    if rank > MAX_RANK {
        return Err(unsupported(node, format!("rank {rank} is above {MAX_RANK}")));
    }
    Ok(())
}

/// A copy of `ranges` of a tensor of shape `input`: output dimension `d` walks input dimension
/// `source_dims[d]` (a permutation for a transpose, the identity for a slice).
fn strided_copy(node: &Node, input: &[usize], ranges: &[DimRange], source_dims: &[usize]) -> Result<(Kernel, KernelParams, [u32; 3]), CompileError> {
    check_rank(node, input.len())?;
    let in_strides = strides(input);
    let offset: usize = ranges.iter().zip(&in_strides).map(|(r, s)| r.start * s).sum();
    let out_dims: Vec<u32> = source_dims.iter().map(|&d| ranges[d].count as u32).collect();
    let total: usize = out_dims.iter().map(|&d| d as usize).product();
    let step_strides = source_dims.iter().map(|&d| (ranges[d].step * in_strides[d] as i64) as i32);
    let params = StridedCopyParams {
        total: total as u32,
        rank: input.len() as u32,
        offset: offset as u32,
        out_dims: padded(out_dims, 1),
        strides: padded(step_strides, 0),
    };
    Ok((Kernel::StridedCopy, KernelParams::StridedCopy(params), grid_1d(total)))
}

/// A transpose of a tensor of shape `input`.
pub(super) fn transpose(node: &Node, input: &[usize], perm: &[usize]) -> Result<(Kernel, KernelParams, [u32; 3]), CompileError> {
    let whole: Vec<DimRange> = input.iter().map(|&d| DimRange { start: 0, step: 1, count: d }).collect();
    strided_copy(node, input, &whole, perm)
}

/// A strided slice of a tensor of shape `input`.
pub(super) fn slice(node: &Node, input: &[usize], starts: &[i64], ends: &[i64], axes: &[i64], steps: &[i64]) -> Result<(Kernel, KernelParams, [u32; 3]), CompileError> {
    let ranges = slice_ranges(input, starts, ends, axes, steps).map_err(|reason| unsupported(node, reason))?;
    let identity: Vec<usize> = (0..input.len()).collect();
    strided_copy(node, input, &ranges, &identity)
}

/// A LayerNormalization of a tensor of shape `input` over the axes from `axis` on.
pub(super) fn layer_norm(node: &Node, input: &[usize], axis: i64, epsilon: f32, has_bias: bool) -> Result<(Kernel, KernelParams, [u32; 3]), CompileError> {
    let a = normalize_axis(axis, input.len()).ok_or_else(|| unsupported(node, format!("axis {axis} out of range")))?;
    let rows: usize = input[..a].iter().product();
    let params = LayerNormParams {
        rows: rows as u32,
        inner: input[a..].iter().product::<usize>() as u32,
        has_bias: has_bias as u32,
        epsilon,
        per_channel: 0,
        channels: 1,
    };
    Ok((Kernel::LayerNorm, KernelParams::LayerNorm(params), grid_1d(rows)))
}

/// An InstanceNormalization of a tensor of shape `input` (`[N, C, ...]`, checked by shape
/// inference).
pub(super) fn instance_norm(input: &[usize], epsilon: f32) -> (Kernel, KernelParams, [u32; 3]) {
    let rows = input[0] * input[1];
    let params = LayerNormParams {
        rows: rows as u32,
        inner: input[2..].iter().product::<usize>() as u32,
        has_bias: 1,
        epsilon,
        per_channel: 1,
        channels: input[1] as u32,
    };
    (Kernel::LayerNorm, KernelParams::LayerNorm(params), grid_1d(rows))
}

/// A LogSoftmax along `axis` of a tensor of shape `shape`.
pub(super) fn log_softmax(node: &Node, shape: &[usize], axis: i64) -> Result<(Kernel, KernelParams, [u32; 3]), CompileError> {
    let a = normalize_axis(axis, shape.len()).ok_or_else(|| unsupported(node, format!("axis {axis} out of range")))?;
    let rows: usize = shape.iter().product::<usize>() / shape[a].max(1);
    let params = SoftmaxParams { rows: rows as u32, length: shape[a] as u32, inner: shape[a + 1..].iter().product::<usize>() as u32, log: 1 };
    Ok((Kernel::Softmax, KernelParams::Softmax(params), grid_1d(rows)))
}

/// An Expand of a tensor of shape `input` to `out`: a copy with stride 0 along broadcast axes.
pub(super) fn expand(node: &Node, input: &[usize], out: &[usize]) -> Result<(Kernel, KernelParams, [u32; 3]), CompileError> {
    check_rank(node, out.len())?;
    let strides = broadcast_strides(input, out);
    let total: usize = out.iter().product();
    let params = StridedCopyParams {
        total: total as u32,
        rank: out.len() as u32,
        offset: 0,
        out_dims: padded(out.iter().map(|&d| d as u32), 1),
        strides: padded(strides.iter().map(|&s| s as i32), 0),
    };
    Ok((Kernel::StridedCopy, KernelParams::StridedCopy(params), grid_1d(total)))
}

/// A Where of operands of shapes `operands` (condition, a, b) broadcast to `out`.
pub(super) fn select(node: &Node, operands: &[&[usize]], out: &[usize]) -> Result<(Kernel, KernelParams, [u32; 3]), CompileError> {
    check_rank(node, out.len())?;
    let strides = |i: usize| padded(broadcast_strides(operands[i], out).into_iter().map(|s| s as u32), 0);
    let total: usize = out.iter().product();
    let params = SelectParams {
        total: total as u32,
        rank: out.len() as u32,
        out_dims: padded(out.iter().map(|&d| d as u32), 1),
        condition_strides: strides(0),
        a_strides: strides(1),
        b_strides: strides(2),
    };
    Ok((Kernel::Select, KernelParams::Select(params), grid_1d(total)))
}

/// A Pad (`mode` 0 constant, 1 reflect, 2 edge) or Tile (`mode` 3, begins 0) of a tensor of shape
/// `input` into one of shape `out`.
pub(super) fn pad(node: &Node, input: &[usize], out: &[usize], mode: u32, value: f32, begins: &[i64]) -> Result<(Kernel, KernelParams, [u32; 3]), CompileError> {
    check_rank(node, input.len())?;
    let total: usize = out.iter().product();
    let params = PadParams {
        total: total as u32,
        rank: input.len() as u32,
        mode,
        value,
        out_dims: padded(out.iter().map(|&d| d as u32), 1),
        in_dims: padded(input.iter().map(|&d| d as u32), 1),
        begins: padded(begins.iter().map(|&b| b as i32), 0),
    };
    Ok((Kernel::Pad, KernelParams::Pad(params), grid_1d(total)))
}

/// A Gather along `axis` of data of shape `data` by indices of shape `indices`.
pub(super) fn gather(node: &Node, data: &[usize], indices: &[usize], axis: i64) -> Result<(Kernel, KernelParams, [u32; 3]), CompileError> {
    let a = normalize_axis(axis, data.len()).ok_or_else(|| unsupported(node, format!("axis {axis} out of range")))?;
    let (outer, inner): (usize, usize) = (data[..a].iter().product(), data[a + 1..].iter().product());
    let count: usize = indices.iter().product();
    let total = outer * count * inner;
    let params = GatherParams { total: total as u32, extent: data[a] as u32, count: count as u32, inner: inner as u32 };
    Ok((Kernel::Gather, KernelParams::Gather(params), grid_1d(total)))
}

/// A reduction of a tensor of shape `input` over `axes`.
pub(super) fn reduce(node: &Node, input: &[usize], op: ReduceOp, axes: Option<&[i64]>) -> Result<(Kernel, KernelParams, [u32; 3]), CompileError> {
    check_rank(node, input.len())?;
    let reduced = reduced_axes(axes, input.len()).map_err(|reason| unsupported(node, reason))?;
    let in_strides = strides(input);
    let kept = input.iter().enumerate().map(|(d, &n)| if reduced.contains(&d) { 1 } else { n as u32 });
    let total: usize = input.iter().enumerate().filter(|(d, _)| !reduced.contains(d)).map(|(_, &n)| n).product();
    let params = ReduceParams {
        total: total as u32,
        op: ReduceParams::code(op),
        count: reduced.iter().map(|&a| input[a]).product::<usize>() as u32,
        rank: input.len() as u32,
        kept_dims: padded(kept, 1),
        strides: padded(in_strides.iter().map(|&s| s as u32), 0),
        reduced_rank: reduced.len() as u32,
        reduced_dims: padded(reduced.iter().map(|&a| input[a] as u32), 1),
        reduced_strides: padded(reduced.iter().map(|&a| in_strides[a] as u32), 0),
    };
    Ok((Kernel::Reduce, KernelParams::Reduce(params), grid_1d(total)))
}
