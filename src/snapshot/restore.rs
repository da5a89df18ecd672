//! Restoring a snapshot: the checks on the destination (not a mounted asdfs target, not
//! occupied without `force`), unpacking into a fresh temporary directory beside it, and
//! moving the result into place, keeping any previous content aside.

use super::RestoreReport;
use super::fs::{TempPath, file_name, rename_noreplace};
use super::names::check_owner;
use super::names::{free_name, parent_of, stamp};
use super::progress::{Counting, Progress};
use super::unpack::{Owners, Trust, Unpacker};
use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
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

fn occupancy(to: &Path) -> io::Result<Occupancy> {
    match to.symlink_metadata() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Occupancy::Absent),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() && std::fs::read_dir(to)?.next().is_none() => Ok(Occupancy::EmptyDir),
        Ok(_) => Ok(Occupancy::Occupied),
    }
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
pub fn restore_with(
    snapshot: &Path,
    to: &Path,
    opts: RestoreOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<RestoreReport> {
    let force = opts.force;
    let dir = parent_of(to);
    refuse_if_mounted(to)?;
    if occupancy(to)? == Occupancy::Occupied && !force {
        bail!(not_empty(to));
    }
    let (tmp, (files, bytes)) = unpack_beside(snapshot, to, opts.keep_special, progress)
        .with_context(|| format!("restoring {}", snapshot.display()))?;
    let kept_old = place_dir(tmp.path(), to, force)?;
    tmp.keep();
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))?;
    Ok(RestoreReport {
        restored_to: to.to_path_buf(),
        kept_old,
        files,
        bytes,
    })
}

/// Unpacks `snapshot` into a new temporary directory beside `to` (removed again on error);
/// returns it with the numbers of files and bytes restored.
fn unpack_beside(
    snapshot: &Path,
    to: &Path,
    keep_special: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<(TempPath, (u64, u64))> {
    let (dir, name) = (parent_of(to), file_name(to)?);
    let (file, owners) = open_archive(snapshot, to)?;
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
    let dir_fd = nix::fcntl::open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())
        .with_context(|| format!("opening {}", dir.display()))?;
    let (tmp, tmp_name) = make_temp_dir(&dir_fd, dir, name)?;
    let mut unpacker = Unpacker::new(Rc::new(dir_fd), tmp_name, trust)?;
    let mut progress = Progress::new(progress, total);
    unpacker.unpack(Counting::new(file, &mut progress))?;
    progress.finish();
    Ok((tmp, unpacker.counts()))
}

/// Opens the archive without following a symlink, checks its owner on that descriptor
/// (`check_owner`), and says whose the restored objects become: as archived only for an
/// archive root owns, else its owner's (when restoring as root).
fn open_archive(snapshot: &Path, to: &Path) -> anyhow::Result<(File, Owners)> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(snapshot)
        .with_context(|| format!("opening {}", snapshot.display()))?;
    let st = file.metadata()?;
    check_owner(snapshot, &st, to)?;
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
    let abs = match parent_of(to).canonicalize() {
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

/// Creates `.<name>.restore-<pid>[-n]` (mode 0700) in `dir`.
fn make_temp_dir(
    dir_fd: &OwnedFd,
    dir: &Path,
    name: &OsStr,
) -> anyhow::Result<(TempPath, OsString)> {
    for n in 0..1000 {
        let mut tmp = OsString::from(".");
        tmp.push(name);
        tmp.push(format!(".restore-{}", std::process::id()));
        if n > 0 {
            tmp.push(format!("-{n}"));
        }
        match nix::sys::stat::mkdirat(dir_fd, tmp.as_os_str(), Mode::from_bits_truncate(0o700)) {
            Ok(()) => return Ok((TempPath::dir(dir.join(&tmp)), tmp)),
            Err(Errno::EEXIST) => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("creating a directory in {}", dir.display()));
            }
        }
    }
    bail!("no free temporary name in {}", dir.display())
}

/// Moves the restored tree to `to`; returns where the old content went.
fn place_dir(tmp: &Path, to: &Path, force: bool) -> anyhow::Result<Option<PathBuf>> {
    let ctx = || format!("moving the restored tree to {}", to.display());
    match occupancy(to)? {
        Occupancy::Absent => rename_noreplace(tmp, to).with_context(ctx)?,
        // rename(2) replaces an empty directory atomically (and fails if it was filled).
        Occupancy::EmptyDir => std::fs::rename(tmp, to).with_context(ctx)?,
        Occupancy::Occupied if !force => bail!(not_empty(to)),
        Occupancy::Occupied => {
            let mut base = to.as_os_str().to_os_string();
            base.push(".before-restore-");
            base.push(stamp(SystemTime::now()));
            let kept = free_name(Path::new(&base), "");
            rename_noreplace(to, &kept)
                .with_context(|| format!("moving {} to {}", to.display(), kept.display()))?;
            if let Err(e) = rename_noreplace(tmp, to) {
                let _ = rename_noreplace(&kept, to);
                return Err(e).with_context(ctx);
            }
            return Ok(Some(kept));
        }
    }
    Ok(None)
}
