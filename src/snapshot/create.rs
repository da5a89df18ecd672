//! Creating a snapshot: walking the disk copy beneath its directory descriptor (names in byte
//! order, never following a symlink) and writing its members into a zstd tarball under a
//! temporary name, which becomes the snapshot's name only once complete and durable.

use super::SnapshotInfo;
use super::fs::{file_name, invalid, lossy, open_at, read_xattrs, rename_noreplace_at};
use super::names::{parent_of, parse_name, pretty, stamp, target_of};
use super::pax::{header, pax_header, set_name, xattr_records};
use super::progress::{Counting, Progress};
use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, SFlag};
use nix::unistd::UnlinkatFlags;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::time::SystemTime;
use tar::EntryType;

/// Writes a crash snapshot of the tree at `source` (a directory descriptor of the disk copy;
/// `O_PATH` is enough) to `dest`, members named `top/…`. On error nothing is left at `dest`
/// nor under the temporary name. `dest`'s directory (the target's parent, often the user's)
/// is opened once; the temporary file is created in it with `O_CREAT|O_EXCL|O_NOFOLLOW` and
/// mode 0600, renamed without replacing anything, and removed by name under that descriptor:
/// a name the user put there (a symlink) is never followed nor replaced.
pub fn create(
    source: BorrowedFd<'_>,
    top: &OsStr,
    dest: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<SnapshotInfo> {
    if top.is_empty() || top.as_bytes().contains(&b'/') || top == ".." || top == "." {
        bail!("{top:?} is not a single directory name");
    }
    let dir = parent_of(dest);
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let dir_fd = nix::fcntl::open(dir, flags, nix::sys::stat::Mode::empty())
        .with_context(|| format!("opening {}", dir.display()))?;
    create_in(source, top, dir_fd.as_fd(), dest, progress)
}

/// `create`, with the snapshot's directory given as a descriptor (`dest`'s directory, for
/// names in messages only): the daemon passes the directory it holds, which is never
/// looked up by path again (docs/security.md R1).
pub fn create_in(
    source: BorrowedFd<'_>,
    top: &OsStr,
    dest_dir: BorrowedFd<'_>,
    dest: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<SnapshotInfo> {
    if top.is_empty() || top.as_bytes().contains(&b'/') || top == ".." || top == "." {
        bail!("{top:?} is not a single directory name");
    }
    let (dir, name) = (parent_of(dest), file_name(dest)?);
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let dir_fd = nix::fcntl::openat(dest_dir, ".", flags, nix::sys::stat::Mode::empty())
        .with_context(|| format!("opening {}", dir.display()))?;
    remove_stale_temps(&dir_fd, name);
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let written = write_snapshot(source, top, &dir_fd, &tmp_name, progress)
        .with_context(|| format!("writing crash snapshot {}", dest.display()))
        .and_then(|()| place_file(&dir_fd, &tmp_name, name, dest));
    if let Err(e) = written {
        let _ = nix::unistd::unlinkat(&dir_fd, tmp_name.as_os_str(), UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    let size = nix::sys::stat::fstatat(&dir_fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)?.st_size;
    let parsed = parse_name(name);
    Ok(SnapshotInfo {
        path: dest.to_path_buf(),
        target: target_of(dest).unwrap_or_else(|| dir.join(top)),
        taken: pretty(&parsed.map_or_else(|| stamp(SystemTime::now()), |p| p.stamp)),
        size: size as u64,
    })
}

/// Renames the complete `tmp` to `name` in `dir` (never replacing anything there) and makes
/// it durable; if the directory cannot be synced, `name` is removed again: an error leaves no
/// snapshot behind.
fn place_file(dir: &OwnedFd, tmp: &OsStr, name: &OsStr, dest: &Path) -> anyhow::Result<()> {
    let renamed = rename_noreplace_at(dir, tmp, name);
    renamed.with_context(|| format!("renaming to {}", dest.display()))?;
    if let Err(e) = nix::unistd::fsync(dir) {
        let _ = nix::unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
        return Err(e).with_context(|| format!("syncing the directory of {}", dest.display()));
    }
    Ok(())
}

/// Removes temporary snapshot files of the same target left by a process that is gone (a
/// power cut during a snapshot). Best effort; by name under `dir`, never following.
fn remove_stale_temps(dir: &OwnedFd, dest_name: &OsStr) {
    let Some(want) = parse_name(dest_name).map(|p| p.name) else {
        return;
    };
    let Ok(mut entries) = nix::unistd::dup(dir).and_then(nix::dir::Dir::from_fd) else {
        return;
    };
    for entry in entries.iter().flatten() {
        let file = OsStr::from_bytes(entry.file_name().to_bytes());
        let Some((snap, pid)) = file.as_bytes().strip_prefix(b".").and_then(split_tmp) else {
            continue;
        };
        let same = parse_name(OsStr::from_bytes(snap)).is_some_and(|p| p.name == want);
        let pid = nix::unistd::Pid::from_raw(pid);
        if same && nix::sys::signal::kill(pid, None) == Err(Errno::ESRCH) {
            let _ = nix::unistd::unlinkat(dir, file, UnlinkatFlags::NoRemoveDir);
        }
    }
}

/// `NAME.tmp-PID` -> (`NAME`, PID).
fn split_tmp(s: &[u8]) -> Option<(&[u8], i32)> {
    let at = s.windows(5).rposition(|w| w == b".tmp-")?;
    let pid = std::str::from_utf8(&s[at + 5..]).ok()?.parse().ok()?;
    Some((&s[..at], pid))
}

/// Two passes over the tree: the total of regular file sizes, then the archive.
fn write_snapshot(
    source: BorrowedFd<'_>,
    top: &OsStr,
    dir: &OwnedFd,
    tmp: &OsStr,
    report: &mut dyn FnMut(u64, u64),
) -> io::Result<()> {
    let root = open_at(
        source,
        OsStr::new("."),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
    )?;
    let root_st = nix::sys::stat::fstat(&root)?;
    let mut member = top.as_bytes().to_vec();
    let total = total_size(&root, &root_st, &mut member)?;
    // Mode 0600: a snapshot holds every file of the tree, also those only their owner may read.
    let flags =
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
    let file = File::from(nix::fcntl::openat(dir, tmp, flags, mode)?);
    let mut progress = Progress::new(report, total);
    let mut packer = Packer {
        tar: tar::Builder::new(zstd::Encoder::new(file, 0)?),
        links: HashMap::new(),
        progress: &mut progress,
    };
    walk(&root, &root_st, &mut member, &mut |obj| packer.add(obj))?;
    let file = packer.tar.into_inner()?.finish()?;
    file.sync_all()?;
    progress.finish();
    Ok(())
}

/// The sizes of the regular files beneath `root`, each inode counted once.
fn total_size(root: &OwnedFd, root_st: &FileStat, member: &mut Vec<u8>) -> io::Result<u64> {
    let mut total = 0u64;
    let mut seen = HashSet::new();
    walk(root, root_st, member, &mut |obj| {
        if is_kind(obj.st, SFlag::S_IFREG) && (obj.st.st_nlink < 2 || seen.insert(inode(obj.st))) {
            total += obj.st.st_size as u64;
        }
        Ok(())
    })?;
    Ok(total)
}

/// One object of the tree: the directory `dir` itself (`name` None) or its entry `name`.
struct Obj<'a> {
    dir: &'a OwnedFd,
    name: Option<&'a OsStr>,
    st: &'a FileStat,
    /// The archive member name, `top/…`.
    member: &'a [u8],
}

type Visit<'v> = dyn FnMut(Obj<'_>) -> io::Result<()> + 'v;

/// Visits `dir` and then everything beneath it, names in byte order, never following a
/// symlink. Errors name the member they happened at. Iterative, one descriptor per level
/// open: a tree of any depth (design.md §6.4) needs no stack.
fn walk(
    dir: &OwnedFd,
    st: &FileStat,
    member: &mut Vec<u8>,
    visit: &mut Visit<'_>,
) -> io::Result<()> {
    /// A directory being walked: its descriptor, the names in it still to visit, and the
    /// length of the member name before its own name was added.
    struct Frame {
        fd: OwnedFd,
        names: std::vec::IntoIter<OsString>,
        len: usize,
    }
    let here = |e: io::Error, m: &[u8]| io::Error::new(e.kind(), format!("{}: {e}", lossy(m)));
    let enter = |fd: OwnedFd, st: &FileStat, member: &[u8], len, visit: &mut Visit<'_>| {
        visit(Obj {
            dir: &fd,
            name: None,
            st,
            member,
        })
        .map_err(|e| here(e, member))?;
        let names = sorted_names(&fd).map_err(|e| here(e, member))?;
        Ok::<_, io::Error>(Frame {
            fd,
            names: names.into_iter(),
            len,
        })
    };
    let mut stack = vec![enter(dir.try_clone()?, st, member, member.len(), visit)?];
    while let Some(top) = stack.last_mut() {
        let Some(name) = top.names.next() else {
            let done = stack.pop().expect("the top frame");
            member.truncate(done.len);
            continue;
        };
        let len = member.len();
        member.push(b'/');
        member.extend_from_slice(name.as_bytes());
        match child(&top.fd, &name, member, visit) {
            Ok(Some((sub, sst))) => {
                let frame = enter(sub, &sst, member, len, visit)?;
                stack.push(frame);
            }
            Ok(None) => member.truncate(len),
            Err(e) => return Err(here(e, member)),
        }
    }
    Ok(())
}

/// Visits the entry `name` of `dir` if it is not a directory; opens it if it is.
fn child(
    dir: &OwnedFd,
    name: &OsStr,
    member: &[u8],
    visit: &mut Visit<'_>,
) -> io::Result<Option<(OwnedFd, FileStat)>> {
    let cst = nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if !is_kind(&cst, SFlag::S_IFDIR) {
        let obj = Obj {
            dir,
            name: Some(name),
            st: &cst,
            member,
        };
        visit(obj)?;
        return Ok(None);
    }
    let sub = open_at(dir.as_fd(), name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    let sst = nix::sys::stat::fstat(&sub)?;
    Ok(Some((sub, sst)))
}

fn sorted_names(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let mut d = nix::dir::Dir::from_fd(nix::unistd::dup(dir)?)?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name));
        }
    }
    names.sort();
    Ok(names)
}

fn is_kind(st: &FileStat, kind: SFlag) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == kind.bits()
}

fn inode(st: &FileStat) -> (u64, u64) {
    (st.st_dev, st.st_ino)
}

/// Writes the members of the archive.
struct Packer<'p, 'a, W: Write> {
    tar: tar::Builder<W>,
    /// Member names of inodes with more than one link, by (dev, ino): the first one seen.
    links: HashMap<(u64, u64), Vec<u8>>,
    progress: &'p mut Progress<'a>,
}

impl<W: Write> Packer<'_, '_, W> {
    fn add(&mut self, obj: Obj<'_>) -> io::Result<()> {
        let st = obj.st;
        if is_kind(st, SFlag::S_IFSOCK) {
            return Ok(()); // tar cannot hold sockets; they mean nothing after a reboot anyway
        }
        if !is_kind(st, SFlag::S_IFDIR) && st.st_nlink > 1 {
            if let Some(first) = self.links.get(&inode(st)).cloned() {
                return self.append(&obj, EntryType::Link, Some(&first), &[], None);
            }
            self.links.insert(inode(st), obj.member.to_vec());
        }
        match obj.name {
            None => {
                let x = read_xattrs(obj.dir)?;
                self.append(&obj, EntryType::Directory, None, &x, None)
            }
            Some(name) => self.add_entry(&obj, name),
        }
    }

    /// A non-directory: its data, link target or device number.
    fn add_entry(&mut self, obj: &Obj<'_>, name: &OsStr) -> io::Result<()> {
        let fmt = SFlag::from_bits_truncate(obj.st.st_mode & SFlag::S_IFMT.bits());
        if fmt == SFlag::S_IFREG {
            let file = open_data(obj.dir, name, obj.st)?;
            let x = read_xattrs(&file)?;
            return self.append(obj, EntryType::Regular, None, &x, Some(File::from(file)));
        }
        let fd = open_at(obj.dir.as_fd(), name, OFlag::O_PATH | OFlag::O_NOFOLLOW)?;
        let x = read_xattrs(&fd)?;
        let (ty, link) = match fmt {
            SFlag::S_IFLNK => {
                let target = nix::fcntl::readlinkat(obj.dir, name)?;
                (EntryType::Symlink, Some(target.into_vec()))
            }
            SFlag::S_IFIFO => (EntryType::Fifo, None),
            SFlag::S_IFCHR => (EntryType::Char, None),
            SFlag::S_IFBLK => (EntryType::Block, None),
            _ => return Err(invalid(format!("unknown file type {:o}", obj.st.st_mode))),
        };
        self.append(obj, ty, link.as_deref(), &x, None)
    }

    fn append(
        &mut self,
        obj: &Obj<'_>,
        ty: EntryType,
        link: Option<&[u8]>,
        xattrs: &[(OsString, Vec<u8>)],
        data: Option<File>,
    ) -> io::Result<()> {
        let size = if data.is_some() {
            obj.st.st_size as u64
        } else {
            0
        };
        let (mut h, mut pax) = header(obj.st, ty, size)?;
        set_name(&mut h, obj.member, link, &mut pax)?;
        xattr_records(&mut pax, xattrs);
        if !pax.is_empty() {
            self.tar.append(&pax_header(pax.len())?, &pax[..])?;
        }
        h.set_cksum();
        let Some(file) = data else {
            return self.tar.append(&h, io::empty());
        };
        let mut r = Counting::new(file.take(size), self.progress);
        self.tar.append(&h, &mut r)?;
        match r.read == size {
            true => Ok(()),
            false => Err(invalid("the file shrank while it was read".into())),
        }
    }
}

/// Opens a regular file for reading (without updating its atime when allowed) and checks it
/// is still the object that was listed.
fn open_data(dir: &OwnedFd, name: &OsStr, st: &FileStat) -> io::Result<OwnedFd> {
    // O_NONBLOCK: a FIFO or device swapped in for the file must not block the open; the
    // checks below then refuse it.
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
    let fd = match open_at(dir.as_fd(), name, flags | OFlag::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open_at(dir.as_fd(), name, flags)?,
        other => other?,
    };
    let now = nix::sys::stat::fstat(&fd)?;
    let regular = now.st_mode & libc::S_IFMT == libc::S_IFREG;
    if !regular || inode(&now) != inode(st) || now.st_size != st.st_size {
        return Err(invalid(
            "the file changed while the snapshot was taken".into(),
        ));
    }
    crate::backing::clear_nonblock(&fd)?;
    Ok(fd)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests set up files as a user would
mod tests {
    use super::*;
    use nix::sys::stat::{Mode, mkdirat};

    /// A tree deeper than PATH_MAX is walked whole on a small stack (it recursed once per
    /// level before).
    #[test]
    fn a_tree_of_any_depth_is_walked_without_recursion() {
        let tmp = tempfile::tempdir().unwrap();
        let top: OwnedFd = File::open(tmp.path()).unwrap().into();
        let mut cur = top.try_clone().unwrap();
        for _ in 0..6000 {
            mkdirat(&cur, "d", Mode::from_bits_truncate(0o755)).unwrap();
            cur = open_at(
                cur.as_fd(),
                OsStr::new("d"),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            )
            .unwrap();
        }
        let f = nix::fcntl::openat(
            &cur,
            "f",
            OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        File::from(f).write_all(b"deep").unwrap();
        drop(cur);
        let (size, deepest) = std::thread::Builder::new()
            .stack_size(128 << 10)
            .spawn(move || {
                let st = nix::sys::stat::fstat(&top).unwrap();
                let mut member = b"t".to_vec();
                let size = total_size(&top, &st, &mut member).unwrap();
                let mut deepest = 0;
                walk(&top, &st, &mut member, &mut |o| {
                    deepest = deepest.max(o.member.len());
                    Ok(())
                })
                .unwrap();
                assert_eq!(member, b"t");
                (size, deepest)
            })
            .unwrap()
            .join()
            .expect("the walk");
        assert_eq!(size, 4);
        assert_eq!(deepest, "t".len() + 6000 * "/d".len() + "/f".len());
        let _ = std::process::Command::new("rm")
            .arg("-rf")
            .arg(tmp.path())
            .status();
    }
}
