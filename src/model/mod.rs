//! Model import and everything that runs on the CPU: ONNX → graph IR, simplification, shape
//! inference, the CPU reference executor and the [`Model`] asset.

mod asset;
mod error;
mod fold;
pub mod ir;
mod onnx;
#[allow(missing_docs, clippy::all)]
mod onnx_pb;
mod reference;
pub mod shape;

pub use asset::{Model, OnnxLoader};
pub use error::ModelError;
pub use onnx::{import_onnx, MIN_OPSET};
pub use reference::run_reference;
