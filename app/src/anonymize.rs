//! De-identified copies of files and folders (`lucent anonymize`): the engine over `pacs::deid`
//! that the CLI and the GUI share.
//!
//! Every readable DICOM file under the inputs is written to `OUT/<study>/<series>/<sop>.dcm`
//! with the new (remapped) UIDs, so no original identifier survives in a path either. The site
//! key is `--key-file`, else `deid.key` in Lucent's data folder (32 random bytes, created 0600 on
//! first use): keep it to map the same studies to the same UIDs next time; without it the mapping
//! cannot be reproduced or reversed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use pacs::deid::{DateShift, DeidOptions};
use serde::Serialize;

/// One file written.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    pub source: PathBuf,
    pub output: PathBuf,
    pub study_instance_uid: String,
    pub shifted_days: i64,
}

/// A file not written, and why.
#[derive(Debug, Clone, Serialize)]
pub struct NotWritten {
    pub source: PathBuf,
    pub reason: String,
}

/// What an anonymisation did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AnonymizeSummary {
    pub written: Vec<Written>,
    /// Images with (possible) burned-in annotation, left out unless asked for.
    pub excluded_burned_in: Vec<NotWritten>,
    /// Files that are not readable DICOM (or could not be written).
    pub skipped: Vec<NotWritten>,
    pub key_file: PathBuf,
}

/// The site key: `path`, or `deid.key` in the data folder (created with 32 random bytes).
pub fn site_key(path: Option<&Path>) -> Result<(Vec<u8>, PathBuf)> {
    let path = path.map_or_else(|| crate::config::data_dir().join("deid.key"), Path::to_path_buf);
    if !path.exists() && path == crate::config::data_dir().join("deid.key") {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no random source for a new key: {e}"))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).with_context(|| format!("creating the key {}", path.display()))?;
        std::io::Write::write_all(&mut file, &key)?;
        file.sync_all()?;
    }
    let key = std::fs::read(&path).with_context(|| format!("reading the key {}", path.display()))?;
    anyhow::ensure!(key.len() >= 16, "the key {} holds {} bytes; at least 16 are needed", path.display(), key.len());
    Ok((key, path))
}

/// De-identifies every DICOM file under `inputs` into the folder `out`.
pub fn anonymize_paths(
    inputs: &[PathBuf],
    out: &Path,
    key_file: Option<&Path>,
    date_shift: DateShift,
    include_burned_in: bool,
) -> Result<AnonymizeSummary> {
    let (key, key_file) = site_key(key_file)?;
    let options = DeidOptions { key, date_shift, include_burned_in };
    let mut summary = AnonymizeSummary { key_file, ..Default::default() };
    let mut files: Vec<PathBuf> = inputs.iter().flat_map(|p| crate::info::list_files(p)).collect();
    files.sort();
    files.dedup();
    for source in files {
        let not_written = |reason: String| NotWritten { source: source.clone(), reason };
        let object = match pacs::file::open(&source) {
            Ok(object) => object,
            Err(e) => {
                summary.skipped.push(not_written(e.to_string()));
                continue;
            }
        };
        match pacs::deid::deidentify(object, &options) {
            Ok(done) => {
                let dir = out.join(&done.study_instance_uid).join(&done.series_instance_uid);
                let output = dir.join(format!("{}.dcm", done.sop_instance_uid));
                let written = std::fs::create_dir_all(&dir)
                    .map_err(anyhow::Error::from)
                    .and_then(|()| done.object.write_to_file(&output).map_err(anyhow::Error::from));
                match written {
                    Ok(()) => summary.written.push(Written {
                        source,
                        output,
                        study_instance_uid: done.study_instance_uid,
                        shifted_days: done.shifted_days,
                    }),
                    Err(e) => summary.skipped.push(not_written(format!("cannot write: {e:#}"))),
                }
            }
            Err(pacs::Error::BurnedIn { reason }) => summary.excluded_burned_in.push(not_written(reason)),
            Err(e) => summary.skipped.push(not_written(e.to_string())),
        }
    }
    Ok(summary)
}

/// Parses `--date-shift`: absent, `auto` (per patient) or a number of days.
pub fn parse_date_shift(value: Option<&str>) -> Result<DateShift> {
    Ok(match value {
        None => DateShift::None,
        Some("auto") => DateShift::PerPatient,
        Some(days) => DateShift::Days(
            days.trim()
                .parse::<i64>()
                .with_context(|| format!("--date-shift {days}: expected auto or a number of days"))?,
        ),
    })
}
