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
use crate::store::{Conflict, Store, StoredCopy, StoredInstance, validate_identity};

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
    /// Instances kept aside as conflicts (see [`crate::store::Conflict`]).
    pub conflicts: usize,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportSummary {
    pub files_seen: usize,
    pub imported: usize,
    pub duplicates: usize,
    pub skipped: Vec<Skipped>,
    /// Instances kept aside instead of filed: same SOP Instance UID with other content, or a
    /// study or series that the store holds under another patient or study.
    pub conflicts: Vec<Conflict>,
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
                            // A bug must cost one file, never the import of all the others.
                            Ok(reader) => {
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| import_one(reader, &source)))
                                    .unwrap_or_else(|_| {
                                        Outcome::Skipped(Skipped {
                                            path: source.label(),
                                            reason: "internal error while reading this file (reported as a bug)".into(),
                                        })
                                    })
                            }
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
                let indexed = store.index(&batch)?;
                state.imported += indexed.added;
                state.duplicates += indexed.duplicates;
                state.conflicts += indexed.conflicts.len();
                summary.conflicts.extend(indexed.conflicts);
                batch.clear();
                last_flush = Instant::now();
            }
            progress(state);
        }
        if !batch.is_empty() {
            let indexed = store.index(&batch)?;
            state.imported += indexed.added;
            state.duplicates += indexed.duplicates;
            state.conflicts += indexed.conflicts.len();
            summary.conflicts.extend(indexed.conflicts);
            progress(state);
        }
        Ok(())
    });
    writer_result?;
    summary.imported = state.imported;
    summary.duplicates = state.duplicates;
    summary.conflicts.sort_by(|a, b| a.sop_instance_uid.cmp(&b.sop_instance_uid));
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
            // Already stored: a duplicate only when the bytes are the same; otherwise the copy
            // below is kept aside as a conflict (never dropped, never filed over the other).
            match store.stored_copy_of_file(&info.sop_instance_uid, path) {
                Ok(StoredCopy::Identical) => return Outcome::Duplicate(Box::new(info)),
                Ok(StoredCopy::Absent | StoredCopy::Different) => {}
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
            match store.stored_copy(&info.sop_instance_uid, &bytes) {
                Ok(StoredCopy::Identical) => return Outcome::Duplicate(Box::new(info)),
                Ok(StoredCopy::Absent | StoredCopy::Different) => {}
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
    } else {
        validate_identity(info).err().map(|e| format!("{e}: the patient and study it belongs to cannot be known"))
    }
}

fn read_zip_entry(archive: &Path, name: &str) -> Result<Vec<u8>> {
    let zip_err = |e: zip::result::ZipError| Error::Zip { path: archive.to_path_buf(), detail: e.to_string() };
    let file = std::fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(zip_err)?;
    let entry = zip.by_name(name).map_err(zip_err)?;
    // The inflated size is capped whatever the archive declares: a declared size over the limit
    // is refused at once, and an entry that inflates past what it declared is cut off and refused.
    let limit = crate::limits::Limits::current().max_zip_entry_bytes;
    let declared = entry.size();
    let too_big =
        |size| Error::LimitExceeded { what: "inflated ZIP entry", size, limit, setting: "LUCENT_MAX_ZIP_ENTRY_MB" };
    if declared > limit {
        return Err(too_big(declared));
    }
    let mut bytes = Vec::with_capacity(declared as usize);
    entry.take(declared + 1).read_to_end(&mut bytes).map_err(|e| Error::io(archive, e))?;
    if bytes.len() as u64 > declared {
        return Err(Error::Zip {
            path: archive.to_path_buf(),
            detail: format!("entry {name} inflates past the {declared} bytes it declares"),
        });
    }
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

/// The entries of an archive, refused whole when what they declare inflated passes the archive's
/// budget: a gigabyte, or 200 times the archive's own size when that is more (DICOM compresses
/// far less than that; a zip bomb far more).
fn zip_entries(archive: &Path) -> Result<Vec<String>> {
    let file = std::fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
    let archive_bytes = file.metadata().map_err(|e| Error::io(archive, e))?.len();
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| Error::Zip { path: archive.to_path_buf(), detail: e.to_string() })?;
    let names: Vec<String> = zip.file_names().filter(|n| !n.ends_with('/')).map(str::to_owned).collect();
    let budget = (1u64 << 30).max(archive_bytes.saturating_mul(200));
    let mut declared = 0u64;
    for i in 0..zip.len() {
        if let Ok(entry) = zip.by_index_raw(i) {
            declared = declared.saturating_add(entry.size());
        }
    }
    if declared > budget {
        return Err(Error::LimitExceeded {
            what: "inflated ZIP archive",
            size: declared,
            limit: budget,
            setting: "the archive budget: 1 GiB or 200 x its size",
        });
    }
    Ok(names)
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
