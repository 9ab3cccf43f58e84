//! What a file or a peer may make Lucent allocate, and the pre-scan that enforces it before
//! dicom-rs parses anything.
//!
//! dicom-rs sizes buffers from element lengths and recurses into nested sequences, so a file of a
//! few kilobytes could ask for gigabytes, or overflow the stack with a sequence nested ten
//! thousand deep (an overflow aborts the process; no `catch_unwind` stops it). [`prescan_bytes`]
//! and [`prescan_file`] walk the element headers first, iteratively, without reading values:
//! every defined length must fit in the bytes that are there, and sequences may nest at most
//! [`Limits::max_sequence_depth`] deep. Only then does dicom-rs parse. The decoders are given the
//! expected frame size ([`Limits::max_frame_bytes`]) before they allocate.
//!
//! The limits have sane defaults and can be set per process with environment variables
//! (`LUCENT_MAX_SEQUENCE_DEPTH`, `LUCENT_MAX_FRAME_MB`, `LUCENT_MAX_OBJECT_MB`,
//! `LUCENT_MAX_ZIP_ENTRY_MB`), read once.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::OnceLock;

use dicom_core::VR;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_dictionary_std::StandardDataDictionary;

use crate::error::{Error, Result};

/// Limits on what input may make Lucent allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of sequences accepted (real objects rarely pass 6).
    pub max_sequence_depth: usize,
    /// Largest decoded frame, bytes (rows x columns x samples x bytes per sample).
    pub max_frame_bytes: u64,
    /// Largest object (a file, a received data set, an inflated deflate data set), bytes.
    pub max_object_bytes: u64,
    /// Largest inflated ZIP entry, bytes.
    pub max_zip_entry_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sequence_depth: 64,
            max_frame_bytes: 1 << 30,
            max_object_bytes: 4 << 30,
            max_zip_entry_bytes: 2 << 30,
        }
    }
}

impl Limits {
    /// The limits in force: the defaults, with any `LUCENT_MAX_*` environment variable applied.
    pub fn current() -> &'static Self {
        static CURRENT: OnceLock<Limits> = OnceLock::new();
        CURRENT.get_or_init(|| {
            let mut limits = Self::default();
            let read = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse::<u64>().ok());
            if let Some(v) = read("LUCENT_MAX_SEQUENCE_DEPTH") {
                limits.max_sequence_depth = v.clamp(1, 10_000) as usize;
            }
            if let Some(mb) = read("LUCENT_MAX_FRAME_MB") {
                limits.max_frame_bytes = mb.max(1) << 20;
            }
            if let Some(mb) = read("LUCENT_MAX_OBJECT_MB") {
                limits.max_object_bytes = mb.max(1) << 20;
            }
            if let Some(mb) = read("LUCENT_MAX_ZIP_ENTRY_MB") {
                limits.max_zip_entry_bytes = mb.max(1) << 20;
            }
            limits
        })
    }

    /// Checks the size of a whole object (`what`: what it is, for the message).
    pub fn check_object(&self, what: &'static str, size: u64) -> Result<()> {
        if size > self.max_object_bytes {
            return Err(Error::LimitExceeded {
                what,
                size,
                limit: self.max_object_bytes,
                setting: "LUCENT_MAX_OBJECT_MB",
            });
        }
        Ok(())
    }

    /// Checks a frame's decoded size before anything is allocated for it.
    pub fn check_frame(&self, rows: u32, columns: u32, samples: u16, bytes_per_sample: u32) -> Result<u64> {
        let bytes = u64::from(rows) * u64::from(columns) * u64::from(samples) * u64::from(bytes_per_sample);
        if bytes > self.max_frame_bytes {
            return Err(Error::LimitExceeded {
                what: "decoded frame",
                size: bytes,
                limit: self.max_frame_bytes,
                setting: "LUCENT_MAX_FRAME_MB",
            });
        }
        Ok(bytes)
    }
}

/// Where the pre-scan reads from: a byte slice or a file, with its length known.
trait Source {
    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()>;
    fn skip(&mut self, n: u64) -> std::io::Result<()>;
    fn seek_to(&mut self, pos: u64) -> std::io::Result<()>;
    fn position(&self) -> u64;
    fn len(&self) -> u64;
}

struct SliceSource<'a> {
    bytes: &'a [u8],
    pos: u64,
}

impl Source for SliceSource<'_> {
    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(self.pos).unwrap_or(usize::MAX);
        let end = start.checked_add(buf.len()).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else { return Err(std::io::ErrorKind::UnexpectedEof.into()) };
        buf.copy_from_slice(&self.bytes[start..end]);
        self.pos = end as u64;
        Ok(())
    }
    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        self.pos = self.pos.saturating_add(n).min(self.len());
        Ok(())
    }
    fn seek_to(&mut self, pos: u64) -> std::io::Result<()> {
        self.pos = pos.min(self.len());
        Ok(())
    }
    fn position(&self) -> u64 {
        self.pos
    }
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
}

struct FileSource {
    reader: BufReader<std::fs::File>,
    pos: u64,
    len: u64,
}

impl Source for FileSource {
    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.reader.read_exact(buf)?;
        self.pos += buf.len() as u64;
        Ok(())
    }
    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        let n = n.min(self.len.saturating_sub(self.pos));
        self.reader.seek_relative(i64::try_from(n).unwrap_or(i64::MAX))?;
        self.pos += n;
        Ok(())
    }
    fn seek_to(&mut self, pos: u64) -> std::io::Result<()> {
        let pos = pos.min(self.len);
        self.reader.seek(SeekFrom::Start(pos))?;
        self.pos = pos;
        Ok(())
    }
    fn position(&self) -> u64 {
        self.pos
    }
    fn len(&self) -> u64 {
        self.len
    }
}

/// How a data set's elements are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Encoding {
    pub explicit_vr: bool,
    pub big_endian: bool,
}

impl Encoding {
    const EXPLICIT_LE: Self = Self { explicit_vr: true, big_endian: false };

    /// The encoding of a transfer syntax's data set (`None` for deflate: inflate first).
    pub(crate) fn of(transfer_syntax: &str) -> Option<Self> {
        match transfer_syntax.trim_end_matches(['\0', ' ']) {
            "1.2.840.10008.1.2" => Some(Self { explicit_vr: false, big_endian: false }),
            "1.2.840.10008.1.2.2" => Some(Self { explicit_vr: true, big_endian: true }),
            "1.2.840.10008.1.2.1.99" | "1.2.840.10008.1.2.4.95" => None,
            _ => Some(Self::EXPLICIT_LE),
        }
    }
}

/// Pre-scans a Part 10 object in memory (with or without the 128-byte preamble), up to Pixel
/// Data when `stop_at_pixel_data`.
pub(crate) fn prescan_bytes(bytes: &[u8], stop_at_pixel_data: bool) -> Result<()> {
    let limits = Limits::current();
    limits.check_object("DICOM object", bytes.len() as u64)?;
    let mut source = SliceSource { bytes, pos: 0 };
    prescan_part10(&mut source, stop_at_pixel_data, limits)
}

/// Pre-scans a Part 10 file without reading its values.
pub(crate) fn prescan_file(path: &Path, stop_at_pixel_data: bool) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut source = FileSource { reader: BufReader::with_capacity(16 * 1024, file), pos: 0, len };
    prescan_part10(&mut source, stop_at_pixel_data, Limits::current())
}

/// Pre-scans a bare data set (no preamble, no file meta) in `encoding`.
pub(crate) fn prescan_data_set(bytes: &[u8], transfer_syntax: &str) -> Result<()> {
    let limits = Limits::current();
    let Some(encoding) = Encoding::of(transfer_syntax) else {
        let inflated = inflate_capped(bytes, limits)?;
        let mut source = SliceSource { bytes: &inflated, pos: 0 };
        return scan(&mut source, Encoding::EXPLICIT_LE, false, limits).map(|_| ());
    };
    let mut source = SliceSource { bytes, pos: 0 };
    scan(&mut source, encoding, false, limits).map(|_| ())
}

/// Inflates a deflated data set (raw deflate, PS3.5 A.5), refusing one that inflates past
/// [`Limits::max_object_bytes`] without holding more than that.
fn inflate_capped(compressed: &[u8], limits: &Limits) -> Result<Vec<u8>> {
    let mut inflated = Vec::new();
    flate2::read::DeflateDecoder::new(compressed)
        .take(limits.max_object_bytes.saturating_add(1))
        .read_to_end(&mut inflated)
        .map_err(|e| Error::NotDicom { reason: format!("the deflated data set does not inflate: {e}") })?;
    limits.check_object("inflated data set", inflated.len() as u64)?;
    Ok(inflated)
}

/// Pre-scans a bare data set and gives the value length of its native (defined-length) Pixel
/// Data; `None` when it has none, it is encapsulated, or the data set is deflated.
pub fn pixel_data_value_length(bytes: &[u8], transfer_syntax: &str) -> Result<Option<u64>> {
    let Some(encoding) = Encoding::of(transfer_syntax) else { return Ok(None) };
    let mut source = SliceSource { bytes, pos: 0 };
    scan(&mut source, encoding, false, Limits::current())
}

fn prescan_part10(source: &mut dyn Source, stop_at_pixel_data: bool, limits: &Limits) -> Result<()> {
    let not_dicom = |reason: &str| Error::NotDicom { reason: reason.to_owned() };
    let mut head = [0u8; 132];
    let read = source.len().min(132) as usize;
    source.read_exact(&mut head[..read]).map_err(|e| not_dicom(&e.to_string()))?;
    if read == 132 && &head[128..132] == b"DICM" {
        source.seek_to(132).map_err(|e| not_dicom(&e.to_string()))?;
    } else if read >= 4 && &head[..4] == b"DICM" {
        // No preamble.
        source.seek_to(4).map_err(|e| not_dicom(&e.to_string()))?;
    } else {
        // Not Part 10: dicom-rs says so.
        return Ok(());
    }
    // The file meta group: explicit VR little endian, group 0002 only.
    let mut transfer_syntax = String::new();
    loop {
        let start = source.position();
        if source.len() - start < 8 {
            return Ok(());
        }
        let mut tag = [0u8; 4];
        source.read_exact(&mut tag).map_err(|e| not_dicom(&e.to_string()))?;
        if u16::from_le_bytes([tag[0], tag[1]]) != 0x0002 {
            // The data set starts here, in the transfer syntax's encoding.
            source.seek_to(start).map_err(|e| not_dicom(&e.to_string()))?;
            let Some(encoding) = Encoding::of(&transfer_syntax) else {
                // Deflated: inflate at most the object limit, then scan what dicom-rs will parse.
                let mut compressed = vec![0u8; usize::try_from(source.len() - start).unwrap_or(usize::MAX)];
                source.read_exact(&mut compressed).map_err(|e| not_dicom(&e.to_string()))?;
                let inflated = inflate_capped(&compressed, limits)?;
                let mut inner = SliceSource { bytes: &inflated, pos: 0 };
                return scan(&mut inner, Encoding::EXPLICIT_LE, stop_at_pixel_data, limits).map(|_| ());
            };
            return scan(source, encoding, stop_at_pixel_data, limits).map(|_| ());
        }
        let (_, len) = explicit_header(source, false)?;
        let len = u64::from(len);
        if len == u64::from(u32::MAX) || len > source.len() - source.position() {
            return Err(Error::invalid("file meta", format!("an element claims {len} bytes past the end")));
        }
        if tag == [0x02, 0x00, 0x10, 0x00] && len <= 64 {
            let mut value = vec![0u8; len as usize];
            source.read_exact(&mut value).map_err(|e| not_dicom(&e.to_string()))?;
            transfer_syntax = String::from_utf8_lossy(&value).trim_end_matches(['\0', ' ']).to_owned();
        } else {
            source.skip(len).map_err(|e| not_dicom(&e.to_string()))?;
        }
    }
}

/// What a level of the scan is inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// The data set itself, or an item: elements.
    Elements { end: Option<u64>, explicit_vr: bool },
    /// A sequence: items.
    Sequence { end: Option<u64>, explicit_vr: bool },
    /// Encapsulated Pixel Data: fragments.
    Fragments,
}

const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_END: (u16, u16) = (0xFFFE, 0xE0DD);
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);
const UNDEFINED: u32 = u32::MAX;

/// The iterative walk over element headers (no recursion: depth costs heap, not stack). Gives the
/// value length of the top-level native Pixel Data when it passed one.
fn scan(source: &mut dyn Source, encoding: Encoding, stop_at_pixel_data: bool, limits: &Limits) -> Result<Option<u64>> {
    let io = |e: std::io::Error| Error::NotDicom { reason: e.to_string() };
    let mut stack = vec![Level::Elements { end: None, explicit_vr: encoding.explicit_vr }];
    let mut depth = 0usize;
    let mut pixel_data_len = None;
    loop {
        let pos = source.position();
        let Some(&level) = stack.last() else { return Ok(pixel_data_len) };
        let end = match level {
            Level::Elements { end, .. } | Level::Sequence { end, .. } => end,
            Level::Fragments => None,
        };
        if let Some(end) = end
            && pos >= end
        {
            if matches!(level, Level::Sequence { .. }) {
                depth -= 1;
            }
            stack.pop();
            continue;
        }
        // The end, or a truncated object: nothing more to allocate for; dicom-rs reports the
        // truncation.
        if source.len() - pos < 8 {
            return Ok(pixel_data_len);
        }
        let mut raw = [0u8; 4];
        source.read_exact(&mut raw).map_err(io)?;
        let tag = if encoding.big_endian && level != Level::Fragments {
            (u16::from_be_bytes([raw[0], raw[1]]), u16::from_be_bytes([raw[2], raw[3]]))
        } else {
            (u16::from_le_bytes([raw[0], raw[1]]), u16::from_le_bytes([raw[2], raw[3]]))
        };
        let delimiter_like = tag.0 == 0xFFFE;
        let big = encoding.big_endian;
        match level {
            Level::Sequence { explicit_vr, .. } => {
                let len = read_u32(source, big)?;
                match tag {
                    ITEM => {
                        let item_end = defined_end(source, tag, len)?;
                        stack.push(Level::Elements { end: item_end, explicit_vr });
                    }
                    SEQUENCE_END => {
                        depth -= 1;
                        stack.pop();
                    }
                    // Not an item: dicom-rs refuses it.
                    _ => return Ok(pixel_data_len),
                }
            }
            Level::Fragments => {
                let len = read_u32(source, false)?;
                match tag {
                    ITEM => {
                        let left = source.len() - source.position();
                        if len == UNDEFINED || u64::from(len) > left {
                            return Err(too_long(tag, u64::from(len), left));
                        }
                        source.skip(u64::from(len)).map_err(io)?;
                    }
                    SEQUENCE_END => {
                        stack.pop();
                    }
                    _ => return Ok(pixel_data_len),
                }
            }
            Level::Elements { explicit_vr, end: item_end } => {
                if delimiter_like {
                    let _len = read_u32(source, big)?;
                    // Only an undefined-length item ends at a delimiter; a stray one (at the top
                    // level, say) is skipped as dicom-rs skips it, and the scan goes on (found
                    // by fuzzing: stopping there let an element after it through).
                    if tag == ITEM_END && item_end.is_none() && stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
                if tag == PIXEL_DATA && stack.len() == 1 && stop_at_pixel_data {
                    return Ok(None);
                }
                let (vr, len) = if explicit_vr {
                    explicit_header(source, big)?
                } else {
                    let len = read_u32(source, big)?;
                    let vr = StandardDataDictionary
                        .by_tag(dicom_core::Tag(tag.0, tag.1))
                        .map_or(VR::UN, |entry| entry.vr().relaxed());
                    (vr, len)
                };
                // A binary value whose length is not a whole number of values: dicom-rs reads the
                // whole values and then takes the rest as the next element's header, whose length
                // can be anything (found by fuzzing: gigabytes from 104 bytes).
                if len != UNDEFINED
                    && let Some(size) = value_size(vr, explicit_vr)
                    && len % size != 0
                {
                    return Err(Error::invalid(
                        "element length",
                        format!(
                            "({:04X},{:04X}) {vr:?} has {len} bytes, not a whole number of {size}-byte values",
                            tag.0, tag.1
                        ),
                    ));
                }
                let is_sequence = vr == VR::SQ || (vr == VR::UN && len == UNDEFINED);
                if is_sequence {
                    depth += 1;
                    if depth > limits.max_sequence_depth {
                        return Err(Error::LimitExceeded {
                            what: "sequence nesting depth",
                            size: depth as u64,
                            limit: limits.max_sequence_depth as u64,
                            setting: "LUCENT_MAX_SEQUENCE_DEPTH",
                        });
                    }
                    let seq_end = defined_end(source, tag, len)?;
                    // PS3.5 says an undefined-length UN holds implicit VR little endian items, but
                    // dicom-rs 0.10 reads them in the data set's own encoding: scan what it will
                    // parse (found by fuzzing pydicom's UN_sequence.dcm).
                    let inner_explicit = explicit_vr;
                    stack.push(Level::Sequence { end: seq_end, explicit_vr: inner_explicit });
                } else if len == UNDEFINED {
                    if tag == PIXEL_DATA {
                        stack.push(Level::Fragments);
                    } else {
                        // dicom-rs refuses undefined lengths elsewhere.
                        return Ok(pixel_data_len);
                    }
                } else {
                    let left = source.len() - source.position();
                    if u64::from(len) > left {
                        return Err(too_long(tag, u64::from(len), left));
                    }
                    if tag == PIXEL_DATA && stack.len() == 1 {
                        pixel_data_len = Some(u64::from(len));
                    }
                    source.skip(u64::from(len)).map_err(io)?;
                }
            }
        }
    }
}

fn too_long(tag: (u16, u16), len: u64, left: u64) -> Error {
    Error::invalid(
        "element length",
        format!("({:04X},{:04X}) claims {len} bytes where only {left} remain", tag.0, tag.1),
    )
}

/// Where a sequence or item of `len` bytes starting here ends (`None`: undefined length); an
/// error when it claims more bytes than remain.
fn defined_end(source: &dyn Source, tag: (u16, u16), len: u32) -> Result<Option<u64>> {
    if len == UNDEFINED {
        return Ok(None);
    }
    let left = source.len() - source.position();
    if u64::from(len) > left {
        return Err(too_long(tag, u64::from(len), left));
    }
    Ok(Some(source.position() + u64::from(len)))
}

/// The size of one value of a fixed-size binary VR. With an implicit VR (from the dictionary),
/// only the numeric VRs whose dictionary entry is unambiguous.
fn value_size(vr: VR, explicit_vr: bool) -> Option<u32> {
    match vr {
        VR::US | VR::SS => Some(2),
        VR::UL | VR::SL | VR::FL | VR::AT => Some(4),
        VR::FD | VR::SV | VR::UV => Some(8),
        VR::OW if explicit_vr => Some(2),
        VR::OF | VR::OL if explicit_vr => Some(4),
        VR::OD | VR::OV if explicit_vr => Some(8),
        _ => None,
    }
}

fn read_u32(source: &mut dyn Source, big_endian: bool) -> Result<u32> {
    let mut b = [0u8; 4];
    source.read_exact(&mut b).map_err(|e| Error::NotDicom { reason: e.to_string() })?;
    Ok(if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
}

/// Reads an explicit VR element header after its tag: the VR and the value length.
fn explicit_header(source: &mut dyn Source, big_endian: bool) -> Result<(VR, u32)> {
    let io = |e: std::io::Error| Error::NotDicom { reason: e.to_string() };
    let mut vr_bytes = [0u8; 2];
    source.read_exact(&mut vr_bytes).map_err(io)?;
    // dicom-rs takes an unknown VR as UN.
    let vr = VR::from_binary(vr_bytes).unwrap_or(VR::UN);
    let long = matches!(
        vr,
        VR::OB
            | VR::OD
            | VR::OF
            | VR::OL
            | VR::OV
            | VR::OW
            | VR::SQ
            | VR::SV
            | VR::UC
            | VR::UN
            | VR::UR
            | VR::UT
            | VR::UV
    );
    if long {
        let mut reserved = [0u8; 2];
        source.read_exact(&mut reserved).map_err(io)?;
        Ok((vr, read_u32(source, big_endian)?))
    } else {
        let mut b = [0u8; 2];
        source.read_exact(&mut b).map_err(io)?;
        let len = if big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) };
        Ok((vr, u32::from(len)))
    }
}
