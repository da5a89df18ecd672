//! The I/O benchmark: the same workloads on a tmpfs directory, a plain disk directory (/tmp)
//! and an asdfs mount (target on /tmp, RAM store on /dev/shm), interleaved in one run; prints
//! absolute numbers and the ratios asdfs/tmpfs and asdfs/disk. Then what only asdfs pays:
//! the first `asdfs flush` of 100 MiB in 1,000 files (against writing them to plain disk and
//! syncing), and mount time for an empty vs a 20,000-file target.
//!
//! `cargo bench --bench io` as root; `ASDFS_BENCH_RUNS` (default 5) sets the repetitions,
//! `--mode overlay` or `ASDFS_BENCH_MODE=overlay` the asdfs mode, `ASDFS_DATA_PATH=daemon`
//! FUSE mode without passthrough, `ASDFS_BENCH_MOUNT_ARGS`
//! more `asdfs mount` arguments. Every number is the median of the runs; setup and cleanup
//! are never inside a timed section.
// Tests and benchmarks act as users do, by path (docs/security.md R6 is for the daemon).
#![allow(clippy::disallowed_methods)]

mod common;

use common::{
    Asdfs, Env, MIB, XorShift, check_interrupt, drop_caches, fmt_num, fmt_time, median, pattern,
    temp_dir_in, time, write_file,
};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SEQ_BYTES: usize = 256 * MIB;
const RAND_FILE_BYTES: usize = 64 * MIB;
const RAND_BLOCK: usize = 4096;
/// How long each random-write sample runs.
const RAND_TIME: Duration = Duration::from_secs(1);
const SMALL_FILES: usize = 10_000;
const SMALL_BYTES: usize = 1024;
const RENAMES: usize = 1_000;
/// Warm passes (stat, readdir) repeat until this much time has passed, for a stable rate.
const MIN_TIMED: Duration = Duration::from_millis(200);
const FLUSH_FILES: usize = 1_000;
const FLUSH_FILE_BYTES: usize = 100 * MIB / FLUSH_FILES;
const MOUNT_TREE_DIRS: usize = 20;

/// One line of the main table.
struct Row {
    name: &'static str,
    unit: &'static str,
}

/// A workload: the rows it reports, a preparation done once per place, one sample (a rate
/// per row) taken per run and place, doing its own untimed setup and cleanup, and a cleanup
/// once per place at the end.
struct Workload {
    rows: &'static [Row],
    prepare: fn(&Path) -> io::Result<()>,
    sample: fn(&Path) -> io::Result<Vec<f64>>,
    finish: fn(&Path) -> io::Result<()>,
}

/// The medians of one row on each place (NaN where every run failed).
struct Measured {
    row: &'static Row,
    rates: [f64; PLACES.len()],
}

const WORKLOADS: &[Workload] = &[
    Workload {
        rows: &[Row {
            name: "sequential write, 256 MiB, 1 MiB writes",
            unit: "MiB/s",
        }],
        prepare: nothing,
        sample: seq_write,
        finish: nothing,
    },
    Workload {
        rows: &[
            Row {
                name: "sequential read, cold cache",
                unit: "MiB/s",
            },
            Row {
                name: "sequential read, warm cache",
                unit: "MiB/s",
            },
        ],
        prepare: make_read_file,
        sample: seq_read,
        finish: remove_read_file,
    },
    Workload {
        rows: &[
            Row {
                name: "random 4 KiB writes in a 64 MiB file",
                unit: "ops/s",
            },
            Row {
                name: "random 4 KiB reads, same file",
                unit: "ops/s",
            },
        ],
        prepare: make_rand_file,
        sample: rand_write_read,
        finish: remove_rand_file,
    },
    Workload {
        rows: &[
            Row {
                name: "SQLite WAL, synchronous=NORMAL, 1 row/tx",
                unit: "tx/s",
            },
            Row {
                name: "SQLite WAL, synchronous=FULL, 1 row/tx",
                unit: "tx/s",
            },
        ],
        prepare: nothing,
        sample: sqlite,
        finish: nothing,
    },
    Workload {
        rows: &[Row {
            name: "create+write+close, 10,000 x 1 KiB files",
            unit: "files/s",
        }],
        prepare: nothing,
        sample: create_files,
        finish: nothing,
    },
    Workload {
        rows: &[
            Row {
                name: "stat 10,000 files, cold cache",
                unit: "stats/s",
            },
            Row {
                name: "stat 10,000 files, warm cache",
                unit: "stats/s",
            },
        ],
        prepare: make_tree10k,
        sample: stat_files,
        finish: nothing,
    },
    Workload {
        rows: &[Row {
            name: "readdir, 10,000-entry directory",
            unit: "entries/s",
        }],
        prepare: make_tree10k,
        sample: readdir,
        finish: remove_tree10k,
    },
    Workload {
        rows: &[Row {
            name: "unlink 10,000 files",
            unit: "ops/s",
        }],
        prepare: nothing,
        sample: unlink_files,
        finish: nothing,
    },
    Workload {
        rows: &[Row {
            name: "rename 1,000 files",
            unit: "ops/s",
        }],
        prepare: nothing,
        sample: rename_files,
        finish: nothing,
    },
    Workload {
        rows: &[Row {
            name: "cache: 60% read, 25% new, 15% delete",
            unit: "ops/s",
        }],
        prepare: make_cache,
        sample: cache_ops,
        finish: remove_cache,
    },
];

/// Where each workload runs: tmpfs (what asd serves), the plain disk, the kernel's overlayfs
/// with its upper layer on tmpfs over a disk directory (a reference: overlay mode without the
/// daemon), and asdfs.
const PLACES: [&str; 4] = ["tmpfs", "disk", "kovl", "asdfs"];

fn main() {
    let env = common::preflight("io", 5);
    let tmpfs = temp_dir_in("/dev/shm", "asdfs-bench-tmpfs-");
    let disk = temp_dir_in("/tmp", "asdfs-bench-plain-");
    let mut asdfs = Asdfs::prepare(&env, |_| Ok(()));
    let (_, said) = asdfs.mount();
    let overlay = KernelOverlay::mount();
    print_header(&env, &said);
    let places = [tmpfs.path(), disk.path(), overlay.path(), asdfs.target()];
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    for w in WORKLOADS {
        let started = Instant::now();
        results.extend(measure(w, &places, env.runs, &mut errors));
        eprintln!("  {:.1} s", started.elapsed().as_secs_f64());
    }
    asdfs.unmount();
    drop(overlay);
    let extra = asdfs_only(&env);
    print_table(&results);
    for e in &errors {
        println!("error: {e}");
    }
    println!();
    for line in extra {
        println!("{line}");
    }
}

fn print_header(env: &Env, said: &str) {
    println!(
        "asdfs io benchmark: {}; median of {} runs; asdfs mount {} ({})",
        common::machine(),
        env.runs,
        env.describe_mount(),
        env.bin.display()
    );
    println!(
        "tmpfs = /dev/shm, disk = /tmp, kovl = kernel overlayfs (upper on /dev/shm, lower on /tmp), \
         asdfs = target on /tmp with its store on /dev/shm"
    );
    for line in said.lines().filter(|l| !l.trim().is_empty()) {
        println!("asdfs mount said: {line}");
    }
}

/// The median rate of each of `w`'s rows on each place (tmpfs, disk, asdfs). Runs are the
/// outer loop, so that load from elsewhere on the machine falls on all places alike. A
/// failed sample is reported in `errors` and left out; the benchmark goes on.
fn measure(
    w: &'static Workload,
    places: &[&Path; PLACES.len()],
    runs: usize,
    errors: &mut Vec<String>,
) -> Vec<Measured> {
    let name = w.rows[0].name;
    eprintln!("running: {name}");
    let mut samples = vec![[const { Vec::new() }; PLACES.len()]; w.rows.len()];
    for (i, p) in places.iter().enumerate() {
        if let Err(e) = (w.prepare)(p) {
            errors.push(format!("{name}, preparing on {}: {e}", PLACES[i]));
        }
    }
    for run in 1..=runs {
        for (i, p) in places.iter().enumerate() {
            check_interrupt();
            match (w.sample)(p) {
                Ok(rates) => rates
                    .into_iter()
                    .enumerate()
                    .for_each(|(row, rate)| samples[row][i].push(rate)),
                Err(e) => errors.push(format!("{name}, run {run} on {}: {e}", PLACES[i])),
            }
        }
    }
    for (i, p) in places.iter().enumerate() {
        if let Err(e) = (w.finish)(p) {
            errors.push(format!("{name}, cleaning up on {}: {e}", PLACES[i]));
        }
    }
    let medians =
        |s: [Vec<f64>; PLACES.len()]| s.map(|v| if v.is_empty() { f64::NAN } else { median(v) });
    w.rows
        .iter()
        .zip(samples)
        .map(|(row, s)| Measured {
            row,
            rates: medians(s),
        })
        .collect()
}

fn print_table(results: &[Measured]) {
    println!(
        "{:<44} {:>9} {:>10} {:>10} {:>10} {:>10} {:>11} {:>10} {:>10}",
        "workload",
        "unit",
        "tmpfs",
        "disk",
        "kovl",
        "asdfs",
        "asdfs/tmpfs",
        "asdfs/disk",
        "kovl/tmpfs"
    );
    for Measured {
        row,
        rates: [tmpfs, disk, kovl, asdfs],
    } in results
    {
        println!(
            "{:<44} {:>9} {:>10} {:>10} {:>10} {:>10} {:>11.2} {:>10.2} {:>10.2}",
            row.name,
            row.unit,
            fmt_num(*tmpfs),
            fmt_num(*disk),
            fmt_num(*kovl),
            fmt_num(*asdfs),
            asdfs / tmpfs,
            asdfs / disk,
            kovl / tmpfs
        );
    }
}

/// The kernel's overlayfs over a disk directory, upper layer on tmpfs: what overlay mode
/// mounts, without the daemon. Unmounted (lazily) when dropped, also on panic.
struct KernelOverlay {
    lower: tempfile::TempDir,
    layers: tempfile::TempDir,
    merged: tempfile::TempDir,
}

impl KernelOverlay {
    fn mount() -> KernelOverlay {
        let o = KernelOverlay {
            lower: temp_dir_in("/tmp", "asdfs-bench-kovl-lower-"),
            layers: temp_dir_in("/dev/shm", "asdfs-bench-kovl-"),
            merged: temp_dir_in("/tmp", "asdfs-bench-kovl-"),
        };
        let (upper, work) = (o.layers.path().join("upper"), o.layers.path().join("work"));
        std::fs::create_dir(&upper).expect("creating the overlay's upper layer");
        std::fs::create_dir(&work).expect("creating the overlay's work directory");
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            o.lower.path().display(),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            o.merged.path(),
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .unwrap_or_else(|e| panic!("mounting a kernel overlayfs ({opts}): {e}"));
        o
    }

    fn path(&self) -> &Path {
        self.merged.path()
    }
}

impl Drop for KernelOverlay {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(self.merged.path(), nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("cleanup: unmounting {}: {e}", self.merged.path().display());
        }
        let _ = &self.lower;
    }
}

fn nothing(_: &Path) -> io::Result<()> {
    Ok(())
}

fn mib_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

fn per_s(ops: usize, d: Duration) -> f64 {
    ops as f64 / d.as_secs_f64()
}

fn seq_write(dir: &Path) -> io::Result<Vec<f64>> {
    let path = dir.join("seq.bin");
    let chunk = pattern(MIB, 1);
    common::sync();
    let (r, took) = time(|| write_file(&path, SEQ_BYTES, &chunk));
    r?;
    std::fs::remove_file(&path)?;
    Ok(vec![mib_per_s(SEQ_BYTES, took)])
}

fn make_read_file(dir: &Path) -> io::Result<()> {
    write_file(&dir.join("read.bin"), SEQ_BYTES, &pattern(MIB, 2))
}

/// Cold (after dropping caches), then warm (the same file again at once).
fn seq_read(dir: &Path) -> io::Result<Vec<f64>> {
    let path = dir.join("read.bin");
    drop_caches();
    let (cold, cold_took) = time(|| read_all(&path));
    let (warm, warm_took) = time(|| read_all(&path));
    for n in [cold?, warm?] {
        if n != SEQ_BYTES {
            return Err(io::Error::other(format!(
                "read {n} bytes, wrote {SEQ_BYTES}"
            )));
        }
    }
    Ok(vec![
        mib_per_s(SEQ_BYTES, cold_took),
        mib_per_s(SEQ_BYTES, warm_took),
    ])
}

fn read_all(path: &Path) -> io::Result<usize> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; MIB];
    let mut total = 0;
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}

fn make_rand_file(dir: &Path) -> io::Result<()> {
    write_file(&dir.join("rand.bin"), RAND_FILE_BYTES, &pattern(MIB, 3))
}

/// 4 KiB pwrites at random aligned offsets for `RAND_TIME`, the close timed too (a FUSE
/// writeback cache sends its dirty pages then); then 4 KiB preads the same way.
fn rand_write_read(dir: &Path) -> io::Result<Vec<f64>> {
    let path = dir.join("rand.bin");
    let mut block = pattern(RAND_BLOCK, 4);
    let blocks = (RAND_FILE_BYTES / RAND_BLOCK) as u64;
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    common::sync();
    let start = Instant::now();
    let f = std::fs::OpenOptions::new().write(true).open(&path)?;
    let mut ops = 0;
    while ops % 64 != 0 || start.elapsed() < RAND_TIME {
        f.write_all_at(&block, (rng.next() % blocks) * RAND_BLOCK as u64)?;
        ops += 1;
    }
    drop(f);
    let writes = per_s(ops, start.elapsed());
    let start = Instant::now();
    let f = File::open(&path)?;
    let mut ops = 0;
    while ops % 64 != 0 || start.elapsed() < RAND_TIME {
        f.read_exact_at(&mut block, (rng.next() % blocks) * RAND_BLOCK as u64)?;
        ops += 1;
    }
    Ok(vec![writes, per_s(ops, start.elapsed())])
}

/// Transactions per SQLite sample and synchronous setting.
const SQLITE_TX: usize = 1_000;

/// A SQLite database in WAL mode taking `SQLITE_TX` one-row transactions, with
/// synchronous=NORMAL then FULL (fsync at every commit). Driven by python3's sqlite3 module,
/// which times only the transactions; without it the sample fails with the reason.
fn sqlite(dir: &Path) -> io::Result<Vec<f64>> {
    const SCRIPT: &str = r#"
import sqlite3, sys, time, os
d, n = sys.argv[1], int(sys.argv[2])
for sync in ("NORMAL", "FULL"):
    p = os.path.join(d, "bench.db")
    for ext in ("", "-wal", "-shm"):
        if os.path.exists(p + ext):
            os.remove(p + ext)
    c = sqlite3.connect(p, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=" + sync)
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
    let out = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(dir)
        .arg(SQLITE_TX.to_string())
        .output()
        .map_err(|e| io::Error::other(format!("SQLite rows skipped: no python3 ({e})")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "SQLite rows skipped: python3's sqlite3 failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse::<f64>().map_err(io::Error::other))
        .collect()
}

/// `dir/NAME` with `n` files `f00000...` of 1 KiB, made fresh.
fn make_files(dir: &Path, name: &str, n: usize) -> io::Result<(PathBuf, Vec<PathBuf>)> {
    let sub = fresh_dir(dir, name)?;
    let names = file_names(&sub, "f", n);
    let data = pattern(SMALL_BYTES, 5);
    for p in &names {
        std::fs::write(p, &data)?;
    }
    Ok((sub, names))
}

fn file_names(dir: &Path, prefix: &str, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| dir.join(format!("{prefix}{i:05}")))
        .collect()
}

fn create_files(dir: &Path) -> io::Result<Vec<f64>> {
    let sub = fresh_dir(dir, "create")?;
    let names = file_names(&sub, "f", SMALL_FILES);
    let data = pattern(SMALL_BYTES, 5);
    common::sync();
    let (r, took) = time(|| -> io::Result<()> {
        for p in &names {
            File::create(p)?.write_all(&data)?;
        }
        Ok(())
    });
    r?;
    std::fs::remove_dir_all(&sub)?;
    Ok(vec![per_s(SMALL_FILES, took)])
}

fn remove_read_file(dir: &Path) -> io::Result<()> {
    std::fs::remove_file(dir.join("read.bin"))
}

fn remove_rand_file(dir: &Path) -> io::Result<()> {
    std::fs::remove_file(dir.join("rand.bin"))
}

fn remove_tree10k(dir: &Path) -> io::Result<()> {
    std::fs::remove_dir_all(dir.join("tree10k"))
}

fn make_tree10k(dir: &Path) -> io::Result<()> {
    if !dir.join("tree10k").exists() {
        make_files(dir, "tree10k", SMALL_FILES)?;
    }
    Ok(())
}

/// One pass after dropping caches, then passes until `MIN_TIMED` has passed.
fn stat_files(dir: &Path) -> io::Result<Vec<f64>> {
    let names = file_names(&dir.join("tree10k"), "f", SMALL_FILES);
    let stat_all = || -> io::Result<usize> {
        for p in &names {
            std::fs::symlink_metadata(p)?;
        }
        Ok(names.len())
    };
    drop_caches();
    let (r, cold) = time(stat_all);
    let cold = per_s(r?, cold);
    Ok(vec![cold, repeat_rate(stat_all)?])
}

/// Listings of the directory (after one untimed) until `MIN_TIMED` has passed.
fn readdir(dir: &Path) -> io::Result<Vec<f64>> {
    let sub = dir.join("tree10k");
    let list = || -> io::Result<usize> {
        let mut n = 0;
        for e in std::fs::read_dir(&sub)? {
            e?;
            n += 1;
        }
        match n {
            SMALL_FILES => Ok(n),
            _ => Err(io::Error::other(format!("listed {n} entries"))),
        }
    };
    list()?;
    Ok(vec![repeat_rate(list)?])
}

/// Runs `pass` until `MIN_TIMED` has passed; the rate of the items it reports.
fn repeat_rate(mut pass: impl FnMut() -> io::Result<usize>) -> io::Result<f64> {
    let start = Instant::now();
    let mut items = 0;
    while items == 0 || start.elapsed() < MIN_TIMED {
        items += pass()?;
    }
    Ok(per_s(items, start.elapsed()))
}

fn unlink_files(dir: &Path) -> io::Result<Vec<f64>> {
    let (sub, names) = make_files(dir, "unlink", SMALL_FILES)?;
    common::sync();
    let (r, took) = time(|| names.iter().try_for_each(std::fs::remove_file));
    r?;
    std::fs::remove_dir(&sub)?;
    Ok(vec![per_s(SMALL_FILES, took)])
}

fn rename_files(dir: &Path) -> io::Result<Vec<f64>> {
    let (sub, from) = make_files(dir, "rename", RENAMES)?;
    let to = file_names(&sub, "g", RENAMES);
    common::sync();
    let (r, took) = time(|| {
        from.iter()
            .zip(&to)
            .try_for_each(|(a, b)| std::fs::rename(a, b))
    });
    r?;
    std::fs::remove_dir_all(&sub)?;
    Ok(vec![per_s(RENAMES, took)])
}

/// Entries of the cache workload, spread over `CACHE_DIRS` directories.
const CACHE_FILES: usize = 2_000;
const CACHE_DIRS: usize = 16;
const CACHE_OPS: usize = 5_000;

fn cache_entry(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("cache/{:02x}/e{i:05}", i % CACHE_DIRS))
}

/// The size of entry `i`: 1-32 KiB, the same on every place.
fn cache_size(i: usize) -> usize {
    1024 * (1 + (i * 7919) % 32)
}

/// A browser-cache-like tree: `CACHE_FILES` entries of 1-32 KiB in `CACHE_DIRS` directories.
fn make_cache(dir: &Path) -> io::Result<()> {
    let root = fresh_dir(dir, "cache")?;
    for d in 0..CACHE_DIRS {
        std::fs::create_dir(root.join(format!("{d:02x}")))?;
    }
    let data = pattern(32 * 1024, 7);
    (0..CACHE_FILES).try_for_each(|i| std::fs::write(cache_entry(dir, i), &data[..cache_size(i)]))
}

fn remove_cache(dir: &Path) -> io::Result<()> {
    std::fs::remove_dir_all(dir.join("cache"))
}

/// `CACHE_OPS` operations on random entries, what a program's cache does: 60% read a whole
/// entry, 25% write a new version of an entry (create, write, close), 15% delete one (an
/// entry found missing is written instead). The tree is left as it was found in size.
fn cache_ops(dir: &Path) -> io::Result<Vec<f64>> {
    let data = pattern(32 * 1024, 8);
    let mut present = vec![true; CACHE_FILES];
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut buf = Vec::with_capacity(32 * 1024);
    common::sync();
    let start = Instant::now();
    for _ in 0..CACHE_OPS {
        let i = (rng.next() % CACHE_FILES as u64) as usize;
        let roll = rng.next() % 100;
        let path = cache_entry(dir, i);
        if present[i] && roll < 60 {
            buf.clear();
            File::open(&path)?.read_to_end(&mut buf)?;
        } else if present[i] && roll >= 85 {
            std::fs::remove_file(&path)?;
            present[i] = false;
        } else {
            File::create(&path)?.write_all(&data[..cache_size(i)])?;
            present[i] = true;
        }
    }
    let rate = per_s(CACHE_OPS, start.elapsed());
    for (i, _) in present.iter().enumerate().filter(|(_, p)| !**p) {
        std::fs::write(cache_entry(dir, i), &data[..cache_size(i)])?;
    }
    Ok(vec![rate])
}

/// An empty directory `dir/name`; what an earlier, failed sample left there is removed.
fn fresh_dir(dir: &Path, name: &str) -> io::Result<PathBuf> {
    let sub = dir.join(name);
    if sub.exists() {
        std::fs::remove_dir_all(&sub)?;
    }
    std::fs::create_dir(&sub)?;
    Ok(sub)
}

/// The lines of the asdfs-only report: first flush, and mount time by tree size.
fn asdfs_only(env: &Env) -> Vec<String> {
    let (flush, reference) = first_flush(env);
    let (empty, full) = mount_times(env);
    let mb = mib(FLUSH_FILES * FLUSH_FILE_BYTES);
    let rate = |secs: f64| format!("{} = {} MiB/s", fmt_time(secs), fmt_num(mb / secs));
    vec![
        format!("{:<44} {:>24}   reference", "asdfs only", "asdfs"),
        format!(
            "{:<44} {:>24}   plain disk write + syncfs: {}; asdfs/disk {:.2}",
            "first flush, 100 MiB in 1,000 new files",
            rate(flush),
            rate(reference),
            reference / flush,
        ),
        format!(
            "{:<44} {:>24}",
            "mount, empty target, cold cache",
            fmt_time(empty)
        ),
        format!(
            "{:<44} {:>24}   {:.2}x the empty target's",
            "mount, 20,000-file target, cold cache",
            fmt_time(full),
            full / empty
        ),
    ]
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / MIB as f64
}

/// Median seconds of: the first `asdfs flush` of a fresh mount after writing 1,000 files
/// (100 MiB); and writing the same files to plain disk followed by syncfs.
fn first_flush(env: &Env) -> (f64, f64) {
    eprintln!("running: first flush of 100 MiB in 1,000 files");
    let data = pattern(FLUSH_FILE_BYTES, 6);
    let (mut flush, mut reference) = (Vec::new(), Vec::new());
    for _ in 0..env.runs.min(3) {
        check_interrupt();
        let mut m = Asdfs::prepare(env, |_| Ok(()));
        m.mount();
        write_flush_files(&m.target().join("data"), &data).expect("writing through asdfs");
        common::sync();
        flush.push(m.flush().as_secs_f64());
        let last = m.disk_copy().join(format!("data/f{:05}", FLUSH_FILES - 1));
        let on_disk = std::fs::metadata(&last).map(|m| m.len() as usize);
        assert_eq!(
            on_disk.ok(),
            Some(data.len()),
            "flush did not reach the disk"
        );
        m.unmount();
        reference.push(plain_disk_write_sync(&data));
    }
    (median(flush), median(reference))
}

fn write_flush_files(dir: &Path, data: &[u8]) -> io::Result<()> {
    std::fs::create_dir(dir)?;
    file_names(dir, "f", FLUSH_FILES)
        .iter()
        .try_for_each(|p| std::fs::write(p, data))
}

fn plain_disk_write_sync(data: &[u8]) -> f64 {
    let dir = temp_dir_in("/tmp", "asdfs-bench-plain-");
    common::sync();
    let (r, took) = time(|| -> io::Result<()> {
        write_flush_files(&dir.path().join("data"), data)?;
        nix::unistd::syncfs(File::open(dir.path())?)?;
        Ok(())
    });
    r.expect("writing to plain disk");
    took.as_secs_f64()
}

/// Median seconds of `asdfs mount` after dropping caches: an empty target, and one with
/// 20,000 files of 1 KiB in 20 directories.
fn mount_times(env: &Env) -> (f64, f64) {
    eprintln!("running: mount time, empty vs 20,000-file target");
    let mut empty = Asdfs::prepare(env, |_| Ok(()));
    let mut full = Asdfs::prepare(env, |t| {
        common::make_tree(t, MOUNT_TREE_DIRS, 1_000, SMALL_BYTES)
    });
    let (mut e, mut f) = (Vec::new(), Vec::new());
    for _ in 0..env.runs {
        for (m, out) in [(&mut empty, &mut e), (&mut full, &mut f)] {
            check_interrupt();
            drop_caches();
            out.push(m.mount().0.as_secs_f64());
            m.unmount();
        }
    }
    (median(e), median(f))
}
