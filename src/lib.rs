#![doc = include_str!("../README.md")]
//!
//! ## The data flow of one request, module by module
//!
//! 1. Main world: an [`InferenceRequest`] (a [`Model`] asset handle and an input [`Tensor`]) is
//!    spawned. Models are imported from ONNX into a graph IR by [`model`].
//! 2. [`schedule`] turns it into stage jobs (`job`): one job for the whole model; or, with a
//!    peer session (`session`, feature `p2p`: `PeerSessionPlugin`, its placement, pipeline,
//!    checks, shared tensors and collectives), one per stage of the partition plan, placed on
//!    this player or another.
//! 3. Local jobs go over a channel to the render side ([`render`]): a submission thread submits
//!    those whose block has commands recorded ahead of time at once; the render world compiles
//!    and records the rest in the `RenderGraph` schedule. The main world never touches wgpu.
//! 4. The [`gpu`] engine runs a block as WGSL compute dispatches over pooled buffers with
//!    resident weights; consecutive local stages stay on the GPU, and the output is read back
//!    with an async map whose callback sends it to the main world.
//! 5. An activation for another player is encoded, chunked, authenticated and sent by [`net`]
//!    (the sans-IO link state machine and a matchbox adapter); the receiver checks, reassembles
//!    and runs its stage, and sends the output on.
//! 6. The last stage's output becomes a [`Prediction`] component and a [`PredictionReady`]
//!    event on the request's entity; a failure becomes [`InferenceFailed`]. [`diagnostics`] and
//!    the overlay (feature `overlay`) show what happened.
#![warn(missing_docs)]

pub mod diagnostics;
pub mod gpu;
mod job;
pub mod model;
pub mod net;
#[cfg(feature = "overlay")]
pub mod overlay;
mod plugin;
pub mod render;
pub mod schedule;
pub mod secret;
#[cfg(feature = "p2p")]
pub mod session;
pub mod tensor;
pub mod testing;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use diagnostics::{InferenceDiagnosticsPlugin, InferenceHistory};
pub use model::{Model, ModelError};
#[cfg(feature = "overlay")]
pub use overlay::InferenceOverlayPlugin;
pub use plugin::P2pInferencePlugin;
pub use testing::{headless_plugins, update_until_prediction, update_until_prediction_with, WaitError};
#[cfg(feature = "p2p")]
pub use session::{CollectiveDone, CollectiveError, CollectiveFailed, CollectiveFailedEvent, CollectiveRequest, CollectiveResult, Collectives, PeerRole, PeerSessionEvent, Placement, PeerSessionPlugin, PublishedTensor, RemoteTensor, RemoteTensorChanged, SessionProblem, SharedTensorRules, SharedTensors};
pub use render::{GpuTransfers, TransferTotals};
pub use schedule::continuous::{ContinuousInference, ContinuousRun, ContinuousRuns};
pub use schedule::image_request::ImageInferenceRequest;
pub use schedule::request_output::{OutputToBuffer, OutputToImage, ReadBackTopK};
pub use schedule::run_cadence::Cadence;
pub use schedule::layer_slices::{LayerSliceRecord, SliceAcrossFrames};
pub use schedule::{LocalOnly, SplitRequest};
pub use schedule::{InferenceError, InferenceFailed, InferenceRequest, InferenceSystems, Prediction, PredictionReady, Submitted};
pub use tensor::output_mapping::OutputMapping;
pub use tensor::preprocess::{ChannelOrder, ImagePreprocessing, ImageSize, Resize, ResizeFilter, ResizeTo, TensorLayout};
pub use tensor::{SharedTensor, Tensor, TensorError};

/// The types a game needs.
pub mod prelude {
    pub use crate::{
        ContinuousInference, ImageInferenceRequest, ImagePreprocessing, InferenceFailed, OutputMapping, OutputToBuffer, OutputToImage, InferenceRequest, Model, P2pInferencePlugin, Prediction, PredictionReady, ReadBackTopK, SliceAcrossFrames,
        Tensor,
    };
}

/// The guides' Rust examples, compiled by `cargo test --doc` like the README's.
#[cfg(doctest)]
mod guides {
    #[doc = include_str!("../docs/deployment.md")]
    struct Deployment;
    #[doc = include_str!("../docs/models.md")]
    struct Models;
    #[doc = include_str!("../docs/overlay.md")]
    struct Overlay;
    #[doc = include_str!("../docs/requests.md")]
    struct Requests;
    #[doc = include_str!("../docs/security.md")]
    struct Security;
    #[doc = include_str!("../docs/sessions.md")]
    struct Sessions;
    #[doc = include_str!("../docs/shared-tensors.md")]
    struct SharedTensors;
    #[doc = include_str!("../docs/textures.md")]
    struct Textures;
    #[doc = include_str!("../docs/web.md")]
    struct Web;
}
