//! Lowering of Gemm and batched MatMul onto the matrix kernels (`matmul.wgsl`): transposes as
//! strides, and MatMul's broadcast batch axes folded into at most two levels of batch strides.

use super::dispatch_grid::{grid_1d, unsupported, CompileError, MAX_GROUPS};
use super::kernel::Kernel;
use super::params::{GemmParams, KernelParams};
use crate::model::ir::Node;
use crate::model::shape::{broadcast_strides, matmul_dims};

/// A kernel call: the kernel, its parameters and its grid.
type Call = (Kernel, KernelParams, [u32; 3]);

fn u(v: usize) -> u32 {
    v as u32
}

/// Outputs up to which a Gemm or MatMul splits each dot product across a workgroup.
const SPLIT_GEMM_OUTPUTS: usize = 16384;
/// Depth from which splitting a dot product across a workgroup pays.
const SPLIT_GEMM_MIN_DEPTH: usize = 64;

/// The Gemm/MatMul kernel for `outputs` dot products of length `depth`, and its grid.
fn gemm_kernel(outputs: usize, depth: usize) -> (Kernel, [u32; 3]) {
    if outputs <= SPLIT_GEMM_OUTPUTS && depth >= SPLIT_GEMM_MIN_DEPTH {
        let x = outputs.clamp(1, MAX_GROUPS);
        (Kernel::GemmSplit, [u(x), u(outputs.div_ceil(x)), 1])
    } else {
        (Kernel::Gemm, grid_1d(outputs))
    }
}

/// A Gemm's operands: `alpha * op(A) op(B) + beta * C`, C broadcast to the output `[m, n]`.
pub(super) struct GemmOperands<'a> {
    /// A's shape.
    pub a: &'a [usize],
    /// C's shape, where C is given.
    pub c: Option<&'a [usize]>,
    /// The output's shape.
    pub out: &'a [usize],
    /// A is read transposed.
    pub trans_a: bool,
    /// B is read transposed.
    pub trans_b: bool,
    /// Scales the product.
    pub alpha: f32,
    /// Scales C.
    pub beta: f32,
}

/// A Gemm (2-D, transposes as strides, C broadcast).
pub(super) fn gemm(g: &GemmOperands) -> Call {
    let (m, n) = (g.out[0], g.out[1]);
    let k = if g.trans_a { g.a[0] } else { g.a[1] };
    let (a_rs, a_cs) = if g.trans_a { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if g.trans_b { (1, k) } else { (n, 1) };
    let (has_c, c_rs, c_cs) = match g.c {
        Some(c) => {
            let s = broadcast_strides(c, g.out);
            (1, s[0], s[1])
        }
        None => (0, 0, 0),
    };
    let params = GemmParams {
        total: u(m * n),
        m: u(m),
        n: u(n),
        k: u(k),
        inner_batches: 1,
        a_row_stride: u(a_rs),
        a_col_stride: u(a_cs),
        b_row_stride: u(b_rs),
        b_col_stride: u(b_cs),
        has_c: u(has_c),
        c_row_stride: u(c_rs),
        c_col_stride: u(c_cs),
        alpha: g.alpha,
        beta: g.beta,
        ..GemmParams::default()
    };
    let (kernel, grid) = gemm_kernel(m * n, k);
    (kernel, KernelParams::Gemm(params), grid)
}

/// A batched MatMul of `a` by `b` (numpy's matmul: 1-D operands promoted, batch axes broadcast).
pub(super) fn matmul(node: &Node, a: &[usize], b: &[usize]) -> Result<Call, CompileError> {
    let (batch, m, k, n) = matmul_dims(a, b).expect("shape inference checked it");
    let batch_of = |shape: &[usize]| -> Vec<usize> { if shape.len() > 2 { shape[..shape.len() - 2].to_vec() } else { vec![] } };
    // Each operand's stride per broadcast batch axis, in matrices (0 where it broadcasts).
    let (a_strides, b_strides) = (broadcast_strides(&batch_of(a), &batch), broadcast_strides(&batch_of(b), &batch));
    let levels = batch_levels(&batch, &a_strides, &b_strides)
        .ok_or_else(|| unsupported(node, format!("batch broadcasting of {a:?} x {b:?} in more than two alternating groups of axes")))?;
    let [outer, inner] = levels;
    let total = batch.iter().product::<usize>() * m * n;
    // Row-major A [m, k] and B [k, n], no C.
    let params = GemmParams {
        total: u(total),
        m: u(m),
        n: u(n),
        k: u(k),
        inner_batches: u(inner.extent),
        a_batch_stride: u(inner.a_stride * m * k),
        b_batch_stride: u(inner.b_stride * k * n),
        a_outer_stride: u(outer.a_stride * m * k),
        b_outer_stride: u(outer.b_stride * k * n),
        a_row_stride: u(k),
        a_col_stride: 1,
        b_row_stride: u(n),
        b_col_stride: 1,
        alpha: 1.0,
        ..GemmParams::default()
    };
    let (kernel, grid) = gemm_kernel(total, k);
    Ok((kernel, KernelParams::Gemm(params), grid))
}

/// One level of batch: its extent and each operand's stride in matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BatchLevel {
    /// Batches at this level.
    pub extent: usize,
    /// A's stride between them (0: shared).
    pub a_stride: usize,
    /// B's stride between them (0: shared).
    pub b_stride: usize,
}

/// The broadcast batch axes folded into `[outer, inner]` levels: adjacent axes merge where both
/// operands step through them as one axis. `None` when more than two levels remain.
pub(super) fn batch_levels(batch: &[usize], a_strides: &[usize], b_strides: &[usize]) -> Option<[BatchLevel; 2]> {
    let mut levels: Vec<BatchLevel> = Vec::new();
    for d in (0..batch.len()).rev() {
        if batch[d] == 1 {
            continue;
        }
        let axis = BatchLevel { extent: batch[d], a_stride: a_strides[d], b_stride: b_strides[d] };
        match levels.last_mut() {
            // The axis continues the level below it for both operands.
            Some(level) if axis.a_stride == level.a_stride * level.extent && axis.b_stride == level.b_stride * level.extent => {
                level.extent *= axis.extent;
            }
            _ => levels.push(axis),
        }
    }
    let single = BatchLevel { extent: 1, a_stride: 0, b_stride: 0 };
    match levels.as_slice() {
        [] => Some([single, single]),
        [inner] => Some([single, *inner]),
        [inner, outer] => Some([*outer, *inner]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_classifier_at_batch_1_splits_its_dot_products_and_a_large_product_does_not() {
        assert_eq!(gemm_kernel(1000, 1280), (Kernel::GemmSplit, [1000, 1, 1]));
        assert_eq!(gemm_kernel(64 * 1000, 1280).0, Kernel::Gemm);
        assert_eq!(gemm_kernel(10, 8).0, Kernel::Gemm, "too short to split");
    }

    #[test]
    fn equal_batches_fold_into_one_level() {
        // [2, 3, m, k] x [2, 3, k, n]: six matrices each, stepped together.
        let levels = batch_levels(&[2, 3], &[3, 1], &[3, 1]).unwrap();
        assert_eq!(levels[0].extent, 1);
        assert_eq!(levels[1], BatchLevel { extent: 6, a_stride: 1, b_stride: 1 });
    }

    #[test]
    fn a_shared_operand_has_stride_zero() {
        // [4, m, k] x [k, n].
        let levels = batch_levels(&[4], &[1], &[0]).unwrap();
        assert_eq!(levels[1], BatchLevel { extent: 4, a_stride: 1, b_stride: 0 });
    }

    #[test]
    fn alternating_broadcast_axes_take_two_levels() {
        // [2, 1, m, k] x [1, 3, k, n]: A steps over the outer axis, B over the inner one.
        let levels = batch_levels(&[2, 3], &[1, 0], &[0, 1]).unwrap();
        assert_eq!(levels, [BatchLevel { extent: 2, a_stride: 1, b_stride: 0 }, BatchLevel { extent: 3, a_stride: 0, b_stride: 1 }]);
    }

    #[test]
    fn three_alternating_groups_are_refused() {
        // [2, 1, 4] x [1, 3, 1] over batch [2, 3, 4].
        assert_eq!(batch_levels(&[2, 3, 4], &[4, 0, 1], &[0, 1, 0]), None);
    }

    #[test]
    fn unit_axes_do_not_split_a_level() {
        // [2, 1, 3] x [2, 1, 3] over batch [2, 1, 3].
        let levels = batch_levels(&[2, 1, 3], &[3, 0, 1], &[3, 0, 1]).unwrap();
        assert_eq!(levels[1], BatchLevel { extent: 6, a_stride: 1, b_stride: 1 });
    }
}
