//! Attacks: control (see attack.rs). The control socket of a root daemon: a user who is not
//! the target's owner cannot reach it, and neither they (were the socket file opened to
//! them) nor the owner can hold the daemon's threads or lock root out with idle
//! connections.

use super::*;
use crate::harness::{Mount, asdfs, fuse_available};
use std::io::BufRead;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Idle connections the attacker opens and holds.
const FLOOD: usize = 2_000;

/// A root daemon's mount whose store is reachable by every user, as `/run/asdfs/` is
/// (`/run` 0755, the store root and the target's store 0711).
fn reachable_mount(owner: u32) -> Mount {
    let m = Mount::prepare(|t| chown(t, owner));
    std::fs::set_permissions(m.volatile.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(m.disk.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    m.mount();
    m
}

fn socket_of(m: &Mount) -> PathBuf {
    m.store().join("control.sock")
}

/// The daemon's thread count.
fn threads(m: &Mount) -> usize {
    let pid = m.daemon_pid().expect("daemon pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("Threads: in /proc/PID/status")
}

/// The first line the daemon sends on `conn`, waiting at most `limit`.
fn first_line(conn: &UnixStream, limit: Duration) -> Result<String, String> {
    conn.set_read_timeout(Some(limit))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    std::io::BufReader::new(conn)
        .read_line(&mut line)
        .map_err(|e| format!("no answer within {limit:?}: {e}"))?;
    Ok(line)
}

/// A pipe's two ends: (read, write).
fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe().expect("pipe")
}

/// The attacker, in a forked child: opens `FLOOD` connections to `sock` sending nothing,
/// checks the last with `check`, says so on `ready`, holds them until
/// a byte comes on `release` (or a minute passes), then ends. Runs on a thread; join it
/// after writing to `release`.
fn flood(
    sock: PathBuf,
    check: fn(&UnixStream) -> Result<(), String>,
    ready: OwnedFd,
    release: OwnedFd,
) -> std::thread::JoinHandle<Result<(), String>> {
    std::thread::spawn(move || {
        as_attacker(move || {
            let lim = libc::rlimit {
                rlim_cur: (FLOOD + 64) as libc::rlim_t,
                rlim_max: (FLOOD + 64) as libc::rlim_t,
            };
            // SAFETY: a plain system call with a valid struct.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
            let mut held = Vec::with_capacity(FLOOD);
            let mut result = Ok(());
            for i in 0..FLOOD {
                match UnixStream::connect(&sock) {
                    Ok(c) => held.push(c),
                    Err(e) => {
                        result = Err(format!("connection {i}: {e}"));
                        break;
                    }
                }
            }
            if result.is_ok() {
                result = check(&held[held.len() - 1]);
            }
            let _ = nix::unistd::write(&ready, b"r");
            let mut fds = [nix::poll::PollFd::new(
                release.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(60_000u16));
            drop(held);
            result
        })
    })
}

/// Waits for the attacker's byte on `ready`.
fn wait_ready(ready: &OwnedFd) {
    let mut b = [0u8; 1];
    let n = nix::unistd::read(ready, &mut b).expect("reading the attacker's readiness");
    assert_eq!(n, 1, "the attacker ended before holding its connections");
}

/// `asdfs VERB TARGET` as root succeeds within a few seconds.
#[track_caller]
fn root_command_works(m: &Mount, verb: &str) {
    let start = Instant::now();
    let out = asdfs([verb, m.target.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "root's {verb} failed while the attacker held connections: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "root's {verb} took {:?}",
        start.elapsed()
    );
}

fn refused(conn: &UnixStream) -> Result<(), String> {
    let line = first_line(conn, Duration::from_secs(3))?;
    match line.contains("permission denied") {
        true => Ok(()),
        false => Err(format!("not refused: {line:?}")),
    }
}

/// The owner's first connections get a thread (which gives up after its read timeout);
/// the others are told at once that the daemon is busy.
fn busy(conn: &UnixStream) -> Result<(), String> {
    let line = first_line(conn, Duration::from_secs(3))?;
    match line.contains("busy") {
        true => Ok(()),
        false => Err(format!("not told busy: {line:?}")),
    }
}

#[test]
fn a_stranger_cannot_connect_to_the_control_socket_or_hold_its_threads() {
    if !fuse_available() {
        return;
    }
    let m = reachable_mount(0);
    std::fs::write(m.path("new"), b"in RAM").unwrap();
    let sock = socket_of(&m);
    let s = sock.clone();
    let connected = as_attacker(move || match UnixStream::connect(&s) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
        Err(e) => Err(format!("connecting failed otherwise: {e}")),
        Ok(_) => Err("the attacker connected to root's control socket".into()),
    });
    assert_eq!(connected, Ok(()));

    // Were the socket file opened to everyone, the daemon still refuses at once, without
    // reading and without a thread per connection.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let s = sock.clone();
    let flushed = as_attacker(move || {
        let mut c = UnixStream::connect(&s).map_err(|e| e.to_string())?;
        let _ = c.write_all(b"{\"cmd\":\"flush\"}\n");
        refused(&c)
    });
    assert_eq!(flushed, Ok(()));
    assert!(
        !m.disk_copy().join("new").exists(),
        "the stranger's flush ran"
    );
    let before = threads(&m);
    let ((ready_r, ready_w), (release_r, release_w)) = (pipe(), pipe());
    let attacker = flood(sock, refused, ready_w, release_r);
    wait_ready(&ready_r);
    let during = threads(&m);
    root_command_works(&m, "status");
    root_command_works(&m, "flush");
    nix::unistd::write(&release_w, b"x").unwrap();
    assert!(
        during <= before + 2,
        "{FLOOD} refused connections left the daemon with {during} threads (was {before})"
    );
    assert_eq!(attacker.join().unwrap(), Ok(()));
}

#[test]
fn the_owner_cannot_lock_root_out_with_idle_connections() {
    if !fuse_available() {
        return;
    }
    let m = reachable_mount(ATTACKER);
    std::fs::write(m.path("new"), b"in RAM").unwrap();
    let before = threads(&m);
    let ((ready_r, ready_w), (release_r, release_w)) = (pipe(), pipe());
    let attacker = flood(socket_of(&m), busy, ready_w, release_r);
    wait_ready(&ready_r);
    let during = threads(&m);
    root_command_works(&m, "status");
    root_command_works(&m, "flush");
    nix::unistd::write(&release_w, b"x").unwrap();
    assert!(
        during <= before + 40,
        "{FLOOD} idle connections of one user left the daemon with {during} threads (was {before})"
    );
    assert_eq!(attacker.join().unwrap(), Ok(()));
    assert_eq!(std::fs::read(m.disk_copy().join("new")).unwrap(), b"in RAM");
}
