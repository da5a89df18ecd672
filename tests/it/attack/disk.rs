//! Attacks: disk (see attack.rs). The owner of a target changes its disk copy behind the
//! daemon (through a descriptor opened before the mount) so that a root flush or backup would
//! act on a root-owned file through a symlink.

use super::*;
use crate::harness::Mount;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

/// A mounted target owned by the attacker, holding the attacker's file `g`, and a descriptor
/// of its disk copy (opened before the mount) the attacker's child inherits.
struct Owned {
    m: Mount,
    under: std::fs::File,
}

impl Owned {
    fn mount(extra: &[&str]) -> Owned {
        let mut m = Mount::prepare(|t| {
            std::fs::write(t.join("g"), b"mine\n").unwrap();
            std::fs::create_dir(t.join("d")).unwrap();
            for p in [t.to_path_buf(), t.join("g"), t.join("d")] {
                chown(&p, ATTACKER);
            }
        });
        // The attacker may enter the directory that holds the target, as in a home.
        std::fs::set_permissions(m.disk.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let under = std::fs::File::open(&m.target).unwrap();
        if extra.contains(&"overlay") {
            m.no_namespaces = Some(crate::harness::NAMESPACES.read_recursive());
            m.extra.extend(["--mode", "overlay"].map(String::from));
        }
        m.extra.extend(
            extra
                .iter()
                .filter(|e| **e != "overlay")
                .map(|e| e.to_string()),
        );
        m.mount();
        Owned { m, under }
    }

    /// As the attacker: replaces `name` in the disk copy by a symlink to `to`.
    fn swap_for_symlink(&self, name: &str, to: &Path) {
        let fd = self.under.as_raw_fd();
        let (name, to) = (name.to_string(), to.to_path_buf());
        as_attacker(move || {
            let n = std::ffi::CString::new(name).unwrap();
            let t = std::ffi::CString::new(to.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: NUL-terminated strings; `fd` is inherited from the parent.
            let unlinked = unsafe {
                libc::unlinkat(fd, n.as_ptr(), 0) == 0
                    || libc::unlinkat(fd, n.as_ptr(), libc::AT_REMOVEDIR) == 0
            };
            // SAFETY: as above.
            if !unlinked || unsafe { libc::symlinkat(t.as_ptr(), fd, n.as_ptr()) } != 0 {
                return Err(format!("swap: {}", std::io::Error::last_os_error()));
            }
            Ok(())
        })
        .expect("the attacker's swap");
    }

    #[track_caller]
    fn assert_conflict_reported(&self, name: &str) {
        let log = self.m.log_tail();
        assert!(
            log.contains("conflict") && log.contains(&format!("target:/{name}")),
            "the conflict at {name} was not reported; daemon log:\n{log}"
        );
    }
}

/// Finding 1: the flush applied a mode with fchmodat following the name's symlink. `name`
/// gets mode 04777 through the mount, then becomes a symlink to the decoy on disk.
fn chmod_through_swapped_symlink(extra: &[&str], name: &str) {
    if !crate::harness::fuse_available() {
        return;
    }
    let decoy = Decoy::new();
    let o = Owned::mount(extra);
    std::fs::set_permissions(o.m.path(name), std::fs::Permissions::from_mode(0o4777)).unwrap();
    o.swap_for_symlink(name, &decoy.path);
    o.m.flush();
    decoy.assert_untouched();
    if extra.contains(&"overlay") {
        // Overlay mode plans from the disk as it is: the symlink is replaced by rename.
        let on_disk = std::fs::symlink_metadata(o.m.disk_copy().join(name)).unwrap();
        assert!(on_disk.is_dir(), "the symlink at {name} was kept");
    } else {
        o.assert_conflict_reported(name);
    }
}

#[test]
fn flush_never_chmods_through_a_file_swapped_for_a_symlink() {
    chmod_through_swapped_symlink(&[], "g");
}

#[test]
fn flush_never_chmods_through_a_directory_swapped_for_a_symlink() {
    chmod_through_swapped_symlink(&[], "d");
}

/// Overlay mode copies a file up whole (its flush then replaces the name by rename), but a
/// directory's new mode is a metadata step on the disk name. Its plan stats the disk name
/// and replaces the symlink by the RAM version; a swap after the plan is the backing's
/// conflict, as in FUSE mode.
#[test]
fn overlay_flush_never_chmods_through_a_directory_swapped_for_a_symlink() {
    chmod_through_swapped_symlink(&["overlay"], "d");
}

/// The hardlink backup `.t-backup_asd-old` is made in the directory that holds the target,
/// which its owner controls: a symlink put there in its place is neither followed nor kept.
#[test]
fn backup_never_follows_a_symlink_in_its_place() {
    if !crate::harness::fuse_available() {
        return;
    }
    let decoy = Decoy::new();
    let m = Mount::prepare(|t| std::fs::write(t.join("f"), b"mine\n").unwrap());
    chown(&m.target, ATTACKER);
    chown(m.disk.path(), ATTACKER);
    let victim_dir = decoy.path.parent().unwrap().to_path_buf();
    let backup = m.disk.path().join(".t-backup_asd-old");
    let (b, v) = (backup.clone(), victim_dir.clone());
    as_attacker(move || std::os::unix::fs::symlink(&v, &b).map_err(|e| e.to_string())).unwrap();
    m.mount();
    m.wait_backup();
    std::fs::write(m.path("f"), b"changed\n").unwrap();
    m.flush();
    m.unmount();
    decoy.assert_untouched();
    let names: Vec<_> = std::fs::read_dir(&victim_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec!["victim"],
        "something was made in the decoy's directory"
    );
    let st = std::fs::symlink_metadata(&backup);
    assert!(
        st.as_ref().map_or(true, |s| !s.file_type().is_symlink()),
        "the attacker's symlink is still used as the backup"
    );
}

/// A file replaced on disk by another file (another inode, the same kind) is a conflict too:
/// the flush does not give the new object the attributes meant for the old one. (With
/// hard links protected, the new file is the attacker's own; the guard matters where it is
/// not, or a hard link to someone else's file was made earlier.)
#[test]
fn flush_never_sets_attributes_on_another_inode_at_the_name() {
    if !crate::harness::fuse_available() {
        return;
    }
    let o = Owned::mount(&[]);
    std::fs::set_permissions(o.m.path("g"), std::fs::Permissions::from_mode(0o4777)).unwrap();
    let fd = o.under.as_raw_fd();
    as_attacker(move || {
        // SAFETY: NUL-terminated names; `fd` is inherited from the parent.
        let r = unsafe {
            let tmp = libc::openat(fd, c"other".as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o600);
            tmp >= 0 && libc::renameat(fd, c"other".as_ptr(), fd, c"g".as_ptr()) == 0
        };
        r.then_some(())
            .ok_or_else(|| std::io::Error::last_os_error().to_string())
    })
    .unwrap();
    o.m.flush();
    let st = std::fs::symlink_metadata(o.m.disk_copy().join("g")).unwrap();
    assert_eq!(
        st.mode() & 0o7777,
        0o600,
        "the other file got g's attributes"
    );
    o.assert_conflict_reported("g");
}

/// Starts `cmd` and waits up to `secs` seconds for it: Ok(output), or Err(the child still
/// running: a process blocked on a FUSE request the daemon never answers cannot be killed
/// until it does).
fn within(
    secs: u64,
    cmd: &mut std::process::Command,
) -> Result<std::process::Output, std::process::Child> {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if child.try_wait().unwrap().is_some() {
            return Ok(child.wait_with_output().unwrap());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err(child)
}

/// Finding F5: a FIFO swapped into the disk copy for a file the daemon recorded made root's
/// daemon block opening it to load the data (holding the disk gate), so reads of it and
/// `asdfs flush` hung. The load must refuse it (a conflict) at once.
#[test]
fn a_fifo_swapped_in_for_a_file_never_blocks_the_daemon() {
    if !crate::harness::fuse_available() {
        return;
    }
    let o = Owned::mount(&[]);
    std::fs::symlink_metadata(o.m.path("g")).unwrap();
    let fd = o.under.as_raw_fd();
    as_attacker(move || {
        // SAFETY: NUL-terminated names; `fd` is inherited from the parent.
        let ok = unsafe {
            libc::unlinkat(fd, c"g".as_ptr(), 0) == 0
                && libc::mkfifoat(fd, c"g".as_ptr(), 0o666) == 0
        };
        ok.then_some(())
            .ok_or_else(|| format!("swap: {}", std::io::Error::last_os_error()))
    })
    .unwrap();
    let read = within(10, std::process::Command::new("cat").arg(o.m.path("g")));
    let flush = match read {
        Ok(_) => within(
            20,
            std::process::Command::new(crate::harness::BIN)
                .arg("flush")
                .arg(&o.m.target),
        ),
        Err(_) => Err(std::process::Command::new("true").spawn().unwrap()),
    };
    if read.is_err() || flush.is_err() {
        // Release the daemon's blocked open (a writer), so that the test can clean up.
        let fifo = format!("/proc/self/fd/{fd}/g");
        let _w = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo);
        for c in [read.err(), flush.err()].into_iter().flatten() {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
        panic!("reading the file through the mount or asdfs flush hung");
    }
    let flush = flush.unwrap();
    assert!(
        flush.status.success(),
        "asdfs flush failed: {}",
        String::from_utf8_lossy(&flush.stderr)
    );
    let kind = std::fs::symlink_metadata(o.m.disk_copy().join("g")).unwrap();
    assert!(
        kind.file_type().is_fifo(),
        "the daemon replaced the FIFO it did not load"
    );
}

/// Finding F7: in a fresh overlay the owner of the target could not create a file (EACCES)
/// until root wrote something: the overlay's root inode kept the attributes the upper
/// directory had when the overlay was made (root's), given the target's only afterwards.
#[test]
fn the_owner_can_write_into_a_fresh_overlay() {
    if !crate::harness::fuse_available() {
        return;
    }
    let o = Owned::mount(&["overlay"]);
    let f = o.m.path("new");
    as_attacker(move || std::fs::write(&f, b"hi\n").map_err(|e| format!("creating: {e}"))).unwrap();
    o.m.flush();
    assert_eq!(std::fs::read(o.m.disk_copy().join("new")).unwrap(), b"hi\n");
}

/// `--fsync sync` writes a file asdfs itself put on disk in place (design.md §6.3): root
/// opens the disk name and writes into it. The target's owner swaps that name for a symlink
/// to a root-owned file between the flush that wrote it and the fsync: the write must go
/// nowhere near the decoy (the name is opened beneath the target without following a
/// symlink, and must still be the inode the flush made).
#[test]
fn fsync_in_place_never_writes_through_a_file_swapped_for_a_symlink() {
    use std::os::unix::fs::FileExt;
    if !crate::harness::fuse_available() {
        return;
    }
    let decoy = Decoy::new();
    let o = Owned::mount(&["--fsync", "sync"]);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(o.m.path("g"))
        .unwrap();
    f.write_all_at(b"asdfs's own copy\n", 0).unwrap();
    // The first fsync writes the file by a flush: the disk inode is asdfs's own afterwards.
    f.sync_data().unwrap();
    o.swap_for_symlink("g", &decoy.path);
    f.write_all_at(b"into root's file?\n", 0).unwrap();
    // Written in place it would land in the decoy; refused, it is left to a flush, which
    // replaces the symlink by rename.
    let _ = f.sync_data();
    drop(f);
    o.m.flush();
    decoy.assert_untouched();
    assert_eq!(
        std::fs::read(o.m.path("g")).unwrap(),
        b"into root's file?\n",
        "the mount serves what was written"
    );
    let on_disk = std::fs::symlink_metadata(o.m.disk_copy().join("g")).unwrap();
    assert!(on_disk.is_file(), "the symlink at g was kept on disk");
    assert_eq!(
        std::fs::read(o.m.disk_copy().join("g")).unwrap(),
        b"into root's file?\n"
    );
}

/// Finding F5 (flush): something the owner makes on the disk copy where the store has a new
/// object not yet on disk (a directory where a file goes, or a file where a directory goes)
/// made every later flush of the whole target fail its check. It is moved aside into the
/// side directory (with its content, named in a warning) and the flush of everything goes
/// on; planted again, it is moved aside again.
fn planted_in_the_way(extra: &[&str], new_dir: bool) {
    let o = Owned::mount(extra);
    let want = |name: &str| {
        if new_dir {
            format!("report.txt/{name}")
        } else {
            name.to_string()
        }
    };
    if new_dir {
        std::fs::create_dir(o.m.path("report.txt")).unwrap();
    }
    std::fs::write(o.m.path(&want("r")), b"victim-report\n").unwrap();
    std::fs::write(o.m.path("other.txt"), b"other\n").unwrap();
    let plant = || {
        let fd = o.under.as_raw_fd();
        as_attacker(move || {
            // SAFETY: NUL-terminated names; `fd` is inherited from the parent.
            let r = unsafe {
                let f = if new_dir {
                    libc::openat(
                        fd,
                        c"report.txt".as_ptr(),
                        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                        0o644,
                    )
                } else {
                    let d = if libc::mkdirat(fd, c"r".as_ptr(), 0o755) == 0 {
                        libc::openat(fd, c"r".as_ptr(), libc::O_DIRECTORY)
                    } else {
                        -1
                    };
                    if d < 0 {
                        -1
                    } else {
                        libc::openat(
                            d,
                            c"blocker".as_ptr(),
                            libc::O_CREAT | libc::O_WRONLY,
                            0o644,
                        )
                    }
                };
                f >= 0 && libc::write(f, b"x".as_ptr().cast(), 1) == 1
            };
            r.then_some(())
                .ok_or_else(|| std::io::Error::last_os_error().to_string())
        })
        .unwrap();
    };
    let planted = if new_dir { "report.txt" } else { "r" };
    let disk = o.m.disk_copy();
    for round in 0..2 {
        plant();
        o.m.flush();
        assert_eq!(
            std::fs::read(disk.join(want("r"))).unwrap(),
            b"victim-report\n"
        );
        assert_eq!(std::fs::read(disk.join("other.txt")).unwrap(), b"other\n");
        let log = o.m.log_tail();
        let kept = o.m.side().join(format!("salvaged.behind.{round}"));
        let content = if new_dir {
            kept.clone()
        } else {
            kept.join("blocker")
        };
        assert_eq!(
            std::fs::read(&content).ok().as_deref(),
            Some(&b"x"[..]),
            "round {round}: the planted object was not kept aside; log:\n{log}"
        );
        assert!(
            log.contains(&format!("salvaged.behind.{round}"))
                && log.contains(&format!("target:/{planted}")),
            "round {round}: the move aside was not reported; daemon log:\n{log}"
        );
        // A second round: the store's object is on disk now; plant at a new name.
        if round == 0 {
            let _ = std::fs::remove_dir_all(o.m.path(&want("r")));
            let _ = std::fs::remove_file(o.m.path(&want("r")));
            if new_dir {
                std::fs::remove_dir_all(o.m.path("report.txt")).unwrap();
                o.m.flush();
                std::fs::create_dir(o.m.path("report.txt")).unwrap();
            } else {
                o.m.flush();
            }
            std::fs::write(o.m.path(&want("r")), b"victim-report\n").unwrap();
        }
    }
}

#[test]
fn a_directory_planted_where_a_new_file_goes_never_blocks_the_flush() {
    if crate::harness::fuse_available() {
        planted_in_the_way(&[], false);
    }
}

#[test]
fn a_file_planted_where_a_new_directory_goes_never_blocks_the_flush() {
    if crate::harness::fuse_available() {
        planted_in_the_way(&[], true);
    }
}
