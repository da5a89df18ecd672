//! Paths deeper than PATH_MAX (4096 bytes) and than 4096 names (QA F1): every file a program
//! was told is written reaches the disk copy at a flush and at unmount, and is read back
//! from there, however deep (design.md §6.4). The trees are walked by
//! descriptors, one level at a time, as `rm -rf` does: no path to them fits in PATH_MAX.

use crate::attack::ATTACKER;
use crate::harness::{Mount, fuse_available};
use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::{Mode, mkdirat};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Levels of the deep trees: more names than the old bound of 4096 and, at two bytes a
/// level (`d/`), more than PATH_MAX bytes.
const LEVELS: usize = 4100;

/// A user that is neither root nor the attacker: the victim of the F1 scenario.
const VICTIM: u32 = 65_534;

fn open_dir(at: impl AsFd, name: &str) -> nix::Result<OwnedFd> {
    openat(
        at,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Descends from `top` through `levels` directories named `d`, making each when `make`;
/// returns the deepest one's descriptor.
fn descend(top: OwnedFd, levels: usize, make: bool) -> nix::Result<OwnedFd> {
    let mut cur = top;
    for _ in 0..levels {
        if make {
            mkdirat(&cur, "d", Mode::from_bits_truncate(0o755))?;
        }
        cur = open_dir(&cur, "d")?;
    }
    Ok(cur)
}

/// `path` opened as a directory (a path that fits in PATH_MAX).
fn dir_at(path: &Path) -> OwnedFd {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    OwnedFd::from(f)
}

fn write_at(dir: &OwnedFd, name: &str, data: &[u8]) -> nix::Result<()> {
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC;
    let fd = openat(dir, name, flags, Mode::from_bits_truncate(0o644))?;
    let mut f = std::fs::File::from(fd);
    f.write_all(data).map_err(|_| nix::Error::EIO)?;
    f.sync_all().map_err(|_| nix::Error::EIO)
}

/// The content of `name` in `dir`, or the error that stopped the read.
fn read_at(dir: &OwnedFd, name: &str) -> Result<Vec<u8>, String> {
    let fd = openat(dir, name, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("{name}: {e}"))?;
    let mut out = Vec::new();
    std::fs::File::from(fd)
        .read_to_end(&mut out)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(out)
}

/// The names in a directory (readdir of a descriptor).
fn names_in(dir: &OwnedFd) -> Vec<String> {
    let dup = nix::unistd::dup(dir).unwrap();
    let mut names: Vec<String> = nix::dir::Dir::from_fd(dup)
        .unwrap()
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    names
}

/// Runs `f` as `uid` (gid the same, no groups) in a forked child that first closes every
/// descriptor it inherited: its work takes seconds, and descriptors other tests' threads had
/// open at the fork (files under their targets, on their mounts) would otherwise stay open
/// that long, refusing their mounts (processes holding files) or holding their daemons.
/// Errors go to stderr by `write(2)`; the exit status says whether `f` succeeded.
fn alone_as(uid: u32, f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    // SAFETY: the child closes descriptors, changes credentials, runs `f` and leaves with
    // _exit, running none of the parent's destructors.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: plain system calls in the child.
        let code = unsafe {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(uid) != 0
                || libc::setuid(uid) != 0
            {
                2
            } else {
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                    Ok(Ok(())) => 0,
                    Ok(Err(e)) => {
                        let msg = format!("as uid {uid}: {e}\n");
                        libc::write(2, msg.as_ptr().cast(), msg.len());
                        1
                    }
                    Err(_) => 3,
                }
            }
        };
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(code) }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Ok(()),
        Some(1) => Err(format!(
            "the child as uid {uid} failed (its error is on stderr)"
        )),
        Some(2) => Err(format!("the child could not become uid {uid}")),
        other => Err(format!(
            "the child as uid {uid} ended: {other:?} (status {status})"
        )),
    }
}

/// What is at `top/d^levels/name` on the disk copy: its content, or why not.
fn on_disk(m: &Mount, top: &str, levels: usize, name: &str) -> Result<Vec<u8>, String> {
    let start = dir_at(&m.disk_copy().join(top));
    let dir = descend(start, levels, false).map_err(|e| format!("descending: {e}"))?;
    read_at(&dir, name)
}

/// Removes the deep trees of a test's disk directory after its unmount: `rm -rf` walks by
/// descriptors, so it reaches any depth.
fn remove_deep(m: &Mount) {
    let st = Command::new("rm")
        .arg("-rf")
        .arg(m.disk.path())
        .status()
        .expect("rm");
    assert!(st.success(), "rm -rf {} failed", m.disk.path().display());
}

/// F1: in a shared sticky target the attacker moves its own directory, which holds a
/// victim's file, under 4100 directories. The flush and the unmount put the victim's file
/// there on disk (before: the flush deleted it from the disk copy and reported success).
#[test]
fn a_file_moved_deeper_than_path_max_stays_on_disk() {
    if !fuse_available() {
        return;
    }
    let m = Mount::prepare(|t| {
        std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o1777)).unwrap();
    });
    std::fs::set_permissions(m.disk.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    m.mount();
    let t = m.target.clone();
    alone_as(ATTACKER, || {
        let shared = t.join("shared");
        std::fs::create_dir(&shared).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777))
            .map_err(|e| e.to_string())
    })
    .unwrap();
    alone_as(VICTIM, || {
        std::fs::write(t.join("shared/victim.txt"), b"victim-data\n").map_err(|e| e.to_string())
    })
    .unwrap();
    m.flush();
    assert_eq!(
        std::fs::read(m.disk_copy().join("shared/victim.txt")).unwrap(),
        b"victim-data\n"
    );
    alone_as(ATTACKER, || {
        let top = dir_at(&t);
        mkdirat(&top, "deep", Mode::from_bits_truncate(0o755)).map_err(|e| e.to_string())?;
        let deep = open_dir(&top, "deep").map_err(|e| e.to_string())?;
        let bottom = descend(deep, LEVELS, true).map_err(|e| format!("mkdir: {e}"))?;
        renameat(&top, "shared", &bottom, "shared").map_err(|e| format!("rename: {e}"))
    })
    .unwrap();
    m.flush();
    let at = format!("deep/d^{LEVELS}/shared/victim.txt");
    assert_eq!(
        on_disk(&m, "deep", LEVELS, "shared/victim.txt"),
        Ok(b"victim-data\n".to_vec()),
        "{at} after the flush; daemon log:\n{}",
        m.log_tail()
    );
    assert!(!m.disk_copy().join("shared").exists());
    m.unmount();
    assert_eq!(
        on_disk(&m, "deep", LEVELS, "shared/victim.txt"),
        Ok(b"victim-data\n".to_vec()),
        "{at} after the unmount"
    );
    remove_deep(&m);
}

/// A file written 4100 directories down (8 KiB of path) reaches the disk copy at unmount,
/// and a new mount reads it back from there (lazily: listing and data at that depth).
#[test]
fn a_file_deeper_than_path_max_is_written_and_read_back() {
    if !fuse_available() {
        return;
    }
    let m = Mount::new();
    let bottom = descend(dir_at(&m.target), LEVELS, true).unwrap();
    write_at(&bottom, "f", b"deep data\n").unwrap();
    drop(bottom);
    m.unmount();
    assert_eq!(
        on_disk(&m, "", LEVELS, "f"),
        Ok(b"deep data\n".to_vec()),
        "after the unmount; daemon log:\n{}",
        m.log_tail()
    );
    m.mount();
    let bottom = descend(dir_at(&m.target), LEVELS, false).expect("descending the new mount");
    assert_eq!(names_in(&bottom), ["f"]);
    assert_eq!(read_at(&bottom, "f"), Ok(b"deep data\n".to_vec()));
    drop(bottom);
    m.unmount();
    remove_deep(&m);
}

/// A directory 4150 levels down on disk (made before the mount) moved back up to the top:
/// the flush moves it on disk with everything in it, and nothing is left at the old place.
#[test]
fn a_deep_directory_renamed_back_up_moves_on_disk() {
    if !fuse_available() {
        return;
    }
    const LEVELS: usize = 4200;
    const AT: usize = 4150;
    let m = Mount::with(|t| {
        let bottom = descend(dir_at(t), LEVELS, true).unwrap();
        write_at(&bottom, "f", b"from the bottom\n").unwrap();
    });
    {
        let above = descend(dir_at(&m.target), AT - 1, false).expect("descending the mount");
        let top = dir_at(&m.target);
        renameat(&above, "d", &top, "up").expect("rename up");
        assert!(names_in(&above).is_empty());
    }
    m.flush();
    let below = LEVELS - AT;
    assert_eq!(
        on_disk(&m, "up", below, "f"),
        Ok(b"from the bottom\n".to_vec()),
        "up/d^{below}/f after the flush; daemon log:\n{}",
        m.log_tail()
    );
    let above = descend(dir_at(&m.disk_copy()), AT - 1, false).unwrap();
    assert!(names_in(&above).is_empty(), "the old place still has it");
    drop(above);
    m.unmount();
    assert_eq!(
        on_disk(&m, "up", below, "f"),
        Ok(b"from the bottom\n".to_vec())
    );
    remove_deep(&m);
}

/// A daemon killed with changes 4100 levels down (a new file, a new directory, a file moved
/// into it): the next mount takes its store over (the store log's records of nodes that
/// deep) and its unmount puts them on disk.
#[test]
fn deep_changes_survive_a_killed_daemon() {
    if !fuse_available() {
        return;
    }
    let m = Mount::new();
    let bottom = descend(dir_at(&m.target), LEVELS, true).unwrap();
    write_at(&bottom, "f1", b"first\n").unwrap();
    drop(bottom);
    m.flush();
    {
        let bottom = descend(dir_at(&m.target), LEVELS, false).unwrap();
        write_at(&bottom, "f2", b"second\n").unwrap();
        mkdirat(&bottom, "e", Mode::from_bits_truncate(0o755)).unwrap();
        let e = open_dir(&bottom, "e").unwrap();
        renameat(&bottom, "f1", &e, "f1").unwrap();
    }
    m.kill_daemon();
    m.mount();
    m.unmount();
    assert_eq!(
        on_disk(&m, "", LEVELS, "f2"),
        Ok(b"second\n".to_vec()),
        "daemon log:\n{}",
        m.log_tail()
    );
    assert_eq!(on_disk(&m, "", LEVELS, "e/f1"), Ok(b"first\n".to_vec()));
    assert!(
        on_disk(&m, "", LEVELS, "f1").is_err(),
        "f1 left at its old place"
    );
    remove_deep(&m);
}
