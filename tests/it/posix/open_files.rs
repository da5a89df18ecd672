//! mmap, unlinked open files, inode numbers.

use super::*;

/// Writes `data` at `off` through a shared mapping of the whole file, optionally msyncs,
/// and unmaps.
fn write_through_mapping(f: &File, off: usize, data: &[u8], sync: bool) -> R<()> {
    let len = f.metadata().code()?.len() as usize;
    assert!(off + data.len() <= len);
    // SAFETY: a shared mapping of an open file, written within its size, unmapped below.
    unsafe {
        let ptr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        if ptr == libc::MAP_FAILED {
            return Err(errno());
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), (ptr as *mut u8).add(off), data.len());
        let r = if sync {
            ok(libc::msync(ptr, len, libc::MS_SYNC))
        } else {
            Ok(())
        };
        libc::munmap(ptr, len);
        r
    }
}

#[test]
fn shared_mmap_writes_reach_the_file_and_the_disk() {
    if !fuse_available() {
        return;
    }
    let p = Pair::with(Mount::with(|t| {
        fs::write(t.join("disk"), [b'd'; 10_000]).unwrap()
    }));
    write(&p.r().join("disk"), &[b'd'; 10_000]).unwrap();
    p.setup("make", |d| write(&j(d, "f"), &[b'a'; 10_000]));
    p.both(
        "writes through a mapping of a file from disk",
        |d| -> R<_> {
            let f = open(&j(d, "disk"), libc::O_RDWR, 0)?;
            write_through_mapping(&f, 4000, b"DISK", false)?;
            Ok((read(&j(d, "disk"))?, fst(&f)?))
        },
    );
    p.both("writes through a mapping show in read(2)", |d| -> R<_> {
        let f = open(&j(d, "f"), libc::O_RDWR, 0)?;
        write_through_mapping(&f, 100, b"MAPPED", true)?;
        write_through_mapping(&f, 9000, b"END", true)?;
        Ok((read(&j(d, "f"))?, fst(&f)?))
    });
    p.both("without msync, after munmap and close", |d| -> R<_> {
        let f = open(&j(d, "f"), libc::O_RDWR, 0)?;
        write_through_mapping(&f, 5000, b"NOSYNC", false)?;
        drop(f);
        read(&j(d, "f"))
    });
    p.both("the mapping of a file grown by ftruncate", |d| -> R<_> {
        let f = open(&j(d, "g"), libc::O_CREAT | libc::O_RDWR, 0o644)?;
        ftruncate(&f, 8192)?;
        write_through_mapping(&f, 8000, b"grown", true)?;
        Ok((read(&j(d, "g"))?, fst(&f)?))
    });
    assert!(p.changes(
        "mtime after writes through a mapping",
        |d| mtime(&j(d, "f")),
        |d| write_through_mapping(&open(&j(d, "f"), libc::O_RDWR, 0)?, 0, b"M", false)
    ));
    let seen: Vec<_> = ["f", "g", "disk"]
        .iter()
        .map(|n| read(&p.m.path(n)).unwrap())
        .collect();
    p.m.unmount();
    for (n, seen) in ["f", "g", "disk"].iter().zip(seen) {
        if read(&p.m.path(n)).unwrap() != seen {
            p.note(format!(
                "{n} on disk after unmount differs from what the mount showed"
            ));
        }
    }
    p.finish();
}

#[test]
fn files_stay_usable_after_unlink_until_closed() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.both("write, unlink, keep using", |d| -> R<_> {
        let f = open(&j(d, "f"), libc::O_CREAT | libc::O_RDWR, 0o644)?;
        pwrite(&f, b"before", 0)?;
        unlink(&j(d, "f"))?;
        let gone = st(&j(d, "f"));
        pwrite(&f, b" after", 6)?;
        let mut buf = vec![0u8; 12];
        f.read_exact_at(&mut buf, 0).code()?;
        let unlinked = fst(&f)?;
        write(&j(d, "f"), b"a new file")?;
        pwrite(&f, b"!", 12)?;
        Ok((
            gone,
            buf,
            unlinked,
            read(&j(d, "f"))?,
            fst(&f)?,
            read_fd(&f)?,
        ))
    });
    p.both("ftruncate and fchmod of an unlinked file", |d| -> R<_> {
        let f = open(&j(d, "g"), libc::O_CREAT | libc::O_RDWR, 0o644)?;
        unlink(&j(d, "g"))?;
        ftruncate(&f, 100)?;
        // SAFETY: plain system call on an open descriptor.
        ok(unsafe { libc::fchmod(f.as_raw_fd(), 0o600) })?;
        Ok((fst(&f)?, read_fd(&f)?.len()))
    });
    p.both("an open directory after rmdir", |d| -> R<_> {
        mkdir(&j(d, "dd"), 0o755)?;
        let f = open_dir(&j(d, "dd"))?;
        rmdir(&j(d, "dd"))?;
        let x = cname("x");
        // SAFETY: valid C string and an open directory descriptor.
        let made = unsafe {
            libc::openat(
                f.as_raw_fd(),
                x.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY,
                0o644,
            )
        };
        let made = if made < 0 { Err(errno()) } else { Ok(()) };
        Ok((fst(&f)?, getdents(&f, 4096), made))
    });
    p.both("the listing", list);
    p.m.unmount();
    if list(&p.m.target).unwrap() != list(p.r()).unwrap() {
        p.note("after unmount, the disk copy lists other names than tmpfs".into());
    }
    if read(&p.m.path("f")).unwrap() != b"a new file" {
        p.note("after unmount, f on disk is not the new file".into());
    }
    p.finish();
}

#[test]
fn a_file_from_disk_stays_readable_after_unlink_and_flush() {
    if !fuse_available() {
        return;
    }
    let m = Mount::with(|t| {
        fs::write(t.join("old"), b"from disk").unwrap();
        fs::write(t.join("never-opened"), b"cold").unwrap();
    });
    let f = open(&m.path("old"), libc::O_RDONLY, 0).unwrap();
    unlink(&m.path("old")).unwrap();
    assert_eq!(fst(&f).unwrap().nlink, 0, "nlink of an unlinked open file");
    assert_eq!(read_fd(&f).unwrap(), b"from disk");
    m.flush();
    assert_eq!(
        read_fd(&f).unwrap(),
        b"from disk",
        "after a flush removed it"
    );
    drop(f);
    assert_eq!(st(&m.path("old")), Err(libc::ENOENT));
    m.unmount();
    assert_eq!(
        st(&m.path("old")),
        Err(libc::ENOENT),
        "on disk after unmount"
    );
    assert_eq!(read(&m.path("never-opened")).unwrap(), b"cold");
}

#[test]
fn inode_numbers_stay_the_same_for_the_life_of_the_mount() {
    if !fuse_available() {
        return;
    }
    let m = Mount::with(|t| {
        fs::write(t.join("disk_file"), b"d").unwrap();
        fs::create_dir(t.join("disk_dir")).unwrap();
        fs::write(t.join("disk_dir/inner"), b"i").unwrap();
        fs::hard_link(t.join("disk_file"), t.join("disk_dir/hl")).unwrap();
    });
    let path = |n: &str| m.path(n);
    write(&path("f"), b"f").unwrap();
    mkdir(&path("dir"), 0o755).unwrap();
    write(&path("dir/g"), b"g").unwrap();
    symlink("f", &path("l")).unwrap();
    mknod(&path("p"), libc::S_IFIFO | 0o600, 0).unwrap();
    link(&path("f"), &path("dir/fl")).unwrap();
    let names = [
        "f",
        "dir",
        "dir/g",
        "l",
        "p",
        "dir/fl",
        "disk_file",
        "disk_dir",
        "disk_dir/inner",
        "disk_dir/hl",
    ];
    let inos =
        |names: &[&str]| -> Vec<u64> { names.iter().map(|n| ino(&path(n)).unwrap()).collect() };
    let first = inos(&names);
    assert_eq!(first[0], first[5], "hard links share an inode number");
    assert_eq!(
        first[6], first[9],
        "hard links from disk share an inode number"
    );
    let distinct: BTreeSet<u64> = first.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        names.len() - 2,
        "inode numbers are unique: {first:?}"
    );
    assert_eq!(inos(&names), first, "a second lookup");
    let listed: BTreeMap<OsString, u64> = getdents_all(&open_dir(&m.target).unwrap())
        .unwrap()
        .into_iter()
        .map(|(i, _, n)| (n, i))
        .collect();
    for n in ["f", "dir", "l", "p", "disk_file", "disk_dir"] {
        assert_eq!(
            listed[OsStr::new(n)],
            ino(&path(n)).unwrap(),
            "d_ino of {n}"
        );
    }
    drop_caches();
    assert_eq!(inos(&names), first, "after the kernel dropped its caches");
    rename(&path("f"), &path("dir/f2")).unwrap();
    rename(&path("disk_dir"), &path("dir/moved")).unwrap();
    let renamed = [
        "dir/f2",
        "dir",
        "dir/g",
        "l",
        "p",
        "dir/fl",
        "disk_file",
        "dir/moved",
        "dir/moved/inner",
        "dir/moved/hl",
    ];
    assert_eq!(inos(&renamed), first, "after renames");
    m.flush();
    drop_caches();
    assert_eq!(inos(&renamed), first, "after a flush and dropped caches");
    let open_file = open(&path("dir/g"), libc::O_RDONLY, 0).unwrap();
    unlink(&path("dir/g")).unwrap();
    drop_caches();
    let fino = open_file.metadata().unwrap().ino();
    assert_eq!(fino, first[2], "an unlinked open file");
    write(&path("new"), b"").unwrap();
    let new = ino(&path("new")).unwrap();
    assert!(
        !first.contains(&new),
        "a new file got a number in use: {new}"
    );
}
