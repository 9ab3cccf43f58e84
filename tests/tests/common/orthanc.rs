//! A throw-away Orthanc for tests: started by hand on free loopback ports with its own JSON
//! configuration, storage and index in a temporary folder; talked to over its REST API with a
//! minimal HTTP/1.1 client; killed by PID when dropped. DCMTK tools are found the same way.
//! [`Orthanc::start_with_tls`] makes its DICOM port speak DICOM TLS only (its REST API stays
//! plain HTTP), and modalities marked [`Modality::with_tls`] are called over TLS.
//!
//! Without the Orthanc binary (or DCMTK) a test skips with a message, unless
//! `LUCENT_REQUIRE_TEST_DATA=1` makes that a failure (as for the test corpora).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Orthanc's own AE title in these tests.
pub const ORTHANC_AET: &str = "ORTHANC";

fn required() -> bool {
    std::env::var("LUCENT_REQUIRE_TEST_DATA").is_ok_and(|v| v == "1")
}

/// A program from the system, or `None` (after saying why) when absent.
pub fn tool(name: &str, candidates: &[&str]) -> Option<PathBuf> {
    let found = candidates.iter().map(PathBuf::from).find(|p| p.is_file());
    if found.is_none() {
        assert!(
            !required(),
            "{name} is missing ({candidates:?}): run `cargo xtask setup` (apt packages orthanc, orthanc-dicomweb, dcmtk)"
        );
        eprintln!("SKIP: {name} is not installed ({candidates:?})");
    }
    found
}

pub fn orthanc_binary() -> Option<PathBuf> {
    let env = std::env::var("LUCENT_ORTHANC").unwrap_or_default();
    let mut candidates = vec!["/usr/sbin/Orthanc", "/usr/bin/Orthanc", "/usr/local/bin/Orthanc"];
    if !env.is_empty() {
        candidates.insert(0, env.as_str());
    }
    tool("Orthanc", &candidates)
}

/// A DCMTK tool (storescu, findscu, getscu, movescu, echoscu).
pub fn dcmtk(name: &str) -> Option<PathBuf> {
    tool(name, &[&format!("/usr/bin/{name}"), &format!("/usr/local/bin/{name}")])
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A DICOM peer Orthanc should know: (name, AE title, port on 127.0.0.1, whether over TLS).
#[derive(Debug, Clone)]
pub struct Modality {
    pub name: String,
    pub aet: String,
    pub port: u16,
    pub tls: bool,
}

impl Modality {
    pub fn new(name: &str, aet: &str, port: u16) -> Self {
        Self { name: name.to_owned(), aet: aet.to_owned(), port, tls: false }
    }

    /// Orthanc calls this peer over DICOM TLS (C-MOVE deliveries included).
    pub fn with_tls(mut self) -> Self {
        self.tls = true;
        self
    }
}

/// DICOM TLS of a test Orthanc (PEM files): its certificate and key (also presented as a client
/// certificate when it calls TLS modalities), the CA certificates it trusts for its peers, and
/// whether peers calling it must present a certificate.
#[derive(Debug, Clone)]
pub struct OrthancTls {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub trusted: PathBuf,
    pub remote_certificate_required: bool,
}

/// A running Orthanc.
pub struct Orthanc {
    binary: PathBuf,
    /// Holds the configuration, storage, index and log.
    pub dir: PathBuf,
    pub dicom_port: u16,
    pub http_port: u16,
    child: Option<Child>,
    _temp: Option<tempfile::TempDir>,
}

impl Orthanc {
    /// Starts Orthanc in a new temporary folder, or returns `None` when it is not installed.
    pub fn start(modalities: &[Modality]) -> Option<Self> {
        Self::start_with(modalities, None)
    }

    /// [`Orthanc::start`] with its DICOM port speaking DICOM TLS only.
    pub fn start_with_tls(modalities: &[Modality], tls: &OrthancTls) -> Option<Self> {
        Self::start_with(modalities, Some(tls))
    }

    fn start_with(modalities: &[Modality], tls: Option<&OrthancTls>) -> Option<Self> {
        let binary = orthanc_binary()?;
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let mut orthanc =
            Self { binary, dir, dicom_port: free_port(), http_port: free_port(), child: None, _temp: Some(temp) };
        orthanc.write_config(modalities, tls);
        orthanc.launch();
        Some(orthanc)
    }

    fn write_config(&self, modalities: &[Modality], tls: Option<&OrthancTls>) {
        let storage = self.dir.join("storage");
        let plugin = Path::new("/usr/share/orthanc/plugins/libOrthancDicomWeb.so");
        let mut known = serde_json::Map::new();
        for m in modalities {
            let entry = if m.tls {
                serde_json::json!({ "AET": m.aet, "Host": "127.0.0.1", "Port": m.port, "UseDicomTls": true })
            } else {
                serde_json::json!([m.aet, "127.0.0.1", m.port])
            };
            known.insert(m.name.clone(), entry);
        }
        let mut config = serde_json::json!({
            "Name": "LUCENT-TEST",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "DicomAet": ORTHANC_AET,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "HttpServerEnabled": true,
            "Plugins": if plugin.is_file() { vec![plugin.to_path_buf()] } else { Vec::new() },
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },
            "DicomModalities": known,
            "DicomAlwaysAllowEcho": false,
            "DicomAlwaysAllowStore": false,
            "DicomCheckCalledAet": true,
            "DicomAssociationCloseDelay": 0,
            "DicomScuTimeout": 10,
            "SyncStorageArea": false,
            "StorageCompression": false,
            "SaveJobs": false,
            "ConcurrentJobs": 2,
            "LogExportedResources": false,
        });
        if let Some(tls) = tls {
            let options = serde_json::json!({
                "DicomTlsEnabled": true,
                "DicomTlsCertificate": tls.certificate,
                "DicomTlsPrivateKey": tls.private_key,
                "DicomTlsTrustedCertificates": tls.trusted,
                "DicomTlsRemoteCertificateRequired": tls.remote_certificate_required,
            });
            for (key, value) in options.as_object().unwrap() {
                config[key] = value.clone();
            }
        }
        std::fs::write(self.dir.join("orthanc.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("orthanc.log")).unwrap();
        let child = Command::new(&self.binary)
            .arg(self.dir.join("orthanc.json"))
            // DCMTK inside Orthanc disables Nagle only when asked (as DCMTK's tools do).
            .env("TCP_NODELAY", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("Orthanc exited at start-up ({status}); see {}", self.dir.join("orthanc.log").display());
            }
            let http_ok = self.http("GET", "/system", b"").is_ok_and(|(status, _)| status == 200);
            let dicom_ok = TcpStream::connect(("127.0.0.1", self.dicom_port)).is_ok();
            if http_ok && dicom_ok {
                return;
            }
            assert!(Instant::now() < deadline, "Orthanc did not start; see {}", self.dir.join("orthanc.log").display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id (to kill it from elsewhere).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts Orthanc again on the same storage and ports.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// A minimal HTTP/1.1 request (Connection: close).
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.http_port))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let split = response.windows(4).position(|w| w == b"\r\n\r\n").ok_or(std::io::ErrorKind::InvalidData)?;
        let header = String::from_utf8_lossy(&response[..split]).to_string();
        let status: u16 =
            header.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or(std::io::ErrorKind::InvalidData)?;
        let mut payload = response[split + 4..].to_vec();
        if header.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            payload = dechunk(&payload);
        }
        Ok((status, payload))
    }

    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.http("GET", path, b"").unwrap();
        assert_eq!(status, 200, "GET {path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    pub fn post_json(&self, path: &str, body: &[u8]) -> serde_json::Value {
        let (status, response) = self.http("POST", path, body).unwrap();
        assert_eq!(status, 200, "POST {path}: {}", String::from_utf8_lossy(&response));
        serde_json::from_slice(&response).unwrap()
    }

    /// Uploads Part 10 files through POST /instances.
    pub fn upload(&self, files: &[PathBuf]) {
        for f in files {
            let bytes = std::fs::read(f).unwrap();
            let reply = self.post_json("/instances", &bytes);
            assert!(reply.get("ID").is_some(), "upload of {} refused: {reply}", f.display());
        }
    }

    /// Whether Orthanc has an instance with this SOP Instance UID.
    pub fn has_instance(&self, sop_uid: &str) -> bool {
        let found = self.post_json("/tools/lookup", sop_uid.as_bytes());
        found.as_array().is_some_and(|a| a.iter().any(|r| r["Type"] == "Instance"))
    }

    pub fn instance_count(&self) -> u64 {
        self.get_json("/statistics")["CountInstances"].as_u64().unwrap_or(0)
    }

    /// A node for Lucent with our AE title `our_aet`.
    pub fn node(&self, our_aet: &str) -> pacs::net::PacsNode {
        let mut node = pacs::net::PacsNode::new("orthanc", ORTHANC_AET, "127.0.0.1", self.dicom_port, our_aet);
        node.dimse_timeout_s = 20.0;
        node
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&body[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&body[start..(start + size).min(body.len())]);
        body = &body[(start + size + 2).min(body.len())..];
    }
    out
}
