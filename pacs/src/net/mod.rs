//! DICOM networking (DIMSE over the DICOM upper layer, on `dicom-ul`): talking to PACS nodes.
//!
//! * [`node`]: [`PacsNode`] (AE title, host, port, our AE title, timeouts, TLS flag) and the
//!   [`NodeBook`] that keeps them in a JSON file.
//! * [`echo()`]: C-ECHO with an [`EchoVerdict`] (OK, refused, timeout, AE rejected, failed).
//! * [`find`]: C-FIND at study, series and image level, Study Root and Patient Root.
//! * [`retrieve`]: C-GET and C-MOVE of a study or series into the local store, with a progress
//!   callback, cancel (C-CANCEL), skip-what-is-there and a report of what is missing.
//! * [`scp`]: Lucent's Store SCP (C-STORE and C-ECHO; allow-list of calling AE titles).
//! * [`store_scu`]: C-STORE of local files to a node.
//!
//! All calls block the calling thread (run them on a worker); they take `&PacsNode`, options,
//! `&mut dyn FnMut(&RetrieveProgress)` and a cancel flag `&AtomicBool` where it applies.
//! Every socket has TCP_NODELAY and read/write timeouts (a silent peer gives
//! [`Error::Timeout`](crate::Error::Timeout)). Errors and events name AE titles, addresses and
//! UIDs, never patients. DICOM TLS is not implemented: a node with `tls: true` is refused.

mod dimse;
pub mod echo;
pub mod find;
pub mod node;
pub mod retrieve;
pub mod scp;
pub mod store_scu;
pub mod syntax;

pub use echo::{EchoVerdict, echo};
pub use find::{
    FindQuery, InstanceMatch, QueryLevel, QueryModel, SeriesMatch, StudyMatch, find_instances, find_series,
    find_studies,
};
pub use node::{NodeBook, PacsNode};
pub use retrieve::{
    FailedInstance, RetrieveOptions, RetrieveProgress, RetrieveReport, RetrieveRequest, retrieve_get, retrieve_move,
};
pub use scp::{ScpConfig, ScpEvent, ScpHandle, start_scp};
pub use store_scu::{SendFailure, StoreReport, store_files};
