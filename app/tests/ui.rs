//! UI snapshot tests: the real `LucentApp` in egui_kittest, rendered with wgpu on whatever
//! adapter is present (Mesa lavapipe in CI). The harness goes through `LucentApp::new`, which
//! registers the same `callback_resources` as the app, so the GPU-drawn image is in the snapshot.
//!
//! `UPDATE_SNAPSHOTS=1 cargo test -p lucent --test ui` rewrites the PNGs under `tests/snapshots/`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use lucent_app::gui::LucentApp;
use lucent_app::gui::i18n::Lang;
use pacs::pixels::Window;
use pacs::store::{Store, StudyQuery};
use pacs::synth::{self, CtSeriesSpec, Nodule, NoduleKind, PatientSpec, RadiographSpec};

/// A store with one small CT (with a nodule) and one MONOCHROME1 radiograph; returns (CT, CR) series UIDs.
fn sample_store(root: &Path) -> (String, String) {
    let src = root.join("src");
    let mut ct = CtSeriesSpec { noise_hu: 8.0, ..CtSeriesSpec::chest("ui-ct", 16, 160) };
    ct.origin_mm[2] = -180.0;
    ct.patient = PatientSpec::new("TEST^CT", "UI-1", "ui-ct");
    ct.nodules = vec![Nodule { center_mm: [70.0, -20.0, -160.0], diameter_mm: 14.0, kind: NoduleKind::Solid }];
    synth::write_ct_series(&src.join("ct"), &ct).unwrap();
    let cr = RadiographSpec {
        monochrome1: true,
        patient: PatientSpec { study_date: "20260101".into(), ..PatientSpec::new("TEST^CR", "UI-2", "ui-cr") },
        ..RadiographSpec::chest("ui-cr", 256)
    };
    synth::write_radiograph(&src.join("cr/1.dcm"), &cr).unwrap();
    let mut store = Store::open(&root.join("store")).unwrap();
    let cancel = AtomicBool::new(false);
    pacs::import::import_paths(&mut store, &[src], &Default::default(), &|_| {}, &cancel).unwrap();
    let studies = store.studies(&StudyQuery::default()).unwrap();
    let uid_of = |modality: &str| {
        let study = studies.iter().find(|s| s.modalities == modality).unwrap();
        store.series(&study.study_uid).unwrap()[0].series_uid.clone()
    };
    (uid_of("CT"), uid_of("CR"))
}

/// Whether ONNX Runtime is there (a test without it skips, unless the test data is required).
fn have_runtime() -> bool {
    if inference::runtime::runtime().is_ok() {
        return true;
    }
    assert!(std::env::var("LUCENT_REQUIRE_TEST_DATA").is_err(), "ONNX Runtime is missing: run cargo xtask setup");
    eprintln!("SKIP: ONNX Runtime is not installed");
    false
}

/// The app keeps settings, PACS nodes and exports in its data folder: for these tests, a fresh one
/// for the whole test process instead of the user's (`XDG_DATA_HOME`, set once before any app).
fn isolated_data_dir() {
    static DATA: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DATA.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY of intent: set once, before any app or worker thread reads it.
        unsafe { std::env::set_var("XDG_DATA_HOME", dir.path()) };
        dir
    });
}

fn harness(store_dir: &Path) -> Harness<'static, LucentApp> {
    isolated_data_dir();
    let dir = store_dir.to_path_buf();
    let mut h = Harness::builder()
        .with_size(egui::vec2(860.0, 520.0))
        .wgpu()
        .build_eframe(move |cc| LucentApp::new(cc, dir, false).unwrap());
    // The bundled CXR model would otherwise run (asynchronously) whenever a radiograph opens and
    // land in snapshots at an unpredictable frame; the AI test turns it back on.
    h.state_mut().ai.auto_run = false;
    h
}

/// A snapshot of a window that shows clock times, a free port or a transfer speed: those few words
/// differ from run to run, so up to 3000 pixels may differ (a changed layout moves far more).
fn snapshot_with_live_text(h: &mut Harness<'static, LucentApp>, name: &str) {
    h.snapshot_options(name, &egui_kittest::SnapshotOptions::new().max_failed_pixels(3000));
}

/// Steps the UI until `ready` holds (the loader works on its own threads).
fn wait_until(h: &mut Harness<'static, LucentApp>, ready: impl Fn(&LucentApp) -> bool) {
    let started = Instant::now();
    while !ready(h.state()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for the UI (status: {:?}, AI: {:?}, running {:?}, read {:?})",
            h.state().status,
            h.state().ai.unavailable,
            h.state().ai.running,
            h.state().ai.readings.keys().collect::<Vec<_>>(),
        );
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    h.run_steps(3);
}

fn open(h: &mut Harness<'static, LucentApp>, series_uid: &str) {
    h.state_mut().layout = (1, 1);
    h.state_mut().request_open(series_uid.to_owned(), 0);
    wait_until(h, |app| {
        app.viewports[0].series.as_ref().is_some_and(|s| s.decoded() == s.len())
            && app.viewports[0].current_slice().is_some()
    });
}

#[test]
fn ct_slice_at_lung_and_mediastinal_windows() {
    let root = tempfile::tempdir().unwrap();
    let (ct, _) = sample_store(root.path());
    let mut h = harness(&root.path().join("store"));
    open(&mut h, &ct);
    let slice = h.state().viewports[0].current_slice().unwrap();
    assert_eq!(slice.transform.unit, "HU");
    // The nodule's centre slice holds soft-tissue HU inside the lung.
    assert!(h.state().viewports[0].series.as_ref().unwrap().len() == 16);

    h.state_mut().viewports[0].window = Some(Window::new(-600.0, 1500.0));
    h.run_steps(3);
    h.snapshot("ct_lung_window");
    h.state_mut().viewports[0].window = Some(Window::new(40.0, 350.0));
    h.run_steps(3);
    h.snapshot("ct_mediastinal_window");
}

#[test]
fn monochrome1_radiograph_is_shown_inverted() {
    let root = tempfile::tempdir().unwrap();
    let (_, cr) = sample_store(root.path());
    let mut h = harness(&root.path().join("store"));
    open(&mut h, &cr);
    let slice = h.state().viewports[0].current_slice().unwrap();
    assert_eq!(slice.info.photometric_interpretation, "MONOCHROME1");
    assert!(slice.transform.inverts_for_display());
    h.snapshot("cr_monochrome1");
}

#[test]
fn korean_ui() {
    let root = tempfile::tempdir().unwrap();
    let (ct, _) = sample_store(root.path());
    let mut h = harness(&root.path().join("store"));
    h.state_mut().lang = Lang::Ko;
    open(&mut h, &ct);
    wait_until(&mut h, |app| app.browser.studies.len() == 2);
    assert!(h.query_by_label("검사 목록").is_some(), "the browser heading is in Korean");
    assert!(h.query_by_label("반전").is_some(), "the invert button is in Korean");
    h.snapshot("korean_ui");
}

#[test]
fn mpr_triple_with_a_thick_slab() {
    let root = tempfile::tempdir().unwrap();
    let (ct, _) = sample_store(root.path());
    let mut h = harness(&root.path().join("store"));
    open(&mut h, &ct);
    h.state_mut().open_mpr();
    wait_until(&mut h, |app| app.viewports.iter().all(|v| v.mpr_image.is_some()));
    let planes: Vec<_> = h.state().viewports.iter().map(|v| v.mpr.unwrap().plane).collect();
    use lucent_app::gui::mpr::Plane;
    assert_eq!(planes, vec![Plane::Axial, Plane::Coronal, Plane::Sagittal, Plane::Axial]);
    let coronal = h.state().viewports[1].current_slice().unwrap();
    assert_eq!((coronal.width, coronal.height), (160, 16));
    assert_eq!(h.state().viewports[3].mpr.unwrap().slab_mm, 10.0);
    for vp in &mut h.state_mut().viewports {
        vp.window = Some(Window::new(-600.0, 1500.0));
    }
    h.run_steps(3);
    h.snapshot("mpr_triple");
}

#[test]
fn measurements_are_drawn_computed_and_kept_in_the_store() {
    use lucent_app::gui::measure::Tool;
    let root = tempfile::tempdir().unwrap();
    let (ct, _) = sample_store(root.path());
    let store_dir = root.path().join("store");
    let mut h = harness(&store_dir);
    open(&mut h, &ct);
    let slice = h.state().viewports[0].current_slice().unwrap();
    let study = slice.info.study_instance_uid.clone();
    wait_until(&mut h, |app| app.measurements.contains_key(&study));

    // Draw a length with the mouse across the middle of the viewport.
    h.state_mut().tool = Tool::Length;
    let (a, b) = (egui::pos2(520.0, 330.0), egui::pos2(640.0, 330.0));
    h.hover_at(a);
    h.step();
    h.drag_at(a);
    h.step();
    for t in 1..=6 {
        h.hover_at(a + (b - a) * (t as f32 / 6.0));
        h.step();
    }
    h.drop_at(b);
    h.run_steps(3);
    let items = h.state().measurements[&study].items.clone();
    assert_eq!(items.len(), 1, "one length drawn");
    assert_eq!(items[0].kind, "length");
    let (mm, calibrated) = lucent_app::gui::measure::length(&slice, items[0].points[0], items[0].points[1]);
    assert_eq!(calibrated, Some(true));
    assert!(mm > 20.0, "a 120-point drag spans {mm} mm");

    // An ellipse ROI inside the 14 mm solid nodule (centre pixel 112, 70.9 on this slice): soft tissue HU.
    let nodule = pacs::store::MeasurementRecord {
        series_uid: slice.info.series_instance_uid.clone(),
        sop_uid: slice.info.sop_instance_uid.clone(),
        frame: 0,
        kind: "ellipse".into(),
        points: vec![[110.0, 68.9], [114.0, 72.9]],
    };
    let stats = lucent_app::gui::measure::roi_stats(&slice, true, nodule.points[0], nodule.points[1]).unwrap();
    assert!((stats.mean - 30.0).abs() < 6.0, "nodule mean {} HU", stats.mean);
    h.state_mut().measurements.get_mut(&study).unwrap().add(nodule);
    h.state_mut().tool = Tool::WindowLevel;
    h.state_mut().viewports[0].window = Some(Window::new(40.0, 350.0));
    h.run_steps(3);
    h.snapshot("measurements");

    // Saved by the store thread.
    let started = Instant::now();
    loop {
        let kept = Store::open(&store_dir).unwrap().measurements(&study).unwrap();
        if kept.len() == 2 {
            assert_eq!(kept[1].kind, "ellipse");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "measurements were not saved");
        h.step();
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn stacks_of_one_frame_of_reference_scroll_together() {
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("src");
    let thin = CtSeriesSpec { noise_hu: 0.0, ..CtSeriesSpec::chest("sync", 16, 64) };
    let thick = CtSeriesSpec {
        slices: 8,
        slice_spacing_mm: 5.0,
        slice_thickness_mm: 5.0,
        series_number: 3,
        frame_of_reference_uid: Some(synth::uid(&format!("for:{}", thin.patient.study_uid))),
        ..CtSeriesSpec { seed: "sync-thick".into(), patient: thin.patient.clone(), ..thin.clone() }
    };
    synth::write_ct_series(&src.join("thin"), &thin).unwrap();
    synth::write_ct_series(&src.join("thick"), &thick).unwrap();
    let mut store = Store::open(&root.path().join("store")).unwrap();
    pacs::import::import_paths(&mut store, &[src], &Default::default(), &|_| {}, &AtomicBool::new(false)).unwrap();
    let mut h = harness(&root.path().join("store"));
    h.state_mut().request_open(thin.series_uid(), 0);
    h.state_mut().request_open(thick.series_uid(), 1);
    wait_until(&mut h, |app| {
        app.viewports[..2].iter().all(|v| v.series.as_ref().is_some_and(|s| s.decoded() == s.len()))
    });
    h.state_mut().active = 0;
    for _ in 0..4 {
        h.key_press(egui::Key::ArrowDown);
        h.run_steps(2);
    }
    let app = h.state();
    assert_eq!(app.viewports[0].slice, 12);
    let z_thin = app.viewports[0].series.as_ref().unwrap().plan.slice_positions_mm[12];
    let thick_series = app.viewports[1].series.as_ref().unwrap();
    let z_thick = thick_series.plan.slice_positions_mm[app.viewports[1].slice];
    assert!((z_thin - z_thick).abs() <= 2.5, "thin at {z_thin} mm, thick at {z_thick} mm");
}

#[test]
fn hanging_protocols_lay_out_a_cxr_with_its_prior_and_a_ct_in_two_windows() {
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("src");
    let patient =
        |seed: &str, date: &str| PatientSpec { study_date: date.into(), ..PatientSpec::new("HANG^ING", "H-1", seed) };
    let current = RadiographSpec { patient: patient("hang-now", "20260301"), ..RadiographSpec::chest("hang-now", 64) };
    let prior = RadiographSpec { patient: patient("hang-then", "20250301"), ..RadiographSpec::chest("hang-then", 64) };
    synth::write_radiograph(&src.join("now.dcm"), &current).unwrap();
    synth::write_radiograph(&src.join("then.dcm"), &prior).unwrap();
    let ct = CtSeriesSpec { noise_hu: 0.0, ..CtSeriesSpec::chest("hang-ct", 6, 32) };
    synth::write_ct_series(&src.join("ct"), &ct).unwrap();
    let mut store = Store::open(&root.path().join("store")).unwrap();
    pacs::import::import_paths(&mut store, &[src], &Default::default(), &|_| {}, &AtomicBool::new(false)).unwrap();
    let uid = |seed: &str| synth::uid(&format!("series:{seed}"));

    let mut h = harness(&root.path().join("store"));
    h.state_mut().open_study(current.patient.study_uid.clone());
    let series_in = |app: &LucentApp, i: usize| app.viewports[i].series.as_ref().map(|s| s.series_uid.clone());
    wait_until(&mut h, |app| series_in(app, 1).is_some());
    assert_eq!(h.state().layout, (1, 2));
    assert_eq!(series_in(h.state(), 0), Some(uid("hang-now")));
    assert_eq!(series_in(h.state(), 1), Some(uid("hang-then")), "the prior beside the current");

    h.state_mut().open_study(ct.patient.study_uid.clone());
    wait_until(&mut h, |app| series_in(app, 0) == Some(ct.series_uid()) && series_in(app, 1) == Some(ct.series_uid()));
    assert_eq!(h.state().viewports[0].window, Some(Window::new(-600.0, 1500.0)));
    assert_eq!(h.state().viewports[1].window, Some(Window::new(40.0, 350.0)));
}

#[test]
fn files_imported_from_the_gui_appear_in_the_browser() {
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("incoming");
    synth::write_ct_series(&src, &CtSeriesSpec { noise_hu: 0.0, ..CtSeriesSpec::chest("gui-import", 4, 32) }).unwrap();
    let mut h = harness(&root.path().join("store"));
    h.run_steps(2);
    assert!(h.state().browser.studies.is_empty());
    h.state_mut().start_import(vec![src]);
    wait_until(&mut h, |app| app.browser.studies.len() == 1);
    assert!(h.state().status.contains("Imported 4 instance(s)"), "{}", h.state().status);
}

#[test]
fn dicom_overlay_planes_are_drawn_on_the_image() {
    let Some(data) = std::env::var_os("LUCENT_TEST_DATA")
        .map(std::path::PathBuf::from)
        .or_else(|| Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/lucent-data")))
        .map(|d| d.join("pydicom-data/MR-SIEMENS-DICOM-WithOverlays.dcm"))
        .filter(|p| p.is_file())
    else {
        assert!(std::env::var("LUCENT_REQUIRE_TEST_DATA").is_err(), "pydicom-data is missing: run cargo xtask setup");
        eprintln!("SKIP: pydicom-data is absent");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let mut store = Store::open(&root.path().join("store")).unwrap();
    pacs::import::import_paths(&mut store, &[data], &Default::default(), &|_| {}, &AtomicBool::new(false)).unwrap();
    let studies = store.studies(&StudyQuery::default()).unwrap();
    let series = store.series(&studies[0].study_uid).unwrap()[0].series_uid.clone();
    let mut h = harness(&root.path().join("store"));
    open(&mut h, &series);
    assert!(h.state().viewports[0].overlays_drawn() >= 1);
    h.snapshot("overlay_planes");
}

#[test]
fn ai_findings_are_listed_with_their_model_and_drawn_on_the_image() {
    if !have_runtime() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (_, cr) = sample_store(root.path());
    let mut h = harness(&root.path().join("store"));
    h.state_mut().ai.auto_run = true;
    h.state_mut().ai.include_test_models = true;
    open(&mut h, &cr);
    wait_until(&mut h, |app| app.ai.readings.contains_key(&cr));
    let reading = h.state().ai.readings[&cr].clone();
    // The toy model, and the bundled CXR model (models/lucent-cxr) when present.
    assert!(reading.models.iter().any(|m| m.model_id == "lucent-test-cxr"), "{:?}", reading.models);
    assert!(reading.models.iter().all(|m| m.model_id == "lucent-test-cxr" || m.model_id == "lucent-cxr"));
    let toy: Vec<_> = reading.findings.iter().filter(|f| f.model_id == "lucent-test-cxr").collect();
    assert_eq!(toy.len(), 6);
    assert!(toy.iter().all(|f| f.model_version == "1.0.0"));
    // Each finding carries its 56x56 map for the heat-map display.
    assert!(toy.iter().all(|f| f.geometry.as_ref().is_some_and(|g| g.map.values.len() == 56 * 56)));
    assert!(
        h.query_by_label_contains("Toy CXR model (tests only) 1.0.0").is_some(),
        "the panel names the model and version"
    );
    h.snapshot("ai_findings");
}

#[test]
fn the_denoised_ct_is_added_to_the_store_beside_the_original() {
    if !have_runtime() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (ct, _) = sample_store(root.path());
    let store_dir = root.path().join("store");
    let mut h = harness(&store_dir);
    h.state_mut().ai.auto_run = true;
    h.state_mut().ai.include_test_models = true;
    open(&mut h, &ct);
    wait_until(&mut h, |app| app.ai.readings.contains_key(&ct));
    let reading = h.state().ai.readings[&ct].clone();
    assert!(
        reading.notes.iter().any(|n| n.contains("denoised series added to the store (16 images)")),
        "{:?}",
        reading.notes
    );
    let store = Store::open(&store_dir).unwrap();
    let study = store.studies(&StudyQuery { modality: "CT".into(), ..Default::default() }).unwrap().remove(0);
    let series = store.series(&study.study_uid).unwrap();
    assert_eq!(series.len(), 2, "original and denoised series in one study");
    assert!(series.iter().any(|s| s.description.contains("denoised by lucent-test-ct-denoise 1.0.0")));
    assert!(!store_dir.join("derived").exists(), "the staging folder is removed");
}

/// *Denoised (AI)* shows the slice on screen denoised by the bundled fast denoiser within a frame or
/// two of the worker, labelled with the model, while the original stays as it was.
#[test]
fn the_denoised_view_shows_the_slice_on_screen_first() {
    if !have_runtime() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (ct, _) = sample_store(root.path());
    let mut h = harness(&root.path().join("store"));
    open(&mut h, &ct);
    h.state_mut().viewports[0].set_slice(9);
    h.run_steps(2);
    h.get_by_label("Denoised (AI)").click_accesskit();
    h.run_steps(2);
    assert!(h.state().viewports[0].denoised);
    let series_id = h.state().viewports[0].series.as_ref().unwrap().id;
    wait_until(&mut h, |app| app.denoise.get(series_id, 9).is_some() || app.denoise.error.is_some());
    assert_eq!(h.state().denoise.error, None);
    let model = h.state().denoise.model.clone().unwrap();
    assert!(model.starts_with("lucent-ldct-denoise-fast "), "{model}");
    // Only the slice on screen was asked for.
    assert!(h.state().denoise.get(series_id, 8).is_none());
    let original = h.state().viewports[0].series.as_ref().unwrap().slice(9).unwrap();
    let denoised = h.state().denoise.get(series_id, 9).unwrap();
    assert_eq!((denoised.width, denoised.height), (original.width, original.height));
    // Noise in a uniform soft-tissue patch (heart or chest wall: 40-45 HU + 8 HU of noise) goes down.
    let stats = |s: &lucent_app::gui::loader::SliceImage, x0: usize, y0: usize| {
        let v: Vec<f64> = (y0..y0 + 16)
            .flat_map(|y| (x0..x0 + 16).map(move |x| (x, y)))
            .map(|(x, y)| s.modality_value(x, y).unwrap())
            .collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        (mean, (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt())
    };
    let (x0, y0) = (0..144)
        .step_by(8)
        .flat_map(|y| (0..144).step_by(8).map(move |x| (x, y)))
        .find(|&(x, y)| {
            let (mean, sd) = stats(&original, x, y);
            (30.0..60.0).contains(&mean) && sd < 12.0
        })
        .expect("a soft-tissue patch");
    let ((mean_before, sd_before), (mean_after, sd_after)) = (stats(&original, x0, y0), stats(&denoised, x0, y0));
    eprintln!("noise SD {sd_before:.1} -> {sd_after:.1} HU, mean {mean_before:.1} -> {mean_after:.1} at ({x0}, {y0})");
    assert!(sd_after < 0.8 * sd_before, "noise SD {sd_before:.1} -> {sd_after:.1} HU at ({x0}, {y0})");
    assert!((mean_after - mean_before).abs() < 5.0, "HU kept: {mean_before:.1} -> {mean_after:.1}");
    // Turning it off shows the original again.
    h.get_by_label("Denoised (AI)").click_accesskit();
    h.run_steps(2);
    assert!(!h.state().viewports[0].denoised);
}

/// The toy detector's findings are the ones this test decides on (the bundled detector runs too).
const TOY_DETECTOR: &str = "lucent-test-ct-detect";

#[test]
fn a_report_is_drafted_from_the_ai_findings_decided_signed_and_then_immutable() {
    if !have_runtime() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (ct, _) = sample_store(root.path());
    let mut h = harness(&root.path().join("store"));
    h.state_mut().ai.auto_run = true;
    h.state_mut().ai.include_test_models = true;
    open(&mut h, &ct);
    wait_until(&mut h, |app| app.ai.readings.contains_key(&ct));
    h.state_mut().open_report();
    wait_until(&mut h, |app| app.reports.report().is_some());
    let app = h.state();
    let report = app.reports.report().unwrap();
    assert_eq!(report.kind, report::model::ReportKind::Ldct);
    let nodules: Vec<report::model::AiFinding> =
        app.reports.findings().iter().filter(|f| f.nodule.is_some() && f.model_id == TOY_DETECTOR).cloned().collect();
    assert!(!nodules.is_empty(), "the toy detector finds the synthetic nodule");
    let text = report.to_text();
    assert!(text.contains("Lung-RADS"), "{text}");
    assert!(text.contains("mm"), "{text}");
    // Rejecting a nodule removes its sentence from the draft.
    let first = &nodules[0];
    let before = report.sentences(report::draft::SectionId::Nodules).len();
    // Deciding and signing need a signed-in reader: on a store without users, the first
    // administrator is created in the window.
    assert_eq!(h.state().reports.has_admin(), Some(false));
    h.state_mut().reports.create_first_admin("dr.kim", report::store::Role::Reader, "kim's passphrase");
    wait_until(&mut h, |app| app.reports.signed_in_as().is_some());
    assert!(h.state().reports.signed_in_as().is_some_and(|s| s.admin && s.name == "dr.kim"));
    h.state_mut().reports.decide(
        &first.id,
        report::model::FindingDecision::Rejected {
            reason: report::model::ReasonCode::FalsePositive,
            comment: String::new(),
        },
    );
    let after = h.state().reports.report().unwrap().sentences(report::draft::SectionId::Nodules).len();
    assert!(after < before || nodules.len() == 1, "{before} -> {after}");
    h.state_mut().reports.sign();
    wait_until(&mut h, |app| app.reports.status() == Some(report::store::ReportStatus::Final));
    assert!(h.state().reports.versions().iter().any(|v| v.kind == report::store::VersionKind::Signed));
    snapshot_with_live_text(&mut h, "report_signed");

    // A QA lead reviews a finding: the statistics count it, the signed report stays as it was.
    let signed_versions = h.state().reports.versions().to_vec();
    h.state_mut().reports.open = false;
    // The administrator adds a QA lead in the window.
    h.state_mut().reports.add_user("qa.lee", report::store::Role::QaLead, "lee's passphrase");
    wait_until(&mut h, |app| app.reports.message().starts_with("Added qa.lee"));
    // A reader cannot review as QA; the QA lead signs in with their own passphrase.
    h.state_mut().reports.sign_out();
    wait_until(&mut h, |app| app.reports.signed_in_as().is_none());
    h.state_mut().reports.sign_in("qa.lee", "wrong passphrase");
    wait_until(&mut h, |app| app.reports.message().contains("wrong passphrase"));
    h.state_mut().reports.sign_in("qa.lee", "lee's passphrase");
    wait_until(&mut h, |app| app.reports.signed_in_as().is_some_and(|s| s.name == "qa.lee"));
    h.state_mut().reports.qa_open = true;
    h.state_mut().reports.refresh_worklist();
    wait_until(&mut h, |app| !app.reports.decided().is_empty());
    let d = h
        .state()
        .reports
        .decided()
        .iter()
        .find(|d| d.finding.id != first.id && d.finding.model_id == TOY_DETECTOR)
        .cloned()
        .unwrap();
    h.state_mut().reports.qa_review(&d.study_uid, &d.finding.id, report::model::FindingDecision::Accepted);
    wait_until(&mut h, |app| {
        app.reports.decided().iter().any(|x| x.finding.id == d.finding.id && x.decision.is_accepted())
    });
    let stats = h.state().reports.stats();
    assert!(stats.iter().any(|s| s.label == "nodule" && s.decided >= 2 && s.rejected >= 1), "{stats:?}");
    assert_eq!(h.state().reports.versions(), signed_versions.as_slice());
    snapshot_with_live_text(&mut h, "qa_window");

    // The QA lead exports the statistics and the review marks for retraining (on the worker).
    h.get_by_label("Export statistics and review marks").click_accesskit();
    wait_until(&mut h, |app| app.reports.message().contains("review mark(s)"));
    let dir = h.state().reports.export_dir().to_path_buf();
    assert!(h.state().reports.message().contains("1 SR file(s)"), "{}", h.state().reports.message());
    assert!(dir.join("qa_statistics.csv").is_file());
    let marks = std::fs::read_to_string(dir.join("qa-marks/marks.jsonl")).unwrap();
    assert!(marks.contains(&format!("\"finding_id\":\"{}\"", d.finding.id)), "{marks}");
    assert!(dir.join("qa-marks/qa-marks-1.dcm").is_file());
}

#[path = "../../tests/tests/common/orthanc.rs"]
mod orthanc;

#[test]
fn the_pacs_window_finds_a_study_in_orthanc_retrieves_it_and_opens_it() {
    // Orthanc answers only the AE titles it knows.
    let known = orthanc::Modality::new("lucent", "LUCENT", orthanc::free_port());
    let Some(pacs) = orthanc::Orthanc::start(&[known]) else { return };
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("remote");
    let mut ct = CtSeriesSpec { noise_hu: 8.0, ..CtSeriesSpec::chest("pacs-ui", 8, 96) };
    ct.patient = PatientSpec::new("REMOTE^PATIENT", "R-1", "pacs-ui");
    let files = synth::write_ct_series(&src, &ct).unwrap();
    pacs.upload(&files);
    let mut h = harness(&root.path().join("store"));
    let app = h.state_mut();
    app.pacs.use_peer(lucent_app::gui::pacs_panel::Peer::Dimse(pacs.node("LUCENT")));
    app.pacs.open = true;
    app.pacs.query_mut().patient_name = "REMOTE*".into();
    app.pacs.start_search();
    wait_until(&mut h, |app| !app.pacs.studies().is_empty());
    assert_eq!(h.state().pacs.studies()[0].patient_id, "R-1");
    h.state_mut().pacs.retrieve_study(0);
    wait_until(&mut h, |app| !app.pacs.finished_jobs().is_empty());
    let outcome = h.state().pacs.finished_jobs().remove(0);
    assert!(outcome.as_ref().is_ok_and(|t| t.starts_with("8 received")), "{outcome:?}");
    // "Open when done": the retrieved study is laid out in the viewports.
    wait_until(&mut h, |app| app.viewports.iter().any(|v| v.series.as_ref().is_some_and(|s| s.len() == 8)));
    snapshot_with_live_text(&mut h, "pacs_window");
}

#[test]
fn the_model_evaluation_window_shows_the_table_for_a_generated_set() {
    if !have_runtime() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("eval-set");
    lucent_app::synth_cli::synth_cxr(&lucent_app::synth_cli::SynthCxrArgs {
        out: data.clone(),
        count: 16,
        seed: "ui-eval".into(),
        start: 0,
        size: 256,
        dicom: false,
        threads: Some(2),
    })
    .unwrap();
    let mut h = harness(&root.path().join("store"));
    h.state_mut().layout = (1, 1);
    h.run_steps(2);
    h.get_by_label("Evaluation").click();
    h.run_steps(2);
    assert!(h.state().eval.open, "the toolbar button opens the window");
    let eval = &mut h.state_mut().eval;
    eval.data_dir = data.display().to_string();
    eval.model = Some("lucent-cxr".into());
    eval.start();
    wait_until(&mut h, |app| !app.eval.running());
    assert_eq!(h.state().eval.error(), None);
    let report = h.state().eval.report().unwrap();
    assert_eq!(report.models[0].cases, 16);
    assert!(h.query_by_label("AUROC (95% CI)").is_some(), "the table header is shown");
    assert!(h.query_by_label("Consolidation").is_some(), "a row per label");
    assert!(h.query_by_label("ROC curves").is_some(), "the plot is labelled");
}

#[test]
fn the_browser_warns_of_instances_kept_aside_as_conflicts() {
    let root = tempfile::tempdir().unwrap();
    sample_store(root.path());
    // Another patient's radiograph claiming the radiograph's study: kept aside, not filed.
    let intruder = RadiographSpec {
        patient: PatientSpec {
            study_uid: synth::uid("study:ui-cr"),
            ..PatientSpec::new("OTHER^PATIENT", "UI-9", "ui-cr")
        },
        ..RadiographSpec::chest("ui-intruder", 64)
    };
    let path = root.path().join("intruder.dcm");
    synth::write_radiograph(&path, &intruder).unwrap();
    let mut store = Store::open(&root.path().join("store")).unwrap();
    let summary =
        pacs::import::import_paths(&mut store, &[path], &Default::default(), &|_| {}, &AtomicBool::new(false)).unwrap();
    assert_eq!(summary.conflicts.len(), 1, "{summary:?}");
    let mut h = harness(&root.path().join("store"));
    wait_until(&mut h, |app| app.browser.conflicts > 0);
    assert!(h.query_by_label_contains("kept aside as conflicts").is_some(), "the browser shows the conflict");
}
