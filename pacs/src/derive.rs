//! Derived series: new DICOM instances computed from a source series (e.g. a denoised CT), with
//! a new Series Instance UID, ImageType DERIVED\SECONDARY, the source's geometry, and a
//! Source Image Sequence pointing at the originals.

use std::path::{Path, PathBuf};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use crate::error::{Error, Result};
use crate::file;
use crate::synth::uid;
use crate::volume::StackPlan;

/// What the derived series is.
#[derive(Debug, Clone)]
pub struct DerivedSeries {
    /// Seed for the new UIDs (e.g. the model id and version): the same input gives the same UIDs.
    pub uid_seed: String,
    pub series_description: String,
    /// Derivation Description (0008,2111), e.g. "Denoised by lucent-ldct-denoise 1.0.0".
    pub derivation: String,
    pub series_number: i64,
}

/// Writes one instance per slice of `plan` with modality values `values` (slice-major, HU for CT)
/// into `dir`, keeping each source slice's rescale and sample type. Returns the files written.
pub fn write_derived_series(
    plan: &StackPlan,
    values: &[f32],
    spec: &DerivedSeries,
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    let slice_len = plan.columns * plan.rows;
    if values.len() != slice_len * plan.slices.len() {
        return Err(Error::Volume {
            reason: format!("{} values for {} slices of {slice_len}", values.len(), plan.slices.len()),
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let source_series = &plan.slices[0].info().series_instance_uid;
    let series_uid = uid(&format!("derived-series:{}:{source_series}", spec.uid_seed));
    let mut written = Vec::with_capacity(plan.slices.len());
    for (k, slice) in plan.slices.iter().enumerate() {
        let header = file::open_header(&slice.path)?;
        let info = slice.info();
        let sop_uid = uid(&format!("derived-sop:{}:{}:{}", spec.uid_seed, info.sop_instance_uid, slice.frame));
        let mut obj: InMemDicomObject = header.into_inner();
        let (slope, intercept) = info.checked_rescale()?;
        let signed = info.pixel_representation == 1;
        let chunk = &values[k * slice_len..(k + 1) * slice_len];
        let stored: Vec<u16> = chunk
            .iter()
            .map(|&v| {
                let s = ((f64::from(v) - intercept) / slope).round();
                if signed {
                    s.clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16 as u16
                } else {
                    s.clamp(0.0, f64::from(u16::MAX)) as u16
                }
            })
            .collect();
        for (tag, vr, value) in [
            (tags::SOP_INSTANCE_UID, VR::UI, sop_uid.clone()),
            (tags::SERIES_INSTANCE_UID, VR::UI, series_uid.clone()),
            (tags::SERIES_DESCRIPTION, VR::LO, spec.series_description.clone()),
            (tags::IMAGE_TYPE, VR::CS, "DERIVED\\SECONDARY\\AXIAL".to_owned()),
            (tags::DERIVATION_DESCRIPTION, VR::ST, spec.derivation.clone()),
            (tags::SERIES_NUMBER, VR::IS, spec.series_number.to_string()),
        ] {
            obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
        }
        obj.put(DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)));
        obj.put(DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(16u16)));
        obj.put(DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(15u16)));
        obj.put(DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)));
        obj.put(DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from("MONOCHROME2")));
        obj.remove_element(tags::NUMBER_OF_FRAMES);
        obj.remove_element(tags::PIXEL_PADDING_VALUE);
        let mut source_ref = InMemDicomObject::new_empty();
        source_ref.put(DataElement::new(
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(info.sop_class_uid.as_str()),
        ));
        source_ref.put(DataElement::new(
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(info.sop_instance_uid.as_str()),
        ));
        obj.put(DataElement::new(
            tags::SOURCE_IMAGE_SEQUENCE,
            VR::SQ,
            dicom_core::value::DataSetSequence::from(vec![source_ref]),
        ));
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(stored.into())));
        let sop_class =
            if info.sop_class_uid.is_empty() { uids::CT_IMAGE_STORAGE.to_owned() } else { info.sop_class_uid.clone() };
        let file_obj = obj
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                    .media_storage_sop_class_uid(sop_class)
                    .media_storage_sop_instance_uid(sop_uid.as_str())
                    .implementation_class_uid(uid("lucent-implementation"))
                    .implementation_version_name("LUCENT_0_1"),
            )
            .map_err(|e| Error::Write { detail: e.to_string() })?;
        let path = dir.join(format!("{:04}.dcm", k + 1));
        file_obj.write_to_file(&path).map_err(|e| Error::Write { detail: e.to_string() })?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{self, CtSeriesSpec};
    use crate::volume;

    #[test]
    fn a_derived_series_keeps_the_geometry_and_gets_new_uids() {
        let src = tempfile::tempdir().unwrap();
        let spec = CtSeriesSpec { noise_hu: 10.0, ..CtSeriesSpec::chest("derive", 6, 32) };
        let files = synth::write_ct_series(src.path(), &spec).unwrap();
        let original = volume::load_series(&files, 1).unwrap().remove(0);
        let smoothed: Vec<f32> = original.to_modality_f32().iter().map(|v| v.round() + 1.0).collect();
        let out = tempfile::tempdir().unwrap();
        let derived_spec = DerivedSeries {
            uid_seed: "test-model:1".into(),
            series_description: "Denoised".into(),
            derivation: "Denoised by a test".into(),
            series_number: 102,
        };
        let written = write_derived_series(&original.plan, &smoothed, &derived_spec, out.path()).unwrap();
        let derived = volume::load_series(&written, 1).unwrap().remove(0);
        assert_eq!(derived.dims(), original.dims());
        assert_eq!(derived.plan.patient_from_voxel, original.plan.patient_from_voxel);
        assert_ne!(
            derived.plan.slices[0].info().series_instance_uid,
            original.plan.slices[0].info().series_instance_uid
        );
        assert_eq!(derived.to_modality_f32(), smoothed);
        let header = file::open_header(&written[0]).unwrap();
        assert!(crate::attrs::string(&header, tags::IMAGE_TYPE).unwrap().starts_with("DERIVED"));
    }
}
