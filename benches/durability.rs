//! What durability costs (design.md §6 step 2, §6.3):
//!
//! 1. SQLite in WAL mode with `synchronous=FULL` (an fsync at every commit), 1,000 one-row
//!    transactions, on plain disk (/tmp) and on asdfs mounted with `--fsync sync` (target on
//!    /tmp, store on /dev/shm), interleaved in one run; asdfs with `--fsync defer` (fsync
//!    answered by the kernel) shows what the data path itself costs.
//! 2. Bytes a flush puts on the block device: a 10,000-file tree (10 directories of 1,000
//!    files of 1 KiB) on a fresh ext4 filesystem on a loop device (so that nothing else on
//!    the machine writes to it), mounted with asdfs (`--backups no`: the backup's links
//!    would be written meanwhile); 1 % of the files (100) rewritten with 33,000 bytes each
//!    (3.3 MB), then `asdfs flush`. Sectors written (`/sys/block/loopN/stat`) are read
//!    before the flush, when it returns, and after a syncfs (what the flush left for the
//!    filesystem's next commit: removing its journal and stage). The reference writes the
//!    same files straight into the ext4 tree and calls syncfs. One more flush, under
//!    strace, counts its fsync/fdatasync/syncfs calls.
//!
//! `cargo bench --bench durability` as root; `ASDFS_BENCH_RUNS` (default 5) sets the
//! repetitions (medians are printed); `ASDFS_BIN` another asdfs binary (to measure an older
//! one); `ASDFS_BENCH_MOUNT_ARGS` more `asdfs mount` arguments for both parts;
//! `ASDFS_BENCH_ONLY=sqlite|bytes` one part.
// Tests and benchmarks act as users do, by path (docs/security.md R6 is for the daemon).
#![allow(clippy::disallowed_methods)]

mod common;

use common::{Asdfs, Env, check_interrupt, fmt_num, median, pattern, temp_dir_in};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

const SQLITE_TX: usize = 1_000;
const TREE_DIRS: usize = 10;
const TREE_FILES: usize = 1_000;
const CHANGED: usize = 100;
const CHANGE_BYTES: usize = 33_000;

fn main() {
    let env = common::preflight("durability", 5);
    println!(
        "asdfs durability benchmark: {}; median of {} runs; {}",
        common::machine(),
        env.runs,
        env.bin.display()
    );
    let only = std::env::var("ASDFS_BENCH_ONLY").unwrap_or_default();
    if only != "bytes" {
        sqlite_rows(&env);
    }
    if only != "sqlite" {
        flush_bytes(&env);
    }
}

fn with_args(env: &Env, more: &[&str]) -> Env {
    let mut mount_args = env.mount_args.clone();
    mount_args.extend(more.iter().map(|s| s.to_string()));
    Env {
        bin: env.bin.clone(),
        mode: env.mode,
        runs: env.runs,
        mount_args,
    }
}

fn sqlite_rows(env: &Env) {
    eprintln!("running: SQLite WAL FULL, disk vs asdfs --fsync sync (and defer)");
    let disk = temp_dir_in("/tmp", "asdfs-bench-plain-");
    let mut sync = Asdfs::prepare(&with_args(env, &["--fsync", "sync"]), |_| Ok(()));
    let mut defer = Asdfs::prepare(&with_args(env, &["--fsync", "defer"]), |_| Ok(()));
    sync.mount();
    defer.mount();
    let mut rates = [const { Vec::new() }; 3];
    for _ in 0..env.runs {
        check_interrupt();
        for (i, dir) in [disk.path(), sync.target(), defer.target()]
            .iter()
            .enumerate()
        {
            rates[i].push(sqlite_full(dir).expect("SQLite"));
        }
    }
    sync.unmount();
    defer.unmount();
    let [d, s, f] = rates.map(median);
    println!(
        "{:<44} {:>8} {:>12} {:>12} {:>11}",
        "SQLite WAL, synchronous=FULL, 1 row/tx", "disk", "asdfs sync", "asdfs defer", "sync/disk"
    );
    println!(
        "{:<44} {:>8} {:>12} {:>12} {:>11.2}",
        "  tx/s",
        fmt_num(d),
        fmt_num(s),
        fmt_num(f),
        s / d
    );
}

/// Transactions per second of `SQLITE_TX` one-row transactions in WAL mode, FULL.
fn sqlite_full(dir: &Path) -> io::Result<f64> {
    const SCRIPT: &str = r#"
import sqlite3, sys, time, os
d, n = sys.argv[1], int(sys.argv[2])
p = os.path.join(d, "bench.db")
for ext in ("", "-wal", "-shm"):
    if os.path.exists(p + ext):
        os.remove(p + ext)
c = sqlite3.connect(p, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL")
c.execute("PRAGMA synchronous=FULL")
c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
blob = os.urandom(200)
t = time.perf_counter()
for i in range(n):
    c.execute("BEGIN")
    c.execute("INSERT INTO t (v) VALUES (?)", (blob,))
    c.execute("COMMIT")
print(n / (time.perf_counter() - t))
c.close()
for ext in ("", "-wal", "-shm"):
    if os.path.exists(p + ext):
        os.remove(p + ext)
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(dir)
        .arg(SQLITE_TX.to_string())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<f64>()
        .map_err(io::Error::other)
}

/// A fresh ext4 filesystem on a loop device, mounted; everything undone on drop.
struct LoopFs {
    dir: tempfile::TempDir,
    dev: String,
}

impl LoopFs {
    /// `Err` with the reason when there is no loop device to be had (a container).
    fn new() -> Result<LoopFs, String> {
        // Short: the store's key, made from the target's path, ends in a socket path.
        let dir = temp_dir_in("/tmp", "adl");
        let img = dir.path().join("img");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(2 << 30))
            .map_err(|e| format!("making the image file: {e}"))?;
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&img)
            .output()
            .map_err(|e| format!("losetup: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "losetup: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let fs = LoopFs { dir, dev };
        run("mkfs.ext4", &["-q", "-F", &fs.dev])?;
        std::fs::create_dir(fs.mnt()).map_err(|e| e.to_string())?;
        run("mount", &[&fs.dev, fs.mnt().to_str().unwrap()])?;
        Ok(fs)
    }

    fn mnt(&self) -> PathBuf {
        self.dir.path().join("m")
    }

    /// Sectors (512 bytes) written to the device so far.
    fn sectors_written(&self) -> u64 {
        let name = self.dev.trim_start_matches("/dev/");
        let stat = std::fs::read_to_string(format!("/sys/block/{name}/stat")).unwrap();
        stat.split_whitespace().nth(6).unwrap().parse().unwrap()
    }

    fn syncfs(&self) {
        let f = std::fs::File::open(self.mnt()).unwrap();
        nix::unistd::syncfs(&f).unwrap();
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mnt()).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    match Command::new(cmd).args(args).status() {
        Ok(st) if st.success() => Ok(()),
        Ok(st) => Err(format!("{cmd} {args:?}: {st}")),
        Err(e) => Err(format!("{cmd}: {e}")),
    }
}

fn changed_paths(root: &Path) -> Vec<PathBuf> {
    (0..CHANGED)
        .map(|i| {
            root.join(format!("d{:03}", i % TREE_DIRS))
                .join(format!("f{:05}", i * 97 % TREE_FILES))
        })
        .collect()
}

fn write_changes(root: &Path, round: usize) {
    let data = pattern(CHANGE_BYTES, round as u64 + 1);
    for p in changed_paths(root) {
        std::fs::write(p, &data).expect("writing a change");
    }
}

fn flush_bytes(env: &Env) {
    eprintln!("running: bytes on the device per flush (loop device, ext4)");
    let fs = match LoopFs::new() {
        Ok(fs) => fs,
        Err(why) => {
            println!("bytes per flush: skipped, no loop device ({why})");
            return;
        }
    };
    let env = with_args(env, &["--backups", "no"]);
    let mut m = Asdfs::prepare_in(&env, &fs.mnt(), |t| {
        common::make_tree(t, TREE_DIRS, TREE_FILES, 1024)
    });
    let reference = fs.mnt().join("reference");
    common::make_tree(&reference, TREE_DIRS, TREE_FILES, 1024).unwrap();
    m.mount();
    let changed = (CHANGED * CHANGE_BYTES) as f64;
    let (mut at_return, mut synced, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..env.runs {
        check_interrupt();
        write_changes(m.target(), round);
        common::sync();
        let before = fs.sectors_written();
        m.flush();
        let returned = fs.sectors_written();
        fs.syncfs();
        let after = fs.sectors_written();
        at_return.push(((returned - before) * 512) as f64);
        synced.push(((after - before) * 512) as f64);
        common::sync();
        let before = fs.sectors_written();
        write_changes(&reference, round);
        fs.syncfs();
        plain.push(((fs.sectors_written() - before) * 512) as f64);
    }
    let calls = count_syncs(&m, env.runs);
    m.unmount();
    let mb = |b: f64| format!("{:.2} MB", b / 1e6);
    println!(
        "\nflush of {CHANGED} of 10,000 files ({}) on ext4 (loop device): bytes written to the device",
        mb(changed)
    );
    for (what, v) in [
        ("asdfs flush, when it returns", median(at_return)),
        ("asdfs flush, after a syncfs", median(synced)),
        ("plain write of the same files + syncfs", median(plain)),
    ] {
        println!(
            "  {what:<44} {:>10}  {:.2}x the changed bytes",
            mb(v),
            v / changed
        );
    }
    println!("  fsync/fdatasync/syncfs/sync_file_range calls in one flush: {calls}");
}

/// The sync calls of one more flush, counted by strace attached to the daemon.
fn count_syncs(m: &Asdfs, round: usize) -> String {
    let Some(pid) = m.daemon_pid() else {
        return "unknown (no daemon pid)".into();
    };
    let out = tempfile::NamedTempFile::new().unwrap();
    let strace = Command::new("strace")
        .args([
            "-f",
            "-c",
            "-e",
            "trace=fsync,fdatasync,syncfs,sync_file_range",
        ])
        .arg("-o")
        .arg(out.path())
        .args(["-p", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(mut strace) = strace else {
        return "unknown (no strace)".into();
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    write_changes(m.target(), round + 1);
    m.flush();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(strace.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = strace.wait();
    let text = std::fs::read_to_string(out.path()).unwrap_or_default();
    let counts: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = *f.last()?;
            let calls = f.get(3)?;
            (["fsync", "fdatasync", "syncfs", "sync_file_range"].contains(&name))
                .then(|| format!("{name} {calls}"))
        })
        .collect();
    if counts.is_empty() {
        "none seen".into()
    } else {
        counts.join(", ")
    }
}
