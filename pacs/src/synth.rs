//! Synthetic DICOM data with known geometry: CT stacks (with gaps, tilt, shuffled names,
//! repeated or mixed stacks) and projection radiographs, for tests, benchmarks and the demo.
//!
//! Everything is deterministic from the spec (no global RNG) and entirely synthetic: the
//! patients are invented, the anatomy is a procedural phantom.

use std::path::{Path, PathBuf};

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub mod cxr;
pub mod dose;

pub use cxr::{CxrFinding, CxrLesion, RenderedChest, Side};

/// Deterministic 64-bit mixer (splitmix64).
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash_str(text: &str) -> u64 {
    text.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3))
}

/// A deterministic UID under the 2.25 (UUID-derived) root.
pub fn uid(seed: &str) -> String {
    let hi = mix64(hash_str(seed));
    let lo = mix64(hi ^ 0x5151_5151);
    let value = (u128::from(hi) << 64 | u128::from(lo)) >> 1;
    format!("2.25.{value}")
}

/// Uniform in [0, 1) from a seed.
pub fn unit(seed: u64) -> f64 {
    (mix64(seed) >> 11) as f64 / (1u64 << 53) as f64
}

/// Approximately normal (sum of uniforms), mean 0, sd 1.
pub fn gauss(seed: u64) -> f64 {
    (0..4).map(|i| unit(seed.wrapping_mul(4).wrapping_add(i))).sum::<f64>() * 3f64.sqrt() - 2.0 * 3f64.sqrt()
}

/// The synthetic patient and study a series belongs to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PatientSpec {
    pub name: String,
    pub id: String,
    pub birth_date: String,
    pub sex: String,
    pub study_uid: String,
    pub study_date: String,
    pub study_time: String,
    pub study_description: String,
    pub accession: String,
}

impl PatientSpec {
    pub fn new(name: &str, id: &str, study_seed: &str) -> Self {
        Self {
            name: name.to_owned(),
            id: id.to_owned(),
            birth_date: "19600101".into(),
            sex: "O".into(),
            study_uid: uid(&format!("study:{study_seed}")),
            study_date: "20260101".into(),
            study_time: "090000".into(),
            study_description: "SYNTHETIC".into(),
            accession: format!("SYN{:06}", mix64(hash_str(study_seed)) % 1_000_000),
        }
    }
}

/// A spherical lesion in patient coordinates.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Nodule {
    pub center_mm: [f64; 3],
    pub diameter_mm: f64,
    pub kind: NoduleKind,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum NoduleKind {
    Solid,
    PartSolid,
    GroundGlass,
}

/// A CT series with known geometry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CtSeriesSpec {
    pub seed: String,
    pub patient: PatientSpec,
    pub series_number: i64,
    pub description: String,
    pub slices: usize,
    pub rows: u16,
    pub columns: u16,
    /// (row spacing, column spacing)
    pub pixel_spacing_mm: [f64; 2],
    pub slice_spacing_mm: f64,
    pub slice_thickness_mm: f64,
    /// Position of the first voxel of the first slice.
    pub origin_mm: [f64; 3],
    pub orientation: [f64; 6],
    /// Shear of the stack along the column direction, degrees (gantry tilt).
    pub tilt_deg: f64,
    /// Slice indices not written (gaps).
    pub drop_slices: Vec<usize>,
    /// Extra offset (mm) added to the position of slices from this index on.
    pub irregular_from: Option<(usize, f64)>,
    /// File names in random order rather than slice order, and instance numbers shuffled too.
    pub shuffle: bool,
    /// Store signed (PixelRepresentation 1, intercept 0) rather than unsigned + intercept -1024.
    pub signed: bool,
    pub acquisition_number: i64,
    pub nodules: Vec<Nodule>,
    /// Gaussian noise SD in HU.
    pub noise_hu: f64,
    pub frame_of_reference_uid: Option<String>,
    /// Series Instance UID to use instead of the one derived from the seed (to build odd series).
    pub series_uid: Option<String>,
    /// Acquire each slice at this dose (projection-domain noise and filtered back-projection)
    /// instead of adding `noise_hu` of white noise.
    #[serde(default)]
    pub dose: Option<dose::SimulatedDose>,
}

impl CtSeriesSpec {
    /// An axial chest CT of `slices` slices, `size` x `size` pixels.
    pub fn chest(seed: &str, slices: usize, size: u16) -> Self {
        let fov = 350.0;
        let spacing = fov / f64::from(size);
        let slice_spacing = 2.5;
        Self {
            seed: seed.to_owned(),
            patient: PatientSpec::new("SYNTHETIC^CHEST", &format!("SYN-{}", mix64(hash_str(seed)) % 100_000), seed),
            series_number: 2,
            description: "Synthetic chest CT".into(),
            slices,
            rows: size,
            columns: size,
            pixel_spacing_mm: [spacing, spacing],
            slice_spacing_mm: slice_spacing,
            slice_thickness_mm: slice_spacing,
            origin_mm: [-fov / 2.0, -fov / 2.0, -(slices as f64) * slice_spacing],
            orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            tilt_deg: 0.0,
            drop_slices: vec![],
            irregular_from: None,
            shuffle: false,
            signed: false,
            acquisition_number: 1,
            nodules: vec![],
            noise_hu: 12.0,
            frame_of_reference_uid: None,
            series_uid: None,
            dose: None,
        }
    }

    pub fn series_uid(&self) -> String {
        self.series_uid.clone().unwrap_or_else(|| uid(&format!("series:{}", self.seed)))
    }

    fn row_dir(&self) -> [f64; 3] {
        [self.orientation[0], self.orientation[1], self.orientation[2]]
    }

    fn col_dir(&self) -> [f64; 3] {
        [self.orientation[3], self.orientation[4], self.orientation[5]]
    }

    fn normal(&self) -> [f64; 3] {
        let (r, c) = (self.row_dir(), self.col_dir());
        [r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0]]
    }

    /// ImagePositionPatient of slice `k`.
    pub fn position(&self, k: usize) -> [f64; 3] {
        let n = self.normal();
        let c = self.col_dir();
        let mut along = k as f64 * self.slice_spacing_mm;
        if let Some((from, offset)) = self.irregular_from
            && k >= from
        {
            along += offset;
        }
        let shear = along * self.tilt_deg.to_radians().tan();
        [0, 1, 2].map(|a| self.origin_mm[a] + n[a] * along + c[a] * shear)
    }

    /// Patient position of pixel (column i, row j) of slice k.
    pub fn patient_point(&self, i: usize, j: usize, k: usize) -> [f64; 3] {
        let p = self.position(k);
        let (r, c) = (self.row_dir(), self.col_dir());
        let (dx, dy) = (self.pixel_spacing_mm[1], self.pixel_spacing_mm[0]);
        [0, 1, 2].map(|a| p[a] + r[a] * dx * i as f64 + c[a] * dy * j as f64)
    }

    /// HU of slice `k`, row-major.
    pub fn slice_hu(&self, k: usize) -> Vec<i16> {
        let (cols, rows) = (self.columns as usize, self.rows as usize);
        let seed = hash_str(&self.seed) ^ (k as u64).wrapping_mul(0x1000_0001);
        if let Some(dose) = &self.dose {
            let clean: Vec<f32> = (0..rows * cols)
                .map(|n| chest_phantom_hu(self.patient_point(n % cols, n / cols, k), &self.nodules) as f32)
                .collect();
            return dose::simulate(&clean, rows, cols, self.pixel_spacing_mm[1], dose, seed)
                .into_iter()
                .map(|v| v.round() as i16)
                .collect();
        }
        let mut out = Vec::with_capacity(cols * rows);
        for j in 0..rows {
            for i in 0..cols {
                let p = self.patient_point(i, j, k);
                let mut hu = chest_phantom_hu(p, &self.nodules);
                if self.noise_hu > 0.0 && hu > -990.0 {
                    hu += self.noise_hu * gauss(seed ^ ((j * cols + i) as u64).wrapping_mul(0x9E37_79B9));
                }
                out.push(hu.round().clamp(-1024.0, 3071.0) as i16);
            }
        }
        out
    }
}

/// HU of the procedural chest phantom at patient point `p` (LPS, mm).
pub fn chest_phantom_hu(p: [f64; 3], nodules: &[Nodule]) -> f64 {
    let [x, y, z] = p;
    for n in nodules {
        let d = ((x - n.center_mm[0]).powi(2) + (y - n.center_mm[1]).powi(2) + (z - n.center_mm[2]).powi(2)).sqrt();
        let r = n.diameter_mm / 2.0;
        if d <= r {
            return match n.kind {
                NoduleKind::Solid => 30.0,
                NoduleKind::GroundGlass => -620.0,
                NoduleKind::PartSolid => {
                    if d <= r * 0.45 {
                        25.0
                    } else {
                        -600.0
                    }
                }
            };
        }
    }
    // Thorax along z: full from z=-300 (abdomen side) to z=0 (apex); taper at the top.
    let taper = if z > -40.0 { (1.0 - (z + 40.0) / 80.0).clamp(0.55, 1.0) } else { 1.0 };
    let (ax, ay) = (165.0 * taper, 115.0 * taper.sqrt());
    let body = (x / ax).powi(2) + ((y - 5.0) / ay).powi(2);
    if body > 1.0 {
        return -1000.0;
    }
    // Subcutaneous fat shell.
    let fat = (x / (ax - 12.0)).powi(2) + ((y - 5.0) / (ay - 12.0)).powi(2) > 1.0;
    // Spine and its canal.
    let spine = (x.powi(2) + (y - 78.0).powi(2)).sqrt();
    if spine < 5.5 {
        return 20.0;
    }
    if spine < 17.0 {
        return if spine > 14.5 { 900.0 } else { 280.0 };
    }
    // Ribs: a ring of small oval bone sections inside the fat shell, with a z pattern.
    let angle = y.atan2(x);
    let ring = (x / (ax - 20.0)).powi(2) + ((y - 5.0) / (ay - 20.0)).powi(2);
    if (0.86..1.0).contains(&ring) && (z / 22.0 + angle * 0.8).rem_euclid(1.0) < 0.35 && y > -90.0 {
        return 650.0;
    }
    if fat {
        return -95.0;
    }
    // Lungs: two ellipsoids, smaller towards the apex and above the diaphragm domes.
    let lung_z = (z + 260.0) / 260.0; // 0 at bases, 1 at apex
    if (0.0..1.0).contains(&lung_z) {
        let scale = (1.0 - (lung_z - 0.35).max(0.0).powi(2) * 1.6).max(0.15);
        for side in [-1.0f64, 1.0] {
            let (cx, cy) = (side * 72.0, 0.0);
            let (lx, ly) = (58.0 * scale, 82.0 * scale);
            let dome = if side > 0.0 { 0.0 } else { 0.06 };
            let inside = ((x - cx) / lx).powi(2) + ((y - cy) / ly).powi(2) < 1.0 && lung_z > 0.05 + dome;
            if inside {
                // Pulmonary vessels: thin tubes radiating from the hilum.
                let hx = x - side * 40.0;
                let vessel_angle = hx.atan2(y + 10.0) * 7.0 + z / 35.0;
                let vessel =
                    (vessel_angle.sin().abs() < 0.045) && (hx.powi(2) + (y + 10.0).powi(2)).sqrt() < 70.0 * scale;
                return if vessel { 35.0 } else { -860.0 + 40.0 * (y / 100.0) };
            }
        }
    }
    // Heart and great vessels.
    if ((x - 18.0) / 55.0).powi(2) + ((y + 25.0) / 48.0).powi(2) < 1.0 && (-230.0..-120.0).contains(&z) {
        return 45.0;
    }
    if (x - 10.0).powi(2) + (y - 45.0).powi(2) < 14.0f64.powi(2) {
        return 42.0; // aorta
    }
    40.0
}

fn str_elem(tag: Tag, vr: VR, value: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(value))
}

fn ds(values: &[f64]) -> String {
    values.iter().map(|v| format_ds(*v)).collect::<Vec<_>>().join("\\")
}

/// A DS value of at most 16 characters.
fn format_ds(v: f64) -> String {
    let mut text = format!("{v:.6}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    if text == "-0" {
        text = "0".into();
    }
    text.chars().take(16).collect()
}

/// Header elements common to every synthetic image.
fn base_object(patient: &PatientSpec, modality: &str, sop_class: &str, sop_uid: &str) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    for (tag, vr, value) in [
        (tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        (tags::SOP_CLASS_UID, VR::UI, sop_class),
        (tags::SOP_INSTANCE_UID, VR::UI, sop_uid),
        (tags::STUDY_DATE, VR::DA, patient.study_date.as_str()),
        (tags::STUDY_TIME, VR::TM, patient.study_time.as_str()),
        (tags::ACCESSION_NUMBER, VR::SH, patient.accession.as_str()),
        (tags::MODALITY, VR::CS, modality),
        (tags::MANUFACTURER, VR::LO, "Lucent synthetic phantom"),
        (tags::STUDY_DESCRIPTION, VR::LO, patient.study_description.as_str()),
        (tags::PATIENT_NAME, VR::PN, patient.name.as_str()),
        (tags::PATIENT_ID, VR::LO, patient.id.as_str()),
        (tags::PATIENT_BIRTH_DATE, VR::DA, patient.birth_date.as_str()),
        (tags::PATIENT_SEX, VR::CS, patient.sex.as_str()),
        (tags::PATIENT_IDENTITY_REMOVED, VR::CS, "YES"),
        (tags::BODY_PART_EXAMINED, VR::CS, "CHEST"),
        (tags::STUDY_INSTANCE_UID, VR::UI, patient.study_uid.as_str()),
        (tags::STUDY_ID, VR::SH, "1"),
    ] {
        obj.put(str_elem(tag, vr, value));
    }
    obj
}

/// Writes `obj` as a Part 10 file (Explicit VR Little Endian, Lucent's implementation UID) at
/// `path`, creating its folder.
pub(crate) fn write_object(obj: InMemDicomObject, sop_class: &str, sop_uid: &str, path: &Path) -> Result<()> {
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .media_storage_sop_class_uid(sop_class)
                .media_storage_sop_instance_uid(sop_uid)
                .implementation_class_uid(uid("lucent-implementation"))
                .implementation_version_name("LUCENT_0_1"),
        )
        .map_err(|e| Error::Write { detail: e.to_string() })?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    file.write_to_file(path).map_err(|e| Error::Write { detail: e.to_string() })
}

/// Writes the series into `dir` and returns the files written (in slice order, gaps excluded).
pub fn write_ct_series(dir: &Path, spec: &CtSeriesSpec) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let series_uid = spec.series_uid();
    let frame_of_reference =
        spec.frame_of_reference_uid.clone().unwrap_or_else(|| uid(&format!("for:{}", spec.patient.study_uid)));
    let kept: Vec<usize> = (0..spec.slices).filter(|k| !spec.drop_slices.contains(k)).collect();
    // A fixed permutation for shuffled names and instance numbers.
    let mut order: Vec<usize> = (0..kept.len()).collect();
    if spec.shuffle {
        order.sort_by_key(|&i| mix64(hash_str(&spec.seed) ^ i as u64));
    }
    let mut paths = Vec::with_capacity(kept.len());
    for (n, &k) in kept.iter().enumerate() {
        let sop_uid = uid(&format!("sop:{}:{k}", spec.seed));
        let mut obj = base_object(&spec.patient, "CT", uids::CT_IMAGE_STORAGE, &sop_uid);
        let position = spec.position(k);
        let hu = spec.slice_hu(k);
        for (tag, vr, value) in [
            (tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\AXIAL".to_owned()),
            (tags::SERIES_INSTANCE_UID, VR::UI, series_uid.clone()),
            (tags::SERIES_DESCRIPTION, VR::LO, spec.description.clone()),
            (tags::FRAME_OF_REFERENCE_UID, VR::UI, frame_of_reference.clone()),
            (tags::IMAGE_POSITION_PATIENT, VR::DS, ds(&position)),
            (tags::IMAGE_ORIENTATION_PATIENT, VR::DS, ds(&spec.orientation)),
            (tags::PIXEL_SPACING, VR::DS, ds(&spec.pixel_spacing_mm)),
            (tags::SLICE_THICKNESS, VR::DS, format_ds(spec.slice_thickness_mm)),
            (tags::GANTRY_DETECTOR_TILT, VR::DS, format_ds(spec.tilt_deg)),
            (tags::KVP, VR::DS, "120".to_owned()),
            (tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2".to_owned()),
            (tags::RESCALE_INTERCEPT, VR::DS, if spec.signed { "0".to_owned() } else { "-1024".to_owned() }),
            (tags::RESCALE_SLOPE, VR::DS, "1".to_owned()),
            (tags::RESCALE_TYPE, VR::LO, "HU".to_owned()),
            (tags::WINDOW_CENTER, VR::DS, "-600\\40".to_owned()),
            (tags::WINDOW_WIDTH, VR::DS, "1500\\400".to_owned()),
            (tags::WINDOW_CENTER_WIDTH_EXPLANATION, VR::LO, "LUNG\\MEDIASTINUM".to_owned()),
        ] {
            obj.put(str_elem(tag, vr, &value));
        }
        let instance_number = if spec.shuffle { order[n] as i64 + 1 } else { n as i64 + 1 };
        obj.put(DataElement::new(tags::SERIES_NUMBER, VR::IS, PrimitiveValue::from(spec.series_number.to_string())));
        obj.put(DataElement::new(
            tags::ACQUISITION_NUMBER,
            VR::IS,
            PrimitiveValue::from(spec.acquisition_number.to_string()),
        ));
        obj.put(DataElement::new(tags::INSTANCE_NUMBER, VR::IS, PrimitiveValue::from(instance_number.to_string())));
        obj.put(DataElement::new(tags::SLICE_LOCATION, VR::DS, PrimitiveValue::from(format_ds(position[2]))));
        obj.put(DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)));
        obj.put(DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(spec.rows)));
        obj.put(DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(spec.columns)));
        obj.put(DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)));
        obj.put(DataElement::new(
            tags::BITS_STORED,
            VR::US,
            PrimitiveValue::from(if spec.signed { 16u16 } else { 12u16 }),
        ));
        obj.put(DataElement::new(
            tags::HIGH_BIT,
            VR::US,
            PrimitiveValue::from(if spec.signed { 15u16 } else { 11u16 }),
        ));
        obj.put(DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(u16::from(spec.signed))));
        let stored: Vec<u16> = if spec.signed {
            hu.iter().map(|&v| v as u16).collect()
        } else {
            hu.iter().map(|&v| (i32::from(v) + 1024).clamp(0, 4095) as u16).collect()
        };
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(stored.into())));
        let name = if spec.shuffle {
            format!("IM{:08X}.dcm", mix64(hash_str(&sop_uid)) as u32)
        } else {
            format!("CT{:04}.dcm", n + 1)
        };
        let path = dir.join(name);
        write_object(obj, uids::CT_IMAGE_STORAGE, &sop_uid, &path)?;
        paths.push(path);
    }
    Ok(paths)
}

/// A synthetic projection radiograph (CR): a PA chest from [`cxr::render_chest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RadiographSpec {
    /// Seeds the patient's anatomy, pose, exposure and noise.
    pub seed: String,
    pub patient: PatientSpec,
    pub rows: u16,
    pub columns: u16,
    /// ImagerPixelSpacing (detector), mm.
    pub imager_pixel_spacing_mm: f64,
    pub monochrome1: bool,
    /// Lesions drawn into the image (each with its mask, see [`RadiographSpec::render`]).
    pub lesions: Vec<CxrLesion>,
    pub series_number: i64,
    pub description: String,
    /// ViewPosition: "PA", "AP", "LL" ...
    pub view_position: String,
    /// 0: the seed's own image; another value: the same patient (anatomy, lesions as listed)
    /// acquired again with a new pose, exposure and noise, e.g. a prior study.
    #[serde(default)]
    pub acquisition: u32,
}

impl RadiographSpec {
    /// A `size` x `size` chest PA covering 430 mm (a 43 x 43 cm detector), no lesions.
    pub fn chest(seed: &str, size: u16) -> Self {
        Self {
            seed: seed.to_owned(),
            patient: PatientSpec::new("SYNTHETIC^CXR", &format!("SYN-{}", mix64(hash_str(seed)) % 100_000), seed),
            rows: size,
            columns: size,
            imager_pixel_spacing_mm: 430.0 / f64::from(size.max(1)),
            monochrome1: false,
            lesions: vec![],
            series_number: 1,
            description: "Synthetic chest PA".into(),
            view_position: "PA".into(),
            acquisition: 0,
        }
    }

    /// A 2048 x 2500 chest PA at 0.17 mm (a 35 x 43 cm detector, portrait), no lesions.
    pub fn chest_detector(seed: &str) -> Self {
        Self { rows: 2500, columns: 2048, imager_pixel_spacing_mm: 0.17, ..Self::chest(seed, 2048) }
    }

    /// The image (MONOCHROME2 12-bit values) and the mask of every finding present.
    pub fn render(&self) -> RenderedChest {
        cxr::render_chest(
            &self.seed,
            self.acquisition,
            usize::from(self.columns),
            usize::from(self.rows),
            self.imager_pixel_spacing_mm,
            &self.lesions,
        )
    }
}

/// Writes a CR image (12-bit, ImagerPixelSpacing only).
pub fn write_radiograph(path: &Path, spec: &RadiographSpec) -> Result<()> {
    write_rendered_radiograph(path, spec, &spec.render())
}

/// Writes a CR image from `spec` with pixels already rendered by [`RadiographSpec::render`].
pub fn write_rendered_radiograph(path: &Path, spec: &RadiographSpec, rendered: &RenderedChest) -> Result<()> {
    if rendered.values.len() != usize::from(spec.rows) * usize::from(spec.columns) {
        return Err(Error::Write { detail: "rendered radiograph does not match the spec's size".into() });
    }
    let instance =
        if spec.acquisition == 0 { spec.seed.clone() } else { format!("{}#{}", spec.seed, spec.acquisition) };
    let sop_uid = uid(&format!("sop:{instance}"));
    let mut obj = base_object(&spec.patient, "CR", uids::COMPUTED_RADIOGRAPHY_IMAGE_STORAGE, &sop_uid);
    let stored: Vec<u16> =
        rendered.values.iter().map(|&v| if spec.monochrome1 { 4095 - v.min(4095) } else { v }).collect();
    for (tag, vr, value) in [
        (tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY".to_owned()),
        (tags::SERIES_INSTANCE_UID, VR::UI, uid(&format!("series:{instance}"))),
        (tags::SERIES_DESCRIPTION, VR::LO, spec.description.clone()),
        (tags::VIEW_POSITION, VR::CS, spec.view_position.clone()),
        (tags::IMAGER_PIXEL_SPACING, VR::DS, ds(&[spec.imager_pixel_spacing_mm, spec.imager_pixel_spacing_mm])),
        (
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            if spec.monochrome1 { "MONOCHROME1" } else { "MONOCHROME2" }.to_owned(),
        ),
        (tags::PATIENT_ORIENTATION, VR::CS, "L\\F".to_owned()),
    ] {
        obj.put(str_elem(tag, vr, &value));
    }
    obj.put(DataElement::new(tags::SERIES_NUMBER, VR::IS, PrimitiveValue::from(spec.series_number.to_string())));
    obj.put(DataElement::new(tags::INSTANCE_NUMBER, VR::IS, PrimitiveValue::from("1")));
    obj.put(DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)));
    obj.put(DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(spec.rows)));
    obj.put(DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(spec.columns)));
    obj.put(DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)));
    obj.put(DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(12u16)));
    obj.put(DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11u16)));
    obj.put(DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0u16)));
    obj.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(stored.into())));
    write_object(obj, uids::COMPUTED_RADIOGRAPHY_IMAGE_STORAGE, &sop_uid, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_valid_and_deterministic() {
        let a = uid("x");
        assert_eq!(a, uid("x"));
        assert_ne!(a, uid("y"));
        assert!(a.len() <= 64 && a.starts_with("2.25.") && a[5..].chars().all(|c| c.is_ascii_digit()));
    }

    #[test]
    fn ds_values_fit_sixteen_characters() {
        assert_eq!(format_ds(-0.0), "0");
        assert_eq!(format_ds(0.68359375), "0.683594");
        assert!(format_ds(-123456.123456789).len() <= 16);
    }

    #[test]
    fn phantom_has_air_lung_soft_tissue_and_bone() {
        assert_eq!(chest_phantom_hu([0.0, -200.0, -150.0], &[]), -1000.0);
        assert!(chest_phantom_hu([72.0, 0.0, -150.0], &[]) < -700.0);
        assert!(chest_phantom_hu([0.0, 78.0 - 15.5, -150.0], &[]) > 700.0);
    }
}
