//! A RAM budget (issue 14): statfs reports the disk underneath, and clean files leave RAM
//! when the store fills, so that a target larger than its RAM keeps working (design.md §2.1).

use crate::harness::{Mount, asdfs, fuse_available};
use crate::writeback::{SmallDisk, SmallFs, scopeguard};
use std::fs;
use std::path::Path;

const MIB: u64 = 1 << 20;

/// The bytes of file `i` of a test tree: different in every file and at every offset.
fn content(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (j / 4093 + i * 7 + j % 251) as u8)
        .collect()
}

/// Unmounts whatever is left mounted under a volatile directory (a store's own tmpfs, after
/// a failed test whose daemon kept its store).
struct Leftovers(std::path::PathBuf);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let table = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut under: Vec<&str> = table
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| Path::new(m).starts_with(&self.0))
            .collect();
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in under {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(m)
                .status();
        }
    }
}

fn space(p: &Path) -> (u64, u64) {
    let s = nix::sys::statvfs::statvfs(p).unwrap();
    let unit = s.fragment_size();
    (s.blocks() * unit, s.blocks_available() * unit)
}

#[test]
fn issue_14_statfs_reports_the_disk_less_the_changes_not_yet_on_it() {
    if !fuse_available() {
        return;
    }
    let disk = SmallDisk::new("asdfs-statfs-", "24m");
    let (target, vol) = (disk.target.clone(), &disk.vol);
    let _leftovers = Leftovers(vol.path().to_path_buf());
    let t = target.to_str().unwrap();
    let out = asdfs([
        "mount",
        t,
        "--volatile",
        vol.path().to_str().unwrap(),
        "--flush-interval",
        "1h",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let guard = scopeguard(t);
    let (disk_size, _) = space(&disk.fs.0);
    let (size, _) = space(&target);
    assert_eq!(size, disk_size, "df on the target shows the disk's size");
    assert_ne!(size, space(vol.path()).0, "not the RAM store's tmpfs");
    fs::write(target.join("new"), vec![5u8; 4 << 20]).unwrap();
    let (_, free) = space(&target);
    let (_, disk_free) = space(&disk.fs.0);
    assert!(
        free + 4 * MIB <= disk_free,
        "the 4 MiB not yet flushed are not free on the disk: {free} vs {disk_free}"
    );
    drop(guard);
    assert_eq!(fs::read(target.join("new")).unwrap(), vec![5u8; 4 << 20]);
}

/// A store on a 4 MiB tmpfs of its own over a 40 MiB tree.
fn big_tree(files: usize) -> (Mount, SmallFs) {
    let m = Mount::prepare(|t| {
        for i in 0..files {
            let dir = t.join(format!("d{}", i % 4));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(format!("f{i}")), content(i, MIB as usize)).unwrap();
        }
    });
    let small = SmallFs::new(&m.volatile.path().join("asdfs"), "4m");
    m.mount();
    (m, small)
}

fn read_all(m: &Mount, files: usize) {
    for i in 0..files {
        let p = m.path(&format!("d{}/f{i}", i % 4));
        let got = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}\n{}", p.display(), m.log_tail()));
        assert!(got == content(i, MIB as usize), "{} differs", p.display());
    }
}

#[test]
fn issue_14_a_tree_ten_times_the_store_is_read_twice_intact() {
    if !fuse_available() {
        return;
    }
    let (m, small) = big_tree(40);
    read_all(&m, 40);
    read_all(&m, 40);
    let st = m.status();
    assert!(
        st["ram"]["evictions"].as_u64().unwrap_or(0) >= 30,
        "clean files left RAM: {st}"
    );
    m.unmount();
    read_all(&m, 40);
    drop(small);
}

#[test]
fn issue_14_evicted_files_survive_changes_a_kill_and_a_takeover() {
    if !fuse_available() {
        return;
    }
    let (m, small) = big_tree(12);
    read_all(&m, 12);
    // A changed file is never evicted; a file renamed or with a changed mode is read again
    // from its place on disk.
    fs::write(m.path("d0/f0"), b"changed").unwrap();
    fs::rename(m.path("d1/f1"), m.path("moved")).unwrap();
    read_all_but(&m, 12, &[0, 1]);
    assert_eq!(fs::read(m.path("d0/f0")).unwrap(), b"changed");
    assert!(fs::read(m.path("moved")).unwrap() == content(1, MIB as usize));
    m.kill_daemon();
    let out = asdfs(m.mount_args());
    assert!(
        out.status.success(),
        "takeover failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        m.log_tail()
    );
    read_all_but(&m, 12, &[0, 1]);
    assert_eq!(fs::read(m.path("d0/f0")).unwrap(), b"changed");
    assert!(fs::read(m.path("moved")).unwrap() == content(1, MIB as usize));
    m.unmount();
    assert_eq!(fs::read(m.path("d0/f0")).unwrap(), b"changed");
    assert!(fs::read(m.path("moved")).unwrap() == content(1, MIB as usize));
    drop(small);
}

fn read_all_but(m: &Mount, files: usize, skip: &[usize]) {
    for i in (0..files).filter(|i| !skip.contains(i)) {
        let p = m.path(&format!("d{}/f{i}", i % 4));
        let got = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}\n{}", p.display(), m.log_tail()));
        assert!(got == content(i, MIB as usize), "{} differs", p.display());
    }
}

/// A target over a tree of `files` MiB, mounted with `--ram-limit limit`.
fn limited(files: usize, limit: &str) -> Mount {
    let mut m = Mount::prepare(|t| {
        for i in 0..files {
            let dir = t.join(format!("d{}", i % 4));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(format!("f{i}")), content(i, MIB as usize)).unwrap();
        }
    });
    m.extra = vec!["--ram-limit".into(), limit.into()];
    m.mount();
    m
}

/// The store's use as status reports it, checked against its limit.
fn within_limit(m: &Mount, limit: u64) {
    let st = m.status();
    let used = st["ram"]["used_bytes"].as_u64().unwrap();
    assert_eq!(st["ram"]["limit_bytes"].as_u64(), Some(limit), "{st}");
    assert!(
        used <= limit,
        "the store uses {used} bytes over its limit of {limit}: {st}"
    );
    if nix::unistd::geteuid().is_root() {
        let (size, free) = space(&m.store().join("private"));
        assert_eq!(
            size, limit,
            "root: the store is a tmpfs of the limit's size"
        );
        assert!(size - free <= limit);
    }
}

#[test]
fn issue_14_a_ram_limit_keeps_a_tree_ten_times_larger_readable() {
    if !fuse_available() {
        return;
    }
    let m = limited(40, "4M");
    for pass in 0..2 {
        for i in 0..40 {
            let p = m.path(&format!("d{}/f{i}", i % 4));
            let got = fs::read(&p).unwrap_or_else(|e| panic!("pass {pass}: {}: {e}", p.display()));
            assert!(got == content(i, MIB as usize), "{} differs", p.display());
            if i % 8 == 7 {
                within_limit(&m, 4 * MIB);
            }
        }
    }
    let st = m.status();
    assert!(st["ram"]["evictions"].as_u64().unwrap() >= 60, "{st}");
    let t = m.target.to_str().unwrap();
    let text = String::from_utf8(asdfs(["status", t]).stdout).unwrap();
    assert!(
        text.contains("RAM limit:") && text.contains("of 4.00 MiB") && text.contains("evicted"),
        "{text}"
    );
    let prom = asdfs(["status", "--format", "prometheus", t]).stdout;
    let prom = String::from_utf8(prom).unwrap();
    assert!(
        prom.contains("asdfs_ram_limit_bytes{") && prom.contains("asdfs_evictions_total{"),
        "{prom}"
    );
    let store = m.store();
    m.unmount();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(store.to_str().unwrap()),
        "the store's tmpfs is gone with the unmount"
    );
}

#[test]
fn issue_14_two_targets_with_their_own_limits_do_not_disturb_each_other() {
    if !fuse_available() {
        return;
    }
    let a = limited(4, "4M");
    let b = limited(24, "8M");
    // A holds 2 MiB of changes; B reads a tree three times its limit.
    fs::write(a.path("changed"), content(99, 2 * MIB as usize)).unwrap();
    for i in 0..24 {
        let got = fs::read(b.path(&format!("d{}/f{i}", i % 4))).unwrap();
        assert!(got == content(i, MIB as usize));
    }
    within_limit(&a, 4 * MIB);
    within_limit(&b, 8 * MIB);
    let sa = a.status();
    assert_eq!(
        sa["ram"]["evictions"].as_u64(),
        Some(0),
        "A lost nothing: {sa}"
    );
    for i in 0..4 {
        assert!(fs::read(a.path(&format!("d{}/f{i}", i % 4))).unwrap() == content(i, MIB as usize));
    }
    assert!(fs::read(a.path("changed")).unwrap() == content(99, 2 * MIB as usize));
    a.unmount();
    b.unmount();
    assert!(fs::read(a.path("changed")).unwrap() == content(99, 2 * MIB as usize));
}

#[test]
fn issue_14_writing_four_times_the_limit_succeeds_through_pressure_flushes() {
    write_four_times("daemon");
}

#[test]
fn issue_14_writing_four_times_the_limit_with_passthrough() {
    write_four_times("passthrough");
}

fn write_four_times(data_path: &str) {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::prepare(|_| {});
    m.extra = vec!["--ram-limit".into(), "4M".into()];
    m.env.push(("ASDFS_DATA_PATH".into(), data_path.into()));
    m.mount();
    assert_eq!(m.status()["data_path"], data_path);
    for i in 0..16 {
        fs::write(m.path(&format!("w{i}")), content(i, MIB as usize))
            .unwrap_or_else(|e| panic!("w{i}: {e}\n{}", m.log_tail()));
        if i % 4 == 3 {
            within_limit(&m, 4 * MIB);
        }
    }
    let st = m.status();
    assert!(st["ram"]["pressure_flushes"].as_u64().unwrap() >= 1, "{st}");
    // Reading back needs room for the files evicted meanwhile: with passthrough the last
    // writes can still fill the store (a read then waited for room and got ENOSPC now and
    // then, 1 run in 7, noted as open in issue 13); a flush makes all of it evictable.
    m.flush();
    for i in 0..16 {
        let got = fs::read(m.path(&format!("w{i}")))
            .unwrap_or_else(|e| panic!("w{i}: {e}\n{}", m.log_tail()));
        assert!(got == content(i, MIB as usize), "w{i} through the mount");
    }
    m.unmount();
    for i in 0..16 {
        let got = fs::read(m.path(&format!("w{i}"))).unwrap();
        assert!(got == content(i, MIB as usize), "w{i} on disk");
    }
}

#[test]
fn issue_14_a_full_disk_and_a_full_store_give_enospc_and_lose_nothing() {
    if !fuse_available() {
        return;
    }
    let disk = SmallDisk::new("asdfs-fulldisk-", "6m");
    let (target, vol) = (disk.target.clone(), &disk.vol);
    fs::write(target.join("old"), b"old").unwrap();
    let _leftovers = Leftovers(vol.path().to_path_buf());
    let t = target.to_str().unwrap();
    let v = vol.path().to_str().unwrap();
    let out = asdfs([
        "mount",
        t,
        "--volatile",
        v,
        "--flush-interval",
        "1h",
        "--ram-limit",
        "4M",
        "--backups",
        "no",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let guard = scopeguard(t);
    let mut written = Vec::new();
    let mut err = None;
    for i in 0..40 {
        match fs::write(target.join(format!("w{i}")), content(i, MIB as usize)) {
            Ok(()) => written.push(i),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let err = err.expect("40 MiB cannot fit a 6 MiB disk and a 4 MiB store");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(
        written.len() >= 4,
        "pressure flushes wrote some: {written:?}"
    );
    assert_eq!(fs::read(target.join("old")).unwrap(), b"old");
    // The administrator makes room on the disk (while the store is full of changes the disk
    // could not take, files it evicted cannot be read into RAM again: ENOSPC, not loss).
    let st = std::process::Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&disk.fs.0)
        .status()
        .unwrap();
    assert!(st.success());
    let out = asdfs(["flush", t]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for &i in &written {
        assert!(
            fs::read(target.join(format!("w{i}"))).unwrap() == content(i, MIB as usize),
            "w{i} as acknowledged"
        );
    }
    drop(guard);
    for &i in &written {
        let got = fs::read(target.join(format!("w{i}"))).unwrap();
        assert!(got == content(i, MIB as usize), "w{i} on disk");
    }
    assert_eq!(fs::read(target.join("old")).unwrap(), b"old");
}

#[test]
fn issue_14_deleting_a_file_from_disk_frees_its_ram_before_the_next_flush() {
    if !fuse_available() {
        return;
    }
    let m = Mount::with(|t| fs::write(t.join("old"), content(1, 2 * MIB as usize)).unwrap());
    fs::write(m.path("new"), content(2, 2 * MIB as usize)).unwrap();
    m.flush();
    // Both in RAM: one read from disk, one written and flushed; one more changed since.
    assert!(fs::read(m.path("old")).unwrap() == content(1, 2 * MIB as usize));
    fs::write(m.path("changed"), content(3, 2 * MIB as usize)).unwrap();
    m.flush();
    fs::write(m.path("changed"), content(4, 2 * MIB as usize)).unwrap();
    let before = m.status()["ram_bytes"].as_u64().unwrap();
    assert!(before >= 6 * MIB, "{before}");
    for f in ["old", "new", "changed"] {
        fs::remove_file(m.path(f)).unwrap();
    }
    let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let now = m.status()["ram_bytes"].as_u64().unwrap();
        if now < MIB {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "RAM still held after the deletions: {now} bytes"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    m.kill_daemon();
    let out = asdfs(m.mount_args());
    assert!(
        out.status.success(),
        "takeover: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["old", "new", "changed"] {
        assert!(!m.path(f).exists(), "{f} came back");
    }
    m.unmount();
    for f in ["old", "new", "changed"] {
        assert!(!m.path(f).exists(), "{f} is still on disk");
    }
}

/// Without a tmpfs of the limit's size (a user's daemon), the store keeps the limit by its
/// own count: driven without a mount, with changes, a rename, a kill and a takeover.
#[test]
fn issue_14_a_store_without_its_own_tmpfs_keeps_the_limit_by_its_own_count() {
    use crate::common::{CTX, Fixture};
    const N: usize = 24;
    const SIZE: usize = 256 << 10;
    let f = Fixture::new();
    for i in 0..N {
        fs::write(f.target().join(format!("f{i}")), content(i, SIZE)).unwrap();
    }
    f.store.set_ram_limit(2 * MIB);
    let check = |f: &Fixture, skip: &[usize]| {
        for i in (0..N).filter(|i| !skip.contains(i)) {
            assert!(f.read_file(&format!("f{i}")) == content(i, SIZE), "f{i}");
            let ram = f.store.summary().ram_bytes;
            assert!(ram <= 2 * MIB, "{ram} bytes in RAM after f{i}");
        }
    };
    check(&f, &[]);
    let fh = f
        .store
        .open(crate::common::CTX, f.node("f0").ino, true, false)
        .unwrap();
    f.store.write(CTX, fh, 0, b"changed").unwrap();
    f.store.release(fh).unwrap();
    let root = f.node("").ino;
    f.store
        .rename(
            root,
            std::ffi::OsStr::new("f1"),
            root,
            std::ffi::OsStr::new("moved"),
            0,
        )
        .unwrap();
    check(&f, &[0, 1]);
    assert!(f.store.summary().evictions >= (2 * N - 8) as u64);
    let changed = |f: &Fixture| {
        let mut want = content(0, SIZE);
        want[..7].copy_from_slice(b"changed");
        assert!(f.read_file("f0") == want, "the change survives");
        assert!(f.read_file("moved") == content(1, SIZE));
    };
    changed(&f);
    let Fixture {
        tmp,
        store,
        flusher,
    } = f;
    drop(flusher);
    drop(store);
    let g = Fixture::open_with(tmp, true);
    g.store.set_ram_limit(2 * MIB);
    changed(&g);
    check(&g, &[0, 1]);
    g.flusher.flush().unwrap();
    check(&g, &[0, 1]);
    changed(&g);
    assert!(!g.target().join("f1").exists());
}

/// Overlay mode: the kernel writes the upper layer, so the daemon cannot make writers wait;
/// its store has the limit's tmpfs and the timer flushes as soon as changes fill half of it.
#[test]
fn issue_14_overlay_mode_flushes_under_pressure_on_its_own_tmpfs() {
    if !fuse_available() {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "overlay tests need root in CI"
        );
        return;
    }
    let mut m = Mount::prepare(|_| {});
    m.no_namespaces = Some(crate::harness::NAMESPACES.read_recursive());
    m.extra
        .extend(["--mode", "overlay", "--ram-limit", "8M"].map(String::from));
    m.mount();
    assert_eq!(m.status()["mode"], "overlay", "overlay mode fell back");
    within_limit(&m, 8 * MIB);
    for i in 0..5 {
        fs::write(m.path(&format!("w{i}")), content(i, MIB as usize)).unwrap();
    }
    // Status during a flush shows the last measure (the layers are held), so the disk is
    // what says the pressure flush is done.
    let on_disk = |i: usize| fs::read(m.disk_copy().join(format!("w{i}"))).ok();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let st = m.status();
        let pressed = st["ram"]["pressure_flushes"].as_u64().unwrap_or(0) >= 1;
        if pressed && (0..5).all(|i| on_disk(i) == Some(content(i, MIB as usize))) {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "no pressure flush wrote the files: {st}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    m.unmount();
}

/// A user's store sits on the shared /dev/shm, with no tmpfs of its own: its log's reserve
/// was sized from that tmpfs (8 MiB) whatever the limit, so `status` of a target with an
/// 8 MiB limit showed 14 MiB used of 8 MiB. The reserve follows the limit (a sixteenth of
/// it), at once and after a takeover, and the store stays within its limit as status counts.
#[test]
fn issue_14_a_small_limit_shrinks_the_store_logs_reserve() {
    use crate::common::Fixture;
    const LIMIT: u64 = 8 * MIB;
    let f = Fixture::new();
    for i in 0..16 {
        fs::write(f.target().join(format!("f{i}")), content(i, MIB as usize)).unwrap();
    }
    // What status shows as the RAM used (`daemon/target.rs`).
    let used = |f: &Fixture| {
        let space = f.store.space();
        f.store.summary().ram_bytes + space.log_bytes + space.log_reserve
    };
    let check = |f: &Fixture, when: &str| {
        let reserve = f.store.space().log_reserve;
        assert!(
            reserve <= LIMIT / 16,
            "{when}: a reserve of {reserve} bytes for a limit of {LIMIT}"
        );
        for i in 0..16 {
            assert!(
                f.read_file(&format!("f{i}")) == content(i, MIB as usize),
                "f{i}"
            );
            let used = used(f);
            assert!(
                used <= LIMIT,
                "{when}: {used} bytes used of {LIMIT} after f{i}"
            );
        }
    };
    f.store.set_ram_limit(LIMIT);
    check(&f, "fresh");
    let Fixture {
        tmp,
        store,
        flusher,
    } = f;
    drop(flusher);
    drop(store);
    let g = Fixture::open_with(tmp, true);
    g.store.set_ram_limit(LIMIT);
    check(&g, "taken over");
}

/// Readers of clean files got ENOSPC while writers filled the store under a RAM limit: the
/// 10 % writers leave for reading files back in (800 KiB of 8 MiB) is less than one 1 MiB
/// file, and a read did not wait for the pressure flush as writers do. Two readers read a
/// 64 MiB tree while two writers write files of 1 KB-1 MiB (tmp + rename) and flushes run
/// every 0.3 s: no read fails, every byte is right, and every write that succeeded is on
/// disk after the unmount.
#[test]
fn issue_14_readers_get_no_enospc_while_writers_fill_a_limited_store() {
    use std::sync::atomic::{AtomicBool, Ordering};
    if !fuse_available() {
        return;
    }
    const FILES: usize = 64;
    let m = limited(FILES, "8M");
    let done = AtomicBool::new(false);
    let t = m.target.to_str().unwrap().to_string();
    let (last, write_errors) = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let _ = asdfs(["flush", &t]);
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
        });
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let (m, done) = (&m, &done);
                s.spawn(move || {
                    let mut last = std::collections::BTreeMap::new();
                    let mut errors = Vec::new();
                    let mut n = 0usize;
                    while !done.load(Ordering::Relaxed) {
                        let name = format!("w{w}-{}", n % 6);
                        let len = 1000 + (n * 337_651 + w * 99_991) % (MIB as usize - 1000);
                        let tmp = m.path(&format!(".{name}.tmp"));
                        let r = fs::write(&tmp, content(1000 + n, len))
                            .and_then(|()| fs::rename(&tmp, m.path(&name)));
                        match r {
                            Ok(()) => {
                                last.insert(name, (n, len));
                            }
                            Err(e) => errors.push(format!("{name} ({len} bytes): {e}")),
                        }
                        n += 1;
                    }
                    (last, errors)
                })
            })
            .collect();
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let m = &m;
                s.spawn(move || {
                    let mut failed = Vec::new();
                    for k in 0..2 * FILES {
                        let i = (k + r * FILES / 2) % FILES;
                        let p = m.path(&format!("d{}/f{i}", i % 4));
                        match fs::read(&p) {
                            Ok(got) => assert!(got == content(i, MIB as usize), "f{i} differs"),
                            Err(e) => failed.push(format!("f{i}: {e}")),
                        }
                    }
                    failed
                })
            })
            .collect();
        let failed: Vec<String> = readers
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        done.store(true, Ordering::Relaxed);
        let mut last = std::collections::BTreeMap::new();
        let mut errors = Vec::new();
        for h in writers {
            let (l, e) = h.join().unwrap();
            last.extend(l);
            errors.extend(e);
        }
        assert!(
            failed.is_empty(),
            "{} reads of clean files failed, e.g. {:?}\n{}",
            failed.len(),
            &failed[..failed.len().min(5)],
            m.log_tail()
        );
        (last, errors)
    });
    let st = m.status();
    within_limit(&m, 8 * MIB);
    assert!(!last.is_empty(), "no write succeeded: {write_errors:?}");
    eprintln!(
        "{} files written, {} writes failed {:?}; {st}",
        last.len(),
        write_errors.len(),
        &write_errors[..write_errors.len().min(3)]
    );
    m.unmount();
    for (name, (n, len)) in last {
        let got = fs::read(m.path(&name)).unwrap();
        assert!(got == content(1000 + n, len), "{name} on disk");
    }
}
