//! Test support: a global allocator that counts the heap, so that a test
//! can bound what a call allocates at its peak.
//!
//! A test binary installs it and measures with [`peak_during`]:
//!
//! ```no_run
//! #[global_allocator]
//! static ALLOCATOR: heap_peak::Counting = heap_peak::Counting;
//!
//! let _serial = heap_peak::serial();
//! let peak = heap_peak::peak_during(|| drop(vec![0u8; 1 << 20]));
//! assert!(peak >= 1 << 20);
//! ```
//!
//! The counters are the whole process's: tests that measure take
//! [`serial`] for as long as they measure, so that one test's
//! allocations do not count in another's peak.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Forwards every call to [`System`], counting the bytes live and their
/// peak.
#[derive(Debug)]
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

// SAFETY: every call is forwarded to `System` with the same arguments;
// the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `System.alloc`, with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

/// Keeps other measuring tests of this binary out while it is held.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f` and returns the most heap it held at once beyond what was live
/// before. Meaningful only with [`Counting`] installed as the global
/// allocator and [`serial`] held.
pub fn peak_during(f: impl FnOnce()) -> usize {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed).saturating_sub(base)
}
