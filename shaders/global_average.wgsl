// Global average pooling, NCHW: one invocation per plane.

struct GlobalAverageParams {
    // batch * channels.
    planes: u32,
    // Values per plane.
    plane_size: u32,
}

@group(0) @binding(0) var<storage, read> p: GlobalAverageParams;
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read_write> y: array<elem>;

@compute @workgroup_size(64)
fn global_average(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.planes) { return; }
    let n = p.plane_size;
    var acc = 0.0;
    for (var j = 0u; j < n; j++) { acc += f32(x[i * n + j]); }
    y[i] = elem(acc / f32(n));
}
