//! ONNX operators into the graph IR: each node's op type and attributes (and its constant
//! inputs: weights, bounds, target shapes) become an [`Op`].

use std::collections::HashMap;

use super::attributes::Attributes;
use super::error::{ModelError, UnsupportedOp};
use super::ir::{Activation, BinaryOp, Conv2d, NearestRounding, Node, Op, PadMode, Pool2d, ReduceOp, ResizeCoordinates};
use super::constant_fold::is_integer_type;
use super::onnx_pb::tensor_proto::DataType;
use crate::tensor::Tensor;

pub(super) fn constant<'a>(
    node: &str,
    inputs: &[String],
    index: usize,
    initializers: &'a HashMap<String, Tensor>,
) -> Result<Option<&'a Tensor>, ModelError> {
    match inputs.get(index).filter(|n| !n.is_empty()) {
        None => Ok(None),
        Some(name) => initializers.get(name).map(Some).ok_or_else(|| ModelError::BadInput {
            node: node.into(),
            index,
            reason: format!("('{name}') must be a constant initializer"),
        }),
    }
}

fn scalar(node: &str, t: &Tensor, index: usize) -> Result<f32, ModelError> {
    match t.data() {
        [v] => Ok(*v),
        _ => Err(ModelError::BadInput { node: node.into(), index, reason: "must be a scalar".into() }),
    }
}

pub(super) fn parse_op(
    op_type: &str,
    attrs: &Attributes,
    inputs: &[String],
    initializers: &HashMap<String, Tensor>,
) -> Result<Op, ModelError> {
    let node = attrs.node;
    Ok(match op_type {
        "Conv" => {
            let weight = constant(node, inputs, 1, initializers)?.ok_or_else(|| ModelError::BadInput {
                node: node.into(),
                index: 1,
                reason: "(weight) is missing".into(),
            })?;
            if weight.shape().len() != 4 {
                return Err(attrs.unsupported("kernel_shape", format!("only 2-D convolution is supported, weight is {:?}", weight.shape())));
            }
            let kernel = [weight.shape()[2], weight.shape()[3]];
            if let Some(k) = attrs.ints("kernel_shape")
                && k.iter().map(|&v| v as usize).ne(kernel) {
                    return Err(attrs.unsupported("kernel_shape", format!("{k:?} differs from the weight's {kernel:?}")));
                }
            constant(node, inputs, 2, initializers)?;
            let (strides, pads) = attrs.window(kernel)?;
            let dilations = attrs.usizes("dilations", [1, 1])?;
            let groups = attrs.int("group", 1);
            if groups < 1 || strides.contains(&0) || dilations.contains(&0) {
                return Err(attrs.unsupported("group/strides/dilations", "must be positive"));
            }
            Op::Conv(Conv2d { strides, pads, dilations, groups: groups as usize })
        }
        "Relu" => Op::Activation(Activation::Relu),
        "Clip" => {
            let min = match constant(node, inputs, 1, initializers)? {
                Some(t) => scalar(node, t, 1)?,
                None => attrs.float("min", f32::MIN),
            };
            let max = match constant(node, inputs, 2, initializers)? {
                Some(t) => scalar(node, t, 2)?,
                None => attrs.float("max", f32::MAX),
            };
            Op::Activation(Activation::Clip { min, max })
        }
        "LeakyRelu" => Op::Activation(Activation::LeakyRelu { alpha: attrs.float("alpha", 0.01) }),
        "Sigmoid" => Op::Activation(Activation::Sigmoid),
        "HardSigmoid" => Op::Activation(Activation::HardSigmoid {
            alpha: attrs.float("alpha", 0.2),
            beta: attrs.float("beta", 0.5),
        }),
        "HardSwish" => Op::Activation(Activation::HardSwish),
        "Add" => Op::Binary(BinaryOp::Add),
        "Sub" => Op::Binary(BinaryOp::Sub),
        "Mul" => Op::Binary(BinaryOp::Mul),
        "Div" => Op::Binary(BinaryOp::Div),
        "Pow" => Op::Binary(BinaryOp::Pow),
        // More than two inputs are chained at import (see `variadic`).
        "Min" | "Max" | "Sum" | "Mean" if inputs.iter().filter(|i| !i.is_empty()).count() == 1 => Op::Identity,
        "Min" => Op::Binary(BinaryOp::Min),
        "Max" => Op::Binary(BinaryOp::Max),
        "Sum" => Op::Binary(BinaryOp::Add),
        "Tanh" => Op::Activation(Activation::Tanh),
        "Exp" => Op::Activation(Activation::Exp),
        "Log" => Op::Activation(Activation::Log),
        "Sqrt" => Op::Activation(Activation::Sqrt),
        "Neg" => Op::Activation(Activation::Neg),
        "Abs" => Op::Activation(Activation::Abs),
        "Reciprocal" => Op::Activation(Activation::Reciprocal),
        "Floor" => Op::Activation(Activation::Floor),
        "Ceil" => Op::Activation(Activation::Ceil),
        "Round" => Op::Activation(Activation::Round),
        "Erf" => Op::Activation(Activation::Erf),
        "Gelu" => match attrs.string("approximate").as_deref() {
            None | Some("none") => Op::Activation(Activation::Gelu { tanh: false }),
            Some("tanh") => Op::Activation(Activation::Gelu { tanh: true }),
            Some(other) => return Err(attrs.unsupported("approximate", format!("'{other}'"))),
        },
        "GlobalAveragePool" => Op::GlobalAveragePool,
        "AveragePool" | "MaxPool" => {
            let kernel = attrs.usizes("kernel_shape", [0, 0])?;
            if kernel.contains(&0) {
                return Err(attrs.unsupported("kernel_shape", "a 2-D kernel_shape is required"));
            }
            if attrs.ints("dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
                return Err(attrs.unsupported("dilations", "only 1 is supported"));
            }
            if attrs.int("storage_order", 0) != 0 {
                return Err(attrs.unsupported("storage_order", "only 0 is supported"));
            }
            let (strides, pads) = attrs.window(kernel)?;
            let pool = Pool2d {
                kernel,
                strides,
                pads,
                ceil_mode: attrs.int("ceil_mode", 0) != 0,
                count_include_pad: attrs.int("count_include_pad", 0) != 0,
            };
            if op_type == "MaxPool" { Op::MaxPool(pool) } else { Op::AveragePool(pool) }
        }
        "Flatten" => Op::Flatten { axis: attrs.int("axis", 1) },
        "Reshape" => {
            let shape = constant(node, inputs, 1, initializers)?.ok_or_else(|| ModelError::BadInput {
                node: node.into(),
                index: 1,
                reason: "(shape) is missing".into(),
            })?;
            Op::Reshape {
                shape: shape.data().iter().map(|&v| v as i64).collect(),
                allow_zero: attrs.int("allowzero", 0) != 0,
            }
        }
        "Concat" => Op::Concat {
            axis: attrs.get("axis").and_then(|a| a.i).ok_or_else(|| attrs.unsupported("axis", "is required"))?,
        },
        "Gemm" => Op::Gemm {
            alpha: attrs.float("alpha", 1.0),
            beta: attrs.float("beta", 1.0),
            trans_a: attrs.int("transA", 0) != 0,
            trans_b: attrs.int("transB", 0) != 0,
        },
        "MatMul" => Op::MatMul,
        "Softmax" => Op::Softmax { axis: attrs.int("axis", -1) },
        "Identity" | "Dropout" => Op::Identity,
        // A cast of a computed value between float types leaves the f32 values as they are; to
        // an integer type it drops the fraction (the values stay f32, exact up to 2^24).
        "Cast" => match attrs.int("to", 0) as i32 {
            to if to == DataType::Float as i32 || to == DataType::Double as i32 || to == DataType::Float16 as i32 => Op::Identity,
            to if to == DataType::Bool as i32 => return Err(attrs.unsupported("to", "a cast of a computed value to bool is not supported")),
            to if is_integer_type(to) => Op::Activation(Activation::Trunc),
            to => return Err(attrs.unsupported("to", format!("a cast of a computed value to element type {to}: float and integer types are supported"))),
        },
        "Transpose" => {
            let perm = attrs.ints("perm").ok_or_else(|| attrs.unsupported("perm", "is required (reversing every axis of a computed value is not supported)"))?;
            if perm.iter().any(|&p| p < 0) {
                return Err(attrs.unsupported("perm", format!("{perm:?} has a negative axis")));
            }
            Op::Transpose { perm: perm.into_iter().map(|p| p as usize).collect() }
        }
        "Slice" => {
            let ints_at = |index: usize| -> Result<Option<Vec<i64>>, ModelError> {
                Ok(constant(node, inputs, index, initializers)?.map(|t| t.data().iter().map(|&v| v as i64).collect()))
            };
            let starts = ints_at(1)?.ok_or_else(|| ModelError::BadInput { node: node.into(), index: 1, reason: "(starts) is missing".into() })?;
            let ends = ints_at(2)?.ok_or_else(|| ModelError::BadInput { node: node.into(), index: 2, reason: "(ends) is missing".into() })?;
            let axes = ints_at(3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
            let steps = ints_at(4)?.unwrap_or_else(|| vec![1; starts.len()]);
            Op::Slice { starts, ends, axes, steps }
        }
        "Squeeze" | "Unsqueeze" => {
            let axes = match constant(node, inputs, 1, initializers)? {
                Some(t) => Some(t.data().iter().map(|&v| v as i64).collect()),
                None => attrs.ints("axes"),
            };
            match (op_type, axes) {
                ("Squeeze", axes) => Op::Squeeze { axes },
                (_, Some(axes)) => Op::Unsqueeze { axes },
                (_, None) => return Err(ModelError::BadInput { node: node.into(), index: 1, reason: "(axes) is missing".into() }),
            }
        }
        "LayerNormalization" => {
            constant(node, inputs, 1, initializers)?.ok_or_else(|| ModelError::BadInput { node: node.into(), index: 1, reason: "(scale) is missing".into() })?;
            constant(node, inputs, 2, initializers)?;
            Op::LayerNorm { axis: attrs.int("axis", -1), epsilon: attrs.float("epsilon", 1e-5) }
        }
        "Gather" => Op::Gather { axis: attrs.int("axis", 0) },
        "LogSoftmax" => Op::LogSoftmax { axis: attrs.int("axis", -1) },
        "Pad" => {
            // Opset 11+: pads (and the constant) as inputs; opset 18 adds axes.
            if constant(node, inputs, 3, initializers)?.is_some() {
                return Err(attrs.unsupported("axes", "Pad with axes is not supported"));
            }
            let pads = constant(node, inputs, 1, initializers)?.ok_or_else(|| ModelError::BadInput { node: node.into(), index: 1, reason: "(pads) is missing".into() })?;
            let value = constant(node, inputs, 2, initializers)?.and_then(|t| t.data().first().copied()).unwrap_or(0.0);
            let mode = match attrs.string("mode").as_deref() {
                None | Some("constant") => PadMode::Constant(value),
                Some("reflect") => PadMode::Reflect,
                Some("edge") => PadMode::Edge,
                Some(other) => return Err(attrs.unsupported("mode", format!("'{other}'"))),
            };
            Op::Pad { mode, pads: pads.data().iter().map(|&v| v as i64).collect() }
        }
        "Tile" => {
            let repeats = constant(node, inputs, 1, initializers)?.ok_or_else(|| ModelError::BadInput { node: node.into(), index: 1, reason: "(repeats) is missing".into() })?;
            if repeats.data().iter().any(|&r| r < 0.0) {
                return Err(ModelError::BadInput { node: node.into(), index: 1, reason: "(repeats) must not be negative".into() });
            }
            Op::Tile { repeats: repeats.data().iter().map(|&r| r as usize).collect() }
        }
        "Resize" => resize(attrs, inputs, initializers)?,
        "ConvTranspose" => {
            let weight = constant(node, inputs, 1, initializers)?.ok_or_else(|| ModelError::BadInput { node: node.into(), index: 1, reason: "(weight) is missing".into() })?;
            if weight.shape().len() != 4 {
                return Err(attrs.unsupported("kernel_shape", format!("only 2-D transposed convolution is supported, weight is {:?}", weight.shape())));
            }
            constant(node, inputs, 2, initializers)?;
            if attrs.get("output_shape").is_some() {
                return Err(attrs.unsupported("output_shape", "give pads and output_padding instead"));
            }
            if attrs.string("auto_pad").is_some_and(|p| p != "NOTSET") {
                return Err(attrs.unsupported("auto_pad", "only explicit pads are supported"));
            }
            let strides = attrs.usizes("strides", [1, 1])?;
            let dilations = attrs.usizes("dilations", [1, 1])?;
            let groups = attrs.int("group", 1);
            if groups < 1 || strides.contains(&0) || dilations.contains(&0) {
                return Err(attrs.unsupported("group/strides/dilations", "must be positive"));
            }
            let conv = Conv2d { strides, pads: attrs.usizes("pads", [0; 4])?, dilations, groups: groups as usize };
            Op::ConvTranspose { conv, output_padding: attrs.usizes("output_padding", [0, 0])? }
        }
        "InstanceNormalization" => {
            for index in [1, 2] {
                constant(node, inputs, index, initializers)?.ok_or_else(|| ModelError::BadInput { node: node.into(), index, reason: "is missing".into() })?;
            }
            Op::InstanceNorm { epsilon: attrs.float("epsilon", 1e-5) }
        }
        "Expand" => {
            let shape = constant(node, inputs, 1, initializers)?.ok_or_else(|| ModelError::BadInput { node: node.into(), index: 1, reason: "(shape) is missing".into() })?;
            Op::Expand { shape: shape.data().iter().map(|&v| v as i64).collect() }
        }
        "Where" => Op::Where,
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceL2" => {
            let op = match op_type {
                "ReduceMean" => ReduceOp::Mean,
                "ReduceSum" => ReduceOp::Sum,
                "ReduceMax" => ReduceOp::Max,
                "ReduceMin" => ReduceOp::Min,
                _ => ReduceOp::L2,
            };
            // Opset 18 (ReduceSum: 13) moved `axes` from an attribute to an input.
            let axes: Option<Vec<i64>> = match constant(node, inputs, 1, initializers)? {
                Some(t) => Some(t.data().iter().map(|&v| v as i64).collect()),
                None => attrs.ints("axes"),
            };
            let axes = axes.filter(|a| !a.is_empty());
            if axes.is_none() && attrs.int("noop_with_empty_axes", 0) != 0 {
                Op::Identity
            } else {
                Op::Reduce { op, axes, keep_dims: attrs.int("keepdims", 1) != 0 }
            }
        }
        other => return Err(ModelError::UnsupportedOps(vec![UnsupportedOp { node: node.into(), op: other.into() }])),
    })
}

/// A Resize (opset 13+: inputs X, roi, scales, sizes) of the last two axes, nearest or linear.
fn resize(attrs: &Attributes, inputs: &[String], initializers: &HashMap<String, Tensor>) -> Result<Op, ModelError> {
    let node = attrs.node;
    let linear = match attrs.string("mode").as_deref() {
        None | Some("nearest") => false,
        Some("linear") => true,
        Some(other) => return Err(attrs.unsupported("mode", format!("'{other}' (nearest and linear are)"))),
    };
    let coordinates = match attrs.string("coordinate_transformation_mode").as_deref() {
        None | Some("half_pixel") => ResizeCoordinates::HalfPixel,
        Some("pytorch_half_pixel") => ResizeCoordinates::PytorchHalfPixel,
        Some("asymmetric") => ResizeCoordinates::Asymmetric,
        Some("align_corners") => ResizeCoordinates::AlignCorners,
        Some(other) => return Err(attrs.unsupported("coordinate_transformation_mode", format!("'{other}'"))),
    };
    let nearest = match attrs.string("nearest_mode").as_deref() {
        None | Some("round_prefer_floor") => NearestRounding::RoundPreferFloor,
        Some("round_prefer_ceil") => NearestRounding::RoundPreferCeil,
        Some("floor") => NearestRounding::Floor,
        Some("ceil") => NearestRounding::Ceil,
        Some(other) => return Err(attrs.unsupported("nearest_mode", format!("'{other}'"))),
    };
    if attrs.int("antialias", 0) != 0 || attrs.get("axes").is_some() || attrs.int("exclude_outside", 0) != 0 {
        return Err(attrs.unsupported("antialias/axes/exclude_outside", "only their defaults are supported"));
    }
    let scales = constant(node, inputs, 2, initializers)?.filter(|t| !t.is_empty()).map(|t| t.data().to_vec());
    let sizes = constant(node, inputs, 3, initializers)?.filter(|t| !t.is_empty()).map(|t| t.data().iter().map(|&v| v as usize).collect());
    if scales.is_none() && sizes.is_none() {
        return Err(ModelError::BadInput { node: node.into(), index: 2, reason: "(scales or sizes) is missing".into() });
    }
    Ok(Op::Resize { linear, coordinates, nearest, scales, sizes })
}

/// Turns an inference BatchNormalization into a per-channel affine with new constant
/// scale/shift tensors (`fold.rs` later folds it into a preceding convolution).
pub(super) fn batch_norm(
    attrs: &Attributes,
    inputs: Vec<String>,
    initializers: &mut HashMap<String, Tensor>,
) -> Result<(Op, Vec<String>), ModelError> {
    let node = attrs.node;
    if attrs.int("training_mode", 0) != 0 {
        return Err(attrs.unsupported("training_mode", "only inference is supported"));
    }
    let epsilon = attrs.float("epsilon", 1e-5);
    let mut params = Vec::with_capacity(4);
    for index in 1..5 {
        params.push(constant(node, &inputs, index, initializers)?.ok_or_else(|| {
            ModelError::BadInput { node: node.into(), index, reason: "is missing".into() }
        })?);
    }
    let channels = params[0].len();
    if params.iter().any(|p| p.len() != channels) {
        return Err(ModelError::BadInput {
            node: node.into(),
            index: 1,
            reason: "scale, bias, mean and var must have one value per channel".into(),
        });
    }
    let (scale, shift): (Vec<f32>, Vec<f32>) = (0..channels)
        .map(|c| {
            let s = params[0].data()[c] / (params[3].data()[c] + epsilon).sqrt();
            (s, params[1].data()[c] - params[2].data()[c] * s)
        })
        .unzip();
    let (scale_name, shift_name) = (format!("{node}::bn_scale"), format!("{node}::bn_shift"));
    initializers.insert(scale_name.clone(), Tensor::new(vec![channels], scale).expect("channels"));
    initializers.insert(shift_name.clone(), Tensor::new(vec![channels], shift).expect("channels"));
    Ok((Op::ChannelAffine, vec![inputs[0].clone(), scale_name, shift_name]))
}

pub(super) fn check_arity(node: &str, op: &Op, inputs: &[String]) -> Result<(), ModelError> {
    let (min, max) = match op {
        Op::Conv(_) | Op::Gemm { .. } | Op::ConvTranspose { .. } => (2, 3),
        Op::ChannelAffine => (3, 3),
        Op::Binary(_) | Op::MatMul | Op::Gather { .. } => (2, 2),
        Op::LayerNorm { .. } => (2, 3),
        Op::InstanceNorm { .. } | Op::Where => (3, 3),
        Op::Concat { .. } => (1, usize::MAX),
        Op::Identity => (1, 3),
        _ => (1, 1),
    };
    if inputs.len() < min || inputs.len() > max {
        return Err(ModelError::BadInput {
            node: node.into(),
            index: inputs.len(),
            reason: format!("count is wrong: {} given, {min}..={max} expected", inputs.len()),
        });
    }
    Ok(())
}

/// A Min, Max or Sum of more than two inputs as a chain of binary nodes, the last writing the
/// node's output.
pub(super) fn variadic(name: &str, op_type: &str, inputs: &[String], output: &str, initializers: &mut HashMap<String, Tensor>) -> Vec<Node> {
    let op = match op_type {
        "Min" => BinaryOp::Min,
        "Max" => BinaryOp::Max,
        _ => BinaryOp::Add,
    };
    let mean = op_type == "Mean";
    let mut nodes: Vec<Node> = Vec::new();
    let mut accumulated = inputs[0].clone();
    for (k, next) in inputs[1..].iter().enumerate() {
        let last = k + 2 == inputs.len() && !mean;
        let out = if last { output.to_string() } else { format!("{name}::partial{k}") };
        nodes.push(Node { name: format!("{name}:{k}"), op: Op::Binary(op), inputs: vec![accumulated, next.clone()], output: out.clone() });
        accumulated = out;
    }
    if mean {
        // The sum over the count.
        let scale = format!("{name}::reciprocal_count");
        initializers.insert(scale.clone(), Tensor::new(vec![], vec![1.0 / inputs.len() as f32]).expect("a scalar"));
        nodes.push(Node { name: format!("{name}:mean"), op: Op::Binary(BinaryOp::Mul), inputs: vec![accumulated, scale], output: output.into() });
    }
    nodes
}
