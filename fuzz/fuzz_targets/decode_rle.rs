//! Fuzz target `decode_rle`: the RLE Lossless decoder (pacs/src/rle.rs) on one frame.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pacs::fuzzing::decode_rle(data);
});
