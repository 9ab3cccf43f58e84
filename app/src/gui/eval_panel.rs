//! The *Model evaluation* window, for a QA lead: `lucent eval` in the workstation. Pick a labelled
//! folder (`labels.csv` + radiographs, CT series + `nodules.csv`, or low-dose / reference CT series +
//! `pairs.csv`) and a model (or every applicable one), run, and read the same table and curves as
//! the CLI's (per label: positives / negatives, AUROC with its 95% bootstrap interval, sensitivity /
//! specificity / PPV at the manifest threshold, the threshold for the target sensitivity; FROC and
//! CPM for CT detectors; PSNR and SSIM before and after for CT denoisers).
//!
//! The model list is scanned on `lucent-eval-models` and the evaluation runs on `lucent-eval`
//! ([`crate::eval_cli::evaluate`], with progress and cancel); both answer on bounded channels and
//! wake the UI, which never waits.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::Receiver;
use egui::{Color32, Pos2, Rect, Stroke, Vec2};

use super::i18n::Lang;
use crate::eval_cli::{EvalOptions, EvalProgress, EvalReport, ModelEval};

/// A model offered in the combo box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelChoice {
    pub id: String,
    pub label: String,
    pub test_only: bool,
}

struct EvalJob {
    progress: Arc<Mutex<EvalProgress>>,
    cancel: Arc<AtomicBool>,
    done: Receiver<Result<EvalReport, String>>,
}

/// The window's state.
pub struct EvalPanel {
    pub open: bool,
    /// The labelled folder, as typed or picked.
    pub data_dir: String,
    /// `None`: every applicable model.
    pub model: Option<String>,
    pub include_test_models: bool,
    pub target_sensitivity: f64,
    models: Option<Vec<ModelChoice>>,
    models_job: Option<Receiver<Vec<ModelChoice>>>,
    dialog: Option<Receiver<Vec<PathBuf>>>,
    job: Option<EvalJob>,
    report: Option<EvalReport>,
    error: Option<String>,
    repaint: Arc<dyn Fn() + Send + Sync>,
}

impl EvalPanel {
    pub fn new(repaint: Arc<dyn Fn() + Send + Sync>) -> Self {
        Self {
            open: false,
            data_dir: String::new(),
            model: None,
            include_test_models: false,
            target_sensitivity: 0.9,
            models: None,
            models_job: None,
            dialog: None,
            job: None,
            report: None,
            error: None,
            repaint,
        }
    }

    /// The last evaluation's result.
    pub fn report(&self) -> Option<&EvalReport> {
        self.report.as_ref()
    }

    /// The last evaluation's error.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    pub fn running(&self) -> bool {
        self.job.is_some()
    }

    /// Starts the evaluation of the chosen folder on `lucent-eval`.
    pub fn start(&mut self) {
        if self.job.is_some() {
            return;
        }
        let data = PathBuf::from(self.data_dir.trim());
        if self.data_dir.trim().is_empty() {
            self.error = Some("Choose a labelled folder first".into());
            return;
        }
        let options = EvalOptions {
            model: self.model.clone(),
            target_sensitivity: self.target_sensitivity,
            include_test_models: self.include_test_models,
            ..EvalOptions::new(data)
        };
        let progress = Arc::new(Mutex::new(EvalProgress::default()));
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, done) = crossbeam_channel::bounded(1);
        let (p, c, repaint) = (progress.clone(), cancel.clone(), self.repaint.clone());
        let spawned = std::thread::Builder::new().name("lucent-eval".into()).spawn(move || {
            let on_progress = |state: EvalProgress| {
                if let Ok(mut slot) = p.lock() {
                    *slot = state;
                }
                repaint();
            };
            let result = crate::eval_cli::evaluate(&options, &on_progress, &c).map_err(|e| format!("{e:#}"));
            let _ = tx.send(result);
            repaint();
        });
        match spawned {
            Ok(_) => {
                self.error = None;
                self.job = Some(EvalJob { progress, cancel, done });
            }
            Err(e) => self.error = Some(format!("cannot start the evaluation: {e}")),
        }
    }

    pub fn cancel(&self) {
        if let Some(job) = &self.job {
            job.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// Collects finished jobs; cheap, called every frame.
    pub fn poll(&mut self) {
        if let Some(job) = &self.job
            && let Ok(result) = job.done.try_recv()
        {
            match result {
                Ok(report) => self.report = Some(report),
                Err(e) => self.error = Some(e),
            }
            self.job = None;
        }
        if let Some(rx) = &self.models_job
            && let Ok(models) = rx.try_recv()
        {
            self.models = Some(models);
            self.models_job = None;
        }
        if let Some(rx) = &self.dialog
            && let Ok(paths) = rx.try_recv()
        {
            if let Some(p) = paths.into_iter().next() {
                self.data_dir = p.display().to_string();
            }
            self.dialog = None;
        }
    }

    /// Scans the model folders once, on `lucent-eval-models`.
    fn ensure_models(&mut self) {
        if self.models.is_some() || self.models_job.is_some() {
            return;
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let repaint = self.repaint.clone();
        let spawned = std::thread::Builder::new().name("lucent-eval-models".into()).spawn(move || {
            let registry = crate::ai::scan_registry();
            let models: Vec<ModelChoice> = registry
                .ready()
                .filter_map(|e| e.manifest.clone())
                .filter(|m| {
                    matches!(
                        m.preprocessing.kind,
                        inference::manifest::PreprocessingKind::Cxr | inference::manifest::PreprocessingKind::CtVolume
                    )
                })
                .map(|m| ModelChoice {
                    id: m.id.clone(),
                    label: format!("{} {}", m.id, m.version),
                    test_only: m.test_only,
                })
                .collect();
            let _ = tx.send(models);
            repaint();
        });
        match spawned {
            Ok(_) => self.models_job = Some(rx),
            Err(_) => self.models = Some(Vec::new()),
        }
    }

    fn progress(&self) -> Option<EvalProgress> {
        self.job.as_ref().map(|j| j.progress.lock().map(|p| *p).unwrap_or_default())
    }
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
}

fn colour(k: usize) -> Color32 {
    let [r, g, b] = crate::eval_plot::colour(k);
    Color32::from_rgb(r, g, b)
}

/// The evaluation window.
pub fn eval_window_ui(ctx: &egui::Context, p: &mut EvalPanel, lang: Lang) {
    p.poll();
    if !p.open {
        return;
    }
    p.ensure_models();
    let mut open = p.open;
    egui::Window::new(lang.tr("Model evaluation")).open(&mut open).default_size([820.0, 620.0]).resizable(true).show(
        ctx,
        |ui| {
            ui.horizontal(|ui| {
                let label = ui.label(lang.tr("Labelled folder"));
                ui.add(egui::TextEdit::singleline(&mut p.data_dir).desired_width(380.0)).labelled_by(label.id);
                if ui.add_enabled(p.dialog.is_none(), egui::Button::new(lang.tr("Choose…"))).clicked() {
                    p.dialog = super::jobs::pick(super::jobs::Dialog::DataFolder, p.repaint.clone()).ok();
                }
            });
            ui.horizontal(|ui| {
                let all = lang.tr("All applicable models");
                let selected = p.model.clone().unwrap_or_else(|| all.to_owned());
                egui::ComboBox::from_label(lang.tr("Model")).selected_text(selected).show_ui(ui, |ui| {
                    ui.selectable_value(&mut p.model, None, all);
                    for m in p.models.iter().flatten().filter(|m| !m.test_only || p.include_test_models) {
                        ui.selectable_value(&mut p.model, Some(m.id.clone()), &m.label);
                    }
                });
                ui.checkbox(&mut p.include_test_models, lang.tr("Test models"));
                let label = ui.label(lang.tr("Target sensitivity"));
                ui.add(egui::DragValue::new(&mut p.target_sensitivity).range(0.0..=1.0).speed(0.01).fixed_decimals(2))
                    .labelled_by(label.id);
            });
            ui.horizontal(|ui| {
                if p.running() {
                    let prog = p.progress().unwrap_or_default();
                    let fraction = if prog.total == 0 { 0.0 } else { prog.done as f32 / prog.total as f32 };
                    ui.add(egui::ProgressBar::new(fraction).desired_width(240.0).text(format!(
                        "{} {}/{}",
                        lang.tr("Evaluating…"),
                        prog.done,
                        prog.total
                    )));
                    if ui.button(lang.tr("Cancel")).clicked() {
                        p.cancel();
                    }
                } else if ui.button(lang.tr("Evaluate")).clicked() {
                    p.start();
                }
            });
            if let Some(e) = &p.error {
                ui.colored_label(ui.visuals().warn_fg_color, e);
            }
            ui.separator();
            let Some(report) = &p.report else { return };
            egui::ScrollArea::vertical().auto_shrink([false, false]).show(ui, |ui| {
                for (m_index, model) in report.models.iter().enumerate() {
                    model_ui(ui, m_index, model, report, lang);
                    ui.separator();
                }
                for note in &report.notes {
                    ui.weak(note);
                }
                ui.weak(report.disclaimer);
            });
        },
    );
    p.open = open;
}

fn model_ui(ui: &mut egui::Ui, m_index: usize, model: &ModelEval, report: &EvalReport, lang: Lang) {
    let unit = match model.task.as_str() {
        "cxr" => lang.tr("images"),
        "ct_denoise" => lang.tr("pairs"),
        _ => lang.tr("scans"),
    };
    ui.strong(format!("{} {} — {} ({} {unit})", model.model_id, model.model_version, report.data, model.cases));
    if let Some(d) = &model.denoise {
        denoise_ui(ui, m_index, d, lang);
        if !model.skipped.is_empty() {
            ui.label(format!("{} {}", model.skipped.len(), lang.tr("skipped")));
        }
        return;
    }
    {
        {
            egui::Grid::new(("eval-grid", m_index)).striped(true).num_columns(9).show(ui, |ui| {
                for h in [
                    lang.tr("Label"),
                    lang.tr("Reference"),
                    lang.tr("Positives / negatives"),
                    "AUROC (95% CI)",
                    lang.tr("Threshold"),
                    lang.tr("Sensitivity"),
                    lang.tr("Specificity"),
                    lang.tr("PPV"),
                ] {
                    ui.strong(h);
                }
                ui.strong(format!("{} {:.2}", lang.tr("Threshold at sensitivity"), report.target_sensitivity));
                ui.end_row();
                for l in &model.labels {
                    let m = &l.metrics;
                    ui.horizontal(|ui| {
                        let (rect, _) = ui.allocate_exact_size(Vec2::splat(10.0), egui::Sense::hover());
                        ui.painter().rect_filled(rect, 2.0, colour(l.index));
                        ui.label(&l.label);
                    });
                    ui.label(&l.reference);
                    ui.label(format!("{}/{}", m.positives, m.negatives));
                    ui.label(crate::eval_cli::auroc_text(m));
                    ui.label(format!("{:.3}", m.threshold));
                    ui.label(fmt(m.sensitivity, 2));
                    ui.label(fmt(m.specificity, 2));
                    ui.label(fmt(m.ppv, 2));
                    ui.label(crate::eval_cli::target_text(m));
                    ui.end_row();
                }
            });
            if !model.not_labelled.is_empty() {
                ui.label(format!("{}: {}", lang.tr("Not labelled"), model.not_labelled.join(", ")));
            }
            if !model.skipped.is_empty() {
                ui.label(format!("{} {}", model.skipped.len(), lang.tr("skipped")));
            }
            if let Some(f) = &model.froc {
                let at: Vec<String> = f.at_fp_rates.iter().map(|(r, s)| format!("{r}: {s:.2}")).collect();
                ui.label(format!(
                    "FROC: {} / {} {}; {} {}; CPM {}",
                    f.lesions,
                    f.scans,
                    lang.tr("scans"),
                    lang.tr("Sensitivity at FPs per scan"),
                    at.join(", "),
                    fmt(f.cpm, 3)
                ));
            }
        }
    }
    ui.horizontal(|ui| {
        roc_plot(ui, model, lang);
        if model.froc.is_some() {
            froc_plot(ui, model, lang);
        }
    });
}

/// A denoiser's image quality: the low-dose input and the output against the reference.
fn denoise_ui(ui: &mut egui::Ui, m_index: usize, d: &crate::eval_cli::DenoiseEval, lang: Lang) {
    ui.label(format!("{} {}, HU [{}, {}]", d.slices, lang.tr("slices"), d.window.min_hu, d.window.max_hu));
    egui::Grid::new(("denoise-grid", m_index)).striped(true).num_columns(3).show(ui, |ui| {
        for h in ["", "PSNR dB", "SSIM"] {
            ui.strong(h);
        }
        ui.end_row();
        for (name, q) in [(lang.tr("Low-dose input"), d.input), (lang.tr("Denoised"), d.output)] {
            ui.label(name);
            ui.label(format!("{:.2}", q.psnr_db));
            ui.label(format!("{:.3}", q.ssim));
            ui.end_row();
        }
    });
}

/// Draws axes in `rect`; returns the data-to-screen mapping for x in `x_range`, y in [0, 1].
fn axes(ui: &egui::Ui, rect: Rect, x_label: &str, y_label: &str) -> Rect {
    let painter = ui.painter_at(rect);
    let plot = Rect::from_min_max(rect.min + Vec2::new(34.0, 22.0), rect.max - Vec2::new(8.0, 30.0));
    painter.rect_filled(plot, 0.0, ui.visuals().extreme_bg_color);
    let grid = Stroke::new(1.0, ui.visuals().faint_bg_color.gamma_multiply(2.0));
    let text = ui.visuals().weak_text_color();
    for i in 0..=4 {
        let f = i as f32 / 4.0;
        let x = plot.left() + f * plot.width();
        let y = plot.bottom() - f * plot.height();
        painter.line_segment([Pos2::new(x, plot.top()), Pos2::new(x, plot.bottom())], grid);
        painter.line_segment([Pos2::new(plot.left(), y), Pos2::new(plot.right(), y)], grid);
        painter.text(
            Pos2::new(plot.left() - 4.0, y),
            egui::Align2::RIGHT_CENTER,
            format!("{f:.2}"),
            egui::FontId::proportional(10.0),
            text,
        );
    }
    painter.text(
        Pos2::new(plot.center().x, rect.bottom() - 2.0),
        egui::Align2::CENTER_BOTTOM,
        x_label,
        egui::FontId::proportional(11.0),
        text,
    );
    painter.text(
        Pos2::new(plot.left(), plot.top() - 8.0),
        egui::Align2::LEFT_BOTTOM,
        y_label,
        egui::FontId::proportional(11.0),
        text,
    );
    painter.rect_stroke(plot, 0.0, Stroke::new(1.0, text), egui::StrokeKind::Inside);
    plot
}

fn roc_plot(ui: &mut egui::Ui, model: &ModelEval, lang: Lang) {
    let (rect, response) = ui.allocate_exact_size(Vec2::splat(300.0), egui::Sense::hover());
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, lang.tr("ROC curves")));
    let plot = axes(ui, rect, "1 - specificity", "sensitivity");
    let to_screen =
        |x: f64, y: f64| Pos2::new(plot.left() + x as f32 * plot.width(), plot.bottom() - y as f32 * plot.height());
    let painter = ui.painter_at(rect);
    painter.line_segment([to_screen(0.0, 0.0), to_screen(1.0, 1.0)], Stroke::new(1.0, Color32::GRAY));
    for l in &model.labels {
        let Some(roc) = &l.metrics.roc else { continue };
        let k = l.index;
        let points: Vec<Pos2> = roc.iter().map(|p| to_screen(p.fpr, p.tpr)).collect();
        painter.add(egui::Shape::line(points, Stroke::new(2.0, colour(k))));
        if let (Some(sens), Some(spec)) = (l.metrics.sensitivity, l.metrics.specificity) {
            painter.circle_filled(to_screen(1.0 - spec, sens), 3.5, colour(k));
        }
    }
}

fn froc_plot(ui: &mut egui::Ui, model: &ModelEval, lang: Lang) {
    let Some(froc) = &model.froc else { return };
    let (rect, response) = ui.allocate_exact_size(Vec2::splat(300.0), egui::Sense::hover());
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, lang.tr("FROC curve")));
    let plot = axes(ui, rect, "FPs per scan (1/8 … 8, log)", "sensitivity");
    // x: log2 of FPs per scan over [-4, 4].
    let to_screen = |fps: f64, y: f64| {
        let x = (fps.max(1.0 / 16.0).log2().clamp(-4.0, 4.0) + 4.0) / 8.0;
        Pos2::new(plot.left() + x as f32 * plot.width(), plot.bottom() - y as f32 * plot.height())
    };
    let painter = ui.painter_at(rect);
    let mut points = vec![to_screen(0.0, 0.0)];
    for p in &froc.curve {
        if let Some(last) = points.last().copied() {
            points.push(Pos2::new(to_screen(p.fps_per_scan, 0.0).x, last.y));
        }
        points.push(to_screen(p.fps_per_scan, p.sensitivity));
    }
    if let Some(last) = points.last().copied() {
        points.push(Pos2::new(plot.right(), last.y));
    }
    painter.add(egui::Shape::line(points, Stroke::new(2.0, colour(0))));
    for &(r, s) in &froc.at_fp_rates {
        painter.circle_filled(to_screen(r, s), 3.5, colour(0));
    }
}
