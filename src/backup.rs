//! asd's hardlink backup (design.md §8): `.NAME-backup_asd-old` beside the target is a
//! hardlink copy of the disk copy taken when a session starts. Flushes replace files by
//! rename, so the copy keeps the session-start state without copying data.
//!
//! Backup links raise the link counts of the disk copy's files; `BackupIndex` counts them,
//! and `Discounting` (a `Backing` wrapper) subtracts them, so that programs see the link
//! counts of the target alone. Creating or removing a backup link and reading a link count
//! happen under the index lock, so the two always agree.

use crate::backing::{Backing, DirItem, DiskStat, Loc, Meta, NewContent, XattrList, open_beneath};
use crate::store::types::{Kind, Ts};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, unlinkat};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How many backup links each disk inode has.
#[derive(Default)]
pub struct BackupIndex {
    links: Mutex<HashMap<u64, u32>>,
}

impl BackupIndex {
    /// How many backup links the disk inode `ino` has.
    pub fn count(&self, ino: u64) -> u32 {
        self.links.lock().get(&ino).copied().unwrap_or(0)
    }

    fn add(&self, ino: u64, by: i64) {
        bump(&mut self.links.lock(), ino, by);
    }
}

fn bump(links: &mut HashMap<u64, u32>, ino: u64, by: i64) {
    let n = links.entry(ino).or_insert(0);
    *n = (i64::from(*n) + by).max(0) as u32;
    if *n == 0 {
        links.remove(&ino);
    }
}

/// The backups of one target: its disk copy and the directory that holds the target.
pub struct Backups {
    target: OwnedFd,
    parent: OwnedFd,
    name: OsString,
    pub index: Arc<BackupIndex>,
}

/// `.NAME-backup_asd-old`, asd's name for the session-start copy (`.NAME` for a
/// dot-directory `.NAME`: no second dot).
pub fn backup_name(target_name: &OsStr) -> OsString {
    let mut n = crate::snapshot::hidden(target_name);
    n.push("-backup_asd-old");
    n
}

/// The name asdfs before 0.2 gave a dot-directory's backup (`..NAME-backup_asd-old`).
fn legacy_name(target_name: &OsStr) -> Option<OsString> {
    if target_name.as_bytes().first() != Some(&b'.') {
        return None;
    }
    let mut n = OsString::from(".");
    n.push(target_name);
    n.push("-backup_asd-old");
    Some(n)
}

impl Backups {
    /// `target` and `parent` are directory descriptors (O_PATH is enough); `name` is the
    /// target's name in `parent`.
    /// The directory that holds the target, as opened at the start (crash snapshots are
    /// written under it, never by path: docs/security.md R1).
    pub fn parent_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.parent)
    }

    pub fn new(target: OwnedFd, parent: OwnedFd, name: &OsStr) -> Backups {
        Backups {
            target,
            parent,
            name: name.to_os_string(),
            index: Arc::new(BackupIndex::default()),
        }
    }

    fn old(&self) -> OsString {
        backup_name(&self.name)
    }

    /// Gives a backup under the double-dot name of asdfs before 0.2 asd's name, unless a
    /// backup under asd's name exists (the old one is then removed with the other stale
    /// trees at the next refresh).
    pub fn adopt_legacy_name(&self) -> io::Result<()> {
        let Some(legacy) = legacy_name(&self.name) else {
            return Ok(());
        };
        let is_dir = |n: &OsStr| {
            fstatat(&self.parent, n, AtFlags::AT_SYMLINK_NOFOLLOW)
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        };
        if !is_dir(&legacy)
            || fstatat(
                &self.parent,
                self.old().as_os_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_ok()
        {
            return Ok(());
        }
        let flags = nix::fcntl::RenameFlags::RENAME_NOREPLACE;
        nix::fcntl::renameat2(
            &self.parent,
            legacy.as_os_str(),
            &self.parent,
            self.old().as_os_str(),
            flags,
        )?;
        tracing::info!(from = %Path::new(&legacy).display(), to = %Path::new(&self.old()).display(), "renamed the hardlink backup to asd's name");
        Ok(())
    }

    /// Backup trees beside the target: the current one and any left half made or half
    /// removed (`.NAME-backup_asd-old.*`), and one under the double-dot name of asdfs
    /// before 0.2.
    fn trees(&self) -> io::Result<Vec<OsString>> {
        let old = self.old();
        let legacy = legacy_name(&self.name);
        let dir = open_beneath(
            self.parent.as_fd(),
            Path::new("."),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        )?;
        let mut out = Vec::new();
        for e in nix::dir::Dir::from_fd(dir)?.iter() {
            let n = OsStr::from_bytes(e?.file_name().to_bytes()).to_os_string();
            let b = n.as_bytes();
            let ours = |o: &OsStr| {
                n == o || (b.starts_with(o.as_bytes()) && b.get(o.len()) == Some(&b'.'))
            };
            if ours(&old) || legacy.as_deref().is_some_and(ours) {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// `.NAME-backup_asd-crash.`: the prefix of the hard-link copies of the last good
    /// tree that a start after a crash makes (`<prefix><unix seconds>`), kept until their
    /// crash snapshot is written (design.md §8).
    fn crash_prefix(&self) -> OsString {
        let mut n = crate::snapshot::hidden(&self.name);
        n.push("-backup_asd-crash.");
        n
    }

    /// The complete crash link trees beside the target, oldest first, with their time
    /// (seconds since the epoch); half-made ones (`….new-PID`) are removed.
    pub fn crash_trees(&self) -> io::Result<Vec<(OsString, u64)>> {
        let prefix = self.crash_prefix();
        let dir = open_beneath(
            self.parent.as_fd(),
            Path::new("."),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        )?;
        let mut out = Vec::new();
        let mut half = Vec::new();
        for e in nix::dir::Dir::from_fd(dir)?.iter() {
            let n = OsStr::from_bytes(e?.file_name().to_bytes()).to_os_string();
            let Some(rest) = n.as_bytes().strip_prefix(prefix.as_bytes()) else {
                continue;
            };
            match std::str::from_utf8(rest).ok().and_then(|r| r.parse().ok()) {
                Some(secs) => out.push((n, secs)),
                None => half.push(n),
            }
        }
        for h in half {
            self.remove_tree(&h)?;
        }
        out.sort_by_key(|(_, secs)| *secs);
        Ok(out)
    }

    /// Links the disk copy as it is now into a new crash tree; returns its name. The
    /// caller keeps the disk copy from changing meanwhile (no flush).
    pub fn link_crash_tree(&self, secs: u64) -> io::Result<OsString> {
        // One name a second (the snapshot's name has the second): a later one if taken.
        let taken: HashSet<u64> = self.crash_trees()?.into_iter().map(|(_, s)| s).collect();
        let secs = (secs..).find(|s| !taken.contains(s)).unwrap_or(secs);
        let mut name = self.crash_prefix();
        name.push(secs.to_string());
        let mut tmp = name.clone();
        tmp.push(format!(".new-{}", std::process::id()));
        self.copy_tree(&tmp)?;
        nix::fcntl::renameat(
            &self.parent,
            tmp.as_os_str(),
            &self.parent,
            name.as_os_str(),
        )?;
        nix::unistd::fsync(&open_beneath(
            self.parent.as_fd(),
            Path::new("."),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        )?)?;
        Ok(name)
    }

    /// A crash tree, opened (`O_PATH`), to write its snapshot from.
    pub fn open_tree(&self, name: &OsStr) -> io::Result<OwnedFd> {
        open_beneath(
            self.parent.as_fd(),
            Path::new(name),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
        )
    }

    /// Removes a crash tree once its snapshot is written.
    pub fn remove_crash_tree(&self, name: &OsStr) -> io::Result<()> {
        self.remove_tree(name)
    }

    /// Counts the links of the backup trees already beside the target (after a restart).
    pub fn index_existing(&self) -> io::Result<()> {
        let crash = self.crash_trees()?.into_iter().map(|(n, _)| n);
        for tree in self.trees()?.into_iter().chain(crash) {
            let st = fstatat(&self.parent, tree.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
            if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                continue; // not ours: removed (not followed) when the backup is refreshed
            }
            walk(self.parent.as_fd(), Path::new(&tree), &mut |_, _, item| {
                if item.kind != Some(Kind::Dir) {
                    self.index.add(item.ino, 1);
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Replaces the backup by a hardlink copy of the disk copy as it is now. The caller keeps
    /// the disk copy from changing meanwhile (no flush).
    pub fn refresh(&self) -> io::Result<u64> {
        let stale = self.retire_trees()?;
        let mut tmp = self.old();
        tmp.push(format!(".new-{}", std::process::id()));
        let files = self.copy_tree(&tmp)?;
        nix::fcntl::renameat(
            &self.parent,
            tmp.as_os_str(),
            &self.parent,
            self.old().as_os_str(),
        )?;
        for s in stale {
            self.remove_tree(&s)?;
        }
        Ok(files)
    }

    /// Deletes every backup tree (at a clean stop).
    pub fn remove_all(&self) -> io::Result<()> {
        for t in self.trees()? {
            self.remove_tree(&t)?;
        }
        Ok(())
    }

    /// Renames existing backup trees out of the way (they are removed after the new one).
    fn retire_trees(&self) -> io::Result<Vec<OsString>> {
        let mut out = Vec::new();
        for (i, t) in self.trees()?.into_iter().enumerate() {
            let mut s = self.old();
            s.push(format!(".stale-{}-{i}", std::process::id()));
            nix::fcntl::renameat(&self.parent, t.as_os_str(), &self.parent, s.as_os_str())?;
            out.push(s);
        }
        Ok(out)
    }

    fn copy_tree(&self, tmp: &OsStr) -> io::Result<u64> {
        mkdirat(&self.parent, tmp, Mode::from_bits_truncate(0o700))?;
        let mut files = 0u64;
        let mut dirs: Vec<PathBuf> = vec![PathBuf::new()];
        let mut dst: Option<(PathBuf, OwnedFd)> = None;
        walk(
            self.target.as_fd(),
            Path::new(""),
            &mut |rel, src_dir, item| {
                if dst.as_ref().map(|(p, _)| p.as_path()) != Some(rel) {
                    let fd = open_beneath(
                        self.parent.as_fd(),
                        &Path::new(tmp).join(rel),
                        OFlag::O_PATH | OFlag::O_DIRECTORY,
                    )?;
                    dst = Some((rel.to_path_buf(), fd));
                }
                let dst_dir = &dst.as_ref().expect("set above").1;
                if item.kind == Some(Kind::Dir) {
                    mkdirat(
                        dst_dir,
                        item.name.as_os_str(),
                        Mode::from_bits_truncate(0o700),
                    )?;
                    dirs.push(rel.join(&item.name));
                    return Ok(());
                }
                let mut links = self.index.links.lock();
                linkat(
                    src_dir,
                    item.name.as_os_str(),
                    dst_dir,
                    item.name.as_os_str(),
                    AtFlags::empty(),
                )?;
                bump(&mut links, item.ino, 1);
                files += 1;
                Ok(())
            },
        )?;
        // Directories get their attributes last, deepest first (a 0500 directory must be
        // filled before it is closed).
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            copy_dir_meta(
                self.target.as_fd(),
                &d,
                self.parent.as_fd(),
                &Path::new(tmp).join(&d),
            )?;
        }
        Ok(files)
    }

    /// Removes a backup tree beside the target. A name there that is not a directory (a
    /// symlink the user put in its place) is only unlinked, never followed.
    fn remove_tree(&self, tree: &OsStr) -> io::Result<()> {
        let st = fstatat(&self.parent, tree, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            tracing::warn!(
                "{} beside the target is not a directory; removed, not followed",
                Path::new(tree).display()
            );
            unlinkat(&self.parent, tree, UnlinkatFlags::NoRemoveDir)?;
            return Ok(());
        }
        let mut dirs = vec![PathBuf::from(tree)];
        walk(
            self.parent.as_fd(),
            Path::new(tree),
            &mut |rel, dir, item| {
                if item.kind == Some(Kind::Dir) {
                    dirs.push(Path::new(tree).join(rel).join(&item.name));
                    return Ok(());
                }
                let mut links = self.index.links.lock();
                unlinkat(dir, item.name.as_os_str(), UnlinkatFlags::NoRemoveDir)?;
                bump(&mut links, item.ino, -1);
                Ok(())
            },
        )?;
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let (parent, name) = (
                d.parent().unwrap_or(Path::new("")),
                d.file_name().unwrap_or_default(),
            );
            let pfd = open_beneath(
                self.parent.as_fd(),
                parent,
                OFlag::O_PATH | OFlag::O_DIRECTORY,
            )?;
            unlinkat(&pfd, name, UnlinkatFlags::RemoveDir)?;
        }
        Ok(())
    }
}

/// Calls `f(rel, dir, item)` for every entry below `root/top`: `rel` is the directory's path
/// relative to `top`, `dir` its open descriptor; parents come before their children.
type Visit<'a> = dyn FnMut(&Path, BorrowedFd<'_>, &DirItem) -> io::Result<()> + 'a;

fn walk(root: BorrowedFd<'_>, top: &Path, f: &mut Visit<'_>) -> io::Result<()> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOATIME;
        let fd = open_beneath(root, &top.join(&rel), flags)?;
        let listing = nix::unistd::dup(&fd)?;
        let mut items = Vec::new();
        for e in nix::dir::Dir::from_fd(listing)?.iter() {
            let e = e?;
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let kind = match e.file_type() {
                Some(nix::dir::Type::Directory) => Some(Kind::Dir),
                Some(_) => Some(Kind::File),
                None => None,
            };
            items.push(DirItem {
                name: OsString::from_vec(name.to_vec()),
                kind,
                ino: e.ino(),
            });
        }
        for mut item in items {
            if item.kind.is_none() {
                let st = fstatat(&fd, item.name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
                item.kind = Some(if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    Kind::Dir
                } else {
                    Kind::File
                });
            }
            f(&rel, fd.as_fd(), &item)?;
            if item.kind == Some(Kind::Dir) {
                stack.push(rel.join(&item.name));
            }
        }
    }
    Ok(())
}

/// Gives the backup directory `dst` the owner, mode, times and xattrs of `src`.
fn copy_dir_meta(
    src_root: BorrowedFd<'_>,
    src: &Path,
    dst_root: BorrowedFd<'_>,
    dst: &Path,
) -> io::Result<()> {
    let s = open_beneath(
        src_root,
        src,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOATIME,
    )?;
    let d = open_beneath(dst_root, dst, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    let st = nix::sys::stat::fstat(&s)?;
    let sp = crate::backing::proc_path(&s);
    let dp = crate::backing::proc_path(&d);
    for name in crate::backing::list_xattrs(&sp)? {
        if let Ok(v) = crate::backing::get_xattr(&sp, &name) {
            let _ = crate::backing::set_xattr(&dp, &name, &v);
        }
    }
    let _ = fchownat(
        &d,
        "",
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
        AtFlags::AT_EMPTY_PATH,
    );
    // On the descriptor: the backup directory itself, whatever its name is now.
    crate::backing::chmod_fd(&d, st.st_mode & 0o7777)?;
    let ts = |sec: i64, nsec: i64| Ts {
        sec,
        nsec: nsec as u32,
    };
    crate::backing::times_fd(
        &d,
        ts(st.st_atime, st.st_atime_nsec),
        ts(st.st_mtime, st.st_mtime_nsec),
    )?;
    Ok(())
}

/// A `Backing` whose link counts leave out the backup's links.
pub struct Discounting {
    pub inner: Arc<dyn Backing>,
    pub index: Arc<BackupIndex>,
}

impl Backing for Discounting {
    fn stat(&self, loc: &Loc) -> io::Result<DiskStat> {
        let links = self.index.links.lock();
        let mut st = self.inner.stat(loc)?;
        if matches!(loc, Loc::Target(_)) && st.kind != Kind::Dir {
            let backup = links.get(&st.ino).copied().unwrap_or(0);
            st.nlink = st.nlink.saturating_sub(backup).max(1);
        }
        Ok(st)
    }
    fn read_dir(&self, loc: &Loc) -> io::Result<Vec<DirItem>> {
        self.inner.read_dir(loc)
    }
    fn read_link(&self, loc: &Loc) -> io::Result<Vec<u8>> {
        self.inner.read_link(loc)
    }
    fn read_xattrs(&self, loc: &Loc) -> io::Result<XattrList> {
        self.inner.read_xattrs(loc)
    }
    fn read_data(&self, loc: &Loc, ino: Option<u64>, dst: &File) -> io::Result<()> {
        self.inner.read_data(loc, ino, dst)
    }
    fn create(&self, loc: &Loc, content: NewContent<'_>, meta: &Meta) -> io::Result<u64> {
        self.inner.create(loc, content, meta)
    }
    fn make_dir(&self, loc: &Loc) -> io::Result<()> {
        self.inner.make_dir(loc)
    }
    fn rename(&self, from: &Loc, to: &Loc) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn link(&self, from: &Loc, to: &Loc) -> io::Result<()> {
        self.inner.link(from, to)
    }
    fn remove(&self, loc: &Loc) -> io::Result<()> {
        self.inner.remove(loc)
    }
    fn set_meta(&self, loc: &Loc, kind: Kind, meta: &Meta) -> io::Result<()> {
        self.inner.set_meta(loc, kind, meta)
    }
    fn set_times(&self, loc: &Loc, atime: Ts, mtime: Ts) -> io::Result<()> {
        self.inner.set_times(loc, atime, mtime)
    }
    fn sync_dir(&self, loc: &Loc) -> io::Result<()> {
        self.inner.sync_dir(loc)
    }
    fn write_file(&self, loc: &Loc, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_file(loc, bytes)
    }
    fn read_file(&self, loc: &Loc) -> io::Result<Vec<u8>> {
        self.inner.read_file(loc)
    }
    fn create_unsynced(&self, loc: &Loc, content: NewContent<'_>, meta: &Meta) -> io::Result<u64> {
        self.inner.create_unsynced(loc, content, meta)
    }
    fn sync_created(&self, locs: &[Loc], dir: &Loc) -> io::Result<()> {
        self.inner.sync_created(locs, dir)
    }
    fn write_in_place(&self, w: &crate::backing::InPlace<'_>) -> io::Result<Option<DiskStat>> {
        self.inner.write_in_place(w)
    }
    fn space(&self) -> io::Result<crate::store::types::FsStats> {
        self.inner.space()
    }
}
