//! DICOM networking against real peers: a throw-away Orthanc 1.10 (with the DICOMweb plugin,
//! started here on free loopback ports) and the DCMTK tools (storescu, findscu, getscu, echoscu).
//! DICOM TLS against an Orthanc whose DICOM port speaks TLS only, and Lucent's own TLS Store SCP,
//! with a throw-away CA made here (`common::tls`).
//!
//! Data: synthetic CT and CR studies from `pacs::synth`, and compressed files of pydicom-data /
//! pydicom's test files when provisioned (JPEG 2000 included: Orthanc 1.10 cannot transcode it,
//! so a retrieve only works with a presentation context in its own transfer syntax).
//!
//! Tests skip (with a message) without Orthanc or DCMTK unless `LUCENT_REQUIRE_TEST_DATA=1`.
//! Speed is measured by the benchmark, not here: `cargo xtask bench-pacs`
//! (`tests/benches/pacs_net.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::orthanc::{Modality, ORTHANC_AET, Orthanc, OrthancTls, dcmtk, free_port};
use common::tls::{Issued, TestCa};
use common::{assert_identical_in_store, compressed_files, store_instances};
use pacs::net::{
    self, EchoVerdict, FindQuery, PacsNode, RetrieveOptions, RetrieveProgress, RetrieveRequest, ScpCommit, ScpConfig,
    ScpEvent,
};
use pacs::store::Store;
use pacs::synth::{self, CtSeriesSpec, RadiographSpec};

const LUCENT_AET: &str = "LUCENT";
const DCMTK_AET: &str = "DCMTK";

fn never() -> AtomicBool {
    AtomicBool::new(false)
}

fn ignore_progress() -> impl FnMut(&RetrieveProgress) {
    |_| {}
}

/// C-MOVE of a whole study to Lucent's SCP with the default options; panics on error.
fn move_study(node: &PacsNode, study_uid: &str, store: &mut Store) -> pacs::net::RetrieveReport {
    let request = RetrieveRequest::study(study_uid);
    net::retrieve_move(node, &request, LUCENT_AET, store, &RetrieveOptions::default(), &mut ignore_progress(), &never())
        .unwrap()
}

/// C-GET of a whole study with the default options; panics on error.
fn get_study(node: &PacsNode, study_uid: &str, store: &mut Store) -> pacs::net::RetrieveReport {
    net::retrieve_get(
        node,
        &RetrieveRequest::study(study_uid),
        store,
        &RetrieveOptions::default(),
        &mut ignore_progress(),
        &never(),
    )
    .unwrap()
}

/// Synthetic studies: a CT series (2026) and a CR (2025), in `dir`. Returns (CT files, CR file).
fn synthetic_studies(dir: &Path, seed: &str, slices: usize) -> (Vec<PathBuf>, PathBuf) {
    let ct = CtSeriesSpec::chest(&format!("{seed}-ct"), slices, 96);
    let ct_files = synth::write_ct_series(&dir.join("ct"), &ct).unwrap();
    let mut cr = RadiographSpec::chest(&format!("{seed}-cr"), 128);
    cr.patient.study_date = "20250315".into();
    let cr_file = dir.join("cr.dcm");
    synth::write_radiograph(&cr_file, &cr).unwrap();
    (ct_files, cr_file)
}

fn info(path: &Path) -> pacs::InstanceInfo {
    pacs::file::read_info(path).unwrap()
}

#[test]
fn echo_verdicts_ok_refused_rejected_and_silent_peer_timeout() {
    // Refused: a port nobody listens on (an Orthanc another test starts may take a free port
    // meanwhile: then another one; a refusal must come within a few tries).
    let verdicts: Vec<EchoVerdict> = (0..5)
        .map(|_| net::echo(&PacsNode::new("closed", "NOBODY", "127.0.0.1", free_port(), LUCENT_AET)))
        .take_while(|v| *v != EchoVerdict::Refused)
        .collect();
    assert!(verdicts.len() < 5, "no refusal: {verdicts:?}");

    // A peer that accepts and never answers: Timeout within the configured timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let holder = std::thread::Builder::new()
        .name("silent-peer".into())
        .spawn(move || {
            let mut held = Vec::new();
            for _ in 0..3 {
                if let Ok((s, _)) = silent.accept() {
                    held.push(s);
                }
            }
            std::thread::sleep(Duration::from_secs(5));
        })
        .unwrap();
    let mut node = PacsNode::new("silent", "SILENT", "127.0.0.1", silent_port, LUCENT_AET);
    node.dimse_timeout_s = 1.0;
    let started = Instant::now();
    let verdict = net::echo(&node);
    let took = started.elapsed();
    assert!(matches!(verdict, EchoVerdict::Timeout { .. }), "{verdict}");
    assert!(took < Duration::from_secs(3), "timeout took {took:?}");
    // The same through the query API gives a Timeout error, not a hang.
    let started = Instant::now();
    let err = net::find_studies(&node, &FindQuery::default(), &never()).unwrap_err();
    assert!(matches!(err, pacs::Error::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(holder);

    let Some(orthanc) = Orthanc::start(&[Modality::new("lucent", LUCENT_AET, 1)]) else { return };
    let verdict = net::echo(&orthanc.node(LUCENT_AET));
    assert!(verdict.is_ok(), "{verdict}");
    // Unknown calling AE title: rejected, and the message says so.
    let verdict = net::echo(&orthanc.node("STRANGER"));
    let EchoVerdict::AeRejected { reason } = &verdict else { panic!("expected a rejection, got {verdict}") };
    assert!(reason.contains("AE title"), "{reason}");
    // Wrong called AE title.
    let mut wrong = orthanc.node(LUCENT_AET);
    wrong.ae_title = "NOT-ORTHANC".into();
    assert!(matches!(net::echo(&wrong), EchoVerdict::AeRejected { .. }));
    // The error type of other operations names the rejection too.
    let err = net::find_studies(&orthanc.node("STRANGER"), &FindQuery::default(), &never()).unwrap_err();
    assert!(matches!(err, pacs::Error::AssociationRejected { .. }), "{err}");
    assert!(err.to_string().contains("rejected"), "{err}");
}

#[test]
fn find_get_move_and_store_against_orthanc() {
    let work = tempfile::tempdir().unwrap();
    let scp_port = free_port();
    let Some(orthanc) = Orthanc::start(&[
        Modality::new("lucent", LUCENT_AET, scp_port),
        Modality::new("dcmtk", DCMTK_AET, free_port()),
    ]) else {
        return;
    };
    let (ct_files, cr_file) = synthetic_studies(&work.path().join("synth"), "find-get", 12);
    let compressed = compressed_files().unwrap_or_default();
    let mut uploaded: Vec<PathBuf> = ct_files.clone();
    uploaded.push(cr_file.clone());
    uploaded.extend(compressed.iter().cloned());
    orthanc.upload(&uploaded);
    let node = orthanc.node(LUCENT_AET);
    let ct = info(&ct_files[0]);
    let cr = info(&cr_file);

    // C-FIND, study level: wildcard name, date range, modality, patient ID; both models.
    let studies =
        net::find_studies(&node, &FindQuery { patient_name: "SYNTHETIC^C*".into(), ..Default::default() }, &never())
            .unwrap();
    let uids: BTreeSet<_> = studies.iter().map(|s| s.study_uid.clone()).collect();
    assert_eq!(uids, BTreeSet::from([ct.study_instance_uid.clone(), cr.study_instance_uid.clone()]));
    let row = studies.iter().find(|s| s.study_uid == ct.study_instance_uid).unwrap();
    assert_eq!(row.patient_id, ct.patient_id);
    assert_eq!(row.study_date, "20260101");
    assert_eq!(row.modalities, vec!["CT".to_owned()]);
    assert_eq!(row.instance_count, Some(12));
    let by_date = net::find_studies(
        &node,
        &FindQuery { study_date_from: "20251201".into(), study_date_to: "20261231".into(), ..Default::default() },
        &never(),
    )
    .unwrap();
    assert_eq!(by_date.iter().map(|s| s.study_uid.as_str()).collect::<Vec<_>>(), vec![ct.study_instance_uid.as_str()]);
    let by_modality =
        net::find_studies(&node, &FindQuery { modality: "CR".into(), ..Default::default() }, &never()).unwrap();
    assert!(by_modality.iter().any(|s| s.study_uid == cr.study_instance_uid));
    assert!(!by_modality.iter().any(|s| s.study_uid == ct.study_instance_uid));
    let patient_root =
        FindQuery { model: net::QueryModel::PatientRoot, patient_id: cr.patient_id.clone(), ..Default::default() };
    let by_patient = net::find_studies(&node, &patient_root, &never()).unwrap();
    assert_eq!(by_patient.len(), 1);
    assert_eq!(by_patient[0].study_uid, cr.study_instance_uid);
    let limited = net::find_studies(&node, &FindQuery { limit: Some(2), ..Default::default() }, &never()).unwrap();
    assert_eq!(limited.len(), 2);

    // C-FIND, series and image level.
    let series = net::find_series(
        &node,
        &FindQuery { study_uid: ct.study_instance_uid.clone(), ..Default::default() },
        &never(),
    )
    .unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].series_uid, ct.series_instance_uid);
    assert_eq!(series[0].modality, "CT");
    assert_eq!(series[0].instance_count, Some(12));
    let ct_series = net::find_series(
        &node,
        &FindQuery { modality: "CT".into(), patient_name: "SYNTHETIC^CH*".into(), ..Default::default() },
        &never(),
    )
    .unwrap();
    assert_eq!(
        ct_series.iter().map(|s| s.series_uid.as_str()).collect::<Vec<_>>(),
        vec![ct.series_instance_uid.as_str()]
    );
    let instances = net::find_instances(
        &node,
        &FindQuery {
            study_uid: ct.study_instance_uid.clone(),
            series_uid: ct.series_instance_uid.clone(),
            ..Default::default()
        },
        &never(),
    )
    .unwrap();
    assert_eq!(instances.len(), 12);
    assert!(instances.iter().all(|i| i.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"));

    // C-GET every study into a fresh store: identical data set bytes, in the original transfer syntax.
    let store_dir = work.path().join("store-get");
    let mut store = Store::open(&store_dir).unwrap();
    let mut study_uids: Vec<String> = uploaded.iter().map(|p| info(p).study_instance_uid).collect();
    study_uids.dedup();
    let study_uids: BTreeSet<String> = study_uids.into_iter().collect();
    let mut calls = 0;
    for study_uid in &study_uids {
        let mut progress = |p: &RetrieveProgress| {
            calls += 1;
            assert!(p.bytes_per_s >= 0.0);
        };
        let report = net::retrieve_get(
            &node,
            &RetrieveRequest::study(study_uid),
            &mut store,
            &RetrieveOptions::default(),
            &mut progress,
            &never(),
        )
        .unwrap_or_else(|e| panic!("C-GET of study {study_uid}: {e}"));
        assert!(report.is_complete(), "C-GET of study {study_uid}: {report:?}");
        assert_eq!(report.already_present, 0);
    }
    assert!(calls > uploaded.len());
    assert_identical_in_store(&store, &uploaded);
    assert!(store.check_consistency().unwrap().is_consistent());
    // The J2K instance came in JPEG 2000: Orthanc could not have transcoded it.
    if let Some(j2k) = compressed.first() {
        let j2k_info = info(j2k);
        let path = &store_instances(&store)[&j2k_info.sop_instance_uid];
        assert_eq!(info(path).transfer_syntax_uid, "1.2.840.10008.1.2.4.90");
        let decoded = pacs::file::load_image(path, 0).unwrap();
        assert_eq!((decoded.frame.rows, decoded.frame.columns), (j2k_info.rows, j2k_info.columns));
    }
    // A second C-GET of a study the store has fetches nothing.
    let again = get_study(&node, &ct.study_instance_uid, &mut store);
    assert_eq!((again.already_present, again.received), (12, 0));
    assert!(again.is_complete());
    // A series-level C-GET after deleting some files from a fresh store fetches only the missing ones.
    let partial_dir = work.path().join("store-partial");
    let mut partial = Store::open(&partial_dir).unwrap();
    let mut importer_cancel = never();
    let _ = &mut importer_cancel;
    pacs::import::import_paths(&mut partial, &ct_files[..5], &Default::default(), &|_| {}, &importer_cancel).unwrap();
    let report = net::retrieve_get(
        &node,
        &RetrieveRequest::series(&ct.study_instance_uid, &ct.series_instance_uid),
        &mut partial,
        &RetrieveOptions::default(),
        &mut ignore_progress(),
        &never(),
    )
    .unwrap();
    assert_eq!((report.expected, report.already_present, report.received, report.stored), (Some(12), 5, 7, 7));
    assert!(report.is_complete(), "{report:?}");

    // Patient Root C-GET (the patient ID goes with the identifier).
    let mut patient_store = Store::open(&work.path().join("store-patient-root")).unwrap();
    let request = RetrieveRequest {
        model: net::QueryModel::PatientRoot,
        patient_id: cr.patient_id.clone(),
        ..RetrieveRequest::study(&cr.study_instance_uid)
    };
    let report = net::retrieve_get(
        &node,
        &request,
        &mut patient_store,
        &RetrieveOptions::default(),
        &mut ignore_progress(),
        &never(),
    )
    .unwrap();
    assert!(report.is_complete() && report.received == 1, "{report:?}");
    assert_identical_in_store(&patient_store, std::slice::from_ref(&cr_file));

    // C-MOVE the CT study to Lucent's own Store SCP, writing into another store.
    let move_dir = work.path().join("store-move");
    let mut move_store = Store::open(&move_dir).unwrap();
    let mut scp_config = ScpConfig::new(LUCENT_AET, scp_port);
    scp_config.bind_address = "127.0.0.1".parse().unwrap();
    scp_config.allowed_calling_aes = vec![ORTHANC_AET.into()];
    let (scp, events) = net::start_scp(&scp_config, &move_dir).unwrap();
    let mut last = RetrieveProgress::default();
    let report = net::retrieve_move(
        &node,
        &RetrieveRequest::study(&ct.study_instance_uid),
        LUCENT_AET,
        &mut move_store,
        &RetrieveOptions::default(),
        &mut |p| last = p.clone(),
        &never(),
    )
    .unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!((report.expected, report.received), (Some(12), 12));
    assert_eq!(last.done, 12);
    assert_identical_in_store(&move_store, &ct_files);
    let stored_events = events.try_iter().filter(|e| matches!(e, ScpEvent::Stored { new: true, .. })).count();
    assert_eq!(stored_events, 12);
    // C-MOVE of the J2K study too (Orthanc proposes its own transfer syntax to our SCP).
    if let Some(j2k) = compressed.first() {
        let report = net::retrieve_move(
            &node,
            &RetrieveRequest::study(&info(j2k).study_instance_uid),
            LUCENT_AET,
            &mut move_store,
            &RetrieveOptions::default(),
            &mut ignore_progress(),
            &never(),
        )
        .unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert_identical_in_store(&move_store, std::slice::from_ref(j2k));
    }
    scp.shutdown();
    assert!(move_store.check_consistency().unwrap().is_consistent());

    // The same C-MOVE into an SCP that commits at release: every instance is in the store,
    // synced and indexed, by the time the C-MOVE's final response arrives.
    let batched_dir = work.path().join("store-move-batched");
    let mut batched_store = Store::open(&batched_dir).unwrap();
    scp_config.commit = ScpCommit::AtRelease;
    let (scp, events) = net::start_scp(&scp_config, &batched_dir).unwrap();
    let report = move_study(&node, &ct.study_instance_uid, &mut batched_store);
    assert!(report.is_complete(), "{report:?}");
    assert_eq!((report.expected, report.received), (Some(12), 12));
    assert_identical_in_store(&batched_store, &ct_files);
    scp.shutdown();
    let stored_events = events.try_iter().filter(|e| matches!(e, ScpEvent::Stored { new: true, .. })).count();
    assert_eq!(stored_events, 12);
    assert!(batched_store.check_consistency().unwrap().is_consistent());

    // C-STORE SCU: new synthetic instances (and a J2K file) to Orthanc, confirmed over REST.
    let (new_ct, new_cr) = synthetic_studies(&work.path().join("synth-send"), "store-scu", 4);
    let mut to_send = new_ct.clone();
    to_send.push(new_cr.clone());
    let mut sent_progress = 0;
    let report = net::store_files(&node, &to_send, &mut |_| sent_progress += 1, &never()).unwrap();
    assert_eq!((report.sent, report.failed.len()), (5, 0), "{report:?}");
    assert!(sent_progress >= 5);
    for f in &to_send {
        assert!(orthanc.has_instance(&info(f).sop_instance_uid), "{} not in Orthanc", f.display());
    }
    // ... and over DCMTK: findscu sees the study, getscu fetches the same instances.
    if let (Some(findscu), Some(getscu)) = (dcmtk("findscu"), dcmtk("getscu")) {
        let study_uid = info(&new_ct[0]).study_instance_uid;
        let out = Command::new(findscu)
            .env("TCP_NODELAY", "1")
            .args(["-S", "-aet", DCMTK_AET, "-aec", ORTHANC_AET, "-k", "QueryRetrieveLevel=STUDY"])
            .args(["-k", &format!("StudyInstanceUID={study_uid}"), "-k", "NumberOfStudyRelatedInstances"])
            .args(["127.0.0.1", &orthanc.dicom_port.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "findscu: {text}");
        assert!(text.contains(&study_uid), "findscu did not find the study: {text}");
        let od = work.path().join("getscu-out");
        std::fs::create_dir_all(&od).unwrap();
        let out = Command::new(getscu)
            .env("TCP_NODELAY", "1")
            .args(["-aet", DCMTK_AET, "-aec", ORTHANC_AET, "-od"])
            .arg(&od)
            .args(["-k", "QueryRetrieveLevel=STUDY", "-k", &format!("StudyInstanceUID={study_uid}")])
            .args(["127.0.0.1", &orthanc.dicom_port.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "getscu: {}", String::from_utf8_lossy(&out.stderr));
        let fetched: BTreeSet<String> =
            std::fs::read_dir(&od).unwrap().flatten().map(|e| info(&e.path()).sop_instance_uid).collect();
        let sent: BTreeSet<String> = new_ct.iter().map(|p| info(p).sop_instance_uid).collect();
        assert_eq!(fetched, sent);
    }
    // A compressed file goes in its own transfer syntax.
    if let Some(j2k) = compressed.get(1) {
        let report = net::store_files(&node, std::slice::from_ref(j2k), &mut ignore_progress(), &never()).unwrap();
        assert_eq!((report.sent, report.converted), (1, 0), "{report:?}");
    }
}

#[test]
fn dcmtk_pushes_into_lucent_scp_which_refuses_strangers_and_unsupported_classes() {
    let (Some(storescu), Some(echoscu)) = (dcmtk("storescu"), dcmtk("echoscu")) else { return };
    let work = tempfile::tempdir().unwrap();
    let (ct_files, cr_file) = synthetic_studies(&work.path().join("synth"), "scp-push", 6);
    let store_dir = work.path().join("store");
    let mut config = ScpConfig::new(LUCENT_AET, 0);
    config.bind_address = "127.0.0.1".parse().unwrap();
    config.allowed_calling_aes = vec![DCMTK_AET.into(), "LUCENT-SCU".into()];
    let (scp, events) = net::start_scp(&config, &store_dir).unwrap();
    let port = scp.local_addr().port().to_string();

    // echoscu and storescu from an allowed AE title.
    let echo =
        Command::new(&echoscu).args(["-aet", DCMTK_AET, "-aec", LUCENT_AET, "127.0.0.1", &port]).output().unwrap();
    assert!(echo.status.success(), "echoscu: {}", String::from_utf8_lossy(&echo.stderr));
    let mut files = ct_files.clone();
    files.push(cr_file.clone());
    let mut push = Command::new(&storescu);
    push.env("TCP_NODELAY", "1").args(["-aet", DCMTK_AET, "-aec", LUCENT_AET, "127.0.0.1", &port]).args(&files);
    let out = push.output().unwrap();
    assert!(out.status.success(), "storescu: {}", String::from_utf8_lossy(&out.stderr));
    let store = Store::open(&store_dir).unwrap();
    for f in &files {
        assert!(store.contains(&info(f).sop_instance_uid).unwrap(), "{} not stored", f.display());
    }
    assert_identical_in_store(&store, &files);
    let received: Vec<ScpEvent> = events.try_iter().collect();
    assert_eq!(received.iter().filter(|e| matches!(e, ScpEvent::Stored { new: true, .. })).count(), files.len());
    assert!(received.iter().any(|e| matches!(e, ScpEvent::Echo { .. })));
    // Compressed files keep their transfer syntax: storescu proposes it (one option per
    // transfer syntax), the SCP accepts it, the bytes land unchanged.
    if let Some(compressed) = compressed_files() {
        for file in &compressed {
            let option = match info(file).transfer_syntax_uid.as_str() {
                "1.2.840.10008.1.2.4.90" => "-xv",
                "1.2.840.10008.1.2.4.91" => "-xw",
                "1.2.840.10008.1.2.4.70" => "-xs",
                "1.2.840.10008.1.2.4.80" => "-xt",
                "1.2.840.10008.1.2.5" => "-xr",
                "1.2.840.10008.1.2.4.50" => "-xy",
                "1.2.840.10008.1.2.4.51" => "-xx",
                "1.2.840.10008.1.2.1.99" => "-xd",
                other => panic!("no storescu option for {other}"),
            };
            let out = Command::new(&storescu)
                .env("TCP_NODELAY", "1")
                .args([option, "-aet", DCMTK_AET, "-aec", LUCENT_AET, "127.0.0.1", &port])
                .arg(file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "storescu {option} {}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_identical_in_store(&store, &compressed);
    }

    // An unknown calling AE title is rejected at association.
    let out =
        Command::new(&echoscu).args(["-aet", "STRANGER", "-aec", LUCENT_AET, "127.0.0.1", &port]).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(text.contains("reject"), "echoscu from a stranger: {text}");
    let rejected = std::iter::from_fn(|| events.recv_timeout(Duration::from_secs(5)).ok())
        .find(|e| matches!(e, ScpEvent::Rejected { .. }))
        .expect("a Rejected event");
    assert!(matches!(&rejected, ScpEvent::Rejected { calling_ae, .. } if calling_ae == "STRANGER"), "{rejected:?}");
    // The wrong called AE title too, through Lucent's own echo.
    let lucent = PacsNode::new("self", LUCENT_AET, "127.0.0.1", scp.local_addr().port(), "LUCENT-SCU");
    assert!(net::echo(&lucent).is_ok());
    assert!(matches!(
        net::echo(&PacsNode { ae_title: "OTHER".into(), ..lucent.clone() }),
        EchoVerdict::AeRejected { .. }
    ));
    assert!(matches!(
        net::echo(&PacsNode { our_ae_title: "STRANGER".into(), ..lucent.clone() }),
        EchoVerdict::AeRejected { .. }
    ));

    // A SOP class that is not a storage class: its presentation context is refused, the file is
    // reported as failed, and the SCP keeps serving.
    let odd = work.path().join("odd.dcm");
    let mut bytes = std::fs::read(&cr_file).unwrap();
    let cr_class = b"1.2.840.10008.5.1.4.1.1.1\0";
    let odd_class = b"1.2.826.0.1.3680043.99.1\0\0";
    assert_eq!(cr_class.len(), odd_class.len());
    let mut replaced = 0;
    let mut i = 0;
    while i + cr_class.len() <= bytes.len() {
        if &bytes[i..i + cr_class.len()] == cr_class {
            bytes[i..i + cr_class.len()].copy_from_slice(odd_class);
            replaced += 1;
        }
        i += 1;
    }
    assert_eq!(replaced, 2, "meta and data set SOP Class UID");
    let odd_sop = info(&cr_file).sop_instance_uid;
    std::fs::write(&odd, &bytes).unwrap();
    // (A stored CR with the same SOP instance UID is already there; use a fresh store to be sure.)
    drop(store);
    let report =
        net::store_files(&lucent, &[odd.clone(), ct_files[0].clone()], &mut ignore_progress(), &never()).unwrap();
    assert_eq!(report.sent, 1, "{report:?}");
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].sop_instance_uid, odd_sop);
    assert!(report.failed[0].reason.contains("no presentation context"), "{}", report.failed[0].reason);
    assert!(net::echo(&lucent).is_ok(), "the SCP stopped serving");
    scp.shutdown();
    // After shutdown nothing listens.
    assert_eq!(net::echo(&lucent), EchoVerdict::Refused);
    let store = Store::open(&store_dir).unwrap();
    assert!(store.check_consistency().unwrap().is_consistent());
}

#[test]
fn orthanc_killed_mid_retrieve_leaves_a_consistent_store_and_a_retry_completes() {
    let work = tempfile::tempdir().unwrap();
    let Some(mut orthanc) = Orthanc::start(&[Modality::new("lucent", LUCENT_AET, free_port())]) else { return };
    let spec = CtSeriesSpec::chest("killed-mid-retrieve", 40, 256);
    let files = synth::write_ct_series(&work.path().join("ct"), &spec).unwrap();
    orthanc.upload(&files);
    let node = orthanc.node(LUCENT_AET);
    let study = info(&files[0]).study_instance_uid;
    let store_dir = work.path().join("store");
    let mut store = Store::open(&store_dir).unwrap();
    let pid = orthanc.pid().unwrap();
    let mut killed = false;
    let mut kill_at_ten = |p: &RetrieveProgress| {
        if p.done >= 10 && !killed {
            killed = true;
            Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
        }
    };
    let started = Instant::now();
    let err = net::retrieve_get(
        &node,
        &RetrieveRequest::study(&study),
        &mut store,
        &RetrieveOptions::default(),
        &mut kill_at_ten,
        &never(),
    )
    .expect_err("the retrieve must fail when the peer dies");
    assert!(killed);
    assert!(started.elapsed() < Duration::from_secs(10), "the failure took {:?}", started.elapsed());
    assert!(matches!(err, pacs::Error::ConnectionLost { .. } | pacs::Error::Network { .. }), "unexpected error: {err}");
    assert!(err.to_string().contains(&node.label()), "{err}");
    let report = store.check_consistency().unwrap();
    assert!(report.is_consistent(), "{report:?}");
    let partial = store.counts().unwrap().instances;
    assert!((10..40).contains(&partial), "{partial} instances kept");

    // The same storage, restarted: the retry fetches only what is missing.
    orthanc.restart();
    let report = get_study(&node, &study, &mut store);
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.already_present, partial);
    assert_eq!(report.received, 40 - partial);
    assert_identical_in_store(&store, &files);
    assert!(store.check_consistency().unwrap().is_consistent());
}

#[test]
fn cancel_stops_a_get_with_c_cancel_and_keeps_what_arrived() {
    let work = tempfile::tempdir().unwrap();
    let Some(orthanc) = Orthanc::start(&[Modality::new("lucent", LUCENT_AET, free_port())]) else { return };
    let spec = CtSeriesSpec::chest("cancelled-get", 30, 128);
    let files = synth::write_ct_series(&work.path().join("ct"), &spec).unwrap();
    orthanc.upload(&files);
    let node = orthanc.node(LUCENT_AET);
    let mut store = Store::open(&work.path().join("store")).unwrap();
    let cancel = AtomicBool::new(false);
    let mut cancel_at_five = |p: &RetrieveProgress| {
        if p.done >= 5 {
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    };
    let report = net::retrieve_get(
        &node,
        &RetrieveRequest::study(&info(&files[0]).study_instance_uid),
        &mut store,
        &RetrieveOptions::default(),
        &mut cancel_at_five,
        &cancel,
    )
    .unwrap();
    assert!(report.cancelled);
    assert!(report.received >= 5 && report.received < 30, "{report:?}");
    assert_eq!(report.missing.len(), 30 - report.received);
    assert_eq!(store.counts().unwrap().instances, report.received);
    assert!(store.check_consistency().unwrap().is_consistent());
}

/// `node` over TLS, trusting `ca`, presenting `client` when given.
fn over_tls(mut node: PacsNode, ca: &Path, client: Option<&Issued>) -> PacsNode {
    node.tls = true;
    node.tls_ca_file = Some(ca.to_path_buf());
    node.tls_cert_file = client.map(|c| c.cert_file.clone());
    node.tls_key_file = client.map(|c| c.key_file.clone());
    node
}

/// Lucent's Store SCP on a free loopback port, TLS only with `server`'s certificate.
fn tls_scp_config(port: u16, server: &Issued, client_ca: Option<&Path>, allowed: &[&str]) -> ScpConfig {
    let mut config = ScpConfig::new(LUCENT_AET, port);
    config.bind_address = "127.0.0.1".parse().unwrap();
    config.allowed_calling_aes = allowed.iter().map(|a| (*a).to_owned()).collect();
    config.tls_cert_file = Some(server.cert_file.clone());
    config.tls_key_file = Some(server.key_file.clone());
    config.tls_client_ca_file = client_ca.map(Path::to_path_buf);
    config
}

#[test]
fn dicom_tls_echo_find_get_move_and_store_against_orthanc() {
    let work = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&work.path().join("pki"), "hospital");
    let orthanc_cert = ca.issue("orthanc");
    let lucent_cert = ca.issue("lucent");
    let scp_port = free_port();
    // Orthanc requires a client certificate from its peers (mutual TLS), and delivers C-MOVEs to
    // Lucent's SCP over TLS too.
    let tls = OrthancTls {
        certificate: orthanc_cert.cert_file.clone(),
        private_key: orthanc_cert.key_file.clone(),
        trusted: ca.cert_file.clone(),
        remote_certificate_required: true,
    };
    let Some(orthanc) = Orthanc::start_with_tls(&[Modality::new("lucent", LUCENT_AET, scp_port).with_tls()], &tls)
    else {
        return;
    };
    let (ct_files, cr_file) = synthetic_studies(&work.path().join("synth"), "tls", 6);
    let mut uploaded = ct_files.clone();
    uploaded.push(cr_file.clone());
    orthanc.upload(&uploaded);
    let node = over_tls(orthanc.node(LUCENT_AET), &ca.cert_file, Some(&lucent_cert));
    let ct = info(&ct_files[0]);
    let cr = info(&cr_file);

    // C-ECHO over TLS.
    let verdict = net::echo(&node);
    assert!(verdict.is_ok(), "C-ECHO over TLS: {verdict}");

    // C-FIND over TLS finds the uploaded studies.
    let studies = net::find_studies(&node, &FindQuery::default(), &never()).unwrap();
    let uids: BTreeSet<_> = studies.iter().map(|s| s.study_uid.clone()).collect();
    assert_eq!(uids, BTreeSet::from([ct.study_instance_uid.clone(), cr.study_instance_uid.clone()]));
    let row = studies.iter().find(|s| s.study_uid == ct.study_instance_uid).unwrap();
    assert_eq!(row.instance_count, Some(6));

    // C-GET over TLS into a fresh store.
    let mut store = Store::open(&work.path().join("store-get")).unwrap();
    let report = get_study(&node, &ct.study_instance_uid, &mut store);
    assert!(report.is_complete(), "{report:?}");
    assert_eq!((report.expected, report.received, report.stored), (Some(6), 6, 6));
    assert_eq!(store.counts().unwrap().instances, 6);
    assert_identical_in_store(&store, &ct_files);
    assert!(store.check_consistency().unwrap().is_consistent());

    // C-MOVE over TLS to Lucent's own Store SCP, itself TLS only and requiring Orthanc's
    // client certificate.
    let move_dir = work.path().join("store-move");
    let mut move_store = Store::open(&move_dir).unwrap();
    let config = tls_scp_config(scp_port, &lucent_cert, Some(&ca.cert_file), &[ORTHANC_AET]);
    let (scp, events) = net::start_scp(&config, &move_dir).unwrap();
    let report = net::retrieve_move(
        &node,
        &RetrieveRequest::study(&cr.study_instance_uid),
        LUCENT_AET,
        &mut move_store,
        &RetrieveOptions::default(),
        &mut ignore_progress(),
        &never(),
    )
    .unwrap();
    assert!(report.is_complete(), "C-MOVE over TLS: {report:?}");
    assert_eq!((report.expected, report.received), (Some(1), 1));
    assert_identical_in_store(&move_store, std::slice::from_ref(&cr_file));
    let received: Vec<ScpEvent> = events.try_iter().collect();
    assert_eq!(received.iter().filter(|e| matches!(e, ScpEvent::Stored { new: true, .. })).count(), 1, "{received:?}");
    scp.shutdown();

    // C-STORE SCU over TLS.
    let (new_ct, _) = synthetic_studies(&work.path().join("synth-send"), "tls-store", 2);
    let report = net::store_files(&node, &new_ct, &mut ignore_progress(), &never()).unwrap();
    assert_eq!((report.sent, report.failed.len()), (2, 0), "{report:?}");
    for f in &new_ct {
        assert!(orthanc.has_instance(&info(f).sop_instance_uid), "{} not in Orthanc", f.display());
    }

    // Without our client certificate, Orthanc (which requires one) refuses us, naming TLS.
    let anonymous = over_tls(orthanc.node(LUCENT_AET), &ca.cert_file, None);
    let err = net::find_studies(&anonymous, &FindQuery::default(), &never()).unwrap_err();
    assert!(
        matches!(err, pacs::Error::Tls { .. } | pacs::Error::ConnectionLost { .. }),
        "no client certificate: {err}"
    );
    assert!(err.to_string().contains(&anonymous.label()), "{err}");
}

#[test]
fn dicom_tls_untrusted_certificates_and_tls_plain_mismatches_fail_clearly() {
    let work = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&work.path().join("pki"), "hospital");
    let other_ca = TestCa::new(&work.path().join("pki-other"), "elsewhere");
    let server = ca.issue("server");
    let client = ca.issue("client");
    let stranger = other_ca.issue("stranger");

    // Lucent's own TLS SCP, requiring client certificates from the hospital CA.
    let store_dir = work.path().join("store");
    let config = tls_scp_config(0, &server, Some(&ca.cert_file), &["LUCENT-SCU"]);
    let (scp, events) = net::start_scp(&config, &store_dir).unwrap();
    let port = scp.local_addr().port();
    let lucent = PacsNode::new("self", LUCENT_AET, "127.0.0.1", port, "LUCENT-SCU");
    let good = over_tls(lucent.clone(), &ca.cert_file, Some(&client));
    assert!(net::echo(&good).is_ok(), "{}", net::echo(&good));
    // C-STORE over TLS into our SCP.
    let (ct_files, _) = synthetic_studies(&work.path().join("synth"), "tls-scp", 3);
    let report = net::store_files(&good, &ct_files, &mut ignore_progress(), &never()).unwrap();
    assert_eq!((report.sent, report.failed.len()), (3, 0), "{report:?}");
    assert_identical_in_store(&Store::open(&store_dir).unwrap(), &ct_files);

    // A client trusting another CA refuses the server: a TLS error naming the peer.
    let untrusting = over_tls(lucent.clone(), &other_ca.cert_file, Some(&client));
    let started = Instant::now();
    let err = net::find_studies(&untrusting, &FindQuery::default(), &never()).unwrap_err();
    assert!(matches!(err, pacs::Error::Tls { .. }), "untrusted server: {err}");
    let text = err.to_string();
    eprintln!("client trusting another CA: {text}");
    assert!(text.contains("TLS") && text.contains(&untrusting.label()), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let verdict = net::echo(&untrusting);
    assert!(matches!(&verdict, EchoVerdict::Failed { detail } if detail.contains("TLS")), "{verdict}");
    // A client certificate from another CA is refused by the SCP.
    let foreign = over_tls(lucent.clone(), &ca.cert_file, Some(&stranger));
    let err = net::find_studies(&foreign, &FindQuery::default(), &never()).unwrap_err();
    assert!(matches!(err, pacs::Error::Tls { .. } | pacs::Error::ConnectionLost { .. }), "foreign client: {err}");
    // A plain client on the TLS port fails at once (no hang) and the SCP says why.
    let mut plain = lucent.clone();
    plain.dimse_timeout_s = 3.0;
    let started = Instant::now();
    let verdict = net::echo(&plain);
    assert!(!verdict.is_ok(), "{verdict}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let rejected = std::iter::from_fn(|| events.recv_timeout(Duration::from_secs(5)).ok())
        .find_map(|e| match e {
            ScpEvent::Rejected { reason, .. } if reason.contains("did not start a TLS handshake") => Some(reason),
            _ => None,
        })
        .expect("a Rejected event for the plain client");
    assert!(rejected.contains("TLS"), "{rejected}");
    // A client that connects and says nothing does not hold the SCP beyond its timeout, and the
    // SCP keeps serving TLS clients meanwhile.
    let silent = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert!(net::echo(&good).is_ok());
    drop(silent);
    // Closing before any handshake byte leaves no spinning thread behind: shutdown returns.
    drop(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    scp.shutdown();
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());

    // A TLS client against a plain SCP: a TLS error, quickly.
    let plain_dir = work.path().join("store-plain");
    let mut plain_config = ScpConfig::new(LUCENT_AET, 0);
    plain_config.bind_address = "127.0.0.1".parse().unwrap();
    let (plain_scp, _plain_events) = net::start_scp(&plain_config, &plain_dir).unwrap();
    let mut tls_to_plain = over_tls(
        PacsNode::new("plain", LUCENT_AET, "127.0.0.1", plain_scp.local_addr().port(), "LUCENT-SCU"),
        &ca.cert_file,
        None,
    );
    tls_to_plain.dimse_timeout_s = 3.0;
    let started = Instant::now();
    let err = net::find_studies(&tls_to_plain, &FindQuery::default(), &never()).unwrap_err();
    assert!(matches!(err, pacs::Error::Tls { .. }), "TLS to a plain SCP: {err}");
    assert!(err.to_string().contains(&tls_to_plain.label()), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    // Clients that close before their first message is whole (nothing, or half an A-ASSOCIATE-RQ)
    // leave no thread behind: shutdown returns at once.
    drop(std::net::TcpStream::connect(plain_scp.local_addr()).unwrap());
    let mut half = std::net::TcpStream::connect(plain_scp.local_addr()).unwrap();
    std::io::Write::write_all(&mut half, &[0x01, 0x00, 0x00, 0x00, 0x00, 0x44, 0x00, 0x01]).unwrap();
    drop(half);
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    plain_scp.shutdown();
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());

    // Against Orthanc's TLS port: a client trusting another CA, and a plain client.
    let tls = OrthancTls {
        certificate: server.cert_file.clone(),
        private_key: server.key_file.clone(),
        trusted: ca.cert_file.clone(),
        remote_certificate_required: false,
    };
    let Some(orthanc) = Orthanc::start_with_tls(&[Modality::new("lucent", LUCENT_AET, 1)], &tls) else { return };
    let trusting = over_tls(orthanc.node(LUCENT_AET), &ca.cert_file, None);
    assert!(net::echo(&trusting).is_ok(), "{}", net::echo(&trusting));
    let untrusting = over_tls(orthanc.node(LUCENT_AET), &other_ca.cert_file, None);
    let started = Instant::now();
    let err = net::find_studies(&untrusting, &FindQuery::default(), &never()).unwrap_err();
    assert!(matches!(err, pacs::Error::Tls { .. }), "untrusted Orthanc: {err}");
    let text = err.to_string();
    assert!(text.contains("TLS") && text.contains(&format!("127.0.0.1:{}", orthanc.dicom_port)), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let mut plain = orthanc.node(LUCENT_AET);
    plain.dimse_timeout_s = 3.0;
    let started = Instant::now();
    let verdict = net::echo(&plain);
    assert!(!verdict.is_ok(), "plain C-ECHO on a TLS port: {verdict}");
    assert!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());
    eprintln!("plain client on Orthanc's TLS port: {verdict}");
}
