//! Secrets of saved nodes (DICOMweb passwords and bearer tokens), kept out of the node book.
//!
//! The node book (`pacs_nodes.json`) holds only a reference to each secret,
//! `{"secret": "<random id>", "store": "keyring" | "file"}`; the value lives in one of two stores:
//!
//! * **the OS keyring** (Secret Service on Linux, Keychain on macOS, Credential Manager on
//!   Windows, through the `keyring` crate), service `lucent`, when one answers;
//! * otherwise **an encrypted file** beside the book: `pacs_secrets.enc` (ChaCha20-Poly1305, a
//!   fresh random nonce on every write) under a random 256-bit key kept in a separate file,
//!   `pacs_secrets.key`; both are created 0600 (owner only).
//!
//! `LUCENT_SECRET_STORE=file` (or `keyring`) forces the choice; by default the keyring is used
//! when it answers a probe, which headless machines and CI (no D-Bus Secret Service) do not.
//!
//! What the encrypted file protects against: a copied, mailed, backed-up or leaked node book
//! (it holds no secret), and a copy of the secrets file alone. What it does not protect against:
//! anyone who can read the user's whole data folder (key file and secrets file together), or
//! code running as the user. The OS keyring raises that bar where one exists.
//!
//! [`Secret`] never shows its value: `Debug` and `Display` print `***`, and serialising one
//! writes only its reference (or fails, when it has none yet).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload, rand_core::RngCore};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The encrypted secrets file, beside the node book.
pub const SECRETS_FILE_NAME: &str = "pacs_secrets.enc";
/// The key of [`SECRETS_FILE_NAME`], beside it.
pub const KEY_FILE_NAME: &str = "pacs_secrets.key";
/// The environment variable that forces a store: `file`, `keyring` or `auto` (the default).
pub const STORE_ENV: &str = "LUCENT_SECRET_STORE";
/// The keyring service name of Lucent's entries.
pub const KEYRING_SERVICE: &str = "lucent";

/// Key length, bytes (ChaCha20-Poly1305: 256 bits).
const KEY_BYTES: usize = 32;
/// Authenticated with every encryption, so a file of another format or version is refused.
const FILE_AAD: &[u8] = b"lucent pacs secrets v1";

/// Where a secret's value is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// The OS keyring.
    Keyring,
    /// The encrypted file beside the node book.
    File,
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Keyring => "the OS keyring",
            Self::File => "the encrypted secrets file",
        })
    }
}

/// What the node book keeps instead of a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    /// A random id (128 bits, hex), unique across data folders.
    #[serde(rename = "secret")]
    pub id: String,
    pub store: StoreKind,
}

/// A password or token. Its value is wiped from memory when dropped, never printed (`***`), and
/// never serialised: it serialises as its [`SecretRef`], and reads from either that reference
/// (the value is filled in by [`SecretStore::resolve`]) or, for books written by older Lucent
/// versions, a plain string (to be moved into a store on the next save).
#[derive(Clone, Default)]
pub struct Secret {
    value: Option<Zeroizing<String>>,
    stored: Option<SecretRef>,
}

impl Secret {
    /// A new secret, not yet in a store.
    pub fn new(value: impl Into<String>) -> Self {
        Self { value: Some(Zeroizing::new(value.into())), stored: None }
    }

    /// The value, or `None` when it could not be read from its store.
    pub fn expose(&self) -> Option<&str> {
        self.value.as_ref().map(|v| v.as_str())
    }

    /// Where the value is kept, once stored.
    pub fn reference(&self) -> Option<&SecretRef> {
        self.stored.as_ref()
    }

    /// A value not yet in a store (new, or read as plain text from an old book).
    pub fn needs_storing(&self) -> bool {
        self.value.is_some() && self.stored.is_none()
    }
}

impl PartialEq for Secret {
    /// Equal values (references are where they live, not what they are).
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match &self.stored {
            Some(reference) => reference.serialize(serializer),
            None => Err(serde::ser::Error::custom("a secret must be put in a secret store before it is written")),
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OnDisk {
            Stored(SecretRef),
            /// Books of older versions held the value itself.
            Plain(String),
        }
        Ok(match OnDisk::deserialize(deserializer)? {
            OnDisk::Stored(reference) => Self { value: None, stored: Some(reference) },
            OnDisk::Plain(value) => Self::new(value),
        })
    }
}

/// The secret stores of one node book: the OS keyring, and the encrypted file beside the book.
#[derive(Debug, Clone)]
pub struct SecretStore {
    secrets_path: PathBuf,
    key_path: PathBuf,
    /// Where new secrets go; `None`: the keyring if it answers (asked when first needed).
    new_in: Option<StoreKind>,
}

impl SecretStore {
    /// The stores of the book at `book_path`; new secrets go to the keyring when it answers (or
    /// as [`STORE_ENV`] says), else to the encrypted file.
    pub fn beside(book_path: &Path) -> Self {
        let new_in = match std::env::var(STORE_ENV).unwrap_or_default().trim().to_ascii_lowercase().as_str() {
            "file" => Some(StoreKind::File),
            "keyring" => Some(StoreKind::Keyring),
            _ => None,
        };
        Self { new_in, ..Self::with_kind(book_path, StoreKind::File) }
    }

    /// The stores of the book at `book_path`, new secrets going to `new_in`.
    pub fn with_kind(book_path: &Path, new_in: StoreKind) -> Self {
        let dir = parent_dir(book_path);
        Self { secrets_path: dir.join(SECRETS_FILE_NAME), key_path: dir.join(KEY_FILE_NAME), new_in: Some(new_in) }
    }

    /// Where new secrets go.
    pub fn kind(&self) -> StoreKind {
        self.new_in.unwrap_or_else(|| if keyring_reachable() { StoreKind::Keyring } else { StoreKind::File })
    }

    /// The encrypted secrets file.
    pub fn secrets_path(&self) -> &Path {
        &self.secrets_path
    }

    /// The key file of [`secrets_path`](Self::secrets_path).
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// Fills in the value of a secret read with a reference. A value missing from its store is
    /// an error (naming the store, not the secret).
    pub fn resolve(&self, secret: &mut Secret) -> Result<()> {
        let Some(reference) = &secret.stored else { return Ok(()) };
        if secret.value.is_some() {
            return Ok(());
        }
        let value = match reference.store {
            StoreKind::Keyring => keyring_entry(&reference.id)?.get_password().map_err(|e| match e {
                keyring::Error::NoEntry => secret_error("the OS keyring has no entry for it"),
                other => keyring_error(&other),
            })?,
            StoreKind::File => {
                let map = self.read_file()?;
                map.get(&reference.id)
                    .map(|v| v.as_str().to_owned())
                    .ok_or_else(|| secret_error(format!("{} has no entry for it", self.secrets_path.display())))?
            }
        };
        secret.value = Some(Zeroizing::new(value));
        Ok(())
    }

    /// Puts a secret that has a value but no reference into the store for new secrets, and gives
    /// it its reference.
    pub fn store(&self, secret: &mut Secret) -> Result<()> {
        if !secret.needs_storing() {
            return Ok(());
        }
        let Some(value) = secret.value.clone() else { return Ok(()) };
        let reference = SecretRef { id: random_id(), store: self.kind() };
        match reference.store {
            StoreKind::Keyring => {
                keyring_entry(&reference.id)?.set_password(&value).map_err(|e| keyring_error(&e))?;
            }
            StoreKind::File => {
                let mut map = self.read_file()?;
                map.insert(reference.id.clone(), value);
                self.write_file(&map)?;
            }
        }
        secret.stored = Some(reference);
        Ok(())
    }

    /// Removes secrets from their stores (those no longer referenced). Missing entries are fine.
    pub fn remove(&self, references: &[SecretRef]) -> Result<()> {
        let mut in_file = Vec::new();
        for reference in references {
            match reference.store {
                StoreKind::Keyring => match keyring_entry(&reference.id)?.delete_credential() {
                    Ok(()) | Err(keyring::Error::NoEntry) => {}
                    Err(e) => return Err(keyring_error(&e)),
                },
                StoreKind::File => in_file.push(reference.id.as_str()),
            }
        }
        if !in_file.is_empty() && self.secrets_path.exists() {
            let mut map = self.read_file()?;
            let before = map.len();
            map.retain(|id, _| !in_file.contains(&id.as_str()));
            if map.len() != before {
                self.write_file(&map)?;
            }
        }
        Ok(())
    }

    /// The decrypted secrets file (empty when there is none).
    fn read_file(&self) -> Result<BTreeMap<String, Zeroizing<String>>> {
        let text = match std::fs::read_to_string(&self.secrets_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(Error::io(&self.secrets_path, e)),
        };
        let bad = |what: &str| secret_error(format!("{} is unreadable: {what}", self.secrets_path.display()));
        let file: SecretsFile = serde_json::from_str(&text).map_err(|_| bad("not a Lucent secrets file"))?;
        if file.version != 1 {
            return Err(bad("unknown version"));
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let nonce = b64.decode(&file.nonce).map_err(|_| bad("bad nonce"))?;
        let ciphertext = b64.decode(&file.ciphertext).map_err(|_| bad("bad ciphertext"))?;
        if nonce.len() != 12 {
            return Err(bad("bad nonce"));
        }
        let Some(key) = self.read_key()? else {
            return Err(secret_error(format!(
                "{} exists but its key {} is missing",
                self.secrets_path.display(),
                self.key_path.display()
            )));
        };
        let cipher = ChaCha20Poly1305::new(&key);
        let plain = Zeroizing::new(
            cipher
                .decrypt(Nonce::from_slice(&nonce), Payload { msg: &ciphertext, aad: FILE_AAD })
                .map_err(|_| bad("the key does not open it, or it was altered"))?,
        );
        serde_json::from_slice::<BTreeMap<String, String>>(&plain)
            .map(|m| m.into_iter().map(|(k, v)| (k, Zeroizing::new(v))).collect())
            .map_err(|_| bad("bad contents"))
    }

    /// Encrypts `map` under the key (made on first use) with a fresh nonce and writes it
    /// atomically, 0600.
    fn write_file(&self, map: &BTreeMap<String, Zeroizing<String>>) -> Result<()> {
        let key = match self.read_key()? {
            Some(key) => key,
            None => self.create_key()?,
        };
        let plain_map: BTreeMap<&str, &str> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let plain = Zeroizing::new(serde_json::to_vec(&plain_map).map_err(|e| secret_error(e.to_string()))?);
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = ChaCha20Poly1305::new(&key)
            .encrypt(&nonce, Payload { msg: &plain, aad: FILE_AAD })
            .map_err(|_| secret_error("encryption failed"))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let file = SecretsFile { version: 1, nonce: b64.encode(nonce), ciphertext: b64.encode(ciphertext) };
        let text = serde_json::to_string_pretty(&file).map_err(|e| secret_error(e.to_string()))?;
        let dir = parent_dir(&self.secrets_path);
        crate::store::write_atomically(&dir, &self.secrets_path, |f| f.write_all(text.as_bytes()))
    }

    /// The key, or `None` when there is no key file. A key file others may read is made 0600.
    fn read_key(&self) -> Result<Option<Key>> {
        let bytes = match std::fs::read(&self.key_path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&self.key_path, e)),
        };
        if bytes.len() != KEY_BYTES {
            return Err(secret_error(format!("{} is not a 256-bit key", self.key_path.display())));
        }
        tighten_permissions(&self.key_path)?;
        Ok(Some(*Key::from_slice(&bytes)))
    }

    /// Makes a random key file (0600). Two processes racing here end with one key: the file is
    /// linked into place only if none exists.
    fn create_key(&self) -> Result<Key> {
        let key = ChaCha20Poly1305::generate_key(&mut OsRng);
        let dir = parent_dir(&self.key_path);
        crate::store::create_private_dir(&dir)?;
        let tmp = dir.join(format!(".{}-{}.key.tmp", std::process::id(), random_id()));
        let written = (|| {
            let mut f = crate::store::create_private_file(&tmp)?;
            f.write_all(&key)?;
            f.sync_all()?;
            std::fs::hard_link(&tmp, &self.key_path)
        })();
        let _ = std::fs::remove_file(&tmp);
        match written {
            Ok(()) => {
                if let Ok(d) = std::fs::File::open(&dir) {
                    let _ = d.sync_all();
                }
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self
                .read_key()?
                .ok_or_else(|| secret_error(format!("{} vanished while being made", self.key_path.display()))),
            Err(e) => Err(Error::io(&self.key_path, e)),
        }
    }
}

/// The on-disk form of the secrets file.
#[derive(Serialize, Deserialize)]
struct SecretsFile {
    version: u32,
    /// Base64 of the 96-bit nonce.
    nonce: String,
    /// Base64 of the ChaCha20-Poly1305 ciphertext (with its tag) of a JSON map id → value.
    ciphertext: String,
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// 128 random bits, hex.
fn random_id() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(unix)]
fn tighten_permissions(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!("{} could be read by others; made it 0600", path.display());
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn tighten_permissions(_path: &Path) -> Result<()> {
    Ok(())
}

fn secret_error(detail: impl Into<String>) -> Error {
    Error::Secret { detail: detail.into() }
}

fn keyring_error(e: &keyring::Error) -> Error {
    // keyring errors describe the store (no secret values).
    secret_error(format!("the OS keyring: {e}"))
}

fn keyring_entry(id: &str) -> Result<keyring::Entry> {
    keyring::Entry::new(KEYRING_SERVICE, id).map_err(|e| keyring_error(&e))
}

/// Whether the OS keyring answers (asked once per process): an entry can be looked up, found or
/// not.
pub fn keyring_reachable() -> bool {
    static REACHABLE: OnceLock<bool> = OnceLock::new();
    *REACHABLE.get_or_init(|| {
        if keyring::Entry::store_status().is_err() {
            return false;
        }
        match keyring::Entry::new(KEYRING_SERVICE, "lucent-probe").map(|e| e.get_password()) {
            Ok(Ok(_)) | Ok(Err(keyring::Error::NoEntry)) => true,
            Ok(Err(e)) => {
                tracing::info!("OS keyring not usable ({e}); secrets go to the encrypted file");
                false
            }
            Err(e) => {
                tracing::info!("OS keyring not usable ({e}); secrets go to the encrypted file");
                false
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(***)");
        assert_eq!(s.expose(), Some("hunter2"));
    }

    #[test]
    fn an_unstored_secret_does_not_serialise() {
        assert!(serde_json::to_string(&Secret::new("hunter2")).is_err());
    }

    #[test]
    fn file_store_round_trips_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecretStore::with_kind(&dir.path().join("book.json"), StoreKind::File);
        let mut a = Secret::new("alpha-pw");
        let mut b = Secret::new("beta-token");
        store.store(&mut a).unwrap();
        store.store(&mut b).unwrap();
        let (ra, rb) = (a.reference().unwrap().clone(), b.reference().unwrap().clone());
        assert_eq!(ra.store, StoreKind::File);
        assert_ne!(ra.id, rb.id);
        let on_disk = std::fs::read(store.secrets_path()).unwrap();
        assert!(!on_disk.windows(8).any(|w| w == b"alpha-pw"));
        // A reference read back resolves to the value.
        let json = serde_json::to_string(&a).unwrap();
        assert!(!json.contains("alpha-pw"), "{json}");
        let mut back: Secret = serde_json::from_str(&json).unwrap();
        assert_eq!(back.expose(), None);
        store.resolve(&mut back).unwrap();
        assert_eq!(back.expose(), Some("alpha-pw"));
        store.remove(std::slice::from_ref(&ra)).unwrap();
        let mut gone: Secret = serde_json::from_str(&json).unwrap();
        assert!(store.resolve(&mut gone).is_err());
        let mut still: Secret = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        store.resolve(&mut still).unwrap();
        assert_eq!(still.expose(), Some("beta-token"));
    }

    #[test]
    fn a_tampered_file_or_another_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecretStore::with_kind(&dir.path().join("book.json"), StoreKind::File);
        let mut a = Secret::new("alpha-pw");
        store.store(&mut a).unwrap();
        std::fs::write(store.key_path(), [7u8; KEY_BYTES]).unwrap();
        let mut back: Secret = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        let err = store.resolve(&mut back).unwrap_err().to_string();
        assert!(err.contains("does not open it"), "{err}");
        assert!(!err.contains("alpha-pw"));
    }

    #[test]
    fn plain_strings_read_as_secrets_to_store() {
        let s: Secret = serde_json::from_str("\"old-plain\"").unwrap();
        assert!(s.needs_storing());
        assert_eq!(s.expose(), Some("old-plain"));
    }
}
