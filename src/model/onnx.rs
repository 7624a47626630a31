//! ONNX (opset 13+) import into the graph IR.

use std::collections::{HashMap, HashSet};

use prost::Message;

use super::error::ModelError;
use super::ir::{Activation, Conv2d, Graph, GraphInput, Node, Op, Pool2d};
use super::onnx_pb::{self as pb, tensor_proto::DataType};
use crate::tensor::Tensor;

/// Oldest default-domain opset accepted.
pub const MIN_OPSET: i64 = 13;

/// Parses ONNX protobuf bytes into a [`Graph`]: every node in the listed op set, constant
/// inputs resolved, and the Identity/Dropout/BatchNormalization simplifications applied.
pub fn import_onnx(bytes: &[u8]) -> Result<Graph, ModelError> {
    let model = pb::ModelProto::decode(bytes).map_err(|e| ModelError::Malformed(e.to_string()))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version)
        .unwrap_or(0);
    if opset < MIN_OPSET {
        return Err(ModelError::UnsupportedOpset(opset));
    }
    let graph = model.graph.ok_or(ModelError::MissingGraph)?;

    let mut initializers = HashMap::new();
    for t in &graph.initializer {
        let name = t.name.clone().unwrap_or_default();
        initializers.insert(name.clone(), tensor_from_proto(&name, t)?);
    }
    let inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains_key(i.name.as_deref().unwrap_or_default()))
        .collect();
    if inputs.len() != 1 || graph.output.len() != 1 {
        return Err(ModelError::UnsupportedSignature {
            inputs: inputs.len(),
            outputs: graph.output.len(),
        });
    }
    let input = GraphInput {
        name: inputs[0].name.clone().unwrap_or_default(),
        dims: declared_dims(inputs[0]),
    };
    let output = graph.output[0].name.clone().unwrap_or_default();

    let mut known: HashSet<String> = initializers.keys().cloned().collect();
    known.insert(input.name.clone());
    let mut nodes = Vec::with_capacity(graph.node.len());
    for (index, node) in graph.node.iter().enumerate() {
        let name = node
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("{}_{index}", node.op_type.as_deref().unwrap_or("node")));
        let op_type = node.op_type.as_deref().unwrap_or_default();
        if !matches!(node.domain.as_deref(), None | Some("") | Some("ai.onnx")) {
            return Err(ModelError::UnsupportedOp {
                node: name,
                op: format!("{}::{op_type}", node.domain.as_deref().unwrap_or_default()),
            });
        }
        let Some(output) = node.output.first().cloned() else {
            return Err(ModelError::Shape { node: name, reason: "the node has no output".into() });
        };
        if op_type == "Constant" {
            let value = constant_value(&name, node)?;
            initializers.insert(output.clone(), value);
            known.insert(output);
            continue;
        }
        let inputs: Vec<String> = node.input.iter().filter(|i| !i.is_empty()).cloned().collect();
        for value in &inputs {
            if !known.contains(value) {
                return Err(ModelError::UnknownValue { node: name, value: value.clone() });
            }
        }
        let attrs = Attributes { node: &name, list: &node.attribute };
        let (op, inputs) = if op_type == "BatchNormalization" {
            batch_norm(&attrs, inputs, &mut initializers)?
        } else {
            (parse_op(op_type, &attrs, &node.input, &initializers)?, inputs)
        };
        let inputs = match &op {
            // Bounds, target shapes and similar constant inputs are folded into the op.
            Op::Activation(_) | Op::Reshape { .. } => inputs.into_iter().take(1).collect(),
            _ => inputs,
        };
        check_arity(&name, &op, &inputs)?;
        known.insert(output.clone());
        nodes.push(Node { name, op, inputs, output });
    }
    if !known.contains(&output) {
        return Err(ModelError::UnknownValue { node: "graph output".into(), value: output });
    }
    let mut graph = Graph { input, output, nodes, initializers };
    super::fold::simplify(&mut graph)?;
    Ok(graph)
}

fn declared_dims(info: &pb::ValueInfoProto) -> Vec<Option<usize>> {
    let shape = info.r#type.as_ref().and_then(|t| match &t.value {
        Some(pb::type_proto::Value::TensorType(tt)) => tt.shape.as_ref(),
        _ => None,
    });
    shape
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => {
                        Some(v as usize)
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Converts an initializer (raw_data or typed fields) to an `f32` tensor.
fn tensor_from_proto(name: &str, t: &pb::TensorProto) -> Result<Tensor, ModelError> {
    let bad = |reason: String| ModelError::BadInitializer { name: name.to_string(), reason };
    if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32) {
        return Err(bad("external data is not supported".into()));
    }
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("negative dimension {d}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad("dimensions overflow".into()))?;
    let raw = t.raw_data.as_deref().filter(|r| !r.is_empty());
    let data_type = t.data_type.unwrap_or(0);
    let values: Vec<f32> = match DataType::try_from(data_type) {
        Ok(DataType::Float) => match raw {
            Some(r) => fixed_width(r, 4, count, &bad)?
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            None => t.float_data.clone(),
        },
        Ok(DataType::Double) => match raw {
            Some(r) => fixed_width(r, 8, count, &bad)?
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            None => t.double_data.iter().map(|&v| v as f32).collect(),
        },
        Ok(DataType::Int64) => match raw {
            Some(r) => fixed_width(r, 8, count, &bad)?
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            None => t.int64_data.iter().map(|&v| v as f32).collect(),
        },
        Ok(DataType::Int32) => match raw {
            Some(r) => fixed_width(r, 4, count, &bad)?
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
                .collect(),
            None => t.int32_data.iter().map(|&v| v as f32).collect(),
        },
        _ => return Err(bad(format!("data type {data_type} is not supported"))),
    };
    Tensor::new(dims, values).map_err(|e| bad(e.to_string()))
}

fn fixed_width<'a>(
    raw: &'a [u8],
    width: usize,
    count: usize,
    bad: &dyn Fn(String) -> ModelError,
) -> Result<std::slice::ChunksExact<'a, u8>, ModelError> {
    if raw.len() != count * width {
        return Err(bad(format!("raw_data has {} bytes, {} expected", raw.len(), count * width)));
    }
    Ok(raw.chunks_exact(width))
}

fn constant_value(node: &str, proto: &pb::NodeProto) -> Result<Tensor, ModelError> {
    let attrs = Attributes { node, list: &proto.attribute };
    if let Some(t) = attrs.get("value").and_then(|a| a.t.as_ref()) {
        return tensor_from_proto(node, t);
    }
    if let Some(a) = attrs.get("value_float") {
        return Ok(Tensor::new(vec![], vec![a.f.unwrap_or_default()]).expect("scalar"));
    }
    if let Some(a) = attrs.get("value_floats") {
        return Ok(Tensor::new(vec![a.floats.len()], a.floats.clone()).expect("vector"));
    }
    if let Some(a) = attrs.get("value_int") {
        return Ok(Tensor::new(vec![], vec![a.i.unwrap_or_default() as f32]).expect("scalar"));
    }
    if let Some(a) = attrs.get("value_ints") {
        let v: Vec<f32> = a.ints.iter().map(|&i| i as f32).collect();
        return Ok(Tensor::new(vec![v.len()], v).expect("vector"));
    }
    Err(ModelError::UnsupportedAttribute {
        node: node.into(),
        attribute: "value".into(),
        reason: "Constant needs a tensor, float(s) or int(s) value".into(),
    })
}

/// A node's attributes with typed accessors that name the node in their errors.
struct Attributes<'a> {
    node: &'a str,
    list: &'a [pb::AttributeProto],
}

impl Attributes<'_> {
    fn get(&self, name: &str) -> Option<&pb::AttributeProto> {
        self.list.iter().find(|a| a.name.as_deref() == Some(name))
    }
    fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).and_then(|a| a.i).unwrap_or(default)
    }
    fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).and_then(|a| a.f).unwrap_or(default)
    }
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    fn string(&self, name: &str) -> Option<String> {
        self.get(name).and_then(|a| a.s.as_ref()).map(|s| String::from_utf8_lossy(s).into_owned())
    }
    fn unsupported(&self, attribute: &str, reason: impl Into<String>) -> ModelError {
        ModelError::UnsupportedAttribute {
            node: self.node.into(),
            attribute: attribute.into(),
            reason: reason.into(),
        }
    }
    /// A list of `n` non-negative integers, or `default` when absent.
    fn usizes<const N: usize>(&self, name: &str, default: [usize; N]) -> Result<[usize; N], ModelError> {
        let Some(values) = self.ints(name) else { return Ok(default) };
        if values.len() != N || values.iter().any(|&v| v < 0) {
            return Err(self.unsupported(name, format!("expected {N} non-negative values, got {values:?}")));
        }
        Ok(std::array::from_fn(|i| values[i] as usize))
    }
    /// Stride and padding (explicit or from `auto_pad`) for a 2-D window; `auto_pad` SAME_* is
    /// resolved here for stride 1 and rejected otherwise (it would depend on the input size).
    fn window(&self, kernel: [usize; 2]) -> Result<([usize; 2], [usize; 4]), ModelError> {
        let strides = self.usizes("strides", [1, 1])?;
        let pads = match self.string("auto_pad").as_deref() {
            None | Some("NOTSET") => self.usizes("pads", [0, 0, 0, 0])?,
            Some("VALID") => [0, 0, 0, 0],
            Some(mode @ ("SAME_UPPER" | "SAME_LOWER")) if strides == [1, 1] => {
                let total = [kernel[0] - 1, kernel[1] - 1];
                let small = [total[0] / 2, total[1] / 2];
                let big = [total[0] - small[0], total[1] - small[1]];
                if mode == "SAME_UPPER" {
                    [small[0], small[1], big[0], big[1]]
                } else {
                    [big[0], big[1], small[0], small[1]]
                }
            }
            Some(other) => return Err(self.unsupported("auto_pad", format!("'{other}' with strides {strides:?}"))),
        };
        // ONNX orders pads as [top, left, bottom, right] for 2-D windows.
        Ok((strides, pads))
    }
}

fn constant<'a>(
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

fn parse_op(
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
        "Add" => Op::Add,
        "Mul" => Op::Mul,
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
        other => return Err(ModelError::UnsupportedOp { node: node.into(), op: other.into() }),
    })
}

/// Turns an inference BatchNormalization into a per-channel affine with new constant
/// scale/shift tensors (`fold.rs` later folds it into a preceding convolution).
fn batch_norm(
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

fn check_arity(node: &str, op: &Op, inputs: &[String]) -> Result<(), ModelError> {
    let (min, max) = match op {
        Op::Conv(_) | Op::Gemm { .. } => (2, 3),
        Op::ChannelAffine => (3, 3),
        Op::Add | Op::Mul | Op::MatMul => (2, 2),
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
