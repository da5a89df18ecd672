//! Clearing the way of a flush (design.md §6.2): something on the disk copy the store does
//! not know (made behind asdfs, e.g. by the target's owner), standing at a name where a
//! step puts an object and would make the step fail (a directory where a file goes, a
//! file where a directory goes, a non-empty directory, any object at a name a link takes),
//! is moved aside into the side directory before the plan is checked, so that it costs
//! only that name (docs/security.md guarantee 5), never the rest of the flush.

use super::journal::{Journal, Step};
use crate::backing::{Backing, Loc, set_aside};
use crate::store::types::Kind;
use std::collections::HashSet;

/// Moves aside every unknown object in the way of one of `journal`'s steps, with a warning
/// naming where it is kept. Runs under the disk gate, before the check. Acts only through
/// the backing (beneath the target, never following a symlink); an object swapped in after
/// this look makes the check (or a step) fail once, and the next flush looks again.
pub(super) fn clear_the_way(b: &dyn Backing, journal: &Journal) {
    // Objects the plan itself moves or names, and names it empties before filling them.
    let known: HashSet<u64> = journal
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Rename { ino, .. } | Step::Link { ino, .. } => Some(*ino),
            Step::Meta { ino, .. } => *ino,
            Step::Times { .. } => None,
        })
        .collect();
    let emptied: HashSet<&Loc> = journal
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Rename { from, .. } => Some(from),
            _ => None,
        })
        .collect();
    for step in &journal.steps {
        let (from, to, ino, link) = match step {
            Step::Rename { from, to, ino } => (from, to, *ino, false),
            Step::Link { from, to, ino } => (from, to, *ino, true),
            _ => continue,
        };
        if !matches!(to, Loc::Target(p) if !p.as_os_str().is_empty()) || emptied.contains(to) {
            continue;
        }
        let Ok(there) = b.stat(to) else {
            continue;
        };
        if there.ino == ino || known.contains(&there.ino) {
            continue;
        }
        let blocks = link || {
            let Ok(src) = b.stat(from) else {
                continue;
            };
            if src.ino != ino {
                continue;
            }
            match (src.kind == Kind::Dir, there.kind == Kind::Dir) {
                (true, false) | (false, true) => true,
                (true, true) => b.read_dir(to).map_or(true, |items| !items.is_empty()),
                (false, false) => false,
            }
        };
        if !blocks {
            continue;
        }
        match set_aside(b, to) {
            Ok(kept) => {
                tracing::warn!(path = %to, kept = %kept, "something the store does not know was on disk where the flush puts a name: it is kept in the side directory and the flush goes on");
            }
            Err(e) => {
                tracing::warn!(path = %to, error = %e, "something the store does not know is on disk where the flush puts a name and could not be moved aside");
            }
        }
    }
}
