//! A missing or unloadable ONNX Runtime library gives a typed error that says how to fix it.
//! Its own test binary (process), so that no other test has loaded the real library first.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use inference::Error;
use inference::runtime::runtime_from;

const FIX: &str = "run `cargo xtask setup`, or set LUCENT_ORT_LIB to libonnxruntime.so.1.31.1 from the PyPI onnxruntime==1.31.1 wheel";

#[test]
fn missing_library_says_how_to_fix_it() {
    let err = runtime_from(std::path::Path::new("/nonexistent/lucent/libonnxruntime.so.1.31.1")).unwrap_err();
    assert!(matches!(err, Error::RuntimeMissing { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(FIX), "{msg}");
    assert!(msg.contains("/nonexistent/lucent/libonnxruntime.so.1.31.1 does not exist"), "{msg}");
}

#[test]
fn a_file_that_is_not_the_library_says_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libonnxruntime.so.1.31.1");
    std::fs::write(&fake, b"this is not a shared library").unwrap();
    let err = runtime_from(&fake).unwrap_err();
    assert!(matches!(err, Error::RuntimeLoad { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(FIX), "{msg}");
    assert!(msg.contains("could not load the ONNX Runtime library"), "{msg}");
}
