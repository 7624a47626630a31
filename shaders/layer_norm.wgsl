// LayerNormalization: each row of `inner` values (the axes from `axis` on) is normalised to zero
// mean and unit variance, then scaled and shifted per position: one invocation per row.

struct LayerNormParams {
    rows: u32,
    inner: u32,
    has_bias: u32,
    epsilon: f32,
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
    for (var j = 0u; j < p.inner; j++) {
        var v = (f32(x[base + j]) - mean) * inverse * f32(scale[j]);
        if (p.has_bias != 0u) { v += f32(bias[j]); }
        y[base + j] = elem(v);
    }
}
