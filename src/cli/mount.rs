//! `asdfs mount`: the options as typed, resolved against the configuration file into target
//! settings, and the start of the daemon (in the background unless `--foreground`), waiting
//! until every mount is live or has failed.

use super::out::outln;
use crate::config::{self, Atime, Config, DataPath, FsyncPolicy, Mode, TargetSettings};
use crate::daemon::{self, READY_FD_ENV, Ready};
use crate::fsx::trusted::TrustedPath;
use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Args, Debug, Clone)]
pub struct MountArgs {
    /// The directories to keep in RAM (one daemon serves them all).
    #[arg(required_unless_present = "all", value_parser = target_arg)]
    pub targets: Vec<PathBuf>,
    /// Every target of the configuration file, served by one daemon.
    #[arg(long, conflicts_with = "targets")]
    pub all: bool,
    /// The configuration file: asdfs TOML, or asd's asd.conf (default: /etc/asdfs.toml for
    /// root, ~/.config/asdfs/asdfs.toml for users, if it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the RAM store lives (a tmpfs directory); default /run for root,
    /// $XDG_RUNTIME_DIR for users.
    #[arg(long, value_name = "DIR", value_parser = volatile_arg)]
    pub volatile: Option<PathBuf>,
    /// How often changes are written to disk, e.g. 30s, 5min, 1h [default: 5min].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    pub flush_interval: Option<Duration>,
    /// What fsync(2) does: defer (return at once, like asd) or sync (write the data first)
    /// [default: defer].
    #[arg(long, value_enum)]
    pub fsync: Option<FsyncArg>,
    /// Access times: noatime (reads write nothing, sparing the disk) or relatime (updated
    /// once after each change or when a day old; for programs such as mail readers)
    /// [default: noatime].
    #[arg(long, value_enum)]
    pub atime: Option<AtimeArg>,
    /// Keep asd's safety nets: a hardlink copy of the disk copy at session start
    /// (`.NAME-backup_asd-old`) and crash snapshots [default: yes].
    #[arg(long, value_name = "yes|no", value_parser = YesNo)]
    pub backups: Option<bool>,
    /// How many crash snapshots to keep per target [default: 5].
    #[arg(long, value_name = "N")]
    pub backup_limit: Option<u32>,
    /// FUSE mode: how many RAM data files the daemon keeps open at most [default:
    /// $ASDFS_OPEN_FILES, else half the descriptor limit].
    #[arg(long, value_name = "N")]
    pub open_files: Option<usize>,
    /// After SIGTERM, how long files still open may delay the stop, e.g. 20s [default:
    /// $ASDFS_STOP_GRACE seconds, else 20s].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    pub stop_grace: Option<Duration>,
    /// The most RAM the target's store uses, e.g. 512M, 2G, or a share of the memory, 25%;
    /// clean files leave RAM past it and are read from disk again [default: 25%].
    #[arg(long, value_name = "SIZE", value_parser = config::parse_ram_limit)]
    pub ram_limit: Option<u64>,
    /// FUSE mode: who serves file data: auto (the kernel, with FUSE passthrough, where it
    /// allows that: root, Linux 6.9 or later; else the daemon), passthrough (the same, with
    /// a warning where the kernel refuses) or daemon [default: $ASDFS_DATA_PATH, else the
    /// configuration file's, else auto].
    #[arg(long, value_enum)]
    pub data_path: Option<DataPathArg>,
    /// fuse (the write-back filesystem) or overlay (kernel overlayfs, upper layer in RAM)
    /// [default: fuse].
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Refuse to mount while a file inside has hard links outside the target, which a flush
    /// would split (asd's ENABLE_HARDLINK_SAFETY_CHECK) [default: yes].
    #[arg(long, value_name = "yes|no", value_parser = YesNo)]
    pub hardlink_check: Option<bool>,
    /// Mount even though processes hold files, working directories or mappings under the
    /// target. What they write through what they opened before the mount goes to the disk
    /// copy; a flush that finds such a file changed keeps the disk version as a conflict
    /// copy beside the crash snapshots.
    #[arg(long)]
    pub force: bool,
    /// Stay in the foreground (for systemd and debugging).
    #[arg(long)]
    pub foreground: bool,
    /// Print nothing on success (as mount(8) helpers); errors are still printed.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncArg {
    Defer,
    Sync,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtimeArg {
    Noatime,
    Relatime,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataPathArg {
    Auto,
    Passthrough,
    Daemon,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeArg {
    Fuse,
    Overlay,
}

/// A target on the command line: an absolute path in normal form, else a usage error (exit 2),
/// as the configuration file's rule says it.
fn target_arg(s: &str) -> Result<PathBuf, String> {
    config::check_path(Path::new(s), "target")?;
    Ok(PathBuf::from(s))
}

/// `--volatile`: as a target.
fn volatile_arg(s: &str) -> Result<PathBuf, String> {
    config::check_path(Path::new(s), "volatile dir")?;
    Ok(PathBuf::from(s))
}

/// yes/no as asd writes it (yes, no, true, false, 1, 0, on, off).
pub fn parse_yes_no(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "y" | "yes" | "true" | "1" | "on" | "enable" | "enabled" => Ok(true),
        "n" | "no" | "false" | "0" | "off" | "disable" | "disabled" => Ok(false),
        _ => Err(format!("{s:?} is neither yes nor no")),
    }
}

/// `parse_yes_no` for clap, offering yes and no to shell completion.
#[derive(Clone, Copy, Debug)]
pub struct YesNo;

impl clap::builder::TypedValueParser for YesNo {
    type Value = bool;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<bool, clap::Error> {
        let text = value.to_str().unwrap_or_default();
        parse_yes_no(text).map_err(|e| clap::Error::raw(clap::error::ErrorKind::InvalidValue, e))
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        let values = ["yes", "no"].map(clap::builder::PossibleValue::new);
        Some(Box::new(values.into_iter()))
    }
}

/// The configuration file to read: the one named, else the default one if it exists.
pub fn config_file(named: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = named {
        return Some(p.to_path_buf());
    }
    let default = if nix::unistd::geteuid().is_root() {
        Some(PathBuf::from(config::SYSTEM_TOML))
    } else {
        let xdg = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from);
        let home = std::env::var_os("HOME").map(PathBuf::from);
        config::user_toml(xdg.as_deref(), home.as_deref())
    };
    default.filter(|p| p.trusted_exists())
}

fn read_config(named: Option<&Path>) -> anyhow::Result<Config> {
    match config_file(named) {
        Some(p) => Ok(config::load(&p)?),
        None => Ok(Config {
            targets: Vec::new(),
            notes: Vec::new(),
        }),
    }
}

impl MountArgs {
    /// The targets to mount: from the configuration file, with the command line's options
    /// over them.
    pub fn resolve(&self) -> anyhow::Result<Vec<TargetSettings>> {
        let cfg = read_config(self.config.as_deref())?;
        let mut given_up = Vec::new();
        let mut targets = if self.all {
            if cfg.targets.is_empty() {
                bail!("--all: no configuration file lists targets (give --config FILE)");
            }
            cfg.targets
        } else {
            let mut chosen = Vec::new();
            for given in &self.targets {
                let Some(abs) = resolved(given)? else {
                    // Not looked at again: a second lookup of a name whose first one waits
                    // for a FUSE answer waits too, and cannot be killed.
                    given_up.push(given.clone());
                    chosen.push(TargetSettings::new(given.clone()));
                    continue;
                };
                let listed = cfg
                    .targets
                    .iter()
                    .find(|t| t.target == abs || t.target == *given);
                chosen.push(
                    listed
                        .cloned()
                        .unwrap_or_else(|| TargetSettings::new(given.clone())),
                );
            }
            chosen
        };
        let env_data_path = DataPath::from_env().map_err(anyhow::Error::msg)?;
        for t in &mut targets {
            if let Some(d) = env_data_path {
                t.data_path = d;
            }
            self.apply(t);
            config::check_settings(t).map_err(anyhow::Error::msg)?;
            // Before anything is created for it (asdfs's directory beside the target); the
            // daemon reports a missing target itself, per target, and one whose path does
            // not answer (`walkable`).
            if walkable(&t.target) && !given_up.contains(&t.target) {
                let target = t.target.clone();
                let checked = crate::hang::bounded(&t.target.display().to_string(), move || {
                    Ok(config::check_stores_files(&target))
                });
                if let Ok(r) = checked {
                    r.map_err(anyhow::Error::msg)?;
                }
            }
        }
        Ok(targets)
    }

    fn apply(&self, s: &mut TargetSettings) {
        if let Some(m) = self.mode {
            s.mode = if m == ModeArg::Overlay {
                Mode::Overlay
            } else {
                Mode::Fuse
            };
        }
        if let Some(d) = self.flush_interval {
            s.flush_interval = d;
        }
        if let Some(f) = self.fsync {
            s.fsync = if f == FsyncArg::Sync {
                FsyncPolicy::Sync
            } else {
                FsyncPolicy::Defer
            };
        }
        if let Some(a) = self.atime {
            s.atime = match a {
                AtimeArg::Noatime => Atime::Noatime,
                AtimeArg::Relatime => Atime::Relatime,
            };
        }
        if let Some(b) = self.backups {
            s.backups = b;
        }
        if let Some(n) = self.backup_limit {
            s.backup_limit = n;
        }
        if let Some(c) = self.hardlink_check {
            s.hardlink_check = c;
        }
        s.force |= self.force;
        if let Some(v) = &self.volatile {
            s.volatile = Some(v.clone());
        }
        if let Some(n) = self.open_files {
            s.open_files = Some(n);
        }
        if let Some(d) = self.stop_grace {
            s.stop_grace = Some(d);
        }
        if let Some(n) = self.ram_limit {
            s.ram_limit = Some(n);
        }
        if let Some(d) = self.data_path {
            s.data_path = match d {
                DataPathArg::Auto => DataPath::Auto,
                DataPathArg::Passthrough => DataPath::Passthrough,
                DataPathArg::Daemon => DataPath::Daemon,
            };
        }
    }
}

/// Whether the target's path may be looked at here: no FUSE mount another user controls
/// is on its way. The daemon refuses such a target with its own line and goes on with the
/// others (docs/security.md R7).
fn walkable(target: &Path) -> bool {
    matches!(daemon::mounting::foreign_fuse_on(target), Ok(None))
}

/// A target as given, with symlinks resolved where its path answers (to find it in the
/// configuration file), else as given, made absolute; `None` if its path did not answer in
/// time (`hang::bounded`).
fn resolved(given: &Path) -> anyhow::Result<Option<PathBuf>> {
    let lexical = daemon::mounting::lexical_absolute(given)?;
    if !walkable(given) {
        return Ok(Some(lexical));
    }
    let g = given.to_path_buf();
    let looked = crate::hang::bounded(&given.display().to_string(), move || {
        Ok(crate::fsx::trusted::canonicalize(&g).ok())
    });
    match looked {
        Ok(found) => Ok(Some(found.unwrap_or(lexical))),
        Err(_) => Ok(None),
    }
}

/// The settings `asdfs mount` resolved and checked, handed to the daemon it starts: JSON in
/// this variable of the daemon's environment (which only its own user can read, in
/// /proc/PID/environ), taken out of it as it is read. So the daemon serves what the command
/// checked, and never resolves the configuration a second time; a daemon started without it
/// (systemd, `asdfs mount --foreground`) resolves its arguments itself.
pub const SETTINGS_ENV: &str = "ASDFS_SETTINGS";

/// `asdfs mount`: serve here, or start the daemon and wait for its report.
pub fn run(m: &MountArgs) -> anyhow::Result<i32> {
    if m.foreground {
        let targets = match handed_settings()? {
            Some(targets) => targets,
            None => m.resolve()?,
        };
        return Ok(daemon::run(targets, Ready::from_env()));
    }
    let targets = m.resolve()?;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if !m.all {
        return spawn_daemon_with(args, m.quiet, Some(&targets));
    }
    // `--all` twice is not an error (as `asd sync`): those already in RAM stay as they are.
    let (running, pending): (Vec<_>, Vec<_>) = targets.into_iter().partition(|t| {
        matches!(
            super::locate::find(&t.target),
            Ok(super::locate::Found::Running(_))
        )
    });
    for t in &running {
        if !m.quiet {
            outln!("asdfs: {} is already in RAM", t.target.display());
        }
    }
    if pending.is_empty() {
        return Ok(0);
    }
    let mut args: Vec<std::ffi::OsString> = args.into_iter().filter(|a| a != "--all").collect();
    args.push("--".into());
    args.extend(pending.iter().map(|t| t.target.clone().into()));
    spawn_daemon_with(args, m.quiet, Some(&pending))
}

/// The settings the starting `asdfs mount` handed over, checked again as read.
fn handed_settings() -> anyhow::Result<Option<Vec<TargetSettings>>> {
    let Some(json) = std::env::var_os(SETTINGS_ENV) else {
        return Ok(None);
    };
    // SAFETY: the daemon has started no thread yet; nothing else reads the environment now.
    unsafe { std::env::remove_var(SETTINGS_ENV) };
    let targets: Vec<TargetSettings> = serde_json::from_slice(json.as_encoded_bytes())
        .context("reading the settings `asdfs mount` handed over")?;
    for t in &targets {
        config::check_settings(t).map_err(anyhow::Error::msg)?;
    }
    Ok(Some(targets))
}

/// Starts `asdfs mount --foreground ARGS...` (ARGS being `mount ...`), detached, and waits
/// until its mounts are live or failed. `--foreground` goes right after the subcommand: at
/// the end it would be a target after a `--`.
pub fn spawn_daemon(args: Vec<std::ffi::OsString>, quiet: bool) -> anyhow::Result<i32> {
    spawn_daemon_with(args, quiet, None)
}

/// `spawn_daemon`, handing the daemon the settings resolved here (`SETTINGS_ENV`), if any.
fn spawn_daemon_with(
    mut args: Vec<std::ffi::OsString>,
    quiet: bool,
    settings: Option<&[TargetSettings]>,
) -> anyhow::Result<i32> {
    args.insert(args.len().min(1), "--foreground".into());
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let exe = std::env::current_exe().context("finding the asdfs executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(args);
    let w = write_end.as_raw_fd();
    // Under systemd the daemon logs to the journal; elsewhere its early warnings come through
    // a pipe to this terminal, and then it logs to the journal or syslog.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    match settings {
        Some(t) => cmd.env(SETTINGS_ENV, serde_json::to_string(t)?),
        None => cmd.env_remove(SETTINGS_ENV),
    };
    cmd.env(READY_FD_ENV, w.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(if journal {
            Stdio::inherit()
        } else {
            Stdio::piped()
        });
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
    let mut child = cmd.spawn().context("starting the asdfs daemon")?;
    drop(write_end);
    let warnings = child.stderr.take().map(|err| {
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if !is_chatter(&line) {
                    eprintln!("{line}");
                }
            }
        })
    });
    let result = read_readiness(read_end, quiet);
    // The daemon moves its output to its log file once ready, which ends this pipe.
    if let Some(w) = warnings {
        let _ = w.join();
    }
    result
}

/// The daemon's log lines worth showing to the person who ran `asdfs mount` before it
/// detaches: warnings and errors; info and debug lines go to its log file only.
fn is_chatter(line: &str) -> bool {
    [" INFO ", " DEBUG ", " TRACE "]
        .iter()
        .any(|l| line.contains(l))
}

/// `PROGRESS done total what`: a bar on a terminal, one line otherwise.
fn show_progress(bar: &mut Option<indicatif::ProgressBar>, p: &str) {
    let mut it = p.splitn(3, ' ');
    let (Some(done), Some(total), Some(what)) = (it.next(), it.next(), it.next()) else {
        return;
    };
    let (done, total) = (done.parse().unwrap_or(0), total.parse().unwrap_or(0));
    let b = bar.get_or_insert_with(|| super::progress_bar(what, total));
    b.set_length(total);
    b.set_position(done);
}

fn read_readiness(read_end: OwnedFd, quiet: bool) -> anyhow::Result<i32> {
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
            if !quiet {
                outln!("asdfs: {t} is in RAM");
            }
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
