//! Attacks on the root daemon by an unprivileged local user (docs/security.md). Each test
//! runs the attacker's steps as an unprivileged uid against a daemon started as root and
//! asserts that nothing outside the target changed and that asdfs reported the conflict.
//! Each would succeed against a daemon without the guard it names.

mod control;
mod disk;
mod hang;
mod misc;
mod side;
mod snapshots;
mod store;
mod target;

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The attacker: a uid and gid with no name, no groups and no capabilities.
pub const ATTACKER: u32 = 64_123;

/// Runs `f` in a forked child with the attacker's credentials; returns what it returned.
pub fn as_attacker(f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    as_uid(ATTACKER, ATTACKER, f)
}

/// Runs `f` in a forked child with uid `uid`, gid `gid` and no supplementary groups.
pub fn as_uid(uid: u32, gid: u32, f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the child changes its credentials, runs `f`, writes to the pipe and leaves
    // with _exit, running none of the parent's destructors.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: plain system calls in the child.
        let out = if unsafe {
            libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
        } {
            Err(format!(
                "changing credentials: {}",
                std::io::Error::last_os_error()
            ))
        } else {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .unwrap_or_else(|_| Err("the attacker's code panicked".into()))
        };
        let msg = match out {
            Ok(()) => String::new(),
            Err(e) => format!("E{e}"),
        };
        // SAFETY: the write end belongs to this child.
        let mut w = unsafe { std::fs::File::from_raw_fd(fds[1]) };
        let _ = w.write_all(msg.as_bytes());
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(0) }
    }
    // SAFETY: the write end is the child's; the read end is ours.
    unsafe { libc::close(fds[1]) };
    // SAFETY: we own the read end.
    let mut rd = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut msg = String::new();
    let _ = rd.read_to_string(&mut msg);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    match msg.strip_prefix('E') {
        Some(e) => Err(e.to_string()),
        None => Ok(()),
    }
}

/// A directory in /tmp owned by the attacker (0755), as a user's home would be.
pub fn attacker_home() -> tempfile::TempDir {
    let home = tempfile::Builder::new()
        .prefix("asdfs-attack-home-")
        .tempdir_in("/tmp")
        .expect("attacker's home");
    chown(home.path(), ATTACKER);
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    home
}

pub fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).expect("chown");
}

/// A root-owned file in a root-only directory, as `/etc/shadow` would be: the thing an
/// attacker wants changed. `assert_untouched` checks its mode, owner and content.
pub struct Decoy {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    before: (u32, u32, u32, Vec<u8>),
}

impl Decoy {
    pub fn new() -> Decoy {
        let dir = tempfile::Builder::new()
            .prefix("asdfs-decoy-")
            .tempdir_in("/tmp")
            .expect("decoy dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("victim");
        std::fs::write(&path, b"root's secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let before = Self::state(&path);
        Decoy {
            _dir: dir,
            path,
            before,
        }
    }

    fn state(p: &Path) -> (u32, u32, u32, Vec<u8>) {
        let m = std::fs::symlink_metadata(p).expect("the decoy is gone");
        (
            m.mode(),
            m.uid(),
            m.gid(),
            std::fs::read(p).unwrap_or_default(),
        )
    }

    #[track_caller]
    pub fn assert_untouched(&self) {
        let now = Self::state(&self.path);
        assert_eq!(
            now,
            self.before,
            "the decoy {} was changed (mode, uid, gid, content)",
            self.path.display()
        );
    }
}

/// Whatever a root `asdfs mount` of `target` with its store under `vol` left running: the
/// mount on the target, the daemon, and any mount inside `vol` or on `extra` are removed
/// when dropped, passing or failing.
pub struct Cleanup {
    pub target: PathBuf,
    pub vol: PathBuf,
    pub extra: Vec<PathBuf>,
}

impl Cleanup {
    pub fn new(target: &Path, vol: &Path) -> Cleanup {
        Cleanup {
            target: target.to_path_buf(),
            vol: vol.to_path_buf(),
            extra: Vec::new(),
        }
    }
}

/// Mount points of this namespace.
pub fn mount_points() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(1).map(str::to_string))
        .collect()
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        use std::process::Command;
        let target = self.target.display().to_string();
        if mount_points().contains(&target) {
            let _ = crate::harness::asdfs(["unmount", target.as_str()]);
        }
        let key = asdfs::daemon::paths::store_key(&self.target);
        // `asdfs`, or `asdfs.XXXXXXXX` where another user made `asdfs`.
        let pid = std::fs::read_dir(&self.vol)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("asdfs"))
            .find_map(|e| std::fs::read_to_string(e.path().join(&key).join("owner.json")).ok())
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v["pid"].as_i64());
        if let Some(pid) = pid {
            // SAFETY: a plain signal to the daemon of this test.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let vol = self.vol.display().to_string();
        let mut inside: Vec<String> = mount_points()
            .into_iter()
            .filter(|m| {
                *m == target
                    || m.starts_with(&vol)
                    || self.extra.iter().any(|e| *m == e.display().to_string())
            })
            .collect();
        inside.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in inside {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

/// A volatile directory as /tmp or /dev/shm are: root's, world-writable and sticky, in `in_dir`.
pub fn sticky_volatile(in_dir: &str) -> tempfile::TempDir {
    let vol = tempfile::Builder::new()
        .prefix("asdfs-attack-vol-")
        .tempdir_in(in_dir)
        .expect("volatile dir");
    std::fs::set_permissions(vol.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    vol
}

/// `asdfs mount TARGET --volatile VOL EXTRA...` as root, with info logging; (success,
/// stderr).
pub fn root_mount(target: &Path, vol: &Path, extra: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(crate::harness::BIN)
        .arg("mount")
        .arg(target)
        .arg("--volatile")
        .arg(vol)
        .args(extra)
        .env("ASDFS_LOG", "info")
        .output()
        .expect("running asdfs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts a refusal: the mount failed, with one line naming `path` and the attacker.
#[track_caller]
pub fn assert_refused(result: &(bool, String), path: &Path) {
    let (ok, err) = result;
    assert!(
        !ok,
        "asdfs mount succeeded; it should have refused {}",
        path.display()
    );
    let line = err
        .lines()
        .find(|l| l.contains(&path.display().to_string()));
    let line = line.unwrap_or_else(|| panic!("no error naming {}: {err}", path.display()));
    assert!(
        line.contains(&format!("uid {ATTACKER}")),
        "the error does not name the owner: {line}"
    );
}
