//! The one bridge between egui and the render crate: an `egui_wgpu::CallbackTrait` that draws a
//! slice into a viewport. GPU objects (pipelines, textures, viewport uniforms) live in egui-wgpu's
//! `callback_resources`; each frame only writes uniforms, and a slice is uploaded the first time
//! it is drawn. Textures past the memory budget are evicted, least recently drawn first.

use std::collections::HashMap;
use std::sync::Arc;

use render::{GpuImage, ImageParams, ImageRenderer, ViewportUniforms};

use super::loader::SliceImage;

/// Default GPU texture budget.
pub const DEFAULT_TEXTURE_BUDGET_BYTES: u64 = 1 << 30;

/// Identifies one uploaded slice: (series load id, slice index).
pub type TextureKey = (u64, usize);

struct CachedTexture {
    image: GpuImage,
    last_used_frame: u64,
}

/// Everything the bridge keeps on the GPU, stored in `callback_resources`.
pub struct RenderResources {
    renderer: ImageRenderer,
    textures: HashMap<TextureKey, CachedTexture>,
    viewports: HashMap<u64, ViewportUniforms>,
    frame: u64,
    budget_bytes: u64,
    /// Last upload error, shown by the UI.
    pub last_error: Option<String>,
}

impl RenderResources {
    pub fn new(device: &wgpu::Device, target_format: wgpu::TextureFormat) -> Self {
        Self {
            renderer: ImageRenderer::new(device, target_format),
            textures: HashMap::new(),
            viewports: HashMap::new(),
            frame: 0,
            budget_bytes: DEFAULT_TEXTURE_BUDGET_BYTES,
            last_error: None,
        }
    }

    /// Bytes of textures held.
    pub fn texture_bytes(&self) -> u64 {
        self.textures.values().map(|t| t.image.size_bytes()).sum()
    }

    fn evict_to_budget(&mut self) {
        let mut used = self.texture_bytes();
        if used <= self.budget_bytes {
            return;
        }
        let mut by_age: Vec<(u64, TextureKey, u64)> =
            self.textures.iter().map(|(k, t)| (t.last_used_frame, *k, t.image.size_bytes())).collect();
        by_age.sort();
        for (last_used, key, bytes) in by_age {
            if used <= self.budget_bytes || last_used == self.frame {
                break;
            }
            self.textures.remove(&key);
            used -= bytes;
        }
    }
}

/// Registers the render resources with an eframe wgpu render state (the app and the UI tests
/// both call this, so snapshots contain the GPU image).
pub fn register(render_state: &egui_wgpu::RenderState) {
    let resources = RenderResources::new(&render_state.device, render_state.target_format);
    render_state.renderer.write().callback_resources.insert(resources);
}

/// Draws `slice` into a viewport with `params`.
pub struct SliceCallback {
    pub viewport_id: u64,
    pub key: TextureKey,
    pub slice: Arc<SliceImage>,
    pub params: ImageParams,
}

impl egui_wgpu::CallbackTrait for SliceCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen: &egui_wgpu::ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        let Some(res) = resources.get_mut::<RenderResources>() else { return Vec::new() };
        res.frame += 1;
        if !res.textures.contains_key(&self.key) {
            match res.renderer.upload(
                device,
                queue,
                self.slice.width,
                self.slice.height,
                self.slice.samples.as_render(),
            ) {
                Ok(image) => {
                    res.textures.insert(self.key, CachedTexture { image, last_used_frame: res.frame });
                    res.evict_to_budget();
                }
                Err(e) => {
                    res.last_error = Some(e.to_string());
                    return Vec::new();
                }
            }
        }
        let frame = res.frame;
        let RenderResources { renderer, textures, viewports, .. } = res;
        let uniforms = viewports.entry(self.viewport_id).or_insert_with(|| renderer.create_viewport(device));
        if let Some(texture) = textures.get_mut(&self.key) {
            texture.last_used_frame = frame;
            renderer.write_params(queue, uniforms, &texture.image, &self.params);
        }
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        pass: &mut wgpu::RenderPass<'static>,
        resources: &egui_wgpu::CallbackResources,
    ) {
        let Some(res) = resources.get::<RenderResources>() else { return };
        if let (Some(texture), Some(uniforms)) = (res.textures.get(&self.key), res.viewports.get(&self.viewport_id)) {
            res.renderer.draw(pass, uniforms, &texture.image);
        }
    }
}
