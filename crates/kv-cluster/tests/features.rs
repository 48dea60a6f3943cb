//! Transactions, counters and expiry in a cluster: the leader logs each
//! transaction as asked, every replica decides it with kv-store's one
//! function at apply, and the leader's sweeper removes expired keys through
//! the log, so all three members end with the same state, with no expired
//! key left in memory.

mod common;

use std::time::Duration;

use common::{Cluster, eventually};
use kv_cluster::CommandResult;
use kv_store::replica::{Refused, encode_put_expiring, encode_txn};
use kv_store::{Condition, Expiry, Txn, TxnOutcome, Write, WriteResult};

const WAIT: Duration = Duration::from_secs(20);

fn outcome(r: &CommandResult) -> Result<TxnOutcome, Refused> {
    r.txn.clone().expect("a transaction's result")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_counters_and_expiry_decide_alike_on_every_replica() {
    let mut cluster = Cluster::start(3, false, |c| c.expiry_sweep_rate = 1_000).await;
    let leader = cluster.leader(WAIT).await;
    let node = cluster.node(leader);
    let write = |txn: &Txn| node.write(encode_txn(txn));

    // Put if absent, twice: the second finds the first's version.
    let put_if_absent = Txn {
        conditions: vec![(b"k".to_vec(), Condition::Absent)],
        writes: vec![Write::Put {
            key: b"k".to_vec(),
            value: b"v1".to_vec(),
            expiry: Expiry::Clear,
        }],
    };
    let first = outcome(&write(&put_if_absent).await.unwrap()).unwrap();
    assert!(first.seq > 0);
    let second = outcome(&write(&put_if_absent).await.unwrap());
    assert_eq!(
        second,
        Err(Refused::ConditionFailed {
            key: b"k".to_vec(),
            current: Some(first.seq)
        })
    );

    // A counter, and an increment of a non-integer (refused everywhere).
    let incr = |key: &[u8], delta| Txn {
        conditions: vec![],
        writes: vec![Write::Incr {
            key: key.to_vec(),
            delta,
        }],
    };
    for _ in 0..3 {
        write(&incr(b"counter", 2)).await.unwrap();
    }
    let last = outcome(&write(&incr(b"counter", -1)).await.unwrap()).unwrap();
    assert_eq!(last.results, [WriteResult::Incr { value: 5 }]);
    assert!(matches!(
        outcome(&write(&incr(b"k", 1)).await.unwrap()),
        Err(Refused::Invalid(_))
    ));

    // Keys that expire soon, one that expires much later, and an atomic
    // batch that deletes `k` only if it still has its first version.
    let soon = kv_store::now_ms() + 300;
    let later = kv_store::now_ms() + 3_600_000;
    for i in 0..20 {
        let key = format!("e{i:02}");
        node.write(encode_put_expiring(key.as_bytes(), b"v", Some(soon)))
            .await
            .unwrap();
    }
    node.write(encode_put_expiring(b"later", b"v", Some(later)))
        .await
        .unwrap();
    let batch = Txn {
        conditions: vec![(b"k".to_vec(), Condition::SeqEquals(first.seq))],
        writes: vec![
            Write::Delete { key: b"k".to_vec() },
            Write::Put {
                key: b"moved".to_vec(),
                value: b"v1".to_vec(),
                expiry: Expiry::Clear,
            },
        ],
    };
    let moved = outcome(&write(&batch).await.unwrap()).unwrap();
    assert_eq!(
        moved.results,
        [WriteResult::Delete { existed: true }, WriteResult::Put]
    );

    // The leader sweeps the expired keys through the log.
    eventually(
        WAIT,
        "the leader sweeps the 20 expired keys",
        || (node.metrics().expired_swept == 20).then_some(()),
        || format!("{:?}", node.metrics()),
    )
    .await;
    let m = node.metrics();
    assert_eq!((m.keys, m.expiring_keys), (3, 1), "counter, later, moved");

    // Every member, stopped after a snapshot at the leader's last applied
    // index, holds exactly the same state.
    let index = node.status().applied_index.expect("applied");
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    let mut states = Vec::new();
    for id in ids {
        states.push(cluster.stop_and_read(id, index).await);
    }
    let want: common::Contents = [
        (b"counter".to_vec(), b"5".to_vec()),
        (b"later".to_vec(), b"v".to_vec()),
        (b"moved".to_vec(), b"v1".to_vec()),
    ]
    .into_iter()
    .collect();
    for state in &states {
        assert_eq!(state, &want);
    }
    cluster.shutdown().await;
}
