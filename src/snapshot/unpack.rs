//! Unpacking archive members beneath a fresh temporary directory: names checked to stay
//! inside it (no absolute names, no `..`, one top-level directory, no member through or over
//! a symlink an earlier member made), each object created without following a symlink, and
//! its attributes applied to the object itself through a descriptor opened without following
//! (directories' last, deepest first). An archive is not trusted: device nodes are skipped and
//! setuid/setgid bits dropped, each with a warning; owners are applied only as `Owners` says.

use super::fs::{invalid, lossy, open_at};
use super::pax::{Meta, meta_of};
use crate::backing::{chmod_fd, proc_path, set_xattr, times_fd};
use crate::store::types::Ts;
use anyhow::{Context, anyhow, bail};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::rc::Rc;
use tar::{EntryType, Header};

/// Who the restored objects belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Owners {
    /// As archived (root restoring an archive root owns).
    Archived,
    /// Everything to this uid and gid (root restoring an archive its target's owner owns).
    All(u32, u32),
    /// Whoever restores (not root: chown is not possible anyway).
    Restorer,
}

/// How far an archive is trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Trust {
    pub owners: Owners,
    /// Device nodes and setuid/setgid bits as archived (only for `Owners::Archived`).
    pub keep_special: bool,
}

/// Unpacks archive members beneath a temporary directory.
pub(super) struct Unpacker {
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
    trust: Trust,
    files: u64,
    bytes: u64,
}

impl Unpacker {
    pub(super) fn new(outer: Rc<OwnedFd>, name: OsString, trust: Trust) -> io::Result<Unpacker> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
        let root = Rc::new(open_at(outer.as_fd(), &name, flags)?);
        Ok(Unpacker {
            outer: (outer, name),
            root,
            top: None,
            dirs: BTreeMap::new(),
            cache: None,
            trust,
            files: 0,
            bytes: 0,
        })
    }

    /// Members restored other than directories, and bytes of regular file data.
    pub(super) fn counts(&self) -> (u64, u64) {
        (self.files, self.bytes)
    }

    pub(super) fn unpack(&mut self, compressed: impl Read) -> anyhow::Result<()> {
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
        if matches!(ty, EntryType::Char | EntryType::Block) && !self.trust.keep_special {
            tracing::warn!(
                "skipped device node {} (an archive may not create devices)",
                lossy(&entry.path_bytes())
            );
            return Ok(());
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
        let expect = match ty {
            EntryType::Symlink => libc::S_IFLNK,
            EntryType::Fifo => libc::S_IFIFO,
            EntryType::Char => libc::S_IFCHR,
            EntryType::Block => libc::S_IFBLK,
            _ => libc::S_IFREG,
        };
        let path = entry.path_bytes();
        apply_meta(&dir, &name, &meta, expect, self.trust, &path)?;
        Ok(())
    }

    /// Creates a directory (mode 0700 until `finish_dirs`); the top one exists already.
    fn directory(&mut self, rel: Vec<u8>, meta: Meta) -> anyhow::Result<()> {
        if !rel.is_empty() {
            let (dir, name) = self.parent(&rel)?;
            let mode = Mode::from_bits_truncate(0o700);
            match nix::sys::stat::mkdirat(dir.as_ref(), name.as_os_str(), mode) {
                Ok(()) => {}
                // A directory an earlier member made is fine; anything else (a symlink) is
                // refused, never followed when the directory's attributes are applied.
                Err(Errno::EEXIST) => {
                    open_at(dir.as_fd(), &name, OFlag::O_PATH | OFlag::O_DIRECTORY)
                        .map_err(through_symlink)?;
                }
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
                other => other.map_err(through_symlink)?,
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
                Some(m) => apply_meta(&dir, &name, m, libc::S_IFDIR, self.trust, rel),
                None => object(&dir, &name, libc::S_IFDIR, rel).and_then(|fd| chmod_fd(&fd, 0o755)),
            };
            done.with_context(|| format!("directory {}", lossy(rel)))?;
        }
        Ok(())
    }
}

/// Creates a name with `make`; a name already there (a later member of the same name) is
/// replaced, as tar does.
fn replace<T>(
    dir: &OwnedFd,
    name: &OsStr,
    make: impl Fn(&OwnedFd, &OsStr) -> nix::Result<T>,
) -> io::Result<T> {
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
    let fd = replace(dir, name, |d, n| nix::fcntl::openat(d, n, flags, mode))?;
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

/// A fifo, or a device node (only from a trusted archive, see `member`).
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

/// A lookup that refused a symlink (or found a file), said in the archive's terms.
fn through_symlink(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ELOOP | libc::ENOTDIR) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{e}: a symlink or file an earlier member made is never gone through; refused"),
        ),
        _ => e,
    }
}

/// The object `name` in `dir` itself (`O_PATH`, not following), checked to be of type `expect`
/// (`S_IF*`): the descriptor every attribute call then acts on.
fn object(dir: &OwnedFd, name: &OsStr, expect: u32, member: &[u8]) -> io::Result<OwnedFd> {
    let fd = open_at(dir.as_fd(), name, OFlag::O_PATH | OFlag::O_NOFOLLOW)?;
    if nix::sys::stat::fstat(&fd)?.st_mode & libc::S_IFMT != expect {
        return Err(invalid(format!(
            "{} is not of the kind its member says (replaced meanwhile?); refused",
            lossy(member)
        )));
    }
    Ok(fd)
}

/// On the object itself: owner (as `owners` says) before mode, so a chown cannot drop bits;
/// xattrs after both (a chown drops file capabilities); times last. Setuid and setgid bits are
/// dropped with a warning: an archive beside the target may have been written by anyone who
/// can write there.
fn apply_meta(
    dir: &OwnedFd,
    name: &OsStr,
    m: &Meta,
    expect: u32,
    trust: Trust,
    member: &[u8],
) -> io::Result<()> {
    let fd = object(dir, name, expect, member)?;
    let owner = match trust.owners {
        Owners::Archived => Some((m.uid, m.gid)),
        Owners::All(u, g) => Some((u, g)),
        Owners::Restorer => None,
    };
    if let Some((u, g)) = owner {
        let (u, g) = (nix::unistd::Uid::from_raw(u), nix::unistd::Gid::from_raw(g));
        nix::unistd::fchownat(&fd, "", Some(u), Some(g), AtFlags::AT_EMPTY_PATH)?;
    }
    if expect != libc::S_IFLNK {
        let keep = if trust.keep_special { 0o7777 } else { 0o1777 };
        if m.mode & 0o6000 & !keep != 0 {
            tracing::warn!(
                "{}: setuid/setgid bits dropped (mode {:o} restored as {:o})",
                lossy(member),
                m.mode & 0o7777,
                m.mode & 0o1777
            );
        }
        chmod_fd(&fd, m.mode & keep)?;
    }
    if !m.xattrs.is_empty() {
        apply_xattrs(&fd, &m.xattrs, trust.keep_special, member)?;
    }
    let ts = |(sec, nsec): (i64, i64)| Ts {
        sec,
        nsec: nsec as u32,
    };
    times_fd(&fd, ts(m.atime.unwrap_or(m.mtime)), ts(m.mtime))
}

/// Whether an archived xattr may be set by an untrusted archive: `user.*` and POSIX ACLs
/// only. `security.*` (file capabilities, SELinux labels) and `trusted.*` (overlayfs
/// whiteouts and opaque markers) give privileges or change what the kernel does; they are
/// kept only with `keep_special` (root restoring root's archive).
pub(super) fn xattr_allowed(name: &[u8], keep_special: bool) -> bool {
    keep_special
        || name.starts_with(b"user.")
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
}

/// Sets the archived xattrs on the object `fd` names (a symlink too), through its proc path
/// (a magic link to that object, not a name looked up again); those `xattr_allowed` refuses
/// are dropped with a warning.
fn apply_xattrs(
    fd: &OwnedFd,
    xattrs: &[(Vec<u8>, Vec<u8>)],
    keep_special: bool,
    member: &[u8],
) -> io::Result<()> {
    let p = proc_path(fd);
    for (k, v) in xattrs {
        if !xattr_allowed(k, keep_special) {
            tracing::warn!(
                "{}: xattr {} dropped (an archive may set only user.* xattrs and ACLs)",
                lossy(member),
                lossy(k)
            );
            continue;
        }
        // An archived name with a NUL is this archive's error (InvalidData), not a bad
        // argument as `backing::set_xattr` would report it.
        let set = match k.contains(&0) {
            true => Err(invalid("NUL in an xattr name".into())),
            false => set_xattr(&p, OsStr::from_bytes(k), v),
        };
        set.map_err(|e| io::Error::new(e.kind(), format!("setting xattr {}: {e}", lossy(k))))?;
    }
    Ok(())
}
