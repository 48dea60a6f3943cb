//! Three members, each behind a fault-injecting proxy: the leader cut off
//! both ways, the leader's sends cut one way, and every peer message
//! delayed.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, Contents, read_all, within};
use kv_cluster::{ClusterConfig, ClusterNode, NodeId, RequestError};
use kv_store::replica::encode_put;

/// Puts `key = value` on `leader`, asserting it is acknowledged; its Raft
/// index.
async fn put(leader: &ClusterNode, model: &mut Contents, key: &str, value: &str) -> u64 {
    let r = within(
        Duration::from_secs(5),
        &format!("put {key}"),
        leader.write(encode_put(key.as_bytes(), value.as_bytes())),
    )
    .await
    .unwrap_or_else(|e| panic!("put {key} on member {}: {e}", leader.node_id()));
    assert!(r.error.is_none(), "put {key}: {r:?}");
    model.insert(key.as_bytes().to_vec(), value.as_bytes().to_vec());
    r.index
}

fn others(cluster: &Cluster, id: NodeId) -> Vec<NodeId> {
    cluster
        .members
        .keys()
        .copied()
        .filter(|o| *o != id)
        .collect()
}

/// Waits until every running member has applied `index` and they report
/// the same applied index, then checks the state of each (read back from
/// its snapshot once stopped) against `model`; stops them all.
async fn converge_and_compare(mut cluster: Cluster, index: u64, model: &Contents) {
    let ids: Vec<NodeId> = cluster.nodes.keys().copied().collect();
    for id in &ids {
        cluster.applied(*id, index, Duration::from_secs(10)).await;
    }
    let applied: Vec<_> = ids
        .iter()
        .map(|id| cluster.node(*id).status().applied_index)
        .collect();
    assert!(
        applied.iter().all(|a| *a == applied[0]),
        "applied indexes differ: {applied:?}"
    );
    for id in ids {
        let state = cluster.stop_and_read(id, index).await;
        assert!(
            state == *model,
            "member {id}'s state differs: {} keys, {} expected; extra or changed: {:?}",
            state.len(),
            model.len(),
            state
                .iter()
                .filter(|(k, v)| model.get(*k) != Some(*v))
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                .collect::<Vec<_>>()
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_acknowledges_nothing_and_the_majority_goes_on() {
    let cluster = Cluster::start(3, true, |_| {}).await;
    let old = cluster.leader(Duration::from_secs(10)).await;
    let majority = others(&cluster, old);
    let mut model = Contents::new();
    for i in 0..20 {
        put(cluster.node(old), &mut model, &format!("before-{i}"), "1").await;
    }

    cluster.isolate(old);
    let isolated = Instant::now();
    // Writes to the isolated leader: taken, never acknowledged.
    let mut lost = Vec::new();
    for i in 0..5 {
        let key = format!("lost-{i}");
        let pending = cluster.node(old).submit(encode_put(key.as_bytes(), b"x"));
        lost.push((key, tokio::spawn(pending.wait())));
    }

    // The majority elects a leader of its own.
    let new = cluster
        .leader_among(&majority, Duration::from_secs(5))
        .await;
    println!(
        "isolated leader {old}: members {majority:?} elected {new} after {:?}",
        isolated.elapsed()
    );
    assert_ne!(new, old);
    let mut last = 0;
    for i in 0..20 {
        last = put(cluster.node(new), &mut model, &format!("during-{i}"), "2").await;
    }

    // The isolated leader cannot confirm a read, and has acknowledged none
    // of its writes, 3 s after they were submitted.
    let read =
        tokio::time::timeout(Duration::from_secs(1), cluster.node(old).read(|s| s.len())).await;
    assert!(
        !matches!(read, Ok(Ok(_))),
        "the isolated old leader served a linearizable read: {read:?}"
    );
    let until = isolated + Duration::from_secs(3);
    for (key, wait) in &mut lost {
        match tokio::time::timeout_at(tokio::time::Instant::from_std(until), wait).await {
            Err(_) | Ok(Ok(Err(_))) => {}
            Ok(answer) => panic!("the isolated leader answered {key}: {answer:?}"),
        }
    }
    assert!(cluster.dropped() > 0, "the proxies dropped nothing");

    // Healed: the old leader learns of the new term and gives up its
    // unreplicated entries. It had taken them as leader, so their writers
    // are told the outcome is unknown (openraft does not say whether the
    // entry could still be committed elsewhere), never that it failed.
    cluster.heal();
    for (key, wait) in lost {
        let answer = within(Duration::from_secs(10), &key, wait).await.unwrap();
        assert!(
            matches!(answer, Err(RequestError::OutcomeUnknown(_))),
            "{key} after the heal: {answer:?}"
        );
    }
    let leader = cluster.leader(Duration::from_secs(10)).await;
    last = last.max(put(cluster.node(leader), &mut model, "after", "3").await);
    let read = read_all(cluster.node(leader)).await;
    assert!(read == model, "the leader's state: {read:?}");
    converge_and_compare(cluster, last, &model).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_sends_are_lost_is_replaced_and_follows() {
    let cluster = Cluster::start(3, true, |_| {}).await;
    let old = cluster.leader(Duration::from_secs(10)).await;
    let majority = others(&cluster, old);
    let mut model = Contents::new();
    put(cluster.node(old), &mut model, "before", "1").await;

    // The old leader still hears the others, but nothing it sends arrives.
    for o in &majority {
        cluster.block(old, *o);
    }
    let cut = Instant::now();
    let pending = cluster.node(old).submit(encode_put(b"lost", b"x"));
    let lost = tokio::spawn(pending.wait());

    let new = cluster
        .leader_among(&majority, Duration::from_secs(5))
        .await;
    println!(
        "leader {old} cut one way: members {majority:?} elected {new} after {:?}",
        cut.elapsed()
    );
    assert_ne!(new, old);
    // The new leader's messages reach the old one: it steps down, and the
    // write it took as leader but could not replicate has an unknown
    // outcome for its writer.
    let answer = within(Duration::from_secs(10), "the lost write", lost)
        .await
        .unwrap();
    assert!(
        matches!(answer, Err(RequestError::OutcomeUnknown(_))),
        "the write on the cut-off leader: {answer:?}"
    );
    let mut last = 0;
    for i in 0..10 {
        last = put(cluster.node(new), &mut model, &format!("during-{i}"), "2").await;
    }
    // The new leader's appends reach it too: it follows and applies them,
    // though none of its answers gets back.
    cluster.applied(old, last, Duration::from_secs(10)).await;
    assert_eq!(cluster.node(old).status().leader, Some(new));
    assert_eq!(cluster.node(old).status().role, "follower");

    cluster.heal();
    let leader = cluster.leader(Duration::from_secs(10)).await;
    last = last.max(put(cluster.node(leader), &mut model, "after", "3").await);
    let read = read_all(cluster.node(leader)).await;
    assert!(read == model, "the leader's state: {read:?}");
    converge_and_compare(cluster, last, &model).await;
}

/// Every peer message delayed by 50 ms (a round trip of 100 ms and more):
/// writes are still committed.
async fn commits_with_delayed_messages(tune: fn(&mut ClusterConfig)) {
    let cluster = Cluster::start(3, true, tune).await;
    cluster.delay_all(Duration::from_millis(50));
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let mut model = Contents::new();
    let started = Instant::now();
    let first = tokio::time::timeout(
        Duration::from_secs(5),
        cluster.node(leader).write(encode_put(b"slow-first", b"1")),
    )
    .await;
    assert!(
        matches!(first, Ok(Ok(_))),
        "the first write with 50 ms peer delays: {first:?}; members: {}",
        cluster.describe()
    );
    model.insert(b"slow-first".to_vec(), b"1".to_vec());
    let mut last = 0;
    for i in 0..10 {
        last = put(cluster.node(leader), &mut model, &format!("slow-{i}"), "1").await;
    }
    println!(
        "with 50 ms per peer message: 11 writes in {:?}",
        started.elapsed()
    );
    let read = read_all(cluster.node(leader)).await;
    assert!(read == model, "the leader's state: {read:?}");
    converge_and_compare(cluster, last, &model).await;
}

/// openraft 0.9 gives an AppendEntries call one heartbeat interval to
/// answer, so the heartbeat must exceed the peer round trip (see
/// `ClusterConfig::heartbeat`): with 50 ms each way the default 100 ms is
/// too short, and the cluster is run with a 250 ms heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_commit_with_every_peer_message_delayed_and_a_slower_heartbeat() {
    commits_with_delayed_messages(|c| {
        c.heartbeat = Duration::from_millis(250);
        c.election_timeout = (Duration::from_millis(750), Duration::from_millis(1500));
    })
    .await;
}
