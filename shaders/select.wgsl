// Where: y = condition != 0 ? a : b, the three operands broadcast (strides 0 along broadcast
// dimensions), rank up to 6.

struct SelectParams {
    total: u32,
    rank: u32,
    out_dims: array<u32, 6>,
    condition_strides: array<u32, 6>,
    a_strides: array<u32, 6>,
    b_strides: array<u32, 6>,
}

@group(0) @binding(0) var<storage, read> p: SelectParams;
@group(0) @binding(1) var<storage, read> condition: array<elem>;
@group(0) @binding(2) var<storage, read> a: array<elem>;
@group(0) @binding(3) var<storage, read> b: array<elem>;
@group(0) @binding(4) var<storage, read_write> y: array<elem>;

@compute @workgroup_size(64)
fn select_where(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.total) { return; }
    var rem = i;
    var ic = 0u;
    var ia = 0u;
    var ib = 0u;
    for (var d = i32(p.rank) - 1; d >= 0; d--) {
        let dim = p.out_dims[d];
        let coord = rem % dim;
        rem = rem / dim;
        ic += coord * p.condition_strides[d];
        ia += coord * p.a_strides[d];
        ib += coord * p.b_strides[d];
    }
    y[i] = select(b[ib], a[ia], f32(condition[ic]) != 0.0);
}
