//! The whole reading flow through the `lucent` binary, ending at a real PACS: AI on a synthetic
//! low-dose CT, the preliminary draft, an edit, sign, PDF + DICOM SR + FHIR of the signed report,
//! `dsrdump` on the SR, C-STORE of the SR to a throw-away Orthanc and finding it there, and an
//! intact audit log.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "../../tests/tests/common/orthanc.rs"]
mod orthanc;

use std::path::Path;
use std::process::Command;

use pacs::synth::{self, CtSeriesSpec, Nodule, NoduleKind, PatientSpec};

fn lucent(store: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lucent"));
    cmd.arg("--store").arg(store).env("HOME", store).env_remove("LUCENT_STORE").env_remove("XDG_DATA_HOME");
    cmd
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn read_draft_edit_sign_export_and_send_the_sr_to_orthanc() {
    let Ok(runtime) = inference::runtime::runtime() else {
        assert!(std::env::var("LUCENT_REQUIRE_TEST_DATA").is_err(), "ONNX Runtime is missing: run cargo xtask setup");
        eprintln!("SKIP: ONNX Runtime is not installed");
        return;
    };
    let lucent_port = orthanc::free_port();
    let Some(pacs) = orthanc::Orthanc::start(&[orthanc::Modality::new("lucent", "LUCENT", lucent_port)]) else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let (ct_dir, store, out) = (temp.path().join("ct"), temp.path().join("store"), temp.path().join("out"));
    std::fs::create_dir_all(&out).unwrap();
    let mut ct = CtSeriesSpec { noise_hu: 8.0, ..CtSeriesSpec::chest("flow-ct", 24, 160) };
    ct.patient = PatientSpec::new("FLOW^TEST", "FLOW-1", "flow-ct");
    ct.nodules = vec![Nodule { center_mm: [60.0, -20.0, 0.0], diameter_mm: 12.0, kind: NoduleKind::Solid }];
    ct.origin_mm[2] = -30.0;
    synth::write_ct_series(&ct_dir, &ct).unwrap();
    let lib = runtime.library().to_path_buf();
    // Passphrases as scripts give them: a file named in the environment, never an argument.
    let passphrase_file = temp.path().join("passphrase");
    std::fs::write(&passphrase_file, "flow passphrase\n").unwrap();
    let run = |args: &[&str]| {
        let mut cmd = lucent(&store);
        cmd.env("LUCENT_ORT_LIB", &lib)
            .env("LUCENT_PASSPHRASE_FILE", &passphrase_file)
            .env("LUCENT_NEW_PASSPHRASE_FILE", &passphrase_file)
            .args(args);
        cmd
    };

    // AI and the preliminary draft.
    let ct_arg = ct_dir.to_string_lossy().into_owned();
    let pre = out.join("preliminary.pdf").to_string_lossy().into_owned();
    ok(&mut run(&["read", &ct_arg, "--include-test-models", "--report", &pre]));
    let list = ok(&mut run(&["report", "list"]));
    let line = list.lines().next().unwrap();
    assert!(line.starts_with("preliminary"), "{list}");
    let study = line.split_whitespace().last().unwrap().to_owned();

    // Edit, sign; a signed report refuses edits.
    ok(&mut run(&["report", "init-admin", "dr.kim", "--role", "reader"]));
    let impression = "No other significant findings. Mild emphysema is not seen.";
    ok(&mut run(&["report", "edit", &study, "--section", "other_findings", "--text", impression, "--user", "dr.kim"]));
    ok(&mut run(&["report", "sign", &study, "--user", "dr.kim"]));
    let refused =
        run(&["report", "edit", &study, "--section", "other_findings", "--text", "changed", "--user", "dr.kim"])
            .output()
            .unwrap();
    assert!(!refused.status.success(), "a signed report cannot be edited");

    // Exports of the signed report.
    let (pdf, sr, fhir) = (out.join("final.pdf"), out.join("final-sr.dcm"), out.join("final.json"));
    let pdf_dicom = out.join("final-pdf.dcm");
    ok(run(&["report", "export", &study, "--from", &ct_arg, "--user", "dr.kim"])
        .arg("--pdf")
        .arg(&pdf)
        .arg("--sr")
        .arg(&sr)
        .arg("--fhir")
        .arg(&fhir)
        .arg("--pdf-dicom")
        .arg(&pdf_dicom));
    assert!(std::fs::read(&pdf).unwrap().starts_with(b"%PDF-"));
    let pdf_obj = dicom_object::open_file(&pdf_dicom).unwrap();
    let pdf_uid =
        pdf_obj.element(dicom_dictionary_std::tags::SOP_INSTANCE_UID).unwrap().to_str().unwrap().trim().to_owned();
    let embedded = pdf_obj.element(dicom_dictionary_std::tags::ENCAPSULATED_DOCUMENT).unwrap().to_bytes().unwrap();
    assert!(embedded.starts_with(b"%PDF-"), "the Encapsulated PDF holds the PDF");
    let fhir: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&fhir).unwrap()).unwrap();
    assert_eq!(fhir["status"], "final");
    assert_eq!(report::fhir::validate(&fhir), Vec::<String>::new());
    let sr_obj = dicom_object::open_file(&sr).unwrap();
    let text = |tag| sr_obj.element(tag).unwrap().to_str().unwrap().trim().to_owned();
    assert_eq!(text(dicom_dictionary_std::tags::COMPLETION_FLAG), "COMPLETE");
    assert_eq!(text(dicom_dictionary_std::tags::VERIFICATION_FLAG), "VERIFIED");
    let sr_uid = text(dicom_dictionary_std::tags::SOP_INSTANCE_UID);
    if let Some(dsrdump) = orthanc::dcmtk("dsrdump") {
        let dump = Command::new(dsrdump).arg(&sr).output().unwrap();
        assert!(dump.status.success(), "dsrdump: {}", String::from_utf8_lossy(&dump.stderr));
        let dumped = String::from_utf8_lossy(&dump.stdout);
        assert!(dumped.contains("Imaging Measurements") || dumped.contains("126010"), "{dumped}");
    }

    // Send the SR and the Encapsulated PDF to the PACS and find them there.
    let port = pacs.dicom_port.to_string();
    let sr_arg = sr.to_string_lossy().into_owned();
    let pdf_arg = pdf_dicom.to_string_lossy().into_owned();
    ok(&mut run(&[
        "pacs",
        "store",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--aet",
        orthanc::ORTHANC_AET,
        "--our-aet",
        "LUCENT",
        &sr_arg,
        &pdf_arg,
    ]));
    assert!(pacs.has_instance(&sr_uid), "the SR is in Orthanc");
    assert!(pacs.has_instance(&pdf_uid), "the Encapsulated PDF is in Orthanc");

    // Every step is in the audit log, and the chain is intact.
    let verdict = ok(&mut run(&["audit", "verify"]));
    assert!(verdict.contains("intact"), "{verdict}");
}
