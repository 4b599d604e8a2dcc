//! Heap allocations per request on the authenticated request path, counted by a wrapping
//! global allocator: one authenticated `GET /properties/1` through `app()` to a local
//! upstream over loopback (the gateway's side and the in-process upstream's side are both
//! counted, so the figure is an upper bound for the gateway).
//!
//! Then the heap held per idle keep-alive connection: a real server on a loopback port,
//! connections opened one after another (one request each, answered, then left open),
//! and the growth of the live heap divided by their number. This is the deterministic
//! part of the per-connection memory; RSS (`benches/compare.sh`) adds allocator page
//! granularity and varies from run to run.
//!
//!     cargo bench --bench allocations

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use support::{authenticated_get, bench_bearer, config, start_upstream};

/// Counts allocations and allocated bytes, then defers to the system allocator.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Bytes currently allocated.
static LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
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
        let app = gateway::app(config.clone());
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
        idle_connections(config, bearer).await;
    });
}

/// Live heap bytes per idle keep-alive connection to a real server.
async fn idle_connections(config: Arc<gateway::config::Config>, bearer: String) {
    let server = gateway::server::Server::bind(config).await.expect("bind");
    let addr = server.local_addrs()[0];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let request =
        format!("GET /properties/1 HTTP/1.1\r\nHost: localhost\r\nAuthorization: {bearer}\r\n\r\n");
    // Warm up (upstream connection, lazily built state), then measure.
    drop(open_idle(addr, request.clone(), 200).await);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let n = 2000;
    let before = LIVE.load(Ordering::Relaxed);
    let conns = open_idle(addr, request, n).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let after = LIVE.load(Ordering::Relaxed);
    println!(
        "idle keep-alive connections: {:.0} bytes of live heap per connection (over {n} connections, one request each)",
        (after - before) as f64 / n as f64
    );
    drop(conns);
    let _ = stop.send(());
    let _ = running.await;
}

/// Open `n` connections one after another from a blocking thread, one request each read
/// to its end, and return them still open.
async fn open_idle(
    addr: std::net::SocketAddr,
    request: String,
    n: usize,
) -> Vec<std::net::TcpStream> {
    tokio::task::spawn_blocking(move || {
        (0..n)
            .map(|_| {
                let mut conn = std::net::TcpStream::connect(addr).expect("connect");
                conn.write_all(request.as_bytes()).expect("send");
                let mut response = [0u8; 4096];
                let mut len = 0;
                // The bench upstream's body ends with `}`; it fits in one buffer.
                while len == 0 || response[len - 1] != b'}' {
                    let read = conn.read(&mut response[len..]).expect("read");
                    assert!(read > 0, "connection closed before the response ended");
                    len += read;
                }
                assert!(response.starts_with(b"HTTP/1.1 200"));
                conn
            })
            .collect()
    })
    .await
    .expect("client thread")
}
