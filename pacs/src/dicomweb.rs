//! DICOMweb: QIDO-RS search, WADO-RS retrieve into the local store, STOW-RS upload.
//!
//! * HTTP through `ureq` with rustls; HTTPS certificates are verified against Mozilla's roots, plus
//!   a hospital CA from [`WebNode::ca_file`] when given. There is no switch to turn verification off.
//! * Basic and bearer authentication ([`WebAuth`]). Passwords and tokens are [`Secret`]s: kept in
//!   the OS keyring or an encrypted file ([`crate::secrets`]), never in the node book, never
//!   printed. They are refused over plain `http://` to any host but this machine's loopback
//!   unless the node opts in ([`WebNode::allow_plain_http_credentials`]); to loopback they are
//!   sent with a warning in the log.
//! * WADO-RS asks for `transfer-syntax=*`, so the archive sends what it holds (no transcoding, and
//!   archives that cannot transcode JPEG 2000 still deliver). The `multipart/related` response is
//!   parsed as it streams in ([`MultipartReader`]); each part is written atomically into the store
//!   and indexed in batches, with progress and cancel between parts.
//! * Searches reuse the DIMSE types ([`FindQuery`], [`StudyMatch`], [`SeriesMatch`]) so the GUI
//!   and CLI show both the same way.
//!
//! Errors name the server (`host:port`), never the query string (it may hold a patient's name).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::net::find::{FindQuery, InstanceMatch, SeriesMatch, StudyMatch};
use crate::secrets::Secret;
use crate::store::Store;
use crate::writers::WriteJob;

/// How to authenticate to a DICOMweb server. In the node book a [`Secret`] is only a reference to
/// the secret store (books of older versions held it in plain text; they are migrated on load).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WebAuth {
    #[default]
    None,
    Basic {
        user: String,
        password: Secret,
    },
    Bearer {
        token: Secret,
    },
}

impl WebAuth {
    /// The password or token, if any.
    pub fn secret(&self) -> Option<&Secret> {
        match self {
            Self::None => None,
            Self::Basic { password, .. } => Some(password),
            Self::Bearer { token } => Some(token),
        }
    }

    pub(crate) fn secret_mut(&mut self) -> Option<&mut Secret> {
        match self {
            Self::None => None,
            Self::Basic { password, .. } => Some(password),
            Self::Bearer { token } => Some(token),
        }
    }

    /// "password" or "token", for messages.
    fn secret_name(&self) -> &'static str {
        match self {
            Self::Bearer { .. } => "bearer token",
            _ => "password",
        }
    }
}

/// A DICOMweb server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebNode {
    /// The user's name for the server.
    pub name: String,
    /// The service root, e.g. `https://pacs.example.org/dicom-web` (no trailing slash needed).
    pub base_url: String,
    #[serde(default)]
    pub auth: WebAuth,
    /// Time the server may stay silent (connect, or between reads), seconds.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
    /// Extra trusted root certificates (PEM), for a hospital's own CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Send the password or token even over plain `http://` to a host other than this machine's
    /// loopback (where anyone on the network path can read it). Off: such a node is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_plain_http_credentials: bool,
}

fn default_timeout_s() -> f64 {
    30.0
}

impl WebNode {
    pub fn new(name: &str, base_url: &str) -> Self {
        Self {
            name: name.to_owned(),
            base_url: base_url.to_owned(),
            auth: WebAuth::None,
            timeout_s: default_timeout_s(),
            ca_file: None,
            allow_plain_http_credentials: false,
        }
    }

    /// Checks the URL, the timeout, and how credentials would travel: a base URL with a user or
    /// password in it is refused (they belong in [`auth`](Self::auth), kept out of the book), and
    /// so is a password or token over plain `http://` to a host other than loopback unless
    /// [`allow_plain_http_credentials`](Self::allow_plain_http_credentials) is set.
    pub fn validate(&self) -> Result<()> {
        self.checked_base().map(|_| ())
    }

    /// The trimmed base URL and its `host:port`, after [`validate`](Self::validate)'s checks;
    /// logs a warning when credentials go over plain HTTP (loopback, or opted in).
    fn checked_base(&self) -> Result<(String, String)> {
        let invalid =
            |reason: String| Error::InvalidNode { reason: format!("DICOMweb node `{}`: {reason}", self.name) };
        let base = self.base_url.trim().trim_end_matches('/').to_owned();
        let peer = peer_of(&base).ok_or_else(|| invalid("the base URL must start with http:// or https://".into()))?;
        if authority_of(&base).contains('@') {
            return Err(invalid(
                "the base URL holds a user name or password; remove it from the URL and set the node's \
                 authentication instead (kept in the secret store, not in the node book)"
                    .into(),
            ));
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return Err(invalid("timeout must be positive".into()));
        }
        let plain_http = base.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://"));
        if plain_http && self.auth != WebAuth::None {
            let what = self.auth.secret_name();
            if is_loopback(&base) {
                tracing::warn!(
                    "DICOMweb node `{}`: sending its {what} over plain HTTP to {peer} (loopback only)",
                    self.name
                );
            } else if self.allow_plain_http_credentials {
                tracing::warn!(
                    "DICOMweb node `{}`: sending its {what} over plain HTTP to {peer}, as the node allows; \
                     anyone on the network path can read it",
                    self.name
                );
            } else {
                return Err(invalid(format!(
                    "refusing to send its {what} over plain http:// to {peer}, where anyone on the network \
                     path could read it. Use an https:// URL; or, only on a network you trust, allow it \
                     explicitly (`allow_plain_http_credentials`: `lucent pacs node add {} --url ... \
                     --allow-plain-http-credentials`, or the node editor's \"Allow credentials over plain \
                     HTTP\" box)",
                    self.name
                )));
            }
        }
        Ok((base, peer))
    }
}

/// Progress of a WADO-RS retrieve or a STOW-RS upload.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WebProgress {
    pub instances_done: usize,
    pub bytes_done: u64,
    pub elapsed_s: f64,
}

impl WebProgress {
    pub fn megabytes_per_s(&self) -> f64 {
        if self.elapsed_s > 0.0 { self.bytes_done as f64 / 1e6 / self.elapsed_s } else { 0.0 }
    }
}

/// What a WADO-RS retrieve brought.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebRetrieveSummary {
    /// Instances received and stored (new or already there).
    pub received: usize,
    /// Of those, newly indexed.
    pub added: usize,
    pub bytes: u64,
    pub elapsed_s: f64,
    /// Parts that were not DICOM objects (their reason, no patient data).
    pub rejected: Vec<String>,
}

/// What a STOW-RS upload did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StowSummary {
    pub stored: usize,
    /// SOP Instance UIDs the server refused, with its failure reason code.
    pub failed: Vec<(String, u16)>,
    pub bytes: u64,
    pub elapsed_s: f64,
}

/// Threads writing received instances (WADO-RS).
const WRITER_THREADS: usize = 4;
/// Largest STOW-RS request body; bigger uploads are split into several requests.
const STOW_BATCH_BYTES: usize = 64 << 20;

/// A connection-pooling client for one [`WebNode`].
pub struct DicomWebClient {
    node: WebNode,
    base: String,
    /// `host:port`, for messages.
    peer: String,
    agent: ureq::Agent,
    /// The `Authorization` header value (never printed).
    authorization: Option<Secret>,
}

impl std::fmt::Debug for DicomWebClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DicomWebClient").field("peer", &self.peer).finish_non_exhaustive()
    }
}

impl DicomWebClient {
    /// Checks the node and builds its HTTP agent (TCP_NODELAY, timeouts, TLS roots).
    pub fn new(node: &WebNode) -> Result<Self> {
        let (base, peer) = node.checked_base()?;
        let timeout = Some(Duration::from_secs_f64(node.timeout_s));
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = &node.ca_file {
            let pem = std::fs::read(ca).map_err(|e| Error::io(ca, e))?;
            let mut roots: Vec<ureq::tls::Certificate<'static>> = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                if let Ok(ureq::tls::PemItem::Certificate(cert)) = item {
                    roots.push(cert);
                }
            }
            if roots.is_empty() {
                return Err(Error::InvalidNode {
                    reason: format!("DICOMweb node `{}`: {} holds no PEM certificate", node.name, ca.display()),
                });
            }
            // Mozilla's roots stay trusted beside the hospital's CA.
            roots.extend(webpki_roots());
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .no_delay(true)
            .http_status_as_error(false)
            .timeout_connect(timeout)
            .timeout_per_read(timeout)
            .timeout_per_write(timeout)
            .user_agent(concat!("Lucent/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            .build()
            .into();
        let missing = || Error::Secret {
            detail: format!(
                "DICOMweb node `{}`: its {} could not be read from the secret store; enter it again (node \
                 editor, or `lucent pacs node add`)",
                node.name,
                node.auth.secret_name()
            ),
        };
        let authorization = match &node.auth {
            WebAuth::None => None,
            WebAuth::Basic { user, password } => {
                let password = password.expose().ok_or_else(missing)?;
                let pair = zeroize::Zeroizing::new(format!("{user}:{password}"));
                Some(Secret::new(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
                )))
            }
            WebAuth::Bearer { token } => {
                Some(Secret::new(format!("Bearer {}", token.expose().ok_or_else(missing)?.trim())))
            }
        };
        Ok(Self { node: node.clone(), base, peer, agent, authorization })
    }

    pub fn node(&self) -> &WebNode {
        &self.node
    }

    fn get(
        &self,
        path_and_query: &str,
        accept: &str,
        during: &'static str,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let mut req = self.agent.get(format!("{}{path_and_query}", self.base)).header("Accept", accept);
        if let Some(a) = self.authorization.as_ref().and_then(Secret::expose) {
            req = req.header("Authorization", a);
        }
        let response = req.call().map_err(|e| self.transport_error(e, during))?;
        self.check_status(response, during)
    }

    fn check_status(
        &self,
        response: ureq::http::Response<ureq::Body>,
        during: &'static str,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let meaning = match status {
            401 => "authentication failed: check the user and password or token",
            403 => "forbidden: the account may not do this",
            404 => "not found: check the base URL (e.g. .../dicom-web)",
            406 => "the server cannot send what was asked for",
            409 => "conflict: the server refused some instances",
            413 => "the upload is too large for the server",
            415 => "the server does not accept this media type",
            500..=599 => "the server failed",
            _ => "unexpected answer",
        };
        Err(Error::Network { peer: self.peer.clone(), detail: format!("{during}: HTTP {status} ({meaning})") })
    }

    fn transport_error(&self, e: ureq::Error, during: &'static str) -> Error {
        let peer = self.peer.clone();
        match e {
            ureq::Error::Timeout(_) => Error::Timeout { peer, timeout_s: self.node.timeout_s, during },
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                Error::ConnectionRefused { peer }
            }
            ureq::Error::Io(io)
                if io.kind() == std::io::ErrorKind::TimedOut || io.kind() == std::io::ErrorKind::WouldBlock =>
            {
                Error::Timeout { peer, timeout_s: self.node.timeout_s, during }
            }
            ureq::Error::Io(io) => Error::ConnectionLost { peer, detail: format!("{during}: {}", io.kind()) },
            ureq::Error::Tls(msg) => Error::Network { peer, detail: format!("{during}: TLS: {msg}") },
            ureq::Error::Rustls(e) => Error::Network { peer, detail: format!("{during}: TLS: {e}") },
            ureq::Error::HostNotFound => Error::Network { peer, detail: "host not found".into() },
            ureq::Error::ConnectionFailed => Error::ConnectionRefused { peer },
            // Other ureq errors describe the protocol, not the request's query.
            other => Error::Network { peer, detail: format!("{during}: {other}") },
        }
    }

    /// Reads a whole (small) response body as JSON.
    fn json(&self, response: ureq::http::Response<ureq::Body>, during: &'static str) -> Result<Value> {
        if response.status().as_u16() == 204 {
            return Ok(Value::Array(Vec::new()));
        }
        let mut body = response.into_body();
        let bytes = body.with_config().limit(256 << 20).read_to_vec().map_err(|e| self.transport_error(e, during))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Array(Vec::new()));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Network { peer: self.peer.clone(), detail: format!("{during}: invalid JSON ({e})") })
    }

    /// A QIDO-RS search at `path` with `query`'s matching keys.
    fn qido(&self, path: &str, params: Vec<(&str, String)>, during: &'static str) -> Result<Vec<Value>> {
        let query: Vec<String> =
            params.into_iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k}={}", url_encode(&v))).collect();
        let url = if query.is_empty() { path.to_owned() } else { format!("{path}?{}", query.join("&")) };
        let value = self.json(self.get(&url, "application/dicom+json", during)?, during)?;
        match value {
            Value::Array(items) => Ok(items),
            _ => Err(Error::Network {
                peer: self.peer.clone(),
                detail: format!("{during}: the answer is not a JSON array"),
            }),
        }
    }

    /// QIDO-RS `/studies`.
    pub fn search_studies(&self, query: &FindQuery) -> Result<Vec<StudyMatch>> {
        let mut params = common_params(query);
        params.push(("ModalitiesInStudy", query.modality.trim().to_owned()));
        params.push(("StudyInstanceUID", query.study_uid.trim().to_owned()));
        for field in [
            "PatientBirthDate",
            "PatientSex",
            "StudyTime",
            "StudyDescription",
            "NumberOfStudyRelatedSeries",
            "NumberOfStudyRelatedInstances",
            "ModalitiesInStudy",
        ] {
            params.push(("includefield", field.to_owned()));
        }
        let items = self.qido("/studies", params, "searching studies")?;
        Ok(items
            .iter()
            .map(|d| StudyMatch {
                study_uid: string(d, "0020000D"),
                patient_name: person_name(d, "00100010"),
                patient_id: string(d, "00100020"),
                patient_birth_date: string(d, "00100030"),
                patient_sex: string(d, "00100040"),
                study_date: string(d, "00080020"),
                study_time: string(d, "00080030"),
                accession_number: string(d, "00080050"),
                study_description: string(d, "00081030"),
                modalities: strings(d, "00080061"),
                series_count: number(d, "00201206").map(|n| n as u32),
                instance_count: number(d, "00201208").map(|n| n as u32),
            })
            .collect())
    }

    /// QIDO-RS `/studies/{uid}/series` (or `/series` when no study is given).
    pub fn search_series(&self, query: &FindQuery) -> Result<Vec<SeriesMatch>> {
        let study = query.study_uid.trim();
        let path =
            if study.is_empty() { "/series".to_owned() } else { format!("/studies/{}/series", url_encode(study)) };
        let mut params = if study.is_empty() { common_params(query) } else { Vec::new() };
        params.push(("Modality", query.modality.trim().to_owned()));
        params.push(("SeriesInstanceUID", query.series_uid.trim().to_owned()));
        for field in ["SeriesDescription", "BodyPartExamined", "NumberOfSeriesRelatedInstances"] {
            params.push(("includefield", field.to_owned()));
        }
        let items = self.qido(&path, params, "searching series")?;
        Ok(items
            .iter()
            .map(|d| SeriesMatch {
                study_uid: {
                    let s = string(d, "0020000D");
                    if s.is_empty() { study.to_owned() } else { s }
                },
                series_uid: string(d, "0020000E"),
                modality: string(d, "00080060"),
                series_number: number(d, "00200011").map(|n| n as i64),
                series_description: string(d, "0008103E"),
                body_part_examined: string(d, "00180015"),
                instance_count: number(d, "00201209").map(|n| n as u32),
            })
            .collect())
    }

    /// QIDO-RS instances of a series.
    pub fn search_instances(&self, study_uid: &str, series_uid: &str) -> Result<Vec<InstanceMatch>> {
        let path = format!("/studies/{}/series/{}/instances", url_encode(study_uid), url_encode(series_uid));
        let items = self.qido(&path, Vec::new(), "searching instances")?;
        Ok(items
            .iter()
            .map(|d| InstanceMatch {
                study_uid: study_uid.to_owned(),
                series_uid: series_uid.to_owned(),
                sop_instance_uid: string(d, "00080018"),
                sop_class_uid: string(d, "00080016"),
                instance_number: number(d, "00200013").map(|n| n as i64),
            })
            .collect())
    }

    /// WADO-RS a study (or one series of it) into `store`, as the archive holds it
    /// (`transfer-syntax=*`). Instances are written atomically as they arrive and indexed in
    /// batches; on an error or cancel, what arrived whole stays stored and indexed, and a retry
    /// fetches the rest (already stored instances are kept as they are).
    pub fn retrieve(
        &self,
        study_uid: &str,
        series_uid: Option<&str>,
        store: &mut Store,
        progress: &mut dyn FnMut(&WebProgress),
        cancel: &AtomicBool,
    ) -> Result<WebRetrieveSummary> {
        let start = Instant::now();
        let mut path = format!("/studies/{}", url_encode(study_uid));
        if let Some(series) = series_uid {
            path.push_str(&format!("/series/{}", url_encode(series)));
        }
        let response =
            self.get(&path, "multipart/related; type=\"application/dicom\"; transfer-syntax=*", "retrieving")?;
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let boundary = multipart_boundary(&content_type).ok_or_else(|| Error::Network {
            peer: self.peer.clone(),
            detail: format!("retrieving: the answer is not multipart/related (content type `{content_type}`)"),
        })?;
        let reader = response.into_body().into_reader();
        let mut parts = MultipartReader::new(reader, &boundary);
        let mut summary = WebRetrieveSummary::default();
        let already: usize = store.counts()?.instances;
        // Parts are copied into recycled buffers and written (fsync) by the writer pool while
        // this thread reads on; what arrived whole is written and indexed whatever happens.
        let pool = crate::writers::with_writer_pool(store, WRITER_THREADS, |writing| {
            loop {
                if cancel.load(Ordering::Relaxed) {
                    return Err(Error::Cancelled);
                }
                let Some(part) = parts.next_part().map_err(|e| self.io_error(e, "retrieving"))? else { break };
                let mut bytes = writing.buffer();
                bytes.extend_from_slice(part.body);
                summary.received += 1;
                summary.bytes += bytes.len() as u64;
                writing.submit(WriteJob { sop_instance: String::new(), bytes })?;
                writing.poll()?;
                progress(&WebProgress {
                    instances_done: summary.received,
                    bytes_done: summary.bytes,
                    elapsed_s: start.elapsed().as_secs_f64(),
                });
            }
            Ok(())
        });
        summary.rejected = pool.failed.iter().map(|f| f.reason.clone()).collect();
        summary.received -= pool.failed.len();
        summary.added = store.counts()?.instances.saturating_sub(already);
        pool.outcome?;
        summary.elapsed_s = start.elapsed().as_secs_f64();
        Ok(summary)
    }

    fn io_error(&self, e: std::io::Error, during: &'static str) -> Error {
        let peer = self.peer.clone();
        match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                Error::Timeout { peer, timeout_s: self.node.timeout_s, during }
            }
            std::io::ErrorKind::InvalidData => Error::Network { peer, detail: format!("{during}: {e}") },
            kind => Error::ConnectionLost { peer, detail: format!("{during}: {kind}") },
        }
    }

    /// STOW-RS the files at `paths` (Part 10) to `/studies`, in requests of at most 64 MB.
    pub fn store(
        &self,
        paths: &[PathBuf],
        progress: &mut dyn FnMut(&WebProgress),
        cancel: &AtomicBool,
    ) -> Result<StowSummary> {
        let start = Instant::now();
        let mut summary = StowSummary::default();
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut batch_bytes = 0;
        let mut i = 0;
        while i < paths.len() || !batch.is_empty() {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Cancelled);
            }
            if i < paths.len() && (batch.is_empty() || batch_bytes < STOW_BATCH_BYTES) {
                let bytes = std::fs::read(&paths[i]).map_err(|e| Error::io(&paths[i], e))?;
                batch_bytes += bytes.len();
                batch.push(bytes);
                i += 1;
                if i < paths.len() && batch_bytes < STOW_BATCH_BYTES {
                    continue;
                }
            }
            let (stored, failed) = self.stow_batch(&batch)?;
            summary.stored += stored;
            summary.failed.extend(failed);
            summary.bytes += batch_bytes as u64;
            batch.clear();
            batch_bytes = 0;
            progress(&WebProgress {
                instances_done: summary.stored + summary.failed.len(),
                bytes_done: summary.bytes,
                elapsed_s: start.elapsed().as_secs_f64(),
            });
        }
        summary.elapsed_s = start.elapsed().as_secs_f64();
        Ok(summary)
    }

    fn stow_batch(&self, objects: &[Vec<u8>]) -> Result<(usize, Vec<(String, u16)>)> {
        let boundary = format!("lucent-{:016x}", crate::synth::mix64(start_nanos()));
        let total: usize = objects.iter().map(|o| o.len() + boundary.len() + 64).sum();
        let mut body = Vec::with_capacity(total + boundary.len() + 8);
        for o in objects {
            body.extend_from_slice(format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes());
            body.extend_from_slice(o);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let mut req = self
            .agent
            .post(format!("{}/studies", self.base))
            .header("Accept", "application/dicom+json")
            .header("Content-Type", format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"));
        if let Some(a) = self.authorization.as_ref().and_then(Secret::expose) {
            req = req.header("Authorization", a);
        }
        let response = req.send(&body[..]).map_err(|e| self.transport_error(e, "storing"))?;
        // 409 and 202 carry the per-instance outcome in the body.
        let status = response.status().as_u16();
        let response = if status == 409 { response } else { self.check_status(response, "storing")? };
        let answer = self.json(response, "storing")?;
        let referenced = sequence(&answer, "00081199").len();
        let failed: Vec<(String, u16)> = sequence(&answer, "00081198")
            .iter()
            .map(|item| (string(item, "00081155"), number(item, "00081197").map_or(0xC000, |n| n as u16)))
            .collect();
        if status == 409 && referenced == 0 && failed.is_empty() {
            return Err(Error::Network { peer: self.peer.clone(), detail: "storing: HTTP 409 (conflict)".into() });
        }
        // A server that answers 200 with an empty body stored everything.
        let stored = if referenced == 0 && failed.is_empty() { objects.len() } else { referenced };
        Ok((stored, failed))
    }
}

fn start_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn webpki_roots() -> Vec<ureq::tls::Certificate<'static>> {
    // ureq's `RootCerts::WebPki` is all or nothing; with a custom CA, fall back to the system's
    // PEM bundle for public roots when it exists.
    let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    let Ok(pem) = std::fs::read(bundle) else { return Vec::new() };
    ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect()
}

/// The authority (`[user[:password]@]host[:port]`) of a URL.
fn authority_of(base: &str) -> &str {
    let rest = base.split_once("://").map_or(base, |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().unwrap_or_default()
}

/// Whether a URL's host is this machine's loopback (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback(base: &str) -> bool {
    let authority = authority_of(base);
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    let host = host.trim_end_matches('.');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `host:port` of a base URL, or `None` when it is not http(s).
fn peer_of(base: &str) -> Option<String> {
    let (scheme, rest) = base.split_once("://")?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    if authority.is_empty() {
        return None;
    }
    Some(if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:{default_port}")
    })
}

fn common_params(query: &FindQuery) -> Vec<(&'static str, String)> {
    let date = match (query.study_date_from.trim(), query.study_date_to.trim()) {
        ("", "") => String::new(),
        (from, to) if from == to => from.to_owned(),
        (from, to) => format!("{from}-{to}"),
    };
    let mut params = vec![
        ("PatientName", query.patient_name.trim().to_owned()),
        ("PatientID", query.patient_id.trim().to_owned()),
        ("AccessionNumber", query.accession_number.trim().to_owned()),
        ("StudyDate", date),
    ];
    if let Some(limit) = query.limit {
        params.push(("limit", limit.to_string()));
    }
    params
}

/// Percent-encodes a query value: RFC 3986 unreserved characters stay, and so do the DICOM
/// wildcards `*` and `?` and the name separator `^` (servers such as Orthanc 1.10 match them only
/// when sent as they are); `&`, `=`, `+`, `#`, `%`, spaces, controls and non-ASCII are encoded.
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'*' | b'?' | b'^' | b',' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn attribute<'a>(dataset: &'a Value, tag: &str) -> Option<&'a Vec<Value>> {
    dataset.get(tag)?.get("Value")?.as_array()
}

/// The first value of a string attribute (DICOM JSON), or "".
fn string(dataset: &Value, tag: &str) -> String {
    attribute(dataset, tag).and_then(|v| v.first()).and_then(Value::as_str).unwrap_or_default().trim().to_owned()
}

fn strings(dataset: &Value, tag: &str) -> Vec<String> {
    attribute(dataset, tag)
        .map(|v| v.iter().filter_map(Value::as_str).map(|s| s.trim().to_owned()).collect())
        .unwrap_or_default()
}

/// A numeric attribute (IS values may come as numbers or strings).
fn number(dataset: &Value, tag: &str) -> Option<f64> {
    let first = attribute(dataset, tag)?.first()?;
    first.as_f64().or_else(|| first.as_str().and_then(|s| s.trim().parse().ok()))
}

fn person_name(dataset: &Value, tag: &str) -> String {
    attribute(dataset, tag)
        .and_then(|v| v.first())
        .and_then(|pn| pn.get("Alphabetic").or_else(|| pn.get("Ideographic")))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn sequence<'a>(dataset: &'a Value, tag: &str) -> &'a [Value] {
    attribute(dataset, tag).map_or(&[], Vec::as_slice)
}

/// The `boundary` parameter of a `multipart/related` content type.
pub fn multipart_boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let media = params.next()?.trim();
    if !media.eq_ignore_ascii_case("multipart/related") {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// One part of a multipart body, borrowed until the next call.
#[derive(Debug)]
pub struct Part<'a> {
    pub headers: &'a [u8],
    pub body: &'a [u8],
}

/// Streams the parts of a `multipart/related` body without holding more than one part (plus a
/// read-ahead chunk) in memory; the boundary search never rescans bytes it has passed, and the
/// buffer is reused (grown, never zeroed per read).
pub struct MultipartReader<R> {
    reader: R,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// `\r\n--boundary`.
    delimiter: Vec<u8>,
    finder: memchr::memmem::Finder<'static>,
    eof: bool,
    started: bool,
    finished: bool,
}

/// Initial buffer, and the least free space offered to one `read`.
const READ_CHUNK: usize = 4 << 20;
const MIN_READ: usize = 256 << 10;

impl<R: Read> MultipartReader<R> {
    pub fn new(reader: R, boundary: &str) -> Self {
        let delimiter = format!("\r\n--{boundary}").into_bytes();
        let finder = memchr::memmem::Finder::new(&delimiter).into_owned();
        Self {
            reader,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            delimiter,
            finder,
            eof: false,
            started: false,
            finished: false,
        }
    }

    /// Reads more bytes; false at the end of the stream. May move the unconsumed bytes to the
    /// front of the buffer: callers holding positions re-base them on `start`.
    fn fill(&mut self) -> std::io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.start > 0 && self.start * 2 >= self.end {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < MIN_READ {
            let grown = (self.buf.len() * 2).max(self.end + READ_CHUNK);
            self.buf.resize(grown, 0);
        }
        let n = loop {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        self.end += n;
        if n == 0 {
            self.eof = true;
        }
        Ok(n > 0)
    }

    /// Offset from `start` of the next delimiter at or after offset `from`, reading as needed.
    fn find_delimiter(&mut self, from: usize) -> std::io::Result<Option<usize>> {
        let mut scan = from;
        loop {
            if let Some(i) = self.finder.find(&self.buf[self.start + scan..self.end]) {
                return Ok(Some(scan + i));
            }
            scan = (self.end - self.start).saturating_sub(self.delimiter.len()).max(scan);
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// The next part, or `None` after the closing delimiter.
    pub fn next_part(&mut self) -> std::io::Result<Option<Part<'_>>> {
        let bad = |what: &str| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("malformed multipart body: {what}"))
        };
        if self.finished {
            return Ok(None);
        }
        if !self.started {
            // The first delimiter may come without its leading CRLF.
            while self.end < self.delimiter.len() && self.fill()? {}
            if self.buf[..self.end].starts_with(&self.delimiter[2..]) {
                self.start = self.delimiter.len() - 2;
            } else {
                let Some(at) = self.find_delimiter(0)? else { return Err(bad("no boundary")) };
                self.start += at + self.delimiter.len();
            }
            self.started = true;
        }
        // After a delimiter: `--` ends the body; otherwise CRLF and the part's headers.
        while self.end < self.start + 2 && self.fill()? {}
        if self.buf[self.start..self.end].starts_with(b"--") {
            self.finished = true;
            return Ok(None);
        }
        // Offsets from `start` from here on (`fill` may move the bytes). The delimiter line ends
        // with optional padding and CRLF; then headers, an empty line, and the body.
        let line_end = loop {
            if let Some(i) = memchr::memmem::find(&self.buf[self.start..self.end], b"\r\n") {
                break i;
            }
            if self.end - self.start > 1024 {
                return Err(bad("no line break after a boundary"));
            }
            if !self.fill()? {
                return Err(bad("truncated boundary line"));
            }
        };
        let headers_from = line_end + 2;
        let headers_end = loop {
            let rest = &self.buf[self.start + headers_from..self.end];
            if rest.starts_with(b"\r\n") {
                // No headers at all.
                break headers_from;
            }
            if let Some(i) = memchr::memmem::find(rest, b"\r\n\r\n") {
                break headers_from + i + 2;
            }
            if rest.len() > 64 << 10 {
                return Err(bad("part headers too long"));
            }
            if !self.fill()? {
                return Err(bad("truncated part headers"));
            }
        };
        let body_from = headers_end + 2;
        let Some(body_end) = self.find_delimiter(body_from)? else { return Err(bad("truncated part")) };
        let base = self.start;
        self.start = base + body_end + self.delimiter.len();
        Ok(Some(Part {
            headers: &self.buf[base + headers_from..base + headers_end],
            body: &self.buf[base + body_from..base + body_end],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `step` bytes per call, to exercise every split point.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn body(parts: &[&[u8]], boundary: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            out.extend_from_slice(format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes());
            out.extend_from_slice(p);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        out
    }

    #[test]
    fn multipart_parts_come_back_whole_at_any_read_size() {
        let big: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        // A part containing CRLF and a near-miss of the boundary.
        let tricky = b"a\r\n--boundar\r\n-x";
        let parts: Vec<&[u8]> = vec![b"first", tricky, &big, b""];
        let data = body(&parts, "boundary");
        for step in [1, 2, 7, 100, 4096, usize::MAX] {
            let mut r = MultipartReader::new(Trickle { data: &data, step }, "boundary");
            let mut got: Vec<Vec<u8>> = Vec::new();
            while let Some(p) = r.next_part().unwrap_or_else(|e| panic!("step {step}: {e}")) {
                assert!(p.headers.starts_with(b"Content-Type: application/dicom"));
                got.push(p.body.to_vec());
            }
            let expected: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
            assert_eq!(got, expected, "step {step}");
        }
    }

    #[test]
    fn truncated_multipart_is_an_error_not_a_short_part() {
        let data = body(&[b"0123456789"], "b");
        let cut = &data[..data.len() - 12];
        let mut r = MultipartReader::new(cut, "b");
        assert!(r.next_part().is_err());
    }

    #[test]
    fn boundary_from_content_type() {
        assert_eq!(
            multipart_boundary("multipart/related; type=\"application/dicom\"; boundary=\"abc-1\"").as_deref(),
            Some("abc-1")
        );
        assert_eq!(multipart_boundary("Multipart/Related;boundary=xyz").as_deref(), Some("xyz"));
        assert_eq!(multipart_boundary("application/dicom"), None);
    }

    #[test]
    fn peer_never_carries_path_or_query() {
        assert_eq!(peer_of("http://127.0.0.1:8042/dicom-web").as_deref(), Some("127.0.0.1:8042"));
        assert_eq!(peer_of("https://user:pw@pacs.example.org/dicom-web?x=1").as_deref(), Some("pacs.example.org:443"));
        assert_eq!(peer_of("ftp://x"), None);
    }

    fn with_password(url: &str) -> WebNode {
        let mut node = WebNode::new("ward", url);
        node.auth = WebAuth::Basic { user: "reader".into(), password: Secret::new("s3cret-pw") };
        node
    }

    #[test]
    fn credentials_over_plain_http_need_loopback_or_an_opt_in() {
        let err = DicomWebClient::new(&with_password("http://pacs.example.org/dicom-web")).unwrap_err().to_string();
        assert!(err.contains("`ward`") && err.contains("allow_plain_http_credentials"), "{err}");
        assert!(!err.contains("s3cret-pw"), "{err}");
        let mut bearer = WebNode::new("ward", "HTTP://10.0.0.5:8042/dicom-web");
        bearer.auth = WebAuth::Bearer { token: Secret::new("tok") };
        assert!(bearer.validate().is_err());
        for url in ["http://127.0.0.1:8042/dicom-web", "http://localhost/dicom-web", "http://[::1]:8042/x"] {
            assert!(DicomWebClient::new(&with_password(url)).is_ok(), "{url}");
        }
        assert!(DicomWebClient::new(&with_password("https://pacs.example.org/dicom-web")).is_ok());
        let opted_in = WebNode { allow_plain_http_credentials: true, ..with_password("http://pacs.example.org/x") };
        assert!(DicomWebClient::new(&opted_in).is_ok());
        // Without credentials plain HTTP is fine; credentials in the URL never are.
        assert!(WebNode::new("w", "http://pacs.example.org/dicom-web").validate().is_ok());
        assert!(WebNode::new("w", "https://u:pw@pacs.example.org/dicom-web").validate().is_err());
        assert!(!is_loopback("http://127.0.0.1.example.org/"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let node = with_password("https://pacs.example.org/dicom-web");
        let text = format!("{node:?} {:?}", DicomWebClient::new(&node).unwrap());
        assert!(!text.contains("s3cret-pw"), "{text}");
        assert!(text.contains("***"), "{text}");
    }

    #[test]
    fn url_encoding_keeps_unreserved_only() {
        assert_eq!(url_encode("DOE^J*"), "DOE^J*");
        assert_eq!(url_encode("A&B=C+D E#%"), "A%26B%3DC%2BD%20E%23%25");
        assert_eq!(url_encode("1.2.840-x_y~"), "1.2.840-x_y~");
        assert_eq!(url_encode("홍"), "%ED%99%8D");
    }

    #[test]
    fn dicom_json_values() {
        let d: Value = serde_json::json!({
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "DOE^JANE"}]},
            "00201208": {"vr": "IS", "Value": ["12"]},
            "00080061": {"vr": "CS", "Value": ["CT", "SR"]},
            "00200011": {"vr": "IS", "Value": [3]}
        });
        assert_eq!(person_name(&d, "00100010"), "DOE^JANE");
        assert_eq!(number(&d, "00201208"), Some(12.0));
        assert_eq!(number(&d, "00200011"), Some(3.0));
        assert_eq!(strings(&d, "00080061"), vec!["CT", "SR"]);
        assert_eq!(string(&d, "0020000D"), "");
    }
}
