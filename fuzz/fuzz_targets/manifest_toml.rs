//! Fuzz target `manifest_toml`: the model manifest loader (TOML parse + validation).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = inference::manifest::ModelManifest::from_toml_str(text, std::path::Path::new("fuzz.toml"));
    }
});
