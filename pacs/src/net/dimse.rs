//! DIMSE messages over an established association: command encoding, P-DATA fragmenting and
//! reassembly, release and abort, and the helpers every service shares (C-STORE reception,
//! responses, status meanings, mapping upper-layer errors to [`Error`]).
//!
//! Associations are negotiated by `dicom-ul` ([`connect`] here for requestors, `scp` for
//! acceptors), over TLS for TLS nodes; after that a [`Link`] owns the connection (a
//! [`Transport`]: the socket, or the TLS stream over it) and reads PDUs itself, so that a data
//! set is appended straight from the connection into its final buffer (a Part 10 file whose
//! header was written when the command arrived): no intermediate PDU copies, no quadratic
//! growth. Every socket has TCP_NODELAY set and read/write timeouts: a silent peer gives
//! [`Error::Timeout`]. TLS failures give [`Error::Tls`].
//!
//! This module knows nothing of the store, queries or progress reporting.

use std::io::{BufRead, BufReader, IoSlice, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::SyncAssociation as _;
use dicom_ul::pdu::PresentationContextResultReason;

use super::node::PacsNode;
use super::syntax::{IMPLICIT_VR_LE, Proposal};
use super::tls::{self, Transport};
use crate::error::{Error, Result};

/// The largest P-DATA PDU Lucent accepts (and proposes): 1 MiB keeps the number of PDUs of a CT
/// slice at one or two.
pub(crate) const LOCAL_MAX_PDU: u32 = 1024 * 1024;
/// The largest PDV value Lucent sends when the peer sets no limit (max length 0).
const UNLIMITED_PDU_CHUNK: usize = 1024 * 1024;
/// PDUs longer than this are refused as corrupt, whatever was negotiated.
const MAX_ACCEPTED_PDU: usize = 256 * 1024 * 1024;
/// Socket timeout slice while a cancel flag is watched.
const CANCEL_POLL: Duration = Duration::from_millis(200);
/// Buffer of the socket reader (PDU headers, commands, small fragments).
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Data set fragments at least this long are read from the socket straight into their buffer.
const DIRECT_READ_MIN_BYTES: u64 = 16 * 1024;

// Command Field values (PS3.7 E.1).
pub(crate) const C_STORE_RQ: u16 = 0x0001;
pub(crate) const C_STORE_RSP: u16 = 0x8001;
pub(crate) const C_GET_RQ: u16 = 0x0010;
pub(crate) const C_GET_RSP: u16 = 0x8010;
pub(crate) const C_FIND_RQ: u16 = 0x0020;
pub(crate) const C_FIND_RSP: u16 = 0x8020;
pub(crate) const C_MOVE_RQ: u16 = 0x0021;
pub(crate) const C_MOVE_RSP: u16 = 0x8021;
pub(crate) const C_ECHO_RQ: u16 = 0x0030;
pub(crate) const C_ECHO_RSP: u16 = 0x8030;
pub(crate) const C_CANCEL_RQ: u16 = 0x0FFF;

/// Command Data Set Type: no data set follows.
const NO_DATA_SET: u16 = 0x0101;
/// Command Data Set Type: a data set follows (any value but 0x0101).
const DATA_SET_PRESENT: u16 = 0x0000;

// Statuses (PS3.7 C, PS3.4).
pub(crate) const STATUS_SUCCESS: u16 = 0x0000;
pub(crate) const STATUS_SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
pub(crate) const STATUS_UNRECOGNIZED_OPERATION: u16 = 0x0211;
pub(crate) const STATUS_OUT_OF_RESOURCES: u16 = 0xA700;
/// Failure: processing failure (PS3.7 C.4.2.1.4; used for instances kept aside as conflicts).
pub(crate) const STATUS_PROCESSING_FAILURE: u16 = 0x0110;
pub(crate) const STATUS_CANNOT_UNDERSTAND: u16 = 0xC000;

/// What a status means, broadly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusKind {
    Success,
    Pending,
    Cancelled,
    Warning,
    Failure,
}

pub(crate) fn status_kind(status: u16) -> StatusKind {
    match status {
        0x0000 => StatusKind::Success,
        0xFF00 | 0xFF01 => StatusKind::Pending,
        0xFE00 => StatusKind::Cancelled,
        0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF => StatusKind::Warning,
        _ => StatusKind::Failure,
    }
}

/// A short English meaning of a DIMSE status.
pub(crate) fn status_meaning(status: u16) -> &'static str {
    match status {
        0x0000 => "success",
        0xFF00 | 0xFF01 => "pending",
        0xFE00 => "cancelled",
        0xB000 => "warning: sub-operations complete, one or more failures or warnings",
        0xB006 => "warning: elements discarded",
        0xB007 => "warning: data set does not match SOP class",
        0x0110 => "processing failure",
        0x0117 => "invalid SOP instance",
        0x0122 => "SOP class not supported",
        0x0124 => "not authorized",
        0x0211 => "unrecognized operation",
        0xA701 => "out of resources: unable to calculate number of matches",
        0xA702 => "out of resources: unable to perform sub-operations",
        0xA700 | 0xA703..=0xA7FF => "out of resources",
        0xA801 => "move destination unknown",
        0xA900..=0xA9FF => "data set (or identifier) does not match SOP class",
        0xC000..=0xCFFF => "unable to process",
        _ => "failure",
    }
}

/// A DIMSE command set (always Implicit VR Little Endian).
#[derive(Debug, Clone)]
pub(crate) struct Command(pub InMemDicomObject);

impl Command {
    fn u16_of(&self, tag: Tag) -> Option<u16> {
        self.0.get(tag).and_then(|e| e.to_int::<u16>().ok())
    }

    pub(crate) fn field(&self) -> u16 {
        self.u16_of(tags::COMMAND_FIELD).unwrap_or(0)
    }

    pub(crate) fn message_id(&self) -> u16 {
        self.u16_of(tags::MESSAGE_ID).unwrap_or(0)
    }

    pub(crate) fn responded_id(&self) -> Option<u16> {
        self.u16_of(tags::MESSAGE_ID_BEING_RESPONDED_TO)
    }

    pub(crate) fn status(&self) -> Option<u16> {
        self.u16_of(tags::STATUS)
    }

    pub(crate) fn has_data_set(&self) -> bool {
        self.u16_of(tags::COMMAND_DATA_SET_TYPE).is_some_and(|t| t != NO_DATA_SET)
    }

    pub(crate) fn uid(&self, tag: Tag) -> String {
        crate::attrs::string(&self.0, tag).unwrap_or_default()
    }

    pub(crate) fn count(&self, tag: Tag) -> Option<u32> {
        self.u16_of(tag).map(u32::from)
    }
}

pub(crate) fn ui(tag: Tag, uid: &str) -> InMemElement {
    DataElement::new(tag, VR::UI, PrimitiveValue::from(uid.trim_end_matches('\0')))
}

pub(crate) fn us(tag: Tag, value: u16) -> InMemElement {
    DataElement::new(tag, VR::US, PrimitiveValue::from(value))
}

pub(crate) fn text(tag: Tag, vr: VR, value: &str) -> InMemElement {
    DataElement::new(tag, vr, PrimitiveValue::from(value))
}

/// A request command: field, message ID, affected/requested SOP class, data set presence, and
/// any further elements.
pub(crate) fn request(
    field: u16,
    message_id: u16,
    sop_class: &str,
    has_data_set: bool,
    extra: Vec<InMemElement>,
) -> Command {
    let class_tag = if field == C_CANCEL_RQ { None } else { Some(tags::AFFECTED_SOP_CLASS_UID) };
    let mut elements = vec![
        us(tags::COMMAND_FIELD, field),
        us(tags::COMMAND_DATA_SET_TYPE, if has_data_set { DATA_SET_PRESENT } else { NO_DATA_SET }),
    ];
    if field == C_CANCEL_RQ {
        elements.push(us(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id));
    } else {
        elements.push(us(tags::MESSAGE_ID, message_id));
    }
    if let Some(tag) = class_tag {
        elements.push(ui(tag, sop_class));
    }
    if matches!(field, C_STORE_RQ | C_FIND_RQ | C_GET_RQ | C_MOVE_RQ) {
        elements.push(us(tags::PRIORITY, 0));
    }
    elements.extend(extra);
    Command(InMemDicomObject::command_from_element_iter(elements))
}

/// A response to `request` with `status` (no data set).
pub(crate) fn response(field: u16, request: &Command, status: u16) -> Command {
    let mut elements = vec![
        us(tags::COMMAND_FIELD, field),
        us(tags::MESSAGE_ID_BEING_RESPONDED_TO, request.message_id()),
        us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
        us(tags::STATUS, status),
    ];
    let class = request.uid(tags::AFFECTED_SOP_CLASS_UID);
    if !class.is_empty() {
        elements.push(ui(tags::AFFECTED_SOP_CLASS_UID, &class));
    }
    let instance = request.uid(tags::AFFECTED_SOP_INSTANCE_UID);
    if !instance.is_empty() {
        elements.push(ui(tags::AFFECTED_SOP_INSTANCE_UID, &instance));
    }
    Command(InMemDicomObject::command_from_element_iter(elements))
}

/// Encodes a data set (identifier) in a transfer syntax.
pub(crate) fn encode_data_set(obj: &InMemDicomObject, transfer_syntax: &str) -> Result<Vec<u8>> {
    use dicom_encoding::TransferSyntaxIndex;
    let ts = TransferSyntaxRegistry.get(transfer_syntax).ok_or_else(|| Error::UnsupportedTransferSyntax {
        uid: transfer_syntax.to_owned(),
        name: crate::attrs::transfer_syntax_name(transfer_syntax),
    })?;
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, ts).map_err(|e| Error::Write { detail: e.to_string() })?;
    Ok(out)
}

/// Decodes a data set (identifier) received in a transfer syntax.
pub(crate) fn decode_data_set(bytes: &[u8], transfer_syntax: &str) -> Result<InMemDicomObject> {
    use dicom_encoding::TransferSyntaxIndex;
    let ts = TransferSyntaxRegistry.get(transfer_syntax).ok_or_else(|| Error::UnsupportedTransferSyntax {
        uid: transfer_syntax.to_owned(),
        name: crate::attrs::transfer_syntax_name(transfer_syntax),
    })?;
    crate::limits::prescan_data_set(bytes, transfer_syntax)?;
    InMemDicomObject::read_dataset_with_ts(bytes, ts).map_err(|e| Error::NotDicom { reason: e.to_string() })
}

/// Lucent's implementation class UID (as written in the file meta of files it writes).
pub(crate) fn implementation_class_uid() -> String {
    crate::synth::uid("lucent-implementation")
}

/// Preamble, "DICM" and file meta group of a Part 10 file, with room reserved for the data set.
#[cfg(test)]
pub(crate) fn part10_header(
    sop_class: &str,
    sop_instance: &str,
    transfer_syntax: &str,
    source_ae: &str,
    data_capacity: usize,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write_part10_header(&mut out, sop_class, sop_instance, transfer_syntax, source_ae, data_capacity)?;
    Ok(out)
}

/// Replaces the contents of `out` with a Part 10 header (see [`part10_header`]), keeping and
/// growing its allocation so a buffer can be reused from one instance to the next.
pub(crate) fn write_part10_header(
    out: &mut Vec<u8>,
    sop_class: &str,
    sop_instance: &str,
    transfer_syntax: &str,
    source_ae: &str,
    data_capacity: usize,
) -> Result<()> {
    let mut builder = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class.trim_end_matches('\0'))
        .media_storage_sop_instance_uid(sop_instance.trim_end_matches('\0'))
        .transfer_syntax(transfer_syntax.trim_end_matches('\0'))
        .implementation_class_uid(implementation_class_uid())
        .implementation_version_name("LUCENT_0_1");
    let source_ae = source_ae.trim();
    if !source_ae.is_empty() {
        builder = builder.source_application_entity_title(source_ae);
    }
    let meta = builder.build().map_err(|e| Error::Write { detail: e.to_string() })?;
    out.clear();
    out.reserve(132 + 256 + data_capacity);
    out.extend_from_slice(&[0u8; 128]);
    out.extend_from_slice(b"DICM");
    meta.write(&mut *out).map_err(|e| Error::Write { detail: e.to_string() })?;
    Ok(())
}

/// An accepted presentation context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Context {
    pub id: u8,
    pub abstract_syntax: String,
    pub transfer_syntax: String,
}

impl Context {
    /// The accepted presentation contexts of a negotiated association (either side), with the
    /// UIDs' padding removed.
    pub(crate) fn accepted(negotiated: &[dicom_ul::pdu::PresentationContextNegotiated]) -> Vec<Context> {
        negotiated
            .iter()
            .filter(|c| c.reason == PresentationContextResultReason::Acceptance)
            .map(|c| Context {
                id: c.id,
                abstract_syntax: c.abstract_syntax.trim_end_matches('\0').to_owned(),
                transfer_syntax: c.transfer_syntax.trim_end_matches('\0').to_owned(),
            })
            .collect()
    }
}

/// One presentation data value header.
#[derive(Debug, Clone, Copy)]
enum Pdv {
    Value { context: u8, command: bool, last: bool, len: usize },
    ReleaseRequested,
    ReleaseReplied,
}

/// What the peer sent next.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A command (its data set, if any, is read next with [`Link::receive_data_set`]).
    Command { context: u8, command: Command },
    /// The peer released the association (A-RELEASE-RP already sent, unless
    /// [`Link::defer_release`] asked to answer it with [`Link::answer_release`]).
    Released,
}

/// An established association, read and written directly on its connection.
pub(crate) struct Link<'a> {
    /// The connection (written through `get_mut`, which leaves the read buffer alone).
    reader: BufReader<Transport>,
    /// Bytes `dicom-ul` had buffered past the association PDU, read before the socket.
    prefix: Vec<u8>,
    prefix_pos: usize,
    peer: String,
    contexts: Vec<Context>,
    /// Largest PDU the peer accepts (0: no limit).
    peer_max_pdu: u32,
    timeout: Duration,
    cancel: Option<&'a AtomicBool>,
    /// The operation a C-CANCEL would target: (context, message ID).
    cancel_target: Option<(u8, u16)>,
    cancel_sent: bool,
    /// Bytes left in the P-DATA-TF PDU being read.
    pdu_remaining: usize,
    next_message_id: u16,
    last_progress: Instant,
    /// Answer A-RELEASE-RQ only through [`Link::answer_release`].
    defer_release: bool,
    release_pending: bool,
    /// Largest data set accepted from the peer (a receiver's cap; `None`: no cap).
    max_data_set_bytes: Option<usize>,
    /// Memory shared with other associations for data sets being received, and what this link
    /// holds of it.
    budget: Option<std::sync::Arc<ByteBudget>>,
    budget_held: usize,
}

/// Bytes that the associations of one receiver may hold at once for data sets in flight.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    used: std::sync::atomic::AtomicUsize,
    limit: usize,
}

impl ByteBudget {
    pub(crate) fn new(limit: usize) -> Self {
        Self { used: std::sync::atomic::AtomicUsize::new(0), limit }
    }

    fn try_acquire(&self, n: usize) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.used.fetch_update(SeqCst, SeqCst, |used| used.checked_add(n).filter(|&total| total <= self.limit)).is_ok()
    }

    fn release(&self, n: usize) {
        use std::sync::atomic::Ordering::SeqCst;
        let _ = self.used.fetch_update(SeqCst, SeqCst, |used| Some(used.saturating_sub(n)));
    }

    /// Bytes held now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Link<'_> {
    fn drop(&mut self) {
        self.release_budget();
    }
}

/// An A-RELEASE-RP PDU.
const A_RELEASE_RP: [u8; 10] = [0x06, 0, 0, 0, 0, 4, 0, 0, 0, 0];

impl<'a> Link<'a> {
    /// Wraps a negotiated association's connection: TCP_NODELAY, timeouts, and our own reader.
    pub(crate) fn new(
        transport: Transport,
        prefix: Vec<u8>,
        contexts: Vec<Context>,
        peer_max_pdu: u32,
        peer: String,
        timeout: Duration,
        cancel: Option<&'a AtomicBool>,
    ) -> Result<Self> {
        let net = |e: std::io::Error| Error::Network { peer: peer.clone(), detail: e.to_string() };
        let socket = transport.socket();
        socket.set_nodelay(true).map_err(net)?;
        let slice = if cancel.is_some() { timeout.min(CANCEL_POLL) } else { timeout };
        socket.set_read_timeout(Some(slice)).map_err(net)?;
        socket.set_write_timeout(Some(slice)).map_err(net)?;
        Ok(Self {
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, transport),
            prefix,
            prefix_pos: 0,
            peer,
            contexts,
            peer_max_pdu,
            timeout,
            cancel,
            cancel_target: None,
            cancel_sent: false,
            pdu_remaining: 0,
            next_message_id: 1,
            last_progress: Instant::now(),
            defer_release: false,
            release_pending: false,
            max_data_set_bytes: None,
            budget: None,
            budget_held: 0,
        })
    }

    pub(crate) fn peer(&self) -> &str {
        &self.peer
    }

    pub(crate) fn contexts(&self) -> &[Context] {
        &self.contexts
    }

    pub(crate) fn context(&self, id: u8) -> Option<&Context> {
        self.contexts.iter().find(|c| c.id == id)
    }

    /// The first accepted context for `abstract_syntax` (in proposal order).
    pub(crate) fn context_for(&self, abstract_syntax: &str) -> Option<&Context> {
        self.contexts.iter().find(|c| c.abstract_syntax == abstract_syntax)
    }

    /// The accepted context for `abstract_syntax` in exactly `transfer_syntax`.
    pub(crate) fn context_exact(&self, abstract_syntax: &str, transfer_syntax: &str) -> Option<&Context> {
        self.contexts.iter().find(|c| c.abstract_syntax == abstract_syntax && c.transfer_syntax == transfer_syntax)
    }

    pub(crate) fn next_message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        id
    }

    /// Arms C-CANCEL for the operation `message_id` on `context`: once the cancel flag is set,
    /// the next wait on the socket sends C-CANCEL-RQ (once).
    pub(crate) fn watch_cancel(&mut self, context: u8, message_id: u16) {
        self.cancel_target = Some((context, message_id));
        self.cancel_sent = false;
    }

    pub(crate) fn cancel_requested(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    pub(crate) fn cancel_sent(&self) -> bool {
        self.cancel_sent
    }

    /// Sends C-CANCEL-RQ for the watched operation now, if not yet sent.
    pub(crate) fn send_cancel(&mut self) -> Result<()> {
        if let Some((context, id)) = self.cancel_target
            && !self.cancel_sent
        {
            self.cancel_sent = true;
            let cancel = request(C_CANCEL_RQ, id, "", false, Vec::new());
            self.send_command(context, &cancel)?;
        }
        Ok(())
    }

    fn net(&self, e: std::io::Error) -> Error {
        io_error(&self.peer, self.timeout, e, "exchanging messages")
    }

    fn lost(&self, detail: &str) -> Error {
        Error::ConnectionLost { peer: self.peer.clone(), detail: detail.to_owned() }
    }

    fn protocol(&self, detail: impl Into<String>) -> Error {
        Error::Network { peer: self.peer.clone(), detail: detail.into() }
    }

    /// Called when a socket wait timed out: C-CANCEL if asked, `Timeout` once the peer has been
    /// silent for the whole timeout.
    fn on_idle(&mut self, during: &'static str) -> Result<()> {
        if self.cancel_requested() {
            self.send_cancel()?;
        }
        if self.last_progress.elapsed() >= self.timeout {
            return Err(Error::Timeout { peer: self.peer.clone(), timeout_s: self.timeout.as_secs_f64(), during });
        }
        Ok(())
    }

    fn read_exact(&mut self, buf: &mut [u8], during: &'static str) -> Result<()> {
        if self.reader.buffer().len() < buf.len() {
            quick_ack(self.reader.get_ref().socket());
        }
        let mut filled = 0;
        if self.prefix_pos < self.prefix.len() {
            let n = (self.prefix.len() - self.prefix_pos).min(buf.len());
            buf[..n].copy_from_slice(&self.prefix[self.prefix_pos..self.prefix_pos + n]);
            self.prefix_pos += n;
            filled = n;
        }
        while filled < buf.len() {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => return Err(self.lost("the peer closed the connection")),
                Ok(n) => {
                    filled += n;
                    self.last_progress = Instant::now();
                }
                Err(e) if is_timeout(&e) => self.on_idle(during)?,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.net(e)),
            }
        }
        Ok(())
    }

    /// Appends exactly `n` bytes to `out`, straight from the socket when they are not buffered.
    fn read_append(&mut self, n: usize, out: &mut Vec<u8>, during: &'static str) -> Result<()> {
        out.reserve(n);
        let target = out.len() + n;
        if self.prefix_pos < self.prefix.len() {
            let k = (self.prefix.len() - self.prefix_pos).min(n);
            out.extend_from_slice(&self.prefix[self.prefix_pos..self.prefix_pos + k]);
            self.prefix_pos += k;
        }
        // Whatever the reader has buffered first; then large remainders go straight from the
        // socket into `out` (no copy through the buffer), small ones through the buffer.
        let buffered = self.reader.buffer();
        let k = buffered.len().min(target - out.len());
        out.extend_from_slice(&buffered[..k]);
        self.reader.consume(k);
        while out.len() < target {
            quick_ack(self.reader.get_ref().socket());
            let want = (target - out.len()) as u64;
            let before = out.len();
            let result = if want >= DIRECT_READ_MIN_BYTES && self.reader.buffer().is_empty() {
                self.reader.get_mut().take(want).read_to_end(out)
            } else {
                (&mut self.reader).take(want).read_to_end(out)
            };
            if out.len() > before {
                self.last_progress = Instant::now();
            }
            match result {
                Ok(_) if out.len() < target => return Err(self.lost("the peer closed the connection")),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => self.on_idle(during)?,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.net(e)),
            }
        }
        Ok(())
    }

    fn skip(&mut self, n: usize) -> Result<()> {
        let mut sink = Vec::new();
        self.read_append(n, &mut sink, "reading a PDU")
    }

    /// The next PDV header, reading PDU headers (and handling release and abort) as needed.
    fn next_pdv(&mut self) -> Result<Pdv> {
        loop {
            if self.pdu_remaining == 0 {
                let mut head = [0u8; 6];
                self.read_exact(&mut head, "waiting for the peer")?;
                let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
                if len > MAX_ACCEPTED_PDU {
                    return Err(self.protocol(format!("PDU of {len} bytes refused")));
                }
                match head[0] {
                    0x04 => {
                        self.pdu_remaining = len;
                        continue;
                    }
                    0x05 => {
                        self.skip(len)?;
                        return Ok(Pdv::ReleaseRequested);
                    }
                    0x06 => {
                        self.skip(len)?;
                        return Ok(Pdv::ReleaseReplied);
                    }
                    0x07 => {
                        let mut body = vec![0u8; len.min(64)];
                        self.read_exact(&mut body, "reading an A-ABORT")?;
                        let source = match body.get(2) {
                            Some(0) => "service user",
                            Some(2) => "service provider",
                            _ => "unknown source",
                        };
                        return Err(self.lost(&format!("the peer aborted the association (A-ABORT from {source})")));
                    }
                    other => {
                        self.skip(len)?;
                        return Err(self.protocol(format!("unexpected PDU type {other:#04x}")));
                    }
                }
            }
            if self.pdu_remaining < 6 {
                return Err(self.protocol("malformed P-DATA-TF PDU"));
            }
            let mut head = [0u8; 6];
            self.read_exact(&mut head, "reading a P-DATA PDU")?;
            self.pdu_remaining -= 6;
            let item_len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if item_len < 2 || item_len - 2 > self.pdu_remaining {
                return Err(self.protocol("malformed presentation data value item"));
            }
            let len = item_len - 2;
            return Ok(Pdv::Value { context: head[4], command: head[5] & 1 != 0, last: head[5] & 2 != 0, len });
        }
    }

    /// From now on a peer's A-RELEASE-RQ is reported as [`Incoming::Released`] but answered
    /// only by [`Link::answer_release`] (an SCP finishes its work before the peer moves on).
    pub(crate) fn defer_release(&mut self) {
        self.defer_release = true;
    }

    /// Sends the A-RELEASE-RP a deferred release waits for (nothing when none does).
    pub(crate) fn answer_release(&mut self) -> Result<()> {
        if std::mem::take(&mut self.release_pending) {
            self.write_all(&A_RELEASE_RP)?;
        }
        Ok(())
    }

    /// Reads the next command (all its fragments). A peer's A-RELEASE-RQ is answered and
    /// reported as [`Incoming::Released`].
    pub(crate) fn receive_command(&mut self) -> Result<Incoming> {
        let mut bytes = Vec::new();
        let mut context = None;
        loop {
            match self.next_pdv()? {
                Pdv::ReleaseRequested if context.is_none() => {
                    if self.defer_release {
                        self.release_pending = true;
                    } else {
                        self.write_all(&A_RELEASE_RP)?;
                    }
                    return Ok(Incoming::Released);
                }
                Pdv::ReleaseRequested | Pdv::ReleaseReplied => {
                    return Err(self.protocol("unexpected release in the middle of a command"));
                }
                Pdv::Value { command: false, .. } => {
                    return Err(self.protocol("a data set fragment arrived where a command was expected"));
                }
                Pdv::Value { context: id, command: true, last, len } => {
                    if context.is_some_and(|c| c != id) {
                        return Err(self.protocol("command fragments on different presentation contexts"));
                    }
                    context = Some(id);
                    self.read_append(len, &mut bytes, "reading a command")?;
                    self.pdu_remaining -= len;
                    if last {
                        break;
                    }
                }
            }
        }
        let context = context.unwrap_or(0);
        let command = decode_data_set(&bytes, IMPLICIT_VR_LE)
            .map_err(|e| self.protocol(format!("unreadable command set: {e}")))?;
        Ok(Incoming::Command { context, command: Command(command) })
    }

    /// Appends the data set that follows a command on `context` to `out`.
    /// Caps what the peer may send: each data set at `max_bytes`, and all associations that share
    /// `budget` together at its limit (a receiver's memory). Checked as the bytes arrive, before
    /// they are buffered.
    pub(crate) fn limit_data_sets(&mut self, max_bytes: usize, budget: std::sync::Arc<ByteBudget>) {
        self.max_data_set_bytes = Some(max_bytes);
        self.budget = Some(budget);
    }

    /// Gives back the budget held for data sets received so far (once they are written or handed
    /// on).
    pub(crate) fn release_budget(&mut self) {
        if let Some(budget) = &self.budget {
            budget.release(self.budget_held);
        }
        self.budget_held = 0;
    }

    pub(crate) fn receive_data_set(&mut self, context: u8, out: &mut Vec<u8>) -> Result<()> {
        let start_len = out.len();
        loop {
            match self.next_pdv()? {
                Pdv::Value { context: id, command: false, last, len } if id == context => {
                    if let Some(max) = self.max_data_set_bytes
                        && out.len() - start_len + len > max
                    {
                        return Err(Error::LimitExceeded {
                            what: "received data set",
                            size: (out.len() - start_len + len) as u64,
                            limit: max as u64,
                            setting: "the SCP's max_data_set_bytes",
                        });
                    }
                    if let Some(budget) = &self.budget {
                        if !budget.try_acquire(len) {
                            return Err(Error::LimitExceeded {
                                what: "memory for data sets being received",
                                size: (budget.used() + len) as u64,
                                limit: budget.limit as u64,
                                setting: "the SCP's max_in_flight_bytes",
                            });
                        }
                        self.budget_held += len;
                    }
                    self.read_append(len, out, "receiving a data set")?;
                    self.pdu_remaining -= len;
                    if last {
                        return Ok(());
                    }
                }
                Pdv::Value { .. } => return Err(self.protocol("unexpected fragment in the middle of a data set")),
                Pdv::ReleaseRequested | Pdv::ReleaseReplied => {
                    return Err(self.protocol("release in the middle of a data set"));
                }
            }
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.write_parts(&mut [IoSlice::new(bytes)])
    }

    fn write_parts(&mut self, parts: &mut [IoSlice<'_>]) -> Result<()> {
        let mut slices = parts;
        let started = Instant::now();
        while !slices.is_empty() {
            match self.reader.get_mut().write_vectored(slices) {
                Ok(0) => return Err(self.lost("the peer stopped accepting data")),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) => self.on_write_error(e, started)?,
            }
        }
        // TLS may hold back encrypted bytes after a write that timed out: send them all now.
        if !matches!(self.reader.get_ref(), Transport::Plain(_)) {
            while let Err(e) = self.reader.get_mut().flush() {
                self.on_write_error(e, started)?;
            }
        }
        // The peer's time to answer counts from what we just sent.
        self.last_progress = Instant::now();
        Ok(())
    }

    /// A failed write: retried (`Ok`) after a socket timeout slice or an interruption, until the
    /// peer has refused data for the whole timeout.
    fn on_write_error(&self, e: std::io::Error, started: Instant) -> Result<()> {
        if is_timeout(&e) {
            if started.elapsed() >= self.timeout {
                return Err(Error::Timeout {
                    peer: self.peer.clone(),
                    timeout_s: self.timeout.as_secs_f64(),
                    during: "sending",
                });
            }
            return Ok(());
        }
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(());
        }
        Err(self.net(e))
    }

    fn send_pdvs(&mut self, context: u8, command: bool, data: &[u8]) -> Result<()> {
        let max_value = match self.peer_max_pdu {
            0 => UNLIMITED_PDU_CHUNK,
            max => (max as usize).saturating_sub(6).clamp(1, UNLIMITED_PDU_CHUNK),
        };
        let mut chunks = data.chunks(max_value).peekable();
        if data.is_empty() {
            return self.send_pdv(context, command, true, &[]);
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            self.send_pdv(context, command, last, chunk)?;
        }
        Ok(())
    }

    fn send_pdv(&mut self, context: u8, command: bool, last: bool, chunk: &[u8]) -> Result<()> {
        let pdu_len = (chunk.len() + 6) as u32;
        let item_len = (chunk.len() + 2) as u32;
        let mut head = [0u8; 12];
        head[0] = 0x04;
        head[2..6].copy_from_slice(&pdu_len.to_be_bytes());
        head[6..10].copy_from_slice(&item_len.to_be_bytes());
        head[10] = context;
        head[11] = u8::from(command) | if last { 2 } else { 0 };
        self.write_parts(&mut [IoSlice::new(&head), IoSlice::new(chunk)])
    }

    pub(crate) fn send_command(&mut self, context: u8, command: &Command) -> Result<()> {
        let bytes = encode_data_set(&command.0, IMPLICIT_VR_LE)?;
        self.send_pdvs(context, true, &bytes)
    }

    pub(crate) fn send_data_set(&mut self, context: u8, data: &[u8]) -> Result<()> {
        self.send_pdvs(context, false, data)
    }

    /// Releases the association (A-RELEASE-RQ, wait for A-RELEASE-RP) and closes the socket.
    pub(crate) fn release(mut self) -> Result<()> {
        self.write_all(&[0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0])?;
        loop {
            match self.next_pdv()? {
                Pdv::ReleaseReplied => break,
                Pdv::ReleaseRequested => {
                    // Release collision: answer and stop.
                    self.write_all(&A_RELEASE_RP)?;
                    break;
                }
                Pdv::Value { len, .. } => {
                    self.skip(len)?;
                    self.pdu_remaining -= len;
                }
            }
        }
        self.reader.get_mut().close();
        Ok(())
    }

    /// Aborts the association (A-ABORT, service user) and closes the socket. Best effort.
    pub(crate) fn abort(mut self) {
        let _ = self.write_all(&[0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0]);
        self.reader.get_mut().close();
    }

    /// Reads a C-STORE-RQ's data set into a Part 10 file in memory: the file meta is written
    /// first (from the command and the context's transfer syntax), then the data set is appended
    /// straight from the socket. `buffer` is reused (cleared); `size_hint` sizes it (e.g. the
    /// previous instance).
    pub(crate) fn receive_instance(
        &mut self,
        context: u8,
        command: &Command,
        mut buffer: Vec<u8>,
        size_hint: usize,
    ) -> Result<Received> {
        let transfer_syntax = self.context(context).map(|c| c.transfer_syntax.clone()).unwrap_or_default();
        let sop_class = command.uid(tags::AFFECTED_SOP_CLASS_UID);
        let sop_instance = command.uid(tags::AFFECTED_SOP_INSTANCE_UID);
        let valid = !transfer_syntax.is_empty()
            && !sop_class.is_empty()
            && !sop_instance.is_empty()
            && write_part10_header(&mut buffer, &sop_class, &sop_instance, &transfer_syntax, "", size_hint).is_ok();
        if !valid {
            buffer.clear();
        }
        let header_len = buffer.len();
        self.receive_data_set(context, &mut buffer)?;
        Ok(Received { valid, header_len, bytes: buffer, sop_class, sop_instance })
    }

    /// Sends a C-STORE-RSP for `request`.
    pub(crate) fn send_store_response(&mut self, context: u8, request: &Command, status: u16) -> Result<()> {
        self.send_command(context, &response(C_STORE_RSP, request, status))
    }
}

/// A C-STORE data set received as a Part 10 file in memory.
#[derive(Debug)]
pub(crate) struct Received {
    /// Whether the command and context allowed a file meta to be written.
    pub valid: bool,
    pub header_len: usize,
    /// The whole Part 10 file (preamble, meta, data set).
    pub bytes: Vec<u8>,
    pub sop_class: String,
    pub sop_instance: String,
}

impl Received {
    pub(crate) fn data_set_len(&self) -> usize {
        self.bytes.len() - self.header_len
    }
}

/// Asks Linux to acknowledge received segments at once (TCP_QUICKACK; the kernel drops back to
/// delayed ACKs by itself, hence a call before every read). Against a sender that keeps Nagle's
/// algorithm on (DCMTK-based archives by default), delayed ACKs stall the tail of every object
/// for up to 40 ms: a 300-slice C-GET from such an Orthanc drops from about 2 s to 0.4 s.
#[cfg(target_os = "linux")]
fn quick_ack(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: `stream` owns a valid socket descriptor for the duration of the call, and the option
    // value is a c_int whose exact size is passed; setsockopt does not keep the pointer.
    let _ = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

#[cfg(not(target_os = "linux"))]
fn quick_ack(_stream: &TcpStream) {}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// The TLS error carried by an I/O error (rustls reports handshake failures and alerts so).
fn rustls_cause(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

fn io_error(peer: &str, timeout: Duration, e: std::io::Error, during: &'static str) -> Error {
    use std::io::ErrorKind as K;
    if let Some(tls) = rustls_cause(&e) {
        return Error::Tls { peer: peer.to_owned(), detail: tls.to_string() };
    }
    match e.kind() {
        K::ConnectionRefused => Error::ConnectionRefused { peer: peer.to_owned() },
        K::WouldBlock | K::TimedOut => {
            Error::Timeout { peer: peer.to_owned(), timeout_s: timeout.as_secs_f64(), during }
        }
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            Error::ConnectionLost { peer: peer.to_owned(), detail: e.to_string() }
        }
        _ => Error::Network { peer: peer.to_owned(), detail: e.to_string() },
    }
}

/// What [`connect`] is doing while `dicom-ul` negotiates (in error messages).
const REQUESTING: &str = "requesting the association";

/// Turns a `dicom-ul` association error into ours, with the peer named.
pub(crate) fn ul_error(e: dicom_ul::association::Error, peer: &str, timeout: Duration, during: &'static str) -> Error {
    use dicom_ul::association::Error as Ul;
    match &e {
        Ul::Rejected { association_rj, .. } => {
            let permanence = match association_rj.result {
                dicom_ul::pdu::AssociationRJResult::Permanent => "permanent",
                dicom_ul::pdu::AssociationRJResult::Transient => "transient",
            };
            return Error::AssociationRejected {
                peer: peer.to_owned(),
                reason: format!("{} ({permanence})", association_rj.source),
            };
        }
        Ul::NoAcceptedPresentationContexts { .. } => {
            return Error::NoPresentationContext {
                peer: peer.to_owned(),
                abstract_syntax: "any proposed abstract syntax".to_owned(),
                transfer_syntax: None,
            };
        }
        Ul::ConnectionClosed { .. } => {
            let detail = if during == REQUESTING {
                // What a DICOM TLS port (OpenSSL) does with a plain A-ASSOCIATE-RQ.
                "the peer closed the connection without answering the association request (a DICOM TLS port? \
                 then turn TLS on for this node)"
            } else {
                "the peer closed the connection"
            };
            return Error::ConnectionLost { peer: peer.to_owned(), detail: detail.to_owned() };
        }
        Ul::Aborted { .. } => {
            return Error::ConnectionLost {
                peer: peer.to_owned(),
                detail: "the peer aborted the association".to_owned(),
            };
        }
        Ul::TlsNotSupported => {
            return Error::Tls {
                peer: peer.to_owned(),
                detail: "the other side speaks TLS and this side does not (check the TLS setting of both)".to_owned(),
            };
        }
        _ => {}
    }
    // Find the TLS or I/O error underneath, if any.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Error::Tls { peer: peer.to_owned(), detail: tls.to_string() };
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(tls) = rustls_cause(io) {
                return Error::Tls { peer: peer.to_owned(), detail: tls.to_string() };
            }
            if matches!(e, Ul::TlsHandshake { .. }) && !is_timeout(io) {
                // The connection ended (or failed) inside the handshake: not a TLS peer?
                return Error::Tls {
                    peer: peer.to_owned(),
                    detail: format!("handshake failed ({io}); does the peer speak DICOM TLS on this port?"),
                };
            }
            if during == REQUESTING
                && matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::UnexpectedEof
                )
            {
                return Error::ConnectionLost {
                    peer: peer.to_owned(),
                    detail: format!(
                        "{io}, without an answer to the association request (a DICOM TLS port? then turn TLS on \
                         for this node)"
                    ),
                };
            }
            let during = if matches!(e, Ul::TlsHandshake { .. }) { "the TLS handshake" } else { during };
            return io_error(peer, timeout, std::io::Error::new(io.kind(), io.to_string()), during);
        }
        source = err.source();
    }
    Error::Network { peer: peer.to_owned(), detail: e.to_string() }
}

/// Opens an association to `node` proposing `proposals` (and the SCP role for `scp_role_classes`,
/// as C-GET needs), over TLS for a TLS node, then hands the connection to a [`Link`].
pub(crate) fn connect<'a>(
    node: &PacsNode,
    proposals: &[Proposal],
    scp_role_classes: &[String],
    cancel: Option<&'a AtomicBool>,
) -> Result<Link<'a>> {
    use dicom_ul::association::client::ClientAssociationOptions;
    node.validate()?;
    let peer = node.label();
    let mut options = ClientAssociationOptions::new()
        .calling_ae_title(node.our_ae_title.trim().to_owned())
        .called_ae_title(node.ae_title.trim().to_owned())
        .max_pdu_length(LOCAL_MAX_PDU)
        .strict(false)
        .connection_timeout(node.connect_timeout())
        .read_timeout(node.dimse_timeout())
        .write_timeout(node.dimse_timeout());
    for p in proposals {
        options = options.with_presentation_context(p.abstract_syntax.clone(), p.transfer_syntaxes.clone());
    }
    for class in scp_role_classes {
        options = options.with_role_selection(class.clone(), false, true);
    }
    let timeout = node.dimse_timeout();
    let address = (node.host.as_str(), node.port);
    if node.tls {
        let config = tls::client_config(node)?;
        let name = tls::server_name(node)?;
        let mut association = options
            .tls_config(Arc::clone(&config))
            .server_name(node.host.trim())
            .establish_tls(address)
            .map_err(|e| ul_error(e, &peer, timeout, REQUESTING))?;
        let contexts = Context::accepted(association.presentation_contexts());
        let peer_max_pdu = association.acceptor_max_pdu_length();
        let prefix = association.get_mut().1.split().to_vec();
        let stream = tls::take_client_stream(association.inner_stream(), &config, name)
            .map_err(|e| io_error(&peer, timeout, e, "connecting"))?;
        drop(association);
        return Link::new(Transport::Client(Box::new(stream)), prefix, contexts, peer_max_pdu, peer, timeout, cancel);
    }
    let mut association = options
        .tls_config(tls::unused_client_config()?)
        .establish(address)
        .map_err(|e| ul_error(e, &peer, timeout, REQUESTING))?;
    let contexts = Context::accepted(association.presentation_contexts());
    let peer_max_pdu = association.acceptor_max_pdu_length();
    let stream = association.inner_stream().try_clone().map_err(|e| io_error(&peer, timeout, e, "connecting"))?;
    let prefix = association.get_mut().1.split().to_vec();
    drop(association);
    Link::new(Transport::Plain(stream), prefix, contexts, peer_max_pdu, peer, timeout, cancel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_implicit_le() {
        let cmd = request(C_FIND_RQ, 7, "1.2.840.10008.5.1.4.1.2.2.1", true, Vec::new());
        let bytes = encode_data_set(&cmd.0, IMPLICIT_VR_LE).unwrap();
        let back = Command(decode_data_set(&bytes, IMPLICIT_VR_LE).unwrap());
        assert_eq!(back.field(), C_FIND_RQ);
        assert_eq!(back.message_id(), 7);
        assert!(back.has_data_set());
        assert_eq!(back.uid(tags::AFFECTED_SOP_CLASS_UID), "1.2.840.10008.5.1.4.1.2.2.1");
        // Group length counts every element after it, values padded to even length.
        let group_length = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        assert_eq!(group_length, bytes.len() - 12);
        let rsp = response(C_FIND_RSP, &back, 0xFF00);
        assert_eq!(rsp.responded_id(), Some(7));
        assert!(!rsp.has_data_set());
        assert_eq!(status_kind(0xFF01), StatusKind::Pending);
        assert_eq!(status_kind(0xB000), StatusKind::Warning);
        assert_eq!(status_kind(0xA801), StatusKind::Failure);
    }

    #[test]
    fn part10_header_parses_back() {
        let mut bytes =
            part10_header("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4.5", "1.2.840.10008.1.2.1", "PEER", 0).unwrap();
        let mut ds = InMemDicomObject::new_empty();
        ds.put(ui(tags::SOP_INSTANCE_UID, "1.2.3.4.5"));
        ds.put(ui(tags::SOP_CLASS_UID, "1.2.840.10008.5.1.4.1.1.7"));
        bytes.extend(encode_data_set(&ds, "1.2.840.10008.1.2.1").unwrap());
        let info = crate::file::read_info_bytes(&bytes).unwrap();
        assert_eq!(info.sop_instance_uid, "1.2.3.4.5");
        assert_eq!(info.transfer_syntax_uid, "1.2.840.10008.1.2.1");
    }
}
