//! Every GPU kernel against the CPU reference executor on random shapes: odd sizes, stride 2,
//! padding, groups, dilation, batch > 1, fused epilogues. Each graph runs three times: with the
//! subgroup variants of the kernels that have them (where the device offers subgroups), without
//! them, and storing tensors as f16 (where the device offers `SHADER_F16`).

use std::collections::HashMap;

use bevy_p2p_inference::gpu::KernelLibrary;
use bevy_p2p_inference::model::ir::{Activation, BinaryOp, Conv2d, Graph, GraphInput, Node, Op, Pool2d, ReduceOp};
use bevy_p2p_inference::model::run_reference;
use bevy_p2p_inference::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::*;

const TOLERANCE: f32 = 1e-5;
/// With tensors stored as f16 (about 3 significant digits per stored input, weight and output,
/// arithmetic in f32): the largest error seen on these graphs is 7.4e-4 (lavapipe), and a
/// kernel that reads or writes one wrong element is off by far more.
const F16_TOLERANCE: f32 = 2e-3;

fn random(rng: &mut StdRng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(shape.to_vec(), (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()).unwrap()
}

/// Picks one of the shared device's kernel libraries.
type ChooseLibrary = fn(&Gpu) -> &KernelLibrary;

/// A graph builder: nodes read "x" or earlier outputs; constants are random.
struct Builder {
    rng: StdRng,
    nodes: Vec<Node>,
    initializers: HashMap<String, Tensor>,
}

impl Builder {
    fn new(seed: u64) -> Self {
        Self { rng: StdRng::seed_from_u64(seed), nodes: vec![], initializers: HashMap::new() }
    }
    fn constant(&mut self, shape: &[usize]) -> String {
        let name = format!("c{}", self.initializers.len());
        let t = random(&mut self.rng, shape);
        self.initializers.insert(name.clone(), t);
        name
    }
    /// A constant of `shape` with every value `value`.
    fn filled(&mut self, shape: &[usize], value: f32) -> String {
        let name = format!("c{}", self.initializers.len());
        self.initializers.insert(name.clone(), Tensor::new(shape.to_vec(), vec![value; shape.iter().product()]).unwrap());
        name
    }
    /// A random constant with values in [-scale, scale).
    fn scaled_constant(&mut self, shape: &[usize], scale: f32) -> String {
        let name = format!("c{}", self.initializers.len());
        let t = random(&mut self.rng, shape);
        self.initializers.insert(name.clone(), Tensor::new(shape.to_vec(), t.data().iter().map(|v| v * scale).collect()).unwrap());
        name
    }
    /// A random constant with values in [0.5, 1.5).
    fn positive_constant(&mut self, shape: &[usize]) -> String {
        let name = format!("c{}", self.initializers.len());
        let t = random(&mut self.rng, shape);
        self.initializers.insert(name.clone(), Tensor::new(shape.to_vec(), t.data().iter().map(|v| v.abs() + 0.5).collect()).unwrap());
        name
    }
    fn node(&mut self, op: Op, inputs: Vec<String>) -> String {
        let output = format!("v{}", self.nodes.len());
        self.nodes.push(Node { name: format!("n{}", self.nodes.len()), op, inputs, output: output.clone() });
        output
    }
    /// Runs the graph (output = last node) on GPU and CPU and compares.
    /// The graph built so far, its output the last node's.
    fn graph(&self) -> Graph {
        Graph {
            input: GraphInput { name: "x".into(), dims: vec![] },
            output: self.nodes.last().unwrap().output.clone(),
            nodes: self.nodes.clone(),
            initializers: self.initializers.clone(),
        }
    }
    /// Runs the graph on a random input of `input_shape` with every kernel set and compares
    /// with the CPU reference.
    fn check(self, input_shape: &[usize]) {
        self.check_kernel_sets(input_shape, 4);
    }
    /// As `check`, without f16 storage: for functions with steps (rounding), whose output
    /// jumps where f16 storage moves a value across an integer.
    fn check_f32_storage(self, input_shape: &[usize]) {
        self.check_kernel_sets(input_shape, 3);
    }
    fn check_kernel_sets(mut self, input_shape: &[usize], sets: usize) {
        let input = random(&mut self.rng, input_shape);
        let graph = self.graph();
        let want = run_reference(&graph, &input).expect("reference runs");
        let ops = graph.nodes.iter().map(|n| &n.op).collect::<Vec<_>>();
        let kernel_sets: [(&str, ChooseLibrary, f32); 4] = [
            ("the default kernels", |gpu| &gpu.library, TOLERANCE),
            ("the kernels without subgroup variants", |gpu| &gpu.library_without_subgroups, TOLERANCE),
            ("the kernels without workgroup tiles", |gpu| &gpu.library_without_workgroup_tiles, TOLERANCE),
            ("f16 storage", |gpu| &gpu.library_with_f16_storage, F16_TOLERANCE),
        ];
        for (kernels, library, tolerance) in kernel_sets.into_iter().take(sets) {
            let err = relative_error(&run_gpu_with(&graph, &input, library), &want);
            assert!(err <= tolerance, "relative error {err} with {kernels} for {ops:?}");
        }
    }
}

fn x() -> String {
    "x".into()
}

fn conv(strides: [usize; 2], pads: [usize; 4], dilations: [usize; 2], groups: usize) -> Op {
    Op::Conv(Conv2d { strides, pads, dilations, groups })
}

#[test]
fn conv_with_odd_sizes_stride_2_asymmetric_padding_and_batch_3() {
    let mut b = Builder::new(1);
    let (w, bias) = (b.constant(&[5, 3, 3, 3]), b.constant(&[5]));
    b.node(conv([2, 2], [1, 0, 2, 1], [1, 1], 1), vec![x(), w, bias]);
    b.check(&[3, 3, 9, 7]);
}

#[test]
fn convs_with_four_output_channels_per_invocation_grouped_strided_and_dilated() {
    // A stem-like 3x3 stride-2 convolution with 8 output channels, then 2 groups of 4 output
    // channels with dilation, asymmetric padding and a fused HardSwish.
    let mut b = Builder::new(11);
    let (w, bias) = (b.constant(&[8, 3, 3, 3]), b.constant(&[8]));
    b.node(conv([2, 2], [1, 1, 1, 1], [1, 1], 1), vec![x(), w, bias]);
    b.check(&[3, 3, 11, 9]);

    let mut b = Builder::new(12);
    let w = b.constant(&[8, 3, 3, 2]);
    let c = b.node(conv([1, 2], [2, 0, 1, 1], [2, 1], 2), vec![x(), w]);
    b.node(Op::Activation(Activation::HardSwish), vec![c]);
    b.check(&[2, 6, 10, 7]);
}

#[test]
fn grouped_and_dilated_conv_without_bias() {
    let mut b = Builder::new(2);
    let w = b.constant(&[6, 2, 3, 2]);
    b.node(conv([1, 2], [2, 1, 2, 1], [2, 1], 3), vec![x(), w]);
    b.check(&[2, 6, 11, 8]);
}

#[test]
fn depthwise_conv_with_fused_relu6() {
    let mut b = Builder::new(3);
    let (w, bias) = (b.constant(&[7, 1, 3, 3]), b.constant(&[7]));
    let c = b.node(conv([2, 2], [1, 1, 1, 1], [1, 1], 7), vec![x(), w, bias]);
    b.node(Op::Activation(Activation::Clip { min: 0.0, max: 6.0 }), vec![c]);
    b.check(&[2, 7, 13, 10]);
}

#[test]
fn depthwise_3x3_convs_with_stride_1_and_2_ragged_rows_asymmetric_padding_and_residual() {
    // Four outputs of a row per invocation: widths that leave 1, 2 and 3 outputs in the last
    // quad, a column stride of 2 with a row stride of 1, and a fused residual and activation.
    for (seed, strides, pads, hw) in [(20, [1, 1], [1, 1, 1, 1], [9, 11]), (21, [1, 2], [0, 1, 2, 0], [6, 13]), (22, [2, 2], [1, 0, 1, 1], [12, 10]), (23, [1, 1], [0; 4], [3, 4])] {
        let mut b = Builder::new(seed);
        let (w, bias) = (b.constant(&[5, 1, 3, 3]), b.constant(&[5]));
        let c = b.node(conv(strides, pads, [1, 1], 5), vec![x(), w, bias]);
        if strides == [1, 1] && pads == [1; 4] {
            let s = b.node(Op::Binary(BinaryOp::Add), vec![c, x()]);
            b.node(Op::Activation(Activation::Relu), vec![s]);
        }
        b.check(&[2, 5, hw[0], hw[1]]);
    }
}

#[test]
fn depthwise_conv_with_more_output_planes_than_one_grid_holds() {
    // 2 images x 40000 channels: 80000 planes, walked past the grid's 65535 rows.
    let mut b = Builder::new(8);
    let (w, bias) = (b.constant(&[40000, 1, 3, 1]), b.constant(&[40000]));
    b.node(conv([1, 1], [1, 0, 1, 0], [1, 1], 40000), vec![x(), w, bias]);
    b.check(&[2, 40000, 2, 1]);
}

#[test]
fn pointwise_conv_with_fused_residual_add_and_activation() {
    let mut b = Builder::new(4);
    let (w, bias) = (b.constant(&[19, 19, 1, 1]), b.constant(&[19]));
    let c = b.node(conv([1, 1], [0; 4], [1, 1], 1), vec![x(), w, bias]);
    let s = b.node(Op::Binary(BinaryOp::Add), vec![x(), c]);
    b.node(Op::Activation(Activation::LeakyRelu { alpha: 0.2 }), vec![s]);
    b.check(&[2, 19, 5, 7]);
}

#[test]
fn pointwise_conv_with_channels_not_a_multiple_of_the_tile() {
    let mut b = Builder::new(5);
    let w = b.constant(&[37, 21, 1, 1]);
    b.node(conv([1, 1], [0; 4], [1, 1], 1), vec![x(), w]);
    b.check(&[3, 21, 9, 11]);
}

#[test]
fn pointwise_conv_over_a_few_columns_with_groups_of_four_crossing_images() {
    // 5 images of 3 pixels: 15 columns, so the dot products are split across a workgroup and
    // each group of 4 columns spans two images.
    let mut b = Builder::new(6);
    let (w, bias) = (b.constant(&[70, 70, 1, 1]), b.constant(&[70]));
    let c = b.node(conv([1, 1], [0; 4], [1, 1], 1), vec![x(), w, bias]);
    let s = b.node(Op::Binary(BinaryOp::Add), vec![c, x()]);
    b.node(Op::Activation(Activation::Clip { min: 0.0, max: 6.0 }), vec![s]);
    b.check(&[5, 70, 3, 1]);
}

#[test]
fn large_pointwise_conv_with_ragged_tiles_across_images_and_fused_residual() {
    // 3 images of 33x33 pixels (3267 columns, tiles of 64 straddle images) by 130 channels
    // (neither a multiple of the 64-row tile nor of the 16-deep slice): the 4x4-blocked kernel.
    let mut b = Builder::new(7);
    let (w, bias) = (b.constant(&[130, 130, 1, 1]), b.constant(&[130]));
    let c = b.node(conv([1, 1], [0; 4], [1, 1], 1), vec![x(), w, bias]);
    let s = b.node(Op::Binary(BinaryOp::Add), vec![x(), c]);
    b.node(Op::Activation(Activation::Relu), vec![s]);
    b.check(&[3, 130, 33, 33]);
}

#[test]
fn every_activation_standalone() {
    for (i, a) in [
        Activation::Relu,
        Activation::Clip { min: -0.3, max: 0.4 },
        Activation::LeakyRelu { alpha: 0.1 },
        Activation::Sigmoid,
        Activation::HardSigmoid { alpha: 0.3, beta: 0.6 },
        Activation::HardSwish,
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = Builder::new(10 + i as u64);
        b.node(Op::Activation(a), vec![x()]);
        b.check(&[2, 3, 5, 7]);
    }
}

#[test]
fn unary_functions_standalone_and_fused_into_a_convolution() {
    let anywhere = [Activation::Tanh, Activation::Exp, Activation::Neg, Activation::Abs, Activation::Erf, Activation::Gelu { tanh: false }, Activation::Gelu { tanh: true }];
    for (i, a) in anywhere.into_iter().enumerate() {
        let mut b = Builder::new(100 + i as u64);
        b.node(Op::Activation(a), vec![x()]);
        b.check(&[2, 3, 5, 7]);
        let mut b = Builder::new(120 + i as u64);
        let w = b.constant(&[4, 3, 1, 1]);
        let c = b.node(conv([1, 1], [0; 4], [1, 1], 1), vec![x(), w]);
        b.node(Op::Activation(a), vec![c]);
        b.check(&[2, 3, 5, 7]);
    }
    // Rounding, on values spread over several integers.
    for (i, a) in [Activation::Floor, Activation::Ceil, Activation::Round, Activation::Trunc].into_iter().enumerate() {
        let mut b = Builder::new(160 + i as u64);
        let spread = b.filled(&[], 3.7);
        let scaled = b.node(Op::Binary(BinaryOp::Mul), vec![x(), spread]);
        b.node(Op::Activation(a), vec![scaled]);
        b.check_f32_storage(&[2, 3, 5, 7]);
    }
    // Where the function needs positive inputs: |x| + 0.5.
    for (i, a) in [Activation::Log, Activation::Sqrt, Activation::Reciprocal].into_iter().enumerate() {
        let mut b = Builder::new(140 + i as u64);
        let magnitude = b.node(Op::Activation(Activation::Abs), vec![x()]);
        let half = b.filled(&[], 0.5);
        let positive = b.node(Op::Binary(BinaryOp::Add), vec![magnitude, half]);
        b.node(Op::Activation(a), vec![positive]);
        b.check(&[2, 3, 5, 7]);
    }
}

#[test]
fn sub_div_pow_min_and_max_broadcast_like_add() {
    for (seed, other) in [(150, vec![2, 4, 5, 3]), (151, vec![1, 4, 1, 1]), (152, vec![]), (153, vec![4, 1, 3])] {
        for op in [BinaryOp::Sub, BinaryOp::Min, BinaryOp::Max] {
            let mut b = Builder::new(seed);
            let c = b.constant(&other);
            b.node(Op::Binary(op), vec![x(), c]);
            b.check(&[2, 4, 5, 3]);
        }
        // Divisors and bases kept away from zero.
        let mut b = Builder::new(seed + 10);
        let c = b.positive_constant(&other);
        b.node(Op::Binary(BinaryOp::Div), vec![x(), c]);
        b.check(&[2, 4, 5, 3]);
        let mut b = Builder::new(seed + 20);
        let base = b.positive_constant(&other);
        b.node(Op::Binary(BinaryOp::Pow), vec![base, x()]);
        b.check(&[2, 4, 5, 3]);
    }
    // A negative base with integral exponents, as ONNX allows (x^2, x^3).
    for (seed, exponent) in [(170, 2.0), (171, 3.0)] {
        let mut b = Builder::new(seed);
        let e = b.filled(&[1], exponent);
        b.node(Op::Binary(BinaryOp::Pow), vec![x(), e]);
        b.check(&[2, 4, 5, 3]);
    }
}

#[test]
fn transposes_of_every_kind_and_the_channel_shuffle_of_shufflenet() {
    for (seed, perm) in [(200, vec![0, 2, 3, 1]), (201, vec![3, 2, 1, 0]), (202, vec![1, 0, 2, 3]), (203, vec![0, 1, 3, 2])] {
        let mut b = Builder::new(seed);
        b.node(Op::Transpose { perm }, vec![x()]);
        b.check(&[2, 3, 5, 7]);
    }
    // [n, c, h, w] -> [n, groups, c / groups, h, w] -> swap the two channel axes -> back.
    let mut b = Builder::new(204);
    let grouped = b.node(Op::Reshape { shape: vec![2, 2, 3, 5, 7], allow_zero: false }, vec![x()]);
    let shuffled = b.node(Op::Transpose { perm: vec![0, 2, 1, 3, 4] }, vec![grouped]);
    b.node(Op::Reshape { shape: vec![2, 6, 5, 7], allow_zero: false }, vec![shuffled]);
    b.check(&[2, 6, 5, 7]);
}

#[test]
fn slices_with_steps_negative_steps_clamped_bounds_and_several_axes() {
    // (seed, starts, ends, axes, steps)
    type SliceCase = (u64, &'static [i64], &'static [i64], &'static [i64], &'static [i64]);
    let cases: [SliceCase; 4] = [
        (210, &[1], &[3], &[1], &[1]),
        (211, &[0, -1], &[i64::MAX, i64::MIN], &[2, 3], &[2, -2]),
        (212, &[-4], &[100], &[-1], &[3]),
        (213, &[1, 0], &[2, 2], &[0, 1], &[1, 1]),
    ];
    for (seed, starts, ends, axes, steps) in cases {
        let mut b = Builder::new(seed);
        b.node(Op::Slice { starts: starts.to_vec(), ends: ends.to_vec(), axes: axes.to_vec(), steps: steps.to_vec() }, vec![x()]);
        b.check(&[2, 3, 5, 7]);
    }
}

#[test]
fn squeeze_and_unsqueeze_are_free_and_keep_the_values() {
    let mut b = Builder::new(220);
    let expanded = b.node(Op::Unsqueeze { axes: vec![0, 3] }, vec![x()]);
    let relu = b.node(Op::Activation(Activation::Relu), vec![expanded]);
    b.node(Op::Squeeze { axes: Some(vec![0]) }, vec![relu]);
    b.check(&[3, 4, 5]);
}

#[test]
fn reductions_over_any_axes_with_and_without_kept_dimensions() {
    let ops = [ReduceOp::Mean, ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min, ReduceOp::L2];
    let axes: [Option<Vec<i64>>; 4] = [Some(vec![2, 3]), Some(vec![1]), Some(vec![-1, 0]), None];
    for (i, op) in ops.into_iter().enumerate() {
        for (j, axes) in axes.iter().enumerate() {
            let mut b = Builder::new(230 + (i * 8 + j) as u64);
            b.node(Op::Reduce { op, axes: axes.clone(), keep_dims: j % 2 == 0 }, vec![x()]);
            b.check(&[2, 3, 5, 7]);
        }
    }
}

#[test]
fn layer_norms_over_the_last_axes_with_and_without_bias() {
    let mut b = Builder::new(260);
    let (scale, bias) = (b.constant(&[7]), b.constant(&[7]));
    b.node(Op::LayerNorm { axis: -1, epsilon: 1e-5 }, vec![x(), scale, bias]);
    b.check(&[2, 3, 5, 7]);
    let mut b = Builder::new(261);
    let scale = b.constant(&[5, 7]);
    b.node(Op::LayerNorm { axis: 2, epsilon: 1e-3 }, vec![x(), scale]);
    b.check(&[2, 3, 5, 7]);
}

#[test]
fn gather_selects_along_an_axis_with_constant_indices() {
    for (seed, axis, indices) in [(270, 1, vec![2.0, 0.0, -1.0]), (271, 3, vec![6.0]), (272, 0, vec![1.0, 1.0])] {
        let mut b = Builder::new(seed);
        let name = format!("indices{seed}");
        b.initializers.insert(name.clone(), Tensor::new(vec![indices.len()], indices).unwrap());
        b.node(Op::Gather { axis }, vec![x(), name]);
        b.check(&[2, 3, 5, 7]);
    }
}

#[test]
fn an_embedding_lookup_gathers_rows_of_a_constant_table_by_computed_indices() {
    let mut rng = StdRng::seed_from_u64(280);
    let table = random(&mut rng, &[11, 6]);
    let graph = Graph {
        input: GraphInput { name: "ids".into(), dims: vec![] },
        output: "embedded".into(),
        nodes: vec![Node { name: "embed".into(), op: Op::Gather { axis: 0 }, inputs: vec!["table".into(), "ids".into()], output: "embedded".into() }],
        initializers: HashMap::from([("table".to_string(), table.clone())]),
    };
    let ids = Tensor::new(vec![2, 4], vec![0.0, 3.0, 10.0, 3.0, 7.0, -1.0, 1.0, 5.0]).unwrap();
    let want = run_reference(&graph, &ids).unwrap();
    assert_eq!(want.shape(), &[2, 4, 6]);
    assert_eq!(&want.data()[12..18], &table.data()[60..66], "id 10 is the last row");
    assert_eq!(&want.data()[30..36], &table.data()[60..66], "id -1 is the last row too");
    assert!(relative_error(&run_gpu(&graph, &ids), &want) <= TOLERANCE);
}

#[test]
fn transposed_convolutions_with_strides_pads_output_padding_dilation_groups_and_bias() {
    // (seed, weight shape, strides, pads, output padding, dilations, groups, bias)
    type Case = (u64, [usize; 4], [usize; 2], [usize; 4], [usize; 2], [usize; 2], usize, bool);
    let cases: [Case; 4] = [
        (330, [3, 4, 2, 2], [2, 2], [0; 4], [0, 0], [1, 1], 1, true),
        (331, [3, 2, 3, 3], [2, 2], [1, 1, 1, 1], [1, 1], [1, 1], 1, false),
        (332, [3, 5, 3, 2], [1, 2], [0, 1, 2, 0], [0, 1], [2, 1], 1, true),
        (333, [4, 3, 3, 3], [2, 1], [1, 0, 0, 1], [1, 0], [1, 1], 2, true),
    ];
    for (seed, w, strides, pads, output_padding, dilations, groups, bias) in cases {
        let mut b = Builder::new(seed);
        let weight = b.constant(&w);
        let mut inputs = vec![x(), weight];
        if bias {
            inputs.push(b.constant(&[w[1] * groups]));
        }
        b.node(Op::ConvTranspose { conv: Conv2d { strides, pads, dilations, groups }, output_padding }, inputs);
        b.check(&[2, w[0], 5, 4]);
    }
}

#[test]
fn resizes_nearest_and_bilinear_in_every_coordinate_mode_up_and_down() {
    use bevy_p2p_inference::model::ir::{NearestRounding as N, ResizeCoordinates as C};
    let up = Some(vec![1.0, 1.0, 2.0, 2.0]);
    let cases = [
        (340, false, C::Asymmetric, N::Floor, up.clone(), None),
        (341, false, C::HalfPixel, N::RoundPreferFloor, Some(vec![1.0, 1.0, 1.5, 3.0]), None),
        (342, false, C::AlignCorners, N::RoundPreferCeil, None, Some(vec![2, 3, 3, 9])),
        (343, true, C::HalfPixel, N::RoundPreferFloor, up.clone(), None),
        (344, true, C::PytorchHalfPixel, N::RoundPreferFloor, None, Some(vec![2, 3, 1, 7])),
        (345, true, C::AlignCorners, N::RoundPreferFloor, Some(vec![1.0, 1.0, 2.5, 0.5]), None),
        (346, true, C::Asymmetric, N::Ceil, None, Some(vec![2, 3, 3, 2])),
    ];
    for (seed, linear, coordinates, nearest, scales, sizes) in cases {
        let mut b = Builder::new(seed);
        b.node(Op::Resize { linear, coordinates, nearest, scales, sizes }, vec![x()]);
        b.check(&[2, 3, 5, 4]);
    }
}

#[test]
fn lstm_and_gru_layers_with_and_without_biases_and_initial_states() {
    use bevy_p2p_inference::model::ir::RecurrentCell;
    // (seed, cell, hidden, bias, initial state)
    let cases = [
        (350, RecurrentCell::Lstm, 20, true, true),
        (351, RecurrentCell::Lstm, 70, false, false),
        (352, RecurrentCell::Gru, 20, true, false),
        (353, RecurrentCell::Gru, 130, true, true),
    ];
    for (seed, cell, hidden, bias, initial) in cases {
        let (seq, batch, input) = (5, 3, 6);
        let rows = cell.gates() * hidden;
        let mut b = Builder::new(seed);
        // torch's initialisation: uniform in +-1/sqrt(hidden).
        let scale = 1.0 / (hidden as f32).sqrt();
        let (w, r) = (b.scaled_constant(&[1, rows, input], scale), b.scaled_constant(&[1, rows, hidden], scale));
        let mut inputs = vec![x(), w, r];
        if bias {
            inputs.push(b.scaled_constant(&[1, 2 * rows], scale));
        }
        if initial {
            let states = if cell == RecurrentCell::Lstm { 2 } else { 1 };
            inputs.push(b.constant(&[states * batch * hidden]));
        }
        b.node(Op::Recurrent { cell, hidden, has_bias: bias }, inputs);
        b.check(&[seq, batch, input]);
    }
}

#[test]
fn pads_constant_reflect_and_edge_with_crops_and_tiles() {
    use bevy_p2p_inference::model::ir::PadMode;
    let cases = [
        (360, PadMode::Constant(0.25), vec![0, 1, 2, 0, 0, 0, 1, 3]),
        (361, PadMode::Reflect, vec![0, 0, 2, 3, 0, 0, 3, 1]),
        (362, PadMode::Edge, vec![0, 1, 0, 4, 0, 0, 2, 0]),
        (363, PadMode::Constant(0.0), vec![0, 0, -1, 2, 0, 0, 1, -2]),
    ];
    for (seed, mode, pads) in cases {
        let mut b = Builder::new(seed);
        b.node(Op::Pad { mode, pads }, vec![x()]);
        b.check(&[2, 3, 5, 4]);
    }
    let mut b = Builder::new(364);
    b.node(Op::Tile { repeats: vec![1, 2, 3, 1] }, vec![x()]);
    b.check(&[2, 3, 5, 4]);
}

#[test]
fn log_softmax_on_inner_and_last_axes() {
    for (seed, axis) in [(290, 1), (291, -1)] {
        let mut b = Builder::new(seed);
        b.node(Op::LogSoftmax { axis }, vec![x()]);
        b.check(&[2, 3, 5, 7]);
    }
}

#[test]
fn instance_norm_per_image_and_channel_and_the_group_norm_pattern() {
    let mut b = Builder::new(300);
    let (scale, bias) = (b.constant(&[3]), b.constant(&[3]));
    b.node(Op::InstanceNorm { epsilon: 1e-5 }, vec![x(), scale, bias]);
    b.check(&[2, 3, 5, 7]);
    // torch's GroupNorm(2 groups, 6 channels): reshape to [n, 2, -1], instance norm with unit
    // scale and zero bias, back to [n, 6, h, w], then a per-channel affine.
    let mut b = Builder::new(301);
    let grouped = b.node(Op::Reshape { shape: vec![0, 2, -1], allow_zero: false }, vec![x()]);
    let (ones, zeros) = (b.filled(&[2], 1.0), b.filled(&[2], 0.0));
    let normalised = b.node(Op::InstanceNorm { epsilon: 1e-5 }, vec![grouped, ones, zeros]);
    let back = b.node(Op::Reshape { shape: vec![2, 6, 4, 5], allow_zero: false }, vec![normalised]);
    let gamma = b.constant(&[6, 1, 1]);
    b.node(Op::Binary(BinaryOp::Mul), vec![back, gamma]);
    b.check(&[2, 6, 4, 5]);
}

#[test]
fn expand_broadcasts_a_computed_value() {
    for (seed, shape, target) in [(310, vec![3, 1, 5], vec![2, 3, 4, 5]), (311, vec![1], vec![4, 2]), (312, vec![2, 3], vec![2, 3])] {
        let mut b = Builder::new(seed);
        let relu = b.node(Op::Activation(Activation::Relu), vec![x()]);
        b.node(Op::Expand { shape: target }, vec![relu]);
        b.check(&shape);
    }
}

#[test]
fn where_chooses_between_broadcast_operands_by_a_computed_condition() {
    let mut b = Builder::new(320);
    let condition = b.node(Op::Activation(Activation::Relu), vec![x()]);
    let (a, other) = (b.constant(&[5, 7]), b.constant(&[1, 3, 1, 1]));
    b.node(Op::Where, vec![condition, a, other]);
    b.check(&[2, 3, 5, 7]);
}

#[test]
fn add_and_mul_broadcast_same_shape_per_channel_scalar_and_trailing() {
    for (seed, other) in [(20, vec![2, 4, 5, 3]), (21, vec![1, 4, 1, 1]), (22, vec![]), (23, vec![3]), (24, vec![4, 1, 3])] {
        for op in [Op::Binary(BinaryOp::Add), Op::Binary(BinaryOp::Mul)] {
            let mut b = Builder::new(seed);
            let c = b.constant(&other);
            b.node(op, vec![c, x()]);
            b.check(&[2, 4, 5, 3]);
        }
    }
}

#[test]
fn channel_affine_from_a_standalone_batch_norm() {
    let mut b = Builder::new(30);
    let (s, t) = (b.constant(&[6]), b.constant(&[6]));
    b.node(Op::ChannelAffine, vec![x(), s, t]);
    b.check(&[3, 6, 4, 5]);
}

#[test]
fn pooling_global_average_max_and_average_with_padding_and_ceil_mode() {
    let mut b = Builder::new(40);
    b.node(Op::GlobalAveragePool, vec![x()]);
    b.check(&[3, 5, 7, 9]);
    for (seed, count_include_pad, ceil_mode) in [(41, false, false), (42, true, false), (43, false, true), (44, true, true)] {
        let pool = Pool2d { kernel: [3, 2], strides: [2, 2], pads: [1, 0, 1, 1], ceil_mode, count_include_pad };
        let mut b = Builder::new(seed);
        b.node(Op::AveragePool(pool.clone()), vec![x()]);
        b.check(&[2, 3, 9, 8]);
        let mut b = Builder::new(seed + 10);
        b.node(Op::MaxPool(pool), vec![x()]);
        b.check(&[2, 3, 9, 8]);
    }
}

#[test]
fn classifier_gemm_at_batch_1_with_dot_products_split_across_a_workgroup() {
    // 1000 outputs of 300-long dot products: each split across a workgroup.
    for (seed, trans_b) in [(55, true), (56, false)] {
        let mut b = Builder::new(seed);
        let w = b.constant(if trans_b { &[1000, 300] } else { &[300, 1000] });
        let c = b.constant(&[1000]);
        b.node(Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b }, vec![x(), w, c]);
        b.check(&[1, 300]);
    }
}

#[test]
fn gemm_with_transposes_alpha_beta_and_broadcast_c() {
    for (seed, trans_a, trans_b, c_shape) in [(50, false, false, vec![7]), (51, true, false, vec![5, 1]), (52, false, true, vec![5, 7]), (53, true, true, vec![])] {
        let mut b = Builder::new(seed);
        let a_shape = if trans_a { [11, 5] } else { [5, 11] };
        let b_shape = if trans_b { [7, 11] } else { [11, 7] };
        let a = b.constant(&a_shape);
        let flat = b.node(Op::Reshape { shape: b_shape.iter().map(|&d| d as i64).collect(), allow_zero: false }, vec![x()]);
        let c = b.constant(&c_shape);
        b.node(Op::Gemm { alpha: 0.7, beta: 1.3, trans_a, trans_b }, vec![a, flat, c]);
        b.check(&[1, 77]);
    }
}

#[test]
fn matmul_batched_and_plain() {
    let mut b = Builder::new(60);
    let w = b.constant(&[9, 4]);
    b.node(Op::MatMul, vec![x(), w]);
    b.check(&[3, 5, 9]);
    let mut b = Builder::new(61);
    let w = b.constant(&[3, 9, 4]);
    b.node(Op::MatMul, vec![x(), w]);
    b.check(&[3, 5, 9]);
}

#[test]
fn matmul_broadcasts_batch_axes_that_alternate_between_its_operands() {
    // [2, 1, 5, 6] x [1, 3, 6, 4]: A steps over the outer axis, B over the inner one.
    let mut b = Builder::new(62);
    let w = b.constant(&[1, 3, 6, 4]);
    b.node(Op::MatMul, vec![x(), w]);
    b.check(&[2, 1, 5, 6]);
    // [4, 2, 1, 3, 5] x [3, 5, 2]: A's two outer axes merge into one level.
    let mut b = Builder::new(63);
    let w = b.constant(&[3, 5, 2]);
    b.node(Op::MatMul, vec![x(), w]);
    b.check(&[4, 2, 1, 3, 5]);
}

#[test]
fn matmul_with_three_alternating_broadcast_groups_is_refused_by_the_compiler() {
    use bevy_p2p_inference::gpu::compile;
    let mut b = Builder::new(64);
    let w = b.constant(&[1, 3, 1, 5, 2]);
    b.node(Op::MatMul, vec![x(), w]);
    let graph = b.graph();
    let error = compile(&graph, &[2, 1, 4, 3, 5]).unwrap_err();
    assert!(matches!(error, bevy_p2p_inference::gpu::CompileError::Unsupported { .. }), "{error:?}");
}

#[test]
fn softmax_on_inner_and_last_axis_and_concat_and_flatten() {
    let mut b = Builder::new(70);
    b.node(Op::Softmax { axis: 1 }, vec![x()]);
    b.check(&[2, 5, 3]);
    let mut b = Builder::new(71);
    let c = b.constant(&[2, 3, 4, 5]);
    let cat = b.node(Op::Concat { axis: 1 }, vec![x(), c]);
    let f = b.node(Op::Flatten { axis: 2 }, vec![cat]);
    b.node(Op::Softmax { axis: -1 }, vec![f]);
    b.check(&[2, 2, 4, 5]);
    let mut b = Builder::new(72);
    let c = b.constant(&[2, 3, 2, 5]);
    b.node(Op::Concat { axis: 2 }, vec![x(), c]);
    b.check(&[2, 3, 4, 5]);
}

#[test]
fn random_shapes_sweep_of_conv_configurations() {
    let mut rng = StdRng::seed_from_u64(99);
    for seed in 0..12 {
        let groups = [1, 2, 3][rng.random_range(0..3)];
        let cig = rng.random_range(1..4);
        let cog = rng.random_range(1..4);
        let (kh, kw) = (rng.random_range(1..4), rng.random_range(1..4));
        let stride = [rng.random_range(1..3), rng.random_range(1..3)];
        let pads = [rng.random_range(0..kh), rng.random_range(0..kw), rng.random_range(0..kh), rng.random_range(0..kw)];
        let (h, w) = (rng.random_range(kh..12), rng.random_range(kw..12));
        let batch = rng.random_range(1..4);
        let mut b = Builder::new(100 + seed);
        let (wt, bias) = (b.constant(&[cog * groups, cig, kh, kw]), b.constant(&[cog * groups]));
        b.node(conv(stride, pads, [1, 1], groups), vec![x(), wt, bias]);
        b.check(&[batch, cig * groups, h, w]);
    }
}

#[test]
fn an_input_larger_than_one_upload_chunk_arrives_whole_and_in_order() {
    // 5.4 MB: copied into the upload buffer in 4 MiB chunks on several threads; a chunk
    // written to the wrong place or not at all shows up in the elementwise comparison.
    let mut b = Builder::new(13);
    b.node(Op::Activation(Activation::LeakyRelu { alpha: 0.5 }), vec![x()]);
    b.check(&[3, 5, 301, 299]);
}
