//! The in-flight byte budget holds the server's memory down under a flood
//! of the largest puts, without losing or failing any of them, and without
//! starving a small client.
//!
//! 64 connections pipeline puts of the maximum value size (4 MiB) for 10 s,
//! each keeping [`WINDOW`] unanswered (512 MiB outstanding in all, twice
//! the budget), overwriting 8 keys (so the map stays at 32 MiB). The server runs with `--max-total-in-flight-bytes 256MiB` (a
//! quarter of the default, so that the bound is reached within a second
//! and the figures are small enough to read) and the default 64 MiB per
//! connection. Meanwhile a separate client reads one small key, one get at
//! a time.
//!
//! Checked:
//! - the server's peak RSS (VmHWM) stays under the budget + the map +
//!   [`MARGIN`] (per-connection buffers, the log's group buffer, the
//!   runtime, allocator slack);
//! - every put sent is answered OK, and afterwards each key holds the
//!   value of its acknowledged put with the highest seq;
//! - the small client's gets have a p99 under [`SMALL_P99`] and a maximum
//!   under [`SMALL_MAX`].
//!
//! The figures are printed (`cargo test -p e2e --test memory_budget --
//! --nocapture`). Before the budget existed, the same load took the server
//! past [`ABORT_RSS`] within seconds; the test kills the server there
//! rather than let it take the machine's memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use e2e::{RawConnection, ServerProcess};
use futures::StreamExt;
use kv_proto::{ClientCodec, GetRequest, PutRequest, Request, request::Command, response};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::FramedRead;

const CONNECTIONS: u64 = 64;
const KEYS: u64 = 8;
const VALUE_SIZE: usize = 4 << 20;
const LOAD: Duration = Duration::from_secs(10);
/// Puts each connection has sent and not yet had answered, at most: 64 × 2
/// × 4 MiB = 512 MiB outstanding, twice the budget, so the server must push
/// back (without the budget it would hold all of it, over the bound); and a bound on what it still has to answer once the
/// load stops (the kernel's socket buffers, which autotune up to 32 MiB a
/// connection here, would otherwise hold gigabytes for it to drain).
const WINDOW: usize = 2;
const MIB: u64 = 1 << 20;
/// The server's `--max-total-in-flight-bytes`.
const BUDGET: u64 = 256 * MIB;
/// The map: one value per key.
const MAP: u64 = KEYS * VALUE_SIZE as u64;
/// What the server may hold beyond the budget and the map: per-connection
/// buffers (16 KiB read ahead, the writer's batch), the commit thread's
/// batch and the log's write of it, a checkpoint's buffer, the runtime, and
/// what the allocator keeps of freed 4 MiB blocks (glibc serves them from
/// per-thread arenas once one has been freed). Measured: a peak about
/// 150 MiB over budget + map on a 2-core machine.
const MARGIN: u64 = 224 * MIB;
/// Where the test gives up and kills the server.
const ABORT_RSS: u64 = 4 * BUDGET + MAP + MARGIN;
/// Bounds on the small client's get latency: generous, for a loaded
/// 2-core machine that also runs the 64 writers.
const SMALL_P99: Duration = Duration::from_secs(1);
const SMALL_MAX: Duration = Duration::from_secs(3);
/// How long the writers may take to get their last answers after the load.
const DRAIN: Duration = Duration::from_secs(60);

fn key(k: u64) -> Bytes {
    Bytes::from(format!("big-{k}"))
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The frame of `Request { id, put { key, value: tag ++ tail } }` up to and
/// including the tag, so that the large shared tail is written from one
/// buffer for every request instead of being copied into each.
fn put_prefix(id: u64, key: &[u8], tag: [u8; 16], value_len: usize) -> Vec<u8> {
    let mut put = vec![0x0a];
    varint(key.len() as u64, &mut put);
    put.extend_from_slice(key);
    put.push(0x12);
    varint(value_len as u64, &mut put);
    let put_len = put.len() + value_len;
    let mut body = vec![0x08];
    varint(id, &mut body);
    body.push(0x1a);
    varint(put_len as u64, &mut body);
    let frame_len = body.len() + put_len;
    let mut frame = Vec::with_capacity(4 + body.len() + put.len() + 16);
    frame.extend_from_slice(&(frame_len as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame.extend_from_slice(&put);
    frame.extend_from_slice(&tag);
    frame
}

fn tag(conn: u64, id: u64) -> [u8; 16] {
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&conn.to_be_bytes());
    t[8..].copy_from_slice(&id.to_be_bytes());
    t
}

/// `VmHWM` or `VmRSS` of `pid`, in bytes.
fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// An acknowledged put: its key, its seq, and its tag.
struct Acked {
    key: u64,
    seq: u64,
    tag: [u8; 16],
}

/// Pipelines puts on one connection until `stop`, while reading every
/// answer; returns the acknowledged puts, in order.
async fn writer(
    addr: std::net::SocketAddr,
    conn: u64,
    tail: Bytes,
    stop: Arc<AtomicBool>,
    sent_bytes: Arc<AtomicU64>,
) -> Vec<Acked> {
    let stream = RawConnection::connect(addr).await.unwrap().into_inner();
    let (read_half, mut write_half) = stream.into_split();
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<(u64, u64, [u8; 16])>();
    let window = Arc::new(Semaphore::new(WINDOW));
    let sending = {
        let window = Arc::clone(&window);
        tokio::spawn(async move {
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) {
                window.acquire().await.unwrap().forget();
                let k = (conn + id) % KEYS;
                let t = tag(conn, id);
                let prefix = put_prefix(id, &key(k), t, VALUE_SIZE);
                sent_tx.send((id, k, t)).unwrap();
                // Whole frames only: a frame cut off halfway would be the
                // client's fault, not the server's.
                write_half.write_all(&prefix).await.unwrap();
                write_half.write_all(&tail).await.unwrap();
                sent_bytes.fetch_add((prefix.len() + tail.len()) as u64, Ordering::Relaxed);
                id += 1;
            }
            write_half
        })
    };
    let mut responses = FramedRead::new(read_half, ClientCodec::new(8 << 20));
    let mut acked = Vec::new();
    let deadline = tokio::time::Instant::now() + LOAD + DRAIN;
    while let Some((id, k, t)) = sent_rx.recv().await {
        let response = tokio::time::timeout_at(deadline, responses.next())
            .await
            .unwrap_or_else(|_| panic!("connection {conn}: no answer to put {id}"))
            .unwrap_or_else(|| panic!("connection {conn}: closed before answering put {id}"))
            .unwrap_or_else(|e| panic!("connection {conn}: {e}"))
            .unwrap_or_else(|e| panic!("connection {conn}: undecodable response: {e}"));
        window.add_permits(1);
        assert_eq!(response.id, id, "connection {conn}: answers out of order");
        match response.result {
            Some(response::Result::Put(put)) => acked.push(Acked {
                key: k,
                seq: put.seq,
                tag: t,
            }),
            other => panic!("connection {conn}: put {id} was not acknowledged: {other:?}"),
        }
    }
    let _write_half = sending.await.unwrap();
    acked
}

/// Reads `probe` one get at a time until `stop`; returns the latencies.
async fn small_client(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut conn = RawConnection::connect(addr).await.unwrap();
    let mut latencies = Vec::new();
    let mut id = 0;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        conn.send(&Request::new(
            id,
            Command::Get(GetRequest {
                key: Bytes::from_static(b"probe"),
            }),
        ))
        .await
        .unwrap();
        let response = conn
            .recv(Duration::from_secs(30))
            .await
            .unwrap()
            .expect("an answer to the small get");
        latencies.push(started.elapsed());
        match response.result {
            Some(response::Result::Get(get)) => assert_eq!(&get.value[..], b"small"),
            other => panic!("small get: {other:?}"),
        }
        id += 1;
        // One get every 10 ms: a client that reads now and then, not a
        // second flood.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_the_largest_puts_stays_within_the_in_flight_budget() {
    let dir = tempfile::tempdir().unwrap();
    let budget = format!("{}MiB", BUDGET / MIB);
    let mut server = ServerProcess::start(
        dir.path(),
        &[
            "--max-total-in-flight-bytes",
            &budget,
            "--max-value-size",
            "4MiB",
        ],
    );
    let addr = server.addr();
    let pid = server.pid();
    {
        let mut conn = RawConnection::connect(addr).await.unwrap();
        conn.send(&Request::new(
            0,
            Command::Put(PutRequest {
                key: Bytes::from_static(b"probe"),
                value: Bytes::from_static(b"small"),
                ..Default::default()
            }),
        ))
        .await
        .unwrap();
        let answer = conn.recv(Duration::from_secs(30)).await.unwrap();
        assert!(matches!(
            answer.and_then(|r| r.result),
            Some(response::Result::Put(_))
        ));
    }
    let base_rss = proc_status_bytes(pid, "VmRSS").unwrap();

    // Watches the server's memory; kills it if it runs away.
    let stop = Arc::new(AtomicBool::new(false));
    let aborted = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (stop, aborted) = (Arc::clone(&stop), Arc::clone(&aborted));
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut peak_rss = 0;
            while !stop.load(Ordering::Relaxed) {
                let Some(rss) = proc_status_bytes(pid, "VmRSS") else {
                    break;
                };
                peak_rss = peak_rss.max(rss);
                if rss > ABORT_RSS {
                    aborted.store(rss, Ordering::SeqCst);
                    e2e::send_signal(pid, "KILL");
                    eprintln!(
                        "server RSS {} MiB after {:.1?}: killed",
                        rss / MIB,
                        started.elapsed()
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            peak_rss
        })
    };

    let tail = Bytes::from(vec![0x5a; VALUE_SIZE - 16]);
    let sent_bytes = Arc::new(AtomicU64::new(0));
    let load_stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let writers: Vec<_> = (0..CONNECTIONS)
        .map(|conn| {
            tokio::spawn(writer(
                addr,
                conn,
                tail.clone(),
                Arc::clone(&load_stop),
                Arc::clone(&sent_bytes),
            ))
        })
        .collect();
    let small = tokio::spawn(small_client(addr, Arc::clone(&load_stop)));
    tokio::time::sleep(LOAD).await;
    load_stop.store(true, Ordering::SeqCst);
    let mut latencies = small.await.unwrap();
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed();
    let peak_hwm = proc_status_bytes(pid, "VmHWM").unwrap_or(0);
    stop.store(true, Ordering::SeqCst);
    let peak_rss = watcher.join().unwrap();
    assert_eq!(
        aborted.load(Ordering::SeqCst),
        0,
        "the server's RSS ran past {} MiB",
        ABORT_RSS / MIB
    );

    // Each key holds the value of its acknowledged put with the highest seq.
    let mut last: HashMap<u64, &Acked> = HashMap::new();
    for a in &acked {
        let entry = last.entry(a.key).or_insert(a);
        if a.seq > entry.seq {
            *entry = a;
        }
    }
    let mut check = RawConnection::connect(addr).await.unwrap();
    for k in 0..KEYS {
        check
            .send(&Request::new(k, Command::Get(GetRequest { key: key(k) })))
            .await
            .unwrap();
        let response = check.recv(Duration::from_secs(30)).await.unwrap().unwrap();
        let Some(response::Result::Get(get)) = response.result else {
            panic!("get {k}: {response:?}");
        };
        let expected = last.get(&k).expect("every key was written");
        assert!(get.found, "key {k} lost");
        assert_eq!(get.value.len(), VALUE_SIZE, "key {k}");
        assert_eq!(
            get.value[..16],
            expected.tag,
            "key {k}: not the last acknowledged value (seq {})",
            expected.seq
        );
        assert!(
            get.value[16..].iter().all(|&b| b == 0x5a),
            "key {k}: value damaged"
        );
    }

    latencies.sort();
    let p99 = percentile(&latencies, 0.99);
    let max = *latencies.last().expect("the small client ran");
    let bound = BUDGET + MAP + MARGIN;
    let peak = peak_hwm.max(peak_rss);
    eprintln!(
        "memory_budget: {} puts of {} MiB acknowledged in {:.1?} ({:.0} MiB/s sent) on {} \
         connections; budget {} MiB, map {} MiB, margin {} MiB: bound {} MiB; server RSS \
         before the load {} MiB, peak (VmHWM) {} MiB; small client: {} gets, p50 {:.1?}, \
         p99 {:.1?}, max {:.1?} (bounds {:?} / {:?})",
        acked.len(),
        VALUE_SIZE >> 20,
        elapsed,
        sent_bytes.load(Ordering::Relaxed) as f64 / MIB as f64 / elapsed.as_secs_f64(),
        CONNECTIONS,
        BUDGET / MIB,
        MAP / MIB,
        MARGIN / MIB,
        bound / MIB,
        base_rss / MIB,
        peak / MIB,
        latencies.len(),
        percentile(&latencies, 0.5),
        p99,
        max,
        SMALL_P99,
        SMALL_MAX,
    );
    assert!(
        acked.len() as u64 >= CONNECTIONS,
        "too few puts to mean anything"
    );
    assert!(
        peak <= bound,
        "peak RSS {} MiB over the bound of {} MiB",
        peak / MIB,
        bound / MIB
    );
    assert!(p99 <= SMALL_P99, "small client p99 {p99:?}");
    assert!(max <= SMALL_MAX, "small client max {max:?}");
    server.sigterm();
    assert!(server.wait_exit(e2e::EXIT_DEADLINE).success());
}
