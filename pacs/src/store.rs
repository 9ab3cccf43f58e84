//! The local study store: DICOM files under a directory the user chooses, indexed in SQLite.
//!
//! Layout: `<root>/index.sqlite` (WAL mode), `<root>/files/<study>/<series>/<sop>.dcm`, and
//! `<root>/tmp/` for writes in flight. A file is written to `tmp/`, fsynced, renamed into
//! place, its directory fsynced, and only then indexed: a crash leaves at worst an unindexed
//! file (re-imported next time) or a temp file (removed on open), never an index row without
//! its file. Network receivers stage files on parallel writer threads (write, fsync) and commit
//! them in batches ([`StoreFiles::stage`], [`StoreFiles::commit`]): the renames, then one fsync
//! per directory rather than one per file, then the index.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
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
CREATE INDEX IF NOT EXISTS measurements_by_study ON measurements(study_uid);
CREATE INDEX IF NOT EXISTS studies_by_patient ON studies(patient_key);
CREATE INDEX IF NOT EXISTS studies_by_date ON studies(study_date);
CREATE INDEX IF NOT EXISTS series_by_study ON series(study_uid);
CREATE INDEX IF NOT EXISTS instances_by_series ON instances(series_uid);
";

/// A file placed in the store, ready to be indexed.
#[derive(Debug, Clone)]
pub struct StoredInstance {
    pub info: InstanceInfo,
    pub rel_path: String,
    pub size_bytes: u64,
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
    /// Files under `files/` that no index row points at.
    pub orphan_files: Vec<PathBuf>,
    /// Leftover temp files.
    pub temp_files: Vec<PathBuf>,
}

impl ConsistencyReport {
    pub fn is_consistent(&self) -> bool {
        self.broken_rows.is_empty() && self.orphan_files.is_empty() && self.temp_files.is_empty()
    }
}

/// The store. One `Store` per thread; open more for readers (WAL allows concurrent reads).
pub struct Store {
    root: PathBuf,
    conn: Connection,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating if needed) the store at `root`, and removes temp files of interrupted writes.
    pub fn open(root: &Path) -> Result<Self> {
        for dir in [root.to_path_buf(), root.join("files"), root.join("tmp")] {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        let tmp = root.join("tmp");
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                // A leftover temp file is an interrupted write: its source will be imported again.
                let _ = std::fs::remove_file(entry.path());
            }
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

    /// Writes `bytes` atomically at the instance's place in the store (not yet indexed).
    pub fn write_file(&self, info: &InstanceInfo, bytes: &[u8]) -> Result<StoredInstance> {
        self.files().write(info, &[bytes])
    }

    /// A handle that writes files into this store from any thread (indexing stays with the `Store`).
    pub fn files(&self) -> StoreFiles {
        StoreFiles { root: self.root.clone() }
    }

    /// Copies a source file atomically into the store (not yet indexed).
    pub fn copy_file(&self, info: &InstanceInfo, source: &Path) -> Result<StoredInstance> {
        let rel_path = Self::relative_path_for(info);
        let dest = self.root.join(&rel_path);
        let mut src = std::fs::File::open(source).map_err(|e| Error::io(source, e))?;
        let mut size = 0;
        write_atomically(&self.root.join("tmp"), &dest, |f| {
            size = std::io::copy(&mut src, f)?;
            Ok(())
        })?;
        Ok(StoredInstance { info: info.clone(), rel_path, size_bytes: size })
    }

    /// Indexes stored files in one transaction. Already indexed instances are left as they are.
    /// Returns how many rows were new.
    pub fn index(&mut self, batch: &[StoredInstance]) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let mut added = 0;
        {
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
                added += instance.execute(params![
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
            }
        }
        tx.commit()?;
        Ok(added)
    }

    /// Stores and indexes one object from bytes (used by network receivers).
    pub fn add_bytes(&mut self, bytes: &[u8]) -> Result<InstanceInfo> {
        let obj = file::open_bytes(bytes)?;
        let info = file::info(&obj)?;
        let stored = self.write_file(&info, bytes)?;
        self.index(&[stored])?;
        Ok(info)
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

    /// Checks that the index and the files agree. Reads every header: use on demand, not at start-up.
    pub fn check_consistency(&self) -> Result<ConsistencyReport> {
        let mut report = ConsistencyReport::default();
        let mut indexed = std::collections::BTreeSet::new();
        let mut stmt = self.conn.prepare("SELECT sop_uid, rel_path FROM instances ORDER BY sop_uid")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (uid, rel) = row?;
            let path = self.root.join(&rel);
            match file::read_info(&path) {
                Ok(info) if info.sop_instance_uid == uid => {}
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
        if let Ok(entries) = std::fs::read_dir(self.root.join("tmp")) {
            report.temp_files.extend(entries.flatten().map(|e| e.path()));
        }
        Ok(report)
    }
}

/// Writes files into a store's folder from any thread, atomically (temp file, fsync, rename,
/// directory fsync), without touching the index: pass the results to [`Store::index`].
#[derive(Debug, Clone)]
pub struct StoreFiles {
    root: PathBuf,
}

impl StoreFiles {
    /// Writes the concatenation of `parts` (e.g. a Part 10 header and a received data set)
    /// at the instance's place in the store (not yet indexed).
    pub fn write(&self, info: &InstanceInfo, parts: &[&[u8]]) -> Result<StoredInstance> {
        let rel_path = Store::relative_path_for(info);
        let dest = self.root.join(&rel_path);
        write_atomically(&self.root.join("tmp"), &dest, |f| parts.iter().try_for_each(|p| f.write_all(p)))?;
        let size_bytes = parts.iter().map(|p| p.len() as u64).sum();
        Ok(StoredInstance { info: info.clone(), rel_path, size_bytes })
    }

    /// Writes the concatenation of `parts` to a temp file in `tmp/` and fsyncs it, not yet in
    /// place: [`StoreFiles::commit`] a batch of them (the renames, then one fsync per directory
    /// instead of one per file), then index it. Writer threads stage in parallel.
    pub fn stage(&self, info: &InstanceInfo, parts: &[&[u8]]) -> Result<StagedFile> {
        let rel_path = Store::relative_path_for(info);
        let dest = self.root.join(&rel_path);
        let tmp = self.root.join("tmp").join(temp_name());
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            parts.iter().try_for_each(|p| f.write_all(p))?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(&dest, e));
        }
        let size_bytes = parts.iter().map(|p| p.len() as u64).sum();
        Ok(StagedFile { tmp, stored: StoredInstance { info: info.clone(), rel_path, size_bytes } })
    }

    /// Puts staged (already synced) files in place: renames each, then fsyncs each directory
    /// once. A crash before this returns leaves at worst temp files (removed when the store next
    /// opens) or whole but unindexed files in place. Returns the instances to index, and the ones
    /// that could not be placed with the reason.
    pub fn commit(&self, staged: Vec<StagedFile>) -> (Vec<StoredInstance>, Vec<(StoredInstance, String)>) {
        let (mut placed, mut failed) = (Vec::with_capacity(staged.len()), Vec::new());
        if staged.is_empty() {
            return (placed, failed);
        }
        let mut parents: Vec<PathBuf> = Vec::new();
        for file in staged {
            let dest = self.root.join(&file.stored.rel_path);
            let parent = dest.parent().unwrap_or(Path::new(".")).to_path_buf();
            let moved = std::fs::create_dir_all(&parent)
                .and_then(|()| std::fs::rename(&file.tmp, &dest))
                .map_err(|e| e.to_string());
            match moved {
                Ok(()) => {
                    if !parents.contains(&parent) {
                        parents.push(parent);
                    }
                    placed.push(file.stored);
                }
                Err(reason) => {
                    let _ = std::fs::remove_file(&file.tmp);
                    failed.push((file.stored, reason));
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
        if let Some(e) = dirs.iter().find_map(|d| std::fs::File::open(d).and_then(|f| f.sync_all()).err()) {
            failed.extend(placed.drain(..).map(|p| (p, e.to_string())));
        }
        (placed, failed)
    }
}

/// A file written by [`StoreFiles::stage`], waiting for [`StoreFiles::commit`].
#[derive(Debug)]
pub struct StagedFile {
    tmp: PathBuf,
    pub stored: StoredInstance,
}

fn temp_name() -> String {
    format!("{}-{}.tmp", std::process::id(), TEMP_COUNTER.fetch_add(1, Ordering::Relaxed))
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

/// Writes through a temp file in `tmp_dir`, fsyncs, renames over `dest`, and fsyncs the directory.
pub(crate) fn write_atomically(
    tmp_dir: &Path,
    dest: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = tmp_dir.join(temp_name());
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
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
