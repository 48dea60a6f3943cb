//! Expiry through the public API on a real directory: an expired key is
//! invisible the moment its deadline passes; the sweeper then removes it
//! with ordinary delete records, at most its rate per tick, so memory comes
//! back and a reopened store (replay of those records) agrees; a key
//! written again before the sweep keeps its new value.

use std::time::{Duration, Instant};

use kv_store::{Error, KeyValueStore, ScanRange, StoreOptions, Txn, Write};

fn options(rate: u64) -> StoreOptions {
    StoreOptions {
        checkpoint_after: None,
        expiry_sweep_rate: rate,
        ..StoreOptions::default()
    }
}

/// Polls `done` until it holds, failing after 20 s.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn expired_keys_vanish_at_once_and_the_sweeper_frees_them_within_its_rate() {
    let dir = tempfile::tempdir().unwrap();
    // 100 keys a second: 10 a tick.
    let store = KeyValueStore::open(dir.path(), options(100)).unwrap();
    let deadline = kv_store::now_ms() + 400;
    for i in 0..200u32 {
        let key = format!("e{i:03}");
        store
            .submit_put_expiring(key.as_bytes(), b"v", Some(deadline))
            .unwrap()
            .wait()
            .unwrap();
    }
    store.put(b"stays", b"v").unwrap();
    let before = store.stats();
    assert_eq!((before.keys, before.expiring_keys), (201, 200));
    // The deadline may already have passed on a slow machine; either way
    // the key's visibility follows it exactly.
    if kv_store::now_ms() < deadline {
        assert_eq!(store.get(b"e000").as_deref(), Some(&b"v"[..]));
    }
    wait_until("the deadline", || kv_store::now_ms() >= deadline);
    assert_eq!(
        store.get(b"e000"),
        None,
        "invisible once the deadline passed"
    );
    assert!(store.get_versioned(b"e199").is_none());
    let page = store.scan(&ScanRange::prefix(b"e"), None, 0, usize::MAX, false);
    assert!(page.items.is_empty(), "scans skip expired keys");
    // A key written again after its deadline, before the sweep reaches it,
    // keeps its new value.
    store.put(b"e199", b"again").unwrap();

    wait_until("the sweep", || store.stats().expired_swept == 199);
    let after = store.stats();
    assert_eq!((after.keys, after.expiring_keys), (2, 0));
    assert_eq!(store.get(b"e199").as_deref(), Some(&b"again"[..]));
    // Ten keys a tick: 199 keys took 20 batch records, each of at most 10
    // deletes (one record per sweep).
    let sweep_records = after.wal.records - before.wal.records - 1;
    assert_eq!(sweep_records, 20, "one record per tick of at most 10 keys");

    drop(store);
    let reopened = KeyValueStore::open(dir.path(), options(0)).unwrap();
    let stats = reopened.stats();
    assert_eq!((stats.keys, stats.expiring_keys), (2, 0));
    assert_eq!(reopened.get(b"e199").as_deref(), Some(&b"again"[..]));
    assert_eq!(reopened.get(b"stays").as_deref(), Some(&b"v"[..]));
}

#[test]
fn with_the_sweeper_off_expired_keys_stay_invisible_and_deadlines_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyValueStore::open(dir.path(), options(0)).unwrap();
    let soon = kv_store::now_ms() + 200;
    let later = kv_store::now_ms() + 3_600_000;
    store
        .submit_put_expiring(b"soon", b"v", Some(soon))
        .unwrap()
        .wait()
        .unwrap();
    store
        .submit_put_expiring(b"later", b"v", Some(later))
        .unwrap()
        .wait()
        .unwrap();
    // Zero and the year 10000 are refused, as Redis refuses them.
    assert!(matches!(
        kv_store::deadline_after(kv_store::now_ms(), 0),
        Err(Error::InvalidRequest(_))
    ));
    assert!(matches!(
        store.submit_put_expiring(b"k", b"v", Some(kv_store::MAX_DEADLINE_MS + 1)),
        Err(Error::InvalidRequest(_))
    ));
    store.checkpoint().unwrap();
    wait_until("the deadline", || kv_store::now_ms() >= soon);
    assert_eq!(store.get(b"soon"), None);
    drop(store);
    // From the snapshot: the deadline came back with the key.
    let reopened = KeyValueStore::open(dir.path(), options(0)).unwrap();
    assert_eq!(reopened.get(b"soon"), None);
    let got = reopened.get_versioned(b"later").unwrap();
    assert_eq!(got.expires_at_ms, Some(later));
    // Not swept (the sweeper is off): still counted, but invisible.
    assert_eq!(reopened.stats().expiring_keys, 2);
    // A transaction sees the expired key as absent.
    let outcome = reopened
        .txn(Txn {
            conditions: vec![(b"soon".to_vec(), kv_store::Condition::Absent)],
            writes: vec![Write::Incr {
                key: b"soon".to_vec(),
                delta: 3,
            }],
        })
        .unwrap();
    assert_eq!(
        outcome.results,
        [kv_store::WriteResult::Incr { value: 3 }],
        "an expired key counts from zero"
    );
    assert_eq!(reopened.get_versioned(b"soon").unwrap().expires_at_ms, None);
}
