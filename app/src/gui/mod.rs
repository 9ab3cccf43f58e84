//! The workstation window (eframe + wgpu): study browser, 1x1 to 2x2 viewports, reading tools.
//!
//! The UI thread never waits on I/O: store queries run on `lucent-store`, series loading on
//! `lucent-loader` (+ `lucent-slices-N`), thumbnails on `lucent-thumbs`, demo set-up on
//! `lucent-demo`. They answer through bounded channels and wake the UI with a repaint request.

pub mod ai_panel;
pub mod bridge;
pub mod browser;
pub mod denoise_view;
pub mod eval_panel;
pub mod hanging;
pub mod i18n;
pub mod jobs;
pub mod loader;
pub mod measure;
pub mod mpr;
pub mod pacs_panel;
pub mod report_panel;
pub mod settings;
pub mod viewport;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use crossbeam_channel::Receiver;
use egui::{Key, Rect, Vec2};

use crate::cli::Cli;
use browser::{Browser, StoreReply, StoreRequest, StoreWorker};
use i18n::Lang;
use loader::{LoadRequest, Loader, LoaderEvent, Thumbnailer};
use measure::{Measurements, Tool};
use mpr::{MprRequest, MprSpec, MprWorker, Plane, SlabMode};
use viewport::{Viewport, ViewportContext, presets_for, viewport_ui};

/// Opens the workstation window.
pub fn run(cli: Cli) -> Result<()> {
    let demo = cli.demo;
    let store_dir = if demo { crate::config::demo_store_dir() } else { crate::config::store_dir(cli.store) };
    // Ask for the adapter's real limits (textures larger than the defaults, e.g. big radiographs).
    let mut setup = egui_wgpu::WgpuSetupCreateNew::without_display_handle();
    setup.device_descriptor = Arc::new(|adapter| wgpu::DeviceDescriptor {
        label: Some("lucent device"),
        required_limits: adapter.limits(),
        ..Default::default()
    });
    let options = eframe::NativeOptions {
        renderer: eframe::Renderer::Wgpu,
        wgpu_options: egui_wgpu::WgpuConfiguration {
            wgpu_setup: egui_wgpu::WgpuSetup::CreateNew(setup),
            ..Default::default()
        },
        viewport: egui::ViewportBuilder::default()
            .with_inner_size([1600.0, 1000.0])
            .with_min_inner_size([800.0, 500.0])
            .with_title("Lucent"),
        ..Default::default()
    };
    eframe::run_native("Lucent", options, Box::new(move |cc| Ok(Box::new(LucentApp::new(cc, store_dir, demo)?))))
        .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}

/// The files of a series, once each (multi-frame files hold several slices).
fn series_files(series: &loader::SeriesData) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = series.plan.slices.iter().map(|s| s.path.clone()).collect();
    files.dedup();
    files
}

/// Keyboard actions of the active viewport, with rebindable keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Action {
    PreviousImage,
    NextImage,
    FirstImage,
    LastImage,
    PreviousSeries,
    NextSeries,
    Cine,
    Reset,
    Invert,
    FlipHorizontal,
    FlipVertical,
    Rotate,
    Fullscreen,
    Cancel,
}

/// Key bindings (OHIF/Weasis defaults); presets are on 1-9.
#[derive(Debug, Clone)]
pub struct KeyBindings(pub Vec<(Action, Key)>);

impl Default for KeyBindings {
    fn default() -> Self {
        use Action::*;
        Self(vec![
            (PreviousImage, Key::ArrowUp),
            (NextImage, Key::ArrowDown),
            (FirstImage, Key::Home),
            (LastImage, Key::End),
            (PreviousSeries, Key::PageUp),
            (NextSeries, Key::PageDown),
            (Cine, Key::C),
            (Reset, Key::Space),
            (Invert, Key::I),
            (FlipHorizontal, Key::H),
            (FlipVertical, Key::V),
            (Rotate, Key::R),
            (Fullscreen, Key::F),
            (Cancel, Key::Escape),
        ])
    }
}

/// The application state.
pub struct LucentApp {
    pub lang: Lang,
    pub browser: Browser,
    pub viewports: Vec<Viewport>,
    pub active: usize,
    /// (rows, columns)
    pub layout: (usize, usize),
    pub fullscreen: Option<usize>,
    pub keys: KeyBindings,
    pub status: String,
    demo: bool,
    store: StoreWorker,
    loader: Loader,
    thumbs: Thumbnailer,
    demo_ready: Option<Receiver<Result<PathBuf, String>>>,
    auto_open: bool,
    /// Studies whose first series should open in a viewport once their series list arrives.
    pending_first_series: Vec<(String, usize)>,
    first_series_lists: Vec<(String, Vec<pacs::store::SeriesRow>)>,
    mpr: MprWorker,
    /// The linked crosshair: (series load id, voxel).
    pub crosshair: Option<(u64, [usize; 3])>,
    pub tool: Tool,
    /// Scroll series of the same frame of reference together.
    pub sync_scroll: bool,
    pub protocols: hanging::HangingProtocols,
    store_dir: PathBuf,
    pub ai: ai_panel::AiState,
    ai_worker: ai_panel::AiWorker,
    pub denoise: denoise_view::DenoiseView,
    pub settings: settings::Settings,
    settings_window: settings::SettingsWindow,
    repaint: Arc<dyn Fn() + Send + Sync>,
    dialog: Option<Receiver<Vec<PathBuf>>>,
    import: Option<jobs::ImportJob>,
    /// A de-identified export in progress (`lucent anonymize` on a study, on its own thread).
    anonymize: Option<Receiver<Result<crate::anonymize::AnonymizeSummary, String>>>,
    /// Windows to apply when series open, by viewport (from a hanging protocol).
    pending_windows: std::collections::HashMap<usize, pacs::Window>,
    /// Measurements per study UID (loaded from the store when a study is first shown).
    pub measurements: std::collections::HashMap<String, Measurements>,
    pub pacs: pacs_panel::PacsPanel,
    pub reports: report_panel::ReportPanel,
    /// The *Model evaluation* window (`lucent eval` for a QA lead).
    pub eval: eval_panel::EvalPanel,
}

impl LucentApp {
    pub fn new(cc: &eframe::CreationContext<'_>, store_dir: PathBuf, demo: bool) -> Result<Self> {
        i18n::install_fonts(&cc.egui_ctx);
        if let Some(render_state) = cc.wgpu_render_state.as_ref() {
            bridge::register(render_state);
        }
        let ctx = cc.egui_ctx.clone();
        let repaint: Arc<dyn Fn() + Send + Sync> = Arc::new(move || ctx.request_repaint());
        let store = StoreWorker::start(store_dir.clone(), repaint.clone())?;
        let loader = Loader::start(repaint.clone())?;
        let thumbs = Thumbnailer::start(repaint.clone())?;
        let mpr = MprWorker::start(repaint.clone())?;
        let ai_worker = ai_panel::AiWorker::start(store_dir.clone(), repaint.clone())?;
        let denoise = denoise_view::DenoiseView::start(repaint.clone())?;
        let reports = report_panel::ReportPanel::new(store_dir.clone(), &crate::config::data_dir(), repaint.clone())?;
        let (pacs, pacs_warning) =
            pacs_panel::PacsPanel::new(&crate::config::data_dir(), store_dir.clone(), repaint.clone());
        let mut app = Self {
            lang: Lang::En,
            browser: Browser { dirty: true, ..Default::default() },
            viewports: (0..4).map(|i| Viewport::new(i as u64 + 1)).collect(),
            active: 0,
            layout: (1, 2),
            fullscreen: None,
            keys: KeyBindings::default(),
            status: String::new(),
            demo,
            store,
            loader,
            thumbs,
            demo_ready: None,
            auto_open: demo,
            pending_first_series: Vec::new(),
            first_series_lists: Vec::new(),
            mpr,
            crosshair: None,
            tool: Tool::WindowLevel,
            sync_scroll: true,
            protocols: hanging::HangingProtocols::defaults(),
            store_dir: store_dir.clone(),
            ai: ai_panel::AiState::default(),
            ai_worker,
            denoise,
            settings: settings::Settings::default(),
            settings_window: settings::SettingsWindow::default(),
            repaint: repaint.clone(),
            dialog: None,
            import: None,
            anonymize: None,
            pending_windows: std::collections::HashMap::new(),
            measurements: std::collections::HashMap::new(),
            pacs,
            reports,
            eval: eval_panel::EvalPanel::new(repaint.clone()),
        };
        if let Some(w) = pacs_warning {
            app.status = w;
        }
        match settings::Settings::load(&settings::Settings::path(&crate::config::data_dir())) {
            Ok(s) => {
                app.keys = s.key_bindings();
                app.settings = s;
            }
            Err(e) => app.status = format!("Using default settings: {e}"),
        }
        match hanging::HangingProtocols::load_or_create(&hanging::HangingProtocols::user_path(
            &crate::config::data_dir(),
        )) {
            Ok(p) => app.protocols = p,
            Err(e) => app.status = format!("Using the built-in hanging protocols: {e}"),
        }
        if demo {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let dir = store_dir.clone();
            let repaint = repaint.clone();
            std::thread::Builder::new().name("lucent-demo".into()).spawn(move || {
                let result = crate::demo::ensure_demo_store(&dir, &|_| {}).map_err(|e| format!("{e:#}"));
                let _ = tx.send(result);
                repaint();
            })?;
            app.demo_ready = Some(rx);
            app.status = "Preparing the demo studies…".into();
            app.browser.dirty = false;
        }
        Ok(app)
    }

    /// Asks for `series_uid` to be opened in `viewport`.
    pub fn request_open(&mut self, series_uid: String, viewport: usize) {
        self.store.send(StoreRequest::Open { series_uid, viewport });
    }

    /// Imports files or folders into the store on a worker thread.
    pub fn start_import(&mut self, paths: Vec<PathBuf>) {
        if paths.is_empty() || self.import.is_some() {
            return;
        }
        match jobs::ImportJob::start(self.store_dir.clone(), paths, self.repaint.clone()) {
            Ok(job) => self.import = Some(job),
            Err(e) => self.status = format!("Cannot start the import: {e}"),
        }
    }

    fn poll_jobs(&mut self, ctx: &egui::Context) {
        if let Some(rx) = &self.dialog
            && let Ok(paths) = rx.try_recv()
        {
            self.dialog = None;
            self.start_import(paths);
        }
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw.dropped_files.iter().map(|f| f.path().to_path_buf()).filter(|p| !p.as_os_str().is_empty()).collect()
        });
        self.start_import(dropped);
        if let Some(done) = &self.anonymize
            && let Ok(result) = done.try_recv()
        {
            self.anonymize = None;
            self.status = match result {
                Ok(s) => format!(
                    "Anonymised copy: {} file(s) in {}; {} left out for burned-in annotation; {} skipped",
                    s.written.len(),
                    s.written
                        .first()
                        .and_then(|w| w.output.ancestors().nth(3))
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    s.excluded_burned_in.len(),
                    s.skipped.len()
                ),
                Err(e) => format!("Anonymised export failed: {e}"),
            };
        }
        if let Some(job) = &self.import
            && let Ok(result) = job.done.try_recv()
        {
            self.import = None;
            self.status = match result {
                Ok(s) => format!(
                    "Imported {} instance(s); {} already in the store; {} skipped{}{}",
                    s.imported,
                    s.duplicates,
                    s.skipped.len(),
                    if s.conflicts.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; {} kept aside as conflicts (same instance with other content, or a study of another patient): see lucent verify",
                            s.conflicts.len()
                        )
                    },
                    if s.cancelled { " (cancelled)" } else { "" }
                ),
                Err(e) => format!("Import failed: {e}"),
            };
            self.browser.dirty = true;
        }
    }

    /// Opens the report window on the active viewport's study (its files in the store and the AI
    /// readings of its series).
    pub fn open_report(&mut self) {
        self.reports.open = true;
        let Some(series) = self.viewports.get(self.active).and_then(|v| v.series.clone()) else {
            self.status = "Open a study first: the report is drafted from the study on screen".into();
            return;
        };
        let Some(slice) = series.any_slice() else { return };
        let study_uid = slice.info.study_instance_uid.clone();
        if self.reports.study_uid() == Some(study_uid.as_str()) {
            return;
        }
        // Store layout: files/<study>/<series>/<instance>.dcm.
        let Some(study_dir) = series.plan.slices.first().and_then(|s| s.path.parent()).and_then(|p| p.parent()) else {
            return;
        };
        let readings: Vec<crate::ai::SeriesReading> = self.ai.readings.values().cloned().collect();
        self.reports.open_study(&study_uid, study_dir.to_path_buf(), readings, self.lang);
    }

    /// Shows an image a report sentence or finding refers to: in the viewport that has its series,
    /// else opens the series in the active viewport.
    fn show_image(&mut self, series_uid: &str, sop_uid: &str) {
        for vp in &mut self.viewports {
            let Some(series) = vp.series.clone() else { continue };
            if series.series_uid != series_uid {
                continue;
            }
            if let Some(k) = series.plan.slices.iter().position(|s| s.sop_instance_uid == sop_uid) {
                vp.mpr = None;
                vp.set_slice(k);
            }
            return;
        }
        self.request_open(series_uid.to_owned(), self.active);
    }

    /// Opens a whole study laid out by the first hanging protocol that fits.
    /// Writes a de-identified copy of a study (PS3.15 Annex E Basic Profile, dates kept shifted
    /// per patient, images with burned-in annotation left out) to `exports/anonymised/` in the
    /// data folder, on a worker thread; the status bar says where and what was left out.
    pub fn export_anonymised(&mut self, study_uid: String) {
        if self.anonymize.is_some() {
            self.status = "An anonymised export is already running".into();
            return;
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let (store_dir, repaint) = (self.store_dir.clone(), self.repaint.clone());
        let out = crate::config::data_dir().join("exports").join("anonymised").join(format!(
            "{}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
        ));
        let spawned = std::thread::Builder::new().name("lucent-anonymize".into()).spawn(move || {
            let result = (|| -> anyhow::Result<crate::anonymize::AnonymizeSummary> {
                let store = pacs::store::Store::open_reader(&store_dir)?;
                let mut files = Vec::new();
                for series in store.series(&study_uid)? {
                    files.extend(store.series_paths(&series.series_uid)?);
                }
                crate::anonymize::anonymize_paths(&files, &out, None, pacs::deid::DateShift::PerPatient, false)
            })();
            let _ = tx.send(result.map_err(|e| format!("{e:#}")));
            repaint();
        });
        match spawned {
            Ok(_) => {
                self.anonymize = Some(rx);
                self.status = "Writing an anonymised copy of the study…".into();
            }
            Err(e) => self.status = format!("Cannot start the anonymised export: {e}"),
        }
    }

    pub fn open_study(&mut self, study_uid: String) {
        if let Some(row) = self.browser.studies.iter().find(|s| s.study_uid == study_uid) {
            self.pacs.prefetch_priors(row);
        }
        self.store.send(StoreRequest::Hang(study_uid));
    }

    fn apply_hanging(&mut self, ctx: &hanging::HangingContext) {
        let Some((protocol, placements)) = self.protocols.choose(ctx) else {
            // No protocol fits: the first series in the active viewport.
            if let Some(first) = ctx.series.first() {
                self.request_open(first.series_uid.clone(), self.active);
            }
            return;
        };
        self.status = format!("Hanging protocol: {}", protocol.name);
        self.layout = (protocol.layout[0].clamp(1, 2), protocol.layout[1].clamp(1, 2));
        self.fullscreen = None;
        self.active = 0;
        for p in placements {
            if p.viewport >= self.viewports.len() {
                continue;
            }
            match p.window {
                Some(w) => self.pending_windows.insert(p.viewport, pacs::Window::new(w.center, w.width)),
                None => self.pending_windows.remove(&p.viewport),
            };
            self.request_open(p.series_uid, p.viewport);
        }
    }

    fn poll_workers(&mut self, ctx: &egui::Context) {
        if let Some(rx) = &self.demo_ready
            && let Ok(result) = rx.try_recv()
        {
            self.demo_ready = None;
            match result {
                Ok(dir) => {
                    self.store.send(StoreRequest::Reopen(dir));
                    self.browser.dirty = true;
                    self.status = "Demo studies ready".into();
                }
                Err(e) => self.status = format!("Demo set-up failed: {e}"),
            }
        }
        while let Ok(reply) = self.store.replies.try_recv() {
            match reply {
                StoreReply::Studies(studies, conflicts) => {
                    self.browser.conflicts = conflicts;
                    if self.auto_open {
                        self.auto_open_demo(&studies);
                    }
                    if self.browser.selected_study.is_none()
                        && let Some(first) = studies.first()
                    {
                        self.browser.selected_study = Some(first.study_uid.clone());
                        self.store.send(StoreRequest::Series(first.study_uid.clone()));
                    }
                    self.browser.studies = studies;
                }
                StoreReply::Series { study_uid, series, first_paths } => {
                    if self.pending_first_series.iter().any(|(s, _)| *s == study_uid) {
                        self.first_series_lists.push((study_uid.clone(), series.clone()));
                    }
                    if self.browser.selected_study.as_deref() == Some(study_uid.as_str()) {
                        self.browser.series = series;
                        self.browser.request_thumbnails(first_paths, &self.thumbs);
                    }
                }
                StoreReply::Hang(ctx) => self.apply_hanging(&ctx),
                StoreReply::Open { series_uid, viewport, paths } => {
                    let window = self.pending_windows.remove(&viewport);
                    if let Err(e) = self.loader.request(LoadRequest { series_uid, paths, viewport, window }) {
                        self.status = e;
                    }
                }
                StoreReply::Measurements { study_uid, items } => {
                    self.measurements.insert(study_uid.clone(), Measurements::load(study_uid, items));
                }
                StoreReply::Done => {}
                StoreReply::Error(e) => self.status = e,
            }
        }
        while let Ok(event) = self.loader.events.try_recv() {
            match event {
                LoaderEvent::Opened { viewport, series, window } => {
                    if self.ai.auto_run {
                        self.ai.request(&self.ai_worker, &series.series_uid, series_files(&series), false);
                    }
                    if let Some(vp) = self.viewports.get_mut(viewport) {
                        vp.set_series(series);
                        vp.window = window;
                    }
                }
                LoaderEvent::Failed { message, .. } => self.status = format!("Cannot open the series: {message}"),
            }
        }
        while let Ok((viewport, image)) = self.mpr.done.try_recv() {
            if let Some(vp) = self.viewports.get_mut(viewport) {
                vp.mpr_image = Some(image);
            }
        }
        self.denoise.poll();
        while let Ok(event) = self.ai_worker.events.try_recv() {
            if matches!(&event, ai_panel::AiEvent::Done(r) if !r.derived_series.is_empty()) {
                // A derived series (denoised CT) was added to the store: show it in the browser.
                self.browser.dirty = true;
                if let Some(study) = self.browser.selected_study.clone() {
                    self.store.send(StoreRequest::Series(study));
                }
            }
            self.ai.handle(event);
        }
        while let Ok(thumb) = self.thumbs.done.try_recv() {
            let texture = thumb
                .image
                .map(|img| ctx.load_texture(format!("thumb-{}", thumb.series_uid), img, egui::TextureOptions::LINEAR));
            self.browser.thumbnails.insert(thumb.series_uid, texture);
        }
    }

    /// Demo: a low-dose CT beside a chest radiograph, ready to read.
    fn auto_open_demo(&mut self, studies: &[pacs::store::StudyRow]) {
        if studies.is_empty() {
            return;
        }
        self.auto_open = false;
        // Real anatomy first: the real CT and the real effusion radiograph when the demo has them.
        let ct = studies
            .iter()
            .find(|s| s.patient_id == crate::demo::DEMO_OPENS_CT)
            .or_else(|| studies.iter().find(|s| s.modalities.contains("CT")));
        let cr = studies.iter().find(|s| s.patient_id == crate::demo::DEMO_OPENS_RADIOGRAPH).or_else(|| {
            studies.iter().find(|s| {
                s.modalities.contains("CR") && s.description.contains("CXR PA") && !s.description.contains("prior")
            })
        });
        for (viewport, study) in [(0, ct), (1, cr)] {
            if let Some(study) = study {
                self.store.send(StoreRequest::Series(study.study_uid.clone()));
                self.pending_first_series.push((study.study_uid.clone(), viewport));
            }
        }
    }

    /// Opens the first series of studies queued by [`Self::auto_open_demo`].
    fn open_pending_first_series(&mut self) {
        for (study_uid, series) in std::mem::take(&mut self.first_series_lists) {
            let Some(pos) = self.pending_first_series.iter().position(|(s, _)| *s == study_uid) else { continue };
            let (_, viewport) = self.pending_first_series.remove(pos);
            if let Some(first) = series.first() {
                self.request_open(first.series_uid.clone(), viewport);
            }
        }
    }

    /// The active viewport's native slice plane: (frame of reference, position, normal).
    fn active_position(&self) -> Option<(String, [f64; 3], [f64; 3])> {
        let vp = self.viewports.get(self.active)?;
        if vp.mpr.is_some() {
            return None;
        }
        let slice = vp.current_slice()?;
        let (origin, row, col, _) = viewport::slice_plane(&slice)?;
        let normal =
            [row[1] * col[2] - row[2] * col[1], row[2] * col[0] - row[0] * col[2], row[0] * col[1] - row[1] * col[0]];
        Some((slice.info.frame_of_reference_uid.clone(), origin, normal))
    }

    /// Moves other stacks of the same frame of reference to the slice nearest the active one.
    fn sync_to_active(&mut self) {
        let Some((frame_of_reference, point, _)) = self.active_position() else { return };
        let active_series = self.viewports[self.active].series.as_ref().map(|s| s.id);
        for (i, vp) in self.viewports.iter_mut().enumerate() {
            let Some(series) = vp.series.clone() else { continue };
            if i == self.active || vp.mpr.is_some() || Some(series.id) == active_series || series.len() < 2 {
                continue;
            }
            let first = series.plan.slices[0].info();
            if frame_of_reference.is_empty() || first.frame_of_reference_uid != frame_of_reference {
                continue;
            }
            let Some(o) = first.image_orientation_patient else { continue };
            let n = [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]];
            let target = point[0] * n[0] + point[1] * n[1] + point[2] * n[2];
            let nearest = series
                .plan
                .slice_positions_mm
                .iter()
                .enumerate()
                .min_by(|a, b| (a.1 - target).abs().total_cmp(&(b.1 - target).abs()))
                .map(|(k, _)| k);
            if let Some(k) = nearest {
                vp.set_slice(k);
            }
        }
    }

    /// Loads the measurements of studies on screen and saves changed ones.
    fn sync_measurements(&mut self) {
        for vp in &self.viewports {
            if let Some(slice) = vp.series.as_ref().and_then(|s| s.any_slice()) {
                let study = slice.info.study_instance_uid.clone();
                if !self.measurements.contains_key(&study) {
                    self.measurements.insert(study.clone(), Measurements::load(study.clone(), Vec::new()));
                    self.store.send(StoreRequest::LoadMeasurements(study));
                }
            }
        }
        for ms in self.measurements.values_mut() {
            if ms.dirty {
                ms.dirty = false;
                self.store
                    .send(StoreRequest::SaveMeasurements { study_uid: ms.study_uid.clone(), items: ms.items.clone() });
            }
        }
    }

    /// The measurements of the study shown in viewport `i`.
    fn viewport_study(&self, i: usize) -> Option<String> {
        self.viewports[i].series.as_ref()?.any_slice().map(|s| s.info.study_instance_uid.clone())
    }

    /// 2x2 MPR of the active viewport's series: axial, coronal, sagittal and a 10 mm axial MIP,
    /// with linked crosshairs at the current slice's centre.
    pub fn open_mpr(&mut self) {
        let Some(series) = self.viewports.get(self.active).and_then(|v| v.series.clone()) else { return };
        if series.len() < 2 {
            self.status = "MPR needs a stack of slices".into();
            return;
        }
        let g = mpr::Geometry::of(&series);
        let k = self.viewports[self.active].slice;
        let centre = [g.dims[0] / 2, g.dims[1] / 2, k];
        let views = [
            (Plane::Axial, 0.0, SlabMode::Mip),
            (Plane::Coronal, 0.0, SlabMode::Mip),
            (Plane::Sagittal, 0.0, SlabMode::Mip),
            (Plane::Axial, 10.0, SlabMode::Mip),
        ];
        for (i, (plane, slab_mm, mode)) in views.into_iter().enumerate() {
            let vp = &mut self.viewports[i];
            if vp.series.as_ref().map(|s| s.id) != Some(series.id) {
                vp.set_series(series.clone());
            }
            vp.mpr = Some(MprSpec { plane, index: centre[plane.normal_axis()], slab_mm, mode });
        }
        self.layout = (2, 2);
        self.fullscreen = None;
        self.crosshair = Some((series.id, centre));
    }

    fn handle_keys(&mut self, ctx: &egui::Context) {
        if ctx.egui_wants_keyboard_input() || self.settings_window.capturing.is_some() {
            return;
        }
        let (delete, undo) = ctx.input(|i| {
            (i.key_pressed(Key::Delete) || i.key_pressed(Key::Backspace), i.modifiers.command && i.key_pressed(Key::Z))
        });
        if let Some(ms) = self.viewport_study(self.active).and_then(|s| self.measurements.get_mut(&s)) {
            if delete {
                ms.delete_selected();
            }
            if undo {
                ms.undo();
                return;
            }
        }
        let pressed: Vec<Action> =
            ctx.input(|i| self.keys.0.iter().filter(|(_, k)| i.key_pressed(*k)).map(|(a, _)| *a).collect());
        let digit = ctx.input(|i| {
            [Key::Num1, Key::Num2, Key::Num3, Key::Num4, Key::Num5, Key::Num6, Key::Num7, Key::Num8, Key::Num9]
                .iter()
                .position(|k| i.key_pressed(*k))
        });
        let lang = self.lang;
        let active = self.active;
        let Some(vp) = self.viewports.get_mut(active) else { return };
        if let Some(d) = digit
            && let Some(slice) = vp.current_slice()
            && let Some(preset) = presets_for(&slice, &self.settings.presets, lang).get(d)
        {
            vp.window = Some(preset.window);
        }
        for action in pressed {
            match action {
                Action::PreviousImage => vp.scroll_by(-1),
                Action::NextImage => vp.scroll_by(1),
                Action::FirstImage => vp.set_slice(0),
                Action::LastImage => vp.set_slice(usize::MAX),
                Action::PreviousSeries | Action::NextSeries => {
                    let current = vp.series.as_ref().map(|s| s.series_uid.clone());
                    let list = &self.browser.series;
                    if let Some(pos) = list.iter().position(|s| Some(&s.series_uid) == current.as_ref()) {
                        let next = if action == Action::NextSeries { pos + 1 } else { pos.wrapping_sub(1) };
                        if let Some(s) = list.get(next) {
                            self.store.send(StoreRequest::Open { series_uid: s.series_uid.clone(), viewport: active });
                        }
                    }
                    return;
                }
                Action::Cine => vp.cine = !vp.cine,
                Action::Reset => vp.reset_view(),
                Action::Invert => vp.invert = !vp.invert,
                Action::FlipHorizontal => vp.flip_horizontal = !vp.flip_horizontal,
                Action::FlipVertical => vp.flip_vertical = !vp.flip_vertical,
                Action::Rotate => vp.rotation_quarters = (vp.rotation_quarters + 1) % 4,
                Action::Fullscreen => self.fullscreen = if self.fullscreen.is_some() { None } else { Some(active) },
                Action::Cancel => {
                    vp.cine = false;
                    vp.drawing.clear();
                    self.tool = Tool::WindowLevel;
                    self.fullscreen = None;
                }
            }
        }
    }

    fn toolbar_ui(&mut self, ui: &mut egui::Ui) {
        let lang = self.lang;
        ui.horizontal_wrapped(|ui| {
            ui.strong("Lucent");
            if self.demo {
                ui.label(egui::RichText::new(lang.tr("Demo")).color(egui::Color32::from_rgb(255, 190, 40)));
            }
            ui.separator();
            for (dialog, label) in [(jobs::Dialog::Files, "Import files…"), (jobs::Dialog::Folder, "Import folder…")]
            {
                if ui
                    .add_enabled(self.dialog.is_none() && self.import.is_none(), egui::Button::new(lang.tr(label)))
                    .clicked()
                {
                    match jobs::pick(dialog, self.repaint.clone()) {
                        Ok(rx) => self.dialog = Some(rx),
                        Err(e) => self.status = format!("Cannot open a file dialog: {e}"),
                    }
                }
            }
            ui.separator();
            ui.label(lang.tr("Layout"));
            for (rows, cols, label) in [(1, 1, "1×1"), (1, 2, "1×2"), (2, 1, "2×1"), (2, 2, "2×2")] {
                if ui.selectable_label(self.layout == (rows, cols) && self.fullscreen.is_none(), label).clicked() {
                    self.layout = (rows, cols);
                    self.fullscreen = None;
                    self.active = self.active.min(rows * cols - 1);
                }
            }
            ui.separator();
            let active = self.active;
            if let Some(vp) = self.viewports.get_mut(active) {
                if let Some(slice) = vp.current_slice() {
                    let presets = presets_for(&slice, &self.settings.presets, lang);
                    let current = presets.iter().find(|p| vp.window == Some(p.window)).map_or_else(
                        || if vp.window.is_none() { lang.tr("Default").to_owned() } else { "—".to_owned() },
                        |p| p.name.clone(),
                    );
                    egui::ComboBox::from_label(lang.tr("Window")).selected_text(current).show_ui(ui, |ui| {
                        for (i, p) in presets.iter().enumerate() {
                            let text = format!("{} {}  ({:.0}/{:.0})", i + 1, p.name, p.window.width, p.window.center);
                            if ui.selectable_label(vp.window == Some(p.window), text).clicked() {
                                vp.window = Some(p.window);
                            }
                        }
                        if ui.selectable_label(vp.window.is_none(), lang.tr("Default")).clicked() {
                            vp.window = None;
                        }
                    });
                }
                ui.toggle_value(&mut vp.invert, lang.tr("Invert"));
                ui.toggle_value(&mut vp.show_overlays, lang.tr("Overlays"));
                ui.toggle_value(&mut vp.smooth, lang.tr("Smooth"));
                if vp.mpr.is_none() && vp.current_slice().is_some_and(|s| viewport::denoisable(&s)) {
                    ui.toggle_value(&mut vp.denoised, lang.tr("Denoised (AI)")).on_hover_text(lang.tr(
                        "Shows this slice denoised by the default CT denoiser, the slice on screen first; the original stays in the store",
                    ));
                }
                if ui.button(lang.tr("Rotate")).clicked() {
                    vp.rotation_quarters = (vp.rotation_quarters + 1) % 4;
                }
                ui.toggle_value(&mut vp.flip_horizontal, lang.tr("Flip H"));
                ui.toggle_value(&mut vp.flip_vertical, lang.tr("Flip V"));
                if ui.button(lang.tr("Reset")).clicked() {
                    vp.reset_view();
                }
                ui.toggle_value(&mut vp.cine, lang.tr("Cine"));
                ui.add(egui::DragValue::new(&mut vp.cine_fps).range(1.0..=60.0).suffix(" fps"));
                ui.separator();
                if let Some(spec) = &mut vp.mpr {
                    egui::ComboBox::from_label(lang.tr("Plane")).selected_text(lang.tr(spec.plane.label())).show_ui(
                        ui,
                        |ui| {
                            for plane in [Plane::Axial, Plane::Coronal, Plane::Sagittal] {
                                ui.selectable_value(&mut spec.plane, plane, lang.tr(plane.label()));
                            }
                        },
                    );
                    egui::ComboBox::from_label(lang.tr("Slab")).selected_text(spec.mode.label()).show_ui(ui, |ui| {
                        for mode in [SlabMode::Mip, SlabMode::MinIp, SlabMode::Mean] {
                            ui.selectable_value(&mut spec.mode, mode, mode.label());
                        }
                    });
                    ui.add(egui::DragValue::new(&mut spec.slab_mm).range(0.0..=100.0).speed(0.5).suffix(" mm"));
                    if ui.button(lang.tr("Stack")).clicked() {
                        vp.mpr = None;
                        vp.mpr_image = None;
                    }
                }
            }
            if ui.button("MPR").clicked() {
                self.open_mpr();
            }
            ui.toggle_value(&mut self.sync_scroll, lang.tr("Sync"));
            ui.separator();
            for tool in [Tool::WindowLevel, Tool::Select, Tool::Length, Tool::Angle, Tool::Ellipse, Tool::Rectangle] {
                if ui.selectable_label(self.tool == tool, lang.tr(tool.label())).clicked() {
                    self.tool = tool;
                    for vp in &mut self.viewports {
                        vp.drawing.clear();
                    }
                }
            }
            ui.separator();
            if ui.button(lang.tr("PACS")).clicked() {
                self.pacs.open = !self.pacs.open;
            }
            if ui.button(lang.tr("Report")).clicked() {
                self.open_report();
            }
            if ui.button(lang.tr("QA")).clicked() {
                self.reports.qa_open = !self.reports.qa_open;
            }
            if ui.button(lang.tr("Evaluation")).clicked() {
                self.eval.open = !self.eval.open;
            }
            if ui.button(lang.tr("Settings")).clicked() {
                self.settings_window.open = true;
            }
            egui::ComboBox::from_label(lang.tr("Language")).selected_text(self.lang.label()).show_ui(ui, |ui| {
                for l in [Lang::En, Lang::Ko] {
                    ui.selectable_value(&mut self.lang, l, l.label());
                }
            });
        });
    }
}

impl eframe::App for LucentApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        self.poll_workers(&ctx);
        self.poll_jobs(&ctx);
        self.open_pending_first_series();
        let pacs_out = self.pacs.poll();
        if pacs_out.store_changed {
            self.browser.dirty = true;
            if let Some(study) = self.browser.selected_study.clone() {
                self.store.send(StoreRequest::Series(study));
            }
        }
        if let Some(text) = pacs_out.status {
            self.status = text;
        }
        if let Some(study) = pacs_out.open_study {
            self.browser.selected_study = Some(study.clone());
            self.open_study(study);
        }
        if self.browser.dirty {
            self.browser.dirty = false;
            self.store.send(StoreRequest::Studies(self.browser.query()));
        }
        let before = self.active_position();
        self.handle_keys(&ctx);
        self.sync_measurements();
        let now = ctx.input(|i| i.time);
        let mut cine_running = false;
        for vp in &mut self.viewports {
            vp.tick_cine(now);
            cine_running |= vp.cine;
        }
        if cine_running {
            ctx.request_repaint_after(std::time::Duration::from_millis(10));
        }
        let lang = self.lang;
        if settings::settings_ui(&ctx, &mut self.settings_window, &mut self.settings, lang) {
            self.keys = self.settings.key_bindings();
            if let Err(e) = self.settings.save(&settings::Settings::path(&crate::config::data_dir())) {
                self.status = e;
            }
        }

        let local_study = self.browser.selected_study.clone();
        pacs_panel::pacs_window_ui(&ctx, &mut self.pacs, local_study.as_deref(), lang);
        let now = ctx.input(|i| i.time);
        let mut report_out = self.reports.poll(now);
        let window_out = report_panel::report_window_ui(&ctx, &mut self.reports, lang);
        report_panel::qa_window_ui(&ctx, &mut self.reports, lang);
        eval_panel::eval_window_ui(&ctx, &mut self.eval, lang);
        report_out.show_image = report_out.show_image.or(window_out.show_image);
        report_out.send_files.extend(window_out.send_files);
        if let Some(text) = report_out.status.or(window_out.status) {
            self.status = text;
        }
        if let Some((series_uid, sop_uid)) = report_out.show_image {
            self.show_image(&series_uid, &sop_uid);
        }
        if !report_out.send_files.is_empty() {
            self.pacs.send_files(report_out.send_files);
        }
        egui::Panel::top("toolbar").show(ui, |ui| self.toolbar_ui(ui));
        egui::Panel::bottom("status").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.weak(lang.tr("Research and demonstration only — not for diagnosis"));
                ui.separator();
                if let Some(job) = &self.import {
                    let p = job.progress();
                    let fraction = if p.total == 0 { 0.0 } else { p.done as f32 / p.total as f32 };
                    ui.add(egui::ProgressBar::new(fraction).desired_width(200.0).text(format!(
                        "{} {}/{}",
                        lang.tr("Importing"),
                        p.done,
                        p.total
                    )));
                    if ui.button(lang.tr("Cancel")).clicked() {
                        job.cancel();
                    }
                    ui.separator();
                }
                ui.label(&self.status);
            });
        });
        egui::Panel::left("browser").default_size(320.0).resizable(true).show(ui, |ui| {
            let out = browser::browser_ui(ui, &mut self.browser, lang);
            if let Some(study) = out.select_study {
                self.browser.selected_study = Some(study.clone());
                self.browser.series.clear();
                self.store.send(StoreRequest::Series(study));
            }
            if let Some(series) = out.open_series {
                self.request_open(series, self.active);
            }
            if let Some(study) = out.open_study {
                self.open_study(study);
            }
            if let Some(study) = out.export_anonymised {
                self.export_anonymised(study);
            }
        });
        egui::Panel::right("ai").default_size(300.0).resizable(true).show(ui, |ui| {
            let active = self.viewports.get(self.active).and_then(|v| v.series.clone());
            let out = ai_panel::ai_panel_ui(ui, &mut self.ai, active.as_ref().map(|s| s.series_uid.as_str()), lang);
            if out.run_again
                && let Some(series) = &active
            {
                self.ai.request(&self.ai_worker, &series.series_uid, series_files(series), true);
            }
            if let Some((slice, _, _)) = out.go_to
                && let Some(vp) = self.viewports.get_mut(self.active)
            {
                vp.mpr = None;
                vp.set_slice(slice);
            }
        });
        egui::CentralPanel::default().frame(egui::Frame::NONE.fill(egui::Color32::BLACK)).show(ui, |ui| {
            let area = ui.max_rect();
            let cells: Vec<(usize, Rect)> = match self.fullscreen {
                Some(i) => vec![(i, area)],
                None => {
                    let (rows, cols) = self.layout;
                    let size = Vec2::new(area.width() / cols as f32, area.height() / rows as f32);
                    (0..rows * cols)
                        .map(|i| {
                            let min = area.min + Vec2::new((i % cols) as f32 * size.x, (i / cols) as f32 * size.y);
                            (i, Rect::from_min_size(min, size))
                        })
                        .collect()
                }
            };
            let reference = self.active_position();
            for (i, rect) in cells {
                let active = i == self.active;
                let study = self.viewport_study(i);
                let measurements = study.and_then(|s| self.measurements.get_mut(&s));
                let cx = ViewportContext {
                    active,
                    crosshair: self.crosshair,
                    tool: self.tool,
                    lang,
                    reference: reference.clone(),
                };
                let out = viewport_ui(ui, rect, &mut self.viewports[i], cx, measurements, &self.ai, &self.denoise);
                if let Some((series_id, index)) = out.denoise_request
                    && let Some(slice) = self.viewports[i].series.as_ref().and_then(|s| s.slice(index))
                {
                    self.denoise.request(series_id, index, slice);
                }
                if let Some(spec) = out.mpr_request
                    && let Some(series) = self.viewports[i].series.clone()
                {
                    self.mpr.request(MprRequest { viewport: i, series, spec });
                }
                if let Some(voxel) = out.crosshair
                    && let Some(series_id) = self.viewports[i].series.as_ref().map(|s| s.id)
                {
                    self.crosshair = Some((series_id, voxel));
                    for (j, vp) in self.viewports.iter_mut().enumerate() {
                        if j != i && vp.series.as_ref().is_some_and(|s| s.id == series_id) {
                            vp.follow_crosshair(voxel);
                        }
                    }
                }
                if out.clicked {
                    self.active = i;
                }
                if out.double_clicked {
                    self.fullscreen = if self.fullscreen.is_some() { None } else { Some(i) };
                }
                if let Some(uid) = out.dropped_series {
                    self.active = i;
                    self.request_open(uid, i);
                }
            }
        });
        if self.sync_scroll && self.active_position() != before {
            self.sync_to_active();
        }
    }
}
