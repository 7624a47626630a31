// Data movement through strides: each output value is read from the input at
// offset + sum over d of coord[d] * strides[d] (strides may be negative). Transposes (permuted
// strides) and strided slices (scaled strides, an offset to the first value) lower to it.

struct StridedCopyParams {
    total: u32,
    rank: u32,
    offset: u32,
    out_dims: array<u32, 6>,
    strides: array<i32, 6>,
}

@group(0) @binding(0) var<storage, read> p: StridedCopyParams;
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read_write> y: array<elem>;

@compute @workgroup_size(64)
fn strided_copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.total) { return; }
    var rem = i;
    var source = i32(p.offset);
    for (var d = i32(p.rank) - 1; d >= 0; d--) {
        let dim = p.out_dims[d];
        source += i32(rem % dim) * p.strides[d];
        rem = rem / dim;
    }
    y[i] = x[u32(source)];
}
