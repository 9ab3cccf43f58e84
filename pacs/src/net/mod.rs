//! DICOM networking (DIMSE over the DICOM upper layer, on `dicom-ul`): talking to PACS nodes.
//!
//! * [`node`]: [`PacsNode`] (AE title, host, port, our AE title, timeouts, DICOM TLS: on/off,
//!   extra CA file, client certificate and key) and the [`NodeBook`] that keeps them in a JSON
//!   file.
//! * [`echo()`]: C-ECHO with an [`EchoVerdict`] (OK, refused, timeout, AE rejected, failed).
//! * [`find`]: C-FIND at study, series and image level, Study Root and Patient Root.
//! * [`retrieve`]: C-GET and C-MOVE of a study or series into the local store, with a progress
//!   callback, cancel (C-CANCEL), skip-what-is-there and a report of what is missing.
//! * [`scp`]: Lucent's Store SCP (C-STORE and C-ECHO; allow-list of calling AE titles; optionally
//!   TLS only, with its certificate and key, and client certificates required from a CA).
//! * [`store_scu`]: C-STORE of local files to a node.
//!
//! All calls block the calling thread (run them on a worker); they take `&PacsNode`, options,
//! `&mut dyn FnMut(&RetrieveProgress)` and a cancel flag `&AtomicBool` where it applies.
//! Every socket has TCP_NODELAY and read/write timeouts (a silent peer gives
//! [`Error::Timeout`](crate::Error::Timeout)). Errors and events name AE titles, addresses and
//! UIDs, never patients.
//!
//! DICOM TLS (rustls with ring, TLS 1.2 and 1.3): with `tls: true` the whole association runs
//! over TLS (A-ASSOCIATE included) for every service above. The peer's certificate is always
//! verified, against Mozilla's roots plus the node's `tls_ca_file`, for the server name = the
//! node's host (DNS name or IP address); a client certificate is presented when the node has one.
//! TCP_NODELAY and the timeouts stay on the TCP socket under TLS. A failed handshake (unknown CA,
//! wrong name, client certificate refused) or a TLS/plain mismatch gives
//! [`Error::Tls`](crate::Error::Tls) naming `AE@host:port`.

pub(crate) mod dimse;
pub mod echo;
pub mod find;
pub mod node;
pub mod retrieve;
pub mod scp;
pub mod store_scu;
pub mod syntax;
pub(crate) mod tls;

pub use echo::{EchoVerdict, echo};
pub use find::{
    FindQuery, InstanceMatch, QueryLevel, QueryModel, SeriesMatch, StudyMatch, find_instances, find_series,
    find_studies,
};
pub use node::{NodeBook, PacsNode};
pub use retrieve::{
    FailedInstance, RetrieveOptions, RetrieveProgress, RetrieveReport, RetrieveRequest, retrieve_get, retrieve_move,
};
pub use scp::{ScpCommit, ScpConfig, ScpEvent, ScpHandle, start_scp};
pub use store_scu::{SendFailure, StoreReport, store_files};
