// Draws one 2D image into the current viewport with window/level applied on the GPU.
//
// The texture holds the stored samples in their native type (TEXEL is u32, i32 or f32 depending
// on the pipeline); nothing is reduced to 8 bits on the CPU. Every sample is fetched with
// textureLoad (integer textures are never filterable), and "smooth" interpolation is done here.

struct Params {
    // Image pixel coordinates = row0.xy · ndc + row0.z (x) and row1 likewise (y).
    ndc_to_pixel_x: vec4<f32>,
    ndc_to_pixel_y: vec4<f32>,
    image_size: vec2<f32>,
    rescale: vec2<f32>,        // slope, intercept: stored value -> modality value (e.g. HU)
    window: vec2<f32>,         // center, width, in modality units
    padding_range: vec2<f32>,  // stored values in [lo, hi] are padding (shown black)
    voi_function: u32,         // 0 LINEAR, 1 LINEAR_EXACT, 2 SIGMOID
    flags: u32,                // 1 invert, 2 smooth, 4 colour (RGBA texture), 8 has padding, 16 sRGB target
    _pad: vec2<u32>,
};

@group(0) @binding(0) var<uniform> params: Params;
@group(1) @binding(0) var image: texture_2d<TEXEL>;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    @location(0) ndc: vec2<f32>,
};

@vertex
fn vs_main(@builtin(vertex_index) index: u32) -> VertexOut {
    // One triangle that covers the whole viewport.
    let x = f32((index << 1u) & 2u) * 2.0 - 1.0;
    let y = f32(index & 2u) * 2.0 - 1.0;
    var out: VertexOut;
    out.position = vec4<f32>(x, y, 0.0, 1.0);
    out.ndc = vec2<f32>(x, y);
    return out;
}

fn fetch(p: vec2<i32>) -> vec4<f32> {
    let size = vec2<i32>(params.image_size);
    let q = clamp(p, vec2<i32>(0, 0), size - vec2<i32>(1, 1));
    return vec4<f32>(textureLoad(image, q, 0));
}

fn is_padding(stored: f32) -> bool {
    return (params.flags & 8u) != 0u && stored >= params.padding_range.x && stored <= params.padding_range.y;
}

// PS3.3 C.11.2.1.2: the VOI functions, output in [0, 1].
fn apply_window(x: f32) -> f32 {
    let c = params.window.x;
    if (params.voi_function == 1u) {
        let w = max(params.window.y, 1e-6);
        if (x <= c - w / 2.0) { return 0.0; }
        if (x > c + w / 2.0) { return 1.0; }
        return (x - c) / w + 0.5;
    }
    if (params.voi_function == 2u) {
        let w = max(params.window.y, 1e-6);
        return 1.0 / (1.0 + exp(-4.0 * (x - c) / w));
    }
    let w = max(params.window.y, 1.0);
    if (x <= c - 0.5 - (w - 1.0) / 2.0) { return 0.0; }
    if (x > c - 0.5 + (w - 1.0) / 2.0) { return 1.0; }
    if (w <= 1.0) { return select(0.0, 1.0, x >= c); }
    return (x - (c - 0.5)) / (w - 1.0) + 0.5;
}

fn srgb_to_linear(c: vec3<f32>) -> vec3<f32> {
    let low = c / 12.92;
    let high = pow((c + 0.055) / 1.055, vec3<f32>(2.4));
    return select(high, low, c <= vec3<f32>(0.04045));
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let ndc = vec3<f32>(in.ndc, 1.0);
    let pixel = vec2<f32>(dot(params.ndc_to_pixel_x.xyz, ndc), dot(params.ndc_to_pixel_y.xyz, ndc));
    var colour = vec3<f32>(0.0);
    if (pixel.x >= 0.0 && pixel.y >= 0.0 && pixel.x < params.image_size.x && pixel.y < params.image_size.y) {
        // Sample centres are at integer + 0.5.
        let centre = pixel - vec2<f32>(0.5);
        let nearest = vec2<i32>(floor(pixel));
        var value = fetch(nearest);
        if ((params.flags & 2u) != 0u) {
            let base = vec2<i32>(floor(centre));
            let t = centre - floor(centre);
            let top = mix(fetch(base), fetch(base + vec2<i32>(1, 0)), t.x);
            let bottom = mix(fetch(base + vec2<i32>(0, 1)), fetch(base + vec2<i32>(1, 1)), t.x);
            let smooth_value = mix(top, bottom, t.y);
            if (!is_padding(value.r)) {
                value = smooth_value;
            }
        }
        if ((params.flags & 4u) != 0u) {
            colour = value.rgb;
        } else if (is_padding(value.r)) {
            colour = vec3<f32>(0.0);
        } else {
            let modality = value.r * params.rescale.x + params.rescale.y;
            colour = vec3<f32>(apply_window(modality));
        }
        if ((params.flags & 1u) != 0u) {
            colour = vec3<f32>(1.0) - colour;
        }
    }
    if ((params.flags & 16u) != 0u) {
        colour = srgb_to_linear(colour);
    }
    return vec4<f32>(colour, 1.0);
}
