// Broadcasting binary operations over tensors of rank up to 6 (Add, Mul, Sub, Div, Pow, Min,
// Max), each operand addressed through its own strides (0 along a broadcast dimension).

struct BinaryParams {
    total: u32,
    // 0 add, 1 mul, 2 sub, 3 div, 4 pow, 5 min, 6 max (`BinaryParams::code`).
    op: u32,
    rank: u32,
    out_dims: array<u32, 6>,
    a_strides: array<u32, 6>,
    b_strides: array<u32, 6>,
}

@group(0) @binding(0) var<storage, read> p: BinaryParams;
@group(0) @binding(1) var<storage, read> a: array<elem>;
@group(0) @binding(2) var<storage, read> b: array<elem>;
@group(0) @binding(3) var<storage, read> c: array<elem>;
@group(0) @binding(4) var<storage, read_write> y: array<elem>;

@compute @workgroup_size(64)
fn binary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.total) { return; }
    var rem = i;
    var ia = 0u;
    var ib = 0u;
    for (var d = i32(p.rank) - 1; d >= 0; d--) {
        let dim = p.out_dims[d];
        let coord = rem % dim;
        rem = rem / dim;
        ia += coord * p.a_strides[d];
        ib += coord * p.b_strides[d];
    }
    let va = f32(a[ia]);
    let vb = f32(b[ib]);
    y[i] = elem(apply_binary(va, vb));
}

fn apply_binary(a: f32, b: f32) -> f32 {
    switch p.op {
        case 0u: { return a + b; }
        case 1u: { return a * b; }
        case 2u: { return a - b; }
        case 3u: { return a / b; }
        case 4u: { return power(a, b); }
        case 5u: { return min(a, b); }
        default: { return max(a, b); }
    }
}

// ONNX's Pow: WGSL's pow is undefined for a negative base, which ONNX allows with an integral
// exponent (x^2 of a negative x, say).
fn power(a: f32, b: f32) -> f32 {
    if (a >= 0.0 || b != round(b)) { return pow(a, b); }
    let magnitude = pow(-a, b);
    return select(magnitude, -magnitude, (i32(b) & 1) == 1);
}
