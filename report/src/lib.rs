//! # lucent-report
//!
//! Lucent's reports, from AI findings to a signed document, with nothing of DICOM, ONNX or the GUI
//! in it (the app converts its types into [`model`]'s):
//!
//! * [`model`]: the neutral inputs: study context, AI findings (side, lobe, box, nodule
//!   measurements, image reference), the reader's decisions, the Lung-RADS proposal.
//! * [`draft`]: the CXR and LDCT templates in English and Korean; a [`Report`] is one editable
//!   text per section plus the AI sentences it tracks, so accepting, rejecting or editing a finding
//!   rewrites only Lucent's own sentences and never the radiologist's words (see [`draft`]).
//! * [`checks`]: the reading-error checks before signing (laterality, unmentioned finding,
//!   measurement, Lung-RADS), as warnings.
//! * [`store`]: `reports.sqlite` (WAL): drafts (autosaved), immutable signed versions and addenda,
//!   reader decisions, QA reviews kept apart, user profiles and their public keys, and the
//!   hash-chained, anchored audit log.
//! * [`signing`]: per-user ed25519 keys sealed under a passphrase, endorsed by an administrator
//!   and rooted in a trust root outside the database; signatures on every signed version.
//! * [`fhir`]: FHIR R4 DiagnosticReport JSON. [`pdf`]: the PDF with the bundled Hangul font.
//! * [`stats`]: QA statistics per model version and label, CSV export.
//!
//! The DICOM SR export lives in `pacs::sr` (pacs owns DICOM encoding); the app fills its input.
//!
//! ```
//! use report::model::{AiFinding, Decisions, Lang, Side, StudyContext, StudyInputs};
//! use report::draft::{draft, SectionId};
//!
//! let inputs = StudyInputs {
//!     context: StudyContext { modality: "DX".into(), ..Default::default() },
//!     findings: vec![AiFinding {
//!         id: "f1".into(), label: "pneumothorax".into(), score: 0.9, threshold: 0.5,
//!         side: Side::Right, ..Default::default()
//!     }],
//!     lung_rads: None,
//! };
//! let report = draft(&inputs, &Decisions::new(), Lang::En);
//! assert_eq!(report.section_text(SectionId::Pleura), "Right pneumothorax.");
//! assert!(report::checks::check(&report, &inputs.findings, &Decisions::new(), None).is_empty());
//! ```
//!
//! This crate must not depend on `pacs`, `inference`, egui, wgpu, ort or any dicom crate
//! (`cargo xtask check-deps`). No patient name or ID is ever logged or stored in the report store.

pub mod checks;
pub mod draft;
mod error;
pub mod fhir;
pub mod model;
pub mod pdf;
pub mod signing;
pub mod stats;
pub mod store;
pub mod time;
mod vocab;

pub use draft::{Report, Section, SectionId, Sentence, draft};
pub use error::{Error, Result};
pub use signing::{Credential, KeyStore, Passphrase};
pub use store::{AuditAnchor, AuditVerdict, ReportStatus, ReportStore, Role, TamperedVersion};

/// The statement every export carries.
pub const DISCLAIMER: &str = "Research and demonstration only; not for diagnosis";
