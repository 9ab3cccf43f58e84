//! Drafts: the CXR and LDCT templates in English and Korean, and how AI-derived sentences stay
//! linked to their findings while the radiologist edits.
//!
//! ## How AI sentences are tracked
//!
//! Each section's editable text is one plain string; nothing hidden is put into it. Beside the text,
//! the report keeps a list of [`Tracked`] sentences: (section, key, finding id, the exact text Lucent
//! last wrote). When the findings or the decisions change, [`Report::update`] regenerates the
//! AI sentences and, for each tracked one:
//!
//! * found verbatim in the section and still wanted: replaced in place by the new wording;
//! * found verbatim and no longer wanted (finding rejected, or a normal phrase that a finding now
//!   replaces): removed, with its line break;
//! * not found verbatim (the radiologist rewrote or deleted it): left alone and marked *detached*;
//!   the radiologist now owns those words, and Lucent never re-inserts or touches that sentence again
//!   (nor adds a "normal" phrase to that section). [`UpdateOutcome::edited_by_reader`] lists the
//!   findings whose edited sentence may now disagree with a decision (e.g. a rejected finding).
//!
//! New sentences are inserted after the previous AI sentence of the same section (or at the start
//! of the section), one per line. Free text the radiologist typed is never modified. The price of
//! keeping the text plain is that two identical AI sentences in one section could be confused;
//! nodule sentences carry their measurements and image reference, so in practice they differ.

use serde::{Deserialize, Serialize};

use crate::model::{
    AiFinding, Decisions, ImageRef, Lang, ReportKind, Side, StudyInputs, effective_findings, expected_lung_rads,
    is_nodule_label, is_summary_label,
};
use crate::vocab::{self, capitalise, side_word};

/// A section of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SectionId {
    Lungs,
    Pleura,
    HeartMediastinum,
    Bones,
    Technique,
    Nodules,
    OtherFindings,
    LungRads,
    Impression,
}

impl SectionId {
    /// The sections of a template, in order.
    pub fn for_kind(kind: ReportKind) -> &'static [SectionId] {
        match kind {
            ReportKind::Cxr => &[Self::Lungs, Self::Pleura, Self::HeartMediastinum, Self::Bones, Self::Impression],
            ReportKind::Ldct => &[Self::Technique, Self::Nodules, Self::OtherFindings, Self::LungRads],
        }
    }

    pub fn title(self, lang: Lang) -> &'static str {
        match (self, lang) {
            (Self::Lungs, Lang::En) => "Lungs",
            (Self::Pleura, Lang::En) => "Pleura",
            (Self::HeartMediastinum, Lang::En) => "Heart and mediastinum",
            (Self::Bones, Lang::En) => "Bones",
            (Self::Technique, Lang::En) => "Technique",
            (Self::Nodules, Lang::En) => "Nodules",
            (Self::OtherFindings, Lang::En) => "Other findings",
            (Self::LungRads, Lang::En) => "Lung-RADS v2022",
            (Self::Impression, Lang::En) => "Impression",
            (Self::Lungs, Lang::Ko) => "폐",
            (Self::Pleura, Lang::Ko) => "흉막",
            (Self::HeartMediastinum, Lang::Ko) => "심장 및 종격동",
            (Self::Bones, Lang::Ko) => "골격",
            (Self::Technique, Lang::Ko) => "검사 방법",
            (Self::Nodules, Lang::Ko) => "폐결절",
            (Self::OtherFindings, Lang::Ko) => "기타 소견",
            (Self::LungRads, Lang::Ko) => "Lung-RADS v2022",
            (Self::Impression, Lang::Ko) => "결론",
        }
    }

    /// Whether the section holds the conclusion (FHIR `conclusion`, SR impression).
    pub fn is_conclusion(self) -> bool {
        matches!(self, Self::Impression | Self::LungRads)
    }
}

/// One section's editable text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    pub id: SectionId,
    pub text: String,
}

/// An AI sentence Lucent wrote and still follows (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracked {
    pub section: SectionId,
    /// Unique within the section: `f:<finding id>`, `normal`, `technique`, `lung_rads`.
    pub key: String,
    pub finding_id: Option<String>,
    /// The exact text last written.
    pub text: String,
    /// The radiologist changed or deleted it: Lucent no longer touches it.
    pub detached: bool,
}

/// A piece of a section's text, linked to a finding when Lucent wrote it and it is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sentence {
    pub text: String,
    pub finding_id: Option<String>,
    /// Byte range in the section text.
    pub start: usize,
    pub end: usize,
}

/// What an update did that the reader should know about.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UpdateOutcome {
    pub inserted: usize,
    pub replaced: usize,
    pub removed: usize,
    /// Finding ids whose sentence the radiologist edited and Lucent therefore did not update
    /// (or, for a rejected finding, did not remove).
    pub edited_by_reader: Vec<String>,
}

/// A report: its template, language, the editable text of each section and the tracked AI sentences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub kind: ReportKind,
    pub lang: Lang,
    pub sections: Vec<Section>,
    pub tracked: Vec<Tracked>,
}

/// A sentence Lucent wants in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Generated {
    section: SectionId,
    key: String,
    finding_id: Option<String>,
    text: String,
}

/// Drafts a report from the study's findings and the reader's decisions so far.
pub fn draft(inputs: &StudyInputs, decisions: &Decisions, lang: Lang) -> Report {
    let kind = ReportKind::for_modality(&inputs.context.modality);
    let mut report = Report {
        kind,
        lang,
        sections: SectionId::for_kind(kind).iter().map(|&id| Section { id, text: String::new() }).collect(),
        tracked: Vec::new(),
    };
    report.update(inputs, decisions);
    report
}

impl Report {
    pub fn section(&self, id: SectionId) -> Option<&Section> {
        self.sections.iter().find(|s| s.id == id)
    }

    /// The section's text ("" when the template has no such section).
    pub fn section_text(&self, id: SectionId) -> &str {
        self.section(id).map_or("", |s| s.text.as_str())
    }

    /// Replaces a section's text (the radiologist's edit). Returns false when there is no such section.
    pub fn set_section_text(&mut self, id: SectionId, text: &str) -> bool {
        match self.sections.iter_mut().find(|s| s.id == id) {
            Some(s) => {
                s.text = text.to_owned();
                true
            }
            None => false,
        }
    }

    /// Regenerates the AI sentences after a change of findings or decisions, keeping free text.
    pub fn update(&mut self, inputs: &StudyInputs, decisions: &Decisions) -> UpdateOutcome {
        let desired = generate(self.kind, self.lang, inputs, decisions);
        let mut outcome = UpdateOutcome::default();
        let wanted = |section: SectionId, key: &str| desired.iter().find(|d| d.section == section && d.key == key);

        // Replace what is still wanted, note what is to go, detach what the reader edited.
        let mut remove = Vec::new();
        let mut reader_sections = std::collections::BTreeSet::new();
        let mut keep = Vec::with_capacity(self.tracked.len());
        for mut t in std::mem::take(&mut self.tracked) {
            let want = wanted(t.section, &t.key);
            if t.detached {
                if t.finding_id.is_some() {
                    reader_sections.insert(t.section);
                }
                if want.is_none()
                    && let Some(id) = t.finding_id.clone()
                {
                    outcome.edited_by_reader.push(id);
                }
                keep.push(t);
                continue;
            }
            let text = self.section_text(t.section);
            match (text.find(&t.text), want) {
                (Some(pos), Some(d)) => {
                    if d.text != t.text {
                        self.replace(t.section, pos, t.text.len(), &d.text);
                        t.text.clone_from(&d.text);
                        outcome.replaced += 1;
                    }
                    keep.push(t);
                }
                (Some(_), None) => remove.push(t),
                (None, want) if want.is_some() || t.finding_id.is_some() => {
                    t.detached = true;
                    if let Some(id) = t.finding_id.clone() {
                        reader_sections.insert(t.section);
                        outcome.edited_by_reader.push(id);
                    }
                    keep.push(t);
                }
                (None, _) => {}
            }
        }
        self.tracked = keep;

        // Insert new sentences after the previous AI sentence of their section.
        let mut anchor: std::collections::BTreeMap<SectionId, usize> = std::collections::BTreeMap::new();
        for d in &desired {
            if let Some(t) = self.tracked.iter().find(|t| t.section == d.section && t.key == d.key) {
                if !t.detached
                    && let Some(pos) = self.section_text(d.section).find(&t.text)
                {
                    anchor.insert(d.section, pos + t.text.len());
                }
                continue;
            }
            // No boilerplate "normal" phrase beside a finding sentence the reader rewrote.
            if d.finding_id.is_none() && d.key == "normal" && reader_sections.contains(&d.section) {
                continue;
            }
            let Some(section) = self.sections.iter_mut().find(|s| s.id == d.section) else { continue };
            let end = match anchor.get(&d.section) {
                Some(&at) => {
                    let at = at.min(section.text.len());
                    section.text.insert_str(at, &format!("\n{}", d.text));
                    at + 1 + d.text.len()
                }
                None => {
                    let sep = if section.text.is_empty() { "" } else { "\n" };
                    section.text.insert_str(0, &format!("{}{sep}", d.text));
                    d.text.len()
                }
            };
            anchor.insert(d.section, end);
            self.tracked.push(Tracked {
                section: d.section,
                key: d.key.clone(),
                finding_id: d.finding_id.clone(),
                text: d.text.clone(),
                detached: false,
            });
            outcome.inserted += 1;
        }

        // Remove what is no longer wanted, with one adjacent line break.
        for t in remove {
            let Some(section) = self.sections.iter_mut().find(|s| s.id == t.section) else { continue };
            let Some(pos) = section.text.find(&t.text) else { continue };
            let mut start = pos;
            let mut end = pos + t.text.len();
            if section.text[end..].starts_with('\n') {
                end += 1;
            } else if section.text[..start].ends_with('\n') {
                start -= 1;
            }
            section.text.replace_range(start..end, "");
            outcome.removed += 1;
        }
        // Keep the tracked list in the generated order (stable output for tests and storage).
        self.tracked.sort_by_key(|t| {
            desired.iter().position(|d| d.section == t.section && d.key == t.key).unwrap_or(usize::MAX)
        });
        outcome
    }

    fn replace(&mut self, id: SectionId, pos: usize, len: usize, with: &str) {
        if let Some(s) = self.sections.iter_mut().find(|s| s.id == id) {
            s.text.replace_range(pos..pos + len, with);
        }
    }

    /// The section's text cut into pieces: Lucent's unchanged sentences (linked to their finding)
    /// and the rest, line by line.
    pub fn sentences(&self, id: SectionId) -> Vec<Sentence> {
        let text = self.section_text(id);
        let mut linked: Vec<(usize, usize, Option<String>)> = self
            .tracked
            .iter()
            .filter(|t| t.section == id && !t.detached)
            .filter_map(|t| text.find(&t.text).map(|p| (p, p + t.text.len(), t.finding_id.clone())))
            .collect();
        linked.sort_by_key(|(s, _, _)| *s);
        let mut out = Vec::new();
        let mut cursor = 0;
        let push_free = |from: usize, to: usize, out: &mut Vec<Sentence>| {
            let mut offset = from;
            for line in text[from..to].split('\n') {
                let trimmed = line.trim();
                if !trimmed.is_empty() {
                    let start = offset + (line.len() - line.trim_start().len());
                    out.push(Sentence {
                        text: trimmed.to_owned(),
                        finding_id: None,
                        start,
                        end: start + trimmed.len(),
                    });
                }
                offset += line.len() + 1;
            }
        };
        for (start, end, finding_id) in linked {
            if start < cursor {
                continue;
            }
            push_free(cursor, start, &mut out);
            out.push(Sentence { text: text[start..end].to_owned(), finding_id, start, end });
            cursor = end;
        }
        push_free(cursor, text.len(), &mut out);
        out
    }

    /// The finding whose sentence covers byte `offset` of the section (for "click shows the lesion").
    pub fn finding_at(&self, id: SectionId, offset: usize) -> Option<String> {
        self.sentences(id).into_iter().find(|s| s.start <= offset && offset < s.end).and_then(|s| s.finding_id)
    }

    /// The whole report as plain text: each non-empty section under its title.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for s in &self.sections {
            let body = s.text.trim();
            if body.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(s.id.title(self.lang));
            out.push_str(":\n");
            out.push_str(body);
            out.push('\n');
        }
        out
    }

    /// The conclusion (CXR impression, LDCT Lung-RADS assessment).
    pub fn conclusion(&self) -> String {
        self.sections.iter().filter(|s| s.id.is_conclusion()).map(|s| s.text.trim()).collect::<Vec<_>>().join("\n")
    }

    /// All sections' text joined, without titles (what the checks read).
    pub fn body_text(&self) -> String {
        self.sections.iter().map(|s| s.text.as_str()).collect::<Vec<_>>().join("\n")
    }
}

/// "(series 3, image 42)" / "(시리즈 3, 영상 42)", or nothing.
fn image_reference(image: Option<&ImageRef>, lang: Lang) -> String {
    let Some(image) = image else { return String::new() };
    let (series, img) = match lang {
        Lang::En => ("series", "image"),
        Lang::Ko => ("시리즈", "영상"),
    };
    match (image.series_number, image.instance_number) {
        (Some(s), Some(i)) => format!(" ({series} {s}, {img} {i})"),
        (None, Some(i)) => format!(" ({img} {i})"),
        _ => String::new(),
    }
}

/// Where a finding is, as words: the lobe, else the side of the lung, else nothing.
fn lung_place(f: &AiFinding, lang: Lang) -> Option<String> {
    if let Some(lobe) = f.lobe {
        return Some(lobe.name(lang).to_owned());
    }
    match (f.side, lang) {
        (Side::Right, Lang::En) => Some("right lung".into()),
        (Side::Left, Lang::En) => Some("left lung".into()),
        (Side::Bilateral, Lang::En) => Some("both lungs".into()),
        (Side::Right, Lang::Ko) => Some("우측 폐".into()),
        (Side::Left, Lang::Ko) => Some("좌측 폐".into()),
        (Side::Bilateral, Lang::Ko) => Some("양측 폐".into()),
        (Side::Unknown, _) => None,
    }
}

fn with_location(sentence: String, f: &AiFinding, lang: Lang) -> String {
    match &f.location {
        Some(loc) if !loc.trim().is_empty() => {
            let stem = sentence.trim_end_matches('.');
            match lang {
                Lang::En => format!("{stem} ({}).", loc.trim()),
                Lang::Ko => format!("{stem} ({}).", loc.trim()),
            }
        }
        _ => sentence,
    }
}

/// The sentence for a CXR finding in its own section.
fn cxr_sentence(f: &AiFinding, lang: Lang) -> (SectionId, String) {
    let terms = vocab::terms(&f.label);
    let name = terms.name(lang).to_owned();
    let side = if terms.lateral { f.effective_side() } else { Side::Unknown };
    let side_adj = side_word(side, lang);
    let text = match (terms.section, lang) {
        (SectionId::Lungs, Lang::En) => match lung_place(f, lang) {
            Some(place) if f.lobe.is_none() && side == Side::Bilateral => format!("{} in {place}.", capitalise(&name)),
            Some(place) => format!("{} in the {place}.", capitalise(&name)),
            None => format!("{} is suspected.", capitalise(&name)),
        },
        (SectionId::Lungs, Lang::Ko) => match lung_place(f, lang) {
            Some(place) => format!("{place}에 {name} 소견이 있음."),
            None => format!("{name} 소견이 의심됨."),
        },
        (_, Lang::En) if side_adj.is_empty() => format!("{}.", capitalise(&name)),
        (SectionId::Bones, Lang::En) => format!("Suspected {name} on the {side_adj}."),
        (_, Lang::En) => format!("{} {name}.", capitalise(side_adj)),
        (_, Lang::Ko) if side_adj.is_empty() => format!("{name} 소견."),
        (SectionId::Bones, Lang::Ko) => format!("{side_adj} {name} 의심."),
        (_, Lang::Ko) => format!("{side_adj} {name} 소견."),
    };
    (terms.section, with_location(text, f, lang))
}

/// The impression when only the image-level "abnormal" score is flagged.
fn summary_sentence(f: &AiFinding, lang: Lang) -> String {
    match lang {
        Lang::En => format!(
            "The AI rates the radiograph as abnormal (score {:.2}) without a specific finding above its threshold; \
             please review.",
            f.score
        ),
        Lang::Ko => {
            format!("AI가 비정상 영상으로 판단함(점수 {:.2}). 임계값을 넘는 특정 소견은 없음; 검토 바람.", f.score)
        }
    }
}

fn impression_sentence(f: &AiFinding, lang: Lang) -> String {
    let terms = vocab::terms(&f.label);
    let name = terms.name(lang);
    let side = if terms.lateral { f.effective_side() } else { Side::Unknown };
    let place = f.lobe.map(|l| l.name(lang).to_owned());
    match (lang, place) {
        (Lang::En, Some(place)) => format!("Suspected {name} in the {place}."),
        (Lang::Ko, Some(place)) => format!("{place} {name} 의심."),
        (Lang::En, None) if side == Side::Unknown => format!("Suspected {name}."),
        (Lang::En, None) => format!("Suspected {} {name}.", side_word(side, lang)),
        (Lang::Ko, None) if side == Side::Unknown => format!("{name} 의심."),
        (Lang::Ko, None) => format!("{} {name} 의심.", side_word(side, lang)),
    }
}

fn normal_sentence(section: SectionId, lang: Lang) -> Option<&'static str> {
    Some(match (section, lang) {
        (SectionId::Lungs, Lang::En) => "The lungs are clear without focal consolidation.",
        (SectionId::Pleura, Lang::En) => "No pleural effusion or pneumothorax.",
        (SectionId::HeartMediastinum, Lang::En) => "The heart size and mediastinal contours are within normal limits.",
        (SectionId::Bones, Lang::En) => "No acute osseous abnormality.",
        (SectionId::Impression, Lang::En) => "No focal consolidation, pleural effusion or pneumothorax.",
        (SectionId::Nodules, Lang::En) => "No pulmonary nodules detected.",
        (SectionId::OtherFindings, Lang::En) => "No other significant abnormality.",
        (SectionId::Lungs, Lang::Ko) => "양측 폐야는 깨끗하며 국소 경화 소견 없음.",
        (SectionId::Pleura, Lang::Ko) => "흉수 또는 기흉 없음.",
        (SectionId::HeartMediastinum, Lang::Ko) => "심장 크기와 종격동 윤곽은 정상 범위임.",
        (SectionId::Bones, Lang::Ko) => "급성 골 이상 소견 없음.",
        (SectionId::Impression, Lang::Ko) => "국소 경화, 흉수 또는 기흉 없음.",
        (SectionId::Nodules, Lang::Ko) => "폐결절 없음.",
        (SectionId::OtherFindings, Lang::Ko) => "그 외 특이 소견 없음.",
        _ => return None,
    })
}

fn technique_sentence(inputs: &StudyInputs, lang: Lang) -> String {
    let images: usize =
        // The largest CT series (a derived copy, e.g. a denoised series, is not more images read).
        inputs.context.series.iter().filter(|s| s.modality.eq_ignore_ascii_case("CT")).map(|s| s.images.len()).max().unwrap_or(0);
    match lang {
        Lang::En => {
            let mut s = "Low-dose CT of the chest without intravenous contrast, for lung cancer screening.".to_owned();
            if images > 0 {
                s = format!("{} {images} axial images reviewed.", s);
            }
            s
        }
        Lang::Ko => {
            let mut s = "폐암 검진을 위한 저선량 흉부 CT (조영제 미사용).".to_owned();
            if images > 0 {
                s = format!("{s} 축상 영상 {images}매 판독.");
            }
            s
        }
    }
}

fn nodule_sentence(f: &AiFinding, lang: Lang) -> String {
    let reference = image_reference(f.image.as_ref(), lang);
    let place = lung_place(f, lang);
    match (&f.nodule, lang) {
        (Some(n), Lang::En) => {
            let hu = n.mean_hu.map(|hu| format!(", mean attenuation {hu:.0} HU")).unwrap_or_default();
            let stem = match place {
                Some(p) => format!("{}: {} nodule", capitalise(&p), n.nodule_type.name(lang)),
                None => format!("{} nodule", capitalise(n.nodule_type.name(lang))),
            };
            format!(
                "{stem}, {:.1} x {:.1} mm (mean diameter {:.1} mm), volume {:.0} mm³{hu}{reference}.",
                n.long_axis_mm, n.short_axis_mm, n.mean_diameter_mm, n.volume_mm3
            )
        }
        (Some(n), Lang::Ko) => {
            let hu = n.mean_hu.map(|hu| format!(", 평균 감쇠 {hu:.0} HU")).unwrap_or_default();
            let at = place.map(|p| format!("{p}에 ")).unwrap_or_default();
            format!(
                "{at}{:.1} × {:.1} mm (평균 직경 {:.1} mm) {} 결절, 부피 {:.0} mm³{hu}{reference}.",
                n.long_axis_mm,
                n.short_axis_mm,
                n.mean_diameter_mm,
                n.nodule_type.name(lang),
                n.volume_mm3
            )
        }
        (None, Lang::En) => match place {
            Some(p) => format!("{}: nodule candidate, not measurable automatically{reference}.", capitalise(&p)),
            None => format!("Nodule candidate, not measurable automatically{reference}."),
        },
        (None, Lang::Ko) => {
            let at = place.map(|p| format!("{p}에 ")).unwrap_or_default();
            format!("{at}결절 후보, 자동 측정 불가{reference}.")
        }
    }
}

fn lung_rads_sentence(code: &str, lang: Lang) -> String {
    let (descriptor, management) = vocab::lung_rads_text(code, lang);
    match lang {
        Lang::En => format!("Lung-RADS v2022 category {code} ({descriptor}). Management: {management}"),
        Lang::Ko => format!("Lung-RADS v2022 범주 {code} ({descriptor}). 권고: {management}"),
    }
}

/// Every AI sentence the report should hold, in order.
fn generate(kind: ReportKind, lang: Lang, inputs: &StudyInputs, decisions: &Decisions) -> Vec<Generated> {
    let described = effective_findings(&inputs.findings, decisions);
    // Only flagged findings are drafted; below-threshold ones stay in the AI panel.
    let flagged: Vec<&AiFinding> = described.iter().filter(|f| f.is_flagged()).collect();
    // An image-level "abnormal" score has no place of its own: it is drafted only when nothing
    // more specific is flagged.
    let (summaries, shown): (Vec<&AiFinding>, Vec<&AiFinding>) =
        flagged.into_iter().partition(|f| is_summary_label(&f.label));
    let mut out = Vec::new();
    let fid = |f: &AiFinding| format!("f:{}", f.id);
    match kind {
        ReportKind::Cxr => {
            let mut by_section: std::collections::BTreeMap<SectionId, Vec<Generated>> = Default::default();
            for f in &shown {
                let (section, text) = cxr_sentence(f, lang);
                by_section.entry(section).or_default().push(Generated {
                    section,
                    key: fid(f),
                    finding_id: Some(f.id.clone()),
                    text,
                });
            }
            for &section in SectionId::for_kind(kind) {
                if section == SectionId::Impression {
                    if shown.is_empty() {
                        match summaries.first() {
                            Some(f) => out.push(Generated {
                                section,
                                key: fid(f),
                                finding_id: Some(f.id.clone()),
                                text: summary_sentence(f, lang),
                            }),
                            None => push_normal(&mut out, section, lang),
                        }
                    }
                    for f in &shown {
                        out.push(Generated {
                            section,
                            key: fid(f),
                            finding_id: Some(f.id.clone()),
                            text: impression_sentence(f, lang),
                        });
                    }
                    continue;
                }
                match by_section.remove(&section) {
                    Some(items) => out.extend(items),
                    None => push_normal(&mut out, section, lang),
                }
            }
        }
        ReportKind::Ldct => {
            out.push(Generated {
                section: SectionId::Technique,
                key: "technique".into(),
                finding_id: None,
                text: technique_sentence(inputs, lang),
            });
            let (nodules, others): (Vec<&AiFinding>, Vec<&AiFinding>) =
                shown.iter().partition(|f| f.nodule.is_some() || is_nodule_label(&f.label));
            if nodules.is_empty() {
                push_normal(&mut out, SectionId::Nodules, lang);
            }
            for f in &nodules {
                out.push(Generated {
                    section: SectionId::Nodules,
                    key: fid(f),
                    finding_id: Some(f.id.clone()),
                    text: nodule_sentence(f, lang),
                });
            }
            if others.is_empty() {
                push_normal(&mut out, SectionId::OtherFindings, lang);
            }
            for f in &others {
                let (_, text) = cxr_sentence(f, lang);
                out.push(Generated {
                    section: SectionId::OtherFindings,
                    key: fid(f),
                    finding_id: Some(f.id.clone()),
                    text,
                });
            }
            let visible: Vec<AiFinding> = shown.iter().map(|f| (*f).clone()).collect();
            if let Some(code) = expected_lung_rads(kind, &visible, inputs.lung_rads.as_ref()) {
                out.push(Generated {
                    section: SectionId::LungRads,
                    key: "lung_rads".into(),
                    finding_id: None,
                    text: lung_rads_sentence(&code, lang),
                });
            }
        }
    }
    out
}

fn push_normal(out: &mut Vec<Generated>, section: SectionId, lang: Lang) {
    if let Some(text) = normal_sentence(section, lang) {
        out.push(Generated { section, key: "normal".into(), finding_id: None, text: text.to_owned() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FindingDecision, Lobe, NoduleMeasurements, NoduleType, ReasonCode, StudyContext};

    fn cxr_inputs() -> StudyInputs {
        StudyInputs {
            context: StudyContext { study_uid: "1.2.3".into(), modality: "DX".into(), ..Default::default() },
            findings: vec![
                AiFinding {
                    id: "ptx".into(),
                    label: "pneumothorax".into(),
                    score: 0.9,
                    threshold: 0.5,
                    side: Side::Right,
                    ..Default::default()
                },
                AiFinding {
                    id: "cons".into(),
                    label: "consolidation".into(),
                    score: 0.7,
                    threshold: 0.5,
                    side: Side::Left,
                    ..Default::default()
                },
                AiFinding {
                    id: "low".into(),
                    label: "cardiomegaly".into(),
                    score: 0.2,
                    threshold: 0.5,
                    ..Default::default()
                },
            ],
            lung_rads: None,
        }
    }

    #[test]
    fn an_abnormal_score_is_drafted_only_alone_and_both_lungs_read_right() {
        let abnormal =
            AiFinding { id: "abn".into(), label: "Abnormal".into(), score: 0.9, threshold: 0.7, ..Default::default() };
        let mut inputs = cxr_inputs();
        inputs.findings[1].side = Side::Bilateral;
        inputs.findings.push(abnormal.clone());
        let text = draft(&inputs, &Decisions::new(), Lang::En).to_text();
        assert!(text.contains("Consolidation in both lungs."), "{text}");
        assert!(!text.to_lowercase().contains("abnormal in"), "{text}");
        assert!(!text.contains("rates the radiograph as abnormal"), "a specific finding is flagged: {text}");
        // Only the summary score flagged: the impression says so, nothing else is invented.
        inputs.findings = vec![abnormal];
        let alone = draft(&inputs, &Decisions::new(), Lang::En);
        assert!(alone.to_text().contains("rates the radiograph as abnormal (score 0.90)"), "{}", alone.to_text());
        assert!(draft(&inputs, &Decisions::new(), Lang::Ko).to_text().contains("비정상 영상"));
    }

    #[test]
    fn cxr_english_and_korean() {
        let inputs = cxr_inputs();
        let en = draft(&inputs, &Decisions::new(), Lang::En);
        assert_eq!(en.section_text(SectionId::Pleura), "Right pneumothorax.");
        assert_eq!(en.section_text(SectionId::Lungs), "Consolidation in the left lung.");
        assert!(en.section_text(SectionId::HeartMediastinum).contains("within normal limits"));
        assert_eq!(
            en.section_text(SectionId::Impression),
            "Suspected right pneumothorax.\nSuspected left consolidation."
        );
        let ko = draft(&inputs, &Decisions::new(), Lang::Ko);
        assert_eq!(ko.section_text(SectionId::Pleura), "우측 기흉 소견.");
        assert_eq!(ko.section_text(SectionId::Lungs), "좌측 폐에 경화 소견이 있음.");
        assert!(ko.to_text().starts_with("폐:\n"));
    }

    #[test]
    fn nothing_found_gives_normal_phrasing() {
        let mut inputs = cxr_inputs();
        inputs.findings.clear();
        let en = draft(&inputs, &Decisions::new(), Lang::En);
        assert_eq!(en.section_text(SectionId::Impression), "No focal consolidation, pleural effusion or pneumothorax.");
        assert_eq!(en.section_text(SectionId::Pleura), "No pleural effusion or pneumothorax.");
    }

    #[test]
    fn decisions_update_ai_sentences_and_keep_free_text() {
        let inputs = cxr_inputs();
        let mut decisions = Decisions::new();
        let mut report = draft(&inputs, &decisions, Lang::En);
        // The radiologist adds free text around the AI sentence.
        report.set_section_text(SectionId::Pleura, "Right pneumothorax.\nChest tube in place, tip at the apex.");
        decisions.insert(
            "ptx".into(),
            FindingDecision::Rejected { reason: ReasonCode::FalsePositive, comment: "skin fold".into() },
        );
        let outcome = report.update(&inputs, &decisions);
        assert_eq!(
            report.section_text(SectionId::Pleura),
            "No pleural effusion or pneumothorax.\nChest tube in place, tip at the apex."
        );
        assert!(!report.section_text(SectionId::Impression).contains("pneumothorax"));
        assert!(outcome.removed >= 2 && outcome.inserted >= 1, "{outcome:?}");
        // Accept it again: the sentence comes back where the normal phrase was.
        decisions.insert("ptx".into(), FindingDecision::Accepted);
        report.update(&inputs, &decisions);
        assert_eq!(
            report.section_text(SectionId::Pleura),
            "Right pneumothorax.\nChest tube in place, tip at the apex."
        );
        // Sentences are linked to their findings for click-to-lesion.
        let sentences = report.sentences(SectionId::Pleura);
        assert_eq!(sentences[0].finding_id.as_deref(), Some("ptx"));
        assert_eq!(sentences[1].finding_id, None);
        assert_eq!(report.finding_at(SectionId::Pleura, 3).as_deref(), Some("ptx"));
        // Editing the finding (relabel side) rewrites only its sentence.
        decisions.insert(
            "ptx".into(),
            FindingDecision::Edited {
                edit: crate::model::FindingEdit { side: Some(Side::Left), ..Default::default() },
                reason: ReasonCode::WrongLocation,
                comment: String::new(),
            },
        );
        let outcome = report.update(&inputs, &decisions);
        assert_eq!(report.section_text(SectionId::Pleura), "Left pneumothorax.\nChest tube in place, tip at the apex.");
        assert!(outcome.replaced >= 1);
    }

    #[test]
    fn a_sentence_the_reader_rewrote_is_left_alone() {
        let inputs = cxr_inputs();
        let mut decisions = Decisions::new();
        let mut report = draft(&inputs, &decisions, Lang::En);
        report.set_section_text(SectionId::Pleura, "Small right apical pneumothorax, about 1 cm.");
        decisions.insert("ptx".into(), FindingDecision::Rejected { reason: ReasonCode::Other, comment: String::new() });
        let outcome = report.update(&inputs, &decisions);
        assert_eq!(report.section_text(SectionId::Pleura), "Small right apical pneumothorax, about 1 cm.");
        assert_eq!(outcome.edited_by_reader, vec!["ptx".to_owned()]);
    }

    #[test]
    fn ldct_nodules_in_both_languages() {
        let inputs = StudyInputs {
            context: StudyContext { modality: "CT".into(), ..Default::default() },
            findings: vec![AiFinding {
                id: "n1".into(),
                label: "nodule".into(),
                score: 0.8,
                threshold: 0.5,
                lobe: Some(Lobe::RightLower),
                nodule: Some(NoduleMeasurements {
                    long_axis_mm: 9.1,
                    short_axis_mm: 7.3,
                    mean_diameter_mm: 8.2,
                    volume_mm3: 270.0,
                    nodule_type: NoduleType::Solid,
                    mean_hu: Some(35.0),
                    lung_rads: Some("4A".into()),
                }),
                image: Some(ImageRef { series_number: Some(3), instance_number: Some(42), ..Default::default() }),
                ..Default::default()
            }],
            lung_rads: None,
        };
        let en = draft(&inputs, &Decisions::new(), Lang::En);
        assert_eq!(
            en.section_text(SectionId::Nodules),
            "Right lower lobe: solid nodule, 9.1 x 7.3 mm (mean diameter 8.2 mm), volume 270 mm³, mean attenuation 35 HU (series 3, image 42)."
        );
        assert!(en.section_text(SectionId::LungRads).starts_with("Lung-RADS v2022 category 4A (Suspicious)"));
        let ko = draft(&inputs, &Decisions::new(), Lang::Ko);
        assert!(ko.section_text(SectionId::Nodules).starts_with("우하엽에 9.1 × 7.3 mm (평균 직경 8.2 mm) 고형 결절"));
        assert!(ko.section_text(SectionId::LungRads).contains("범주 4A"));
        let mut decisions = Decisions::new();
        decisions
            .insert("n1".into(), FindingDecision::Rejected { reason: ReasonCode::Artifact, comment: String::new() });
        let mut report = en.clone();
        report.update(&inputs, &decisions);
        assert_eq!(report.section_text(SectionId::Nodules), "No pulmonary nodules detected.");
        assert!(report.section_text(SectionId::LungRads).contains("category 1 (Negative)"));
    }
}
