//! Fuzz target `decode_jpeg`: libjpeg-turbo through Lucent's JPEG wrapper (pacs/src/jpeg.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pacs::fuzzing::decode_jpeg(data);
});
