//! Crash snapshots (design.md §7 step 3, §8): zstd tarballs of the disk copy, made when a mount
//! finds that the previous session ended uncleanly, with asd's names
//! (`.NAME-backup_asd-crashrecovery-YYYYmmdd_HHMMSS.tar.zstd` beside the target); listing,
//! pruning to a limit, cleaning and restoring them. No printing: progress goes to a callback.
//!
//! Archive layout: every member is `NAME/<relative path>`, so asd's documented recipe
//! (`cd /foo && tar --zstd -xf SNAPSHOT`) recreates `/foo/NAME`. Per-member PAX records carry
//! long names, nanosecond mtimes and xattrs (`SCHILY.xattr.*`, as GNU tar `--xattrs` writes).
//! Invariants: the disk copy is read only beneath its directory descriptor, never following a
//! symlink; a restore writes only beneath a fresh temporary directory, so no member can reach
//! outside it; a snapshot file under its final name is always complete.

use anyhow::{Context, anyhow, bail};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, RenameFlags, ResolveFlag, openat2};
use nix::sys::stat::{FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};
use tar::{EntryType, Header};

const MARKER: &str = "-backup_asd-crashrecovery-";
const EXT: &str = ".tar.zstd";
/// Progress is reported at least every this many bytes.
const PROGRESS_STEP: u64 = 4 << 20;

/// One crash snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub path: PathBuf,
    /// The directory the snapshot was taken of.
    pub target: PathBuf,
    /// Local time from the name, "YYYY-mm-dd HH:MM:SS".
    pub taken: String,
    /// Size of the compressed file in bytes.
    pub size: u64,
}

/// What `restore` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreReport {
    pub restored_to: PathBuf,
    /// Where the previous content of `restored_to` was moved, if there was any.
    pub kept_old: Option<PathBuf>,
    /// Members restored other than directories (files, links, symlinks, special files).
    pub files: u64,
    /// Bytes of regular file data restored.
    pub bytes: u64,
}

// ---------------------------------------------------------------------------------------
// Names

/// The snapshot name for `target` at `when` (local time): `/foo/bar` ->
/// `/foo/.bar-backup_asd-crashrecovery-YYYYmmdd_HHMMSS.tar.zstd`. If that name is taken (two
/// crashes within a second), `_01`, `_02`, ... is added after the time: `_` sorts after the
/// `.` of the plain name, and the two digits keep byte order up to `_99`; `list` orders by
/// the number, so more also work.
pub fn snapshot_path(target: &Path, when: SystemTime) -> PathBuf {
    let name = target.file_name().unwrap_or_default();
    let mut base = OsString::from(".");
    base.push(name);
    base.push(MARKER);
    base.push(stamp(when));
    free_name(&target.with_file_name(base), EXT)
}

/// The first of `base+ext`, `base_01+ext`, `base_02+ext`, ... that does not exist.
fn free_name(base: &Path, ext: &str) -> PathBuf {
    let with = |suffix: String| {
        let mut s = base.as_os_str().to_os_string();
        s.push(suffix);
        s.push(ext);
        PathBuf::from(s)
    };
    let mut candidate = with(String::new());
    let mut n = 1u32;
    while candidate.symlink_metadata().is_ok() {
        candidate = with(format!("_{n:02}"));
        n += 1;
    }
    candidate
}

/// The target a snapshot was taken of (`/foo/.bar-…-crashrecovery-….tar.zstd` -> `/foo/bar`).
pub fn target_of(snapshot: &Path) -> Option<PathBuf> {
    let parsed = parse_name(snapshot.file_name()?)?;
    Some(snapshot.with_file_name(parsed.name))
}

/// A snapshot file name taken apart.
struct Parsed {
    name: OsString,
    /// `YYYYmmdd_HHMMSS`.
    stamp: String,
    seq: u32,
}

fn parse_name(file: &OsStr) -> Option<Parsed> {
    let core = file
        .as_bytes()
        .strip_prefix(b".")?
        .strip_suffix(EXT.as_bytes())?;
    let marker = MARKER.as_bytes();
    let at = core.windows(marker.len()).rposition(|w| w == marker)?;
    let (name, rest) = (
        &core[..at],
        std::str::from_utf8(&core[at + marker.len()..]).ok()?,
    );
    let (stamp, seq) = match rest.split_at_checked(15)? {
        (s, "") => (s, 0),
        (s, tail) => (s, tail.strip_prefix('_')?.parse().ok()?),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let ok = stamp.as_bytes()[8] == b'_' && digits(&stamp[..8]) && digits(&stamp[9..]);
    (ok && !name.is_empty()).then(|| Parsed {
        name: OsString::from_vec(name.to_vec()),
        stamp: stamp.to_string(),
        seq,
    })
}

/// `YYYYmmdd_HHMMSS` -> `YYYY-mm-dd HH:MM:SS`.
fn pretty(stamp: &str) -> String {
    let s = stamp;
    format!(
        "{}-{}-{} {}:{}:{}",
        &s[..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    )
}

/// `when` in local time as `YYYYmmdd_HHMMSS`.
pub(crate) fn stamp(when: SystemTime) -> String {
    let secs = match when.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    };
    let t = secs as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value (integers and a null zone pointer).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals; localtime_r is thread-safe.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return "19700101_000000".into();
    }
    format!(
        "{:04}{:02}{:02}_{:02}{:02}{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// The directory that holds `path` ("." for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The crash snapshots of `target`, newest first. Looks only in the target's parent.
pub fn list(target: &Path) -> io::Result<Vec<SnapshotInfo>> {
    let name = target
        .file_name()
        .ok_or_else(|| invalid(format!("{} has no name", target.display())))?;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(parent_of(target))? {
        let entry = entry?;
        let file = entry.file_name();
        let Some(p) = parse_name(&file).filter(|p| p.name == name) else {
            continue;
        };
        let meta = match entry.metadata() {
            Ok(m) if m.is_file() => m,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let info = SnapshotInfo {
            path: target.with_file_name(&file),
            target: target.to_path_buf(),
            taken: pretty(&p.stamp),
            size: meta.len(),
        };
        found.push(((p.stamp, p.seq), info));
    }
    found.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(found.into_iter().map(|(_, i)| i).collect())
}

/// Keeps the newest `limit` snapshots of `target`, deletes the rest; returns what it deleted.
pub fn enforce_limit(target: &Path, limit: u32) -> io::Result<Vec<PathBuf>> {
    let mut deleted = Vec::new();
    for old in list(target)?.into_iter().skip(limit as usize) {
        match std::fs::remove_file(&old.path) {
            Ok(()) => deleted.push(old.path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{}: {e}", old.path.display()),
                ));
            }
        }
    }
    Ok(deleted)
}

/// Deletes every crash snapshot of `target` (asd's `clean`); returns what it deleted.
pub fn clean(target: &Path) -> io::Result<Vec<PathBuf>> {
    enforce_limit(target, 0)
}

// ---------------------------------------------------------------------------------------
// Creating

/// Reports progress to the caller's callback every `PROGRESS_STEP` bytes.
struct Progress<'a> {
    report: &'a mut dyn FnMut(u64, u64),
    done: u64,
    total: u64,
    last: u64,
}

impl<'a> Progress<'a> {
    fn new(report: &'a mut dyn FnMut(u64, u64), total: u64) -> Self {
        report(0, total);
        Progress {
            report,
            done: 0,
            total,
            last: 0,
        }
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        self.total = self.total.max(self.done);
        if self.done - self.last >= PROGRESS_STEP {
            self.last = self.done;
            (self.report)(self.done, self.total);
        }
    }

    fn finish(&mut self) {
        (self.report)(self.total, self.total);
    }
}

/// A reader that counts what passes through it into a `Progress`.
struct Counting<'p, 'a, R> {
    inner: R,
    progress: &'p mut Progress<'a>,
    read: u64,
}

impl<R: Read> Read for Counting<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        self.progress.add(n as u64);
        Ok(n)
    }
}

/// A file that is removed when dropped, unless `keep` was called.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes a crash snapshot of the tree at `source` (a directory descriptor of the disk copy;
/// `O_PATH` is enough) to `dest`, members named `top/…`. On error nothing is left at `dest`
/// nor under the temporary name.
pub fn create(
    source: BorrowedFd<'_>,
    top: &OsStr,
    dest: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<SnapshotInfo> {
    if top.is_empty() || top.as_bytes().contains(&b'/') || top == ".." || top == "." {
        bail!("{top:?} is not a single directory name");
    }
    let (dir, name) = (parent_of(dest), file_name(dest)?);
    remove_stale_temps(dir, name);
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let mut tmp = TempFile {
        path: dir.join(tmp_name),
        keep: false,
    };
    write_snapshot(source, top, &tmp.path, progress)
        .with_context(|| format!("writing crash snapshot {}", dest.display()))?;
    place_file(&tmp.path, dest, dir)?;
    tmp.keep = true;
    let size = std::fs::metadata(dest)?.len();
    let parsed = parse_name(name);
    Ok(SnapshotInfo {
        path: dest.to_path_buf(),
        target: target_of(dest).unwrap_or_else(|| dir.join(top)),
        taken: pretty(&parsed.map_or_else(|| stamp(SystemTime::now()), |p| p.stamp)),
        size,
    })
}

fn file_name(path: &Path) -> anyhow::Result<&OsStr> {
    path.file_name()
        .ok_or_else(|| anyhow!("{} has no file name", path.display()))
}

/// Renames the complete `tmp` to `dest` (never replacing a file) and makes it durable; if the
/// directory cannot be synced, `dest` is removed again: an error leaves no snapshot behind.
fn place_file(tmp: &Path, dest: &Path, dir: &Path) -> anyhow::Result<()> {
    rename_noreplace(tmp, dest).with_context(|| format!("renaming to {}", dest.display()))?;
    let synced = File::open(dir).and_then(|d| d.sync_all());
    if let Err(e) = synced {
        let _ = std::fs::remove_file(dest);
        return Err(e).with_context(|| format!("syncing directory {}", dir.display()));
    }
    Ok(())
}

fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let cwd = nix::fcntl::AT_FDCWD;
    match nix::fcntl::renameat2(cwd, from, cwd, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        // A filesystem without RENAME_NOREPLACE: check, then rename.
        Err(Errno::EINVAL) if to.symlink_metadata().is_err() => std::fs::rename(from, to),
        Err(e) => Err(e.into()),
    }
}

/// Removes temporary snapshot files of the same target left by a process that is gone (a
/// power cut during a snapshot). Best effort.
fn remove_stale_temps(dir: &Path, dest_name: &OsStr) {
    let Some(want) = parse_name(dest_name).map(|p| p.name) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some((snap, pid)) = file.as_bytes().strip_prefix(b".").and_then(split_tmp) else {
            continue;
        };
        let same = parse_name(OsStr::from_bytes(snap)).is_some_and(|p| p.name == want);
        let pid = nix::unistd::Pid::from_raw(pid);
        if same && nix::sys::signal::kill(pid, None) == Err(Errno::ESRCH) {
            let _ = std::fs::remove_file(entry.path());
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
    tmp: &Path,
    report: &mut dyn FnMut(u64, u64),
) -> io::Result<()> {
    let root = open_at(
        source,
        OsStr::new("."),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
    )?;
    let root_st = nix::sys::stat::fstat(&root)?;
    let mut member = top.as_bytes().to_vec();
    let mut total = 0u64;
    let mut seen = HashSet::new();
    walk(&root, &root_st, &mut member, &mut |obj| {
        if is_kind(obj.st, SFlag::S_IFREG) && (obj.st.st_nlink < 2 || seen.insert(inode(obj.st))) {
            total += obj.st.st_size as u64;
        }
        Ok(())
    })?;
    // Mode 0600: a snapshot holds every file of the tree, also those only their owner may read.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
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
/// symlink. Errors name the member they happened at.
fn walk(
    dir: &OwnedFd,
    st: &FileStat,
    member: &mut Vec<u8>,
    visit: &mut Visit<'_>,
) -> io::Result<()> {
    let here = |e: io::Error, m: &[u8]| io::Error::new(e.kind(), format!("{}: {e}", lossy(m)));
    visit(Obj {
        dir,
        name: None,
        st,
        member: &member[..],
    })
    .map_err(|e| here(e, member))?;
    for name in sorted_names(dir).map_err(|e| here(e, member))? {
        let len = member.len();
        member.push(b'/');
        member.extend_from_slice(name.as_bytes());
        let mut child = || -> io::Result<Option<(OwnedFd, FileStat)>> {
            let cst = nix::sys::stat::fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
            if !is_kind(&cst, SFlag::S_IFDIR) {
                let obj = Obj {
                    dir,
                    name: Some(&name),
                    st: &cst,
                    member: &member[..],
                };
                visit(obj)?;
                return Ok(None);
            }
            let sub = open_at(dir.as_fd(), &name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
            let sst = nix::sys::stat::fstat(&sub)?;
            Ok(Some((sub, sst)))
        };
        match child() {
            Ok(Some((sub, sst))) => walk(&sub, &sst, member, visit)?,
            Ok(None) => {}
            Err(e) => return Err(here(e, member)),
        }
        member.truncate(len);
    }
    Ok(())
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
        for (k, v) in xattrs {
            let key = [b"SCHILY.xattr.", k.as_bytes()].concat();
            pax_record(&mut pax, &key, v);
        }
        if !pax.is_empty() {
            let mut x = Header::new_ustar();
            x.set_path("PaxHeader")?;
            x.set_entry_type(EntryType::XHeader);
            x.set_size(pax.len() as u64);
            x.set_cksum();
            self.tar.append(&x, &pax[..])?;
        }
        h.set_cksum();
        let Some(file) = data else {
            return self.tar.append(&h, io::empty());
        };
        let mut r = Counting {
            inner: file.take(size),
            progress: self.progress,
            read: 0,
        };
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
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW;
    let fd = match open_at(dir.as_fd(), name, flags | OFlag::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open_at(dir.as_fd(), name, flags)?,
        other => other?,
    };
    let now = nix::sys::stat::fstat(&fd)?;
    if inode(&now) != inode(st) || now.st_size != st.st_size {
        return Err(invalid(
            "the file changed while the snapshot was taken".into(),
        ));
    }
    Ok(fd)
}

/// A ustar header with the object's attributes, and the PAX records that the header cannot
/// hold (nanosecond or negative mtime, ids and sizes too large for octal fields).
fn header(st: &FileStat, ty: EntryType, size: u64) -> io::Result<(Header, Vec<u8>)> {
    let mut h = Header::new_ustar();
    let mut pax = Vec::new();
    h.set_entry_type(ty);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(st.st_uid.into());
    h.set_gid(st.st_gid.into());
    h.set_size(size);
    h.set_mtime(st.st_mtime.max(0) as u64);
    if st.st_mtime_nsec != 0 || st.st_mtime < 0 {
        let t = pax_time(st.st_mtime, st.st_mtime_nsec);
        pax_record(&mut pax, b"mtime", t.as_bytes());
    }
    for (key, v, max) in [
        (&b"uid"[..], st.st_uid as u64, 0o7777777),
        (b"gid", st.st_gid as u64, 0o7777777),
        (b"size", size, 0o77777777777),
    ] {
        if v > max {
            pax_record(&mut pax, key, v.to_string().as_bytes());
        }
    }
    if ty == EntryType::Char || ty == EntryType::Block {
        let rdev = st.st_rdev;
        h.set_device_major(nix::sys::stat::major(rdev) as u32)?;
        h.set_device_minor(nix::sys::stat::minor(rdev) as u32)?;
    }
    Ok((h, pax))
}

/// Puts the member name (and link target) in the header, or in PAX records when too long.
fn set_name(
    h: &mut Header,
    member: &[u8],
    link: Option<&[u8]>,
    pax: &mut Vec<u8>,
) -> io::Result<()> {
    if h.set_path(OsStr::from_bytes(member)).is_err() {
        pax_record(pax, b"path", member);
        if let Some(u) = h.as_ustar_mut() {
            u.prefix = [0; 155];
        }
        raw_field(&mut h.as_old_mut().name, member);
    }
    if let Some(link) = link {
        if h.set_link_name(OsStr::from_bytes(link)).is_err() {
            pax_record(pax, b"linkpath", link);
            raw_field(&mut h.as_old_mut().linkname, link);
        }
    }
    Ok(())
}

/// The start of `value` in a fixed header field (readers use the PAX record instead).
fn raw_field(field: &mut [u8; 100], value: &[u8]) {
    let n = value.len().min(field.len());
    *field = [0; 100];
    field[..n].copy_from_slice(&value[..n]);
}

/// Appends `"<len> <key>=<value>\n"`, where len counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3;
    let digits = |n: usize| n.to_string().len();
    let mut len = rest + digits(rest);
    while digits(len) + rest != len {
        len = digits(len) + rest;
    }
    out.extend_from_slice(format!("{len} ").as_bytes());
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Seconds and nanoseconds as a PAX time ("-1.5" is half a second before -1).
fn pax_time(sec: i64, nsec: i64) -> String {
    if sec < 0 && nsec > 0 {
        format!("-{}.{:09}", -(sec + 1), 1_000_000_000 - nsec)
    } else {
        format!("{sec}.{nsec:09}")
    }
}

fn parse_pax_time(v: &[u8]) -> Option<(i64, i64)> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = whole.parse().ok()?;
    let digits: String = frac.chars().chain("000000000".chars()).take(9).collect();
    let nsec: i64 = digits.parse().ok()?;
    Some(match (neg, nsec) {
        (false, _) => (sec, nsec),
        (true, 0) => (-sec, 0),
        (true, n) => (-sec - 1, 1_000_000_000 - n),
    })
}

// ---------------------------------------------------------------------------------------
// Restoring

/// Attributes of a restored object.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    atime: Option<(i64, i64)>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

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

/// A directory removed with its content when dropped, unless `keep` was called.
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
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
    let dir = parent_of(to);
    refuse_if_mounted(to)?;
    if occupancy(to)? == Occupancy::Occupied && !force {
        bail!(not_empty(to));
    }
    let (mut tmp, (files, bytes)) = unpack_beside(snapshot, to, progress)
        .with_context(|| format!("restoring {}", snapshot.display()))?;
    let kept_old = place_dir(&tmp.path, to, force)?;
    tmp.keep = true;
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
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<(TempDir, (u64, u64))> {
    let (dir, name) = (parent_of(to), file_name(to)?);
    let file = File::open(snapshot)?;
    let total = file.metadata()?.len();
    let dir_fd = nix::fcntl::open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())
        .with_context(|| format!("opening {}", dir.display()))?;
    let (tmp, tmp_name) = make_temp_dir(&dir_fd, dir, name)?;
    let mut unpacker = Unpacker::new(Rc::new(dir_fd), tmp_name)?;
    let mut progress = Progress::new(progress, total);
    unpacker.unpack(Counting {
        inner: file,
        progress: &mut progress,
        read: 0,
    })?;
    progress.finish();
    Ok((tmp, (unpacker.files, unpacker.bytes)))
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
    if mount.is_some_and(|m| m.fstype == crate::daemon::mounting::FSTYPE) {
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
) -> anyhow::Result<(TempDir, OsString)> {
    for n in 0..1000 {
        let mut tmp = OsString::from(".");
        tmp.push(name);
        tmp.push(format!(".restore-{}", std::process::id()));
        if n > 0 {
            tmp.push(format!("-{n}"));
        }
        match nix::sys::stat::mkdirat(dir_fd, tmp.as_os_str(), Mode::from_bits_truncate(0o700)) {
            Ok(()) => {
                let guard = TempDir {
                    path: dir.join(&tmp),
                    keep: false,
                };
                return Ok((guard, tmp));
            }
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

/// Unpacks archive members beneath a temporary directory.
struct Unpacker {
    /// The directory that holds the temporary root, and the root's name there.
    outer: (Rc<OwnedFd>, OsString),
    root: Rc<OwnedFd>,
    /// The archive's top-level name, from its first member.
    top: Option<Vec<u8>>,
    /// Directories by relative path, and their attributes (None: created implicitly), set
    /// once everything is unpacked so their times and modes stay as archived.
    dirs: BTreeMap<Vec<u8>, Option<Meta>>,
    /// The last directory looked up.
    cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
    as_root: bool,
    files: u64,
    bytes: u64,
}

impl Unpacker {
    fn new(outer: Rc<OwnedFd>, name: OsString) -> io::Result<Unpacker> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
        let root = Rc::new(open_at(outer.as_fd(), &name, flags)?);
        Ok(Unpacker {
            outer: (outer, name),
            root,
            top: None,
            dirs: BTreeMap::new(),
            cache: None,
            as_root: nix::unistd::geteuid().is_root(),
            files: 0,
            bytes: 0,
        })
    }

    fn unpack(&mut self, compressed: impl Read) -> anyhow::Result<()> {
        let mut archive = tar::Archive::new(zstd::Decoder::new(compressed)?);
        for entry in archive.entries()? {
            let mut entry = entry?;
            if entry.header().entry_type().is_pax_global_extensions() {
                continue;
            }
            let path = entry.path_bytes().into_owned();
            self.member(&mut entry)
                .with_context(|| format!("member {}", lossy(&path)))?;
        }
        if self.top.is_none() {
            bail!("the archive is empty");
        }
        self.finish_dirs()?;
        // One syncfs makes the whole restored tree durable before it is moved into place.
        // SAFETY: plain syscall on a descriptor we own.
        if unsafe { libc::syncfs(self.root.as_raw_fd()) } < 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(())
    }

    fn member<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> anyhow::Result<()> {
        let rel = self.relative(&entry.path_bytes())?;
        let meta = meta_of(entry)?;
        let ty = entry.header().entry_type();
        if ty == EntryType::Directory {
            return self.directory(rel, meta);
        }
        if rel.is_empty() {
            bail!("the top-level member is not a directory");
        }
        let (dir, name) = self.parent(&rel)?;
        self.files += 1;
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        match (ty, link) {
            (EntryType::Link, Some(l)) => return self.hard_link(&l, &dir, &name),
            (EntryType::Symlink, Some(l)) => replace(&dir, &name, |d, n| {
                nix::unistd::symlinkat(OsStr::from_bytes(&l), d, n)
            })?,
            (EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse, _) => {
                self.bytes += write_file(&dir, &name, entry)?;
            }
            (EntryType::Fifo | EntryType::Char | EntryType::Block, _) => {
                special(&dir, &name, entry.header())?
            }
            (other, _) => bail!("unsupported member type {other:?}"),
        }
        apply_meta(&dir, &name, &meta, ty == EntryType::Symlink, self.as_root)?;
        Ok(())
    }

    /// Creates a directory (mode 0700 until `finish_dirs`); the top one exists already.
    fn directory(&mut self, rel: Vec<u8>, meta: Meta) -> anyhow::Result<()> {
        if !rel.is_empty() {
            let (dir, name) = self.parent(&rel)?;
            let mode = Mode::from_bits_truncate(0o700);
            match nix::sys::stat::mkdirat(dir.as_ref(), name.as_os_str(), mode) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.dirs.insert(rel, Some(meta));
        Ok(())
    }

    /// A member name without its top-level directory; refuses absolute names, `..`, and a
    /// second top-level name.
    fn relative(&mut self, path: &[u8]) -> anyhow::Result<Vec<u8>> {
        if path.first() == Some(&b'/') {
            bail!("absolute member names are refused");
        }
        let parts: Vec<&[u8]> = path
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        if parts.iter().any(|c| *c == b"..") {
            bail!("member names with `..` are refused");
        }
        let (first, rest) = parts
            .split_first()
            .ok_or_else(|| anyhow!("empty member name"))?;
        match &self.top {
            None => self.top = Some(first.to_vec()),
            Some(t) if t != first => bail!(
                "the archive has more than one top-level directory ({} and {})",
                lossy(t),
                lossy(first)
            ),
            Some(_) => {}
        }
        Ok(rest.join(&b'/'))
    }

    /// The directory that holds `rel` (created if missing) and the last name of `rel`.
    fn parent(&mut self, rel: &[u8]) -> io::Result<(Rc<OwnedFd>, OsString)> {
        let (dir, name) = match rel.iter().rposition(|b| *b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&b""[..], rel),
        };
        let name = OsString::from_vec(name.to_vec());
        if let Some((p, fd)) = &self.cache {
            if p == dir {
                return Ok((fd.clone(), name));
            }
        }
        let fd = self.dir_at(dir)?;
        self.cache = Some((dir.to_vec(), fd.clone()));
        Ok((fd, name))
    }

    /// Opens the directory at `rel` beneath the root, one name at a time, creating missing
    /// ones (which get mode 0755 in the end unless a member describes them).
    fn dir_at(&mut self, rel: &[u8]) -> io::Result<Rc<OwnedFd>> {
        let mut cur = self.root.clone();
        let mut done = Vec::new();
        for part in rel.split(|b| *b == b'/').filter(|p| !p.is_empty()) {
            if !done.is_empty() {
                done.push(b'/');
            }
            done.extend_from_slice(part);
            let part = OsStr::from_bytes(part);
            let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
            let next = match open_at(cur.as_fd(), part, flags) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    nix::sys::stat::mkdirat(cur.as_ref(), part, Mode::from_bits_truncate(0o700))?;
                    self.dirs.entry(done.clone()).or_insert(None);
                    open_at(cur.as_fd(), part, flags)?
                }
                other => other?,
            };
            cur = Rc::new(next);
        }
        Ok(cur)
    }

    fn hard_link(&mut self, target: &[u8], dir: &OwnedFd, name: &OsStr) -> anyhow::Result<()> {
        let rel = self.relative(target)?;
        if rel.is_empty() {
            bail!("a hard link to the top-level directory");
        }
        let (src_dir, src_name) = self.parent(&rel)?;
        replace(dir, name, |d, n| {
            nix::unistd::linkat(
                src_dir.as_ref(),
                src_name.as_os_str(),
                d,
                n,
                AtFlags::empty(),
            )
        })?;
        Ok(())
    }

    /// Gives directories their attributes, deepest first.
    fn finish_dirs(&mut self) -> anyhow::Result<()> {
        let dirs = std::mem::take(&mut self.dirs);
        for (rel, meta) in dirs.iter().rev() {
            let (dir, name) = match rel.is_empty() {
                true => self.outer.clone(),
                false => self.parent(rel)?,
            };
            let done = match meta {
                Some(m) => apply_meta(&dir, &name, m, false, self.as_root),
                None => nix::sys::stat::fchmodat(
                    dir.as_ref(),
                    name.as_os_str(),
                    Mode::from_bits_truncate(0o755),
                    FchmodatFlags::FollowSymlink,
                )
                .map_err(io::Error::from),
            };
            done.with_context(|| format!("directory {}", lossy(rel)))?;
        }
        Ok(())
    }
}

/// Creates a name with `make`; a name already there (a later member of the same name) is
/// replaced, as tar does.
fn replace(
    dir: &OwnedFd,
    name: &OsStr,
    make: impl Fn(&OwnedFd, &OsStr) -> nix::Result<()>,
) -> io::Result<()> {
    match make(dir, name) {
        Err(Errno::EEXIST) => {
            nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)?;
            Ok(make(dir, name)?)
        }
        other => Ok(other?),
    }
}

/// Writes a regular file's data, leaving all-zero blocks as holes; returns its size.
fn write_file(dir: &OwnedFd, name: &OsStr, data: &mut impl Read) -> io::Result<u64> {
    let flags =
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mode = Mode::from_bits_truncate(0o600);
    let fd = match nix::fcntl::openat(dir, name, flags, mode) {
        Err(Errno::EEXIST) => {
            nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)?;
            nix::fcntl::openat(dir, name, flags, mode)?
        }
        other => other?,
    };
    let mut file = File::from(fd);
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = data.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|b| *b == 0) {
            file.seek(SeekFrom::Current(n as i64))?;
        } else {
            file.write_all(&buf[..n])?;
        }
        size += n as u64;
    }
    file.set_len(size)?;
    Ok(size)
}

fn special(dir: &OwnedFd, name: &OsStr, h: &Header) -> io::Result<()> {
    let kind = match h.entry_type() {
        EntryType::Fifo => SFlag::S_IFIFO,
        EntryType::Char => SFlag::S_IFCHR,
        _ => SFlag::S_IFBLK,
    };
    let rdev = match kind {
        SFlag::S_IFIFO => 0,
        _ => {
            let major = h.device_major()?.unwrap_or(0) as u64;
            let minor = h.device_minor()?.unwrap_or(0) as u64;
            nix::sys::stat::makedev(major, minor)
        }
    };
    let mode = Mode::from_bits_truncate(0o600);
    replace(dir, name, |d, n| {
        nix::sys::stat::mknodat(d, n, kind, mode, rdev)
    })
}

/// A member's attributes: the header, with PAX mtime, atime and xattrs when present.
fn meta_of<R: Read>(entry: &mut tar::Entry<'_, R>) -> anyhow::Result<Meta> {
    let h = entry.header();
    let mut meta = Meta {
        mode: h.mode()? & 0o7777,
        uid: u32::try_from(h.uid()?).context("uid out of range")?,
        gid: u32::try_from(h.gid()?).context("gid out of range")?,
        mtime: (h.mtime()? as i64, 0),
        atime: None,
        xattrs: Vec::new(),
    };
    for rec in entry.pax_extensions()?.into_iter().flatten() {
        let rec = rec?;
        let (key, value) = (rec.key_bytes(), rec.value_bytes());
        match key {
            b"mtime" => meta.mtime = parse_pax_time(value).context("bad PAX mtime")?,
            b"atime" => meta.atime = parse_pax_time(value),
            _ => {
                if let Some(x) = key.strip_prefix(b"SCHILY.xattr.") {
                    meta.xattrs.push((x.to_vec(), value.to_vec()));
                }
            }
        }
    }
    Ok(meta)
}

/// Owner (when root) before mode, so setuid bits survive; xattrs after both (a chown drops
/// file capabilities); times last.
fn apply_meta(
    dir: &OwnedFd,
    name: &OsStr,
    m: &Meta,
    symlink: bool,
    as_root: bool,
) -> io::Result<()> {
    if as_root {
        let (u, g) = (
            nix::unistd::Uid::from_raw(m.uid),
            nix::unistd::Gid::from_raw(m.gid),
        );
        nix::unistd::fchownat(dir, name, Some(u), Some(g), AtFlags::AT_SYMLINK_NOFOLLOW)?;
    }
    if !symlink {
        let mode = Mode::from_bits_truncate(m.mode);
        nix::sys::stat::fchmodat(dir, name, mode, FchmodatFlags::FollowSymlink)?;
    }
    if !m.xattrs.is_empty() {
        let fd = open_at(dir.as_fd(), name, OFlag::O_PATH | OFlag::O_NOFOLLOW)?;
        let p = proc_path(&fd);
        for (k, v) in &m.xattrs {
            set_xattr(&p, k, v).map_err(|e| {
                io::Error::new(e.kind(), format!("setting xattr {}: {e}", lossy(k)))
            })?;
        }
    }
    let ts = |(s, ns): (i64, i64)| TimeSpec::new(s as libc::time_t, ns as libc::c_long);
    let mtime = ts(m.mtime);
    let atime = ts(m.atime.unwrap_or(m.mtime));
    nix::sys::stat::utimensat(dir, name, &atime, &mtime, UtimensatFlags::NoFollowSymlink)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Descriptors and xattrs

/// Opens `name` (a relative path) beneath `dir` without following any symlink or leaving the
/// tree (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), as `backing::real::open_beneath`.
fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlag) -> io::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    Ok(openat2(dir, Path::new(name), how)?)
}

/// `/proc/self/fd/N`: xattr calls through it act on the object the descriptor names, even a
/// symlink opened with `O_PATH|O_NOFOLLOW`.
fn proc_path(fd: &impl AsRawFd) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a number")
}

fn check(r: isize) -> io::Result<usize> {
    match r {
        r if r < 0 => Err(io::Error::last_os_error()),
        r => Ok(r as usize),
    }
}

/// Every xattr of the object `fd` names, in name order.
fn read_xattrs(fd: &OwnedFd) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let p = proc_path(fd);
    let list = call_sized(|buf| {
        // SAFETY: buf is valid for buf.len() bytes; p is NUL-terminated.
        unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
    });
    let list = match list {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(Vec::new()),
        other => other?,
    };
    let mut names: Vec<&[u8]> = list.split(|b| *b == 0).filter(|s| !s.is_empty()).collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let n = CString::new(name).map_err(|_| invalid("NUL in an xattr name".into()))?;
        let value = call_sized(|buf| {
            // SAFETY: buf is valid for buf.len() bytes; p and n are NUL-terminated.
            unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
        });
        match value {
            Ok(v) => out.push((OsString::from_vec(name.to_vec()), v)),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {} // removed meanwhile
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Calls a list/get xattr function with a growing buffer until the result fits.
fn call_sized(mut f: impl FnMut(&mut [u8]) -> isize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match check(f(&mut buf)) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => buf.resize(buf.len() * 8, 0),
            Err(e) => return Err(e),
        }
    }
}

fn set_xattr(p: &CString, name: &[u8], value: &[u8]) -> io::Result<()> {
    let n = CString::new(name).map_err(|_| invalid("NUL in an xattr name".into()))?;
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
    check(r as isize).map(drop)
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// The local time as date(1) formats it: an oracle independent of `stamp`.
    fn date(secs: u64, fmt: &str) -> String {
        let out = std::process::Command::new("date")
            .arg("-d")
            .arg(format!("@{secs}"))
            .arg(format!("+{fmt}"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn touch(p: &Path, len: usize) {
        std::fs::write(p, vec![7u8; len]).unwrap();
    }

    #[test]
    fn name_is_asds_in_local_time() {
        for secs in [0, 1_700_000_000, 1_719_792_000 + 3599, 4_102_444_799] {
            let p = snapshot_path(Path::new("/foo/bar"), at(secs));
            let want = format!(
                "/foo/.bar-backup_asd-crashrecovery-{}.tar.zstd",
                date(secs, "%Y%m%d_%H%M%S")
            );
            assert_eq!(p, PathBuf::from(want));
        }
    }

    #[test]
    fn target_of_inverts_snapshot_path() {
        for t in [
            "/foo/bar",
            "/a/.hidden",
            "/x/we-backup_asd-crashrecovery-ird",
            "rel",
        ] {
            let p = snapshot_path(Path::new(t), at(1_700_000_000));
            assert_eq!(target_of(&p), Some(PathBuf::from(t)), "{}", p.display());
        }
    }

    #[test]
    fn other_names_are_not_snapshots() {
        for n in [
            ".bar-backup_asd-old",
            ".bar-backup_asd",
            "bar-backup_asd-crashrecovery-20240101_120000.tar.zstd",
            ".-backup_asd-crashrecovery-20240101_120000.tar.zstd",
            ".bar-backup_asd-crashrecovery-2024010_1120000.tar.zstd",
            ".bar-backup_asd-crashrecovery-20240101_120000.tar.gz",
            ".bar-backup_asd-crashrecovery-20240101_120000_.tar.zstd",
            "..bar-backup_asd-crashrecovery-20240101_120000.tar.zstd.tmp-12",
        ] {
            assert_eq!(target_of(&Path::new("/x").join(n)), None, "{n}");
        }
    }

    #[test]
    fn same_second_gets_a_suffix_that_sorts_after_and_parses() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("bar");
        let first = snapshot_path(&target, at(1_700_000_000));
        touch(&first, 1);
        let second = snapshot_path(&target, at(1_700_000_000));
        touch(&second, 2);
        let third = snapshot_path(&target, at(1_700_000_000));
        assert_ne!(first, second);
        assert_ne!(second, third);
        assert!(second.file_name() > first.file_name());
        assert!(third.file_name() > second.file_name());
        assert_eq!(target_of(&second), Some(target.clone()));
        let listed: Vec<_> = list(&target).unwrap().into_iter().map(|i| i.path).collect();
        assert_eq!(listed, vec![second, first]);
    }

    #[test]
    fn list_finds_only_this_targets_files_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("bar");
        let (old, new) = (at(1_600_000_000), at(1_700_000_000));
        touch(&snapshot_path(&target, old), 10);
        let newest = snapshot_path(&target, new);
        touch(&newest, 20);
        touch(&snapshot_path(&dir.path().join("barbaz"), new), 1);
        touch(&snapshot_path(&dir.path().join("ba"), new), 1);
        std::fs::create_dir(dir.path().join(".bar-backup_asd-old")).unwrap();
        std::fs::create_dir(snapshot_path(&target, at(1_800_000_000))).unwrap();
        let inner = dir.path().join("sub");
        std::fs::create_dir(&inner).unwrap();
        touch(&snapshot_path(&inner.join("bar"), new), 1);
        let got = list(&target).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].size, 20);
        assert_eq!(got[1].size, 10);
        assert_eq!(got[0].taken, date(1_700_000_000, "%Y-%m-%d %H:%M:%S"));
        assert_eq!(got[0].target, target);
        assert_eq!(got[0].path, newest);
    }

    #[test]
    fn limit_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("bar");
        let paths: Vec<PathBuf> = (0..7)
            .map(|i| {
                let p = snapshot_path(&target, at(1_700_000_000 + i * 86_400));
                touch(&p, 1);
                p
            })
            .collect();
        let mut deleted = enforce_limit(&target, 5).unwrap();
        deleted.sort();
        assert_eq!(deleted, paths[..2].to_vec());
        assert!(paths[2..].iter().all(|p| p.exists()));
        assert!(enforce_limit(&target, 5).unwrap().is_empty());
        assert_eq!(clean(&target).unwrap().len(), 5);
        assert!(list(&target).unwrap().is_empty());
    }

    #[test]
    fn pax_records_count_their_own_length() {
        for vlen in [
            0, 1, 2, 5, 6, 7, 85, 86, 87, 88, 990, 991, 992, 993, 994, 995,
        ] {
            let mut out = Vec::new();
            pax_record(&mut out, b"k", &vec![b'v'; vlen]);
            let (len, _) = std::str::from_utf8(&out).unwrap().split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), out.len(), "value of {vlen}");
            assert!(out.ends_with(b"\n"));
        }
    }

    #[test]
    fn pax_times_round_trip() {
        for (s, ns) in [
            (0, 0),
            (1, 5),
            (1_700_000_000, 123_456_789),
            (-1, 0),
            (-2, 500_000_000),
        ] {
            assert_eq!(parse_pax_time(pax_time(s, ns).as_bytes()), Some((s, ns)));
        }
        assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"12.25"), Some((12, 250_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
    }
}
