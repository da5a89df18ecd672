//! The RAM budget (design.md §2.1): reading a tree 4× the target's RAM limit, against plain
//! disk in the same run, and the cost of pressure flushes when writing 4× the limit.
//!
//! Read: a 64 MiB tree (64 files of 1 MiB on /tmp) under `--ram-limit 16M`; caches dropped
//! before each pass; every pass reads every file once through asdfs (each file is read from
//! disk into RAM, older ones evicted), and once through the disk copy directly.
//! Write: 64 files of 1 MiB written and closed, into a target with `--ram-limit 16M` (pressure
//! flushes write them out while writers wait) and into one whose limit holds them all
//! (`--ram-limit 256M`, no pressure); the difference, per pressure flush, is their cost.
//!
//! `cargo bench --bench ram_budget` as root; `ASDFS_BENCH_RUNS` (default 5).
// Tests and benchmarks act as users do, by path (docs/security.md R6 is for the daemon).
#![allow(clippy::disallowed_methods)]

mod common;

use common::{Asdfs, Env, check_interrupt, drop_caches, fmt_num, fmt_time, median, pattern, time};
use std::path::Path;
use std::process::Command;

const FILES: usize = 64;
const MIB: usize = 1 << 20;
const LIMIT: &str = "16M";

fn main() {
    let env = common::preflight("ram_budget", 5);
    let (asdfs_read, disk_read, evictions) = reads(&env);
    let (pressed, free, flushes) = writes(&env);
    let mb = FILES as f64;
    println!(
        "ram_budget: {}, {}",
        common::machine(),
        env.describe_mount()
    );
    println!(
        "read {FILES} MiB tree, limit {LIMIT} (4x): asdfs {} MiB/s, disk {} MiB/s, asdfs/disk {} ({} evictions a pass)",
        fmt_num(mb / asdfs_read),
        fmt_num(mb / disk_read),
        fmt_num(disk_read / asdfs_read),
        evictions
    );
    println!(
        "write {FILES} MiB, limit {LIMIT}: {} ({} MiB/s), {} pressure flushes; without pressure {} ({} MiB/s); cost per pressure flush {}",
        fmt_time(pressed),
        fmt_num(mb / pressed),
        flushes,
        fmt_time(free),
        fmt_num(mb / free),
        fmt_time((pressed - free).max(0.0) / flushes.max(1) as f64)
    );
}

fn with_limit(env: &Env, limit: &str) -> Env {
    let mut mount_args = env.mount_args.clone();
    mount_args.extend(["--ram-limit".to_string(), limit.to_string()]);
    Env {
        bin: env.bin.clone(),
        mode: env.mode,
        runs: env.runs,
        mount_args,
    }
}

fn read_tree(root: &Path) {
    for i in 0..FILES {
        let got = std::fs::read(root.join(format!("d{:03}/f{:04}", i % 4, i / 4)))
            .unwrap_or_else(|e| panic!("reading file {i}: {e}"));
        assert_eq!(got.len(), MIB);
    }
}

/// Median seconds of a pass through asdfs and through the disk, and evictions a pass.
fn reads(env: &Env) -> (f64, f64, u64) {
    let env = with_limit(env, LIMIT);
    let mut m = Asdfs::prepare(&env, |t| common::make_tree(t, 4, FILES / 4, MIB));
    m.mount();
    let (mut through, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..env.runs {
        check_interrupt();
        drop_caches();
        through.push(time(|| read_tree(m.target())).1.as_secs_f64());
        drop_caches();
        direct.push(time(|| read_tree(&m.disk_copy())).1.as_secs_f64());
    }
    let evictions = status_u64(&env, m.target(), "evictions") / env.runs as u64;
    m.unmount();
    (median(through), median(direct), evictions)
}

/// Median seconds of writing the files with the limit and without pressure, and the
/// pressure flushes of one write pass.
fn writes(env: &Env) -> (f64, f64, u64) {
    let data = pattern(MIB, 3);
    let pass = |limit: &str| -> (f64, u64) {
        let env = with_limit(env, limit);
        let mut secs = Vec::new();
        let mut flushes = 0;
        for _ in 0..env.runs {
            check_interrupt();
            let mut m = Asdfs::prepare(&env, |_| Ok(()));
            m.mount();
            let t = m.target().to_path_buf();
            let took = time(|| {
                for i in 0..FILES {
                    std::fs::write(t.join(format!("w{i}")), &data).expect("writing");
                }
            });
            secs.push(took.1.as_secs_f64());
            flushes = status_u64(&env, &t, "pressure_flushes");
            m.unmount();
        }
        (median(secs), flushes)
    };
    let (pressed, flushes) = pass(LIMIT);
    let (free, _) = pass("256M");
    (pressed, free, flushes)
}

fn status_u64(env: &Env, target: &Path, field: &str) -> u64 {
    let out = Command::new(&env.bin)
        .args(["status", "--json"])
        .arg(target)
        .output()
        .expect("asdfs status");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v[0]["ram"][field].as_u64().unwrap_or(0)
}
