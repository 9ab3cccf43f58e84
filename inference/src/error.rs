//! The crate's one error type. Messages name files, fields and models, never patient data.

use std::path::PathBuf;

use crate::runtime::FIX_HINT;

/// Everything that can go wrong in `lucent-inference`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ONNX Runtime shared library could not be found.
    #[error("ONNX Runtime library not found: {detail}; {FIX_HINT}")]
    RuntimeMissing { detail: String },

    /// The ONNX Runtime shared library was found but could not be loaded (wrong file, wrong version).
    #[error("could not load the ONNX Runtime library {path}: {message}; {FIX_HINT}")]
    RuntimeLoad { path: PathBuf, message: String },

    /// An ONNX Runtime call failed; `context` says which.
    #[error("ONNX Runtime: {context}: {message}")]
    Ort { context: String, message: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A manifest is not valid TOML or does not have the expected structure.
    #[error("manifest {path}: {message}")]
    ManifestParse { path: PathBuf, message: String },

    /// A manifest parsed but one field is invalid.
    #[error("manifest {path}: field `{field}`: {message}")]
    ManifestInvalid { path: PathBuf, field: String, message: String },

    /// The `.onnx` file a manifest names does not exist.
    #[error("model file {path} (named by manifest {manifest}) does not exist")]
    ModelFileMissing { path: PathBuf, manifest: PathBuf },

    /// The `.onnx` file's SHA-256 differs from the manifest's.
    #[error("model file {path}: sha256 is {actual}, the manifest says {expected} (corrupt or replaced file)")]
    ChecksumMismatch { path: PathBuf, expected: String, actual: String },

    /// ONNX Runtime could not load the `.onnx` file (corrupt, unsupported opset, ...).
    #[error("model file {path} could not be loaded by ONNX Runtime: {message}")]
    ModelLoad { path: PathBuf, message: String },

    /// The manifest disagrees with what the ONNX model declares.
    #[error("model `{model}`: field `{field}`: {message}")]
    ModelMismatch { model: String, field: String, message: String },

    /// Two manifests declare the same model id.
    #[error("model id `{id}` in {path} is already provided by {first}")]
    DuplicateModel { id: String, path: PathBuf, first: PathBuf },

    /// No model with that id is registered, or it was refused.
    #[error("model `{id}` is not available: {reason}")]
    ModelUnavailable { id: String, reason: String },

    /// The image or volume handed to a pipeline is unusable.
    #[error("invalid input: {0}")]
    Input(String),

    /// A nodule candidate whose segmentation is implausible (it leaks into vessels, the pleura or
    /// the chest wall, or is too large without a mass-like core): shown as not measurable, never
    /// with a size.
    #[error("not measurable: {0}")]
    NotMeasurable(String),

    /// A model produced an output the manifest did not promise.
    #[error("model `{model}`: output `{output}`: {message}")]
    Output { model: String, output: String, message: String },

    /// The job was cancelled through its cancel flag.
    #[error("cancelled")]
    Cancelled,

    /// The model's worker thread has stopped.
    #[error("the worker thread of model `{model}` has stopped")]
    WorkerGone { model: String },

    /// A job panicked on the model's worker thread (the worker keeps running).
    #[error("a job on the worker thread of model `{model}` panicked: {message}")]
    WorkerPanicked { model: String, message: String },

    /// The worker's bounded queue is full.
    #[error("the queue of model `{model}` is full ({capacity} jobs waiting)")]
    QueueFull { model: String, capacity: usize },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn ort(context: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self::Ort { context: context.into(), message: message.to_string() }
    }
}
