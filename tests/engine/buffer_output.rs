//! Outputs kept on the GPU in a game's storage buffer (`OutputToBuffer`): the buffer holds the
//! output a plain request reads back, nothing is read back, and buffers that cannot take it
//! fail the request with a typed error.

use std::time::Duration;

use bevy::asset::RenderAssetUsages;
use bevy::prelude::*;
use bevy::render::storage::ShaderBuffer;
use bevy_p2p_inference::gpu::BufferOutputError;
use bevy_p2p_inference::prelude::*;
use bevy_p2p_inference::{update_until_prediction, GpuTransfers, InferenceError, WaitError};

use crate::support::*;

const TIMEOUT: Duration = Duration::from_secs(120);
const MODEL: &str = "models/fashion_mobilenetv2.onnx";

#[test]
fn a_buffer_output_holds_what_a_plain_request_reads_back_and_nothing_is_read_back() {
    let mut app = app();
    let model: Handle<Model> = app.world().resource::<AssetServer>().load(MODEL);
    let input = fixture("fashion_input.npy").rows(0..1).unwrap();
    let plain = app.world_mut().spawn(InferenceRequest::new(model.clone(), input.clone())).id();
    let (plain, _) = update_until_prediction(&mut app, plain, TIMEOUT).unwrap();

    // Larger than the output: the rest of the buffer is left as it was.
    let buffer = app.world_mut().resource_mut::<Assets<ShaderBuffer>>().add(ShaderBuffer::new(&[0xff; 48], RenderAssetUsages::RENDER_WORLD));
    let before = app.world().resource::<GpuTransfers>().totals();
    let kept = app.world_mut().spawn((InferenceRequest::new(model.clone(), input.clone()), OutputToBuffer::new(buffer.clone()))).id();
    let (kept, _) = update_until_prediction(&mut app, kept, TIMEOUT).unwrap();
    let after = app.world().resource::<GpuTransfers>().totals();
    assert_eq!((after.readbacks, after.readback_bytes), (before.readbacks, before.readback_bytes), "the output stayed on the GPU");
    assert!(kept.output.data().is_empty());

    let bytes = read_buffer(&mut app, buffer);
    let values: Vec<f32> = bytemuck::cast_slice(&bytes[..40]).to_vec();
    assert_eq!(values.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), plain.output.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "the same block on the same input");
    assert_eq!(&bytes[40..], &[0xff; 8]);

    // The block's later requests are not handed the kept request's smaller readback buffer.
    for _ in 0..3 {
        let again = app.world_mut().spawn(InferenceRequest::new(model.clone(), input.clone())).id();
        let (again, _) = update_until_prediction(&mut app, again, TIMEOUT).unwrap();
        assert_eq!(again.output.data(), plain.output.data());
    }
}

#[test]
fn buffers_that_cannot_take_the_output_fail_the_request_with_a_typed_error() {
    let mut app = app();
    let model: Handle<Model> = app.world().resource::<AssetServer>().load(MODEL);
    let input = fixture("fashion_input.npy").rows(0..1).unwrap();
    let mut no_copies = ShaderBuffer::with_size(40, RenderAssetUsages::RENDER_WORLD);
    no_copies.buffer_description.usage = wgpu::BufferUsages::STORAGE;
    let cases: [(&str, ShaderBuffer, BufferOutputError); 3] = [
        ("too small", ShaderBuffer::with_size(36, RenderAssetUsages::RENDER_WORLD), BufferOutputError::TooSmall { needed: 40, size: 36 }),
        ("no COPY_DST", no_copies, BufferOutputError::NotWritable("its usage lacks COPY_DST")),
        ("main world only", ShaderBuffer::with_size(40, RenderAssetUsages::MAIN_WORLD), BufferOutputError::NotWritable("its asset usage lacks RENDER_WORLD, so it never reaches the GPU")),
    ];
    for (case, buffer, expected) in cases {
        let buffer = app.world_mut().resource_mut::<Assets<ShaderBuffer>>().add(buffer);
        let request = app.world_mut().spawn((InferenceRequest::new(model.clone(), input.clone()), OutputToBuffer::new(buffer))).id();
        match update_until_prediction(&mut app, request, TIMEOUT) {
            Err(WaitError::Failed(InferenceError::BufferOutput(error))) => assert_eq!(error, expected, "{case}"),
            other => panic!("{case}: {other:?}"),
        }
    }
}
