//! Upper layers as kernel overlayfs leaves them, for the tests that run the overlay
//! planner (`asdfs::overlay::plan`) without a mount: the power-cut and fault tests run the
//! same engine with both planners. The three layers, flushed in turn, hold hard links into
//! new directories, a new directory over an old one, and the removal of a directory that
//! held links.

use crate::simdisk::SimDisk;
use asdfs::backing::Backing;
use asdfs::flush::FlushReport;
use asdfs::overlay::flush::{Layer, OverlayFlusher};
use asdfs::overlay::upper::Upper;
use std::collections::HashMap;
use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The disk copy before the first flush.
pub fn initial_disk() -> SimDisk {
    let d = SimDisk::new();
    d.put_dir("docs");
    d.put_file("docs/readme", b"read me");
    d.put_file("docs/notes", b"notes v1");
    d.put_dir("logs");
    d.put_file("logs/app.log", b"line 1\n");
    d.put_dir("old");
    d.put_file("old/x", b"old x");
    d.put_file("db", &vec![5u8; 20_000]);
    d
}

/// The three upper layers, made once (a flush only reads them, and their times and inodes
/// must be the same for every run).
pub struct Uppers {
    _tmp: tempfile::TempDir,
    pub dirs: Vec<PathBuf>,
}

fn whiteout(p: &Path) {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    mknod(p, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).unwrap();
}

fn opaque(p: &Path) {
    xattr_set(p, asdfs::overlay::upper::OPAQUE, b"y");
}

fn xattr_set(p: &Path, name: &str, value: &[u8]) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: NUL-terminated strings and a valid buffer.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr {name} on {}", p.display());
}

impl Uppers {
    /// `None` without root (whiteouts and overlay's xattrs need it).
    pub fn make() -> Option<Uppers> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: upper layers need root");
            return None;
        }
        let tmp = tempfile::Builder::new()
            .prefix("asdfs-uppers-")
            .tempdir_in("/tmp")
            .unwrap();
        let dirs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("u{i}"))).collect();
        for d in &dirs {
            fs::create_dir(d).unwrap();
        }
        // Layer 0: new files in new directories, one linked from two of them; a changed
        // and a removed file in an old directory.
        let u = &dirs[0];
        fs::create_dir_all(u.join("a/b/c")).unwrap();
        fs::write(u.join("a/f"), b"y\n").unwrap();
        fs::hard_link(u.join("a/f"), u.join("a/b/c/g")).unwrap();
        fs::create_dir(u.join("docs")).unwrap();
        fs::write(u.join("docs/notes"), b"notes v2").unwrap();
        whiteout(&u.join("docs/readme"));
        fs::write(u.join("new.txt"), b"created in RAM").unwrap();
        fs::create_dir(u.join("logs")).unwrap();
        fs::write(u.join("logs/app.log"), b"line 1\nline 2\n").unwrap();
        // Layer 1: a new directory renamed over an old one (opaque, holding a new link
        // of a file from disk), and a link into another new directory.
        let u = &dirs[1];
        fs::create_dir(u.join("old")).unwrap();
        opaque(&u.join("old"));
        fs::create_dir(u.join("a")).unwrap();
        fs::write(u.join("a/f"), b"y\n").unwrap();
        fs::hard_link(u.join("a/f"), u.join("old/h")).unwrap();
        fs::create_dir_all(u.join("n/m")).unwrap();
        fs::write(u.join("n/m/file"), b"in n").unwrap();
        fs::hard_link(u.join("n/m/file"), u.join("n/l")).unwrap();
        fs::write(u.join("new.txt"), b"changed in RAM").unwrap();
        fs::hard_link(u.join("new.txt"), u.join("n/m/new-link")).unwrap();
        // Layer 2: the directory that held links goes, another one takes its links' place.
        let u = &dirs[2];
        whiteout(&u.join("a"));
        whiteout(&u.join("db"));
        fs::create_dir(u.join("docs")).unwrap();
        fs::write(u.join("docs/big"), vec![2u8; 200_000]).unwrap();
        fs::create_dir(u.join("n")).unwrap();
        whiteout(&u.join("n/m"));
        fs::create_dir(u.join("a2")).unwrap();
        opaque(&u.join("a2"));
        fs::write(u.join("a2/f"), b"z\n").unwrap();
        fs::hard_link(u.join("a2/f"), u.join("a2/g")).unwrap();
        Some(Uppers { _tmp: tmp, dirs })
    }

    fn open(&self, i: usize) -> Upper {
        let fd: OwnedFd = asdfs::overlay::layers::open_dir(&self.dirs[i]).unwrap();
        Upper::open(fd).unwrap()
    }

    /// Flushes layer `i` onto `disk` as the flush of a layer no program changes any more.
    pub fn flush(&self, f: &OverlayFlusher, i: usize) -> anyhow::Result<FlushReport> {
        let upper = self.open(i);
        let done = HashMap::new();
        let layer = Layer {
            upper: &upper,
            live: false,
            overlay: None,
            done: &done,
            held: &Default::default(),
        };
        f.flush(&layer, &|_, _| {}).map(|(r, _)| r)
    }

    /// Flushes the layers in turn onto `disk`; returns the generation of the last flush
    /// that returned success, stopping at the first failure.
    pub fn run(&self, disk: Arc<dyn Backing>) -> u64 {
        let generation = asdfs::flush::read_generation(disk.as_ref()).unwrap_or(0);
        let f = OverlayFlusher::new(disk, generation);
        let mut acked = 0;
        for i in 0..self.dirs.len() {
            match self.flush(&f, i) {
                Ok(r) => acked = r.generation,
                Err(_) => break,
            }
        }
        acked
    }
}
