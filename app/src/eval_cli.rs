//! `lucent eval`: how well the models do on a labelled folder, through the same pipeline as
//! `lucent read` and the workstation.
//!
//! * **Chest radiographs**: a folder with `labels.csv`: one row per image, an image column
//!   (`image`, `file`, `filename`, `path`, `Image Index` or `id`; a value is a path relative to the
//!   folder, else a name under `images/`, with `.png` / `.dcm` tried when it has no extension) and
//!   0/1 columns per finding. Images are PNG (8-bit; 16-bit with `bits_stored` from a column of that
//!   name, else `--png-bits-stored`) or DICOM. Column names meet manifest labels case-insensitively,
//!   `_`/`-` as spaces, with a few aliases: NIH's `Effusion` is *Pleural effusion*; `no_finding` /
//!   `No Finding` / `normal` are the negation of *Abnormal*. `Infiltration` is deliberately not
//!   mapped (it is neither consolidation nor interstitial opacity). The synthetic sets of
//!   `lucent synth-cxr` (`id`, `nodule`, `consolidation`, `effusion`, `interstitial_opacity`,
//!   `pneumothorax`, `abnormal`, `bits_stored`, ...) are read as they are. Manifest labels that no
//!   column gives are reported as *not labelled*.
//! * **CT nodule detection**: a folder of DICOM series with `nodules.csv`: one row per nodule with
//!   a scan column (`series`, `seriesuid`, `series_uid`, `study`, `study_uid`; matched against the
//!   Series Instance UID, the Study Instance UID, or the name of the folder holding the series),
//!   the centre in patient mm (`x`, `y`, `z` or LUNA16's `coordX`, `coordY`, `coordZ`) and
//!   `diameter_mm` (or `diameter`). Every series in the folder is a scan, with or without nodules.
//! * **CT denoising**: a folder with `pairs.csv`: one row per pair of series of the same slices, a
//!   low-dose one (`low`, `quarter`, `input`) and its reference (`reference`, `routine`, `full`),
//!   each a folder relative to the data folder (as `lucent synth-ct --kind dose-pairs` writes). The
//!   model denoises the low-dose series through `inference::ct::denoise`, as the workstation does;
//!   PSNR and SSIM of the input and of the output against the reference are measured per slice in
//!   the [-1000, 400] HU window (`inference::eval::ssim`, scikit-image's definition).
//!
//! The metrics are `inference::eval`'s (AUROC with a 2000-resample percentile bootstrap, the
//! confusion at the manifest threshold, the threshold for `--sensitivity`, FROC and CPM). Output: a
//! table on standard output, `--json` with everything (curves included) and a PNG plot
//! ([`crate::eval_plot`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use inference::eval::{self, BinaryMetrics, Bootstrap, Froc, FrocOptions, ImageWindow, ScanCase};
use inference::manifest::{OutputKind, PreprocessingKind};
use inference::{JobContext, ModelManifest, Registry, SessionOptions};
use serde::Serialize;

/// Arguments of `lucent eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The labelled folder: `labels.csv` + radiographs, DICOM series + `nodules.csv`, or
    /// low-dose / reference series + `pairs.csv`.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Evaluate only this model (default: every ready model that applies to the folder).
    #[arg(long)]
    pub model: Option<String>,
    /// Write every number (curves included) as JSON here.
    #[arg(long, value_name = "OUT.json")]
    pub json: Option<PathBuf>,
    /// Write the ROC / FROC plot here (default: beside --json, with .png).
    #[arg(long, value_name = "OUT.png")]
    pub plot: Option<PathBuf>,
    /// Target sensitivity for which the threshold is reported.
    #[arg(long, default_value_t = 0.9)]
    pub sensitivity: f64,
    /// Bootstrap resamples for the 95% intervals.
    #[arg(long, default_value_t = 2000)]
    pub bootstrap: usize,
    /// Bits Stored of 16-bit PNGs without a `bits_stored` column (8-bit PNGs use 8).
    #[arg(long, default_value_t = 16)]
    pub png_bits_stored: u8,
    /// Also evaluate models marked test-only when no --model is given.
    #[arg(long)]
    pub include_test_models: bool,
    /// ONNX Runtime intra-op threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// What to evaluate (the CLI's and the GUI's common input).
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub data: PathBuf,
    pub model: Option<String>,
    pub target_sensitivity: f64,
    pub bootstrap: Bootstrap,
    pub png_bits_stored: u8,
    pub include_test_models: bool,
    pub threads: usize,
}

impl EvalOptions {
    pub fn new(data: PathBuf) -> Self {
        Self {
            data,
            model: None,
            target_sensitivity: 0.9,
            bootstrap: Bootstrap::default(),
            png_bits_stored: 16,
            include_test_models: false,
            threads: 1,
        }
    }
}

/// Progress of an evaluation: cases done of the total, over all models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvalProgress {
    pub done: usize,
    pub total: usize,
}

/// One label's results.
#[derive(Debug, Clone, Serialize)]
pub struct LabelEval {
    /// The manifest label, and its position in the manifest (which gives its colour in plots).
    pub label: String,
    pub index: usize,
    /// Where the reference came from (the CSV column, or `not <column>`).
    pub reference: String,
    #[serde(flatten)]
    pub metrics: BinaryMetrics,
}

/// One case's scores (CXR) or candidates (CT).
#[derive(Debug, Clone, Serialize)]
pub struct CaseScores {
    pub case: String,
    /// Per manifest label, in label order (CXR).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<f64>,
    /// Detector candidates (CT): centre in patient mm and score.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<eval::Candidate>,
}

/// One model's evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct ModelEval {
    pub model_id: String,
    pub model_name: String,
    pub model_version: String,
    /// `cxr` or `ct_detection`.
    pub task: String,
    /// Cases scored (images or scans).
    pub cases: usize,
    /// Cases that could not be read or scored, with the reason.
    pub skipped: Vec<String>,
    pub labels: Vec<LabelEval>,
    /// Manifest labels the reference does not give.
    pub not_labelled: Vec<String>,
    pub froc: Option<Froc>,
    /// Image quality of a denoiser (`ct_denoise`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denoise: Option<DenoiseEval>,
    pub case_scores: Vec<CaseScores>,
}

/// PSNR (dB) and SSIM of one image, or their means over slices.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Quality {
    pub psnr_db: f64,
    pub ssim: f64,
}

/// One slice of a denoising pair: the low-dose input and the model's output against the reference.
#[derive(Debug, Clone, Serialize)]
pub struct SliceQuality {
    pub case: String,
    /// Index in the series' z order.
    pub slice: usize,
    pub input: Quality,
    pub output: Quality,
}

/// A denoiser's evaluation: means over every slice of every pair, and each slice.
#[derive(Debug, Clone, Serialize)]
pub struct DenoiseEval {
    pub window: ImageWindow,
    pub pairs: usize,
    pub slices: usize,
    pub input: Quality,
    pub output: Quality,
    pub per_slice: Vec<SliceQuality>,
}

/// The result of `lucent eval`.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub disclaimer: &'static str,
    pub lucent_version: &'static str,
    /// The folder's name (not its full path, which may name a person or a site).
    pub data: String,
    pub target_sensitivity: f64,
    pub bootstrap: Bootstrap,
    pub models: Vec<ModelEval>,
    /// Reference columns no manifest label uses, and other remarks.
    pub notes: Vec<String>,
}

/// `lucent eval`.
pub fn run(args: &EvalArgs) -> Result<()> {
    let options = EvalOptions {
        data: args.data.clone(),
        model: args.model.clone(),
        target_sensitivity: args.sensitivity,
        bootstrap: Bootstrap { resamples: args.bootstrap, ..Bootstrap::default() },
        png_bits_stored: args.png_bits_stored,
        include_test_models: args.include_test_models,
        threads: args.threads.max(1),
    };
    let started = std::time::Instant::now();
    let cancel = AtomicBool::new(false);
    let last = std::sync::Mutex::new(std::time::Instant::now());
    let progress = |p: EvalProgress| {
        let Ok(mut last) = last.lock() else { return };
        if p.done == p.total || last.elapsed() > std::time::Duration::from_secs(2) {
            *last = std::time::Instant::now();
            eprintln!("{}/{} cases scored", p.done, p.total);
        }
    };
    let report = evaluate(&options, &progress, &cancel)?;
    let mut out = std::io::stdout().lock();
    out.write_all(format_table(&report).as_bytes())?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        writeln!(out, "JSON: {}", path.display())?;
    }
    let plot = args.plot.clone().or_else(|| args.json.as_ref().map(|j| j.with_extension("png")));
    if let Some(path) = plot {
        crate::eval_plot::write_png(&report, &path)?;
        writeln!(out, "Plot: {}", path.display())?;
    }
    eprintln!("evaluated in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The folder's name, for the report.
fn folder_name(path: &Path) -> String {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    canonical.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

/// Runs the evaluation: every applicable model (or `options.model`) over the folder.
pub fn evaluate(options: &EvalOptions, progress: &dyn Fn(EvalProgress), cancel: &AtomicBool) -> Result<EvalReport> {
    anyhow::ensure!(options.data.is_dir(), "{} is not a folder", options.data.display());
    anyhow::ensure!(
        (0.0..=1.0).contains(&options.target_sensitivity),
        "the target sensitivity must lie in [0, 1], got {}",
        options.target_sensitivity
    );
    let cxr_labels = options.data.join("labels.csv");
    let nodules = options.data.join("nodules.csv");
    let pairs = options.data.join("pairs.csv");
    anyhow::ensure!(
        cxr_labels.is_file() || nodules.is_file() || pairs.is_file(),
        "{} has no labels.csv (radiographs), nodules.csv (CT nodules) or pairs.csv (low-dose / reference CT)",
        options.data.display()
    );
    inference::runtime::runtime().map_err(|e| anyhow::anyhow!("{e}"))?;
    let registry = Registry::scan(
        &crate::ai::model_folders(),
        SessionOptions { intra_threads: options.threads.max(1), execution: inference::ExecutionPreference::Cpu },
    );
    let have = Have { cxr: cxr_labels.is_file(), ct: nodules.is_file(), pairs: pairs.is_file() };
    let models = pick_models(&registry, options, have)?;
    let cxr_set = if have.cxr { Some(read_cxr_set(&options.data, &cxr_labels)?) } else { None };
    let ct_set = if have.ct { Some(read_ct_set(&options.data, &nodules)?) } else { None };
    let pair_set = if have.pairs { Some(read_pairs(&options.data, &pairs)?) } else { None };
    let total: usize = models
        .iter()
        .map(|m| match task_of(m) {
            Some(Task::Cxr) => cxr_set.as_ref().map_or(0, |s| s.rows.len()),
            Some(Task::CtDetection) => ct_set.as_ref().map_or(0, |s| s.scans.len()),
            Some(Task::CtDenoise) => pair_set.as_ref().map_or(0, Vec::len),
            None => 0,
        })
        .sum();
    let mut report = EvalReport {
        disclaimer: crate::ai::DISCLAIMER,
        lucent_version: env!("CARGO_PKG_VERSION"),
        data: folder_name(&options.data),
        target_sensitivity: options.target_sensitivity,
        bootstrap: options.bootstrap,
        models: Vec::new(),
        notes: Vec::new(),
    };
    let mut done = 0usize;
    let mut tick = |n: usize| {
        done += n;
        progress(EvalProgress { done, total });
    };
    for manifest in &models {
        anyhow::ensure!(!cancel.load(Ordering::Relaxed), "cancelled");
        let evaluation = match task_of(manifest) {
            Some(Task::Cxr) => match &cxr_set {
                Some(set) => eval_cxr(&registry, manifest, set, options, &mut tick, cancel)?,
                None => continue,
            },
            Some(Task::CtDetection) => match &ct_set {
                Some(set) => eval_ct(&registry, manifest, set, options, &mut tick, cancel)?,
                None => continue,
            },
            Some(Task::CtDenoise) => match &pair_set {
                Some(set) => eval_denoise(&registry, manifest, set, &mut tick, cancel)?,
                None => continue,
            },
            None => continue,
        };
        report.models.push(evaluation);
    }
    if let Some(set) = &cxr_set {
        let used: Vec<&str> = report
            .models
            .iter()
            .flat_map(|m| m.labels.iter())
            .map(|l| l.reference.trim_start_matches("not ").trim())
            .collect();
        for column in &set.label_columns {
            if !used.iter().any(|u| u.eq_ignore_ascii_case(column)) {
                let why = if norm(column) == "infiltration" {
                    " (Infiltration is not Consolidation nor Interstitial opacity: not mapped)"
                } else {
                    ""
                };
                report.notes.push(format!("column {column:?} matches no model label{why}"));
            }
        }
    }
    if let Some(set) = &ct_set {
        report.notes.extend(set.notes.iter().cloned());
    }
    Ok(report)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    Cxr,
    CtDetection,
    CtDenoise,
}

/// Which references the data folder holds.
#[derive(Debug, Clone, Copy)]
struct Have {
    cxr: bool,
    ct: bool,
    pairs: bool,
}

impl Have {
    fn task(&self, task: Task) -> bool {
        match task {
            Task::Cxr => self.cxr,
            Task::CtDetection => self.ct,
            Task::CtDenoise => self.pairs,
        }
    }
}

fn task_of(m: &ModelManifest) -> Option<Task> {
    match m.preprocessing.kind {
        PreprocessingKind::Cxr => Some(Task::Cxr),
        PreprocessingKind::CtVolume
            if m.outputs.iter().any(|o| o.kind.is_map() || o.kind == OutputKind::Detections3d) =>
        {
            Some(Task::CtDetection)
        }
        PreprocessingKind::CtSlice if m.outputs.iter().any(|o| o.kind == OutputKind::DenoisedImage) => {
            Some(Task::CtDenoise)
        }
        _ => None,
    }
}

fn pick_models(registry: &Registry, options: &EvalOptions, have: Have) -> Result<Vec<std::sync::Arc<ModelManifest>>> {
    if let Some(id) = &options.model {
        let entry = registry.get(id).with_context(|| format!("no model with id {id:?} (see `lucent models`)"))?;
        if let Some(reason) = entry.status.reason() {
            anyhow::bail!("model {id} is not usable: {reason}");
        }
        let manifest = entry.manifest.clone().with_context(|| format!("model {id} has no manifest"))?;
        match task_of(&manifest) {
            Some(task) if have.task(task) => {}
            Some(Task::Cxr) => anyhow::bail!("model {id} reads radiographs, but the folder has no labels.csv"),
            Some(Task::CtDetection) => {
                anyhow::bail!("model {id} detects CT nodules, but the folder has no nodules.csv")
            }
            Some(Task::CtDenoise) => anyhow::bail!("model {id} denoises CT, but the folder has no pairs.csv"),
            None => anyhow::bail!(
                "model {id} has no evaluation here (only CXR findings, CT nodule detection and CT denoising)"
            ),
        }
        return Ok(vec![manifest]);
    }
    let models: Vec<_> = registry
        .ready()
        .filter_map(|e| e.manifest.clone())
        .filter(|m| !m.test_only || options.include_test_models)
        .filter(|m| task_of(m).is_some_and(|t| have.task(t)))
        .collect();
    anyhow::ensure!(
        !models.is_empty(),
        "no ready model applies to this folder{}",
        if options.include_test_models { "" } else { " (test-only models need --include-test-models)" }
    );
    Ok(models)
}

// ------------------------------------------------------------------------------------------------
// CSV

/// Splits one CSV line (RFC 4180 quotes, no newlines inside fields).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields.iter().map(|f| f.trim().to_owned()).collect()
}

/// Reads a CSV file: (header, rows).
fn read_csv(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header =
        split_csv(lines.next().with_context(|| format!("{} is empty", path.display()))?.trim_start_matches('\u{feff}'));
    let rows = lines.map(split_csv).collect();
    Ok((header, rows))
}

/// A label or column name compared loosely: lower case, `_`/`-` as spaces.
fn norm(name: &str) -> String {
    name.trim().to_lowercase().replace(['_', '-'], " ").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A 0/1 cell; `None` when empty or unreadable (the case is left out for that label).
fn flag(cell: &str) -> Option<bool> {
    match cell.trim().to_ascii_lowercase().as_str() {
        "1" | "1.0" | "true" | "yes" | "y" => Some(true),
        "0" | "0.0" | "false" | "no" | "n" => Some(false),
        _ => None,
    }
}

fn column(header: &[String], names: &[&str]) -> Option<usize> {
    names.iter().find_map(|n| header.iter().position(|h| norm(h) == norm(n)))
}

// ------------------------------------------------------------------------------------------------
// CXR

struct CxrRow {
    image: PathBuf,
    bits_stored: Option<u8>,
    cells: Vec<String>,
}

struct CxrSet {
    header: Vec<String>,
    rows: Vec<CxrRow>,
    /// Header columns that hold 0/1 labels (not the image, view, size ... columns).
    label_columns: Vec<String>,
}

const IMAGE_COLUMNS: &[&str] = &["image", "file", "filename", "file name", "path", "image index", "id"];
/// Columns that are never labels.
const OTHER_COLUMNS: &[&str] = &[
    "view",
    "age",
    "sex",
    "columns",
    "rows",
    "spacing mm",
    "bits stored",
    "detector",
    "patient id",
    "follow up #",
    "view position",
];

fn resolve_image(dir: &Path, value: &str) -> PathBuf {
    let mut tries = vec![dir.join(value), dir.join("images").join(value)];
    if Path::new(value).extension().is_none() {
        for ext in ["png", "dcm"] {
            tries.push(dir.join(format!("{value}.{ext}")));
            tries.push(dir.join("images").join(format!("{value}.{ext}")));
        }
    }
    tries.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| dir.join(value))
}

fn read_cxr_set(dir: &Path, labels_csv: &Path) -> Result<CxrSet> {
    let (header, rows) = read_csv(labels_csv)?;
    let image_col = column(&header, IMAGE_COLUMNS)
        .with_context(|| format!("{}: no image column (one of {})", labels_csv.display(), IMAGE_COLUMNS.join(", ")))?;
    let bits_col = column(&header, &["bits_stored"]);
    let label_columns = header
        .iter()
        .enumerate()
        .filter(|(i, h)| *i != image_col && !OTHER_COLUMNS.contains(&norm(h).as_str()))
        .filter(|(i, _)| rows.iter().filter_map(|r| r.get(*i)).all(|c| flag(c).is_some() || c.is_empty()))
        .map(|(_, h)| h.clone())
        .collect();
    let rows = rows
        .into_iter()
        .filter(|r| r.get(image_col).is_some_and(|v| !v.is_empty()))
        .map(|cells| CxrRow {
            image: resolve_image(dir, &cells[image_col]),
            bits_stored: bits_col.and_then(|c| cells.get(c)).and_then(|v| v.parse().ok()),
            cells,
        })
        .collect::<Vec<_>>();
    anyhow::ensure!(!rows.is_empty(), "{} lists no images", labels_csv.display());
    Ok(CxrSet { header, rows, label_columns })
}

/// How a manifest label's reference is read from the CSV.
#[derive(Debug, Clone, PartialEq)]
enum Reference {
    Column(usize),
    /// The negation of a "no finding" column.
    NotColumn(usize),
}

/// Aliases: (normalised column name, normalised manifest label).
const ALIASES: &[(&str, &str)] = &[
    ("effusion", "pleural effusion"),
    ("pleural effusion", "pleural effusion"),
    ("interstitial opacity", "interstitial opacity"),
    ("abnormal", "abnormal"),
    ("any finding", "abnormal"),
];
const NO_FINDING: &[&str] = &["no finding", "normal", "no findings"];

fn reference_for(label: &str, header: &[String], label_columns: &[String]) -> Option<Reference> {
    let want = norm(label);
    let is_label_col = |i: usize| label_columns.iter().any(|c| c == &header[i]);
    let direct = header.iter().position(|h| norm(h) == want).filter(|&i| is_label_col(i));
    let alias = || {
        header.iter().position(|h| {
            let h = norm(h);
            ALIASES.iter().any(|(col, target)| *col == h && *target == want)
        })
    };
    if let Some(i) = direct.or_else(|| alias().filter(|&i| is_label_col(i))) {
        return Some(Reference::Column(i));
    }
    if want == "abnormal" {
        return header.iter().position(|h| NO_FINDING.contains(&norm(h).as_str())).map(Reference::NotColumn);
    }
    None
}

fn eval_cxr(
    registry: &Registry,
    manifest: &ModelManifest,
    set: &CxrSet,
    options: &EvalOptions,
    tick: &mut dyn FnMut(usize),
    cancel: &AtomicBool,
) -> Result<ModelEval> {
    let mut session = registry.open(&manifest.id).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ctx = JobContext::detached();
    let mut skipped = Vec::new();
    let mut scored: Vec<(usize, Vec<f64>)> = Vec::with_capacity(set.rows.len());
    let rows: Vec<(usize, &CxrRow)> = set.rows.iter().enumerate().collect();
    for chunk in rows.chunks(8) {
        anyhow::ensure!(!cancel.load(Ordering::Relaxed), "cancelled");
        let mut images = Vec::with_capacity(chunk.len());
        let mut which = Vec::with_capacity(chunk.len());
        for (i, row) in chunk {
            let bits = row.bits_stored.unwrap_or(options.png_bits_stored);
            match crate::synth_cli::read_grey(&row.image, bits) {
                Ok(im) => {
                    images.push(im);
                    which.push(*i);
                }
                Err(e) => skipped.push(format!("{}: {e:#}", file_name(&row.image))),
            }
        }
        if !images.is_empty() {
            let results =
                inference::cxr::analyze_batch(&mut session, &images, &ctx).map_err(|e| anyhow::anyhow!("{e}"))?;
            for (i, result) in which.into_iter().zip(results) {
                let scores = manifest
                    .labels
                    .iter()
                    .map(|l| {
                        result.findings.iter().find(|f| f.label == l.name).map_or(f64::NAN, |f| f64::from(f.score))
                    })
                    .collect();
                scored.push((i, scores));
            }
        }
        tick(chunk.len());
    }
    let mut labels = Vec::new();
    let mut not_labelled = Vec::new();
    for (k, label) in manifest.labels.iter().enumerate() {
        let Some(reference) = reference_for(&label.name, &set.header, &set.label_columns) else {
            not_labelled.push(label.name.clone());
            continue;
        };
        let (col, negate) = match reference {
            Reference::Column(c) => (c, false),
            Reference::NotColumn(c) => (c, true),
        };
        let (mut y, mut s) = (Vec::new(), Vec::new());
        for (i, scores) in &scored {
            if let Some(v) = set.rows[*i].cells.get(col).and_then(|c| flag(c))
                && !scores[k].is_nan()
            {
                y.push(v != negate);
                s.push(scores[k]);
            }
        }
        let metrics =
            eval::binary_metrics(&y, &s, f64::from(label.threshold), options.target_sensitivity, &options.bootstrap)
                .map_err(|e| anyhow::anyhow!("{}: {e}", label.name))?;
        let reference = if negate { format!("not {}", set.header[col]) } else { set.header[col].clone() };
        labels.push(LabelEval { label: label.name.clone(), index: k, reference, metrics });
    }
    Ok(ModelEval {
        model_id: manifest.id.clone(),
        model_name: manifest.name.clone(),
        model_version: manifest.version.clone(),
        task: "cxr".into(),
        cases: scored.len(),
        skipped,
        labels,
        not_labelled,
        froc: None,
        denoise: None,
        case_scores: scored
            .into_iter()
            .map(|(i, scores)| CaseScores { case: file_name(&set.rows[i].image), scores, candidates: Vec::new() })
            .collect(),
    })
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

// ------------------------------------------------------------------------------------------------
// CT

struct Scan {
    /// The folder of the series relative to the data folder, or its UID.
    name: String,
    series_uid: String,
    study_uid: String,
    files: Vec<PathBuf>,
    lesions: Vec<eval::Lesion>,
}

struct CtSet {
    scans: Vec<Scan>,
    notes: Vec<String>,
}

fn read_ct_set(dir: &Path, nodules_csv: &Path) -> Result<CtSet> {
    let files = crate::info::list_files(dir);
    let infos = pacs::file::read_infos(&files, pacs::volume::default_threads());
    let mut by_series: BTreeMap<String, Scan> = BTreeMap::new();
    for (file, info) in files.iter().zip(infos) {
        let Ok(info) = info else { continue };
        if !info.has_pixel_data {
            continue;
        }
        let folder = file.parent().and_then(|p| p.strip_prefix(dir).ok()).map(|p| p.display().to_string());
        let scan = by_series.entry(info.series_instance_uid.clone()).or_insert_with(|| Scan {
            name: folder.filter(|f| !f.is_empty()).unwrap_or_else(|| info.series_instance_uid.clone()),
            series_uid: info.series_instance_uid.clone(),
            study_uid: info.study_instance_uid.clone(),
            files: Vec::new(),
            lesions: Vec::new(),
        });
        scan.files.push(file.clone());
    }
    anyhow::ensure!(!by_series.is_empty(), "no DICOM series under {}", dir.display());
    let (header, rows) = read_csv(nodules_csv)?;
    let need = |names: &[&str], what: &str| {
        column(&header, names)
            .with_context(|| format!("{}: no {what} column ({})", nodules_csv.display(), names.join(", ")))
    };
    let id_col = need(
        &["series", "seriesuid", "series uid", "series_instance_uid", "study", "study uid", "studyuid", "scan"],
        "scan",
    )?;
    let xyz = [
        need(&["x", "coordx", "x mm"], "x")?,
        need(&["y", "coordy", "y mm"], "y")?,
        need(&["z", "coordz", "z mm"], "z")?,
    ];
    let d_col = need(&["diameter mm", "diameter"], "diameter")?;
    let mut notes = Vec::new();
    for (line, row) in rows.iter().enumerate() {
        let id = row.get(id_col).map(String::as_str).unwrap_or_default();
        let values: Option<Vec<f64>> =
            xyz.iter().chain([&d_col]).map(|&c| row.get(c).and_then(|v| v.parse::<f64>().ok())).collect();
        let Some(scan) = by_series.values_mut().find(|s| s.series_uid == id || s.name == id || s.study_uid == id)
        else {
            notes.push(format!("nodules.csv line {}: no series {id:?} in the folder", line + 2));
            continue;
        };
        match values {
            Some(v) if v.iter().all(|x| x.is_finite()) && v[3] > 0.0 => {
                scan.lesions.push(eval::Lesion { center_mm: [v[0], v[1], v[2]], diameter_mm: v[3] })
            }
            // A row with the scan but no coordinates: a scan without nodules.
            _ if row.iter().enumerate().all(|(i, c)| i == id_col || c.is_empty()) => {}
            _ => notes.push(format!("nodules.csv line {}: unreadable centre or diameter", line + 2)),
        }
    }
    Ok(CtSet { scans: by_series.into_values().collect(), notes })
}

fn eval_ct(
    registry: &Registry,
    manifest: &ModelManifest,
    set: &CtSet,
    options: &EvalOptions,
    tick: &mut dyn FnMut(usize),
    cancel: &AtomicBool,
) -> Result<ModelEval> {
    let mut session = registry.open(&manifest.id).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ctx = JobContext::detached();
    let mut skipped = Vec::new();
    let mut cases = Vec::new();
    let mut case_scores = Vec::new();
    for scan in &set.scans {
        anyhow::ensure!(!cancel.load(Ordering::Relaxed), "cancelled");
        let detected = (|| -> Result<Vec<eval::Candidate>> {
            let vol = load_stack(&scan.files, |plan| {
                anyhow::ensure!(plan.slices.len() > 1, "one image is not a CT stack");
                anyhow::ensure!(
                    plan.spacing_source == Some(pacs::SpacingSource::PixelSpacing),
                    "no Pixel Spacing: sizes in mm are unknown"
                );
                Ok(())
            })?;
            let hu = vol.to_modality_f32();
            let volume = crate::ai::hu_volume(&vol, &hu)?;
            let found = inference::ct::detect(&mut session, &volume, &ctx).map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(found
                .into_iter()
                .map(|c| eval::Candidate { center_mm: c.center_patient_mm, score: f64::from(c.score) })
                .collect())
        })();
        match detected {
            Ok(candidates) => {
                case_scores.push(CaseScores {
                    case: scan.name.clone(),
                    scores: Vec::new(),
                    candidates: candidates.clone(),
                });
                cases.push(ScanCase { lesions: scan.lesions.clone(), candidates });
            }
            Err(e) => skipped.push(format!("{}: {e:#}", scan.name)),
        }
        tick(1);
    }
    let froc = eval::froc(&cases, &FrocOptions::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Scan level: does the scan hold a nodule, scored by its best candidate.
    let y: Vec<bool> = cases.iter().map(|c| !c.lesions.is_empty()).collect();
    let s: Vec<f64> = cases.iter().map(|c| c.candidates.iter().map(|k| k.score).fold(0.0, f64::max)).collect();
    let threshold = manifest.labels.first().map_or(0.5, |l| f64::from(l.threshold));
    let metrics = eval::binary_metrics(&y, &s, threshold, options.target_sensitivity, &options.bootstrap)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let label = manifest.labels.first().map_or_else(|| "nodule".to_owned(), |l| l.name.clone());
    Ok(ModelEval {
        model_id: manifest.id.clone(),
        model_name: manifest.name.clone(),
        model_version: manifest.version.clone(),
        task: "ct_detection".into(),
        cases: cases.len(),
        skipped,
        labels: vec![LabelEval { label, index: 0, reference: "scan has a nodule".into(), metrics }],
        not_labelled: Vec::new(),
        froc: Some(froc),
        denoise: None,
        case_scores,
    })
}

// ------------------------------------------------------------------------------------------------
// CT denoising

/// A low-dose series and its reference, as folders relative to the data folder.
struct Pair {
    low: PathBuf,
    reference: PathBuf,
    /// The low-dose folder as written in `pairs.csv`.
    name: String,
}

fn read_pairs(dir: &Path, pairs_csv: &Path) -> Result<Vec<Pair>> {
    let (header, rows) = read_csv(pairs_csv)?;
    let low = column(&header, &["low", "quarter", "input", "low dose"])
        .with_context(|| format!("{}: no low-dose column (low, quarter, input)", pairs_csv.display()))?;
    let reference = column(&header, &["reference", "routine", "full", "full dose"])
        .with_context(|| format!("{}: no reference column (reference, routine, full)", pairs_csv.display()))?;
    let mut pairs = Vec::new();
    for (line, row) in rows.iter().enumerate() {
        let (Some(l), Some(r)) = (row.get(low).filter(|v| !v.is_empty()), row.get(reference).filter(|v| !v.is_empty()))
        else {
            anyhow::bail!("{} line {}: a low-dose and a reference folder are needed", pairs_csv.display(), line + 2);
        };
        pairs.push(Pair { low: dir.join(l), reference: dir.join(r), name: l.clone() });
    }
    anyhow::ensure!(!pairs.is_empty(), "{} lists no pairs", pairs_csv.display());
    Ok(pairs)
}

/// The first image stack of `files`, loaded after `check` accepts its plan (headers only).
fn load_stack(files: &[PathBuf], check: impl Fn(&pacs::StackPlan) -> Result<()>) -> Result<pacs::volume::Volume> {
    let threads = pacs::volume::default_threads();
    anyhow::ensure!(!files.is_empty(), "no DICOM files");
    let plan = pacs::volume::scan_series(files, threads)?.into_iter().next().context("no image stack")?;
    check(&plan)?;
    Ok(pacs::volume::load_stack(plan, threads, None)?)
}

fn eval_denoise(
    registry: &Registry,
    manifest: &ModelManifest,
    pairs: &[Pair],
    tick: &mut dyn FnMut(usize),
    cancel: &AtomicBool,
) -> Result<ModelEval> {
    let mut session = registry.open(&manifest.id).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ctx = JobContext::detached();
    let window = ImageWindow::CHEST;
    let mut per_slice = Vec::new();
    let mut skipped = Vec::new();
    let mut done = 0usize;
    for pair in pairs {
        anyhow::ensure!(!cancel.load(Ordering::Relaxed), "cancelled");
        let measured = (|| -> Result<Vec<SliceQuality>> {
            let in_folder = |folder: &Path, what: &str| {
                load_stack(&crate::info::list_files(folder), |_| Ok(()))
                    .with_context(|| format!("{what} series in {}", folder.display()))
            };
            let (low, reference) = (in_folder(&pair.low, "low-dose")?, in_folder(&pair.reference, "reference")?);
            anyhow::ensure!(
                low.dims() == reference.dims(),
                "the low-dose series is {:?} voxels, the reference {:?}",
                low.dims(),
                reference.dims()
            );
            let (input, truth) = (low.to_modality_f32(), reference.to_modality_f32());
            let volume = crate::ai::hu_volume(&low, &input)?;
            let output = inference::ct::denoise(&mut session, &volume, 8, &ctx).map_err(|e| anyhow::anyhow!("{e}"))?;
            let [nx, ny, nz] = low.dims();
            let quality = |test: &[f32], reference: &[f32]| -> Result<Quality> {
                Ok(Quality {
                    psnr_db: eval::psnr(reference, test, nx, ny, &window)?.unwrap_or(f64::INFINITY),
                    ssim: eval::ssim(reference, test, nx, ny, &window)?,
                })
            };
            (0..nz)
                .map(|z| {
                    let r = z * nx * ny..(z + 1) * nx * ny;
                    Ok(SliceQuality {
                        case: pair.name.clone(),
                        slice: z,
                        input: quality(&input[r.clone()], &truth[r.clone()])?,
                        output: quality(&output[r.clone()], &truth[r])?,
                    })
                })
                .collect()
        })();
        match measured {
            Ok(slices) => {
                per_slice.extend(slices);
                done += 1;
            }
            Err(e) => skipped.push(format!("{}: {e:#}", pair.name)),
        }
        tick(1);
    }
    anyhow::ensure!(!per_slice.is_empty(), "no pair could be evaluated: {}", skipped.join("; "));
    let mean = |f: &dyn Fn(&SliceQuality) -> Quality| {
        let n = per_slice.len() as f64;
        Quality {
            psnr_db: per_slice.iter().map(|s| f(s).psnr_db).sum::<f64>() / n,
            ssim: per_slice.iter().map(|s| f(s).ssim).sum::<f64>() / n,
        }
    };
    let denoise = DenoiseEval {
        window,
        pairs: done,
        slices: per_slice.len(),
        input: mean(&|s| s.input),
        output: mean(&|s| s.output),
        per_slice,
    };
    Ok(ModelEval {
        model_id: manifest.id.clone(),
        model_name: manifest.name.clone(),
        model_version: manifest.version.clone(),
        task: "ct_denoise".into(),
        cases: done,
        skipped,
        labels: Vec::new(),
        not_labelled: Vec::new(),
        froc: None,
        denoise: Some(denoise),
        case_scores: Vec::new(),
    })
}

// ------------------------------------------------------------------------------------------------
// Text

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
}

/// `0.580 (0.52-0.64)`.
pub fn auroc_text(m: &BinaryMetrics) -> String {
    match (m.auroc, m.auroc_ci95) {
        (Some(a), Some([lo, hi])) => format!("{a:.3} ({lo:.2}-{hi:.2})"),
        (a, _) => num(a, 3),
    }
}

/// The threshold for the target sensitivity and the specificity there: `0.123 (spec 0.40)`.
pub fn target_text(m: &BinaryMetrics) -> String {
    m.at_target_sensitivity
        .map_or_else(|| "n/a".to_owned(), |o| format!("{:.3} (spec {})", o.threshold, num(o.specificity, 2)))
}

/// The human-readable table.
pub fn format_table(report: &EvalReport) -> String {
    let mut s = String::new();
    for m in &report.models {
        s += &format!(
            "{} {} on {} ({} {}{})\n",
            m.model_id,
            m.model_version,
            report.data,
            m.cases,
            match m.task.as_str() {
                "cxr" => "images",
                "ct_denoise" => "pairs",
                _ => "scans",
            },
            if m.skipped.is_empty() { String::new() } else { format!(", {} skipped", m.skipped.len()) }
        );
        if let Some(d) = &m.denoise {
            s += &format!(
                "  {} slices, HU window [{}, {}]: PSNR dB / SSIM against the reference\n",
                d.slices, d.window.min_hu, d.window.max_hu
            );
            s += &format!("  {:<20} {:>8.2} / {:.3}\n", "low-dose input", d.input.psnr_db, d.input.ssim);
            s += &format!(
                "  {:<20} {:>8.2} / {:.3}  ({:+.2} dB, {:+.3})\n",
                "denoised",
                d.output.psnr_db,
                d.output.ssim,
                d.output.psnr_db - d.input.psnr_db,
                d.output.ssim - d.input.ssim
            );
            for k in m.skipped.iter().take(5) {
                s += &format!("  skipped {k}\n");
            }
            continue;
        }
        s += &format!(
            "  {:<36} {:>9}  {:<18} {:>6} {:>5} {:>5} {:>5}  thr@sens {:.2}\n",
            "label (reference)", "pos/neg", "AUROC (95% CI)", "thr", "sens", "spec", "PPV", report.target_sensitivity
        );
        for l in &m.labels {
            let name = if norm(&l.label) == norm(&l.reference) {
                l.label.clone()
            } else {
                format!("{} ({})", l.label, l.reference)
            };
            let x = &l.metrics;
            s += &format!(
                "  {:<36} {:>9}  {:<18} {:>6.3} {:>5} {:>5} {:>5}  {}\n",
                name,
                format!("{}/{}", x.positives, x.negatives),
                auroc_text(x),
                x.threshold,
                num(x.sensitivity, 2),
                num(x.specificity, 2),
                num(x.ppv, 2),
                target_text(x),
            );
        }
        if !m.not_labelled.is_empty() {
            s += &format!("  not labelled: {}\n", m.not_labelled.join(", "));
        }
        if let Some(f) = &m.froc {
            s += &format!(
                "  FROC: {} lesion(s) in {} scan(s), {} candidate(s); sensitivity at FPs/scan ",
                f.lesions, f.scans, f.candidates
            );
            let at: Vec<String> = f.at_fp_rates.iter().map(|(r, v)| format!("{r}: {v:.2}")).collect();
            s += &format!("{}; CPM {}\n", at.join(", "), num(f.cpm, 3));
        }
        for k in m.skipped.iter().take(5) {
            s += &format!("  skipped {k}\n");
        }
    }
    for n in &report.notes {
        s += &format!("note: {n}\n");
    }
    s += &format!("{}\n", report.disclaimer);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn nih_and_synthetic_columns_meet_the_manifest_labels() {
        let nih =
            header(&["image", "view", "Nodule", "Mass", "Consolidation", "Effusion", "Infiltration", "no_finding"]);
        let labels = header(&["Nodule", "Mass", "Consolidation", "Effusion", "Infiltration", "no_finding"]);
        assert_eq!(reference_for("Nodule", &nih, &labels), Some(Reference::Column(2)));
        assert_eq!(reference_for("Pleural effusion", &nih, &labels), Some(Reference::Column(5)));
        assert_eq!(reference_for("Interstitial opacity", &nih, &labels), None, "Infiltration is not mapped");
        assert_eq!(reference_for("Abnormal", &nih, &labels), Some(Reference::NotColumn(7)));
        assert_eq!(reference_for("Pneumothorax", &nih, &labels), None);
        let synth = header(&["id", "nodule", "effusion", "interstitial_opacity", "abnormal", "bits_stored"]);
        let labels = header(&["nodule", "effusion", "interstitial_opacity", "abnormal"]);
        assert_eq!(reference_for("Interstitial opacity", &synth, &labels), Some(Reference::Column(3)));
        assert_eq!(reference_for("Abnormal", &synth, &labels), Some(Reference::Column(4)));
        assert_eq!(reference_for("Pleural effusion", &synth, &labels), Some(Reference::Column(2)));
    }

    #[test]
    fn csv_lines_flags_and_names() {
        assert_eq!(split_csv(r#"a, "b,c" ,"d""e",,"#), vec!["a", "b,c", "d\"e", "", ""]);
        assert_eq!(
            (flag("1"), flag("0"), flag("True"), flag(""), flag("2")),
            (Some(true), Some(false), Some(true), None, None)
        );
        assert_eq!(norm(" No_Finding "), "no finding");
        assert_eq!(norm("Pleural-Effusion"), "pleural effusion");
    }
}
