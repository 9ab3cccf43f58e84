//! Lucent's Store SCP: a listener that accepts C-STORE pushes (and C-MOVE deliveries) into the
//! local store, answers C-ECHO, rejects calling AE titles not on the allow-list, and refuses
//! presentation contexts of SOP classes that are not storage classes.
//!
//! Threads: `lucent-scp` accepts connections; each association runs on its own
//! `lucent-scp-assoc-N` with its own store connection. Each instance is written atomically and
//! indexed before the C-STORE-RSP is sent, so a sender (or a C-MOVE) that saw success finds the
//! instance in the store. Every arrival, failure, echo and rejection is reported on a bounded
//! channel: drain it (or drop the receiver); a full channel slows the SCP down, it never grows
//! without bound. [`ScpHandle::shutdown`] (or dropping the handle) stops everything.
//!
//! With a certificate and key ([`ScpConfig::tls_cert_file`], [`ScpConfig::tls_key_file`]) the SCP
//! speaks DICOM TLS only; with [`ScpConfig::tls_client_ca_file`] client certificates are
//! required. A plain client on a TLS SCP, or a TLS client on a plain one, is refused at once with
//! a `Rejected` event that says so.
//!
//! `dicom-ul` (with its TLS feature) loops forever when a connection ends before its first
//! message is whole (it then tries to read the bytes it got as a TLS ClientHello). So a
//! connection is handed to it only once its first message (the A-ASSOCIATE-RQ PDU, or the TLS
//! ClientHello) has fully arrived, peeked at without being consumed; a client that closes, stays
//! silent for the timeout, or starts with anything else is refused here.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, bounded};
use dicom_ul::association::server::{AccessControl, ServerAssociation, ServerAssociationOptions};
use dicom_ul::association::{Association as _, SyncAssociation as _};
use dicom_ul::pdu::{AssociationRJServiceUserReason, UserIdentity};
use serde::{Deserialize, Serialize};

use super::dimse::{
    self, C_ECHO_RQ, C_ECHO_RSP, C_STORE_RQ, Context, Incoming, LOCAL_MAX_PDU, Link, STATUS_CANNOT_UNDERSTAND,
    STATUS_OUT_OF_RESOURCES, STATUS_PROCESSING_FAILURE, STATUS_SOP_CLASS_NOT_SUPPORTED, STATUS_SUCCESS,
    STATUS_UNRECOGNIZED_OPERATION,
};
use super::echo::VERIFICATION_SOP_CLASS;
use super::node::{seconds, validate_ae_title};
use super::syntax::{STORAGE_SOP_CLASSES, is_storage_sop_class};
use super::tls::{self, Transport};
use crate::error::{Error, Result};
use crate::store::{ConflictKind, Store, StoredCopy, validate_identity};

/// How the Store SCP listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScpConfig {
    /// Our AE title (the called AE title senders must use when `check_called_ae`).
    pub ae_title: String,
    /// TCP port (0: any free port; see [`ScpHandle::local_addr`]).
    pub port: u16,
    /// Address to listen on: loopback by default; another address (0.0.0.0 for every interface)
    /// is an explicit choice.
    pub bind_address: IpAddr,
    /// Calling AE titles allowed to associate. Empty: nobody (every association is refused).
    pub allowed_calling_aes: Vec<String>,
    /// Reject associations whose called AE title is not ours.
    pub check_called_ae: bool,
    /// Time a sender may stay silent during an association, seconds.
    pub timeout_s: f64,
    /// Associations served at once; more are closed at once.
    pub max_associations: usize,
    /// Connections from one IP address at once (so that one peer cannot take every slot).
    #[serde(default = "default_max_per_peer")]
    pub max_associations_per_peer: usize,
    /// Time a new connection has to send its whole first message, seconds.
    #[serde(default = "default_handshake_timeout_s")]
    pub handshake_timeout_s: f64,
    /// Longest an association may last, seconds.
    #[serde(default = "default_max_association_s")]
    pub max_association_s: f64,
    /// Largest data set accepted in one C-STORE, bytes.
    #[serde(default = "default_max_data_set_bytes")]
    pub max_data_set_bytes: usize,
    /// Memory all associations together may hold for data sets being received, bytes.
    #[serde(default = "default_max_in_flight_bytes")]
    pub max_in_flight_bytes: usize,
    /// Capacity of the event channel.
    pub event_capacity: usize,
    /// DICOM TLS: the SCP's certificate chain (PEM). With [`tls_key_file`](Self::tls_key_file)
    /// the SCP accepts TLS connections only.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// DICOM TLS: the private key (PEM) of [`tls_cert_file`](Self::tls_cert_file).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// DICOM TLS: require client certificates issued by the CA certificates of this PEM file.
    /// `None`: no client certificate is asked for.
    #[serde(default)]
    pub tls_client_ca_file: Option<PathBuf>,
    /// When a received instance is made durable (see [`ScpCommit`]).
    #[serde(default)]
    pub commit: ScpCommit,
}

/// When the SCP makes what it receives durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScpCommit {
    /// Each instance is written, fsynced and indexed before its C-STORE-RSP: a sender that saw
    /// success may delete its copy. For pushes from modalities and other senders.
    #[default]
    PerInstance,
    /// Each instance is answered once received whole and valid; writer threads write and fsync
    /// the instances in parallel and they are put in place and indexed in batches, all before the
    /// A-RELEASE-RP. A C-MOVE's final response comes after that release, so a retrieve sees
    /// every instance in the store; a write that fails after its success answer is reported as a
    /// `Failed` event (and a retrieve finds it missing and can fetch it again). For retrieves
    /// from an archive that keeps its copy.
    AtRelease,
}

fn default_max_per_peer() -> usize {
    4
}
fn default_handshake_timeout_s() -> f64 {
    10.0
}
fn default_max_association_s() -> f64 {
    4.0 * 3600.0
}
fn default_max_data_set_bytes() -> usize {
    1 << 30
}
fn default_max_in_flight_bytes() -> usize {
    2 << 30
}

impl ScpConfig {
    /// Listens on loopback at `port` as `ae_title`; nobody is allowed until
    /// [`allowed_calling_aes`](Self::allowed_calling_aes) names them.
    pub fn new(ae_title: &str, port: u16) -> Self {
        Self {
            ae_title: ae_title.to_owned(),
            port,
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            allowed_calling_aes: Vec::new(),
            check_called_ae: true,
            timeout_s: 30.0,
            max_associations: 16,
            max_associations_per_peer: default_max_per_peer(),
            handshake_timeout_s: default_handshake_timeout_s(),
            max_association_s: default_max_association_s(),
            max_data_set_bytes: default_max_data_set_bytes(),
            max_in_flight_bytes: default_max_in_flight_bytes(),
            event_capacity: 1024,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            commit: ScpCommit::PerInstance,
        }
    }

    /// Whether the SCP speaks DICOM TLS.
    pub fn tls(&self) -> bool {
        self.tls_cert_file.is_some() || self.tls_key_file.is_some()
    }

    /// The TLS acceptor configuration, when TLS is on (checks the files now).
    fn tls_config(&self) -> Result<Option<Arc<rustls::ServerConfig>>> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => {
                if self.tls_client_ca_file.is_some() {
                    return Err(Error::InvalidNode {
                        reason: "a TLS client CA file needs the SCP's TLS certificate and key".to_owned(),
                    });
                }
                Ok(None)
            }
            (Some(cert), Some(key)) => tls::server_config(cert, key, self.tls_client_ca_file.as_deref()).map(Some),
            _ => Err(Error::InvalidNode {
                reason: "the SCP's TLS certificate needs its private key, and back".to_owned(),
            }),
        }
    }
}

/// What the SCP reports. (No patient data: UIDs and AE titles only.)
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ScpEvent {
    /// An instance is in the store (`new: false` when it was already there).
    Stored {
        calling_ae: String,
        sop_class_uid: String,
        sop_instance_uid: String,
        study_uid: String,
        series_uid: String,
        bytes: u64,
        new: bool,
    },
    /// A C-STORE was answered with a failure status.
    Failed { calling_ae: String, sop_instance_uid: String, status: u16, reason: String },
    /// A C-ECHO was answered.
    Echo { calling_ae: String },
    /// An association request was rejected (unknown calling AE, wrong called AE) or failed.
    Rejected { calling_ae: String, reason: String },
    /// An association ended (released, aborted or failed).
    Ended { calling_ae: String, stored: usize, failed: usize, error: Option<String> },
}

/// State shared by the listener, the association threads and the handle.
struct Shared {
    stop: AtomicBool,
    active: AtomicUsize,
    /// Connections open per peer IP address.
    per_peer: Mutex<HashMap<IpAddr, usize>>,
    /// Memory for data sets being received, shared by all associations.
    budget: Arc<dimse::ByteBudget>,
    next_id: AtomicU64,
    sockets: Mutex<HashMap<u64, TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A running Store SCP. Dropping it shuts it down.
pub struct ScpHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    listener: Option<JoinHandle<()>>,
}

impl ScpHandle {
    /// The address actually bound (the port, when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Associations being served now.
    pub fn active_associations(&self) -> usize {
        self.shared.active.load(Ordering::Relaxed)
    }

    /// Stops listening, closes open associations and waits for every thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let Some(listener) = self.listener.take() else { return };
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let wake_ip = match self.local_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let _ = TcpStream::connect_timeout(&SocketAddr::new(wake_ip, self.local_addr.port()), Duration::from_secs(1));
        let _ = listener.join();
        if let Ok(sockets) = self.shared.sockets.lock() {
            for socket in sockets.values() {
                let _ = socket.shutdown(std::net::Shutdown::Both);
            }
        }
        let threads = self.shared.threads.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for ScpHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Starts the Store SCP, storing into the store at `store_root`.
pub fn start_scp(config: &ScpConfig, store_root: &Path) -> Result<(ScpHandle, Receiver<ScpEvent>)> {
    validate_ae_title(&config.ae_title, "the SCP AE title")?;
    for ae in &config.allowed_calling_aes {
        validate_ae_title(ae, "an allowed calling AE title")?;
    }
    let tls = config.tls_config()?;
    // Create the store (and fail early if it cannot be opened).
    drop(Store::open(store_root)?);
    let bind = SocketAddr::new(config.bind_address, config.port);
    let listener = TcpListener::bind(bind)
        .map_err(|e| Error::Network { peer: format!("listener {bind}"), detail: e.to_string() })?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| Error::Network { peer: format!("listener {bind}"), detail: e.to_string() })?;
    let (events_tx, events_rx) = bounded(config.event_capacity.max(1));
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        active: AtomicUsize::new(0),
        per_peer: Mutex::new(HashMap::new()),
        budget: Arc::new(dimse::ByteBudget::new(config.max_in_flight_bytes.max(1))),
        next_id: AtomicU64::new(0),
        sockets: Mutex::new(HashMap::new()),
        threads: Mutex::new(Vec::new()),
    });
    let thread_shared = Arc::clone(&shared);
    let config = config.clone();
    let root = store_root.to_path_buf();
    let listener_thread = std::thread::Builder::new()
        .name("lucent-scp".to_owned())
        .spawn(move || listen(&listener, &config, tls.as_ref(), &root, &events_tx, &thread_shared))
        .map_err(|e| Error::Network { peer: format!("listener {local_addr}"), detail: e.to_string() })?;
    Ok((ScpHandle { local_addr, shared, listener: Some(listener_thread) }, events_rx))
}

fn listen(
    listener: &TcpListener,
    config: &ScpConfig,
    tls: Option<&Arc<rustls::ServerConfig>>,
    root: &Path,
    events: &Sender<ScpEvent>,
    shared: &Arc<Shared>,
) {
    for connection in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match connection {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!("Store SCP accept failed: {e}");
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        // Forget finished association threads.
        if let Ok(mut threads) = shared.threads.lock() {
            let (done, running): (Vec<_>, Vec<_>) =
                std::mem::take(&mut *threads).into_iter().partition(|t| t.is_finished());
            *threads = running;
            for t in done {
                let _ = t.join();
            }
        }
        if shared.active.load(Ordering::SeqCst) >= config.max_associations.max(1) {
            tracing::warn!("Store SCP: too many associations, closing a new connection");
            let _ = stream.shutdown(std::net::Shutdown::Both);
            continue;
        }
        let peer_ip = stream.peer_addr().map(|a| canonical_ip(a.ip())).ok();
        if let Some(ip) = peer_ip
            && !take_peer_slot(shared, ip, config.max_associations_per_peer.max(1))
        {
            tracing::warn!("Store SCP: too many connections from one peer, closing a new one");
            emit(
                events,
                shared,
                ScpEvent::Rejected {
                    calling_ae: String::new(),
                    reason: format!(
                        "{ip}: more than {} connections at once from one address",
                        config.max_associations_per_peer.max(1)
                    ),
                },
            );
            let _ = stream.shutdown(std::net::Shutdown::Both);
            continue;
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone()
            && let Ok(mut sockets) = shared.sockets.lock()
        {
            sockets.insert(id, clone);
        }
        shared.active.fetch_add(1, Ordering::SeqCst);
        let (config, tls, root, events, thread_shared) =
            (config.clone(), tls.cloned(), root.to_path_buf(), events.clone(), Arc::clone(shared));
        let spawned = std::thread::Builder::new().name(format!("lucent-scp-assoc-{id}")).spawn(move || {
            serve(stream, &config, tls.as_ref(), &root, &events, &thread_shared);
            if let Ok(mut sockets) = thread_shared.sockets.lock() {
                sockets.remove(&id);
            }
            if let Some(ip) = peer_ip {
                give_peer_slot(&thread_shared, ip);
            }
            thread_shared.active.fetch_sub(1, Ordering::SeqCst);
        });
        match spawned {
            Ok(handle) => {
                if let Ok(mut threads) = shared.threads.lock() {
                    threads.push(handle);
                }
            }
            Err(e) => {
                tracing::warn!("Store SCP: cannot start an association thread: {e}");
                shared.active.fetch_sub(1, Ordering::SeqCst);
                if let Some(ip) = peer_ip {
                    give_peer_slot(shared, ip);
                }
                if let Ok(mut sockets) = shared.sockets.lock()
                    && let Some(s) = sockets.remove(&id)
                {
                    let _ = s.shutdown(std::net::Shutdown::Both);
                }
            }
        }
    }
}

/// An IPv4 peer seen through an IPv6 socket counts as the IPv4 address.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Takes one of `ip`'s connection slots, unless it has `limit` already.
fn take_peer_slot(shared: &Shared, ip: IpAddr, limit: usize) -> bool {
    let Ok(mut peers) = shared.per_peer.lock() else { return false };
    let open = peers.entry(ip).or_insert(0);
    if *open >= limit {
        return false;
    }
    *open += 1;
    true
}

fn give_peer_slot(shared: &Shared, ip: IpAddr) {
    if let Ok(mut peers) = shared.per_peer.lock()
        && let Some(open) = peers.get_mut(&ip)
    {
        *open = open.saturating_sub(1);
        if *open == 0 {
            peers.remove(&ip);
        }
    }
}

/// Sends an event, waiting while the channel is full unless the SCP is stopping.
fn emit(events: &Sender<ScpEvent>, shared: &Shared, mut event: ScpEvent) {
    loop {
        match events.send_timeout(event, Duration::from_millis(100)) {
            Ok(()) | Err(SendTimeoutError::Disconnected(_)) => return,
            Err(SendTimeoutError::Timeout(back)) => {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                event = back;
            }
        }
    }
}

/// The allow-list check made while the association is negotiated.
struct AllowList {
    ours: String,
    allowed: Vec<String>,
    check_called: bool,
    /// (calling AE, reason) of a refusal, for the event.
    refused: Rc<RefCell<Option<(String, String)>>>,
}

impl AccessControl for AllowList {
    fn check_access(
        &self,
        _this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> std::result::Result<(), AssociationRJServiceUserReason> {
        let calling = calling_ae_title.trim();
        let refuse = |reason: &str, code| {
            *self.refused.borrow_mut() = Some((calling.to_owned(), reason.to_owned()));
            Err(code)
        };
        if self.check_called && called_ae_title.trim() != self.ours.trim() {
            return refuse(
                &format!("called AE title {:?} is not ours", called_ae_title.trim()),
                AssociationRJServiceUserReason::CalledAETitleNotRecognized,
            );
        }
        // An empty allow-list allows nobody: a receiver open to any sender is never a default.
        if !self.allowed.iter().any(|a| a.trim() == calling) {
            return refuse(
                if self.allowed.is_empty() {
                    "no calling AE title is allowed (the allow-list is empty)"
                } else {
                    "calling AE title not on the allow-list"
                },
                AssociationRJServiceUserReason::CallingAETitleNotRecognized,
            );
        }
        Ok(())
    }
}

/// What the Link needs from a negotiated association: calling AE title, accepted contexts, the
/// requestor's largest PDU, and the bytes `dicom-ul` read past the A-ASSOCIATE-RQ.
fn negotiated<S>(association: &mut ServerAssociation<S>) -> (String, Vec<Context>, u32, Vec<u8>)
where
    S: std::io::Read + std::io::Write + dicom_ul::association::CloseSocket,
{
    let calling_ae = association.peer_ae_title().trim().to_owned();
    let contexts = Context::accepted(association.presentation_contexts());
    let peer_max_pdu = association.requestor_max_pdu_length();
    let prefix = association.get_mut().1.split().to_vec();
    (calling_ae, contexts, peer_max_pdu, prefix)
}

/// One association, from negotiation to release.
fn serve(
    stream: TcpStream,
    config: &ScpConfig,
    tls: Option<&Arc<rustls::ServerConfig>>,
    root: &Path,
    events: &Sender<ScpEvent>,
    shared: &Shared,
) {
    let address = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "unknown address".to_owned());
    let timeout = seconds(config.timeout_s);
    let handshake_timeout = seconds(config.handshake_timeout_s).min(timeout);
    let refused = Rc::new(RefCell::new(None));
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(AllowList {
            ours: config.ae_title.clone(),
            allowed: config.allowed_calling_aes.clone(),
            check_called: config.check_called_ae,
            refused: Rc::clone(&refused),
        })
        .ae_title(config.ae_title.trim().to_owned())
        .max_pdu_length(LOCAL_MAX_PDU)
        .strict(false)
        .read_timeout(timeout)
        .write_timeout(timeout)
        .with_abstract_syntax(VERIFICATION_SOP_CLASS);
    for class in STORAGE_SOP_CLASSES {
        options = options.with_abstract_syntax(*class);
    }
    let _ = stream.set_nodelay(true);
    let reject = |reason: String| {
        if !shared.stop.load(Ordering::SeqCst) {
            emit(events, shared, ScpEvent::Rejected { calling_ae: String::new(), reason });
        }
    };
    let refusal = |e: dicom_ul::association::Error| {
        refused.borrow_mut().take().unwrap_or_else(|| {
            (String::new(), dimse::ul_error(e, &address, timeout, "negotiating the association").to_string())
        })
    };
    // Negotiate (over TLS when configured), then take the connection out of `dicom-ul`.
    let handed = match tls {
        None => {
            if let Err(reason) =
                wait_for_first_message(&stream, handshake_timeout, &shared.stop, association_request_ready)
            {
                reject(format!("{address}: {reason}"));
                return;
            }
            options.establish(stream).map_err(refusal).and_then(|mut association| {
                let (calling_ae, contexts, peer_max_pdu, prefix) = negotiated(&mut association);
                let socket = association.inner_stream().try_clone().map_err(|e| (calling_ae.clone(), e.to_string()))?;
                Ok((calling_ae, contexts, peer_max_pdu, prefix, Transport::Plain(socket)))
            })
        }
        Some(tls_config) => {
            if let Err(reason) = wait_for_first_message(&stream, handshake_timeout, &shared.stop, client_hello_ready) {
                reject(format!("{address}: {reason}"));
                return;
            }
            options.tls_config(Arc::clone(tls_config)).establish_tls(stream).map_err(refusal).and_then(
                |mut association| {
                    let (calling_ae, contexts, peer_max_pdu, prefix) = negotiated(&mut association);
                    let stream = tls::take_server_stream(association.inner_stream(), tls_config)
                        .map_err(|e| (calling_ae.clone(), e.to_string()))?;
                    Ok((calling_ae, contexts, peer_max_pdu, prefix, Transport::Server(Box::new(stream))))
                },
            )
        }
    };
    let (calling_ae, contexts, peer_max_pdu, prefix, transport) = match handed {
        Ok(handed) => handed,
        Err((calling_ae, reason)) => {
            if !shared.stop.load(Ordering::SeqCst) {
                emit(events, shared, ScpEvent::Rejected { calling_ae, reason });
            }
            return;
        }
    };
    let peer = format!("{calling_ae}@{address}");
    let link = Link::new(transport, prefix, contexts, peer_max_pdu, peer, timeout, None);
    let mut tally = (0usize, 0usize);
    let deadline = Instant::now() + seconds(config.max_association_s);
    let served = Served { calling_ae: &calling_ae, root, events, shared, deadline };
    let result = link.and_then(|mut link| {
        link.limit_data_sets(config.max_data_set_bytes.max(1), Arc::clone(&shared.budget));
        let result = match config.commit {
            ScpCommit::PerInstance => serve_link(&mut link, &served, &mut tally),
            ScpCommit::AtRelease => serve_link_batched(&mut link, &served, &mut tally),
        };
        if result.is_err() {
            link.abort();
        }
        result
    });
    let error = match result {
        Ok(()) => None,
        Err(_) if shared.stop.load(Ordering::SeqCst) => Some("the SCP is shutting down".to_owned()),
        Err(e) => Some(e.to_string()),
    };
    emit(events, shared, ScpEvent::Ended { calling_ae, stored: tally.0, failed: tally.1, error });
}

/// Whether the bytes a client sent so far hold its whole first message.
enum FirstMessage {
    Whole,
    Partial,
    Refused(String),
}

/// How often a wait for a first message looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);

/// The largest first message waited for.
const MAX_FIRST_MESSAGE: usize = 256 * 1024;

/// Waits, peeking without consuming, until `ready` finds the client's whole first message on
/// the socket; refuses a client that closes first, stays silent for `timeout`, or sends
/// something else (see the module docs). Gives up when `stop` is set. (A client that closes
/// after part of its message cannot be told from a slow one by peeking: it waits out the
/// timeout, sleeping.)
fn wait_for_first_message(
    stream: &TcpStream,
    timeout: Duration,
    stop: &AtomicBool,
    ready: fn(&[u8]) -> FirstMessage,
) -> std::result::Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_FIRST_MESSAGE];
    let mut seen = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let silent = || format!("no complete first message within {:.1} s", timeout.as_secs_f64());
        if left.is_zero() {
            return Err(silent());
        }
        if stop.load(Ordering::SeqCst) {
            return Err("the SCP is shutting down".to_owned());
        }
        stream.set_read_timeout(Some(left.min(STOP_POLL))).map_err(|e| e.to_string())?;
        let n = match stream.peek(&mut buf) {
            Ok(0) => return Err("the client closed the connection before its first message".to_owned()),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        };
        match ready(&buf[..n]) {
            FirstMessage::Whole => return Ok(()),
            FirstMessage::Refused(reason) => return Err(reason),
            FirstMessage::Partial if n >= buf.len() => return Err("the first message is too large".to_owned()),
            FirstMessage::Partial => {}
        }
        if n == seen {
            // Peeking returns at once while data waits: give the rest time to arrive.
            std::thread::sleep(Duration::from_millis(5));
        }
        seen = n;
    }
}

/// A plain SCP's first message: an A-ASSOCIATE-RQ PDU (type 0x01, 6-byte header).
fn association_request_ready(bytes: &[u8]) -> FirstMessage {
    match bytes.first() {
        Some(0x16) => {
            return FirstMessage::Refused(
                "TLS failed: the client started a TLS handshake, and this SCP does not speak TLS".to_owned(),
            );
        }
        Some(0x01) | None => {}
        Some(other) => {
            return FirstMessage::Refused(format!(
                "the first message is not an A-ASSOCIATE-RQ (PDU type {other:#04x})"
            ));
        }
    }
    if bytes.len() < 6 {
        return FirstMessage::Partial;
    }
    let len = u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]) as usize;
    if len + 6 > MAX_FIRST_MESSAGE {
        return FirstMessage::Refused(format!("A-ASSOCIATE-RQ of {len} bytes refused"));
    }
    if bytes.len() >= 6 + len { FirstMessage::Whole } else { FirstMessage::Partial }
}

/// A TLS SCP's first message: a ClientHello, in one or more handshake records (type 0x16).
fn client_hello_ready(bytes: &[u8]) -> FirstMessage {
    if bytes.first().is_some_and(|&b| b != 0x16) {
        return FirstMessage::Refused(
            "TLS failed: the client did not start a TLS handshake (plain DICOM on the TLS port?)".to_owned(),
        );
    }
    // The handshake bytes of the complete records so far.
    let mut handshake = Vec::new();
    let mut pos = 0;
    while pos + 5 <= bytes.len() && bytes[pos] == 0x16 {
        let len = usize::from(u16::from_be_bytes([bytes[pos + 3], bytes[pos + 4]]));
        if pos + 5 + len > bytes.len() {
            break;
        }
        handshake.extend_from_slice(&bytes[pos + 5..pos + 5 + len]);
        pos += 5 + len;
    }
    if handshake.len() < 4 {
        return FirstMessage::Partial;
    }
    let need = 4 + (usize::from(handshake[1]) << 16 | usize::from(handshake[2]) << 8 | usize::from(handshake[3]));
    if need > MAX_FIRST_MESSAGE / 2 {
        return FirstMessage::Refused("TLS failed: the ClientHello is too large".to_owned());
    }
    if handshake.len() >= need { FirstMessage::Whole } else { FirstMessage::Partial }
}

/// Answers a command that is not a C-STORE: C-ECHO, or "unrecognised operation" (after reading
/// and dropping its data set).
fn answer_other(
    link: &mut Link<'_>,
    context: u8,
    command: &dimse::Command,
    calling_ae: &str,
    events: &Sender<ScpEvent>,
    shared: &Shared,
) -> Result<()> {
    match command.field() {
        C_ECHO_RQ => {
            link.send_command(context, &dimse::response(C_ECHO_RSP, command, STATUS_SUCCESS))?;
            emit(events, shared, ScpEvent::Echo { calling_ae: calling_ae.to_owned() });
        }
        other => {
            if command.has_data_set() {
                let mut sink = Vec::new();
                link.receive_data_set(context, &mut sink)?;
            }
            link.send_command(context, &dimse::response(other | 0x8000, command, STATUS_UNRECOGNIZED_OPERATION))?;
        }
    }
    Ok(())
}

/// What an association's loop needs besides its link.
struct Served<'a> {
    calling_ae: &'a str,
    root: &'a Path,
    events: &'a Sender<ScpEvent>,
    shared: &'a Shared,
    /// When the association has lasted long enough (see [`ScpConfig::max_association_s`]).
    deadline: Instant,
}

impl Served<'_> {
    fn check_deadline(&self) -> Result<()> {
        if Instant::now() > self.deadline {
            return Err(Error::Network {
                peer: self.calling_ae.to_owned(),
                detail: "the association lasted longer than the SCP allows".to_owned(),
            });
        }
        Ok(())
    }
}

fn serve_link(link: &mut Link<'_>, served: &Served<'_>, tally: &mut (usize, usize)) -> Result<()> {
    let Served { calling_ae, root, events, shared, .. } = *served;
    let mut store = Store::open(root)?;
    let mut size_hint = 0usize;
    loop {
        served.check_deadline()?;
        let (context, command) = match link.receive_command()? {
            Incoming::Released => return Ok(()),
            Incoming::Command { context, command } => (context, command),
        };
        match command.field() {
            C_STORE_RQ => {
                let received = link.receive_instance(context, &command, Vec::new(), size_hint)?;
                size_hint = size_hint.max(received.data_set_len());
                let (status, event) = store_received(&mut store, received, calling_ae);
                link.release_budget();
                link.send_store_response(context, &command, status)?;
                record(events, shared, tally, event);
            }
            _ => answer_other(link, context, &command, calling_ae, events, shared)?,
        }
    }
}

/// Writer threads of an association that commits at release (each writes and fsyncs).
const BATCHED_WRITERS: usize = 2;

/// [`serve_link`] for [`ScpCommit::AtRelease`]: answers each valid instance at once, writes
/// through the writer pool, and answers the A-RELEASE-RQ only once everything is synced and
/// indexed.
fn serve_link_batched(link: &mut Link<'_>, served: &Served<'_>, tally: &mut (usize, usize)) -> Result<()> {
    let Served { calling_ae, root, events, shared, .. } = *served;
    let mut store = Store::open(root)?;
    link.defer_release();
    let mut size_hint = 0usize;
    let mut answered: Vec<ScpEvent> = Vec::new();
    let pool = crate::writers::with_writer_pool(&mut store, BATCHED_WRITERS, |writing| {
        loop {
            served.check_deadline()?;
            let (context, command) = match link.receive_command()? {
                Incoming::Released => return Ok(()),
                Incoming::Command { context, command } => (context, command),
            };
            match command.field() {
                C_STORE_RQ => {
                    let received = link.receive_instance(context, &command, writing.buffer(), size_hint)?;
                    size_hint = size_hint.max(received.data_set_len());
                    let (status, event) = match check_received(writing.store, &received, calling_ae) {
                        Verdict::AlreadyThere(event) => (STATUS_SUCCESS, Some(event)),
                        // Answered before it is indexed: a conflict seen now is kept aside now.
                        Verdict::New { info, conflict: Some(kind), .. } => {
                            let (status, event) = keep_aside(writing.store, &info, &received.bytes, kind, calling_ae);
                            (status, Some(event))
                        }
                        Verdict::New { stored, .. } => {
                            let sop_instance = received.sop_instance.clone();
                            writing.submit(crate::writers::WriteJob { sop_instance, bytes: received.bytes })?;
                            answered.push(stored);
                            (STATUS_SUCCESS, None)
                        }
                        Verdict::Refused(status, event) => (status, Some(event)),
                    };
                    // Handed to the writers (whose own budget bounds what waits there).
                    link.release_budget();
                    link.send_store_response(context, &command, status)?;
                    writing.poll()?;
                    if let Some(event) = event {
                        record(events, shared, tally, event);
                    }
                }
                _ => answer_other(link, context, &command, calling_ae, events, shared)?,
            }
        }
    });
    // Everything answered is now written, synced and indexed, or failed.
    for event in answered {
        let lost = match &event {
            ScpEvent::Stored { sop_instance_uid, .. } => pool
                .failed
                .iter()
                .find(|f| &f.sop_instance_uid == sop_instance_uid)
                .map(|f| failed_answer(calling_ae, STATUS_OUT_OF_RESOURCES, f.reason.clone(), sop_instance_uid).1),
            _ => None,
        };
        record(events, shared, tally, lost.unwrap_or(event));
    }
    pool.outcome?;
    link.answer_release()
}

/// Counts a C-STORE's outcome in `tally` (stored, failed) and reports it.
fn record(events: &Sender<ScpEvent>, shared: &Shared, tally: &mut (usize, usize), event: ScpEvent) {
    if matches!(event, ScpEvent::Stored { .. }) {
        tally.0 += 1;
    } else {
        tally.1 += 1;
    }
    emit(events, shared, event);
}

/// Writes and indexes a received instance; the status to answer and the event to report.
fn store_received(store: &mut Store, received: dimse::Received, calling_ae: &str) -> (u16, ScpEvent) {
    let (info, stored) = match check_received(store, &received, calling_ae) {
        Verdict::AlreadyThere(event) => return (STATUS_SUCCESS, event),
        // A conflict seen ahead is found again, race-free, when indexing.
        Verdict::New { info, stored, .. } => (info, stored),
        Verdict::Refused(status, event) => return (status, event),
    };
    match store.write_file(&info, &received.bytes).and_then(|s| store.index(&[s])) {
        Ok(indexed) => match indexed.conflicts.first() {
            None => (STATUS_SUCCESS, stored),
            Some(c) => conflict_answer(calling_ae, c.kind, &info.sop_instance_uid),
        },
        Err(e) => failed_answer(calling_ae, STATUS_OUT_OF_RESOURCES, e.to_string(), &info.sop_instance_uid),
    }
}

/// Keeps a received instance aside as a conflict (recorded in the store) and answers a failure.
fn keep_aside(
    store: &mut Store,
    info: &crate::attrs::InstanceInfo,
    bytes: &[u8],
    kind: ConflictKind,
    calling_ae: &str,
) -> (u16, ScpEvent) {
    match store.keep_aside(info, bytes, kind).and_then(|s| store.index(&[s])) {
        Ok(_) => conflict_answer(calling_ae, kind, &info.sop_instance_uid),
        Err(e) => failed_answer(calling_ae, STATUS_OUT_OF_RESOURCES, e.to_string(), &info.sop_instance_uid),
    }
}

/// The answer to an instance kept aside: a processing failure, so the sender does not take it
/// as filed (nothing is lost: the store keeps it for review).
fn conflict_answer(calling_ae: &str, kind: ConflictKind, uid: &str) -> (u16, ScpEvent) {
    failed_answer(calling_ae, STATUS_PROCESSING_FAILURE, format!("not filed, kept aside for review: {kind}"), uid)
}

/// A C-STORE failure: the status to answer and the event to report.
fn failed_answer(calling_ae: &str, status: u16, reason: String, uid: &str) -> (u16, ScpEvent) {
    (status, ScpEvent::Failed { calling_ae: calling_ae.to_owned(), sop_instance_uid: uid.to_owned(), status, reason })
}

/// What the SCP does with a received instance.
enum Verdict {
    /// In the store already: nothing to write.
    AlreadyThere(ScpEvent),
    /// To be written; `stored` is the event to report once it is; `conflict` when filing it
    /// would conflict with the index as it is now.
    New { info: Box<crate::attrs::InstanceInfo>, stored: ScpEvent, conflict: Option<ConflictKind> },
    /// Refused with this status.
    Refused(u16, ScpEvent),
}

/// Checks a received instance (command, storage class, readable header, already stored?).
fn check_received(store: &Store, received: &dimse::Received, calling_ae: &str) -> Verdict {
    let failed = |status: u16, reason: String, uid: &str| {
        let (status, event) = failed_answer(calling_ae, status, reason, uid);
        Verdict::Refused(status, event)
    };
    if !received.valid {
        return failed(
            STATUS_CANNOT_UNDERSTAND,
            "C-STORE without SOP class, instance or transfer syntax".into(),
            &received.sop_instance,
        );
    }
    if !is_storage_sop_class(&received.sop_class) {
        return failed(
            STATUS_SOP_CLASS_NOT_SUPPORTED,
            format!("SOP class {} is not a storage class", received.sop_class),
            &received.sop_instance,
        );
    }
    let info = match crate::file::read_info_bytes(&received.bytes) {
        Ok(info) => info,
        Err(e) => return failed(STATUS_CANNOT_UNDERSTAND, e.to_string(), &received.sop_instance),
    };
    // The patient and study an instance is filed under come from its own header, never a guess.
    if let Err(e) = validate_identity(&info) {
        return failed(
            STATUS_CANNOT_UNDERSTAND,
            format!("{e}: the study it belongs to cannot be known"),
            &received.sop_instance,
        );
    }
    // Pixel Data shorter than the header's rows x columns x frames says: never stored as a
    // success (a truncated image would be read as a whole one).
    if let Err(e) = check_pixel_data_length(&received.bytes[received.header_len..], &info) {
        return failed(STATUS_CANNOT_UNDERSTAND, e.to_string(), &received.sop_instance);
    }
    if info.sop_instance_uid != received.sop_instance.trim_matches(|c: char| c == '\0' || c == ' ') {
        return failed(
            STATUS_CANNOT_UNDERSTAND,
            "the data set's SOP Instance UID differs from the C-STORE request's".into(),
            &received.sop_instance,
        );
    }
    let bytes = received.data_set_len() as u64;
    let stored = |new| ScpEvent::Stored {
        calling_ae: calling_ae.to_owned(),
        sop_class_uid: info.sop_class_uid.clone(),
        sop_instance_uid: info.sop_instance_uid.clone(),
        study_uid: info.study_instance_uid.clone(),
        series_uid: info.series_instance_uid.clone(),
        bytes,
        new,
    };
    // Already stored: success only when the bytes are the same; other content is a conflict.
    let copy = match store.stored_copy(&info.sop_instance_uid, &received.bytes) {
        Ok(StoredCopy::Identical) => return Verdict::AlreadyThere(stored(false)),
        Ok(copy) => copy,
        Err(e) => return failed(STATUS_OUT_OF_RESOURCES, e.to_string(), &info.sop_instance_uid),
    };
    // In the order placement and indexing find them: stored elsewhere, then other content at the
    // same place, then a study or series filed under another patient or study.
    let conflict = match (store.precheck(&info), copy) {
        (Ok(Some(ConflictKind::InstanceElsewhere)), _) => Some(ConflictKind::InstanceElsewhere),
        (Ok(_), StoredCopy::Different) => Some(ConflictKind::DifferentContent),
        (Ok(conflict), _) => conflict,
        (Err(e), _) => return failed(STATUS_OUT_OF_RESOURCES, e.to_string(), &info.sop_instance_uid),
    };
    Verdict::New { stored: stored(true), info: Box::new(info), conflict }
}

/// Checks a received data set: every element fits in the bytes received, and native Pixel Data
/// holds at least the bytes the image header describes.
fn check_pixel_data_length(data_set: &[u8], info: &crate::attrs::InstanceInfo) -> Result<()> {
    let Some(pixel_bytes) = crate::limits::pixel_data_value_length(data_set, &info.transfer_syntax_uid)? else {
        return Ok(());
    };
    let bits = u64::from(info.bits_allocated);
    if info.rows == 0 || info.columns == 0 || bits == 0 {
        return Ok(());
    }
    let samples = u64::from(info.rows)
        * u64::from(info.columns)
        * u64::from(info.samples_per_pixel.max(1))
        * u64::from(info.number_of_frames.max(1));
    let expected = (samples * bits).div_ceil(8);
    if pixel_bytes < expected {
        return Err(Error::PixelDataLength { expected: expected as usize, actual: pixel_bytes as usize });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is(m: FirstMessage, want: &str) -> bool {
        match m {
            FirstMessage::Whole => want == "whole",
            FirstMessage::Partial => want == "partial",
            FirstMessage::Refused(reason) => want == "refused" && !reason.is_empty(),
        }
    }

    #[test]
    fn first_messages_are_waited_for_whole_and_mismatches_refused() {
        // A-ASSOCIATE-RQ: header, then 4 bytes of body.
        let rq = [0x01, 0x00, 0x00, 0x00, 0x00, 0x04, 1, 2, 3, 4];
        assert!(is(association_request_ready(&rq[..3]), "partial"));
        assert!(is(association_request_ready(&rq[..8]), "partial"));
        assert!(is(association_request_ready(&rq), "whole"));
        assert!(is(association_request_ready(&[0x16, 0x03, 0x01]), "refused"));
        assert!(is(association_request_ready(&[0x07, 0x00]), "refused"));
        // ClientHello (handshake type 1, 6 bytes of body) split over two records.
        let hello = [
            0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x06, 0xAA, // record 1: 5 bytes
            0x16, 0x03, 0x01, 0x00, 0x05, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF, // record 2: 5 bytes
        ];
        assert!(is(client_hello_ready(&hello[..7]), "partial"));
        assert!(is(client_hello_ready(&hello[..10]), "partial"));
        assert!(is(client_hello_ready(&hello[..19]), "partial"));
        assert!(is(client_hello_ready(&hello), "whole"));
        assert!(is(client_hello_ready(&rq), "refused"));
        let huge = [0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xFF, 0xFF, 0xFF];
        assert!(is(client_hello_ready(&huge), "refused"));
    }

    #[test]
    fn tls_needs_both_certificate_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ScpConfig::new("LUCENT", 0);
        config.bind_address = IpAddr::V4(Ipv4Addr::LOCALHOST);
        config.tls_cert_file = Some(dir.path().join("missing.pem"));
        assert!(matches!(start_scp(&config, dir.path()), Err(Error::InvalidNode { .. })));
        config.tls_key_file = Some(dir.path().join("missing.key"));
        // Both given, but the files do not exist: an I/O error naming the file.
        let err = start_scp(&config, dir.path()).err().unwrap();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        config.tls_cert_file = None;
        config.tls_key_file = None;
        config.tls_client_ca_file = Some(dir.path().join("ca.pem"));
        assert!(matches!(start_scp(&config, dir.path()), Err(Error::InvalidNode { .. })));
    }
}
