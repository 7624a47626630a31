//! Counts of what inference moved between the CPU and the GPU: tensors uploaded, images
//! preprocessed on the GPU instead, results read back. They show that a request on an image
//! made no CPU round trip.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bevy::prelude::Resource;

/// Running counts of inference transfers between the CPU and the GPU, shared by the main world
/// (as a resource) and the render side, which counts each job once its commands are submitted.
#[derive(Resource, Clone, Default)]
pub struct GpuTransfers(Arc<Counters>);

#[derive(Default)]
struct Counters {
    tensor_uploads: AtomicU64,
    tensor_upload_bytes: AtomicU64,
    image_inputs: AtomicU64,
    readbacks: AtomicU64,
    readback_bytes: AtomicU64,
}

/// The counts of [`GpuTransfers`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TransferTotals {
    /// Job inputs uploaded from the CPU.
    pub tensor_uploads: u64,
    /// Their bytes.
    pub tensor_upload_bytes: u64,
    /// Job inputs preprocessed from a texture on the GPU (nothing uploaded or read back).
    pub image_inputs: u64,
    /// Job outputs read back to the CPU.
    pub readbacks: u64,
    /// Their bytes.
    pub readback_bytes: u64,
}

impl GpuTransfers {
    /// The counts so far.
    pub fn totals(&self) -> TransferTotals {
        let read = |counter: &AtomicU64| counter.load(Ordering::Acquire);
        let c = &self.0;
        TransferTotals {
            tensor_uploads: read(&c.tensor_uploads),
            tensor_upload_bytes: read(&c.tensor_upload_bytes),
            image_inputs: read(&c.image_inputs),
            readbacks: read(&c.readbacks),
            readback_bytes: read(&c.readback_bytes),
        }
    }

    /// Counts an input uploaded from the CPU.
    pub(super) fn count_upload(&self, bytes: u64) {
        self.0.tensor_uploads.fetch_add(1, Ordering::AcqRel);
        self.0.tensor_upload_bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Counts an input preprocessed from a texture on the GPU.
    pub(super) fn count_image_input(&self) {
        self.0.image_inputs.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts an output read back.
    pub(super) fn count_readback(&self, bytes: u64) {
        self.0.readbacks.fetch_add(1, Ordering::AcqRel);
        self.0.readback_bytes.fetch_add(bytes, Ordering::AcqRel);
    }
}
