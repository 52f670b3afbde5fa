//! Worker threads that wait for the next parallel loop by spinning, for the matrix products:
//! a forward pass runs hundreds of small loops per token.
//!
//! rayon's idle workers sleep within microseconds, and waking one costs tens of microseconds —
//! as long as a small model's whole product for one token, so with rayon a second thread
//! bought little. ggml keeps its workers spinning while a graph runs; these workers likewise
//! spin between loops and sleep only after [`SPIN`] without work. Tasks are claimed one by one
//! from a shared counter, so which thread runs a task varies, but never what it computes.
//!
//! The thread count is rayon's (`rayon::current_num_threads()`, which the engine's callers set
//! with a rayon pool), so `--threads` keeps its meaning. One loop runs at a time; a caller that
//! finds the workers busy (another model in the same process) runs its loop on rayon.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps.
const SPIN: Duration = Duration::from_millis(3);

/// Run `task(i)` for every `i` in `0..n`, on the calling thread and up to
/// `rayon::current_num_threads() − 1` spinning workers; returns when every task has finished.
/// A panic in a task is re-raised here.
pub(crate) fn for_each(n: usize, task: &(dyn Fn(usize) + Sync)) {
    let threads = rayon::current_num_threads();
    if n <= 1 || threads <= 1 {
        (0..n).for_each(task);
        return;
    }
    let pool = POOL.get_or_init(Pool::new);
    let mut workers = match pool.dispatch.try_lock() {
        Ok(g) => g,
        // A task panicked in an earlier loop; the pool itself is consistent (`run` waited for
        // every participant before the panic left it).
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => {
            // Another loop is running on the workers: use rayon for this one.
            use rayon::prelude::*;
            (0..n).into_par_iter().for_each(task);
            return;
        }
    };
    while *workers + 1 < threads {
        pool.spawn(*workers);
        *workers += 1;
    }
    pool.run(n, threads - 1, task);
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// One loop as the workers see it.
#[derive(Clone, Copy)]
struct Job {
    /// The loop body, its lifetime erased: valid until every participant has acknowledged.
    task: *const (dyn Fn(usize) + Sync),
    /// Tasks `0..n`.
    n: usize,
    /// Workers `0..helpers` take part.
    helpers: usize,
}

struct Pool {
    /// Held while a loop runs; counts the workers spawned so far.
    dispatch: Mutex<usize>,
    /// Incremented to publish a new `job`.
    epoch: AtomicUsize,
    /// Written only by the dispatcher, under `dispatch`, while no worker reads it (every
    /// participant of the previous loop has acknowledged it).
    job: UnsafeCell<Job>,
    /// The next unclaimed task.
    next: AtomicUsize,
    /// Participating workers that have not finished the current loop.
    pending: AtomicUsize,
    /// Whether a worker's task panicked in the current loop.
    panicked: AtomicBool,
    /// Workers asleep (or about to sleep) on `wake`.
    sleeping: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written by the dispatcher only between loops (under `dispatch`, after every
// participant acknowledged the previous loop) and published by the `epoch` release store;
// workers read it after the acquire load that saw the new epoch. The task it points to is
// `Sync` and outlives the loop (`run` returns only after every participant acknowledged).
unsafe impl Sync for Pool {}
unsafe impl Send for Job {}

impl Pool {
    fn new() -> Pool {
        fn nothing(_: usize) {}
        Pool {
            dispatch: Mutex::new(0),
            epoch: AtomicUsize::new(0),
            job: UnsafeCell::new(Job {
                task: &nothing as &(dyn Fn(usize) + Sync),
                n: 0,
                helpers: 0,
            }),
            next: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleeping: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// Start worker `index` (called under `dispatch`, between loops).
    fn spawn(&'static self, index: usize) {
        let seen = self.epoch.load(Ordering::Acquire);
        std::thread::Builder::new()
            .name(format!("bitnet-spin-{index}"))
            .spawn(move || self.work(index, seen))
            .expect("cannot start a worker thread");
    }

    fn run(&self, n: usize, helpers: usize, task: &(dyn Fn(usize) + Sync)) {
        // SAFETY: only the lifetime is erased; `run` waits below until no worker uses it.
        let task: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(task) };
        // SAFETY: under `dispatch`; every participant of the previous loop has acknowledged.
        unsafe { *self.job.get() = Job { task, n, helpers } };
        self.next.store(0, Ordering::Relaxed);
        self.pending.store(helpers, Ordering::Relaxed);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) > 0 {
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
        // SAFETY: the task is alive for this whole call.
        let ours = catch_unwind(AssertUnwindSafe(|| self.claim(unsafe { &*task }, n)));
        while self.pending.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
        if let Err(p) = ours {
            resume_unwind(p);
        }
        if self.panicked.swap(false, Ordering::Relaxed) {
            panic!("a task of a parallel loop panicked on a worker thread");
        }
    }

    /// Run unclaimed tasks until none is left.
    fn claim(&self, task: &(dyn Fn(usize) + Sync), n: usize) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return;
            }
            task(i);
        }
    }

    fn work(&self, index: usize, mut seen: usize) {
        loop {
            seen = self.wait(seen);
            // SAFETY: published by the epoch this worker just observed (acquire).
            let job = unsafe { *self.job.get() };
            if index < job.helpers {
                // SAFETY: the dispatcher keeps the task alive until `pending` reaches zero.
                let task = unsafe { &*job.task };
                if catch_unwind(AssertUnwindSafe(|| self.claim(task, job.n))).is_err() {
                    self.panicked.store(true, Ordering::Relaxed);
                }
                self.pending.fetch_sub(1, Ordering::Release);
            }
        }
    }

    /// Wait until the epoch differs from `seen`: spin for [`SPIN`], then sleep.
    fn wait(&self, seen: usize) -> usize {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let e = self.epoch.load(Ordering::Acquire);
            if e != seen {
                return e;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(4096) && start.elapsed() > SPIN {
                let mut g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                self.sleeping.fetch_add(1, Ordering::SeqCst);
                while self.epoch.load(Ordering::SeqCst) == seen {
                    g = self.wake.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                self.sleeping.fetch_sub(1, Ordering::SeqCst);
                drop(g);
                return self.epoch.load(Ordering::Acquire);
            }
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_whatever_the_thread_count() {
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for n in [0usize, 1, 2, 7, 1000] {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.install(|| {
                    for_each(n, &|i| {
                        hits[i].fetch_add(1, Ordering::Relaxed);
                    })
                });
                assert!(
                    hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                    "{threads} {n}"
                );
            }
        }
    }

    #[test]
    fn a_panicking_task_panics_the_caller_and_the_pool_keeps_working() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.install(|| {
                for_each(64, &|i| {
                    assert!(i != 40, "task 40 fails");
                })
            })
        }));
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        pool.install(|| {
            for_each(64, &|_| {
                count.fetch_add(1, Ordering::Relaxed);
            })
        });
        assert_eq!(count.load(Ordering::Relaxed), 64);
    }
}
