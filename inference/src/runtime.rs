//! Finding and loading the ONNX Runtime shared library, once per process.
//!
//! Lucent never downloads anything at run time: `cargo xtask setup` places
//! `libonnxruntime.so.1.31.1` (from the PyPI `onnxruntime==1.31.1` wheel) under the user data folder,
//! and this module loads it with `ort`'s `load-dynamic` feature. The lookup order is:
//!
//! 1. `$LUCENT_ORT_LIB` (a file, or a folder holding the library);
//! 2. `$ORT_DYLIB_PATH` (the variable `ort` itself honours);
//! 3. next to the current executable;
//! 4. `$XDG_DATA_HOME/lucent/onnxruntime/`, else `~/.local/share/lucent/onnxruntime/`.
//!
//! A variable that is set but names a missing file is an error (it is never silently skipped), so a
//! typo does not quietly pick another library.
//!
//! ONNX Runtime allows one environment per process, so the [`Runtime`] lives in a `OnceLock` and
//! is shared by every session, tests included. Loading failures are not cached: after
//! `cargo xtask setup` a later call succeeds.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::ep::ExecutionProvider;

use crate::error::{Error, Result};

/// The ONNX Runtime version Lucent is built and tested against (`ort` 2.0.0-rc.15, API 31).
pub const ORT_VERSION: &str = "1.31.1";

/// How to fix a missing or unloadable runtime library; part of every runtime error message.
pub const FIX_HINT: &str = "run `cargo xtask setup`, or set LUCENT_ORT_LIB to libonnxruntime.so.1.31.1 from the PyPI onnxruntime==1.31.1 wheel";

/// The environment variable Lucent reads first.
pub const ENV_LUCENT_ORT_LIB: &str = "LUCENT_ORT_LIB";
/// The environment variable `ort` reads; honoured second.
pub const ENV_ORT_DYLIB_PATH: &str = "ORT_DYLIB_PATH";

/// The library's file name on this platform (`libonnxruntime.so.1.31.1` on Linux).
pub fn library_file_name() -> String {
    if cfg!(target_os = "windows") {
        "onnxruntime.dll".to_owned()
    } else if cfg!(target_os = "macos") {
        format!("libonnxruntime.{ORT_VERSION}.dylib")
    } else {
        format!("libonnxruntime.so.{ORT_VERSION}")
    }
}

/// Where a candidate library path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibrarySource {
    LucentOrtLib,
    OrtDylibPath,
    ExecutableDir,
    UserDataDir,
}

impl LibrarySource {
    fn describe(self) -> &'static str {
        match self {
            Self::LucentOrtLib => "$LUCENT_ORT_LIB",
            Self::OrtDylibPath => "$ORT_DYLIB_PATH",
            Self::ExecutableDir => "next to the executable",
            Self::UserDataDir => "the user data folder",
        }
    }
}

/// The inputs of the library lookup, separated from the process environment so they can be tested.
#[derive(Debug, Clone, Default)]
pub struct LibrarySearch {
    pub lucent_ort_lib: Option<OsString>,
    pub ort_dylib_path: Option<OsString>,
    pub exe_dir: Option<PathBuf>,
    pub xdg_data_home: Option<OsString>,
    pub home: Option<OsString>,
}

impl LibrarySearch {
    /// The lookup inputs of this process.
    pub fn from_env() -> Self {
        Self {
            lucent_ort_lib: std::env::var_os(ENV_LUCENT_ORT_LIB),
            ort_dylib_path: std::env::var_os(ENV_ORT_DYLIB_PATH),
            exe_dir: std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)),
            xdg_data_home: std::env::var_os("XDG_DATA_HOME"),
            home: std::env::var_os("HOME"),
        }
    }

    /// The user data folder the library is provisioned into by `cargo xtask setup`.
    pub fn user_data_dir(&self) -> Option<PathBuf> {
        let xdg = self.xdg_data_home.as_ref().map(PathBuf::from).filter(|p| p.is_absolute());
        let base = xdg.or_else(|| {
            self.home.as_ref().filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".local").join("share"))
        })?;
        Some(base.join("lucent").join("onnxruntime"))
    }

    /// Every place looked at, in order.
    pub fn candidates(&self) -> Vec<(LibrarySource, PathBuf)> {
        let name = library_file_name();
        let mut out = Vec::new();
        for (source, var) in
            [(LibrarySource::LucentOrtLib, &self.lucent_ort_lib), (LibrarySource::OrtDylibPath, &self.ort_dylib_path)]
        {
            if let Some(v) = var.as_ref().filter(|v| !v.is_empty()) {
                let p = PathBuf::from(v);
                out.push((source, if p.is_dir() { p.join(&name) } else { p }));
            }
        }
        if let Some(dir) = &self.exe_dir {
            out.push((LibrarySource::ExecutableDir, dir.join(&name)));
        }
        if let Some(dir) = self.user_data_dir() {
            out.push((LibrarySource::UserDataDir, dir.join(&name)));
        }
        out
    }

    /// The first existing candidate. A set environment variable naming a missing file is an error.
    pub fn locate(&self) -> Result<PathBuf> {
        let candidates = self.candidates();
        for (source, path) in &candidates {
            if path.is_file() {
                return Ok(path.clone());
            }
            if matches!(source, LibrarySource::LucentOrtLib | LibrarySource::OrtDylibPath) {
                return Err(Error::RuntimeMissing {
                    detail: format!("{} is set to {}, which does not exist", source.describe(), path.display()),
                });
            }
        }
        let looked: Vec<String> =
            candidates.iter().map(|(s, p)| format!("{} ({})", p.display(), s.describe())).collect();
        Err(Error::RuntimeMissing {
            detail: format!("{} is not in any of: {}", library_file_name(), looked.join(", ")),
        })
    }
}

/// The loaded ONNX Runtime: the library and the process's one environment.
#[derive(Debug)]
pub struct Runtime {
    library: PathBuf,
    environment: ort::environment::Environment,
    cuda_available: bool,
    tensorrt_available: bool,
}

impl Runtime {
    /// The library file that was loaded.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// Whether the loaded library was built with the CUDA execution provider.
    pub fn cuda_available(&self) -> bool {
        self.cuda_available
    }

    /// Whether the loaded library was built with the TensorRT execution provider.
    pub fn tensorrt_available(&self) -> bool {
        self.tensorrt_available
    }

    pub(crate) fn environment(&self) -> &ort::environment::Environment {
        &self.environment
    }
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// The process's runtime, loading the library found by [`LibrarySearch::from_env`] on first use.
pub fn runtime() -> Result<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let path = LibrarySearch::from_env().locate()?;
    runtime_from(&path)
}

/// The process's runtime, loading `library` on first use. Once a library is loaded, later calls
/// return that runtime whatever path they pass (ONNX Runtime cannot be loaded twice).
pub fn runtime_from(library: &Path) -> Result<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let _guard = INIT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    if !library.is_file() {
        return Err(Error::RuntimeMissing { detail: format!("{} does not exist", library.display()) });
    }
    // `ort` resolves relative paths against the executable (and panics without one): pass it absolute.
    let library = std::path::absolute(library).map_err(|e| Error::io(library, e))?;
    let builder =
        ort::init_from(&library).map_err(|e| Error::RuntimeLoad { path: library.clone(), message: e.to_string() })?;
    let environment = builder
        .with_name("lucent")
        .with_telemetry(false)
        .build()
        .map_err(|e| Error::RuntimeLoad { path: library.clone(), message: e.to_string() })?;
    let cuda_available = ort::ep::CUDA::is_available().unwrap_or(false);
    let tensorrt_available = ort::ep::TensorRT::is_available().unwrap_or(false);
    tracing::info!(
        library = %library.display(),
        cuda_available,
        tensorrt_available,
        "ONNX Runtime loaded"
    );
    Ok(RUNTIME.get_or_init(|| Runtime { library, environment, cuda_available, tensorrt_available }))
}

/// Whether the runtime is (or can be) loaded, without an error. For tests that skip without it.
pub fn runtime_available() -> bool {
    runtime().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search() -> LibrarySearch {
        LibrarySearch {
            lucent_ort_lib: None,
            ort_dylib_path: None,
            exe_dir: Some(PathBuf::from("/nonexistent/bin")),
            xdg_data_home: None,
            home: Some(OsString::from("/nonexistent/home")),
        }
    }

    #[test]
    fn lookup_order() {
        let mut s = search();
        s.lucent_ort_lib = Some("/a/lib.so".into());
        s.ort_dylib_path = Some("/b/lib.so".into());
        s.xdg_data_home = Some("/xdg".into());
        let c = s.candidates();
        let sources: Vec<_> = c.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            sources,
            [
                LibrarySource::LucentOrtLib,
                LibrarySource::OrtDylibPath,
                LibrarySource::ExecutableDir,
                LibrarySource::UserDataDir
            ]
        );
        assert_eq!(c[3].1, PathBuf::from("/xdg/lucent/onnxruntime").join(library_file_name()));
    }

    #[test]
    fn home_fallback_and_relative_xdg_ignored() {
        let mut s = search();
        s.xdg_data_home = Some("relative/path".into());
        assert_eq!(s.user_data_dir(), Some(PathBuf::from("/nonexistent/home/.local/share/lucent/onnxruntime")));
    }

    #[test]
    fn missing_library_says_how_to_fix() {
        let err = search().locate().unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::RuntimeMissing { .. }));
        assert!(msg.contains("run `cargo xtask setup`"), "{msg}");
        assert!(msg.contains("LUCENT_ORT_LIB"), "{msg}");
        assert!(msg.contains("onnxruntime==1.31.1"), "{msg}");
    }

    #[test]
    fn explicit_variable_pointing_nowhere_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join(library_file_name());
        std::fs::write(&real, b"not a library").unwrap();
        let mut s = search();
        s.exe_dir = Some(dir.path().to_path_buf());
        s.lucent_ort_lib = Some("/nonexistent/libonnxruntime.so".into());
        let msg = s.locate().unwrap_err().to_string();
        assert!(msg.contains("$LUCENT_ORT_LIB is set to /nonexistent/libonnxruntime.so"), "{msg}");
        s.lucent_ort_lib = None;
        assert_eq!(s.locate().unwrap(), real);
    }
}
