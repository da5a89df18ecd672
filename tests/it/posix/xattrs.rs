//! xattrs and ACLs.

use super::*;

#[test]
fn xattrs_in_user_security_and_trusted_namespaces() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let f = |d: &Path| d.join("f");
    p.setup("make", |d| -> R<()> {
        write(&f(d), b"x")?;
        mkdir(&j(d, "dir"), 0o755)?;
        symlink("f", &j(d, "l"))?;
        mknod(&j(d, "fifo"), libc::S_IFIFO | 0o644, 0)
    });
    p.both("a new file has no xattrs", |d| listx(&f(d)));
    p.both("set and get user.*", |d| -> R<_> {
        setx(&f(d), "user.a", b"1", 0)?;
        getx(&f(d), "user.a")
    });
    p.both("an empty value", |d| -> R<_> {
        setx(&f(d), "user.empty", b"", 0)?;
        getx(&f(d), "user.empty")
    });
    p.both("a binary value", |d| -> R<_> {
        setx(&f(d), "user.bin", &[0, 1, 255, 0], 0)?;
        getx(&f(d), "user.bin")
    });
    p.both("XATTR_CREATE on an existing name", |d| {
        setx(&f(d), "user.a", b"2", libc::XATTR_CREATE)
    });
    p.both("XATTR_REPLACE on a missing name", |d| {
        setx(&f(d), "user.none", b"2", libc::XATTR_REPLACE)
    });
    p.both("XATTR_REPLACE on an existing name", |d| -> R<_> {
        setx(&f(d), "user.a", b"22", libc::XATTR_REPLACE)?;
        getx(&f(d), "user.a")
    });
    p.both("get a missing name", |d| getx(&f(d), "user.none"));
    p.both("remove a missing name", |d| rmx(&f(d), "user.none"));
    p.both("the size, and a buffer too small", |d| -> R<_> {
        Ok((
            getx_sized(&f(d), "user.a", 0)?.0,
            getx_sized(&f(d), "user.bin", 2),
        ))
    });
    p.both("a value of 65536 bytes", |d| -> R<_> {
        setx(&f(d), "user.big", &vec![7u8; 65536], 0)?;
        Ok(getx(&f(d), "user.big")? == vec![7u8; 65536])
    });
    p.both("a value of 65537 bytes", |d| {
        setx(&f(d), "user.big2", &vec![7u8; 65537], 0)
    });
    p.both("a name of 255 bytes", |d| -> R<_> {
        let n = format!("user.{}", "n".repeat(250));
        setx(&f(d), &n, b"x", 0)?;
        Ok((getx(&f(d), &n)?, rmx(&f(d), &n)))
    });
    p.both("a name of 256 bytes", |d| {
        setx(&f(d), &format!("user.{}", "n".repeat(251)), b"x", 0)
    });
    p.both("security.*", |d| -> R<_> {
        setx(&f(d), "security.test", b"s", 0)?;
        getx(&f(d), "security.test")
    });
    p.both("trusted.* as root", |d| -> R<_> {
        setx(&f(d), "trusted.t", b"t", 0)?;
        getx(&f(d), "trusted.t")
    });
    p.both("the list", |d| listx(&f(d)));
    p.both("the list's size, and a buffer too small", |d| -> R<_> {
        Ok((listx_sized(&f(d), 0)?.0, listx_sized(&f(d), 3)))
    });
    p.both("remove", |d| -> R<_> {
        rmx(&f(d), "user.empty")?;
        Ok((getx(&f(d), "user.empty"), listx(&f(d))?))
    });
    p.both("user.* on a directory", |d| -> R<_> {
        setx(&j(d, "dir"), "user.d", b"dir", 0)?;
        Ok((getx(&j(d, "dir"), "user.d")?, listx(&j(d, "dir"))?))
    });
    p.both("user.* on a symlink", |d| {
        setx(&j(d, "l"), "user.s", b"s", 0)
    });
    p.both("user.* on a fifo", |d| {
        setx(&j(d, "fifo"), "user.p", b"p", 0)
    });
    p.both("get user.* of a fifo", |d| getx(&j(d, "fifo"), "user.p"));
    p.both("trusted.* on a symlink", |d| -> R<_> {
        setx(&j(d, "l"), "trusted.s", b"s", 0)?;
        Ok((
            getx(&j(d, "l"), "trusted.s")?,
            listx(&j(d, "l"))?,
            listx(&f(d))?,
        ))
    });
    assert!(p.changes(
        "ctime after setxattr",
        |d| ctime(&f(d)),
        |d| setx(&f(d), "user.c", b"c", 0)
    ));
    assert!(!p.changes(
        "mtime after setxattr",
        |d| mtime(&f(d)),
        |d| setx(&f(d), "user.c2", b"c", 0)
    ));
    assert!(p.changes(
        "ctime after removexattr",
        |d| ctime(&f(d)),
        |d| rmx(&f(d), "user.c")
    ));
    // Names outside the namespaces Linux knows: tmpfs refuses them, and a disk file
    // system could not take them at write-back either.
    p.both("set a name in an unknown namespace", |d| {
        setx(&f(d), "nonsense.x", b"x", 0)
    });
    p.both("get a name in an unknown namespace", |d| {
        getx(&f(d), "nonsense.x")
    });
    p.both("a prefix with no name", |d| setx(&f(d), "user.", b"x", 0));
    p.both("the list at the end", |d| listx(&f(d)));
    p.finish();
}

#[test]
fn xattr_permissions_for_other_users() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.setup("make", |d| -> R<()> {
        write(&j(d, "f"), b"x")?;
        setx(&j(d, "f"), "user.a", b"1", 0)?;
        setx(&j(d, "f"), "trusted.t", b"t", 0)?;
        setx(&j(d, "f"), "security.s", b"s", 0)?;
        write(&j(d, "secret"), b"s")?;
        chmod(&j(d, "secret"), 0o600)?;
        setx(&j(d, "secret"), "user.a", b"1", 0)?;
        mkdir(&j(d, "sticky"), 0o755)?;
        chmod(&j(d, "sticky"), 0o1777)?;
        mkdir(&j(d, "pub"), 0o755)?;
        chmod(&j(d, "pub"), 0o777)
    });
    p.both("read user.* of a readable file", |d| {
        as_user_data(NOBODY, || getx(&j(d, "f"), "user.a"))
    });
    p.both("write user.* without write permission", |d| {
        as_user(NOBODY, || setx(&j(d, "f"), "user.b", b"2", 0))
    });
    p.both("read user.* without read permission", |d| {
        as_user_data(NOBODY, || getx(&j(d, "secret"), "user.a"))
    });
    p.both("read trusted.* as another user", |d| {
        as_user_data(NOBODY, || getx(&j(d, "f"), "trusted.t"))
    });
    p.both("write trusted.* as another user", |d| {
        as_user(NOBODY, || {
            write(&j(d, "pub/mine"), b"")?;
            setx(&j(d, "pub/mine"), "trusted.u", b"u", 0)
        })
    });
    p.both("write security.* as another user", |d| {
        as_user(NOBODY, || setx(&j(d, "pub/mine"), "security.x", b"x", 0))
    });
    p.both("write user.* of one's own file", |d| -> R<_> {
        as_user(NOBODY, || setx(&j(d, "pub/mine"), "user.m", b"m", 0))?;
        getx(&j(d, "pub/mine"), "user.m")
    });
    p.both("the list as another user hides trusted.*", |d| {
        as_user_data(NOBODY, || Ok(listx(&j(d, "f"))?.join(",").into_bytes()))
    });
    p.both("the list as root", |d| listx(&j(d, "f")));
    p.both("user.* of a sticky directory one does not own", |d| {
        as_user(NOBODY, || setx(&j(d, "sticky"), "user.x", b"x", 0))
    });
    p.finish();
}

#[test]
fn posix_acls_inherit_mask_and_grant() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.setup("make", |d| mkdir(&j(d, "acl"), 0o755));
    p.both("set a default ACL", |d| -> R<_> {
        setfacl(
            &j(d, "acl"),
            &["-d", "-m", "u::rwx,u:1000:rwx,g::r-x,m::rwx,o::---"],
        )?;
        Ok((getfacl(&j(d, "acl"))?, st(&j(d, "acl"))?))
    });
    p.both("a new file inherits it, masked by its mode", |d| -> R<_> {
        write(&j(d, "acl/f"), b"")?;
        Ok((st(&j(d, "acl/f"))?, getfacl(&j(d, "acl/f"))?))
    });
    p.both("a new file created with 0600", |d| -> R<_> {
        open(&j(d, "acl/f6"), libc::O_CREAT | libc::O_WRONLY, 0o600)?;
        Ok((st(&j(d, "acl/f6"))?, getfacl(&j(d, "acl/f6"))?))
    });
    p.both("a new directory inherits both ACLs", |d| -> R<_> {
        mkdir(&j(d, "acl/sub"), 0o777)?;
        Ok((st(&j(d, "acl/sub"))?, getfacl(&j(d, "acl/sub"))?))
    });
    p.both("and hands them on", |d| -> R<_> {
        write(&j(d, "acl/sub/g"), b"")?;
        Ok((st(&j(d, "acl/sub/g"))?, getfacl(&j(d, "acl/sub/g"))?))
    });
    p.both("a fifo inherits it", |d| -> R<_> {
        mknod(&j(d, "acl/p"), libc::S_IFIFO | 0o640, 0)?;
        Ok((st(&j(d, "acl/p"))?, getfacl(&j(d, "acl/p"))?))
    });
    p.both("a symlink does not", |d| -> R<_> {
        symlink("f", &j(d, "acl/l"))?;
        Ok((st(&j(d, "acl/l"))?, listx(&j(d, "acl/l"))?))
    });
    p.both("the raw access ACL", |d| getx(&j(d, "acl/f"), ACL_ACCESS));
    p.both("chmod updates the mask", |d| -> R<_> {
        chmod(&j(d, "acl/f"), 0o640)?;
        Ok((st(&j(d, "acl/f"))?, getfacl(&j(d, "acl/f"))?))
    });
    p.both("setting an access ACL sets the mode", |d| -> R<_> {
        write(&j(d, "plain"), b"")?;
        setfacl(&j(d, "plain"), &["-m", "u:1000:rw-"])?;
        Ok((st(&j(d, "plain"))?, getfacl(&j(d, "plain"))?))
    });
    p.both("an ACL the mode says in full is not stored", |d| -> R<_> {
        write(&j(d, "plain2"), b"")?;
        let bytes = acl(&[
            (ACL_USER_OBJ, 6, ACL_UNDEFINED),
            (ACL_GROUP_OBJ, 0, ACL_UNDEFINED),
            (ACL_OTHER, 4, ACL_UNDEFINED),
        ]);
        setx(&j(d, "plain2"), ACL_ACCESS, &bytes, 0)?;
        Ok((st(&j(d, "plain2"))?, listx(&j(d, "plain2"))?))
    });
    p.both("removing the ACL", |d| -> R<_> {
        setfacl(&j(d, "plain"), &["-b"])?;
        Ok((
            st(&j(d, "plain"))?,
            getfacl(&j(d, "plain"))?,
            listx(&j(d, "plain"))?,
        ))
    });
    p.both("removing the default ACL", |d| -> R<_> {
        setfacl(&j(d, "acl/sub"), &["-k"])?;
        Ok((getfacl(&j(d, "acl/sub"))?, listx(&j(d, "acl/sub"))?))
    });
    p.both("a default ACL on a file", |d| {
        let bytes = acl(&[
            (ACL_USER_OBJ, 7, ACL_UNDEFINED),
            (ACL_GROUP_OBJ, 5, ACL_UNDEFINED),
            (ACL_OTHER, 5, ACL_UNDEFINED),
        ]);
        setx(&j(d, "plain"), ACL_DEFAULT, &bytes, 0)
    });
    p.both("a malformed ACL", |d| {
        setx(&j(d, "plain"), ACL_ACCESS, &[1, 2, 3], 0)
    });
    p.both("a named user without a mask", |d| {
        let bytes = acl(&[
            (ACL_USER_OBJ, 7, ACL_UNDEFINED),
            (ACL_USER, 7, 1000),
            (ACL_GROUP_OBJ, 5, ACL_UNDEFINED),
            (ACL_OTHER, 5, ACL_UNDEFINED),
        ]);
        setx(&j(d, "plain"), ACL_ACCESS, &bytes, 0)
    });
    p.both("an ACL grants another user read access", |d| -> R<_> {
        write(&j(d, "secret"), b"s")?;
        chmod(&j(d, "secret"), 0o600)?;
        setfacl(&j(d, "secret"), &["-m", "u:65534:r--"])?;
        as_user(NOBODY, || read(&j(d, "secret")).map(drop))
    });
    p.both("but not write access", |d| {
        as_user(NOBODY, || {
            open(&j(d, "secret"), libc::O_WRONLY, 0).map(drop)
        })
    });
    p.both("the mask limits the grant after chmod", |d| -> R<_> {
        chmod(&j(d, "secret"), 0o600)?;
        let r = as_user(NOBODY, || read(&j(d, "secret")).map(drop));
        Ok((r, getfacl(&j(d, "secret"))?))
    });
    p.both("a named group entry", |d| -> R<_> {
        write(&j(d, "grp"), b"g")?;
        chmod(&j(d, "grp"), 0o600)?;
        setfacl(&j(d, "grp"), &["-m", &format!("g:{STAFF}:rw-")])?;
        Ok((
            as_user(NOBODY_IN_STAFF, || write(&j(d, "grp"), b"staff")),
            as_user(NOBODY, || write(&j(d, "grp"), b"nobody")),
            read(&j(d, "grp"))?,
        ))
    });
    p.finish();
}
