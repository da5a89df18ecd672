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
    m.extra.extend(["--mode", "overlay"].map(String::from));
    m.mount();
    assert_eq!(m.status()["mode"], "overlay", "overlay mode fell back");
    Some(m)
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid buffer and NUL-terminated strings.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: as above.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
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

/// Copies a directory tree as mv does when rename(2) says EXDEV.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir(to).unwrap();
    for e in fs::read_dir(from).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn every_kind_of_change_reaches_the_disk_copy() {
    let Some(m) = overlay_mount(|t| {
        for f in ["gone.txt", "keep.txt", "attrs.txt"] {
            fs::write(t.join(f), f.as_bytes()).unwrap();
        }
        for d in ["gone_dir/sub", "opaque/old_sub", "moving/inner"] {
            fs::create_dir_all(t.join(d)).unwrap();
        }
        fs::write(t.join("gone_dir/sub/x"), b"x").unwrap();
        fs::write(t.join("opaque/old1"), b"old").unwrap();
        fs::write(t.join("moving/inner/f"), b"moved content").unwrap();
    }) else {
        return;
    };
    let t = &m.target;
    // Whiteouts: a file and a whole directory from disk go.
    fs::remove_file(t.join("gone.txt")).unwrap();
    fs::remove_dir_all(t.join("gone_dir")).unwrap();
    // An opaque directory: removed and made again, none of the disk's entries may return.
    fs::remove_dir_all(t.join("opaque")).unwrap();
    fs::create_dir(t.join("opaque")).unwrap();
    fs::write(t.join("opaque/new"), b"new").unwrap();
    // A directory from disk cannot be renamed in an overlay; mv copies it instead.
    let e = fs::rename(t.join("moving"), t.join("moved")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EXDEV));
    copy_tree(&t.join("moving"), &t.join("moved"));
    fs::remove_dir_all(t.join("moving")).unwrap();
    // A directory made in RAM can be renamed.
    fs::create_dir_all(t.join("fresh/deeper")).unwrap();
    fs::write(t.join("fresh/deeper/f"), b"fresh").unwrap();
    fs::rename(t.join("fresh"), t.join("renamed")).unwrap();
    // Hard links: made in RAM, and to a file from disk.
    fs::write(t.join("h1"), b"linked").unwrap();
    fs::hard_link(t.join("h1"), t.join("h2")).unwrap();
    fs::hard_link(t.join("keep.txt"), t.join("keep2")).unwrap();
    // Attributes and xattrs of a file from disk; a symlink; a fifo.
    set_xattr(&t.join("attrs.txt"), "user.color", b"blue");
    fs::set_permissions(
        t.join("attrs.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    nix::unistd::chown(&t.join("attrs.txt"), Some(1234.into()), Some(4321.into())).unwrap();
    let when = nix::sys::time::TimeSpec::new(1_500_000_000, 123_456_789);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &t.join("attrs.txt"),
        &when,
        &when,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    std::os::unix::fs::symlink("renamed/deeper/f", t.join("sym")).unwrap();
    nix::unistd::mkfifo(
        &t.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();

    let seen = names(t);
    m.flush();
    let check = |disk: &Path, when: &str| {
        assert_eq!(names(disk), seen, "{when}: the disk copy's names");
        assert_eq!(fs::read(disk.join("opaque/new")).unwrap(), b"new");
        assert_eq!(
            fs::read(disk.join("moved/inner/f")).unwrap(),
            b"moved content"
        );
        assert_eq!(fs::read(disk.join("renamed/deeper/f")).unwrap(), b"fresh");
        let (h1, h2) = (
            fs::metadata(disk.join("h1")).unwrap(),
            fs::metadata(disk.join("h2")).unwrap(),
        );
        assert_eq!(
            (h1.ino(), h1.nlink()),
            (h2.ino(), 2),
            "{when}: h1 and h2 are one file"
        );
        let (k1, k2) = (
            fs::metadata(disk.join("keep.txt")).unwrap(),
            fs::metadata(disk.join("keep2")).unwrap(),
        );
        assert_eq!(
            k1.ino(),
            k2.ino(),
            "{when}: keep.txt and keep2 are one file"
        );
        let a = fs::metadata(disk.join("attrs.txt")).unwrap();
        assert_eq!(
            (
                a.mode() & 0o7777,
                a.uid(),
                a.gid(),
                a.mtime(),
                a.mtime_nsec()
            ),
            (0o640, 1234, 4321, 1_500_000_000, 123_456_789),
            "{when}: attributes"
        );
        assert_eq!(
            xattr(&disk.join("attrs.txt"), "user.color").as_deref(),
            Some(&b"blue"[..])
        );
        assert_eq!(
            fs::read_link(disk.join("sym")).unwrap(),
            Path::new("renamed/deeper/f")
        );
        assert!(
            fs::symlink_metadata(disk.join("fifo"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        for d in ["", "opaque", "renamed"] {
            assert!(
                xattr(&disk.join(d), "trusted.overlay.opaque").is_none(),
                "{when}: overlay's own xattrs stay in the upper layer"
            );
        }
    };
    use std::os::unix::fs::FileTypeExt;
    check(&m.disk_copy(), "after the flush");
    assert_eq!(names(t), seen, "the mount after the flush");
    m.unmount();
    check(t, "after unmount");
}

#[test]
fn ram_comes_back_after_a_flush_when_nothing_is_open() {
    let Some(m) = overlay_mount(|t| fs::create_dir(t.join("d")).unwrap()) else {
        return;
    };
    let chunk = vec![0x5au8; 1 << 20];
    for i in 0..16 {
        fs::write(m.path(&format!("d/f{i}")), &chunk).unwrap();
    }
    let before = m.status()["ram_bytes"].as_u64().unwrap();
    assert!(before >= 16 << 20, "16 MiB written, {before} bytes in RAM");
    m.flush();
    let after = m.status()["ram_bytes"].as_u64().unwrap();
    eprintln!("overlay RAM: {before} bytes before the flush, {after} after");
    assert!(
        after < 64 << 10,
        "{after} bytes still in RAM after the flush"
    );
    for i in 0..16 {
        assert_eq!(fs::read(m.path(&format!("d/f{i}"))).unwrap(), chunk);
    }
    // A program in a directory of the overlay keeps the upper layer (it could still look
    // names up in it); the flush still writes everything.
    fs::write(m.path("d/more"), &chunk).unwrap();
    let dir = fs::File::open(m.path("d")).unwrap();
    m.flush();
    assert!(
        m.status()["ram_bytes"].as_u64().unwrap() >= 1 << 20,
        "kept while a directory is held"
    );
    assert_eq!(fs::read(m.disk_copy().join("d/more")).unwrap(), chunk);
    drop(dir);
    m.flush();
    assert!(
        m.status()["ram_bytes"].as_u64().unwrap() < 64 << 10,
        "freed once the directory is let go"
    );
}

#[test]
fn a_file_held_open_across_flushes_stays_one_file() {
    let Some(m) = overlay_mount(|t| fs::write(t.join("log"), b"from disk\n").unwrap()) else {
        return;
    };
    let mut held = fs::OpenOptions::new()
        .append(true)
        .open(m.path("log"))
        .unwrap();
    held.write_all(b"one\n").unwrap();
    fs::write(m.path("other"), vec![1u8; 1 << 20]).unwrap();
    m.flush();
    assert!(
        m.status()["ram_bytes"].as_u64().unwrap() < 512 << 10,
        "the other file's RAM came back"
    );
    // Written through the old descriptor, read through a new open: the same file.
    held.write_all(b"two\n").unwrap();
    assert_eq!(
        fs::read_to_string(m.path("log")).unwrap(),
        "from disk\none\ntwo\n"
    );
    // logrotate: renamed while held; what the holder writes next is in the renamed file.
    fs::rename(m.path("log"), m.path("log.1")).unwrap();
    held.write_all(b"three\n").unwrap();
    m.flush();
    held.write_all(b"four\n").unwrap();
    let mut r = fs::File::open(m.path("log.1")).unwrap();
    let mut s = String::new();
    r.read_to_string(&mut s).unwrap();
    assert_eq!(s, "from disk\none\ntwo\nthree\nfour\n");
    r.rewind().unwrap();
    drop((held, r));
    m.flush();
    let disk = m.disk_copy();
    assert_eq!(fs::read_to_string(disk.join("log.1")).unwrap(), s);
    assert!(!disk.join("log").exists());
    m.unmount();
    assert_eq!(fs::read_to_string(m.path("log.1")).unwrap(), s);
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

#[test]
fn unmount_with_a_file_open_writes_it_when_closed() {
    let Some(m) = overlay_mount(|_| {}) else {
        return;
    };
    let pid = m.daemon_pid().unwrap();
    let mut f = fs::File::create(m.path("open")).unwrap();
    f.write_all(b"before unmount\n").unwrap();
    let out = asdfs(["unmount", m.target.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("still served"));
    assert!(!m.is_mounted());
    f.write_all(b"after unmount\n").unwrap();
    drop(f);
    wait_gone(pid);
    assert_eq!(
        fs::read_to_string(m.path("open")).unwrap(),
        "before unmount\nafter unmount\n"
    );
}

#[test]
fn a_killed_daemon_leaves_the_overlay_working_and_the_next_mount_takes_it_over() {
    let Some(m) = overlay_mount(|t| fs::write(t.join("a"), b"disk").unwrap()) else {
        return;
    };
    fs::write(m.path("a"), b"before the kill").unwrap();
    m.flush();
    fs::write(m.path("b"), b"unflushed").unwrap();
    m.kill_daemon();
    // The kernel keeps serving the overlay without its daemon.
    fs::write(m.path("c"), b"written while no daemon ran").unwrap();
    m.mount();
    assert_eq!(m.status()["mode"], "overlay");
    let disk = m.disk_copy();
    assert_eq!(
        fs::read(disk.join("b")).unwrap(),
        b"unflushed",
        "the takeover flushed"
    );
    assert_eq!(
        fs::read(disk.join("c")).unwrap(),
        b"written while no daemon ran"
    );
    m.unmount();
    assert_eq!(fs::read(m.path("a")).unwrap(), b"before the kill");
}

#[test]
fn an_unmount_by_someone_else_writes_everything() {
    let Some(m) = overlay_mount(|_| {}) else {
        return;
    };
    let pid = m.daemon_pid().unwrap();
    fs::write(m.path("x"), b"by someone else").unwrap();
    let st = std::process::Command::new("umount")
        .arg(&m.target)
        .status()
        .unwrap();
    assert!(st.success());
    wait_gone(pid);
    assert_eq!(fs::read(m.path("x")).unwrap(), b"by someone else");
}

#[test]
fn names_removed_while_flushes_run_never_come_back() {
    let Some(m) = overlay_mount(|t| fs::create_dir(t.join("old")).unwrap()) else {
        return;
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let root = m.target.clone();
    let s = stop.clone();
    let churn = std::thread::spawn(move || {
        let mut n = 0u64;
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            for dir in ["old", "new"] {
                let d = root.join(dir);
                let _ = fs::create_dir(&d);
                let p = d.join(format!("f{}", n % 7));
                if n % 3 == 0 {
                    let _ = fs::remove_file(&p);
                } else {
                    let _ = fs::write(&p, n.to_le_bytes());
                }
            }
            if n % 50 == 25 {
                let _ = fs::remove_dir_all(root.join("new"));
            }
            n += 1;
        }
    });
    for _ in 0..40 {
        m.flush();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.join().unwrap();
    let seen = names(&m.target);
    let contents: Vec<Vec<u8>> = seen
        .iter()
        .filter(|n| !n.ends_with('/'))
        .map(|n| fs::read(m.path(n)).unwrap())
        .collect();
    m.flush();
    assert_eq!(
        names(&m.target),
        seen,
        "a flush changed what the mount shows"
    );
    assert_eq!(
        names(&m.disk_copy()),
        seen,
        "the disk copy after the last flush"
    );
    m.unmount();
    assert_eq!(names(&m.target), seen);
    let after: Vec<Vec<u8>> = seen
        .iter()
        .filter(|n| !n.ends_with('/'))
        .map(|n| fs::read(m.path(n)).unwrap())
        .collect();
    assert_eq!(after, contents);
}
