//! Reports end to end through the `lucent` binary: `read --report/--sr/--fhir` on a synthetic CXR
//! and CT, `audit verify` (intact and tampered), a report store SIGKILLed while autosaving, and no
//! patient name or ID in the logs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pacs::synth::{self, CtSeriesSpec, Nodule, NoduleKind, PatientSpec, RadiographSpec};
use report::store::{ReportStore, VersionBody, VersionKind};

fn lucent(store: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lucent"));
    cmd.arg("--store").arg(store).env("HOME", store).env_remove("LUCENT_STORE").env_remove("XDG_DATA_HOME");
    cmd
}

/// `lucent` acting with `passphrase` (for signing, adding users and new keys alike).
fn lucent_with(store: &Path, passphrase: &str) -> Command {
    let mut cmd = lucent(store);
    cmd.env("LUCENT_PASSPHRASE", passphrase).env("LUCENT_NEW_PASSPHRASE", passphrase);
    cmd
}

/// dr.kim (reader, the first administrator) and qa.lee (QA lead), made through the CLI.
fn add_people(store: &Path) {
    for args in [
        &["report", "init-admin", "dr.kim", "--role", "reader"][..],
        &["report", "add-user", "qa.lee", "--role", "qa-lead", "--as", "dr.kim"][..],
    ] {
        let out = lucent_with(store, "test passphrase").args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The report store as the CLI opens it (with the key folder under the test's HOME), and a
/// user's unlocked key.
fn open_reports(store: &Path) -> ReportStore {
    let mut reports = ReportStore::open(store).unwrap();
    let keys = store.join(".local/share/lucent/signing-keys");
    reports.set_key_store(report::KeyStore::for_store(&keys, store).unwrap());
    reports
}

fn credential(reports: &ReportStore, name: &str) -> report::Credential {
    reports.unlock(name, &report::Passphrase::new("test passphrase".into())).unwrap()
}

fn required() -> bool {
    std::env::var("LUCENT_REQUIRE_TEST_DATA").is_ok_and(|v| v == "1")
}

/// The ONNX Runtime library this test process found, for child processes whose HOME is a temp dir.
fn have_runtime() -> bool {
    if let Ok(runtime) = inference::runtime::runtime() {
        // SAFETY of intent: tests set it once, to the same value, before spawning children.
        unsafe { std::env::set_var("LUCENT_ORT_LIB", runtime.library()) };
        return true;
    }
    assert!(!required(), "ONNX Runtime is missing: run cargo xtask setup");
    eprintln!("SKIP: ONNX Runtime is not installed");
    false
}

fn tool(name: &str) -> bool {
    let found = Command::new(name).arg("--version").output().is_ok();
    assert!(found || !required(), "{name} is missing");
    found
}

/// Runs `lucent read` with the exports and debug logging; returns (stdout, stderr).
fn read_with_exports(store: &Path, input: &Path, out: &Path, lang: &str) -> (String, String) {
    let output = lucent(store)
        .arg("read")
        .arg(input)
        .arg("--include-test-models")
        .arg("--report")
        .arg(out.join("report.pdf"))
        .arg("--sr")
        .arg(out.join("report.dcm"))
        .arg("--fhir")
        .arg(out.join("report.json"))
        .args(["--lang", lang])
        .env("LUCENT_LOG", "debug")
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "lucent read failed: {stderr}");
    (stdout, stderr)
}

fn check_exports(out: &Path, expected_loinc: &str) {
    let pdf = std::fs::read(out.join("report.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    assert!(String::from_utf8_lossy(&pdf).contains("/FontFile2"), "the Hangul font is embedded");
    let fhir: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report::fhir::validate(&fhir), Vec::<String>::new());
    assert_eq!(fhir["status"], "preliminary");
    assert_eq!(fhir["code"]["coding"][0]["code"], expected_loinc);
    let sr = dicom_object::open_file(out.join("report.dcm")).unwrap();
    let flag = |tag| sr.element(tag).unwrap().to_str().unwrap().trim().to_owned();
    assert_eq!(flag(dicom_dictionary_std::tags::COMPLETION_FLAG), "PARTIAL");
    assert_eq!(flag(dicom_dictionary_std::tags::VERIFICATION_FLAG), "UNVERIFIED");
    if tool("dsrdump") {
        dsrdump(&out.join("report.dcm"));
    }
}

/// `dsrdump +Pu` of an SR (referenced SOP Instance UIDs printed), asserting that DCMTK has no
/// complaint (its VR checker cannot check UTF-8 values and says so: that line is not one).
fn dsrdump(path: &Path) -> String {
    let o = Command::new("dsrdump").arg("+Pu").arg(path).output().unwrap();
    let complaints: Vec<String> = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| !l.contains("VR checker does not support this Specific Character Set"))
        .map(str::to_owned)
        .collect();
    assert!(o.status.success() && complaints.is_empty(), "dsrdump: {complaints:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn read_writes_preliminary_pdf_sr_and_fhir_for_a_cxr_and_a_ct_and_logs_no_patient_data() {
    if !have_runtime() {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let cxr = src.path().join("cxr");
    std::fs::create_dir_all(&cxr).unwrap();
    // Distinctive patient names and IDs, to look for in the logs.
    let radiograph = RadiographSpec {
        patient: PatientSpec::new("HONGCXR^GILDONG", "PIDCXR-4711", "report-cxr"),
        ..RadiographSpec::chest("report-cxr", 256)
    };
    synth::write_radiograph(&cxr.join("cxr.dcm"), &radiograph).unwrap();
    let mut ct = CtSeriesSpec {
        noise_hu: 5.0,
        patient: PatientSpec::new("KIMCT^MINSU", "PIDCT-0815", "report-ct"),
        ..CtSeriesSpec::chest("report-ct", 40, 96)
    };
    ct.origin_mm[2] = -200.0;
    ct.nodules = vec![Nodule { center_mm: [-70.0, -10.0, -150.0], diameter_mm: 12.0, kind: NoduleKind::Solid }];
    synth::write_ct_series(&src.path().join("ct"), &ct).unwrap();
    let store = tempfile::tempdir().unwrap();

    for (input, lang, loinc) in [(cxr.clone(), "en", "36554-4"), (src.path().join("ct"), "ko", "24627-2")] {
        let out = tempfile::tempdir().unwrap();
        let (stdout, stderr) = read_with_exports(store.path(), &input, out.path(), lang);
        assert!(stdout.contains("Preliminary report"), "{stdout}");
        check_exports(out.path(), loinc);
        // No patient name or ID in the logs (nor on stdout).
        let first = walk_first_dicom(&input);
        let info = pacs::file::read_info(&first).unwrap();
        for secret in [info.patient_name.as_str(), info.patient_id.as_str()] {
            assert!(!secret.is_empty());
            assert!(!stderr.contains(secret), "patient data in the log: {stderr}");
            assert!(!stdout.contains(secret), "patient data on stdout: {stdout}");
            let name_parts: Vec<&str> = secret.split('^').filter(|p| p.len() > 2).collect();
            for part in name_parts {
                assert!(!stderr.contains(part), "part of the patient name in the log");
            }
        }
        // The presented text, for a human reading the test log.
        let fhir: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap()).unwrap();
        eprintln!("{}", fhir["conclusion"]);
        if lang == "ko" {
            let fhir = std::fs::read_to_string(out.path().join("report.json")).unwrap();
            let v: serde_json::Value = serde_json::from_str(&fhir).unwrap();
            assert_eq!(v["language"], "ko");
            assert!(v["conclusion"].as_str().unwrap().contains("Lung-RADS v2022 범주"), "{v}");
        }
    }
    // The drafts and the audit trail are in the report store; the chain verifies.
    let text = lucent(store.path()).args(["audit", "verify"]).output().unwrap();
    assert!(text.status.success(), "{}", String::from_utf8_lossy(&text.stderr));
    let reports = ReportStore::open(store.path()).unwrap();
    assert_eq!(reports.reports().unwrap().len(), 2);
    let log = reports.audit_log().unwrap();
    for action in ["open", "ai_run", "draft", "export"] {
        assert!(log.iter().any(|e| e.action == action), "{action} audited");
    }
    let ai_run = log.iter().find(|e| e.action == "ai_run").unwrap();
    assert!(ai_run.detail.contains("lucent-test-cxr 1.0.0"), "{}", ai_run.detail);
}

fn walk_first_dicom(path: &Path) -> std::path::PathBuf {
    if path.is_file() {
        return path.to_path_buf();
    }
    let mut entries: Vec<_> = std::fs::read_dir(path).unwrap().flatten().map(|e| e.path()).collect();
    entries.sort();
    walk_first_dicom(&entries[0])
}

#[test]
fn audit_verify_exits_1_on_a_tampered_row() {
    let store = tempfile::tempdir().unwrap();
    add_people(store.path());
    let out = lucent(store.path()).args(["audit", "verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    // Edit the SQLite file directly: drop the guard and rewrite a row.
    let conn = rusqlite::Connection::open(store.path().join(ReportStore::FILE_NAME)).unwrap();
    conn.execute_batch(
        "DROP TRIGGER audit_no_update; UPDATE audit SET detail = '{\"role\":\"qa_lead\"}' WHERE id = 1;",
    )
    .unwrap();
    drop(conn);
    let out = lucent(store.path()).args(["audit", "verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("BROKEN at row 1"));
}

#[test]
fn a_store_killed_while_autosaving_keeps_the_last_draft_and_the_signed_report() {
    let store = tempfile::tempdir().unwrap();
    let mut child = lucent_with(store.path(), "test passphrase")
        .args(["report", "autosave-stress", "--study", "1.2.3.1", "--signed-study", "1.2.3.2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let started = Instant::now();
    let mut last_saved: Option<u64> = None;
    let mut signed = false;
    while started.elapsed() < Duration::from_secs(60) {
        let Some(Ok(line)) = lines.next() else { break };
        if line == "signed" {
            signed = true;
        } else if let Some(n) = line.strip_prefix("saved ") {
            last_saved = n.parse().ok();
            if last_saved >= Some(200) {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix, mid-loop
    child.wait().unwrap();
    assert!(signed, "the helper never signed");
    let last_saved = last_saved.expect("the helper never saved");

    let reports = ReportStore::open(store.path()).unwrap();
    assert_eq!(reports.integrity_check().unwrap(), "ok");
    assert!(reports.verify_audit().unwrap().is_intact());
    let draft = reports.draft("1.2.3.1").unwrap().expect("the draft survived");
    let VersionBody::Report(r) = draft.body else { panic!("a report body") };
    let text = r.section_text(report::SectionId::Impression).to_owned();
    let n: u64 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(n >= last_saved, "draft {n} is older than the last committed save {last_saved}");
    let versions = reports.versions("1.2.3.2").unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].kind, VersionKind::Signed);
    let VersionBody::Report(signed) = &versions[0].body else { panic!("a report body") };
    assert_eq!(signed.section_text(report::SectionId::Impression), "SIGNED CONTENT");
    // And it is still immutable after the crash.
    let mut reports = reports;
    assert!(matches!(reports.save_draft("x", "1.2.3.2", signed), Err(report::Error::Signed)));
}

/// A QA lead reviews three findings of a CXR (accepts one, rejects one, corrects one); the
/// reviewer's marks export as a Comprehensive SR that DCMTK reads (boxes as image regions on
/// the source image, decisions and reasons) and a JSONL without patient data.
#[test]
fn qa_marks_export_as_an_sr_with_image_regions_and_a_jsonl_without_patient_data() {
    use report::model::{AiFinding, BoxGeometry, FindingDecision, FindingEdit, ImageRef, ReasonCode, Side};
    let src = tempfile::tempdir().unwrap();
    let radiograph = RadiographSpec {
        patient: PatientSpec::new("QAMARKS^PATIENT", "PIDQA-9001", "qa-marks"),
        ..RadiographSpec::chest("qa-marks", 256)
    };
    synth::write_radiograph(&src.path().join("cxr.dcm"), &radiograph).unwrap();
    let info = pacs::file::read_info(&src.path().join("cxr.dcm")).unwrap();
    let store = tempfile::tempdir().unwrap();
    let imported = lucent(store.path()).arg("import").arg(src.path()).output().unwrap();
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));

    let study = info.study_instance_uid.clone();
    let image = ImageRef {
        series_uid: info.series_instance_uid.clone(),
        sop_class_uid: info.sop_class_uid.clone(),
        sop_instance_uid: info.sop_instance_uid.clone(),
        ..Default::default()
    };
    let finding = |label: &str, score: f32, min: [f64; 2], max: [f64; 2]| AiFinding {
        id: format!("cxr:lucent-cxr:{label}"),
        model_id: "lucent-cxr".into(),
        model_name: "Lucent CXR findings".into(),
        model_version: "0.1.0".into(),
        label: label.into(),
        score,
        threshold: 0.4,
        side: Side::Right,
        geometry: Some(BoxGeometry { min_px: min, max_px: max, ..Default::default() }),
        image: Some(image.clone()),
        ..Default::default()
    };
    let findings = vec![
        finding("nodule", 0.81, [40.0, 60.0], [70.0, 90.0]),
        finding("pneumothorax", 0.52, [150.0, 20.0], [230.0, 120.0]),
        finding("consolidation", 0.66, [30.0, 120.0], [110.0, 200.0]),
    ];
    add_people(store.path());
    {
        let mut reports = open_reports(store.path());
        let lee = credential(&reports, "qa.lee");
        reports.record_ai_run("dr.kim", &study, &findings).unwrap();
        reports.add_qa_review(&lee, &study, &findings[0].id, &FindingDecision::Accepted).unwrap();
        let rejected = FindingDecision::Rejected { reason: ReasonCode::Artifact, comment: "skin fold".into() };
        reports.add_qa_review(&lee, &study, &findings[1].id, &rejected).unwrap();
        let corrected = FindingDecision::Edited {
            edit: FindingEdit {
                label: Some("pleural_effusion".into()),
                geometry: Some(BoxGeometry { min_px: [20.0, 150.0], max_px: [120.0, 240.0], ..Default::default() }),
                ..Default::default()
            },
            reason: ReasonCode::WrongLabel,
            comment: String::new(),
        };
        // A first review, then a later one that counts.
        reports.add_qa_review(&lee, &study, &findings[2].id, &FindingDecision::Accepted).unwrap();
        reports.add_qa_review(&lee, &study, &findings[2].id, &corrected).unwrap();
    }

    let out = tempfile::tempdir().unwrap();
    // Only a QA lead may export.
    let refused = lucent_with(store.path(), "test passphrase")
        .args(["report", "qa-export", "--user", "dr.kim", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("needs a qa_lead"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let run = lucent_with(store.path(), "test passphrase")
        .args(["report", "qa-export", "--user", "qa.lee", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(
        stdout.contains("3 mark(s) from 1 study(ies): 1 accepted, 1 rejected, 1 corrected; 1 SR file(s)"),
        "{stdout}"
    );

    // The JSONL: one line per finding, the latest review, no patient data or comment text.
    let jsonl = std::fs::read_to_string(out.path().join("marks.jsonl")).unwrap();
    let marks: Vec<serde_json::Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(marks.len(), 3);
    let by_label = |ai: &str| marks.iter().find(|m| m["ai_label"] == ai).unwrap();
    assert_eq!(by_label("nodule")["decision"], "accepted");
    assert_eq!(by_label("pneumothorax")["decision"], "rejected");
    assert_eq!(by_label("pneumothorax")["reason"], "artifact");
    assert_eq!(by_label("pneumothorax")["has_comment"], true);
    let corrected = by_label("consolidation");
    assert_eq!(corrected["decision"], "corrected");
    assert_eq!(corrected["label"], "pleural_effusion");
    assert_eq!(corrected["box_px"], serde_json::json!([20.0, 150.0, 120.0, 240.0]));
    assert_eq!(corrected["ai_box_px"], serde_json::json!([30.0, 120.0, 110.0, 200.0]));
    assert_eq!(corrected["image"]["sop_instance_uid"], info.sop_instance_uid.as_str());
    for secret in ["QAMARKS", "PIDQA-9001", "skin fold"] {
        assert!(!jsonl.contains(secret), "{secret} in marks.jsonl");
    }

    // The SR: the study's patient, three measurement groups with regions on the source image.
    let sr_path = out.path().join("qa-marks-1.dcm");
    let sr = dicom_object::open_file(&sr_path).unwrap();
    let text = |tag| sr.element(tag).unwrap().to_str().unwrap().trim().to_owned();
    assert_eq!(text(dicom_dictionary_std::tags::STUDY_INSTANCE_UID), study);
    assert_eq!(text(dicom_dictionary_std::tags::PATIENT_ID), "PIDQA-9001");
    if tool("dsrdump") {
        let dump = dsrdump(&sr_path);
        assert_eq!(dump.matches("Image Region").count(), 3, "{dump}");
        assert!(dump.contains("POLYLINE"), "{dump}");
        for expected in
            ["Accepted by reviewer", "Rejected by reviewer", "Corrected by reviewer", "wrong label", "skin fold"]
        {
            assert!(dump.contains(expected), "{expected} missing: {dump}");
        }
        // The corrected label, not the AI's.
        assert!(dump.contains("Pleural effusion") && !dump.contains("Lung consolidation"), "{dump}");
        assert!(dump.contains(&info.sop_instance_uid), "the region refers to the source image");
    }
    // Audited.
    let reports = ReportStore::open(store.path()).unwrap();
    assert!(reports.audit_log().unwrap().iter().any(|e| e.action == "export" && e.detail.contains("qa_marks_sr")));
    assert!(reports.verify_audit().unwrap().is_intact());
}

/// Issue 14, item 4: `sign --user NAME` needed no credential. Now the passphrase unlocks the
/// user's key, a wrong one is refused, a prompt is never silently skipped, a forgotten passphrase
/// is replaced by a new key from an administrator, and what the old key signed still verifies.
#[test]
fn signing_needs_the_users_key_and_a_forgotten_passphrase_gets_a_new_one() {
    use report::model::{Decisions, Lang, StudyContext, StudyInputs};
    let store = tempfile::tempdir().unwrap();
    add_people(store.path());
    let draft = |study: &str| {
        let mut reports = open_reports(store.path());
        let inputs =
            StudyInputs { context: StudyContext { modality: "DX".into(), ..Default::default() }, ..Default::default() };
        reports.save_draft("dr.kim", study, &report::draft(&inputs, &Decisions::new(), Lang::En)).unwrap();
    };
    draft("1.2.3.1");
    // No passphrase and no terminal: refused with what to set, not signed.
    let out = lucent(store.path()).args(["report", "sign", "1.2.3.1", "--user", "dr.kim"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("LUCENT_PASSPHRASE_FILE"));
    // A wrong passphrase, and a QA lead's right one, are refused.
    let out = lucent_with(store.path(), "a wrong guess")
        .args(["report", "sign", "1.2.3.1", "--user", "dr.kim"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));
    let out = lucent_with(store.path(), "test passphrase")
        .args(["report", "sign", "1.2.3.1", "--user", "qa.lee"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(open_reports(store.path()).status("1.2.3.1").unwrap() == Some(report::ReportStatus::Draft));
    // The passphrase from a file.
    let file = store.path().join("kim.pass");
    std::fs::write(&file, "test passphrase\n").unwrap();
    let out = lucent(store.path())
        .env("LUCENT_PASSPHRASE_FILE", &file)
        .args(["report", "sign", "1.2.3.1", "--user", "dr.kim"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("with key"));

    // qa.lee forgets their passphrase; dr.kim (administrator) issues a new key as a reader.
    let out = lucent(store.path())
        .env("LUCENT_PASSPHRASE", "test passphrase")
        .env("LUCENT_NEW_PASSPHRASE", "lee's new passphrase")
        .args(["report", "rekey", "qa.lee", "--role", "reader", "--as", "dr.kim"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    draft("1.2.3.2");
    let out = lucent_with(store.path(), "lee's new passphrase")
        .args(["report", "sign", "1.2.3.2", "--user", "qa.lee"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let users = lucent(store.path()).args(["report", "users"]).output().unwrap();
    let users = String::from_utf8_lossy(&users.stdout);
    assert_eq!(users.lines().count(), 3, "{users}");
    assert!(users.contains("(replaced)") && users.contains("itself (trust root)"), "{users}");
    // Everything signed verifies, and `show` names the key.
    let out = lucent(store.path()).args(["audit", "verify"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let show = lucent(store.path()).args(["report", "show", "1.2.3.1"]).output().unwrap();
    assert!(String::from_utf8_lossy(&show.stdout).contains("signed by dr.kim at"));
    assert!(String::from_utf8_lossy(&show.stdout).contains(", key "));

    // A key row forged into the database (a user who can write reports.sqlite but holds no
    // administrator key) does not make a signer: `audit verify` fails on its signature.
    {
        let mut reports = open_reports(store.path());
        let kim = credential(&reports, "dr.kim");
        draft("1.2.3.3");
        reports.sign(&kim, "1.2.3.3").unwrap();
    }
    let conn = rusqlite::Connection::open(store.path().join(ReportStore::FILE_NAME)).unwrap();
    // Point the newest signature at qa.lee's replaced key: a signer swapped behind the triggers.
    conn.execute_batch(
        "DROP TRIGGER signed_versions_are_immutable;
         UPDATE versions SET signed_by = 'qa.lee' WHERE id = (SELECT MAX(id) FROM versions);",
    )
    .unwrap();
    drop(conn);
    let out = lucent(store.path()).args(["audit", "verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("CHANGED"));
}
