//! Shape inference: the shape of every value for a concrete input shape (batch included).

use std::collections::HashMap;

use super::error::ModelError;
use super::ir::{Conv2d, Graph, Node, Op, Pool2d};
pub use super::layout::{broadcast_strides, normalize_axis};
use super::layout::{reduced_axes, slice_ranges};

/// The shape of every value of a graph for one input shape.
pub type Shapes = HashMap<String, Vec<usize>>;

/// Checks `input` against the declared input dimensions and infers every value's shape.
pub fn infer_shapes(graph: &Graph, input: &[usize]) -> Result<Shapes, ModelError> {
    let declared = &graph.input.dims;
    let fits = declared.is_empty()
        || (declared.len() == input.len()
            && declared.iter().zip(input).all(|(d, &g)| d.is_none_or(|d| d == g)));
    if !fits || input.contains(&0) {
        let expected = declared
            .iter()
            .map(|d| d.map_or("?".to_string(), |d| d.to_string()))
            .collect::<Vec<_>>()
            .join("x");
        return Err(ModelError::InputShape {
            name: graph.input.name.clone(),
            expected: format!("[{expected}]"),
            got: input.to_vec(),
        });
    }
    let mut shapes: Shapes = graph
        .initializers
        .iter()
        .map(|(k, t)| (k.clone(), t.shape().to_vec()))
        .collect();
    shapes.insert(graph.input.name.clone(), input.to_vec());
    for node in &graph.nodes {
        let ins: Vec<&[usize]> = node.inputs.iter().map(|i| shapes[i].as_slice()).collect();
        let out = node_output_shape(node, &ins)?;
        shapes.insert(node.output.clone(), out);
    }
    Ok(shapes)
}

fn err(node: &Node, reason: impl Into<String>) -> ModelError {
    ModelError::Shape { node: node.name.clone(), reason: reason.into() }
}


/// NumPy broadcasting of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
            let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
            match (da, db) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

/// Output height and width of a 2-D window over an input of `[height, width]`.
fn window_out(
    node: &Node,
    input: [usize; 2],
    kernel: [usize; 2],
    strides: [usize; 2],
    pads: [usize; 4],
    dilations: [usize; 2],
    ceil: bool,
) -> Result<[usize; 2], ModelError> {
    let mut out = [0; 2];
    for (i, size) in input.into_iter().enumerate() {
        let span = dilations[i] * (kernel[i] - 1) + 1;
        let padded = size + pads[i] + pads[i + 2];
        if padded < span {
            return Err(err(node, format!("window {kernel:?} does not fit input {}x{}", input[0], input[1])));
        }
        let steps = padded - span;
        let mut o = if ceil { steps.div_ceil(strides[i]) } else { steps / strides[i] } + 1;
        // With ceil_mode, a last window that starts inside the bottom/right padding is dropped.
        if ceil && (o - 1) * strides[i] >= size + pads[i] {
            o -= 1;
        }
        out[i] = o;
    }
    Ok(out)
}

fn conv_shape(node: &Node, c: &Conv2d, x: &[usize], w: &[usize]) -> Result<Vec<usize>, ModelError> {
    if x.len() != 4 {
        return Err(err(node, format!("input must be [N,C,H,W], got {x:?}")));
    }
    if x[1] != w[1] * c.groups || !w[0].is_multiple_of(c.groups) {
        return Err(err(node, format!("input {x:?} does not fit weight {w:?} with {} groups", c.groups)));
    }
    let [oh, ow] = window_out(node, [x[2], x[3]], [w[2], w[3]], c.strides, c.pads, c.dilations, false)?;
    Ok(vec![x[0], w[0], oh, ow])
}

fn pool_shape(node: &Node, p: &Pool2d, x: &[usize]) -> Result<Vec<usize>, ModelError> {
    if x.len() != 4 {
        return Err(err(node, format!("input must be [N,C,H,W], got {x:?}")));
    }
    if p.pads[0] >= p.kernel[0] || p.pads[1] >= p.kernel[1] || p.pads[2] >= p.kernel[0] || p.pads[3] >= p.kernel[1] {
        return Err(err(node, "padding must be smaller than the window"));
    }
    let [oh, ow] = window_out(node, [x[2], x[3]], p.kernel, p.strides, p.pads, [1, 1], p.ceil_mode)?;
    Ok(vec![x[0], x[1], oh, ow])
}

/// The `(batch dims, m, k, n)` of a MatMul, with the broadcast batch shape.
pub fn matmul_dims(a: &[usize], b: &[usize]) -> Option<(Vec<usize>, usize, usize, usize)> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (a2, b2) = (
        if a.len() == 1 { vec![1, a[0]] } else { a.to_vec() },
        if b.len() == 1 { vec![b[0], 1] } else { b.to_vec() },
    );
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return None;
    }
    let batch = broadcast(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    Some((batch, m, k, n))
}

pub(super) fn node_output_shape(node: &Node, ins: &[&[usize]]) -> Result<Vec<usize>, ModelError> {
    let x = ins[0];
    match &node.op {
        Op::Conv(c) => conv_shape(node, c, x, ins[1]),
        Op::ChannelAffine => {
            if x.len() < 2 || x[1] != ins[1][0] {
                return Err(err(node, format!("input {x:?} does not have {} channels", ins[1][0])));
            }
            Ok(x.to_vec())
        }
        Op::Activation(_) | Op::Identity => Ok(x.to_vec()),
        Op::Binary(_) => broadcast(x, ins[1])
            .ok_or_else(|| err(node, format!("shapes {x:?} and {:?} do not broadcast", ins[1]))),
        Op::GlobalAveragePool => {
            if x.len() < 3 {
                return Err(err(node, format!("input must be [N,C,...], got {x:?}")));
            }
            Ok(x.iter().enumerate().map(|(i, &d)| if i < 2 { d } else { 1 }).collect())
        }
        Op::AveragePool(p) | Op::MaxPool(p) => pool_shape(node, p, x),
        Op::Flatten { axis } => {
            let a = if *axis == x.len() as i64 { x.len() } else {
                normalize_axis(*axis, x.len()).ok_or_else(|| err(node, format!("axis {axis} out of range")))?
            };
            Ok(vec![x[..a].iter().product(), x[a..].iter().product()])
        }
        Op::Reshape { shape, allow_zero } => {
            let total: usize = x.iter().product();
            let mut out = Vec::with_capacity(shape.len());
            let mut infer = None;
            for (i, &d) in shape.iter().enumerate() {
                match d {
                    -1 if infer.is_none() => {
                        infer = Some(i);
                        out.push(1);
                    }
                    0 if !allow_zero => out.push(*x.get(i).ok_or_else(|| err(node, "0 copies a missing dimension"))?),
                    d if d >= 0 => out.push(d as usize),
                    _ => return Err(err(node, format!("bad target shape {shape:?}"))),
                }
            }
            let known: usize = out.iter().product();
            if let Some(i) = infer {
                if known == 0 || !total.is_multiple_of(known) {
                    return Err(err(node, format!("cannot reshape {x:?} to {shape:?}")));
                }
                out[i] = total / known;
            }
            if out.iter().product::<usize>() != total {
                return Err(err(node, format!("cannot reshape {x:?} to {shape:?}")));
            }
            Ok(out)
        }
        Op::Concat { axis } => {
            let a = normalize_axis(*axis, x.len()).ok_or_else(|| err(node, format!("axis {axis} out of range")))?;
            let mut out = x.to_vec();
            for other in &ins[1..] {
                let fits = other.len() == x.len() && (0..x.len()).all(|i| i == a || other[i] == x[i]);
                if !fits {
                    return Err(err(node, format!("cannot concatenate {x:?} and {other:?} on axis {a}")));
                }
                out[a] += other[a];
            }
            Ok(out)
        }
        Op::Gemm { trans_a, trans_b, .. } => {
            let (a, b) = (x, ins[1]);
            if a.len() != 2 || b.len() != 2 {
                return Err(err(node, format!("A and B must be 2-D, got {a:?} and {b:?}")));
            }
            let (m, k) = if *trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
            let (k2, n) = if *trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
            if k != k2 {
                return Err(err(node, format!("inner dimensions differ: {a:?} x {b:?}")));
            }
            if let Some(c) = ins.get(2)
                && broadcast(c, &[m, n]).as_deref() != Some(&[m, n][..]) {
                    return Err(err(node, format!("C {c:?} does not broadcast to [{m}, {n}]")));
                }
            Ok(vec![m, n])
        }
        Op::MatMul => {
            let (batch, m, _, n) = matmul_dims(x, ins[1])
                .ok_or_else(|| err(node, format!("cannot multiply {x:?} by {:?}", ins[1])))?;
            let mut out = batch;
            if x.len() > 1 {
                out.push(m);
            }
            if ins[1].len() > 1 {
                out.push(n);
            }
            Ok(out)
        }
        Op::Softmax { axis } => {
            normalize_axis(*axis, x.len()).ok_or_else(|| err(node, format!("axis {axis} out of range")))?;
            Ok(x.to_vec())
        }
        Op::Transpose { perm } => {
            let valid = perm.len() == x.len() && (0..x.len()).all(|a| perm.contains(&a));
            if !valid {
                return Err(err(node, format!("perm {perm:?} does not permute the axes of {x:?}")));
            }
            Ok(perm.iter().map(|&p| x[p]).collect())
        }
        Op::Slice { starts, ends, axes, steps } => {
            let ranges = slice_ranges(x, starts, ends, axes, steps).map_err(|reason| err(node, reason))?;
            Ok(ranges.iter().map(|r| r.count).collect())
        }
        Op::Squeeze { axes } => match axes {
            None => Ok(x.iter().copied().filter(|&d| d != 1).collect()),
            Some(axes) => {
                let drop = reduced_axes(Some(axes), x.len()).map_err(|reason| err(node, reason))?;
                if drop.iter().any(|&a| x[a] != 1) {
                    return Err(err(node, format!("cannot squeeze axes {axes:?} of {x:?}")));
                }
                Ok(x.iter().enumerate().filter(|(d, _)| !drop.contains(d)).map(|(_, &n)| n).collect())
            }
        },
        Op::Unsqueeze { axes } => {
            let rank = x.len() + axes.len();
            let inserted = reduced_axes(Some(axes), rank).map_err(|reason| err(node, reason))?;
            if inserted.len() != axes.len() {
                return Err(err(node, format!("repeated axes {axes:?}")));
            }
            let mut rest = x.iter();
            Ok((0..rank).map(|d| if inserted.contains(&d) { 1 } else { rest.next().copied().unwrap_or(1) }).collect())
        }
        Op::LayerNorm { axis, .. } => {
            let a = normalize_axis(*axis, x.len()).ok_or_else(|| err(node, format!("axis {axis} out of range")))?;
            let inner: usize = x[a..].iter().product();
            for (index, parameter) in ins.iter().enumerate().skip(1) {
                if parameter.iter().product::<usize>() != inner {
                    return Err(err(node, format!("input {index} {parameter:?} does not hold one value per normalised position of {x:?}")));
                }
            }
            Ok(x.to_vec())
        }
        Op::ConvTranspose { conv, output_padding } => {
            let w = ins[1];
            if x.len() != 4 || w.len() != 4 || x[1] != w[0] || !x[1].is_multiple_of(conv.groups) {
                return Err(err(node, format!("input {x:?} does not fit transposed-convolution weight {w:?} with {} groups", conv.groups)));
            }
            let mut out = vec![x[0], w[1] * conv.groups];
            for i in 0..2 {
                let full = (x[2 + i] - 1) * conv.strides[i] + conv.dilations[i] * (w[2 + i] - 1) + output_padding[i] + 1;
                let cut = conv.pads[i] + conv.pads[i + 2];
                out.push(full.checked_sub(cut).filter(|&o| o > 0).ok_or_else(|| err(node, format!("pads {:?} remove the whole output", conv.pads)))?);
            }
            Ok(out)
        }
        Op::Resize { scales, sizes, .. } => resize_shape(node, x, scales.as_deref(), sizes.as_deref()).map(|(out, _)| out),
        Op::Recurrent { cell, hidden, has_bias } => {
            let rows = cell.gates() * hidden;
            let (w, r) = (ins[1], ins[2]);
            let fits = x.len() == 3
                && w.iter().product::<usize>() == rows * x[2]
                && r.iter().product::<usize>() == rows * hidden
                && (!has_bias || ins[3].iter().product::<usize>() == 2 * rows);
            if !fits {
                return Err(err(node, format!("input {x:?}, W {w:?} and R {r:?} do not fit {hidden} hidden units")));
            }
            Ok(vec![x[0], 1, x[1], *hidden])
        }
        Op::Pad { pads, .. } => {
            if pads.len() != 2 * x.len() {
                return Err(err(node, format!("{} pads for a rank-{} input", pads.len(), x.len())));
            }
            (0..x.len())
                .map(|d| usize::try_from(x[d] as i64 + pads[d] + pads[d + x.len()]).ok().filter(|&n| n > 0))
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| err(node, format!("pads {pads:?} leave nothing of {x:?}")))
        }
        Op::Tile { repeats } => {
            if repeats.len() != x.len() {
                return Err(err(node, format!("{} repeats for a rank-{} input", repeats.len(), x.len())));
            }
            Ok(x.iter().zip(repeats).map(|(&d, &r)| d * r).collect())
        }
        Op::LogSoftmax { axis } => {
            normalize_axis(*axis, x.len()).ok_or_else(|| err(node, format!("axis {axis} out of range")))?;
            Ok(x.to_vec())
        }
        Op::InstanceNorm { .. } => {
            if x.len() < 3 || ins[1..].iter().any(|p| p.iter().product::<usize>() != x[1]) {
                return Err(err(node, format!("input {x:?} needs [N, C, ...] with a scale and bias of {} values", x.get(1).copied().unwrap_or(0))));
            }
            Ok(x.to_vec())
        }
        Op::Expand { shape } => {
            let target: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
            broadcast(x, &target).ok_or_else(|| err(node, format!("{x:?} does not broadcast to {shape:?}")))
        }
        Op::Where => {
            let ab = broadcast(ins[1], ins[2]).ok_or_else(|| err(node, format!("{:?} and {:?} do not broadcast", ins[1], ins[2])))?;
            broadcast(x, &ab).ok_or_else(|| err(node, format!("condition {x:?} does not broadcast to {ab:?}")))
        }
        Op::Gather { axis } => {
            let a = normalize_axis(*axis, x.len()).ok_or_else(|| err(node, format!("axis {axis} out of range")))?;
            Ok(x[..a].iter().chain(ins[1]).chain(&x[a + 1..]).copied().collect())
        }
        Op::Reduce { axes, keep_dims, .. } => {
            let reduced = reduced_axes(axes.as_deref(), x.len()).map_err(|reason| err(node, reason))?;
            Ok(x.iter().enumerate().filter_map(|(d, &n)| match (reduced.contains(&d), keep_dims) {
                (false, _) => Some(n),
                (true, true) => Some(1),
                (true, false) => None,
            }).collect())
        }
    }
}

/// The output shape of a Resize of `x` and the scale per resized axis (height, width) that its
/// coordinate transformation uses.
pub fn resize_shape(node: &Node, x: &[usize], scales: Option<&[f32]>, sizes: Option<&[usize]>) -> Result<(Vec<usize>, [f32; 2]), ModelError> {
    if x.len() != 4 {
        return Err(err(node, format!("only NCHW inputs are resized, got {x:?}")));
    }
    match (scales, sizes) {
        (Some(s), None) if s.len() == 4 && s[0] == 1.0 && s[1] == 1.0 && s[2] > 0.0 && s[3] > 0.0 => {
            let out = |d: usize| ((x[d] as f32 * s[d]).floor() as usize).max(1);
            Ok((vec![x[0], x[1], out(2), out(3)], [s[2], s[3]]))
        }
        (None, Some(s)) if s.len() == 4 && s[0] == x[0] && s[1] == x[1] && s[2] > 0 && s[3] > 0 => {
            Ok((s.to_vec(), [s[2] as f32 / x[2] as f32, s[3] as f32 / x[3] as f32]))
        }
        _ => Err(err(node, format!("scales {scales:?} or sizes {sizes:?} must resize the last two axes of {x:?} only"))),
    }
}

