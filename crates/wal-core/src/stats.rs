//! Counters of what the log did, for [`crate::Wal::stats`]: std atomics
//! only, updated by the group leader (one set of relaxed adds a group).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Lsn;

/// Buckets of [`WalStats::group_records`]: bucket `i` counts groups of
/// `2^i ..= 2^(i+1) - 1` records (bucket 0: one record), the last bucket
/// everything larger.
pub const GROUP_BUCKETS: usize = 16;

/// Buckets of [`WalStats::sync_micros`]: bucket `i` counts syncs that took
/// `2^i ..= 2^(i+1) - 1` microseconds (bucket 0: under 2 µs), the last
/// bucket everything slower (over about 8 s).
pub const SYNC_BUCKETS: usize = 24;

/// A snapshot of the log's counters since it was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Records appended (written to the segment files).
    pub records: u64,
    /// Payload bytes of those records.
    pub payload_bytes: u64,
    /// Bytes written to segment files for them (framing included).
    pub written_bytes: u64,
    /// Groups written by a leader (a write of queued records, possibly
    /// followed by a sync; a lone `sync` counts too).
    pub groups: u64,
    /// Fdatasyncs of groups.
    pub syncs: u64,
    /// Total time spent in those writes and syncs, in microseconds.
    pub sync_micros_total: u64,
    /// Groups by how many records they held: see [`GROUP_BUCKETS`].
    pub group_records: [u64; GROUP_BUCKETS],
    /// Syncing groups by how long their write and fdatasync took: see
    /// [`SYNC_BUCKETS`].
    pub sync_micros: [u64; SYNC_BUCKETS],
    /// Segment files the log holds.
    pub segments: u64,
    /// The last LSN written.
    pub written_lsn: Lsn,
    /// The last LSN made durable.
    pub durable_lsn: Lsn,
}

impl WalStats {
    /// Records per group on average (0 before the first group).
    pub fn mean_group_records(&self) -> f64 {
        if self.groups == 0 {
            0.0
        } else {
            self.records as f64 / self.groups as f64
        }
    }
}

/// The live counters.
#[derive(Debug)]
pub(crate) struct StatsCounters {
    records: AtomicU64,
    payload_bytes: AtomicU64,
    written_bytes: AtomicU64,
    groups: AtomicU64,
    syncs: AtomicU64,
    sync_micros_total: AtomicU64,
    group_records: [AtomicU64; GROUP_BUCKETS],
    sync_micros: [AtomicU64; SYNC_BUCKETS],
}

impl Default for StatsCounters {
    fn default() -> Self {
        StatsCounters {
            records: AtomicU64::new(0),
            payload_bytes: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
            groups: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            sync_micros_total: AtomicU64::new(0),
            group_records: std::array::from_fn(|_| AtomicU64::new(0)),
            sync_micros: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The bucket of `value` in a power-of-two histogram of `buckets` buckets.
fn bucket(value: u64, buckets: usize) -> usize {
    let log2 = 63 - value.max(1).leading_zeros() as usize;
    log2.min(buckets - 1)
}

impl StatsCounters {
    /// A group of records `lsns` (`bytes` framed) was written.
    pub(crate) fn record_group(&self, lsns: &Range<Lsn>, bytes: usize) {
        let records = lsns.end - lsns.start;
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records, Ordering::Relaxed);
        self.written_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        let framing = records * crate::format::RECORD_HEADER_LEN as u64;
        self.payload_bytes
            .fetch_add((bytes as u64).saturating_sub(framing), Ordering::Relaxed);
        if records > 0 {
            self.group_records[bucket(records, GROUP_BUCKETS)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A group's write and fdatasync took `took`.
    pub(crate) fn record_sync(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.sync_micros_total.fetch_add(micros, Ordering::Relaxed);
        self.sync_micros[bucket(micros, SYNC_BUCKETS)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, segments: u64, written_lsn: Lsn, durable_lsn: Lsn) -> WalStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WalStats {
            records: load(&self.records),
            payload_bytes: load(&self.payload_bytes),
            written_bytes: load(&self.written_bytes),
            groups: load(&self.groups),
            syncs: load(&self.syncs),
            sync_micros_total: load(&self.sync_micros_total),
            group_records: std::array::from_fn(|i| load(&self.group_records[i])),
            sync_micros: std::array::from_fn(|i| load(&self.sync_micros[i])),
            segments,
            written_lsn,
            durable_lsn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two() {
        assert_eq!(bucket(0, 16), 0);
        assert_eq!(bucket(1, 16), 0);
        assert_eq!(bucket(2, 16), 1);
        assert_eq!(bucket(3, 16), 1);
        assert_eq!(bucket(4, 16), 2);
        assert_eq!(bucket(1 << 40, 16), 15);
    }

    #[test]
    fn a_group_counts_its_records_and_payload() {
        let c = StatsCounters::default();
        c.record_group(&(5..9), 4 * 20 + 100);
        c.record_sync(Duration::from_micros(300));
        let s = c.snapshot(2, 8, 8);
        assert_eq!((s.records, s.payload_bytes, s.written_bytes), (4, 100, 180));
        assert_eq!((s.groups, s.syncs, s.sync_micros_total), (1, 1, 300));
        assert_eq!(s.group_records[2], 1);
        assert_eq!(s.sync_micros[8], 1);
        assert_eq!(s.mean_group_records(), 4.0);
    }
}
