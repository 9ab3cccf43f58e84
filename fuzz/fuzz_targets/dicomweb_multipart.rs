//! Fuzz target `dicomweb_multipart`: the DICOMweb multipart/related reader (WADO-RS responses).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pacs::fuzzing::dicomweb_multipart(data);
});
