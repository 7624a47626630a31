//! GPU objects for compiled blocks: resident weights, pooled activation buffers and pre-built
//! bind groups, and the encoding of one request into a command encoder.

use std::collections::HashMap;
use std::sync::Arc;

use thiserror::Error;
use wgpu::util::DeviceExt;

use super::compile::compile_with;
use super::dispatch_grid::{grid_1d, CompileError};
use super::kernel::Kernel;
use super::program::{Operand, Program};
use super::library::{CastPipelines, KernelLibrary, PipelineAndLayout};
use super::params::CastParams;
use super::precision::StoragePrecision;
use crate::model::ir::Graph;
use crate::tensor::Tensor;

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
    /// The device refused a kernel, a buffer or a bind group the block needs.
    #[error(transparent)]
    Refused(#[from] super::device_check::DeviceRefusal),
    /// A texture could not be preprocessed into the block's input.
    #[error(transparent)]
    ImageInput(#[from] super::image_input_error::ImageInputError),
    /// The block's output could not be written into a texture.
    #[error(transparent)]
    ImageOutput(#[from] super::image_output::ImageOutputError),
    /// The block's output could not be copied into a storage buffer.
    #[error(transparent)]
    BufferOutput(#[from] super::buffer_output::BufferOutputError),
    /// Mapping the result for reading failed.
    #[error("reading the result back failed: {0}")]
    Readback(String),
    /// The weights were uploaded for another storage precision than the kernel library's.
    #[error("weights stored as {weights:?} cannot be read by kernels storing {library:?}")]
    PrecisionMismatch {
        /// The weights' precision.
        weights: StoragePrecision,
        /// The library's precision.
        library: StoragePrecision,
    },
}


/// A model's weights, uploaded once and kept resident for every block compiled from it.
pub struct ResidentWeights {
    buffers: HashMap<String, wgpu::Buffer>,
    storage: StoragePrecision,
}

impl ResidentWeights {
    /// Uploads every initializer of `graph`, stored as `library`'s kernels read them.
    pub fn upload(device: &wgpu::Device, library: &KernelLibrary, graph: &Graph) -> Result<Self, GpuError> {
        let storage = library.storage();
        let limit = device.limits().max_storage_buffer_binding_size;
        let mut buffers = HashMap::new();
        for (name, tensor) in &graph.initializers {
            fit_binding(limit, storage.buffer_bytes(tensor.len()))?;
            let buffer = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(name),
                contents: &storage.encode(tensor.data()),
                usage: wgpu::BufferUsages::STORAGE,
            });
            buffers.insert(name.clone(), buffer);
        }
        Ok(Self { buffers, storage })
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
        if weights.storage != library.storage {
            return Err(GpuError::PrecisionMismatch { weights: weights.storage, library: library.storage });
        }
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

    /// Every kernel the block dispatches.
    pub fn kernels(&self) -> std::collections::HashSet<Kernel> {
        std::iter::once(&self.full).chain(&self.rest).flat_map(|part| part.program.dispatches.iter().map(|d| d.kernel)).collect()
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

    /// A mappable buffer that receives the output, with room behind it for the request's
    /// timestamps (see [`Self::encode_timed`]).
    pub fn create_readback(&self, device: &wgpu::Device) -> wgpu::Buffer {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("request readback"),
            size: self.output_bytes() + 8 * self.timestamps() as u64,
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

    /// Timestamps per request: a begin and an end per compute pass.
    pub fn timestamps(&self) -> u32 {
        2 * self.passes()
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
#[cfg(not(target_arch = "wasm32"))]
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
    /// Present when tensors are stored in half precision.
    boundary: Option<Boundary>,
    _weights: Arc<ResidentWeights>,
}

/// The f32 edges of a part that stores tensors in half precision: the input is copied into
/// `input` and cast into the input slot, the output slot is cast into `output` and copied out.
struct Boundary {
    input: wgpu::Buffer,
    output: wgpu::Buffer,
    into_storage: CastDispatch,
    out_of_storage: CastDispatch,
}

/// One cast between an f32 buffer and a slot, ready to record.
struct CastDispatch {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
}

impl CastDispatch {
    fn new(device: &wgpu::Device, (pipeline, layout): &PipelineAndLayout, values: usize, source: &wgpu::Buffer, destination: &wgpu::Buffer) -> Self {
        let params = CastParams { values: values as u32 };
        let bind_group = dispatch_bind_group(device, layout, "cast", bytemuck::bytes_of(&params), &[source, destination]);
        Self { pipeline: pipeline.clone(), bind_group, workgroups: grid_1d(values) }
    }

    fn record(&self, pass: &mut wgpu::ComputePass) {
        record_dispatch(pass, &self.pipeline, &self.bind_group, self.workgroups);
    }
}

impl Boundary {
    fn new(device: &wgpu::Device, casts: &CastPipelines, program: &Program, slots: &[wgpu::Buffer]) -> Result<Self, GpuError> {
        let f32_buffer = |label: &str, values: usize, usage: wgpu::BufferUsages| {
            storage_buffer(device, label, StoragePrecision::F32.buffer_bytes(values), usage)
        };
        let inputs = program.input_shape.iter().product::<usize>();
        let outputs = program.output_shape.iter().product::<usize>();
        let input = f32_buffer("block input (f32)", inputs, wgpu::BufferUsages::COPY_DST)?;
        let output = f32_buffer("block output (f32)", outputs, wgpu::BufferUsages::COPY_SRC)?;
        let into_storage = CastDispatch::new(device, &casts.into_storage, inputs, &input, &slots[program.input_slot]);
        let out_of_storage = CastDispatch::new(device, &casts.out_of_storage, outputs, &slots[program.output_slot], &output);
        Ok(Self { input, output, into_storage, out_of_storage })
    }
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
        let program = compile_with(graph, input_shape, library.workgroup_tiles())?;
        let slots = program
            .slot_sizes
            .iter()
            .map(|&size| {
                let usage = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
                storage_buffer(device, "activation slot", library.storage.buffer_bytes(size), usage)
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
            let mut buffers: Vec<&wgpu::Buffer> = dispatch
                .inputs
                .iter()
                .map(|operand| match operand {
                    Operand::Slot(s) => &slots[*s],
                    Operand::Constant(name) => &weights.buffers[name],
                    Operand::Unused => &unused,
                })
                .collect();
            buffers.push(&slots[dispatch.output]);
            let layout = &library.pipelines[&dispatch.kernel].1;
            bind_groups.push(dispatch_bind_group(device, layout, "dispatch", dispatch.params.bytes(), &buffers));
        }
        let boundary = library.casts.as_ref().map(|casts| Boundary::new(device, casts, &program, &slots)).transpose()?;
        Ok(Self { program, slots, bind_groups, boundary, _weights: weights })
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
        self.copy_input(encoder, input, input_offset);
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("inference block"), timestamp_writes });
            if let Some(boundary) = &self.boundary {
                boundary.into_storage.record(&mut pass);
            }
            for index in 0..self.bind_groups.len() {
                self.dispatch(library, &mut pass, index);
            }
            if let Some(boundary) = &self.boundary {
                boundary.out_of_storage.record(&mut pass);
            }
        }
        let output = self.boundary.as_ref().map_or(&self.slots[self.program.output_slot], |b| &b.output);
        encoder.copy_buffer_to_buffer(output, 0, readback, output_offset, self.output_bytes());
    }

    /// Records the copy of the f32 input (from `input_offset`) to where the first dispatch (or
    /// the cast before it) reads it.
    fn copy_input(&self, encoder: &mut wgpu::CommandEncoder, input: &wgpu::Buffer, input_offset: u64) {
        let target = self.boundary.as_ref().map_or(&self.slots[self.program.input_slot], |b| &b.input);
        encoder.copy_buffer_to_buffer(input, input_offset, target, 0, self.input_bytes());
    }

    /// Records dispatch `index` of the program into `pass`.
    fn dispatch(&self, library: &KernelLibrary, pass: &mut wgpu::ComputePass, index: usize) {
        let dispatch = &self.program.dispatches[index];
        record_dispatch(pass, &library.pipelines[&dispatch.kernel].0, &self.bind_groups[index], dispatch.workgroups);
    }
}

/// `bytes`, or the error for a buffer larger than one storage binding may be (`limit`).
fn fit_binding(limit: u64, bytes: u64) -> Result<u64, GpuError> {
    if bytes > limit {
        return Err(GpuError::BufferTooLarge { bytes, limit });
    }
    Ok(bytes)
}

/// A storage buffer of `bytes` (with `usage` besides), if one binding may hold it.
fn storage_buffer(device: &wgpu::Device, label: &str, bytes: u64, usage: wgpu::BufferUsages) -> Result<wgpu::Buffer, GpuError> {
    let size = fit_binding(device.limits().max_storage_buffer_binding_size, bytes)?;
    Ok(device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size, usage: wgpu::BufferUsages::STORAGE | usage, mapped_at_creation: false }))
}

/// The bind group of one dispatch: a buffer holding `params` (a parameter struct's bytes) at
/// binding 0, then `buffers`.
fn dispatch_bind_group(device: &wgpu::Device, layout: &wgpu::BindGroupLayout, label: &str, params: &[u8], buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
    let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: params,
        usage: wgpu::BufferUsages::STORAGE,
    });
    let entries: Vec<_> = std::iter::once(&params)
        .chain(buffers.iter().copied())
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() })
        .collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(label), layout, entries: &entries })
}

/// Records one dispatch of `pipeline` with `bind_group` into `pass`.
fn record_dispatch(pass: &mut wgpu::ComputePass, pipeline: &wgpu::ComputePipeline, bind_group: &wgpu::BindGroup, [x, y, z]: [u32; 3]) {
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, bind_group, &[]);
    pass.dispatch_workgroups(x, y, z);
}

impl GpuBlock {
    /// Records one run of the first batch slice with each dispatch in its own compute pass,
    /// writing timestamps 2i and 2i+1 around dispatch i: for per-kernel profiles.
    pub(super) fn encode_profiled(&self, library: &KernelLibrary, encoder: &mut wgpu::CommandEncoder, input: &wgpu::Buffer, queries: &wgpu::QuerySet) {
        let part = &self.full;
        part.copy_input(encoder, input, 0);
        if let Some(boundary) = &part.boundary {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("cast into storage"), timestamp_writes: None });
            boundary.into_storage.record(&mut pass);
        }
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

/// Reads a mapped readback buffer's output into a tensor and unmaps it.
pub fn read_mapped(buffer: &wgpu::Buffer, shape: Vec<usize>) -> Tensor {
    let tensor = read_output(&buffer.slice(..).get_mapped_range(), shape);
    buffer.unmap();
    tensor
}

/// The output at the start of a mapped readback buffer's bytes.
pub(super) fn read_output(mapped: &[u8], shape: Vec<usize>) -> Tensor {
    let values: usize = shape.iter().product();
    let data: Vec<f32> = bytemuck::cast_slice(&mapped[..4 * values]).to_vec();
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
        // Timestamps for `gpu_time` and `profile_dispatches`, subgroup operations for the kernels
        // that have variants using them, and f16 for half-precision storage, where offered (a
        // Bevy app's device has every feature its adapter offers).
        required_features: adapter.features() & (wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16),
        ..Default::default()
    }))
    .map_err(|e| e.to_string())?;
    Ok((device, queue, info))
}
