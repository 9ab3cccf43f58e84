//! Reading-error checks run before signing. They are warnings for the radiologist, never blocks:
//!
//! * [`CheckCode::Laterality`]: a sentence mentions a finding with the opposite side.
//! * [`CheckCode::Unmentioned`]: a flagged, not rejected AI finding that the text never mentions.
//! * [`CheckCode::Measurement`]: a size in mm, in a sentence about a nodule, that matches none of
//!   the nodule's measured diameters within max(1 mm, 10 %).
//! * [`CheckCode::LungRads`]: the Lung-RADS category stated in the text differs from the one the
//!   described nodules give (or none is stated in a screening report).
//!
//! The text is matched with simple word rules (English and Korean), not language understanding:
//! negated mentions ("no pneumothorax") count as mentions, and a sentence naming two findings on
//! different sides may warn needlessly. The checks are an aid, and say so.

use serde::{Deserialize, Serialize};

use crate::draft::{Report, SectionId};
use crate::model::{
    AiFinding, Decisions, Lang, LungRadsInput, ReportKind, Side, effective_findings, expected_lung_rads,
};
use crate::vocab::{self, side_mentions};

/// Which check fired (stable codes for logs, statistics and the GUI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CheckCode {
    Laterality,
    Unmentioned,
    Measurement,
    LungRads,
}

impl CheckCode {
    pub fn code(self) -> &'static str {
        match self {
            Self::Laterality => "LATERALITY",
            Self::Unmentioned => "UNMENTIONED",
            Self::Measurement => "MEASUREMENT",
            Self::LungRads => "LUNG_RADS",
        }
    }
}

/// One warning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warning {
    pub code: CheckCode,
    pub finding_id: Option<String>,
    pub message_en: String,
    pub message_ko: String,
}

impl Warning {
    pub fn message(&self, lang: Lang) -> &str {
        match lang {
            Lang::En => &self.message_en,
            Lang::Ko => &self.message_ko,
        }
    }
}

/// Splits text into sentences (on `.`, `!`, `?`, `。` followed by space or end, and on line breaks),
/// keeping decimal points inside numbers.
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == '\n' {
            out.push(std::mem::take(&mut current));
            continue;
        }
        current.push(c);
        let next = chars.get(i + 1).copied();
        if matches!(c, '.' | '!' | '?' | '。') && next.is_none_or(char::is_whitespace) {
            out.push(std::mem::take(&mut current));
        }
    }
    out.push(current);
    out.into_iter().map(|s| s.trim().to_lowercase()).filter(|s| !s.is_empty()).collect()
}

/// Whether `needle` occurs in `hay`; ASCII needles must start at a word boundary (so "right" is not
/// found in "bright"). Hangul needles match anywhere (particles attach to words).
fn mentions(hay: &str, needle: &str) -> bool {
    if !needle.is_ascii() {
        return hay.contains(needle);
    }
    hay.match_indices(needle).any(|(i, _)| !hay[..i].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric()))
}

fn mentions_finding(sentence: &str, f: &AiFinding) -> bool {
    let terms = vocab::terms(&f.label);
    let mut words = terms.mentions.clone();
    words.push(terms.en.to_lowercase());
    words.push(terms.ko.clone());
    words.iter().any(|w| mentions(sentence, w))
}

/// Whether a sentence is about this finding: it names the finding, or (nodules) its lobe.
fn about(sentence: &str, f: &AiFinding) -> bool {
    if mentions_finding(sentence, f) {
        return true;
    }
    f.lobe.is_some_and(|lobe| {
        [lobe.name(Lang::En), lobe.name(Lang::Ko), &lobe.abbreviation().to_lowercase()]
            .iter()
            .any(|w| mentions(sentence, w))
    })
}

fn opposite(side: Side) -> Option<Side> {
    match side {
        Side::Right => Some(Side::Left),
        Side::Left => Some(Side::Right),
        _ => None,
    }
}

fn states_side(sentence: &str, side: Side) -> bool {
    side_mentions(side).iter().any(|w| mentions(sentence, w))
}

/// Numbers followed by "mm" (not mm³ / mm3 / mm2 / mm²); "9.1 x 7.2 mm" gives both numbers.
fn sizes_mm(sentence: &str) -> Vec<f64> {
    let chars: Vec<char> = sentence.chars().collect();
    let mut numbers: Vec<(usize, usize, f64)> = Vec::new(); // (start, end) char indices
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() && (i == 0 || !chars[i - 1].is_ascii_alphanumeric()) {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || (chars[i] == '.' && i + 1 < chars.len() && chars[i + 1].is_ascii_digit()))
            {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            if let Ok(v) = text.parse::<f64>() {
                numbers.push((start, i, v));
            }
        } else {
            i += 1;
        }
    }
    let rest = |from: usize| -> String { chars[from..].iter().collect::<String>() };
    let mut out = Vec::new();
    let mut pending: Vec<f64> = Vec::new();
    for (k, &(_, end, value)) in numbers.iter().enumerate() {
        let after = rest(end);
        let after = after.trim_start();
        if let Some(unit) = after.strip_prefix("mm") {
            let cubic = unit.starts_with(['³', '²', '3', '2', '^']);
            if !cubic {
                out.append(&mut pending);
                out.push(value);
            }
            pending.clear();
        } else if after.starts_with(['x', '×', '*']) || after.starts_with("by ") {
            // "9.1 x 7.2 mm": the first number is a size when the next one carries mm.
            if numbers.get(k + 1).is_some() {
                pending.push(value);
            }
        } else {
            pending.clear();
        }
    }
    out
}

fn close(stated: f64, measured: f64) -> bool {
    (stated - measured).abs() <= (0.1 * measured).max(1.0)
}

/// The Lung-RADS category stated after "Lung-RADS" in the text, if any.
fn stated_lung_rads(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    for marker in ["lung-rads", "lungrads", "lung rads"] {
        for (i, _) in lower.match_indices(marker) {
            let tail: String = lower[i + marker.len()..].chars().take(48).collect();
            for token in tail.split(|c: char| c.is_whitespace() || matches!(c, ':' | ',' | '(' | ')' | '.' | ';')) {
                let token = token.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
                if token.is_empty()
                    || matches!(token, "v2022" | "2022" | "v1.1" | "category" | "cat" | "범주" | "카테고리")
                {
                    continue;
                }
                let upper = token.to_ascii_uppercase();
                if crate::model::lung_rads_rank(&upper).is_some() {
                    return Some(upper);
                }
                break;
            }
        }
    }
    None
}

/// Runs the four checks on the report text against the findings and decisions.
pub fn check(
    report: &Report,
    findings: &[AiFinding],
    decisions: &Decisions,
    lung_rads: Option<&LungRadsInput>,
) -> Vec<Warning> {
    let described = effective_findings(findings, decisions);
    // An image-level "abnormal" score names no finding a text could mention.
    let flagged: Vec<&AiFinding> =
        described.iter().filter(|f| f.is_flagged() && !crate::model::is_summary_label(&f.label)).collect();
    let body: Vec<String> = report
        .sections
        .iter()
        .filter(|s| s.id != SectionId::LungRads && s.id != SectionId::Technique)
        .flat_map(|s| sentences(&s.text))
        .collect();
    let mut warnings = Vec::new();

    for f in &flagged {
        let terms = vocab::terms(&f.label);
        let name_en = terms.en.clone();
        let name_ko = terms.ko.clone();
        // Unmentioned.
        if !body.iter().any(|s| about(s, f)) {
            warnings.push(Warning {
                code: CheckCode::Unmentioned,
                finding_id: Some(f.id.clone()),
                message_en: format!(
                    "The AI flagged {name_en} (score {:.2}, threshold {:.2}) and the report does not mention it.",
                    f.score, f.threshold
                ),
                message_ko: format!(
                    "AI가 {name_ko}을(를) 표시했으나 (점수 {:.2}, 기준 {:.2}) 보고서에 언급이 없습니다.",
                    f.score, f.threshold
                ),
            });
        }
        // Laterality.
        let side = f.effective_side();
        if terms.lateral
            && let Some(wrong) = opposite(side)
        {
            let contradicted = body.iter().any(|s| about(s, f) && states_side(s, wrong) && !states_side(s, side));
            if contradicted {
                let (en, ko) = (vocab::side_word(side, Lang::En), vocab::side_word(side, Lang::Ko));
                let (wen, wko) = (vocab::side_word(wrong, Lang::En), vocab::side_word(wrong, Lang::Ko));
                warnings.push(Warning {
                    code: CheckCode::Laterality,
                    finding_id: Some(f.id.clone()),
                    message_en: format!("The report describes {name_en} on the {wen}; the finding is on the {en}."),
                    message_ko: format!("보고서에는 {name_ko}이(가) {wko}으로 기술되어 있으나 소견은 {ko}입니다."),
                });
            }
        }
        // Measurement.
        if let Some(n) = &f.nodule {
            let measured = [n.long_axis_mm, n.short_axis_mm, n.mean_diameter_mm];
            let others: Vec<[f64; 3]> = flagged
                .iter()
                .filter(|o| o.id != f.id && o.lobe == f.lobe)
                .filter_map(|o| o.nodule.as_ref().map(|m| [m.long_axis_mm, m.short_axis_mm, m.mean_diameter_mm]))
                .collect();
            let mut bad: Vec<f64> = Vec::new();
            for s in body.iter().filter(|s| about(s, f)) {
                for v in sizes_mm(s) {
                    let fits =
                        measured.iter().any(|&m| close(v, m)) || others.iter().any(|o| o.iter().any(|&m| close(v, m)));
                    if !fits && !bad.contains(&v) {
                        bad.push(v);
                    }
                }
            }
            for v in bad {
                warnings.push(Warning {
                    code: CheckCode::Measurement,
                    finding_id: Some(f.id.clone()),
                    message_en: format!(
                        "The report states {v} mm; the measured nodule is {:.1} x {:.1} mm (mean {:.1} mm).",
                        n.long_axis_mm, n.short_axis_mm, n.mean_diameter_mm
                    ),
                    message_ko: format!(
                        "보고서에는 {v} mm로 기술되어 있으나 측정된 결절은 {:.1} × {:.1} mm (평균 {:.1} mm)입니다.",
                        n.long_axis_mm, n.short_axis_mm, n.mean_diameter_mm
                    ),
                });
            }
        }
    }

    // Lung-RADS.
    if report.kind == ReportKind::Ldct {
        let visible: Vec<AiFinding> = flagged.iter().map(|f| (*f).clone()).collect();
        let expected = expected_lung_rads(report.kind, &visible, lung_rads);
        let stated = stated_lung_rads(&report.body_text());
        match (stated, expected) {
            (Some(s), Some(e)) if s != e => warnings.push(Warning {
                code: CheckCode::LungRads,
                finding_id: None,
                message_en: format!("The report states Lung-RADS {s}; the nodules described give {e}."),
                message_ko: format!("보고서의 Lung-RADS 범주는 {s}이나 기술된 결절에 따르면 {e}입니다."),
            }),
            (None, Some(e)) => warnings.push(Warning {
                code: CheckCode::LungRads,
                finding_id: None,
                message_en: format!("The report states no Lung-RADS category; the nodules described give {e}."),
                message_ko: format!("보고서에 Lung-RADS 범주가 없습니다. 기술된 결절에 따르면 {e}입니다."),
            }),
            _ => {}
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::draft::draft;
    use crate::model::{FindingDecision, Lobe, NoduleMeasurements, NoduleType, ReasonCode, StudyContext, StudyInputs};

    fn finding(id: &str, label: &str, side: Side) -> AiFinding {
        AiFinding { id: id.into(), label: label.into(), score: 0.9, threshold: 0.5, side, ..Default::default() }
    }

    fn cxr(findings: Vec<AiFinding>) -> StudyInputs {
        StudyInputs { context: StudyContext { modality: "DX".into(), ..Default::default() }, findings, lung_rads: None }
    }

    fn codes(w: &[Warning]) -> Vec<CheckCode> {
        w.iter().map(|w| w.code).collect()
    }

    #[test]
    fn the_draft_itself_raises_no_warning() {
        let inputs = cxr(vec![finding("p", "pneumothorax", Side::Right), finding("c", "consolidation", Side::Left)]);
        for lang in [Lang::En, Lang::Ko] {
            let report = draft(&inputs, &Decisions::new(), lang);
            assert_eq!(check(&report, &inputs.findings, &Decisions::new(), None), vec![], "{lang:?}");
        }
    }

    #[test]
    fn laterality_fires_and_does_not_fire() {
        let inputs = cxr(vec![finding("p", "pneumothorax", Side::Right)]);
        let mut report = draft(&inputs, &Decisions::new(), Lang::En);
        report.set_section_text(SectionId::Pleura, "Small left apical pneumothorax.");
        report.set_section_text(SectionId::Impression, "Left pneumothorax.");
        let w = check(&report, &inputs.findings, &Decisions::new(), None);
        assert_eq!(codes(&w), vec![CheckCode::Laterality]);
        assert_eq!(w[0].finding_id.as_deref(), Some("p"));
        // Korean text, right side: fine; left: warns.
        report.set_section_text(SectionId::Pleura, "우측 기흉.");
        report.set_section_text(SectionId::Impression, "우측 기흉 의심.");
        assert!(check(&report, &inputs.findings, &Decisions::new(), None).is_empty());
        report.set_section_text(SectionId::Impression, "좌측 기흉 의심.");
        assert_eq!(codes(&check(&report, &inputs.findings, &Decisions::new(), None)), vec![CheckCode::Laterality]);
        // "bright" is not "right".
        let inputs = cxr(vec![finding("b", "bright_region", Side::Left)]);
        let mut report = draft(&inputs, &Decisions::new(), Lang::En);
        report.set_section_text(SectionId::Lungs, "Bright region in the left lung.");
        assert!(check(&report, &inputs.findings, &Decisions::new(), None).is_empty());
    }

    #[test]
    fn unmentioned_fires_unless_rejected_or_below_threshold() {
        let mut low = finding("e", "pleural_effusion", Side::Left);
        low.score = 0.3;
        let inputs = cxr(vec![finding("p", "pneumothorax", Side::Right), low]);
        let mut report = draft(&inputs, &Decisions::new(), Lang::En);
        report.set_section_text(SectionId::Pleura, "Normal pleura.");
        report.set_section_text(SectionId::Impression, "Normal chest.");
        let w = check(&report, &inputs.findings, &Decisions::new(), None);
        assert_eq!(codes(&w), vec![CheckCode::Unmentioned]);
        let mut decisions = Decisions::new();
        decisions.insert(
            "p".into(),
            FindingDecision::Rejected { reason: ReasonCode::FalsePositive, comment: String::new() },
        );
        assert!(check(&report, &inputs.findings, &decisions, None).is_empty());
    }

    fn ldct() -> StudyInputs {
        let mut f = finding("n1", "nodule", Side::Unknown);
        f.lobe = Some(Lobe::RightLower);
        f.nodule = Some(NoduleMeasurements {
            long_axis_mm: 9.0,
            short_axis_mm: 7.0,
            mean_diameter_mm: 8.0,
            volume_mm3: 260.0,
            nodule_type: NoduleType::Solid,
            mean_hu: None,
            lung_rads: Some("4A".into()),
        });
        StudyInputs {
            context: StudyContext { modality: "CT".into(), ..Default::default() },
            findings: vec![f],
            lung_rads: None,
        }
    }

    #[test]
    fn measurement_fires_and_does_not_fire() {
        let inputs = ldct();
        let mut report = draft(&inputs, &Decisions::new(), Lang::En);
        assert!(check(&report, &inputs.findings, &Decisions::new(), None).is_empty());
        report.set_section_text(SectionId::Nodules, "Right lower lobe solid nodule, 8.5 mm, volume 300 mm³.");
        assert!(check(&report, &inputs.findings, &Decisions::new(), None).is_empty());
        report.set_section_text(SectionId::Nodules, "Right lower lobe solid nodule, 12 x 7 mm.");
        let w = check(&report, &inputs.findings, &Decisions::new(), None);
        assert_eq!(codes(&w), vec![CheckCode::Measurement]);
        assert!(w[0].message_en.contains("12 mm"), "{}", w[0].message_en);
        report.set_section_text(SectionId::Nodules, "우하엽에 15 mm 고형 결절.");
        assert_eq!(codes(&check(&report, &inputs.findings, &Decisions::new(), None)), vec![CheckCode::Measurement]);
    }

    #[test]
    fn lung_rads_fires_and_does_not_fire() {
        let inputs = ldct();
        let mut report = draft(&inputs, &Decisions::new(), Lang::Ko);
        assert!(check(&report, &inputs.findings, &Decisions::new(), None).is_empty());
        report.set_section_text(SectionId::LungRads, "Lung-RADS v2022 범주 2.");
        let w = check(&report, &inputs.findings, &Decisions::new(), None);
        assert_eq!(codes(&w), vec![CheckCode::LungRads]);
        report.set_section_text(SectionId::LungRads, "Lung-RADS category 4A, 3-month LDCT.");
        assert!(check(&report, &inputs.findings, &Decisions::new(), None).is_empty());
        report.set_section_text(SectionId::LungRads, "");
        assert_eq!(codes(&check(&report, &inputs.findings, &Decisions::new(), None)), vec![CheckCode::LungRads]);
    }

    #[test]
    fn sizes_are_parsed() {
        assert_eq!(sizes_mm("9.1 x 7.2 mm (mean 8.2 mm), volume 268 mm³"), vec![9.1, 7.2, 8.2]);
        assert_eq!(sizes_mm("8mm nodule, 3 cm mass, 12 mm3"), vec![8.0]);
        assert_eq!(stated_lung_rads("Lung-RADS v2022 category 4B (Very suspicious)").as_deref(), Some("4B"));
    }
}
