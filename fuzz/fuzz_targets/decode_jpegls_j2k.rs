//! Fuzz target `decode_jpegls_j2k`: parse + decode frame 0, seeded with JPEG-LS and JPEG 2000 files (CharLS, OpenJPEG).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pacs::fuzzing::decode_frame(data);
});
