//! DICOMweb secrets at rest and in transit: the node book holds references only, the values live
//! in the encrypted fallback store (0600 files), old plain-text books are migrated on load,
//! credentials over plain HTTP to another host are refused, and no `Debug` output shows a secret.
//!
//! The OS keyring is never touched here: every store is [`StoreKind::File`] in a temporary folder.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;

use pacs::dicomweb::{DicomWebClient, WebAuth, WebNode};
use pacs::net::NodeBook;
use pacs::secrets::{KEY_FILE_NAME, SECRETS_FILE_NAME, Secret, SecretStore, StoreKind};

const PASSWORD: &str = "correct-horse-battery-staple";
const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.token-body.sig";

fn file_store(book: &Path) -> SecretStore {
    SecretStore::with_kind(book, StoreKind::File)
}

fn book_with_secrets() -> NodeBook {
    let mut basic = WebNode::new("ward-pacs", "https://pacs.example.org/dicom-web");
    basic.auth = WebAuth::Basic { user: "reader".into(), password: Secret::new(PASSWORD) };
    let mut bearer = WebNode::new("cloud", "https://cloud.example.org/dicomweb");
    bearer.auth = WebAuth::Bearer { token: Secret::new(TOKEN) };
    NodeBook { nodes: Vec::new(), web: vec![basic, bearer] }
}

/// Whether `needle` occurs anywhere in the file's bytes.
fn file_holds(path: &Path, needle: &str) -> bool {
    let bytes = std::fs::read(path).unwrap();
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_saved_book_holds_references_and_the_secrets_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pacs_nodes.json");
    let store = file_store(&path);
    let book = book_with_secrets();
    book.save_with(&path, &store).unwrap();

    let json = std::fs::read_to_string(&path).unwrap();
    assert!(!json.contains(PASSWORD) && !json.contains(TOKEN), "{json}");
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let password = &value["web"][0]["auth"]["password"];
    assert_eq!(password["store"], "file", "{json}");
    assert_eq!(password["secret"].as_str().unwrap().len(), 32, "{json}");
    for file in [SECRETS_FILE_NAME, KEY_FILE_NAME] {
        let p = dir.path().join(file);
        assert!(!file_holds(&p, PASSWORD) && !file_holds(&p, TOKEN), "{file} holds a secret in clear");
    }

    let loaded = NodeBook::load_with(&path, &store).unwrap();
    assert_eq!(loaded, book);
    let ward = loaded.web.iter().find(|n| n.name == "ward-pacs").unwrap();
    assert_eq!(ward.auth.secret().unwrap().expose(), Some(PASSWORD));
    let cloud = loaded.web.iter().find(|n| n.name == "cloud").unwrap();
    assert_eq!(cloud.auth.secret().unwrap().expose(), Some(TOKEN));

    // Saving the loaded book again reuses the references: no new entries, nothing lost.
    loaded.save_with(&path, &store).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), json);
    assert_eq!(NodeBook::load_with(&path, &store).unwrap(), book);
}

#[test]
fn an_old_plain_text_book_is_migrated_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pacs_nodes.json");
    let old = format!(
        r#"{{"nodes": [{{"name": "main", "ae_title": "ORTHANC", "host": "pacs", "port": 104, "our_ae_title": "LUCENT"}}],
            "web": [
              {{"name": "ward-pacs", "base_url": "https://pacs.example.org/dicom-web",
                "auth": {{"kind": "basic", "user": "reader", "password": "{PASSWORD}"}}, "timeout_s": 30.0}},
              {{"name": "cloud", "base_url": "https://cloud.example.org/dicomweb",
                "auth": {{"kind": "bearer", "token": "{TOKEN}"}}}}]}}"#
    );
    std::fs::write(&path, old).unwrap();
    let store = file_store(&path);

    let loaded = NodeBook::load_with(&path, &store).unwrap();
    assert_eq!(loaded.nodes.len(), 1);
    assert_eq!(loaded.web, book_with_secrets().web);
    // The book was rewritten without the secrets, which now sit (encrypted) in the store.
    let json = std::fs::read_to_string(&path).unwrap();
    assert!(!json.contains(PASSWORD) && !json.contains(TOKEN), "{json}");
    assert!(json.contains("\"secret\""), "{json}");
    assert!(!file_holds(&dir.path().join(SECRETS_FILE_NAME), PASSWORD));
    // The migrated secrets carry their references, so saving again changes nothing.
    loaded.save_with(&path, &store).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), json);
    // And a fresh load reads them back from the store.
    let again = NodeBook::load_with(&path, &store).unwrap();
    assert_eq!(again.web, book_with_secrets().web);
    assert_eq!(again.nodes, loaded.nodes);
    assert!(again.web.iter().all(|n| n.auth.secret().is_some_and(|s| s.reference().is_some())));
}

#[cfg(unix)]
#[test]
fn the_secrets_file_the_key_file_and_the_book_are_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/pacs_nodes.json");
    book_with_secrets().save_with(&path, &file_store(&path)).unwrap();
    let data = dir.path().join("data");
    assert_eq!(mode(&data.join(SECRETS_FILE_NAME)), 0o600);
    assert_eq!(mode(&data.join(KEY_FILE_NAME)), 0o600);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(std::fs::read(data.join(KEY_FILE_NAME)).unwrap().len(), 32, "a 256-bit key");

    // A key file someone made readable to others is made 0600 again when used.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(data.join(KEY_FILE_NAME), std::fs::Permissions::from_mode(0o644)).unwrap();
    NodeBook::load_with(&path, &file_store(&path)).unwrap();
    assert_eq!(mode(&data.join(KEY_FILE_NAME)), 0o600);
}

#[test]
fn a_secret_missing_from_its_store_leaves_the_book_usable_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pacs_nodes.json");
    let store = file_store(&path);
    book_with_secrets().save_with(&path, &store).unwrap();
    std::fs::remove_file(dir.path().join(SECRETS_FILE_NAME)).unwrap();
    let loaded = NodeBook::load_with(&path, &store).unwrap();
    let ward = loaded.web.iter().find(|n| n.name == "ward-pacs").unwrap();
    assert_eq!(ward.auth.secret().unwrap().expose(), None);
    let err = DicomWebClient::new(ward).unwrap_err().to_string();
    assert!(err.contains("ward-pacs") && err.contains("enter it again"), "{err}");
}

#[test]
fn credentials_over_plain_http_to_another_host_are_refused() {
    let mut node = WebNode::new("ward-pacs", "http://pacs.example.org:8042/dicom-web");
    node.auth = WebAuth::Basic { user: "reader".into(), password: Secret::new(PASSWORD) };
    let err = DicomWebClient::new(&node).unwrap_err().to_string();
    assert!(err.contains("`ward-pacs`"), "the node is named: {err}");
    assert!(err.contains("https://") && err.contains("--allow-plain-http-credentials"), "the fix is named: {err}");
    assert!(!err.contains(PASSWORD), "{err}");
    // A saved book with such a node is refused at validation too, bearer tokens alike.
    node.auth = WebAuth::Bearer { token: Secret::new(TOKEN) };
    assert!(node.validate().is_err());

    // Loopback is allowed (with a warning in the log), and so is an explicit opt-in.
    for url in ["http://127.0.0.1:8042/dicom-web", "http://localhost:8042/dicom-web", "http://[::1]:8042/dicom-web"] {
        let local = WebNode { base_url: url.into(), ..node.clone() };
        assert!(DicomWebClient::new(&local).is_ok(), "{url}");
    }
    let opted_in = WebNode { allow_plain_http_credentials: true, ..node.clone() };
    assert!(DicomWebClient::new(&opted_in).is_ok());
    let json =
        serde_json::to_string(&NodeBook { nodes: Vec::new(), web: vec![WebNode::new("w", "http://x")] }).unwrap();
    assert!(!json.contains("allow_plain_http_credentials"), "the default is not written: {json}");
}

#[test]
fn debug_output_never_shows_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pacs_nodes.json");
    let store = file_store(&path);
    book_with_secrets().save_with(&path, &store).unwrap();
    let loaded = NodeBook::load_with(&path, &store).unwrap();
    let clients: Vec<DicomWebClient> = loaded.web.iter().map(|n| DicomWebClient::new(n).unwrap()).collect();
    let text = format!("{loaded:?} {:#?} {clients:?} {store:?}", loaded.web);
    assert!(!text.contains(PASSWORD) && !text.contains(TOKEN), "{text}");
    assert!(text.contains("***"), "{text}");
    assert_eq!(format!("{}", Secret::new(PASSWORD)), "***");
}

#[test]
fn a_migrated_password_reaches_a_loopback_server_as_basic_auth() {
    use std::io::{BufRead as _, BufReader, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pacs_nodes.json");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::fs::write(
        &path,
        format!(
            r#"{{"nodes": [], "web": [{{"name": "local", "base_url": "http://127.0.0.1:{port}/dicom-web",
                "auth": {{"kind": "basic", "user": "orthanc", "password": "{PASSWORD}"}}}}]}}"#
        ),
    )
    .unwrap();
    let server = std::thread::Builder::new()
        .name("fake-qido".into())
        .spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut authorization = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("authorization")
                {
                    authorization = value.trim().to_owned();
                }
            }
            let mut stream = stream;
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]")
                .unwrap();
            authorization
        })
        .unwrap();
    let store = file_store(&path);
    let book = NodeBook::load_with(&path, &store).unwrap();
    assert!(!std::fs::read_to_string(&path).unwrap().contains(PASSWORD));
    let client = DicomWebClient::new(&book.web[0]).unwrap();
    let studies = client.search_studies(&pacs::net::FindQuery::default()).unwrap();
    assert!(studies.is_empty());
    // "orthanc:correct-horse-battery-staple" in base64.
    assert_eq!(server.join().unwrap(), "Basic b3J0aGFuYzpjb3JyZWN0LWhvcnNlLWJhdHRlcnktc3RhcGxl");
}
