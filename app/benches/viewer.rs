//! Viewer benchmark (not a test): frame times of the real `LucentApp`, rendered with wgpu on
//! whatever adapter is present (Mesa lavapipe here, a software rasterizer), while dragging the
//! window/level and while scrolling a 512x512x300 CT, and while dragging the window/level on a
//! 2500x2048 radiograph; time from "open series" to the first image; peak memory.
//!
//! Each frame is one egui pass plus a full render of the 1600x1000 window and its read-back to
//! the CPU (what egui_kittest does), so the numbers include the read-back a screen would not need.
//!
//! `cargo bench -p lucent --bench viewer`

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails fast

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use lucent_app::gui::LucentApp;
use pacs::pixels::Window;
use pacs::store::{Store, StudyQuery};
use pacs::synth::{self, CtSeriesSpec, RadiographSpec};

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn stats(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[(ms.len() * 95 / 100).min(ms.len() - 1)])
}

fn series_uid(store: &Store, modality: &str) -> String {
    let study = store.studies(&StudyQuery::default()).unwrap().into_iter().find(|s| s.modalities == modality).unwrap();
    store.series(&study.study_uid).unwrap()[0].series_uid.clone()
}

fn frames(h: &mut Harness<'static, LucentApp>, n: usize, mut change: impl FnMut(&mut LucentApp, usize)) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let t = Instant::now();
            change(h.state_mut(), i);
            h.step();
            let _ = h.render().unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/lucent-bench/viewer");
    let store_dir = root.join("store");
    if !store_dir.join("ready").exists() {
        let _ = std::fs::remove_dir_all(&root);
        eprintln!("generating a 512x512x300 CT and a 2500x2048 radiograph…");
        let ct = CtSeriesSpec {
            slice_spacing_mm: 1.0,
            slice_thickness_mm: 1.0,
            ..CtSeriesSpec::chest("bench-viewer", 300, 512)
        };
        synth::write_ct_series(&root.join("src/ct"), &ct).unwrap();
        let cr = RadiographSpec { rows: 2500, columns: 2048, ..RadiographSpec::chest("bench-cxr", 2048) };
        synth::write_radiograph(&root.join("src/cr.dcm"), &cr).unwrap();
        let mut store = Store::open(&store_dir).unwrap();
        pacs::import::import_paths(
            &mut store,
            &[root.join("src")],
            &Default::default(),
            &|_| {},
            &AtomicBool::new(false),
        )
        .unwrap();
        std::fs::write(store_dir.join("ready"), b"").unwrap();
    }
    let store = Store::open(&store_dir).unwrap();
    let (ct, cr) = (series_uid(&store, "CT"), series_uid(&store, "CR"));
    drop(store);

    let dir = store_dir.clone();
    let mut h = Harness::builder()
        .with_size(egui::vec2(1600.0, 1000.0))
        .wgpu()
        .build_eframe(move |cc| LucentApp::new(cc, dir, false).unwrap());
    h.state_mut().layout = (1, 1);
    h.run_steps(3);

    let mut rows: Vec<(String, String)> = Vec::new();
    // Open the CT: time to the first image, then to the last slice decoded.
    let started = Instant::now();
    h.state_mut().request_open(ct.clone(), 0);
    let mut first_image = None;
    loop {
        h.step();
        if first_image.is_none() && h.state().viewports[0].current_slice().is_some() {
            let _ = h.render().unwrap();
            first_image = Some(started.elapsed());
        }
        if h.state().viewports[0].series.as_ref().is_some_and(|s| s.decoded() == s.len()) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "the CT never finished decoding");
        std::thread::sleep(Duration::from_millis(2));
    }
    let all_decoded = started.elapsed();
    rows.push((
        "CT 512x512x300: open → first image".into(),
        format!("{:.0} ms", first_image.unwrap().as_secs_f64() * 1e3),
    ));
    rows.push((
        "CT 512x512x300: open → all slices decoded".into(),
        format!("{:.0} ms", all_decoded.as_secs_f64() * 1e3),
    ));
    let volume_mb = h.state().viewports[0].series.as_ref().unwrap().size_bytes() as f64 / 1e6;

    let wl = frames(&mut h, 60, |app, i| {
        app.viewports[0].window = Some(Window::new(-600.0 + i as f64 * 5.0, 1500.0 - i as f64 * 10.0));
    });
    let (median, p95) = stats(wl);
    rows.push((
        "CT: frame while dragging W/L".into(),
        format!("median {median:.1} ms, p95 {p95:.1} ms ({:.0} fps)", 1e3 / median),
    ));
    let scroll = frames(&mut h, 100, |app, _| app.viewports[0].scroll_by(1));
    let (median, p95) = stats(scroll);
    rows.push((
        "CT: frame while scrolling (new slice each frame)".into(),
        format!("median {median:.1} ms, p95 {p95:.1} ms ({:.0} fps)", 1e3 / median),
    ));

    let started = Instant::now();
    h.state_mut().request_open(cr, 0);
    while h.state().viewports[0].current_slice().is_none_or(|s| s.width != 2048) {
        h.step();
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = h.render().unwrap();
    rows.push(("CR 2048x2500: open → first image".into(), format!("{:.0} ms", started.elapsed().as_secs_f64() * 1e3)));
    let wl = frames(&mut h, 60, |app, i| {
        app.viewports[0].window = Some(Window::new(2000.0 + i as f64 * 10.0, 3000.0 - i as f64 * 20.0));
    });
    let (median, p95) = stats(wl);
    rows.push((
        "CR: frame while dragging W/L".into(),
        format!("median {median:.1} ms, p95 {p95:.1} ms ({:.0} fps)", 1e3 / median),
    ));
    rows.push((
        "peak RSS of the whole process".into(),
        format!("{:.0} MB (CT samples held: {volume_mb:.0} MB)", peak_rss_mb()),
    ));

    println!("\nLucent viewer benchmark — 1600x1000 window, wgpu adapter as found (lavapipe = software)\n");
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(10);
    for (name, value) in rows {
        println!("{name:<width$}  {value}");
    }
}
