//! C-STORE SCU: sends local Part 10 files to a node, each in its own transfer syntax (one
//! presentation context per SOP class and transfer syntax), with Explicit/Implicit VR Little
//! Endian as a fallback the file is converted to (decompressed if need be) when the peer refuses
//! the original.
//!
//! Files are read one at a time; the data set is sent straight from the file's bytes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTable;
use serde::Serialize;

use super::dimse::{self, C_STORE_RQ, C_STORE_RSP, Incoming, Link, StatusKind};
use super::node::PacsNode;
use super::retrieve::RetrieveProgress;
use super::syntax::{MAX_PRESENTATION_CONTEXTS, Proposal, UNCOMPRESSED_TRANSFER_SYNTAXES, is_uncompressed};
use crate::error::{Error, Result};

/// A file that was not stored at the peer, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SendFailure {
    pub path: PathBuf,
    /// Empty when the file could not be read.
    pub sop_instance_uid: String,
    pub reason: String,
}

/// What a send did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreReport {
    /// Files the peer stored (success or warning status).
    pub sent: usize,
    /// Of those, how many had a warning status.
    pub warnings: usize,
    /// Files sent in a converted transfer syntax (the peer refused the original).
    pub converted: usize,
    pub failed: Vec<SendFailure>,
    pub bytes: u64,
    pub elapsed_s: f64,
    pub bytes_per_s: f64,
    pub cancelled: bool,
}

/// The file meta of a Part 10 file and where its data set starts.
struct Part10 {
    sop_class: String,
    sop_instance: String,
    transfer_syntax: String,
    data_offset: usize,
}

fn read_meta(bytes: &[u8]) -> Result<Part10> {
    let start = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        128
    } else if bytes.starts_with(b"DICM") {
        0
    } else {
        return Err(Error::NotDicom { reason: "no Part 10 file meta (DICM)".to_owned() });
    };
    let mut cursor = std::io::Cursor::new(&bytes[start..]);
    let meta = FileMetaTable::from_reader(&mut cursor).map_err(|e| Error::NotDicom { reason: e.to_string() })?;
    Ok(Part10 {
        sop_class: meta.media_storage_sop_class_uid().to_owned(),
        sop_instance: meta.media_storage_sop_instance_uid().to_owned(),
        transfer_syntax: meta.transfer_syntax().to_owned(),
        data_offset: start + cursor.position() as usize,
    })
}

/// Reads the file meta of a file without reading the rest.
fn read_file_meta(path: &Path) -> Result<Part10> {
    let mut head = Vec::with_capacity(4096);
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    file.take(64 * 1024).read_to_end(&mut head).map_err(|e| Error::io(path, e))?;
    read_meta(&head)
}

/// Sends `paths` to `node` with C-STORE on one association. `progress` is called after every
/// file; `cancel` stops between files.
pub fn store_files(
    node: &PacsNode,
    paths: &[PathBuf],
    progress: &mut dyn FnMut(&RetrieveProgress),
    cancel: &AtomicBool,
) -> Result<StoreReport> {
    let started = Instant::now();
    let mut report = StoreReport::default();
    let mut metas: Vec<(PathBuf, Part10)> = Vec::new();
    for path in paths {
        match read_file_meta(path) {
            Ok(meta) => metas.push((path.clone(), meta)),
            Err(e) => report.failed.push(SendFailure {
                path: path.clone(),
                sop_instance_uid: String::new(),
                reason: e.to_string(),
            }),
        }
    }
    // One context per (SOP class, transfer syntax), then a fallback context per SOP class.
    let mut proposals: Vec<Proposal> = Vec::new();
    for (_, meta) in &metas {
        let exact = Proposal::new(&meta.sop_class, &[&meta.transfer_syntax]);
        if !proposals.contains(&exact) {
            proposals.push(exact);
        }
    }
    let classes: Vec<String> = proposals.iter().map(|p| p.abstract_syntax.clone()).fold(Vec::new(), |mut v, c| {
        if !v.contains(&c) {
            v.push(c);
        }
        v
    });
    for class in &classes {
        proposals.push(Proposal::new(class, &UNCOMPRESSED_TRANSFER_SYNTAXES));
    }
    if proposals.len() > MAX_PRESENTATION_CONTEXTS {
        tracing::warn!("{} presentation contexts needed, {MAX_PRESENTATION_CONTEXTS} proposed", proposals.len());
        proposals.truncate(MAX_PRESENTATION_CONTEXTS);
    }
    let mut tally = RetrieveProgress {
        remaining: Some(metas.len() as u32),
        failed: report.failed.len() as u32,
        ..Default::default()
    };
    let mut report_progress = |tally: &mut RetrieveProgress, bytes: u64| {
        tally.bytes = bytes;
        tally.elapsed_s = started.elapsed().as_secs_f64();
        tally.bytes_per_s = if tally.elapsed_s > 0.0 { bytes as f64 / tally.elapsed_s } else { 0.0 };
        progress(tally);
    };
    report_progress(&mut tally, 0);
    if !metas.is_empty() {
        let mut link = dimse::connect(node, &proposals, &[], Some(cancel))?;
        for (path, meta) in &metas {
            if cancel.load(Ordering::Relaxed) {
                report.cancelled = true;
                break;
            }
            match send_one(&mut link, path, meta) {
                Ok(sent) => {
                    report.sent += 1;
                    report.bytes += sent.bytes;
                    report.warnings += usize::from(sent.warning);
                    report.converted += usize::from(sent.converted);
                    tally.done += 1;
                }
                Err(SendError::Instance(reason)) => {
                    report.failed.push(SendFailure {
                        path: path.clone(),
                        sop_instance_uid: meta.sop_instance.clone(),
                        reason,
                    });
                    tally.failed += 1;
                }
                Err(SendError::Association(e)) => {
                    link.abort();
                    return Err(e);
                }
            }
            tally.remaining = tally.remaining.map(|r| r.saturating_sub(1));
            report_progress(&mut tally, report.bytes);
        }
        link.release()?;
    }
    report.elapsed_s = started.elapsed().as_secs_f64();
    report.bytes_per_s = if report.elapsed_s > 0.0 { report.bytes as f64 / report.elapsed_s } else { 0.0 };
    Ok(report)
}

struct Sent {
    bytes: u64,
    warning: bool,
    converted: bool,
}

/// A failure of one file (the association goes on) or of the association (it stops).
enum SendError {
    Instance(String),
    Association(Error),
}

fn send_one(link: &mut Link<'_>, path: &Path, meta: &Part10) -> std::result::Result<Sent, SendError> {
    let bytes = std::fs::read(path).map_err(|e| SendError::Instance(Error::io(path, e).to_string()))?;
    let (context, converted_data) = if let Some(c) = link.context_exact(&meta.sop_class, &meta.transfer_syntax) {
        (c.clone(), None)
    } else if let Some(c) = link
        .contexts()
        .iter()
        .find(|c| c.abstract_syntax == meta.sop_class && is_uncompressed(&c.transfer_syntax))
        .cloned()
    {
        let data = convert(&bytes, &c.transfer_syntax).map_err(|e| SendError::Instance(e.to_string()))?;
        (c, Some(data))
    } else {
        return Err(SendError::Instance(
            Error::NoPresentationContext {
                peer: link.peer().to_owned(),
                abstract_syntax: meta.sop_class.clone(),
                transfer_syntax: Some(meta.transfer_syntax.clone()),
            }
            .to_string(),
        ));
    };
    let data: &[u8] = converted_data.as_deref().unwrap_or(&bytes[meta.data_offset..]);
    let id = link.next_message_id();
    let command = dimse::request(
        C_STORE_RQ,
        id,
        &meta.sop_class,
        true,
        vec![dimse::ui(tags::AFFECTED_SOP_INSTANCE_UID, &meta.sop_instance)],
    );
    link.send_command(context.id, &command).map_err(SendError::Association)?;
    link.send_data_set(context.id, data).map_err(SendError::Association)?;
    let (ctx, rsp) = match link.receive_command().map_err(SendError::Association)? {
        Incoming::Command { context, command } => (context, command),
        Incoming::Released => {
            return Err(SendError::Association(Error::ConnectionLost {
                peer: link.peer().to_owned(),
                detail: "released in the middle of C-STORE".to_owned(),
            }));
        }
    };
    if rsp.has_data_set() {
        let mut sink = Vec::new();
        link.receive_data_set(ctx, &mut sink).map_err(SendError::Association)?;
    }
    if rsp.field() != C_STORE_RSP || rsp.responded_id() != Some(id) {
        return Err(SendError::Association(Error::Network {
            peer: link.peer().to_owned(),
            detail: format!("unexpected command {:#06x} during C-STORE", rsp.field()),
        }));
    }
    let status = rsp.status().unwrap_or(0xFFFF);
    let sent = |warning| Sent { bytes: data.len() as u64, warning, converted: converted_data.is_some() };
    match dimse::status_kind(status) {
        StatusKind::Success => Ok(sent(false)),
        StatusKind::Warning => Ok(sent(true)),
        _ => Err(SendError::Instance(
            Error::DimseFailure {
                peer: link.peer().to_owned(),
                operation: "C-STORE",
                status,
                meaning: dimse::status_meaning(status),
            }
            .to_string(),
        )),
    }
}

/// The file's data set in `transfer_syntax` (native), decompressing the pixel data if needed.
fn convert(bytes: &[u8], transfer_syntax: &str) -> Result<Vec<u8>> {
    use dicom_encoding::TransferSyntaxIndex;
    use dicom_pixeldata::Transcode;
    let mut obj = crate::file::open_bytes(bytes)?;
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(transfer_syntax).ok_or_else(|| {
        Error::UnsupportedTransferSyntax {
            uid: transfer_syntax.to_owned(),
            name: crate::attrs::transfer_syntax_name(transfer_syntax),
        }
    })?;
    obj.transcode(ts)
        .map_err(|e| Error::decode(crate::attrs::transfer_syntax_name(obj.meta().transfer_syntax()), e.to_string()))?;
    let mut out = Vec::new();
    obj.write_dataset(&mut out).map_err(|e| Error::Write { detail: e.to_string() })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_gives_the_data_set_offset() {
        let header = dimse::part10_header("1.2.840.10008.5.1.4.1.1.7", "1.2.3", "1.2.840.10008.1.2.1", "", 0).unwrap();
        let mut bytes = header.clone();
        bytes.extend_from_slice(&[8, 0, 0x16, 0, b'U', b'I', 2, 0, b'1', 0]);
        let meta = read_meta(&bytes).unwrap();
        assert_eq!(meta.data_offset, header.len());
        assert_eq!(meta.sop_instance, "1.2.3");
        assert_eq!(meta.transfer_syntax, "1.2.840.10008.1.2.1");
    }
}
