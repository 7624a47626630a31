// Reductions over any axes (ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceL2): one
// invocation per output value walks the `count` input values it combines.

struct ReduceParams {
    total: u32,
    // 0 mean, 1 sum, 2 max, 3 min, 4 l2 (`ReduceParams::code`).
    op: u32,
    count: u32,
    rank: u32,
    // The input's dimensions with the reduced ones set to 1, and the input's strides.
    kept_dims: array<u32, 6>,
    strides: array<u32, 6>,
    reduced_rank: u32,
    reduced_dims: array<u32, 6>,
    reduced_strides: array<u32, 6>,
}

@group(0) @binding(0) var<storage, read> p: ReduceParams;
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read_write> y: array<elem>;

@compute @workgroup_size(64)
fn reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.total) { return; }
    var rem = i;
    var base = 0u;
    for (var d = i32(p.rank) - 1; d >= 0; d--) {
        base += (rem % p.kept_dims[d]) * p.strides[d];
        rem = rem / p.kept_dims[d];
    }
    var acc = select(0.0, -3.402823466e38, p.op == 2u);
    if (p.op == 3u) { acc = 3.402823466e38; }
    for (var r = 0u; r < p.count; r++) {
        var left = r;
        var offset = base;
        for (var k = i32(p.reduced_rank) - 1; k >= 0; k--) {
            offset += (left % p.reduced_dims[k]) * p.reduced_strides[k];
            left = left / p.reduced_dims[k];
        }
        let v = f32(x[offset]);
        switch p.op {
            case 2u: { acc = max(acc, v); }
            case 3u: { acc = min(acc, v); }
            case 4u: { acc += v * v; }
            default: { acc += v; }
        }
    }
    switch p.op {
        case 0u: { acc = acc / f32(max(p.count, 1u)); }
        case 4u: { acc = sqrt(acc); }
        default: {}
    }
    y[i] = elem(acc);
}
