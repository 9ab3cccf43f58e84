//! The one error type of the `pacs` crate.
//!
//! Messages name the problem and the file, never patient data: no names, IDs or
//! dates from a header ever go into an error.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reading, decoding, storing or exchanging DICOM data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file system refused a read or write.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The bytes are not a DICOM Part 10 file (or not one we can parse).
    #[error("not a readable DICOM file: {reason}")]
    NotDicom { reason: String },

    /// A required attribute is absent.
    #[error("missing required attribute {name}")]
    MissingAttribute { name: &'static str },

    /// An attribute is present but its value cannot be used.
    #[error("invalid {name}: {reason}")]
    InvalidAttribute { name: &'static str, reason: String },

    /// The object has no Pixel Data (e.g. a structured report or a DICOMDIR).
    #[error("the object has no pixel data (SOP class {sop_class})")]
    NoPixelData { sop_class: String },

    /// The transfer syntax is unknown or has no decoder here.
    #[error("unsupported transfer syntax {uid} ({name})")]
    UnsupportedTransferSyntax { uid: String, name: String },

    /// A codec failed on the compressed bitstream.
    #[error("cannot decode {codec} pixel data: {detail}")]
    Decode { codec: String, detail: String },

    /// The pixel data is shorter than rows x columns x samples x frames says.
    #[error("pixel data too short: expected {expected} bytes, found {actual}")]
    PixelDataLength { expected: usize, actual: usize },

    /// A frame index past the end.
    #[error("frame {frame} out of range (the object has {frames} frames)")]
    FrameOutOfRange { frame: u32, frames: u32 },

    /// A series cannot be turned into a volume.
    #[error("cannot build a volume: {reason}")]
    Volume { reason: String },

    /// Writing a DICOM object failed.
    #[error("cannot write DICOM: {detail}")]
    Write { detail: String },

    /// The local store's index failed.
    #[error("study store index error: {0}")]
    Index(#[from] rusqlite::Error),

    /// The instance would mix patients, studies or contents with what the store holds: it was
    /// kept aside in the store's `conflicts/` folder instead of filed.
    #[error("not filed, kept aside for review in {kept_at}: {kind}")]
    Conflict { kind: crate::store::ConflictKind, kept_at: PathBuf },

    /// A ZIP archive could not be read.
    #[error("cannot read ZIP archive {path}: {detail}")]
    Zip { path: PathBuf, detail: String },

    /// Input asked for more than a limit allows (see `pacs::limits`): refused before anything
    /// was allocated for it.
    #[error("{what} of {size} exceeds the limit of {limit} (setting {setting})")]
    LimitExceeded { what: &'static str, size: u64, limit: u64, setting: &'static str },

    /// An image that carries (or may carry) burned-in annotation, refused by de-identification
    /// unless asked to include it.
    #[error("not de-identified: {reason}")]
    BurnedIn { reason: String },

    /// The operation was cancelled by the user.
    #[error("cancelled")]
    Cancelled,

    /// Nothing listens at the peer's address (TCP connection refused).
    #[error("connection refused by {peer}")]
    ConnectionRefused { peer: String },

    /// The peer stopped answering: no byte arrived (or could be sent) within the timeout.
    #[error("{peer} did not answer within {timeout_s:.1} s ({during})")]
    Timeout { peer: String, timeout_s: f64, during: &'static str },

    /// The peer rejected the association (e.g. our calling AE title is unknown to it).
    #[error("association rejected by {peer}: {reason}")]
    AssociationRejected { peer: String, reason: String },

    /// The peer accepted no presentation context for an abstract syntax (and transfer syntax).
    #[error("{peer} accepted no presentation context for {abstract_syntax}{}", transfer_syntax.as_deref().map(|t| format!(" in transfer syntax {t}")).unwrap_or_default())]
    NoPresentationContext { peer: String, abstract_syntax: String, transfer_syntax: Option<String> },

    /// The connection ended in the middle of an exchange (closed, reset or A-ABORT).
    #[error("connection to {peer} lost: {detail}")]
    ConnectionLost { peer: String, detail: String },

    /// Any other network or DICOM upper-layer failure.
    #[error("network error with {peer}: {detail}")]
    Network { peer: String, detail: String },

    /// A DIMSE operation ended with a failure status. (The peer's Error Comment is not kept: it
    /// may quote identifiers.)
    #[error("{operation} failed at {peer}: status {status:#06x} ({meaning})")]
    DimseFailure { peer: String, operation: &'static str, status: u16, meaning: &'static str },

    /// DICOM TLS failed with a peer: the handshake (an untrusted or mismatched certificate, a
    /// client certificate refused, no common protocol), or one side speaks TLS and the other not.
    #[error("TLS with {peer} failed: {detail}")]
    Tls { peer: String, detail: String },

    /// A PACS node or listener configuration that cannot be used.
    #[error("invalid network configuration: {reason}")]
    InvalidNode { reason: String },

    /// A node's password or token could not be kept or read (`pacs::secrets`). Never holds
    /// the secret itself.
    #[error("secret store: {detail}")]
    Secret { detail: String },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidAttribute { name, reason: reason.into() }
    }

    pub(crate) fn decode(codec: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Decode { codec: codec.into(), detail: detail.into() }
    }
}
