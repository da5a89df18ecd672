//! Every kind of change in an upper layer reaches the disk copy as it should, also while
//! programs keep changing it.

use super::*;

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

/// A directory made again under a directory that was removed and made again: the kernel
/// makes the outer one opaque, but not the inner one (its parent has no lower layer). The
/// flush must still treat the inner one as replacing the disk's directory of that name.
#[test]
fn a_directory_made_again_inside_an_opaque_one_does_not_bring_back_old_files() {
    let Some(m) = overlay_mount(|t| {
        fs::create_dir_all(t.join("a/sub")).unwrap();
        fs::write(t.join("a/sub/old"), b"deleted by the user").unwrap();
    }) else {
        return;
    };
    fs::remove_dir_all(m.path("a")).unwrap();
    fs::create_dir_all(m.path("a/sub")).unwrap();
    fs::write(m.path("a/sub/new"), b"new").unwrap();
    let seen = names(&m.target);
    assert!(!seen.contains(&"a/sub/old".to_string()));
    m.flush();
    assert_eq!(
        names(&m.target),
        seen,
        "the mount after the flush: a deleted file came back"
    );
    assert_eq!(names(&m.disk_copy()), seen, "the disk copy after the flush");
}

/// design.md §10.6: "Links made in the overlay are kept". After a flush the two names are
/// one file on the disk copy, the layer that held them leaves the overlay, and the next
/// write through one name copies only that name up (index=off).
#[test]
fn a_hard_link_made_in_the_overlay_stays_one_file_after_a_flush() {
    let Some(m) = overlay_mount(|_| {}) else {
        return;
    };
    fs::write(m.path("h1"), b"one\n").unwrap();
    fs::hard_link(m.path("h1"), m.path("h2")).unwrap();
    m.flush();
    fs::OpenOptions::new()
        .append(true)
        .open(m.path("h1"))
        .unwrap()
        .write_all(b"two\n")
        .unwrap();
    assert_eq!(
        fs::read_to_string(m.path("h2")).unwrap(),
        "one\ntwo\n",
        "a write through one name of a hard link is not seen through the other"
    );
}

/// Issue 12: a hard link into a directory made in the same flush. The plan linked
/// `a/b/c/g` before `a/b/c` existed on disk, the committed journal failed at that step,
/// and from then on every flush, the unmount's final flush and every later mount failed.
#[test]
fn issue_12_a_link_into_a_new_directory_flushes_unmounts_and_mounts_again() {
    let Some(m) = overlay_mount(|t| fs::write(t.join("f0"), b"x\n").unwrap()) else {
        return;
    };
    fs::create_dir_all(m.path("a/b/c")).unwrap();
    fs::write(m.path("a/f"), b"y\n").unwrap();
    fs::hard_link(m.path("a/f"), m.path("a/b/c/g")).unwrap();
    m.flush();
    m.unmount();
    let disk = m.disk_copy();
    assert_eq!(fs::read(disk.join("a/b/c/g")).unwrap(), b"y\n");
    assert_eq!(
        fs::metadata(disk.join("a/f")).unwrap().ino(),
        fs::metadata(disk.join("a/b/c/g")).unwrap().ino(),
        "the two names are not one file on disk"
    );
    // A clean end removes the side directory unless something is left in it.
    if let Ok(side) = fs::read_dir(m.side()) {
        let names: Vec<String> = side
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["generation".to_string()], "left behind");
    }
    m.mount();
    assert_eq!(fs::read(m.path("a/b/c/g")).unwrap(), b"y\n");
    m.unmount();
}

/// A live flush (a directory is held) that replaces a file renames into its directory: the
/// directory's times on disk must be set again, as the FUSE flush does (design.md §6 step
/// 3), even when the directory itself did not change in the upper layer.
#[test]
fn a_directory_keeps_its_mtime_on_disk_after_a_live_flush() {
    let Some(m) = overlay_mount(|t| fs::create_dir(t.join("d")).unwrap()) else {
        return;
    };
    fs::write(m.path("d/f"), b"1").unwrap();
    let dir = fs::File::open(m.path("d")).unwrap();
    m.flush();
    std::thread::sleep(Duration::from_millis(1100));
    fs::write(m.path("d/f"), b"2").unwrap();
    m.flush();
    let view = fs::metadata(m.path("d")).unwrap();
    let disk = fs::metadata(m.disk_copy().join("d")).unwrap();
    drop(dir);
    assert_eq!(
        (disk.mtime(), disk.mtime_nsec()),
        (view.mtime(), view.mtime_nsec()),
        "the directory's mtime on disk"
    );
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

/// Issue 12 (item 8): a flush with nothing to write writes nothing, as in FUSE mode. Before,
/// the flush after a layer swap wrote two generations of directory attributes (the swap
/// changed the upper root's ctime).
#[test]
fn issue_12_a_flush_with_nothing_to_write_writes_nothing() {
    let Some(m) = overlay_mount(|t| fs::write(t.join("f0"), b"x\n").unwrap()) else {
        return;
    };
    fs::write(m.path("f"), b"changed\n").unwrap();
    let generation = |m: &Mount| {
        let out = asdfs(["flush", m.target.to_str().unwrap()]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let n = text.rsplit("generation ").next().unwrap_or("");
        n.trim()
            .trim_end_matches(')')
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("{text}"))
    };
    let first = generation(&m);
    for _ in 0..3 {
        assert_eq!(generation(&m), first, "an empty flush wrote a generation");
    }
}
