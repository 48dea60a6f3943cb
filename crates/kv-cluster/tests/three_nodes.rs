//! Three members in one process, over real TCP on 127.0.0.1: the cluster
//! forms by itself, replicates, answers NOT_LEADER on followers, fails
//! over when the leader stops, and refuses peers of another cluster.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use kv_cluster::{ClusterConfig, ClusterNode, Node, NodeId, RequestError};
use kv_proto::{FrameCodec, PeerRequest, PeerResponse, RaftVoteRequest, peer_request::Rpc};
use kv_store::replica::encode_put;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

struct Cluster {
    _dirs: Vec<tempfile::TempDir>,
    nodes: BTreeMap<NodeId, ClusterNode>,
    members: BTreeMap<NodeId, Node>,
}

async fn start(n: u64) -> Cluster {
    start_without(n, &[]).await
}

/// Starts members `1..=n` of an `n`-member cluster but those `absent`.
async fn start_without(n: u64, absent: &[NodeId]) -> Cluster {
    let mut listeners = BTreeMap::new();
    let mut members = BTreeMap::new();
    for id in 1..=n {
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        members.insert(
            id,
            Node {
                client_addr: format!("client-of-{id}"),
                peer_addr: peer.local_addr().unwrap().to_string(),
            },
        );
        listeners.insert(id, peer);
    }
    // All at once, as processes started together would.
    let mut dirs = Vec::new();
    let mut starting = Vec::new();
    for (id, listener) in listeners {
        if absent.contains(&id) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let config = ClusterConfig::new(id, members.clone(), dir.path().to_path_buf());
        dirs.push(dir);
        starting.push(async move { (id, ClusterNode::start(config, listener).await.unwrap()) });
    }
    let nodes: BTreeMap<NodeId, ClusterNode> = futures::future::join_all(starting)
        .await
        .into_iter()
        .collect();
    Cluster {
        _dirs: dirs,
        nodes,
        members,
    }
}

impl Cluster {
    /// The leader all running members agree on.
    async fn leader(&self) -> NodeId {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut seen = Vec::new();
            for node in self.nodes.values() {
                let s = node.status();
                seen.push(s.leader);
            }
            if let Some(Some(l)) = seen.first()
                && seen.iter().all(|s| *s == Some(*l))
                && self.nodes.contains_key(l)
                && self.nodes[l].status().role == "leader"
            {
                return *l;
            }
            assert!(Instant::now() < deadline, "no agreed leader: {seen:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Members started together do not all stand at once: the first proposes
/// the membership and stands, the others vote for it before their own
/// turn comes. Were they all to stand at once, any of them could win, and
/// the losers would be slow to stand later (see `ClusterNode::start`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_started_together_elect_the_first() {
    let cluster = start(3).await;
    assert_eq!(cluster.leader().await, 1);
    for node in cluster.nodes.into_values() {
        node.shutdown().await;
    }
}

/// Without the first member, the others still form the cluster, the
/// second when its turn comes, and serve writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_others_form_the_cluster_when_the_first_member_is_absent() {
    let cluster = start_without(3, &[1]).await;
    let leader = cluster.leader().await;
    assert_eq!(leader, 2);
    let answer = cluster.nodes[&leader]
        .submit(encode_put(b"k", b"v"))
        .wait()
        .await
        .expect("a write on the leader");
    assert!(answer.error.is_none(), "{answer:?}");
    for node in cluster.nodes.into_values() {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_form_replicate_and_fail_over() {
    let mut cluster = start(3).await;
    let leader = cluster.leader().await;

    // Writes on the leader are committed and applied.
    for i in 0..20u32 {
        let r = cluster.nodes[&leader]
            .write(encode_put(format!("k{i}").as_bytes(), &i.to_le_bytes()))
            .await
            .unwrap();
        assert!(r.error.is_none() && r.seq > 0, "{r:?}");
    }
    let read = cluster.nodes[&leader].read(|s| s.get(b"k7")).await.unwrap();
    assert_eq!(read, Some(7u32.to_le_bytes().to_vec()));

    // A follower refuses, naming the leader's client address.
    let follower = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    match cluster.nodes[&follower].write(encode_put(b"x", b"y")).await {
        Err(RequestError::NotLeader { leader: Some(addr) }) => {
            assert_eq!(addr, cluster.members[&leader].client_addr);
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
    assert!(matches!(
        cluster.nodes[&follower].read(|s| s.len()).await,
        Err(RequestError::NotLeader { .. })
    ));

    // The leader stops: the other two elect a new one, which holds every
    // acknowledged write and takes new ones.
    let old = cluster.nodes.remove(&leader).unwrap();
    let stopped = Instant::now();
    old.shutdown().await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    let r = cluster.nodes[&new_leader]
        .write(encode_put(b"after", b"failover"))
        .await
        .unwrap();
    println!(
        "failover: first write acknowledged {:?} after the leader stopped",
        stopped.elapsed()
    );
    assert!(r.error.is_none());
    let all = cluster.nodes[&new_leader]
        .read(|s| {
            (0..20u32).all(|i| s.get(format!("k{i}").as_bytes()) == Some(i.to_le_bytes().to_vec()))
        })
        .await
        .unwrap();
    assert!(all, "an acknowledged write is missing on the new leader");

    for (_, node) in cluster.nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_another_cluster_is_refused_and_disconnected() {
    let cluster = start(1).await;
    let _ = cluster.leader().await;
    let addr = cluster.members[&1].peer_addr.clone();
    let stream = TcpStream::connect(&addr).await.unwrap();
    let mut conn = Framed::new(
        stream,
        FrameCodec::<PeerResponse, PeerRequest>::new(1 << 20),
    );
    conn.send(PeerRequest {
        id: 1,
        cluster_id: 12345,
        secret: Default::default(),
        from: 9,
        rpc: Some(Rpc::Vote(RaftVoteRequest::default())),
        redis_addr: String::new(),
    })
    .await
    .unwrap();
    // No answer: the connection is closed.
    let next = tokio::time::timeout(Duration::from_secs(10), conn.next())
        .await
        .expect("the refused connection stayed open");
    assert!(next.is_none() || matches!(next, Some(Err(_))), "{next:?}");
    // The member still serves.
    let node = &cluster.nodes[&1];
    assert!(node.write(encode_put(b"a", b"b")).await.is_ok());
    for (_, node) in cluster.nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_member_joins_catches_up_and_votes_and_one_is_removed() {
    let mut cluster = start(3).await;
    let leader = cluster.leader().await;
    for i in 0..50u32 {
        cluster.nodes[&leader]
            .write(encode_put(format!("k{i}").as_bytes(), b"v"))
            .await
            .unwrap();
    }
    // Member 4 starts with --join: the same initial list (it names the
    // cluster), not in it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node4 = Node {
        client_addr: "client-of-4".into(),
        peer_addr: listener.local_addr().unwrap().to_string(),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = ClusterConfig::new(4, cluster.members.clone(), dir.path().to_path_buf());
    config.join = true;
    let fourth = ClusterNode::start(config, listener).await.unwrap();
    cluster._dirs.push(dir);
    cluster.nodes[&leader]
        .add_member(4, node4.clone())
        .await
        .unwrap();
    cluster.members.insert(4, node4);
    cluster.nodes.insert(4, fourth);
    let status = cluster.nodes[&leader].status();
    assert_eq!(status.members.len(), 4, "{status:?}");
    // It caught up: it applies what the leader applied.
    let target = status.applied_index.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.nodes[&4].status().applied_index < Some(target) {
        assert!(Instant::now() < deadline, "member 4 never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Remove a follower; the cluster keeps serving.
    let victim = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader && **id != 4)
        .unwrap();
    let leader = cluster.leader().await;
    cluster.nodes[&leader].remove_member(victim).await.unwrap();
    let removed = cluster.nodes.remove(&victim).unwrap();
    removed.shutdown().await;
    let leader = cluster.leader().await;
    assert!(
        !cluster.nodes[&leader]
            .status()
            .members
            .contains_key(&victim)
    );
    cluster.nodes[&leader]
        .write(encode_put(b"after-remove", b"v"))
        .await
        .unwrap();
    // With three voters (one of them the new member), losing another
    // still leaves a majority: stop the leader, the other two take over.
    let old = cluster.nodes.remove(&leader).unwrap();
    old.shutdown().await;
    let leader = cluster.leader().await;
    let read = cluster.nodes[&leader]
        .read(|s| (s.get(b"k49"), s.get(b"after-remove")))
        .await
        .unwrap();
    assert_eq!(read, (Some(b"v".to_vec()), Some(b"v".to_vec())));
    for (_, node) in cluster.nodes {
        node.shutdown().await;
    }
}
