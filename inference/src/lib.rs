//! # lucent-inference
//!
//! Will own model manifests, ONNX Runtime sessions, pre/post-processing and findings
//! (see ARCHITECTURE.md). Not implemented yet: nothing in Lucent calls it so far.
//! It must never depend on egui, wgpu, any DICOM crate or the other leaves (CI checks it).
