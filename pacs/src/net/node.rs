//! PACS nodes the user configured (AE title, address, our AE title, timeouts, DICOM TLS), and the
//! node book that keeps them in a JSON file, saved atomically.
//!
//! The book holds no secret: DICOMweb passwords and tokens are kept in a
//! [`SecretStore`](crate::secrets::SecretStore) (the OS keyring, or an encrypted file beside the
//! book) and the JSON holds only references to them. A book written by an older version, with
//! secrets in plain text, is migrated when loaded: the secrets move to the store and the book is
//! rewritten without them.
//!
//! This module only describes peers; it opens no connection.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::secrets::{SecretRef, SecretStore};

/// Default time to open the TCP connection, seconds.
pub const DEFAULT_CONNECT_TIMEOUT_S: f64 = 5.0;
/// Default time a peer may stay silent during an exchange, seconds.
pub const DEFAULT_DIMSE_TIMEOUT_S: f64 = 30.0;

/// A DICOM peer (PACS, modality, workstation) and how Lucent talks to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PacsNode {
    /// The user's name for the node (unique in a [`NodeBook`]).
    pub name: String,
    /// The peer's AE title (the "called" AE title).
    pub ae_title: String,
    pub host: String,
    pub port: u16,
    /// Lucent's AE title towards this peer (the "calling" AE title; the peer must know it).
    pub our_ae_title: String,
    /// Time to open the TCP connection, seconds.
    #[serde(default = "default_connect_timeout_s")]
    pub connect_timeout_s: f64,
    /// Time the peer may stay silent during an exchange (per read or write), seconds.
    #[serde(default = "default_dimse_timeout_s")]
    pub dimse_timeout_s: f64,
    /// DICOM over TLS (the association and everything after it). The peer's certificate is always
    /// verified, for the server name [`host`](Self::host).
    #[serde(default)]
    pub tls: bool,
    /// With TLS: a PEM file of extra trusted CA certificates (e.g. the hospital's CA), trusted
    /// beside Mozilla's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// With TLS: our client certificate chain (PEM), for peers that require mutual TLS; needs
    /// [`tls_key_file`](Self::tls_key_file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// With TLS: the private key (PEM) of [`tls_cert_file`](Self::tls_cert_file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
}

fn default_connect_timeout_s() -> f64 {
    DEFAULT_CONNECT_TIMEOUT_S
}

fn default_dimse_timeout_s() -> f64 {
    DEFAULT_DIMSE_TIMEOUT_S
}

impl PacsNode {
    /// A node with the default timeouts and no TLS.
    pub fn new(name: &str, ae_title: &str, host: &str, port: u16, our_ae_title: &str) -> Self {
        Self {
            name: name.to_owned(),
            ae_title: ae_title.to_owned(),
            host: host.to_owned(),
            port,
            our_ae_title: our_ae_title.to_owned(),
            connect_timeout_s: DEFAULT_CONNECT_TIMEOUT_S,
            dimse_timeout_s: DEFAULT_DIMSE_TIMEOUT_S,
            tls: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }

    /// `AE@host:port`, as used in messages (no patient data).
    pub fn label(&self) -> String {
        format!("{}@{}:{}", self.ae_title, self.host, self.port)
    }

    /// Checks the AE titles, address, timeouts and the TLS client certificate pair.
    pub fn validate(&self) -> Result<()> {
        validate_ae_title(&self.ae_title, "the peer's AE title")?;
        validate_ae_title(&self.our_ae_title, "our AE title")?;
        if self.host.trim().is_empty() {
            return Err(invalid("the host is empty"));
        }
        if self.port == 0 {
            return Err(invalid("the port is 0"));
        }
        for (value, what) in [(self.connect_timeout_s, "connect timeout"), (self.dimse_timeout_s, "DIMSE timeout")] {
            if !(value.is_finite() && value > 0.0 && value <= 86_400.0) {
                return Err(invalid(format!("the {what} must be between 0 and 86400 s, got {value}")));
            }
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(invalid("a TLS client certificate needs its private key, and back"));
        }
        Ok(())
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        seconds(self.connect_timeout_s)
    }

    pub(crate) fn dimse_timeout(&self) -> Duration {
        seconds(self.dimse_timeout_s)
    }
}

pub(crate) fn seconds(value_s: f64) -> Duration {
    Duration::try_from_secs_f64(value_s.clamp(0.001, 86_400.0)).unwrap_or(Duration::from_secs(30))
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidNode { reason: reason.into() }
}

/// The secret references in a node book's JSON (none when it cannot be read).
fn references_in(text: &str) -> Vec<SecretRef> {
    let Ok(book) = serde_json::from_str::<NodeBook>(text) else { return Vec::new() };
    book.web.iter().filter_map(|n| n.auth.secret().and_then(|s| s.reference().cloned())).collect()
}

/// Checks an AE title: 1 to 16 characters of the default repertoire, no backslash or control
/// characters, not only spaces.
pub fn validate_ae_title(title: &str, what: &str) -> Result<()> {
    let trimmed = title.trim();
    if trimmed.is_empty() {
        return Err(invalid(format!("{what} is empty")));
    }
    if title.len() > 16 {
        return Err(invalid(format!("{what} {title:?} is longer than 16 characters")));
    }
    if title.chars().any(|c| !(' '..='~').contains(&c) || c == '\\') {
        return Err(invalid(format!("{what} {title:?} has characters outside printable ASCII (or a backslash)")));
    }
    Ok(())
}

/// The configured nodes, kept as JSON (`{"nodes": [...], "web": [...]}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeBook {
    pub nodes: Vec<PacsNode>,
    /// DICOMweb servers ([`crate::dicomweb`]).
    #[serde(default)]
    pub web: Vec<crate::dicomweb::WebNode>,
}

impl NodeBook {
    /// Reads the book with its secrets from [`SecretStore::beside`] the book; a missing file is
    /// an empty book. See [`load_with`](Self::load_with).
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, &SecretStore::beside(path))
    }

    /// Reads the book; a missing file is an empty book. Each secret's value is read from its
    /// store; one that cannot be read is left empty with a warning (connecting to that node then
    /// says so), so the other nodes stay usable. Secrets found in plain text (older books) are
    /// moved into `secrets` and the book is rewritten without them.
    pub fn load_with(path: &Path, secrets: &SecretStore) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::io(path, e)),
        };
        // serde_json's messages may quote a value from the file (in an old book, a plain-text
        // password): name only the position.
        let mut book: Self = serde_json::from_str(&text).map_err(|e| {
            invalid(format!("cannot read the node book {} (line {}, column {})", path.display(), e.line(), e.column()))
        })?;
        for node in &mut book.web {
            let name = node.name.clone();
            if let Some(secret) = node.auth.secret_mut()
                && let Err(e) = secrets.resolve(secret)
            {
                tracing::warn!("DICOMweb node `{name}`: its secret could not be read: {e}");
            }
        }
        let plain = book.web.iter().filter(|n| n.auth.secret().is_some_and(|s| s.needs_storing())).count();
        if plain > 0 {
            match book.save_in_place(path, secrets) {
                Ok(()) => tracing::info!(
                    "moved {plain} plain-text secret(s) out of the node book {} into {}",
                    path.display(),
                    secrets.kind()
                ),
                Err(e) => tracing::warn!(
                    "the node book {} holds {plain} secret(s) in plain text and could not be migrated: {e}",
                    path.display()
                ),
            }
        }
        Ok(book)
    }

    /// Writes the book with new secrets put in [`SecretStore::beside`] the book. See
    /// [`save_with`](Self::save_with).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.save_with(path, &SecretStore::beside(path))
    }

    /// Puts secrets not yet stored into `secrets`, writes the book (references only) atomically
    /// (temp file beside it, 0600, fsync, rename, directory fsync), then removes from their
    /// stores the secrets the previous book referred to and this one does not.
    pub fn save_with(&self, path: &Path, secrets: &SecretStore) -> Result<()> {
        self.clone().save_in_place(path, secrets)
    }

    /// [`save_with`](Self::save_with), keeping the references given to new secrets.
    fn save_in_place(&mut self, path: &Path, secrets: &SecretStore) -> Result<()> {
        for node in &mut self.web {
            if let Some(secret) = node.auth.secret_mut() {
                secrets.store(secret)?;
            }
        }
        let before = std::fs::read_to_string(path).ok().map(|t| references_in(&t)).unwrap_or_default();
        let text = serde_json::to_string_pretty(&*self).map_err(|e| invalid(e.to_string()))?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        crate::store::create_private_dir(&dir)?;
        crate::store::write_atomically(&dir, path, |f| std::io::Write::write_all(f, text.as_bytes()))?;
        let now = references_in(&text);
        let stale: Vec<SecretRef> = before.into_iter().filter(|r| !now.contains(r)).collect();
        if !stale.is_empty()
            && let Err(e) = secrets.remove(&stale)
        {
            tracing::warn!("{} secret(s) no longer used could not be removed: {e}", stale.len());
        }
        Ok(())
    }

    /// The node called `name` (exact match).
    pub fn get(&self, name: &str) -> Option<&PacsNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Adds the node, or replaces the one with the same name. Validates it first.
    pub fn upsert(&mut self, node: PacsNode) -> Result<()> {
        node.validate()?;
        match self.nodes.iter_mut().find(|n| n.name == node.name) {
            Some(slot) => *slot = node,
            None => self.nodes.push(node),
        }
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(())
    }

    /// Removes the node called `name`; whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.nodes.len();
        self.nodes.retain(|n| n.name != name);
        self.nodes.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn book_round_trips_and_replaces_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/nodes.json");
        assert_eq!(NodeBook::load(&path).unwrap(), NodeBook::default());
        let mut book = NodeBook::default();
        book.upsert(PacsNode::new("main", "ORTHANC", "127.0.0.1", 4242, "LUCENT")).unwrap();
        book.upsert(PacsNode { port: 104, ..PacsNode::new("main", "ORTHANC", "pacs", 104, "LUCENT") }).unwrap();
        book.upsert(PacsNode::new("backup", "ARCHIVE", "10.0.0.2", 11112, "LUCENT")).unwrap();
        book.save(&path).unwrap();
        let loaded = NodeBook::load(&path).unwrap();
        assert_eq!(loaded, book);
        assert_eq!(loaded.nodes.len(), 2);
        assert_eq!(loaded.get("main").unwrap().port, 104);
        let mut loaded = loaded;
        assert!(loaded.remove("main"));
        assert!(!loaded.remove("main"));
        // No temp file is left beside the book.
        let names: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn bad_ae_titles_are_refused() {
        assert!(PacsNode::new("x", "A-VERY-LONG-AE-TITLE", "h", 1, "L").validate().is_err());
        assert!(PacsNode::new("x", "   ", "h", 1, "L").validate().is_err());
        assert!(PacsNode::new("x", "OK", "h", 1, "BAD\\AE").validate().is_err());
        assert!(PacsNode::new("x", "OK", "h", 0, "L").validate().is_err());
        assert!(PacsNode::new("x", "OK", "h", 1, "L").validate().is_ok());
        let half = PacsNode { tls: true, tls_cert_file: Some("c.pem".into()), ..PacsNode::new("x", "OK", "h", 1, "L") };
        assert!(half.validate().is_err());
    }

    #[test]
    fn web_secrets_live_in_the_store_not_in_the_book() {
        use crate::dicomweb::{WebAuth, WebNode};
        use crate::secrets::{Secret, StoreKind};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.json");
        let store = SecretStore::with_kind(&path, StoreKind::File);
        let mut book = NodeBook::default();
        let mut web = WebNode::new("web", "https://pacs.example.org/dicom-web");
        web.auth = WebAuth::Basic { user: "reader".into(), password: Secret::new("s3cret-pw") };
        book.web.push(web);
        book.save_with(&path, &store).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("s3cret-pw"), "{text}");
        assert!(text.contains("\"store\": \"file\""), "{text}");
        let loaded = NodeBook::load_with(&path, &store).unwrap();
        assert_eq!(loaded, book);
        // Removing the node removes its secret from the store.
        let mut emptied = loaded.clone();
        emptied.web.clear();
        emptied.save_with(&path, &store).unwrap();
        let mut again = loaded.web[0].auth.secret().unwrap().clone();
        let mut unresolved: Secret = serde_json::from_str(&serde_json::to_string(&again).unwrap()).unwrap();
        assert!(store.resolve(&mut unresolved).is_err());
        // Saved again, it gets a new reference.
        again = Secret::new("s3cret-pw");
        store.store(&mut again).unwrap();
        assert!(again.reference().is_some());
    }

    #[test]
    fn old_node_json_without_tls_files_still_loads() {
        let json = r#"{"nodes": [{"name": "main", "ae_title": "ORTHANC", "host": "pacs", "port": 104,
            "our_ae_title": "LUCENT", "tls": true}]}"#;
        let book: NodeBook = serde_json::from_str(json).unwrap();
        let node = &book.nodes[0];
        assert!(node.tls);
        assert_eq!((node.tls_ca_file.as_ref(), node.tls_cert_file.as_ref()), (None, None));
        assert_eq!(node.dimse_timeout_s, DEFAULT_DIMSE_TIMEOUT_S);
        // Unset files are not written out.
        let text = serde_json::to_string(&book).unwrap();
        assert!(!text.contains("tls_ca_file"), "{text}");
    }
}
