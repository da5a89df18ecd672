//! Attacks: side (see attack.rs). The user owns the directory that holds the target and its
//! side directory `.NAME-asdfs/`: whatever they put there before root mounts must not make
//! root write through a symlink, nor make the CLI talk to a socket they chose.

use super::*;
use crate::harness::fuse_available;
use std::os::unix::fs::symlink;

/// The attacker's home with their target `t` in it; a root-owned volatile dir on /dev/shm.
fn setup() -> (tempfile::TempDir, PathBuf, tempfile::TempDir) {
    let home = attacker_home();
    let target = home.path().join("t");
    let t = target.clone();
    as_attacker(move || std::fs::create_dir(&t).map_err(|e| e.to_string())).unwrap();
    let vol = tempfile::Builder::new()
        .prefix("asdfs-attack-vol-")
        .tempdir_in("/dev/shm")
        .unwrap();
    (home, target, vol)
}

#[test]
fn session_symlink_in_a_pre_created_side_dir_is_not_written_through() {
    session_symlink_in(&[]);
}

#[test]
fn session_symlink_in_a_pre_created_side_dir_overlay_mode() {
    let _ns = crate::harness::NAMESPACES.read();
    session_symlink_in(&["--mode", "overlay"]);
}

fn session_symlink_in(mode: &[&str]) {
    if !fuse_available() {
        return;
    }
    let decoy = Decoy::new();
    let (home, target, vol) = setup();
    let side = home.path().join(".t-asdfs");
    let (s, d) = (side.clone(), decoy.path.clone());
    as_attacker(move || {
        std::fs::create_dir(&s).map_err(|e| e.to_string())?;
        symlink(&d, s.join("session")).map_err(|e| e.to_string())
    })
    .unwrap();
    let _c = Cleanup::new(&target, vol.path());
    let r = root_mount(&target, vol.path(), mode);
    decoy.assert_untouched();
    assert_refused(&r, &side);
}

#[test]
fn a_side_dir_that_is_a_symlink_is_refused() {
    if !fuse_available() {
        return;
    }
    let decoy = Decoy::new();
    let (home, target, vol) = setup();
    let side = home.path().join(".t-asdfs");
    let (s, d) = (side.clone(), decoy.path.parent().unwrap().to_path_buf());
    as_attacker(move || symlink(&d, &s).map_err(|e| e.to_string())).unwrap();
    let _c = Cleanup::new(&target, vol.path());
    let r = root_mount(&target, vol.path(), &[]);
    decoy.assert_untouched();
    assert!(!decoy.path.with_file_name("session").exists());
    assert_refused(&r, &side);
}

/// A session file the user wrote names a store whose socket the user listens on: root's
/// `asdfs status` must not connect to it.
#[test]
fn locate_does_not_follow_a_forged_session_file() {
    let (home, target, _vol) = setup();
    let fake = home.path().join("fake");
    let store = fake
        .join("asdfs")
        .join(asdfs::daemon::paths::store_key(&target));
    std::fs::create_dir_all(&store).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(store.join("control.sock")).unwrap();
    listener.set_nonblocking(true).unwrap();
    for p in [
        &fake,
        &fake.join("asdfs"),
        &store,
        &store.join("control.sock"),
    ] {
        chown(p, ATTACKER);
    }
    let side = home.path().join(".t-asdfs");
    let session = format!("{{\"store\": \"{}\", \"pid\": 1}}", store.display());
    as_attacker(move || {
        std::fs::create_dir(&side).map_err(|e| e.to_string())?;
        std::fs::write(side.join("session"), session).map_err(|e| e.to_string())
    })
    .unwrap();
    let connected = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (c, d) = (connected.clone(), done.clone());
    let watcher = std::thread::spawn(move || {
        while !d.load(std::sync::atomic::Ordering::SeqCst) {
            if listener.accept().is_ok() {
                c.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    });
    let out = crate::harness::asdfs(["status", target.to_str().unwrap()]);
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    watcher.join().unwrap();
    assert!(
        !connected.load(std::sync::atomic::Ordering::SeqCst),
        "root's `asdfs status` connected to the socket a forged session file named"
    );
    assert!(!out.status.success());
}
