#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod diagnostics;
pub mod gpu;
pub mod model;
pub mod net;
#[cfg(feature = "overlay")]
pub mod overlay;
mod plugin;
pub mod schedule;
pub mod tensor;

pub use diagnostics::{InferenceDiagnosticsPlugin, InferenceHistory};
pub use model::{Model, ModelError};
#[cfg(feature = "overlay")]
pub use overlay::InferenceOverlayPlugin;
pub use plugin::{headless_plugins, update_until_prediction, update_until_prediction_with, P2pInferencePlugin, WaitError};
#[cfg(feature = "p2p")]
pub use schedule::distributed::{PeerRole, PeerSessionEvent, PeerSessionPlugin, SessionProblem, SessionSettings};
pub use schedule::{LocalOnly, SplitRequest};
pub use schedule::{InferenceError, InferenceFailed, InferenceRequest, InferenceSystems, Prediction, PredictionReady, Submitted};
pub use tensor::{SharedTensor, Tensor, TensorError};

/// The types a game needs.
pub mod prelude {
    pub use crate::{
        InferenceFailed, InferenceRequest, Model, P2pInferencePlugin, Prediction, PredictionReady, Tensor,
    };
}
