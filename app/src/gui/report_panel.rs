//! The report and QA windows.
//!
//! * Report: the preliminary report of the study on screen, drafted from its AI findings
//!   (`report::draft`), one editable text per section, the findings with accept / reject (a
//!   reason code and a comment) that update the AI sentences, the reading-error checks, sign
//!   (immutable afterwards; later changes are addenda), the version list, exports (PDF, DICOM SR,
//!   FHIR; before signing only when marked preliminary) and sending the SR to a PACS node.
//! * QA: the worklist of studies with AI findings (filter by label, model, score, decision;
//!   sorted by the highest flagged score for triage), per-lesion QA review (kept apart from the
//!   reader's decisions: a QA review never alters a signed report) and the statistics per model
//!   version and finding, with CSV export.
//!
//! The report store (`report::store::ReportStore`, SQLite) belongs to the `lucent-report` worker
//! thread; the UI sends requests on a bounded channel and polls the replies. Drafts are autosaved
//! a moment after the last keystroke.
//!
//! Deciding, signing, addenda and QA reviews need a **signed-in** user: the reader types their
//! passphrase once, the worker unlocks their signing key (`report::signing`) and keeps it until
//! *Sign out*; the passphrase itself is dropped at once. On a store without users, the same place
//! offers to create the first administrator.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use report::checks::Warning;
use report::draft::{Report, SectionId};
use report::model::{AiFinding, Decisions, FindingDecision, FindingEdit, Lang as ReportLang, ReasonCode, Side};
use report::stats::LabelStats;
use report::store::{DecidedFinding, ReportStatus, ReportStore, ReportVersion, Role};
use report::{Credential, Passphrase};

use super::i18n::Lang;
use crate::ai::{DISCLAIMER, ReadReport, SeriesReading};
use crate::reporting::{self, ExportPaths, StudyBundle};

/// Seconds of quiet typing before a draft is saved.
const AUTOSAVE_AFTER_S: f64 = 1.5;

enum Request {
    /// Build the study's bundle from its files and AI readings, and load or draft its report.
    Open {
        study_uid: String,
        study_dir: PathBuf,
        readings: Vec<SeriesReading>,
        lang: ReportLang,
        user: String,
    },
    SaveDraft {
        study_uid: String,
        report: Report,
        user: String,
    },
    Decide {
        study_uid: String,
        finding_id: String,
        decision: FindingDecision,
    },
    Sign {
        study_uid: String,
    },
    Addendum {
        study_uid: String,
        text: String,
    },
    Export {
        study_uid: String,
        preliminary: bool,
        dir: PathBuf,
        user: String,
    },
    Worklist,
    QaReview {
        study_uid: String,
        finding_id: String,
        decision: FindingDecision,
    },
    /// Whether the store has an administrator yet.
    Users,
    /// Unlocks `name`'s signing key and keeps it in the worker.
    SignIn {
        name: String,
        passphrase: Passphrase,
    },
    SignOut,
    /// The signed-in administrator adds a user with a first passphrase.
    AddUser {
        name: String,
        role: Role,
        passphrase: Passphrase,
    },
    /// Creates the first administrator and signs them in.
    InitAdmin {
        name: String,
        role: Role,
        passphrase: Passphrase,
    },
    /// The statistics as CSV and the reviewers' marks for retraining (SR + JSONL) into `dir`.
    ExportQa {
        dir: PathBuf,
    },
}

enum Reply {
    Opened(Box<Opened>),
    Saved,
    Versions {
        study_uid: String,
        versions: Vec<ReportVersion>,
        status: Option<ReportStatus>,
    },
    Exported {
        study_uid: String,
        files: Vec<PathBuf>,
    },
    Worklist {
        decided: Vec<DecidedFinding>,
        stats: Vec<LabelStats>,
    },
    Error(String),
    Info(String),
    /// Who is signed in (None: nobody), and whether the store has an administrator.
    Session {
        signed_in: Option<SignedIn>,
        has_admin: bool,
    },
}

/// The signed-in user as the UI shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    pub name: String,
    pub role: Role,
    pub admin: bool,
}

impl SignedIn {
    fn of(credential: &Credential) -> Self {
        Self { name: credential.name().to_owned(), role: credential.role(), admin: credential.is_admin() }
    }
}

struct Opened {
    bundle: StudyBundle,
    report: Report,
    decisions: Decisions,
    versions: Vec<ReportVersion>,
    status: Option<ReportStatus>,
}

/// The worker that owns the report store.
struct Worker {
    requests: Sender<Request>,
    replies: Receiver<Reply>,
}

impl Worker {
    fn start(store_dir: PathBuf, repaint: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Self> {
        let (requests, rx) = crossbeam_channel::bounded::<Request>(32);
        let (tx, replies) = crossbeam_channel::bounded::<Reply>(32);
        std::thread::Builder::new().name("lucent-report".into()).spawn(move || {
            let mut store: Option<ReportStore> = None;
            let mut bundles: Vec<StudyBundle> = Vec::new();
            let mut credential: Option<Credential> = None;
            for request in rx.iter() {
                let store = match &mut store {
                    Some(s) => s,
                    None => match crate::reporting::open_report_store(&store_dir) {
                        Ok(s) => store.insert(s),
                        Err(e) => {
                            let _ = tx.send(Reply::Error(format!("Cannot open the report store: {e}")));
                            repaint();
                            continue;
                        }
                    },
                };
                let reply = handle(store, &store_dir, &mut bundles, &mut credential, request)
                    .unwrap_or_else(|e| Reply::Error(format!("{e:#}")));
                if tx.send(reply).is_err() {
                    break;
                }
                repaint();
            }
        })?;
        Ok(Self { requests, replies })
    }
}

fn versions_reply(store: &ReportStore, study_uid: &str) -> anyhow::Result<Reply> {
    Ok(Reply::Versions {
        study_uid: study_uid.to_owned(),
        versions: store.versions(study_uid)?,
        status: store.status(study_uid)?,
    })
}

/// The signed-in user's credential, or why there is none.
fn signed_in(credential: Option<&Credential>) -> anyhow::Result<&Credential> {
    credential.ok_or_else(|| anyhow::anyhow!("sign in first: your name and passphrase, at the top of the window"))
}

fn session_reply(store: &ReportStore, credential: Option<&Credential>) -> anyhow::Result<Reply> {
    Ok(Reply::Session { signed_in: credential.map(SignedIn::of), has_admin: store.has_admin()? })
}

fn handle(
    store: &mut ReportStore,
    store_dir: &Path,
    bundles: &mut Vec<StudyBundle>,
    credential: &mut Option<Credential>,
    request: Request,
) -> anyhow::Result<Reply> {
    match request {
        Request::Users => session_reply(store, credential.as_ref()),
        Request::SignIn { name, passphrase } => {
            *credential = None;
            *credential = Some(store.unlock(&name, &passphrase)?);
            session_reply(store, credential.as_ref())
        }
        Request::AddUser { name, role, passphrase } => {
            let admin = signed_in(credential.as_ref())?;
            let record = store.add_user(admin, &name, role, false, &passphrase)?;
            Ok(Reply::Info(format!(
                "Added {} ({}); they sign in with the first passphrase and change it with `lucent report passwd`",
                record.name,
                record.role.code()
            )))
        }
        Request::SignOut => {
            *credential = None;
            session_reply(store, None)
        }
        Request::InitAdmin { name, role, passphrase } => {
            *credential = Some(store.init_admin(&name, role, &passphrase)?);
            session_reply(store, credential.as_ref())
        }
        Request::Open { study_uid, study_dir, readings, lang, user } => {
            let reading = ReadReport { disclaimer: DISCLAIMER, series: readings };
            let bundle = reporting::bundles(&study_dir, &reading)?
                .into_iter()
                .find(|b| b.inputs.context.study_uid == study_uid)
                .ok_or_else(|| anyhow::anyhow!("no readable images of the study in the store"))?;
            store.record_open(&user, &study_uid)?;
            if !bundle.inputs.findings.is_empty() {
                store.record_ai_run(&user, &study_uid, &bundle.inputs.findings)?;
            }
            let decisions = store.decisions(&study_uid)?;
            let report = match store.draft(&study_uid)? {
                Some(ReportVersion { body: report::store::VersionBody::Report(mut r), .. }) => {
                    // A saved draft keeps the reader's text; refresh only Lucent's own sentences.
                    r.update(&bundle.inputs, &decisions);
                    r
                }
                _ => {
                    let r = report::draft::draft(&bundle.inputs, &decisions, lang);
                    if store.status(&study_uid)? != Some(ReportStatus::Final)
                        && store.status(&study_uid)? != Some(ReportStatus::Amended)
                    {
                        store.save_draft(&user, &study_uid, &r)?;
                    }
                    r
                }
            };
            let versions = store.versions(&study_uid)?;
            let status = store.status(&study_uid)?;
            bundles.retain(|b| b.inputs.context.study_uid != study_uid);
            bundles.push(bundle.clone());
            Ok(Reply::Opened(Box::new(Opened { bundle, report, decisions, versions, status })))
        }
        Request::SaveDraft { study_uid, report, user } => {
            store.save_draft(&user, &study_uid, &report)?;
            Ok(Reply::Saved)
        }
        Request::Decide { study_uid, finding_id, decision } => {
            let reader = signed_in(credential.as_ref())?;
            store.set_decision(reader, &study_uid, &finding_id, &decision)?;
            Ok(Reply::Saved)
        }
        Request::Sign { study_uid } => {
            let reader = signed_in(credential.as_ref())?;
            store.sign(reader, &study_uid)?;
            versions_reply(store, &study_uid)
        }
        Request::Addendum { study_uid, text } => {
            let reader = signed_in(credential.as_ref())?;
            store.add_addendum(reader, &study_uid, &text)?;
            versions_reply(store, &study_uid)
        }
        Request::Export { study_uid, preliminary, dir, user } => {
            let bundle = bundles
                .iter()
                .find(|b| b.inputs.context.study_uid == study_uid)
                .ok_or_else(|| anyhow::anyhow!("open the report first"))?;
            let source = store.export_source(&study_uid, preliminary)?;
            let decisions = store.decisions(&study_uid)?;
            std::fs::create_dir_all(&dir)?;
            let tag = match source.status {
                ReportStatus::Draft => "preliminary",
                ReportStatus::Final => "final",
                ReportStatus::Amended => "amended",
            };
            let stem = format!("report-{}", &study_uid.chars().rev().take(12).collect::<String>());
            let paths = ExportPaths {
                pdf: Some(dir.join(format!("{stem}-{tag}.pdf"))),
                sr: Some(dir.join(format!("{stem}-{tag}-sr.dcm"))),
                fhir: Some(dir.join(format!("{stem}-{tag}-fhir.json"))),
                pdf_dicom: Some(dir.join(format!("{stem}-{tag}-pdf.dcm"))),
            };
            let now = report::time::now_rfc3339();
            let written = reporting::write_exports(bundle, &source, &decisions, &paths, 0, &now)?;
            for (format, sha) in &written {
                store.record_export(&user, &study_uid, format, source.status, sha, false)?;
            }
            let files = [paths.pdf, paths.sr, paths.fhir, paths.pdf_dicom].into_iter().flatten().collect();
            Ok(Reply::Exported { study_uid, files })
        }
        Request::Worklist => {
            let decided = store.decided_findings()?;
            let stats = report::stats::compute(&decided);
            Ok(Reply::Worklist { decided, stats })
        }
        Request::QaReview { study_uid, finding_id, decision } => {
            let qa_lead = signed_in(credential.as_ref())?;
            store.add_qa_review(qa_lead, &study_uid, &finding_id, &decision)?;
            let decided = store.decided_findings()?;
            let stats = report::stats::compute(&decided);
            Ok(Reply::Worklist { decided, stats })
        }
        Request::ExportQa { dir } => {
            use anyhow::Context as _;
            let qa_lead = signed_in(credential.as_ref())?;
            let stats = report::stats::compute(&store.decided_findings()?);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::write(dir.join("qa_statistics.csv"), report::stats::to_csv(&stats))?;
            std::fs::write(dir.join("qa_score_histogram.csv"), report::stats::histogram_csv(&stats))?;
            let marks_dir = dir.join("qa-marks");
            let now = report::time::now_rfc3339();
            let s = crate::qa_export::export_qa_marks(store, store_dir, &marks_dir, qa_lead, &now)?;
            Ok(Reply::Info(format!(
                "Wrote qa_statistics.csv, qa_score_histogram.csv and {} review mark(s) ({} SR file(s) + marks.jsonl) to {}",
                s.marks,
                s.sr_files.len(),
                dir.display()
            )))
        }
    }
}

/// A decision being composed in the UI (reason and comment before it is sent).
#[derive(Debug, Clone)]
struct Pending {
    finding_id: String,
    reason: ReasonCode,
    comment: String,
    /// `Some`: an edit (relabel, side, move / resize the box); `None`: a rejection.
    edit: Option<FindingEdit>,
}

impl Pending {
    fn reject(finding_id: &str) -> Self {
        Self {
            finding_id: finding_id.to_owned(),
            reason: ReasonCode::FalsePositive,
            comment: String::new(),
            edit: None,
        }
    }

    fn edit(f: &AiFinding) -> Self {
        Self {
            finding_id: f.id.clone(),
            reason: ReasonCode::WrongLabel,
            comment: String::new(),
            edit: Some(FindingEdit {
                label: Some(f.label.clone()),
                side: Some(f.side),
                lobe: None,
                geometry: f.geometry,
                nodule: None,
            }),
        }
    }

    fn decision(&self) -> FindingDecision {
        match &self.edit {
            Some(edit) => {
                FindingDecision::Edited { edit: edit.clone(), reason: self.reason, comment: self.comment.clone() }
            }
            None => FindingDecision::Rejected { reason: self.reason, comment: self.comment.clone() },
        }
    }
}

/// The report window's state.
pub struct ReportPanel {
    pub open: bool,
    pub qa_open: bool,
    worker: Worker,
    /// The name typed in the sign-in line (drafts are saved under it until someone signs in).
    pub user: String,
    /// Typed, sent once, then cleared.
    passphrase: String,
    passphrase_repeat: String,
    new_admin_role: Role,
    /// The administrator's *Add user* form: name, role, first passphrase.
    new_user: String,
    new_user_role: Role,
    new_user_passphrase: String,
    session: Option<SignedIn>,
    /// Whether the store has an administrator (None until the worker says).
    has_admin: Option<bool>,
    lang: ReportLang,
    study_uid: Option<String>,
    bundle: Option<StudyBundle>,
    report: Option<Report>,
    decisions: Decisions,
    versions: Vec<ReportVersion>,
    status: Option<ReportStatus>,
    warnings: Vec<Warning>,
    dirty_since: Option<f64>,
    addendum: String,
    preliminary: bool,
    rejecting: Option<Pending>,
    exported: Vec<PathBuf>,
    message: String,
    loading: bool,
    export_dir: PathBuf,
    /// *Send SR to PACS* sends the Encapsulated PDF too.
    send_pdf: bool,
    // QA
    decided: Vec<DecidedFinding>,
    stats: Vec<LabelStats>,
    qa_label: String,
    qa_min_score: f32,
    qa_only_undecided: bool,
    qa_max_score: f32,
    qa_model: String,
    qa_date_from: String,
    qa_date_to: String,
    qa_decision: Option<&'static str>,
    qa_rejecting: Option<(String, Pending)>,
}

/// What the windows ask of the app.
#[derive(Debug, Default)]
pub struct ReportOutput {
    /// Show this image: (series UID, SOP Instance UID).
    pub show_image: Option<(String, String)>,
    /// Send these files (the SR, and the Encapsulated PDF when asked) to the PACS node chosen
    /// in the PACS window.
    pub send_files: Vec<PathBuf>,
    pub status: Option<String>,
}

impl ReportPanel {
    pub fn new(store_dir: PathBuf, data_dir: &Path, repaint: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Self> {
        let user = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "reader".into());
        let panel = Self {
            open: false,
            qa_open: false,
            worker: Worker::start(store_dir, repaint)?,
            user,
            passphrase: String::new(),
            passphrase_repeat: String::new(),
            new_admin_role: Role::Reader,
            new_user: String::new(),
            new_user_role: Role::Reader,
            new_user_passphrase: String::new(),
            session: None,
            has_admin: None,
            lang: ReportLang::En,
            study_uid: None,
            bundle: None,
            report: None,
            decisions: Decisions::new(),
            versions: Vec::new(),
            status: None,
            warnings: Vec::new(),
            dirty_since: None,
            addendum: String::new(),
            preliminary: false,
            rejecting: None,
            exported: Vec::new(),
            message: String::new(),
            loading: false,
            export_dir: data_dir.join("exports"),
            send_pdf: true,
            decided: Vec::new(),
            stats: Vec::new(),
            qa_label: String::new(),
            qa_min_score: 0.0,
            qa_only_undecided: false,
            qa_max_score: 1.0,
            qa_model: String::new(),
            qa_date_from: String::new(),
            qa_date_to: String::new(),
            qa_decision: None,
            qa_rejecting: None,
        };
        panel.send(Request::Users);
        Ok(panel)
    }

    fn send(&self, request: Request) {
        if self.worker.requests.try_send(request).is_err() {
            tracing::warn!("the report worker is busy; request dropped");
        }
    }

    /// Opens (or re-opens) the report of `study_uid` from its files in the store and the AI
    /// readings of its series.
    pub fn open_study(&mut self, study_uid: &str, study_dir: PathBuf, readings: Vec<SeriesReading>, ui_lang: Lang) {
        self.lang = if ui_lang == Lang::Ko { ReportLang::Ko } else { ReportLang::En };
        self.flush_autosave();
        self.study_uid = Some(study_uid.to_owned());
        self.bundle = None;
        self.report = None;
        self.warnings.clear();
        self.exported.clear();
        self.loading = true;
        self.send(Request::Open {
            study_uid: study_uid.to_owned(),
            study_dir,
            readings,
            lang: self.lang,
            user: self.author(),
        });
    }

    pub fn study_uid(&self) -> Option<&str> {
        self.study_uid.as_deref()
    }

    /// The report being edited (once drafted).
    pub fn report(&self) -> Option<&Report> {
        self.report.as_ref()
    }

    pub fn findings(&self) -> &[AiFinding] {
        self.bundle.as_ref().map_or(&[], |b| b.inputs.findings.as_slice())
    }

    pub fn status(&self) -> Option<ReportStatus> {
        self.status
    }

    pub fn versions(&self) -> &[ReportVersion] {
        &self.versions
    }

    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// Signs `name` in: the worker unlocks their signing key with `passphrase`.
    pub fn sign_in(&mut self, name: &str, passphrase: &str) {
        self.user = name.trim().to_owned();
        self.send(Request::SignIn { name: self.user.clone(), passphrase: Passphrase::new(passphrase.to_owned()) });
    }

    /// Creates the first administrator (on a store without users) and signs them in.
    pub fn create_first_admin(&mut self, name: &str, role: Role, passphrase: &str) {
        self.user = name.trim().to_owned();
        self.send(Request::InitAdmin {
            name: self.user.clone(),
            role,
            passphrase: Passphrase::new(passphrase.to_owned()),
        });
    }

    /// The signed-in administrator adds `name` with `role` and a first passphrase.
    pub fn add_user(&mut self, name: &str, role: Role, passphrase: &str) {
        if !self.session.as_ref().is_some_and(|s| s.admin) {
            self.message = "Only an administrator adds users".into();
            return;
        }
        self.send(Request::AddUser {
            name: name.trim().to_owned(),
            role,
            passphrase: Passphrase::new(passphrase.to_owned()),
        });
    }

    pub fn sign_out(&mut self) {
        self.send(Request::SignOut);
    }

    /// Who is signed in.
    pub fn signed_in_as(&self) -> Option<&SignedIn> {
        self.session.as_ref()
    }

    /// Whether the store has an administrator (None until known).
    pub fn has_admin(&self) -> Option<bool> {
        self.has_admin
    }

    /// The name drafts and exports are recorded under: the signed-in user, else the typed name.
    fn author(&self) -> String {
        self.session.as_ref().map_or_else(|| self.user.trim().to_owned(), |s| s.name.clone())
    }

    /// Refuses (with a message) what needs a signed-in user of `role` when there is none.
    fn require_session(&mut self, role: Role) -> bool {
        match &self.session {
            Some(s) if s.role == role => true,
            Some(s) => {
                self.message = format!("{} is a {}; this needs a {}", s.name, s.role.code(), role.code());
                false
            }
            None => {
                self.message = "Sign in first: your name and passphrase, at the top of the window".into();
                false
            }
        }
    }

    /// Reloads the QA worklist and statistics.
    pub fn refresh_worklist(&self) {
        self.send(Request::Worklist);
    }

    /// The findings with their decisions (QA review first), for the worklist.
    pub fn decided(&self) -> &[DecidedFinding] {
        &self.decided
    }

    /// The last status line of the report and QA windows.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where exports are written.
    pub fn export_dir(&self) -> &Path {
        &self.export_dir
    }

    pub fn stats(&self) -> &[LabelStats] {
        &self.stats
    }

    /// Records a QA lead's review of one finding (never changes a report version).
    pub fn qa_review(&mut self, study_uid: &str, finding_id: &str, decision: FindingDecision) {
        if !self.require_session(Role::QaLead) {
            return;
        }
        self.send(Request::QaReview { study_uid: study_uid.to_owned(), finding_id: finding_id.to_owned(), decision });
    }

    /// Signs the current draft (after saving pending edits).
    pub fn sign(&mut self) {
        if let Some(study) = self.study_uid.clone()
            && self.require_session(Role::Reader)
        {
            self.flush_autosave();
            self.send(Request::Sign { study_uid: study });
        }
    }

    fn signed(&self) -> bool {
        matches!(self.status, Some(ReportStatus::Final | ReportStatus::Amended))
    }

    fn recheck(&mut self) {
        if let (Some(report), Some(bundle)) = (&self.report, &self.bundle) {
            self.warnings = report::checks::check(
                report,
                &bundle.inputs.findings,
                &self.decisions,
                bundle.inputs.lung_rads.as_ref(),
            );
        }
    }

    fn flush_autosave(&mut self) {
        if self.dirty_since.take().is_some()
            && let (Some(study_uid), Some(report)) = (&self.study_uid, &self.report)
            && !self.signed()
        {
            self.send(Request::SaveDraft { study_uid: study_uid.clone(), report: report.clone(), user: self.author() });
        }
    }

    /// Records the reader's decision on a finding and updates the AI sentences of the draft.
    pub fn decide(&mut self, finding_id: &str, decision: FindingDecision) {
        if !self.require_session(Role::Reader) {
            return;
        }
        let (Some(study_uid), Some(bundle)) = (self.study_uid.clone(), &self.bundle) else { return };
        self.decisions.insert(finding_id.to_owned(), decision.clone());
        if let Some(report) = &mut self.report {
            report.update(&bundle.inputs, &self.decisions);
        }
        self.send(Request::Decide { study_uid, finding_id: finding_id.to_owned(), decision });
        self.dirty_since = Some(0.0);
        self.flush_autosave();
        self.recheck();
    }

    /// Collects worker replies and autosaves; call every frame.
    pub fn poll(&mut self, now_s: f64) -> ReportOutput {
        let mut out = ReportOutput::default();
        if let Some(since) = self.dirty_since
            && now_s - since > AUTOSAVE_AFTER_S
        {
            self.flush_autosave();
        }
        while let Ok(reply) = self.worker.replies.try_recv() {
            match reply {
                Reply::Opened(o) => {
                    if self.study_uid.as_deref() == Some(o.bundle.inputs.context.study_uid.as_str()) {
                        self.loading = false;
                        self.bundle = Some(o.bundle);
                        self.report = Some(o.report);
                        self.decisions = o.decisions;
                        self.versions = o.versions;
                        self.status = o.status;
                        self.recheck();
                    }
                }
                Reply::Saved => {}
                Reply::Versions { study_uid, versions, status } => {
                    if self.study_uid.as_deref() == Some(study_uid.as_str()) {
                        self.versions = versions;
                        self.status = status;
                        self.addendum.clear();
                        out.status = Some(format!("Report {}", status.map_or("saved", |s| s.fhir())));
                    }
                }
                Reply::Exported { study_uid, files } => {
                    if self.study_uid.as_deref() == Some(study_uid.as_str()) {
                        out.status = Some(format!("Exported {} file(s) to {}", files.len(), self.export_dir.display()));
                        self.exported = files;
                    }
                }
                Reply::Worklist { decided, stats } => {
                    self.decided = decided;
                    self.stats = stats;
                }
                Reply::Error(e) => {
                    self.loading = false;
                    self.message = e.clone();
                    out.status = Some(e);
                }
                Reply::Info(text) => self.message = text,
                Reply::Session { signed_in, has_admin } => {
                    self.message = match &signed_in {
                        Some(s) => format!("Signed in as {} ({})", s.name, s.role.code()),
                        None if has_admin => "Signed out".into(),
                        None => "No users yet: create the first administrator".into(),
                    };
                    self.session = signed_in;
                    self.has_admin = Some(has_admin);
                }
            }
        }
        out
    }
}

fn reason_label(r: ReasonCode) -> &'static str {
    match r {
        ReasonCode::FalsePositive => "False positive",
        ReasonCode::WrongLocation => "Wrong location",
        ReasonCode::WrongSize => "Wrong size",
        ReasonCode::WrongLabel => "Wrong label",
        ReasonCode::Artifact => "Artifact",
        ReasonCode::KnownOrBenign => "Known or benign",
        ReasonCode::ClinicallyInsignificant => "Clinically insignificant",
        ReasonCode::Other => "Other",
    }
}

const REASONS: [ReasonCode; 8] = [
    ReasonCode::FalsePositive,
    ReasonCode::WrongLocation,
    ReasonCode::WrongSize,
    ReasonCode::WrongLabel,
    ReasonCode::Artifact,
    ReasonCode::KnownOrBenign,
    ReasonCode::ClinicallyInsignificant,
    ReasonCode::Other,
];

fn finding_line(f: &AiFinding) -> String {
    // Detections are the detector's flags (no separate operating threshold to show).
    let mut text = match &f.nodule {
        Some(n) => format!("{} {:.2}, {:.1} mm", f.label, f.score, n.mean_diameter_mm),
        // A CT candidate whose segmentation was implausible: never a size.
        None if f.threshold <= 0.0 => format!("{} {:.2}, not measurable", f.label, f.score),
        None => format!("{} {:.2} (≥ {:.2})", f.label, f.score, f.threshold),
    };
    text.push_str(&format!(" · {} {}", f.model_name, f.model_version));
    text
}

/// The reason (and, for an edit, the new label, side and box) of a rejection or edit.
/// `Some(true)`: confirmed; `Some(false)`: cancelled.
fn decision_editor_ui(ui: &mut egui::Ui, pending: &mut Pending, lang: Lang) -> Option<bool> {
    let mut result = None;
    if let Some(edit) = &mut pending.edit {
        ui.horizontal(|ui| {
            let label = ui.label(lang.tr("Label"));
            let mut text = edit.label.clone().unwrap_or_default();
            if ui.add(egui::TextEdit::singleline(&mut text).desired_width(140.0)).labelled_by(label.id).changed() {
                edit.label = Some(text);
            }
            let mut side = edit.side.unwrap_or_default();
            egui::ComboBox::from_label(lang.tr("Side")).selected_text(side_label(side)).show_ui(ui, |ui| {
                for s in [Side::Right, Side::Left, Side::Bilateral, Side::Unknown] {
                    ui.selectable_value(&mut side, s, side_label(s));
                }
            });
            edit.side = Some(side);
        });
        if let Some(g) = &mut edit.geometry {
            ui.horizontal(|ui| {
                ui.label(lang.tr("Box (pixels)"));
                let [x0, y0] = &mut g.min_px;
                let [x1, y1] = &mut g.max_px;
                for (value, name) in [(x0, "x0"), (y0, "y0"), (x1, "x1"), (y1, "y1")] {
                    let label = ui.label(name);
                    ui.add(egui::DragValue::new(value).speed(1.0)).labelled_by(label.id);
                }
                // A moved or resized box has no calibrated extent any more until recomputed.
                g.min_mm = None;
                g.max_mm = None;
            });
        }
    }
    ui.horizontal(|ui| {
        egui::ComboBox::from_label(lang.tr("Reason")).selected_text(lang.tr(reason_label(pending.reason))).show_ui(
            ui,
            |ui| {
                for r in REASONS {
                    ui.selectable_value(&mut pending.reason, r, lang.tr(reason_label(r)));
                }
            },
        );
        let label = ui.label(lang.tr("Comment"));
        ui.add(egui::TextEdit::singleline(&mut pending.comment).desired_width(140.0)).labelled_by(label.id);
        let confirm = if pending.edit.is_some() { lang.tr("Save edit") } else { lang.tr("Reject") };
        if ui.button(confirm).clicked() {
            result = Some(true);
        }
        if ui.button(lang.tr("Cancel")).clicked() {
            result = Some(false);
        }
    });
    result
}

fn side_label(side: Side) -> &'static str {
    match side {
        Side::Right => "right",
        Side::Left => "left",
        Side::Bilateral => "bilateral",
        Side::Unknown => "unknown",
    }
}

/// The sign-in line shared by the report and QA windows: who is signed in (and *Sign out*), the
/// name and passphrase to sign in, or, on a store without users, the first administrator's form.
fn session_ui(ui: &mut egui::Ui, p: &mut ReportPanel, lang: Lang) {
    if let Some(s) = p.session.clone() {
        ui.horizontal(|ui| {
            let role = match s.role {
                Role::Reader => lang.tr("Reader"),
                Role::QaLead => lang.tr("QA lead"),
            };
            let admin = if s.admin { format!(", {}", lang.tr("administrator")) } else { String::new() };
            ui.label(format!("{} {} ({role}{admin})", lang.tr("Signed in as"), s.name));
            if ui.button(lang.tr("Sign out")).clicked() {
                p.sign_out();
            }
        });
        if s.admin {
            ui.collapsing(lang.tr("Add user"), |ui| {
                ui.horizontal(|ui| {
                    let label = ui.label(lang.tr("Name"));
                    ui.add(egui::TextEdit::singleline(&mut p.new_user).desired_width(110.0)).labelled_by(label.id);
                    for (role, text) in [(Role::Reader, "Reader"), (Role::QaLead, "QA lead")] {
                        if ui.selectable_label(p.new_user_role == role, lang.tr(text)).clicked() {
                            p.new_user_role = role;
                        }
                    }
                    let label = ui.label(lang.tr("First passphrase"));
                    ui.add(egui::TextEdit::singleline(&mut p.new_user_passphrase).password(true).desired_width(130.0))
                        .labelled_by(label.id);
                    let ready = !p.new_user.trim().is_empty() && !p.new_user_passphrase.is_empty();
                    if ui.add_enabled(ready, egui::Button::new(lang.tr("Add"))).clicked() {
                        let (name, role) = (std::mem::take(&mut p.new_user), p.new_user_role);
                        let passphrase = std::mem::take(&mut p.new_user_passphrase);
                        p.add_user(&name, role, &passphrase);
                    }
                });
            });
        }
        return;
    }
    let first_admin = p.has_admin == Some(false);
    if first_admin {
        ui.label(lang.tr("No users yet: create the first administrator, who then adds the others"));
    }
    let mut submit = false;
    ui.horizontal(|ui| {
        let label = ui.label(lang.tr("Name"));
        ui.add(egui::TextEdit::singleline(&mut p.user).desired_width(110.0)).labelled_by(label.id);
        let label = ui.label(lang.tr("Passphrase"));
        let field = ui
            .add(egui::TextEdit::singleline(&mut p.passphrase).password(true).desired_width(130.0))
            .labelled_by(label.id);
        submit |= field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        if first_admin {
            let label = ui.label(lang.tr("Repeat"));
            ui.add(egui::TextEdit::singleline(&mut p.passphrase_repeat).password(true).desired_width(130.0))
                .labelled_by(label.id);
            for (role, text) in [(Role::Reader, "Reader"), (Role::QaLead, "QA lead")] {
                if ui.selectable_label(p.new_admin_role == role, lang.tr(text)).clicked() {
                    p.new_admin_role = role;
                }
            }
            submit |= ui.button(lang.tr("Create administrator")).clicked();
        } else {
            submit |= ui.button(lang.tr("Sign in")).clicked();
        }
    });
    if submit && !p.user.trim().is_empty() && !p.passphrase.is_empty() {
        let passphrase = std::mem::take(&mut p.passphrase);
        let repeat = std::mem::take(&mut p.passphrase_repeat);
        let name = p.user.clone();
        if !first_admin {
            p.sign_in(&name, &passphrase);
        } else if repeat != passphrase {
            p.message = lang.tr("The two passphrases differ").to_owned();
        } else {
            p.create_first_admin(&name, p.new_admin_role, &passphrase);
        }
    }
}

/// The report window.
pub fn report_window_ui(ctx: &egui::Context, p: &mut ReportPanel, lang: Lang) -> ReportOutput {
    let mut out = ReportOutput::default();
    let mut open = p.open;
    let now = ctx.input(|i| i.time);
    egui::Window::new(lang.tr("Report")).open(&mut open).default_size([620.0, 720.0]).resizable(true).show(ctx, |ui| {
        session_ui(ui, p, lang);
        ui.horizontal(|ui| {
            ui.label(lang.tr("Report language"));
            for l in [ReportLang::En, ReportLang::Ko] {
                let label = if l == ReportLang::En { "English" } else { "한국어" };
                if ui.selectable_label(p.lang == l, label).clicked() && p.lang != l && !p.signed() {
                    p.lang = l;
                    if let (Some(bundle), Some(study)) = (&p.bundle, p.study_uid.clone()) {
                        // A new language is a new draft from the findings (the old text is replaced).
                        p.report = Some(report::draft::draft(&bundle.inputs, &p.decisions, l));
                        p.dirty_since = Some(now);
                        p.send(Request::SaveDraft {
                            study_uid: study,
                            report: p
                                .report
                                .clone()
                                .unwrap_or_else(|| report::draft::draft(&bundle.inputs, &p.decisions, l)),
                            user: p.author(),
                        });
                        p.recheck();
                    }
                }
            }
        });
        if p.loading {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(lang.tr("Drafting the report…"));
            });
        }
        let Some(bundle) = p.bundle.clone() else {
            if p.study_uid.is_none() {
                ui.label(lang.tr("Open a study, then click Report"));
            }
            if !p.message.is_empty() {
                ui.label(&p.message);
            }
            return;
        };
        let c = &bundle.inputs.context;
        ui.strong(format!("{} · {} · {} · {}", c.patient_name, c.patient_id, c.study_date, c.modality));
        let status_text = match p.status {
            Some(ReportStatus::Final) => lang.tr("SIGNED"),
            Some(ReportStatus::Amended) => lang.tr("SIGNED, with addenda"),
            _ => lang.tr("PRELIMINARY — NOT SIGNED"),
        };
        ui.colored_label(
            if p.signed() { egui::Color32::from_rgb(80, 200, 120) } else { egui::Color32::from_rgb(240, 180, 60) },
            status_text,
        );
        ui.separator();
        // Findings with reader decisions.
        ui.strong(lang.tr("AI findings"));
        let signed = p.signed();
        let mut decide: Option<(String, FindingDecision)> = None;
        for f in &bundle.inputs.findings {
            if !f.is_flagged() && f.nodule.is_none() {
                continue;
            }
            let decision = p.decisions.get(&f.id).cloned().unwrap_or_default();
            ui.horizontal(|ui| {
                let colour = match &decision {
                    FindingDecision::Pending => ui.visuals().text_color(),
                    d if d.is_accepted() => egui::Color32::from_rgb(80, 200, 120),
                    _ => egui::Color32::from_rgb(160, 160, 160),
                };
                ui.colored_label(colour, finding_line(f));
                ui.weak(lang.tr(match decision.code() {
                    "accepted" => "accepted",
                    "rejected" => "rejected",
                    "edited" => "edited",
                    _ => "pending",
                }));
                if let Some(image) = &f.image
                    && ui.small_button(lang.tr("Show")).clicked()
                {
                    out.show_image = Some((image.series_uid.clone(), image.sop_instance_uid.clone()));
                }
                ui.add_enabled_ui(!signed, |ui| {
                    if ui.small_button(lang.tr("Accept")).clicked() {
                        decide = Some((f.id.clone(), FindingDecision::Accepted));
                    }
                    if ui.small_button(lang.tr("Reject…")).clicked() {
                        p.rejecting = Some(Pending::reject(&f.id));
                    }
                    if ui.small_button(lang.tr("Edit…")).clicked() {
                        p.rejecting = Some(Pending::edit(f));
                    }
                    if !matches!(decision, FindingDecision::Pending) && ui.small_button(lang.tr("Undo")).clicked() {
                        decide = Some((f.id.clone(), FindingDecision::Pending));
                    }
                });
            });
            if let Some(pending) = &mut p.rejecting
                && pending.finding_id == f.id
            {
                match decision_editor_ui(ui, pending, lang) {
                    Some(true) => {
                        decide = Some((f.id.clone(), pending.decision()));
                        p.rejecting = None;
                    }
                    Some(false) => p.rejecting = None,
                    None => {}
                }
            }
        }
        if bundle.inputs.findings.iter().all(|f| !f.is_flagged() && f.nodule.is_none()) {
            ui.weak(lang.tr("No AI finding above its threshold"));
        }
        if let Some((id, decision)) = decide {
            p.decide(&id, decision);
        }
        ui.separator();
        // The report text, section by section.
        egui::ScrollArea::vertical().id_salt("report-text").max_height(300.0).show(ui, |ui| {
            let Some(report) = &mut p.report else { return };
            let ids: Vec<SectionId> = report.sections.iter().map(|s| s.id).collect();
            let mut changed = false;
            for id in ids {
                let label = ui.strong(id.title(report.lang));
                let mut text = report.section_text(id).to_owned();
                let response = ui
                    .add_enabled(
                        !signed,
                        egui::TextEdit::multiline(&mut text).desired_width(f32::INFINITY).desired_rows(2),
                    )
                    .labelled_by(label.id);
                if response.changed() {
                    changed |= report.set_section_text(id, &text);
                }
                // AI-linked sentences: click to show the lesion.
                for sentence in report.sentences(id) {
                    if let Some(fid) = &sentence.finding_id
                        && let Some(image) =
                            bundle.inputs.findings.iter().find(|f| &f.id == fid).and_then(|f| f.image.as_ref())
                        && ui
                            .small_button(format!("→ {}", sentence.text))
                            .on_hover_text(lang.tr("Show the lesion"))
                            .clicked()
                    {
                        out.show_image = Some((image.series_uid.clone(), image.sop_instance_uid.clone()));
                    }
                }
            }
            if changed {
                p.dirty_since = Some(now);
            }
        });
        if p.dirty_since.is_some() {
            p.recheck();
        }
        // Reading-error checks.
        if !p.warnings.is_empty() {
            ui.separator();
            ui.strong(lang.tr("Checks before signing"));
            for w in &p.warnings {
                let text = w.message(if lang == Lang::Ko { ReportLang::Ko } else { ReportLang::En });
                ui.colored_label(egui::Color32::from_rgb(240, 180, 60), format!("! {text}"));
            }
        }
        ui.separator();
        ui.horizontal(|ui| {
            if !signed {
                let sign =
                    ui.button(lang.tr("Sign")).on_hover_text(lang.tr("Signing makes the report final and immutable"));
                if sign.clicked() {
                    p.sign();
                }
                ui.checkbox(&mut p.preliminary, lang.tr("Export unsigned as preliminary"));
            }
            let can_export = signed || p.preliminary;
            if ui.add_enabled(can_export, egui::Button::new(lang.tr("Export PDF + SR + FHIR"))).clicked()
                && let Some(study) = p.study_uid.clone()
            {
                p.flush_autosave();
                p.send(Request::Export {
                    study_uid: study,
                    preliminary: !signed,
                    dir: p.export_dir.clone(),
                    user: p.author(),
                });
            }
            let exported = |suffix: &str| p.exported.iter().find(|f| f.to_string_lossy().ends_with(suffix)).cloned();
            let (sr, pdf) = (exported("-sr.dcm"), exported("-pdf.dcm"));
            if ui.add_enabled(sr.is_some(), egui::Button::new(lang.tr("Send SR to PACS"))).clicked() {
                out.send_files.extend(sr);
                if p.send_pdf {
                    out.send_files.extend(pdf);
                }
            }
            ui.checkbox(&mut p.send_pdf, lang.tr("with the PDF (Encapsulated PDF)"));
        });
        if signed {
            ui.horizontal(|ui| {
                let label = ui.label(lang.tr("Addendum"));
                ui.add(egui::TextEdit::multiline(&mut p.addendum).desired_rows(2)).labelled_by(label.id);
                if ui.add_enabled(!p.addendum.trim().is_empty(), egui::Button::new(lang.tr("Sign addendum"))).clicked()
                    && let Some(study) = p.study_uid.clone()
                    && p.require_session(Role::Reader)
                {
                    p.send(Request::Addendum { study_uid: study, text: p.addendum.trim().to_owned() });
                }
            });
        }
        for f in &p.exported {
            ui.weak(f.display().to_string());
        }
        egui::CollapsingHeader::new(format!("{} ({})", lang.tr("Versions"), p.versions.len())).show(ui, |ui| {
            for v in &p.versions {
                ui.label(format!(
                    "#{} {} {} {}",
                    v.id,
                    v.kind.code(),
                    v.signed_by.as_deref().unwrap_or(""),
                    v.signed_at.as_deref().unwrap_or(&v.saved_at)
                ));
            }
        });
        if !p.message.is_empty() {
            ui.label(&p.message);
        }
        ui.weak(DISCLAIMER);
    });
    p.open = open;
    if !p.open {
        p.flush_autosave();
    }
    out
}

/// Score distribution over time per model version and label: one row per month, ten score bins
/// shaded by their share of the month's findings (a drift after a model update shows as a shift).
fn score_drift_ui(ui: &mut egui::Ui, stats: &[LabelStats], lang: Lang) {
    if stats.iter().all(|s| s.score_histogram.is_empty()) {
        return;
    }
    egui::CollapsingHeader::new(lang.tr("Score distribution over time")).default_open(true).show(ui, |ui| {
        for s in stats.iter().filter(|s| !s.score_histogram.is_empty()) {
            ui.label(format!("{} · {} {}", s.label, s.model_id, s.model_version));
            for (month, bins) in &s.score_histogram {
                ui.horizontal(|ui| {
                    ui.monospace(month);
                    let total = bins.iter().sum::<u64>().max(1) as f32;
                    let (rect, _) = ui.allocate_exact_size(egui::vec2(200.0, 12.0), egui::Sense::hover());
                    let w = rect.width() / 10.0;
                    for (i, &n) in bins.iter().enumerate() {
                        let share = n as f32 / total;
                        let cell = egui::Rect::from_min_size(
                            rect.min + egui::vec2(i as f32 * w, 0.0),
                            egui::vec2(w - 1.0, rect.height()),
                        );
                        let shade = (40.0 + 215.0 * share) as u8;
                        ui.painter().rect_filled(cell, 1.0, egui::Color32::from_rgb(shade / 3, shade / 2, shade));
                    }
                    ui.weak(format!("n = {}", total as u64));
                });
            }
        }
        ui.weak(lang.tr("Score bins 0.0 – 1.0, left to right; brighter = more findings"));
    });
}

/// The QA window: worklist, per-lesion review and statistics.
pub fn qa_window_ui(ctx: &egui::Context, p: &mut ReportPanel, lang: Lang) -> ReportOutput {
    let out = ReportOutput::default();
    let mut open = p.qa_open;
    egui::Window::new(lang.tr("QA review")).open(&mut open).default_size([760.0, 560.0]).resizable(true).show(
        ctx,
        |ui| {
            session_ui(ui, p, lang);
            ui.horizontal(|ui| {
                if ui.button(lang.tr("Refresh")).clicked() {
                    p.send(Request::Worklist);
                }
            });
            ui.horizontal(|ui| {
                let label = ui.label(lang.tr("Finding"));
                ui.add(egui::TextEdit::singleline(&mut p.qa_label).hint_text(lang.tr("any")).desired_width(110.0))
                    .labelled_by(label.id);
                let label = ui.label(lang.tr("Model"));
                ui.add(egui::TextEdit::singleline(&mut p.qa_model).hint_text(lang.tr("any")).desired_width(130.0))
                    .labelled_by(label.id);
                let label = ui.label(lang.tr("Score from"));
                ui.add(egui::DragValue::new(&mut p.qa_min_score).range(0.0..=1.0).speed(0.01)).labelled_by(label.id);
                let label = ui.label(lang.tr("to"));
                ui.add(egui::DragValue::new(&mut p.qa_max_score).range(0.0..=1.0).speed(0.01)).labelled_by(label.id);
            });
            ui.horizontal(|ui| {
                let label = ui.label(lang.tr("From"));
                ui.add(egui::TextEdit::singleline(&mut p.qa_date_from).hint_text("YYYY-MM-DD").desired_width(90.0))
                    .labelled_by(label.id);
                let label = ui.label(lang.tr("To"));
                ui.add(egui::TextEdit::singleline(&mut p.qa_date_to).hint_text("YYYY-MM-DD").desired_width(90.0))
                    .labelled_by(label.id);
                egui::ComboBox::from_label(lang.tr("Decision"))
                    .selected_text(lang.tr(p.qa_decision.unwrap_or("any")))
                    .show_ui(ui, |ui| {
                        for d in [None, Some("pending"), Some("accepted"), Some("edited"), Some("rejected")] {
                            ui.selectable_value(&mut p.qa_decision, d, lang.tr(d.unwrap_or("any")));
                        }
                    });
                ui.checkbox(&mut p.qa_only_undecided, lang.tr("Undecided only"));
            });
            ui.separator();
            let mut rows: Vec<&DecidedFinding> = p
                .decided
                .iter()
                .filter(|d| p.qa_label.is_empty() || d.finding.label.contains(p.qa_label.trim()))
                .filter(|d| d.finding.score >= p.qa_min_score && d.finding.score <= p.qa_max_score)
                .filter(|d| {
                    let model = format!("{} {}", d.finding.model_id, d.finding.model_version);
                    p.qa_model.trim().is_empty() || model.contains(p.qa_model.trim())
                })
                .filter(|d| {
                    // RFC 3339 times compare as text; a bare date bound covers its whole day.
                    let day = d.recorded_at.get(..10).unwrap_or_default();
                    (p.qa_date_from.trim().is_empty() || day >= p.qa_date_from.trim())
                        && (p.qa_date_to.trim().is_empty() || day <= p.qa_date_to.trim())
                })
                .filter(|d| p.qa_decision.is_none_or(|code| d.decision.code() == code))
                .filter(|d| !p.qa_only_undecided || matches!(d.decision, FindingDecision::Pending))
                .collect();
            // Triage: the most abnormal first.
            rows.sort_by(|a, b| b.finding.score.total_cmp(&a.finding.score));
            let mut review: Option<(String, String, FindingDecision)> = None;
            egui::ScrollArea::vertical().id_salt("qa-list").max_height(260.0).show(ui, |ui| {
                egui::Grid::new("qa-grid").striped(true).num_columns(7).show(ui, |ui| {
                    for h in ["Study", "Finding", "Score", "Model", "Decision", "Date", ""] {
                        ui.strong(lang.tr(h));
                    }
                    ui.end_row();
                    for d in rows {
                        ui.label(
                            d.study_uid.chars().rev().take(10).collect::<String>().chars().rev().collect::<String>(),
                        );
                        ui.label(&d.finding.label);
                        ui.label(format!("{:.2}", d.finding.score));
                        ui.label(format!("{} {}", d.finding.model_id, d.finding.model_version));
                        ui.label(d.decision.code());
                        ui.label(&d.recorded_at);
                        ui.horizontal(|ui| {
                            if ui.small_button(lang.tr("Agree")).clicked() {
                                review = Some((d.study_uid.clone(), d.finding.id.clone(), FindingDecision::Accepted));
                            }
                            if ui.small_button(lang.tr("Reject…")).clicked() {
                                p.qa_rejecting = Some((d.study_uid.clone(), Pending::reject(&d.finding.id)));
                            }
                            if ui.small_button(lang.tr("Edit…")).clicked() {
                                p.qa_rejecting = Some((d.study_uid.clone(), Pending::edit(&d.finding)));
                            }
                        });
                        ui.end_row();
                    }
                });
            });
            if let Some((study, pending)) = &mut p.qa_rejecting {
                ui.label(format!("{} {}", lang.tr("Finding"), pending.finding_id));
                match decision_editor_ui(ui, pending, lang) {
                    Some(true) => {
                        review = Some((study.clone(), pending.finding_id.clone(), pending.decision()));
                        p.qa_rejecting = None;
                    }
                    Some(false) => p.qa_rejecting = None,
                    None => {}
                }
            }
            if let Some((study_uid, finding_id, decision)) = review {
                p.qa_review(&study_uid, &finding_id, decision);
            }
            ui.separator();
            ui.strong(lang.tr("Statistics per model version and finding"));
            egui::Grid::new("qa-stats").striped(true).num_columns(7).show(ui, |ui| {
                for h in ["Model", "Finding", "Flags", "Decided", "Agreement", "PPV", "Rejected"] {
                    ui.strong(lang.tr(h));
                }
                ui.end_row();
                let pct = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{:.0}%", v * 100.0));
                for s in &p.stats {
                    ui.label(format!("{} {}", s.model_id, s.model_version));
                    ui.label(&s.label);
                    ui.label(s.flagged.to_string());
                    ui.label(s.decided.to_string());
                    ui.label(pct(s.agreement()));
                    ui.label(pct(s.ppv()));
                    ui.label(pct(s.rejection_rate()));
                    ui.end_row();
                }
            });
            score_drift_ui(ui, &p.stats, lang);
            if ui
                .button(lang.tr("Export statistics and review marks"))
                .on_hover_text(lang.tr("CSV statistics, and the reviewers' marks as DICOM SR + JSONL for retraining"))
                .clicked()
                && p.require_session(Role::QaLead)
            {
                p.send(Request::ExportQa { dir: p.export_dir.clone() });
            }
            if !p.message.is_empty() {
                ui.label(&p.message);
            }
        },
    );
    if open && !p.qa_open {
        p.send(Request::Worklist);
    }
    p.qa_open = open;
    out
}
