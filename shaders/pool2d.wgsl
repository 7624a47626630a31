// Windowed max and average pooling, NCHW: one invocation per output value.

struct Pool2dParams {
    total: u32,
    in_height: u32,
    in_width: u32,
    out_height: u32,
    out_width: u32,
    kernel_height: u32,
    kernel_width: u32,
    stride_y: u32,
    stride_x: u32,
    pad_top: u32,
    pad_left: u32,
    pad_bottom: u32,
    pad_right: u32,
    // 1: max, 0: average.
    is_max: u32,
    count_include_pad: u32,
}

@group(0) @binding(0) var<storage, read> p: Pool2dParams;
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read_write> y: array<elem>;

@compute @workgroup_size(64)
fn pool2d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.total) { return; }
    let H = i32(p.in_height); let W = i32(p.in_width); let OH = p.out_height; let OW = p.out_width;
    let ox = i % OW;
    let oy = (i / OW) % OH;
    let plane = i / (OW * OH);
    let y0 = i32(oy * p.stride_y) - i32(p.pad_top);
    let x0 = i32(ox * p.stride_x) - i32(p.pad_left);
    var acc = 0.0;
    // f32's lowest value, written so that Tint takes it (it rejects -3.4028235e38).
    var best = -3.402823466e38;
    var count = 0u;
    var window = 0u;
    for (var ky = 0; ky < i32(p.kernel_height); ky++) {
        for (var kx = 0; kx < i32(p.kernel_width); kx++) {
            let iy = y0 + ky;
            let ix = x0 + kx;
            if (iy < H + i32(p.pad_bottom) && ix < W + i32(p.pad_right)) { window++; }
            if (iy < 0 || ix < 0 || iy >= H || ix >= W) { continue; }
            let v = f32(x[(plane * u32(H) + u32(iy)) * u32(W) + u32(ix)]);
            acc += v;
            best = max(best, v);
            count++;
        }
    }
    if (p.is_max == 1u) {
        y[i] = elem(best);
    } else {
        let divisor = select(count, window, p.count_include_pad != 0u);
        y[i] = elem(acc / f32(max(divisor, 1u)));
    }
}
