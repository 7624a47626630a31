//! Models as users export them: small torchvision classifiers with random weights, written by
//! `torch.onnx.export` (TorchScript exporter, opset 17; `tools/make_model_zoo.py` on the GPU
//! machine), which route shared weights through `Identity` nodes. Each imports, and the GPU and
//! the CPU reference both match ONNX Runtime's stored output.

use bevy_p2p_inference::model::{import_onnx, run_reference};

use crate::support::*;

const MAX_RELATIVE_ERROR: f32 = 1e-4;

fn check(name: &str) {
    let graph = import_onnx(&model_bytes(&format!("tests/fixtures/zoo/{name}.onnx"))).unwrap_or_else(|e| panic!("{name} imports: {e}"));
    let input = fixture(&format!("zoo/{name}_input.npy"));
    let want = fixture(&format!("zoo/{name}_ort.npy"));
    let gpu = run_gpu(&graph, &input);
    let err = relative_error(&gpu, &want);
    assert!(err <= MAX_RELATIVE_ERROR, "{name} on the GPU: relative error {err} > {MAX_RELATIVE_ERROR}");
    assert_eq!(argmax_rows(&gpu), argmax_rows(&want), "{name}: top-1 differs from ONNX Runtime");
    let reference = run_reference(&graph, &input).unwrap_or_else(|e| panic!("{name} on the CPU reference: {e}"));
    let err = relative_error(&reference, &want);
    assert!(err <= MAX_RELATIVE_ERROR, "{name} on the CPU reference: relative error {err} > {MAX_RELATIVE_ERROR}");
}

#[test]
fn torchvision_mobilenet_v3_small_matches_onnx_runtime() {
    check("mobilenet_v3_small");
}

#[test]
fn torchvision_squeezenet_1_1_matches_onnx_runtime() {
    check("squeezenet1_1");
}

#[test]
fn torchvision_efficientnet_b0_narrowed_matches_onnx_runtime() {
    check("efficientnet_b0_narrow");
}

#[test]
fn torchvision_shufflenet_v2_x0_5_matches_onnx_runtime() {
    // Channel shuffles (Reshape, Transpose), chunks (shape arithmetic folded into Slice) and a
    // ReduceMean head.
    check("shufflenet_v2_x0_5");
}

#[test]
fn a_small_vit_from_transformers_matches_onnx_runtime() {
    // Patch embedding, class token, LayerNormalization, attention (MatMul, Softmax), exact GELU
    // (Erf); the attention's masks and shapes folded at import.
    check("vit_tiny");
}

#[test]
fn a_small_bert_encoder_matches_onnx_runtime_on_token_ids() {
    // Token ids (as values) into embedding lookups (Gather of a constant table).
    check("bert_tiny");
}

#[test]
fn a_small_gpt2_decoder_matches_onnx_runtime_on_token_ids() {
    // Causal attention (its mask folded at import), Conv1D layers as Gemm, the tanh GELU
    // written out (Pow, Tanh), Split of the fused QKV projection.
    check("gpt2_tiny");
}
