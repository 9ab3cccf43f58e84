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
    /// Check that the store's index and files agree.
    Verify {
        #[arg(long)]
        json: bool,
    },
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
                        "{}/{} files: {} imported, {} already in store, {} skipped",
                        p.done, p.total, p.imported, p.duplicates, p.skipped
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
                    "Imported {} instance(s) ({:.1} MB) in {:.1} s: {} patient(s), {} stud(ies), {} series; {} already in store; {} skipped.",
                    summary.imported,
                    summary.bytes as f64 / 1e6,
                    summary.elapsed_secs,
                    summary.patients,
                    summary.studies,
                    summary.series,
                    summary.duplicates,
                    summary.skipped.len()
                );
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
        Some(Command::Verify { json }) => {
            let store = Store::open(&store_dir)?;
            let report = store.check_consistency()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{} indexed instance(s); {} broken row(s), {} orphan file(s), {} temp file(s): {}",
                    report.indexed,
                    report.broken_rows.len(),
                    report.orphan_files.len(),
                    report.temp_files.len(),
                    if report.is_consistent() { "consistent" } else { "INCONSISTENT" }
                );
            }
            anyhow::ensure!(report.is_consistent(), "the store is inconsistent");
            Ok(())
        }
    }
}
