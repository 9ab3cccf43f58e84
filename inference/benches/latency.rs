//! AI latency benchmark: Lucent's inference pipelines (ONNX Runtime through `ort`) against Python
//! `onnxruntime` 1.31.1 + numpy on the same ONNX files and the same inputs, printed as one table.
//! Run with `cargo bench -p lucent-inference --bench latency` (or `cargo xtask bench-ai`, which
//! first creates the Python venv `target/lucent-data/venv-ort`); `LUCENT_BENCH_CASES=1b,4` measures only
//! the listed cases (1a, 1b, 2, 3, 4).
//!
//! The models are the toy models of `models/test/` (a few hundred bytes of fixed weights), so the
//! table measures Lucent's pre/post-processing and its binding overhead, not a real network's compute.
//!
//! Cases:
//! 1. CXR `cxr_toy` on a deterministic synthetic 2048 x 2500 radiograph (u16 samples, 12 bits
//!    stored) and, when `../shared/data/cxr-nih-dev/00000075_000.png` is there, on that real
//!    1024 x 1024 8-bit one:
//!    - (a) `ModelSession::run` alone on the preprocessed `[1, 1, 224, 224]` tensor (written by this
//!      process with `cxr::preprocess`, read by both sides) vs `InferenceSession.run`: the binding
//!      overhead (target: Lucent <= [`RUN_TARGET`] x Python), with 1 and with [`THREADS`] intra-op threads.
//!    - (b) The whole pipeline: `cxr::analyze` (preprocess, run, postprocess with contours and boxes)
//!      vs `peers/latency.py` (the same VOI, xrv normalisation and centre crop in numpy,
//!      `skimage.transform.resize` with anti-aliasing as torchxrayvision's `XRayResizer`, run,
//!      sigmoid and thresholds), with a per-stage breakdown timed the same way on both sides.
//! 2. `ct::denoise` with `ct_denoise_toy` on a synthetic 512 x 512 x 300 i16 HU phantom, in batches of
//!    [`DENOISE_BATCH`] slices (what the app uses) vs the same slice batches in Python.
//! 3. `ct::detect` with `ct_detect_toy` on the same phantom (resampling to 1 mm, 32^3 windows with
//!    25 % overlap, 2 windows a run, heatmap averaging, 3-D regions, NMS) vs a numpy + scipy.ndimage peer.
//! 4. The shipped `models/lucent-cxr` on the real NIH PNG (when `../shared/data` is there): decode,
//!    preprocess, run, scores and maps (Lucent: `image` + `cxr::analyze` with contours; Python: PIL +
//!    numpy/skimage + onnxruntime + sigmoid of scores and maps), against issue 13's 100 ms budget.
//!
//! How: inputs are generated once into `target/lucent-bench/ai/` and read by both sides. Every
//! measurement is a fresh child process (this binary re-run as `--child CASE ...`, or
//! `peers/latency.py CASE ...` under the venv's Python) that loads its input, opens the session and
//! warms up untimed, then times its iterations and prints them, its peak RSS (VmHWM; ru_maxrss in
//! Python) and a check of its outputs. Several children per side, sides alternating; the table
//! shows the median of all timed iterations of a side. Both sides run ONNX Runtime 1.31.1 from the
//! same PyPI wheel (Lucent loads its `libonnxruntime.so.1.31.1`; Python's binding module links the
//! runtime in), CPU provider, the same intra-op threads, 1 inter-op thread, sequential execution,
//! arena on and the same graph optimisation level (`ORT_ENABLE_LAYOUT`, what `ModelSession` asks for).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails fast and loudly

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use inference::ct::{self, HuSamples, HuVolume};
use inference::cxr::{self, GreyImage, GreySamples};
use inference::{ExecutionPreference, JobContext, ModelManifest, ModelSession, SessionOptions, Tensor};

/// Intra-op threads on both sides (this machine's cores: what `SessionOptions::default` picks here);
/// `LUCENT_BENCH_THREADS` overrides it.
const THREADS: usize = 2;
/// Fresh child processes per side: many for the microsecond-scale run-only case (a process's
/// memory layout moves its median by up to 40 %), fewer for the long cases.
const RUN_CHILDREN: usize = 10;
const CHILDREN: usize = 3;
/// Slices per `session.run` when denoising (as in the app).
const DENOISE_BATCH: usize = 8;
/// (untimed warm-up, timed) iterations in each child.
const RUN_ITERS: (usize, usize) = (50, 200);
const PIPELINE_ITERS: (usize, usize) = (3, 20);
const CT_ITERS: (usize, usize) = (1, 2);
/// Issue 13's budget for the shipped CXR model: decode + preprocess + infer + maps per radiograph.
const SHIPPED_CXR_TARGET_MS: f64 = 100.0;
/// The binding-overhead target: Lucent's `run` at most this times Python's.
const RUN_TARGET: f64 = 1.05;
const CXR_SIZE: (usize, usize, u8) = (2048, 2500, 12);
const CT_DIMS: [usize; 3] = [512, 512, 300];
const CT_SPACING: [f64; 3] = [0.7, 0.7, 1.0];
const VENV_HINT: &str = "create it with `cargo xtask bench-ai` (or `python3 -m venv target/lucent-data/venv-ort && \
                         target/lucent-data/venv-ort/bin/pip install \
                         target/lucent-data/wheels/onnxruntime-1.31.1-*.whl numpy scikit-image`)";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn threads() -> usize {
    std::env::var("LUCENT_BENCH_THREADS").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(THREADS)
}

// ---------------------------------------------------------------------------------------------
// Child side (Lucent).

/// `key=value` arguments after the case name.
struct Args(BTreeMap<String, String>);

impl Args {
    fn parse(args: &[String]) -> Self {
        Self(
            args.iter()
                .map(|a| {
                    let (k, v) = a.split_once('=').unwrap_or_else(|| panic!("argument {a:?} is not key=value"));
                    (k.to_owned(), v.to_owned())
                })
                .collect(),
        )
    }

    fn str(&self, key: &str) -> &str {
        self.0.get(key).unwrap_or_else(|| panic!("missing argument {key}="))
    }

    fn usize(&self, key: &str) -> usize {
        self.str(key).parse().unwrap_or_else(|e| panic!("{key}: {e}"))
    }

    fn path(&self, key: &str) -> PathBuf {
        PathBuf::from(self.str(key))
    }
}

/// Peak resident set size of this process so far, KiB.
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

fn open_session(manifest_path: &Path, threads: usize) -> ModelSession {
    let manifest = Arc::new(ModelManifest::load(manifest_path).expect("manifest"));
    let model = manifest.model_path(manifest_path);
    let options = SessionOptions { intra_threads: threads, execution: ExecutionPreference::Cpu };
    ModelSession::open(manifest, &model, &options).expect("open the model")
}

/// Times `iters` calls of `f` after `warm` untimed ones; returns the times and the last result.
fn time_iters<T>(warm: usize, iters: usize, mut f: impl FnMut() -> T) -> (Vec<f64>, T) {
    for _ in 0..warm {
        std::hint::black_box(f());
    }
    let mut times = Vec::with_capacity(iters);
    let mut last = None;
    for _ in 0..iters {
        // Drop the previous result first so that two never coexist (peak RSS).
        drop(last.take());
        let start = Instant::now();
        let out = std::hint::black_box(f());
        times.push(start.elapsed().as_secs_f64());
        last = Some(out);
    }
    (times, last.expect("at least one iteration"))
}

fn print_times(name: &str, times: &[f64]) {
    let list: Vec<String> = times.iter().map(|t| format!("{t:.9}")).collect();
    println!("TIMES {name} {}", list.join(","));
}

fn read_u16(path: &Path) -> Vec<u16> {
    let bytes = std::fs::read(path).expect("read image");
    bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect()
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).expect("read tensor");
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn read_i16(path: &Path) -> Vec<i16> {
    let bytes = std::fs::read(path).expect("read volume");
    bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

/// A MONOCHROME2 image without VOI window or spacing, as the peer reads it.
fn grey_image(path: &Path, width: usize, height: usize, bits: u8) -> GreyImage {
    GreyImage {
        width,
        height,
        samples: GreySamples::U16(read_u16(path)),
        bits_stored: bits,
        monochrome1: false,
        voi: None,
        pixel_spacing: None,
    }
}

fn ct_volume(samples: &[i16]) -> HuVolume<'_> {
    let s = CT_SPACING;
    let affine = [[s[0], 0.0, 0.0, 0.0], [0.0, s[1], 0.0, 0.0], [0.0, 0.0, s[2], 0.0], [0.0, 0.0, 0.0, 1.0]];
    HuVolume::new(HuSamples::I16(samples), CT_DIMS, CT_SPACING, affine).expect("volume")
}

fn child(case: &str, a: &Args) {
    let (warm, iters) = (a.usize("warm"), a.usize("iters"));
    let mut session = open_session(&a.path("manifest"), a.usize("threads"));
    let ctx = JobContext::detached();
    let check: Vec<f64> = match case {
        "cxr-run" => {
            let tensor = Tensor::new(vec![1, 1, 224, 224], read_f32(&a.path("tensor"))).expect("tensor");
            let (times, out) = time_iters(warm, iters, || session.run(&tensor).expect("run"));
            print_times("run", &times);
            let sum = |name: &str| out[name].data.iter().map(|&v| f64::from(v)).sum::<f64>();
            vec![sum("logits"), sum("maps")]
        }
        "cxr-pipeline" => {
            let image = grey_image(&a.path("image"), a.usize("width"), a.usize("height"), a.usize("bits") as u8);
            let (times, result) =
                time_iters(warm, iters, || cxr::analyze(&mut session, &image, &ctx).expect("analyze"));
            print_times("total", &times);
            // The breakdown: what `analyze` does, one stage at a time, timed as the Python peer does.
            let manifest = session.manifest_arc();
            let mut stages: [Vec<f64>; 3] = Default::default();
            for i in 0..warm + iters {
                let t0 = Instant::now();
                let prepared = cxr::preprocess(&manifest, &image).expect("preprocess");
                let t1 = Instant::now();
                let outputs = session.run(&prepared.tensor).expect("run");
                let t2 = Instant::now();
                let findings = cxr::postprocess(&manifest, &outputs, 0, &prepared.geometry, None).expect("post");
                let t3 = Instant::now();
                std::hint::black_box(findings);
                if i >= warm {
                    for (stage, (from, to)) in stages.iter_mut().zip([(t0, t1), (t1, t2), (t2, t3)]) {
                        stage.push((to - from).as_secs_f64());
                    }
                }
            }
            for (name, times) in ["pre", "run", "post"].iter().zip(&stages) {
                print_times(name, times);
            }
            result.findings.iter().map(|f| f64::from(f.score)).collect()
        }
        "cxr-png" => {
            // What `lucent read` does with a PNG radiograph: decode, preprocess, run, scores and maps.
            let png = a.path("png");
            let (times, result) = time_iters(warm, iters, || {
                let grey = image::open(&png).expect("decode the PNG").to_luma8();
                let image = GreyImage {
                    width: grey.width() as usize,
                    height: grey.height() as usize,
                    samples: GreySamples::U16(grey.as_raw().iter().map(|&v| u16::from(v)).collect()),
                    bits_stored: 8,
                    monochrome1: false,
                    voi: None,
                    pixel_spacing: None,
                };
                cxr::analyze(&mut session, &image, &ctx).expect("analyze")
            });
            print_times("total", &times);
            result.findings.iter().map(|f| f64::from(f.score)).collect()
        }
        "ct-denoise" => {
            let samples = read_i16(&a.path("volume"));
            let volume = ct_volume(&samples);
            let batch = a.usize("batch");
            let (times, out) =
                time_iters(warm, iters, || ct::denoise(&mut session, &volume, batch, &ctx).expect("denoise"));
            print_times("total", &times);
            vec![out.iter().map(|&v| f64::from(v)).sum::<f64>() / out.len() as f64]
        }
        "ct-detect" => {
            let samples = read_i16(&a.path("volume"));
            let volume = ct_volume(&samples);
            let (times, found) = time_iters(warm, iters, || ct::detect(&mut session, &volume, &ctx).expect("detect"));
            print_times("total", &times);
            let mut check = vec![found.len() as f64];
            check.extend(found.iter().map(|c| f64::from(c.score)));
            check
        }
        other => panic!("unknown case {other:?}"),
    };
    println!("PEAK_KIB {}", vm_hwm_kib());
    let check: Vec<String> = check.iter().map(|v| format!("{v:.6}")).collect();
    println!("CHECK {}", check.join(" "));
}

// ---------------------------------------------------------------------------------------------
// Inputs, written once.

fn write_once(path: &Path, make: impl FnOnce() -> Vec<u8>) {
    if path.is_file() {
        return;
    }
    std::fs::create_dir_all(path.parent().expect("parent")).expect("create the bench folder");
    eprintln!("writing {} (once)...", path.display());
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, make()).expect("write input");
    std::fs::rename(&tmp, path).expect("rename input");
}

/// A smooth synthetic chest radiograph: bright mediastinum and soft tissue, two darker lung fields,
/// a gentle rib-like ripple; MONOCHROME2, `bits` stored.
fn synthetic_cxr(width: usize, height: usize, bits: u8) -> Vec<u8> {
    let top = f64::from((1u32 << bits) - 1);
    let mut bytes = Vec::with_capacity(width * height * 2);
    for y in 0..height {
        for x in 0..width {
            let (u, v) = (x as f64 / width as f64 - 0.5, y as f64 / height as f64 - 0.45);
            let lung = |cx: f64| {
                let d = ((u - cx) / 0.18).powi(2) + (v / 0.3).powi(2);
                (-d * d).exp()
            };
            let body = (-(u / 0.45).powi(8)).exp();
            let ribs = 0.04 * (y as f64 / 37.0 + 0.3 * (x as f64 / 200.0).sin()).sin();
            let value = 0.1 + 0.75 * body - 0.45 * (lung(-0.2) + lung(0.2)) + ribs * body;
            let sample = (value.clamp(0.0, 1.0) * top).round() as u16;
            bytes.extend_from_slice(&sample.to_le_bytes());
        }
    }
    bytes
}

/// A smooth chest CT phantom in HU: air, an elliptical body of soft tissue, two lungs (-850 HU)
/// that narrow towards both ends, a spine, and eight spherical 40 HU nodules of 3-8 mm radius.
fn phantom_ct() -> Vec<u8> {
    let [nx, ny, nz] = CT_DIMS;
    let s = CT_SPACING;
    let nodules: [([f64; 3], f64); 8] = [
        ([-70.0, -10.0, 80.0], 4.0),
        ([75.0, 20.0, 120.0], 6.0),
        ([-60.0, 30.0, 150.0], 3.0),
        ([80.0, -30.0, 170.0], 8.0),
        ([-85.0, 0.0, 200.0], 5.0),
        ([60.0, 40.0, 220.0], 3.5),
        ([-50.0, -40.0, 100.0], 7.0),
        ([90.0, 10.0, 60.0], 4.5),
    ];
    let mut bytes = Vec::with_capacity(nx * ny * nz * 2);
    for z in 0..nz {
        let zmm = z as f64 * s[2];
        let taper = (1.0 - ((zmm - 150.0) / 160.0).powi(2)).max(0.0);
        for y in 0..ny {
            let ymm = (y as f64 - ny as f64 / 2.0) * s[1];
            for x in 0..nx {
                let xmm = (x as f64 - nx as f64 / 2.0) * s[0];
                let body = (xmm / 165.0).powi(2) + (ymm / 120.0).powi(2) <= 1.0;
                let mut hu = if body { 40.0 + 15.0 * (xmm / 23.0).sin() * (ymm / 31.0).cos() } else { -1000.0 };
                let in_lung = |cx: f64| ((xmm - cx) / 60.0).powi(2) + (ymm / 85.0).powi(2) <= taper;
                if body && (in_lung(-75.0) || in_lung(75.0)) {
                    hu = -850.0 + 25.0 * (zmm / 17.0).sin() * (xmm / 13.0).cos();
                }
                if (xmm / 18.0).powi(2) + ((ymm - 85.0) / 18.0).powi(2) <= 1.0 {
                    hu = 700.0;
                }
                for (c, r) in &nodules {
                    let d2 = (xmm - c[0]).powi(2) + (ymm - c[1]).powi(2) + (zmm - c[2]).powi(2);
                    if d2 <= r * r {
                        hu = 40.0;
                    }
                }
                bytes.extend_from_slice(&(hu.round() as i16).to_le_bytes());
            }
        }
    }
    bytes
}

// ---------------------------------------------------------------------------------------------
// Parent side.

/// What one child printed.
#[derive(Default)]
struct ChildOut {
    times: BTreeMap<String, Vec<f64>>,
    peak_kib: u64,
    check: Vec<f64>,
    info: Vec<String>,
}

fn run_child(mut command: Command) -> Result<ChildOut, String> {
    let out = command.output().map_err(|e| format!("cannot start: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        return Err(format!("failed ({}): {}", out.status, tail.into_iter().rev().collect::<Vec<_>>().join(" / ")));
    }
    let mut parsed = ChildOut::default();
    for line in stdout.lines() {
        let Some((tag, rest)) = line.split_once(' ') else { continue };
        match tag {
            "TIMES" => {
                let (name, list) = rest.split_once(' ').ok_or("bad TIMES line")?;
                let v = list.split(',').map(str::parse).collect::<Result<Vec<f64>, _>>().map_err(|e| e.to_string())?;
                parsed.times.entry(name.to_owned()).or_default().extend(v);
            }
            "PEAK_KIB" => parsed.peak_kib = rest.trim().parse().map_err(|e| format!("PEAK_KIB: {e}"))?,
            "CHECK" => {
                parsed.check = rest
                    .split_whitespace()
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("CHECK: {e}"))?;
            }
            "INFO" => parsed.info.push(rest.to_owned()),
            _ => {}
        }
    }
    if parsed.times.is_empty() {
        return Err("printed no timings".to_owned());
    }
    Ok(parsed)
}

/// All children of one side of a case, pooled.
#[derive(Default)]
struct Side {
    times: BTreeMap<String, Vec<f64>>,
    /// Each child's median, per metric.
    child_medians: BTreeMap<String, Vec<f64>>,
    peak_kib: u64,
    check: Vec<f64>,
    info: Vec<String>,
    children: usize,
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut t = v.to_vec();
    t.sort_by(f64::total_cmp);
    t
}

fn quantile(v: &[f64], q: f64) -> f64 {
    let t = sorted(v);
    t[((t.len() - 1) as f64 * q).round() as usize]
}

impl Side {
    fn add(&mut self, c: ChildOut) {
        for (k, v) in c.times {
            self.child_medians.entry(k.clone()).or_default().push(quantile(&v, 0.5));
            self.times.entry(k).or_default().extend(v);
        }
        self.peak_kib = self.peak_kib.max(c.peak_kib);
        self.check = c.check;
        for i in c.info {
            if !self.info.contains(&i) {
                self.info.push(i);
            }
        }
        self.children += 1;
    }

    fn median(&self, key: &str) -> Option<f64> {
        self.times.get(key).map(|t| quantile(t, 0.5))
    }
}

struct Case {
    name: String,
    child_case: &'static str,
    args: Vec<String>,
    children: usize,
    /// Timing rows: (metric key, row label; the first row carries the case name).
    metrics: Vec<(&'static str, &'static str)>,
    target: Option<Target>,
}

/// What a case's first row is held to.
#[derive(Clone, Copy)]
enum Target {
    /// Lucent's median at most this many times Python's.
    Ratio(f64),
    /// Lucent's median at most this many milliseconds.
    Millis(f64),
}

fn fmt_time(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.1} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.3} s")
    }
}

fn cell(side: Option<&Side>, key: &str) -> String {
    let Some((s, t)) = side.and_then(|s| s.times.get(key).map(|t| (s, t))) else {
        return "–".to_owned();
    };
    format!(
        "{} [{}–{}] n={}×{}",
        fmt_time(quantile(t, 0.5)),
        fmt_time(quantile(t, 0.1)),
        fmt_time(quantile(t, 0.9)),
        s.children,
        t.len() / s.children.max(1)
    )
}

fn agreement(a: &[f64], b: &[f64]) -> String {
    if a.is_empty() || b.is_empty() {
        return "–".to_owned();
    }
    if a.len() != b.len() {
        return format!("NO ({} vs {} values)", a.len(), b.len());
    }
    let rel = a.iter().zip(b).map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()).max(1e-6)).fold(0.0f64, f64::max);
    format!("{} (max rel Δ {rel:.0e})", if rel < 1e-3 { "yes" } else { "NO" })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1], &Args::parse(&args[i + 2..]));
        return;
    }

    let root = root();
    let threads = threads();
    let exe = std::env::current_exe().expect("current exe");
    let python = root.join("target/lucent-data/venv-ort/bin/python");
    let peer = root.join("inference/benches/peers/latency.py");
    let has_python = python.is_file();
    let dir = root.join("target/lucent-bench/ai");
    let models = root.join("models/test");
    let cxr_manifest = models.join("cxr_toy.toml");
    let runtime = inference::runtime::runtime().expect("ONNX Runtime (run `cargo xtask setup`)");

    // Inputs.
    let (w, h, bits) = CXR_SIZE;
    let synth = dir.join(format!("cxr_synth_{w}x{h}_u16.raw"));
    write_once(&synth, || synthetic_cxr(w, h, bits));
    let mut images: Vec<(String, PathBuf, usize, usize, u8)> =
        vec![(format!("synthetic {w}x{h} u16 (12 bits stored)"), synth, w, h, bits)];
    let nih_png = root.join("../shared/data/cxr-nih-dev/00000075_000.png");
    if nih_png.is_file() {
        let png = image::open(&nih_png).expect("decode the NIH PNG").to_luma8();
        let (pw, ph) = (png.width() as usize, png.height() as usize);
        let raw = dir.join(format!("cxr_nih_00000075_{pw}x{ph}_u8.raw"));
        write_once(&raw, || png.as_raw().iter().flat_map(|&v| u16::from(v).to_le_bytes()).collect());
        images.push((format!("real NIH 00000075_000.png {pw}x{ph} u8"), raw, pw, ph, 8));
    }
    let ct = dir.join(format!("ct_phantom_{}x{}x{}_i16.raw", CT_DIMS[0], CT_DIMS[1], CT_DIMS[2]));
    write_once(&ct, phantom_ct);

    let common = |threads: usize, (warm, iters): (usize, usize), manifest: &Path| {
        vec![
            format!("threads={threads}"),
            format!("warm={warm}"),
            format!("iters={iters}"),
            format!("manifest={}", manifest.display()),
        ]
    };
    let mut cases = Vec::new();
    for (k, (label, path, iw, ih, ib)) in images.iter().enumerate() {
        // The preprocessed tensor, by `cxr::preprocess`; rewritten every run as it follows the code.
        let tensor = dir.join(format!("cxr_tensor_{k}.f32"));
        let manifest = ModelManifest::load(&cxr_manifest).expect("manifest");
        let prepared = cxr::preprocess(&manifest, &grey_image(path, *iw, *ih, *ib)).expect("preprocess");
        let bytes: Vec<u8> = prepared.tensor.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&tensor, bytes).expect("write the tensor");
        if k == 0 {
            let mut run_threads = vec![1, threads];
            run_threads.dedup();
            for t in run_threads {
                let mut args = common(t, RUN_ITERS, &cxr_manifest);
                args.push(format!("tensor={}", tensor.display()));
                cases.push(Case {
                    name: format!("1a CXR session.run only, [1,1,224,224] (synthetic image), {t} intra-op thread(s)"),
                    child_case: "cxr-run",
                    args,
                    children: RUN_CHILDREN,
                    metrics: vec![("run", "")],
                    target: Some(Target::Ratio(RUN_TARGET)),
                });
            }
        }
        let mut args = common(threads, PIPELINE_ITERS, &cxr_manifest);
        args.extend([
            format!("image={}", path.display()),
            format!("width={iw}"),
            format!("height={ih}"),
            format!("bits={ib}"),
            format!("tensor={}", tensor.display()),
        ]);
        cases.push(Case {
            name: format!("1b CXR full pipeline, {label}"),
            child_case: "cxr-pipeline",
            args,
            children: CHILDREN,
            metrics: vec![
                ("total", ""),
                ("pre", "   stage: preprocess"),
                ("run", "   stage: run"),
                ("post", "   stage: postprocess (Lucent also contours and boxes 6 maps)"),
            ],
            target: None,
        });
    }
    // The shipped model (models/lucent-cxr) on the real radiograph, from the PNG file.
    let shipped = root.join("models/lucent-cxr/lucent-cxr.toml");
    if nih_png.is_file() && shipped.is_file() {
        let mut args = common(threads, PIPELINE_ITERS, &shipped);
        args.push(format!("png={}", nih_png.display()));
        cases.push(Case {
            name: "4 lucent-cxr (shipped, 256 px) real NIH PNG: decode + preprocess + run + maps".to_owned(),
            child_case: "cxr-png",
            args,
            children: CHILDREN,
            metrics: vec![("total", "")],
            target: Some(Target::Millis(SHIPPED_CXR_TARGET_MS)),
        });
    }
    let ct_args = |manifest: &str| {
        let mut a = common(threads, CT_ITERS, &models.join(manifest));
        a.push(format!("volume={}", ct.display()));
        a.push(format!("batch={DENOISE_BATCH}"));
        a
    };
    cases.push(Case {
        name: format!("2 CT denoise 512x512x300 i16, {DENOISE_BATCH} slices/run"),
        child_case: "ct-denoise",
        args: ct_args("ct_denoise_toy.toml"),
        children: CHILDREN,
        metrics: vec![("total", "")],
        target: None,
    });
    cases.push(Case {
        name: "3 CT detect 512x512x300 (0.7x0.7x1 mm -> 1 mm, 32^3 windows, 2/run)".to_owned(),
        child_case: "ct-detect",
        args: ct_args("ct_detect_toy.toml"),
        children: CHILDREN,
        metrics: vec![("total", "")],
        target: None,
    });

    let header = [
        "case",
        "Lucent median [p10–p90] children×iters",
        "Python median [p10–p90] children×iters",
        "Lucent/Python",
        "target",
        "Lucent peak RSS",
        "Python peak RSS",
        "outputs agree",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    let mut notes: Vec<String> = Vec::new();
    // `LUCENT_BENCH_CASES=1b,4` measures only the listed cases.
    let only: Option<Vec<String>> =
        std::env::var("LUCENT_BENCH_CASES").ok().map(|v| v.split(',').map(|c| c.trim().to_owned()).collect());
    let cases: Vec<Case> = cases
        .into_iter()
        .filter(|c| only.as_ref().is_none_or(|o| o.iter().any(|n| c.name.split(' ').next() == Some(n.as_str()))))
        .collect();
    for case in &cases {
        eprintln!("measuring {} ...", case.name);
        let mut lucent = Side::default();
        let mut py = Side::default();
        let mut py_error = None;
        for round in 0..case.children {
            let lucent_child = || {
                let mut c = Command::new(&exe);
                c.arg("--child").arg(case.child_case).args(&case.args);
                run_child(c).unwrap_or_else(|e| panic!("Lucent {}: {e}", case.name))
            };
            let python_child = || -> Result<ChildOut, String> {
                if !has_python {
                    return Err(format!("{} absent: {VENV_HINT}", python.display()));
                }
                let mut c = Command::new(&python);
                c.arg(&peer).arg(case.child_case).args(&case.args);
                run_child(c)
            };
            // Alternate which side goes first.
            let (l, p) = if round % 2 == 0 {
                let l = lucent_child();
                (l, python_child())
            } else {
                let p = python_child();
                (lucent_child(), p)
            };
            lucent.add(l);
            match p {
                Ok(p) => py.add(p),
                Err(e) => py_error = Some(e),
            }
        }
        if let Some(e) = &py_error {
            notes.push(format!("{}: Python peer: {e}", case.name));
        }
        let py = (py_error.is_none() && py.children > 0).then_some(py);
        for i in py.iter().flat_map(|p| &p.info) {
            notes.push(format!("{}: Python {i}", case.name));
        }
        if case.children >= 5 {
            let list = |s: &Side| {
                let m = s.child_medians.get(case.metrics[0].0).map(|v| sorted(v)).unwrap_or_default();
                m.iter().map(|&t| fmt_time(t)).collect::<Vec<_>>().join(", ")
            };
            notes.push(format!("{}: per-child medians, Lucent: {}", case.name, list(&lucent)));
            if let Some(p) = &py {
                notes.push(format!("{}: per-child medians, Python: {}", case.name, list(p)));
            }
        }
        for (k, (key, label)) in case.metrics.iter().enumerate() {
            let first = k == 0;
            let ratio = py.as_ref().and_then(|p| Some(lucent.median(key)? / p.median(key)?));
            let verdict = |met: Option<bool>| match met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "n/a",
            };
            let target = match case.target {
                Some(Target::Ratio(t)) if first => format!("<= {t:.2}x: {}", verdict(ratio.map(|r| r <= t))),
                Some(Target::Millis(ms)) if first => {
                    format!("<= {ms:.0} ms: {}", verdict(lucent.median(key).map(|s| s * 1e3 <= ms)))
                }
                _ => String::new(),
            };
            let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
            rows.push(vec![
                if first { case.name.clone() } else { (*label).to_owned() },
                cell(Some(&lucent), key),
                cell(py.as_ref(), key),
                ratio.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}x")),
                target,
                if first { mib(lucent.peak_kib) } else { String::new() },
                if first { py.as_ref().map_or_else(|| "–".to_owned(), |p| mib(p.peak_kib)) } else { String::new() },
                if first { agreement(&lucent.check, py.as_ref().map_or(&[][..], |p| &p.check)) } else { String::new() },
            ]);
        }
    }

    println!();
    println!(
        "AI latency: Lucent (inference crate, ort 2.0.0-rc.15 loading {}) vs Python onnxruntime 1.31.1 (same PyPI \
         wheel; its binding module links the runtime in)",
        runtime.library().display()
    );
    println!(
        "Cases 1-3 use TOY MODELS: models/test/*.onnx are 262-770 bytes of fixed weights, so they measure \
         Lucent's pre/post-processing and binding overhead, not a real network's compute; case 4 is the shipped \
         lucent-cxr on a real radiograph, decoding included."
    );
    println!(
        "Both sides: CPU provider, {threads} intra-op threads (unless the row says otherwise), 1 inter-op thread, \
         sequential, arena on, ORT_ENABLE_LAYOUT; pre/post-processing single-threaded on both sides."
    );
    println!();
    print_table(&rows);
    println!();
    println!(
        "Each child is a fresh process: input load, session creation and warm-up untimed, then timed iterations \
         (run only: {}+{}, pipeline: {}+{}, CT: {}+{} per child); sides alternate; medians and p10-p90 over all timed \
         iterations of a side; peak RSS = largest VmHWM / ru_maxrss of its children. Ratio > 1: Lucent slower.",
        RUN_ITERS.0, RUN_ITERS.1, PIPELINE_ITERS.0, PIPELINE_ITERS.1, CT_ITERS.0, CT_ITERS.1
    );
    println!(
        "Pipeline: the total is `cxr::analyze` (Lucent) / one pre+run+post iteration (Python); the stage rows come \
         from a separate loop of the same stages timed one by one on both sides. Lucent's postprocess also contours \
         and boxes the 6 maps; Python's only applies the sigmoid and thresholds."
    );
    println!(
        "Checks: run only = sums of logits and maps; pipeline = the 6 label scores; denoise = mean of the output \
         volume; detect = number of candidates and their scores."
    );
    for note in notes {
        println!("note: {note}");
    }
}

fn print_table(rows: &[Vec<String>]) {
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for (n, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell}{}", " ".repeat(w - cell.chars().count())))
            .collect();
        println!("| {} |", cells.join(" | "));
        if n == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            println!("|-{}-|", rule.join("-|-"));
        }
    }
}
