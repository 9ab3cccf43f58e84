//! Fuzz target `zip_dicomdir_import`: import of a ZIP or a DICOMDIR into a scratch store.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pacs::fuzzing::zip_dicomdir_import(data);
});
