//! Attacks: a FUSE mount that never answers, stacked by a user on her directory or on one
//! above it (docs/security.md R7). Root's commands must not wait on it: the target is
//! refused in one line naming the mount, the other targets of the same command are served,
//! and `status`, `flush` and `unmount` answer.
//!
//! /dev/fuse is 0600 here, so the attacker's fusermount3 runs as root (on a directory she
//! owns); where /dev/fuse is 0666 she does the same herself.

use super::*;
use crate::harness::{BIN, Mount, fuse_available};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A FUSE mount whose "daemon" holds /dev/fuse and never reads it: not even INIT is
/// answered, every request on it waits. Dropped: the descriptor is closed (waiting requests
/// fail) and the mount is detached.
struct StuckFuse {
    at: PathBuf,
    dev: Option<OwnedFd>,
}

impl StuckFuse {
    fn on(at: &Path) -> StuckFuse {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        // fusermount3 finds its end of the socket by number: not closed on exec.
        let fd = theirs.as_raw_fd();
        // SAFETY: clearing FD_CLOEXEC on a descriptor we own.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        let st = Command::new("fusermount3")
            .args(["-o", "rw,nosuid,nodev,fsname=stuck,subtype=stuck", "--"])
            .arg(at)
            .env("_FUSE_COMMFD", fd.to_string())
            .status()
            .expect("fusermount3");
        assert!(st.success(), "fusermount3 failed");
        drop(theirs);
        let dev = receive_fd(&ours);
        StuckFuse {
            at: at.to_path_buf(),
            dev: Some(dev),
        }
    }
}

impl Drop for StuckFuse {
    fn drop(&mut self) {
        drop(self.dev.take());
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

fn receive_fd(sock: &std::os::unix::net::UnixStream) -> OwnedFd {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::FromRawFd;
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .expect("recvmsg");
    for c in msg.cmsgs().expect("cmsgs") {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the descriptor was just passed to us and is ours alone.
            return unsafe { OwnedFd::from_raw_fd(fds[0]) };
        }
    }
    panic!("fusermount3 passed no descriptor");
}

/// Runs asdfs; a run that takes longer than `limit` is killed and fails the test (it hung).
fn asdfs_within(args: &[&Path], env: &[(&str, &str)], limit: Duration) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "asdfs {args:?} hung (killed after {limit:?}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn p(s: &str) -> &Path {
    Path::new(s)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The attacker's directory `name` in her home.
fn attacker_dir(home: &Path, name: &str) -> PathBuf {
    let d = home.join(name);
    let made = d.clone();
    as_attacker(move || std::fs::create_dir(&made).map_err(|e| e.to_string())).unwrap();
    d
}

#[test]
fn a_stuck_fuse_mount_on_or_above_a_target_is_refused_and_the_others_are_served() {
    if !fuse_available() {
        return;
    }
    let home = attacker_home();
    let on = attacker_dir(home.path(), "on");
    let above = attacker_dir(home.path(), "above");
    let below = attacker_dir(&above, "cache");
    let _stuck_on = StuckFuse::on(&on);
    let _stuck_above = StuckFuse::on(&above);
    let m = Mount::prepare(|t| std::fs::write(t.join("f"), b"kept").unwrap());
    let vol = m.volatile.path();
    let out = asdfs_within(
        &[p("mount"), p("--volatile"), vol, &on, &m.target, &below],
        &[],
        Duration::from_secs(60),
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(m.is_mounted(), "the other target was not served: {err}");
    for (t, place) in [(&on, "on it"), (&below, "above it")] {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("{}:", t.display())))
            .unwrap_or_else(|| panic!("no line for {}: {err}", t.display()));
        assert!(
            line.contains(place) && line.contains("fuse.stuck") && line.contains("source stuck"),
            "{line}"
        );
    }
    // Commands on the refused targets answer too.
    for cmd in ["status", "flush", "unmount"] {
        for t in [&on, &below] {
            let out = asdfs_within(&[p(cmd), t], &[], Duration::from_secs(30));
            assert!(!out.status.success(), "{cmd} {}", t.display());
        }
    }
    // `config check` of a file naming it too.
    let conf = m.volatile.path().join("asdfs.toml");
    std::fs::write(&conf, format!("[[target]]\npath = \"{}\"\n", on.display())).unwrap();
    let out = asdfs_within(
        &[p("config"), p("check"), &conf],
        &[],
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("fuse.stuck"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read(m.target.join("f")).unwrap(), b"kept");
}

/// A path that reaches a stuck mount only through a symlink passes the mount table's
/// check: the start waits on it for `ASDFS_HANG_LIMIT` seconds, then gives it up.
#[test]
fn a_start_that_waits_on_a_stuck_fuse_mount_is_given_up() {
    if !fuse_available() {
        return;
    }
    let home = attacker_home();
    let on = attacker_dir(home.path(), "on");
    let link = home.path().join("link");
    let (to, at) = (on.clone(), link.clone());
    as_attacker(move || std::os::unix::fs::symlink(&to, &at).map_err(|e| e.to_string())).unwrap();
    let _stuck = StuckFuse::on(&on);
    let m = Mount::prepare(|_| {});
    let vol = m.volatile.path();
    let behind = link.join("sub");
    let out = asdfs_within(
        &[p("mount"), p("--volatile"), vol, &behind, &m.target],
        &[("ASDFS_HANG_LIMIT", "2")],
        Duration::from_secs(60),
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(m.is_mounted(), "the other target was not served: {err}");
    assert!(
        err.contains(&format!(
            "{}: a filesystem on its path did not answer",
            behind.display()
        )),
        "{err}"
    );
}

/// A stuck FUSE mount stacked over the directory above a target after its mount (her home,
/// over root's mount of `~/.cache`): root can still ask for status, flush and unmount; the
/// daemon is found by the target's name (its store's tmpfs in the mount table), and the
/// disk copy gets everything.
#[test]
fn a_target_covered_by_a_stuck_fuse_mount_after_its_mount_is_still_flushed_and_unmounted() {
    if !fuse_available() {
        return;
    }
    let m = Mount::with(|t| std::fs::write(t.join("f"), b"old").unwrap());
    std::fs::write(m.path("f"), b"new").unwrap();
    let stuck = StuckFuse::on(m.disk.path());
    for cmd in ["status", "flush", "unmount"] {
        let out = asdfs_within(&[p(cmd), &m.target], &[], Duration::from_secs(30));
        assert!(out.status.success(), "{cmd}: {}", text(&out.stderr));
    }
    drop(stuck);
    assert!(!m.is_mounted());
    assert_eq!(std::fs::read(m.target.join("f")).unwrap(), b"new");
}

/// The target's owner who also owns its parent moves root's side directory (with the
/// session marker) away and puts a FUSE mount that never answers at its name (QA M2):
/// root's status, flush and unmount still find the daemon (its store's tmpfs in the mount
/// table), and the daemon's end does not wait on that mount (it looked at the name by
/// opening it, and the unmount hung).
#[test]
fn the_side_directory_moved_away_and_covered_does_not_lose_roots_commands() {
    if !fuse_available() {
        return;
    }
    let m = Mount::with(|t| std::fs::write(t.join("f"), b"old").unwrap());
    std::fs::write(m.path("f"), b"new").unwrap();
    let parent = m.target.parent().unwrap().to_path_buf();
    std::os::unix::fs::chown(&parent, Some(ATTACKER), None).unwrap();
    let name = m.target.file_name().unwrap().to_string_lossy().into_owned();
    let side = parent.join(format!(".{name}-asdfs"));
    assert!(side.is_dir(), "{} is the side directory", side.display());
    let (from, to) = (side.clone(), parent.join(".moved-away"));
    as_attacker(move || {
        std::fs::rename(&from, &to).map_err(|e| e.to_string())?;
        std::fs::create_dir(&from).map_err(|e| e.to_string())
    })
    .unwrap();
    // Moved away only: the commands still find the daemon.
    let out = asdfs_within(&[p("status"), &m.target], &[], Duration::from_secs(30));
    assert!(out.status.success(), "status: {}", text(&out.stderr));
    let stuck = StuckFuse::on(&side);
    for cmd in ["status", "flush", "unmount"] {
        let out = asdfs_within(&[p(cmd), &m.target], &[], Duration::from_secs(30));
        assert!(out.status.success(), "{cmd}: {}", text(&out.stderr));
    }
    drop(stuck);
    assert!(!m.is_mounted());
    assert_eq!(std::fs::read(m.target.join("f")).unwrap(), b"new");
}
