//! What the benchmarks share: the preflight check (root, /dev/fuse, the asdfs binary), the
//! mode to mount in, a mount guard that always unmounts, interruption as unwinding, cache
//! control, file helpers, timing and number formatting.
//!
//! Invariant: every mount a benchmark makes belongs to an [`Asdfs`] guard, whose `Drop`
//! unmounts it (and anything mounted below its directories) and stops its daemon, whether
//! the benchmark ends normally, panics, or is interrupted (SIGINT/SIGTERM become a panic at
//! the next [`check_interrupt`]).

// Each benchmark uses a different part of this module.
#![allow(dead_code)]

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const MIB: usize = 1 << 20;

/// How long an `asdfs` command may take before the benchmark gives up on it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// How the target is mounted: `asdfs mount --mode MODE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Fuse,
    Overlay,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fuse => "fuse",
            Mode::Overlay => "overlay",
        }
    }

    fn parse(s: &str) -> Result<Mode, String> {
        match s {
            "fuse" => Ok(Mode::Fuse),
            "overlay" => Ok(Mode::Overlay),
            _ => Err(format!("unknown mode {s:?}: expected fuse or overlay")),
        }
    }
}

/// What a benchmark runs with, checked before anything is created or mounted.
pub struct Env {
    pub bin: PathBuf,
    pub mode: Mode,
    /// How many times each measurement is repeated (the median is reported).
    pub runs: usize,
    /// More `asdfs mount` arguments, from `ASDFS_BENCH_MOUNT_ARGS` (split on whitespace).
    pub mount_args: Vec<String>,
}

impl Env {
    /// How asdfs is mounted, for report headers: `--mode fuse --backups no`.
    pub fn describe_mount(&self) -> String {
        let mut s = format!("--mode {}", self.mode.as_str());
        for a in &self.mount_args {
            s.push(' ');
            s.push_str(a);
        }
        if let Ok(d) = std::env::var("ASDFS_DATA_PATH") {
            s.push_str(&format!(" (ASDFS_DATA_PATH={d})"));
        }
        s
    }
}

/// Checks that this machine can run the benchmark; prints why not and exits with status 2
/// otherwise. `default_runs` applies unless `ASDFS_BENCH_RUNS` is set.
pub fn preflight(bench: &str, default_runs: usize) -> Env {
    match try_preflight(default_runs) {
        Ok(env) => {
            on_interrupt_unwind();
            env
        }
        Err(why) => {
            eprintln!("{bench}: cannot run: {why}");
            std::process::exit(2);
        }
    }
}

fn try_preflight(default_runs: usize) -> Result<Env, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root: it mounts FUSE filesystems and writes \
                    /proc/sys/vm/drop_caches"
            .into());
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| format!("FUSE is not available: /dev/fuse: {e}"))?;
    let bin = asdfs_bin();
    if !bin.is_file() {
        return Err(format!(
            "no asdfs binary at {} (set ASDFS_BIN, or run `cargo build --release`)",
            bin.display()
        ));
    }
    let runs = match std::env::var("ASDFS_BENCH_RUNS") {
        Ok(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("ASDFS_BENCH_RUNS={v:?} is not a positive number"))?,
        // `cargo test --all-targets` runs benchmarks without `--bench`: once, as a smoke test
        // that every workload still works; `cargo bench` measures.
        Err(_) if !std::env::args().any(|a| a == "--bench") => {
            eprintln!("smoke run (one repetition): use `cargo bench` for numbers");
            1
        }
        Err(_) => default_runs,
    };
    let mount_args = std::env::var("ASDFS_BENCH_MOUNT_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    Ok(Env {
        bin,
        mode: mode()?,
        runs,
        mount_args,
    })
}

/// `ASDFS_BIN`, else the binary Cargo built alongside this benchmark (`cargo bench` builds
/// the crate's binaries first, into `$CARGO_TARGET_DIR/release/asdfs`).
pub fn asdfs_bin() -> PathBuf {
    std::env::var_os("ASDFS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_asdfs")))
}

/// `--mode fuse|overlay` (or `--mode=...`) on the command line, else `ASDFS_BENCH_MODE`,
/// else fuse. Other arguments (Cargo passes `--bench`) are ignored.
fn mode() -> Result<Mode, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    for (i, a) in args.iter().enumerate() {
        if let Some(v) = a.strip_prefix("--mode=") {
            return Mode::parse(v);
        }
        if a == "--mode" {
            return Mode::parse(args.get(i + 1).map_or("", String::as_str));
        }
    }
    match std::env::var("ASDFS_BENCH_MODE") {
        Ok(v) => Mode::parse(&v),
        Err(_) => Ok(Mode::Fuse),
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM only set a flag; [`check_interrupt`] turns it into a panic, so the
/// guards unwind and unmount.
fn on_interrupt_unwind() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let act = SigAction::new(
        SigHandler::Handler(note_interrupt),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        if let Err(e) = unsafe { sigaction(sig, &act) } {
            eprintln!("warning: cannot handle {sig}: {e}");
        }
    }
}

/// Panics (unwinding through the guards) if the benchmark was interrupted.
pub fn check_interrupt() {
    if INTERRUPTED.load(Ordering::SeqCst) {
        panic!("interrupted");
    }
}

/// Writes dirty pages everywhere, so that writeback from setup does not land in a timed
/// section.
pub fn sync() {
    nix::unistd::sync();
}

/// Empties the page, dentry and inode caches (after writing dirty pages back). tmpfs keeps
/// its files: they are its storage.
pub fn drop_caches() {
    sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3").expect("writing /proc/sys/vm/drop_caches");
}

/// A directory for scratch files: under /dev/shm (tmpfs) or /tmp (disk).
pub fn temp_dir_in(parent: &str, prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .unwrap_or_else(|e| panic!("creating a directory in {parent}: {e}"))
}

/// Bytes that do not compress, the same every run.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift(seed | 1);
    (0..len).map(|_| rng.next() as u8).collect()
}

/// A small deterministic generator (random offsets, file contents).
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Creates (or truncates) `path` and writes `total` bytes in `chunk`-sized writes.
pub fn write_file(path: &Path, total: usize, chunk: &[u8]) -> io::Result<()> {
    let mut f = File::create(path)?;
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n])?;
        left -= n;
    }
    Ok(())
}

/// `files` files of `size` bytes in each of `dirs` directories `d000/f0000...` under `root`.
pub fn make_tree(root: &Path, dirs: usize, files: usize, size: usize) -> io::Result<()> {
    let data = pattern(size, 7);
    for d in 0..dirs {
        check_interrupt();
        let dir = root.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir)?;
        for f in 0..files {
            std::fs::write(dir.join(format!("f{f:04}")), &data)?;
        }
    }
    Ok(())
}

/// How long `f` takes.
pub fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// The median of `v` (the mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "median of nothing");
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// A rate or amount with thousands separators (`1,234,567`), or 3 significant digits below
/// 100 (`12.3`, `0.456`).
pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    if x < 100.0 {
        let decimals = if x >= 10.0 { 1 } else { 2 };
        return format!("{x:.decimals$}");
    }
    let digits = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration in ms below 10 s (`12.3 ms`), else in seconds.
pub fn fmt_time(d: f64) -> String {
    if d < 10.0 {
        format!("{} ms", fmt_num(d * 1e3))
    } else {
        format!("{d:.1} s")
    }
}

/// The uname release and the core count, for the report header.
pub fn machine() -> String {
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("Linux {kernel}, {cores} cores")
}

/// A target directory on disk (`/tmp/asdfs-bench-*/t`) with its RAM store on /dev/shm, and
/// the asdfs mount on it while mounted. Dropping it unmounts and removes everything.
pub struct Asdfs {
    bin: PathBuf,
    mode: Mode,
    mount_args: Vec<String>,
    target: PathBuf,
    /// The target opened before any mount: `/proc/self/fd/N` reaches the disk copy.
    under: File,
    /// The daemon of the current mount, from the store's owner record.
    daemon: Option<i32>,
    /// Removed after `drop` has unmounted: fields drop after `Drop::drop`.
    volatile: tempfile::TempDir,
    disk: tempfile::TempDir,
}

impl Asdfs {
    /// A target filled by `setup`, not mounted yet.
    pub fn prepare(env: &Env, setup: impl FnOnce(&Path) -> io::Result<()>) -> Asdfs {
        Self::prepare_in(env, Path::new("/tmp"), setup)
    }

    /// `prepare`, with the target in a new directory in `parent`.
    pub fn prepare_in(
        env: &Env,
        parent: &Path,
        setup: impl FnOnce(&Path) -> io::Result<()>,
    ) -> Asdfs {
        let disk = temp_dir_in(parent.to_str().expect("a UTF-8 path"), "asdfs-bench-disk-");
        let volatile = temp_dir_in("/dev/shm", "asdfs-bench-vol-");
        let target = disk.path().join("t");
        std::fs::create_dir(&target).expect("creating the target");
        setup(&target).expect("filling the target");
        let under = File::open(&target).expect("opening the target");
        Asdfs {
            bin: env.bin.clone(),
            mode: env.mode,
            mount_args: env.mount_args.clone(),
            target,
            under,
            daemon: None,
            volatile,
            disk,
        }
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The daemon of the current mount.
    pub fn daemon_pid(&self) -> Option<i32> {
        self.daemon
    }

    /// A path that reaches the disk copy even while the target is mounted.
    pub fn disk_copy(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.under.as_raw_fd()))
    }

    /// Mounts; returns how long `asdfs mount` took (it returns once the mount is live) and
    /// what it printed besides "... is in RAM" (warnings, e.g. a mode that fell back).
    pub fn mount(&mut self) -> (Duration, String) {
        let t = self.target.display().to_string();
        let vol = self.volatile.path().display().to_string();
        let mut args = vec![
            "mount",
            &t,
            "--volatile",
            &vol,
            "--flush-interval",
            "1h",
            "--mode",
            self.mode.as_str(),
        ];
        args.extend(self.mount_args.iter().map(String::as_str));
        let (out, took) = time(|| self.run(&args));
        let text = out.unwrap_or_else(|e| panic!("asdfs mount {t}: {e}"));
        let said = text
            .lines()
            .filter(|l| !l.ends_with("is in RAM"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            self.is_mounted(),
            "asdfs mount returned but {t} is not mounted"
        );
        self.daemon = self.read_daemon_pid();
        (took, said)
    }

    /// Runs `asdfs flush`; returns how long it took (it returns once the changes are on disk).
    pub fn flush(&self) -> Duration {
        let t = self.target.display().to_string();
        let (out, took) = time(|| self.run(&["flush", &t]));
        out.unwrap_or_else(|e| panic!("asdfs flush {t}: {e}"));
        took
    }

    /// Runs `asdfs unmount` (final flush, unmount) and waits for the daemon to exit.
    pub fn unmount(&mut self) {
        let t = self.target.display().to_string();
        self.run(&["unmount", &t])
            .unwrap_or_else(|e| panic!("asdfs unmount {t}: {e}"));
        self.wait_daemon_gone(Duration::from_secs(20));
        assert!(
            !self.is_mounted(),
            "{t} is still mounted after asdfs unmount"
        );
    }

    pub fn is_mounted(&self) -> bool {
        mount_points().contains(&self.target)
    }

    /// Runs asdfs with `args`; Ok(its output) if it succeeded. Output goes to a file, not a
    /// pipe: the daemon inherits it until it has reported readiness.
    fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut log = tempfile::tempfile().map_err(|e| e.to_string())?;
        let out = |f: &File| f.try_clone().map(Stdio::from).map_err(|e| e.to_string());
        let mut child = Command::new(&self.bin)
            .args(args)
            .env("ASDFS_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out(&log)?)
            .stderr(out(&log)?)
            .spawn()
            .map_err(|e| format!("running {}: {e}", self.bin.display()))?;
        let status = wait_with_timeout(&mut child, COMMAND_TIMEOUT)?;
        let mut text = String::new();
        let _ = log.rewind().and_then(|_| log.read_to_string(&mut text));
        match status.success() {
            true => Ok(text),
            false => Err(format!("{status}: {}", text.trim())),
        }
    }

    fn read_daemon_pid(&self) -> Option<i32> {
        let root = self.volatile.path().join("asdfs");
        std::fs::read_dir(root).ok()?.flatten().find_map(|e| {
            let text = std::fs::read_to_string(e.path().join("owner.json")).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            v["pid"].as_i64().map(|p| p as i32)
        })
    }

    fn wait_daemon_gone(&mut self, limit: Duration) {
        let Some(pid) = self.daemon else { return };
        let end = Instant::now() + limit;
        while process_alive(pid) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        if process_alive(pid) {
            panic!("the asdfs daemon (pid {pid}) did not exit after unmount");
        }
        self.daemon = None;
    }
}

impl Drop for Asdfs {
    fn drop(&mut self) {
        if self.is_mounted() {
            let t = self.target.display().to_string();
            if let Err(e) = self.run(&["unmount", &t]) {
                eprintln!("cleanup: asdfs unmount {t}: {e}");
            }
        }
        // Whatever is still mounted on or below our directories (a dead daemon's mount, a
        // private tmpfs for the store, layers of a future overlay mode), innermost first.
        let ours = [self.target.as_path(), self.volatile.path()];
        for m in mount_points().iter().rev() {
            if ours.iter().any(|o| m.starts_with(o)) {
                let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        if let Some(pid) = self.daemon.take().filter(|p| process_alive(*p)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The mount points of this namespace, in mount order. Our paths are made by `tempfile`
/// and have no characters that mountinfo escapes.
fn mount_points() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .collect()
}

/// Alive and not a zombie (the daemon is not our child: its parent `asdfs mount` exited).
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_none_or(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits for `child`; kills it if it runs longer than `limit`. A watchdog thread does the
/// killing so that the wait itself returns the moment the child exits (it is timed).
fn wait_with_timeout(
    child: &mut std::process::Child,
    limit: Duration,
) -> Result<std::process::ExitStatus, String> {
    use std::sync::mpsc::{RecvTimeoutError, channel};
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (done, exited) = channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let late = exited.recv_timeout(limit) == Err(RecvTimeoutError::Timeout);
        if late {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        late
    });
    let status = child.wait();
    drop(done);
    let late = watchdog.join().unwrap_or(false);
    match status {
        Ok(_) if late => Err(format!("killed after {}s", limit.as_secs())),
        Ok(s) => Ok(s),
        Err(e) => Err(e.to_string()),
    }
}
