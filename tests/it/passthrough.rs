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
        let st = m.status();
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
    let writer = {
        let (path, stop) = (m.path("f"), stop.clone());
        std::thread::spawn(move || {
            let f = fs::File::create(path).unwrap();
            let mut v = 0u8;
            while !stop.load(Ordering::SeqCst) {
                v = v.wrapping_add(1);
                f.write_at(&vec![v; 16 << 20], 0).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    for round in 0..20 {
        m.flush();
        let data = fs::read(m.disk_copy().join("f")).unwrap();
        if let Some(first) = data.first() {
            assert!(
                data.iter().all(|b| b == first),
                "flush {round} wrote a torn file"
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
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
