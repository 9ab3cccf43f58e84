//! The `lucent` binary end to end: import, info, ls, verify, and an import killed with SIGKILL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pacs::store::Store;
use pacs::synth::{self, CtSeriesSpec};

fn lucent(store: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lucent"));
    cmd.arg("--store").arg(store).env("HOME", store).env_remove("LUCENT_STORE");
    cmd
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn info_import_ls_and_verify() {
    let src = tempfile::tempdir().unwrap();
    let spec =
        CtSeriesSpec { noise_hu: 0.0, shuffle: true, drop_slices: vec![4], ..CtSeriesSpec::chest("cli", 10, 32) };
    synth::write_ct_series(src.path(), &spec).unwrap();
    let store = tempfile::tempdir().unwrap();

    let info: serde_json::Value =
        serde_json::from_str(&run_ok(lucent(store.path()).arg("info").arg(src.path()).arg("--json"))).unwrap();
    let series = &info["patients"][0]["studies"][0]["series"][0];
    assert_eq!(series["modality"], "CT");
    assert_eq!(series["transfer_syntaxes"][0]["uid"], "1.2.840.10008.1.2.1");
    let stack = &series["stacks"][0];
    assert_eq!(stack["dimensions"], serde_json::json!([32, 32, 9]));
    assert_eq!(stack["orientation_label"], "axial");
    assert!((stack["spacing_mm"][2].as_f64().unwrap() - 2.5).abs() < 1e-9);
    assert!(stack["warnings"][0].as_str().unwrap().contains("missing slice"), "{stack}");
    let range = stack["value_range"].as_array().unwrap();
    assert!(range[0].as_f64().unwrap() <= -1000.0 && range[1].as_f64().unwrap() > 100.0);

    let text = run_ok(lucent(store.path()).arg("import").arg(src.path()));
    assert!(text.contains("Imported 9 instance(s)"), "{text}");
    let studies: serde_json::Value =
        serde_json::from_str(&run_ok(lucent(store.path()).args(["ls", "--json", "--series"]))).unwrap();
    assert_eq!(studies[0]["instances"], 9);
    assert_eq!(studies[0]["series_list"][0]["modality"], "CT");
    let filtered: serde_json::Value =
        serde_json::from_str(&run_ok(lucent(store.path()).args(["ls", "--json", "--modality", "MR"]))).unwrap();
    assert_eq!(filtered.as_array().unwrap().len(), 0);
    assert!(run_ok(lucent(store.path()).arg("verify")).contains("consistent"));
}

#[test]
fn bad_input_gives_a_clear_message_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.dcm");
    let mut bytes = vec![0u8; 128];
    bytes.extend_from_slice(b"DICM\x02\x00\x10\x00UI");
    std::fs::write(&bad, bytes).unwrap();
    let out = lucent(dir.path()).arg("info").arg(&bad).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Skipped 1 file") && text.contains("not a readable DICOM file"), "{text}");
    let out = lucent(dir.path()).arg("info").arg(dir.path().join("nope")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn an_import_killed_half_way_completes_on_rerun() {
    let src = tempfile::tempdir().unwrap();
    synth::write_ct_series(src.path(), &CtSeriesSpec { noise_hu: 0.0, ..CtSeriesSpec::chest("kill", 300, 128) })
        .unwrap();
    let store_dir = tempfile::tempdir().unwrap();

    let mut child = lucent(store_dir.path())
        .arg("import")
        .arg(src.path())
        .args(["--threads", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until part of the import is indexed, then kill it without warning.
    let started = Instant::now();
    let mut indexed_before_kill = 0;
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(store) = Store::open_reader(store_dir.path())
            && let Ok(c) = store.counts()
        {
            indexed_before_kill = c.instances;
            if c.instances >= 20 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert!(indexed_before_kill >= 20, "the import never got going");
    assert!(indexed_before_kill < 300, "the import finished before it could be killed");

    let text = run_ok(lucent(store_dir.path()).arg("import").arg(src.path()));
    assert!(text.contains("0 skipped"), "{text}");
    let store = Store::open(store_dir.path()).unwrap();
    assert_eq!(store.counts().unwrap().instances, 300);
    let report = store.check_consistency().unwrap();
    assert!(report.is_consistent(), "{report:?}");
}
