//! The graph IR that ONNX is imported into and that both executors (CPU reference, GPU) run.

use std::collections::HashMap;

use crate::tensor::Tensor;

/// An element-wise activation, standalone or fused into the epilogue of a kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `x`.
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, min), max)` (ReLU6 is `Clip { min: 0, max: 6 }`).
    Clip {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// `x` if `x >= 0` else `alpha * x`.
    LeakyRelu {
        /// Slope for negative inputs.
        alpha: f32,
    },
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `clamp(alpha * x + beta, 0, 1)`.
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `x * clamp(x / 6 + 1 / 2, 0, 1)`.
    HardSwish,
    /// `tanh(x)`.
    Tanh,
    /// `e^x`.
    Exp,
    /// Natural logarithm.
    Log,
    /// Square root.
    Sqrt,
    /// `-x`.
    Neg,
    /// `|x|`.
    Abs,
    /// `1 / x`.
    Reciprocal,
    /// The error function.
    Erf,
    /// `x * Φ(x)` (opset 20's Gelu): exactly through erf, or with the tanh approximation.
    Gelu {
        /// `approximate = "tanh"`.
        tanh: bool,
    },
    /// The largest integer not above `x`.
    Floor,
    /// The smallest integer not below `x`.
    Ceil,
    /// The nearest integer, halves to even (ONNX's Round).
    Round,
    /// `x` without its fractional part (a cast of a computed value to an integer type).
    Trunc,
}

/// How a reduction combines the values along its axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Arithmetic mean.
    Mean,
    /// Sum.
    Sum,
    /// Largest value.
    Max,
    /// Smallest value.
    Min,
    /// Square root of the sum of squares.
    L2,
}

/// The cell of a recurrent layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecurrentCell {
    /// LSTM: gates i, o, f, c; a hidden and a cell state.
    Lstm,
    /// GRU with the reset gate applied after the recurrent product (`linear_before_reset = 1`,
    /// as torch exports it): gates z, r, h.
    Gru,
}

impl RecurrentCell {
    /// Gates per hidden unit.
    pub fn gates(self) -> usize {
        match self {
            RecurrentCell::Lstm => 4,
            RecurrentCell::Gru => 3,
        }
    }
}

/// How Pad fills positions outside the input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PadMode {
    /// A constant value.
    Constant(f32),
    /// Mirrored about the edge, the edge itself not repeated.
    Reflect,
    /// The edge value repeated.
    Edge,
}

/// How Resize maps an output coordinate to an input one (ONNX
/// `coordinate_transformation_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResizeCoordinates {
    /// `(o + 0.5) / scale - 0.5` (the default).
    HalfPixel,
    /// As half_pixel, but 0 where the output has one value.
    PytorchHalfPixel,
    /// `o / scale`.
    Asymmetric,
    /// `o * (in - 1) / (out - 1)`.
    AlignCorners,
}

/// How nearest-neighbour Resize rounds a coordinate (ONNX `nearest_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NearestRounding {
    /// Round, halves down (the default).
    RoundPreferFloor,
    /// Round, halves up.
    RoundPreferCeil,
    /// Floor.
    Floor,
    /// Ceiling.
    Ceil,
}

/// A broadcasting element-wise operation on two tensors (NumPy semantics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b`.
    Div,
    /// `a ^ b`.
    Pow,
    /// The smaller of the two.
    Min,
    /// The larger of the two.
    Max,
}

impl BinaryOp {
    /// Applies the operation to one pair of values.
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Pow => a.powf(b),
            BinaryOp::Min => a.min(b),
            BinaryOp::Max => a.max(b),
        }
    }
}

impl Activation {
    /// Applies the activation to one value.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Identity => x,
            Activation::Relu => x.max(0.0),
            Activation::Clip { min, max } => x.max(min).min(max),
            Activation::LeakyRelu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Activation::Tanh => x.tanh(),
            Activation::Exp => x.exp(),
            Activation::Log => x.ln(),
            Activation::Sqrt => x.sqrt(),
            Activation::Neg => -x,
            Activation::Abs => x.abs(),
            Activation::Reciprocal => 1.0 / x,
            Activation::Erf => libm::erff(x),
            Activation::Gelu { tanh: false } => 0.5 * x * (1.0 + libm::erff(x / std::f32::consts::SQRT_2)),
            Activation::Gelu { tanh: true } => {
                let inner = (2.0 / std::f32::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                0.5 * x * (1.0 + inner.tanh())
            }
            Activation::Floor => x.floor(),
            Activation::Ceil => x.ceil(),
            Activation::Round => x.round_ties_even(),
            Activation::Trunc => x.trunc(),
        }
    }

}

/// Attributes of a 2-D convolution (inputs: x `[N,C,H,W]`, weight `[M,C/groups,kH,kW]`, bias `[M]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2d {
    /// Vertical and horizontal stride.
    pub strides: [usize; 2],
    /// Padding: top, left, bottom, right.
    pub pads: [usize; 4],
    /// Vertical and horizontal dilation.
    pub dilations: [usize; 2],
    /// Number of groups (`C` for depthwise).
    pub groups: usize,
}

/// Attributes of a 2-D pooling window.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool2d {
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Vertical and horizontal stride.
    pub strides: [usize; 2],
    /// Padding: top, left, bottom, right.
    pub pads: [usize; 4],
    /// Output size rounds up instead of down.
    pub ceil_mode: bool,
    /// AveragePool divides by the full window, padding included.
    pub count_include_pad: bool,
}

/// What a node computes. Inputs are named in [`Node::inputs`] in ONNX order.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Convolution (x, weight, optional bias).
    Conv(Conv2d),
    /// Per-channel `x * scale + shift` (a BatchNormalization that could not be folded):
    /// inputs x, scale `[C]`, shift `[C]`.
    ChannelAffine,
    /// Element-wise activation.
    Activation(Activation),
    /// A broadcasting element-wise operation on two tensors.
    Binary(BinaryOp),
    /// Mean over H and W, keeping them as size 1.
    GlobalAveragePool,
    /// Windowed mean.
    AveragePool(Pool2d),
    /// Windowed maximum.
    MaxPool(Pool2d),
    /// Reinterprets the shape (the target shape is resolved at import; 0 and -1 allowed).
    Reshape {
        /// ONNX target shape.
        shape: Vec<i64>,
        /// A 0 means a zero-sized dimension rather than "copy".
        allow_zero: bool,
    },
    /// Collapses dimensions before and from `axis` into a 2-D tensor.
    Flatten {
        /// Split point (negative counts from the end).
        axis: i64,
    },
    /// Joins inputs along `axis`.
    Concat {
        /// Axis (negative counts from the end).
        axis: i64,
    },
    /// `alpha * op(A) * op(B) + beta * C`.
    Gemm {
        /// Scale of the product.
        alpha: f32,
        /// Scale of C.
        beta: f32,
        /// Transpose A.
        trans_a: bool,
        /// Transpose B.
        trans_b: bool,
    },
    /// NumPy-style matrix product with batch broadcasting.
    MatMul,
    /// Softmax along one axis.
    Softmax {
        /// Axis (negative counts from the end).
        axis: i64,
    },
    /// Passes its input through (Identity, Dropout at inference).
    Identity,
    /// Permutes the axes: output axis `d` is input axis `perm[d]`.
    Transpose {
        /// The permutation.
        perm: Vec<usize>,
    },
    /// A strided slice (ONNX Slice with constant starts, ends, axes and steps).
    Slice {
        /// First index per sliced axis (negative counts from the end).
        starts: Vec<i64>,
        /// End (exclusive) per sliced axis.
        ends: Vec<i64>,
        /// The sliced axes.
        axes: Vec<i64>,
        /// Steps (negative walks backwards).
        steps: Vec<i64>,
    },
    /// Removes size-1 axes (`None`: all of them).
    Squeeze {
        /// The axes removed.
        axes: Option<Vec<i64>>,
    },
    /// Inserts size-1 axes at `axes` of the output.
    Unsqueeze {
        /// Positions in the output.
        axes: Vec<i64>,
    },
    /// LayerNormalization over the axes from `axis` on; inputs x, scale and an optional bias.
    LayerNorm {
        /// First normalised axis (negative counts from the end).
        axis: i64,
        /// Added to the variance.
        epsilon: f32,
    },
    /// A 2-D transposed convolution: inputs x `[N, C, H, W]`, weight `[C, M / groups, kH, kW]`,
    /// optional bias `[M]`.
    ConvTranspose {
        /// Strides, pads (removed from the full output), dilations and groups.
        conv: Conv2d,
        /// Extra rows and columns at the bottom and right of the output.
        output_padding: [usize; 2],
    },
    /// Resize of the last two axes of an NCHW tensor: nearest (`linear: false`) or bilinear.
    Resize {
        /// Bilinear rather than nearest.
        linear: bool,
        /// The coordinate transformation.
        coordinates: ResizeCoordinates,
        /// Nearest's rounding.
        nearest: NearestRounding,
        /// Scale per axis (4 values, the first two 1), when given.
        scales: Option<Vec<f32>>,
        /// Output size per axis (4 values), when given instead.
        sizes: Option<Vec<usize>>,
    },
    /// A forward recurrent layer over a sequence: inputs x `[seq, batch, input]`, W
    /// `[gates * hidden, input]`, R `[gates * hidden, hidden]`, optional B `[2 * gates * hidden]`
    /// and optional initial state `[batch * hidden]` (h, then c for an LSTM); output Y
    /// `[seq, 1, batch, hidden]`.
    Recurrent {
        /// LSTM or GRU.
        cell: RecurrentCell,
        /// Hidden units.
        hidden: usize,
        /// Whether the fourth input is the bias (else it is the initial state, or absent).
        has_bias: bool,
    },
    /// Pads every axis: `pads` holds the begins, then the ends (ONNX order; negative crops).
    Pad {
        /// How padded positions are filled.
        mode: PadMode,
        /// Begins, then ends, one per axis.
        pads: Vec<i64>,
    },
    /// Repeats the input `repeats[d]` times along each axis.
    Tile {
        /// Repetitions per axis.
        repeats: Vec<usize>,
    },
    /// `log(softmax(x))` along one axis.
    LogSoftmax {
        /// Axis (negative counts from the end).
        axis: i64,
    },
    /// InstanceNormalization: each (image, channel) plane normalised, then scaled and shifted
    /// per channel; inputs x `[N, C, ...]`, scale `[C]`, bias `[C]`.
    InstanceNorm {
        /// Added to the variance.
        epsilon: f32,
    },
    /// Broadcasts the input to `shape` (NumPy rules, as ONNX Expand).
    Expand {
        /// The target shape.
        shape: Vec<i64>,
    },
    /// `condition ? a : b`, broadcasting; inputs condition, a, b.
    Where,
    /// Gather along `axis`: inputs data and indices (either may be the computed one).
    Gather {
        /// The axis of data that indices select along.
        axis: i64,
    },
    /// Combines the values along `axes` (`None`: all axes).
    Reduce {
        /// How.
        op: ReduceOp,
        /// The reduced axes.
        axes: Option<Vec<i64>>,
        /// Keep the reduced axes as size 1.
        keep_dims: bool,
    },
}

/// One operation of the graph, named after its ONNX node.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The ONNX node name (or a generated one when the file has none).
    pub name: String,
    /// The operation.
    pub op: Op,
    /// Input value names (activations or initializers).
    pub inputs: Vec<String>,
    /// Output value name.
    pub output: String,
}

/// The graph input: its name and declared dimensions (`None` for symbolic ones, like batch).
#[derive(Clone, Debug, PartialEq)]
pub struct GraphInput {
    /// Value name.
    pub name: String,
    /// Declared dimensions; `None` where the file names a symbol or nothing.
    pub dims: Vec<Option<usize>>,
}

/// A model as a list of nodes in execution order with its constant tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    /// The single input.
    pub input: GraphInput,
    /// The name of the single output value.
    pub output: String,
    /// Nodes in topological order.
    pub nodes: Vec<Node>,
    /// Constant tensors (weights, biases, shapes) by value name.
    pub initializers: HashMap<String, Tensor>,
}

impl Graph {
    /// How many nodes read each value (the graph output counts as one reader).
    pub fn consumer_counts(&self) -> HashMap<&str, usize> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for node in &self.nodes {
            for input in &node.inputs {
                *counts.entry(input.as_str()).or_default() += 1;
            }
        }
        *counts.entry(self.output.as_str()).or_default() += 1;
        counts
    }
}
