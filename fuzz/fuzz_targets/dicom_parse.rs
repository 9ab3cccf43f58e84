//! Fuzz target `dicom_parse`: the DICOM Part 10 reader (pacs::limits pre-scan, dicom-rs, header summary).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pacs::fuzzing::dicom_parse(data);
});
