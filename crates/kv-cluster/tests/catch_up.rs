//! A follower that was down while the others moved on so far that their
//! logs no longer hold what it lacks: restarted from its data directory,
//! it catches up (from the leader's snapshot), and then serves as a full
//! member: with the old leader stopped, the cluster it forms with the
//! third member holds every acknowledged write.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, Contents, eventually, purged_index, read_all, within};
use kv_cluster::{ClusterNode, NodeId, PendingWrite};
use kv_store::replica::{encode_delete, encode_put};

const WRITES: u64 = 3_000;
const KEYS: u64 = 700;

/// Op `i` of the workload: mostly puts over a key space smaller than the
/// number of ops (so keys are overwritten), every seventh a delete.
fn op(i: u64, model: &mut Contents) -> Vec<u8> {
    let key = format!("key-{:04}", i % KEYS).into_bytes();
    if i % 7 == 3 {
        model.remove(&key);
        encode_delete(&key)
    } else {
        let value = format!("value-{i}").into_bytes();
        model.insert(key.clone(), value.clone());
        encode_put(&key, &value)
    }
}

/// Writes ops `range` on `leader`, up to `window` in flight, asserting
/// each is acknowledged; returns the Raft index of the last one.
async fn write_ops(
    leader: &ClusterNode,
    range: std::ops::Range<u64>,
    window: usize,
    model: &mut Contents,
) -> u64 {
    let mut last = 0;
    let ops: Vec<u64> = range.collect();
    for chunk in ops.chunks(window) {
        let pending: Vec<(u64, PendingWrite)> = chunk
            .iter()
            .map(|i| (*i, leader.submit(op(*i, model))))
            .collect();
        for (i, p) in pending {
            let r = within(Duration::from_secs(10), "a write", p.wait())
                .await
                .unwrap_or_else(|e| panic!("write {i} refused: {e}"));
            assert!(r.error.is_none(), "write {i}: {r:?}");
            last = last.max(r.index);
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_purged_log_catches_up_and_can_lead() {
    let started = Instant::now();
    let mut cluster = Cluster::start(3, false, |c| {
        c.snapshot_every = 500;
        // Writes share entries: few entries to keep, so the purge passes
        // the stopped follower.
        c.keep_after_snapshot = 10;
    })
    .await;
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let others: Vec<NodeId> = cluster
        .members
        .keys()
        .copied()
        .filter(|id| *id != leader)
        .collect();
    let (lagging, other) = (others[0], others[1]);
    let mut model = Contents::new();

    // The follower holds a little before it goes down.
    let first = write_ops(cluster.node(leader), 0..20, 20, &mut model).await;
    cluster
        .applied(lagging, first, Duration::from_secs(5))
        .await;
    cluster.stop(lagging).await;

    // The other two go far beyond it, and snapshot so that their logs are
    // purged past everything it holds.
    let last = write_ops(cluster.node(leader), 20..WRITES, 100, &mut model).await;
    for id in [leader, other] {
        cluster.applied(id, last, Duration::from_secs(10)).await;
        within(
            Duration::from_secs(5),
            "checkpoint",
            cluster.node(id).checkpoint(),
        )
        .await
        .unwrap();
    }
    let leader_dir = cluster.raft_dir(leader);
    let purged = eventually(
        Duration::from_secs(10),
        "the leader's log is purged past the stopped follower's",
        || purged_index(&leader_dir).filter(|p| *p > first),
        || format!("purged: {:?}", purged_index(&leader_dir)),
    )
    .await;
    println!(
        "the follower stopped at index {first}; the leader's log is purged to {purged} of {last}"
    );

    // Restarted from its data directory on its old address, it catches up.
    let restarted = Instant::now();
    cluster.restart(lagging).await;
    cluster
        .applied(lagging, last, Duration::from_secs(20))
        .await;
    println!(
        "caught up {} entries in {:?}",
        last - first,
        restarted.elapsed()
    );

    // Without the old leader, the two left must elect one and commit: the
    // restarted member is needed for every quorum from now on.
    cluster.stop(leader).await;
    let new_leader = cluster
        .leader_among(&[lagging, other], Duration::from_secs(10))
        .await;
    assert_ne!(new_leader, leader);
    let last = write_ops(
        cluster.node(new_leader),
        WRITES..WRITES + 50,
        50,
        &mut model,
    )
    .await;
    let read = read_all(cluster.node(new_leader)).await;
    assert_eq!(
        read.len(),
        model.len(),
        "the new leader {new_leader} holds another number of keys"
    );
    assert!(
        read == model,
        "the new leader {new_leader} lost or changed an acknowledged write"
    );

    // The restarted member's own state, read back from its snapshot once
    // stopped, is the same.
    cluster.applied(lagging, last, Duration::from_secs(5)).await;
    assert_snapshot_holds(&mut cluster, lagging, last, &model).await;
    cluster.shutdown().await;
    println!("catch-up test took {:?}", started.elapsed());
}

/// A follower that lacks entries larger than one append may carry (the
/// network cuts an append at `MAX_APPEND_BYTES` and reports a partial
/// success to openraft): restarted, it receives them all, a few at a time,
/// and holds exactly what was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_lacking_large_entries_gets_them_in_appends_cut_short() {
    let mut cluster = Cluster::start(3, false, |_| {}).await;
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let lagging = *cluster
        .members
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    let mut model = Contents::new();
    let put = |i: u64, model: &mut Contents| {
        let key = format!("large-{i:03}").into_bytes();
        // Larger than a batch's 64 KiB, so alone in its entry, and two of
        // them are more than one append carries.
        let value = vec![b'a' + (i % 26) as u8; (kv_cluster::network::MAX_APPEND_BYTES / 2) + 1];
        model.insert(key.clone(), value.clone());
        encode_put(&key, &value)
    };
    let first = leader_write(&cluster, leader, put(0, &mut model)).await;
    cluster
        .applied(lagging, first, Duration::from_secs(5))
        .await;
    cluster.stop(lagging).await;

    let mut last = first;
    for i in 1..24 {
        last = leader_write(&cluster, leader, put(i, &mut model)).await;
    }
    cluster.restart(lagging).await;
    cluster
        .applied(lagging, last, Duration::from_secs(20))
        .await;
    assert_snapshot_holds(&mut cluster, lagging, last, &model).await;
    cluster.shutdown().await;
}

/// Has member `id` snapshot its state at `last`, stops it, and asserts
/// that the snapshot holds exactly `model`.
async fn assert_snapshot_holds(cluster: &mut Cluster, id: NodeId, last: u64, model: &Contents) {
    let state = cluster.stop_and_read(id, last).await;
    assert!(
        state == *model,
        "member {id}'s state differs: {} keys, {} expected",
        state.len(),
        model.len()
    );
}

/// Writes `command` on `leader` and returns its Raft index, asserting it
/// was acknowledged.
async fn leader_write(cluster: &Cluster, leader: NodeId, command: Vec<u8>) -> u64 {
    let r = within(
        Duration::from_secs(10),
        "a write",
        cluster.node(leader).submit(command).wait(),
    )
    .await
    .unwrap_or_else(|e| panic!("write refused: {e}"));
    assert!(r.error.is_none(), "{r:?}");
    r.index
}
