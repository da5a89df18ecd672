//! Paths of any depth (design.md §6.4): the disk copy may hold trees deeper than PATH_MAX
//! (4096 bytes), which a program can make through the mount one level at a time. Every
//! disk path the daemon resolves goes through [`open_beneath`], which walks a long path in
//! pieces shorter than PATH_MAX, each from the previous piece's directory descriptor with
//! the same `RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS` rules; the final `*at` call then acts on
//! the last directory and the last name. [`remove_at`] removes a tree of any depth without
//! recursion and with a bounded number of descriptors.

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::unistd::{UnlinkatFlags, unlinkat};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

/// Paths longer than this are resolved a piece at a time (PATH_MAX is 4096).
const RESOLVE_CHUNK: usize = 3000;

/// Directories `remove_at` keeps open at most (about; reopened from the top when needed).
const HELD: usize = 64;

fn how(f: OFlag) -> OpenHow {
    OpenHow::new().flags(f | OFlag::O_CLOEXEC).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    )
}

/// Opens `path` beneath `root` without following any symlink; long paths go in pieces.
pub fn open_beneath(root: BorrowedFd<'_>, path: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() < RESOLVE_CHUNK {
        let p = if bytes.is_empty() {
            Path::new(".")
        } else {
            path
        };
        return Ok(openat2(root, p, how(flags))?);
    }
    // Walk all but the last component in pieces shorter than RESOLVE_CHUNK.
    let comps: Vec<&OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let (last, dirs) = comps
        .split_last()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty path"))?;
    let mut cur: OwnedFd = nix::unistd::dup(root)?;
    let mut piece = PathBuf::new();
    for c in dirs {
        if piece.as_os_str().len() + c.len() + 1 >= RESOLVE_CHUNK {
            cur = openat2(
                &cur,
                piece.as_path(),
                how(OFlag::O_PATH | OFlag::O_DIRECTORY),
            )?;
            piece.clear();
        }
        piece.push(c);
    }
    if !piece.as_os_str().is_empty() {
        cur = openat2(
            &cur,
            piece.as_path(),
            how(OFlag::O_PATH | OFlag::O_DIRECTORY),
        )?;
    }
    Ok(openat2(&cur, Path::new(last), how(flags))?)
}

/// One directory of a removal: its descriptor (`None` once dropped to stay under `HELD`),
/// its name in its parent, and the names in it still to remove.
struct Level {
    fd: Option<OwnedFd>,
    name: OsString,
    rest: Vec<OsString>,
}

const READ_DIR: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW);

fn names_in(fd: &OwnedFd) -> io::Result<Vec<OsString>> {
    let mut d = nix::dir::Dir::from_fd(nix::unistd::dup(fd)?)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let n = e?.file_name().to_bytes().to_vec();
        if n != b"." && n != b".." {
            out.push(OsString::from_vec(n));
        }
    }
    Ok(out)
}

/// Unlinks `n` in `at` if it is not a directory; `false` if it is one.
fn unlink_file(at: BorrowedFd<'_>, n: &OsStr) -> io::Result<bool> {
    match unlinkat(at, n, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::EISDIR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Removes `name` from `dir`, and everything in it if it is a directory, never following a
/// symlink. Iterative (no recursion for a thread's stack to run out of) and holding about
/// `HELD` descriptors however deep the tree: a directory whose descriptor was dropped is
/// opened again beneath `dir` by its names when the walk comes back up to it.
pub fn remove_at(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    if unlink_file(dir.as_fd(), name)? {
        return Ok(());
    }
    let open_level = |at: BorrowedFd<'_>, n: &OsStr| -> io::Result<Level> {
        let fd = openat2(at, Path::new(n), how(READ_DIR))?;
        let rest = names_in(&fd)?;
        Ok(Level {
            fd: Some(fd),
            name: n.to_os_string(),
            rest,
        })
    };
    let mut stack = vec![open_level(dir.as_fd(), name)?];
    loop {
        let Some(k) = stack.len().checked_sub(1) else {
            return Ok(());
        };
        if stack[k].rest.is_empty() {
            let done = stack.pop().expect("level k");
            match k.checked_sub(1) {
                Some(p) => {
                    reopen(dir, &mut stack, p)?;
                    let parent = stack[p].fd.as_ref().expect("reopened");
                    unlinkat(parent, done.name.as_os_str(), UnlinkatFlags::RemoveDir)?;
                }
                None => unlinkat(dir, done.name.as_os_str(), UnlinkatFlags::RemoveDir)?,
            }
            continue;
        }
        reopen(dir, &mut stack, k)?;
        let n = stack[k].rest.pop().expect("not empty");
        let at = stack[k].fd.as_ref().expect("reopened").as_fd();
        if !unlink_file(at, &n)? {
            let sub = open_level(at, &n)?;
            stack.push(sub);
            if let Some(old) = stack.len().checked_sub(HELD + 1) {
                stack[old].fd = None;
            }
        }
    }
}

/// Makes sure `stack[k]` has its descriptor: when it was dropped, opens again the levels
/// from `HELD / 2` above it down to it, the first by its names beneath `dir` (in pieces,
/// without following symlinks), the others each from the one above.
fn reopen(dir: &OwnedFd, stack: &mut [Level], k: usize) -> io::Result<()> {
    if stack[k].fd.is_some() {
        return Ok(());
    }
    let lo = k.saturating_sub(HELD / 2);
    let path: PathBuf = stack[..=lo].iter().map(|l| l.name.as_os_str()).collect();
    stack[lo].fd = Some(open_beneath(dir.as_fd(), &path, READ_DIR)?);
    for i in lo + 1..=k {
        if stack[i].fd.is_none() {
            let above = stack[i - 1].fd.as_ref().expect("opened above");
            let fd = openat2(above, Path::new(&stack[i].name), how(READ_DIR))?;
            stack[i].fd = Some(fd);
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests set up files as a user would
mod tests {
    use super::*;
    use nix::sys::stat::{Mode, mkdirat};

    /// A chain of `levels` directories `d` under `top/name`, with a file in each of the last
    /// few and a symlink at the bottom (to `outside`, which must survive).
    fn deep_tree(top: &OwnedFd, name: &str, levels: usize, outside: &Path) {
        mkdirat(top, name, Mode::from_bits_truncate(0o755)).unwrap();
        let mut cur = openat2(top, Path::new(name), how(READ_DIR)).unwrap();
        for i in 0..levels {
            mkdirat(&cur, "d", Mode::from_bits_truncate(0o755)).unwrap();
            if i + 3 > levels {
                let f = nix::fcntl::openat(
                    &cur,
                    "f",
                    OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o644),
                )
                .unwrap();
                drop(f);
            }
            cur = openat2(&cur, Path::new("d"), how(READ_DIR)).unwrap();
        }
        let f = nix::fcntl::openat(
            &cur,
            "f",
            OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        );
        drop(f.unwrap());
        nix::unistd::symlinkat(outside, &cur, "link").unwrap();
    }

    #[test]
    fn a_tree_deeper_than_path_max_and_the_stack_is_removed_with_few_descriptors() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"keep").unwrap();
        let top: OwnedFd = std::fs::File::open(tmp.path()).unwrap().into();
        let levels = 6000;
        deep_tree(&top, "tree", levels, &outside);
        // Deep enough for a recursion to need more than this thread's stack, and for one
        // descriptor per level to pass a low limit (counted below).
        let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let watch = {
            let most = most.clone();
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let s2 = stop.clone();
            let tree = tmp.path().join("tree");
            // Descriptors of this tree's directories (not other tests').
            let h = std::thread::spawn(move || {
                while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                    let n = std::fs::read_dir("/proc/self/fd")
                        .unwrap()
                        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                        .filter(|l| l.starts_with(&tree))
                        .count();
                    most.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
                    std::thread::yield_now();
                }
            });
            (stop, h)
        };
        std::thread::Builder::new()
            .stack_size(128 << 10)
            .spawn(move || remove_at(&top, OsStr::new("tree")).unwrap())
            .unwrap()
            .join()
            .expect("removal thread");
        watch.0.store(true, std::sync::atomic::Ordering::Relaxed);
        watch.1.join().unwrap();
        assert!(!tmp.path().join("tree").exists());
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"keep");
        // One per level would be 6000.
        let most = most.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            most <= 2 * HELD,
            "{most} descriptors of the tree open at once"
        );
    }

    #[test]
    fn a_path_deeper_than_path_max_opens_in_pieces_and_never_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let top: OwnedFd = std::fs::File::open(tmp.path()).unwrap().into();
        deep_tree(&top, "tree", 3000, &outside);
        let mut p = PathBuf::from("tree");
        for _ in 0..3000 {
            p.push("d");
        }
        assert!(p.as_os_str().len() > 4096);
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW;
        open_beneath(top.as_fd(), &p.join("f"), flags).expect("the deep file");
        let through = open_beneath(top.as_fd(), &p.join("link/keep"), flags);
        assert_eq!(through.unwrap_err().raw_os_error(), Some(libc::ELOOP));
        remove_at(&top, OsStr::new("tree")).unwrap();
    }
}
