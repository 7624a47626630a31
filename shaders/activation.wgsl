// A standalone activation (one not fused into a convolution): y = activate(a).

struct ActivationKernelParams {
    total: u32,
    activation: Activation,
}

@group(0) @binding(0) var<storage, read> p: ActivationKernelParams;
@group(0) @binding(1) var<storage, read> a: array<elem>;
@group(0) @binding(2) var<storage, read> b: array<elem>;
@group(0) @binding(3) var<storage, read> c: array<elem>;
@group(0) @binding(4) var<storage, read_write> y: array<elem>;

@compute @workgroup_size(64)
fn activation(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.total) { return; }
    y[i] = elem(activate(f32(a[i]), p.activation));
}
