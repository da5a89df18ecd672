//! Mounting the real filesystem for tests: every test gets its own disk directory (on the
//! machine's disk, /tmp) and its own volatile directory (on /dev/shm), and a guard that
//! unmounts and stops the daemon when the test ends, passing or failing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_asdfs");

/// Whether this machine can mount FUSE filesystems. Without, a test prints why and passes
/// locally, but fails when `CI` is set.
pub fn fuse_available() -> bool {
    let why = if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse does not exist")
    } else if !nix::unistd::geteuid().is_root() && !Path::new("/usr/bin/fusermount3").exists() {
        Some("not root and no fusermount3")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if std::env::var_os("CI").is_some() => panic!("FUSE is required in CI: {why}"),
        Some(why) => {
            eprintln!("skipping: FUSE is not available ({why})");
            false
        }
    }
}

/// Runs asdfs with arguments; returns its output.
pub fn asdfs<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    asdfs_env(args, &[])
}

/// Runs asdfs with arguments and extra environment variables; returns its output.
pub fn asdfs_env<I, S>(args: I, env: &[(String, String)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(BIN);
    cmd.args(args).env(
        "ASDFS_LOG",
        std::env::var("ASDFS_TEST_LOG").unwrap_or_else(|_| "warn".into()),
    );
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("running asdfs")
}

/// A target directory with its disk copy and RAM store, mounted or not.
/// A private mount namespace copies every mount of the moment, other tests' overlays too,
/// and a copied overlay counts as in use (design.md §10.4): its flushes cannot swap in a
/// fresh upper layer. Tests that make such namespaces hold this for writing, overlay-mode
/// mounts for reading.
pub static NAMESPACES: parking_lot::RwLock<()> = parking_lot::RwLock::new(());

pub struct Mount {
    /// Overlay mode: no private namespace is made meanwhile (see `NAMESPACES`).
    pub no_namespaces: Option<parking_lot::RwLockReadGuard<'static, ()>>,
    pub disk: tempfile::TempDir,
    pub volatile: tempfile::TempDir,
    pub target: PathBuf,
    pub extra: Vec<String>,
    /// Environment variables for the daemon.
    pub env: Vec<(String, String)>,
    /// The target directory opened before any mount: `/proc/self/fd/N` reaches the disk
    /// copy underneath the mount.
    under: std::fs::File,
}

impl Mount {
    /// `asdfs status --json` of this mount.
    pub fn status(&self) -> serde_json::Value {
        let out = asdfs(["status", "--json", self.target.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0].clone()
    }

    /// A target (`<disk>/t`) filled by `setup` before the first mount; not mounted yet.
    pub fn prepare(setup: impl FnOnce(&Path)) -> Mount {
        let disk = tempfile::Builder::new()
            .prefix("asdfs-disk-")
            .tempdir_in("/tmp")
            .expect("disk dir");
        let volatile = tempfile::Builder::new()
            .prefix("asdfs-vol-")
            .tempdir_in("/dev/shm")
            .expect("volatile dir");
        let target = disk.path().join("t");
        std::fs::create_dir(&target).unwrap();
        setup(&target);
        let under = std::fs::File::open(&target).expect("open target");
        Mount {
            no_namespaces: None,
            disk,
            volatile,
            target,
            extra: Vec::new(),
            // The tests read the daemon's log file (`log_tail`).
            env: vec![("ASDFS_LOG_FILE".into(), "1".into())],
            under,
        }
    }

    /// A path that reaches the disk copy even while the target is mounted.
    pub fn disk_copy(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.under.as_raw_fd()))
    }

    /// An empty target, mounted.
    pub fn new() -> Mount {
        Self::with(|_| {})
    }

    /// A target filled by `setup`, mounted.
    pub fn with(setup: impl FnOnce(&Path)) -> Mount {
        let m = Self::prepare(setup);
        m.mount();
        m
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.target.join(rel)
    }

    pub fn side(&self) -> PathBuf {
        self.disk.path().join(".t-asdfs")
    }

    pub fn mount_args(&self) -> Vec<String> {
        let mut a = vec![
            "mount".to_string(),
            self.target.display().to_string(),
            "--volatile".into(),
            self.volatile.path().display().to_string(),
            "--flush-interval".into(),
            "1h".into(),
        ];
        a.extend(self.extra.iter().cloned());
        a
    }

    /// The end of the daemons' log (for failure messages).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.volatile.path().join("asdfs/daemon.log"))
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn mount(&self) {
        let out = asdfs_env(self.mount_args(), &self.env);
        assert!(
            out.status.success(),
            "mount failed: {}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        assert!(
            self.is_mounted(),
            "mount returned but {} is not mounted",
            self.target.display()
        );
    }

    pub fn unmount(&self) {
        let out = asdfs(["unmount", self.target.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "unmount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.wait_unmounted();
    }

    /// Waits until the hardlink backup of the session start is made (it is made in the
    /// background after the mount).
    pub fn wait_backup(&self) {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let out = asdfs(["status", "--json", self.target.to_str().unwrap()]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if v[0]["backup"].as_str() != Some("being made") {
                return;
            }
            assert!(Instant::now() < end, "the backup took too long");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the crash snapshot of a start after a crash is written (it is written
    /// from hard links in the background after the mount).
    pub fn wait_crash_snapshot(&self) {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.status();
            let busy = s["unclean_start"]
                .as_str()
                .is_some_and(|u| u.contains("being written"));
            if !busy {
                return;
            }
            assert!(Instant::now() < end, "the crash snapshot took too long");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn flush(&self) {
        let out = asdfs(["flush", self.target.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "flush failed: {}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
    }

    pub fn is_mounted(&self) -> bool {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let me = self.target.to_str().unwrap();
        mounts.lines().any(|l| l.split(' ').nth(1) == Some(me))
    }

    fn wait_unmounted(&self) {
        let end = Instant::now() + Duration::from_secs(20);
        while self.is_mounted() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !self.is_mounted(),
            "{} still mounted",
            self.target.display()
        );
    }

    /// The store directory of this target.
    pub fn store(&self) -> PathBuf {
        let root = self.volatile.path().join("asdfs");
        std::fs::read_dir(&root)
            .ok()
            .and_then(|mut it| it.find_map(|e| e.ok().map(|e| e.path()).filter(|p| p.is_dir())))
            .unwrap_or(root)
    }

    /// The RAM store is gone, as after a reboot: its tmpfs of its own (root, design.md §2.1)
    /// unmounted, its directory removed.
    pub fn lose_store(&self) {
        lose_store(&self.store()).unwrap();
    }

    /// The daemon's pid, from the store's owner record.
    pub fn daemon_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.store().join("owner.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["pid"].as_i64().map(|p| p as i32)
    }

    /// SIGKILLs the daemon and waits until it is gone (the dead mount stays).
    pub fn kill_daemon(&self) {
        let pid = self.daemon_pid().expect("daemon pid");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        // Gone when no thread of it is left (a zombie leader can outlive its threads' exit
        // by a moment, and the descriptors close with the last thread).
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|d| d.count())
                .unwrap_or(0);
            let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = status
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                == Some("Z");
            if threads == 0 || (threads == 1 && zombie) {
                let _ = nix::sys::wait::waitpid(
                    nix::unistd::Pid::from_raw(pid),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.is_mounted() {
            let _ = asdfs(["unmount", self.target.to_str().unwrap()]);
        }
        if self.is_mounted() {
            let _ = Command::new("umount").arg("-l").arg(&self.target).status();
        }
        if let Some(pid) = self.daemon_pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Whatever is still mounted in the volatile directory (a private tmpfs, the pinned
        // disk directory of overlay mode), deepest first, before the directories go.
        let vol = self.volatile.path().to_str().unwrap().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut inside: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&vol))
            .collect();
        inside.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in inside {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

/// Removes a store directory as a reboot would, unmounting its `private/` tmpfs first.
pub fn lose_store(store: &Path) -> std::io::Result<()> {
    let private = store.join("private");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if mounts.contains(&format!(" {} ", private.display())) {
        let _ = Command::new("umount").arg("-l").arg(&private).status();
    }
    std::fs::remove_dir_all(store)
}

/// The content of version `v` of a file the "one instant" tests rewrite: `v` over and over,
/// 64 KiB, so that a torn copy shows.
pub fn instant_version(v: u64) -> Vec<u8> {
    v.to_le_bytes().repeat(8 * 1024)
}

/// Flushes `m` up to `tries` times while a writer rewrites the files `first` and `second`
/// in turn (`first` first) with `instant_version`s, and checks that every flush that wrote
/// both wrote them as of one instant (equal versions, or `first` one ahead) and neither
/// torn. Stops after `enough` such flushes; returns the versions they wrote.
pub fn flushes_of_one_instant(m: &Mount, tries: usize, enough: usize) -> Vec<(u64, u64)> {
    let read_version = |name: &str| {
        let d = std::fs::read(m.disk_copy().join(name)).ok()?;
        let v = u64::from_le_bytes(d.get(..8)?.try_into().unwrap());
        assert_eq!(d, instant_version(v), "{name}: torn");
        Some(v)
    };
    let mut seen = Vec::new();
    for _ in 0..tries {
        m.flush();
        // A file left out as busy keeps an older version: no instant to compare.
        let busy = m.status()["busy_files"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        let (Some(a), Some(b), false) = (read_version("first"), read_version("second"), busy)
        else {
            continue;
        };
        seen.push((a, b));
        assert!(
            a == b || a == b + 1,
            "a flush wrote the files from different instants: {seen:?}"
        );
        if seen.len() == enough {
            break;
        }
    }
    seen
}
