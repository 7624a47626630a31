//! GPU objects for compiled blocks: the pipeline library, resident weights, pooled activation
//! buffers and pre-built bind groups, and the encoding of one request into a command encoder.

use std::collections::HashMap;
use std::sync::Arc;

use thiserror::Error;
use wgpu::util::DeviceExt;

use super::compile::{compile, CompileError, Kernel, Operand, Program};
use crate::model::ir::Graph;
use crate::tensor::Tensor;

const COMMON: &str = include_str!("../../shaders/common.wgsl");

fn family_source(family: &str) -> &'static str {
    match family {
        "conv" => include_str!("../../shaders/conv.wgsl"),
        "elementwise" => include_str!("../../shaders/elementwise.wgsl"),
        "pool" => include_str!("../../shaders/pool.wgsl"),
        "matmul" => include_str!("../../shaders/matmul.wgsl"),
        "layout" => include_str!("../../shaders/layout.wgsl"),
        other => unreachable!("no shader family '{other}'"),
    }
}

/// The subgroup variants of a family's kernels, appended to it where the device offers them.
fn family_subgroup_source(family: &str) -> &'static str {
    match family {
        "conv" => include_str!("../../shaders/conv_subgroup.wgsl"),
        "matmul" => include_str!("../../shaders/matmul_subgroup.wgsl"),
        _ => "",
    }
}

/// Why a block could not be prepared or run on the GPU.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum GpuError {
    /// The graph could not be compiled for this input.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// A buffer would exceed the adapter's storage binding limit.
    #[error("a {bytes}-byte buffer exceeds this adapter's storage binding limit of {limit} bytes")]
    BufferTooLarge {
        /// Bytes needed.
        bytes: u64,
        /// The adapter's limit.
        limit: u64,
    },
    /// Mapping the result for reading failed.
    #[error("reading the result back failed: {0}")]
    Readback(String),
}

/// Every kernel's compute pipeline and bind group layout, built once per device.
pub struct KernelLibrary {
    pipelines: HashMap<Kernel, (wgpu::ComputePipeline, wgpu::BindGroupLayout)>,
    subgroups: bool,
}

impl KernelLibrary {
    /// Compiles every shader family and builds the pipelines, with the subgroup variants of
    /// the kernels that have them where the device offers subgroup operations.
    pub fn new(device: &wgpu::Device) -> Self {
        Self::with_subgroups(device, device.features().contains(wgpu::Features::SUBGROUP))
    }

    /// [`Self::new`], choosing whether to use subgroup variants (`subgroups` needs the device's
    /// `SUBGROUP` feature; without it the variants are not used).
    pub fn with_subgroups(device: &wgpu::Device, subgroups: bool) -> Self {
        let subgroups = subgroups && device.features().contains(wgpu::Features::SUBGROUP);
        let mut modules = HashMap::new();
        let mut pipelines = HashMap::new();
        for kernel in Kernel::ALL {
            let (family, entry) = kernel.entry();
            let entry = kernel.subgroup_entry().filter(|_| subgroups).unwrap_or(entry);
            let module = modules.entry(family).or_insert_with(|| {
                let variants = if subgroups { family_subgroup_source(family) } else { "" };
                device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(family),
                    source: wgpu::ShaderSource::Wgsl(format!("{COMMON}\n{}\n{variants}", family_source(family)).into()),
                })
            });
            let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            };
            let inputs = kernel.input_bindings() as u32;
            let entries: Vec<_> = (0..=inputs).map(|b| storage(b, true)).chain([storage(inputs + 1, false)]).collect();
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(entry), entries: &entries });
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
            pipelines.insert(kernel, (pipeline, layout));
        }
        Self { pipelines, subgroups }
    }

    /// Whether the kernels that have subgroup variants use them.
    pub fn uses_subgroups(&self) -> bool {
        self.subgroups
    }
}

/// A model's weights, uploaded once and kept resident for every block compiled from it.
pub struct ResidentWeights {
    buffers: HashMap<String, wgpu::Buffer>,
}

impl ResidentWeights {
    /// Uploads every initializer of `graph`.
    pub fn upload(device: &wgpu::Device, graph: &Graph) -> Result<Self, GpuError> {
        let limit = device.limits().max_storage_buffer_binding_size;
        let mut buffers = HashMap::new();
        for (name, tensor) in &graph.initializers {
            let bytes = (tensor.len().max(1) * 4) as u64;
            if bytes > limit {
                return Err(GpuError::BufferTooLarge { bytes, limit });
            }
            let contents: &[u8] = if tensor.is_empty() { &[0; 4] } else { bytemuck::cast_slice(tensor.data()) };
            let buffer = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(name),
                contents,
                usage: wgpu::BufferUsages::STORAGE,
            });
            buffers.insert(name.clone(), buffer);
        }
        Ok(Self { buffers })
    }
}

/// A block ready to run on one input shape. When an activation of the whole batch would exceed
/// the adapter's storage binding limit, the batch is split: a program compiled for a smaller
/// batch runs once per slice (and one more for the remainder), all in the same submission,
/// reading slices of one input buffer and writing slices of one readback buffer.
pub struct GpuBlock {
    full: Part,
    /// Batch items per run of `full`, and how many runs.
    slice: usize,
    runs: usize,
    rest: Option<Part>,
    input_shape: Vec<usize>,
    output_shape: Vec<usize>,
}

impl GpuBlock {
    /// Compiles `graph` for `input_shape`, splitting the batch if its activations do not fit.
    pub fn new(
        device: &wgpu::Device,
        library: &KernelLibrary,
        weights: Arc<ResidentWeights>,
        graph: &Graph,
        input_shape: &[usize],
    ) -> Result<Self, GpuError> {
        let batch = input_shape.first().copied().unwrap_or(1);
        let with_batch = |n: usize| -> Vec<usize> { std::iter::once(n).chain(input_shape.iter().skip(1).copied()).collect() };
        let mut slice = batch;
        let full = loop {
            match Part::new(device, library, weights.clone(), graph, &with_batch(slice)) {
                Ok(part) => break part,
                Err(GpuError::BufferTooLarge { bytes, limit }) if slice > 1 && batch_major(graph, &with_batch(slice.div_ceil(2))) => {
                    bevy::log::debug!("a {bytes}-byte buffer exceeds the {limit}-byte binding limit at batch {slice}; splitting");
                    slice = slice.div_ceil(2);
                }
                Err(error) => return Err(error),
            }
        };
        let (runs, remainder) = (batch / slice, batch % slice);
        let rest = (remainder > 0).then(|| Part::new(device, library, weights, graph, &with_batch(remainder))).transpose()?;
        let mut output_shape = full.program.output_shape.clone();
        if slice != batch {
            output_shape[0] = batch;
        }
        Ok(Self { full, slice, runs, rest, input_shape: input_shape.to_vec(), output_shape })
    }

    /// The output's shape.
    pub fn output_shape(&self) -> &[usize] {
        &self.output_shape
    }

    /// Batch items per run, when the batch had to be split (`None` when it runs whole).
    pub fn batch_slice(&self) -> Option<usize> {
        (self.runs > 1 || self.rest.is_some()).then_some(self.slice)
    }

    /// Bytes of the output.
    pub fn output_bytes(&self) -> u64 {
        (self.output_shape.iter().product::<usize>() * 4) as u64
    }

    /// A buffer holding `input`, to be copied into the block's input slot by [`Self::encode`].
    pub fn upload_input(&self, device: &wgpu::Device, input: &Tensor) -> wgpu::Buffer {
        let upload = self.create_upload(device);
        Self::fill_upload(&upload, input);
        upload
    }

    /// A buffer for this block's input, mapped for writing: fill it with [`Self::fill_upload`].
    /// Once a request's copy has run it can be mapped for writing again and reused.
    pub fn create_upload(&self, device: &wgpu::Device) -> wgpu::Buffer {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("request input"),
            size: self.input_bytes(),
            // Mappable, so the values are written straight into it: without MAP_WRITE wgpu
            // would zero and fill a second, staging buffer and copy it over on the GPU.
            usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: true,
        })
    }

    /// Writes `input` into `upload` (an upload buffer of this block, mapped for writing) and
    /// unmaps it, ready for [`Self::encode`].
    pub fn fill_upload(upload: &wgpu::Buffer, input: &Tensor) {
        copy_in_parallel(upload, bytemuck::cast_slice(input.data()));
        upload.unmap();
    }

    /// Bytes of the input.
    pub fn input_bytes(&self) -> u64 {
        (self.input_shape.iter().product::<usize>() * 4) as u64
    }

    /// A mappable buffer that receives the output.
    pub fn create_readback(&self, device: &wgpu::Device) -> wgpu::Buffer {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("request readback"),
            size: self.output_bytes(),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Records one request: per batch slice an input copy, one compute pass with every
    /// dispatch, and an output copy. Requests recorded one after another in the same encoder
    /// run in order on the GPU.
    pub fn encode(&self, library: &KernelLibrary, encoder: &mut wgpu::CommandEncoder, input: &wgpu::Buffer, readback: &wgpu::Buffer) {
        self.encode_with_timestamps(library, encoder, input, readback, None);
    }

    /// Compute passes per request (one per batch slice).
    pub fn passes(&self) -> u32 {
        (self.runs + self.rest.is_some() as usize) as u32
    }

    /// [`Self::encode`], optionally writing a begin and an end timestamp around each compute
    /// pass into `queries` (indices 2i and 2i+1 for pass i; see [`Self::passes`]).
    pub(super) fn encode_with_timestamps(
        &self,
        library: &KernelLibrary,
        encoder: &mut wgpu::CommandEncoder,
        input: &wgpu::Buffer,
        readback: &wgpu::Buffer,
        queries: Option<&wgpu::QuerySet>,
    ) {
        let (mut input_offset, mut output_offset) = (0, 0);
        let parts = std::iter::repeat_n(&self.full, self.runs).chain(self.rest.as_ref());
        for (pass, part) in parts.enumerate() {
            let timestamps = queries.map(|query_set| wgpu::ComputePassTimestampWrites {
                query_set,
                beginning_of_pass_write_index: Some(2 * pass as u32),
                end_of_pass_write_index: Some(2 * pass as u32 + 1),
            });
            part.encode(library, encoder, input, input_offset, readback, output_offset, timestamps);
            input_offset += part.input_bytes();
            output_offset += part.output_bytes();
        }
    }

    /// The dispatches of one run of the block (the first batch slice when it is split).
    pub fn program(&self) -> &Program {
        &self.full.program
    }
}

/// Bytes below which one thread copies a whole input: spawning threads costs more than it saves.
const PARALLEL_COPY_CHUNK: usize = 4 << 20;

/// Copies `source` into `target` (mapped for writing, as long as `source`), in chunks on several
/// threads when it is large: one thread's stores into mapped memory fall well short of what the
/// memory takes.
fn copy_in_parallel(target: &wgpu::Buffer, source: &[u8]) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
        // Mapped ranges start at multiples of 8 bytes; chunks are multiples of 4 MiB.
        let chunk = source.len().div_ceil(threads).next_multiple_of(PARALLEL_COPY_CHUNK);
        if source.len() > chunk {
            std::thread::scope(|scope| {
                for (index, from) in source.chunks(chunk).enumerate() {
                    let start = (index * chunk) as u64;
                    let mut to = target.slice(start..start + from.len() as u64).get_mapped_range_mut();
                    scope.spawn(move || to.copy_from_slice(from));
                }
            });
            return;
        }
    }
    target.slice(..).get_mapped_range_mut().copy_from_slice(source);
}

/// Whether every activation of `graph` for `input_shape` keeps the batch as its first
/// dimension, so that batch slices can run independently.
fn batch_major(graph: &Graph, input_shape: &[usize]) -> bool {
    let Ok(shapes) = crate::model::shape::infer_shapes(graph, input_shape) else { return false };
    graph.nodes.iter().all(|n| shapes[&n.output].first() == input_shape.first())
}

/// One compiled program for one input shape: its dispatch list with pooled activation buffers
/// and bind groups.
struct Part {
    program: Program,
    slots: Vec<wgpu::Buffer>,
    bind_groups: Vec<wgpu::BindGroup>,
    _weights: Arc<ResidentWeights>,
}

impl Part {
    /// Compiles `graph` for `input_shape` and creates its buffers and bind groups.
    fn new(
        device: &wgpu::Device,
        library: &KernelLibrary,
        weights: Arc<ResidentWeights>,
        graph: &Graph,
        input_shape: &[usize],
    ) -> Result<Self, GpuError> {
        let program = compile(graph, input_shape)?;
        let limit = device.limits().max_storage_buffer_binding_size;
        let slots = program
            .slot_sizes
            .iter()
            .map(|&size| {
                let bytes = (size * 4) as u64;
                if bytes > limit {
                    return Err(GpuError::BufferTooLarge { bytes, limit });
                }
                Ok(device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("activation slot"),
                    size: bytes,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let unused = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("unused binding"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let mut bind_groups = Vec::with_capacity(program.dispatches.len());
        for dispatch in &program.dispatches {
            let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("dispatch params"),
                contents: bytemuck::cast_slice(&dispatch.params),
                usage: wgpu::BufferUsages::STORAGE,
            });
            let mut buffers: Vec<&wgpu::Buffer> = vec![&params];
            for operand in &dispatch.inputs {
                buffers.push(match operand {
                    Operand::Slot(s) => &slots[*s],
                    Operand::Constant(name) => &weights.buffers[name],
                    Operand::Unused => &unused,
                });
            }
            buffers.push(&slots[dispatch.output]);
            let entries: Vec<_> = buffers
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() })
                .collect();
            bind_groups.push(device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("dispatch"),
                layout: &library.pipelines[&dispatch.kernel].1,
                entries: &entries,
            }));
        }
        Ok(Self { program, slots, bind_groups, _weights: weights })
    }

    fn input_bytes(&self) -> u64 {
        (self.program.input_shape.iter().product::<usize>() * 4) as u64
    }

    fn output_bytes(&self) -> u64 {
        (self.program.output_shape.iter().product::<usize>() * 4) as u64
    }

    /// Records the input copy (from `input_offset`), one compute pass with every dispatch, and
    /// the output copy (to `output_offset`).
    #[allow(clippy::too_many_arguments)]
    fn encode(
        &self,
        library: &KernelLibrary,
        encoder: &mut wgpu::CommandEncoder,
        input: &wgpu::Buffer,
        input_offset: u64,
        readback: &wgpu::Buffer,
        output_offset: u64,
        timestamp_writes: Option<wgpu::ComputePassTimestampWrites>,
    ) {
        encoder.copy_buffer_to_buffer(input, input_offset, &self.slots[self.program.input_slot], 0, self.input_bytes());
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("inference block"), timestamp_writes });
            for index in 0..self.bind_groups.len() {
                self.dispatch(library, &mut pass, index);
            }
        }
        encoder.copy_buffer_to_buffer(&self.slots[self.program.output_slot], 0, readback, output_offset, self.output_bytes());
    }

    /// Records dispatch `index` of the program into `pass`.
    fn dispatch(&self, library: &KernelLibrary, pass: &mut wgpu::ComputePass, index: usize) {
        pass.set_pipeline(&library.pipelines[&self.program.dispatches[index].kernel].0);
        pass.set_bind_group(0, &self.bind_groups[index], &[]);
        let [x, y, z] = self.program.dispatches[index].workgroups;
        pass.dispatch_workgroups(x, y, z);
    }
}

impl GpuBlock {
    /// Records one run of the first batch slice with each dispatch in its own compute pass,
    /// writing timestamps 2i and 2i+1 around dispatch i: for per-kernel profiles.
    pub(super) fn encode_profiled(&self, library: &KernelLibrary, encoder: &mut wgpu::CommandEncoder, input: &wgpu::Buffer, queries: &wgpu::QuerySet) {
        let part = &self.full;
        encoder.copy_buffer_to_buffer(input, 0, &part.slots[part.program.input_slot], 0, part.input_bytes());
        for index in 0..part.bind_groups.len() {
            let timestamp_writes = wgpu::ComputePassTimestampWrites {
                query_set: queries,
                beginning_of_pass_write_index: Some(2 * index as u32),
                end_of_pass_write_index: Some(2 * index as u32 + 1),
            };
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("profiled dispatch"), timestamp_writes: Some(timestamp_writes) });
            part.dispatch(library, &mut pass, index);
        }
    }
}

/// Reads a mapped readback buffer into a tensor and unmaps it.
pub fn read_mapped(buffer: &wgpu::Buffer, shape: Vec<usize>) -> Tensor {
    let data: Vec<f32> = bytemuck::cast_slice(&buffer.slice(..).get_mapped_range()).to_vec();
    buffer.unmap();
    Tensor::new(shape, data).expect("readback is sized from the output shape")
}

/// Runs a block to completion, blocking the calling thread: for tests, tools and benchmarks
/// that own a device. Inside a Bevy app the render-world systems run blocks without blocking.
pub fn run_blocking(device: &wgpu::Device, queue: &wgpu::Queue, library: &KernelLibrary, block: &GpuBlock, input: &Tensor) -> Result<Tensor, GpuError> {
    let upload = block.upload_input(device, input);
    let readback = block.create_readback(device);
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("run_blocking") });
    block.encode(library, &mut encoder, &upload, &readback);
    queue.submit([encoder.finish()]);
    map_blocking(device, &readback).map_err(GpuError::Readback)?;
    Ok(read_mapped(&readback, block.output_shape().to_vec()))
}

/// Maps `buffer` for reading, blocking the calling thread until the GPU work before it is done.
pub(super) fn map_blocking(device: &wgpu::Device, buffer: &wgpu::Buffer) -> Result<(), String> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    buffer.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| e.to_string())?;
    rx.recv().map_err(|e| e.to_string())?.map_err(|e| e.to_string())
}

/// Opens the first adapter wgpu finds (for tests and tools outside a Bevy app).
pub fn request_device() -> Result<(wgpu::Device, wgpu::Queue, wgpu::AdapterInfo), String> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
    let adapter = bevy::tasks::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).map_err(|e| e.to_string())?;
    let info = adapter.get_info();
    let (device, queue) = bevy::tasks::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("bevy_p2p_inference"),
        required_limits: adapter.limits(),
        // Timestamps for `gpu_time` and `profile_dispatches`, and subgroup operations for the
        // kernels that have variants using them, where offered (a Bevy app's device has every
        // feature its adapter offers).
        required_features: adapter.features() & (wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SUBGROUP),
        ..Default::default()
    }))
    .map_err(|e| e.to_string())?;
    Ok((device, queue, info))
}
