//! The model registry: every `*.toml` manifest under a list of folders (recursively), each checked
//! end to end: the manifest validates, the `.onnx` beside it exists and has the manifest's SHA-256,
//! ONNX Runtime loads it, and its declared inputs/outputs agree with the manifest. A model failing
//! any step is listed as refused, with the reason; nothing panics and one bad model does not hide
//! the others.
//!
//! Folders are scanned in the order given; when two manifests share an id the first one wins and
//! the later one is refused. Lucent passes the bundled `models/` first, then the user's
//! [`user_models_dir`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::manifest::ModelManifest;
use crate::session::{ModelSession, SessionOptions};
use crate::worker::ModelWorker;

/// Whether a model can be used.
#[derive(Debug)]
pub enum ModelStatus {
    /// Verified and loadable.
    Ready {
        /// "CPU", "CUDA" or "TensorRT".
        execution_provider: &'static str,
        /// Why a GPU provider was not used, when one was wanted.
        notes: Vec<String>,
    },
    /// Not usable; the error says exactly why.
    Refused(Error),
}

impl ModelStatus {
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready { .. })
    }

    /// The refusal reason, if refused.
    pub fn reason(&self) -> Option<&Error> {
        match self {
            Self::Refused(e) => Some(e),
            Self::Ready { .. } => None,
        }
    }
}

/// One manifest found by a scan.
#[derive(Debug)]
pub struct ModelEntry {
    pub manifest_path: PathBuf,
    /// `None` when the manifest itself is unreadable or invalid.
    pub manifest: Option<Arc<ModelManifest>>,
    /// The `.onnx` file (when the manifest could be read).
    pub model_path: Option<PathBuf>,
    pub status: ModelStatus,
}

impl ModelEntry {
    /// The model id, or the manifest's file name when it could not be read.
    pub fn id(&self) -> String {
        self.manifest.as_ref().map_or_else(|| self.manifest_path.display().to_string(), |m| m.id.clone())
    }
}

/// The registry built by [`Registry::scan`].
#[derive(Debug)]
pub struct Registry {
    entries: Vec<ModelEntry>,
    options: SessionOptions,
}

/// The user's model folder: `$XDG_DATA_HOME/lucent/models`, else `~/.local/share/lucent/models`.
pub fn user_models_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from).filter(|p| p.is_absolute());
    let base = xdg.or_else(|| {
        std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".local").join("share"))
    })?;
    Some(base.join("lucent").join("models"))
}

/// Every `*.toml` under `folder`, sorted; a missing folder has none.
pub fn find_manifests(folder: &Path) -> Vec<PathBuf> {
    if !folder.is_dir() {
        return Vec::new();
    }
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(folder)
        .follow_links(true)
        .into_iter()
        .filter_map(std::result::Result::ok)
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "toml"))
        .map(walkdir::DirEntry::into_path)
        .collect();
    out.sort();
    out
}

/// Check one manifest end to end and return the opened session.
pub fn verify_model(manifest_path: &Path, options: &SessionOptions) -> Result<ModelSession> {
    let manifest = Arc::new(ModelManifest::load(manifest_path)?);
    let model_path = manifest.model_path(manifest_path);
    if !model_path.is_file() {
        return Err(Error::ModelFileMissing { path: model_path, manifest: manifest_path.to_path_buf() });
    }
    ModelSession::open(manifest, &model_path, options)
}

impl Registry {
    /// Scan `folders` (missing ones are skipped) and verify every manifest found.
    pub fn scan(folders: &[PathBuf], options: SessionOptions) -> Registry {
        let mut entries: Vec<ModelEntry> = Vec::new();
        for folder in folders {
            for manifest_path in find_manifests(folder) {
                let parsed = ModelManifest::load(&manifest_path).map(Arc::new);
                let entry = match parsed {
                    Err(e) => {
                        ModelEntry { manifest_path, manifest: None, model_path: None, status: ModelStatus::Refused(e) }
                    }
                    Ok(manifest) => {
                        let model_path = manifest.model_path(&manifest_path);
                        let first = entries
                            .iter()
                            .find(|e| e.manifest.as_ref().is_some_and(|m| m.id == manifest.id))
                            .map(|e| e.manifest_path.clone());
                        let status = match first {
                            Some(first) => ModelStatus::Refused(Error::DuplicateModel {
                                id: manifest.id.clone(),
                                path: manifest_path.clone(),
                                first,
                            }),
                            None => match verify_model(&manifest_path, &options) {
                                Ok(session) => ModelStatus::Ready {
                                    execution_provider: session.execution_provider(),
                                    notes: session.notes().to_vec(),
                                },
                                Err(e) => ModelStatus::Refused(e),
                            },
                        };
                        ModelEntry { manifest_path, manifest: Some(manifest), model_path: Some(model_path), status }
                    }
                };
                match &entry.status {
                    ModelStatus::Ready { execution_provider, .. } => {
                        tracing::info!(model = %entry.id(), provider = execution_provider, "model ready");
                    }
                    ModelStatus::Refused(e) => tracing::warn!(model = %entry.id(), "model refused: {e}"),
                }
                entries.push(entry);
            }
        }
        Registry { entries, options }
    }

    /// Every manifest found, in scan order.
    pub fn entries(&self) -> &[ModelEntry] {
        &self.entries
    }

    /// The ready models.
    pub fn ready(&self) -> impl Iterator<Item = &ModelEntry> {
        self.entries.iter().filter(|e| e.status.is_ready())
    }

    /// The entry for `id` (the first one, when duplicated).
    pub fn get(&self, id: &str) -> Option<&ModelEntry> {
        self.entries.iter().find(|e| e.manifest.as_ref().is_some_and(|m| m.id == id))
    }

    fn ready_entry(&self, id: &str) -> Result<(&Arc<ModelManifest>, &PathBuf)> {
        let entry = self
            .get(id)
            .ok_or_else(|| Error::ModelUnavailable { id: id.to_owned(), reason: "no such model".into() })?;
        match (&entry.status, &entry.manifest, &entry.model_path) {
            (ModelStatus::Ready { .. }, Some(m), Some(p)) => Ok((m, p)),
            (ModelStatus::Refused(e), _, _) => {
                Err(Error::ModelUnavailable { id: id.to_owned(), reason: e.to_string() })
            }
            _ => Err(Error::ModelUnavailable { id: id.to_owned(), reason: "incomplete entry".into() }),
        }
    }

    /// Open a new session on a ready model (the file is verified again).
    pub fn open(&self, id: &str) -> Result<ModelSession> {
        let (manifest, path) = self.ready_entry(id)?;
        ModelSession::open(Arc::clone(manifest), path, &self.options)
    }

    /// Open a session on a ready model and start its worker thread (`lucent-model-<id>`).
    pub fn spawn_worker(&self, id: &str, queue_capacity: usize) -> Result<ModelWorker> {
        ModelWorker::spawn(self.open(id)?, queue_capacity)
    }
}
