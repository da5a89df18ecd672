//! I/O errors and a full disk in the middle of a flush, injected at every disk operation in
//! turn: the changes stay in RAM, the failure is reported, no file on disk is ever half
//! written, and once the disk works again the next flush writes everything.

use crate::common::{CTX, Fixture};
use asdfs::backing::{Backing, DirItem, DiskStat, Loc, Meta, NewContent, XattrList};
use asdfs::store::namespace::NewKind;
use asdfs::store::types::Ts;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Passes reads through; from the Nth change on, every change fails with `errno`.
struct Faulty {
    real: std::sync::OnceLock<Arc<dyn Backing>>,
    countdown: AtomicI64,
    errno: i32,
}

impl Faulty {
    fn new(errno: i32) -> Arc<Faulty> {
        Arc::new(Faulty {
            real: std::sync::OnceLock::new(),
            countdown: AtomicI64::new(i64::MAX),
            errno,
        })
    }
    fn inner(&self) -> &Arc<dyn Backing> {
        self.real.get().expect("wrapped")
    }
    fn tick(&self) -> io::Result<()> {
        let left = self.countdown.fetch_sub(1, Ordering::SeqCst);
        if left <= 0 && left > i64::MIN / 2 {
            Err(io::Error::from_raw_os_error(self.errno))
        } else {
            Ok(())
        }
    }
    fn heal(&self) {
        self.countdown.store(i64::MAX, Ordering::SeqCst);
    }
}

impl Backing for Faulty {
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
        self.tick()?;
        self.inner().create(loc, c, meta)
    }
    fn make_dir(&self, loc: &Loc) -> io::Result<()> {
        self.tick()?;
        self.inner().make_dir(loc)
    }
    fn rename(&self, from: &Loc, to: &Loc) -> io::Result<()> {
        self.tick()?;
        self.inner().rename(from, to)
    }
    fn link(&self, from: &Loc, to: &Loc) -> io::Result<()> {
        self.tick()?;
        self.inner().link(from, to)
    }
    fn remove(&self, loc: &Loc) -> io::Result<()> {
        self.tick()?;
        self.inner().remove(loc)
    }
    fn set_meta(&self, loc: &Loc, kind: asdfs::store::types::Kind, meta: &Meta) -> io::Result<()> {
        self.tick()?;
        self.inner().set_meta(loc, kind, meta)
    }
    fn set_times(&self, loc: &Loc, a: Ts, m: Ts) -> io::Result<()> {
        self.tick()?;
        self.inner().set_times(loc, a, m)
    }
    fn sync_dir(&self, loc: &Loc) -> io::Result<()> {
        self.tick()?;
        self.inner().sync_dir(loc)
    }
    fn write_file(&self, loc: &Loc, bytes: &[u8]) -> io::Result<()> {
        self.tick()?;
        self.inner().write_file(loc, bytes)
    }
    fn create_unsynced(&self, loc: &Loc, c: NewContent<'_>, meta: &Meta) -> io::Result<u64> {
        self.tick()?;
        self.inner().create_unsynced(loc, c, meta)
    }
    fn sync_created(&self, locs: &[Loc], dir: &Loc) -> io::Result<()> {
        self.tick()?;
        self.inner().sync_created(locs, dir)
    }
    fn write_in_place(&self, w: &asdfs::backing::InPlace<'_>) -> io::Result<Option<DiskStat>> {
        self.tick()?;
        self.inner().write_in_place(w)
    }
}

/// Regular files (content) and other entries (a marker) of a directory tree.
fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
                out.insert(rel + "/", Vec::new());
            } else if m.is_file() {
                out.insert(rel, std::fs::read(&p).unwrap());
            } else {
                out.insert(rel, b"<other>".to_vec());
            }
        }
    }
    out
}

fn prepare() -> tempfile::TempDir {
    let f = Fixture::new();
    let t = f.target();
    std::fs::write(t.join("a"), b"old a").unwrap();
    std::fs::write(t.join("b"), b"old b").unwrap();
    std::fs::create_dir(t.join("d")).unwrap();
    std::fs::write(t.join("d/x"), b"old x").unwrap();
    let Fixture { tmp, .. } = f;
    tmp
}

/// The changes every run makes in RAM.
fn workload(f: &Fixture) {
    let root = f.node("").ino;
    let a = f.node("a").ino;
    let fh = f.store.open(crate::common::CTX, a, true, true).unwrap();
    f.store
        .write(CTX, fh, 0, b"new a, longer than before")
        .unwrap();
    f.store.release(fh).unwrap();
    f.write_file("", "c", &vec![9u8; 300_000]);
    f.store
        .rename(root, OsStr::new("d"), root, OsStr::new("e"), 0)
        .unwrap();
    f.store.unlink(root, OsStr::new("b")).unwrap();
    f.store
        .make(CTX, root, OsStr::new("f"), NewKind::Dir, 0o750, 0)
        .unwrap();
    f.write_file("f", "y", b"new y");
    f.store
        .make(
            CTX,
            root,
            OsStr::new("l"),
            NewKind::Symlink(b"e/x"),
            0o777,
            0,
        )
        .unwrap();
}

fn final_tree() -> BTreeMap<String, Vec<u8>> {
    let f = Fixture::open(prepare());
    workload(&f);
    f.flusher.flush().unwrap();
    snapshot(&f.target())
}

fn fail_at_every_step(errno: i32) {
    let want = final_tree();
    let initial = {
        let tmp = prepare();
        snapshot(&tmp.path().join("disk/target"))
    };
    let mut failures = 0;
    for n in 0.. {
        let faulty = Faulty::new(errno);
        let wrapper = faulty.clone();
        let f = Fixture::open_wrapped(prepare(), false, move |real| {
            let _ = wrapper.real.set(real);
            wrapper
        });
        workload(&f);
        faulty.countdown.store(n, Ordering::SeqCst);
        let r = f.flusher.flush();
        let Err(e) = r else {
            assert_eq!(
                snapshot(&f.target()),
                want,
                "a flush that did not hit the fault"
            );
            break;
        };
        failures += 1;
        let msg = format!("{e:#}");
        assert!(
            msg.contains(&io::Error::from_raw_os_error(errno).to_string()),
            "step {n}: {msg}"
        );
        // No half-written file: each file on disk is its old or its new version.
        let now = snapshot(&f.target());
        for (path, data) in &now {
            let old = initial.get(path);
            let new = want.get(path);
            assert!(
                old == Some(data) || new == Some(data),
                "step {n}: {path} is neither old nor new"
            );
        }
        assert!(f.flusher.ledger().failures() >= 1);
        // The changes are still in RAM.
        assert_eq!(f.read_file("a"), b"new a, longer than before");
        faulty.heal();
        f.flusher
            .flush()
            .unwrap_or_else(|e| panic!("step {n}: the retry failed: {e:#}"));
        assert_eq!(snapshot(&f.target()), want, "step {n}: after the retry");
        let side = f.tmp.path().join("disk/.target-asdfs");
        let left: Vec<_> = std::fs::read_dir(side)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("generation")],
            "step {n}: leftovers"
        );
    }
    assert!(failures > 10, "the fault was hit at only {failures} steps");
}

#[test]
fn an_io_error_at_any_step_of_a_flush_loses_nothing() {
    fail_at_every_step(libc::EIO);
}

#[test]
fn a_full_disk_at_any_step_of_a_flush_loses_nothing() {
    fail_at_every_step(libc::ENOSPC);
}

/// The same with the overlay planner: the three upper layers of `uppers.rs` flushed in
/// turn onto a disk whose changes fail from the Nth on; each failed flush is retried once
/// the disk works again, and the end is the same as without faults.
fn fail_at_every_step_of_upper_layers(errno: i32) {
    use crate::simdisk::{picture, side_names};
    use crate::uppers::{self, Uppers};
    use asdfs::overlay::flush::OverlayFlusher;
    let Some(u) = Uppers::make() else {
        return;
    };
    let sim = Arc::new(uppers::initial_disk());
    let f = OverlayFlusher::new(sim.clone(), 0);
    let mut pics = vec![picture(&sim.everything())];
    for i in 0..u.dirs.len() {
        u.flush(&f, i).unwrap();
        pics.push(picture(&sim.everything()));
    }
    let want = pics.last().unwrap().clone();
    let mut failures = 0;
    for n in 0.. {
        let sim = Arc::new(uppers::initial_disk());
        let faulty = Faulty::new(errno);
        let _ = faulty.real.set(sim.clone());
        let f = OverlayFlusher::new(faulty.clone(), 0);
        faulty.countdown.store(n, Ordering::SeqCst);
        let mut hit = false;
        for i in 0..u.dirs.len() {
            let Err(e) = u.flush(&f, i) else {
                continue;
            };
            failures += 1;
            let msg = format!("{e:#}");
            assert!(
                msg.contains(&io::Error::from_raw_os_error(errno).to_string()),
                "step {n}, layer {i}: {msg}"
            );
            // No half-written file: each is a version some flush wrote.
            let (now, _) = picture(&sim.everything());
            let files = now
                .iter()
                .filter(|(_, item)| item.0 == asdfs::store::types::Kind::File);
            for (path, item) in files {
                assert!(
                    pics.iter().any(|(p, _)| p.get(path) == Some(item)),
                    "step {n}, layer {i}: {path} is no version a flush wrote"
                );
            }
            hit = true;
            faulty.heal();
            u.flush(&f, i)
                .unwrap_or_else(|e| panic!("step {n}, layer {i}: the retry failed: {e:#}"));
        }
        // A fault in the removal of a finished journal fails no flush: the next one, with
        // nothing to write, removes it.
        hit |= faulty.countdown.load(Ordering::SeqCst) < 0;
        faulty.heal();
        u.flush(&f, u.dirs.len() - 1)
            .unwrap_or_else(|e| panic!("step {n}: the last flush failed: {e:#}"));
        assert_eq!(picture(&sim.everything()), want, "step {n}: the end");
        assert_eq!(
            side_names(&sim.everything()),
            vec!["generation".to_string()],
            "step {n}: leftovers"
        );
        if !hit {
            break;
        }
    }
    assert!(failures > 10, "the fault was hit at only {failures} steps");
}

#[test]
fn an_io_error_at_any_step_of_an_upper_layer_flush_loses_nothing() {
    fail_at_every_step_of_upper_layers(libc::EIO);
}

#[test]
fn a_full_disk_at_any_step_of_an_upper_layer_flush_loses_nothing() {
    fail_at_every_step_of_upper_layers(libc::ENOSPC);
}
