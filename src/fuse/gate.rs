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

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use parking_lot::{Condvar, Mutex};
use std::cell::RefCell;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

#[derive(Default)]
pub struct Gate {
    state: Mutex<State>,
    parked_cv: Condvar,
    /// The connection's device, polled to see whether requests are queued.
    device: Option<OwnedFd>,
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
    pub fn new(device: Option<OwnedFd>) -> Arc<Gate> {
        Arc::new(Gate {
            device,
            ..Gate::default()
        })
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

    /// Wakes a parked thread when none reads and requests are queued (a long data transfer:
    /// other programs' transfers run beside it, a lone writer wakes nobody).
    pub fn spare_if_queued(&self) {
        let Some(fd) = &self.device else {
            return self.spare();
        };
        let mut p = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let queued = poll(&mut p, PollTimeout::ZERO).is_ok_and(|n| n > 0)
            && p[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLIN));
        if queued {
            self.spare();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{Receiver, channel};
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(5);

    /// Runs `steps` on a thread of its own; each step waits for a go and reports when done;
    /// the thread ends when the sender is dropped.
    fn actor(
        gate: &Arc<Gate>,
        steps: Vec<fn(&Arc<Gate>)>,
    ) -> (std::sync::mpsc::Sender<()>, Receiver<usize>) {
        let (go, went) = channel::<()>();
        let (done, dones) = channel();
        let g = gate.clone();
        std::thread::spawn(move || {
            for (i, step) in steps.into_iter().enumerate() {
                if went.recv().is_err() {
                    return;
                }
                step(&g);
                let _ = done.send(i);
            }
            // The thread (a FUSE request thread's read loop) ends when its sender is dropped.
            while went.recv().is_ok() {}
        });
        (go, dones)
    }

    fn serve(g: &Arc<Gate>) {
        drop(g.enter());
    }

    fn state(g: &Gate) -> (usize, usize) {
        let s = g.state.lock();
        (s.free, s.parked)
    }

    fn wait_parked(g: &Gate, n: usize) {
        let end = std::time::Instant::now() + WAIT;
        while state(g).1 != n {
            assert!(std::time::Instant::now() < end, "never {n} parked");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_thread_parks_while_another_reads_and_leaves_when_the_session_ends() {
        let g = Gate::new(None);
        let (a, a_done) = actor(&g, vec![serve]);
        let (b, b_done) = actor(&g, vec![serve]);
        a.send(()).unwrap();
        assert_eq!(a_done.recv_timeout(WAIT), Ok(0));
        assert_eq!(state(&g), (1, 0), "a reads again");
        b.send(()).unwrap();
        wait_parked(&g, 1);
        assert!(b_done.recv_timeout(Duration::from_millis(50)).is_err());
        // a's thread ends (its read failed): b goes back to its read.
        drop(a);
        assert_eq!(b_done.recv_timeout(WAIT), Ok(0));
        assert!(g.state.lock().ending);
    }

    #[test]
    fn a_request_that_may_block_wakes_a_parked_thread() {
        let g = Gate::new(None);
        let hold = |g: &Arc<Gate>| {
            let turn = g.enter();
            may_block();
            std::mem::forget(turn);
        };
        let (a, a_done) = actor(&g, vec![serve, hold]);
        let (b, b_done) = actor(&g, vec![serve]);
        a.send(()).unwrap();
        assert_eq!(a_done.recv_timeout(WAIT), Ok(0));
        b.send(()).unwrap();
        wait_parked(&g, 1);
        // a takes a request that may block: b is woken to read meanwhile.
        a.send(()).unwrap();
        assert_eq!(a_done.recv_timeout(WAIT), Ok(1));
        assert_eq!(b_done.recv_timeout(WAIT), Ok(0));
        assert_eq!(state(&g), (1, 0));
        drop((a, b));
    }
}
