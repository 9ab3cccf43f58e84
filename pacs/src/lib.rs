//! # lucent-pacs
//!
//! Everything Lucent knows about DICOM data, and nothing about screens or models:
//!
//! * [`file`]: open Part 10 files whole, header-only or from bytes.
//! * [`decode`]: Pixel Data of every common transfer syntax to native samples, one frame at a time
//!   (native little/big endian, deflate, RLE, JPEG baseline / 12-bit extended / lossless through
//!   libjpeg-turbo, JPEG-LS through CharLS, JPEG 2000 through the C OpenJPEG).
//! * [`limits`]: what a file or a peer may make Lucent allocate, and the depth-limited pre-scan
//!   of element headers that runs before dicom-rs parses any file, received data set or response.
//! * [`pixels`]: the one pixel pipeline: modality LUT, VOI (windows and LUTs, LINEAR /
//!   LINEAR_EXACT / SIGMOID), MONOCHROME1 and Presentation LUT Shape, padding, palette colour.
//!   [`decode::overlays`] gives the overlay planes (60xx) of a frame.
//! * [`volume`]: series to volumes sorted by geometry, with `patient_from_voxel` and warnings.
//! * [`store`]: the crash-safe local study store (SQLite index + files), its query API, and the
//!   measurements kept per study.
//! * [`import`]: parallel import of files, folders, DICOMDIR and ZIP into the store.
//! * [`synth`]: synthetic series with known geometry, for tests and the demo.
//! * [`deid`]: de-identification (PS3.15 Annex E Basic Application Level Confidentiality Profile,
//!   Retain Longitudinal Temporal Information Modified Dates Option, keyed UID remapping).
//! * [`derive`]: derived series (e.g. denoised CT) written as new DICOM instances.
//! * [`sr`]: DICOM Comprehensive SR (TID 1500 measurement report) from a neutral document.
//! * [`net`]: DIMSE networking on `dicom-ul`: PACS nodes and their book, C-ECHO with a verdict,
//!   C-FIND (study / series / image, Study and Patient Root), C-GET and C-MOVE of a study or
//!   series into the store (one presentation context per compressed transfer syntax, progress,
//!   C-CANCEL, only what the store lacks, a report of what is missing), C-STORE SCU, and the
//!   Store SCP (allow-listed calling AE titles, events on a bounded channel).
//! * [`dicomweb`]: QIDO-RS, WADO-RS and STOW-RS against DICOMweb servers.
//! * [`secrets`]: node passwords and tokens, kept in the OS keyring or an encrypted file, never
//!   in the node book.
//!
//! This crate must not depend on egui, wgpu, winit, rfd or ort (CI checks it).
//! Errors never carry patient data.

// Linked only to enable OpenJPEG's thread pool (the `threads` feature) for dicom-pixeldata.
use openjpeg_sys as _;

pub mod attrs;
pub mod decode;
pub mod deid;
pub mod derive;
pub mod dicomweb;
mod error;
pub mod file;
#[doc(hidden)]
pub mod fuzzing;
pub mod import;
mod jpeg;
pub mod limits;
pub mod net;
pub mod pixels;
mod rle;
pub mod secrets;
pub mod sr;
pub mod store;
pub mod synth;
pub mod volume;
mod writers;

pub use attrs::{InstanceInfo, PlaneSpacing, SpacingSource, transfer_syntax_name};
pub use decode::{Frame, Photometric, Samples};
pub use error::{Error, Result};
pub use file::DecodedImage;
pub use pixels::{PixelTransform, Voi, VoiFunction, Window};
pub use volume::{StackPlan, Volume, VolumeWarning, VoxelData};
