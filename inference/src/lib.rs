//! # lucent-inference
//!
//! Everything Lucent knows about AI models, and nothing about DICOM files or screens: images and
//! volumes come in as plain arrays with the metadata structs defined here.
//!
//! * [`runtime`]: finds `libonnxruntime.so.1.31.1` (never downloads it) and holds the process's one
//!   ONNX Runtime environment.
//! * [`manifest`]: the TOML manifest beside each `.onnx` (identity, provenance, inputs,
//!   preprocessing, outputs, labels), validated with errors that name the field.
//! * [`registry`]: scans model folders, verifies checksums and the model-vs-manifest contract,
//!   and lists each model as ready or refused with the reason.
//! * [`session`] / [`worker`]: a verified ONNX Runtime session (CPU with explicit threads; CUDA or
//!   TensorRT when the loaded library has them, with a fallback note) owned by a named worker
//!   thread fed by a bounded channel, with progress callbacks and a cancel flag.
//! * [`cxr`]: chest radiograph pre/post-processing (torchxrayvision-compatible) to findings with
//!   scores, thresholds, contours and boxes in image pixels and mm.
//! * [`ct`]: low-dose CT slice denoising, nodule detection (resampling, sliding windows, 3-D NMS)
//!   and nodule measurement.
//! * [`eval`]: AUROC with bootstrap intervals, operating points and FROC, for `lucent eval`.
//! * [`lungrads`]: Lung-RADS v2022 baseline categories and management, as a data table.
//! * [`resample`] / [`contour`]: the exact interpolations and marching squares they use.
//!
//! This crate must not depend on egui, wgpu, winit, rfd, any DICOM crate or lucent-pacs (CI checks
//! it). Errors never carry patient data. Lucent is a second reader: every output here is a
//! proposal for a radiologist to confirm.

pub mod contour;
pub mod ct;
pub mod cxr;
mod error;
pub mod eval;
pub mod lungrads;
pub mod manifest;
pub mod registry;
pub mod resample;
pub mod runtime;
pub mod session;
pub mod worker;

pub use cxr::{CxrResult, Finding, FindingMap, GreyImage, GreySamples, PixelSpacing};
pub use error::{Error, Result};
pub use manifest::ModelManifest;
pub use registry::{ModelEntry, ModelStatus, Registry};
pub use session::{ExecutionPreference, ModelSession, SessionOptions, Tensor};
pub use worker::{JobContext, JobHandle, ModelWorker, Progress, ProgressFn};
