//! Heap allocations per request on the authenticated request path, counted by a wrapping
//! global allocator: one authenticated `GET /properties/1` through `app()` to a local
//! upstream over loopback (the gateway's side and the in-process upstream's side are both
//! counted, so the figure is an upper bound for the gateway).
//!
//!     cargo bench --bench allocations

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use support::{authenticated_get, bench_bearer, config, start_upstream};

/// Counts allocations and allocated bytes, then defers to the system allocator.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let upstream = start_upstream().await;
        let config = Arc::new(config(&upstream));
        let bearer = bench_bearer(&config);
        let app = gateway::app(config);
        for _ in 0..1000 {
            authenticated_get(app.clone(), &bearer).await; // warm the connection pool, route tables, metrics
        }
        let n = 10_000u64;
        let (a0, b0) = (ALLOCATIONS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
        for _ in 0..n {
            authenticated_get(app.clone(), &bearer).await;
        }
        let (a1, b1) = (ALLOCATIONS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
        println!(
            "authenticated GET through app() and a local upstream: {:.1} allocations and {:.0} bytes allocated per request (over {n} requests)",
            (a1 - a0) as f64 / n as f64,
            (b1 - b0) as f64 / n as f64
        );
    });
}
