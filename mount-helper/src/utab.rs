//! The entry in libmount's utab (`/run/mount/utab`) that makes umount(8) call
//! umount.fuse.asdfs. umount(8) looks for `/sbin/umount.<type>` with the type statfs(2)
//! reports ("fuse", not "fuse.asdfs") unless the target has a utab entry: then it reads
//! mountinfo (type fuse.asdfs) and the entry's `helper=fuse.asdfs` names the helper, in
//! overlay mode too. umount(8) removes the entry once the helper succeeded.
//!
//! Written as libmount writes it: under an flock of `utab.lock`, a new file renamed over
//! the old one, lines `SRC=… TARGET=… ROOT=… OPTS=…` with mountinfo's escapes.
//!
//! Path calls are allowed here (docs/security.md R6): `/run/mount` is root's, and a
//! `LIBMOUNT_UTAB` from the environment is honoured only when the caller is root itself
//! (not a set-user-ID mount(8) run by a user).
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The option umount(8) reads to pick `/sbin/umount.fuse.asdfs`.
pub const HELPER_OPTION: &str = "helper=fuse.asdfs";

fn utab_path() -> PathBuf {
    // SAFETY: getuid and geteuid cannot fail and have no preconditions.
    let set_id = unsafe { libc::getuid() != libc::geteuid() };
    std::env::var_os("LIBMOUNT_UTAB")
        .filter(|_| !set_id)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/mount/utab"))
}

/// The utab line of the top mount on `target` (already escaped as mountinfo escapes).
pub fn line_for(mountinfo: &str, target_escaped: &str) -> Option<String> {
    let f: Vec<&str> = mountinfo
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .rfind(|f| f.len() > 5 && f[4] == target_escaped)?;
    let sep = f.iter().position(|x| *x == "-")?;
    let source = f.get(sep + 2)?;
    Some(format!(
        "SRC={source} TARGET={target_escaped} ROOT={} OPTS={HELPER_OPTION}",
        f[3]
    ))
}

/// `utab` with the lines of `target_escaped` replaced by `line`.
pub fn replaced(utab: &str, target_escaped: &str, line: &str) -> String {
    let field = format!("TARGET={target_escaped}");
    let mut out: String = utab
        .lines()
        .filter(|l| !l.split(' ').any(|w| w == field))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(line);
    out.push('\n');
    out
}

/// Records the mount on `target` (escaped) in utab. Root only: utab is root's.
pub fn record(target_escaped: &str) -> std::io::Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let line = line_for(&info, target_escaped)
        .ok_or_else(|| std::io::Error::other("the mount is not in /proc/self/mountinfo"))?;
    let path = utab_path();
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path.with_extension("lock"))?;
    // SAFETY: flock on a descriptor this function owns; released when it is closed.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut old = String::new();
    match std::fs::File::open(&path) {
        Ok(mut f) => {
            f.read_to_string(&mut old)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let tmp = dir.join(format!(".utab.asdfs.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)?;
    let written = f
        .write_all(replaced(&old, target_escaped, &line).as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
36 35 98:0 / /mnt/a rw,relatime shared:1 - ext4 /dev/sda1 rw
90 36 0:50 / /mnt/with\\040space rw,nosuid - fuse.asdfs /mnt/with\\040space rw,user_id=0
";

    #[test]
    fn the_line_names_the_mount_and_the_helper() {
        assert_eq!(
            line_for(INFO, "/mnt/with\\040space").unwrap(),
            "SRC=/mnt/with\\040space TARGET=/mnt/with\\040space ROOT=/ OPTS=helper=fuse.asdfs"
        );
        assert!(line_for(INFO, "/mnt/b").is_none());
    }

    #[test]
    fn an_older_line_of_the_target_is_replaced() {
        let old = "SRC=/x TARGET=/mnt/t ROOT=/ OPTS=helper=fuse.asdfs\nSRC=/y TARGET=/mnt/tt ROOT=/ OPTS=x-a\n";
        assert_eq!(
            replaced(old, "/mnt/t", "NEW"),
            "SRC=/y TARGET=/mnt/tt ROOT=/ OPTS=x-a\nNEW\n"
        );
    }
}
