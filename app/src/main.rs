//! The `lucent` binary: the GUI by default, CLI verbs otherwise.

use clap::Parser;
use lucent_app::cli::{self, Cli};

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("LUCENT_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Cli::parse();
    let result = if args.command.is_none() { lucent_app::gui::run(args) } else { cli::run(args) };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lucent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
