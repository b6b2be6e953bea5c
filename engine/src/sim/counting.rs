//! A global allocator that counts, for memory and allocation measurements
//! in tests and examples. Declare it in the binary:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: piazza::sim::CountingAlloc = piazza::sim::CountingAlloc;
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};

static LIVE: AtomicIsize = AtomicIsize::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting live bytes and allocation calls.
pub struct CountingAlloc;

impl CountingAlloc {
    /// Bytes allocated and not yet freed (0 unless this is the global
    /// allocator).
    pub fn live_bytes() -> isize {
        LIVE.load(Ordering::Relaxed)
    }

    /// Allocation calls (`alloc` and `realloc`) so far.
    pub fn allocations() -> u64 {
        CALLS.load(Ordering::Relaxed)
    }
}

// SAFETY: forwards every call to the system allocator unchanged, only
// counting.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, new) }
    }
}
