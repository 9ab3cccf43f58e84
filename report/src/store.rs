//! The report store: one SQLite file (`reports.sqlite`) in a folder the app gives, in WAL mode.
//!
//! * `reports`: one per study (template, language).
//! * `versions`: the current **draft** (autosaves overwrite it), then immutable **signed** versions
//!   and **addenda**. A signed version or addendum can be neither updated nor deleted: the code
//!   refuses, and SQLite triggers `RAISE(ABORT)` should anything else try.
//! * `findings`: the AI findings of each run (model, version, label, score, threshold), for QA.
//! * `decisions`: the reader's current decision per finding (frozen once the report is signed).
//! * `qa_reviews`: QA leads' reviews, append-only, kept apart from the reader's decisions so that a
//!   review never alters a signed report.
//! * `users`: local profiles (name, role reader | qa_lead), kept in step with `user_keys`.
//! * `user_keys`: the public half of every user's signing key, endorsed by an administrator's key
//!   and leading back to the trust root outside the database (see [`crate::signing`]);
//!   append-only, so keys replaced after a forgotten passphrase still verify what they signed.
//!   Deciding, reviewing, signing and adding users take an unlocked [`Credential`], not a name.
//! * `audit`: append-only log of who did what when, hash-chained (SHA-256 over the previous hash and
//!   the row), with triggers refusing UPDATE and DELETE. [`ReportStore::verify_audit`] finds the
//!   first broken link. The chain alone detects edited, inserted and deleted rows, but not a chain
//!   rewritten and re-hashed by someone who can write the file, nor the newest rows cut off. So the
//!   head is **anchored** outside the database ([`AuditAnchor`]): after every commit that appends
//!   audit rows, the last row's id and hash and the row count are written to a head file sealed
//!   with HMAC-SHA-256 under a key that never enters the database. Verification then also
//!   requires the anchored row to be there, unchanged, and no row after it that was written
//!   without the key.
//! * Signed versions are checked against the audit: the content hash the `sign` / `addendum` audit
//!   rows recorded must match the version's text now, and the version's ed25519 signature must
//!   verify under its signer's endorsed key ([`ReportStore::verify_signed_versions`]), so a signed
//!   text changed behind the triggers' back is caught by `show`, `export` and `audit verify`.
//!
//! Nothing in this store holds a patient name or ID: reports are keyed by Study Instance UID and
//! audit details carry ids, model versions, counts and hashes only (export paths are not logged).
//! Signing and addenda run with `synchronous=FULL`; a SIGKILL at any point leaves the last
//! committed draft and every signed version intact (tested).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::draft::Report;
use crate::error::{Error, Result};
use crate::model::{AiFinding, Decisions, FindingDecision};
use crate::signing::{self, Credential, KeyRecord, KeyStore, Passphrase, TrustRoot};

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('reader', 'qa_lead')),
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    lang TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    id INTEGER PRIMARY KEY,
    report_id INTEGER NOT NULL REFERENCES reports(id),
    kind TEXT NOT NULL CHECK (kind IN ('draft', 'signed', 'addendum')),
    body TEXT NOT NULL,
    author TEXT NOT NULL,
    saved_at TEXT NOT NULL,
    signed_by TEXT,
    signed_at TEXT,
    content_sha256 TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS one_draft_per_report ON versions(report_id) WHERE kind = 'draft';
CREATE TABLE IF NOT EXISTS findings (
    study_uid TEXT NOT NULL,
    finding_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    model_version TEXT NOT NULL,
    label TEXT NOT NULL,
    score REAL NOT NULL,
    threshold REAL NOT NULL,
    recorded_at TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (study_uid, finding_id)
);
CREATE TABLE IF NOT EXISTS decisions (
    study_uid TEXT NOT NULL,
    finding_id TEXT NOT NULL,
    decision TEXT NOT NULL,
    user TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    PRIMARY KEY (study_uid, finding_id)
);
CREATE TABLE IF NOT EXISTS qa_reviews (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL,
    finding_id TEXT NOT NULL,
    decision TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    reviewed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    user TEXT NOT NULL,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS user_keys (
    fingerprint TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('reader', 'qa_lead')),
    admin INTEGER NOT NULL,
    public_key TEXT NOT NULL,
    created_at TEXT NOT NULL,
    endorsed_by TEXT NOT NULL,
    endorsement TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS user_keys_no_update BEFORE UPDATE ON user_keys
    BEGIN SELECT RAISE(ABORT, 'signing keys are append-only'); END;
CREATE TRIGGER IF NOT EXISTS user_keys_no_delete BEFORE DELETE ON user_keys
    BEGIN SELECT RAISE(ABORT, 'signing keys are append-only'); END;
CREATE TRIGGER IF NOT EXISTS signed_versions_are_immutable BEFORE UPDATE ON versions
    WHEN OLD.kind <> 'draft'
    BEGIN SELECT RAISE(ABORT, 'signed report versions are immutable'); END;
CREATE TRIGGER IF NOT EXISTS signed_versions_are_kept BEFORE DELETE ON versions
    WHEN OLD.kind <> 'draft'
    BEGIN SELECT RAISE(ABORT, 'signed report versions cannot be deleted'); END;
CREATE TRIGGER IF NOT EXISTS qa_reviews_are_append_only BEFORE UPDATE ON qa_reviews
    BEGIN SELECT RAISE(ABORT, 'QA reviews are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
";

/// The hash before the first audit row.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A local user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads studies, decides on findings, edits and signs reports.
    Reader,
    /// Reviews what the AI flagged and how readers responded; never alters a signed report.
    QaLead,
}

impl Role {
    pub fn code(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::QaLead => "qa_lead",
        }
    }

    fn parse(code: &str) -> Result<Self> {
        match code {
            "reader" => Ok(Self::Reader),
            "qa_lead" => Ok(Self::QaLead),
            other => Err(Error::Invalid { what: format!("role {other:?}") }),
        }
    }
}

impl std::str::FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(&s.trim().to_ascii_lowercase().replace('-', "_"))
    }
}

/// A local user profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub role: Role,
}

/// What a stored version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionKind {
    Draft,
    Signed,
    Addendum,
}

impl VersionKind {
    pub fn code(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Signed => "signed",
            Self::Addendum => "addendum",
        }
    }

    fn parse(code: &str) -> Result<Self> {
        match code {
            "draft" => Ok(Self::Draft),
            "signed" => Ok(Self::Signed),
            "addendum" => Ok(Self::Addendum),
            other => Err(Error::Invalid { what: format!("version kind {other:?}") }),
        }
    }
}

/// The body of a version: the report, or an addendum's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum VersionBody {
    Report(Report),
    Addendum { text: String },
}

/// One stored version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportVersion {
    pub id: i64,
    pub study_uid: String,
    pub kind: VersionKind,
    pub body: VersionBody,
    pub author: String,
    pub saved_at: String,
    pub signed_by: Option<String>,
    pub signed_at: Option<String>,
    /// SHA-256 of the stored body.
    pub content_sha256: String,
    /// Fingerprint of the key that signed it (None for drafts, and for versions signed by name
    /// only, before signing keys).
    pub signer_key: Option<String>,
}

/// Where a study's report stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    /// Not signed (the FHIR status of a preliminary export).
    Draft,
    /// Signed, no addenda.
    Final,
    /// Signed, with addenda.
    Amended,
}

impl ReportStatus {
    /// The FHIR DiagnosticReport status.
    pub fn fhir(self) -> &'static str {
        match self {
            Self::Draft => "preliminary",
            Self::Final => "final",
            Self::Amended => "amended",
        }
    }
}

/// What may be exported, after the signing gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportSource {
    pub report: Report,
    pub status: ReportStatus,
    pub signed_by: Option<String>,
    pub signed_at: Option<String>,
    /// Addenda texts with their signer and time, oldest first.
    pub addenda: Vec<(String, String, String)>,
}

/// An audit action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    UserAdded,
    Open,
    AiRun,
    Accept,
    Reject,
    Edit,
    Draft,
    Sign,
    Addendum,
    Export,
    Send,
    QaReview,
}

impl AuditAction {
    pub fn code(self) -> &'static str {
        match self {
            Self::UserAdded => "user_added",
            Self::Open => "open",
            Self::AiRun => "ai_run",
            Self::Accept => "accept",
            Self::Reject => "reject",
            Self::Edit => "edit",
            Self::Draft => "draft",
            Self::Sign => "sign",
            Self::Addendum => "addendum",
            Self::Export => "export",
            Self::Send => "send",
            Self::QaReview => "qa_review",
        }
    }
}

/// One audit row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub user: String,
    pub action: String,
    pub object: String,
    /// JSON text, exactly as hashed.
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditEntry {
    /// SHA-256 (hex) over the previous hash and the canonical row.
    pub fn compute_hash(&self) -> String {
        let canonical = serde_json::json!([self.id, self.at, self.user, self.action, self.object, self.detail]);
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(b"\n");
        h.update(canonical.to_string().as_bytes());
        hex::encode(h.finalize())
    }
}

/// The first broken link of the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokenLink {
    pub id: i64,
    pub reason: String,
}

/// A signed version or addendum whose text no longer matches what was signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TamperedVersion {
    pub version: i64,
    pub study_uid: String,
    pub reason: String,
}

/// The result of [`ReportStore::verify_audit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerdict {
    pub rows: u64,
    /// The last row's hash (record it elsewhere to detect truncation later).
    pub head_hash: String,
    pub first_broken: Option<BrokenLink>,
}

impl AuditVerdict {
    pub fn is_intact(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// A QA lead's review of one finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QaReview {
    pub id: i64,
    pub study_uid: String,
    pub finding_id: String,
    pub decision: FindingDecision,
    pub reviewer: String,
    pub reviewed_at: String,
}

/// A recorded finding with the decision that counts for statistics (a QA review when there is
/// one, else the reader's decision).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecidedFinding {
    pub study_uid: String,
    pub finding: AiFinding,
    pub recorded_at: String,
    pub decision: FindingDecision,
}

/// A short id of a store folder (its canonical path hashed), for files kept about it elsewhere.
pub(crate) fn store_id(store_dir: &Path) -> String {
    let canonical = std::fs::canonicalize(store_dir).unwrap_or_else(|_| store_dir.to_path_buf());
    sha256_hex(canonical.to_string_lossy().as_bytes())[..16].to_owned()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Where a report store's audit head is anchored, outside its database: a key file (32 random
/// bytes, created 0600 on first use) and a head file per store, in a folder the app gives (its
/// data folder, which the database's writers need not be able to write).
#[derive(Clone)]
pub struct AuditAnchor {
    head_file: PathBuf,
    key: Vec<u8>,
}

impl std::fmt::Debug for AuditAnchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditAnchor").field("head_file", &self.head_file).finish_non_exhaustive()
    }
}

/// The anchored head: the last audit row when it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AnchoredHead {
    rows: u64,
    last_id: i64,
    head_hash: String,
    mac: String,
}

impl AuditAnchor {
    /// The anchor of the store `store_dir/reports.sqlite`, kept in `anchor_dir`.
    pub fn in_dir(anchor_dir: &Path, store_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(anchor_dir).map_err(|e| Error::io(anchor_dir, e))?;
        let key_file = anchor_dir.join("audit.key");
        if !key_file.exists() {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key)
                .map_err(|e| Error::Invalid { what: format!("no random source for the audit key: {e}") })?;
            signing::write_private_new(&key_file, &key)?;
        }
        let key = std::fs::read(&key_file).map_err(|e| Error::io(&key_file, e))?;
        let id = store_id(store_dir);
        Ok(Self { head_file: anchor_dir.join(format!("audit-head-{id}.json")), key })
    }

    fn mac(&self, rows: u64, last_id: i64, head_hash: &str) -> String {
        use hmac::Mac;
        let mut mac = match hmac::Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(mac) => mac,
            // HMAC takes keys of any length; this cannot happen.
            Err(_) => return String::new(),
        };
        mac.update(
            format!(
                "{rows}
{last_id}
{head_hash}"
            )
            .as_bytes(),
        );
        hex::encode(mac.finalize().into_bytes())
    }

    fn read(&self) -> Result<Option<AnchoredHead>> {
        match std::fs::read_to_string(&self.head_file) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::Invalid { what: format!("audit head file {}: {e}", self.head_file.display()) }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&self.head_file, e)),
        }
    }

    fn write(&self, rows: u64, last_id: i64, head_hash: &str) -> Result<()> {
        let head =
            AnchoredHead { rows, last_id, head_hash: head_hash.to_owned(), mac: self.mac(rows, last_id, head_hash) };
        let text = serde_json::to_string(&head).map_err(|e| Error::Invalid { what: e.to_string() })?;
        let tmp = self.head_file.with_extension("json.tmp");
        let written = std::fs::write(&tmp, text)
            .and_then(|()| std::fs::File::open(&tmp).and_then(|f| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &self.head_file));
        written.map_err(|e| Error::io(&self.head_file, e))
    }
}

/// A signed version or addendum as [`ReportStore::verify_signed_versions`] reads it.
struct SignedRow {
    id: i64,
    study_uid: String,
    kind: String,
    body: String,
    stored_sha256: String,
    signed_by: String,
    signed_at: String,
    signature: Option<String>,
    signer_key: Option<String>,
}

/// The report store (see the module docs).
pub struct ReportStore {
    path: PathBuf,
    conn: Connection,
    clock: fn() -> String,
    anchor: Option<AuditAnchor>,
    keys: Option<KeyStore>,
}

impl std::fmt::Debug for ReportStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl ReportStore {
    /// The file name inside the folder the app gives.
    pub const FILE_NAME: &'static str = "reports.sqlite";

    /// Opens (creating when needed) `dir/reports.sqlite`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(Self::FILE_NAME);
        let conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        // Stores from before signing keys: their versions gain the signature columns.
        for column in ["signature", "signer_key"] {
            let present: bool = conn.query_row(
                "SELECT COUNT(*) > 0 FROM pragma_table_info('versions') WHERE name = ?1",
                [column],
                |r| r.get(0),
            )?;
            if !present {
                conn.execute_batch(&format!("ALTER TABLE versions ADD COLUMN {column} TEXT"))?;
            }
        }
        Ok(Self { path, conn, clock: crate::time::now_rfc3339, anchor: None, keys: None })
    }

    /// Uses `keys` for users' private keys and the trust root (see [`crate::signing`]). Without
    /// a key store, nothing can be signed, decided or reviewed.
    pub fn set_key_store(&mut self, keys: KeyStore) {
        self.keys = Some(keys);
    }

    fn key_store(&self) -> Result<&KeyStore> {
        self.keys.as_ref().ok_or_else(|| Error::Invalid { what: "report store without a key folder".into() })
    }

    /// Anchors the audit head outside the database from now on (see the module docs). A store
    /// anchored for the first time is anchored at its current head.
    pub fn set_anchor(&mut self, anchor: AuditAnchor) -> Result<()> {
        let first = anchor.read()?.is_none();
        self.anchor = Some(anchor);
        if first { self.anchor_head() } else { Ok(()) }
    }

    /// Writes the current audit head to the anchor (after every commit that appended audit rows).
    fn anchor_head(&self) -> Result<()> {
        let Some(anchor) = &self.anchor else { return Ok(()) };
        let (rows, last): (i64, Option<(i64, String)>) = (
            self.conn.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))?,
            self.conn
                .query_row("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?,
        );
        let (last_id, head_hash) = last.unwrap_or((0, GENESIS_HASH.to_owned()));
        anchor.write(rows.max(0) as u64, last_id, &head_hash)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the clock (RFC 3339 UTC text); for tests and imports of old data.
    pub fn set_clock(&mut self, clock: fn() -> String) {
        self.clock = clock;
    }

    fn now(&self) -> String {
        (self.clock)()
    }

    /// `PRAGMA integrity_check` ("ok" when sound).
    pub fn integrity_check(&self) -> Result<String> {
        Ok(self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }

    // ---- users and their keys ----

    /// Whether the first administrator exists (the trust root is written).
    pub fn has_admin(&self) -> Result<bool> {
        Ok(self.key_store()?.trust_root()?.is_some())
    }

    /// Creates the first administrator: a key for `name` with `role`, endorsed by itself and
    /// written as the trust root. Refused once a root exists.
    pub fn init_admin(&mut self, name: &str, role: Role, passphrase: &Passphrase) -> Result<Credential> {
        let name = name.trim();
        let keys = self.key_store()?.clone();
        keys.check_name(name)?;
        passphrase.check_new()?;
        if keys.trust_root()?.is_some() {
            return Err(Error::Forbidden { what: "an administrator exists already; ask one to add users".into() });
        }
        let known: i64 = self.conn.query_row("SELECT COUNT(*) FROM user_keys", [], |r| r.get(0))?;
        if known > 0 {
            return Err(Error::Tampered {
                what: format!("the store holds signing keys but the trust root in {} is gone", keys.dir().display()),
            });
        }
        let key = signing::new_key()?;
        let at = self.now();
        let fingerprint = signing::fingerprint(&key.verifying_key());
        let mut record = KeyRecord {
            fingerprint: fingerprint.clone(),
            name: name.to_owned(),
            role,
            admin: true,
            public_key: hex::encode(key.verifying_key().as_bytes()),
            created_at: at.clone(),
            endorsed_by: fingerprint.clone(),
            endorsement: String::new(),
        };
        record.endorsement = Credential::new(record.clone(), key.clone()).sign(&record.endorsement_message());
        keys.save_secret(name, &key, passphrase)?;
        self.insert_key(&record, name, "first_admin")?;
        keys.create_trust_root(&TrustRoot {
            name: name.to_owned(),
            fingerprint,
            public_key: record.public_key.clone(),
            created_at: at,
        })?;
        Ok(Credential::new(record, key))
    }

    /// An administrator adds a user with a first passphrase (which the user then changes with
    /// [`Self::change_passphrase`]). Refused for a name that has a key: see [`Self::rekey`].
    pub fn add_user(
        &mut self,
        admin: &Credential,
        name: &str,
        role: Role,
        is_admin: bool,
        passphrase: &Passphrase,
    ) -> Result<KeyRecord> {
        if self.current_key(name.trim())?.is_some() {
            return Err(Error::Invalid { what: format!("user {:?} exists; a new key is `rekey`", name.trim()) });
        }
        self.issue_key(admin, name, role, is_admin, passphrase, "user_added")
    }

    /// An administrator issues a new key for an existing user (a forgotten passphrase, or a new
    /// role). The old key stops signing; what it signed still verifies.
    pub fn rekey(
        &mut self,
        admin: &Credential,
        name: &str,
        role: Role,
        is_admin: bool,
        passphrase: &Passphrase,
    ) -> Result<KeyRecord> {
        if self.current_key(name.trim())?.is_none() {
            return Err(Error::NotFound { what: format!("a user named {:?}", name.trim()) });
        }
        self.issue_key(admin, name, role, is_admin, passphrase, "rekeyed")
    }

    fn issue_key(
        &mut self,
        admin: &Credential,
        name: &str,
        role: Role,
        is_admin: bool,
        passphrase: &Passphrase,
        why: &str,
    ) -> Result<KeyRecord> {
        let name = name.trim();
        let keys = self.key_store()?.clone();
        keys.check_name(name)?;
        passphrase.check_new()?;
        self.check_credential(admin)?;
        if !admin.is_admin() {
            return Err(Error::Forbidden { what: format!("user {:?} is not an administrator", admin.name()) });
        }
        let key = signing::new_key()?;
        let at = self.now();
        let mut record = KeyRecord {
            fingerprint: signing::fingerprint(&key.verifying_key()),
            name: name.to_owned(),
            role,
            admin: is_admin,
            public_key: hex::encode(key.verifying_key().as_bytes()),
            created_at: at,
            endorsed_by: admin.fingerprint().to_owned(),
            endorsement: String::new(),
        };
        record.endorsement = admin.sign(&record.endorsement_message());
        keys.save_secret(name, &key, passphrase)?;
        self.insert_key(&record, admin.name(), why)?;
        Ok(record)
    }

    fn insert_key(&mut self, record: &KeyRecord, by: &str, why: &str) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO user_keys (fingerprint, name, role, admin, public_key, created_at, endorsed_by, endorsement)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                record.fingerprint,
                record.name,
                record.role.code(),
                record.admin,
                record.public_key,
                record.created_at,
                record.endorsed_by,
                record.endorsement
            ],
        )?;
        tx.execute(
            "INSERT INTO users (name, role, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET role = excluded.role",
            params![record.name, record.role.code(), record.created_at],
        )?;
        let detail = serde_json::json!({
            "role": record.role.code(), "admin": record.admin, "key": record.fingerprint, "why": why,
        });
        append_audit_tx(&tx, &record.created_at, by, AuditAction::UserAdded, &record.name, &detail)?;
        tx.commit()?;
        self.anchor_head()
    }

    /// Unlocks `name`'s current key with `passphrase`.
    pub fn unlock(&self, name: &str, passphrase: &Passphrase) -> Result<Credential> {
        let name = name.trim();
        let record =
            self.current_key(name)?.ok_or_else(|| Error::Forbidden { what: format!("no user named {name:?}") })?;
        let key = self.key_store()?.load_secret(name, passphrase)?;
        if signing::fingerprint(&key.verifying_key()) != record.fingerprint {
            return Err(Error::Forbidden {
                what: format!("the key of {name:?} on this machine was replaced; ask an administrator for a new one"),
            });
        }
        let credential = Credential::new(record, key);
        self.check_credential(&credential)?;
        Ok(credential)
    }

    /// A user changes their own passphrase (same key).
    pub fn change_passphrase(&self, name: &str, old: &Passphrase, new: &Passphrase) -> Result<()> {
        new.check_new()?;
        let credential = self.unlock(name, old)?;
        self.key_store()?.save_secret(credential.name(), credential.key(), new)
    }

    /// `name`'s newest key record.
    pub fn current_key(&self, name: &str) -> Result<Option<KeyRecord>> {
        Ok(self.key_records_where("name = ?1 ORDER BY rowid DESC LIMIT 1", &name)?.into_iter().next())
    }

    /// Every key record, oldest first.
    pub fn key_records(&self) -> Result<Vec<KeyRecord>> {
        self.key_records_where("?1 ORDER BY rowid", &1)
    }

    fn key_records_where(&self, condition: &str, value: &dyn rusqlite::ToSql) -> Result<Vec<KeyRecord>> {
        let sql = format!(
            "SELECT fingerprint, name, role, admin, public_key, created_at, endorsed_by, endorsement
             FROM user_keys WHERE {condition}"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([value], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, bool>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (fingerprint, name, role, admin, public_key, created_at, endorsed_by, endorsement) = row?;
            out.push(KeyRecord {
                fingerprint,
                name,
                role: Role::parse(&role)?,
                admin,
                public_key,
                created_at,
                endorsed_by,
                endorsement,
            });
        }
        Ok(out)
    }

    /// Why `record` cannot be trusted: its endorsements do not lead back to the trust root
    /// through administrators' keys. None when it can.
    fn untrusted(&self, record: &KeyRecord, root: &TrustRoot) -> Result<Option<String>> {
        let mut current = record.clone();
        // Each step goes to an endorser; a chain longer than the records is a loop.
        let records: i64 = self.conn.query_row("SELECT COUNT(*) FROM user_keys", [], |r| r.get(0))?;
        for _ in 0..=records.max(0) {
            if !signing::record_key_matches(&current) {
                return Ok(Some(format!("key {} does not match its fingerprint", current.fingerprint)));
            }
            if current.fingerprint == root.fingerprint {
                let ok = current.public_key == root.public_key
                    && current.endorsed_by == root.fingerprint
                    && signing::verify(&current.public_key, &current.endorsement_message(), &current.endorsement);
                return Ok((!ok).then(|| "the trust root's record was altered".to_owned()));
            }
            let Some(endorser) = self.key_records_where("fingerprint = ?1", &current.endorsed_by)?.into_iter().next()
            else {
                return Ok(Some(format!("key {} was endorsed by an unknown key", current.fingerprint)));
            };
            if !endorser.admin {
                return Ok(Some(format!("key {} was endorsed by a non-administrator", current.fingerprint)));
            }
            if !signing::verify(&endorser.public_key, &current.endorsement_message(), &current.endorsement) {
                return Ok(Some(format!("key {} carries no valid endorsement", current.fingerprint)));
            }
            current = endorser;
        }
        Ok(Some(format!("key {} has an endorsement loop", record.fingerprint)))
    }

    /// Refuses a credential that is not its user's current, trusted key.
    fn check_credential(&self, credential: &Credential) -> Result<()> {
        let current = self.current_key(credential.name())?;
        if current.as_ref() != Some(credential.record()) {
            return Err(Error::Forbidden {
                what: format!("the key of {:?} is not their current one", credential.name()),
            });
        }
        let root = self.key_store()?.trust_root()?.ok_or_else(|| Error::Forbidden {
            what: "no administrator yet: create the first one (lucent report init-admin)".into(),
        })?;
        if let Some(why) = self.untrusted(credential.record(), &root)? {
            return Err(Error::Tampered { what: why });
        }
        Ok(())
    }

    pub fn user(&self, name: &str) -> Result<Option<User>> {
        let row: Option<String> =
            self.conn.query_row("SELECT role FROM users WHERE name = ?1", [name], |r| r.get(0)).optional()?;
        row.map(|role| Ok(User { name: name.to_owned(), role: Role::parse(&role)? })).transpose()
    }

    pub fn users(&self) -> Result<Vec<User>> {
        let mut stmt = self.conn.prepare("SELECT name, role FROM users ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, role) = row?;
            out.push(User { name, role: Role::parse(&role)? });
        }
        Ok(out)
    }

    /// Refuses a credential that is not its user's current trusted key, or lacks `role`.
    pub fn require(&self, credential: &Credential, role: Role) -> Result<()> {
        self.check_credential(credential)?;
        if credential.role() != role {
            return Err(Error::Forbidden {
                what: format!(
                    "user {:?} is a {} and this needs a {}",
                    credential.name(),
                    credential.role().code(),
                    role.code()
                ),
            });
        }
        Ok(())
    }

    // ---- audit ----

    /// Appends an audit row. `detail` must not hold patient names or IDs.
    pub fn append_audit(
        &mut self,
        user: &str,
        action: AuditAction,
        object: &str,
        detail: &serde_json::Value,
    ) -> Result<AuditEntry> {
        let at = self.now();
        let tx = self.conn.transaction()?;
        let entry = append_audit_tx(&tx, &at, user, action, object, detail)?;
        tx.commit()?;
        self.anchor_head()?;
        Ok(entry)
    }

    /// The whole audit log, oldest first.
    pub fn audit_log(&self) -> Result<Vec<AuditEntry>> {
        let mut stmt =
            self.conn.prepare("SELECT id, at, user, action, object, detail, prev_hash, hash FROM audit ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(AuditEntry {
                id: r.get(0)?,
                at: r.get(1)?,
                user: r.get(2)?,
                action: r.get(3)?,
                object: r.get(4)?,
                detail: r.get(5)?,
                prev_hash: r.get(6)?,
                hash: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Walks the hash chain and reports the first broken link.
    pub fn verify_audit(&self) -> Result<AuditVerdict> {
        let mut prev = GENESIS_HASH.to_owned();
        let mut rows = 0;
        for entry in self.audit_log()? {
            rows += 1;
            let broken = if entry.prev_hash != prev {
                Some("its previous-hash does not match the row before it (a row was removed, inserted or changed)")
            } else if entry.compute_hash() != entry.hash {
                Some("its hash does not match its content (the row was changed)")
            } else {
                None
            };
            if let Some(reason) = broken {
                return Ok(AuditVerdict {
                    rows,
                    head_hash: prev,
                    first_broken: Some(BrokenLink { id: entry.id, reason: reason.to_owned() }),
                });
            }
            prev = entry.hash;
        }
        if let Some(anchor) = &self.anchor
            && let Some(head) = anchor.read()?
        {
            let broken = |id: i64, reason: String| AuditVerdict {
                rows,
                head_hash: prev.clone(),
                first_broken: Some(BrokenLink { id, reason }),
            };
            if anchor.mac(head.rows, head.last_id, &head.head_hash) != head.mac {
                return Ok(broken(head.last_id, "the audit anchor outside the database was altered".to_owned()));
            }
            let anchored: Option<String> =
                self.conn.query_row("SELECT hash FROM audit WHERE id = ?1", [head.last_id], |r| r.get(0)).optional()?;
            let anchored_ok =
                head.last_id == 0 && head.head_hash == GENESIS_HASH || anchored == Some(head.head_hash.clone());
            if !anchored_ok || rows < head.rows {
                return Ok(broken(
                    head.last_id,
                    format!(
                        "the anchored head (row {}, {} rows) is {}: rows were cut off or the chain was rewritten",
                        head.last_id,
                        head.rows,
                        if anchored.is_none() { "missing" } else { "changed" }
                    ),
                ));
            }
            if rows > head.rows {
                return Ok(broken(
                    head.last_id + 1,
                    format!("{} row(s) after the anchored head were written without the anchor key", rows - head.rows),
                ));
            }
        }
        Ok(AuditVerdict { rows, head_hash: prev, first_broken: None })
    }

    /// Signed versions and addenda whose text no longer matches what was signed: its own stored
    /// hash, and the hash the `sign` / `addendum` audit row recorded (an audit that is itself
    /// chained and anchored). Empty when every signed text is intact.
    pub fn verify_signed_versions(&self, study_uid: Option<&str>) -> Result<Vec<TamperedVersion>> {
        let mut recorded: HashMap<i64, String> = HashMap::new();
        for entry in self.audit_log()? {
            if entry.action == AuditAction::Sign.code() || entry.action == AuditAction::Addendum.code() {
                let detail: serde_json::Value = serde_json::from_str(&entry.detail).unwrap_or_default();
                if let (Some(version), Some(hash)) = (detail["version"].as_i64(), detail["content_sha256"].as_str()) {
                    recorded.insert(version, hash.to_owned());
                }
            }
        }
        let root = match &self.keys {
            Some(keys) => keys.trust_root()?,
            None => None,
        };
        let mut stmt = self.conn.prepare(
            "SELECT v.id, r.study_uid, v.kind, v.body, v.content_sha256, v.signed_by, v.signed_at, v.signature,
                    v.signer_key
             FROM versions v JOIN reports r ON r.id = v.report_id
             WHERE v.kind <> 'draft' AND (?1 IS NULL OR r.study_uid = ?1) ORDER BY v.id",
        )?;
        let rows = stmt.query_map([study_uid], |r| {
            Ok(SignedRow {
                id: r.get(0)?,
                study_uid: r.get(1)?,
                kind: r.get(2)?,
                body: r.get(3)?,
                stored_sha256: r.get(4)?,
                signed_by: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                signed_at: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
                signature: r.get(7)?,
                signer_key: r.get(8)?,
            })
        })?;
        let mut out = Vec::new();
        for row in rows {
            let row = row?;
            let actual = sha256_hex(row.body.as_bytes());
            let reason = match recorded.get(&row.id) {
                None => Some("no audit record of its signing".to_owned()),
                Some(signed) if *signed != actual => Some("its text differs from what was signed (audit)".to_owned()),
                Some(_) if row.stored_sha256 != actual => Some("its text does not match its stored hash".to_owned()),
                Some(_) => self.signature_problem(&row, &actual, root.as_ref())?,
            };
            if let Some(reason) = reason {
                out.push(TamperedVersion { version: row.id, study_uid: row.study_uid, reason });
            }
        }
        Ok(out)
    }

    /// Why a signed version's signature does not hold (None when it does). Versions signed by
    /// name only are accepted when they predate the trust root (stores from before signing
    /// keys); after it, every signed version must carry a valid signature.
    fn signature_problem(
        &self,
        row: &SignedRow,
        actual_sha256: &str,
        root: Option<&TrustRoot>,
    ) -> Result<Option<String>> {
        let (Some(signature), Some(signer_key)) = (&row.signature, &row.signer_key) else {
            let before_keys = root.is_none_or(|root| row.signed_at < root.created_at);
            return Ok((!before_keys).then(|| "it carries no signature".to_owned()));
        };
        let Some(root) = root else {
            return Ok(Some("it is signed but the trust root is missing".to_owned()));
        };
        let Some(record) = self.key_records_where("fingerprint = ?1", signer_key)?.into_iter().next() else {
            return Ok(Some("its signer's key is unknown".to_owned()));
        };
        if let Some(why) = self.untrusted(&record, root)? {
            return Ok(Some(format!("its signer's key is not trusted: {why}")));
        }
        if record.name != row.signed_by || record.role != Role::Reader {
            return Ok(Some("its signer's key belongs to another user or role".to_owned()));
        }
        let message =
            signing::report_signature_message(&row.study_uid, &row.kind, actual_sha256, &row.signed_by, &row.signed_at);
        Ok((!signing::verify(&record.public_key, &message, signature))
            .then(|| "its signature does not verify".to_owned()))
    }

    /// Refuses a study whose signed text was changed (see [`Self::verify_signed_versions`]).
    pub fn check_signed_versions(&self, study_uid: &str) -> Result<()> {
        match self.verify_signed_versions(Some(study_uid))?.first() {
            Some(t) => Err(Error::Tampered { what: format!("signed version {}: {}", t.version, t.reason) }),
            None => Ok(()),
        }
    }

    // ---- findings and decisions ----

    /// Records that the study was opened.
    pub fn record_open(&mut self, user: &str, study_uid: &str) -> Result<()> {
        self.append_audit(user, AuditAction::Open, study_uid, &serde_json::json!({}))?;
        Ok(())
    }

    /// Records an AI run's findings (replacing earlier rows with the same ids) and audits the
    /// models and versions that ran.
    pub fn record_ai_run(&mut self, user: &str, study_uid: &str, findings: &[AiFinding]) -> Result<()> {
        let at = self.now();
        let tx = self.conn.transaction()?;
        let mut models = std::collections::BTreeSet::new();
        for f in findings {
            tx.execute(
                "INSERT OR REPLACE INTO findings
                 (study_uid, finding_id, model_id, model_version, label, score, threshold, recorded_at, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    study_uid,
                    f.id,
                    f.model_id,
                    f.model_version,
                    f.label,
                    f64::from(f.score),
                    f64::from(f.threshold),
                    at,
                    serde_json::to_string(f)?
                ],
            )?;
            models.insert(format!("{} {}", f.model_id, f.model_version));
        }
        let detail = serde_json::json!({
            "models": models.into_iter().collect::<Vec<_>>(),
            "findings": findings.len(),
            "flagged": findings.iter().filter(|f| f.is_flagged()).count(),
        });
        append_audit_tx(&tx, &at, user, AuditAction::AiRun, study_uid, &detail)?;
        tx.commit()?;
        self.anchor_head()?;
        Ok(())
    }

    /// The recorded findings of a study, in id order.
    pub fn findings(&self, study_uid: &str) -> Result<Vec<AiFinding>> {
        let mut stmt = self.conn.prepare("SELECT body FROM findings WHERE study_uid = ?1 ORDER BY finding_id")?;
        let rows = stmt.query_map([study_uid], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row?)?);
        }
        Ok(out)
    }

    /// Sets the reader's decision on a finding. Refused once the report is signed (later changes
    /// are addenda).
    pub fn set_decision(
        &mut self,
        reader: &Credential,
        study_uid: &str,
        finding_id: &str,
        decision: &FindingDecision,
    ) -> Result<()> {
        self.require(reader, Role::Reader)?;
        let user = reader.name();
        if self.is_signed(study_uid)? {
            return Err(Error::Signed);
        }
        let at = self.now();
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO decisions (study_uid, finding_id, decision, user, decided_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![study_uid, finding_id, serde_json::to_string(decision)?, user, at],
        )?;
        let action = match decision {
            FindingDecision::Accepted | FindingDecision::Pending => AuditAction::Accept,
            FindingDecision::Rejected { .. } => AuditAction::Reject,
            FindingDecision::Edited { .. } => AuditAction::Edit,
        };
        let detail = decision_detail(finding_id, decision);
        append_audit_tx(&tx, &at, user, action, study_uid, &detail)?;
        tx.commit()?;
        self.anchor_head()?;
        Ok(())
    }

    /// The reader's decisions of a study.
    pub fn decisions(&self, study_uid: &str) -> Result<Decisions> {
        let mut stmt = self.conn.prepare("SELECT finding_id, decision FROM decisions WHERE study_uid = ?1")?;
        let rows = stmt.query_map([study_uid], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Decisions::new();
        for row in rows {
            let (id, d) = row?;
            out.insert(id, serde_json::from_str(&d)?);
        }
        Ok(out)
    }

    /// Adds a QA lead's review. Reviews are stored apart and never change the reader's decisions
    /// or any report version.
    pub fn add_qa_review(
        &mut self,
        qa_lead: &Credential,
        study_uid: &str,
        finding_id: &str,
        decision: &FindingDecision,
    ) -> Result<i64> {
        self.require(qa_lead, Role::QaLead)?;
        let reviewer = qa_lead.name();
        let at = self.now();
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO qa_reviews (study_uid, finding_id, decision, reviewer, reviewed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![study_uid, finding_id, serde_json::to_string(decision)?, reviewer, at],
        )?;
        let id = tx.last_insert_rowid();
        append_audit_tx(&tx, &at, reviewer, AuditAction::QaReview, study_uid, &decision_detail(finding_id, decision))?;
        tx.commit()?;
        self.anchor_head()?;
        Ok(id)
    }

    /// The QA reviews of a study, oldest first.
    pub fn qa_reviews(&self, study_uid: &str) -> Result<Vec<QaReview>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, study_uid, finding_id, decision, reviewer, reviewed_at FROM qa_reviews
             WHERE study_uid = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([study_uid], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, String>(3)?, r.get(4)?, r.get(5)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, study_uid, finding_id, decision, reviewer, reviewed_at) = row?;
            out.push(QaReview {
                id,
                study_uid,
                finding_id,
                decision: serde_json::from_str(&decision)?,
                reviewer,
                reviewed_at,
            });
        }
        Ok(out)
    }

    /// The studies that have at least one QA review, in study UID order.
    pub fn qa_reviewed_studies(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("SELECT DISTINCT study_uid FROM qa_reviews ORDER BY study_uid")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Each reviewed finding of a study with its latest QA review, in finding ID order.
    pub fn latest_qa_reviews(&self, study_uid: &str) -> Result<Vec<(AiFinding, QaReview)>> {
        let mut latest: HashMap<String, QaReview> = HashMap::new();
        for review in self.qa_reviews(study_uid)? {
            latest.insert(review.finding_id.clone(), review);
        }
        Ok(self.findings(study_uid)?.into_iter().filter_map(|f| latest.remove(&f.id).map(|r| (f, r))).collect())
    }

    /// Every recorded finding with the decision that counts for statistics: the latest QA review,
    /// else the reader's decision, else pending.
    pub fn decided_findings(&self) -> Result<Vec<DecidedFinding>> {
        let mut stmt = self.conn.prepare(
            "SELECT f.study_uid, f.body, f.recorded_at,
                    (SELECT q.decision FROM qa_reviews q WHERE q.study_uid = f.study_uid
                        AND q.finding_id = f.finding_id ORDER BY q.id DESC LIMIT 1),
                    (SELECT d.decision FROM decisions d WHERE d.study_uid = f.study_uid
                        AND d.finding_id = f.finding_id)
             FROM findings f ORDER BY f.recorded_at, f.study_uid, f.finding_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (study_uid, body, recorded_at, qa, reader) = row?;
            let decision = match qa.or(reader) {
                Some(d) => serde_json::from_str(&d)?,
                None => FindingDecision::Pending,
            };
            out.push(DecidedFinding { study_uid, finding: serde_json::from_str(&body)?, recorded_at, decision });
        }
        Ok(out)
    }

    // ---- reports and versions ----

    fn report_id(&self, study_uid: &str) -> Result<Option<i64>> {
        Ok(self.conn.query_row("SELECT id FROM reports WHERE study_uid = ?1", [study_uid], |r| r.get(0)).optional()?)
    }

    fn is_signed(&self, study_uid: &str) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM versions v JOIN reports r ON r.id = v.report_id
             WHERE r.study_uid = ?1 AND v.kind = 'signed'",
            [study_uid],
            |r| r.get::<_, i64>(0),
        )? > 0)
    }

    /// Autosaves the draft (overwriting the previous autosave). Refused once signed.
    pub fn save_draft(&mut self, user: &str, study_uid: &str, report: &Report) -> Result<i64> {
        if self.is_signed(study_uid)? {
            return Err(Error::Signed);
        }
        let at = self.now();
        let body = serde_json::to_string(&VersionBody::Report(report.clone()))?;
        let hash = sha256_hex(body.as_bytes());
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO reports (study_uid, kind, lang, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(study_uid) DO UPDATE SET kind = excluded.kind, lang = excluded.lang",
            params![study_uid, report.kind.code(), report.lang.code(), at],
        )?;
        let report_id: i64 = tx.query_row("SELECT id FROM reports WHERE study_uid = ?1", [study_uid], |r| r.get(0))?;
        let existing: Option<i64> = tx
            .query_row("SELECT id FROM versions WHERE report_id = ?1 AND kind = 'draft'", [report_id], |r| r.get(0))
            .optional()?;
        let id = match existing {
            Some(id) => {
                tx.execute(
                    "UPDATE versions SET body = ?1, author = ?2, saved_at = ?3, content_sha256 = ?4 WHERE id = ?5",
                    params![body, user, at, hash, id],
                )?;
                id
            }
            None => {
                tx.execute(
                    "INSERT INTO versions (report_id, kind, body, author, saved_at, content_sha256)
                     VALUES (?1, 'draft', ?2, ?3, ?4, ?5)",
                    params![report_id, body, user, at, hash],
                )?;
                let id = tx.last_insert_rowid();
                append_audit_tx(&tx, &at, user, AuditAction::Draft, study_uid, &serde_json::json!({ "version": id }))?;
                id
            }
        };
        tx.commit()?;
        self.anchor_head()?;
        Ok(id)
    }

    /// The current draft, if the report is not signed yet.
    pub fn draft(&self, study_uid: &str) -> Result<Option<ReportVersion>> {
        Ok(self.versions(study_uid)?.into_iter().find(|v| v.kind == VersionKind::Draft))
    }

    /// Signs the current draft: it becomes an immutable signed version (written with
    /// `synchronous=FULL`) carrying the reader's ed25519 signature. Needs a reader's credential.
    pub fn sign(&mut self, reader: &Credential, study_uid: &str) -> Result<ReportVersion> {
        self.require(reader, Role::Reader)?;
        let user = reader.name();
        if self.is_signed(study_uid)? {
            return Err(Error::Signed);
        }
        let draft = self.draft(study_uid)?.ok_or_else(|| Error::NotFound { what: "a draft to sign".into() })?;
        let at = self.now();
        let id = self.durably(|tx| {
            let body: String = tx.query_row("SELECT body FROM versions WHERE id = ?1", [draft.id], |r| r.get(0))?;
            let report_id: i64 =
                tx.query_row("SELECT report_id FROM versions WHERE id = ?1", [draft.id], |r| r.get(0))?;
            let hash = sha256_hex(body.as_bytes());
            let signature = reader.sign(&signing::report_signature_message(study_uid, "signed", &hash, user, &at));
            tx.execute(
                "INSERT INTO versions
                 (report_id, kind, body, author, saved_at, signed_by, signed_at, content_sha256, signature, signer_key)
                 VALUES (?1, 'signed', ?2, ?3, ?4, ?5, ?4, ?6, ?7, ?8)",
                params![report_id, body, draft.author, at, user, hash, signature, reader.fingerprint()],
            )?;
            let id = tx.last_insert_rowid();
            tx.execute("DELETE FROM versions WHERE id = ?1", [draft.id])?;
            append_audit_tx(
                tx,
                &at,
                user,
                AuditAction::Sign,
                study_uid,
                &serde_json::json!({ "version": id, "content_sha256": hash, "key": reader.fingerprint() }),
            )?;
            Ok(id)
        })?;
        self.version(id)
    }

    /// Appends a signed addendum to a signed report.
    pub fn add_addendum(&mut self, reader: &Credential, study_uid: &str, text: &str) -> Result<ReportVersion> {
        self.require(reader, Role::Reader)?;
        let user = reader.name();
        if !self.is_signed(study_uid)? {
            return Err(Error::NotSigned);
        }
        let report_id = self.report_id(study_uid)?.ok_or_else(|| Error::NotFound { what: "the report".into() })?;
        let at = self.now();
        let body = serde_json::to_string(&VersionBody::Addendum { text: text.to_owned() })?;
        let hash = sha256_hex(body.as_bytes());
        let signature = reader.sign(&signing::report_signature_message(study_uid, "addendum", &hash, user, &at));
        let id = self.durably(|tx| {
            tx.execute(
                "INSERT INTO versions
                 (report_id, kind, body, author, saved_at, signed_by, signed_at, content_sha256, signature, signer_key)
                 VALUES (?1, 'addendum', ?2, ?3, ?4, ?3, ?4, ?5, ?6, ?7)",
                params![report_id, body, user, at, hash, signature, reader.fingerprint()],
            )?;
            let id = tx.last_insert_rowid();
            append_audit_tx(
                tx,
                &at,
                user,
                AuditAction::Addendum,
                study_uid,
                &serde_json::json!({ "version": id, "content_sha256": hash, "key": reader.fingerprint() }),
            )?;
            Ok(id)
        })?;
        self.version(id)
    }

    /// Runs `write` in one transaction committed with `synchronous=FULL` (a signed version must
    /// survive a power cut as soon as the call returns), then goes back to `NORMAL`, which is
    /// enough for autosaved drafts in WAL mode. The transaction rolls back when `write` fails.
    fn durably<T>(&mut self, write: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        let result = (|| {
            let tx = self.conn.transaction()?;
            let value = write(&tx)?;
            tx.commit()?;
            self.anchor_head()?;
            Ok(value)
        })();
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        result
    }

    fn version(&self, id: i64) -> Result<ReportVersion> {
        self.versions_where("v.id = ?1", &id)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound { what: format!("report version {id}") })
    }

    /// Every version of a study's report: signed and addenda oldest first, then the draft.
    pub fn versions(&self, study_uid: &str) -> Result<Vec<ReportVersion>> {
        self.versions_where("r.study_uid = ?1", &study_uid)
    }

    fn versions_where(&self, condition: &str, value: &dyn rusqlite::ToSql) -> Result<Vec<ReportVersion>> {
        let sql = format!(
            "SELECT v.id, r.study_uid, v.kind, v.body, v.author, v.saved_at, v.signed_by, v.signed_at, v.content_sha256,
                    v.signer_key
             FROM versions v JOIN reports r ON r.id = v.report_id WHERE {condition}
             ORDER BY CASE v.kind WHEN 'draft' THEN 1 ELSE 0 END, v.id"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([value], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<String>>(7)?,
                r.get::<_, String>(8)?,
                r.get::<_, Option<String>>(9)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, study_uid, kind, body, author, saved_at, signed_by, signed_at, content_sha256, signer_key) = row?;
            out.push(ReportVersion {
                id,
                study_uid,
                kind: VersionKind::parse(&kind)?,
                body: serde_json::from_str(&body)?,
                author,
                saved_at,
                signed_by,
                signed_at,
                content_sha256,
                signer_key,
            });
        }
        Ok(out)
    }

    /// The status of a study's report (None when there is none).
    pub fn status(&self, study_uid: &str) -> Result<Option<ReportStatus>> {
        let versions = self.versions(study_uid)?;
        if versions.is_empty() {
            return Ok(None);
        }
        Ok(Some(if versions.iter().any(|v| v.kind == VersionKind::Addendum) {
            ReportStatus::Amended
        } else if versions.iter().any(|v| v.kind == VersionKind::Signed) {
            ReportStatus::Final
        } else {
            ReportStatus::Draft
        }))
    }

    /// Study UIDs that have a report, with their status.
    pub fn reports(&self) -> Result<Vec<(String, ReportStatus)>> {
        let mut stmt = self.conn.prepare("SELECT study_uid FROM reports ORDER BY id")?;
        let uids: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<std::result::Result<_, _>>()?;
        let mut out = Vec::new();
        for uid in uids {
            if let Some(s) = self.status(&uid)? {
                out.push((uid, s));
            }
        }
        Ok(out)
    }

    /// The signing gate for exports: the signed report (with addenda) — or, only when
    /// `preliminary` is asked for explicitly, the current draft. Audit what was written with
    /// [`ReportStore::record_export`].
    pub fn export_source(&self, study_uid: &str, preliminary: bool) -> Result<ExportSource> {
        // Never export as signed a text that is not what was signed.
        self.check_signed_versions(study_uid)?;
        let versions = self.versions(study_uid)?;
        let signed = versions.iter().find(|v| v.kind == VersionKind::Signed);
        let addenda: Vec<(String, String, String)> = versions
            .iter()
            .filter(|v| v.kind == VersionKind::Addendum)
            .filter_map(|v| match &v.body {
                VersionBody::Addendum { text } => Some((
                    text.clone(),
                    v.signed_by.clone().unwrap_or_default(),
                    v.signed_at.clone().unwrap_or_default(),
                )),
                VersionBody::Report(_) => None,
            })
            .collect();
        if let Some(v) = signed
            && let VersionBody::Report(report) = &v.body
        {
            return Ok(ExportSource {
                report: report.clone(),
                status: if addenda.is_empty() { ReportStatus::Final } else { ReportStatus::Amended },
                signed_by: v.signed_by.clone(),
                signed_at: v.signed_at.clone(),
                addenda,
            });
        }
        if !preliminary {
            return Err(Error::NotSigned);
        }
        match versions.into_iter().find(|v| v.kind == VersionKind::Draft) {
            Some(ReportVersion { body: VersionBody::Report(report), .. }) => Ok(ExportSource {
                report,
                status: ReportStatus::Draft,
                signed_by: None,
                signed_at: None,
                addenda: Vec::new(),
            }),
            _ => Err(Error::NotFound { what: "a report to export".into() }),
        }
    }

    /// Audits an export (or a send) of `format` whose bytes hash to `sha256`.
    pub fn record_export(
        &mut self,
        user: &str,
        study_uid: &str,
        format: &str,
        status: ReportStatus,
        sha256: &str,
        sent: bool,
    ) -> Result<()> {
        let action = if sent { AuditAction::Send } else { AuditAction::Export };
        self.append_audit(
            user,
            action,
            study_uid,
            &serde_json::json!({ "format": format, "status": status.fhir(), "sha256": sha256 }),
        )?;
        Ok(())
    }
}

fn decision_detail(finding_id: &str, decision: &FindingDecision) -> serde_json::Value {
    let (reason, has_comment) = match decision {
        FindingDecision::Rejected { reason, comment } | FindingDecision::Edited { reason, comment, .. } => {
            (Some(reason.code()), !comment.is_empty())
        }
        _ => (None, false),
    };
    // The comment itself is free text (it could name the patient): only whether there is one.
    serde_json::json!({ "finding": finding_id, "decision": decision.code(), "reason": reason, "comment": has_comment })
}

fn append_audit_tx(
    tx: &rusqlite::Transaction<'_>,
    at: &str,
    user: &str,
    action: AuditAction,
    object: &str,
    detail: &serde_json::Value,
) -> Result<AuditEntry> {
    let (last_id, prev_hash): (i64, String) = tx
        .query_row("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((0, GENESIS_HASH.to_owned()));
    let mut entry = AuditEntry {
        id: last_id + 1,
        at: at.to_owned(),
        user: user.to_owned(),
        action: action.code().to_owned(),
        object: object.to_owned(),
        detail: detail.to_string(),
        prev_hash,
        hash: String::new(),
    };
    entry.hash = entry.compute_hash();
    tx.execute(
        "INSERT INTO audit (id, at, user, action, object, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![entry.id, entry.at, entry.user, entry.action, entry.object, entry.detail, entry.prev_hash, entry.hash],
    )?;
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::draft::{SectionId, draft};
    use crate::model::{Lang, ReasonCode, Side, StudyContext, StudyInputs};

    fn inputs() -> StudyInputs {
        StudyInputs {
            context: StudyContext { study_uid: "1.2.3".into(), modality: "DX".into(), ..Default::default() },
            findings: vec![AiFinding {
                id: "ptx".into(),
                model_id: "m".into(),
                model_version: "1.0".into(),
                label: "pneumothorax".into(),
                score: 0.9,
                threshold: 0.5,
                side: Side::Right,
                ..Default::default()
            }],
            lung_rads: None,
        }
    }

    fn pass(text: &str) -> Passphrase {
        Passphrase::new(text.to_owned())
    }

    /// Gives `store` the key folder `dir/keys` and, when it has no administrator yet, dr.kim
    /// (reader, administrator) and qa.lee (QA lead).
    fn with_people(store: &mut ReportStore, dir: &Path) -> (Credential, Credential) {
        store.set_key_store(KeyStore::in_dir(&dir.join("keys")).unwrap());
        if !store.has_admin().unwrap() {
            let kim = store.init_admin("dr.kim", Role::Reader, &pass("kim's passphrase")).unwrap();
            store.add_user(&kim, "qa.lee", Role::QaLead, false, &pass("lee's passphrase")).unwrap();
        }
        (
            store.unlock("dr.kim", &pass("kim's passphrase")).unwrap(),
            store.unlock("qa.lee", &pass("lee's passphrase")).unwrap(),
        )
    }

    fn store() -> (tempfile::TempDir, ReportStore, Credential, Credential) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ReportStore::open(dir.path()).unwrap();
        let (kim, lee) = with_people(&mut store, dir.path());
        (dir, store, kim, lee)
    }

    #[test]
    fn sign_makes_the_report_immutable_in_code_and_in_sqlite() {
        let (dir, mut store, kim, lee) = store();
        let inputs = inputs();
        store.record_ai_run("dr.kim", "1.2.3", &inputs.findings).unwrap();
        let mut report = draft(&inputs, &Decisions::new(), Lang::En);
        store.save_draft("dr.kim", "1.2.3", &report).unwrap();
        report.set_section_text(SectionId::Impression, "Right pneumothorax, moderate.");
        store.save_draft("dr.kim", "1.2.3", &report).unwrap();
        assert_eq!(store.versions("1.2.3").unwrap().len(), 1, "autosave overwrites the draft");
        assert!(matches!(store.export_source("1.2.3", false), Err(Error::NotSigned)));
        assert_eq!(store.export_source("1.2.3", true).unwrap().status, ReportStatus::Draft);
        assert!(matches!(store.sign(&lee, "1.2.3"), Err(Error::Forbidden { .. })));
        let signed = store.sign(&kim, "1.2.3").unwrap();
        assert_eq!(signed.signer_key.as_deref(), Some(kim.fingerprint()));
        assert_eq!(signed.kind, VersionKind::Signed);
        assert_eq!(signed.signed_by.as_deref(), Some("dr.kim"));
        // Code path.
        assert!(matches!(store.save_draft("dr.kim", "1.2.3", &report), Err(Error::Signed)));
        assert!(matches!(store.sign(&kim, "1.2.3"), Err(Error::Signed)));
        assert!(matches!(store.set_decision(&kim, "1.2.3", "ptx", &FindingDecision::Accepted), Err(Error::Signed)));
        // Trigger path: straight SQL is refused too.
        let conn = Connection::open(dir.path().join(ReportStore::FILE_NAME)).unwrap();
        let err = conn.execute("UPDATE versions SET body = 'x' WHERE kind = 'signed'", []).unwrap_err();
        assert!(err.to_string().contains("immutable"), "{err}");
        let err = conn.execute("DELETE FROM versions WHERE kind = 'signed'", []).unwrap_err();
        assert!(err.to_string().contains("cannot be deleted"), "{err}");
        let err = conn.execute("DELETE FROM audit", []).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        // A QA review is kept apart and changes no version.
        let before = store.versions("1.2.3").unwrap();
        store
            .add_qa_review(
                &lee,
                "1.2.3",
                "ptx",
                &FindingDecision::Rejected { reason: ReasonCode::FalsePositive, comment: "skin fold".into() },
            )
            .unwrap();
        assert!(store.add_qa_review(&kim, "1.2.3", "ptx", &FindingDecision::Accepted).is_err());
        assert_eq!(store.versions("1.2.3").unwrap(), before);
        assert_eq!(store.qa_reviews("1.2.3").unwrap().len(), 1);
        // Addendum.
        let add = store.add_addendum(&kim, "1.2.3", "Follow-up radiograph recommended.").unwrap();
        assert_eq!(add.kind, VersionKind::Addendum);
        assert_eq!(store.status("1.2.3").unwrap(), Some(ReportStatus::Amended));
        let export = store.export_source("1.2.3", false).unwrap();
        assert_eq!(export.status, ReportStatus::Amended);
        assert!(export.report.section_text(SectionId::Impression).contains("moderate"));
        assert_eq!(export.addenda.len(), 1);
        assert!(store.verify_audit().unwrap().is_intact());
        assert!(store.verify_signed_versions(None).unwrap().is_empty());
        assert_eq!(store.integrity_check().unwrap(), "ok");
    }

    /// What an attacker with write access and a short script does: drop the triggers, change a
    /// row, and re-hash the whole chain so that it links up again.
    fn rewrite_and_rehash(dir: &Path, change: &str) {
        let conn = Connection::open(dir.join(ReportStore::FILE_NAME)).unwrap();
        conn.execute_batch(&format!(
            "DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete; {change}"
        ))
        .unwrap();
        let entries: Vec<AuditEntry> = {
            let mut stmt = conn
                .prepare("SELECT id, at, user, action, object, detail, prev_hash, hash FROM audit ORDER BY id")
                .unwrap();
            stmt.query_map([], |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    user: r.get(2)?,
                    action: r.get(3)?,
                    object: r.get(4)?,
                    detail: r.get(5)?,
                    prev_hash: r.get(6)?,
                    hash: r.get(7)?,
                })
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
        };
        let mut prev = GENESIS_HASH.to_owned();
        for mut e in entries {
            e.prev_hash = prev.clone();
            e.hash = e.compute_hash();
            conn.execute(
                "UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE id = ?3",
                params![e.prev_hash, e.hash, e.id],
            )
            .unwrap();
            prev = e.hash;
        }
    }

    fn anchored(dir: &Path, anchors: &Path) -> ReportStore {
        let mut store = ReportStore::open(dir).unwrap();
        store.set_anchor(AuditAnchor::in_dir(anchors, dir).unwrap()).unwrap();
        store
    }

    #[test]
    fn a_rehashed_chain_cut_off_rows_and_unkeyed_rows_are_found_by_the_anchor() {
        let (dir, anchors) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let build = || {
            let mut store = anchored(dir.path(), anchors.path());
            let (kim, _) = with_people(&mut store, dir.path());
            store.record_open("dr.kim", "1.2.3").unwrap();
            store.set_decision(&kim, "1.2.3", "ptx", &FindingDecision::Accepted).unwrap();
            store.record_open("dr.kim", "1.2.4").unwrap();
            assert!(store.verify_audit().unwrap().is_intact());
        };
        build();
        // A changed row, the chain re-hashed: the chain alone is fooled, the anchor is not.
        rewrite_and_rehash(dir.path(), "UPDATE audit SET user = 'someone' WHERE id = 2;");
        assert!(
            ReportStore::open(dir.path()).unwrap().verify_audit().unwrap().is_intact(),
            "the plain chain is fooled"
        );
        let verdict = anchored(dir.path(), anchors.path()).verify_audit().unwrap();
        assert!(verdict.first_broken.as_ref().is_some_and(|b| b.reason.contains("rewritten")), "{verdict:?}");

        // The newest rows cut off.
        let (dir2, anchors2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        {
            let mut store = anchored(dir2.path(), anchors2.path());
            store.record_open("dr.kim", "1.2.3").unwrap();
            store.record_open("dr.kim", "1.2.4").unwrap();
            store.record_open("dr.kim", "1.2.5").unwrap();
        }
        rewrite_and_rehash(dir2.path(), "DELETE FROM audit WHERE id >= 2;");
        assert!(
            ReportStore::open(dir2.path()).unwrap().verify_audit().unwrap().is_intact(),
            "the plain chain is fooled"
        );
        let verdict = anchored(dir2.path(), anchors2.path()).verify_audit().unwrap();
        assert!(verdict.first_broken.as_ref().is_some_and(|b| b.reason.contains("cut off")), "{verdict:?}");

        // A row added without the key (by a store opened without the anchor).
        let (dir3, anchors3) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        anchored(dir3.path(), anchors3.path()).record_open("dr.kim", "1.2.3").unwrap();
        ReportStore::open(dir3.path()).unwrap().record_open("intruder", "1.2.3").unwrap();
        let verdict = anchored(dir3.path(), anchors3.path()).verify_audit().unwrap();
        assert!(
            verdict.first_broken.as_ref().is_some_and(|b| b.reason.contains("without the anchor key")),
            "{verdict:?}"
        );

        // An altered anchor file.
        let head = std::fs::read_dir(anchors3.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().contains("audit-head"))
            .unwrap();
        let text = std::fs::read_to_string(&head).unwrap().replace("\"rows\":1", "\"rows\":2");
        std::fs::write(&head, text).unwrap();
        let verdict = anchored(dir3.path(), anchors3.path()).verify_audit().unwrap();
        assert!(verdict.first_broken.as_ref().is_some_and(|b| b.reason.contains("anchor")), "{verdict:?}");
    }

    #[test]
    fn a_signed_text_changed_behind_the_triggers_is_caught_on_show_export_and_verify() {
        let (dir, mut store, kim, _lee) = store();
        let inputs = inputs();
        let mut report = draft(&inputs, &Decisions::new(), Lang::En);
        report.set_section_text(SectionId::Impression, "Right pneumothorax, moderate.");
        store.save_draft("dr.kim", "1.2.3", &report).unwrap();
        store.sign(&kim, "1.2.3").unwrap();
        assert!(store.verify_signed_versions(None).unwrap().is_empty());
        drop(store);
        // Drop the trigger, change the signed text, and recompute its stored hash too.
        let conn = Connection::open(dir.path().join(ReportStore::FILE_NAME)).unwrap();
        conn.execute_batch(
            "DROP TRIGGER signed_versions_are_immutable;
             UPDATE versions SET body = replace(body, 'moderate', 'small') WHERE kind = 'signed';",
        )
        .unwrap();
        let body: String = conn.query_row("SELECT body FROM versions WHERE kind = 'signed'", [], |r| r.get(0)).unwrap();
        conn.execute("UPDATE versions SET content_sha256 = ?1 WHERE kind = 'signed'", [sha256_hex(body.as_bytes())])
            .unwrap();
        drop(conn);
        let store = ReportStore::open(dir.path()).unwrap();
        let tampered = store.verify_signed_versions(None).unwrap();
        assert_eq!(tampered.len(), 1, "{tampered:?}");
        assert!(tampered[0].reason.contains("differs from what was signed"), "{tampered:?}");
        assert!(matches!(store.export_source("1.2.3", false), Err(Error::Tampered { .. })));
        assert!(matches!(store.check_signed_versions("1.2.3"), Err(Error::Tampered { .. })));
    }

    #[test]
    fn a_tampered_audit_row_is_found() {
        let (dir, mut store, kim, _lee) = store();
        store.record_open("dr.kim", "1.2.3").unwrap();
        store.set_decision(&kim, "1.2.3", "ptx", &FindingDecision::Accepted).unwrap();
        store.record_open("dr.kim", "1.2.4").unwrap();
        let verdict = store.verify_audit().unwrap();
        assert!(verdict.is_intact());
        assert_eq!(verdict.rows, 5);
        drop(store);
        // Someone with the file drops the trigger and rewrites history.
        let conn = Connection::open(dir.path().join(ReportStore::FILE_NAME)).unwrap();
        conn.execute_batch("DROP TRIGGER audit_no_update; UPDATE audit SET user = 'someone' WHERE id = 4;").unwrap();
        drop(conn);
        let store = ReportStore::open(dir.path()).unwrap();
        let verdict = store.verify_audit().unwrap();
        assert_eq!(verdict.first_broken.as_ref().map(|b| b.id), Some(4), "{verdict:?}");
        // A deleted row breaks the next link.
        drop(store);
        let conn = Connection::open(dir.path().join(ReportStore::FILE_NAME)).unwrap();
        conn.execute_batch("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE id IN (2, 4);").unwrap();
        drop(conn);
        let store = ReportStore::open(dir.path()).unwrap();
        assert_eq!(store.verify_audit().unwrap().first_broken.map(|b| b.id), Some(3));
    }

    #[test]
    fn audit_details_carry_no_comment_text() {
        let (_dir, mut store, kim, _lee) = store();
        store
            .set_decision(
                &kim,
                "1.2.3",
                "ptx",
                &FindingDecision::Rejected { reason: ReasonCode::Other, comment: "Hong Gildong's old scar".into() },
            )
            .unwrap();
        let log = store.audit_log().unwrap();
        assert!(log.iter().all(|e| !e.detail.contains("Gildong")));
        assert!(log.last().unwrap().detail.contains("\"reason\":\"other\""));
    }

    fn signed_study(store: &mut ReportStore, reader: &Credential, study_uid: &str) -> ReportVersion {
        let report = draft(&inputs(), &Decisions::new(), Lang::En);
        store.save_draft(reader.name(), study_uid, &report).unwrap();
        store.sign(reader, study_uid).unwrap()
    }

    #[test]
    fn roles_come_from_endorsed_keys_not_from_names() {
        let (dir, mut store, kim, lee) = store();
        // Only the passphrase opens a key; a second first administrator is refused.
        assert!(matches!(store.unlock("dr.kim", &pass("guess guess")), Err(Error::Forbidden { .. })));
        assert!(matches!(store.unlock("nobody", &pass("guess guess")), Err(Error::Forbidden { .. })));
        assert!(matches!(
            store.init_admin("eve", Role::Reader, &pass("eve's passphrase")),
            Err(Error::Forbidden { .. })
        ));
        // Only an administrator adds users; short passphrases are refused.
        assert!(matches!(
            store.add_user(&lee, "dr.park", Role::Reader, false, &pass("park's passphrase")),
            Err(Error::Forbidden { .. })
        ));
        assert!(matches!(
            store.add_user(&kim, "dr.park", Role::Reader, false, &pass("short")),
            Err(Error::Invalid { .. })
        ));
        let park = store.add_user(&kim, "dr.park", Role::Reader, false, &pass("park's passphrase")).unwrap();
        assert_eq!(park.endorsed_by, kim.fingerprint());
        let park = store.unlock("dr.park", &pass("park's passphrase")).unwrap();
        signed_study(&mut store, &park, "1.2.3");
        assert!(store.verify_signed_versions(None).unwrap().is_empty());

        // Someone who can write the database adds a reader with a key of their own, endorsed by
        // itself, and signs with it: the key does not lead to the trust root.
        let forged_key = signing::new_key().unwrap();
        let mut forged = KeyRecord {
            fingerprint: signing::fingerprint(&forged_key.verifying_key()),
            name: "mallory".into(),
            role: Role::Reader,
            admin: true,
            public_key: hex::encode(forged_key.verifying_key().as_bytes()),
            created_at: "2026-01-01T00:00:00Z".into(),
            endorsed_by: String::new(),
            endorsement: String::new(),
        };
        forged.endorsed_by = forged.fingerprint.clone();
        let forged_credential = Credential::new(forged.clone(), forged_key.clone());
        forged.endorsement = forged_credential.sign(&forged.endorsement_message());
        store.insert_key(&forged, "mallory", "forged").unwrap();
        let forged_credential = Credential::new(forged.clone(), forged_key);
        store.save_draft("mallory", "1.2.4", &draft(&inputs(), &Decisions::new(), Lang::En)).unwrap();
        assert!(matches!(store.sign(&forged_credential, "1.2.4"), Err(Error::Tampered { .. })));
        assert!(matches!(
            store.add_user(&forged_credential, "x.y", Role::Reader, false, &pass("x's passphrase")),
            Err(Error::Tampered { .. })
        ));
        // Even written straight into the table, the forged signature is found.
        let body = serde_json::to_string(&VersionBody::Report(draft(&inputs(), &Decisions::new(), Lang::En))).unwrap();
        let hash = sha256_hex(body.as_bytes());
        let at = "2026-12-01T00:00:00Z";
        let signature =
            forged_credential.sign(&signing::report_signature_message("1.2.4", "signed", &hash, "mallory", at));
        let report_id = store.report_id("1.2.4").unwrap().unwrap();
        store
            .conn
            .execute(
                "INSERT INTO versions
                 (report_id, kind, body, author, saved_at, signed_by, signed_at, content_sha256, signature, signer_key)
                 VALUES (?1, 'signed', ?2, 'mallory', ?3, 'mallory', ?3, ?4, ?5, ?6)",
                params![report_id, body, at, hash, signature, forged.fingerprint],
            )
            .unwrap();
        let id = store.conn.last_insert_rowid();
        store
            .append_audit(
                "mallory",
                AuditAction::Sign,
                "1.2.4",
                &serde_json::json!({ "version": id, "content_sha256": hash }),
            )
            .unwrap();
        let tampered = store.verify_signed_versions(Some("1.2.4")).unwrap();
        assert!(tampered.iter().any(|t| t.reason.contains("not trusted")), "{tampered:?}");
        drop(dir);
    }

    #[test]
    fn a_forgotten_passphrase_gets_a_new_key_and_old_signatures_still_verify() {
        let (_dir, mut store, kim, lee) = store();
        let admin = kim;
        store.add_user(&admin, "dr.park", Role::Reader, false, &pass("park's passphrase")).unwrap();
        let old = store.unlock("dr.park", &pass("park's passphrase")).unwrap();
        signed_study(&mut store, &old, "1.2.3");
        // dr.park forgets the passphrase: an administrator issues a new key.
        assert!(matches!(
            store.rekey(&lee, "dr.park", Role::Reader, false, &pass("new passphrase")),
            Err(Error::Forbidden { .. })
        ));
        store.rekey(&admin, "dr.park", Role::Reader, false, &pass("new passphrase")).unwrap();
        assert!(store.unlock("dr.park", &pass("park's passphrase")).is_err(), "the old passphrase still opens");
        let new = store.unlock("dr.park", &pass("new passphrase")).unwrap();
        assert_ne!(new.fingerprint(), old.fingerprint());
        // The old key no longer signs; what it signed still verifies.
        let report = draft(&inputs(), &Decisions::new(), Lang::En);
        store.save_draft("dr.park", "1.2.4", &report).unwrap();
        assert!(matches!(store.sign(&old, "1.2.4"), Err(Error::Forbidden { .. })));
        store.sign(&new, "1.2.4").unwrap();
        assert!(store.verify_signed_versions(None).unwrap().is_empty());
        assert_eq!(store.key_records().unwrap().iter().filter(|r| r.name == "dr.park").count(), 2);
        // A user changes their own passphrase: same key.
        store.change_passphrase("dr.park", &pass("new passphrase"), &pass("my own passphrase")).unwrap();
        assert_eq!(store.unlock("dr.park", &pass("my own passphrase")).unwrap().fingerprint(), new.fingerprint());
        assert!(store.verify_audit().unwrap().is_intact());
    }

    #[test]
    fn a_stripped_signature_is_found_and_name_only_versions_from_before_keys_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ReportStore::open(dir.path()).unwrap();
        // A store from before signing keys: a version signed by name, with its audit row.
        store.set_clock(|| "2025-01-01T00:00:00Z".into());
        store.save_draft("dr.kim", "1.2.3", &draft(&inputs(), &Decisions::new(), Lang::En)).unwrap();
        let draft_id = store.draft("1.2.3").unwrap().unwrap().id;
        let (body, hash): (String, String) = store
            .conn
            .query_row("SELECT body, content_sha256 FROM versions WHERE id = ?1", [draft_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        let report_id = store.report_id("1.2.3").unwrap().unwrap();
        store
            .conn
            .execute(
                "INSERT INTO versions (report_id, kind, body, author, saved_at, signed_by, signed_at, content_sha256)
                 VALUES (?1, 'signed', ?2, 'dr.kim', '2025-01-01T00:00:00Z', 'dr.kim', '2025-01-01T00:00:00Z', ?3)",
                params![report_id, body, hash],
            )
            .unwrap();
        let id = store.conn.last_insert_rowid();
        store.conn.execute("DELETE FROM versions WHERE id = ?1", [draft_id]).unwrap();
        store
            .append_audit(
                "dr.kim",
                AuditAction::Sign,
                "1.2.3",
                &serde_json::json!({ "version": id, "content_sha256": hash }),
            )
            .unwrap();
        store.set_clock(crate::time::now_rfc3339);
        let (kim, _) = with_people(&mut store, dir.path());
        assert!(store.verify_signed_versions(None).unwrap().is_empty(), "a name-only version from before keys");
        // A version signed with a key whose signature is stripped afterwards.
        signed_study(&mut store, &kim, "1.2.4");
        store
            .conn
            .execute_batch(
                "DROP TRIGGER signed_versions_are_immutable;
                 UPDATE versions SET signature = NULL, signer_key = NULL WHERE signer_key IS NOT NULL;",
            )
            .unwrap();
        let tampered = store.verify_signed_versions(None).unwrap();
        assert_eq!(tampered.len(), 1, "{tampered:?}");
        assert!(tampered[0].reason.contains("no signature"), "{tampered:?}");
        assert!(matches!(store.export_source("1.2.4", false), Err(Error::Tampered { .. })));
        // The key rows are append-only, like the audit.
        let err = store.conn.execute("UPDATE user_keys SET role = 'qa_lead'", []).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }
}
