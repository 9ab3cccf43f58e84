//! QA reviewers' marks exported for retraining (`lucent report qa-export`, and *Export marks* in
//! the QA window).
//!
//! For every study with QA reviews, the latest review of each finding becomes:
//!
//! * one measurement group in a DICOM Comprehensive SR per study (TID 1500 layout, see
//!   [`pacs::sr`]): the finding as the reviewer left it (label, side, nodule measurements), its
//!   box as an "Image Region" POLYLINE selected from the source image (TID 1410), the reviewer
//!   as Person observer, the decision and reason in Lucent's private code scheme and the comment,
//!   with the algorithm's name and version. Rejected findings are kept (hard negatives);
//! * one line of `marks.jsonl`: the same without patient attributes or free text (a training
//!   pipeline can read it without touching patient data): study and image UIDs, the AI's label,
//!   score and box, the decision, the reason, the reviewed label, side and box.
//!
//! The SR needs the study's images in the local store (for the patient and study attributes and
//! the references). A study whose images are not there still gets its JSONL lines and is counted
//! in [`QaExportSummary::studies_without_images`].

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use pacs::sr::{LUCENT_SCHEME, SrCode, SrCompletion, SrDocument, SrFindingGroup, SrReview, SrStudy};
use report::model::{AiFinding, BoxGeometry, FindingDecision, ImageRef, ReasonCode, ReportKind};
use report::store::{AuditAction, QaReview};
use report::{Credential, ReportStore, Role};
use serde::Serialize;

use crate::reporting::{dicom_datetime, sr_group};

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QaExportSummary {
    /// Studies with at least one exported mark.
    pub studies: usize,
    pub marks: usize,
    pub accepted: usize,
    pub rejected: usize,
    pub corrected: usize,
    pub sr_files: Vec<PathBuf>,
    /// Studies whose images are not in the local store (JSONL lines only, no SR).
    pub studies_without_images: usize,
    pub jsonl: PathBuf,
}

/// One exported mark (a line of `marks.jsonl`): no patient attributes, no free text.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewMark {
    pub study_uid: String,
    pub finding_id: String,
    pub model_id: String,
    pub model_version: String,
    pub ai_label: String,
    pub ai_score: f32,
    pub ai_threshold: f32,
    /// `[x0, y0, x1, y1]` in the image's pixels, as the AI drew it.
    pub ai_box_px: Option<[f64; 4]>,
    /// `accepted`, `rejected` or `corrected`.
    pub decision: &'static str,
    pub reason: Option<&'static str>,
    pub has_comment: bool,
    /// The label, side and box after the review (the AI's when accepted or rejected).
    pub label: String,
    pub side: String,
    pub box_px: Option<[f64; 4]>,
    pub image: Option<ImageRef>,
    pub reviewer: String,
    pub reviewed_at: String,
}

fn box_px(geometry: Option<&BoxGeometry>) -> Option<[f64; 4]> {
    geometry.map(|g| [g.min_px[0], g.min_px[1], g.max_px[0], g.max_px[1]])
}

/// A reviewer's verdict on a finding, as exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Accepted,
    Rejected,
    Corrected,
}

impl Verdict {
    /// The code in `marks.jsonl` and in the SR (private scheme).
    fn code(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Corrected => "corrected",
        }
    }

    fn sr_code(self) -> SrCode {
        let meaning = match self {
            Self::Accepted => "Accepted by reviewer",
            Self::Rejected => "Rejected by reviewer",
            Self::Corrected => "Corrected by reviewer",
        };
        SrCode::new(self.code(), LUCENT_SCHEME, meaning)
    }
}

/// The verdict, the reviewed finding, and the reason and comment, of a review; `None` for a
/// review left pending.
fn reviewed(
    finding: &AiFinding,
    decision: &FindingDecision,
) -> Option<(Verdict, AiFinding, Option<ReasonCode>, String)> {
    match decision {
        FindingDecision::Pending => None,
        FindingDecision::Accepted => Some((Verdict::Accepted, finding.clone(), None, String::new())),
        FindingDecision::Rejected { reason, comment } => {
            Some((Verdict::Rejected, finding.clone(), Some(*reason), comment.clone()))
        }
        FindingDecision::Edited { edit, reason, comment } => {
            Some((Verdict::Corrected, finding.with_edit(edit), Some(*reason), comment.clone()))
        }
    }
}

fn reason_code(reason: ReasonCode) -> SrCode {
    SrCode::new(reason.code(), LUCENT_SCHEME, &reason.code().replace('_', " "))
}

/// The patient and study attributes of a study, from one of its instances in the local store.
fn study_attributes(store: &pacs::store::Store, study_uid: &str) -> Option<(SrStudy, String)> {
    let series = store.series(study_uid).ok()?;
    let path = series.iter().find_map(|s| store.series_paths(&s.series_uid).ok()?.into_iter().next())?;
    let info = pacs::file::read_info(&path).ok()?;
    Some((SrStudy::from_info(&info), info.modality.clone()))
}

/// The SR of one study's marks.
fn marks_document(study: SrStudy, modality: &str, groups: Vec<SrFindingGroup>, now: &str) -> SrDocument {
    let (algorithm_name, algorithm_version) = groups
        .first()
        .map(|g| (g.algorithm_name.clone(), g.algorithm_version.clone()))
        .unwrap_or_else(|| ("Lucent".to_owned(), env!("CARGO_PKG_VERSION").to_owned()));
    let (loinc, display) = ReportKind::for_modality(modality).loinc();
    SrDocument {
        study,
        language: SrCode::new("en", "RFC5646", "English"),
        procedure: SrCode::new(loinc, "LN", display),
        algorithm_name,
        algorithm_version,
        sections: Vec::new(),
        groups,
        images: Vec::new(),
        // Review marks are training data, not a verified clinical report.
        completion: SrCompletion::Preliminary,
        content_datetime: dicom_datetime(now),
        series_number: 991,
        instance_number: 1,
        series_description: "Lucent QA review marks (for retraining)".to_owned(),
        uid_seed: "lucent-qa-marks".to_owned(),
    }
}

/// Exports every study's QA marks into `out_dir` (`marks.jsonl` and `qa-marks-<n>.dcm`), audited
/// as an export by `qa_lead`, whose credential must be a QA lead's. `store_dir` holds the local
/// image store.
pub fn export_qa_marks(
    reports: &mut ReportStore,
    store_dir: &Path,
    out_dir: &Path,
    qa_lead: &Credential,
    now: &str,
) -> Result<QaExportSummary> {
    reports.require(qa_lead, Role::QaLead).context("exporting review marks")?;
    let user = qa_lead.name();
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let jsonl_path = out_dir.join("marks.jsonl");
    let mut jsonl = Vec::new();
    let mut summary = QaExportSummary { jsonl: jsonl_path.clone(), ..Default::default() };
    // The image store, for the SR's patient and study attributes (none yet: JSONL only).
    let images = pacs::store::Store::open_reader(store_dir).ok();
    for study_uid in reports.qa_reviewed_studies()? {
        let reviews: Vec<(AiFinding, QaReview)> = reports.latest_qa_reviews(&study_uid)?;
        let mut groups = Vec::new();
        for (finding, review) in &reviews {
            let Some((decision, after, reason, comment)) = reviewed(finding, &review.decision) else { continue };
            match decision {
                Verdict::Accepted => summary.accepted += 1,
                Verdict::Rejected => summary.rejected += 1,
                Verdict::Corrected => summary.corrected += 1,
            }
            let mark = ReviewMark {
                study_uid: study_uid.clone(),
                finding_id: finding.id.clone(),
                model_id: finding.model_id.clone(),
                model_version: finding.model_version.clone(),
                ai_label: finding.label.clone(),
                ai_score: finding.score,
                ai_threshold: finding.threshold,
                ai_box_px: box_px(finding.geometry.as_ref()),
                decision: decision.code(),
                reason: reason.map(ReasonCode::code),
                has_comment: !comment.trim().is_empty(),
                label: after.label.clone(),
                side: format!("{:?}", after.effective_side()).to_lowercase(),
                box_px: box_px(after.geometry.as_ref()),
                image: after.image.clone(),
                reviewer: review.reviewer.clone(),
                reviewed_at: review.reviewed_at.clone(),
            };
            serde_json::to_writer(&mut jsonl, &mark)?;
            jsonl.push(b'\n');
            let mut group = sr_group(&study_uid, groups.len(), &after);
            group.region_px = after.geometry.map(|g| {
                let ([x0, y0], [x1, y1]) = (g.min_px, g.max_px);
                [[x0, y0], [x1, y0], [x1, y1], [x0, y1]].map(|[x, y]| [x as f32, y as f32]).to_vec()
            });
            group.review = Some(SrReview {
                observer_name: review.reviewer.clone(),
                decision: decision.sr_code(),
                reason: reason.map(reason_code),
                comment,
            });
            groups.push(group);
        }
        if groups.is_empty() {
            continue;
        }
        summary.studies += 1;
        summary.marks += groups.len();
        let Some((study, modality)) = images.as_ref().and_then(|store| study_attributes(store, &study_uid)) else {
            summary.studies_without_images += 1;
            continue;
        };
        let path = out_dir.join(format!("qa-marks-{}.dcm", summary.sr_files.len() + 1));
        let doc = marks_document(study, &modality, groups, now);
        pacs::sr::write_sr(&doc, &path).with_context(|| format!("writing {}", path.display()))?;
        let sha = crate::reporting::sha256_hex(&std::fs::read(&path)?);
        reports.append_audit(
            user,
            AuditAction::Export,
            &study_uid,
            &serde_json::json!({ "format": "qa_marks_sr", "sha256": sha }),
        )?;
        summary.sr_files.push(path);
    }
    let mut file = std::fs::File::create(&jsonl_path).with_context(|| format!("creating {}", jsonl_path.display()))?;
    file.write_all(&jsonl)?;
    file.sync_all()?;
    Ok(summary)
}
