//! Online backup and restore end to end: `kv-client backup` copies a
//! running server's state while writers keep writing, `kv-admin restore`
//! turns the copy into a new data directory, and a server started on it
//! holds every write acknowledged before the backup began, and of the
//! writes made during the backup a prefix of each writer's, never a write
//! without the ones acknowledged before it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use e2e::{ServerProcess, Writer, cli, command, run_to_exit, verify_and_settle, wait_until};

const WRITERS: u32 = 4;
const DEADLINE: Duration = Duration::from_secs(60);

/// Writes fresh keys `during{id}-{n}` for n = 0, 1, ... one at a time until
/// `stop`, counting acknowledged ones in `acks[id]`; returns that count.
async fn fresh_writer(
    addr: std::net::SocketAddr,
    id: usize,
    stop: Arc<AtomicBool>,
    acks: Arc<Vec<AtomicU64>>,
) -> u64 {
    let client = kv_client::Client::connect(addr).await.expect("connect");
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("during{id}-{n}");
        client
            .put(key.clone().into_bytes(), key.into_bytes())
            .await
            .expect("put during the backup");
        n += 1;
        acks[id].store(n, Ordering::Relaxed);
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_write_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Small segments, so the backup's checkpoint runs beside rotations.
    let server = ServerProcess::start(&data, &["--segment-size", "256KiB"]);

    // Before: writes (fresh keys, overwrites, deletes), all acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for mut writer in (0..WRITERS).map(Writer::new) {
        let (stop, acks, addr) = (Arc::clone(&stop), Arc::clone(&acks), server.addr());
        tasks.push(tokio::spawn(async move {
            let client = kv_client::Client::connect(addr).await.expect("connect");
            writer.run(&client, &stop, &acks, 200).await;
            writer
        }));
    }
    wait_until("the first writes", DEADLINE, || {
        acks.load(Ordering::Relaxed) >= 2000
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut writers = Vec::new();
    for task in tasks {
        writers.push(task.await.unwrap());
    }

    // During: new writers on fresh keys while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let during_acks: Arc<Vec<AtomicU64>> =
        Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let during: Vec<_> = (0..WRITERS as usize)
        .map(|id| {
            tokio::spawn(fresh_writer(
                server.addr(),
                id,
                Arc::clone(&stop),
                Arc::clone(&during_acks),
            ))
        })
        .collect();
    wait_until("writes under way", DEADLINE, || {
        during_acks.iter().all(|a| a.load(Ordering::Relaxed) >= 50)
    })
    .await;
    // Acknowledged before the backup began: these must all be in it.
    let before: Vec<u64> = during_acks
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    let file = dir.path().join("copy.snap");
    let addr = server.addr();
    let file_arg = file.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || cli(addr, &["backup", &file_arg], b""))
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "backup failed: {}{}",
        printed,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.starts_with("backup of LSN "), "{printed}");
    stop.store(true, Ordering::Relaxed);
    let mut written = Vec::new();
    for task in during {
        written.push(task.await.unwrap());
    }
    assert!(file.is_file(), "no backup file");
    assert!(
        !dir.path().join("copy.snap.partial").exists(),
        "the partial file is left behind"
    );
    drop(server);

    // Restore into a new directory and serve it.
    let restored = dir.path().join("restored");
    let mut restore = command("kv-admin");
    restore.arg("restore").arg(&file).arg(&restored);
    let out = run_to_exit(restore, b"", DEADLINE);
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Restoring over a directory that holds data is refused.
    let mut again = command("kv-admin");
    again.arg("restore").arg(&file).arg(&restored);
    let out = run_to_exit(again, b"", DEADLINE);
    assert!(!out.status.success(), "restore over a store succeeded");

    let server = ServerProcess::start(&restored, &[]);
    verify_and_settle(server.addr(), &mut writers, "restored backup").await;

    // Of each writer's keys written during the backup, the restored store
    // holds a prefix: a key is there only if every earlier one is.
    let client = kv_client::Client::connect(server.addr()).await.unwrap();
    for (id, &count) in written.iter().enumerate() {
        let mut seen_gap = None;
        let mut held = 0;
        for n in 0..count {
            let key = format!("during{id}-{n}");
            match client.get(key.clone().into_bytes()).await.unwrap() {
                Some(value) => {
                    assert_eq!(&value[..], key.as_bytes(), "wrong value for {key}");
                    assert!(
                        seen_gap.is_none(),
                        "{key} restored but during{id}-{} is missing",
                        seen_gap.unwrap_or(0)
                    );
                    held += 1;
                }
                None => {
                    seen_gap.get_or_insert(n);
                }
            }
        }
        assert!(
            held >= before[id],
            "writer {id}: {held} writes restored, but {} were acknowledged before the backup began",
            before[id]
        );
    }

    // The restored store takes new writes and keeps them over a restart.
    let out = cli(server.addr(), &["put", "after-restore", "yes"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut server = server;
    server.sigterm();
    assert!(server.wait_exit(DEADLINE).success());
    let server = server.restart();
    let out = cli(server.addr(), &["get", "after-restore"], b"");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes");
}
