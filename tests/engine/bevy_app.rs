//! The plugin inside a headless Bevy app: request in, prediction out, computed by the
//! render-world systems.

use std::time::Duration;

use bevy::prelude::*;
use bevy_p2p_inference::model::run_reference;
use bevy_p2p_inference::prelude::*;
use bevy_p2p_inference::testing::FaultInjection;
use bevy_p2p_inference::{headless_plugins, update_until_prediction, InferenceError, InferenceSystems, ModelError, WaitError};

use crate::support::*;

/// Generous: lavapipe is slow.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Row `i` of a batched fixture, as a batch of one.
fn batch_row(batch: &Tensor, i: usize) -> Tensor {
    let shape: Vec<usize> = std::iter::once(1).chain(batch.shape()[1..].iter().copied()).collect();
    let len: usize = shape.iter().product();
    Tensor::new(shape, batch.data()[i * len..(i + 1) * len].to_vec()).unwrap()
}

#[test]
fn a_request_for_the_shipped_model_gets_the_prediction_the_cpu_reference_computes() {
    let mut app = app();
    let image = std::fs::read(format!("{}/assets/images/ankle_boot.png", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let input = Tensor::from_image_bytes(&image, 1, 28, 28).unwrap();
    let model: Handle<Model> = app.world().resource::<AssetServer>().load("models/fashion_mobilenetv2.onnx");
    let entity = app.world_mut().spawn(InferenceRequest::new(model.clone(), input.clone())).id();
    let (prediction, _) = update_until_prediction(&mut app, entity, TIMEOUT).unwrap();
    let graph = app.world().resource::<Assets<Model>>().get(&model).unwrap().graph().clone();
    let reference = run_reference(&graph, &input).unwrap();
    assert!(relative_error(&prediction.output, &reference) <= 1e-4, "{:?} vs {:?}", prediction.output.data(), reference.data());
    let handover = prediction.handover.expect("a request run whole reports its readback-to-main-world handover");
    assert!(handover <= prediction.latency, "handover {handover:?} exceeds the whole latency {:?}", prediction.latency);
    // Lavapipe writes timestamps: the GPU time is measured, and within the request's latency.
    let gpu = prediction.gpu.expect("a request run whole reports its GPU time");
    assert!(gpu > std::time::Duration::ZERO && gpu <= prediction.latency, "GPU {gpu:?} against latency {:?}", prediction.latency);
    assert_eq!(prediction.top_k.len(), 3);
    assert_eq!(prediction.top_k[0].0, 9, "an ankle boot is class 9");
}

#[test]
fn several_requests_in_one_frame_each_get_their_own_result() {
    let mut app = app();
    let model: Handle<Model> = app.world().resource::<AssetServer>().load("models/fashion_mobilenetv2.onnx");
    let inputs = fixture("fashion_input.npy");
    let want = fixture("fashion_ort.npy");
    let entities: Vec<Entity> = (0..4).map(|i| app.world_mut().spawn(InferenceRequest::new(model.clone(), batch_row(&inputs, i))).id()).collect();
    for (i, &e) in entities.iter().enumerate() {
        let got = &update_until_prediction(&mut app, e, TIMEOUT).unwrap().0.output;
        assert!(relative_error(got, &batch_row(&want, i)) <= 1e-4, "request {i}");
    }
}

#[test]
fn later_requests_reuse_the_buffers_and_recorded_commands_of_earlier_ones_and_each_gets_its_own_result() {
    // A finished request gives its upload and readback buffers back, and the next request's
    // commands are recorded for them ahead of time; every request must still read its own input.
    let mut app = app();
    let model: Handle<Model> = app.world().resource::<AssetServer>().load("models/fashion_mobilenetv2.onnx");
    let inputs = fixture("fashion_input.npy");
    let want = fixture("fashion_ort.npy");
    let row = |i: usize| batch_row(&inputs, i);
    let check = |i: usize, got: &Tensor| assert!(relative_error(got, &batch_row(&want, i)) <= 1e-4, "request for row {i}");
    for i in [0, 1, 2, 3, 1, 0] {
        let entity = app.world_mut().spawn(InferenceRequest::new(model.clone(), row(i))).id();
        check(i, &update_until_prediction(&mut app, entity, TIMEOUT).unwrap().0.output);
        // Frames for the buffers to come back and the next submission to be recorded.
        for _ in 0..3 {
            app.update();
        }
    }
    // Two at a time, one frame apart, so that one request's buffers return while the other runs.
    let first = app.world_mut().spawn(InferenceRequest::new(model.clone(), row(2))).id();
    app.update();
    let second = app.world_mut().spawn(InferenceRequest::new(model.clone(), row(3))).id();
    check(2, &update_until_prediction(&mut app, first, TIMEOUT).unwrap().0.output);
    check(3, &update_until_prediction(&mut app, second, TIMEOUT).unwrap().0.output);
    // More in one frame than have commands recorded: the rest are recorded in the frame.
    let rows = [3, 0, 2, 1, 0];
    let entities: Vec<Entity> = rows.iter().map(|&i| app.world_mut().spawn(InferenceRequest::new(model.clone(), row(i))).id()).collect();
    for (&i, &entity) in rows.iter().zip(&entities) {
        check(i, &update_until_prediction(&mut app, entity, TIMEOUT).unwrap().0.output);
    }
}

/// While set, holds the frame in `Last` (before results are taken) for long enough that the
/// GPU, even lavapipe on two busy cores, has finished anything submitted in the frame (a
/// fashion request takes about 0.16 s there).
#[derive(Resource, Default)]
struct HoldFrameForTheGpu(bool);

#[test]
fn a_request_whose_block_has_commands_recorded_starts_at_once_and_is_predicted_within_its_own_frame() {
    // Without waiting for the frame's extract and the render world's next run: its prediction
    // is in the ECS by the end of the `update` it was spawned before.
    let mut app = app();
    app.init_resource::<HoldFrameForTheGpu>().add_systems(
        Last,
        (|hold: Res<HoldFrameForTheGpu>| {
            if hold.0 {
                std::thread::sleep(Duration::from_secs(10));
            }
        })
        .before(InferenceSystems::ReceiveResults),
    );
    let model: Handle<Model> = app.world().resource::<AssetServer>().load("models/fashion_mobilenetv2.onnx");
    let (inputs, want) = (fixture("fashion_input.npy"), fixture("fashion_ort.npy"));
    let first = app.world_mut().spawn(InferenceRequest::new(model.clone(), batch_row(&inputs, 0))).id();
    update_until_prediction(&mut app, first, TIMEOUT).unwrap();
    // Frames for the render world to record the block's next submission.
    for _ in 0..3 {
        app.update();
    }
    let second = app.world_mut().spawn(InferenceRequest::new(model.clone(), batch_row(&inputs, 1))).id();
    app.world_mut().resource_mut::<HoldFrameForTheGpu>().0 = true;
    app.update();
    let prediction = app.world().get::<Prediction>(second).expect("a prediction by the end of the request's own frame");
    assert!(relative_error(&prediction.output, &batch_row(&want, 1)) <= 1e-4);
}

#[test]
fn a_plugin_storing_tensors_as_f16_predicts_within_the_half_precision_tolerance_of_onnx_runtime() {
    use bevy_p2p_inference::gpu::{KernelOptions, StoragePrecision};

    let kernels = KernelOptions { storage: StoragePrecision::F16, ..default() };
    let mut app = app_with(P2pInferencePlugin { kernels, ..default() });
    let model: Handle<Model> = app.world().resource::<AssetServer>().load("models/fashion_mobilenetv2.onnx");
    let (inputs, want) = (fixture("fashion_input.npy"), fixture("fashion_ort.npy"));
    // Twice per row, so that the second request of each runs on recorded commands.
    for i in [0, 1, 0, 1] {
        let entity = app.world_mut().spawn(InferenceRequest::new(model.clone(), batch_row(&inputs, i))).id();
        let got = update_until_prediction(&mut app, entity, TIMEOUT).unwrap().0.output;
        let err = relative_error(&got, &batch_row(&want, i));
        assert!(err <= 1e-2, "request for row {i}: relative error {err}");
        assert_eq!(argmax_rows(&got), argmax_rows(&batch_row(&want, i)));
        for _ in 0..3 {
            app.update();
        }
    }
}

#[test]
fn a_request_with_the_wrong_input_shape_fails_with_an_error_instead_of_a_prediction() {
    let mut app = app();
    let model: Handle<Model> = app.world().resource::<AssetServer>().load("models/fashion_mobilenetv2.onnx");
    let entity = app.world_mut().spawn(InferenceRequest::new(model, Tensor::zeros(vec![1, 3, 32, 32]))).id();
    let result = update_until_prediction(&mut app, entity, TIMEOUT);
    assert!(matches!(result, Err(WaitError::Failed(InferenceError::Gpu(_)))), "{result:?}");
    assert!(app.world().get::<InferenceFailed>(entity).is_some());
    assert!(app.world().get::<Prediction>(entity).is_none());
}

#[test]
fn predictions_are_published_to_bevy_diagnostics_and_the_inference_history() {
    use bevy::diagnostic::DiagnosticsStore;
    use bevy_p2p_inference::diagnostics::LATENCY_MS;
    use bevy_p2p_inference::{InferenceDiagnosticsPlugin, InferenceHistory};

    let mut app = App::new();
    app.add_plugins((headless_plugins(), P2pInferencePlugin::default(), InferenceDiagnosticsPlugin::default()));
    app.finish();
    app.cleanup();
    let image = std::fs::read(format!("{}/assets/images/bag.png", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let input = Tensor::from_image_bytes(&image, 1, 28, 28).unwrap();
    let model: Handle<Model> = app.world().resource::<AssetServer>().load("models/fashion_mobilenetv2.onnx");
    let entity = app.world_mut().spawn(InferenceRequest::new(model, input)).id();
    let (prediction, _) = update_until_prediction(&mut app, entity, TIMEOUT).unwrap();
    app.update(); // PostUpdate of the frame that delivered it has run; one more to be sure.
    let history = app.world().resource::<InferenceHistory>();
    assert_eq!(history.total(), 1);
    let entry = history.entries().next().unwrap();
    assert_eq!(entry.top_k, prediction.top_k);
    assert_eq!(entry.input.as_ref().map(|t| t.shape().to_vec()), Some(vec![1, 1, 28, 28]));
    let store = app.world().resource::<DiagnosticsStore>();
    let latency = store.get(&LATENCY_MS).and_then(|d| d.value()).expect("a latency measurement");
    assert!((latency - prediction.latency.as_secs_f64() * 1e3).abs() < 1e-6, "{latency} ms");
}

/// The shipped model with every initializer scaled by `scale`: another model of the same shape.
fn scaled_fashion_model(scale: f32) -> Model {
    use bevy_p2p_inference::model::onnx_pb::ModelProto;
    use prost::Message;

    let bytes = std::fs::read(format!("{}/assets/models/fashion_mobilenetv2.onnx", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut proto = ModelProto::decode(&bytes[..]).unwrap();
    for tensor in &mut proto.graph.as_mut().unwrap().initializer {
        for chunk in tensor.raw_data.iter_mut().flat_map(|raw| raw.chunks_exact_mut(4)) {
            let value = f32::from_le_bytes(chunk.try_into().unwrap()) * scale;
            chunk.copy_from_slice(&value.to_le_bytes());
        }
        tensor.float_data.iter_mut().for_each(|v| *v *= scale);
    }
    Model::from_onnx_bytes(&proto.encode_to_vec()).unwrap()
}

#[test]
fn a_model_asset_replaced_by_another_of_the_same_shape_predicts_with_the_new_weights() {
    // Each replacement is made after the last one was dropped, so its graph may be allocated
    // where an earlier one was: the render world must not take it for the old graph.
    let mut app = app();
    let input = batch_row(&fixture("fashion_input.npy"), 0);
    let handle = app.world_mut().resource_mut::<Assets<Model>>().add(scaled_fashion_model(1.0));
    let mut references: Vec<Tensor> = Vec::new();
    for scale in [1.0, 0.5, 2.0, 0.25, 1.5] {
        if scale != 1.0 {
            let model = scaled_fashion_model(scale);
            app.world_mut().resource_mut::<Assets<Model>>().insert(handle.id(), model).unwrap();
        }
        let graph = app.world().resource::<Assets<Model>>().get(&handle).unwrap().graph().clone();
        let reference = run_reference(&graph, &input).unwrap();
        drop(graph);
        for earlier in &references {
            assert!(relative_error(earlier, &reference) > 1e-2, "the scaled models must differ for this test to mean anything");
        }
        let entity = app.world_mut().spawn(InferenceRequest::new(handle.clone(), input.clone())).id();
        let got = update_until_prediction(&mut app, entity, TIMEOUT).unwrap().0.output;
        assert!(relative_error(&got, &reference) <= 1e-4, "the model scaled by {scale}: {:?} vs {:?}", got.data(), reference.data());
        app.world_mut().despawn(entity);
        // Frames for the render world to release what it compiled for a replaced model.
        for _ in 0..3 {
            app.update();
        }
        references.push(reference);
    }
}

#[test]
fn when_the_submission_thread_dies_its_job_fails_and_later_requests_are_still_predicted() {
    let mut app = app();
    let model: Handle<Model> = app.world().resource::<AssetServer>().load("models/fashion_mobilenetv2.onnx");
    let (inputs, want) = (fixture("fashion_input.npy"), fixture("fashion_ort.npy"));
    let first = app.world_mut().spawn(InferenceRequest::new(model.clone(), batch_row(&inputs, 0))).id();
    update_until_prediction(&mut app, first, TIMEOUT).unwrap();
    app.world().resource::<FaultInjection>().panic_submission_thread();
    let doomed = app.world_mut().spawn(InferenceRequest::new(model.clone(), batch_row(&inputs, 1))).id();
    let error = update_until_prediction(&mut app, doomed, TIMEOUT).expect_err("the job the thread held fails");
    assert!(matches!(error, WaitError::Failed(InferenceError::SubmissionThreadLost(_))), "{error:?}");
    // The render world notices and records every later request itself.
    for (i, row) in [2, 3].into_iter().enumerate() {
        let entity = app.world_mut().spawn(InferenceRequest::new(model.clone(), batch_row(&inputs, row))).id();
        let (prediction, _) = update_until_prediction(&mut app, entity, TIMEOUT).unwrap_or_else(|e| panic!("request {i} after the thread died: {e}"));
        assert!(relative_error(&prediction.output, &batch_row(&want, row)) <= 1e-4);
    }
}

#[test]
fn a_model_with_a_dynamic_batch_predicts_for_each_batch_size_a_request_brings() {
    use crate::exporter_patterns::{exported_classifier_head, input};
    let bytes = exported_classifier_head(input(&[None, Some(2), Some(5), Some(5)]));
    let model = Model::from_onnx_bytes(&bytes).unwrap();
    let mut app = app();
    let handle = app.world_mut().resource_mut::<Assets<Model>>().add(model.clone());
    for batch in [3, 1, 3] {
        let x = Tensor::new(vec![batch, 2, 5, 5], (0..batch * 50).map(|i| (i as f32 * 0.13).sin()).collect()).unwrap();
        let entity = app.world_mut().spawn(InferenceRequest::new(handle.clone(), x.clone())).id();
        let (prediction, _) = update_until_prediction(&mut app, entity, TIMEOUT).unwrap();
        let reference = run_reference(&model.graph_for(x.shape()).unwrap(), &x).unwrap();
        assert_eq!(prediction.output.shape(), &[batch, 75]);
        assert!(relative_error(&prediction.output, &reference) <= 1e-5, "batch {batch}");
    }
    let wrong = Tensor::zeros(vec![2, 3, 5, 5]);
    let entity = app.world_mut().spawn(InferenceRequest::new(handle, wrong)).id();
    let error = update_until_prediction(&mut app, entity, TIMEOUT).unwrap_err();
    assert!(matches!(error, WaitError::Failed(InferenceError::Model(ModelError::InputShape { .. }))), "{error:?}");
}

/// Counts the predictions an entity observer saw.
#[derive(Resource, Default)]
struct ObservedOnEntity(Vec<(Entity, usize)>);

#[test]
fn an_observer_on_the_request_entity_sees_its_prediction() {
    let mut app = app();
    app.init_resource::<ObservedOnEntity>();
    let model: Handle<Model> = app.world().resource::<AssetServer>().load("models/fashion_mobilenetv2.onnx");
    let input = batch_row(&fixture("fashion_input.npy"), 0);
    let entity = app
        .world_mut()
        .spawn(InferenceRequest::new(model, input))
        .observe(|ready: On<PredictionReady>, mut seen: ResMut<ObservedOnEntity>| seen.0.push((ready.entity, ready.prediction.top_k[0].0)))
        .id();
    let (prediction, _) = update_until_prediction(&mut app, entity, TIMEOUT).unwrap();
    assert_eq!(app.world().resource::<ObservedOnEntity>().0, vec![(entity, prediction.top_k[0].0)]);
}

#[test]
fn a_kernel_the_gpu_refuses_fails_the_requests_that_need_it_naming_it_and_others_still_run() {
    use bevy_p2p_inference::gpu::{GpuError, KernelFamily};
    let mut app = app();
    app.world().resource::<FaultInjection>().break_shader(KernelFamily::Recurrent);
    let lstm = Model::from_onnx_bytes(&model_bytes("tests/fixtures/zoo/lstm_classifier.onnx")).unwrap();
    let lstm = app.world_mut().resource_mut::<Assets<Model>>().add(lstm);
    let sequence = fixture("zoo/lstm_classifier_input.npy");
    let doomed = app.world_mut().spawn(InferenceRequest::new(lstm, sequence)).id();
    let error = update_until_prediction(&mut app, doomed, TIMEOUT).expect_err("the recurrent kernel was refused");
    let WaitError::Failed(InferenceError::Gpu(GpuError::Refused(refusal))) = &error else { panic!("{error:?}") };
    assert!(refusal.what.contains("'recurrent'"), "names the kernel: {refusal:?}");
    assert!(app.world().get::<InferenceFailed>(doomed).is_some());
    // The refusal was caught, not left to Bevy's handler (which stops rendering): a model that
    // needs no recurrent kernel is still predicted.
    let fashion: Handle<Model> = app.world().resource::<AssetServer>().load("models/fashion_mobilenetv2.onnx");
    let (inputs, want) = (fixture("fashion_input.npy"), fixture("fashion_ort.npy"));
    let entity = app.world_mut().spawn(InferenceRequest::new(fashion, batch_row(&inputs, 0))).id();
    let (prediction, _) = update_until_prediction(&mut app, entity, TIMEOUT).unwrap();
    assert!(relative_error(&prediction.output, &batch_row(&want, 0)) <= 1e-4);
}

#[test]
fn with_room_for_one_compiled_block_inputs_of_alternating_shapes_still_get_their_predictions() {
    let mut app = app_with(P2pInferencePlugin { max_compiled_blocks: 1, ..default() });
    let model: Handle<Model> = app.world().resource::<AssetServer>().load("models/fashion_mobilenetv2.onnx");
    let (inputs, want) = (fixture("fashion_input.npy"), fixture("fashion_ort.npy"));
    let rows = |n: usize| {
        let per_row: usize = inputs.shape()[1..].iter().product();
        let shape: Vec<usize> = std::iter::once(n).chain(inputs.shape()[1..].iter().copied()).collect();
        (Tensor::new(shape.clone(), inputs.data()[..n * per_row].to_vec()).unwrap(), argmax_rows(&Tensor::new(vec![n, 10], want.data()[..n * 10].to_vec()).unwrap()))
    };
    // Each batch evicts the other's block; coming back to it compiles it again.
    for batch in [1, 2, 1, 2] {
        let (input, classes) = rows(batch);
        let entity = app.world_mut().spawn(InferenceRequest::new(model.clone(), input)).id();
        let got = update_until_prediction(&mut app, entity, TIMEOUT).unwrap().0.output;
        assert_eq!(argmax_rows(&got), classes, "batch {batch}");
    }
}

#[test]
fn a_sealed_model_loads_with_its_key_and_fails_to_load_with_another() {
    use bevy::asset::io::AssetSourceBuilder;
    use bevy_p2p_inference::model::seal_model;
    use bevy_p2p_inference::secret::SecretKey;

    let key = SecretKey::generate().unwrap();
    let dir = std::env::temp_dir().join(format!("bevy_p2p_inference_sealed_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sealed = seal_model(&model_bytes("assets/models/fashion_mobilenetv2.onnx"), &key).unwrap();
    std::fs::write(dir.join("fashion.onnx.sealed"), sealed).unwrap();
    let image = std::fs::read(format!("{}/assets/images/ankle_boot.png", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let input = Tensor::from_image_bytes(&image, 1, 28, 28).unwrap();
    for (model_key, opens) in [(key.clone(), true), (SecretKey::generate().unwrap(), false)] {
        let mut app = App::new();
        app.register_asset_source("sealed", AssetSourceBuilder::platform_default(dir.to_str().unwrap(), None));
        app.add_plugins((headless_plugins(), P2pInferencePlugin { model_key: Some(model_key), ..default() }));
        app.finish();
        app.cleanup();
        let model: Handle<Model> = app.world().resource::<AssetServer>().load("sealed://fashion.onnx.sealed");
        let entity = app.world_mut().spawn(InferenceRequest::new(model, input.clone())).id();
        let result = update_until_prediction(&mut app, entity, TIMEOUT);
        match opens {
            true => assert_eq!(result.unwrap().0.top_k[0].0, 9, "an ankle boot is class 9"),
            // Fails for the key, not for anything else (a missing file, a bad source).
            false => assert!(
                matches!(&result, Err(WaitError::Failed(InferenceError::ModelLoad(why))) if why.contains(&bevy_p2p_inference::model::SealError::WrongKeyOrTampered.to_string())),
                "{result:?}"
            ),
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
