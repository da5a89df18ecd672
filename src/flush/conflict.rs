//! Conflict copies (design.md §6.2): just before a committed flush is applied, every regular
//! file it will replace or remove is compared with what the store read into RAM; one that
//! changed on disk since (a program writing through a descriptor opened before the mount)
//! is first linked to a conflict copy beside the target, so that both versions survive.

use super::journal::{Journal, Step};
use crate::backing::{Backing, Loc};
use crate::store::seen::DiskSeen;
use crate::store::types::Kind;
use std::collections::HashSet;
use std::path::Path;

/// Keeps a conflict copy of every file the journal replaces or removes that changed on
/// disk since it was read. Runs under the disk gate, after the commit, before the steps.
pub(super) fn keep_changed(b: &dyn Backing, journal: &Journal, seen: &DiskSeen) {
    // Objects a step puts somewhere in the target stay; only the others are at risk.
    let staying: HashSet<u64> = journal
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Rename {
                to: Loc::Target(_),
                ino,
                ..
            }
            | Step::Link {
                to: Loc::Target(_),
                ino,
                ..
            } => Some(*ino),
            _ => None,
        })
        .collect();
    let mut looked: HashSet<&Path> = HashSet::new();
    for step in &journal.steps {
        let at = match step {
            Step::Rename {
                to: Loc::Target(p), ..
            } => p,
            Step::Rename {
                from: Loc::Target(p),
                to: Loc::Side(_),
                ..
            } => p,
            _ => continue,
        };
        if !looked.insert(at.as_path()) {
            continue;
        }
        let Ok(st) = b.stat(&Loc::Target(at.clone())) else {
            continue;
        };
        if st.kind != Kind::File || staying.contains(&st.ino) {
            continue;
        }
        if seen.changed(&st) {
            seen.keep(at);
        }
        // Gone from the target once the steps ran.
        seen.forget(st.ino);
    }
}

/// After the steps: the records of the objects the flush moved or changed the attributes
/// of lose their ctime (the flush changed it); a file whose times a step set gets its new
/// mtime recorded.
pub(super) fn note_applied(b: &dyn Backing, journal: &Journal, seen: &DiskSeen) {
    for step in &journal.steps {
        match step {
            Step::Rename { ino, .. } | Step::Link { ino, .. } => seen.touched(*ino),
            Step::Meta {
                at,
                kind: Kind::File,
                ..
            } => {
                if let Ok(st) = b.stat(at) {
                    seen.meta_applied(&st);
                }
            }
            Step::Meta { ino: Some(ino), .. } => seen.touched(*ino),
            _ => {}
        }
    }
}
