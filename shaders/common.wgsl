// Shared by every kernel family (prepended when the module is built).
// Binding 0 of every kernel is `p`: the dispatch's parameters, a struct each family declares and
// `src/gpu/params.rs` mirrors field for field (a test compares the two layouts).
// Tensors are stored as `elem`, an alias the module's first lines declare: f32, or f16 where the
// library stores tensors in half precision. Kernels load them as f32, compute in f32, and round
// only when they store.

// Linear invocation index for 1-D kernels of 64 threads dispatched on a 2-D grid.
fn linear_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

// An activation as kernels apply it; codes and arguments match `ActivationParams` in
// `src/gpu/params.rs`.
struct Activation {
    code: u32,
    a: f32,
    b: f32,
}

fn activate(v: f32, act: Activation) -> f32 {
    let a = act.a;
    let b = act.b;
    switch act.code {
        case 1u: { return max(v, 0.0); }
        case 2u: { return min(max(v, a), b); }
        case 3u: { return select(a * v, v, v >= 0.0); }
        case 4u: { return 1.0 / (1.0 + exp(-v)); }
        case 5u: { return clamp(a * v + b, 0.0, 1.0); }
        case 6u: { return v * clamp(v / 6.0 + 0.5, 0.0, 1.0); }
        default: { return v; }
    }
}
