//! Changes made while flushes run: whatever a flush does not capture (because it came after
//! its snapshot) must stay dirty and reach the disk with a later flush. Driven through the
//! store without a mount, with flushes back to back on another thread.

use crate::common::{CTX, Fixture};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn disk_files(f: &Fixture) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(f.target()).unwrap() {
        let e = e.unwrap();
        out.insert(
            e.file_name().to_string_lossy().into_owned(),
            std::fs::read(e.path()).unwrap(),
        );
    }
    out
}

fn overwrite(f: &Fixture, name: &str, data: &[u8]) {
    let root = f.node("").ino;
    let id = match f.store.lookup(root, OsStr::new(name)) {
        Ok(st) => st.ino,
        Err(_) => {
            let (st, fh) = f
                .store
                .create(CTX, root, OsStr::new(name), 0o644, 0, true)
                .unwrap();
            f.store.release(fh).unwrap();
            st.ino
        }
    };
    let fh = f.store.open(crate::common::CTX, id, true, true).unwrap();
    f.store.write(CTX, fh, 0, data).unwrap();
    f.store.release(fh).unwrap();
    // As the kernel does once it no longer needs the inode: unlinked nodes get freed.
    f.store.forget(id, 1);
}

#[test]
fn changes_made_during_flushes_are_never_lost() {
    for seed in 0..6u64 {
        let f = Arc::new(Fixture::new());
        let stop = Arc::new(AtomicBool::new(false));
        let flusher = {
            let (f, stop) = (f.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    f.flusher
                        .flush()
                        .unwrap_or_else(|e| panic!("seed {seed}: flush failed: {e:#}"));
                    n += 1;
                }
                n
            })
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let root = f.node("").ino;
        for i in 0..3000 {
            let a = format!("f{}", rng.random_range(0..6));
            match rng.random_range(0..10) {
                0..=4 => {
                    let data = format!("{i} ").repeat(rng.random_range(1..50)).into_bytes();
                    overwrite(&f, &a, &data);
                    model.insert(a, data);
                }
                5..=7 => {
                    let b = format!("f{}", rng.random_range(0..6));
                    if let Some(v) = model.remove(&a) {
                        f.store
                            .rename(root, OsStr::new(&a), root, OsStr::new(&b), 0)
                            .unwrap();
                        model.insert(b, v);
                    }
                }
                _ => {
                    if model.remove(&a).is_some() {
                        let id = f.store.lookup(root, OsStr::new(&a)).unwrap().ino;
                        f.store.unlink(root, OsStr::new(&a)).unwrap();
                        f.store.forget(id, 1);
                    }
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
        let flushes = flusher.join().unwrap();
        f.flusher.flush().unwrap();
        assert_eq!(
            disk_files(&f),
            model,
            "seed {seed}: after {flushes} concurrent flushes and a final one"
        );
    }
}
