//! A classifier's top k taken on the GPU: the `top_k` kernel reduces a block's output to k
//! [`ClassScore`]s, so that a request that asks only for its top classes reads back k pairs
//! instead of the whole output. [`crate::tensor::Tensor::top_k`] is its CPU reference.

use std::task::Poll;

use wgpu::util::DeviceExt;

use super::device_check::DeviceRefusal;
use super::edge_kernel::EdgeKernel;
use super::library::storage_entry;
use super::params::{ClassScore, TopKParams};

/// The kernel's source.
pub(crate) const SHADER: &str = include_str!("../../shaders/top_k.wgsl");

/// The `top_k` kernel's pipeline, built once per device.
pub struct TopKKernel(EdgeKernel);

impl TopKKernel {
    /// Compiles the kernel; the device's verdict on it comes from [`Self::check`].
    pub fn new(device: &wgpu::Device) -> Self {
        // The parameters and the logits, then the scores.
        Self(EdgeKernel::new(device, "top_k", SHADER, &[storage_entry(0, true), storage_entry(1, true), storage_entry(2, false)]))
    }

    /// The device's verdict on the kernel, pending until known.
    pub fn check(&self) -> Poll<Result<(), DeviceRefusal>> {
        self.0.check()
    }

    /// Records the top `k` classes of the first `count` values of `logits` into `scores` (at
    /// least [`scores_bytes`]`(k)` long), best first.
    pub fn encode(&self, device: &wgpu::Device, encoder: &mut wgpu::CommandEncoder, logits: &wgpu::Buffer, count: u32, k: u32, scores: &wgpu::Buffer) {
        let params = TopKParams { count, k, pad0: 0, pad1: 0 };
        let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some("top_k params"), contents: bytemuck::bytes_of(&params), usage: wgpu::BufferUsages::STORAGE });
        self.0.dispatch(device, encoder, &[params.as_entire_binding(), logits.as_entire_binding(), scores.as_entire_binding()], [1, 1, 1]);
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
