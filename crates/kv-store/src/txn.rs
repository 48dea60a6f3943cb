//! Conditional and computed writes, and the one function that decides them.
//!
//! A [`Txn`] is what a client asks for: conditions on keys, then writes
//! (puts with an expiry, deletes, counter increments, deadline changes),
//! applied all or none. Whether it applies, and what it writes, depends on
//! the state at its point in the log, so it is decided there, by
//! `decide`, against an `Overlay`: the state as of the record before
//! (the state itself, plus the writes a single node's commit thread has
//! decided earlier in the same batch). A decided transaction is a list of
//! plain puts and deletes (with absolute deadlines), which `State::apply`
//! applies at one LSN.
//!
//! Where the decision is made:
//! - On a single node, the commit thread (the log's only appender) decides
//!   each transaction before it appends, and logs only the decided puts and
//!   deletes: one PUT or DELETE record for one write, a TXN record of plain
//!   writes for several, nothing when nothing changes (a failed condition
//!   writes nothing). Replay applies those records as they are. This keeps
//!   every record of a single node's log idempotent per key, which the
//!   fuzzy checkpoint relies on (see the crate docs): a counter logged as
//!   "+1" would be counted twice by a snapshot that already holds it.
//! - In a cluster, the leader cannot know the state at the entry's point in
//!   the log when it proposes it, so the Raft entry carries the transaction
//!   as asked (conditions, deltas, deadline changes) with the leader's
//!   clock, and each replica decides it with the same function when it
//!   applies the entry, against its state at that position: every replica
//!   decides alike. A cluster's snapshots are exact (taken at an applied
//!   position, not fuzzy), so replaying is never an issue there.
//!
//! Expiry in decisions: a key whose deadline is at or before the decision's
//! clock counts as absent. The clock is the record's own timestamp (never
//! earlier than one already used: `State::advance_clock`), not the wall
//! clock at apply time, so replay and every replica see the same keys
//! expired.

use std::collections::HashMap;

use bytes::Bytes;
use kv_proto::{ConditionKind, MutationKind};
use wal_core::Lsn;

use crate::error::{Error, Result};
use crate::state::{Change, Entry, State};

/// The latest deadline accepted: 9999-12-31T23:59:59.999Z in ms since the
/// Unix epoch (Redis refuses expiry times past it, and so do we).
pub const MAX_DEADLINE_MS: u64 = 253_402_300_799_999;

/// What must hold of a key for a transaction to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key does not exist (or has expired).
    Absent,
    /// The key exists.
    Present,
    /// The key exists with this version.
    SeqEquals(Lsn),
    /// The key exists with this value (compare-and-swap).
    ValueEquals(Vec<u8>),
}

/// What a put does to the key's expiry deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expiry {
    /// No deadline (a plain put clears one, as Redis's SET does).
    #[default]
    Clear,
    /// Keep the key's current deadline (Redis's KEEPTTL).
    Keep,
    /// Expire at this absolute time, ms since the Unix epoch.
    At(u64),
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// Its deadline.
        expiry: Expiry,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Add `delta` to the key's value read as a decimal `i64` (a missing
    /// key counts as 0), keeping its deadline: Redis's INCRBY.
    Incr {
        /// The key.
        key: Vec<u8>,
        /// The signed delta.
        delta: i64,
    },
    /// Set (`Some`) or clear (`None`) an existing key's deadline; a
    /// deadline already past removes the key.
    SetDeadline {
        /// The key.
        key: Vec<u8>,
        /// The deadline, ms since the Unix epoch.
        at: Option<u64>,
    },
    /// Remove `key` if it still has version `seq` and has expired by the
    /// decision's clock (a key written again since is left alone): what an
    /// expiry sweeper writes.
    Sweep {
        /// The key.
        key: Vec<u8>,
        /// The version it had when found expired.
        seq: Lsn,
    },
}

impl Write {
    /// The key written.
    pub fn key(&self) -> &[u8] {
        match self {
            Write::Put { key, .. }
            | Write::Delete { key }
            | Write::Incr { key, .. }
            | Write::SetDeadline { key, .. }
            | Write::Sweep { key, .. } => key,
        }
    }
}

/// Conditions, then writes, applied all or none at one LSN.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Txn {
    /// Every one must hold.
    pub conditions: Vec<(Vec<u8>, Condition)>,
    /// Applied in order (a later write sees an earlier one's result).
    pub writes: Vec<Write>,
}

/// What one write of an applied transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteResult {
    /// The key was set.
    Put,
    /// The key was removed if it existed.
    Delete {
        /// Whether it existed (and had not expired).
        existed: bool,
    },
    /// The counter's new value.
    Incr {
        /// The value after the increment.
        value: i64,
    },
    /// A deadline change.
    SetDeadline {
        /// Whether the key existed.
        found: bool,
        /// Whether anything changed (false for a missing key, and for
        /// clearing the deadline of a key without one).
        changed: bool,
    },
    /// A sweep of an expired key.
    Sweep {
        /// Whether it was removed (false: gone, or written again).
        removed: bool,
    },
}

/// An applied transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOutcome {
    /// The LSN (in a cluster, the Raft position) of its record: the new
    /// version of every key it put. 0 on a single node when it changed
    /// nothing (and so wrote nothing).
    pub seq: Lsn,
    /// One result per write, in order.
    pub results: Vec<WriteResult>,
}

/// A key's value as decisions see it.
#[derive(Debug, Clone)]
pub(crate) struct Cur {
    pub(crate) seq: Lsn,
    pub(crate) value: Bytes,
    pub(crate) deadline: Option<u64>,
}

impl Cur {
    fn of(entry: &Entry) -> Cur {
        Cur {
            seq: entry.seq(),
            value: Bytes::copy_from_slice(entry.value()),
            deadline: entry.deadline(),
        }
    }

    fn live_at(&self, now: u64) -> bool {
        self.deadline.is_none_or(|d| d > now)
    }
}

/// A decided write: what goes into the log and the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decided {
    /// Set a key.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// Its deadline.
        deadline: Option<u64>,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: Bytes,
    },
}

impl Decided {
    /// The map change at `lsn`.
    pub(crate) fn change(&self, lsn: Lsn) -> Change {
        match self {
            Decided::Put {
                key,
                value,
                deadline,
            } => Change::Put(Entry::new(key, value, lsn, *deadline)),
            Decided::Delete { key } => Change::Delete(Entry::new(key, &[], lsn, None)),
        }
    }
}

/// The state as of a point in the log: `state`, plus writes decided after
/// it (by the commit thread, earlier in the same batch) that are not in it
/// yet.
pub(crate) struct Overlay<'s> {
    state: &'s State,
    changes: HashMap<Bytes, Option<Cur>>,
}

impl<'s> Overlay<'s> {
    pub(crate) fn new(state: &'s State) -> Overlay<'s> {
        Overlay {
            state,
            changes: HashMap::new(),
        }
    }

    /// The key's entry, expired or not.
    pub(crate) fn raw(&self, key: &[u8]) -> Option<Cur> {
        match self.changes.get(key) {
            Some(cur) => cur.clone(),
            None => self.state.get(key).map(Cur::of),
        }
    }

    /// Whether the key has an entry, expired or not, without copying it.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        match self.changes.get(key) {
            Some(cur) => cur.is_some(),
            None => self.state.contains(key),
        }
    }

    /// Whether the key has an entry that is live at `now`, without copying
    /// it.
    pub(crate) fn is_live(&self, key: &[u8], now: u64) -> bool {
        match self.changes.get(key) {
            Some(cur) => cur.as_ref().is_some_and(|c| c.live_at(now)),
            None => self.state.get(key).is_some_and(|e| !e.expired_at(now)),
        }
    }

    /// The key's entry if it is live at `now`.
    pub(crate) fn live(&self, key: &[u8], now: u64) -> Option<Cur> {
        self.raw(key).filter(|c| c.live_at(now))
    }

    /// Records a decided write at `lsn`.
    pub(crate) fn record(&mut self, write: &Decided, lsn: Lsn) {
        match write {
            Decided::Put {
                key,
                value,
                deadline,
            } => {
                self.changes.insert(
                    key.clone(),
                    Some(Cur {
                        seq: lsn,
                        value: value.clone(),
                        deadline: *deadline,
                    }),
                );
            }
            Decided::Delete { key } => {
                self.changes.insert(key.clone(), None);
            }
        }
    }

    /// Records a plain put (the commit thread's fast path) at `lsn`.
    pub(crate) fn record_put(&mut self, entry: &Entry, lsn: Lsn) {
        self.changes.insert(
            Bytes::copy_from_slice(entry.key()),
            Some(Cur {
                seq: lsn,
                value: Bytes::copy_from_slice(entry.value()),
                deadline: entry.deadline(),
            }),
        );
    }

    /// Records a plain delete.
    pub(crate) fn record_delete(&mut self, key: &[u8]) {
        self.changes.insert(Bytes::copy_from_slice(key), None);
    }
}

/// Decides `txn` at `lsn` against `view`, with `now` as the clock for
/// expiry: either the decided writes (possibly none) and each write's
/// result, recorded in `view`, or why it does not apply (nothing recorded):
/// [`Error::ConditionFailed`], or [`Error::InvalidRequest`] for a counter
/// on a non-integer or one that would overflow.
pub(crate) fn decide(
    view: &mut Overlay<'_>,
    txn: &Txn,
    now: u64,
    lsn: Lsn,
) -> Result<(Vec<Decided>, Vec<WriteResult>)> {
    for (key, condition) in &txn.conditions {
        let cur = view.live(key, now);
        let holds = match (condition, &cur) {
            (Condition::Absent, cur) => cur.is_none(),
            (Condition::Present, cur) => cur.is_some(),
            (Condition::SeqEquals(seq), Some(cur)) => cur.seq == *seq,
            (Condition::ValueEquals(value), Some(cur)) => cur.value[..] == value[..],
            (Condition::SeqEquals(_) | Condition::ValueEquals(_), None) => false,
        };
        if !holds {
            return Err(Error::ConditionFailed {
                key: key.clone(),
                current: cur.map(|c| c.seq),
            });
        }
    }
    // The transaction's own writes, seen by its later writes; merged into
    // `view` only once the whole transaction is decided.
    let mut local: HashMap<Bytes, Option<Cur>> = HashMap::new();
    let lookup = |local: &HashMap<Bytes, Option<Cur>>, key: &[u8]| match local.get(key) {
        Some(cur) => cur.clone(),
        None => view.raw(key),
    };
    let mut decided = Vec::with_capacity(txn.writes.len());
    let mut results = Vec::with_capacity(txn.writes.len());
    for write in &txn.writes {
        let key = Bytes::copy_from_slice(write.key());
        let raw = lookup(&local, &key);
        let live = raw.clone().filter(|c| c.live_at(now));
        let (out, result) = match write {
            Write::Sweep { seq, .. } => {
                let expired = raw
                    .as_ref()
                    .is_some_and(|c| c.seq == *seq && !c.live_at(now));
                (
                    expired.then(|| Decided::Delete { key: key.clone() }),
                    WriteResult::Sweep { removed: expired },
                )
            }
            Write::Put { value, expiry, .. } => {
                let deadline = match expiry {
                    Expiry::Clear => None,
                    Expiry::At(at) => Some(*at),
                    Expiry::Keep => live.as_ref().and_then(|c| c.deadline),
                };
                let out = if deadline.is_some_and(|d| d <= now) {
                    // Expired on arrival (an absolute deadline already
                    // past): the key ends up absent.
                    raw.is_some().then(|| Decided::Delete { key: key.clone() })
                } else {
                    Some(Decided::Put {
                        key: key.clone(),
                        value: Bytes::copy_from_slice(value),
                        deadline,
                    })
                };
                (out, WriteResult::Put)
            }
            Write::Delete { .. } => (
                // An expired key is removed too (it frees memory), but did
                // not exist as far as the caller can tell.
                raw.is_some().then(|| Decided::Delete { key: key.clone() }),
                WriteResult::Delete {
                    existed: live.is_some(),
                },
            ),
            Write::Incr { delta, .. } => {
                let current = match &live {
                    Some(cur) => parse_integer(&cur.value)?,
                    None => 0,
                };
                let value = current.checked_add(*delta).ok_or_else(|| {
                    Error::InvalidRequest("increment or decrement would overflow".into())
                })?;
                (
                    Some(Decided::Put {
                        key: key.clone(),
                        value: Bytes::from(value.to_string()),
                        deadline: live.as_ref().and_then(|c| c.deadline),
                    }),
                    WriteResult::Incr { value },
                )
            }
            Write::SetDeadline { at, .. } => match &live {
                None => (
                    None,
                    WriteResult::SetDeadline {
                        found: false,
                        changed: false,
                    },
                ),
                Some(cur) if at.is_none() && cur.deadline.is_none() => (
                    None,
                    WriteResult::SetDeadline {
                        found: true,
                        changed: false,
                    },
                ),
                Some(_) if at.is_some_and(|d| d <= now) => (
                    Some(Decided::Delete { key: key.clone() }),
                    WriteResult::SetDeadline {
                        found: true,
                        changed: true,
                    },
                ),
                Some(cur) => (
                    Some(Decided::Put {
                        key: key.clone(),
                        value: cur.value.clone(),
                        deadline: *at,
                    }),
                    WriteResult::SetDeadline {
                        found: true,
                        changed: true,
                    },
                ),
            },
        };
        if let Some(out) = out {
            match &out {
                Decided::Put {
                    value, deadline, ..
                } => local.insert(
                    key,
                    Some(Cur {
                        seq: lsn,
                        value: value.clone(),
                        deadline: *deadline,
                    }),
                ),
                Decided::Delete { .. } => local.insert(key, None),
            };
            decided.push(out);
        }
        results.push(result);
    }
    for write in &decided {
        view.record(write, lsn);
    }
    Ok((decided, results))
}

/// A value as Redis's INCRBY reads it: optional `-`, then decimal digits,
/// no spaces, no `+`, no leading zeros (but `0`), within `i64`.
fn parse_integer(value: &[u8]) -> Result<i64> {
    let invalid = || Error::InvalidRequest("value is not an integer or out of range".into());
    let text = std::str::from_utf8(value).map_err(|_| invalid())?;
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && text != "-0";
    if !canonical {
        return Err(invalid());
    }
    text.parse::<i64>().map_err(|_| invalid())
}

/// Checks a deadline a client gave: at most [`MAX_DEADLINE_MS`].
pub fn check_deadline(at_ms: u64) -> Result<u64> {
    if at_ms > MAX_DEADLINE_MS {
        return Err(Error::InvalidRequest(format!(
            "invalid expire time: {at_ms} ms since the epoch is past the year 9999"
        )));
    }
    Ok(at_ms)
}

/// The absolute deadline `ttl_ms` from `now_ms`: a time to live of zero, or
/// one that ends past the year 9999, is [`Error::InvalidRequest`].
pub fn deadline_after(now_ms: u64, ttl_ms: u64) -> Result<u64> {
    if ttl_ms == 0 {
        return Err(Error::InvalidRequest(
            "invalid expire time: a time to live must be positive".into(),
        ));
    }
    check_deadline(now_ms.saturating_add(ttl_ms))
}

/// What a client's condition asks: `None` for CONDITION_NONE (always
/// holds), [`Error::InvalidRequest`] for a kind this code does not know.
pub fn condition_from_request(c: &kv_proto::Condition) -> Result<Option<Condition>> {
    Ok(Some(match ConditionKind::try_from(c.kind) {
        Ok(ConditionKind::ConditionNone) => return Ok(None),
        Ok(ConditionKind::Absent) => Condition::Absent,
        Ok(ConditionKind::Present) => Condition::Present,
        Ok(ConditionKind::SeqEquals) => Condition::SeqEquals(c.seq),
        Ok(ConditionKind::ValueEquals) => Condition::ValueEquals(c.value.to_vec()),
        Err(_) => {
            return Err(Error::InvalidRequest(format!(
                "unknown condition kind {}",
                c.kind
            )));
        }
    }))
}

/// The expiry a client's put asks for, at `now_ms`: at most one of a time
/// to live, an absolute deadline and "keep the current one"; a time to live
/// or deadline past the year 9999 is [`Error::InvalidRequest`].
pub fn expiry_from_request(
    ttl_ms: u64,
    expires_at_ms: u64,
    keep_ttl: bool,
    now_ms: u64,
) -> Result<Expiry> {
    match (ttl_ms, expires_at_ms, keep_ttl) {
        (0, 0, false) => Ok(Expiry::Clear),
        (0, 0, true) => Ok(Expiry::Keep),
        (ttl, 0, false) => Ok(Expiry::At(deadline_after(now_ms, ttl)?)),
        (0, at, false) => Ok(Expiry::At(check_deadline(at)?)),
        _ => Err(Error::InvalidRequest(
            "give at most one of a time to live, an expiry time and keep-ttl".into(),
        )),
    }
}

/// The transaction a client's batch asks for, with times to live turned
/// into deadlines from `now_ms`. An empty batch, or a write or condition of
/// a kind this code does not know, is [`Error::InvalidRequest`].
pub fn txn_from_request(
    conditions: &[kv_proto::Condition],
    writes: &[kv_proto::Mutation],
    now_ms: u64,
) -> Result<Txn> {
    if writes.is_empty() {
        return Err(Error::InvalidRequest(
            "a batch needs at least one write".into(),
        ));
    }
    let mut txn = Txn::default();
    for c in conditions {
        if let Some(condition) = condition_from_request(c)? {
            txn.conditions.push((c.key.to_vec(), condition));
        }
    }
    for m in writes {
        let key = m.key.to_vec();
        txn.writes.push(match MutationKind::try_from(m.kind) {
            Ok(MutationKind::MutationPut) => Write::Put {
                key,
                value: m.value.to_vec(),
                expiry: expiry_from_request(m.ttl_ms, m.expires_at_ms, m.keep_ttl, now_ms)?,
            },
            Ok(MutationKind::MutationDelete) => Write::Delete { key },
            Ok(MutationKind::MutationIncr) => Write::Incr {
                key,
                delta: m.delta,
            },
            Ok(MutationKind::MutationSetDeadline) => Write::SetDeadline {
                key,
                at: match expiry_from_request(m.ttl_ms, m.expires_at_ms, false, now_ms)? {
                    Expiry::At(at) => Some(at),
                    Expiry::Clear | Expiry::Keep => None,
                },
            },
            Ok(MutationKind::MutationSweep) => {
                return Err(Error::InvalidRequest(
                    "SWEEP writes are the expiry sweeper's, not a client's".into(),
                ));
            }
            Ok(MutationKind::MutationUnspecified) | Err(_) => {
                return Err(Error::InvalidRequest(format!(
                    "unknown write kind {}",
                    m.kind
                )));
            }
        });
    }
    Ok(txn)
}

impl Txn {
    /// The transaction as its log record carries it (a cluster's Raft
    /// entry).
    pub(crate) fn to_proto(&self) -> kv_proto::Txn {
        kv_proto::Txn {
            conditions: self
                .conditions
                .iter()
                .map(|(key, c)| {
                    let (kind, seq, value) = match c {
                        Condition::Absent => (ConditionKind::Absent, 0, Bytes::new()),
                        Condition::Present => (ConditionKind::Present, 0, Bytes::new()),
                        Condition::SeqEquals(seq) => (ConditionKind::SeqEquals, *seq, Bytes::new()),
                        Condition::ValueEquals(v) => {
                            (ConditionKind::ValueEquals, 0, Bytes::copy_from_slice(v))
                        }
                    };
                    kv_proto::Condition {
                        kind: kind as i32,
                        seq,
                        value,
                        key: Bytes::copy_from_slice(key),
                    }
                })
                .collect(),
            writes: self
                .writes
                .iter()
                .map(|w| {
                    let mut m = kv_proto::Mutation {
                        key: Bytes::copy_from_slice(w.key()),
                        ..Default::default()
                    };
                    match w {
                        Write::Put { value, expiry, .. } => {
                            m.kind = MutationKind::MutationPut as i32;
                            m.value = Bytes::copy_from_slice(value);
                            match expiry {
                                Expiry::Clear => {}
                                Expiry::Keep => m.keep_ttl = true,
                                Expiry::At(at) => m.expires_at_ms = *at,
                            }
                        }
                        Write::Delete { .. } => m.kind = MutationKind::MutationDelete as i32,
                        Write::Incr { delta, .. } => {
                            m.kind = MutationKind::MutationIncr as i32;
                            m.delta = *delta;
                        }
                        Write::SetDeadline { at, .. } => {
                            m.kind = MutationKind::MutationSetDeadline as i32;
                            m.expires_at_ms = at.unwrap_or(0);
                        }
                        Write::Sweep { seq, .. } => {
                            m.kind = MutationKind::MutationSweep as i32;
                            m.seq = *seq;
                        }
                    }
                    m
                })
                .collect(),
        }
    }

    /// The transaction a log record carries; `None` for a kind or condition
    /// this code does not know (refused as damage by the caller).
    pub(crate) fn from_proto(txn: &kv_proto::Txn) -> std::result::Result<Txn, String> {
        let conditions = txn
            .conditions
            .iter()
            .map(|c| {
                let condition = match ConditionKind::try_from(c.kind) {
                    Ok(ConditionKind::Absent) => Condition::Absent,
                    Ok(ConditionKind::Present) => Condition::Present,
                    Ok(ConditionKind::SeqEquals) => Condition::SeqEquals(c.seq),
                    Ok(ConditionKind::ValueEquals) => Condition::ValueEquals(c.value.to_vec()),
                    _ => return Err(format!("unknown condition kind {}", c.kind)),
                };
                Ok((c.key.to_vec(), condition))
            })
            .collect::<std::result::Result<_, String>>()?;
        let writes = txn
            .writes
            .iter()
            .map(|m| {
                let key = m.key.to_vec();
                Ok(match MutationKind::try_from(m.kind) {
                    Ok(MutationKind::MutationPut) => Write::Put {
                        key,
                        value: m.value.to_vec(),
                        expiry: match (m.keep_ttl, m.expires_at_ms) {
                            (true, _) => Expiry::Keep,
                            (false, 0) => Expiry::Clear,
                            (false, at) => Expiry::At(at),
                        },
                    },
                    Ok(MutationKind::MutationDelete) => Write::Delete { key },
                    Ok(MutationKind::MutationIncr) => Write::Incr {
                        key,
                        delta: m.delta,
                    },
                    Ok(MutationKind::MutationSetDeadline) => Write::SetDeadline {
                        key,
                        at: (m.expires_at_ms != 0).then_some(m.expires_at_ms),
                    },
                    Ok(MutationKind::MutationSweep) => Write::Sweep { key, seq: m.seq },
                    _ => return Err(format!("unknown write kind {}", m.kind)),
                })
            })
            .collect::<std::result::Result<_, String>>()?;
        Ok(Txn { conditions, writes })
    }
}

/// The decided writes of a TXN record in a single node's log, as map
/// changes at `lsn`. Such a record holds only plain puts and deletes
/// (see the module docs); anything else is refused as damage rather than
/// decided again at replay.
pub(crate) fn decided_changes(txn: &kv_proto::Txn, lsn: Lsn) -> Result<Vec<Change>> {
    let corrupt = |reason: String| Error::CorruptLogEntry { lsn, reason };
    if !txn.conditions.is_empty() {
        return Err(corrupt(
            "a transaction with conditions in a single node's log".into(),
        ));
    }
    txn.writes
        .iter()
        .map(|m| match MutationKind::try_from(m.kind) {
            Ok(MutationKind::MutationPut) if !m.keep_ttl && m.ttl_ms == 0 && m.delta == 0 => {
                let deadline = (m.expires_at_ms != 0).then_some(m.expires_at_ms);
                Ok(Change::Put(Entry::new(&m.key, &m.value, lsn, deadline)))
            }
            Ok(MutationKind::MutationDelete) => {
                Ok(Change::Delete(Entry::new(&m.key, &[], lsn, None)))
            }
            _ => Err(corrupt(format!(
                "write of kind {} is not a decided put or delete",
                m.kind
            ))),
        })
        .collect()
}

/// The decided writes as a TXN record's body.
pub(crate) fn decided_proto(writes: &[Decided]) -> kv_proto::Txn {
    kv_proto::Txn {
        conditions: Vec::new(),
        writes: writes
            .iter()
            .map(|w| match w {
                Decided::Put {
                    key,
                    value,
                    deadline,
                } => kv_proto::Mutation {
                    kind: MutationKind::MutationPut as i32,
                    key: key.clone(),
                    value: value.clone(),
                    expires_at_ms: deadline.unwrap_or(0),
                    ..Default::default()
                },
                Decided::Delete { key } => kv_proto::Mutation {
                    kind: MutationKind::MutationDelete as i32,
                    key: key.clone(),
                    ..Default::default()
                },
            })
            .collect(),
    }
}

/// A key for a message: as text if printable UTF-8, else hex.
pub(crate) fn quote(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if !s.chars().any(char::is_control) => format!("{s:?}"),
        _ => {
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Op;

    /// Key, value, seq, deadline.
    type Row<'a> = (&'a [u8], &'a [u8], Lsn, Option<u64>);

    fn state_with(entries: &[Row<'_>]) -> State {
        let mut s = State::default();
        for (k, v, seq, d) in entries {
            s.apply(Op::Put(Entry::new(k, v, *seq, *d)), *seq);
        }
        s
    }

    fn put(key: &[u8], value: &[u8]) -> Write {
        Write::Put {
            key: key.to_vec(),
            value: value.to_vec(),
            expiry: Expiry::Clear,
        }
    }

    #[test]
    fn conditions_are_judged_against_versions_values_and_expiry() {
        let s = state_with(&[(b"a", b"1", 3, None), (b"old", b"x", 4, Some(100))]);
        let cases: Vec<(Vec<u8>, Condition, bool)> = vec![
            (b"a".to_vec(), Condition::Present, true),
            (b"a".to_vec(), Condition::Absent, false),
            (b"a".to_vec(), Condition::SeqEquals(3), true),
            (b"a".to_vec(), Condition::SeqEquals(4), false),
            (b"a".to_vec(), Condition::ValueEquals(b"1".to_vec()), true),
            (b"a".to_vec(), Condition::ValueEquals(b"2".to_vec()), false),
            (b"nope".to_vec(), Condition::Absent, true),
            (b"nope".to_vec(), Condition::SeqEquals(0), false),
            // Expired at the clock of 100: absent.
            (b"old".to_vec(), Condition::Absent, true),
            (b"old".to_vec(), Condition::Present, false),
        ];
        for (key, condition, holds) in cases {
            let mut view = Overlay::new(&s);
            let txn = Txn {
                conditions: vec![(key.clone(), condition.clone())],
                writes: vec![put(b"z", b"v")],
            };
            match decide(&mut view, &txn, 100, 9) {
                Ok((writes, _)) => {
                    assert!(holds, "{condition:?} on {key:?} held");
                    assert_eq!(writes.len(), 1);
                }
                Err(Error::ConditionFailed { current, .. }) => {
                    assert!(!holds, "{condition:?} on {key:?} failed");
                    let expected = (key == b"a").then_some(3);
                    assert_eq!(current, expected);
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn writes_see_earlier_writes_and_fail_all_or_none() {
        let s = state_with(&[(b"n", b"41", 1, Some(5_000))]);
        let mut view = Overlay::new(&s);
        let txn = Txn {
            conditions: vec![],
            writes: vec![
                Write::Incr {
                    key: b"n".to_vec(),
                    delta: 1,
                },
                Write::Incr {
                    key: b"n".to_vec(),
                    delta: -50,
                },
                Write::Incr {
                    key: b"fresh".to_vec(),
                    delta: 7,
                },
                Write::Delete {
                    key: b"missing".to_vec(),
                },
            ],
        };
        let (writes, results) = decide(&mut view, &txn, 10, 2).unwrap();
        assert_eq!(
            results,
            vec![
                WriteResult::Incr { value: 42 },
                WriteResult::Incr { value: -8 },
                WriteResult::Incr { value: 7 },
                WriteResult::Delete { existed: false },
            ]
        );
        // The counter keeps its deadline; a delete of a missing key writes
        // nothing.
        assert_eq!(writes.len(), 3);
        assert_eq!(
            writes[1],
            Decided::Put {
                key: Bytes::from_static(b"n"),
                value: Bytes::from_static(b"-8"),
                deadline: Some(5_000)
            }
        );
        assert_eq!(view.live(b"n", 10).map(|c| c.seq), Some(2));

        // A failing write leaves nothing behind, earlier writes included.
        let before = view.raw(b"n").map(|c| c.value);
        let bad = Txn {
            conditions: vec![],
            writes: vec![
                put(b"n", b"not a number"),
                Write::Incr {
                    key: b"n".to_vec(),
                    delta: 1,
                },
            ],
        };
        assert!(matches!(
            decide(&mut view, &bad, 10, 3),
            Err(Error::InvalidRequest(_))
        ));
        assert_eq!(view.raw(b"n").map(|c| c.value), before);
        let overflow = Txn {
            conditions: vec![],
            writes: vec![
                put(b"m", i64::MAX.to_string().as_bytes()),
                Write::Incr {
                    key: b"m".to_vec(),
                    delta: 1,
                },
            ],
        };
        assert!(decide(&mut view, &overflow, 10, 3).is_err());
        assert!(view.raw(b"m").is_none());
    }

    #[test]
    fn integers_are_read_as_redis_reads_them() {
        for ok in [
            "0",
            "-1",
            "42",
            "9223372036854775807",
            "-9223372036854775808",
        ] {
            assert_eq!(parse_integer(ok.as_bytes()).unwrap().to_string(), ok);
        }
        for bad in [
            "",
            "-",
            "+1",
            " 1",
            "1 ",
            "01",
            "-0",
            "1.5",
            "9223372036854775808",
            "abc",
        ] {
            assert!(parse_integer(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(parse_integer(b"\xff").is_err());
    }

    /// A sweep removes a key only if it still has the version it was found
    /// with and has expired by the decision's clock.
    #[test]
    fn sweeps_remove_only_expired_keys_of_the_version_found() {
        let s = state_with(&[
            (b"old", b"v", 1, Some(50)),
            (b"new", b"v", 2, Some(50)),
            (b"live", b"v", 3, Some(500)),
        ]);
        let mut view = Overlay::new(&s);
        let sweep = Txn {
            conditions: vec![],
            writes: vec![
                Write::Sweep {
                    key: b"old".to_vec(),
                    seq: 1,
                },
                // Written again since it was found: seq 2, not 1.
                Write::Sweep {
                    key: b"new".to_vec(),
                    seq: 1,
                },
                Write::Sweep {
                    key: b"live".to_vec(),
                    seq: 3,
                },
                Write::Sweep {
                    key: b"missing".to_vec(),
                    seq: 4,
                },
            ],
        };
        let (w, r) = decide(&mut view, &sweep, 100, 5).unwrap();
        assert_eq!(w, vec![Decided::Delete { key: "old".into() }]);
        let removed: Vec<bool> = r
            .iter()
            .map(|r| matches!(r, WriteResult::Sweep { removed: true }))
            .collect();
        assert_eq!(removed, [true, false, false, false]);
        // The log form carries it (a cluster entry), and clients cannot.
        let back = Txn::from_proto(&sweep.to_proto()).unwrap();
        assert_eq!(back, sweep);
        let proto = sweep.to_proto();
        assert!(matches!(
            txn_from_request(&proto.conditions, &proto.writes, 0),
            Err(Error::InvalidRequest(_))
        ));
    }

    #[test]
    fn deadlines_set_clear_and_expire_at_once() {
        let s = state_with(&[(b"k", b"v", 1, None), (b"t", b"v", 2, Some(500))]);
        let mut view = Overlay::new(&s);
        let set = |key: &[u8], at| Txn {
            conditions: vec![],
            writes: vec![Write::SetDeadline {
                key: key.to_vec(),
                at,
            }],
        };
        let (w, r) = decide(&mut view, &set(b"k", None), 100, 3).unwrap();
        assert!(w.is_empty(), "persist on a key without a deadline");
        assert_eq!(
            r,
            vec![WriteResult::SetDeadline {
                found: true,
                changed: false
            }]
        );
        let (w, _) = decide(&mut view, &set(b"t", None), 100, 4).unwrap();
        assert_eq!(view.live(b"t", 10_000).map(|c| c.deadline), Some(None));
        assert_eq!(w.len(), 1);
        let (w, _) = decide(&mut view, &set(b"k", Some(50)), 100, 5).unwrap();
        assert_eq!(w, vec![Decided::Delete { key: "k".into() }]);
        let (w, r) = decide(&mut view, &set(b"gone", Some(500)), 100, 6).unwrap();
        assert!(w.is_empty());
        assert_eq!(
            r,
            vec![WriteResult::SetDeadline {
                found: false,
                changed: false
            }]
        );
    }

    #[test]
    fn proto_round_trip() {
        let txn = Txn {
            conditions: vec![
                (b"a".to_vec(), Condition::Absent),
                (b"b".to_vec(), Condition::Present),
                (b"c".to_vec(), Condition::SeqEquals(9)),
                (b"d".to_vec(), Condition::ValueEquals(b"x".to_vec())),
            ],
            writes: vec![
                put(b"a", b"1"),
                Write::Put {
                    key: b"b".to_vec(),
                    value: vec![],
                    expiry: Expiry::Keep,
                },
                Write::Put {
                    key: b"b".to_vec(),
                    value: vec![1],
                    expiry: Expiry::At(77),
                },
                Write::Delete { key: b"c".to_vec() },
                Write::Incr {
                    key: b"d".to_vec(),
                    delta: -3,
                },
                Write::SetDeadline {
                    key: b"e".to_vec(),
                    at: Some(5),
                },
                Write::SetDeadline {
                    key: b"e".to_vec(),
                    at: None,
                },
            ],
        };
        assert_eq!(Txn::from_proto(&txn.to_proto()).unwrap(), txn);
    }

    #[test]
    fn ttls_past_the_year_9999_or_zero_are_refused() {
        assert!(deadline_after(1_000, 0).is_err());
        assert_eq!(deadline_after(1_000, 5).unwrap(), 1_005);
        assert!(deadline_after(MAX_DEADLINE_MS, 1).is_err());
        assert!(check_deadline(MAX_DEADLINE_MS).is_ok());
        assert!(check_deadline(MAX_DEADLINE_MS + 1).is_err());
    }
}
