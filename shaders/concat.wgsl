// One input's share of a Concat: copies `outer` slabs of the input into the output, each at
// `offset` within an output slab.

struct ConcatCopyParams {
    // outer * input_slab.
    total: u32,
    input_slab: u32,
    output_slab: u32,
    offset: u32,
}

@group(0) @binding(0) var<storage, read> p: ConcatCopyParams;
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read_write> y: array<elem>;

@compute @workgroup_size(64)
fn concat_copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.total) { return; }
    let o = i / p.input_slab;
    let r = i % p.input_slab;
    y[o * p.output_slab + p.offset + r] = x[i];
}
