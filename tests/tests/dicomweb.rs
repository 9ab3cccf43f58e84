//! DICOMweb (QIDO-RS, WADO-RS, STOW-RS) against a real Orthanc 1.10 with its DICOMweb plugin,
//! started here on free loopback ports (see `common::orthanc`), plus dead and silent servers.
//!
//! Tests skip (with a message) without Orthanc unless `LUCENT_REQUIRE_TEST_DATA=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::orthanc::Orthanc;
use pacs::dicomweb::{DicomWebClient, WebNode};
use pacs::net::FindQuery;
use pacs::store::Store;
use pacs::synth::{self, CtSeriesSpec, RadiographSpec};

fn web_node(orthanc: &Orthanc) -> WebNode {
    let mut node = WebNode::new("orthanc-web", &format!("http://127.0.0.1:{}/dicom-web", orthanc.http_port));
    node.timeout_s = 20.0;
    node
}

fn never() -> AtomicBool {
    AtomicBool::new(false)
}

/// A CT series (2026, patient `WEB^CT`) and a CR (2025, patient `WEB^CR`).
fn studies(dir: &std::path::Path) -> (Vec<PathBuf>, PathBuf) {
    let mut ct = CtSeriesSpec::chest("web-ct", 12, 64);
    ct.patient.name = "WEB^CT".into();
    ct.patient.id = "WEB-1".into();
    let ct_files = synth::write_ct_series(&dir.join("ct"), &ct).unwrap();
    let mut cr = RadiographSpec::chest("web-cr", 96);
    cr.patient.name = "WEB^CR".into();
    cr.patient.id = "WEB-2".into();
    cr.patient.study_date = "20250315".into();
    let cr_file = dir.join("cr.dcm");
    synth::write_radiograph(&cr_file, &cr).unwrap();
    (ct_files, cr_file)
}

/// Orthanc holding the CT study of [`studies`], a client for it, the study as QIDO-RS finds it
/// and an empty local store (in `temp`). `None` (skip) without Orthanc.
struct CtInOrthanc {
    // Bind these (not `..`) in tests: Orthanc stops and the folder goes when they drop.
    _orthanc: Orthanc,
    _temp: tempfile::TempDir,
    client: DicomWebClient,
    study: pacs::net::StudyMatch,
    store: Store,
}

fn ct_in_orthanc() -> Option<CtInOrthanc> {
    let orthanc = Orthanc::start(&[])?;
    let temp = tempfile::tempdir().unwrap();
    let (ct, _) = studies(temp.path());
    orthanc.upload(&ct);
    let client = DicomWebClient::new(&web_node(&orthanc)).unwrap();
    let study = client.search_studies(&FindQuery::default()).unwrap().remove(0);
    let store = Store::open(&temp.path().join("store")).unwrap();
    Some(CtInOrthanc { _orthanc: orthanc, _temp: temp, client, study, store })
}

#[test]
fn qido_searches_by_name_wildcard_date_range_and_modality() {
    let Some(orthanc) = Orthanc::start(&[]) else { return };
    let temp = tempfile::tempdir().unwrap();
    let (ct, cr) = studies(temp.path());
    orthanc.upload(&ct);
    orthanc.upload(std::slice::from_ref(&cr));
    let client = DicomWebClient::new(&web_node(&orthanc)).unwrap();

    let all = client.search_studies(&FindQuery::default()).unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    let by_name = client.search_studies(&FindQuery { patient_name: "WEB^C*".into(), ..FindQuery::default() }).unwrap();
    assert_eq!(by_name.len(), 2);
    let ct_only = client.search_studies(&FindQuery { patient_name: "WEB^CT".into(), ..FindQuery::default() }).unwrap();
    assert_eq!(ct_only.len(), 1);
    assert_eq!(ct_only[0].patient_id, "WEB-1");
    assert_eq!(ct_only[0].modalities, vec!["CT".to_owned()]);
    assert_eq!(ct_only[0].instance_count, Some(12));
    let in_2025 = client
        .search_studies(&FindQuery {
            study_date_from: "20250101".into(),
            study_date_to: "20251231".into(),
            ..FindQuery::default()
        })
        .unwrap();
    assert_eq!(in_2025.iter().map(|s| s.patient_name.as_str()).collect::<Vec<_>>(), vec!["WEB^CR"]);
    let cr_by_modality = client.search_studies(&FindQuery { modality: "CR".into(), ..FindQuery::default() }).unwrap();
    assert_eq!(cr_by_modality.len(), 1);
    assert_eq!(cr_by_modality[0].patient_id, "WEB-2");

    let series =
        client.search_series(&FindQuery { study_uid: ct_only[0].study_uid.clone(), ..FindQuery::default() }).unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].modality, "CT");
    assert_eq!(series[0].instance_count, Some(12));
    let instances = client.search_instances(&series[0].study_uid, &series[0].series_uid).unwrap();
    assert_eq!(instances.len(), 12);
}

#[test]
fn wado_rs_retrieves_studies_as_stored_including_jpeg_2000() {
    let Some(orthanc) = Orthanc::start(&[]) else { return };
    let temp = tempfile::tempdir().unwrap();
    let (ct, cr) = studies(temp.path());
    let mut sources = ct.clone();
    sources.push(cr);
    // Compressed real files (Orthanc 1.10 cannot transcode JPEG 2000: `transfer-syntax=*` is needed).
    if let Some(compressed) = common::compressed_files() {
        sources.extend(compressed);
    }
    orthanc.upload(&sources);
    let client = DicomWebClient::new(&web_node(&orthanc)).unwrap();
    let mut store = Store::open(&temp.path().join("store")).unwrap();
    let mut calls = 0;
    let mut total = 0;
    for study in client.search_studies(&FindQuery::default()).unwrap() {
        let summary = client.retrieve(&study.study_uid, None, &mut store, &mut |_| calls += 1, &never()).unwrap();
        assert!(summary.rejected.is_empty(), "{:?}", summary.rejected);
        assert_eq!(summary.received, summary.added);
        total += summary.received;
    }
    assert_eq!(total, sources.len());
    assert!(calls >= sources.len());
    common::assert_identical_in_store(&store, &sources);
    assert!(store.check_consistency().unwrap().is_consistent());

    // Again: everything is already there; nothing new is indexed.
    let study = client.search_studies(&FindQuery { patient_name: "WEB^CT".into(), ..FindQuery::default() }).unwrap();
    let again = client.retrieve(&study[0].study_uid, None, &mut store, &mut |_| {}, &never()).unwrap();
    assert_eq!((again.received, again.added), (12, 0));
}

#[test]
fn wado_rs_retrieves_one_series() {
    let Some(CtInOrthanc { client, study, mut store, _orthanc, _temp }) = ct_in_orthanc() else { return };
    let series =
        &client.search_series(&FindQuery { study_uid: study.study_uid.clone(), ..FindQuery::default() }).unwrap()[0];
    let s = client.retrieve(&study.study_uid, Some(&series.series_uid), &mut store, &mut |_| {}, &never()).unwrap();
    assert_eq!(s.received, 12);
    assert_eq!(store.instances(&series.series_uid).unwrap().len(), 12);
}

#[test]
fn stow_rs_uploads_and_orthanc_has_every_instance() {
    let Some(orthanc) = Orthanc::start(&[]) else { return };
    let temp = tempfile::tempdir().unwrap();
    let (ct, cr) = studies(temp.path());
    let mut files = ct;
    files.push(cr);
    let client = DicomWebClient::new(&web_node(&orthanc)).unwrap();
    let mut reports = 0;
    let summary = client.store(&files, &mut |_| reports += 1, &never()).unwrap();
    assert_eq!(summary.stored, files.len(), "{summary:?}");
    assert!(summary.failed.is_empty());
    assert!(reports >= 1);
    for f in &files {
        let sop = pacs::file::read_info(f).unwrap().sop_instance_uid;
        assert!(orthanc.has_instance(&sop), "{sop} is not in Orthanc");
    }
}

#[test]
fn cancel_stops_a_retrieve_and_keeps_what_arrived_whole() {
    let Some(CtInOrthanc { client, study, mut store, _orthanc, _temp }) = ct_in_orthanc() else { return };
    let cancel = AtomicBool::new(false);
    let err = client
        .retrieve(
            &study.study_uid,
            None,
            &mut store,
            &mut |p| {
                if p.instances_done == 5 {
                    cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            },
            &cancel,
        )
        .unwrap_err();
    assert!(matches!(err, pacs::Error::Cancelled), "{err}");
    assert!(store.check_consistency().unwrap().is_consistent());
    let kept = store
        .series(&study.study_uid)
        .unwrap()
        .iter()
        .map(|s| store.instances(&s.series_uid).unwrap().len())
        .sum::<usize>();
    assert_eq!(kept, 5);
    // The retry brings the rest.
    let again = client.retrieve(&study.study_uid, None, &mut store, &mut |_| {}, &never()).unwrap();
    assert_eq!(again.added, 7);
}

#[test]
fn dead_and_silent_servers_give_clear_errors() {
    // Nothing listens. A free port can be taken by an Orthanc another test starts meanwhile: then
    // try another one (a refusal must come within a few tries).
    let refused = (0..5).find_map(|_| {
        let port = common::orthanc::free_port();
        let client = DicomWebClient::new(&WebNode::new("dead", &format!("http://127.0.0.1:{port}/dicom-web"))).unwrap();
        let err = client.search_studies(&FindQuery::default()).unwrap_err();
        matches!(err, pacs::Error::ConnectionRefused { .. }).then_some((port, err))
    });
    let (port, err) = refused.expect("a port nobody listens on refuses the connection");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");

    // Accepts, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _hold = std::thread::Builder::new()
        .name("silent-server".into())
        .spawn(move || {
            let conns: Vec<_> = listener.incoming().take(1).collect();
            std::thread::sleep(Duration::from_secs(5));
            drop(conns);
        })
        .unwrap();
    let mut node = WebNode::new("silent", &format!("http://{addr}/dicom-web"));
    node.timeout_s = 1.0;
    let started = Instant::now();
    let err = DicomWebClient::new(&node)
        .unwrap()
        .search_studies(&FindQuery { patient_name: "SECRET^NAME".into(), ..FindQuery::default() })
        .unwrap_err();
    assert!(matches!(err, pacs::Error::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    // Messages name the server, never the query (which may hold a patient's name).
    assert!(!err.to_string().contains("SECRET"), "{err}");

    // A URL that is not http(s).
    assert!(DicomWebClient::new(&WebNode::new("bad", "ftp://x")).is_err());
}

#[test]
fn wrong_base_url_is_a_clear_http_error() {
    let Some(orthanc) = Orthanc::start(&[]) else { return };
    let node = WebNode::new("typo", &format!("http://127.0.0.1:{}/dicomweb-typo", orthanc.http_port));
    let err = DicomWebClient::new(&node).unwrap().search_studies(&FindQuery::default()).unwrap_err();
    assert!(err.to_string().contains("HTTP 404"), "{err}");
}
