//! Shared helpers for Lucent's cross-crate tests: where the test corpora are, and checksums.
//!
//! Public corpora (pydicom-data, pydicom's test files) are provisioned by `cargo xtask setup`
//! under `target/lucent-data` (or `$LUCENT_TEST_DATA`). Real data beside the checkout lives in
//! `../shared/data` (or `$LUCENT_REAL_DATA`). Tests that need either skip with a message when it
//! is absent, unless `LUCENT_REQUIRE_TEST_DATA=1` (set by `cargo xtask test`) makes absence a failure.

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn required() -> bool {
    std::env::var("LUCENT_REQUIRE_TEST_DATA").is_ok_and(|v| v == "1")
}

/// The provisioned public corpora folder, or `None` (after saying why) when absent.
pub fn test_data(sub: &str) -> Option<PathBuf> {
    let base = std::env::var_os("LUCENT_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/lucent-data"));
    let dir = base.join(sub);
    if dir.join(".complete").is_file() || dir.is_dir() && sub.is_empty() {
        return Some(dir);
    }
    assert!(!required(), "{} is missing: run `cargo xtask setup`", dir.display());
    eprintln!("SKIP: {} is absent (run `cargo xtask setup` to fetch it)", dir.display());
    None
}

/// A folder of `../shared/data`, or `None` (after saying why) when absent. Never required:
/// a fresh clone does not have it.
pub fn real_data(sub: &str) -> Option<PathBuf> {
    let base = std::env::var_os("LUCENT_REAL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/data"));
    let dir = base.join(sub);
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIP: real data {} is absent", dir.display());
        None
    }
}

/// Every regular file under `dir`, sorted, as (relative path with '/', absolute path).
pub fn walk_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n != ".complete") {
                let rel = p.strip_prefix(dir).unwrap_or(&p).to_string_lossy().replace('\\', "/");
                out.push((rel, p));
            }
        }
    }
    out.sort();
    out
}

/// FNV-1a 64 over bytes.
pub fn fnv64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3))
}

/// Checksum of decoded samples: their values as little-endian bytes of the stored type.
pub fn samples_checksum(samples: &pacs::Samples) -> u64 {
    use pacs::Samples as S;
    match samples {
        S::U8(v) => fnv64(v.iter().copied()),
        S::I8(v) => fnv64(v.iter().map(|&x| x as u8)),
        S::U16(v) => fnv64(v.iter().flat_map(|x| x.to_le_bytes())),
        S::I16(v) => fnv64(v.iter().flat_map(|x| x.to_le_bytes())),
        S::U32(v) => fnv64(v.iter().flat_map(|x| x.to_le_bytes())),
        S::I32(v) => fnv64(v.iter().flat_map(|x| x.to_le_bytes())),
        S::F32(v) => fnv64(v.iter().flat_map(|x| x.to_le_bytes())),
        S::F64(v) => fnv64(v.iter().flat_map(|x| x.to_le_bytes())),
    }
}
