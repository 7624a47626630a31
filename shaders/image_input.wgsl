// A texture preprocessed into a model's f32 input tensor: resize (bilinear or area), center
// crop, channel selection, scale, per-channel mean and std, NCHW or NHWC. The arithmetic is
// `PreprocessPlan::sample`, `ChannelOrder::select` and `PreprocessPlan::normalize` in
// `src/tensor/preprocess.rs`, the CPU reference. Texels are read with `textureLoad` (no
// sampler), so unfilterable formats such as rgba32float work too. One invocation per output
// pixel, on an 8x8 grid.

struct ImageInputParams {
    source_width: u32,
    source_height: u32,
    resized_width: u32,
    resized_height: u32,
    output_width: u32,
    output_height: u32,
    crop_x: u32,
    crop_y: u32,
    // 0 bilinear, 1 area.
    area: u32,
    // 0 rgb, 1 bgr, 2 gray, 3 rgba.
    channels: u32,
    // 0 NCHW, 1 NHWC.
    nhwc: u32,
    // 1 where the texture is sRGB: `textureLoad` linearises its texels, and they are encoded
    // again (and rounded to 8 bits) so that the model sees the values as stored.
    srgb: u32,
    // 1 where the texture has one channel: grey is that channel, not a luma of three.
    single_channel: u32,
    scale: f32,
    pad0: u32,
    pad1: u32,
    mean: vec4<f32>,
    deviation: vec4<f32>,
}

@group(0) @binding(0) var<storage, read> p: ImageInputParams;
@group(0) @binding(1) var image: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// Every sRGB format stores 8 bits per channel: the encoded value is rounded to the byte it was,
// so that the model sees exactly the stored value.
fn encode_srgb(value: f32) -> f32 {
    var encoded = 12.92 * value;
    if value > 0.0031308 {
        encoded = 1.055 * pow(value, 1.0 / 2.4) - 0.055;
    }
    return round(clamp(encoded, 0.0, 1.0) * 255.0) / 255.0;
}

fn texel(x: u32, row: u32) -> vec4<f32> {
    let t = textureLoad(image, vec2<u32>(x, row), 0);
    if p.srgb == 1u {
        return vec4<f32>(encode_srgb(t.r), encode_srgb(t.g), encode_srgb(t.b), t.a);
    }
    return t;
}

// The two source texels a bilinear resize reads along an axis, and the second's weight.
fn linear_taps(i: u32, resized: u32, source_len: u32) -> vec3<f32> {
    let at = max((f32(i) + 0.5) * (f32(source_len) / f32(resized)) - 0.5, 0.0);
    let lo = min(u32(floor(at)), source_len - 1u);
    let hi = min(lo + 1u, source_len - 1u);
    return vec3<f32>(f32(lo), f32(hi), at - f32(lo));
}

// The source texels [start, end) an area resize averages along an axis.
fn area_span(i: u32, resized: u32, source_len: u32) -> vec2<u32> {
    let start = i * source_len / resized;
    let end = ((i + 1u) * source_len + resized - 1u) / resized;
    return vec2<u32>(start, max(end, start + 1u));
}

fn resized_texel(x: u32, row: u32) -> vec4<f32> {
    let rx = x + p.crop_x;
    let ry = row + p.crop_y;
    if p.area == 0u {
        let tx = linear_taps(rx, p.resized_width, p.source_width);
        let ty = linear_taps(ry, p.resized_height, p.source_height);
        let x0 = u32(tx.x);
        let x1 = u32(tx.y);
        let y0 = u32(ty.x);
        let y1 = u32(ty.y);
        let top = texel(x0, y0) + (texel(x1, y0) - texel(x0, y0)) * tx.z;
        let bottom = texel(x0, y1) + (texel(x1, y1) - texel(x0, y1)) * tx.z;
        return top + (bottom - top) * ty.z;
    }
    let sx = area_span(rx, p.resized_width, p.source_width);
    let sy = area_span(ry, p.resized_height, p.source_height);
    var sum = vec4<f32>(0.0);
    for (var j = sy.x; j < sy.y; j++) {
        for (var i = sx.x; i < sx.y; i++) {
            sum += texel(i, j);
        }
    }
    return sum / f32((sx.y - sx.x) * (sy.y - sy.x));
}

fn channel_count() -> u32 {
    switch p.channels {
        case 2u: { return 1u; }
        case 3u: { return 4u; }
        default: { return 3u; }
    }
}

fn select_channels(rgba: vec4<f32>) -> vec4<f32> {
    switch p.channels {
        case 1u: { return vec4<f32>(rgba.b, rgba.g, rgba.r, rgba.a); }
        case 2u: {
            if p.single_channel == 1u {
                return vec4<f32>(rgba.r, 0.0, 0.0, 0.0);
            }
            return vec4<f32>(dot(rgba.rgb, vec3<f32>(0.2126, 0.7152, 0.0722)), 0.0, 0.0, 0.0);
        }
        default: { return rgba; }
    }
}

@compute @workgroup_size(8, 8, 1)
fn image_input(@builtin(global_invocation_id) gid: vec3<u32>) {
    let x = gid.x;
    let y_row = gid.y;
    if x >= p.output_width || y_row >= p.output_height {
        return;
    }
    let values = select_channels(resized_texel(x, y_row));
    let normalized = (values * p.scale - p.mean) / p.deviation;
    let channels = channel_count();
    let plane = p.output_width * p.output_height;
    for (var c = 0u; c < channels; c++) {
        var index: u32;
        if p.nhwc == 1u {
            index = (y_row * p.output_width + x) * channels + c;
        } else {
            index = c * plane + y_row * p.output_width + x;
        }
        y[index] = normalized[c];
    }
}
