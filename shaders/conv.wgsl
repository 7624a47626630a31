// Convolution family, NCHW, with a fused epilogue: + bias, + residual, activation.
// Input x is [batch, in_channels, in_height, in_width]; weights w are
// [out_channels, in_channels / groups, kernel_height, kernel_width].

struct ConvParams {
    total: u32,
    batch: u32,
    in_channels: u32,
    in_height: u32,
    in_width: u32,
    out_channels: u32,
    out_height: u32,
    out_width: u32,
    kernel_height: u32,
    kernel_width: u32,
    stride_y: u32,
    stride_x: u32,
    pad_top: u32,
    pad_left: u32,
    dilation_y: u32,
    dilation_x: u32,
    groups: u32,
    has_bias: u32,
    has_residual: u32,
    activation: Activation,
}

@group(0) @binding(0) var<storage, read> p: ConvParams;

@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read> w: array<elem>;
@group(0) @binding(3) var<storage, read> bias: array<elem>;
@group(0) @binding(4) var<storage, read> residual: array<elem>;
@group(0) @binding(5) var<storage, read_write> y: array<elem>;

fn load_x(i: u32) -> f32 {
    return f32(x[i]);
}

fn load_w(i: u32) -> f32 {
    return f32(w[i]);
}

fn epilogue(i: u32, oc: u32, acc: f32) {
    var v = acc;
    if (p.has_bias != 0u) { v += f32(bias[oc]); }
    if (p.has_residual != 0u) { v += f32(residual[i]); }
    y[i] = elem(activate(v, p.activation));
}

// The epilogue of `count` (at most 4) outputs at once: output c is y[first + c * stride], of
// channel oc + c * channel_step. The parameters are read and the activation chosen once.
fn epilogue4(first: u32, stride: u32, oc: u32, channel_step: u32, acc: vec4<f32>, count: u32) {
    var v = acc;
    if (p.has_bias != 0u) {
        for (var c = 0u; c < count; c++) { v[c] += f32(bias[oc + c * channel_step]); }
    }
    if (p.has_residual != 0u) {
        for (var c = 0u; c < count; c++) { v[c] += f32(residual[first + c * stride]); }
    }
    let out = activate4(v, p.activation);
    for (var c = 0u; c < count; c++) { y[first + c * stride] = elem(out[c]); }
}

// The spatial kernels run on a plane grid: x covers the OH*OW pixels of one output plane
// (workgroups of 64), y walks the planes (image n, channel oc) with a stride of the grid height
// (at most 65535), so an invocation divides only to split its pixel into row and column.

// The input coordinates (y, x) of the first tap of output pixel `pixel`'s window: negative or
// past the edge where the window overlaps the padding.
struct WindowOrigin {
    y: i32,
    x: i32,
}

fn window_origin(pixel: u32) -> WindowOrigin {
    let OW = p.out_width;
    return WindowOrigin(i32((pixel / OW) * p.stride_y) - i32(p.pad_top), i32((pixel % OW) * p.stride_x) - i32(p.pad_left));
}

// Any stride, padding, dilation and group count: one invocation per output value.
@compute @workgroup_size(64)
fn conv2d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let C = p.in_channels; let H = p.in_height; let W = p.in_width; let M = p.out_channels; let OH = p.out_height; let OW = p.out_width;
    let KH = p.kernel_height; let KW = p.kernel_width;
    let pixel = gid.x;
    if (pixel >= OH * OW) { return; }
    let origin = window_origin(pixel);
    let cig = C / p.groups;
    let cog = M / p.groups;
    for (var plane = gid.y; plane < p.batch * M; plane += nwg.y) {
        let n = plane / M;
        let oc = plane % M;
        let g = oc / cog;
        var acc = 0.0;
        for (var icg = 0u; icg < cig; icg++) {
            let x_plane = (n * C + g * cig + icg) * H;
            let w_base = (oc * cig + icg) * KH;
            for (var ky = 0u; ky < KH; ky++) {
                let iy = origin.y + i32(ky * p.dilation_y);
                if (iy < 0 || iy >= i32(H)) { continue; }
                let row = (x_plane + u32(iy)) * W;
                for (var kx = 0u; kx < KW; kx++) {
                    let ix = origin.x + i32(kx * p.dilation_x);
                    if (ix >= 0 && ix < i32(W)) {
                        acc += load_x(row + u32(ix)) * load_w((w_base + ky) * KW + kx);
                    }
                }
            }
        }
        epilogue(plane * OH * OW + pixel, oc, acc);
    }
}

// `conv2d` for four output channels of one group per invocation (output channels per group a
// multiple of 4): each input value read serves four accumulators. Grid: pixels by planes / 4.
@compute @workgroup_size(64)
fn conv2d_four_channels(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let C = p.in_channels; let H = p.in_height; let W = p.in_width; let M = p.out_channels; let OH = p.out_height; let OW = p.out_width;
    let KH = p.kernel_height; let KW = p.kernel_width;
    let pixel = gid.x;
    if (pixel >= OH * OW) { return; }
    let origin = window_origin(pixel);
    let cig = C / p.groups;
    let cog = M / p.groups;
    let taps = cig * KH * KW;
    for (var quad = gid.y; quad < p.batch * M / 4u; quad += nwg.y) {
        let n = quad * 4u / M;
        let oc = quad * 4u % M;
        let g = oc / cog;
        var acc = vec4<f32>(0.0);
        for (var icg = 0u; icg < cig; icg++) {
            let x_plane = (n * C + g * cig + icg) * H;
            for (var ky = 0u; ky < KH; ky++) {
                let iy = origin.y + i32(ky * p.dilation_y);
                if (iy < 0 || iy >= i32(H)) { continue; }
                let row = (x_plane + u32(iy)) * W;
                for (var kx = 0u; kx < KW; kx++) {
                    let ix = origin.x + i32(kx * p.dilation_x);
                    if (ix >= 0 && ix < i32(W)) {
                        let t = ((oc * cig + icg) * KH + ky) * KW + kx;
                        acc += load_x(row + u32(ix)) * vec4<f32>(load_w(t), load_w(t + taps), load_w(t + 2u * taps), load_w(t + 3u * taps));
                    }
                }
            }
        }
        epilogue4((n * M + oc) * OH * OW + pixel, OH * OW, oc, 1u, acc, 4u);
    }
}

// Depthwise convolution (groups == C == M): the channel's taps read straight from its own
// plane. Same parameters and grid as `conv2d`.
@compute @workgroup_size(64)
fn conv_depthwise(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let H = p.in_height; let W = p.in_width; let M = p.out_channels; let OH = p.out_height; let OW = p.out_width; let KH = p.kernel_height; let KW = p.kernel_width;
    let pixel = gid.x;
    if (pixel >= OH * OW) { return; }
    let origin = window_origin(pixel);
    for (var plane = gid.y; plane < p.batch * M; plane += nwg.y) {
        let oc = plane % M;
        let x_plane = plane * H * W;
        let w_base = oc * KH * KW;
        var acc = 0.0;
        for (var ky = 0u; ky < KH; ky++) {
            let iy = origin.y + i32(ky * p.dilation_y);
            if (iy < 0 || iy >= i32(H)) { continue; }
            let row = x_plane + u32(iy) * W;
            for (var kx = 0u; kx < KW; kx++) {
                let ix = origin.x + i32(kx * p.dilation_x);
                if (ix >= 0 && ix < i32(W)) {
                    acc += load_x(row + u32(ix)) * load_w(w_base + ky * KW + kx);
                }
            }
        }
        epilogue(plane * OH * OW + pixel, oc, acc);
    }
}

// Depthwise 3x3 convolution with dilation 1 and a column stride of 1 or 2 (MobileNet's): four
// consecutive outputs of a row per invocation, so that each input value loaded serves every
// output whose window covers it, each weight is loaded once per row, and the pixel is split
// into row and column once per four outputs. A 1-D grid over every plane's quads (rows x
// ceil(OW/4)), so that small planes still fill their workgroups.

// Input column `ix` of the row starting at `row`, or the padding's zero.
fn depthwise_tap(row: u32, ix: i32) -> f32 {
    if (ix < 0 || ix >= i32(p.in_width)) { return 0.0; }
    return load_x(row + u32(ix));
}

@compute @workgroup_size(64)
fn conv_depthwise_3x3(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let H = p.in_height; let W = p.in_width; let M = p.out_channels; let OH = p.out_height; let OW = p.out_width;
    let quads_per_row = (OW + 3u) / 4u;
    let quads_per_plane = OH * quads_per_row;
    let index = linear_index(gid, nwg);
    if (index >= p.batch * M * quads_per_plane) { return; }
    let plane = index / quads_per_plane;
    let quad = index % quads_per_plane;
    let oy = quad / quads_per_row;
    let ox = (quad % quads_per_row) * 4u;
    let iy0 = i32(oy * p.stride_y) - i32(p.pad_top);
    let ix = i32(ox * p.stride_x) - i32(p.pad_left);
    let stride_1 = p.stride_x == 1u;
    let x_plane = plane * H * W;
    let w_base = (plane % M) * 9u;
    var acc = vec4<f32>(0.0);
    for (var ky = 0u; ky < 3u; ky++) {
        let iy = iy0 + i32(ky);
        if (iy < 0 || iy >= i32(H)) { continue; }
        let row = x_plane + u32(iy) * W;
        let w0 = load_w(w_base + ky * 3u);
        let w1 = load_w(w_base + ky * 3u + 1u);
        let w2 = load_w(w_base + ky * 3u + 2u);
        let a0 = depthwise_tap(row, ix);
        let a1 = depthwise_tap(row, ix + 1);
        let a2 = depthwise_tap(row, ix + 2);
        let a3 = depthwise_tap(row, ix + 3);
        let a4 = depthwise_tap(row, ix + 4);
        let a5 = depthwise_tap(row, ix + 5);
        if (stride_1) {
            acc += w0 * vec4<f32>(a0, a1, a2, a3) + w1 * vec4<f32>(a1, a2, a3, a4) + w2 * vec4<f32>(a2, a3, a4, a5);
        } else {
            let a6 = depthwise_tap(row, ix + 6);
            let a7 = depthwise_tap(row, ix + 7);
            let a8 = depthwise_tap(row, ix + 8);
            acc += w0 * vec4<f32>(a0, a2, a4, a6) + w1 * vec4<f32>(a1, a3, a5, a7) + w2 * vec4<f32>(a2, a4, a6, a8);
        }
    }
    epilogue4((plane * OH + oy) * OW + ox, 1u, plane % M, 0u, acc, min(4u, OW - ox));
}

// The 1x1 convolutions (stride 1, no padding, one group) are one product [M,C] x [C,N*P] over
// the whole batch: column j is pixel j % P of image j / P (P = OH*OW), read at
// x[(n*C + k)*P + p] and written at y[(n*M + m)*P + p]. Three kernels cover its shapes.

// Where column j's input starts: x[column_base(j) + k * P] is its value for channel k.
fn column_base(j: u32, C: u32, P: u32) -> u32 {
    return (j / P) * C * P + j % P;
}

fn column_output(j: u32, m: u32, M: u32, P: u32) -> u32 {
    return ((j / P) * M + m) * P + j % P;
}

// Large products: 64x64 output tiles, each of the 256 invocations accumulating a 4x4 block
// (rows ty + 16a, columns tx + 16b) from 16-deep slices of both operands staged in workgroup
// memory. Grid: column tiles (ceil(N*P/64), folded into x and z) by ceil(M/64).
// One padding column keeps the transposing store to `slice_w` free of bank conflicts.
var<workgroup> slice_w: array<array<f32, 65>, 16>;
var<workgroup> slice_x: array<array<f32, 64>, 16>;

@compute @workgroup_size(16, 16)
fn conv_pointwise_blocked(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let C = p.in_channels; let M = p.out_channels; let P = p.out_height * p.out_width; let NP = p.batch * P;
    let m0 = wid.y * 64u;
    let j0 = (wid.x + wid.z * nwg.x) * 64u;
    let t = lid.y * 16u + lid.x;
    // Every slice this invocation stages comes from the same column (256 is a multiple of 64).
    let xj = j0 + t % 64u;
    let x_base = column_base(xj, C, P);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < C; k0 += 16u) {
        for (var r = 0u; r < 4u; r++) {
            let e = t + 256u * r;
            // Weights: 16 consecutive k of one row per 16 invocations.
            let wm = m0 + e / 16u;
            let wk = k0 + e % 16u;
            var wv = 0.0;
            if (wm < M && wk < C) { wv = load_w(wm * C + wk); }
            slice_w[e % 16u][e / 16u] = wv;
            // Inputs: 64 consecutive columns of one k per 64 invocations.
            let xk = k0 + e / 64u;
            var xv = 0.0;
            if (xk < C && xj < NP) { xv = load_x(x_base + xk * P); }
            slice_x[e / 64u][e % 64u] = xv;
        }
        workgroupBarrier();
        for (var k = 0u; k < 16u; k++) {
            let b = vec4<f32>(slice_x[k][lid.x], slice_x[k][lid.x + 16u], slice_x[k][lid.x + 32u], slice_x[k][lid.x + 48u]);
            acc0 += slice_w[k][lid.y] * b;
            acc1 += slice_w[k][lid.y + 16u] * b;
            acc2 += slice_w[k][lid.y + 32u] * b;
            acc3 += slice_w[k][lid.y + 48u] * b;
        }
        workgroupBarrier();
    }
    var rows = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var a = 0u; a < 4u; a++) {
        let m = m0 + lid.y + 16u * a;
        if (m >= M) { continue; }
        for (var b = 0u; b < 4u; b++) {
            let j = j0 + lid.x + 16u * b;
            if (j < NP) { epilogue(column_output(j, m, M, P), m, rows[a][b]); }
        }
    }
}

// Mid-sized products: 16x16 output tiles, one output per invocation, so that small layers
// still spread over many workgroups. Grid: column tiles (ceil(N*P/16), folded into x and z) by
// ceil(M/16).
var<workgroup> tile_w: array<array<f32, 16>, 16>;
var<workgroup> tile_x: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16)
fn conv_pointwise(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let C = p.in_channels; let M = p.out_channels; let P = p.out_height * p.out_width; let NP = p.batch * P;
    let col = (wid.x + wid.z * nwg.x) * 16u + lid.x;
    let row = wid.y * 16u + lid.y;
    let x_base = column_base(col, C, P);
    var acc = 0.0;
    for (var k0 = 0u; k0 < C; k0 += 16u) {
        let kw = k0 + lid.x;
        var wv = 0.0;
        if (row < M && kw < C) { wv = load_w(row * C + kw); }
        tile_w[lid.y][lid.x] = wv;
        let kx = k0 + lid.y;
        var xv = 0.0;
        if (kx < C && col < NP) { xv = load_x(x_base + kx * P); }
        tile_x[lid.y][lid.x] = xv;
        workgroupBarrier();
        for (var k = 0u; k < 16u; k++) {
            acc += tile_w[lid.y][k] * tile_x[k][lid.x];
        }
        workgroupBarrier();
    }
    if (row < M && col < NP) {
        epilogue(column_output(col, row, M, P), row, acc);
    }
}

// Narrow products (a few columns, as at batch 1 on small feature maps): one workgroup per
// output row and group of 4 columns, its 64 invocations splitting the C-long dot products and
// summing them in workgroup memory. Grid: (M, ceil(N*P/4), 1). Where the device has subgroup
// operations, `conv_pointwise_narrow_subgroup` (conv_subgroup.wgsl) sums them with those instead.
var<workgroup> partial: array<vec4<f32>, 64>;

// Invocation `lane`'s share of the 4 dot products of workgroup `wid` (output row wid.x).
fn narrow_partial(wid: vec3<u32>, lane: u32) -> vec4<f32> {
    let C = p.in_channels; let P = p.out_height * p.out_width; let NP = p.batch * P;
    let m = wid.x;
    let j0 = wid.y * 4u;
    // Columns past the end read column j0 again and are not written.
    var bases = vec4<u32>(0u);
    for (var c = 0u; c < 4u; c++) {
        bases[c] = column_base(select(j0, j0 + c, j0 + c < NP), C, P);
    }
    var acc = vec4<f32>(0.0);
    for (var k = lane; k < C; k += 64u) {
        let o = k * P;
        let xs = vec4<f32>(load_x(bases.x + o), load_x(bases.y + o), load_x(bases.z + o), load_x(bases.w + o));
        acc += load_w(m * C + k) * xs;
    }
    return acc;
}

// Writes column `column` (0-3) of workgroup `wid` from its summed dot product, if it exists.
fn narrow_store(wid: vec3<u32>, column: u32, sum: f32) {
    let P = p.out_height * p.out_width; let NP = p.batch * P;
    let j = wid.y * 4u + column;
    if (j < NP) {
        epilogue(column_output(j, wid.x, p.out_channels, P), wid.x, sum);
    }
}

@compute @workgroup_size(64)
fn conv_pointwise_narrow(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    partial[lid.x] = narrow_partial(wid, lid.x);
    workgroupBarrier();
    for (var span = 32u; span > 0u; span /= 2u) {
        if (lid.x < span) { partial[lid.x] += partial[lid.x + span]; }
        workgroupBarrier();
    }
    if (lid.x < 4u) {
        narrow_store(wid, lid.x, partial[0][lid.x]);
    }
}

// Without workgroup memory (for devices where barriers are slow, such as SwiftShader): one
// invocation per 4 output channels by 4 columns, so that each input value loaded serves four
// channels and each weight four columns. Output channels a multiple of 4. A 1-D grid over
// channel quads (M/4) by column quads (ceil(N*P/4)), so that narrow products still fill their
// workgroups.
@compute @workgroup_size(64)
fn conv_pointwise_quads(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let C = p.in_channels; let M = p.out_channels; let P = p.out_height * p.out_width; let NP = p.batch * P;
    let column_quads = (NP + 3u) / 4u;
    let index = linear_index(gid, nwg);
    if (index >= M / 4u * column_quads) { return; }
    let j0 = index % column_quads * 4u;
    // Columns past the end read column j0 again and are not written.
    var bases = vec4<u32>(0u);
    for (var c = 0u; c < 4u; c++) {
        bases[c] = column_base(select(j0, j0 + c, j0 + c < NP), C, P);
    }
    let m = index / column_quads * 4u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let w0 = m * C;
    for (var k = 0u; k < C; k++) {
        let o = k * P;
        let xs = vec4<f32>(load_x(bases.x + o), load_x(bases.y + o), load_x(bases.z + o), load_x(bases.w + o));
        acc0 += load_w(w0 + k) * xs;
        acc1 += load_w(w0 + C + k) * xs;
        acc2 += load_w(w0 + 2u * C + k) * xs;
        acc3 += load_w(w0 + 3u * C + k) * xs;
    }
    // Column c's four channels are acc0[c]..acc3[c], P apart in y.
    let columns = array<vec4<f32>, 4>(
        vec4<f32>(acc0.x, acc1.x, acc2.x, acc3.x),
        vec4<f32>(acc0.y, acc1.y, acc2.y, acc3.y),
        vec4<f32>(acc0.z, acc1.z, acc2.z, acc3.z),
        vec4<f32>(acc0.w, acc1.w, acc2.w, acc3.w),
    );
    for (var c = 0u; c < min(4u, NP - j0); c++) {
        epilogue4(column_output(j0 + c, m, M, P), P, m, 1u, columns[c], 4u);
    }
}
