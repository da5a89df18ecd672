//! The `asdfs` command (and `asd`, see `asd.rs`). Arguments are parsed as typed (clap), then
//! resolved into settings; every command returns an exit code, and errors are printed once,
//! by `main`.

pub mod asd;
mod completions;
mod configcmd;
mod each;
mod locate;
mod manual;
mod metrics;
pub mod mount;
mod out;
pub mod show;
pub mod snapshots;

use crate::control::{self, Request, Response};
use anyhow::bail;
use clap::{Parser, Subcommand, ValueHint};
use out::outln;
use std::path::{Path, PathBuf};

/// Exit codes: 0 done, 1 failed, 2 bad usage.
pub const EXIT_FAILED: i32 = 1;

#[derive(Parser, Debug)]
#[command(
    name = "asdfs",
    version,
    about = "Keep directories in RAM and write them back to disk safely",
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Put a directory in RAM: mount asdfs over it. Returns once the mount is live.
    #[command(after_long_help = MOUNT_NOTES)]
    Mount(mount::MountArgs),
    /// Write what changed to disk now; returns when it is on disk.
    Flush {
        /// Every asdfs mount of this mount namespace that is yours (all of them for root).
        #[arg(long, conflicts_with = "target")]
        all: bool,
        #[arg(required_unless_present = "all", value_hint = ValueHint::DirPath)]
        target: Option<PathBuf>,
    },
    /// Show mode, RAM used, dirty files and bytes, last and next flush.
    Status {
        /// Print JSON for scripts and monitoring (the same as --format json).
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// text, json, or prometheus (the text exposition format, for node_exporter's
        /// textfile collector or a scrape).
        #[arg(long, value_enum, default_value_t = show::Format::Text)]
        format: show::Format,
        /// One target; every asdfs mount that is yours (all of them for root) if omitted.
        #[arg(value_hint = ValueHint::DirPath)]
        target: Option<PathBuf>,
    },
    /// Final flush, then unmount; the disk copy then equals what programs saw.
    Unmount {
        /// Every asdfs mount of this mount namespace that is yours (all of them for root).
        #[arg(long, conflicts_with = "target")]
        all: bool,
        #[arg(required_unless_present = "all", value_hint = ValueHint::DirPath)]
        target: Option<PathBuf>,
    },
    /// Crash snapshots: list, restore, clean.
    Snapshots {
        #[command(subcommand)]
        cmd: snapshots::SnapshotsCmd,
    },
    /// Configuration files: check them, import asd's.
    Config {
        #[command(subcommand)]
        cmd: configcmd::ConfigCmd,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        shell: clap_complete::Shell,
        /// The command to complete: asdfs, or one of asd's names.
        #[arg(long, value_parser = ["asdfs", "asd", "anything-sync-daemon"], default_value = "asdfs")]
        command: String,
    },
    /// Tell the daemon its mount became read-only (it flushes, and answers once the disk
    /// copy is up to date) or writable; mount.fuse.asdfs runs this at `mount -o remount,ro`
    /// and `remount,rw`.
    #[command(hide = true)]
    Readonly {
        #[arg(value_name = "yes|no", value_parser = mount::YesNo, action = clap::ArgAction::Set)]
        on: bool,
        target: PathBuf,
    },
    /// Write the man pages (asdfs, its subcommands, asd) into a directory.
    #[command(hide = true)]
    Manpages { dir: PathBuf },
}

/// The manual's notes on `asdfs mount`: what the disk copy's timestamps mean, and freezing.
const MOUNT_NOTES: &str = "Timestamps on the disk copy: mtime and atime are written as \
programs saw them. ctime cannot be set by anyone: on disk it is when a flush wrote the file \
(or when the session's hardlink backup linked it), and after a remount programs see that \
time. Access times are recorded only with --atime relatime.

Read-only: `mount -o remount,ro TARGET` returns once the disk copy is up to date; changes \
then fail with EROFS until `mount -o remount,rw TARGET`.";

/// Runs a parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.cmd {
        Cmd::Mount(m) => mount::run(&m),
        Cmd::Flush {
            target: Some(t), ..
        } => command(&t, Request::Flush),
        Cmd::Flush { target: None, .. } => each::flush_all(),
        Cmd::Unmount {
            target: Some(t), ..
        } => unmount(&t),
        Cmd::Unmount { target: None, .. } => each::unmount_all(),
        Cmd::Readonly { on, target } => command(&target, Request::Readonly { on }),
        Cmd::Status {
            json,
            format,
            target,
        } => {
            let format = if json { show::Format::Json } else { format };
            show::status(format, target.as_deref())
        }
        Cmd::Snapshots { cmd } => snapshots::run(cmd),
        Cmd::Config { cmd } => configcmd::run(cmd),
        Cmd::Completions { shell, command } => {
            out::bytes(&completions::script(shell, &command));
            Ok(0)
        }
        Cmd::Manpages { dir } => manual::write_all(&dir),
    }
}

/// Sends one command to the daemon of a target; flushes show their progress on a terminal.
pub fn command(target: &Path, req: Request) -> anyhow::Result<i32> {
    locate::check_mine(target)?;
    let r = send(target, req)?;
    if r.ok {
        outln!("{}", r.message);
        Ok(0)
    } else {
        bail!("{}", r.message)
    }
}

/// `asdfs unmount`: the final flush, then the unmount; returns once the disk copy is
/// complete and the daemon has exited (when this was its last target). A daemon that died
/// is replaced by one that takes its store over, and that one is unmounted.
fn unmount(target: &Path) -> anyhow::Result<i32> {
    unmount_quiet(target).map(|()| 0)
}

/// `unmount` of one target, its answer printed; on a terminal, a bar shows the final
/// flush (read from the daemon's status while it works).
fn unmount_quiet(target: &Path) -> anyhow::Result<()> {
    locate::check_mine(target)?;
    let watch = FlushWatch::start(target);
    let r = unmount_answer(target);
    drop(watch);
    r
}

fn unmount_answer(target: &Path) -> anyhow::Result<()> {
    // A daemon that resets the connection (it was starting or stopping) did not answer: look
    // again at what serves the target, up to three times.
    let mut tries = 0;
    let r = loop {
        match locate::find(target)? {
            locate::Found::Dead(d) => d.take_over()?,
            locate::Found::Idle if tries > 0 => {
                outln!("{}: unmounted", target.display());
                return Ok(());
            }
            _ => {}
        }
        tries += 1;
        match send(target, Request::Unmount) {
            Err(e) if tries < 3 && is_reset(&e) => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            r => break r?,
        }
    };
    if !r.ok {
        bail!("{}", r.message);
    }
    if let Some(pid) = r.exits {
        wait_exit(pid, std::time::Duration::from_secs(60))?;
    }
    outln!("{}", r.message);
    Ok(())
}

/// A thread that shows the progress of a target's flush from its status, on a terminal.
struct FlushWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FlushWatch {
    fn start(target: &Path) -> FlushWatch {
        use std::io::IsTerminal;
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let socket = match locate::running(target) {
            Ok(r) if std::io::stderr().is_terminal() => r.socket,
            _ => return FlushWatch { stop, thread: None },
        };
        let done = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut bar: Option<indicatif::ProgressBar> = None;
            while !done.load(Ordering::Relaxed) {
                if let Some((done, total)) = flush_progress(&socket) {
                    let b = bar.get_or_insert_with(|| progress_bar("writing to disk", total));
                    b.set_length(total);
                    b.set_position(done);
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
        });
        FlushWatch {
            stop,
            thread: Some(thread),
        }
    }
}

/// (bytes written, bytes to write) of the flush under way at the daemon of `socket`; while
/// the flush has not counted its bytes yet, what is not on disk.
fn flush_progress(socket: &Path) -> Option<(u64, u64)> {
    let s = control::call(socket, &Request::Status).ok()?.status?;
    let p = s.flushing?;
    Some(match p.bytes_total {
        0 => (0, s.dirty_bytes),
        t => (p.bytes_done, t),
    })
}

impl Drop for FlushWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A connection the daemon reset before it answered.
fn is_reset(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|e| matches!(e.raw_os_error(), Some(libc::ECONNRESET | libc::EPIPE)))
}

/// Waits until the process `pid` has exited (its descriptors and mounts are released).
pub fn wait_exit(pid: u32, limit: std::time::Duration) -> anyhow::Result<()> {
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return Ok(());
    };
    let fd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => return Ok(()),
        Err(e) => return Err(std::io::Error::from(e).into()),
    };
    let mut poll = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(limit.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut poll, 1, ms) };
    if n > 0 {
        return Ok(());
    }
    bail!(
        "the daemon (pid {pid:?}) wrote everything but has not exited after {}s",
        limit.as_secs()
    )
}

/// Sends one command and waits for the answer, showing flush progress: a bar on a
/// terminal; otherwise a plain line every few seconds once it takes more than a moment.
pub fn send(target: &Path, req: Request) -> anyhow::Result<Response> {
    use std::io::IsTerminal;
    use std::time::{Duration, Instant};
    let found = locate::running(target)?;
    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut said = started;
    let mut bar: Option<indicatif::ProgressBar> = None;
    let r = control::call_with_progress(&found.socket, &req, &mut |done, total| {
        if terminal {
            let b = bar.get_or_insert_with(|| progress_bar("writing to disk", total));
            b.set_length(total);
            b.set_position(done);
        } else if said.elapsed() >= Duration::from_secs(5)
            || (said == started && started.elapsed() >= Duration::from_secs(2))
        {
            said = Instant::now();
            eprintln!(
                "asdfs: {}: writing to disk: {} of {}",
                target.display(),
                crate::human::bytes(done),
                crate::human::bytes(total)
            );
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    r
}

/// A byte progress bar on a terminal; hidden otherwise.
pub fn progress_bar(what: &str, total: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(total);
    let style =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    b.set_style(style);
    b.set_message(what.to_string());
    b
}
