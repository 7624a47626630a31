// Data-movement family: Concat (one copy per input) and Softmax.

@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read_write> y: array<elem>;

// p: [0] total (outer * input slab), [1] input slab, [2] output slab, [3] offset in output slab.
@compute @workgroup_size(64)
fn concat_copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p[0]) { return; }
    let o = i / p[1];
    let r = i % p[1];
    y[o * p[2] + p[3] + r] = x[i];
}

// p: [0] rows (outer * inner), [1] length of the softmax axis, [2] inner. One invocation per row.
@compute @workgroup_size(64)
fn softmax(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p[0]) { return; }
    let len = p[1]; let inner = p[2];
    let base = (i / inner) * len * inner + i % inner;
    var m = -3.4028235e38;
    for (var j = 0u; j < len; j++) { m = max(m, f32(x[base + j * inner])); }
    var sum = 0.0;
    for (var j = 0u; j < len; j++) { sum += exp(f32(x[base + j * inner]) - m); }
    for (var j = 0u; j < len; j++) { y[base + j * inner] = elem(exp(f32(x[base + j * inner]) - m) / sum); }
}
