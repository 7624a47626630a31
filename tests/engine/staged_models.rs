//! A model cut by a partition plan and run stage after stage gives what the whole model gives:
//! bit-identical with f32 cuts, the same top-1 through int8 cuts.

use bevy_p2p_inference::model::plan::propose_plan;
use bevy_p2p_inference::tensor::TransferDtype;
use bevy_p2p_inference::tensor::quant::{decode_values, encode_values};
use bevy_p2p_inference::model::{import_onnx, run_reference, Model, PartitionPlan, PlanError, StagedModel};
use bevy_p2p_inference::Tensor;

use crate::support::*;

fn shipped_plan(name: &str) -> PartitionPlan {
    PartitionPlan::from_ron(&String::from_utf8(model_bytes(&format!("assets/plans/{name}"))).unwrap()).expect("parses")
}

/// Runs every stage on the GPU, passing each cut through its transfer encoding.
fn run_staged(plan: &PartitionPlan, model: &str, input: &Tensor) -> Tensor {
    let graph = import_onnx(&model_bytes(model)).unwrap();
    let validated = plan.validate(&graph).expect("the plan fits the model");
    let mut activation = input.clone();
    for (stage, sub) in validated.stages.iter().zip(validated.stage_graphs(&graph)) {
        let (bytes, params) = encode_values(activation.data(), stage.input_dtype);
        let data = decode_values(&bytes, activation.len(), stage.input_dtype, params).unwrap();
        let arrived = Tensor::new(activation.shape().to_vec(), data).unwrap();
        activation = run_gpu(&sub, &arrived);
    }
    activation
}

#[test]
fn the_shipped_model_split_three_ways_with_f32_cuts_is_bit_identical_to_the_whole_model() {
    let model = "assets/models/fashion_mobilenetv2.onnx";
    let input = fixture("fashion_input.npy");
    let whole = run_gpu(&import_onnx(&model_bytes(model)).unwrap(), &input);
    let staged = run_staged(&shipped_plan("fashion_3_f32.plan.ron"), model, &input);
    assert_eq!(staged.shape(), whole.shape());
    let differing = staged.data().iter().zip(whole.data()).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(differing, 0, "{differing} of {} outputs differ", whole.len());
}

#[test]
fn the_shipped_model_through_int8_cuts_keeps_the_top_1_of_onnx_runtime() {
    let model = "assets/models/fashion_mobilenetv2.onnx";
    let staged = run_staged(&shipped_plan("fashion_3_int8.plan.ron"), model, &fixture("fashion_input.npy"));
    let want = argmax_rows(&fixture("fashion_ort.npy"));
    let got = argmax_rows(&staged);
    let same = got.iter().zip(&want).filter(|(a, b)| a == b).count();
    assert!(same >= 63, "int8 cuts changed the top-1 of {} of 64 images", 64 - same);
}

#[test]
fn proposed_plans_for_the_synthetic_imagenet_model_validate_and_run() {
    let model = "assets/models/mobilenetv2_imagenet_synthetic.onnx";
    let graph = import_onnx(&model_bytes(model)).unwrap();
    let plan = propose_plan(&graph, &[1, 3, 224, 224], 4, TransferDtype::F16).unwrap();
    assert_eq!(plan.stages.len(), 4);
    let staged = run_staged(&plan, model, &fixture("imagenet_input.npy"));
    let err = relative_error(&staged, &fixture("imagenet_ort.npy"));
    assert!(err <= 1e-2, "f16 cuts: relative error {err}");
    assert_eq!(argmax_rows(&staged), argmax_rows(&fixture("imagenet_ort.npy")));
}

#[test]
fn a_shipped_plan_does_not_fit_another_model() {
    let graph = import_onnx(&model_bytes("assets/models/mobilenetv2_cifar_synthetic.onnx")).unwrap();
    let err = shipped_plan("fashion_3_int8.plan.ron").validate(&graph).unwrap_err();
    assert!(matches!(err, PlanError::UnknownNode { stage: 0, .. }), "{err}");
}

#[test]
fn the_shapes_at_the_cuts_are_those_the_stages_produce_for_each_batch() {
    let bytes = model_bytes("assets/models/fashion_mobilenetv2.onnx");
    let model = Model::from_onnx_bytes(&bytes).unwrap();
    let mut staged = StagedModel::new(model, shipped_plan("fashion_3_int8.plan.ron")).unwrap();
    for batch in [1, 3] {
        let shapes = staged.boundary_shapes(batch).unwrap();
        let mut activation = Tensor::new(vec![batch, 1, 28, 28], vec![0.25; batch * 28 * 28]).unwrap();
        assert_eq!(shapes.stage_input(0), Some(activation.shape()));
        for stage in 0..staged.stage_count() {
            assert_eq!(shapes.stage_input(stage), Some(activation.shape()), "stage {stage}'s input at batch {batch}");
            activation = run_reference(&staged.stage(stage, batch).unwrap(), &activation).unwrap();
            assert_eq!(shapes.stage_output(stage), Some(activation.shape()), "stage {stage}'s output at batch {batch}");
        }
        assert_eq!(activation.shape(), [batch, 10]);
        assert_eq!(shapes.stage_output(staged.stage_count()), None);
    }
}
