//! `lucent synth-cxr` (training data from the demo's own radiograph generator) and
//! `lucent score-cxr` (a CXR model's scores for many images, through Lucent's own pipeline), the
//! two verbs `models/training/cxr.py` drives, and `lucent synth-ct` (CT evaluation sets: scans
//! with nodules, routine / quarter-dose pairs) that the CT training scripts and CI evaluate on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use inference::{GreyImage, GreySamples, JobContext};
use pacs::synth::{self, CxrFinding, RadiographSpec, cxr};

/// Arguments of `lucent synth-cxr`.
#[derive(Debug, clap::Args)]
pub struct SynthCxrArgs {
    /// Output folder: `images/`, `masks/`, `labels.csv` and `cases.jsonl` (each case's lesions) are written there.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of cases.
    #[arg(long)]
    pub count: usize,
    /// Seed: case `k` is `<seed>-<k>` (six digits), fully deterministic.
    #[arg(long)]
    pub seed: String,
    /// Index of the first case.
    #[arg(long, default_value_t = 0)]
    pub start: usize,
    /// Columns of each image; rows follow the detector's aspect.
    #[arg(long, default_value_t = 512)]
    pub size: u16,
    /// Write DICOM files (`images/<id>.dcm`, MONOCHROME2 12-bit) instead of 16-bit PNGs.
    #[arg(long)]
    pub dicom: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// The detector a training case is acquired on: 35 x 43 cm portrait (as the demo) or 43 x 43 cm.
fn detector(id: &str) -> (&'static str, f64, f64) {
    let hash = id.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3));
    if synth::mix64(hash ^ 0xD37E).is_multiple_of(2) {
        ("35x43", 2048.0 * 0.17, 2500.0 * 0.17)
    } else {
        ("43x43", 430.0, 430.0)
    }
}

struct CaseRow {
    index: usize,
    line: String,
    json: String,
}

/// Writes one case; returns its `labels.csv` line.
fn write_case(args: &SynthCxrArgs, index: usize) -> Result<CaseRow> {
    let id = format!("{}-{index:06}", args.seed);
    let lesions = cxr::sample_case(&id);
    let (detector_name, fov_w, fov_h) = detector(&id);
    let columns = args.size.max(16);
    let spacing = fov_w / f64::from(columns);
    let rows = ((fov_h / spacing).round() as u16).max(16);
    let spec = RadiographSpec {
        rows,
        columns,
        imager_pixel_spacing_mm: spacing,
        lesions: lesions.clone(),
        description: "Synthetic chest PA (training)".into(),
        ..RadiographSpec::chest(&id, columns)
    };
    let rendered = spec.render();
    if args.dicom {
        synth::write_rendered_radiograph(&args.out.join("images").join(format!("{id}.dcm")), &spec, &rendered)
            .with_context(|| format!("writing case {id}"))?;
    } else {
        let path = args.out.join("images").join(format!("{id}.png"));
        let img = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_raw(
            u32::from(columns),
            u32::from(rows),
            rendered.values.clone(),
        )
        .context("image buffer size")?;
        img.save(&path).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut flags = Vec::with_capacity(CxrFinding::ALL.len());
    for f in CxrFinding::ALL {
        let present = lesions.iter().any(|l| l.finding == f);
        flags.push(if present { "1" } else { "0" });
        if let Some(mask) = rendered.mask(f) {
            let path = args.out.join("masks").join(format!("{id}_{}.png", f.key()));
            let bytes: Vec<u8> = mask.iter().map(|&m| if m { 255 } else { 0 }).collect();
            let img = image::GrayImage::from_raw(u32::from(columns), u32::from(rows), bytes).context("mask size")?;
            img.save(&path).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    let abnormal = if lesions.is_empty() { "0" } else { "1" };
    let line = format!("{id},{},{abnormal},PA,{columns},{rows},{spacing:.5},12,{detector_name}", flags.join(","));
    let json = serde_json::to_string(&serde_json::json!({ "id": id, "lesions": lesions }))?;
    Ok(CaseRow { index, line, json })
}

/// Runs `work` on every index of `range` on up to `threads` named threads (`<name>-N`), each taking
/// the next index; the first error stops the others after their current index and is returned.
fn for_each_parallel(
    range: std::ops::Range<usize>,
    threads: usize,
    name: &str,
    work: impl Fn(usize) -> Result<()> + Sync,
) -> Result<()> {
    let next = std::sync::atomic::AtomicUsize::new(range.start);
    let failed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| -> Result<()> {
        let mut handles = Vec::new();
        for t in 0..threads.clamp(1, 64).min(range.len().max(1)) {
            let (next, failed, work, end) = (&next, &failed, &work, range.end);
            let handle = std::thread::Builder::new().name(format!("{name}-{t}")).spawn_scoped(
                scope,
                move || -> Result<()> {
                    loop {
                        let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if index >= end || failed.load(std::sync::atomic::Ordering::Relaxed) {
                            return Ok(());
                        }
                        if let Err(e) = work(index) {
                            failed.store(true, std::sync::atomic::Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                },
            )?;
            handles.push(handle);
        }
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("a {name} worker panicked"))??;
        }
        Ok(())
    })
}

/// `lucent synth-cxr`.
pub fn synth_cxr(args: &SynthCxrArgs) -> Result<()> {
    anyhow::ensure!(args.count > 0, "--count must be at least 1");
    for sub in ["images", "masks"] {
        let dir = args.out.join(sub);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let threads = args.threads.unwrap_or_else(pacs::volume::default_threads);
    let rows: Mutex<Vec<CaseRow>> = Mutex::new(Vec::with_capacity(args.count));
    let started = std::time::Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    for_each_parallel(args.start..args.start + args.count, threads, "lucent-synth", |index| {
        let row = write_case(args, index)?;
        rows.lock().map_err(|_| anyhow::anyhow!("a worker panicked"))?.push(row);
        let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if n.is_multiple_of(250) {
            eprintln!("{n}/{} cases", args.count);
        }
        Ok(())
    })?;
    let mut rows = rows.into_inner().map_err(|_| anyhow::anyhow!("a worker panicked"))?;
    rows.sort_by_key(|r| r.index);
    let path = args.out.join("labels.csv");
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?);
    let findings: Vec<&str> = CxrFinding::ALL.iter().map(|f| f.key()).collect();
    writeln!(out, "id,{},abnormal,view,columns,rows,spacing_mm,bits_stored,detector", findings.join(","))?;
    for r in &rows {
        writeln!(out, "{}", r.line)?;
    }
    out.flush()?;
    let path = args.out.join("cases.jsonl");
    let mut cases =
        std::io::BufWriter::new(std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?);
    for r in &rows {
        writeln!(cases, "{}", r.json)?;
    }
    cases.flush()?;
    eprintln!("wrote {} case(s) to {} in {:.1} s", rows.len(), args.out.display(), started.elapsed().as_secs_f64());
    Ok(())
}

/// What `lucent synth-ct` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SynthCtKind {
    /// Chest CTs with 1-4 nodules each, every third none (solid, part-solid, ground glass; 4-25 mm),
    /// and `nodules.csv`.
    Nodules,
    /// The same chest acquired at routine and at quarter dose (projection-domain noise, filtered
    /// back-projection): `<case>/routine`, `<case>/quarter` and `pairs.csv`.
    DosePairs,
}

/// Arguments of `lucent synth-ct`.
#[derive(Debug, clap::Args)]
pub struct SynthCtArgs {
    /// Output folder (one sub-folder per case).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum)]
    pub kind: SynthCtKind,
    /// Number of cases.
    #[arg(long)]
    pub count: usize,
    /// Seed: case `k` is `<seed>-<k>` (three digits), fully deterministic.
    #[arg(long)]
    pub seed: String,
    /// Pixels per side (default: 256 for nodules, 512 for dose pairs); the field of view is 350 mm.
    #[arg(long)]
    pub size: Option<u16>,
    /// Slices per scan (default: 70 of 2.5 mm for nodules, 4 of 5 mm for dose pairs).
    #[arg(long)]
    pub slices: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// One synthetic CT case: the series to write (folder name, spec) and its nodules.
struct CtCase {
    series: Vec<(String, synth::CtSeriesSpec)>,
    nodules: Vec<synth::Nodule>,
    name: String,
}

/// A deterministic draw in [0, 1) for `what` of case `id`.
fn draw(id: &str, what: u64) -> f64 {
    let hash = id.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3));
    synth::unit(synth::mix64(hash ^ what.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
}

/// Nodules inside the phantom's lungs (centre in lung parenchyma, the whole sphere clear of the
/// other nodules), between `z_range` in patient mm.
fn sample_nodules(id: &str, count: usize, z_range: [f64; 2]) -> Vec<synth::Nodule> {
    let mut nodules: Vec<synth::Nodule> = Vec::new();
    let mut attempt = 0u64;
    while nodules.len() < count && attempt < 1000 {
        attempt += 1;
        let d = |k: u64| draw(id, attempt * 16 + k);
        let diameter_mm = 4.0 * 6.25f64.powf(d(0)); // log-uniform 4-25 mm
        let kind = match d(1) {
            u if u < 0.5 => synth::NoduleKind::Solid,
            u if u < 0.8 => synth::NoduleKind::GroundGlass,
            _ => synth::NoduleKind::PartSolid,
        };
        let side = if d(2) < 0.5 { -1.0 } else { 1.0 };
        let center_mm =
            [side * (20.0 + 110.0 * d(3)), -70.0 + 140.0 * d(4), z_range[0] + (z_range[1] - z_range[0]) * d(5)];
        let r = diameter_mm / 2.0;
        // The centre and six points at 0.7 radius in lung (not wall, heart or vessel).
        let offsets = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 0.0]];
        let in_lung = offsets.iter().chain([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]].iter()).all(|o| {
            let p = [0, 1, 2].map(|a| center_mm[a] + o[a] * 0.7 * r);
            synth::chest_phantom_hu(p, &[]) < -700.0
        });
        let clear = nodules.iter().all(|n| {
            let dist = (0..3).map(|a| (n.center_mm[a] - center_mm[a]).powi(2)).sum::<f64>().sqrt();
            dist > (n.diameter_mm + diameter_mm) / 2.0 + 10.0
        });
        if in_lung && clear {
            nodules.push(synth::Nodule { center_mm, diameter_mm, kind });
        }
    }
    nodules
}

fn ct_case(args: &SynthCtArgs, index: usize) -> CtCase {
    let name = format!("{}-{index:03}", args.seed);
    match args.kind {
        SynthCtKind::Nodules => {
            let (size, slices) = (args.size.unwrap_or(256), args.slices.unwrap_or(70));
            // 1-4 nodules, and every third scan none, in the lungs' middle, where the scan lies.
            let count = if index % 3 == 2 { 0 } else { 1 + ((draw(&name, 1) * 4.0) as usize).min(3) };
            let mut spec = synth::CtSeriesSpec::chest(&name, slices, size);
            let top = -60.0 - 20.0 * draw(&name, 2);
            spec.origin_mm[2] = top - slices as f64 * spec.slice_spacing_mm;
            spec.noise_hu = 10.0 + 20.0 * draw(&name, 3);
            spec.description = "Synthetic chest CT (evaluation)".into();
            let margin = 12.0;
            spec.nodules = sample_nodules(&name, count, [spec.origin_mm[2] + margin, top - margin]);
            CtCase { nodules: spec.nodules.clone(), series: vec![(name.clone(), spec)], name }
        }
        SynthCtKind::DosePairs => {
            let (size, slices) = (args.size.unwrap_or(512), args.slices.unwrap_or(4));
            let mut base = synth::CtSeriesSpec::chest(&name, slices, size);
            base.slice_spacing_mm = 5.0;
            base.slice_thickness_mm = 5.0;
            base.origin_mm[2] = -220.0 + 140.0 * draw(&name, 2);
            let span = slices as f64 * base.slice_spacing_mm;
            base.nodules = sample_nodules(&name, 2, [base.origin_mm[2], base.origin_mm[2] + span]);
            base.noise_hu = 0.0;
            let routine = synth::dose::SimulatedDose::ROUTINE;
            let series =
                [("routine", routine, 2, "routine dose"), ("quarter", routine.scaled(0.25), 3, "quarter dose")]
                    .into_iter()
                    .map(|(folder, dose, number, what)| {
                        let spec = synth::CtSeriesSpec {
                            seed: format!("{name}/{folder}"),
                            patient: base.patient.clone(),
                            series_number: number,
                            description: format!("Synthetic chest CT, {what} (simulated)"),
                            dose: Some(dose),
                            ..base.clone()
                        };
                        (format!("{name}/{folder}"), spec)
                    })
                    .collect();
            CtCase { nodules: base.nodules.clone(), series, name }
        }
    }
}

/// `lucent synth-ct`.
pub fn synth_ct(args: &SynthCtArgs) -> Result<()> {
    anyhow::ensure!(args.count > 0, "--count must be at least 1");
    anyhow::ensure!(args.size.is_none_or(|s| s >= 32), "--size must be at least 32");
    anyhow::ensure!(args.slices.is_none_or(|s| s >= 1), "--slices must be at least 1");
    let started = std::time::Instant::now();
    let cases: Vec<CtCase> = (0..args.count).map(|k| ct_case(args, k)).collect();
    let jobs: Vec<&(String, synth::CtSeriesSpec)> = cases.iter().flat_map(|c| c.series.iter()).collect();
    let threads = args.threads.unwrap_or_else(pacs::volume::default_threads);
    for_each_parallel(0..jobs.len(), threads, "lucent-synth-ct", |k| {
        let (folder, spec) = jobs[k];
        synth::write_ct_series(&args.out.join(folder), spec).with_context(|| format!("writing {folder}"))?;
        Ok(())
    })?;
    let mut csv = String::new();
    match args.kind {
        SynthCtKind::Nodules => {
            csv += "series,x,y,z,diameter_mm,kind\n";
            for c in &cases {
                if c.nodules.is_empty() {
                    csv += &format!("{},,,,,\n", c.name);
                }
                for n in &c.nodules {
                    let [x, y, z] = n.center_mm;
                    csv += &format!("{},{x:.2},{y:.2},{z:.2},{:.2},{:?}\n", c.name, n.diameter_mm, n.kind);
                }
            }
            std::fs::write(args.out.join("nodules.csv"), csv).context("writing nodules.csv")?;
        }
        SynthCtKind::DosePairs => {
            csv += "low,reference,dose_fraction\n";
            for c in &cases {
                csv += &format!("{0}/quarter,{0}/routine,0.25\n", c.name);
            }
            std::fs::write(args.out.join("pairs.csv"), csv).context("writing pairs.csv")?;
        }
    }
    eprintln!(
        "wrote {} case(s) ({} series) to {} in {:.1} s",
        cases.len(),
        jobs.len(),
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Arguments of `lucent score-cxr`.
#[derive(Debug, clap::Args)]
pub struct ScoreCxrArgs {
    /// Images: DICOM files, PNGs, or folders of them (recursive).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// The model to run (any CXR model in the registry, test-only ones included).
    #[arg(long)]
    pub model: String,
    /// Write the scores here as CSV (default: standard output).
    #[arg(long, value_name = "OUT.csv")]
    pub out: Option<PathBuf>,
    /// Bits Stored of 16-bit PNGs (e.g. 12 for `lucent synth-cxr` images); 8-bit PNGs use 8.
    #[arg(long, default_value_t = 16)]
    pub png_bits_stored: u8,
    /// ONNX Runtime intra-op threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

fn collect_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = crate::info::list_files(p);
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    files
}

pub fn is_png(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("png"))
}

/// A PNG as the CXR pipeline's input (grey; colour is converted to luma).
pub fn png_grey_image(path: &Path, bits_stored_16: u8) -> Result<GreyImage> {
    let img = image::open(path).with_context(|| format!("reading {}", path.display()))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    Ok(match img {
        image::DynamicImage::ImageLuma16(buf) => GreyImage {
            width,
            height,
            samples: GreySamples::U16(buf.into_raw()),
            bits_stored: bits_stored_16.clamp(1, 16),
            monochrome1: false,
            voi: None,
            pixel_spacing: None,
        },
        other => GreyImage::from_u8(width, height, other.to_luma8().as_raw()),
    })
}

/// A radiograph file (PNG, else DICOM) as the CXR pipeline's input; `png_bits_stored` is the Bits
/// Stored of 16-bit PNGs. Shared by `lucent score-cxr` and `lucent eval`.
pub fn read_grey(path: &Path, png_bits_stored: u8) -> Result<GreyImage> {
    if is_png(path) {
        png_grey_image(path, png_bits_stored)
    } else {
        pacs::file::load_image(path, 0)
            .map_err(anyhow::Error::from)
            .and_then(|im| crate::ai::grey_image(&im))
            .with_context(|| format!("reading {}", path.display()))
    }
}

/// `lucent score-cxr`.
pub fn score_cxr(args: &ScoreCxrArgs) -> Result<()> {
    inference::runtime::runtime().map_err(|e| anyhow::anyhow!("{e}"))?;
    let registry = inference::Registry::scan(
        &crate::ai::model_folders(),
        inference::SessionOptions {
            intra_threads: args.threads.max(1),
            execution: inference::ExecutionPreference::Cpu,
        },
    );
    let entry = registry
        .get(&args.model)
        .with_context(|| format!("no model with id {:?} (see `lucent models`)", args.model))?;
    if let Some(reason) = entry.status.reason() {
        anyhow::bail!("model {} is not usable: {reason}", args.model);
    }
    let mut session = registry.open(&args.model).map_err(|e| anyhow::anyhow!("{e}"))?;
    let manifest = session.manifest_arc();
    let files = collect_files(&args.paths);
    anyhow::ensure!(!files.is_empty(), "no images under the given paths");
    let mut out: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let labels: Vec<String> = manifest.labels.iter().map(|l| l.name.replace(',', " ")).collect();
    writeln!(out, "file,{}", labels.join(","))?;
    let ctx = JobContext::detached();
    let started = std::time::Instant::now();
    let mut scored = 0usize;
    for chunk in files.chunks(8) {
        let mut images = Vec::with_capacity(chunk.len());
        let mut names = Vec::with_capacity(chunk.len());
        for path in chunk {
            match read_grey(path, args.png_bits_stored) {
                Ok(im) => {
                    images.push(im);
                    names.push(path.display().to_string());
                }
                Err(e) => eprintln!("skipped {}: {e:#}", path.display()),
            }
        }
        if images.is_empty() {
            continue;
        }
        let results = inference::cxr::analyze_batch(&mut session, &images, &ctx).map_err(|e| anyhow::anyhow!("{e}"))?;
        for (name, result) in names.iter().zip(results) {
            let scores: Vec<String> = result.findings.iter().map(|f| format!("{:.6}", f.score)).collect();
            writeln!(out, "{},{}", name.replace(',', "_"), scores.join(","))?;
            scored += 1;
        }
    }
    out.flush()?;
    eprintln!(
        "scored {scored} image(s) with {} {} in {:.1} s",
        manifest.id,
        manifest.version,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
