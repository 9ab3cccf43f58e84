//! Hostile files and peers: sizes taken from a file or a peer are checked against the bytes that
//! are there and against limits before anything is allocated; nesting is bounded before dicom-rs
//! recurses; a bad file is skipped with its reason and the rest of the folder goes on;
//! non-finite rescale values are errors; the Store SCP listens on loopback, refuses every calling
//! AE with an empty allow-list, caps data sets, limits connections per peer, closes silent
//! connections, and never answers Success for pixel data shorter than its header says.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use pacs::import::{ImportOptions, import_paths};
use pacs::net::{self, PacsNode, ScpConfig};
use pacs::store::Store;
use pacs::synth::{self, RadiographSpec};

/// A small native explicit VR little endian radiograph.
fn radiograph(path: &Path, seed: &str, size: u16) -> PathBuf {
    synth::write_radiograph(path, &RadiographSpec::chest(seed, size)).unwrap();
    assert_eq!(pacs::file::read_info(path).unwrap().transfer_syntax_uid, "1.2.840.10008.1.2.1");
    path.to_path_buf()
}

/// Where the data set starts: after the preamble, "DICM" and the file meta group.
fn data_set_start(bytes: &[u8]) -> usize {
    assert_eq!(&bytes[128..132], b"DICM");
    assert_eq!(&bytes[132..136], &[0x02, 0x00, 0x00, 0x00], "file meta group length first");
    let group_len = u32::from_le_bytes([bytes[140], bytes[141], bytes[142], bytes[143]]) as usize;
    144 + group_len
}

/// `file` with `insert` placed at the start of its data set.
fn spliced(file: &Path, insert: &[u8]) -> Vec<u8> {
    let bytes = std::fs::read(file).unwrap();
    let at = data_set_start(&bytes);
    [&bytes[..at], insert, &bytes[at..]].concat()
}

/// A Referenced Series Sequence nested `depth` deep, all lengths undefined (explicit VR LE).
fn nested_sequences(depth: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(depth * 24);
    for _ in 0..depth {
        out.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    for _ in 0..depth {
        out.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        out.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    }
    out
}

fn import_folder(store: &mut Store, dir: &Path) -> pacs::import::ImportSummary {
    let cancel = AtomicBool::new(false);
    import_paths(store, &[dir.to_path_buf()], &ImportOptions { threads: 2, batch: 8 }, &|_| {}, &cancel).unwrap()
}

#[test]
fn a_sequence_nested_ten_thousand_deep_is_refused_before_it_can_overflow_the_stack() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let good = radiograph(&src.join("good.dcm"), "deep-good", 32);
    let deep = spliced(&good, &nested_sequences(10_000));
    let deep_path = src.join("deep.dcm");
    std::fs::write(&deep_path, &deep).unwrap();

    for err in [
        pacs::file::read_info(&deep_path).unwrap_err(),
        pacs::file::open(&deep_path).unwrap_err(),
        pacs::file::read_info_bytes(&deep).unwrap_err(),
        pacs::file::open_bytes(&deep).unwrap_err(),
    ] {
        assert!(matches!(err, pacs::Error::LimitExceeded { what: "sequence nesting depth", .. }), "{err}");
    }
    // Real nesting (a few levels) still reads.
    let shallow = spliced(&good, &nested_sequences(5));
    assert!(pacs::file::read_info_bytes(&shallow).is_ok());

    // One such file in a folder costs that file, not the import of the others.
    let store_dir = dir.path().join("store");
    let mut store = Store::open(&store_dir).unwrap();
    let summary = import_folder(&mut store, &src);
    assert_eq!(summary.imported, 1, "{summary:?}");
    assert_eq!(summary.skipped.len(), 1);
    assert!(summary.skipped[0].reason.contains("nesting"), "{:?}", summary.skipped);
    assert!(store.check_consistency().unwrap().is_consistent(), "no orphan files");
}

#[test]
fn an_element_longer_than_the_bytes_that_hold_it_is_refused_before_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let good = radiograph(&dir.path().join("good.dcm"), "long-element", 32);
    // A private OB element that claims almost 4 GiB, in a file of a few kilobytes.
    let claim = [0x09, 0x00, 0x10, 0x10, b'O', b'B', 0, 0, 0xF0, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4];
    let bytes = spliced(&good, &claim);
    let path = dir.path().join("long.dcm");
    std::fs::write(&path, &bytes).unwrap();
    for err in [pacs::file::read_info(&path).unwrap_err(), pacs::file::read_info_bytes(&bytes).unwrap_err()] {
        assert!(err.to_string().contains("(0009,1010) claims 4294967280 bytes"), "{err}");
    }
}

/// `src` rewritten with `edits` (tag, VR, value).
fn edited(src: &Path, dst: &Path, edits: Vec<DataElement<dicom_object::InMemDicomObject>>) -> PathBuf {
    let mut obj = dicom_object::open_file(src).unwrap();
    for e in edits {
        obj.put(e);
    }
    obj.write_to_file(dst).unwrap();
    dst.to_path_buf()
}

#[test]
fn a_frame_larger_than_the_limit_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let good = radiograph(&dir.path().join("good.dcm"), "huge-frame", 32);
    // 65535 x 65535 RGB at 16 bits: 25.8 GB asked for by a file of a few kilobytes.
    let huge = edited(
        &good,
        &dir.path().join("huge.dcm"),
        vec![
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(65535_u16)),
            DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(65535_u16)),
            DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(3_u16)),
            DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from("RGB")),
        ],
    );
    let err = pacs::file::load_image(&huge, 0).unwrap_err();
    assert!(matches!(err, pacs::Error::LimitExceeded { what: "decoded frame", .. }), "{err}");
}

#[test]
fn non_finite_rescale_values_are_errors_never_slope_one_intercept_zero() {
    let dir = tempfile::tempdir().unwrap();
    let good = radiograph(&dir.path().join("good.dcm"), "rescale", 32);
    assert!(pacs::file::load_image(&good, 0).is_ok());
    for (name, tag, value) in [
        ("RescaleSlope", tags::RESCALE_SLOPE, "NaN"),
        ("RescaleIntercept", tags::RESCALE_INTERCEPT, "inf"),
        ("RescaleSlope", tags::RESCALE_SLOPE, "0"),
    ] {
        let bad = edited(
            &good,
            &dir.path().join(format!("{name}-{value}.dcm")),
            vec![DataElement::new(tag, VR::DS, PrimitiveValue::from(value))],
        );
        let info = pacs::file::read_info(&bad).unwrap();
        assert!(info.unusable_attributes.iter().any(|a| a == name), "{name}={value}: {info:?}");
        let err = pacs::file::load_image(&bad, 0).unwrap_err();
        assert!(err.to_string().contains(name), "{name}={value}: {err}");
    }
}

/// A ZIP holding `entries`, deflated.
fn zip_of(path: &Path, entries: &[(&str, &[u8])]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

/// Sets the uncompressed size every local and central header of `path` declares.
fn declare_uncompressed_size(path: &Path, size: u32) {
    let mut bytes = std::fs::read(path).unwrap();
    for (signature, offset) in [(b"PK\x03\x04", 22), (b"PK\x01\x02", 24)] {
        let at = memchr::memmem::find_iter(&bytes, signature).collect::<Vec<_>>();
        assert!(!at.is_empty());
        for start in at {
            bytes[start + offset..start + offset + 4].copy_from_slice(&size.to_le_bytes());
        }
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn zip_entries_are_capped_whatever_they_declare() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(radiograph(&dir.path().join("good.dcm"), "zip", 32)).unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // An archive that declares 4 GiB inflated: refused whole before anything is inflated.
    let bomb = src.join("bomb.zip");
    zip_of(&bomb, &[("a.dcm", &good)]);
    declare_uncompressed_size(&bomb, u32::MAX);
    // An entry that inflates past what it declares: cut off and refused.
    let liar = src.join("liar.zip");
    zip_of(&liar, &[("b.dcm", &good)]);
    declare_uncompressed_size(&liar, 1000);
    let mut store = Store::open(&dir.path().join("store")).unwrap();
    let summary = import_folder(&mut store, &src);
    assert_eq!(summary.imported, 0, "{summary:?}");
    let reasons: Vec<&str> = summary.skipped.iter().map(|s| s.reason.as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("inflated ZIP archive")), "{reasons:?}");
    assert!(summary.skipped.iter().any(|s| s.path.contains("liar.zip")), "{reasons:?}");
    assert!(store.check_consistency().unwrap().is_consistent());
}

fn scp_config() -> ScpConfig {
    let mut config = ScpConfig::new("LUCENT", 0);
    config.allowed_calling_aes = vec!["LUCENT-SCU".into()];
    config
}

fn node_for(scp: &net::ScpHandle) -> PacsNode {
    PacsNode::new("self", "LUCENT", "127.0.0.1", scp.local_addr().port(), "LUCENT-SCU")
}

#[test]
fn the_scp_listens_on_loopback_and_an_empty_allow_list_refuses_every_caller() {
    let dir = tempfile::tempdir().unwrap();
    let file = radiograph(&dir.path().join("a.dcm"), "allow", 32);
    let (scp, _events) = net::start_scp(&ScpConfig::new("LUCENT", 0), &dir.path().join("store")).unwrap();
    assert!(scp.local_addr().ip().is_loopback(), "{}", scp.local_addr());
    let err = net::store_files(&node_for(&scp), &[file], &mut |_| {}, &AtomicBool::new(false)).unwrap_err();
    assert!(matches!(err, pacs::Error::AssociationRejected { .. }), "{err}");
    assert_eq!(Store::open(&dir.path().join("store")).unwrap().counts().unwrap().instances, 0);
}

#[test]
fn the_scp_caps_each_data_set() {
    let dir = tempfile::tempdir().unwrap();
    let big = radiograph(&dir.path().join("big.dcm"), "cap-big", 128);
    let small = radiograph(&dir.path().join("small.dcm"), "cap-small", 16);
    let mut config = scp_config();
    config.max_data_set_bytes = 16 * 1024;
    let (scp, _events) = net::start_scp(&config, &dir.path().join("store")).unwrap();
    let never = AtomicBool::new(false);
    let refused = net::store_files(&node_for(&scp), std::slice::from_ref(&big), &mut |_| {}, &never);
    assert!(refused.as_ref().map_or(true, |r| r.sent == 0), "{refused:?}");
    // The SCP goes on serving.
    let report = net::store_files(&node_for(&scp), std::slice::from_ref(&small), &mut |_| {}, &never).unwrap();
    assert_eq!(report.sent, 1, "{report:?}");
    let store = Store::open(&dir.path().join("store")).unwrap();
    assert_eq!(store.counts().unwrap().instances, 1);
}

#[test]
fn silent_connections_cannot_keep_the_scp_from_others() {
    let dir = tempfile::tempdir().unwrap();
    let file = radiograph(&dir.path().join("a.dcm"), "silent", 16);
    let mut config = scp_config();
    config.max_associations_per_peer = 3;
    config.handshake_timeout_s = 1.0;
    let (scp, _events) = net::start_scp(&config, &dir.path().join("store")).unwrap();
    let addr = scp.local_addr();
    // Sixteen connections that never say anything: one peer gets three slots, the rest are closed.
    let mut silent: Vec<std::net::TcpStream> = (0..16).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    let mut closed_at_once = 0;
    for s in &mut silent {
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        if matches!(s.read(&mut [0u8; 1]), Ok(0)) {
            closed_at_once += 1;
        }
    }
    assert!(closed_at_once >= 13, "{closed_at_once} of 16 closed at once");
    // The silent ones still held are closed after the handshake timeout...
    let started = Instant::now();
    for s in &mut silent {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.read(&mut [0u8; 1]);
    }
    assert!(started.elapsed() < Duration::from_secs(4), "silent connections held {:?}", started.elapsed());
    // ...and a real sender gets in while the idle sockets are still open on its side.
    let report = net::store_files(&node_for(&scp), &[file], &mut |_| {}, &AtomicBool::new(false)).unwrap();
    assert_eq!(report.sent, 1, "{report:?}");
    drop(silent);
}

#[test]
fn pixel_data_shorter_than_its_header_is_never_answered_success() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(radiograph(&dir.path().join("good.dcm"), "short", 64)).unwrap();
    let at = memchr::memmem::rfind(&good, &[0xE0, 0x7F, 0x10, 0x00]).unwrap();
    let len_at = at + 8;
    let len = u32::from_le_bytes(good[len_at..len_at + 4].try_into().unwrap()) as usize;
    assert_eq!(len, 64 * 64 * 2);
    // Cut 3,000 bytes: once leaving the element's length as it was, once shortening it too.
    let truncated = good[..good.len() - 3000].to_vec();
    let mut consistent = truncated.clone();
    consistent[len_at..len_at + 4].copy_from_slice(&((len - 3000) as u32).to_le_bytes());
    let files: Vec<PathBuf> = [("truncated.dcm", truncated), ("consistent.dcm", consistent)]
        .into_iter()
        .map(|(name, bytes)| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect();
    let (scp, _events) = net::start_scp(&scp_config(), &dir.path().join("store")).unwrap();
    for file in &files {
        let outcome =
            net::store_files(&node_for(&scp), std::slice::from_ref(file), &mut |_| {}, &AtomicBool::new(false));
        assert!(outcome.as_ref().map_or(true, |r| r.sent == 0), "{}: {outcome:?}", file.display());
    }
    assert_eq!(Store::open(&dir.path().join("store")).unwrap().counts().unwrap().instances, 0);
}

/// `file` re-encoded as Deflated Explicit VR Little Endian, with `insert` at the start of its data
/// set (the file meta rewritten for the new transfer syntax).
fn deflated_with(file: &Path, insert: &[u8]) -> Vec<u8> {
    const DEFLATED: &[u8] = b"1.2.840.10008.1.2.1.99";
    let bytes = std::fs::read(file).unwrap();
    let start = data_set_start(&bytes);
    // Meta elements after the group length, with (0002,0010) replaced.
    let mut meta = Vec::new();
    let mut pos = 144;
    while pos < start {
        let tag = [bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]];
        let vr = [bytes[pos + 4], bytes[pos + 5]];
        let (header, len) = if matches!(&vr, b"OB" | b"UN" | b"UT" | b"SQ") {
            (12, u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize)
        } else {
            (8, usize::from(u16::from_le_bytes([bytes[pos + 6], bytes[pos + 7]])))
        };
        if tag == [0x02, 0x00, 0x10, 0x00] {
            meta.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
            meta.extend_from_slice(&(DEFLATED.len() as u16).to_le_bytes());
            meta.extend_from_slice(DEFLATED);
        } else {
            meta.extend_from_slice(&bytes[pos..pos + header + len]);
        }
        pos += header + len;
    }
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(insert).unwrap();
    encoder.write_all(&bytes[start..]).unwrap();
    let compressed = encoder.finish().unwrap();
    let mut out = bytes[..132].to_vec();
    out.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&compressed);
    out
}

#[test]
fn deep_nesting_inside_a_deflated_data_set_is_refused_too() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let good = radiograph(&src.join("good.dcm"), "deflated-good", 32);
    // The same image deflated reads as before: the pre-scan inflates what dicom-rs will parse.
    let plain = deflated_with(&good, &[]);
    let info = pacs::file::read_info_bytes(&plain).unwrap();
    assert_eq!(info.transfer_syntax_uid, "1.2.840.10008.1.2.1.99");
    let deep = deflated_with(&good, &nested_sequences(10_000));
    std::fs::write(src.join("deep-deflated.dcm"), &deep).unwrap();
    for err in [
        pacs::file::read_info_bytes(&deep).unwrap_err(),
        pacs::file::read_info(&src.join("deep-deflated.dcm")).unwrap_err(),
        pacs::file::open(&src.join("deep-deflated.dcm")).unwrap_err(),
    ] {
        assert!(matches!(err, pacs::Error::LimitExceeded { what: "sequence nesting depth", .. }), "{err}");
    }
    let mut store = Store::open(&dir.path().join("store")).unwrap();
    let summary = import_folder(&mut store, &src);
    assert_eq!((summary.imported, summary.skipped.len()), (1, 1), "{summary:?}");
}
