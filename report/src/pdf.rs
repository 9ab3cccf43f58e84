//! The PDF export (printpdf, A4): header (patient, study, accession, date), the report text,
//! addenda, key images with the lesion marks (the app draws the marks into the RGBA pixels), AI
//! provenance (each model's name and version), the disclaimer, and the signature line — or the
//! banner "PRELIMINARY — NOT SIGNED" on every page of an unsigned report.
//!
//! All text is set in the bundled Lucent Hangul Sans (a subset of NanumGothic, SIL OFL 1.1,
//! `assets/fonts/`), embedded whole, so Korean and Latin text render the same everywhere. Lines
//! are wrapped with the font's own advance widths. The output is deterministic: the dates in the
//! PDF come from the input and the internal ids are fixed, so the same input gives the same bytes.

use printpdf::{
    Color, Line, LinePoint, Mm, Op, ParsedFont, PdfDocument, PdfFontHandle, PdfPage, PdfSaveOptions, Point, Pt,
    RawImage, RawImageData, RawImageFormat, Rgb, TextItem, XObjectId, XObjectTransform,
};

use crate::draft::Report;
use crate::error::{Error, Result};
use crate::model::{AiFinding, Lang, ReportKind, StudyContext};
use crate::store::ReportStatus;

/// The bundled font (SIL OFL 1.1; see `assets/fonts/OFL.txt`).
pub const FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/LucentHangulSans-Regular.ttf");
/// The font's PostScript-style name, as it appears in the PDF.
pub const FONT_NAME: &str = "LucentHangulSans";

/// A key image: RGBA pixels with the lesion marks already drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyImage {
    pub width: usize,
    pub height: usize,
    /// `width * height * 4` bytes, RGBA.
    pub rgba: Vec<u8>,
    pub caption: String,
}

/// What the PDF shows.
#[derive(Debug, Clone)]
pub struct PdfInput<'a> {
    pub context: &'a StudyContext,
    pub report: &'a Report,
    pub status: ReportStatus,
    pub signed_by: Option<&'a str>,
    pub signed_at: Option<&'a str>,
    /// Addenda (text, signer, time), oldest first.
    pub addenda: &'a [(String, String, String)],
    /// The findings, for the AI provenance block (models and versions).
    pub findings: &'a [AiFinding],
    pub key_images: &'a [KeyImage],
    /// The document's creation time (RFC 3339), e.g. the report's save or sign time.
    pub created: &'a str,
}

const PAGE_W: f32 = 210.0;
const PAGE_H: f32 = 297.0;
const MARGIN: f32 = 18.0;
const BODY_PT: f32 = 10.0;

fn rgb(r: f32, g: f32, b: f32) -> Color {
    Color::Rgb(Rgb { r, g, b, icc_profile: None })
}

fn pt(mm: f32) -> Pt {
    Mm(mm).into()
}

struct Writer {
    font: ParsedFont,
    font_id: printpdf::FontId,
    pages: Vec<Vec<Op>>,
    y_mm: f32,
    banner: Option<String>,
    footer: String,
}

impl Writer {
    fn ops(&mut self) -> &mut Vec<Op> {
        if self.pages.is_empty() {
            self.new_page();
        }
        let last = self.pages.len() - 1;
        &mut self.pages[last]
    }

    fn new_page(&mut self) {
        self.pages.push(Vec::new());
        self.y_mm = PAGE_H - MARGIN;
        if let Some(banner) = self.banner.clone() {
            self.text_at(&banner, MARGIN, PAGE_H - 11.0, 11.0, rgb(0.75, 0.05, 0.05));
        }
        let footer = self.footer.clone();
        self.text_at(&footer, MARGIN, 10.0, 7.5, rgb(0.35, 0.35, 0.35));
    }

    /// Width of `text` at `size_pt`, in mm.
    fn width_mm(&self, text: &str, size_pt: f32) -> f32 {
        let upem = f32::from(self.font.units_per_em.max(1));
        let units: f32 = text
            .chars()
            .map(|c| {
                self.font
                    .codepoint_to_glyph
                    .get(&u32::from(c))
                    .and_then(|g| self.font.glyph_widths.get(g))
                    .map_or(upem * 0.5, |w| f32::from(*w))
            })
            .sum();
        Mm::from(Pt(units / upem * size_pt)).0
    }

    /// Characters the font lacks become '?'.
    fn printable(&self, text: &str) -> String {
        text.chars()
            .map(|c| if c == ' ' || self.font.codepoint_to_glyph.contains_key(&u32::from(c)) { c } else { '?' })
            .collect()
    }

    fn text_at(&mut self, text: &str, x_mm: f32, y_mm: f32, size_pt: f32, color: Color) {
        let text = self.printable(text);
        let font = PdfFontHandle::External(self.font_id.clone());
        let ops = self.ops();
        ops.extend([
            Op::StartTextSection,
            Op::SetFillColor { col: color },
            Op::SetFont { font, size: Pt(size_pt) },
            Op::SetTextCursor { pos: Point { x: pt(x_mm), y: pt(y_mm) } },
            Op::ShowText { items: vec![TextItem::Text(text)] },
            Op::EndTextSection,
        ]);
    }

    fn ensure_space(&mut self, height_mm: f32) {
        if self.pages.is_empty() || self.y_mm - height_mm < MARGIN + 6.0 {
            self.new_page();
        }
    }

    /// Wraps `text` (keeping its line breaks) to the text width and writes it.
    fn paragraph(&mut self, text: &str, size_pt: f32, color: Color, indent_mm: f32) {
        let max_w = PAGE_W - 2.0 * MARGIN - indent_mm;
        let line_h = size_pt * 0.3528 * 1.45;
        for raw in text.split('\n') {
            for line in self.wrap(raw, size_pt, max_w) {
                self.ensure_space(line_h);
                self.y_mm -= line_h;
                let y = self.y_mm;
                self.text_at(&line, MARGIN + indent_mm, y, size_pt, color.clone());
            }
        }
    }

    fn wrap(&self, text: &str, size_pt: f32, max_w: f32) -> Vec<String> {
        let mut lines = Vec::new();
        let mut current = String::new();
        for word in text.split(' ') {
            let candidate = if current.is_empty() { word.to_owned() } else { format!("{current} {word}") };
            if self.width_mm(&candidate, size_pt) <= max_w {
                current = candidate;
                continue;
            }
            if !current.is_empty() {
                lines.push(std::mem::take(&mut current));
            }
            // A word longer than the line is cut by characters.
            for c in word.chars() {
                let next = format!("{current}{c}");
                if self.width_mm(&next, size_pt) > max_w && !current.is_empty() {
                    lines.push(std::mem::take(&mut current));
                    current.push(c);
                } else {
                    current = next;
                }
            }
        }
        lines.push(current);
        lines
    }

    fn gap(&mut self, mm: f32) {
        self.y_mm -= mm;
    }

    fn rule(&mut self) {
        self.ensure_space(3.0);
        self.y_mm -= 1.5;
        let y = pt(self.y_mm);
        let ops = self.ops();
        ops.extend([
            Op::SetOutlineColor { col: rgb(0.6, 0.6, 0.6) },
            Op::SetOutlineThickness { pt: Pt(0.5) },
            Op::DrawLine {
                line: Line {
                    points: vec![
                        LinePoint { p: Point { x: pt(MARGIN), y }, bezier: false },
                        LinePoint { p: Point { x: pt(PAGE_W - MARGIN), y }, bezier: false },
                    ],
                    is_closed: false,
                },
            },
        ]);
        self.y_mm -= 1.5;
    }
}

fn dicom_date(d: &str) -> String {
    let d = d.trim();
    if d.len() == 8 && d.chars().all(|c| c.is_ascii_digit()) {
        format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..])
    } else {
        d.to_owned()
    }
}

fn labels(lang: Lang) -> [&'static str; 12] {
    match lang {
        Lang::En => [
            "Patient",
            "ID",
            "Sex",
            "Birth date",
            "Study",
            "Study date",
            "Accession",
            "Addendum",
            "AI provenance",
            "Key images",
            "Signed by",
            "PRELIMINARY — NOT SIGNED",
        ],
        Lang::Ko => [
            "환자",
            "등록번호",
            "성별",
            "생년월일",
            "검사",
            "검사일",
            "접수번호",
            "추가 보고",
            "AI 출처",
            "주요 영상",
            "서명",
            "PRELIMINARY — NOT SIGNED (예비 보고서 — 미서명)",
        ],
    }
}

fn title(kind: ReportKind, lang: Lang) -> &'static str {
    match (kind, lang) {
        (ReportKind::Cxr, Lang::En) => "Chest radiograph report",
        (ReportKind::Ldct, Lang::En) => "Low-dose chest CT lung cancer screening report",
        (ReportKind::Cxr, Lang::Ko) => "흉부 X선 판독 보고서",
        (ReportKind::Ldct, Lang::Ko) => "저선량 흉부 CT 폐암 검진 판독 보고서",
    }
}

/// Composites RGBA on white (the PDF gets plain RGB).
fn rgb_pixels(image: &KeyImage) -> Result<Vec<u8>> {
    if image.rgba.len() != image.width * image.height * 4 || image.width == 0 || image.height == 0 {
        return Err(Error::Invalid { what: format!("key image of {}x{} pixels", image.width, image.height) });
    }
    Ok(image
        .rgba
        .chunks_exact(4)
        .flat_map(|p| {
            let a = u16::from(p[3]);
            [0, 1, 2].map(|i| ((u16::from(p[i]) * a + 255 * (255 - a)) / 255) as u8)
        })
        .collect())
}

/// Renders the report to PDF bytes.
pub fn render(input: &PdfInput<'_>) -> Result<Vec<u8>> {
    let mut warnings = Vec::new();
    let font = ParsedFont::from_bytes(FONT_BYTES, 0, &mut warnings)
        .ok_or_else(|| Error::Pdf { detail: "the bundled font cannot be parsed".into() })?;
    let lang = input.report.lang;
    let l = labels(lang);
    let ctx = input.context;
    let signed = input.status != ReportStatus::Draft;
    let mut doc = PdfDocument::new(title(input.report.kind, lang));
    let font_id = printpdf::FontId(FONT_NAME.to_owned());
    doc.resources.fonts.map.insert(font_id.clone(), printpdf::PdfFont::new(font.clone()));
    // Fixed dates from the input: deterministic output.
    if let Some(t) = parse_rfc3339(input.created) {
        doc.metadata.info.creation_date = t;
        doc.metadata.info.modification_date = t;
        doc.metadata.info.metadata_date = t;
    }
    doc.metadata.info.creator = "Lucent".into();
    doc.metadata.info.producer = "Lucent (printpdf)".into();
    doc.metadata.info.subject = crate::DISCLAIMER.into();

    let mut w = Writer {
        font,
        font_id,
        pages: Vec::new(),
        y_mm: 0.0,
        banner: (!signed).then(|| l[11].to_owned()),
        footer: format!("Lucent · {} · {}", crate::DISCLAIMER, ctx.study_uid),
    };
    w.new_page();
    w.gap(4.0);
    w.paragraph(title(input.report.kind, lang), 15.0, rgb(0.0, 0.0, 0.0), 0.0);
    w.gap(2.0);
    let header = [
        format!(
            "{}: {}    {}: {}    {}: {}    {}: {}",
            l[0],
            ctx.patient_name.replace('^', " "),
            l[1],
            ctx.patient_id,
            l[2],
            ctx.patient_sex,
            l[3],
            dicom_date(&ctx.patient_birth_date)
        ),
        format!(
            "{}: {} ({})    {}: {}    {}: {}",
            l[4],
            ctx.study_description,
            ctx.modality,
            l[5],
            dicom_date(&ctx.study_date),
            l[6],
            ctx.accession
        ),
    ];
    for line in header {
        w.paragraph(&line, 9.0, rgb(0.1, 0.1, 0.1), 0.0);
    }
    w.rule();
    for section in &input.report.sections {
        let body = section.text.trim();
        if body.is_empty() {
            continue;
        }
        w.gap(1.5);
        w.paragraph(section.id.title(lang), 11.5, rgb(0.05, 0.2, 0.45), 0.0);
        w.paragraph(body, BODY_PT, rgb(0.0, 0.0, 0.0), 2.0);
    }
    for (i, (text, by, at)) in input.addenda.iter().enumerate() {
        w.gap(2.0);
        w.paragraph(&format!("{} {} — {by}, {at}", l[7], i + 1), 11.5, rgb(0.05, 0.2, 0.45), 0.0);
        w.paragraph(text.trim(), BODY_PT, rgb(0.0, 0.0, 0.0), 2.0);
    }

    // Key images, two per row.
    if !input.key_images.is_empty() {
        w.gap(2.0);
        w.paragraph(l[9], 11.5, rgb(0.05, 0.2, 0.45), 0.0);
        let cell_w = (PAGE_W - 2.0 * MARGIN - 6.0) / 2.0;
        for (row, pair) in input.key_images.chunks(2).enumerate() {
            let heights: Vec<f32> =
                pair.iter().map(|k| cell_w * k.height as f32 / k.width.max(1) as f32).map(|h| h.min(95.0)).collect();
            let row_h = heights.iter().copied().fold(0.0, f32::max) + 7.0;
            w.ensure_space(row_h);
            for (col, image) in pair.iter().enumerate() {
                let pixels = rgb_pixels(image)?;
                let id = XObjectId(format!("KeyImage{}", row * 2 + col + 1));
                doc.resources.xobjects.map.insert(
                    id.clone(),
                    printpdf::XObject::Image(RawImage {
                        pixels: RawImageData::U8(pixels),
                        width: image.width,
                        height: image.height,
                        data_format: RawImageFormat::RGB8,
                        tag: Vec::new(),
                    }),
                );
                let h_mm = heights[col];
                let w_mm = h_mm * image.width as f32 / image.height.max(1) as f32;
                let x = MARGIN + col as f32 * (cell_w + 6.0);
                let y = w.y_mm - h_mm;
                let transform = XObjectTransform {
                    translate_x: Some(pt(x)),
                    translate_y: Some(pt(y)),
                    scale_x: Some(pt(w_mm).0 / image.width as f32),
                    scale_y: Some(pt(h_mm).0 / image.height as f32),
                    dpi: Some(72.0),
                    rotate: None,
                    ..XObjectTransform::default()
                };
                w.ops().push(Op::UseXobject { id, transform });
                w.text_at(&image.caption, x, y - 4.0, 8.0, rgb(0.2, 0.2, 0.2));
            }
            w.y_mm -= row_h;
        }
    }

    // AI provenance and disclaimer.
    w.gap(2.0);
    w.rule();
    w.paragraph(l[8], 10.0, rgb(0.05, 0.2, 0.45), 0.0);
    let mut models: Vec<String> = input
        .findings
        .iter()
        .map(|f| {
            let name = if f.model_name.is_empty() { &f.model_id } else { &f.model_name };
            format!("{name} — {} {}", f.model_id, f.model_version)
        })
        .collect();
    models.sort();
    models.dedup();
    if models.is_empty() {
        models.push(match lang {
            Lang::En => "No AI model produced findings for this report.".into(),
            Lang::Ko => "이 보고서에 AI 소견이 없습니다.".into(),
        });
    }
    for m in models {
        w.paragraph(&m, 8.5, rgb(0.15, 0.15, 0.15), 2.0);
    }
    w.paragraph(crate::DISCLAIMER, 9.0, rgb(0.6, 0.0, 0.0), 0.0);
    if lang == Lang::Ko {
        w.paragraph("연구 및 시연 전용이며 진단용이 아닙니다.", 9.0, rgb(0.6, 0.0, 0.0), 0.0);
    }
    w.gap(3.0);
    match (signed, input.signed_by, input.signed_at) {
        (true, Some(by), at) => {
            let line = format!("{}: {by}    {}", l[10], at.unwrap_or_default());
            w.paragraph(&line, 10.5, rgb(0.0, 0.0, 0.0), 0.0);
        }
        _ => w.paragraph(l[11], 12.0, rgb(0.75, 0.05, 0.05), 0.0),
    }

    let n = w.pages.len();
    let pages: Vec<PdfPage> = std::mem::take(&mut w.pages)
        .into_iter()
        .enumerate()
        .map(|(i, mut ops)| {
            let font = PdfFontHandle::External(w.font_id.clone());
            ops.extend([
                Op::StartTextSection,
                Op::SetFillColor { col: rgb(0.35, 0.35, 0.35) },
                Op::SetFont { font, size: Pt(7.5) },
                Op::SetTextCursor { pos: Point { x: pt(PAGE_W - MARGIN - 12.0), y: pt(10.0) } },
                Op::ShowText { items: vec![TextItem::Text(format!("{}/{n}", i + 1))] },
                Op::EndTextSection,
            ]);
            PdfPage::new(Mm(PAGE_W), Mm(PAGE_H), ops)
        })
        .collect();
    doc.with_pages(pages);
    let options = PdfSaveOptions { subset_fonts: false, ..PdfSaveOptions::default() };
    let mut bytes = doc.save(&options, &mut Vec::new());
    fix_document_id(&mut bytes, input);
    Ok(bytes)
}

/// Renders page 1 to PNG with poppler's `pdftoppm` (72 dpi), when it is installed; `Ok(None)`
/// when it is not (tests skip then, unless `LUCENT_REQUIRE_TEST_DATA=1`).
pub fn page1_png(pdf: &[u8]) -> Result<Option<Vec<u8>>> {
    let dir = std::env::temp_dir().join(format!("lucent-pdf-{}-{}", std::process::id(), pdf.len()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let input = dir.join("in.pdf");
    std::fs::write(&input, pdf).map_err(|e| Error::io(&input, e))?;
    let status = std::process::Command::new("pdftoppm")
        .args(["-png", "-r", "72", "-f", "1", "-l", "1", "-singlefile"])
        .arg(&input)
        .arg(dir.join("page"))
        .status();
    let result = match status {
        Ok(s) if s.success() => {
            let png = dir.join("page.png");
            std::fs::read(&png).map(Some).map_err(|e| Error::io(&png, e))
        }
        Ok(s) => Err(Error::Pdf { detail: format!("pdftoppm failed with {s}") }),
        Err(_) if std::env::var("LUCENT_REQUIRE_TEST_DATA").is_ok_and(|v| v == "1") => {
            Err(Error::Pdf { detail: "pdftoppm (poppler-utils) is not installed".into() })
        }
        Err(_) => Ok(None),
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// printpdf writes a random trailer `/ID`; replace it (same length) with one derived from the input.
fn fix_document_id(bytes: &mut [u8], input: &PdfInput<'_>) {
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(
        format!("{}|{}|{}", input.context.study_uid, input.created, input.report.to_text()).as_bytes(),
    ));
    let Some(at) = memfind(bytes, b"/ID") else { return };
    let mut pos = at + 3;
    for _ in 0..2 {
        let Some(open) = bytes[pos..].iter().position(|&b| b == b'(').map(|p| p + pos + 1) else { return };
        let Some(close) = bytes[open..].iter().position(|&b| b == b')').map(|p| p + open) else { return };
        for (k, b) in bytes[open..close].iter_mut().enumerate() {
            *b = digest.as_bytes()[k % digest.len()];
        }
        pos = close + 1;
    }
}

fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// `YYYY-MM-DDTHH:MM:SS[Z]` to an `OffsetDateTime` (UTC).
fn parse_rfc3339(text: &str) -> Option<printpdf::OffsetDateTime> {
    let t = text.trim().trim_end_matches('Z');
    let (date, time) = t.split_once('T').unwrap_or((t, "00:00:00"));
    let d: Vec<i64> = date.split('-').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let hms: Vec<i64> =
        time.split(':').map(|p| p.split('.').next().and_then(|x| x.parse().ok())).collect::<Option<_>>()?;
    if d.len() != 3 || hms.len() != 3 {
        return None;
    }
    // Days from civil (H. Hinnant).
    let (y, m, day) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    printpdf::OffsetDateTime::from_unix_timestamp(days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::draft::draft;
    use crate::model::{Decisions, Side, StudyInputs};

    fn input_parts() -> (StudyContext, Report, Vec<AiFinding>) {
        let findings = vec![AiFinding {
            id: "ptx".into(),
            model_id: "lucent-test-cxr".into(),
            model_name: "Toy CXR".into(),
            model_version: "1.0.0".into(),
            label: "pneumothorax".into(),
            score: 0.9,
            threshold: 0.5,
            side: Side::Right,
            ..Default::default()
        }];
        let context = StudyContext {
            study_uid: "1.2.3.4".into(),
            modality: "DX".into(),
            patient_name: "홍^길동".into(),
            patient_id: "P-77".into(),
            study_date: "20240301".into(),
            ..Default::default()
        };
        let inputs = StudyInputs { context: context.clone(), findings: findings.clone(), lung_rads: None };
        (context, draft(&inputs, &Decisions::new(), Lang::Ko), findings)
    }

    #[test]
    fn a_korean_preliminary_pdf_embeds_the_font_and_is_deterministic() {
        let (context, report, findings) = input_parts();
        let key = KeyImage { width: 4, height: 3, rgba: vec![200; 48], caption: "Key image 1".into() };
        let input = PdfInput {
            context: &context,
            report: &report,
            status: ReportStatus::Draft,
            signed_by: None,
            signed_at: None,
            addenda: &[],
            findings: &findings,
            key_images: std::slice::from_ref(&key),
            created: "2024-03-01T09:30:00Z",
        };
        let a = render(&input).unwrap();
        let b = render(&input).unwrap();
        assert!(a.starts_with(b"%PDF-"));
        assert_eq!(a, b, "the same input gives the same bytes");
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains(FONT_NAME) || text.contains("FontFile2"), "font embedded");
        assert!(text.contains("/FontFile2"));
        assert!(a.len() > 300_000, "the whole font is embedded ({} bytes)", a.len());
        // Read it back: the text (through the font's ToUnicode map) has the Korean report,
        // the disclaimer and the preliminary banner.
        let parsed = PdfDocument::parse(&a, &printpdf::PdfParseOptions::default(), &mut Vec::new()).unwrap();
        let text: String = parsed.extract_text().concat().concat();
        for needle in [crate::DISCLAIMER, "PRELIMINARY — NOT SIGNED", "우측 기흉", "결론", "P-77", "Toy CXR"] {
            assert!(text.contains(needle), "{needle:?} in {text}");
        }
        // Page 1 as the reader sees it, against the committed snapshot
        // (`UPDATE_SNAPSHOTS=1` rewrites it).
        if let Some(png) = page1_png(&a).unwrap() {
            compare_snapshot(&png, "pdf_page1_ko_preliminary");
        }
    }

    /// Grey page against `tests/snapshots/NAME.png`: same size, mean difference under 1 grey
    /// level and under 0.5% of pixels off by more than 64 (font hinting may move an edge).
    fn compare_snapshot(png: &[u8], name: &str) {
        let page = image::load_from_memory(png).unwrap().to_luma8();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/snapshots/{name}.png"));
        if std::env::var("UPDATE_SNAPSHOTS").is_ok() || !path.is_file() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            page.save(&path).unwrap();
            assert!(std::env::var("UPDATE_SNAPSHOTS").is_ok(), "{} was missing: written, check it in", path.display());
            return;
        }
        let expected = image::open(&path).unwrap().to_luma8();
        assert_eq!(page.dimensions(), expected.dimensions(), "{name}: page size");
        let n = page.as_raw().len() as f64;
        let diffs: Vec<u8> = page.as_raw().iter().zip(expected.as_raw()).map(|(a, b)| a.abs_diff(*b)).collect();
        let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / n;
        let far = diffs.iter().filter(|&&d| d > 64).count() as f64 / n;
        if mean >= 1.0 || far >= 0.005 {
            let new = path.with_extension("new.png");
            page.save(&new).unwrap();
            panic!(
                "{name}: page 1 differs from the snapshot (mean {mean:.2}, {:.2}% far); see {}",
                far * 100.0,
                new.display()
            );
        }
    }

    #[test]
    fn a_signed_english_pdf_has_the_signature_and_no_banner() {
        let (context, mut report, findings) = input_parts();
        report.lang = Lang::En;
        let input = PdfInput {
            context: &context,
            report: &report,
            status: ReportStatus::Final,
            signed_by: Some("Dr Kim"),
            signed_at: Some("2024-03-01T10:00:00Z"),
            addenda: &[("Compared with prior: stable.".into(), "Dr Kim".into(), "2024-03-02T08:00:00Z".into())],
            findings: &findings,
            key_images: &[],
            created: "2024-03-01T10:00:00Z",
        };
        let bytes = render(&input).unwrap();
        let parsed = PdfDocument::parse(&bytes, &printpdf::PdfParseOptions::default(), &mut Vec::new()).unwrap();
        let text: String = parsed.extract_text().concat().concat();
        assert!(text.contains("Signed by: Dr Kim"), "{text}");
        assert!(text.contains("Compared with prior: stable."), "{text}");
        assert!(!text.contains("PRELIMINARY"), "{text}");
        if let Some(png) = page1_png(&bytes).unwrap() {
            assert!(png.starts_with(b"\x89PNG"));
        }
    }
}
