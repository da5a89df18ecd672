//! Permissions: other users, sticky and setgid directories, setuid bits.

use super::*;

#[test]
fn permission_checks_for_other_users() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.setup("make", |d| -> R<()> {
        write(&j(d, "ro"), b"ro")?;
        chmod(&j(d, "ro"), 0o444)?;
        write(&j(d, "rw"), b"rw")?;
        chmod(&j(d, "rw"), 0o666)?;
        write(&j(d, "secret"), b"s")?;
        chmod(&j(d, "secret"), 0o600)?;
        write(&j(d, "grp"), b"g")?;
        chown(&j(d, "grp"), 0, STAFF)?;
        chmod(&j(d, "grp"), 0o640)?;
        write(&j(d, "noexec"), b"#!/bin/sh\n")?;
        mkdir(&j(d, "rodir"), 0o755)?;
        write(&j(d, "rodir/in"), b"")?;
        chmod(&j(d, "rodir"), 0o555)?;
        mkdir(&j(d, "closed"), 0o700)?;
        write(&j(d, "closed/inner"), b"i")?;
        mkdir(&j(d, "pub"), 0o755)?;
        chmod(&j(d, "pub"), 0o777)?;
        write(&j(d, "pub/roots"), b"r")?;
        mkdir(&j(d, "pub/rootsdir"), 0o755)?;
        mkdir(&j(d, "pub/dest"), 0o755)?;
        chmod(&j(d, "pub/dest"), 0o777)
    });
    let nobody = |op: &dyn Fn() -> R<()>| as_user(NOBODY, op);
    p.both("open a 0444 file for writing", |d| {
        nobody(&|| open(&j(d, "ro"), libc::O_WRONLY, 0).map(drop))
    });
    p.both("open a 0444 file for writing as root", |d| {
        open(&j(d, "ro"), libc::O_WRONLY, 0).map(drop)
    });
    p.both("write a 0666 file of root", |d| {
        nobody(&|| write(&j(d, "rw"), b"nobody"))
    });
    p.both("read a 0600 file of root", |d| {
        nobody(&|| read(&j(d, "secret")).map(drop))
    });
    p.both("read a 0640 file as a member of its group", |d| {
        as_user(NOBODY_IN_STAFF, || read(&j(d, "grp")).map(drop))
    });
    p.both("read a 0640 file as a non-member", |d| {
        nobody(&|| read(&j(d, "grp")).map(drop))
    });
    p.both("create in a 0555 directory", |d| {
        nobody(&|| write(&j(d, "rodir/x"), b""))
    });
    p.both("create in a 0555 directory as root", |d| {
        write(&j(d, "rodir/y"), b"")
    });
    p.both("unlink in a 0555 directory", |d| {
        nobody(&|| unlink(&j(d, "rodir/in")))
    });
    p.both("look into a 0700 directory", |d| {
        nobody(&|| st(&j(d, "closed/inner")).map(drop))
    });
    p.both("list a 0700 directory", |d| {
        nobody(&|| list(&j(d, "closed")).map(drop))
    });
    p.both("delete root's file in a world-writable directory", |d| {
        nobody(&|| unlink(&j(d, "pub/roots")))
    });
    p.both("move root's directory to another directory", |d| {
        nobody(&|| rename(&j(d, "pub/rootsdir"), &j(d, "pub/dest/x")))
    });
    p.both("chmod of someone else's file", |d| {
        nobody(&|| chmod(&j(d, "rw"), 0o777))
    });
    p.both("chown of someone else's file", |d| {
        nobody(&|| chown(&j(d, "rw"), 65534, 65534))
    });
    p.both("chown of one's own file to another user", |d| {
        nobody(&|| {
            write(&j(d, "pub/mine"), b"")?;
            chown(&j(d, "pub/mine"), 1000, u32::MAX)
        })
    });
    p.both(
        "chgrp of one's own file to a group one is in",
        |d| -> R<_> {
            as_user(NOBODY_IN_STAFF, || {
                chown(&j(d, "pub/mine"), u32::MAX, STAFF)
            })?;
            st(&j(d, "pub/mine"))
        },
    );
    p.both("chgrp of one's own file to a group one is not in", |d| {
        as_user(NOBODY_IN_STAFF, || chown(&j(d, "pub/mine"), u32::MAX, 4321))
    });
    p.both("set the times of someone else's file", |d| {
        nobody(&|| utimens(&j(d, "rw"), Set::At(T1), Set::At(T1)))
    });
    p.both("touch someone else's writable file", |d| {
        nobody(&|| utimens(&j(d, "rw"), Set::Now, Set::Now))
    });
    p.both("touch someone else's read-only file", |d| {
        nobody(&|| utimens(&j(d, "ro"), Set::Now, Set::Now))
    });
    p.both("truncate someone else's read-only file", |d| {
        nobody(&|| truncate(&j(d, "ro"), 0))
    });
    p.both("an owner without write permission", |d| {
        nobody(&|| {
            write(&j(d, "pub/own"), b"x")?;
            chmod(&j(d, "pub/own"), 0o444)?;
            open(&j(d, "pub/own"), libc::O_WRONLY, 0).map(drop)
        })
    });
    p.both("the owner may chmod it back", |d| {
        nobody(&|| {
            chmod(&j(d, "pub/own"), 0o644)?;
            open(&j(d, "pub/own"), libc::O_WRONLY, 0).map(drop)
        })
    });
    p.both("access() by another user", |d| -> R<_> {
        Ok((
            nobody(&|| access(&j(d, "ro"), libc::R_OK)),
            nobody(&|| access(&j(d, "ro"), libc::W_OK)),
            nobody(&|| access(&j(d, "secret"), libc::R_OK)),
            nobody(&|| access(&j(d, "rw"), libc::X_OK)),
        ))
    });
    p.both("execute permission for root needs an x bit", |d| -> R<_> {
        let before = access(&j(d, "noexec"), libc::X_OK);
        chmod(&j(d, "noexec"), 0o744)?;
        Ok((before, access(&j(d, "noexec"), libc::X_OK)))
    });
    p.both("the state at the end", |d| -> R<_> {
        Ok((
            list(d)?,
            list(&j(d, "pub"))?,
            read(&j(d, "rw"))?,
            st(&j(d, "rw"))?,
        ))
    });
    p.finish();
}

#[test]
fn sticky_directories_protect_other_users_files() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let s = |d: &Path, n: &str| d.join("s").join(n);
    p.setup("make", |d| -> R<()> {
        mkdir(&j(d, "s"), 0o755)?;
        chmod(&j(d, "s"), 0o1777)?;
        write(&s(d, "roots"), b"r")?;
        write(&s(d, "alices"), b"a")?;
        chown(&s(d, "alices"), ALICE.uid, ALICE.gid)?;
        mkdir(&s(d, "rootdir"), 0o777)
    });
    p.both("create one's own file", |d| -> R<_> {
        as_user(NOBODY, || write(&s(d, "mine"), b"m"))?;
        st(&s(d, "mine"))
    });
    p.both("unlink root's file", |d| {
        as_user(NOBODY, || unlink(&s(d, "roots")))
    });
    p.both("unlink another user's file", |d| {
        as_user(NOBODY, || unlink(&s(d, "alices")))
    });
    p.both("rename another user's file", |d| {
        as_user(NOBODY, || rename(&s(d, "alices"), &s(d, "x")))
    });
    p.both("rename one's own file over another's", |d| {
        as_user(NOBODY, || rename(&s(d, "mine"), &s(d, "roots")))
    });
    p.both("rmdir another user's directory", |d| {
        as_user(NOBODY, || rmdir(&s(d, "rootdir")))
    });
    p.both("the owner of a file may delete it", |d| -> R<_> {
        as_user(ALICE, || unlink(&s(d, "alices")))?;
        Ok(st(&s(d, "alices")))
    });
    p.both("rename and unlink one's own file", |d| {
        as_user(NOBODY, || {
            rename(&s(d, "mine"), &s(d, "mine2"))?;
            unlink(&s(d, "mine2"))
        })
    });
    p.both(
        "the owner of the directory may delete anything",
        |d| -> R<_> {
            chown(&j(d, "s"), ALICE.uid, ALICE.gid)?;
            as_user(ALICE, || unlink(&s(d, "roots")))?;
            list(&j(d, "s"))
        },
    );
    p.finish();
}

#[test]
fn setgid_directories_hand_on_their_group() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let g = |d: &Path, n: &str| d.join("g").join(n);
    p.setup("make", |d| -> R<_> {
        mkdir(&j(d, "g"), 0o755)?;
        chown(&j(d, "g"), 0, STAFF)?;
        chmod(&j(d, "g"), 0o2777)?;
        st(&j(d, "g"))
    });
    p.both("a new file gets the directory's group", |d| -> R<_> {
        write(&g(d, "f"), b"")?;
        st(&g(d, "f"))
    });
    p.both(
        "a new directory gets the group and the setgid bit",
        |d| -> R<_> {
            mkdir(&g(d, "sub"), 0o755)?;
            st(&g(d, "sub"))
        },
    );
    p.both("and hands them on", |d| -> R<_> {
        write(&g(d, "sub/f2"), b"")?;
        mkdir(&g(d, "sub/s2"), 0o700)?;
        Ok((st(&g(d, "sub/f2"))?, st(&g(d, "sub/s2"))?))
    });
    p.both("a fifo and a symlink", |d| -> R<_> {
        mknod(&g(d, "p"), libc::S_IFIFO | 0o644, 0)?;
        symlink("f", &g(d, "l"))?;
        Ok((st(&g(d, "p"))?, st(&g(d, "l"))?))
    });
    p.both("nodes made by a user outside the group", |d| -> R<_> {
        as_user(NOBODY, || {
            write(&g(d, "nf"), b"")?;
            mkdir(&g(d, "nd"), 0o777)
        })?;
        Ok((st(&g(d, "nf"))?, st(&g(d, "nd"))?))
    });
    p.both("a non-member cannot create a setgid file", |d| -> R<_> {
        as_user(NOBODY, || {
            open(&g(d, "sgid"), libc::O_CREAT | libc::O_WRONLY, 0o2755).map(drop)
        })?;
        st(&g(d, "sgid"))
    });
    p.both("root may", |d| -> R<_> {
        open(&g(d, "rsgid"), libc::O_CREAT | libc::O_WRONLY, 0o2755)?;
        st(&g(d, "rsgid"))
    });
    p.both("chmod g+s by a non-member is dropped", |d| -> R<_> {
        as_user(NOBODY, || chmod(&g(d, "nf"), 0o2755))?;
        st(&g(d, "nf"))
    });
    p.both("chmod g+s by a member is kept", |d| -> R<_> {
        as_user(NOBODY_IN_STAFF, || chmod(&g(d, "nf"), 0o2755))?;
        st(&g(d, "nf"))
    });
    p.both("a file moved in keeps its group", |d| -> R<_> {
        write(&j(d, "outside"), b"")?;
        rename(&j(d, "outside"), &g(d, "moved"))?;
        st(&g(d, "moved"))
    });
    p.finish();
}

#[test]
fn writes_truncates_and_chown_clear_setuid_bits() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let f = |d: &Path, n: &str| d.join("pub").join(n);
    p.setup("make", |d| -> R<()> {
        mkdir(&j(d, "pub"), 0o755)?;
        chmod(&j(d, "pub"), 0o777)?;
        for n in ["w", "t", "root", "nox", "own"] {
            write(&f(d, n), b"data")?;
        }
        for n in ["w", "t", "root"] {
            chmod(&f(d, n), 0o6777)?;
        }
        chmod(&f(d, "nox"), 0o2766)
    });
    p.both("a write by another user", |d| -> R<_> {
        as_user(NOBODY, || {
            pwrite(&open(&f(d, "w"), libc::O_WRONLY, 0)?, b"x", 0).map(drop)
        })?;
        st(&f(d, "w"))
    });
    p.both("a truncate by another user", |d| -> R<_> {
        as_user(NOBODY, || truncate(&f(d, "t"), 1))?;
        st(&f(d, "t"))
    });
    p.both("a write by root", |d| -> R<_> {
        pwrite(&open(&f(d, "root"), libc::O_WRONLY, 0)?, b"x", 0)?;
        st(&f(d, "root"))
    });
    p.both(
        "setgid without group execute survives a write",
        |d| -> R<_> {
            as_user(NOBODY, || {
                pwrite(&open(&f(d, "nox"), libc::O_WRONLY, 0)?, b"x", 0).map(drop)
            })?;
            st(&f(d, "nox"))
        },
    );
    p.both("the owner writes to its own setuid file", |d| -> R<_> {
        chown(&f(d, "own"), 65534, 65534)?;
        chmod(&f(d, "own"), 0o4755)?;
        as_user(NOBODY, || {
            pwrite(&open(&f(d, "own"), libc::O_WRONLY, 0)?, b"x", 0).map(drop)
        })?;
        st(&f(d, "own"))
    });
    p.finish();
}
