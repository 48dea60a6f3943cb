//! kill -9 under load: 16 clients write (fresh keys, overwrites, deletes)
//! while the server is killed at a random moment; after each restart every
//! acknowledged write is there (or a newer write that was sent but never
//! answered). Several cycles on the same data directory; the seed is
//! printed and `E2E_SEED` replays it, `E2E_CRASH_CYCLES` runs more cycles.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use e2e::{ServerProcess, Writer, seed, verify_and_settle, wait_until};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const WRITERS: u32 = 16;
const DEFAULT_CYCLES: u32 = 3;

fn cycles() -> u32 {
    std::env::var("E2E_CRASH_CYCLES")
        .ok()
        .map(|s| s.parse().expect("E2E_CRASH_CYCLES must be a number"))
        .unwrap_or(DEFAULT_CYCLES)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_keeps_every_acknowledged_write() {
    let seed = seed();
    let cycles = cycles();
    println!("crash_under_load: seed {seed} (E2E_SEED={seed} replays), {cycles} cycles");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    // Small segments, so that crashes also land around rotations.
    let mut server = ServerProcess::start(dir.path(), &["--segment-size", "256KiB"]);
    let mut writers: Vec<Writer> = (0..WRITERS).map(Writer::new).collect();

    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for mut writer in writers.drain(..) {
            let (stop, acks) = (Arc::clone(&stop), Arc::clone(&acks));
            let addr = server.addr();
            tasks.push(tokio::spawn(async move {
                let client = kv_client::Client::connect(addr).await.expect("connect");
                writer.run(&client, &stop, &acks, 100).await;
                writer
            }));
        }
        // Crash only once the load is really on.
        wait_until(
            "the first acknowledged writes",
            Duration::from_secs(60),
            || acks.load(Ordering::Relaxed) >= 200,
        )
        .await;
        let delay = Duration::from_millis(rng.random_range(0..800));
        // The sleep is the crash moment itself, chosen at random.
        tokio::time::sleep(delay).await;
        server.kill9();
        let acked_before_kill = acks.load(Ordering::Relaxed);
        // Writers end on their own: every call fails once the server is gone.
        for task in tasks {
            writers.push(task.await.expect("writer task"));
        }
        println!(
            "cycle {cycle}: killed {delay:?} after load started; {acked_before_kill} writes \
             acknowledged this cycle"
        );

        server = server.restart();
        verify_and_settle(
            server.addr(),
            &mut writers,
            &format!("seed {seed}, cycle {cycle}"),
        )
        .await;
    }
    let keys: usize = writers.iter().map(|w| w.model.len()).sum();
    println!("crash_under_load: {keys} keys verified after each of {cycles} crashes");
}
