//! fsync in sync mode without a mount, on a real disk directory (design.md §6.3): which
//! bytes are written in place, and what is left to a flush.

use crate::common::{CTX, Fixture};
use asdfs::flush::Synced;
use asdfs::store::types::{NodeId, SetAttr};
use std::ffi::OsStr;

fn write_at(f: &Fixture, id: NodeId, off: u64, data: &[u8]) {
    let fh = f.store.open(crate::common::CTX, id, true, false).unwrap();
    f.store.write(CTX, fh, off, data).unwrap();
    f.store.release(fh).unwrap();
}

fn on_disk(f: &Fixture, name: &str) -> Vec<u8> {
    std::fs::read(f.target().join(name)).unwrap()
}

#[test]
fn written_ranges_reach_the_disk_file_in_place() {
    let f = Fixture::new();
    f.store.track_writes(true);
    let id = f.write_file("", "wal", &vec![1u8; 50_000]);
    f.flusher.flush().unwrap();
    // No ranges known yet: compared, and the whole file counted.
    write_at(&f, id, 100, b"first");
    assert_eq!(f.flusher.fsync(id).unwrap(), Synced::InPlace(50_000));
    assert_eq!(on_disk(&f, "wal"), f.read_file("wal"));
    // Known now: only what was written since, also past the end.
    write_at(&f, id, 4000, b"second");
    write_at(&f, id, 60_000, b"past the end");
    assert_eq!(f.flusher.fsync(id).unwrap(), Synced::InPlace(6 + 12));
    assert_eq!(on_disk(&f, "wal"), f.read_file("wal"));
    assert_eq!(f.flusher.fsync(id).unwrap(), Synced::Clean);
    // A truncation changes attributes: a flush; the ranges are unknown after it, so the
    // next fsync compares the whole file.
    let sa = SetAttr {
        size: Some(10_000),
        ..Default::default()
    };
    f.store.setattr(CTX, id, sa).unwrap();
    write_at(&f, id, 20_000, b"after a hole");
    assert_eq!(f.flusher.fsync(id).unwrap(), Synced::Flushed);
    write_at(&f, id, 30, b"then");
    assert_eq!(f.flusher.fsync(id).unwrap(), Synced::InPlace(20_012));
    assert_eq!(on_disk(&f, "wal"), f.read_file("wal"));
    // Renamed: the name is new on disk, so a flush writes it.
    let root = f.node("").ino;
    f.store
        .rename(root, OsStr::new("wal"), root, OsStr::new("moved"), 0)
        .unwrap();
    write_at(&f, id, 0, b"moved");
    assert_eq!(f.flusher.fsync(id).unwrap(), Synced::Flushed);
    assert_eq!(on_disk(&f, "moved"), f.read_file("moved"));
}

#[test]
fn a_disk_file_linked_or_changed_behind_asdfs_is_left_to_a_flush() {
    let f = Fixture::new();
    let id = f.write_file("", "a", b"v1");
    f.flusher.flush().unwrap();
    // Linked elsewhere (as the hardlink backup links it): a write in place would show there.
    let link = f.tmp.path().join("link");
    std::fs::hard_link(f.target().join("a"), &link).unwrap();
    write_at(&f, id, 0, b"v2");
    assert_eq!(f.flusher.fsync(id).unwrap(), Synced::Flushed);
    assert_eq!(std::fs::read(&link).unwrap(), b"v1");
    assert_eq!(on_disk(&f, "a"), b"v2");
    // Written behind asdfs: a flush, which keeps it as a conflict copy (design.md §6.2).
    std::fs::write(f.target().join("a"), b"from outside").unwrap();
    write_at(&f, id, 0, b"v3");
    assert_eq!(f.flusher.fsync(id).unwrap(), Synced::Flushed);
    assert_eq!(on_disk(&f, "a"), b"v3");
}
