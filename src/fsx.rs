//! The path primitives the root daemon may use (docs/security.md): every one acts through a
//! directory descriptor, never follows a symlink in the name it is given, and checks who
//! owns what it accepts. A user can rename or replace entries of a directory they control
//! at any time, so a path checked is not a path trusted: the checked descriptor is kept and
//! used instead. Only this module calls path-based `std::fs` functions on the daemon's
//! behalf; elsewhere in the daemon they are the mistake it exists to prevent.
//!
//! Two ways to make a place safe:
//! - hold a [`Dir`] opened without following symlinks and work beneath it by names
//!   (the side directory beside the target, in a directory the user controls);
//! - [`check_safe_chain`]: every directory from `/` down is one nobody else can rename
//!   anything in, so later path-based access reaches what was checked (the volatile
//!   directory above the RAM store).

use anyhow::bail;
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// A directory held open (O_PATH), and the path it was opened at, for messages only.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

const DIR_FLAGS: OFlags = OFlags::PATH
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Dir {
    /// Opens `path`, whose last component must be a real directory (not a symlink). Earlier
    /// components are resolved as the kernel does: use it on a path whose chain is safe, or
    /// whose directory is checked after opening.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = rustix::fs::open(path, DIR_FLAGS, Mode::empty()).map_err(with_path(path))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Opens the absolute `path` with no symlink in any of its components (openat2
    /// `RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`): for a canonical path another user
    /// could change between its resolution and its use (a target's parent in their home).
    /// A component swapped for a symlink meanwhile is an error, never followed.
    pub fn open_strict(path: &Path) -> io::Result<Dir> {
        if !path.is_absolute() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not an absolute path", path.display()),
            ));
        }
        let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        // Without O_NOFOLLOW a symlink as the last component is refused by the resolve
        // flags too (ELOOP, reported as a symlink), not opened as itself (ENOTDIR).
        let flags = DIR_FLAGS.difference(OFlags::NOFOLLOW);
        let fd = rustix::fs::openat2(rustix::fs::CWD, path, flags, Mode::empty(), resolve)
            .map_err(|e| match e {
                rustix::io::Errno::LOOP | rustix::io::Errno::XDEV => io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{}: a symlink appeared in the path while asdfs was using it; not followed",
                        path.display()
                    ),
                ),
                e => with_path(path)(e),
            })?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The directory `name` (one component) in this one, not following a symlink.
    pub fn open_in(&self, name: &OsStr) -> io::Result<Dir> {
        let path = self.path.join(name);
        let name = one_component(name)?;
        let fd = rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty())
            .map_err(with_path(&path))?;
        Ok(Dir { fd, path })
    }

    /// The directory `rel` beneath this one: no symlink, no `..` out of it, no magic link.
    pub fn open_beneath(&self, rel: &Path) -> io::Result<Dir> {
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let fd = rustix::fs::openat2(&self.fd, rel, DIR_FLAGS, Mode::empty(), resolve)
            .map_err(with_path(&self.path.join(rel)))?;
        Ok(Dir {
            fd,
            path: self.path.join(rel),
        })
    }

    /// The path it was opened at (for messages; a user may have moved it since).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stat(&self) -> io::Result<rustix::fs::Stat> {
        Ok(rustix::fs::fstat(&self.fd)?)
    }

    /// Device and inode of what `name` in this directory is (not following a symlink),
    /// from the kernel's cache (`AT_STATX_DONT_SYNC`): a FUSE mount someone put at that
    /// name is not asked (its daemon may never answer), and is told apart by its device.
    pub fn ident_in_cached(&self, name: &OsStr) -> io::Result<(u64, u64)> {
        use rustix::fs::{StatxFlags, statx};
        let flags = AtFlags::STATX_DONT_SYNC | AtFlags::SYMLINK_NOFOLLOW;
        let st = statx(&self.fd, one_component(name)?, flags, StatxFlags::INO)?;
        Ok((
            rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
            st.stx_ino,
        ))
    }

    /// `/proc/self/fd/N`: a path that reaches exactly this directory (to mount onto it, or
    /// for calls that take only paths), valid while `self` lives.
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// A duplicate of the descriptor, for an API that owns one.
    pub fn dup_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// Whether `name` exists here (a symlink counts, and is not followed).
    pub fn contains(&self, name: &str) -> bool {
        rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }
}

/// Creates directory `name` in `parent` with `mode`, or accepts the one there only if it
/// is a real directory owned by `uid` and not writable by group or others. Returns it held
/// open, and whether this call created it. The error is one line naming the path and owner.
pub fn mkdir_private(
    parent: &Dir,
    name: &OsStr,
    mode: u32,
    uid: u32,
) -> anyhow::Result<(Dir, bool)> {
    let path = parent.path.join(name);
    let mut tries = 0;
    let (created, opened) = loop {
        let created =
            match rustix::fs::mkdirat(parent, one_component(name)?, Mode::from_raw_mode(mode)) {
                Ok(()) => true,
                Err(rustix::io::Errno::EXIST) => false,
                Err(e) => bail!("{}: cannot create the directory: {e}", path.display()),
            };
        match rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty()) {
            // The directory that was there went between the two calls (an ending daemon
            // removing its store): make it.
            Err(rustix::io::Errno::NOENT) if tries < 50 => tries += 1,
            opened => break (created, opened),
        }
    };
    let dir = match opened {
        Ok(fd) => Dir {
            fd,
            path: path.clone(),
        },
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
            let owner = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
                .map(|s| format!(", owned by uid {}", s.st_uid))
                .unwrap_or_default();
            bail!(
                "{}: is not a real directory (a symlink or a file){owner}; asdfs will not use it (remove it)",
                path.display()
            )
        }
        Err(e) => bail!("{}: {e}", path.display()),
    };
    if created {
        // mkdirat's mode passed through the umask.
        rustix::fs::chmod(dir.proc_path(), Mode::from_raw_mode(mode))?;
    }
    check_private(&dir, uid)?;
    Ok((dir, created))
}

/// `dir` is owned by `uid` and not writable by group or others: nobody else can change
/// what is in it.
pub fn check_private(dir: &Dir, uid: u32) -> anyhow::Result<()> {
    let st = dir.stat()?;
    if st.st_uid != uid {
        bail!(
            "{}: owned by uid {}, not by {}; asdfs will not use a directory another user controls (remove it)",
            dir.path.display(),
            st.st_uid,
            who(uid)
        );
    }
    if st.st_mode & 0o022 != 0 {
        bail!(
            "{}: owned by uid {} but writable by group or others (mode {:o}); asdfs will not use a directory another user can change (remove it)",
            dir.path.display(),
            st.st_uid,
            st.st_mode & 0o7777
        );
    }
    Ok(())
}

fn who(uid: u32) -> String {
    if uid == 0 {
        "root".into()
    } else {
        format!("uid {uid}")
    }
}

/// A new file `name` in `dir`: O_CREAT|O_EXCL|O_NOFOLLOW, so never an existing file nor
/// a symlink's target.
pub fn create_excl(dir: &Dir, name: &OsStr, mode: u32) -> io::Result<File> {
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC;
    open_nofollow(dir, name, flags, mode)
}

/// Opens `name` in `dir` with `flags` (plus O_NOFOLLOW|O_CLOEXEC); `mode` if it creates.
pub fn open_nofollow(dir: &Dir, name: &OsStr, flags: OFlags, mode: u32) -> io::Result<File> {
    let path = dir.path.join(name);
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, one_component(name)?, flags, Mode::from_raw_mode(mode))
        .map_err(with_path(&path))?;
    Ok(File::from(fd))
}

/// A log file `name` in `dir` opened for appending: created with `mode`, or the existing one
/// if it is a regular file owned by this process's user; its mode is then set to `mode`.
pub fn open_log(dir: &Dir, name: &OsStr, mode: u32) -> io::Result<File> {
    let flags = OFlags::CREATE | OFlags::WRONLY | OFlags::APPEND | OFlags::NONBLOCK;
    let f = open_nofollow(dir, name, flags, mode)?;
    let st = rustix::fs::fstat(&f)?;
    let me = rustix::process::geteuid().as_raw();
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_uid != me {
        return Err(io::Error::other(format!(
            "{}: not a regular file of uid {me}",
            dir.path.join(name).display()
        )));
    }
    rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))?;
    Ok(f)
}

/// Reads `name` in `dir` (not following a symlink), at most `max` bytes.
pub fn read_nofollow(dir: &Dir, name: &OsStr, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let f = open_nofollow(dir, name, OFlags::RDONLY | OFlags::NONBLOCK, 0)?;
    let mut out = Vec::new();
    f.take(max).read_to_end(&mut out)?;
    Ok(out)
}

/// Replaces `name` in `dir` with `bytes` atomically: a new temporary file (O_EXCL), written
/// and synced, renamed over `name` within the directory. A symlink at `name` is replaced,
/// never followed.
pub fn write_atomic(dir: &Dir, name: &OsStr, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut tmp = OsStr::new(".").to_os_string();
    tmp.push(name);
    tmp.push(format!(".{}.tmp", std::process::id()));
    let _ = rustix::fs::unlinkat(dir, tmp.as_os_str(), AtFlags::empty());
    let mut f = create_excl(dir, &tmp, mode)?;
    let written = f
        .write_all(bytes)
        .and_then(|()| Ok(rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))?))
        .and_then(|()| f.sync_all())
        .and_then(|()| Ok(rustix::fs::renameat(dir, &tmp, dir, one_component(name)?)?));
    if written.is_err() {
        let _ = rustix::fs::unlinkat(dir, tmp.as_os_str(), AtFlags::empty());
    }
    written.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.path.join(name).display())))
}

/// Removes the file (not directory) `name` from `dir`.
pub fn unlink(dir: &Dir, name: &OsStr) -> io::Result<()> {
    Ok(rustix::fs::unlinkat(
        dir,
        one_component(name)?,
        AtFlags::empty(),
    )?)
}

/// Removes the empty directory `name` from `dir`.
pub fn rmdir(dir: &Dir, name: &OsStr) -> io::Result<()> {
    Ok(rustix::fs::unlinkat(
        dir,
        one_component(name)?,
        AtFlags::REMOVEDIR,
    )?)
}

/// Removes `name` from `dir` and, if it is a directory, everything in it: walking by
/// descriptors, never following a symlink and never descending into another mount (a
/// mount point is left, and so are the directories above it).
pub fn remove_tree(dir: &Dir, name: &OsStr) -> io::Result<()> {
    let name = one_component(name)?;
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?);
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let sub = rustix::fs::openat(dir, name, flags, Mode::empty())?;
    if mount_id(&sub)? != mount_id(dir)? {
        return Err(io::Error::other(format!(
            "{}: a mount point; not removed",
            dir.path.join(name).display()
        )));
    }
    empty_dir(&sub, &dir.path.join(name))?;
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
}

/// Removes `name` from `parent` when it is still `held` (a directory this process made and
/// kept open): empties `held` through its descriptor, then removes the name only if it
/// still names the same directory. A directory swapped in under the name is left alone.
pub fn remove_held(parent: &Dir, name: &OsStr, held: &Dir) -> io::Result<()> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let readable = rustix::fs::openat(held, ".", flags, Mode::empty())?;
    empty_dir(&readable, &held.path)?;
    let now = rustix::fs::statat(parent, one_component(name)?, AtFlags::SYMLINK_NOFOLLOW)?;
    let mine = held.stat()?;
    if (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino) {
        return Err(io::Error::other(format!(
            "{}: replaced by another directory; left alone",
            held.path.display()
        )));
    }
    rmdir(parent, name)
}

/// Removes everything in the directory `fd` (at `path`, for messages): iterative, one
/// descriptor per level, so a tree deeper than PATH_MAX or than a thread's stack would take
/// by recursion goes too (design.md §6.4); never following a symlink, never entering
/// another mount.
fn empty_dir(fd: &OwnedFd, path: &Path) -> io::Result<()> {
    struct Level {
        fd: OwnedFd,
        name: Option<std::ffi::OsString>,
        rest: Vec<std::ffi::OsString>,
    }
    let list = |fd: &OwnedFd| -> io::Result<Vec<std::ffi::OsString>> {
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(fd)? {
            let entry = entry?;
            let n = entry.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsStr::from_bytes(n).to_os_string());
            }
        }
        Ok(names)
    };
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut stack = vec![Level {
        fd: fd.try_clone()?,
        name: None,
        rest: list(fd)?,
    }];
    while let Some(top) = stack.last_mut() {
        let Some(n) = top.rest.pop() else {
            let done = stack.pop().expect("the top level");
            if let (Some(name), Some(parent)) = (done.name, stack.last()) {
                drop(done.fd);
                rustix::fs::unlinkat(&parent.fd, &name, AtFlags::REMOVEDIR)?;
            }
            continue;
        };
        let st = rustix::fs::statat(&top.fd, &n, AtFlags::SYMLINK_NOFOLLOW)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            rustix::fs::unlinkat(&top.fd, &n, AtFlags::empty())?;
            continue;
        }
        let sub = rustix::fs::openat(&top.fd, &n, flags, Mode::empty())?;
        if mount_id(&sub)? != mount_id(&top.fd)? {
            let mut at = path.to_path_buf();
            at.extend(stack.iter().filter_map(|l| l.name.as_deref()));
            at.push(&n);
            return Err(io::Error::other(format!(
                "{}: a mount point; not removed",
                crate::human::path(&at)
            )));
        }
        let rest = list(&sub)?;
        stack.push(Level {
            fd: sub,
            name: Some(n),
            rest,
        });
    }
    Ok(())
}

/// Whether the directory `name` in `dir` is a mount point (another mount than `dir`'s).
pub fn is_mount_point(dir: &Dir, name: &OsStr) -> io::Result<bool> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let sub = rustix::fs::openat(dir, one_component(name)?, flags, Mode::empty())?;
    Ok(mount_id(&sub)? != mount_id(dir)?)
}

fn mount_id(fd: impl AsFd) -> io::Result<u64> {
    let st = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, rustix::fs::StatxFlags::MNT_ID)?;
    Ok(st.stx_mnt_id)
}

/// Checks that nobody but root and `uid` can change what `path` (absolute, without
/// symlinks) names: every directory from `/` to it is owned by root or `uid` and not
/// writable by group or others, except a sticky directory owned by root (`/tmp`), in which
/// others cannot rename or remove what they do not own. Then later path-based access to
/// `path` and to what root or `uid` make beneath it reaches what was checked.
pub fn check_safe_chain(path: &Path, uid: u32) -> anyhow::Result<()> {
    if !path.is_absolute() {
        bail!("{}: not an absolute path", path.display());
    }
    let mut at = PathBuf::from("/");
    let mut parts = path.components().skip(1).peekable();
    loop {
        let st = rustix::fs::lstat(&at).map_err(|e| anyhow::anyhow!("{}: {e}", at.display()))?;
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFLNK {
            bail!(
                "{}: is a symlink; give the path without symlinks",
                at.display()
            );
        }
        if kind != libc::S_IFDIR {
            bail!("{}: not a directory", at.display());
        }
        if st.st_uid != 0 && st.st_uid != uid {
            bail!(
                "{}: owned by uid {}, not by {}; asdfs will not use a directory another user controls (remove it or choose another --volatile)",
                at.display(),
                st.st_uid,
                who(uid)
            );
        }
        let sticky_roots = st.st_mode & libc::S_ISVTX != 0 && st.st_uid == 0;
        if st.st_mode & 0o022 != 0 && !sticky_roots {
            bail!(
                "{}: writable by group or others (mode {:o}) and not a sticky directory of root's; another user could replace what asdfs keeps there (choose another --volatile)",
                at.display(),
                st.st_mode & 0o7777
            );
        }
        match parts.next() {
            Some(Component::Normal(n)) => at.push(n),
            Some(_) => bail!("{}: not a plain absolute path", path.display()),
            None => return Ok(()),
        }
    }
}

/// `name` as a single path component: not empty, no `/`, not `.` or `..`.
fn one_component(name: &OsStr) -> io::Result<&OsStr> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a single file name", Path::new(name).display()),
        ));
    }
    Ok(name)
}

fn with_path(path: &Path) -> impl Fn(rustix::io::Errno) -> io::Error + '_ {
    move |e| {
        let e = io::Error::from(e);
        io::Error::new(e.kind(), format!("{}: {e}", path.display()))
    }
}

/// Path calls for places no other user can change, each named for what it relies on. A
/// call here says so at its call site (`fsx::trusted::read(...)`), and `clippy.toml` forbids
/// the `std::fs` forms everywhere else (docs/security.md R6). The places:
/// - the kernel's own files: `/proc`, `/sys`, `/dev`;
/// - the RAM store and `/run/asdfs`: every directory from `/` down to them was checked by
///   [`check_safe_chain`] (or made by root in root's `/run`), so only root or the store's
///   user can rename anything on the way;
/// - files root's administrator named (a configuration file, an output file), acted on
///   with the rights of the user who named them;
/// - the target's path as the caller typed it, only to resolve or look at it before the
///   daemon opens it with [`Dir::open_strict`] and checks what it got.
#[allow(clippy::disallowed_methods)]
pub mod trusted {
    use std::fs::{File, Metadata, OpenOptions, ReadDir};
    use std::io;
    use std::path::{Path, PathBuf};

    pub fn read(p: impl AsRef<Path>) -> io::Result<Vec<u8>> {
        std::fs::read(p)
    }
    pub fn read_to_string(p: impl AsRef<Path>) -> io::Result<String> {
        std::fs::read_to_string(p)
    }
    pub fn write(p: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> io::Result<()> {
        std::fs::write(p, bytes)
    }
    pub fn read_dir(p: impl AsRef<Path>) -> io::Result<ReadDir> {
        std::fs::read_dir(p)
    }
    pub fn read_link(p: impl AsRef<Path>) -> io::Result<PathBuf> {
        std::fs::read_link(p)
    }
    pub fn metadata(p: impl AsRef<Path>) -> io::Result<Metadata> {
        std::fs::metadata(p)
    }
    pub fn symlink_metadata(p: impl AsRef<Path>) -> io::Result<Metadata> {
        std::fs::symlink_metadata(p)
    }
    /// A stat of an open descriptor that asks the filesystem, whatever it has cached
    /// (`AT_STATX_FORCE_SYNC`): on a FUSE mount, a GETATTR whose answer the kernel takes as
    /// fresh attributes.
    pub fn stat_forced(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
        use rustix::fs::{AtFlags, StatxFlags, statx};
        let flags = AtFlags::EMPTY_PATH | AtFlags::STATX_FORCE_SYNC;
        statx(fd, "", flags, StatxFlags::BASIC_STATS)?;
        Ok(())
    }
    /// The device (`major:minor`) of an open descriptor's filesystem, asking the
    /// filesystem nothing (`AT_STATX_DONT_SYNC` and an empty request mask: FUSE sends no
    /// request, even for a mount that would not let us in).
    pub fn dev_cached(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<String> {
        use rustix::fs::{AtFlags, StatxFlags, statx};
        let flags = AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC;
        let st = statx(fd, "", flags, StatxFlags::empty())?;
        Ok(format!("{}:{}", st.stx_dev_major, st.stx_dev_minor))
    }
    /// Device, mode and inode of what a path (a /proc link) names, from what the kernel has
    /// cached (`AT_STATX_DONT_SYNC`): a file a process holds on a FUSE mount whose daemon
    /// no longer answers is looked at without asking that daemon.
    pub fn stat_cached(p: impl AsRef<Path>) -> io::Result<(u64, u32, u64)> {
        use rustix::fs::{AtFlags, StatxFlags, statx};
        let flags = AtFlags::STATX_DONT_SYNC;
        let want = StatxFlags::TYPE | StatxFlags::MODE | StatxFlags::INO;
        let st = statx(rustix::fs::CWD, p.as_ref(), flags, want)?;
        let dev = rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor);
        Ok((dev, u32::from(st.stx_mode), st.stx_ino))
    }
    /// Mode and size of what a path names (not following a last symlink), from the
    /// kernel's cache as `stat_cached`.
    pub fn size_cached(p: impl AsRef<Path>) -> io::Result<(u32, u64)> {
        use rustix::fs::{AtFlags, StatxFlags, statx};
        let flags = AtFlags::STATX_DONT_SYNC | AtFlags::SYMLINK_NOFOLLOW;
        let want = StatxFlags::TYPE | StatxFlags::MODE | StatxFlags::SIZE;
        let st = statx(rustix::fs::CWD, p.as_ref(), flags, want)?;
        Ok((u32::from(st.stx_mode), st.stx_size))
    }
    pub fn canonicalize(p: impl AsRef<Path>) -> io::Result<PathBuf> {
        std::fs::canonicalize(p)
    }
    pub fn exists(p: impl AsRef<Path>) -> bool {
        p.as_ref().exists()
    }
    pub fn is_dir(p: impl AsRef<Path>) -> bool {
        p.as_ref().is_dir()
    }
    pub fn create_dir(p: impl AsRef<Path>) -> io::Result<()> {
        std::fs::create_dir(p)
    }
    pub fn create_dir_all(p: impl AsRef<Path>) -> io::Result<()> {
        std::fs::create_dir_all(p)
    }
    /// A directory with `mode`, not following a symlink at its name.
    pub fn create_dir_mode(p: impl AsRef<Path>, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(mode).create(p)
    }
    pub fn remove_file(p: impl AsRef<Path>) -> io::Result<()> {
        std::fs::remove_file(p)
    }
    pub fn remove_dir(p: impl AsRef<Path>) -> io::Result<()> {
        std::fs::remove_dir(p)
    }
    /// Never follows a symlink inside nor enters another mount, at any depth: the parent
    /// is opened by path, the rest is [`super::remove_tree`] (by descriptors, iterative).
    pub fn remove_dir_all(p: impl AsRef<Path>) -> io::Result<()> {
        let p = p.as_ref();
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: no directory to remove", p.display()),
            ));
        };
        super::remove_tree(&super::Dir::open(parent)?, name)
    }
    pub fn rename(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    pub fn set_mode(p: impl AsRef<Path>, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
    }
    /// Does not follow a symlink at the name.
    pub fn lchown(p: impl AsRef<Path>, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        std::os::unix::fs::lchown(p, uid, gid)
    }
    pub fn open(p: impl AsRef<Path>) -> io::Result<File> {
        File::open(p)
    }
    pub fn open_with(options: &OpenOptions, p: impl AsRef<Path>) -> io::Result<File> {
        options.open(p)
    }

    /// `Path`'s own path calls, for the places above.
    pub trait TrustedPath {
        fn trusted_exists(&self) -> bool;
        fn trusted_is_dir(&self) -> bool;
        fn trusted_canonicalize(&self) -> io::Result<PathBuf>;
        fn trusted_symlink_metadata(&self) -> io::Result<Metadata>;
    }

    impl TrustedPath for Path {
        fn trusted_exists(&self) -> bool {
            self.exists()
        }
        fn trusted_is_dir(&self) -> bool {
            self.is_dir()
        }
        fn trusted_canonicalize(&self) -> io::Result<PathBuf> {
            self.canonicalize()
        }
        fn trusted_symlink_metadata(&self) -> io::Result<Metadata> {
            self.symlink_metadata()
        }
    }

    /// Opening and creating by path, for the places above.
    pub trait TrustedOpen {
        fn trusted_open(&self, p: impl AsRef<Path>) -> io::Result<File>;
    }

    impl TrustedOpen for OpenOptions {
        fn trusted_open(&self, p: impl AsRef<Path>) -> io::Result<File> {
            self.open(p)
        }
    }

    impl TrustedOpen for std::fs::DirBuilder {
        /// Creates the directory (the `File` is of no use: `Ok` means made).
        fn trusted_open(&self, p: impl AsRef<Path>) -> io::Result<File> {
            self.create(p.as_ref())?;
            File::open(p)
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests set up files as a user would
mod tests {
    use super::*;

    fn tmp() -> (tempfile::TempDir, Dir) {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::open(t.path()).unwrap();
        (t, d)
    }

    #[test]
    fn mkdir_private_refuses_a_symlink_and_accepts_its_own() {
        let (t, d) = tmp();
        std::os::unix::fs::symlink("/", t.path().join("l")).unwrap();
        let e = mkdir_private(&d, OsStr::new("l"), 0o700, 0).unwrap_err();
        assert!(format!("{e}").contains("not a real directory"), "{e}");
        let me = rustix::process::geteuid().as_raw();
        let (_, created) = mkdir_private(&d, OsStr::new("a"), 0o700, me).unwrap();
        assert!(created);
        let (_, created) = mkdir_private(&d, OsStr::new("a"), 0o700, me).unwrap();
        assert!(!created);
        let e = mkdir_private(&d, OsStr::new("a"), 0o700, me + 1).unwrap_err();
        assert!(
            format!("{e}").contains(&format!("owned by uid {me}")),
            "{e}"
        );
    }

    #[test]
    fn write_atomic_replaces_a_symlink_without_following_it() {
        let (t, d) = tmp();
        std::fs::write(t.path().join("victim"), b"x").unwrap();
        std::os::unix::fs::symlink(t.path().join("victim"), t.path().join("s")).unwrap();
        write_atomic(&d, OsStr::new("s"), b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(t.path().join("victim")).unwrap(), b"x");
        assert_eq!(std::fs::read(t.path().join("s")).unwrap(), b"new");
        assert!(create_excl(&d, OsStr::new("s"), 0o600).is_err());
    }

    #[test]
    fn remove_tree_does_not_follow_symlinks() {
        let (t, d) = tmp();
        let keep = tempfile::tempdir().unwrap();
        std::fs::write(keep.path().join("f"), b"x").unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::os::unix::fs::symlink(keep.path(), t.path().join("a/b/l")).unwrap();
        remove_tree(&d, OsStr::new("a")).unwrap();
        assert!(!t.path().join("a").exists());
        assert!(keep.path().join("f").exists());
    }

    /// A tree deeper than PATH_MAX goes on a small stack (the removal recursed per level).
    #[test]
    fn remove_tree_removes_a_tree_of_any_depth_without_recursion() {
        let (t, d) = tmp();
        let keep = tempfile::tempdir().unwrap();
        std::fs::write(keep.path().join("f"), b"x").unwrap();
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        rustix::fs::mkdirat(&d, "a", Mode::from_raw_mode(0o755)).unwrap();
        let mut cur = rustix::fs::openat(&d, "a", flags, Mode::empty()).unwrap();
        for _ in 0..6000 {
            rustix::fs::mkdirat(&cur, "d", Mode::from_raw_mode(0o755)).unwrap();
            cur = rustix::fs::openat(&cur, "d", flags, Mode::empty()).unwrap();
        }
        rustix::fs::symlinkat(keep.path(), &cur, "l").unwrap();
        drop(cur);
        std::thread::Builder::new()
            .stack_size(128 << 10)
            .spawn(move || remove_tree(&d, OsStr::new("a")).unwrap())
            .unwrap()
            .join()
            .expect("the removal");
        assert!(!t.path().join("a").exists());
        assert!(keep.path().join("f").exists());
    }

    #[test]
    fn open_log_refuses_a_symlink_and_makes_the_log_private() {
        let (t, d) = tmp();
        std::fs::write(t.path().join("victim"), b"x").unwrap();
        std::os::unix::fs::symlink(t.path().join("victim"), t.path().join("s")).unwrap();
        assert!(open_log(&d, OsStr::new("s"), 0o600).is_err());
        std::fs::write(t.path().join("log"), b"").unwrap();
        open_log(&d, OsStr::new("log"), 0o600).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(t.path().join("log"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn remove_held_leaves_a_directory_swapped_in() {
        let (t, d) = tmp();
        let me = rustix::process::geteuid().as_raw();
        let (held, _) = mkdir_private(&d, OsStr::new("side"), 0o711, me).unwrap();
        std::fs::write(t.path().join("side/journal"), b"x").unwrap();
        std::fs::rename(t.path().join("side"), t.path().join("moved")).unwrap();
        std::fs::create_dir(t.path().join("side")).unwrap();
        std::fs::write(t.path().join("side/theirs"), b"y").unwrap();
        assert!(remove_held(&d, OsStr::new("side"), &held).is_err());
        assert!(t.path().join("side/theirs").exists());
        assert!(!t.path().join("moved/journal").exists());
    }

    #[test]
    fn a_chain_with_a_writable_directory_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let me = rustix::process::geteuid().as_raw();
        let tdir = t.path().canonicalize().unwrap();
        assert!(check_safe_chain(&tdir, me).is_ok());
        assert!(check_safe_chain(&tdir.join("open"), me).is_err());
    }
}
