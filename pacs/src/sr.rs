//! DICOM Structured Reports: a Comprehensive SR (1.2.840.10008.5.1.4.1.1.88.33) laid out after
//! TID 1500 "Measurement Report", written from a neutral [`SrDocument`]; and the report's PDF as
//! an Encapsulated PDF ([`write_encapsulated_pdf`]) for archives that show documents.
//!
//! ```text
//! CONTAINER (126000, DCM, "Imaging Measurement Report")        [DCMR 1500]
//!   HAS CONCEPT MOD  CODE (121049, DCM, "Language of Content Item and Descendants")
//!   HAS OBS CONTEXT  observer: Device (the algorithm: UID, name, model name = version)
//!                    and, once verified, Person (the signing radiologist)
//!   HAS CONCEPT MOD  CODE (121058, DCM, "Procedure reported")
//!   CONTAINS CONTAINER (111028, DCM, "Image Library") > (126200, DCM, "Image Library Group") > IMAGE…
//!   CONTAINS CONTAINER (126010, DCM, "Imaging Measurements")
//!     CONTAINS CONTAINER (125007, DCM, "Measurement Group")   one per finding (TID 1501-like)
//!       HAS OBS CONTEXT TEXT (112039, DCM, "Tracking Identifier"), UIDREF (112040, DCM, "Tracking Unique Identifier")
//!       CONTAINS CODE (121071, DCM, "Finding")               e.g. (27925004, SCT, "Nodule")
//!       HAS CONCEPT MOD CODE (363698007, SCT, "Finding Site") / (272741003, SCT, "Laterality")
//!       HAS CONCEPT MOD TEXT (111001, DCM, "Algorithm Name"), (111003, DCM, "Algorithm Version")
//!       CONTAINS NUM long axis (103339001, SCT), short axis (103340004, SCT), diameter (81827009, SCT),
//!                    volume (118565006, SCT), attenuation (112031, DCM) with derivation mean
//!         INFERRED FROM IMAGE (the source image and frame)
//!   CONTAINS CONTAINER (121070, DCM, "Findings")    TEXT (121071, DCM, "Finding") per report section
//!   CONTAINS CONTAINER (121072, DCM, "Impressions") TEXT (121073, DCM, "Impression")
//! ```
//!
//! The last two containers carry the report's text; TID 1500 itself has no place for free text,
//! so they are an extension of the template. A preliminary document is PARTIAL / UNVERIFIED; a
//! signed one COMPLETE / VERIFIED with the Verifying Observer Sequence. Written Explicit VR Little
//! Endian, UTF-8 (ISO_IR 192), new Series and SOP Instance UIDs in the source's study.

use std::path::Path;

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::attrs::InstanceInfo;
use crate::error::{Error, Result};
use crate::synth::uid;

/// Comprehensive SR Storage.
pub const COMPREHENSIVE_SR: &str = "1.2.840.10008.5.1.4.1.1.88.33";

/// A coded concept (code value, coding scheme designator, code meaning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrCode {
    pub value: String,
    pub scheme: String,
    pub meaning: String,
}

impl SrCode {
    pub fn new(value: &str, scheme: &str, meaning: &str) -> Self {
        Self { value: value.to_owned(), scheme: scheme.to_owned(), meaning: meaning.to_owned() }
    }

    /// A UCUM unit.
    pub fn ucum(unit: &str, meaning: &str) -> Self {
        Self::new(unit, "UCUM", meaning)
    }
}

/// An image the report refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrImageRef {
    pub series_uid: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    /// 1-based frame in a multi-frame instance.
    pub frame: Option<u32>,
}

/// One numeric measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct SrMeasurement {
    pub concept: SrCode,
    pub value: f64,
    pub unit: SrCode,
    /// E.g. (373098007, SCT, "Mean") for a mean attenuation.
    pub derivation: Option<SrCode>,
}

impl SrMeasurement {
    pub fn long_axis_mm(v: f64) -> Self {
        Self::mm(SrCode::new("103339001", "SCT", "Long Axis"), v)
    }

    pub fn short_axis_mm(v: f64) -> Self {
        Self::mm(SrCode::new("103340004", "SCT", "Short Axis"), v)
    }

    pub fn diameter_mm(v: f64) -> Self {
        Self::mm(SrCode::new("81827009", "SCT", "Diameter"), v)
    }

    pub fn volume_mm3(v: f64) -> Self {
        Self {
            concept: SrCode::new("118565006", "SCT", "Volume"),
            value: v,
            unit: SrCode::ucum("mm3", "cubic millimeter"),
            derivation: None,
        }
    }

    pub fn mean_attenuation_hu(v: f64) -> Self {
        Self {
            concept: SrCode::new("112031", "DCM", "Attenuation Coefficient"),
            value: v,
            unit: SrCode::ucum("[hnsf'U]", "Hounsfield unit"),
            derivation: Some(SrCode::new("373098007", "SCT", "Mean")),
        }
    }

    fn mm(concept: SrCode, v: f64) -> Self {
        Self { concept, value: v, unit: SrCode::ucum("mm", "millimeter"), derivation: None }
    }
}

/// One finding's measurement group.
#[derive(Debug, Clone, PartialEq)]
pub struct SrFindingGroup {
    /// Human-readable, e.g. "Nodule 1".
    pub tracking_id: String,
    pub tracking_uid: String,
    /// E.g. (27925004, SCT, "Nodule").
    pub finding: SrCode,
    /// E.g. (50410000, SCT, "Lower lobe of right lung").
    pub finding_site: Option<SrCode>,
    /// (24028007, SCT, "Right") / (7771000, SCT, "Left") / (51440002, SCT, "Right and left").
    pub laterality: Option<SrCode>,
    pub measurements: Vec<SrMeasurement>,
    pub image: Option<SrImageRef>,
    /// The outline of the finding on `image`: a closed polyline of (column, row) points in the
    /// image's pixel coordinates (DICOM 2-D SCOORD: (0, 0) is the top-left corner of the first
    /// pixel), written as an "Image Region" (111030, DCM) SCOORD selected from `image`, as in
    /// TID 1410. Ignored without `image`.
    pub region_px: Option<Vec<[f32; 2]>>,
    /// A reviewer's verdict on this finding (QA marks exported for retraining).
    pub review: Option<SrReview>,
    pub algorithm_name: String,
    pub algorithm_version: String,
}

/// A reviewer's verdict on one finding.
///
/// Written inside the finding's measurement group as the reviewer (Person observer), the
/// decision and the reason, both coded in Lucent's private scheme [`LUCENT_SCHEME`] (DICOM has
/// no standard code for an AI finding's review outcome), and the comment as (121106, DCM,
/// "Comment").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrReview {
    pub observer_name: String,
    /// E.g. (`accepted`, 99LUCENT, "Accepted by reviewer").
    pub decision: SrCode,
    pub reason: Option<SrCode>,
    pub comment: String,
}

/// Lucent's private coding scheme designator (a "99" prefix, as PS3.16 §8 reserves for local
/// schemes); declared in the Coding Scheme Identification Sequence of any SR that uses it.
pub const LUCENT_SCHEME: &str = "99LUCENT";

/// A block of the report's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrTextSection {
    pub title: String,
    pub text: String,
    /// Goes to the Impressions container (else Findings).
    pub impression: bool,
}

/// Patient and study attributes, copied from a source instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SrStudy {
    pub patient_name: String,
    pub patient_id: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
    pub study_uid: String,
    pub study_date: String,
    pub study_time: String,
    pub study_id: String,
    pub accession: String,
    pub referring_physician: String,
}

impl SrStudy {
    /// The patient and study attributes of a source instance.
    pub fn from_info(info: &InstanceInfo) -> Self {
        Self {
            patient_name: info.patient_name.clone(),
            patient_id: info.patient_id.clone(),
            patient_birth_date: info.patient_birth_date.clone(),
            patient_sex: info.patient_sex.clone(),
            study_uid: info.study_instance_uid.clone(),
            study_date: info.study_date.clone(),
            study_time: info.study_time.clone(),
            study_id: String::new(),
            accession: info.accession_number.clone(),
            referring_physician: String::new(),
        }
    }
}

/// Preliminary (PARTIAL / UNVERIFIED) or signed (COMPLETE / VERIFIED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SrCompletion {
    Preliminary,
    Verified {
        observer_name: String,
        organization: String,
        /// DICOM DT, `YYYYMMDDHHMMSS`.
        datetime: String,
    },
}

/// Everything the SR holds.
#[derive(Debug, Clone, PartialEq)]
pub struct SrDocument {
    pub study: SrStudy,
    /// E.g. (en, RFC5646, "English").
    pub language: SrCode,
    /// E.g. (24627-2, LN, "CT Chest").
    pub procedure: SrCode,
    /// The device observer (the algorithm): name and version.
    pub algorithm_name: String,
    pub algorithm_version: String,
    pub sections: Vec<SrTextSection>,
    pub groups: Vec<SrFindingGroup>,
    /// Images for the image library and the evidence list (group images are added).
    pub images: Vec<SrImageRef>,
    pub completion: SrCompletion,
    /// DICOM DT, `YYYYMMDDHHMMSS`: Content Date and Time.
    pub content_datetime: String,
    pub series_number: i64,
    pub instance_number: i64,
    pub series_description: String,
    /// Seed for the new UIDs (same seed, same UIDs).
    pub uid_seed: String,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrWritten {
    pub series_uid: String,
    pub sop_instance_uid: String,
}

fn put_str(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

fn seq(obj: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

fn code_item(code: &SrCode) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    put_str(&mut item, tags::CODE_VALUE, VR::SH, &code.value);
    put_str(&mut item, tags::CODING_SCHEME_DESIGNATOR, VR::SH, &code.scheme);
    put_str(&mut item, tags::CODE_MEANING, VR::LO, &code.meaning);
    item
}

/// A content item with its relationship (None for the root), value type and concept name.
fn content(relationship: Option<&str>, value_type: &str, concept: Option<&SrCode>) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    if let Some(r) = relationship {
        put_str(&mut item, tags::RELATIONSHIP_TYPE, VR::CS, r);
    }
    put_str(&mut item, tags::VALUE_TYPE, VR::CS, value_type);
    if let Some(c) = concept {
        seq(&mut item, tags::CONCEPT_NAME_CODE_SEQUENCE, vec![code_item(c)]);
    }
    item
}

fn container(relationship: &str, concept: &SrCode, children: Vec<InMemDicomObject>) -> InMemDicomObject {
    let mut item = content(Some(relationship), "CONTAINER", Some(concept));
    put_str(&mut item, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    if !children.is_empty() {
        seq(&mut item, tags::CONTENT_SEQUENCE, children);
    }
    item
}

fn text(relationship: &str, concept: &SrCode, value: &str) -> InMemDicomObject {
    let mut item = content(Some(relationship), "TEXT", Some(concept));
    put_str(&mut item, tags::TEXT_VALUE, VR::UT, value);
    item
}

fn code(relationship: &str, concept: &SrCode, value: &SrCode) -> InMemDicomObject {
    let mut item = content(Some(relationship), "CODE", Some(concept));
    seq(&mut item, tags::CONCEPT_CODE_SEQUENCE, vec![code_item(value)]);
    item
}

fn uidref(relationship: &str, concept: &SrCode, value: &str) -> InMemDicomObject {
    let mut item = content(Some(relationship), "UIDREF", Some(concept));
    put_str(&mut item, tags::UID, VR::UI, value);
    item
}

fn pname(relationship: &str, concept: &SrCode, value: &str) -> InMemDicomObject {
    let mut item = content(Some(relationship), "PNAME", Some(concept));
    put_str(&mut item, tags::PERSON_NAME, VR::PN, value);
    item
}

fn image(relationship: &str, r: &SrImageRef) -> InMemDicomObject {
    let mut item = content(Some(relationship), "IMAGE", None);
    let mut sop = InMemDicomObject::new_empty();
    put_str(&mut sop, tags::REFERENCED_SOP_CLASS_UID, VR::UI, &r.sop_class_uid);
    put_str(&mut sop, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &r.sop_instance_uid);
    if let Some(frame) = r.frame {
        put_str(&mut sop, tags::REFERENCED_FRAME_NUMBER, VR::IS, &frame.to_string());
    }
    seq(&mut item, tags::REFERENCED_SOP_SEQUENCE, vec![sop]);
    item
}

/// A closed 2-D POLYLINE SCOORD (the first point repeated at the end) selected from an image.
fn scoord_polyline(concept: &SrCode, points: &[[f32; 2]], src: &SrImageRef) -> InMemDicomObject {
    let mut item = content(Some("CONTAINS"), "SCOORD", Some(concept));
    let mut data: Vec<f32> = points.iter().flat_map(|p| [p[0], p[1]]).collect();
    if points.first() != points.last()
        && let Some(first) = points.first()
    {
        data.extend_from_slice(first);
    }
    item.put(DataElement::new(tags::GRAPHIC_DATA, VR::FL, PrimitiveValue::F32(data.into())));
    put_str(&mut item, tags::GRAPHIC_TYPE, VR::CS, "POLYLINE");
    seq(&mut item, tags::CONTENT_SEQUENCE, vec![image("SELECTED FROM", src)]);
    item
}

/// A decimal string of at most 16 characters.
fn ds(value: f64) -> String {
    for decimals in (0..=4).rev() {
        let s = format!("{value:.decimals$}");
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{value:.0}")
}

fn num(m: &SrMeasurement, source: Option<&SrImageRef>) -> InMemDicomObject {
    let mut item = content(Some("CONTAINS"), "NUM", Some(&m.concept));
    let mut value = InMemDicomObject::new_empty();
    seq(&mut value, tags::MEASUREMENT_UNITS_CODE_SEQUENCE, vec![code_item(&m.unit)]);
    put_str(&mut value, tags::NUMERIC_VALUE, VR::DS, &ds(m.value));
    seq(&mut item, tags::MEASURED_VALUE_SEQUENCE, vec![value]);
    let mut children = Vec::new();
    if let Some(d) = &m.derivation {
        children.push(code("HAS CONCEPT MOD", &SrCode::new("121401", "DCM", "Derivation"), d));
    }
    if let Some(src) = source {
        children.push(image("INFERRED FROM", src));
    }
    if !children.is_empty() {
        seq(&mut item, tags::CONTENT_SEQUENCE, children);
    }
    item
}

fn group(g: &SrFindingGroup) -> InMemDicomObject {
    let mut children = vec![
        text("HAS OBS CONTEXT", &SrCode::new("112039", "DCM", "Tracking Identifier"), &g.tracking_id),
        uidref("HAS OBS CONTEXT", &SrCode::new("112040", "DCM", "Tracking Unique Identifier"), &g.tracking_uid),
        code("CONTAINS", &SrCode::new("121071", "DCM", "Finding"), &g.finding),
    ];
    if let Some(site) = &g.finding_site {
        children.push(code("HAS CONCEPT MOD", &SrCode::new("363698007", "SCT", "Finding Site"), site));
    }
    if let Some(lat) = &g.laterality {
        children.push(code("HAS CONCEPT MOD", &SrCode::new("272741003", "SCT", "Laterality"), lat));
    }
    children.push(text("HAS CONCEPT MOD", &SrCode::new("111001", "DCM", "Algorithm Name"), &g.algorithm_name));
    children.push(text("HAS CONCEPT MOD", &SrCode::new("111003", "DCM", "Algorithm Version"), &g.algorithm_version));
    if let Some(review) = &g.review {
        let observer_type = SrCode::new("121005", "DCM", "Observer Type");
        children.push(code("HAS OBS CONTEXT", &observer_type, &SrCode::new("121006", "DCM", "Person")));
        children.push(pname(
            "HAS OBS CONTEXT",
            &SrCode::new("121008", "DCM", "Person Observer Name"),
            &review.observer_name,
        ));
        children.push(code("CONTAINS", &SrCode::new("review", LUCENT_SCHEME, "Review decision"), &review.decision));
        if let Some(reason) = &review.reason {
            children.push(code("CONTAINS", &SrCode::new("review-reason", LUCENT_SCHEME, "Review reason"), reason));
        }
        if !review.comment.trim().is_empty() {
            children.push(text("CONTAINS", &SrCode::new("121106", "DCM", "Comment"), review.comment.trim()));
        }
    }
    for m in &g.measurements {
        children.push(num(m, g.image.as_ref()));
    }
    if let (Some(points), Some(src)) = (&g.region_px, &g.image)
        && points.len() >= 2
    {
        children.push(scoord_polyline(&SrCode::new("111030", "DCM", "Image Region"), points, src));
    }
    if g.measurements.is_empty()
        && g.region_px.is_none()
        && let Some(src) = &g.image
    {
        children.push(image("CONTAINS", src));
    }
    container("CONTAINS", &SrCode::new("125007", "DCM", "Measurement Group"), children)
}

/// The referenced images, each once, in first-seen order.
fn all_images(doc: &SrDocument) -> Vec<SrImageRef> {
    let mut out: Vec<SrImageRef> = Vec::new();
    for r in doc.images.iter().chain(doc.groups.iter().filter_map(|g| g.image.as_ref())) {
        if !out.iter().any(|o| o.sop_instance_uid == r.sop_instance_uid && o.frame == r.frame) {
            out.push(r.clone());
        }
    }
    out
}

/// The Patient and General Study modules (and the character set) of a report object.
fn put_patient_and_study(obj: &mut InMemDicomObject, s: &SrStudy) {
    put_str(obj, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    put_str(obj, tags::PATIENT_NAME, VR::PN, &s.patient_name);
    put_str(obj, tags::PATIENT_ID, VR::LO, &s.patient_id);
    put_str(obj, tags::PATIENT_BIRTH_DATE, VR::DA, &s.patient_birth_date);
    put_str(obj, tags::PATIENT_SEX, VR::CS, &s.patient_sex);
    put_str(obj, tags::STUDY_INSTANCE_UID, VR::UI, &s.study_uid);
    put_str(obj, tags::STUDY_DATE, VR::DA, &s.study_date);
    put_str(obj, tags::STUDY_TIME, VR::TM, &s.study_time);
    put_str(obj, tags::REFERRING_PHYSICIAN_NAME, VR::PN, &s.referring_physician);
    put_str(obj, tags::STUDY_ID, VR::SH, &s.study_id);
    put_str(obj, tags::ACCESSION_NUMBER, VR::SH, &s.accession);
}

/// DICOM DT `YYYYMMDDHHMMSS` split into DA and TM (midnight when the time is missing).
fn date_and_time(datetime: &str) -> (&str, &str) {
    let dt = datetime.trim();
    let (date, time) = if dt.len() >= 8 { dt.split_at(8) } else { (dt, "") };
    (date, if time.is_empty() { "000000" } else { time })
}

/// Encapsulated PDF Storage.
pub const ENCAPSULATED_PDF: &str = "1.2.840.10008.5.1.4.1.1.104.1";

/// What an Encapsulated PDF holds besides the PDF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncapsulatedPdf {
    pub study: SrStudy,
    pub document_title: String,
    /// DICOM DT, `YYYYMMDDHHMMSS`: Content Date and Time.
    pub content_datetime: String,
    pub series_number: i64,
    pub series_description: String,
    /// Seed for the new UIDs (same seed, same UIDs).
    pub uid_seed: String,
}

/// Writes `pdf` as a DICOM Encapsulated PDF (modality DOC) in the study of `meta.study`, so the
/// report's PDF can be stored in a PACS beside the images. Returns the new UIDs.
pub fn write_encapsulated_pdf(pdf: &[u8], meta: &EncapsulatedPdf, path: &Path) -> Result<SrWritten> {
    if meta.study.study_uid.is_empty() {
        return Err(Error::MissingAttribute { name: "StudyInstanceUID" });
    }
    if !pdf.starts_with(b"%PDF-") {
        return Err(Error::Write { detail: "the encapsulated document is not a PDF".into() });
    }
    let series_uid = uid(&format!("pdf-series:{}:{}", meta.uid_seed, meta.study.study_uid));
    let sop_uid = uid(&format!("pdf-sop:{}:{}:{}", meta.uid_seed, meta.study.study_uid, meta.content_datetime));
    let (date, time) = date_and_time(&meta.content_datetime);
    let mut obj = InMemDicomObject::new_empty();
    put_patient_and_study(&mut obj, &meta.study);
    put_str(&mut obj, tags::SOP_CLASS_UID, VR::UI, ENCAPSULATED_PDF);
    put_str(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, &sop_uid);
    // Encapsulated Document Series, General Equipment, SC Equipment.
    put_str(&mut obj, tags::MODALITY, VR::CS, "DOC");
    put_str(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, &series_uid);
    put_str(&mut obj, tags::SERIES_NUMBER, VR::IS, &meta.series_number.to_string());
    put_str(&mut obj, tags::SERIES_DESCRIPTION, VR::LO, &meta.series_description);
    put_str(&mut obj, tags::MANUFACTURER, VR::LO, "Lucent");
    put_str(&mut obj, tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION"));
    put_str(&mut obj, tags::CONVERSION_TYPE, VR::CS, "WSD");
    // Encapsulated Document.
    put_str(&mut obj, tags::INSTANCE_NUMBER, VR::IS, "1");
    put_str(&mut obj, tags::CONTENT_DATE, VR::DA, date);
    put_str(&mut obj, tags::CONTENT_TIME, VR::TM, time);
    put_str(&mut obj, tags::ACQUISITION_DATE_TIME, VR::DT, meta.content_datetime.trim());
    // The PDF shows the patient's name and ID in its header.
    put_str(&mut obj, tags::BURNED_IN_ANNOTATION, VR::CS, "YES");
    put_str(&mut obj, tags::DOCUMENT_TITLE, VR::ST, &meta.document_title);
    seq(&mut obj, tags::CONCEPT_NAME_CODE_SEQUENCE, Vec::new());
    put_str(&mut obj, tags::MIME_TYPE_OF_ENCAPSULATED_DOCUMENT, VR::LO, "application/pdf");
    let length = u32::try_from(pdf.len()).map_err(|_| Error::Write { detail: "the PDF is over 4 GiB".into() })?;
    obj.put(DataElement::new(tags::ENCAPSULATED_DOCUMENT_LENGTH, VR::UL, PrimitiveValue::from(length)));
    let mut bytes = pdf.to_vec();
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    obj.put(DataElement::new(tags::ENCAPSULATED_DOCUMENT, VR::OB, PrimitiveValue::from(bytes)));
    crate::synth::write_object(obj, ENCAPSULATED_PDF, &sop_uid, path)?;
    Ok(SrWritten { series_uid, sop_instance_uid: sop_uid })
}

/// Writes the SR to `path`. Returns the new UIDs.
pub fn write_sr(doc: &SrDocument, path: &Path) -> Result<SrWritten> {
    if doc.study.study_uid.is_empty() {
        return Err(Error::MissingAttribute { name: "StudyInstanceUID" });
    }
    let series_uid = uid(&format!("sr-series:{}:{}", doc.uid_seed, doc.study.study_uid));
    let sop_uid = uid(&format!("sr-sop:{}:{}:{}", doc.uid_seed, doc.study.study_uid, doc.content_datetime));
    let (date, time) = date_and_time(&doc.content_datetime);

    let mut obj = InMemDicomObject::new_empty();
    put_patient_and_study(&mut obj, &doc.study);
    put_str(&mut obj, tags::SOP_CLASS_UID, VR::UI, COMPREHENSIVE_SR);
    put_str(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, &sop_uid);
    let s = &doc.study;
    // SR Document Series and General Equipment.
    put_str(&mut obj, tags::MODALITY, VR::CS, "SR");
    put_str(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, &series_uid);
    put_str(&mut obj, tags::SERIES_NUMBER, VR::IS, &doc.series_number.to_string());
    put_str(&mut obj, tags::SERIES_DESCRIPTION, VR::LO, &doc.series_description);
    seq(&mut obj, tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE, Vec::new());
    put_str(&mut obj, tags::MANUFACTURER, VR::LO, "Lucent");
    put_str(&mut obj, tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION"));
    // SR Document General.
    put_str(&mut obj, tags::INSTANCE_NUMBER, VR::IS, &doc.instance_number.to_string());
    put_str(&mut obj, tags::CONTENT_DATE, VR::DA, date);
    put_str(&mut obj, tags::CONTENT_TIME, VR::TM, time);
    match &doc.completion {
        SrCompletion::Preliminary => {
            put_str(&mut obj, tags::COMPLETION_FLAG, VR::CS, "PARTIAL");
            put_str(&mut obj, tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");
        }
        SrCompletion::Verified { observer_name, organization, datetime } => {
            put_str(&mut obj, tags::COMPLETION_FLAG, VR::CS, "COMPLETE");
            put_str(&mut obj, tags::VERIFICATION_FLAG, VR::CS, "VERIFIED");
            let mut v = InMemDicomObject::new_empty();
            put_str(&mut v, tags::VERIFYING_OBSERVER_NAME, VR::PN, observer_name);
            seq(&mut v, tags::VERIFYING_OBSERVER_IDENTIFICATION_CODE_SEQUENCE, Vec::new());
            put_str(&mut v, tags::VERIFYING_ORGANIZATION, VR::LO, organization);
            put_str(&mut v, tags::VERIFICATION_DATE_TIME, VR::DT, datetime);
            seq(&mut obj, tags::VERIFYING_OBSERVER_SEQUENCE, vec![v]);
        }
    }
    seq(&mut obj, tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, vec![code_item(&doc.procedure)]);
    if doc.groups.iter().any(|g| g.review.is_some() || g.finding.scheme == LUCENT_SCHEME) {
        let mut scheme = InMemDicomObject::new_empty();
        put_str(&mut scheme, tags::CODING_SCHEME_DESIGNATOR, VR::SH, LUCENT_SCHEME);
        put_str(&mut scheme, tags::CODING_SCHEME_NAME, VR::ST, "Lucent review codes");
        put_str(&mut scheme, tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION, VR::ST, "Lucent");
        seq(&mut obj, tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE, vec![scheme]);
    }
    let images = all_images(doc);
    if !images.is_empty() {
        let mut series_items = Vec::new();
        let mut series_uids: Vec<&str> = Vec::new();
        for r in &images {
            if !series_uids.contains(&r.series_uid.as_str()) {
                series_uids.push(&r.series_uid);
            }
        }
        for series in series_uids {
            let mut sops = Vec::new();
            for r in images.iter().filter(|r| r.series_uid == series) {
                if sops.iter().any(|(uid, _): &(String, InMemDicomObject)| *uid == r.sop_instance_uid) {
                    continue;
                }
                let mut sop = InMemDicomObject::new_empty();
                put_str(&mut sop, tags::REFERENCED_SOP_CLASS_UID, VR::UI, &r.sop_class_uid);
                put_str(&mut sop, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &r.sop_instance_uid);
                sops.push((r.sop_instance_uid.clone(), sop));
            }
            let mut item = InMemDicomObject::new_empty();
            put_str(&mut item, tags::SERIES_INSTANCE_UID, VR::UI, series);
            seq(&mut item, tags::REFERENCED_SOP_SEQUENCE, sops.into_iter().map(|(_, s)| s).collect());
            series_items.push(item);
        }
        let mut study = InMemDicomObject::new_empty();
        put_str(&mut study, tags::STUDY_INSTANCE_UID, VR::UI, &s.study_uid);
        seq(&mut study, tags::REFERENCED_SERIES_SEQUENCE, series_items);
        seq(&mut obj, tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE, vec![study]);
    }

    // SR Document Content.
    put_str(&mut obj, tags::VALUE_TYPE, VR::CS, "CONTAINER");
    seq(
        &mut obj,
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        vec![code_item(&SrCode::new("126000", "DCM", "Imaging Measurement Report"))],
    );
    put_str(&mut obj, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    let mut template = InMemDicomObject::new_empty();
    put_str(&mut template, tags::MAPPING_RESOURCE, VR::CS, "DCMR");
    put_str(&mut template, tags::TEMPLATE_IDENTIFIER, VR::CS, "1500");
    seq(&mut obj, tags::CONTENT_TEMPLATE_SEQUENCE, vec![template]);

    let observer_type = SrCode::new("121005", "DCM", "Observer Type");
    let mut root = vec![code(
        "HAS CONCEPT MOD",
        &SrCode::new("121049", "DCM", "Language of Content Item and Descendants"),
        &doc.language,
    )];
    if let SrCompletion::Verified { observer_name, .. } = &doc.completion {
        root.push(code("HAS OBS CONTEXT", &observer_type, &SrCode::new("121006", "DCM", "Person")));
        root.push(pname("HAS OBS CONTEXT", &SrCode::new("121008", "DCM", "Person Observer Name"), observer_name));
    }
    root.push(code("HAS OBS CONTEXT", &observer_type, &SrCode::new("121007", "DCM", "Device")));
    root.push(uidref(
        "HAS OBS CONTEXT",
        &SrCode::new("121012", "DCM", "Device Observer UID"),
        &uid(&format!("sr-device:{}:{}", doc.algorithm_name, doc.algorithm_version)),
    ));
    root.push(text("HAS OBS CONTEXT", &SrCode::new("121013", "DCM", "Device Observer Name"), &doc.algorithm_name));
    root.push(text("HAS OBS CONTEXT", &SrCode::new("121014", "DCM", "Device Observer Manufacturer"), "Lucent"));
    root.push(text(
        "HAS OBS CONTEXT",
        &SrCode::new("121015", "DCM", "Device Observer Model Name"),
        &format!("{} {}", doc.algorithm_name, doc.algorithm_version),
    ));
    root.push(code("HAS CONCEPT MOD", &SrCode::new("121058", "DCM", "Procedure reported"), &doc.procedure));
    let library: Vec<InMemDicomObject> = images.iter().map(|r| image("CONTAINS", r)).collect();
    let library_group = if library.is_empty() {
        Vec::new()
    } else {
        vec![container("CONTAINS", &SrCode::new("126200", "DCM", "Image Library Group"), library)]
    };
    root.push(container("CONTAINS", &SrCode::new("111028", "DCM", "Image Library"), library_group));
    root.push(container(
        "CONTAINS",
        &SrCode::new("126010", "DCM", "Imaging Measurements"),
        doc.groups.iter().map(group).collect(),
    ));
    let finding = SrCode::new("121071", "DCM", "Finding");
    let impression = SrCode::new("121073", "DCM", "Impression");
    let findings_text: Vec<InMemDicomObject> = doc
        .sections
        .iter()
        .filter(|s| !s.impression && !s.text.trim().is_empty())
        .map(|s| text("CONTAINS", &finding, &format!("{}: {}", s.title, s.text.trim())))
        .collect();
    if !findings_text.is_empty() {
        root.push(container("CONTAINS", &SrCode::new("121070", "DCM", "Findings"), findings_text));
    }
    let impressions: Vec<InMemDicomObject> = doc
        .sections
        .iter()
        .filter(|s| s.impression && !s.text.trim().is_empty())
        .map(|s| text("CONTAINS", &impression, s.text.trim()))
        .collect();
    if !impressions.is_empty() {
        root.push(container("CONTAINS", &SrCode::new("121072", "DCM", "Impressions"), impressions));
    }
    seq(&mut obj, tags::CONTENT_SEQUENCE, root);

    crate::synth::write_object(obj, COMPREHENSIVE_SR, &sop_uid, path)?;
    Ok(SrWritten { series_uid, sop_instance_uid: sop_uid })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_dictionary_std::uids;

    /// A signed LDCT report with one nodule, Korean text.
    pub(crate) fn sample(completion: SrCompletion) -> SrDocument {
        let image = SrImageRef {
            series_uid: "1.2.3.2".into(),
            sop_class_uid: uids::CT_IMAGE_STORAGE.into(),
            sop_instance_uid: "1.2.3.2.42".into(),
            frame: None,
        };
        SrDocument {
            study: SrStudy {
                patient_name: "홍^길동".into(),
                patient_id: "P001".into(),
                study_uid: "1.2.3".into(),
                study_date: "20240301".into(),
                ..Default::default()
            },
            language: SrCode::new("ko", "RFC5646", "Korean"),
            procedure: SrCode::new("24627-2", "LN", "CT Chest"),
            algorithm_name: "lucent-test-ct-detect".into(),
            algorithm_version: "1.0.0".into(),
            sections: vec![
                SrTextSection {
                    title: "폐결절".into(), text: "우하엽에 8.2 mm 고형 결절.".into(), impression: false
                },
                SrTextSection {
                    title: "Lung-RADS".into(), text: "Lung-RADS v2022 범주 4A.".into(), impression: true
                },
            ],
            groups: vec![SrFindingGroup {
                tracking_id: "Nodule 1".into(),
                tracking_uid: uid("nodule-1"),
                finding: SrCode::new("27925004", "SCT", "Nodule"),
                finding_site: Some(SrCode::new("50410000", "SCT", "Lower lobe of right lung")),
                laterality: None,
                measurements: vec![
                    SrMeasurement::long_axis_mm(9.1),
                    SrMeasurement::short_axis_mm(7.3),
                    SrMeasurement::diameter_mm(8.2),
                    SrMeasurement::volume_mm3(268.4),
                    SrMeasurement::mean_attenuation_hu(35.0),
                ],
                image: Some(image),
                region_px: None,
                review: None,
                algorithm_name: "lucent-test-ct-detect".into(),
                algorithm_version: "1.0.0".into(),
            }],
            images: Vec::new(),
            completion,
            content_datetime: "20240301103000".into(),
            series_number: 901,
            instance_number: 1,
            series_description: "Lucent AI report".into(),
            uid_seed: "test".into(),
        }
    }

    #[test]
    fn an_sr_reads_back_with_its_flags_and_tree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sr.dcm");
        let written = write_sr(&sample(SrCompletion::Preliminary), &path).unwrap();
        let obj = dicom_object::open_file(&path).unwrap();
        let s = |tag| obj.element(tag).unwrap().to_str().unwrap().trim().to_owned();
        assert_eq!(s(tags::SOP_CLASS_UID), COMPREHENSIVE_SR);
        assert_eq!(s(tags::SOP_INSTANCE_UID), written.sop_instance_uid);
        assert_eq!(s(tags::COMPLETION_FLAG), "PARTIAL");
        assert_eq!(s(tags::VERIFICATION_FLAG), "UNVERIFIED");
        assert_eq!(s(tags::PATIENT_NAME), "홍^길동");
        let verified = SrCompletion::Verified {
            observer_name: "Kim^Radiologist".into(),
            organization: "Lucent".into(),
            datetime: "20240301110000".into(),
        };
        write_sr(&sample(verified), &path).unwrap();
        let obj = dicom_object::open_file(&path).unwrap();
        assert_eq!(obj.element(tags::VERIFICATION_FLAG).unwrap().to_str().unwrap().trim(), "VERIFIED");
        assert!(obj.element(tags::VERIFYING_OBSERVER_SEQUENCE).is_ok());
    }
}

#[cfg(test)]
mod pdf_tests {
    use super::*;

    #[test]
    fn an_encapsulated_pdf_keeps_the_pdf_bytes_and_the_study() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pdf.dcm");
        let pdf = b"%PDF-1.7\n% a tiny odd-length stand-in\n%%EOF".to_vec();
        assert_eq!(pdf.len() % 2, 1);
        let meta = EncapsulatedPdf {
            study: SrStudy { study_uid: "1.2.3".into(), patient_name: "홍^길동".into(), ..Default::default() },
            document_title: "Lucent report".into(),
            content_datetime: "20240301103000".into(),
            series_number: 992,
            series_description: "Lucent report (PDF)".into(),
            uid_seed: "test".into(),
        };
        let written = write_encapsulated_pdf(&pdf, &meta, &path).unwrap();
        let obj = dicom_object::open_file(&path).unwrap();
        let s = |tag| obj.element(tag).unwrap().to_str().unwrap().trim().to_owned();
        assert_eq!(s(tags::SOP_CLASS_UID), ENCAPSULATED_PDF);
        assert_eq!(s(tags::SOP_INSTANCE_UID), written.sop_instance_uid);
        assert_eq!(s(tags::STUDY_INSTANCE_UID), "1.2.3");
        assert_eq!(s(tags::MODALITY), "DOC");
        assert_eq!(s(tags::MIME_TYPE_OF_ENCAPSULATED_DOCUMENT), "application/pdf");
        let length = obj.element(tags::ENCAPSULATED_DOCUMENT_LENGTH).unwrap().to_int::<usize>().unwrap();
        let stored = obj.element(tags::ENCAPSULATED_DOCUMENT).unwrap().to_bytes().unwrap();
        assert_eq!(&stored[..length], pdf.as_slice(), "the PDF, then one pad byte");
        assert_eq!(stored.len(), pdf.len() + 1);
        assert!(write_encapsulated_pdf(b"not a pdf", &meta, &path).is_err());
    }
}

/// External validators: DCMTK's `dsrdump` and `dsr2xml`, and pydicom, when installed.
#[cfg(test)]
mod validators {
    use super::tests::sample;
    use super::*;
    use std::process::Command;

    fn required() -> bool {
        std::env::var("LUCENT_REQUIRE_TEST_DATA").is_ok_and(|v| v == "1")
    }

    fn tool(name: &str) -> bool {
        let found = Command::new(name).arg("--version").output().is_ok();
        assert!(found || !required(), "{name} is missing (apt-get install dcmtk)");
        if !found {
            eprintln!("SKIP: {name} not installed");
        }
        found
    }

    fn python_with_pydicom() -> Option<std::path::PathBuf> {
        // `cargo xtask setup` makes venv-pydicom; the benchmark's venv has pydicom too.
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/lucent-data");
        for python in [data.join("venv-pydicom/bin/python"), data.join("venv/bin/python"), "python3".into()] {
            let ok = Command::new(&python).args(["-c", "import pydicom"]).output().is_ok_and(|o| o.status.success());
            if ok {
                return Some(python);
            }
        }
        assert!(!required(), "python3 with pydicom is missing");
        eprintln!("SKIP: no python with pydicom");
        None
    }

    #[test]
    fn dsrdump_and_pydicom_read_both_flavours_without_complaint() {
        let dir = tempfile::tempdir().unwrap();
        let verified = SrCompletion::Verified {
            observer_name: "Kim^Radiologist".into(),
            organization: "Lucent".into(),
            datetime: "20240301110000".into(),
        };
        for (name, completion) in [("prelim.dcm", SrCompletion::Preliminary), ("signed.dcm", verified)] {
            let path = dir.path().join(name);
            write_sr(&sample(completion), &path).unwrap();
            if tool("dsrdump") {
                let out = Command::new("dsrdump").arg(&path).output().unwrap();
                // DCMTK's string VR checker cannot check UTF-8 values and says so; that is a
                // limitation of the checker, not a problem of the file.
                let stderr: String = String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .filter(|l| !l.contains("VR checker does not support this Specific Character Set"))
                    .collect();
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(out.status.success(), "dsrdump failed: {stderr}");
                assert!(stderr.trim().is_empty(), "dsrdump complained: {stderr}");
                assert!(stdout.contains("Imaging Measurement Report"), "{stdout}");
                assert!(stdout.contains("Long Axis"), "{stdout}");
            }
            if tool("dsr2xml") {
                let out = Command::new("dsr2xml").arg(&path).output().unwrap();
                let stderr: String = String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .filter(|l| !l.contains("VR checker does not support this Specific Character Set"))
                    .collect();
                assert!(out.status.success() && stderr.trim().is_empty(), "dsr2xml: {stderr}");
            }
            if let Some(python) = python_with_pydicom() {
                let script = "import sys, pydicom\nds = pydicom.dcmread(sys.argv[1])\n\
                    assert ds.SOPClassUID == '1.2.840.10008.5.1.4.1.1.88.33'\n\
                    print(ds.CompletionFlag, ds.VerificationFlag, ds.PatientName, len(ds.ContentSequence))";
                let out = Command::new(python).args(["-c", script]).arg(&path).output().unwrap();
                assert!(out.status.success(), "pydicom: {}", String::from_utf8_lossy(&out.stderr));
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(stdout.contains("홍^길동"), "{stdout}");
            }
        }
    }
}
