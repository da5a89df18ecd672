//! Flush and mount cost against tree size: flushing N changed files should cost the same in
//! a 10,000-file tree as in a 100,000-file tree, and mounting should not grow with the tree.
//! Builds both trees on disk (/tmp, directories of 1,000 files of 1 KiB) and serves each with
//! asdfs (store on /dev/shm). A round changes the same 100 files in a tree (98 rewritten, 1
//! renamed to another directory, 1 deleted), runs `asdfs flush` and checks the disk copy.
//! Measured, alternating between the trees: mount after dropping caches and the first round
//! after it; then further rounds on a mount that stays up. Prints medians and large/small.
//!
//! `cargo bench --bench flush_scaling` as root; `-- --mode overlay` or
//! `ASDFS_BENCH_MODE=overlay` measures the overlay mode, `ASDFS_BENCH_RUNS` (default 7) sets
//! how many mounts and how many further rounds, `ASDFS_BENCH_MOUNT_ARGS` adds `asdfs mount`
//! arguments (e.g. `--backups no`).
// Tests and benchmarks act as users do, by path (docs/security.md R6 is for the daemon).
#![allow(clippy::disallowed_methods)]

mod common;

use common::{Asdfs, Env, check_interrupt, drop_caches, fmt_num, fmt_time, median, pattern};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

const FILES_PER_DIR: usize = 1_000;
const FILE_BYTES: usize = 1024;
const CHANGED: usize = 100;
const CHANGE_BYTES: usize = 4096;
/// Where the renamed file goes (another directory than its own).
const RENAMED: &str = "d000/renamed";

/// One tree and what was measured on it.
struct Tree {
    files: usize,
    m: Asdfs,
    /// Rounds of changes so far: each round writes its number into the files.
    rounds: usize,
    /// Seconds of each `asdfs mount`, after dropping caches.
    mounts: Vec<f64>,
    /// Seconds of the first `asdfs flush` after each of those mounts.
    first_flushes: Vec<f64>,
    /// Seconds of later flushes, the mount staying up.
    flushes: Vec<f64>,
}

fn main() {
    let env = common::preflight("flush_scaling", 7);
    let mut trees = [10_000, 100_000].map(|files| build(&env, files));
    let said = cold_mounts(&mut trees, env.runs);
    flush_rounds(&mut trees, env.runs);
    print_report(&env, &trees, &said);
}

fn build(env: &Env, files: usize) -> Tree {
    eprintln!("building a {files}-file tree on /tmp");
    let dirs = files / FILES_PER_DIR;
    let m = Asdfs::prepare(env, |t| {
        common::make_tree(t, dirs, FILES_PER_DIR, FILE_BYTES)
    });
    common::sync();
    Tree {
        files,
        m,
        rounds: 0,
        mounts: Vec::new(),
        first_flushes: Vec::new(),
        flushes: Vec::new(),
    }
}

/// `runs` times for each tree: drop caches, mount, change the files, flush, unmount;
/// timing the mount and the flush. Returns what the first mount printed besides success
/// (e.g. a mode fallback warning).
fn cold_mounts(trees: &mut [Tree; 2], runs: usize) -> String {
    eprintln!("timing mounts and first flushes");
    let mut said = None;
    for _ in 0..runs {
        for t in trees.iter_mut() {
            check_interrupt();
            drop_caches();
            let (took, out) = t.m.mount();
            said.get_or_insert(out);
            t.mounts.push(took.as_secs_f64());
            let flushed = t.round();
            t.first_flushes.push(flushed);
            t.m.unmount();
        }
    }
    said.unwrap_or_default()
}

/// Mounts both trees, then `runs` rounds of change and flush, alternating trees.
fn flush_rounds(trees: &mut [Tree; 2], runs: usize) {
    eprintln!("timing flushes");
    for t in trees.iter_mut() {
        t.m.mount();
    }
    for _ in 0..runs {
        for t in trees.iter_mut() {
            check_interrupt();
            let flushed = t.round();
            t.flushes.push(flushed);
        }
    }
    for t in trees.iter_mut() {
        t.m.unmount();
    }
}

impl Tree {
    /// Changes the 100 files through the mount, runs `asdfs flush` and checks the disk
    /// copy; returns the seconds the flush took.
    fn round(&mut self) -> f64 {
        self.rounds += 1;
        change(self.m.target(), self.rounds).expect("changing files through asdfs");
        common::sync();
        let took = self.m.flush().as_secs_f64();
        check_disk(&self.m.disk_copy(), self.rounds).expect("the flush did not reach the disk");
        took
    }
}

/// The 100 changed files: spread over the first 10 directories, which both trees have.
fn changed_paths() -> Vec<PathBuf> {
    (0..CHANGED)
        .map(|i| PathBuf::from(format!("d{:03}/f{:04}", i % 10, (i / 10) * 100 + 7)))
        .collect()
}

/// 4 KiB that start with the round number.
fn content(round: usize) -> Vec<u8> {
    let mut data = pattern(CHANGE_BYTES, 11);
    data[..8].copy_from_slice(&(round as u64).to_le_bytes());
    data
}

/// Writes all 100 files (re-creating the two that the last round renamed and deleted), then
/// renames the 99th over `RENAMED` and deletes the 100th.
fn change(root: &Path, round: usize) -> io::Result<()> {
    let data = content(round);
    let paths = changed_paths();
    for p in &paths {
        std::fs::write(root.join(p), &data)?;
    }
    std::fs::rename(root.join(&paths[CHANGED - 2]), root.join(RENAMED))?;
    std::fs::remove_file(root.join(&paths[CHANGED - 1]))
}

/// The disk copy has this round's content in a rewritten and in the renamed file, and the
/// deleted file is gone.
fn check_disk(disk: &Path, round: usize) -> io::Result<()> {
    let paths = changed_paths();
    for p in [paths[0].as_path(), Path::new(RENAMED)] {
        let mut head = [0u8; 8];
        std::fs::File::open(disk.join(p))?.read_exact(&mut head)?;
        if u64::from_le_bytes(head) != round as u64 {
            return Err(io::Error::other(format!("{} is stale", p.display())));
        }
    }
    match disk.join(&paths[CHANGED - 1]).exists() {
        true => Err(io::Error::other("the deleted file is still on disk")),
        false => Ok(()),
    }
}

fn print_report(env: &Env, trees: &[Tree; 2], said: &str) {
    println!(
        "asdfs flush scaling: {}; asdfs mount {} ({})",
        common::machine(),
        env.describe_mount(),
        env.bin.display()
    );
    for line in said.lines().filter(|l| !l.trim().is_empty()) {
        println!("asdfs mount said: {line}");
    }
    println!(
        "each flush: {CHANGED} files of 4 KiB changed ({} rewritten, 1 renamed to another \
         directory, 1 deleted)",
        CHANGED - 2
    );
    let [small, large] = trees;
    println!(
        "{:<44} {:>14} {:>14} {:>12}",
        "",
        format!("{} files", fmt_num(small.files as f64)),
        format!("{} files", fmt_num(large.files as f64)),
        "large/small"
    );
    let runs = env.runs;
    let rows = [
        (
            format!("mount, cold cache (median of {runs})"),
            [small, large].map(|t| median(t.mounts.clone())),
        ),
        (
            format!("first flush after that mount (median of {runs})"),
            [small, large].map(|t| median(t.first_flushes.clone())),
        ),
        (
            format!("later flushes (median of {runs})"),
            [small, large].map(|t| median(t.flushes.clone())),
        ),
    ];
    for (name, [a, b]) in rows {
        println!(
            "{name:<44} {:>14} {:>14} {:>12.2}",
            fmt_time(a),
            fmt_time(b),
            b / a
        );
    }
}
