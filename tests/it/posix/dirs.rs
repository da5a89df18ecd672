//! Names in directories: mkdir, rmdir, unlink, rename; readdir.

use super::*;

#[test]
fn mkdir_and_rmdir() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.both("mkdir 0777 under the umask", |d| -> R<_> {
        mkdir(&j(d, "a"), 0o777)?;
        Ok((st(&j(d, "a"))?, st(d)?.nlink))
    });
    p.both("mkdir keeps the sticky bit only", |d| -> R<_> {
        mkdir(&j(d, "s"), 0o7777)?;
        st(&j(d, "s"))
    });
    p.both("mkdir over a directory", |d| mkdir(&j(d, "a"), 0o755));
    p.both("mkdir over a file", |d| -> R<_> {
        write(&j(d, "f"), b"")?;
        mkdir(&j(d, "f"), 0o755)
    });
    p.both("mkdir in a missing directory", |d| {
        mkdir(&j(d, "no/x"), 0o755)
    });
    p.both("mkdir beneath a file", |d| mkdir(&j(d, "f/x"), 0o755));
    p.both("nested directories", |d| -> R<_> {
        mkdir(&j(d, "a/b"), 0o755)?;
        mkdir(&j(d, "a/b/c"), 0o700)?;
        Ok((st(&j(d, "a"))?, st(&j(d, "a/b"))?, st(&j(d, "a/b/c"))?))
    });
    p.both("rmdir of a non-empty directory", |d| rmdir(&j(d, "a")));
    p.both("rmdir of a file", |d| rmdir(&j(d, "f")));
    p.both("rmdir of dot", |d| rmdir(&j(d, "a/b/c/.")));
    p.both("rmdir of a missing name", |d| rmdir(&j(d, "missing")));
    p.both("rmdir from the bottom", |d| -> R<_> {
        rmdir(&j(d, "a/b/c"))?;
        let mid = st(&j(d, "a/b"))?;
        rmdir(&j(d, "a/b"))?;
        Ok((mid, st(&j(d, "a"))?, st(&j(d, "a/b"))))
    });
    p.both("rmdir and the parent's link count", |d| -> R<_> {
        rmdir(&j(d, "a"))?;
        Ok((st(d)?.nlink, st(&j(d, "a"))))
    });
    p.both("a directory with 100 subdirectories", |d| -> R<_> {
        mkdir(&j(d, "many"), 0o755)?;
        for i in 0..100 {
            mkdir(&j(d, &format!("many/{i}")), 0o755)?;
        }
        st(&j(d, "many"))
    });
    assert!(p.changes("parent mtime after mkdir", mtime, |d| mkdir(
        &j(d, "x"),
        0o755
    )));
    assert!(p.changes("parent mtime after rmdir", mtime, |d| rmdir(&j(d, "x"))));
    assert!(p.changes(
        "parent ctime after rmdir",
        |d| ctime(&j(d, "many")),
        |d| rmdir(&j(d, "many/7"))
    ));
    p.finish();
}

#[test]
fn unlink_of_files_links_and_special_files() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.setup("make", |d| -> R<()> {
        write(&j(d, "f"), b"data")?;
        link(&j(d, "f"), &j(d, "g"))?;
        symlink("g", &j(d, "l"))?;
        mknod(&j(d, "fifo"), libc::S_IFIFO | 0o600, 0)?;
        mkdir(&j(d, "dir"), 0o755)?;
        write(&j(d, "dir/inner"), b"in")
    });
    p.both("unlink one of two names", |d| -> R<_> {
        unlink(&j(d, "f"))?;
        Ok((st(&j(d, "f")), st(&j(d, "g"))?, read(&j(d, "g"))?))
    });
    p.both("unlink a symlink leaves its target", |d| -> R<_> {
        unlink(&j(d, "l"))?;
        Ok((st(&j(d, "l")), st(&j(d, "g"))?))
    });
    p.both("unlink a fifo", |d| -> R<_> {
        unlink(&j(d, "fifo"))?;
        Ok(st(&j(d, "fifo")))
    });
    p.both("unlink a directory", |d| unlink(&j(d, "dir")));
    p.both("unlink a missing name", |d| unlink(&j(d, "missing")));
    p.both("unlink beneath a file", |d| unlink(&j(d, "g/x")));
    p.both("unlink in a subdirectory", |d| -> R<_> {
        unlink(&j(d, "dir/inner"))?;
        Ok((list(&j(d, "dir"))?, rmdir(&j(d, "dir"))))
    });
    p.both("the listing after", list);
    p.setup("make a pair of links", |d| -> R<()> {
        write(&j(d, "h"), b"h")?;
        link(&j(d, "h"), &j(d, "h2"))
    });
    assert!(p.changes(
        "ctime of the remaining name after unlink",
        |d| ctime(&j(d, "h2")),
        |d| unlink(&j(d, "h"))
    ));
    assert!(
        p.changes("directory mtime after unlink", mtime, |d| unlink(&j(
            d, "h2"
        )))
    );
    p.finish();
}

#[test]
fn rename_over_files_and_empty_directories_and_across_directories() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.setup("make", |d| -> R<()> {
        write(&j(d, "a"), b"A")?;
        write(&j(d, "b"), b"B")?;
        mkdir(&j(d, "d1"), 0o755)?;
        mkdir(&j(d, "d2"), 0o755)?;
        mkdir(&j(d, "e"), 0o755)?;
        mkdir(&j(d, "full"), 0o755)?;
        write(&j(d, "full/x"), b"x")?;
        write(&j(d, "d1/f"), b"F")
    });
    p.both("rename to a new name", |d| -> R<_> {
        rename(&j(d, "a"), &j(d, "a2"))?;
        Ok((st(&j(d, "a")), read(&j(d, "a2"))?))
    });
    p.both("rename over a file", |d| -> R<_> {
        rename(&j(d, "a2"), &j(d, "b"))?;
        Ok((st(&j(d, "a2")), read(&j(d, "b"))?, st(&j(d, "b"))?))
    });
    p.both("rename a directory over an empty directory", |d| -> R<_> {
        rename(&j(d, "d2"), &j(d, "e"))?;
        Ok((st(&j(d, "d2")), st(&j(d, "e"))?, st(d)?.nlink))
    });
    p.both("rename a directory over a non-empty one", |d| {
        rename(&j(d, "e"), &j(d, "full"))
    });
    p.both("rename a file over a directory", |d| {
        rename(&j(d, "b"), &j(d, "e"))
    });
    p.both("rename a directory over a file", |d| {
        rename(&j(d, "e"), &j(d, "b"))
    });
    p.both("rename a directory beneath itself", |d| -> R<_> {
        mkdir(&j(d, "e/sub"), 0o755)?;
        rename(&j(d, "e"), &j(d, "e/sub/x"))
    });
    p.both("rename a missing name", |d| {
        rename(&j(d, "missing"), &j(d, "z"))
    });
    p.both("rename into a missing directory", |d| {
        rename(&j(d, "b"), &j(d, "missing/b"))
    });
    p.both("rename a file across directories", |d| -> R<_> {
        rename(&j(d, "d1/f"), &j(d, "e/f"))?;
        Ok((read(&j(d, "e/f"))?, st(&j(d, "d1/f")), list(&j(d, "e"))?))
    });
    p.both("rename a directory across directories", |d| -> R<_> {
        mkdir(&j(d, "d1/m"), 0o755)?;
        write(&j(d, "d1/m/in"), b"in")?;
        let before = (st(&j(d, "d1"))?.nlink, st(&j(d, "e"))?.nlink);
        rename(&j(d, "d1/m"), &j(d, "e/m"))?;
        Ok((
            before,
            st(&j(d, "d1"))?.nlink,
            st(&j(d, "e"))?.nlink,
            ino(&j(d, "e/m/.."))? == ino(&j(d, "e"))?,
            read(&j(d, "e/m/in"))?,
        ))
    });
    p.both("rename onto itself", |d| -> R<_> {
        rename(&j(d, "b"), &j(d, "b"))?;
        read(&j(d, "b"))
    });
    p.both("rename a hard link onto its other name", |d| -> R<_> {
        link(&j(d, "b"), &j(d, "b2"))?;
        rename(&j(d, "b"), &j(d, "b2"))?;
        Ok((st(&j(d, "b"))?, st(&j(d, "b2"))?))
    });
    p.both("an open descriptor follows the rename", |d| -> R<_> {
        let file = open(&j(d, "b2"), libc::O_RDONLY, 0)?;
        rename(&j(d, "b2"), &j(d, "b3"))?;
        read_fd(&file)
    });
    p.setup("make linked files", |d| -> R<()> {
        mkdir(&j(d, "keep"), 0o755)?;
        write(&j(d, "x"), b"x")?;
        link(&j(d, "x"), &j(d, "keep/x"))?;
        write(&j(d, "v"), b"v")?;
        link(&j(d, "v"), &j(d, "keep/v"))?;
        write(&j(d, "w"), b"w")
    });
    assert!(p.changes(
        "ctime of a renamed file",
        |d| ctime(&j(d, "keep/x")),
        |d| rename(&j(d, "x"), &j(d, "y"))
    ));
    assert!(p.changes(
        "ctime of a renamed directory",
        |d| ctime(&j(d, "e/m/in/..")),
        |d| rename(&j(d, "e/m"), &j(d, "e/m2"))
    ));
    assert!(p.changes(
        "ctime of a file replaced by a rename",
        |d| ctime(&j(d, "keep/v")),
        |d| rename(&j(d, "w"), &j(d, "v"))
    ));
    assert!(p.changes(
        "mtime of the source directory",
        |d| mtime(&j(d, "e")),
        |d| rename(&j(d, "e/f"), &j(d, "d1/f"))
    ));
    assert!(p.changes(
        "mtime of the target directory",
        |d| mtime(&j(d, "e")),
        |d| rename(&j(d, "d1/f"), &j(d, "e/f"))
    ));
    p.both("the listings after", |d| -> R<_> {
        Ok((
            list(d)?,
            list(&j(d, "e"))?,
            list(&j(d, "d1"))?,
            list(&j(d, "keep"))?,
        ))
    });
    p.finish();
}

#[test]
fn rename_noreplace_and_exchange() {
    if !fuse_available() {
        return;
    }
    let noreplace = libc::RENAME_NOREPLACE;
    let exchange = libc::RENAME_EXCHANGE;
    let p = Pair::new();
    p.setup("make", |d| -> R<()> {
        write(&j(d, "a"), b"A")?;
        write(&j(d, "b"), b"B")?;
        mkdir(&j(d, "d1"), 0o755)?;
        write(&j(d, "d1/c"), b"C")?;
        mkdir(&j(d, "dir"), 0o755)?;
        mkdir(&j(d, "dir/sub"), 0o755)
    });
    p.both("NOREPLACE onto an existing name", |d| {
        rename2(&j(d, "a"), &j(d, "b"), noreplace)
    });
    p.both("NOREPLACE onto a new name", |d| -> R<_> {
        rename2(&j(d, "a"), &j(d, "a2"), noreplace)?;
        Ok((st(&j(d, "a")), read(&j(d, "a2"))?))
    });
    p.both("EXCHANGE two files", |d| -> R<_> {
        rename2(&j(d, "a2"), &j(d, "b"), exchange)?;
        Ok((read(&j(d, "a2"))?, read(&j(d, "b"))?))
    });
    p.both("EXCHANGE a file and a directory", |d| -> R<_> {
        rename2(&j(d, "b"), &j(d, "dir"), exchange)?;
        Ok((
            st(&j(d, "b"))?,
            st(&j(d, "dir"))?,
            st(&j(d, "b/sub"))?,
            st(d)?.nlink,
        ))
    });
    p.both(
        "EXCHANGE a file and a directory across directories",
        |d| -> R<_> {
            let before = (st(d)?.nlink, st(&j(d, "d1"))?.nlink);
            rename2(&j(d, "d1/c"), &j(d, "b"), exchange)?;
            Ok((
                before,
                st(d)?.nlink,
                st(&j(d, "d1"))?.nlink,
                st(&j(d, "d1/c"))?,
                read(&j(d, "b"))?,
                ino(&j(d, "d1/c/.."))? == ino(&j(d, "d1"))?,
            ))
        },
    );
    p.both("EXCHANGE with a missing name", |d| {
        rename2(&j(d, "a2"), &j(d, "missing"), exchange)
    });
    p.both("NOREPLACE and EXCHANGE together", |d| {
        rename2(&j(d, "a2"), &j(d, "b"), noreplace | exchange)
    });
    p.both("an unknown flag", |d| {
        rename2(&j(d, "a2"), &j(d, "zz"), 1 << 10)
    });
    p.both("EXCHANGE a directory with its descendant", |d| {
        rename2(&j(d, "d1"), &j(d, "d1/c/sub"), exchange)
    });
    p.both("EXCHANGE a name with itself", |d| {
        rename2(&j(d, "a2"), &j(d, "a2"), exchange)
    });
    p.setup("make linked files", |d| -> R<()> {
        mkdir(&j(d, "keep"), 0o755)?;
        write(&j(d, "p"), b"P")?;
        link(&j(d, "p"), &j(d, "keep/p"))?;
        write(&j(d, "q"), b"Q")?;
        link(&j(d, "q"), &j(d, "keep/q"))
    });
    assert!(p.changes(
        "ctime of the first file after EXCHANGE",
        |d| ctime(&j(d, "keep/p")),
        |d| rename2(&j(d, "p"), &j(d, "q"), exchange)
    ));
    assert!(p.changes(
        "ctime of the second file after EXCHANGE",
        |d| ctime(&j(d, "keep/p")),
        |d| rename2(&j(d, "p"), &j(d, "q"), exchange)
    ));
    p.both("the listings after", |d| -> R<_> {
        Ok((list(d)?, list(&j(d, "d1"))?, read(&j(d, "p"))?))
    });
    p.finish();
}

// ---------------------------------------------------------------------------------------
// readdir

#[test]
fn readdir_lists_names_types_and_attributes() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let names = ["file", "dir", "link", "fifo", "sock", "chr"];
    p.setup("make one of each kind", |d| -> R<()> {
        write(&j(d, "file"), b"x")?;
        mkdir(&j(d, "dir"), 0o755)?;
        symlink("file", &j(d, "link"))?;
        mknod(&j(d, "fifo"), libc::S_IFIFO | 0o600, 0)?;
        mknod(&j(d, "sock"), libc::S_IFSOCK | 0o600, 0)?;
        mknod(&j(d, "chr"), libc::S_IFCHR | 0o600, libc::makedev(1, 3))
    });
    p.both("names and types", list);
    p.both("d_ino is st_ino", |d| -> R<_> {
        // `..` of the top directory is left out: the mount's root is a file system's root,
        // the tmpfs directory is not.
        let f = open_dir(d)?;
        let mut bad = Vec::new();
        for (i, _, name) in getdents_all(&f)? {
            if name != ".." && i != ino(&d.join(&name))? {
                bad.push(name);
            }
        }
        let f = open_dir(&j(d, "dir"))?;
        for (i, _, name) in getdents_all(&f)? {
            if i != ino(&j(d, "dir").join(&name))? {
                bad.push(name);
            }
        }
        Ok(bad)
    });
    p.both("attributes of every entry after a listing", |d| -> R<_> {
        list(d)?;
        names.iter().map(|n| st(&j(d, n))).collect::<R<Vec<_>>>()
    });
    p.both("attributes after a change behind a listing", |d| -> R<_> {
        list(d)?;
        chmod(&j(d, "file"), 0o600)?;
        write(&j(d, "file"), b"longer")?;
        list(d)?;
        st(&j(d, "file"))
    });
    p.both("an empty directory lists . and ..", |d| list(&j(d, "dir")));
    p.both("readdir of a file", |d| -> R<_> {
        let f = open(&j(d, "file"), libc::O_RDONLY, 0)?;
        getdents(&f, 4096)
    });
    p.both("seek back to a remembered position", |d| -> R<_> {
        mkdir(&j(d, "many"), 0o755)?;
        for i in 0..50 {
            write(&j(d, &format!("many/entry-{i:03}")), b"")?;
        }
        let f = open_dir(&j(d, "many"))?;
        let first = getdents(&f, 300)?;
        let pos = lseek(&f, 0, libc::SEEK_CUR)?;
        let a = getdents(&f, 300)?;
        lseek(&f, pos, libc::SEEK_SET)?;
        let b = getdents(&f, 300)?;
        lseek(&f, 0, libc::SEEK_SET)?;
        let all = getdents_all(&f)?;
        Ok((!first.is_empty(), !a.is_empty(), a == b, all.len()))
    });
    p.both("the listing after changes", |d| -> R<_> {
        unlink(&j(d, "file"))?;
        write(&j(d, "new"), b"")?;
        rename(&j(d, "fifo"), &j(d, "fifo2"))?;
        list(d)
    });
    p.finish();
}

#[test]
fn readdir_stays_correct_while_the_directory_changes() {
    if !fuse_available() {
        return;
    }
    let original: BTreeSet<OsString> = (0..500)
        .map(|i| OsString::from(format!("entry-{i:04}")))
        .collect();
    // One directory made through the mount, one that comes from disk.
    let fill = |dir: &Path| {
        fs::create_dir(dir).unwrap();
        for n in &original {
            fs::write(dir.join(n), b"").unwrap();
        }
    };
    let p = Pair::with(Mount::with(|t| fill(&t.join("from-disk"))));
    fill(&p.r().join("from-disk"));
    p.setup("make", |d| -> R<()> {
        mkdir(&j(d, "new"), 0o755)?;
        for n in &original {
            write(&j(d, "new").join(n), b"")?;
        }
        Ok(())
    });
    let added: BTreeSet<OsString> = (0..200)
        .map(|i| OsString::from(format!("added-{i:04}")))
        .collect();
    let removed: BTreeSet<OsString> = original.iter().step_by(3).cloned().collect();
    for dir in ["new", "from-disk"] {
        let problems = p.answer(
            &format!("listing {dir} while entries come and go"),
            |d| -> R<_> {
                let f = open_dir(&j(d, dir))?;
                let mut seen = Vec::new();
                while seen.len() < 150 {
                    let chunk = getdents(&f, 1024)?;
                    assert!(!chunk.is_empty(), "listing ended early");
                    seen.extend(chunk.into_iter().map(|(_, _, n)| n));
                }
                for n in &added {
                    write(&j(d, dir).join(n), b"")?;
                }
                for n in &removed {
                    unlink(&j(d, dir).join(n))?;
                }
                seen.extend(getdents_all(&f)?.into_iter().map(|(_, _, n)| n));
                let mut count: BTreeMap<OsString, usize> = BTreeMap::new();
                for n in seen {
                    *count.entry(n).or_default() += 1;
                }
                let dups: Vec<_> = count.iter().filter(|(_, c)| **c > 1).collect();
                let missing: Vec<_> = original
                    .difference(&removed)
                    .filter(|n| !count.contains_key(*n))
                    .collect();
                let unknown: Vec<_> = count
                    .keys()
                    .filter(|n| {
                        !original.contains(*n) && !added.contains(*n) && *n != "." && *n != ".."
                    })
                    .collect();
                let dots = (count.get(OsStr::new(".")), count.get(OsStr::new("..")));
                Ok(format!(
                    "duplicates {dups:?}, missing {missing:?}, unknown {unknown:?}, dots {dots:?}"
                ))
            },
        );
        assert_eq!(
            problems,
            Ok("duplicates [], missing [], unknown [], dots (Some(1), Some(1))".to_string()),
            "tmpfs itself"
        );
        p.both(&format!("the final listing of {dir}"), |d| list(&j(d, dir)));
    }
    p.finish();
}
