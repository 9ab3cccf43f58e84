//! `cargo xtask <task>`: everything a fresh machine needs, in Rust, with no shell scripts.
//!
//! * `setup`: system packages (apt), the ONNX Runtime library from the PyPI wheel, the public
//!   DICOM test corpora (pydicom-data, pydicom's test files) and a pydicom venv, under `target/`.
//! * `demo`: set up, build, and open the workstation on the demo studies (under Xvfb with a
//!   screenshot when there is no display).
//! * `test`: set up, then formatting, clippy, the crate-boundary check, and every test.
//! * `check-deps`: the crate-boundary rules (leaves never know each other).
//! * `bench`: set up, create the Python peers' venv, run the imaging benchmark.
//! * `bench-ai`: set up, create the onnxruntime peer's venv, run the AI latency benchmark.
//! * `bench-pacs`: set up (Orthanc, DCMTK), create the pynetdicom peer's venv, run the PACS
//!   retrieve benchmark.
//! * `fuzz [--smoke] [--seconds N] [--runs N] [TARGET...]`: build the cargo-fuzz targets in
//!   `fuzz/` (libFuzzer + AddressSanitizer on the stable toolchain through `RUSTC_BOOTSTRAP=1`),
//!   seed their corpora from the test corpora, and run each in turn (see `fuzz/README.md`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

/// System packages the project needs (build, GPU-less rendering, X for the real window, PACS peers).
const APT_PACKAGES: &[&str] = &[
    "cmake",
    "nasm",
    "mesa-vulkan-drivers",
    "libvulkan1",
    "xvfb",
    "xauth",
    "imagemagick",
    "libxkbcommon-x11-0",
    "libxcursor1",
    "libxrandr2",
    "libxi6",
    "libx11-xcb1",
    // dsrdump / dsr2xml validate the DICOM SR that `lucent read --sr` writes; storescu, findscu,
    // getscu and echoscu are the DCMTK peers of the network tests (tests/tests/pacs_net.rs).
    "dcmtk",
    // The PACS the network tests start on loopback (with its DICOMweb plugin).
    "orthanc",
    "orthanc-dicomweb",
    // pdftoppm renders a report PDF's first page to PNG in the report tests.
    "poppler-utils",
];

const ORT_VERSION: &str = "1.31.1";
const PYDICOM_DATA_VERSION: &str = "1.0.0";
const PYDICOM_VERSION: &str = "3.0.2";

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    let root = workspace_root()?;
    match task.as_str() {
        "setup" => setup(&root),
        "demo" => demo(&root),
        "test" => test(&root),
        "check-deps" => check_deps(&root),
        "bench" => bench(&root),
        "bench-ai" => bench_ai(&root),
        "bench-pacs" => bench_pacs(&root),
        "fuzz" => fuzz(&root, &std::env::args().skip(2).collect::<Vec<_>>()),
        _ => {
            eprintln!("usage: cargo xtask <setup|demo|test|check-deps|bench|bench-ai|bench-pacs|fuzz>");
            bail!("unknown task {task:?}")
        }
    }
}

fn workspace_root() -> Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(dir.parent().context("xtask has no parent directory")?.to_path_buf())
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    ensure!(status.success(), "{cmd:?} failed with {status}");
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
    ensure!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn data_dir(root: &Path) -> PathBuf {
    root.join("target/lucent-data")
}

/// The user's Lucent data folder (same rule as the app).
fn user_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("lucent");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/lucent"),
        None => PathBuf::from(".lucent"),
    }
}

fn setup(root: &Path) -> Result<()> {
    apt_install()?;
    provision_onnxruntime(root)?;
    provision_test_corpora(root)?;
    Ok(())
}

fn apt_install() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = output(Command::new("id").arg("-u")).is_ok_and(|u| u.trim() == "0");
    if !is_root {
        bail!("missing system packages; run: sudo apt-get install -y {}", missing.join(" "));
    }
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn pip_download(spec: &str, dest: &Path, binary_only: bool) -> Result<PathBuf> {
    std::fs::create_dir_all(dest)?;
    let name = spec.split("==").next().unwrap_or(spec).replace('-', "_");
    let find = || -> Option<PathBuf> {
        let version = spec.split("==").nth(1)?;
        std::fs::read_dir(dest).ok()?.flatten().map(|e| e.path()).find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy().to_lowercase();
                n.starts_with(&format!("{}-{version}-", name.to_lowercase())) && n.ends_with(".whl")
            })
        })
    };
    if let Some(found) = find() {
        return Ok(found);
    }
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d"]).arg(dest).arg(spec);
    if binary_only {
        cmd.args(["--only-binary=:all:"]);
    }
    run(&mut cmd)?;
    find().with_context(|| format!("pip downloaded no wheel for {spec}"))
}

/// Extracts the entries of `wheel` under `prefix` into `dest` (flattened when `flatten`).
fn extract(wheel: &Path, prefix: &str, dest: &Path, flatten: bool) -> Result<usize> {
    let file = std::fs::File::open(wheel)?;
    let mut zip = zip::ZipArchive::new(file)?;
    let mut count = 0;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i)?;
        let name = entry.name().to_owned();
        let Some(mut rel) = name.strip_prefix(prefix) else { continue };
        if rel.is_empty() {
            // The prefix names one file exactly.
            rel = name.rsplit('/').next().unwrap_or(&name);
        }
        if name.ends_with('/') || rel.split('/').any(|c| c == "..") {
            continue;
        }
        let out = if flatten { dest.join(rel.rsplit('/').next().unwrap_or(rel)) } else { dest.join(rel) };
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut f = std::fs::File::create(&out)?;
        std::io::copy(&mut entry, &mut f)?;
        count += 1;
    }
    Ok(count)
}

/// ONNX Runtime for ort's `load-dynamic`: the shared library from the PyPI wheel, placed in the
/// user's Lucent data folder where the app looks for it.
fn provision_onnxruntime(root: &Path) -> Result<()> {
    let lib_name = format!("libonnxruntime.so.{ORT_VERSION}");
    let dest_dir = user_data_dir().join("onnxruntime");
    if dest_dir.join(&lib_name).is_file() {
        return Ok(());
    }
    let wheel = pip_download(&format!("onnxruntime=={ORT_VERSION}"), &data_dir(root).join("wheels"), true)?;
    let n = extract(&wheel, &format!("onnxruntime/capi/{lib_name}"), &dest_dir, true)?;
    ensure!(n == 1, "{lib_name} not found in {}", wheel.display());
    eprintln!("ONNX Runtime {ORT_VERSION} installed at {}", dest_dir.join(&lib_name).display());
    Ok(())
}

/// pydicom-data (MIT) and pydicom's own test files, for the conformance tests. Not vendored.
fn provision_test_corpora(root: &Path) -> Result<()> {
    let data = data_dir(root);
    let corpus = data.join("pydicom-data");
    if !corpus.join(".complete").is_file() {
        let wheel = pip_download(&format!("pydicom-data=={PYDICOM_DATA_VERSION}"), &data.join("wheels"), false)?;
        let n = extract(&wheel, "data_store/data/", &corpus, true)?;
        ensure!(n > 50, "pydicom-data wheel held only {n} files");
        std::fs::write(corpus.join(".complete"), PYDICOM_DATA_VERSION)?;
    }
    let tests = data.join("pydicom-test-files");
    if !tests.join(".complete").is_file() {
        let wheel = pip_download(&format!("pydicom=={PYDICOM_VERSION}"), &data.join("wheels"), false)?;
        let n = extract(&wheel, "pydicom/data/test_files/", &tests, false)?;
        ensure!(n > 100, "pydicom wheel held only {n} test files");
        std::fs::write(tests.join(".complete"), PYDICOM_VERSION)?;
    }
    // pydicom itself, for the tests that check Lucent's DICOM SR reads in pydicom.
    let wheels = data.join("wheels");
    python_venv(root, "venv-pydicom", "pydicom", &[format!("pydicom=={PYDICOM_VERSION}")], &[wheels])?;
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn test(root: &Path) -> Result<()> {
    setup(root)?;
    run(cargo().current_dir(root).args(["fmt", "--all", "--check"]))?;
    check_deps(root)?;
    run(cargo().current_dir(root).args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    let runtime = std::env::temp_dir().join("lucent-xdg-runtime");
    std::fs::create_dir_all(&runtime)?;
    run(cargo()
        .current_dir(root)
        .args(["test", "--workspace", "--no-fail-fast"])
        .env("LUCENT_TEST_DATA", data_dir(root))
        .env("LUCENT_REQUIRE_TEST_DATA", "1")
        .env("XDG_RUNTIME_DIR", runtime))
}

/// The imaging benchmark against pydicom: the peers' venv (created once), the corpora, the bench.
fn bench(root: &Path) -> Result<()> {
    let mut packages = vec![format!("pydicom=={PYDICOM_VERSION}")];
    packages
        .extend(["numpy", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle"].map(String::from));
    python_venv(root, "venv", "pydicom, numpy, pylibjpeg, libjpeg, openjpeg, rle", &packages, &[])?;
    setup(root)?;
    run(cargo().current_dir(root).args(["bench", "-p", "lucent-tests", "--bench", "imaging"]))
}

/// The PACS retrieve benchmark: Orthanc and DCMTK from `setup`, pynetdicom in its own venv.
fn bench_pacs(root: &Path) -> Result<()> {
    setup(root)?;
    python_venv(root, "venv-net", "pynetdicom", &[format!("pydicom=={PYDICOM_VERSION}"), "pynetdicom".into()], &[])?;
    run(cargo().current_dir(root).args(["bench", "-p", "lucent-tests", "--bench", "pacs_net"]))
}

/// The AI latency benchmark against Python onnxruntime: its venv (created once; the wheel `setup`
/// downloaded, numpy and scikit-image), then the bench.
fn bench_ai(root: &Path) -> Result<()> {
    setup(root)?;
    let wheels = data_dir(root).join("wheels");
    let packages = [format!("onnxruntime=={ORT_VERSION}"), "numpy".into(), "scikit-image".into()];
    python_venv(root, "venv-ort", "onnxruntime, numpy, skimage, scipy", &packages, &[wheels])?;
    run(cargo().current_dir(root).args(["bench", "-p", "lucent-inference", "--bench", "latency"]))
}

/// A benchmark peer's venv under `target/lucent-data/NAME`: created once, then `packages` are
/// installed (from PyPI, and from `find_links` folders) unless `imports` already import.
fn python_venv(root: &Path, name: &str, imports: &str, packages: &[String], find_links: &[PathBuf]) -> Result<()> {
    let venv = data_dir(root).join(name);
    let python = venv.join("bin/python");
    if !python.is_file() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    let ready = Command::new(&python)
        .args(["-c", &format!("import {imports}")])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        let mut pip = Command::new(&python);
        pip.args(["-m", "pip", "install", "--disable-pip-version-check", "-q"]);
        for dir in find_links {
            pip.arg("--find-links").arg(dir);
        }
        run(pip.args(packages))?;
    }
    Ok(())
}

fn demo(root: &Path) -> Result<()> {
    setup(root)?;
    run(cargo().current_dir(root).args(["build", "--release", "-p", "lucent"]))?;
    let exe = root.join("target/release/lucent");
    let has_display = ["DISPLAY", "WAYLAND_DISPLAY"].iter().any(|v| std::env::var_os(v).is_some_and(|d| !d.is_empty()));
    if has_display {
        return run(Command::new(&exe).arg("--demo"));
    }
    // No display (a headless server): run the real window under Xvfb and take a screenshot.
    let shot = root.join("target/lucent-demo.png");
    eprintln!("No display: opening the workstation under Xvfb; a screenshot will be written to {}", shot.display());
    run(Command::new(&exe).arg("demo"))?;
    let runtime = std::env::temp_dir().join("lucent-xdg-runtime");
    std::fs::create_dir_all(&runtime)?;
    run(Command::new("xvfb-run")
        .env("XDG_RUNTIME_DIR", std::env::var_os("XDG_RUNTIME_DIR").map_or(runtime, std::path::PathBuf::from))
        .args(["-a", "-s", "-screen 0 1600x1000x24", "sh", "-c"])
        .arg("\"$0\" --demo & app=$!; sleep \"${LUCENT_DEMO_SECONDS:-20}\"; import -window root \"$1\"; kill $app; wait $app 2>/dev/null; true")
        .arg(&exe)
        .arg(&shot))?;
    ensure!(shot.is_file(), "no screenshot was written");
    eprintln!("Screenshot: {}", shot.display());
    Ok(())
}

/// Leaves never know each other: fails if a forbidden crate appears in a leaf's dependency tree.
fn check_deps(root: &Path) -> Result<()> {
    let rules: &[(&str, &[&str])] = &[
        (
            "lucent-pacs",
            &[
                "egui",
                "eframe",
                "egui-wgpu",
                "wgpu",
                "winit",
                "rfd",
                "ort",
                "lucent-render",
                "lucent-inference",
                "lucent-report",
            ],
        ),
        (
            "lucent-inference",
            &[
                "egui",
                "eframe",
                "egui-wgpu",
                "wgpu",
                "winit",
                "rfd",
                "dicom-ul",
                "dicom-object",
                "lucent-pacs",
                "lucent-render",
                "lucent-report",
            ],
        ),
        (
            "lucent-render",
            &[
                "dicom-core",
                "dicom-object",
                "dicom-pixeldata",
                "dicom-ul",
                "ort",
                "lucent-pacs",
                "lucent-inference",
                "lucent-report",
            ],
        ),
        (
            "lucent-report",
            &[
                "egui",
                "eframe",
                "egui-wgpu",
                "wgpu",
                "winit",
                "rfd",
                "ort",
                "dicom-core",
                "dicom-object",
                "dicom-encoding",
                "dicom-dictionary-std",
                "dicom-pixeldata",
                "dicom-ul",
                "lucent-pacs",
                "lucent-inference",
                "lucent-render",
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (package, forbidden) in rules {
        let tree = output(cargo().current_dir(root).args([
            "tree",
            "-p",
            package,
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ]))?;
        let names: std::collections::BTreeSet<&str> =
            tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
        for f in *forbidden {
            if names.contains(f) {
                failures.push(format!("{package} depends on {f}"));
            }
        }
    }
    ensure!(failures.is_empty(), "crate boundary violations:\n  {}", failures.join("\n  "));
    eprintln!("crate boundaries: ok");
    Ok(())
}

/// The cargo-fuzz targets (`fuzz/Cargo.toml`), in campaign order.
const FUZZ_TARGETS: &[&str] = &[
    "dicom_parse",
    "decode_rle",
    "decode_jpeg",
    "decode_jpegls_j2k",
    "pdu_reader",
    "dicomweb_multipart",
    "zip_dicomdir_import",
    "manifest_toml",
];

/// The cargo-fuzz release `cargo xtask fuzz` installs when `cargo fuzz` is missing.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Largest seed and input (bytes) of a campaign.
const FUZZ_MAX_LEN: usize = 256 * 1024;

/// `cargo xtask fuzz [--smoke] [--seconds N] [--runs N] [TARGET...]`: builds every fuzz target
/// (libFuzzer, AddressSanitizer; `RUSTC_BOOTSTRAP=1` lets cargo-fuzz's `-Z` flags through the
/// stable toolchain), seeds `fuzz/corpus/<target>/` from the test corpora and the models'
/// manifests, then runs each target over its corpus and `fuzz/regressions/<target>/` until it
/// has run N seconds (`--smoke`: 5) or N executions, whichever comes first. Prints executions,
/// `cov` and `ft` per target; fails if any target finds a crash (the input is in
/// `fuzz/artifacts/<target>/`).
fn fuzz(root: &Path, args: &[String]) -> Result<()> {
    let mut seconds: Option<u64> = None;
    let mut runs: Option<u64> = None;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smoke" => seconds = Some(5),
            "--seconds" => seconds = Some(args.next().context("--seconds needs a value")?.parse()?),
            "--runs" => runs = Some(args.next().context("--runs needs a value")?.parse()?),
            t if FUZZ_TARGETS.contains(&t) => targets.push(t),
            other => bail!("unknown fuzz argument {other:?} (targets: {})", FUZZ_TARGETS.join(", ")),
        }
    }
    if targets.is_empty() {
        targets = FUZZ_TARGETS.to_vec();
    }
    if seconds.is_none() && runs.is_none() {
        seconds = Some(60);
    }
    let dir = root.join("fuzz");
    let has_cargo_fuzz = cargo().args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if !has_cargo_fuzz {
        run(cargo().args(["install", "--locked", "cargo-fuzz", "--version", CARGO_FUZZ_VERSION]))?;
    }
    // Seeds: generated from the provisioned corpora (never committed), hash-named so reruns add
    // nothing twice.
    let data = data_dir(root);
    let venv_python = data.join("venv-pydicom/bin/python");
    let python = if venv_python.is_file() { venv_python } else { PathBuf::from("python3") };
    if data.join("pydicom-test-files").is_dir() {
        run(Command::new(python)
            .args(["-W", "ignore"])
            .arg(dir.join("seeds.py"))
            .arg(&data)
            .arg(root.join("models"))
            .arg(dir.join("corpus"))
            .arg(FUZZ_MAX_LEN.to_string()))?;
    } else {
        eprintln!("no test corpora in {} (cargo xtask setup): fuzzing from the regression inputs only", data.display());
    }
    let fuzz_cargo = || {
        let mut cmd = cargo();
        cmd.current_dir(&dir).env("RUSTC_BOOTSTRAP", "1");
        // What `cargo run` set for xtask itself would reach the fuzz build's compilers and build
        // scripts, change their fingerprints and rebuild everything.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || ["CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH", "CARGO_CRATE_NAME", "CARGO_BIN_NAME"]
                    .contains(&key.as_ref())
            {
                cmd.env_remove(key.as_ref());
            }
        }
        cmd
    };
    let started = std::time::Instant::now();
    run(fuzz_cargo().args(["fuzz", "build"]))?;
    eprintln!("fuzz targets built in {:.0} s", started.elapsed().as_secs_f64());
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut table = Vec::new();
    let mut failed = Vec::new();
    for target in targets {
        let corpus = dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        let mut cmd = fuzz_cargo();
        cmd.args(["fuzz", "run", target]).arg(&corpus).arg(dir.join("regressions").join(target));
        cmd.args(["--", "-workers=1", "-print_final_stats=1"]).arg(format!("-max_len={FUZZ_MAX_LEN}"));
        if let Some(s) = seconds {
            cmd.arg(format!("-max_total_time={s}"));
        }
        if let Some(n) = runs {
            cmd.arg(format!("-runs={n}"));
        }
        eprintln!("$ {cmd:?}");
        let t0 = std::time::Instant::now();
        let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
        let wall = t0.elapsed().as_secs_f64();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        std::fs::write(logs.join(format!("{target}.log")), &log)?;
        let stats = fuzz_stats(&log);
        table.push(format!(
            "| {target} | {} | {} | {} | {} | {wall:.0} s |",
            stats.0,
            stats.1,
            stats.2,
            if out.status.success() { "0" } else { "CRASH" }
        ));
        if !out.status.success() {
            eprintln!(
                "{}",
                log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
            );
            failed.push(target);
        }
    }
    println!("| target | executions | cov | ft | crashes | wall time |\n|---|---|---|---|---|---|");
    for row in &table {
        println!("{row}");
    }
    ensure!(failed.is_empty(), "fuzz targets crashed: {} (inputs in fuzz/artifacts/)", failed.join(", "));
    Ok(())
}

/// (executions, cov, ft) from libFuzzer's last status line (`#N ... cov: C ft: F ...`) and its
/// final `stat::number_of_executed_units`.
fn fuzz_stats(log: &str) -> (String, String, String) {
    let field = |line: &str, name: &str| {
        let mut words = line.split_whitespace();
        words.by_ref().find(|w| *w == name);
        words.next().map(str::to_owned)
    };
    let last = log.lines().rev().find(|l| l.starts_with('#') && l.contains(" cov: ")).unwrap_or_default();
    let executed = log
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:").map(|n| n.trim().to_owned()))
        .or_else(|| last.split_whitespace().next().map(|n| n.trim_start_matches('#').to_owned()));
    let unknown = || "?".to_owned();
    (
        executed.unwrap_or_else(unknown),
        field(last, "cov:").unwrap_or_else(unknown),
        field(last, "ft:").unwrap_or_else(unknown),
    )
}
