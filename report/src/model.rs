//! The neutral inputs of a report: the study, the AI findings (already converted by the app from
//! the inference types), the reader's decisions on them and the Lung-RADS proposal. Nothing here
//! knows DICOM or ONNX; `app::reporting` fills these structs.

use serde::{Deserialize, Serialize};

/// The language a report is written in (chosen per report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    En,
    Ko,
}

impl Lang {
    /// The BCP 47 / RFC 5646 tag (`en`, `ko`).
    pub fn code(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Ko => "ko",
        }
    }

    /// The language's English name (for DICOM code meanings).
    pub fn english_name(self) -> &'static str {
        match self {
            Self::En => "English",
            Self::Ko => "Korean",
        }
    }
}

impl std::str::FromStr for Lang {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "en" | "english" => Ok(Self::En),
            "ko" | "kr" | "korean" => Ok(Self::Ko),
            other => Err(crate::Error::Invalid { what: format!("report language {other:?} (use en or ko)") }),
        }
    }
}

/// Which template a report uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportKind {
    /// Chest radiograph: lungs, pleura, heart and mediastinum, bones, impression.
    Cxr,
    /// Low-dose CT lung cancer screening: technique, nodules, other findings, Lung-RADS.
    Ldct,
}

impl ReportKind {
    /// The template for a DICOM modality (`CT` → LDCT, anything else → CXR).
    pub fn for_modality(modality: &str) -> Self {
        if modality.eq_ignore_ascii_case("CT") { Self::Ldct } else { Self::Cxr }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::Cxr => "cxr",
            Self::Ldct => "ldct",
        }
    }

    /// The procedure's LOINC code and display name (FHIR `code`, SR "Procedure reported").
    /// Lucent reads one frontal radiograph, hence "Single view"; LOINC has no LDCT-specific
    /// imaging code in the Radiology Playbook subset used here, hence plain "CT Chest".
    pub fn loinc(self) -> (&'static str, &'static str) {
        match self {
            Self::Cxr => ("36554-4", "XR Chest Single view"),
            Self::Ldct => ("24627-2", "CT Chest"),
        }
    }
}

/// One image the report refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ImageRef {
    pub series_uid: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    /// Series Number, for "series 3, image 42" in the text.
    pub series_number: Option<i64>,
    pub instance_number: Option<i64>,
    /// 1-based frame number in a multi-frame instance.
    pub frame: Option<u32>,
}

/// A series of the study (for headers and references).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SeriesRef {
    pub series_uid: String,
    pub modality: String,
    pub description: String,
    pub series_number: Option<i64>,
    pub images: Vec<ImageRef>,
}

/// The study a report is about. Patient fields are for the PDF header and the FHIR subject only:
/// they are never written to logs, the audit log or the report store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StudyContext {
    pub study_uid: String,
    pub modality: String,
    pub patient_name: String,
    pub patient_id: String,
    pub patient_sex: String,
    /// DICOM date `YYYYMMDD` (may be empty).
    pub patient_birth_date: String,
    pub accession: String,
    /// DICOM date `YYYYMMDD` (may be empty).
    pub study_date: String,
    /// DICOM time `HHMMSS[.f]` (may be empty).
    pub study_time: String,
    pub study_description: String,
    pub series: Vec<SeriesRef>,
}

/// Side of a finding, computed by the app from the finding's centre against the image midline and
/// the patient orientation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Right,
    Left,
    Bilateral,
    #[default]
    Unknown,
}

/// A lung lobe (for nodules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lobe {
    RightUpper,
    RightMiddle,
    RightLower,
    LeftUpper,
    LeftLower,
}

impl Lobe {
    pub fn side(self) -> Side {
        match self {
            Self::RightUpper | Self::RightMiddle | Self::RightLower => Side::Right,
            Self::LeftUpper | Self::LeftLower => Side::Left,
        }
    }

    pub fn name(self, lang: Lang) -> &'static str {
        match (self, lang) {
            (Self::RightUpper, Lang::En) => "right upper lobe",
            (Self::RightMiddle, Lang::En) => "right middle lobe",
            (Self::RightLower, Lang::En) => "right lower lobe",
            (Self::LeftUpper, Lang::En) => "left upper lobe",
            (Self::LeftLower, Lang::En) => "left lower lobe",
            (Self::RightUpper, Lang::Ko) => "우상엽",
            (Self::RightMiddle, Lang::Ko) => "우중엽",
            (Self::RightLower, Lang::Ko) => "우하엽",
            (Self::LeftUpper, Lang::Ko) => "좌상엽",
            (Self::LeftLower, Lang::Ko) => "좌하엽",
        }
    }

    /// The usual abbreviation (RUL, RML, RLL, LUL, LLL).
    pub fn abbreviation(self) -> &'static str {
        match self {
            Self::RightUpper => "RUL",
            Self::RightMiddle => "RML",
            Self::RightLower => "RLL",
            Self::LeftUpper => "LUL",
            Self::LeftLower => "LLL",
        }
    }

    /// SNOMED CT concept (code, meaning) for DICOM SR Finding Site and FHIR bodySite.
    pub fn snomed(self) -> (&'static str, &'static str) {
        match self {
            Self::RightUpper => ("45653009", "Upper lobe of right lung"),
            Self::RightMiddle => ("72481006", "Middle lobe of right lung"),
            Self::RightLower => ("50410000", "Lower lobe of right lung"),
            Self::LeftUpper => ("44714003", "Upper lobe of left lung"),
            Self::LeftLower => ("41224006", "Lower lobe of left lung"),
        }
    }
}

/// A box in image pixels (and mm when the pixel spacing is known).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct BoxGeometry {
    pub min_px: [f64; 2],
    pub max_px: [f64; 2],
    pub min_mm: Option<[f64; 2]>,
    pub max_mm: Option<[f64; 2]>,
}

/// Attenuation type of a nodule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoduleType {
    Solid,
    PartSolid,
    GroundGlass,
}

impl NoduleType {
    pub fn name(self, lang: Lang) -> &'static str {
        match (self, lang) {
            (Self::Solid, Lang::En) => "solid",
            (Self::PartSolid, Lang::En) => "part-solid",
            (Self::GroundGlass, Lang::En) => "ground-glass",
            (Self::Solid, Lang::Ko) => "고형",
            (Self::PartSolid, Lang::Ko) => "부분고형",
            (Self::GroundGlass, Lang::Ko) => "간유리",
        }
    }
}

/// Measurements of one nodule (from `inference::ct::measure`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoduleMeasurements {
    pub long_axis_mm: f64,
    pub short_axis_mm: f64,
    pub mean_diameter_mm: f64,
    pub volume_mm3: f64,
    pub nodule_type: NoduleType,
    pub mean_hu: Option<f64>,
    /// The nodule's own Lung-RADS v2022 category code ("2", "4A", ...), when computed.
    pub lung_rads: Option<String>,
}

/// One AI finding, as the report sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AiFinding {
    /// Stable within the study (e.g. `cxr:<model>:<label>` or `nodule:<n>`): decisions refer to it.
    pub id: String,
    pub model_id: String,
    pub model_name: String,
    pub model_version: String,
    /// The model's label (e.g. `pneumothorax`, `nodule`).
    pub label: String,
    pub score: f32,
    pub threshold: f32,
    pub side: Side,
    pub lobe: Option<Lobe>,
    /// Free-text location when there is no lobe (e.g. "upper zone").
    pub location: Option<String>,
    pub geometry: Option<BoxGeometry>,
    pub nodule: Option<NoduleMeasurements>,
    /// The image the finding was seen on (key image, SR reference).
    pub image: Option<ImageRef>,
}

impl AiFinding {
    /// Whether the model flagged it (score at or above its threshold).
    pub fn is_flagged(&self) -> bool {
        self.score >= self.threshold
    }

    /// The side, from the lobe when there is one.
    pub fn effective_side(&self) -> Side {
        self.lobe.map_or(self.side, Lobe::side)
    }

    /// This finding with a reader's edit applied.
    pub fn with_edit(&self, edit: &FindingEdit) -> Self {
        let mut f = self.clone();
        if let Some(label) = &edit.label {
            f.label.clone_from(label);
        }
        if let Some(side) = edit.side {
            f.side = side;
        }
        if let Some(lobe) = edit.lobe {
            f.lobe = Some(lobe);
            f.side = lobe.side();
        }
        if let Some(geometry) = edit.geometry {
            f.geometry = Some(geometry);
        }
        if let Some(nodule) = &edit.nodule {
            f.nodule = Some(nodule.clone());
        }
        f
    }
}

/// Why a reader rejected or edited a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    FalsePositive,
    WrongLocation,
    WrongSize,
    WrongLabel,
    Artifact,
    KnownOrBenign,
    ClinicallyInsignificant,
    Other,
}

impl ReasonCode {
    pub fn code(self) -> &'static str {
        match self {
            Self::FalsePositive => "false_positive",
            Self::WrongLocation => "wrong_location",
            Self::WrongSize => "wrong_size",
            Self::WrongLabel => "wrong_label",
            Self::Artifact => "artifact",
            Self::KnownOrBenign => "known_or_benign",
            Self::ClinicallyInsignificant => "clinically_insignificant",
            Self::Other => "other",
        }
    }
}

/// A reader's changes to a finding (move, resize, relabel, re-measure).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FindingEdit {
    pub label: Option<String>,
    pub side: Option<Side>,
    pub lobe: Option<Lobe>,
    pub geometry: Option<BoxGeometry>,
    pub nodule: Option<NoduleMeasurements>,
}

/// What the reader (or a QA lead) decided about a finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum FindingDecision {
    #[default]
    Pending,
    Accepted,
    Rejected {
        reason: ReasonCode,
        comment: String,
    },
    /// Accepted with changes.
    Edited {
        edit: FindingEdit,
        reason: ReasonCode,
        comment: String,
    },
}

impl FindingDecision {
    pub fn is_rejected(&self) -> bool {
        matches!(self, Self::Rejected { .. })
    }

    /// Accepted, with or without changes.
    pub fn is_accepted(&self) -> bool {
        matches!(self, Self::Accepted | Self::Edited { .. })
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Rejected { .. } => "rejected",
            Self::Edited { .. } => "edited",
        }
    }
}

/// Decisions by finding id (missing means pending).
pub type Decisions = std::collections::BTreeMap<String, FindingDecision>;

/// The findings a report describes: rejected ones dropped, edits applied, in input order.
pub fn effective_findings(findings: &[AiFinding], decisions: &Decisions) -> Vec<AiFinding> {
    findings
        .iter()
        .filter_map(|f| match decisions.get(&f.id) {
            Some(FindingDecision::Rejected { .. }) => None,
            Some(FindingDecision::Edited { edit, .. }) => Some(f.with_edit(edit)),
            _ => Some(f.clone()),
        })
        .collect()
}

/// The exam-level Lung-RADS proposal computed by the app (from `inference::lungrads`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LungRadsInput {
    /// Category code: "0", "1", "2", "3", "4A", "4B", "4X".
    pub category: String,
    /// The v2022 management recommendation, in English.
    pub management: String,
}

/// Everything a draft is made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StudyInputs {
    pub context: StudyContext,
    pub findings: Vec<AiFinding>,
    /// Used for the Lung-RADS sentence only when no nodule carries its own category.
    pub lung_rads: Option<LungRadsInput>,
}

/// Rank of a Lung-RADS category code, for "most suspicious" (0 lowest, as in `inference`).
pub fn lung_rads_rank(code: &str) -> Option<u8> {
    Some(match code.trim().to_ascii_uppercase().as_str() {
        "0" => 0,
        "1" => 1,
        "2" => 2,
        "3" => 3,
        "4A" => 4,
        "4B" => 5,
        "4X" => 6,
        _ => return None,
    })
}

/// The exam's Lung-RADS category for the findings described: the most suspicious nodule's own
/// category; "1" when an LDCT has no nodules; else the app's exam-level input.
pub fn expected_lung_rads(kind: ReportKind, described: &[AiFinding], input: Option<&LungRadsInput>) -> Option<String> {
    if kind != ReportKind::Ldct {
        return None;
    }
    let nodules: Vec<&NoduleMeasurements> = described.iter().filter_map(|f| f.nodule.as_ref()).collect();
    let best = nodules
        .iter()
        .filter_map(|n| n.lung_rads.as_deref())
        .filter_map(|c| lung_rads_rank(c).map(|r| (r, c.to_ascii_uppercase())))
        .max_by_key(|(r, _)| *r)
        .map(|(_, c)| c);
    match best {
        Some(c) => Some(c),
        None if described.iter().all(|f| !is_nodule_label(&f.label)) && input.is_none() => Some("1".to_owned()),
        None => input.map(|i| i.category.to_ascii_uppercase()),
    }
}

/// Whether a label names a nodule (or mass).
/// Whether a label is an image-level summary ("abnormal"), not a finding with a place: it gets no
/// sentence of its own in the findings sections.
pub fn is_summary_label(label: &str) -> bool {
    matches!(
        label.trim().to_ascii_lowercase().replace([' ', '-'], "_").as_str(),
        "abnormal" | "abnormality" | "any_finding"
    )
}

pub fn is_nodule_label(label: &str) -> bool {
    let l = label.to_ascii_lowercase();
    l.contains("nodule") || l.contains("mass")
}
