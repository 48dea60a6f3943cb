//! The typed values of the store's features, as the client's calls take
//! and return them: versions, conditions, batches, expiry, scans and
//! statistics. Each maps onto one message of `proto/kv.proto`; the
//! conversions live here, so that the calls themselves stay one line.

use std::time::Duration;

use bytes::Bytes;
use kv_proto::{ConditionKind, MutationKind};

/// A key's value with its version and deadline, as a versioned get or a
/// multi-get returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Bytes,
    /// The key's version: the seq of the write that last set it. A
    /// [`Condition::SeqEquals`] with it succeeds only if nobody wrote the
    /// key since.
    pub seq: u64,
    /// The key's expiry deadline, milliseconds since the Unix epoch;
    /// `None`: it lives until deleted.
    pub expires_at_ms: Option<u64>,
}

impl Versioned {
    /// The key's value from a `GetResponse`, `None` if it was not found.
    pub(crate) fn from_get(get: kv_proto::GetResponse) -> Option<Versioned> {
        get.found.then(|| Versioned {
            value: get.value,
            seq: get.seq,
            expires_at_ms: nonzero(get.expires_at_ms),
        })
    }
}

/// What must hold of a key for a conditional write to be applied. The
/// server decides it when it applies the write; an unmet condition writes
/// nothing and fails with [`crate::ClientError::ConditionFailed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key does not exist (or has expired): create-only.
    Absent,
    /// The key exists: update-only.
    Present,
    /// The key exists with this version ([`Versioned::seq`]): optimistic
    /// concurrency after a read.
    SeqEquals(u64),
    /// The key exists with this value: compare-and-swap.
    ValueEquals(Bytes),
}

impl Condition {
    /// The wire condition, on `key` (empty for a put's or delete's own
    /// key, which the server fills in).
    pub(crate) fn to_proto(&self, key: Bytes) -> kv_proto::Condition {
        let (kind, seq, value) = match self {
            Condition::Absent => (ConditionKind::Absent, 0, Bytes::new()),
            Condition::Present => (ConditionKind::Present, 0, Bytes::new()),
            Condition::SeqEquals(seq) => (ConditionKind::SeqEquals, *seq, Bytes::new()),
            Condition::ValueEquals(value) => (ConditionKind::ValueEquals, 0, value.clone()),
        };
        kv_proto::Condition {
            kind: kind as i32,
            seq,
            value,
            key,
        }
    }
}

/// How a put is made, beyond its key and value. The default is a plain
/// put: no condition, no deadline (a deadline the key had is cleared).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Write only if this holds of the key.
    pub condition: Option<Condition>,
    /// Expire the key this long after the server takes the put (rounded
    /// up to whole milliseconds). At most one of `ttl`, `expires_at_ms`
    /// and `keep_ttl`.
    pub ttl: Option<Duration>,
    /// Expire the key at this absolute time, milliseconds since the Unix
    /// epoch.
    pub expires_at_ms: Option<u64>,
    /// Keep the deadline the key has instead of clearing it (Redis's
    /// KEEPTTL).
    pub keep_ttl: bool,
}

/// One write of an atomic [`batch`](crate::Client::batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Set `key` to `value`, expiring after `ttl` if given.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// A time to live; `None`: no deadline.
        ttl: Option<Duration>,
    },
    /// Remove `key` (nothing happens if it does not exist).
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Add `delta` to the decimal integer in `key` (missing: from 0).
    Incr {
        /// The key.
        key: Bytes,
        /// The signed delta.
        delta: i64,
    },
}

impl Write {
    /// A put without a deadline.
    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Write {
        Write::Put {
            key: key.into(),
            value: value.into(),
            ttl: None,
        }
    }

    /// A delete.
    pub fn delete(key: impl Into<Bytes>) -> Write {
        Write::Delete { key: key.into() }
    }

    /// An increment.
    pub fn incr(key: impl Into<Bytes>, delta: i64) -> Write {
        Write::Incr {
            key: key.into(),
            delta,
        }
    }

    pub(crate) fn into_proto(self) -> kv_proto::Mutation {
        match self {
            Write::Put { key, value, ttl } => kv_proto::Mutation {
                kind: MutationKind::MutationPut as i32,
                key,
                value,
                ttl_ms: ttl.map_or(0, duration_ms),
                ..Default::default()
            },
            Write::Delete { key } => kv_proto::Mutation {
                kind: MutationKind::MutationDelete as i32,
                key,
                ..Default::default()
            },
            Write::Incr { key, delta } => kv_proto::Mutation {
                kind: MutationKind::MutationIncr as i32,
                key,
                delta,
                ..Default::default()
            },
        }
    }
}

/// A condition on one key of a [`batch`](crate::Client::batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCondition {
    /// The key tested.
    pub key: Bytes,
    /// What must hold of it.
    pub condition: Condition,
}

impl KeyCondition {
    /// `condition` on `key`.
    pub fn new(key: impl Into<Bytes>, condition: Condition) -> KeyCondition {
        KeyCondition {
            key: key.into(),
            condition,
        }
    }
}

/// The result of an increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    /// The new value.
    pub value: i64,
    /// Its version.
    pub seq: u64,
}

/// What an expire or persist on an existing key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineChange {
    /// The seq of the write that changed the deadline; `None` when nothing
    /// changed (a persist on a key without a deadline).
    pub seq: Option<u64>,
}

/// A key's remaining time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The key has no deadline: it lives until deleted.
    Persistent,
    /// The key expires.
    Expires {
        /// How long it has left, as of the server's answer.
        remaining: Duration,
        /// Its deadline, milliseconds since the Unix epoch.
        expires_at_ms: u64,
    },
}

/// Which keys a scan reads, and how. The default scans every key in
/// ascending order, without values, in pages as large as the server sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanOptions {
    /// Only keys with this prefix; when non-empty, `start` and `end` must
    /// be empty.
    pub prefix: Bytes,
    /// The first key of the range (inclusive); empty: from the first key.
    pub start: Bytes,
    /// The end of the range (exclusive); empty: to the last key.
    pub end: Bytes,
    /// At most this many keys per page; 0: as many as fit one frame.
    pub limit: u32,
    /// Also return each key's value.
    pub values: bool,
    /// Descending order.
    pub reverse: bool,
    /// Resume after this key (a previous page's
    /// [`ScanPage::resume_after`]); empty: from the range's start (its
    /// end in reverse).
    pub after: Bytes,
}

impl ScanOptions {
    /// Every key with `prefix`.
    pub fn prefix(prefix: impl Into<Bytes>) -> ScanOptions {
        ScanOptions {
            prefix: prefix.into(),
            ..ScanOptions::default()
        }
    }

    /// Keys from `start` (inclusive) to `end` (exclusive; empty: no end).
    pub fn range(start: impl Into<Bytes>, end: impl Into<Bytes>) -> ScanOptions {
        ScanOptions {
            start: start.into(),
            end: end.into(),
            ..ScanOptions::default()
        }
    }

    pub(crate) fn to_proto(&self) -> kv_proto::ScanRequest {
        kv_proto::ScanRequest {
            prefix: self.prefix.clone(),
            start: self.start.clone(),
            end: self.end.clone(),
            limit: self.limit,
            values: self.values,
            reverse: self.reverse,
            after: self.after.clone(),
        }
    }
}

/// One key of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanItem {
    /// The key.
    pub key: Bytes,
    /// Its value, when the scan asked for values ([`ScanOptions::values`]).
    pub value: Option<Bytes>,
    /// Its version.
    pub seq: u64,
}

/// One page of a scan.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanPage {
    /// The keys, in the scan's order.
    pub items: Vec<ScanItem>,
    /// True when keys in the range may remain after this page.
    pub more: bool,
    /// With `more`: where the next page starts; pass it as
    /// [`ScanOptions::after`]. Usually the last item's key, further on
    /// when the page skipped expired keys.
    pub resume_after: Option<Bytes>,
}

/// The store's counters and sizes, as of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Live keys (expired keys not yet swept included).
    pub keys: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
    /// The last applied write's seq.
    pub last_seq: u64,
    /// The highest seq known durable.
    pub durable_seq: u64,
    /// Bytes of log segment files.
    pub wal_bytes: u64,
    /// Log segment files.
    pub wal_segments: u64,
    /// Snapshots written since the server started.
    pub snapshots: u64,
    /// Keys with an expiry deadline.
    pub expiring_keys: u64,
    /// Expired keys removed by the sweeper since the server started.
    pub expired_keys: u64,
    /// How long the server has been running.
    pub uptime: Duration,
}

impl From<kv_proto::StatsResponse> for Stats {
    fn from(s: kv_proto::StatsResponse) -> Stats {
        Stats {
            keys: s.keys,
            bytes: s.bytes,
            last_seq: s.last_seq,
            durable_seq: s.durable_seq,
            wal_bytes: s.wal_bytes,
            wal_segments: s.wal_segments,
            snapshots: s.snapshots,
            expiring_keys: s.expiring_keys,
            expired_keys: s.expired_keys,
            uptime: Duration::from_millis(s.uptime_ms),
        }
    }
}

/// `d` in whole milliseconds, rounded up, so that a nonzero duration
/// never becomes the protocol's "none" (0); saturating at `u64::MAX`.
pub(crate) fn duration_ms(d: Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// The protocol's "0: none".
pub(crate) fn nonzero(n: u64) -> Option<u64> {
    (n != 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up_to_milliseconds() {
        assert_eq!(duration_ms(Duration::ZERO), 0);
        assert_eq!(duration_ms(Duration::from_nanos(1)), 1);
        assert_eq!(duration_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(duration_ms(Duration::MAX), u64::MAX);
    }
}
