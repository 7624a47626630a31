//! The kernel library: every shader family in `shaders/` compiled once per device, with the
//! options that choose the variants (subgroup operations, storage precision, naga's runtime
//! checks), and the pipelines and bind group layouts blocks dispatch with.
//!
//! Kernels are raw wgpu compute pipelines, not Bevy's `PipelineCache` with `embedded_asset!`
//! shaders, for three reasons. The engine runs without Bevy (tools, tests, benchmarks use it on
//! a bare `wgpu::Device`). Its modules are compiled with `create_shader_module_trusted`, which
//! turns naga's loop guards and (on Vulkan) bounds checks off: a quarter of MobileNetV2's GPU
//! time on an H100 (BENCHMARKS.md); `PipelineCache` offers no such switch. And a pipeline must be
//! ready in the frame its first request is recorded, where `PipelineCache` compiles
//! asynchronously over later frames.

use std::collections::HashMap;
use std::task::Poll;

use super::device_check::{DeviceCheck, DeviceRefusal};
use super::kernel::Kernel;
use super::precision::StoragePrecision;

/// Prepended to every family: the invocation index and the activations.
pub(super) const COMMON: &str = include_str!("../../shaders/common.wgsl");

/// The conversions at a half-precision block's edges.
pub(super) const CAST: &str = include_str!("../../shaders/cast.wgsl");

/// Which kernels a [`KernelLibrary`] builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOptions {
    /// Use the subgroup variants of the kernels that have them, where the device offers
    /// subgroup operations (default true).
    pub subgroups: bool,
    /// The element type of stored tensors (default f32). F16 needs the device's `SHADER_F16`
    /// feature; without it the library stores f32 and logs a warning.
    pub storage: StoragePrecision,
    /// Keep the counter naga adds to every loop so that a shader stuck in an endless loop
    /// cannot hang the GPU (default false: the counters cost a quarter of the GPU time of
    /// MobileNetV2 on an H100). Every loop in `shaders/` ends: its bounds come from the
    /// dispatch's parameters, which the block compiler derives from tensor shapes.
    pub loop_guards: bool,
    /// Keep naga's bounds checks on Vulkan too (default false). Vulkan's robust buffer access,
    /// which every Vulkan device has and wgpu turns on, keeps each buffer access inside its
    /// binding; the indices into workgroup and local arrays in `shaders/` are in range by
    /// construction (invocation indices, constants and loop counters below the array's
    /// length). Other backends always keep the checks.
    pub bounds_checks: bool,
    /// Use the kernels that share work through workgroup memory and barriers: tiled 1x1
    /// convolutions, dot products split across a workgroup (default true). Off, 1x1
    /// convolutions take 4 channels by 4 columns per invocation and dot products one
    /// invocation each. Always off on SwiftShader (Chrome's software WebGPU), which runs
    /// barriers as coroutine switches: there the tiled kernels made the shipped model 12 times
    /// as slow (BENCHMARKS.md, "In the browser").
    pub workgroup_tiles: bool,
}

impl Default for KernelOptions {
    fn default() -> Self {
        Self { subgroups: true, storage: StoragePrecision::F32, loop_guards: false, bounds_checks: false, workgroup_tiles: true }
    }
}

/// A compute pipeline and the layout of its bind group.
pub(super) type PipelineAndLayout = (wgpu::ComputePipeline, wgpu::BindGroupLayout);

/// The two conversions at a half-precision block's edges.
pub(super) struct CastPipelines {
    /// f32 input into stored values.
    pub(super) into_storage: PipelineAndLayout,
    /// Stored values into the f32 output.
    pub(super) out_of_storage: PipelineAndLayout,
}

/// Every kernel's compute pipeline and bind group layout, built once per device.
pub struct KernelLibrary {
    pub(super) pipelines: HashMap<Kernel, PipelineAndLayout>,
    subgroups: bool,
    pub(super) storage: StoragePrecision,
    /// Present when tensors are stored in half precision.
    pub(super) casts: Option<CastPipelines>,
    /// Whether blocks use the kernels with workgroup tiles.
    workgroup_tiles: bool,
    /// Whether the device accepted each kernel's shader and pipeline (and the casts').
    checks: HashMap<Kernel, DeviceCheck>,
    cast_check: DeviceCheck,
}

impl KernelLibrary {
    /// Compiles every shader family and builds the pipelines with the default options: f32
    /// storage, and the subgroup variants of the kernels that have them where the device offers
    /// subgroup operations.
    pub fn new(device: &wgpu::Device) -> Self {
        Self::with_options(device, KernelOptions::default())
    }

    /// [`Self::new`] with the given options, as far as the device offers what they ask for.
    pub fn with_options(device: &wgpu::Device, options: KernelOptions) -> Self {
        Self::build(device, options, None)
    }

    /// [`Self::with_options`] with the shader of `family` made invalid, so that the device
    /// refuses its kernels (to test that refusals fail requests; feature `fault-injection`).
    #[cfg(feature = "fault-injection")]
    pub fn with_broken_family(device: &wgpu::Device, options: KernelOptions, family: super::KernelFamily) -> Self {
        Self::build(device, options, Some(family))
    }

    fn build(device: &wgpu::Device, options: KernelOptions, broken: Option<super::KernelFamily>) -> Self {
        let features = device.features();
        let subgroups = options.subgroups && features.contains(wgpu::Features::SUBGROUP);
        let storage = match options.storage {
            StoragePrecision::F16 if !features.contains(wgpu::Features::SHADER_F16) => {
                bevy::log::warn!("the device does not offer SHADER_F16: tensors are stored as f32");
                StoragePrecision::F32
            }
            storage => storage,
        };
        let checks = wgpu::ShaderRuntimeChecks {
            bounds_checks: options.bounds_checks || device.adapter_info().backend != wgpu::Backend::Vulkan,
            force_loop_bounding: options.loop_guards,
            ..wgpu::ShaderRuntimeChecks::checked()
        };
        let prelude = storage.wgsl_prelude();
        let mut modules = HashMap::new();
        let mut pipelines = HashMap::new();
        let mut device_checks = HashMap::new();
        for kernel in Kernel::ALL {
            let (family, entry) = kernel.entry();
            let entry = kernel.subgroup_entry().filter(|_| subgroups).unwrap_or(entry);
            // A shader the device refuses fails the check of the first kernel built from it,
            // and each later kernel's pipeline on it.
            let what = format!("the '{entry}' kernel ({} shaders)", family.label());
            let (pipeline, check) = DeviceCheck::around(device, what, || {
                let module = modules.entry(family).or_insert_with(|| {
                    let variants = if subgroups { family.subgroup_source() } else { "" };
                    let mut source = format!("{prelude}{COMMON}\n{}\n{variants}", family.source());
                    if broken == Some(family) {
                        source.push_str("\nthis is not WGSL;\n");
                    }
                    shader_module(device, checks, family.label(), source)
                });
                build_pipeline(device, module, entry, kernel.input_bindings() as u32)
            });
            pipelines.insert(kernel, pipeline);
            device_checks.insert(kernel, check);
        }
        let (casts, cast_check) = if storage == StoragePrecision::F32 {
            (None, DeviceCheck::passed("the casts"))
        } else {
            let (casts, check) = DeviceCheck::around(device, "the half-precision casts (cast shader)", || {
                let cast = |label: &str, from: &str, to: &str| {
                    let source = format!("{prelude}alias cast_from = {from};\nalias cast_to = {to};\n{COMMON}\n{CAST}");
                    build_pipeline(device, &shader_module(device, checks, label, source), "convert", 1)
                };
                CastPipelines { into_storage: cast("cast into storage", "f32", "elem"), out_of_storage: cast("cast out of storage", "elem", "f32") }
            });
            (Some(casts), check)
        };
        let workgroup_tiles = options.workgroup_tiles && !device.adapter_info().name.contains("SwiftShader");
        Self { pipelines, subgroups, storage, casts, workgroup_tiles, checks: device_checks, cast_check }
    }

    /// Whether the device accepted every one of `kernels` (and the casts, where tensors are
    /// stored in half precision): pending until it has said (in a browser, after the page's
    /// next task), then the first refusal, if any.
    pub fn check(&self, kernels: impl IntoIterator<Item = Kernel>) -> Poll<Result<(), DeviceRefusal>> {
        let mut pending = false;
        for check in kernels.into_iter().filter_map(|k| self.checks.get(&k)).chain([&self.cast_check]) {
            match check.poll() {
                Poll::Ready(Err(refusal)) => return Poll::Ready(Err(refusal)),
                Poll::Ready(Ok(())) => {}
                Poll::Pending => pending = true,
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(Ok(())) }
    }

    /// Whether the kernels that have subgroup variants use them.
    pub fn uses_subgroups(&self) -> bool {
        self.subgroups
    }

    /// Whether blocks compiled for this library use the kernels with workgroup tiles.
    pub fn workgroup_tiles(&self) -> bool {
        self.workgroup_tiles
    }

    /// The element type the kernels store tensors as.
    pub fn storage(&self) -> StoragePrecision {
        self.storage
    }
}

fn shader_module(device: &wgpu::Device, checks: wgpu::ShaderRuntimeChecks, label: &str, source: String) -> wgpu::ShaderModule {
    let descriptor = wgpu::ShaderModuleDescriptor { label: Some(label), source: wgpu::ShaderSource::Wgsl(source.into()) };
    // SAFETY: the shaders are ours. Every loop in them ends, and where bounds checks are off
    // their array indices are in range or the driver keeps buffer accesses in bounds (see
    // `KernelOptions`).
    unsafe { device.create_shader_module_trusted(descriptor, checks) }
}

/// The pipeline of `entry`, whose bindings are the parameters, `inputs` read-only buffers and
/// the output.
fn build_pipeline(device: &wgpu::Device, module: &wgpu::ShaderModule, entry: &str, inputs: u32) -> PipelineAndLayout {
    let entries: Vec<_> = (0..=inputs).map(|b| storage_entry(b, true)).chain([storage_entry(inputs + 1, false)]).collect();
    compute_pipeline(device, module, entry, &entries)
}

/// A compute shader's storage buffer binding.
pub(super) fn storage_entry(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

/// The pipeline of `entry` in `module`, with one bind group of `entries`, and that group's layout.
pub(super) fn compute_pipeline(device: &wgpu::Device, module: &wgpu::ShaderModule, entry: &str, entries: &[wgpu::BindGroupLayoutEntry]) -> PipelineAndLayout {
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(entry), entries });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(entry),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(entry),
        layout: Some(&pipeline_layout),
        module,
        entry_point: Some(entry),
        compilation_options: Default::default(),
        cache: None,
    });
    (pipeline, layout)
}
