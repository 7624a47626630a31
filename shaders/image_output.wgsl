// A model's output tensor written as an RGBA image: the channels as colours, or each pixel's
// class (the largest channel, the first on ties) as a palette colour. The colours are
// `OutputMapping::apply` in `src/tensor/output_mapping.rs`, the CPU reference. They are packed
// as the target texture stores them into rows padded for a buffer-to-texture copy. One
// invocation per pixel, on an 8x8 grid.

struct ImageOutputParams {
    width: u32,
    height: u32,
    // The tensor's channels (classes for a colour map).
    channels: u32,
    // 0 NCHW, 1 NHWC.
    nhwc: u32,
    // 0 colours, 1 class colours.
    classes: u32,
    // For colours: 0 rgb, 1 bgr, 2 gray, 3 rgba.
    order: u32,
    // 0 rgba8, 1 bgra8, 2 rgba16float, 3 rgba32float.
    texel_format: u32,
    // 1 where the texture is sRGB: colours are encoded before they are packed.
    srgb: u32,
    // u32 words per padded row.
    row_words: u32,
    scale: f32,
    offset: f32,
    pad0: u32,
}

@group(0) @binding(0) var<storage, read> p: ImageOutputParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> palette: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> texels: array<u32>;

fn value(col: u32, row: u32, c: u32) -> f32 {
    if p.nhwc == 1u {
        return x[(row * p.width + col) * p.channels + c];
    }
    return x[(c * p.height + row) * p.width + col];
}

fn colour(col: u32, row: u32, c: u32) -> f32 {
    return clamp(value(col, row, c) * p.scale + p.offset, 0.0, 1.0);
}

fn encode_srgb(v: f32) -> f32 {
    if v <= 0.0031308 {
        return 12.92 * v;
    }
    return 1.055 * pow(v, 1.0 / 2.4) - 0.055;
}

fn rgba_of(col: u32, row: u32) -> vec4<f32> {
    if p.classes == 1u {
        var best = 0u;
        for (var c = 1u; c < p.channels; c++) {
            if value(col, row, c) > value(col, row, best) {
                best = c;
            }
        }
        return palette[best];
    }
    switch p.order {
        case 1u: { return vec4<f32>(colour(col, row, 2u), colour(col, row, 1u), colour(col, row, 0u), 1.0); }
        case 2u: {
            let grey = colour(col, row, 0u);
            return vec4<f32>(grey, grey, grey, 1.0);
        }
        case 3u: { return vec4<f32>(colour(col, row, 0u), colour(col, row, 1u), colour(col, row, 2u), colour(col, row, 3u)); }
        default: { return vec4<f32>(colour(col, row, 0u), colour(col, row, 1u), colour(col, row, 2u), 1.0); }
    }
}

@compute @workgroup_size(8, 8, 1)
fn image_output(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    let row = gid.y;
    if col >= p.width || row >= p.height {
        return;
    }
    var rgba = rgba_of(col, row);
    if p.srgb == 1u {
        rgba = vec4<f32>(encode_srgb(rgba.r), encode_srgb(rgba.g), encode_srgb(rgba.b), rgba.a);
    }
    let start = row * p.row_words;
    switch p.texel_format {
        case 0u: { texels[start + col] = pack4x8unorm(rgba); }
        case 1u: { texels[start + col] = pack4x8unorm(rgba.bgra); }
        case 2u: {
            texels[start + 2u * col] = pack2x16float(rgba.rg);
            texels[start + 2u * col + 1u] = pack2x16float(rgba.ba);
        }
        default: {
            for (var i = 0u; i < 4u; i++) {
                texels[start + 4u * col + i] = bitcast<u32>(rgba[i]);
            }
        }
    }
}
