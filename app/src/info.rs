//! `lucent info`: what is in a file or folder, series by series, without importing it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pacs::volume::{self, SliceRef, StackPlan};
use pacs::{InstanceInfo, SpacingSource, transfer_syntax_name};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct PathReport {
    pub patients: Vec<PatientReport>,
    pub skipped: Vec<SkippedFile>,
}

#[derive(Debug, Serialize)]
pub struct SkippedFile {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct PatientReport {
    pub patient_id: String,
    pub patient_name: String,
    pub studies: Vec<StudyReport>,
}

#[derive(Debug, Serialize)]
pub struct StudyReport {
    pub study_uid: String,
    pub study_date: String,
    pub description: String,
    pub series: Vec<SeriesReport>,
}

#[derive(Debug, Serialize)]
pub struct TransferSyntax {
    pub uid: String,
    pub name: String,
}

#[derive(Debug, Serialize)]
pub struct SeriesReport {
    pub series_uid: String,
    pub series_number: Option<i64>,
    pub modality: String,
    pub description: String,
    pub instances: usize,
    pub transfer_syntaxes: Vec<TransferSyntax>,
    pub stacks: Vec<StackReport>,
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct StackReport {
    /// Columns, rows, slices.
    pub dimensions: [usize; 3],
    pub spacing_mm: [f64; 3],
    pub spacing_source: Option<SpacingSource>,
    pub orientation: Option<[f64; 6]>,
    pub orientation_label: String,
    pub photometric: String,
    /// Modality value range (HU for CT) after the modality LUT.
    pub value_range: Option<[f64; 2]>,
    pub unit: String,
    pub voxel_type: Option<String>,
    pub patient_from_voxel: [[f64; 4]; 4],
    pub warnings: Vec<String>,
}

/// Every file under `path` (or `path` itself).
pub fn list_files(path: &Path) -> Vec<PathBuf> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = walkdir(path);
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    }
}

/// Every file under `dir`, following links to folders but never into one twice (a symlink loop
/// ends the walk of that branch instead of spinning).
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = std::collections::HashSet::new();
    while let Some(d) = stack.pop() {
        let Ok(real) = std::fs::canonicalize(&d) else { continue };
        if !seen.insert(real) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Describes an orientation as axial / coronal / sagittal / oblique.
pub fn orientation_label(o: Option<[f64; 6]>) -> String {
    let Some(o) = o else { return "unknown".into() };
    let n = [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]];
    let (ax, ay, az) = (n[0].abs(), n[1].abs(), n[2].abs());
    let main = ax.max(ay).max(az);
    let name = if main == az {
        "axial"
    } else if main == ay {
        "coronal"
    } else {
        "sagittal"
    };
    if main > 0.95 { name.into() } else { format!("oblique ({name}-like)") }
}

/// (patient, study UID, series UID, modality)
type SeriesKey = (String, String, String, String);

/// Reports on every series found under `path`, decoding pixels for value ranges.
pub fn inspect(path: &Path, threads: usize) -> PathReport {
    let files = list_files(path);
    let mut skipped = Vec::new();
    let mut by_series: BTreeMap<SeriesKey, Vec<(PathBuf, InstanceInfo)>> = BTreeMap::new();
    for (file, info) in files.iter().zip(pacs::file::read_infos(&files, threads)) {
        match info {
            Ok(info) => {
                let key = (
                    format!("{}\u{0}{}", info.patient_id, info.patient_name),
                    info.study_instance_uid.clone(),
                    info.series_instance_uid.clone(),
                    info.modality.clone(),
                );
                by_series.entry(key).or_default().push((file.clone(), info));
            }
            Err(e) => skipped.push(SkippedFile { path: file.clone(), reason: e.to_string() }),
        }
    }

    let mut patients: Vec<PatientReport> = Vec::new();
    for ((_, study_uid, series_uid, modality), members) in by_series {
        let first = members[0].1.clone();
        let mut syntaxes: Vec<String> = members.iter().map(|(_, i)| i.transfer_syntax_uid.clone()).collect();
        syntaxes.sort();
        syntaxes.dedup();
        let mut report = SeriesReport {
            series_uid,
            series_number: first.series_number,
            modality,
            description: first.series_description.clone(),
            instances: members.len(),
            transfer_syntaxes: syntaxes
                .into_iter()
                .map(|uid| TransferSyntax { name: transfer_syntax_name(&uid), uid })
                .collect(),
            stacks: Vec::new(),
            errors: Vec::new(),
        };
        let slices: Vec<SliceRef> = members
            .iter()
            .filter(|(_, i)| i.has_pixel_data)
            .flat_map(|(p, i)| SliceRef::from_info(p.clone(), i.clone()))
            .collect();
        if slices.is_empty() {
            report.errors.push(format!("no images (SOP class {})", first.sop_class_uid));
        } else {
            match volume::plan_stacks(slices) {
                Ok(plans) => {
                    for plan in plans {
                        report.stacks.push(stack_report(plan, threads, &mut report.errors));
                    }
                }
                Err(e) => report.errors.push(e.to_string()),
            }
        }

        let patient = match patients
            .iter_mut()
            .position(|p| p.patient_id == first.patient_id && p.patient_name == first.patient_name)
        {
            Some(i) => &mut patients[i],
            None => {
                patients.push(PatientReport {
                    patient_id: first.patient_id.clone(),
                    patient_name: first.patient_name.clone(),
                    studies: Vec::new(),
                });
                let last = patients.len() - 1;
                &mut patients[last]
            }
        };
        let study = match patient.studies.iter().position(|s| s.study_uid == study_uid) {
            Some(i) => &mut patient.studies[i],
            None => {
                patient.studies.push(StudyReport {
                    study_uid: study_uid.clone(),
                    study_date: first.study_date.clone(),
                    description: first.study_description.clone(),
                    series: Vec::new(),
                });
                let last = patient.studies.len() - 1;
                &mut patient.studies[last]
            }
        };
        study.series.push(report);
    }
    PathReport { patients, skipped }
}

fn stack_report(plan: StackPlan, threads: usize, errors: &mut Vec<String>) -> StackReport {
    let first = plan.slices[0].info().clone();
    let mut report = StackReport {
        dimensions: [plan.columns, plan.rows, plan.slices.len()],
        spacing_mm: plan.spacing_mm,
        spacing_source: plan.spacing_source,
        orientation: first.image_orientation_patient,
        orientation_label: orientation_label(first.image_orientation_patient),
        photometric: first.photometric_interpretation.clone(),
        value_range: None,
        unit: if first.modality == "CT" { "HU".into() } else { String::new() },
        voxel_type: None,
        patient_from_voxel: plan.patient_from_voxel,
        warnings: plan.warnings.iter().map(ToString::to_string).collect(),
    };
    if first.samples_per_pixel == 1 {
        match volume::load_stack(plan, threads, None) {
            Ok(vol) => {
                report.value_range = vol.value_range().map(|(a, b)| [a, b]);
                report.voxel_type = Some(vol.voxels.type_name().into());
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    report
}

/// Prints the report as an indented tree.
pub fn print_report(report: &PathReport) {
    for patient in &report.patients {
        println!("Patient {} ({})", patient.patient_name, patient.patient_id);
        for study in &patient.studies {
            println!("  Study {} {} [{}]", study.study_date, study.description, study.study_uid);
            for series in &study.series {
                println!(
                    "    Series {} {} {} — {} instance(s) [{}]",
                    series.series_number.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                    series.modality,
                    series.description,
                    series.instances,
                    series.series_uid
                );
                for ts in &series.transfer_syntaxes {
                    println!("      transfer syntax: {} ({})", ts.name, ts.uid);
                }
                for stack in &series.stacks {
                    let [c, r, s] = stack.dimensions;
                    let calibration = match stack.spacing_source {
                        Some(SpacingSource::PixelSpacing) => "PixelSpacing",
                        Some(SpacingSource::ImagerPixelSpacing) => "ImagerPixelSpacing, uncalibrated",
                        None => "no spacing",
                    };
                    println!(
                        "      {c} x {r} x {s}, spacing {:.3} x {:.3} x {:.3} mm ({calibration}), {}, {}",
                        stack.spacing_mm[0],
                        stack.spacing_mm[1],
                        stack.spacing_mm[2],
                        stack.orientation_label,
                        stack.photometric
                    );
                    if let Some([lo, hi]) = stack.value_range {
                        println!("      value range {lo} .. {hi} {}", stack.unit);
                    }
                    for w in &stack.warnings {
                        println!("      warning: {w}");
                    }
                }
                for e in &series.errors {
                    println!("      error: {e}");
                }
            }
        }
    }
    if !report.skipped.is_empty() {
        println!("Skipped {} file(s):", report.skipped.len());
        for s in &report.skipped {
            println!("  {}: {}", s.path.display(), s.reason);
        }
    }
}
