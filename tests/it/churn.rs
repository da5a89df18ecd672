//! A cache's workload while flushes run (FUSE mode, real mount): several threads create,
//! hard-link, rename and delete files and directories, each in its own subtree, while
//! `asdfs flush` runs back to back. Every flush must succeed, and at the end the disk copy
//! must hold exactly what the mount shows (names, contents, hard links).
//! Found by the QA round's stress scripts: a flush plan that moves a node from a name the
//! disk copy no longer has ("checking the flush plan (not committed): step N: inode I is
//! not at …"), after which no flush and no unmount succeeds.

use crate::harness::{Mount, asdfs, fuse_available};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn walk(root: &Path, dirs: &mut Vec<PathBuf>, files: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(root) else { return };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => {
                dirs.push(p.clone());
                walk(&p, dirs, files);
            }
            Ok(_) => files.push(p),
            Err(_) => {}
        }
    }
}

/// Names with their contents (`None`: a directory), and the groups of names of one inode.
type Snapshot = (BTreeMap<String, Option<Vec<u8>>>, Vec<Vec<String>>);

fn snapshot(root: &Path) -> Snapshot {
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    walk(root, &mut dirs, &mut files);
    let rel = |p: &Path| p.strip_prefix(root).unwrap().display().to_string();
    let mut names: BTreeMap<String, Option<Vec<u8>>> =
        dirs.iter().map(|d| (rel(d), None)).collect();
    let mut inos: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for f in &files {
        names.insert(rel(f), Some(fs::read(f).unwrap()));
        inos.entry(fs::symlink_metadata(f).unwrap().ino())
            .or_default()
            .push(rel(f));
    }
    let mut groups: Vec<Vec<String>> = inos
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    groups.sort();
    (names, groups)
}

fn churn(base: PathBuf, seed: u64, ops: usize) {
    fs::create_dir_all(&base).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    for n in 0..ops {
        let (mut dirs, mut files) = (vec![base.clone()], Vec::new());
        walk(&base, &mut dirs, &mut files);
        let dir = dirs[rng.random_range(0..dirs.len())].clone();
        let file = (!files.is_empty()).then(|| files[rng.random_range(0..files.len())].clone());
        // Errors are races with this thread's own earlier choices (ENOENT, EEXIST...): the
        // comparison at the end is what counts.
        let _ = match rng.random_range(0..100) {
            0..35 => fs::write(dir.join(format!("f{n}")), format!("{n} ").repeat(n % 50)),
            35..45 => file.map_or(Ok(()), |f| fs::hard_link(f, dir.join(format!("l{n}")))),
            45..55 => file.map_or(Ok(()), |f| fs::rename(f, dir.join(format!("r{n}")))),
            55..62 => fs::create_dir(dir.join(format!("d{n}"))),
            62..70 if dirs.len() > 1 => {
                let src = &dirs[rng.random_range(1..dirs.len())];
                let dst = dir.join(format!("D{n}"));
                if dst.starts_with(src) {
                    Ok(())
                } else {
                    fs::rename(src, dst)
                }
            }
            70..74 if dirs.len() > 1 => fs::remove_dir_all(&dirs[rng.random_range(1..dirs.len())]),
            74..90 => file.map_or(Ok(()), fs::remove_file),
            _ => Ok(()),
        };
    }
}

#[test]
fn a_cache_workload_while_flushes_run_reaches_the_disk_whole() {
    if !fuse_available() {
        return;
    }
    for round in 0..3u64 {
        let mut m = Mount::prepare(|_| {});
        m.extra = vec!["--backups".into(), "no".into()];
        m.mount();
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..3u64)
            .map(|w| {
                let base = m.path(&format!("w{w}"));
                std::thread::spawn(move || churn(base, round * 10 + w, 1500))
            })
            .collect();
        let flusher = {
            let (stop, target) = (stop.clone(), m.target.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let out = asdfs(["flush", target.to_str().unwrap()]);
                    if !out.status.success() {
                        failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
                    }
                }
                failures
            })
        };
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        let failures = flusher.join().unwrap();
        assert!(
            failures.is_empty(),
            "round {round}: {} flushes failed while the workload ran, the first: {}\ndaemon log:\n{}",
            failures.len(),
            failures[0],
            m.log_tail()
        );
        m.flush();
        let seen = snapshot(&m.target);
        assert_eq!(
            snapshot(&m.disk_copy()),
            seen,
            "round {round}: after a flush"
        );
        m.unmount();
        assert_eq!(
            snapshot(&m.target),
            seen,
            "round {round}: after the unmount"
        );
    }
}
