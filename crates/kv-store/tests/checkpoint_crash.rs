//! Crash tests on wal-core's simulated file system.
//!
//! - A power cut at every mutating file operation of a checkpoint (rotation,
//!   temp file writes, their fsync, the log sync, rename, directory sync,
//!   segment deletions, old snapshot deletion), followed by a clean or a torn
//!   crash, recovers exactly the acknowledged state, and the store keeps
//!   working. The checkpoint fails if the cut comes before the log is cut,
//!   and succeeds (with a warning) if only the old snapshot's deletion is
//!   lost.
//! - A power cut during a concurrent write workload with automatic
//!   checkpoints loses no acknowledged write: plain puts, puts with a
//!   deadline (kept exactly), and transactions of two puts and a counter
//!   increment (all or none: the counter always equals the number of
//!   transactions whose puts survived).
//!
//! The state checkpointed holds expiring keys and transaction records too,
//! so snapshots and replay of every record type are cut at every step.

use kv_store::{Expiry, KeyValueStore, StoreOptions, SyncPolicy, Txn, WalOptions, Write};
use std::collections::BTreeMap;
use wal_core::sim::{Op, SimFs};

fn options() -> StoreOptions {
    StoreOptions {
        wal: WalOptions {
            segment_size: 1024,
            sync_policy: SyncPolicy::Always,
            ..WalOptions::default()
        },
        max_key_size: 32,
        max_value_size: 64 << 10,
        checkpoint_after: None,
        checkpoint_write_rate: StoreOptions::default().checkpoint_write_rate,
        expiry_sweep_rate: StoreOptions::default().expiry_sweep_rate,
    }
}

/// Value and deadline of each key.
type Model = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

/// A deadline that holds through the test: an hour from now.
fn later() -> u64 {
    kv_store::now_ms() + 3_600_000
}

/// A store with an earlier snapshot (so the checkpoint under test deletes an
/// old one), several sealed segments after it, and enough keys that the
/// snapshot spans more than one copy chunk and write buffer.
fn prepare() -> (SimFs, KeyValueStore, Model) {
    let fs = SimFs::new();
    let store = KeyValueStore::open_with_vfs("/db", options(), fs.shared()).unwrap();
    let mut model = Model::new();
    let put = |model: &mut Model, store: &KeyValueStore, k: String, v: Vec<u8>| {
        store.put(k.as_bytes(), &v).unwrap();
        model.insert(k.into_bytes(), (v, None));
    };
    let deadline = later();
    for i in 0..300u32 {
        put(&mut model, &store, format!("a{i:04}"), vec![i as u8; 20]);
    }
    store.checkpoint().unwrap();
    for i in 0..40u32 {
        put(&mut model, &store, format!("b{i:04}"), vec![i as u8; 100]);
    }
    for i in 0..10u32 {
        let k = format!("a{i:04}");
        store.delete(k.as_bytes()).unwrap();
        model.remove(k.as_bytes());
    }
    // Keys with deadlines, and transaction records (several writes, a
    // counter) in the log the checkpoint covers.
    for i in 0..20u32 {
        let k = format!("e{i:04}");
        let v = vec![i as u8; 30];
        store
            .submit_put_expiring(k.as_bytes(), &v, Some(deadline))
            .unwrap()
            .wait()
            .unwrap();
        model.insert(k.into_bytes(), (v, Some(deadline)));
    }
    for i in 0..10u32 {
        let (t, gone) = (format!("t{i:04}"), format!("a{:04}", i + 10));
        store
            .txn(Txn {
                conditions: Vec::new(),
                writes: vec![
                    Write::Put {
                        key: t.clone().into_bytes(),
                        value: b"tv".to_vec(),
                        expiry: Expiry::At(deadline),
                    },
                    Write::Delete {
                        key: gone.clone().into_bytes(),
                    },
                    Write::Incr {
                        key: b"counter".to_vec(),
                        delta: 2,
                    },
                ],
            })
            .unwrap();
        model.insert(t.into_bytes(), (b"tv".to_vec(), Some(deadline)));
        model.remove(gone.as_bytes());
    }
    model.insert(b"counter".to_vec(), (b"20".to_vec(), None));
    // Enough bytes that the snapshot needs several write buffers, in few
    // writes (sequential writes keep segment boundaries, and so the number
    // of steps, the same in every run).
    for i in 0..40u32 {
        put(
            &mut model,
            &store,
            format!("c{i:02}"),
            vec![i as u8; 40_000],
        );
    }
    (fs, store, model)
}

fn check(fs: &SimFs, model: &Model, what: &str) {
    let store = KeyValueStore::open_with_vfs("/db", options(), fs.shared())
        .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    let keys = store.keys(b"", 0).keys;
    assert_eq!(keys.len(), model.len(), "{what}: key count");
    for (k, (v, deadline)) in model {
        let got = store.get_versioned(k);
        let got = got.as_ref().map(|g| (&g.value, g.expires_at_ms));
        assert_eq!(got, Some((v, *deadline)), "{what}: key {k:?}");
    }
    // The recovered store takes writes and checkpoints, and recovers again.
    store.put(b"after", b"crash").unwrap();
    store.checkpoint().unwrap();
    drop(store);
    let store = KeyValueStore::open_with_vfs("/db", options(), fs.shared()).unwrap();
    assert_eq!(
        store.stats().keys,
        model.len() as u64 + 1,
        "{what}: second reopen"
    );
    assert_eq!(store.get(b"after").as_deref(), Some(&b"crash"[..]));
}

#[test]
fn a_crash_at_every_step_of_a_checkpoint_recovers_the_same_state() {
    // Dry run: count the checkpoint's mutating operations and check that it
    // exercises every step named in the module docs.
    let (fs, store, model) = prepare();
    let before: Vec<u64> = Op::ALL.iter().map(|&op| fs.op_count(op)).collect();
    let m0 = fs.mutation_count();
    store.checkpoint().unwrap();
    let steps = fs.mutation_count() - m0;
    let delta = |op: Op| fs.op_count(op) - before[Op::ALL.iter().position(|&o| o == op).unwrap()];
    assert!(delta(Op::Write) >= 3, "snapshot written in several parts");
    assert!(delta(Op::SyncData) >= 2, "log and snapshot synced");
    assert_eq!(delta(Op::Rename), 1);
    assert!(
        delta(Op::Remove) >= 3,
        "segments and the old snapshot deleted"
    );
    assert!(delta(Op::SyncDir) >= 3);
    drop(store);
    check(&fs, &model, "no crash");

    // The last two steps, deleting the one old snapshot and syncing the
    // directory, come after the new snapshot is durable and the log is cut:
    // the checkpoint has succeeded by then, and a failure there is only a
    // warning (the next checkpoint, in `check`, deletes the leftover).
    let succeeded_after = steps - 2;
    for cut in 0..=steps {
        for torn in [None, Some(cut * 7919 + 1)] {
            let (fs, store, model) = prepare();
            fs.power_cut_after(cut);
            let result = store.checkpoint();
            assert_eq!(
                result.is_err(),
                cut < succeeded_after,
                "cut after {cut} of {steps} steps: {result:?}"
            );
            let after = match torn {
                Some(seed) => fs.crash_torn(seed),
                None => fs.crash(),
            };
            drop(store);
            check(
                &after,
                &model,
                &format!("cut after {cut} of {steps}, torn {torn:?}"),
            );
        }
    }
}

#[test]
fn power_loss_during_concurrent_writes_loses_no_acknowledged_write() {
    const WRITERS: u32 = 4;
    const PUTS: u32 = 150;
    let opts = StoreOptions {
        checkpoint_after: Some(4 << 10),
        ..options()
    };
    // Dry run for the number of mutations of the whole workload.
    // The power cut is planned after open: counting starts there.
    let workload = |fs: &SimFs, cut: Option<u64>| -> (Vec<u32>, u64) {
        let store = KeyValueStore::open_with_vfs("/db", opts.clone(), fs.shared()).unwrap();
        let m0 = fs.mutation_count();
        if let Some(cut) = cut {
            fs.power_cut_after(cut);
        }
        let threads: Vec<_> = (0..WRITERS)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    // Keys of one writer are committed in its order, so the
                    // acknowledged ones are a prefix 0..acked.
                    // Writer 0 writes transactions, writer 1 puts with a
                    // deadline, the others plain puts.
                    let deadline = later();
                    let mut acked = 0;
                    for i in 0..PUTS {
                        let key = format!("w{t}-{i:04}").into_bytes();
                        let value = vec![t as u8; 64];
                        let done = match t {
                            0 => store
                                .txn(Txn {
                                    conditions: Vec::new(),
                                    writes: vec![
                                        Write::Put {
                                            key: key.clone(),
                                            value: value.clone(),
                                            expiry: Expiry::Clear,
                                        },
                                        Write::Put {
                                            key: [&key[..], b"-pair"].concat(),
                                            value,
                                            expiry: Expiry::Clear,
                                        },
                                        Write::Incr {
                                            key: b"counter".to_vec(),
                                            delta: 1,
                                        },
                                    ],
                                })
                                .map(drop),
                            1 => store
                                .submit_put_expiring(&key, &value, Some(deadline))
                                .and_then(|p| p.wait())
                                .map(drop),
                            _ => store.put(&key, &value).map(drop),
                        };
                        if done.is_err() {
                            break;
                        }
                        acked = i + 1;
                    }
                    acked
                })
            })
            .collect();
        let acked = threads.into_iter().map(|t| t.join().unwrap()).collect();
        drop(store);
        (acked, fs.mutation_count() - m0)
    };
    let dry = SimFs::new();
    let (acked, total) = workload(&dry, None);
    assert!(acked.iter().all(|&a| a == PUTS));
    let snapshots = KeyValueStore::open_with_vfs("/db", opts.clone(), dry.crash().shared())
        .unwrap()
        .recovery()
        .snapshot_seq;
    assert!(
        snapshots > 0,
        "automatic checkpoints ran during the workload"
    );

    let samples = 48u64;
    for s in 0..samples {
        let cut = total * s / samples + s % 3;
        let fs = SimFs::new();
        let (acked, _) = workload(&fs, Some(cut));
        let after = if s % 2 == 0 {
            fs.crash()
        } else {
            fs.crash_torn(s)
        };
        let store = KeyValueStore::open_with_vfs("/db", opts.clone(), after.shared())
            .unwrap_or_else(|e| panic!("cut {cut}: reopen failed: {e}"));
        for t in 0..WRITERS {
            let present: Vec<u32> = (0..PUTS)
                .filter(|i| store.get(format!("w{t}-{i:04}").as_bytes()).is_some())
                .collect();
            // Every acknowledged write is there; what is there is a prefix of
            // the writer's sequence (the log has no holes), with its value.
            assert!(
                present.len() as u32 >= acked[t as usize],
                "cut {cut}: writer {t} acked {} but {} survived",
                acked[t as usize],
                present.len()
            );
            assert_eq!(
                present,
                (0..present.len() as u32).collect::<Vec<_>>(),
                "cut {cut}"
            );
            for &i in &present {
                let key = format!("w{t}-{i:04}");
                let got = store.get_versioned(key.as_bytes()).unwrap();
                assert_eq!(got.value, vec![t as u8; 64]);
                assert_eq!(got.expires_at_ms.is_some(), t == 1, "cut {cut}: {key}");
                if t == 0 {
                    // All or none: both puts and the increment.
                    let pair = store.get(format!("{key}-pair").as_bytes());
                    assert_eq!(pair, Some(vec![0; 64]), "cut {cut}: {key}");
                }
            }
            if t == 0 {
                let counter = store.get(b"counter").unwrap_or_else(|| b"0".to_vec());
                assert_eq!(
                    counter,
                    present.len().to_string().into_bytes(),
                    "cut {cut}: the counter counts the transactions that survived"
                );
            }
        }
        drop(store);
    }
}
