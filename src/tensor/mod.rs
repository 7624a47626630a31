//! Dense tensors that flow into, between and out of model blocks, and how they travel between
//! peers: transfer dtypes and int8/f16 quantization; and how an image becomes a model's input. The bottom of the crate: it imports no other
//! module of it.

pub mod output_mapping;
pub mod preprocess;
pub mod quant;
mod transfer;

use std::sync::Arc;

use thiserror::Error;

pub use quant::{decode_values, encode_values, DecodeValuesError, QuantParams};
pub use transfer::TransferDtype;

/// A dense, row-major `f32` tensor: the input of a request and the output of a prediction.
/// Its values are shared, so cloning it (a request handing its input to the GPU job) copies
/// no data.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Arc<Vec<f32>>,
}

/// Why a [`Tensor`] could not be built from the given parts.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TensorError {
    /// The number of values does not equal the product of the shape.
    #[error("shape {shape:?} holds {expected} values but {got} were given")]
    LengthMismatch {
        /// The requested shape.
        shape: Vec<usize>,
        /// Values the shape holds.
        expected: usize,
        /// Values that were given.
        got: usize,
    },
    /// An image could not be decoded.
    #[error("cannot decode image: {0}")]
    Image(String),
    /// Rows asked for past the tensor's first axis.
    #[error("rows {start}..{end} of a tensor of {rows}")]
    RowsOutOfRange {
        /// The first row asked for.
        start: usize,
        /// One past the last.
        end: usize,
        /// Rows the tensor has.
        rows: usize,
    },
    /// Tensors put together along their first axis whose other axes differ (or none given).
    #[error("cannot stack rows of shapes {0:?}")]
    RowShapesDiffer(Vec<Vec<usize>>),
}

impl Tensor {
    /// Builds a tensor, checking that `data` fills `shape` exactly.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, TensorError> {
        let expected = shape.iter().product::<usize>();
        if expected != data.len() {
            return Err(TensorError::LengthMismatch { shape, expected, got: data.len() });
        }
        Ok(Self { shape, data: Arc::new(data) })
    }

    /// A tensor of zeros.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let len = shape.iter().product();
        Self { shape, data: Arc::new(vec![0.0; len]) }
    }

    /// The dimensions, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The values in row-major order.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Consumes the tensor, returning its values.
    pub fn into_data(self) -> Vec<f32> {
        Arc::unwrap_or_clone(self.data)
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor holds no values.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Decodes an encoded image (PNG) into a `[1, channels, height, width]` tensor of pixels in
    /// `[0, 1]`; `channels` is 1 (luma) or 3 (RGB). The image is resized to `height` x `width`.
    pub fn from_image_bytes(
        bytes: &[u8],
        channels: usize,
        height: usize,
        width: usize,
    ) -> Result<Self, TensorError> {
        let image = image::load_from_memory(bytes).map_err(|e| TensorError::Image(e.to_string()))?;
        let image = image.resize_exact(
            width as u32,
            height as u32,
            image::imageops::FilterType::Triangle,
        );
        let plane = height * width;
        let mut data = vec![0.0; channels * plane];
        match channels {
            1 => {
                for (i, p) in image.to_luma8().pixels().enumerate() {
                    data[i] = p.0[0] as f32 / 255.0;
                }
            }
            _ => {
                for (i, p) in image.to_rgb8().pixels().enumerate() {
                    for c in 0..3.min(channels) {
                        data[c * plane + i] = p.0[c] as f32 / 255.0;
                    }
                }
            }
        }
        Self::new(vec![1, channels, height, width], data)
    }

    /// Indices of the `k` largest values of row `row` of a `[rows, classes]` tensor, with
    /// their softmax probabilities, largest first.
    pub fn top_k(&self, row: usize, k: usize) -> Vec<(usize, f32)> {
        let classes = self.shape.last().copied().unwrap_or(0);
        let Some(logits) = self.data.get(row * classes..(row + 1) * classes) else {
            return Vec::new();
        };
        let probabilities = softmax(logits);
        let mut order: Vec<usize> = (0..classes).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        order.into_iter().take(k).map(|i| (i, probabilities[i])).collect()
    }

    /// Rows `rows` of the first axis (a slice of a batch), as a tensor of their own.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Result<Tensor, TensorError> {
        let total = self.shape.first().copied().unwrap_or(0);
        if rows.start > rows.end || rows.end > total {
            return Err(TensorError::RowsOutOfRange { start: rows.start, end: rows.end, rows: total });
        }
        let per_row: usize = self.shape[1..].iter().product();
        let mut shape = self.shape.clone();
        shape[0] = rows.len();
        Tensor::new(shape, self.data[rows.start * per_row..rows.end * per_row].to_vec())
    }

    /// `parts` one after the other along the first axis (the slices of a batch put back
    /// together); their other axes must agree.
    pub fn stack_rows(parts: &[Tensor]) -> Result<Tensor, TensorError> {
        let shapes = || parts.iter().map(|p| p.shape.clone()).collect();
        let Some(first) = parts.first().filter(|f| !f.shape.is_empty()) else { return Err(TensorError::RowShapesDiffer(shapes())) };
        if parts.iter().any(|p| p.shape.is_empty() || p.shape[1..] != first.shape[1..]) {
            return Err(TensorError::RowShapesDiffer(shapes()));
        }
        let mut shape = first.shape.clone();
        shape[0] = parts.iter().map(|p| p.shape[0]).sum();
        Tensor::new(shape, parts.iter().flat_map(|p| p.data.iter().copied()).collect())
    }

    /// The softmax of every row along the last axis: a classifier's logits as class
    /// probabilities, of the same shape.
    pub fn softmax_rows(&self) -> Tensor {
        let classes = self.shape.last().copied().unwrap_or(1).max(1);
        let data = self.data.chunks(classes).flat_map(softmax).collect();
        Tensor::new(self.shape.clone(), data).expect("the same shape")
    }
}

/// The softmax of `logits`.
fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|v| v / sum).collect()
}

/// An activation between two blocks of a request: what crosses a cut, locally or between
/// peers.
#[derive(Clone, Debug, PartialEq)]
pub struct SharedTensor {
    /// The requester's id for the request.
    pub request: u64,
    /// The stage that reads (input) or wrote (output) it.
    pub stage: u16,
    /// The values, decoded to f32.
    pub tensor: Tensor,
    /// How it travelled (or will travel) on the wire.
    pub dtype: TransferDtype,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_rejects_data_that_does_not_fill_the_shape() {
        assert!(matches!(
            Tensor::new(vec![2, 3], vec![0.0; 5]),
            Err(TensorError::LengthMismatch { expected: 6, got: 5, .. })
        ));
    }

    #[test]
    fn a_batch_cut_into_row_slices_and_stacked_again_is_the_same_tensor() {
        let batch = Tensor::new(vec![5, 2, 1], (0..10).map(|v| v as f32).collect()).unwrap();
        let parts = [batch.rows(0..3).unwrap(), batch.rows(3..3).unwrap(), batch.rows(3..5).unwrap()];
        assert_eq!(parts[0].shape(), &[3, 2, 1]);
        assert_eq!(parts[2].data(), &[6.0, 7.0, 8.0, 9.0]);
        assert_eq!(Tensor::stack_rows(&parts), Ok(batch.clone()));
        assert_eq!(batch.rows(4..6), Err(TensorError::RowsOutOfRange { start: 4, end: 6, rows: 5 }));
        let other = Tensor::zeros(vec![1, 3, 1]);
        assert!(matches!(Tensor::stack_rows(&[batch, other]), Err(TensorError::RowShapesDiffer(_))));
        assert!(matches!(Tensor::stack_rows(&[]), Err(TensorError::RowShapesDiffer(_))));
    }

    #[test]
    fn softmax_rows_gives_each_row_probabilities_that_sum_to_one_in_logit_order() {
        let logits = Tensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, 0.0, 0.0, 0.0]).unwrap();
        let probabilities = logits.softmax_rows();
        assert_eq!(probabilities.shape(), &[2, 3]);
        let p = probabilities.data();
        let e = [1f32.exp(), 2f32.exp(), 3f32.exp()];
        for (i, &expected) in e.iter().enumerate() {
            assert!((p[i] - expected / e.iter().sum::<f32>()).abs() < 1e-6);
        }
        assert!(p[3..].iter().all(|&v| (v - 1.0 / 3.0).abs() < 1e-6));
    }

    #[test]
    fn top_k_orders_classes_by_logit_with_softmax_probabilities() {
        let t = Tensor::new(vec![1, 3], vec![1.0, 3.0, 2.0]).unwrap();
        let top = t.top_k(0, 2);
        assert_eq!(top.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 2]);
        let expected = 3f32.exp() / (1f32.exp() + 2f32.exp() + 3f32.exp());
        assert!((top[0].1 - expected).abs() < 1e-6);
    }
}
