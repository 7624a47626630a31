//! [`GpuCapabilities`]: what this player's GPU offers, read once from the renderer, so that the
//! main world's scheduling never touches a wgpu object.

use bevy::prelude::*;
use bevy::render::renderer::{RenderAdapterInfo, RenderDevice};

/// What the render device offers, as plain data for the scheduler and the peer handshake.
#[derive(Resource, Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuCapabilities {
    /// Adapter name (e.g. "llvmpipe", "NVIDIA H100"), or "unknown" without a renderer.
    pub adapter: String,
    /// Graphics backend (e.g. "Vulkan"), or "unknown".
    pub backend: String,
    /// The device has `SHADER_F16`.
    pub shader_f16: bool,
    /// Subgroup sizes (min, max), or (0, 0) without subgroup support.
    pub subgroup_sizes: (u32, u32),
    /// `max_storage_buffer_binding_size` (0 without a renderer).
    pub max_storage_binding: u64,
}

/// Describes the render device once the renderer is up (at `Startup`, after the render plugin
/// has put it into the main world).
pub(super) fn describe_gpu(mut commands: Commands, device: Option<Res<RenderDevice>>, adapter: Option<Res<RenderAdapterInfo>>) {
    let (adapter_name, backend) = adapter.as_deref().map_or(("unknown".to_string(), "unknown".to_string()), |a| (a.name.clone(), format!("{:?}", a.backend)));
    let features = device.as_deref().map(|d| d.features()).unwrap_or_default();
    let subgroup_sizes = match adapter.as_deref() {
        Some(a) if features.contains(wgpu::Features::SUBGROUP) => (a.subgroup_min_size, a.subgroup_max_size),
        _ => (0, 0),
    };
    commands.insert_resource(GpuCapabilities {
        adapter: adapter_name,
        backend,
        shader_f16: features.contains(wgpu::Features::SHADER_F16),
        subgroup_sizes,
        max_storage_binding: device.as_deref().map_or(0, |d| d.limits().max_storage_buffer_binding_size),
    });
}
