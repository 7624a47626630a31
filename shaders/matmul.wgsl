// Matrix family: Gemm and batched MatMul. y[b, i, j] = alpha * sum_k A[b, i, k] B[b, k, j] + beta * C[i, j]
// with A and B addressed through row/column strides (transposes are strides).

struct GemmParams {
    total: u32,
    m: u32,
    n: u32,
    k: u32,
    inner_batches: u32,
    a_batch_stride: u32,
    b_batch_stride: u32,
    a_outer_stride: u32,
    b_outer_stride: u32,
    a_row_stride: u32,
    a_col_stride: u32,
    b_row_stride: u32,
    b_col_stride: u32,
    has_c: u32,
    c_row_stride: u32,
    c_col_stride: u32,
    alpha: f32,
    beta: f32,
}

@group(0) @binding(0) var<storage, read> p: GemmParams;

@group(0) @binding(1) var<storage, read> a: array<elem>;
@group(0) @binding(2) var<storage, read> b: array<elem>;
@group(0) @binding(3) var<storage, read> c: array<elem>;
@group(0) @binding(4) var<storage, read_write> y: array<elem>;

// Where output i's row of A and column of B start.
fn gemm_operands(i: u32) -> vec2<u32> {
    let M = p.m; let N = p.n;
    let col = i % N;
    let row = (i / N) % M;
    let batch = i / (N * M);
    let inner = batch % p.inner_batches;
    let outer = batch / p.inner_batches;
    let a_start = outer * p.a_outer_stride + inner * p.a_batch_stride;
    let b_start = outer * p.b_outer_stride + inner * p.b_batch_stride;
    return vec2<u32>(a_start + row * p.a_row_stride, b_start + col * p.b_col_stride);
}

// Writes output i from its dot product: alpha * acc (+ beta * C).
fn gemm_store(i: u32, acc: f32) {
    let N = p.n;
    var v = p.alpha * acc;
    if (p.has_c != 0u) { v += p.beta * f32(c[((i / N) % p.m) * p.c_row_stride + (i % N) * p.c_col_stride]); }
    y[i] = elem(v);
}

@compute @workgroup_size(64)
fn gemm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.total) { return; }
    let start = gemm_operands(i);
    var acc = 0.0;
    for (var k = 0u; k < p.k; k++) {
        acc += f32(a[start.x + k * p.a_col_stride]) * f32(b[start.y + k * p.b_row_stride]);
    }
    gemm_store(i, acc);
}

// Few outputs with long dot products (a classifier at batch 1): one workgroup per output, its
// 64 invocations splitting the K-long product and summing in workgroup memory. Grid: the
// outputs folded into x and y. Where the device has subgroup operations,
// `gemm_split_subgroup` (matmul_subgroup.wgsl) sums with those instead.
var<workgroup> partial: array<f32, 64>;

// Invocation `lane`'s share of output i's dot product.
fn split_partial(i: u32, lane: u32) -> f32 {
    let start = gemm_operands(i);
    var acc = 0.0;
    for (var k = lane; k < p.k; k += 64u) {
        acc += f32(a[start.x + k * p.a_col_stride]) * f32(b[start.y + k * p.b_row_stride]);
    }
    return acc;
}

@compute @workgroup_size(64)
fn gemm_split(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = wid.x + wid.y * nwg.x;
    if (i >= p.total) { return; }
    partial[lid.x] = split_partial(i, lid.x);
    workgroupBarrier();
    for (var span = 32u; span > 0u; span /= 2u) {
        if (lid.x < span) { partial[lid.x] += partial[lid.x + span]; }
        workgroupBarrier();
    }
    if (lid.x == 0u) { gemm_store(i, partial[0]); }
}
