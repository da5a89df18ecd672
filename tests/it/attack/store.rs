//! Attacks: store (see attack.rs). With a world-writable volatile directory (`/tmp`,
//! `/dev/shm`) a user can create the store's predictable paths before root does.

use super::*;
use crate::harness::{Mount, fuse_available};
use std::os::unix::fs::symlink;

/// A root-owned target `t` in a root-owned directory on /tmp.
fn root_target() -> (tempfile::TempDir, PathBuf) {
    let disk = tempfile::Builder::new()
        .prefix("asdfs-attack-disk-")
        .tempdir_in("/tmp")
        .unwrap();
    let target = disk.path().join("t");
    std::fs::create_dir(&target).unwrap();
    (disk, target)
}

fn attacker_mkdir(p: &Path) {
    let p = p.to_path_buf();
    as_attacker(move || {
        std::fs::create_dir(&p).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| e.to_string())
    })
    .unwrap();
}

fn attacker_symlink(to: &Path, at: &Path) {
    let (to, at) = (to.to_path_buf(), at.to_path_buf());
    as_attacker(move || symlink(&to, &at).map_err(|e| e.to_string())).unwrap();
}

/// A store root the attacker made is never used (nor written through): root's mount goes to
/// a store root of its own (finding F8: refusing it let anyone stop every mount there).
#[test]
fn a_store_root_the_attacker_made_is_not_used() {
    if !fuse_available() {
        return;
    }
    let decoy = Decoy::new();
    let vol = sticky_volatile("/dev/shm");
    let (_disk, target) = root_target();
    let root = vol.path().join("asdfs");
    attacker_mkdir(&root);
    attacker_symlink(&decoy.path, &root.join("daemon.log"));
    let _c = Cleanup::new(&target, vol.path());
    let r = root_mount(&target, vol.path(), &[]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    decoy.assert_untouched();
    assert!(r.0, "{}", r.1);
    assert_squatter_named(&r.1, &root);
    let names: Vec<_> = std::fs::read_dir(&root).unwrap().flatten().collect();
    assert_eq!(
        names.len(),
        1,
        "root wrote into the attacker's directory: {names:?}"
    );
}

/// The mount's warning names the squatted store root and its owner.
#[track_caller]
fn assert_squatter_named(err: &str, root: &Path) {
    let line = err
        .lines()
        .find(|l| l.contains(&root.display().to_string()))
        .unwrap_or_else(|| panic!("no warning naming {}: {err}", root.display()));
    assert!(line.contains(&format!("uid {ATTACKER}")), "{line}");
}

#[test]
fn a_store_the_attacker_owns_is_refused() {
    if !fuse_available() {
        return;
    }
    let decoy = Decoy::new();
    let vol = sticky_volatile("/dev/shm");
    let (_disk, target) = root_target();
    let root = vol.path().join("asdfs");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711)).unwrap();
    let store = root.join(asdfs::daemon::paths::store_key(&target));
    std::fs::create_dir(&store).unwrap();
    chown(&store, ATTACKER);
    let decoy_dir = decoy.path.parent().unwrap().to_path_buf();
    let mode_before = std::fs::metadata(&decoy_dir).unwrap().mode();
    attacker_symlink(&decoy.path, &store.join("owner.json"));
    attacker_symlink(&decoy_dir, &store.join("private"));
    let _c = Cleanup::new(&target, vol.path());
    let r = root_mount(&target, vol.path(), &[]);
    decoy.assert_untouched();
    assert_eq!(std::fs::metadata(&decoy_dir).unwrap().mode(), mode_before);
    assert_refused(&r, &store);
}

/// On disk (/tmp here is not tmpfs) root mounts a private tmpfs on the store root: never on
/// where a planted symlink points.
#[test]
fn no_tmpfs_is_mounted_through_a_planted_store_root_symlink() {
    if !fuse_available() {
        return;
    }
    let decoy = Decoy::new();
    let vol = sticky_volatile("/tmp");
    let (_disk, target) = root_target();
    let root = vol.path().join("asdfs");
    let decoy_dir = decoy.path.parent().unwrap().to_path_buf();
    attacker_symlink(&decoy_dir, &root);
    let mut c = Cleanup::new(&target, vol.path());
    c.extra.push(decoy_dir.clone());
    let r = root_mount(&target, vol.path(), &[]);
    assert!(
        !mount_points().contains(&decoy_dir.display().to_string()),
        "a tmpfs was mounted on the symlink's destination"
    );
    decoy.assert_untouched();
    assert!(r.0, "{}", r.1);
    assert!(
        std::fs::symlink_metadata(&root).unwrap().is_symlink(),
        "the planted symlink was replaced"
    );
}

/// The store root of a volatile directory where another user made `asdfs`.
fn alternate_root(vol: &Path) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(vol)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("asdfs."))
        })
        .collect();
    assert_eq!(found.len(), 1, "store roots: {found:?}");
    found[0].clone()
}

/// Finding F8: anyone could `mkdir /tmp/asdfs` and every root mount with `--volatile /tmp`
/// (asd's default) refused. Root uses a store root of its own instead, and every later
/// command finds it: flush, unmount, and a mount taking over after the daemon was killed.
#[test]
fn a_squatted_store_root_does_not_stop_root_mounts() {
    if !fuse_available() {
        return;
    }
    let vol = sticky_volatile("/dev/shm");
    let (disk, target) = root_target();
    let squatted = vol.path().join("asdfs");
    attacker_mkdir(&squatted);
    let _c = Cleanup::new(&target, vol.path());
    let t = target.to_str().unwrap();
    let r = root_mount(&target, vol.path(), &[]);
    assert!(r.0, "the mount refused: {}", r.1);
    assert_squatter_named(&r.1, &squatted);
    std::fs::write(target.join("f"), b"one\n").unwrap();
    let flush = crate::harness::asdfs(["flush", t]);
    assert!(
        flush.status.success(),
        "{}",
        String::from_utf8_lossy(&flush.stderr)
    );
    let unmount = crate::harness::asdfs(["unmount", t]);
    assert!(
        unmount.status.success(),
        "{}",
        String::from_utf8_lossy(&unmount.stderr)
    );
    assert_eq!(std::fs::read(disk.path().join("t/f")).unwrap(), b"one\n");
    // Killed with changes in RAM: the next mount takes the store over and writes them.
    let r = root_mount(&target, vol.path(), &[]);
    assert!(r.0, "{}", r.1);
    std::fs::write(target.join("f"), b"two\n").unwrap();
    let store = alternate_root(vol.path()).join(asdfs::daemon::paths::store_key(&target));
    let owner: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("owner.json")).unwrap()).unwrap();
    let pid = owner["pid"].as_i64().expect("the daemon's pid") as i32;
    // SAFETY: a plain signal to the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && std::time::Instant::now() < end
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let r = root_mount(&target, vol.path(), &[]);
    assert!(r.0, "the mount after the kill failed: {}", r.1);
    let _ = alternate_root(vol.path());
    let unmount = crate::harness::asdfs(["unmount", t]);
    assert!(
        unmount.status.success(),
        "{}",
        String::from_utf8_lossy(&unmount.stderr)
    );
    assert_eq!(std::fs::read(disk.path().join("t/f")).unwrap(), b"two\n");
}

#[test]
fn the_daemon_log_is_private() {
    if !fuse_available() {
        return;
    }
    let m = Mount::new();
    let log = m.volatile.path().join("asdfs/daemon.log");
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !log.exists() && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mode = std::fs::symlink_metadata(&log).expect("daemon.log").mode();
    assert_eq!(mode & 0o077, 0, "daemon.log has mode {:o}", mode & 0o7777);
}

/// A start that fails once the store exists removes what it made: the next mount starts
/// fresh instead of taking over a daemon that died.
#[test]
fn a_failed_start_leaves_nothing_behind() {
    failed_start(&[]);
}

#[test]
fn a_failed_start_leaves_nothing_behind_overlay_mode() {
    let _ns = crate::harness::NAMESPACES.read();
    failed_start(&["--mode", "overlay"]);
}

fn failed_start(mode: &[&str]) {
    if !fuse_available() {
        return;
    }
    let vol = tempfile::Builder::new()
        .prefix("asdfs-attack-vol-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let (disk, target) = root_target();
    let mut c = Cleanup::new(&target, vol.path());
    c.extra.push(target.clone());
    // A target on another filesystem than its parent: refused after the store is made.
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "asdfs-test", target.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let (ok, err) = root_mount(&target, vol.path(), mode);
    assert!(!ok, "the mount should fail");
    assert!(err.contains("mount point"), "{err}");
    let store = vol
        .path()
        .join("asdfs")
        .join(asdfs::daemon::paths::store_key(&target));
    assert!(!store.exists(), "{} was left behind", store.display());
    assert!(
        !disk.path().join(".t-asdfs").exists(),
        "the side directory was left behind"
    );
}

/// Finding F6: overlay mode pins the directory that holds the target with a clone mount in
/// the store, whose path /proc/mounts shows; the store's directories are 0711, so another
/// user could reach that directory through it, past a 0700 directory above it (a file in
/// `~/.cache` beside the target `~/.cache/t`, with `~` 0700).
#[test]
fn the_overlay_pin_does_not_expose_the_targets_parent() {
    if !fuse_available() {
        return;
    }
    let _ns = crate::harness::NAMESPACES.read_recursive();
    let home = tempfile::Builder::new()
        .prefix("asdfs-ph-")
        .tempdir_in("/tmp")
        .unwrap();
    let cache = home.path().join("c");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(cache.join("secret"), b"cookie\n").unwrap();
    std::fs::set_permissions(cache.join("secret"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let target = cache.join("t");
    std::fs::create_dir(&target).unwrap();
    let vol = sticky_volatile("/dev/shm");
    let _cleanup = Cleanup::new(&target, vol.path());
    let (ok, err) = root_mount(&target, vol.path(), &["--mode", "overlay"]);
    assert!(ok, "{err}");
    let vol_path = vol.path().display().to_string();
    let under_store: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .filter(|m| m.starts_with(&vol_path))
        .collect();
    let found = under_store.clone();
    let read = as_attacker(move || {
        for m in &found {
            if let Ok(s) = std::fs::read(m.join("secret")) {
                return Err(format!(
                    "read {}: {}",
                    m.join("secret").display(),
                    String::from_utf8_lossy(&s)
                ));
            }
        }
        Ok(())
    });
    assert!(
        read.is_ok(),
        "the target's parent is readable through the store ({under_store:?}): {read:?}"
    );
}
