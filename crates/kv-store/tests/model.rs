//! Model-based test: random puts, deletes, checkpoints, reopens and crashes
//! against a `BTreeMap`, on the simulated file system with tiny segments so
//! that rotation, truncation and snapshot replacement happen constantly.

use std::collections::BTreeMap;

use kv_store::{KeyValueStore, StoreOptions, SyncPolicy, WalOptions};
use proptest::prelude::*;
use wal_core::sim::SimFs;

#[derive(Debug, Clone)]
enum Action {
    Put(u8, Vec<u8>),
    Delete(u8),
    Checkpoint,
    Reopen,
    /// Power loss (everything acknowledged was synced under `Always`).
    Crash,
    /// Power loss where some unsynced data reaches the disk anyway.
    CrashTorn(u64),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        10 => (0u8..24, proptest::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(k, v)| Action::Put(k, v)),
        4 => (0u8..24).prop_map(Action::Delete),
        1 => Just(Action::Checkpoint),
        1 => Just(Action::Reopen),
        1 => Just(Action::Crash),
        1 => any::<u64>().prop_map(Action::CrashTorn),
    ]
}

fn options() -> StoreOptions {
    StoreOptions {
        wal: WalOptions {
            segment_size: 512,
            sync_policy: SyncPolicy::Always,
            ..WalOptions::default()
        },
        max_key_size: 16,
        max_value_size: 512,
        checkpoint_after: None,
        checkpoint_write_rate: StoreOptions::default().checkpoint_write_rate,
        // Off: the model predicts every LSN, and sweeps would take some.
        expiry_sweep_rate: 0,
    }
}

fn key(k: u8) -> Vec<u8> {
    format!("key{k:02}").into_bytes()
}

fn assert_same(store: &KeyValueStore, model: &BTreeMap<Vec<u8>, Vec<u8>>, last_lsn: u64) {
    let keys = store.keys(b"", 0);
    assert_eq!(keys.keys, model.keys().cloned().collect::<Vec<_>>());
    for (k, v) in model {
        assert_eq!(store.get(k).as_ref(), Some(v));
    }
    let stats = store.stats();
    assert_eq!(stats.keys, model.len() as u64);
    assert_eq!(
        stats.bytes,
        model
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum::<u64>()
    );
    assert_eq!(stats.last_lsn, last_lsn);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_a_btreemap(actions in proptest::collection::vec(action(), 1..120)) {
        let mut fs = SimFs::new();
        let mut store = KeyValueStore::open_with_vfs("/db", options(), fs.shared()).unwrap();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut lsn = 0u64;
        for a in actions {
            match a {
                Action::Put(k, v) => {
                    lsn += 1;
                    prop_assert_eq!(store.put(&key(k), &v).unwrap(), lsn);
                    model.insert(key(k), v);
                }
                Action::Delete(k) => {
                    let existed = model.remove(&key(k)).is_some();
                    let got = store.delete(&key(k)).unwrap();
                    if existed {
                        lsn += 1;
                        prop_assert_eq!(got, Some(lsn));
                    } else {
                        prop_assert_eq!(got, None);
                    }
                }
                Action::Checkpoint => {
                    prop_assert_eq!(store.checkpoint().unwrap(), lsn);
                }
                Action::Reopen => {
                    drop(store);
                    store = KeyValueStore::open_with_vfs("/db", options(), fs.shared()).unwrap();
                    assert_same(&store, &model, lsn);
                }
                Action::Crash | Action::CrashTorn(_) => {
                    let after = match a {
                        Action::CrashTorn(seed) => fs.crash_torn(seed),
                        _ => fs.crash(),
                    };
                    drop(store);
                    fs = after;
                    store = KeyValueStore::open_with_vfs("/db", options(), fs.shared()).unwrap();
                    assert_same(&store, &model, lsn);
                }
            }
        }
        assert_same(&store, &model, lsn);
        drop(store);
        let store = KeyValueStore::open_with_vfs("/db", options(), fs.shared()).unwrap();
        assert_same(&store, &model, lsn);
    }
}
