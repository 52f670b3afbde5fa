//! A memory budget for one thread: what keeps a hostile chat template from exhausting memory.
//!
//! Fuel bounds how many instructions a template runs, but not what one instruction allocates:
//! `{% set ns.s = ns.s ~ ns.s %}` doubles a string per step, so 64 steps ask for 2⁶⁴ bytes
//! and the process dies in the allocator (Rust aborts on a failed allocation, and a global
//! allocator may not unwind). The only place that sees every allocation is the global
//! allocator, so [`BoundedAllocator`] wraps the system allocator and charges each allocation
//! of a *budgeted* thread (the template renderer's) to that thread's budget. Threads without a
//! budget pay one thread-local read per allocation and are never limited.
//!
//! When a budgeted thread overdraws, or its watcher cancels it (a time limit), the allocation
//! that noticed never returns: the thread sleeps for good, holding at most its budget, and
//! the [`Watch`] tells the waiting thread why. The process stays healthy and exits normally
//! later; the sleeping thread ends with it.
//!
//! The budget only works where [`BoundedAllocator`] is the process's global allocator: the
//! `bitnet` and `xtask` binaries install it. Elsewhere (a library's test harness) rendering
//! still has its fuel, output, nesting and time limits, but no memory limit.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The system allocator, plus a per-thread allocation budget for the template renderer.
///
/// Install it in a binary that renders chat templates from untrusted model files:
///
/// ```no_run
/// #[global_allocator]
/// static ALLOCATOR: bitnet_inference::template::BoundedAllocator =
///     bitnet_inference::template::BoundedAllocator;
///
/// fn main() {}
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct BoundedAllocator;

/// Shared between a budgeted thread and the thread waiting for it.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    /// Set by the budgeted thread when it overdraws its budget (it then sleeps forever).
    pub(crate) exceeded: AtomicBool,
    /// Set by the waiting thread to stop the budgeted one at its next allocation.
    pub(crate) cancelled: AtomicBool,
}

thread_local! {
    /// Bytes this thread may still allocate; `isize::MAX` means "not budgeted".
    static REMAINING: Cell<isize> = const { Cell::new(isize::MAX) };
    /// The watch of a budgeted thread (null otherwise). The thread owns an `Arc<Watch>` for
    /// as long as it runs, so the pointer stays valid while it is set.
    static WATCH: Cell<*const Watch> = const { Cell::new(ptr::null()) };
}

/// Give the current thread a budget of `bytes`, reported through `watch`. The caller must keep
/// `watch` alive for the rest of the thread's life (the renderer's thread owns an `Arc` of it).
pub(crate) fn budget_this_thread(bytes: usize, watch: &Watch) {
    REMAINING.with(|r| r.set(isize::try_from(bytes).unwrap_or(isize::MAX - 1)));
    WATCH.with(|w| w.set(watch));
}

/// Charge `bytes` (negative: a refund) to the current thread's budget, if it has one.
#[inline]
fn charge(bytes: isize) {
    // `try_with`: a thread being torn down may still free memory; it is not budgeted then.
    let _ = REMAINING.try_with(|remaining| {
        let left = remaining.get();
        if left == isize::MAX {
            return;
        }
        let left = left.saturating_sub(bytes).min(isize::MAX - 1);
        remaining.set(left);
        let watch = WATCH.try_with(Cell::get).unwrap_or(ptr::null());
        // SAFETY: set by `budget_this_thread` from a `Watch` the thread keeps alive.
        let Some(watch) = (unsafe { watch.as_ref() }) else {
            return;
        };
        let overdrawn = left < 0;
        if overdrawn {
            watch.exceeded.store(true, Ordering::SeqCst);
        }
        if overdrawn || watch.cancelled.load(Ordering::SeqCst) {
            // Never return the memory asked for: the thread stops here for good. Sleeping
            // allocates nothing, so this cannot recurse into the allocator.
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    });
}

fn signed(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the only
// addition is bookkeeping in thread-local `Cell`s, which neither allocates nor unwinds.
unsafe impl GlobalAlloc for BoundedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        charge(signed(layout.size()));
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(signed(layout.size()));
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        charge(-signed(layout.size()));
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        charge(signed(new_size).saturating_sub(signed(layout.size())));
        System.realloc(ptr, layout, new_size)
    }
}
