//! The flush timer of one target, in either mode: a flush every interval; after a failure,
//! sooner, with a growing delay; stopped at the end of the session.

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub struct FlushTimer {
    next: Mutex<Instant>,
    interval: Duration,
    stopping: AtomicBool,
    /// No timed flushes meanwhile (an unmount's own flush runs).
    paused: AtomicBool,
    wake: Sender<()>,
    woken: Receiver<()>,
}

impl FlushTimer {
    pub fn new(interval: Duration) -> FlushTimer {
        let (wake, woken) = crossbeam_channel::unbounded();
        FlushTimer {
            next: Mutex::new(Instant::now() + interval),
            interval,
            stopping: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            wake,
            woken,
        }
    }

    /// When the next flush is due.
    pub fn next(&self) -> Instant {
        *self.next.lock()
    }

    /// Whether the session is ending (no more timed flushes).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Holds timed flushes back (`true`) or lets them run again.
    pub fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.wake.send(());
    }

    /// Runs the timer of `t` (whose timer `of` gives) in a thread: `flush` flushes, and
    /// after a failure says how many there were in a row.
    pub fn start<T: Send + Sync + 'static>(
        t: Arc<T>,
        of: fn(&T) -> &FlushTimer,
        flush: fn(&T) -> Result<(), u32>,
    ) {
        let spawned = std::thread::Builder::new()
            .name("flush-timer".into())
            .spawn(move || {
                let timer = of(&t);
                loop {
                    let wait = timer.next().saturating_duration_since(Instant::now());
                    let _ = timer.woken.recv_timeout(wait);
                    if timer.is_stopping() {
                        return;
                    }
                    if Instant::now() < timer.next() {
                        continue;
                    }
                    if timer.paused.load(Ordering::SeqCst) {
                        *timer.next.lock() = Instant::now() + Duration::from_secs(1);
                        continue;
                    }
                    let after = match flush(&t) {
                        Ok(()) => timer.interval,
                        Err(failures) => retry_delay(failures, timer.interval),
                    };
                    *timer.next.lock() = Instant::now() + after;
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the flush timer");
        }
    }
}

/// The wait after `failures` failed flushes in a row: doubling from 2 s, at most `cap`.
pub(super) fn retry_delay(failures: u32, cap: Duration) -> Duration {
    let secs = 1u64 << failures.min(16);
    Duration::from_secs(secs)
        .min(cap)
        .max(Duration::from_secs(1))
}
