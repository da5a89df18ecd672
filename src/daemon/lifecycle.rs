//! What both modes' targets share in their life: the first steps of a start (the target
//! resolved, the store made and locked, what a failed start undoes), the control socket,
//! the final flush, the store's removal at a clean end, and the owner records. The modes
//! (`target.rs`, FUSE; `overlay.rs`) build on this and never on each other.

use super::paths::{self, TargetPaths};
use super::{Event, mounting};
use crate::config::TargetSettings;
use crate::control::{self, Request, Response};
use crate::flush::FlushReport;
use anyhow::{Context, bail};
use crossbeam_channel::Sender;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// The first steps of a start, the same in both modes: the target resolved and checked,
/// its store made (or accepted) and locked, and what a failed start removes again.
pub(super) struct Begun {
    pub target: PathBuf,
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
        target,
        paths: p,
        dirs,
        lock,
        undo,
        aging,
    })
}

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
            format!("{t}: unmounted; {n} open files are still served and flushed when closed")
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
