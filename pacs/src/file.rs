//! Opening DICOM Part 10 files and objects: whole, header-only, or from bytes.

use std::io::Read;
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};

use crate::attrs::InstanceInfo;
use crate::decode::{self, Frame};
use crate::error::{Error, Result};
use crate::pixels::PixelTransform;

/// Checks the 128-byte preamble + "DICM" of a Part 10 file without parsing it.
pub fn has_part10_prefix(path: &Path) -> Result<bool> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = [0u8; 132];
    match file.read_exact(&mut head) {
        Ok(()) => Ok(&head[128..132] == b"DICM"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn not_dicom(e: impl std::fmt::Display) -> Error {
    Error::NotDicom { reason: e.to_string() }
}

/// Opens a whole file, pixel data included.
pub fn open(path: &Path) -> Result<DefaultDicomObject> {
    if !path.is_file() {
        return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")));
    }
    crate::limits::prescan_file(path, false)?;
    OpenFileOptions::new().open_file(path).map_err(not_dicom)
}

/// Opens the header only (everything before Pixel Data): cheap, for indexing and sorting.
pub fn open_header(path: &Path) -> Result<DefaultDicomObject> {
    if !path.is_file() {
        return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")));
    }
    crate::limits::prescan_file(path, true)?;
    OpenFileOptions::new().read_until(tags::PIXEL_DATA).open_file(path).map_err(not_dicom)
}

/// Parses a Part 10 object from bytes (with or without the 128-byte preamble).
pub fn open_bytes(bytes: &[u8]) -> Result<DefaultDicomObject> {
    crate::limits::prescan_bytes(bytes, false)?;
    let body = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" { &bytes[128..] } else { bytes };
    OpenFileOptions::new().read_preamble(dicom_object::file::ReadPreamble::Never).from_reader(body).map_err(not_dicom)
}

/// Summary of the header of an opened object.
pub fn info(obj: &DefaultDicomObject) -> Result<InstanceInfo> {
    let has_pixels = obj.get(tags::PIXEL_DATA).is_some()
        || obj.get(tags::FLOAT_PIXEL_DATA).is_some()
        || obj.get(tags::DOUBLE_FLOAT_PIXEL_DATA).is_some();
    InstanceInfo::from_object(obj, obj.meta().transfer_syntax(), has_pixels)
}

/// Reads a file's header summary. Header-only: Pixel Data presence is taken from the header read.
pub fn read_info(path: &Path) -> Result<InstanceInfo> {
    let obj = open_header(path)?;
    let mut summary = InstanceInfo::from_object(&obj, obj.meta().transfer_syntax(), false)?;
    summary.has_pixel_data = summary.rows > 0 && summary.columns > 0;
    Ok(summary)
}

/// Reads the header summary of a Part 10 object held in memory (with or without the preamble),
/// stopping before Pixel Data. Pixel Data presence is taken from the header, as in [`read_info`].
pub fn read_info_bytes(bytes: &[u8]) -> Result<InstanceInfo> {
    crate::limits::prescan_bytes(bytes, true)?;
    let body = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" { &bytes[128..] } else { bytes };
    let obj = OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Never)
        .read_until(tags::PIXEL_DATA)
        .from_reader(body)
        .map_err(not_dicom)?;
    let mut summary = InstanceInfo::from_object(&obj, obj.meta().transfer_syntax(), false)?;
    summary.has_pixel_data = summary.rows > 0 && summary.columns > 0;
    Ok(summary)
}

/// One decoded frame with the transform that interprets it.
#[derive(Debug, Clone)]
pub struct DecodedImage {
    pub info: InstanceInfo,
    pub frame_index: u32,
    pub frame: Frame,
    pub transform: PixelTransform,
    /// Overlay planes (60xx) that apply to this frame.
    pub overlays: Vec<decode::OverlayBitmap>,
}

/// Decodes frame `frame_index` of an opened object.
pub fn decode_image(obj: &DefaultDicomObject, frame_index: u32) -> Result<DecodedImage> {
    let info = info(obj)?;
    // A modality transform that is not a number is an error, never slope 1 / intercept 0.
    info.checked_rescale()?;
    let frame = decode::decode_frame(obj, frame_index)?;
    let transform = PixelTransform::from_object(obj, frame_index, &frame);
    let overlays = decode::overlays(obj, frame_index);
    Ok(DecodedImage { info, frame_index, frame, transform, overlays })
}

/// Opens a file and decodes one frame.
pub fn load_image(path: &Path, frame_index: u32) -> Result<DecodedImage> {
    decode_image(&open(path)?, frame_index)
}

/// Reads the headers of many files on `threads` named workers, results in input order.
pub fn read_infos(paths: &[std::path::PathBuf], threads: usize) -> Vec<Result<InstanceInfo>> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<InstanceInfo>>>> = paths.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for t in 0..threads.max(1).min(paths.len().max(1)) {
            let (next, slots) = (&next, &slots);
            let worker = move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = paths.get(i) else { break };
                    let result = read_info(path);
                    if let Ok(mut slot) = slots[i].lock() {
                        *slot = Some(result);
                    }
                }
            };
            if std::thread::Builder::new().name(format!("lucent-header-{t}")).spawn_scoped(scope, worker).is_err() {
                break;
            }
        }
    });
    slots
        .into_iter()
        .zip(paths)
        .map(|(slot, path)| {
            slot.into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| Err(Error::io(path, std::io::Error::other("no worker thread could read this file"))))
        })
        .collect()
}
