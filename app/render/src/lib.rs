//! # lucent-render
//!
//! GPU rendering of medical images with wgpu and WGSL, knowing nothing of DICOM or models:
//! it draws arrays of samples with a window, a VOI function, inversion and interpolation.
//!
//! * Images are uploaded once, in their native sample type (`u8`/`u16` as `R*Uint`, `i16` as
//!   `R16Sint`, `f32` as `R32Float`, colour as `Rgba8Unorm`). Integer textures are never filterable,
//!   so every fetch is a `textureLoad` and smooth interpolation is done in the shader.
//! * Each frame only writes a small uniform ([`ImageParams`]) per viewport and draws one triangle.
//! * Pipelines are built once ([`ImageRenderer::new`]) and kept by the caller (the app keeps them
//!   in egui-wgpu's `callback_resources`).
//!
//! [`offscreen`] renders to a texture and reads it back: used for thumbnails, exports and the
//! GPU-vs-CPU parity test.

pub mod offscreen;

use bytemuck::{Pod, Zeroable};

/// The WGSL source of the image shader, with `TEXEL` still to be replaced by the sample type.
pub const IMAGE_SHADER_TEMPLATE: &str = include_str!("../shaders/image.wgsl");

/// The shader for one texel type (`"u32"`, `"i32"` or `"f32"`).
pub fn image_shader_source(texel: &str) -> String {
    IMAGE_SHADER_TEMPLATE.replace("TEXEL", texel)
}

/// How the samples of an image are stored on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleKind {
    U8,
    U16,
    I16,
    F32,
    /// 8-bit RGBA colour (already display values).
    Rgba8,
}

impl SampleKind {
    fn format(self) -> wgpu::TextureFormat {
        match self {
            Self::U8 => wgpu::TextureFormat::R8Uint,
            Self::U16 => wgpu::TextureFormat::R16Uint,
            Self::I16 => wgpu::TextureFormat::R16Sint,
            Self::F32 => wgpu::TextureFormat::R32Float,
            Self::Rgba8 => wgpu::TextureFormat::Rgba8Unorm,
        }
    }

    fn bytes_per_texel(self) -> u32 {
        match self {
            Self::U8 => 1,
            Self::U16 | Self::I16 => 2,
            Self::F32 | Self::Rgba8 => 4,
        }
    }

    fn pipeline_index(self) -> usize {
        match self {
            Self::U8 | Self::U16 => 0,
            Self::I16 => 1,
            Self::F32 | Self::Rgba8 => 2,
        }
    }
}

/// Samples to upload, borrowed.
#[derive(Debug, Clone, Copy)]
pub enum Samples<'a> {
    U8(&'a [u8]),
    U16(&'a [u16]),
    I16(&'a [i16]),
    F32(&'a [f32]),
    Rgba8(&'a [u8]),
}

impl Samples<'_> {
    pub fn kind(&self) -> SampleKind {
        match self {
            Self::U8(_) => SampleKind::U8,
            Self::U16(_) => SampleKind::U16,
            Self::I16(_) => SampleKind::I16,
            Self::F32(_) => SampleKind::F32,
            Self::Rgba8(_) => SampleKind::Rgba8,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Self::U8(v) | Self::Rgba8(v) => v,
            Self::U16(v) => bytemuck::cast_slice(v),
            Self::I16(v) => bytemuck::cast_slice(v),
            Self::F32(v) => bytemuck::cast_slice(v),
        }
    }
}

/// VOI function, as in DICOM PS3.3 C.11.2.1.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VoiFunction {
    #[default]
    Linear,
    LinearExact,
    Sigmoid,
}

/// Errors of the render crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{width}x{height} image does not fit the GPU's texture limit of {limit} pixels per side")]
    TooLarge { width: u32, height: u32, limit: u32 },
    #[error("expected {expected} samples for a {width}x{height} image, got {actual}")]
    SampleCount { width: u32, height: u32, expected: usize, actual: usize },
    #[error("GPU error: {0}")]
    Gpu(String),
}

/// Per-viewport drawing parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageParams {
    /// Maps viewport NDC (x right, y up, in [-1, 1]) to image pixel coordinates:
    /// `pixel = [m[0][0]*x + m[0][1]*y + m[0][2], m[1][0]*x + m[1][1]*y + m[1][2]]`.
    pub ndc_to_pixel: [[f32; 3]; 2],
    /// Stored value -> modality value.
    pub rescale_slope: f32,
    pub rescale_intercept: f32,
    pub window_center: f32,
    pub window_width: f32,
    pub voi_function: VoiFunction,
    pub invert: bool,
    pub smooth: bool,
    /// Stored values in this inclusive range are padding.
    pub padding_range: Option<(f32, f32)>,
}

impl Default for ImageParams {
    fn default() -> Self {
        Self {
            ndc_to_pixel: [[0.5, 0.0, 0.5], [0.0, -0.5, 0.5]],
            rescale_slope: 1.0,
            rescale_intercept: 0.0,
            window_center: 0.5,
            window_width: 1.0,
            voi_function: VoiFunction::Linear,
            invert: false,
            smooth: false,
            padding_range: None,
        }
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct ParamsUniform {
    ndc_to_pixel_x: [f32; 4],
    ndc_to_pixel_y: [f32; 4],
    image_size: [f32; 2],
    rescale: [f32; 2],
    window: [f32; 2],
    padding_range: [f32; 2],
    voi_function: u32,
    flags: u32,
    _pad: [u32; 2],
}

/// A texture holding one image.
pub struct GpuImage {
    pub width: u32,
    pub height: u32,
    pub kind: SampleKind,
    _texture: wgpu::Texture,
    bind_group: wgpu::BindGroup,
}

impl GpuImage {
    /// GPU memory held, bytes.
    pub fn size_bytes(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height) * u64::from(self.kind.bytes_per_texel())
    }
}

/// The uniform buffer of one viewport.
pub struct ViewportUniforms {
    buffer: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
}

/// Pipelines and layouts, built once.
pub struct ImageRenderer {
    uniform_layout: wgpu::BindGroupLayout,
    texture_layouts: [wgpu::BindGroupLayout; 3],
    pipelines: [wgpu::RenderPipeline; 3],
    target_is_srgb: bool,
    max_texture_side: u32,
}

impl ImageRenderer {
    /// Builds the three pipelines (unsigned, signed and float textures) for `target_format`.
    pub fn new(device: &wgpu::Device, target_format: wgpu::TextureFormat) -> Self {
        let uniform_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("lucent image params"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::FRAGMENT,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: wgpu::BufferSize::new(std::mem::size_of::<ParamsUniform>() as u64),
                },
                count: None,
            }],
        });
        let texture_layout = |sample_type, label| {
            device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(label),
                entries: &[wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Texture {
                        sample_type,
                        view_dimension: wgpu::TextureViewDimension::D2,
                        multisampled: false,
                    },
                    count: None,
                }],
            })
        };
        let texture_layouts = [
            texture_layout(wgpu::TextureSampleType::Uint, "lucent image u32"),
            texture_layout(wgpu::TextureSampleType::Sint, "lucent image i32"),
            texture_layout(wgpu::TextureSampleType::Float { filterable: false }, "lucent image f32"),
        ];
        let pipelines = [("u32", 0usize), ("i32", 1), ("f32", 2)].map(|(texel, i)| {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("lucent image shader"),
                source: wgpu::ShaderSource::Wgsl(image_shader_source(texel).into()),
            });
            let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("lucent image pipeline layout"),
                bind_group_layouts: &[Some(&uniform_layout), Some(&texture_layouts[i])],
                immediate_size: 0,
            });
            device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
                label: Some("lucent image pipeline"),
                layout: Some(&layout),
                vertex: wgpu::VertexState {
                    module: &module,
                    entry_point: Some("vs_main"),
                    buffers: &[],
                    compilation_options: Default::default(),
                },
                fragment: Some(wgpu::FragmentState {
                    module: &module,
                    entry_point: Some("fs_main"),
                    targets: &[Some(target_format.into())],
                    compilation_options: Default::default(),
                }),
                primitive: wgpu::PrimitiveState::default(),
                depth_stencil: None,
                multisample: wgpu::MultisampleState::default(),
                multiview_mask: None,
                cache: None,
            })
        });
        Self {
            uniform_layout,
            texture_layouts,
            pipelines,
            target_is_srgb: target_format.is_srgb(),
            max_texture_side: device.limits().max_texture_dimension_2d,
        }
    }

    /// Uploads an image once. Rows are padded to wgpu's 256-byte alignment where needed.
    pub fn upload(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        width: u32,
        height: u32,
        samples: Samples<'_>,
    ) -> Result<GpuImage, Error> {
        if width > self.max_texture_side || height > self.max_texture_side {
            return Err(Error::TooLarge { width, height, limit: self.max_texture_side });
        }
        let kind = samples.kind();
        let per_pixel = if kind == SampleKind::Rgba8 { 4 } else { 1 };
        let expected = width as usize * height as usize * per_pixel;
        let actual = match samples {
            Samples::U8(v) | Samples::Rgba8(v) => v.len(),
            Samples::U16(v) => v.len(),
            Samples::I16(v) => v.len(),
            Samples::F32(v) => v.len(),
        };
        if actual != expected {
            return Err(Error::SampleCount { width, height, expected, actual });
        }
        let texture = device.create_texture(&wgpu::TextureDescriptor {
            label: Some("lucent image"),
            size: wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: kind.format(),
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        queue.write_texture(
            wgpu::TexelCopyTextureInfo {
                texture: &texture,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            samples.bytes(),
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(width * kind.bytes_per_texel()),
                rows_per_image: Some(height),
            },
            wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
        );
        let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("lucent image"),
            layout: &self.texture_layouts[kind.pipeline_index()],
            entries: &[wgpu::BindGroupEntry { binding: 0, resource: wgpu::BindingResource::TextureView(&view) }],
        });
        Ok(GpuImage { width, height, kind, _texture: texture, bind_group })
    }

    /// A uniform buffer for one viewport.
    pub fn create_viewport(&self, device: &wgpu::Device) -> ViewportUniforms {
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("lucent viewport params"),
            size: std::mem::size_of::<ParamsUniform>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("lucent viewport params"),
            layout: &self.uniform_layout,
            entries: &[wgpu::BindGroupEntry { binding: 0, resource: buffer.as_entire_binding() }],
        });
        ViewportUniforms { buffer, bind_group }
    }

    /// Writes a viewport's parameters for drawing `image` (the only per-frame work).
    pub fn write_params(&self, queue: &wgpu::Queue, viewport: &ViewportUniforms, image: &GpuImage, p: &ImageParams) {
        let mut flags = 0;
        if p.invert {
            flags |= 1;
        }
        if p.smooth {
            flags |= 2;
        }
        if image.kind == SampleKind::Rgba8 {
            flags |= 4;
        }
        if p.padding_range.is_some() {
            flags |= 8;
        }
        if self.target_is_srgb {
            flags |= 16;
        }
        let (lo, hi) = p.padding_range.unwrap_or((0.0, 0.0));
        let m = p.ndc_to_pixel;
        let uniform = ParamsUniform {
            ndc_to_pixel_x: [m[0][0], m[0][1], m[0][2], 0.0],
            ndc_to_pixel_y: [m[1][0], m[1][1], m[1][2], 0.0],
            image_size: [image.width as f32, image.height as f32],
            rescale: [p.rescale_slope, p.rescale_intercept],
            window: [p.window_center, p.window_width],
            padding_range: [lo, hi],
            voi_function: match p.voi_function {
                VoiFunction::Linear => 0,
                VoiFunction::LinearExact => 1,
                VoiFunction::Sigmoid => 2,
            },
            flags,
            _pad: [0; 2],
        };
        queue.write_buffer(&viewport.buffer, 0, bytemuck::bytes_of(&uniform));
    }

    /// Draws `image` with `viewport`'s parameters into the current render pass viewport.
    pub fn draw(&self, pass: &mut wgpu::RenderPass<'_>, viewport: &ViewportUniforms, image: &GpuImage) {
        pass.set_pipeline(&self.pipelines[image.kind.pipeline_index()]);
        pass.set_bind_group(0, &viewport.bind_group, &[]);
        pass.set_bind_group(1, &image.bind_group, &[]);
        pass.draw(0..3, 0..1);
    }
}

/// The transform from viewport NDC to image pixels for a view.
///
/// `viewport_px` is the viewport size in physical pixels; `zoom` is screen pixels per image pixel
/// along x; `aspect` is the displayed height/width ratio of one pixel (row spacing / column
/// spacing); `pan_px` moves the image centre on screen; `rotation_quarters` turns clockwise;
/// flips mirror the image on screen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewTransform {
    pub viewport_px: [f32; 2],
    pub image_size: [f32; 2],
    pub zoom: f32,
    pub aspect: f32,
    pub pan_px: [f32; 2],
    pub rotation_quarters: u8,
    pub flip_horizontal: bool,
    pub flip_vertical: bool,
}

impl ViewTransform {
    /// Zoom that fits the whole image in the viewport.
    pub fn fit_zoom(viewport_px: [f32; 2], image_size: [f32; 2], aspect: f32, rotation_quarters: u8) -> f32 {
        let (w, h) = (image_size[0], image_size[1] * aspect);
        let (w, h) = if rotation_quarters % 2 == 1 { (h, w) } else { (w, h) };
        (viewport_px[0] / w).min(viewport_px[1] / h).max(1e-6)
    }

    /// Screen offset from the viewport centre (pixels, y down) to image pixel coordinates.
    pub fn screen_to_image(&self, offset_px: [f32; 2]) -> [f32; 2] {
        let mut v = [offset_px[0] - self.pan_px[0], offset_px[1] - self.pan_px[1]];
        if self.flip_horizontal {
            v[0] = -v[0];
        }
        if self.flip_vertical {
            v[1] = -v[1];
        }
        // Undo the clockwise rotation.
        for _ in 0..self.rotation_quarters % 4 {
            v = [v[1], -v[0]];
        }
        [v[0] / self.zoom + self.image_size[0] / 2.0, v[1] / (self.zoom * self.aspect) + self.image_size[1] / 2.0]
    }

    /// Image pixel coordinates to screen offset from the viewport centre (pixels, y down).
    pub fn image_to_screen(&self, pixel: [f32; 2]) -> [f32; 2] {
        let mut v = [
            (pixel[0] - self.image_size[0] / 2.0) * self.zoom,
            (pixel[1] - self.image_size[1] / 2.0) * self.zoom * self.aspect,
        ];
        for _ in 0..self.rotation_quarters % 4 {
            v = [-v[1], v[0]];
        }
        if self.flip_horizontal {
            v[0] = -v[0];
        }
        if self.flip_vertical {
            v[1] = -v[1];
        }
        [v[0] + self.pan_px[0], v[1] + self.pan_px[1]]
    }

    /// The affine NDC -> image pixel map for [`ImageParams::ndc_to_pixel`].
    pub fn ndc_to_pixel(&self) -> [[f32; 3]; 2] {
        // ndc (x, y up) -> screen offset (x * w/2, -y * h/2) -> image.
        let half = [self.viewport_px[0] / 2.0, self.viewport_px[1] / 2.0];
        let origin = self.screen_to_image([0.0, 0.0]);
        let ex = self.screen_to_image([half[0], 0.0]);
        let ey = self.screen_to_image([0.0, -half[1]]);
        [[ex[0] - origin[0], ey[0] - origin[0], origin[0]], [ex[1] - origin[1], ey[1] - origin[1], origin[1]]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_transform_round_trips_with_rotation_and_flips() {
        for rotation in 0..4 {
            for (fh, fv) in [(false, false), (true, false), (false, true), (true, true)] {
                let t = ViewTransform {
                    viewport_px: [800.0, 600.0],
                    image_size: [512.0, 256.0],
                    zoom: 1.7,
                    aspect: 1.5,
                    pan_px: [12.0, -30.0],
                    rotation_quarters: rotation,
                    flip_horizontal: fh,
                    flip_vertical: fv,
                };
                let p = [100.0, 40.0];
                let back = t.screen_to_image(t.image_to_screen(p));
                assert!((back[0] - p[0]).abs() < 1e-3 && (back[1] - p[1]).abs() < 1e-3, "{rotation} {fh} {fv}");
            }
        }
    }

    #[test]
    fn fit_zoom_uses_the_rotated_aspect() {
        assert_eq!(ViewTransform::fit_zoom([1000.0, 500.0], [100.0, 100.0], 1.0, 0), 5.0);
        assert_eq!(ViewTransform::fit_zoom([1000.0, 500.0], [200.0, 100.0], 1.0, 1), 2.5);
    }
}
