//! A stop with a file held open for writing through the kernel (FUSE passthrough, design.md
//! §4.1 "A stop with files open"): every write the holder was told succeeded reaches the disk
//! copy, after an `asdfs unmount` (served until it closes) and after a SIGTERM stop that
//! cannot wait (writes refused from the cut-off; what the holder writes after the daemon is
//! gone kept in the store for the next mount).

use super::mount_with;
use crate::harness::{asdfs, fuse_available};
use std::fs;
use std::io::Write;
use std::time::{Duration, Instant};

pub(super) fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Appends `line<i>` to `f` for each `i` in `range`; the lines whose write succeeded, and
/// the error of the first that failed.
fn append(f: &mut fs::File, range: std::ops::Range<u32>) -> (String, Option<std::io::Error>) {
    let mut acked = String::new();
    for i in range {
        let line = format!("line{i}\n");
        match f.write(line.as_bytes()) {
            Ok(n) if n == line.len() => acked += &line,
            Ok(n) => panic!("short write: {n} of {}", line.len()),
            Err(e) => return (acked, Some(e)),
        }
    }
    (acked, None)
}

pub(super) fn daemon_gone(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                == Some("Z")
        })
        .unwrap_or(true)
}

/// `asdfs unmount` with the file held: the mount is detached, the daemon serves the holder
/// (its writes go on through the kernel), and once it closes the final flush writes all.
#[test]
fn unmount_with_a_passthrough_writer_keeps_every_write() {
    if !fuse_available() {
        return;
    }
    let m = mount_with("passthrough");
    assert_eq!(m.status()["data_path"], "passthrough");
    let mut f = fs::File::create(m.path("held")).unwrap();
    let (mut acked, err) = append(&mut f, 0..10);
    assert!(err.is_none(), "{err:?}");
    let pid = m.daemon_pid().unwrap();
    let out = asdfs(["unmount", m.target.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!m.is_mounted());
    let (more, err) = append(&mut f, 10..30);
    assert!(
        err.is_none(),
        "a write after a lazy unmount failed: {err:?}"
    );
    acked += &more;
    assert!(!daemon_gone(pid), "the daemon left its holder");
    drop(f);
    wait_for("the daemon to exit", Duration::from_secs(20), || {
        daemon_gone(pid)
    });
    assert_eq!(
        fs::read_to_string(m.disk_copy().join("held")).unwrap(),
        acked
    );
    assert!(
        !m.store().join("private").exists(),
        "the store is removed after the final flush"
    );
}

/// SIGTERM with the file held past the grace: from the cut-off its writes fail (none is
/// acknowledged and then lost with the store); the holder keeps it open past the daemon's
/// end, so the store stays and says so, and what the holder writes then (the kernel lets it
/// through without a daemon) is written by the next mount's takeover.
#[test]
fn sigterm_with_a_passthrough_writer_loses_no_acknowledged_write() {
    if !fuse_available() {
        return;
    }
    let mut m = crate::harness::Mount::prepare(|_| {});
    m.env.push(("ASDFS_DATA_PATH".into(), "passthrough".into()));
    m.env.push(("ASDFS_STOP_GRACE".into(), "1".into()));
    m.mount();
    assert_eq!(m.status()["data_path"], "passthrough");
    let mut f = fs::File::create(m.path("held")).unwrap();
    let (mut acked, err) = append(&mut f, 0..5);
    assert!(err.is_none(), "{err:?}");
    let pid = m.daemon_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // Writing on through the stop until a write fails: the cut-off.
    let mut i = 5;
    let refused = loop {
        let (more, err) = append(&mut f, i..i + 1);
        acked += &more;
        i += 1;
        if let Some(e) = err {
            break e;
        }
        assert!(i < 2_000, "writes were never refused");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(refused.raw_os_error(), Some(libc::EROFS), "{refused}");
    wait_for("the daemon to exit", Duration::from_secs(30), || {
        daemon_gone(pid)
    });
    assert!(!m.is_mounted());
    // The daemon is gone and the kernel lets the holder write its data file again.
    let (more, _) = append(&mut f, i..i + 5);
    acked += &more;
    drop(f);
    let log = m.log_tail();
    assert!(
        m.store().join("private").exists(),
        "the store must stay for what the holder writes:\n{log}"
    );
    // Said once in the log, and by status until the next mount.
    let said = "1 file still open for writing at the end: the store stays in";
    assert_eq!(log.matches(said).count(), 1, "{log}");
    let out = asdfs(["status", m.target.to_str().unwrap()]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("kept them in its RAM store"), "{text}");
    m.mount();
    assert_eq!(
        fs::read_to_string(m.disk_copy().join("held")).unwrap(),
        acked,
        "{log}"
    );
    assert_eq!(fs::read_to_string(m.path("held")).unwrap(), acked);
}

/// QA: after a kill -9, a program went on writing a file through the kernel (passthrough
/// needs no daemon), and a new `asdfs mount` took the store over meanwhile: the two sessions
/// served different copies, and everything written after the takeover was lost without an
/// error. A start now refuses while such writers remain, naming them; once they closed, the
/// takeover writes everything they were told was written.
#[test]
fn a_start_over_a_killed_session_waits_for_its_passthrough_writers() {
    if !fuse_available() {
        return;
    }
    let m = mount_with("passthrough");
    assert_eq!(m.status()["data_path"], "passthrough");
    let mut f = fs::File::create(m.path("held")).unwrap();
    let (mut acked, err) = append(&mut f, 0..5);
    assert!(err.is_none(), "{err:?}");
    m.kill_daemon();
    let (more, err) = append(&mut f, 5..10);
    assert!(
        err.is_none(),
        "the kernel writes the data file without a daemon: {err:?}"
    );
    acked += &more;
    let out = crate::harness::asdfs_env(m.mount_args(), &m.env);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "a new session started while a program of the old one still writes"
    );
    assert!(said.contains("still open for writing"), "{said}");
    assert!(
        said.contains(&format!("pid {}", std::process::id())),
        "{said}"
    );
    let (more, err) = append(&mut f, 10..15);
    assert!(err.is_none(), "{err:?}");
    acked += &more;
    drop(f);
    m.mount();
    assert_eq!(fs::read_to_string(m.path("held")).unwrap(), acked);
    m.unmount();
    assert_eq!(
        fs::read_to_string(m.disk_copy().join("held")).unwrap(),
        acked
    );
}

/// A start over a killed session also finds its passthrough writers in other mount
/// namespaces: the attacker's own user and mount namespace holds a copy of the mount, with a
/// mount id of its own (security.md; before, the start did not see it and the takeover
/// served a file the holder went on writing).
#[test]
fn a_start_over_a_killed_session_waits_for_a_writer_in_another_mount_namespace() {
    if !fuse_available() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let mut m = crate::harness::Mount::prepare(|_| {});
    m.env.push(("ASDFS_DATA_PATH".into(), "passthrough".into()));
    // The attacker reaches the target (its disk directory is root's 0700 temporary one).
    let parent = m.target.parent().unwrap().to_path_buf();
    fs::set_permissions(&parent, fs::Permissions::from_mode(0o755)).unwrap();
    m.mount();
    assert_eq!(m.status()["data_path"], "passthrough");
    fs::write(m.path("held"), "").unwrap();
    fs::set_permissions(m.path("held"), fs::Permissions::from_mode(0o666)).unwrap();
    let mut h = NsWriter::open(&m.path("held"));
    let mut acked = String::new();
    for i in 0..10 {
        if i == 5 {
            m.kill_daemon();
        }
        let line = format!("line{i}\n");
        h.write(&line)
            .unwrap_or_else(|e| panic!("the holder's write failed: {e}"));
        acked += &line;
    }
    let out = crate::harness::asdfs_env(m.mount_args(), &m.env);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "a new session started while a program of the old one still writes (in another mount namespace)"
    );
    assert!(said.contains("still open for writing"), "{said}");
    drop(h);
    m.mount();
    assert_eq!(fs::read_to_string(m.path("held")).unwrap(), acked);
    m.unmount();
    assert_eq!(
        fs::read_to_string(m.disk_copy().join("held")).unwrap(),
        acked
    );
}

/// A process of the attacker's in a user and mount namespace of its own (as `unshare -Um`
/// makes: a copy of the mount, with a mount id of its own) holding a file open for writing,
/// opened there. It writes what it is sent with write(2) and nothing else (a program that
/// stats the descriptor would refresh the inode's attributes itself, which alone re-arms the
/// kernel's question before a write).
struct NsWriter {
    pid: libc::pid_t,
    cmd: fs::File,
    ack: fs::File,
}

impl NsWriter {
    fn open(path: &std::path::Path) -> NsWriter {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        let cpath = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        let (mut cmd, mut ack) = ([0; 2], [0; 2]);
        // SAFETY: each array has room for two descriptors.
        unsafe {
            assert_eq!(libc::pipe2(cmd.as_mut_ptr(), libc::O_CLOEXEC), 0);
            assert_eq!(libc::pipe2(ack.as_mut_ptr(), libc::O_CLOEXEC), 0);
        }
        let uid = crate::attack::ATTACKER;
        // SAFETY: the child makes plain system calls only (no allocation) and leaves with
        // _exit, running none of the parent's destructors.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: plain system calls on the child's own descriptors and buffers.
            unsafe {
                let reply = |v: i32| {
                    libc::write(ack[1], (&v as *const i32).cast(), 4);
                };
                let errno = || *libc::__errno_location();
                // Only the two pipe ends stay open: the fork copied every descriptor of the
                // test process, other tests' held files among them.
                let (lo, hi) = (cmd[0].min(ack[1]) as u32, cmd[0].max(ack[1]) as u32);
                libc::syscall(libc::SYS_close_range, 3u32, lo - 1, 0u32);
                libc::syscall(libc::SYS_close_range, lo + 1, hi - 1, 0u32);
                libc::syscall(libc::SYS_close_range, hi + 1, u32::MAX, 0u32);
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(uid) != 0
                    || libc::setuid(uid) != 0
                    || libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0
                {
                    reply(errno());
                    libc::_exit(1);
                }
                let fd = libc::open(cpath.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    reply(errno());
                    libc::_exit(1);
                }
                reply(0);
                let mut buf = [0u8; 256];
                loop {
                    let n = libc::read(cmd[0], buf.as_mut_ptr().cast(), buf.len());
                    if n <= 0 {
                        libc::_exit(0);
                    }
                    let w = libc::write(fd, buf.as_ptr().cast(), n as usize);
                    reply(if w == n {
                        0
                    } else if w < 0 {
                        errno()
                    } else {
                        -1
                    });
                }
            }
        }
        // SAFETY: the child's ends are closed here; ours are owned from now on.
        let (cmd, ack) = unsafe {
            libc::close(cmd[0]);
            libc::close(ack[1]);
            (fs::File::from_raw_fd(cmd[1]), fs::File::from_raw_fd(ack[0]))
        };
        let mut w = NsWriter { pid, cmd, ack };
        if let Err(e) = w.answer() {
            panic!(
                "the attacker could not open {} in a namespace of its own: {e}",
                path.display()
            );
        }
        w
    }

    fn answer(&mut self) -> std::io::Result<()> {
        use std::io::Read;
        let mut v = [0u8; 4];
        self.ack.read_exact(&mut v)?;
        match i32::from_ne_bytes(v) {
            0 => Ok(()),
            -1 => panic!("short write"),
            e => Err(std::io::Error::from_raw_os_error(e)),
        }
    }

    /// One write(2) of `data` through the held descriptor.
    fn write(&mut self, data: &str) -> std::io::Result<()> {
        assert!(data.len() <= 256);
        self.cmd.write_all(data.as_bytes()).unwrap();
        self.answer()
    }
}

impl Drop for NsWriter {
    fn drop(&mut self) {
        // SAFETY: our own child; closing its command pipe ends it.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// QA: a program that holds only a shared writable mapping (its descriptor closed) goes on
/// writing the data file after a kill -9, through the kernel; a takeover then lost those
/// writes without an error. The start refuses while such a mapping exists, naming it.
#[test]
fn a_start_over_a_killed_session_waits_for_a_mapping_of_it() {
    if !fuse_available() {
        return;
    }
    use std::os::fd::AsRawFd;
    let m = mount_with("passthrough");
    fs::write(m.path("mapped"), vec![b'a'; 4096]).unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("mapped"))
        .unwrap();
    // SAFETY: a fresh shared mapping of an open file, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    drop(f);
    let p = p.cast::<u8>();
    // SAFETY: inside the mapping.
    unsafe { p.write_volatile(b'1') };
    m.kill_daemon();
    unsafe { p.add(1).write_volatile(b'2') };
    let out = crate::harness::asdfs_env(m.mount_args(), &m.env);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    let refused = !out.status.success();
    unsafe { p.add(2).write_volatile(b'3') };
    // SAFETY: the mapping made above.
    unsafe { libc::munmap(p.cast(), 4096) };
    assert!(
        refused,
        "a new session started while a mapping of the old one still writes"
    );
    assert!(
        said.contains(&format!("pid {} (", std::process::id())),
        "{said}"
    );
    assert!(said.contains(" maps "), "{said}");
    m.mount();
    assert_eq!(&fs::read(m.path("mapped")).unwrap()[..4], b"123a");
    m.unmount();
    assert_eq!(
        &fs::read(m.disk_copy().join("mapped")).unwrap()[..4],
        b"123a"
    );
}
