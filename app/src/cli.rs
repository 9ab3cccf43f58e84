//! The `lucent` command line: every capability is scriptable, over the same library code the GUI uses.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use pacs::store::{Store, StudyQuery};

use crate::config;

/// Lucent — AI radiology reading workstation (second reader; research and demonstration).
#[derive(Debug, Parser)]
#[command(name = "lucent", version, about)]
pub struct Cli {
    /// Study store directory (default: $LUCENT_STORE, else the user's data folder).
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,

    /// Open the workstation on the bundled demo studies.
    #[arg(long)]
    pub demo: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import files, folders (recursive), DICOMDIRs or ZIP archives into the store.
    Import {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Describe the patients, studies and series in a file or folder (without importing).
    Info {
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List the studies in the store.
    Ls {
        /// Text to search in patient name, ID, accession and description.
        #[arg(long)]
        search: Option<String>,
        #[arg(long)]
        patient_id: Option<String>,
        #[arg(long)]
        modality: Option<String>,
        /// Study date range YYYYMMDD-YYYYMMDD (either side may be empty).
        #[arg(long)]
        date: Option<String>,
        /// Also list each study's series.
        #[arg(long)]
        series: bool,
        #[arg(long)]
        json: bool,
    },
    /// Generate the demo studies into the demo store (the GUI's --demo does this too).
    Demo {
        /// Where to put the demo store (default: the user's data folder).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// List the AI models found (repository, beside the binary, the user's models folder) and their status.
    Models {
        #[arg(long)]
        json: bool,
    },
    /// Run the applicable AI models on a file or folder and report findings, nodules and Lung-RADS.
    Read {
        path: PathBuf,
        /// Run only this model.
        #[arg(long)]
        model: Option<String>,
        /// Write the report as JSON to this file.
        #[arg(long, value_name = "OUT.json")]
        json: Option<PathBuf>,
        /// Write derived series (denoised CT) under this folder.
        #[arg(long, value_name = "DIR")]
        derived: Option<PathBuf>,
        /// Also run models marked test-only (toy models for Lucent's own tests).
        #[arg(long)]
        include_test_models: bool,
        #[command(flatten)]
        exports: crate::report_cli::ReadExportArgs,
    },
    /// Write de-identified copies of DICOM files or folders (DICOM PS3.15 Annex E Basic
    /// Application Level Confidentiality Profile; UIDs remapped with a site key).
    Anonymize {
        /// A file or folder to de-identify.
        input: PathBuf,
        /// The folder the copies go to (OUT/<study>/<series>/<instance>.dcm, new UIDs).
        output: PathBuf,
        /// The site key (at least 16 bytes); default: deid.key in Lucent's data folder.
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// Keep dates, shifted (Retain Longitudinal Temporal Information, Modified Dates): `auto`
        /// (the default when given) shifts each patient by their own keyed number of days, a number
        /// shifts everyone by that many days.
        #[arg(long, value_name = "auto|DAYS", num_args = 0..=1, default_missing_value = "auto")]
        date_shift: Option<String>,
        /// Also de-identify images that have or may have burned-in annotation (their pixels are not
        /// cleaned: check them by eye).
        #[arg(long)]
        include_burned_in: bool,
        #[arg(long)]
        json: bool,
    },
    /// Check that the store's index and files agree.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Write synthetic chest radiographs with lesion masks and labels (training data for the CXR model).
    SynthCxr(crate::synth_cli::SynthCxrArgs),
    /// Write synthetic chest CT scans with nodules (`nodules.csv`) or routine / quarter-dose pairs
    /// simulated in the projection domain (`pairs.csv`): evaluation sets for `lucent eval`.
    SynthCt(crate::synth_cli::SynthCtArgs),
    /// Score many radiographs (DICOM or PNG) with one CXR model through Lucent's pipeline, as CSV.
    ScoreCxr(crate::synth_cli::ScoreCxrArgs),
    /// Evaluate models on a labelled folder: per-finding AUROC (95% bootstrap CI), sensitivity,
    /// specificity and PPV at the manifest threshold, the threshold for a sensitivity, FROC for CT nodules.
    Eval(crate::eval_cli::EvalArgs),
    /// Check the CT nodule measurement against real nodules with reference masks (the LIDC
    /// patches of `ct-nodule-patches/`): Dice, long-axis and volume errors at 1 mm and thicker slices.
    EvalNoduleMeasure(crate::eval_measure::MeasureEvalArgs),
    /// Talk to PACS nodes (DIMSE): echo, find, get, move, store, and the saved nodes.
    Pacs(crate::pacs_cli::PacsArgs),
    /// Run Lucent's Store SCP (receives C-STORE pushes into the store) until interrupted.
    Scp(crate::pacs_cli::ScpArgs),
    /// Check the report store's audit log (hash chain).
    #[command(subcommand)]
    Audit(crate::report_cli::AuditCommand),
    /// Reports: list, show, sign, addenda, user profiles, QA statistics.
    #[command(subcommand)]
    Report(crate::report_cli::ReportCommand),
}

/// Parses `FROM-TO` (YYYYMMDD each, either may be empty).
pub fn parse_date_range(text: &str) -> Result<(String, String)> {
    let (from, to) = text.split_once('-').unwrap_or((text, text));
    for d in [from, to] {
        anyhow::ensure!(
            d.is_empty() || (d.len() == 8 && d.chars().all(|c| c.is_ascii_digit())),
            "dates are YYYYMMDD, got {d:?}"
        );
    }
    Ok((from.to_owned(), to.to_owned()))
}

pub fn run(cli: Cli) -> Result<()> {
    let store_dir = config::store_dir(cli.store.clone());
    match cli.command {
        None => anyhow::bail!("no command"),
        Some(Command::Import { paths, json, threads }) => {
            let mut store =
                Store::open(&store_dir).with_context(|| format!("opening store {}", store_dir.display()))?;
            let options = pacs::import::ImportOptions {
                threads: threads.unwrap_or_else(pacs::volume::default_threads),
                ..Default::default()
            };
            let cancel = AtomicBool::new(false);
            let tty = std::io::stderr().is_terminal();
            let last = std::sync::Mutex::new(Instant::now());
            let progress = |p: pacs::import::ImportProgress| {
                let Ok(mut last) = last.lock() else { return };
                if p.done == p.total || last.elapsed() > Duration::from_millis(if tty { 100 } else { 2000 }) {
                    *last = Instant::now();
                    let line = format!(
                        "{}/{} files: {} imported, {} already in store, {} kept aside, {} skipped",
                        p.done, p.total, p.imported, p.duplicates, p.conflicts, p.skipped
                    );
                    if tty { eprint!("\r{line}") } else { eprintln!("{line}") }
                }
            };
            let summary = pacs::import::import_paths(&mut store, &paths, &options, &progress, &cancel)?;
            if tty {
                eprintln!();
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                println!(
                    "Imported {} instance(s) ({:.1} MB) in {:.1} s: {} patient(s), {} stud(ies), {} series; {} already in store; {} kept aside as conflicts; {} skipped.",
                    summary.imported,
                    summary.bytes as f64 / 1e6,
                    summary.elapsed_secs,
                    summary.patients,
                    summary.studies,
                    summary.series,
                    summary.duplicates,
                    summary.conflicts.len(),
                    summary.skipped.len()
                );
                for c in &summary.conflicts {
                    println!("  kept aside {} (instance {}): {}", c.path.display(), c.sop_instance_uid, c.kind);
                }
                for s in &summary.skipped {
                    println!("  skipped {}: {}", s.path, s.reason);
                }
            }
            Ok(())
        }
        Some(Command::Info { path, json }) => {
            anyhow::ensure!(path.exists(), "{} does not exist", path.display());
            let report = crate::info::inspect(&path, pacs::volume::default_threads());
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                crate::info::print_report(&report);
            }
            Ok(())
        }
        Some(Command::Ls { search, patient_id, modality, date, series, json }) => {
            let store = Store::open(&store_dir).with_context(|| format!("opening store {}", store_dir.display()))?;
            let (date_from, date_to) = date.as_deref().map(parse_date_range).transpose()?.unwrap_or_default();
            let query = StudyQuery {
                text: search.unwrap_or_default(),
                patient_id: patient_id.unwrap_or_default(),
                modality: modality.unwrap_or_default(),
                date_from,
                date_to,
                limit: None,
            };
            let studies = store.studies(&query)?;
            if json {
                let mut out = Vec::new();
                for s in &studies {
                    let mut v = serde_json::to_value(s)?;
                    if series {
                        v["series_list"] = serde_json::to_value(store.series(&s.study_uid)?)?;
                    }
                    out.push(v);
                }
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                let counts = store.counts()?;
                println!(
                    "Store {}: {} patient(s), {} stud(ies), {} series, {} instance(s)",
                    store_dir.display(),
                    counts.patients,
                    counts.studies,
                    counts.series,
                    counts.instances
                );
                for s in &studies {
                    println!(
                        "{:<8} {:<24} {:<12} {:<10} {:<28} {:>3} series {:>5} images",
                        s.study_date, s.patient_name, s.patient_id, s.modalities, s.description, s.series, s.instances
                    );
                    if series {
                        for r in store.series(&s.study_uid)? {
                            println!(
                                "         {:>4} {:<4} {:<30} {:>5} images  {}",
                                r.series_number.map(|n| n.to_string()).unwrap_or_default(),
                                r.modality,
                                r.description,
                                r.instances,
                                r.series_uid
                            );
                        }
                    }
                }
            }
            Ok(())
        }
        Some(Command::Demo { dir }) => {
            let dir = dir.unwrap_or_else(config::demo_store_dir);
            crate::demo::ensure_demo_store(&dir, &|step| eprintln!("{step}…"))?;
            let store = Store::open(&dir)?;
            let c = store.counts()?;
            println!(
                "Demo store {}: {} patient(s), {} stud(ies), {} instance(s)",
                dir.display(),
                c.patients,
                c.studies,
                c.instances
            );
            Ok(())
        }
        Some(Command::Models { json }) => {
            let registry = crate::ai::scan_registry();
            if json {
                let rows: Vec<serde_json::Value> = registry
                    .entries()
                    .iter()
                    .map(|e| {
                        let m = e.manifest.as_deref();
                        serde_json::json!({
                            "id": e.id(),
                            "name": m.map(|m| m.name.clone()),
                            "version": m.map(|m| m.version.clone()),
                            "modalities": m.map(|m| m.modalities.clone()),
                            "test_only": m.map(|m| m.test_only),
                            "intended_use": m.map(|m| m.intended_use.clone()),
                            "ready": e.status.is_ready(),
                            "reason": e.status.reason().map(ToString::to_string),
                            "manifest": e.manifest_path,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                if let Err(e) = inference::runtime::runtime() {
                    println!("ONNX Runtime: not available: {e}");
                }
                if registry.entries().is_empty() {
                    println!("No models found in {:?}", crate::ai::model_folders());
                }
                for e in registry.entries() {
                    let m = e.manifest.as_deref();
                    println!(
                        "{:<28} {:<8} {:<10} {}{}",
                        e.id(),
                        m.map(|m| m.version.as_str()).unwrap_or("?"),
                        m.map(|m| m.modalities.join(",")).unwrap_or_default(),
                        match e.status.reason() {
                            None => "ready".to_owned(),
                            Some(reason) => format!("REFUSED: {reason}"),
                        },
                        if m.is_some_and(|m| m.test_only) { "  (test only)" } else { "" }
                    );
                }
            }
            Ok(())
        }
        Some(Command::Read { path, model, json, derived, include_test_models, exports }) => {
            anyhow::ensure!(path.exists(), "{} does not exist", path.display());
            let options = crate::ai::ReadOptions { model, include_test_models, derived_dir: derived };
            let report = crate::ai::read_path(&path, &options)?;
            if let Some(out) = json {
                std::fs::write(&out, serde_json::to_string_pretty(&report)?)
                    .with_context(|| format!("writing {}", out.display()))?;
            }
            println!("{}", report.disclaimer);
            for s in &report.series {
                println!("Series {} {} [{}]", s.modality, s.description, s.series_uid);
                for m in &s.models {
                    match &m.error {
                        None => println!(
                            "  model {} {} ({})",
                            m.model_id,
                            m.model_version,
                            m.execution_provider.as_deref().unwrap_or("?")
                        ),
                        Some(e) => println!("  model {} {}: FAILED: {e}", m.model_id, m.model_version),
                    }
                }
                for f in &s.findings {
                    println!(
                        "  {:<24} {:.3} (threshold {:.2}) {}  [{} {}]{}",
                        f.label,
                        f.score,
                        f.threshold,
                        if f.positive { "POSITIVE" } else { "negative" },
                        f.model_id,
                        f.model_version,
                        if f.shown_by_default {
                            ""
                        } else {
                            "  (not shown by default: not validated on real patients)"
                        }
                    );
                }
                for n in &s.nodules {
                    match &n.measurement {
                        Some(m) => println!(
                            "  nodule at ({:.1}, {:.1}, {:.1}) mm: {:?}, {:.1} x {:.1} mm (mean {:.1}), {:.0} mm3, Lung-RADS {}",
                            m.centroid_patient_mm[0],
                            m.centroid_patient_mm[1],
                            m.centroid_patient_mm[2],
                            m.nodule_type,
                            m.axes.long_axis_mm,
                            m.axes.short_axis_mm,
                            m.axes.mean_diameter_mm,
                            m.volume_mm3,
                            n.lung_rads.as_deref().unwrap_or("?")
                        ),
                        None => {
                            let why = n.measurement_error.as_deref().unwrap_or("");
                            println!(
                                "  nodule candidate (score {:.2}): not measurable: {}",
                                n.candidate.score,
                                why.strip_prefix("not measurable: ").unwrap_or(why)
                            );
                        }
                    }
                }
                if let Some(l) = &s.lung_rads {
                    println!("  Lung-RADS {} ({}): {}", l.category, l.descriptor, l.management);
                }
                if !s.derived_series.is_empty() {
                    println!("  derived series: {} files", s.derived_series.len());
                }
                for note in &s.notes {
                    println!("  note: {note}");
                }
            }
            crate::report_cli::after_read(&path, &report, &exports, &store_dir)
        }
        Some(Command::SynthCxr(args)) => crate::synth_cli::synth_cxr(&args),
        Some(Command::SynthCt(args)) => crate::synth_cli::synth_ct(&args),
        Some(Command::ScoreCxr(args)) => crate::synth_cli::score_cxr(&args),
        Some(Command::Eval(args)) => crate::eval_cli::run(&args),
        Some(Command::EvalNoduleMeasure(args)) => crate::eval_measure::run(&args).map(|_| ()),
        Some(Command::Pacs(args)) => crate::pacs_cli::run_pacs(&args, &store_dir),
        Some(Command::Scp(args)) => crate::pacs_cli::run_scp(&args, &store_dir),
        Some(Command::Audit(command)) => crate::report_cli::audit(&command, &store_dir),
        Some(Command::Report(command)) => crate::report_cli::run(&command, &store_dir),
        Some(Command::Anonymize { input, output, key_file, date_shift, include_burned_in, json }) => {
            anyhow::ensure!(input.exists(), "{} does not exist", input.display());
            let date_shift = crate::anonymize::parse_date_shift(date_shift.as_deref())?;
            let summary = crate::anonymize::anonymize_paths(
                std::slice::from_ref(&input),
                &output,
                key_file.as_deref(),
                date_shift,
                include_burned_in,
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                println!(
                    "De-identified {} file(s) into {} (key {}); {} left out for burned-in annotation; {} skipped.",
                    summary.written.len(),
                    output.display(),
                    summary.key_file.display(),
                    summary.excluded_burned_in.len(),
                    summary.skipped.len()
                );
                for n in &summary.excluded_burned_in {
                    println!("  left out {}: {} (--include-burned-in to include)", n.source.display(), n.reason);
                }
                for n in &summary.skipped {
                    println!("  skipped {}: {}", n.source.display(), n.reason);
                }
            }
            Ok(())
        }
        Some(Command::Verify { json }) => {
            let store = Store::open(&store_dir)?;
            let report = store.check_consistency()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{} indexed instance(s); {} broken row(s), {} row(s) whose file names another patient, study or series, {} orphan file(s), {} temp file(s): {}",
                    report.indexed,
                    report.broken_rows.len(),
                    report.mismatched_rows.len(),
                    report.orphan_files.len(),
                    report.temp_files.len(),
                    if report.is_consistent() { "consistent" } else { "INCONSISTENT" }
                );
                for m in &report.mismatched_rows {
                    println!(
                        "  instance {}: the file's {} differ from the index",
                        m.sop_instance_uid,
                        m.fields.join(", ")
                    );
                }
                for uid in &report.broken_rows {
                    println!("  instance {uid}: file missing, unreadable or of another instance");
                }
                println!("{} instance(s) kept aside as conflicts, waiting for review.", report.conflicts.len());
                for c in &report.conflicts {
                    println!("  {} (instance {}): {}", c.path.display(), c.sop_instance_uid, c.kind);
                }
            }
            anyhow::ensure!(report.is_consistent(), "the store is inconsistent");
            anyhow::ensure!(
                report.conflicts.is_empty(),
                "{} instance(s) are kept aside as conflicts and need review",
                report.conflicts.len()
            );
            Ok(())
        }
    }
}
