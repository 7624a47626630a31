// ConvTranspose, NCHW: one invocation per output value gathers the input pixels whose strided
// windows cover it. Weights are [in_channels, out_channels / groups, kernel_height, kernel_width].

struct ConvTransposeParams {
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
}

@group(0) @binding(0) var<storage, read> p: ConvTransposeParams;
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read> w: array<elem>;
@group(0) @binding(3) var<storage, read> bias: array<elem>;
@group(0) @binding(4) var<storage, read_write> y: array<elem>;

@compute @workgroup_size(64)
fn conv_transpose(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.total) { return; }
    let ox = i32(i % p.out_width);
    let oy = i32((i / p.out_width) % p.out_height);
    let oc = (i / (p.out_width * p.out_height)) % p.out_channels;
    let n = i / (p.out_width * p.out_height * p.out_channels);
    let out_per_group = p.out_channels / p.groups;
    let in_per_group = p.in_channels / p.groups;
    let g = oc / out_per_group;
    let ocg = oc % out_per_group;
    var acc = 0.0;
    if (p.has_bias != 0u) { acc = f32(bias[oc]); }
    for (var ky = 0u; ky < p.kernel_height; ky++) {
        let ty = oy + i32(p.pad_top) - i32(ky * p.dilation_y);
        if (ty < 0 || ty % i32(p.stride_y) != 0) { continue; }
        let iy = u32(ty) / p.stride_y;
        if (iy >= p.in_height) { continue; }
        for (var kx = 0u; kx < p.kernel_width; kx++) {
            let tx = ox + i32(p.pad_left) - i32(kx * p.dilation_x);
            if (tx < 0 || tx % i32(p.stride_x) != 0) { continue; }
            let ix = u32(tx) / p.stride_x;
            if (ix >= p.in_width) { continue; }
            for (var icg = 0u; icg < in_per_group; icg++) {
                let ic = g * in_per_group + icg;
                let xv = f32(x[((n * p.in_channels + ic) * p.in_height + iy) * p.in_width + ix]);
                let wv = f32(w[((ic * out_per_group + ocg) * p.kernel_height + ky) * p.kernel_width + kx]);
                acc += xv * wv;
            }
        }
    }
    y[i] = elem(acc);
}
