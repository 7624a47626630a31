// Subgroup variants of the matrix family, compiled into it only where the device offers
// subgroup operations (wgpu's SUBGROUP feature).

var<workgroup> subgroup_sums: array<f32, 64>;

// `gemm_split` with each subgroup summing its invocations' shares in registers: one barrier
// instead of seven.
@compute @workgroup_size(64)
fn gemm_split_subgroup(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(num_subgroups) subgroups: u32,
    @builtin(subgroup_invocation_id) lane_in_subgroup: u32,
) {
    let i = wid.x + wid.y * nwg.x;
    if (i >= p.total) { return; }
    let sum = subgroupAdd(split_partial(i, lid.x));
    if (lane_in_subgroup == 0u) { subgroup_sums[subgroup] = sum; }
    workgroupBarrier();
    if (lid.x == 0u) {
        var total = 0.0;
        for (var s = 0u; s < subgroups; s++) { total += subgroup_sums[s]; }
        gemm_store(i, total);
    }
}
