//! The room a store counts against (design.md §2.1): the smaller of its RAM limit and what
//! its tmpfs holds, and with FUSE passthrough — writes the daemon does not see — clean files
//! still leave RAM and changed data is still flushed early, so that writers get room.

use crate::harness::{Mount, fuse_available};
use crate::writeback::SmallFs;
use std::fs;
use std::io::Write;

const MIB: u64 = 1 << 20;

/// A store on a volatile tmpfs of `size` (mode 0711 as a store root wants), mounted with
/// `extra` and the data path `data_path`.
fn on_small_tmpfs(size: &str, extra: &[&str], data_path: &str) -> (Mount, SmallFs) {
    let mut m = Mount::prepare(|_| {});
    let small = SmallFs::new(&m.volatile.path().join("asdfs"), size);
    m.extra = extra.iter().map(|s| s.to_string()).collect();
    m.env.push(("ASDFS_DATA_PATH".into(), data_path.into()));
    m.mount();
    assert_eq!(m.status()["data_path"], data_path);
    (m, small)
}

/// Writes up to `mib` MiB of `byte` to `name`, one MiB a write: how many MiB were written,
/// and the error that stopped the writer, if one did.
fn write_mib(m: &Mount, name: &str, mib: u64, byte: u8) -> (u64, Option<std::io::Error>) {
    let mut f = match fs::File::create(m.path(name)) {
        Ok(f) => f,
        Err(e) => return (0, Some(e)),
    };
    let chunk = vec![byte; MIB as usize];
    for i in 0..mib {
        if let Err(e) = f.write_all(&chunk) {
            return (i, Some(e));
        }
    }
    (mib, None)
}

/// Waits up to 5 s for status to count at least one of `ram.key` (the flush timer's poll
/// looks at the store every 250 ms).
fn counted(m: &Mount, key: &str) -> bool {
    for _ in 0..50 {
        if m.status()["ram"][key].as_u64().unwrap_or(0) >= 1 {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

/// F4: one writer fills the store (ENOSPC), a flush makes its file clean; a second writer's
/// 4 MiB must then all be written — the clean file leaves RAM — with either data path.
fn second_writer_gets_room(data_path: &str) {
    if !fuse_available() {
        return;
    }
    let (m, _small) = on_small_tmpfs("48m", &["--ram-limit", "40M"], data_path);
    // The store full of changed data: ENOSPC (never EIO), and a pressure flush starts.
    let (first, err) = write_mib(&m, "big", 100, 1);
    let err = err.expect("the store's 40 MiB cannot hold 100");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{data_path}: {err}");
    assert!(first >= 1, "{data_path}: the first writer wrote nothing");
    assert!(
        counted(&m, "pressure_flushes"),
        "{data_path}: {}",
        m.status()
    );
    m.flush();
    // With passthrough the first writer filled the tmpfs (the daemon's writes stop earlier,
    // at the room kept for reads); clean now, closed and past the high-water mark, the file
    // leaves RAM through the timer's poll, before any open.
    if data_path == "passthrough" {
        assert!(counted(&m, "evictions"), "{data_path}: {}", m.status());
    }
    let (second, err) = write_mib(&m, "victim", 4, 2);
    assert_eq!(
        second,
        4,
        "{data_path}: {err:?}: {}\n{}",
        m.status(),
        m.log_tail()
    );
    assert!(fs::read(m.path("victim")).unwrap() == vec![2u8; 4 * MIB as usize]);
    let st = m.status();
    assert!(
        st["ram"]["limit_bytes"].as_u64().unwrap() <= 40 * MIB,
        "{st}"
    );
    let big = fs::metadata(m.path("big")).unwrap().len();
    assert!(big >= first * MIB, "{big} of the {first} MiB written");
    m.unmount();
    assert!(fs::read(m.path("victim")).unwrap() == vec![2u8; 4 * MIB as usize]);
    let on_disk = fs::read(m.path("big")).unwrap();
    assert!(
        on_disk.len() as u64 == big && on_disk.iter().all(|&b| b == 1),
        "big on disk"
    );
}

#[test]
fn f4_a_second_writer_gets_room_from_clean_data_with_passthrough() {
    second_writer_gets_room("passthrough");
}

#[test]
fn f4_a_second_writer_gets_room_from_clean_data_through_the_daemon() {
    second_writer_gets_room("daemon");
}

/// F4: the default limit (a quarter of RAM) on a volatile tmpfs smaller than it: the store
/// counts against the tmpfs, so six files of 10 MiB, each closed after writing, fit in 48 MiB
/// through pressure flushes and eviction, with either data path.
fn a_large_limit_on_a_small_tmpfs(data_path: &str) {
    if !fuse_available() {
        return;
    }
    let (m, _small) = on_small_tmpfs("48m", &[], data_path);
    let st = m.status();
    let limit = st["ram"]["limit_bytes"].as_u64().unwrap();
    assert!(limit <= 48 * MIB, "status shows the effective limit: {st}");
    for i in 0..6u8 {
        let (n, err) = write_mib(&m, &format!("w{i}"), 10, i + 1);
        assert_eq!(
            n,
            10,
            "{data_path}: w{i}: {err:?}: {}\n{}",
            m.status(),
            m.log_tail()
        );
    }
    let st = m.status();
    assert!(st["ram"]["pressure_flushes"].as_u64().unwrap() >= 1, "{st}");
    assert!(st["ram"]["evictions"].as_u64().unwrap() >= 1, "{st}");
    m.unmount();
    for i in 0..6u8 {
        let got = fs::read(m.path(&format!("w{i}"))).unwrap();
        assert!(got == vec![i + 1; 10 * MIB as usize], "w{i} on disk");
    }
}

#[test]
fn f4_a_default_limit_on_a_small_tmpfs_evicts_and_flushes_with_passthrough() {
    a_large_limit_on_a_small_tmpfs("passthrough");
}

#[test]
fn f4_a_default_limit_on_a_small_tmpfs_evicts_and_flushes_through_the_daemon() {
    a_large_limit_on_a_small_tmpfs("daemon");
}

/// F4: a user's store on a shared tmpfs (no tmpfs of its own) with a limit larger than the
/// tmpfs counts against what was free on it plus what the store holds, never the whole
/// tmpfs: another user's 8 MiB on a 24 MiB tmpfs leave the store about 16 MiB.
#[test]
fn f4_a_store_on_a_shared_tmpfs_counts_against_its_free_space() {
    let tmp = crate::common::scratch();
    let _shared = SmallFs::new(&tmp.path().join("store"), "24m");
    fs::write(tmp.path().join("store/other"), vec![7u8; 8 * MIB as usize]).unwrap();
    fs::create_dir_all(tmp.path().join("disk/target")).unwrap();
    let f = crate::common::Fixture::open(tmp);
    f.store.set_ram_limit(6 << 30);
    let limit = f.store.ram_limit();
    assert!(
        (12 * MIB..=16 * MIB).contains(&limit),
        "the effective limit is what the tmpfs can still hold: {limit}"
    );
    assert_eq!(f.store.summary().ram_limit, limit, "status shows it");
    // A limit below that is kept as it is.
    f.store.set_ram_limit(4 * MIB);
    assert_eq!(f.store.ram_limit(), 4 * MIB);
}
