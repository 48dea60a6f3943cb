//! Shared by the cluster tests: members in one process over real TCP on
//! 127.0.0.1, directly or each behind a [`proxy::Proxy`], that can be
//! stopped and restarted from their data directories; waits that poll a
//! condition up to a deadline; and a member's state read back from its
//! snapshot once it is stopped; and ([`linearizability`]) a checker for
//! the histories that concurrent clients record.
//!
//! A test that panics drops its tokio runtime, which cancels every member
//! and proxy task and closes their sockets; the temporary directories go
//! with the [`Cluster`].

#![allow(dead_code)]

pub mod linearizability;
pub mod proxy;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kv_cluster::{ClusterConfig, ClusterNode, Node, NodeId, StateMachine};
use kv_proto::RaftState;
use kv_store::replica::Replica;
use prost::Message;
use tokio::net::TcpListener;

use proxy::{Faults, Proxy};

/// The model of the store's contents the tests compare against.
pub type Contents = BTreeMap<Vec<u8>, Vec<u8>>;

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(10);

/// Polls `cond` until it returns `Some`, panicking with `what` (and the
/// last state `describe` gives) after `timeout`.
pub async fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = cond() {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}; {}",
            describe()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Awaits `fut`, panicking with `what` if it takes longer than `timeout`.
pub async fn within<T>(timeout: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(timeout, fut).await {
        Ok(t) => t,
        Err(_) => panic!("{what}: no answer within {timeout:?}"),
    }
}

/// A cluster under test.
pub struct Cluster {
    pub members: BTreeMap<NodeId, Node>,
    /// The running members.
    pub nodes: BTreeMap<NodeId, ClusterNode>,
    /// One per member when proxied, in front of its peer listener.
    pub proxies: BTreeMap<NodeId, Proxy>,
    /// Where each member's own listener is bound.
    listen: BTreeMap<NodeId, SocketAddr>,
    dirs: BTreeMap<NodeId, tempfile::TempDir>,
    tune: fn(&mut ClusterConfig),
}

impl Cluster {
    /// Starts members `1..=n`; with `proxied`, every member's peer address
    /// is a proxy forwarding to its listener. `tune` adjusts each config.
    pub async fn start(n: u64, proxied: bool, tune: fn(&mut ClusterConfig)) -> Cluster {
        let mut listeners = BTreeMap::new();
        let mut members = BTreeMap::new();
        let mut proxies = BTreeMap::new();
        let mut listen = BTreeMap::new();
        for id in 1..=n {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let peer_addr = if proxied {
                let proxy = Proxy::start(addr).await;
                let a = proxy.addr();
                proxies.insert(id, proxy);
                a
            } else {
                addr
            };
            members.insert(
                id,
                Node {
                    client_addr: format!("client-of-{id}"),
                    peer_addr: peer_addr.to_string(),
                },
            );
            listen.insert(id, addr);
            listeners.insert(id, listener);
        }
        let mut cluster = Cluster {
            members,
            nodes: BTreeMap::new(),
            proxies,
            listen,
            dirs: BTreeMap::new(),
            tune,
        };
        for (id, listener) in listeners {
            cluster.dirs.insert(id, tempfile::tempdir().unwrap());
            cluster.launch(id, listener).await;
        }
        cluster
    }

    fn config(&self, id: NodeId) -> ClusterConfig {
        let mut config = ClusterConfig::new(id, self.members.clone(), self.dir(id).to_path_buf());
        (self.tune)(&mut config);
        config
    }

    async fn launch(&mut self, id: NodeId, listener: TcpListener) {
        let node = ClusterNode::start(self.config(id), listener)
            .await
            .unwrap_or_else(|e| panic!("member {id} failed to start: {e}"));
        self.nodes.insert(id, node);
    }

    /// Member `id`'s data directory.
    pub fn dir(&self, id: NodeId) -> &Path {
        self.dirs[&id].path()
    }

    /// Member `id`'s Raft directory.
    pub fn raft_dir(&self, id: NodeId) -> PathBuf {
        self.dir(id).join("raft")
    }

    pub fn node(&self, id: NodeId) -> &ClusterNode {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("member {id} is not running"))
    }

    /// Stops member `id`.
    pub async fn stop(&mut self, id: NodeId) {
        let node = self
            .nodes
            .remove(&id)
            .unwrap_or_else(|| panic!("member {id} is not running"));
        node.shutdown().await;
    }

    /// Starts member `id` again from its data directory, its listener on
    /// the same address as before (waiting for the old one to be closed).
    pub async fn restart(&mut self, id: NodeId) {
        assert!(!self.nodes.contains_key(&id), "member {id} is running");
        let addr = self.listen[&id];
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(Instant::now() < deadline, "cannot bind {addr} again: {e}");
                    tokio::time::sleep(POLL).await;
                }
            }
        };
        self.launch(id, listener).await;
    }

    /// The running members' (id, role, term, leader, last log, applied).
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (id, node) in &self.nodes {
            let s = node.status();
            out.push_str(&format!(
                "[{id}: {} term {} leader {:?} last {:?} applied {:?}] ",
                s.role, s.term, s.leader, s.last_log_index, s.applied_index
            ));
        }
        out
    }

    /// The leader that every member of `among` (running) names and that
    /// says it leads.
    pub fn agreed_leader(&self, among: &[NodeId]) -> Option<NodeId> {
        let mut leader = None;
        for id in among {
            let s = self.node(*id).status();
            match (leader, s.leader) {
                (_, None) => return None,
                (None, Some(l)) => leader = Some(l),
                (Some(a), Some(b)) if a != b => return None,
                _ => {}
            }
        }
        let l = leader?;
        (among.contains(&l) && self.node(l).status().role == "leader").then_some(l)
    }

    /// Waits for a leader every running member agrees on.
    pub async fn leader(&self, timeout: Duration) -> NodeId {
        let running: Vec<NodeId> = self.nodes.keys().copied().collect();
        self.leader_among(&running, timeout).await
    }

    /// Waits for a leader that the members of `among` agree on.
    pub async fn leader_among(&self, among: &[NodeId], timeout: Duration) -> NodeId {
        eventually(
            timeout,
            &format!("a leader agreed by {among:?}"),
            || self.agreed_leader(among),
            || self.describe(),
        )
        .await
    }

    /// Waits until member `id` has applied `index`.
    pub async fn applied(&self, id: NodeId, index: u64, timeout: Duration) {
        eventually(
            timeout,
            &format!("member {id} applies index {index}"),
            || self.node(id).status().applied_index.filter(|a| *a >= index),
            || self.describe(),
        )
        .await;
    }

    /// `from` can no longer send anything to `to`: `to`'s proxy drops
    /// `from`'s requests, and `from`'s proxy its responses to `to`.
    pub fn block(&self, from: NodeId, to: NodeId) {
        self.proxies[&to].update(from, |f| f.drop_requests = true);
        self.proxies[&from].update(to, |f| f.drop_responses = true);
    }

    /// Cuts `id` off from every other member, both ways.
    pub fn isolate(&self, id: NodeId) {
        for other in self.members.keys().copied().filter(|o| *o != id) {
            self.block(id, other);
            self.block(other, id);
        }
    }

    /// Every peer message is held back for `delay`.
    pub fn delay_all(&self, delay: Duration) {
        for p in self.proxies.values() {
            p.set_all(Faults {
                delay,
                ..Faults::default()
            });
        }
    }

    /// No faults any more.
    pub fn heal(&self) {
        for p in self.proxies.values() {
            p.heal();
        }
    }

    /// Frames the proxies threw away.
    pub fn dropped(&self) -> u64 {
        self.proxies.values().map(Proxy::dropped).sum()
    }

    /// Has member `id` snapshot its state at `index` (or later), then
    /// stops it and returns the state its snapshot holds.
    pub async fn stop_and_read(&mut self, id: NodeId, index: u64) -> Contents {
        within(
            Duration::from_secs(5),
            "checkpoint",
            self.node(id).checkpoint(),
        )
        .await
        .unwrap_or_else(|e| panic!("member {id}: checkpoint refused: {e}"));
        let dir = self.raft_dir(id);
        eventually(
            Duration::from_secs(10),
            &format!("member {id}'s snapshot reaches index {index}"),
            || snapshot_index(&dir).filter(|i| *i >= index),
            || format!("on disk: {:?}", snapshot_index(&dir)),
        )
        .await;
        self.stop(id).await;
        read_state(&dir)
    }

    /// Stops every running member.
    pub async fn shutdown(mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
        self.proxies.clear();
    }
}

/// The index of the snapshot in `raft_dir`, if one is there and readable.
pub fn snapshot_index(raft_dir: &Path) -> Option<u64> {
    // A snapshot being published can be seen half-renamed: then it is not
    // there yet.
    StateMachine::open(raft_dir)
        .ok()?
        .last_applied()
        .map(|l| l.index)
}

/// Everything the snapshot in `raft_dir` holds (of a stopped member).
pub fn read_state(raft_dir: &Path) -> Contents {
    let sm = StateMachine::open(raft_dir).expect("open the state machine");
    sm.read(contents)
}

/// Every key and value of `replica`.
fn contents(replica: &Replica) -> Contents {
    let (keys, more) = replica.keys_within(b"", 0, usize::MAX);
    assert!(!more);
    keys.into_iter()
        .map(|k| {
            let v = replica.get(&k).expect("a listed key has a value");
            (k, v)
        })
        .collect()
}

/// The last purged log index in the Raft state file in `raft_dir`.
pub fn purged_index(raft_dir: &Path) -> Option<u64> {
    let bytes = std::fs::read(raft_dir.join("state")).ok()?;
    RaftState::decode(bytes.as_slice())
        .ok()?
        .purged
        .map(|p| p.index)
}

/// The store's contents read on `leader` with a linearizable read.
pub async fn read_all(node: &ClusterNode) -> Contents {
    within(
        Duration::from_secs(5),
        "linearizable read",
        node.read(contents),
    )
    .await
    .unwrap_or_else(|e| panic!("linearizable read on member {}: {e}", node.node_id()))
}
