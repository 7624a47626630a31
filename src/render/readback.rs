//! Hands a submitted request's result to the main world as soon as the GPU is done with it.
//!
//! Once a request's commands are submitted, its readback buffer is mapped for reading; the map
//! callback reads the output, sends it to the main world over a channel and gives the buffers
//! back for reuse. A map callback only runs inside `Device::poll`, so while maps are
//! outstanding the [`super::submission_thread::SubmissionThread`] thread polls the device (on wasm, where
//! there are no threads, the render world's poll of every frame does).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;

use super::transfers::GpuTransfers;
use crate::gpu::{read_timed, read_timed_scores, GpuClock, GpuError};
use crate::tensor::Tensor;
use crate::job::{JobOutcome, StageJob};

/// A request whose commands have been recorded, with the buffers it reads from and writes to.
pub(super) struct InFlight<K> {
    /// The request.
    pub job: StageJob,
    /// Which block's pool its buffers go back to.
    pub block: K,
    /// Holds an input uploaded from the CPU; mapped for writing again once the request's copy
    /// has run. `None` for an input preprocessed from a texture on the GPU.
    pub upload: Option<wgpu::Buffer>,
    /// Receives what is read back of the output.
    pub readback: wgpu::Buffer,
    /// What that is.
    pub reading: OutputReading,
    /// Whether the readback buffer is one the block makes for its requests (its output and
    /// timestamps), so that the pool may give it to the block's next request; one sized for
    /// less goes when it has been read.
    pub block_readback: bool,
    /// The device's clock, where the commands time the block's passes.
    pub clock: Option<GpuClock>,
}

/// What a request's readback buffer holds, ahead of its timestamps.
pub(super) enum OutputReading {
    /// The output tensor, of this shape (`[0]`: none of it, only that the GPU is done).
    Tensor(Vec<usize>),
    /// The top `k` classes of its first batch row, as [`crate::gpu::params::ClassScore`]s.
    TopK(u32),
}

impl OutputReading {
    /// The bytes read back ahead of the timestamps.
    fn bytes(&self) -> u64 {
        match self {
            OutputReading::Tensor(shape) => 4 * shape.iter().product::<usize>() as u64,
            OutputReading::TopK(k) => crate::gpu::top_k::scores_bytes(*k),
        }
    }
}

/// A buffer a finished request gives back, sent from its map callback to the submission pool.
pub(super) enum ReturnedBuffer<K> {
    /// An upload buffer, mapped for writing again.
    Upload(K, wgpu::Buffer),
    /// A readback buffer, read and unmapped.
    Readback(K, wgpu::Buffer),
}

/// Counts maps whose callbacks have not run yet, so that the device is polled only while
/// there are some.
#[derive(Clone, Default)]
pub(super) struct OutstandingMaps(Arc<AtomicUsize>);

impl OutstandingMaps {
    /// Whether some callback has yet to run.
    pub fn any(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0
    }

    /// Counts one more map; dropping the guard (in the callback) counts it done.
    fn register(&self) -> OutstandingMap {
        self.0.fetch_add(1, Ordering::AcqRel);
        OutstandingMap(self.0.clone())
    }
}

/// One outstanding map, counted until dropped.
struct OutstandingMap(Arc<AtomicUsize>);

impl Drop for OutstandingMap {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where a request's outcome and its buffers go once the GPU has run it.
#[derive(Clone)]
pub(super) struct ResultRoute<K> {
    /// The main world's end of finished jobs.
    pub results: Sender<JobOutcome>,
    /// The submission pool's end of returned buffers.
    pub giver: Sender<ReturnedBuffer<K>>,
    /// Counted while the maps are outstanding.
    pub outstanding: OutstandingMaps,
    /// Counts each request's input and output transfers.
    pub transfers: GpuTransfers,
}

impl<K: Clone + Send + 'static> ResultRoute<K> {
    /// Maps `request`'s buffers; call it only after the request's commands were submitted. The
    /// readback's callback sends the outcome to the main world; both buffers go back to the
    /// pool for the block's next request, the upload buffer mapped for writing again.
    pub fn map(&self, request: InFlight<K>) {
        let InFlight { job, block, upload, readback, reading, block_readback, clock } = request;
        match &upload {
            Some(upload) => self.transfers.count_upload(upload.size()),
            None => self.transfers.count_image_input(),
        }
        let (transfers, output_bytes) = (self.transfers.clone(), reading.bytes());
        let (results, giver, buffer, key) = (self.results.clone(), self.giver.clone(), readback.clone(), block.clone());
        let outstanding = self.outstanding.register();
        readback.slice(..).map_async(wgpu::MapMode::Read, move |mapped| {
            let (result, top_k, gpu) = match mapped {
                Ok(()) => {
                    if output_bytes > 0 {
                        transfers.count_readback(output_bytes);
                    }
                    match reading {
                        OutputReading::Tensor(shape) => {
                            let (output, gpu) = read_timed(&buffer, shape, clock);
                            (Ok(output), None, gpu)
                        }
                        OutputReading::TopK(k) => {
                            let (classes, gpu) = read_timed_scores(&buffer, k, clock);
                            (Ok(Tensor::zeros(vec![0])), Some(classes), gpu)
                        }
                    }
                }
                Err(e) => (Err(GpuError::Readback(e.to_string()).into()), None, None),
            };
            let reusable = result.is_ok() && block_readback;
            job.deliver(JobOutcome { gpu, top_k, ..JobOutcome::of(&job, result) }, &results);
            if reusable {
                let _ = giver.send(ReturnedBuffer::Readback(key, buffer));
            }
            drop(outstanding);
        });
        // A failed map only costs the reuse.
        let Some(upload) = upload else { return };
        let (giver, buffer) = (self.giver.clone(), upload.clone());
        let outstanding = self.outstanding.register();
        upload.slice(..).map_async(wgpu::MapMode::Write, move |mapped| {
            if mapped.is_ok() {
                let _ = giver.send(ReturnedBuffer::Upload(block, buffer));
            }
            drop(outstanding);
        });
    }
}
