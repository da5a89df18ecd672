//! Standard output of the commands. When the reader goes away (`asdfs status | head -1`) the
//! command ends quietly with status 0, as ripgrep does: Rust ignores SIGPIPE, so a write to
//! a closed pipe fails with EPIPE, on which `println!` would panic. `out!` and `outln!` are
//! `print!` and `println!` through `print`.

use std::io::Write;

/// Writes `args` to standard output, flushed. A closed pipe ends the process with status 0;
/// any other failure (a full disk) with a one-line message and status 1.
pub fn print(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    finish(out.write_fmt(args).and_then(|()| out.flush()));
}

/// Writes `bytes` to standard output, as `print` does.
pub fn bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    finish(out.write_all(bytes).and_then(|()| out.flush()));
}

fn finish(written: std::io::Result<()>) {
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("asdfs: writing to standard output: {e}");
            std::process::exit(1);
        }
    }
}

/// `print!` that ends quietly when the reader has gone (`out::print`).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out::print(format_args!($($arg)*))
    };
}

/// `println!` that ends quietly when the reader has gone (`out::print`).
macro_rules! outln {
    () => {
        $crate::cli::out::print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};
