//! `asdfs flush --all` and `asdfs unmount --all`: every asdfs mount of the caller's mount
//! namespace that is theirs (all of them for root). A mount that goes away while the
//! command runs (its owner unmounted it) is skipped, not a failure: the sleep hook must not
//! fail because another program unmounted something in between.

use super::locate;
use super::out::outln;
use crate::control::Request;
use std::path::{Path, PathBuf};

pub fn flush_all() -> anyhow::Result<i32> {
    each(Request::Flush, |t| {
        super::command(t, Request::Flush).map(|_| ())
    })
}

pub fn unmount_all() -> anyhow::Result<i32> {
    each(Request::Unmount, super::unmount_quiet)
}

fn each(req: Request, run: impl Fn(&Path) -> anyhow::Result<()>) -> anyhow::Result<i32> {
    let targets = locate::mine()?;
    if targets.is_empty() {
        outln!("asdfs: nothing is kept in RAM");
        return Ok(0);
    }
    let mut failed = 0;
    for t in &targets {
        if let Err(e) = run(t) {
            if still_mounted(t) {
                eprintln!("asdfs: {e:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        let verb = if req == Request::Flush {
            "flush"
        } else {
            "unmount"
        };
        eprintln!(
            "asdfs: {verb} FAILED for {failed} of {} targets (see above)",
            targets.len()
        );
        return Ok(super::EXIT_FAILED);
    }
    Ok(0)
}

fn still_mounted(t: &PathBuf) -> bool {
    locate::all().is_ok_and(|all| all.contains(t))
}
