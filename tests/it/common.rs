//! Helpers shared by the integration tests.

use asdfs::backing::{Backing, RealBacking};
use asdfs::flush::{Flusher, recover_disk};
use asdfs::store::types::{Ctx, NodeId, Stat};
use asdfs::store::{Store, StoreSetup};
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A scratch directory on tmpfs (the machine's /tmp is a disk).
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("asdfs-test-")
        .tempdir_in("/dev/shm")
        .expect("tmpdir on /dev/shm")
}

fn open_dir(p: &Path) -> OwnedFd {
    use nix::fcntl::{OFlag, open};
    open(
        p,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .expect("open dir")
}

/// A store and flusher over `<tmp>/disk/target`, without a mount.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub store: Arc<Store>,
    pub flusher: Flusher,
}

pub const CTX: Ctx = Ctx {
    uid: 0,
    gid: 0,
    pid: 1,
};

impl Fixture {
    pub fn new() -> Fixture {
        let tmp = scratch();
        std::fs::create_dir_all(tmp.path().join("disk/target")).unwrap();
        Self::open(tmp)
    }

    pub fn target(&self) -> PathBuf {
        self.tmp.path().join("disk/target")
    }

    /// Opens the store over an existing layout, taking over the store if `take_over`.
    pub fn open(tmp: tempfile::TempDir) -> Fixture {
        Self::open_with(tmp, false)
    }

    pub fn open_with(tmp: tempfile::TempDir, take_over: bool) -> Fixture {
        Self::open_wrapped(tmp, take_over, |b| b)
    }

    /// Like `open_with`, with the real backing wrapped (to inject faults).
    pub fn open_wrapped(
        tmp: tempfile::TempDir,
        take_over: bool,
        wrap: impl FnOnce(Arc<dyn Backing>) -> Arc<dyn Backing>,
    ) -> Fixture {
        let side = tmp.path().join("disk/.target-asdfs");
        std::fs::create_dir_all(&side).unwrap();
        let private = tmp.path().join("store/private");
        std::fs::create_dir_all(&private).unwrap();
        let real: Arc<dyn Backing> = Arc::new(RealBacking::new(
            open_dir(&tmp.path().join("disk/target")),
            open_dir(&side),
        ));
        let backing = wrap(real);
        let generation = recover_disk(backing.as_ref()).unwrap().generation;
        let setup = StoreSetup {
            backing,
            private_dir: &private,
            target: Path::new("/t"),
            base_gen: generation,
        };
        let store = Arc::new(if take_over {
            Store::take_over(setup).unwrap()
        } else {
            Store::fresh(setup).unwrap()
        });
        let flusher = Flusher::new(store.clone(), generation);
        Fixture {
            tmp,
            store,
            flusher,
        }
    }

    /// The node at a path, by lookups from the root.
    pub fn node(&self, path: &str) -> Stat {
        let mut cur = NodeId::ROOT;
        let mut st = self.store.getattr(cur).unwrap();
        for c in path.split('/').filter(|c| !c.is_empty()) {
            st = self.store.lookup(cur, OsStr::new(c)).unwrap();
            cur = st.ino;
        }
        st
    }

    pub fn write_file(&self, dir: &str, name: &str, data: &[u8]) -> NodeId {
        let parent = self.node(dir).ino;
        let (st, fh) = self
            .store
            .create(CTX, parent, OsStr::new(name), 0o644, 0o022, true)
            .unwrap();
        self.store.write(CTX, fh, 0, data).unwrap();
        self.store.release(fh).unwrap();
        st.ino
    }

    pub fn read_file(&self, path: &str) -> Vec<u8> {
        let id = self.node(path).ino;
        let fh = self.store.open(CTX, id, false, false).unwrap();
        let data = self.store.read(fh, 0, 1 << 20).unwrap();
        self.store.release(fh).unwrap();
        data
    }
}
