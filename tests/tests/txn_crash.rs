//! kill -9 under a load of transactions: 8 clients each send atomic batches
//! (two puts, one with a time to live, and a counter increment) while the
//! server is killed at a random moment; after each restart every
//! acknowledged batch is there whole, no batch is there in part, each
//! client's counter equals the number of its batches that survived, and
//! deadlines survived replay. Several cycles on the same data directory;
//! the seed is printed and `E2E_SEED` replays it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use e2e::{ServerProcess, seed, wait_until};
use kv_client::Client;
use kv_proto::{
    BatchRequest, GetRequest, Mutation, MutationKind, ScanRequest, request::Command, response,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const WRITERS: u64 = 8;
const CYCLES: u32 = 2;

fn key(t: u64, what: &str, i: u64) -> Bytes {
    Bytes::from(format!("w{t}-{what}-{i:06}"))
}

fn counter(t: u64) -> Bytes {
    Bytes::from(format!("w{t}-counter"))
}

fn batch(t: u64, i: u64) -> Command {
    Command::Batch(BatchRequest {
        writes: vec![
            Mutation {
                kind: MutationKind::MutationPut as i32,
                key: key(t, "a", i),
                value: Bytes::from(vec![t as u8; 100]),
                ..Default::default()
            },
            Mutation {
                kind: MutationKind::MutationPut as i32,
                key: key(t, "b", i),
                value: Bytes::from(vec![t as u8; 100]),
                ttl_ms: 3_600_000,
                ..Default::default()
            },
            Mutation {
                kind: MutationKind::MutationIncr as i32,
                key: counter(t),
                delta: 1,
                ..Default::default()
            },
        ],
        conditions: Vec::new(),
    })
}

async fn get(client: &Client, key: Bytes) -> kv_proto::GetResponse {
    match client.call(Command::Get(GetRequest { key })).await {
        Ok(response::Result::Get(get)) => get,
        other => panic!("get: {other:?}"),
    }
}

/// The `a` keys of writer `t`, by a scan paging 100 at a time.
async fn scanned(client: &Client, t: u64) -> Vec<Bytes> {
    let mut keys = Vec::new();
    let mut after = Bytes::new();
    loop {
        let page = match client
            .call(Command::Scan(ScanRequest {
                prefix: Bytes::from(format!("w{t}-a-")),
                limit: 100,
                after: after.clone(),
                ..Default::default()
            }))
            .await
        {
            Ok(response::Result::Scan(page)) => page,
            other => panic!("scan: {other:?}"),
        };
        keys.extend(page.items.into_iter().map(|i| i.key));
        if !page.more {
            return keys;
        }
        after = page.resume_after;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_transactions_keeps_batches_whole() {
    let seed = seed();
    println!("txn_crash: seed {seed} (E2E_SEED={seed} replays)");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &["--segment-size", "256KiB"]);
    // Batches each writer has sent so far: the next one is number `sent`.
    let mut sent = vec![0u64; WRITERS as usize];
    for cycle in 0..CYCLES {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for t in 0..WRITERS {
            let (stop, acks, addr) = (Arc::clone(&stop), Arc::clone(&acks), server.addr());
            let start = sent[t as usize];
            tasks.push(tokio::spawn(async move {
                let client = Client::connect(addr).await.expect("connect");
                // (acknowledged, sent): one at a time, so the acknowledged
                // batches are 0..acked and at most one more was sent.
                let mut acked = start;
                let mut next = start;
                while !stop.load(Ordering::Relaxed) {
                    next += 1;
                    match client.call(batch(t, next - 1)).await {
                        Ok(response::Result::Batch(_)) => {
                            acked = next;
                            acks.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(other) => panic!("batch answered {other:?}"),
                        Err(_) => break,
                    }
                }
                (acked, next)
            }));
        }
        wait_until(
            "the first acknowledged batches",
            Duration::from_secs(60),
            || acks.load(Ordering::Relaxed) >= 100,
        )
        .await;
        // The sleep is the crash moment itself, chosen at random.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..500))).await;
        server.kill9();
        let mut acked = Vec::new();
        for task in tasks {
            acked.push(task.await.expect("writer task"));
        }
        server = server.restart();
        let client = Client::connect(server.addr()).await.expect("connect");
        for t in 0..WRITERS {
            let (acked, maybe) = acked[t as usize];
            let keys = scanned(&client, t).await;
            let present = keys.len() as u64;
            assert!(
                (acked..=maybe).contains(&present),
                "seed {seed}, cycle {cycle}, writer {t}: {present} batches survived, \
                 {acked} acknowledged, {maybe} sent"
            );
            let want: Vec<Bytes> = (0..present).map(|i| key(t, "a", i)).collect();
            assert_eq!(keys, want, "writer {t}: no gaps");
            for i in 0..maybe {
                let b = get(&client, key(t, "b", i)).await;
                assert_eq!(b.found, i < present, "writer {t}, batch {i}: all or none");
                if b.found {
                    assert!(b.expires_at_ms > 0, "the deadline survived");
                }
            }
            let c = get(&client, counter(t)).await;
            assert_eq!(
                c.value,
                Bytes::from(present.to_string()),
                "writer {t}: the counter counts the batches that survived"
            );
            // The next cycle starts where what survived ends.
            sent[t as usize] = present;
        }
        println!(
            "cycle {cycle}: {} batches verified",
            sent.iter().sum::<u64>()
        );
    }
}
