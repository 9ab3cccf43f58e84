//! Lung-RADS v2022 assessment categories for a **baseline** low-dose CT screening exam.
//!
//! Source: American College of Radiology, *Lung CT Screening Reporting & Data System (Lung-RADS)
//! v2022* (released November 2022), the baseline rows of its assessment-category table; summarised
//! in Christensen J. et al., "ACR Lung-RADS v2022: Assessment Categories and Management
//! Recommendations", CHEST 2024;165(3):738-753. The rules are the data table [`BASELINE_RULES`],
//! checked in order; the first row a nodule matches gives its category, and the exam's category is
//! that of its most suspicious nodule (1 when there are none).
//!
//! Sizes are **mean diameters** (long + short axis) / 2, rounded to one decimal place as v2022
//! asks before comparison, or, with [`SizeBasis::Volume`], volumes rounded to whole mm³.
//!
//! Not covered here (they need prior exams, cyst morphology or a reader's judgement): growth, new
//! and stable nodules at follow-up, atypical pulmonary cysts, category 0, the S modifier, and the
//! decision that features are suspicious enough for 4X ([`NoduleFindings::suspicious_features`]
//! is the reader's input). Lucent proposes a category for the radiologist to confirm; it never
//! decides one.

use serde::Serialize;

/// A Lung-RADS assessment category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Category {
    /// Incomplete. Here: the nodule could not be classified from the sizes given (see
    /// [`Assessment::note`]), so the reader must complete it.
    C0,
    /// Negative.
    C1,
    /// Benign appearance or behaviour.
    C2,
    /// Probably benign.
    C3,
    /// Suspicious.
    C4A,
    /// Very suspicious.
    C4B,
    /// Category 3 or 4 with additional features or imaging findings that increase suspicion.
    C4X,
}

impl Category {
    pub fn code(self) -> &'static str {
        match self {
            Self::C0 => "0",
            Self::C1 => "1",
            Self::C2 => "2",
            Self::C3 => "3",
            Self::C4A => "4A",
            Self::C4B => "4B",
            Self::C4X => "4X",
        }
    }

    pub fn descriptor(self) -> &'static str {
        match self {
            Self::C0 => "Incomplete",
            Self::C1 => "Negative",
            Self::C2 => "Benign",
            Self::C3 => "Probably benign",
            Self::C4A => "Suspicious",
            Self::C4B | Self::C4X => "Very suspicious",
        }
    }

    /// The v2022 management recommendation.
    pub fn management(self) -> &'static str {
        match self {
            Self::C0 => {
                "Additional lung cancer screening CT images and/or comparison to prior chest CT examinations is needed"
            }
            Self::C1 | Self::C2 => "12-month screening LDCT",
            Self::C3 => "6-month LDCT",
            Self::C4A => {
                "3-month LDCT; PET/CT may be considered if there is a solid nodule or solid component of 8 mm (268 mm³) or more"
            }
            Self::C4B | Self::C4X => {
                "Referral for further clinical evaluation: diagnostic chest CT with or without contrast; PET/CT may be \
                 considered if there is a solid nodule or solid component of 8 mm (268 mm³) or more; tissue sampling; \
                 and/or referral for further clinical evaluation. Management depends on clinical evaluation, patient \
                 preference and probability of malignancy"
            }
        }
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// Attenuation type of a nodule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Attenuation {
    Solid,
    PartSolid,
    /// Non-solid (ground-glass) nodule, GGN.
    NonSolid,
}

/// Where an airway nodule sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AirwayLevel {
    Subsegmental,
    /// Segmental or more proximal.
    SegmentalOrProximal,
}

/// What the table needs to know about one nodule at baseline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NoduleFindings {
    pub attenuation: Attenuation,
    /// Mean diameter of the whole nodule, mm.
    pub mean_diameter_mm: f64,
    /// Part-solid nodules: mean diameter of the solid component, mm.
    pub solid_mean_diameter_mm: Option<f64>,
    /// Volume of the whole nodule, mm³ (for [`SizeBasis::Volume`]).
    pub volume_mm3: Option<f64>,
    /// Part-solid nodules: volume of the solid component, mm³.
    pub solid_volume_mm3: Option<f64>,
    /// Complete, central, popcorn or concentric-ring calcification, or fat.
    pub benign_calcification_or_fat: bool,
    /// A solid juxtapleural nodule (including perifissural) with smooth margins and an oval,
    /// lentiform or triangular shape.
    pub juxtapleural: bool,
    /// An airway (endobronchial) nodule.
    pub airway: Option<AirwayLevel>,
    /// Additional features or findings that increase suspicion (spiculation, lymphadenopathy,
    /// ...), as judged by the reader: upgrades category 3 or 4 to 4X.
    pub suspicious_features: bool,
}

impl NoduleFindings {
    /// A nodule with only its attenuation and size.
    pub fn new(attenuation: Attenuation, mean_diameter_mm: f64, solid_mean_diameter_mm: Option<f64>) -> Self {
        Self {
            attenuation,
            mean_diameter_mm,
            solid_mean_diameter_mm,
            volume_mm3: None,
            solid_volume_mm3: None,
            benign_calcification_or_fat: false,
            juxtapleural: false,
            airway: None,
            suspicious_features: false,
        }
    }
}

/// Whether sizes are compared as mean diameters or volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum SizeBasis {
    #[default]
    MeanDiameter,
    Volume,
}

/// Which nodules a row applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RowKind {
    BenignCalcificationOrFat,
    Juxtapleural,
    Solid,
    PartSolid,
    NonSolid,
    Airway(AirwayLevel),
}

/// A half-open size range `[min, max)` in mm (mean diameter) and the matching mm³ (volume).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SizeRange {
    pub min_mm: Option<f64>,
    pub max_mm: Option<f64>,
    pub min_mm3: Option<f64>,
    pub max_mm3: Option<f64>,
}

impl SizeRange {
    const ANY: Self = Self { min_mm: None, max_mm: None, min_mm3: None, max_mm3: None };

    const fn mm(min_mm: Option<f64>, max_mm: Option<f64>, min_mm3: Option<f64>, max_mm3: Option<f64>) -> Self {
        Self { min_mm, max_mm, min_mm3, max_mm3 }
    }

    fn contains(&self, mm: f64, mm3: Option<f64>, basis: SizeBasis) -> Option<bool> {
        let (v, lo, hi) = match basis {
            SizeBasis::MeanDiameter => (Some(mm), self.min_mm, self.max_mm),
            SizeBasis::Volume => (mm3, self.min_mm3, self.max_mm3),
        };
        if lo.is_none() && hi.is_none() {
            return Some(true);
        }
        let v = v?;
        Some(lo.is_none_or(|lo| v >= lo) && hi.is_none_or(|hi| v < hi))
    }
}

/// One row of the baseline table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rule {
    pub category: Category,
    pub kind: RowKind,
    /// Size of the whole nodule.
    pub total: SizeRange,
    /// Size of the solid component (part-solid rows).
    pub solid: SizeRange,
    /// The finding as the table states it.
    pub text: &'static str,
}

/// Lung-RADS v2022 baseline rows, in the order they are checked.
pub const BASELINE_RULES: &[Rule] = &[
    Rule {
        category: Category::C1,
        kind: RowKind::BenignCalcificationOrFat,
        total: SizeRange::ANY,
        solid: SizeRange::ANY,
        text: "Nodule(s) with specific calcifications: complete, central, popcorn, concentric rings and fat-containing nodules",
    },
    Rule {
        category: Category::C2,
        kind: RowKind::Juxtapleural,
        total: SizeRange::mm(None, Some(10.0), None, Some(524.0)),
        solid: SizeRange::ANY,
        text: "Juxtapleural nodule(s): < 10 mm (524 mm³) mean diameter at baseline",
    },
    Rule {
        category: Category::C2,
        kind: RowKind::Airway(AirwayLevel::Subsegmental),
        total: SizeRange::ANY,
        solid: SizeRange::ANY,
        text: "Airway nodule(s): subsegmental, at baseline",
    },
    Rule {
        category: Category::C4A,
        kind: RowKind::Airway(AirwayLevel::SegmentalOrProximal),
        total: SizeRange::ANY,
        solid: SizeRange::ANY,
        text: "Airway nodule(s): segmental or more proximal, at baseline",
    },
    Rule {
        category: Category::C2,
        kind: RowKind::Solid,
        total: SizeRange::mm(None, Some(6.0), None, Some(113.0)),
        solid: SizeRange::ANY,
        text: "Solid nodule(s): < 6 mm (< 113 mm³) at baseline",
    },
    Rule {
        category: Category::C3,
        kind: RowKind::Solid,
        total: SizeRange::mm(Some(6.0), Some(8.0), Some(113.0), Some(268.0)),
        solid: SizeRange::ANY,
        text: "Solid nodule(s): >= 6 to < 8 mm (>= 113 to < 268 mm³) at baseline",
    },
    Rule {
        category: Category::C4A,
        kind: RowKind::Solid,
        total: SizeRange::mm(Some(8.0), Some(15.0), Some(268.0), Some(1767.0)),
        solid: SizeRange::ANY,
        text: "Solid nodule(s): >= 8 to < 15 mm (>= 268 to < 1,767 mm³) at baseline",
    },
    Rule {
        category: Category::C4B,
        kind: RowKind::Solid,
        total: SizeRange::mm(Some(15.0), None, Some(1767.0), None),
        solid: SizeRange::ANY,
        text: "Solid nodule(s): >= 15 mm (>= 1,767 mm³) at baseline",
    },
    Rule {
        category: Category::C2,
        kind: RowKind::PartSolid,
        total: SizeRange::mm(None, Some(6.0), None, Some(113.0)),
        solid: SizeRange::ANY,
        text: "Part-solid nodule(s): < 6 mm total mean diameter (< 113 mm³) at baseline",
    },
    Rule {
        category: Category::C3,
        kind: RowKind::PartSolid,
        total: SizeRange::mm(Some(6.0), None, Some(113.0), None),
        solid: SizeRange::mm(None, Some(6.0), None, Some(113.0)),
        text: "Part-solid nodule(s): >= 6 mm total mean diameter (>= 113 mm³) with solid component < 6 mm (< 113 mm³) at baseline",
    },
    Rule {
        category: Category::C4A,
        kind: RowKind::PartSolid,
        total: SizeRange::mm(Some(6.0), None, Some(113.0), None),
        solid: SizeRange::mm(Some(6.0), Some(8.0), Some(113.0), Some(268.0)),
        text: "Part-solid nodule(s): >= 6 mm total mean diameter (>= 113 mm³) with solid component >= 6 to < 8 mm (>= 113 to < 268 mm³) at baseline",
    },
    Rule {
        category: Category::C4B,
        kind: RowKind::PartSolid,
        total: SizeRange::ANY,
        solid: SizeRange::mm(Some(8.0), None, Some(268.0), None),
        text: "Part-solid nodule(s): solid component >= 8 mm (>= 268 mm³) at baseline",
    },
    Rule {
        category: Category::C2,
        kind: RowKind::NonSolid,
        total: SizeRange::mm(None, Some(30.0), None, Some(14137.0)),
        solid: SizeRange::ANY,
        text: "Non-solid nodule(s) (GGN): < 30 mm (< 14,137 mm³) at baseline",
    },
    Rule {
        category: Category::C3,
        kind: RowKind::NonSolid,
        total: SizeRange::mm(Some(30.0), None, Some(14137.0), None),
        solid: SizeRange::ANY,
        text: "Non-solid nodule(s) (GGN): >= 30 mm (>= 14,137 mm³) at baseline",
    },
];

/// The category proposed for a nodule or an exam, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assessment {
    pub category: Category,
    /// The table row that matched (`None` for an exam without nodules, or when sizes were missing).
    pub rule: Option<&'static Rule>,
    /// Whether suspicious features raised 3/4A/4B to 4X.
    pub upgraded_to_4x: bool,
    pub management: &'static str,
    /// Why no row matched, when none did.
    pub note: Option<String>,
}

/// Round to one decimal place, as v2022 asks of mean diameters.
pub fn round_mean_diameter(mm: f64) -> f64 {
    (mm * 10.0).round() / 10.0
}

/// Classify one nodule at baseline.
pub fn classify_nodule(n: &NoduleFindings, basis: SizeBasis) -> Assessment {
    let total = round_mean_diameter(n.mean_diameter_mm);
    let solid = n.solid_mean_diameter_mm.map(round_mean_diameter);
    let total_mm3 = n.volume_mm3.map(f64::round);
    let solid_mm3 = n.solid_volume_mm3.map(f64::round);
    let mut missing = None;
    for rule in BASELINE_RULES {
        let kind_matches = match rule.kind {
            RowKind::BenignCalcificationOrFat => n.benign_calcification_or_fat,
            RowKind::Juxtapleural => n.juxtapleural && n.attenuation == Attenuation::Solid,
            RowKind::Airway(level) => n.airway == Some(level),
            RowKind::Solid => n.attenuation == Attenuation::Solid && n.airway.is_none(),
            RowKind::PartSolid => n.attenuation == Attenuation::PartSolid && n.airway.is_none(),
            RowKind::NonSolid => n.attenuation == Attenuation::NonSolid && n.airway.is_none(),
        };
        if !kind_matches {
            continue;
        }
        let total_ok = rule.total.contains(total, total_mm3, basis);
        let solid_ok = if rule.solid == SizeRange::ANY {
            Some(true)
        } else {
            match solid {
                Some(s) => rule.solid.contains(s, solid_mm3, basis),
                None => None,
            }
        };
        match (total_ok, solid_ok) {
            (Some(true), Some(true)) => return assessment(rule.category, Some(rule), n.suspicious_features, None),
            (None, _) | (_, None) => missing = Some(format!("row \"{}\" needs a size that was not given", rule.text)),
            _ => {}
        }
    }
    // Only reached when a size the matching row needs is missing (e.g. a part-solid nodule
    // without its solid component): never guess a lower category, hand it to the reader.
    let note = missing.unwrap_or_else(|| "no Lung-RADS v2022 baseline row matched".to_owned());
    Assessment {
        category: Category::C0,
        rule: None,
        upgraded_to_4x: false,
        management: Category::C0.management(),
        note: Some(note),
    }
}

fn assessment(category: Category, rule: Option<&'static Rule>, suspicious: bool, note: Option<String>) -> Assessment {
    let upgrade = suspicious && matches!(category, Category::C3 | Category::C4A | Category::C4B);
    let category = if upgrade { Category::C4X } else { category };
    Assessment { category, rule, upgraded_to_4x: upgrade, management: category.management(), note }
}

/// Classify an exam: the most suspicious nodule's assessment, or category 1 without nodules.
/// Any nodule that could not be classified (category 0) makes the exam 0.
pub fn classify_exam(nodules: &[NoduleFindings], basis: SizeBasis) -> Assessment {
    let all: Vec<Assessment> = nodules.iter().map(|n| classify_nodule(n, basis)).collect();
    if let Some(incomplete) = all.iter().find(|a| a.category == Category::C0) {
        return incomplete.clone();
    }
    all.into_iter()
        .max_by_key(|a| a.category)
        .unwrap_or_else(|| assessment(Category::C1, None, false, Some("no lung nodules".to_owned())))
}

/// Lung-RADS inputs from a measured CT nodule (type and mean diameters from [`crate::ct::measure`]).
/// Calcification, juxtapleural shape, airway position and suspicious features are left for the
/// reader (false / none).
pub fn findings_from_measurement(m: &crate::ct::NoduleMeasurement) -> NoduleFindings {
    let attenuation = match m.nodule_type {
        crate::ct::NoduleType::Solid => Attenuation::Solid,
        crate::ct::NoduleType::PartSolid => Attenuation::PartSolid,
        crate::ct::NoduleType::GroundGlass => Attenuation::NonSolid,
    };
    let part_solid = attenuation == Attenuation::PartSolid;
    NoduleFindings {
        attenuation,
        mean_diameter_mm: m.axes.mean_diameter_mm,
        solid_mean_diameter_mm: if part_solid { Some(m.solid_axes.map_or(0.0, |a| a.mean_diameter_mm)) } else { None },
        volume_mm3: Some(m.volume_mm3),
        solid_volume_mm3: part_solid.then_some(m.solid_volume_mm3),
        ..NoduleFindings::new(attenuation, 0.0, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(n: NoduleFindings) -> (Category, &'static str) {
        let a = classify_nodule(&n, SizeBasis::MeanDiameter);
        (a.category, a.rule.map_or("", |r| r.text))
    }

    fn solid(mm: f64) -> NoduleFindings {
        NoduleFindings::new(Attenuation::Solid, mm, None)
    }

    fn part_solid(total: f64, solid: f64) -> NoduleFindings {
        NoduleFindings::new(Attenuation::PartSolid, total, Some(solid))
    }

    fn ggn(mm: f64) -> NoduleFindings {
        NoduleFindings::new(Attenuation::NonSolid, mm, None)
    }

    // One test per row of BASELINE_RULES, with both sides of each threshold.

    #[test]
    fn row_calcified_or_fat_is_1() {
        let n = NoduleFindings { benign_calcification_or_fat: true, ..solid(20.0) };
        assert_eq!(cat(n), (Category::C1, BASELINE_RULES[0].text));
    }

    #[test]
    fn row_juxtapleural_under_10_is_2() {
        let n = NoduleFindings { juxtapleural: true, ..solid(9.9) };
        assert_eq!(cat(n), (Category::C2, BASELINE_RULES[1].text));
        // At 10 mm it is sized as any solid nodule.
        let n = NoduleFindings { juxtapleural: true, ..solid(10.0) };
        assert_eq!(cat(n).0, Category::C4A);
    }

    #[test]
    fn row_airway_subsegmental_is_2() {
        let n = NoduleFindings { airway: Some(AirwayLevel::Subsegmental), ..solid(12.0) };
        assert_eq!(cat(n), (Category::C2, BASELINE_RULES[2].text));
    }

    #[test]
    fn row_airway_segmental_is_4a() {
        let n = NoduleFindings { airway: Some(AirwayLevel::SegmentalOrProximal), ..solid(3.0) };
        assert_eq!(cat(n), (Category::C4A, BASELINE_RULES[3].text));
    }

    #[test]
    fn row_solid_under_6_is_2() {
        assert_eq!(cat(solid(5.9)), (Category::C2, BASELINE_RULES[4].text));
        assert_eq!(cat(solid(0.5)).0, Category::C2);
    }

    #[test]
    fn row_solid_6_to_8_is_3() {
        assert_eq!(cat(solid(6.0)), (Category::C3, BASELINE_RULES[5].text));
        assert_eq!(cat(solid(7.9)).0, Category::C3);
        // Rounded to one decimal first: 5.96 mm reads 6.0 mm.
        assert_eq!(cat(solid(5.96)).0, Category::C3);
    }

    #[test]
    fn row_solid_8_to_15_is_4a() {
        assert_eq!(cat(solid(8.0)), (Category::C4A, BASELINE_RULES[6].text));
        assert_eq!(cat(solid(14.9)).0, Category::C4A);
    }

    #[test]
    fn row_solid_15_and_over_is_4b() {
        assert_eq!(cat(solid(15.0)), (Category::C4B, BASELINE_RULES[7].text));
        assert_eq!(cat(solid(40.0)).0, Category::C4B);
    }

    #[test]
    fn row_part_solid_under_6_total_is_2() {
        assert_eq!(cat(part_solid(5.9, 2.0)), (Category::C2, BASELINE_RULES[8].text));
    }

    #[test]
    fn row_part_solid_6_total_solid_under_6_is_3() {
        assert_eq!(cat(part_solid(6.0, 5.9)), (Category::C3, BASELINE_RULES[9].text));
        assert_eq!(cat(part_solid(25.0, 1.0)).0, Category::C3);
    }

    #[test]
    fn row_part_solid_solid_6_to_8_is_4a() {
        assert_eq!(cat(part_solid(12.0, 6.0)), (Category::C4A, BASELINE_RULES[10].text));
        assert_eq!(cat(part_solid(12.0, 7.9)).0, Category::C4A);
    }

    #[test]
    fn row_part_solid_solid_8_and_over_is_4b() {
        assert_eq!(cat(part_solid(12.0, 8.0)), (Category::C4B, BASELINE_RULES[11].text));
    }

    #[test]
    fn row_ggn_under_30_is_2() {
        assert_eq!(cat(ggn(29.9)), (Category::C2, BASELINE_RULES[12].text));
    }

    #[test]
    fn row_ggn_30_and_over_is_3() {
        assert_eq!(cat(ggn(30.0)), (Category::C3, BASELINE_RULES[13].text));
    }

    #[test]
    fn every_row_has_a_test_above() {
        // Keep this in step with the row tests: 14 rows.
        assert_eq!(BASELINE_RULES.len(), 14);
    }

    #[test]
    fn volumes_use_the_mm3_thresholds() {
        let n = NoduleFindings { volume_mm3: Some(112.6), ..solid(0.0) };
        assert_eq!(classify_nodule(&n, SizeBasis::Volume).category, Category::C3); // rounds to 113
        let n = NoduleFindings { volume_mm3: Some(112.4), ..solid(0.0) };
        assert_eq!(classify_nodule(&n, SizeBasis::Volume).category, Category::C2);
        let n = NoduleFindings { volume_mm3: Some(2000.0), solid_volume_mm3: Some(300.0), ..part_solid(0.0, 0.0) };
        assert_eq!(classify_nodule(&n, SizeBasis::Volume).category, Category::C4B);
        let n = solid(7.0);
        let a = classify_nodule(&n, SizeBasis::Volume);
        assert!(a.rule.is_none() && a.note.is_some(), "{a:?}");
    }

    #[test]
    fn suspicious_features_make_3_and_4_into_4x() {
        for (n, upgraded) in [(solid(7.0), true), (solid(10.0), true), (solid(20.0), true), (solid(4.0), false)] {
            let a = classify_nodule(&NoduleFindings { suspicious_features: true, ..n }, SizeBasis::MeanDiameter);
            assert_eq!(a.category == Category::C4X, upgraded, "{a:?}");
            assert_eq!(a.upgraded_to_4x, upgraded);
        }
        assert_eq!(Category::C4X.management(), Category::C4B.management());
    }

    #[test]
    fn the_exam_takes_the_worst_nodule() {
        let a = classify_exam(&[solid(4.0), ggn(35.0), part_solid(10.0, 6.5)], SizeBasis::MeanDiameter);
        assert_eq!(a.category, Category::C4A);
        assert_eq!(a.management, Category::C4A.management());
        let none = classify_exam(&[], SizeBasis::MeanDiameter);
        assert_eq!(none.category, Category::C1);
        assert_eq!(none.management, "12-month screening LDCT");
    }

    #[test]
    fn a_part_solid_nodule_without_solid_size_is_flagged() {
        let n = NoduleFindings::new(Attenuation::PartSolid, 12.0, None);
        let a = classify_nodule(&n, SizeBasis::MeanDiameter);
        assert_eq!(a.category, Category::C0);
        assert!(a.rule.is_none());
        assert!(a.note.unwrap().contains("needs a size"));
        assert_eq!(classify_exam(&[solid(20.0), n], SizeBasis::MeanDiameter).category, Category::C0);
    }
}
