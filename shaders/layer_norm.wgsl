// LayerNormalization and InstanceNormalization: each row of `inner` values is normalised to
// zero mean and unit variance, then scaled and shifted: per position within the row
// (LayerNormalization: the axes from `axis` on), or per channel (InstanceNormalization: one row
// per image and channel, the row's channel is row % channels). One invocation per row.

struct LayerNormParams {
    rows: u32,
    inner: u32,
    has_bias: u32,
    epsilon: f32,
    // 1: scale and bias per channel (InstanceNormalization).
    per_channel: u32,
    channels: u32,
}

@group(0) @binding(0) var<storage, read> p: LayerNormParams;
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read> scale: array<elem>;
@group(0) @binding(3) var<storage, read> bias: array<elem>;
@group(0) @binding(4) var<storage, read_write> y: array<elem>;

@compute @workgroup_size(64)
fn layer_norm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = linear_index(gid, nwg);
    if (row >= p.rows) { return; }
    let base = row * p.inner;
    var sum = 0.0;
    for (var j = 0u; j < p.inner; j++) { sum += f32(x[base + j]); }
    let mean = sum / f32(p.inner);
    var squares = 0.0;
    for (var j = 0u; j < p.inner; j++) {
        let d = f32(x[base + j]) - mean;
        squares += d * d;
    }
    let inverse = 1.0 / sqrt(squares / f32(p.inner) + p.epsilon);
    let channel = row % max(p.channels, 1u);
    for (var j = 0u; j < p.inner; j++) {
        let k = select(j, channel, p.per_channel != 0u);
        var v = (f32(x[base + j]) - mean) * inverse * f32(scale[k]);
        if (p.has_bias != 0u) { v += f32(bias[k]); }
        y[base + j] = elem(v);
    }
}
