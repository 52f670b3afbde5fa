//! The pre-gate allocates nothing when the sequences match. A counting global allocator is
//! installed for this test binary only; it counts allocations made by the current thread while
//! counting is switched on.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use bitnet_crossval::{validate_token_parity, TokenParityChecker};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn count<R>(f: impl FnOnce() -> R) -> (usize, R) {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (ALLOCATIONS.load(Ordering::SeqCst), r)
}

#[test]
fn matching_tokens_allocate_nothing_and_mismatches_do() {
    let prompt = "The capital of France is".to_string();
    for n in [0usize, 1, 10, 1_000, 100_000] {
        let rust: Vec<u32> = (0..n as u32).map(|i| i % 128_256).collect();
        let cpp: Vec<i32> = rust.iter().map(|&t| t as i32).collect();
        let (allocs, ok) = count(|| validate_token_parity(&rust, &cpp, &prompt).is_ok());
        assert!(ok, "n={n}");
        assert_eq!(
            allocs, 0,
            "validate_token_parity allocated {allocs} times for n={n}"
        );
        let (allocs, ok) = count(|| TokenParityChecker::validate(&rust, &cpp, &prompt).is_ok());
        assert!(ok);
        assert_eq!(
            allocs, 0,
            "TokenParityChecker::validate allocated for n={n}"
        );
    }
    // The counter works: the mismatch path must allocate (it copies both sequences).
    let (allocs, is_err) = count(|| validate_token_parity(&[1, 2], &[1, 3], &prompt).is_err());
    assert!(is_err);
    assert!(
        allocs >= 3,
        "counter saw only {allocs} allocations on the error path"
    );
}
