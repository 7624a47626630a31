// Element-wise family: broadcasting Add/Mul, standalone activations, per-channel affine.

@group(0) @binding(1) var<storage, read> a: array<elem>;
@group(0) @binding(2) var<storage, read> b: array<elem>;
@group(0) @binding(3) var<storage, read> c: array<elem>;
@group(0) @binding(4) var<storage, read_write> y: array<elem>;

// p: [0] total, [1] 0 = add / 1 = mul, [2] rank (<= 6), [3..9] out dims,
//    [9..15] a strides, [15..21] b strides (0 where broadcast). Reads a and b.
@compute @workgroup_size(64)
fn binary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p[0]) { return; }
    var rem = i;
    var ia = 0u;
    var ib = 0u;
    for (var d = i32(p[2]) - 1; d >= 0; d--) {
        let dim = p[3u + u32(d)];
        let coord = rem % dim;
        rem = rem / dim;
        ia += coord * p[9u + u32(d)];
        ib += coord * p[15u + u32(d)];
    }
    let va = f32(a[ia]);
    let vb = f32(b[ib]);
    y[i] = elem(select(va * vb, va + vb, p[1] == 0u));
}

// p: [0] total, [1] activation code, [2] act a, [3] act b. Reads a.
@compute @workgroup_size(64)
fn activation(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p[0]) { return; }
    y[i] = elem(activate(f32(a[i]), p[1], pf(2), pf(3)));
}

// p: [0] total, [1] channels, [2] values per channel plane. y = a * b[c] + c[c].
@compute @workgroup_size(64)
fn channel_affine(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p[0]) { return; }
    let ch = (i / p[2]) % p[1];
    y[i] = elem(f32(a[i]) * f32(b[ch]) + f32(c[ch]));
}
