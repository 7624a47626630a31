// Gather along one axis: index select with constant indices, or an embedding lookup (constant
// data, indices computed). Indices are stored as values; negative ones count from the end.

struct GatherParams {
    total: u32,
    // The data's extent along the axis, the number of indices and the values after the axis.
    extent: u32,
    count: u32,
    inner: u32,
}

@group(0) @binding(0) var<storage, read> p: GatherParams;
@group(0) @binding(1) var<storage, read> data: array<elem>;
@group(0) @binding(2) var<storage, read> indices: array<elem>;
@group(0) @binding(3) var<storage, read_write> y: array<elem>;

@compute @workgroup_size(64)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.total) { return; }
    let r = i % p.inner;
    let k = (i / p.inner) % p.count;
    let o = i / (p.inner * p.count);
    var index = i32(round(f32(indices[k])));
    if (index < 0) { index += i32(p.extent); }
    // An index out of range reads the nearest row rather than another tensor's memory.
    let row = u32(clamp(index, 0, i32(p.extent) - 1));
    y[i] = data[(o * p.extent + row) * p.inner + r];
}
