//! Finding labels as report words: the English and Korean names of the labels Lucent's models use,
//! the section each belongs to, and the words that count as "mentioning" it in a reader's text.
//! Unknown labels fall back to the label itself (underscores as spaces).

use crate::draft::SectionId;
use crate::model::{Lang, Side};

/// How a label is written and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LabelTerms {
    pub en: String,
    pub ko: String,
    pub section: SectionId,
    /// Lower-case words whose presence in the text counts as mentioning the finding.
    pub mentions: Vec<String>,
    /// Whether the finding has a side (cardiomegaly has none).
    pub lateral: bool,
}

impl LabelTerms {
    pub fn name(&self, lang: Lang) -> &str {
        match lang {
            Lang::En => &self.en,
            Lang::Ko => &self.ko,
        }
    }
}

/// (keys, en, ko, section, lateral, extra mention words)
type Row = (&'static [&'static str], &'static str, &'static str, SectionId, bool, &'static [&'static str]);

const KNOWN: &[Row] = &[
    (&["consolidation"], "consolidation", "경화", SectionId::Lungs, true, &["consolidat", "airspace", "경화"]),
    (&["pneumonia"], "pneumonia", "폐렴", SectionId::Lungs, true, &["pneumonia", "폐렴"]),
    (&["atelectasis"], "atelectasis", "무기폐", SectionId::Lungs, true, &["atelecta", "무기폐"]),
    (&["nodule", "lung_nodule", "pulmonary_nodule"], "nodule", "결절", SectionId::Lungs, true, &["nodul", "결절"]),
    (&["mass", "lung_mass"], "mass", "종괴", SectionId::Lungs, true, &["mass", "종괴"]),
    (
        &["lung_opacity", "opacity"],
        "opacity",
        "음영 증가",
        SectionId::Lungs,
        true,
        &["opacit", "음영", "consolidat", "infiltrat"],
    ),
    (&["infiltration", "infiltrate"], "infiltrate", "침윤", SectionId::Lungs, true, &["infiltrat", "침윤", "opacit"]),
    (&["edema", "pulmonary_edema"], "pulmonary oedema", "폐부종", SectionId::Lungs, true, &["edema", "oedema", "부종"]),
    (&["emphysema"], "emphysema", "폐기종", SectionId::Lungs, true, &["emphysem", "폐기종"]),
    (&["fibrosis"], "fibrosis", "섬유화", SectionId::Lungs, true, &["fibros", "fibrotic", "섬유화"]),
    (&["lesion", "lung_lesion"], "lesion", "병변", SectionId::Lungs, true, &["lesion", "병변"]),
    (&["pneumothorax"], "pneumothorax", "기흉", SectionId::Pleura, true, &["pneumothora", "기흉"]),
    (
        &["effusion", "pleural_effusion"],
        "pleural effusion",
        "흉수",
        SectionId::Pleura,
        true,
        &["effusion", "흉수", "흉막삼출", "흉막 삼출"],
    ),
    (
        &["pleural_thickening", "pleural_other"],
        "pleural thickening",
        "흉막 비후",
        SectionId::Pleura,
        true,
        &["pleural thicken", "흉막 비후", "흉막비후"],
    ),
    (
        &["cardiomegaly", "enlarged_cardiomediastinum"],
        "cardiomegaly",
        "심비대",
        SectionId::HeartMediastinum,
        false,
        &["cardiomegal", "enlarged heart", "heart is enlarged", "심비대", "심장 비대", "심장비대", "enlarged cardi"],
    ),
    (
        &["widened_mediastinum", "mediastinal_widening"],
        "widened mediastinum",
        "종격동 확장",
        SectionId::HeartMediastinum,
        false,
        &["mediastin", "종격동"],
    ),
    (
        &["hernia", "hiatal_hernia"],
        "hiatal hernia",
        "열공 탈장",
        SectionId::HeartMediastinum,
        false,
        &["hernia", "탈장"],
    ),
    (&["fracture", "rib_fracture"], "fracture", "골절", SectionId::Bones, true, &["fractur", "골절"]),
];

fn normalise(label: &str) -> String {
    label.trim().to_lowercase().replace([' ', '-'], "_")
}

/// The words for a label.
pub(crate) fn terms(label: &str) -> LabelTerms {
    let key = normalise(label);
    if let Some((_, en, ko, section, lateral, mentions)) = KNOWN.iter().find(|row| row.0.contains(&key.as_str())) {
        return LabelTerms {
            en: (*en).to_owned(),
            ko: (*ko).to_owned(),
            section: *section,
            mentions: mentions.iter().map(|m| (*m).to_owned()).collect(),
            lateral: *lateral,
        };
    }
    let words = key.replace('_', " ");
    LabelTerms { en: words.clone(), ko: words.clone(), section: SectionId::Lungs, mentions: vec![words], lateral: true }
}

/// The side as an adjective ("right", "우측"); empty when unknown.
pub(crate) fn side_word(side: Side, lang: Lang) -> &'static str {
    match (side, lang) {
        (Side::Right, Lang::En) => "right",
        (Side::Left, Lang::En) => "left",
        (Side::Bilateral, Lang::En) => "bilateral",
        (Side::Right, Lang::Ko) => "우측",
        (Side::Left, Lang::Ko) => "좌측",
        (Side::Bilateral, Lang::Ko) => "양측",
        (Side::Unknown, _) => "",
    }
}

/// Words that state a side, in either language, lower case.
pub(crate) fn side_mentions(side: Side) -> &'static [&'static str] {
    match side {
        Side::Right => {
            &["right", "rt.", "rul", "rml", "rll", "우측", "오른쪽", "우상엽", "우중엽", "우하엽", "우폐", "우측폐"]
        }
        Side::Left => &["left", "lt.", "lul", "lll", "좌측", "왼쪽", "좌상엽", "좌하엽", "좌폐", "설상엽"],
        Side::Bilateral => &["bilateral", "both", "양측", "양폐"],
        Side::Unknown => &[],
    }
}

/// Upper-cases the first letter.
pub(crate) fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Lung-RADS v2022 descriptor and management by category code, in the report's language. Source:
/// ACR Lung-RADS v2022 (same table as `inference::lungrads`).
pub(crate) fn lung_rads_text(code: &str, lang: Lang) -> (&'static str, &'static str) {
    let code = code.trim().to_ascii_uppercase();
    match (code.as_str(), lang) {
        ("0", Lang::En) => (
            "Incomplete",
            "Additional lung cancer screening CT images and/or comparison to prior chest CT examinations is needed.",
        ),
        ("1", Lang::En) => ("Negative", "Continue annual screening with LDCT in 12 months."),
        ("2", Lang::En) => ("Benign", "Continue annual screening with LDCT in 12 months."),
        ("3", Lang::En) => ("Probably benign", "6-month LDCT."),
        ("4A", Lang::En) => (
            "Suspicious",
            "3-month LDCT; PET/CT may be considered if there is a solid nodule or solid component of 8 mm (268 mm³) or more.",
        ),
        ("4B" | "4X", Lang::En) => (
            "Very suspicious",
            "Referral for further clinical evaluation: diagnostic chest CT with or without contrast; PET/CT may be \
             considered if there is a solid nodule or solid component of 8 mm (268 mm³) or more; tissue sampling.",
        ),
        ("0", Lang::Ko) => ("불완전", "추가 폐암 검진 CT 영상 및/또는 이전 흉부 CT와의 비교가 필요함."),
        ("1", Lang::Ko) => ("음성", "12개월 후 저선량 CT로 연례 검진 지속."),
        ("2", Lang::Ko) => ("양성 소견", "12개월 후 저선량 CT로 연례 검진 지속."),
        ("3", Lang::Ko) => ("양성 가능성 높음", "6개월 후 저선량 CT."),
        ("4A", Lang::Ko) => (
            "의심",
            "3개월 후 저선량 CT; 8 mm (268 mm³) 이상의 고형 결절 또는 고형 성분이 있으면 PET/CT를 고려할 수 있음.",
        ),
        ("4B" | "4X", Lang::Ko) => (
            "매우 의심",
            "추가 임상 평가 의뢰: 조영 증강 여부와 관계없이 진단적 흉부 CT; 8 mm (268 mm³) 이상의 고형 결절 또는 \
             고형 성분이 있으면 PET/CT를 고려할 수 있음; 조직 검사.",
        ),
        (_, Lang::En) => ("Unknown category", "Management to be determined by the radiologist."),
        (_, Lang::Ko) => ("알 수 없는 범주", "영상의학과 의사가 관리 방침을 결정함."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_labels() {
        assert_eq!(terms("Pleural Effusion").ko, "흉수");
        assert_eq!(terms("pneumothorax").section, SectionId::Pleura);
        let unknown = terms("bright_region");
        assert_eq!(unknown.en, "bright region");
        assert_eq!(unknown.section, SectionId::Lungs);
    }
}
