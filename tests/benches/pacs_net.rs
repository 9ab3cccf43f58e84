//! PACS exchange benchmark: retrieve a 300-slice 512x512 CT series (the synthetic one the imaging
//! benchmark uses, `target/lucent-bench/ct300`) from a throw-away Orthanc on loopback, by
//! Lucent's C-GET, C-MOVE and WADO-RS, side by side with DCMTK `getscu` / `movescu`, a pynetdicom
//! C-GET script (`peers/getscu_pynetdicom.py`) and `curl` on WADO-RS, in one run.
//!
//! Run with `cargo xtask bench-pacs` (creates the pynetdicom venv) or
//! `cargo bench -p lucent-tests --bench pacs_net`.
//!
//! Every row is timed from the request to the last byte on disk: Lucent writes each instance
//! atomically and durably (temp file, fsync, rename, directory fsync: the directory fsyncs once
//! per batch for C-GET, WADO-RS and the commit-at-release SCP, per instance for the default SCP)
//! and indexes it in SQLite; the peers
//! just write files (`curl` writes the multipart body as one file). DCMTK and Orthanc get
//! `TCP_NODELAY=1` (DCMTK leaves Nagle on without it). One warm-up, then [`RUNS`] measured runs
//! per row; medians.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails fast and loudly

#[path = "../tests/common/orthanc.rs"]
mod orthanc;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use lucent_tests::workspace_root;
use orthanc::{Modality, ORTHANC_AET, Orthanc, dcmtk, free_port};
use pacs::dicomweb::{DicomWebClient, WebNode};
use pacs::net::{self, RetrieveOptions, RetrieveRequest, ScpCommit, ScpConfig};
use pacs::store::Store;
use pacs::synth::{self, CtSeriesSpec};

const RUNS: usize = 3;
const LUCENT_AET: &str = "LUCENT";
const DCMTK_AET: &str = "DCMTK";
const VENV_HINT: &str = "pynetdicom peer unavailable: run `cargo xtask bench-pacs` (or `python3 -m venv \
                         target/lucent-data/venv-net && target/lucent-data/venv-net/bin/pip install pynetdicom`)";

fn ct300() -> Vec<PathBuf> {
    let dir = workspace_root().join("target/lucent-bench/ct300");
    if !dir.is_dir() {
        let tmp = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&tmp);
        eprintln!("generating the 300-slice synthetic CT into {} (once)...", dir.display());
        let spec = CtSeriesSpec { shuffle: true, ..CtSeriesSpec::chest("bench", 300, 512) };
        synth::write_ct_series(&tmp, &spec).unwrap();
        std::fs::rename(&tmp, &dir).unwrap();
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    files
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `f` (which returns how many instances it brought) once to warm up and `RUNS` times.
fn measure(name: &str, expected: usize, mut f: impl FnMut(usize) -> Result<usize, String>) -> Result<Vec<f64>, String> {
    let mut times = Vec::new();
    for run in 0..=RUNS {
        let t = Instant::now();
        let n = f(run)?;
        let s = t.elapsed().as_secs_f64();
        if n != expected {
            return Err(format!("{name}: {n} instances instead of {expected}"));
        }
        eprintln!("  {name} run {run}: {s:.3} s");
        if run > 0 {
            times.push(s);
        }
    }
    Ok(times)
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn fresh_dir(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn main() {
    let files = ct300();
    let total_bytes: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    let mb = total_bytes as f64 / 1e6;
    let study = pacs::file::read_info(&files[0]).unwrap().study_instance_uid;
    let scp_port = free_port();
    let dcmtk_port = free_port();
    let pynet_port = free_port();
    let Some(orthanc) = Orthanc::start(&[
        Modality::new("lucent", LUCENT_AET, scp_port),
        Modality::new("dcmtk", DCMTK_AET, dcmtk_port),
        Modality::new("pynetdicom", "PYNETDICOM", pynet_port),
    ]) else {
        eprintln!("Orthanc is not installed: nothing to measure (run `cargo xtask setup`)");
        return;
    };
    let t = Instant::now();
    orthanc.upload(&files);
    eprintln!("uploaded {} files ({mb:.0} MB) to Orthanc in {:.1} s", files.len(), t.elapsed().as_secs_f64());
    let work = tempfile::tempdir().unwrap();
    let n = files.len();
    let node = orthanc.node(LUCENT_AET);
    let request = RetrieveRequest::study(&study);
    let never = AtomicBool::new(false);
    let web = {
        let mut w = WebNode::new("orthanc", &format!("http://127.0.0.1:{}/dicom-web", orthanc.http_port));
        w.timeout_s = 60.0;
        w
    };
    let wado_url = format!("http://127.0.0.1:{}/dicom-web/studies/{study}", orthanc.http_port);
    let port = orthanc.dicom_port.to_string();

    let mut rows: Vec<(String, Result<Vec<f64>, String>)> = Vec::new();
    eprintln!("measuring Lucent C-GET ...");
    rows.push((
        "Lucent C-GET (into the store)".into(),
        measure("lucent-get", n, |run| {
            let dir = work.path().join(format!("get-{run}"));
            let mut store = Store::open(&dir).map_err(|e| e.to_string())?;
            let r = net::retrieve_get(&node, &request, &mut store, &RetrieveOptions::default(), &mut |_| {}, &never)
                .map_err(|e| e.to_string())?;
            Ok(r.received)
        }),
    ));
    for (label, commit) in [
        ("Lucent C-MOVE (to its own Store SCP, durable per instance)", ScpCommit::PerInstance),
        ("Lucent C-MOVE (to its own Store SCP, commit at release)", ScpCommit::AtRelease),
    ] {
        eprintln!("measuring {label} ...");
        rows.push((
            label.into(),
            measure("lucent-move", n, |run| {
                let dir = work.path().join(format!("move-{commit:?}-{run}"));
                let mut store = Store::open(&dir).map_err(|e| e.to_string())?;
                let mut config = ScpConfig::new(LUCENT_AET, scp_port);
                config.bind_address = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
                config.commit = commit;
                let (scp, _events) = net::start_scp(&config, &dir).map_err(|e| e.to_string())?;
                let r = net::retrieve_move(
                    &node,
                    &request,
                    LUCENT_AET,
                    &mut store,
                    &RetrieveOptions::default(),
                    &mut |_| {},
                    &never,
                )
                .map_err(|e| e.to_string());
                scp.shutdown();
                Ok(r?.received)
            }),
        ));
    }
    eprintln!("measuring Lucent WADO-RS ...");
    rows.push((
        "Lucent WADO-RS (into the store)".into(),
        measure("lucent-wado", n, |run| {
            let dir = work.path().join(format!("wado-{run}"));
            let mut store = Store::open(&dir).map_err(|e| e.to_string())?;
            let client = DicomWebClient::new(&web).map_err(|e| e.to_string())?;
            let s = client.retrieve(&study, None, &mut store, &mut |_| {}, &never).map_err(|e| e.to_string())?;
            Ok(s.received)
        }),
    ));
    let key = format!("StudyInstanceUID={study}");
    rows.push((
        "DCMTK getscu (TCP_NODELAY=1)".into(),
        match dcmtk("getscu") {
            None => Err("getscu not installed".into()),
            Some(getscu) => measure("getscu", n, |run| {
                let od = fresh_dir(work.path(), &format!("getscu-{run}"));
                let out = Command::new(&getscu)
                    .env("TCP_NODELAY", "1")
                    .args(["-pdu", "131072", "-aet", DCMTK_AET, "-aec", ORTHANC_AET, "-od"])
                    .arg(&od)
                    .args(["-k", "QueryRetrieveLevel=STUDY", "-k", &key, "127.0.0.1", &port])
                    .output()
                    .map_err(|e| e.to_string())?;
                if !out.status.success() {
                    return Err(format!("getscu: {}", String::from_utf8_lossy(&out.stderr)));
                }
                Ok(files_in(&od))
            }),
        },
    ));
    rows.push((
        "DCMTK movescu (its own SCP, TCP_NODELAY=1)".into(),
        match dcmtk("movescu") {
            None => Err("movescu not installed".into()),
            Some(movescu) => measure("movescu", n, |run| {
                let od = fresh_dir(work.path(), &format!("movescu-{run}"));
                let out = Command::new(&movescu)
                    .env("TCP_NODELAY", "1")
                    .args(["-S", "-aet", DCMTK_AET, "-aec", ORTHANC_AET, "-aem", DCMTK_AET, "--port"])
                    .arg(dcmtk_port.to_string())
                    .arg("-od")
                    .arg(&od)
                    .args(["-k", "QueryRetrieveLevel=STUDY", "-k", &key, "127.0.0.1", &port])
                    .output()
                    .map_err(|e| e.to_string())?;
                if !out.status.success() {
                    return Err(format!("movescu: {}", String::from_utf8_lossy(&out.stderr)));
                }
                Ok(files_in(&od))
            }),
        },
    ));
    let python = workspace_root().join("target/lucent-data/venv-net/bin/python");
    let peer = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/getscu_pynetdicom.py");
    rows.push((
        "pynetdicom C-GET".into(),
        if python.is_file() {
            measure("pynetdicom", n, |run| {
                let od = fresh_dir(work.path(), &format!("pynetdicom-{run}"));
                let out = Command::new(&python)
                    .arg(&peer)
                    .args(["127.0.0.1", &port, ORTHANC_AET, &study])
                    .arg(&od)
                    .output()
                    .map_err(|e| e.to_string())?;
                if !out.status.success() {
                    return Err(format!("pynetdicom: {}", String::from_utf8_lossy(&out.stderr)));
                }
                Ok(files_in(&od))
            })
        } else {
            Err(VENV_HINT.into())
        },
    ));
    rows.push((
        "curl WADO-RS (multipart to one file)".into(),
        measure("curl", n, |run| {
            let out_file = work.path().join(format!("curl-{run}.multipart"));
            let out = Command::new("curl")
                .args(["-s", "-f", "-o"])
                .arg(&out_file)
                .args(["-H", "Accept: multipart/related; type=\"application/dicom\"; transfer-syntax=*", &wado_url])
                .output()
                .map_err(|e| format!("curl: {e}"))?;
            if !out.status.success() {
                return Err(format!("curl exited with {}", out.status));
            }
            let body = std::fs::read(&out_file).map_err(|e| e.to_string())?;
            // Count the parts (one per instance).
            let parts = memchr_count(&body, b"Content-Type: application/dicom");
            let _ = std::fs::remove_file(&out_file);
            Ok(parts)
        }),
    ));

    let seconds = |name: &str| {
        rows.iter().find(|(n, _)| n.starts_with(name)).and_then(|(_, r)| r.as_ref().ok()).map(|t| median(t.clone()))
    };
    let (get, wado) = (seconds("Lucent C-GET"), seconds("Lucent WADO-RS"));
    let move_ = seconds("Lucent C-MOVE (to its own Store SCP, commit at release)");
    let (getscu, movescu, pynet, curl) =
        (seconds("DCMTK getscu"), seconds("DCMTK movescu"), seconds("pynetdicom"), seconds("curl"));
    println!();
    println!("Retrieve {n} x 512x512 CT instances ({mb:.0} MB) from Orthanc 1.10 on loopback; median of {RUNS} runs");
    println!();
    println!("| client | seconds | MB/s |");
    println!("|---|---|---|");
    for (name, result) in &rows {
        match result {
            Ok(t) => {
                let s = median(t.clone());
                println!("| {name} | {s:.3} | {:.0} |", mb / s);
            }
            Err(e) => println!("| {name} | — | — ({e}) |"),
        }
    }
    println!();
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}", a / b),
        _ => "—".into(),
    };
    println!("| goal | ratio | met |");
    println!("|---|---|---|");
    let goal = |label: &str, r: String, ok: Option<bool>| {
        println!("| {label} | {r} | {} |", ok.map_or("—", |ok| if ok { "yes" } else { "NO" }));
    };
    goal("Lucent C-GET / getscu ≤ 1", ratio(get, getscu), get.zip(getscu).map(|(a, b)| a <= b));
    goal(
        "Lucent C-MOVE (commit at release) / movescu ≤ 1",
        ratio(move_, movescu),
        move_.zip(movescu).map(|(a, b)| a <= b),
    );
    goal("pynetdicom C-GET / Lucent C-GET ≥ 6", ratio(pynet, get), pynet.zip(get).map(|(p, l)| p / l >= 6.0));
    goal("Lucent WADO-RS / curl ≤ 1.5", ratio(wado, curl), wado.zip(curl).map(|(a, b)| a / b <= 1.5));
}

/// Occurrences of `needle` (SIMD search: counting must not weigh on curl's time).
fn memchr_count(haystack: &[u8], needle: &[u8]) -> usize {
    memchr::memmem::find_iter(haystack, needle).count()
}
