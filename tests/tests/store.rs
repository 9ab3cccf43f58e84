//! The local study store: import of folders, ZIP and DICOMDIR, dedupe, skipped files, queries.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use lucent_tests::test_data;
use pacs::import::{ImportOptions, ImportSummary, import_paths};
use pacs::store::{Store, StudyQuery};
use pacs::synth::{self, CtSeriesSpec, PatientSpec, RadiographSpec};

fn import(store: &mut Store, paths: &[PathBuf]) -> ImportSummary {
    let cancel = AtomicBool::new(false);
    import_paths(store, paths, &ImportOptions { threads: 2, batch: 7 }, &|_| {}, &cancel).unwrap()
}

/// Two patients (one Korean), a CT and a CR, plus a non-DICOM file.
fn sample_folder(dir: &Path) {
    let mut ct = CtSeriesSpec { noise_hu: 0.0, ..CtSeriesSpec::chest("store-ct", 12, 32) };
    ct.patient = PatientSpec {
        study_date: "20250105".into(),
        ..PatientSpec::new("HONG^GILDONG=홍^길동", "P-001", "store-ct")
    };
    synth::write_ct_series(&dir.join("ct/series"), &ct).unwrap();
    let mut cr = RadiographSpec::chest("store-cr", 64);
    cr.patient = PatientSpec { study_date: "20260220".into(), ..PatientSpec::new("DOE^JANE", "P-002", "store-cr") };
    synth::write_radiograph(&dir.join("cr/1.dcm"), &cr).unwrap();
    std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
}

#[test]
fn folder_import_dedupes_and_lists_what_it_skipped() {
    let src = tempfile::tempdir().unwrap();
    sample_folder(src.path());
    let root = tempfile::tempdir().unwrap();
    let mut store = Store::open(root.path()).unwrap();

    let summary = import(&mut store, &[src.path().to_path_buf()]);
    assert_eq!(summary.imported, 13);
    assert_eq!((summary.patients, summary.studies, summary.series), (2, 2, 2));
    assert_eq!(summary.skipped.len(), 1);
    assert!(summary.skipped[0].path.ends_with("notes.txt"));
    assert!(summary.skipped[0].reason.contains("not a DICOM file"), "{}", summary.skipped[0].reason);

    let again = import(&mut store, &[src.path().to_path_buf()]);
    assert_eq!((again.imported, again.duplicates), (0, 13));
    let counts = store.counts().unwrap();
    assert_eq!((counts.patients, counts.studies, counts.series, counts.instances), (2, 2, 2, 13));
    assert!(store.check_consistency().unwrap().is_consistent());
}

#[test]
fn queries_filter_by_text_patient_date_and_modality() {
    let src = tempfile::tempdir().unwrap();
    sample_folder(src.path());
    let root = tempfile::tempdir().unwrap();
    let mut store = Store::open(root.path()).unwrap();
    import(&mut store, &[src.path().to_path_buf()]);

    let all = store.studies(&StudyQuery::default()).unwrap();
    assert_eq!(
        all.iter().map(|s| s.study_date.as_str()).collect::<Vec<_>>(),
        vec!["20260220", "20250105"],
        "newest first"
    );
    let by = |q: StudyQuery| store.studies(&q).unwrap().into_iter().map(|s| s.patient_id).collect::<Vec<_>>();
    assert_eq!(by(StudyQuery { text: "홍".into(), ..Default::default() }), vec!["P-001"]);
    assert_eq!(by(StudyQuery { text: "doe".into(), ..Default::default() }), vec!["P-002"]);
    assert_eq!(by(StudyQuery { patient_id: "P-001".into(), ..Default::default() }), vec!["P-001"]);
    assert_eq!(by(StudyQuery { modality: "CR".into(), ..Default::default() }), vec!["P-002"]);
    assert_eq!(by(StudyQuery { date_from: "20260101".into(), ..Default::default() }), vec!["P-002"]);
    assert_eq!(by(StudyQuery { date_to: "20251231".into(), ..Default::default() }), vec!["P-001"]);
    assert!(by(StudyQuery { text: "100%_".into(), ..Default::default() }).is_empty(), "LIKE wildcards are escaped");

    let ct = &all[1];
    assert_eq!((ct.modalities.as_str(), ct.series, ct.instances), ("CT", 1, 12));
    let series = store.series(&ct.study_uid).unwrap();
    let paths = store.series_paths(&series[0].series_uid).unwrap();
    assert_eq!(paths.len(), 12);
    assert!(paths.iter().all(|p| p.starts_with(root.path()) && p.is_file()));
    let patients = store.patients(&StudyQuery::default()).unwrap();
    assert_eq!(patients.len(), 2);
}

#[test]
fn zip_archives_are_imported_entry_by_entry() {
    let src = tempfile::tempdir().unwrap();
    let files =
        synth::write_ct_series(src.path(), &CtSeriesSpec { noise_hu: 0.0, ..CtSeriesSpec::chest("zip", 3, 16) })
            .unwrap();
    let archive = src.path().join("study.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&archive).unwrap());
    for (i, file) in files.iter().enumerate() {
        zip.start_file(format!("dir/{i}.dcm"), zip::write::SimpleFileOptions::default()).unwrap();
        zip.write_all(&std::fs::read(file).unwrap()).unwrap();
    }
    zip.start_file("readme.txt", zip::write::SimpleFileOptions::default()).unwrap();
    zip.write_all(b"hello").unwrap();
    zip.finish().unwrap();

    let root = tempfile::tempdir().unwrap();
    let mut store = Store::open(root.path()).unwrap();
    let summary = import(&mut store, &[archive]);
    assert_eq!(summary.imported, 3);
    assert_eq!(summary.skipped.len(), 1);
    assert!(summary.skipped[0].path.ends_with("study.zip!readme.txt"));
    assert!(store.check_consistency().unwrap().is_consistent());
}

#[test]
fn a_dicomdir_imports_the_files_it_references() {
    let Some(tests) = test_data("pydicom-test-files") else { return };
    let dicomdir = tests.join("dicomdirtests/DICOMDIR");
    let referenced = pacs::import::dicomdir_files(&dicomdir).unwrap();
    assert!(referenced.len() > 10, "{} files", referenced.len());
    let existing = referenced.iter().filter(|p| p.is_file()).count();
    assert_eq!(existing, referenced.len(), "every referenced file is found");

    let root = tempfile::tempdir().unwrap();
    let mut store = Store::open(root.path()).unwrap();
    let summary = import(&mut store, &[dicomdir]);
    assert_eq!(summary.imported + summary.skipped.len(), referenced.len());
    assert!(summary.imported > 10);
    assert!(store.check_consistency().unwrap().is_consistent());
}

#[test]
fn cancel_stops_an_import_and_leaves_the_store_consistent() {
    let src = tempfile::tempdir().unwrap();
    synth::write_ct_series(src.path(), &CtSeriesSpec { noise_hu: 0.0, ..CtSeriesSpec::chest("cancel", 40, 16) })
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut store = Store::open(root.path()).unwrap();
    let cancel = AtomicBool::new(false);
    let summary = import_paths(
        &mut store,
        &[src.path().to_path_buf()],
        &ImportOptions { threads: 1, batch: 4 },
        &|p| {
            if p.done >= 5 {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        },
        &cancel,
    )
    .unwrap();
    assert!(summary.cancelled);
    assert!(summary.imported < 40, "imported {}", summary.imported);
    assert!(store.check_consistency().unwrap().is_consistent());
    let resumed = import(&mut store, &[src.path().to_path_buf()]);
    assert_eq!(resumed.imported + summary.imported, 40);
}
