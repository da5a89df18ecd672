//! What both modes' targets share in their life: the start up to the mode's own part (the
//! target resolved, the store made and locked, the disk copy opened, checked and recovered,
//! what a failed start undoes), what they hold alike (`Shared`), serving (timer, control
//! socket, status), the stop, the final flush, the store's removal at a clean end, and the
//! owner records. A small trait (`Mode`) holds what differs; the modes (`target.rs`, FUSE;
//! `overlay.rs`) build on this and never on each other.

use super::paths::{self, TargetPaths};
use super::status::{self, Facts};
use super::timer::{FlushTimer, retry_delay};
use super::{Event, Served, mounting, safety};
use crate::backing::Backing;
use crate::backup::Backups;
use crate::config::TargetSettings;
use crate::control::{self, Request, Response};
use crate::flush::{FlushReport, Ledger};
use anyhow::{Context, bail};
use crossbeam_channel::Sender;
use nix::fcntl::{Flock, FlockArg};
use parking_lot::Mutex;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub(super) use super::status::Phase;

/// The first steps of a start, the same in both modes: the target resolved and checked,
/// its store made (or accepted) and locked, and what a failed start removes again.
pub(super) struct Begun {
    pub paths: TargetPaths,
    pub dirs: paths::StoreDirs,
    pub lock: Flock<File>,
    /// A start that fails from here on removes the store it made (and, once added, the
    /// side directory and the session file), so the next mount does not mistake them for
    /// the leftovers of a daemon that died.
    pub undo: paths::Undo,
    /// Keeps `systemd-tmpfiles --clean` out of the store while it is served.
    pub aging: paths::AgingGuard,
}

/// Resolves the target (only root or its owner may mount it), finds its paths, checks they
/// do not overlap, and makes and locks the store.
pub(super) fn begin(settings: &TargetSettings) -> anyhow::Result<Begun> {
    let target = paths::resolve_target(&settings.target)?;
    let p = paths::target_paths(&target, settings.volatile.as_deref())?;
    paths::check_overlaps(&p)?;
    let (dirs, lock) = lock_store(&p)?;
    let undo = paths::Undo::of(&dirs)?;
    let limit = settings
        .ram_limit
        .unwrap_or_else(crate::config::default_ram_limit);
    paths::limit_private(&dirs.store, limit)?;
    let aging = paths::guard_from_aging(&p);
    Ok(Begun {
        paths: p,
        dirs,
        lock,
        undo,
        aging,
    })
}

/// The start after `begin` and the mode's own first checks, the same in both modes.
pub(super) struct Opened {
    pub begun: Begun,
    /// The disk copy's directory, opened before a mount covers it.
    pub disk_dir: Arc<OwnedFd>,
    pub side: paths::Side,
    pub backing: Arc<dyn Backing>,
    pub backups: Option<Arc<Backups>>,
    pub recovered: safety::Recovered,
}

/// Opens the target beneath `parent` (the directory that holds it, opened with no symlink
/// in its path, or the pinned copy of it: what is mounted on and flushed to is what was
/// checked, whatever a user renames meanwhile, docs/security.md R1), its side directory and
/// disk side; then the check for holders and hard links (`preflight`: `Some(strict)`), and
/// the disk copy's recovery (design.md §7).
pub(super) fn open_disk(
    mut begun: Begun,
    settings: &TargetSettings,
    parent: crate::fsx::Dir,
    preflight: Option<bool>,
) -> anyhow::Result<Opened> {
    let p = &begun.paths;
    let disk_dir = Arc::new(safety::open_target_in(&parent, &p.target)?);
    let side = paths::prepare_side(p, parent, safety::dev_of(&disk_dir)?)?;
    begun.undo.add_side(&side)?;
    let (backing, backups) = safety::open_disk(p, settings, &side, &disk_dir)?;
    if let Some(strict) = preflight {
        super::preflight::check(
            p,
            settings,
            std::os::fd::AsFd::as_fd(&*disk_dir),
            backups.as_deref(),
            strict,
        )?;
    }
    let recovered = safety::recover(p, settings, &side.dir, backing.as_ref(), backups.as_deref())?;
    Ok(Opened {
        begun,
        disk_dir,
        side,
        backing,
        backups,
        recovered,
    })
}

impl Opened {
    /// What the target holds alike in both modes, once its mode's own start is done; and
    /// what a failed start still undoes (the mode disarms it once its mount is on the target).
    pub fn into_shared(
        self,
        settings: TargetSettings,
        events: Sender<Event>,
        idx: usize,
    ) -> (Shared, paths::Undo) {
        let b = self.begun;
        let shared = Shared {
            timer: FlushTimer::new(settings.flush_interval),
            settings,
            paths: b.paths,
            _lock: b.lock,
            _aging: b.aging,
            phase: Mutex::new(Phase::Mounted),
            started: SystemTime::now(),
            backups: self.backups,
            backup_state: Arc::new(Mutex::new("off".into())),
            crash: self.recovered.crash,
            usage: Arc::default(),
            disk_dir: self.disk_dir,
            events,
            idx,
            dirs: b.dirs,
            side: self.side,
        };
        (shared, b.undo)
    }
}

/// What a target holds alike in both modes.
pub(super) struct Shared {
    pub settings: TargetSettings,
    pub paths: TargetPaths,
    _lock: Flock<File>,
    /// Keeps `systemd-tmpfiles --clean` out of the store while it is served.
    _aging: paths::AgingGuard,
    pub phase: Mutex<Phase>,
    pub timer: FlushTimer,
    pub started: SystemTime,
    pub backups: Option<Arc<Backups>>,
    /// What the hardlink backup is doing, for status.
    pub backup_state: Arc<Mutex<String>>,
    /// What happened at the start if the previous session ended uncleanly.
    pub crash: safety::CrashState,
    /// The disk copy's size, measured in the background (status::disk_usage).
    pub usage: Arc<Mutex<status::UsageState>>,
    /// The disk copy's directory, opened before the mount covered it.
    pub disk_dir: Arc<OwnedFd>,
    /// The main loop, and this target's number in it.
    pub events: Sender<Event>,
    pub idx: usize,
    /// The store's directories, checked at the start.
    pub dirs: paths::StoreDirs,
    /// The side directory beside the target, checked at the start.
    pub side: paths::Side,
}

impl Shared {
    pub fn phase(&self) -> Phase {
        *self.phase.lock()
    }
}

/// What differs between the modes once a target is served; the rest of its life (serving,
/// the stop, the end, status) is in this module, once.
pub(super) trait Mode: Send + Sync + 'static {
    fn shared(&self) -> &Shared;
    /// `fuse` or `overlay`, as status shows it.
    fn mode_name(&self) -> &'static str;
    fn ledger(&self) -> &Ledger;
    /// Writes what programs changed to disk, reporting (bytes written, bytes to write).
    fn flush(&self, progress: &dyn Fn(u64, u64)) -> anyhow::Result<FlushReport>;
    /// Holds timed flushes back for the stop's own flush (`true`), or lets them run again
    /// after it failed and the mount stays (`false`).
    fn hold_timed_flushes(&self, hold: bool);
    /// Takes the mount off the target once the stop's flush is done.
    fn detach(&self) -> anyhow::Result<()>;
    /// Files programs still have open in the mount.
    fn open_files(&self) -> u64;
    /// At a stop that cannot wait any longer for open files.
    fn cut_off_open_files(&self);
    /// After the final flush: removes what only this mode made (backups, the pin); false
    /// keeps the store (programs still write into it).
    fn release(&self) -> bool;
    /// What is in RAM and not on disk yet, for status.
    fn changes(&self) -> status::Changes;
    /// Whether changed data presses on the RAM budget (a pressure flush, design.md §2.1).
    fn pressed(&self) -> bool;
    /// A read-only remount (design.md §11): what the mode does besides the flush.
    fn set_read_only(&self, _on: bool) {}
    /// After the detach: a process whose mount namespace still has a copy of the mount
    /// (made by `unshare` or a container), which keeps the session going.
    fn mounted_elsewhere(&self) -> Option<u32> {
        None
    }
}

impl<T: Mode> Served for T {
    fn paths(&self) -> &TargetPaths {
        &self.shared().paths
    }
    fn begin_stop(&self, force: bool) -> Response {
        begin_stop(self, force)
    }
    fn finish(&self) -> anyhow::Result<()> {
        finish(self)
    }
    fn open_files(&self) -> u64 {
        Mode::open_files(self)
    }
    fn cut_off_open_files(&self) {
        Mode::cut_off_open_files(self)
    }
    fn mounted_elsewhere(&self) -> Option<u32> {
        Mode::mounted_elsewhere(self)
    }
}

/// Once the mount is on the target: the crash snapshot in the background, the first
/// measure of the disk copy, the flush timer and the control socket.
pub(super) fn serve<T: Mode>(t: &Arc<T>, unclean: bool) -> anyhow::Result<()> {
    let s = t.shared();
    safety::crash_snapshot_in_background(
        s.crash.clone(),
        s.backups.clone(),
        s.paths.target.clone(),
        s.settings.backup_limit,
        unclean,
    );
    status::measure(&s.usage, &s.disk_dir, t.ledger().disk_gen());
    FlushTimer::start(
        t.clone(),
        |t: &T| &t.shared().timer,
        |t: &T| {
            let notify = Notifier::new(&t.shared().paths.target, IN_RAM);
            t.flush(&|done, total| notify.progress(done, total))
                .map(|_| ())
                .map_err(|_| t.ledger().failures())
        },
        |t: &T| t.pressed(),
    );
    let c = t.clone();
    open_control(&s.paths, &s.disk_dir, move |req, report| {
        handle(&*c, req, report)
    })
}

fn handle(t: &dyn Mode, req: Request, report: control::Report<'_>) -> Response {
    let s = t.shared();
    match req {
        Request::Flush => {
            let notify = Notifier::new(&s.paths.target, IN_RAM);
            let r = t.flush(&|done, total| {
                notify.progress(done, total);
                report(done, total)
            });
            flush_response(&s.paths.target, r)
        }
        Request::Status => Response {
            ok: true,
            message: String::new(),
            status: Some(status_of(t)),
            ..Response::default()
        },
        Request::Unmount => request_stop(&s.events, s.idx),
        Request::Readonly { on } => {
            t.set_read_only(on);
            super::readonly::answer(&s.paths.target, on, || t.flush(report))
        }
    }
}

/// The status report of a target in either mode.
pub(super) fn status_of(t: &dyn Mode) -> crate::status::Status {
    let s = t.shared();
    let facts = Facts {
        mode: t.mode_name(),
        settings: &s.settings,
        paths: &s.paths,
        phase: s.phase(),
        started: s.started,
        ledger: t.ledger(),
        next_flush: s.timer.next(),
        backup: s.backup_state.lock().clone(),
        crash: s.crash.lock().clone(),
        disk: status::disk_usage(&s.usage, &s.disk_dir, t.ledger().disk_gen()),
        parent: s.side.parent.proc_path(),
    };
    status::report(facts, t.changes())
}

/// Flushes, then detaches the mount. Files still open keep working; the session ends
/// when the last is closed. A flush that fails keeps the mount unless `force`.
fn begin_stop(t: &dyn Mode, force: bool) -> Response {
    let s = t.shared();
    if s.phase() != Phase::Mounted {
        return Response::ok(format!("{}: already unmounting", s.paths.target.display()));
    }
    t.hold_timed_flushes(true);
    let mut failed = None;
    let notify = Notifier::new(&s.paths.target, STOPPING);
    if let Err(e) = t.flush(&|done, total| notify.progress(done, total)) {
        if !force {
            t.hold_timed_flushes(false);
            return kept_mounted(&s.paths, &e);
        }
        tracing::warn!(error = %format!("{e:#}"), "flush before unmount failed; retrying after");
        failed = Some(e);
    }
    s.timer.stop();
    if let Err(e) = t.detach() {
        return Response::err(format!("{e:#}"));
    }
    *s.phase.lock() = Phase::Detached;
    Response::ok(detached_message(
        &s.paths,
        open_files_settled(t),
        failed.as_ref(),
    ))
}

/// After the session ended: the final flush (retried), then the store is removed. If the
/// flush keeps failing the store stays on tmpfs for the next mount to recover.
fn finish(t: &dyn Mode) -> anyhow::Result<()> {
    let s = t.shared();
    s.timer.stop();
    *s.phase.lock() = Phase::Stopped;
    let notify = Notifier::new(&s.paths.target, STOPPING);
    final_flush(&s.paths, || {
        t.flush(&|done, total| notify.progress(done, total))
    })?;
    if t.release() {
        remove_store(&s.dirs, &s.side);
    }
    Ok(())
}

/// What systemd's status line says of a target between flushes, and while it stops.
const IN_RAM: &str = "in RAM";
const STOPPING: &str = "written to disk, unmounting";

/// A flush's progress told to systemd (`STATUS=`, under `Type=notify`), at most a few times
/// a second: `systemctl status` then shows what is being written.
struct Notifier {
    target: Option<String>,
    /// What the status line says once the flush is over.
    after: &'static str,
    last: std::cell::Cell<Option<Instant>>,
}

impl Notifier {
    fn new(target: &Path, after: &'static str) -> Notifier {
        let on = std::env::var_os("NOTIFY_SOCKET").is_some();
        Notifier {
            target: on.then(|| target.display().to_string()),
            after,
            last: std::cell::Cell::new(None),
        }
    }

    fn progress(&self, done: u64, total: u64) {
        let Some(target) = &self.target else { return };
        let due = self
            .last
            .get()
            .is_none_or(|l| l.elapsed() >= Duration::from_millis(250));
        if !due && done < total {
            return;
        }
        self.last.set(Some(Instant::now()));
        let line = format!(
            "{target}: writing to disk: {} of {}",
            crate::human::bytes(done),
            crate::human::bytes(total)
        );
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&line)]);
    }
}

impl Drop for Notifier {
    /// Once the flush is over, the status line says so again.
    fn drop(&mut self) {
        if let (Some(target), Some(_)) = (&self.target, self.last.get()) {
            let line = format!("{target}: {}", self.after);
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&line)]);
        }
    }
}

/// The answer to a flush request.
pub(super) fn flush_response(target: &Path, r: anyhow::Result<FlushReport>) -> Response {
    match r {
        Ok(r) => Response::ok(format!(
            "{}: flushed {}, {} in {} (generation {})",
            target.display(),
            crate::human::count(r.files, "file"),
            crate::human::bytes(r.bytes),
            crate::human::took(r.took.as_millis() as u64),
            r.generation
        )),
        Err(e) => Response::err(format!(
            "{}: flush failed: {e:#}; the changes stay in RAM",
            target.display()
        )),
    }
}

/// The answer to an unmount whose flush failed: the mount stays, and how to recover.
pub(super) fn kept_mounted(p: &TargetPaths, e: &anyhow::Error) -> Response {
    let t = p.target.display();
    tracing::warn!(error = %format!("{e:#}"), "flush before unmount failed; the target stays mounted");
    let full = e
        .chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|e| e.raw_os_error() == Some(libc::ENOSPC));
    let advice = if full {
        format!(
            "Make room (on the disk copy's filesystem, or on the store's tmpfs: see `asdfs status {t}`) \
             and run `asdfs unmount {t}` again"
        )
    } else {
        format!("See `asdfs status {t}` and the log, then run `asdfs unmount {t}` again")
    };
    Response::err(format!(
        "{t}: not unmounted: the flush failed ({e:#}); it is still mounted and its changes are in RAM ({}). {advice}",
        p.store.display()
    ))
}

/// The answer of a stop that detached the mount: whether the disk copy is up to date, or
/// (a forced stop whose flush failed) that writing goes on and where the changes are.
pub(super) fn detached_message(
    p: &TargetPaths,
    open: u64,
    failed: Option<&anyhow::Error>,
) -> String {
    let t = p.target.display();
    match (failed, open) {
        (Some(e), _) => {
            let m = format!(
                "{t}: unmounted; writing it to disk failed so far ({e:#}): it is retried, and the changes are kept in RAM ({}) until it works",
                p.store.display()
            );
            tracing::warn!("{m}");
            m
        }
        (None, 0) => format!("{t}: unmounted; the disk copy is up to date"),
        (None, n) => {
            let n = crate::human::count(n, "open file");
            let are = if n.starts_with("1 ") { "is" } else { "are" };
            format!("{t}: unmounted; {n} {are} still served and flushed when closed")
        }
    }
}

/// The final flush of a stop, retried with backoff; if it keeps failing the changes stay
/// in the store, and the error says so.
pub(super) fn final_flush(
    p: &TargetPaths,
    flush: impl Fn() -> anyhow::Result<FlushReport>,
) -> anyhow::Result<()> {
    let mut last = None;
    for attempt in 0..5u32 {
        match flush() {
            Ok(_) => return Ok(()),
            Err(e) => {
                std::thread::sleep(retry_delay(attempt + 1, Duration::from_secs(8)));
                last = Some(e);
            }
        }
    }
    let e = last.unwrap_or_else(|| anyhow::anyhow!("no attempt"));
    bail!(
        "{}: the final flush failed ({e:#}); the changes are kept in {} and `asdfs mount {}` will write them",
        p.target.display(),
        p.store.display(),
        p.target.display()
    )
}

/// Serves the target's control socket: root, the daemon's user and the target's owner may
/// send requests (`control::bind` and `control::serve` say how others are kept out).
/// `disk_dir` is the target as opened at the start: its owner is read from it, never from
/// the path (a parent its owner renamed could lead anywhere).
pub(super) fn open_control(
    p: &TargetPaths,
    disk_dir: &std::os::fd::OwnedFd,
    handle: impl Fn(Request, control::Report<'_>) -> Response + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let owner = nix::sys::stat::fstat(disk_dir)
        .context("the target's owner")?
        .st_uid;
    let listener = control::bind(&p.socket(), owner)?;
    let allowed = control::Allowed::new(owner);
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || control::serve(listener, allowed, handle))?;
    Ok(())
}

/// An unmount asked for on the control socket: the main loop stops the target and answers.
pub(super) fn request_stop(events: &Sender<Event>, idx: usize) -> Response {
    let (tx, rx) = crossbeam_channel::bounded(1);
    if events
        .send(Event::Stop {
            idx,
            reply: Some(tx),
        })
        .is_err()
    {
        return Response::err("the daemon is shutting down");
    }
    rx.recv()
        .unwrap_or_else(|_| Response::err("the daemon ended before answering"))
}

/// The store's files, and the session file in the side directory, removed through the
/// descriptors checked at the start (the store: its own files only, then the directory if
/// nothing else is left in it). Called once the session ended cleanly.
pub(super) fn remove_store(dirs: &paths::StoreDirs, side: &paths::Side) {
    use crate::fsx;
    use std::ffi::OsStr;
    let _ = fsx::unlink(&side.dir, OsStr::new("session"));
    remove_side(side);
    let _ = fsx::unlink(&dirs.store, OsStr::new("control.sock"));
    paths::unmount_private(&dirs.store);
    if let Err(e) = fsx::remove_tree(&dirs.store, OsStr::new("private")) {
        tracing::warn!(error = %e, "could not remove the RAM store");
    }
    let _ = fsx::unlink(&dirs.store, OsStr::new("owner.json"));
    let _ = fsx::unlink(&dirs.store, OsStr::new("lock"));
    let key = dirs.store.path().file_name().unwrap_or_default();
    let _ = fsx::rmdir(&dirs.root, key);
}

/// The side directory goes with a clean end when nothing but the generation counter is left
/// in it (a journal or stage keeps it), and only if its name still holds the directory
/// checked at the start; rmdir never follows a symlink. The next session starts again at
/// generation 0 in a fresh side directory.
fn remove_side(side: &paths::Side) {
    use rustix::fs::{Mode, OFlags};
    use std::ffi::OsStr;
    let readable = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let listed = rustix::fs::openat(side.dir.fd(), ".", readable, Mode::empty())
        .and_then(rustix::fs::Dir::read_from);
    let only_generation = listed.is_ok_and(|d| {
        d.flatten()
            .all(|e| matches!(e.file_name().to_bytes(), b"." | b".." | b"generation"))
    });
    let name = side.dir.path().file_name().unwrap_or_default();
    // Looked at without entering it: the parent's owner may have put a FUSE mount that
    // never answers at the name (QA M2); an open of it would hang the daemon's end.
    let now = side.parent.ident_in_cached(name);
    let held = side.dir.stat();
    let same = matches!((now, held), (Ok(a), Ok(b)) if a == (b.st_dev, b.st_ino));
    if only_generation && same {
        let _ = crate::fsx::unlink(&side.dir, OsStr::new("generation"));
        let _ = crate::fsx::rmdir(&side.parent, name);
    }
}

/// The store, made or accepted, and its lock. A daemon that ends removes its store while
/// it holds the lock, so the store held when the lock is won may have gone meanwhile (a
/// mount right after an unmount meets the old daemon's last steps): then it is made again.
pub(super) fn lock_store(p: &TargetPaths) -> anyhow::Result<(paths::StoreDirs, Flock<File>)> {
    for _ in 0..50 {
        let dirs = match paths::prepare_store(p) {
            Ok(dirs) => dirs,
            Err(e) if e.is::<paths::StoreGone>() => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => return Err(e),
        };
        match take_lock(p, &dirs.store) {
            Ok(lock) if store_intact(&dirs, &lock) => return Ok((dirs, lock)),
            Ok(_) => {}
            Err(_) if !store_intact_dir(&dirs) => {}
            Err(e) => return Err(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "{}: its store kept being removed while this daemon started (another daemon ending?)",
        p.store.display()
    )
}

/// Whether the locked store is still the one its path names, with `private/` and the lock
/// file in it.
fn store_intact(dirs: &paths::StoreDirs, lock: &Flock<File>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let linked = lock.metadata().is_ok_and(|m| m.nlink() > 0);
    linked && store_intact_dir(dirs) && dirs.store.contains("private")
}

fn store_intact_dir(dirs: &paths::StoreDirs) -> bool {
    let key = dirs.store.path().file_name().unwrap_or_default();
    let now = dirs.root.open_in(key).and_then(|d| d.stat());
    let held = dirs.store.stat();
    matches!((now, held), (Ok(a), Ok(b)) if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino))
}

pub(super) fn take_lock(p: &TargetPaths, store: &crate::fsx::Dir) -> anyhow::Result<Flock<File>> {
    // An ending daemon's last steps (final flush done, layers and store removed) can take
    // seconds on a loaded machine; a mount right after an unmount waits for them.
    let start = Instant::now();
    let deadline = start + Duration::from_secs(30);
    let mut said = false;
    loop {
        let flags = rustix::fs::OFlags::CREATE | rustix::fs::OFlags::WRONLY;
        let f = crate::fsx::open_nofollow(store, std::ffi::OsStr::new("lock"), flags, 0o600)?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(l),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let pid = owner_pid(store);
                // A daemon that was just killed, or that is exiting after its unmount, holds
                // the lock until its last thread is gone.
                let mounted = mounting::mount_at(&p.target)
                    .ok()
                    .flatten()
                    .is_some_and(|m| m.is_asdfs());
                let ending = pid.is_some_and(dying) || !mounted;
                if ending && Instant::now() < deadline {
                    if !said && start.elapsed() >= Duration::from_secs(3) {
                        let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                        tracing::info!(
                            "{}: waiting for the asdfs daemon{pid} that is ending to let go of the store",
                            p.target.display()
                        );
                        said = true;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                bail!("{}: already kept in RAM by asdfs{pid}", p.target.display())
            }
            Err((_, e)) => return Err(e).context("locking the store"),
        }
    }
}

fn owner_pid(store: &crate::fsx::Dir) -> Option<u32> {
    let s = crate::fsx::read_nofollow(store, std::ffi::OsStr::new("owner.json"), 1 << 16).ok()?;
    serde_json::from_slice::<serde_json::Value>(&s).ok()?["pid"]
        .as_u64()
        .map(|p| p as u32)
}

/// Whether a process is gone or exiting (its main thread a zombie).
fn dying(pid: u32) -> bool {
    match crate::fsx::trusted::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                == Some("Z")
        }
        Err(_) => true,
    }
}

/// A mount left on the target by a daemon that died is removed, so that the directory
/// underneath can be reached again.
pub(super) fn clear_dead_mount(target: &Path) -> anyhow::Result<()> {
    mounting::clear_dead_fuse_mounts(target)
}

/// `owner.json` in the store (0600) and the session marker in the side directory (0644:
/// the target's user's `asdfs status` reads it), each replaced atomically through the
/// directory's descriptor, never written through a symlink someone planted.
pub(super) fn write_owner(
    p: &TargetPaths,
    s: &TargetSettings,
    store: &crate::fsx::Dir,
    side: &crate::fsx::Dir,
) -> anyhow::Result<()> {
    use crate::fsx;
    use std::ffi::OsStr;
    let started = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let owner = serde_json::json!({
        "target": p.target,
        "pid": std::process::id(),
        "started": started,
        "version": env!("CARGO_PKG_VERSION"),
        "mode": s.mode,
    });
    let owner = serde_json::to_vec_pretty(&owner)?;
    fsx::write_atomic(store, OsStr::new("owner.json"), &owner, 0o600)?;
    let session =
        serde_json::json!({ "store": p.store, "pid": std::process::id(), "started": started });
    let session = serde_json::to_vec_pretty(&session)?;
    fsx::write_atomic(side, OsStr::new("session"), &session, 0o644)
        .with_context(|| format!("writing {}", p.side.join("session").display()))?;
    Ok(())
}

/// Files programs still hold in a target that is stopping, asked again for a moment while
/// any are: a holder that is just closing (or a forked child that holds a copy of a
/// descriptor until its exec) does not turn an unmount into "served until closed".
fn open_files_settled(t: &dyn Mode) -> u64 {
    let until = Instant::now() + Duration::from_millis(500);
    let mut open = t.open_files();
    while open > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(25));
        open = t.open_files();
    }
    open
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A start that meets an ending daemon removing its store (as after `umount -i`) makes
    /// the store again instead of failing with "private: cannot create the directory: No
    /// such file or directory" (CI: mount 14 of 30 in the lifecycle test).
    #[test]
    fn a_store_removed_while_a_start_prepares_it_is_made_again() {
        let vol = tempfile::Builder::new()
            .prefix("asdfs-unit-vol-")
            .tempdir_in("/dev/shm")
            .unwrap();
        let target = tempfile::tempdir().unwrap();
        let store_root = vol.path().join("asdfs");
        let p = TargetPaths {
            target: target.path().to_path_buf(),
            side: target.path().with_extension("side"),
            store: store_root.join(paths::store_key(target.path())),
            store_root,
        };
        let mut failures = Vec::new();
        for round in 0..300u32 {
            drop(lock_store(&p).unwrap());
            let (root, store) = (p.store_root.clone(), p.store.clone());
            // The ending daemon's removal, again and again for 3 ms, so that it lands at
            // every step of a start that begins in that time.
            let started = Arc::new(std::sync::Barrier::new(2));
            let ender = std::thread::spawn({
                let started = started.clone();
                move || {
                    started.wait();
                    let end = Instant::now() + Duration::from_millis(3);
                    while Instant::now() < end {
                        remove_store_files(&root, &store);
                    }
                }
            });
            started.wait();
            std::thread::sleep(Duration::from_micros(u64::from(round % 10) * 250));
            if let Err(e) = lock_store(&p) {
                failures.push(format!("{e:#}"));
            }
            ender.join().unwrap();
        }
        assert!(
            failures.is_empty(),
            "{} of 300 starts failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(3)]
        );
    }

    /// What `remove_store` does to the store now at `store`, without a session or side
    /// directory.
    fn remove_store_files(root: &Path, store: &Path) {
        use crate::fsx::{self, Dir};
        use std::ffi::OsStr;
        let (Ok(root), Ok(store)) = (Dir::open(root), Dir::open(store)) else {
            return;
        };
        let _ = fsx::remove_tree(&store, OsStr::new("private"));
        let _ = fsx::unlink(&store, OsStr::new("lock"));
        let key = store.path().file_name().unwrap_or_default();
        let _ = fsx::rmdir(&root, key);
    }
}
