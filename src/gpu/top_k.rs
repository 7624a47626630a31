//! A classifier's top k taken on the GPU: the `top_k` kernel reduces a block's output to k
//! [`ClassScore`]s, so that a request that asks only for its top classes reads back k pairs
//! instead of the whole output. [`crate::tensor::Tensor::top_k`] is its CPU reference.

use std::task::Poll;

use wgpu::util::DeviceExt;

use super::device_check::{DeviceCheck, DeviceRefusal};
use super::library::{compute_pipeline, storage_entry};
use super::params::{ClassScore, TopKParams};

/// The kernel's source.
pub(crate) const SHADER: &str = include_str!("../../shaders/top_k.wgsl");

/// The `top_k` kernel's pipeline, built once per device.
pub struct TopKKernel {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    check: DeviceCheck,
}

impl TopKKernel {
    /// Compiles the kernel; the device's verdict on it comes from [`Self::check`].
    pub fn new(device: &wgpu::Device) -> Self {
        let ((pipeline, layout), check) = DeviceCheck::around(device, "the top_k kernel", || {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some("top_k"), source: wgpu::ShaderSource::Wgsl(SHADER.into()) });
            // The parameters and the logits, then the scores.
            compute_pipeline(device, &module, "top_k", &[storage_entry(0, true), storage_entry(1, true), storage_entry(2, false)])
        });
        Self { pipeline, layout, check }
    }

    /// The device's verdict on the kernel, pending until known.
    pub fn check(&self) -> Poll<Result<(), DeviceRefusal>> {
        self.check.poll()
    }

    /// Records the top `k` classes of the first `count` values of `logits` into `scores` (at
    /// least [`scores_bytes`]`(k)` long), best first.
    pub fn encode(&self, device: &wgpu::Device, encoder: &mut wgpu::CommandEncoder, logits: &wgpu::Buffer, count: u32, k: u32, scores: &wgpu::Buffer) {
        let params = TopKParams { count, k, pad0: 0, pad1: 0 };
        let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some("top_k params"), contents: bytemuck::bytes_of(&params), usage: wgpu::BufferUsages::STORAGE });
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("top_k"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: logits.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 2, resource: scores.as_entire_binding() },
            ],
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("top_k"), timestamp_writes: None });
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }
}

/// The bytes `k` [`ClassScore`]s take.
pub fn scores_bytes(k: u32) -> u64 {
    (k as u64 * size_of::<ClassScore>() as u64).max(size_of::<ClassScore>() as u64)
}

/// The classes of `scores` as (class, probability), best first, without the rounds that found
/// none.
pub fn classes_of(scores: &[ClassScore]) -> Vec<(usize, f32)> {
    scores.iter().filter(|s| s.class_index != u32::MAX).map(|s| (s.class_index as usize, s.probability)).collect()
}
