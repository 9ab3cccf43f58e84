//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly by design

use std::path::PathBuf;

/// The repository's `models/` folder.
pub fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("models")
}

pub fn test_models_dir() -> PathBuf {
    models_dir().join("test")
}

/// Whether tests must not skip for missing runtime or data.
pub fn data_required() -> bool {
    std::env::var("LUCENT_REQUIRE_TEST_DATA").is_ok_and(|v| v == "1")
}

/// True when the ONNX Runtime library loads. Otherwise prints why and returns false, or fails
/// the test when `LUCENT_REQUIRE_TEST_DATA=1`.
pub fn runtime_or_skip(test: &str) -> bool {
    match inference::runtime::runtime() {
        Ok(_) => true,
        Err(e) if data_required() => panic!("{test}: LUCENT_REQUIRE_TEST_DATA=1 but the runtime is unavailable: {e}"),
        Err(e) => {
            eprintln!("SKIPPED {test}: {e}");
            false
        }
    }
}

/// `../shared/data` (or `$LUCENT_REAL_DATA`), when present.
pub fn real_data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("LUCENT_REAL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("..").join("shared").join("data"));
    dir.is_dir().then_some(dir)
}

/// Copy the toy CXR model and its manifest into `dir`, with `edit` applied to the manifest text.
pub fn copy_cxr_toy(dir: &std::path::Path, edit: impl Fn(String) -> String) -> PathBuf {
    let src = test_models_dir();
    std::fs::copy(src.join("cxr_toy.onnx"), dir.join("cxr_toy.onnx")).unwrap();
    let text = std::fs::read_to_string(src.join("cxr_toy.toml")).unwrap();
    let path = dir.join("cxr_toy.toml");
    std::fs::write(&path, edit(text)).unwrap();
    path
}
