//! QA statistics per model version and finding label, from the recorded findings and the decision
//! that counts for each (a QA review when there is one, else the reader's):
//!
//! * **agreement**: decisions that agree with the AI / decided findings, where accepting (or
//!   editing) a flagged finding and rejecting an unflagged one agree;
//! * **PPV of flags**: flagged findings accepted or edited / flagged findings decided;
//! * **rejection rate**: rejected / decided;
//! * **score distribution over time**: per month (`YYYY-MM` of the recording time), counts in ten
//!   score bins [0, 0.1), ..., [0.9, 1.0].
//!
//! Pending findings count in the totals and the histograms but not in the ratios.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::FindingDecision;
use crate::store::DecidedFinding;

/// Statistics of one (model, version, label).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LabelStats {
    pub model_id: String,
    pub model_version: String,
    pub label: String,
    pub total: u64,
    pub flagged: u64,
    pub decided: u64,
    pub accepted: u64,
    pub edited: u64,
    pub rejected: u64,
    pub flagged_decided: u64,
    pub flagged_accepted: u64,
    pub agreements: u64,
    /// Month `YYYY-MM` → counts in ten score bins.
    pub score_histogram: BTreeMap<String, [u64; 10]>,
}

impl LabelStats {
    fn ratio(n: u64, d: u64) -> Option<f64> {
        (d > 0).then(|| n as f64 / d as f64)
    }

    pub fn agreement(&self) -> Option<f64> {
        Self::ratio(self.agreements, self.decided)
    }

    pub fn ppv(&self) -> Option<f64> {
        Self::ratio(self.flagged_accepted, self.flagged_decided)
    }

    pub fn rejection_rate(&self) -> Option<f64> {
        Self::ratio(self.rejected, self.decided)
    }
}

/// Computes the statistics, sorted by model, version and label.
pub fn compute(rows: &[DecidedFinding]) -> Vec<LabelStats> {
    let mut by_key: BTreeMap<(String, String, String), LabelStats> = BTreeMap::new();
    for row in rows {
        let f = &row.finding;
        let s = by_key.entry((f.model_id.clone(), f.model_version.clone(), f.label.clone())).or_insert_with(|| {
            LabelStats {
                model_id: f.model_id.clone(),
                model_version: f.model_version.clone(),
                label: f.label.clone(),
                ..Default::default()
            }
        });
        let flagged = f.is_flagged();
        s.total += 1;
        s.flagged += u64::from(flagged);
        let month: String = row.recorded_at.chars().take(7).collect();
        let bin = ((f.score.clamp(0.0, 1.0) * 10.0) as usize).min(9);
        s.score_histogram.entry(month).or_insert([0; 10])[bin] += 1;
        let (accepted, rejected) = match &row.decision {
            FindingDecision::Pending => continue,
            FindingDecision::Accepted => {
                s.accepted += 1;
                (true, false)
            }
            FindingDecision::Edited { .. } => {
                s.edited += 1;
                (true, false)
            }
            FindingDecision::Rejected { .. } => {
                s.rejected += 1;
                (false, true)
            }
        };
        s.decided += 1;
        if flagged {
            s.flagged_decided += 1;
            s.flagged_accepted += u64::from(accepted);
        }
        s.agreements += u64::from((flagged && accepted) || (!flagged && rejected));
    }
    by_key.into_values().collect()
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_owned() }
}

fn opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.4}")).unwrap_or_default()
}

/// One row per (model, version, label): counts and ratios.
pub fn to_csv(stats: &[LabelStats]) -> String {
    let mut out = String::from(
        "model_id,model_version,label,total,flagged,decided,accepted,edited,rejected,agreement,ppv,rejection_rate\n",
    );
    for s in stats {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}\n",
            csv_field(&s.model_id),
            csv_field(&s.model_version),
            csv_field(&s.label),
            s.total,
            s.flagged,
            s.decided,
            s.accepted,
            s.edited,
            s.rejected,
            opt(s.agreement()),
            opt(s.ppv()),
            opt(s.rejection_rate())
        ));
    }
    out
}

/// One row per (model, version, label, month): the score histogram.
pub fn histogram_csv(stats: &[LabelStats]) -> String {
    let mut out = String::from("model_id,model_version,label,month");
    for b in 0..10 {
        out.push_str(&format!(",score_{:.1}_{:.1}", b as f64 / 10.0, (b + 1) as f64 / 10.0));
    }
    out.push('\n');
    for s in stats {
        for (month, bins) in &s.score_histogram {
            out.push_str(&format!(
                "{},{},{},{}",
                csv_field(&s.model_id),
                csv_field(&s.model_version),
                csv_field(&s.label),
                month
            ));
            for c in bins {
                out.push_str(&format!(",{c}"));
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AiFinding, ReasonCode};

    fn row(id: &str, score: f32, at: &str, decision: FindingDecision) -> DecidedFinding {
        DecidedFinding {
            study_uid: "1".into(),
            finding: AiFinding {
                id: id.into(),
                model_id: "m".into(),
                model_version: "1.0".into(),
                label: "nodule".into(),
                score,
                threshold: 0.5,
                ..Default::default()
            },
            recorded_at: at.into(),
            decision,
        }
    }

    #[test]
    fn agreement_ppv_rejections_and_histogram() {
        let reject = || FindingDecision::Rejected { reason: ReasonCode::FalsePositive, comment: String::new() };
        let rows = vec![
            row("a", 0.9, "2024-01-05T00:00:00Z", FindingDecision::Accepted),
            row("b", 0.8, "2024-01-06T00:00:00Z", reject()),
            row("c", 0.2, "2024-02-01T00:00:00Z", reject()),
            row("d", 0.95, "2024-02-02T00:00:00Z", FindingDecision::Pending),
        ];
        let stats = compute(&rows);
        assert_eq!(stats.len(), 1);
        let s = &stats[0];
        assert_eq!((s.total, s.flagged, s.decided, s.rejected), (4, 3, 3, 2));
        assert_eq!(s.ppv(), Some(0.5));
        assert!((s.agreement().unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert!((s.rejection_rate().unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(s.score_histogram["2024-01"][8..], [1, 1]);
        assert_eq!(s.score_histogram["2024-02"][2], 1);
        let csv = to_csv(&stats);
        assert_eq!(csv.lines().nth(1), Some("m,1.0,nodule,4,3,3,1,0,2,0.6667,0.5000,0.6667"));
        assert_eq!(histogram_csv(&stats).lines().count(), 3);
    }
}
