// Resize (ONNX) of the last two axes, NCHW: nearest (four rounding modes) or bilinear, with the
// half_pixel, pytorch_half_pixel, asymmetric and align_corners coordinate transformations.
// One invocation per output value.

struct ResizeParams {
    total: u32,
    in_height: u32,
    in_width: u32,
    out_height: u32,
    out_width: u32,
    // 0 nearest, 1 linear.
    linear: u32,
    // 0 half_pixel, 1 pytorch_half_pixel, 2 asymmetric, 3 align_corners.
    coordinates: u32,
    // 0 round_prefer_floor, 1 round_prefer_ceil, 2 floor, 3 ceil.
    nearest: u32,
    scale_y: f32,
    scale_x: f32,
}

@group(0) @binding(0) var<storage, read> p: ResizeParams;
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read_write> y: array<elem>;

// The input coordinate of output coordinate `o` along an axis of `in_len` -> `out_len` values.
fn source_coordinate(o: u32, scale: f32, in_len: u32, out_len: u32) -> f32 {
    let fo = f32(o);
    switch p.coordinates {
        case 0u: { return (fo + 0.5) / scale - 0.5; }
        case 1u: { return select(0.0, (fo + 0.5) / scale - 0.5, out_len > 1u); }
        case 2u: { return fo / scale; }
        default: { return select(0.0, fo * f32(in_len - 1u) / f32(out_len - 1u), out_len > 1u); }
    }
}

fn nearest_index(c: f32, len: u32) -> u32 {
    var i: f32;
    switch p.nearest {
        case 0u: { i = select(round(c), floor(c), fract(c) == 0.5); }
        case 1u: { i = select(round(c), ceil(c), fract(c) == 0.5); }
        case 2u: { i = floor(c); }
        default: { i = ceil(c); }
    }
    return u32(clamp(i, 0.0, f32(len - 1u)));
}

@compute @workgroup_size(64)
fn resize(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.total) { return; }
    let ox = i % p.out_width;
    let oy = (i / p.out_width) % p.out_height;
    let plane = i / (p.out_width * p.out_height);
    let base = plane * p.in_height * p.in_width;
    let cy = source_coordinate(oy, p.scale_y, p.in_height, p.out_height);
    let cx = source_coordinate(ox, p.scale_x, p.in_width, p.out_width);
    if (p.linear == 0u) {
        y[i] = x[base + nearest_index(cy, p.in_height) * p.in_width + nearest_index(cx, p.in_width)];
        return;
    }
    let fy = clamp(cy, 0.0, f32(p.in_height - 1u));
    let fx = clamp(cx, 0.0, f32(p.in_width - 1u));
    let y0 = u32(floor(fy));
    let x0 = u32(floor(fx));
    let y1 = min(y0 + 1u, p.in_height - 1u);
    let x1 = min(x0 + 1u, p.in_width - 1u);
    let wy = fy - f32(y0);
    let wx = fx - f32(x0);
    let top = mix(f32(x[base + y0 * p.in_width + x0]), f32(x[base + y0 * p.in_width + x1]), wx);
    let bottom = mix(f32(x[base + y1 * p.in_width + x0]), f32(x[base + y1 * p.in_width + x1]), wx);
    y[i] = elem(mix(top, bottom, wy));
}
