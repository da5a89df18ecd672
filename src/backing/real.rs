//! The real disk: two directory descriptors (the target underneath the mount and the side
//! directory), with every path resolved beneath one of them by openat2(2) without following
//! symlinks or crossing out of the root.

use super::deep::{open_beneath, remove_at};
use super::{
    Backing, DirItem, DiskStat, InPlace, Loc, Meta, NewContent, copy_sparse, write_changed,
};
use crate::store::types::{Attr, FsStats, Kind, Ts};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, fstatat, mkdirat, mknodat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchownat, linkat, symlinkat};
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// The real disk side of a target.
#[derive(Debug)]
pub struct RealBacking {
    target: OwnedFd,
    side: OwnedFd,
}

impl RealBacking {
    /// `target` and `side` are directory descriptors (`O_PATH` is enough).
    pub fn new(target: OwnedFd, side: OwnedFd) -> RealBacking {
        RealBacking { target, side }
    }

    /// The target's directory descriptor.
    pub fn target_root(&self) -> &OwnedFd {
        &self.target
    }

    fn root(&self, loc: &Loc) -> BorrowedFd<'_> {
        match loc {
            Loc::Target(_) => self.target.as_fd(),
            Loc::Side(_) => self.side.as_fd(),
        }
    }

    /// Opens `loc` with `flags`; a trailing symlink is opened only with `O_PATH|O_NOFOLLOW`.
    fn open(&self, loc: &Loc, flags: OFlag) -> io::Result<OwnedFd> {
        open_beneath(self.root(loc), loc.path(), flags | OFlag::O_CLOEXEC)
    }

    /// The directory that holds `loc`, and the last name of `loc`.
    fn parent(&self, loc: &Loc) -> io::Result<(OwnedFd, OsString)> {
        let path = loc.path();
        let name = path
            .file_name()
            .ok_or_else(|| invalid(format!("{loc} has no name")))?;
        let dir = path.parent().unwrap_or(Path::new(""));
        let fd = open_beneath(
            self.root(loc),
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        )?;
        Ok((fd, name.to_os_string()))
    }

    /// Opens the object at `loc` itself (`O_PATH`, never following a symlink) and checks it is
    /// of `kind`. Anything else there (a file swapped for a symlink on disk) is a
    /// [`Conflict`]: every attribute call then acts on this descriptor, so no name is looked
    /// up again between the check and the change.
    fn open_object(&self, loc: &Loc, kind: Kind) -> io::Result<OwnedFd> {
        let fd = self.open(loc, OFlag::O_PATH | OFlag::O_NOFOLLOW)?;
        let found = Kind::from_mode(nix::sys::stat::fstat(&fd)?.st_mode);
        if found != Some(kind) {
            return Err(Conflict::error(loc, kind, found));
        }
        Ok(fd)
    }

    /// Owner before mode (a chown clears setuid bits), both on the object `fd` names.
    fn set_owner_mode(fd: &OwnedFd, kind: Kind, meta: &Meta) -> io::Result<()> {
        let (uid, gid) = (Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)));
        fchownat(fd, "", uid, gid, AtFlags::AT_EMPTY_PATH)?;
        if kind != Kind::Symlink {
            chmod_fd(fd, meta.mode & 0o7777)?;
        }
        Ok(())
    }

    /// Replaces the xattrs of the object `fd` names by `want`. The proc path is a magic link
    /// to that very object (fixed when it was opened without following), not a name.
    fn set_xattrs(fd: &OwnedFd, want: &[(OsString, Vec<u8>)]) -> io::Result<()> {
        let p = proc_path(fd);
        for name in list_xattrs(&p)? {
            if !want.iter().any(|(n, _)| *n == name) {
                remove_xattr(&p, &name)?;
            }
        }
        for (name, value) in want {
            set_xattr(&p, name, value)?;
        }
        Ok(())
    }

    fn create_file(&self, dir: &OwnedFd, name: &OsStr, src: &File) -> io::Result<()> {
        let flags =
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(dir, name, flags, Mode::from_bits_truncate(0o600))?;
        copy_sparse(src, &File::from(fd))?;
        Ok(())
    }

    /// `create`, made durable or not.
    fn make_object(
        &self,
        loc: &Loc,
        content: NewContent<'_>,
        meta: &Meta,
        durable: bool,
    ) -> io::Result<u64> {
        let (dir, name) = self.parent(loc)?;
        let kind = match content {
            NewContent::File(src) => {
                self.create_file(&dir, &name, src)?;
                Kind::File
            }
            NewContent::Dir => {
                mkdirat(&dir, name.as_os_str(), Mode::from_bits_truncate(0o700))?;
                Kind::Dir
            }
            NewContent::Symlink(target) => {
                symlinkat(OsStr::from_bytes(target), &dir, name.as_os_str())?;
                Kind::Symlink
            }
            NewContent::Special { kind, rdev } => {
                let t = match kind {
                    Kind::Fifo => SFlag::S_IFIFO,
                    Kind::Socket => SFlag::S_IFSOCK,
                    Kind::CharDev => SFlag::S_IFCHR,
                    Kind::BlockDev => SFlag::S_IFBLK,
                    other => return Err(invalid(format!("{other:?} is not a special file"))),
                };
                mknodat(
                    &dir,
                    name.as_os_str(),
                    t,
                    Mode::from_bits_truncate(0o600),
                    rdev as libc::dev_t,
                )?;
                kind
            }
        };
        self.set_meta(loc, kind, meta)?;
        if durable && (kind == Kind::File || kind == Kind::Dir) {
            let fd = self.open(loc, OFlag::O_RDONLY | OFlag::O_NOFOLLOW)?;
            nix::unistd::fsync(&fd)?;
        }
        Ok(self.stat(loc)?.ino)
    }
}

impl Backing for RealBacking {
    fn stat(&self, loc: &Loc) -> io::Result<DiskStat> {
        let st = if loc.path().as_os_str().is_empty() {
            fstatat(self.root(loc), "", AtFlags::AT_EMPTY_PATH)?
        } else {
            let (dir, name) = self.parent(loc)?;
            fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?
        };
        disk_stat(&st)
    }

    fn read_dir(&self, loc: &Loc) -> io::Result<Vec<DirItem>> {
        // O_NOATIME: reading the disk copy must not change it (owner or root only).
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
        let fd = match self.open(loc, flags | OFlag::O_NOATIME) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => self.open(loc, flags)?,
            other => other?,
        };
        let mut dir = nix::dir::Dir::from_fd(fd)?;
        let mut out = Vec::new();
        for entry in dir.iter() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let kind = entry.file_type().map(|t| {
                use nix::dir::Type;
                match t {
                    Type::File => Kind::File,
                    Type::Directory => Kind::Dir,
                    Type::Symlink => Kind::Symlink,
                    Type::Fifo => Kind::Fifo,
                    Type::Socket => Kind::Socket,
                    Type::CharacterDevice => Kind::CharDev,
                    Type::BlockDevice => Kind::BlockDev,
                }
            });
            out.push(DirItem {
                name: OsString::from_vec(name.to_vec()),
                kind,
                ino: entry.ino(),
            });
        }
        Ok(out)
    }

    fn read_link(&self, loc: &Loc) -> io::Result<Vec<u8>> {
        let (dir, name) = self.parent(loc)?;
        let before = fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
        let target = nix::fcntl::readlinkat(&dir, name.as_os_str())?.into_vec();
        // readlink updates the symlink's atime; reading the disk copy must not change it.
        let after = fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
        if (after.st_atime, after.st_atime_nsec) != (before.st_atime, before.st_atime_nsec) {
            let atime = TimeSpec::new(before.st_atime, before.st_atime_nsec);
            let omit = TimeSpec::UTIME_OMIT;
            let _ = utimensat(
                &dir,
                name.as_os_str(),
                &atime,
                &omit,
                UtimensatFlags::NoFollowSymlink,
            );
        }
        Ok(target)
    }

    fn read_xattrs(&self, loc: &Loc) -> io::Result<super::XattrList> {
        let fd = self.open(loc, OFlag::O_PATH | OFlag::O_NOFOLLOW)?;
        let p = proc_path(&fd);
        let mut out = Vec::new();
        for name in list_xattrs(&p)? {
            match get_xattr(&p, &name) {
                Ok(v) => out.push((name, v)),
                // Removed meanwhile, or a namespace we may list but not read.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENODATA | libc::EPERM | libc::EACCES)
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn read_data(&self, loc: &Loc, ino: Option<u64>, dst: &File) -> io::Result<()> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW;
        let fd = match self.open(loc, flags | OFlag::O_NOATIME | OFlag::O_NONBLOCK) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                self.open(loc, flags | OFlag::O_NONBLOCK)?
            }
            other => other?,
        };
        let st = nix::sys::stat::fstat(&fd)?;
        let found = Kind::from_mode(st.st_mode);
        if found != Some(Kind::File) {
            return Err(Conflict::error(loc, Kind::File, found));
        }
        if ino.is_some_and(|i| i != st.st_ino) {
            return Err(Conflict::other_inode(loc, Kind::File, Kind::File));
        }
        clear_nonblock(&fd)?;
        copy_sparse(&File::from(fd), dst)?;
        Ok(())
    }

    fn create(&self, loc: &Loc, content: NewContent<'_>, meta: &Meta) -> io::Result<u64> {
        self.make_object(loc, content, meta, true)
    }

    fn create_unsynced(&self, loc: &Loc, content: NewContent<'_>, meta: &Meta) -> io::Result<u64> {
        self.make_object(loc, content, meta, false)
    }

    /// Files: writeback of every one is started first, so that the first fsync commits the
    /// filesystem's journal with all their allocations and the later ones find it done
    /// (one journal commit, not one per file). `ASDFS_STAGE_SYNC=syncfs` uses one
    /// syncfs(2) instead (measured in benches/flush_bytes.rs).
    fn sync_created(&self, locs: &[Loc], dir: &Loc) -> io::Result<()> {
        if std::env::var_os("ASDFS_STAGE_SYNC").is_some_and(|v| v == "syncfs") {
            let fd = self.open(
                dir,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
            )?;
            nix::unistd::syncfs(&fd)?;
            return Ok(());
        }
        let open = |l: &Loc| self.open(l, OFlag::O_RDONLY | OFlag::O_NOFOLLOW);
        // SAFETY: plain syscalls on descriptors we own.
        let range = |fd: &OwnedFd, flags| unsafe {
            libc::sync_file_range(fd.as_raw_fd(), 0, 0, flags);
        };
        if locs.len() > 1 {
            // Start every file's writeback, then wait for all of it: the size updates at
            // its end join the running transaction too, before the first fsync commits it.
            for l in locs {
                range(&open(l)?, libc::SYNC_FILE_RANGE_WRITE);
            }
            for l in locs {
                range(
                    &open(l)?,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                );
            }
        }
        for l in locs {
            nix::unistd::fsync(&open(l)?)?;
        }
        self.sync_dir(dir)
    }

    fn write_in_place(&self, w: &InPlace<'_>) -> io::Result<Option<DiskStat>> {
        if !matches!(w.loc, Loc::Target(_)) {
            return Ok(None);
        }
        let flags = OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
        let fd = match self.open(w.loc, flags) {
            Ok(fd) => fd,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ELOOP | libc::ENXIO)
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let st = nix::sys::stat::fstat(&fd)?;
        if Kind::from_mode(st.st_mode) != Some(Kind::File)
            || st.st_ino != w.ino
            || st.st_nlink != 1
            || !(w.unchanged)(&disk_stat(&st)?)
        {
            return Ok(None);
        }
        clear_nonblock(&fd)?;
        let f = File::from(fd);
        write_changed(w.src, &f, w.ranges)?;
        times_fd(&f, w.atime, w.mtime)?;
        f.sync_data()?;
        Ok(Some(disk_stat(&nix::sys::stat::fstat(&f)?)?))
    }

    fn make_dir(&self, loc: &Loc) -> io::Result<()> {
        let (dir, name) = self.parent(loc)?;
        match mkdirat(&dir, name.as_os_str(), Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn rename(&self, from: &Loc, to: &Loc) -> io::Result<()> {
        let (fd1, n1) = self.parent(from)?;
        let (fd2, n2) = self.parent(to)?;
        nix::fcntl::renameat(&fd1, n1.as_os_str(), &fd2, n2.as_os_str())?;
        Ok(())
    }

    fn link(&self, from: &Loc, to: &Loc) -> io::Result<()> {
        let (fd1, n1) = self.parent(from)?;
        let (fd2, n2) = self.parent(to)?;
        linkat(&fd1, n1.as_os_str(), &fd2, n2.as_os_str(), AtFlags::empty())?;
        Ok(())
    }

    fn remove(&self, loc: &Loc) -> io::Result<()> {
        let (dir, name) = self.parent(loc)?;
        remove_at(&dir, &name)
    }

    fn set_meta(&self, loc: &Loc, kind: Kind, meta: &Meta) -> io::Result<()> {
        let fd = self.open_object(loc, kind)?;
        Self::set_owner_mode(&fd, kind, meta)?;
        if let Some(x) = &meta.xattrs {
            Self::set_xattrs(&fd, x)?;
        }
        times_fd(&fd, meta.atime, meta.mtime)
    }

    fn set_times(&self, loc: &Loc, atime: Ts, mtime: Ts) -> io::Result<()> {
        let fd = self.open_object(loc, Kind::Dir)?;
        times_fd(&fd, atime, mtime)
    }

    fn sync_dir(&self, loc: &Loc) -> io::Result<()> {
        let fd = self.open(
            loc,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
        )?;
        nix::unistd::fsync(&fd)?;
        Ok(())
    }

    fn write_file(&self, loc: &Loc, bytes: &[u8]) -> io::Result<()> {
        let (dir, name) = self.parent(loc)?;
        let mut tmp_name = name.clone();
        tmp_name.push(".tmp");
        let flags = OFlag::O_CREAT
            | OFlag::O_TRUNC
            | OFlag::O_WRONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(
            &dir,
            tmp_name.as_os_str(),
            flags,
            Mode::from_bits_truncate(0o600),
        )?;
        let mut f = File::from(fd);
        f.write_all(bytes)?;
        f.sync_all()?;
        nix::fcntl::renameat(&dir, tmp_name.as_os_str(), &dir, name.as_os_str())?;
        let d = nix::fcntl::openat(
            &dir,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        nix::unistd::fsync(&d)?;
        Ok(())
    }

    fn read_file(&self, loc: &Loc) -> io::Result<Vec<u8>> {
        let fd = self.open(loc, OFlag::O_RDONLY | OFlag::O_NOFOLLOW)?;
        let mut out = Vec::new();
        io::Read::read_to_end(&mut File::from(fd), &mut out)?;
        Ok(out)
    }

    fn space(&self) -> io::Result<FsStats> {
        Ok(FsStats::of(&nix::sys::statvfs::fstatvfs(&self.target)?))
    }
}

/// Clears `O_NONBLOCK` on `fd`: a file opened with it so that opening a FIFO or a device
/// swapped in for it never blocks, read normally once it is known to be a regular file.
pub(crate) fn clear_nonblock(fd: &OwnedFd) -> io::Result<()> {
    let fl = OFlag::from_bits_retain(nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)?);
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(fl - OFlag::O_NONBLOCK))?;
    Ok(())
}

/// fchmodat2(fd, "", mode, AT_EMPTY_PATH): the mode of the object an `O_PATH` descriptor
/// names, whatever its name is now (fchmod(2) refuses `O_PATH` descriptors).
pub(crate) fn chmod_fd(fd: &impl AsRawFd, mode: u32) -> io::Result<()> {
    // SAFETY: the path is a NUL-terminated empty string; the other arguments are plain values.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            fd.as_raw_fd(),
            c"".as_ptr(),
            mode as libc::c_uint,
            libc::AT_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// utimensat(fd, "", times, AT_EMPTY_PATH): the times of the object the descriptor names.
pub(crate) fn times_fd(fd: &impl AsRawFd, atime: Ts, mtime: Ts) -> io::Result<()> {
    let times = [atime.to_timespec(), mtime.to_timespec()];
    // SAFETY: `times` holds two timespecs; the path is a NUL-terminated empty string.
    let r = unsafe {
        libc::utimensat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            times.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Another object at a name than the flush expects there (another kind, or another inode
/// where the plan knows it): the disk copy was changed behind asdfs (a file swapped for a
/// symlink, say). Never acted through; see `flush::journal` for what the flush does then.
#[derive(Debug)]
pub struct Conflict {
    pub loc: Loc,
    pub expected: Kind,
    pub found: Option<Kind>,
    /// The kind matches but the inode is not the one the plan recorded.
    pub other_inode: bool,
}

impl Conflict {
    fn error(loc: &Loc, expected: Kind, found: Option<Kind>) -> io::Error {
        io::Error::other(Conflict {
            loc: loc.clone(),
            expected,
            found,
            other_inode: false,
        })
    }

    /// Another inode than the plan's at `loc` (of kind `found`).
    pub fn other_inode(loc: &Loc, expected: Kind, found: Kind) -> io::Error {
        io::Error::other(Conflict {
            loc: loc.clone(),
            expected,
            found: Some(found),
            other_inode: found == expected,
        })
    }

    /// The conflict an error carries, if it is one.
    pub fn of(e: &io::Error) -> Option<&Conflict> {
        e.get_ref().and_then(|i| i.downcast_ref::<Conflict>())
    }
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let found = self
            .found
            .map_or_else(|| "an unknown kind".to_string(), |k| format!("{k:?}"));
        let other = if self.other_inode { "another " } else { "" };
        write!(
            f,
            "conflict: {} is {other}{found} on disk where asdfs expects {:?} (changed behind \
             asdfs); not followed",
            self.loc, self.expected
        )
    }
}

impl std::error::Error for Conflict {}

fn disk_stat(st: &libc::stat) -> io::Result<DiskStat> {
    let kind = Kind::from_mode(st.st_mode)
        .ok_or_else(|| invalid(format!("unknown file type {:o}", st.st_mode)))?;
    Ok(DiskStat {
        ino: st.st_ino,
        dev: st.st_dev,
        kind,
        nlink: st.st_nlink as u32,
        attr: Attr {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: Ts {
                sec: st.st_atime,
                nsec: st.st_atime_nsec as u32,
            },
            mtime: Ts {
                sec: st.st_mtime,
                nsec: st.st_mtime_nsec as u32,
            },
            ctime: Ts {
                sec: st.st_ctime,
                nsec: st.st_ctime_nsec as u32,
            },
        },
    })
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// `/proc/self/fd/N` for a descriptor: xattr calls that follow this magic link act on the
/// object the descriptor names, even a symlink opened with `O_PATH|O_NOFOLLOW`.
pub(crate) fn proc_path(fd: &impl AsRawFd) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a number")
}

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| invalid("NUL in a name".into()))
}

fn check(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// All xattr names of the object at a proc path.
pub(crate) fn list_xattrs(p: &CString) -> io::Result<Vec<OsString>> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: buf is valid for buf.len() bytes; p is NUL-terminated.
        let r = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match check(r) {
            Ok(n) => {
                return Ok(buf[..n]
                    .split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| OsString::from_vec(s.to_vec()))
                    .collect());
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => buf.resize(buf.len() * 4, 0),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    }
}

pub(crate) fn get_xattr(p: &CString, name: &OsStr) -> io::Result<Vec<u8>> {
    let n = cstr(name)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: buf is valid for buf.len() bytes; p and n are NUL-terminated.
        let r =
            unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match check(r) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => buf.resize(buf.len() * 8, 0),
            Err(e) => return Err(e),
        }
    }
}

pub(crate) fn set_xattr(p: &CString, name: &OsStr, value: &[u8]) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: value is valid for value.len() bytes; p and n are NUL-terminated.
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub(crate) fn remove_xattr(p: &CString, name: &OsStr) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: p and n are NUL-terminated.
    let r = unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
