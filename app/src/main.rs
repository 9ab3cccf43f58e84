//! The `lucent` binary: the GUI by default, CLI verbs otherwise.

use clap::Parser;
use lucent_app::cli::{self, Cli};

fn main() -> std::process::ExitCode {
    // JPEG 2000 decodes on all cores unless the user says otherwise. Set before any thread starts.
    if std::env::var_os("OPJ_NUM_THREADS").is_none() {
        // SAFETY: the process is still single-threaded here.
        unsafe { std::env::set_var("OPJ_NUM_THREADS", "ALL_CPUS") };
    }
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
