//! # lucent (the application)
//!
//! The only crate that knows every other one: it glues the `pacs` imaging layer (and, later,
//! `inference` and `render`) into the `lucent` binary's CLI and GUI.
//!
//! * [`cli`]: the headless verbs (`import`, `info`, `ls`, `demo`), over the same library code as the GUI.
//! * [`config`]: where the store and user data live.
//! * [`demo`]: the bundled demo studies, generated deterministically by Lucent itself.

pub mod cli;
pub mod config;
pub mod demo;
pub mod gui;
pub mod info;
