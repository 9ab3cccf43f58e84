//! Hanging protocols as data: which series of which study go into which viewport, with which
//! window, when a study is opened. The defaults ship in `assets/hanging_protocols.json`; the
//! user's copy in the Lucent data folder (created on first run) is the one used, so it can be
//! edited. The first protocol whose every viewport can be filled wins.

use std::path::{Path, PathBuf};

use pacs::store::SeriesRow;
use serde::{Deserialize, Serialize};

/// The protocols shipped with Lucent.
pub const DEFAULT_PROTOCOLS: &str = include_str!("../../../assets/hanging_protocols.json");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HangingProtocols {
    pub protocols: Vec<Protocol>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Protocol {
    pub name: String,
    /// The opened study must contain one of these modalities.
    pub modalities: Vec<String>,
    /// (rows, columns)
    pub layout: [usize; 2],
    pub viewports: Vec<ViewportRule>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StudyRole {
    /// The study being opened.
    Current,
    /// The same patient's most recent earlier study of the same modality.
    Prior,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ViewportRule {
    pub study: StudyRole,
    /// Acceptable ViewPosition values ("" matches a series without one); empty list: any.
    #[serde(default)]
    pub view_positions: Vec<String>,
    #[serde(default)]
    pub modality: Option<String>,
    #[serde(default)]
    pub window: Option<WindowSpec>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct WindowSpec {
    pub center: f64,
    pub width: f64,
}

/// What the store knows about a study being opened.
#[derive(Debug, Clone, Default)]
pub struct HangingContext {
    pub study_uid: String,
    pub series: Vec<SeriesRow>,
    /// The prior study's series (empty when there is no prior).
    pub prior_series: Vec<SeriesRow>,
}

/// One filled viewport: the series and the window to start with.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub viewport: usize,
    pub series_uid: String,
    pub window: Option<WindowSpec>,
}

impl HangingProtocols {
    pub fn defaults() -> Self {
        // The shipped file is checked by a unit test; an unparsable one falls back to none.
        serde_json::from_str(DEFAULT_PROTOCOLS).unwrap_or(Self { protocols: Vec::new() })
    }

    /// Loads the user's protocols, writing the defaults there first if there are none.
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        if !path.exists() {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            std::fs::write(path, DEFAULT_PROTOCOLS).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{} is not a valid hanging protocol file: {e}", path.display()))
    }

    /// The user's protocol file.
    pub fn user_path(data_dir: &Path) -> PathBuf {
        data_dir.join("hanging_protocols.json")
    }

    /// The first protocol that fits, with its placements.
    pub fn choose(&self, ctx: &HangingContext) -> Option<(&Protocol, Vec<Placement>)> {
        self.protocols.iter().find_map(|p| p.place(ctx).map(|placements| (p, placements)))
    }
}

impl Protocol {
    /// Fills every viewport, or `None` when one cannot be filled.
    pub fn place(&self, ctx: &HangingContext) -> Option<Vec<Placement>> {
        if !ctx.series.iter().any(|s| self.modalities.contains(&s.modality)) {
            return None;
        }
        let mut used: Vec<&str> = Vec::new();
        let mut out = Vec::new();
        for (viewport, rule) in self.viewports.iter().enumerate() {
            let pool = match rule.study {
                StudyRole::Current => &ctx.series,
                StudyRole::Prior => &ctx.prior_series,
            };
            let fits = |s: &&SeriesRow| {
                self.modalities.contains(&s.modality)
                    && rule.modality.as_ref().is_none_or(|m| *m == s.modality)
                    && (rule.view_positions.is_empty()
                        || rule.view_positions.iter().any(|v| v.eq_ignore_ascii_case(&s.view_position)))
            };
            // Prefer a series not placed yet (so "lung + mediastinal" may reuse one series twice).
            let series = pool
                .iter()
                .filter(fits)
                .find(|s| !used.contains(&s.series_uid.as_str()))
                .or_else(|| pool.iter().find(fits))?;
            used.push(&series.series_uid);
            out.push(Placement { viewport, series_uid: series.series_uid.clone(), window: rule.window });
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(uid: &str, modality: &str, view: &str) -> SeriesRow {
        SeriesRow {
            series_uid: uid.into(),
            study_uid: "s".into(),
            modality: modality.into(),
            series_number: Some(1),
            description: String::new(),
            body_part: "CHEST".into(),
            view_position: view.into(),
            instances: 1,
        }
    }

    #[test]
    fn shipped_protocols_parse() {
        let p: HangingProtocols = serde_json::from_str(DEFAULT_PROTOCOLS).unwrap();
        assert_eq!(p.protocols.len(), 4);
    }

    #[test]
    fn cxr_with_a_prior_goes_side_by_side() {
        let ctx = HangingContext {
            study_uid: "s".into(),
            series: vec![series("now", "CR", "PA")],
            prior_series: vec![series("then", "CR", "PA")],
        };
        let (p, placements) = HangingProtocols::defaults().choose(&ctx).map(|(p, v)| (p.clone(), v)).unwrap();
        assert_eq!(p.name, "CXR current + prior");
        assert_eq!(placements.iter().map(|p| p.series_uid.as_str()).collect::<Vec<_>>(), vec!["now", "then"]);
    }

    #[test]
    fn cxr_pa_and_lateral_without_prior() {
        let ctx =
            HangingContext { series: vec![series("lat", "CR", "LL"), series("pa", "CR", "PA")], ..Default::default() };
        let (p, placements) = HangingProtocols::defaults().choose(&ctx).map(|(p, v)| (p.clone(), v)).unwrap();
        assert_eq!(p.name, "CXR PA + lateral");
        assert_eq!(placements.iter().map(|p| p.series_uid.as_str()).collect::<Vec<_>>(), vec!["pa", "lat"]);
        let single = HangingContext { series: vec![series("pa", "CR", "PA")], ..Default::default() };
        assert_eq!(HangingProtocols::defaults().choose(&single).unwrap().0.name, "CXR single");
    }

    #[test]
    fn ct_opens_in_lung_and_mediastinal_windows() {
        let ctx = HangingContext { series: vec![series("ct", "CT", "")], ..Default::default() };
        let protocols = HangingProtocols::defaults();
        let (p, placements) = protocols.choose(&ctx).unwrap();
        assert_eq!(p.name, "CT lung + mediastinal");
        assert_eq!(placements[0].window, Some(WindowSpec { center: -600.0, width: 1500.0 }));
        assert_eq!(placements[1].window, Some(WindowSpec { center: 40.0, width: 350.0 }));
        assert!(placements.iter().all(|p| p.series_uid == "ct"));
    }

    #[test]
    fn user_file_is_created_and_edits_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = HangingProtocols::user_path(dir.path());
        let first = HangingProtocols::load_or_create(&path).unwrap();
        assert_eq!(first, HangingProtocols::defaults());
        std::fs::write(&path, r#"{"protocols": []}"#).unwrap();
        assert!(HangingProtocols::load_or_create(&path).unwrap().protocols.is_empty());
        std::fs::write(&path, "not json").unwrap();
        assert!(HangingProtocols::load_or_create(&path).unwrap_err().contains("not a valid hanging protocol file"));
    }
}
