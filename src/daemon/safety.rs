//! asd's safety nets in the daemon: the hardlink backup of the disk copy (kept fresh at each
//! session start, removed at a clean stop) and the crash snapshot written when a session is
//! found to have ended uncleanly (design.md §8).

use super::paths::{Side, TargetPaths};
use crate::backing::{Backing, RealBacking};
use crate::backup::{Backups, Discounting};
use crate::config::TargetSettings;
use crate::fsx::Dir;
use crate::fsx::trusted::TrustedPath;
use crate::snapshot;
use anyhow::Context;
use nix::fcntl::OFlag;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// Reports progress of long work: (what, done, total) in bytes or items.
pub type Progress<'a> = crate::hang::Progress<'a>;

/// The target `target`, a directory in `parent` (opened with `Dir::open_strict`), opened by
/// its one name without following a symlink.
pub(super) fn open_target_in(parent: &Dir, target: &Path) -> anyhow::Result<OwnedFd> {
    let name = target.file_name().unwrap_or_default();
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    nix::fcntl::openat(parent, name, flags, nix::sys::stat::Mode::empty())
        .with_context(|| format!("opening {}", target.display()))
}

/// The device of an opened directory.
pub(super) fn dev_of(fd: &OwnedFd) -> anyhow::Result<u64> {
    Ok(nix::sys::stat::fstat(fd)
        .context("stat of the target")?
        .st_dev)
}

/// A target's disk side, with its backups when they are on.
type Disk = (Arc<dyn Backing>, Option<Arc<Backups>>);

/// The disk side of a target, and its backups when they are on: link counts then leave out
/// the backup's links. `target` is the target's directory as `open_target_in` opened it, the
/// one the mount goes on: never opened by its name again, which its owner may have given
/// to another directory meanwhile (docs/security.md R1).
pub fn open_disk(
    p: &TargetPaths,
    s: &TargetSettings,
    side: &Side,
    target: &OwnedFd,
) -> anyhow::Result<Disk> {
    open_disk_in(p, s, target, side.parent.fd(), &side.dir)
}

/// `open_disk` through `parent`, a descriptor of the directory that holds the target and
/// its side directory (a pinned copy of it when the target's path is covered by a mount:
/// renames between the target and the side directory need one mount for both), and
/// `side`, the side directory as `paths::prepare_side` checked it.
pub fn open_disk_in(
    p: &TargetPaths,
    s: &TargetSettings,
    target: &OwnedFd,
    parent: &OwnedFd,
    side: &Dir,
) -> anyhow::Result<Disk> {
    let name = p.target.file_name().unwrap_or_default();
    let again = || target.try_clone().context("duplicating a descriptor");
    let real: Arc<dyn Backing> = Arc::new(RealBacking::new(again()?, side.dup_fd()?));
    if !s.backups {
        return Ok((real, None));
    }
    let parent = nix::unistd::dup(parent).context("duplicating a descriptor")?;
    let b = Arc::new(Backups::new(again()?, parent, name));
    b.adopt_legacy_name()
        .context("renaming the hardlink backup to asd's name")?;
    b.index_existing()
        .context("reading the hardlink backup beside the target")?;
    Ok((
        Arc::new(Discounting {
            inner: real,
            index: b.index.clone(),
        }),
        Some(b),
    ))
}

/// Where a flush keeps the disk version of a file changed behind asdfs (design.md §6.2): a
/// hard link beside the target and its crash snapshots, `snapshot::conflict_name`, made
/// through descriptors (never following a symlink) and never replacing anything.
/// `target`: the target's directory as opened at the start (see `open_disk`).
pub fn conflict_sink(
    p: &TargetPaths,
    side: &Side,
    target: &OwnedFd,
) -> anyhow::Result<crate::store::seen::Sink> {
    use nix::errno::Errno;
    let parent = side.parent.dup_fd()?;
    let name = p.target.file_name().unwrap_or_default().to_os_string();
    let target = target.try_clone()?;
    let shown = p.target.clone();
    Ok(Box::new(move |rel: &Path| {
        let dir = rel.parent().unwrap_or(Path::new(""));
        let dir =
            crate::backing::open_beneath(target.as_fd(), dir, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
        let file = rel
            .file_name()
            .ok_or_else(|| std::io::Error::other("no file name"))?;
        let base = snapshot::conflict_name(&name, SystemTime::now(), rel);
        for n in 0..100u32 {
            let mut copy = base.clone();
            if n > 0 {
                copy.push(format!("_{n:02}"));
            }
            match nix::unistd::linkat(
                &dir,
                file,
                &parent,
                copy.as_os_str(),
                nix::fcntl::AtFlags::empty(),
            ) {
                Ok(()) => {
                    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
                    let sync =
                        nix::fcntl::openat(&parent, ".", flags, nix::sys::stat::Mode::empty())
                            .and_then(|d| nix::unistd::fsync(&d));
                    if let Err(e) = sync {
                        tracing::warn!(error = %e, "could not sync the directory of a conflict copy");
                    }
                    return Ok(shown.with_file_name(copy));
                }
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(std::io::Error::other("no free name for a conflict copy"))
    }))
}

/// Whether the previous session ended without its daemon stopping cleanly and without its
/// RAM store surviving (a reboot or power cut): its session marker is still there.
pub fn ended_uncleanly(p: &TargetPaths, side: &Dir) -> bool {
    let store = ["log", "overlay.json"]
        .iter()
        .any(|f| p.private().join(f).trusted_exists());
    side.contains("session") && !store
}

/// What the start of either mode knows once the disk copy is recovered.
pub struct Recovered {
    /// The disk copy's generation.
    pub generation: u64,
    /// The previous session ended uncleanly (its crash tree is linked, see `unclean_start`).
    pub unclean: bool,
    /// What status shows of it, and of what recovery salvaged.
    pub crash: CrashState,
    /// Paths a salvaged flush did not complete (`flush::Recovered::resync`).
    pub resync: Vec<std::path::PathBuf>,
}

/// Recovers the disk copy (design.md §7) and, after an unclean end, links the last good
/// tree for its crash snapshot (§8): the part of the start both modes share.
pub fn recover(
    p: &TargetPaths,
    s: &TargetSettings,
    side: &Dir,
    backing: &dyn Backing,
    backups: Option<&Backups>,
) -> anyhow::Result<Recovered> {
    let r = crate::flush::recover_disk(backing).context("recovering the disk copy")?;
    if r.completed {
        tracing::warn!(target = %p.target.display(), "completed a flush interrupted by a crash");
    }
    let unclean = ended_uncleanly(p, side);
    let crash = unclean.then(|| unclean_start(p, s, r.generation, backups));
    Ok(Recovered {
        generation: r.generation,
        unclean,
        crash: Arc::new(parking_lot::Mutex::new(with_salvage(crash, r.salvaged))),
        resync: r.resync,
    })
}

/// What status reports of an unclean start, with what recovery salvaged (flush::recover).
pub fn with_salvage(crash: Option<String>, salvaged: Option<String>) -> Option<String> {
    match (crash, salvaged) {
        (Some(c), Some(s)) => Some(format!("{c}; {s}")),
        (c, s) => c.or(s),
    }
}

/// What status says of the start after an unclean end; changed by the background job
/// that writes the crash snapshot.
pub type CrashState = Arc<parking_lot::Mutex<Option<String>>>;

/// At a start after an unclean end, before the mount: logs it and links the last good
/// tree (the recovered disk copy, before any flush) into a crash tree beside the target
/// (design.md §8). Returns what status shows until `crash_snapshot_in_background` has
/// written the snapshot from the links.
pub fn unclean_start(
    p: &TargetPaths,
    s: &TargetSettings,
    generation: u64,
    backups: Option<&crate::backup::Backups>,
) -> String {
    let t = p.target.display();
    tracing::warn!(target = %t, generation, "the previous session ended uncleanly (reboot or power cut); the disk copy holds its last completed flush");
    let Some(b) = backups.filter(|_| s.backups) else {
        return "the previous session ended uncleanly; no crash snapshot (backups are off)".into();
    };
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match b.link_crash_tree(secs) {
        Ok(_) => "the previous session ended uncleanly; crash snapshot: being written".into(),
        Err(e) => {
            tracing::error!(target = %t, error = %e, "the last good tree could not be linked for the crash snapshot");
            format!(
                "the previous session ended uncleanly; the crash snapshot FAILED: linking the tree: {e}"
            )
        }
    }
}

/// After the mount: writes, at idle priority, the crash snapshot (asd's
/// `.NAME-backup_asd-crashrecovery-DATE.tar.zstd`) of every crash tree beside the target
/// from its links, then removes the tree. Flushes replace files by rename, so the links
/// keep the old content; a crash before the snapshot is written leaves the tree, and the
/// next start writes it: nothing is lost. With `report`, `state` follows the outcome.
pub fn crash_snapshot_in_background(
    state: CrashState,
    backups: Option<Arc<crate::backup::Backups>>,
    target: std::path::PathBuf,
    limit: u32,
    report: bool,
) {
    let Some(b) = backups else { return };
    let job = move || {
        lower_priority();
        let trees = match b.crash_trees() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "listing the crash trees failed");
                return;
            }
        };
        for (tree, secs) in trees {
            let line = write_crash_snapshot(&b, &target, &tree, secs, limit);
            if report {
                let mut st = state.lock();
                if st.as_deref().is_some_and(|s| s.contains("being written")) {
                    *st = Some(line);
                }
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("crash-snapshot".into())
        .spawn(job)
    {
        tracing::error!(error = %e, "could not start the crash snapshot");
    }
}

/// Writes the crash snapshot of one crash tree and removes the tree; returns the line for
/// status. On failure the tree stays for the next start.
fn write_crash_snapshot(
    b: &crate::backup::Backups,
    target: &Path,
    tree: &std::ffi::OsStr,
    secs: u64,
    limit: u32,
) -> String {
    let t = target.display();
    let when = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let dest = snapshot::snapshot_path(target, when);
    let name = target.file_name().unwrap_or_default();
    let made = b
        .open_tree(tree)
        .map_err(anyhow::Error::from)
        .and_then(|fd| snapshot::create_in(fd.as_fd(), name, b.parent_fd(), &dest, &mut |_, _| {}));
    match made {
        Ok(info) => {
            if let Err(e) = b.remove_crash_tree(tree) {
                tracing::warn!(error = %e, "could not remove a crash tree whose snapshot is written");
            }
            if let Err(e) = snapshot::enforce_limit(target, limit) {
                tracing::warn!(error = %e, "could not remove old crash snapshots");
            }
            tracing::warn!(target = %t, snapshot = %info.path.display(), size = info.size, "wrote a crash snapshot");
            format!(
                "the previous session ended uncleanly; crash snapshot {} written",
                info.path.display()
            )
        }
        Err(e) => {
            tracing::error!(target = %t, error = %format!("{e:#}"), "the crash snapshot could not be written; its tree stays for the next start");
            format!("the previous session ended uncleanly; the crash snapshot FAILED: {e:#}")
        }
    }
}

/// The calling thread at idle CPU and I/O priority (best effort).
fn lower_priority() {
    // SAFETY: plain syscalls on the calling thread (tid 0 / who 0 = this thread).
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        const IOPRIO_CLASS_IDLE: libc::c_long = 3;
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_CLASS_IDLE << 13,
        );
    }
}

/// Makes the hardlink backup of the session start, in the background: flushes wait for it
/// (they need the disk copy unchanged), lookups do not. FUSE mode: `store` is the target's.
pub fn refresh_backup(
    store: &Arc<crate::store::Store>,
    backups: Option<Arc<crate::backup::Backups>>,
    state: Arc<parking_lot::Mutex<String>>,
    target: std::path::PathBuf,
) {
    let Some(b) = backups else { return };
    let store = store.clone();
    backup_in_background(state, target, move || {
        let _writers = store.disk_writers.lock();
        let _gate = store.disk_gate.read();
        let made = b.refresh();
        // Linking changed the ctimes of files read into RAM before (see store::seen).
        store.seen.forget_ctimes();
        made
    });
}

/// Runs `make` (which makes the backup, holding what keeps flushes out) in a thread, and
/// keeps `state` saying where it is.
pub fn backup_in_background(
    state: Arc<parking_lot::Mutex<String>>,
    target: std::path::PathBuf,
    make: impl FnOnce() -> std::io::Result<u64> + Send + 'static,
) {
    *state.lock() = "being made".into();
    let st = state.clone();
    let spawned = std::thread::Builder::new().name("backup".into()).spawn(move || {
        let line = match make() {
            Ok(files) => {
                tracing::info!(target = %target.display(), files, "hardlink backup of the session start made");
                format!("session start, {} linked", crate::human::count(files, "file"))
            }
            Err(e) => {
                tracing::error!(target = %target.display(), error = %e, "the hardlink backup could not be made");
                format!("FAILED: {e}")
            }
        };
        *st.lock() = line;
    });
    if let Err(e) = spawned {
        *state.lock() = format!("FAILED: {e}");
    }
}

/// At a clean stop (everything on disk): the backup goes, as asd's unsync removes it.
pub fn remove_backup(store: &crate::store::Store, backups: Option<&crate::backup::Backups>) {
    let Some(b) = backups else { return };
    let _writers = store.disk_writers.lock();
    if let Err(e) = b.remove_all() {
        tracing::warn!(error = %e, "could not remove the hardlink backup");
    }
}
