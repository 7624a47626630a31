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
    return activate4(vec4<f32>(v), act).x;
}

// `activate` on four values at once: the code is read and branched on once for all four.
fn activate4(v: vec4<f32>, act: Activation) -> vec4<f32> {
    let a = act.a;
    let b = act.b;
    switch act.code {
        case 1u: { return max(v, vec4<f32>(0.0)); }
        case 2u: { return min(max(v, vec4<f32>(a)), vec4<f32>(b)); }
        case 3u: { return select(a * v, v, v >= vec4<f32>(0.0)); }
        case 4u: { return 1.0 / (1.0 + exp(-v)); }
        case 5u: { return clamp(a * v + b, vec4<f32>(0.0), vec4<f32>(1.0)); }
        case 6u: { return v * clamp(v / 6.0 + 0.5, vec4<f32>(0.0), vec4<f32>(1.0)); }
        case 7u: { return tanh(v); }
        case 8u: { return exp(v); }
        case 9u: { return log(v); }
        case 10u: { return sqrt(v); }
        case 11u: { return -v; }
        case 12u: { return abs(v); }
        case 13u: { return 1.0 / v; }
        case 14u: { return erf(v); }
        case 15u: { return 0.5 * v * (1.0 + erf(v * 0.70710678)); }
        case 16u: { return 0.5 * v * (1.0 + tanh(0.7978845608 * (v + 0.044715 * v * v * v))); }
        case 17u: { return floor(v); }
        case 18u: { return ceil(v); }
        case 19u: { return round(v); }
        case 20u: { return trunc(v); }
        default: { return v; }
    }
}

// The error function (WGSL has none): Abramowitz and Stegun 7.1.26, absolute error under 1.5e-7.
fn erf(x: vec4<f32>) -> vec4<f32> {
    let t = 1.0 / (1.0 + 0.3275911 * abs(x));
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return sign(x) * (1.0 - poly * exp(-x * x));
}
