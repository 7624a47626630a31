//! The kernels: every WGSL entry point the block compiler dispatches, grouped in families, one
//! shader file and one parameter struct ([`super::params`]) per family.

/// A shader file in `shaders/`: kernels that share one parameter struct at binding 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelFamily {
    /// Convolutions (`conv.wgsl`, subgroup variants in `conv_subgroup.wgsl`).
    Conv,
    /// Broadcasting Add/Mul (`binary.wgsl`).
    Binary,
    /// Standalone activations (`activation.wgsl`).
    Activation,
    /// Per-channel scale and shift (`channel_affine.wgsl`).
    ChannelAffine,
    /// Global average pooling (`global_average.wgsl`).
    GlobalAverage,
    /// Windowed pooling (`pool2d.wgsl`).
    Pool2d,
    /// Gemm and MatMul (`matmul.wgsl`, subgroup variants in `matmul_subgroup.wgsl`).
    Matmul,
    /// Concat copies (`concat.wgsl`).
    Concat,
    /// Softmax (`softmax.wgsl`).
    Softmax,
    /// Transposes and strided slices (`strided_copy.wgsl`).
    StridedCopy,
    /// Reductions over any axes (`reduce.wgsl`).
    Reduce,
    /// LayerNormalization (`layer_norm.wgsl`).
    LayerNorm,
    /// Gather along one axis (`gather.wgsl`).
    Gather,
    /// Where (`select.wgsl`).
    Select,
    /// Transposed convolutions (`conv_transpose.wgsl`).
    ConvTranspose,
    /// Resize (`resize.wgsl`).
    Resize,
    /// LSTM and GRU (`recurrent.wgsl`).
    Recurrent,
    /// Pad and Tile (`pad.wgsl`).
    Pad,
}

impl KernelFamily {
    /// Every family.
    pub const ALL: [KernelFamily; 18] = [
        KernelFamily::Conv,
        KernelFamily::Binary,
        KernelFamily::Activation,
        KernelFamily::ChannelAffine,
        KernelFamily::GlobalAverage,
        KernelFamily::Pool2d,
        KernelFamily::Matmul,
        KernelFamily::Concat,
        KernelFamily::Softmax,
        KernelFamily::StridedCopy,
        KernelFamily::Reduce,
        KernelFamily::LayerNorm,
        KernelFamily::Gather,
        KernelFamily::Select,
        KernelFamily::ConvTranspose,
        KernelFamily::Resize,
        KernelFamily::Recurrent,
        KernelFamily::Pad,
    ];

    /// The family's WGSL source (without the shared prelude).
    pub fn source(self) -> &'static str {
        match self {
            KernelFamily::Conv => include_str!("../../shaders/conv.wgsl"),
            KernelFamily::Binary => include_str!("../../shaders/binary.wgsl"),
            KernelFamily::Activation => include_str!("../../shaders/activation.wgsl"),
            KernelFamily::ChannelAffine => include_str!("../../shaders/channel_affine.wgsl"),
            KernelFamily::GlobalAverage => include_str!("../../shaders/global_average.wgsl"),
            KernelFamily::Pool2d => include_str!("../../shaders/pool2d.wgsl"),
            KernelFamily::Matmul => include_str!("../../shaders/matmul.wgsl"),
            KernelFamily::Concat => include_str!("../../shaders/concat.wgsl"),
            KernelFamily::Softmax => include_str!("../../shaders/softmax.wgsl"),
            KernelFamily::StridedCopy => include_str!("../../shaders/strided_copy.wgsl"),
            KernelFamily::Reduce => include_str!("../../shaders/reduce.wgsl"),
            KernelFamily::LayerNorm => include_str!("../../shaders/layer_norm.wgsl"),
            KernelFamily::Gather => include_str!("../../shaders/gather.wgsl"),
            KernelFamily::Select => include_str!("../../shaders/select.wgsl"),
            KernelFamily::ConvTranspose => include_str!("../../shaders/conv_transpose.wgsl"),
            KernelFamily::Resize => include_str!("../../shaders/resize.wgsl"),
            KernelFamily::Recurrent => include_str!("../../shaders/recurrent.wgsl"),
            KernelFamily::Pad => include_str!("../../shaders/pad.wgsl"),
        }
    }

    /// The subgroup variants of the family's kernels, appended to it where the device offers
    /// subgroup operations.
    pub fn subgroup_source(self) -> &'static str {
        match self {
            KernelFamily::Conv => include_str!("../../shaders/conv_subgroup.wgsl"),
            KernelFamily::Matmul => include_str!("../../shaders/matmul_subgroup.wgsl"),
            _ => "",
        }
    }

    /// A label for the family's shader module.
    pub fn label(self) -> &'static str {
        match self {
            KernelFamily::Conv => "conv",
            KernelFamily::Binary => "binary",
            KernelFamily::Activation => "activation",
            KernelFamily::ChannelAffine => "channel affine",
            KernelFamily::GlobalAverage => "global average",
            KernelFamily::Pool2d => "pool2d",
            KernelFamily::Matmul => "matmul",
            KernelFamily::Concat => "concat",
            KernelFamily::Softmax => "softmax",
            KernelFamily::StridedCopy => "strided copy",
            KernelFamily::Reduce => "reduce",
            KernelFamily::LayerNorm => "layer norm",
            KernelFamily::Gather => "gather",
            KernelFamily::Select => "select",
            KernelFamily::ConvTranspose => "conv transpose",
            KernelFamily::Resize => "resize",
            KernelFamily::Recurrent => "recurrent",
            KernelFamily::Pad => "pad",
        }
    }
}

/// A WGSL entry point of one of the kernel families in `shaders/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// General convolution with fused epilogue.
    Conv2d,
    /// General convolution, four output channels per invocation.
    Conv2dFourChannels,
    /// Depthwise convolution (one group per channel) with fused epilogue.
    ConvDepthwise,
    /// Depthwise 3x3 convolution, dilation 1, column stride 1 or 2: four outputs of a row per
    /// invocation.
    ConvDepthwise3x3,
    /// 1x1 convolution over the whole batch, 16x16 output tiles: mid-sized layers.
    ConvPointwise,
    /// 1x1 convolution, 64x64 output tiles with 4x4 outputs per invocation: large layers.
    ConvPointwiseBlocked,
    /// 1x1 convolution with at most a few columns, dot products split across a workgroup.
    ConvPointwiseNarrow,
    /// 1x1 convolution without workgroup memory: 4 output channels by 4 columns per
    /// invocation (output channels a multiple of 4).
    ConvPointwiseQuads,
    /// Broadcasting Add/Mul.
    Binary,
    /// Standalone activation.
    Activation,
    /// Per-channel scale and shift.
    ChannelAffine,
    /// Global average pooling.
    GlobalAverage,
    /// Windowed max/average pooling.
    Pool2d,
    /// Gemm and MatMul, one invocation per output.
    Gemm,
    /// Gemm and MatMul with few outputs: each output's dot product split across a workgroup.
    GemmSplit,
    /// One input's share of a Concat.
    ConcatCopy,
    /// Softmax along one axis.
    Softmax,
    /// A transpose or strided slice: a copy through strides.
    StridedCopy,
    /// A reduction over any axes.
    Reduce,
    /// LayerNormalization, one invocation per row.
    LayerNorm,
    /// Gather along one axis.
    Gather,
    /// Where: a broadcast choice between two tensors.
    Select,
    /// A transposed convolution, one invocation per output value.
    ConvTranspose,
    /// Resize of the last two axes, nearest or bilinear.
    Resize,
    /// A forward LSTM or GRU: one workgroup per batch element walks the sequence.
    Recurrent,
    /// Pad or Tile: each output value read from a mapped input position.
    Pad,
}

impl Kernel {
    /// Every kernel, for building the pipeline library.
    pub const ALL: [Kernel; 26] = [
        Kernel::Conv2d,
        Kernel::Conv2dFourChannels,
        Kernel::ConvDepthwise,
        Kernel::ConvDepthwise3x3,
        Kernel::ConvPointwise,
        Kernel::ConvPointwiseBlocked,
        Kernel::ConvPointwiseNarrow,
        Kernel::ConvPointwiseQuads,
        Kernel::Binary,
        Kernel::Activation,
        Kernel::ChannelAffine,
        Kernel::GlobalAverage,
        Kernel::Pool2d,
        Kernel::Gemm,
        Kernel::GemmSplit,
        Kernel::ConcatCopy,
        Kernel::Softmax,
        Kernel::StridedCopy,
        Kernel::Reduce,
        Kernel::LayerNorm,
        Kernel::Gather,
        Kernel::Select,
        Kernel::ConvTranspose,
        Kernel::Resize,
        Kernel::Recurrent,
        Kernel::Pad,
    ];

    /// The shader family the kernel belongs to and its entry point there.
    pub fn entry(self) -> (KernelFamily, &'static str) {
        use KernelFamily as F;
        match self {
            Kernel::Conv2d => (F::Conv, "conv2d"),
            Kernel::Conv2dFourChannels => (F::Conv, "conv2d_four_channels"),
            Kernel::ConvDepthwise => (F::Conv, "conv_depthwise"),
            Kernel::ConvDepthwise3x3 => (F::Conv, "conv_depthwise_3x3"),
            Kernel::ConvPointwise => (F::Conv, "conv_pointwise"),
            Kernel::ConvPointwiseBlocked => (F::Conv, "conv_pointwise_blocked"),
            Kernel::ConvPointwiseNarrow => (F::Conv, "conv_pointwise_narrow"),
            Kernel::ConvPointwiseQuads => (F::Conv, "conv_pointwise_quads"),
            Kernel::Binary => (F::Binary, "binary"),
            Kernel::Activation => (F::Activation, "activation"),
            Kernel::ChannelAffine => (F::ChannelAffine, "channel_affine"),
            Kernel::GlobalAverage => (F::GlobalAverage, "global_average"),
            Kernel::Pool2d => (F::Pool2d, "pool2d"),
            Kernel::Gemm => (F::Matmul, "gemm"),
            Kernel::GemmSplit => (F::Matmul, "gemm_split"),
            Kernel::ConcatCopy => (F::Concat, "concat_copy"),
            Kernel::Softmax => (F::Softmax, "softmax"),
            Kernel::StridedCopy => (F::StridedCopy, "strided_copy"),
            Kernel::Reduce => (F::Reduce, "reduce"),
            Kernel::LayerNorm => (F::LayerNorm, "layer_norm"),
            Kernel::Gather => (F::Gather, "gather"),
            Kernel::Select => (F::Select, "select_where"),
            Kernel::ConvTranspose => (F::ConvTranspose, "conv_transpose"),
            Kernel::Resize => (F::Resize, "resize"),
            Kernel::Recurrent => (F::Recurrent, "recurrent"),
            Kernel::Pad => (F::Pad, "pad"),
        }
    }

    /// The entry point of the variant that sums with subgroup operations, for kernels that have
    /// one (in the same family, compiled in only where the device offers them).
    pub fn subgroup_entry(self) -> Option<&'static str> {
        match self {
            Kernel::ConvPointwiseNarrow => Some("conv_pointwise_narrow_subgroup"),
            Kernel::GemmSplit => Some("gemm_split_subgroup"),
            _ => None,
        }
    }

    /// How many read-only storage buffers follow the parameters (the output comes after).
    pub fn input_bindings(self) -> usize {
        match self {
            Kernel::Conv2d
            | Kernel::Conv2dFourChannels
            | Kernel::ConvDepthwise
            | Kernel::ConvDepthwise3x3
            | Kernel::ConvPointwise
            | Kernel::ConvPointwiseBlocked
            | Kernel::ConvPointwiseNarrow
            | Kernel::ConvPointwiseQuads => 4,
            Kernel::Binary | Kernel::Activation | Kernel::ChannelAffine | Kernel::Gemm | Kernel::GemmSplit | Kernel::LayerNorm | Kernel::Select | Kernel::ConvTranspose => 3,
            Kernel::Gather => 2,
            Kernel::Recurrent => 5,
            Kernel::GlobalAverage | Kernel::Pool2d | Kernel::ConcatCopy | Kernel::Softmax | Kernel::StridedCopy | Kernel::Reduce | Kernel::Resize | Kernel::Pad => 1,
        }
    }
}

