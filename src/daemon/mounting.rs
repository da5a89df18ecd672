//! Mounting and unmounting: mount(2) directly as root, `fusermount3` for other users (it
//! hands back the /dev/fuse descriptor over a socket), and reading /proc/self/mountinfo.

use crate::config::Atime;
use crate::fsx::trusted::{TrustedOpen, TrustedPath};
use anyhow::{Context, bail};
use nix::mount::MsFlags;
use std::ffi::OsString;
use std::fs::File;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The filesystem type asdfs mounts show in /proc/mounts.
pub const FSTYPE: &str = "fuse.asdfs";
/// The source name of asdfs's overlay mounts (their type is `overlay`).
pub const OVERLAY_SOURCE: &str = "asdfs";

/// One line of /proc/self/mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount's id (statx's `stx_mnt_id`).
    pub id: u64,
    pub mount_point: PathBuf,
    /// The filesystem's device, `major:minor`.
    pub dev: String,
    pub fstype: String,
    pub source: String,
    pub options: String,
    /// The filesystem's own options (overlayfs: its layers), escaped as in mountinfo.
    pub super_options: String,
}

impl MountEntry {
    /// An asdfs mount, in either mode.
    pub fn is_asdfs(&self) -> bool {
        self.fstype == FSTYPE || (self.fstype == "overlay" && self.source == OVERLAY_SOURCE)
    }

    /// A FUSE filesystem: a process answers every request on it (or never does).
    pub fn is_fuse(&self) -> bool {
        let t = self.fstype.as_str();
        t == "fuse" || t == "fuseblk" || t.starts_with("fuse.") || t.starts_with("fuseblk.")
    }

    /// Who mounted a FUSE filesystem: `user_id=` of its super options.
    pub fn fuse_owner(&self) -> Option<u32> {
        self.super_options
            .split(',')
            .find_map(|o| o.strip_prefix("user_id="))
            .and_then(|v| v.parse().ok())
    }

    /// The mount in one line: its mount point, type, source and (FUSE) owner.
    pub fn describe(&self) -> String {
        let owner = self
            .fuse_owner()
            .map(|u| format!(", mounted by uid {u}"))
            .unwrap_or_default();
        format!(
            "{} ({}, source {}{owner})",
            self.mount_point.display(),
            self.fstype,
            self.source
        )
    }
}

/// `path` made absolute without asking any filesystem: `.` and `..` resolved by name.
pub fn lexical_absolute(path: &Path) -> anyhow::Result<PathBuf> {
    let mut out = PathBuf::from("/");
    for c in std::path::absolute(path)?.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    Ok(out)
}

/// A FUSE mount whose process could stop answering the caller on `path`'s way: on it, on a
/// directory above it, or below it; from the mount table alone, before the path is touched
/// (docs/security.md R7). Only the caller's own asdfs mounts pass (their daemons are the
/// caller's; the overlap checks deal with them), and for a user her own FUSE mounts. Root
/// takes no other FUSE mount as its own, not even one that says root mounted it.
pub fn foreign_fuse_on(path: &Path) -> anyhow::Result<Option<MountEntry>> {
    Ok(foreign_fuse_among(&mounts()?, path)?.cloned())
}

/// `foreign_fuse_on` in a mount table read once (many targets).
pub fn foreign_fuse_among<'a>(
    mounts: &'a [MountEntry],
    path: &Path,
) -> anyhow::Result<Option<&'a MountEntry>> {
    let abs = lexical_absolute(path)?;
    let me = nix::unistd::geteuid().as_raw();
    let own = |m: &MountEntry| m.fuse_owner() == Some(me) && (me != 0 || m.fstype == FSTYPE);
    Ok(mounts.iter().find(|m| {
        m.is_fuse()
            && !own(m)
            && (abs.starts_with(&m.mount_point) || m.mount_point.starts_with(&abs))
    }))
}

/// Refuses `path` (one line) if a FUSE mount another user controls is on its way.
pub fn refuse_foreign_fuse(path: &Path) -> anyhow::Result<()> {
    refuse_foreign_fuse_among(&mounts()?, path)
}

/// `refuse_foreign_fuse` in a mount table read once (many targets).
pub fn refuse_foreign_fuse_among(mounts: &[MountEntry], path: &Path) -> anyhow::Result<()> {
    if let Some(m) = foreign_fuse_among(mounts, path)? {
        let abs = lexical_absolute(path)?;
        let place = if m.mount_point == abs {
            "on it"
        } else if abs.starts_with(&m.mount_point) {
            "above it"
        } else {
            "inside it"
        };
        bail!(
            "{}: a FUSE filesystem is mounted {place}: {}; its process could leave asdfs waiting for ever, so the target is refused (unmount it first)",
            path.display(),
            m.describe()
        );
    }
    Ok(())
}

/// The mount table of this mount namespace.
pub fn mounts() -> anyhow::Result<Vec<MountEntry>> {
    let text = crate::fsx::trusted::read("/proc/self/mountinfo")
        .context("reading /proc/self/mountinfo")?;
    Ok(text
        .split(|b| *b == b'\n')
        .filter_map(parse_mountinfo_line)
        .collect())
}

fn parse_mountinfo_line(line: &[u8]) -> Option<MountEntry> {
    let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    let sep = fields.iter().position(|f| *f == b"-")?;
    Some(MountEntry {
        id: std::str::from_utf8(fields.first()?).ok()?.parse().ok()?,
        mount_point: PathBuf::from(OsString::from_vec(unescape(fields.get(4)?))),
        dev: String::from_utf8_lossy(fields.get(2)?).into_owned(),
        options: String::from_utf8_lossy(fields.get(5)?).into_owned(),
        fstype: String::from_utf8_lossy(fields.get(sep + 1)?).into_owned(),
        source: String::from_utf8_lossy(&unescape(fields.get(sep + 2)?)).into_owned(),
        super_options: String::from_utf8_lossy(fields.get(sep + 3).copied().unwrap_or_default())
            .into_owned(),
    })
}

/// mountinfo writes space, tab, newline and backslash as `\NNN` (octal).
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 4 <= s.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&s[i + 1..i + 4]).unwrap_or("x"), 8)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// The asdfs mounts of this namespace (the last mount of a path is the visible one).
pub fn asdfs_mounts() -> anyhow::Result<Vec<MountEntry>> {
    Ok(mounts()?.into_iter().filter(MountEntry::is_asdfs).collect())
}

/// The mount whose mount point is exactly `path`, if any (the top one).
pub fn mount_at(path: &Path) -> anyhow::Result<Option<MountEntry>> {
    Ok(mounts()?.into_iter().rev().find(|m| m.mount_point == path))
}

/// Mount flags of the filesystem that holds `path`, to carry over to the mount on top.
fn flags_of_fs_holding(path: &Path) -> MsFlags {
    let all = mounts().unwrap_or_default();
    let best = all
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len());
    let mut flags = MsFlags::empty();
    if let Some(m) = best {
        for o in m.options.split(',') {
            match o {
                "nosuid" => flags |= MsFlags::MS_NOSUID,
                "nodev" => flags |= MsFlags::MS_NODEV,
                "noexec" => flags |= MsFlags::MS_NOEXEC,
                _ => {}
            }
        }
    }
    flags
}

/// A FUSE mount made by `mount_fuse`: the /dev/fuse descriptor, and (as root) the id of the
/// mount, by which `unmount_checked` knows it is unmounting this mount and nothing a user
/// put in its place.
pub struct FuseMount {
    pub dev: File,
    pub mount_id: Option<u64>,
}

/// Mounts a FUSE filesystem on the directory `dir` (the target, opened and checked; `target`
/// is its path, for mountinfo and messages). `root_mode` is the mode of the target directory
/// (with S_IFDIR); `atime` is shown as the mount's flag (the daemon itself keeps access
/// times, FUSE inodes never do). As root the mount goes on the descriptor itself
/// (docs/security.md R1): a path another user swapped meanwhile is never followed.
pub fn mount_fuse(
    target: &Path,
    dir: BorrowedFd<'_>,
    root_mode: u32,
    atime: Atime,
) -> anyhow::Result<FuseMount> {
    if nix::unistd::geteuid().is_root() {
        let (dev, mount) = mount_as_root(target, dir, root_mode, atime)?;
        // Not kept open: holding the mount would make an unmount by someone else (umount(8))
        // fail as busy.
        Ok(FuseMount {
            dev,
            mount_id: mount_id_of_fd(&mount),
        })
    } else {
        Ok(FuseMount {
            dev: mount_with_fusermount(target, atime)?,
            mount_id: None,
        })
    }
}

fn atime_name(atime: Atime) -> &'static str {
    match atime {
        Atime::Noatime => "noatime",
        Atime::Relatime => "relatime",
    }
}

fn mount_as_root(
    target: &Path,
    dir: BorrowedFd<'_>,
    root_mode: u32,
    atime: Atime,
) -> anyhow::Result<(File, OwnedFd)> {
    use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags};
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .trusted_open("/dev/fuse")
        .context("opening /dev/fuse")?;
    let fail = |what: &str, e: rustix::io::Errno| {
        anyhow::anyhow!(
            "mounting FUSE on {}: {what}: {}",
            target.display(),
            std::io::Error::from(e)
        )
    };
    let fs = rustix::mount::fsopen("fuse", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| fail("fsopen", e))?;
    let source = target.as_os_str().as_bytes().to_vec();
    let strings: [(&str, Vec<u8>); 6] = [
        ("source", source),
        ("subtype", b"asdfs".to_vec()),
        ("fd", dev.as_raw_fd().to_string().into_bytes()),
        ("rootmode", format!("{root_mode:o}").into_bytes()),
        ("user_id", b"0".to_vec()),
        ("group_id", b"0".to_vec()),
    ];
    for (key, value) in strings {
        rustix::mount::fsconfig_set_string(&fs, key, value.as_slice()).map_err(|e| fail(key, e))?;
    }
    for flag in ["default_permissions", "allow_other"] {
        rustix::mount::fsconfig_set_flag(&fs, flag).map_err(|e| fail(flag, e))?;
    }
    rustix::mount::fsconfig_create(&fs).map_err(|e| fail("creating the filesystem", e))?;
    let holding = flags_of_fs_holding(target);
    let mut attrs = match atime {
        Atime::Noatime => MountAttrFlags::MOUNT_ATTR_NOATIME,
        Atime::Relatime => MountAttrFlags::MOUNT_ATTR_RELATIME,
    };
    for (ms, attr) in [
        (MsFlags::MS_NOSUID, MountAttrFlags::MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, MountAttrFlags::MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, MountAttrFlags::MOUNT_ATTR_NOEXEC),
    ] {
        if holding.contains(ms) {
            attrs |= attr;
        }
    }
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| fail("fsmount", e))?;
    rustix::mount::move_mount(
        &mnt,
        "",
        dir,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| fail("attaching", e))?;
    Ok((dev, mnt))
}

fn fusermount() -> &'static str {
    [
        "/usr/bin/fusermount3",
        "/bin/fusermount3",
        "/usr/local/bin/fusermount3",
    ]
    .into_iter()
    .find(|p| Path::new(p).trusted_exists())
    .unwrap_or("fusermount3")
}

fn mount_with_fusermount(target: &Path, atime: Atime) -> anyhow::Result<File> {
    let (ours, theirs) = UnixStream::pair()?;
    let their_fd = theirs.as_raw_fd();
    let fsname = target.to_string_lossy().replace(',', "_");
    let mut cmd = Command::new(fusermount());
    cmd.arg("-o")
        .arg(format!(
            "default_permissions,subtype=asdfs,fsname={fsname},{},nosuid,nodev",
            atime_name(atime)
        ))
        .arg("--")
        .arg(target)
        .env("_FUSE_COMMFD", their_fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls (fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(their_fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(their_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .context("running fusermount3 (install the fuse3 package)")?;
    drop(theirs);
    let received = receive_fd(&ours);
    let out = child.wait_with_output()?;
    match received {
        Ok(fd) if out.status.success() => Ok(File::from(fd)),
        _ => {
            let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
            // Users mount through /dev/fuse: most distributions make it 0666; some 0600.
            let hint = if said.contains("/dev/fuse") && said.contains("Permission denied") {
                " (users need read and write access to /dev/fuse: ask the administrator for \
                 `chmod 0666 /dev/fuse`, which most distributions set, or mount as root)"
            } else {
                ""
            };
            bail!("fusermount3 failed: {said}{hint}")
        }
    }
}

fn receive_fd(sock: &UnixStream) -> anyhow::Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut buf = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!(RawFd);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just gave us this descriptor; we own it now.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    bail!("fusermount3 sent no descriptor")
}

/// The mount id of a descriptor, from /proc/self/fdinfo: no request reaches the filesystem
/// (a FUSE mount whose session is not running yet would never answer a stat).
pub(crate) fn mount_id_of_fd(fd: &OwnedFd) -> Option<u64> {
    let info = crate::fsx::trusted::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Detaches the asdfs FUSE mounts on `target` whose daemon is gone (a killed daemon's), top
/// first, and stops at anything else. The target is resolved with no symlink anywhere
/// (`Dir::open_strict` on its directory, its name not followed), the mount found there is
/// checked on that descriptor (its id is a `fuse.asdfs` mount's, and a stat forced to reach
/// the daemon fails with ENOTCONN/ECONNABORTED), and it is unmounted through the same
/// descriptor: a user who renames a directory on the way cannot make root unmount another
/// user's live mount. A live asdfs mount there is an error.
pub fn clear_dead_fuse_mounts(target: &Path) -> anyhow::Result<()> {
    use nix::fcntl::OFlag;
    let parent = crate::fsx::Dir::open_strict(target.parent().unwrap_or(Path::new("/")))?;
    let name = target.file_name().unwrap_or_default();
    loop {
        let top = nix::fcntl::openat(
            parent.fd(),
            name,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .with_context(|| format!("opening {}", target.display()))?;
        let id = mount_id_of_fd(&top);
        if id.is_none() || id == mount_id_of_fd(parent.fd()) {
            return Ok(()); // not a mount point
        }
        let here = mounts()?.into_iter().find(|m| Some(m.id) == id);
        if here.is_none_or(|m| m.fstype != FSTYPE) {
            return Ok(());
        }
        let forced = rustix::fs::statx(
            &top,
            "",
            rustix::fs::AtFlags::EMPTY_PATH | rustix::fs::AtFlags::STATX_FORCE_SYNC,
            rustix::fs::StatxFlags::BASIC_STATS,
        );
        match forced {
            Err(rustix::io::Errno::NOTCONN | rustix::io::Errno::CONNABORTED) => {}
            _ => bail!(
                "{}: mounted by an asdfs daemon that is running; not unmounted",
                target.display()
            ),
        }
        tracing::warn!(target = %target.display(), "removing the mount of a daemon that died");
        let at = format!("/proc/self/fd/{}", top.as_raw_fd());
        nix::mount::umount2(at.as_str(), nix::mount::MntFlags::MNT_DETACH)
            .with_context(|| format!("unmounting {}", target.display()))?;
    }
}

/// Detaches (lazily: files still open keep working) the mount with id `mount_id` on the
/// directory `name` of `parent`, a descriptor held since the start: the target's path, in
/// a directory another user controls, is not resolved again, the name is not followed, and
/// a mount found there that is not this one is left alone with an error.
pub fn unmount_checked(
    parent: &crate::fsx::Dir,
    name: &std::ffi::OsStr,
    mount_id: u64,
    target: &Path,
) -> anyhow::Result<()> {
    use nix::fcntl::OFlag;
    let top = nix::fcntl::openat(
        parent.fd(),
        name,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("unmounting {}", target.display()))?;
    match mount_id_of_fd(&top) {
        Some(id) if id == mount_id => {}
        _ => bail!(
            "unmounting {}: the mount there is not asdfs's any more (moved or covered); nothing was unmounted",
            target.display()
        ),
    }
    let at = format!("/proc/self/fd/{}", top.as_raw_fd());
    nix::mount::umount2(at.as_str(), nix::mount::MntFlags::MNT_DETACH)
        .with_context(|| format!("unmounting {}", target.display()))
}

/// Detaches the mount on `target` (lazily: files still open keep working). The last
/// component is never followed (a symlink put in the mount's place is not a way to
/// unmount something else).
pub fn unmount(target: &Path) -> anyhow::Result<()> {
    if nix::unistd::geteuid().is_root() {
        nix::mount::umount2(
            target,
            nix::mount::MntFlags::MNT_DETACH | nix::mount::MntFlags::UMOUNT_NOFOLLOW,
        )
        .with_context(|| format!("unmounting {}", target.display()))?;
        return Ok(());
    }
    let out = Command::new(fusermount())
        .arg("-u")
        .arg("-z")
        .arg("--")
        .arg(target)
        .output()?;
    if !out.status.success() {
        bail!(
            "fusermount3 -u {}: {}",
            target.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The FUSE connection number of the mount on `path` (its device as the kernel numbers it,
/// the name of its directory under /sys/fs/fuse/connections).
pub fn fuse_connection(path: &Path) -> Option<u64> {
    let m = mount_at(path).ok()??;
    let (major, minor) = m.dev.split_once(':')?;
    Some((major.parse::<u64>().ok()? << 20) | minor.parse::<u64>().ok()?)
}

/// Where systemd mounts the fusectl filesystem.
const FUSECTL: &str = "/sys/fs/fuse/connections";
const FUSECTL_SUPER_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x6573_5543);

/// Aborts a FUSE connection: every request of programs then fails with ENOTCONN and the
/// session ends. Through the fusectl filesystem on /sys/fs/fuse/connections where systemd
/// mounted it; elsewhere (no systemd, a container's /sys) through fusectl mounted for a
/// moment on a fresh directory in `scratch` (the target's store), so that nothing is left
/// mounted on the machine. Its error is one line.
pub fn abort_connection(conn: u64, scratch: &Path) -> anyhow::Result<()> {
    let root = Path::new(FUSECTL);
    if root.join(conn.to_string()).trusted_exists() || is_fusectl(root) {
        return write_abort(root, conn);
    }
    abort_through_private_fusectl(conn, scratch)
        .map_err(|e| anyhow::anyhow!("aborting FUSE connection {conn}: {e}"))
}

fn is_fusectl(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir).is_ok_and(|s| s.filesystem_type() == FUSECTL_SUPER_MAGIC)
}

fn write_abort(fusectl: &Path, conn: u64) -> anyhow::Result<()> {
    let file = fusectl.join(conn.to_string()).join("abort");
    crate::fsx::trusted::write(&file, b"1")
        .map_err(|e| anyhow::anyhow!("aborting FUSE connection {conn}: {}: {e}", file.display()))
}

/// fusectl mounted on `<scratch>/fusectl` for one write, then detached and the directory
/// removed. The error names what failed (for `abort_connection`'s line).
fn abort_through_private_fusectl(conn: u64, scratch: &Path) -> anyhow::Result<()> {
    let dir = scratch.join("fusectl");
    match crate::fsx::trusted::create_dir(&dir) {
        Ok(()) => {}
        // Left by an attempt that did not finish: mount over it, remove it after.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => bail!("creating {}: {e}", dir.display()),
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let result =
        match nix::mount::mount(Some("fusectl"), &dir, Some("fusectl"), flags, None::<&str>) {
            Ok(()) => {
                let file = dir.join(conn.to_string()).join("abort");
                let written = crate::fsx::trusted::write(&file, b"1")
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", file.display()));
                let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
                written
            }
            Err(e) => Err(anyhow::anyhow!(
                "mounting fusectl on {}: {e}",
                dir.display()
            )),
        };
    let _ = crate::fsx::trusted::remove_dir(&dir);
    result
}

/// True if `path` is a mount point whose FUSE daemon is gone ("Transport endpoint is not
/// connected").
pub fn is_dead_fuse_mount(path: &Path) -> bool {
    matches!(crate::fsx::trusted::metadata(path), Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED)))
}

/// For tests and messages: the bytes of a path.
pub fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests set up files as a user would
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_escapes() {
        let line = b"36 35 98:0 / /mnt/with\\040space rw,noatime master:1 - fuse.asdfs /src\\040x rw,user_id=0";
        let m = parse_mountinfo_line(line).unwrap();
        assert_eq!(m.dev, "98:0");
        assert_eq!(m.mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m.fstype, "fuse.asdfs");
        assert_eq!(m.source, "/src x");
        assert_eq!(m.options, "rw,noatime");
        assert!(parse_mountinfo_line(b"garbage").is_none());
    }

    /// Where fusectl is not on /sys/fs/fuse/connections, a connection is aborted through a
    /// private fusectl that is gone afterwards. In a mount namespace of its own thread, so
    /// the host's mounts are never touched: /sys/fs/fuse covered there, and a FUSE
    /// connection made for the test that no daemon answers.
    #[test]
    fn abort_falls_back_to_a_private_fusectl() {
        if !nix::unistd::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
            eprintln!("skipping: needs root and /dev/fuse");
            return;
        }
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().to_path_buf();
        std::thread::spawn(move || abort_in_own_namespace(&dir))
            .join()
            .unwrap();
    }

    fn abort_in_own_namespace(scratch: &Path) {
        use nix::mount::{MntFlags, mount, umount2};
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        // SAFETY: unshare only changes this thread's mount namespace (and its fs_struct).
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNS) }, 0, "unshare");
        let none = None::<&str>;
        mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).unwrap();
        if Path::new("/sys/fs/fuse").is_dir() {
            mount(
                Some("tmpfs"),
                "/sys/fs/fuse",
                Some("tmpfs"),
                MsFlags::empty(),
                none,
            )
            .unwrap();
        }
        let mnt = scratch.join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/fuse")
            .unwrap();
        let data = format!("fd={},rootmode=40000,user_id=0,group_id=0", dev.as_raw_fd());
        mount(
            Some("test"),
            &mnt,
            Some("fuse"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .unwrap();
        let own_mounts = || -> Vec<MountEntry> {
            std::fs::read("/proc/thread-self/mountinfo")
                .unwrap()
                .split(|b| *b == b'\n')
                .filter_map(parse_mountinfo_line)
                .collect()
        };
        let m = own_mounts()
            .into_iter()
            .find(|m| m.mount_point == mnt)
            .expect("the test's FUSE mount");
        let (major, minor) = m.dev.split_once(':').unwrap();
        let conn = (major.parse::<u64>().unwrap() << 20) | minor.parse::<u64>().unwrap();

        abort_connection(conn, scratch).unwrap();
        // Aborted: the INIT request waiting in the queue is gone, reads fail.
        let mut buf = vec![0u8; 1 << 17];
        let err = (&dev).read(&mut buf).unwrap_err();
        assert!(
            matches!(err.raw_os_error(), Some(libc::ENODEV | libc::ECONNABORTED)),
            "{err}"
        );
        assert!(
            !scratch.join("fusectl").exists(),
            "the private mount point is removed"
        );
        assert!(
            !own_mounts()
                .iter()
                .any(|m| m.mount_point.starts_with(scratch) && m.fstype == "fusectl"),
            "no fusectl mount is left"
        );
        assert!(
            !is_fusectl(Path::new(FUSECTL)),
            "nothing is mounted on {FUSECTL}"
        );
        // A connection that does not exist: one line naming what failed.
        let e = abort_connection(u64::from(u32::MAX), scratch).unwrap_err();
        let line = format!("{e:#}");
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with("aborting FUSE connection 4294967295: writing "),
            "{line}"
        );
        assert!(line.contains("4294967295/abort"), "{line}");
        assert!(!scratch.join("fusectl").exists());
        umount2(&mnt, MntFlags::MNT_DETACH).unwrap();
    }
}
