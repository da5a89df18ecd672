//! From an upper layer to the steps of a flush (design.md §10.2): what to stage, which
//! disk-copy names to move into the stage (deletions and replaced objects), and in what
//! order. The steps are those of the FUSE flush (`flush::Step`), so the commit, the apply
//! and the recovery after a crash are the same.

use super::upper::{Sig, UpperEntry, UpperKind, children};
use crate::backing::{Backing, DiskStat, Loc, Meta};
use crate::flush::{Journal, Step};
use crate::store::types::Kind;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

/// What to create in the stage.
#[derive(Clone, Debug)]
pub enum StageContent {
    /// A copy of the upper file at this path.
    File(PathBuf),
    Dir,
    /// A symlink with the target of the upper symlink at this path.
    Symlink(PathBuf),
    Special(Kind, u64),
}

#[derive(Clone, Debug)]
pub struct StageItem {
    pub loc: Loc,
    pub content: StageContent,
    pub meta: Meta,
    /// The upper path the item copies, to check afterwards that it did not change meanwhile.
    pub source: Option<PathBuf>,
    /// The inode the walk saw there: another one found when staging is not copied.
    pub ino: Option<u64>,
}

/// A step, with the stage item whose inode it moves (known once staged).
#[derive(Clone, Debug)]
pub struct PlannedStep {
    pub step: Step,
    pub staged: Option<usize>,
}

/// One flush of an upper layer, before staging.
#[derive(Debug, Default)]
pub struct Plan {
    pub generation: u64,
    pub stage: Vec<StageItem>,
    pub steps: Vec<PlannedStep>,
    pub syncs: Vec<Loc>,
    /// Names the disk copy did not have before: checked after the apply (design.md §10.3).
    pub new_names: Vec<PathBuf>,
    /// Directories only the upper layer has: marked opaque before their disk copy exists.
    pub mark_opaque: Vec<PathBuf>,
    /// The signature of every upper name this flush writes or finds already written.
    pub sigs: HashMap<PathBuf, Sig>,
    pub files: u64,
    pub bytes: u64,
}

impl Plan {
    /// The journal, given the inode each stage item got (`None`: its source vanished before
    /// it could be copied, so its steps are left out).
    pub fn journal(&self, inos: &[Option<u64>], gen_ino: u64) -> Journal {
        let stage = Path::new(&Journal::stage_dir(self.generation)).to_path_buf();
        let mut steps: Vec<Step> = self
            .steps
            .iter()
            .filter_map(|p| {
                let mut s = p.step.clone();
                if let (Some(i), Step::Rename { ino, .. } | Step::Link { ino, .. }) =
                    (p.staged, &mut s)
                {
                    *ino = inos[i]?;
                }
                Some(s)
            })
            .collect();
        steps.push(Step::Rename {
            from: Loc::side(stage.join("generation")),
            to: Loc::side("generation"),
            ino: gen_ino,
        });
        Journal {
            generation: self.generation,
            steps,
            syncs: self.syncs.clone(),
        }
    }

    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Plans flush `generation` of the upper layer `entries` (a walk, parents first) onto the
/// disk copy `disk`; names whose signature is in `done` were written by an earlier flush.
pub fn plan(
    entries: &[UpperEntry],
    disk: &dyn Backing,
    done: &HashMap<PathBuf, Sig>,
    generation: u64,
) -> io::Result<Plan> {
    let mut p = Planner {
        disk,
        stage: Path::new(&Journal::stage_dir(generation)).to_path_buf(),
        gone: BTreeSet::new(),
        plan: Plan {
            generation,
            ..Default::default()
        },
        trashed: 0,
        dir_meta: Vec::new(),
        touched: BTreeSet::new(),
        opaque: HashSet::new(),
    };
    let kids = children(entries);
    let mut links: HashMap<u64, Vec<&UpperEntry>> = HashMap::new();
    for e in entries {
        if e.kind == UpperKind::Node(Kind::File) && e.st.nlink > 1 {
            links.entry(e.st.ino).or_default().push(e);
        }
    }
    let mut linked_done: HashSet<u64> = HashSet::new();
    // Hard-linked files are placed after the walk: a group's other names may be in
    // directories the walk has not placed yet (issue 12).
    let mut groups: Vec<&Vec<&UpperEntry>> = Vec::new();
    for e in entries {
        let changed = done.get(&e.path) != Some(&e.sig());
        p.plan.sigs.insert(e.path.clone(), e.sig());
        match &e.kind {
            UpperKind::Whiteout => {
                if changed {
                    if let Some(st) = p.on_disk(&e.path)? {
                        p.trash(&e.path, &st);
                    }
                }
            }
            UpperKind::Dir { opaque } => p.dir(e, *opaque, changed, &kids)?,
            UpperKind::Node(kind) => match links.get(&e.st.ino) {
                Some(group) if group.len() > 1 => {
                    if linked_done.insert(e.st.ino) {
                        let any_changed = group.iter().any(|g| done.get(&g.path) != Some(&g.sig()));
                        if any_changed {
                            groups.push(group);
                        }
                    }
                }
                _ => {
                    if changed {
                        p.node(e, *kind)?;
                    }
                }
            },
        }
    }
    for group in groups {
        p.linked(group)?;
    }
    p.removed_unseen(entries, done)?;
    // Directory attributes last, deepest first: the steps above change their times. A
    // directory whose entries change but whose attributes were written before gets its
    // times back.
    let mut dirs = std::mem::take(&mut p.dir_meta);
    let with_meta: HashSet<PathBuf> = dirs.iter().map(|(path, ..)| path.clone()).collect();
    let by_path: HashMap<&Path, &UpperEntry> =
        entries.iter().map(|e| (e.path.as_path(), e)).collect();
    let mut times: Vec<Step> = p
        .touched
        .iter()
        .filter(|d| !with_meta.contains(*d))
        .filter_map(|d| by_path.get(d.as_path()))
        .map(|e| Step::Times {
            at: Loc::Target(e.path.clone()),
            atime: e.st.attr.atime,
            mtime: e.st.attr.mtime,
        })
        .collect();
    dirs.sort_by_key(|(path, ..)| std::cmp::Reverse(path.components().count()));
    times.sort_by_key(|s| match s {
        Step::Times { at, .. } => std::cmp::Reverse(at.path().components().count()),
        _ => std::cmp::Reverse(0),
    });
    for (path, meta, ino) in dirs {
        p.touched.insert(path.clone());
        p.push(Step::Meta {
            at: Loc::Target(path),
            kind: Kind::Dir,
            meta,
            ino,
        });
    }
    for step in times {
        p.push(step);
    }
    p.plan.syncs = p.touched.iter().map(|d| Loc::Target(d.clone())).collect();
    Ok(p.plan)
}

struct Planner<'a> {
    disk: &'a dyn Backing,
    stage: PathBuf,
    /// Disk-copy paths this plan moves away or creates anew: nothing is below them after.
    gone: BTreeSet<PathBuf>,
    plan: Plan,
    trashed: u64,
    /// Directories' attributes, set last; with the disk inode of one the plan keeps.
    dir_meta: Vec<(PathBuf, Meta, Option<u64>)>,
    /// Directories whose entries the plan changes (fsynced after the apply).
    touched: BTreeSet<PathBuf>,
    /// Directories that replace the disk's whole: opaque ones and every directory below
    /// one (the kernel marks only the directory made over a removed one).
    opaque: HashSet<PathBuf>,
}

impl Planner<'_> {
    fn push(&mut self, step: Step) {
        self.plan.steps.push(PlannedStep { step, staged: None });
    }

    /// What the disk copy has at `path` when the plan's earlier steps have run.
    fn on_disk(&self, path: &Path) -> io::Result<Option<DiskStat>> {
        if path.ancestors().skip(1).any(|a| self.gone.contains(a)) {
            return Ok(None);
        }
        match self.disk.stat(&Loc::target(path)) {
            Ok(st) => Ok(Some(st)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Names an earlier flush of this layer wrote and the layer no longer has, not even as
    /// a whiteout, in a directory that merges with the disk copy: the overlay removed or
    /// renamed them without a whiteout, because the disk copy had no such name when it
    /// looked the directory up (its entry keeps the layers it found then: a directory made
    /// in a layer that a flush has since written and that is still in the overlay, design.md
    /// §10.3). The program removed the name; the disk copy's object there goes too, else
    /// it shows through once the layer leaves the overlay (QA: renamed-away names revived
    /// on disk after a rename storm). Only the topmost such name: a directory takes its
    /// entries with it.
    fn removed_unseen(
        &mut self,
        entries: &[UpperEntry],
        done: &HashMap<PathBuf, Sig>,
    ) -> io::Result<()> {
        let by_path: HashMap<&Path, &UpperEntry> =
            entries.iter().map(|e| (e.path.as_path(), e)).collect();
        let mut gone: Vec<&PathBuf> = done
            .iter()
            .filter(|(path, sig)| {
                **sig != Sig::Whiteout
                    && !path.as_os_str().is_empty()
                    && !by_path.contains_key(path.as_path())
                    && !self.gone.contains(*path)
                    && path.parent().is_some_and(|d| {
                        !self.opaque.contains(d)
                            && by_path
                                .get(d)
                                .is_some_and(|e| e.kind == UpperKind::Dir { opaque: false })
                    })
            })
            .map(|(path, _)| path)
            .collect();
        gone.sort();
        for path in gone {
            if let Some(st) = self.on_disk(path)? {
                tracing::debug!(path = %crate::human::path(path), "gone from the layer without a whiteout: removed on disk");
                self.trash(path, &st);
            }
        }
        Ok(())
    }

    fn touch_parent(&mut self, path: &Path) {
        if let Some(parent) = path.parent() {
            self.touched.insert(parent.to_path_buf());
        }
    }

    /// Moves the disk copy's object at `path` into the stage (removed with it at the end).
    fn trash(&mut self, path: &Path, st: &DiskStat) {
        self.trashed += 1;
        let to = Loc::Side(self.stage.join(format!("t{}", self.trashed)));
        self.push(Step::Rename {
            from: Loc::target(path),
            to,
            ino: st.ino,
        });
        self.gone.insert(path.to_path_buf());
        self.touch_parent(path);
    }

    fn add_stage(&mut self, content: StageContent, meta: Meta, source: Option<PathBuf>) -> usize {
        let i = self.plan.stage.len();
        let loc = Loc::Side(self.stage.join(format!("s{}", i + 1)));
        self.plan.stage.push(StageItem {
            loc,
            content,
            meta,
            source,
            ino: None,
        });
        i
    }

    /// Puts stage item `i` at `path`, replacing a non-directory there.
    fn place(&mut self, i: usize, path: &Path, existing: Option<DiskStat>) {
        match existing {
            Some(st) if st.kind == Kind::Dir => self.trash(path, &st),
            Some(_) => {}
            None => self.plan.new_names.push(path.to_path_buf()),
        }
        let from = self.plan.stage[i].loc.clone();
        self.plan.steps.push(PlannedStep {
            step: Step::Rename {
                from,
                to: Loc::target(path),
                ino: 0,
            },
            staged: Some(i),
        });
        self.touch_parent(path);
    }

    fn dir(
        &mut self,
        e: &UpperEntry,
        opaque: bool,
        changed: bool,
        kids: &HashMap<PathBuf, HashSet<std::ffi::OsString>>,
    ) -> io::Result<()> {
        let root = e.path.as_os_str().is_empty();
        let opaque = opaque || e.path.parent().is_some_and(|p| self.opaque.contains(p));
        if opaque {
            self.opaque.insert(e.path.clone());
        }
        let existing = if root {
            Some(self.disk.stat(&Loc::target(""))?)
        } else {
            self.on_disk(&e.path)?
        };
        match existing {
            Some(st) if st.kind == Kind::Dir => {
                if opaque && changed {
                    let keep = kids.get(&e.path);
                    for item in self.disk.read_dir(&Loc::target(&e.path))? {
                        if keep.is_some_and(|k| k.contains(&item.name)) {
                            continue;
                        }
                        let path = e.path.join(&item.name);
                        if let Some(st) = self.on_disk(&path)? {
                            self.trash(&path, &st);
                        }
                    }
                }
                // A directory whose upper copy changed only in ways the disk copy does not
                // keep (its ctime, e.g. when a layer is swapped) costs no step: a flush
                // with nothing to write stays empty (issue 12).
                if changed && self.meta_differs(&e.path, &st, &e.meta())? {
                    self.dir_meta.push((e.path.clone(), e.meta(), Some(st.ino)));
                }
            }
            other => {
                if let Some(st) = other {
                    self.trash(&e.path, &st);
                }
                // Every one, those below a new directory too: the overlay then never
                // looks for its names on the disk copy, so none can show through, and
                // the flush never makes a whiteout in it behind the overlay's back (in a
                // directory the overlay takes for upper-only, its listing would show the
                // whiteout as a name nothing can open).
                self.plan.mark_opaque.push(e.path.clone());
                let meta = Meta {
                    mode: 0o700,
                    xattrs: None,
                    ..e.meta()
                };
                let i = self.add_stage(StageContent::Dir, meta, None);
                self.place(i, &e.path, None);
                self.gone.insert(e.path.clone());
                self.dir_meta.push((e.path.clone(), e.meta(), None));
            }
        }
        Ok(())
    }

    /// Whether the disk copy's directory at `path` (`st`) lacks attributes `m` gives it.
    fn meta_differs(&self, path: &Path, st: &DiskStat, m: &Meta) -> io::Result<bool> {
        let a = &st.attr;
        if (a.mode, a.uid, a.gid, a.atime, a.mtime) != (m.mode, m.uid, m.gid, m.atime, m.mtime) {
            return Ok(true);
        }
        let mut disk = self.disk.read_xattrs(&Loc::target(path))?;
        let mut want = m.xattrs.clone().unwrap_or_default();
        disk.sort();
        want.sort();
        Ok(disk != want)
    }

    fn node(&mut self, e: &UpperEntry, kind: Kind) -> io::Result<()> {
        let content = match kind {
            Kind::File => StageContent::File(e.path.clone()),
            Kind::Symlink => StageContent::Symlink(e.path.clone()),
            k => StageContent::Special(k, e.st.attr.rdev),
        };
        if kind == Kind::File {
            self.plan.files += 1;
            self.plan.bytes += e.st.attr.size;
        }
        let source = Some(e.path.clone());
        let i = self.add_stage(content, e.meta(), source);
        self.plan.stage[i].ino = Some(e.st.ino);
        let existing = self.on_disk(&e.path)?;
        self.place(i, &e.path, existing);
        Ok(())
    }

    /// A file with several names in the upper layer: written once, linked at the others.
    fn linked(&mut self, group: &[&UpperEntry]) -> io::Result<()> {
        let first = group[0];
        self.plan.files += 1;
        self.plan.bytes += first.st.attr.size;
        let i = self.add_stage(
            StageContent::File(first.path.clone()),
            first.meta(),
            Some(first.path.clone()),
        );
        self.plan.stage[i].ino = Some(first.st.ino);
        let existing = self.on_disk(&first.path)?;
        self.place(i, &first.path, existing);
        for other in &group[1..] {
            if let Some(st) = self.on_disk(&other.path)? {
                self.trash(&other.path, &st);
            } else {
                self.plan.new_names.push(other.path.clone());
            }
            self.plan.steps.push(PlannedStep {
                step: Step::Link {
                    from: Loc::target(&first.path),
                    to: Loc::target(&other.path),
                    ino: 0,
                },
                staged: Some(i),
            });
            self.touch_parent(&other.path);
        }
        Ok(())
    }
}
