//! Rename storms while flushes run (QA findings 3 and 4 of the overlay round): several
//! workers rename files between names and directories, make, rename and remove
//! directories, while `asdfs flush` runs back to back. After the workload stops, the tree
//! the mount shows (names, contents, modes) must be the disk copy's after a clean unmount:
//! no renamed file's old name back, no directory's mode changed.

use super::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Every name under `root` with its mode, and its contents if it is a file.
fn tree(root: &Path) -> BTreeMap<String, (u32, Option<Vec<u8>>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap().flatten() {
            let r = rel.join(e.file_name());
            let md = match fs::symlink_metadata(root.join(&r)) {
                Ok(md) => md,
                Err(e) => {
                    // Listed but not there: the merged view disagrees with itself.
                    let what = format!("listed, then {e}").into_bytes();
                    out.insert(r.display().to_string(), (0, Some(what)));
                    continue;
                }
            };
            let mode = md.permissions().mode();
            if md.is_dir() {
                out.insert(format!("{}/", r.display()), (mode, None));
                stack.push(r);
            } else {
                out.insert(
                    r.display().to_string(),
                    (mode, Some(fs::read(root.join(&r)).unwrap())),
                );
            }
        }
    }
    out
}

/// What differs between two trees, one line per name.
fn diff(
    seen: &BTreeMap<String, (u32, Option<Vec<u8>>)>,
    disk: &BTreeMap<String, (u32, Option<Vec<u8>>)>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in seen {
        match disk.get(k) {
            None if v.0 == 0 => out.push(format!(
                "{k}: listed by the mount but not there ({}), not on disk",
                String::from_utf8_lossy(v.1.as_deref().unwrap_or_default())
            )),
            None => out.push(format!("{k}: missing on disk")),
            Some(d) if d.0 != v.0 => {
                out.push(format!("{k}: mode {:o} on disk, {:o} seen", d.0, v.0))
            }
            Some(d) if d.1 != v.1 => out.push(format!(
                "{k}: {:?} on disk, {:?} seen",
                String::from_utf8_lossy(d.1.as_deref().unwrap_or_default()),
                String::from_utf8_lossy(v.1.as_deref().unwrap_or_default())
            )),
            _ => {}
        }
    }
    for k in disk.keys().filter(|k| !seen.contains_key(*k)) {
        out.push(format!("{k}: on disk only"));
    }
    out
}

const DIRS: [&str; 4] = ["a", "b", "c/deep", "d"];

fn setup(t: &Path) {
    for (i, d) in DIRS.iter().enumerate() {
        fs::create_dir_all(t.join(d)).unwrap();
        for f in 0..12 {
            fs::write(t.join(d).join(format!("f{i}_{f}")), format!("{d}/{f}")).unwrap();
        }
    }
}

/// Copies a directory tree as cp -a (and mv across filesystems) does: each directory made
/// 0700, filled, then given its mode.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let mode = fs::symlink_metadata(from)?.permissions().mode();
    fs::create_dir(to)?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o700))?;
    for e in fs::read_dir(from)?.flatten() {
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        } else {
            fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
}

/// mv: a rename, or where overlayfs refuses it for a directory from disk (EXDEV), a copy
/// and a removal.
fn mv(from: &Path, to: &Path) -> std::io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            copy_tree(from, to)?;
            fs::remove_dir_all(from)
        }
        r => r,
    }
}

/// One worker: renames files of the shared directories to other names and directories,
/// makes directories (0755) and renames or removes them, writes and removes a few files.
fn storm(target: PathBuf, seed: u64, ops: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut made: Vec<PathBuf> = Vec::new();
    for n in 0..ops {
        let mut dirs: Vec<PathBuf> = DIRS.iter().map(|d| target.join(d)).collect();
        dirs.extend(made.iter().cloned());
        let dir = dirs[rng.random_range(0..dirs.len())].clone();
        let files: Vec<PathBuf> = fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        let to = dirs[rng.random_range(0..dirs.len())].clone();
        let name = format!("s{seed}_{n}");
        // Errors are races with the other workers (ENOENT, EXDEV for directories from
        // disk...): the comparison at the end is what counts.
        let _ = match rng.random_range(0..100) {
            0..60 if !files.is_empty() => {
                let f = &files[rng.random_range(0..files.len())];
                let keep = f.file_name().unwrap().to_string_lossy().into_owned();
                let stem = keep.split('.').next().unwrap().to_string();
                fs::rename(f, to.join(format!("{stem}.{}", rng.random_range(0..3))))
            }
            60..70 => {
                let d = to.join(format!("D{name}"));
                let r = fs::create_dir(&d);
                if r.is_ok() {
                    let _ = fs::write(d.join("inner"), name.as_bytes());
                    made.push(d);
                }
                r
            }
            70..80 if !made.is_empty() => {
                let i = rng.random_range(0..made.len());
                let to = DIRS[rng.random_range(0..DIRS.len())];
                let new = target
                    .join(to)
                    .join(format!("R{seed}_{}", rng.random_range(0..4)));
                let r = mv(&made[i], &new);
                if r.is_ok() {
                    made[i] = new;
                }
                r
            }
            80..84 if !made.is_empty() => {
                let d = made.swap_remove(rng.random_range(0..made.len()));
                fs::remove_dir_all(d)
            }
            84..92 => fs::write(to.join(format!("w{name}")), name.as_bytes()),
            92..100 if !files.is_empty() => {
                fs::remove_file(&files[rng.random_range(0..files.len())])
            }
            _ => Ok(()),
        };
    }
}

/// A child process, killed and reaped when dropped (also when the test fails).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn storm_round(seed: u64, live: bool) -> Vec<String> {
    let Some(m) = overlay_mount(setup) else {
        return Vec::new();
    };
    // A shell whose working directory is in the overlay keeps every flush on the live
    // path (design.md §10.3).
    let mut shell = live.then(|| {
        Killed(
            std::process::Command::new("sleep")
                .arg("60")
                .current_dir(m.path("a"))
                .spawn()
                .unwrap(),
        )
    });
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3u64)
        .map(|w| {
            let target = m.target.clone();
            std::thread::spawn(move || storm(target, seed * 10 + w, 3000))
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
    shell.take();
    let seen = tree(&m.target);
    m.unmount();
    let disk = tree(&m.target);
    let mut out: Vec<String> = failures
        .iter()
        .take(1)
        .map(|f| format!("{} flushes failed, the first: {f}", failures.len()))
        .chain(diff(&seen, &disk))
        .map(|d| format!("seed {seed}{}: {d}", if live { " (live)" } else { "" }))
        .collect();
    out.truncate(10);
    out
}

#[test]
fn a_rename_storm_while_flushes_run_leaves_the_disk_as_the_mount_showed() {
    let mut wrong = Vec::new();
    for seed in 1..=3u64 {
        wrong.extend(storm_round(seed, false));
        wrong.extend(storm_round(seed, true));
    }
    assert!(
        wrong.is_empty(),
        "the disk copy differs:\n{}",
        wrong.join("\n")
    );
}

/// QA finding 4: `cp -a` (and mv across filesystems) makes each directory 0700, fills it,
/// then gives it its mode. A live flush that walked such a directory at 0700 and marked it
/// opaque after its mode was set recorded the marked directory's signature: no later flush
/// looked at it again, and the disk copy kept 0700.
#[test]
fn directories_copied_while_flushes_run_keep_their_modes_on_disk() {
    let Some(m) = overlay_mount(|t| {
        fs::create_dir(t.join("tpl")).unwrap();
        for f in 0..20 {
            fs::write(t.join("tpl").join(format!("f{f}")), format!("{f}")).unwrap();
        }
        fs::create_dir(t.join("tpl/sub")).unwrap();
        fs::write(t.join("tpl/sub/x"), b"x").unwrap();
    }) else {
        return;
    };
    // Many names in the upper layer: a walk takes a while after it passed the copies.
    fs::create_dir(m.path("z_bulk")).unwrap();
    for f in 0..3000 {
        fs::write(m.path(&format!("z_bulk/{f}")), b"").unwrap();
    }
    m.flush();
    // Every flush is a live one (design.md §10.3).
    let shell = Killed(
        std::process::Command::new("sleep")
            .arg("60")
            .current_dir(m.path("tpl"))
            .spawn()
            .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let target = m.target.clone();
            std::thread::spawn(move || {
                for n in 0..100 {
                    // As cp -a: made 0700, filled (a file at a time), given its mode.
                    let d = target.join(format!("c{w}_{n}"));
                    fs::create_dir(&d).unwrap();
                    fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
                    for f in 0..10 {
                        fs::write(d.join(format!("f{f}")), b"x").unwrap();
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
                }
            })
        })
        .collect();
    let flusher = {
        let (stop, target) = (stop.clone(), m.target.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let out = asdfs(["flush", target.to_str().unwrap()]);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        })
    };
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    flusher.join().unwrap();
    drop(shell);
    let seen = tree(&m.target);
    m.unmount();
    let wrong = diff(&seen, &tree(&m.target));
    assert!(
        wrong.is_empty(),
        "the disk copy differs:\n{}",
        wrong[..wrong.len().min(10)].join("\n")
    );
}

/// QA's storm, run 2 of the second round: a name a flush wrote, renamed away later, came
/// back on disk. A directory made in a layer is looked up through the next overlay before
/// the flush of that layer puts it on disk; while that layer stays in the overlay (the
/// second swap refused: a program held a directory), the kernel keeps the directory's
/// layers as it found them, without the disk copy. A name made in it, written by a live
/// flush and renamed away, leaves no whiteout (overlayfs saw nothing below), only a name
/// gone from the upper layer: what the kernel does to the upper layer is done here by hand,
/// and the next flush of the layer must remove the disk copy's name.
#[test]
fn a_name_gone_from_the_layer_without_a_whiteout_leaves_the_disk_too() {
    use crate::simdisk::{SimDisk, picture};
    use asdfs::overlay::flush::{Layer, OverlayFlusher};
    use asdfs::overlay::upper::Upper;
    let tmp = tempfile::Builder::new()
        .prefix("asdfs-gone-")
        .tempdir_in("/tmp")
        .unwrap();
    let u = tmp.path().join("upper");
    // `d` is on disk: the upper layer has it merged, not opaque.
    fs::create_dir_all(u.join("d/e")).unwrap();
    fs::write(u.join("d/p"), b"p").unwrap();
    fs::write(u.join("d/e/q"), b"q").unwrap();
    let sim = Arc::new(SimDisk::new());
    sim.put_dir("d");
    let f = OverlayFlusher::new(sim.clone(), 0);
    let upper = Upper::open(asdfs::overlay::layers::open_dir(&u).unwrap()).unwrap();
    let flush = |done: &std::collections::HashMap<_, _>| {
        let layer = Layer {
            upper: &upper,
            live: true,
            overlay: None,
            done,
            held: &Default::default(),
        };
        f.flush(&layer, &|_, _| {}).unwrap().1
    };
    let done = flush(&Default::default());
    let names = || picture(&sim.everything()).0.into_keys().collect::<Vec<_>>();
    assert_eq!(names(), ["/d", "/d/e", "/d/e/q", "/d/p"]);
    // Renamed in the upper layer without a whiteout, as overlayfs does when it found
    // nothing below: a file, and a directory with its entries.
    fs::rename(u.join("d/p"), u.join("p2")).unwrap();
    fs::rename(u.join("d/e"), u.join("e2")).unwrap();
    flush(&done);
    assert_eq!(names(), ["/d", "/e2", "/e2/q", "/p2"]);
}

/// QA's storm, run 7: files renamed in the first moments were gone on disk, though the
/// mount showed them. A program holding a directory of a replaced overlay keeps that
/// overlay's layers due. A flush that could not swap (a program held a directory of the
/// current overlay) wrote a newer middle layer and let it leave the overlay at the next
/// swap, while the older, due one stayed: the older layer's names showed again above the
/// disk copy the newer layer had changed, and the disk never got them back.
#[test]
fn a_newer_layer_stays_in_the_overlay_while_an_older_one_is_due() {
    let Some(m) = overlay_mount(|t| fs::create_dir(t.join("d")).unwrap()) else {
        return;
    };
    let private = m.store().join("private");
    let layers = || -> Vec<u64> {
        fs::read_dir(&private)
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("upper.")?.parse().ok())
            .collect()
    };
    // A directory of the overlay opened while a flush swaps it out: the replaced overlay
    // stays in use, its layer due.
    let mut old_dir = None;
    for _ in 0..40 {
        fs::write(m.path("d/a"), b"a").unwrap();
        let next = layers().into_iter().max().unwrap() + 1;
        let before = top_upperdir(&m.target).unwrap();
        let mut flush = std::process::Command::new(crate::harness::BIN)
            .args(["flush", m.target.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        while !private.join(format!("upper.{next}")).exists() {
            if flush.try_wait().unwrap().is_some() {
                break;
            }
            std::hint::spin_loop();
        }
        let dir = fs::File::open(m.path("d")).unwrap();
        let in_window = top_upperdir(&m.target).as_ref() == Some(&before);
        assert!(flush.wait().unwrap().success());
        if in_window {
            old_dir = Some(dir);
            break;
        }
    }
    let Some(old_dir) = old_dir else {
        eprintln!("inconclusive: the open never fell between the scan and the swap");
        return;
    };
    fs::rename(m.path("d/a"), m.path("d/b")).unwrap();
    m.flush();
    // A program in the current overlay: the next flush cannot swap.
    let shell = Killed(
        std::process::Command::new("sleep")
            .arg("60")
            .current_dir(m.path("d"))
            .spawn()
            .unwrap(),
    );
    m.flush();
    drop(shell);
    // Something in the upper layer, so that the flush swaps it.
    fs::write(m.path("d/c"), b"c").unwrap();
    m.flush();
    let seen = names(&m.target);
    drop(old_dir);
    m.unmount();
    assert_eq!(seen, ["d/", "d/b", "d/c"], "the mount after the swap");
    assert_eq!(names(&m.target), seen, "the disk copy");
}
