//! CXR preprocessing against torchxrayvision's definition, and the pipeline end to end on the
//! toy model through a worker thread.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use inference::cxr::{self, GreyImage, GreySamples, PixelSpacing};
use inference::{Error, ModelManifest, ProgressFn, Registry, SessionOptions};

fn toy_manifest(size: usize) -> ModelManifest {
    let text = std::fs::read_to_string(common::test_models_dir().join("cxr_toy.toml")).unwrap();
    let text = text.replace("224, 224", &format!("{size}, {size}"));
    ModelManifest::from_toml_str(&text, Path::new("cxr_toy.toml")).unwrap()
}

fn synth(w: usize, h: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            v.push(((x * 7 + y * 13 + (x * y) % 11) % 256) as u8);
        }
    }
    v
}

/// `tests/data/xrv_skimage_reference.txt` holds what torchxrayvision's own code (normalize,
/// XRayCenterCrop, XRayResizer with scikit-image) produces for small synthetic images.
#[test]
fn xrv_preprocessing_matches_scikit_image() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/xrv_skimage_reference.txt"))
            .unwrap();
    let mut lines = text.lines().filter(|l| !l.starts_with('#')).peekable();
    let mut cases = 0;
    while let Some(header) = lines.next() {
        let f: Vec<usize> = header.split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect();
        let (w, h, s) = (f[0], f[1], f[2]);
        let expected: Vec<f32> = (0..s)
            .flat_map(|_| {
                lines.next().unwrap().split_whitespace().map(|v| v.parse::<f32>().unwrap()).collect::<Vec<_>>()
            })
            .collect();
        let got = cxr::preprocess(&toy_manifest(s), &GreyImage::from_u8(w, h, &synth(w, h))).unwrap();
        assert_eq!(got.tensor.shape, vec![1, 1, s, s]);
        let max = got.tensor.data.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(max < 1e-3, "case {w}x{h}->{s}: max abs diff {max}");
        cases += 1;
    }
    assert_eq!(cases, 3);
}

/// The same pipeline computed independently and naively: a full 2-D Gaussian sum per sample, in f64.
fn reference_xrv(pixels: &[u8], w: usize, h: usize, size: usize) -> Vec<f32> {
    let norm: Vec<f64> = pixels.iter().map(|&p| (2.0 * (f64::from(p) / 255.0) - 1.0) * 1024.0).collect();
    let side = w.min(h);
    let (x0, y0) = (w / 2 - side / 2, h / 2 - side / 2);
    let at = |x: i64, y: i64| -> f64 {
        if x < 0 || y < 0 || x >= side as i64 || y >= side as i64 {
            0.0
        } else {
            norm[(y as usize + y0) * w + x as usize + x0]
        }
    };
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for y in 0..side as i64 {
        for x in 0..side as i64 {
            lo = lo.min(at(x, y));
            hi = hi.max(at(x, y));
        }
    }
    let scale = side as f64 / size as f64;
    let sigma = ((scale - 1.0) / 2.0).max(0.0);
    let radius = (4.0 * sigma + 0.5) as i64;
    let weights: Vec<f64> = (-radius..=radius).map(|d| (-0.5 * (d * d) as f64 / (sigma * sigma)).exp()).collect();
    let total: f64 = weights.iter().sum();
    let filtered = |x: i64, y: i64| -> f64 {
        if x < 0 || y < 0 || x >= side as i64 || y >= side as i64 {
            return 0.0;
        }
        let mut acc = 0.0;
        for (i, wy) in weights.iter().enumerate() {
            for (j, wx) in weights.iter().enumerate() {
                acc += wy * wx * at(x + j as i64 - radius, y + i as i64 - radius);
            }
        }
        acc / (total * total)
    };
    let mut out = Vec::with_capacity(size * size);
    for i in 0..size {
        for j in 0..size {
            let (cy, cx) = ((i as f64 + 0.5) * scale - 0.5, (j as f64 + 0.5) * scale - 0.5);
            let (fy, fx) = (cy.floor(), cx.floor());
            let (ty, tx) = (cy - fy, cx - fx);
            let (y, x) = (fy as i64, fx as i64);
            let v = (1.0 - ty) * ((1.0 - tx) * filtered(x, y) + tx * filtered(x + 1, y))
                + ty * ((1.0 - tx) * filtered(x, y + 1) + tx * filtered(x + 1, y + 1));
            out.push(v.clamp(lo, hi) as f32);
        }
    }
    out
}

/// A real radiograph (NIH ChestX-ray14, from `../shared/data`) when present, else a synthetic one.
#[test]
fn xrv_preprocessing_of_a_radiograph_matches_the_reference_formula() {
    let png = common::real_data_dir().and_then(|d| {
        let mut pngs: Vec<_> = std::fs::read_dir(d.join("cxr-nih-dev"))
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "png"))
            .collect();
        pngs.sort();
        pngs.into_iter().next()
    });
    let (w, h, pixels) = match &png {
        Some(p) => {
            let img = image::open(p).unwrap().to_luma8();
            (img.width() as usize, img.height() as usize, img.into_raw())
        }
        None => {
            eprintln!("no ../shared/data/cxr-nih-dev: using a synthetic 300x260 image");
            (300, 260, synth(300, 260))
        }
    };
    let got = cxr::preprocess(&toy_manifest(224), &GreyImage::from_u8(w, h, &pixels)).unwrap();
    let expected = reference_xrv(&pixels, w, h, 224);
    let max = got.tensor.data.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(max < 1e-3, "{}: max abs diff {max}", png.as_ref().map_or("synthetic".into(), |p| p.display().to_string()));
}

/// A 12-bit 600x500 image, dark, with a bright disk of radius 40 at (350, 200).
fn disk_image(monochrome1: bool) -> GreyImage {
    let (w, h) = (600, 500);
    let mut v = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            let inside = (x as f64 - 350.0).powi(2) + (y as f64 - 200.0).powi(2) <= 1600.0;
            let value: u16 = if inside { 4000 } else { 400 };
            v.push(if monochrome1 { 4095 - value } else { value });
        }
    }
    GreyImage {
        width: w,
        height: h,
        samples: GreySamples::U16(v),
        bits_stored: 12,
        monochrome1,
        voi: None,
        pixel_spacing: Some(PixelSpacing { row_mm: 0.2, column_mm: 0.2, calibrated: true }),
    }
}

#[test]
fn cxr_end_to_end_on_the_toy_model() {
    if !common::runtime_or_skip("cxr_end_to_end_on_the_toy_model") {
        return;
    }
    let options = SessionOptions { intra_threads: 1, execution: inference::ExecutionPreference::Cpu };
    let registry = Registry::scan(&[common::test_models_dir()], options);
    let worker = registry.spawn_worker("lucent-test-cxr", 2).unwrap();
    let manifest = registry.get("lucent-test-cxr").unwrap().manifest.clone().unwrap();

    let reports = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&reports);
    let progress: ProgressFn = Arc::new(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let image = disk_image(false);
    let job = worker
        .submit(Arc::new(AtomicBool::new(false)), Some(progress), move |s, ctx| {
            let name = std::thread::current().name().map(str::to_owned);
            Ok((name, cxr::analyze(s, &image, ctx)?))
        })
        .unwrap();
    let (thread, result) = job.wait().unwrap();
    assert_eq!(thread.as_deref(), Some("lucent-model-lucent-test-cxr"));
    assert_eq!(reports.load(Ordering::Relaxed), 2, "start and end of the one batch");
    assert_eq!(result.findings.len(), 6);
    assert_eq!(result.geometry.crop, [50, 0, 500, 500]);

    // Scores: the toy's logits are affine in the mean of its input (see make_test_models.py).
    let prepared = cxr::preprocess(&manifest, &disk_image(false)).unwrap();
    let m =
        prepared.tensor.data.iter().map(|&v| f64::from(v)).sum::<f64>() / prepared.tensor.data.len() as f64 / 1024.0;
    let (a, b) = ([8.0, -8.0, 4.0, -4.0, 2.0, 0.0], [-4.0, -4.0, 0.0, 0.0, -1.0, -2.0]);
    for (k, f) in result.findings.iter().enumerate() {
        let z = |k: usize| a[k] * m + b[k];
        let logit = z(k) + 0.5 * z((k + 5) % 6) - 0.25;
        let p = 1.0 / (1.0 + (-logit).exp());
        assert!((f64::from(f.score) - p).abs() < 1e-4, "{}: {} vs {p}", f.label, f.score);
        assert_eq!(f.positive, f.score >= f.threshold);
        assert_eq!((f.model_id.as_str(), f.model_version.as_str()), ("lucent-test-cxr", "1.0.0"));
    }

    // Geometry: the bright disk is the one bright region, boxed in original pixels and mm.
    let bright = &result.findings[0];
    assert_eq!(bright.label, "bright_region");
    let geo = bright.geometry.as_ref().unwrap();
    assert_eq!(geo.boxes.len(), 1, "{:?}", geo.boxes);
    let bx = &geo.boxes[0];
    let tol = 2.0 * 500.0 / 56.0; // two map pixels
    for (got, want) in [(bx.min_px[0], 310.0), (bx.min_px[1], 160.0), (bx.max_px[0], 390.0), (bx.max_px[1], 240.0)] {
        assert!((got - want).abs() < tol, "box {bx:?}");
    }
    assert_eq!(bx.min_mm.unwrap(), [bx.min_px[0] * 0.2, bx.min_px[1] * 0.2]);
    assert_eq!(geo.spacing_calibrated, Some(true));
    assert_eq!(geo.contours.len(), 1);
    for p in &geo.contours[0].points_px {
        let r = ((p[0] - 350.0).powi(2) + (p[1] - 200.0).powi(2)).sqrt();
        assert!((r - 40.0).abs() < tol, "contour point {p:?} at radius {r}");
    }
    // The dark-region map covers the background instead, not the disk.
    let dark = result.findings[1].geometry.as_ref().unwrap();
    assert!(dark.boxes.iter().all(|b| b.peak > 0.5));

    // MONOCHROME1 with inverted samples gives the same result.
    let inverted = worker
        .submit(Arc::new(AtomicBool::new(false)), None, |s, ctx| cxr::analyze(s, &disk_image(true), ctx))
        .unwrap()
        .wait()
        .unwrap();
    for (x, y) in inverted.findings.iter().zip(&result.findings) {
        assert!((x.score - y.score).abs() < 1e-5, "{} {}", x.score, y.score);
    }
}

#[test]
fn cxr_jobs_honour_the_cancel_flag() {
    if !common::runtime_or_skip("cxr_jobs_honour_the_cancel_flag") {
        return;
    }
    let options = SessionOptions { intra_threads: 1, execution: inference::ExecutionPreference::Cpu };
    let registry = Registry::scan(&[common::test_models_dir()], options);
    let worker = registry.spawn_worker("lucent-test-cxr", 1).unwrap();

    // Cancelled before it starts.
    let cancel = Arc::new(AtomicBool::new(true));
    let job = worker.submit(cancel, None, |s, ctx| cxr::analyze(s, &disk_image(false), ctx)).unwrap();
    assert!(matches!(job.wait(), Err(Error::Cancelled)));

    // Cancelled between batches: 20 images are 3 batches of at most 8.
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    let progress: ProgressFn = Arc::new(move |p| {
        if p.done >= 8 {
            flag.store(true, Ordering::Relaxed);
        }
    });
    let small = GreyImage::from_u8(64, 64, &synth(64, 64));
    let images = vec![small; 20];
    let job = worker.submit(cancel, Some(progress), move |s, ctx| cxr::analyze_batch(s, &images, ctx)).unwrap();
    assert!(matches!(job.wait(), Err(Error::Cancelled)));

    // A panicking job is reported and the worker carries on.
    let job = worker
        .submit(Arc::new(AtomicBool::new(false)), None, |_, _| -> inference::Result<()> { panic!("boom") })
        .unwrap();
    assert!(matches!(job.wait(), Err(Error::WorkerPanicked { message, .. }) if message == "boom"));
    let ok = worker
        .submit(Arc::new(AtomicBool::new(false)), None, |s, ctx| cxr::analyze(s, &disk_image(false), ctx))
        .unwrap();
    assert!(ok.wait().is_ok());
    worker.shutdown();
}

#[test]
fn the_worker_queue_is_bounded() {
    if !common::runtime_or_skip("the_worker_queue_is_bounded") {
        return;
    }
    let options = SessionOptions { intra_threads: 1, execution: inference::ExecutionPreference::Cpu };
    let worker = Registry::scan(&[common::test_models_dir()], options).spawn_worker("lucent-test-cxr", 1).unwrap();
    let (started_tx, started_rx) = crossbeam_channel::bounded::<()>(1);
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    let running = worker
        .submit(Arc::new(AtomicBool::new(false)), None, move |_, _| {
            started_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            Ok(1)
        })
        .unwrap();
    started_rx.recv().unwrap();
    let queued = worker.try_submit(Arc::new(AtomicBool::new(false)), None, |_, _| Ok(2)).unwrap();
    let refused = worker.try_submit(Arc::new(AtomicBool::new(false)), None, |_, _| Ok(3));
    assert!(matches!(refused, Err(Error::QueueFull { capacity: 1, .. })), "{refused:?}");
    release_tx.send(()).unwrap();
    assert_eq!(running.wait().unwrap(), 1);
    assert_eq!(queued.wait().unwrap(), 2);
}
