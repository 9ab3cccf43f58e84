//! Import into the local store: files, folders (recursive), DICOMDIR and ZIP archives.
//!
//! Worker threads (`lucent-import-N`) read headers and copy files into the store; one writer
//! (the calling thread) indexes them in batches. Channels are bounded; progress is reported
//! after every file; cancellation stops between files and leaves the store consistent.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dicom_dictionary_std::tags;
use serde::Serialize;

use crate::attrs::{InstanceInfo, items, string};
use crate::error::{Error, Result};
use crate::file;
use crate::store::{Store, StoredInstance};

/// SOP Class of a DICOMDIR (Media Storage Directory Storage).
const MEDIA_STORAGE_DIRECTORY: &str = "1.2.840.10008.1.3.10";

/// One thing to import.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    File(PathBuf),
    ZipEntry { archive: PathBuf, name: String },
}

impl Source {
    fn label(&self) -> String {
        match self {
            Self::File(p) => p.display().to_string(),
            Self::ZipEntry { archive, name } => format!("{}!{name}", archive.display()),
        }
    }
}

/// A file that was not imported, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// Progress of an import, reported after every file.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ImportProgress {
    pub total: usize,
    pub done: usize,
    pub imported: usize,
    pub duplicates: usize,
    pub skipped: usize,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportSummary {
    pub files_seen: usize,
    pub imported: usize,
    pub duplicates: usize,
    pub skipped: Vec<Skipped>,
    pub patients: usize,
    pub studies: usize,
    pub series: usize,
    pub bytes: u64,
    pub elapsed_secs: f64,
    pub cancelled: bool,
}

enum Outcome {
    Stored(Box<StoredInstance>),
    Duplicate(Box<InstanceInfo>),
    Skipped(Skipped),
}

/// Import options.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub threads: usize,
    /// Index in transactions of this many instances.
    pub batch: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self { threads: crate::volume::default_threads(), batch: 64 }
    }
}

/// Imports `paths` (files, folders, DICOMDIRs, ZIPs) into `store`.
pub fn import_paths(
    store: &mut Store,
    paths: &[PathBuf],
    options: &ImportOptions,
    progress: &(dyn Fn(ImportProgress) + Sync),
    cancel: &AtomicBool,
) -> Result<ImportSummary> {
    let started = Instant::now();
    let mut summary = ImportSummary::default();
    let mut sources = BTreeSet::new();
    for path in paths {
        collect_sources(path, &mut sources, &mut summary.skipped)?;
    }
    let sources: Vec<Source> = sources.into_iter().collect();
    summary.files_seen = sources.len() + summary.skipped.len();
    let mut state = ImportProgress {
        total: summary.files_seen,
        skipped: summary.skipped.len(),
        done: summary.skipped.len(),
        ..Default::default()
    };
    progress(state);

    let root = store.root().to_path_buf();
    let queue = Mutex::new(sources.into_iter());
    let (tx, rx) = crossbeam_channel::bounded::<Outcome>(options.threads.max(1) * 8);
    let mut patients = BTreeSet::new();
    let mut studies = BTreeSet::new();
    let mut series = BTreeSet::new();

    let writer_result: Result<()> = std::thread::scope(|scope| {
        for t in 0..options.threads.max(1) {
            let tx = tx.clone();
            let (queue, root) = (&queue, &root);
            std::thread::Builder::new()
                .name(format!("lucent-import-{t}"))
                .spawn_scoped(scope, move || {
                    let writer = Store::open_reader(root);
                    loop {
                        if cancel.load(Ordering::Relaxed) {
                            break;
                        }
                        let next = match queue.lock() {
                            Ok(mut q) => q.next(),
                            Err(_) => None,
                        };
                        let Some(source) = next else { break };
                        let outcome = match &writer {
                            Ok(reader) => import_one(reader, &source),
                            Err(e) => Outcome::Skipped(Skipped { path: source.label(), reason: e.to_string() }),
                        };
                        if tx.send(outcome).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| Error::io(root, e))?;
        }
        drop(tx);

        let mut batch: Vec<StoredInstance> = Vec::with_capacity(options.batch);
        let mut last_flush = Instant::now();
        for outcome in rx.iter() {
            state.done += 1;
            match outcome {
                Outcome::Stored(stored) => {
                    summary.bytes += stored.size_bytes;
                    note(&stored.info, &mut patients, &mut studies, &mut series);
                    batch.push(*stored);
                }
                Outcome::Duplicate(info) => {
                    state.duplicates += 1;
                    note(&info, &mut patients, &mut studies, &mut series);
                }
                Outcome::Skipped(s) => {
                    state.skipped += 1;
                    summary.skipped.push(s);
                }
            }
            if batch.len() >= options.batch || (!batch.is_empty() && last_flush.elapsed() > Duration::from_millis(500))
            {
                let added = store.index(&batch)?;
                state.imported += added;
                state.duplicates += batch.len() - added;
                batch.clear();
                last_flush = Instant::now();
            }
            progress(state);
        }
        if !batch.is_empty() {
            let added = store.index(&batch)?;
            state.imported += added;
            state.duplicates += batch.len() - added;
            progress(state);
        }
        Ok(())
    });
    writer_result?;
    summary.imported = state.imported;
    summary.duplicates = state.duplicates;
    summary.patients = patients.len();
    summary.studies = studies.len();
    summary.series = series.len();
    summary.cancelled = cancel.load(Ordering::Relaxed);
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    summary.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(summary)
}

fn note(
    info: &InstanceInfo,
    patients: &mut BTreeSet<String>,
    studies: &mut BTreeSet<String>,
    series: &mut BTreeSet<String>,
) {
    patients.insert(format!("{}\u{0}{}", info.patient_id, info.patient_name));
    studies.insert(info.study_instance_uid.clone());
    series.insert(info.series_instance_uid.clone());
}

fn import_one(store: &Store, source: &Source) -> Outcome {
    let skip = |reason: String| Outcome::Skipped(Skipped { path: source.label(), reason });
    match source {
        Source::File(path) => {
            match file::has_part10_prefix(path) {
                Ok(true) => {}
                Ok(false) => return skip("not a DICOM file (no DICM prefix)".into()),
                Err(e) => return skip(e.to_string()),
            }
            let info = match file::read_info(path) {
                Ok(info) => info,
                Err(e) => return skip(e.to_string()),
            };
            if let Some(reason) = refuse(&info) {
                return skip(reason);
            }
            match store.contains(&info.sop_instance_uid) {
                Ok(true) => return Outcome::Duplicate(Box::new(info)),
                Ok(false) => {}
                Err(e) => return skip(e.to_string()),
            }
            match store.copy_file(&info, path) {
                Ok(stored) => Outcome::Stored(Box::new(stored)),
                Err(e) => skip(e.to_string()),
            }
        }
        Source::ZipEntry { archive, name } => {
            let bytes = match read_zip_entry(archive, name) {
                Ok(b) => b,
                Err(e) => return skip(e.to_string()),
            };
            if !(bytes.len() >= 132 && &bytes[128..132] == b"DICM") {
                return skip("not a DICOM file (no DICM prefix)".into());
            }
            let info = match file::open_bytes(&bytes).and_then(|o| file::info(&o)) {
                Ok(info) => info,
                Err(e) => return skip(e.to_string()),
            };
            if let Some(reason) = refuse(&info) {
                return skip(reason);
            }
            match store.contains(&info.sop_instance_uid) {
                Ok(true) => return Outcome::Duplicate(Box::new(info)),
                Ok(false) => {}
                Err(e) => return skip(e.to_string()),
            }
            match store.write_file(&info, &bytes) {
                Ok(stored) => Outcome::Stored(Box::new(stored)),
                Err(e) => skip(e.to_string()),
            }
        }
    }
}

/// Objects the store does not take, with the reason.
fn refuse(info: &InstanceInfo) -> Option<String> {
    if info.sop_class_uid == MEDIA_STORAGE_DIRECTORY {
        Some("DICOMDIR index (the files it references are imported)".into())
    } else if info.study_instance_uid.is_empty() || info.series_instance_uid.is_empty() {
        Some("missing Study or Series Instance UID".into())
    } else {
        None
    }
}

fn read_zip_entry(archive: &Path, name: &str) -> Result<Vec<u8>> {
    let zip_err = |e: zip::result::ZipError| Error::Zip { path: archive.to_path_buf(), detail: e.to_string() };
    let file = std::fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(zip_err)?;
    let mut entry = zip.by_name(name).map_err(zip_err)?;
    let mut bytes = Vec::with_capacity(entry.size().min(1 << 30) as usize);
    entry.read_to_end(&mut bytes).map_err(|e| Error::io(archive, e))?;
    Ok(bytes)
}

fn is_zip(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == *b"PK\x03\x04"
}

fn is_dicomdir(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n.eq_ignore_ascii_case("DICOMDIR"))
}

fn collect_sources(path: &Path, out: &mut BTreeSet<Source>, skipped: &mut Vec<Skipped>) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        for entry in walkdir::WalkDir::new(path).follow_links(true).sort_by_file_name() {
            match entry {
                Ok(e) if e.file_type().is_file() => collect_file(e.path(), out, skipped),
                Ok(_) => {}
                Err(e) => skipped.push(Skipped {
                    path: e.path().map(|p| p.display().to_string()).unwrap_or_default(),
                    reason: e.to_string(),
                }),
            }
        }
    } else {
        collect_file(path, out, skipped);
    }
    Ok(())
}

fn collect_file(path: &Path, out: &mut BTreeSet<Source>, skipped: &mut Vec<Skipped>) {
    if is_dicomdir(path) {
        match dicomdir_files(path) {
            Ok(files) => out.extend(files.into_iter().map(Source::File)),
            Err(e) => {
                skipped.push(Skipped { path: path.display().to_string(), reason: format!("unreadable DICOMDIR: {e}") })
            }
        }
    } else if is_zip(path) {
        match zip_entries(path) {
            Ok(names) => {
                out.extend(names.into_iter().map(|name| Source::ZipEntry { archive: path.to_path_buf(), name }))
            }
            Err(e) => skipped.push(Skipped { path: path.display().to_string(), reason: e.to_string() }),
        }
    } else {
        out.insert(Source::File(path.to_path_buf()));
    }
}

fn zip_entries(archive: &Path) -> Result<Vec<String>> {
    let file = std::fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
    let zip =
        zip::ZipArchive::new(file).map_err(|e| Error::Zip { path: archive.to_path_buf(), detail: e.to_string() })?;
    Ok(zip.file_names().filter(|n| !n.ends_with('/')).map(str::to_owned).collect())
}

/// Files referenced by a DICOMDIR's directory records (Referenced File ID), relative to its folder.
pub fn dicomdir_files(path: &Path) -> Result<Vec<PathBuf>> {
    let obj = file::open(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut files = Vec::new();
    for record in items(&obj, tags::DIRECTORY_RECORD_SEQUENCE) {
        let Some(elem) = record.get(tags::REFERENCED_FILE_ID) else { continue };
        let Ok(parts) = elem.to_multi_str() else { continue };
        let parts: Vec<&str> = parts
            .iter()
            .flat_map(|s| s.split('\\'))
            .map(str::trim)
            .filter(|part| !part.is_empty() && *part != "..")
            .collect();
        let mut p: PathBuf = parts.iter().fold(base.to_path_buf(), |p, part| p.join(part));
        // File IDs are upper case on media; accept a lower-case copy on case-sensitive disks.
        if !p.exists() {
            let lower = parts.iter().fold(base.to_path_buf(), |p, part| p.join(part.to_lowercase()));
            if lower.exists() {
                p = lower;
            }
        }
        if string(record, tags::DIRECTORY_RECORD_TYPE).is_some() {
            files.push(p);
        }
    }
    Ok(files)
}
