//! FHIR R4 `DiagnosticReport` JSON for a report.
//!
//! * `status`: `preliminary` (unsigned, exported explicitly as preliminary), `final`, `amended`.
//! * `code`: LOINC 36554-4 "XR Chest Single view" for CXR reports (Lucent reads one frontal
//!   view) and 24627-2 "CT Chest" for LDCT reports ([`ReportKind::loinc`]).
//! * `subject`: display name and identifier from the study (the FHIR file is a clinical export; it
//!   is never logged).
//! * `presentedForm`: the report text, UTF-8, base64; `conclusion`: the impression / Lung-RADS.
//! * `contained`: one `Device` per AI model (name and version) and one `Observation` per AI finding
//!   the report describes (its sentence, side or lobe, and nodule measurements in UCUM units),
//!   each observation pointing at its device; `result` references them.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::draft::Report;
use crate::model::{AiFinding, Decisions, Lang, StudyContext, effective_findings};
use crate::store::ReportStatus;
use crate::vocab;

/// What the FHIR export needs besides the report.
#[derive(Debug, Clone)]
pub struct FhirInput<'a> {
    pub context: &'a StudyContext,
    pub report: &'a Report,
    pub status: ReportStatus,
    pub findings: &'a [AiFinding],
    pub decisions: &'a Decisions,
    /// Signed by / at (RFC 3339) for final and amended reports.
    pub signed_by: Option<&'a str>,
    /// When the report was issued (RFC 3339).
    pub issued: &'a str,
    /// Addenda texts, oldest first, appended to the presented text.
    pub addenda: &'a [String],
}

/// `YYYYMMDD` to `YYYY-MM-DD` (None when not a DICOM date).
fn fhir_date(dicom: &str) -> Option<String> {
    let d = dicom.trim();
    (d.len() == 8 && d.chars().all(|c| c.is_ascii_digit())).then(|| format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..]))
}

fn ucum(value: f64, unit: &str) -> Value {
    json!({ "value": (value * 10.0).round() / 10.0, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit })
}

/// The report text as presented (titles, sections, addenda).
pub fn presented_text(report: &Report, addenda: &[String]) -> String {
    let mut text = report.to_text();
    for (i, a) in addenda.iter().enumerate() {
        let title = match report.lang {
            Lang::En => format!("Addendum {}", i + 1),
            Lang::Ko => format!("추가 보고 {}", i + 1),
        };
        text.push_str(&format!("\n{title}:\n{}\n", a.trim()));
    }
    text
}

/// Builds the DiagnosticReport.
pub fn diagnostic_report(input: &FhirInput<'_>) -> Value {
    let ctx = input.context;
    let (loinc, display) = input.report.kind.loinc();
    let described: Vec<AiFinding> =
        effective_findings(input.findings, input.decisions).into_iter().filter(AiFinding::is_flagged).collect();
    let mut devices: Vec<(String, String, String)> = Vec::new();
    for f in &described {
        let key = (f.model_id.clone(), f.model_name.clone(), f.model_version.clone());
        if !devices.contains(&key) {
            devices.push(key);
        }
    }
    let mut contained = Vec::new();
    for (i, (id, name, version)) in devices.iter().enumerate() {
        contained.push(json!({
            "resourceType": "Device",
            "id": format!("ai-model-{}", i + 1),
            "identifier": [{ "system": "urn:lucent:model", "value": id }],
            "deviceName": [{ "name": if name.is_empty() { id } else { name }, "type": "model-name" }],
            "version": [{ "value": version }],
            "note": [{ "text": crate::DISCLAIMER }],
        }));
    }
    let status = input.status.fhir();
    let mut results = Vec::new();
    for (i, f) in described.iter().enumerate() {
        let terms = vocab::terms(&f.label);
        let device = devices
            .iter()
            .position(|d| d.0 == f.model_id && d.2 == f.model_version)
            .map(|k| format!("#ai-model-{}", k + 1))
            .unwrap_or_default();
        let mut obs = json!({
            "resourceType": "Observation",
            "id": format!("finding-{}", i + 1),
            "status": status,
            "code": { "text": terms.en },
            "valueString": terms.name(input.report.lang),
            "device": { "reference": device },
            "identifier": [{ "system": "urn:lucent:finding", "value": f.id }],
            "note": [{ "text": format!("AI score {:.3} (threshold {:.3})", f.score, f.threshold) }],
        });
        if let Some(lobe) = f.lobe {
            let (code, meaning) = lobe.snomed();
            obs["bodySite"] = json!({
                "coding": [{ "system": "http://snomed.info/sct", "code": code, "display": meaning }],
                "text": lobe.name(Lang::En),
            });
        } else if let Some(side) = Some(vocab::side_word(f.effective_side(), Lang::En)).filter(|s| !s.is_empty()) {
            obs["bodySite"] = json!({ "text": side });
        }
        if let Some(n) = &f.nodule {
            obs["component"] = json!([
                { "code": { "coding": [{ "system": "http://snomed.info/sct", "code": "103339001", "display": "Long axis" }] },
                  "valueQuantity": ucum(n.long_axis_mm, "mm") },
                { "code": { "coding": [{ "system": "http://snomed.info/sct", "code": "103340004", "display": "Short axis" }] },
                  "valueQuantity": ucum(n.short_axis_mm, "mm") },
                { "code": { "coding": [{ "system": "http://snomed.info/sct", "code": "81827009", "display": "Diameter" }] },
                  "valueQuantity": ucum(n.mean_diameter_mm, "mm") },
                { "code": { "coding": [{ "system": "http://snomed.info/sct", "code": "118565006", "display": "Volume" }] },
                  "valueQuantity": ucum(n.volume_mm3, "mm3") },
            ]);
        }
        results.push(json!({ "reference": format!("#finding-{}", i + 1) }));
        contained.push(obs);
    }
    let text = presented_text(input.report, input.addenda);
    let mut report = json!({
        "resourceType": "DiagnosticReport",
        "id": format!("lucent-{}", ctx.study_uid.replace('.', "-")),
        "language": input.report.lang.code(),
        "identifier": [{ "system": "urn:dicom:uid", "value": format!("urn:oid:{}", ctx.study_uid) }],
        "status": status,
        "category": [{ "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"
        }] }],
        "code": { "coding": [{ "system": "http://loinc.org", "code": loinc, "display": display }], "text": display },
        "subject": { "display": ctx.patient_name, "identifier": { "value": ctx.patient_id } },
        "issued": input.issued,
        "conclusion": input.report.conclusion(),
        "presentedForm": [{
            "contentType": "text/plain; charset=utf-8",
            "language": input.report.lang.code(),
            "title": match input.status {
                ReportStatus::Draft => "PRELIMINARY — NOT SIGNED",
                ReportStatus::Final => "Final report",
                ReportStatus::Amended => "Amended report",
            },
            "data": base64::engine::general_purpose::STANDARD.encode(text.as_bytes()),
        }],
        "extension": [{
            "url": "urn:lucent:ai-disclaimer",
            "valueString": crate::DISCLAIMER,
        }],
    });
    if let Some(date) = fhir_date(&ctx.study_date) {
        report["effectiveDateTime"] = json!(date);
    }
    if !ctx.accession.is_empty()
        && let Some(ids) = report["identifier"].as_array_mut()
    {
        ids.push(json!({ "type": { "text": "Accession Number" }, "value": ctx.accession }));
    }
    if let Some(signer) = input.signed_by {
        report["resultsInterpreter"] = json!([{ "display": signer }]);
        report["performer"] = json!([{ "display": signer }]);
    }
    if !contained.is_empty() {
        report["contained"] = Value::Array(contained);
        report["result"] = Value::Array(results);
    }
    report
}

/// Checks the parts of the R4 shape Lucent relies on (resourceType, required `status` and `code`,
/// status value set, contained resources with ids, local references that resolve). Returns the
/// problems found.
pub fn validate(report: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if report["resourceType"] != "DiagnosticReport" {
        problems.push("resourceType is not DiagnosticReport".to_owned());
    }
    match report["status"].as_str() {
        Some(
            "registered" | "partial" | "preliminary" | "final" | "amended" | "corrected" | "appended" | "cancelled"
            | "entered-in-error" | "unknown",
        ) => {}
        other => problems.push(format!("status {other:?} is not in the R4 value set")),
    }
    if report["code"]["coding"].as_array().is_none_or(Vec::is_empty) {
        problems.push("code has no coding".to_owned());
    }
    let ids: Vec<String> = report["contained"]
        .as_array()
        .map(|c| c.iter().filter_map(|r| r["id"].as_str().map(|id| format!("#{id}"))).collect())
        .unwrap_or_default();
    if let Some(contained) = report["contained"].as_array() {
        for r in contained {
            if r["resourceType"].as_str().is_none() || r["id"].as_str().is_none() {
                problems.push("a contained resource lacks resourceType or id".to_owned());
            }
            if let Some(reference) = r["device"]["reference"].as_str()
                && !ids.iter().any(|id| id == reference)
            {
                problems.push(format!("unresolved reference {reference}"));
            }
        }
    }
    if let Some(results) = report["result"].as_array() {
        for r in results {
            let reference = r["reference"].as_str().unwrap_or_default();
            if !ids.iter().any(|id| id == reference) {
                problems.push(format!("unresolved result reference {reference}"));
            }
        }
    }
    for form in report["presentedForm"].as_array().into_iter().flatten() {
        let data = form["data"].as_str().unwrap_or_default();
        if base64::engine::general_purpose::STANDARD.decode(data).is_err() {
            problems.push("presentedForm data is not base64".to_owned());
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::draft::draft;
    use crate::model::{Lobe, NoduleMeasurements, NoduleType, StudyInputs};

    #[test]
    fn a_preliminary_ldct_report_has_the_r4_shape() {
        let inputs = StudyInputs {
            context: StudyContext {
                study_uid: "1.2.826.0.1".into(),
                modality: "CT".into(),
                patient_name: "Hong^Gildong".into(),
                patient_id: "P001".into(),
                study_date: "20240131".into(),
                accession: "A1".into(),
                ..Default::default()
            },
            findings: vec![AiFinding {
                id: "n1".into(),
                model_id: "lucent-test-ct-detect".into(),
                model_name: "Toy".into(),
                model_version: "1.0.0".into(),
                label: "nodule".into(),
                score: 0.8,
                threshold: 0.5,
                lobe: Some(Lobe::LeftUpper),
                nodule: Some(NoduleMeasurements {
                    long_axis_mm: 6.0,
                    short_axis_mm: 5.0,
                    mean_diameter_mm: 5.5,
                    volume_mm3: 80.0,
                    nodule_type: NoduleType::Solid,
                    mean_hu: None,
                    lung_rads: Some("2".into()),
                }),
                ..Default::default()
            }],
            lung_rads: None,
        };
        let report = draft(&inputs, &Decisions::new(), Lang::Ko);
        let fhir = diagnostic_report(&FhirInput {
            context: &inputs.context,
            report: &report,
            status: ReportStatus::Draft,
            findings: &inputs.findings,
            decisions: &Decisions::new(),
            signed_by: None,
            issued: "2024-01-31T10:00:00Z",
            addenda: &[],
        });
        assert_eq!(validate(&fhir), Vec::<String>::new());
        assert_eq!(fhir["status"], "preliminary");
        assert_eq!(fhir["code"]["coding"][0]["code"], "24627-2");
        assert_eq!(fhir["effectiveDateTime"], "2024-01-31");
        assert_eq!(fhir["contained"][0]["version"][0]["value"], "1.0.0");
        assert_eq!(fhir["contained"][1]["bodySite"]["coding"][0]["code"], "44714003");
        let text = base64::engine::general_purpose::STANDARD
            .decode(fhir["presentedForm"][0]["data"].as_str().unwrap())
            .unwrap();
        assert!(String::from_utf8(text).unwrap().contains("좌상엽"));
        let mut broken = fhir.clone();
        broken["status"] = json!("signed");
        broken["result"] = json!([{ "reference": "#nowhere" }]);
        assert_eq!(validate(&broken).len(), 2);
    }
}
