//! A fault-injecting TCP proxy in front of one member's peer listener.
//!
//! It forwards whole kv-proto frames (4-byte big-endian length, then the
//! body), never parts of one, so a dropped message leaves the stream
//! intact for the next. Each connection is attributed to the peer that
//! opened it from the `from` field of its first request, and the faults
//! are chosen per peer: requests of that peer to the member can be
//! dropped, the member's responses to it can be dropped, and every frame
//! passed on can be held back for a delay. Faults are looked up for every
//! frame, so a change applies to open connections at once.
//!
//! With one proxy per member, "X cannot send to Y" is two rules: Y's proxy
//! drops X's requests, and X's proxy drops its responses to Y.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use kv_proto::PeerRequest;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// The largest frame body passed on (the members' default `max_frame`).
const MAX_FRAME: usize = 64 << 20;

/// What happens to the traffic of one peer through the proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// The peer's requests to the member are read and thrown away.
    pub drop_requests: bool,
    /// The member's responses to the peer are read and thrown away.
    pub drop_responses: bool,
    /// Every frame passed on is held this long first (order is kept).
    pub delay: Duration,
}

#[derive(Debug, Default)]
struct Rules {
    /// For peers without rules of their own.
    all: Faults,
    by_peer: BTreeMap<u64, Faults>,
}

#[derive(Debug)]
struct Shared {
    target: Mutex<SocketAddr>,
    rules: Mutex<Rules>,
    connections: Mutex<Vec<JoinHandle<()>>>,
    passed: AtomicU64,
    dropped: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn faults(&self, peer: u64) -> Faults {
        let rules = lock(&self.rules);
        rules.by_peer.get(&peer).copied().unwrap_or(rules.all)
    }
}

/// A running proxy; dropping it closes its listener and every connection.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Peer to member.
    Request,
    /// Member to peer.
    Response,
}

impl Proxy {
    /// Listens on a fresh port of 127.0.0.1 and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            target: Mutex::new(target),
            rules: Mutex::new(Rules::default()),
            connections: Mutex::new(Vec::new()),
            passed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Proxy {
            addr,
            shared,
            accept,
        }
    }

    /// Where peers connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forwards new connections to `target` from now on.
    pub fn set_target(&self, target: SocketAddr) {
        *lock(&self.shared.target) = target;
    }

    /// Changes the faults for the connections opened by `peer`.
    pub fn update(&self, peer: u64, change: impl FnOnce(&mut Faults)) {
        let mut rules = lock(&self.shared.rules);
        let all = rules.all;
        change(rules.by_peer.entry(peer).or_insert(all));
    }

    /// Sets the faults for every peer.
    pub fn set_all(&self, faults: Faults) {
        let mut rules = lock(&self.shared.rules);
        rules.by_peer.clear();
        rules.all = faults;
    }

    /// No faults any more.
    pub fn heal(&self) {
        self.set_all(Faults::default());
    }

    /// Closes every open connection (as a member's death would).
    pub fn reset(&self) {
        for c in lock(&self.shared.connections).drain(..) {
            c.abort();
        }
    }

    /// Frames passed on so far.
    pub fn passed(&self) -> u64 {
        self.shared.passed.load(Ordering::Relaxed)
    }

    /// Frames thrown away so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors or similar: let the others run first.
            tokio::task::yield_now().await;
            continue;
        };
        let connection = tokio::spawn(forward(client, shared.clone()));
        let mut connections = lock(&shared.connections);
        connections.retain(|c| !c.is_finished());
        connections.push(connection);
    }
}

/// One proxied connection, until either side closes it.
async fn forward(client: TcpStream, shared: Arc<Shared>) {
    let target = *lock(&shared.target);
    let Ok(upstream) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let peer = Arc::new(AtomicU64::new(0));
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    // Dropping the set (at the end, or when this task is aborted) aborts
    // the pumps, which closes both sockets.
    let mut pumps = JoinSet::new();
    let (tx, rx) = mpsc::unbounded_channel();
    pumps.spawn(read_frames(
        client_read,
        tx,
        shared.clone(),
        peer.clone(),
        Direction::Request,
    ));
    pumps.spawn(write_frames(upstream_write, rx));
    let (tx, rx) = mpsc::unbounded_channel();
    pumps.spawn(read_frames(
        upstream_read,
        tx,
        shared,
        peer,
        Direction::Response,
    ));
    pumps.spawn(write_frames(client_write, rx));
    let _ = pumps.join_next().await;
}

async fn read_frames(
    mut from: OwnedReadHalf,
    to: mpsc::UnboundedSender<(Instant, Vec<u8>)>,
    shared: Arc<Shared>,
    peer: Arc<AtomicU64>,
    direction: Direction,
) {
    loop {
        let mut header = [0u8; 4];
        if from.read_exact(&mut header).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes(header) as usize;
        if len > MAX_FRAME {
            return;
        }
        let mut frame = vec![0u8; 4 + len];
        frame[..4].copy_from_slice(&header);
        if from.read_exact(&mut frame[4..]).await.is_err() {
            return;
        }
        if direction == Direction::Request
            && peer.load(Ordering::Relaxed) == 0
            && let Ok(request) = PeerRequest::decode(&frame[4..])
        {
            peer.store(request.from, Ordering::Relaxed);
        }
        let faults = shared.faults(peer.load(Ordering::Relaxed));
        let drop = match direction {
            Direction::Request => faults.drop_requests,
            Direction::Response => faults.drop_responses,
        };
        if drop {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        shared.passed.fetch_add(1, Ordering::Relaxed);
        if to.send((Instant::now() + faults.delay, frame)).is_err() {
            return;
        }
    }
}

async fn write_frames(
    mut to: OwnedWriteHalf,
    mut frames: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
) {
    while let Some((due, frame)) = frames.recv().await {
        tokio::time::sleep_until(due).await;
        if to.write_all(&frame).await.is_err() {
            return;
        }
    }
}
