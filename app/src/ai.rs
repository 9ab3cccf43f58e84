//! Glue between the imaging layer and the models: turns `pacs` images and volumes into the
//! plain arrays `inference` takes, picks the models that apply to a series, and gathers their
//! outputs (findings, nodules with measurements, Lung-RADS, denoised series) with provenance.
//! Lucent is a second reader: everything here is a proposal for a radiologist.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use inference::ct::{HuSamples, HuVolume, MeasureParams, NoduleCandidate, NoduleMeasurement};
use inference::lungrads::{self, SizeBasis};
use inference::manifest::PreprocessingKind;
use inference::{Finding, GreyImage, GreySamples, JobContext, ModelManifest, PixelSpacing, Registry, SessionOptions};
use pacs::volume::{self, Volume};
use pacs::{DecodedImage, Samples};
use serde::Serialize;

/// The statement every AI output carries.
pub const DISCLAIMER: &str =
    "Research and demonstration only; not for diagnosis. AI results are proposals for a radiologist to confirm.";

/// Where models are looked for: `$LUCENT_MODELS`, the repository's `models/` (development
/// builds), `models/` beside the executable, and the user's models folder.
pub fn model_folders() -> Vec<PathBuf> {
    let mut folders = Vec::new();
    if let Some(dir) = std::env::var_os("LUCENT_MODELS").filter(|d| !d.is_empty()) {
        folders.push(PathBuf::from(dir));
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    if repo.is_dir() {
        folders.push(repo);
    }
    if let Some(exe_dir) = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)) {
        let beside = exe_dir.join("models");
        if beside.is_dir() {
            folders.push(beside);
        }
    }
    if let Some(user) = inference::registry::user_models_dir() {
        folders.push(user);
    }
    folders
}

/// Scans every model folder (checksums, session contracts).
pub fn scan_registry() -> Registry {
    Registry::scan(&model_folders(), SessionOptions::default())
}

/// A loaded stack as the CT pipelines' input: `hu` (from [`Volume::to_modality_f32`]) with the
/// volume's dimensions, spacing and patient geometry.
pub fn hu_volume<'a>(vol: &Volume, hu: &'a [f32]) -> Result<HuVolume<'a>> {
    HuVolume::new(HuSamples::F32(hu), vol.dims(), vol.plan.spacing_mm, vol.plan.patient_from_voxel)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// A decoded radiograph as the CXR pipeline's input.
pub fn grey_image(image: &DecodedImage) -> Result<GreyImage> {
    let frame = &image.frame;
    anyhow::ensure!(
        frame.photometric.is_monochrome(),
        "the image is colour; the chest X-ray models need a grey radiograph"
    );
    let n = frame.pixel_count();
    let samples = match &frame.samples {
        Samples::U16(v) => GreySamples::U16(v.clone()),
        Samples::U8(v) => GreySamples::U16(v.iter().map(|&x| u16::from(x)).collect()),
        other => GreySamples::F32((0..n).map(|i| image.transform.modality.apply(other.get_f64(i)) as f32).collect()),
    };
    let voi = match image.transform.default_voi(frame) {
        pacs::Voi::Window(w) => Some(inference::cxr::Window { center: w.center, width: w.width }),
        pacs::Voi::Table(_) => None,
    };
    Ok(GreyImage {
        width: frame.columns as usize,
        height: frame.rows as usize,
        samples,
        bits_stored: frame.bits_stored.clamp(1, 16) as u8,
        monochrome1: frame.photometric == pacs::Photometric::Monochrome1,
        voi,
        pixel_spacing: image.info.spacing().map(|s| PixelSpacing {
            row_mm: s.row_mm,
            column_mm: s.column_mm,
            calibrated: s.source.is_calibrated(),
        }),
    })
}

/// A nodule with its measurements and Lung-RADS category.
#[derive(Debug, Clone, Serialize)]
pub struct NoduleReport {
    pub candidate: NoduleCandidate,
    pub measurement: Option<NoduleMeasurement>,
    pub measurement_error: Option<String>,
    pub lung_rads: Option<String>,
}

/// Lung-RADS for the exam.
#[derive(Debug, Clone, Serialize)]
pub struct LungRadsReport {
    pub category: String,
    pub descriptor: String,
    pub management: String,
    pub note: Option<String>,
}

/// A model that ran (or could not) on a series.
#[derive(Debug, Clone, Serialize)]
pub struct ModelRun {
    pub model_id: String,
    pub model_name: String,
    pub model_version: String,
    pub execution_provider: Option<String>,
    pub error: Option<String>,
}

/// All AI outputs for one series.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SeriesReading {
    pub series_uid: String,
    pub modality: String,
    pub description: String,
    pub models: Vec<ModelRun>,
    pub findings: Vec<Finding>,
    pub nodules: Vec<NoduleReport>,
    pub lung_rads: Option<LungRadsReport>,
    /// Files of the denoised (derived) series, when written.
    pub derived_series: Vec<PathBuf>,
    pub notes: Vec<String>,
}

/// The result of `lucent read`.
#[derive(Debug, Clone, Serialize)]
pub struct ReadReport {
    pub disclaimer: &'static str,
    pub series: Vec<SeriesReading>,
}

/// Options of a reading.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Only this model.
    pub model: Option<String>,
    /// Also run models marked test-only.
    pub include_test_models: bool,
    /// Where to write derived (denoised) series; none are written without it.
    pub derived_dir: Option<PathBuf>,
}

/// Whether a model runs on a series: its modality must be one the manifest accepts, and test-only
/// models run only when asked for (by id or by `include_test_models`).
fn applies(manifest: &ModelManifest, modality: &str, options: &ReadOptions) -> bool {
    let accepts = manifest.modalities.iter().any(|m| m == modality);
    match &options.model {
        Some(id) => manifest.id == *id && accepts,
        None => accepts && manifest.run_by_default && (!manifest.test_only || options.include_test_models),
    }
}

/// Runs every applicable ready model on every series under `path`.
pub fn read_path(path: &Path, options: &ReadOptions) -> Result<ReadReport> {
    inference::runtime::runtime().map_err(|e| anyhow::anyhow!("{e}"))?;
    let registry = scan_registry();
    if let Some(id) = &options.model {
        let entry = registry.get(id).with_context(|| format!("no model with id {id:?} (see `lucent models`)"))?;
        if let Some(reason) = entry.status.reason() {
            anyhow::bail!("model {id} is not usable: {reason}");
        }
    }
    let files = crate::info::list_files(path);
    let threads = volume::default_threads();
    let infos = pacs::file::read_infos(&files, threads);
    let mut by_series: std::collections::BTreeMap<String, Vec<PathBuf>> = std::collections::BTreeMap::new();
    for (file, info) in files.iter().zip(infos) {
        if let Ok(info) = info
            && info.has_pixel_data
        {
            by_series.entry(info.series_instance_uid).or_default().push(file.clone());
        }
    }
    anyhow::ensure!(!by_series.is_empty(), "no DICOM images under {}", path.display());
    let mut report = ReadReport { disclaimer: DISCLAIMER, series: Vec::new() };
    for (series_uid, paths) in by_series {
        report.series.push(read_series(&registry, series_uid, &paths, options));
    }
    Ok(report)
}

/// Runs every applicable ready model on one series (its files in `paths`).
pub fn read_series(registry: &Registry, series_uid: String, paths: &[PathBuf], options: &ReadOptions) -> SeriesReading {
    let mut reading = SeriesReading { series_uid, ..Default::default() };
    let plans = match volume::scan_series(paths, volume::default_threads()) {
        Ok(p) => p,
        Err(e) => {
            reading.notes.push(format!("cannot read the series: {e}"));
            return reading;
        }
    };
    let Some(plan) = plans.into_iter().next() else { return reading };
    let first = plan.slices[0].info().clone();
    reading.modality = first.modality.clone();
    reading.description = first.series_description.clone();
    let models: Vec<Arc<ModelManifest>> =
        registry.ready().filter_map(|e| e.manifest.clone()).filter(|m| applies(m, &first.modality, options)).collect();
    if let Some(id) = &options.model
        && let Some(m) = registry.get(id).and_then(|e| e.manifest.clone())
        && !m.modalities.contains(&first.modality)
    {
        reading.notes.push(format!(
            "model {id} does not accept {} images (it accepts {})",
            first.modality,
            m.modalities.join(", ")
        ));
        return reading;
    }
    if models.is_empty() {
        reading.notes.push(format!(
            "no ready model applies to modality {}{}",
            first.modality,
            if options.include_test_models { "" } else { " (test-only models are skipped; see `lucent models`)" }
        ));
        return reading;
    }
    let mut volume: Option<Volume> = None;
    for manifest in models {
        let mut run = ModelRun {
            model_id: manifest.id.clone(),
            model_name: manifest.name.clone(),
            model_version: manifest.version.clone(),
            execution_provider: None,
            error: None,
        };
        let result = (|| -> Result<()> {
            let mut session = registry.open(&manifest.id).map_err(|e| anyhow::anyhow!("{e}"))?;
            run.execution_provider = Some(session.execution_provider().to_owned());
            let ctx = JobContext::detached();
            match manifest.preprocessing.kind {
                PreprocessingKind::Cxr => {
                    let image = pacs::file::load_image(&plan.slices[0].path, plan.slices[0].frame)?;
                    let grey = grey_image(&image)?;
                    let result =
                        inference::cxr::analyze(&mut session, &grey, &ctx).map_err(|e| anyhow::anyhow!("{e}"))?;
                    reading.findings.extend(result.findings);
                }
                PreprocessingKind::CtSlice | PreprocessingKind::CtVolume => {
                    anyhow::ensure!(
                        plan.slices.len() > 1,
                        "a CT model needs a stack of slices; this series has one image"
                    );
                    anyhow::ensure!(
                        plan.spacing_source == Some(pacs::SpacingSource::PixelSpacing),
                        "the series has no Pixel Spacing: CT models need sizes in mm and will not guess them"
                    );
                    if volume.is_none() {
                        volume = Some(volume::load_stack(plan.clone(), volume::default_threads(), None)?);
                    }
                    let vol = volume.as_ref().context("the volume was not loaded")?;
                    let hu = vol.to_modality_f32();
                    let hu_volume = hu_volume(vol, &hu)?;
                    if manifest.preprocessing.kind == PreprocessingKind::CtSlice {
                        let Some(dir) = &options.derived_dir else {
                            reading.notes.push(format!(
                                "{} can denoise this series: pass --derived DIR to write it",
                                manifest.id
                            ));
                            return Ok(());
                        };
                        let denoised = inference::ct::denoise(&mut session, &hu_volume, 8, &ctx)
                            .map_err(|e| anyhow::anyhow!("{e}"))?;
                        let spec = pacs::derive::DerivedSeries {
                            uid_seed: format!("{}:{}", manifest.id, manifest.version),
                            series_description: format!(
                                "{} [denoised by {} {}]",
                                first.series_description, manifest.id, manifest.version
                            ),
                            derivation: format!(
                                "Denoised by {} {} (Lucent; research use only)",
                                manifest.id, manifest.version
                            ),
                            series_number: first.series_number.unwrap_or(0) + 100,
                        };
                        let out = dir
                            .join(pacs::synth::uid(&format!("derived-dir:{}:{}", spec.uid_seed, reading.series_uid)));
                        reading.derived_series = pacs::derive::write_derived_series(&vol.plan, &denoised, &spec, &out)?;
                    } else {
                        let candidates = inference::ct::detect(&mut session, &hu_volume, &ctx)
                            .map_err(|e| anyhow::anyhow!("{e}"))?;
                        let mut lung_rads_inputs = Vec::new();
                        for candidate in candidates {
                            let measured =
                                inference::ct::measure(&hu_volume, candidate.center_voxel, &MeasureParams::default());
                            let (measurement, measurement_error, lung_rads) = match measured {
                                Ok(m) => {
                                    let findings = lungrads::findings_from_measurement(&m);
                                    let category = lungrads::classify_nodule(&findings, SizeBasis::MeanDiameter)
                                        .category
                                        .code()
                                        .to_owned();
                                    lung_rads_inputs.push(findings);
                                    (Some(m), None, Some(category))
                                }
                                Err(e) => (None, Some(e.to_string()), None),
                            };
                            reading.nodules.push(NoduleReport { candidate, measurement, measurement_error, lung_rads });
                        }
                        let exam = lungrads::classify_exam(&lung_rads_inputs, SizeBasis::MeanDiameter);
                        reading.lung_rads = Some(LungRadsReport {
                            category: exam.category.code().to_owned(),
                            descriptor: exam.category.descriptor().to_owned(),
                            management: exam.management.to_owned(),
                            note: exam.note,
                        });
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            run.error = Some(format!("{e:#}"));
        }
        reading.models.push(run);
    }
    reading
}
