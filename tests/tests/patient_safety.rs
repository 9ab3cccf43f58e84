//! The patient a file belongs to is never decided by a race or a guess: instances without
//! Study or Series Instance UID are refused by every path (import, the store's own writers, the
//! Store SCP); the same SOP Instance UID with other content, a study of another patient and a
//! series of another study are conflicts kept aside and shown; `verify` checks the index
//! against each file's own header; no process deletes another's writes in flight.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crossbeam_channel::Receiver;
use pacs::import::{ImportOptions, ImportSummary, import_paths};
use pacs::net::{self, PacsNode, ScpCommit, ScpConfig, ScpEvent};
use pacs::store::{ConflictKind, Store};
use pacs::synth::{self, PatientSpec, RadiographSpec};

fn import(store: &mut Store, paths: &[PathBuf], threads: usize) -> ImportSummary {
    let cancel = AtomicBool::new(false);
    import_paths(store, paths, &ImportOptions { threads, batch: 1 }, &|_| {}, &cancel).unwrap()
}

/// A small synthetic radiograph of `seed` (which fixes its series and SOP Instance UIDs) for the
/// patient `name` / `id`, in the study `study_uid`.
fn radiograph(path: &Path, seed: &str, name: &str, id: &str, study_uid: &str) -> PathBuf {
    let mut spec = RadiographSpec::chest(seed, 32);
    spec.patient = PatientSpec { study_uid: study_uid.to_owned(), ..PatientSpec::new(name, id, seed) };
    synth::write_radiograph(path, &spec).unwrap();
    path.to_path_buf()
}

fn header(path: &Path) -> pacs::InstanceInfo {
    pacs::file::read_info(path).unwrap()
}

/// The patient the index files an instance under: (patient ID, patient name).
fn indexed_patient(store: &Store, sop_uid: &str) -> (String, String) {
    for study in store.studies(&Default::default()).unwrap() {
        for series in store.series(&study.study_uid).unwrap() {
            if store.instances(&series.series_uid).unwrap().iter().any(|i| i.sop_uid == sop_uid) {
                return (study.patient_id, study.patient_name);
            }
        }
    }
    panic!("{sop_uid} is not indexed");
}

fn scp(store_dir: &Path, commit: ScpCommit) -> (net::ScpHandle, Receiver<ScpEvent>, PacsNode) {
    let mut config = ScpConfig::new("LUCENT", 0);
    config.bind_address = "127.0.0.1".parse().unwrap();
    config.allowed_calling_aes = vec!["LUCENT-SCU".into()];
    config.commit = commit;
    let (handle, events) = net::start_scp(&config, store_dir).unwrap();
    let node = PacsNode::new("self", "LUCENT", "127.0.0.1", handle.local_addr().port(), "LUCENT-SCU");
    (handle, events, node)
}

#[test]
fn an_instance_without_study_or_series_uid_is_refused_by_every_path() {
    let dir = tempfile::tempdir().unwrap();
    // Two patients' images, neither with a Study Instance UID.
    let a = radiograph(&dir.path().join("a.dcm"), "no-study-a", "ALPHA^ONE", "P-A", "");
    let b = radiograph(&dir.path().join("b.dcm"), "no-study-b", "BRAVO^TWO", "P-B", "");
    assert!(header(&a).study_instance_uid.is_empty());

    // Import.
    let root = dir.path().join("store");
    let mut store = Store::open(&root).unwrap();
    let summary = import(&mut store, &[a.clone(), b.clone()], 2);
    assert_eq!((summary.imported, summary.skipped.len()), (0, 2), "{summary:?}");
    assert!(summary.skipped.iter().all(|s| s.reason.contains("StudyInstanceUID")), "{:?}", summary.skipped);

    // The store's own writers.
    let bytes = std::fs::read(&a).unwrap();
    assert!(matches!(store.add_bytes(&bytes), Err(pacs::Error::MissingAttribute { name: "StudyInstanceUID" })));
    assert!(store.files().write(&header(&a), &[&bytes]).is_err());
    assert!(store.files().stage(&header(&a), &[&bytes]).is_err());

    // The Store SCP, in both commit modes: each C-STORE is answered with a failure.
    for commit in [ScpCommit::PerInstance, ScpCommit::AtRelease] {
        let scp_root = dir.path().join(format!("scp-{commit:?}"));
        let (handle, events, node) = scp(&scp_root, commit);
        let report = net::store_files(&node, &[a.clone(), b.clone()], &mut |_| {}, &AtomicBool::new(false)).unwrap();
        assert_eq!(report.sent, 0, "{commit:?}: {report:?}");
        assert_eq!(report.failed.len(), 2, "{commit:?}: {report:?}");
        handle.shutdown();
        let failed: Vec<ScpEvent> =
            events.try_iter().filter(|e| matches!(e, ScpEvent::Failed { .. })).collect::<Vec<_>>();
        assert_eq!(failed.len(), 2, "{commit:?}: {failed:?}");
        let store = Store::open(&scp_root).unwrap();
        assert_eq!(store.counts().unwrap().instances, 0, "{commit:?}: nothing filed");
        assert!(store.check_consistency().unwrap().is_consistent());
    }
}

#[test]
fn two_files_with_one_sop_uid_in_one_import_never_mix_patients() {
    // The same SOP, series and study UIDs, two patients: whichever lands first is filed, the other
    // is kept aside, and the index always names the patient of the file on disk.
    for run in 0..12 {
        let dir = tempfile::tempdir().unwrap();
        let study = synth::uid("study:race");
        let a = radiograph(&dir.path().join("src/a.dcm"), "race", "ALPHA^ONE", "P-A", &study);
        let b = radiograph(&dir.path().join("src/b.dcm"), "race", "BRAVO^TWO", "P-B", &study);
        let sop = header(&a).sop_instance_uid;
        assert_eq!(sop, header(&b).sop_instance_uid);
        let mut store = Store::open(&dir.path().join("store")).unwrap();
        let summary = import(&mut store, &[dir.path().join("src")], 2);
        assert_eq!((summary.imported, summary.conflicts.len()), (1, 1), "run {run}: {summary:?}");
        assert_eq!(summary.conflicts[0].kind, ConflictKind::DifferentContent);

        let on_disk = header(&store.instance_path(&sop).unwrap().unwrap());
        assert_eq!(indexed_patient(&store, &sop), (on_disk.patient_id.clone(), on_disk.patient_name.clone()));
        let aside = header(&summary.conflicts[0].path);
        assert_ne!(aside.patient_id, on_disk.patient_id, "run {run}: the other patient's file is kept aside");
        let report = store.check_consistency().unwrap();
        assert!(report.is_consistent(), "run {run}: {report:?}");
        assert_eq!(report.conflicts.len(), 1);
    }
}

#[test]
fn a_later_copy_with_other_content_is_kept_aside_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let study = synth::uid("study:later");
    let first = radiograph(&dir.path().join("first/a.dcm"), "later", "ALPHA^ONE", "P-A", &study);
    let later = radiograph(&dir.path().join("later/a.dcm"), "later", "ALPHA^ONE", "P-A2", &study);
    let mut store = Store::open(&dir.path().join("store")).unwrap();
    assert_eq!(import(&mut store, std::slice::from_ref(&first), 1).imported, 1);

    // The same bytes again: a duplicate, nothing kept.
    let again = import(&mut store, std::slice::from_ref(&first), 1);
    assert_eq!((again.imported, again.duplicates, again.conflicts.len()), (0, 1, 0));

    // Other content under the same SOP Instance UID: not "already in store", a conflict.
    let summary = import(&mut store, std::slice::from_ref(&later), 1);
    assert_eq!((summary.imported, summary.duplicates, summary.conflicts.len()), (0, 0, 1), "{summary:?}");
    let conflict = &summary.conflicts[0];
    assert_eq!(conflict.kind, ConflictKind::DifferentContent);
    assert_eq!(std::fs::read(&conflict.path).unwrap(), std::fs::read(&later).unwrap(), "kept byte for byte");
    let sop = header(&first).sop_instance_uid;
    assert_eq!(std::fs::read(store.instance_path(&sop).unwrap().unwrap()).unwrap(), std::fs::read(&first).unwrap());

    // Shown by the store (and so by `lucent verify`), and still there after reopening.
    drop(store);
    let store = Store::open(&dir.path().join("store")).unwrap();
    let report = store.check_consistency().unwrap();
    assert!(report.is_consistent(), "{report:?}");
    assert_eq!(report.conflicts.len(), 1);
    assert_eq!(report.conflicts[0].sop_instance_uid, sop);
    assert!(report.conflicts[0].path.is_file());
}

#[test]
fn a_study_of_another_patient_or_a_series_of_another_study_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let study = synth::uid("study:shared");
    let a = radiograph(&dir.path().join("a.dcm"), "owner", "ALPHA^ONE", "P-A", &study);
    // Another patient's image claiming the same study.
    let b = radiograph(&dir.path().join("b.dcm"), "intruder", "BRAVO^TWO", "P-B", &study);
    // The same patient's study, another image: filed.
    let c = radiograph(&dir.path().join("c.dcm"), "owner-2", "ALPHA^ONE", "P-A", &study);
    let mut store = Store::open(&dir.path().join("store")).unwrap();
    assert_eq!(import(&mut store, std::slice::from_ref(&a), 1).imported, 1);
    let summary = import(&mut store, &[b.clone(), c.clone()], 1);
    assert_eq!(summary.imported, 1, "{summary:?}");
    assert_eq!(summary.conflicts.len(), 1);
    assert_eq!(summary.conflicts[0].kind, ConflictKind::StudyOfOtherPatient);
    assert_eq!(summary.conflicts[0].sop_instance_uid, header(&b).sop_instance_uid);
    assert_eq!(store.counts().unwrap().patients, 1, "no second patient under the study");
    assert!(!store.contains(&header(&b).sop_instance_uid).unwrap());

    // A series that the store files under another study.
    let d = radiograph(&dir.path().join("d.dcm"), "owner", "ALPHA^ONE", "P-A", &synth::uid("study:other"));
    // Same seed as `a`: same series and SOP UIDs, but another study.
    assert_eq!(header(&d).series_instance_uid, header(&a).series_instance_uid);
    let summary = import(&mut store, &[d], 1);
    assert_eq!(summary.conflicts.len(), 1, "{summary:?}");
    assert_eq!(summary.conflicts[0].kind, ConflictKind::InstanceElsewhere);
    let report = store.check_consistency().unwrap();
    assert!(report.is_consistent(), "{report:?}");
    assert_eq!(report.conflicts.len(), 2);
}

#[test]
fn the_scp_keeps_conflicts_aside_and_answers_them_with_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let study = synth::uid("study:scp-conflict");
    let a = radiograph(&dir.path().join("a.dcm"), "scp-owner", "ALPHA^ONE", "P-A", &study);
    let b = radiograph(&dir.path().join("b.dcm"), "scp-intruder", "BRAVO^TWO", "P-B", &study);
    let a2 = radiograph(&dir.path().join("a2.dcm"), "scp-owner", "ALPHA^ONE", "P-A2", &study);
    for commit in [ScpCommit::PerInstance, ScpCommit::AtRelease] {
        let root = dir.path().join(format!("store-{commit:?}"));
        let (handle, events, node) = scp(&root, commit);
        let never = AtomicBool::new(false);
        let first = net::store_files(&node, std::slice::from_ref(&a), &mut |_| {}, &never).unwrap();
        assert_eq!(first.sent, 1, "{commit:?}: {first:?}");
        let report = net::store_files(&node, &[b.clone(), a2.clone()], &mut |_| {}, &never).unwrap();
        assert_eq!((report.sent, report.failed.len()), (0, 2), "{commit:?}: {report:?}");
        // The identical copy again is fine.
        let again = net::store_files(&node, std::slice::from_ref(&a), &mut |_| {}, &never).unwrap();
        assert_eq!(again.sent, 1, "{commit:?}: {again:?}");
        handle.shutdown();
        let failed = events.try_iter().filter(|e| matches!(e, ScpEvent::Failed { .. })).count();
        assert_eq!(failed, 2, "{commit:?}");
        let store = Store::open(&root).unwrap();
        assert_eq!(store.counts().unwrap().instances, 1);
        let sop = header(&a).sop_instance_uid;
        assert_eq!(indexed_patient(&store, &sop), ("P-A".to_owned(), "ALPHA^ONE".to_owned()));
        let report = store.check_consistency().unwrap();
        assert!(report.is_consistent(), "{commit:?}: {report:?}");
        let mut kinds: Vec<ConflictKind> = report.conflicts.iter().map(|c| c.kind).collect();
        kinds.sort_by_key(|k| format!("{k:?}"));
        assert_eq!(kinds, vec![ConflictKind::DifferentContent, ConflictKind::StudyOfOtherPatient], "{commit:?}");
    }
}

#[test]
fn verify_checks_the_index_against_each_files_own_header() {
    let dir = tempfile::tempdir().unwrap();
    let study = synth::uid("study:verify");
    let a = radiograph(&dir.path().join("a.dcm"), "verify", "ALPHA^ONE", "P-A", &study);
    let b = radiograph(&dir.path().join("b.dcm"), "verify", "BRAVO^TWO", "P-B", &study);
    let mut store = Store::open(&dir.path().join("store")).unwrap();
    assert_eq!(import(&mut store, std::slice::from_ref(&a), 1).imported, 1);
    assert!(store.check_consistency().unwrap().is_consistent());
    // The file in place now names another patient than the index (what the old race produced).
    let sop = header(&a).sop_instance_uid;
    std::fs::write(store.instance_path(&sop).unwrap().unwrap(), std::fs::read(&b).unwrap()).unwrap();
    let report = store.check_consistency().unwrap();
    assert!(!report.is_consistent());
    assert_eq!(report.mismatched_rows.len(), 1, "{report:?}");
    assert_eq!(report.mismatched_rows[0].sop_instance_uid, sop);
    assert_eq!(report.mismatched_rows[0].fields, vec!["patient_id", "patient_name"]);
}

#[test]
fn opening_a_store_never_deletes_another_writers_files_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let a = radiograph(&dir.path().join("a.dcm"), "in-flight", "ALPHA^ONE", "P-A", &synth::uid("study:in-flight"));
    let mut store = Store::open(&root).unwrap();
    let files = store.files();
    let staged = files.stage(&header(&a), &[&std::fs::read(&a).unwrap()]).unwrap();
    // A dead writer's folder: its lock is free.
    let dead = root.join("tmp/999999-dead");
    std::fs::create_dir_all(&dead).unwrap();
    std::fs::write(dead.join("lock"), b"").unwrap();
    std::fs::write(dead.join("0.tmp"), b"half a file").unwrap();
    // Someone else opens the same store (`lucent ls`, another receiver) while the write is staged.
    drop(Store::open(&root).unwrap());
    assert!(!dead.exists(), "a dead writer's temp folder is removed");
    let (placed, failed) = files.commit(vec![staged]);
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(store.index(&placed).unwrap().added, 1);
    assert!(store.check_consistency().unwrap().is_consistent());
}

#[cfg(unix)]
#[test]
fn the_store_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let a = radiograph(&dir.path().join("a.dcm"), "private", "ALPHA^ONE", "P-A", &synth::uid("study:private"));
    let mut store = Store::open(&root).unwrap();
    import(&mut store, std::slice::from_ref(&a), 1);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o700);
    let file = store.instance_path(&header(&a).sop_instance_uid).unwrap().unwrap();
    assert_eq!(mode(&file), 0o600, "{}", file.display());
    assert_eq!(mode(file.parent().unwrap()), 0o700);
}
