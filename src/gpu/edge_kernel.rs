//! What the kernels at a model's edges share (`image_input`, `image_output`, `top_k`): a
//! pipeline with one bind group, compiled once per device under a [`DeviceCheck`], and one
//! dispatch per use.

use std::task::Poll;

use super::device_check::{DeviceCheck, DeviceRefusal};
use super::library::compute_pipeline;

/// A standalone compute kernel: its pipeline, its bind group's layout and the device's verdict
/// on them.
pub(super) struct EdgeKernel {
    name: &'static str,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    check: DeviceCheck,
}

impl EdgeKernel {
    /// Compiles the entry point `name` of `source` with one bind group of `entries`; the
    /// device's verdict comes from [`Self::check`].
    pub fn new(device: &wgpu::Device, name: &'static str, source: &'static str, entries: &[wgpu::BindGroupLayoutEntry]) -> Self {
        let ((pipeline, layout), check) = DeviceCheck::around(device, format!("the {name} kernel"), || {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(name), source: wgpu::ShaderSource::Wgsl(source.into()) });
            compute_pipeline(device, &module, name, entries)
        });
        Self { name, pipeline, layout, check }
    }

    /// The device's verdict on the kernel, pending until known.
    pub fn check(&self) -> Poll<Result<(), DeviceRefusal>> {
        self.check.poll()
    }

    /// Records one dispatch of `workgroups` with `resources` bound in order (binding 0 first).
    pub fn dispatch(&self, device: &wgpu::Device, encoder: &mut wgpu::CommandEncoder, resources: &[wgpu::BindingResource], workgroups: [u32; 3]) {
        let entries: Vec<wgpu::BindGroupEntry> = (0..).zip(resources).map(|(binding, resource)| wgpu::BindGroupEntry { binding, resource: resource.clone() }).collect();
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(self.name), layout: &self.layout, entries: &entries });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(self.name), timestamp_writes: None });
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        let [x, y, z] = workgroups;
        pass.dispatch_workgroups(x, y, z);
    }
}
