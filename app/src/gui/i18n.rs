//! Korean and English UI text, switchable at run time, and the bundled Hangul font.

/// UI language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    En,
    Ko,
}

/// English -> Korean. English strings are the keys; a missing entry falls back to English.
const KO: &[(&str, &str)] = &[
    ("Studies", "검사 목록"),
    ("Search name, ID, accession", "이름, ID, 검사번호 검색"),
    ("Modality", "모달리티"),
    ("All", "전체"),
    ("From", "시작일"),
    ("To", "종료일"),
    ("Series", "시리즈"),
    ("images", "영상"),
    ("No studies in the store", "저장소에 검사가 없습니다"),
    ("Layout", "화면 분할"),
    ("Window", "윈도우"),
    ("Invert", "반전"),
    ("Reset", "초기화"),
    ("Smooth", "보간"),
    ("Rotate", "회전"),
    ("Flip H", "좌우 반전"),
    ("Flip V", "상하 반전"),
    ("Cine", "시네"),
    ("fps", "fps"),
    ("Drop a series here or double-click one in the browser", "시리즈를 여기로 끌어오거나 목록에서 더블클릭하세요"),
    ("Loading", "불러오는 중"),
    ("decoded", "디코딩됨"),
    ("Store", "저장소"),
    ("patients", "환자"),
    ("studies", "검사"),
    ("Language", "언어"),
    ("Lung", "폐"),
    ("Mediastinum", "종격동"),
    ("Bone", "뼈"),
    ("Abdomen", "복부"),
    ("Brain", "뇌"),
    ("Default", "기본값"),
    ("File", "파일"),
    ("Research and demonstration only — not for diagnosis", "연구 및 시연용 — 진단용이 아님"),
    ("Warning", "경고"),
    ("uncalibrated (detector)", "보정 안 됨 (검출기 기준)"),
    ("Slice", "슬라이스"),
    ("Zoom", "확대"),
    ("Thickness", "두께"),
    ("Demo", "데모"),
    ("Axial", "축상면"),
    ("Coronal", "관상면"),
    ("Sagittal", "시상면"),
    ("Plane", "단면"),
    ("Slab", "슬랩"),
    ("Stack", "원본 스택"),
    ("W/L", "W/L"),
    ("Sync", "동기화"),
    ("Import files…", "파일 가져오기…"),
    ("Import folder…", "폴더 가져오기…"),
    ("Importing", "가져오는 중"),
    ("Cancel", "취소"),
    ("Overlays", "오버레이"),
    ("Settings", "설정"),
    ("AI findings", "AI 소견"),
    ("AI is not available", "AI를 사용할 수 없음"),
    ("Run on open", "열 때 실행"),
    ("Test models", "테스트 모델"),
    ("Opacity", "불투명도"),
    ("Open a series", "시리즈를 여세요"),
    ("Run AI", "AI 실행"),
    ("Running models…", "모델 실행 중…"),
    ("Nodule", "결절"),
    ("Heat maps", "히트맵"),
    ("Window presets", "윈도우 프리셋"),
    ("Name", "이름"),
    ("Remove", "삭제"),
    ("Add preset", "프리셋 추가"),
    ("Keys", "단축키"),
    ("press a key…", "키를 누르세요…"),
    ("Restore defaults", "기본값 복원"),
    ("Select", "선택"),
    ("Length", "길이"),
    ("Angle", "각도"),
    ("Ellipse", "타원 ROI"),
    ("Rectangle", "사각 ROI"),
];

impl Lang {
    pub fn tr(self, en: &'static str) -> &'static str {
        match self {
            Self::En => en,
            Self::Ko => KO.iter().find(|(e, _)| *e == en).map_or(en, |(_, k)| k),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::En => "English",
            Self::Ko => "한국어",
        }
    }
}

/// The bundled Hangul font (a renamed OFL subset of NanumGothic; see assets/fonts/OFL.txt).
pub const HANGUL_FONT: &[u8] = include_bytes!("../../../assets/fonts/LucentHangulSans-Regular.ttf");

/// Adds the Hangul font after egui's default fonts, so Latin keeps egui's look and Hangul renders.
pub fn install_fonts(ctx: &egui::Context) {
    let mut fonts = egui::FontDefinitions::default();
    fonts.font_data.insert("lucent-hangul".into(), std::sync::Arc::new(egui::FontData::from_static(HANGUL_FONT)));
    for family in [egui::FontFamily::Proportional, egui::FontFamily::Monospace] {
        fonts.families.entry(family).or_default().push("lucent-hangul".into());
    }
    ctx.set_fonts(fonts);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn korean_table_has_no_duplicates_and_falls_back_to_english() {
        let mut keys: Vec<&str> = KO.iter().map(|(e, _)| *e).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), KO.len());
        assert_eq!(Lang::Ko.tr("Studies"), "검사 목록");
        assert_eq!(Lang::Ko.tr("no such string"), "no such string");
    }
}
