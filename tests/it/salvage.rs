//! Issue 12: a committed flush that a running daemon has to salvage (design.md §7). FUSE
//! mode's store was rebased onto the journal at its commit, so it believes what the skipped
//! steps would have placed is on disk: it must check that against the disk and write it
//! again at the next flush (a verified resync), not lose it.

use crate::common::{Fixture, scratch};
use asdfs::backing::{Backing, DirItem, DiskStat, InPlace, Loc, Meta, NewContent, XattrList};
use asdfs::store::types::{Kind, Ts};
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

/// The real disk, but the first `fails` renames to `to` fail with EIO (a disk error the
/// flush keeps its journal for).
struct RenameFails {
    real: OnceLock<Arc<dyn Backing>>,
    to: Loc,
    fails: AtomicU32,
}

impl RenameFails {
    fn inner(&self) -> &Arc<dyn Backing> {
        self.real.get().expect("wrapped")
    }
}

impl Backing for RenameFails {
    fn stat(&self, loc: &Loc) -> io::Result<DiskStat> {
        self.inner().stat(loc)
    }
    fn read_dir(&self, loc: &Loc) -> io::Result<Vec<DirItem>> {
        self.inner().read_dir(loc)
    }
    fn read_link(&self, loc: &Loc) -> io::Result<Vec<u8>> {
        self.inner().read_link(loc)
    }
    fn read_xattrs(&self, loc: &Loc) -> io::Result<XattrList> {
        self.inner().read_xattrs(loc)
    }
    fn read_data(&self, loc: &Loc, ino: Option<u64>, dst: &File) -> io::Result<()> {
        self.inner().read_data(loc, ino, dst)
    }
    fn read_file(&self, loc: &Loc) -> io::Result<Vec<u8>> {
        self.inner().read_file(loc)
    }
    fn create(&self, loc: &Loc, c: NewContent<'_>, meta: &Meta) -> io::Result<u64> {
        self.inner().create(loc, c, meta)
    }
    fn make_dir(&self, loc: &Loc) -> io::Result<()> {
        self.inner().make_dir(loc)
    }
    fn rename(&self, from: &Loc, to: &Loc) -> io::Result<()> {
        if *to == self.to
            && self
                .fails
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.inner().rename(from, to)
    }
    fn link(&self, from: &Loc, to: &Loc) -> io::Result<()> {
        self.inner().link(from, to)
    }
    fn remove(&self, loc: &Loc) -> io::Result<()> {
        self.inner().remove(loc)
    }
    fn set_meta(&self, loc: &Loc, kind: Kind, meta: &Meta) -> io::Result<()> {
        self.inner().set_meta(loc, kind, meta)
    }
    fn set_times(&self, loc: &Loc, a: Ts, m: Ts) -> io::Result<()> {
        self.inner().set_times(loc, a, m)
    }
    fn sync_dir(&self, loc: &Loc) -> io::Result<()> {
        self.inner().sync_dir(loc)
    }
    fn write_file(&self, loc: &Loc, bytes: &[u8]) -> io::Result<()> {
        self.inner().write_file(loc, bytes)
    }
    fn create_unsynced(&self, loc: &Loc, c: NewContent<'_>, meta: &Meta) -> io::Result<u64> {
        self.inner().create_unsynced(loc, c, meta)
    }
    fn sync_created(&self, locs: &[Loc], dir: &Loc) -> io::Result<()> {
        self.inner().sync_created(locs, dir)
    }
    fn write_in_place(&self, w: &InPlace<'_>) -> io::Result<Option<DiskStat>> {
        self.inner().write_in_place(w)
    }
}

/// A flush commits `new/`, `new/file` and `top`; placing `new/file` fails with EIO, so
/// the journal stays pending. Then the disk copy changes behind asdfs (`new` is removed),
/// and the pending journal can never be completed: the next flush salvages it. What it
/// could not place is still in RAM and must reach the disk at that flush.
#[test]
fn issue_12_a_salvaged_flush_is_written_again_from_the_store() {
    salvaged_flush_written_again(|new| std::fs::remove_dir(new).unwrap(), None);
}

/// The same when a file took the directory's place behind asdfs: that file is kept in the
/// side directory, and the store's directory takes its place.
#[test]
fn issue_12_a_salvaged_flush_is_written_again_over_what_took_its_place() {
    salvaged_flush_written_again(
        |new| {
            std::fs::remove_dir(new).unwrap();
            std::fs::write(new, b"put there behind asdfs").unwrap();
        },
        Some(b"put there behind asdfs"),
    );
}

/// A fixture whose flush of `new/`, `new/file` and `top` is committed and pending (EIO
/// placing `new/file`).
fn pending() -> Fixture {
    let tmp = scratch();
    std::fs::create_dir_all(tmp.path().join("disk/target")).unwrap();
    std::fs::write(tmp.path().join("disk/target/keep"), b"old").unwrap();
    let fault = Arc::new(RenameFails {
        real: OnceLock::new(),
        to: Loc::target("new/file"),
        fails: AtomicU32::new(1),
    });
    let wrapper = fault.clone();
    let f = Fixture::open_wrapped(tmp, false, move |real| {
        let _ = wrapper.real.set(real);
        wrapper
    });
    let root = f.node("").ino;
    f.store
        .make(
            crate::common::CTX,
            root,
            std::ffi::OsStr::new("new"),
            asdfs::store::namespace::NewKind::Dir,
            0o750,
            0,
        )
        .unwrap();
    f.write_file("new", "file", b"placed by the salvaged flush's retry");
    f.write_file("", "top", b"top");
    let err = f.flusher.flush().expect_err("the injected EIO");
    assert!(f.flusher.has_pending(), "{err:#}");
    f
}

fn salvaged_flush_written_again(behind: impl FnOnce(&std::path::Path), kept: Option<&[u8]>) {
    let f = pending();
    let disk = f.target();
    assert!(disk.join("new").is_dir() && !disk.join("new/file").exists());
    // Behind asdfs: the pending journal's step into `new` can never run now.
    behind(&disk.join("new"));

    f.flusher.flush().expect("the flush after a salvage");
    assert!(!f.flusher.has_pending());
    let salvaged = f.flusher.ledger().salvaged().expect("the ledger tells");
    assert!(salvaged.contains("could not be completed"), "{salvaged}");
    // The store still serves it, and the disk copy has it now.
    assert_eq!(
        f.read_file("new/file"),
        b"placed by the salvaged flush's retry"
    );
    assert_eq!(
        std::fs::read(disk.join("new/file")).unwrap(),
        b"placed by the salvaged flush's retry",
        "what the salvaged flush skipped never reached the disk"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(disk.join("new"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o750
    );
    assert_eq!(std::fs::read(disk.join("top")).unwrap(), b"top");
    assert_eq!(std::fs::read(disk.join("keep")).unwrap(), b"old");
    let aside = f.tmp.path().join("disk/.target-asdfs/salvaged.behind.0");
    assert_eq!(std::fs::read(&aside).ok().as_deref(), kept);
    // Nothing is left to write, and a later flush has nothing to do.
    assert_eq!(f.flusher.flush().unwrap().steps, 0);
}

/// The same when RAM pressure evicted the clean data of `new/file` before the salvage: the
/// store cannot write it, so it leaves the tree (its data is in the salvaged stage), and
/// flushes go on instead of failing their check at every attempt.
#[test]
fn issue_12_a_salvaged_file_whose_data_left_ram_does_not_stop_flushes() {
    let f = pending();
    let disk = f.target();
    f.store.set_ram_limit(1);
    assert_eq!(f.read_file("keep"), b"old");
    std::fs::remove_dir(disk.join("new")).unwrap();
    f.flusher.flush().expect("the flush after a salvage");
    f.flusher.flush().expect("and the next");
    assert!(disk.join("new").is_dir(), "the directory is written again");
    assert_eq!(std::fs::read(disk.join("top")).unwrap(), b"top");
    let side = f.tmp.path().join("disk/.target-asdfs");
    let kept: Vec<Vec<u8>> = std::fs::read_dir(side.join("salvaged.stage.1"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read(e.path()).unwrap_or_default())
        .collect();
    assert!(
        kept.iter()
            .any(|d| d == b"placed by the salvaged flush's retry"),
        "the file's data is not kept"
    );
}
