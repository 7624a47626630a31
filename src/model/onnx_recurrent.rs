//! ONNX LSTM and GRU nodes into the IR's forward recurrent node. A bidirectional layer becomes
//! two forward nodes, the second reading the sequence reversed, whose outputs are joined as ONNX
//! lays them out (`Y` as `[seq, 2, batch, hidden]`, `Y_h` as `[2, batch, hidden]`).

use std::collections::{HashMap, HashSet};

use super::attributes::Attributes;
use super::error::ModelError;
use super::ir::{Node, Op, RecurrentCell};
use super::onnx_ops::constant;
use super::onnx_pb as pb;
use crate::tensor::Tensor;

/// Which way one recurrent node walks its sequence.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Forward,
    Reverse,
}

/// An ONNX LSTM or GRU (default activations, no sequence lengths, forward or bidirectional) as
/// recurrent nodes, plus, where `Y_h` is read, the slices of `Y` at each direction's last step.
/// The initial states, where given, become one constant per direction (h, then c).
pub(super) fn recurrent(
    attrs: &Attributes,
    op_type: &str,
    proto: &pb::NodeProto,
    initializers: &mut HashMap<String, Tensor>,
    read: &HashSet<&str>,
) -> Result<Vec<Node>, ModelError> {
    let node = attrs.node;
    let cell = if op_type == "LSTM" { RecurrentCell::Lstm } else { RecurrentCell::Gru };
    let direction = attrs.string("direction").unwrap_or_else(|| "forward".into());
    let directions: &[Direction] = match direction.as_str() {
        "forward" => &[Direction::Forward],
        "bidirectional" => &[Direction::Forward, Direction::Reverse],
        other => return Err(attrs.unsupported("direction", format!("'{other}' (forward and bidirectional are supported)"))),
    };
    if attrs.int("layout", 0) != 0 || attrs.get("clip").is_some() || attrs.int("input_forget", 0) != 0 {
        return Err(attrs.unsupported("layout/clip/input_forget", "only their defaults are supported"));
    }
    let defaults: &[&str] = if cell == RecurrentCell::Lstm { &["Sigmoid", "Tanh", "Tanh"] } else { &["Sigmoid", "Tanh"] };
    if let Some(activations) = attrs.get("activations") {
        let named: Vec<String> = activations.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect();
        let expected = defaults.iter().copied().cycle().take(defaults.len() * directions.len());
        if named.iter().map(String::as_str).ne(expected) {
            return Err(attrs.unsupported("activations", format!("{named:?} (the defaults {defaults:?} are supported)")));
        }
    }
    if cell == RecurrentCell::Gru && attrs.int("linear_before_reset", 0) == 0 {
        return Err(attrs.unsupported("linear_before_reset", "0 (torch exports 1, which is supported)"));
    }
    let hidden = usize::try_from(attrs.int("hidden_size", 0)).ok().filter(|&h| h > 0).ok_or_else(|| attrs.unsupported("hidden_size", "a positive hidden_size is required"))?;
    let inputs = &proto.input;
    let present = |i: usize| inputs.get(i).is_some_and(|n| !n.is_empty());
    if present(4) || present(7) {
        return Err(attrs.unsupported("sequence_lens/P", "sequence lengths and peepholes are not supported"));
    }
    for (index, what) in [(1, "W"), (2, "R")] {
        let weights = constant(node, inputs, index, initializers)?.ok_or_else(|| ModelError::BadInput { node: node.into(), index, reason: format!("({what}) is missing") })?;
        if weights.shape().first() != Some(&directions.len()) {
            return Err(ModelError::BadInput { node: node.into(), index, reason: format!("({what}) of shape {:?} does not have {} directions", weights.shape(), directions.len()) });
        }
    }
    let has_bias = constant(node, inputs, 3, initializers)?.is_some();
    // Outputs that something reads (exporters name all three).
    let output = |i: usize| proto.output.get(i).filter(|o| read.contains(o.as_str())).cloned();
    if cell == RecurrentCell::Lstm && output(2).is_some() {
        return Err(attrs.unsupported("Y_c", "the final cell state output is not supported"));
    }
    let op = Op::Recurrent { cell, hidden, has_bias };
    if directions.len() == 1 {
        let own = direction_inputs(node, inputs, None, cell, initializers)?;
        let y = output(0).unwrap_or_else(|| format!("{node}::Y"));
        let mut nodes = vec![Node { name: node.into(), op, inputs: own, output: y.clone() }];
        if let Some(y_h) = output(1) {
            // Y_h is Y at the last step: [1, 1, batch, hidden] -> [1, batch, hidden].
            let last = format!("{node}::last_step");
            nodes.push(last_step(node, &y, &last));
            nodes.push(squeeze_first(&format!("{node}:Y_h"), last, y_h));
        }
        return Ok(nodes);
    }
    // Bidirectional: the reverse node reads the sequence backwards, so its Y runs backwards
    // and its last step is the reverse direction's final state.
    let mut nodes = Vec::new();
    let reversed_x = format!("{node}::reversed_input");
    nodes.push(reverse_sequence(&format!("{node}:reverse_input"), inputs[0].clone(), reversed_x.clone()));
    let mut per_direction = Vec::new();
    for (index, &direction) in directions.iter().enumerate() {
        let mut own = direction_inputs(node, inputs, Some(index), cell, initializers)?;
        if direction == Direction::Reverse {
            own[0] = reversed_x.clone();
        }
        let suffix = if direction == Direction::Forward { "forward" } else { "reverse" };
        let y = format!("{node}::Y_{suffix}");
        nodes.push(Node { name: format!("{node}:{suffix}"), op: op.clone(), inputs: own, output: y.clone() });
        per_direction.push((suffix, y));
    }
    if let Some(y) = output(0) {
        let (forward, reverse) = (&per_direction[0].1, &per_direction[1].1);
        let in_order = format!("{node}::Y_reverse_in_order");
        nodes.push(reverse_sequence(&format!("{node}:reverse_output"), reverse.clone(), in_order.clone()));
        nodes.push(Node { name: format!("{node}:Y"), op: Op::Concat { axis: 1 }, inputs: vec![forward.clone(), in_order], output: y });
    }
    if let Some(y_h) = output(1) {
        let lasts: Vec<String> = per_direction
            .iter()
            .map(|(suffix, y)| {
                let last = format!("{node}::last_step_{suffix}");
                nodes.push(last_step(&format!("{node}_{suffix}"), y, &last));
                last
            })
            .collect();
        let joined = format!("{node}::last_steps");
        nodes.push(Node { name: format!("{node}:last_steps"), op: Op::Concat { axis: 1 }, inputs: lasts, output: joined.clone() });
        nodes.push(squeeze_first(&format!("{node}:Y_h"), joined, y_h));
    }
    Ok(nodes)
}

/// The recurrent node's inputs for one direction: X, W, R, and the bias and initial state where
/// given. With `direction` set, each weight is that direction's slice, stored as a new constant.
fn direction_inputs(
    node: &str,
    inputs: &[String],
    direction: Option<usize>,
    cell: RecurrentCell,
    initializers: &mut HashMap<String, Tensor>,
) -> Result<Vec<String>, ModelError> {
    let mut own = vec![inputs[0].clone()];
    for index in [1, 2, 3] {
        let Some(whole) = constant(node, inputs, index, initializers)?.cloned() else { continue };
        own.push(match direction {
            None => inputs[index].clone(),
            Some(d) => {
                let name = format!("{}::direction{d}", inputs[index]);
                initializers.insert(name.clone(), direction_slice(&whole, d));
                name
            }
        });
    }
    let (initial_h, initial_c) = (constant(node, inputs, 5, initializers)?.cloned(), constant(node, inputs, 6, initializers)?.cloned());
    if initial_h.is_some() || initial_c.is_some() {
        let pick = |t: Option<Tensor>| t.map(|t| direction.map_or_else(|| t.clone().into_data(), |d| direction_slice(&t, d).into_data()));
        let (h, c) = (pick(initial_h), pick(initial_c));
        let len = h.as_ref().or(c.as_ref()).map_or(0, Vec::len);
        let h = h.unwrap_or_else(|| vec![0.0; len]);
        let c = if cell == RecurrentCell::Lstm { c.unwrap_or_else(|| vec![0.0; len]) } else { Vec::new() };
        let values: Vec<f32> = h.into_iter().chain(c).collect();
        let name = format!("{node}::initial{}", direction.map_or(String::new(), |d| d.to_string()));
        initializers.insert(name.clone(), Tensor::new(vec![values.len()], values).expect("a vector"));
        own.push(name);
    }
    Ok(own)
}

/// Direction `d`'s part of a weight or state whose first axis is the direction.
fn direction_slice(whole: &Tensor, d: usize) -> Tensor {
    let mut shape = whole.shape().to_vec();
    let part = whole.len() / shape[0];
    shape[0] = 1;
    Tensor::new(shape, whole.data()[d * part..(d + 1) * part].to_vec()).expect("the slice's shape holds its values")
}

/// `[seq, ...]` with its sequence axis reversed.
fn reverse_sequence(name: &str, input: String, output: String) -> Node {
    let op = Op::Slice { starts: vec![-1], ends: vec![i64::MIN], axes: vec![0], steps: vec![-1] };
    Node { name: name.into(), op, inputs: vec![input], output }
}

/// `Y`'s last step, `[1, directions, batch, hidden]`.
fn last_step(node: &str, y: &str, output: &str) -> Node {
    let op = Op::Slice { starts: vec![-1], ends: vec![i64::MAX], axes: vec![0], steps: vec![1] };
    Node { name: format!("{node}:last_step"), op, inputs: vec![y.into()], output: output.into() }
}

/// `[1, ...]` without its first axis.
fn squeeze_first(name: &str, input: String, output: String) -> Node {
    Node { name: name.into(), op: Op::Squeeze { axes: Some(vec![0]) }, inputs: vec![input], output }
}
