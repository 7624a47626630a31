// Per-channel scale and shift (a BatchNormalization that could not be folded):
// y = a * b[channel] + c[channel].

struct ChannelAffineParams {
    total: u32,
    channels: u32,
    // Values per channel plane.
    inner: u32,
}

@group(0) @binding(0) var<storage, read> p: ChannelAffineParams;
@group(0) @binding(1) var<storage, read> a: array<elem>;
@group(0) @binding(2) var<storage, read> b: array<elem>;
@group(0) @binding(3) var<storage, read> c: array<elem>;
@group(0) @binding(4) var<storage, read_write> y: array<elem>;

@compute @workgroup_size(64)
fn channel_affine(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.total) { return; }
    let ch = (i / p.inner) % p.channels;
    y[i] = elem(f32(a[i]) * f32(b[ch]) + f32(c[ch]));
}
