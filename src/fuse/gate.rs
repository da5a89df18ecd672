//! One hot FUSE request thread (design.md §9.3). The kernel hands each request to the
//! thread that has waited longest, so with four threads reading, every request wakes a
//! different, cold thread, and a request the kernel sends on its own (RELEASE after a close,
//! FORGET after an unlink) wakes a second one while the first still works. The gate parks
//! a thread that finishes a request while another counted thread already reads: one thread
//! stays hot and takes queued requests without sleeping. A request that may block (a wait
//! in the store, disk I/O, an fsync, a large read or write) calls [`may_block`] first,
//! which wakes a parked thread to read meanwhile.
//!
//! A thread is counted once it has served a request (before, it reads without the gate
//! knowing). When a counted thread leaves the session (the connection ended: its read
//! failed) its thread-local member ends the gate and every parked thread goes back to read,
//! sees the end too and leaves: a parked thread never outlives the session.

use parking_lot::{Condvar, Mutex};
use std::cell::RefCell;
use std::sync::Arc;

#[derive(Default)]
pub struct Gate {
    state: Mutex<State>,
    parked_cv: Condvar,
}

#[derive(Default)]
struct State {
    /// Counted threads reading the connection (or on their way back to it).
    free: usize,
    parked: usize,
    /// Parked threads asked to read.
    wanted: usize,
    ending: bool,
}

/// The gate of the session this thread serves; its drop (the thread's exit) ends the gate.
struct Member(Arc<Gate>);

impl Drop for Member {
    fn drop(&mut self) {
        self.0.end();
    }
}

thread_local! {
    static MEMBER: RefCell<Option<Member>> = const { RefCell::new(None) };
}

/// A request being served; dropped after its reply.
pub struct Turn<'a>(&'a Gate);

impl Gate {
    pub fn new() -> Arc<Gate> {
        Arc::new(Gate::default())
    }

    /// At the start of a request.
    pub fn enter(self: &Arc<Self>) -> Turn<'_> {
        let counted = MEMBER.with(|m| {
            let mut m = m.borrow_mut();
            let counted = m.is_some();
            if !counted {
                *m = Some(Member(self.clone()));
            }
            counted
        });
        if counted {
            let mut s = self.state.lock();
            s.free = s.free.saturating_sub(1);
        }
        Turn(self)
    }

    /// Wakes a parked thread when none reads: this thread may not be back soon.
    fn spare(&self) {
        let mut s = self.state.lock();
        if s.free == 0 && s.parked > s.wanted && !s.ending {
            s.wanted += 1;
            self.parked_cv.notify_one();
        }
    }

    fn end(&self) {
        self.state.lock().ending = true;
        self.parked_cv.notify_all();
    }

    /// After a request: park while another counted thread reads, then read.
    fn leave(&self) {
        let mut s = self.state.lock();
        if s.free >= 1 && s.wanted == 0 && !s.ending && !std::thread::panicking() {
            s.parked += 1;
            while s.wanted == 0 && !s.ending {
                self.parked_cv.wait(&mut s);
            }
            s.parked -= 1;
            s.wanted = s.wanted.saturating_sub(1);
        }
        s.free += 1;
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// Called before anything that may keep this FUSE thread long (no-op on other threads).
pub fn may_block() {
    MEMBER.with(|m| {
        if let Some(Member(g)) = &*m.borrow() {
            g.spare();
        }
    });
}
