//! `lucent eval` end to end: the model card's synthetic figures are reproduced from a freshly
//! generated test set, the NIH figures from `../shared/data` (when present), and the CT path runs
//! the toy detector on a tiny synthetic volume, and the CT cards' CI sets (`lucent synth-ct`) give the
//! detector's FROC and the denoisers' PSNR / SSIM their cards list.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::Command;

use pacs::synth::{self, CtSeriesSpec, Nodule, NoduleKind};

fn lucent(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lucent"));
    cmd.arg("--store").arg(home.join("store")).env("HOME", home).env_remove("LUCENT_STORE");
    cmd
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The ONNX Runtime library this test process found, for child processes whose HOME is a temp dir.
fn have_runtime() -> bool {
    if let Ok(runtime) = inference::runtime::runtime() {
        // SAFETY of intent: tests set it once, to the same value, before spawning children.
        unsafe { std::env::set_var("LUCENT_ORT_LIB", runtime.library()) };
        return true;
    }
    assert!(std::env::var("LUCENT_REQUIRE_TEST_DATA").is_err(), "ONNX Runtime is missing: run cargo xtask setup");
    eprintln!("SKIP: ONNX Runtime is not installed");
    false
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn card() -> serde_json::Value {
    metrics_of("lucent-cxr")
}

/// `models/<folder>/metrics.json`, where the card's numbers come from.
fn metrics_of(folder: &str) -> serde_json::Value {
    read_json(&repo().join("models").join(folder).join("metrics.json"))
}

/// Regenerates a card's CI set with `lucent synth-ct` (kind, seed and count from the card) and runs
/// `lucent eval` on it (`model`, or every model that applies); returns the JSON report.
fn eval_ci_set(tmp: &Path, ci: &serde_json::Value, model: Option<&str>) -> serde_json::Value {
    let data = tmp.join("ci-set");
    let (kind, seed, count) = (ci["kind"].as_str().unwrap(), ci["seed"].as_str().unwrap(), ci["count"].to_string());
    run_ok(lucent(tmp).args(["synth-ct", "--kind", kind, "--seed", seed, "--count", &count, "--out"]).arg(&data));
    let json = tmp.join("ci-eval.json");
    let mut cmd = lucent(tmp);
    cmd.arg("eval").arg("--data").arg(&data).arg("--json").arg(&json);
    if let Some(model) = model {
        cmd.args(["--model", model]);
    }
    eprintln!("{}", run_ok(&mut cmd));
    assert!(json.with_extension("png").is_file());
    read_json(&json)
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The labels of `lucent eval`'s JSON for one model, by manifest label.
fn labels_of<'a>(report: &'a serde_json::Value, model: &str) -> Vec<&'a serde_json::Value> {
    let m = report["models"].as_array().unwrap().iter().find(|m| m["model_id"] == model).unwrap();
    m["labels"].as_array().unwrap().iter().collect()
}

/// Tolerances, and why: every number is recomputed on the very images the card used (the generator
/// is deterministic: same seed, size and count; NIH: the same files) through the same Lucent
/// pipeline, and `inference::eval` repeats `cxr.py`'s arithmetic: Mann–Whitney AUROC, and the
/// bootstrap with numpy's own generator (`default_rng(0)`, the same 2000 resamples) and percentile
/// rule. So AUROC and the interval bounds agreed to 1e-16 when this test was written; 1e-3 leaves
/// room for another ONNX Runtime build moving a score in the sixth decimal and reordering a tie,
/// nothing more. Sensitivity and specificity allow one case of the class to cross the threshold.
const POINT_TOL: f64 = 1e-3;
const CI_TOL: f64 = 1e-3;

const KEYS: [(&str, &str); 6] = [
    ("Nodule", "nodule"),
    ("Consolidation", "consolidation"),
    ("Pleural effusion", "effusion"),
    ("Interstitial opacity", "interstitial_opacity"),
    ("Pneumothorax", "pneumothorax"),
    ("Abnormal", "abnormal"),
];

fn assert_close(what: &str, got: f64, want: f64, tol: f64) {
    assert!((got - want).abs() <= tol, "{what}: lucent eval {got}, model card {want} (tolerance {tol})");
}

#[test]
fn lucent_eval_reproduces_the_model_cards_synthetic_figures() {
    if !have_runtime() {
        return;
    }
    let card = card();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("lucent-cxr-test");
    let count = card["counts"]["test"].as_u64().unwrap().to_string();
    // The card's hold-out set, regenerated: `cxr.py` uses seed `lucent-cxr-test` at 512 pixels.
    run_ok(
        lucent(tmp.path())
            .args(["synth-cxr", "--seed", "lucent-cxr-test", "--size", "512", "--count", &count, "--out"])
            .arg(&data),
    );
    let json = tmp.path().join("eval.json");
    let text = run_ok(
        lucent(tmp.path()).args(["eval", "--model", "lucent-cxr", "--data"]).arg(&data).arg("--json").arg(&json),
    );
    eprintln!("{text}");
    assert!(text.contains("AUROC (95% CI)") && text.contains("Consolidation"), "{text}");
    let report = read_json(&json);
    assert_eq!(report["models"][0]["cases"].as_u64().unwrap().to_string(), count);
    let labels = labels_of(&report, "lucent-cxr");
    for (name, key) in KEYS {
        let want = &card["synthetic_test"][key];
        let got = labels.iter().find(|l| l["label"] == name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(got["positives"], want["positives"], "{name}");
        assert_eq!(got["negatives"], want["negatives"], "{name}");
        assert_close(&format!("{name} AUROC"), f(&got["auroc"]), f(&want["auroc"]), POINT_TOL);
        let (pos, neg) = (f(&want["positives"]), f(&want["negatives"]));
        assert_close(&format!("{name} sensitivity"), f(&got["sensitivity"]), f(&want["sensitivity"]), 1.0 / pos + 1e-9);
        assert_close(&format!("{name} specificity"), f(&got["specificity"]), f(&want["specificity"]), 1.0 / neg + 1e-9);
        for b in 0..2 {
            assert_close(&format!("{name} CI bound {b}"), f(&got["auroc_ci95"][b]), f(&want["auroc_ci95"][b]), CI_TOL);
        }
        assert_close(&format!("{name} threshold"), f(&got["threshold"]), f(&card["thresholds"][key]), 1e-6);
    }
    let png = image::open(json.with_extension("png")).unwrap();
    assert!(png.width() >= 600 && png.height() >= 500);
}

#[test]
fn lucent_eval_matches_the_model_cards_nih_figures() {
    if !have_runtime() {
        return;
    }
    // Real data is never required (a fresh clone does not have it), as in tests/src/lib.rs.
    let base = std::env::var_os("LUCENT_REAL_DATA").map(PathBuf::from).unwrap_or_else(|| repo().join("../shared/data"));
    let data = base.join("cxr-nih-dev");
    if !data.join("labels.csv").is_file() {
        eprintln!("SKIP: real data {} is absent", data.display());
        return;
    }
    let card = card();
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("nih.json");
    // No --model: every applicable model (the bundled one; test-only models are left out).
    let text = run_ok(lucent(tmp.path()).arg("eval").arg("--data").arg(&data).arg("--json").arg(&json));
    eprintln!("{text}");
    assert!(text.contains("not labelled: Interstitial opacity"), "Infiltration is not mapped: {text}");
    let report = read_json(&json);
    assert!(report["models"].as_array().unwrap().iter().all(|m| m["model_id"] != "lucent-test-cxr"));
    let labels = labels_of(&report, "lucent-cxr");
    // The card's rows that use the same reference as `lucent eval`'s label mapping.
    let rows = [
        ("Nodule", "Nodule"),
        ("Consolidation", "Consolidation"),
        ("Pleural effusion", "Effusion"),
        ("Pneumothorax", "Pneumothorax"),
        ("Abnormal", "any finding (not `no_finding`)"),
    ];
    for (name, nih) in rows {
        let want =
            card["nih"].as_array().unwrap().iter().find(|r| r["model_label"] == name && r["nih_label"] == nih).unwrap();
        let got = labels.iter().find(|l| l["label"] == name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(got["positives"], want["positives"], "{name}");
        assert_eq!(got["negatives"], want["negatives"], "{name}");
        assert_close(&format!("NIH {name} AUROC"), f(&got["auroc"]), f(&want["auroc"]), POINT_TOL);
        let (pos, neg) = (f(&want["positives"]), f(&want["negatives"]));
        assert_close(
            &format!("NIH {name} sensitivity"),
            f(&got["sensitivity"]),
            f(&want["sensitivity"]),
            1.0 / pos + 1e-9,
        );
        assert_close(
            &format!("NIH {name} specificity"),
            f(&got["specificity"]),
            f(&want["specificity"]),
            1.0 / neg + 1e-9,
        );
        for b in 0..2 {
            assert_close(&format!("NIH {name} CI {b}"), f(&got["auroc_ci95"][b]), f(&want["auroc_ci95"][b]), CI_TOL);
        }
    }
}

#[test]
fn lucent_eval_runs_a_ct_detector_and_reports_froc() {
    if !have_runtime() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("ct-set");
    let mut with = CtSeriesSpec { noise_hu: 5.0, ..CtSeriesSpec::chest("eval-ct-a", 40, 96) };
    with.origin_mm[2] = -200.0;
    with.nodules = vec![Nodule { center_mm: [-70.0, -10.0, -150.0], diameter_mm: 12.0, kind: NoduleKind::Solid }];
    synth::write_ct_series(&data.join("a"), &with).unwrap();
    let mut without = CtSeriesSpec { noise_hu: 5.0, ..CtSeriesSpec::chest("eval-ct-b", 40, 96) };
    without.origin_mm[2] = -200.0;
    synth::write_ct_series(&data.join("b"), &without).unwrap();
    std::fs::write(data.join("nodules.csv"), "series,x,y,z,diameter_mm\na,-70,-10,-150,12\nb,,,,\n").unwrap();
    let json = tmp.path().join("ct.json");
    let text = run_ok(
        lucent(tmp.path())
            .args(["eval", "--model", "lucent-test-ct-detect", "--data"])
            .arg(&data)
            .arg("--json")
            .arg(&json),
    );
    eprintln!("{text}");
    assert!(text.contains("FROC: 1 lesion(s) in 2 scan(s)"), "{text}");
    let report = read_json(&json);
    let m = &report["models"][0];
    assert_eq!(m["task"], "ct_detection");
    let froc = &m["froc"];
    assert_eq!(froc["scans"], 2);
    assert_eq!(froc["lesions"], 1);
    // The toy detector lights up the nodule (and much else): found at some threshold.
    let curve = froc["curve"].as_array().unwrap();
    assert_eq!(f(&curve.last().unwrap()["sensitivity"]), 1.0, "{froc}");
    assert_eq!(froc["at_fp_rates"].as_array().unwrap().len(), 7);
    assert!(f(&froc["cpm"]) >= 0.0);
    assert!(json.with_extension("png").is_file());
}

#[test]
fn lucent_eval_explains_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let out = lucent(tmp.path()).args(["eval", "--data"]).arg(tmp.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no labels.csv") && err.contains("pairs.csv") && !err.contains("panicked"), "{err}");
    if !have_runtime() {
        return;
    }
    std::fs::write(tmp.path().join("labels.csv"), "image,Nodule\nmissing.png,1\n").unwrap();
    let out = lucent(tmp.path())
        .args(["eval", "--model", "lucent-test-ct-detect", "--data"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no nodules.csv"), "{err}");
    // A denoiser on a folder without pairs, and a pairs.csv without a reference column.
    let out = lucent(tmp.path())
        .args(["eval", "--model", "lucent-ldct-denoise-fast", "--data"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pairs.csv"));
    std::fs::remove_file(tmp.path().join("labels.csv")).unwrap();
    std::fs::write(tmp.path().join("pairs.csv"), "low,other\na,b\n").unwrap();
    let out = lucent(tmp.path()).args(["eval", "--data"]).arg(tmp.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no reference column") && !err.contains("panicked"), "{err}");
}

/// The detector's card lists what `lucent eval` gives on the scans `lucent synth-ct` generates from the
/// card's seed; the same scans, regenerated here, must give the same FROC. Tolerance: every number is
/// recomputed from the same voxels by the same pipeline, so they agreed exactly when written; one
/// nodule's worth allows another ONNX Runtime build to move a candidate across the threshold.
#[test]
fn lucent_eval_reproduces_the_nodule_cards_ci_figures() {
    if !have_runtime() {
        return;
    }
    let card = metrics_of("lucent-ldct-nodule");
    let want = &card["lucent_ci_set"]["froc"];
    let tmp = tempfile::tempdir().unwrap();
    let report = eval_ci_set(tmp.path(), &card["lucent_ci_set"], Some("lucent-ldct-nodule"));
    let got = &report["models"][0]["froc"];
    assert_eq!(got["scans"], want["scans"]);
    assert_eq!(got["lesions"], want["lesions"]);
    let one = 1.0 / f(&want["lesions"]) + 1e-9;
    assert_close("candidates", f(&got["candidates"]), f(&want["candidates"]), 1.0);
    assert_close("CPM", f(&got["cpm"]), f(&want["cpm"]), one);
    for (g, w) in got["at_fp_rates"].as_array().unwrap().iter().zip(want["at_fp_rates"].as_array().unwrap()) {
        assert_eq!(g[0], w[0]);
        assert_close(&format!("sensitivity at {} FPs/scan", w[0]), f(&g[1]), f(&w[1]), one);
    }
}

/// The denoisers' card lists what `lucent eval` gives on the routine / quarter-dose pairs
/// `lucent synth-ct` generates from the card's seed; regenerated here, every denoiser must give the
/// same PSNR and SSIM. The input's figures are exact (integer pixels, the same arithmetic); the
/// outputs allow 0.01 dB / 0.0002 for another ONNX Runtime build's float rounding.
#[test]
fn lucent_eval_reproduces_the_denoiser_cards_ci_figures() {
    if !have_runtime() {
        return;
    }
    let card = metrics_of("lucent-ldct-denoise");
    let ci = &card["lucent_ci_set"];
    let tmp = tempfile::tempdir().unwrap();
    let report = eval_ci_set(tmp.path(), ci, None);
    let wanted = ci["lucent"].as_object().unwrap();
    assert_eq!(report["models"].as_array().unwrap().len(), wanted.len(), "one evaluation per denoiser");
    for (size, want) in wanted {
        let id = card[size]["id"].as_str().unwrap();
        let m = report["models"].as_array().unwrap().iter().find(|m| m["model_id"] == id).unwrap();
        assert_eq!(m["task"], "ct_denoise");
        let got = &m["denoise"];
        assert_eq!(got["slices"], want["slices"]);
        for key in ["psnr_db", "ssim"] {
            assert_close(&format!("{id} input {key}"), f(&got["input"][key]), f(&want["input"][key]), 1e-9);
            let tol = if key == "ssim" { 2e-4 } else { 0.01 };
            assert_close(&format!("{id} output {key}"), f(&got["output"][key]), f(&want["output"][key]), tol);
        }
        // The model helps: the check is only worth having while that is true.
        assert!(f(&got["output"]["psnr_db"]) > f(&got["input"]["psnr_db"]));
    }
}

/// Issue 13: the CT nodule measurement on the real LIDC nodules (`ct-nodule-patches/`), as the
/// LDCT card reports it; `lucent eval-nodule-measure` reproduces every figure of its table.
#[test]
fn lucent_eval_nodule_measure_reproduces_the_cards_real_lidc_figures() {
    let base = std::env::var_os("LUCENT_REAL_DATA").map(PathBuf::from).unwrap_or_else(|| repo().join("../shared/data"));
    let data = base.join("ct-nodule-patches");
    if !data.join("nodules.csv").is_file() {
        eprintln!("SKIP: real data {} is absent", data.display());
        return;
    }
    let metrics = read_json(&repo().join("models/lucent-ldct-nodule/metrics.json"));
    let card = &metrics["measurement_real"]["passes"];
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("measure.json");
    run_ok(lucent(tmp.path()).arg("eval-nodule-measure").arg("--patches").arg(&data).arg("--json").arg(&json));
    let got = read_json(&json);
    for (pass, want) in got.as_array().unwrap().iter().zip(card.as_array().unwrap()) {
        for half in ["all", "half_a", "half_b"] {
            for (key, value) in want[half].as_object().unwrap() {
                assert_close(&format!("{} mm {half} {key}", pass["slice_mm"]), f(&pass[half][key]), f(value), 1e-9);
            }
        }
        // No runaway: nothing is measured 15 mm longer than its reference outline (the old region
        // growing ran to 40-60 mm on real CT whatever the nodule).
        for n in pass["nodules"].as_array().unwrap() {
            if let (Some(l), Some(r)) = (n["long_axis_mm"].as_f64(), n["reference_long_axis_mm"].as_f64()) {
                assert!(l <= r + 15.0, "{n}");
            }
        }
    }
    // The floor for the segmentation at 1 mm.
    assert!(f(&card[0]["all"]["median_dice"]) >= 0.70);
}
