//! Hard links, symlinks and special files: link, symlink, readlink, mknod.

use super::*;

#[test]
fn hard_links_share_data_and_count_right() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.setup("make", |d| -> R<()> {
        write(&j(d, "a"), b"one")?;
        mkdir(&j(d, "sub"), 0o755)
    });
    p.both("link", |d| -> R<_> {
        link(&j(d, "a"), &j(d, "b"))?;
        Ok((
            st(&j(d, "a"))?,
            st(&j(d, "b"))?,
            ino(&j(d, "a"))? == ino(&j(d, "b"))?,
        ))
    });
    p.both("link into another directory", |d| -> R<_> {
        link(&j(d, "a"), &j(d, "sub/c"))?;
        Ok((st(&j(d, "a"))?, st(&j(d, "sub/c"))?))
    });
    p.both(
        "a write through one name shows through the others",
        |d| -> R<_> {
            let file = open(&j(d, "b"), libc::O_WRONLY | libc::O_APPEND, 0)?;
            (&file).write_all(b" two").code()?;
            Ok((read(&j(d, "a"))?, read(&j(d, "sub/c"))?, st(&j(d, "a"))?))
        },
    );
    p.both(
        "an open descriptor sees writes through another name",
        |d| -> R<_> {
            let r = open(&j(d, "a"), libc::O_RDONLY, 0)?;
            let w = open(&j(d, "sub/c"), libc::O_WRONLY, 0)?;
            pwrite(&w, b"ONE", 0)?;
            read_fd(&r)
        },
    );
    p.both("chmod through one name", |d| -> R<_> {
        chmod(&j(d, "sub/c"), 0o600)?;
        st(&j(d, "a"))
    });
    p.both("truncate through one name", |d| -> R<_> {
        truncate(&j(d, "a"), 2)?;
        Ok((read(&j(d, "b"))?, st(&j(d, "sub/c"))?))
    });
    p.both("link to a directory", |d| link(&j(d, "sub"), &j(d, "sub2")));
    p.both("link onto an existing name", |d| {
        link(&j(d, "a"), &j(d, "b"))
    });
    p.both("link a missing name", |d| {
        link(&j(d, "missing"), &j(d, "m2"))
    });
    p.both("link a symlink itself", |d| -> R<_> {
        symlink("a", &j(d, "s"))?;
        link(&j(d, "s"), &j(d, "s2"))?;
        Ok((st(&j(d, "s2"))?, readlink(&j(d, "s2"))?))
    });
    p.both("link a fifo", |d| -> R<_> {
        mknod(&j(d, "p"), libc::S_IFIFO | 0o600, 0)?;
        link(&j(d, "p"), &j(d, "p2"))?;
        st(&j(d, "p2"))
    });
    p.both("unlink the names one by one", |d| -> R<_> {
        unlink(&j(d, "a"))?;
        let two = st(&j(d, "b"))?;
        unlink(&j(d, "b"))?;
        Ok((two, st(&j(d, "sub/c"))?, read(&j(d, "sub/c"))?))
    });
    p.both("link an open file whose last name is gone", |d| -> R<_> {
        let file = open(&j(d, "sub/c"), libc::O_RDONLY, 0)?;
        unlink(&j(d, "sub/c"))?;
        let (e, n) = (CString::new("").unwrap(), cpath(&j(d, "again")));
        // SAFETY: valid C strings and an open descriptor.
        let r = ok(unsafe {
            libc::linkat(
                file.as_raw_fd(),
                e.as_ptr(),
                libc::AT_FDCWD,
                n.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        });
        Ok((r, fst(&file)?))
    });
    p.setup("make", |d| write(&j(d, "x"), b"x"));
    assert!(p.changes(
        "ctime after link",
        |d| ctime(&j(d, "x")),
        |d| link(&j(d, "x"), &j(d, "x2"))
    ));
    assert!(p.changes(
        "directory mtime after link",
        |d| mtime(&j(d, "sub")),
        |d| link(&j(d, "x"), &j(d, "sub/x3"))
    ));
    p.finish();
}

#[test]
fn hard_links_from_disk_keep_every_name() {
    if !fuse_available() {
        return;
    }
    let m = Mount::with(|t| {
        fs::write(t.join("a"), b"one").unwrap();
        fs::create_dir(t.join("x")).unwrap();
        fs::hard_link(t.join("a"), t.join("x/b")).unwrap();
        fs::write(t.join("c"), b"three names").unwrap();
        fs::create_dir(t.join("y")).unwrap();
        fs::hard_link(t.join("c"), t.join("y/d")).unwrap();
        fs::hard_link(t.join("c"), t.join("y/e")).unwrap();
    });
    let p = |n: &str| m.path(n);
    let mut diffs = Vec::new();
    let mut check = |what: &str, got: String, want: String| {
        if got != want {
            diffs.push(format!("{what}: {got} (want {want})"));
        }
    };
    check(
        "link counts before the other names are met",
        format!(
            "{:?}",
            (st(&p("a")).map(|s| s.nlink), st(&p("c")).map(|s| s.nlink))
        ),
        "(Ok(2), Ok(3))".into(),
    );
    let a = open(&p("a"), libc::O_WRONLY | libc::O_APPEND, 0).unwrap();
    (&a).write_all(b"+").unwrap();
    drop(a);
    check(
        "a write through one name, read through the other",
        format!(
            "{:?}",
            read(&p("x/b")).map(|v| String::from_utf8_lossy(&v).into_owned())
        ),
        "Ok(\"one+\")".into(),
    );
    check(
        "one inode number",
        format!("{}", ino(&p("a")) == ino(&p("x/b"))),
        "true".into(),
    );
    // The other names are not met before the flush.
    unlink(&p("c")).unwrap();
    m.flush();
    check(
        "the other names after unlinking one and a flush",
        format!(
            "{:?}",
            (
                list(&p("y")).map(|l| l.len()),
                st(&p("y/d")).map(|s| s.nlink)
            )
        ),
        "(Ok(4), Ok(2))".into(),
    );
    m.unmount();
    check(
        "on disk after unmount",
        format!(
            "{:?}",
            (
                read(&p("x/b")),
                ino(&p("a")) == ino(&p("x/b")),
                st(&p("y/d")).map(|s| s.nlink),
                ino(&p("y/d")) == ino(&p("y/e")),
                st(&p("c")),
            )
        ),
        format!(
            "{:?}",
            (
                Ok::<_, i32>(b"one+".to_vec()),
                true,
                Ok::<_, i32>(2),
                true,
                Err::<St, _>(libc::ENOENT)
            )
        ),
    );
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn symlinks_and_readlink() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.setup("make and read a symlink", |d| -> R<_> {
        symlink("target/path", &j(d, "l"))?;
        Ok((readlink(&j(d, "l"))?, st(&j(d, "l"))?))
    });
    p.both("a dangling symlink", |d| stat_follow(&j(d, "l")));
    p.both("followed once its target exists", |d| -> R<_> {
        write(&j(d, "t"), b"T")?;
        symlink("t", &j(d, "l2"))?;
        Ok((stat_follow(&j(d, "l2"))?, read(&j(d, "l2"))?))
    });
    p.both("through a symlink to a directory", |d| -> R<_> {
        mkdir(&j(d, "dir"), 0o755)?;
        write(&j(d, "dir/f"), b"F")?;
        symlink("dir", &j(d, "dl"))?;
        Ok((read(&j(d, "dl/f"))?, list(&j(d, "dl/"))?))
    });
    p.both("an absolute target", |d| -> R<_> {
        symlink("/absolute/target", &j(d, "abs"))?;
        readlink(&j(d, "abs"))
    });
    p.both("a target of 4095 bytes", |d| -> R<_> {
        symlink("x".repeat(4095), &j(d, "long"))?;
        Ok((
            readlink(&j(d, "long"))? == "x".repeat(4095).into_bytes(),
            st(&j(d, "long"))?,
        ))
    });
    p.both("a target of 4096 bytes", |d| {
        symlink("y".repeat(4096), &j(d, "toolong"))
    });
    p.both("odd bytes in the target", |d| -> R<_> {
        symlink(OsStr::from_bytes(b"\xff\x01odd"), &j(d, "odd"))?;
        readlink(&j(d, "odd"))
    });
    p.both("an empty target", |d| symlink("", &j(d, "empty")));
    p.both("over an existing name", |d| symlink("t", &j(d, "t")));
    p.both("readlink of a file", |d| readlink(&j(d, "t")));
    p.both("readlink of a missing name", |d| readlink(&j(d, "missing")));
    p.both("a loop", |d| -> R<_> {
        symlink("loop2", &j(d, "loop1"))?;
        symlink("loop1", &j(d, "loop2"))?;
        read(&j(d, "loop1"))
    });
    p.both("O_NOFOLLOW on a symlink", |d| {
        open(&j(d, "l2"), libc::O_RDONLY | libc::O_NOFOLLOW, 0).map(drop)
    });
    p.both("a symlink made by another user", |d| -> R<_> {
        mkdir(&j(d, "pub"), 0o755)?;
        chmod(&j(d, "pub"), 0o777)?;
        as_user(NOBODY, || symlink("x", &j(d, "pub/ns")))?;
        st(&j(d, "pub/ns"))
    });
    p.both("the listing", list);
    p.finish();
}

#[test]
fn mknod_fifos_sockets_and_devices() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.both("a fifo", |d| -> R<_> {
        mknod(&j(d, "p"), libc::S_IFIFO | 0o640, 0)?;
        st(&j(d, "p"))
    });
    p.both("a socket by mknod", |d| -> R<_> {
        mknod(&j(d, "s"), libc::S_IFSOCK | 0o600, 0)?;
        st(&j(d, "s"))
    });
    p.both("a socket by bind, and a connection to it", |d| -> R<_> {
        let l = std::os::unix::net::UnixListener::bind(j(d, "bound")).code()?;
        let c = std::os::unix::net::UnixStream::connect(j(d, "bound")).code()?;
        let (mut s, _) = l.accept().code()?;
        (&c).write_all(b"hi").code()?;
        let mut b = [0u8; 2];
        s.read_exact(&mut b).code()?;
        Ok((st(&j(d, "bound"))?, b))
    });
    p.both("a character device", |d| -> R<_> {
        mknod(&j(d, "c"), libc::S_IFCHR | 0o620, libc::makedev(1, 3))?;
        st(&j(d, "c"))
    });
    p.both("a block device with a large minor", |d| -> R<_> {
        mknod(
            &j(d, "b"),
            libc::S_IFBLK | 0o600,
            libc::makedev(259, 70_000),
        )?;
        st(&j(d, "b"))
    });
    p.both("a regular file by mknod", |d| -> R<_> {
        mknod(&j(d, "f"), libc::S_IFREG | 0o644, 0)?;
        Ok((st(&j(d, "f"))?, read(&j(d, "f"))?))
    });
    p.both("mknod with no type makes a regular file", |d| -> R<_> {
        mknod(&j(d, "f0"), 0o600, 0)?;
        st(&j(d, "f0"))
    });
    p.both("mknod of a directory type", |d| {
        mknod(&j(d, "x"), libc::S_IFDIR | 0o755, 0)
    });
    p.both("mknod over an existing name", |d| {
        mknod(&j(d, "p"), libc::S_IFIFO | 0o600, 0)
    });
    p.both("data through the fifo", |d| -> R<_> {
        let f = open(&j(d, "p"), libc::O_RDWR | libc::O_NONBLOCK, 0)?;
        (&f).write_all(b"through").code()?;
        let mut b = [0u8; 7];
        (&f).read_exact(&mut b).code()?;
        Ok(b)
    });
    p.setup("make a public directory", |d| -> R<()> {
        mkdir(&j(d, "pub"), 0o755)?;
        chmod(&j(d, "pub"), 0o777)
    });
    p.both("a device as another user", |d| {
        as_user(NOBODY, || {
            mknod(&j(d, "pub/dev"), libc::S_IFCHR | 0o600, libc::makedev(1, 3))
        })
    });
    p.both("a fifo as another user", |d| -> R<_> {
        as_user(NOBODY, || {
            mknod(&j(d, "pub/fifo"), libc::S_IFIFO | 0o666, 0)
        })?;
        st(&j(d, "pub/fifo"))
    });
    p.both("the listing with types", list);
    p.finish();
}
