//! asd's safety nets in the daemon: the hardlink backup of the disk copy (kept fresh at each
//! session start, removed at a clean stop) and the crash snapshot written when a session is
//! found to have ended uncleanly (design.md §8).

use super::paths::{Side, TargetPaths};
use super::target::Target;
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
pub type Progress<'a> = &'a dyn Fn(&str, u64, u64);

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

pub(super) fn open_dir(p: &Path) -> anyhow::Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    nix::fcntl::open(p, flags, nix::sys::stat::Mode::empty())
        .with_context(|| format!("opening {}", p.display()))
}

/// A target's disk side, with its backups when they are on.
type Disk = (Arc<dyn Backing>, Option<Arc<Backups>>);

/// The disk side of a target, and its backups when they are on: link counts then leave out
/// the backup's links.
pub fn open_disk(p: &TargetPaths, s: &TargetSettings, side: &Side) -> anyhow::Result<Disk> {
    open_disk_in(p, s, side.parent.fd(), &side.dir)
}

/// `open_disk` through `parent`, a descriptor of the directory that holds the target and
/// its side directory (a pinned copy of it when the target's path is covered by a mount:
/// renames between the target and the side directory need one mount for both), and
/// `side`, the side directory as `paths::prepare_side` checked it.
pub fn open_disk_in(
    p: &TargetPaths,
    s: &TargetSettings,
    parent: &OwnedFd,
    side: &Dir,
) -> anyhow::Result<Disk> {
    let name = p.target.file_name().unwrap_or_default();
    let beneath = |n: &std::ffi::OsStr| {
        nix::fcntl::openat(
            parent,
            n,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .with_context(|| format!("opening {}", p.target.with_file_name(n).display()))
    };
    let real: Arc<dyn Backing> = Arc::new(RealBacking::new(beneath(name)?, side.dup_fd()?));
    if !s.backups {
        return Ok((real, None));
    }
    let again = nix::unistd::dup(parent).context("duplicating a descriptor")?;
    let b = Arc::new(Backups::new(beneath(name)?, again, name));
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
pub fn conflict_sink(p: &TargetPaths, side: &Side) -> anyhow::Result<crate::store::seen::Sink> {
    use nix::errno::Errno;
    let parent = side.parent.dup_fd()?;
    let name = p.target.file_name().unwrap_or_default().to_os_string();
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let target = nix::fcntl::openat(
        &parent,
        name.as_os_str(),
        flags,
        nix::sys::stat::Mode::empty(),
    )?;
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

/// After an unclean end: a crash snapshot of the recovered disk copy (the last completed
/// flush), the newest `backup_limit` kept. Returns a line for the log and status. A
/// snapshot that cannot be written is reported and does not stop the mount.
pub fn crash_snapshot(
    p: &TargetPaths,
    s: &TargetSettings,
    generation: u64,
    progress: Progress<'_>,
) -> String {
    let t = p.target.display();
    tracing::warn!(target = %t, generation, "the previous session ended uncleanly (reboot or power cut); the disk copy holds its last completed flush");
    if !s.backups {
        return "the previous session ended uncleanly; no crash snapshot (backups are off)".into();
    }
    let dest = snapshot::snapshot_path(&p.target, SystemTime::now());
    let name = p.target.file_name().unwrap_or_default();
    let made = open_dir(&p.target).and_then(|fd| {
        snapshot::create(fd.as_fd(), name, &dest, &mut |d, total| {
            progress("crash snapshot", d, total)
        })
    });
    match made {
        Ok(info) => {
            if let Err(e) = snapshot::enforce_limit(&p.target, s.backup_limit) {
                tracing::warn!(error = %e, "could not remove old crash snapshots");
            }
            tracing::warn!(target = %t, snapshot = %info.path.display(), size = info.size, "wrote a crash snapshot");
            format!(
                "the previous session ended uncleanly; crash snapshot {} written",
                info.path.display()
            )
        }
        Err(e) => {
            tracing::error!(target = %t, error = %format!("{e:#}"), "the crash snapshot could not be written");
            format!("the previous session ended uncleanly; the crash snapshot FAILED: {e:#}")
        }
    }
}

/// Makes the hardlink backup of the session start, in the background: flushes wait for it
/// (they need the disk copy unchanged), lookups do not.
pub fn refresh_backup(t: &Arc<Target>) {
    let Some(b) = t.backups.clone() else { return };
    let target = t.clone();
    backup_in_background(t.backup_state.clone(), t.paths.target.clone(), move || {
        let _writers = target.store.disk_writers.lock();
        let _gate = target.store.disk_gate.read();
        let made = b.refresh();
        // Linking changed the ctimes of files read into RAM before (see store::seen).
        target.store.seen.forget_ctimes();
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
                format!("session start, {files} files linked")
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
pub fn remove_backup(t: &Target) {
    let Some(b) = &t.backups else { return };
    let _writers = t.store.disk_writers.lock();
    if let Err(e) = b.remove_all() {
        tracing::warn!(error = %e, "could not remove the hardlink backup");
    }
}
