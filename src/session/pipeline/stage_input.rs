//! What a hand-over starts from, as the owner holds it.

use crate::tensor::Tensor;

/// The input of a hand-over: a tensor this player holds (any executor can be sent it), or the
/// request's own input where only this player can read it.
#[derive(Clone, Debug, PartialEq)]
pub enum StageInput {
    /// A tensor in this player's memory: the request's input, or a stage's output.
    Tensor(Tensor),
    /// The request's own input, which never leaves this player's GPU (an image a request reads
    /// there, see [`crate::schedule::image_request::ImageInferenceRequest`]): the stage it
    /// starts runs on this player, whatever the assignment says. `shape` is the tensor the
    /// stage takes.
    OnThisGpu {
        /// The shape of the tensor the stage takes (its first axis is the batch).
        shape: Vec<usize>,
    },
}

impl StageInput {
    /// The shape of the tensor the stage takes.
    pub fn shape(&self) -> &[usize] {
        match self {
            StageInput::Tensor(tensor) => tensor.shape(),
            StageInput::OnThisGpu { shape } => shape,
        }
    }

    /// Its batch (first axis; 1 for a scalar).
    pub fn batch(&self) -> usize {
        self.shape().first().copied().unwrap_or(1)
    }

    /// The tensor, where this player holds one.
    pub fn tensor(&self) -> Option<&Tensor> {
        match self {
            StageInput::Tensor(tensor) => Some(tensor),
            StageInput::OnThisGpu { .. } => None,
        }
    }
}

impl From<Tensor> for StageInput {
    fn from(tensor: Tensor) -> Self {
        StageInput::Tensor(tensor)
    }
}
