//! Power cuts at every durability point of a scripted workload (redb's crash test is the
//! model): after each cut, and for every state the disk may have kept, recovery must give
//! exactly the state of one completed flush, and never an older one than a flush that
//! returned success.

use crate::common::{CTX, Fixture, scratch};
use crate::simdisk::{Durable, Picture, SimDisk, picture, side_names};
use crate::uppers::{self, Uppers};
use asdfs::flush::{Synced, recover_disk};
use asdfs::overlay::flush::OverlayFlusher;
use asdfs::store::attrs::XATTR_CREATE;
use asdfs::store::namespace::NewKind;
use asdfs::store::types::SetAttr;
use std::ffi::OsStr;
use std::sync::Arc;

fn initial_disk() -> SimDisk {
    let d = SimDisk::new();
    d.put_dir("docs");
    d.put_file("docs/readme", b"read me");
    d.put_file("docs/notes", b"notes v1");
    d.put_dir("logs");
    d.put_file("logs/app.log", b"line 1\n");
    d.put_file("db", &vec![5u8; 20_000]);
    d
}

fn over(sim: Arc<SimDisk>) -> Fixture {
    let tmp = scratch();
    std::fs::create_dir_all(tmp.path().join("disk/target")).unwrap();
    Fixture::open_wrapped(tmp, false, move |_real| sim)
}

fn append(f: &Fixture, path: &str, data: &[u8]) {
    let id = f.node(path).ino;
    let size = f.store.getattr(id).unwrap().attr.size;
    let fh = f.store.open(crate::common::CTX, id, true, false).unwrap();
    f.store.write(CTX, fh, size, data).unwrap();
    f.store.release(fh).unwrap();
}

/// The scripted changes, in three batches; a flush follows each.
fn batch(f: &Fixture, n: usize) {
    let root = f.node("").ino;
    let name = OsStr::new;
    match n {
        0 => {
            f.write_file("", "new.txt", b"created in RAM");
            append(f, "logs/app.log", b"line 2\n");
            f.store
                .make(CTX, root, name("cache"), NewKind::Dir, 0o700, 0)
                .unwrap();
            f.write_file("cache", "blob", &vec![1u8; 70_000]);
            f.store
                .rename(root, name("docs"), root, name("documents"), 0)
                .unwrap();
            f.store
                .link(f.node("db").ino, f.node("cache").ino, name("db-link"))
                .unwrap();
            f.store
                .make(
                    CTX,
                    root,
                    name("current"),
                    NewKind::Symlink(b"logs/app.log"),
                    0o777,
                    0,
                )
                .unwrap();
            let sa = SetAttr {
                mode: Some(0o600),
                ..Default::default()
            };
            f.store
                .setattr(CTX, f.node("documents/readme").ino, sa)
                .unwrap();
            f.store
                .setxattr(
                    CTX,
                    f.node("new.txt").ino,
                    name("user.tag"),
                    b"v1",
                    XATTR_CREATE,
                )
                .unwrap();
        }
        1 => {
            append(f, "db", b"appended through one name");
            let docs = f.node("documents").ino;
            f.store
                .rename(docs, name("notes"), root, name("new.txt"), 0)
                .unwrap();
            f.store.unlink(f.node("cache").ino, name("blob")).unwrap();
            f.store
                .rename(
                    root,
                    name("logs"),
                    root,
                    name("cache"),
                    libc::RENAME_EXCHANGE,
                )
                .unwrap();
            append(f, "cache/app.log", b"line 3\n");
        }
        _ => {
            let logs = f.node("logs").ino;
            f.store.unlink(logs, name("db-link")).unwrap();
            f.store.rmdir(root, name("logs")).unwrap();
            f.store
                .rename(
                    root,
                    name("cache"),
                    f.node("documents").ino,
                    name("logs"),
                    0,
                )
                .unwrap();
            f.write_file("documents", "big", &vec![2u8; 200_000]);
            f.store.unlink(root, name("db")).unwrap();
        }
    }
}

/// Runs the workload; returns the acknowledged generation (the last flush that returned
/// success) and stops at the first failure.
fn run(f: &Fixture) -> u64 {
    let mut acked = 0;
    for n in 0..3 {
        batch(f, n);
        match f.flusher.flush() {
            Ok(r) => acked = r.generation,
            Err(_) => break,
        }
    }
    acked
}

/// The disk after each generation, without power cuts; and how many durability points the
/// whole workload has.
fn expected() -> (Vec<Picture>, u64) {
    let sim = Arc::new(initial_disk());
    let mut pics = vec![picture(&sim.everything())];
    let f = over(sim.clone());
    for n in 0..3 {
        batch(&f, n);
        f.flusher.flush().unwrap();
        pics.push(picture(&sim.everything()));
    }
    assert_eq!(
        side_names(&sim.everything()),
        vec!["generation".to_string()]
    );
    (pics, sim.points())
}

fn recover(state: Durable) -> (Picture, Vec<String>) {
    let disk = SimDisk::from_durable(state);
    let r = recover_disk(&disk).unwrap_or_else(|e| panic!("recovery failed: {e:#}"));
    assert_eq!(
        r.salvaged, None,
        "a power cut left a journal recovery could not complete"
    );
    let generation = r.generation;
    let after = disk.everything();
    let _ = generation;
    (picture(&after), side_names(&after))
}

#[test]
fn recovery_after_a_power_cut_at_any_point_gives_one_whole_flush() {
    let (pics, points) = expected();
    every_cut(&pics, points, initial_disk, |sim| run(&over(sim)));
}

/// The same with the overlay planner: three upper layers flushed in turn.
#[test]
fn recovery_after_a_power_cut_at_any_point_gives_one_whole_flush_of_an_upper_layer() {
    let Some(uppers) = Uppers::make() else {
        return;
    };
    let sim = Arc::new(uppers::initial_disk());
    let mut pics = vec![picture(&sim.everything())];
    let f = OverlayFlusher::new(sim.clone(), 0);
    for i in 0..uppers.dirs.len() {
        uppers.flush(&f, i).unwrap();
        pics.push(picture(&sim.everything()));
    }
    assert_eq!(
        side_names(&sim.everything()),
        vec!["generation".to_string()]
    );
    let points = sim.points();
    every_cut(&pics, points, uppers::initial_disk, |sim| uppers.run(sim));
}

fn write_at(f: &Fixture, path: &str, off: u64, data: &[u8]) {
    let fh = f
        .store
        .open(crate::common::CTX, f.node(path).ino, true, false)
        .unwrap();
    f.store.write(CTX, fh, off, data).unwrap();
    f.store.release(fh).unwrap();
}

/// fsync in sync mode (design.md §6.3): a flush, then fsyncs of single files; those a flush
/// wrote are written in place, one in a new directory by a flush. `acked` is called after
/// each step that succeeded. Returns the number of steps acknowledged and what each fsync
/// did; stops at the first failure.
fn fsync_run(f: &Fixture, acked: &mut dyn FnMut()) -> (u64, Vec<Synced>) {
    let root = f.node("").ino;
    let mut done = Vec::new();
    f.write_file("", "wal", b"frame 0");
    append(f, "db", b"appended");
    if f.flusher.flush().is_err() {
        return (0, done);
    }
    acked();
    let steps: [&dyn Fn(); 5] = [
        &|| write_at(f, "wal", 0, b"frame 1"),
        &|| {
            append(f, "wal", b", frame 2");
            f.write_file("", "other", b"not fsynced");
        },
        &|| {
            f.store
                .make(CTX, root, OsStr::new("fresh"), NewKind::Dir, 0o755, 0)
                .unwrap();
            f.write_file("fresh", "x", b"in a new directory");
        },
        &|| write_at(f, "fresh/x", 3, b"NEW"),
        &|| write_at(f, "db", 0, &[6u8; 5000]),
    ];
    let paths = ["wal", "wal", "fresh/x", "fresh/x", "db"];
    for (i, (step, path)) in steps.iter().zip(paths).enumerate() {
        step();
        match f.flusher.fsync(f.node(path).ino) {
            Ok(s) => done.push(s),
            Err(_) => return (i as u64 + 1, done),
        }
        acked();
    }
    (steps.len() as u64 + 1, done)
}

#[test]
fn fsync_in_place_survives_a_power_cut_at_any_point() {
    // The disk after each acknowledged step, without power cuts.
    let sim = Arc::new(initial_disk());
    let mut pics = vec![picture(&sim.everything())];
    let f = over(sim.clone());
    let (acked, done) = fsync_run(&f, &mut || pics.push(picture(&sim.everything())));
    assert_eq!(acked, 6);
    assert_eq!(
        done.iter()
            .map(|s| matches!(s, Synced::InPlace(_)))
            .collect::<Vec<_>>(),
        [true, true, false, true, true],
        "which fsyncs wrote in place: {done:?}"
    );
    assert!(
        !pics[3].0.contains_key("/other"),
        "an fsync in place wrote another file"
    );
    let points = sim.points();
    drop(f);
    every_cut(&pics, points, initial_disk, |sim| {
        fsync_run(&over(sim), &mut || {}).0
    });
}

/// Cuts the power at each of the `points` durability points of `run` (which returns the
/// acknowledged generation) on a fresh `initial` disk; every state that may survive must
/// recover to one of `pics`, no older than the acknowledged flush.
fn every_cut(
    pics: &[Picture],
    points: u64,
    initial: fn() -> SimDisk,
    run: impl Fn(Arc<SimDisk>) -> u64,
) {
    assert!(
        points > 20,
        "the workload has only {points} durability points"
    );
    let mut checked = 0;
    for cut in 1..=points {
        let sim = Arc::new(initial());
        sim.cut_power_at(cut);
        let acked = run(sim.clone());
        let survivors = sim
            .survivors()
            .unwrap_or_else(|| panic!("cut {cut}: the power never went out"));
        for (i, state) in survivors.into_iter().enumerate() {
            let (pic, side) = recover(state);
            let generation = pics.iter().position(|p| *p == pic);
            let Some(generation) = generation else {
                panic!(
                    "cut at point {cut}, surviving state {i}: the disk is not the state of any flush:\n{pic:#?}"
                );
            };
            assert!(
                generation as u64 >= acked,
                "cut {cut}/{i}: flush {acked} returned success but the disk is at {generation}"
            );
            assert!(
                generation as u64 <= acked + 1,
                "cut {cut}/{i}: generation {generation} after acked {acked}"
            );
            assert!(
                side.iter().all(|n| n == "generation"),
                "cut {cut}/{i}: leftovers {side:?}"
            );
            checked += 1;
        }
    }
    eprintln!("power cuts: {points} points, {checked} surviving states recovered");
}
