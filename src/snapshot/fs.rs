//! Low-level helpers that creating and restoring share: opening one name beneath a
//! directory descriptor and reading xattrs through it (both on top of `backing`'s helpers),
//! renaming without replacing, temporary paths that remove themselves, and error wording.

use crate::backing::{XattrList, get_xattr, list_xattrs, open_beneath, proc_path};
use anyhow::anyhow;
use nix::errno::Errno;
use nix::fcntl::{OFlag, RenameFlags};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Opens the single name `name` beneath `dir` (never following a symlink nor leaving the
/// tree, see `backing::open_beneath`), always with `O_NOFOLLOW`: a symlink is opened only as
/// itself, with `O_PATH`.
pub(super) fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlag) -> io::Result<OwnedFd> {
    open_beneath(dir, Path::new(name), flags | OFlag::O_NOFOLLOW)
}

/// Every xattr of the object `fd` names, in name order. Unlike `Backing::read_xattrs`, only a
/// name removed meanwhile (ENODATA) is skipped: one that cannot be read (EPERM, EACCES) is an
/// error, so that a snapshot never silently lacks an attribute.
pub(super) fn read_xattrs(fd: &OwnedFd) -> io::Result<XattrList> {
    let p = proc_path(fd);
    let mut names = list_xattrs(&p)?;
    names.sort();
    let mut out = Vec::new();
    for name in names {
        match get_xattr(&p, &name) {
            Ok(v) => out.push((name, v)),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {} // removed meanwhile
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

pub(super) fn file_name(path: &Path) -> anyhow::Result<&OsStr> {
    path.file_name()
        .ok_or_else(|| anyhow!("{} has no file name", path.display()))
}

pub(super) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let cwd = nix::fcntl::AT_FDCWD;
    match nix::fcntl::renameat2(cwd, from, cwd, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        // A filesystem without RENAME_NOREPLACE: check, then rename.
        Err(Errno::EINVAL) if to.symlink_metadata().is_err() => std::fs::rename(from, to),
        Err(e) => Err(e.into()),
    }
}

/// A temporary directory with its content, removed when dropped unless kept.
pub(super) struct TempPath {
    path: PathBuf,
    keep: bool,
}

impl TempPath {
    pub(super) fn dir(path: PathBuf) -> TempPath {
        TempPath { path, keep: false }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the path in place (it has been renamed to its final name).
    pub(super) fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.keep {
            // remove_dir_all never follows a symlink, also one put in the tree's place.
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

pub(super) fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

pub(super) fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}
