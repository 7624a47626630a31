//! Shared helpers: one GPU device per test binary, fixtures, tolerances.

use std::sync::{Arc, Mutex, OnceLock};

use bevy_p2p_inference::gpu::{request_device, run_blocking, GpuBlock, KernelLibrary, KernelOptions, ResidentWeights, StoragePrecision};
use bevy_p2p_inference::model::ir::Graph;
use bevy_p2p_inference::Tensor;

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    /// With the subgroup variants of the kernels that have them, where the device offers them.
    pub library: KernelLibrary,
    /// Without them.
    pub library_without_subgroups: KernelLibrary,
    /// Storing tensors as f16 where the device offers `SHADER_F16` (f32 where it does not).
    pub library_with_f16_storage: KernelLibrary,
    /// Without the kernels that share work through workgroup memory (as on SwiftShader).
    pub library_without_workgroup_tiles: KernelLibrary,
}

pub fn gpu() -> &'static Mutex<Gpu> {
    static GPU: OnceLock<Mutex<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| {
        let (device, queue, info) = request_device().expect("a wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
        let library = KernelLibrary::new(&device);
        let library_without_subgroups = KernelLibrary::with_options(&device, KernelOptions { subgroups: false, ..Default::default() });
        let library_without_workgroup_tiles = KernelLibrary::with_options(&device, KernelOptions { workgroup_tiles: false, ..Default::default() });
        let library_with_f16_storage = KernelLibrary::with_options(&device, KernelOptions { storage: StoragePrecision::F16, ..Default::default() });
        eprintln!(
            "adapter: {} ({:?}), subgroup variants: {}, half-precision storage: {}",
            info.name,
            info.backend,
            library.uses_subgroups(),
            library_with_f16_storage.storage() == StoragePrecision::F16
        );
        Mutex::new(Gpu { device, queue, library, library_without_subgroups, library_with_f16_storage, library_without_workgroup_tiles })
    })
}

/// Runs `graph` on the GPU, blocking until the result is read back.
pub fn run_gpu(graph: &Graph, input: &Tensor) -> Tensor {
    run_gpu_with(graph, input, |gpu| &gpu.library)
}

/// [`run_gpu`] with the library `choose` picks.
pub fn run_gpu_with(graph: &Graph, input: &Tensor, choose: impl Fn(&Gpu) -> &KernelLibrary) -> Tensor {
    let gpu = gpu().lock().unwrap();
    let library = choose(&gpu);
    let weights = Arc::new(ResidentWeights::upload(&gpu.device, library, graph).expect("weights fit"));
    let block = GpuBlock::new(&gpu.device, library, weights, graph, input.shape()).expect("compiles");
    run_blocking(&gpu.device, &gpu.queue, library, &block, input).expect("runs")
}

/// A device of the default adapter whose storage bindings hold at most 1 MiB, with `features`,
/// for tests of batch splitting (`None` where the adapter lacks the features).
pub fn device_with_1_mib_bindings(features: wgpu::Features) -> Option<(wgpu::Device, wgpu::Queue)> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
    let adapter = bevy::tasks::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).expect("an adapter");
    if !adapter.features().contains(features) {
        return None;
    }
    let limits = wgpu::Limits { max_storage_buffer_binding_size: 1 << 20, ..adapter.limits() };
    let descriptor = wgpu::DeviceDescriptor { required_limits: limits, required_features: features, ..Default::default() };
    Some(bevy::tasks::block_on(adapter.request_device(&descriptor)).expect("a device"))
}

pub fn fixture(name: &str) -> Tensor {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let npy = npyz::NpyFile::new(&bytes[..]).expect("npy");
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let data: Vec<f32> = match npy.dtype() {
        npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Int => {
            npy.into_vec::<i64>().expect("i64").into_iter().map(|v| v as f32).collect()
        }
        _ => npy.into_vec::<f32>().expect("f32"),
    };
    Tensor::new(shape, data).expect("consistent npy")
}

pub fn model_bytes(path: &str) -> Vec<u8> {
    std::fs::read(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).expect("model file")
}

/// Largest element-wise difference relative to the reference's largest magnitude.
pub fn relative_error(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.shape(), want.shape(), "shapes differ");
    let scale = want.data().iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    got.data().iter().zip(want.data()).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

pub fn argmax_rows(t: &Tensor) -> Vec<usize> {
    let classes = *t.shape().last().unwrap();
    t.data()
        .chunks(classes)
        .map(|row| row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0)
        .collect()
}

/// A headless Bevy app with the inference plugin, ready to update.
pub fn app() -> bevy::prelude::App {
    app_with(bevy_p2p_inference::P2pInferencePlugin::default())
}

/// [`app`] with this configuration of the plugin.
pub fn app_with(plugin: bevy_p2p_inference::P2pInferencePlugin) -> bevy::prelude::App {
    let mut app = bevy::prelude::App::new();
    app.add_plugins((bevy_p2p_inference::headless_plugins(), plugin));
    app.finish();
    app.cleanup();
    app
}

/// Bevy's own readback of `image`'s texture (four bytes a texel, `width` texels a row), once the
/// frame's commands have run: the rows without their copy padding.
pub fn read_texture(app: &mut bevy::prelude::App, image: bevy::prelude::Handle<bevy::image::Image>, width: usize) -> Vec<u8> {
    let padded = read_back(app, bevy::render::gpu_readback::Readback::texture(image));
    let row = (width * 4).next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT as usize);
    padded.chunks(row).flat_map(|r| r[..width * 4].to_vec()).collect()
}

/// Bevy's own readback of `buffer`, once the frame's commands have run.
pub fn read_buffer(app: &mut bevy::prelude::App, buffer: bevy::prelude::Handle<bevy::render::storage::ShaderBuffer>) -> Vec<u8> {
    read_back(app, bevy::render::gpu_readback::Readback::buffer(buffer))
}

/// The bytes Bevy reads back for `readback`.
fn read_back(app: &mut bevy::prelude::App, readback: bevy::render::gpu_readback::Readback) -> Vec<u8> {
    use bevy::prelude::*;
    use bevy::render::gpu_readback::ReadbackComplete;
    #[derive(Resource, Default)]
    struct Read(Option<Vec<u8>>);
    app.init_resource::<Read>();
    let reader = app.world_mut().spawn(readback).observe(|done: On<ReadbackComplete>, mut read: ResMut<Read>| read.0 = Some(done.data.clone())).id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let bytes = loop {
        app.update();
        if let Some(bytes) = app.world_mut().resource_mut::<Read>().0.take() {
            break bytes;
        }
        assert!(std::time::Instant::now() < deadline, "no readback");
    };
    app.world_mut().despawn(reader);
    bytes
}
