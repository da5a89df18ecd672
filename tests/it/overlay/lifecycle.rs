//! Unmounts with files open, unmounts by someone else, and daemons killed (also in the
//! middle of a flush): nothing is lost, and the next mount takes the overlay over.

use super::*;

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

/// A daemon killed while it writes a middle layer (after the rotate, before the flush
/// ends): overlay.json still names the layers of before the rotate. What programs wrote
/// into the fresh upper layer meanwhile must survive the takeover.
#[test]
fn a_daemon_killed_during_a_flush_loses_nothing_written_meanwhile() {
    let Some(m) = overlay_mount(|_| {}) else {
        return;
    };
    // Enough data that writing the middle layer takes a while.
    let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8 + 1).collect();
    {
        let mut f = fs::File::create(m.path("big")).unwrap();
        for _ in 0..768 {
            f.write_all(&chunk).unwrap();
        }
    }
    let before = top_upperdir(&m.target).unwrap();
    let mut flush = std::process::Command::new(crate::harness::BIN)
        .args(["flush", m.target.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while top_upperdir(&m.target).as_ref() == Some(&before) {
        assert!(Instant::now() < end, "no rotate");
        std::thread::sleep(Duration::from_millis(1));
    }
    fs::write(m.path("late"), b"written during the flush").unwrap();
    let still_flushing = flush.try_wait().unwrap().is_none();
    m.kill_daemon();
    let _ = flush.wait();
    assert!(
        still_flushing,
        "inconclusive: the flush ended before the kill"
    );
    assert_eq!(
        fs::read(m.path("late")).unwrap(),
        b"written during the flush"
    );
    m.mount();
    assert_eq!(
        fs::read(m.path("late")).ok().as_deref(),
        Some(&b"written during the flush"[..]),
        "the mount after the takeover"
    );
    m.unmount();
    assert_eq!(
        fs::read(m.path("late")).ok().as_deref(),
        Some(&b"written during the flush"[..]),
        "the disk copy"
    );
}

/// QA: a program holding one file by a descriptor, a dup of it and a mapping (Python's
/// mmap dups the descriptor) was "3 open files" in status and in the unmount's answer; it
/// is one, through whichever overlays the flushes left it in (as in FUSE mode: one handle).
#[test]
fn a_file_held_by_descriptors_and_a_mapping_is_one_open_file() {
    let Some(m) = overlay_mount(|_| {}) else {
        return;
    };
    let pid = m.daemon_pid().unwrap();
    fs::write(m.path("mapped"), vec![b'a'; 4096]).unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("mapped"))
        .unwrap();
    let dup = f.try_clone().unwrap();
    let map = super::held::Mapping::new(&f, 4096);
    map.set(0, b'1');
    let s = m.status();
    assert_eq!(s["open_files"], 1, "{s}");
    m.flush();
    let s = m.status();
    assert_eq!(s["open_files"], 1, "after a flush: {s}");
    let out = asdfs(["unmount", m.target.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains(" 1 open file is still served"), "{said}");
    drop((map, dup, f));
    wait_gone(pid);
    assert_eq!(&fs::read(m.path("mapped")).unwrap()[..2], b"1a");
}

/// QA: a daemon in a child PID namespace that sees the host's /proc (`unshare --pid`
/// without a /proc of its own) does not count its own holds (the roots of replaced
/// overlays it keeps) as programs' open files: status says none, and an unmount ends the
/// session at once with the disk copy up to date.
#[test]
fn a_daemon_in_a_pid_namespace_does_not_count_its_own_holds() {
    let has_unshare = std::process::Command::new("unshare")
        .arg("--version")
        .output()
        .is_ok();
    if !fuse_available() || !nix::unistd::geteuid().is_root() || !has_unshare {
        return;
    }
    let mut m = Mount::prepare(|t| fs::write(t.join("f0"), b"x").unwrap());
    m.no_namespaces = Some(crate::harness::NAMESPACES.read_recursive());
    m.extra.extend(["--mode", "overlay"].map(String::from));
    // The namespace's first process stays (its end would kill the daemon) until unshare
    // is killed after the unmount.
    let mut ns = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "sh", "-c"])
        .arg(r#""$0" "$@" >&2 && echo mounted && exec sleep 600"#)
        .arg(crate::harness::BIN)
        .args(m.mount_args())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let stdout = ns.stdout.take().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    assert_eq!(line, "mounted\n");
    for n in ["a", "b"] {
        fs::write(m.path(n), n).unwrap();
        m.flush();
    }
    let s = m.status();
    assert_eq!(s["open_files"], 0, "{s}");
    let out = asdfs(["unmount", m.target.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let _ = ns.kill();
    let _ = ns.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("the disk copy is up to date"), "{said}");
    assert_eq!(fs::read(m.target.join("b")).unwrap(), b"b");
}

/// A file held for a moment when the unmount comes (a program just closing it, or a forked
/// child that holds a copy of a descriptor until its exec) does not leave the daemon serving
/// a detached overlay: the unmount waits that moment, writes everything and returns once the
/// daemon is gone, so the next mount of the target succeeds at once. Failed before: the
/// answer was "still served" and the next mount found the old daemon holding the store (the
/// model test's remount under load).
#[test]
fn a_file_held_for_a_moment_at_the_unmount_does_not_keep_the_daemon() {
    let Some(m) = overlay_mount(|d| fs::write(d.join("f"), "on disk\n").unwrap()) else {
        return;
    };
    let pid = m.daemon_pid().unwrap();
    fs::write(m.path("f"), "changed\n").unwrap();
    let script = format!("exec 3<'{}'; sleep 0.2", m.path("f").display());
    let mut holder = std::process::Command::new("sh")
        .args(["-c", &script])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(60));
    let out = asdfs(["unmount", m.target.to_str().unwrap()]);
    let _ = holder.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("still served"),
        "the unmount left the daemon serving: {stdout}"
    );
    let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = state
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next());
    assert!(
        matches!(state, None | Some("Z")),
        "the daemon (pid {pid}) outlived the unmount that answered: {stdout}"
    );
    assert!(!m.is_mounted());
    assert_eq!(fs::read_to_string(m.path("f")).unwrap(), "changed\n");
    m.mount();
    assert_eq!(fs::read_to_string(m.path("f")).unwrap(), "changed\n");
}

/// Tmpfs mounts, each with a file held open: new devices, numbered as the kernel frees
/// them. Unmounted (lazily) when dropped.
struct Tmpfses {
    dir: tempfile::TempDir,
    held: Vec<fs::File>,
    mounted: Vec<std::path::PathBuf>,
}

impl Drop for Tmpfses {
    fn drop(&mut self) {
        self.held.clear();
        for p in &self.mounted {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// QA finding 2 of the second round: after a daemon killed with a file held open, the
/// replaced overlay it recorded was gone once the file was closed, and its device numbers
/// went to other mounts. The daemon that took over counted the programs holding files of
/// those mounts as holding the overlay: its unmount said files were still served, and
/// left the store, the pin and the store's tmpfs behind.
#[test]
fn a_takeover_does_not_count_other_mounts_as_a_dead_daemons_old_overlay() {
    let Some(m) = overlay_mount(|t| fs::write(t.join("a"), b"disk").unwrap()) else {
        return;
    };
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.path("a"))
        .unwrap();
    f.write_all(b" held").unwrap();
    // The held file is carried into the fresh layer: the replaced overlay is recorded.
    m.flush();
    m.kill_daemon();
    drop(f);
    let mut t = Tmpfses {
        dir: tempfile::Builder::new()
            .prefix("asdfs-devs-")
            .tempdir_in("/tmp")
            .unwrap(),
        held: Vec::new(),
        mounted: Vec::new(),
    };
    for i in 0..30 {
        let p = t.dir.path().join(format!("m{i}"));
        fs::create_dir(&p).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &p,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .unwrap();
        t.mounted.push(p.clone());
        t.held.push(fs::File::create(p.join("f")).unwrap());
    }
    m.mount();
    let pid = m.daemon_pid().unwrap();
    let out = asdfs(["unmount", m.target.to_str().unwrap()]);
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!said.contains("still served"), "{said}");
    wait_gone(pid);
    assert_eq!(fs::read(m.path("a")).unwrap(), b"disk held");
    // No store directory left (the store root keeps the daemon's log).
    assert!(
        !m.store().join("private").exists(),
        "the store is left: {said}"
    );
}
