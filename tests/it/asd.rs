//! The asd-compatible command end to end on real mounts: an asd.conf with three targets,
//! `asd sync` (one daemon for all), writes, `asd p`, `asd resync` (data on disk), `asd unsync`
//! (disk equals what programs saw, nothing left mounted); and `asdfs status` checked against
//! what the test did.

mod day_one;

use crate::harness::{BIN, asdfs, fuse_available};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Three targets under one disk directory, an asd.conf naming them, and the binary under
/// the name `asd`. Dropping it stops everything it started.
struct Scene {
    _disk: tempfile::TempDir,
    volatile: tempfile::TempDir,
    bin: tempfile::TempDir,
    conf: PathBuf,
    targets: Vec<PathBuf>,
}

impl Scene {
    fn new() -> Scene {
        let disk = tempfile::Builder::new()
            .prefix("asdfs-asd-")
            .tempdir_in("/tmp")
            .unwrap();
        let volatile = tempfile::Builder::new()
            .prefix("asdfs-asd-vol-")
            .tempdir_in("/dev/shm")
            .unwrap();
        let bin = tempfile::Builder::new()
            .prefix("asdfs-asd-bin-")
            .tempdir_in("/tmp")
            .unwrap();
        std::os::unix::fs::symlink(BIN, bin.path().join("asd")).unwrap();
        let targets: Vec<PathBuf> = ["web root", "cache", "log"]
            .iter()
            .map(|n| disk.path().join(n))
            .collect();
        for t in &targets {
            std::fs::create_dir(t).unwrap();
            std::fs::write(t.join("old.txt"), b"from disk\n").unwrap();
        }
        std::fs::create_dir(targets[0].join("sub")).unwrap();
        std::fs::write(targets[0].join("sub/keep"), b"keep").unwrap();
        let conf = disk.path().join("asd.conf");
        let text = format!(
            "# asd.conf as people write it\n\
             WHATTOSYNC=(\n  '{}'   # quoted, with a space\n  \"{}\"\n  {}\n)\n\
             VOLATILE=\"{}\"\nUSE_BACKUPS=\"yes\"\nBACKUP_LIMIT=3\n\
             ENABLE_HARDLINK_SAFETY_CHECK=1\n",
            targets[0].display(),
            targets[1].display(),
            targets[2].display(),
            volatile.path().display()
        );
        std::fs::write(&conf, text).unwrap();
        Scene {
            _disk: disk,
            volatile,
            bin,
            conf,
            targets,
        }
    }

    fn asd(&self, verb: &str) -> Output {
        Command::new(self.bin.path().join("asd"))
            .arg(verb)
            .env("ASDCONF", &self.conf)
            .env("ASDFS_LOG", "warn")
            .output()
            .expect("running asd")
    }

    fn mounted(&self) -> Vec<PathBuf> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        self.targets
            .iter()
            .filter(|t| {
                let want = t.to_str().unwrap().replace(' ', "\\040");
                mounts
                    .lines()
                    .any(|l| l.split(' ').nth(1) == Some(want.as_str()))
            })
            .cloned()
            .collect()
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        if !self.mounted().is_empty() {
            let _ = self.asd("unsync");
        }
        for t in self.mounted() {
            let _ = Command::new("umount").arg("-l").arg(&t).status();
        }
        let root = self.volatile.path().join("asdfs");
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&root)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn status(target: &Path) -> Value {
    let out = asdfs(["status", "--json", target.to_str().unwrap()]);
    let s = ok(&out, "asdfs status");
    let v: Value = serde_json::from_str(&s).unwrap();
    v[0].clone()
}

/// Polls status until `done` holds (the disk usage is measured in the background).
fn status_when(target: &Path, done: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(target);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < end, "status never got there: {s:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the process is gone (or a zombie).
/// Gone when no thread of it is left: a zombie leader can outlive its other threads' exit
/// by a moment, and its descriptors (the control sockets) close with the last thread; a
/// request in between would meet a listener about to close (ECONNRESET).
fn wait_gone(pid: u64) {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let stat = std::fs::read(format!("/proc/{pid}/stat")).unwrap_or_default();
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count())
            .unwrap_or(0);
        if stat.is_empty() || threads == 0 || (threads == 1 && text(&stat).contains(") Z")) {
            return;
        }
        assert!(Instant::now() < end, "the daemon {pid} is still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn asd_sync_p_resync_unsync_with_three_targets() {
    if !fuse_available() {
        return;
    }
    let s = Scene::new();
    let out = s.asd("sync");
    let stdout = ok(&out, "asd sync");
    assert!(stdout.contains("Sync successful"), "{stdout}");
    assert_eq!(s.mounted(), s.targets, "every target is mounted");

    // One daemon serves all three.
    let pids: Vec<u64> = s
        .targets
        .iter()
        .map(|t| status(t)["pid"].as_u64().unwrap())
        .collect();
    assert!(pids.iter().all(|p| *p == pids[0]), "one daemon: {pids:?}");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pids[0])).unwrap();
    assert!(text(&cmdline).contains("log"), "{}", text(&cmdline));

    // A second sync mounts nothing more and still succeeds.
    let again = ok(&s.asd("sync"), "second asd sync");
    assert!(again.contains("already in RAM"), "{again}");

    // Programs write.
    let [web, cache, log] = [&s.targets[0], &s.targets[1], &s.targets[2]];
    std::fs::write(web.join("index.html"), b"<h1>hi</h1>").unwrap();
    std::fs::remove_file(web.join("old.txt")).unwrap();
    std::fs::rename(web.join("sub"), web.join("moved")).unwrap();
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 256) as u8).collect();
    std::fs::write(cache.join("blob"), &blob).unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(log.join("old.txt"))
            .unwrap();
        f.write_all(b"appended\n").unwrap();
    }

    // `asd p` shows every target as mounted, with what is not on disk yet.
    let p = ok(&s.asd("p"), "asd p");
    for t in &s.targets {
        assert!(
            p.contains(&format!("{}: mounted (fuse), pid {}", t.display(), pids[0])),
            "{p}"
        );
    }
    assert!(
        p.contains(&format!("per {} settings", s.conf.display())),
        "{p}"
    );
    assert!(p.contains("not on disk: 1 file (292.97 KiB)"), "{p}");
    assert_eq!(read(&s.targets[1].join("blob")), blob);

    // `asd resync`: on disk now, still mounted.
    let r = ok(&s.asd("resync"), "asd resync");
    assert!(r.contains("Sync successful"), "{r}");
    assert_eq!(s.mounted(), s.targets);
    // The disk copy is under the mount: compare after unsync, and check the flush reports.
    for t in &s.targets {
        let st = status(t);
        assert_eq!(st["dirty_files"], 0, "{st:#}");
        assert_eq!(st["last_flush"]["ok"], true, "{st:#}");
        assert_eq!(st["generation"], 1, "{st:#}");
    }

    // `asd unsync`: nothing mounted, no daemon, the disk equals what programs saw.
    let u = ok(&s.asd("unsync"), "asd unsync");
    assert!(u.contains("Unsync successful"), "{u}");
    assert!(s.mounted().is_empty(), "still mounted: {:?}", s.mounted());
    wait_gone(pids[0]);
    assert_eq!(read(&web.join("index.html")), b"<h1>hi</h1>");
    assert!(!web.join("old.txt").exists());
    assert_eq!(read(&web.join("moved/keep")), b"keep");
    assert!(!web.join("sub").exists());
    assert_eq!(read(&cache.join("blob")), blob);
    assert_eq!(read(&log.join("old.txt")), b"from disk\nappended\n");

    // Nothing running: resync says so and exits 0 as asd does (issue 15: cron jobs and
    // asd-resync.timer must not fail); unsync is already done (0).
    let r = s.asd("resync");
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    assert!(
        text(&r.stdout).contains("ASD is not running"),
        "{}",
        text(&r.stdout)
    );
    assert_eq!(s.asd("unsync").status.code(), Some(0));
}

#[test]
fn asd_sync_reports_the_target_that_failed_and_mounts_the_others() {
    if !fuse_available() {
        return;
    }
    let s = Scene::new();
    std::fs::remove_dir_all(&s.targets[1]).unwrap();
    let out = s.asd("sync");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}: no such directory", s.targets[1].display())),
        "{err}"
    );
    assert!(err.contains("sync FAILED for 1 of 3 targets"), "{err}");
    assert_eq!(
        s.mounted(),
        vec![s.targets[0].clone(), s.targets[2].clone()]
    );
    let u = ok(&s.asd("unsync"), "asd unsync");
    assert!(u.contains("Unsync successful"), "{u}");
    assert!(s.mounted().is_empty());
}

#[test]
fn a_config_asd_cannot_read_mounts_nothing() {
    if !fuse_available() {
        return;
    }
    let s = Scene::new();
    let good = std::fs::read_to_string(&s.conf).unwrap();
    std::fs::write(
        &s.conf,
        good.replace("BACKUP_LIMIT=3", "BACKUP_LIMIT=three"),
    )
    .unwrap();
    let out = s.asd("sync");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!("asd: {}:", s.conf.display())),
        "{err}"
    );
    assert!(err.contains("BACKUP_LIMIT"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(s.mounted().is_empty());
}

#[test]
fn status_counts_what_the_program_did() {
    if !fuse_available() {
        return;
    }
    let s = Scene::new();
    ok(&s.asd("sync"), "asd sync");
    let t = &s.targets[1];
    let before = status_when(t, |v| v["disk"].is_object());
    assert_eq!(before["mode"], "fuse");
    assert_eq!(before["state"], "mounted");
    assert_eq!(before["dirty_files"], 0);
    assert_eq!(before["bytes_written"], 0);
    assert_eq!(before["disk"]["files"], 1, "old.txt: {before:#}");
    assert!(before["last_flush"].is_null());
    assert!(before["next_flush_secs"].as_u64().unwrap() <= 300);

    // Two files written through the mount, 100000 + 23456 bytes in three writes.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(t.join("one")).unwrap();
        f.write_all(&vec![1u8; 60_000]).unwrap();
        f.write_all(&vec![2u8; 40_000]).unwrap();
    }
    std::fs::write(t.join("two"), vec![3u8; 23_456]).unwrap();
    // With passthrough the daemon learns a file's size at its release, which the kernel
    // sends after close(2) returned.
    let dirty = status_when(t, |v| v["open_files"] == 0);
    assert_eq!(dirty["dirty_files"], 2, "{dirty:#}");
    assert_eq!(dirty["dirty_dirs"], 1, "{dirty:#}");
    assert_eq!(dirty["dirty_bytes"], 123_456, "{dirty:#}");
    assert_eq!(dirty["bytes_written"], 123_456, "{dirty:#}");
    assert_eq!(dirty["bytes_flushed"], 0, "{dirty:#}");
    assert!(dirty["ram_bytes"].as_u64().unwrap() >= 123_456, "{dirty:#}");
    assert!(dirty["oldest_change_secs"].is_u64(), "{dirty:#}");

    let out = asdfs(["flush", t.to_str().unwrap()]);
    ok(&out, "asdfs flush");
    let flushed = status_when(t, |v| v["disk"]["generation"] == 1);
    let last = &flushed["last_flush"];
    assert_eq!(last["ok"], true, "{flushed:#}");
    assert_eq!(last["files"], 2, "{flushed:#}");
    assert_eq!(last["bytes"], 123_456, "{flushed:#}");
    assert_eq!(last["generation"], 1, "{flushed:#}");
    assert_eq!(flushed["dirty_files"], 0, "{flushed:#}");
    assert_eq!(flushed["dirty_bytes"], 0, "{flushed:#}");
    assert!(flushed["oldest_change_secs"].is_null(), "{flushed:#}");
    assert_eq!(flushed["bytes_flushed"], 123_456, "{flushed:#}");
    assert_eq!(flushed["disk"]["files"], 3, "{flushed:#}");
    let disk_bytes = flushed["disk"]["bytes"].as_u64().unwrap();
    assert!(disk_bytes >= 123_456, "{flushed:#}");
    assert!(
        flushed["backup"]
            .as_str()
            .unwrap()
            .contains("1 file linked"),
        "{flushed:#}"
    );
    assert_eq!(flushed["crash_snapshots"].as_array().unwrap().len(), 0);
}

#[test]
fn unsync_says_which_target_still_has_open_files() {
    if !fuse_available() {
        return;
    }
    use std::io::Write;
    let s = Scene::new();
    ok(&s.asd("sync"), "asd sync");
    let held = &s.targets[1];
    let pid = status(held)["pid"].as_u64().unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(held.join("old.txt"))
        .unwrap();
    f.write_all(b"before unsync\n").unwrap();

    let u = ok(&s.asd("unsync"), "asd unsync");
    let lines: Vec<&str> = u.lines().collect();
    let about = |t: &Path| {
        let prefix = format!("asd: {}:", t.display());
        let mine: Vec<&&str> = lines.iter().filter(|l| l.starts_with(&prefix)).collect();
        assert_eq!(mine.len(), 1, "one line per target: {u}");
        mine[0].to_string()
    };
    assert!(
        about(held).contains("unmounted, but 1 file was still open")
            && about(held).contains("when it is closed"),
        "{u}"
    );
    for t in [&s.targets[0], &s.targets[2]] {
        assert!(about(t).ends_with("the disk copy is up to date"), "{u}");
    }
    assert_eq!(lines.last(), Some(&"Unsync successful"), "{u}");
    assert!(s.mounted().is_empty(), "still mounted: {:?}", s.mounted());

    // The daemon serves the open file until it is closed, then writes it and exits.
    f.write_all(b"after unsync\n").unwrap();
    drop(f);
    wait_gone(pid);
    assert_eq!(
        read(&held.join("old.txt")),
        b"from disk\nbefore unsync\nafter unsync\n"
    );
}

/// SIGKILLs the daemon with this pid and waits until it is gone; its mounts stay, dead.
fn kill_daemon(pid: u64) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    wait_gone(pid);
}

/// Exits non-zero with `lines` lines on stderr (one per target, and for asd's verbs a
/// summary) that name what to run; never "successful".
fn says_what_to_run(out: &Output, what: &str, run: &str, lines: usize) {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{what}: {}{err}", text(&out.stdout));
    assert!(!text(&out.stdout).contains("successful"), "{what}");
    assert!(err.contains(run), "{what}: {err}");
    assert_eq!(err.lines().count(), lines, "{what}: {err}");
}

/// Issue 11 item 4: after `kill -9` of the daemon, every verb either takes the store over
/// (the data is served, or written to disk) or says in one line what to run.
#[test]
fn issue_11_verbs_after_the_daemon_was_killed() {
    if !fuse_available() {
        return;
    }
    let s = Scene::new();
    ok(&s.asd("sync"), "asd sync");
    let web = s.targets[0].clone();
    let t = web.to_str().unwrap();
    std::fs::write(web.join("new"), b"in RAM only").unwrap();
    kill_daemon(status(&web)["pid"].as_u64().unwrap());

    // Nothing can serve the mount: these say what to run.
    for verb in ["flush", "status"] {
        says_what_to_run(&asdfs([verb, t]), verb, "asdfs mount", 1);
    }
    says_what_to_run(&s.asd("resync"), "asd resync", "asd sync", 4);

    // `asd sync` takes the store over: the data is served again.
    let out = ok(&s.asd("sync"), "asd sync after the kill");
    assert!(out.contains("Sync successful"), "{out}");
    assert_eq!(read(&web.join("new")), b"in RAM only");

    // `asd unsync` after another kill takes over and writes everything to disk.
    std::fs::write(web.join("second"), b"also in RAM").unwrap();
    kill_daemon(status(&web)["pid"].as_u64().unwrap());
    let out = ok(&s.asd("unsync"), "asd unsync after the kill");
    assert!(out.contains("Unsync successful"), "{out}");
    assert!(s.mounted().is_empty(), "still mounted: {:?}", s.mounted());
    assert_eq!(read(&web.join("new")), b"in RAM only");
    assert_eq!(read(&web.join("second")), b"also in RAM");

    // `asdfs unmount` after a kill takes over too, and returns with the data on disk.
    ok(&s.asd("sync"), "asd sync again");
    std::fs::write(web.join("third"), b"third").unwrap();
    let pid = status(&web)["pid"].as_u64().unwrap();
    kill_daemon(pid);
    for t in &s.targets {
        let out = asdfs(["unmount", t.to_str().unwrap()]);
        ok(&out, "asdfs unmount after the kill");
    }
    assert!(s.mounted().is_empty(), "still mounted: {:?}", s.mounted());
    assert_eq!(read(&web.join("third")), b"third");
}
