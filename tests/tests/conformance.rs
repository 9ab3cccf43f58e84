//! Conformance on real files: every file of pydicom-data and of pydicom's test files either
//! decodes (shape and pixel checksum as recorded in `tests/data/conformance.tsv`) or fails with
//! the error recorded there. Lossless pairs decode bit-exactly. Pixel values after the modality
//! LUT match pydicom's (`tests/reference/pydicom_reference.jsonl`, made once by
//! `tests/reference/pydicom_reference.py`).
//!
//! `LUCENT_BLESS=1 cargo test -p lucent-tests --test conformance` rewrites the expectations;
//! review the diff before committing it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lucent_tests::{samples_checksum, test_data, walk_files, workspace_root};
use pacs::{Frame, Photometric};

/// One file's outcome, as one line of the expectations file.
fn outcome(path: &Path) -> String {
    let obj = match pacs::file::open(path) {
        Ok(obj) => obj,
        Err(e) => return format!("error\t{e}"),
    };
    let frames = pacs::decode::frame_count(&obj);
    let mut checksum = 0u64;
    let mut first: Option<Frame> = None;
    for f in 0..frames {
        match pacs::decode::decode_frame(&obj, f) {
            Ok(frame) => {
                checksum = checksum.rotate_left(5) ^ samples_checksum(&frame.samples);
                if first.is_none() {
                    first = Some(frame);
                }
            }
            Err(e) => return format!("error\tframe {f}: {e}"),
        }
    }
    let Some(frame) = first else { return "error\tno frames".into() };
    format!(
        "ok\t{}x{}x{}x{}\t{:?}\t{}\t{checksum:016x}",
        frame.columns,
        frame.rows,
        frames,
        frame.samples_per_pixel,
        frame.photometric,
        frame.samples.type_name()
    )
}

fn corpus() -> Option<Vec<(String, PathBuf)>> {
    let data = test_data("pydicom-data")?;
    let tests = test_data("pydicom-test-files")?;
    let mut files: Vec<(String, PathBuf)> =
        walk_files(&data).into_iter().map(|(rel, p)| (format!("pydicom-data/{rel}"), p)).collect();
    files.extend(walk_files(&tests).into_iter().map(|(rel, p)| (format!("pydicom/{rel}"), p)));
    Some(files)
}

#[test]
fn every_corpus_file_decodes_or_fails_as_expected() {
    let Some(files) = corpus() else { return };
    let expectations_path = workspace_root().join("tests/data/conformance.tsv");
    let actual: BTreeMap<String, String> = files.iter().map(|(name, path)| (name.clone(), outcome(path))).collect();

    if std::env::var("LUCENT_BLESS").is_ok_and(|v| v == "1") {
        let mut text = String::from(
            "# file\toutcome\t(ok: columns x rows x frames x samples, photometric, type, checksum | error: message)\n",
        );
        for (name, line) in &actual {
            text.push_str(&format!("{name}\t{line}\n"));
        }
        std::fs::write(&expectations_path, text).unwrap();
    }
    let expected_text = std::fs::read_to_string(&expectations_path).unwrap();
    let expected: BTreeMap<String, String> = expected_text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split_once('\t').map(|(a, b)| (a.to_owned(), b.to_owned())))
        .collect();

    let mut mismatches = Vec::new();
    for (name, line) in &actual {
        match expected.get(name) {
            Some(e) if e == line => {}
            Some(e) => mismatches.push(format!("{name}:\n  expected {e}\n  actual   {line}")),
            None => mismatches.push(format!("{name}: not in conformance.tsv (actual {line})")),
        }
    }
    for name in expected.keys().filter(|k| !actual.contains_key(*k)) {
        mismatches.push(format!("{name}: listed but not in the corpus"));
    }
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));

    let ok = actual.values().filter(|l| l.starts_with("ok")).count();
    println!("conformance: {ok} of {} files decode, {} fail as expected", actual.len(), actual.len() - ok);
    // Error messages must say what is wrong, not just "error".
    for (name, line) in &actual {
        if let Some(msg) = line.strip_prefix("error\t") {
            assert!(msg.len() > 12, "{name}: unclear error {msg:?}");
        }
    }
}

fn decode_first(path: &Path) -> pacs::DecodedImage {
    pacs::file::load_image(path, 0).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Same shape and the same value at every sample (types may differ: e.g. 16-bit signed vs unsigned containers).
fn assert_same_pixels(a: &Frame, b: &Frame, what: &str) {
    assert_eq!(
        (a.columns, a.rows, a.samples_per_pixel, a.photometric),
        (b.columns, b.rows, b.samples_per_pixel, b.photometric),
        "{what}: shape"
    );
    let differing: Vec<usize> =
        (0..a.samples.len()).filter(|&i| a.samples.get_f64(i) != b.samples.get_f64(i)).collect();
    if let Some(&first) = differing.first() {
        panic!(
            "{what}: {} of {} samples differ; first at {first}: {} vs {} ({} vs {})",
            differing.len(),
            a.samples.len(),
            a.samples.get_f64(first),
            b.samples.get_f64(first),
            a.samples.type_name(),
            b.samples.type_name()
        );
    }
}

#[test]
fn lossless_pairs_decode_bit_exactly() {
    let Some(data) = test_data("pydicom-data") else { return };
    let Some(tests) = test_data("pydicom-test-files") else { return };
    let groups: &[&[&str]] = &[
        &["RG1_UNCR.dcm", "RG1_J2KR.dcm"],
        &["RG3_UNCR.dcm", "RG3_J2KR.dcm"],
        &["693_UNCR.dcm", "693_J2KR.dcm"],
        &["MR2_UNCR.dcm", "MR2_J2KR.dcm"],
        &["US1_UNCR.dcm", "US1_J2KR.dcm"],
        &[
            "emri_small.dcm",
            "emri_small_RLE.dcm",
            "emri_small_big_endian.dcm",
            "emri_small_jpeg_2k_lossless.dcm",
            "emri_small_jpeg_ls_lossless.dcm",
        ],
    ];
    for group in groups {
        let reference = pacs::file::open(&data.join(group[0])).unwrap();
        let frames = pacs::decode::frame_count(&reference);
        for other in &group[1..] {
            let obj = pacs::file::open(&data.join(other)).unwrap();
            assert_eq!(pacs::decode::frame_count(&obj), frames, "{other}");
            for f in 0..frames {
                let a = pacs::decode::decode_frame(&reference, f).unwrap();
                let b = pacs::decode::decode_frame(&obj, f).unwrap();
                assert_same_pixels(&a, &b, &format!("{other} frame {f} vs {}", group[0]));
            }
        }
    }
    // pydicom's own lossless variants of MR_small.
    let mr = decode_first(&tests.join("MR_small.dcm")).frame;
    for other in [
        "MR_small_RLE.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_expb.dcm",
    ] {
        assert_same_pixels(&decode_first(&tests.join(other)).frame, &mr, other);
    }
}

/// Lossy transfer syntaxes: two conforming decoders may differ by a grey level or two.
const LOSSY: &[&str] =
    &["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91"];

#[derive(serde::Deserialize)]
struct Reference {
    file: String,
    ok: bool,
    #[serde(default)]
    transfer_syntax: String,
    #[serde(default)]
    rows: u32,
    #[serde(default)]
    columns: u32,
    #[serde(default)]
    samples_per_pixel: u16,
    #[serde(default)]
    photometric_out: String,
    #[serde(default)]
    min: f64,
    #[serde(default)]
    max: f64,
    #[serde(default)]
    mean: f64,
    #[serde(default)]
    samples: Vec<(usize, f64)>,
}

#[test]
fn modality_values_match_pydicom() {
    let Some(files) = corpus() else { return };
    let paths: BTreeMap<String, PathBuf> = files.into_iter().collect();
    let text = std::fs::read_to_string(workspace_root().join("tests/reference/pydicom_reference.jsonl")).unwrap();
    // Deliberate differences, each with its reason (file, reason).
    let differences_text =
        std::fs::read_to_string(workspace_root().join("tests/data/pydicom_differences.tsv")).unwrap();
    let differences: BTreeMap<&str, &str> = differences_text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split_once('\t'))
        .collect();
    let mut compared = 0;
    let mut failures = Vec::new();
    let mut explained = 0;
    for line in text.lines() {
        let r: Reference = serde_json::from_str(line).unwrap();
        if !r.ok || differences.contains_key(r.file.as_str()) {
            explained += usize::from(r.ok);
            continue;
        }
        let lossy = LOSSY.contains(&r.transfer_syntax.as_str());
        let path = &paths[&r.file];
        let image = match pacs::file::load_image(path, 0) {
            Ok(i) => i,
            Err(e) => {
                failures.push(format!("{}: pydicom decodes it, we fail: {e}", r.file));
                continue;
            }
        };
        let frame = &image.frame;
        if (frame.columns, frame.rows, frame.samples_per_pixel) != (r.columns, r.rows, r.samples_per_pixel) {
            failures.push(format!(
                "{}: shape {}x{}x{} vs pydicom {}x{}x{}",
                r.file, frame.columns, frame.rows, frame.samples_per_pixel, r.columns, r.rows, r.samples_per_pixel
            ));
            continue;
        }
        let values: Vec<f64> = if frame.photometric.is_monochrome() {
            image.transform.modality_values(frame).into_iter().map(f64::from).collect()
        } else {
            assert!(
                frame.photometric != Photometric::Rgb || r.photometric_out == "RGB",
                "{}: pydicom kept {} where we give RGB",
                r.file,
                r.photometric_out
            );
            (0..frame.samples.len()).map(|i| frame.samples.get_f64(i)).collect()
        };
        let tolerance = |v: f64| if lossy { 2.0 } else { 1e-3_f64.max(v.abs() * 1e-5) };
        let mean_tolerance = if lossy { 0.05 } else { 1e-4 * r.mean.abs().max(1.0) };
        let mut bad = Vec::new();
        for &(index, expected) in &r.samples {
            let got = values[index];
            if (got - expected).abs() > tolerance(expected) {
                bad.push(format!("[{index}] {got} vs {expected}"));
            }
        }
        let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        if (lo - r.min).abs() > tolerance(r.min)
            || (hi - r.max).abs() > tolerance(r.max)
            || (mean - r.mean).abs() > mean_tolerance
        {
            bad.push(format!("min/max/mean {lo}/{hi}/{mean} vs {}/{}/{}", r.min, r.max, r.mean));
        }
        if !bad.is_empty() {
            failures.push(format!("{}: {}", r.file, bad.iter().take(4).cloned().collect::<Vec<_>>().join(", ")));
        }
        compared += 1;
    }
    println!("compared {compared} files with pydicom; {explained} documented differences");
    for name in differences.keys() {
        assert!(paths.contains_key(*name), "pydicom_differences.tsv lists {name}, which is not in the corpus");
    }
    assert!(failures.is_empty(), "{} files differ from pydicom:\n{}", failures.len(), failures.join("\n"));
    assert!(compared > 100, "only {compared} files compared");
}
