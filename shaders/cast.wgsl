// Moves a block's input into the stored element type and its output back to f32, where the
// library stores tensors in half precision (host-side inputs and outputs stay f32). The module
// declares `cast_from` and `cast_to` as aliases of f32 and `elem`, one way or the other.

struct CastParams {
    values: u32,
}

@group(0) @binding(0) var<storage, read> p: CastParams;
@group(0) @binding(1) var<storage, read> source: array<cast_from>;
@group(0) @binding(2) var<storage, read_write> destination: array<cast_to>;

@compute @workgroup_size(64)
fn convert(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.values) { return; }
    destination[i] = cast_to(source[i]);
}
