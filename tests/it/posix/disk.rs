//! Files that come from disk, and the disk copy after unmount.

use super::*;

/// What programs see of one node, for comparing a mount with its disk copy.
#[derive(Debug, PartialEq)]
struct Seen {
    st: St,
    atime: Time,
    mtime: Time,
    xattrs: Vec<(String, Vec<u8>)>,
    link: Option<Vec<u8>>,
    data: Option<Vec<u8>>,
    /// Data and hole boundaries (SEEK_DATA/SEEK_HOLE from 0 onwards).
    extents: Option<Vec<i64>>,
}

/// Everything below `root` (relative paths, "" for root), and which paths share an inode.
/// Reads with O_NOATIME and stats before reading, so that looking does not change atimes.
/// On a disk (not a noatime mount), readlink(2) sets the atime of a symlink: `disk` puts
/// it back.
fn view(root: &Path, disk: bool) -> (BTreeMap<String, Seen>, BTreeSet<Vec<String>>) {
    let mut out = BTreeMap::new();
    let mut inos: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut stack = vec![String::new()];
    let mut files = Vec::new();
    let seen_of = |p: &Path| -> Seen {
        let m = meta(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        let atime = (m.atime(), m.atime_nsec());
        let link = m.file_type().is_symlink().then(|| readlink(p).unwrap());
        if disk && link.is_some() {
            utimens(p, Set::At(atime), Set::Omit).unwrap();
        }
        Seen {
            st: st_of(&m),
            atime,
            mtime: (m.mtime(), m.mtime_nsec()),
            xattrs: xattrs(p).unwrap_or_else(|e| panic!("xattrs of {}: {e}", p.display())),
            link,
            data: None,
            extents: None,
        }
    };
    out.insert(String::new(), seen_of(root));
    while let Some(dir) = stack.pop() {
        let dpath = root.join(&dir);
        let f = open(
            &dpath,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOATIME,
            0,
        )
        .unwrap_or_else(|e| panic!("open {}: {e}", dpath.display()));
        for (_, _, name) in getdents_all(&f).unwrap() {
            if name == "." || name == ".." {
                continue;
            }
            let rel = if dir.is_empty() {
                name.to_string_lossy().into_owned()
            } else {
                format!("{dir}/{}", name.to_string_lossy())
            };
            let p = root.join(&rel);
            let s = seen_of(&p);
            let m = meta(&p).unwrap();
            if m.is_dir() {
                stack.push(rel.clone());
            } else {
                if m.nlink() > 1 {
                    inos.entry(m.ino()).or_default().push(rel.clone());
                }
                if m.is_file() {
                    files.push(rel.clone());
                }
            }
            out.insert(rel, s);
        }
    }
    for rel in files {
        let p = root.join(&rel);
        let f = open(&p, libc::O_RDONLY | libc::O_NOATIME, 0).unwrap();
        let mut extents = Vec::new();
        let mut pos = 0i64;
        for i in 0..64 {
            let whence = if i % 2 == 0 {
                libc::SEEK_DATA
            } else {
                libc::SEEK_HOLE
            };
            match lseek(&f, pos, whence) {
                Ok(o) => {
                    extents.push(o);
                    pos = o;
                }
                Err(_) => break,
            }
        }
        let s = out.get_mut(&rel).unwrap();
        s.data = Some(read_fd(&f).unwrap());
        s.extents = Some(extents);
    }
    let groups = inos
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    (out, groups)
}

/// The differences between two views, one line each.
fn view_diff(
    a_name: &str,
    a: &(BTreeMap<String, Seen>, BTreeSet<Vec<String>>),
    b_name: &str,
    b: &(BTreeMap<String, Seen>, BTreeSet<Vec<String>>),
) -> Vec<String> {
    let mut out = Vec::new();
    let keys: BTreeSet<&String> = a.0.keys().chain(b.0.keys()).collect();
    for k in keys {
        match (a.0.get(k), b.0.get(k)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => {
                let mut parts = Vec::new();
                if x.st != y.st {
                    parts.push(format!("stat {:?} vs {:?}", x.st, y.st));
                }
                if x.atime != y.atime {
                    parts.push(format!("atime {:?} vs {:?}", x.atime, y.atime));
                }
                if x.mtime != y.mtime {
                    parts.push(format!("mtime {:?} vs {:?}", x.mtime, y.mtime));
                }
                if x.xattrs != y.xattrs {
                    parts.push(format!("xattrs {:?} vs {:?}", x.xattrs, y.xattrs));
                }
                if x.link != y.link {
                    parts.push(format!("symlink {:?} vs {:?}", x.link, y.link));
                }
                if x.data != y.data {
                    let show = |d: &Option<Vec<u8>>| {
                        d.as_ref().map(|v| {
                            format!(
                                "{} bytes {:?}",
                                v.len(),
                                String::from_utf8_lossy(&v[..v.len().min(40)])
                            )
                        })
                    };
                    parts.push(format!("data {:?} vs {:?}", show(&x.data), show(&y.data)));
                }
                if x.extents != y.extents {
                    parts.push(format!("extents {:?} vs {:?}", x.extents, y.extents));
                }
                out.push(format!("/{k}: {} ({a_name} vs {b_name})", parts.join("; ")));
            }
            (Some(_), None) => out.push(format!("/{k}: only in {a_name}")),
            (None, Some(_)) => out.push(format!("/{k}: only in {b_name}")),
            (None, None) => unreachable!(),
        }
    }
    if a.1 != b.1 {
        out.push(format!(
            "hard-link groups {:?} ({a_name}) vs {:?} ({b_name})",
            a.1, b.1
        ));
    }
    out
}

/// A disk tree with everything a file system keeps: modes with special bits, owners,
/// nanosecond times, xattrs in several namespaces, ACLs, a symlink, hard links, special
/// files and a sparse file.
fn disk_tree(t: &Path) {
    let u = |r: R<()>, what: &str| r.unwrap_or_else(|e| panic!("preparing {what}: errno {e}"));
    let p = |n: &str| t.join(n);
    u(write(&p("plain"), b"plain data"), "plain");
    u(chown(&p("plain"), 1000, STAFF), "chown plain");
    u(chmod(&p("plain"), 0o640), "chmod plain");
    u(setx(&p("plain"), "user.a", b"1", 0), "user.a");
    u(
        setx(&p("plain"), "user.bin", &[0, 1, 2, 255], 0),
        "user.bin",
    );
    u(setx(&p("plain"), "trusted.t", b"t", 0), "trusted.t");
    u(setx(&p("plain"), "security.s", b"s", 0), "security.s");
    u(write(&p("suid"), b"#!/bin/sh\n"), "suid");
    u(chmod(&p("suid"), 0o4755), "chmod suid");
    u(write(&p("empty"), b""), "empty");
    u(chmod(&p("empty"), 0o600), "chmod empty");
    let sparse = File::create(p("sparse")).unwrap();
    sparse.write_all_at(&[b'x'; 4096], 0).unwrap();
    sparse.write_all_at(b"y", 1 << 20).unwrap();
    drop(sparse);
    u(write(&p("acl"), b"acl"), "acl");
    u(setfacl(&p("acl"), &["-m", "u:1000:rw-"]), "setfacl acl");
    u(mknod(&p("fifo"), libc::S_IFIFO | 0o604, 0), "fifo");
    u(chown(&p("fifo"), 1000, 1000), "chown fifo");
    u(mknod(&p("sock"), libc::S_IFSOCK | 0o755, 0), "sock");
    u(
        mknod(&p("chr"), libc::S_IFCHR | 0o600, libc::makedev(1, 3)),
        "chr",
    );
    u(symlink("plain", &p("sl")), "sl");
    u(lchown(&p("sl"), 1001, 1001), "lchown sl");
    u(setx(&p("sl"), "trusted.l", b"on a symlink", 0), "trusted.l");
    u(symlink("nowhere/at/all", &p("dangling")), "dangling");
    u(mkdir(&p("d"), 0o755), "d");
    u(write(&p("h1"), b"shared"), "h1");
    u(link(&p("h1"), &p("d/h2")), "h2");
    u(chown(&p("h1"), 1005, 1005), "chown h1");
    u(write(&p("d/inner"), b"inner"), "inner");
    u(mkdir(&p("d/sub"), 0o700), "sub");
    u(write(&p("d/sub/deep"), b"deep"), "deep");
    u(mkdir(&p("e"), 0o755), "e");
    u(write(&p("k1"), b"pair"), "k1");
    u(link(&p("k1"), &p("e/k2")), "e/k2");
    u(write(&p("trunc_me"), b"long content from disk"), "trunc_me");
    u(write(&p("victim"), b"victim"), "victim");
    u(write(&p("replacer"), b"replacer"), "replacer");
    u(mkdir(&p("ro_dir"), 0o755), "ro_dir");
    u(write(&p("ro_dir/file"), b"only looked at"), "ro_dir/file");
    u(chown(&p("d"), 1001, 1235), "chown d");
    u(chmod(&p("d"), 0o2750), "chmod d");
    u(setx(&p("d"), "user.dir", b"yes", 0), "user.dir");
    u(setfacl(&p("d"), &["-d", "-m", "u:1000:rwx"]), "default acl");
    let timed = [
        ("plain", T1, T2),
        ("suid", T2, T3),
        ("empty", T3, T4),
        ("sparse", T4, T1),
        ("acl", T1, T1),
        ("fifo", T2, T2),
        ("sock", T3, T3),
        ("chr", T4, T4),
        ("sl", T1, T2),
        ("dangling", T2, T1),
        ("h1", T3, T1),
        ("d/inner", T4, T2),
        ("d/sub/deep", T1, T3),
        ("d/sub", T2, T4),
        ("d", T3, T2),
        ("k1", T2, T3),
        ("trunc_me", T1, T2),
        ("victim", T3, T3),
        ("replacer", T4, T1),
        ("ro_dir/file", T2, T2),
        ("ro_dir", T1, T3),
        ("e", T4, T3),
        ("", T1, T4),
    ];
    for (n, a, m) in timed {
        u(utimens(&p(n), Set::At(a), Set::At(m)), n);
    }
}

#[test]
fn files_from_disk_are_exactly_as_on_disk() {
    if !fuse_available() {
        return;
    }
    let m = Mount::prepare(disk_tree);
    let disk = view(&m.target, true);
    let facls: Vec<(&str, String)> = ["acl", "d", "plain"]
        .into_iter()
        .map(|n| (n, getfacl(&m.path(n)).unwrap()))
        .collect();
    m.mount();
    let mut diffs = Vec::new();
    // Lookups before any listing, then the whole tree.
    for n in ["d/sub/deep", "d/h2", "h1", "plain", "sl", "fifo"] {
        let want = &disk.0[n];
        let p = m.path(n);
        let got = (st(&p), times(&p), xattrs(&p));
        let expect = (
            Ok(want.st),
            Ok((want.atime, want.mtime)),
            Ok(want.xattrs.clone()),
        );
        if got != expect {
            diffs.push(format!("/{n} looked up first: {got:?} vs disk {expect:?}"));
        }
    }
    if ino(&m.path("h1")) != ino(&m.path("d/h2")) {
        diffs.push("h1 and d/h2 have different inode numbers in the mount".into());
    }
    let mounted = view(&m.target, false);
    diffs.extend(view_diff("mount", &mounted, "disk", &disk));
    for (n, want) in &facls {
        let got = getfacl(&m.path(n));
        if got.as_ref() != Ok(want) {
            diffs.push(format!("getfacl /{n}: mount {got:?} vs disk {want:?}"));
        }
    }
    // Only looked at: after unmount the disk copy is what it was.
    m.unmount();
    let after = view(&m.target, true);
    diffs.extend(view_diff("disk after unmount", &after, "mount", &mounted));
    assert!(
        diffs.is_empty(),
        "{} difference(s) between the mount and the disk it came from:\n  {}",
        diffs.len(),
        diffs.join("\n  ")
    );
}

#[test]
fn the_disk_copy_after_unmount_is_what_the_mount_showed() {
    if !fuse_available() {
        return;
    }
    let m = Mount::prepare(disk_tree);
    m.mount();
    let p = |n: &str| m.path(n);
    let u = |r: R<()>, what: &str| r.unwrap_or_else(|e| panic!("{what}: errno {e}"));
    // Changes to what came from disk.
    u(chown(&p("plain"), 1003, 1236), "chown plain");
    u(chmod(&p("plain"), 0o600), "chmod plain");
    u(rmx(&p("plain"), "user.a"), "remove user.a");
    u(setx(&p("plain"), "user.new", b"new", 0), "set user.new");
    u(
        utimens(&p("plain"), Set::At(T3), Set::At(T4)),
        "utimens plain",
    );
    let h1 = open(&p("h1"), libc::O_WRONLY | libc::O_APPEND, 0).unwrap();
    (&h1).write_all(b"+more").unwrap();
    drop(h1);
    u(
        rename(&p("d/inner"), &p("e/moved")),
        "rename across directories",
    );
    let t = open(&p("trunc_me"), libc::O_WRONLY | libc::O_TRUNC, 0).unwrap();
    (&t).write_all(b"short").unwrap();
    drop(t);
    u(
        rename(&p("replacer"), &p("victim")),
        "rename over a file from disk",
    );
    u(
        link(&p("plain"), &p("plain_link")),
        "link to a file from disk",
    );
    u(unlink(&p("k1")), "unlink one name of a pair from disk");
    m.flush();
    u(truncate(&p("sparse"), 10), "truncate sparse");
    let suid = open(&p("suid"), libc::O_WRONLY, 0).unwrap();
    suid.write_all_at(b"#", 0).unwrap();
    drop(suid);
    u(unlink(&p("fifo")), "unlink fifo");
    u(unlink(&p("d/sub/deep")), "unlink deep");
    u(rmdir(&p("d/sub")), "rmdir sub");
    u(setfacl(&p("acl"), &["-m", "u:1001:r--"]), "setfacl acl");
    u(setx(&p("d"), "user.dir", b"changed", 0), "change user.dir");
    // New nodes.
    u(write(&p("new"), b"new content"), "new");
    u(chown(&p("new"), 1007, 1007), "chown new");
    u(chmod(&p("new"), 0o751), "chmod new");
    u(setx(&p("new"), "user.n", b"n", 0), "user.n");
    u(link(&p("new"), &p("d/new2")), "link new");
    u(symlink("new", &p("nsl")), "symlink nsl");
    u(lchown(&p("nsl"), 1008, 1008), "lchown nsl");
    u(utimens(&p("nsl"), Set::At(T2), Set::At(T3)), "utimens nsl");
    u(mkdir(&p("nd"), 0o700), "mkdir nd");
    u(write(&p("nd/f"), b"in nd"), "nd/f");
    u(mknod(&p("nfifo"), libc::S_IFIFO | 0o640, 0), "nfifo");
    u(
        mknod(&p("nchr"), libc::S_IFCHR | 0o600, libc::makedev(1, 5)),
        "nchr",
    );
    u(write(&p("d/inherits"), b"acl"), "d/inherits");
    u(utimens(&p("new"), Set::At(T1), Set::At(T4)), "utimens new");
    u(utimens(&p("nd"), Set::At(T2), Set::At(T2)), "utimens nd");
    u(utimens(&p("e"), Set::At(T1), Set::At(T1)), "utimens e");
    // A directory from disk with hard-linked members moves; a file and a directory
    // from disk trade places.
    u(rename(&p("d"), &p("dd")), "rename d");
    u(
        rename2(&p("sparse"), &p("e"), libc::RENAME_EXCHANGE),
        "exchange sparse and e",
    );
    let seen = view(&m.target, false);
    assert_eq!(
        seen.0["dd/new2"].data.as_deref(),
        Some(&b"new content"[..]),
        "the mount's own view"
    );
    m.unmount();
    let disk = view(&m.target, true);
    let mut diffs = view_diff("disk after unmount", &disk, "mount", &seen);
    // Hard links on disk are still one file: a write through one name shows in the other.
    if ino(&p("h1")) != ino(&p("dd/h2")) || ino(&p("new")) != ino(&p("dd/new2")) {
        diffs.push("hard links were split on disk".into());
    } else {
        fs::OpenOptions::new()
            .append(true)
            .open(p("h1"))
            .unwrap()
            .write_all(b"!")
            .unwrap();
        if read(&p("dd/h2")).unwrap() != b"shared+more!" {
            diffs.push(format!("dd/h2 on disk: {:?}", read(&p("dd/h2"))));
        }
    }
    // Mounted again, the tree is what the disk holds.
    let disk = view(&m.target, true);
    m.mount();
    let again = view(&m.target, false);
    diffs.extend(view_diff("mounted again", &again, "disk", &disk));
    assert!(
        diffs.is_empty(),
        "{} difference(s):\n  {}",
        diffs.len(),
        diffs.join("\n  ")
    );
}
