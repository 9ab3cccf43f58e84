//! The local study store: DICOM files under a directory the user chooses, indexed in SQLite.
//!
//! Layout: `<root>/index.sqlite` (WAL mode), `<root>/files/<study>/<series>/<sop>.dcm`,
//! `<root>/conflicts/` for instances kept aside, and `<root>/tmp/<writer>/` for writes in flight.
//! A file is written to its writer's temp folder, fsynced, linked into place (never over an
//! existing file), its directory fsynced, and only then indexed: a crash leaves at worst an
//! unindexed file (re-imported next time) or a temp file, never an index row without its file.
//! Network receivers stage files on parallel writer threads (write, fsync) and commit them in
//! batches ([`StoreFiles::stage`], [`StoreFiles::commit`]): the links, then one fsync per
//! directory rather than one per file, then the index.
//!
//! # Whose patient a file is
//! The patient, study and series a file is filed under come from the file's own header and are
//! never guessed: an instance without SOP, Study or Series Instance UID is refused
//! ([`validate_identity`]). A placement never replaces a file: an instance whose SOP Instance UID
//! is already stored is a duplicate only when its bytes are identical. Otherwise, and when a
//! study already belongs to another patient or a series to another study, the new instance is a
//! [`Conflict`]: kept aside in `conflicts/`, recorded in the index, and listed by
//! [`Store::conflicts`] and [`Store::check_consistency`] until someone decides.
//!
//! # Temp files
//! Each process writes in its own `tmp/<pid>-<nonce>/` folder and holds an exclusive lock on
//! its `lock` file while it lives. Opening a store removes only the folders whose lock is free
//! (their writer is gone), so no process deletes another's writes in flight.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use crate::attrs::InstanceInfo;
use crate::error::{Error, Result};
use crate::file;

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS patients (
    patient_key  INTEGER PRIMARY KEY,
    patient_id   TEXT NOT NULL,
    patient_name TEXT NOT NULL,
    birth_date   TEXT NOT NULL DEFAULT '',
    sex          TEXT NOT NULL DEFAULT '',
    UNIQUE (patient_id, patient_name)
);
CREATE TABLE IF NOT EXISTS studies (
    study_uid    TEXT PRIMARY KEY,
    patient_key  INTEGER NOT NULL REFERENCES patients(patient_key),
    study_date   TEXT NOT NULL DEFAULT '',
    study_time   TEXT NOT NULL DEFAULT '',
    description  TEXT NOT NULL DEFAULT '',
    accession    TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS series (
    series_uid   TEXT PRIMARY KEY,
    study_uid    TEXT NOT NULL REFERENCES studies(study_uid),
    modality     TEXT NOT NULL DEFAULT '',
    series_number INTEGER,
    description  TEXT NOT NULL DEFAULT '',
    body_part    TEXT NOT NULL DEFAULT '',
    frame_of_reference TEXT NOT NULL DEFAULT '',
    view_position TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid      TEXT PRIMARY KEY,
    series_uid   TEXT NOT NULL REFERENCES series(series_uid),
    sop_class    TEXT NOT NULL DEFAULT '',
    instance_number INTEGER,
    transfer_syntax TEXT NOT NULL DEFAULT '',
    rel_path     TEXT NOT NULL,
    size_bytes   INTEGER NOT NULL,
    rows         INTEGER NOT NULL DEFAULT 0,
    columns      INTEGER NOT NULL DEFAULT 0,
    frames       INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS measurements (
    id           INTEGER PRIMARY KEY,
    study_uid    TEXT NOT NULL,
    series_uid   TEXT NOT NULL,
    sop_uid      TEXT NOT NULL,
    frame        INTEGER NOT NULL DEFAULT 0,
    kind         TEXT NOT NULL,
    points_json  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS conflicts (
    id           INTEGER PRIMARY KEY,
    sop_uid      TEXT NOT NULL,
    study_uid    TEXT NOT NULL,
    series_uid   TEXT NOT NULL,
    kind         TEXT NOT NULL,
    rel_path     TEXT NOT NULL,
    size_bytes   INTEGER NOT NULL,
    detected_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS measurements_by_study ON measurements(study_uid);
CREATE INDEX IF NOT EXISTS studies_by_patient ON studies(patient_key);
CREATE INDEX IF NOT EXISTS studies_by_date ON studies(study_date);
CREATE INDEX IF NOT EXISTS series_by_study ON series(study_uid);
CREATE INDEX IF NOT EXISTS instances_by_series ON instances(series_uid);
";

/// A file placed in the store, ready to be indexed: in its place under `files/`, or kept aside
/// under `conflicts/` when `conflict` says why.
#[derive(Debug, Clone)]
pub struct StoredInstance {
    pub info: InstanceInfo,
    pub rel_path: String,
    pub size_bytes: u64,
    /// Set when the file could not go in its place (see [`ConflictKind`]).
    pub conflict: Option<ConflictKind>,
}

/// Why an instance was kept aside instead of filed. (No patient data: the kind only.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictKind {
    /// Same SOP Instance UID as a stored instance, different bytes.
    DifferentContent,
    /// Same SOP Instance UID as a stored instance of another study or series.
    InstanceElsewhere,
    /// The study is stored under another patient (Patient ID or Patient's Name differ).
    StudyOfOtherPatient,
    /// The series is stored under another study.
    SeriesOfOtherStudy,
}

impl ConflictKind {
    fn key(self) -> &'static str {
        match self {
            Self::DifferentContent => "different_content",
            Self::InstanceElsewhere => "instance_elsewhere",
            Self::StudyOfOtherPatient => "study_of_other_patient",
            Self::SeriesOfOtherStudy => "series_of_other_study",
        }
    }

    fn from_key(key: &str) -> Option<Self> {
        [Self::DifferentContent, Self::InstanceElsewhere, Self::StudyOfOtherPatient, Self::SeriesOfOtherStudy]
            .into_iter()
            .find(|k| k.key() == key)
    }

    /// What happened, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Self::DifferentContent => "an instance with this SOP Instance UID is stored with different content",
            Self::InstanceElsewhere => "an instance with this SOP Instance UID is stored in another study or series",
            Self::StudyOfOtherPatient => "this study is stored under another patient (Patient ID or name differ)",
            Self::SeriesOfOtherStudy => "this series is stored under another study",
        }
    }
}

impl std::fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// An instance kept aside because filing it would have mixed patients, studies or contents.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Conflict {
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub kind: ConflictKind,
    /// Where the instance is kept (absolute).
    pub path: PathBuf,
    pub size_bytes: u64,
    /// Seconds since the Unix epoch.
    pub detected_at: i64,
}

/// How an instance compares with what the store holds under its SOP Instance UID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredCopy {
    /// Not stored.
    Absent,
    /// Stored with exactly these bytes.
    Identical,
    /// Stored with other bytes.
    Different,
}

/// What indexing a batch did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct IndexOutcome {
    /// New instances in the index.
    pub added: usize,
    /// Instances that were indexed already (identical files).
    pub duplicates: usize,
    /// Instances kept aside instead.
    pub conflicts: Vec<Conflict>,
}

/// Filters for listing studies. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct StudyQuery {
    /// Matches patient name, patient ID, accession or description (case-insensitive substring).
    pub text: String,
    pub patient_id: String,
    /// Inclusive YYYYMMDD bounds.
    pub date_from: String,
    pub date_to: String,
    pub modality: String,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PatientRow {
    pub patient_id: String,
    pub patient_name: String,
    pub birth_date: String,
    pub sex: String,
    pub studies: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StudyRow {
    pub study_uid: String,
    pub patient_id: String,
    pub patient_name: String,
    pub birth_date: String,
    pub sex: String,
    pub study_date: String,
    pub study_time: String,
    pub description: String,
    pub accession: String,
    /// Distinct modalities, sorted, joined with '\'.
    pub modalities: String,
    pub series: usize,
    pub instances: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SeriesRow {
    pub series_uid: String,
    pub study_uid: String,
    pub modality: String,
    pub series_number: Option<i64>,
    pub description: String,
    pub body_part: String,
    pub view_position: String,
    pub instances: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InstanceRow {
    pub sop_uid: String,
    pub sop_class: String,
    pub instance_number: Option<i64>,
    pub transfer_syntax: String,
    pub path: PathBuf,
    pub size_bytes: u64,
}

/// A measurement drawn on an image, as kept in the store (image pixel coordinates).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct MeasurementRecord {
    pub series_uid: String,
    pub sop_uid: String,
    pub frame: u32,
    /// "length", "angle", "ellipse" or "rectangle".
    pub kind: String,
    /// Control points (x, y) in image pixels.
    pub points: Vec<[f64; 2]>,
}

/// Totals of the store.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct StoreCounts {
    pub patients: usize,
    pub studies: usize,
    pub series: usize,
    pub instances: usize,
}

/// What a consistency check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConsistencyReport {
    pub indexed: usize,
    /// Index rows whose file is missing or unreadable, or whose SOP Instance UID differs.
    pub broken_rows: Vec<String>,
    /// Index rows whose file's own header names another patient, study or series than the index.
    pub mismatched_rows: Vec<IdentityMismatch>,
    /// Files under `files/` that no index row points at.
    pub orphan_files: Vec<PathBuf>,
    /// Leftover temp files of writers that are gone.
    pub temp_files: Vec<PathBuf>,
    /// Instances kept aside, waiting for a decision.
    pub conflicts: Vec<Conflict>,
}

/// An index row that disagrees with its file's header. (Field names only, no values.)
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IdentityMismatch {
    pub sop_instance_uid: String,
    /// Which of "patient_id", "patient_name", "study_instance_uid", "series_instance_uid" differ.
    pub fields: Vec<&'static str>,
}

impl ConsistencyReport {
    /// Index and files agree (conflicts kept aside are listed, not counted against this).
    pub fn is_consistent(&self) -> bool {
        self.broken_rows.is_empty()
            && self.mismatched_rows.is_empty()
            && self.orphan_files.is_empty()
            && self.temp_files.is_empty()
    }
}

/// Refuses an instance whose identity is not all in its header: the patient and study it
/// belongs to must never be guessed.
pub fn validate_identity(info: &InstanceInfo) -> Result<()> {
    let missing = [
        (info.sop_instance_uid.as_str(), "SOPInstanceUID"),
        (info.study_instance_uid.as_str(), "StudyInstanceUID"),
        (info.series_instance_uid.as_str(), "SeriesInstanceUID"),
    ]
    .into_iter()
    .find(|(v, _)| v.trim().is_empty());
    match missing {
        Some((_, name)) => Err(Error::MissingAttribute { name }),
        None => Ok(()),
    }
}

/// The store. One `Store` per thread; open more for readers (WAL allows concurrent reads).
pub struct Store {
    root: PathBuf,
    conn: Connection,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating if needed) the store at `root`, and removes the temp files of writers
    /// that are gone (never those of a live process: see the module docs).
    pub fn open(root: &Path) -> Result<Self> {
        for dir in [root.to_path_buf(), root.join("files"), root.join("tmp"), root.join("conflicts")] {
            create_private_dir(&dir)?;
        }
        // A leftover temp file is an interrupted write: its source will be imported again.
        for dead in abandoned_temp_files(&root.join("tmp")) {
            let _ = if dead.is_dir() { std::fs::remove_dir_all(&dead) } else { std::fs::remove_file(&dead) };
        }
        let conn = Connection::open(root.join("index.sqlite"))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        Ok(Self { root: root.to_path_buf(), conn })
    }

    /// A read-only connection to the same store (for worker threads).
    pub fn open_reader(root: &Path) -> Result<Self> {
        let conn = Connection::open_with_flags(
            root.join("index.sqlite"),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        Ok(Self { root: root.to_path_buf(), conn })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether an instance is already indexed.
    pub fn contains(&self, sop_uid: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM instances WHERE sop_uid = ?1")?
            .query_row([sop_uid], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// The relative path an instance is stored at.
    pub fn relative_path_for(info: &InstanceInfo) -> String {
        format!(
            "files/{}/{}/{}.dcm",
            safe_component(&info.study_instance_uid),
            safe_component(&info.series_instance_uid),
            safe_component(&info.sop_instance_uid)
        )
    }

    /// Writes `bytes` atomically at the instance's place in the store (not yet indexed); an
    /// existing file there is never replaced (see [`StoreFiles::write`]).
    pub fn write_file(&self, info: &InstanceInfo, bytes: &[u8]) -> Result<StoredInstance> {
        self.files().write(info, &[bytes])
    }

    /// The file an indexed instance is stored in.
    pub fn instance_path(&self, sop_uid: &str) -> Result<Option<PathBuf>> {
        Ok(self
            .conn
            .prepare_cached("SELECT rel_path FROM instances WHERE sop_uid = ?1")?
            .query_row([sop_uid], |r| r.get::<_, String>(0))
            .optional()?
            .map(|rel| self.root.join(rel)))
    }

    /// How `bytes` compare with the stored copy of the instance `sop_uid` (a stored file that
    /// cannot be read counts as different).
    pub fn stored_copy(&self, sop_uid: &str, bytes: &[u8]) -> Result<StoredCopy> {
        self.compare_stored(sop_uid, &mut std::io::Cursor::new(bytes))
    }

    /// How the file at `source` compares with the stored copy of the instance `sop_uid`.
    pub fn stored_copy_of_file(&self, sop_uid: &str, source: &Path) -> Result<StoredCopy> {
        let mut src = std::fs::File::open(source).map_err(|e| Error::io(source, e))?;
        self.compare_stored(sop_uid, &mut src)
    }

    fn compare_stored(&self, sop_uid: &str, other: &mut impl Read) -> Result<StoredCopy> {
        Ok(match self.instance_path(sop_uid)? {
            None => StoredCopy::Absent,
            Some(path) if same_content(&path, other).unwrap_or(false) => StoredCopy::Identical,
            Some(_) => StoredCopy::Different,
        })
    }

    /// A handle that writes files into this store from any thread (indexing stays with the `Store`).
    pub fn files(&self) -> StoreFiles {
        StoreFiles { root: self.root.clone() }
    }

    /// Copies a source file atomically into the store (not yet indexed); an existing file at
    /// its place is never replaced (see [`StoreFiles::write`]).
    pub fn copy_file(&self, info: &InstanceInfo, source: &Path) -> Result<StoredInstance> {
        let mut src = std::fs::File::open(source).map_err(|e| Error::io(source, e))?;
        self.files().write_with(info, |f| std::io::copy(&mut src, f))
    }

    /// Keeps a file aside as a conflict (not filed; recorded by [`Store::index`]).
    pub fn keep_aside(&self, info: &InstanceInfo, bytes: &[u8], kind: ConflictKind) -> Result<StoredInstance> {
        let files = self.files();
        let staged = files.stage(info, &[bytes])?;
        files.set_aside(info, &staged.tmp, staged.stored.size_bytes, kind)
    }

    /// Indexes placed files in one transaction. An instance already indexed at the same place is a
    /// duplicate; one that would mix patients, studies or series, or that was placed aside, is
    /// recorded as a [`Conflict`] (its file moved to `conflicts/`) and not indexed.
    pub fn index(&mut self, batch: &[StoredInstance]) -> Result<IndexOutcome> {
        let mut outcome = IndexOutcome::default();
        let files = StoreFiles { root: self.root.clone() };
        // Take the write lock first: the checks below and the inserts see one state of the index.
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut record_conflict = tx.prepare_cached(
                "INSERT INTO conflicts (sop_uid, study_uid, series_uid, kind, rel_path, size_bytes, detected_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut patient = tx.prepare_cached(
                "INSERT INTO patients (patient_id, patient_name, birth_date, sex) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (patient_id, patient_name) DO UPDATE SET
                   birth_date = CASE WHEN excluded.birth_date <> '' THEN excluded.birth_date ELSE birth_date END,
                   sex = CASE WHEN excluded.sex <> '' THEN excluded.sex ELSE sex END
                 RETURNING patient_key",
            )?;
            let mut study = tx.prepare_cached(
                "INSERT OR IGNORE INTO studies (study_uid, patient_key, study_date, study_time, description, accession)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut series = tx.prepare_cached(
                "INSERT OR IGNORE INTO series (series_uid, study_uid, modality, series_number, description, body_part, frame_of_reference, view_position)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut instance = tx.prepare_cached(
                "INSERT OR IGNORE INTO instances (sop_uid, series_uid, sop_class, instance_number, transfer_syntax, rel_path, size_bytes, rows, columns, frames)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for s in batch {
                let i = &s.info;
                validate_identity(i)?;
                let kind = match s.conflict {
                    Some(kind) => Some(kind),
                    None => identity_conflict(&tx, i, &s.rel_path)?,
                };
                if let Some(kind) = kind {
                    let aside = if s.conflict.is_some() { s.clone() } else { files.move_aside(s, kind)? };
                    let detected_at = unix_now();
                    record_conflict.execute(params![
                        i.sop_instance_uid,
                        i.study_instance_uid,
                        i.series_instance_uid,
                        kind.key(),
                        aside.rel_path,
                        aside.size_bytes as i64,
                        detected_at
                    ])?;
                    outcome.conflicts.push(Conflict {
                        sop_instance_uid: i.sop_instance_uid.clone(),
                        study_instance_uid: i.study_instance_uid.clone(),
                        series_instance_uid: i.series_instance_uid.clone(),
                        kind,
                        path: self.root.join(&aside.rel_path),
                        size_bytes: aside.size_bytes,
                        detected_at,
                    });
                    continue;
                }
                let key: i64 = patient
                    .query_row(params![i.patient_id, i.patient_name, i.patient_birth_date, i.patient_sex], |r| {
                        r.get(0)
                    })?;
                study.execute(params![
                    i.study_instance_uid,
                    key,
                    i.study_date,
                    i.study_time,
                    i.study_description,
                    i.accession_number
                ])?;
                series.execute(params![
                    i.series_instance_uid,
                    i.study_instance_uid,
                    i.modality,
                    i.series_number,
                    i.series_description,
                    i.body_part_examined,
                    i.frame_of_reference_uid,
                    i.view_position
                ])?;
                let added = instance.execute(params![
                    i.sop_instance_uid,
                    i.series_instance_uid,
                    i.sop_class_uid,
                    i.instance_number,
                    i.transfer_syntax_uid,
                    s.rel_path,
                    s.size_bytes as i64,
                    i.rows,
                    i.columns,
                    i.number_of_frames
                ])?;
                outcome.added += added;
                outcome.duplicates += 1 - added.min(1);
            }
        }
        tx.commit()?;
        Ok(outcome)
    }

    /// Stores and indexes one object from bytes. A conflict is kept aside and returned as
    /// [`Error::Conflict`].
    pub fn add_bytes(&mut self, bytes: &[u8]) -> Result<InstanceInfo> {
        let obj = file::open_bytes(bytes)?;
        let info = file::info(&obj)?;
        validate_identity(&info)?;
        let stored = self.write_file(&info, bytes)?;
        let outcome = self.index(&[stored])?;
        match outcome.conflicts.first() {
            Some(c) => Err(Error::Conflict { kind: c.kind, kept_at: c.path.clone() }),
            None => Ok(info),
        }
    }

    /// Whether filing `info` would conflict with what the index holds (a study of another
    /// patient, a series of another study, the SOP Instance UID stored elsewhere). A check ahead
    /// of time for receivers that answer before they index; [`Store::index`] checks again.
    pub fn precheck(&self, info: &InstanceInfo) -> Result<Option<ConflictKind>> {
        validate_identity(info)?;
        Ok(identity_conflict(&self.conn, info, &Self::relative_path_for(info))?)
    }

    /// The instances kept aside, oldest first.
    pub fn conflicts(&self) -> Result<Vec<Conflict>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT sop_uid, study_uid, series_uid, kind, rel_path, size_bytes, detected_at FROM conflicts ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Conflict {
                sop_instance_uid: r.get(0)?,
                study_instance_uid: r.get(1)?,
                series_instance_uid: r.get(2)?,
                kind: ConflictKind::from_key(&r.get::<_, String>(3)?).unwrap_or(ConflictKind::DifferentContent),
                path: self.root.join(r.get::<_, String>(4)?),
                size_bytes: r.get::<_, i64>(5)?.max(0) as u64,
                detected_at: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn counts(&self) -> Result<StoreCounts> {
        let count = |sql: &str| -> Result<usize> { Ok(self.conn.query_row(sql, [], |r| r.get::<_, i64>(0))? as usize) };
        Ok(StoreCounts {
            patients: count("SELECT COUNT(*) FROM patients")?,
            studies: count("SELECT COUNT(*) FROM studies")?,
            series: count("SELECT COUNT(*) FROM series")?,
            instances: count("SELECT COUNT(*) FROM instances")?,
        })
    }

    /// Patients with at least one study matching `query`.
    pub fn patients(&self, query: &StudyQuery) -> Result<Vec<PatientRow>> {
        let mut rows: Vec<PatientRow> = Vec::new();
        for study in self.studies(&StudyQuery { limit: None, ..query.clone() })? {
            match rows.iter_mut().find(|p| p.patient_id == study.patient_id && p.patient_name == study.patient_name) {
                Some(p) => p.studies += 1,
                None => rows.push(PatientRow {
                    patient_id: study.patient_id,
                    patient_name: study.patient_name,
                    birth_date: study.birth_date,
                    sex: study.sex,
                    studies: 1,
                }),
            }
        }
        rows.sort_by(|a, b| a.patient_name.cmp(&b.patient_name).then(a.patient_id.cmp(&b.patient_id)));
        Ok(rows)
    }

    /// Studies matching `query`, newest first.
    pub fn studies(&self, query: &StudyQuery) -> Result<Vec<StudyRow>> {
        let text = format!("%{}%", escape_like(&query.text.to_lowercase()));
        let modality = format!("%{}%", escape_like(&query.modality.to_uppercase()));
        let mut stmt = self.conn.prepare_cached(
            "SELECT s.study_uid, p.patient_id, p.patient_name, p.birth_date, p.sex, s.study_date, s.study_time,
                    s.description, s.accession,
                    (SELECT group_concat(m, '\\') FROM (SELECT DISTINCT modality AS m FROM series WHERE study_uid = s.study_uid ORDER BY m)),
                    (SELECT COUNT(*) FROM series WHERE study_uid = s.study_uid),
                    (SELECT COUNT(*) FROM instances i JOIN series r ON i.series_uid = r.series_uid WHERE r.study_uid = s.study_uid)
             FROM studies s JOIN patients p ON s.patient_key = p.patient_key
             WHERE (?1 = '%%' OR lower(p.patient_name) LIKE ?1 ESCAPE '!' OR lower(p.patient_id) LIKE ?1 ESCAPE '!'
                    OR lower(s.accession) LIKE ?1 ESCAPE '!' OR lower(s.description) LIKE ?1 ESCAPE '!')
               AND (?2 = '' OR p.patient_id = ?2)
               AND (?3 = '' OR s.study_date >= ?3)
               AND (?4 = '' OR s.study_date <= ?4)
               AND (?5 = '%%' OR EXISTS (SELECT 1 FROM series x WHERE x.study_uid = s.study_uid AND upper(x.modality) LIKE ?5 ESCAPE '!'))
             ORDER BY s.study_date DESC, s.study_time DESC, s.study_uid
             LIMIT ?6",
        )?;
        let limit = query.limit.map_or(-1, |l| l as i64);
        let rows =
            stmt.query_map(params![text, query.patient_id, query.date_from, query.date_to, modality, limit], |r| {
                Ok(StudyRow {
                    study_uid: r.get(0)?,
                    patient_id: r.get(1)?,
                    patient_name: r.get(2)?,
                    birth_date: r.get(3)?,
                    sex: r.get(4)?,
                    study_date: r.get(5)?,
                    study_time: r.get(6)?,
                    description: r.get(7)?,
                    accession: r.get(8)?,
                    modalities: r.get::<_, Option<String>>(9)?.unwrap_or_default(),
                    series: r.get::<_, i64>(10)? as usize,
                    instances: r.get::<_, i64>(11)? as usize,
                })
            })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Series of a study, by series number.
    pub fn series(&self, study_uid: &str) -> Result<Vec<SeriesRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT r.series_uid, r.study_uid, r.modality, r.series_number, r.description, r.body_part,
                    (SELECT COUNT(*) FROM instances i WHERE i.series_uid = r.series_uid), r.view_position
             FROM series r WHERE r.study_uid = ?1 ORDER BY r.series_number, r.series_uid",
        )?;
        let rows = stmt.query_map([study_uid], |r| {
            Ok(SeriesRow {
                series_uid: r.get(0)?,
                study_uid: r.get(1)?,
                modality: r.get(2)?,
                series_number: r.get(3)?,
                description: r.get(4)?,
                body_part: r.get(5)?,
                instances: r.get::<_, i64>(6)? as usize,
                view_position: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Instances of a series with absolute paths, by instance number.
    pub fn instances(&self, series_uid: &str) -> Result<Vec<InstanceRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT sop_uid, sop_class, instance_number, transfer_syntax, rel_path, size_bytes
             FROM instances WHERE series_uid = ?1 ORDER BY instance_number, sop_uid",
        )?;
        let rows = stmt.query_map([series_uid], |r| {
            Ok(InstanceRow {
                sop_uid: r.get(0)?,
                sop_class: r.get(1)?,
                instance_number: r.get(2)?,
                transfer_syntax: r.get(3)?,
                path: self.root.join(r.get::<_, String>(4)?),
                size_bytes: r.get::<_, i64>(5)? as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// File paths of a series.
    pub fn series_paths(&self, series_uid: &str) -> Result<Vec<PathBuf>> {
        Ok(self.instances(series_uid)?.into_iter().map(|i| i.path).collect())
    }

    /// Replaces the measurements kept for a study.
    pub fn save_measurements(&mut self, study_uid: &str, records: &[MeasurementRecord]) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM measurements WHERE study_uid = ?1", [study_uid])?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO measurements (study_uid, series_uid, sop_uid, frame, kind, points_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for r in records {
                let points =
                    serde_json::to_string(&r.points).map_err(|e| Error::invalid("measurement", e.to_string()))?;
                insert.execute(params![study_uid, r.series_uid, r.sop_uid, r.frame, r.kind, points])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The measurements kept for a study, in the order they were saved.
    pub fn measurements(&self, study_uid: &str) -> Result<Vec<MeasurementRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT series_uid, sop_uid, frame, kind, points_json FROM measurements WHERE study_uid = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([study_uid], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (series_uid, sop_uid, frame, kind, points) = row?;
            // A row that does not parse is skipped rather than failing the whole study.
            if let Ok(points) = serde_json::from_str(&points) {
                out.push(MeasurementRecord { series_uid, sop_uid, frame, kind, points });
            }
        }
        Ok(out)
    }

    /// Checks that the index and the files agree: every indexed file exists and its own header
    /// names the patient, study, series and instance the index files it under; no file is
    /// unindexed; no temp file of a dead writer is left; and lists the conflicts kept aside.
    /// Reads every header: use on demand, not at start-up.
    pub fn check_consistency(&self) -> Result<ConsistencyReport> {
        let mut report = ConsistencyReport::default();
        let mut indexed = std::collections::BTreeSet::new();
        let mut stmt = self.conn.prepare(
            "SELECT i.sop_uid, i.rel_path, i.series_uid, r.study_uid, p.patient_id, p.patient_name
             FROM instances i
             LEFT JOIN series r ON r.series_uid = i.series_uid
             LEFT JOIN studies s ON s.study_uid = r.study_uid
             LEFT JOIN patients p ON p.patient_key = s.patient_key
             ORDER BY i.sop_uid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })?;
        for row in rows {
            let (uid, rel, series_uid, study_uid, patient_id, patient_name) = row?;
            let path = self.root.join(&rel);
            match file::read_info(&path) {
                Ok(info) if info.sop_instance_uid == uid => {
                    let mut fields = Vec::new();
                    if study_uid.as_deref() != Some(info.study_instance_uid.as_str()) {
                        fields.push("study_instance_uid");
                    }
                    if series_uid != info.series_instance_uid {
                        fields.push("series_instance_uid");
                    }
                    if patient_id.as_deref() != Some(info.patient_id.as_str()) {
                        fields.push("patient_id");
                    }
                    if patient_name.as_deref() != Some(info.patient_name.as_str()) {
                        fields.push("patient_name");
                    }
                    if !fields.is_empty() {
                        report.mismatched_rows.push(IdentityMismatch { sop_instance_uid: uid.clone(), fields });
                    }
                }
                _ => report.broken_rows.push(uid),
            }
            indexed.insert(path);
            report.indexed += 1;
        }
        for entry in walkdir::WalkDir::new(self.root.join("files")).into_iter().flatten() {
            if entry.file_type().is_file() && !indexed.contains(entry.path()) {
                report.orphan_files.push(entry.path().to_path_buf());
            }
        }
        report.temp_files = abandoned_temp_files(&self.root.join("tmp"));
        report.conflicts = self.conflicts()?;
        Ok(report)
    }
}

/// Writes files into a store's folder from any thread, atomically (temp file, fsync, link into
/// place, directory fsync), without touching the index: pass the results to [`Store::index`].
/// A file already at an instance's place is never replaced: identical bytes go on to the index
/// (a duplicate, or an unindexed file from a crash), different bytes are kept aside as a
/// [`ConflictKind::DifferentContent`] conflict.
#[derive(Debug, Clone)]
pub struct StoreFiles {
    root: PathBuf,
}

impl StoreFiles {
    /// Writes the concatenation of `parts` (e.g. a Part 10 header and a received data set)
    /// at the instance's place in the store (not yet indexed).
    pub fn write(&self, info: &InstanceInfo, parts: &[&[u8]]) -> Result<StoredInstance> {
        let StagedFile { tmp, stored } = self.stage(info, parts)?;
        self.place_staged(tmp, stored)
    }

    /// Writes what `write` writes (returning its length) at the instance's place.
    fn write_with(
        &self,
        info: &InstanceInfo,
        write: impl FnOnce(&mut std::fs::File) -> std::io::Result<u64>,
    ) -> Result<StoredInstance> {
        let StagedFile { tmp, stored } = self.stage_with(info, write)?;
        self.place_staged(tmp, stored)
    }

    /// Puts one staged file in place and syncs its folder; other content already there keeps it
    /// aside as a conflict.
    fn place_staged(&self, tmp: PathBuf, stored: StoredInstance) -> Result<StoredInstance> {
        let dest = self.root.join(&stored.rel_path);
        let parent = dest.parent().unwrap_or(Path::new("."));
        match self.place(&tmp, &dest) {
            Ok(Placed::New) => {
                sync_dir(parent).map_err(|e| Error::io(parent, e))?;
                Ok(stored)
            }
            Ok(Placed::Identical) => Ok(stored),
            Ok(Placed::Differs) => {
                self.set_aside(&stored.info, &tmp, stored.size_bytes, ConflictKind::DifferentContent)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(Error::io(&dest, e))
            }
        }
    }

    /// Writes the concatenation of `parts` to a temp file of this process and fsyncs it, not yet
    /// in place: [`StoreFiles::commit`] a batch of them (the links, then one fsync per directory
    /// instead of one per file), then index it. Writer threads stage in parallel.
    pub fn stage(&self, info: &InstanceInfo, parts: &[&[u8]]) -> Result<StagedFile> {
        self.stage_with(info, |f| {
            parts.iter().try_for_each(|p| f.write_all(p))?;
            Ok(parts.iter().map(|p| p.len() as u64).sum())
        })
    }

    /// Writes a temp file of this process with `write` (which returns the length written) and
    /// fsyncs it; the temp file is removed again when anything fails.
    fn stage_with(
        &self,
        info: &InstanceInfo,
        write: impl FnOnce(&mut std::fs::File) -> std::io::Result<u64>,
    ) -> Result<StagedFile> {
        validate_identity(info)?;
        let rel_path = Store::relative_path_for(info);
        let tmp = self.temp_path()?;
        let written = (|| {
            let mut f = create_private_file(&tmp)?;
            let size = write(&mut f)?;
            f.sync_all()?;
            Ok(size)
        })();
        match written {
            Ok(size_bytes) => Ok(StagedFile {
                tmp,
                stored: StoredInstance { info: info.clone(), rel_path, size_bytes, conflict: None },
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(Error::io(self.root.join(&rel_path), e))
            }
        }
    }

    /// Puts staged (already synced) files in place: links each, then fsyncs each directory
    /// once. A crash before this returns leaves at worst temp files (removed when the store next
    /// opens) or whole but unindexed files in place. Returns the instances to index (conflicts
    /// kept aside among them, marked), and the ones that could not be placed with the reason.
    pub fn commit(&self, staged: Vec<StagedFile>) -> (Vec<StoredInstance>, Vec<(StoredInstance, String)>) {
        let (mut placed, mut failed) = (Vec::with_capacity(staged.len()), Vec::new());
        if staged.is_empty() {
            return (placed, failed);
        }
        let mut parents: Vec<PathBuf> = Vec::new();
        let mut aside = Vec::new();
        for file in staged {
            let dest = self.root.join(&file.stored.rel_path);
            let parent = dest.parent().unwrap_or(Path::new(".")).to_path_buf();
            match self.place(&file.tmp, &dest) {
                Ok(Placed::New) => {
                    if !parents.contains(&parent) {
                        parents.push(parent);
                    }
                    placed.push(file.stored);
                }
                Ok(Placed::Identical) => placed.push(file.stored),
                Ok(Placed::Differs) => {
                    let s = &file.stored;
                    match self.set_aside(&s.info, &file.tmp, s.size_bytes, ConflictKind::DifferentContent) {
                        Ok(kept) => aside.push(kept),
                        Err(e) => failed.push((file.stored, e.to_string())),
                    }
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&file.tmp);
                    failed.push((file.stored, e.to_string()));
                }
            }
        }
        // A new series folder's own entry is in its parent: sync that too (once).
        let mut dirs = parents.clone();
        for p in &parents {
            if let Some(up) = p.parent().filter(|up| !dirs.iter().any(|d| d == up)) {
                dirs.push(up.to_path_buf());
            }
        }
        if let Some(e) = dirs.iter().find_map(|d| sync_dir(d).err()) {
            failed.extend(placed.drain(..).map(|p| (p, e.to_string())));
        }
        placed.extend(aside);
        (placed, failed)
    }

    /// A new temp file path in this process's own temp folder.
    fn temp_path(&self) -> Result<PathBuf> {
        let dir = writer_dir(&self.root.join("tmp"))?;
        Ok(dir.join(format!("{}.tmp", TEMP_COUNTER.fetch_add(1, Ordering::Relaxed))))
    }

    /// Links `tmp` to `dest` unless something is there already (then compares the two). `tmp` is
    /// removed unless the answer is [`Placed::Differs`].
    fn place(&self, tmp: &Path, dest: &Path) -> std::io::Result<Placed> {
        let parent = dest.parent().unwrap_or(Path::new("."));
        create_private_dir(parent).map_err(|e| std::io::Error::other(e.to_string()))?;
        let linked = match std::fs::hard_link(tmp, dest) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            // A file system without hard links: check, then rename (not atomic against a second
            // writer of the same instance at the same moment).
            Err(_) if !dest.exists() => {
                std::fs::rename(tmp, dest)?;
                return Ok(Placed::New);
            }
            Err(_) => false,
        };
        if linked {
            let _ = std::fs::remove_file(tmp);
            return Ok(Placed::New);
        }
        let mut staged = std::fs::File::open(tmp)?;
        if same_content(dest, &mut staged)? {
            let _ = std::fs::remove_file(tmp);
            Ok(Placed::Identical)
        } else {
            Ok(Placed::Differs)
        }
    }

    /// Moves a temp file into `conflicts/` and describes it.
    fn set_aside(
        &self,
        info: &InstanceInfo,
        tmp: &Path,
        size_bytes: u64,
        kind: ConflictKind,
    ) -> Result<StoredInstance> {
        let rel_path = conflict_path(info);
        let dest = self.root.join(&rel_path);
        let dir = self.root.join("conflicts");
        create_private_dir(&dir)?;
        std::fs::rename(tmp, &dest).map_err(|e| {
            let _ = std::fs::remove_file(tmp);
            Error::io(&dest, e)
        })?;
        sync_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(StoredInstance { info: info.clone(), rel_path, size_bytes, conflict: Some(kind) })
    }

    /// Moves a placed (unindexed) file into `conflicts/`.
    fn move_aside(&self, stored: &StoredInstance, kind: ConflictKind) -> Result<StoredInstance> {
        let rel_path = conflict_path(&stored.info);
        let (from, to) = (self.root.join(&stored.rel_path), self.root.join(&rel_path));
        create_private_dir(&self.root.join("conflicts"))?;
        std::fs::rename(&from, &to).map_err(|e| Error::io(&from, e))?;
        Ok(StoredInstance { rel_path, conflict: Some(kind), ..stored.clone() })
    }
}

/// Whether indexing `info` (placed at `rel_path`) would file it against what the index holds.
fn identity_conflict(conn: &Connection, info: &InstanceInfo, rel_path: &str) -> rusqlite::Result<Option<ConflictKind>> {
    let place: Option<String> = conn
        .prepare_cached("SELECT rel_path FROM instances WHERE sop_uid = ?1")?
        .query_row([&info.sop_instance_uid], |r| r.get(0))
        .optional()?;
    if place.is_some_and(|p| p != rel_path) {
        return Ok(Some(ConflictKind::InstanceElsewhere));
    }
    // The study's patient, compared by the same key the patients table is unique on.
    let owner: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT p.patient_id, p.patient_name FROM studies s JOIN patients p ON p.patient_key = s.patient_key
             WHERE s.study_uid = ?1",
        )?
        .query_row([&info.study_instance_uid], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if owner.is_some_and(|(id, name)| id != info.patient_id || name != info.patient_name) {
        return Ok(Some(ConflictKind::StudyOfOtherPatient));
    }
    let parent: Option<String> = conn
        .prepare_cached("SELECT study_uid FROM series WHERE series_uid = ?1")?
        .query_row([&info.series_instance_uid], |r| r.get(0))
        .optional()?;
    if parent.is_some_and(|p| p != info.study_instance_uid) {
        return Ok(Some(ConflictKind::SeriesOfOtherStudy));
    }
    Ok(None)
}

/// What [`StoreFiles::place`] found at the destination.
enum Placed {
    /// Nothing: the file is now there.
    New,
    /// The same bytes.
    Identical,
    /// Other bytes: the temp file is left for the caller.
    Differs,
}

/// A file written by [`StoreFiles::stage`], waiting for [`StoreFiles::commit`].
#[derive(Debug)]
pub struct StagedFile {
    tmp: PathBuf,
    pub stored: StoredInstance,
}

/// Where a conflicting instance is kept: `conflicts/<sop>-<time>-<n>.dcm`.
fn conflict_path(info: &InstanceInfo) -> String {
    format!(
        "conflicts/{}-{}-{}.dcm",
        safe_component(&info.sop_instance_uid),
        unix_now(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Whether the file at `path` holds exactly the bytes `other` yields.
fn same_content(path: &Path, other: &mut impl Read) -> std::io::Result<bool> {
    let mut file = std::fs::File::open(path)?;
    let (mut a, mut b) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(&mut file, &mut a)?;
        let m = read_full(other, &mut b)?;
        if n != m || a[..n] != b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the end.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// This process's own temp folder under `tmp_root`, created once and locked for the process's
/// lifetime (see the module docs).
fn writer_dir(tmp_root: &Path) -> Result<PathBuf> {
    type Dirs = Mutex<HashMap<PathBuf, Arc<(PathBuf, std::fs::File)>>>;
    static DIRS: OnceLock<Dirs> = OnceLock::new();
    let dirs = DIRS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut dirs = dirs.lock().map_err(|_| Error::Write { detail: "the temp folder table is poisoned".to_owned() })?;
    if let Some(entry) = dirs.get(tmp_root)
        && entry.0.is_dir()
    {
        return Ok(entry.0.clone());
    }
    create_private_dir(tmp_root)?;
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let name = format!("{}-{nonce:08x}", std::process::id());
    // Made and locked under a hidden name, then renamed: no other process ever sees the folder
    // without its lock held.
    let init = tmp_root.join(format!(".{name}.init"));
    create_private_dir(&init)?;
    let lock_path = init.join("lock");
    let lock = create_private_file(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
    lock.try_lock().map_err(|e| Error::io(&lock_path, std::io::Error::other(e.to_string())))?;
    let dir = tmp_root.join(name);
    std::fs::rename(&init, &dir).map_err(|e| Error::io(&dir, e))?;
    dirs.insert(tmp_root.to_path_buf(), Arc::new((dir.clone(), lock)));
    Ok(dir)
}

/// Temp folders (and loose temp files of older Lucents) whose writer is gone: a folder whose lock
/// can be taken (a lock held by any live process, this one included, cannot), or a loose file
/// not touched for an hour.
fn abandoned_temp_files(tmp_root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(tmp_root) else { return Vec::new() };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        let abandoned = if path.is_dir() && !hidden {
            // Opening the lock file never creates it: a folder without one is abandoned.
            std::fs::OpenOptions::new().write(true).open(path.join("lock")).map_or(true, |f| f.try_lock().is_ok())
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(3600))
        };
        if abandoned {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Creates a folder (and its parents) readable by its owner only (0700 on Unix).
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| Error::io(dir, e))
}

/// Creates (truncating) a file readable by its owner only (0600 on Unix).
pub(crate) fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Brings an index made by an older Lucent up to the current schema.
fn migrate(conn: &Connection) -> Result<()> {
    let has_view_position =
        conn.prepare("SELECT 1 FROM pragma_table_info('series') WHERE name = 'view_position'")?.exists([])?;
    if !has_view_position {
        conn.execute_batch("ALTER TABLE series ADD COLUMN view_position TEXT NOT NULL DEFAULT ''")?;
    }
    Ok(())
}

fn escape_like(text: &str) -> String {
    text.replace('!', "!!").replace('%', "!%").replace('_', "!_")
}

/// A UID as a safe path component (UIDs are digits and dots; anything else is replaced).
fn safe_component(uid: &str) -> String {
    let cleaned: String =
        uid.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') { "_".to_owned() } else { cleaned }
}

/// Writes through a temp file in `tmp_dir`, fsyncs, renames over `dest` (replacing it: for
/// settings files, never for instances), and fsyncs the directory.
pub(crate) fn write_atomically(
    tmp_dir: &Path,
    dest: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    create_private_dir(parent)?;
    let tmp = tmp_dir.join(format!(".{}-{}.tmp", std::process::id(), TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
    let result = (|| {
        let mut f = create_private_file(&tmp)?;
        write(&mut f)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, dest)?;
        std::fs::File::open(parent)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(dest, e)
    })
}
