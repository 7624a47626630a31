//! Submissions recorded ahead of time, so that a request's frame only fills an upload buffer and
//! hands over a finished command buffer.
//!
//! A request of a block needs an upload buffer, a readback buffer and the commands that copy the
//! one into the block's input slot, run every dispatch and copy the output into the other.
//! Recording those commands costs about 3 µs of host time per dispatch (0.18 ms for MobileNetV2
//! on the H100's host), all of it before the GPU can start. Once a request is done, its upload
//! buffer (mapped for writing again) and its readback buffer (read and unmapped) come back here,
//! and the render world records the next request's commands for them after the frame's
//! submission, off the path of any request. A block with no submission ready gets one recorded
//! for new buffers, so that the next request finds one even while the last is in flight. The
//! pool is shared with the [`super::submission_thread::SubmissionThread`], which submits what is recorded
//! here.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crossbeam_channel::{Receiver, Sender};

use super::readback::{InFlight, OutputReading, ReturnedBuffer};
use crate::gpu::{GpuBlock, GpuClock, KernelLibrary, RequestTimestamps};
use crate::job::StageJob;
use crate::tensor::Tensor;

/// A request's GPU objects for one block, recorded and ready to submit.
pub(super) struct ArmedSubmission {
    /// Mapped for writing: fill it with [`GpuBlock::fill_upload`] before submitting.
    pub upload: wgpu::Buffer,
    /// Receives the output.
    pub readback: wgpu::Buffer,
    /// Copies `upload` in, runs the block, copies the output to `readback`.
    pub commands: wgpu::CommandBuffer,
    /// The output's shape.
    pub output_shape: Vec<usize>,
    /// The device's clock, where the commands time the block's passes (see [`record_request`]).
    pub clock: Option<GpuClock>,
}

impl ArmedSubmission {
    /// Fills the upload buffer with `input` (`job`'s): what is left is to submit the returned
    /// commands, then map the returned request's buffers.
    pub fn start<K>(self, job: StageJob, input: &Tensor, block: K) -> (wgpu::CommandBuffer, InFlight<K>) {
        GpuBlock::fill_upload(&self.upload, input);
        let request = InFlight { job, block, upload: Some(self.upload), readback: self.readback, reading: OutputReading::Tensor(self.output_shape), block_readback: true, clock: self.clock };
        (self.commands, request)
    }
}

/// Recorded submissions (and unpaired buffers of each kind) kept per block; more come back only
/// while more requests are in flight, and the rest are dropped.
const ARMED_PER_BLOCK: usize = 2;

/// Buffers given back by finished requests and the submissions recorded from them, by block.
pub(super) struct SubmissionPool<K> {
    armed: HashMap<K, Vec<ArmedSubmission>>,
    uploads: HashMap<K, Vec<wgpu::Buffer>>,
    readbacks: HashMap<K, Vec<wgpu::Buffer>>,
    returned: (Sender<ReturnedBuffer<K>>, Receiver<ReturnedBuffer<K>>),
}

/// Locks a pool shared between the render world and the submission thread. A panic while it
/// was held leaves it consistent (every change to it is one map operation), so a poisoned lock
/// is taken as it is.
pub(super) fn lock<K>(pool: &Mutex<SubmissionPool<K>>) -> MutexGuard<'_, SubmissionPool<K>> {
    pool.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Buffers to record a submission for: a returned pair, or `None` for a new pair.
type Unarmed<K> = (K, Option<(wgpu::Buffer, wgpu::Buffer)>);

impl<K: std::hash::Hash + Eq + Clone> SubmissionPool<K> {
    pub fn new() -> Self {
        Self { armed: HashMap::new(), uploads: HashMap::new(), readbacks: HashMap::new(), returned: crossbeam_channel::unbounded() }
    }

    /// Where map callbacks send the buffers they give back.
    pub fn giver(&self) -> Sender<ReturnedBuffer<K>> {
        self.returned.0.clone()
    }

    /// A recorded submission for `key`, if one is ready.
    pub fn take(&mut self, key: &K) -> Option<ArmedSubmission> {
        self.armed.get_mut(key).and_then(Vec::pop)
    }

    /// Keeps only what belongs to `blocks`: submissions recorded for a released block would run
    /// its dispatches.
    pub fn retain_blocks(&mut self, blocks: &HashMap<K, GpuBlock>) {
        self.armed.retain(|key, _| blocks.contains_key(key));
        self.uploads.retain(|key, _| blocks.contains_key(key));
        self.readbacks.retain(|key, _| blocks.contains_key(key));
    }

    /// The buffers given back since the last call, paired by block, and a new pair for every
    /// block of `blocks` with no submission ready and none coming: so that a block's next
    /// request finds one ready even while the last one's buffers are still in flight.
    fn unarmed(&mut self, blocks: &HashMap<K, GpuBlock>) -> Vec<Unarmed<K>> {
        for returned in self.returned.1.try_iter() {
            match returned {
                ReturnedBuffer::Upload(key, buffer) => self.uploads.entry(key).or_default().push(buffer),
                ReturnedBuffer::Readback(key, buffer) => self.readbacks.entry(key).or_default().push(buffer),
            }
        }
        // Buffers that came back for a released block go with it.
        self.retain_blocks(blocks);
        let mut unarmed = Vec::new();
        for (key, uploads) in &mut self.uploads {
            let Some(readbacks) = self.readbacks.get_mut(key) else { continue };
            let ready = self.armed.get(key).map_or(0, Vec::len);
            for _ in ready..ARMED_PER_BLOCK {
                let (Some(upload), Some(readback)) = (uploads.pop(), readbacks.pop()) else { break };
                unarmed.push((key.clone(), Some((upload, readback))));
            }
        }
        // A buffer whose partner comes back later waits for it.
        for idle in self.uploads.values_mut().chain(self.readbacks.values_mut()) {
            idle.truncate(ARMED_PER_BLOCK);
        }
        for key in blocks.keys() {
            let coming = unarmed.iter().any(|(k, _)| k == key);
            if !coming && self.armed.get(key).is_none_or(Vec::is_empty) {
                unarmed.push((key.clone(), None));
            }
        }
        unarmed
    }
}

/// Records submissions for the buffers `pool`'s blocks gave back (and new ones for a block with
/// none ready), without holding the pool's lock while recording, so that the
/// [`super::submission_thread::SubmissionThread`] never waits for it.
pub(super) fn arm<K: std::hash::Hash + Eq + Clone>(pool: &Mutex<SubmissionPool<K>>, device: &wgpu::Device, library: &KernelLibrary, blocks: &HashMap<K, GpuBlock>, clock: Option<GpuClock>) {
    let unarmed = lock(pool).unarmed(blocks);
    for (key, buffers) in unarmed {
        let Some(block) = blocks.get(&key) else { continue };
        let (upload, readback) = buffers.unwrap_or_else(|| (block.create_upload(device), block.create_readback(device)));
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("armed request") });
        let clock = record_request(device, library, block, &mut encoder, &upload, &readback, clock);
        let armed = ArmedSubmission { upload, readback, commands: encoder.finish(), output_shape: block.output_shape().to_vec(), clock };
        lock(pool).armed.entry(key).or_default().push(armed);
    }
}

/// Records one request of `block` into `encoder`, timing its passes on a device with a
/// `clock` (with a fresh query set: it is not reused before the request is done). Returns the
/// clock its readback's timestamps are read with, if they were recorded.
pub(super) fn record_request(
    device: &wgpu::Device,
    library: &KernelLibrary,
    block: &GpuBlock,
    encoder: &mut wgpu::CommandEncoder,
    upload: &wgpu::Buffer,
    readback: &wgpu::Buffer,
    clock: Option<GpuClock>,
) -> Option<GpuClock> {
    match clock.and_then(|clock| Some((clock, RequestTimestamps::new(device, block)?))) {
        Some((clock, stamps)) => {
            block.encode_timed(library, encoder, upload, readback, &stamps);
            Some(clock)
        }
        None => {
            block.encode(library, encoder, upload, readback);
            None
        }
    }
}
