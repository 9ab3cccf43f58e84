//! Where Lucent keeps its data: `--store DIR`, else `LUCENT_STORE`, else the user's data folder.

use std::path::PathBuf;

/// The user's Lucent data folder (`$XDG_DATA_HOME/lucent`, else `~/.local/share/lucent`).
pub fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("lucent");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/share/lucent");
    }
    PathBuf::from(".lucent")
}

/// The store directory: the explicit flag, then `LUCENT_STORE`, then `<data dir>/store`.
pub fn store_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("LUCENT_STORE").filter(|d| !d.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| data_dir().join("store"))
}

/// The demo store (kept apart from the user's studies).
pub fn demo_store_dir() -> PathBuf {
    data_dir().join("demo-store")
}

/// The saved PACS nodes (DIMSE and DICOMweb), shared by the GUI and `lucent pacs`.
pub fn node_book_path() -> PathBuf {
    data_dir().join("pacs_nodes.json")
}
