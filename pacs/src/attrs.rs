//! Typed reads of header attributes, and the per-instance summary every other module uses.
//!
//! This module owns "what does the header say": it never decodes pixels.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Text of an element stored with VR UN (explicit VR files written by tools that did not know the tag).
fn un_text(elem: &dicom_object::mem::InMemElement) -> Option<String> {
    if elem.vr() != dicom_core::VR::UN {
        return None;
    }
    let bytes = elem.to_bytes().ok()?;
    let printable = bytes.iter().all(|&b| b == 0 || (0x20..0x7F).contains(&b));
    printable.then(|| String::from_utf8_lossy(&bytes).trim_matches(|c: char| c == '\0' || c == ' ').to_owned())
}

/// Numbers of a UN element: text (DS/IS) or, for 2-byte values, an unsigned short (US).
fn un_numbers(elem: &dicom_object::mem::InMemElement) -> Option<Vec<f64>> {
    if elem.vr() != dicom_core::VR::UN {
        return None;
    }
    if let Some(text) = un_text(elem) {
        return text.split('\\').map(|v| v.trim().parse::<f64>().ok()).collect();
    }
    let bytes = elem.to_bytes().ok()?;
    (bytes.len() % 2 == 0).then(|| bytes.chunks_exact(2).map(|c| f64::from(u16::from_le_bytes([c[0], c[1]]))).collect())
}

/// Trimmed string value of an attribute (first value for multi-valued ones is *not* split).
pub(crate) fn string(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let elem = obj.get(tag)?;
    if let Some(text) = un_text(elem) {
        return (!text.is_empty()).then_some(text);
    }
    let text = elem.to_str().ok()?;
    let trimmed = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    if trimmed.is_empty() { None } else { Some(trimmed.to_owned()) }
}

/// All numeric values of an attribute as f64 (DS, IS, US, SS, FL, FD ...).
pub(crate) fn floats(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    let elem = obj.get(tag)?;
    let values = match un_numbers(elem) {
        Some(v) => v,
        None if elem.vr() == dicom_core::VR::UN => return None,
        None => elem.to_multi_float64().ok()?,
    };
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) { None } else { Some(values) }
}

pub(crate) fn float(obj: &InMemDicomObject, tag: Tag) -> Option<f64> {
    floats(obj, tag).and_then(|v| v.first().copied())
}

pub(crate) fn int(obj: &InMemDicomObject, tag: Tag) -> Option<i64> {
    let elem = obj.get(tag)?;
    if elem.vr() == dicom_core::VR::UN {
        return un_numbers(elem)?.first().map(|v| v.round() as i64);
    }
    elem.to_int::<i64>().ok().or_else(|| elem.to_float64().ok().map(|v| v.round() as i64))
}

pub(crate) fn required_u16(obj: &InMemDicomObject, tag: Tag, name: &'static str) -> Result<u16> {
    let value = int(obj, tag).ok_or(Error::MissingAttribute { name })?;
    u16::try_from(value).map_err(|_| Error::invalid(name, format!("{value} is out of range")))
}

/// Items of a sequence attribute (empty if absent).
pub(crate) fn items(obj: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    obj.get(tag).and_then(|e| e.items()).unwrap_or(&[])
}

/// The patient/study/series/instance summary of one DICOM instance.
///
/// Patient fields are kept for the store and the UI; they must never be logged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub transfer_syntax_uid: String,
    pub modality: String,
    pub patient_id: String,
    pub patient_name: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
    pub study_date: String,
    pub study_time: String,
    pub study_description: String,
    pub accession_number: String,
    pub series_number: Option<i64>,
    pub series_description: String,
    pub body_part_examined: String,
    /// ViewPosition (0018,5101) of projection images: PA, AP, LL, RL, LATERAL ...
    pub view_position: String,
    pub instance_number: Option<i64>,
    pub acquisition_number: Option<i64>,
    pub frame_of_reference_uid: String,
    pub rows: u32,
    pub columns: u32,
    pub number_of_frames: u32,
    pub samples_per_pixel: u16,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub pixel_representation: u16,
    pub photometric_interpretation: String,
    pub rescale_slope: Option<f64>,
    pub rescale_intercept: Option<f64>,
    /// Per-frame positions of an enhanced multi-frame object (empty otherwise).
    pub frame_positions: Vec<[f64; 3]>,
    pub image_position_patient: Option<[f64; 3]>,
    pub image_orientation_patient: Option<[f64; 6]>,
    /// PixelSpacing (row spacing, column spacing) in mm, in the patient plane.
    pub pixel_spacing_mm: Option<[f64; 2]>,
    /// ImagerPixelSpacing (row, column) in mm, at the detector (not calibrated to the patient).
    pub imager_pixel_spacing_mm: Option<[f64; 2]>,
    pub slice_thickness_mm: Option<f64>,
    /// PatientOrientation (0020,0020): directions of rows and columns for projection images, e.g. "L\\F".
    pub patient_orientation: String,
    pub gantry_tilt_deg: Option<f64>,
    pub has_pixel_data: bool,
    /// Numeric attributes present with values that are not finite numbers (NaN, infinity) or a
    /// zero RescaleSlope: taken as absent above, so every user of them refuses or warns (see
    /// [`InstanceInfo::checked_rescale`]) instead of falling back to a default.
    #[serde(default)]
    pub unusable_attributes: Vec<String>,
}

impl InstanceInfo {
    /// Reads the summary from a header (pixel data may or may not be loaded).
    pub fn from_object(obj: &InMemDicomObject, transfer_syntax_uid: &str, has_pixel_data: bool) -> Result<Self> {
        let sop_instance_uid =
            string(obj, tags::SOP_INSTANCE_UID).ok_or(Error::MissingAttribute { name: "SOPInstanceUID" })?;
        let pair = |tag| floats(obj, tag).and_then(|v| (v.len() >= 2).then(|| [v[0], v[1]]));
        Ok(Self {
            sop_class_uid: string(obj, tags::SOP_CLASS_UID).unwrap_or_default(),
            sop_instance_uid,
            study_instance_uid: string(obj, tags::STUDY_INSTANCE_UID).unwrap_or_default(),
            series_instance_uid: string(obj, tags::SERIES_INSTANCE_UID).unwrap_or_default(),
            transfer_syntax_uid: transfer_syntax_uid.trim_end_matches('\0').to_owned(),
            modality: string(obj, tags::MODALITY).unwrap_or_default(),
            patient_id: string(obj, tags::PATIENT_ID).unwrap_or_default(),
            patient_name: string(obj, tags::PATIENT_NAME).unwrap_or_default(),
            patient_birth_date: string(obj, tags::PATIENT_BIRTH_DATE).unwrap_or_default(),
            patient_sex: string(obj, tags::PATIENT_SEX).unwrap_or_default(),
            study_date: string(obj, tags::STUDY_DATE).unwrap_or_default(),
            study_time: string(obj, tags::STUDY_TIME).unwrap_or_default(),
            study_description: string(obj, tags::STUDY_DESCRIPTION).unwrap_or_default(),
            accession_number: string(obj, tags::ACCESSION_NUMBER).unwrap_or_default(),
            series_number: int(obj, tags::SERIES_NUMBER),
            series_description: string(obj, tags::SERIES_DESCRIPTION).unwrap_or_default(),
            body_part_examined: string(obj, tags::BODY_PART_EXAMINED).unwrap_or_default(),
            view_position: string(obj, tags::VIEW_POSITION).unwrap_or_default(),
            instance_number: int(obj, tags::INSTANCE_NUMBER),
            acquisition_number: int(obj, tags::ACQUISITION_NUMBER),
            frame_of_reference_uid: string(obj, tags::FRAME_OF_REFERENCE_UID).unwrap_or_default(),
            rows: int(obj, tags::ROWS).unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
            columns: int(obj, tags::COLUMNS).unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
            number_of_frames: int(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).clamp(1, i64::from(u32::MAX)) as u32,
            samples_per_pixel: int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1).clamp(0, 4) as u16,
            bits_allocated: int(obj, tags::BITS_ALLOCATED).unwrap_or(0).clamp(0, 64) as u16,
            bits_stored: int(obj, tags::BITS_STORED).unwrap_or(0).clamp(0, 64) as u16,
            pixel_representation: int(obj, tags::PIXEL_REPRESENTATION).unwrap_or(0).clamp(0, 1) as u16,
            photometric_interpretation: string(obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default(),
            rescale_slope: float(obj, tags::RESCALE_SLOPE).or_else(|| {
                first_group_item(obj, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE)
                    .and_then(|i| float(i, tags::RESCALE_SLOPE))
            }),
            rescale_intercept: float(obj, tags::RESCALE_INTERCEPT).or_else(|| {
                first_group_item(obj, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE)
                    .and_then(|i| float(i, tags::RESCALE_INTERCEPT))
            }),
            frame_positions: items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
                .iter()
                .map_while(|f| {
                    let item = items(f, tags::PLANE_POSITION_SEQUENCE).first()?;
                    floats(item, tags::IMAGE_POSITION_PATIENT).and_then(|v| (v.len() >= 3).then(|| [v[0], v[1], v[2]]))
                })
                .collect(),
            image_position_patient: floats(obj, tags::IMAGE_POSITION_PATIENT)
                .and_then(|v| (v.len() >= 3).then(|| [v[0], v[1], v[2]]))
                .or_else(|| functional_group_position(obj)),
            image_orientation_patient: floats(obj, tags::IMAGE_ORIENTATION_PATIENT)
                .and_then(|v| (v.len() >= 6).then(|| [v[0], v[1], v[2], v[3], v[4], v[5]]))
                .or_else(|| functional_group_orientation(obj)),
            pixel_spacing_mm: pair(tags::PIXEL_SPACING).or_else(|| functional_group_spacing(obj)),
            imager_pixel_spacing_mm: pair(tags::IMAGER_PIXEL_SPACING),
            slice_thickness_mm: float(obj, tags::SLICE_THICKNESS),
            patient_orientation: obj
                .get(tags::PATIENT_ORIENTATION)
                .and_then(|e| e.to_multi_str().ok())
                .map(|v| v.iter().map(|s| s.trim()).collect::<Vec<_>>().join("\\"))
                .unwrap_or_default(),
            gantry_tilt_deg: float(obj, tags::GANTRY_DETECTOR_TILT),
            has_pixel_data,
            unusable_attributes: unusable_attributes(obj),
        })
    }

    /// The modality transform's slope and intercept, or an error when the header gives values
    /// that are not finite numbers (or a zero slope): stored values would otherwise be taken as
    /// HU with slope 1 and intercept 0, off by the real intercept.
    pub fn checked_rescale(&self) -> Result<(f64, f64)> {
        for name in ["RescaleSlope", "RescaleIntercept"] {
            if self.unusable_attributes.iter().any(|a| a == name) {
                return Err(Error::invalid(
                    if name == "RescaleSlope" { "RescaleSlope" } else { "RescaleIntercept" },
                    "is not a finite number (or the slope is zero): stored values cannot be converted",
                ));
            }
        }
        Ok(self.rescale())
    }

    /// An error naming the first geometry attribute (spacing, position, orientation, thickness)
    /// whose values are not finite.
    pub fn check_geometry(&self) -> Result<()> {
        const GEOMETRY: [&str; 5] =
            ["PixelSpacing", "ImagerPixelSpacing", "ImagePositionPatient", "ImageOrientationPatient", "SliceThickness"];
        match self.unusable_attributes.iter().find(|a| GEOMETRY.contains(&a.as_str())) {
            Some(name) => Err(Error::Volume { reason: format!("{name} has values that are not finite numbers") }),
            None => Ok(()),
        }
    }

    /// The in-plane spacing to use for measurements and whether it is calibrated to the patient.
    /// The modality transform's slope and intercept (identity when absent).
    pub fn rescale(&self) -> (f64, f64) {
        (self.rescale_slope.filter(|s| *s != 0.0).unwrap_or(1.0), self.rescale_intercept.unwrap_or(0.0))
    }

    pub fn spacing(&self) -> Option<PlaneSpacing> {
        if let Some(mm) = self.pixel_spacing_mm.filter(|s| s[0] > 0.0 && s[1] > 0.0) {
            Some(PlaneSpacing { row_mm: mm[0], column_mm: mm[1], source: SpacingSource::PixelSpacing })
        } else {
            self.imager_pixel_spacing_mm.filter(|s| s[0] > 0.0 && s[1] > 0.0).map(|mm| PlaneSpacing {
                row_mm: mm[0],
                column_mm: mm[1],
                source: SpacingSource::ImagerPixelSpacing,
            })
        }
    }
}

/// In-plane pixel spacing and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlaneSpacing {
    /// Distance between rows (vertical), mm.
    pub row_mm: f64,
    /// Distance between columns (horizontal), mm.
    pub column_mm: f64,
    pub source: SpacingSource,
}

/// Whether a spacing is calibrated to the patient plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpacingSource {
    /// PixelSpacing: in the patient (calibrated).
    PixelSpacing,
    /// ImagerPixelSpacing: at the detector; measurements are magnified by the geometry (uncalibrated).
    ImagerPixelSpacing,
}

impl SpacingSource {
    pub fn is_calibrated(self) -> bool {
        matches!(self, Self::PixelSpacing)
    }
}

/// Numeric attributes whose values are present but not finite (or a zero RescaleSlope).
fn unusable_attributes(obj: &InMemDicomObject) -> Vec<String> {
    let groups = [
        Some(obj),
        first_group_item(obj, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE),
        first_group_item(obj, tags::PIXEL_MEASURES_SEQUENCE),
        first_group_item(obj, tags::PLANE_POSITION_SEQUENCE),
        first_group_item(obj, tags::PLANE_ORIENTATION_SEQUENCE),
    ];
    let checked = [
        (tags::RESCALE_SLOPE, "RescaleSlope"),
        (tags::RESCALE_INTERCEPT, "RescaleIntercept"),
        (tags::PIXEL_SPACING, "PixelSpacing"),
        (tags::IMAGER_PIXEL_SPACING, "ImagerPixelSpacing"),
        (tags::IMAGE_POSITION_PATIENT, "ImagePositionPatient"),
        (tags::IMAGE_ORIENTATION_PATIENT, "ImageOrientationPatient"),
        (tags::SLICE_THICKNESS, "SliceThickness"),
    ];
    let mut out = Vec::new();
    for (tag, name) in checked {
        let bad = groups.iter().flatten().any(|group| {
            let Some(elem) = group.get(tag) else { return false };
            let values = un_numbers(elem).or_else(|| elem.to_multi_float64().ok());
            match values {
                Some(v) => v.iter().any(|x| !x.is_finite()) || (tag == tags::RESCALE_SLOPE && v.first() == Some(&0.0)),
                // Present but not a number at all: text such as "NaN" that does not parse.
                None => elem.to_str().is_ok_and(|t| !t.trim_matches(['\0', ' ']).is_empty()),
            }
        });
        if bad {
            out.push(name.to_owned());
        }
    }
    out
}

fn first_group_item(obj: &InMemDicomObject, seq: Tag) -> Option<&InMemDicomObject> {
    // Enhanced multi-frame: per-frame groups (first frame) win over the shared ones.
    items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .first()
        .and_then(|f| items(f, seq).first())
        .or_else(|| items(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).first().and_then(|s| items(s, seq).first()))
}

fn functional_group_position(obj: &InMemDicomObject) -> Option<[f64; 3]> {
    let item = first_group_item(obj, tags::PLANE_POSITION_SEQUENCE)?;
    floats(item, tags::IMAGE_POSITION_PATIENT).and_then(|v| (v.len() >= 3).then(|| [v[0], v[1], v[2]]))
}

fn functional_group_orientation(obj: &InMemDicomObject) -> Option<[f64; 6]> {
    let item = first_group_item(obj, tags::PLANE_ORIENTATION_SEQUENCE)?;
    floats(item, tags::IMAGE_ORIENTATION_PATIENT)
        .and_then(|v| (v.len() >= 6).then(|| [v[0], v[1], v[2], v[3], v[4], v[5]]))
}

fn functional_group_spacing(obj: &InMemDicomObject) -> Option<[f64; 2]> {
    let item = first_group_item(obj, tags::PIXEL_MEASURES_SEQUENCE)?;
    floats(item, tags::PIXEL_SPACING).and_then(|v| (v.len() >= 2).then(|| [v[0], v[1]]))
}

/// A human name for a transfer syntax UID.
pub fn transfer_syntax_name(uid: &str) -> String {
    use dicom_encoding::TransferSyntaxIndex;
    let uid = uid.trim_end_matches('\0');
    dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(uid)
        .map(|ts| ts.name().to_owned())
        .unwrap_or_else(|| "unknown transfer syntax".to_owned())
}
