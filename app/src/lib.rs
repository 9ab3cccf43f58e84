//! # lucent (the application)
//!
//! The only crate that knows every other one: it glues the `pacs` imaging layer, the `inference`
//! models and the `render` GPU code into the `lucent` binary's CLI and GUI.
//!
//! * [`ai`]: glue from `pacs` images and volumes to `inference` models, and what a reading returns.
//! * [`cli`]: the headless verbs (`import`, `info`, `ls`, `models`, `read`, `demo`, `verify`), over the same library code as the GUI.
//! * [`config`]: where the store and user data live.
//! * [`demo`]: the bundled demo studies, generated deterministically by Lucent itself.
//! * [`eval_cli`] / [`eval_plot`]: `lucent eval` (AUROC with bootstrap intervals, operating points, FROC
//!   over a labelled folder) and its ROC / FROC plot; the GUI's evaluation window uses the same code.
//! * [`eval_measure`]: `lucent eval-nodule-measure`, the CT nodule measurement against the real
//!   LIDC nodules' reference masks (Dice, diameter and volume errors at 1 mm and thicker slices).
//! * [`synth_cli`]: `synth-cxr` (CXR training data from the demo's generator), `score-cxr`, and
//!   `synth-ct` (CT evaluation sets: scans with nodules, routine / quarter-dose pairs).
//! * [`reporting`]: reading results to `report` inputs (sides, lobes, key images) and the exports (PDF, SR, FHIR).
//! * [`report_cli`]: `read --report/--sr/--fhir/--lang`, `audit verify`, `report list|show|sign|addendum|init-admin|add-user|rekey|passwd|users|stats`.
//! * [`pacs_cli`]: `pacs echo|find|get|move|store|node` and `scp` (DIMSE through `pacs::net`).

pub mod ai;
pub mod anonymize;
pub mod cli;
pub mod config;
pub mod demo;
pub mod eval_cli;
pub mod eval_measure;
pub mod eval_plot;
pub mod gui;
pub mod info;
pub mod pacs_cli;
pub mod qa_export;
pub mod report_cli;
pub mod reporting;
pub mod synth_cli;
