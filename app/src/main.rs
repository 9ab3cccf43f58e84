//! The `lucent` binary: the GUI by default, CLI verbs otherwise.

use clap::Parser;
use lucent_app::cli::{self, Cli};

fn main() -> std::process::ExitCode {
    // Patient data at rest: every file and folder Lucent creates (the store, reports.sqlite,
    // exports, settings, the PACS node book) is readable by its owner only (0600 / 0700).
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file mode creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
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
    if args.command.is_none() {
        return exit_code(lucent_app::gui::run(args));
    }
    // `lucent ls | head -1`: when the reader of stdout goes away, printing fails; end quietly with
    // the status a process killed by SIGPIPE has, as Unix tools do. (SIGPIPE itself stays ignored,
    // so a peer that closes a socket is an error to handle, never the end of an SCP.)
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_broken_stdout(info.payload()) {
            default_hook(info);
        }
    }));
    match std::panic::catch_unwind(|| cli::run(args)) {
        Ok(result) => exit_code(result),
        Err(payload) if is_broken_stdout(payload.as_ref()) => std::process::ExitCode::from(141),
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lucent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether a panic is `println!` failing on a closed pipe.
fn is_broken_stdout(payload: &(dyn std::any::Any + Send)) -> bool {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    text.starts_with("failed printing to stdout") && text.contains("Broken pipe")
}
