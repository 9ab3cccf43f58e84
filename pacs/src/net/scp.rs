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

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, bounded};
use dicom_ul::association::server::{AccessControl, ServerAssociationOptions};
use dicom_ul::association::{Association as _, SyncAssociation as _};
use dicom_ul::pdu::{AssociationRJServiceUserReason, UserIdentity};
use serde::{Deserialize, Serialize};

use super::dimse::{
    self, C_ECHO_RQ, C_ECHO_RSP, C_STORE_RQ, Context, Incoming, LOCAL_MAX_PDU, Link, STATUS_CANNOT_UNDERSTAND,
    STATUS_OUT_OF_RESOURCES, STATUS_SOP_CLASS_NOT_SUPPORTED, STATUS_SUCCESS, STATUS_UNRECOGNIZED_OPERATION,
};
use super::echo::VERIFICATION_SOP_CLASS;
use super::node::{seconds, validate_ae_title};
use super::syntax::{STORAGE_SOP_CLASSES, is_storage_sop_class};
use crate::error::{Error, Result};
use crate::store::Store;

/// How the Store SCP listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScpConfig {
    /// Our AE title (the called AE title senders must use when `check_called_ae`).
    pub ae_title: String,
    /// TCP port (0: any free port; see [`ScpHandle::local_addr`]).
    pub port: u16,
    /// Address to listen on (0.0.0.0: every interface).
    pub bind_address: IpAddr,
    /// Calling AE titles allowed to associate (empty: anyone).
    pub allowed_calling_aes: Vec<String>,
    /// Reject associations whose called AE title is not ours.
    pub check_called_ae: bool,
    /// Time a sender may stay silent during an association, seconds.
    pub timeout_s: f64,
    /// Associations served at once; more are closed at once.
    pub max_associations: usize,
    /// Capacity of the event channel.
    pub event_capacity: usize,
}

impl ScpConfig {
    /// Listens on every interface at `port` as `ae_title`, anyone allowed.
    pub fn new(ae_title: &str, port: u16) -> Self {
        Self {
            ae_title: ae_title.to_owned(),
            port,
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            allowed_calling_aes: Vec::new(),
            check_called_ae: true,
            timeout_s: 30.0,
            max_associations: 16,
            event_capacity: 1024,
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
        next_id: AtomicU64::new(0),
        sockets: Mutex::new(HashMap::new()),
        threads: Mutex::new(Vec::new()),
    });
    let thread_shared = Arc::clone(&shared);
    let config = config.clone();
    let root = store_root.to_path_buf();
    let listener_thread = std::thread::Builder::new()
        .name("lucent-scp".to_owned())
        .spawn(move || listen(&listener, &config, &root, &events_tx, &thread_shared))
        .map_err(|e| Error::Network { peer: format!("listener {local_addr}"), detail: e.to_string() })?;
    Ok((ScpHandle { local_addr, shared, listener: Some(listener_thread) }, events_rx))
}

fn listen(listener: &TcpListener, config: &ScpConfig, root: &Path, events: &Sender<ScpEvent>, shared: &Arc<Shared>) {
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
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone()
            && let Ok(mut sockets) = shared.sockets.lock()
        {
            sockets.insert(id, clone);
        }
        shared.active.fetch_add(1, Ordering::SeqCst);
        let (config, root, events, thread_shared) =
            (config.clone(), root.to_path_buf(), events.clone(), Arc::clone(shared));
        let spawned = std::thread::Builder::new().name(format!("lucent-scp-assoc-{id}")).spawn(move || {
            serve(stream, &config, &root, &events, &thread_shared);
            if let Ok(mut sockets) = thread_shared.sockets.lock() {
                sockets.remove(&id);
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
                if let Ok(mut sockets) = shared.sockets.lock()
                    && let Some(s) = sockets.remove(&id)
                {
                    let _ = s.shutdown(std::net::Shutdown::Both);
                }
            }
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
        if !self.allowed.is_empty() && !self.allowed.iter().any(|a| a.trim() == calling) {
            return refuse(
                "calling AE title not on the allow-list",
                AssociationRJServiceUserReason::CallingAETitleNotRecognized,
            );
        }
        Ok(())
    }
}

/// One association, from negotiation to release.
fn serve(stream: TcpStream, config: &ScpConfig, root: &Path, events: &Sender<ScpEvent>, shared: &Shared) {
    let address = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "unknown address".to_owned());
    let timeout = seconds(config.timeout_s);
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
    let mut association = match options.establish(stream) {
        Ok(a) => a,
        Err(e) => {
            let (calling_ae, reason) = refused.borrow_mut().take().unwrap_or_else(|| {
                (String::new(), dimse::ul_error(e, &address, timeout, "negotiating the association").to_string())
            });
            if !shared.stop.load(Ordering::SeqCst) {
                emit(events, shared, ScpEvent::Rejected { calling_ae, reason });
            }
            return;
        }
    };
    let calling_ae = association.peer_ae_title().trim().to_owned();
    let peer = format!("{calling_ae}@{address}");
    let contexts = Context::accepted(association.presentation_contexts());
    let peer_max_pdu = association.requestor_max_pdu_length();
    let link = association
        .inner_stream()
        .try_clone()
        .map_err(|e| Error::Network { peer: peer.clone(), detail: e.to_string() })
        .and_then(|s| {
            let prefix = association.get_mut().1.split().to_vec();
            Link::new(s, prefix, contexts, peer_max_pdu, peer.clone(), timeout, None)
        });
    drop(association);
    let mut tally = (0usize, 0usize);
    let result = link.and_then(|mut link| {
        let result = serve_link(&mut link, &calling_ae, root, events, shared, &mut tally);
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

fn serve_link(
    link: &mut Link<'_>,
    calling_ae: &str,
    root: &Path,
    events: &Sender<ScpEvent>,
    shared: &Shared,
    tally: &mut (usize, usize),
) -> Result<()> {
    let mut store = Store::open(root)?;
    let mut size_hint = 0usize;
    loop {
        let (context, command) = match link.receive_command()? {
            Incoming::Released => return Ok(()),
            Incoming::Command { context, command } => (context, command),
        };
        match command.field() {
            C_ECHO_RQ => {
                link.send_command(context, &dimse::response(C_ECHO_RSP, &command, STATUS_SUCCESS))?;
                emit(events, shared, ScpEvent::Echo { calling_ae: calling_ae.to_owned() });
            }
            C_STORE_RQ => {
                let received = link.receive_instance(context, &command, Vec::new(), size_hint)?;
                size_hint = size_hint.max(received.data_set_len());
                let (status, event) = store_received(&mut store, received, calling_ae);
                link.send_store_response(context, &command, status)?;
                match &event {
                    ScpEvent::Stored { .. } => tally.0 += 1,
                    _ => tally.1 += 1,
                }
                emit(events, shared, event);
            }
            other => {
                if command.has_data_set() {
                    let mut sink = Vec::new();
                    link.receive_data_set(context, &mut sink)?;
                }
                let rsp = dimse::response(other | 0x8000, &command, STATUS_UNRECOGNIZED_OPERATION);
                link.send_command(context, &rsp)?;
            }
        }
    }
}

/// Writes and indexes a received instance; the status to answer and the event to report.
fn store_received(store: &mut Store, received: dimse::Received, calling_ae: &str) -> (u16, ScpEvent) {
    let failed = |status: u16, reason: String, uid: &str| {
        (
            status,
            ScpEvent::Failed { calling_ae: calling_ae.to_owned(), sop_instance_uid: uid.to_owned(), status, reason },
        )
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
    match store.contains(&info.sop_instance_uid) {
        Ok(true) => return (STATUS_SUCCESS, stored(false)),
        Ok(false) => {}
        Err(e) => return failed(STATUS_OUT_OF_RESOURCES, e.to_string(), &info.sop_instance_uid),
    }
    let written = store.write_file(&info, &received.bytes).and_then(|s| store.index(&[s]));
    match written {
        Ok(_) => (STATUS_SUCCESS, stored(true)),
        Err(e) => failed(STATUS_OUT_OF_RESOURCES, e.to_string(), &info.sop_instance_uid),
    }
}
