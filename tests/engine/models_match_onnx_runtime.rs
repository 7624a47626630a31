//! Whole models on the GPU against ONNX Runtime outputs stored as fixtures.

use bevy_p2p_inference::model::{import_onnx, run_reference};

use crate::support::*;

const MAX_RELATIVE_ERROR: f32 = 1e-4;

fn check(model: &str, input: &str, expected: &str) {
    let graph = import_onnx(&model_bytes(model)).expect("imports");
    let output = run_gpu(&graph, &fixture(input));
    let want = fixture(expected);
    let err = relative_error(&output, &want);
    assert!(err <= MAX_RELATIVE_ERROR, "{model}: relative error {err} > {MAX_RELATIVE_ERROR}");
    assert_eq!(argmax_rows(&output), argmax_rows(&want), "{model}: top-1 differs from ONNX Runtime");
}

#[test]
fn shipped_fashion_model_matches_onnx_runtime_on_64_test_images() {
    check("assets/models/fashion_mobilenetv2.onnx", "fashion_input.npy", "fashion_ort.npy");
}

#[test]
fn shipped_fashion_model_classifies_most_fixture_images_correctly() {
    let graph = import_onnx(&model_bytes("assets/models/fashion_mobilenetv2.onnx")).unwrap();
    let predicted = argmax_rows(&run_gpu(&graph, &fixture("fashion_input.npy")));
    let labels: Vec<usize> = fixture("fashion_labels.npy").data().iter().map(|&v| v as usize).collect();
    let correct = predicted.iter().zip(&labels).filter(|(p, l)| p == l).count();
    assert!(correct >= 56, "only {correct}/64 correct");
}

#[test]
fn synthetic_cifar_mobilenetv2_matches_onnx_runtime_at_batch_2() {
    check("assets/models/mobilenetv2_cifar_synthetic.onnx", "cifar_input.npy", "cifar_ort.npy");
}

#[test]
fn synthetic_imagenet_mobilenetv2_matches_onnx_runtime() {
    check("assets/models/mobilenetv2_imagenet_synthetic.onnx", "imagenet_input.npy", "imagenet_ort.npy");
}

#[test]
fn op_zoo_model_matches_onnx_runtime_on_gpu_and_cpu_reference() {
    check("tests/fixtures/op_zoo.onnx", "op_zoo_input.npy", "op_zoo_ort.npy");
    let graph = import_onnx(&model_bytes("tests/fixtures/op_zoo.onnx")).unwrap();
    let cpu = run_reference(&graph, &fixture("op_zoo_input.npy")).unwrap();
    let err = relative_error(&cpu, &fixture("op_zoo_ort.npy"));
    assert!(err <= MAX_RELATIVE_ERROR, "CPU reference relative error {err}");
}
