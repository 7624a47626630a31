//! Models as users export them: small torchvision classifiers with random weights, written by
//! `torch.onnx.export` (TorchScript exporter, opset 17; `tools/make_model_zoo.py` on the GPU
//! machine), which route shared weights through `Identity` nodes. Each imports, and the GPU and
//! the CPU reference both match ONNX Runtime's stored output.

use bevy_p2p_inference::model::ir::Graph;
use bevy_p2p_inference::model::{external_data_locations, import_onnx, import_onnx_with, run_reference, ExternalDataProblem, ExternalFiles, ImportOptions};
use bevy_p2p_inference::ModelError;

use crate::support::*;

const MAX_RELATIVE_ERROR: f32 = 1e-4;

/// Imports `tests/fixtures/zoo/{name}.onnx` with the external data files it names, for an input
/// of `shape`.
fn import(name: &str, shape: &[usize]) -> Graph {
    let bytes = model_bytes(&format!("tests/fixtures/zoo/{name}.onnx"));
    let files: ExternalFiles = external_data_locations(&bytes)
        .unwrap()
        .into_iter()
        .map(|location| {
            let data = model_bytes(&format!("tests/fixtures/zoo/{location}"));
            (location, data)
        })
        .collect();
    let options = ImportOptions { input_shape: Some(shape), external_files: Some(&files), ..Default::default() };
    import_onnx_with(&bytes, &options).unwrap_or_else(|e| panic!("{name} imports: {e}"))
}

fn check(name: &str) {
    let input = fixture(&format!("zoo/{name}_input.npy"));
    let graph = import(name, input.shape());
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

#[test]
fn a_vit_exported_with_a_dynamic_batch_runs_at_the_batch_of_its_input() {
    // The file's batch is symbolic; the stored input has batch 3.
    let bytes = model_bytes("tests/fixtures/zoo/vit_tiny_dynamic_batch.onnx");
    assert!(matches!(import_onnx(&bytes), Err(ModelError::NeedsInputShape { .. })));
    check("vit_tiny_dynamic_batch");
}

#[test]
fn mobilenet_v3_small_from_the_dynamo_exporter_with_external_data_matches_onnx_runtime() {
    // Opset 18, weights in `mobilenet_v3_small_dynamo.onnx.data` beside the model.
    let bytes = model_bytes("tests/fixtures/zoo/mobilenet_v3_small_dynamo.onnx");
    assert_eq!(external_data_locations(&bytes).unwrap(), vec!["mobilenet_v3_small_dynamo.onnx.data".to_string()]);
    let without_files = import_onnx(&bytes).unwrap_err();
    assert!(matches!(without_files, ModelError::ExternalData { problem: ExternalDataProblem::NotProvided, .. }), "{without_files:?}");
    check("mobilenet_v3_small_dynamo");
}

/// Runs every stage of `plan` on the GPU, the activation crossing each cut as f32.
fn run_staged(graph: &Graph, plan: &bevy_p2p_inference::model::PartitionPlan, input: &bevy_p2p_inference::Tensor) -> bevy_p2p_inference::Tensor {
    let validated = plan.validate(graph).expect("the proposed plan fits the model");
    validated.stage_graphs(graph).iter().fold(input.clone(), |activation, stage| run_gpu(stage, &activation))
}

#[test]
fn transformers_split_between_their_blocks_and_run_staged_as_they_run_whole() {
    use bevy_p2p_inference::model::plan::propose_plan;
    use bevy_p2p_inference::tensor::TransferDtype;
    for name in ["vit_tiny", "gpt2_tiny"] {
        let input = fixture(&format!("zoo/{name}_input.npy"));
        let graph = import(name, input.shape());
        // Two blocks: a cut between them, where only the residual stream crosses.
        let plan = propose_plan(&graph, input.shape(), 2, TransferDtype::F32).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(plan.stages.len(), 2);
        let whole = run_gpu(&graph, &input);
        let staged = run_staged(&graph, &plan, &input);
        let differing = staged.data().iter().zip(whole.data()).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differing, 0, "{name}: {differing} of {} values differ between staged and whole", whole.len());
        assert!(relative_error(&staged, &fixture(&format!("zoo/{name}_ort.npy"))) <= MAX_RELATIVE_ERROR, "{name}");
    }
}

#[test]
fn a_small_unet_matches_onnx_runtime() {
    // Image to image: InstanceNormalization, MaxPool, ConvTranspose, a bilinear Resize and skip
    // connections; and exported with a dynamic batch, as the examples run it on one image.
    check("unet_small");
    check("unet_small_dynamic_batch");
}

#[test]
fn an_lstm_sequence_classifier_matches_onnx_runtime() {
    // The LSTM's output at the last step (its unused Y_h and Y_c outputs named by the exporter).
    check("lstm_classifier");
}

#[test]
fn a_gru_sequence_classifier_reading_the_final_hidden_state_matches_onnx_runtime() {
    check("gru_classifier");
}

#[test]
fn a_gpt2_exported_with_a_dynamic_batch_runs_at_the_batch_of_its_input() {
    check("gpt2_tiny_dynamic_batch");
}

#[test]
fn torchvision_mobilenet_v2_narrowed_matches_onnx_runtime() {
    check("mobilenet_v2_narrow");
}

#[test]
fn torchvision_resnet18_layout_narrowed_matches_onnx_runtime() {
    check("resnet18_narrow");
}

#[test]
fn torchvision_regnet_y_narrowed_matches_onnx_runtime() {
    // Grouped convolutions and squeeze-and-excitation.
    check("regnet_y_narrow");
}

#[test]
fn torchvision_mnasnet_narrowed_matches_onnx_runtime() {
    check("mnasnet_narrow");
}

#[test]
fn a_two_layer_bidirectional_lstm_matches_onnx_runtime() {
    check("lstm_bidirectional");
}

#[test]
fn a_bidirectional_gru_reading_both_final_states_matches_onnx_runtime() {
    check("gru_bidirectional");
}

#[test]
fn models_from_the_dynamo_exporter_match_onnx_runtime() {
    // Opset 18, weights in external data; LayerNormalization as one op, Split by num_outputs.
    for name in [
        "resnet18_narrow_dynamo",
        "vit_tiny_dynamo",
        "bert_tiny_dynamo",
        "gpt2_tiny_dynamo",
        "unet_small_dynamo",
        "lstm_classifier_dynamo",
        "gru_classifier_dynamo",
    ] {
        check(name);
    }
}

#[test]
fn a_split_model_with_a_dynamic_batch_is_cut_again_for_each_batch() {
    use bevy_p2p_inference::model::plan::propose_plan;
    use bevy_p2p_inference::model::StagedModel;
    use bevy_p2p_inference::tensor::TransferDtype;
    use bevy_p2p_inference::Model;
    let model = Model::from_onnx_bytes(&model_bytes("tests/fixtures/zoo/gpt2_tiny_dynamic_batch.onnx")).unwrap();
    assert!(model.needs_input_shape());
    let plan = propose_plan(model.graph(), &[1, 8], 2, TransferDtype::F32).unwrap();
    let mut staged = StagedModel::new(model, plan).unwrap();
    // The stored input has batch 2; the stages cut at load are for batch 1.
    let input = fixture("zoo/gpt2_tiny_dynamic_batch_input.npy");
    let batch = input.shape()[0];
    assert_ne!(batch, 1);
    assert!(!std::sync::Arc::ptr_eq(&staged.stage(0, 1).unwrap(), &staged.stage(0, batch).unwrap()), "a graph per batch");
    let output = (0..staged.stage_count()).fold(input, |activation, stage| run_gpu(&staged.stage(stage, batch).unwrap(), &activation));
    let err = relative_error(&output, &fixture("zoo/gpt2_tiny_dynamic_batch_ort.npy"));
    assert!(err <= MAX_RELATIVE_ERROR, "staged at batch {batch}: relative error {err}");
}
