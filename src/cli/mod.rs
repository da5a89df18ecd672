//! The `asdfs` command. Arguments are parsed as typed (clap), then resolved into settings;
//! every command returns an exit code, and errors are printed once, by `main`.

mod locate;
mod show;
pub mod snapshots;

use crate::config::{self, FsyncPolicy, Mode, TargetSettings};
use crate::control::{self, Request};
use crate::daemon::{self, READY_FD_ENV, Ready};
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

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
    Mount(MountArgs),
    /// Write what changed to disk now; returns when it is on disk.
    Flush { target: PathBuf },
    /// Show mode, RAM used, dirty files and bytes, last and next flush.
    Status {
        /// Print JSON for scripts and monitoring.
        #[arg(long)]
        json: bool,
        /// One target; all asdfs mounts if omitted.
        target: Option<PathBuf>,
    },
    /// Final flush, then unmount; the disk copy then equals what programs saw.
    Unmount { target: PathBuf },
    /// Crash snapshots: list, restore, clean.
    Snapshots {
        #[command(subcommand)]
        cmd: snapshots::SnapshotsCmd,
    },
}

#[derive(Args, Debug, Clone)]
pub struct MountArgs {
    /// The directory to keep in RAM.
    pub target: PathBuf,
    /// Where the RAM store lives (a tmpfs directory); default /run for root,
    /// $XDG_RUNTIME_DIR for users.
    #[arg(long, value_name = "DIR")]
    pub volatile: Option<PathBuf>,
    /// How often changes are written to disk, e.g. 30s, 5min, 1h.
    #[arg(long, value_name = "DURATION", default_value = "5min", value_parser = config::parse_duration)]
    pub flush_interval: Duration,
    /// What fsync(2) does: defer (return at once, like asd) or sync (write the data first).
    #[arg(long, value_enum, default_value_t = FsyncArg::Defer)]
    pub fsync: FsyncArg,
    /// Keep asd's safety nets: a hardlink copy of the disk copy at session start
    /// (`.NAME-backup_asd-old`) and crash snapshots (`yes` or `no`).
    #[arg(long, value_name = "yes|no", default_value = "yes", value_parser = parse_yes_no, action = clap::ArgAction::Set)]
    pub backups: bool,
    /// How many crash snapshots to keep per target.
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_BACKUP_LIMIT)]
    pub backup_limit: u32,
    /// fuse (the write-back filesystem) or overlay (kernel overlayfs, upper layer in RAM).
    #[arg(long, value_enum, default_value_t = ModeArg::Fuse)]
    pub mode: ModeArg,
    /// Stay in the foreground (for systemd and debugging).
    #[arg(long)]
    pub foreground: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeArg {
    Fuse,
    Overlay,
}

/// yes/no as asd writes it (yes, no, true, false, 1, 0, on, off).
pub fn parse_yes_no(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "y" | "yes" | "true" | "1" | "on" | "enable" | "enabled" => Ok(true),
        "n" | "no" | "false" | "0" | "off" | "disable" | "disabled" => Ok(false),
        _ => Err(format!("{s:?} is neither yes nor no")),
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncArg {
    Defer,
    Sync,
}

impl MountArgs {
    fn settings(&self) -> TargetSettings {
        let mut s = TargetSettings::new(self.target.clone());
        s.mode = match self.mode {
            ModeArg::Fuse => Mode::Fuse,
            ModeArg::Overlay => Mode::Overlay,
        };
        s.backups = self.backups;
        s.backup_limit = self.backup_limit;
        s.flush_interval = self.flush_interval;
        s.fsync = match self.fsync {
            FsyncArg::Defer => FsyncPolicy::Defer,
            FsyncArg::Sync => FsyncPolicy::Sync,
        };
        s.volatile = self.volatile.clone();
        s
    }
}

/// Runs a parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.cmd {
        Cmd::Mount(m) if m.foreground => Ok(daemon::run(vec![m.settings()], Ready::from_env())),
        Cmd::Mount(m) => spawn_daemon(&m),
        Cmd::Flush { target } => command(&target, Request::Flush),
        Cmd::Unmount { target } => command(&target, Request::Unmount),
        Cmd::Status { json, target } => show::status(json, target.as_deref()),
        Cmd::Snapshots { cmd } => snapshots::run(cmd),
    }
}

fn command(target: &std::path::Path, req: Request) -> anyhow::Result<i32> {
    let found = locate::running(target)?;
    let r = control::call(&found.socket, &req)?;
    if r.ok {
        println!("{}", r.message);
        Ok(0)
    } else {
        bail!("{}", r.message)
    }
}

/// `PROGRESS done total what`: a bar on a terminal, one line otherwise.
fn show_progress(bar: &mut Option<indicatif::ProgressBar>, p: &str) {
    use std::io::IsTerminal;
    let mut it = p.splitn(3, ' ');
    let (Some(done), Some(total), Some(what)) = (it.next(), it.next(), it.next()) else {
        return;
    };
    let (done, total) = (done.parse().unwrap_or(0), total.parse().unwrap_or(0));
    let b = bar.get_or_insert_with(|| {
        if !std::io::stderr().is_terminal() {
            eprintln!("asdfs: {what}...");
            return indicatif::ProgressBar::hidden();
        }
        let b = indicatif::ProgressBar::new(total);
        let style =
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        b.set_style(style);
        b.set_message(what.to_string());
        b
    });
    b.set_length(total);
    b.set_position(done);
}

/// Starts the daemon in the background and waits until its mounts are live or failed.
fn spawn_daemon(m: &MountArgs) -> anyhow::Result<i32> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let exe = std::env::current_exe().context("finding the asdfs executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("mount").arg("--foreground").arg(&m.target);
    cmd.arg("--flush-interval")
        .arg(format!("{}s", m.flush_interval.as_secs()));
    cmd.arg("--fsync").arg(if m.fsync == FsyncArg::Sync {
        "sync"
    } else {
        "defer"
    });
    if let Some(v) = &m.volatile {
        cmd.arg("--volatile").arg(v);
    }
    cmd.arg("--backups")
        .arg(if m.backups { "yes" } else { "no" });
    cmd.arg("--backup-limit").arg(m.backup_limit.to_string());
    cmd.arg("--mode").arg(if m.mode == ModeArg::Overlay {
        "overlay"
    } else {
        "fuse"
    });
    let w = write_end.as_raw_fd();
    cmd.env(READY_FD_ENV, w.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: only async-signal-safe calls (setsid, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            let flags = libc::fcntl(w, libc::F_GETFD);
            if flags < 0 || libc::fcntl(w, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().context("starting the asdfs daemon")?;
    drop(write_end);
    read_readiness(read_end)
}

fn read_readiness(read_end: OwnedFd) -> anyhow::Result<i32> {
    let mut ok = 0;
    let mut failed = Vec::new();
    let mut bar: Option<indicatif::ProgressBar> = None;
    for line in BufReader::new(std::fs::File::from(read_end)).lines() {
        let line = line?;
        if let Some(p) = line.strip_prefix("PROGRESS ") {
            show_progress(&mut bar, p);
            continue;
        }
        if let Some(b) = bar.take() {
            b.finish_and_clear();
        }
        if let Some(t) = line.strip_prefix("OK ") {
            println!("asdfs: {t} is in RAM");
            ok += 1;
        } else if let Some(e) = line.strip_prefix("ERR ") {
            failed.push(e.to_string());
        }
    }
    if ok == 0 && failed.is_empty() {
        bail!("the daemon exited before the mount was ready");
    }
    for e in &failed {
        eprintln!("asdfs: {e}");
    }
    Ok(if failed.is_empty() { 0 } else { 1 })
}
