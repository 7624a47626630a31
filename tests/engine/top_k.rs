//! The `top_k` kernel against the CPU reference (`Tensor::top_k`), and requests that read back
//! only their top classes.

use bevy_p2p_inference::gpu::params::ClassScore;
use bevy_p2p_inference::gpu::top_k::{classes_of, scores_bytes};
use bevy_p2p_inference::gpu::TopKKernel;
use bevy_p2p_inference::Tensor;
use rand::{Rng, SeedableRng};
use wgpu::util::DeviceExt;

use crate::support::*;

/// The top `k` of `logits` as the kernel takes it on the GPU.
fn top_k_on_gpu(logits: &[f32], k: u32) -> Vec<(usize, f32)> {
    let gpu = gpu().lock().unwrap();
    let (device, queue) = (&gpu.device, &gpu.queue);
    let input = device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some("logits"), contents: bytemuck::cast_slice(logits), usage: wgpu::BufferUsages::STORAGE });
    let bytes = scores_bytes(k);
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
    let scores = device.create_buffer(&wgpu::BufferDescriptor { label: Some("scores"), size: bytes, usage, mapped_at_creation: false });
    let readback = device.create_buffer(&wgpu::BufferDescriptor { label: Some("readback"), size: bytes, usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST, mapped_at_creation: false });
    let kernel = TopKKernel::new(device);
    let mut encoder = device.create_command_encoder(&Default::default());
    kernel.encode(device, &mut encoder, &input, logits.len() as u32, k, &scores);
    encoder.copy_buffer_to_buffer(&scores, 0, &readback, 0, bytes);
    queue.submit([encoder.finish()]);
    readback.slice(..).map_async(wgpu::MapMode::Read, |r| r.unwrap());
    device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    let scores: Vec<ClassScore> = bytemuck::cast_slice(&readback.slice(..).get_mapped_range()).to_vec();
    classes_of(&scores[..k as usize])
}

/// The kernel's top k equal the CPU reference's: the same classes in the same order, and
/// probabilities within 1e-5 (the GPU's `exp` is not the CPU's).
fn assert_matches_reference(logits: Vec<f32>, k: u32) {
    let reference = Tensor::new(vec![1, logits.len()], logits.clone()).unwrap().top_k(0, k as usize);
    let got = top_k_on_gpu(&logits, k);
    let classes = |t: &[(usize, f32)]| t.iter().map(|c| c.0).collect::<Vec<_>>();
    assert_eq!(classes(&got), classes(&reference), "{} logits, k = {k}", logits.len());
    for (g, r) in got.iter().zip(&reference) {
        assert!((g.1 - r.1).abs() < 1e-5, "class {}: {} against {}", g.0, g.1, r.1);
    }
}

#[test]
fn the_gpu_top_k_equals_the_cpu_reference_on_random_logits_of_many_sizes() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    for (count, k) in [(10, 3), (10, 10), (1000, 5), (1001, 1), (21_843, 8), (300, 16)] {
        let logits: Vec<f32> = (0..count).map(|_| rng.random_range(-12.0..12.0)).collect();
        assert_matches_reference(logits, k);
    }
}

#[test]
fn ties_go_to_the_lower_class_as_in_the_reference_sort() {
    // Quantised logits: many equal values, spread over the lanes.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let logits: Vec<f32> = (0..2000).map(|_| rng.random_range(0..6) as f32).collect();
    assert_matches_reference(logits, 12);
    assert_matches_reference(vec![1.0; 600], 4);
}

#[test]
fn more_classes_asked_than_there_are_gives_every_class_once() {
    let got = top_k_on_gpu(&[0.5, 2.0, -1.0], 5);
    assert_eq!(got.iter().map(|c| c.0).collect::<Vec<_>>(), [1, 0, 2]);
    let total: f32 = got.iter().map(|c| c.1).sum();
    assert!((total - 1.0).abs() < 1e-6, "{got:?}");
}

#[test]
fn a_request_that_reads_back_only_its_top_5_gets_the_classes_of_its_whole_output_and_moves_40_bytes() {
    use bevy::prelude::*;
    use bevy_p2p_inference::prelude::*;
    use bevy_p2p_inference::{update_until_prediction, GpuTransfers};

    let mut app = app();
    let model: Handle<Model> = app.world().resource::<AssetServer>().load("models/mobilenetv2_imagenet_synthetic.onnx");
    let input = fixture("imagenet_input.npy").rows(0..1).unwrap();
    let timeout = std::time::Duration::from_secs(120);
    let whole = app.world_mut().spawn(InferenceRequest::new(model.clone(), input.clone())).id();
    let (whole, _) = update_until_prediction(&mut app, whole, timeout).unwrap();
    let before = app.world().resource::<GpuTransfers>().totals();
    let top = app.world_mut().spawn((InferenceRequest::new(model, input), ReadBackTopK(5))).id();
    let (top, _) = update_until_prediction(&mut app, top, timeout).unwrap();
    let after = app.world().resource::<GpuTransfers>().totals();

    assert_eq!((after.readbacks - before.readbacks, after.readback_bytes - before.readback_bytes), (1, 5 * 8), "five (class, probability) pairs, not 1000 logits");
    assert!(top.output.data().is_empty());
    let reference = whole.output.top_k(0, 5);
    assert_eq!(top.top_k.iter().map(|c| c.0).collect::<Vec<_>>(), reference.iter().map(|c| c.0).collect::<Vec<_>>());
    for (got, want) in top.top_k.iter().zip(&reference) {
        assert!((got.1 - want.1).abs() < 1e-5, "class {}: {} against {}", got.0, got.1, want.1);
    }
    assert_eq!(top.gpu.is_some(), whole.gpu.is_some(), "its GPU time is still read behind the classes");
}
