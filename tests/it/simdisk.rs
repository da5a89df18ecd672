//! An in-memory disk implementing `Backing`, with explicit durability, for power-cut tests.
//!
//! Model (design.md §6.1 assumptions, adversarially): metadata changes (names, attributes)
//! form one ordered journal; an fsync of a directory commits the journal up to now. An fsync
//! of a file makes that file's data durable, nothing else. When the power is cut, the disk
//! holds the last commit plus any prefix of the later metadata changes (a real journal also
//! commits on its own schedule), and each file holds the data of its last fsync.

use asdfs::backing::{Backing, DirItem, DiskStat, InPlace, Loc, Meta, NewContent, XattrList};
use asdfs::store::types::{Attr, Kind, Ts};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Component, Path};

fn err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// The metadata of one inode.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub mtime: Ts,
    pub atime: Ts,
    pub xattrs: BTreeMap<OsString, Vec<u8>>,
    pub entries: BTreeMap<OsString, u64>,
    pub link: Vec<u8>,
}

/// Names and metadata of the whole disk (no file data).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ns {
    pub nodes: HashMap<u64, Node>,
    pub next_ino: u64,
}

/// What survives a power cut: metadata and the fsynced data of each file.
#[derive(Clone, Debug)]
pub struct Durable {
    pub ns: Ns,
    pub data: HashMap<u64, Vec<u8>>,
}

struct Sim {
    ns: Ns,
    data: HashMap<u64, Vec<u8>>,
    synced: HashMap<u64, Vec<u8>>,
    committed: Ns,
    /// Metadata states after each change since the last commit.
    history: Vec<Ns>,
    points: u64,
    cut_at: Option<u64>,
    dead: Option<Vec<Durable>>,
}

pub struct SimDisk {
    sim: Mutex<Sim>,
}

pub const TARGET: u64 = 1;
pub const SIDE: u64 = 2;

fn dir_node() -> Node {
    Node {
        kind: Kind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        rdev: 0,
        mtime: Ts::default(),
        atime: Ts::default(),
        xattrs: BTreeMap::new(),
        entries: BTreeMap::new(),
        link: Vec::new(),
    }
}

impl SimDisk {
    /// An empty target and side directory.
    pub fn new() -> SimDisk {
        let mut ns = Ns {
            nodes: HashMap::new(),
            next_ino: 3,
        };
        ns.nodes.insert(TARGET, dir_node());
        ns.nodes.insert(SIDE, dir_node());
        Self::from_durable(Durable {
            ns,
            data: HashMap::new(),
        })
    }

    /// The disk as it is after a power cut, rebooted.
    pub fn from_durable(d: Durable) -> SimDisk {
        let sim = Sim {
            committed: d.ns.clone(),
            ns: d.ns,
            synced: d.data.clone(),
            data: d.data,
            history: Vec::new(),
            points: 0,
            cut_at: None,
            dead: None,
        };
        SimDisk {
            sim: Mutex::new(sim),
        }
    }

    /// Cuts the power at the `n`th durability point (counting from 1): that fsync does not
    /// happen, and every later call fails.
    pub fn cut_power_at(&self, n: u64) {
        self.sim.lock().cut_at = Some(n);
    }

    /// Durability points passed so far.
    pub fn points(&self) -> u64 {
        self.sim.lock().points
    }

    /// After a cut: every state the disk may be in.
    pub fn survivors(&self) -> Option<Vec<Durable>> {
        self.sim.lock().dead.clone()
    }

    /// The disk as it is now, as if everything were durable (for expected states).
    pub fn everything(&self) -> Durable {
        let s = self.sim.lock();
        Durable {
            ns: s.ns.clone(),
            data: s.data.clone(),
        }
    }

    /// Writes a file directly (setting up a disk before a test), as durable.
    pub fn put_file(&self, path: &str, data: &[u8]) {
        let mut s = self.sim.lock();
        let (dir, name) = s.parent(&Loc::target(path)).unwrap();
        let ino = s.alloc(Kind::File, 0o644);
        s.ns.nodes.get_mut(&dir).unwrap().entries.insert(name, ino);
        s.data.insert(ino, data.to_vec());
        s.synced.insert(ino, data.to_vec());
        s.committed = s.ns.clone();
    }

    fn make(
        &self,
        loc: &Loc,
        content: NewContent<'_>,
        meta: &Meta,
        durable: bool,
    ) -> io::Result<u64> {
        let mut s = self.sim.lock();
        s.alive()?;
        let (dir, name) = s.parent(loc)?;
        if s.ns.nodes[&dir].entries.contains_key(&name) {
            return Err(err(libc::EEXIST));
        }
        let (kind, data, link, rdev) = match content {
            NewContent::File(f) => {
                let mut d = Vec::new();
                let mut r = f;
                std::io::Seek::rewind(&mut r)?;
                r.read_to_end(&mut d)?;
                (Kind::File, Some(d), Vec::new(), 0)
            }
            NewContent::Dir => (Kind::Dir, None, Vec::new(), 0),
            NewContent::Symlink(t) => (Kind::Symlink, None, t.to_vec(), 0),
            NewContent::Special { kind, rdev } => (kind, None, Vec::new(), rdev),
        };
        let ino = s.alloc(kind, 0o600);
        s.ns.nodes.get_mut(&ino).unwrap().link = link;
        s.ns.nodes.get_mut(&ino).unwrap().rdev = rdev;
        s.ns.nodes.get_mut(&dir).unwrap().entries.insert(name, ino);
        if let Some(d) = data {
            s.data.insert(ino, d);
        }
        s.set_meta(ino, kind, meta);
        s.changed();
        match kind {
            _ if !durable => {}
            Kind::File => {
                s.point()?;
                let d = s.data[&ino].clone();
                s.synced.insert(ino, d);
            }
            Kind::Dir => {
                s.point()?;
                s.commit();
            }
            _ => {}
        }
        Ok(ino)
    }

    pub fn put_dir(&self, path: &str) {
        let mut s = self.sim.lock();
        let (dir, name) = s.parent(&Loc::target(path)).unwrap();
        let ino = s.alloc(Kind::Dir, 0o755);
        s.ns.nodes.get_mut(&dir).unwrap().entries.insert(name, ino);
        s.committed = s.ns.clone();
    }
}

impl Sim {
    fn alive(&self) -> io::Result<()> {
        if self.dead.is_some() {
            Err(err(libc::EIO))
        } else {
            Ok(())
        }
    }

    /// A durability point: the power may go out here, before it takes effect.
    fn point(&mut self) -> io::Result<()> {
        self.alive()?;
        self.points += 1;
        if self.cut_at == Some(self.points) {
            let mut states = vec![self.committed.clone()];
            states.extend(self.history.iter().cloned());
            let data = self.synced.clone();
            self.dead = Some(
                states
                    .into_iter()
                    .map(|ns| Durable {
                        ns,
                        data: data.clone(),
                    })
                    .collect(),
            );
            return Err(err(libc::EIO));
        }
        Ok(())
    }

    fn changed(&mut self) {
        self.history.push(self.ns.clone());
    }

    fn commit(&mut self) {
        self.committed = self.ns.clone();
        self.history.clear();
    }

    fn alloc(&mut self, kind: Kind, mode: u32) -> u64 {
        let ino = self.ns.next_ino;
        self.ns.next_ino += 1;
        let mut n = dir_node();
        n.kind = kind;
        n.mode = mode;
        self.ns.nodes.insert(ino, n);
        ino
    }

    fn walk(&self, root: u64, path: &Path) -> io::Result<u64> {
        let mut cur = root;
        for c in path.components() {
            let Component::Normal(name) = c else { continue };
            let n = &self.ns.nodes[&cur];
            if n.kind != Kind::Dir {
                return Err(err(if n.kind == Kind::Symlink {
                    libc::ELOOP
                } else {
                    libc::ENOTDIR
                }));
            }
            cur = *n.entries.get(name).ok_or_else(|| err(libc::ENOENT))?;
        }
        Ok(cur)
    }

    fn resolve(&self, loc: &Loc) -> io::Result<u64> {
        self.walk(root_of(loc), loc.path())
    }

    fn parent(&self, loc: &Loc) -> io::Result<(u64, OsString)> {
        let p = loc.path();
        let name = p
            .file_name()
            .ok_or_else(|| err(libc::EINVAL))?
            .to_os_string();
        let dir = self.walk(root_of(loc), p.parent().unwrap_or(Path::new("")))?;
        if self.ns.nodes[&dir].kind != Kind::Dir {
            return Err(err(libc::ENOTDIR));
        }
        Ok((dir, name))
    }

    fn nlink(&self, ino: u64) -> u32 {
        let n = &self.ns.nodes[&ino];
        if n.kind == Kind::Dir {
            let subdirs = n
                .entries
                .values()
                .filter(|c| self.ns.nodes[*c].kind == Kind::Dir)
                .count();
            return 2 + subdirs as u32;
        }
        self.ns
            .nodes
            .values()
            .flat_map(|d| d.entries.values())
            .filter(|c| **c == ino)
            .count() as u32
    }

    fn stat(&self, ino: u64) -> DiskStat {
        let n = &self.ns.nodes[&ino];
        let size = match n.kind {
            Kind::File => self.data.get(&ino).map(|d| d.len()).unwrap_or(0) as u64,
            Kind::Symlink => n.link.len() as u64,
            _ => 0,
        };
        let attr = Attr {
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            rdev: n.rdev,
            size,
            blocks: size.div_ceil(512),
            atime: n.atime,
            mtime: n.mtime,
            ctime: n.mtime,
        };
        DiskStat {
            ino,
            dev: 1,
            kind: n.kind,
            nlink: self.nlink(ino),
            attr,
        }
    }

    fn set_meta(&mut self, ino: u64, kind: Kind, meta: &Meta) {
        let n = self.ns.nodes.get_mut(&ino).expect("resolved");
        n.uid = meta.uid;
        n.gid = meta.gid;
        if kind != Kind::Symlink {
            n.mode = meta.mode & 0o7777;
        }
        if let Some(x) = &meta.xattrs {
            n.xattrs = x.iter().cloned().collect();
        }
        n.atime = meta.atime;
        n.mtime = meta.mtime;
    }
}

fn root_of(loc: &Loc) -> u64 {
    match loc {
        Loc::Target(_) => TARGET,
        Loc::Side(_) => SIDE,
    }
}

impl Backing for SimDisk {
    fn stat(&self, loc: &Loc) -> io::Result<DiskStat> {
        let s = self.sim.lock();
        s.alive()?;
        let ino = s.resolve(loc)?;
        Ok(s.stat(ino))
    }

    fn read_dir(&self, loc: &Loc) -> io::Result<Vec<DirItem>> {
        let s = self.sim.lock();
        s.alive()?;
        let ino = s.resolve(loc)?;
        let n = &s.ns.nodes[&ino];
        if n.kind != Kind::Dir {
            return Err(err(libc::ENOTDIR));
        }
        Ok(n.entries
            .iter()
            .map(|(name, c)| DirItem {
                name: name.clone(),
                kind: Some(s.ns.nodes[c].kind),
                ino: *c,
            })
            .collect())
    }

    fn read_link(&self, loc: &Loc) -> io::Result<Vec<u8>> {
        let s = self.sim.lock();
        s.alive()?;
        let n = &s.ns.nodes[&s.resolve(loc)?];
        if n.kind != Kind::Symlink {
            Err(err(libc::EINVAL))
        } else {
            Ok(n.link.clone())
        }
    }

    fn read_xattrs(&self, loc: &Loc) -> io::Result<XattrList> {
        let s = self.sim.lock();
        s.alive()?;
        Ok(s.ns.nodes[&s.resolve(loc)?]
            .xattrs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn read_data(&self, loc: &Loc, _ino: Option<u64>, dst: &File) -> io::Result<()> {
        let s = self.sim.lock();
        s.alive()?;
        let data = s.data.get(&s.resolve(loc)?).cloned().unwrap_or_default();
        dst.set_len(0)?;
        (&*dst).write_all(&data)
    }

    fn create(&self, loc: &Loc, content: NewContent<'_>, meta: &Meta) -> io::Result<u64> {
        self.make(loc, content, meta, true)
    }

    fn create_unsynced(&self, loc: &Loc, content: NewContent<'_>, meta: &Meta) -> io::Result<u64> {
        self.make(loc, content, meta, false)
    }

    /// One durability point per object (its fsync), then the directory's.
    fn sync_created(&self, locs: &[Loc], dir: &Loc) -> io::Result<()> {
        for l in locs {
            let mut s = self.sim.lock();
            s.alive()?;
            let ino = s.resolve(l)?;
            s.point()?;
            match s.ns.nodes[&ino].kind {
                Kind::File => {
                    let d = s.data.get(&ino).cloned().unwrap_or_default();
                    s.synced.insert(ino, d);
                }
                _ => s.commit(),
            }
        }
        self.sync_dir(dir)
    }

    fn write_in_place(&self, w: &InPlace<'_>) -> io::Result<Option<DiskStat>> {
        let mut s = self.sim.lock();
        s.alive()?;
        let ino = match s.resolve(w.loc) {
            Ok(i) => i,
            Err(_) => return Ok(None),
        };
        if s.ns.nodes[&ino].kind != Kind::File
            || ino != w.ino
            || s.nlink(ino) != 1
            || !(w.unchanged)(&s.stat(ino))
        {
            return Ok(None);
        }
        let mut d = Vec::new();
        let mut r = w.src;
        std::io::Seek::rewind(&mut r)?;
        r.read_to_end(&mut d)?;
        s.data.insert(ino, d.clone());
        let n = s.ns.nodes.get_mut(&ino).unwrap();
        n.atime = w.atime;
        n.mtime = w.mtime;
        s.changed();
        s.point()?;
        s.synced.insert(ino, d);
        Ok(Some(s.stat(ino)))
    }

    fn make_dir(&self, loc: &Loc) -> io::Result<()> {
        let mut s = self.sim.lock();
        s.alive()?;
        let (dir, name) = s.parent(loc)?;
        if s.ns.nodes[&dir].entries.contains_key(&name) {
            return Ok(());
        }
        let ino = s.alloc(Kind::Dir, 0o700);
        s.ns.nodes.get_mut(&dir).unwrap().entries.insert(name, ino);
        s.changed();
        Ok(())
    }

    fn rename(&self, from: &Loc, to: &Loc) -> io::Result<()> {
        let mut s = self.sim.lock();
        s.alive()?;
        let (fd, fname) = s.parent(from)?;
        let (td, tname) = s.parent(to)?;
        let ino = *s.ns.nodes[&fd]
            .entries
            .get(&fname)
            .ok_or_else(|| err(libc::ENOENT))?;
        if let Some(&old) = s.ns.nodes[&td].entries.get(&tname) {
            if old == ino {
                return Ok(());
            }
            let (ok, od) = (
                s.ns.nodes[&ino].kind == Kind::Dir,
                s.ns.nodes[&old].kind == Kind::Dir,
            );
            if ok != od {
                return Err(err(if od { libc::EISDIR } else { libc::ENOTDIR }));
            }
            if od && !s.ns.nodes[&old].entries.is_empty() {
                return Err(err(libc::ENOTEMPTY));
            }
        }
        s.ns.nodes.get_mut(&fd).unwrap().entries.remove(&fname);
        s.ns.nodes.get_mut(&td).unwrap().entries.insert(tname, ino);
        s.changed();
        Ok(())
    }

    fn link(&self, from: &Loc, to: &Loc) -> io::Result<()> {
        let mut s = self.sim.lock();
        s.alive()?;
        let ino = s.resolve(from)?;
        if s.ns.nodes[&ino].kind == Kind::Dir {
            return Err(err(libc::EPERM));
        }
        let (td, tname) = s.parent(to)?;
        if s.ns.nodes[&td].entries.contains_key(&tname) {
            return Err(err(libc::EEXIST));
        }
        s.ns.nodes.get_mut(&td).unwrap().entries.insert(tname, ino);
        s.changed();
        Ok(())
    }

    fn remove(&self, loc: &Loc) -> io::Result<()> {
        let mut s = self.sim.lock();
        s.alive()?;
        let (dir, name) = s.parent(loc)?;
        s.ns.nodes
            .get_mut(&dir)
            .unwrap()
            .entries
            .remove(&name)
            .ok_or_else(|| err(libc::ENOENT))?;
        s.changed();
        Ok(())
    }

    fn set_meta(&self, loc: &Loc, kind: Kind, meta: &Meta) -> io::Result<()> {
        let mut s = self.sim.lock();
        s.alive()?;
        let ino = s.resolve(loc)?;
        s.set_meta(ino, kind, meta);
        s.changed();
        Ok(())
    }

    fn set_times(&self, loc: &Loc, atime: Ts, mtime: Ts) -> io::Result<()> {
        let mut s = self.sim.lock();
        s.alive()?;
        let ino = s.resolve(loc)?;
        let n = s.ns.nodes.get_mut(&ino).unwrap();
        n.atime = atime;
        n.mtime = mtime;
        s.changed();
        Ok(())
    }

    fn sync_dir(&self, loc: &Loc) -> io::Result<()> {
        let mut s = self.sim.lock();
        s.alive()?;
        s.resolve(loc)?;
        s.point()?;
        s.commit();
        Ok(())
    }

    fn write_file(&self, loc: &Loc, bytes: &[u8]) -> io::Result<()> {
        let mut s = self.sim.lock();
        s.alive()?;
        let (dir, name) = s.parent(loc)?;
        let mut tmp = name.clone();
        tmp.push(".tmp");
        let ino = s.alloc(Kind::File, 0o600);
        s.ns.nodes
            .get_mut(&dir)
            .unwrap()
            .entries
            .insert(tmp.clone(), ino);
        s.data.insert(ino, bytes.to_vec());
        s.changed();
        s.point()?;
        s.synced.insert(ino, bytes.to_vec());
        let d = s.ns.nodes.get_mut(&dir).unwrap();
        d.entries.remove(&tmp);
        d.entries.insert(name, ino);
        s.changed();
        s.point()?;
        s.commit();
        Ok(())
    }

    fn read_file(&self, loc: &Loc) -> io::Result<Vec<u8>> {
        let s = self.sim.lock();
        s.alive()?;
        let ino = s.resolve(loc)?;
        if s.ns.nodes[&ino].kind != Kind::File {
            return Err(err(libc::EISDIR));
        }
        Ok(s.data.get(&ino).cloned().unwrap_or_default())
    }
}

/// What a tree looks like: path -> (kind, mode, uid, gid, content or link target, xattrs),
/// plus the sets of paths that share an inode.
pub type Picture = (
    BTreeMap<String, (Kind, u32, u32, u32, Vec<u8>, BTreeMap<OsString, Vec<u8>>)>,
    Vec<Vec<String>>,
);

/// The target's tree in a durable state, with each file's durable data.
pub fn picture(d: &Durable) -> Picture {
    let mut files = BTreeMap::new();
    let mut by_ino: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut stack = vec![(TARGET, String::new())];
    while let Some((ino, path)) = stack.pop() {
        for (name, c) in &d.ns.nodes[&ino].entries {
            let p = format!("{path}/{}", name.to_string_lossy());
            let n = &d.ns.nodes[c];
            let content = match n.kind {
                Kind::File => d.data.get(c).cloned().unwrap_or_default(),
                Kind::Symlink => n.link.clone(),
                _ => Vec::new(),
            };
            files.insert(
                p.clone(),
                (n.kind, n.mode, n.uid, n.gid, content, n.xattrs.clone()),
            );
            if n.kind == Kind::Dir {
                stack.push((*c, p));
            } else {
                by_ino.entry(*c).or_default().push(p);
            }
        }
    }
    let mut links: Vec<Vec<String>> = by_ino
        .into_values()
        .filter(|v| v.len() > 1)
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    links.sort();
    (files, links)
}

/// What is in the side directory (names only).
pub fn side_names(d: &Durable) -> Vec<String> {
    d.ns.nodes[&SIDE]
        .entries
        .keys()
        .map(|k| k.to_string_lossy().into_owned())
        .collect()
}
