//! The one error type of the `report` crate. Messages never carry patient data.

use std::path::{Path, PathBuf};

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while drafting, storing or exporting a report.
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

    /// The report database failed.
    #[error("report store: {0}")]
    Sql(#[from] rusqlite::Error),

    /// Stored JSON could not be read or written.
    #[error("report JSON: {0}")]
    Json(#[from] serde_json::Error),

    /// The report is signed: it cannot change (write an addendum instead).
    #[error("the report is signed and cannot be changed; add an addendum instead")]
    Signed,

    /// The report is not signed, and this needs a signed report (or an explicit preliminary export).
    #[error("the report is not signed; sign it first, or export it explicitly marked preliminary")]
    NotSigned,

    /// A signed version no longer matches what was signed, or the audit's anchor does not match:
    /// someone changed the store behind Lucent's back.
    #[error("tampering detected: {what}")]
    Tampered { what: String },

    /// The user's profile does not allow this.
    #[error("not allowed: {what}")]
    Forbidden { what: String },

    /// Something asked for does not exist.
    #[error("not found: {what}")]
    NotFound { what: String },

    /// An input value cannot be used.
    #[error("invalid {what}")]
    Invalid { what: String },

    /// The PDF could not be produced.
    #[error("cannot write the PDF: {detail}")]
    Pdf { detail: String },
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}
