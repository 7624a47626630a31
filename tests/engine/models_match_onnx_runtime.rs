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
fn the_shipped_and_cifar_models_without_workgroup_tiles_match_onnx_runtime() {
    // The kernels SwiftShader gets: every output one invocation's work.
    for (model, input, expected) in [
        ("assets/models/fashion_mobilenetv2.onnx", "fashion_input.npy", "fashion_ort.npy"),
        ("assets/models/mobilenetv2_cifar_synthetic.onnx", "cifar_input.npy", "cifar_ort.npy"),
    ] {
        let graph = import_onnx(&model_bytes(model)).unwrap();
        let output = run_gpu_with(&graph, &fixture(input), |gpu| &gpu.library_without_workgroup_tiles);
        let err = relative_error(&output, &fixture(expected));
        assert!(err <= MAX_RELATIVE_ERROR, "{model}: relative error {err} > {MAX_RELATIVE_ERROR}");
    }
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

#[test]
fn a_batch_too_large_for_the_binding_limit_runs_in_slices_and_still_matches_onnx_runtime() {
    use std::sync::Arc;

    use bevy_p2p_inference::gpu::{run_blocking, GpuBlock, KernelLibrary, ResidentWeights};

    // A device whose storage bindings hold at most 1 MiB: the shipped model's largest
    // activation (96 channels at 28x28, 301 KB per image) fits for 2 images, not for 64.
    let (device, queue) = device_with_1_mib_bindings(wgpu::Features::empty()).expect("no features asked for");
    let library = KernelLibrary::new(&device);
    let graph = import_onnx(&model_bytes("assets/models/fashion_mobilenetv2.onnx")).unwrap();
    let weights = Arc::new(ResidentWeights::upload(&device, &library, &graph).unwrap());
    let input = fixture("fashion_input.npy");
    let block = GpuBlock::new(&device, &library, weights, &graph, input.shape()).expect("compiles by splitting the batch");
    assert_eq!(block.batch_slice(), Some(2));
    let output = run_blocking(&device, &queue, &library, &block, &input).unwrap();
    let want = fixture("fashion_ort.npy");
    assert!(relative_error(&output, &want) <= MAX_RELATIVE_ERROR);
    assert_eq!(argmax_rows(&output), argmax_rows(&want));
    // Unsplit on the shared device, with the same kernel set as this device's library (the
    // subgroup variants sum in another order, so they are only equal within tolerance).
    let whole = run_gpu_with(&graph, &input, |gpu| if library.uses_subgroups() { &gpu.library } else { &gpu.library_without_subgroups });
    assert!(output.data().iter().zip(whole.data()).all(|(a, b)| a.to_bits() == b.to_bits()), "slices differ from the unsplit batch");
}
