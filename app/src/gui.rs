//! The workstation window (eframe + wgpu).

use anyhow::Result;

use crate::cli::Cli;

pub fn run(_cli: Cli) -> Result<()> {
    anyhow::bail!("the GUI is not built yet")
}
