//! FUSE passthrough (design.md §4.1): the machine's tmpfs gives the change signature it
//! relies on, the data path is switchable and shown, files open for writing stay dirty, and a
//! flush never writes a torn file while the kernel writes it.

use crate::harness::{Mount, fuse_available};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const DATA_PATH: &str = "ASDFS_DATA_PATH";

fn mount_with(data_path: &str) -> Mount {
    let mut m = Mount::prepare(|_| {});
    m.env.push((DATA_PATH.into(), data_path.into()));
    m.mount();
    m
}

fn sig(f: &fs::File) -> (u64, i64, i64, i64, i64) {
    let m = f.metadata().unwrap();
    (
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

/// What the torn-copy check stands on: on this machine's tmpfs, every write to a file whose
/// ctime was queried changes its signature, however quickly writes follow each other.
#[test]
fn tmpfs_ctime_changes_with_every_write_once_queried() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let f = fs::File::create(dir.path().join("f")).unwrap();
    let mut last = sig(&f);
    for i in 0..200u32 {
        f.write_at(&i.to_le_bytes(), 0).unwrap();
        let now = sig(&f);
        assert_ne!(
            now, last,
            "write {i} left the signature unchanged: coarse ctime"
        );
        last = now;
    }
}

/// `data_path = "auto"` (here `--data-path auto`) is passthrough where the kernel allows it
/// (root, Linux 6.9 or later, as on the machines that run these tests), the daemon's
/// elsewhere; it is the default unless `$ASDFS_DATA_PATH` says otherwise, and a bad value of
/// it is a one-line error.
#[test]
fn auto_is_passthrough_where_the_kernel_allows_it() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::prepare(|_| {});
    m.extra.extend(["--data-path".into(), "auto".into()]);
    m.mount();
    let auto = if nix::unistd::geteuid().is_root() {
        "passthrough"
    } else {
        "daemon"
    };
    assert_eq!(m.status()["data_path"], auto);
    m.unmount();
    let m = Mount::new();
    let default = match std::env::var(DATA_PATH).as_deref() {
        Ok("daemon") => "daemon",
        _ => auto,
    };
    assert_eq!(m.status()["data_path"], default);
    m.unmount();
    let mut env = m.env.clone();
    env.push((DATA_PATH.into(), "fast".into()));
    let out = crate::harness::asdfs_env(m.mount_args(), &env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !m.is_mounted());
    assert!(
        err.contains("ASDFS_DATA_PATH") && err.trim().lines().count() == 1,
        "{err}"
    );
}

/// With passthrough the daemon sees no WRITE requests: status counts the size of a file that
/// changed while open, where the daemon data path counts every byte written (here the same
/// MiB twice). Status names the data path either way.
#[test]
fn the_data_path_is_switchable_and_shown_in_status() {
    if !fuse_available() {
        return;
    }
    for (path, daemon_bytes) in [("passthrough", 1u64 << 20), ("daemon", 2 << 20)] {
        let m = mount_with(path);
        let f = fs::File::create(m.path("f")).unwrap();
        f.write_all_at(&[1u8; 1 << 20], 0).unwrap();
        f.write_all_at(&[1u8; 1 << 20], 0).unwrap();
        drop(f);
        // With passthrough the count comes with the release, which the kernel sends after
        // close(2) returned.
        let mut st = m.status();
        for _ in 0..100 {
            if st["bytes_written"] == daemon_bytes {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            st = m.status();
        }
        assert_eq!(st["data_path"], path, "{st}");
        assert_eq!(st["bytes_written"], daemon_bytes, "{path}: {st}");
        assert_eq!(fs::read(m.path("f")).unwrap(), vec![1u8; 1 << 20]);
        m.unmount();
    }
}

/// A file the kernel writes is dirty from its open until a flush after its last writer
/// closed: every flush while it is open writes it again.
#[test]
fn a_file_open_for_writing_is_written_by_every_flush() {
    if !fuse_available() {
        return;
    }
    for path in ["passthrough", "daemon"] {
        let m = mount_with(path);
        let disk = m.disk_copy().join("f");
        let mut f = fs::File::create(m.path("f")).unwrap();
        f.write_all(b"one").unwrap();
        m.flush();
        assert_eq!(fs::read(&disk).unwrap(), b"one", "{path}");
        f.write_all(b" two").unwrap();
        m.flush();
        assert_eq!(fs::read(&disk).unwrap(), b"one two", "{path}");
        f.set_len(3).unwrap();
        assert_eq!(fs::metadata(m.path("f")).unwrap().len(), 3, "{path}");
        f.write_at(b"!", 5).unwrap();
        drop(f);
        assert_eq!(fs::metadata(m.path("f")).unwrap().len(), 6, "{path}");
        m.flush();
        assert_eq!(fs::read(&disk).unwrap(), b"one\0\0!", "{path}");
        m.unmount();
    }
}

/// Sizes and times programs see come from the data file the kernel writes; a time set
/// explicitly wins over the data file's own.
#[test]
fn attributes_of_an_open_file_follow_its_writes() {
    if !fuse_available() {
        return;
    }
    let m = mount_with("passthrough");
    let f = fs::File::create(m.path("f")).unwrap();
    let t0 = fs::metadata(m.path("f")).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    f.write_at(&[7u8; 10_000], 0).unwrap();
    let md = fs::metadata(m.path("f")).unwrap();
    assert_eq!(md.len(), 10_000);
    assert!(
        md.modified().unwrap() > t0,
        "mtime did not move with a write"
    );
    let past = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    f.set_modified(past).unwrap();
    assert_eq!(fs::metadata(m.path("f")).unwrap().modified().unwrap(), past);
    drop(f);
    m.flush();
    let on_disk = fs::metadata(m.disk_copy().join("f")).unwrap();
    assert_eq!((on_disk.len(), on_disk.modified().unwrap()), (10_000, past));
    m.unmount();
}

/// Writes through a shared mapping reach the data file (and the disk after the last close).
#[test]
fn writes_through_a_mapping_reach_disk() {
    if !fuse_available() {
        return;
    }
    let m = mount_with("passthrough");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(m.path("f"))
        .unwrap();
    f.set_len(4096).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: a fresh shared mapping of 4096 bytes of a file of that size, unmapped below.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        std::ptr::copy_nonoverlapping(b"mapped".as_ptr(), p as *mut u8, 6);
        libc::munmap(p, 4096);
    }
    drop(f);
    m.flush();
    assert_eq!(&fs::read(m.disk_copy().join("f")).unwrap()[..6], b"mapped");
    m.unmount();
}

/// A writer rewrites a whole file with one byte value after another while flushes run: every
/// flushed copy holds one value only (the kernel's writes are not stopped by a freeze, so the
/// flush copies and checks, design.md §4.1).
#[test]
fn flushes_while_the_kernel_writes_never_write_a_torn_file() {
    if !fuse_available() {
        return;
    }
    let m = mount_with("passthrough");
    let stop = Arc::new(AtomicBool::new(false));
    let f = fs::File::create(m.path("f")).unwrap();
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut v = 0u8;
            while !stop.load(Ordering::SeqCst) {
                v = v.wrapping_add(1);
                f.write_at(&vec![v; 16 << 20], 0).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    // A flush that finds the file changing through every copy leaves it out (busy: its
    // previous version, here none, stays on disk); on a loaded machine some are.
    let (mut checked, mut round) = (0, 0);
    while checked < 5 && round < 60 {
        round += 1;
        m.flush();
        match fs::read(m.disk_copy().join("f")) {
            Ok(data) => {
                let first = data.first().copied();
                assert!(
                    data.iter().all(|b| Some(*b) == first),
                    "flush {round} wrote a torn file"
                );
                checked += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(checked > 0, "no flush in {round} wrote the file");
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    m.flush();
    let data = fs::read(m.disk_copy().join("f")).unwrap();
    assert_eq!(data.len(), 16 << 20);
    assert!(
        data.iter().all(|b| *b == data[0]),
        "the last flush wrote a torn file"
    );
    m.unmount();
}

/// O_DIRECT opens, hard links open under both names, and a file renamed and unlinked while
/// open, with each data path: what programs see and what reaches the disk.
#[test]
fn direct_io_links_and_renamed_open_files() {
    if !fuse_available() {
        return;
    }
    for path in ["passthrough", "daemon"] {
        let m = mount_with(path);
        use std::os::unix::fs::OpenOptionsExt;
        // O_DIRECT: an aligned buffer written and read back.
        let mut buf = vec![0u8; 8192];
        let off = buf.as_ptr().align_offset(4096);
        let block = &mut buf[off..off + 4096];
        block.fill(b'd');
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(m.path("direct"))
            .unwrap();
        f.write_all_at(block, 0).unwrap();
        block.fill(0);
        f.read_exact_at(block, 0).unwrap();
        assert!(
            block.iter().all(|&b| b == b'd'),
            "{path}: O_DIRECT read back"
        );
        drop(f);
        // Two names of one file, open under both.
        fs::write(m.path("a"), b"0000").unwrap();
        fs::hard_link(m.path("a"), m.path("b")).unwrap();
        let fa = fs::OpenOptions::new()
            .write(true)
            .open(m.path("a"))
            .unwrap();
        let fb = fs::File::open(m.path("b")).unwrap();
        fa.write_all_at(b"11", 0).unwrap();
        let mut got = [0u8; 4];
        fb.read_exact_at(&mut got, 0).unwrap();
        assert_eq!(
            &got, b"1100",
            "{path}: a write through one name seen through the other"
        );
        // Renamed, then the other name unlinked, while open.
        fs::rename(m.path("a"), m.path("c")).unwrap();
        fs::remove_file(m.path("b")).unwrap();
        fa.write_all_at(b"22", 2).unwrap();
        drop((fa, fb));
        m.flush();
        let disk = m.disk_copy();
        assert_eq!(fs::read(disk.join("c")).unwrap(), b"1122", "{path}");
        assert!(
            !disk.join("a").exists() && !disk.join("b").exists(),
            "{path}"
        );
        assert_eq!(
            fs::read(disk.join("direct")).unwrap(),
            vec![b'd'; 4096],
            "{path}"
        );
        m.unmount();
    }
}

/// Files rewritten (O_TRUNC, write, close) again and again while flushes run back to back
/// and other programs open and close them: every version reads back whole, and the disk ends
/// with the last ones. A release used to unpin the data file before the node's backing id was
/// dropped, so a flush could freeze the file in between and the next open get a copy while
/// the kernel kept writing the old file: the write was lost at the last close (the kill
/// test's empty file, design.md §4.1).
#[test]
fn files_rewritten_while_flushes_run_keep_every_write() {
    if !fuse_available() {
        return;
    }
    let m = mount_with("passthrough");
    let stop = Arc::new(AtomicBool::new(false));
    let flusher = {
        let (t, stop) = (m.target.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let out = crate::harness::asdfs(["flush", t.to_str().unwrap()]);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        })
    };
    let version = |f: usize, n: u32| format!("file {f} version {n}\n").repeat(1 + n as usize % 200);
    let (files, rounds) = (4, 1500u32);
    let (mut openers, mut writers) = (Vec::new(), Vec::new());
    for f in 0..files {
        let (p, stop) = (m.path(&format!("f{f}")), stop.clone());
        openers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                drop(fs::File::open(&p));
            }
        }));
        let p = m.path(&format!("f{f}"));
        writers.push(std::thread::spawn(move || {
            let mut lost = Vec::new();
            for n in 0..rounds {
                fs::write(&p, version(f, n)).unwrap();
                if fs::read_to_string(&p).unwrap() != version(f, n) {
                    lost.push((f, n));
                }
            }
            lost
        }));
    }
    let mut lost = Vec::new();
    for t in writers {
        lost.extend(t.join().unwrap());
    }
    stop.store(true, Ordering::SeqCst);
    for t in openers {
        t.join().unwrap();
    }
    flusher.join().unwrap();
    for f in 0..files {
        let got = fs::read_to_string(m.path(&format!("f{f}"))).unwrap();
        assert_eq!(got, version(f, rounds - 1), "the mount, f{f}");
    }
    m.unmount();
    assert!(
        lost.is_empty(),
        "versions that did not read back whole: {lost:?}"
    );
    for f in 0..files {
        let got = fs::read_to_string(m.disk_copy().join(format!("f{f}"))).unwrap();
        assert_eq!(got, version(f, rounds - 1), "the disk, f{f}");
    }
}

/// Version `v` of a file the busy-file test writes (4 MiB): `v` at both ends, and between
/// them a byte that alternates with `v`'s parity, so that a copy made in the middle of a
/// rewrite shows. Made by patching a buffer of the right parity.
fn busy_version(buf: &mut [u8], v: u64) {
    let n = buf.len();
    buf[..8].copy_from_slice(&v.to_le_bytes());
    buf[n - 8..].copy_from_slice(&v.to_le_bytes());
}

fn busy_buffer(v: u64) -> Vec<u8> {
    let mut b = vec![b'a' + (v % 2) as u8; 4 << 20];
    busy_version(&mut b, v);
    b
}

/// The version a copy holds, or `None` if it is torn (not one version throughout).
fn busy_check(data: &[u8]) -> Option<u64> {
    let v = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
    (data == busy_buffer(v)).then_some(v)
}

/// The store's data file that holds `content` (a file the kernel writes with passthrough).
fn data_file_holding(m: &Mount, content: &[u8]) -> fs::File {
    let dir = m.store().join("private/data");
    for e in fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if fs::read(&p).is_ok_and(|d| d == content) {
            return fs::OpenOptions::new().write(true).open(p).unwrap();
        }
    }
    panic!("no data file in {} holds the content", dir.display());
}

/// Files rewritten without pause while flushes run: one on disk before the mount and one
/// new, both open through the mount (so the kernel writes their data files). A flush whose
/// copies all changed leaves the file out: the disk keeps its previous complete version
/// (the new file stays absent), status lists it, and a flush after the writer stopped
/// writes the last version. The writers write the data files directly, as the kernel's
/// passthrough does, so that nothing between them and the data file (a request the kernel
/// sends the daemon first, design.md §4.1) can wait for the flush's copies.
#[test]
fn a_file_that_keeps_changing_keeps_its_previous_version_on_disk() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::prepare(|t| fs::write(t.join("old"), busy_buffer(0)).unwrap());
    m.env.push((DATA_PATH.into(), "passthrough".into()));
    m.mount();
    let mut opened = Vec::new();
    let mut direct = Vec::new();
    for name in ["old", "new"] {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(m.path(name))
            .unwrap();
        let first = busy_buffer(1);
        f.write_all_at(&first, 0).unwrap();
        direct.push(data_file_holding(&m, &first));
        opened.push(f);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = direct
        .into_iter()
        .map(|f| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut bufs = [busy_buffer(0), busy_buffer(1)];
                let mut v = 1;
                while !stop.load(Ordering::SeqCst) {
                    v += 1;
                    let b = &mut bufs[(v % 2) as usize];
                    busy_version(b, v);
                    // One write(2): a version is complete once it returns.
                    assert_eq!(f.write_at(b, 0).unwrap(), b.len());
                }
                v
            })
        })
        .collect();
    let (mut busy_seen, mut versions) = (0, Vec::new());
    // A copy can be stable when the writer gets no CPU meanwhile: flush until one was not.
    for round in 0..40 {
        if busy_seen > 0 && round >= 4 {
            break;
        }
        m.flush();
        let old = fs::read(m.disk_copy().join("old")).unwrap();
        let v = busy_check(&old);
        assert!(
            v.is_some(),
            "flush {round} wrote a torn copy of a busy file"
        );
        versions.push(v);
        if let Ok(new) = fs::read(m.disk_copy().join("new")) {
            // Empty: created, not yet written.
            assert!(
                new.is_empty() || busy_check(&new).is_some(),
                "flush {round}: torn new file ({} bytes)",
                new.len()
            );
        }
        let st = m.status();
        let busy: Vec<_> = st["busy_files"].as_array().unwrap().iter().collect();
        if busy.iter().any(|p| p == &"old" || p == &"new") {
            busy_seen += 1;
            let text = crate::harness::asdfs(["status", m.target.to_str().unwrap()]);
            let text = String::from_utf8_lossy(&text.stdout).into_owned();
            assert!(text.contains("busy files"), "{text}");
        }
    }
    stop.store(true, Ordering::SeqCst);
    let last: Vec<u64> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    drop(opened);
    assert!(
        busy_seen > 0,
        "no flush found the file busy (versions on disk: {versions:?})"
    );
    m.flush();
    assert_eq!(m.status()["busy_files"].as_array().unwrap().len(), 0);
    for (name, v) in ["old", "new"].iter().zip(last) {
        let got = fs::read(m.disk_copy().join(name)).unwrap();
        assert_eq!(busy_check(&got), Some(v), "{name}: the last version");
    }
    m.unmount();
}

/// Two files open for writing, a version written to one and then to the other without
/// pause: every flush writes them as of one instant, so the disk never has the second newer
/// than the first, nor the first more than one version ahead (design.md §4.1: all files the
/// kernel writes are checked again after all were copied). The writer writes the data files
/// directly, as in the busy-file test, so that writes do not wait for the flush.
#[test]
fn files_open_for_writing_are_flushed_as_of_one_instant() {
    if !fuse_available() {
        return;
    }
    let m = mount_with("passthrough");
    let version = crate::harness::instant_version;
    let mut opened = Vec::new();
    let mut direct = Vec::new();
    for (i, name) in ["first", "second"].into_iter().enumerate() {
        let f = fs::File::create(m.path(name)).unwrap();
        let v = version(1000 + i as u64);
        f.write_all_at(&v, 0).unwrap();
        direct.push(data_file_holding(&m, &v));
        opened.push(f);
    }
    for f in &direct {
        f.write_all_at(&version(0), 0).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut v = 0;
            while !stop.load(Ordering::SeqCst) {
                v += 1;
                for f in &direct {
                    f.write_all_at(&version(v), 0).unwrap();
                }
            }
        })
    };
    let seen = crate::harness::flushes_of_one_instant(&m, 40, 10);
    assert!(
        seen.len() >= 3,
        "too few flushes wrote both files: {seen:?}"
    );
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    drop(opened);
    m.unmount();
}

mod stop;
mod takeover;
