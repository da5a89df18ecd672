//! The `asdfs` executable: parse the command line, run it, print the error chain once.

use clap::Parser;
use std::process::ExitCode;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, format};
use tracing_subscriber::registry::LookupSpan;

fn main() -> ExitCode {
    init_logging();
    quiet_on_closed_stdout();
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if asdfs::cli::asd::called_as_asd(&argv0) {
        return match asdfs::cli::asd::AsdCli::try_parse() {
            Ok(cli) => finish("asd", asdfs::cli::asd::run(cli)),
            Err(e) => usage_error("asd", e),
        };
    }
    match asdfs::cli::Cli::try_parse() {
        Ok(cli) => finish("asdfs", asdfs::cli::run(cli)),
        Err(e) => usage_error("asdfs", e),
    }
}

fn finish(name: &str, result: anyhow::Result<i32>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            // Not `eprintln!`: stderr may be a log on a full tmpfs, and a panic here would
            // turn the exit code into 101.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--help` and `--version` print and exit 0; a usage error is one line and exit 2.
fn usage_error(name: &str, e: clap::Error) -> ExitCode {
    if !e.use_stderr() {
        e.exit();
    }
    eprintln!("{name}: {}", one_line(&e.render().to_string()));
    ExitCode::from(2)
}

/// clap's usage errors as one line: the problem, and the accepted values if it lists them.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("For more information") && !l.starts_with("Usage:")
        })
        .map(|l| l.trim_start_matches("error: "))
        .fold(String::new(), |mut text, l| {
            // A line ending in a colon introduces the next: "not provided: <TARGETS>...".
            if !text.is_empty() {
                text.push_str(if text.ends_with(':') { " " } else { "; " });
            }
            text.push_str(l);
            text
        })
}

/// A reader of standard output that went away ends the command quietly: `cli::out` does so
/// for the commands' output; this catches a `println!` anywhere else, whose panic would
/// otherwise print a backtrace hint and exit 101.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if msg.starts_with("failed printing to stdout")
            && msg.contains(&std::io::Error::from_raw_os_error(libc::EPIPE).to_string())
        {
            std::process::exit(0);
        }
        default(info)
    }));
}

/// Where log lines go. Under systemd: the journal, natively (fields, no second timestamp),
/// else stderr with `<N>` priorities. A daemon started from a shell: stderr until `asdfs
/// mount` returns (its warnings are shown there), and the journal or syslog (asdfs's
/// `journal`); a log file only when ASDFS_LOG_FILE asks for one. Commands: stderr.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("ASDFS_LOG")
        .unwrap_or_else(|_| "info,fuser::reply=off".into());
    let mut layers: Vec<Box<dyn tracing_subscriber::Layer<Logged> + Send + Sync>> = Vec::new();
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // The daemon's stderr may be a log on a full tmpfs: a failed write must not become
        // an `eprintln!` that panics (and kills the thread, or the daemon, that logged).
        .log_internal_errors(false)
        .with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        match asdfs::journal::SystemLog::journal() {
            Some(j) => layers.push(Box::new(j)),
            None => layers.push(Box::new(stderr.with_ansi(false).event_format(Journal))),
        }
    } else if std::env::var_os(asdfs::daemon::READY_FD_ENV).is_some() {
        layers.push(Box::new(stderr.with_ansi(false)));
        layers.push(Box::new(asdfs::journal::SystemLog::open()));
    } else {
        use std::io::IsTerminal;
        layers.push(Box::new(stderr.with_ansi(std::io::stderr().is_terminal())));
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .init();
}

type Logged =
    tracing_subscriber::layer::Layered<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// Log lines for the journal: `<priority>message fields`, as sd-daemon(3) reads stderr.
struct Journal;

impl<S, N> FormatEvent<S, N> for Journal
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(w, "<{priority}>")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}
