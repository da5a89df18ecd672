//! The same binary called `asd` or `anything-sync-daemon`: asd's verbs over asd's config,
//! done by asdfs. `sync` starts one daemon for every target not yet in RAM, `resync` flushes,
//! `unsync` flushes and unmounts, `p` shows the status, `c` deletes crash snapshots.
//!
//! Unlike asd, every verb exits non-zero when it did not do its job (1); as asd, `resync`
//! and `unsync` with nothing running and `sync` with everything running exit 0. Verbs run one at a time (a lock beside the stores,
//! as asd's `/run/asd-lock`), and the targets `sync` mounted are remembered, so `unsync`
//! stops them even if the config changed in between (asd keeps a copy of the config for this).

use super::out::{out, outln};
use super::{EXIT_FAILED, locate, show};
use crate::config::{self, Config};
use crate::control::Request;
use crate::daemon::paths;
use crate::fsx::trusted::{TrustedOpen, TrustedPath};
use anyhow::Context;
use clap::{Parser, Subcommand};
use nix::fcntl::{Flock, FlockArg};
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

/// `asd --version`: the asd it follows, and asdfs's own version.
const ASD_VERSION: &str = concat!(
    "6.0.0 (anything-sync-daemon's verbs and asd.conf; done by asdfs ",
    env!("CARGO_PKG_VERSION"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "asd",
    version = ASD_VERSION,
    about = "anything-sync-daemon, done by asdfs: keep the directories of asd.conf in RAM",
    long_about = "anything-sync-daemon, done by asdfs: keep the directories listed in asd.conf \
                  ($ASDCONF, else /etc/asd.conf, else /etc/asdfs.toml) in RAM and write them \
                  back to disk safely. Usually run by systemd: `systemctl enable --now asd`."
)]
pub struct AsdCli {
    #[command(subcommand)]
    pub verb: Verb,
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Put every configured target in RAM; returns when all are mounted.
    Sync {
        /// Serve them in this process until `asd unsync` (asd.service: Type=notify, READY=1
        /// once every target is mounted; a restart takes over what a killed daemon left).
        #[arg(long)]
        foreground: bool,
    },
    /// Write every target's changes to disk; returns when they are on disk.
    Resync,
    /// Final write to disk, unmount, stop.
    Unsync,
    /// Show the configuration and the status of every target.
    #[command(visible_aliases = ["p", "parse"], aliases = ["P", "Parse", "Preview", "debug"])]
    Preview,
    /// Delete the crash snapshots of every configured target.
    #[command(visible_alias = "c", aliases = ["C", "Clean"])]
    Clean,
}

/// True when the program was called by one of asd's names.
pub fn called_as_asd(argv0: &std::ffi::OsStr) -> bool {
    let name = Path::new(argv0).file_name().unwrap_or(argv0);
    name == "asd" || name == "anything-sync-daemon"
}

/// The config file asd reads: `$ASDCONF`, else `/etc/asd.conf`, else asdfs's own config.
pub fn conf_path() -> PathBuf {
    let env = std::env::var_os("ASDCONF");
    let asd = config::asd_conf_path(env.as_deref());
    if env.is_some_and(|v| !v.is_empty()) || asd.trusted_exists() {
        return asd;
    }
    super::mount::config_file(None).unwrap_or(asd)
}

pub fn run(cli: AsdCli) -> anyhow::Result<i32> {
    let conf = conf_path();
    if !conf.trusted_exists() {
        anyhow::bail!(
            "cannot find {} (set ASDCONF, or write /etc/asdfs.toml)",
            conf.display()
        );
    }
    let cfg = config::load(&conf)?;
    let _lock = take_lock(&conf)?;
    let state = State::at(&conf)?;
    match cli.verb {
        Verb::Sync { foreground: true } => serve(&conf, &cfg, &state, _lock),
        Verb::Sync { foreground: false } => sync(&conf, &cfg, &state),
        Verb::Resync => resync(&cfg, &state),
        Verb::Unsync => unsync(&cfg, &state),
        Verb::Preview => preview(&conf, &cfg, &state),
        Verb::Clean => clean(&cfg),
    }
}

/// Serializes asd verbs, as asd's flock does; says so when it has to wait.
fn take_lock(conf: &Path) -> anyhow::Result<Flock<File>> {
    let dir = lock_dir()?;
    let path = dir.join(format!("asd-{}.lock", paths::store_key(conf)));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .trusted_open(&path)
        .with_context(|| format!("opening the lock {}", path.display()))?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(l),
        Err((f, _)) => {
            eprintln!("asd: waiting for another asd command to finish...");
            Flock::lock(f, FlockArg::LockExclusive)
                .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", path.display()))
        }
    }
}

/// `<volatile>/asdfs`, where the stores live, created 0700.
fn lock_dir() -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = paths::default_volatile()?.join("asdfs");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .trusted_open(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The targets `sync` mounted for this config file, so `unsync` finds them all.
struct State {
    file: PathBuf,
    synced: Vec<PathBuf>,
}

impl State {
    fn at(conf: &Path) -> anyhow::Result<State> {
        let file = lock_dir()?.join(format!("asd-{}.targets", paths::store_key(conf)));
        let synced = crate::fsx::trusted::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(State { file, synced })
    }

    fn save(&self, synced: &[PathBuf]) -> anyhow::Result<()> {
        let text = serde_json::to_vec(synced)?;
        crate::fsx::trusted::write(&self.file, text)
            .with_context(|| format!("writing {}", self.file.display()))
    }

    fn clear(&self) {
        let _ = crate::fsx::trusted::remove_file(&self.file);
    }

    /// The configured targets, then those synced earlier that the config no longer lists.
    fn targets(&self, cfg: &Config) -> Vec<PathBuf> {
        let mut all: Vec<PathBuf> = cfg.targets.iter().map(|t| t.target.clone()).collect();
        for t in &self.synced {
            if !all.contains(t) {
                all.push(t.clone());
            }
        }
        all
    }
}

fn is_running(target: &Path) -> bool {
    matches!(locate::find(target), Ok(locate::Found::Running(_)))
}

fn sync(conf: &Path, cfg: &Config, state: &State) -> anyhow::Result<i32> {
    let mut pending = Vec::new();
    for t in &cfg.targets {
        if is_running(&t.target) {
            outln!("asd: {} is already in RAM", t.target.display());
        } else {
            pending.push(t.target.clone());
        }
    }
    let code = if pending.is_empty() {
        outln!("asd: every target is already in RAM");
        0
    } else {
        let mut args: Vec<OsString> = vec!["mount".into(), "--config".into(), conf.into()];
        args.extend(pending.iter().map(OsString::from));
        super::mount::spawn_daemon(args, false)?
    };
    let running: Vec<PathBuf> = state
        .targets(cfg)
        .into_iter()
        .filter(|t| is_running(t))
        .collect();
    state.save(&running)?;
    let failed = cfg.targets.len()
        - cfg
            .targets
            .iter()
            .filter(|t| running.contains(&t.target))
            .count();
    if code == 0 && failed == 0 {
        outln!("Sync successful");
        Ok(0)
    } else {
        eprintln!(
            "asd: sync FAILED for {failed} of {} targets (see above)",
            cfg.targets.len()
        );
        Ok(EXIT_FAILED)
    }
}

/// `asd sync --foreground`: becomes the daemon of every target not yet in RAM (`asdfs
/// mount --foreground`, exec'd: systemd's main process), once they are remembered for
/// `asd unsync` and the lock is released.
fn serve(conf: &Path, cfg: &Config, state: &State, lock: Flock<File>) -> anyhow::Result<i32> {
    use std::os::unix::process::CommandExt;
    let (running, pending): (Vec<PathBuf>, Vec<PathBuf>) = cfg
        .targets
        .iter()
        .map(|t| t.target.clone())
        .partition(|t| is_running(t));
    for t in &running {
        eprintln!(
            "asd: {} is already in RAM, served by another daemon",
            t.display()
        );
    }
    if pending.is_empty() {
        anyhow::bail!(
            "every target is already in RAM; `asd unsync` stops the daemon that serves them"
        );
    }
    let mut remembered = running;
    remembered.extend(pending.iter().cloned());
    state.save(&remembered)?;
    drop(lock);
    let exe = std::env::current_exe().context("finding the asdfs executable")?;
    let mut args: Vec<OsString> = vec![
        "mount".into(),
        "--foreground".into(),
        "--config".into(),
        conf.into(),
        "--".into(),
    ];
    args.extend(pending.iter().map(OsString::from));
    let e = std::process::Command::new(&exe).args(&args).exec();
    Err(anyhow::Error::new(e).context(format!("running {}", exe.display())))
}

/// What asd says of a target whose daemon died.
fn dead_line(d: &locate::Dead) -> String {
    format!("asd: {}", d.message("asd sync"))
}

/// Sends a request to every running target; returns (how many ran, how many failed). A
/// target whose daemon died counts as failed, with one line saying to run `asd sync`;
/// for an unmount its store is taken over first, so that it is written to disk.
fn each_running(targets: &[PathBuf], req: Request) -> (usize, usize) {
    let (mut ran, mut failed) = (0, 0);
    for t in targets {
        let ready = match locate::find(t) {
            Ok(locate::Found::Running(_)) => Ok(()),
            Ok(locate::Found::Dead(d)) if req == Request::Unmount => {
                d.take_over().map_err(|e| format!("asd: {e:#}"))
            }
            Ok(locate::Found::Dead(d)) => Err(dead_line(&d)),
            Ok(locate::Found::Idle) => continue,
            Err(e) => Err(format!("asd: {e:#}")),
        };
        ran += 1;
        let done = ready.and_then(|()| send_one(t, req.clone()));
        if let Err(line) = done {
            eprintln!("{line}");
            failed += 1;
        }
    }
    (ran, failed)
}

/// One request to a running target, its answer printed; an unmount returns once the
/// daemon has exited (when it was its last target). The error is the line to print.
fn send_one(t: &Path, req: Request) -> Result<(), String> {
    let r = super::send(t, req).map_err(|e| format!("asd: {}: {e:#}", t.display()))?;
    if !r.ok {
        return Err(format!("asd: {}", r.message));
    }
    match r.open_files {
        Some(n) => outln!("asd: {}", still_open(t, n)),
        None => outln!("asd: {}", r.message),
    }
    match r.exits {
        Some(pid) => super::wait_exit(pid, std::time::Duration::from_secs(60))
            .map_err(|e| format!("asd: {}: {e:#}", t.display())),
        None => Ok(()),
    }
}

/// An unmount the daemon answered before its final flush: what happens to the open files.
fn still_open(target: &Path, n: u64) -> String {
    let (files, them, closed) = match n {
        1 => ("1 file was".to_string(), "it", "it is"),
        n => (format!("{n} files were"), "them", "the last is"),
    };
    format!(
        "{}: unmounted, but {files} still open: the daemon keeps serving {them} and writes the changes to disk when {closed} closed or the daemon is stopped",
        target.display()
    )
}

fn resync(cfg: &Config, state: &State) -> anyhow::Result<i32> {
    let (ran, failed) = each_running(&state.targets(cfg), Request::Flush);
    if ran == 0 {
        // As asd: nothing to write is not a failure (cron jobs, asd-resync.timer).
        outln!("asd: ASD is not running (no target is in RAM)");
        return Ok(0);
    }
    if failed > 0 {
        eprintln!("asd: resync FAILED for {failed} of {ran} targets; their changes stay in RAM");
        return Ok(EXIT_FAILED);
    }
    outln!("Sync successful");
    Ok(0)
}

fn unsync(cfg: &Config, state: &State) -> anyhow::Result<i32> {
    let targets = state.targets(cfg);
    let (ran, failed) = each_running(&targets, Request::Unmount);
    if ran == 0 {
        state.clear();
        outln!("asd: ASD is not running (no target is in RAM)");
        return Ok(0);
    }
    if failed > 0 {
        eprintln!("asd: unsync FAILED for {failed} of {ran} targets (see above)");
        let still: Vec<PathBuf> = targets.into_iter().filter(|t| is_running(t)).collect();
        state.save(&still)?;
        return Ok(EXIT_FAILED);
    }
    state.clear();
    outln!("Unsync successful");
    Ok(0)
}

fn preview(conf: &Path, cfg: &Config, state: &State) -> anyhow::Result<i32> {
    outln!(
        "asdfs {} answering as anything-sync-daemon{}",
        env!("CARGO_PKG_VERSION"),
        os_name().map(|n| format!(" on {n}")).unwrap_or_default()
    );
    for line in service_lines() {
        outln!("{line}");
    }
    let overlay = crate::fsx::trusted::read_to_string("/proc/filesystems")
        .map(|f| f.lines().any(|l| l.ends_with("\toverlay")))
        .unwrap_or(false);
    outln!(
        " Overlayfs is {} in this kernel.",
        if overlay {
            "available"
        } else {
            "not available"
        }
    );
    outln!(
        "Asd will manage the following per {} settings:",
        conf.display()
    );
    for n in &cfg.notes {
        outln!(" note: {n}");
    }
    let mut code = 0;
    for t in state.targets(cfg) {
        outln!();
        if let Ok(locate::Found::Dead(d)) = locate::find(&t) {
            eprintln!("{}", dead_line(&d));
            code = EXIT_FAILED;
        } else if is_running(&t) {
            match super::send(&t, Request::Status) {
                Ok(r) if r.ok => {
                    if let Some(s) = &r.status {
                        out!("{}", show::render(s));
                    }
                }
                Ok(r) => {
                    eprintln!("asd: {}", r.message);
                    code = EXIT_FAILED;
                }
                Err(e) => {
                    eprintln!("asd: {}: {e:#}", t.display());
                    code = EXIT_FAILED;
                }
            }
        } else {
            out!(
                "{}",
                show::render_idle(&t, cfg.targets.iter().find(|s| s.target == t))
            );
        }
    }
    Ok(code)
}

fn clean(cfg: &Config) -> anyhow::Result<i32> {
    let mut code = 0;
    for t in &cfg.targets {
        match crate::snapshot::clean(&t.target) {
            Ok(gone) if gone.is_empty() => {
                outln!(
                    "Found no crashrecovery snapshots for: {}",
                    t.target.display()
                )
            }
            Ok(gone) => {
                outln!(
                    "Deleted {} crashrecovery snapshot(s) for sync target {}",
                    gone.len(),
                    t.target.display()
                );
                for g in gone {
                    outln!(" {}", g.display());
                }
            }
            Err(e) => {
                eprintln!(
                    "asd: {}: cannot delete its crash snapshots: {e}",
                    t.target.display()
                );
                code = EXIT_FAILED;
            }
        }
    }
    Ok(code)
}

/// The state of asd.service and asd-resync.timer, as asd's preview shows its service and
/// cron job; nothing where systemd does not run.
fn service_lines() -> Vec<String> {
    if !crate::fsx::trusted::exists("/run/systemd/system") {
        return vec![
            " Systemd is not running: asd.service and asd-resync.timer are not used.".into(),
        ];
    }
    [
        ("asd.service", "Systemd service"),
        ("asd-resync.timer", "Systemd resync timer"),
    ]
    .iter()
    .map(|(unit, what)| format!(" {what} ({unit}) is currently {}.", unit_state(unit)))
    .collect()
}

/// `systemctl is-active UNIT`: active, inactive, failed... or "unknown".
fn unit_state(unit: &str) -> String {
    let out = std::process::Command::new("systemctl")
        .args(["is-active", unit])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) => {
            let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if s.is_empty() { "unknown".into() } else { s }
        }
        Err(_) => "unknown (systemctl not found)".into(),
    }
}

/// PRETTY_NAME of /etc/os-release.
fn os_name() -> Option<String> {
    let text = crate::fsx::trusted::read_to_string("/etc/os-release").ok()?;
    let line = text.lines().find(|l| l.starts_with("PRETTY_NAME="))?;
    Some(line["PRETTY_NAME=".len()..].trim_matches('"').to_string())
}
