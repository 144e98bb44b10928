//! The benchmark's delaying TCP proxy (scripts/bench-latency.sh): every byte is written
//! `DELAY_MS` after it was read, in each direction, without limiting throughput (reads go on
//! meanwhile, up to a bandwidth-delay product's worth held, so the sender still feels
//! back-pressure as on a real link). With 20 ms each way it turns a local link into one with
//! 40 ms of round trip; this kernel has no netem.
//!
//! It replaces a Python asyncio proxy that spent 0.7 CPU seconds of a 1.7 s push of 3,200
//! requests: on this 2-core machine that was time taken from ferry and the registry, so the
//! far runs measured the proxy too. This one is a single thread of tokio.
//!
//!     delay-proxy LISTEN_HOST:PORT TARGET_HOST:PORT DELAY_MS [--handshake]
//!
//! With --handshake a new connection also costs the round trip of TCP's handshake before its
//! first byte goes (without it, connecting is free: the proxy accepts locally).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

const CHUNK: usize = 256 << 10;
/// Bytes held per direction: 1 Gbit/s x 40 ms is 5 MB, plus room.
const HELD: usize = 8 << 20;

/// One direction: read as it comes, write each piece `delay` after it was read.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let room = Arc::new(Semaphore::new(HELD));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Bytes, OwnedSemaphorePermit)>();
    let feed = async move {
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            buf.reserve(CHUNK);
            let n = from.read_buf(&mut buf).await.unwrap_or(0);
            let data = buf.split().freeze();
            let permit = room
                .clone()
                .acquire_many_owned(n as u32)
                .await
                .expect("never closed");
            let _ = tx.send((Instant::now() + delay, data, permit));
            if n == 0 {
                return;
            }
        }
    };
    let drain = async move {
        while let Some((due, data, permit)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if data.is_empty() {
                let _ = to.shutdown().await;
                return;
            }
            if to.write_all(&data).await.is_err() {
                return;
            }
            drop(permit);
        }
    };
    tokio::join!(feed, drain);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: delay-proxy LISTEN_HOST:PORT TARGET_HOST:PORT DELAY_MS [--handshake]";
    let (listen, target) = (args.get(1).expect(usage), args.get(2).expect(usage).clone());
    let delay_ms: f64 = args.get(3).and_then(|d| d.parse().ok()).expect(usage);
    let delay = Duration::from_secs_f64(delay_ms / 1000.0);
    let handshake = args.get(4).map(String::as_str) == Some("--handshake");
    let listener = TcpListener::bind(listen).await.expect("bind");
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let target = target.clone();
        tokio::spawn(async move {
            if handshake {
                // the local accept was instant; a real link takes a round trip (SYN, SYN-ACK)
                // before the first byte can go
                tokio::time::sleep(2 * delay).await;
            }
            let Ok(upstream) = TcpStream::connect(&target).await else {
                return;
            };
            let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
            let (cr, cw) = client.into_split();
            let (ur, uw) = upstream.into_split();
            tokio::join!(pipe(cr, uw, delay), pipe(ur, cw, delay));
        });
    }
}
