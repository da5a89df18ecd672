//! Restoring a snapshot: the checks on the destination (not a mounted asdfs target, not
//! occupied without `force`), unpacking into a fresh temporary directory beside it, and
//! moving the result into place, keeping any previous content aside.

use super::RestoreReport;
use super::fs::{file_name, open_at, rename_noreplace_at};
use super::names::check_owner_is;
use super::names::{free_name, parent_of, stamp};
use super::progress::{Counting, Progress};
use super::unpack::{Owners, Trust, Unpacker};
use crate::fsx::Dir;
use crate::fsx::trusted::TrustedPath;
use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::SystemTime;

/// What is at the restore destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Occupancy {
    Absent,
    EmptyDir,
    Occupied,
}

/// What is at `name` in `dir`, looked at without following a symlink.
fn occupancy(dir: &OwnedFd, name: &OsStr) -> io::Result<Occupancy> {
    let st = match nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => return Ok(Occupancy::Absent),
        other => other?,
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Ok(Occupancy::Occupied);
    }
    let fd = open_at(dir.as_fd(), name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let empty = d.iter().flatten().all(|e| {
        let n = e.file_name().to_bytes();
        n == b"." || n == b".."
    });
    Ok(match empty {
        true => Occupancy::EmptyDir,
        false => Occupancy::Occupied,
    })
}

/// Restores the tree in `snapshot` (its single top-level directory) to `to`: unpacked beside
/// `to` first, then moved into place. An existing non-empty `to` is replaced only with
/// `force`, and then kept as `<to>.before-restore-YYYYmmdd_HHMMSS`. Never over a mounted
/// asdfs target.
pub fn restore(
    snapshot: &Path,
    to: &Path,
    force: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<RestoreReport> {
    let opts = RestoreOptions {
        force,
        keep_special: false,
    };
    restore_with(snapshot, to, opts, progress)
}

/// How `restore_with` restores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Replace a non-empty destination (see `restore`).
    pub force: bool,
    /// Restore device nodes and setuid/setgid bits as archived; only for an archive root
    /// owns, restored by root (otherwise an error). Without, they are dropped with a warning.
    pub keep_special: bool,
}

/// `restore` with options.
///
/// Everything is resolved once, through descriptors (docs/security.md R1): the destination's
/// directory is opened with no symlink anywhere in its path, the owner rule reads the
/// destination (or that directory) through it, the archive is checked on its own opened
/// descriptor, and the tree is unpacked and moved under that same directory descriptor. A
/// user who swaps a component of either path for a symlink meanwhile gets an error, never a
/// restore somewhere else.
pub fn restore_with(
    snapshot: &Path,
    to: &Path,
    opts: RestoreOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<RestoreReport> {
    let force = opts.force;
    let abs = std::path::absolute(to)?;
    let name = file_name(&abs)?;
    let parent = Dir::open_strict(parent_of(&abs))
        .with_context(|| format!("restoring to {}", to.display()))?;
    refuse_if_mounted(to)?;
    let owner = dest_owner(&parent, name)?;
    if occupancy(parent.fd(), name)? == Occupancy::Occupied && !force {
        bail!(not_empty(to));
    }
    let (file, owners) = open_archive(snapshot, to, owner)?;
    let (tmp, (files, bytes)) =
        unpack_beside(file, owners, &parent, name, opts.keep_special, progress)
            .with_context(|| format!("restoring {}", snapshot.display()))?;
    let kept_old = place_dir(parent.fd(), &tmp.name, to, force)?;
    tmp.keep();
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let readable = nix::fcntl::openat(parent.fd(), ".", flags, Mode::empty())?;
    nix::unistd::fsync(&readable)
        .with_context(|| format!("syncing directory {}", parent.path().display()))?;
    Ok(RestoreReport {
        restored_to: to.to_path_buf(),
        kept_old,
        files,
        bytes,
    })
}

/// Whose the destination `name` in `parent` is, for the archive owner rule: its owner, or
/// when it does not exist yet, the owner of `parent`. Read through the descriptor the
/// restore then works under, so the check and the extraction see the same objects.
fn dest_owner(parent: &Dir, name: &OsStr) -> io::Result<u32> {
    match rustix::fs::statat(parent, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(st.st_uid),
        Err(rustix::io::Errno::NOENT) => Ok(parent.stat()?.st_uid),
        Err(e) => Err(e.into()),
    }
}

/// Unpacks the archive `file` into a new temporary directory beside `name` in `parent`
/// (removed again on every error); returns it, and the numbers of files and bytes restored.
fn unpack_beside(
    file: File,
    owners: Owners,
    parent: &Dir,
    name: &OsStr,
    keep_special: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<(TempDir, (u64, u64))> {
    if keep_special && owners != Owners::Archived {
        bail!(
            "keeping device nodes and setuid/setgid bits needs root restoring an archive root owns"
        );
    }
    let trust = Trust {
        owners,
        keep_special,
    };
    let total = file.metadata()?.len();
    let tmp = make_temp_dir(parent, name)?;
    let mut unpacker = Unpacker::new(Rc::new(parent.dup_fd()?), tmp.name.clone(), trust)?;
    let mut progress = Progress::new(progress, total);
    unpacker.unpack(Counting::new(file, &mut progress))?;
    progress.finish();
    Ok((tmp, unpacker.counts()))
}

/// Opens the archive by its name under its directory's descriptor, without following a
/// symlink, checks its owner on that descriptor against `owner` (the destination's, see
/// `dest_owner`), and says whose the restored objects become: as archived only for an
/// archive root owns, else its owner's (when restoring as root).
fn open_archive(snapshot: &Path, to: &Path, owner: u32) -> anyhow::Result<(File, Owners)> {
    use std::os::unix::fs::MetadataExt;
    let ctx = || format!("opening {}", snapshot.display());
    let dir = Dir::open(&std::path::absolute(parent_of(snapshot))?).with_context(ctx)?;
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::openat(dir.fd(), file_name(snapshot)?, flags, Mode::empty())
        .map_err(io::Error::from)
        .with_context(ctx)?;
    let file = File::from(fd);
    let st = file.metadata()?;
    check_owner_is(snapshot, &st, owner, to)?;
    let owners = match (nix::unistd::geteuid().is_root(), st.uid()) {
        (false, _) => Owners::Restorer,
        (true, 0) => Owners::Archived,
        (true, uid) => Owners::All(uid, st.gid()),
    };
    Ok((file, owners))
}

fn not_empty(to: &Path) -> String {
    format!(
        "{0} exists and is not empty; use --force to replace it (the current content is kept as \
         {0}.before-restore-<date>)",
        to.display()
    )
}

/// Refuses when `to` is where an asdfs mount is: the restore would go into RAM and then be
/// replaced by the next flush, or hide the mount.
fn refuse_if_mounted(to: &Path) -> anyhow::Result<()> {
    let name = file_name(to)?;
    let abs = match parent_of(to).trusted_canonicalize() {
        Ok(dir) => dir.join(name),
        Err(_) => std::path::absolute(to)?,
    };
    let mount = crate::daemon::mounting::mount_at(&abs)?;
    if mount.is_some_and(|m| m.is_asdfs()) {
        bail!(
            "{} is mounted by asdfs; unmount it first, or restore elsewhere with --to",
            to.display()
        );
    }
    Ok(())
}

/// The temporary directory a restore unpacks into, beside the destination: removed with
/// its content (through `parent` and its own descriptor, see `fsx::remove_held`) when
/// dropped, unless kept.
struct TempDir {
    parent: Dir,
    name: OsString,
    held: Dir,
    keep: bool,
}

impl TempDir {
    /// Leaves it in place (it has been renamed to its final name).
    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(e) = crate::fsx::remove_held(&self.parent, &self.name, &self.held) {
                tracing::warn!("removing {}: {e}", self.held.path().display());
            }
        }
    }
}

/// Creates `.<name>.restore-<pid>[-n]` (mode 0700) in `parent`.
fn make_temp_dir(parent: &Dir, name: &OsStr) -> anyhow::Result<TempDir> {
    for n in 0..1000 {
        let mut tmp = OsString::from(".");
        tmp.push(name);
        tmp.push(format!(".restore-{}", std::process::id()));
        if n > 0 {
            tmp.push(format!("-{n}"));
        }
        let ctx = || format!("creating a directory in {}", parent.path().display());
        match nix::sys::stat::mkdirat(
            parent.fd(),
            tmp.as_os_str(),
            Mode::from_bits_truncate(0o700),
        ) {
            Ok(()) => {
                return Ok(TempDir {
                    parent: parent.try_clone().with_context(ctx)?,
                    held: parent.open_in(&tmp).with_context(ctx)?,
                    name: tmp,
                    keep: false,
                });
            }
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(e).with_context(ctx),
        }
    }
    bail!("no free temporary name in {}", parent.path().display())
}

/// Moves the restored tree (`tmp` in `dir`) to `to`, by names under `dir`; returns where the
/// old content went.
fn place_dir(
    dir: &OwnedFd,
    tmp: &OsStr,
    to: &Path,
    force: bool,
) -> anyhow::Result<Option<PathBuf>> {
    let name = file_name(to)?;
    let ctx = || format!("moving the restored tree to {}", to.display());
    match occupancy(dir, name)? {
        Occupancy::Absent => rename_noreplace_at(dir, tmp, name).with_context(ctx)?,
        // rename(2) replaces an empty directory atomically (and fails if it was filled).
        Occupancy::EmptyDir => nix::fcntl::renameat(dir, tmp, dir, name)
            .map_err(io::Error::from)
            .with_context(ctx)?,
        Occupancy::Occupied if !force => bail!(not_empty(to)),
        Occupancy::Occupied => {
            let mut base = to.as_os_str().to_os_string();
            base.push(".before-restore-");
            base.push(stamp(SystemTime::now()));
            let kept = free_name(Path::new(&base), "");
            let kept_name = file_name(&kept)?;
            rename_noreplace_at(dir, name, kept_name)
                .with_context(|| format!("moving {} to {}", to.display(), kept.display()))?;
            if let Err(e) = rename_noreplace_at(dir, tmp, name) {
                let _ = rename_noreplace_at(dir, kept_name, name);
                return Err(e).with_context(ctx);
            }
            return Ok(Some(kept));
        }
    }
    Ok(None)
}
