//! When changes reach the disk copy: on the timer, on fsync with `--fsync sync`, at SIGTERM
//! and at an unmount by someone else; and what happens when RAM or the disk is full.

use crate::harness::{Mount, asdfs, fuse_available};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn the_timer_flushes_by_itself() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::prepare(|_| {});
    m.extra = vec!["--flush-interval".into(), "1s".into()];
    m.mount();
    fs::write(m.path("tick"), b"tock").unwrap();
    wait_for("the timed flush", Duration::from_secs(10), || {
        fs::read(m.disk_copy().join("tick")).ok().as_deref() == Some(b"tock")
    });
}

#[test]
fn fsync_sync_writes_the_file_before_returning() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::prepare(|_| {});
    m.extra = vec!["--fsync".into(), "sync".into()];
    m.mount();
    let mut f = fs::File::create(m.path("db")).unwrap();
    f.write_all(b"committed").unwrap();
    assert!(
        !m.disk_copy().join("db").exists(),
        "nothing on disk before fsync"
    );
    f.sync_all().unwrap();
    assert_eq!(fs::read(m.disk_copy().join("db")).unwrap(), b"committed");
}

/// An fsync in sync mode writes that one file and the names leading to it, at the disk's
/// price: a file a flush already wrote is written in place (same disk inode), and the
/// other changes stay in RAM (design.md §6.3).
#[test]
fn fsync_sync_writes_that_file_only_in_place() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    if !fuse_available() {
        return;
    }
    let mut m = Mount::prepare(|_| {});
    m.extra = vec!["--fsync".into(), "sync".into()];
    m.mount();
    let disk = m.disk_copy();
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(m.path("db"))
        .unwrap();
    f.write_all(&vec![b'a'; 100_000]).unwrap();
    f.sync_all().unwrap();
    let first = fs::metadata(disk.join("db")).unwrap().ino();
    fs::write(m.path("other"), b"not fsynced").unwrap();
    f.write_all_at(b"second", 4096).unwrap();
    f.write_all_at(b"grown", 200_000).unwrap();
    f.sync_data().unwrap();
    let mut want = vec![b'a'; 100_000];
    want[4096..4102].copy_from_slice(b"second");
    want.resize(200_000, 0);
    want.extend_from_slice(b"grown");
    assert_eq!(fs::read(disk.join("db")).unwrap(), want);
    assert_eq!(
        fs::metadata(disk.join("db")).unwrap().ino(),
        first,
        "written in place"
    );
    assert!(
        !disk.join("other").exists(),
        "an fsync of one file wrote another"
    );
    // A file in new directories: its fsync makes them.
    fs::create_dir_all(m.path("fresh/deep")).unwrap();
    let mut g = fs::File::create(m.path("fresh/deep/x")).unwrap();
    g.write_all(b"deep").unwrap();
    g.sync_all().unwrap();
    assert_eq!(fs::read(disk.join("fresh/deep/x")).unwrap(), b"deep");
    // Unchanged since: nothing to write, and the disk keeps what the fsync wrote.
    f.sync_all().unwrap();
    assert_eq!(fs::read(disk.join("db")).unwrap(), want);
    // Written in place once more, then the daemon killed: the disk copy has it without a
    // takeover, and the takeover serves it (the store log said it was clean).
    f.write_all_at(b"third", 0).unwrap();
    f.sync_data().unwrap();
    want[..5].copy_from_slice(b"third");
    drop((f, g));
    m.kill_daemon();
    assert_eq!(fs::read(disk.join("db")).unwrap(), want);
    m.mount();
    assert_eq!(fs::read(m.path("db")).unwrap(), want);
    assert_eq!(fs::read(m.path("other")).unwrap(), b"not fsynced");
}

#[test]
fn fsync_defer_returns_without_writing() {
    if !fuse_available() {
        return;
    }
    let m = Mount::new();
    let mut f = fs::File::create(m.path("db")).unwrap();
    f.write_all(b"later").unwrap();
    f.sync_all().unwrap();
    assert!(!m.disk_copy().join("db").exists());
}

#[test]
fn sigterm_flushes_and_unmounts() {
    if !fuse_available() {
        return;
    }
    let m = Mount::new();
    fs::write(m.path("x"), b"before sigterm").unwrap();
    let pid = m.daemon_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_for("the unmount", Duration::from_secs(10), || !m.is_mounted());
    wait_for("the daemon to exit", Duration::from_secs(10), || {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.split(' ').nth(2) == Some("Z"))
            .unwrap_or(true)
    });
    assert_eq!(fs::read(m.path("x")).unwrap(), b"before sigterm");
    assert!(
        !m.store().join("private").exists(),
        "the store is removed after a clean stop"
    );
}

/// With the daemon data path (pinned: passthrough's stop is `passthrough/stop.rs`), the
/// cut-off aborts the connection, and a write after it fails with ENOTCONN.
#[test]
fn sigterm_cuts_off_files_still_open_after_the_grace_and_loses_nothing() {
    if !fuse_available() {
        return;
    }
    let fusectl = || {
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.contains(" /sys/fs/fuse/connections "))
    };
    let fusectl_before = fusectl();
    let mut m = Mount::prepare(|_| {});
    m.env.push(("ASDFS_STOP_GRACE".into(), "1".into()));
    m.env.push(("ASDFS_DATA_PATH".into(), "daemon".into()));
    m.mount();
    let mut f = fs::File::create(m.path("held")).unwrap();
    f.write_all(b"written while open").unwrap();
    let pid = m.daemon_pid().unwrap();
    let sent = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_for("the daemon to exit", Duration::from_secs(30), || {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.split(' ').nth(2) == Some("Z"))
            .unwrap_or(true)
    });
    assert!(
        sent.elapsed() >= Duration::from_secs(1),
        "stopped before the grace"
    );
    // The holder is told: its next write fails rather than vanishing.
    let late = f.write_all(b" and after").and_then(|_| f.sync_all());
    assert!(late.is_err(), "a write after the cut-off succeeded");
    drop(f);
    assert!(!m.is_mounted());
    assert_eq!(fs::read(m.path("held")).unwrap(), b"written while open");
    assert!(
        !m.store().join("private").exists(),
        "the store is removed after the final flush"
    );
    assert_eq!(
        fusectl(),
        fusectl_before,
        "the cut-off leaves the machine's mounts as they were"
    );
}

#[test]
fn an_unmount_by_someone_else_flushes() {
    if !fuse_available() {
        return;
    }
    for tool in ["umount", "fusermount3"] {
        let m = Mount::new();
        fs::write(m.path("y"), tool.as_bytes()).unwrap();
        // Other tests fork this process (attack tests run a closure as another uid without
        // exec): a child forked while a file of this mount was open holds it for a moment,
        // and the kernel then says busy. Tried again shortly, as a person would.
        let mut tries = 0;
        loop {
            let st = match tool {
                "umount" => Command::new("umount").arg(&m.target).status(),
                _ => Command::new("fusermount3")
                    .arg("-u")
                    .arg(&m.target)
                    .status(),
            };
            tries += 1;
            if st.unwrap().success() {
                break;
            }
            assert!(tries < 20, "{tool} kept failing");
            std::thread::sleep(Duration::from_millis(100));
        }
        wait_for("the final flush", Duration::from_secs(10), || {
            fs::read(m.path("y")).ok().as_deref() == Some(tool.as_bytes())
        });
    }
}

mod full_store;

/// A small tmpfs mounted at `dir`, unmounted on drop.
pub(crate) struct SmallFs(pub(crate) std::path::PathBuf);

impl SmallFs {
    pub(crate) fn new(dir: &Path, size: &str) -> SmallFs {
        fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            // mode 0711: asdfs refuses a store root others can write (tmpfs defaults to 1777).
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0711"),
                "asdfs-test",
            ])
            .arg(dir)
            .status();
        assert!(st.unwrap().success(), "mounting a small tmpfs");
        SmallFs(dir.to_path_buf())
    }
}

/// The disk copy's directory `target` on a small tmpfs of its own (`fs`), in a temporary
/// directory under /tmp, and a volatile directory on /dev/shm; all gone on drop.
pub(crate) struct SmallDisk {
    pub(crate) vol: tempfile::TempDir,
    pub(crate) fs: SmallFs,
    pub(crate) target: std::path::PathBuf,
    _base: tempfile::TempDir,
}

impl SmallDisk {
    pub(crate) fn new(prefix: &str, size: &str) -> SmallDisk {
        let base = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/tmp")
            .unwrap();
        let fs = SmallFs::new(&base.path().join("fs"), size);
        let target = fs.0.join("t");
        fs::create_dir(&target).unwrap();
        let vol = tempfile::Builder::new()
            .prefix("asdfs-vol-")
            .tempdir_in("/dev/shm")
            .unwrap();
        SmallDisk {
            vol,
            fs,
            target,
            _base: base,
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_tmpfs_gives_enospc_and_loses_nothing() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::prepare(|_| {});
    let small = SmallFs::new(&m.volatile.path().join("asdfs"), "4m");
    m.extra = vec![];
    m.mount();
    fs::write(m.path("kept"), vec![1u8; 1 << 20]).unwrap();
    let mut big = fs::File::create(m.path("big")).unwrap();
    let chunk = vec![2u8; 256 << 10];
    let mut err = None;
    for _ in 0..40 {
        if let Err(e) = big.write_all(&chunk) {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("writing 10 MiB into a 4 MiB tmpfs must fail");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    drop(big);
    assert_eq!(
        fs::read(m.path("kept")).unwrap(),
        vec![1u8; 1 << 20],
        "what was written before is intact"
    );
    fs::remove_file(m.path("big")).unwrap();
    m.unmount();
    assert_eq!(fs::read(m.path("kept")).unwrap(), vec![1u8; 1 << 20]);
    drop(small);
}

#[test]
fn a_full_disk_keeps_changes_in_ram_reports_and_retries() {
    if !fuse_available() {
        return;
    }
    // The disk copy lives on a small filesystem of its own.
    let small = SmallDisk::new("asdfs-full-", "2m");
    let (target, vol) = (small.target.clone(), &small.vol);
    fs::write(target.join("old"), b"old content").unwrap();
    let t = target.to_str().unwrap();
    let out = asdfs([
        "mount",
        t,
        "--volatile",
        vol.path().to_str().unwrap(),
        "--flush-interval",
        "1h",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let guard = scopeguard(t);
    fs::write(target.join("old"), b"new content").unwrap();
    fs::write(target.join("huge"), vec![3u8; 3 << 20]).unwrap();
    let out = asdfs(["flush", t]);
    assert!(!out.status.success(), "a flush onto a full disk fails");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("No space left") && err.contains("stay in RAM"),
        "{err}"
    );
    let out = asdfs(["status", "--json", t]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        st[0]["last_flush"]["ok"], false,
        "status shows the failure: {st}"
    );
    assert!(st[0]["flush_failures"].as_u64().unwrap() >= 1);
    // Nothing half-written: the old file is intact and no staging is left.
    let side = small.fs.0.join(".t-asdfs");
    assert!(fs::read_dir(&side).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("stage")
    }));
    // Make room: the next flush succeeds with everything.
    Command::new("mount")
        .args(["-o", "remount,size=16m"])
        .arg(&small.fs.0)
        .status()
        .unwrap();
    let out = asdfs(["flush", t]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(guard);
    assert_eq!(fs::read(target.join("old")).unwrap(), b"new content");
    assert_eq!(fs::read(target.join("huge")).unwrap().len(), 3 << 20);
}

/// Unmounts a target when dropped.
pub(crate) struct Unmounter(String);

pub(crate) fn scopeguard(t: &str) -> Unmounter {
    Unmounter(t.to_string())
}

impl Drop for Unmounter {
    fn drop(&mut self) {
        let out = asdfs(["unmount", &self.0]);
        if !out.status.success() {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[test]
fn only_root_and_the_owner_may_command_the_daemon() {
    if !fuse_available() || !nix::unistd::geteuid().is_root() {
        return;
    }
    let m = Mount::new();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(m.volatile.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // Another user (nobody) may look but not command.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            crate::harness::BIN,
            "flush",
        ])
        .arg(&m.target)
        .output()
        .unwrap();
    assert!(!out.status.success());
    // Refused before anything is sent (the CLI sees it is not theirs), or by the daemon.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("permission denied") || said.contains("not yours"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(m.status()["state"] == "mounted");
}

/// Open descriptors of a process.
fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn more_files_than_the_descriptor_budget_stay_correct_through_flush_kill_and_takeover() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::prepare(|t| {
        for i in 0..50 {
            fs::write(t.join(format!("disk{i}")), format!("on disk {i}")).unwrap();
        }
    });
    m.env.push(("ASDFS_OPEN_FILES".into(), "16".into()));
    m.mount();
    let content = |i: usize| format!("file {i} ").repeat(i % 7 + 1);
    // Some files stay open throughout, the rest are written and closed.
    let mut held: Vec<fs::File> = (0..5)
        .map(|i| fs::File::create(m.path(&format!("held{i}"))).unwrap())
        .collect();
    for i in 0..300 {
        fs::write(m.path(&format!("f{i}")), content(i)).unwrap();
        if i % 60 == 0 {
            for (j, h) in held.iter_mut().enumerate() {
                write!(h, "{j}:{i} ").unwrap();
            }
        }
    }
    for i in 0..50 {
        let p = m.path(&format!("disk{i}"));
        assert_eq!(fs::read_to_string(&p).unwrap(), format!("on disk {i}"));
    }
    let pid = m.daemon_pid().unwrap();
    let fds = fd_count(pid);
    assert!(
        fds < 120,
        "the daemon holds {fds} descriptors with a budget of 16"
    );
    m.flush();
    for i in (0..300).step_by(3) {
        fs::write(m.path(&format!("f{i}")), format!("changed {i}")).unwrap();
    }
    drop(held);
    m.kill_daemon();
    m.mount();
    let expect = |i: usize| {
        if i % 3 == 0 {
            format!("changed {i}")
        } else {
            content(i)
        }
    };
    for i in 0..300 {
        assert_eq!(
            fs::read_to_string(m.path(&format!("f{i}"))).unwrap(),
            expect(i)
        );
    }
    let held_text = |j: usize| {
        (0..300)
            .step_by(60)
            .map(|i| format!("{j}:{i} "))
            .collect::<String>()
    };
    for j in 0..5 {
        assert_eq!(
            fs::read_to_string(m.path(&format!("held{j}"))).unwrap(),
            held_text(j)
        );
    }
    m.unmount();
    for i in 0..300 {
        assert_eq!(
            fs::read_to_string(m.path(&format!("f{i}"))).unwrap(),
            expect(i),
            "f{i} on disk"
        );
    }
    for j in 0..5 {
        assert_eq!(
            fs::read_to_string(m.path(&format!("held{j}"))).unwrap(),
            held_text(j)
        );
    }
}
