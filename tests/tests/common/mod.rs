//! Helpers shared by the network tests (DIMSE and DICOMweb): the throw-away Orthanc and DCMTK
//! ([`orthanc`]), throw-away certificates for DICOM TLS ([`tls`]), the compressed test files, and
//! checks that what arrived in a store is what was sent.

#![allow(dead_code)] // each test binary uses part of it

pub mod orthanc;
pub mod tls;

use std::path::PathBuf;

use lucent_tests::test_data;
use pacs::store::Store;

/// Compressed real files, one per transfer syntax, when the corpora are provisioned.
pub fn compressed_files() -> Option<Vec<PathBuf>> {
    let data = test_data("pydicom-data")?;
    let tests = test_data("pydicom-test-files")?;
    Some(vec![
        data.join("693_J2KR.dcm"),                    // JPEG 2000 lossless (CT)
        data.join("US1_J2KI.dcm"),                    // JPEG 2000 (US)
        data.join("JPEG-LL.dcm"),                     // JPEG lossless SV1 (NM)
        data.join("emri_small_jpeg_ls_lossless.dcm"), // JPEG-LS lossless (enhanced MR, multi-frame)
        data.join("OBXXXX1A_rle.dcm"),                // RLE (US)
        tests.join("SC_rgb_jpeg_dcmtk.dcm"),          // JPEG baseline (SC)
        tests.join("JPGExtended.dcm"),                // JPEG extended (NM)
        tests.join("image_dfl.dcm"),                  // deflated explicit VR LE
    ])
}

/// SOP instance UID -> path of every instance in the store.
pub fn store_instances(store: &Store) -> std::collections::BTreeMap<String, PathBuf> {
    let mut out = std::collections::BTreeMap::new();
    for study in store.studies(&Default::default()).unwrap() {
        for series in store.series(&study.study_uid).unwrap() {
            for i in store.instances(&series.series_uid).unwrap() {
                out.insert(i.sop_uid, i.path);
            }
        }
    }
    out
}

/// Checks every file of `sources` is in the store, in the same transfer syntax, with the same
/// elements and identical Pixel Data bytes (group lengths, which a sender may recompute, aside).
pub fn assert_identical_in_store(store: &Store, sources: &[PathBuf]) {
    let stored = store_instances(store);
    for source in sources {
        let info = pacs::file::read_info(source).unwrap();
        let path = stored
            .get(&info.sop_instance_uid)
            .unwrap_or_else(|| panic!("{} ({}) is not in the store", source.display(), info.sop_instance_uid));
        let (a, b) = (pacs::file::open(source).unwrap(), pacs::file::open(path).unwrap());
        assert_eq!(a.meta().transfer_syntax(), b.meta().transfer_syntax(), "{}", source.display());
        if let Err(tag) = same_elements(&a, &b) {
            panic!("{}: element {tag} differs after the transfer", source.display());
        }
    }
}

/// Compares two data sets element by element, recursing into sequences (whose encoded lengths
/// may legitimately change), skipping group lengths. Err(tag) at the first difference.
pub fn same_elements(a: &dicom_object::InMemDicomObject, b: &dicom_object::InMemDicomObject) -> Result<(), String> {
    let keep = |o: &dicom_object::InMemDicomObject| -> Vec<dicom_object::mem::InMemElement> {
        o.iter().filter(|e| e.header().tag.element() != 0x0000).cloned().collect()
    };
    let (ea, eb) = (keep(a), keep(b));
    if ea.len() != eb.len() {
        return Err(format!("count {} vs {}", ea.len(), eb.len()));
    }
    for (x, y) in ea.iter().zip(&eb) {
        let tag = x.header().tag;
        if tag != y.header().tag {
            return Err(format!("{tag} vs {}", y.header().tag));
        }
        match (x.items(), y.items()) {
            (Some(ia), Some(ib)) => {
                if ia.len() != ib.len() {
                    return Err(tag.to_string());
                }
                for (p, q) in ia.iter().zip(ib) {
                    same_elements(p, q).map_err(|inner| format!("{tag} > {inner}"))?;
                }
            }
            _ => {
                let same = match (x.value().fragments(), y.value().fragments()) {
                    (Some(fa), Some(fb)) => fa == fb,
                    _ => x.value() == y.value(),
                };
                if !same {
                    return Err(tag.to_string());
                }
            }
        }
    }
    Ok(())
}
