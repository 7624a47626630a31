// Pad (constant, reflect, edge) and Tile: each output coordinate maps to an input coordinate
// along every axis, coord - begin, taken back into range by the mode: constant writes `value`
// where it is out of range, reflect mirrors without repeating the edge, edge clamps, wrap
// (Tile, begin 0) takes it modulo the input's extent.

struct PadParams {
    total: u32,
    rank: u32,
    // 0 constant, 1 reflect, 2 edge, 3 wrap.
    mode: u32,
    value: f32,
    out_dims: array<u32, 6>,
    in_dims: array<u32, 6>,
    begins: array<i32, 6>,
}

@group(0) @binding(0) var<storage, read> p: PadParams;
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read_write> y: array<elem>;

@compute @workgroup_size(64)
fn pad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.total) { return; }
    var rem = i;
    var source = 0u;
    var stride = 1u;
    for (var d = i32(p.rank) - 1; d >= 0; d--) {
        let extent = i32(p.in_dims[d]);
        var c = i32(rem % p.out_dims[d]) - p.begins[d];
        rem = rem / p.out_dims[d];
        if (c < 0 || c >= extent) {
            switch p.mode {
                case 0u: {
                    y[i] = elem(p.value);
                    return;
                }
                case 1u: {
                    // Mirror about the edges (period 2 * (extent - 1)).
                    let period = max(2 * (extent - 1), 1);
                    c = ((c % period) + period) % period;
                    if (c >= extent) { c = period - c; }
                }
                case 2u: { c = clamp(c, 0, extent - 1); }
                default: { c = ((c % extent) + extent) % extent; }
            }
        }
        source += u32(c) * stride;
        stride *= p.in_dims[d];
    }
    y[i] = x[source];
}
