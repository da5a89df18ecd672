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
    let side = m.side();
    let now: u64 = fs::read_to_string(side.join("generation"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
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
                to: Loc::target("no-such-dir/x"),
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
