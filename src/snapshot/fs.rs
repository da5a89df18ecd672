//! Low-level helpers that creating and restoring share: opening one name beneath a
//! directory descriptor and reading xattrs through it (both on top of `backing`'s helpers),
//! renaming without replacing (by names under a directory's descriptor), and error wording.

use crate::backing::{XattrList, get_xattr, list_xattrs, open_beneath, proc_path};
use anyhow::anyhow;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

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

/// renameat2(RENAME_NOREPLACE) of two names in `dir`; on a filesystem without it, check, then
/// rename.
pub(super) fn rename_noreplace_at(dir: &OwnedFd, from: &OsStr, to: &OsStr) -> io::Result<()> {
    match nix::fcntl::renameat2(dir, from, dir, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL)
            if nix::sys::stat::fstatat(dir, to, AtFlags::AT_SYMLINK_NOFOLLOW)
                == Err(Errno::ENOENT) =>
        {
            Ok(nix::fcntl::renameat(dir, from, dir, to)?)
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

pub(super) fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}
