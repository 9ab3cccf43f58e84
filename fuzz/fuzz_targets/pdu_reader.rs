//! Fuzz target `pdu_reader`: the DIMSE PDU reader (net::dimse::Link) over a loopback socket.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pacs::fuzzing::pdu_reader(data);
});
