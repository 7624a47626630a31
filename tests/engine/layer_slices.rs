//! Requests run across frames in layer slices: the same result as the model run whole, one
//! slice per frame, and every slice within the frame's GPU budget.

use std::time::Duration;

use bevy::prelude::*;
use bevy_p2p_inference::prelude::*;
use bevy_p2p_inference::schedule::layer_slices::FIRST_SLICES;
use bevy_p2p_inference::{update_until_prediction, InferenceError, WaitError};

use crate::support::{app, fixture};

/// Generous: lavapipe is slow.
const TIMEOUT: Duration = Duration::from_secs(120);

fn bits(tensor: &Tensor) -> Vec<u32> {
    tensor.data().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn a_request_sliced_across_frames_gives_the_whole_model_s_result_one_slice_per_frame_each_within_the_budget() {
    let mut app = app();
    let model: Handle<Model> = app.world().resource::<AssetServer>().load("models/fashion_mobilenetv2.onnx");
    let input = fixture("fashion_input.npy").rows(0..1).unwrap();
    // The model run whole three times: the slower of the last two (on a compiled block) is its
    // GPU time, so that a lucky run on a busy CPU does not make the budget too tight.
    let mut whole = Vec::new();
    for _ in 0..3 {
        let entity = app.world_mut().spawn(InferenceRequest::new(model.clone(), input.clone())).id();
        whole.push(update_until_prediction(&mut app, entity, TIMEOUT).unwrap().0);
    }
    let whole_gpu = whole[1..].iter().map(|p| p.gpu.expect("lavapipe writes timestamps")).max().unwrap();
    let whole = whole.pop().unwrap();
    let budget = whole_gpu / 3;

    let mut sliced = Vec::new();
    for _ in 0..4 {
        let request = (InferenceRequest::new(model.clone(), input.clone()), SliceAcrossFrames { gpu_per_frame: budget });
        let entity = app.world_mut().spawn(request).id();
        let prediction = update_until_prediction(&mut app, entity, TIMEOUT).unwrap().0;
        assert_eq!(prediction.output.shape(), whole.output.shape());
        assert_eq!(bits(&prediction.output), bits(&whole.output), "the slices compute exactly the whole model");
        assert_eq!(prediction.top_k, whole.top_k);
        for pair in prediction.slices.windows(2) {
            assert!(pair[1].frame > pair[0].frame, "one slice per frame: {:?}", prediction.slices);
            assert_eq!(*pair[1].nodes.start(), pair[0].nodes.end() + 1, "slices follow each other");
        }
        assert!(prediction.slices.iter().all(|s| s.gpu.is_some()), "every slice is timed");
        assert_eq!(prediction.gpu, prediction.slices.iter().map(|s| s.gpu).sum());
        sliced.push(prediction);
    }
    assert_eq!(sliced[0].slices.len(), FIRST_SLICES, "a model never sliced before starts at the first count");
    // After the first, the count comes from the measured slices: at least four slices sized
    // for 3/4 of a third of the model each.
    let last = sliced.last().unwrap();
    let slowest = last.slices.iter().filter_map(|s| s.gpu).max().unwrap();
    assert!(last.slices.len() >= 3 && last.slices.len() < FIRST_SLICES, "{} slices for a budget of a third of {whole_gpu:?}", last.slices.len());
    // With a margin for a loaded CPU: the model run whole takes three budgets.
    assert!(slowest <= budget * 3 / 2, "the slowest slice took {slowest:?} against a budget of {budget:?}: {:?}", last.slices);
}

#[test]
fn a_sliced_request_with_the_wrong_input_shape_fails_with_a_staging_error() {
    let mut app = app();
    let model: Handle<Model> = app.world().resource::<AssetServer>().load("models/fashion_mobilenetv2.onnx");
    let request = (InferenceRequest::new(model, Tensor::zeros(vec![1, 3, 32, 32])), SliceAcrossFrames { gpu_per_frame: Duration::from_millis(2) });
    let entity = app.world_mut().spawn(request).id();
    let result = update_until_prediction(&mut app, entity, TIMEOUT);
    assert!(matches!(result, Err(WaitError::Failed(InferenceError::Staging(_)))), "{result:?}");
    assert!(app.world().get::<InferenceFailed>(entity).is_some());
    assert!(app.world().get::<Prediction>(entity).is_none());
}
