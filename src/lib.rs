#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod model;
pub mod tensor;

pub use model::{Model, ModelError};
pub use tensor::{Tensor, TensorError};
