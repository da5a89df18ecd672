//! Clearing the way of a flush (design.md §6, step 4): something on the disk copy the plan
//! does not know (made behind asdfs, e.g. by the target's owner), standing at a name where a
//! step puts an object and making the step fail (a directory where a file goes, a file
//! where a directory goes, a non-empty directory where a directory goes, anything at a
//! link's name), is moved aside into the side directory before the plan is checked, so
//! that it costs only that name (docs/security.md guarantee 5), never the rest of the flush.

use super::check;
use super::journal::{Journal, Step};
use crate::backing::{Backing, Loc, set_aside};
use std::collections::HashSet;

/// Moves aside every unknown object in the way of one of `journal`'s steps, with a warning
/// naming where it is kept. The steps run on the check's model of the disk (so a name the
/// plan empties first, or that lies below a directory the plan moves, is never in the
/// way). Runs under the disk gate, before the check. Acts only through the backing
/// (beneath the target, never following a symlink, renames only); an object swapped in
/// after this look makes the check (or a step) fail once, and the next flush looks again.
pub(super) fn clear_the_way(b: &dyn Backing, journal: &Journal) {
    let known: HashSet<u64> = journal
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Rename { ino, .. } | Step::Link { ino, .. } => Some(*ino),
            Step::Meta { ino, .. } => *ino,
            Step::Times { .. } => None,
        })
        .collect();
    check::clear(journal, b, &known, &mut |at: &Loc| match set_aside(b, at) {
        Ok(kept) => {
            tracing::warn!(path = %at, kept = %kept, "something the store does not know was on disk where the flush puts a name: it is kept in the side directory and the flush goes on");
            true
        }
        Err(e) => {
            tracing::warn!(path = %at, error = %e, "something the store does not know is on disk where the flush puts a name and could not be moved aside");
            false
        }
    });
}
