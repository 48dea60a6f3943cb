//! Model-based test: random puts, deletes, transactions (conditions,
//! counters, deadlines), checkpoints, reopens and crashes against a
//! `BTreeMap` of values with versions and deadlines, on the simulated file
//! system with tiny segments so that rotation, truncation and snapshot
//! replacement happen constantly.
//!
//! Deadlines are either an hour away (they hold through the test, and must
//! survive snapshots and replay exactly) or already past (the key is gone at
//! once), so the wall clock never decides an outcome.

use std::collections::BTreeMap;

use kv_store::{
    Condition, Error, Expiry, KeyValueStore, StoreOptions, SyncPolicy, Txn, WalOptions, Write,
    WriteResult,
};
use proptest::prelude::*;
use wal_core::sim::SimFs;

/// Deadline choices: none, one of two in an hour, or one already past.
#[derive(Debug, Clone, Copy)]
enum When {
    Never,
    Later(u8),
    Past,
}

#[derive(Debug, Clone)]
enum Cond {
    Absent,
    Present,
    /// The key's current version if `true`, a wrong one if `false`.
    Seq(bool),
    /// The key's current value if `true`, another one if `false`.
    Value(bool),
}

#[derive(Debug, Clone)]
enum W {
    Put(u8, Vec<u8>, When, bool),
    Delete(u8),
    Incr(u8, i64),
    SetDeadline(u8, When),
}

#[derive(Debug, Clone)]
enum Action {
    Put(u8, Vec<u8>),
    /// A put that expires an hour from the start.
    PutLater(u8, Vec<u8>, u8),
    Delete(u8),
    Txn(Vec<(u8, Cond)>, Vec<W>),
    Checkpoint,
    Reopen,
    /// Power loss (everything acknowledged was synced under `Always`).
    Crash,
    /// Power loss where some unsynced data reaches the disk anyway.
    CrashTorn(u64),
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..300),
        1 => (-50i64..50).prop_map(|n| n.to_string().into_bytes()),
        1 => Just(i64::MAX.to_string().into_bytes()),
    ]
}

fn when() -> impl Strategy<Value = When> {
    prop_oneof![
        2 => Just(When::Never),
        2 => (0u8..2).prop_map(When::Later),
        1 => Just(When::Past),
    ]
}

fn write() -> impl Strategy<Value = W> {
    prop_oneof![
        3 => (0u8..6, value(), when(), any::<bool>()).prop_map(|(k, v, w, keep)| W::Put(k, v, w, keep)),
        2 => (0u8..6).prop_map(W::Delete),
        2 => (0u8..6, -5i64..5).prop_map(|(k, d)| W::Incr(k, d)),
        2 => (0u8..6, when()).prop_map(|(k, w)| W::SetDeadline(k, w)),
    ]
}

fn cond() -> impl Strategy<Value = Cond> {
    prop_oneof![
        Just(Cond::Absent),
        Just(Cond::Present),
        any::<bool>().prop_map(Cond::Seq),
        any::<bool>().prop_map(Cond::Value),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        10 => (0u8..24, proptest::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(k, v)| Action::Put(k, v)),
        2 => (0u8..24, value(), 0u8..2).prop_map(|(k, v, w)| Action::PutLater(k, v, w)),
        4 => (0u8..24).prop_map(Action::Delete),
        6 => (
            proptest::collection::vec((0u8..6, cond()), 0..3),
            proptest::collection::vec(write(), 1..5)
        )
            .prop_map(|(c, w)| Action::Txn(c, w)),
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

/// A key's value, version and deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Val {
    value: Vec<u8>,
    seq: u64,
    deadline: Option<u64>,
}

type Model = BTreeMap<Vec<u8>, Val>;

/// The clock the deadlines are chosen from.
struct Clock {
    later: [u64; 2],
}

impl Clock {
    fn new() -> Clock {
        let now = kv_store::now_ms();
        Clock {
            later: [now + 3_600_000, now + 7_200_000],
        }
    }

    fn at(&self, w: When) -> Option<u64> {
        match w {
            When::Never => None,
            When::Later(i) => Some(self.later[usize::from(i)]),
            When::Past => Some(1),
        }
    }
}

/// What the model says a transaction does: `Err` for a refusal (nothing
/// written), else the writes' results and whether anything was written
/// (a record at the next LSN), with `model` updated at `lsn`.
fn model_txn(
    model: &mut Model,
    txn: &Txn,
    lsn: u64,
) -> Result<(Vec<WriteResult>, bool), &'static str> {
    for (key, c) in &txn.conditions {
        let cur = model.get(key);
        let holds = match c {
            Condition::Absent => cur.is_none(),
            Condition::Present => cur.is_some(),
            Condition::SeqEquals(seq) => cur.is_some_and(|v| v.seq == *seq),
            Condition::ValueEquals(value) => cur.is_some_and(|v| &v.value == value),
        };
        if !holds {
            return Err("condition");
        }
    }
    let mut next = model.clone();
    let mut results = Vec::new();
    let mut wrote = false;
    for w in &txn.writes {
        let key = w.key().to_vec();
        let cur = next.get(&key).cloned();
        match w {
            Write::Put { value, expiry, .. } => {
                let deadline = match expiry {
                    Expiry::Clear => None,
                    Expiry::Keep => cur.as_ref().and_then(|c| c.deadline),
                    Expiry::At(at) => Some(*at),
                };
                if deadline == Some(1) {
                    wrote |= next.remove(&key).is_some();
                } else {
                    let value = value.clone();
                    next.insert(
                        key,
                        Val {
                            value,
                            seq: lsn,
                            deadline,
                        },
                    );
                    wrote = true;
                }
                results.push(WriteResult::Put);
            }
            Write::Delete { .. } => {
                let existed = next.remove(&key).is_some();
                wrote |= existed;
                results.push(WriteResult::Delete { existed });
            }
            Write::Incr { delta, .. } => {
                let current = match &cur {
                    None => 0,
                    Some(c) => match std::str::from_utf8(&c.value)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                        .filter(|n| n.to_string().as_bytes() == c.value)
                    {
                        Some(n) => n,
                        None => return Err("not an integer"),
                    },
                };
                let value = current.checked_add(*delta).ok_or("overflow")?;
                let deadline = cur.and_then(|c| c.deadline);
                let bytes = value.to_string().into_bytes();
                next.insert(
                    key,
                    Val {
                        value: bytes,
                        seq: lsn,
                        deadline,
                    },
                );
                wrote = true;
                results.push(WriteResult::Incr { value });
            }
            Write::Sweep { .. } => unreachable!("the model generates no sweeps"),
            Write::SetDeadline { at, .. } => {
                let (found, changed) = match (cur, at) {
                    (None, _) => (false, false),
                    (Some(c), None) if c.deadline.is_none() => (true, false),
                    (Some(_), Some(1)) => {
                        next.remove(&key);
                        (true, true)
                    }
                    (Some(c), at) => {
                        next.insert(
                            key,
                            Val {
                                value: c.value,
                                seq: lsn,
                                deadline: *at,
                            },
                        );
                        (true, true)
                    }
                };
                wrote |= changed;
                results.push(WriteResult::SetDeadline { found, changed });
            }
        }
    }
    *model = next;
    Ok((results, wrote))
}

/// The transaction an action asks for, its conditions made against the
/// model's current versions and values.
fn build_txn(model: &Model, clock: &Clock, conds: &[(u8, Cond)], writes: &[W]) -> Txn {
    let small = |k: u8| key(k);
    let conditions = conds
        .iter()
        .map(|(k, c)| {
            let cur = model.get(&small(*k));
            let c = match c {
                Cond::Absent => Condition::Absent,
                Cond::Present => Condition::Present,
                Cond::Seq(right) => {
                    let seq = cur.map_or(0, |v| v.seq);
                    Condition::SeqEquals(if *right { seq } else { seq + 1 })
                }
                Cond::Value(right) => {
                    let mut value = cur.map_or_else(Vec::new, |v| v.value.clone());
                    if !right {
                        value.push(b'!');
                    }
                    Condition::ValueEquals(value)
                }
            };
            (small(*k), c)
        })
        .collect();
    let writes = writes
        .iter()
        .map(|w| match w {
            W::Put(k, v, when, keep) => Write::Put {
                key: small(*k),
                value: v.clone(),
                expiry: match (keep, clock.at(*when)) {
                    (true, _) => Expiry::Keep,
                    (false, None) => Expiry::Clear,
                    (false, Some(at)) => Expiry::At(at),
                },
            },
            W::Delete(k) => Write::Delete { key: small(*k) },
            W::Incr(k, delta) => Write::Incr {
                key: small(*k),
                delta: *delta,
            },
            W::SetDeadline(k, when) => Write::SetDeadline {
                key: small(*k),
                at: clock.at(*when),
            },
        })
        .collect();
    Txn { conditions, writes }
}

fn assert_same(store: &KeyValueStore, model: &Model, last_lsn: u64) {
    let keys = store.keys(b"", 0);
    assert_eq!(keys.keys, model.keys().cloned().collect::<Vec<_>>());
    for (k, v) in model {
        let got = store.get_versioned(k).expect("a key of the model");
        assert_eq!(
            (&got.value, got.seq, got.expires_at_ms),
            (&v.value, v.seq, v.deadline)
        );
    }
    let stats = store.stats();
    assert_eq!(stats.keys, model.len() as u64);
    assert_eq!(
        stats.bytes,
        model
            .iter()
            .map(|(k, v)| (k.len() + v.value.len()) as u64)
            .sum::<u64>()
    );
    assert_eq!(
        stats.expiring_keys,
        model.values().filter(|v| v.deadline.is_some()).count() as u64
    );
    assert_eq!(stats.last_lsn, last_lsn);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_a_btreemap(actions in proptest::collection::vec(action(), 1..120)) {
        let mut fs = SimFs::new();
        let mut store = KeyValueStore::open_with_vfs("/db", options(), fs.shared()).unwrap();
        let mut model = Model::new();
        let clock = Clock::new();
        let mut lsn = 0u64;
        for a in actions {
            match a {
                Action::Put(k, v) => {
                    lsn += 1;
                    prop_assert_eq!(store.put(&key(k), &v).unwrap(), lsn);
                    model.insert(key(k), Val { value: v, seq: lsn, deadline: None });
                }
                Action::PutLater(k, v, w) => {
                    lsn += 1;
                    let deadline = clock.at(When::Later(w));
                    let got = store.submit_put_expiring(&key(k), &v, deadline).unwrap().wait();
                    prop_assert_eq!(got.unwrap(), lsn);
                    model.insert(key(k), Val { value: v, seq: lsn, deadline });
                }
                Action::Txn(conds, writes) => {
                    let txn = build_txn(&model, &clock, &conds, &writes);
                    let expected = model_txn(&mut model, &txn, lsn + 1);
                    match (store.txn(txn.clone()), expected) {
                        (Ok(outcome), Ok((results, wrote))) => {
                            if wrote {
                                lsn += 1;
                            }
                            prop_assert_eq!(outcome.seq, if wrote { lsn } else { 0 });
                            prop_assert_eq!(outcome.results, results);
                        }
                        (Err(Error::ConditionFailed { .. }), Err("condition")) => {}
                        (Err(Error::InvalidRequest(_)), Err("not an integer" | "overflow")) => {}
                        (got, want) => {
                            prop_assert!(false, "{txn:?}: store {got:?}, model {want:?}");
                        }
                    }
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
