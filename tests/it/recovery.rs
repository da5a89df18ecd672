//! Issue 12: a committed flush that cannot be completed never stops a mount. Recovery
//! salvages it (design.md §7), the target mounts and serves its data, and status says what
//! happened.

use crate::harness::{Mount, fuse_available};
use asdfs::backing::Loc;
use asdfs::flush::{Journal, Step};
use std::fs;
use std::os::unix::fs::MetadataExt;

/// Puts a committed journal for the next generation into the side directory whose first
/// step cannot run: it moves a staged file into a directory the disk copy does not have.
fn plant_broken_journal(m: &Mount) -> u64 {
    plant_journal_into(m, "no-such-dir/x")
}

/// A committed journal for the next generation whose first step moves a staged file to
/// `to` in the target (which fails if its directory is missing).
fn plant_journal_into(m: &Mount, to: &str) -> u64 {
    let side = m.side();
    if !side.exists() {
        // A clean end removed it (nothing was left in it but the generation).
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new().mode(0o711).create(&side).unwrap();
    }
    let now: u64 =
        fs::read_to_string(side.join("generation")).map_or(0, |g| g.trim().parse().unwrap());
    let g = now + 1;
    let stage = side.join(Journal::stage_dir(g));
    fs::create_dir(&stage).unwrap();
    fs::write(stage.join("s1"), b"planted").unwrap();
    fs::write(stage.join("generation"), format!("{g}\n")).unwrap();
    let ino = |p: &str| fs::metadata(stage.join(p)).unwrap().ino();
    let j = Journal {
        generation: g,
        steps: vec![
            Step::Rename {
                from: Loc::side(format!("stage.{g}/s1")),
                to: Loc::target(to),
                ino: ino("s1"),
            },
            Step::Rename {
                from: Loc::side(format!("stage.{g}/generation")),
                to: Loc::side("generation"),
                ino: ino("generation"),
            },
        ],
        syncs: vec![],
    };
    fs::write(side.join(Journal::file_name(g)), j.encode()).unwrap();
    g
}

fn a_broken_committed_flush_still_mounts(overlay: bool) {
    if !fuse_available() || !nix::unistd::geteuid().is_root() {
        return;
    }
    let mut m = Mount::prepare(|t| fs::write(t.join("keep"), b"old").unwrap());
    if overlay {
        m.no_namespaces = Some(crate::harness::NAMESPACES.read_recursive());
        m.extra.extend(["--mode", "overlay"].map(String::from));
    }
    m.mount();
    fs::create_dir(m.path("new")).unwrap();
    fs::write(m.path("new/file"), b"flushed").unwrap();
    m.flush();
    fs::write(m.path("later"), b"in RAM only").unwrap();
    if overlay {
        // The upper layer in the store holds `later`, nothing else does.
        m.kill_daemon();
    } else {
        // FUSE mode's store log names the generation it describes; a journal made by
        // hand cannot be one the store committed, so start from a clean end.
        m.unmount();
    }
    let g = plant_broken_journal(&m);
    m.mount();
    assert_eq!(fs::read(m.path("keep")).unwrap(), b"old");
    assert_eq!(fs::read(m.path("new/file")).unwrap(), b"flushed");
    assert_eq!(fs::read(m.path("later")).unwrap(), b"in RAM only");
    let s = m.status();
    assert!(
        s["unclean_start"]
            .as_str()
            .is_some_and(|u| u.contains("could not be completed")),
        "status does not tell: {s}"
    );
    fs::write(m.path("after"), b"a later flush works").unwrap();
    m.flush();
    m.unmount();
    let disk = m.disk_copy();
    assert_eq!(fs::read(disk.join("later")).unwrap(), b"in RAM only");
    assert_eq!(
        fs::read(disk.join("after")).unwrap(),
        b"a later flush works"
    );
    assert_eq!(
        fs::read(m.side().join(format!("salvaged.stage.{g}/s1"))).unwrap(),
        b"planted",
        "what the broken step would have moved is not kept"
    );
}

#[test]
fn issue_12_a_committed_flush_that_cannot_be_completed_still_mounts_in_fuse_mode() {
    a_broken_committed_flush_still_mounts(false);
}

#[test]
fn issue_12_a_committed_flush_that_cannot_be_completed_still_mounts_in_overlay_mode() {
    a_broken_committed_flush_still_mounts(true);
}

/// FUSE mode, a takeover: the store a killed daemon left was rebased onto flush `g`, whose
/// journal recovery finds and cannot complete (it places `new/file`, but `new/` is not on
/// disk). The store believes `new/` is on disk; it must find that it is not, mount anyway,
/// serve what it holds of it and write it at the next flush (design.md §7). Before, the
/// takeover failed ("populating node"): no mount while the data existed.
#[test]
fn issue_12_a_salvaged_flush_under_a_taken_over_store_is_written_again() {
    if !fuse_available() || !nix::unistd::geteuid().is_root() {
        return;
    }
    let m = Mount::prepare(|t| fs::write(t.join("keep"), b"old").unwrap());
    m.mount();
    fs::create_dir(m.path("new")).unwrap();
    fs::write(m.path("new/file"), b"v1").unwrap();
    m.flush();
    fs::write(m.path("new/file"), b"v2, in RAM only").unwrap();
    m.kill_daemon();
    // As if the flush that placed new/ had been committed but never applied.
    let disk = m.disk_copy();
    fs::remove_file(disk.join("new/file")).unwrap();
    fs::remove_dir(disk.join("new")).unwrap();
    let side = m.side();
    let now: u64 = fs::read_to_string(side.join("generation"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    fs::write(side.join("generation"), format!("{}\n", now - 1)).unwrap();
    assert_eq!(plant_journal_into(&m, "new/file"), now);
    m.mount();
    assert_eq!(fs::read(m.path("new/file")).unwrap(), b"v2, in RAM only");
    assert_eq!(fs::read(m.path("keep")).unwrap(), b"old");
    let s = m.status();
    assert!(
        s["unclean_start"]
            .as_str()
            .is_some_and(|u| u.contains("could not be completed")),
        "status does not tell: {s}"
    );
    // The takeover's flush wrote it already; the unmount leaves it on disk.
    assert_eq!(
        fs::read(m.disk_copy().join("new/file")).unwrap(),
        b"v2, in RAM only"
    );
    m.unmount();
    assert_eq!(
        fs::read(m.disk_copy().join("new/file")).unwrap(),
        b"v2, in RAM only"
    );
    assert_eq!(fs::read(m.disk_copy().join("keep")).unwrap(), b"old");
}

/// Each path with its data (`None` for a directory), and which names are one file.
type View = (
    std::collections::BTreeMap<String, Option<Vec<u8>>>,
    Vec<Vec<String>>,
);

/// Everything under `root`.
fn view(root: &std::path::Path) -> View {
    let mut out = std::collections::BTreeMap::new();
    let mut by_ino: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    let mut stack = vec![std::path::PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap().flatten() {
            let r = rel.join(e.file_name());
            let m = fs::symlink_metadata(root.join(&r)).unwrap();
            let name = r.display().to_string();
            if m.is_dir() {
                out.insert(name, None);
                stack.push(r);
            } else {
                out.insert(name.clone(), Some(fs::read(root.join(&r)).unwrap()));
                by_ino.entry(m.ino()).or_default().push(name);
            }
        }
    }
    let mut links: Vec<Vec<String>> = by_ino
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    links.sort();
    (out, links)
}

/// One writer: random creations, links, renames and removals among a few names, for
/// `secs` seconds.
fn writer(root: std::path::PathBuf, seed: u64, until: std::time::Instant) {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let names = ["a", "b", "c"];
    while std::time::Instant::now() < until {
        let path = |rng: &mut rand::rngs::StdRng| {
            let depth = rng.random_range(1..=3);
            let p: Vec<&str> = (0..depth).map(|_| names[rng.random_range(0..3)]).collect();
            root.join(p.join("/"))
        };
        let (p, q) = (path(&mut rng), path(&mut rng));
        let _ = match rng.random_range(0..7) {
            0 => fs::create_dir_all(&p),
            1 => fs::write(&p, format!("{seed} {}", rng.random_range(0..1000))),
            2 => fs::hard_link(&p, &q),
            3 => fs::rename(&p, &q),
            4 => fs::remove_dir(&p),
            5 => fs::remove_file(&p),
            _ => fs::create_dir(&p),
        };
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Issue 12: several processes create, link and rename while flushes run every 0.2 s.
/// Overlay mode wedged within seconds (a committed journal that linked into a directory
/// it had not placed yet); every flush must succeed, and the disk copy after the unmount
/// is what the mount showed.
fn writers_while_flushes_run(overlay: bool) {
    if !fuse_available() || !nix::unistd::geteuid().is_root() {
        return;
    }
    let mut m = Mount::prepare(|t| fs::write(t.join("f0"), b"x\n").unwrap());
    if overlay {
        m.no_namespaces = Some(crate::harness::NAMESPACES.read_recursive());
        m.extra
            .extend(["--mode", "overlay", "--backups", "no"].map(String::from));
    }
    m.mount();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let writers: Vec<_> = (0..3)
        .map(|i| {
            let root = m.target.clone();
            std::thread::spawn(move || writer(root, i, until))
        })
        .collect();
    let mut flushes = 0;
    while std::time::Instant::now() < until {
        let out = crate::harness::asdfs(["flush", m.target.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "flush {flushes} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            m.log_tail()
        );
        flushes += 1;
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for w in writers {
        w.join().unwrap();
    }
    m.flush();
    let seen = view(&m.target);
    m.unmount();
    let disk = view(&m.target);
    assert_eq!(disk.0, seen.0, "the disk copy is not what the mount showed");
    assert_eq!(
        disk.1, seen.1,
        "the disk copy's hard links are not the mount's"
    );
    m.mount();
    m.unmount();
    eprintln!("{flushes} flushes while 3 writers ran");
}

#[test]
fn issue_12_writers_while_flushes_run_in_overlay_mode() {
    writers_while_flushes_run(true);
}

#[test]
fn issue_12_writers_while_flushes_run_in_fuse_mode() {
    writers_while_flushes_run(false);
}

/// `security.capability` granting cap_net_raw (effective), as setcap(8) writes it.
fn capability() -> Vec<u8> {
    let mut v = (0x0200_0000u32 | 1).to_le_bytes().to_vec();
    for word in [1u32 << 13, 0, 0, 0] {
        v.extend(word.to_le_bytes());
    }
    v
}

fn xattr_names(p: &std::path::Path) -> Vec<String> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: `c` is a valid C string and `buf` a buffer of the length given.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "listxattr {}", p.display());
    buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// A takeover writes the store's file as the store has it: a capability (or any xattr) root
/// put on the bare disk copy between the sessions is not combined with the store's newer
/// content (design.md §3 "Takeover"): the file the store changed keeps exactly the xattrs
/// it had when the session first opened it for writing.
#[test]
fn a_takeover_does_not_combine_the_stores_content_with_an_xattr_set_behind_it() {
    if !fuse_available() {
        return;
    }
    let m = Mount::with(|t| {
        fs::write(t.join("f"), b"old").unwrap();
        fs::write(t.join("g"), b"old").unwrap();
    });
    fs::write(m.path("f"), b"new from the store").unwrap();
    // `g` grows through an open without O_TRUNC (the data is read first).
    let mut g = fs::OpenOptions::new()
        .append(true)
        .open(m.path("g"))
        .unwrap();
    std::io::Write::write_all(&mut g, b" and more").unwrap();
    drop(g);
    m.kill_daemon();
    let cap = capability();
    for n in ["f", "g"] {
        let disk = m.disk_copy().join(n);
        let c = std::ffi::CString::new(disk.as_os_str().as_encoded_bytes()).unwrap();
        for (name, value) in [
            (c"security.capability", &cap[..]),
            (c"user.behind", &b"x"[..]),
        ] {
            // SAFETY: valid C strings and a buffer of the length given.
            let r = unsafe {
                libc::setxattr(
                    c.as_ptr(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            };
            assert_eq!(
                r,
                0,
                "setxattr {}: {}",
                disk.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    m.mount();
    m.unmount();
    assert_eq!(fs::read(m.target.join("f")).unwrap(), b"new from the store");
    assert_eq!(fs::read(m.target.join("g")).unwrap(), b"old and more");
    for n in ["f", "g"] {
        let names = xattr_names(&m.target.join(n));
        assert!(
            names.is_empty(),
            "{n}: xattrs the store never had: {names:?}"
        );
    }
}
