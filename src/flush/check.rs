//! The check a journal passes before it is committed (design.md §6.2): its steps are run
//! against a model of the disk copy, so that a committed journal can always be completed.
//! The model holds only the names the steps touch; every other name is read from the disk
//! (which the steps have not changed yet) when the model first needs it.

use super::journal::{Journal, Step};
use crate::backing::{Backing, Loc};
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Component, Path};

/// Runs `journal`'s steps on a model of the disk as it will be at each step: every parent
/// exists, every source holds the inode its step expects, no name is taken twice, and at
/// the end every name the plan gives an object holds it (what `Journal::apply` verifies).
/// An error names the first step that would fail.
pub fn check(journal: &Journal, disk: &dyn Backing) -> io::Result<()> {
    let mut sim = Sim::new(disk, None)?;
    for (i, step) in journal.steps.iter().enumerate() {
        sim.step(step)
            .map_err(|e| io::Error::new(e.kind(), format!("step {}: {e}", i + 1)))?;
    }
    sim.verify(journal)
}

/// Runs `journal`'s steps on the model like `check`, and where an object read from the disk,
/// whose inode is not in `known`, would make a step fail by standing at its destination,
/// offers its place on disk (as it is now, before any step) to `aside`; if that moves it
/// away (returns true), the model goes on without it. Stops at the first other failure
/// (`check` reports it).
pub(super) fn clear(
    journal: &Journal,
    disk: &dyn Backing,
    known: &HashSet<u64>,
    aside: &mut dyn FnMut(&Loc) -> bool,
) {
    let Ok(mut sim) = Sim::new(disk, Some((known, aside))) else {
        return;
    };
    for step in &journal.steps {
        if sim.step(step).is_err() {
            return;
        }
    }
}

/// What `clear` gives the model: the inodes the plan knows, and what moves an object aside.
type Aside<'b> = (&'b HashSet<u64>, &'b mut dyn FnMut(&Loc) -> bool);

/// One object of the model: its inode and, for one read from the disk, where it was.
struct Node {
    ino: u64,
    dir: bool,
    orig: Option<Loc>,
    /// Names looked up or changed below a directory (`None`: no object there).
    kids: HashMap<OsString, Option<usize>>,
}

struct Sim<'a> {
    disk: &'a dyn Backing,
    nodes: Vec<Node>,
    target: usize,
    side: usize,
    aside: Option<Aside<'a>>,
}

fn bad(msg: String) -> io::Error {
    io::Error::other(msg)
}

fn names(p: &Path) -> impl Iterator<Item = &OsStr> {
    p.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n),
        _ => None,
    })
}

/// The parent of `loc` and its last name.
fn split(loc: &Loc) -> io::Result<(Loc, OsString)> {
    let p = loc.path();
    let name = p
        .file_name()
        .ok_or_else(|| bad(format!("{loc} has no name")))?;
    let parent = p.parent().unwrap_or(Path::new("")).to_path_buf();
    let parent = match loc {
        Loc::Target(_) => Loc::Target(parent),
        Loc::Side(_) => Loc::Side(parent),
    };
    Ok((parent, name.to_os_string()))
}

impl<'a> Sim<'a> {
    fn new(disk: &'a dyn Backing, aside: Option<Aside<'a>>) -> io::Result<Sim<'a>> {
        let mut sim = Sim {
            disk,
            nodes: Vec::new(),
            target: 0,
            side: 1,
            aside,
        };
        for root in [Loc::target(""), Loc::side("")] {
            let st = disk.stat(&root)?;
            sim.nodes.push(Node {
                ino: st.ino,
                dir: true,
                orig: Some(root),
                kids: HashMap::new(),
            });
        }
        Ok(sim)
    }

    /// The object named `name` in directory `dir`, read from the disk the first time.
    fn child(&mut self, dir: usize, name: &OsStr) -> io::Result<Option<usize>> {
        if let Some(k) = self.nodes[dir].kids.get(name) {
            return Ok(*k);
        }
        let found = match &self.nodes[dir].orig {
            Some(orig) if self.nodes[dir].dir => {
                let loc = orig.join(name);
                match self.disk.stat(&loc) {
                    Ok(st) => Some((st, loc)),
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                        None
                    }
                    Err(e) => return Err(e),
                }
            }
            _ => None,
        };
        let k = found.map(|(st, loc)| {
            self.nodes.push(Node {
                ino: st.ino,
                dir: st.kind == crate::store::types::Kind::Dir,
                orig: Some(loc),
                kids: HashMap::new(),
            });
            self.nodes.len() - 1
        });
        self.nodes[dir].kids.insert(name.to_os_string(), k);
        Ok(k)
    }

    /// The directories from the root to the object at `loc`, or `None` if there is none.
    fn chain(&mut self, loc: &Loc) -> io::Result<Option<Vec<usize>>> {
        let mut at = match loc {
            Loc::Target(_) => self.target,
            Loc::Side(_) => self.side,
        };
        let mut chain = vec![at];
        for name in names(loc.path()) {
            if !self.nodes[at].dir {
                return Ok(None);
            }
            match self.child(at, name)? {
                Some(k) => at = k,
                None => return Ok(None),
            }
            chain.push(at);
        }
        Ok(Some(chain))
    }

    fn resolve(&mut self, loc: &Loc) -> io::Result<Option<usize>> {
        Ok(self.chain(loc)?.and_then(|c| c.last().copied()))
    }

    fn ino(&mut self, loc: &Loc) -> io::Result<Option<u64>> {
        Ok(self.resolve(loc)?.map(|n| self.nodes[n].ino))
    }

    /// The directory that will hold `loc`, and the name.
    fn parent(&mut self, loc: &Loc) -> io::Result<(Vec<usize>, OsString)> {
        let (parent, name) = split(loc)?;
        match self.chain(&parent)? {
            Some(c) if self.nodes[c[c.len() - 1]].dir => Ok((c, name)),
            _ => Err(bad(format!("the directory {parent} does not exist"))),
        }
    }

    fn is_empty(&mut self, dir: usize) -> io::Result<bool> {
        if self.nodes[dir].kids.values().any(|k| k.is_some()) {
            return Ok(false);
        }
        let Some(orig) = self.nodes[dir].orig.clone() else {
            return Ok(true);
        };
        for item in self.disk.read_dir(&orig)? {
            if self.child(dir, &item.name)?.is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// In `clear`: `old`, in the way at `name` in `dir`, is an object of the disk copy the
    /// plan does not know, still where it was read: it is offered to be moved aside. True if
    /// it was (the name is free now).
    fn set_aside(&mut self, dir: usize, name: &OsStr, old: usize) -> bool {
        let node = &self.nodes[old];
        let Some((known, aside)) = self.aside.as_mut() else {
            return false;
        };
        let Some(orig @ Loc::Target(p)) = &node.orig else {
            return false;
        };
        if p.as_os_str().is_empty() || known.contains(&node.ino) || !aside(orig) {
            return false;
        }
        self.nodes[dir].kids.insert(name.to_os_string(), None);
        true
    }

    fn step(&mut self, step: &Step) -> io::Result<()> {
        match step {
            Step::Rename { from, to, ino } => self.rename(from, to, *ino),
            Step::Link { from, to, ino } => self.link(from, to, *ino),
            Step::Meta { at, .. } | Step::Times { at, .. } => match self.resolve(at)? {
                Some(_) => Ok(()),
                None => Err(bad(format!("nothing at {at} to set attributes of"))),
            },
        }
    }

    fn rename(&mut self, from: &Loc, to: &Loc, ino: u64) -> io::Result<()> {
        let src = match self.resolve(from)? {
            Some(n) if self.nodes[n].ino == ino => n,
            _ if self.ino(to)? == Some(ino) => return Ok(()),
            _ => return Err(bad(format!("inode {ino} is not at {from}"))),
        };
        let (chain, name) = self.parent(to)?;
        let dir = chain[chain.len() - 1];
        if chain.contains(&src) {
            return Err(bad(format!("{from} would move into itself at {to}")));
        }
        if let Some(old) = self.child(dir, &name)? {
            if self.nodes[old].ino == ino {
                // Two names of one file: rename(2) does nothing.
                return Ok(());
            }
            let blocked = match (self.nodes[src].dir, self.nodes[old].dir) {
                (true, false) => Some(format!("{to} is not a directory")),
                (false, true) => Some(format!("{to} is a directory")),
                (true, true) if !self.is_empty(old)? => {
                    Some(format!("the directory {to} is not empty"))
                }
                _ => None,
            };
            if let Some(msg) = blocked {
                if !self.set_aside(dir, &name, old) {
                    return Err(bad(msg));
                }
            }
        }
        let (fchain, fname) = self.parent(from)?;
        self.nodes[fchain[fchain.len() - 1]]
            .kids
            .insert(fname, None);
        self.nodes[dir].kids.insert(name, Some(src));
        Ok(())
    }

    fn link(&mut self, from: &Loc, to: &Loc, ino: u64) -> io::Result<()> {
        if self.ino(to)? == Some(ino) {
            return Ok(());
        }
        let src = match self.resolve(from)? {
            Some(n) if self.nodes[n].ino == ino && !self.nodes[n].dir => n,
            _ => return Err(bad(format!("inode {ino} is not at {from}"))),
        };
        let (chain, name) = self.parent(to)?;
        let dir = chain[chain.len() - 1];
        if let Some(old) = self.child(dir, &name)? {
            if !self.set_aside(dir, &name, old) {
                return Err(bad(format!("{to} is taken")));
            }
        }
        self.nodes[dir].kids.insert(name, Some(src));
        Ok(())
    }

    /// What `Journal::apply` verifies after the steps, on the model.
    fn verify(&mut self, journal: &Journal) -> io::Result<()> {
        let sources: HashSet<&Loc> = journal
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Rename { from, .. } => Some(from),
                _ => None,
            })
            .collect();
        for (i, step) in journal.steps.iter().enumerate() {
            let (Step::Rename { from, to, ino } | Step::Link { from, to, ino }) = step else {
                continue;
            };
            let check = match (from, to) {
                (_, Loc::Target(_)) => true,
                (Loc::Target(_), Loc::Side(_)) => {
                    matches!(step, Step::Rename { .. }) && !sources.contains(to)
                }
                _ => false,
            };
            if check && self.ino(to)? != Some(*ino) {
                return Err(bad(format!(
                    "step {}: inode {ino} would not stay at {to}",
                    i + 1
                )));
            }
        }
        Ok(())
    }
}
