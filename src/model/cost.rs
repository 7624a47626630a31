//! What each node costs: floating-point operations and the bytes of the values it produces,
//! for partition planning and for the benchmarks' hardware floors.

use super::ir::{Graph, Node, Op};
use super::shape::Shapes;

/// Floating-point operations of one node (a multiply-add counts as two) for the given shapes.
pub fn node_flops(node: &Node, shapes: &Shapes) -> u64 {
    let out: u64 = shapes[&node.output].iter().product::<usize>() as u64;
    let input = |i: usize| -> &[usize] { shapes[&node.inputs[i]].as_slice() };
    match &node.op {
        Op::Conv(_) => {
            let weight = input(1);
            let per_output = (weight[1] * weight[2] * weight[3]) as u64;
            2 * out * per_output + if node.inputs.len() > 2 { out } else { 0 }
        }
        Op::Gemm { trans_a, .. } => {
            let a = input(0);
            let k = if *trans_a { a[0] } else { a[1] } as u64;
            2 * out * k + if node.inputs.len() > 2 { 2 * out } else { 0 }
        }
        Op::MatMul => {
            let a = input(0);
            let k = *a.last().unwrap_or(&1) as u64;
            2 * out * k
        }
        Op::AveragePool(pool) | Op::MaxPool(pool) => out * (pool.kernel[0] * pool.kernel[1]) as u64,
        Op::GlobalAveragePool => input(0).iter().product::<usize>() as u64,
        Op::Softmax { .. } => 4 * out,
        Op::ChannelAffine => 2 * out,
        Op::Activation(_) | Op::Binary(_) => out,
        Op::Reduce { .. } => input(0).iter().product::<usize>() as u64,
        Op::LayerNorm { .. } | Op::InstanceNorm { .. } => 8 * out,
        Op::LogSoftmax { .. } => 4 * out,
        Op::Resize { .. } => 4 * out,
        Op::Pad { .. } | Op::Tile { .. } => 0,
        Op::Recurrent { cell, hidden, .. } => 2 * out * (cell.gates() * (input(0)[2] + hidden)) as u64,
        // Each input value meets out_channels / groups weights of every tap.
        Op::ConvTranspose { .. } => {
            let (x, weight) = (input(0), input(1));
            2 * (x.iter().product::<usize>() * weight[1] * weight[2] * weight[3]) as u64
        }
        Op::Expand { .. } => 0,
        Op::Where => out,
        Op::Gather { .. } => 0,
        Op::Reshape { .. } | Op::Flatten { .. } | Op::Concat { .. } | Op::Identity | Op::Squeeze { .. } | Op::Unsqueeze { .. } => 0,
        Op::Transpose { .. } | Op::Slice { .. } => 0,
    }
}

/// Bytes of a value as `f32`.
pub fn value_bytes(shapes: &Shapes, value: &str) -> u64 {
    shapes.get(value).map_or(0, |s| s.iter().product::<usize>() as u64 * 4)
}

/// The whole graph's FLOPs and weight bytes.
pub fn graph_cost(graph: &Graph, shapes: &Shapes) -> (u64, u64) {
    let flops = graph.nodes.iter().map(|n| node_flops(n, shapes)).sum();
    let weights = graph.initializers.values().map(|t| t.len() as u64 * 4).sum();
    (flops, weights)
}
