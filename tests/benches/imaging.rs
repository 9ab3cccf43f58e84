//! Imaging benchmark: Lucent's `pacs` against Python peers (pydicom + numpy + pylibjpeg) on the
//! same files, printed as one table. Run with `cargo bench -p lucent-tests --bench imaging`
//! (or `cargo xtask bench`, which first creates the Python venv and fetches the corpora).
//!
//! Cases:
//! 1. A synthetic 300-slice 512x512 CT (`pacs::synth`, shuffled file names, generated once into
//!    `target/lucent-bench/ct300`) to one HU volume: `volume::scan_series` + `load_stack` on
//!    [`THREADS`] threads, against `peers/series.py` (dcmread every file, sort by
//!    ImagePositionPatient on the slice normal, stack `pixel_array` with numpy, rescale).
//! 2. `RG1_J2KR.dcm` (pydicom-data, JPEG 2000 lossless): `file::load_image` against
//!    `peers/decode.py` (`pixel_array` through pylibjpeg-openjpeg).
//! 3. The real ACRIN chest CT (`../shared/data/ct-acrin-chest`, 135 JPEG-LS files):
//!    `volume::load_series` against `peers/series.py` through pylibjpeg-libjpeg.
//!
//! How: every run is a fresh child process (this binary re-run as `--child CASE PATH`, or the
//! Python script under `target/lucent-data/venv`) that times its own work (start-up and imports
//! excluded), then prints its peak RSS (VmHWM from /proc/self/status; ru_maxrss in Python), the
//! size of what it built and a checksum of the values, so both sides are known to agree.
//! One warm-up run per side is discarded (it also warms the page cache), then 5 runs are
//! measured (3 when the warm-up took longer than [`SLOW_RUN_S`]). The table shows median wall
//! times and the largest peak RSS of the measured runs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails fast and loudly

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use lucent_tests::{real_data, workspace_root};
use pacs::synth::{self, CtSeriesSpec};
use pacs::volume::{self, Volume};

/// Decode threads Lucent is given (the Python peers are single-threaded).
const THREADS: usize = 2;
/// Measured runs, and the fewer runs used when one run takes longer than `SLOW_RUN_S`.
const RUNS: usize = 5;
const SLOW_RUNS: usize = 3;
const SLOW_RUN_S: f64 = 20.0;
const VENV_HINT: &str = "python peer unavailable: create it with `cargo xtask bench` (or `python3 -m venv \
                         target/lucent-data/venv && target/lucent-data/venv/bin/pip install pydicom==3.0.2 numpy \
                         pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle`)";

/// What one child run reports.
#[derive(Debug, Clone, Copy)]
struct Run {
    seconds: f64,
    peak_kib: u64,
    bytes: u64,
    threads: u64,
    checksum: i64,
}

impl Run {
    fn line(&self) -> String {
        format!(
            "RESULT seconds={:.6} peak_kib={} bytes={} threads={} checksum={}",
            self.seconds, self.peak_kib, self.bytes, self.threads, self.checksum
        )
    }

    fn parse(stdout: &str) -> Option<Self> {
        let line = stdout.lines().rev().find_map(|l| l.strip_prefix("RESULT "))?;
        let field =
            |name: &str| line.split_whitespace().find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')));
        Some(Self {
            seconds: field("seconds")?.parse().ok()?,
            peak_kib: field("peak_kib")?.parse().ok()?,
            bytes: field("bytes")?.parse().ok()?,
            threads: field("threads")?.parse().ok()?,
            checksum: field("checksum")?.parse().ok()?,
        })
    }
}

/// Median (and range of) time and largest peak of the measured runs of one side of a case.
struct Stats {
    median_s: f64,
    min_s: f64,
    max_s: f64,
    runs: usize,
    peak_kib: u64,
    bytes: u64,
    threads: u64,
    checksum: i64,
}

/// Runs `command` once as a warm-up and then RUNS (or SLOW_RUNS) times.
fn measure(mut command: impl FnMut() -> Command) -> Result<Stats, String> {
    let mut once = || -> Result<Run, String> {
        let out = command().output().map_err(|e| format!("cannot start: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        match Run::parse(&stdout) {
            Some(run) if out.status.success() => Ok(run),
            _ => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                Err(format!("failed ({}): {}", out.status, stderr.lines().last().unwrap_or("no output")))
            }
        }
    };
    let warm_up = once()?;
    let count = if warm_up.seconds > SLOW_RUN_S { SLOW_RUNS } else { RUNS };
    let runs = (0..count).map(|_| once()).collect::<Result<Vec<_>, _>>()?;
    let mut times: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
    times.sort_by(f64::total_cmp);
    let last = runs[runs.len() - 1];
    Ok(Stats {
        median_s: times[times.len() / 2],
        min_s: times[0],
        max_s: times[times.len() - 1],
        runs: runs.len(),
        peak_kib: runs.iter().map(|r| r.peak_kib).max().unwrap_or(0),
        bytes: last.bytes,
        threads: last.threads,
        checksum: last.checksum,
    })
}

/// Peak resident set size of this process so far, KiB.
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

fn dcm_files(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).expect("read series folder");
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.expect("read folder entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
        .collect();
    paths.sort();
    paths
}

/// Sum of the rounded modality values (HU) of every voxel.
fn hu_checksum(volume: &Volume) -> i64 {
    let [columns, rows, slices] = volume.dims();
    let mut sum = 0i64;
    for k in 0..slices {
        for j in 0..rows {
            for i in 0..columns {
                sum += volume.value_at(i, j, k).round() as i64;
            }
        }
    }
    sum
}

/// One measured run of a Lucent case, in this (child) process.
fn child(case: &str, path: &Path) -> Run {
    let start = Instant::now();
    let volumes: Vec<Volume> = match case {
        "volume" => {
            let plan = volume::scan_series(&dcm_files(path), THREADS).expect("scan").remove(0);
            vec![volume::load_stack(plan, THREADS, None).expect("load_stack")]
        }
        "series" => volume::load_series(&dcm_files(path), THREADS).expect("load_series"),
        "image" => {
            let image = pacs::file::load_image(path, 0).expect("load_image");
            let seconds = start.elapsed().as_secs_f64();
            let peak_kib = vm_hwm_kib();
            let samples = &image.frame.samples;
            let bytes = sample_bytes(samples);
            let checksum = (0..samples.len()).map(|i| samples.get_f64(i) as i64).sum();
            return Run { seconds, peak_kib, bytes, threads: 1, checksum };
        }
        other => panic!("unknown case {other:?}"),
    };
    let seconds = start.elapsed().as_secs_f64();
    let peak_kib = vm_hwm_kib();
    let bytes = volumes.iter().map(|v| v.voxels.size_bytes() as u64).sum();
    let checksum = volumes.iter().map(hu_checksum).sum();
    Run { seconds, peak_kib, bytes, threads: THREADS as u64, checksum }
}

fn sample_bytes(samples: &pacs::Samples) -> u64 {
    let width = match samples.type_name() {
        "u8" | "i8" => 1,
        "u16" | "i16" => 2,
        "u32" | "i32" | "f32" => 4,
        _ => 8,
    };
    (samples.len() * width) as u64
}

/// The synthetic series, generated once (into a temporary folder renamed when complete).
fn ct300(root: &Path) -> PathBuf {
    let dir = root.join("target/lucent-bench/ct300");
    if !dir.is_dir() {
        let tmp = root.join("target/lucent-bench/ct300.partial");
        let _ = std::fs::remove_dir_all(&tmp);
        eprintln!("generating the 300-slice synthetic CT into {} (once)...", dir.display());
        let spec = CtSeriesSpec { shuffle: true, ..CtSeriesSpec::chest("bench", 300, 512) };
        synth::write_ct_series(&tmp, &spec).expect("write the synthetic series");
        std::fs::rename(&tmp, &dir).expect("rename the synthetic series folder");
    }
    dir
}

struct Case {
    name: &'static str,
    /// The series folder or file, or why the row is skipped.
    input: Result<PathBuf, String>,
    /// The `--child` case that runs Lucent on it, and the peer script under `peers/`.
    child_case: &'static str,
    script: &'static str,
    /// A series (volume) row: RSS is compared with the volume's bytes.
    series: bool,
    speed_target: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let (case, path) = (&args[i + 1], Path::new(&args[i + 2]));
        println!("{}", child(case, path).line());
        return;
    }

    let root = workspace_root();
    let exe = std::env::current_exe().expect("current exe");
    let python = root.join("target/lucent-data/venv/bin/python");
    let has_python = python.is_file();
    let rg1 = std::env::var_os("LUCENT_TEST_DATA")
        .map_or_else(|| root.join("target/lucent-data"), PathBuf::from)
        .join("pydicom-data/RG1_J2KR.dcm");
    let cases = [
        Case {
            name: "CT 300x512x512 synthetic, shuffled",
            input: Ok(ct300(&root)),
            child_case: "volume",
            script: "series.py",
            series: true,
            speed_target: 5.0,
        },
        Case {
            name: "RG1_J2KR.dcm (J2K lossless)",
            input: if rg1.is_file() {
                Ok(rg1)
            } else {
                Err(format!("{} absent: run `cargo xtask setup`", rg1.display()))
            },
            child_case: "image",
            script: "decode.py",
            series: false,
            speed_target: 1.0,
        },
        Case {
            name: "ACRIN CT 135 JPEG-LS files",
            input: real_data("ct-acrin-chest").ok_or_else(|| "../shared/data/ct-acrin-chest absent".to_owned()),
            child_case: "series",
            script: "series.py",
            series: true,
            speed_target: 5.0,
        },
    ];

    let header = [
        "case",
        "Lucent median",
        "pydicom median",
        "speed-up",
        "Lucent peak RSS",
        "pydicom peak RSS",
        "volume bytes",
        "RSS/vol Lucent",
        "RSS/vol pydicom",
        "same values",
        "targets",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    let mut notes = Vec::new();
    for case in &cases {
        let input = match &case.input {
            Ok(input) => input,
            Err(why) => {
                let mut skipped = vec![case.name.to_owned(), format!("skipped: {why}")];
                skipped.resize(header.len(), String::new());
                rows.push(skipped);
                continue;
            }
        };
        eprintln!("measuring {} ...", case.name);
        let lucent = measure(|| {
            let mut c = Command::new(&exe);
            c.arg("--child").arg(case.child_case).arg(input);
            // As the lucent binary does: OpenJPEG's thread pool on all cores.
            if std::env::var_os("OPJ_NUM_THREADS").is_none() {
                c.env("OPJ_NUM_THREADS", "ALL_CPUS");
            }
            c
        })
        .unwrap_or_else(|e| panic!("Lucent {}: {e}", case.name));
        let peer = if has_python {
            measure(|| {
                let mut c = Command::new(&python);
                c.arg(root.join("tests/benches/peers").join(case.script)).arg(input);
                c
            })
        } else {
            Err(VENV_HINT.to_owned())
        };
        if let Err(e) = &peer {
            notes.push(format!("{}: pydicom peer: {e}", case.name));
        }
        rows.push(row(case, &lucent, peer.as_ref().ok()));
    }

    print_table(&rows);
    println!(
        "Lucent: {THREADS} decode threads; pydicom: 1 thread. Median [min-max] of the measured runs (n), one warm-up \
         run discarded; peak RSS = largest VmHWM / ru_maxrss of those runs, each run its own process."
    );
    println!(
        "Targets: series load >= 5x faster than pydicom, decoders at least as fast, peak RSS <= 1.3x volume bytes."
    );
    for note in notes {
        println!("note: {note}");
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn row(case: &Case, lucent: &Stats, peer: Option<&Stats>) -> Vec<String> {
    let time =
        |s: &Stats| format!("{:.3} s [{:.3}-{:.3}] {} thr n={}", s.median_s, s.min_s, s.max_s, s.threads, s.runs);
    let rss_ratio = |s: &Stats| s.peak_kib as f64 * 1024.0 / s.bytes as f64;
    let speed_up = peer.map(|p| p.median_s / lucent.median_s);
    let mut targets = Vec::new();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let label = if case.series { format!(">={:.0}x faster", case.speed_target) } else { "as fast".to_owned() };
    match speed_up {
        Some(x) => targets.push(format!("{label}: {}", verdict(x >= case.speed_target))),
        None => targets.push(format!("{label}: n/a")),
    }
    if case.series {
        targets.push(format!("RSS<=1.3x vol: {}", verdict(rss_ratio(lucent) <= 1.3)));
    }
    let na = || "n/a".to_owned();
    vec![
        case.name.to_owned(),
        time(lucent),
        peer.map_or_else(|| "unavailable".to_owned(), time),
        speed_up.map_or_else(na, |x| format!("{x:.2}x")),
        mib(lucent.peak_kib),
        peer.map_or_else(na, |p| mib(p.peak_kib)),
        if case.series { lucent.bytes.to_string() } else { format!("({} px bytes)", lucent.bytes) },
        if case.series { format!("{:.2}", rss_ratio(lucent)) } else { "-".to_owned() },
        match peer {
            Some(p) if case.series => format!("{:.2}", rss_ratio(p)),
            _ => "-".to_owned(),
        },
        peer.map_or_else(na, |p| if p.checksum == lucent.checksum { "yes" } else { "NO" }.to_owned()),
        targets.join("; "),
    ]
}

fn print_table(rows: &[Vec<String>]) {
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for (n, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        println!("| {} |", cells.join(" | "));
        if n == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            println!("|-{}-|", rule.join("-|-"));
        }
    }
}
