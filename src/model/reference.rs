//! The CPU reference executor: a plain, obviously-correct interpreter of the IR (f32 storage,
//! f64 accumulation) that the GPU kernels are tested against.

use std::collections::HashMap;

use super::layout;
use super::error::ModelError;
use super::ir::{Conv2d, Graph, NearestRounding, Op, PadMode, Pool2d, RecurrentCell, ResizeCoordinates};
use super::shape::{broadcast_strides, infer_shapes, matmul_dims, normalize_axis, resize_shape};
use crate::tensor::Tensor;

/// Runs `graph` on `input` on the CPU and returns the graph output.
pub fn run_reference(graph: &Graph, input: &Tensor) -> Result<Tensor, ModelError> {
    let shapes = infer_shapes(graph, input.shape())?;
    let mut values: HashMap<&str, Tensor> = HashMap::new();
    values.insert(graph.input.name.as_str(), input.clone());
    for node in &graph.nodes {
        let ins: Vec<&Tensor> = node
            .inputs
            .iter()
            .map(|name| values.get(name.as_str()).or_else(|| graph.initializers.get(name)).expect("shape inference checked it"))
            .collect();
        let out_shape = shapes[&node.output].clone();
        let data = eval(&node.op, &ins, &out_shape);
        values.insert(node.output.as_str(), Tensor::new(out_shape, data).expect("shape inferred"));
    }
    Ok(values.remove(graph.output.as_str()).unwrap_or_else(|| graph.initializers[&graph.output].clone()))
}

/// [`resize_shape`] of a node that shape inference has already checked.
fn resize_shape_checked(x: &[usize], scales: Option<&[f32]>, sizes: Option<&[usize]>) -> (Vec<usize>, [f32; 2]) {
    let probe = super::ir::Node { name: String::new(), op: Op::Identity, inputs: Vec::new(), output: String::new() };
    resize_shape(&probe, x, scales, sizes).expect("shape inference checked it")
}

/// Softmax (or, with `log`, LogSoftmax) of `x` along `axis`, in f64.
fn softmax(x: &Tensor, out: &[usize], axis: i64, log: bool) -> Vec<f32> {
    let a = normalize_axis(axis, out.len()).expect("checked");
    let (len, inner) = (out[a], out[a + 1..].iter().product::<usize>());
    let mut data = x.data().to_vec();
    for o in 0..out[..a].iter().product() {
        for i in 0..inner {
            let idx = |j: usize| (o * len + j) * inner + i;
            let max = (0..len).map(|j| x.data()[idx(j)] as f64).fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = (0..len).map(|j| (x.data()[idx(j)] as f64 - max).exp()).sum();
            for j in 0..len {
                let shifted = x.data()[idx(j)] as f64 - max;
                data[idx(j)] = if log { shifted - sum.ln() } else { shifted.exp() / sum } as f32;
            }
        }
    }
    data
}

fn eval(op: &Op, ins: &[&Tensor], out: &[usize]) -> Vec<f32> {
    let x = ins[0];
    match op {
        Op::Conv(c) => conv(c, x, ins[1], ins.get(2).copied(), out),
        Op::ChannelAffine => {
            let (scale, shift) = (ins[1].data(), ins[2].data());
            let channels = x.shape()[1];
            let inner: usize = x.shape()[2..].iter().product();
            x.data().iter().enumerate().map(|(i, &v)| {
                let c = (i / inner) % channels;
                v * scale[c] + shift[c]
            }).collect()
        }
        Op::Activation(a) => x.data().iter().map(|&v| a.apply(v)).collect(),
        Op::Binary(binary) => layout::broadcast_map(ins, out, |v| binary.apply(v[0], v[1])),
        Op::GlobalAveragePool => {
            let inner: usize = x.shape()[2..].iter().product();
            x.data().chunks(inner).map(|c| (c.iter().map(|&v| v as f64).sum::<f64>() / inner as f64) as f32).collect()
        }
        Op::AveragePool(p) => pool(p, x, out, false),
        Op::MaxPool(p) => pool(p, x, out, true),
        Op::Reshape { .. } | Op::Flatten { .. } | Op::Identity | Op::Squeeze { .. } | Op::Unsqueeze { .. } => x.data().to_vec(),
        Op::Transpose { perm } => layout::transpose(x, perm).into_data(),
        Op::Slice { starts, ends, axes, steps } => {
            let ranges = layout::slice_ranges(x.shape(), starts, ends, axes, steps).expect("shape inference checked it");
            layout::slice(x, &ranges).into_data()
        }
        Op::LayerNorm { axis, epsilon } => {
            let a = normalize_axis(*axis, x.shape().len()).expect("shape inference checked it");
            let inner: usize = x.shape()[a..].iter().product();
            let (scale, bias) = (ins[1].data(), ins.get(2).map(|b| b.data()));
            let mut data = Vec::with_capacity(x.len());
            for row in x.data().chunks(inner.max(1)) {
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / inner as f64;
                let variance = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / inner as f64;
                let inverse = 1.0 / (variance + *epsilon as f64).sqrt();
                for (j, &v) in row.iter().enumerate() {
                    let shift = bias.map_or(0.0, |b| b[j] as f64);
                    data.push(((v as f64 - mean) * inverse * scale[j] as f64 + shift) as f32);
                }
            }
            data
        }
        Op::Gather { axis } => layout::gather(x, normalize_axis(*axis, x.shape().len()).expect("shape inference checked it"), ins[1]),
        Op::Reduce { op, axes, keep_dims } => {
            let axes = layout::reduced_axes(axes.as_deref(), x.shape().len()).expect("shape inference checked it");
            layout::reduce(x, *op, &axes, *keep_dims).into_data()
        }
        Op::Concat { axis } => layout::concat(ins, normalize_axis(*axis, out.len()).expect("checked")),
        Op::Gemm { alpha, beta, trans_a, trans_b } => {
            let (a, b) = (x, ins[1]);
            let (m, n) = (out[0], out[1]);
            let k = if *trans_a { a.shape()[0] } else { a.shape()[1] };
            let c_strides = ins.get(2).map(|c| broadcast_strides(c.shape(), out));
            let mut data = vec![0.0; m * n];
            for i in 0..m {
                for j in 0..n {
                    let mut acc = 0f64;
                    for l in 0..k {
                        let av = if *trans_a { a.data()[l * m + i] } else { a.data()[i * k + l] };
                        let bv = if *trans_b { b.data()[j * k + l] } else { b.data()[l * n + j] };
                        acc += av as f64 * bv as f64;
                    }
                    let mut v = *alpha as f64 * acc;
                    if let (Some(c), Some(s)) = (ins.get(2), &c_strides) {
                        v += *beta as f64 * c.data()[i * s[0] + j * s[1]] as f64;
                    }
                    data[i * n + j] = v as f32;
                }
            }
            data
        }
        Op::MatMul => {
            let (a, b) = (x, ins[1]);
            let (batch, m, k, n) = matmul_dims(a.shape(), b.shape()).expect("checked");
            let a_batch: Vec<usize> = if a.shape().len() > 2 { a.shape()[..a.shape().len() - 2].to_vec() } else { vec![] };
            let b_batch: Vec<usize> = if b.shape().len() > 2 { b.shape()[..b.shape().len() - 2].to_vec() } else { vec![] };
            let (sa, sb) = (broadcast_strides(&a_batch, &batch), broadcast_strides(&b_batch, &batch));
            let count: usize = batch.iter().product();
            let mut data = vec![0.0; count * m * n];
            for bi in 0..count {
                let (mut rem, mut oa, mut ob) = (bi, 0, 0);
                for d in (0..batch.len()).rev() {
                    let coord = rem % batch[d];
                    rem /= batch[d];
                    oa += coord * sa[d];
                    ob += coord * sb[d];
                }
                for i in 0..m {
                    for j in 0..n {
                        let acc: f64 = (0..k)
                            .map(|l| a.data()[oa * m * k + i * k + l] as f64 * b.data()[ob * k * n + l * n + j] as f64)
                            .sum();
                        data[bi * m * n + i * n + j] = acc as f32;
                    }
                }
            }
            data
        }
        Op::ConvTranspose { conv, .. } => {
            // Scatter: every input value adds its products to the outputs its window covers.
            let (w, xs, ws) = (ins[1], x.shape(), ins[1].shape());
            let (channels_in, out_per_group) = (xs[1], ws[1]);
            let in_per_group = channels_in / conv.groups;
            let (oh, ow) = (out[2], out[3]);
            let mut data = vec![0f64; out.iter().product()];
            for n in 0..xs[0] {
                for ic in 0..channels_in {
                    let g = ic / in_per_group;
                    for iy in 0..xs[2] {
                        for ix in 0..xs[3] {
                            let v = x.data()[((n * channels_in + ic) * xs[2] + iy) * xs[3] + ix] as f64;
                            for ocg in 0..out_per_group {
                                let oc = g * out_per_group + ocg;
                                for ky in 0..ws[2] {
                                    let y = (iy * conv.strides[0] + ky * conv.dilations[0]) as i64 - conv.pads[0] as i64;
                                    if y < 0 || y >= oh as i64 {
                                        continue;
                                    }
                                    for kx in 0..ws[3] {
                                        let xo = (ix * conv.strides[1] + kx * conv.dilations[1]) as i64 - conv.pads[1] as i64;
                                        if xo < 0 || xo >= ow as i64 {
                                            continue;
                                        }
                                        let weight = w.data()[((ic * out_per_group + ocg) * ws[2] + ky) * ws[3] + kx] as f64;
                                        data[((n * out[1] + oc) * oh + y as usize) * ow + xo as usize] += v * weight;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            if let Some(bias) = ins.get(2) {
                let plane = oh * ow;
                for (i, value) in data.iter_mut().enumerate() {
                    *value += bias.data()[(i / plane) % out[1]] as f64;
                }
            }
            data.into_iter().map(|v| v as f32).collect()
        }
        Op::Resize { linear, coordinates, nearest, scales, sizes } => {
            let (_, [scale_y, scale_x]) = resize_shape_checked(x.shape(), scales.as_deref(), sizes.as_deref());
            let (ih, iw, oh, ow) = (x.shape()[2], x.shape()[3], out[2], out[3]);
            let source = |o: usize, scale: f32, inl: usize, outl: usize| -> f64 {
                let (o, scale) = (o as f64, scale as f64);
                match coordinates {
                    ResizeCoordinates::HalfPixel => (o + 0.5) / scale - 0.5,
                    ResizeCoordinates::PytorchHalfPixel if outl > 1 => (o + 0.5) / scale - 0.5,
                    ResizeCoordinates::PytorchHalfPixel => 0.0,
                    ResizeCoordinates::Asymmetric => o / scale,
                    ResizeCoordinates::AlignCorners if outl > 1 => o * (inl - 1) as f64 / (outl - 1) as f64,
                    ResizeCoordinates::AlignCorners => 0.0,
                }
            };
            let round = |c: f64, len: usize| -> usize {
                let i = match nearest {
                    NearestRounding::RoundPreferFloor => if c.fract().abs() == 0.5 { c.floor() } else { c.round() },
                    NearestRounding::RoundPreferCeil => if c.fract().abs() == 0.5 { c.ceil() } else { c.round() },
                    NearestRounding::Floor => c.floor(),
                    NearestRounding::Ceil => c.ceil(),
                };
                i.clamp(0.0, (len - 1) as f64) as usize
            };
            let mut data = Vec::with_capacity(out.iter().product());
            for plane in x.data().chunks(ih * iw) {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let (cy, cx) = (source(oy, scale_y, ih, oh), source(ox, scale_x, iw, ow));
                        if !*linear {
                            data.push(plane[round(cy, ih) * iw + round(cx, iw)]);
                            continue;
                        }
                        let (fy, fx) = (cy.clamp(0.0, (ih - 1) as f64), cx.clamp(0.0, (iw - 1) as f64));
                        let (y0, x0) = (fy.floor() as usize, fx.floor() as usize);
                        let (y1, x1) = ((y0 + 1).min(ih - 1), (x0 + 1).min(iw - 1));
                        let (wy, wx) = (fy - y0 as f64, fx - x0 as f64);
                        let at = |y: usize, x: usize| plane[y * iw + x] as f64;
                        let top = at(y0, x0) * (1.0 - wx) + at(y0, x1) * wx;
                        let bottom = at(y1, x0) * (1.0 - wx) + at(y1, x1) * wx;
                        data.push((top * (1.0 - wy) + bottom * wy) as f32);
                    }
                }
            }
            data
        }
        Op::Recurrent { cell, hidden, has_bias } => {
            let (seq, batch, input_size, hidden) = (x.shape()[0], x.shape()[1], x.shape()[2], *hidden);
            let (w, r) = (ins[1].data(), ins[2].data());
            let gates = cell.gates();
            let bias = if *has_bias { Some(ins[3].data()) } else { None };
            let initial = ins.get(if *has_bias { 4 } else { 3 }).map(|t| t.data());
            let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
            let mut data = vec![0f32; seq * batch * hidden];
            for n in 0..batch {
                let mut h: Vec<f64> = (0..hidden).map(|j| initial.map_or(0.0, |s| s[n * hidden + j] as f64)).collect();
                let mut c: Vec<f64> = (0..hidden).map(|j| match (cell, initial) {
                    (RecurrentCell::Lstm, Some(s)) => s[(batch + n) * hidden + j] as f64,
                    _ => 0.0,
                }).collect();
                for t in 0..seq {
                    let xt = &x.data()[(t * batch + n) * input_size..][..input_size];
                    // Pre-activations: W x + Wb, and R h + Rb, per gate row.
                    let wx = |row: usize| -> f64 { (0..input_size).map(|k| w[row * input_size + k] as f64 * xt[k] as f64).sum::<f64>() + bias.map_or(0.0, |b| b[row] as f64) };
                    let rh = |row: usize, h: &[f64]| -> f64 { (0..hidden).map(|k| r[row * hidden + k] as f64 * h[k]).sum::<f64>() + bias.map_or(0.0, |b| b[gates * hidden + row] as f64) };
                    let (mut next_h, mut next_c) = (vec![0.0; hidden], vec![0.0; hidden]);
                    for j in 0..hidden {
                        match cell {
                            RecurrentCell::Lstm => {
                                let gate = |g: usize| wx(g * hidden + j) + rh(g * hidden + j, &h);
                                let (i, o, f, candidate) = (sigmoid(gate(0)), sigmoid(gate(1)), sigmoid(gate(2)), gate(3).tanh());
                                next_c[j] = f * c[j] + i * candidate;
                                next_h[j] = o * next_c[j].tanh();
                            }
                            RecurrentCell::Gru => {
                                let z = sigmoid(wx(j) + rh(j, &h));
                                let reset = sigmoid(wx(hidden + j) + rh(hidden + j, &h));
                                let candidate = (wx(2 * hidden + j) + reset * rh(2 * hidden + j, &h)).tanh();
                                next_h[j] = (1.0 - z) * candidate + z * h[j];
                            }
                        }
                    }
                    for j in 0..hidden {
                        data[(t * batch + n) * hidden + j] = next_h[j] as f32;
                    }
                    (h, c) = (next_h, next_c);
                }
            }
            data
        }
        Op::LogSoftmax { axis } => softmax(x, out, *axis, true),
        Op::Pad { mode, pads } => {
            let shape = x.shape();
            let strides = layout::strides(shape);
            (0..out.iter().product::<usize>())
                .map(|i| {
                    let (mut rem, mut source) = (i, 0usize);
                    for d in (0..out.len()).rev() {
                        let extent = shape[d] as i64;
                        let mut c = (rem % out[d]) as i64 - pads[d];
                        rem /= out[d];
                        if !(0..extent).contains(&c) {
                            match mode {
                                PadMode::Constant(value) => return *value,
                                // Reflect: ... 2 1 | 0 1 2 | 1 0 ...
                                PadMode::Reflect => {
                                    let period = (2 * (extent - 1)).max(1);
                                    c = c.rem_euclid(period);
                                    if c >= extent {
                                        c = period - c;
                                    }
                                }
                                PadMode::Edge => c = c.clamp(0, extent - 1),
                            }
                        }
                        source += c as usize * strides[d];
                    }
                    x.data()[source]
                })
                .collect()
        }
        Op::Tile { .. } => {
            let shape = x.shape();
            let strides = layout::strides(shape);
            (0..out.iter().product::<usize>())
                .map(|i| {
                    let (mut rem, mut source) = (i, 0usize);
                    for d in (0..out.len()).rev() {
                        source += (rem % out[d]) % shape[d] * strides[d];
                        rem /= out[d];
                    }
                    x.data()[source]
                })
                .collect()
        }
        Op::InstanceNorm { epsilon } => {
            let (channels, plane) = (x.shape()[1], x.shape()[2..].iter().product::<usize>());
            let (scale, bias) = (ins[1].data(), ins[2].data());
            let mut data = Vec::with_capacity(x.len());
            for (p, values) in x.data().chunks(plane.max(1)).enumerate() {
                let mean = values.iter().map(|&v| v as f64).sum::<f64>() / plane as f64;
                let variance = values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / plane as f64;
                let inverse = 1.0 / (variance + *epsilon as f64).sqrt();
                let c = p % channels;
                data.extend(values.iter().map(|&v| ((v as f64 - mean) * inverse * scale[c] as f64 + bias[c] as f64) as f32));
            }
            data
        }
        Op::Expand { .. } => layout::broadcast_map(&[x], out, |v| v[0]),
        Op::Where => layout::broadcast_map(ins, out, |v| if v[0] != 0.0 { v[1] } else { v[2] }),
        Op::Softmax { axis } => softmax(x, out, *axis, false),
    }
}

fn conv(c: &Conv2d, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, out: &[usize]) -> Vec<f32> {
    let [n, ci, h, wd] = x.shape().try_into().expect("4-D");
    let [_, co, oh, ow] = out.try_into().expect("4-D");
    let (kh, kw) = (w.shape()[2], w.shape()[3]);
    let (cig, cog) = (ci / c.groups, co / c.groups);
    let mut data = vec![0.0; n * co * oh * ow];
    for b in 0..n {
        for oc in 0..co {
            let g = oc / cog;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias.map_or(0.0, |t| t.data()[oc] as f64);
                    for icg in 0..cig {
                        let ic = g * cig + icg;
                        for ky in 0..kh {
                            let iy = (oy * c.strides[0] + ky * c.dilations[0]) as isize - c.pads[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..kw {
                                let ix = (ox * c.strides[1] + kx * c.dilations[1]) as isize - c.pads[1] as isize;
                                if ix < 0 || ix >= wd as isize {
                                    continue;
                                }
                                let xv = x.data()[((b * ci + ic) * h + iy as usize) * wd + ix as usize];
                                let wv = w.data()[((oc * cig + icg) * kh + ky) * kw + kx];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    data[((b * co + oc) * oh + oy) * ow + ox] = acc as f32;
                }
            }
        }
    }
    data
}

fn pool(p: &Pool2d, x: &Tensor, out: &[usize], max: bool) -> Vec<f32> {
    let [n, c, h, w] = x.shape().try_into().expect("4-D");
    let [_, _, oh, ow] = out.try_into().expect("4-D");
    let mut data = Vec::with_capacity(n * c * oh * ow);
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let (y0, x0) = ((oy * p.strides[0]) as isize - p.pads[0] as isize, (ox * p.strides[1]) as isize - p.pads[1] as isize);
                let (mut acc, mut best, mut count) = (0f64, f32::NEG_INFINITY, 0usize);
                let mut window = 0usize;
                for ky in 0..p.kernel[0] as isize {
                    for kx in 0..p.kernel[1] as isize {
                        let (iy, ix) = (y0 + ky, x0 + kx);
                        // Positions inside the explicit padding count for count_include_pad.
                        if iy < h as isize + p.pads[2] as isize && ix < w as isize + p.pads[3] as isize {
                            window += 1;
                        }
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let v = x.data()[(plane * h + iy as usize) * w + ix as usize];
                        acc += v as f64;
                        best = best.max(v);
                        count += 1;
                    }
                }
                let divisor = if p.count_include_pad { window } else { count };
                data.push(if max { best } else { (acc / divisor.max(1) as f64) as f32 });
            }
        }
    }
    data
}
