// Pooling family, NCHW.

@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read_write> y: array<elem>;

// p: [0] planes (N*C), [1] values per plane. One invocation per plane.
@compute @workgroup_size(64)
fn global_average(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p[0]) { return; }
    let n = p[1];
    var acc = 0.0;
    for (var j = 0u; j < n; j++) { acc += f32(x[i * n + j]); }
    y[i] = elem(acc / f32(n));
}

// p: [0] total, [1] H, [2] W, [3] OH, [4] OW, [5] KH, [6] KW, [7] SH, [8] SW, [9] PT, [10] PL,
//    [11] PB, [12] PR, [13] 1 = max / 0 = average, [14] count_include_pad
@compute @workgroup_size(64)
fn pool2d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p[0]) { return; }
    let H = i32(p[1]); let W = i32(p[2]); let OH = p[3]; let OW = p[4];
    let ox = i % OW;
    let oy = (i / OW) % OH;
    let plane = i / (OW * OH);
    let y0 = i32(oy * p[7]) - i32(p[9]);
    let x0 = i32(ox * p[8]) - i32(p[10]);
    var acc = 0.0;
    var best = -3.4028235e38;
    var count = 0u;
    var window = 0u;
    for (var ky = 0; ky < i32(p[5]); ky++) {
        for (var kx = 0; kx < i32(p[6]); kx++) {
            let iy = y0 + ky;
            let ix = x0 + kx;
            if (iy < H + i32(p[11]) && ix < W + i32(p[12])) { window++; }
            if (iy < 0 || ix < 0 || iy >= H || ix >= W) { continue; }
            let v = f32(x[(plane * u32(H) + u32(iy)) * u32(W) + u32(ix)]);
            acc += v;
            best = max(best, v);
            count++;
        }
    }
    if (p[13] == 1u) {
        y[i] = elem(best);
    } else {
        let divisor = select(count, window, p[14] != 0u);
        y[i] = elem(acc / f32(max(divisor, 1u)));
    }
}
