//! # lucent (the application)
//!
//! The only crate that knows every other one: it glues the `pacs` imaging layer, the `inference`
//! models and the `render` GPU code into the `lucent` binary's CLI and GUI.
//!
//! * [`ai`]: glue from `pacs` images and volumes to `inference` models, and what a reading returns.
//! * [`cli`]: the headless verbs (`import`, `info`, `ls`, `models`, `read`, `demo`, `verify`), over the same library code as the GUI.
//! * [`config`]: where the store and user data live.
//! * [`demo`]: the bundled demo studies, generated deterministically by Lucent itself.

pub mod ai;
pub mod cli;
pub mod config;
pub mod demo;
pub mod gui;
pub mod info;
