//! AI in the workstation: the `lucent-ai` worker runs the applicable models on a series when it
//! opens (or on demand), the findings panel lists what they said with model name and version,
//! and the viewport draws contours, boxes and nodule marks with an opacity and per-finding toggles.
//! When ONNX Runtime is missing the viewer keeps working and the panel says how to fix it.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use egui::{Color32, Pos2, Rect, Stroke, Vec2};
use render::ViewTransform;

use super::i18n::Lang;
use super::loader::SliceImage;
use crate::ai::{ReadOptions, SeriesReading};

/// A request to read a series.
struct AiRequest {
    series_uid: String,
    paths: Vec<PathBuf>,
    include_test_models: bool,
}

/// What the AI worker reports.
pub enum AiEvent {
    /// The runtime or the registry is unusable: the message says how to fix it.
    Unavailable(String),
    Started(String),
    Done(Box<SeriesReading>),
}

/// Handle to the AI worker.
pub struct AiWorker {
    requests: Sender<AiRequest>,
    pub events: Receiver<AiEvent>,
}

impl AiWorker {
    /// Starts the worker; derived series (a denoised CT) are written into, and imported into, the
    /// store at `store_dir` so the viewer shows them beside the original.
    pub fn start(store_dir: PathBuf, repaint: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Self> {
        let (requests, rx) = crossbeam_channel::bounded::<AiRequest>(8);
        let (tx, events) = crossbeam_channel::bounded::<AiEvent>(16);
        std::thread::Builder::new().name("lucent-ai".into()).spawn(move || {
            let mut registry = None;
            for request in rx.iter() {
                if let Err(e) = inference::runtime::runtime() {
                    let _ = tx.send(AiEvent::Unavailable(e.to_string()));
                    repaint();
                    continue;
                }
                let registry = registry.get_or_insert_with(crate::ai::scan_registry);
                let _ = tx.send(AiEvent::Started(request.series_uid.clone()));
                repaint();
                let derived_dir = store_dir.join("derived");
                let options = ReadOptions {
                    include_test_models: request.include_test_models,
                    derived_dir: Some(derived_dir.clone()),
                    ..Default::default()
                };
                let mut reading = crate::ai::read_series(registry, request.series_uid, &request.paths, &options);
                if !reading.derived_series.is_empty() {
                    let imported = pacs::store::Store::open(&store_dir).and_then(|mut store| {
                        pacs::import::import_paths(
                            &mut store,
                            &reading.derived_series,
                            &Default::default(),
                            &|_| {},
                            &std::sync::atomic::AtomicBool::new(false),
                        )
                    });
                    // The store keeps its own copy; the written files were only a staging area.
                    let _ = std::fs::remove_dir_all(&derived_dir);
                    match imported {
                        Ok(s) => reading
                            .notes
                            .push(format!("denoised series added to the store ({} images)", s.imported + s.duplicates)),
                        Err(e) => reading.notes.push(format!("the denoised series could not be stored: {e}")),
                    }
                }
                if tx.send(AiEvent::Done(Box::new(reading))).is_err() {
                    break;
                }
                repaint();
            }
        })?;
        Ok(Self { requests, events })
    }

    /// Queues a reading; false when the queue is full.
    pub fn request(&self, series_uid: String, paths: Vec<PathBuf>, include_test_models: bool) -> bool {
        self.requests.try_send(AiRequest { series_uid, paths, include_test_models }).is_ok()
    }
}

/// AI state shown in the UI.
pub struct AiState {
    pub readings: HashMap<String, SeriesReading>,
    pub running: BTreeSet<String>,
    pub unavailable: Option<String>,
    /// Findings hidden on the image: (series, model, label).
    pub hidden: BTreeSet<(String, String, String)>,
    /// Findings of labels the manifest does not show by default that the reader turned on.
    pub revealed: BTreeSet<(String, String, String)>,
    pub opacity: f32,
    pub auto_run: bool,
    pub include_test_models: bool,
    /// Show the positive findings' heat maps (besides their contours).
    pub heatmaps: bool,
    requested: BTreeSet<String>,
    /// Heat-map textures by (series, model, label).
    heatmap_textures: std::sync::Mutex<HashMap<(String, String, String), egui::TextureHandle>>,
}

impl Default for AiState {
    fn default() -> Self {
        Self {
            readings: HashMap::new(),
            running: BTreeSet::new(),
            unavailable: None,
            hidden: BTreeSet::new(),
            revealed: BTreeSet::new(),
            opacity: 0.8,
            auto_run: true,
            include_test_models: false,
            heatmaps: true,
            requested: BTreeSet::new(),
            heatmap_textures: std::sync::Mutex::new(HashMap::new()),
        }
    }
}

impl AiState {
    /// Asks for a reading of a series once (again when `force`).
    pub fn request(&mut self, worker: &AiWorker, series_uid: &str, paths: Vec<PathBuf>, force: bool) {
        if (force || !self.requested.contains(series_uid))
            && worker.request(series_uid.to_owned(), paths, self.include_test_models)
        {
            self.requested.insert(series_uid.to_owned());
        }
    }

    pub fn handle(&mut self, event: AiEvent) {
        match event {
            AiEvent::Unavailable(message) => {
                self.unavailable = Some(message);
                self.running.clear();
            }
            AiEvent::Started(uid) => {
                self.running.insert(uid);
            }
            AiEvent::Done(reading) => {
                self.unavailable = None;
                self.running.remove(&reading.series_uid);
                if let Ok(mut textures) = self.heatmap_textures.lock() {
                    textures.retain(|k, _| k.0 != reading.series_uid);
                }
                self.readings.insert(reading.series_uid.clone(), *reading);
            }
        }
    }

    /// Whether a finding is drawn: labels shown by default unless hidden, the others only when
    /// the reader turned them on.
    pub fn visible(&self, series: &str, f: &inference::cxr::Finding) -> bool {
        let key = (series.to_owned(), f.model_id.clone(), f.label.clone());
        if f.shown_by_default { !self.hidden.contains(&key) } else { self.revealed.contains(&key) }
    }
}

/// What the panel asks for.
#[derive(Debug, Default)]
pub struct AiPanelOutput {
    pub run_again: bool,
    /// Go to this nodule: (slice index, pixel x, pixel y).
    pub go_to: Option<(usize, f32, f32)>,
}

/// The findings panel for the series in the active viewport.
pub fn ai_panel_ui(ui: &mut egui::Ui, state: &mut AiState, series_uid: Option<&str>, lang: Lang) -> AiPanelOutput {
    let mut out = AiPanelOutput::default();
    ui.heading(lang.tr("AI findings"));
    ui.weak(crate::ai::DISCLAIMER);
    ui.separator();
    if let Some(message) = &state.unavailable {
        ui.colored_label(Color32::from_rgb(255, 170, 60), format!("{}: {message}", lang.tr("AI is not available")));
        return out;
    }
    ui.horizontal(|ui| {
        ui.checkbox(&mut state.auto_run, lang.tr("Run on open"));
        ui.checkbox(&mut state.include_test_models, lang.tr("Test models"));
    });
    ui.add(egui::Slider::new(&mut state.opacity, 0.0..=1.0).text(lang.tr("Opacity")));
    ui.checkbox(&mut state.heatmaps, lang.tr("Heat maps"));
    let Some(uid) = series_uid else {
        ui.weak(lang.tr("Open a series"));
        return out;
    };
    if ui.button(lang.tr("Run AI")).clicked() {
        out.run_again = true;
    }
    if state.running.contains(uid) {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label(lang.tr("Running models…"));
        });
    }
    let Some(reading) = state.readings.get(uid).cloned() else { return out };
    for m in &reading.models {
        let text = format!("{} {} ({})", m.model_name, m.model_version, m.execution_provider.as_deref().unwrap_or("?"));
        match &m.error {
            None => ui.label(text),
            Some(e) => ui.colored_label(Color32::from_rgb(255, 120, 100), format!("{text}: {e}")),
        };
    }
    for note in &reading.notes {
        ui.weak(note);
    }
    egui::ScrollArea::vertical().id_salt("ai-findings").show(ui, |ui| {
        for f in &reading.findings {
            let key = (uid.to_owned(), f.model_id.clone(), f.label.clone());
            let mut shown = state.visible(uid, f);
            let colour = if f.positive && f.shown_by_default { Color32::from_rgb(255, 110, 90) } else { Color32::GRAY };
            let mut text = format!("{}  {:.2} / {:.2}", f.label, f.score, f.threshold);
            let mut hover = format!("{} {}", f.model_id, f.model_version);
            if !f.shown_by_default {
                text.push_str(&format!("  ({})", lang.tr("not validated")));
                hover.push_str(&format!(
                    "\n{}",
                    lang.tr("Not shown by default: this model does not back this finding on real patients (see its model card)")
                ));
            }
            if ui.checkbox(&mut shown, egui::RichText::new(text).color(colour)).on_hover_text(hover).changed() {
                let set = if f.shown_by_default { &mut state.hidden } else { &mut state.revealed };
                if shown == f.shown_by_default {
                    set.remove(&key);
                } else {
                    set.insert(key.clone());
                }
            }
        }
        for (i, n) in reading.nodules.iter().enumerate() {
            let Some(m) = &n.measurement else { continue };
            let text = format!(
                "{} {}: {:?} {:.1} mm ({:.1} × {:.1}), {:.0} mm³, Lung-RADS {}",
                lang.tr("Nodule"),
                i + 1,
                m.nodule_type,
                m.axes.mean_diameter_mm,
                m.axes.long_axis_mm,
                m.axes.short_axis_mm,
                m.volume_mm3,
                n.lung_rads.as_deref().unwrap_or("?")
            );
            if ui.link(text).on_hover_text(format!("{} {}", n.candidate.model_id, n.candidate.model_version)).clicked()
            {
                out.go_to = Some((m.axes.slice, m.centroid_voxel[0] as f32, m.centroid_voxel[1] as f32));
            }
        }
        if let Some(l) = &reading.lung_rads {
            ui.separator();
            ui.strong(format!("Lung-RADS {} — {}", l.category, l.descriptor));
            ui.label(&l.management);
        }
    });
    out
}

/// A transparent-to-red-to-yellow colour for a map value; nothing below half the contour level.
fn heat_colour(v: f32, level: f32) -> Color32 {
    let t = ((v - level * 0.5) / (1.0 - level * 0.5).max(1e-3)).clamp(0.0, 1.0);
    if t <= 0.0 {
        return Color32::TRANSPARENT;
    }
    let (r, g) = (255.0, 255.0 * (t - 0.5).max(0.0) * 2.0);
    Color32::from_rgba_unmultiplied(r as u8, g as u8, 0, (160.0 * t) as u8)
}

/// Draws the AI marks of `slice` (CXR contours and boxes; CT nodules on their slices).
pub fn draw_ai_marks(
    painter: &egui::Painter,
    rect: Rect,
    state: &AiState,
    slice: &SliceImage,
    slice_index: usize,
    transform: &ViewTransform,
    ppp: f32,
) {
    let Some(reading) = state.readings.get(&slice.info.series_instance_uid) else { return };
    let alpha = (state.opacity.clamp(0.0, 1.0) * 255.0) as u8;
    let to_screen = |p: [f64; 2]| {
        let s = transform.image_to_screen([p[0] as f32 + 0.5, p[1] as f32 + 0.5]);
        rect.center() + Vec2::new(s[0], s[1]) / ppp
    };
    for f in reading.findings.iter().filter(|f| f.positive) {
        if !state.visible(&reading.series_uid, f) {
            continue;
        }
        let Some(g) = &f.geometry else { continue };
        if state.heatmaps && !g.map.values.is_empty() {
            let key = (reading.series_uid.clone(), f.model_id.clone(), f.label.clone());
            let texture = state.heatmap_textures.lock().ok().map(|mut textures| {
                textures
                    .entry(key)
                    .or_insert_with(|| {
                        let m = &g.map;
                        let pixels = m.values.iter().map(|&v| heat_colour(v, g.level)).collect();
                        painter.ctx().load_texture(
                            format!("heat-{}-{}-{}", reading.series_uid, f.model_id, f.label),
                            egui::ColorImage::new([m.width, m.height], pixels),
                            egui::TextureOptions::LINEAR,
                        )
                    })
                    .clone()
            });
            if let Some(texture) = texture {
                let [x0, y0, w, h] = g.map.crop.map(|v| v as f64);
                let corner = |x: f64, y: f64| {
                    let s = transform.image_to_screen([x as f32, y as f32]);
                    rect.center() + Vec2::new(s[0], s[1]) / ppp
                };
                let tint = Color32::from_white_alpha(alpha);
                let mut mesh = egui::Mesh::with_texture(texture.id());
                for (p, uv) in [
                    (corner(x0, y0), [0.0, 0.0]),
                    (corner(x0 + w, y0), [1.0, 0.0]),
                    (corner(x0 + w, y0 + h), [1.0, 1.0]),
                    (corner(x0, y0 + h), [0.0, 1.0]),
                ] {
                    mesh.vertices.push(egui::epaint::Vertex { pos: p, uv: Pos2::new(uv[0], uv[1]), color: tint });
                }
                mesh.indices.extend_from_slice(&[0, 1, 2, 0, 2, 3]);
                painter.add(egui::Shape::mesh(mesh));
            }
        }
        let colour = Color32::from_rgba_unmultiplied(255, 90, 70, alpha);
        for c in &g.contours {
            let points: Vec<Pos2> = c.points_px.iter().map(|&p| to_screen(p)).collect();
            if points.len() > 2 {
                painter.add(egui::Shape::closed_line(points, Stroke::new(2.0, colour)));
            }
        }
        if let Some(b) = g.boxes.first() {
            let corner = to_screen(b.min_px);
            painter.text(
                corner,
                egui::Align2::LEFT_BOTTOM,
                format!("{} {:.2}", f.label, f.score),
                egui::FontId::proportional(12.0),
                colour,
            );
        }
    }
    for (i, n) in reading.nodules.iter().enumerate() {
        let Some(m) = &n.measurement else { continue };
        if m.axes.slice != slice_index && (m.centroid_voxel[2].round() as usize) != slice_index {
            continue;
        }
        let colour = Color32::from_rgba_unmultiplied(255, 200, 40, alpha);
        let [[x0, y0], [x1, y1]] = m.axes.long_axis_ends;
        painter.line_segment([to_screen([x0, y0]), to_screen([x1, y1])], Stroke::new(1.5, colour));
        let centre = to_screen([m.centroid_voxel[0], m.centroid_voxel[1]]);
        let radius_px =
            (m.axes.mean_diameter_mm / slice.info.spacing().map_or(1.0, |s| s.column_mm)) as f32 * transform.zoom / ppp;
        painter.circle_stroke(centre, radius_px / 2.0 + 6.0, Stroke::new(1.5, colour));
        painter.text(
            centre + Vec2::new(radius_px / 2.0 + 8.0, 0.0),
            egui::Align2::LEFT_CENTER,
            format!("{} {:.1} mm, LR {}", i + 1, m.axes.mean_diameter_mm, n.lung_rads.as_deref().unwrap_or("?")),
            egui::FontId::proportional(12.0),
            colour,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::AiState;

    fn finding(label: &str, shown_by_default: bool) -> inference::cxr::Finding {
        inference::cxr::Finding {
            model_id: "lucent-cxr".into(),
            model_version: "0.1.0".into(),
            label: label.into(),
            radlex: None,
            snomed: None,
            score: 0.9,
            threshold: 0.5,
            positive: true,
            shown_by_default,
            geometry: None,
        }
    }

    /// A label the manifest does not back is not drawn until the reader turns it on; a backed one
    /// is drawn until turned off.
    #[test]
    fn labels_not_shown_by_default_are_drawn_only_when_asked() {
        let mut state = AiState::default();
        let (backed, unbacked) = (finding("Pleural effusion", true), finding("Nodule", false));
        assert!(state.visible("s", &backed));
        assert!(!state.visible("s", &unbacked));
        state.revealed.insert(("s".into(), "lucent-cxr".into(), "Nodule".into()));
        state.hidden.insert(("s".into(), "lucent-cxr".into(), "Pleural effusion".into()));
        assert!(state.visible("s", &unbacked));
        assert!(!state.visible("s", &backed));
        assert!(!state.visible("other series", &unbacked));
    }
}
