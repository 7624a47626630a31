//! Timestamp queries: the GPU time of a block and its per-dispatch profile.

use std::sync::Arc;

use bevy_p2p_inference::gpu::{gpu_time, profile_dispatches, read_timed, run_blocking, GpuBlock, GpuClock, RequestTimestamps, ResidentWeights};
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

#[test]
fn a_request_recorded_with_timestamps_reads_back_its_output_and_its_gpu_time_in_one_map() {
    let gpu = gpu().lock().unwrap();
    let graph = import_onnx(&model_bytes("assets/models/fashion_mobilenetv2.onnx")).unwrap();
    let input = fixture("fashion_input.npy");
    let weights = Arc::new(ResidentWeights::upload(&gpu.device, &gpu.library, &graph).unwrap());
    let block = GpuBlock::new(&gpu.device, &gpu.library, weights, &graph, input.shape()).unwrap();
    let clock = GpuClock::of(&gpu.device, &gpu.queue).expect("the adapter has timestamp queries");
    let stamps = RequestTimestamps::new(&gpu.device, &block).expect("one pass per batch slice fits a query set");

    let upload = block.upload_input(&gpu.device, &input);
    let readback = block.create_readback(&gpu.device);
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    block.encode_timed(&gpu.library, &mut encoder, &upload, &readback, &stamps);
    gpu.queue.submit([encoder.finish()]);
    let (mapped, done) = std::sync::mpsc::channel();
    readback.slice(..).map_async(wgpu::MapMode::Read, move |result| mapped.send(result).unwrap());
    gpu.device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    done.recv().unwrap().unwrap();
    let (output, time) = read_timed(&readback, block.output_shape().to_vec(), Some(clock));

    let untimed = run_blocking(&gpu.device, &gpu.queue, &gpu.library, &block, &input).unwrap();
    assert_eq!(output, untimed, "the timestamps land behind the output, not in it");
    let time = time.expect("a clock reads the timestamps");
    let measured_alone = gpu_time(&gpu.device, &gpu.queue, &gpu.library, &block, &input).unwrap();
    let ratio = time.as_secs_f64() / measured_alone.as_secs_f64();
    assert!((0.2..5.0).contains(&ratio), "the request's GPU time {time:?} is not that of the same block timed alone, {measured_alone:?}");
}
