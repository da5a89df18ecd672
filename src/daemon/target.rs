//! One target served by the daemon: from the checks before mounting, through recovery and
//! takeover, the mount, the flush timer and the control socket, to the final flush.

use super::paths::{self, TargetPaths};
use super::timer::FlushTimer;
use super::{Event, mounting, safety, status};
use crate::backing::Backing;
use crate::config::{FsyncPolicy, TargetSettings};
use crate::control::{self, Request, Response};
use crate::flush::{FlushReport, Flusher};
use crate::fsx::trusted::TrustedPath;
use crate::fuse::{AsdFs, SyncHook};
use crate::store::types::NodeId;
use crate::store::{Store, StoreSetup};
use anyhow::{Context, bail};
use crossbeam_channel::Sender;
use nix::fcntl::{Flock, FlockArg};
use parking_lot::Mutex;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// FUSE request threads per target.
const FUSE_THREADS: usize = 4;

/// Where a target is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Mounted,
    /// Unmounted, but files opened before are still served.
    Detached,
    Stopped,
}

impl Phase {
    /// As status shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Mounted => "mounted",
            Phase::Detached => "detached",
            Phase::Stopped => "stopping",
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
    Response::err(format!(
        "{t}: not unmounted: the flush failed ({e:#}); it is still mounted and its changes are in RAM ({}). \
         Make room (on the disk copy's filesystem, or on the store's tmpfs: see `asdfs status {t}`) \
         and run `asdfs unmount {t}` again",
        p.store.display()
    ))
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

pub struct Target {
    pub settings: TargetSettings,
    pub paths: TargetPaths,
    pub store: Arc<Store>,
    pub flusher: Arc<Flusher>,
    _lock: Flock<File>,
    /// Keeps `systemd-tmpfiles --clean` out of the store while it is served.
    _aging: paths::AgingGuard,
    pub(super) phase: Mutex<Phase>,
    pub(super) timer: FlushTimer,
    pub(super) started: SystemTime,
    pub(super) backups: Option<Arc<crate::backup::Backups>>,
    /// What the hardlink backup is doing, for status.
    pub(super) backup_state: Arc<Mutex<String>>,
    /// What happened at start if the previous session ended uncleanly.
    pub(super) crash: safety::CrashState,
    /// The disk copy's size, measured in the background (status::disk_usage).
    pub(super) usage: Arc<Mutex<status::UsageState>>,
    /// The disk copy's directory, opened before the mount covered it.
    pub(super) disk_dir: Arc<std::os::fd::OwnedFd>,
    /// The FUSE connection number, to abort it if a stop must not wait for open files.
    fuse_conn: Mutex<Option<u64>>,
    /// The id of the FUSE mount root made (`mounting::FuseMount`).
    mount_id: Mutex<Option<u64>>,
    /// The store's directories, checked at the start.
    dirs: paths::StoreDirs,
    /// The side directory beside the target, checked at the start.
    side: paths::Side,
}

impl Target {
    /// Checks, recovers, takes over or creates the store, and mounts. Returns once the mount
    /// is live.
    pub fn start(
        settings: TargetSettings,
        events: Sender<Event>,
        idx: usize,
        _progress: safety::Progress<'_>,
    ) -> anyhow::Result<Arc<Target>> {
        debug_assert_eq!(settings.mode, crate::config::Mode::Fuse);
        let target = paths::resolve_target(&settings.target)?;
        let p = paths::target_paths(&target, settings.volatile.as_deref())?;
        paths::check_overlaps(&p)?;
        // A start that fails from here on removes the store it made (and below, the side
        // directory and the session file), so the next mount does not mistake them for
        // the leftovers of a daemon that died.
        let (dirs, lock) = lock_store(&p)?;
        let mut undo = paths::Undo::of(&dirs)?;
        let aging = paths::guard_from_aging(&p);
        clear_dead_mount(&p.target)?;
        paths::resolve_target(&p.target)?;
        // The target's parent with no symlink anywhere in its path, and the target opened
        // beneath it: what is mounted on and flushed to is what was checked, whatever a
        // user renames meanwhile (docs/security.md R1).
        let parent = crate::fsx::Dir::open_strict(p.target.parent().unwrap_or(Path::new("/")))?;
        let disk_dir = Arc::new(safety::open_target_in(&parent, &p.target)?);
        let side = paths::prepare_side(&p, parent, safety::dev_of(&disk_dir)?)?;
        undo.add_side(&side)?;
        let (backing, backups) = safety::open_disk(&p, &settings, &side)?;
        let taking_over = p.private().join("log").trusted_exists();
        super::preflight::check(
            &p,
            &settings,
            std::os::fd::AsFd::as_fd(&*disk_dir),
            backups.as_deref(),
            !taking_over,
        )?;
        let safety::Recovered {
            generation,
            unclean,
            crash,
        } = safety::recover(
            &p,
            &settings,
            &side.dir,
            backing.as_ref(),
            backups.as_deref(),
        )?;
        let (store, took_over) = open_store(&p, backing, generation)?;
        if let Some(n) = settings.open_files {
            store.set_open_files(n);
        }
        store
            .seen
            .set_sink(p.target.clone(), safety::conflict_sink(&p, &side)?);
        let flusher = Arc::new(Flusher::new(store.clone(), generation));
        if took_over {
            tracing::warn!(target = %target.display(), "took over the RAM store of a daemon that died; writing it to disk");
            if let Err(e) = flusher.flush() {
                tracing::error!(error = %format!("{e:#}"), "flushing the recovered store failed; it stays in RAM");
            }
        }
        // On a tmpfs that data filled, the new owner.json is written in the log's reserve.
        store.lend_reserve(|| write_owner(&p, &settings, &dirs.store, &side.dir))?;
        undo.session = Some(side.dir.try_clone()?);
        let t = Arc::new(Target {
            timer: FlushTimer::new(settings.flush_interval),
            settings,
            paths: p,
            store,
            flusher,
            _lock: lock,
            _aging: aging,
            phase: Mutex::new(Phase::Mounted),
            started: SystemTime::now(),
            backups,
            backup_state: Arc::new(Mutex::new("off".into())),
            crash,
            usage: Arc::default(),
            disk_dir,
            fuse_conn: Mutex::new(None),
            mount_id: Mutex::new(None),
            dirs,
            side,
        });
        t.mount(events.clone(), idx)?;
        undo.disarm();
        safety::refresh_backup(&t);
        safety::crash_snapshot_in_background(
            t.crash.clone(),
            t.backups.clone(),
            t.paths.target.clone(),
            t.settings.backup_limit,
            unclean,
        );
        status::measure_disk(&t);
        FlushTimer::start(
            t.clone(),
            |t| &t.timer,
            |t| {
                t.flusher
                    .flush()
                    .map(|_| ())
                    .map_err(|_| t.flusher.ledger().failures())
            },
        );
        t.start_control(events, idx)?;
        Ok(t)
    }

    /// Detaches the mount: through the descriptor of the mount when root made it, so the
    /// target's path (in a directory its owner controls) is not resolved again.
    fn unmount(&self) -> anyhow::Result<()> {
        match *self.mount_id.lock() {
            Some(id) => mounting::unmount_checked(
                &self.side.parent,
                self.paths.target.file_name().unwrap_or_default(),
                id,
                &self.paths.target,
            ),
            None => mounting::unmount(&self.paths.target),
        }
    }

    fn mount(&self, events: Sender<Event>, idx: usize) -> anyhow::Result<()> {
        let root = self.store.getattr(NodeId::ROOT)?;
        let mode = libc::S_IFDIR | root.attr.mode;
        self.store
            .set_relatime(self.settings.atime == crate::config::Atime::Relatime);
        let mounted = mounting::mount_fuse(
            &self.paths.target,
            std::os::fd::AsFd::as_fd(&*self.disk_dir),
            mode,
            self.settings.atime,
        )?;
        let dev = mounted.dev;
        *self.mount_id.lock() = mounted.mount_id;
        *self.fuse_conn.lock() = mounting::fuse_connection(&self.paths.target);
        let hook: Option<SyncHook> = match self.settings.fsync {
            FsyncPolicy::Sync => {
                let f = self.flusher.clone();
                Some(Arc::new(move || f.flush().map(|_| ())))
            }
            FsyncPolicy::Defer => None,
        };
        let fs = AsdFs::new(self.store.clone(), hook, crate::fuse::DataPath::from_env());
        let mut cfg = fuser::Config::default();
        cfg.n_threads = Some(FUSE_THREADS);
        cfg.clone_fd = true;
        cfg.acl = fuser::SessionACL::All;
        let session = match fuser::Session::from_fd(fs, dev.into(), fuser::SessionACL::All, cfg) {
            Ok(s) => s,
            Err(e) => {
                let _ = self.unmount();
                return Err(e).context("starting the FUSE session");
            }
        };
        std::thread::Builder::new()
            .name("fuse-session".into())
            .spawn(move || {
                // Sent however the session ends, a panic too: the main loop waits for it.
                struct Ended(Sender<Event>, usize);
                impl Drop for Ended {
                    fn drop(&mut self) {
                        let _ = self.0.send(Event::SessionEnded(self.1));
                    }
                }
                let _ended = Ended(events, idx);
                if let Err(e) = session.run() {
                    tracing::error!(error = %e, "FUSE session ended with an error");
                }
            })?;
        Ok(())
    }

    fn start_control(self: &Arc<Self>, events: Sender<Event>, idx: usize) -> anyhow::Result<()> {
        let t = self.clone();
        open_control(&self.paths, &self.disk_dir, move |req, report| {
            t.handle(req, report, &events, idx)
        })
    }

    fn handle(
        &self,
        req: Request,
        report: control::Report<'_>,
        events: &Sender<Event>,
        idx: usize,
    ) -> Response {
        match req {
            Request::Flush => {
                flush_response(&self.paths.target, self.flusher.flush_reporting(report))
            }
            Request::Status => Response {
                ok: true,
                message: String::new(),
                status: Some(status::of(self)),
                ..Response::default()
            },
            Request::Unmount => request_stop(events, idx),
            Request::Readonly { on } => {
                self.store.set_read_only(on);
                super::readonly::answer(&self.paths.target, on, || {
                    self.flusher.flush_reporting(report)
                })
            }
        }
    }

    /// Flushes, then detaches the mount. Files still open keep working; the session ends
    /// when the last is closed. A flush that fails keeps the mount unless `force`.
    fn stop(&self, force: bool) -> Response {
        if *self.phase.lock() != Phase::Mounted {
            return Response::ok(format!(
                "{}: already unmounting",
                self.paths.target.display()
            ));
        }
        self.timer.pause(true);
        if let Err(e) = self.flusher.flush() {
            if !force {
                self.timer.pause(false);
                return kept_mounted(&self.paths, &e);
            }
            tracing::warn!(error = %format!("{e:#}"), "flush before unmount failed; retrying after");
        }
        self.stop_timer();
        if let Err(e) = self.unmount() {
            return Response::err(format!("{e:#}"));
        }
        *self.phase.lock() = Phase::Detached;
        let open = self.store.summary().open_handles;
        let msg = if open > 0 {
            format!(
                "{}: unmounted; {open} open files are still served and flushed when closed",
                self.paths.target.display()
            )
        } else {
            format!(
                "{}: unmounted; the disk copy is up to date",
                self.paths.target.display()
            )
        };
        Response::ok(msg)
    }

    /// At a stop that cannot wait any longer for programs to close their files: cuts them
    /// off (their next request fails with ENOTCONN, so nothing they write is silently
    /// dropped); the session then ends and `finish` writes everything to disk.
    fn cut_off(&self) {
        let open = self.store.summary().open_handles;
        tracing::warn!(target = %self.paths.target.display(), open, "files still open at the stop: cutting them off; what was written through them is flushed");
        let conn = *self.fuse_conn.lock();
        match conn.map(|c| mounting::abort_connection(c, &self.paths.store)) {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "could not abort the FUSE connection")
            }
            None => tracing::warn!("the FUSE connection is not known; cannot cut off open files"),
        }
    }

    fn stop_timer(&self) {
        self.timer.stop();
    }

    /// After the session ended: the final flush (retried), then the store is removed. If the
    /// flush keeps failing the store stays on tmpfs for the next mount to recover.
    fn end(&self) -> anyhow::Result<()> {
        self.stop_timer();
        *self.phase.lock() = Phase::Stopped;
        final_flush(&self.paths, || self.flusher.flush())?;
        safety::remove_backup(self);
        self.remove_store();
        Ok(())
    }

    fn remove_store(&self) {
        remove_store(&self.dirs, &self.side);
    }
}

impl super::Served for Target {
    fn paths(&self) -> &TargetPaths {
        &self.paths
    }
    fn begin_stop(&self, force: bool) -> Response {
        self.stop(force)
    }
    fn finish(&self) -> anyhow::Result<()> {
        self.end()
    }
    fn open_files(&self) -> u64 {
        self.store.summary().open_handles
    }
    fn cut_off_open_files(&self) {
        self.cut_off()
    }
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

pub(super) fn retry_delay(failures: u32, cap: Duration) -> Duration {
    let secs = 1u64 << failures.min(16);
    Duration::from_secs(secs)
        .min(cap)
        .max(Duration::from_secs(1))
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
    let now = side.parent.open_in(name).and_then(|d| d.stat());
    let held = side.dir.stat();
    let same =
        matches!((now, held), (Ok(a), Ok(b)) if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino));
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
        let dirs = paths::prepare_store(p)?;
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
    let deadline = Instant::now() + Duration::from_secs(5);
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

fn open_store(
    p: &TargetPaths,
    backing: Arc<dyn Backing>,
    generation: u64,
) -> anyhow::Result<(Arc<Store>, bool)> {
    let private = p.private();
    let setup = StoreSetup {
        backing,
        private_dir: &private,
        target: &p.target,
        base_gen: generation,
    };
    if private.join("log").trusted_exists() {
        let s = Store::take_over(setup)
            .with_context(|| format!("taking over the RAM store in {}", p.store.display()))?;
        return Ok((Arc::new(s), true));
    }
    Ok((
        Arc::new(Store::fresh(setup).context("creating the RAM store")?),
        false,
    ))
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
