//! CT pipelines end to end on the toy models.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use inference::ct::{self, HuSamples, HuVolume, MeasureParams, NoduleType};
use inference::lungrads::{self, Category, SizeBasis};
use inference::{Error, JobContext, ProgressFn, Registry, SessionOptions};

fn registry() -> Registry {
    Registry::scan(
        &[common::test_models_dir()],
        SessionOptions { intra_threads: 1, execution: inference::ExecutionPreference::Cpu },
    )
}

#[test]
fn denoising_keeps_geometry_and_matches_the_toy_filter() {
    if !common::runtime_or_skip("denoising_keeps_geometry_and_matches_the_toy_filter") {
        return;
    }
    let dims = [40usize, 30, 5];
    let n: usize = dims.iter().product();
    let mut hu: Vec<i16> = (0..n).map(|i| ((i * 7919) % 2500) as i16 - 1000).collect();
    hu[3] = -2048; // outside the model's HU window: kept as is
    let volume = HuVolume::new(
        HuSamples::I16(&hu),
        dims,
        [0.7, 0.7, 2.5],
        [[0.7, 0.0, 0.0, 0.0], [0.0, 0.7, 0.0, 0.0], [0.0, 0.0, 2.5, 0.0], [0.0, 0.0, 0.0, 1.0]],
    )
    .unwrap();
    let mut session = registry().open("lucent-test-ct-denoise").unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let progress: ProgressFn = Arc::new(move |p| log.lock().unwrap().push((p.done, p.total)));
    let ctx = JobContext::new(Arc::new(AtomicBool::new(false)), Some(progress));
    let out = ct::denoise(&mut session, &volume, 2, &ctx).unwrap();
    assert_eq!(out.len(), n);
    assert_eq!(out[3], -2048.0);
    assert_eq!(*seen.lock().unwrap(), vec![(0, 5), (2, 5), (4, 5), (5, 5)]);
    // Independent check of an interior voxel: 0.8 * u + 0.2 * mean3x3(u), u = (hu + 1024) / 4095.
    let (x, y, z) = (20usize, 15usize, 2usize);
    let u = |x: usize, y: usize| (f64::from(hu[(z * 30 + y) * 40 + x]) + 1024.0) / 4095.0;
    let mut mean = 0.0;
    for dy in 0..3 {
        for dx in 0..3 {
            mean += u(x + dx - 1, y + dy - 1) / 9.0;
        }
    }
    let want = (0.8 * u(x, y) + 0.2 * mean) * 4095.0 - 1024.0;
    let got = f64::from(out[(z * 30 + y) * 40 + x]);
    assert!((got - want).abs() < 0.05, "{got} vs {want}");
}

/// Lung at -850 HU with a 10 mm solid nodule (40 HU) centred at `center_mm` from the first voxel.
fn phantom(dims: [usize; 3], sp: [f64; 3], center_mm: [f64; 3]) -> Vec<f32> {
    let mut v = vec![-850.0f32; dims.iter().product()];
    for z in 0..dims[2] {
        for y in 0..dims[1] {
            for x in 0..dims[0] {
                let d2 = (x as f64 * sp[0] - center_mm[0]).powi(2)
                    + (y as f64 * sp[1] - center_mm[1]).powi(2)
                    + (z as f64 * sp[2] - center_mm[2]).powi(2);
                if d2 <= 25.0 {
                    v[(z * dims[1] + y) * dims[0] + x] = 40.0;
                }
            }
        }
    }
    v
}

#[test]
fn detection_measurement_and_lung_rads_end_to_end() {
    if !common::runtime_or_skip("detection_measurement_and_lung_rads_end_to_end") {
        return;
    }
    let (dims, sp) = ([60usize, 60, 40], [0.8, 0.8, 1.25]);
    let center_mm = [30.0, 20.0, 25.0];
    let data = Arc::new(phantom(dims, sp, center_mm));
    let origin = [-100.0, -150.0, 300.0];
    let affine = [
        [sp[0], 0.0, 0.0, origin[0]],
        [0.0, sp[1], 0.0, origin[1]],
        [0.0, 0.0, sp[2], origin[2]],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let volume = HuVolume::new(HuSamples::F32(&data), dims, sp, affine).unwrap();

    let registry = registry();
    let worker = registry.spawn_worker("lucent-test-ct-detect", 1).unwrap();
    let shared = Arc::clone(&data);
    let job = worker
        .submit(Arc::new(AtomicBool::new(false)), None, move |s, ctx| {
            let v = HuVolume::new(HuSamples::F32(&shared), dims, sp, affine)?;
            ct::detect(s, &v, ctx)
        })
        .unwrap();
    let candidates = job.wait().unwrap();
    assert_eq!(candidates.len(), 1, "{candidates:#?}");
    let c = &candidates[0];
    assert_eq!(c.label, "nodule");
    assert!(c.score > 0.9, "{c:?}");
    for (a, want) in origin.iter().zip(center_mm).map(|(o, c)| o + c).enumerate() {
        assert!((c.center_patient_mm[a] - want).abs() < 1.5, "axis {a}: {c:?}");
        // The toy heatmap is blurred and thresholded: its box is only roughly the nodule.
        assert!(c.size_mm[a] > 5.0 && c.size_mm[a] < 14.0, "axis {a}: {c:?}");
    }

    let m = ct::measure(&volume, c.center_voxel, &MeasureParams::default()).unwrap();
    assert_eq!(m.nodule_type, NoduleType::Solid);
    assert!((m.axes.mean_diameter_mm - 10.0).abs() < 1.0, "{:?}", m.axes);
    let sphere = 4.0 / 3.0 * std::f64::consts::PI * 125.0;
    assert!((m.volume_mm3 - sphere).abs() / sphere < 0.1, "{}", m.volume_mm3);
    let a = lungrads::classify_exam(&[lungrads::findings_from_measurement(&m)], SizeBasis::MeanDiameter);
    assert_eq!(a.category, Category::C4A, "{a:?}");

    // Cancelled before the first window.
    let cancel = Arc::new(AtomicBool::new(false));
    cancel.store(true, Ordering::Relaxed);
    let job = worker
        .submit(cancel, None, move |s, ctx| {
            let v = HuVolume::new(HuSamples::F32(&data), dims, sp, affine)?;
            ct::detect(s, &v, ctx)
        })
        .unwrap();
    assert!(matches!(job.wait(), Err(Error::Cancelled)));
}

#[test]
fn an_empty_lung_has_no_candidates() {
    if !common::runtime_or_skip("an_empty_lung_has_no_candidates") {
        return;
    }
    let dims = [40usize, 40, 20];
    let data = vec![-850i16; dims.iter().product()];
    let identity = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
    let volume = HuVolume::new(HuSamples::I16(&data), dims, [1.0, 1.0, 2.0], identity).unwrap();
    let mut session = registry().open("lucent-test-ct-detect").unwrap();
    assert!(ct::detect(&mut session, &volume, &JobContext::detached()).unwrap().is_empty());
    // The wrong kind of model is refused with a clear message.
    let err = ct::denoise(&mut session, &volume, 4, &JobContext::detached()).unwrap_err();
    assert!(err.to_string().contains("not CtSlice"), "{err}");
}
