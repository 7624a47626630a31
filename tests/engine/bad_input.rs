//! Bad input gets a typed error that names what is wrong: never a panic.

use bevy_p2p_inference::gpu::{compile, CompileError};
use bevy_p2p_inference::model::onnx_pb as pb;
use bevy_p2p_inference::model::{import_onnx, run_reference, UnsupportedOp};
use bevy_p2p_inference::{ModelError, Tensor};
use prost::Message;

use crate::support::*;

const SHIPPED: &str = "assets/models/fashion_mobilenetv2.onnx";

fn model_with(nodes: Vec<pb::NodeProto>, opset: i64) -> Vec<u8> {
    let input = pb::ValueInfoProto { name: Some("x".into()), ..Default::default() };
    let output = pb::ValueInfoProto { name: Some("y".into()), ..Default::default() };
    pb::ModelProto {
        opset_import: vec![pb::OperatorSetIdProto { domain: Some(String::new()), version: Some(opset) }],
        graph: Some(pb::GraphProto { node: nodes, input: vec![input], output: vec![output], ..Default::default() }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn node(name: &str, op: &str, attribute: Vec<pb::AttributeProto>) -> pb::NodeProto {
    pb::NodeProto {
        name: Some(name.into()),
        op_type: Some(op.into()),
        input: vec!["x".into()],
        output: vec!["y".into()],
        attribute,
        ..Default::default()
    }
}

#[test]
fn a_truncated_model_file_is_reported_as_malformed() {
    let bytes = model_bytes(SHIPPED);
    let err = import_onnx(&bytes[..bytes.len() / 2]).unwrap_err();
    assert!(matches!(err, ModelError::Malformed(_)), "{err:?}");
}

#[test]
fn random_bytes_are_reported_as_malformed_or_missing_a_graph() {
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let err = import_onnx(&garbage).unwrap_err();
    assert!(matches!(err, ModelError::Malformed(_) | ModelError::UnsupportedOpset(_) | ModelError::MissingGraph), "{err:?}");
}

#[test]
fn an_unsupported_operator_names_the_node() {
    let err = import_onnx(&model_with(vec![node("my_nms", "NonMaxSuppression", vec![])], 13)).unwrap_err();
    assert_eq!(err, ModelError::UnsupportedOps(vec![UnsupportedOp { node: "my_nms".into(), op: "NonMaxSuppression".into() }]));
}

#[test]
fn every_unsupported_operator_is_named_at_once_in_graph_order() {
    let mut second = node("scan", "Scan", vec![]);
    second.input = vec!["h".into()];
    second.output = vec!["s".into()];
    let mut relu = node("relu", "Relu", vec![]);
    relu.input = vec!["s".into()];
    let mut first = node("my_nms", "NonMaxSuppression", vec![]);
    first.output = vec!["h".into()];
    let mut custom = node("custom", "Fancy", vec![]);
    custom.domain = Some("com.example".into());
    custom.input = vec!["s".into()];
    custom.output = vec!["unused".into()];
    let err = import_onnx(&model_with(vec![first, second, custom, relu], 17)).unwrap_err();
    let named = |node: &str, op: &str| UnsupportedOp { node: node.into(), op: op.into() };
    assert_eq!(err, ModelError::UnsupportedOps(vec![named("my_nms", "NonMaxSuppression"), named("scan", "Scan"), named("custom", "com.example::Fancy")]));
}

#[test]
fn an_unsupported_attribute_names_the_node_and_attribute() {
    let dilations = pb::AttributeProto { name: Some("dilations".into()), ints: vec![2, 2], ..Default::default() };
    let kernel = pb::AttributeProto { name: Some("kernel_shape".into()), ints: vec![2, 2], ..Default::default() };
    let err = import_onnx(&model_with(vec![node("pool1", "MaxPool", vec![kernel, dilations])], 13)).unwrap_err();
    assert!(matches!(&err, ModelError::UnsupportedAttribute { node, attribute, .. } if node == "pool1" && attribute == "dilations"), "{err:?}");
}

#[test]
fn an_opset_older_than_13_is_refused() {
    let err = import_onnx(&model_with(vec![node("r", "Relu", vec![])], 11)).unwrap_err();
    assert_eq!(err, ModelError::UnsupportedOpset(11));
}

#[test]
fn a_node_reading_an_unknown_value_is_named() {
    let mut n = node("add1", "Add", vec![]);
    n.input.push("nowhere".into());
    let err = import_onnx(&model_with(vec![n], 13)).unwrap_err();
    assert_eq!(err, ModelError::UnknownValue { node: "add1".into(), value: "nowhere".into() });
}

#[test]
fn an_input_of_the_wrong_shape_is_refused_by_cpu_and_gpu_paths() {
    let graph = import_onnx(&model_bytes(SHIPPED)).unwrap();
    let wrong = Tensor::zeros(vec![1, 3, 28, 28]);
    let err = run_reference(&graph, &wrong).unwrap_err();
    assert!(matches!(&err, ModelError::InputShape { got, .. } if got == &vec![1, 3, 28, 28]), "{err:?}");
    let err = compile(&graph, &[2, 1, 32, 32]).unwrap_err();
    assert!(matches!(err, CompileError::Model(ModelError::InputShape { .. })), "{err:?}");
}

#[test]
fn any_batch_size_is_accepted() {
    let graph = import_onnx(&model_bytes(SHIPPED)).unwrap();
    let program = compile(&graph, &[5, 1, 28, 28]).unwrap();
    assert_eq!(program.output_shape, vec![5, 10]);
}
