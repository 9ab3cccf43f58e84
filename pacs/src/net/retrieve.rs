//! Retrieving a study or series into the local store, with C-GET (the instances come back on the
//! same association) or C-MOVE (the peer pushes them to a Store SCP, usually Lucent's own).
//!
//! Planning: a study-level C-FIND gives SOP Classes in Study (which decide the presentation
//! contexts proposed: one per compressed transfer syntax for each class, so that archives that
//! cannot transcode still deliver) and the instance count. When the store already holds part of
//! the study, the instances are listed (IMAGE level) and only the missing ones are asked for (a
//! retry fetches only what is missing); when it holds nothing, everything is asked for at once and
//! the instances are listed afterwards only if fewer arrived than counted. The report says what is
//! still missing.
//!
//! C-GET pipeline: the calling thread reads the socket and answers each C-STORE as soon as the
//! object is whole; `lucent-net-write-N` threads parse its header and write the file atomically
//! (temp file, fsync, rename); the calling thread indexes them in batches. A write that fails
//! after the answer shows up in the report as failed and missing. If the connection dies, the
//! instances already received are still written and indexed: the store never holds a partial
//! file, and a retry fetches the rest.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde::{Deserialize, Serialize};

use super::dimse::{
    self, C_GET_RQ, C_GET_RSP, C_MOVE_RQ, C_MOVE_RSP, C_STORE_RQ, Command, Incoming, Link, STATUS_CANNOT_UNDERSTAND,
    STATUS_OUT_OF_RESOURCES, STATUS_SUCCESS, StatusKind, text,
};
use super::find::{InstanceMatch, QueryLevel, QueryModel};
use super::node::PacsNode;
use super::syntax::{
    COMMON_STORAGE_SOP_CLASSES, MAX_PRESENTATION_CONTEXTS, Proposal, UNCOMPRESSED_TRANSFER_SYNTAXES, storage_proposals,
};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::writers::{WriteJob, Writing};

/// Most SOP Instance UIDs asked for in one IMAGE-level retrieve.
const UIDS_PER_REQUEST: usize = 256;

/// What to retrieve.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrieveRequest {
    pub model: QueryModel,
    /// Required with [`QueryModel::PatientRoot`].
    pub patient_id: String,
    pub study_uid: String,
    /// Only this series (empty: the whole study).
    pub series_uid: String,
}

impl RetrieveRequest {
    pub fn study(study_uid: &str) -> Self {
        Self { study_uid: study_uid.to_owned(), ..Self::default() }
    }

    pub fn series(study_uid: &str, series_uid: &str) -> Self {
        Self { study_uid: study_uid.to_owned(), series_uid: series_uid.to_owned(), ..Self::default() }
    }
}

/// How to retrieve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrieveOptions {
    /// List the instances with C-FIND (IMAGE level) first: propose exactly their SOP classes,
    /// skip those already in the store, and report the missing ones. Without it (or when the
    /// peer cannot list instances) the whole study or series is asked for, common SOP classes
    /// are proposed, and duplicates are dropped on arrival.
    pub query_instances: bool,
    /// Threads writing received files (C-GET).
    pub writer_threads: usize,
}

impl Default for RetrieveOptions {
    fn default() -> Self {
        Self { query_instances: true, writer_threads: 8 }
    }
}

/// Progress of a retrieve (or of a send, see `store_scu`), reported after every instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RetrieveProgress {
    /// Instances received in this run (C-GET), or sub-operations completed (C-MOVE, C-STORE SCU).
    pub done: u32,
    /// Instances still to come, as the peer (or the plan) says.
    pub remaining: Option<u32>,
    pub failed: u32,
    /// Instances skipped because the store already has them.
    pub skipped: u32,
    /// Data set bytes transferred (0 for C-MOVE: the data goes to the Store SCP).
    pub bytes: u64,
    pub elapsed_s: f64,
    pub bytes_per_s: f64,
}

impl RetrieveProgress {
    pub fn megabytes_per_s(&self) -> f64 {
        self.bytes_per_s / 1e6
    }
}

/// An instance that could not be retrieved, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedInstance {
    pub sop_instance_uid: String,
    pub reason: String,
}

/// What a retrieve did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetrieveReport {
    /// Instances the peer listed for the request (`None` when it could not list them).
    pub expected: Option<usize>,
    /// Listed instances the store already had (not retrieved again).
    pub already_present: usize,
    /// Instances received in this run (C-GET) or sub-operations completed (C-MOVE).
    pub received: usize,
    /// Instances newly written and indexed by this run (C-GET; the Store SCP does it for C-MOVE).
    pub stored: usize,
    pub failed: Vec<FailedInstance>,
    /// Listed instances not in the store after the run (what a retry would fetch).
    pub missing: Vec<String>,
    /// Data set bytes received (C-GET), or file bytes of the moved instances now in the store
    /// (C-MOVE, known only when the instances were listed).
    pub bytes: u64,
    pub elapsed_s: f64,
    pub bytes_per_s: f64,
    pub cancelled: bool,
    /// Non-fatal notes (e.g. the peer could not list instances).
    pub warnings: Vec<String>,
}

impl RetrieveReport {
    /// Everything listed is in the store and nothing failed.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.failed.is_empty() && !self.cancelled
    }
}

/// The instances to fetch, grouped into retrieve requests.
struct Plan {
    /// Listed instances (None: not listed, or listing deferred).
    listed: Option<Vec<InstanceMatch>>,
    /// The study's (or series') instance count from the peer, when the listing is deferred.
    expected_count: Option<usize>,
    /// The store had nothing of the study (or series): the whole of it is asked for at once and
    /// the instances are listed only if, afterwards, the store holds fewer than `expected_count`.
    deferred: bool,
    sop_classes: Vec<String>,
    already_present: usize,
    /// Listed instances the store lacked when planning (series UID, SOP instance UID).
    fetching: Vec<(String, String)>,
    steps: Vec<InMemDicomObject>,
    warnings: Vec<String>,
}

fn check_request(request: &RetrieveRequest) -> Result<()> {
    if request.study_uid.trim().is_empty() {
        return Err(Error::MissingAttribute { name: "StudyInstanceUID" });
    }
    if request.model == QueryModel::PatientRoot && request.patient_id.trim().is_empty() {
        return Err(Error::invalid("PatientID", "a Patient Root retrieve needs the patient ID"));
    }
    Ok(())
}

/// A C-GET / C-MOVE identifier.
fn retrieve_identifier(
    request: &RetrieveRequest,
    level: QueryLevel,
    series_uid: &str,
    sop_uids: &[&str],
) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    obj.put(text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, level.keyword()));
    if request.model == QueryModel::PatientRoot {
        obj.put(text(tags::PATIENT_ID, VR::LO, request.patient_id.trim()));
    }
    obj.put(dimse::ui(tags::STUDY_INSTANCE_UID, request.study_uid.trim()));
    if level != QueryLevel::Study {
        obj.put(dimse::ui(tags::SERIES_INSTANCE_UID, series_uid.trim()));
    }
    if level == QueryLevel::Image {
        obj.put(dimse::ui(tags::SOP_INSTANCE_UID, &sop_uids.join("\\")));
    }
    obj
}

/// Decides what to ask for: the study's SOP classes and instance count (study-level C-FIND), and
/// unless the store has nothing of it, the instances (IMAGE level) to skip those already stored.
fn plan(
    node: &PacsNode,
    request: &RetrieveRequest,
    store: &Store,
    options: &RetrieveOptions,
    cancel: &AtomicBool,
) -> Result<Plan> {
    let whole_level = if request.series_uid.trim().is_empty() { QueryLevel::Study } else { QueryLevel::Series };
    let whole = || retrieve_identifier(request, whole_level, &request.series_uid, &[]);
    let unlisted = |warnings: Vec<String>| Plan {
        listed: None,
        expected_count: None,
        deferred: false,
        sop_classes: COMMON_STORAGE_SOP_CLASSES.iter().map(|s| (*s).to_owned()).collect(),
        already_present: 0,
        fetching: Vec::new(),
        steps: vec![whole()],
        warnings,
    };
    if !options.query_instances {
        return Ok(unlisted(Vec::new()));
    }
    let class = request.model.find_sop_class();
    let planned = dimse::connect(node, &[Proposal::new(class, &UNCOMPRESSED_TRANSFER_SYNTAXES)], &[], Some(cancel))
        .and_then(|mut link| {
            let result = (|| {
                let summary = summarize(&mut link, class, request)?;
                if summary.instance_count.is_some() && !summary.sop_classes.is_empty() && held(store, request)? == 0 {
                    return Ok(Plan {
                        listed: None,
                        expected_count: summary.instance_count,
                        deferred: true,
                        sop_classes: summary.sop_classes,
                        already_present: 0,
                        fetching: Vec::new(),
                        steps: vec![whole()],
                        warnings: Vec::new(),
                    });
                }
                let listed = list_on(&mut link, class, request, summary.sop_classes.is_empty())?;
                plan_from_listing(request, store, listed, summary.sop_classes)
            })();
            let _ = link.release();
            result
        });
    match planned {
        Ok(plan) => Ok(plan),
        Err(Error::Cancelled) => Err(Error::Cancelled),
        Err(e) => Ok(unlisted(vec![format!(
            "the peer could not list the instances ({e}); retrieving the whole {}",
            whole_level.keyword().to_lowercase()
        )])),
    }
}

/// Instances of the request's study (or series) the store holds.
fn held(store: &Store, request: &RetrieveRequest) -> Result<usize> {
    if request.series_uid.trim().is_empty() {
        Ok(store.series(request.study_uid.trim())?.iter().map(|s| s.instances).sum())
    } else {
        Ok(store.instances(request.series_uid.trim())?.len())
    }
}

/// Skips what the store holds; one request for everything when it holds nothing, else a request
/// per series (whole series, or lists of SOP Instance UIDs).
fn plan_from_listing(
    request: &RetrieveRequest,
    store: &Store,
    listed: Vec<InstanceMatch>,
    study_classes: Vec<String>,
) -> Result<Plan> {
    let whole_level = if request.series_uid.trim().is_empty() { QueryLevel::Study } else { QueryLevel::Series };
    let mut sop_classes: Vec<String> = study_classes;
    let mut by_series: BTreeMap<&str, (usize, Vec<&str>)> = BTreeMap::new();
    let mut already_present = 0;
    for m in &listed {
        if !m.sop_class_uid.is_empty() && !sop_classes.contains(&m.sop_class_uid) {
            sop_classes.push(m.sop_class_uid.clone());
        }
        let entry = by_series.entry(m.series_uid.as_str()).or_default();
        entry.0 += 1;
        if store.contains(&m.sop_instance_uid)? {
            already_present += 1;
        } else {
            entry.1.push(m.sop_instance_uid.as_str());
        }
    }
    if sop_classes.is_empty() {
        // The peer returned no SOP Class UIDs: propose the common ones.
        sop_classes = COMMON_STORAGE_SOP_CLASSES.iter().map(|s| (*s).to_owned()).collect();
    }
    let fetching: Vec<(String, String)> = by_series
        .iter()
        .flat_map(|(series, (_, missing))| missing.iter().map(|uid| ((*series).to_owned(), (*uid).to_owned())))
        .collect();
    let steps = if fetching.is_empty() {
        Vec::new()
    } else if already_present == 0 {
        vec![retrieve_identifier(request, whole_level, &request.series_uid, &[])]
    } else {
        let mut steps = Vec::new();
        for (series, (total, missing)) in &by_series {
            if missing.is_empty() {
                continue;
            }
            if missing.len() == *total {
                steps.push(retrieve_identifier(request, QueryLevel::Series, series, &[]));
            } else {
                for chunk in missing.chunks(UIDS_PER_REQUEST) {
                    steps.push(retrieve_identifier(request, QueryLevel::Image, series, chunk));
                }
            }
        }
        steps
    };
    Ok(Plan {
        listed: Some(listed),
        expected_count: None,
        deferred: false,
        sop_classes,
        already_present,
        fetching,
        steps,
        warnings: Vec::new(),
    })
}

/// The identifier keys every planning query shares (level, patient ID for Patient Root, study).
fn planning_keys(request: &RetrieveRequest, level: QueryLevel) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    obj.put(text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, level.keyword()));
    if request.model == QueryModel::PatientRoot {
        obj.put(text(tags::PATIENT_ID, VR::LO, request.patient_id.trim()));
    }
    obj.put(dimse::ui(tags::STUDY_INSTANCE_UID, request.study_uid.trim()));
    obj
}

/// What the study-level query tells before any instance is listed.
struct Summary {
    /// SOP Classes in Study (an attribute archives keep in their index).
    sop_classes: Vec<String>,
    /// Instances of the study, or of the requested series.
    instance_count: Option<usize>,
}

fn summarize(link: &mut Link<'_>, class: &str, request: &RetrieveRequest) -> Result<Summary> {
    let mut study = planning_keys(request, QueryLevel::Study);
    study.put(text(tags::SOP_CLASSES_IN_STUDY, VR::UI, ""));
    study.put(text(tags::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS, ""));
    let mut sop_classes: Vec<String> = Vec::new();
    let mut instance_count = None;
    for o in super::find::find_on(link, class, &study, None)? {
        let listed = o.get(tags::SOP_CLASSES_IN_STUDY).and_then(|e| e.to_multi_str().ok()).unwrap_or_default();
        for c in listed.iter().map(|c| c.trim_matches(|ch: char| ch == '\0' || ch.is_whitespace())) {
            if !c.is_empty() && !sop_classes.iter().any(|k| k == c) {
                sop_classes.push(c.to_owned());
            }
        }
        instance_count =
            crate::attrs::int(&o, tags::NUMBER_OF_STUDY_RELATED_INSTANCES).and_then(|n| usize::try_from(n).ok());
    }
    if !request.series_uid.trim().is_empty() {
        let mut series = planning_keys(request, QueryLevel::Series);
        series.put(dimse::ui(tags::SERIES_INSTANCE_UID, request.series_uid.trim()));
        series.put(text(tags::NUMBER_OF_SERIES_RELATED_INSTANCES, VR::IS, ""));
        instance_count = super::find::find_on(link, class, &series, None)?
            .first()
            .and_then(|o| crate::attrs::int(o, tags::NUMBER_OF_SERIES_RELATED_INSTANCES))
            .and_then(|n| usize::try_from(n).ok());
    }
    Ok(Summary { sop_classes, instance_count })
}

/// The instances of the request's series (or of every series of its study). SOP Class UID is
/// asked for at IMAGE level only with `with_classes` (it may make an archive read every file).
fn list_on(
    link: &mut Link<'_>,
    class: &str,
    request: &RetrieveRequest,
    with_classes: bool,
) -> Result<Vec<InstanceMatch>> {
    let study_uid = request.study_uid.trim();
    let series: Vec<String> = if request.series_uid.trim().is_empty() {
        let mut q = planning_keys(request, QueryLevel::Series);
        q.put(dimse::ui(tags::SERIES_INSTANCE_UID, ""));
        super::find::find_on(link, class, &q, None)?
            .iter()
            .filter_map(|o| crate::attrs::string(o, tags::SERIES_INSTANCE_UID))
            .collect()
    } else {
        vec![request.series_uid.trim().to_owned()]
    };
    let mut out = Vec::new();
    for series_uid in series {
        let mut q = planning_keys(request, QueryLevel::Image);
        q.put(dimse::ui(tags::SERIES_INSTANCE_UID, &series_uid));
        q.put(dimse::ui(tags::SOP_INSTANCE_UID, ""));
        if with_classes {
            q.put(dimse::ui(tags::SOP_CLASS_UID, ""));
        }
        for o in super::find::find_on(link, class, &q, None)? {
            let sop_instance_uid = crate::attrs::string(&o, tags::SOP_INSTANCE_UID).unwrap_or_default();
            if sop_instance_uid.is_empty() {
                continue;
            }
            out.push(InstanceMatch {
                study_uid: study_uid.to_owned(),
                series_uid: crate::attrs::string(&o, tags::SERIES_INSTANCE_UID).unwrap_or_else(|| series_uid.clone()),
                sop_instance_uid,
                sop_class_uid: crate::attrs::string(&o, tags::SOP_CLASS_UID).unwrap_or_default(),
                instance_number: None,
            });
        }
    }
    Ok(out)
}

/// After a deferred-listing transfer: if the store now holds fewer instances than the peer
/// counted (or something failed), list them to name what is missing.
fn settle_deferred(
    plan: &mut Plan,
    node: &PacsNode,
    request: &RetrieveRequest,
    store: &Store,
    report: &mut RetrieveReport,
) -> Result<()> {
    if !plan.deferred {
        return Ok(());
    }
    report.expected = plan.expected_count;
    if plan.expected_count.is_some_and(|n| held(store, request).is_ok_and(|h| h >= n)) && report.failed.is_empty() {
        return Ok(());
    }
    // (Not cancellable: after a cancel, this short listing is what names the instances not fetched.)
    let class = request.model.find_sop_class();
    let listed = dimse::connect(node, &[Proposal::new(class, &UNCOMPRESSED_TRANSFER_SYNTAXES)], &[], None).and_then(
        |mut link| {
            let listed = list_on(&mut link, class, request, false);
            let _ = link.release();
            listed
        },
    );
    match listed {
        Ok(listed) => {
            report.expected = Some(listed.len());
            plan.listed = Some(listed);
        }
        Err(e) => report.warnings.push(format!("the peer could not list the instances to name the missing ones ({e})")),
    }
    Ok(())
}

/// Progress bookkeeping shared by C-GET and C-MOVE.
struct Tally<'p> {
    started: Instant,
    progress: RetrieveProgress,
    callback: &'p mut dyn FnMut(&RetrieveProgress),
}

impl Tally<'_> {
    fn report(&mut self) {
        let elapsed_s = self.started.elapsed().as_secs_f64();
        self.progress.elapsed_s = elapsed_s;
        self.progress.bytes_per_s = if elapsed_s > 0.0 { self.progress.bytes as f64 / elapsed_s } else { 0.0 };
        (self.callback)(&self.progress);
    }
}

/// The first progress report and the report skeleton of a planned retrieve.
fn start_report<'p>(
    plan: &Plan,
    started: Instant,
    callback: &'p mut dyn FnMut(&RetrieveProgress),
) -> (Tally<'p>, RetrieveReport) {
    let mut tally = Tally { started, progress: RetrieveProgress::default(), callback };
    tally.progress.skipped = plan.already_present as u32;
    let expected = plan.listed.as_ref().map(Vec::len).or(plan.expected_count);
    tally.progress.remaining = expected.map(|n| n.saturating_sub(plan.already_present) as u32);
    tally.report();
    let report = RetrieveReport {
        expected,
        already_present: plan.already_present,
        warnings: plan.warnings.clone(),
        ..RetrieveReport::default()
    };
    (tally, report)
}

/// Retrieves with C-GET into `store`. `progress` is called after every instance; setting
/// `cancel` sends C-CANCEL (what arrived is kept and indexed; the report says `cancelled`).
pub fn retrieve_get(
    node: &PacsNode,
    request: &RetrieveRequest,
    store: &mut Store,
    options: &RetrieveOptions,
    progress: &mut dyn FnMut(&RetrieveProgress),
    cancel: &AtomicBool,
) -> Result<RetrieveReport> {
    check_request(request)?;
    let started = Instant::now();
    let mut plan = plan(node, request, store, options, cancel)?;
    tracing::debug!("C-GET plan: {} step(s) in {:.3} s", plan.steps.len(), started.elapsed().as_secs_f64());
    let (mut tally, mut report) = start_report(&plan, started, progress);
    let mut peer_failed: Vec<FailedInstance> = Vec::new();
    let mut outcome: Result<()> = Ok(());
    if !plan.steps.is_empty() && !cancel.load(Ordering::Relaxed) {
        let pool = crate::writers::with_writer_pool(store, options.writer_threads, |writing| {
            get_steps(node, request, &plan, writing, &mut tally, &mut peer_failed, cancel)
        });
        tracing::debug!("C-GET writes and index done at {:.3} s", started.elapsed().as_secs_f64());
        outcome = pool.outcome;
        report.stored = pool.stored;
        report.failed.extend(pool.failed);
    }
    outcome?;
    report.failed.extend(peer_failed);
    report.received = tally.progress.done as usize;
    report.bytes = tally.progress.bytes;
    report.cancelled = cancel.load(Ordering::Relaxed);
    settle_deferred(&mut plan, node, request, store, &mut report)?;
    finish_report(&mut report, &plan, store, started)?;
    tally.progress.failed = report.failed.len() as u32;
    tally.report();
    Ok(report)
}

fn finish_report(report: &mut RetrieveReport, plan: &Plan, store: &Store, started: Instant) -> Result<()> {
    if let Some(listed) = &plan.listed {
        for m in listed {
            if !store.contains(&m.sop_instance_uid)? {
                report.missing.push(m.sop_instance_uid.clone());
            }
        }
    } else {
        for f in &report.failed {
            if !store.contains(&f.sop_instance_uid)? && !report.missing.contains(&f.sop_instance_uid) {
                report.missing.push(f.sop_instance_uid.clone());
            }
        }
    }
    report.elapsed_s = started.elapsed().as_secs_f64();
    report.bytes_per_s = if report.elapsed_s > 0.0 { report.bytes as f64 / report.elapsed_s } else { 0.0 };
    Ok(())
}

/// The C-GET association: every planned step in turn.
fn get_steps(
    node: &PacsNode,
    request: &RetrieveRequest,
    plan: &Plan,
    writing: &mut Writing<'_>,
    tally: &mut Tally<'_>,
    peer_failed: &mut Vec<FailedInstance>,
    cancel: &AtomicBool,
) -> Result<()> {
    let get_class = request.model.get_sop_class();
    let mut proposals = vec![Proposal::new(get_class, &UNCOMPRESSED_TRANSFER_SYNTAXES)];
    proposals.extend(storage_proposals(&plan.sop_classes, MAX_PRESENTATION_CONTEXTS - 1));
    let mut role_classes: Vec<String> = Vec::new();
    for p in &proposals[1..] {
        if !role_classes.contains(&p.abstract_syntax) {
            role_classes.push(p.abstract_syntax.clone());
        }
    }
    let mut link = dimse::connect(node, &proposals, &role_classes, Some(cancel))?;
    let context = link.context_for(get_class).cloned().ok_or_else(|| Error::NoPresentationContext {
        peer: link.peer().to_owned(),
        abstract_syntax: get_class.to_owned(),
        transfer_syntax: None,
    })?;
    let mut seen: HashSet<String> = HashSet::new();
    let mut size_hint = 0usize;
    for step in &plan.steps {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let id = link.next_message_id();
        link.watch_cancel(context.id, id);
        link.send_command(context.id, &dimse::request(C_GET_RQ, id, get_class, true, Vec::new()))?;
        link.send_data_set(context.id, &dimse::encode_data_set(step, &context.transfer_syntax)?)?;
        loop {
            if link.cancel_requested() && !link.cancel_sent() {
                link.send_cancel()?;
            }
            let (ctx, command) = match link.receive_command()? {
                Incoming::Command { context, command } => (context, command),
                Incoming::Released => {
                    return Err(Error::ConnectionLost {
                        peer: link.peer().to_owned(),
                        detail: "released in the middle of C-GET".to_owned(),
                    });
                }
            };
            match command.field() {
                C_STORE_RQ => {
                    let received = link.receive_instance(ctx, &command, writing.buffer(), size_hint)?;
                    size_hint = size_hint.max(received.data_set_len());
                    tally.progress.bytes += received.data_set_len() as u64;
                    let status = accept_instance(received, &mut seen, writing, peer_failed)?;
                    link.send_store_response(ctx, &command, status)?;
                    tally.progress.done += 1;
                    if let Some(r) = tally.progress.remaining.as_mut() {
                        *r = r.saturating_sub(1);
                    }
                    writing.poll()?;
                    tally.progress.failed = (writing.failed.len() + peer_failed.len()) as u32;
                    tally.report();
                }
                C_GET_RSP if command.responded_id() == Some(id) => {
                    let mut data = Vec::new();
                    if command.has_data_set() {
                        link.receive_data_set(ctx, &mut data)?;
                    }
                    let status = command.status().unwrap_or(0xFFFF);
                    if let Some(remaining) = command.count(tags::NUMBER_OF_REMAINING_SUBOPERATIONS) {
                        tally.progress.remaining = Some(remaining);
                    }
                    match dimse::status_kind(status) {
                        StatusKind::Pending => continue,
                        StatusKind::Success | StatusKind::Warning | StatusKind::Cancelled => {
                            collect_failed_uids(&data, &context.transfer_syntax, status, peer_failed);
                            break;
                        }
                        StatusKind::Failure => {
                            collect_failed_uids(&data, &context.transfer_syntax, status, peer_failed);
                            if command.count(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS).unwrap_or(0) == 0
                                && peer_failed.is_empty()
                            {
                                let peer = link.peer().to_owned();
                                let _ = link.release();
                                return Err(Error::DimseFailure {
                                    peer,
                                    operation: "C-GET",
                                    status,
                                    meaning: dimse::status_meaning(status),
                                });
                            }
                            break;
                        }
                    }
                }
                other => {
                    return Err(Error::Network {
                        peer: link.peer().to_owned(),
                        detail: format!("unexpected command {other:#06x} during C-GET"),
                    });
                }
            }
        }
    }
    link.release()
}

/// Queues a received instance for writing (unless it is a duplicate); returns the C-STORE status
/// to answer. The header is parsed on the writer thread: a file that does not parse is reported
/// as failed there.
fn accept_instance(
    received: dimse::Received,
    seen: &mut HashSet<String>,
    writing: &mut Writing<'_>,
    failed: &mut Vec<FailedInstance>,
) -> Result<u16> {
    if !received.valid {
        failed.push(FailedInstance {
            sop_instance_uid: received.sop_instance,
            reason: "C-STORE without SOP class, SOP instance or transfer syntax".to_owned(),
        });
        return Ok(STATUS_CANNOT_UNDERSTAND);
    }
    let sop_instance = received.sop_instance;
    if !seen.insert(sop_instance.clone()) || writing.store.contains(&sop_instance)? {
        return Ok(STATUS_SUCCESS);
    }
    match writing.submit(WriteJob { sop_instance: sop_instance.clone(), bytes: received.bytes }) {
        Ok(()) => Ok(STATUS_SUCCESS),
        Err(e) => {
            failed.push(FailedInstance { sop_instance_uid: sop_instance, reason: e.to_string() });
            Ok(STATUS_OUT_OF_RESOURCES)
        }
    }
}

/// Failed SOP Instance UID List (0008,0058) of a final C-GET/C-MOVE response.
fn collect_failed_uids(data: &[u8], transfer_syntax: &str, status: u16, out: &mut Vec<FailedInstance>) {
    if data.is_empty() {
        return;
    }
    let Ok(obj) = dimse::decode_data_set(data, transfer_syntax) else { return };
    let Some(list) = obj.get(tags::FAILED_SOP_INSTANCE_UID_LIST).and_then(|e| e.to_multi_str().ok()) else { return };
    for uid in list.iter().map(|u| u.trim_matches(|c: char| c == '\0' || c.is_whitespace())).filter(|u| !u.is_empty()) {
        if !out.iter().any(|f| f.sop_instance_uid == uid) {
            out.push(FailedInstance {
                sop_instance_uid: uid.to_owned(),
                reason: format!("the peer reported a failed sub-operation (status {status:#06x})"),
            });
        }
    }
}

/// Retrieves with C-MOVE to `destination_ae` (a Store SCP the peer knows, usually Lucent's own
/// writing into the same store). The SCP indexes each instance before answering, so the report's
/// `missing` is exact once the peer's final response arrives.
pub fn retrieve_move(
    node: &PacsNode,
    request: &RetrieveRequest,
    destination_ae: &str,
    store: &mut Store,
    options: &RetrieveOptions,
    progress: &mut dyn FnMut(&RetrieveProgress),
    cancel: &AtomicBool,
) -> Result<RetrieveReport> {
    check_request(request)?;
    super::node::validate_ae_title(destination_ae, "the move destination AE title")?;
    let started = Instant::now();
    let mut plan = plan(node, request, store, options, cancel)?;
    let (mut tally, mut report) = start_report(&plan, started, progress);
    if !plan.steps.is_empty() && !cancel.load(Ordering::Relaxed) {
        let move_class = request.model.move_sop_class();
        let mut link =
            dimse::connect(node, &[Proposal::new(move_class, &UNCOMPRESSED_TRANSFER_SYNTAXES)], &[], Some(cancel))?;
        let context = link.context_for(move_class).cloned().ok_or_else(|| Error::NoPresentationContext {
            peer: link.peer().to_owned(),
            abstract_syntax: move_class.to_owned(),
            transfer_syntax: None,
        })?;
        let mut done_before = 0u32;
        for step in &plan.steps {
            if cancel.load(Ordering::Relaxed) {
                break;
            }
            let completed =
                move_step(&mut link, &context, move_class, destination_ae, step, &mut tally, done_before, &mut report)?;
            done_before += completed;
        }
        link.release()?;
    }
    report.received = tally.progress.done as usize;
    report.cancelled = cancel.load(Ordering::Relaxed);
    report.bytes = moved_bytes(&plan, request, store)?;
    settle_deferred(&mut plan, node, request, store, &mut report)?;
    finish_report(&mut report, &plan, store, started)?;
    tally.progress.failed = report.failed.len() as u32;
    tally.report();
    Ok(report)
}

/// Bytes (file sizes) of the planned instances now in the store: what a C-MOVE brought.
fn moved_bytes(plan: &Plan, request: &RetrieveRequest, store: &Store) -> Result<u64> {
    if plan.deferred {
        // The store had nothing of the study (or series): everything there now was moved.
        let series: Vec<String> = if request.series_uid.trim().is_empty() {
            store.series(request.study_uid.trim())?.into_iter().map(|s| s.series_uid).collect()
        } else {
            vec![request.series_uid.trim().to_owned()]
        };
        let mut bytes = 0;
        for s in series {
            bytes += store.instances(&s)?.iter().map(|i| i.size_bytes).sum::<u64>();
        }
        return Ok(bytes);
    }
    let wanted: HashSet<&str> = plan.fetching.iter().map(|(_, uid)| uid.as_str()).collect();
    let series: std::collections::BTreeSet<&str> = plan.fetching.iter().map(|(s, _)| s.as_str()).collect();
    let mut bytes = 0;
    for series_uid in series {
        for row in store.instances(series_uid)? {
            if wanted.contains(row.sop_uid.as_str()) {
                bytes += row.size_bytes;
            }
        }
    }
    Ok(bytes)
}

/// One C-MOVE request; returns the sub-operations completed.
#[allow(clippy::too_many_arguments)]
fn move_step(
    link: &mut Link<'_>,
    context: &dimse::Context,
    move_class: &str,
    destination_ae: &str,
    step: &InMemDicomObject,
    tally: &mut Tally<'_>,
    done_before: u32,
    report: &mut RetrieveReport,
) -> Result<u32> {
    let id = link.next_message_id();
    link.watch_cancel(context.id, id);
    let destination = text(tags::MOVE_DESTINATION, VR::AE, destination_ae.trim());
    link.send_command(context.id, &dimse::request(C_MOVE_RQ, id, move_class, true, vec![destination]))?;
    link.send_data_set(context.id, &dimse::encode_data_set(step, &context.transfer_syntax)?)?;
    loop {
        if link.cancel_requested() && !link.cancel_sent() {
            link.send_cancel()?;
        }
        let (ctx, command): (u8, Command) = match link.receive_command()? {
            Incoming::Command { context, command } => (context, command),
            Incoming::Released => {
                return Err(Error::ConnectionLost {
                    peer: link.peer().to_owned(),
                    detail: "released in the middle of C-MOVE".to_owned(),
                });
            }
        };
        let mut data = Vec::new();
        if command.has_data_set() {
            link.receive_data_set(ctx, &mut data)?;
        }
        if command.field() != C_MOVE_RSP || command.responded_id() != Some(id) {
            return Err(Error::Network {
                peer: link.peer().to_owned(),
                detail: format!("unexpected command {:#06x} during C-MOVE", command.field()),
            });
        }
        let status = command.status().unwrap_or(0xFFFF);
        let completed = command.count(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS).unwrap_or(0)
            + command.count(tags::NUMBER_OF_WARNING_SUBOPERATIONS).unwrap_or(0);
        let failed = command.count(tags::NUMBER_OF_FAILED_SUBOPERATIONS).unwrap_or(0);
        tally.progress.done = done_before + completed;
        tally.progress.failed = failed;
        if let Some(remaining) = command.count(tags::NUMBER_OF_REMAINING_SUBOPERATIONS) {
            tally.progress.remaining = Some(remaining);
        }
        tally.report();
        match dimse::status_kind(status) {
            StatusKind::Pending => {}
            StatusKind::Success | StatusKind::Warning | StatusKind::Cancelled => {
                collect_failed_uids(&data, &context.transfer_syntax, status, &mut report.failed);
                return Ok(completed);
            }
            StatusKind::Failure => {
                collect_failed_uids(&data, &context.transfer_syntax, status, &mut report.failed);
                if completed == 0 && report.failed.is_empty() {
                    return Err(Error::DimseFailure {
                        peer: link.peer().to_owned(),
                        operation: "C-MOVE",
                        status,
                        meaning: dimse::status_meaning(status),
                    });
                }
                return Ok(completed);
            }
        }
    }
}
