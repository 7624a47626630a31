//! The block compiler: turns a graph (for one input shape) into a list of kernel dispatches
//! over pooled activation slots. Plain Rust, no GPU objects, so it is unit-tested directly.

use std::collections::{HashMap, HashSet};

use thiserror::Error;

use crate::model::ir::{Activation, Conv2d, Graph, Node, Op};
use crate::model::shape::{broadcast_strides, infer_shapes, matmul_dims, normalize_axis, Shapes};
use crate::model::ModelError;

/// A WGSL entry point of one of the kernel families in `shaders/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// General convolution with fused epilogue.
    Conv2d,
    /// General convolution, four output channels per invocation.
    Conv2dFourChannels,
    /// Depthwise convolution (one group per channel) with fused epilogue.
    ConvDepthwise,
    /// Depthwise 3x3 convolution, dilation 1, column stride 1 or 2: four outputs of a row per
    /// invocation.
    ConvDepthwise3x3,
    /// 1x1 convolution over the whole batch, 16x16 output tiles: mid-sized layers.
    ConvPointwise,
    /// 1x1 convolution, 64x64 output tiles with 4x4 outputs per invocation: large layers.
    ConvPointwiseBlocked,
    /// 1x1 convolution with at most a few columns, dot products split across a workgroup.
    ConvPointwiseNarrow,
    /// Broadcasting Add/Mul.
    Binary,
    /// Standalone activation.
    Activation,
    /// Per-channel scale and shift.
    ChannelAffine,
    /// Global average pooling.
    GlobalAverage,
    /// Windowed max/average pooling.
    Pool2d,
    /// Gemm and MatMul, one invocation per output.
    Gemm,
    /// Gemm and MatMul with few outputs: each output's dot product split across a workgroup.
    GemmSplit,
    /// One input's share of a Concat.
    ConcatCopy,
    /// Softmax along one axis.
    Softmax,
}

impl Kernel {
    /// Every kernel, for building the pipeline library.
    pub const ALL: [Kernel; 16] = [
        Kernel::Conv2d,
        Kernel::Conv2dFourChannels,
        Kernel::ConvDepthwise,
        Kernel::ConvDepthwise3x3,
        Kernel::ConvPointwise,
        Kernel::ConvPointwiseBlocked,
        Kernel::ConvPointwiseNarrow,
        Kernel::Binary,
        Kernel::Activation,
        Kernel::ChannelAffine,
        Kernel::GlobalAverage,
        Kernel::Pool2d,
        Kernel::Gemm,
        Kernel::GemmSplit,
        Kernel::ConcatCopy,
        Kernel::Softmax,
    ];

    /// The shader family file and the entry point.
    pub fn entry(self) -> (&'static str, &'static str) {
        match self {
            Kernel::Conv2d => ("conv", "conv2d"),
            Kernel::Conv2dFourChannels => ("conv", "conv2d_four_channels"),
            Kernel::ConvDepthwise => ("conv", "conv_depthwise"),
            Kernel::ConvDepthwise3x3 => ("conv", "conv_depthwise_3x3"),
            Kernel::ConvPointwise => ("conv", "conv_pointwise"),
            Kernel::ConvPointwiseBlocked => ("conv", "conv_pointwise_blocked"),
            Kernel::ConvPointwiseNarrow => ("conv", "conv_pointwise_narrow"),
            Kernel::Binary => ("elementwise", "binary"),
            Kernel::Activation => ("elementwise", "activation"),
            Kernel::ChannelAffine => ("elementwise", "channel_affine"),
            Kernel::GlobalAverage => ("pool", "global_average"),
            Kernel::Pool2d => ("pool", "pool2d"),
            Kernel::Gemm => ("matmul", "gemm"),
            Kernel::GemmSplit => ("matmul", "gemm_split"),
            Kernel::ConcatCopy => ("layout", "concat_copy"),
            Kernel::Softmax => ("layout", "softmax"),
        }
    }

    /// The entry point of the variant that sums with subgroup operations, for kernels that have
    /// one (in the same family, compiled in only where the device offers them).
    pub fn subgroup_entry(self) -> Option<&'static str> {
        match self {
            Kernel::ConvPointwiseNarrow => Some("conv_pointwise_narrow_subgroup"),
            Kernel::GemmSplit => Some("gemm_split_subgroup"),
            _ => None,
        }
    }

    /// How many read-only storage buffers follow the parameters (the output comes after).
    pub fn input_bindings(self) -> usize {
        match self {
            Kernel::Conv2d
            | Kernel::Conv2dFourChannels
            | Kernel::ConvDepthwise
            | Kernel::ConvDepthwise3x3
            | Kernel::ConvPointwise
            | Kernel::ConvPointwiseBlocked
            | Kernel::ConvPointwiseNarrow => 4,
            Kernel::Binary | Kernel::Activation | Kernel::ChannelAffine | Kernel::Gemm | Kernel::GemmSplit => 3,
            Kernel::GlobalAverage | Kernel::Pool2d | Kernel::ConcatCopy | Kernel::Softmax => 1,
        }
    }
}

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
    /// The parameter words the kernel reads from binding 0.
    pub params: Vec<u32>,
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

const MAX_RANK: usize = 6;

/// Workgroups one grid dimension may hold (WebGPU's `maxComputeWorkgroupsPerDimension` default).
const MAX_GROUPS: usize = 65535;

/// The grid of a 1-D kernel of 64-wide workgroups over `total` invocations.
pub(crate) fn grid_1d(total: usize) -> [u32; 3] {
    let groups = total.div_ceil(64).max(1);
    let x = groups.min(MAX_GROUPS);
    [x as u32, groups.div_ceil(x) as u32, 1]
}

fn u(v: usize) -> u32 {
    v as u32
}

/// One kernel call before slot assignment: the kernel, its parameters, its operands by value
/// name (`None`: an unused binding) and its workgroup grid.
type KernelCall = (Kernel, Vec<u32>, Vec<Option<String>>, [u32; 3]);

/// One step before slot assignment: either kernel calls producing a value, or an alias.
enum Step {
    Compute { calls: Vec<KernelCall>, output: String },
    Alias { from: String, to: String },
}

/// Compiles `graph` for an input of shape `input_shape`.
pub fn compile(graph: &Graph, input_shape: &[usize]) -> Result<Program, CompileError> {
    let shapes = infer_shapes(graph, input_shape)?;
    let steps = plan_steps(graph, &shapes)?;
    Ok(assign_slots(graph, &shapes, steps))
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
                let params = vec![u(total), u(out_shape[1]), u(inner)];
                Step::Compute {
                    calls: vec![(Kernel::ChannelAffine, params, vec![value(0), value(1), value(2)], grid_1d(total))],
                    output: node.output.clone(),
                }
            }
            Op::Activation(a) => {
                let [code, pa, pb] = a.gpu_encoding();
                Step::Compute {
                    calls: vec![(Kernel::Activation, vec![u(total), code, pa, pb], vec![value(0), None, None], grid_1d(total))],
                    output: node.output.clone(),
                }
            }
            Op::Add | Op::Mul => {
                if out_shape.len() > MAX_RANK {
                    return Err(unsupported(node, format!("rank {} is above {MAX_RANK}", out_shape.len())));
                }
                let mut params = vec![u(total), u((node.op == Op::Mul) as usize), u(out_shape.len())];
                let pad = |v: Vec<usize>| v.into_iter().map(u).chain(std::iter::repeat(1)).take(MAX_RANK);
                params.extend(pad(out_shape.clone()));
                for i in 0..2 {
                    let strides = broadcast_strides(&shapes[&node.inputs[i]], out_shape);
                    params.extend(strides.into_iter().map(u).chain(std::iter::repeat(0)).take(MAX_RANK));
                }
                Step::Compute {
                    calls: vec![(Kernel::Binary, params, vec![value(0), value(1), None], grid_1d(total))],
                    output: node.output.clone(),
                }
            }
            Op::GlobalAveragePool => {
                let x = &shapes[&node.inputs[0]];
                let planes = x[0] * x[1];
                Step::Compute {
                    calls: vec![(Kernel::GlobalAverage, vec![u(planes), u(x[2..].iter().product())], vec![value(0)], grid_1d(planes))],
                    output: node.output.clone(),
                }
            }
            Op::AveragePool(pool) | Op::MaxPool(pool) => {
                let x = &shapes[&node.inputs[0]];
                let is_max = matches!(node.op, Op::MaxPool(_));
                let params = [
                    total, x[2], x[3], out_shape[2], out_shape[3], pool.kernel[0], pool.kernel[1],
                    pool.strides[0], pool.strides[1], pool.pads[0], pool.pads[1], pool.pads[2], pool.pads[3],
                    is_max as usize, pool.count_include_pad as usize,
                ];
                Step::Compute {
                    calls: vec![(Kernel::Pool2d, params.into_iter().map(u).collect(), vec![value(0)], grid_1d(total))],
                    output: node.output.clone(),
                }
            }
            Op::Reshape { .. } | Op::Flatten { .. } | Op::Identity => {
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
                    calls.push((Kernel::ConcatCopy, vec![u(count), u(slab), u(out_slab), u(offset)], vec![Some(input.clone())], grid_1d(count)));
                    offset += slab;
                }
                Step::Compute { calls, output: node.output.clone() }
            }
            Op::Gemm { alpha, beta, trans_a, trans_b } => {
                let (m, n) = (out_shape[0], out_shape[1]);
                let a = &shapes[&node.inputs[0]];
                let k = if *trans_a { a[0] } else { a[1] };
                let (a_rs, a_cs) = if *trans_a { (1, m) } else { (k, 1) };
                let (b_rs, b_cs) = if *trans_b { (1, k) } else { (n, 1) };
                let (has_c, c_rs, c_cs) = match node.inputs.get(2) {
                    Some(c) => {
                        let s = broadcast_strides(&shapes[c], out_shape);
                        (1, s[0], s[1])
                    }
                    None => (0, 0, 0),
                };
                let mut params: Vec<u32> = [total, m, n, k, 0, 0, a_rs, a_cs, b_rs, b_cs, has_c, c_rs, c_cs].into_iter().map(u).collect();
                params.extend([alpha.to_bits(), beta.to_bits()]);
                let (kernel, workgroups) = gemm_kernel(total, k);
                Step::Compute {
                    calls: vec![(kernel, params, vec![value(0), value(1), node.inputs.get(2).cloned()], workgroups)],
                    output: node.output.clone(),
                }
            }
            Op::MatMul => {
                let (a, b) = (&shapes[&node.inputs[0]], &shapes[&node.inputs[1]]);
                let (batch, m, k, n) = matmul_dims(a, b).expect("shape inference checked it");
                let batch_count: usize = batch.iter().product();
                let stride = |shape: &[usize], size: usize| -> Result<usize, CompileError> {
                    let own: usize = shape[..shape.len().saturating_sub(2)].iter().product();
                    match own {
                        1 => Ok(0),
                        own if own == batch_count => Ok(size),
                        _ => Err(unsupported(node, format!("batch broadcasting of {a:?} x {b:?}"))),
                    }
                };
                let (sa, sb) = (stride(a, m * k)?, stride(b, k * n)?);
                let mut params: Vec<u32> = [total, m, n, k, sa, sb, k, 1, n, 1, 0, 0, 0].into_iter().map(u).collect();
                params.extend([1f32.to_bits(), 0f32.to_bits()]);
                let (kernel, workgroups) = gemm_kernel(total, k);
                Step::Compute {
                    calls: vec![(kernel, params, vec![value(0), value(1), None], workgroups)],
                    output: node.output.clone(),
                }
            }
            Op::Softmax { axis } => {
                let a = normalize_axis(*axis, out_shape.len()).expect("shape inference checked it");
                let inner: usize = out_shape[a + 1..].iter().product();
                let rows = total / out_shape[a];
                Step::Compute {
                    calls: vec![(Kernel::Softmax, vec![u(rows), u(out_shape[a]), u(inner)], vec![value(0)], grid_1d(rows))],
                    output: node.output.clone(),
                }
            }
        };
        steps.push(step);
    }
    Ok(steps)
}

fn unsupported(node: &Node, reason: String) -> CompileError {
    CompileError::Unsupported { node: node.name.clone(), reason }
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
            Op::Add if residual.is_none() && activation == Activation::Identity => {
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
) -> (Kernel, Vec<u32>, [u32; 3]) {
    let x = &shapes[&node.inputs[0]];
    let w = &shapes[&node.inputs[1]];
    let out = &shapes[&node.output];
    let total: usize = out.iter().product();
    let [code, pa, pb] = activation.gpu_encoding();
    let mut params: Vec<u32> = [
        total, x[0], x[1], x[2], x[3], w[0], out[2], out[3], w[2], w[3], conv.strides[0], conv.strides[1],
        conv.pads[0], conv.pads[1], conv.dilations[0], conv.dilations[1], conv.groups,
        node.inputs.len().min(3).saturating_sub(2), has_residual as usize,
    ]
    .into_iter()
    .map(u)
    .collect();
    params.extend([code, pa, pb]);
    let pointwise = is_pointwise(conv, w);
    let depthwise = conv.groups > 1 && conv.groups == x[1] && w[0] == conv.groups;
    if pointwise {
        let (kernel, workgroups) = pointwise_kernel(x[0] * out[2] * out[3], w[0]);
        (kernel, params, workgroups)
    } else if depthwise && w[2] == 3 && w[3] == 3 && conv.dilations == [1, 1] && matches!(conv.strides[1], 1 | 2) {
        (Kernel::ConvDepthwise3x3, params, plane_grid(out[2] * out[3].div_ceil(4), out[0] * out[1]))
    } else if depthwise {
        (Kernel::ConvDepthwise, params, plane_grid(out[2] * out[3], out[0] * out[1]))
    } else if (w[0] / conv.groups).is_multiple_of(4) {
        (Kernel::Conv2dFourChannels, params, plane_grid(out[2] * out[3], out[0] * out[1] / 4))
    } else {
        (Kernel::Conv2d, params, plane_grid(out[2] * out[3], out[0] * out[1]))
    }
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

/// Gives every value a pooled slot: a slot is reused once the last reader of its value ran.
fn assign_slots(graph: &Graph, shapes: &Shapes, steps: Vec<Step>) -> Program {
    // Aliases (Reshape, Flatten) share their source's slot: resolve each value to its root.
    let mut root: HashMap<String, String> = HashMap::new();
    let resolve = |root: &HashMap<String, String>, v: &str| root.get(v).cloned().unwrap_or_else(|| v.to_string());
    let mut last_use: HashMap<String, usize> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Alias { from, to } => {
                let r = resolve(&root, from);
                last_use.insert(r.clone(), i);
                root.insert(to.clone(), r);
            }
            Step::Compute { calls, .. } => {
                for name in calls.iter().flat_map(|c| c.2.iter().flatten()) {
                    last_use.insert(resolve(&root, name), i);
                }
            }
        }
    }
    let output_root = resolve(&root, &graph.output);
    last_use.insert(output_root.clone(), usize::MAX);

    let size_of = |v: &str| shapes[v].iter().product::<usize>().max(1);
    let mut slot_sizes = vec![size_of(&graph.input.name)];
    let mut slot_of: HashMap<String, usize> = HashMap::from([(graph.input.name.clone(), 0)]);
    let mut free: Vec<usize> = Vec::new();
    let mut constants: Vec<String> = Vec::new();
    let mut dispatches = Vec::new();
    for (i, step) in steps.into_iter().enumerate() {
        let Step::Compute { calls, output } = step else { continue };
        let need = size_of(&output);
        // The smallest free slot that fits, else the largest free one (grown to fit).
        let best = (0..free.len())
            .filter(|&pos| slot_sizes[free[pos]] >= need)
            .min_by_key(|&pos| slot_sizes[free[pos]])
            .or_else(|| (0..free.len()).max_by_key(|&pos| slot_sizes[free[pos]]));
        let slot = match best {
            Some(pos) => {
                let s = free.swap_remove(pos);
                slot_sizes[s] = slot_sizes[s].max(need);
                s
            }
            None => {
                slot_sizes.push(need);
                slot_sizes.len() - 1
            }
        };
        slot_of.insert(output.clone(), slot);
        for (kernel, params, operands, workgroups) in calls {
            let inputs = operands
                .into_iter()
                .map(|o| match o {
                    None => Operand::Unused,
                    Some(name) if graph.initializers.contains_key(&name) => {
                        if !constants.contains(&name) {
                            constants.push(name.clone());
                        }
                        Operand::Constant(name)
                    }
                    Some(name) => Operand::Slot(slot_of[&resolve(&root, &name)]),
                })
                .collect();
            dispatches.push(Dispatch { kernel, params, inputs, output: slot, workgroups });
        }
        // Release the slots whose values are read for the last time by this step.
        let mut released: Vec<String> = slot_of
            .keys()
            .filter(|v| last_use.get(*v).is_none_or(|&l| l <= i) && **v != output)
            .cloned()
            .collect();
        if !last_use.contains_key(&output) {
            released.push(output.clone());
        }
        for v in released {
            let s = slot_of.remove(&v).expect("listed");
            if !slot_of.values().any(|&o| o == s) {
                free.push(s);
            }
        }
    }
    Program {
        dispatches,
        output_slot: slot_of.get(&output_root).copied().unwrap_or(0),
        slot_sizes,
        input_slot: 0,
        input_shape: shapes[&graph.input.name].clone(),
        output_shape: shapes[&graph.output].clone(),
        constants,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
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
                node("add", Op::Add, &["c1", "x"]),
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
        assert_eq!(first.params[18], 1, "has residual");
        assert_eq!(first.params[19], 1, "relu");
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
    fn a_classifier_at_batch_1_splits_its_dot_products_and_a_large_product_does_not() {
        assert_eq!(gemm_kernel(1000, 1280), (Kernel::GemmSplit, [1000, 1, 1]));
        assert_eq!(gemm_kernel(64 * 1000, 1280).0, Kernel::Gemm);
        assert_eq!(gemm_kernel(10, 8).0, Kernel::Gemm, "too short to split");
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
        assert_eq!(program.dispatches[0].workgroups, [1, 8, 1], "5 rows of 2 quads (5 columns) per plane");
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
