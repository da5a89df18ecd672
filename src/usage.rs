//! How much a directory tree takes on disk, as du(1) counts it: allocated blocks, each inode
//! once however many names it has, symlinks not followed. For status ("size on disk") and
//! asd's `p` ("dir size").

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::rc::Rc;

/// The size of a tree on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Allocated bytes (st_blocks × 512) of every inode in the tree, the top directory included.
    pub bytes: u64,
    /// Names that are not directories.
    pub files: u64,
    /// Directories below the top one.
    pub dirs: u64,
}

/// Walks the tree at `root` without following symlinks and without touching access times
/// (the disk copy's atimes are the user's). Every directory below the root is opened by one
/// name relative to its parent's descriptor with `O_NOFOLLOW`, and every name is lstat'ed
/// relative to that descriptor: a directory swapped for a symlink during the walk is counted
/// as the symlink, never gone through. Entries that vanish during the walk are skipped; any
/// other error stops it.
pub fn measure(root: &Path) -> io::Result<Usage> {
    use nix::fcntl::AtFlags;
    let mut u = Usage::default();
    let mut seen = HashSet::new();
    // The root itself may be reached through a link (`/proc/self/fd/N`): follow it.
    let top = open_dir(nix::fcntl::AT_FDCWD, root.as_os_str(), false)?;
    u.bytes += nix::sys::stat::fstat(&top)?.st_blocks as u64 * 512;
    // Directories still to read, each as its parent's descriptor and its name: only the
    // directories on the current path stay open.
    let mut stack: Vec<(Rc<OwnedFd>, OsString)> = Vec::new();
    let mut next = Some(Rc::new(top));
    loop {
        let dir = match next.take() {
            Some(d) => d,
            None => match stack.pop() {
                None => break,
                Some((parent, name)) => match open_dir(&*parent, &name, true) {
                    Ok(fd) => Rc::new(fd),
                    // Gone, or swapped for a symlink meanwhile: not gone through.
                    Err(e) if vanished(&e) || e.raw_os_error() == Some(libc::ELOOP) => continue,
                    Err(e) => return Err(e),
                },
            },
        };
        for name in names_in(&dir)? {
            let flags = AtFlags::AT_SYMLINK_NOFOLLOW;
            let st = match nix::sys::stat::fstatat(&*dir, name.as_os_str(), flags) {
                Ok(st) => st,
                Err(e) if vanished(&e.into()) => continue,
                Err(e) => return Err(e.into()),
            };
            let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
            if is_dir {
                u.dirs += 1;
                stack.push((dir.clone(), name));
            } else {
                u.files += 1;
            }
            if st.st_nlink > 1 && !is_dir && !seen.insert((st.st_dev, st.st_ino)) {
                continue;
            }
            u.bytes += st.st_blocks as u64 * 512;
        }
    }
    Ok(u)
}

/// Opens directory `name` relative to `at` (with `O_NOFOLLOW` when `nofollow`), with
/// O_NOATIME where allowed (owner or root).
fn open_dir<Fd: std::os::fd::AsFd>(at: Fd, name: &OsStr, nofollow: bool) -> io::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    let mut flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    if nofollow {
        flags |= OFlag::O_NOFOLLOW;
    }
    let mode = nix::sys::stat::Mode::empty();
    let fd = match nix::fcntl::openat(&at, name, flags | OFlag::O_NOATIME, mode) {
        Err(nix::errno::Errno::EPERM) => nix::fcntl::openat(&at, name, flags, mode)?,
        r => r?,
    };
    Ok(fd)
}

/// The names in an open directory.
fn names_in(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let mut d = nix::dir::Dir::from_fd(nix::unistd::dup(dir)?)?;
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsString::from_vec(n.to_vec()));
        }
    }
    Ok(names)
}

fn vanished(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests set up files as a user would
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;

    #[test]
    fn counts_blocks_once_per_inode_and_skips_symlink_targets() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a"), vec![7u8; 100_000]).unwrap();
        std::fs::hard_link(root.join("sub/a"), root.join("b")).unwrap();
        let big = dir.path().join("outside");
        std::fs::write(&big, vec![1u8; 1_000_000]).unwrap();
        std::os::unix::fs::symlink(&big, root.join("link")).unwrap();
        let u = measure(&root).unwrap();
        assert_eq!(u.files, 3, "a, b and link");
        assert_eq!(u.dirs, 1);
        let a = std::fs::metadata(root.join("sub/a")).unwrap().blocks() * 512;
        assert!(a >= 100_000 - 4096, "{a}");
        assert!(u.bytes >= a, "{u:?}");
        assert!(
            u.bytes < 2 * a,
            "counted the link's target or a twice: {u:?}"
        );
    }

    #[test]
    fn measuring_leaves_access_times_alone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let old = std::fs::FileTimes::new().set_accessed(std::time::UNIX_EPOCH);
        for d in [&root, &root.join("sub")] {
            std::fs::File::open(d).unwrap().set_times(old).unwrap();
        }
        measure(&root).unwrap();
        for d in [&root, &root.join("sub")] {
            assert_eq!(std::fs::metadata(d).unwrap().atime(), 0, "{}", d.display());
        }
    }

    #[test]
    fn the_root_may_be_a_link_to_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a"), b"x").unwrap();
        let fd = std::fs::File::open(&root).unwrap();
        use std::os::fd::AsRawFd;
        let via = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        assert_eq!(measure(&via).unwrap(), measure(&root).unwrap());
        assert_eq!(measure(&via).unwrap().files, 1);
    }

    #[test]
    fn a_missing_root_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(measure(&dir.path().join("nope")).is_err());
    }
}
