//! The block compiler: turns a graph (for one input shape) into a list of kernel dispatches
//! over pooled activation slots. Plain Rust, no GPU objects, so it is unit-tested directly.

use std::collections::{HashMap, HashSet};


pub use super::dispatch_grid::CompileError;
use super::dispatch_grid::{grid_1d, unsupported, MAX_GROUPS};
use super::kernel::Kernel;
use super::lower_layout;
use super::lower_matmul;
use super::lower_spatial;
use super::program::{Program, Step};
use super::slots::assign_slots;
use super::params::{
    ActivationKernelParams, ActivationParams, BinaryParams, ChannelAffineParams, ConcatCopyParams, ConvParams,
    GlobalAverageParams, KernelParams, Pool2dParams, SoftmaxParams, MAX_RANK,
};
use crate::model::ir::{Activation, BinaryOp, Conv2d, Graph, Node, Op, PadMode};
use crate::model::shape::{broadcast_strides, infer_shapes, normalize_axis, Shapes};

fn u(v: usize) -> u32 {
    v as u32
}

/// Compiles `graph` for an input of shape `input_shape`.
pub fn compile(graph: &Graph, input_shape: &[usize]) -> Result<Program, CompileError> {
    compile_with(graph, input_shape, true)
}

/// [`compile`], with or without the kernels that share work through workgroup memory and
/// barriers (`workgroup_tiles`; see `KernelOptions::workgroup_tiles`).
pub fn compile_with(graph: &Graph, input_shape: &[usize], workgroup_tiles: bool) -> Result<Program, CompileError> {
    let shapes = infer_shapes(graph, input_shape)?;
    let mut steps = plan_steps(graph, &shapes)?;
    if !workgroup_tiles {
        for step in &mut steps {
            if let Step::Compute { calls, .. } = step {
                calls.iter_mut().for_each(untiled);
            }
        }
    }
    Ok(assign_slots(graph, &shapes, steps))
}

/// A call of a tiled 1x1 convolution or a split dot product as its form without workgroup
/// memory (same parameters, another entry point and grid): 1x1 convolutions take 4 channels by
/// 4 columns per invocation where the channels allow it and the columns fit one grid row,
/// else one output plane per grid row.
fn untiled((kernel, params, _, grid): &mut super::program::KernelCall) {
    match (&*kernel, &*params) {
        (Kernel::ConvPointwise | Kernel::ConvPointwiseBlocked | Kernel::ConvPointwiseNarrow, KernelParams::Conv(p)) => {
            let (pixels, planes) = ((p.out_height * p.out_width) as usize, (p.batch * p.out_channels) as usize);
            let quads = (pixels * p.batch as usize).div_ceil(4) * p.out_channels as usize / 4;
            (*kernel, *grid) = match p.out_channels.is_multiple_of(4) {
                true if quads <= u32::MAX as usize => (Kernel::ConvPointwiseQuads, grid_1d(quads)),
                true => (Kernel::Conv2dFourChannels, plane_grid(pixels, planes / 4)),
                false => (Kernel::Conv2d, plane_grid(pixels, planes)),
            };
        }
        (Kernel::GemmSplit, KernelParams::Gemm(p)) => (*kernel, *grid) = (Kernel::Gemm, grid_1d(p.total as usize)),
        _ => {}
    }
}

fn plan_steps(graph: &Graph, shapes: &Shapes) -> Result<Vec<Step>, CompileError> {
    let counts = graph.consumer_counts();
    let producer: HashMap<&str, usize> =
        graph.nodes.iter().enumerate().map(|(i, n)| (n.output.as_str(), i)).collect();
    let mut fused: HashSet<usize> = HashSet::new();
    let mut steps = Vec::new();
    for (index, node) in graph.nodes.iter().enumerate() {
        if fused.contains(&index) {
            continue;
        }
        let out_shape = &shapes[&node.output];
        let total = out_shape.iter().product::<usize>();
        let value = |i: usize| Some(node.inputs[i].clone());
        let step = match &node.op {
            Op::Conv(_) if out_shape[2] * out_shape[3] > MAX_GROUPS * 64 => {
                return Err(unsupported(node, format!("an output plane of {}x{} pixels is above one dispatch's {MAX_GROUPS}x64", out_shape[2], out_shape[3])));
            }
            Op::Conv(conv) => {
                let (output, residual, activation) =
                    fuse_epilogue(graph, index, &counts, &producer, shapes, &mut fused);
                let call = conv_call(node, conv, shapes, residual.is_some(), activation);
                let mut operands = vec![value(0), value(1), node.inputs.get(2).cloned()];
                operands.push(residual);
                Step::Compute { calls: vec![(call.0, call.1, operands, call.2)], output }
            }
            Op::ChannelAffine => {
                let inner: usize = out_shape[2..].iter().product();
                let params = KernelParams::ChannelAffine(ChannelAffineParams { total: u(total), channels: u(out_shape[1]), inner: u(inner) });
                Step::Compute {
                    calls: vec![(Kernel::ChannelAffine, params, vec![value(0), value(1), value(2)], grid_1d(total))],
                    output: node.output.clone(),
                }
            }
            Op::Activation(a) => {
                let params = KernelParams::Activation(ActivationKernelParams { total: u(total), activation: (*a).into() });
                Step::Compute {
                    calls: vec![(Kernel::Activation, params, vec![value(0), None, None], grid_1d(total))],
                    output: node.output.clone(),
                }
            }
            Op::Binary(binary) => {
                if out_shape.len() > MAX_RANK {
                    return Err(unsupported(node, format!("rank {} is above {MAX_RANK}", out_shape.len())));
                }
                // Unused dimensions: extent 1, stride 0.
                let padded = |values: Vec<usize>, fill: u32| -> [u32; MAX_RANK] {
                    let mut out = [fill; MAX_RANK];
                    for (slot, v) in out.iter_mut().zip(values) {
                        *slot = u(v);
                    }
                    out
                };
                let strides = |i: usize| padded(broadcast_strides(&shapes[&node.inputs[i]], out_shape), 0);
                let params = KernelParams::Binary(BinaryParams {
                    total: u(total),
                    op: BinaryParams::code(*binary),
                    rank: u(out_shape.len()),
                    out_dims: padded(out_shape.clone(), 1),
                    a_strides: strides(0),
                    b_strides: strides(1),
                });
                Step::Compute {
                    calls: vec![(Kernel::Binary, params, vec![value(0), value(1), None], grid_1d(total))],
                    output: node.output.clone(),
                }
            }
            Op::GlobalAveragePool => {
                let x = &shapes[&node.inputs[0]];
                let planes = x[0] * x[1];
                Step::Compute {
                    calls: vec![(
                        Kernel::GlobalAverage,
                        KernelParams::GlobalAverage(GlobalAverageParams { planes: u(planes), plane_size: u(x[2..].iter().product()) }),
                        vec![value(0)],
                        grid_1d(planes),
                    )],
                    output: node.output.clone(),
                }
            }
            Op::AveragePool(pool) | Op::MaxPool(pool) => {
                let x = &shapes[&node.inputs[0]];
                let is_max = matches!(node.op, Op::MaxPool(_));
                let params = KernelParams::Pool2d(Pool2dParams {
                    total: u(total),
                    in_height: u(x[2]),
                    in_width: u(x[3]),
                    out_height: u(out_shape[2]),
                    out_width: u(out_shape[3]),
                    kernel_height: u(pool.kernel[0]),
                    kernel_width: u(pool.kernel[1]),
                    stride_y: u(pool.strides[0]),
                    stride_x: u(pool.strides[1]),
                    pad_top: u(pool.pads[0]),
                    pad_left: u(pool.pads[1]),
                    pad_bottom: u(pool.pads[2]),
                    pad_right: u(pool.pads[3]),
                    is_max: u(is_max as usize),
                    count_include_pad: u(pool.count_include_pad as usize),
                });
                Step::Compute {
                    calls: vec![(Kernel::Pool2d, params, vec![value(0)], grid_1d(total))],
                    output: node.output.clone(),
                }
            }
            Op::Transpose { perm } => {
                let (kernel, params, grid) = lower_layout::transpose(node, &shapes[&node.inputs[0]], perm)?;
                Step::Compute { calls: vec![(kernel, params, vec![value(0)], grid)], output: node.output.clone() }
            }
            Op::Slice { starts, ends, axes, steps } => {
                let (kernel, params, grid) = lower_layout::slice(node, &shapes[&node.inputs[0]], starts, ends, axes, steps)?;
                Step::Compute { calls: vec![(kernel, params, vec![value(0)], grid)], output: node.output.clone() }
            }
            Op::LayerNorm { axis, epsilon } => {
                let has_bias = node.inputs.len() > 2;
                let (kernel, params, grid) = lower_layout::layer_norm(node, &shapes[&node.inputs[0]], *axis, *epsilon, has_bias)?;
                Step::Compute { calls: vec![(kernel, params, vec![value(0), value(1), node.inputs.get(2).cloned()], grid)], output: node.output.clone() }
            }
            Op::ConvTranspose { conv, .. } => {
                let call = lower_spatial::conv_transpose(&shapes[&node.inputs[0]], &shapes[&node.inputs[1]], out_shape, conv, node.inputs.len() > 2);
                Step::Compute { calls: vec![(call.0, call.1, vec![value(0), value(1), node.inputs.get(2).cloned()], call.2)], output: node.output.clone() }
            }
            Op::Resize { linear, coordinates, nearest, scales, sizes } => {
                let call = lower_spatial::resize(node, &shapes[&node.inputs[0]], out_shape, *linear, (*coordinates, *nearest), (scales.as_deref(), sizes.as_deref()))?;
                Step::Compute { calls: vec![(call.0, call.1, vec![value(0)], call.2)], output: node.output.clone() }
            }
            Op::Recurrent { cell, hidden, has_bias } => {
                let bias = if *has_bias { node.inputs.get(3).cloned() } else { None };
                let initial = node.inputs.get(if *has_bias { 4 } else { 3 }).cloned();
                let call = lower_spatial::recurrent(node, &shapes[&node.inputs[0]], *cell, *hidden, (*has_bias, initial.is_some()))?;
                Step::Compute { calls: vec![(call.0, call.1, vec![value(0), value(1), value(2), bias, initial], call.2)], output: node.output.clone() }
            }
            Op::Pad { mode, pads } => {
                let x = &shapes[&node.inputs[0]];
                let (code, fill) = match mode {
                    PadMode::Constant(fill) => (0, *fill),
                    PadMode::Reflect => (1, 0.0),
                    PadMode::Edge => (2, 0.0),
                };
                let (kernel, params, grid) = lower_layout::pad(node, x, out_shape, code, fill, &pads[..x.len()])?;
                Step::Compute { calls: vec![(kernel, params, vec![value(0)], grid)], output: node.output.clone() }
            }
            Op::Tile { .. } => {
                let x = &shapes[&node.inputs[0]];
                let (kernel, params, grid) = lower_layout::pad(node, x, out_shape, 3, 0.0, &vec![0; x.len()])?;
                Step::Compute { calls: vec![(kernel, params, vec![value(0)], grid)], output: node.output.clone() }
            }
            Op::LogSoftmax { axis } => {
                let (kernel, params, grid) = lower_layout::log_softmax(node, out_shape, *axis)?;
                Step::Compute { calls: vec![(kernel, params, vec![value(0)], grid)], output: node.output.clone() }
            }
            Op::InstanceNorm { epsilon } => {
                let (kernel, params, grid) = lower_layout::instance_norm(&shapes[&node.inputs[0]], *epsilon);
                Step::Compute { calls: vec![(kernel, params, vec![value(0), value(1), value(2)], grid)], output: node.output.clone() }
            }
            Op::Expand { .. } => {
                let (kernel, params, grid) = lower_layout::expand(node, &shapes[&node.inputs[0]], out_shape)?;
                Step::Compute { calls: vec![(kernel, params, vec![value(0)], grid)], output: node.output.clone() }
            }
            Op::Where => {
                let operands: Vec<&[usize]> = node.inputs.iter().map(|i| shapes[i].as_slice()).collect();
                let (kernel, params, grid) = lower_layout::select(node, &operands, out_shape)?;
                Step::Compute { calls: vec![(kernel, params, vec![value(0), value(1), value(2)], grid)], output: node.output.clone() }
            }
            Op::Gather { axis } => {
                let (kernel, params, grid) = lower_layout::gather(node, &shapes[&node.inputs[0]], &shapes[&node.inputs[1]], *axis)?;
                Step::Compute { calls: vec![(kernel, params, vec![value(0), value(1)], grid)], output: node.output.clone() }
            }
            Op::Reduce { op, axes, .. } => {
                let (kernel, params, grid) = lower_layout::reduce(node, &shapes[&node.inputs[0]], *op, axes.as_deref())?;
                Step::Compute { calls: vec![(kernel, params, vec![value(0)], grid)], output: node.output.clone() }
            }
            Op::Reshape { .. } | Op::Flatten { .. } | Op::Identity | Op::Squeeze { .. } | Op::Unsqueeze { .. } => {
                Step::Alias { from: node.inputs[0].clone(), to: node.output.clone() }
            }
            Op::Concat { axis } => {
                let a = normalize_axis(*axis, out_shape.len()).expect("shape inference checked it");
                let out_slab: usize = out_shape[a..].iter().product();
                let outer: usize = out_shape[..a].iter().product();
                let mut offset = 0;
                let mut calls = Vec::new();
                for input in &node.inputs {
                    let slab: usize = shapes[input][a..].iter().product();
                    let count = outer * slab;
                    let params = KernelParams::ConcatCopy(ConcatCopyParams { total: u(count), input_slab: u(slab), output_slab: u(out_slab), offset: u(offset) });
                    calls.push((Kernel::ConcatCopy, params, vec![Some(input.clone())], grid_1d(count)));
                    offset += slab;
                }
                Step::Compute { calls, output: node.output.clone() }
            }
            Op::Gemm { alpha, beta, trans_a, trans_b } => {
                let operands = lower_matmul::GemmOperands {
                    a: &shapes[&node.inputs[0]],
                    c: node.inputs.get(2).map(|c| shapes[c].as_slice()),
                    out: out_shape,
                    trans_a: *trans_a,
                    trans_b: *trans_b,
                    alpha: *alpha,
                    beta: *beta,
                };
                let (kernel, params, grid) = lower_matmul::gemm(&operands);
                Step::Compute {
                    calls: vec![(kernel, params, vec![value(0), value(1), node.inputs.get(2).cloned()], grid)],
                    output: node.output.clone(),
                }
            }
            Op::MatMul => {
                let (kernel, params, grid) = lower_matmul::matmul(node, &shapes[&node.inputs[0]], &shapes[&node.inputs[1]])?;
                Step::Compute { calls: vec![(kernel, params, vec![value(0), value(1), None], grid)], output: node.output.clone() }
            }
            Op::Softmax { axis } => {
                let a = normalize_axis(*axis, out_shape.len()).expect("shape inference checked it");
                let inner: usize = out_shape[a + 1..].iter().product();
                let rows = total / out_shape[a];
                Step::Compute {
                    calls: vec![(
                        Kernel::Softmax,
                        KernelParams::Softmax(SoftmaxParams { rows: u(rows), length: u(out_shape[a]), inner: u(inner), log: 0 }),
                        vec![value(0)],
                        grid_1d(rows),
                    )],
                    output: node.output.clone(),
                }
            }
        };
        steps.push(step);
    }
    Ok(steps)
}

/// Follows the single consumer of a convolution's output and absorbs a residual Add (whose
/// other operand is ready before the convolution runs) and then an activation.
fn fuse_epilogue(
    graph: &Graph,
    conv_index: usize,
    counts: &HashMap<&str, usize>,
    producer: &HashMap<&str, usize>,
    shapes: &Shapes,
    fused: &mut HashSet<usize>,
) -> (String, Option<String>, Activation) {
    let mut output = graph.nodes[conv_index].output.clone();
    let mut residual = None;
    let mut activation = Activation::Identity;
    loop {
        if output == graph.output || counts.get(output.as_str()) != Some(&1) {
            break;
        }
        let Some((j, next)) = graph
            .nodes
            .iter()
            .enumerate()
            .skip(conv_index + 1)
            .find(|(_, n)| n.inputs.contains(&output))
        else {
            break;
        };
        match &next.op {
            Op::Binary(BinaryOp::Add) if residual.is_none() && activation == Activation::Identity => {
                let other = if next.inputs[0] == output { &next.inputs[1] } else { &next.inputs[0] };
                let ready = producer.get(other.as_str()).is_none_or(|&p| p < conv_index);
                if other == &output || !ready || shapes[other] != shapes[&output] {
                    break;
                }
                residual = Some(other.clone());
            }
            Op::Activation(a) if activation == Activation::Identity => activation = *a,
            _ => break,
        }
        fused.insert(j);
        output = next.output.clone();
    }
    (output, residual, activation)
}

/// Whether a convolution is a plain 1x1 one (stride 1, no padding, one group).
fn is_pointwise(conv: &Conv2d, weight_shape: &[usize]) -> bool {
    weight_shape[2] == 1 && weight_shape[3] == 1 && conv.strides == [1, 1] && conv.pads == [0; 4] && conv.groups == 1
}

fn conv_call(
    node: &Node,
    conv: &Conv2d,
    shapes: &Shapes,
    has_residual: bool,
    activation: Activation,
) -> (Kernel, KernelParams, [u32; 3]) {
    let x = &shapes[&node.inputs[0]];
    let w = &shapes[&node.inputs[1]];
    let out = &shapes[&node.output];
    let total: usize = out.iter().product();
    let params = KernelParams::Conv(ConvParams {
        total: u(total),
        batch: u(x[0]),
        in_channels: u(x[1]),
        in_height: u(x[2]),
        in_width: u(x[3]),
        out_channels: u(w[0]),
        out_height: u(out[2]),
        out_width: u(out[3]),
        kernel_height: u(w[2]),
        kernel_width: u(w[3]),
        stride_y: u(conv.strides[0]),
        stride_x: u(conv.strides[1]),
        pad_top: u(conv.pads[0]),
        pad_left: u(conv.pads[1]),
        dilation_y: u(conv.dilations[0]),
        dilation_x: u(conv.dilations[1]),
        groups: u(conv.groups),
        has_bias: u(node.inputs.len().min(3).saturating_sub(2)),
        has_residual: u(has_residual as usize),
        activation: ActivationParams::from(activation),
    });
    let pointwise = is_pointwise(conv, w);
    let depthwise = conv.groups > 1 && conv.groups == x[1] && w[0] == conv.groups;
    if pointwise {
        let (kernel, workgroups) = pointwise_kernel(x[0] * out[2] * out[3], w[0]);
        (kernel, params, workgroups)
    } else if depthwise && w[2] == 3 && w[3] == 3 && conv.dilations == [1, 1] && matches!(conv.strides[1], 1 | 2) {
        (Kernel::ConvDepthwise3x3, params, grid_1d(out[0] * out[1] * out[2] * out[3].div_ceil(4)))
    } else if depthwise {
        (Kernel::ConvDepthwise, params, plane_grid(out[2] * out[3], out[0] * out[1]))
    } else if (w[0] / conv.groups).is_multiple_of(4) {
        (Kernel::Conv2dFourChannels, params, plane_grid(out[2] * out[3], out[0] * out[1] / 4))
    } else {
        (Kernel::Conv2d, params, plane_grid(out[2] * out[3], out[0] * out[1]))
    }
}

/// The grid of the spatial convolution kernels: pixels of a plane by planes (planes beyond one
/// grid dimension are walked in a loop).
fn plane_grid(pixels: usize, planes: usize) -> [u32; 3] {
    [u(pixels.div_ceil(64).max(1)), u(planes.clamp(1, MAX_GROUPS)), 1]
}

/// Columns up to which a 1x1 convolution splits its dot products across a workgroup.
const NARROW_COLUMNS: usize = 16;
/// Output tiles from which a 1x1 convolution has enough of them to use the 64x64 kernel.
const BLOCKED_MIN_TILES: usize = 128;

/// The 1x1 convolution kernel for a `[rows, C] x [C, columns]` product, and its grid.
fn pointwise_kernel(columns: usize, rows: usize) -> (Kernel, [u32; 3]) {
    let tiles = |edge: usize| columns.div_ceil(edge) * rows.div_ceil(edge);
    // Column tiles beyond one grid dimension's limit fold into z.
    let fold = |column_tiles: usize, row_tiles: usize| {
        let x = column_tiles.min(MAX_GROUPS);
        [u(x), u(row_tiles), u(column_tiles.div_ceil(x))]
    };
    if columns <= NARROW_COLUMNS && rows <= MAX_GROUPS {
        (Kernel::ConvPointwiseNarrow, [u(rows), u(columns.div_ceil(4)), 1])
    } else if tiles(64) >= BLOCKED_MIN_TILES {
        (Kernel::ConvPointwiseBlocked, fold(columns.div_ceil(64), rows.div_ceil(64)))
    } else {
        (Kernel::ConvPointwise, fold(columns.div_ceil(16), rows.div_ceil(16)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::gpu::program::Operand;
    use crate::model::ir::{GraphInput, Node};
    use crate::tensor::Tensor;

    fn node(name: &str, op: Op, inputs: &[&str]) -> Node {
        Node { name: name.into(), op, inputs: inputs.iter().map(|s| s.to_string()).collect(), output: name.into() }
    }

    /// x -> conv(1x1) -> add(x) -> relu -> conv(3x3) -> flatten: the first three fuse.
    fn residual_graph() -> Graph {
        let conv = |s| Op::Conv(Conv2d { strides: [s, s], pads: [0; 4], dilations: [1, 1], groups: 1 });
        let mut initializers = HashMap::new();
        initializers.insert("w1".to_string(), Tensor::zeros(vec![4, 4, 1, 1]));
        initializers.insert("w2".to_string(), Tensor::zeros(vec![4, 4, 3, 3]));
        Graph {
            input: GraphInput { name: "x".into(), dims: vec![None, Some(4), Some(5), Some(5)] },
            output: "flat".into(),
            nodes: vec![
                node("c1", conv(1), &["x", "w1"]),
                node("add", Op::Binary(BinaryOp::Add), &["c1", "x"]),
                node("relu", Op::Activation(Activation::Relu), &["add"]),
                node("c2", conv(1), &["relu", "w2"]),
                node("flat", Op::Flatten { axis: 1 }, &["c2"]),
            ],
            initializers,
        }
    }

    #[test]
    fn residual_add_and_activation_fuse_into_the_pointwise_conv() {
        let program = compile(&residual_graph(), &[2, 4, 5, 5]).unwrap();
        assert_eq!(program.dispatches.len(), 2);
        let first = &program.dispatches[0];
        assert_eq!(first.kernel, Kernel::ConvPointwise);
        assert_eq!(first.inputs[3], Operand::Slot(program.input_slot), "residual reads the input");
        let KernelParams::Conv(params) = first.params else { panic!("a convolution's parameters: {:?}", first.params) };
        assert_eq!(params.has_residual, 1, "has residual");
        assert_eq!(params.activation, ActivationParams { code: 1, a: 0.0, b: 0.0 }, "relu");
        assert_eq!(program.dispatches[1].kernel, Kernel::Conv2dFourChannels, "4 output channels: one invocation each");
        assert_eq!(program.output_shape, vec![2, 36]);
    }

    #[test]
    fn a_pointwise_conv_picks_its_kernel_by_the_product_shape() {
        // A few columns: dot products split across a workgroup, one per row and 4 columns.
        assert_eq!(pointwise_kernel(4, 960), (Kernel::ConvPointwiseNarrow, [960, 1, 1]));
        assert_eq!(pointwise_kernel(16, 320).0, Kernel::ConvPointwiseNarrow);
        // Too few 64x64 tiles to fill a GPU: 16x16 tiles.
        assert_eq!(pointwise_kernel(64, 384), (Kernel::ConvPointwise, [4, 24, 1]));
        // Plenty of 64x64 tiles: the register-blocked kernel.
        assert_eq!(pointwise_kernel(64 * 3136, 96), (Kernel::ConvPointwiseBlocked, [3136, 2, 1]));
        // Column tiles beyond one grid dimension fold into z.
        let (_, [x, _, z]) = pointwise_kernel(64 * 70000, 64);
        assert!(x <= 65535 && x as usize * z as usize >= 70000);
    }

    #[test]
    fn without_workgroup_tiles_pointwise_convolutions_and_split_products_take_one_invocation_per_output() {
        let mut initializers = HashMap::new();
        initializers.insert("w".to_string(), Tensor::zeros(vec![8, 4, 1, 1]));
        initializers.insert("fc".to_string(), Tensor::zeros(vec![10, 8 * 4 * 4]));
        let graph = Graph {
            input: GraphInput { name: "x".into(), dims: vec![] },
            output: "y".into(),
            nodes: vec![
                node("c", Op::Conv(Conv2d { strides: [1, 1], pads: [0; 4], dilations: [1, 1], groups: 1 }), &["x", "w"]),
                node("f", Op::Flatten { axis: 1 }, &["c"]),
                node("y", Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: true }, &["f", "fc"]),
            ],
            initializers,
        };
        let kernels = |tiles| compile_with(&graph, &[1, 4, 4, 4], tiles).unwrap().dispatches.iter().map(|d| d.kernel).collect::<Vec<_>>();
        assert_eq!(kernels(true), [Kernel::ConvPointwiseNarrow, Kernel::GemmSplit]);
        assert_eq!(kernels(false), [Kernel::ConvPointwiseQuads, Kernel::Gemm]);
    }

    #[test]
    fn spatial_convolutions_walk_planes_beyond_the_grid_height() {
        assert_eq!(plane_grid(112 * 112, 64 * 96), [196, 6144, 1]);
        assert_eq!(plane_grid(49, 128 * 960), [1, 65535, 1]);
    }

    #[test]
    fn a_conv_with_one_group_per_channel_uses_the_depthwise_kernel() {
        let depthwise = Op::Conv(Conv2d { strides: [2, 2], pads: [1; 4], dilations: [1, 1], groups: 8 });
        let mut initializers = HashMap::new();
        initializers.insert("w".to_string(), Tensor::zeros(vec![8, 1, 3, 3]));
        let graph = Graph {
            input: GraphInput { name: "x".into(), dims: vec![] },
            output: "dw".into(),
            nodes: vec![node("dw", depthwise, &["x", "w"])],
            initializers,
        };
        let program = compile(&graph, &[1, 8, 9, 9]).unwrap();
        assert_eq!(program.dispatches[0].kernel, Kernel::ConvDepthwise3x3, "MobileNet's 3x3 stride-2 case");
        assert_eq!(program.dispatches[0].workgroups, [2, 1, 1], "8 planes of 5 rows of 2 quads (5 columns)");
        let mut dilated = graph.clone();
        dilated.nodes[0].op = Op::Conv(Conv2d { strides: [1, 1], pads: [2; 4], dilations: [2, 2], groups: 8 });
        assert_eq!(compile(&dilated, &[1, 8, 9, 9]).unwrap().dispatches[0].kernel, Kernel::ConvDepthwise, "dilated: the general kernel");
    }

    #[test]
    fn the_flattened_output_aliases_the_last_conv_slot() {
        let program = compile(&residual_graph(), &[1, 4, 5, 5]).unwrap();
        assert_eq!(program.output_slot, program.dispatches[1].output);
    }

    #[test]
    fn a_slot_is_reused_once_its_value_is_dead() {
        // x -> relu -> relu -> relu: two slots beside the input suffice, alternating.
        let nodes = (0..3)
            .map(|i| {
                let input = if i == 0 { "x".to_string() } else { format!("r{}", i - 1) };
                Node { name: format!("r{i}"), op: Op::Activation(Activation::Relu), inputs: vec![input], output: format!("r{i}") }
            })
            .collect();
        let graph = Graph { input: GraphInput { name: "x".into(), dims: vec![] }, output: "r2".into(), nodes, initializers: HashMap::new() };
        let program = compile(&graph, &[3, 7]).unwrap();
        assert!(program.slot_sizes.len() <= 3, "{:?}", program.slot_sizes);
        for d in &program.dispatches {
            assert!(!d.inputs.contains(&Operand::Slot(d.output)), "a dispatch reads its own output slot");
        }
    }
}
