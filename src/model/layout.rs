//! Data movement and reductions on the CPU, with NumPy's semantics as ONNX specifies them:
//! transposes, strided slices and reductions over any axes. The CPU reference runs them, the
//! import-time constant folder too, and the GPU compiler takes the same slice ranges.

use super::ir::ReduceOp;
use crate::tensor::Tensor;

/// Normalises a possibly negative axis for a tensor of `rank` dimensions.
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    (0..rank as i64).contains(&a).then_some(a as usize)
}

/// Row-major strides of `input` seen through broadcasting to `out` (0 on broadcast dimensions).
pub fn broadcast_strides(input: &[usize], out: &[usize]) -> Vec<usize> {
    let offset = out.len() - input.len();
    let mut strides = vec![0; out.len()];
    let mut stride = 1;
    for i in (0..input.len()).rev() {
        if input[i] != 1 {
            strides[i + offset] = stride;
        }
        stride *= input[i];
    }
    strides
}

/// What one dimension of a slice takes: `count` indices from `start`, `step` apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DimRange {
    /// First index taken.
    pub start: usize,
    /// Distance between taken indices (negative walks backwards).
    pub step: i64,
    /// Indices taken.
    pub count: usize,
}

/// Resolves ONNX Slice's `starts`, `ends`, `axes` and `steps` on a tensor of `shape` (negative
/// indices count from the end; bounds are clamped) into a range per dimension.
pub fn slice_ranges(shape: &[usize], starts: &[i64], ends: &[i64], axes: &[i64], steps: &[i64]) -> Result<Vec<DimRange>, String> {
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(format!("starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} differ in length"));
    }
    let mut ranges: Vec<DimRange> = shape.iter().map(|&d| DimRange { start: 0, step: 1, count: d }).collect();
    for k in 0..starts.len() {
        let axis = normalize_axis(axes[k], shape.len()).ok_or_else(|| format!("axis {} out of range for rank {}", axes[k], shape.len()))?;
        let (dim, step) = (shape[axis] as i64, steps[k]);
        if step == 0 {
            return Err("a step of 0".into());
        }
        let resolve = |v: i64, low: i64, high: i64| (if v < 0 { v.saturating_add(dim) } else { v }).clamp(low, high);
        let (start, end) = if step > 0 {
            (resolve(starts[k], 0, dim), resolve(ends[k], 0, dim))
        } else {
            (resolve(starts[k], 0, dim - 1), resolve(ends[k], -1, dim - 1))
        };
        let span = if step > 0 { end - start } else { start - end };
        let count = if span <= 0 { 0 } else { (span + step.abs() - 1) / step.abs() };
        ranges[axis] = DimRange { start: start.max(0) as usize, step, count: count as usize };
    }
    Ok(ranges)
}

/// Row-major strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    (0..shape.len()).map(|d| shape[d + 1..].iter().product()).collect()
}

/// The slice of `x` that `ranges` select.
pub fn slice(x: &Tensor, ranges: &[DimRange]) -> Tensor {
    let out: Vec<usize> = ranges.iter().map(|r| r.count).collect();
    let in_strides = strides(x.shape());
    let total: usize = out.iter().product();
    let mut values = Vec::with_capacity(total);
    for i in 0..total {
        let (mut rem, mut source) = (i, 0i64);
        for d in (0..out.len()).rev() {
            let coord = (rem % out[d]) as i64;
            rem /= out[d];
            source += (ranges[d].start as i64 + coord * ranges[d].step) * in_strides[d] as i64;
        }
        values.push(x.data()[source as usize]);
    }
    Tensor::new(out, values).expect("the slice's shape holds its values")
}

/// `f` over `inputs` broadcast to `out` (NumPy rules; `out` is their broadcast shape), one
/// output value from one value of each input.
pub fn broadcast_map(inputs: &[&Tensor], out: &[usize], f: impl Fn(&[f32]) -> f32) -> Vec<f32> {
    let strides: Vec<Vec<usize>> = inputs.iter().map(|t| broadcast_strides(t.shape(), out)).collect();
    let mut args = vec![0.0; inputs.len()];
    (0..out.iter().product::<usize>())
        .map(|i| {
            for (k, t) in inputs.iter().enumerate() {
                let (mut rem, mut index) = (i, 0);
                for d in (0..out.len()).rev() {
                    index += (rem % out[d]) * strides[k][d];
                    rem /= out[d];
                }
                args[k] = t.data()[index];
            }
            f(&args)
        })
        .collect()
}

/// `tensors` joined along `axis` (their other dimensions agree).
pub fn concat(tensors: &[&Tensor], axis: usize) -> Vec<f32> {
    let outer: usize = tensors.first().map_or(0, |t| t.shape()[..axis].iter().product());
    let mut data = Vec::with_capacity(tensors.iter().map(|t| t.len()).sum());
    for o in 0..outer {
        for t in tensors {
            let slab: usize = t.shape()[axis..].iter().product();
            data.extend_from_slice(&t.data()[o * slab..(o + 1) * slab]);
        }
    }
    data
}

/// Rows of `data` along `axis` picked by `indices` (values rounded; negative ones count from
/// the end; out of range ones clamped, as the GPU kernel does).
pub fn gather(data: &Tensor, axis: usize, indices: &Tensor) -> Vec<f32> {
    let shape = data.shape();
    let (outer, extent, inner): (usize, usize, usize) = (shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product());
    let mut values = Vec::with_capacity(outer * indices.len() * inner);
    for o in 0..outer {
        for &index in indices.data() {
            let index = index.round() as i64;
            let row = (if index < 0 { index + extent as i64 } else { index }).clamp(0, extent as i64 - 1) as usize;
            let start = (o * extent + row) * inner;
            values.extend_from_slice(&data.data()[start..start + inner]);
        }
    }
    values
}

/// `x` with its axes permuted: output axis `d` is input axis `perm[d]`.
pub fn transpose(x: &Tensor, perm: &[usize]) -> Tensor {
    let shape = x.shape();
    let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let in_strides = strides(shape);
    let total: usize = out.iter().product();
    let mut values = Vec::with_capacity(total);
    for i in 0..total {
        let (mut rem, mut source) = (i, 0);
        for d in (0..out.len()).rev() {
            source += (rem % out[d]) * in_strides[perm[d]];
            rem /= out[d];
        }
        values.push(x.data()[source]);
    }
    Tensor::new(out, values).expect("the transpose's shape holds its values")
}

/// The reduced axes (sorted) of a reduction over `axes` (`None`: every axis) of a tensor of rank
/// `rank`.
pub fn reduced_axes(axes: Option<&[i64]>, rank: usize) -> Result<Vec<usize>, String> {
    let mut reduced: Vec<usize> = match axes {
        None => (0..rank).collect(),
        Some(axes) => axes.iter().map(|&a| normalize_axis(a, rank).ok_or_else(|| format!("axis {a} out of range for rank {rank}"))).collect::<Result<_, _>>()?,
    };
    reduced.sort_unstable();
    reduced.dedup();
    Ok(reduced)
}

/// Reduces `x` over `axes` (sorted, distinct), keeping them as size 1 in the output's shape when
/// `keep_dims`.
pub fn reduce(x: &Tensor, op: ReduceOp, axes: &[usize], keep_dims: bool) -> Tensor {
    let shape = x.shape();
    let kept: Vec<usize> = shape.iter().enumerate().map(|(d, &n)| if axes.contains(&d) { 1 } else { n }).collect();
    let in_strides = strides(shape);
    let count: usize = axes.iter().map(|&a| shape[a]).product();
    let total: usize = kept.iter().product();
    let mut values = Vec::with_capacity(total);
    for i in 0..total {
        let (mut rem, mut base) = (i, 0);
        for d in (0..kept.len()).rev() {
            base += (rem % kept[d]) * in_strides[d];
            rem /= kept[d];
        }
        let mut acc: f64 = match op {
            ReduceOp::Max => f64::NEG_INFINITY,
            ReduceOp::Min => f64::INFINITY,
            _ => 0.0,
        };
        for r in 0..count {
            let (mut rem, mut offset) = (r, 0);
            for &a in axes.iter().rev() {
                offset += (rem % shape[a]) * in_strides[a];
                rem /= shape[a];
            }
            let v = x.data()[base + offset] as f64;
            acc = match op {
                ReduceOp::Mean | ReduceOp::Sum => acc + v,
                ReduceOp::Max => acc.max(v),
                ReduceOp::Min => acc.min(v),
                ReduceOp::L2 => acc + v * v,
            };
        }
        values.push(match op {
            ReduceOp::Mean => (acc / count.max(1) as f64) as f32,
            ReduceOp::L2 => acc.sqrt() as f32,
            _ => acc as f32,
        });
    }
    let out = if keep_dims { kept } else { shape.iter().enumerate().filter(|(d, _)| !axes.contains(d)).map(|(_, &n)| n).collect() };
    Tensor::new(out, values).expect("the reduction's shape holds its values")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], values: &[f32]) -> Tensor {
        Tensor::new(shape.to_vec(), values.to_vec()).unwrap()
    }

    #[test]
    fn slice_ranges_clamp_and_count_like_numpy() {
        let r = slice_ranges(&[10], &[-3], &[i64::MAX], &[0], &[1]).unwrap();
        assert_eq!(r, vec![DimRange { start: 7, step: 1, count: 3 }]);
        let r = slice_ranges(&[10], &[8], &[1], &[0], &[-3]).unwrap();
        assert_eq!(r, vec![DimRange { start: 8, step: -3, count: 3 }], "8, 5, 2");
        let r = slice_ranges(&[10], &[i64::MAX], &[i64::MIN], &[-1], &[-1]).unwrap();
        assert_eq!(r, vec![DimRange { start: 9, step: -1, count: 10 }]);
        assert_eq!(slice_ranges(&[4], &[3], &[1], &[0], &[1]).unwrap()[0].count, 0, "empty");
        assert!(slice_ranges(&[4], &[0], &[1], &[1], &[1]).is_err(), "axis out of range");
    }

    #[test]
    fn a_reduction_over_inner_axes_keeps_or_drops_them() {
        let x = t(&[2, 2, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let mean = reduce(&x, ReduceOp::Mean, &[1, 2], false);
        assert_eq!((mean.shape().to_vec(), mean.data().to_vec()), (vec![2], vec![2.5, 6.5]));
        let max = reduce(&x, ReduceOp::Max, &[0], true);
        assert_eq!((max.shape().to_vec(), max.data().to_vec()), (vec![1, 2, 2], vec![5.0, 6.0, 7.0, 8.0]));
        let l2 = reduce(&t(&[2], &[3.0, 4.0]), ReduceOp::L2, &[0], false);
        assert_eq!((l2.shape().to_vec(), l2.data().to_vec()), (vec![], vec![5.0]));
    }

    #[test]
    fn transposing_a_matrix_swaps_rows_and_columns() {
        let y = transpose(&t(&[2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]), &[1, 0]);
        assert_eq!((y.shape().to_vec(), y.data().to_vec()), (vec![3, 2], vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]));
    }
}
