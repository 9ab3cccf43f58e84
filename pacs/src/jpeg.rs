//! JPEG (ISO 10918) decoding through libjpeg-turbo 3: baseline 8-bit, 12-bit extended
//! (1.2.840.10008.1.2.4.51) and lossless (process 14, 2-16 bit).
//!
//! The default dicom-rs JPEG decoder rejects 12-bit DCT streams; libjpeg-turbo 3 decodes them
//! natively (`tj3Decompress12`). This module and `net::dimse::quick_ack` (one `setsockopt`) are
//! the only `unsafe` code in the crate.

use std::ffi::CStr;
use std::os::raw::c_int;

use turbojpeg_sys as tj;

use crate::error::{Error, Result};

/// A decoded JPEG image, samples interleaved.
#[derive(Debug)]
pub(crate) enum JpegSamples {
    U8(Vec<u8>),
    /// 9-12 bit samples (always non-negative).
    I16(Vec<i16>),
    /// 13-16 bit lossless samples.
    U16(Vec<u16>),
}

#[derive(Debug)]
pub(crate) struct JpegImage {
    pub width: u32,
    pub height: u32,
    pub components: u16,
    pub precision: u16,
    pub samples: JpegSamples,
}

/// Owns a TurboJPEG decompressor handle.
struct Handle(tj::tjhandle);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed exactly once.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

impl Handle {
    fn new() -> Result<Self> {
        // SAFETY: plain constructor call; a null return is checked.
        let handle = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as c_int) };
        if handle.is_null() {
            return Err(Error::decode("JPEG", "cannot create a libjpeg-turbo decompressor"));
        }
        Ok(Self(handle))
    }

    fn last_error(&self) -> String {
        // SAFETY: the handle is valid; tj3GetErrorStr returns a NUL-terminated static or per-handle buffer.
        unsafe {
            let ptr = tj::tj3GetErrorStr(self.0);
            if ptr.is_null() {
                "unknown libjpeg-turbo error".to_owned()
            } else {
                CStr::from_ptr(ptr).to_string_lossy().into_owned()
            }
        }
    }

    fn get(&self, param: tj::TJPARAM) -> i32 {
        // SAFETY: valid handle, parameter id from the bindings.
        unsafe { tj::tj3Get(self.0, param as c_int) }
    }
}

/// What the JPEG's own markers say about its colour transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColourMarker {
    /// A JFIF APP0 marker: the components are YCbCr.
    Jfif,
    /// An Adobe APP14 marker with its transform flag (0 = none, RGB).
    Adobe(u8),
    None,
}

/// Scans the markers before the first SOS for JFIF / Adobe colour information.
fn colour_marker(data: &[u8]) -> ColourMarker {
    let mut i = 2;
    let mut found = ColourMarker::None;
    while i + 4 <= data.len() && data[i] == 0xFF {
        let marker = data[i + 1];
        if marker == 0xDA || marker == 0xD9 {
            break;
        }
        let len = usize::from(u16::from_be_bytes([data[i + 2], data[i + 3]]));
        let payload = &data[(i + 4).min(data.len())..(i + 2 + len).min(data.len())];
        if marker == 0xE0 && payload.starts_with(b"JFIF\0") {
            found = ColourMarker::Jfif;
        } else if marker == 0xEE && payload.starts_with(b"Adobe") && payload.len() >= 12 {
            found = ColourMarker::Adobe(payload[11]);
        }
        i += 2 + len;
    }
    found
}

/// Decodes one JPEG bitstream. `declared_rgb` is the DICOM header's word that the samples are
/// RGB: when the stream has no JFIF or Adobe marker to say otherwise, its 3 components are
/// taken as they are, with no YCbCr conversion.
/// `expected` (columns, rows) is the DICOM header's size: a bitstream of another size is refused
/// before anything is allocated for it.
pub(crate) fn decode(data: &[u8], declared_rgb: bool, expected: Option<(u32, u32)>) -> Result<JpegImage> {
    let handle = Handle::new()?;
    // SAFETY: data is a valid slice for the duration of the call.
    let rc = unsafe { tj::tj3DecompressHeader(handle.0, data.as_ptr(), data.len() as _) };
    if rc != 0 {
        return Err(Error::decode("JPEG", handle.last_error()));
    }
    let width = handle.get(tj::TJPARAM_TJPARAM_JPEGWIDTH);
    let height = handle.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT);
    let precision = handle.get(tj::TJPARAM_TJPARAM_PRECISION);
    let colorspace = handle.get(tj::TJPARAM_TJPARAM_COLORSPACE);
    if width <= 0 || height <= 0 {
        return Err(Error::decode("JPEG", format!("bad dimensions {width}x{height}")));
    }
    if let Some((columns, rows)) = expected
        && (width as u32 != columns || height as u32 != rows)
    {
        return Err(Error::decode("JPEG", format!("bitstream is {width}x{height} but header says {columns}x{rows}")));
    }
    let (components, pixel_format) = match colorspace as u32 {
        c if c == tj::TJCS_TJCS_GRAY => (1u16, tj::TJPF_TJPF_GRAY),
        c if c == tj::TJCS_TJCS_RGB || c == tj::TJCS_TJCS_YCbCr => (3u16, tj::TJPF_TJPF_RGB),
        other => {
            return Err(Error::decode("JPEG", format!("unsupported JPEG colour space {other} (CMYK/YCCK)")));
        }
    };
    let len = width as usize * height as usize * components as usize;
    let subsampling = handle.get(tj::TJPARAM_TJPARAM_SUBSAMP);
    let untransformed = components == 3
        && declared_rgb
        && colorspace as u32 == tj::TJCS_TJCS_YCbCr
        && colour_marker(data) == ColourMarker::None
        && subsampling == tj::TJSAMP_TJSAMP_444;
    let samples = if precision <= 8 && untransformed {
        JpegSamples::U8(decode_planes_444(&handle, data, width as usize, height as usize)?)
    } else if precision <= 8 {
        let mut out = vec![0u8; len];
        // SAFETY: out has exactly width*height*components samples; pitch 0 = tightly packed.
        let rc =
            unsafe { tj::tj3Decompress8(handle.0, data.as_ptr(), data.len() as _, out.as_mut_ptr(), 0, pixel_format) };
        check(&handle, rc)?;
        JpegSamples::U8(out)
    } else if precision <= 12 {
        let mut out = vec![0i16; len];
        // SAFETY: as above, 16-bit container per sample.
        let rc =
            unsafe { tj::tj3Decompress12(handle.0, data.as_ptr(), data.len() as _, out.as_mut_ptr(), 0, pixel_format) };
        check(&handle, rc)?;
        JpegSamples::I16(out)
    } else {
        let mut out = vec![0u16; len];
        // SAFETY: as above.
        let rc =
            unsafe { tj::tj3Decompress16(handle.0, data.as_ptr(), data.len() as _, out.as_mut_ptr(), 0, pixel_format) };
        check(&handle, rc)?;
        JpegSamples::U16(out)
    };
    Ok(JpegImage {
        width: width as u32,
        height: height as u32,
        components,
        precision: precision.clamp(0, 16) as u16,
        samples,
    })
}

/// The three full-resolution component planes without any colour conversion, interleaved.
fn decode_planes_444(handle: &Handle, data: &[u8], width: usize, height: usize) -> Result<Vec<u8>> {
    let mut planes = [vec![0u8; width * height], vec![0u8; width * height], vec![0u8; width * height]];
    let mut pointers = [planes[0].as_mut_ptr(), planes[1].as_mut_ptr(), planes[2].as_mut_ptr()];
    let mut strides = [width as c_int; 3];
    // SAFETY: three planes of width*height bytes with matching strides, as 4:4:4 requires.
    let rc = unsafe {
        tj::tj3DecompressToYUVPlanes8(
            handle.0,
            data.as_ptr(),
            data.len() as _,
            pointers.as_mut_ptr(),
            strides.as_mut_ptr(),
        )
    };
    check(handle, rc)?;
    Ok((0..width * height).flat_map(|p| [planes[0][p], planes[1][p], planes[2][p]]).collect())
}

fn check(handle: &Handle, rc: c_int) -> Result<()> {
    if rc == 0 {
        return Ok(());
    }
    // tj3 returns -1 for errors; warnings (corrupt but decodable data) leave rc 0 unless
    // TJPARAM_STOPONWARNING is set.
    Err(Error::decode("JPEG", handle.last_error()))
}
