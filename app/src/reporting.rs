//! Glue from a reading (`ai::ReadReport`) and the study's DICOM headers to the `report` crate's
//! neutral inputs, and from a drafted report to the exports (PDF, DICOM SR through `pacs::sr`,
//! FHIR JSON).
//!
//! Sides and lobes are computed here, and they are **heuristics**, stated as such:
//! * CXR: a finding's box centre against the image's vertical midline; the patient's right is on
//!   the image's left unless Patient Orientation's row direction says `R` (then it is flipped).
//!   Boxes of one finding on both sides make it bilateral.
//! * CT nodules: right or left from the nodule's patient x (LPS: +x is the patient's left) against
//!   the middle of the volume's x extent; upper / middle / lower lobe from the nodule's z within the
//!   volume's z extent (right lung: thirds; left lung: halves, upper and lower). The scanned range
//!   is not the lung's extent and fissures vary: the lobe is a proposal for the radiologist.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use pacs::InstanceInfo;
use pacs::sr::{SrCode, SrCompletion, SrDocument, SrFindingGroup, SrImageRef, SrMeasurement, SrStudy, SrTextSection};
use report::model::{
    AiFinding, BoxGeometry, Decisions, ImageRef, Lang, Lobe, LungRadsInput, NoduleMeasurements, NoduleType, SeriesRef,
    Side, StudyContext, StudyInputs, effective_findings,
};
use report::pdf::KeyImage;
use report::{Report, ReportStatus};

use crate::ai::{ReadReport, SeriesReading};

/// One study's report inputs with what the exports need besides them.
#[derive(Debug, Clone)]
pub struct StudyBundle {
    pub inputs: StudyInputs,
    /// Key images with the lesion boxes drawn, by finding id.
    pub key_images: Vec<(String, KeyImage)>,
    /// Patient and study attributes for the SR, from a source instance.
    pub sr_study: SrStudy,
}

/// Headers of the files under `path`, by study and series.
fn headers(path: &Path) -> BTreeMap<String, BTreeMap<String, Vec<(PathBuf, InstanceInfo)>>> {
    let files = crate::info::list_files(path);
    let infos = pacs::file::read_infos(&files, pacs::volume::default_threads());
    let mut out: BTreeMap<String, BTreeMap<String, Vec<(PathBuf, InstanceInfo)>>> = BTreeMap::new();
    for (file, info) in files.into_iter().zip(infos) {
        if let Ok(info) = info
            && info.has_pixel_data
        {
            out.entry(info.study_instance_uid.clone())
                .or_default()
                .entry(info.series_instance_uid.clone())
                .or_default()
                .push((file, info));
        }
    }
    out
}

fn image_ref(info: &InstanceInfo) -> ImageRef {
    ImageRef {
        series_uid: info.series_instance_uid.clone(),
        sop_class_uid: info.sop_class_uid.clone(),
        sop_instance_uid: info.sop_instance_uid.clone(),
        series_number: info.series_number,
        instance_number: info.instance_number,
        frame: None,
    }
}

/// The patient's side of an image column, for a radiograph.
fn cxr_side(center_x: f64, info: &InstanceInfo) -> Side {
    let flipped = info.patient_orientation.split('\\').next().is_some_and(|row| row.trim().starts_with('R'));
    let on_image_left = center_x < f64::from(info.columns) / 2.0;
    if on_image_left != flipped { Side::Right } else { Side::Left }
}

/// The side of a radiograph finding from its regions (side, peak map value): the side of the
/// strongest region, or both when the other side's strongest region is nearly as strong (a faint
/// echo of the map on the other lung is not a bilateral finding).
fn finding_side(regions: &[(Side, f32)]) -> Side {
    let peak_on = |side: Side| {
        regions
            .iter()
            .filter(|(s, _)| *s == side)
            .map(|(_, p)| *p)
            .fold(None, |m: Option<f32>, p| Some(m.map_or(p, |m| m.max(p))))
    };
    match (peak_on(Side::Right), peak_on(Side::Left)) {
        (None, None) => Side::Unknown,
        (Some(_), None) => Side::Right,
        (None, Some(_)) => Side::Left,
        (Some(r), Some(l)) if r.min(l) >= 0.75 * r.max(l) => Side::Bilateral,
        (Some(r), Some(l)) => {
            if r >= l {
                Side::Right
            } else {
                Side::Left
            }
        }
    }
}

/// Grey u8 pixels of a frame to RGBA.
fn grey_rgba(grey: &[u8]) -> Vec<u8> {
    grey.iter().flat_map(|&g| [g, g, g, 255]).collect()
}

/// Draws a rectangle outline (pixel coordinates, inclusive) into RGBA pixels.
fn draw_box(rgba: &mut [u8], width: usize, height: usize, min: [f64; 2], max: [f64; 2]) {
    let clamp = |v: f64, n: usize| (v.round().max(0.0) as usize).min(n.saturating_sub(1));
    let (x0, x1) = (clamp(min[0], width), clamp(max[0], width));
    let (y0, y1) = (clamp(min[1], height), clamp(max[1], height));
    let thickness = (width.max(height) / 256).max(1);
    let mut set = |x: usize, y: usize| {
        if x < width && y < height {
            let i = (y * width + x) * 4;
            rgba[i..i + 4].copy_from_slice(&[255, 40, 40, 255]);
        }
    };
    for t in 0..thickness {
        for x in x0..=x1 {
            set(x, y0 + t);
            set(x, y1.saturating_sub(t));
        }
        for y in y0..=y1 {
            set(x0 + t, y);
            set(x1.saturating_sub(t), y);
        }
    }
}

/// Halves an RGBA image until its longer side is at most `max_side`.
fn shrink(mut rgba: Vec<u8>, mut w: usize, mut h: usize, max_side: usize) -> (Vec<u8>, usize, usize) {
    while w.max(h) > max_side && w >= 2 && h >= 2 {
        let (nw, nh) = (w / 2, h / 2);
        let mut out = vec![0u8; nw * nh * 4];
        for y in 0..nh {
            for x in 0..nw {
                for c in 0..4 {
                    let p = |xx: usize, yy: usize| u32::from(rgba[((yy * w) + xx) * 4 + c]);
                    // Keep marks visible: the brightest red wins over averaging it away.
                    let v = (p(2 * x, 2 * y) + p(2 * x + 1, 2 * y) + p(2 * x, 2 * y + 1) + p(2 * x + 1, 2 * y + 1)) / 4;
                    out[(y * nw + x) * 4 + c] = v as u8;
                }
            }
        }
        rgba = out;
        w = nw;
        h = nh;
    }
    (rgba, w, h)
}

/// A rendered key image of `file` with boxes drawn; `voi` None uses the image's default window.
fn key_image(file: &Path, voi: Option<pacs::Voi>, boxes: &[([f64; 2], [f64; 2])], caption: String) -> Result<KeyImage> {
    let image = pacs::file::load_image(file, 0)?;
    let voi = voi.unwrap_or_else(|| image.transform.default_voi(&image.frame));
    let grey = image.transform.render_u8(&image.frame, &voi, false);
    let (w, h) = (image.frame.columns as usize, image.frame.rows as usize);
    anyhow::ensure!(grey.len() == w * h, "the key image is not a grey image");
    let mut rgba = grey_rgba(&grey);
    for (min, max) in boxes {
        draw_box(&mut rgba, w, h, *min, *max);
    }
    let (rgba, width, height) = shrink(rgba, w, h, 768);
    Ok(KeyImage { width, height, rgba, caption })
}

fn model_name(series: &SeriesReading, model_id: &str) -> String {
    series.models.iter().find(|m| m.model_id == model_id).map(|m| m.model_name.clone()).unwrap_or_default()
}

/// Lobe from a patient-space point and the volume's extent (see the module docs).
pub fn lobe_heuristic(point_mm: [f64; 3], x_range: [f64; 2], z_range: [f64; 2]) -> Lobe {
    let right = point_mm[0] < (x_range[0] + x_range[1]) / 2.0;
    let span = (z_range[1] - z_range[0]).max(1e-6);
    let f = ((point_mm[2] - z_range[0]) / span).clamp(0.0, 1.0); // 1 = most superior
    match (right, f) {
        (true, f) if f > 2.0 / 3.0 => Lobe::RightUpper,
        (true, f) if f > 1.0 / 3.0 => Lobe::RightMiddle,
        (true, _) => Lobe::RightLower,
        (false, f) if f > 0.5 => Lobe::LeftUpper,
        (false, _) => Lobe::LeftLower,
    }
}

/// x and z extents of a CT series in patient mm.
fn extents(slices: &[(PathBuf, InstanceInfo)]) -> Option<([f64; 2], [f64; 2])> {
    let mut x = [f64::INFINITY, f64::NEG_INFINITY];
    let mut z = [f64::INFINITY, f64::NEG_INFINITY];
    for (_, info) in slices {
        let (Some(p), Some(o), Some(s)) = (info.image_position_patient, info.image_orientation_patient, info.spacing())
        else {
            continue;
        };
        let w = f64::from(info.columns.saturating_sub(1)) * s.column_mm;
        let h = f64::from(info.rows.saturating_sub(1)) * s.row_mm;
        for (a, b) in [(0.0, 0.0), (w, 0.0), (0.0, h), (w, h)] {
            let corner = [p[0] + o[0] * a + o[3] * b, p[2] + o[2] * a + o[5] * b];
            x = [x[0].min(corner[0]), x[1].max(corner[0])];
            z = [z[0].min(corner[1]), z[1].max(corner[1])];
        }
    }
    (x[0].is_finite() && z[0].is_finite()).then_some((x, z))
}

/// One bundle per study in the reading (studies in UID order).
pub fn bundles(path: &Path, reading: &ReadReport) -> Result<Vec<StudyBundle>> {
    let headers = headers(path);
    let mut out = Vec::new();
    for (study_uid, series_map) in &headers {
        let Some((_, first)) = series_map.values().flat_map(|v| v.iter()).next() else { continue };
        let readings: Vec<&SeriesReading> =
            reading.series.iter().filter(|s| series_map.contains_key(&s.series_uid)).collect();
        let modality =
            if readings.iter().any(|s| s.modality == "CT") { "CT".to_owned() } else { first.modality.clone() };
        let mut context = StudyContext {
            study_uid: study_uid.clone(),
            modality,
            patient_name: first.patient_name.clone(),
            patient_id: first.patient_id.clone(),
            patient_sex: first.patient_sex.clone(),
            patient_birth_date: first.patient_birth_date.clone(),
            accession: first.accession_number.clone(),
            study_date: first.study_date.clone(),
            study_time: first.study_time.clone(),
            study_description: first.study_description.clone(),
            series: Vec::new(),
        };
        for slices in series_map.values() {
            let info = &slices[0].1;
            context.series.push(SeriesRef {
                series_uid: info.series_instance_uid.clone(),
                modality: info.modality.clone(),
                description: info.series_description.clone(),
                series_number: info.series_number,
                images: slices.iter().map(|(_, i)| image_ref(i)).collect(),
            });
        }
        let mut findings = Vec::new();
        let mut key_images = Vec::new();
        let mut lung_rads = None;
        for (si, series) in readings.iter().enumerate() {
            let Some(slices) = series_map.get(&series.series_uid) else { continue };
            let (file, info) = &slices[0];
            // Findings the manifest does not show by default (not backed on real patients) are
            // not drafted into the report.
            for f in series.findings.iter().filter(|f| f.shown_by_default) {
                let boxes: Vec<&inference::cxr::FindingBox> =
                    f.geometry.as_ref().map(|g| g.boxes.iter().collect()).unwrap_or_default();
                let sides: Vec<(Side, f32)> =
                    boxes.iter().map(|b| (cxr_side((b.min_px[0] + b.max_px[0]) / 2.0, info), b.peak)).collect();
                let side = finding_side(&sides);
                let id = format!("s{si}:{}:{}", f.model_id, f.label);
                let geometry = boxes.first().map(|b| BoxGeometry {
                    min_px: b.min_px,
                    max_px: b.max_px,
                    min_mm: b.min_mm,
                    max_mm: b.max_mm,
                });
                if f.positive && !boxes.is_empty() {
                    let marks: Vec<([f64; 2], [f64; 2])> = boxes.iter().map(|b| (b.min_px, b.max_px)).collect();
                    if let Ok(k) = key_image(file, None, &marks, format!("{} ({:.2})", f.label, f.score)) {
                        key_images.push((id.clone(), k));
                    }
                }
                findings.push(AiFinding {
                    id,
                    model_id: f.model_id.clone(),
                    model_name: model_name(series, &f.model_id),
                    model_version: f.model_version.clone(),
                    label: f.label.clone(),
                    score: f.score,
                    threshold: f.threshold,
                    side,
                    lobe: None,
                    location: None,
                    geometry,
                    nodule: None,
                    image: Some(image_ref(info)),
                });
            }
            let ext = extents(slices);
            for (n, nodule) in series.nodules.iter().enumerate() {
                let c = &nodule.candidate;
                let center = nodule.measurement.as_ref().map_or(c.center_patient_mm, |m| m.centroid_patient_mm);
                let lobe = ext.map(|(x, z)| lobe_heuristic(center, x, z));
                let nearest = slices.iter().min_by(|a, b| {
                    let dz = |i: &InstanceInfo| i.image_position_patient.map_or(f64::MAX, |p| (p[2] - center[2]).abs());
                    dz(&a.1).total_cmp(&dz(&b.1))
                });
                let id = format!("s{si}:{}:nodule{}", c.model_id, n + 1);
                let measurements = nodule.measurement.as_ref().map(|m| NoduleMeasurements {
                    long_axis_mm: m.axes.long_axis_mm,
                    short_axis_mm: m.axes.short_axis_mm,
                    mean_diameter_mm: m.axes.mean_diameter_mm,
                    volume_mm3: m.volume_mm3,
                    nodule_type: match m.nodule_type {
                        inference::ct::NoduleType::Solid => NoduleType::Solid,
                        inference::ct::NoduleType::PartSolid => NoduleType::PartSolid,
                        inference::ct::NoduleType::GroundGlass => NoduleType::GroundGlass,
                    },
                    mean_hu: Some(m.mean_hu),
                    lung_rads: nodule.lung_rads.clone(),
                });
                if let Some((slice_file, slice_info)) = nearest
                    && let Some(spacing) = slice_info.spacing()
                {
                    let half = measurements.as_ref().map_or(c.size_mm[0] / 2.0, |m| m.long_axis_mm / 2.0) + 3.0;
                    let cv = nodule.measurement.as_ref().map_or(c.center_voxel, |m| m.centroid_voxel);
                    let (hx, hy) = (half / spacing.column_mm, half / spacing.row_mm);
                    let lung = pacs::Voi::Window(pacs::Window::new(-600.0, 1500.0));
                    let caption = format!("{} {}", lobe.map(|l| l.abbreviation()).unwrap_or("nodule"), n + 1);
                    if let Ok(k) = key_image(
                        slice_file,
                        Some(lung),
                        &[([cv[0] - hx, cv[1] - hy], [cv[0] + hx, cv[1] + hy])],
                        caption,
                    ) {
                        key_images.push((id.clone(), k));
                    }
                }
                findings.push(AiFinding {
                    id,
                    model_id: c.model_id.clone(),
                    model_name: model_name(series, &c.model_id),
                    model_version: c.model_version.clone(),
                    label: c.label.clone(),
                    score: c.score,
                    // Detections the model returned are its flags.
                    threshold: 0.0,
                    side: lobe.map_or(Side::Unknown, Lobe::side),
                    lobe,
                    location: None,
                    geometry: None,
                    nodule: measurements,
                    image: nearest.map(|(_, i)| image_ref(i)),
                });
            }
            if let Some(l) = &series.lung_rads {
                lung_rads = Some(LungRadsInput { category: l.category.clone(), management: l.management.clone() });
            }
        }
        let sr_study = SrStudy::from_info(first);
        out.push(StudyBundle { inputs: StudyInputs { context, findings, lung_rads }, key_images, sr_study });
    }
    Ok(out)
}

/// A SNOMED CT code for common finding labels; Lucent's own scheme otherwise.
fn finding_code(label: &str) -> SrCode {
    let key = label.trim().to_lowercase().replace([' ', '-'], "_");
    let known = match key.as_str() {
        "nodule" | "lung_nodule" | "pulmonary_nodule" => Some(("27925004", "Nodule")),
        "mass" | "lung_mass" => Some(("4147007", "Mass")),
        "pneumothorax" => Some(("36118008", "Pneumothorax")),
        "effusion" | "pleural_effusion" => Some(("60046008", "Pleural effusion")),
        "consolidation" => Some(("95436008", "Lung consolidation")),
        "atelectasis" => Some(("46621007", "Atelectasis")),
        "cardiomegaly" => Some(("8186001", "Cardiomegaly")),
        "pneumonia" => Some(("233604007", "Pneumonia")),
        "edema" | "pulmonary_edema" => Some(("19242006", "Pulmonary edema")),
        "fracture" | "rib_fracture" => Some(("125605004", "Fracture of bone")),
        _ => None,
    };
    match known {
        Some((code, meaning)) => SrCode::new(code, "SCT", meaning),
        None => {
            SrCode::new(&key.chars().take(16).collect::<String>(), pacs::sr::LUCENT_SCHEME, &label.replace('_', " "))
        }
    }
}

fn laterality(side: Side) -> Option<SrCode> {
    match side {
        Side::Right => Some(SrCode::new("24028007", "SCT", "Right")),
        Side::Left => Some(SrCode::new("7771000", "SCT", "Left")),
        Side::Bilateral => Some(SrCode::new("51440002", "SCT", "Right and left")),
        Side::Unknown => None,
    }
}

/// The SR measurement group of the `index`-th finding described (0-based): the finding, its
/// site or side, the nodule measurements, the image it was seen on and the algorithm.
pub fn sr_group(study_uid: &str, index: usize, f: &AiFinding) -> SrFindingGroup {
    let mut measurements = Vec::new();
    if let Some(n) = &f.nodule {
        measurements.push(SrMeasurement::long_axis_mm(n.long_axis_mm));
        measurements.push(SrMeasurement::short_axis_mm(n.short_axis_mm));
        measurements.push(SrMeasurement::diameter_mm(n.mean_diameter_mm));
        measurements.push(SrMeasurement::volume_mm3(n.volume_mm3));
        if let Some(hu) = n.mean_hu {
            measurements.push(SrMeasurement::mean_attenuation_hu(hu));
        }
    }
    SrFindingGroup {
        tracking_id: format!("{} {}", f.label.replace('_', " "), index + 1),
        tracking_uid: pacs::synth::uid(&format!("tracking:{study_uid}:{}", f.id)),
        finding: finding_code(&f.label),
        finding_site: f.lobe.map(|l| {
            let (code, meaning) = l.snomed();
            SrCode::new(code, "SCT", meaning)
        }),
        laterality: if f.lobe.is_some() { None } else { laterality(f.effective_side()) },
        measurements,
        image: f.image.as_ref().map(|r| SrImageRef {
            series_uid: r.series_uid.clone(),
            sop_class_uid: r.sop_class_uid.clone(),
            sop_instance_uid: r.sop_instance_uid.clone(),
            frame: r.frame,
        }),
        region_px: None,
        review: None,
        algorithm_name: f.model_id.clone(),
        algorithm_version: f.model_version.clone(),
    }
}

/// Opens the study store's report store with its audit head anchored in Lucent's data folder
/// (`audit-anchors/`: the key and head files the database's writers cannot rewrite along with it)
/// and its users' signing keys in `signing-keys/<store id>/`.
pub fn open_report_store(store_dir: &Path) -> Result<report::ReportStore> {
    let mut store = report::ReportStore::open(store_dir).context("opening the report store")?;
    let anchor = report::AuditAnchor::in_dir(&crate::config::data_dir().join("audit-anchors"), store_dir)
        .context("opening the audit anchor")?;
    store.set_anchor(anchor).context("anchoring the audit log")?;
    let keys = report::KeyStore::for_store(&crate::config::data_dir().join("signing-keys"), store_dir)
        .context("opening the signing keys")?;
    store.set_key_store(keys);
    Ok(store)
}

/// Lower-case hex SHA-256 of an exported file's bytes (for the audit log).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `YYYY-MM-DDTHH:MM:SSZ` to DICOM DT `YYYYMMDDHHMMSS`.
pub fn dicom_datetime(rfc3339: &str) -> String {
    rfc3339.chars().filter(char::is_ascii_digit).take(14).collect()
}

/// The SR document for a report (preliminary unless signed).
pub fn sr_document(
    bundle: &StudyBundle,
    report: &Report,
    decisions: &Decisions,
    status: ReportStatus,
    signed_by: Option<&str>,
    when_rfc3339: &str,
) -> SrDocument {
    let described: Vec<AiFinding> =
        effective_findings(&bundle.inputs.findings, decisions).into_iter().filter(AiFinding::is_flagged).collect();
    let (algorithm_name, algorithm_version) = described
        .first()
        .map(|f| (f.model_id.clone(), f.model_version.clone()))
        .unwrap_or_else(|| ("Lucent".to_owned(), env!("CARGO_PKG_VERSION").to_owned()));
    let study_uid = &bundle.inputs.context.study_uid;
    let groups = described.iter().enumerate().map(|(i, f)| sr_group(study_uid, i, f)).collect();
    let (loinc, loinc_display) = report.kind.loinc();
    let procedure = SrCode::new(loinc, "LN", loinc_display);
    let completion = match (status, signed_by) {
        (ReportStatus::Final | ReportStatus::Amended, Some(by)) => SrCompletion::Verified {
            observer_name: by.to_owned(),
            organization: "Lucent".to_owned(),
            datetime: dicom_datetime(when_rfc3339),
        },
        _ => SrCompletion::Preliminary,
    };
    let lang = report.lang;
    SrDocument {
        study: bundle.sr_study.clone(),
        language: SrCode::new(lang.code(), "RFC5646", lang.english_name()),
        procedure,
        algorithm_name,
        algorithm_version,
        sections: report
            .sections
            .iter()
            .map(|s| SrTextSection {
                title: s.id.title(lang).to_owned(),
                text: s.text.clone(),
                impression: s.id.is_conclusion(),
            })
            .collect(),
        groups,
        images: Vec::new(),
        completion,
        content_datetime: dicom_datetime(when_rfc3339),
        series_number: 990,
        instance_number: 1,
        series_description: match status {
            ReportStatus::Draft => "Lucent AI report (PRELIMINARY)".to_owned(),
            _ => "Lucent AI report".to_owned(),
        },
        uid_seed: format!("lucent-report:{}:{}", report.kind.code(), lang.code()),
    }
}

/// Where `lucent read` writes its exports.
#[derive(Debug, Clone, Default)]
pub struct ExportPaths {
    pub pdf: Option<PathBuf>,
    pub sr: Option<PathBuf>,
    pub fhir: Option<PathBuf>,
    /// The PDF as a DICOM Encapsulated PDF in the study (for sending to a PACS).
    pub pdf_dicom: Option<PathBuf>,
}

impl ExportPaths {
    pub fn any(&self) -> bool {
        self.pdf.is_some() || self.sr.is_some() || self.fhir.is_some() || self.pdf_dicom.is_some()
    }
}

/// `OUT.pdf` for the first study, `OUT-2.pdf` for the second, ...
pub fn numbered(path: &Path, index: usize) -> PathBuf {
    if index == 0 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{}.{}", index + 1, ext.to_string_lossy()),
        None => format!("{stem}-{}", index + 1),
    };
    path.with_file_name(name)
}

/// Writes the unsigned draft (marked preliminary in every format) to `paths`; returns
/// (format, SHA-256) per file for the audit log.
pub fn write_preliminary_exports(
    bundle: &StudyBundle,
    report: &Report,
    paths: &ExportPaths,
    index: usize,
    now: &str,
) -> Result<Vec<(&'static str, String)>> {
    let source = report::store::ExportSource {
        report: report.clone(),
        status: ReportStatus::Draft,
        signed_by: None,
        signed_at: None,
        addenda: Vec::new(),
    };
    write_exports(bundle, &source, &Decisions::new(), paths, index, now)
}

/// Writes `source` (a signed report with its addenda, or a draft the user marked preliminary) as
/// PDF, DICOM SR and FHIR to `paths`; returns (format, SHA-256) per file for the audit log.
pub fn write_exports(
    bundle: &StudyBundle,
    source: &report::store::ExportSource,
    decisions: &Decisions,
    paths: &ExportPaths,
    index: usize,
    now: &str,
) -> Result<Vec<(&'static str, String)>> {
    let sha = sha256_hex;
    let report = &source.report;
    let when = source.signed_at.as_deref().unwrap_or(now);
    let mut written = Vec::new();
    if paths.pdf.is_some() || paths.pdf_dicom.is_some() {
        let keys: Vec<KeyImage> = bundle.key_images.iter().map(|(_, k)| k.clone()).collect();
        let bytes = report::pdf::render(&report::pdf::PdfInput {
            context: &bundle.inputs.context,
            report,
            status: source.status,
            signed_by: source.signed_by.as_deref(),
            signed_at: source.signed_at.as_deref(),
            addenda: &source.addenda,
            findings: &bundle.inputs.findings,
            key_images: &keys,
            created: when,
        })?;
        if let Some(pdf) = &paths.pdf {
            let out = numbered(pdf, index);
            std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
            written.push(("pdf", sha(&bytes)));
        }
        if let Some(pdf_dicom) = &paths.pdf_dicom {
            let out = numbered(pdf_dicom, index);
            let preliminary = source.status == ReportStatus::Draft;
            let title = if preliminary { "Lucent AI report (PRELIMINARY)" } else { "Lucent AI report" };
            let meta = pacs::sr::EncapsulatedPdf {
                study: bundle.sr_study.clone(),
                document_title: title.to_owned(),
                content_datetime: dicom_datetime(when),
                series_number: 992,
                series_description: format!("{title} (PDF)"),
                uid_seed: format!("lucent-report-pdf:{}:{}", report.kind.code(), report.lang.code()),
            };
            pacs::sr::write_encapsulated_pdf(&bytes, &meta, &out)?;
            let file = std::fs::read(&out).with_context(|| format!("reading {}", out.display()))?;
            written.push(("pdf_dicom", sha(&file)));
        }
    }
    if let Some(sr) = &paths.sr {
        let out = numbered(sr, index);
        let doc = sr_document(bundle, report, decisions, source.status, source.signed_by.as_deref(), when);
        pacs::sr::write_sr(&doc, &out)?;
        let bytes = std::fs::read(&out).with_context(|| format!("reading {}", out.display()))?;
        written.push(("sr", sha(&bytes)));
    }
    if let Some(fhir) = &paths.fhir {
        let addenda: Vec<String> = source.addenda.iter().map(|(text, _, _)| text.clone()).collect();
        let json = report::fhir::diagnostic_report(&report::fhir::FhirInput {
            context: &bundle.inputs.context,
            report,
            status: source.status,
            findings: &bundle.inputs.findings,
            decisions,
            signed_by: source.signed_by.as_deref(),
            issued: when,
            addenda: &addenda,
        });
        let text = serde_json::to_string_pretty(&json)?;
        let out = numbered(fhir, index);
        std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
        written.push(("fhir", sha(text.as_bytes())));
    }
    Ok(written)
}

/// Parses `en` / `ko`.
pub fn parse_lang(text: &str) -> Result<Lang> {
    text.parse::<Lang>().map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_faint_region_on_the_other_lung_does_not_make_a_finding_bilateral() {
        use super::{Side, finding_side};
        assert_eq!(finding_side(&[]), Side::Unknown);
        assert_eq!(finding_side(&[(Side::Right, 0.95), (Side::Left, 0.55)]), Side::Right);
        assert_eq!(finding_side(&[(Side::Left, 0.6), (Side::Right, 0.9), (Side::Left, 0.62)]), Side::Right);
        assert_eq!(finding_side(&[(Side::Right, 0.9), (Side::Left, 0.85)]), Side::Bilateral);
        assert_eq!(finding_side(&[(Side::Left, 0.7)]), Side::Left);
    }

    use super::*;

    #[test]
    fn lobes_from_position() {
        let x = [-150.0, 150.0];
        let z = [-300.0, 0.0];
        assert_eq!(lobe_heuristic([-70.0, 0.0, -20.0], x, z), Lobe::RightUpper);
        assert_eq!(lobe_heuristic([-70.0, 0.0, -150.0], x, z), Lobe::RightMiddle);
        assert_eq!(lobe_heuristic([-70.0, 0.0, -280.0], x, z), Lobe::RightLower);
        assert_eq!(lobe_heuristic([70.0, 0.0, -100.0], x, z), Lobe::LeftUpper);
        assert_eq!(lobe_heuristic([70.0, 0.0, -200.0], x, z), Lobe::LeftLower);
        assert_eq!(numbered(Path::new("/t/out.pdf"), 1), PathBuf::from("/t/out-2.pdf"));
        assert_eq!(dicom_datetime("2024-03-01T10:30:00Z"), "20240301103000");
    }

    /// Issue 13: the PDF's key image of pydicom-data's real CR chest RG1 (MONOCHROME1) was
    /// inverted (lungs white, spine black): it passed the image's own inversion as the user's
    /// toggle, which cancelled it. It now is the viewer's rendering, lungs dark.
    #[test]
    fn the_key_image_of_a_real_monochrome1_radiograph_is_shown_as_the_viewer_shows_it() {
        let Some(file) = std::env::var_os("LUCENT_TEST_DATA")
            .map(PathBuf::from)
            .or_else(|| Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/lucent-data")))
            .map(|d| d.join("pydicom-data/RG1_UNCI.dcm"))
            .filter(|p| p.is_file())
        else {
            assert!(std::env::var("LUCENT_REQUIRE_TEST_DATA").is_err(), "pydicom-data is missing: cargo xtask setup");
            eprintln!("SKIP: pydicom-data is absent");
            return;
        };
        let image = pacs::file::load_image(&file, 0).unwrap();
        assert!(image.transform.inverts_for_display(), "RG1 is MONOCHROME1");
        let voi = image.transform.default_voi(&image.frame);
        let viewer = image.transform.render_u8(&image.frame, &voi, false);
        let (w, h) = (image.frame.columns as usize, image.frame.rows as usize);
        let key = key_image(&file, None, &[], "RG1".into()).unwrap();
        // The key image is the viewer's picture, halved until it fits.
        let (expected, kw, kh) = shrink(grey_rgba(&viewer), w, h, 768);
        assert_eq!((key.width, key.height), (kw, kh));
        assert_eq!(key.rgba, expected);
        // And the picture is a chest as radiologists read it: the mediastinum and spine (the
        // middle fifth of the width) brighter than the lungs (the fifths either side of it).
        let band = |x0: f64, x1: f64| {
            let (a, b) = ((x0 * kw as f64) as usize, (x1 * kw as f64) as usize);
            let (y0, y1) = (kh / 4, 3 * kh / 4);
            let mut sum = 0.0;
            for y in y0..y1 {
                for x in a..b {
                    sum += f64::from(key.rgba[(y * kw + x) * 4]);
                }
            }
            sum / ((y1 - y0) * (b - a)) as f64
        };
        let (middle, right_lung, left_lung) = (band(0.4, 0.6), band(0.2, 0.4), band(0.6, 0.8));
        assert!(middle > right_lung + 10.0 && middle > left_lung + 10.0, "{middle} vs {right_lung}, {left_lung}");
    }
}
