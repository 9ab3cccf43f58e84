//! De-identification (`pacs::deid`, DICOM PS3.15 Annex E Basic Application Level Confidentiality
//! Profile): over every pydicom-data file Lucent reads and the real CT, nothing the profile
//! removes survives, no original identifier is left anywhere in the written bytes, UIDs remap
//! consistently (and only with the same key), pixel data is unchanged, dates shift per patient
//! when asked, and images with burned-in annotation are left out unless included.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use dicom_core::header::Header;
use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use lucent_tests::{real_data, test_data, walk_files};
use pacs::deid::{Action, DateShift, DeidOptions, action, deidentify};

const KEY: &[u8] = b"lucent-test-site-secret-0123456789";

fn options(date_shift: DateShift) -> DeidOptions {
    DeidOptions { key: KEY.to_vec(), date_shift, include_burned_in: true }
}

fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.get(tag).and_then(|e| e.to_str().ok()).map(|s| s.trim_matches(['\0', ' ']).to_owned()).unwrap_or_default()
}

/// Every element of `obj` at every level: tag, VR and text value.
fn walk(obj: &InMemDicomObject, out: &mut Vec<(dicom_core::Tag, dicom_core::VR, String)>) {
    for elem in obj.iter() {
        match elem.value() {
            Value::Sequence(seq) => {
                out.push((elem.tag(), elem.vr(), String::new()));
                for item in seq.items() {
                    walk(item, out);
                }
            }
            _ => out.push((
                elem.tag(),
                elem.vr(),
                elem.to_str().map(|s| s.trim_matches(['\0', ' ']).to_owned()).unwrap_or_default(),
            )),
        }
    }
}

fn serialized(obj: &DefaultDicomObject) -> Vec<u8> {
    let mut bytes = Vec::new();
    obj.write_all(&mut bytes).unwrap();
    bytes
}

fn pixel_bytes(obj: &InMemDicomObject) -> Option<Vec<u8>> {
    let elem = obj.get(tags::PIXEL_DATA)?;
    Some(match elem.value() {
        Value::Primitive(p) => p.to_bytes().into_owned(),
        Value::PixelSequence(seq) => seq.fragments().concat(),
        Value::Sequence(_) => Vec::new(),
    })
}

/// Checks one de-identified object against its original; returns the number of elements checked.
fn check(original: &DefaultDicomObject, done: &pacs::deid::Deidentified, label: &str) -> usize {
    let out = &done.object;
    let mut elements = Vec::new();
    walk(out, &mut elements);
    let shifted = done.shifted_days != 0;
    for (tag, vr, value) in &elements {
        assert!(tag.group() % 2 == 0, "{label}: private {tag} survived");
        // With the Modified Dates option, dates are kept (shifted) whatever the basic action.
        if shifted && matches!(vr, dicom_core::VR::DA | dicom_core::VR::DT) {
            continue;
        }
        match action(*tag) {
            Some(Action::Remove) => panic!("{label}: {tag}, which the profile removes, survived"),
            Some(Action::Empty) if *tag != tags::PATIENT_NAME => {
                assert!(value.is_empty(), "{label}: {tag} should be empty, is {value:?}")
            }
            Some(Action::Uid) if !value.is_empty() => {
                assert!(value.split('\\').all(|u| u.starts_with("2.25.")), "{label}: {tag} not remapped: {value}")
            }
            _ => {}
        }
    }
    // Independently of the table: the identifying values of the original appear nowhere in the bytes.
    let bytes = serialized(out);
    // Values of attributes the profile keeps (Manufacturer may be the institution's own name).
    let kept: std::collections::HashSet<&str> =
        elements.iter().filter(|(tag, _, _)| action(*tag).is_none()).map(|(_, _, v)| v.as_str()).collect();
    let find = |needle: &str| memchr::memmem::find(&bytes, needle.as_bytes()).is_some();
    for tag in [
        tags::PATIENT_NAME,
        tags::PATIENT_ID,
        tags::PATIENT_BIRTH_DATE,
        dicom_core::Tag(0x0010, 0x1000), // Other Patient IDs (retired)
        tags::PATIENT_ADDRESS,
        tags::INSTITUTION_NAME,
        tags::INSTITUTION_ADDRESS,
        tags::REFERRING_PHYSICIAN_NAME,
        tags::PERFORMING_PHYSICIAN_NAME,
        tags::OPERATORS_NAME,
        tags::ACCESSION_NUMBER,
        tags::STUDY_ID,
        tags::STATION_NAME,
        tags::DEVICE_SERIAL_NUMBER,
        tags::STUDY_INSTANCE_UID,
        tags::SERIES_INSTANCE_UID,
        tags::SOP_INSTANCE_UID,
        tags::FRAME_OF_REFERENCE_UID,
    ] {
        let original_value = text(original, tag);
        // Short values ("1", "M"), short numbers ("00000" is inside "6.000000") and placeholders
        // could match anything: only telling ones.
        let numeric = original_value.chars().all(|c| c.is_ascii_digit() || c == '.' || c == ' ');
        let telling = original_value.len() >= 5 && !(numeric && original_value.len() < 10);
        if telling
            && !kept.contains(original_value.as_str())
            && !["ANONYMIZED", "ANONYMOUS"].contains(&original_value.as_str())
        {
            assert!(
                !find(&original_value),
                "{label}: the original {tag} ({} bytes) is still in the file",
                original_value.len()
            );
        }
    }
    assert_eq!(text(out, tags::PATIENT_IDENTITY_REMOVED), "YES", "{label}");
    let method = text(out, tags::DEIDENTIFICATION_METHOD);
    assert!(method.contains("PS3.15 E.1 Basic Profile") && method.len() <= 64, "{label}: {method}");
    assert_eq!(out.meta().media_storage_sop_instance_uid.trim_end_matches('\0'), done.sop_instance_uid, "{label}");
    assert_eq!(pixel_bytes(original), pixel_bytes(out), "{label}: pixel data must not change");
    elements.len()
}

#[test]
fn every_pydicom_data_file_lucent_reads_keeps_nothing_the_profile_removes() {
    let Some(dir) = test_data("pydicom-data") else { return };
    let (mut checked, mut elements) = (0, 0);
    for (name, path) in walk_files(&dir) {
        let Ok(original) = pacs::file::open(&path) else { continue };
        let done = deidentify(original.clone(), &options(DateShift::None)).unwrap_or_else(|e| panic!("{name}: {e}"));
        elements += check(&original, &done, &name);
        // The same key gives the same UIDs; another key other UIDs.
        let again = deidentify(original.clone(), &options(DateShift::None)).unwrap();
        assert_eq!(again.study_instance_uid, done.study_instance_uid, "{name}");
        assert_eq!(again.sop_instance_uid, done.sop_instance_uid, "{name}");
        let other = DeidOptions { key: b"another-site-secret-0123456789".to_vec(), ..options(DateShift::None) };
        if !text(&original, tags::SOP_INSTANCE_UID).is_empty() {
            assert_ne!(deidentify(original, &other).unwrap().sop_instance_uid, done.sop_instance_uid, "{name}");
        }
        checked += 1;
    }
    eprintln!("de-identified and checked {checked} pydicom-data files ({elements} elements)");
    assert!(checked >= 50, "only {checked} files were readable");
}

#[test]
fn the_real_ct_keeps_one_study_and_series_and_shifts_its_dates() {
    let Some(dir) = real_data("ct-acrin-chest") else { return };
    let files: Vec<_> =
        walk_files(&dir).into_iter().filter(|(_, p)| pacs::file::has_part10_prefix(p).unwrap_or(false)).collect();
    assert!(files.len() > 100, "{} files", files.len());
    let (mut studies, mut series) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
    let mut shifts = std::collections::BTreeSet::new();
    for (name, path) in &files {
        let original = pacs::file::open(path).unwrap();
        let done = deidentify(original.clone(), &options(DateShift::PerPatient)).unwrap();
        check(&original, &done, name);
        studies.insert(done.study_instance_uid.clone());
        series.insert(done.series_instance_uid.clone());
        shifts.insert(done.shifted_days);
        let (before, after) = (text(&original, tags::STUDY_DATE), text(&done.object, tags::STUDY_DATE));
        if before.len() == 8 {
            assert_eq!(after.len(), 8, "{name}: the study date is kept, shifted");
            assert_ne!(before, after, "{name}");
        }
    }
    assert_eq!((studies.len(), series.len(), shifts.len()), (1, 1, 1), "one study, one series, one shift");
    assert!(shifts.iter().all(|d| (-3650..0).contains(d)), "{shifts:?}");
}

#[test]
fn dates_shift_by_the_same_days_for_one_patient_and_intervals_survive() {
    let dir = tempfile::tempdir().unwrap();
    let mut dates = Vec::new();
    for (seed, date) in [("prior", "20240115"), ("current", "20250301")] {
        let mut spec = pacs::synth::RadiographSpec::chest(seed, 16);
        spec.patient = pacs::synth::PatientSpec {
            study_date: date.into(),
            ..pacs::synth::PatientSpec::new("SAME^PATIENT", "P-77", seed)
        };
        let path = dir.path().join(format!("{seed}.dcm"));
        pacs::synth::write_radiograph(&path, &spec).unwrap();
        let done = deidentify(pacs::file::open(&path).unwrap(), &options(DateShift::PerPatient)).unwrap();
        assert_eq!(text(&done.object, tags::PATIENT_ID), pacs::deid::pseudonym(KEY, "P-77"));
        assert_eq!(text(&done.object, tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED), "MODIFIED");
        dates.push((text(&done.object, tags::STUDY_DATE), done.shifted_days));
    }
    assert_eq!(dates[0].1, dates[1].1, "one shift per patient");
    let day = |s: &str| {
        let (y, m, d) =
            (s[0..4].parse::<i64>().unwrap(), s[4..6].parse::<i64>().unwrap(), s[6..8].parse::<i64>().unwrap());
        y * 372 + m * 31 + d // monotone, enough to compare order
    };
    assert!(day(&dates[0].0) < day(&dates[1].0), "order kept: {dates:?}");
    assert_ne!(dates[0].0, "20240115");
    // Without the option, the Study Date is emptied as the profile says.
    let plain =
        deidentify(pacs::file::open(&dir.path().join("prior.dcm")).unwrap(), &options(DateShift::None)).unwrap();
    assert_eq!(text(&plain.object, tags::STUDY_DATE), "");
    assert_eq!(text(&plain.object, tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED), "REMOVED");
}

#[test]
fn burned_in_annotation_is_left_out_unless_included() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.dcm");
    pacs::synth::write_radiograph(&path, &pacs::synth::RadiographSpec::chest("burned", 16)).unwrap();
    let mut obj = dicom_object::open_file(&path).unwrap();
    obj.put(dicom_core::DataElement::new(
        tags::BURNED_IN_ANNOTATION,
        dicom_core::VR::CS,
        dicom_core::PrimitiveValue::from("YES"),
    ));
    let strict = DeidOptions { include_burned_in: false, ..options(DateShift::None) };
    assert!(matches!(deidentify(obj.clone(), &strict), Err(pacs::Error::BurnedIn { .. })));
    assert!(deidentify(obj, &options(DateShift::None)).is_ok());
}
