//! Attacks on the target's path: its owner renames the directories above a mounted target
//! and puts a symlink in their place, so that a daemon resolving the target's path again
//! would act on another place (unmount a mount of root's).

use super::*;
use crate::harness::Mount;
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmpfs of root's mounted at `<dir>/t`: what the attacker wants unmounted.
struct RootMount {
    dir: tempfile::TempDir,
}

impl RootMount {
    fn new() -> RootMount {
        let dir = tempfile::Builder::new()
            .prefix("asdfs-attack-rootmount-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.path().join("t")).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "rootmount"])
            .arg(dir.path().join("t"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting the decoy tmpfs");
        RootMount { dir }
    }

    fn mounted(&self) -> bool {
        let me = self.dir.path().join("t");
        std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(1) == me.to_str())
    }
}

impl Drop for RootMount {
    fn drop(&mut self) {
        while self.mounted() {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path().join("t"))
                .status();
        }
    }
}

/// Puts the attacker's rename back (as root) when the test ends, so the mount guard finds
/// the target where it was.
struct Restore {
    place: PathBuf,
    moved: PathBuf,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if self.moved.exists() {
            let _ = std::fs::remove_file(&self.place);
            let _ = std::fs::rename(&self.moved, &self.place);
        }
    }
}

/// The daemon stopping (SIGTERM, as at shutdown) unmounts the mount it made, found through
/// the directory it held since the start, never the path: with the target's parent renamed
/// and a symlink to root's mount put in its place, root's tmpfs stays mounted.
#[test]
fn a_stopping_daemon_never_unmounts_what_a_symlink_in_the_path_points_to() {
    swapped_parent(false, false);
}

#[test]
fn a_stopping_overlay_daemon_never_unmounts_what_a_symlink_in_the_path_points_to() {
    swapped_parent(true, false);
}

/// An overlay flush swaps a fresh layer in beneath the mount on the target and detaches the
/// old one: through the attacker's symlink that would put root's mount beneath ours and
/// unmount it.
#[test]
fn an_overlay_flush_never_swaps_layers_through_a_symlink_in_the_path() {
    swapped_parent(true, true);
}

/// Sends one request to the daemon's control socket (the CLI would look the target up by
/// its path, which the attacker has changed).
fn request(m: &Mount, cmd: &str) -> String {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(m.store().join("control.sock"))
        .expect("the control socket");
    writeln!(s, "{{\"cmd\":\"{cmd}\"}}").unwrap();
    let mut last = String::new();
    for line in std::io::BufReader::new(s).lines() {
        last = line.unwrap_or_default();
    }
    last
}

fn swapped_parent(overlay: bool, flush_first: bool) {
    if !crate::harness::fuse_available() {
        return;
    }
    let decoy = RootMount::new();
    let mut m = Mount::prepare(|t| {
        std::fs::write(t.join("f"), b"before").unwrap();
        chown(t, ATTACKER);
    });
    if overlay {
        m.no_namespaces = Some(crate::harness::NAMESPACES.read_recursive());
        m.extra.extend(["--mode", "overlay"].map(String::from));
    }
    // The attacker owns the directory that holds the target (a home in a sticky /tmp).
    chown(m.disk.path(), ATTACKER);
    m.mount();
    std::fs::write(m.path("f"), b"after").unwrap();
    let pid = m.daemon_pid().expect("the daemon's pid");

    let place = m.disk.path().to_path_buf();
    let moved = place.with_extension("moved");
    let _restore = Restore {
        place: place.clone(),
        moved: moved.clone(),
    };
    let to = decoy.dir.path().to_path_buf();
    let (p, mv) = (place.clone(), moved.clone());
    as_attacker(move || {
        std::fs::rename(&p, &mv).map_err(|e| format!("rename: {e}"))?;
        std::os::unix::fs::symlink(&to, &p).map_err(|e| format!("symlink: {e}"))
    })
    .expect("the attacker's swap");

    if flush_first {
        let answer = request(&m, "flush");
        assert!(
            decoy.mounted(),
            "the flush unmounted root's tmpfs through the attacker's symlink ({answer})"
        );
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        decoy.mounted(),
        "the daemon unmounted root's tmpfs through the attacker's symlink"
    );
    let ours = moved.join("t");
    let still = std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(1) == ours.to_str());
    assert!(
        !still,
        "the daemon's own mount (moved with its parent) stayed mounted"
    );
    assert_eq!(
        std::fs::read(ours.join("f")).unwrap(),
        b"after",
        "the final flush reached the disk copy where it now is"
    );
}

/// Finding F4: a new start cleared "dead" asdfs mounts on the target by path (intermediate
/// components followed), and any `fuse.asdfs` mount there: a user who renamed a parent of
/// their target (here: a symlink on the way) made root unmount another user's live mount.
/// Now the target is resolved with no symlink, and only a mount whose daemon is gone is
/// removed.
#[test]
fn clearing_a_dead_mount_never_unmounts_a_live_one() {
    use asdfs::daemon::mounting::clear_dead_fuse_mounts;
    if !crate::harness::fuse_available() {
        return;
    }
    let m = crate::harness::Mount::new();
    let home = attacker_home();
    let link = home.path().join("link");
    let (to, l) = (m.disk.path().to_path_buf(), link.clone());
    as_attacker(move || std::os::unix::fs::symlink(&to, &l).map_err(|e| e.to_string())).unwrap();
    let through = clear_dead_fuse_mounts(&link.join("t"));
    assert!(
        m.is_mounted(),
        "the live mount was unmounted through a symlink"
    );
    let err = format!(
        "{:#}",
        through.expect_err("accepted a path through a symlink")
    );
    assert!(err.contains("symlink"), "{err}");
    let direct = clear_dead_fuse_mounts(&m.target);
    assert!(m.is_mounted(), "the live mount was unmounted");
    let err = format!("{:#}", direct.expect_err("a live mount is not dead"));
    assert!(err.contains("running"), "{err}");
}

/// Finding (RAM-budget round): the disk side (flushes, lazy loads), the hardlink backup and
/// the conflict sink each opened the target by its name again after the mount's directory
/// was opened and checked. The target's owner, swapping the target with a sibling directory
/// (`RENAME_EXCHANGE`) during the start, got a mount on one directory that served and
/// flushed the other. Whatever directory the mount lands on, it must show that directory.
#[test]
fn the_mount_serves_the_directory_it_is_on_whatever_is_swapped_during_the_start() {
    if !crate::harness::fuse_available() {
        return;
    }
    let mut checked = 0;
    for round in 0..12 {
        let home = attacker_home();
        let (t, x) = (home.path().join("t"), home.path().join("x"));
        for (d, f) in [(&t, "from_t"), (&x, "from_x")] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join(f), b"mine\n").unwrap();
            chown(d, ATTACKER);
            chown(&d.join(f), ATTACKER);
        }
        let t_ino = std::fs::metadata(&t).unwrap().ino();
        let vol = sticky_volatile("/dev/shm");
        let mut cleanup = Cleanup::new(&t, vol.path());
        cleanup.extra.push(x.clone());
        let (ct, cx) = (
            std::ffi::CString::new(t.as_os_str().as_encoded_bytes()).unwrap(),
            std::ffi::CString::new(x.as_os_str().as_encoded_bytes()).unwrap(),
        );
        // The attacker swaps t and x until a mount on one of them stops it (EBUSY).
        let swapper = std::thread::spawn(move || {
            as_attacker(move || {
                let end = Instant::now() + Duration::from_secs(3);
                while Instant::now() < end {
                    // SAFETY: NUL-terminated paths.
                    let r = unsafe {
                        libc::renameat2(
                            libc::AT_FDCWD,
                            ct.as_ptr(),
                            libc::AT_FDCWD,
                            cx.as_ptr(),
                            libc::RENAME_EXCHANGE,
                        )
                    };
                    if r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBUSY)
                    {
                        break;
                    }
                }
                Ok(())
            })
        });
        std::thread::sleep(Duration::from_millis(20));
        let (ok, _) = root_mount(&t, vol.path(), &[]);
        swapper.join().unwrap().unwrap();
        if !ok {
            continue;
        }
        let points = mount_points();
        let Some(at) = [&t, &x]
            .into_iter()
            .find(|p| points.contains(&p.display().to_string()))
        else {
            continue;
        };
        // The directory under the mount, by the inode its name has in the parent's listing.
        let under = std::fs::read_dir(home.path())
            .unwrap()
            .flatten()
            .find(|e| e.path() == *at)
            .map(|e| std::os::unix::fs::DirEntryExt::ino(&e))
            .unwrap();
        let want = if under == t_ino { "from_t" } else { "from_x" };
        let seen: Vec<String> = std::fs::read_dir(at)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            seen.iter().any(|n| n == want),
            "round {round}: the mount on the directory holding {want} serves {seen:?}"
        );
        checked += 1;
        drop(cleanup);
    }
    assert!(checked > 0, "no round mounted");
}
