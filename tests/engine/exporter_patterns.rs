//! Graphs written the way exporters write them import into the same IR as their plain form:
//! shared weights routed through `Identity`, `Constant` nodes, casts, and the shape arithmetic
//! that feeds `Reshape` are folded at import, and the folded model runs on the GPU and the CPU
//! reference alike.

use bevy_p2p_inference::model::ir::Op;
use bevy_p2p_inference::model::onnx_pb::{self as pb, tensor_proto::DataType};
use std::sync::Arc;

use bevy_p2p_inference::model::{import_onnx, import_onnx_for_input, run_reference};
use bevy_p2p_inference::{Model, ModelError, Tensor};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::*;

fn node(name: &str, op: &str, inputs: &[&str], attribute: Vec<pb::AttributeProto>) -> pb::NodeProto {
    pb::NodeProto {
        name: Some(name.into()),
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![name.into()],
        attribute,
        ..Default::default()
    }
}

fn ints(name: &str, values: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto { name: Some(name.into()), ints: values.to_vec(), ..Default::default() }
}

fn int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto { name: Some(name.into()), i: Some(value), ..Default::default() }
}

/// A `Constant` node holding an int64 tensor.
fn int64_constant(name: &str, dims: &[i64], values: &[i64]) -> pb::NodeProto {
    let value = pb::TensorProto { dims: dims.to_vec(), data_type: Some(DataType::Int64 as i32), int64_data: values.to_vec(), ..Default::default() };
    node(name, "Constant", &[], vec![pb::AttributeProto { name: Some("value".into()), t: Some(value), ..Default::default() }])
}

fn float_initializer(name: &str, dims: &[i64], rng: &mut StdRng) -> pb::TensorProto {
    let count = dims.iter().product::<i64>() as usize;
    let values = (0..count).map(|_| rng.random_range(-1.0..1.0)).collect();
    pb::TensorProto { name: Some(name.into()), dims: dims.to_vec(), data_type: Some(DataType::Float as i32), float_data: values, ..Default::default() }
}

/// An input declared with `dims` (`None`: a symbolic dimension).
pub(crate) fn input(dims: &[Option<i64>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = dims
        .iter()
        .map(|d| Dimension { value: Some(d.map_or(Value::DimParam("batch".into()), Value::DimValue)), ..Default::default() })
        .collect();
    let tensor = pb::type_proto::Tensor { elem_type: Some(DataType::Float as i32), shape: Some(pb::TensorShapeProto { dim }) };
    pb::ValueInfoProto { name: Some("x".into()), r#type: Some(pb::TypeProto { value: Some(pb::type_proto::Value::TensorType(tensor)), ..Default::default() }), ..Default::default() }
}

fn model(input: pb::ValueInfoProto, nodes: Vec<pb::NodeProto>, initializer: Vec<pb::TensorProto>, output: &str) -> Vec<u8> {
    let output = pb::ValueInfoProto { name: Some(output.into()), ..Default::default() };
    pb::ModelProto {
        opset_import: vec![pb::OperatorSetIdProto { domain: Some(String::new()), version: Some(17) }],
        graph: Some(pb::GraphProto { node: nodes, input: vec![input], output: vec![output], initializer, ..Default::default() }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Conv (weights and bias shared through Identity) -> Relu -> Reshape to [n, -1], with the
/// target shape computed as exporters write it: Shape -> Gather -> Unsqueeze -> Concat -> Cast.
pub(crate) fn exported_classifier_head(input: pb::ValueInfoProto) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(13);
    let initializers = vec![float_initializer("w", &[3, 2, 3, 3], &mut rng), float_initializer("b", &[3], &mut rng)];
    let nodes = vec![
        node("w_shared", "Identity", &["w"], vec![]),
        node("b_shared", "Identity", &["b"], vec![]),
        node("conv", "Conv", &["x", "w_shared", "b_shared"], vec![ints("pads", &[1, 1, 1, 1])]),
        node("relu", "Relu", &["conv"], vec![]),
        node("shape", "Shape", &["relu"], vec![]),
        int64_constant("zero", &[], &[0]),
        node("n", "Gather", &["shape", "zero"], vec![int("axis", 0)]),
        int64_constant("axes", &[1], &[0]),
        node("n1", "Unsqueeze", &["n", "axes"], vec![]),
        int64_constant("minus_one", &[1], &[-1]),
        node("target", "Concat", &["n1", "minus_one"], vec![int("axis", 0)]),
        node("target64", "Cast", &["target"], vec![int("to", DataType::Int64 as i64)]),
        node("y", "Reshape", &["relu", "target64"], vec![]),
    ];
    model(input, nodes, initializers, "y")
}

#[test]
fn shape_arithmetic_and_shared_weights_fold_into_the_plain_graph() {
    let graph = import_onnx(&exported_classifier_head(input(&[Some(2), Some(2), Some(5), Some(5)]))).unwrap();
    let ops: Vec<&Op> = graph.nodes.iter().map(|n| &n.op).collect();
    assert!(matches!(ops[..], [Op::Conv(_), Op::Activation(_), Op::Reshape { .. }]), "{ops:?}");
    assert_eq!(graph.nodes[2].op, Op::Reshape { shape: vec![2, -1], allow_zero: false });
    let mut constants: Vec<&String> = graph.initializers.keys().collect();
    constants.sort();
    assert_eq!(constants, ["b_shared", "w_shared"], "only what the remaining nodes read");

    let x = Tensor::new(vec![2, 2, 5, 5], (0..100).map(|i| (i as f32 * 0.37).sin()).collect()).unwrap();
    let reference = run_reference(&graph, &x).unwrap();
    assert_eq!(reference.shape(), &[2, 75]);
    let gpu = run_gpu(&graph, &x);
    assert!(relative_error(&gpu, &reference) <= 1e-5, "GPU {:?} vs reference {:?}", &gpu.data()[..4], &reference.data()[..4]);
}

#[test]
fn with_a_symbolic_batch_the_graph_exists_per_input_shape() {
    let bytes = exported_classifier_head(input(&[None, Some(2), Some(5), Some(5)]));
    let err = import_onnx(&bytes).unwrap_err();
    assert_eq!(err, ModelError::NeedsInputShape { node: "shape".into(), value: "relu".into() });
    let graph = import_onnx_for_input(&bytes, &[3, 2, 5, 5]).unwrap();
    assert_eq!(graph.nodes.last().map(|n| &n.op), Some(&Op::Reshape { shape: vec![3, -1], allow_zero: false }));
    let x = Tensor::new(vec![3, 2, 5, 5], (0..150).map(|i| (i as f32 * 0.21).cos()).collect()).unwrap();
    let reference = run_reference(&graph, &x).unwrap();
    assert_eq!(reference.shape(), &[3, 75]);
    assert!(relative_error(&run_gpu(&graph, &x), &reference) <= 1e-5);

    let model = Model::from_onnx_bytes(&bytes).unwrap();
    assert!(model.needs_input_shape());
    let for_three = model.graph_for(&[3, 2, 5, 5]).unwrap();
    assert!(Arc::ptr_eq(&for_three, &model.graph_for(&[3, 2, 5, 5]).unwrap()), "imported once per shape");
    assert_eq!(*for_three, graph);
    let wrong = model.graph_for(&[3, 4, 5, 5]).unwrap_err();
    assert!(matches!(&wrong, ModelError::InputShape { got, .. } if got == &vec![3, 4, 5, 5]), "{wrong:?}");
}

/// x [2, 6, 3] -> Split on axis 1 -> Concat of the parts in reverse order.
fn split_model(split: pb::NodeProto, opset: i64, initializer: Vec<pb::TensorProto>) -> Vec<u8> {
    let concat = node("y", "Concat", &["part2", "part1", "part0"], vec![int("axis", 1)]);
    let mut bytes_model = pb::ModelProto::decode(&model(input(&[Some(2), Some(6), Some(3)]), vec![split, concat], initializer, "y")[..]).unwrap();
    bytes_model.opset_import[0].version = Some(opset);
    bytes_model.encode_to_vec()
}

fn split_node(inputs: &[&str], attribute: Vec<pb::AttributeProto>) -> pb::NodeProto {
    let mut split = node("split", "Split", inputs, attribute);
    split.output = vec!["part0".into(), "part1".into(), "part2".into()];
    split
}

#[test]
fn a_split_in_every_opset_form_becomes_one_slice_per_part() {
    let sizes = pb::TensorProto { name: Some("sizes".into()), dims: vec![3], data_type: Some(DataType::Int64 as i32), int64_data: vec![1, 2, 3], ..Default::default() };
    let x = Tensor::new(vec![2, 6, 3], (0..36).map(|i| i as f32).collect()).unwrap();
    let part = |start: usize, end: usize| -> Vec<f32> { (0..2).flat_map(|n| (start * 3..end * 3).map(move |i| (n * 18 + i) as f32)).collect() };
    for (form, bytes, bounds) in [
        ("sizes as an input (opset 13)", split_model(split_node(&["x", "sizes"], vec![int("axis", 1)]), 13, vec![sizes]), [(0, 1), (1, 3), (3, 6)]),
        ("the split attribute (opset 11 form)", split_model(split_node(&["x"], vec![int("axis", 1), ints("split", &[2, 2, 2])]), 13, vec![]), [(0, 2), (2, 4), (4, 6)]),
        ("num_outputs (opset 18)", split_model(split_node(&["x"], vec![int("axis", -2), int("num_outputs", 3)]), 18, vec![]), [(0, 2), (2, 4), (4, 6)]),
    ] {
        let graph = import_onnx(&bytes).unwrap_or_else(|e| panic!("{form}: {e}"));
        let y = run_reference(&graph, &x).unwrap();
        // Reversed parts, row by row: each row of the output concatenates part2, part1, part0.
        let (p0, p1, p2) = (part(bounds[0].0, bounds[0].1), part(bounds[1].0, bounds[1].1), part(bounds[2].0, bounds[2].1));
        let row = |p: &Vec<f32>, n: usize| p[n * p.len() / 2..(n + 1) * p.len() / 2].to_vec();
        let want: Vec<f32> = (0..2).flat_map(|n| [row(&p2, n), row(&p1, n), row(&p0, n)].concat()).collect();
        assert_eq!(y.data(), &want[..], "{form}");
        assert!(relative_error(&run_gpu(&graph, &x), &y) <= 1e-6, "{form} on the GPU");
    }
}

#[test]
fn max_min_and_sum_of_several_inputs_chain_into_binary_nodes() {
    let mut rng = StdRng::seed_from_u64(7);
    let initializers = vec![float_initializer("a", &[1, 3], &mut rng), float_initializer("b", &[2, 1], &mut rng)];
    let nodes = vec![
        node("biggest", "Max", &["x", "a", "b"], vec![]),
        node("smallest", "Min", &["x", "a", "b"], vec![]),
        node("y", "Sum", &["biggest", "smallest", "x", "a"], vec![]),
    ];
    let graph = import_onnx(&model(input(&[Some(2), Some(3)]), nodes, initializers, "y")).unwrap();
    assert_eq!(graph.nodes.len(), 7, "2 + 2 + 3 binary nodes");
    let x = Tensor::new(vec![2, 3], vec![0.5, -0.5, 0.0, 1.0, -1.0, 0.25]).unwrap();
    let (a, b) = (&graph.initializers["a"], &graph.initializers["b"]);
    let want: Vec<f32> = (0..6)
        .map(|i| {
            let (xv, av, bv) = (x.data()[i], a.data()[i % 3], b.data()[i / 3]);
            xv.max(av).max(bv) + xv.min(av).min(bv) + xv + av
        })
        .collect();
    let reference = run_reference(&graph, &x).unwrap();
    for (got, want) in reference.data().iter().zip(&want) {
        assert!((got - want).abs() <= 1e-6, "{got} vs {want}");
    }
    assert!(relative_error(&run_gpu(&graph, &x), &reference) <= 1e-6);
}

#[test]
fn mean_of_several_inputs_is_their_sum_over_the_count() {
    let mut rng = StdRng::seed_from_u64(8);
    let initializers = vec![float_initializer("a", &[1, 3], &mut rng), float_initializer("b", &[2, 1], &mut rng)];
    let nodes = vec![node("y", "Mean", &["x", "a", "b"], vec![])];
    let graph = import_onnx(&model(input(&[Some(2), Some(3)]), nodes, initializers, "y")).unwrap();
    let x = Tensor::new(vec![2, 3], vec![0.5, -0.5, 0.0, 1.0, -1.0, 0.25]).unwrap();
    let (a, b) = (&graph.initializers["a"], &graph.initializers["b"]);
    let want: Vec<f32> = (0..6).map(|i| (x.data()[i] + a.data()[i % 3] + b.data()[i / 3]) / 3.0).collect();
    let reference = run_reference(&graph, &x).unwrap();
    for (got, want) in reference.data().iter().zip(&want) {
        assert!((got - want).abs() <= 1e-6, "{got} vs {want}");
    }
    assert!(relative_error(&run_gpu(&graph, &x), &reference) <= 1e-6);
}

#[test]
fn a_computed_value_cast_to_an_integer_type_truncates_and_divides_as_integers() {
    // y = Cast<int64>(x * 10) / 3, then back to float: ONNX's integer division rounds toward zero.
    let ten = pb::TensorProto { name: Some("ten".into()), dims: vec![], data_type: Some(DataType::Float as i32), float_data: vec![10.0], ..Default::default() };
    let nodes = vec![
        node("scaled", "Mul", &["x", "ten"], vec![]),
        node("whole", "Cast", &["scaled"], vec![int("to", DataType::Int64 as i64)]),
        int64_constant("three", &[], &[3]),
        node("quotient", "Div", &["whole", "three"], vec![]),
        node("y", "Cast", &["quotient"], vec![int("to", DataType::Float as i64)]),
    ];
    let graph = import_onnx(&model(input(&[Some(1), Some(6)]), nodes, vec![ten], "y")).unwrap();
    let x = Tensor::new(vec![1, 6], vec![0.57, -0.57, 0.31, -0.99, 0.05, 0.2]).unwrap();
    // 5.7 -> 5 -> 1; -5.7 -> -5 -> -1; 3.1 -> 3 -> 1; -9.9 -> -9 -> -3; 0.5 -> 0 -> 0; 2 -> 2 -> 0.
    let want = [1.0, -1.0, 1.0, -3.0, 0.0, 0.0];
    assert_eq!(run_reference(&graph, &x).unwrap().data(), want);
    assert_eq!(run_gpu(&graph, &x).data(), want);
}

#[test]
fn a_computed_value_cast_to_bool_is_refused_naming_the_node_and_attribute() {
    let nodes = vec![node("y", "Cast", &["x"], vec![int("to", DataType::Bool as i64)])];
    let error = import_onnx(&model(input(&[Some(1), Some(6)]), nodes, vec![], "y")).unwrap_err();
    assert!(matches!(&error, ModelError::UnsupportedAttribute { node, attribute, .. } if node == "y" && attribute == "to"), "{error:?}");
}
