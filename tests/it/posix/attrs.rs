//! lookup, getattr, setattr; statfs.

use super::*;

#[test]
fn lookup_finds_names_and_reports_errors() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let long = "l".repeat(255);
    let too_long = "t".repeat(256);
    let odd = OsStr::from_bytes(b"odd \xff\x01\n name");
    p.setup("make a file and a directory", |d| -> R<()> {
        write(&j(d, "f"), b"1")?;
        mkdir(&j(d, "dir"), 0o755)?;
        write(&j(d, "dir/inner"), b"2")
    });
    p.both("stat a missing name", |d| st(&j(d, "missing")));
    p.both("stat beneath a file", |d| st(&j(d, "f/x")));
    p.both("open beneath a file", |d| {
        open(&j(d, "f/x"), libc::O_RDONLY, 0).map(drop)
    });
    p.both("a file with a trailing slash", |d| st(&j(d, "f/")));
    p.both("names are case sensitive", |d| st(&j(d, "F")));
    p.both("a name of 255 bytes", |d| -> R<_> {
        write(&d.join(&long), b"long")?;
        Ok((read(&d.join(&long))?, st(&d.join(&long))?))
    });
    p.both("a name of 256 bytes: create", |d| {
        write(&d.join(&too_long), b"")
    });
    p.both("a name of 256 bytes: stat", |d| st(&d.join(&too_long)));
    p.both("odd bytes in a name", |d| -> R<_> {
        write(&d.join(odd), b"odd")?;
        read(&d.join(odd))
    });
    p.both("dot and dot-dot", |d| -> R<_> {
        Ok((
            ino(&j(d, "dir/."))? == ino(&j(d, "dir"))?,
            ino(&j(d, "dir/.."))? == ino(d)?,
            ino(&j(d, "dir/../dir/inner"))? == ino(&j(d, "dir/inner"))?,
        ))
    });
    p.both("a missing name, then created", |d| -> R<_> {
        let before = st(&j(d, "later"));
        write(&j(d, "later"), b"x")?;
        Ok((before, st(&j(d, "later"))?))
    });
    p.both("a name removed, then looked up", |d| -> R<_> {
        unlink(&j(d, "later"))?;
        Ok(st(&j(d, "later")))
    });
    p.both("a file replaced by a directory", |d| -> R<_> {
        write(&j(d, "swap"), b"file")?;
        let before = st(&j(d, "swap"))?;
        unlink(&j(d, "swap"))?;
        mkdir(&j(d, "swap"), 0o700)?;
        Ok((before, st(&j(d, "swap"))?))
    });
    p.both("the listing", list);
    p.finish();
}

#[test]
fn getattr_of_every_kind_of_node() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.setup("make one node of each kind", |d| -> R<()> {
        write(&j(d, "file"), b"hello")?;
        mkdir(&j(d, "dir"), 0o750)?;
        symlink("file", &j(d, "link"))?;
        mknod(&j(d, "fifo"), libc::S_IFIFO | 0o640, 0)?;
        mknod(&j(d, "sock"), libc::S_IFSOCK | 0o600, 0)?;
        mknod(&j(d, "chr"), libc::S_IFCHR | 0o620, libc::makedev(1, 3))?;
        mknod(&j(d, "blk"), libc::S_IFBLK | 0o600, libc::makedev(7, 0))
    });
    for name in ["file", "dir", "link", "fifo", "sock", "chr", "blk"] {
        p.both(&format!("lstat {name}"), |d| st(&j(d, name)));
    }
    p.both("stat through the symlink", |d| stat_follow(&j(d, "link")));
    p.both("the parent's link count", |d| st(d).map(|s| s.nlink));
    p.both("fstat equals lstat", |d| -> R<_> {
        let f = open(&j(d, "file"), libc::O_RDONLY, 0)?;
        Ok(fst(&f)? == st(&j(d, "file"))?)
    });
    p.both("blocks of a small file", |d| blocks(&j(d, "file")));
    p.both(
        "times of a new file: atime <= mtime == ctime",
        |d| -> R<_> {
            let m = meta(&j(d, "file"))?;
            let (a, mt, c) = (
                (m.atime(), m.atime_nsec()),
                (m.mtime(), m.mtime_nsec()),
                (m.ctime(), m.ctime_nsec()),
            );
            Ok((a <= mt, mt == c))
        },
    );
    p.both("times of a new directory are all equal", |d| -> R<_> {
        let m = meta(&j(d, "dir"))?;
        Ok((m.atime(), m.atime_nsec()) == (m.mtime(), m.mtime_nsec())
            && (m.mtime(), m.mtime_nsec()) == (m.ctime(), m.ctime_nsec()))
    });
    p.both("an empty file has no blocks", |d| -> R<_> {
        write(&j(d, "empty"), b"")?;
        blocks(&j(d, "empty"))
    });
    p.finish();
}

#[test]
fn chmod_and_chown() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.setup("make", |d| -> R<()> {
        write(&j(d, "f"), b"data")?;
        mkdir(&j(d, "dir"), 0o755)?;
        symlink("f", &j(d, "l"))
    });
    for mode in [0o4751, 0o2755, 0o1777, 0o0, 0o7777, 0o644] {
        p.both(&format!("chmod {mode:o}"), |d| -> R<_> {
            chmod(&j(d, "f"), mode)?;
            st(&j(d, "f"))
        });
    }
    p.both("chmod a directory to 3775", |d| -> R<_> {
        chmod(&j(d, "dir"), 0o3775)?;
        st(&j(d, "dir"))
    });
    p.both("chmod through a symlink changes its target", |d| -> R<_> {
        chmod(&j(d, "l"), 0o600)?;
        Ok((st(&j(d, "l"))?, st(&j(d, "f"))?))
    });
    p.both("chmod of a symlink itself", |d| lchmod(&j(d, "l"), 0o600));
    p.both("chmod of a missing name", |d| {
        chmod(&j(d, "missing"), 0o600)
    });
    p.both("chown", |d| -> R<_> {
        chown(&j(d, "f"), 1000, STAFF)?;
        st(&j(d, "f"))
    });
    p.both("chown of the group only", |d| -> R<_> {
        chown(&j(d, "f"), u32::MAX, 4321)?;
        st(&j(d, "f"))
    });
    p.both("chown of the owner only", |d| -> R<_> {
        chown(&j(d, "f"), 1001, u32::MAX)?;
        st(&j(d, "f"))
    });
    p.both("lchown of a symlink leaves its target", |d| -> R<_> {
        lchown(&j(d, "l"), 1002, 1003)?;
        Ok((st(&j(d, "l"))?, st(&j(d, "f"))?))
    });
    p.both("chown clears setuid and setgid", |d| -> R<_> {
        chmod(&j(d, "f"), 0o6755)?;
        chown(&j(d, "f"), 1004, 1004)?;
        st(&j(d, "f"))
    });
    p.both("chown keeps setgid without group execute", |d| -> R<_> {
        chmod(&j(d, "f"), 0o2745)?;
        chown(&j(d, "f"), 1005, 1005)?;
        st(&j(d, "f"))
    });
    p.both("chown of a directory keeps setgid", |d| -> R<_> {
        chmod(&j(d, "dir"), 0o2755)?;
        chown(&j(d, "dir"), 1000, 1000)?;
        st(&j(d, "dir"))
    });
    assert!(p.changes(
        "ctime after chmod",
        |d| ctime(&j(d, "f")),
        |d| chmod(&j(d, "f"), 0o600)
    ));
    assert!(!p.changes(
        "mtime after chmod",
        |d| mtime(&j(d, "f")),
        |d| chmod(&j(d, "f"), 0o640)
    ));
    assert!(p.changes(
        "ctime after chown",
        |d| ctime(&j(d, "f")),
        |d| chown(&j(d, "f"), 0, 0)
    ));
    assert!(p.changes(
        "ctime after chmod of a directory",
        |d| ctime(&j(d, "dir")),
        |d| chmod(&j(d, "dir"), 0o700)
    ));
    p.finish();
}

#[test]
fn truncate_and_ftruncate() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let f = |d: &Path| d.join("f");
    p.setup("make", |d| -> R<()> {
        write(&f(d), b"0123456789")?;
        mkdir(&j(d, "dir"), 0o755)
    });
    p.both("truncate shorter", |d| -> R<_> {
        truncate(&f(d), 4)?;
        Ok((st(&f(d))?, read(&f(d))?))
    });
    p.both("truncate longer fills with zeros", |d| -> R<_> {
        truncate(&f(d), 10_000)?;
        Ok((st(&f(d))?, read(&f(d))?))
    });
    p.both("ftruncate", |d| -> R<_> {
        let file = open(&f(d), libc::O_RDWR, 0)?;
        ftruncate(&file, 3)?;
        pwrite(&file, b"!", 5)?;
        Ok((fst(&file)?, read(&f(d))?))
    });
    p.both("truncate to zero", |d| -> R<_> {
        truncate(&f(d), 0)?;
        Ok((st(&f(d))?, read(&f(d))?, blocks(&f(d))?))
    });
    p.both("truncate frees blocks", |d| -> R<_> {
        write(&f(d), &[7u8; 16384])?;
        truncate(&f(d), 4096)?;
        Ok((blocks(&f(d))?, read(&f(d))?.len()))
    });
    p.both("truncate a directory", |d| truncate(&j(d, "dir"), 0));
    p.both("truncate to a negative length", |d| truncate(&f(d), -1));
    p.both("ftruncate of a read-only descriptor", |d| -> R<_> {
        let file = open(&f(d), libc::O_RDONLY, 0)?;
        ftruncate(&file, 0)
    });
    p.both("truncate a missing name", |d| truncate(&j(d, "missing"), 0));
    p.both("truncate a 0444 file as root", |d| -> R<_> {
        write(&j(d, "ro"), b"read only")?;
        chmod(&j(d, "ro"), 0o444)?;
        truncate(&j(d, "ro"), 4)?;
        read(&j(d, "ro"))
    });
    assert!(p.changes(
        "mtime after truncate(2) to another size",
        |d| mtime(&f(d)),
        |d| truncate(&f(d), 5)
    ));
    assert!(p.changes(
        "ctime after truncate(2) to another size",
        |d| ctime(&f(d)),
        |d| truncate(&f(d), 6)
    ));
    p.both("truncate(2) to the same size", |d| -> R<_> {
        utimens(&f(d), Set::Omit, Set::At(T1))?;
        truncate(&f(d), 6)?;
        Ok(mtime(&f(d))? != T1)
    });
    p.both("ftruncate to the same size", |d| -> R<_> {
        utimens(&f(d), Set::Omit, Set::At(T1))?;
        let file = open(&f(d), libc::O_WRONLY, 0)?;
        ftruncate(&file, 6)?;
        Ok(mtime(&f(d))? != T1)
    });
    p.finish();
}

#[test]
fn utimens_with_now_omit_and_nanoseconds() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let f = |d: &Path| d.join("f");
    p.setup("make", |d| -> R<()> {
        write(&f(d), b"x")?;
        mkdir(&j(d, "dir"), 0o755)?;
        symlink("f", &j(d, "l"))
    });
    p.both("explicit times with nanoseconds", |d| -> R<_> {
        utimens(&f(d), Set::At(T1), Set::At(T2))?;
        times(&f(d))
    });
    p.both("UTIME_OMIT for atime", |d| -> R<_> {
        utimens(&f(d), Set::Omit, Set::At(T3))?;
        times(&f(d))
    });
    p.both("UTIME_OMIT for mtime", |d| -> R<_> {
        utimens(&f(d), Set::At(T4), Set::Omit)?;
        times(&f(d))
    });
    p.both("UTIME_OMIT for both", |d| -> R<_> {
        utimens(&f(d), Set::Omit, Set::Omit)?;
        times(&f(d))
    });
    p.both("UTIME_NOW for atime only", |d| -> R<_> {
        utimens(&f(d), Set::Now, Set::Omit)?;
        let (a, m) = times(&f(d))?;
        Ok((a > T4, m))
    });
    p.both("UTIME_NOW for mtime only", |d| -> R<_> {
        utimens(&f(d), Set::At(T1), Set::Now)?;
        let (a, m) = times(&f(d))?;
        Ok((a, m > T4))
    });
    p.both("UTIME_NOW for both gives one time", |d| -> R<_> {
        utimens(&f(d), Set::Now, Set::Now)?;
        let (a, m) = times(&f(d))?;
        Ok((a == m, a > T4))
    });
    p.both("utimensat with no times", |d| -> R<_> {
        utimens(&f(d), Set::At(T1), Set::At(T1))?;
        touch(&f(d))?;
        let (a, m) = times(&f(d))?;
        Ok((a == m, a > T4))
    });
    p.both("times of a directory", |d| -> R<_> {
        utimens(&j(d, "dir"), Set::At(T2), Set::At(T1))?;
        times(&j(d, "dir"))
    });
    p.both("times of a symlink itself", |d| -> R<_> {
        utimens(&f(d), Set::At(T4), Set::At(T4))?;
        utimens(&j(d, "l"), Set::At(T1), Set::At(T3))?;
        Ok((times(&j(d, "l"))?, times(&f(d))?))
    });
    p.both("times before 1970", |d| -> R<_> {
        utimens(
            &f(d),
            Set::At((-1, 5)),
            Set::At((-1_000_000_000, 999_999_999)),
        )?;
        times(&f(d))
    });
    p.both("times after 2038", |d| -> R<_> {
        utimens(
            &f(d),
            Set::At((4_102_444_800, 7)),
            Set::At((8_589_934_592, 123)),
        )?;
        times(&f(d))
    });
    p.both("nanoseconds out of range", |d| {
        utimens(&f(d), Set::At((0, 1_000_000_000)), Set::Omit)
    });
    assert!(p.changes(
        "ctime after utimensat",
        |d| ctime(&f(d)),
        |d| utimens(&f(d), Set::At(T2), Set::At(T2))
    ));
    assert!(!p.changes(
        "ctime after utimensat omitting both",
        |d| ctime(&f(d)),
        |d| utimens(&f(d), Set::Omit, Set::Omit)
    ));
    p.finish();
}

// ---------------------------------------------------------------------------------------
// statfs

#[test]
fn statfs_answers_sensibly() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let statvfs = |path: &Path| -> R<libc::statvfs> {
        let c = cpath(path);
        // SAFETY: statvfs is plain data; the kernel fills it.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid C string and output buffer.
        ok(unsafe { libc::statvfs(c.as_ptr(), &mut s) })?;
        Ok(s)
    };
    let s = statvfs(&p.m.target).expect("statvfs of the mount");
    assert!(s.f_bsize > 0, "f_bsize {}", s.f_bsize);
    assert!(s.f_frsize > 0, "f_frsize {}", s.f_frsize);
    assert!(s.f_blocks > 0, "f_blocks {}", s.f_blocks);
    assert!(s.f_bfree <= s.f_blocks, "f_bfree {} > f_blocks", s.f_bfree);
    assert!(s.f_bavail <= s.f_bfree, "f_bavail {} > f_bfree", s.f_bavail);
    assert!(s.f_ffree <= s.f_files, "f_ffree {} > f_files", s.f_ffree);
    assert_eq!(s.f_namemax, 255);
    p.both("the longest name", |d| statvfs(d).map(|s| s.f_namemax));
    p.both("statfs of a file and of a subdirectory", |d| -> R<_> {
        write(&j(d, "f"), b"x")?;
        mkdir(&j(d, "sub"), 0o755)?;
        Ok((
            statvfs(&j(d, "f"))?.f_namemax,
            statvfs(&j(d, "sub"))?.f_namemax,
        ))
    });
    p.both("fstatfs agrees with statfs", |d| -> R<_> {
        let f = open(&j(d, "f"), libc::O_RDONLY, 0)?;
        // SAFETY: statfs is plain data; the kernel fills it.
        let mut a: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: open descriptor and output buffer.
        ok(unsafe { libc::fstatfs(f.as_raw_fd(), &mut a) })?;
        let s = statvfs(d)?;
        Ok((
            a.f_bsize as u64 == s.f_bsize,
            a.f_namelen as u64 == s.f_namemax,
        ))
    });
    p.finish();
}
