//! GPU time from timestamp queries: the time a block's compute passes take on the GPU, without
//! the submission and the wake-up around them, and a per-dispatch profile. For benchmarks and
//! tools that own a device opened with `Features::TIMESTAMP_QUERY` ([`super::request_device`]
//! asks for it where the adapter offers it).

use std::time::Duration;

use thiserror::Error;

use super::kernel::Kernel;
use super::engine::{map_blocking, read_output, GpuBlock};
use super::library::KernelLibrary;
use super::params::ClassScore;
use super::top_k::classes_of;
use crate::tensor::Tensor;

/// Why a timing could not be taken.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum TimingError {
    /// The device was opened without `Features::TIMESTAMP_QUERY`.
    #[error("the device has no timestamp queries")]
    NoTimestamps,
    /// More passes than one query set holds.
    #[error("{0} timestamps exceed a query set's {max}", max = wgpu::QUERY_SET_MAX_QUERIES)]
    TooManyQueries(u32),
    /// Waiting for or reading the timestamps failed.
    #[error("reading the timestamps failed: {0}")]
    Readback(String),
}

/// One dispatch's share of a profiled run.
#[derive(Clone, Debug, PartialEq)]
pub struct DispatchTime {
    /// The kernel it ran.
    pub kernel: Kernel,
    /// Its workgroup counts.
    pub workgroups: [u32; 3],
    /// Time between the start and the end of its pass on the GPU.
    pub time: Duration,
}

/// GPU time of one run of `block` on `input`: the sum over its compute passes (one per batch
/// slice) of end minus begin timestamp. Excludes the input upload and the output copy.
pub fn gpu_time(device: &wgpu::Device, queue: &wgpu::Queue, library: &KernelLibrary, block: &GpuBlock, input: &Tensor) -> Result<Duration, TimingError> {
    let count = 2 * block.passes();
    let ticks = with_queries(device, queue, count, |encoder, queries| {
        let upload = block.upload_input(device, input);
        let readback = block.create_readback(device);
        block.encode_with_timestamps(library, encoder, &upload, &readback, Some(queries));
    })?;
    Ok(GpuClock { nanos_per_tick: queue.get_timestamp_period() }.passes(&ticks))
}

/// Per-dispatch GPU times of one run of `block` (its first batch slice when split), each
/// dispatch in its own compute pass so that its begin and end can be stamped.
pub fn profile_dispatches(device: &wgpu::Device, queue: &wgpu::Queue, library: &KernelLibrary, block: &GpuBlock, input: &Tensor) -> Result<Vec<DispatchTime>, TimingError> {
    let dispatches = &block.program().dispatches;
    let count = 2 * dispatches.len() as u32;
    let ticks = with_queries(device, queue, count, |encoder, queries| {
        let upload = block.upload_input(device, input);
        block.encode_profiled(library, encoder, &upload, queries);
    })?;
    Ok(dispatches
        .iter()
        .zip(ticks.chunks(2))
        .map(|(d, pair)| DispatchTime { kernel: d.kernel, workgroups: d.workgroups, time: ticks_to_duration(queue, pair[1].saturating_sub(pair[0])) })
        .collect())
}

fn ticks_to_duration(queue: &wgpu::Queue, ticks: u64) -> Duration {
    GpuClock { nanos_per_tick: queue.get_timestamp_period() }.duration(ticks)
}

/// Turns a device's timestamp ticks into time; there is one only for a device with
/// `Features::TIMESTAMP_QUERY` (a Bevy app's render device has it where the adapter offers it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GpuClock {
    nanos_per_tick: f32,
}

impl GpuClock {
    /// The clock of `device`, whose queue is `queue`, if it can write timestamps.
    pub fn of(device: &wgpu::Device, queue: &wgpu::Queue) -> Option<Self> {
        device.features().contains(wgpu::Features::TIMESTAMP_QUERY).then(|| Self { nanos_per_tick: queue.get_timestamp_period() })
    }

    fn duration(&self, ticks: u64) -> Duration {
        Duration::from_nanos((ticks as f64 * self.nanos_per_tick as f64) as u64)
    }

    /// The sum of end minus begin over `ticks` taken as (begin, end) pairs.
    pub(super) fn passes(&self, ticks: &[u64]) -> Duration {
        ticks.chunks_exact(2).map(|pair| self.duration(pair[1].saturating_sub(pair[0]))).sum()
    }
}

/// The query set one request of a block writes its timestamps into, and the buffer they are
/// resolved into before [`GpuBlock::encode_timed`] copies them behind the output: for timing
/// requests inside an app, where nothing may wait for the GPU.
pub struct RequestTimestamps {
    pub(super) queries: wgpu::QuerySet,
    pub(super) resolved: wgpu::Buffer,
    pub(super) count: u32,
}

impl RequestTimestamps {
    /// Timestamps for one request of `block`, on a device with `Features::TIMESTAMP_QUERY`;
    /// `None` for a block split into more passes than a query set can stamp.
    pub fn new(device: &wgpu::Device, block: &GpuBlock) -> Option<Self> {
        let count = block.timestamps();
        if count > wgpu::QUERY_SET_MAX_QUERIES {
            return None;
        }
        let queries = device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("request timestamps"), ty: wgpu::QueryType::Timestamp, count });
        let resolved = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("resolved request timestamps"),
            size: (count as u64 * 8).next_multiple_of(wgpu::QUERY_RESOLVE_BUFFER_ALIGNMENT),
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Some(Self { queries, resolved, count })
    }
}

/// Records `record` with a fresh query set of `count` timestamps, submits, waits, and returns
/// the raw timestamps.
fn with_queries(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    count: u32,
    record: impl FnOnce(&mut wgpu::CommandEncoder, &wgpu::QuerySet),
) -> Result<Vec<u64>, TimingError> {
    if !device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
        return Err(TimingError::NoTimestamps);
    }
    if count > wgpu::QUERY_SET_MAX_QUERIES {
        return Err(TimingError::TooManyQueries(count));
    }
    let queries = device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("block timestamps"), ty: wgpu::QueryType::Timestamp, count });
    let bytes = (count as u64 * 8).next_multiple_of(wgpu::QUERY_RESOLVE_BUFFER_ALIGNMENT);
    let resolved = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("resolved timestamps"),
        size: bytes,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let readable = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("timestamps readback"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("timed block") });
    record(&mut encoder, &queries);
    encoder.resolve_query_set(&queries, 0..count, &resolved, 0);
    encoder.copy_buffer_to_buffer(&resolved, 0, &readable, 0, bytes);
    queue.submit([encoder.finish()]);
    map_blocking(device, &readable).map_err(TimingError::Readback)?;
    let ticks = bytemuck::cast_slice::<u8, u64>(&readable.slice(..).get_mapped_range())[..count as usize].to_vec();
    readable.unmap();
    Ok(ticks)
}

impl GpuBlock {
    /// [`Self::encode`], stamping the beginning and end of each compute pass into `stamps` and
    /// copying the resolved timestamps behind the output in `readback`, so that one map of it
    /// brings back both (read them with [`read_timed`]).
    pub fn encode_timed(&self, library: &KernelLibrary, encoder: &mut wgpu::CommandEncoder, input: &wgpu::Buffer, readback: &wgpu::Buffer, stamps: &RequestTimestamps) {
        self.encode_with_timestamps(library, encoder, input, readback, Some(&stamps.queries));
        encoder.resolve_query_set(&stamps.queries, 0..stamps.count, &stamps.resolved, 0);
        encoder.copy_buffer_to_buffer(&stamps.resolved, 0, readback, self.output_bytes(), 8 * stamps.count as u64);
    }
}

/// Reads a mapped readback buffer's output into a tensor and, given the clock of the device
/// that ran it, the GPU time of the request recorded with [`GpuBlock::encode_timed`] (the sum
/// over its compute passes of end minus begin); then unmaps it.
pub fn read_timed(buffer: &wgpu::Buffer, shape: Vec<usize>, clock: Option<GpuClock>) -> (Tensor, Option<Duration>) {
    let bytes = 4 * shape.iter().product::<usize>();
    read_timed_with(buffer, bytes, clock, |mapped| read_output(mapped, shape))
}

/// [`read_timed`] for a readback of `k` [`ClassScore`]s (see [`super::top_k`]) ahead of the
/// timestamps: the classes found, best first.
pub fn read_timed_scores(buffer: &wgpu::Buffer, k: u32, clock: Option<GpuClock>) -> (Vec<(usize, f32)>, Option<Duration>) {
    let bytes = k as usize * size_of::<ClassScore>();
    read_timed_with(buffer, bytes, clock, |mapped| classes_of(bytemuck::cast_slice(&mapped[..bytes])))
}

/// Decodes the first `payload` bytes of a mapped readback buffer with `decode`, and the
/// timestamps behind them with `clock`; then unmaps it.
fn read_timed_with<T>(buffer: &wgpu::Buffer, payload: usize, clock: Option<GpuClock>, decode: impl FnOnce(&[u8]) -> T) -> (T, Option<Duration>) {
    let mapped = buffer.slice(..).get_mapped_range();
    let output = decode(&mapped);
    let gpu = clock.map(|clock| {
        let ticks: Vec<u64> = mapped[payload..].chunks_exact(8).map(|t| u64::from_le_bytes(t.try_into().expect("eight bytes"))).collect();
        clock.passes(&ticks)
    });
    drop(mapped);
    buffer.unmap();
    (output, gpu)
}
