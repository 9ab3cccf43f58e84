//! One viewport: the slice on screen, its view transform and window, mouse and key handling
//! (OHIF/Weasis conventions) and the overlays (corners, orientation markers, scale bar).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use egui::{Align2, Color32, FontId, PointerButton, Pos2, Rect, Sense, Stroke, Vec2};
use pacs::SpacingSource;
use pacs::pixels::{VoiFunction, VoiPreset, Window};
use pacs::volume::VolumeWarning;
use render::{ImageParams, ViewTransform};

use super::bridge::SliceCallback;
use super::i18n::Lang;
use super::loader::{SeriesData, SliceImage};
use super::measure::{self, Measurements, Tool};
use super::mpr::{Geometry, MprImage, MprSpec, Plane};
use pacs::store::MeasurementRecord;

/// A named window preset.
#[derive(Debug, Clone, PartialEq)]
pub struct Preset {
    pub name: String,
    pub window: Window,
}

/// The user's presets for a modality (defaults for CT, width / level: lung 1500/-600,
/// mediastinum 350/40, bone 2000/300, abdomen 400/40, brain 80/40).
pub fn modality_presets(modality: &str, defs: &[super::settings::PresetDef], lang: Lang) -> Vec<Preset> {
    defs.iter()
        .filter(|d| d.modality.eq_ignore_ascii_case(modality))
        .map(|d| Preset { name: translated(&d.name, lang), window: Window::new(d.center, d.width) })
        .collect()
}

/// A preset name in the UI language when it is one of the built-in names.
fn translated(name: &str, lang: Lang) -> String {
    ["Lung", "Mediastinum", "Bone", "Abdomen", "Brain"]
        .into_iter()
        .find(|n| *n == name)
        .map_or_else(|| name.to_owned(), |n| lang.tr(n).to_owned())
}

/// Presets for a slice: the modality's, then the file's own windows, then automatic.
pub fn presets_for(slice: &SliceImage, defs: &[super::settings::PresetDef], lang: Lang) -> Vec<Preset> {
    let mut presets = modality_presets(&slice.info.modality, defs, lang);
    for (i, p) in slice.transform.presets.iter().enumerate() {
        if let VoiPreset::Window { window, explanation } = p {
            let name =
                if explanation.is_empty() { format!("{} {}", lang.tr("File"), i + 1) } else { explanation.clone() };
            presets.push(Preset { name, window: *window });
        }
    }
    presets
}

/// The state of one viewport.
pub struct Viewport {
    pub id: u64,
    pub series: Option<Arc<SeriesData>>,
    pub slice: usize,
    /// Zoom relative to "fit".
    pub zoom_factor: f32,
    pub pan_px: Vec2,
    pub rotation_quarters: u8,
    pub flip_horizontal: bool,
    pub flip_vertical: bool,
    pub invert: bool,
    pub smooth: bool,
    /// None: the slice's default (first file window, else automatic).
    pub window: Option<Window>,
    pub cine: bool,
    pub cine_fps: f32,
    cine_clock: f64,
    /// Pointer position over the image (pixel coordinates), for the value readout.
    hover_pixel: Option<[f32; 2]>,
    /// Multiplanar reformat instead of the native stack.
    pub mpr: Option<MprSpec>,
    /// The last reformatted image received for this viewport.
    pub mpr_image: Option<MprImage>,
    mpr_requested: Option<(u64, MprSpec)>,
    /// Points of a measurement being drawn (image pixels).
    pub drawing: Vec<[f64; 2]>,
    /// A selected measurement being dragged.
    dragging: Option<usize>,
    /// Show DICOM overlay planes (60xx).
    pub show_overlays: bool,
    /// Overlay textures of the slice on screen.
    overlay_textures: Option<((u64, usize), Vec<egui::TextureHandle>)>,
    /// Show CT slices denoised by the AI (the slice on screen first; see `denoise_view`).
    pub denoised: bool,
}

impl Viewport {
    pub fn new(id: u64) -> Self {
        Self {
            id,
            series: None,
            slice: 0,
            zoom_factor: 1.0,
            pan_px: Vec2::ZERO,
            rotation_quarters: 0,
            flip_horizontal: false,
            flip_vertical: false,
            invert: false,
            smooth: true,
            window: None,
            cine: false,
            cine_fps: 10.0,
            cine_clock: 0.0,
            hover_pixel: None,
            mpr: None,
            mpr_image: None,
            mpr_requested: None,
            drawing: Vec::new(),
            dragging: None,
            show_overlays: true,
            overlay_textures: None,
            denoised: false,
        }
    }

    /// Number of overlay planes drawn on the slice on screen.
    pub fn overlays_drawn(&self) -> usize {
        self.overlay_textures.as_ref().map_or(0, |(_, t)| t.len())
    }

    /// Positions along the current scroll axis (slices, or the MPR plane's normal).
    fn depth(&self) -> usize {
        match (&self.series, self.mpr) {
            (Some(s), Some(spec)) => Geometry::of(s).depth(spec.plane),
            (Some(s), None) => s.len(),
            (None, _) => 0,
        }
    }

    /// The voxel (i, j, k) at image pixel `p` of what is on screen.
    pub fn voxel_at(&self, p: [f32; 2]) -> Option<[usize; 3]> {
        let series = self.series.as_ref()?;
        let [ni, nj, nk] = Geometry::of(series).dims;
        let (x, y) = (p[0].max(0.0) as usize, p[1].max(0.0) as usize);
        let v = match self.mpr.map(|m| (m.plane, m.index)) {
            None => [x, y, self.slice],
            Some((Plane::Axial, k)) => [x, y, k],
            Some((Plane::Coronal, j)) => [x, j, (nk - 1).saturating_sub(y)],
            Some((Plane::Sagittal, i)) => [i, x, (nk - 1).saturating_sub(y)],
        };
        (v[0] < ni && v[1] < nj && v[2] < nk).then_some(v)
    }

    /// Moves this view to the crosshair voxel along its scroll axis.
    pub fn follow_crosshair(&mut self, voxel: [usize; 3]) {
        match &mut self.mpr {
            Some(spec) => spec.index = voxel[spec.plane.normal_axis()],
            None => self.set_slice(voxel[2]),
        }
    }

    /// Shows `series`, starting at its middle slice.
    pub fn set_series(&mut self, series: Arc<SeriesData>) {
        if let Some(old) = self.series.take()
            && old.id != series.id
            && Arc::strong_count(&old) <= 2
        {
            // No other viewport shows it: stop decoding it.
            old.cancel.store(true, Ordering::Relaxed);
        }
        self.mpr = None;
        self.mpr_image = None;
        self.mpr_requested = None;
        self.slice = series.len() / 2;
        series.want(self.slice);
        self.series = Some(series);
        self.reset_view();
        self.window = None;
    }

    /// Space: back to fit, no rotation or flip, default window.
    pub fn reset_view(&mut self) {
        self.zoom_factor = 1.0;
        self.pan_px = Vec2::ZERO;
        self.rotation_quarters = 0;
        self.flip_horizontal = false;
        self.flip_vertical = false;
        self.invert = false;
        self.window = None;
    }

    pub fn slice_count(&self) -> usize {
        self.series.as_ref().map_or(0, |s| s.len())
    }

    pub fn scroll_by(&mut self, delta: i64) {
        let n = self.depth();
        if n == 0 {
            return;
        }
        match &mut self.mpr {
            Some(spec) => spec.index = (spec.index as i64 + delta).clamp(0, n as i64 - 1) as usize,
            None => self.set_slice((self.slice as i64 + delta).clamp(0, n as i64 - 1) as usize),
        }
    }

    pub fn set_slice(&mut self, index: usize) {
        if let Some(spec) = &mut self.mpr {
            spec.index =
                index.min(self.series.as_ref().map_or(0, |s| Geometry::of(s).depth(spec.plane)).saturating_sub(1));
            return;
        }
        self.slice = index.min(self.slice_count().saturating_sub(1));
        if let Some(s) = &self.series {
            s.want(self.slice);
        }
    }

    pub fn current_slice(&self) -> Option<Arc<SliceImage>> {
        if self.mpr.is_some() {
            return self.mpr_image.as_ref().map(|m| m.image.clone());
        }
        self.series.as_ref()?.slice(self.slice)
    }

    /// The window in effect for `slice`.
    pub fn effective_window(&self, slice: &SliceImage) -> Window {
        self.window.unwrap_or_else(|| match slice.transform.presets.first() {
            Some(VoiPreset::Window { window, .. }) => *window,
            // A VOI LUT: the linear window spanning the values it maps.
            Some(VoiPreset::Table { lut, .. }) => {
                let width = lut.data.len().max(2) as f64;
                Window::new(lut.first_mapped as f64 + width / 2.0, width)
            }
            None => match slice.samples {
                super::loader::SliceSamples::Rgba8(_) => Window::new(0.5, 1.0),
                _ => auto_window(slice),
            },
        })
    }

    /// Advances cine by the elapsed time; true when it moved.
    pub fn tick_cine(&mut self, now: f64) -> bool {
        if !self.cine || self.slice_count() < 2 {
            self.cine_clock = now;
            return false;
        }
        if now - self.cine_clock >= 1.0 / f64::from(self.cine_fps.max(0.5)) {
            self.cine_clock = now;
            let n = self.slice_count();
            self.set_slice((self.slice + 1) % n);
            return true;
        }
        false
    }

    fn view_transform(&self, slice: &SliceImage, rect_px: Vec2) -> ViewTransform {
        let aspect = pixel_aspect(slice);
        let image_size = [slice.width as f32, slice.height as f32];
        let fit = ViewTransform::fit_zoom([rect_px.x, rect_px.y], image_size, aspect, self.rotation_quarters);
        ViewTransform {
            viewport_px: [rect_px.x, rect_px.y],
            image_size,
            zoom: fit * self.zoom_factor,
            aspect,
            pan_px: [self.pan_px.x, self.pan_px.y],
            rotation_quarters: self.rotation_quarters,
            flip_horizontal: self.flip_horizontal,
            flip_vertical: self.flip_vertical,
        }
    }
}

/// Histogram window from the 0.5-99.5 percentiles of a slice (as pacs does on the CPU).
fn auto_window(slice: &SliceImage) -> Window {
    // A subsample of at most ~65k pixels is plenty for percentiles.
    let n = (slice.width * slice.height) as usize;
    let step = (n / 65536).max(1);
    let values: Vec<f32> = (0..n)
        .step_by(step)
        .filter_map(|i| slice.samples.value(i))
        .filter(|&v| !slice.transform.is_padding(v))
        .map(|v| slice.transform.modality.apply(v) as f32)
        .collect();
    pacs::pixels::percentile_window(values)
}

/// Displayed height/width of one pixel (row spacing / column spacing).
pub fn pixel_aspect(slice: &SliceImage) -> f32 {
    slice.info.spacing().map_or(1.0, |s| (s.row_mm / s.column_mm) as f32).clamp(0.05, 20.0)
}

fn to_render_function(f: VoiFunction) -> render::VoiFunction {
    match f {
        VoiFunction::Linear => render::VoiFunction::Linear,
        VoiFunction::LinearExact => render::VoiFunction::LinearExact,
        VoiFunction::Sigmoid => render::VoiFunction::Sigmoid,
    }
}

/// What a viewport asks of the app after a frame.
#[derive(Debug, Default)]
pub struct ViewportOutput {
    pub clicked: bool,
    pub double_clicked: bool,
    /// A series UID dropped from the browser.
    pub dropped_series: Option<String>,
    /// A reformat to compute.
    pub mpr_request: Option<MprSpec>,
    /// Shift+click: move the linked crosshair to this voxel.
    pub crosshair: Option<[usize; 3]>,
    /// The denoised view wants this slice (series id, index) and it is not ready.
    pub denoise_request: Option<(u64, usize)>,
}

/// Draws a viewport in `rect` and handles its input.
/// What a viewport needs to know from the rest of the workstation.
#[derive(Debug, Clone)]
pub struct ViewportContext {
    pub active: bool,
    pub crosshair: Option<(u64, [usize; 3])>,
    pub tool: Tool,
    pub lang: Lang,
    /// The active viewport's slice plane (frame of reference, point, normal), for reference lines.
    pub reference: Option<(String, [f64; 3], [f64; 3])>,
}

pub fn viewport_ui(
    ui: &mut egui::Ui,
    rect: Rect,
    vp: &mut Viewport,
    cx: ViewportContext,
    mut measurements: Option<&mut Measurements>,
    ai: &super::ai_panel::AiState,
    denoise: &super::denoise_view::DenoiseView,
) -> ViewportOutput {
    let ViewportContext { active, crosshair, tool, lang, reference } = cx;
    let mut out = ViewportOutput::default();
    let response = ui.allocate_rect(rect, Sense::click_and_drag());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 0.0, Color32::BLACK);
    let ppp = ui.ctx().pixels_per_point();
    out.clicked = response.clicked() || response.drag_started();
    out.double_clicked = response.double_clicked();
    if let Some(uid) = response.dnd_release_payload::<String>() {
        out.dropped_series = Some((*uid).clone());
    }

    let Some(series) = vp.series.clone() else {
        painter.text(
            rect.center(),
            Align2::CENTER_CENTER,
            lang.tr("Drop a series here or double-click one in the browser"),
            FontId::proportional(14.0),
            Color32::GRAY,
        );
        draw_border(&painter, rect, active);
        return out;
    };
    let slice = match vp.mpr {
        Some(spec) => {
            let fresh = vp.mpr_image.as_ref().is_some_and(|m| m.spec == spec && m.series_id == series.id);
            if !fresh && vp.mpr_requested != Some((series.id, spec)) && series.decoded() == series.len() {
                vp.mpr_requested = Some((series.id, spec));
                out.mpr_request = Some(spec);
            }
            vp.mpr_image.as_ref().filter(|m| m.series_id == series.id).map(|m| m.image.clone())
        }
        None => series.slice(vp.slice).or_else(|| nearest_decoded(&series, vp.slice)),
    };
    // The denoised view: the slice on screen, once the worker has it (until then, the original).
    let mut denoised_key = None;
    let mut denoise_pending = false;
    let slice = match slice {
        Some(original) if vp.denoised && vp.mpr.is_none() && denoisable(&original) => {
            match series.slice(vp.slice).and_then(|_| denoise.get(series.id, vp.slice)) {
                Some(d) => {
                    denoised_key = Some((series.id | super::denoise_view::DENOISED_KEY_BIT, vp.slice));
                    Some(d)
                }
                None => {
                    if series.slice(vp.slice).is_some() && denoise.error.is_none() {
                        out.denoise_request = Some((series.id, vp.slice));
                        denoise_pending = true;
                    }
                    Some(original)
                }
            }
        }
        other => other,
    };
    let rect_px = rect.size() * ppp;

    // Input: left drag W/L, middle drag pan, right drag zoom, wheel scroll, Ctrl+wheel zoom about the cursor.
    if let Some(slice) = &slice {
        let transform = vp.view_transform(slice, rect_px);
        let delta = response.drag_delta();
        let shift = ui.input(|i| i.modifiers.shift);
        let pointer_image = response.interact_pointer_pos().map(|p| {
            let offset = (p - rect.center()) * ppp;
            let q = transform.screen_to_image([offset.x, offset.y]);
            [f64::from(q[0]), f64::from(q[1])]
        });
        let measuring = vp.mpr.is_none() && tool != Tool::WindowLevel && !shift;
        if measuring {
            if let (Some(ms), Some(p)) = (measurements.as_deref_mut(), pointer_image) {
                measure_input(&response, vp, slice, ms, tool, p, transform.zoom / ppp);
            }
        } else if shift && (response.clicked() || response.dragged_by(PointerButton::Primary)) {
            if let Some(p) = response.interact_pointer_pos() {
                let offset = (p - rect.center()) * ppp;
                out.crosshair = vp.voxel_at(transform.screen_to_image([offset.x, offset.y]));
            }
        } else if response.dragged_by(PointerButton::Primary) && !slice.is_colour() {
            let mut w = vp.effective_window(slice);
            let step = (w.width.abs() * 0.004).max(0.01);
            w.width = (w.width + f64::from(delta.x) * step).max(1.0);
            w.center += f64::from(delta.y) * step;
            vp.window = Some(w);
        }
        if response.dragged_by(PointerButton::Middle) {
            vp.pan_px += delta * ppp;
        }
        if response.dragged_by(PointerButton::Secondary) {
            vp.zoom_factor = (vp.zoom_factor * (1.0 - delta.y * 0.01)).clamp(0.05, 50.0);
        }
        if response.hovered() {
            let (scroll, ctrl) = ui.input(|i| {
                let mut ctrl = i.modifiers.ctrl || i.modifiers.command;
                let mut scroll = 0.0;
                for event in &i.raw.events {
                    if let egui::Event::MouseWheel { delta, modifiers, .. } = event {
                        scroll += delta.y;
                        ctrl |= modifiers.ctrl || modifiers.command;
                    }
                }
                (scroll, ctrl)
            });
            if scroll != 0.0 {
                if ctrl {
                    if let Some(pointer) = response.hover_pos() {
                        let before = (pointer - rect.center()) * ppp;
                        let image_point = transform.screen_to_image([before.x, before.y]);
                        vp.zoom_factor = (vp.zoom_factor * (1.0 + scroll * 0.002)).clamp(0.05, 50.0);
                        let after = vp.view_transform(slice, rect_px).image_to_screen(image_point);
                        vp.pan_px += before - Vec2::new(after[0], after[1]);
                    }
                } else {
                    vp.scroll_by(if scroll > 0.0 { -1 } else { 1 });
                }
            }
        }
        vp.hover_pixel = response.hover_pos().map(|p| {
            let offset = (p - rect.center()) * ppp;
            vp.view_transform(slice, rect_px).screen_to_image([offset.x, offset.y])
        });
    }

    if let Some(slice) = &slice {
        let transform = vp.view_transform(slice, rect_px);
        let window = vp.effective_window(slice);
        let (slope, intercept) = slice.transform.modality.linear().unwrap_or((1.0, 0.0));
        let params = ImageParams {
            ndc_to_pixel: transform.ndc_to_pixel(),
            rescale_slope: slope as f32,
            rescale_intercept: intercept as f32,
            window_center: window.center as f32,
            window_width: window.width as f32,
            voi_function: to_render_function(window.function),
            invert: slice.transform.inverts_for_display() != vp.invert,
            smooth: vp.smooth,
            padding_range: slice.transform.padding.map(|(a, b)| (a as f32, b as f32)),
        };
        let key = match (&vp.mpr_image, vp.mpr) {
            (Some(m), Some(_)) => (m.id, 0),
            _ => denoised_key.unwrap_or_else(|| {
                (series.id, series.slice(vp.slice).map_or_else(|| nearest_index(&series, vp.slice), |_| vp.slice))
            }),
        };
        painter.add(egui_wgpu::Callback::new_paint_callback(
            rect,
            SliceCallback { viewport_id: vp.id, key, slice: slice.clone(), params },
        ));
        if vp.show_overlays && vp.mpr.is_none() && !slice.overlays.is_empty() {
            draw_overlay_planes(ui.ctx(), &painter, rect, vp, key, slice, &transform, ppp);
        }
        if let Some((series_id, voxel)) = crosshair
            && series_id == series.id
        {
            crosshair_lines(&painter, rect, vp, &series, &transform, voxel, ppp);
        }
        if !active
            && vp.mpr.is_none()
            && let Some((frame_of_reference, point, normal)) = &reference
            && *frame_of_reference == slice.info.frame_of_reference_uid
            && !frame_of_reference.is_empty()
            && let Some([a, b]) = reference_line(slice, *point, *normal)
        {
            let to_screen = |p: [f32; 2]| {
                let s = transform.image_to_screen(p);
                rect.center() + Vec2::new(s[0], s[1]) / ppp
            };
            painter.line_segment([to_screen(a), to_screen(b)], Stroke::new(1.5, Color32::from_rgb(255, 200, 60)));
        }
        if vp.mpr.is_none() {
            super::ai_panel::draw_ai_marks(&painter, rect, ai, slice, key.1, &transform, ppp);
        }
        if vp.mpr.is_none()
            && let Some(ms) = measurements.as_deref()
        {
            draw_measurements(&painter, rect, vp, slice, ms, tool, &transform, ppp);
        }
        overlays(&painter, rect, vp, &series, slice, &transform, window, ppp, lang);
        if vp.denoised && vp.mpr.is_none() && denoisable(slice) {
            // Every AI output carries its model: say what is on screen, and that it is not the original.
            let (text, colour) = match (denoised_key, &denoise.error) {
                (Some(_), _) => (
                    format!(
                        "{}: {} — {}",
                        lang.tr("AI denoised"),
                        denoise.model.as_deref().unwrap_or("?"),
                        lang.tr("not for diagnosis")
                    ),
                    Color32::from_rgb(255, 210, 80),
                ),
                (None, Some(e)) => (format!("{}: {e}", lang.tr("Cannot denoise")), Color32::from_rgb(255, 120, 100)),
                (None, None) if denoise_pending => (format!("{}…", lang.tr("Denoising this slice")), Color32::GRAY),
                (None, None) => (String::new(), Color32::GRAY),
            };
            if !text.is_empty() {
                // Bottom centre, above the scale bar: the corners hold the patient and series text.
                shadowed_text(
                    &painter,
                    rect.center_bottom() - Vec2::new(0.0, 96.0),
                    Align2::CENTER_BOTTOM,
                    text,
                    FontId::proportional(13.0),
                    colour,
                );
            }
        }
    } else {
        painter.text(
            rect.center(),
            Align2::CENTER_CENTER,
            format!("{}…", lang.tr("Loading")),
            FontId::proportional(16.0),
            Color32::GRAY,
        );
    }
    draw_border(&painter, rect, active);
    out
}

/// A grey CT slice (what the CT denoisers take).
pub fn denoisable(slice: &SliceImage) -> bool {
    !slice.is_colour() && slice.info.modality == "CT"
}

fn draw_border(painter: &egui::Painter, rect: Rect, active: bool) {
    let stroke = if active {
        Stroke::new(2.0, Color32::from_rgb(255, 190, 40))
    } else {
        Stroke::new(1.0, Color32::from_gray(60))
    };
    painter.rect_stroke(rect.shrink(1.0), 0.0, stroke, egui::StrokeKind::Inside);
}

fn nearest_index(series: &SeriesData, index: usize) -> usize {
    (0..series.len()).filter(|&i| series.slice(i).is_some()).min_by_key(|&i| i.abs_diff(index)).unwrap_or(index)
}

fn nearest_decoded(series: &SeriesData, index: usize) -> Option<Arc<SliceImage>> {
    series.slice(nearest_index(series, index))
}

/// Patient-direction letters (LPS) of a direction vector, strongest component first.
pub fn direction_letters(v: [f64; 3]) -> String {
    let mut parts: Vec<(f64, char)> = vec![
        (v[0].abs(), if v[0] > 0.0 { 'L' } else { 'R' }),
        (v[1].abs(), if v[1] > 0.0 { 'P' } else { 'A' }),
        (v[2].abs(), if v[2] > 0.0 { 'H' } else { 'F' }),
    ];
    parts.sort_by(|a, b| b.0.total_cmp(&a.0));
    parts.iter().filter(|(m, _)| *m > 0.25).map(|(_, c)| *c).collect()
}

#[allow(clippy::too_many_arguments)]
fn overlays(
    painter: &egui::Painter,
    rect: Rect,
    vp: &Viewport,
    series: &SeriesData,
    slice: &SliceImage,
    transform: &ViewTransform,
    window: Window,
    ppp: f32,
    lang: Lang,
) {
    let font = FontId::proportional(13.0);
    let colour = Color32::from_rgb(220, 220, 200);
    let margin = 6.0;
    let info = &slice.info;
    let corner = |pos: Pos2, align: Align2, lines: Vec<String>| {
        let text = lines.into_iter().filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join("\n");
        shadowed_text(painter, pos, align, text, font.clone(), colour);
    };
    corner(
        rect.left_top() + Vec2::splat(margin),
        Align2::LEFT_TOP,
        vec![
            info.patient_name.replace('^', " "),
            info.patient_id.clone(),
            format!("{} {}", format_date(&info.patient_birth_date), info.patient_sex),
        ],
    );
    corner(
        rect.right_top() + Vec2::new(-margin, margin),
        Align2::RIGHT_TOP,
        vec![
            format!("{} {}", format_date(&info.study_date), info.study_description),
            format!(
                "{} {} {}",
                info.modality,
                info.series_number.map(|n| format!("#{n}")).unwrap_or_default(),
                info.series_description
            ),
        ],
    );
    let n = series.len();
    let mut bottom_left = vec![
        if slice.is_colour() { String::new() } else { format!("W {:.0}  L {:.0}", window.width, window.center) },
        format!("{} {:.0}%", lang.tr("Zoom"), transform.zoom * 100.0),
    ];
    match vp.mpr {
        Some(spec) => {
            let depth = Geometry::of(series).depth(spec.plane);
            let slab = if spec.slab_mm > 0.0 {
                format!("  {} {:.1} mm", spec.mode.label(), spec.slab_mm)
            } else {
                String::new()
            };
            bottom_left.push(format!("{} {}/{}{slab}", lang.tr(spec.plane.label()), spec.index + 1, depth));
        }
        None => {
            bottom_left.push(format!("{} {}/{}", lang.tr("Slice"), vp.slice + 1, n));
            if n > 1
                && let Some(z) = series.plan.slice_positions_mm.get(vp.slice)
            {
                bottom_left.push(format!("{z:.1} mm"));
            }
        }
    }
    if let Some(t) = info.slice_thickness_mm {
        bottom_left.push(format!("{} {t:.2} mm", lang.tr("Thickness")));
    }
    corner(rect.left_bottom() + Vec2::new(margin, -margin), Align2::LEFT_BOTTOM, bottom_left);
    let mut bottom_right = Vec::new();
    if let Some([x, y]) = vp.hover_pixel
        && x >= 0.0
        && y >= 0.0
        && let Some(v) = slice.modality_value(x as usize, y as usize)
    {
        let unit = if slice.transform.unit.is_empty() { String::new() } else { format!(" {}", slice.transform.unit) };
        bottom_right.push(format!("({}, {})  {v:.0}{unit}", x as usize, y as usize));
    }
    if series.decoded() < n {
        bottom_right.push(format!("{} {}/{}", lang.tr("decoded"), series.decoded(), n));
    }
    // Warnings worth a reader's attention (a radiograph's lack of a slice stack is not one).
    for w in series
        .warnings()
        .iter()
        .filter(|w| {
            series.len() > 1
                || !matches!(
                    w,
                    VolumeWarning::NoGeometry | VolumeWarning::SingleSlice | VolumeWarning::UncalibratedSpacing
                )
        })
        .take(2)
    {
        bottom_right.push(format!("{}: {w}", lang.tr("Warning")));
    }
    corner(rect.right_bottom() - Vec2::splat(margin), Align2::RIGHT_BOTTOM, bottom_right);

    // Orientation markers from ImageOrientationPatient, else from PatientOrientation (radiographs).
    if let Some(o) = info.image_orientation_patient.or_else(|| patient_orientation_vectors(&info.patient_orientation)) {
        let row = [o[0], o[1], o[2]];
        let col = [o[3], o[4], o[5]];
        let direction = |screen: [f32; 2]| {
            let a = transform.screen_to_image([0.0, 0.0]);
            let b = transform.screen_to_image(screen);
            let (di, dj) = (f64::from(b[0] - a[0]), f64::from(b[1] - a[1]));
            direction_letters([0, 1, 2].map(|k| row[k] * di + col[k] * dj))
        };
        let big = FontId::proportional(15.0);
        let c = rect.center();
        painter.text(
            Pos2::new(rect.right() - margin, c.y),
            Align2::RIGHT_CENTER,
            direction([100.0, 0.0]),
            big.clone(),
            colour,
        );
        painter.text(
            Pos2::new(rect.left() + margin, c.y),
            Align2::LEFT_CENTER,
            direction([-100.0, 0.0]),
            big.clone(),
            colour,
        );
        painter.text(
            Pos2::new(c.x, rect.top() + margin),
            Align2::CENTER_TOP,
            direction([0.0, -100.0]),
            big.clone(),
            colour,
        );
        painter.text(
            Pos2::new(c.x, rect.bottom() - margin),
            Align2::CENTER_BOTTOM,
            direction([0.0, 100.0]),
            big,
            colour,
        );
    }

    // Scale bar: a round length in mm that is about a fifth of the viewport.
    if let Some(spacing) = info.spacing() {
        let mm_per_point = spacing.column_mm as f32 / transform.zoom * ppp;
        let target_mm = rect.width() * 0.2 * mm_per_point;
        let nice = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0]
            .into_iter()
            .rev()
            .find(|&l| l <= target_mm)
            .unwrap_or(1.0);
        let length = nice / mm_per_point;
        let y = rect.bottom() - 72.0;
        let x0 = rect.center().x - length / 2.0;
        for (stroke, offset) in [(Stroke::new(4.0, Color32::BLACK), 0.0), (Stroke::new(2.0, colour), 0.0)] {
            painter.line_segment([Pos2::new(x0 - offset, y), Pos2::new(x0 + length, y)], stroke);
            for x in [x0, x0 + length] {
                painter.line_segment([Pos2::new(x, y - 4.0), Pos2::new(x, y + 4.0)], stroke);
            }
        }
        let label = if spacing.source == SpacingSource::ImagerPixelSpacing {
            format!("{nice:.0} mm ({})", lang.tr("uncalibrated (detector)"))
        } else {
            format!("{nice:.0} mm")
        };
        painter.text(
            Pos2::new(rect.center().x, y - 6.0),
            Align2::CENTER_BOTTOM,
            label,
            FontId::proportional(11.0),
            colour,
        );
    }
}

/// Left-button handling for the measuring tools and for selecting / moving measurements.
fn measure_input(
    response: &egui::Response,
    vp: &mut Viewport,
    slice: &SliceImage,
    ms: &mut Measurements,
    tool: Tool,
    p: [f64; 2],
    screen_px_per_image_px: f32,
) {
    let pick_radius = 8.0 / f64::from(screen_px_per_image_px.max(1e-3));
    let on_slice = |m: &MeasurementRecord| m.sop_uid == slice.info.sop_instance_uid && m.frame == slice.frame_index;
    match tool {
        Tool::Select => {
            if response.drag_started_by(PointerButton::Primary) || response.clicked() {
                ms.selected = ms
                    .items
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| on_slice(m))
                    .map(|(i, m)| (i, measure::distance_to(m, p)))
                    .filter(|(_, d)| *d < pick_radius)
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(i, _)| i);
                vp.dragging = if response.drag_started_by(PointerButton::Primary) { ms.selected } else { None };
                if let Some(i) = vp.dragging {
                    ms.translate(i, [0.0, 0.0], true);
                }
            } else if response.dragged_by(PointerButton::Primary)
                && let Some(i) = vp.dragging
            {
                let d = response.drag_delta() * response.ctx.pixels_per_point() / screen_px_per_image_px;
                ms.translate(i, [f64::from(d.x), f64::from(d.y)], false);
            }
            if response.drag_stopped() {
                vp.dragging = None;
            }
        }
        Tool::Angle => {
            if response.clicked() {
                vp.drawing.push(p);
                if vp.drawing.len() == 3 {
                    finish_measurement(vp, slice, ms, tool);
                }
            }
        }
        _ => {
            if response.drag_started_by(PointerButton::Primary) {
                vp.drawing = vec![p, p];
            } else if response.dragged_by(PointerButton::Primary) && vp.drawing.len() == 2 {
                vp.drawing[1] = p;
            }
            if response.drag_stopped() && vp.drawing.len() == 2 {
                finish_measurement(vp, slice, ms, tool);
            }
        }
    }
}

fn finish_measurement(vp: &mut Viewport, slice: &SliceImage, ms: &mut Measurements, tool: Tool) {
    let points = std::mem::take(&mut vp.drawing);
    let degenerate = points.windows(2).all(|w| (w[0][0] - w[1][0]).abs() + (w[0][1] - w[1][1]).abs() < 0.5);
    if let Some(kind) = tool.kind()
        && points.len() == tool.points_needed()
        && !degenerate
    {
        ms.add(MeasurementRecord {
            series_uid: slice.info.series_instance_uid.clone(),
            sop_uid: slice.info.sop_instance_uid.clone(),
            frame: slice.frame_index,
            kind: kind.to_owned(),
            points,
        });
    }
}

#[allow(clippy::too_many_arguments)]
fn draw_measurements(
    painter: &egui::Painter,
    rect: Rect,
    vp: &Viewport,
    slice: &SliceImage,
    ms: &Measurements,
    tool: Tool,
    transform: &ViewTransform,
    ppp: f32,
) {
    let to_screen = |p: [f64; 2]| {
        let s = transform.image_to_screen([p[0] as f32, p[1] as f32]);
        rect.center() + Vec2::new(s[0], s[1]) / ppp
    };
    let draw = |m: &MeasurementRecord, colour: Color32, with_label: bool| {
        let stroke = Stroke::new(1.5, colour);
        let pts: Vec<Pos2> = m.points.iter().map(|&p| to_screen(p)).collect();
        match (m.kind.as_str(), pts.as_slice()) {
            ("length", [a, b]) => {
                painter.line_segment([*a, *b], stroke);
            }
            ("angle", [a, v, b]) => {
                painter.line_segment([*a, *v], stroke);
                painter.line_segment([*v, *b], stroke);
            }
            ("rectangle" | "ellipse", [_, _]) => {
                let (a, b) = (m.points[0], m.points[1]);
                let corners = [[a[0], a[1]], [b[0], a[1]], [b[0], b[1]], [a[0], b[1]]];
                let outline: Vec<Pos2> = if m.kind == "rectangle" {
                    corners.iter().map(|&c| to_screen(c)).collect()
                } else {
                    let (cx, cy, rx, ry) =
                        ((a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0, (b[0] - a[0]) / 2.0, (b[1] - a[1]) / 2.0);
                    (0..64)
                        .map(|t| {
                            let th = f64::from(t) / 64.0 * std::f64::consts::TAU;
                            to_screen([cx + rx * th.cos(), cy + ry * th.sin()])
                        })
                        .collect()
                };
                painter.add(egui::Shape::closed_line(outline, stroke));
            }
            _ => {}
        }
        for p in &pts {
            painter.circle_filled(*p, 2.5, colour);
        }
        if with_label && let Some(anchor) = pts.iter().max_by(|a, b| a.x.total_cmp(&b.x)) {
            shadowed_text(
                painter,
                *anchor + Vec2::new(8.0, 0.0),
                Align2::LEFT_CENTER,
                measure::label(slice, m),
                FontId::proportional(12.0),
                colour,
            );
        }
    };
    for (i, m) in ms.items.iter().enumerate() {
        if m.sop_uid == slice.info.sop_instance_uid && m.frame == slice.frame_index {
            let colour =
                if ms.selected == Some(i) { Color32::from_rgb(255, 120, 60) } else { Color32::from_rgb(120, 255, 120) };
            draw(m, colour, true);
        }
    }
    if !vp.drawing.is_empty()
        && let Some(kind) = tool.kind()
    {
        let mut pending = MeasurementRecord {
            series_uid: String::new(),
            sop_uid: String::new(),
            frame: 0,
            kind: kind.into(),
            points: vp.drawing.clone(),
        };
        if tool == Tool::Angle && pending.points.len() < 3 {
            pending.kind = "length".into();
            if pending.points.len() == 1 {
                pending.points.push(pending.points[0]);
            }
        }
        draw(&pending, Color32::from_rgb(255, 220, 80), pending.points.len() == tool.points_needed());
    }
}

/// The plane of a native slice: (origin IPP, row direction, column direction, spacing (column, row) mm).
pub type SlicePlane = ([f64; 3], [f64; 3], [f64; 3], [f64; 2]);

pub fn slice_plane(slice: &SliceImage) -> Option<SlicePlane> {
    let o = slice.info.image_orientation_patient?;
    let p = slice.info.image_position_patient?;
    let s = slice.info.spacing()?;
    Some((p, [o[0], o[1], o[2]], [o[3], o[4], o[5]], [s.column_mm, s.row_mm]))
}

/// The segment (image pixels) where the plane through `point` with normal `normal` cuts `slice`.
pub fn reference_line(slice: &SliceImage, point: [f64; 3], normal: [f64; 3]) -> Option<[[f32; 2]; 2]> {
    let (origin, row, col, [sx, sy]) = slice_plane(slice)?;
    let dot = |a: [f64; 3], b: [f64; 3]| a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    // Pixel (u, v) centre is at origin + u*sx*row + v*sy*col; solve a*u + b*v + d = 0.
    let a = sx * dot(row, normal);
    let b = sy * dot(col, normal);
    let d = dot([origin[0] - point[0], origin[1] - point[1], origin[2] - point[2]], normal);
    if a.abs() < 1e-6 && b.abs() < 1e-6 {
        return None; // parallel planes
    }
    let (w, h) = (f64::from(slice.width), f64::from(slice.height));
    // Clip the line to the image rectangle (in pixel-centre coordinates from -0.5 to size - 0.5).
    let mut hits: Vec<[f64; 2]> = Vec::new();
    for u in [-0.5, w - 0.5] {
        if b.abs() > 1e-9 {
            let v = -(a * u + d) / b;
            if (-0.5..=h - 0.5).contains(&v) {
                hits.push([u, v]);
            }
        }
    }
    for v in [-0.5, h - 0.5] {
        if a.abs() > 1e-9 {
            let u = -(b * v + d) / a;
            if (-0.5..=w - 0.5).contains(&u) {
                hits.push([u, v]);
            }
        }
    }
    hits.dedup_by(|x, y| (x[0] - y[0]).abs() < 1e-6 && (x[1] - y[1]).abs() < 1e-6);
    (hits.len() >= 2).then(|| [0, 1].map(|i| [(hits[i][0] + 0.5) as f32, (hits[i][1] + 0.5) as f32]))
}

/// Draws the slice's overlay planes as textured quads that follow the view transform.
#[allow(clippy::too_many_arguments)]
fn draw_overlay_planes(
    ctx: &egui::Context,
    painter: &egui::Painter,
    rect: Rect,
    vp: &mut Viewport,
    key: (u64, usize),
    slice: &SliceImage,
    transform: &ViewTransform,
    ppp: f32,
) {
    if vp.overlay_textures.as_ref().is_none_or(|(k, _)| *k != key) {
        let textures = slice
            .overlays
            .iter()
            .map(|o| {
                let pixels =
                    o.bits
                        .iter()
                        .map(|&b| {
                            if b != 0 {
                                Color32::from_rgba_unmultiplied(255, 225, 80, 230)
                            } else {
                                Color32::TRANSPARENT
                            }
                        })
                        .collect();
                let image = egui::ColorImage::new([o.columns as usize, o.rows as usize], pixels);
                ctx.load_texture(
                    format!("overlay-{}-{}-{:04x}", key.0, key.1, o.group),
                    image,
                    egui::TextureOptions::NEAREST,
                )
            })
            .collect();
        vp.overlay_textures = Some((key, textures));
    }
    let Some((_, textures)) = &vp.overlay_textures else { return };
    let to_screen = |p: [f32; 2]| {
        let s = transform.image_to_screen(p);
        rect.center() + Vec2::new(s[0], s[1]) / ppp
    };
    for (o, texture) in slice.overlays.iter().zip(textures) {
        let (x0, y0) = (o.origin[0] as f32, o.origin[1] as f32);
        let (x1, y1) = (x0 + o.columns as f32, y0 + o.rows as f32);
        let mut mesh = egui::Mesh::with_texture(texture.id());
        for (corner, uv) in
            [([x0, y0], [0.0, 0.0]), ([x1, y0], [1.0, 0.0]), ([x1, y1], [1.0, 1.0]), ([x0, y1], [0.0, 1.0])]
        {
            mesh.vertices.push(egui::epaint::Vertex {
                pos: to_screen(corner),
                uv: Pos2::new(uv[0], uv[1]),
                color: Color32::WHITE,
            });
        }
        mesh.indices.extend_from_slice(&[0, 1, 2, 0, 2, 3]);
        painter.add(egui::Shape::mesh(mesh));
    }
}

/// Lines where the other two planes cross this view, at the linked crosshair.
fn crosshair_lines(
    painter: &egui::Painter,
    rect: Rect,
    vp: &Viewport,
    series: &SeriesData,
    transform: &ViewTransform,
    voxel: [usize; 3],
    ppp: f32,
) {
    let [_, _, nk] = Geometry::of(series).dims;
    let flip = |k: usize| (nk - 1 - k.min(nk - 1)) as f32 + 0.5;
    // (x, y) of the crosshair in this view's image pixels.
    let (x, y) = match vp.mpr.map(|m| m.plane) {
        None | Some(Plane::Axial) => (voxel[0] as f32 + 0.5, voxel[1] as f32 + 0.5),
        Some(Plane::Coronal) => (voxel[0] as f32 + 0.5, flip(voxel[2])),
        Some(Plane::Sagittal) => (voxel[1] as f32 + 0.5, flip(voxel[2])),
    };
    let to_screen = |p: [f32; 2]| {
        let s = transform.image_to_screen(p);
        rect.center() + Vec2::new(s[0], s[1]) / ppp
    };
    let size = transform.image_size;
    let stroke = Stroke::new(1.0, Color32::from_rgba_unmultiplied(80, 200, 255, 160));
    painter.line_segment([to_screen([x, 0.0]), to_screen([x, size[1]])], stroke);
    painter.line_segment([to_screen([0.0, y]), to_screen([size[0], y])], stroke);
}

/// Overlay text with a dark outline, readable on any part of the image.
fn shadowed_text(painter: &egui::Painter, pos: Pos2, align: Align2, text: String, font: FontId, colour: Color32) {
    let shadow = Color32::from_black_alpha(220);
    for offset in [Vec2::new(1.0, 1.0), Vec2::new(-1.0, -1.0), Vec2::new(1.0, -1.0), Vec2::new(-1.0, 1.0)] {
        painter.text(pos + offset, align, &text, font.clone(), shadow);
    }
    painter.text(pos, align, text, font, colour);
}

/// Direction vectors (as an ImageOrientationPatient) from PatientOrientation letters, e.g. "L\\F".
fn patient_orientation_vectors(text: &str) -> Option<[f64; 6]> {
    let mut parts = text.split('\\');
    let letters = |s: &str| {
        let mut v = [0.0f64; 3];
        for c in s.chars() {
            match c {
                'L' => v[0] += 1.0,
                'R' => v[0] -= 1.0,
                'P' => v[1] += 1.0,
                'A' => v[1] -= 1.0,
                'H' => v[2] += 1.0,
                'F' => v[2] -= 1.0,
                _ => {}
            }
        }
        (v != [0.0; 3]).then_some(v)
    };
    let row = letters(parts.next()?)?;
    let col = letters(parts.next()?)?;
    Some([row[0], row[1], row[2], col[0], col[1], col[2]])
}

/// YYYYMMDD as YYYY-MM-DD; anything else (including non-ASCII text) as it is.
pub(crate) fn format_date(d: &str) -> String {
    if d.len() == 8 && d.chars().all(|c| c.is_ascii_digit()) {
        format!("{}-{}-{}", &d[0..4], &d[4..6], &d[6..8])
    } else {
        d.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_letters_follow_lps() {
        assert_eq!(direction_letters([1.0, 0.0, 0.0]), "L");
        assert_eq!(direction_letters([-1.0, 0.0, 0.0]), "R");
        assert_eq!(direction_letters([0.0, -1.0, 0.0]), "A");
        assert_eq!(direction_letters([0.0, 0.0, -1.0]), "F");
        assert_eq!(direction_letters([0.7, 0.0, 0.7]), "LH");
    }

    #[test]
    fn reference_line_of_an_axial_plane_on_a_coronal_image() {
        use pacs::pixels::{ModalityLut, PixelTransform};
        // Coronal image: rows along +x, columns along -z (feet down), origin at z = 100.
        let info = pacs::InstanceInfo {
            image_orientation_patient: Some([1.0, 0.0, 0.0, 0.0, 0.0, -1.0]),
            image_position_patient: Some([-50.0, 0.0, 100.0]),
            pixel_spacing_mm: Some([2.0, 1.0]),
            ..Default::default()
        };
        let slice = SliceImage {
            width: 100,
            height: 50,
            samples: super::super::loader::SliceSamples::U8(vec![0; 5000]),
            transform: PixelTransform::simple(ModalityLut::Identity, "", pacs::Photometric::Monochrome2),
            info,
            frame_index: 0,
            overlays: Vec::new(),
        };
        // The axial plane z = 60 is 40 mm below the origin: row 20 (2 mm rows), across the whole width.
        let [a, b] = reference_line(&slice, [0.0, 0.0, 60.0], [0.0, 0.0, 1.0]).unwrap();
        assert!((a[1] - 20.5).abs() < 1e-4 && (b[1] - 20.5).abs() < 1e-4, "{a:?} {b:?}");
        assert!((a[0] - b[0]).abs() > 99.0);
        // A parallel (coronal) plane gives no line.
        assert!(reference_line(&slice, [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]).is_none());
    }

    #[test]
    fn patient_orientation_of_a_pa_chest() {
        assert_eq!(patient_orientation_vectors("L\\F"), Some([1.0, 0.0, 0.0, 0.0, 0.0, -1.0]));
        assert_eq!(patient_orientation_vectors(""), None);
    }

    #[test]
    fn ct_presets_match_the_conventional_values() {
        let defs = super::super::settings::Settings::default().presets;
        let p = modality_presets("CT", &defs, Lang::En);
        assert_eq!(p[0].window, Window::new(-600.0, 1500.0));
        assert_eq!(p[1].window, Window::new(40.0, 350.0));
        assert_eq!(p[2].window, Window::new(300.0, 2000.0));
        assert!(modality_presets("CR", &defs, Lang::En).is_empty());
        assert_eq!(modality_presets("CT", &defs, Lang::Ko)[0].name, "폐");
    }
}
