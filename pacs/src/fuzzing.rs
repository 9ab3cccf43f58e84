//! Entry points for the fuzz targets in `fuzz/` and their regression test
//! (`tests/tests/fuzz_regressions.rs`).
//!
//! Each function takes arbitrary bytes, drives one reader of hostile input the way Lucent does
//! (the same limits, the same order of checks) and returns what it returned; none of them panics
//! on its own, so any panic, abort or sanitizer report under a fuzzer is a bug in the code under
//! test. They reach a few crate-private readers (RLE, libjpeg-turbo, the DIMSE PDU reader) without
//! making those public. Not part of Lucent's API: hidden from the docs, and may change at will.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::error::{Error, Result};

/// Largest frame (pixels) the decoder entry points accept, so a fuzzer does not spend its time
/// zero-filling huge buffers (production has [`crate::limits`] for that, at 1 GiB).
const MAX_FUZZ_PIXELS: usize = 1 << 22;

/// The DICOM file reader: the `pacs::limits` pre-scan, dicom-rs, the header summary, both the
/// whole-object and the header-only path. No pixel decoding (see [`decode_frame`]).
pub fn dicom_parse(data: &[u8]) -> Result<()> {
    let header = crate::file::read_info_bytes(data);
    let obj = crate::file::open_bytes(data)?;
    crate::file::info(&obj)?;
    header.map(|_| ())
}

/// The whole file path of a viewer: parse, then decode frame 0 (whatever the transfer syntax:
/// native, deflate, RLE, JPEG, JPEG-LS, JPEG 2000) with its pixel transform and overlays.
pub fn decode_frame(data: &[u8]) -> Result<()> {
    let obj = crate::file::open_bytes(data)?;
    crate::file::decode_image(&obj, 0).map(|_| ())
}

/// The RLE Lossless decoder on one frame. The first 4 bytes choose the frame's description:
/// columns (1 byte, +1), rows (1 byte, +1), samples per pixel (1 or 3), bits allocated (8, 16 or
/// 32); the rest is the RLE frame (64-byte segment header and segments).
pub fn decode_rle(data: &[u8]) -> Result<()> {
    let Some((params, frame)) = data.split_first_chunk::<4>() else { return Ok(()) };
    let columns = usize::from(params[0]) + 1;
    let rows = usize::from(params[1]) + 1;
    let samples = if params[2] & 1 == 0 { 1 } else { 3 };
    let bits = [8, 16, 32][usize::from(params[3] % 3)];
    crate::rle::decode(frame, columns, rows, samples, bits).map(|_| ())
}

/// libjpeg-turbo through Lucent's wrapper (8-bit, 12-bit and lossless). The first byte's low bit
/// is the header's word that the samples are RGB; the rest is the JPEG bitstream. As in
/// production, the expected size is the header's: here the first SOF marker's, and a frame of more
/// than [`MAX_FUZZ_PIXELS`] is not decoded.
pub fn decode_jpeg(data: &[u8]) -> Result<()> {
    let Some((&flags, stream)) = data.split_first() else { return Ok(()) };
    let Some((columns, rows)) = sof_size(stream) else { return Ok(()) };
    if columns as usize * rows as usize > MAX_FUZZ_PIXELS {
        return Ok(());
    }
    crate::jpeg::decode(stream, flags & 1 == 1, Some((columns, rows))).map(|_| ())
}

/// (columns, rows) of the first start-of-frame marker of a JPEG stream, found by walking its
/// marker segments.
fn sof_size(stream: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2;
    if stream.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    while i + 4 <= stream.len() {
        if stream[i] != 0xFF {
            return None;
        }
        let marker = stream[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([stream[i + 2], stream[i + 3]]));
        if (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            let segment = stream.get(i + 4..i + 9)?;
            let rows = u32::from(u16::from_be_bytes([segment[1], segment[2]]));
            let columns = u32::from(u16::from_be_bytes([segment[3], segment[4]]));
            return Some((columns, rows));
        }
        i += 2 + len;
    }
    None
}

/// The DIMSE PDU reader ([`crate::net::dimse`]'s `Link`) as a Store SCP drives it: commands,
/// then for each command with a data set the C-STORE data set as a Part 10 buffer, until the
/// peer releases or the reader refuses. The fuzz input is what the peer sends after the
/// association is negotiated: it is handed to the link as the bytes `dicom-ul` had read ahead,
/// over a loopback TCP connection whose peer has shut down its sending side (so the reader
/// sees the end of the stream after the input, and what the link writes back is absorbed by
/// the peer's receive buffer). Two presentation contexts are accepted: 1 (CT Image Storage,
/// Explicit VR Little Endian) and 3 (Verification, Implicit VR Little Endian).
pub fn pdu_reader(data: &[u8]) -> Result<()> {
    use crate::net::dimse::{ByteBudget, Context, Incoming, Link};
    use crate::net::tls::Transport;

    let io = |e: std::io::Error| Error::Network { peer: "fuzz".into(), detail: e.to_string() };
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io)?;
    let peer = TcpStream::connect(listener.local_addr().map_err(io)?).map_err(io)?;
    let (ours, _) = listener.accept().map_err(io)?;
    peer.shutdown(Shutdown::Write).map_err(io)?;
    let contexts = vec![
        Context {
            id: 1,
            abstract_syntax: "1.2.840.10008.5.1.4.1.1.2".into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
        },
        Context { id: 3, abstract_syntax: "1.2.840.10008.1.1".into(), transfer_syntax: "1.2.840.10008.1.2".into() },
    ];
    let mut link = Link::new(
        Transport::Plain(ours),
        data.to_vec(),
        contexts,
        16 * 1024,
        "fuzz".into(),
        Duration::from_secs(5),
        None,
    )?;
    link.limit_data_sets(1 << 20, std::sync::Arc::new(ByteBudget::new(2 << 20)));
    link.defer_release();
    let mut buffer = Vec::new();
    let result = loop {
        match link.receive_command() {
            Ok(Incoming::Released) => break link.answer_release(),
            Ok(Incoming::Command { context, command }) => {
                let _ = (command.field(), command.message_id(), command.status(), command.responded_id());
                if !command.has_data_set() {
                    continue;
                }
                match link.receive_instance(context, &command, std::mem::take(&mut buffer), 0) {
                    Ok(received) => {
                        if received.valid {
                            let _ = crate::file::read_info_bytes(&received.bytes);
                        }
                        link.release_budget();
                        buffer = received.bytes;
                    }
                    Err(e) => break Err(e),
                }
            }
            Err(e) => break Err(e),
        }
    };
    drop(link);
    drop(peer);
    result
}

/// The DICOMweb (WADO-RS) multipart reader. The input's first line is the response's content
/// type (the boundary is taken from it as a retrieve does); the rest is the body, read part by
/// part to the end.
pub fn dicomweb_multipart(data: &[u8]) -> Result<()> {
    let split = memchr::memchr(b'\n', data).unwrap_or(data.len());
    let content_type = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or_default();
    let Some(boundary) = crate::dicomweb::multipart_boundary(&content_type) else { return Ok(()) };
    let mut reader = crate::dicomweb::MultipartReader::new(body, &boundary);
    // Every part is at least a delimiter long, so the loop ends with the input.
    while let Some(part) =
        reader.next_part().map_err(|e| Error::Network { peer: "fuzz".into(), detail: e.to_string() })?
    {
        std::hint::black_box((part.headers.len(), part.body.len()));
    }
    Ok(())
}

/// A scratch store reused across calls (recreated every [`STORE_REUSE`] imports so that files
/// kept aside as conflicts do not pile up).
struct Scratch {
    root: PathBuf,
    store: Option<crate::store::Store>,
    uses: usize,
}

const STORE_REUSE: usize = 256;

static SCRATCH: Mutex<Option<Scratch>> = Mutex::new(None);

/// Import of a ZIP or a DICOMDIR into a store: the input is written to a temp file (`input.zip`
/// when it starts with a ZIP local header, else `DICOMDIR`, whose references then resolve next
/// to it) and imported with `pacs::import::import_paths` (one thread) into a scratch store in
/// the temp directory.
pub fn zip_dicomdir_import(data: &[u8]) -> Result<()> {
    let mut guard = SCRATCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let scratch = guard.get_or_insert_with(|| Scratch {
        root: std::env::temp_dir().join(format!("lucent-fuzz-import-{}", std::process::id())),
        store: None,
        uses: 0,
    });
    let input_dir = scratch.root.join("input");
    if scratch.store.is_none() || scratch.uses >= STORE_REUSE {
        scratch.store = None;
        let _ = std::fs::remove_dir_all(&scratch.root);
        std::fs::create_dir_all(&input_dir).map_err(|e| Error::io(&input_dir, e))?;
        scratch.store = Some(crate::store::Store::open(&scratch.root.join("store"))?);
        scratch.uses = 0;
    }
    scratch.uses += 1;
    let name = if data.starts_with(b"PK\x03\x04") { "input.zip" } else { "DICOMDIR" };
    let path = input_dir.join(name);
    std::fs::write(&path, data).map_err(|e| Error::io(&path, e))?;
    let Some(store) = scratch.store.as_mut() else { return Ok(()) };
    let options = crate::import::ImportOptions { threads: 1, batch: 64 };
    let result =
        crate::import::import_paths(store, std::slice::from_ref(&path), &options, &|_| {}, &AtomicBool::new(false));
    let _ = std::fs::remove_file(&path);
    result.map(|_| ())
}

/// Removes the scratch store of [`zip_dicomdir_import`] (a regression test's last step; a fuzzer
/// process leaves its own behind in the temp directory).
pub fn remove_scratch() {
    let mut guard = SCRATCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(scratch) = guard.take() {
        drop(scratch.store);
        let _ = std::fs::remove_dir_all(&scratch.root);
    }
}
