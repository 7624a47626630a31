// Convolution family, NCHW, with a fused epilogue: + bias, + residual, activation.
// p: [0] total outputs, [1] N, [2] C, [3] H, [4] W, [5] M, [6] OH, [7] OW, [8] KH, [9] KW,
//    [10] SH, [11] SW, [12] PT, [13] PL, [14] DH, [15] DW, [16] groups, [17] has_bias,
//    [18] has_residual, [19] activation code, [20] act a, [21] act b

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

fn epilogue(i: u32, oc: u32, acc: f32) {
    var v = acc;
    if (p[17] != 0u) { v += bias[oc]; }
    if (p[18] != 0u) { v += residual[i]; }
    y[i] = activate(v, p[19], pf(20), pf(21));
}

// Any stride, padding, dilation and group count: one invocation per output value.
@compute @workgroup_size(64)
fn conv2d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p[0]) { return; }
    let C = p[2]; let H = p[3]; let W = p[4]; let M = p[5]; let OH = p[6]; let OW = p[7];
    let KH = p[8]; let KW = p[9];
    let ox = i % OW;
    let oy = (i / OW) % OH;
    let oc = (i / (OW * OH)) % M;
    let n = i / (OW * OH * M);
    let cig = C / p[16];
    let g = oc / (M / p[16]);
    let y0 = i32(oy * p[10]) - i32(p[12]);
    let x0 = i32(ox * p[11]) - i32(p[13]);
    var acc = 0.0;
    for (var icg = 0u; icg < cig; icg++) {
        let ic = g * cig + icg;
        let x_plane = (n * C + ic) * H;
        let w_base = (oc * cig + icg) * KH;
        for (var ky = 0u; ky < KH; ky++) {
            let iy = y0 + i32(ky * p[14]);
            if (iy < 0 || iy >= i32(H)) { continue; }
            for (var kx = 0u; kx < KW; kx++) {
                let ix = x0 + i32(kx * p[15]);
                if (ix < 0 || ix >= i32(W)) { continue; }
                acc += x[(x_plane + u32(iy)) * W + u32(ix)] * w[(w_base + ky) * KW + kx];
            }
        }
    }
    epilogue(i, oc, acc);
}

// 1x1, stride 1, no padding, one group: per image a [M,C] x [C,H*W] product, tiled 16x16 in
// workgroup memory. Grid: (ceil(HW/16), ceil(M/16), N).
var<workgroup> tile_w: array<array<f32, 16>, 16>;
var<workgroup> tile_x: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16)
fn conv_pointwise(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let C = p[2]; let M = p[5]; let P = p[6] * p[7];
    let col = wid.x * 16u + lid.x;
    let row = wid.y * 16u + lid.y;
    let n = wid.z;
    var acc = 0.0;
    for (var k0 = 0u; k0 < C; k0 += 16u) {
        let kw = k0 + lid.x;
        var wv = 0.0;
        if (row < M && kw < C) { wv = w[row * C + kw]; }
        tile_w[lid.y][lid.x] = wv;
        let kx = k0 + lid.y;
        var xv = 0.0;
        if (kx < C && col < P) { xv = x[(n * C + kx) * P + col]; }
        tile_x[lid.y][lid.x] = xv;
        workgroupBarrier();
        for (var k = 0u; k < 16u; k++) {
            acc += tile_w[lid.y][k] * tile_x[k][lid.x];
        }
        workgroupBarrier();
    }
    if (row < M && col < P) {
        epilogue((n * M + row) * P + col, row, acc);
    }
}
