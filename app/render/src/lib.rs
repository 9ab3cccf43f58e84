//! # lucent-render
//!
//! Will own the wgpu pipelines and WGSL shaders for images, volumes and overlays
//! (see ARCHITECTURE.md). It must never depend on a DICOM crate or ort (CI checks it).
