// Fused pairs of layers: one dispatch where the second layer computes the first one's values
// as it reads them.
// p: [0..22) the 1x1 convolution's parameters and [22..44) the depthwise convolution's, each
//    laid out as in conv.wgsl.

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w_dw: array<f32>;
@group(0) @binding(3) var<storage, read> bias_dw: array<f32>;
@group(0) @binding(4) var<storage, read> w: array<f32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read> residual: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;

const DW: u32 = 22u;

// The depthwise output (bias and activation applied) for channel k at column j, a column being
// pixel j % P of image j / P as in the 1x1 kernels.
fn depthwise_value(j: u32, k: u32) -> f32 {
    let C = p[DW + 2u]; let H = p[DW + 3u]; let W = p[DW + 4u]; let OH = p[DW + 6u]; let OW = p[DW + 7u];
    let KH = p[DW + 8u]; let KW = p[DW + 9u];
    let pixel = j % (OH * OW);
    let oy = pixel / OW;
    let ox = pixel % OW;
    let y0 = i32(oy * p[DW + 10u]) - i32(p[DW + 12u]);
    let x0 = i32(ox * p[DW + 11u]) - i32(p[DW + 13u]);
    let x_plane = ((j / (OH * OW)) * C + k) * H * W;
    var acc = 0.0;
    for (var ky = 0u; ky < KH; ky++) {
        let iy = y0 + i32(ky * p[DW + 14u]);
        if (iy < 0 || iy >= i32(H)) { continue; }
        for (var kx = 0u; kx < KW; kx++) {
            let ix = x0 + i32(kx * p[DW + 15u]);
            if (ix >= 0 && ix < i32(W)) {
                acc += x[x_plane + u32(iy) * W + u32(ix)] * w_dw[(k * KH + ky) * KW + kx];
            }
        }
    }
    if (p[DW + 17u] != 0u) { acc += bias_dw[k]; }
    return activate(acc, p[DW + 19u], pf(DW + 20u), pf(DW + 21u));
}

// A depthwise convolution feeding a narrow 1x1 convolution (at most a few columns): one
// workgroup per output row and group of 4 columns, as `conv_pointwise_narrow`, its 64
// invocations splitting the channels. Grid: (M, ceil(N*P/4), 1).
var<workgroup> partial: array<vec4<f32>, 64>;

@compute @workgroup_size(64)
fn depthwise_pointwise_narrow(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let C = p[2]; let M = p[5]; let P = p[6] * p[7]; let NP = p[1] * P;
    let m = wid.x;
    let j0 = wid.y * 4u;
    var acc = vec4<f32>(0.0);
    for (var k = lid.x; k < C; k += 64u) {
        var xs = vec4<f32>(0.0);
        for (var c = 0u; c < 4u; c++) {
            if (j0 + c < NP) { xs[c] = depthwise_value(j0 + c, k); }
        }
        acc += w[m * C + k] * xs;
    }
    partial[lid.x] = acc;
    workgroupBarrier();
    for (var span = 32u; span > 0u; span /= 2u) {
        if (lid.x < span) { partial[lid.x] += partial[lid.x + span]; }
        workgroupBarrier();
    }
    let j = j0 + lid.x;
    if (lid.x < 4u && j < NP) {
        let i = ((j / P) * M + m) * P + j % P;
        var v = partial[0][lid.x];
        if (p[17] != 0u) { v += bias[m]; }
        if (p[18] != 0u) { v += residual[i]; }
        y[i] = activate(v, p[19], pf(20), pf(21));
    }
}
