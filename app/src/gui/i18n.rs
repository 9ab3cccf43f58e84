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
    ("PACS", "PACS"),
    ("Node", "노드"),
    ("none", "없음"),
    ("Test connection", "연결 테스트"),
    ("Add", "추가"),
    ("Edit", "편집"),
    ("Retrieve with", "가져오기 방식"),
    ("Open when done", "완료 후 열기"),
    ("Prefetch priors from this node", "이 노드에서 과거 검사 미리 가져오기"),
    ("PACS node", "PACS 노드"),
    ("Authentication", "인증"),
    ("User", "사용자"),
    ("Password", "비밀번호"),
    ("AE title", "AE 타이틀"),
    ("Host", "호스트"),
    ("Port", "포트"),
    ("Our AE title", "우리 AE 타이틀"),
    ("Timeout", "시간 제한"),
    ("Save", "저장"),
    ("Patient name", "환자 이름"),
    ("Patient ID", "환자 ID"),
    ("Accession", "검사번호"),
    ("Search", "검색"),
    ("Clear", "지우기"),
    ("Date", "날짜"),
    ("Description", "설명"),
    ("Retrieve", "가져오기"),
    ("Retrieve series", "시리즈 가져오기"),
    ("Send the selected local study", "선택한 로컬 검사 보내기"),
    (
        "C-STORE (DIMSE) or STOW-RS (DICOMweb) to the chosen node",
        "선택한 노드로 C-STORE(DIMSE) 또는 STOW-RS(DICOMweb) 전송",
    ),
    ("Clear finished", "완료 항목 지우기"),
    ("Receiver (Store SCP)", "수신기 (Store SCP)"),
    ("Allowed senders", "허용된 송신자"),
    ("anyone", "모두"),
    ("Stop", "중지"),
    ("Start", "시작"),
    ("Start with Lucent", "Lucent 시작 시 실행"),
    ("instance(s) received", "개 인스턴스 수신"),
    ("Report", "판독 보고서"),
    ("QA", "QA"),
    ("Reader", "판독의"),
    ("Report language", "보고서 언어"),
    ("Drafting the report…", "보고서 초안 작성 중…"),
    ("Open a study, then click Report", "검사를 연 후 보고서를 누르세요"),
    ("SIGNED", "서명됨"),
    ("SIGNED, with addenda", "서명됨 (추가 보고 있음)"),
    ("PRELIMINARY — NOT SIGNED", "예비 보고서 — 서명 전"),
    ("accepted", "수락"),
    ("rejected", "거부"),
    ("edited", "수정"),
    ("pending", "대기"),
    ("Show", "보기"),
    ("Accept", "수락"),
    ("Reject…", "거부…"),
    ("Undo", "되돌리기"),
    ("No AI finding above its threshold", "임계값을 넘는 AI 소견 없음"),
    ("Show the lesion", "병변 보기"),
    ("Checks before signing", "서명 전 점검"),
    ("Sign", "서명"),
    ("Signing makes the report final and immutable", "서명하면 보고서가 확정되어 변경할 수 없습니다"),
    ("Export unsigned as preliminary", "서명 전 예비 보고서로 내보내기"),
    ("Export PDF + SR + FHIR", "PDF + SR + FHIR 내보내기"),
    ("Send SR to PACS", "SR을 PACS로 전송"),
    ("Addendum", "추가 보고"),
    ("Sign addendum", "추가 보고 서명"),
    ("Versions", "버전"),
    ("QA review", "QA 검토"),
    ("QA lead", "QA 책임자"),
    ("Use as QA lead", "QA 책임자로 사용"),
    ("Refresh", "새로 고침"),
    ("Finding", "소견"),
    ("any", "전체"),
    ("Score ≥", "점수 ≥"),
    ("Undecided only", "미결정만"),
    ("Study", "검사"),
    ("Score", "점수"),
    ("Model", "모델"),
    ("Decision", "결정"),
    ("Agree", "동의"),
    ("Reject", "거부"),
    ("Statistics per model version and finding", "모델 버전 및 소견별 통계"),
    ("Flags", "표시"),
    ("Decided", "결정됨"),
    ("Agreement", "일치율"),
    ("PPV", "양성예측도"),
    ("Export statistics and review marks", "통계 및 판독 표시 내보내기"),
    ("with the PDF (Encapsulated PDF)", "PDF 포함 (Encapsulated PDF)"),
    (
        "CSV statistics, and the reviewers' marks as DICOM SR + JSONL for retraining",
        "CSV 통계와 재학습용 검토자 표시(DICOM SR + JSONL)",
    ),
    ("Comment", "의견"),
    ("False positive", "위양성"),
    ("Wrong location", "위치 오류"),
    ("Wrong size", "크기 오류"),
    ("Wrong label", "분류 오류"),
    ("Artifact", "인공물"),
    ("Known or benign", "기존 또는 양성"),
    ("Clinically insignificant", "임상적으로 무의미"),
    ("Other", "기타"),
    ("Label", "분류"),
    ("Side", "측"),
    ("Box (pixels)", "상자 (픽셀)"),
    ("Reason", "사유"),
    ("Save edit", "수정 저장"),
    ("Edit…", "수정…"),
    ("Score from", "점수 범위"),
    ("to", "~"),
    ("Score distribution over time", "시간에 따른 점수 분포"),
    (
        "Score bins 0.0 – 1.0, left to right; brighter = more findings",
        "점수 구간 0.0–1.0 (왼쪽→오른쪽), 밝을수록 소견 많음",
    ),
    ("Rejected", "거부율"),
    // The model evaluation window (eval_panel.rs).
    ("Evaluation", "성능 평가"),
    ("Model evaluation", "모델 성능 평가"),
    ("Labelled folder", "레이블된 폴더"),
    ("Choose…", "선택…"),
    ("All applicable models", "적용 가능한 모든 모델"),
    ("Target sensitivity", "목표 민감도"),
    ("Evaluate", "평가 실행"),
    ("Evaluating…", "평가 중…"),
    ("Reference", "기준"),
    ("Positives / negatives", "양성 / 음성"),
    ("Threshold", "임계값"),
    ("Sensitivity", "민감도"),
    ("Specificity", "특이도"),
    ("Threshold at sensitivity", "민감도 기준 임계값"),
    ("Not labelled", "레이블 없음"),
    ("skipped", "건 건너뜀"),
    ("scans", "스캔"),
    ("Sensitivity at FPs per scan", "스캔당 위양성 수별 민감도"),
    ("ROC curves", "ROC 곡선"),
    ("FROC curve", "FROC 곡선"),
    ("pairs", "쌍"),
    ("slices", "슬라이스"),
    ("Low-dose input", "저선량 입력"),
    ("Denoised", "잡음 제거"),
    ("AI denoised", "AI 잡음 제거"),
    ("not for diagnosis", "진단용 아님"),
    ("Cannot denoise", "잡음 제거 불가"),
    ("Denoising this slice", "이 슬라이스 잡음 제거 중"),
    ("Denoised (AI)", "잡음 제거 (AI)"),
    (
        "Shows this slice denoised by the default CT denoiser, the slice on screen first; the original stays in the store",
        "기본 CT 잡음 제거 모델로 화면의 슬라이스부터 잡음을 제거해 보여 줍니다. 원본은 저장소에 그대로 남습니다",
    ),
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
