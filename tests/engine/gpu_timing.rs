//! Timestamp queries: the GPU time of a block and its per-dispatch profile.

use std::sync::Arc;

use bevy_p2p_inference::gpu::{gpu_time, profile_dispatches, GpuBlock, ResidentWeights};
use bevy_p2p_inference::model::import_onnx;

use crate::support::{fixture, gpu, model_bytes};

#[test]
fn a_profile_times_every_dispatch_of_the_block_in_program_order() {
    let gpu = gpu().lock().unwrap();
    let graph = import_onnx(&model_bytes("assets/models/fashion_mobilenetv2.onnx")).unwrap();
    let input = fixture("fashion_input.npy");
    let weights = Arc::new(ResidentWeights::upload(&gpu.device, &gpu.library, &graph).unwrap());
    let block = GpuBlock::new(&gpu.device, &gpu.library, weights, &graph, input.shape()).unwrap();

    let profile = profile_dispatches(&gpu.device, &gpu.queue, &gpu.library, &block, &input).expect("the adapter has timestamp queries");
    let program = block.program();
    assert_eq!(profile.len(), program.dispatches.len());
    for (timed, dispatch) in profile.iter().zip(&program.dispatches) {
        assert_eq!((timed.kernel, timed.workgroups), (dispatch.kernel, dispatch.workgroups));
    }
    assert!(profile.iter().any(|d| !d.time.is_zero()), "every dispatch took no time: {profile:?}");

    let whole = gpu_time(&gpu.device, &gpu.queue, &gpu.library, &block, &input).unwrap();
    assert!(!whole.is_zero(), "the block's compute pass took no time");
}
