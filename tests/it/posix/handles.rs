//! File handles (issue 16): name_to_handle_at and open_by_handle_at work for files with
//! hard links, for directories and after the kernel forgot the inode, as on tmpfs; a handle
//! of an earlier mount is stale, never another file.

use super::*;

const MAX_HANDLE: usize = 128;

/// name_to_handle_at(2): the handle's type and bytes.
fn handle_of(p: &Path) -> R<Vec<u8>> {
    let c = cpath(p);
    let mut buf = vec![0u8; 8 + MAX_HANDLE];
    buf[..4].copy_from_slice(&(MAX_HANDLE as u32).to_ne_bytes());
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `buf` is a struct file_handle with room for MAX_HANDLE bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            c.as_ptr(),
            buf.as_mut_ptr(),
            &mut mount_id,
            0,
        )
    };
    if r < 0 {
        return Err(errno());
    }
    let len = u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize;
    buf.truncate(8 + len);
    Ok(buf)
}

/// open_by_handle_at(2) relative to the mount at `root`, then what the file holds (or the
/// names of the directory).
fn open_handle(root: &Path, handle: &[u8]) -> R<Vec<u8>> {
    let mount = open_dir(root)?;
    let mut h = handle.to_vec();
    // SAFETY: `h` is a struct file_handle filled by name_to_handle_at.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            h.as_mut_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: a descriptor we just opened.
    let f = unsafe { File::from_raw_fd(fd as i32) };
    if f.metadata().code()?.is_dir() {
        let mut names: Vec<Vec<u8>> = getdents_all(&f)?
            .into_iter()
            .map(|(_, _, n)| n.into_vec())
            .collect();
        names.sort();
        return Ok(names.join(&b","[..]));
    }
    read_fd(&f)
}

#[test]
fn issue_16_file_handles_survive_hard_links_and_forgotten_inodes() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.setup("make", |d| -> R<()> {
        write(&j(d, "a"), b"linked")?;
        link(&j(d, "a"), &j(d, "b"))?;
        mkdir(&j(d, "dir"), 0o755)?;
        write(&j(d, "dir/inner"), b"inner")?;
        write(&j(d, "gone"), b"gone")
    });
    let handles = |d: &Path| -> R<Vec<Vec<u8>>> {
        ["a", "b", "dir", "dir/inner", "gone"]
            .iter()
            .map(|n| handle_of(&j(d, n)))
            .collect()
    };
    let (ht, hm) = (handles(p.r()), handles(&p.m.target));
    let (ht, hm) = match (ht, hm) {
        (Ok(t), Ok(m)) => (t, m),
        other => panic!("name_to_handle_at (tmpfs, asdfs): {other:?}"),
    };
    let h = |d: &Path, i: usize| if d == p.r() { &ht[i] } else { &hm[i] };
    p.both("open a hard-linked file by handle", |d| {
        open_handle(d, h(d, 1))
    });
    p.both("open a directory by handle", |d| open_handle(d, h(d, 2)));
    unlink(&j(p.r(), "gone")).unwrap();
    unlink(&p.m.path("gone")).unwrap();
    drop_caches();
    for (i, what) in ["a", "b", "dir", "dir/inner", "gone"].iter().enumerate() {
        p.both(
            &format!("open {what} by handle once the kernel forgot it"),
            |d| open_handle(d, h(d, i)),
        );
    }
    // A takeover keeps node ids, and so handles.
    let kept = open_handle(&p.m.target, &hm[3]);
    p.m.kill_daemon();
    p.m.mount();
    assert_eq!(
        open_handle(&p.m.target, &hm[3]),
        kept,
        "a handle across a takeover"
    );
    p.m.unmount();
    p.m.mount();
    assert_eq!(
        open_handle(&p.m.target, &hm[0]),
        Err(libc::ESTALE),
        "a handle of an earlier mount must be stale"
    );
    p.finish();
}

#[test]
fn issue_16_overlay_mode_refuses_file_handles_or_keeps_them() {
    if !fuse_available() {
        return;
    }
    let Some(p) = super::privs::overlay_pair() else {
        return;
    };
    write(&p.m.path("f"), b"overlay").unwrap();
    let h = handle_of(&p.m.path("f"));
    eprintln!(
        "overlay mode: name_to_handle_at: {:?}",
        h.as_ref().map(|_| "a handle")
    );
    match h {
        Err(e) => assert_eq!(e, libc::EOPNOTSUPP, "a refusal must be EOPNOTSUPP"),
        Ok(h) => {
            drop_caches();
            assert_eq!(open_handle(&p.m.target, &h), Ok(b"overlay".to_vec()));
        }
    }
}
