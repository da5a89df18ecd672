//! The daemon process: starts its targets, reports readiness (to `asdfs mount` over a pipe,
//! or to systemd), waits for signals, control requests and unmounts, and ends each target
//! with a final flush. One process serves any number of targets.

mod lifecycle;
pub mod mounting;
mod overlay;
mod overlay_status;
pub mod paths;
mod preflight;
mod readonly;
mod safety;
mod status;
pub mod target;
mod timer;

use crate::config::TargetSettings;
use crate::control::Response;
use crate::fsx::trusted::{TrustedOpen, TrustedPath};
use crossbeam_channel::Sender;
use nix::sys::signal::{SigSet, Signal};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};
use target::Target;

/// The environment variable through which `asdfs mount` passes its readiness pipe.
pub const READY_FD_ENV: &str = "ASDFS_READY_FD";

/// A target being served, in either mode: what the main loop needs of it.
pub trait Served: Send + Sync {
    fn paths(&self) -> &paths::TargetPaths;
    /// Flush, then detach the mount; files still open keep working. If the flush fails the
    /// mount stays (and the answer says how to recover) unless `force` (a signal: the
    /// system is going down; the final flush is retried and the store kept if it fails).
    fn begin_stop(&self, force: bool) -> Response;
    /// After the session ended: the final flush, then the store goes.
    fn finish(&self) -> anyhow::Result<()>;
    /// Files programs still have open in the mount.
    fn open_files(&self) -> u64;
    /// At a stop that cannot wait any longer for open files.
    fn cut_off_open_files(&self);
    /// A process in whose mount namespace a copy of the detached mount lives on.
    fn mounted_elsewhere(&self) -> Option<u32>;
}

/// Starts one target in its mode; overlay mode falls back to FUSE where it cannot work.
fn start(
    s: TargetSettings,
    events: Sender<Event>,
    idx: usize,
    progress: safety::Progress<'_>,
) -> anyhow::Result<Arc<dyn Served>> {
    let mut s = s;
    if s.mode == crate::config::Mode::Fuse && overlay_store_left(&s) {
        tracing::warn!(target = %s.target.display(), "the previous session, in overlay mode, left its layers; recovering them in overlay mode");
        s.mode = crate::config::Mode::Overlay;
    }
    if s.mode == crate::config::Mode::Overlay {
        match overlay::OverlayTarget::start(s.clone(), events.clone(), idx, progress) {
            Ok(t) => return Ok(t),
            Err(overlay::Start::Fallback(why)) => {
                tracing::warn!(target = %s.target.display(), "overlay mode is not possible here ({why}); serving in FUSE mode");
            }
            Err(overlay::Start::Failed(e)) => return Err(e),
        }
    }
    s.mode = crate::config::Mode::Fuse;
    let t: Arc<dyn Served> = Target::start(s, events, idx, progress)?;
    Ok(t)
}

/// Whether the target's store holds an overlay-mode session's layers.
fn overlay_store_left(s: &TargetSettings) -> bool {
    paths::resolve_target(&s.target)
        .and_then(|t| paths::target_paths(&t, s.volatile.as_deref()))
        .is_ok_and(|p| p.private().join("overlay.json").trusted_exists())
}

/// What the daemon's main loop reacts to.
pub enum Event {
    Signal(Signal),
    /// Unmount target `idx` (from the control socket); answer on `reply` when done.
    Stop {
        idx: usize,
        reply: Option<Sender<Response>>,
    },
    /// The FUSE session of target `idx` ended (unmounted, by us or by someone else).
    SessionEnded(usize),
}

/// Whom to tell that the mounts are live.
pub enum Ready {
    /// `asdfs mount` waits on this pipe: lines `OK <target>` / `ERR <message>`, then EOF.
    Pipe(File),
    /// systemd (Type=notify): READY=1.
    Systemd,
    Quiet,
}

impl Ready {
    pub fn from_env() -> Ready {
        if let Some(fd) = std::env::var(READY_FD_ENV)
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
        {
            // SAFETY: `asdfs mount` passed us the write end of its pipe under this number;
            // nothing else in this process uses it.
            unsafe { std::env::remove_var(READY_FD_ENV) };
            return Ready::Pipe(unsafe { File::from_raw_fd(fd) });
        }
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            return Ready::Systemd;
        }
        Ready::Quiet
    }

    /// Progress of long work before the mounts are ready (a crash snapshot).
    fn progress(&self, what: &str, done: u64, total: u64) {
        match self {
            Ready::Pipe(f) => {
                let _ = (&*f).write_all(format!("PROGRESS {done} {total} {what}\n").as_bytes());
            }
            Ready::Systemd => {
                let status = format!("{what}: {}%", done * 100 / total.max(1));
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&status)]);
            }
            Ready::Quiet => {}
        }
    }

    fn report(self, lines: &[String], log: Option<&std::path::Path>) {
        match self {
            Ready::Pipe(mut f) => {
                let mut text = lines.join("\n");
                text.push('\n');
                let _ = f.write_all(text.as_bytes());
                drop(f);
                // Under systemd (`asd sync` from asd.service) stderr is the journal: keep it.
                if std::env::var_os("JOURNAL_STREAM").is_none() {
                    redirect_output(log);
                }
            }
            Ready::Systemd => {
                let status = lines.join("; ");
                let _ = sd_notify::notify(&[
                    sd_notify::NotifyState::Ready,
                    sd_notify::NotifyState::Status(&status),
                ]);
            }
            Ready::Quiet => {}
        }
    }
}

/// The daemon's log file, in the store root, kept only when ASDFS_LOG_FILE is set (its log
/// goes to the journal or syslog, which outlive a reboot): root's daemons share it, mode
/// 0600 (it names every target's files).
const LOG_FILE: &str = "daemon.log";
/// Space allocated ahead of the end of the daemon's log when it is opened.
const LOG_ROOM: u64 = 256 << 10;

/// The environment variable that asks for the log file.
pub const LOG_FILE_ENV: &str = "ASDFS_LOG_FILE";

/// Sends stdout and stderr to the daemon's log file (when asked for) in `log` (the store root, checked by
/// `paths::prepare_store`; or /dev/null) once `asdfs mount` has returned: that closes the
/// pipe `asdfs mount` reads our early warnings from. The log is opened without following a
/// symlink and only if it is this user's regular file.
fn redirect_output(log: Option<&std::path::Path>) {
    let asked = std::env::var_os(LOG_FILE_ENV).is_some_and(|v| !v.is_empty() && v != "0");
    let opened = log.filter(|_| asked).and_then(|root| {
        let dir = crate::fsx::Dir::open(root).ok()?;
        crate::fsx::open_log(&dir, std::ffi::OsStr::new(LOG_FILE), 0o600).ok()
    });
    let Some(f) = opened.or_else(|| File::options().write(true).trusted_open("/dev/null").ok())
    else {
        return;
    };
    // Room kept ahead of the log's end, so that the warnings of a store that filled its
    // tmpfs (the log's usual home) can still be written.
    if let Ok(m) = f.metadata() {
        if m.is_file() {
            // SAFETY: fallocate on a descriptor we own; KEEP_SIZE leaves its size alone.
            unsafe {
                libc::fallocate(
                    f.as_raw_fd(),
                    libc::FALLOC_FL_KEEP_SIZE,
                    0,
                    (m.len() + LOG_ROOM) as libc::off_t,
                )
            };
        }
    }
    for fd in [1, 2] {
        // SAFETY: dup2 onto the standard descriptors; the file stays open through them.
        unsafe { libc::dup2(f.as_raw_fd(), fd) };
    }
    if let Ok(null) = crate::fsx::trusted::open("/dev/null") {
        // SAFETY: as above, for standard input.
        unsafe { libc::dup2(null.as_raw_fd(), 0) };
    }
}

/// The store keeps up to half the soft limit of RAM data files open (`store::data`): raise
/// the soft limit to the hard one, and as root both to the kernel's maximum (`fs.nr_open`).
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let max = crate::fsx::trusted::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    if nix::unistd::geteuid().is_root()
        && max > hard
        && setrlimit(Resource::RLIMIT_NOFILE, max, max).is_ok()
    {
        return;
    }
    if soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn block_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    if let Err(e) = set.thread_block() {
        tracing::warn!(error = %e, "cannot block signals");
    }
    set
}

/// Runs the daemon for these targets until every one is unmounted. Returns the exit code.
pub fn run(settings: Vec<TargetSettings>, ready: Ready) -> i32 {
    let signals = block_signals();
    raise_fd_limit();
    let (tx, rx) = crossbeam_channel::unbounded();
    let sig_tx = tx.clone();
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Ok(sig) = signals.wait() {
                if sig_tx.send(Event::Signal(sig)).is_err() {
                    return;
                }
            }
        });
    let mut live: Vec<Option<Arc<dyn Served>>> = Vec::new();
    let mut lines = Vec::new();
    let mut code = 0;
    let progress = |what: &str, done: u64, total: u64| ready.progress(what, done, total);
    let grace = stop_grace(&settings);
    for (i, s) in settings.into_iter().enumerate() {
        // A FUSE mount on the target's way (its owner's) is refused from the mount table;
        // one mounted after that check cannot hold the start for ever (`hang::watched`).
        let what = s.target.display().to_string();
        let events = tx.clone();
        let started = crate::hang::watched(&what, &progress, move |progress| {
            mounting::refuse_foreign_fuse(&s.target)?;
            start(s, events, i, progress)
        });
        match started {
            Ok(t) => {
                lines.push(format!("OK {}", t.paths().target.display()));
                live.push(Some(t));
            }
            Err(e) => {
                lines.push(format!("ERR {e:#}"));
                live.push(None);
                code = 1;
            }
        }
    }
    let log = live
        .iter()
        .flatten()
        .next()
        .map(|t| t.paths().store_root.clone());
    ready.report(&lines, log.as_deref());
    for t in live.iter().flatten() {
        tracing::info!(target = %t.paths().target.display(), store = %t.paths().store.display(), phase = "mounted", "in RAM");
    }
    readonly::watch(
        live.iter()
            .flatten()
            .map(|t| (t.paths().target.clone(), t.paths().socket()))
            .collect(),
    );
    if live.iter().all(Option::is_none) {
        return 1;
    }
    let code = serve(&mut live, &rx, code, grace);
    crate::control::wait_idle(std::time::Duration::from_secs(10));
    code
}

/// After SIGTERM, how long files still open may keep the daemon (and a shutdown) waiting
/// before they are cut off: the longest `stop_grace` of the targets, else
/// `ASDFS_STOP_GRACE` (seconds), else this.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// Under systemd: STOPPING=1, so that `systemctl status` says the unit is stopping (the
/// final flush can take long), with a STATUS line saying what it waits for.
fn notify_stopping() {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status("stopping: final flush to disk, then unmount"),
        ]);
    }
}

fn stop_grace(targets: &[TargetSettings]) -> Duration {
    let env = || {
        std::env::var("ASDFS_STOP_GRACE")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
    };
    targets
        .iter()
        .filter_map(|t| t.stop_grace)
        .max()
        .or_else(env)
        .unwrap_or(STOP_GRACE)
}

fn serve(
    live: &mut [Option<Arc<dyn Served>>],
    rx: &crossbeam_channel::Receiver<Event>,
    mut code: i32,
    grace: Duration,
) -> i32 {
    let mut waiting: HashMap<usize, (Sender<Response>, Response)> = HashMap::new();
    // Set by a signal: when open files are cut off, then when the daemon stops waiting.
    let mut deadline: Option<(Instant, bool)> = None;
    while live.iter().any(Option::is_some) {
        let ev = match deadline {
            None => rx.recv().ok(),
            Some((at, cut)) => match rx.recv_deadline(at) {
                Ok(ev) => Some(ev),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) if !cut => {
                    for t in live.iter().flatten() {
                        t.cut_off_open_files();
                    }
                    deadline = Some((Instant::now() + Duration::from_secs(10), true));
                    continue;
                }
                Err(_) => {
                    // The sessions did not end: write what they hold and stop anyway.
                    for t in live.iter_mut().filter_map(Option::take) {
                        if let Err(e) = t.finish() {
                            tracing::error!("{e:#}");
                            code = 1;
                        }
                    }
                    break;
                }
            },
        };
        let Some(ev) = ev else { break };
        match ev {
            Event::Signal(sig) => {
                tracing::info!(signal = %sig, phase = "stopping", "stopping: final flush and unmount");
                notify_stopping();
                for t in live.iter().flatten() {
                    let r = t.begin_stop(true);
                    tracing::info!("{}", r.message);
                }
                deadline.get_or_insert((Instant::now() + grace, false));
            }
            Event::Stop { idx, reply } => {
                let Some(t) = live.get(idx).and_then(|t| t.as_ref()) else {
                    continue;
                };
                let mut r = t.begin_stop(false);
                let open = t.open_files();
                let elsewhere = (r.ok && open == 0).then(|| t.mounted_elsewhere()).flatten();
                match reply {
                    Some(tx) if r.ok && open == 0 && elsewhere.is_none() => {
                        waiting.insert(idx, (tx, r));
                    }
                    Some(tx) if r.ok && open == 0 => {
                        // Answered now: the session lasts as long as that copy.
                        let t = t.paths().target.display();
                        let pid = elsewhere.unwrap_or_default();
                        r.message = format!(
                            "{t}: unmounted here; still mounted in another mount namespace (pid {pid}: a container or `unshare`), served there until it is gone, then written to disk"
                        );
                        let _ = tx.send(r);
                    }
                    Some(tx) => {
                        // Answered now; the final flush comes when the last file is closed.
                        if r.ok {
                            r.open_files = Some(open);
                        }
                        let _ = tx.send(r);
                    }
                    None => {}
                }
            }
            Event::SessionEnded(idx) => {
                let Some(t) = live.get_mut(idx).and_then(Option::take) else {
                    continue;
                };
                let result = t.finish();
                let reply = waiting.remove(&idx);
                let last = live.iter().all(Option::is_none);
                match result {
                    Ok(()) => {
                        tracing::info!(target = %t.paths().target.display(), phase = "unmounted", "unmounted; the disk copy is up to date");
                        if let Some((tx, mut r)) = reply {
                            r.exits = last.then(std::process::id);
                            let _ = tx.send(r);
                        }
                    }
                    Err(e) => {
                        tracing::error!("{e:#}");
                        code = 1;
                        if let Some((tx, _)) = reply {
                            let _ = tx.send(Response::err(format!("{e:#}")));
                        }
                    }
                }
            }
        }
    }
    code
}
