// Softmax (or LogSoftmax) along one axis: one invocation per row (outer * inner rows of
// `length` values).

struct SoftmaxParams {
    rows: u32,
    length: u32,
    inner: u32,
    // 1: LogSoftmax.
    log: u32,
}

@group(0) @binding(0) var<storage, read> p: SoftmaxParams;
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read_write> y: array<elem>;

@compute @workgroup_size(64)
fn softmax(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.rows) { return; }
    let len = p.length; let inner = p.inner;
    let base = (i / inner) * len * inner + i % inner;
    // f32's lowest value, written so that every WGSL compiler takes it (Tint rejects
    // -3.4028235e38 as out of range).
    var m = -3.402823466e38;
    for (var j = 0u; j < len; j++) { m = max(m, f32(x[base + j * inner])); }
    var sum = 0.0;
    for (var j = 0u; j < len; j++) { sum += exp(f32(x[base + j * inner]) - m); }
    if (p.log != 0u) {
        let log_sum = log(sum);
        for (var j = 0u; j < len; j++) { y[base + j * inner] = elem(f32(x[base + j * inner]) - m - log_sum); }
        return;
    }
    for (var j = 0u; j < len; j++) { y[base + j * inner] = elem(exp(f32(x[base + j * inner]) - m) / sum); }
}
