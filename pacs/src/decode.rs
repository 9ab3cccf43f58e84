//! Pixel Data to native samples: one frame at a time, in the stored type, never 8-bit-reduced.
//!
//! Owns: transfer syntaxes, encapsulation (fragments to frames), bit unpacking, masking to
//! BitsStored with sign extension, planar-to-interleaved, and YBR to RGB colour conversion.
//! It does not apply any LUT: that is [`crate::pixels`]' job.

use std::borrow::Cow;

use dicom_core::value::Value;
use dicom_dictionary_std::{tags, uids};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde::Serialize;

use crate::attrs::{int, required_u16, string};
use crate::error::{Error, Result};
use crate::jpeg::{self, JpegSamples};

/// Explicit VR Big Endian (retired, but still found in archives).
const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";

/// Decoded samples of one frame, in the stored numeric type.
#[derive(Debug, Clone, PartialEq)]
pub enum Samples {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Samples {
    pub fn len(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::I8(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::I16(v) => v.len(),
            Self::U32(v) => v.len(),
            Self::I32(v) => v.len(),
            Self::F32(v) => v.len(),
            Self::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample `i` as f64 (no LUT applied).
    #[inline]
    pub fn get_f64(&self, i: usize) -> f64 {
        match self {
            Self::U8(v) => f64::from(v[i]),
            Self::I8(v) => f64::from(v[i]),
            Self::U16(v) => f64::from(v[i]),
            Self::I16(v) => f64::from(v[i]),
            Self::U32(v) => f64::from(v[i]),
            Self::I32(v) => f64::from(v[i]),
            Self::F32(v) => f64::from(v[i]),
            Self::F64(v) => v[i],
        }
    }

    /// Name of the stored type, for summaries.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::U8(_) => "u8",
            Self::I8(_) => "i8",
            Self::U16(_) => "u16",
            Self::I16(_) => "i16",
            Self::U32(_) => "u32",
            Self::I32(_) => "i32",
            Self::F32(_) => "f32",
            Self::F64(_) => "f64",
        }
    }

    /// Minimum and maximum sample.
    pub fn min_max(&self) -> Option<(f64, f64)> {
        if self.is_empty() {
            return None;
        }
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        for i in 0..self.len() {
            let v = self.get_f64(i);
            lo = lo.min(v);
            hi = hi.max(v);
        }
        Some((lo, hi))
    }
}

/// Photometric interpretation of decoded samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Photometric {
    /// Minimum sample is white.
    Monochrome1,
    /// Minimum sample is black.
    Monochrome2,
    /// Interleaved R, G, B.
    Rgb,
    /// Indices into the palette colour LUTs.
    PaletteColor,
}

impl Photometric {
    pub fn is_monochrome(self) -> bool {
        matches!(self, Self::Monochrome1 | Self::Monochrome2)
    }
}

/// One decoded frame. Colour frames are always interleaved RGB after decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub columns: u32,
    pub rows: u32,
    /// 1 for grey or palette indices, 3 for RGB.
    pub samples_per_pixel: u16,
    pub photometric: Photometric,
    /// BitsStored of the source (the meaningful bits of each sample).
    pub bits_stored: u16,
    pub samples: Samples,
}

impl Frame {
    pub fn pixel_count(&self) -> usize {
        self.columns as usize * self.rows as usize
    }
}

/// The Image Pixel module attributes needed to interpret Pixel Data.
#[derive(Debug, Clone)]
struct PixelModule {
    rows: u32,
    columns: u32,
    samples_per_pixel: u16,
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    planar: bool,
    photometric: String,
    frames: u32,
    /// Float (or Double Float) Pixel Data.
    float: bool,
}

impl PixelModule {
    fn read(obj: &DefaultDicomObject) -> Result<Self> {
        let rows = u32::from(required_u16(obj, tags::ROWS, "Rows")?);
        let columns = u32::from(required_u16(obj, tags::COLUMNS, "Columns")?);
        if rows == 0 || columns == 0 {
            return Err(Error::invalid("Rows/Columns", format!("image is {columns}x{rows}")));
        }
        let samples_per_pixel = int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
        if !(samples_per_pixel == 1 || samples_per_pixel == 3) {
            return Err(Error::invalid("SamplesPerPixel", format!("{samples_per_pixel} (only 1 or 3 are supported)")));
        }
        let float_data = obj.get(tags::FLOAT_PIXEL_DATA).is_some() || obj.get(tags::DOUBLE_FLOAT_PIXEL_DATA).is_some();
        let bits_allocated = if float_data && obj.get(tags::BITS_ALLOCATED).is_none() {
            if obj.get(tags::DOUBLE_FLOAT_PIXEL_DATA).is_some() { 64 } else { 32 }
        } else {
            required_u16(obj, tags::BITS_ALLOCATED, "BitsAllocated")?
        };
        if !matches!(bits_allocated, 1 | 8 | 16 | 32 | 64) {
            return Err(Error::invalid("BitsAllocated", format!("{bits_allocated}")));
        }
        let bits_stored =
            int(obj, tags::BITS_STORED).map_or(bits_allocated, |b| b.clamp(1, i64::from(bits_allocated)) as u16);
        let photometric = string(obj, tags::PHOTOMETRIC_INTERPRETATION)
            .unwrap_or_else(|| if samples_per_pixel == 3 { "RGB".into() } else { "MONOCHROME2".into() });
        Ok(Self {
            rows,
            columns,
            samples_per_pixel: samples_per_pixel as u16,
            bits_allocated,
            bits_stored,
            signed: int(obj, tags::PIXEL_REPRESENTATION) == Some(1),
            planar: int(obj, tags::PLANAR_CONFIGURATION) == Some(1),
            photometric: photometric.to_ascii_uppercase(),
            frames: int(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as u32,
            float: float_data,
        })
    }

    fn frame_samples(&self) -> usize {
        self.rows as usize * self.columns as usize * self.samples_per_pixel as usize
    }
}

/// Number of frames in the object (1 when absent).
pub fn frame_count(obj: &DefaultDicomObject) -> u32 {
    int(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).clamp(1, i64::from(u32::MAX)) as u32
}

/// Decodes frame `frame` (0-based) of an object with its pixel data loaded.
pub fn decode_frame(obj: &DefaultDicomObject, frame: u32) -> Result<Frame> {
    let has_pixels =
        [tags::PIXEL_DATA, tags::FLOAT_PIXEL_DATA, tags::DOUBLE_FLOAT_PIXEL_DATA].iter().any(|&t| obj.get(t).is_some());
    if !has_pixels {
        return Err(Error::NoPixelData {
            sop_class: obj.meta().media_storage_sop_class_uid().trim_end_matches('\0').to_owned(),
        });
    }
    let module = PixelModule::read(obj)?;
    if frame >= module.frames {
        return Err(Error::FrameOutOfRange { frame, frames: module.frames });
    }
    // Before any decoder allocates: the frame's size from the header, against the limit.
    crate::limits::Limits::current().check_frame(
        module.rows,
        module.columns,
        module.samples_per_pixel,
        u32::from(module.bits_allocated).div_ceil(8),
    )?;
    let ts_uid = obj.meta().transfer_syntax().trim_end_matches('\0').to_owned();

    if let Some(elem) = obj.get(tags::FLOAT_PIXEL_DATA).or_else(|| obj.get(tags::DOUBLE_FLOAT_PIXEL_DATA)) {
        let bytes = match elem.value() {
            Value::Primitive(p) => p.to_bytes(),
            _ => return Err(Error::invalid("FloatPixelData", "not a primitive value")),
        };
        return native_frame(&module, &bytes, frame);
    }

    let pixel_data = obj.get(tags::PIXEL_DATA).ok_or_else(|| Error::NoPixelData {
        sop_class: obj.meta().media_storage_sop_class_uid().trim_end_matches('\0').to_owned(),
    })?;

    match pixel_data.value() {
        Value::Primitive(dicom_core::PrimitiveValue::U16(words))
            if module.bits_allocated == 16 && module.samples_per_pixel == 1 && !module.float =>
        {
            // Fast path: 16-bit samples are already held as u16; no byte round trip.
            let n = module.rows as usize * module.columns as usize;
            let start = frame as usize * n;
            let words = words
                .get(start..start + n)
                .ok_or(Error::PixelDataLength { expected: (start + n) * 2, actual: words.len() * 2 })?;
            let stored = u32::from(module.bits_stored);
            let samples = if module.signed {
                if stored >= 16 {
                    Samples::I16(words.iter().map(|&w| w as i16).collect())
                } else {
                    let shift = 16 - stored;
                    Samples::I16(words.iter().map(|&w| ((w << shift) as i16) >> shift).collect())
                }
            } else {
                let mask = if stored >= 16 { u16::MAX } else { (1u16 << stored) - 1 };
                Samples::U16(words.iter().map(|&w| w & mask).collect())
            };
            Ok(Frame {
                columns: module.columns,
                rows: module.rows,
                samples_per_pixel: 1,
                photometric: mono_photometric(&module.photometric),
                bits_stored: module.bits_stored,
                samples,
            })
        }
        Value::Primitive(p) => {
            let bytes = p.to_bytes();
            // Big-endian OW is held as 16-bit words; 32-bit samples need their words swapped back.
            if module.bits_allocated == 32
                && ts_uid == EXPLICIT_VR_BIG_ENDIAN
                && matches!(p, dicom_core::PrimitiveValue::U16(_))
            {
                let swapped: Vec<u8> = bytes.chunks_exact(4).flat_map(|c| [c[2], c[3], c[0], c[1]]).collect();
                return native_frame(&module, &swapped, frame);
            }
            native_frame(&module, &bytes, frame)
        }
        Value::PixelSequence(seq) => {
            let ts = TransferSyntaxRegistry
                .get(&ts_uid)
                .ok_or_else(|| Error::UnsupportedTransferSyntax { uid: ts_uid.clone(), name: "unknown".into() })?;
            if is_jpeg_family(&ts_uid) {
                let bitstream = frame_bitstream(seq.fragments(), seq.offset_table(), module.frames, frame)?;
                return jpeg_frame(&module, &bitstream);
            }
            if ts_uid == uids::RLE_LOSSLESS {
                let bitstream = frame_bitstream(seq.fragments(), seq.offset_table(), module.frames, frame)?;
                let bytes = crate::rle::decode(
                    &bitstream,
                    module.columns as usize,
                    module.rows as usize,
                    module.samples_per_pixel as usize,
                    module.bits_allocated as usize,
                )?;
                return native_frame(&PixelModule { frames: 1, planar: false, ..module.clone() }, &bytes, 0);
            }
            if ts_uid == uids::ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN {
                let bitstream = frame_bitstream(seq.fragments(), seq.offset_table(), module.frames, frame)?;
                return native_frame(&PixelModule { frames: 1, ..module.clone() }, &bitstream, 0);
            }
            if !ts.can_decode_all() {
                return Err(Error::UnsupportedTransferSyntax { uid: ts_uid, name: ts.name().to_owned() });
            }
            // The C codecs (CharLS, OpenJPEG) size their buffers from the codestream's own header:
            // it must describe the image the DICOM header does before they see it.
            let bitstream = frame_bitstream(seq.fragments(), seq.offset_table(), module.frames, frame)?;
            if let Some((columns, rows)) = codestream_size(&bitstream)
                && (columns != module.columns || rows != module.rows)
            {
                return Err(Error::decode(
                    ts.name(),
                    format!("codestream is {columns}x{rows} but header says {}x{}", module.columns, module.rows),
                ));
            }
            let decoded = obj.decode_pixel_data_frame(frame).map_err(|e| Error::decode(ts.name(), e.to_string()))?;
            // The codecs hand back RGB for colour.
            let photometric = if module.samples_per_pixel == 3 { "RGB".into() } else { module.photometric.clone() };
            let codec_module = PixelModule { frames: 1, planar: false, photometric, ..module };
            native_frame(&codec_module, decoded.data(), 0)
        }
        Value::Sequence(_) => Err(Error::invalid("PixelData", "is a sequence")),
    }
}

/// The image size a JPEG-LS (SOF55) or JPEG 2000 (SIZ) codestream declares, read without
/// decoding: (columns, rows). `None` when neither header is found in the first bytes.
fn codestream_size(bitstream: &[u8]) -> Option<(u32, u32)> {
    let be16 = |b: &[u8], at: usize| b.get(at..at + 2).map(|v| u32::from(u16::from_be_bytes([v[0], v[1]])));
    let be32 = |b: &[u8], at: usize| b.get(at..at + 4).map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
    let head = &bitstream[..bitstream.len().min(64 * 1024)];
    // JPEG 2000: SOC then SIZ (in a raw codestream, or inside a JP2 'jp2c' box).
    if let Some(at) = memchr::memmem::find(head, &[0xFF, 0x4F, 0xFF, 0x51]) {
        let siz = at + 4;
        let (x, y, x0, y0) = (be32(head, siz + 4)?, be32(head, siz + 8)?, be32(head, siz + 12)?, be32(head, siz + 16)?);
        return Some((x.saturating_sub(x0), y.saturating_sub(y0)));
    }
    // JPEG-LS: SOI, then markers up to SOF55 (FFF7: length, precision, rows, columns).
    if head.starts_with(&[0xFF, 0xD8]) {
        let mut at = 2;
        while at + 4 <= head.len() {
            if head[at] != 0xFF {
                return None;
            }
            let marker = head[at + 1];
            if marker == 0xF7 {
                return Some((be16(head, at + 7)?, be16(head, at + 5)?));
            }
            at += 2 + usize::try_from(be16(head, at + 2)?).ok()?;
        }
    }
    None
}

fn is_jpeg_family(ts_uid: &str) -> bool {
    matches!(
        ts_uid,
        uids::JPEG_BASELINE8_BIT | uids::JPEG_EXTENDED12_BIT | uids::JPEG_LOSSLESS | uids::JPEG_LOSSLESS_SV1
    )
}

/// The compressed bitstream of one frame: one fragment per frame, all fragments for a
/// single-frame object, or the Basic Offset Table when fragments and frames differ.
fn frame_bitstream(fragments: &[Vec<u8>], offset_table: &[u32], frames: u32, frame: u32) -> Result<Vec<u8>> {
    let frame = frame as usize;
    if fragments.is_empty() {
        return Err(Error::PixelDataLength { expected: 1, actual: 0 });
    }
    if frames == 1 {
        return Ok(fragments.concat());
    }
    if fragments.len() == frames as usize {
        return Ok(fragments[frame].clone());
    }
    if offset_table.len() == frames as usize {
        // Offsets count item headers (8 bytes each) plus fragment bytes.
        let start = offset_table[frame] as usize;
        let end = offset_table.get(frame + 1).map_or(usize::MAX, |&e| e as usize);
        let mut position = 0usize;
        let mut out = Vec::new();
        for fragment in fragments {
            if position >= start && position < end {
                out.extend_from_slice(fragment);
            }
            position += 8 + fragment.len();
        }
        if !out.is_empty() {
            return Ok(out);
        }
    }
    Err(Error::invalid(
        "PixelData",
        format!("{} fragments for {frames} frames and no usable offset table", fragments.len()),
    ))
}

fn jpeg_frame(module: &PixelModule, bitstream: &[u8]) -> Result<Frame> {
    let image = jpeg::decode(bitstream, module.photometric == "RGB", Some((module.columns, module.rows)))?;
    if image.width != module.columns || image.height != module.rows {
        return Err(Error::decode(
            "JPEG",
            format!("bitstream is {}x{} but header says {}x{}", image.width, image.height, module.columns, module.rows),
        ));
    }
    if image.components != module.samples_per_pixel {
        return Err(Error::decode(
            "JPEG",
            format!(
                "bitstream has {} components but SamplesPerPixel is {}",
                image.components, module.samples_per_pixel
            ),
        ));
    }
    let photometric = if image.components == 3 { Photometric::Rgb } else { mono_photometric(&module.photometric) };
    // JPEG samples are unsigned; a signed PixelRepresentation means the bits are two's complement.
    let samples = match image.samples {
        JpegSamples::U8(v) => {
            if module.signed && module.samples_per_pixel == 1 {
                Samples::I8(v.into_iter().map(|s| s as i8).collect())
            } else {
                Samples::U8(v)
            }
        }
        JpegSamples::I16(v) => {
            if module.signed {
                let bits = u32::from(image.precision.min(module.bits_stored.max(1)));
                Samples::I16(v.into_iter().map(|s| sign_extend(i64::from(s as u16), bits) as i16).collect())
            } else {
                Samples::U16(v.into_iter().map(|s| s as u16).collect())
            }
        }
        JpegSamples::U16(v) => {
            if module.signed {
                let bits = u32::from(image.precision.min(module.bits_stored.max(1)));
                Samples::I16(v.into_iter().map(|s| sign_extend(i64::from(s), bits) as i16).collect())
            } else {
                Samples::U16(v)
            }
        }
    };
    Ok(Frame {
        columns: module.columns,
        rows: module.rows,
        samples_per_pixel: image.components,
        photometric,
        bits_stored: module.bits_stored,
        samples,
    })
}

fn mono_photometric(pi: &str) -> Photometric {
    match pi {
        "MONOCHROME1" => Photometric::Monochrome1,
        "PALETTE COLOR" => Photometric::PaletteColor,
        _ => Photometric::Monochrome2,
    }
}

#[inline]
fn sign_extend(value: i64, bits: u32) -> i64 {
    if bits == 0 || bits >= 64 {
        return value;
    }
    let shift = 64 - bits;
    (value << shift) >> shift
}

/// Interprets uncompressed little-endian bytes (as held in memory after parsing) of one frame.
fn native_frame(module: &PixelModule, bytes: &[u8], frame: u32) -> Result<Frame> {
    let pixels = module.rows as usize * module.columns as usize;
    let is_422 = module.photometric == "YBR_FULL_422" && module.samples_per_pixel == 3;
    let frame_bytes = if module.bits_allocated == 1 {
        (pixels * module.samples_per_pixel as usize).div_ceil(8)
    } else if is_422 {
        pixels * 2 * (module.bits_allocated as usize / 8)
    } else {
        module.frame_samples() * (module.bits_allocated as usize / 8)
    };
    let (start, end) = if module.bits_allocated == 1 {
        // Bit-packed frames follow one another without byte alignment.
        let bit_start = frame as usize * pixels * module.samples_per_pixel as usize;
        (bit_start / 8, (bit_start + pixels).div_ceil(8))
    } else {
        (frame as usize * frame_bytes, (frame as usize + 1) * frame_bytes)
    };
    // Some writers pad or truncate the last byte of odd-length 8-bit data; require all we need.
    let data = bytes.get(start..end).ok_or(Error::PixelDataLength { expected: end, actual: bytes.len() })?;

    let photometric_text = module.photometric.as_str();
    let samples = if module.bits_allocated == 1 {
        let bit_offset = (frame as usize * pixels) % 8;
        let mut out = Vec::with_capacity(pixels);
        for i in 0..pixels {
            let bit = bit_offset + i;
            out.push((data[bit / 8] >> (bit % 8)) & 1);
        }
        Samples::U8(out)
    } else {
        bytes_to_samples(data, module.bits_allocated, module.signed, module.bits_stored, module.float)
    };

    let mut frame = Frame {
        columns: module.columns,
        rows: module.rows,
        samples_per_pixel: module.samples_per_pixel,
        photometric: Photometric::Monochrome2,
        bits_stored: module.bits_stored,
        samples,
    };
    if module.samples_per_pixel == 1 {
        frame.photometric = mono_photometric(photometric_text);
        return Ok(frame);
    }
    if is_422 {
        frame.samples = upsample_422(&frame.samples, module.columns as usize, module.rows as usize)?;
    } else if module.planar {
        frame.samples = planar_to_interleaved(&frame.samples, pixels);
    }
    if photometric_text.starts_with("YBR_FULL") {
        frame.samples = ybr_full_to_rgb(&frame.samples, module.bits_stored);
    } else if photometric_text != "RGB" {
        return Err(Error::invalid(
            "PhotometricInterpretation",
            format!("{photometric_text} with 3 samples is not supported"),
        ));
    }
    frame.photometric = Photometric::Rgb;
    Ok(frame)
}

fn bytes_to_samples(data: &[u8], bits_allocated: u16, signed: bool, bits_stored: u16, is_float: bool) -> Samples {
    let stored = u32::from(bits_stored);
    match (bits_allocated, signed, is_float) {
        (8, false, _) => Samples::U8(mask_u8(data, stored)),
        (8, true, _) => {
            Samples::I8(data.iter().map(|&b| sign_extend(i64::from(b & mask8(stored)), stored) as i8).collect())
        }
        (16, false, _) => {
            let mask = if stored >= 16 { u16::MAX } else { (1u16 << stored) - 1 };
            Samples::U16(data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) & mask).collect())
        }
        (16, true, _) => {
            if stored >= 16 {
                Samples::I16(data.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect())
            } else {
                let mask = (1u16 << stored) - 1;
                Samples::I16(
                    data.chunks_exact(2)
                        .map(|c| sign_extend(i64::from(u16::from_le_bytes([c[0], c[1]]) & mask), stored) as i16)
                        .collect(),
                )
            }
        }
        (32, _, true) => {
            Samples::F32(data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        }
        (32, false, false) => {
            let mask = if stored >= 32 { u32::MAX } else { (1u32 << stored) - 1 };
            Samples::U32(data.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & mask).collect())
        }
        (32, true, false) => Samples::I32(
            data.chunks_exact(4)
                .map(|c| sign_extend(i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])), stored.min(32)) as i32)
                .collect(),
        ),
        _ => Samples::F64(
            data.chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        ),
    }
}

fn mask8(stored: u32) -> u8 {
    if stored >= 8 { u8::MAX } else { (1u8 << stored) - 1 }
}

fn mask_u8(data: &[u8], stored: u32) -> Vec<u8> {
    let mask = mask8(stored);
    if mask == u8::MAX { data.to_vec() } else { data.iter().map(|&b| b & mask).collect() }
}

macro_rules! map_samples {
    ($samples:expr, $v:ident => $body:expr) => {
        match $samples {
            Samples::U8($v) => Samples::U8($body),
            Samples::I8($v) => Samples::I8($body),
            Samples::U16($v) => Samples::U16($body),
            Samples::I16($v) => Samples::I16($body),
            Samples::U32($v) => Samples::U32($body),
            Samples::I32($v) => Samples::I32($body),
            Samples::F32($v) => Samples::F32($body),
            Samples::F64($v) => Samples::F64($body),
        }
    };
}

fn planar_to_interleaved(samples: &Samples, pixels: usize) -> Samples {
    fn go<T: Copy>(v: &[T], pixels: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(v.len());
        for i in 0..pixels {
            for plane in 0..3 {
                out.push(v[plane * pixels + i]);
            }
        }
        out
    }
    map_samples!(samples, v => go(v, pixels))
}

/// YBR_FULL_422: each pair of pixels is stored as Y1 Y2 Cb Cr.
fn upsample_422(samples: &Samples, columns: usize, rows: usize) -> Result<Samples> {
    fn go<T: Copy>(v: &[T], columns: usize, rows: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(columns * rows * 3);
        let row_len = columns.div_ceil(2) * 4;
        for r in 0..rows {
            let row = &v[r * row_len..(r + 1) * row_len];
            for c in 0..columns {
                let pair = &row[(c / 2) * 4..(c / 2) * 4 + 4];
                out.extend_from_slice(&[pair[c % 2], pair[2], pair[3]]);
            }
        }
        out
    }
    let needed = columns.div_ceil(2) * 4 * rows;
    if samples.len() < needed {
        return Err(Error::PixelDataLength { expected: needed, actual: samples.len() });
    }
    Ok(map_samples!(samples, v => go(v, columns, rows)))
}

/// YBR_FULL to RGB (PS3.3 C.7.6.3.1.2), rounding to the nearest integer and clamping.
fn ybr_full_to_rgb(samples: &Samples, bits_stored: u16) -> Samples {
    let max = f64::from((1u32 << bits_stored.min(16)) - 1);
    let half = (max + 1.0) / 2.0;
    let convert = |y: f64, cb: f64, cr: f64| {
        let r = y + 1.402 * (cr - half);
        let g = y - 0.344_136 * (cb - half) - 0.714_136 * (cr - half);
        let b = y + 1.772 * (cb - half);
        [r, g, b].map(|c| c.round().clamp(0.0, max))
    };
    match samples {
        Samples::U8(v) => Samples::U8(
            v.chunks_exact(3)
                .flat_map(|p| convert(f64::from(p[0]), f64::from(p[1]), f64::from(p[2])).map(|c| c as u8))
                .collect(),
        ),
        Samples::U16(v) => Samples::U16(
            v.chunks_exact(3)
                .flat_map(|p| convert(f64::from(p[0]), f64::from(p[1]), f64::from(p[2])).map(|c| c as u16))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Raw bytes of the (native) pixel data, for callers that only need a checksum.
pub fn native_bytes(obj: &DefaultDicomObject) -> Option<Cow<'_, [u8]>> {
    match obj.get(tags::PIXEL_DATA)?.value() {
        Value::Primitive(p) => Some(p.to_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_extension_of_12_bit_values() {
        assert_eq!(sign_extend(0x0FFF, 12), -1);
        assert_eq!(sign_extend(0x0800, 12), -2048);
        assert_eq!(sign_extend(0x07FF, 12), 2047);
    }

    #[test]
    fn masks_high_bits_of_unsigned_12_bit_data() {
        // 0xF123 with 12 stored bits: the overlay bits above are dropped.
        let s = bytes_to_samples(&[0x23, 0xF1], 16, false, 12, false);
        assert_eq!(s, Samples::U16(vec![0x0123]));
        let s = bytes_to_samples(&[0xFF, 0xFF], 16, true, 12, false);
        assert_eq!(s, Samples::I16(vec![-1]));
    }

    #[test]
    fn ybr_grey_maps_to_equal_rgb() {
        let s = ybr_full_to_rgb(&Samples::U8(vec![100, 128, 128]), 8);
        assert_eq!(s, Samples::U8(vec![100, 100, 100]));
    }

    #[test]
    fn upsample_422_duplicates_chroma() {
        let s = upsample_422(&Samples::U8(vec![10, 20, 1, 2]), 2, 1).unwrap();
        assert_eq!(s, Samples::U8(vec![10, 1, 2, 20, 1, 2]));
    }
}

/// One overlay plane (groups 60xx) for a frame: a bitmap of 0/1 bytes placed on the image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OverlayBitmap {
    pub group: u16,
    pub rows: u32,
    pub columns: u32,
    /// Image pixel (column, row), 0-based, under the overlay's top-left bit.
    pub origin: [i32; 2],
    pub label: String,
    /// One byte per overlay pixel, 0 or 1, row-major.
    #[serde(skip)]
    pub bits: Vec<u8>,
}

/// The overlay planes that apply to `frame` (0-based). Broken overlays are skipped: they are
/// annotations, and a bad one must not stop the image from showing.
pub fn overlays(obj: &DefaultDicomObject, frame: u32) -> Vec<OverlayBitmap> {
    let Ok(planes) = obj.decode_overlays() else { return Vec::new() };
    planes
        .into_iter()
        .filter_map(|plane| {
            let first = plane.image_frame_origin().max(1) - 1;
            let index = frame.checked_sub(first).filter(|i| *i < plane.number_of_frames())?;
            let bits = plane.frame_data(index).ok()?.to_vec();
            let [row, column] = plane.origin();
            Some(OverlayBitmap {
                group: plane.group(),
                rows: u32::from(plane.rows()),
                columns: u32::from(plane.columns()),
                origin: [column - 1, row - 1],
                label: plane.label().unwrap_or_default().to_owned(),
                bits,
            })
        })
        .filter(|o| o.bits.len() == o.rows as usize * o.columns as usize && o.bits.iter().any(|&b| b != 0))
        .collect()
}
