//! The benchmark's discard registry (tests/common/discard.rs) as a program of its own, so
//! that scripts/bench-latency.sh can run it across the shaped, delayed link in place of
//! Distribution: what ferry alone makes of a distant link, without a registry's disk and
//! hashing in the way. Not a registry for anything else: it stores nothing.
//!
//!     cargo run --release --example discard-registry -- 10.251.7.2:5000

#[path = "../tests/common/discard.rs"]
mod discard;
#[path = "../tests/common/serve.rs"]
mod serve;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .expect("usage: discard-registry HOST:PORT");
    let listener = std::net::TcpListener::bind(&addr).expect("bind");
    // std listens with a backlog of 128: a burst of new connections (a push's first few
    // hundred requests, all at once through the delay proxy) would overflow it, and a dropped
    // SYN costs the client a second. Registries listen with the system's maximum.
    use std::os::fd::AsRawFd as _;
    // SAFETY: listen(2) on a socket we own; it only changes the queue's length.
    unsafe { libc::listen(listener.as_raw_fd(), 4096) };
    let _sink = discard::Discard::start_on(listener);
    eprintln!("discard registry on {addr}");
    loop {
        std::thread::park();
    }
}
