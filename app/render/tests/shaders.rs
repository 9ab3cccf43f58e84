//! Every WGSL shader (each texel variant) parses and validates with naga.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[test]
fn image_shader_validates_for_every_texel_type() {
    for texel in ["u32", "i32", "f32"] {
        let source = render::image_shader_source(texel);
        let module =
            naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| panic!("{texel}: {}", e.emit_to_string(&source)));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{texel}: {e:?}"));
    }
}
