//! The `asdfs` executable: parse the command line, run it, print the error chain once.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    init_logging();
    let cli = match asdfs::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("asdfs: {}", one_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    match asdfs::cli::run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("asdfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// clap's usage errors as one line: the problem, and the accepted values if it lists them.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("For more information") && !l.starts_with("Usage:")
        })
        .map(|l| l.trim_start_matches("error: "))
        .collect::<Vec<_>>()
        .join("; ")
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ASDFS_LOG")
        .unwrap_or_else(|_| "info,fuser::reply=off".into());
    use std::io::IsTerminal;
    let ansi =
        std::io::stderr().is_terminal() && std::env::var_os(asdfs::daemon::READY_FD_ENV).is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
}
