//! The PACS window: saved DIMSE and DICOMweb nodes, C-ECHO, study/series search with sorting,
//! retrieve (C-GET, C-MOVE to Lucent's own receiver, or WADO-RS) with progress and cancel, send
//! the selected local study, the Store SCP receiver, and background prefetch of priors.
//!
//! Every network call runs on its own named thread (`lucent-pacs-*`); results come back on one
//! bounded channel and the UI thread only polls it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};
use pacs::dicomweb::{DicomWebClient, WebAuth, WebNode, WebProgress};
use pacs::net::{
    FindQuery, NodeBook, PacsNode, RetrieveOptions, RetrieveProgress, RetrieveRequest, ScpConfig, ScpEvent, ScpHandle,
    SeriesMatch, StudyMatch,
};
use pacs::secrets::Secret;
use serde::{Deserialize, Serialize};

use super::i18n::Lang;

/// A saved peer, either kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Peer {
    Dimse(PacsNode),
    Web(WebNode),
}

impl Peer {
    pub fn name(&self) -> &str {
        match self {
            Self::Dimse(n) => &n.name,
            Self::Web(n) => &n.name,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Dimse(n) => format!("{}  (DIMSE {}@{}:{})", n.name, n.ae_title, n.host, n.port),
            Self::Web(n) => format!("{}  (DICOMweb {})", n.name, n.base_url),
        }
    }
}

/// How to bring a study in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Method {
    #[default]
    Get,
    Move,
    Wado,
}

impl Method {
    fn label(self) -> &'static str {
        match self {
            Self::Get => "C-GET",
            Self::Move => "C-MOVE",
            Self::Wado => "WADO-RS",
        }
    }
}

/// The receiver's and the window's settings, kept in `pacs_gui.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PacsSettings {
    pub scp_ae_title: String,
    pub scp_port: u16,
    /// Calling AE titles allowed to push, besides the saved PACS nodes' own AE titles (which may
    /// always deliver C-MOVEs and pushes). Nobody else.
    pub scp_allow: Vec<String>,
    /// Listen on every network interface; otherwise on this machine (loopback) only.
    pub scp_listen_on_network: bool,
    /// Start the receiver when Lucent starts.
    pub scp_autostart: bool,
    /// The node priors are fetched from when a study opens (none: no prefetch).
    pub prefetch_node: Option<String>,
    pub method: Method,
}

impl Default for PacsSettings {
    fn default() -> Self {
        Self {
            scp_ae_title: "LUCENT".into(),
            scp_port: 11112,
            scp_allow: Vec::new(),
            scp_listen_on_network: false,
            scp_autostart: false,
            prefetch_node: None,
            method: Method::Get,
        }
    }
}

impl PacsSettings {
    fn load(path: &Path) -> Self {
        std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
    }

    fn save(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// What the worker threads answer.
enum Reply {
    Echo { node: String, verdict: String, ok: bool },
    Studies(Result<Vec<StudyMatch>, String>),
    Series { study_uid: String, result: Result<Vec<SeriesMatch>, String> },
    Retrieved { job: u64, study_uid: String, outcome: Result<String, String>, open: bool },
    Sent { job: u64, outcome: Result<String, String> },
    Prefetch(String),
}

/// A retrieve or send in flight (or finished, until dismissed).
struct Job {
    id: u64,
    label: String,
    progress: Arc<Mutex<RetrieveProgress>>,
    cancel: Arc<AtomicBool>,
    outcome: Option<Result<String, String>>,
}

/// Events from the window to the rest of the app.
#[derive(Debug, Default)]
pub struct PacsOutput {
    /// New instances are in the store: refresh the browser.
    pub store_changed: bool,
    /// Open this study (retrieved with "open when done").
    pub open_study: Option<String>,
    pub status: Option<String>,
}

/// A node being edited in the window. (Its `Debug` hides the password or token.)
#[derive(Clone, Default)]
struct NodeEditor {
    web: bool,
    name: String,
    ae_title: String,
    host: String,
    port: String,
    our_ae_title: String,
    /// DICOM TLS, and its files (PEM paths; empty: none).
    tls: bool,
    tls_ca: String,
    tls_cert: String,
    tls_key: String,
    base_url: String,
    auth: usize,
    user: String,
    /// A new password or token as typed; empty keeps [`kept_secret`](Self::kept_secret).
    secret: String,
    /// The edited node's password or token, with its auth kind (1 basic, 2 bearer), kept when
    /// none is typed.
    kept_secret: Option<(usize, Secret)>,
    /// Send credentials even over plain http:// to a host other than loopback.
    allow_plain_http_credentials: bool,
    timeout_s: f64,
    error: String,
}

impl std::fmt::Debug for NodeEditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeEditor")
            .field("web", &self.web)
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("auth", &self.auth)
            .field("secret", &"***")
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortKey {
    Name,
    Id,
    Date,
    Modality,
    Description,
    Accession,
}

/// The PACS window's state.
pub struct PacsPanel {
    pub open: bool,
    book: NodeBook,
    book_path: PathBuf,
    settings: PacsSettings,
    settings_path: PathBuf,
    store_dir: PathBuf,
    selected: Option<String>,
    query: FindQuery,
    studies: Vec<StudyMatch>,
    sort: (SortKey, bool),
    selected_study: Option<String>,
    series: Vec<SeriesMatch>,
    searching: bool,
    echo: Option<(String, String, bool)>,
    message: String,
    jobs: Vec<Job>,
    next_job: u64,
    open_when_done: bool,
    editor: Option<NodeEditor>,
    scp: Option<ScpHandle>,
    scp_events: Option<Receiver<ScpEvent>>,
    scp_log: VecDeque<String>,
    scp_received: usize,
    scp_allow_text: String,
    /// Studies already prefetched for (so reopening does not ask again).
    prefetched: Vec<String>,
    tx: Sender<Reply>,
    rx: Receiver<Reply>,
    repaint: Arc<dyn Fn() + Send + Sync>,
}

const SCP_LOG_LINES: usize = 200;

impl PacsPanel {
    pub fn new(data_dir: &Path, store_dir: PathBuf, repaint: Arc<dyn Fn() + Send + Sync>) -> (Self, Option<String>) {
        let book_path = crate::config::node_book_path();
        let (book, warning) = match NodeBook::load(&book_path) {
            Ok(b) => (b, None),
            Err(e) => (NodeBook::default(), Some(format!("PACS nodes not loaded: {e}"))),
        };
        let settings_path = data_dir.join("pacs_gui.json");
        let settings = PacsSettings::load(&settings_path);
        let (tx, rx) = crossbeam_channel::bounded(64);
        let selected = book.nodes.first().map(|n| n.name.clone()).or_else(|| book.web.first().map(|n| n.name.clone()));
        let scp_allow_text = settings.scp_allow.join(", ");
        let mut panel = Self {
            open: false,
            book,
            book_path,
            settings,
            settings_path,
            store_dir,
            selected,
            query: FindQuery::default(),
            studies: Vec::new(),
            sort: (SortKey::Date, false),
            selected_study: None,
            series: Vec::new(),
            searching: false,
            echo: None,
            message: String::new(),
            jobs: Vec::new(),
            next_job: 1,
            open_when_done: true,
            editor: None,
            scp: None,
            scp_events: None,
            scp_log: VecDeque::new(),
            scp_received: 0,
            scp_allow_text,
            prefetched: Vec::new(),
            tx,
            rx,
            repaint,
        };
        if panel.settings.scp_autostart {
            panel.start_scp();
        }
        (panel, warning)
    }

    fn peers(&self) -> Vec<Peer> {
        self.book.nodes.iter().cloned().map(Peer::Dimse).chain(self.book.web.iter().cloned().map(Peer::Web)).collect()
    }

    fn peer(&self, name: &str) -> Option<Peer> {
        self.peers().into_iter().find(|p| p.name() == name)
    }

    fn selected_peer(&self) -> Option<Peer> {
        self.selected.as_deref().and_then(|n| self.peer(n))
    }

    fn save_book(&mut self) {
        if let Err(e) = self.book.save(&self.book_path) {
            self.message = format!("Cannot save the PACS nodes: {e}");
        }
    }

    fn save_settings(&mut self) {
        if let Err(e) = self.settings.save(&self.settings_path) {
            self.message = format!("Cannot save the PACS settings: {e}");
        }
    }

    /// Runs `work` on a named thread; its reply wakes the UI.
    fn spawn(&self, name: &str, work: impl FnOnce() -> Reply + Send + 'static) {
        let (tx, repaint) = (self.tx.clone(), self.repaint.clone());
        let spawned = std::thread::Builder::new().name(format!("lucent-pacs-{name}")).spawn(move || {
            let _ = tx.send(work());
            repaint();
        });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a PACS thread: {e}");
        }
    }

    fn echo(&mut self, peer: Peer) {
        self.echo = Some((peer.name().to_owned(), "…".into(), true));
        self.spawn("echo", move || match &peer {
            Peer::Dimse(node) => {
                let verdict = pacs::net::echo(node);
                Reply::Echo { node: node.name.clone(), ok: verdict.is_ok(), verdict: verdict.to_string() }
            }
            Peer::Web(node) => {
                let started = std::time::Instant::now();
                let result = DicomWebClient::new(node)
                    .and_then(|c| c.search_studies(&FindQuery { limit: Some(1), ..FindQuery::default() }).map(|_| ()));
                let (ok, verdict) = match result {
                    Ok(()) => (true, format!("OK ({:.0} ms, QIDO-RS)", started.elapsed().as_secs_f64() * 1e3)),
                    Err(e) => (false, e.to_string()),
                };
                Reply::Echo { node: node.name.clone(), ok, verdict }
            }
        });
    }

    fn search(&mut self) {
        let Some(peer) = self.selected_peer() else {
            self.message = "Add a PACS node first".into();
            return;
        };
        self.searching = true;
        self.selected_study = None;
        self.series.clear();
        let query = self.query.clone();
        self.spawn("find", move || {
            let cancel = AtomicBool::new(false);
            let result = match &peer {
                Peer::Dimse(node) => pacs::net::find_studies(node, &query, &cancel),
                Peer::Web(node) => DicomWebClient::new(node).and_then(|c| c.search_studies(&query)),
            };
            Reply::Studies(result.map_err(|e| e.to_string()))
        });
    }

    fn search_series(&mut self, study_uid: String) {
        let Some(peer) = self.selected_peer() else { return };
        self.selected_study = Some(study_uid.clone());
        self.series.clear();
        let query = FindQuery { study_uid: study_uid.clone(), ..FindQuery::default() };
        self.spawn("find-series", move || {
            let cancel = AtomicBool::new(false);
            let result = match &peer {
                Peer::Dimse(node) => pacs::net::find_series(node, &query, &cancel),
                Peer::Web(node) => DicomWebClient::new(node).and_then(|c| c.search_series(&query)),
            };
            Reply::Series { study_uid, result: result.map_err(|e| e.to_string()) }
        });
    }

    /// Starts Lucent's Store SCP with the saved settings.
    fn start_scp(&mut self) {
        if self.scp.is_some() {
            return;
        }
        let mut config = ScpConfig::new(&self.settings.scp_ae_title, self.settings.scp_port);
        // The saved PACS nodes may deliver (C-MOVE answers, pushes), and whoever the user listed.
        config.allowed_calling_aes = self.settings.scp_allow.clone();
        for node in &self.book.nodes {
            if !config.allowed_calling_aes.iter().any(|a| a.trim() == node.ae_title.trim()) {
                config.allowed_calling_aes.push(node.ae_title.trim().to_owned());
            }
        }
        if self.settings.scp_listen_on_network {
            config.bind_address = std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
        }
        match pacs::net::start_scp(&config, &self.store_dir) {
            Ok((handle, events)) => {
                self.log_scp(format!(
                    "Receiving as {} on port {}",
                    self.settings.scp_ae_title,
                    handle.local_addr().port()
                ));
                self.scp = Some(handle);
                self.scp_events = Some(events);
            }
            Err(e) => self.message = format!("Cannot start the receiver: {e}"),
        }
    }

    fn stop_scp(&mut self) {
        if let Some(handle) = self.scp.take() {
            handle.shutdown();
            self.scp_events = None;
            self.log_scp("Receiver stopped".into());
        }
    }

    fn log_scp(&mut self, line: String) {
        if self.scp_log.len() >= SCP_LOG_LINES {
            self.scp_log.pop_front();
        }
        self.scp_log.push_back(line);
    }

    fn new_job(&mut self, label: String) -> (u64, Arc<Mutex<RetrieveProgress>>, Arc<AtomicBool>) {
        let id = self.next_job;
        self.next_job += 1;
        let progress = Arc::new(Mutex::new(RetrieveProgress::default()));
        let cancel = Arc::new(AtomicBool::new(false));
        self.jobs.push(Job { id, label, progress: progress.clone(), cancel: cancel.clone(), outcome: None });
        (id, progress, cancel)
    }

    /// Retrieves a study (or one series) from `peer` by `method`.
    fn retrieve(&mut self, peer: Peer, request: RetrieveRequest, method: Method, open: bool, label: String) {
        let method = match (&peer, method) {
            (Peer::Web(_), _) => Method::Wado,
            (Peer::Dimse(_), Method::Wado) => Method::Get,
            (_, m) => m,
        };
        let destination = self.settings.scp_ae_title.clone();
        if method == Method::Move {
            // C-MOVE delivers to our receiver: it must listen (the PACS must know this AE title, host and port).
            self.start_scp();
            if self.scp.is_none() {
                return;
            }
        }
        let (job, progress, cancel) = self.new_job(format!("{} {label} ← {}", method.label(), peer.name()));
        let store_dir = self.store_dir.clone();
        let repaint = self.repaint.clone();
        let study_uid = request.study_uid.clone();
        self.spawn("retrieve", move || {
            let mut report_progress = |p: &RetrieveProgress| {
                if let Ok(mut slot) = progress.lock() {
                    *slot = p.clone();
                }
                repaint();
            };
            let outcome = pacs::store::Store::open(&store_dir).and_then(|mut store| match (&peer, method) {
                (Peer::Web(node), _) => {
                    let client = DicomWebClient::new(node)?;
                    let series = (!request.series_uid.is_empty()).then_some(request.series_uid.as_str());
                    let mut web_progress = |w: &WebProgress| {
                        report_progress(&RetrieveProgress {
                            done: w.instances_done as u32,
                            bytes: w.bytes_done,
                            elapsed_s: w.elapsed_s,
                            bytes_per_s: if w.elapsed_s > 0.0 { w.bytes_done as f64 / w.elapsed_s } else { 0.0 },
                            ..RetrieveProgress::default()
                        })
                    };
                    let s = client.retrieve(&request.study_uid, series, &mut store, &mut web_progress, &cancel)?;
                    Ok(format!(
                        "{} instance(s), {} new, {:.1} MB in {:.1} s ({:.0} MB/s)",
                        s.received,
                        s.added,
                        s.bytes as f64 / 1e6,
                        s.elapsed_s,
                        s.bytes as f64 / 1e6 / s.elapsed_s.max(1e-9)
                    ))
                }
                (Peer::Dimse(node), m) => {
                    let options = RetrieveOptions::default();
                    let report = if m == Method::Move {
                        pacs::net::retrieve_move(
                            node,
                            &request,
                            &destination,
                            &mut store,
                            &options,
                            &mut report_progress,
                            &cancel,
                        )?
                    } else {
                        pacs::net::retrieve_get(node, &request, &mut store, &options, &mut report_progress, &cancel)?
                    };
                    let mut text = format!(
                        "{} received, {} already here, {:.1} MB in {:.1} s ({:.0} MB/s)",
                        report.received,
                        report.already_present,
                        report.bytes as f64 / 1e6,
                        report.elapsed_s,
                        report.bytes_per_s / 1e6
                    );
                    if !report.missing.is_empty() {
                        text.push_str(&format!(
                            "; {} missing (incomplete: retrieve again to fetch the rest)",
                            report.missing.len()
                        ));
                    }
                    if report.cancelled {
                        text.push_str("; cancelled");
                    }
                    Ok(text)
                }
            });
            Reply::Retrieved { job, study_uid, outcome: outcome.map_err(|e| e.to_string()), open }
        });
    }

    /// Sends every instance of a local study to the selected node.
    pub fn send_study(&mut self, study_uid: &str) {
        if self.selected_peer().is_none() {
            self.message = "Choose a node to send to".into();
            return;
        }
        let paths = match pacs::store::Store::open_reader(&self.store_dir).and_then(|store| {
            let mut paths = Vec::new();
            for s in store.series(study_uid)? {
                paths.extend(store.series_paths(&s.series_uid)?);
            }
            Ok(paths)
        }) {
            Ok(p) if !p.is_empty() => p,
            Ok(_) => {
                self.message = "The study has no instances to send".into();
                return;
            }
            Err(e) => {
                self.message = format!("Cannot list the study's files: {e}");
                return;
            }
        };
        self.send_files(paths);
    }

    /// Sends files (e.g. an exported SR) to the selected node: C-STORE or STOW-RS.
    pub fn send_files(&mut self, paths: Vec<PathBuf>) {
        let Some(peer) = self.selected_peer() else {
            self.message = "Choose a node in the PACS window to send to".into();
            self.open = true;
            return;
        };
        let (job, progress, cancel) = self.new_job(format!("send {} file(s) → {}", paths.len(), peer.name()));
        let repaint = self.repaint.clone();
        self.spawn("send", move || {
            let mut report_progress = |p: &RetrieveProgress| {
                if let Ok(mut slot) = progress.lock() {
                    *slot = p.clone();
                }
                repaint();
            };
            let outcome = match &peer {
                Peer::Dimse(node) => pacs::net::store_files(node, &paths, &mut report_progress, &cancel).map(|r| {
                    let mut text = format!("{} sent, {} failed", r.sent, r.failed.len());
                    if let Some(f) = r.failed.first() {
                        text.push_str(&format!(" (first: {})", f.reason));
                    }
                    text
                }),
                Peer::Web(node) => DicomWebClient::new(node).and_then(|c| {
                    let mut web_progress = |w: &WebProgress| {
                        report_progress(&RetrieveProgress {
                            done: w.instances_done as u32,
                            bytes: w.bytes_done,
                            elapsed_s: w.elapsed_s,
                            ..RetrieveProgress::default()
                        })
                    };
                    c.store(&paths, &mut web_progress, &cancel)
                        .map(|s| format!("{} stored, {} refused", s.stored, s.failed.len()))
                }),
            };
            Reply::Sent { job, outcome: outcome.map_err(|e| e.to_string()) }
        });
    }

    /// When a study opens: fetch the same patient's earlier studies of the same modality from
    /// the prefetch node, in the background (only those the store does not have).
    pub fn prefetch_priors(&mut self, study: &pacs::store::StudyRow) {
        let Some(peer) = self.settings.prefetch_node.clone().and_then(|n| self.peer(&n)) else { return };
        if study.patient_id.is_empty() || self.prefetched.contains(&study.study_uid) {
            return;
        }
        self.prefetched.push(study.study_uid.clone());
        let modality = study.modalities.split('\\').next().unwrap_or_default().to_owned();
        let query = FindQuery {
            patient_id: study.patient_id.clone(),
            modality: modality.clone(),
            study_date_to: study.study_date.clone(),
            ..FindQuery::default()
        };
        let (current, current_date) = (study.study_uid.clone(), study.study_date.clone());
        let store_dir = self.store_dir.clone();
        self.spawn("prefetch", move || {
            let cancel = AtomicBool::new(false);
            let found = match &peer {
                Peer::Dimse(node) => pacs::net::find_studies(node, &query, &cancel),
                Peer::Web(node) => DicomWebClient::new(node).and_then(|c| c.search_studies(&query)),
            };
            let priors: Vec<StudyMatch> = match found {
                Ok(s) => s
                    .into_iter()
                    .filter(|s| s.study_uid != current && (current_date.is_empty() || s.study_date <= current_date))
                    .collect(),
                Err(e) => return Reply::Prefetch(format!("Prior prefetch: search failed: {e}")),
            };
            let mut store = match pacs::store::Store::open(&store_dir) {
                Ok(s) => s,
                Err(e) => return Reply::Prefetch(format!("Prior prefetch: {e}")),
            };
            let mut fetched = 0;
            for prior in &priors {
                if store.series(&prior.study_uid).is_ok_and(|s| !s.is_empty()) {
                    continue;
                }
                let request = RetrieveRequest::study(&prior.study_uid);
                let result = match &peer {
                    Peer::Dimse(node) => pacs::net::retrieve_get(
                        node,
                        &request,
                        &mut store,
                        &RetrieveOptions::default(),
                        &mut |_| {},
                        &cancel,
                    )
                    .map(|_| ()),
                    Peer::Web(node) => DicomWebClient::new(node)
                        .and_then(|c| c.retrieve(&prior.study_uid, None, &mut store, &mut |_| {}, &cancel))
                        .map(|_| ()),
                };
                match result {
                    Ok(()) => fetched += 1,
                    Err(e) => return Reply::Prefetch(format!("Prior prefetch stopped: {e}")),
                }
            }
            Reply::Prefetch(format!(
                "Prior prefetch: {fetched} earlier {modality} stud{} fetched",
                if fetched == 1 { "y" } else { "ies" }
            ))
        });
    }

    /// Collects worker replies and receiver events; call every frame.
    pub fn poll(&mut self) -> PacsOutput {
        let mut out = PacsOutput::default();
        while let Ok(reply) = self.rx.try_recv() {
            match reply {
                Reply::Echo { node, verdict, ok } => self.echo = Some((node, verdict, ok)),
                Reply::Studies(result) => {
                    self.searching = false;
                    match result {
                        Ok(studies) => {
                            self.message =
                                format!("{} stud{} found", studies.len(), if studies.len() == 1 { "y" } else { "ies" });
                            self.studies = studies;
                            self.sort_studies();
                        }
                        Err(e) => self.message = format!("Search failed: {e}"),
                    }
                }
                Reply::Series { study_uid, result } => {
                    if self.selected_study.as_deref() == Some(study_uid.as_str()) {
                        match result {
                            Ok(series) => self.series = series,
                            Err(e) => self.message = format!("Series search failed: {e}"),
                        }
                    }
                }
                Reply::Retrieved { job, study_uid, outcome, open } => {
                    out.store_changed = true;
                    if open && outcome.is_ok() {
                        out.open_study = Some(study_uid);
                    }
                    out.status = Some(match &outcome {
                        Ok(text) => format!("Retrieved: {text}"),
                        Err(e) => format!("Retrieve failed: {e}"),
                    });
                    if let Some(j) = self.jobs.iter_mut().find(|j| j.id == job) {
                        j.outcome = Some(outcome);
                    }
                }
                Reply::Sent { job, outcome } => {
                    out.status = Some(match &outcome {
                        Ok(text) => format!("Sent: {text}"),
                        Err(e) => format!("Send failed: {e}"),
                    });
                    if let Some(j) = self.jobs.iter_mut().find(|j| j.id == job) {
                        j.outcome = Some(outcome);
                    }
                }
                Reply::Prefetch(text) => {
                    out.store_changed = true;
                    out.status = Some(text);
                }
            }
        }
        let events: Vec<ScpEvent> = self.scp_events.as_ref().map(|rx| rx.try_iter().collect()).unwrap_or_default();
        for event in events {
            let line = match event {
                ScpEvent::Stored { calling_ae, new, bytes, .. } => {
                    self.scp_received += 1;
                    out.store_changed |= new;
                    format!(
                        "{calling_ae}: stored {:.1} kB{}",
                        bytes as f64 / 1e3,
                        if new { "" } else { " (already here)" }
                    )
                }
                ScpEvent::Failed { calling_ae, status, reason, .. } => {
                    format!("{calling_ae}: refused (status {status:#06x}: {reason})")
                }
                ScpEvent::Echo { calling_ae } => format!("{calling_ae}: echo"),
                ScpEvent::Rejected { calling_ae, reason } => format!("{calling_ae}: association rejected ({reason})"),
                ScpEvent::Ended { calling_ae, stored, failed, error } => {
                    if stored > 0 {
                        out.status = Some(format!("Received {stored} instance(s) from {calling_ae}"));
                    }
                    format!(
                        "{calling_ae}: association ended, {stored} stored, {failed} failed{}",
                        error.map(|e| format!(" ({e})")).unwrap_or_default()
                    )
                }
            };
            self.log_scp(line);
        }
        out
    }

    fn sort_studies(&mut self) {
        let (key, ascending) = self.sort;
        self.studies.sort_by(|a, b| {
            let o = match key {
                SortKey::Name => a.patient_name.cmp(&b.patient_name),
                SortKey::Id => a.patient_id.cmp(&b.patient_id),
                SortKey::Date => (&a.study_date, &a.study_time).cmp(&(&b.study_date, &b.study_time)),
                SortKey::Modality => a.modalities.cmp(&b.modalities),
                SortKey::Description => a.study_description.cmp(&b.study_description),
                SortKey::Accession => a.accession_number.cmp(&b.accession_number),
            };
            if ascending { o } else { o.reverse() }
        });
    }

    /// Uses `peer` for this session without saving it (tests, one-off peers).
    pub fn use_peer(&mut self, peer: Peer) {
        let name = peer.name().to_owned();
        match peer {
            Peer::Dimse(node) => {
                self.book.nodes.retain(|n| n.name != name);
                self.book.nodes.push(node);
            }
            Peer::Web(node) => {
                self.book.web.retain(|n| n.name != name);
                self.book.web.push(node);
            }
        }
        self.selected = Some(name);
    }

    /// The search form.
    pub fn query_mut(&mut self) -> &mut FindQuery {
        &mut self.query
    }

    /// Runs the search in the form.
    pub fn start_search(&mut self) {
        self.search();
    }

    /// The studies the last search found, in the table's order.
    pub fn studies(&self) -> &[StudyMatch] {
        &self.studies
    }

    /// Retrieves study `index` of the table by the chosen method, opening it when done.
    pub fn retrieve_study(&mut self, index: usize) {
        let (Some(peer), Some(study)) = (self.selected_peer(), self.studies.get(index).cloned()) else { return };
        let mut request = RetrieveRequest::study(&study.study_uid);
        request.patient_id = study.patient_id.clone();
        let (method, open) = (self.settings.method, self.open_when_done);
        self.retrieve(peer, request, method, open, format!("study {}", study.study_date));
    }

    /// Outcomes of finished retrieves and sends (`Err` holds the message).
    pub fn finished_jobs(&self) -> Vec<Result<String, String>> {
        self.jobs.iter().filter_map(|j| j.outcome.clone()).collect()
    }

    pub fn busy(&self) -> bool {
        self.searching || self.jobs.iter().any(|j| j.outcome.is_none())
    }
}

impl Drop for PacsPanel {
    fn drop(&mut self) {
        for j in &self.jobs {
            j.cancel.store(true, Ordering::Relaxed);
        }
        self.stop_scp();
    }
}

/// The PACS window. `local_study` is the study selected in the browser (for "Send").
pub fn pacs_window_ui(ctx: &egui::Context, p: &mut PacsPanel, local_study: Option<&str>, lang: Lang) {
    let mut open = p.open;
    egui::Window::new(lang.tr("PACS")).open(&mut open).default_size([860.0, 560.0]).resizable(true).show(ctx, |ui| {
        nodes_ui(ui, p, lang);
        ui.separator();
        query_ui(ui, p, lang);
        ui.separator();
        results_ui(ui, p, lang);
        ui.separator();
        jobs_ui(ui, p, local_study, lang);
        ui.separator();
        receiver_ui(ui, p, lang);
        if !p.message.is_empty() {
            ui.separator();
            ui.label(&p.message);
        }
    });
    p.open = open;
    editor_ui(ctx, p, lang);
}

fn nodes_ui(ui: &mut egui::Ui, p: &mut PacsPanel, lang: Lang) {
    ui.horizontal(|ui| {
        let peers = p.peers();
        let current = p.selected_peer().map_or_else(|| lang.tr("none").to_owned(), |peer| peer.describe());
        egui::ComboBox::from_label(lang.tr("Node")).selected_text(current).width(360.0).show_ui(ui, |ui| {
            for peer in &peers {
                let name = peer.name().to_owned();
                if ui.selectable_label(p.selected.as_deref() == Some(name.as_str()), peer.describe()).clicked() {
                    p.selected = Some(name);
                    p.studies.clear();
                    p.series.clear();
                }
            }
        });
        if ui.button(lang.tr("Test connection")).clicked()
            && let Some(peer) = p.selected_peer()
        {
            p.echo(peer);
        }
        if ui.button(lang.tr("Add")).clicked() {
            p.editor = Some(NodeEditor {
                port: "104".into(),
                our_ae_title: p.settings.scp_ae_title.clone(),
                timeout_s: 30.0,
                ..NodeEditor::default()
            });
        }
        if let Some(peer) = p.selected_peer() {
            if ui.button(lang.tr("Edit")).clicked() {
                p.editor = Some(editor_for(&peer));
            }
            if ui.button(lang.tr("Remove")).clicked() {
                let name = peer.name().to_owned();
                p.book.remove(&name);
                p.book.web.retain(|n| n.name != name);
                p.selected = p.peers().first().map(|n| n.name().to_owned());
                p.save_book();
            }
        }
    });
    if let Some((node, verdict, ok)) = &p.echo {
        let colour = if *ok { egui::Color32::from_rgb(80, 200, 120) } else { egui::Color32::from_rgb(230, 90, 80) };
        ui.colored_label(colour, format!("{node}: {verdict}"));
    }
    ui.horizontal(|ui| {
        ui.label(lang.tr("Retrieve with"));
        let web = matches!(p.selected_peer(), Some(Peer::Web(_)));
        let methods: &[Method] = if web { &[Method::Wado] } else { &[Method::Get, Method::Move] };
        for &m in methods {
            if ui.selectable_label(p.settings.method == m || (web && m == Method::Wado), m.label()).clicked() && !web {
                p.settings.method = m;
                p.save_settings();
            }
        }
        ui.checkbox(&mut p.open_when_done, lang.tr("Open when done"));
        let mut prefetch = p.settings.prefetch_node.is_some() && p.settings.prefetch_node == p.selected;
        if ui.checkbox(&mut prefetch, lang.tr("Prefetch priors from this node")).changed() {
            p.settings.prefetch_node = if prefetch { p.selected.clone() } else { None };
            p.save_settings();
        }
    });
}

fn editor_for(peer: &Peer) -> NodeEditor {
    match peer {
        Peer::Dimse(n) => NodeEditor {
            web: false,
            name: n.name.clone(),
            ae_title: n.ae_title.clone(),
            host: n.host.clone(),
            port: n.port.to_string(),
            our_ae_title: n.our_ae_title.clone(),
            tls: n.tls,
            tls_ca: path_text(n.tls_ca_file.as_deref()),
            tls_cert: path_text(n.tls_cert_file.as_deref()),
            tls_key: path_text(n.tls_key_file.as_deref()),
            timeout_s: n.dimse_timeout_s,
            ..NodeEditor::default()
        },
        Peer::Web(n) => {
            // The stored secret is not shown; an empty field keeps it.
            let (auth, user, kept_secret) = match &n.auth {
                WebAuth::None => (0, String::new(), None),
                WebAuth::Basic { user, password } => (1, user.clone(), Some((1, password.clone()))),
                WebAuth::Bearer { token } => (2, String::new(), Some((2, token.clone()))),
            };
            NodeEditor {
                web: true,
                name: n.name.clone(),
                base_url: n.base_url.clone(),
                auth,
                user,
                kept_secret,
                allow_plain_http_credentials: n.allow_plain_http_credentials,
                timeout_s: n.timeout_s,
                ..NodeEditor::default()
            }
        }
    }
}

fn path_text(path: Option<&std::path::Path>) -> String {
    path.map(|p| p.display().to_string()).unwrap_or_default()
}

/// A path typed in the editor (`None` when blank).
fn typed_path(text: &str) -> Option<std::path::PathBuf> {
    let text = text.trim();
    (!text.is_empty()).then(|| std::path::PathBuf::from(text))
}

fn editor_ui(ctx: &egui::Context, p: &mut PacsPanel, lang: Lang) {
    let Some(mut e) = p.editor.take() else { return };
    let mut keep = true;
    let mut save = false;
    egui::Window::new(lang.tr("PACS node")).collapsible(false).resizable(false).show(ctx, |ui| {
        ui.horizontal(|ui| {
            ui.selectable_value(&mut e.web, false, "DIMSE");
            ui.selectable_value(&mut e.web, true, "DICOMweb");
        });
        egui::Grid::new("node-editor").num_columns(2).show(ui, |ui| {
            let label = ui.label(lang.tr("Name"));
            ui.text_edit_singleline(&mut e.name).labelled_by(label.id);
            ui.end_row();
            if e.web {
                let label = ui.label("URL");
                ui.add(egui::TextEdit::singleline(&mut e.base_url).hint_text("https://pacs.example.org/dicom-web"))
                    .labelled_by(label.id);
                ui.end_row();
                let label = ui.label(lang.tr("Authentication"));
                egui::ComboBox::from_id_salt("web-auth")
                    .selected_text(["None", "Basic", "Bearer token"][e.auth.min(2)])
                    .show_ui(ui, |ui| {
                        for (i, label) in ["None", "Basic", "Bearer token"].iter().enumerate() {
                            ui.selectable_value(&mut e.auth, i, *label);
                        }
                    })
                    .response
                    .labelled_by(label.id);
                ui.end_row();
                if e.auth == 1 {
                    let label = ui.label(lang.tr("User"));
                    ui.text_edit_singleline(&mut e.user).labelled_by(label.id);
                    ui.end_row();
                }
                if e.auth > 0 {
                    let label = ui.label(if e.auth == 1 { lang.tr("Password") } else { "Token" });
                    let kept = e.kept_secret.as_ref().is_some_and(|(kind, _)| *kind == e.auth);
                    ui.add(egui::TextEdit::singleline(&mut e.secret).password(true).hint_text(if kept {
                        "(unchanged)"
                    } else {
                        ""
                    }))
                    .labelled_by(label.id);
                    ui.end_row();
                    if e.base_url.trim().get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://")) {
                        ui.label("");
                        ui.checkbox(&mut e.allow_plain_http_credentials, lang.tr("Allow credentials over plain HTTP"))
                            .on_hover_text(
                                "Anyone on the network path can read them. Use an https:// URL when the \
                                 server has one; this machine's loopback (localhost) is always allowed.",
                            );
                        ui.end_row();
                    }
                }
            } else {
                let label = ui.label(lang.tr("AE title"));
                ui.text_edit_singleline(&mut e.ae_title).labelled_by(label.id);
                ui.end_row();
                let label = ui.label(lang.tr("Host"));
                ui.text_edit_singleline(&mut e.host).labelled_by(label.id);
                ui.end_row();
                let label = ui.label(lang.tr("Port"));
                ui.text_edit_singleline(&mut e.port).labelled_by(label.id);
                ui.end_row();
                let label = ui.label(lang.tr("Our AE title"));
                ui.text_edit_singleline(&mut e.our_ae_title).labelled_by(label.id);
                ui.end_row();
                ui.label("");
                ui.checkbox(&mut e.tls, lang.tr("DICOM TLS (certificate verified)"));
                ui.end_row();
                if e.tls {
                    for (text, hint, value) in [
                        ("CA file (PEM)", "optional: the hospital's CA", &mut e.tls_ca),
                        ("Client certificate (PEM)", "optional: for mutual TLS", &mut e.tls_cert),
                        ("Client key (PEM)", "with the client certificate", &mut e.tls_key),
                    ] {
                        let label = ui.label(lang.tr(text));
                        ui.add(egui::TextEdit::singleline(value).hint_text(hint)).labelled_by(label.id);
                        ui.end_row();
                    }
                }
            }
            let label = ui.label(lang.tr("Timeout"));
            ui.add(egui::DragValue::new(&mut e.timeout_s).range(1.0..=600.0).suffix(" s")).labelled_by(label.id);
            ui.end_row();
        });
        if !e.error.is_empty() {
            ui.colored_label(egui::Color32::from_rgb(230, 90, 80), &e.error);
        }
        ui.horizontal(|ui| {
            save = ui.button(lang.tr("Save")).clicked();
            if ui.button(lang.tr("Cancel")).clicked() {
                keep = false;
            }
        });
    });
    if save {
        let name = e.name.trim().to_owned();
        let result: Result<(), String> = if name.is_empty() {
            Err("the node needs a name".into())
        } else if e.web {
            let mut node = WebNode::new(&name, e.base_url.trim());
            node.timeout_s = e.timeout_s;
            node.allow_plain_http_credentials = e.allow_plain_http_credentials;
            let secret = match &e.kept_secret {
                Some((kind, kept)) if *kind == e.auth && e.secret.is_empty() => kept.clone(),
                _ => Secret::new(e.secret.clone()),
            };
            node.auth = match e.auth {
                1 => WebAuth::Basic { user: e.user.clone(), password: secret },
                2 => WebAuth::Bearer { token: secret },
                _ => WebAuth::None,
            };
            DicomWebClient::new(&node).map_err(|err| err.to_string()).map(|_| {
                p.book.nodes.retain(|n| n.name != name);
                match p.book.web.iter_mut().find(|n| n.name == name) {
                    Some(slot) => *slot = node,
                    None => p.book.web.push(node),
                }
            })
        } else {
            match e.port.trim().parse::<u16>() {
                Ok(port) => {
                    let mut node = PacsNode::new(&name, e.ae_title.trim(), e.host.trim(), port, e.our_ae_title.trim());
                    node.dimse_timeout_s = e.timeout_s;
                    node.tls = e.tls;
                    if e.tls {
                        node.tls_ca_file = typed_path(&e.tls_ca);
                        node.tls_cert_file = typed_path(&e.tls_cert);
                        node.tls_key_file = typed_path(&e.tls_key);
                    }
                    p.book.upsert(node).map_err(|err| err.to_string()).map(|()| p.book.web.retain(|n| n.name != name))
                }
                Err(_) => Err("the port must be a number from 1 to 65535".into()),
            }
        };
        match result {
            Ok(()) => {
                p.selected = Some(name);
                p.save_book();
                keep = false;
            }
            Err(err) => {
                // In the editor beside its Save button, and in the window's message line.
                p.message = format!("Node not saved: {err}");
                e.error = err;
            }
        }
    }
    if keep {
        p.editor = Some(e);
    }
}

fn query_ui(ui: &mut egui::Ui, p: &mut PacsPanel, lang: Lang) {
    let mut submit = false;
    ui.horizontal(|ui| {
        let label = ui.label(lang.tr("Patient name"));
        submit |= ui
            .add(egui::TextEdit::singleline(&mut p.query.patient_name).hint_text("DOE^J*").desired_width(140.0))
            .labelled_by(label.id)
            .lost_focus();
        let label = ui.label(lang.tr("Patient ID"));
        submit |= ui
            .add(egui::TextEdit::singleline(&mut p.query.patient_id).desired_width(110.0))
            .labelled_by(label.id)
            .lost_focus();
        let label = ui.label(lang.tr("Accession"));
        submit |= ui
            .add(egui::TextEdit::singleline(&mut p.query.accession_number).desired_width(110.0))
            .labelled_by(label.id)
            .lost_focus();
    });
    ui.horizontal(|ui| {
        let label = ui.label(lang.tr("From"));
        ui.add(egui::TextEdit::singleline(&mut p.query.study_date_from).hint_text("YYYYMMDD").desired_width(140.0))
            .labelled_by(label.id);
        let label = ui.label(lang.tr("To"));
        ui.add(egui::TextEdit::singleline(&mut p.query.study_date_to).hint_text("YYYYMMDD").desired_width(110.0))
            .labelled_by(label.id);
        let label = ui.label(lang.tr("Modality"));
        ui.add(egui::TextEdit::singleline(&mut p.query.modality).hint_text("CT, CR, DX…").desired_width(110.0))
            .labelled_by(label.id);
    });
    let enter = submit && ui.input(|i| i.key_pressed(egui::Key::Enter));
    ui.horizontal(|ui| {
        if ui.add_enabled(!p.searching, egui::Button::new(lang.tr("Search"))).clicked() || enter {
            p.search();
        }
        if p.searching {
            ui.spinner();
        }
        if ui.button(lang.tr("Clear")).clicked() {
            p.query = FindQuery::default();
        }
    });
}

fn results_ui(ui: &mut egui::Ui, p: &mut PacsPanel, lang: Lang) {
    let mut retrieve: Option<(RetrieveRequest, String)> = None;
    let mut expand: Option<String> = None;
    egui::ScrollArea::vertical().id_salt("pacs-results").max_height(220.0).show(ui, |ui| {
        egui::Grid::new("pacs-studies").striped(true).num_columns(7).show(ui, |ui| {
            for (key, label) in [
                (SortKey::Name, "Patient name"),
                (SortKey::Id, "Patient ID"),
                (SortKey::Date, "Date"),
                (SortKey::Modality, "Modality"),
                (SortKey::Description, "Description"),
                (SortKey::Accession, "Accession"),
            ] {
                let arrow = if p.sort.0 == key { if p.sort.1 { " (asc)" } else { " (desc)" } } else { "" };
                if ui.button(format!("{}{arrow}", lang.tr(label))).clicked() {
                    p.sort = (key, if p.sort.0 == key { !p.sort.1 } else { true });
                    p.sort_studies();
                }
            }
            ui.label("");
            ui.end_row();
            for s in &p.studies {
                let selected = p.selected_study.as_deref() == Some(s.study_uid.as_str());
                if ui.selectable_label(selected, &s.patient_name).clicked() {
                    expand = Some(s.study_uid.clone());
                }
                ui.label(&s.patient_id);
                ui.label(&s.study_date);
                ui.label(s.modalities.join("\\"));
                ui.label(&s.study_description);
                ui.label(&s.accession_number);
                if ui.button(lang.tr("Retrieve")).clicked() {
                    let mut request = RetrieveRequest::study(&s.study_uid);
                    request.patient_id = s.patient_id.clone();
                    retrieve = Some((request, format!("study {}", s.study_date)));
                }
                ui.end_row();
                if selected {
                    for series in &p.series {
                        ui.label("");
                        ui.label(format!("  #{}", series.series_number.map(|n| n.to_string()).unwrap_or_default()));
                        ui.label(&series.modality);
                        ui.label(
                            series.instance_count.map(|n| format!("{n} {}", lang.tr("images"))).unwrap_or_default(),
                        );
                        ui.label(&series.series_description);
                        ui.label("");
                        if ui.button(lang.tr("Retrieve series")).clicked() {
                            retrieve = Some((
                                RetrieveRequest::series(&series.study_uid, &series.series_uid),
                                format!("series {}", series.series_description),
                            ));
                        }
                        ui.end_row();
                    }
                }
            }
        });
    });
    if let Some(study) = expand {
        p.search_series(study);
    }
    if let Some((request, label)) = retrieve
        && let Some(peer) = p.selected_peer()
    {
        let (method, open) = (p.settings.method, p.open_when_done);
        p.retrieve(peer, request, method, open, label);
    }
}

fn jobs_ui(ui: &mut egui::Ui, p: &mut PacsPanel, local_study: Option<&str>, lang: Lang) {
    ui.horizontal(|ui| {
        let can_send = local_study.is_some() && p.selected_peer().is_some();
        if ui
            .add_enabled(can_send, egui::Button::new(lang.tr("Send the selected local study")))
            .on_hover_text(lang.tr("C-STORE (DIMSE) or STOW-RS (DICOMweb) to the chosen node"))
            .clicked()
            && let Some(study) = local_study
        {
            p.send_study(study);
        }
        if p.jobs.iter().any(|j| j.outcome.is_some()) && ui.button(lang.tr("Clear finished")).clicked() {
            p.jobs.retain(|j| j.outcome.is_none());
        }
    });
    for job in &p.jobs {
        ui.horizontal(|ui| {
            let progress = job.progress.lock().map(|g| g.clone()).unwrap_or_default();
            match &job.outcome {
                None => {
                    let total = progress.remaining.map(|r| r + progress.done);
                    let fraction = total.filter(|&t| t > 0).map_or(0.0, |t| progress.done as f32 / t as f32);
                    ui.add(egui::ProgressBar::new(fraction).desired_width(220.0).text(format!(
                        "{}{} · {:.0} MB/s",
                        progress.done,
                        total.map(|t| format!("/{t}")).unwrap_or_default(),
                        progress.bytes_per_s / 1e6
                    )));
                    ui.label(&job.label);
                    if ui.button(lang.tr("Cancel")).clicked() {
                        job.cancel.store(true, Ordering::Relaxed);
                    }
                }
                Some(Ok(text)) => {
                    ui.colored_label(egui::Color32::from_rgb(80, 200, 120), "OK");
                    ui.label(format!("{}: {text}", job.label));
                }
                Some(Err(e)) => {
                    ui.colored_label(egui::Color32::from_rgb(230, 90, 80), "failed");
                    ui.label(format!("{}: {e}", job.label));
                }
            }
        });
    }
}

fn receiver_ui(ui: &mut egui::Ui, p: &mut PacsPanel, lang: Lang) {
    ui.horizontal_wrapped(|ui| {
        ui.strong(lang.tr("Receiver (Store SCP)"));
        let running = p.scp.is_some();
        ui.add_enabled_ui(!running, |ui| {
            let label = ui.label(lang.tr("AE title"));
            ui.add(egui::TextEdit::singleline(&mut p.settings.scp_ae_title).desired_width(90.0)).labelled_by(label.id);
            let label = ui.label(lang.tr("Port"));
            ui.add(egui::DragValue::new(&mut p.settings.scp_port).range(1..=65535)).labelled_by(label.id);
            let label = ui.label(lang.tr("Allowed senders"));
            ui.add(
                egui::TextEdit::singleline(&mut p.scp_allow_text)
                    .hint_text(lang.tr("saved PACS nodes only"))
                    .desired_width(140.0),
            )
            .labelled_by(label.id);
            ui.checkbox(&mut p.settings.scp_listen_on_network, lang.tr("Listen on the network"))
                .on_hover_text(lang.tr("Otherwise only programs on this computer can send"));
        });
        if running {
            if ui.button(lang.tr("Stop")).clicked() {
                p.stop_scp();
            }
        } else if ui.button(lang.tr("Start")).clicked() {
            p.settings.scp_allow = p
                .scp_allow_text
                .split([',', ' '])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            p.save_settings();
            p.start_scp();
        }
        if ui.checkbox(&mut p.settings.scp_autostart, lang.tr("Start with Lucent")).changed() {
            p.save_settings();
        }
    });
    if p.scp.is_some() || !p.scp_log.is_empty() {
        ui.label(format!("{} {}", p.scp_received, lang.tr("instance(s) received")));
        egui::ScrollArea::vertical().id_salt("scp-log").max_height(90.0).stick_to_bottom(true).show(ui, |ui| {
            for line in &p.scp_log {
                ui.monospace(line);
            }
        });
    }
}
