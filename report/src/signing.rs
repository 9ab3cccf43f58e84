//! Per-user signing keys: who signed a report is a key, not a name typed on a command line.
//!
//! * Every user holds an **ed25519** key pair. The private key lives in the key folder the app
//!   gives (its data folder's `signing-keys/`, outside the report database), sealed with
//!   ChaCha20-Poly1305 under a key derived from the user's **passphrase** by Argon2id
//!   (19 MiB, 2 passes: OWASP's minimum). Lucent never stores the passphrase.
//! * The public half is a [`KeyRecord`] in the report store: name, role, administrator flag,
//!   **endorsed** (signed) by an administrator's key. Records are append-only.
//! * The **trust root** is the first administrator's public key, written once to
//!   `trust-root.json` in the key folder. A record counts only when its endorsements lead back
//!   to the root; a record added to the database by someone without an administrator's key does
//!   not, so roles come from credentials, not from a row.
//! * **First administrator:** `lucent report init-admin NAME --role reader|qa-lead` (or the GUI's
//!   first-run form) on a store without a root: the key endorses itself and becomes the root.
//! * **Forgotten passphrase:** an administrator issues a new key for the user
//!   ([`crate::ReportStore::rekey`]); the old record stays, so everything signed with the old key
//!   still verifies, but only the newest key of a name can sign.
//! * **Scripts and tests** give passphrases through `LUCENT_PASSPHRASE_FILE` or
//!   `LUCENT_PASSPHRASE` (never an argument, which any user can read in the process list).
//!
//! What this protects against: someone with write access to `reports.sqlite` but not to a
//! reader's passphrase can no longer sign as that reader, forge a role, or change a signed text
//! without `show`, `export` and `audit verify` saying so. What it does not: a user who knows
//! another's passphrase, or an attacker who can replace the trust root *and* the database.

use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::store::Role;

/// The shortest passphrase accepted for a new key, in characters.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

/// Argon2id cost of the passphrase key: memory in KiB, passes, lanes.
const ARGON2_M_KIB: u32 = 19 * 1024;
const ARGON2_T: u32 = 2;
const ARGON2_P: u32 = 1;
/// Authenticated with every sealed key, so a file of another format or user is refused.
const SEALED_AAD: &[u8] = b"lucent-signing-key-v1";
/// Domain separation of the two things keys sign.
const ENDORSEMENT_DOMAIN: &str = "lucent-key-endorsement-v1";
const REPORT_SIGNATURE_DOMAIN: &str = "lucent-report-signature-v1";

/// A passphrase, wiped from memory when dropped and never printed.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    pub fn new(text: String) -> Self {
        Self(Zeroizing::new(text))
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Whether two passphrases are the same text (for "type it again").
    pub fn matches(&self, other: &Self) -> bool {
        self.0.as_bytes() == other.0.as_bytes()
    }

    /// Refuses passphrases too short for a new key.
    pub fn check_new(&self) -> Result<()> {
        if self.0.chars().count() < MIN_PASSPHRASE_CHARS {
            return Err(Error::Invalid { what: format!("passphrase: at least {MIN_PASSPHRASE_CHARS} characters") });
        }
        Ok(())
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

/// The public half of a user's key as the report store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The first 16 bytes of SHA-256 over the public key, hex.
    pub fingerprint: String,
    pub name: String,
    pub role: Role,
    /// May add users and issue new keys.
    pub admin: bool,
    /// The ed25519 public key, hex.
    pub public_key: String,
    pub created_at: String,
    /// Fingerprint of the administrator key that endorsed this one (itself, for the root).
    pub endorsed_by: String,
    /// The endorser's signature over [`KeyRecord::endorsement_message`], hex.
    pub endorsement: String,
}

impl KeyRecord {
    /// What an administrator signs to endorse this key.
    pub(crate) fn endorsement_message(&self) -> Vec<u8> {
        format!(
            "{ENDORSEMENT_DOMAIN}\n{}\n{}\n{}\n{}\n{}",
            self.name,
            self.role.code(),
            self.admin,
            self.public_key,
            self.created_at
        )
        .into_bytes()
    }
}

/// The first administrator's public key: every key record must lead back to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustRoot {
    pub name: String,
    pub fingerprint: String,
    pub public_key: String,
    pub created_at: String,
}

/// An unlocked key: proof that its user typed the passphrase. Held only as long as needed.
pub struct Credential {
    record: KeyRecord,
    key: SigningKey,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.record.name)
            .field("role", &self.record.role)
            .field("fingerprint", &self.record.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Credential {
    pub fn name(&self) -> &str {
        &self.record.name
    }

    pub fn role(&self) -> Role {
        self.record.role
    }

    pub fn is_admin(&self) -> bool {
        self.record.admin
    }

    pub fn fingerprint(&self) -> &str {
        &self.record.fingerprint
    }

    pub fn record(&self) -> &KeyRecord {
        &self.record
    }

    pub(crate) fn new(record: KeyRecord, key: SigningKey) -> Self {
        Self { record, key }
    }

    pub(crate) fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Signs `message`, hex.
    pub(crate) fn sign(&self, message: &[u8]) -> String {
        hex::encode(self.key.sign(message).to_bytes())
    }
}

/// A fresh random key pair.
pub(crate) fn new_key() -> Result<SigningKey> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut())
        .map_err(|e| Error::Invalid { what: format!("no random source for a signing key: {e}") })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The fingerprint of a public key.
pub(crate) fn fingerprint(public: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(public.as_bytes())[..16])
}

/// Whether `signature_hex` is `public_key_hex`'s signature of `message`.
pub(crate) fn verify(public_key_hex: &str, message: &[u8], signature_hex: &str) -> bool {
    let (Ok(public), Ok(signature)) = (hex::decode(public_key_hex), hex::decode(signature_hex)) else {
        return false;
    };
    let (Ok(public), Ok(signature)) = (<[u8; 32]>::try_from(public.as_slice()), Signature::from_slice(&signature))
    else {
        return false;
    };
    VerifyingKey::from_bytes(&public).is_ok_and(|key| key.verify(message, &signature).is_ok())
}

/// The public key of a record, checked against its fingerprint.
pub(crate) fn record_key_matches(record: &KeyRecord) -> bool {
    hex::decode(&record.public_key)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
        .and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok())
        .is_some_and(|key| fingerprint(&key) == record.fingerprint)
}

/// What a reader's key signs when a report version is signed.
pub(crate) fn report_signature_message(
    study_uid: &str,
    kind: &str,
    content_sha256: &str,
    signed_by: &str,
    signed_at: &str,
) -> Vec<u8> {
    format!("{REPORT_SIGNATURE_DOMAIN}\n{study_uid}\n{kind}\n{content_sha256}\n{signed_by}\n{signed_at}").into_bytes()
}

/// A private key sealed under a passphrase, as stored on disk.
#[derive(Serialize, Deserialize)]
struct SealedKey {
    format: u32,
    fingerprint: String,
    kdf: String,
    m_kib: u32,
    t: u32,
    p: u32,
    salt: String,
    nonce: String,
    ciphertext: String,
}

/// The key folder: sealed private keys (`<name>.key`) and the trust root (`trust-root.json`),
/// created 0700 / 0600.
#[derive(Debug, Clone)]
pub struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    const ROOT_FILE: &'static str = "trust-root.json";

    /// The key folder `dir` (created when missing).
    pub fn in_dir(dir: &Path) -> Result<Self> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(|e| Error::io(dir, e))?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    /// The key folder of the store `store_dir/reports.sqlite` under `keys_root` (one folder per
    /// store: each store has its own users and trust root).
    pub fn for_store(keys_root: &Path, store_dir: &Path) -> Result<Self> {
        Self::in_dir(&keys_root.join(crate::store::store_id(store_dir)))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The trust root, when an administrator was created.
    pub fn trust_root(&self) -> Result<Option<TrustRoot>> {
        let path = self.dir.join(Self::ROOT_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::Invalid { what: format!("trust root {}: {e}", path.display()) }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Writes the trust root; refuses to replace one.
    pub(crate) fn create_trust_root(&self, root: &TrustRoot) -> Result<()> {
        let text = serde_json::to_string_pretty(root)?;
        write_private_new(&self.dir.join(Self::ROOT_FILE), text.as_bytes())
    }

    fn key_file(&self, name: &str) -> Result<PathBuf> {
        // Names become file names: keep them to what cannot climb out of the folder.
        let safe = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
            && !name.starts_with('.');
        if !safe {
            return Err(Error::Invalid {
                what: format!("user name {name:?}: letters, digits, '.', '_', '-', '@' only, at most 64 bytes"),
            });
        }
        Ok(self.dir.join(format!("{name}.key")))
    }

    /// Checks that `name` can be a user (its key file name).
    pub(crate) fn check_name(&self, name: &str) -> Result<()> {
        self.key_file(name).map(|_| ())
    }

    /// Seals `key` under `passphrase` as `name`'s private key, replacing any earlier one.
    pub(crate) fn save_secret(&self, name: &str, key: &SigningKey, passphrase: &Passphrase) -> Result<()> {
        let path = self.key_file(name)?;
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut salt).map_err(|e| Error::Invalid { what: format!("no random source: {e}") })?;
        getrandom::fill(&mut nonce).map_err(|e| Error::Invalid { what: format!("no random source: {e}") })?;
        let sealing = derive_key(passphrase, &salt, ARGON2_M_KIB, ARGON2_T, ARGON2_P)?;
        let cipher = ChaCha20Poly1305::new(Key::from_slice(sealing.as_ref()));
        let secret = Zeroizing::new(key.to_bytes());
        let ciphertext = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: secret.as_ref(), aad: SEALED_AAD })
            .map_err(|_| Error::Invalid { what: "could not seal the signing key".into() })?;
        let sealed = SealedKey {
            format: 1,
            fingerprint: fingerprint(&key.verifying_key()),
            kdf: "argon2id".into(),
            m_kib: ARGON2_M_KIB,
            t: ARGON2_T,
            p: ARGON2_P,
            salt: hex::encode(salt),
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(ciphertext),
        };
        let text = serde_json::to_string_pretty(&sealed)?;
        let tmp = path.with_extension("key.tmp");
        let _ = std::fs::remove_file(&tmp);
        write_private_new(&tmp, text.as_bytes())?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }

    /// `name`'s private key, unsealed with `passphrase`.
    pub(crate) fn load_secret(&self, name: &str, passphrase: &Passphrase) -> Result<SigningKey> {
        let path = self.key_file(name)?;
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound { what: format!("a signing key for user {name:?} on this machine") });
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let bad = |why: &str| Error::Invalid { what: format!("signing key file {}: {why}", path.display()) };
        let sealed: SealedKey = serde_json::from_str(&text).map_err(|_| bad("not a Lucent key file"))?;
        if sealed.format != 1 || sealed.kdf != "argon2id" {
            return Err(bad("unknown format"));
        }
        // A forged file must not make us spend gigabytes or hours deriving its key.
        if sealed.m_kib > 1 << 20 || sealed.t > 16 || sealed.p > 16 {
            return Err(bad("key derivation cost out of range"));
        }
        let salt = hex::decode(&sealed.salt).map_err(|_| bad("bad salt"))?;
        let nonce = hex::decode(&sealed.nonce).map_err(|_| bad("bad nonce"))?;
        let ciphertext = hex::decode(&sealed.ciphertext).map_err(|_| bad("bad ciphertext"))?;
        if nonce.len() != 12 || salt.len() < 8 {
            return Err(bad("bad nonce or salt"));
        }
        let sealing = derive_key(passphrase, &salt, sealed.m_kib, sealed.t, sealed.p)?;
        let cipher = ChaCha20Poly1305::new(Key::from_slice(sealing.as_ref()));
        let secret = Zeroizing::new(
            cipher
                .decrypt(Nonce::from_slice(&nonce), Payload { msg: &ciphertext, aad: SEALED_AAD })
                .map_err(|_| Error::Forbidden { what: format!("wrong passphrase for user {name:?}") })?,
        );
        let bytes: [u8; 32] = secret.as_slice().try_into().map_err(|_| bad("bad key length"))?;
        let key = SigningKey::from_bytes(&bytes);
        if fingerprint(&key.verifying_key()) != sealed.fingerprint {
            return Err(bad("the key does not match its fingerprint"));
        }
        Ok(key)
    }
}

/// Writes `bytes` to a new file (never over an existing one) readable by its owner only (0600),
/// synced: the key files of this crate (signing keys, trust root, audit anchor key).
pub(crate) fn write_private_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| Error::io(path, e))?;
    std::io::Write::write_all(&mut file, bytes).map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

/// The 256-bit sealing key of a passphrase (Argon2id).
fn derive_key(passphrase: &Passphrase, salt: &[u8], m_kib: u32, t: u32, p: u32) -> Result<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(m_kib, t, p, Some(32))
        .map_err(|e| Error::Invalid { what: format!("key derivation parameters: {e}") })?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.bytes(), salt, out.as_mut())
        .map_err(|e| Error::Invalid { what: format!("key derivation: {e}") })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_sealed_key_opens_only_with_its_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyStore::in_dir(dir.path()).unwrap();
        let key = new_key().unwrap();
        keys.save_secret("dr.kim", &key, &Passphrase::new("correct horse".into())).unwrap();
        let opened = keys.load_secret("dr.kim", &Passphrase::new("correct horse".into())).unwrap();
        assert_eq!(opened.to_bytes(), key.to_bytes());
        let wrong = keys.load_secret("dr.kim", &Passphrase::new("wrong horse".into()));
        assert!(matches!(wrong, Err(Error::Forbidden { .. })), "{wrong:?}");
        // The file holds neither the passphrase nor the key in the clear.
        let text = std::fs::read_to_string(dir.path().join("dr.kim.key")).unwrap();
        assert!(!text.contains("correct horse") && !text.contains(&hex::encode(key.to_bytes())));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("dr.kim.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "key file readable by others: {mode:o}");
        }
    }

    #[test]
    fn names_that_would_climb_out_of_the_key_folder_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyStore::in_dir(dir.path()).unwrap();
        for name in ["../evil", "a/b", "", ".hidden", "x\0y"] {
            assert!(keys.check_name(name).is_err(), "{name:?} accepted");
        }
        keys.check_name("dr.kim").unwrap();
        keys.check_name("김영희").unwrap();
    }

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let key = new_key().unwrap();
        let other = new_key().unwrap();
        let public = hex::encode(key.verifying_key().as_bytes());
        let signature = hex::encode(key.sign(b"text").to_bytes());
        assert!(verify(&public, b"text", &signature));
        assert!(!verify(&public, b"text2", &signature));
        assert!(!verify(&hex::encode(other.verifying_key().as_bytes()), b"text", &signature));
        assert!(!verify("zz", b"text", &signature));
    }
}
