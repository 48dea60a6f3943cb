//! Checkpoints under load: a crash right after one loses nothing, recovery
//! starts from the snapshot, and a checkpoint of an overwrite-heavy
//! workload shrinks the data directory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use e2e::{ServerProcess, Writer, dir_size, verify_and_settle, wait_until};

/// The LSN the recovery log line reports for the snapshot it loaded.
fn recovered_snapshot_seq(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|line| line.contains("snapshot_seq="))
        .unwrap_or_else(|| panic!("no recovery line in:\n{stderr}"));
    let digits: String = line[line.find("snapshot_seq=").unwrap() + "snapshot_seq=".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().expect("snapshot_seq is a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_under_load_then_kill9_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(
        dir.path(),
        &["--segment-size", "128KiB", "--checkpoint-after", "0"],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for id in 0..16 {
        let (stop, acks) = (Arc::clone(&stop), Arc::clone(&acks));
        let addr = server.addr();
        tasks.push(tokio::spawn(async move {
            let mut writer = Writer::new(id);
            let client = kv_client::Client::connect(addr).await.expect("connect");
            writer.run(&client, &stop, &acks, 200).await;
            writer
        }));
    }
    let admin = kv_client::Client::connect(server.addr()).await.unwrap();
    let mut last_checkpoint = 0;
    for round in 0..3u64 {
        wait_until(
            "writes before the checkpoint",
            Duration::from_secs(60),
            || acks.load(Ordering::Relaxed) >= 300 * (round + 1),
        )
        .await;
        let seq = admin.checkpoint().await.expect("checkpoint under load");
        assert!(
            seq > last_checkpoint,
            "checkpoint {seq} after {last_checkpoint}"
        );
        last_checkpoint = seq;
    }
    // Writes go on after the last checkpoint; then the crash.
    let at_checkpoint = acks.load(Ordering::Relaxed);
    wait_until(
        "writes after the checkpoint",
        Duration::from_secs(60),
        || acks.load(Ordering::Relaxed) >= at_checkpoint + 200,
    )
    .await;
    server.kill9();
    let mut writers = Vec::new();
    for task in tasks {
        writers.push(task.await.unwrap());
    }

    let server = server.restart();
    let snapshot_seq = recovered_snapshot_seq(&server.stderr());
    assert!(
        snapshot_seq >= last_checkpoint,
        "recovery started from snapshot {snapshot_seq}, older than checkpoint {last_checkpoint}"
    );
    verify_and_settle(server.addr(), &mut writers, "after checkpoint and kill -9").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_of_overwrite_heavy_workload_shrinks_the_data_dir() {
    const KEYS: usize = 100;
    const ROUNDS: usize = 40;
    const VALUE: usize = 1024;
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(
        dir.path(),
        &["--segment-size", "64KiB", "--checkpoint-after", "0"],
    );
    let client = kv_client::Client::connect(server.addr()).await.unwrap();
    // Every key overwritten ROUNDS times: ~4 MiB of log for ~100 KiB of data.
    for round in 0..ROUNDS {
        let writes = (0..KEYS).map(|k| {
            let client = client.clone();
            let mut value = format!("round-{round}-").into_bytes();
            value.resize(VALUE, b'x');
            async move { client.put(format!("hot-{k}"), value).await }
        });
        for result in futures::future::join_all(writes).await {
            result.expect("put");
        }
    }
    let before = dir_size(server.data_dir());
    client.checkpoint().await.expect("checkpoint");
    let after = dir_size(server.data_dir());
    println!("data dir: {before} bytes before the checkpoint, {after} after");
    let live = (KEYS * VALUE) as u64;
    assert!(before > 10 * live, "workload too small to show: {before}");
    assert!(
        after < before / 4,
        "checkpoint did not shrink the data dir: {before} -> {after} bytes"
    );

    // And the state survives a crash right after.
    server.kill9();
    let server = server.restart();
    let client = kv_client::Client::connect(server.addr()).await.unwrap();
    for k in 0..KEYS {
        let value = client
            .get(format!("hot-{k}"))
            .await
            .unwrap()
            .expect("key present");
        assert!(value.starts_with(format!("round-{}-", ROUNDS - 1).as_bytes()));
    }
}
