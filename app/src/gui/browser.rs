//! The study browser: search and filters over the local store, studies, series with thumbnails.
//! Store queries run on the `lucent-store` thread; the UI only sends requests and reads replies.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use pacs::store::{SeriesRow, Store, StudyQuery, StudyRow};

use super::i18n::Lang;
use super::loader::Thumbnailer;

/// Requests to the store thread.
pub enum StoreRequest {
    Studies(StudyQuery),
    Series(String),
    /// Paths of a series, to open in a viewport.
    Open {
        series_uid: String,
        viewport: usize,
    },
    Reopen(PathBuf),
    LoadMeasurements(String),
    /// Gather what hanging protocols need to lay out a study.
    Hang(String),
    SaveMeasurements {
        study_uid: String,
        items: Vec<pacs::store::MeasurementRecord>,
    },
}

/// Replies from the store thread.
pub enum StoreReply {
    /// The studies matching the query, and how many instances the store keeps aside as
    /// conflicts (same instance with other content, a study of another patient).
    Studies(Vec<StudyRow>, usize),
    Series {
        study_uid: String,
        series: Vec<SeriesRow>,
        first_paths: Vec<(String, PathBuf)>,
    },
    Open {
        series_uid: String,
        viewport: usize,
        paths: Vec<PathBuf>,
    },
    Measurements {
        study_uid: String,
        items: Vec<pacs::store::MeasurementRecord>,
    },
    Hang(super::hanging::HangingContext),
    /// Nothing to report.
    Done,
    Error(String),
}

/// Handle to the store thread.
pub struct StoreWorker {
    requests: Sender<StoreRequest>,
    pub replies: Receiver<StoreReply>,
}

impl StoreWorker {
    pub fn start(store_dir: PathBuf, repaint: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Self> {
        let (requests, rx) = crossbeam_channel::bounded::<StoreRequest>(32);
        let (tx, replies) = crossbeam_channel::bounded::<StoreReply>(32);
        std::thread::Builder::new().name("lucent-store".into()).spawn(move || {
            let mut store: Option<Store> = None;
            let mut dir = store_dir;
            for request in rx.iter() {
                if let StoreRequest::Reopen(new_dir) = &request {
                    dir = new_dir.clone();
                    store = None;
                    continue;
                }
                if store.is_none() {
                    match Store::open(&dir) {
                        Ok(s) => store = Some(s),
                        Err(e) => {
                            let _ = tx.send(StoreReply::Error(format!("cannot open the store: {e}")));
                            repaint();
                            continue;
                        }
                    }
                }
                let Some(s) = &mut store else { continue };
                let reply = answer(s, request).unwrap_or_else(|e| StoreReply::Error(e.to_string()));
                if matches!(reply, StoreReply::Done) {
                    continue;
                }
                if tx.send(reply).is_err() {
                    break;
                }
                repaint();
            }
        })?;
        Ok(Self { requests, replies })
    }

    pub fn send(&self, request: StoreRequest) {
        // A full queue means the UI is asking faster than SQLite answers; the next change re-asks.
        let _ = self.requests.try_send(request);
    }
}

fn answer(store: &mut Store, request: StoreRequest) -> pacs::Result<StoreReply> {
    Ok(match request {
        StoreRequest::Studies(q) => StoreReply::Studies(store.studies(&q)?, store.conflicts()?.len()),
        StoreRequest::Series(study_uid) => {
            let series = store.series(&study_uid)?;
            let mut first_paths = Vec::new();
            for s in &series {
                let instances = store.instances(&s.series_uid)?;
                if let Some(mid) = instances.get(instances.len() / 2) {
                    first_paths.push((s.series_uid.clone(), mid.path.clone()));
                }
            }
            StoreReply::Series { study_uid, series, first_paths }
        }
        StoreRequest::Open { series_uid, viewport } => {
            let paths = store.series_paths(&series_uid)?;
            StoreReply::Open { series_uid, viewport, paths }
        }
        StoreRequest::LoadMeasurements(study_uid) => {
            let items = store.measurements(&study_uid)?;
            StoreReply::Measurements { study_uid, items }
        }
        StoreRequest::SaveMeasurements { study_uid, items } => {
            store.save_measurements(&study_uid, &items)?;
            StoreReply::Done
        }
        StoreRequest::Hang(study_uid) => StoreReply::Hang(hanging_context(store, study_uid)?),
        StoreRequest::Reopen(_) => StoreReply::Error("internal: reopen is handled by the worker".into()),
    })
}

/// The study's series and its patient's most recent earlier study sharing a modality.
fn hanging_context(store: &Store, study_uid: String) -> pacs::Result<super::hanging::HangingContext> {
    let series = store.series(&study_uid)?;
    let all = store.studies(&StudyQuery::default())?;
    let current = all.iter().find(|s| s.study_uid == study_uid);
    let prior = current.and_then(|c| {
        all.iter()
            .filter(|s| {
                s.patient_id == c.patient_id
                    && s.study_uid != c.study_uid
                    && s.study_date < c.study_date
                    && s.modalities.split('\\').any(|m| c.modalities.split('\\').any(|n| n == m))
            })
            .max_by(|a, b| a.study_date.cmp(&b.study_date))
    });
    let prior_series = match prior {
        Some(p) => store.series(&p.study_uid)?,
        None => Vec::new(),
    };
    Ok(super::hanging::HangingContext { study_uid, series, prior_series })
}

/// Browser state.
#[derive(Default)]
pub struct Browser {
    pub text: String,
    pub modality: String,
    pub date_from: String,
    pub date_to: String,
    pub studies: Vec<StudyRow>,
    pub selected_study: Option<String>,
    pub series: Vec<SeriesRow>,
    pub thumbnails: HashMap<String, Option<egui::TextureHandle>>,
    pub dirty: bool,
    /// Instances kept aside as conflicts in the store (shown until someone resolves them).
    pub conflicts: usize,
}

/// What the user did in the browser.
#[derive(Debug, Default)]
pub struct BrowserOutput {
    pub open_series: Option<String>,
    pub select_study: Option<String>,
    /// Double-click: open the whole study with a hanging protocol.
    pub open_study: Option<String>,
    /// Context menu: write a de-identified copy of the study.
    pub export_anonymised: Option<String>,
}

impl Browser {
    pub fn query(&self) -> StudyQuery {
        StudyQuery {
            text: self.text.clone(),
            modality: self.modality.clone(),
            date_from: self.date_from.replace('-', ""),
            date_to: self.date_to.replace('-', ""),
            ..Default::default()
        }
    }

    /// Requests thumbnails for series that have none yet.
    pub fn request_thumbnails(&mut self, first_paths: Vec<(String, PathBuf)>, thumbs: &Thumbnailer) {
        for (uid, path) in first_paths {
            if !self.thumbnails.contains_key(&uid) && thumbs.request(uid.clone(), path) {
                self.thumbnails.insert(uid, None);
            }
        }
    }
}

/// The browser panel.
pub fn browser_ui(ui: &mut egui::Ui, b: &mut Browser, lang: Lang) -> BrowserOutput {
    let mut out = BrowserOutput::default();
    ui.heading(lang.tr("Studies"));
    let search = ui.add(egui::TextEdit::singleline(&mut b.text).hint_text(lang.tr("Search name, ID, accession")));
    b.dirty |= search.changed();
    ui.horizontal(|ui| {
        egui::ComboBox::from_label(lang.tr("Modality"))
            .selected_text(if b.modality.is_empty() { lang.tr("All").to_owned() } else { b.modality.clone() })
            .show_ui(ui, |ui| {
                for m in ["", "CT", "CR", "DX", "MR", "US", "PT", "OT"] {
                    let label = if m.is_empty() { lang.tr("All") } else { m };
                    b.dirty |= ui.selectable_value(&mut b.modality, m.to_owned(), label).changed();
                }
            });
    });
    ui.horizontal(|ui| {
        ui.label(lang.tr("From"));
        b.dirty |=
            ui.add(egui::TextEdit::singleline(&mut b.date_from).desired_width(80.0).hint_text("YYYYMMDD")).changed();
        ui.label(lang.tr("To"));
        b.dirty |=
            ui.add(egui::TextEdit::singleline(&mut b.date_to).desired_width(80.0).hint_text("YYYYMMDD")).changed();
    });
    ui.separator();
    if b.conflicts > 0 {
        ui.colored_label(
            egui::Color32::from_rgb(240, 170, 60),
            format!("{} {}", b.conflicts, lang.tr("instance(s) kept aside as conflicts: see lucent verify")),
        )
        .on_hover_text(lang.tr(
            "Same instance with other content, or a study the store holds under another patient: not filed, kept in the store's conflicts folder",
        ));
    }
    if b.studies.is_empty() {
        ui.weak(lang.tr("No studies in the store"));
    }
    egui::ScrollArea::vertical().id_salt("studies").max_height(ui.available_height() * 0.5).show(ui, |ui| {
        for study in &b.studies {
            let selected = b.selected_study.as_deref() == Some(study.study_uid.as_str());
            let text = format!(
                "{}  {}\n{}  {}  {} · {} {}",
                study.patient_name.replace('^', " "),
                study.patient_id,
                super::viewport::format_date(&study.study_date),
                study.modalities,
                study.description,
                study.instances,
                lang.tr("images")
            );
            let response = ui.selectable_label(selected, text);
            if response.clicked() && !selected {
                out.select_study = Some(study.study_uid.clone());
            }
            if response.double_clicked() {
                out.select_study = Some(study.study_uid.clone());
                out.open_study = Some(study.study_uid.clone());
            }
            response.context_menu(|ui| {
                if ui.button(lang.tr("Export anonymised")).clicked() {
                    out.export_anonymised = Some(study.study_uid.clone());
                    ui.close();
                }
            });
        }
    });
    ui.separator();
    ui.label(lang.tr("Series"));
    egui::ScrollArea::vertical().id_salt("series").show(ui, |ui| {
        for s in &b.series {
            ui.horizontal(|ui| {
                let thumb = b.thumbnails.get(&s.series_uid).and_then(|t| t.as_ref());
                let size = egui::vec2(64.0, 64.0);
                let response = match thumb {
                    Some(t) => ui.add(egui::Image::new(t).fit_to_exact_size(size).sense(egui::Sense::click_and_drag())),
                    None => ui.allocate_response(size, egui::Sense::click_and_drag()),
                };
                if thumb.is_none() {
                    ui.painter().rect_filled(response.rect, 2.0, egui::Color32::from_gray(30));
                }
                response.dnd_set_drag_payload(s.series_uid.clone());
                let label = ui.add(
                    egui::Label::new(format!(
                        "{} #{}  {}\n{} {}",
                        s.modality,
                        s.series_number.map(|n| n.to_string()).unwrap_or_default(),
                        s.description,
                        s.instances,
                        lang.tr("images")
                    ))
                    .sense(egui::Sense::click()),
                );
                if response.double_clicked() || label.double_clicked() {
                    out.open_series = Some(s.series_uid.clone());
                }
            });
        }
    });
    out
}
