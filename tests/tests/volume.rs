//! Series to volume on synthetic series with known geometry, and on the real ACRIN chest CT.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::PathBuf;

use lucent_tests::real_data;
use pacs::synth::{self, CtSeriesSpec};
use pacs::volume::{self, StackPlan, VolumeWarning};

fn write(spec: &CtSeriesSpec) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let files = synth::write_ct_series(dir.path(), spec).unwrap();
    (dir, files)
}

fn all_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

fn small(seed: &str, slices: usize) -> CtSeriesSpec {
    CtSeriesSpec { noise_hu: 0.0, ..CtSeriesSpec::chest(seed, slices, 48) }
}

fn voxel_to_patient(plan: &StackPlan, i: f64, j: f64, k: f64) -> [f64; 3] {
    let m = plan.patient_from_voxel;
    [0, 1, 2].map(|r| m[r][0] * i + m[r][1] * j + m[r][2] * k + m[r][3])
}

fn assert_close(a: [f64; 3], b: [f64; 3], tolerance: f64) {
    for axis in 0..3 {
        assert!((a[axis] - b[axis]).abs() < tolerance, "{a:?} vs {b:?}");
    }
}

#[test]
fn shuffled_files_are_sorted_by_position_with_exact_geometry() {
    let spec = CtSeriesSpec { shuffle: true, ..small("shuffled", 30) };
    let (dir, _) = write(&spec);
    let plans = volume::scan_series(&all_files(dir.path()), 2).unwrap();
    assert_eq!(plans.len(), 1);
    let plan = &plans[0];
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    assert_eq!((plan.columns, plan.rows, plan.slices.len()), (48, 48, 30));
    for (k, slice) in plan.slices.iter().enumerate() {
        assert_eq!(slice.sop_instance_uid, synth::uid(&format!("sop:shuffled:{k}")), "slice {k}");
    }
    assert!((plan.spacing_mm[2] - 2.5).abs() < 1e-6);
    for (i, j, k) in [(0, 0, 0), (47, 0, 0), (0, 47, 29), (13, 29, 17)] {
        let expected = spec.patient_point(i, j, k);
        assert_close(voxel_to_patient(plan, i as f64, j as f64, k as f64), expected, 1e-4);
    }

    let vol = volume::load_stack(plan.clone(), 2, None).unwrap();
    for k in [0, 11, 29] {
        let hu = spec.slice_hu(k);
        for (i, j) in [(0, 0), (24, 24), (10, 30)] {
            assert_eq!(vol.value_at(i, j, k), f64::from(hu[j * 48 + i]), "voxel {i},{j},{k}");
        }
    }
}

#[test]
fn signed_and_unsigned_storage_give_the_same_hu() {
    let (d1, f1) = write(&small("unsigned", 5));
    let (d2, f2) = write(&CtSeriesSpec { signed: true, ..small("unsigned", 5) });
    let a = volume::load_series(&f1, 2).unwrap().remove(0);
    let b = volume::load_series(&f2, 2).unwrap().remove(0);
    assert_eq!(a.voxels.type_name(), "u16");
    assert_eq!(b.voxels.type_name(), "i16");
    assert_eq!(a.to_modality_f32(), b.to_modality_f32());
    drop((d1, d2));
}

#[test]
fn gaps_are_reported_as_missing_slices() {
    let (dir, files) = write(&CtSeriesSpec { drop_slices: vec![10, 11], ..small("gaps", 20) });
    let plan = volume::scan_series(&files, 2).unwrap().remove(0);
    assert_eq!(plan.slices.len(), 18);
    assert!(
        plan.warnings.contains(&VolumeWarning::MissingSlices { after_slice: 9, missing: 2, gap_mm: 7.5 }),
        "{:?}",
        plan.warnings
    );
    assert!((plan.spacing_mm[2] - 2.5).abs() < 1e-9);
    drop(dir);
}

#[test]
fn gantry_tilt_is_reported_and_the_affine_follows_the_shear() {
    let spec = CtSeriesSpec { tilt_deg: 15.0, ..small("tilt", 12) };
    let (dir, files) = write(&spec);
    let plan = volume::scan_series(&files, 2).unwrap().remove(0);
    let tilt = plan.warnings.iter().find_map(|w| match w {
        VolumeWarning::GantryTilt { degrees } => Some(*degrees),
        _ => None,
    });
    assert!(tilt.is_some_and(|d| (d - 15.0).abs() < 0.05), "{:?}", plan.warnings);
    assert_close(voxel_to_patient(&plan, 5.0, 7.0, 11.0), spec.patient_point(5, 7, 11), 1e-3);
    drop(dir);
}

#[test]
fn irregular_spacing_and_duplicates_are_reported() {
    let (dir, files) = write(&CtSeriesSpec { irregular_from: Some((8, 0.8)), ..small("irregular", 16) });
    let plan = volume::scan_series(&files, 2).unwrap().remove(0);
    assert!(plan.warnings.iter().any(|w| matches!(w, VolumeWarning::IrregularSpacing { .. })), "{:?}", plan.warnings);
    drop(dir);

    // Slice 6 moved back onto slice 5's position: one duplicate, the rest shifted.
    let (dir, files) = write(&CtSeriesSpec { irregular_from: Some((6, -2.5)), ..small("duplicate", 10) });
    let plan = volume::scan_series(&files, 2).unwrap().remove(0);
    assert_eq!(plan.slices.len(), 9);
    assert!(
        plan.warnings.iter().any(|w| matches!(w, VolumeWarning::DuplicateSlices { count: 2, .. })),
        "{:?}",
        plan.warnings
    );
    drop(dir);
}

#[test]
fn a_series_with_two_orientations_is_split() {
    let axial = small("mixed-axial", 8);
    let coronal = CtSeriesSpec {
        orientation: [1.0, 0.0, 0.0, 0.0, 0.0, -1.0],
        series_uid: Some(axial.series_uid()),
        ..small("mixed-coronal", 5)
    };
    let dir = tempfile::tempdir().unwrap();
    synth::write_ct_series(&dir.path().join("a"), &axial).unwrap();
    synth::write_ct_series(&dir.path().join("c"), &coronal).unwrap();
    let mut files = all_files(&dir.path().join("a"));
    files.extend(all_files(&dir.path().join("c")));
    let plans = volume::scan_series(&files, 2).unwrap();
    assert_eq!(plans.iter().map(|p| p.slices.len()).collect::<Vec<_>>(), vec![8, 5]);
    for plan in &plans {
        assert!(
            plan.warnings.iter().any(
                |w| matches!(w, VolumeWarning::SplitStack { stacks: 2, reason, .. } if reason.contains("orientation"))
            ),
            "{:?}",
            plan.warnings
        );
    }
}

#[test]
fn repeated_acquisitions_form_separate_stacks() {
    let first = small("acq-1", 6);
    let second = CtSeriesSpec { acquisition_number: 2, series_uid: Some(first.series_uid()), ..small("acq-2", 6) };
    let dir = tempfile::tempdir().unwrap();
    let mut files = synth::write_ct_series(&dir.path().join("1"), &first).unwrap();
    files.extend(synth::write_ct_series(&dir.path().join("2"), &second).unwrap());
    let plans = volume::scan_series(&files, 2).unwrap();
    assert_eq!(plans.len(), 2);
    assert!(
        plans
            .iter()
            .all(|p| p.slices.len() == 6
                && !p.warnings.iter().any(|w| matches!(w, VolumeWarning::DuplicateSlices { .. })))
    );
}

#[test]
fn radiograph_spacing_is_flagged_as_uncalibrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cr.dcm");
    synth::write_radiograph(&path, &synth::RadiographSpec::chest("cr", 128)).unwrap();
    let plan = volume::scan_series(std::slice::from_ref(&path), 1).unwrap().remove(0);
    assert_eq!(plan.spacing_source, Some(pacs::SpacingSource::ImagerPixelSpacing));
    assert!(plan.warnings.contains(&VolumeWarning::UncalibratedSpacing));
    let image = pacs::file::load_image(&path, 0).unwrap();
    assert_eq!(image.info.spacing().map(|s| s.source.is_calibrated()), Some(false));
}

#[test]
fn real_acrin_chest_ct_loads_as_one_volume() {
    let Some(dir) = real_data("ct-acrin-chest") else { return };
    let files = all_files(&dir);
    assert_eq!(files.len(), 135);
    let mut volumes = volume::load_series(&files, 2).unwrap();
    assert_eq!(volumes.len(), 1, "one stack");
    let vol = volumes.remove(0);
    assert_eq!(vol.dims(), [512, 512, 135]);
    assert!((vol.plan.spacing_mm[2] - 3.27).abs() < 0.01, "slice spacing {}", vol.plan.spacing_mm[2]);
    assert!((vol.plan.spacing_mm[0] - 0.977).abs() < 0.001);
    assert!(vol.plan.warnings.is_empty(), "{:?}", vol.plan.warnings);
    let (lo, hi) = vol.value_range().unwrap();
    assert!(lo <= -1000.0 && hi >= 1000.0, "HU range {lo}..{hi} should span air to bone");
    // Inside the body at mid-volume: soft tissue, not air.
    let centre = vol.value_at(256, 300, 67);
    assert!((-200.0..200.0).contains(&centre), "centre HU {centre}");
}
