//! ONNX (opset 13+) import into the graph IR.

use std::collections::{HashMap, HashSet};

use prost::Message;

use super::attributes::Attributes;
use super::onnx_ops::{batch_norm, check_arity, constant, parse_op, variadic};
use super::onnx_recurrent::recurrent;
use super::external_data::{inline_external_data, ExternalFiles};
use super::proto_tensor::tensor_from_proto;
use super::constant_fold::{evaluate, is_foldable, is_integer_type, shape_of, Constant};
use super::error::{ModelError, UnsupportedOp};
use super::shape::{node_output_shape, normalize_axis};
use super::ir::{Graph, GraphInput, Node, Op};
use super::onnx_pb as pb;
use crate::tensor::Tensor;

/// Oldest default-domain opset accepted.
pub const MIN_OPSET: i64 = 13;

/// Parses ONNX protobuf bytes into a [`Graph`]: every node in the listed op set, constant
/// inputs resolved, and the Identity/Dropout/BatchNormalization simplifications applied.
pub fn import_onnx(bytes: &[u8]) -> Result<Graph, ModelError> {
    import_onnx_with(bytes, &ImportOptions::default())
}

/// What an import needs besides the ONNX bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct ImportOptions<'a> {
    /// Fixes the input's symbolic dimensions (see [`import_onnx_for_input`]).
    pub input_shape: Option<&'a [usize]>,
    /// Without `input_shape`: fixes every symbolic input dimension to this value.
    pub symbolic_dims_as: Option<usize>,
    /// The external data files the model's initializers name ([`external_data_locations`](super::external_data::external_data_locations)).
    pub external_files: Option<&'a ExternalFiles>,
}

/// [`import_onnx`] for one input shape: the input's symbolic dimensions (a dynamic batch, say)
/// are fixed to `input_shape`'s, so that shape arithmetic on them folds. Models exported with
/// dynamic axes need this; [`crate::Model`] does it once per request shape.
pub fn import_onnx_for_input(bytes: &[u8], input_shape: &[usize]) -> Result<Graph, ModelError> {
    import_onnx_with(bytes, &ImportOptions { input_shape: Some(input_shape), ..Default::default() })
}

/// [`import_onnx`] with an input shape and external data files.
pub fn import_onnx_with(bytes: &[u8], options: &ImportOptions) -> Result<Graph, ModelError> {
    let input_shape = options.input_shape;
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
    let mut graph = model.graph.ok_or(ModelError::MissingGraph)?;
    inline_external_data(&mut graph, options.external_files.unwrap_or(&ExternalFiles::new()))?;

    let mut initializers = HashMap::new();
    // Constants typed as integers or bools in the file (for folding: division and casts round).
    let mut integer: HashSet<String> = HashSet::new();
    for t in &graph.initializer {
        let name = t.name.clone().unwrap_or_default();
        initializers.insert(name.clone(), tensor_from_proto(&name, t)?);
        if is_integer_type(t.data_type.unwrap_or(0)) {
            integer.insert(name);
        }
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
    let mut input = GraphInput {
        name: inputs[0].name.clone().unwrap_or_default(),
        dims: declared_dims(inputs[0]),
    };
    if let Some(shape) = input_shape {
        let fits = input.dims.is_empty() || (input.dims.len() == shape.len() && input.dims.iter().zip(shape).all(|(d, &s)| d.is_none_or(|d| d == s)));
        if !fits || shape.contains(&0) {
            let expected = input.dims.iter().map(|d| d.map_or("?".to_string(), |d| d.to_string())).collect::<Vec<_>>().join("x");
            return Err(ModelError::InputShape { name: input.name, expected: format!("[{expected}]"), got: shape.to_vec() });
        }
        input.dims = shape.iter().map(|&d| Some(d)).collect();
    } else if let Some(value) = options.symbolic_dims_as {
        input.dims = input.dims.iter().map(|d| Some(d.unwrap_or(value))).collect();
    }
    let output = graph.output[0].name.clone().unwrap_or_default();

    let mut known: HashSet<String> = initializers.keys().cloned().collect();
    known.insert(input.name.clone());
    // Shapes known at import: every value's, where the input's dimensions are all declared.
    let mut shapes: HashMap<String, Vec<usize>> = HashMap::new();
    if let Some(dims) = input.dims.iter().copied().collect::<Option<Vec<usize>>>().filter(|d| !d.is_empty()) {
        shapes.insert(input.name.clone(), dims);
    }
    let mut unsupported = Vec::new();
    let mut nodes = Vec::with_capacity(graph.node.len());
    // Values some node or the graph output reads.
    let read: HashSet<&str> = graph.node.iter().flat_map(|n| n.input.iter().map(String::as_str)).chain([output.as_str()]).collect();
    for (index, node) in graph.node.iter().enumerate() {
        let name = node
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("{}_{index}", node.op_type.as_deref().unwrap_or("node")));
        let op_type = node.op_type.as_deref().unwrap_or_default();
        let Some(output) = node.output.first().cloned() else {
            return Err(ModelError::Shape { node: name, reason: "the node has no output".into() });
        };
        if !matches!(node.domain.as_deref(), None | Some("") | Some("ai.onnx")) {
            unsupported.push(UnsupportedOp { node: name, op: format!("{}::{op_type}", node.domain.as_deref().unwrap_or_default()) });
            known.insert(output);
            continue;
        }
        let attrs = Attributes { node: &name, list: &node.attribute };
        if op_type == "Constant" {
            let value = constant_value(&name, node)?;
            let typed_integer = attrs.get("value").and_then(|a| a.t.as_ref()).is_some_and(|t| is_integer_type(t.data_type.unwrap_or(0)))
                || attrs.get("value_int").is_some()
                || attrs.get("value_ints").is_some();
            if typed_integer {
                integer.insert(output.clone());
            }
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
        let constant_of = |value: &String| -> Option<Constant> {
            initializers.get(value).map(|t| Constant { tensor: t.clone(), integer: integer.contains(value) })
        };
        let folded = if op_type == "Shape" {
            let source = &inputs[0];
            let shape = initializers.get(source).map(|t| t.shape().to_vec()).or_else(|| shapes.get(source).cloned());
            match shape {
                Some(shape) => Some(shape_of(&attrs, &shape)?),
                None => return Err(ModelError::NeedsInputShape { node: name, value: source.clone() }),
            }
        } else if is_foldable(op_type) && inputs.iter().all(|i| initializers.contains_key(i)) {
            // Absent optional inputs keep their positions.
            let values: Vec<Option<Constant>> = node.input.iter().map(|i| if i.is_empty() { None } else { constant_of(i) }).collect();
            let refs: Vec<Option<&Constant>> = values.iter().map(Option::as_ref).collect();
            Some(evaluate(op_type, &attrs, &refs)?)
        } else {
            None
        };
        if let Some(value) = folded {
            if value.integer {
                integer.insert(output.clone());
            }
            shapes.insert(output.clone(), value.tensor.shape().to_vec());
            initializers.insert(output.clone(), value.tensor);
            known.insert(output);
            continue;
        }
        if matches!(op_type, "Min" | "Max" | "Sum") && inputs.len() > 2 || op_type == "Mean" && inputs.len() > 1 {
            for part in variadic(&name, op_type, &inputs, &output, &mut initializers) {
                known.insert(part.output.clone());
                record_shape(&part, &mut shapes, &initializers)?;
                nodes.push(part);
            }
            continue;
        }
        if op_type == "LSTM" || op_type == "GRU" {
            for part in recurrent(&attrs, op_type, node, &mut initializers, &read)? {
                known.insert(part.output.clone());
                record_shape(&part, &mut shapes, &initializers)?;
                nodes.push(part);
            }
            continue;
        }
        if op_type == "Split" {
            for (output, op) in split(&attrs, node, &initializers, &shapes)? {
                known.insert(output.clone());
                let part = Node { name: format!("{name}:{output}"), op, inputs: vec![inputs[0].clone()], output };
                record_shape(&part, &mut shapes, &initializers)?;
                nodes.push(part);
            }
            continue;
        }
        let parsed = if op_type == "BatchNormalization" {
            batch_norm(&attrs, inputs, &mut initializers)
        } else {
            parse_op(op_type, &attrs, &node.input, &initializers).map(|op| (op, inputs))
        };
        let (op, inputs) = match parsed {
            Ok(parsed) => parsed,
            Err(ModelError::UnsupportedOps(ops)) => {
                unsupported.extend(ops);
                known.insert(output);
                continue;
            }
            Err(other) => return Err(other),
        };
        let inputs = match &op {
            // Bounds, target shapes and similar constant inputs are folded into the op.
            Op::Activation(_)
            | Op::Reshape { .. }
            | Op::Slice { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Reduce { .. }
            | Op::Expand { .. }
            | Op::Resize { .. }
            | Op::Pad { .. }
            | Op::Tile { .. } => {
                inputs.into_iter().take(1).collect()
            }
            _ => inputs,
        };
        check_arity(&name, &op, &inputs)?;
        known.insert(output.clone());
        let node = Node { name, op, inputs, output };
        for part in with_integer_semantics(node, &mut integer) {
            record_shape(&part, &mut shapes, &initializers)?;
            nodes.push(part);
        }
    }
    if !unsupported.is_empty() {
        return Err(ModelError::UnsupportedOps(unsupported));
    }
    if !known.contains(&output) {
        return Err(ModelError::UnknownValue { node: "graph output".into(), value: output });
    }
    // Values only the folded nodes read are dropped.
    let read: HashSet<&String> = nodes.iter().flat_map(|n| &n.inputs).collect();
    initializers.retain(|name, _| read.contains(name) || *name == output);
    let mut graph = Graph { input, output, nodes, initializers };
    super::fold::simplify(&mut graph)?;
    Ok(graph)
}

/// `node`, followed by a truncation where it divides integers that the graph computes (a cast
/// to an integer type, then arithmetic on it): values stay f32, and ONNX's integer division
/// rounds toward zero. Notes in `integer` which computed values hold integers.
fn with_integer_semantics(node: Node, integer: &mut HashSet<String>) -> Vec<Node> {
    use super::ir::{Activation, BinaryOp};
    let integer_inputs = node.inputs.iter().all(|i| integer.contains(i));
    let holds_integers = match &node.op {
        Op::Activation(Activation::Trunc | Activation::Floor | Activation::Ceil | Activation::Round) => true,
        Op::Activation(Activation::Neg | Activation::Abs | Activation::Identity) => integer_inputs,
        Op::Binary(BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Min | BinaryOp::Max) => integer_inputs,
        // Ops that move values without changing them keep their input's type.
        Op::Identity | Op::Reshape { .. } | Op::Transpose { .. } | Op::Slice { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. }
        | Op::Expand { .. } | Op::Tile { .. } | Op::Concat { .. } | Op::Flatten { .. } => integer_inputs,
        _ => false,
    };
    if holds_integers {
        integer.insert(node.output.clone());
    }
    if !(holds_integers && node.op == Op::Binary(BinaryOp::Div)) {
        return vec![node];
    }
    let quotient = format!("{}::quotient", node.output);
    let truncate = Node { name: format!("{}:truncate", node.name), op: Op::Activation(Activation::Trunc), inputs: vec![quotient.clone()], output: node.output.clone() };
    vec![Node { output: quotient, ..node }, truncate]
}

/// Notes `node`'s output shape where all its inputs' shapes are known at import.
fn record_shape(node: &Node, shapes: &mut HashMap<String, Vec<usize>>, initializers: &HashMap<String, Tensor>) -> Result<(), ModelError> {
    let input_shapes: Option<Vec<&[usize]>> = node
        .inputs
        .iter()
        .map(|i| shapes.get(i).map(Vec::as_slice).or_else(|| initializers.get(i).map(Tensor::shape)))
        .collect();
    if let Some(input_shapes) = input_shapes {
        let shape = node_output_shape(node, &input_shapes)?;
        shapes.insert(node.output.clone(), shape);
    }
    Ok(())
}

/// A Split as one Slice per output: sizes from its second input (opset 13+), its `split`
/// attribute (older opsets), or equal parts (`num_outputs` in opset 18, else one per output), the
/// last part taking what is left.
fn split(attrs: &Attributes, proto: &pb::NodeProto, initializers: &HashMap<String, Tensor>, shapes: &HashMap<String, Vec<usize>>) -> Result<Vec<(String, Op)>, ModelError> {
    let node = attrs.node;
    let axis = attrs.int("axis", 0);
    let outputs: Vec<String> = proto.output.iter().filter(|o| !o.is_empty()).cloned().collect();
    let sizes: Vec<i64> = match constant(node, &proto.input, 1, initializers)? {
        Some(t) => t.data().iter().map(|&v| v as i64).collect(),
        None => match attrs.ints("split") {
            Some(split) => split,
            None => {
                let input = &proto.input[0];
                let shape = shapes.get(input).ok_or_else(|| ModelError::NeedsInputShape { node: node.into(), value: input.clone() })?;
                let extent = normalize_axis(axis, shape.len()).map(|a| shape[a] as i64).ok_or_else(|| attrs.unsupported("axis", format!("{axis} out of range")))?;
                let parts = attrs.int("num_outputs", outputs.len() as i64).max(1);
                let size = (extent + parts - 1) / parts;
                (0..parts).map(|k| size.min(extent - k * size).max(0)).collect()
            }
        },
    };
    if sizes.len() != outputs.len() || sizes.iter().any(|&s| s < 0) {
        return Err(attrs.unsupported("split", format!("sizes {sizes:?} for {} outputs", outputs.len())));
    }
    let mut start = 0;
    Ok(outputs
        .into_iter()
        .zip(sizes)
        .map(|(output, size)| {
            let op = Op::Slice { starts: vec![start], ends: vec![start + size], axes: vec![axis], steps: vec![1] };
            start += size;
            (output, op)
        })
        .collect())
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
