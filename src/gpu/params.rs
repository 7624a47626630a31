//! Typed kernel parameters: one `#[repr(C)]` struct per kernel family, bound at binding 0 of
//! every dispatch and mirrored field for field by a WGSL `struct` in the family's shader (a test
//! parses the shaders with naga and compares the two layouts member by member).

use bytemuck::{Pod, Zeroable};

use crate::model::ir::{Activation, BinaryOp, ReduceOp};

/// Declares a parameter struct and, for the layout test, its members' names and byte offsets.
macro_rules! kernel_params {
    ($(#[$meta:meta])* $name:ident { $($(#[$field_meta:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl $name {
            /// The WGSL struct's name, and each member's name and byte offset.
            #[cfg(test)]
            pub(crate) const LAYOUT: (&'static str, &'static [(&'static str, usize)]) =
                (stringify!($name), &[$((stringify!($field), std::mem::offset_of!($name, $field)),)*]);
        }
    };
}

#[path = "params_image.rs"]
mod image;
pub use image::{ClassScore, ImageInputParams, ImageOutputParams, TopKParams};

kernel_params! {
    /// An activation as the kernels apply it (WGSL `Activation` in `common.wgsl`): a code and up
    /// to two arguments.
    ActivationParams {
        /// 0 identity, 1 relu, 2 clip, 3 leaky relu, 4 sigmoid, 5 hard sigmoid, 6 hard swish,
        /// 7 tanh, 8 exp, 9 log, 10 sqrt, 11 neg, 12 abs, 13 reciprocal, 14 erf, 15 gelu,
        /// 16 gelu (tanh approximation).
        code: u32,
        /// First argument (clip's minimum, leaky relu's and hard sigmoid's alpha).
        a: f32,
        /// Second argument (clip's maximum, hard sigmoid's beta).
        b: f32,
    }
}

impl From<Activation> for ActivationParams {
    fn from(activation: Activation) -> Self {
        let (code, a, b) = match activation {
            Activation::Identity => (0, 0.0, 0.0),
            Activation::Relu => (1, 0.0, 0.0),
            Activation::Clip { min, max } => (2, min, max),
            Activation::LeakyRelu { alpha } => (3, alpha, 0.0),
            Activation::Sigmoid => (4, 0.0, 0.0),
            Activation::HardSigmoid { alpha, beta } => (5, alpha, beta),
            Activation::HardSwish => (6, 0.0, 0.0),
            Activation::Tanh => (7, 0.0, 0.0),
            Activation::Exp => (8, 0.0, 0.0),
            Activation::Log => (9, 0.0, 0.0),
            Activation::Sqrt => (10, 0.0, 0.0),
            Activation::Neg => (11, 0.0, 0.0),
            Activation::Abs => (12, 0.0, 0.0),
            Activation::Reciprocal => (13, 0.0, 0.0),
            Activation::Erf => (14, 0.0, 0.0),
            Activation::Gelu { tanh: false } => (15, 0.0, 0.0),
            Activation::Gelu { tanh: true } => (16, 0.0, 0.0),
            Activation::Floor => (17, 0.0, 0.0),
            Activation::Ceil => (18, 0.0, 0.0),
            Activation::Round => (19, 0.0, 0.0),
            Activation::Trunc => (20, 0.0, 0.0),
        };
        Self { code, a, b }
    }
}

kernel_params! {
    /// The convolution family (`conv.wgsl`), NCHW, with its fused epilogue.
    ConvParams {
        /// Output values.
        total: u32,
        /// Images in the batch.
        batch: u32,
        /// Input channels.
        in_channels: u32,
        /// Input rows.
        in_height: u32,
        /// Input columns.
        in_width: u32,
        /// Output channels.
        out_channels: u32,
        /// Output rows.
        out_height: u32,
        /// Output columns.
        out_width: u32,
        /// Kernel rows.
        kernel_height: u32,
        /// Kernel columns.
        kernel_width: u32,
        /// Row stride.
        stride_y: u32,
        /// Column stride.
        stride_x: u32,
        /// Padding above.
        pad_top: u32,
        /// Padding on the left.
        pad_left: u32,
        /// Row dilation.
        dilation_y: u32,
        /// Column dilation.
        dilation_x: u32,
        /// Channel groups.
        groups: u32,
        /// 1 where a bias is added.
        has_bias: u32,
        /// 1 where a residual (same shape as the output) is added.
        has_residual: u32,
        /// Applied last.
        activation: ActivationParams,
    }
}

/// Dimensions a broadcasting binary operation handles.
pub const MAX_RANK: usize = 6;

kernel_params! {
    /// Broadcasting Add and Mul (`binary.wgsl`).
    BinaryParams {
        /// Output values.
        total: u32,
        /// 0 add, 1 mul, 2 sub, 3 div, 4 pow, 5 min, 6 max ([`BinaryParams::code`]).
        op: u32,
        /// Dimensions used of the arrays below.
        rank: u32,
        /// Output dimensions, outermost first.
        out_dims: [u32; MAX_RANK],
        /// First operand's strides (0 along a broadcast dimension).
        a_strides: [u32; MAX_RANK],
        /// Second operand's strides.
        b_strides: [u32; MAX_RANK],
    }
}

impl BinaryParams {
    /// The code `binary.wgsl` reads for `op`.
    pub fn code(op: BinaryOp) -> u32 {
        match op {
            BinaryOp::Add => 0,
            BinaryOp::Mul => 1,
            BinaryOp::Sub => 2,
            BinaryOp::Div => 3,
            BinaryOp::Pow => 4,
            BinaryOp::Min => 5,
            BinaryOp::Max => 6,
        }
    }
}

kernel_params! {
    /// A standalone activation (`activation.wgsl`).
    ActivationKernelParams {
        /// Values.
        total: u32,
        /// What to apply.
        activation: ActivationParams,
    }
}

kernel_params! {
    /// Per-channel scale and shift (`channel_affine.wgsl`).
    ChannelAffineParams {
        /// Values.
        total: u32,
        /// Channels.
        channels: u32,
        /// Values per channel plane.
        inner: u32,
    }
}

kernel_params! {
    /// Global average pooling (`global_average.wgsl`).
    GlobalAverageParams {
        /// Planes (batch times channels).
        planes: u32,
        /// Values per plane.
        plane_size: u32,
    }
}

kernel_params! {
    /// Windowed max and average pooling (`pool2d.wgsl`).
    Pool2dParams {
        /// Output values.
        total: u32,
        /// Input rows.
        in_height: u32,
        /// Input columns.
        in_width: u32,
        /// Output rows.
        out_height: u32,
        /// Output columns.
        out_width: u32,
        /// Window rows.
        kernel_height: u32,
        /// Window columns.
        kernel_width: u32,
        /// Row stride.
        stride_y: u32,
        /// Column stride.
        stride_x: u32,
        /// Padding above.
        pad_top: u32,
        /// Padding on the left.
        pad_left: u32,
        /// Padding below.
        pad_bottom: u32,
        /// Padding on the right.
        pad_right: u32,
        /// 1 max, 0 average.
        is_max: u32,
        /// 1 where an average divides by the whole window, padding included.
        count_include_pad: u32,
    }
}

kernel_params! {
    /// Gemm and batched MatMul (`matmul.wgsl`): `y = alpha * A B + beta * C`, operands addressed
    /// through strides (transposes are strides).
    GemmParams {
        /// Output values.
        total: u32,
        /// Rows of the output.
        m: u32,
        /// Columns of the output.
        n: u32,
        /// Length of each dot product.
        k: u32,
        /// Batches at the inner level (the batch index is `outer * inner_batches + inner`).
        inner_batches: u32,
        /// A's stride between inner batches (0: shared).
        a_batch_stride: u32,
        /// B's stride between inner batches (0: shared).
        b_batch_stride: u32,
        /// A's stride between outer batches (0: shared).
        a_outer_stride: u32,
        /// B's stride between outer batches (0: shared).
        b_outer_stride: u32,
        /// A's row stride.
        a_row_stride: u32,
        /// A's column stride.
        a_col_stride: u32,
        /// B's row stride.
        b_row_stride: u32,
        /// B's column stride.
        b_col_stride: u32,
        /// 1 where C is added.
        has_c: u32,
        /// C's row stride.
        c_row_stride: u32,
        /// C's column stride.
        c_col_stride: u32,
        /// Scales the product.
        alpha: f32,
        /// Scales C.
        beta: f32,
    }
}

kernel_params! {
    /// One input's share of a Concat (`concat.wgsl`).
    ConcatCopyParams {
        /// Values copied (outer times the input slab).
        total: u32,
        /// The input's values per outer index.
        input_slab: u32,
        /// The output's values per outer index.
        output_slab: u32,
        /// Where this input starts in each output slab.
        offset: u32,
    }
}

kernel_params! {
    /// Softmax along one axis (`softmax.wgsl`).
    SoftmaxParams {
        /// Rows (every index but the axis).
        rows: u32,
        /// Length of the axis.
        length: u32,
        /// Values after the axis.
        inner: u32,
        /// 1: LogSoftmax.
        log: u32,
    }
}

kernel_params! {
    /// A copy through strides (`strided_copy.wgsl`): transposes and strided slices.
    StridedCopyParams {
        /// Output values.
        total: u32,
        /// Dimensions used of the arrays below.
        rank: u32,
        /// Where in the input the first output value is.
        offset: u32,
        /// Output dimensions, outermost first.
        out_dims: [u32; MAX_RANK],
        /// Input elements between consecutive indices of each output dimension (may be negative).
        strides: [i32; MAX_RANK],
    }
}

kernel_params! {
    /// A reduction over any axes (`reduce.wgsl`).
    ReduceParams {
        /// Output values.
        total: u32,
        /// How values combine ([`ReduceParams::code`]).
        op: u32,
        /// Input values per output value.
        count: u32,
        /// The input's rank.
        rank: u32,
        /// The input's dimensions with the reduced ones set to 1.
        kept_dims: [u32; MAX_RANK],
        /// The input's strides.
        strides: [u32; MAX_RANK],
        /// Reduced axes.
        reduced_rank: u32,
        /// Their extents, outermost first.
        reduced_dims: [u32; MAX_RANK],
        /// Their strides in the input.
        reduced_strides: [u32; MAX_RANK],
    }
}

impl ReduceParams {
    /// The code `reduce.wgsl` reads for `op`.
    pub fn code(op: ReduceOp) -> u32 {
        match op {
            ReduceOp::Mean => 0,
            ReduceOp::Sum => 1,
            ReduceOp::Max => 2,
            ReduceOp::Min => 3,
            ReduceOp::L2 => 4,
        }
    }
}

kernel_params! {
    /// LayerNormalization and InstanceNormalization (`layer_norm.wgsl`).
    LayerNormParams {
        /// Rows normalised (the values before the normalised axes).
        rows: u32,
        /// Values per row.
        inner: u32,
        /// 1 where a bias is added.
        has_bias: u32,
        /// Added to the variance.
        epsilon: f32,
        /// 1: scale and bias per channel (InstanceNormalization), not per position.
        per_channel: u32,
        /// Channels (InstanceNormalization: a row's channel is its index modulo this).
        channels: u32,
    }
}

kernel_params! {
    /// A transposed convolution (`conv_transpose.wgsl`), NCHW.
    ConvTransposeParams {
        /// Output values.
        total: u32,
        /// Images in the batch.
        batch: u32,
        /// Input channels.
        in_channels: u32,
        /// Input rows.
        in_height: u32,
        /// Input columns.
        in_width: u32,
        /// Output channels.
        out_channels: u32,
        /// Output rows.
        out_height: u32,
        /// Output columns.
        out_width: u32,
        /// Kernel rows.
        kernel_height: u32,
        /// Kernel columns.
        kernel_width: u32,
        /// Row stride.
        stride_y: u32,
        /// Column stride.
        stride_x: u32,
        /// Rows removed at the top.
        pad_top: u32,
        /// Columns removed on the left.
        pad_left: u32,
        /// Row dilation.
        dilation_y: u32,
        /// Column dilation.
        dilation_x: u32,
        /// Channel groups.
        groups: u32,
        /// 1 where a bias is added.
        has_bias: u32,
    }
}

kernel_params! {
    /// Resize of the last two axes (`resize.wgsl`).
    ResizeParams {
        /// Output values.
        total: u32,
        /// Input rows.
        in_height: u32,
        /// Input columns.
        in_width: u32,
        /// Output rows.
        out_height: u32,
        /// Output columns.
        out_width: u32,
        /// 1: bilinear, 0: nearest.
        linear: u32,
        /// 0 half_pixel, 1 pytorch_half_pixel, 2 asymmetric, 3 align_corners.
        coordinates: u32,
        /// 0 round_prefer_floor, 1 round_prefer_ceil, 2 floor, 3 ceil.
        nearest: u32,
        /// The row scale the coordinate transformation divides by.
        scale_y: f32,
        /// The column scale.
        scale_x: f32,
    }
}

kernel_params! {
    /// A forward LSTM or GRU layer (`recurrent.wgsl`).
    RecurrentParams {
        /// Sequence length.
        seq: u32,
        /// Batch size (one workgroup each).
        batch: u32,
        /// Input features.
        input_size: u32,
        /// Hidden units (at most 256).
        hidden: u32,
        /// 0 LSTM, 1 GRU.
        gru: u32,
        /// 1 where biases are bound.
        has_bias: u32,
        /// 1 where an initial state is bound.
        has_initial: u32,
    }
}

kernel_params! {
    /// Pad and Tile (`pad.wgsl`).
    PadParams {
        /// Output values.
        total: u32,
        /// Dimensions used of the arrays below.
        rank: u32,
        /// 0 constant, 1 reflect, 2 edge, 3 wrap (Tile).
        mode: u32,
        /// The constant mode's value.
        value: f32,
        /// Output dimensions, outermost first.
        out_dims: [u32; MAX_RANK],
        /// Input dimensions.
        in_dims: [u32; MAX_RANK],
        /// Positions before the input's first value, per axis (negative crops).
        begins: [i32; MAX_RANK],
    }
}

kernel_params! {
    /// Where (`select.wgsl`): three broadcast operands.
    SelectParams {
        /// Output values.
        total: u32,
        /// Dimensions used of the arrays below.
        rank: u32,
        /// Output dimensions, outermost first.
        out_dims: [u32; MAX_RANK],
        /// The condition's strides (0 where broadcast).
        condition_strides: [u32; MAX_RANK],
        /// The first choice's strides.
        a_strides: [u32; MAX_RANK],
        /// The second choice's strides.
        b_strides: [u32; MAX_RANK],
    }
}

kernel_params! {
    /// Gather along one axis (`gather.wgsl`).
    GatherParams {
        /// Output values.
        total: u32,
        /// The data's extent along the axis.
        extent: u32,
        /// Indices.
        count: u32,
        /// Values after the axis.
        inner: u32,
    }
}

kernel_params! {
    /// A conversion between f32 and the stored element type at a block's edges (`cast.wgsl`).
    CastParams {
        /// Values converted.
        values: u32,
    }
}

/// One dispatch's parameters, by kernel family.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelParams {
    /// Any convolution kernel.
    Conv(ConvParams),
    /// Broadcasting Add/Mul.
    Binary(BinaryParams),
    /// A standalone activation.
    Activation(ActivationKernelParams),
    /// Per-channel scale and shift.
    ChannelAffine(ChannelAffineParams),
    /// Global average pooling.
    GlobalAverage(GlobalAverageParams),
    /// Windowed pooling.
    Pool2d(Pool2dParams),
    /// Gemm and MatMul.
    Gemm(GemmParams),
    /// One input of a Concat.
    ConcatCopy(ConcatCopyParams),
    /// Softmax.
    Softmax(SoftmaxParams),
    /// A transpose or strided slice.
    StridedCopy(StridedCopyParams),
    /// A reduction.
    Reduce(ReduceParams),
    /// LayerNormalization.
    LayerNorm(LayerNormParams),
    /// Gather.
    Gather(GatherParams),
    /// Where.
    Select(SelectParams),
    /// A transposed convolution.
    ConvTranspose(ConvTransposeParams),
    /// A resize.
    Resize(ResizeParams),
    /// A recurrent layer.
    Recurrent(RecurrentParams),
    /// Pad or Tile.
    Pad(PadParams),
}

impl KernelParams {
    /// The bytes bound at binding 0.
    pub fn bytes(&self) -> &[u8] {
        match self {
            KernelParams::Conv(p) => bytemuck::bytes_of(p),
            KernelParams::Binary(p) => bytemuck::bytes_of(p),
            KernelParams::Activation(p) => bytemuck::bytes_of(p),
            KernelParams::ChannelAffine(p) => bytemuck::bytes_of(p),
            KernelParams::GlobalAverage(p) => bytemuck::bytes_of(p),
            KernelParams::Pool2d(p) => bytemuck::bytes_of(p),
            KernelParams::Gemm(p) => bytemuck::bytes_of(p),
            KernelParams::ConcatCopy(p) => bytemuck::bytes_of(p),
            KernelParams::Softmax(p) => bytemuck::bytes_of(p),
            KernelParams::StridedCopy(p) => bytemuck::bytes_of(p),
            KernelParams::Reduce(p) => bytemuck::bytes_of(p),
            KernelParams::LayerNorm(p) => bytemuck::bytes_of(p),
            KernelParams::Gather(p) => bytemuck::bytes_of(p),
            KernelParams::Select(p) => bytemuck::bytes_of(p),
            KernelParams::ConvTranspose(p) => bytemuck::bytes_of(p),
            KernelParams::Resize(p) => bytemuck::bytes_of(p),
            KernelParams::Recurrent(p) => bytemuck::bytes_of(p),
            KernelParams::Pad(p) => bytemuck::bytes_of(p),
        }
    }
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;
