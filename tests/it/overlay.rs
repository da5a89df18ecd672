//! Overlay mode on real mounts: every kind of change in the upper layer reaches the disk
//! copy (whiteouts, opaque and renamed directories, hard links, xattrs, attributes), RAM
//! comes back after a flush, files held open stay one file across the swap of upper layers,
//! and a killed daemon, an unmount with open files or an unmount by someone else lose
//! nothing.

use crate::harness::{Mount, asdfs, fuse_available};
use std::fs;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};
fn overlay_mount(setup: impl FnOnce(&Path)) -> Option<Mount> {
    if !fuse_available() {
        return None;
    }
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "overlay tests need root in CI"
        );
        eprintln!("skipping: overlay mode needs root");
        return None;
    }
    let mut m = Mount::prepare(setup);
    m.no_namespaces = Some(crate::harness::NAMESPACES.read_recursive());
    m.extra.extend(["--mode", "overlay"].map(String::from));
    m.mount();
    assert_eq!(m.status()["mode"], "overlay", "overlay mode fell back");
    Some(m)
}

/// Every name under `root`, sorted, with "/" after directories.
fn names(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![std::path::PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap().flatten() {
            let r = rel.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                out.push(format!("{}/", r.display()));
                stack.push(r);
            } else {
                out.push(r.display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn wait_gone(pid: i32) {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z") {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("daemon {pid} still running");
}

/// The upper layer of the overlay on the target, as /proc/self/mountinfo names it.
fn top_upperdir(target: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .rfind(|l| l.split(' ').nth(4) == Some(target.to_str().unwrap()))
        .and_then(|l| {
            l.split(',')
                .find_map(|o| o.strip_prefix("upperdir=").map(String::from))
        })
}

mod changes;
mod held;
mod lifecycle;
mod storm;
