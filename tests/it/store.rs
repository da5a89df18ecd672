//! The store and the flush, driven without a mount over a real directory.

use crate::common::{CTX, Fixture};
use asdfs::backing::{Backing, DirItem, DiskStat, Loc, Meta, NewContent, XattrList};
use asdfs::store::namespace::NewKind;
use asdfs::store::types::{Kind, Ts};
use std::ffi::OsStr;
use std::fs;
use std::io;

#[test]
fn new_files_and_dirs_reach_disk_on_flush() {
    let f = Fixture::new();
    let root = f.node("").ino;
    f.store
        .make(CTX, root, OsStr::new("d"), NewKind::Dir, 0o755, 0)
        .unwrap();
    f.write_file("d", "a", b"hello");
    f.write_file("", "b", b"world");
    assert!(
        !f.target().join("d").exists(),
        "nothing on disk before the flush"
    );
    let rep = f.flusher.flush().unwrap();
    assert_eq!(rep.generation, 1);
    assert_eq!(fs::read(f.target().join("d/a")).unwrap(), b"hello");
    assert_eq!(fs::read(f.target().join("b")).unwrap(), b"world");
    // Nothing left behind in the side directory but the generation.
    let side: Vec<_> = fs::read_dir(f.tmp.path().join("disk/.target-asdfs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(side, vec![std::ffi::OsString::from("generation")]);
    // A second flush with nothing changed does nothing.
    assert_eq!(f.flusher.flush().unwrap().steps, 0);
}

#[test]
fn files_from_disk_are_read_lazily_and_changes_written_back() {
    let f = Fixture::new();
    fs::create_dir(f.target().join("sub")).unwrap();
    fs::write(f.target().join("sub/x"), b"on disk").unwrap();
    fs::write(f.target().join("y"), b"keep me").unwrap();
    assert_eq!(f.read_file("sub/x"), b"on disk");
    // Rename a directory, change a file in it, delete another file.
    let root = f.node("").ino;
    f.store
        .rename(root, OsStr::new("sub"), root, OsStr::new("moved"), 0)
        .unwrap();
    let x = f.node("moved/x").ino;
    let fh = f.store.open(crate::common::CTX, x, true, false).unwrap();
    f.store.write(CTX, fh, 0, b"ON").unwrap();
    f.store.release(fh).unwrap();
    f.store.unlink(root, OsStr::new("y")).unwrap();
    f.flusher.flush().unwrap();
    assert!(!f.target().join("sub").exists());
    assert!(!f.target().join("y").exists());
    assert_eq!(fs::read(f.target().join("moved/x")).unwrap(), b"ON disk");
}

#[test]
fn a_killed_daemon_store_is_taken_over() {
    let f = Fixture::new();
    fs::write(f.target().join("old"), b"1").unwrap();
    let root = f.node("").ino;
    f.store
        .make(CTX, root, OsStr::new("dir"), NewKind::Dir, 0o700, 0)
        .unwrap();
    f.write_file("dir", "new", b"fresh");
    f.store
        .rename(
            root,
            OsStr::new("old"),
            f.node("dir").ino,
            OsStr::new("renamed"),
            0,
        )
        .unwrap();
    // "Kill" the daemon: drop everything without flushing, keep the tmpfs store.
    let Fixture {
        tmp,
        store,
        flusher,
    } = f;
    drop(flusher);
    drop(store);
    let g = Fixture::open_with(tmp, true);
    assert_eq!(g.read_file("dir/new"), b"fresh");
    assert_eq!(g.read_file("dir/renamed"), b"1");
    g.flusher.flush().unwrap();
    assert_eq!(fs::read(g.target().join("dir/renamed")).unwrap(), b"1");
    assert_eq!(fs::read(g.target().join("dir/new")).unwrap(), b"fresh");
    assert!(!g.target().join("old").exists());
}

/// Issue 16: a listing from one directory handle returns each entry present throughout
/// exactly once while names are renamed and made, and ends; rewinding starts a new one.
#[test]
fn issue_16_a_listing_ends_where_the_directory_stood_when_it_began() {
    let f = Fixture::new();
    let root = f.node("").ino;
    for i in 0..10 {
        f.write_file("", &format!("f{i}"), b"");
    }
    let fh = f.store.opendir(root).unwrap();
    let list_from = |offset: u64, max: usize| {
        let mut got = Vec::new();
        f.store
            .readdir(root, fh, offset, false, |e, _| {
                got.push((e.cookie, e.name.clone()));
                got.len() >= max
            })
            .unwrap();
        got
    };
    let first = list_from(0, 6);
    for (_, name) in &first[2..] {
        let new = format!("r{}", name.to_string_lossy());
        f.store
            .rename(root, name, root, OsStr::new(&new), 0)
            .unwrap();
    }
    f.write_file("", "new", b"");
    let rest = list_from(first.last().unwrap().0, 100);
    let mut names: Vec<String> = first[2..]
        .iter()
        .chain(&rest)
        .map(|(_, n)| n.to_string_lossy().into_owned())
        .collect();
    names.sort();
    let want: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    assert_eq!(names, want);
    let again = list_from(0, 100);
    assert_eq!(again.len(), 2 + 11, "a rewound listing sees every name");
    f.store.releasedir(fh).unwrap();
}

/// Issue 16: `.` and `..` name a node by its id (what open_by_handle_at asks), until the
/// node is gone.
#[test]
fn issue_16_nodes_are_found_by_id_for_file_handles() {
    let f = Fixture::new();
    let root = f.node("").ino;
    f.store
        .make(CTX, root, OsStr::new("d"), NewKind::Dir, 0o755, 0)
        .unwrap();
    let file = f.write_file("d", "a", b"x");
    let d = f.node("d").ino;
    assert_eq!(f.store.lookup(file, OsStr::new(".")).unwrap().ino, file);
    assert_eq!(f.store.lookup(d, OsStr::new("..")).unwrap().ino, root);
    assert_eq!(f.store.lookup(file, OsStr::new("..")).unwrap().ino, d);
    f.store.unlink(d, OsStr::new("a")).unwrap();
    f.store.forget(file, u64::MAX);
    assert!(f.store.lookup(file, OsStr::new(".")).is_err());
    assert_ne!(f.store.handle_gen(), 0);
}

/// On a full tmpfs, changes are refused with ENOSPC while the store log still has room for
/// them and for its rewrite: every change a caller was told succeeded is in the log, a
/// takeover on the full tmpfs finds it, and the flush after works there too.
#[test]
fn a_full_store_refuses_changes_before_its_log_is_full() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: mounting a tmpfs needs root");
        return;
    }
    let tmp = crate::common::scratch();
    fs::create_dir_all(tmp.path().join("disk/target")).unwrap();
    let store_dir = tmp.path().join("store");
    fs::create_dir_all(&store_dir).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "asdfs-test"])
        .arg(&store_dir)
        .status()
        .unwrap();
    assert!(mounted.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(store_dir.clone());
    let f = Fixture::open(tmp);
    // Data fills the tmpfs (as programs' files would).
    let mut filler = fs::File::create(store_dir.join("filler")).unwrap();
    while std::io::Write::write_all(&mut filler, &[1u8; 4096]).is_ok() {}
    drop(filler);
    let root = f.node("").ino;
    let mut made = Vec::new();
    let refused = loop {
        let name = format!("{:0>200}", made.len());
        match f
            .store
            .make(CTX, root, OsStr::new(&name), NewKind::Dir, 0o755, 0)
        {
            Ok(_) => made.push(name),
            Err(e) => break e,
        }
        assert!(made.len() < 100_000, "the log never filled");
    };
    assert_eq!(refused, asdfs::error::Errno::ENOSPC);
    assert!(made.len() > 1, "the reserve took no change at all");
    // Removals, which give room back, are still taken.
    let gone = made.pop().unwrap();
    f.store.rmdir(root, OsStr::new(&gone)).unwrap();
    assert_eq!(f.store.summary().log_failures, 0, "an append failed");
    // Killed on the full tmpfs: the takeover rewrites the log in its reserve.
    let Fixture {
        tmp,
        store,
        flusher,
    } = f;
    drop(flusher);
    drop(store);
    let g = Fixture::open_with(tmp, true);
    for name in &made {
        assert!(g.node(name).ino.0 > 0);
    }
    assert!(g.store.lookup(g.node("").ino, OsStr::new(&gone)).is_err());
    // The flush rewrites the log on the full tmpfs, and changes are taken again.
    g.flusher.flush().unwrap();
    assert!(g.target().join(&made[made.len() - 1]).is_dir());
    g.store
        .make(
            CTX,
            g.node("").ino,
            OsStr::new("after"),
            NewKind::Dir,
            0o755,
            0,
        )
        .unwrap();
}

/// Issue 13: an operation's batch in the store log describes each node once (its last
/// state: a replay keeps the last record of a node), so an unlink or a rename writes and
/// serializes no record twice; a takeover still finds what they did.
#[test]
fn issue_13_a_log_batch_describes_each_node_once() {
    let f = Fixture::new();
    let root = f.node("").ino;
    f.store
        .make(CTX, root, OsStr::new("d"), NewKind::Dir, 0o755, 0)
        .unwrap();
    let d = f.node("d").ino;
    f.write_file("d", "a", b"1");
    f.write_file("d", "b", b"2");
    f.store
        .rename(d, OsStr::new("a"), root, OsStr::new("moved"), 0)
        .unwrap();
    f.store.unlink(d, OsStr::new("b")).unwrap();
    let log = fs::read(f.tmp.path().join("store/private/log")).unwrap();
    let mut batch: Vec<u64> = Vec::new();
    for line in log.split(|b| *b == b'\n') {
        if line.iter().all(|b| *b == 0 || b.is_ascii_whitespace()) {
            continue;
        }
        let rec: serde_json::Value = serde_json::from_slice(line).unwrap();
        if rec == "commit" {
            batch.clear();
        } else if let Some(id) = rec["node"]["id"].as_u64() {
            assert!(!batch.contains(&id), "node {id} twice in one batch");
            batch.push(id);
        }
    }
    let Fixture {
        tmp,
        store,
        flusher,
    } = f;
    drop(flusher);
    drop(store);
    let g = Fixture::open_with(tmp, true);
    assert_eq!(g.read_file("moved"), b"1");
    let d = g.node("d").ino;
    for gone in ["a", "b"] {
        assert!(
            g.store.lookup(d, OsStr::new(gone)).is_err(),
            "d/{gone} is back"
        );
    }
}

/// Runs a hook once, in the middle of the next flush: after its snapshot, while its objects
/// are staged and before its commit (what a program can do while a flush runs).
struct Midway {
    real: std::sync::OnceLock<std::sync::Arc<dyn Backing>>,
    hook: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Midway {
    fn inner(&self) -> &std::sync::Arc<dyn Backing> {
        self.real.get().expect("wrapped")
    }
}

impl Backing for Midway {
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
    fn read_data(&self, loc: &Loc, ino: Option<u64>, dst: &fs::File) -> io::Result<()> {
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
        let hook = self.hook.lock().unwrap().take();
        if let Some(h) = hook {
            h();
        }
        self.inner().sync_created(locs, dir)
    }
    fn write_in_place(&self, w: &asdfs::backing::InPlace<'_>) -> io::Result<Option<DiskStat>> {
        self.inner().write_in_place(w)
    }
}

/// The churn test's wedge, without a mount: a new directory holding a new file (and a new
/// subdirectory) is flushed while a program links the file elsewhere, moves the
/// subdirectory out and removes the directory. The flush commits them as of its snapshot, so
/// the store must still know the removed directory once it is on disk: it was forgotten,
/// the next flush found no disk name to link `l` from (skipped it, yet noted it as written)
/// and could not reach `c`'s old place, and from then on every flush failed its check
/// ("inode I is not at target:/l").
#[test]
fn a_new_directory_removed_while_a_flush_writes_it_leaves_no_wedge() {
    let tmp = crate::common::scratch();
    fs::create_dir_all(tmp.path().join("disk/target")).unwrap();
    let mid = std::sync::Arc::new(Midway {
        real: std::sync::OnceLock::new(),
        hook: std::sync::Mutex::new(None),
    });
    let m = mid.clone();
    let f = Fixture::open_wrapped(tmp, false, move |b| {
        m.real.set(b).ok();
        m
    });
    let root = f.node("").ino;
    let mkdir = |dir: &str, name: &str| {
        f.store
            .make(
                CTX,
                f.node(dir).ino,
                OsStr::new(name),
                NewKind::Dir,
                0o755,
                0,
            )
            .unwrap();
    };
    mkdir("", "d");
    mkdir("d", "sub");
    f.write_file("d", "f", b"linked");
    f.write_file("d/sub", "g", b"moved");
    let store = f.store.clone();
    let (x, d, sub) = (f.node("d/f").ino, f.node("d").ino, f.node("d/sub").ino);
    *mid.hook.lock().unwrap() = Some(Box::new(move || {
        let s = &store;
        s.link(x, root, OsStr::new("l")).unwrap();
        s.rename(d, OsStr::new("sub"), root, OsStr::new("c"), 0)
            .unwrap();
        s.unlink(d, OsStr::new("f")).unwrap();
        s.rmdir(root, OsStr::new("d")).unwrap();
        for id in [x, d, sub] {
            s.forget(id, u64::MAX);
        }
    }));
    f.flusher.flush().unwrap();
    assert!(mid.hook.lock().unwrap().is_none(), "the hook ran");
    let t = f.target();
    assert_eq!(
        fs::read(t.join("d/f")).unwrap(),
        b"linked",
        "as of the snapshot"
    );
    f.flusher.flush().unwrap();
    assert!(!t.join("d").exists());
    assert_eq!(fs::read(t.join("l")).unwrap(), b"linked");
    assert_eq!(fs::read(t.join("c/g")).unwrap(), b"moved");
    f.store
        .rename(root, OsStr::new("l"), root, OsStr::new("r"), 0)
        .unwrap();
    f.store
        .rename(root, OsStr::new("c"), root, OsStr::new("e"), 0)
        .unwrap();
    f.flusher.flush().unwrap();
    assert!(!t.join("l").exists() && !t.join("c").exists());
    assert_eq!(fs::read(t.join("r")).unwrap(), b"linked");
    assert_eq!(fs::read(t.join("e/g")).unwrap(), b"moved");
}

/// The safety net of issue 12: a plan that fails its check twice in a row (here: a file
/// the store believes on disk was deleted behind asdfs, then renamed in RAM) makes the
/// flusher check the names the plan concerned against the disk and write again, from RAM,
/// what is not there as the store believes, so the target never wedges.
#[test]
fn a_plan_that_keeps_failing_its_check_is_resynced_from_the_store() {
    let f = Fixture::new();
    fs::write(f.target().join("a"), b"in ram").unwrap();
    assert_eq!(f.read_file("a"), b"in ram");
    fs::remove_file(f.target().join("a")).unwrap();
    let root = f.node("").ino;
    f.store
        .rename(root, OsStr::new("a"), root, OsStr::new("b"), 0)
        .unwrap();
    let first = f.flusher.flush().unwrap_err();
    assert!(
        format!("{first:#}").contains("checking the flush plan"),
        "{first:#}"
    );
    let _ = f.flusher.flush();
    f.flusher.flush().unwrap();
    assert_eq!(fs::read(f.target().join("b")).unwrap(), b"in ram");
    assert!(!f.target().join("a").exists());
}

/// A read of a file not in RAM, while changed data fills the room, waits for the flush that
/// makes that data clean (and so evictable) even when the flush takes longer than a
/// writer's patience: with FUSE passthrough writers fill the tmpfs without asking, and a
/// read right after such a burst got ENOSPC (a read on tmpfs never fails for room).
#[test]
fn a_read_waits_for_a_slow_flush_to_make_room() {
    // As root's daemon has it: `private/` on a tmpfs of the limit's size.
    let tmp = crate::common::scratch();
    fs::create_dir_all(tmp.path().join("disk/target")).unwrap();
    let _own = crate::writeback::SmallFs::new(&tmp.path().join("store/private"), "8m");
    let f = Fixture::open(tmp);
    fs::write(f.target().join("big"), vec![7u8; 7 << 19]).unwrap();
    f.store.set_ram_limit(8 << 20);
    for i in 0..5 {
        f.write_file("", &format!("new{i}"), &vec![i as u8; 1 << 20]);
    }
    let started = std::time::Instant::now();
    let read = std::thread::scope(|s| {
        // The flush comes after 4 s, past the 3 s a writer waits.
        s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_secs(4));
            f.flusher.flush().unwrap();
        });
        let id = f.node("big").ino;
        let fh = f.store.open(CTX, id, false, false);
        let data = fh.and_then(|fh| {
            let d = f.store.read(fh, 0, 4 << 20);
            f.store.release(fh).unwrap();
            d
        });
        data.map(|d| d.len())
    });
    assert_eq!(
        read,
        Ok(7 << 19),
        "the read of 3.5 MiB after {:?} while 5 of 8 MiB were changed",
        started.elapsed()
    );
    assert_eq!(
        fs::read(f.target().join("new4")).unwrap(),
        vec![4u8; 1 << 20]
    );
}
