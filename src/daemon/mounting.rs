//! Mounting and unmounting: mount(2) directly as root, `fusermount3` for other users (it
//! hands back the /dev/fuse descriptor over a socket), and reading /proc/self/mountinfo.

use anyhow::{Context, bail};
use nix::mount::MsFlags;
use std::ffi::OsString;
use std::fs::File;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The filesystem type asdfs mounts show in /proc/mounts.
pub const FSTYPE: &str = "fuse.asdfs";

/// One line of /proc/self/mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    /// The filesystem's device, `major:minor`.
    pub dev: String,
    pub fstype: String,
    pub source: String,
    pub options: String,
}

/// The mount table of this mount namespace.
pub fn mounts() -> anyhow::Result<Vec<MountEntry>> {
    let text = std::fs::read("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(text
        .split(|b| *b == b'\n')
        .filter_map(parse_mountinfo_line)
        .collect())
}

fn parse_mountinfo_line(line: &[u8]) -> Option<MountEntry> {
    let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    let sep = fields.iter().position(|f| *f == b"-")?;
    Some(MountEntry {
        mount_point: PathBuf::from(OsString::from_vec(unescape(fields.get(4)?))),
        dev: String::from_utf8_lossy(fields.get(2)?).into_owned(),
        options: String::from_utf8_lossy(fields.get(5)?).into_owned(),
        fstype: String::from_utf8_lossy(fields.get(sep + 1)?).into_owned(),
        source: String::from_utf8_lossy(&unescape(fields.get(sep + 2)?)).into_owned(),
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
    Ok(mounts()?
        .into_iter()
        .filter(|m| m.fstype == FSTYPE)
        .collect())
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

/// Mounts a FUSE filesystem on `target` and returns the /dev/fuse descriptor.
/// `root_mode` is the mode of the target directory (with S_IFDIR).
pub fn mount_fuse(target: &Path, root_mode: u32) -> anyhow::Result<File> {
    if nix::unistd::geteuid().is_root() {
        mount_as_root(target, root_mode)
    } else {
        mount_with_fusermount(target)
    }
}

fn mount_as_root(target: &Path, root_mode: u32) -> anyhow::Result<File> {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .context("opening /dev/fuse")?;
    let data = format!(
        "fd={},rootmode={:o},user_id=0,group_id=0,default_permissions,allow_other",
        dev.as_raw_fd(),
        root_mode
    );
    let flags = flags_of_fs_holding(target) | MsFlags::MS_NOATIME;
    nix::mount::mount(
        Some(target.as_os_str()),
        target,
        Some(FSTYPE),
        flags,
        Some(data.as_str()),
    )
    .with_context(|| format!("mounting FUSE on {}", target.display()))?;
    Ok(dev)
}

fn fusermount() -> &'static str {
    [
        "/usr/bin/fusermount3",
        "/bin/fusermount3",
        "/usr/local/bin/fusermount3",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .unwrap_or("fusermount3")
}

fn mount_with_fusermount(target: &Path) -> anyhow::Result<File> {
    let (ours, theirs) = UnixStream::pair()?;
    let their_fd = theirs.as_raw_fd();
    let fsname = target.to_string_lossy().replace(',', "_");
    let mut cmd = Command::new(fusermount());
    cmd.arg("-o")
        .arg(format!(
            "default_permissions,subtype=asdfs,fsname={fsname},noatime,nosuid,nodev"
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
        _ => bail!(
            "fusermount3 failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
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

/// Detaches the mount on `target` (lazily: files still open keep working).
pub fn unmount(target: &Path) -> anyhow::Result<()> {
    if nix::unistd::geteuid().is_root() {
        nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH)
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

/// Aborts a FUSE connection: every request of programs then fails with ENOTCONN and the
/// session ends. Mounts the fusectl filesystem first if it is not there (as systemd does).
pub fn abort_connection(conn: u64) -> anyhow::Result<()> {
    let root = Path::new("/sys/fs/fuse/connections");
    let dir = root.join(conn.to_string());
    if !dir.exists() {
        nix::mount::mount(
            Some("fusectl"),
            root,
            Some("fusectl"),
            MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| format!("mounting fusectl on {}", root.display()))?;
    }
    std::fs::write(dir.join("abort"), b"1")
        .with_context(|| format!("aborting FUSE connection {conn}"))
}

/// True if `path` is a mount point whose FUSE daemon is gone ("Transport endpoint is not
/// connected").
pub fn is_dead_fuse_mount(path: &Path) -> bool {
    matches!(std::fs::metadata(path), Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED)))
}

/// For tests and messages: the bytes of a path.
pub fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

#[cfg(test)]
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
}
