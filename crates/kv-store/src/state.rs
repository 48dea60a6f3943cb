//! The in-memory state, and the application of durable log operations to
//! it.
//!
//! A log operation changes the state only through this module: [`Op`] is
//! what one decoded log record does (`From<OpRef>` turns a decoded record
//! into one), and [`State::apply`] applies one at its LSN. The commit thread
//! calls `apply` for each record of a batch once the batch is durable, with
//! the map entry its caller built in advance; replay applies the whole log
//! after a snapshot with [`State::apply_batch`] (or, for its common case,
//! [`State::apply_ascending_puts`]), which end in exactly the state that
//! `apply` on each record in turn gives (tested), only faster.
//!
//! Applying is kept apart from producing log records (the commit pipeline),
//! so that the records can later come from somewhere else, such as a
//! consensus log: decode each committed record with
//! [`record::decode_with`](crate::record::decode_with), then `apply` it.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use wal_core::Lsn;

use crate::record::OpRef;

/// One key, its value, its version and its deadline in a single heap
/// allocation:
/// `[header: u32 LE][seq: u64 LE][deadline: u64 LE, if flagged][key][value]`,
/// where the header's low 31 bits are the key's length and its top bit says
/// that a deadline follows.
///
/// Why not `BTreeMap<Vec<u8>, Vec<u8>>`: two `Vec`s cost 48 bytes of B-tree
/// slot plus two allocations per entry, close to 100% overhead on a 100-byte
/// value. A boxed slice is 16 bytes and one allocation, and the header and
/// version cost 12 bytes (20 with a deadline). In the tree it sits in a
/// [`Slot`] beside the [`Head`] of its key (32 bytes in all), so that a
/// search reads few entries; the tree is ordered by the key alone.
#[derive(Clone)]
pub(crate) struct Entry(Box<[u8]>);

const HEADER: usize = 4;
const SEQ: usize = 8;
const DEADLINE_FLAG: u32 = 1 << 31;
/// The longest key an entry can hold (the header's 31 bits).
pub(crate) const MAX_KEY_LEN: usize = (DEADLINE_FLAG - 1) as usize;

impl Entry {
    /// Builds an entry of version `seq`, expiring at `deadline` (ms since
    /// the Unix epoch) if given; the caller guarantees
    /// `key.len() <= MAX_KEY_LEN` (enforced by option validation).
    pub(crate) fn new(key: &[u8], value: &[u8], seq: Lsn, deadline: Option<u64>) -> Entry {
        let extra = if deadline.is_some() { 8 } else { 0 };
        let mut buf = Vec::with_capacity(HEADER + SEQ + extra + key.len() + value.len());
        let flag = if deadline.is_some() { DEADLINE_FLAG } else { 0 };
        buf.extend_from_slice(&(key.len() as u32 | flag).to_le_bytes());
        buf.extend_from_slice(&seq.to_le_bytes());
        if let Some(d) = deadline {
            buf.extend_from_slice(&d.to_le_bytes());
        }
        buf.extend_from_slice(key);
        buf.extend_from_slice(value);
        Entry(buf.into_boxed_slice())
    }

    fn header(&self) -> u32 {
        let mut h = [0u8; HEADER];
        h.copy_from_slice(&self.0[..HEADER]);
        u32::from_le_bytes(h)
    }

    fn key_len(&self) -> usize {
        (self.header() & !DEADLINE_FLAG) as usize
    }

    /// Where the key starts.
    fn key_start(&self) -> usize {
        if self.header() & DEADLINE_FLAG != 0 {
            HEADER + SEQ + 8
        } else {
            HEADER + SEQ
        }
    }

    /// The key.
    pub(crate) fn key(&self) -> &[u8] {
        let start = self.key_start();
        &self.0[start..start + self.key_len()]
    }

    /// The value.
    pub(crate) fn value(&self) -> &[u8] {
        &self.0[self.key_start() + self.key_len()..]
    }

    /// The version: the LSN (or Raft position) of the write that set it.
    pub(crate) fn seq(&self) -> Lsn {
        let mut b = [0u8; SEQ];
        b.copy_from_slice(&self.0[HEADER..HEADER + SEQ]);
        u64::from_le_bytes(b)
    }

    /// Sets the version (the commit thread learns the LSN after the entry
    /// was built).
    pub(crate) fn set_seq(&mut self, seq: Lsn) {
        self.0[HEADER..HEADER + SEQ].copy_from_slice(&seq.to_le_bytes());
    }

    /// The expiry deadline, ms since the Unix epoch.
    pub(crate) fn deadline(&self) -> Option<u64> {
        (self.header() & DEADLINE_FLAG != 0).then(|| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&self.0[HEADER + SEQ..HEADER + SEQ + 8]);
            u64::from_le_bytes(b)
        })
    }

    /// Whether it has expired at `now_ms`.
    pub(crate) fn expired_at(&self, now_ms: u64) -> bool {
        self.deadline().is_some_and(|d| d <= now_ms)
    }

    /// Key plus value bytes, as counted in [`Stats::bytes`](crate::Stats).
    pub(crate) fn payload_len(&self) -> u64 {
        (self.0.len() - self.key_start()) as u64
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("key_len", &self.key_len())
            .field("value_len", &self.value().len())
            .finish()
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(other.key())
    }
}
// Consistent with Ord/Eq above: both look at the key only.
impl Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

/// Bytes of a key kept in the tree beside its entry.
const HEAD_BYTES: usize = 16;

/// The start of a key, kept in the tree's own nodes: its first
/// [`HEAD_BYTES`] bytes, zero-padded, as two big-endian words, so that
/// comparing the words compares the bytes.
///
/// Why: a search compares the key sought with a dozen or more keys on its
/// way down, and with the key only in the entry's own allocation each
/// comparison is a load from a different place in memory, usually a cache
/// miss. Measured on this machine with 100,000 entries of 16-byte keys and
/// 100-byte values (random lookups, a timing loop over `State` that is not
/// kept in the tree): 1.2 to 1.4 µs per lookup with the key in the entry
/// alone, 0.6 to 0.8 µs with a head beside it (then 16 bytes and the key's
/// length); replacing an entry 1.5 to 1.7 µs against 0.8 to 0.9 µs. With
/// the head of 16 bytes alone, the same loop (1M random operations over
/// 11-byte keys, four interleaved runs) gave 0.5 to 0.8 µs per lookup and
/// 0.6 to 1.0 µs per replace: the search is bound by cache misses, and
/// the run-to-run spread on this machine is as wide as the difference a
/// cheaper compare would make. The cost is 16 bytes of tree slot per key. Two keys whose first 16 bytes differ are ordered
/// without reading either entry; only equal heads (the key found, or keys
/// that share their first 16 bytes) read the whole keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    words: [u64; 2],
}

impl Head {
    fn of(key: &[u8]) -> Head {
        let mut bytes = [0u8; HEAD_BYTES];
        let n = key.len().min(HEAD_BYTES);
        bytes[..n].copy_from_slice(&key[..n]);
        let (hi, lo) = bytes.split_at(8);
        let word = |b: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(b);
            u64::from_be_bytes(w)
        };
        Head {
            words: [word(hi), word(lo)],
        }
    }

    /// The order of the two keys when their heads decide it. Different
    /// padded heads order as the keys do: at the first byte where they
    /// differ, either both keys have a byte there, or the shorter one has
    /// ended (padding, 0) and the other's byte is greater. Equal heads say
    /// nothing ("ab" and "ab\0" have the same one): the whole keys tell.
    fn order(&self, other: &Head) -> Option<Ordering> {
        match self.words.cmp(&other.words) {
            Ordering::Equal => None,
            decided => Some(decided),
        }
    }
}

/// One element of the tree: an entry and the head of its key.
#[derive(Debug, Clone)]
struct Slot {
    head: Head,
    entry: Entry,
}

impl Slot {
    fn new(entry: Entry) -> Slot {
        Slot {
            head: Head::of(entry.key()),
            entry,
        }
    }
}

/// A key as the tree orders it: a slot, or a key sought ([`Probe`]). The
/// tree is searched with `&dyn TreeKey`, which a slot borrows as.
trait TreeKey {
    fn head(&self) -> &Head;
    fn key(&self) -> &[u8];
}

impl TreeKey for Slot {
    fn head(&self) -> &Head {
        &self.head
    }
    fn key(&self) -> &[u8] {
        self.entry.key()
    }
}

/// A key sought in the tree.
struct Probe<'a> {
    head: Head,
    key: &'a [u8],
}

impl<'a> Probe<'a> {
    fn new(key: &'a [u8]) -> Probe<'a> {
        Probe {
            head: Head::of(key),
            key,
        }
    }
}

impl TreeKey for Probe<'_> {
    fn head(&self) -> &Head {
        &self.head
    }
    fn key(&self) -> &[u8] {
        self.key
    }
}

/// The keys' byte order, from the heads where they decide it.
fn tree_order(a: &dyn TreeKey, b: &dyn TreeKey) -> Ordering {
    a.head()
        .order(b.head())
        .unwrap_or_else(|| a.key().cmp(b.key()))
}

impl PartialEq for dyn TreeKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        tree_order(self, other) == Ordering::Equal
    }
}
impl Eq for dyn TreeKey + '_ {}
impl PartialOrd for dyn TreeKey + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for dyn TreeKey + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        tree_order(self, other)
    }
}
// Consistent with the `dyn TreeKey` order: a slot orders as its key.
impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        tree_order(self, other) == Ordering::Equal
    }
}
impl Eq for Slot {}
impl PartialOrd for Slot {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Slot {
    fn cmp(&self, other: &Self) -> Ordering {
        tree_order(self, other)
    }
}
impl<'a> Borrow<dyn TreeKey + 'a> for Slot {
    fn borrow(&self) -> &(dyn TreeKey + 'a) {
        self
    }
}

/// `Bound<&[u8]>` as the tree searches it.
fn probe_bound(bound: Bound<&[u8]>) -> Bound<Probe<'_>> {
    bound.map(Probe::new)
}

/// A durable log operation: what one log record does to the state, decided
/// (a conditional or computed write is turned into these by
/// [`txn::decide`](crate::txn::decide) before it is applied).
#[derive(Debug)]
pub(crate) enum Op<'a> {
    /// Set the entry's key to its value (replacing any old value); the
    /// entry's seq is the record's LSN.
    Put(Entry),
    /// Remove the key, if present.
    Delete(&'a [u8]),
    /// Several changes at the one LSN of a batch record, in order.
    Batch(Vec<Change>),
}

impl<'a> Op<'a> {
    /// The operation of a decided log record at `lsn`. A put's key and value
    /// are copied into the one allocation the map keeps; a delete borrows
    /// its key. A transaction is taken as decided (a single node logs only
    /// decided ones): conditions or computed writes in it are refused as
    /// damage by [`txn::decided_changes`](crate::txn::decided_changes).
    pub(crate) fn of(op: OpRef<'a>, lsn: Lsn) -> crate::Result<Op<'a>> {
        Ok(match op {
            OpRef::Put {
                key,
                value,
                deadline,
            } => Op::Put(Entry::new(key, value, lsn, deadline)),
            OpRef::Delete { key } => Op::Delete(key),
            OpRef::Txn(txn, _) => Op::Batch(crate::txn::decided_changes(txn, lsn)?),
        })
    }
}

/// An [`Op`] that owns its key, as [`State::apply_batch`] takes a run of
/// them (replay keeps a whole log's operations before applying them). Each
/// entry carries its record's LSN as its seq.
#[derive(Debug)]
pub(crate) enum Change {
    /// [`Op::Put`].
    Put(Entry),
    /// [`Op::Delete`] of the entry's key (its value is empty and ignored).
    Delete(Entry),
}

impl Change {
    fn key(&self) -> &[u8] {
        match self {
            Change::Put(e) | Change::Delete(e) => e.key(),
        }
    }
}

/// What an exact snapshot copied in pieces needs of the changes made since
/// it began (`State::undo`).
#[derive(Debug)]
struct Undo {
    /// The last applied LSN when it began: the position the snapshot holds.
    at: Lsn,
    /// For every key changed since, what it held then (`None`: absent),
    /// recorded at its first change.
    held: BTreeMap<Box<[u8]>, Option<Entry>>,
}

/// The state: entries, their byte total, the LSN of the last applied write,
/// and an index of the keys that have a deadline.
#[derive(Debug, Default)]
pub(crate) struct State {
    entries: BTreeSet<Slot>,
    bytes: u64,
    last_applied: Lsn,
    /// `(deadline, key)` of every entry with a deadline: what the expiry
    /// sweeper walks, oldest deadline first.
    deadlines: BTreeSet<(u64, Box<[u8]>)>,
    /// The latest clock (ms since the Unix epoch) a decided record was
    /// judged against: conditional records are decided against the larger
    /// of this and their own timestamp, so decisions never see time go
    /// back, on any replica.
    clock_ms: u64,
    /// While an exact snapshot is copied in pieces ([`State::begin_undo`]):
    /// for every key changed since it began, what the key held then. The
    /// copy takes these instead of the keys' current entries, so it holds
    /// the state as of the start however many changes land between its
    /// pieces. Grows with the keys written during one copy, and is dropped
    /// when the copy ends.
    undo: Option<Undo>,
}

impl State {
    /// Builds a state from entries already in strictly ascending key order
    /// (as a snapshot stores them). The B-tree is then bulk-built, which is
    /// both faster than inserting one by one and leaves its nodes full.
    pub(crate) fn from_sorted(entries: Vec<Entry>) -> State {
        let bytes = entries.iter().map(Entry::payload_len).sum();
        State::from_sorted_with_bytes(entries, bytes)
    }

    /// [`State::from_sorted`] when the caller has already summed
    /// [`Entry::payload_len`] of the entries into `bytes` (saving a pass over
    /// a million heap allocations).
    pub(crate) fn from_sorted_with_bytes(entries: Vec<Entry>, bytes: u64) -> State {
        debug_assert_eq!(bytes, entries.iter().map(Entry::payload_len).sum::<u64>());
        let deadlines = entries
            .iter()
            .filter_map(|e| e.deadline().map(|d| (d, Box::from(e.key()))))
            .collect();
        State {
            entries: entries.into_iter().map(Slot::new).collect(),
            bytes,
            last_applied: 0,
            deadlines,
            clock_ms: 0,
            undo: None,
        }
    }

    /// Applies the durable log operation at `lsn`, the next LSN after
    /// [`State::last_applied`]: a put sets the key, a delete removes it (if
    /// present), a batch does its changes in order, and `lsn` becomes the
    /// last applied LSN.
    pub(crate) fn apply(&mut self, op: Op<'_>, lsn: Lsn) {
        debug_assert!(
            lsn > self.last_applied,
            "LSN {lsn} applied after {}",
            self.last_applied
        );
        match op {
            Op::Put(entry) => {
                self.put(entry);
            }
            Op::Delete(key) => self.delete(key),
            Op::Batch(changes) => {
                for change in changes {
                    match change {
                        Change::Put(entry) => {
                            self.put(entry);
                        }
                        Change::Delete(entry) => self.delete(entry.key()),
                    }
                }
            }
        }
        self.last_applied = lsn;
    }

    /// [`State::apply`] of one put, returning the entry it replaced: one
    /// walk of the tree where a lookup before the put would be two.
    pub(crate) fn apply_put(&mut self, entry: Entry, lsn: Lsn) -> Option<Entry> {
        debug_assert!(
            lsn > self.last_applied,
            "LSN {lsn} applied after {}",
            self.last_applied
        );
        let old = self.put(entry);
        self.last_applied = lsn;
        old
    }

    fn put(&mut self, entry: Entry) -> Option<Entry> {
        self.bytes += entry.payload_len();
        let indexed = entry
            .deadline()
            .map(|d| (d, Box::<[u8]>::from(entry.key())));
        // The key's first change since an exact snapshot began: what it
        // held is kept for the snapshot (see `undo`).
        let first_change = self
            .undo
            .as_ref()
            .filter(|undo| !undo.held.contains_key(entry.key()))
            .map(|_| Box::<[u8]>::from(entry.key()));
        let old = self
            .entries
            .replace(Slot::new(entry))
            .map(|slot| slot.entry);
        if let (Some(key), Some(undo)) = (first_change, &mut self.undo) {
            undo.held.insert(key, old.clone());
        }
        if let Some(old) = &old {
            self.unindex(old);
            self.bytes -= old.payload_len();
        }
        if let Some(indexed) = indexed {
            self.deadlines.insert(indexed);
        }
        old
    }

    fn delete(&mut self, key: &[u8]) {
        if let Some(Slot { entry: old, .. }) = self.entries.take(&Probe::new(key) as &dyn TreeKey) {
            if let Some(undo) = &mut self.undo
                && !undo.held.contains_key(key)
            {
                undo.held.insert(Box::from(key), Some(old.clone()));
            }
            self.unindex(&old);
            self.bytes -= old.payload_len();
        }
    }

    fn unindex(&mut self, old: &Entry) {
        if let Some(d) = old.deadline() {
            self.deadlines.remove(&(d, Box::from(old.key())));
        }
    }

    /// Keys with a deadline.
    pub(crate) fn expiring(&self) -> u64 {
        self.deadlines.len() as u64
    }

    /// Up to `max` keys whose deadline is at or before `now_ms`, oldest
    /// deadline first, with the version each has.
    pub(crate) fn expired(&self, now_ms: u64, max: usize) -> Vec<(Box<[u8]>, Lsn)> {
        self.deadlines
            .iter()
            .take_while(|(d, _)| *d <= now_ms)
            .take(max)
            .filter_map(|(_, key)| self.get(key).map(|e| (key.clone(), e.seq())))
            .collect()
    }

    /// The clock to decide a record stamped `stamp_ms` against: never
    /// earlier than one already used. Moves the state's clock forward.
    pub(crate) fn advance_clock(&mut self, stamp_ms: u64) -> u64 {
        self.clock_ms = self.clock_ms.max(stamp_ms);
        self.clock_ms
    }

    /// The clock as [`State::advance_clock`] would give it, without moving
    /// it.
    pub(crate) fn clock_for(&self, stamp_ms: u64) -> u64 {
        self.clock_ms.max(stamp_ms)
    }

    /// Applies `changes`, the operations of the log records after
    /// [`State::last_applied`] up to and including `last`, in log order (a
    /// batch record contributes several, each entry carrying its record's
    /// LSN as its seq): the same state as [`State::apply`] on each record
    /// in turn.
    ///
    /// Replay uses this because inserting a million entries one by one into
    /// the B-tree costs a search each. When the batch is small next to the
    /// state, it is applied one by one; otherwise it is sorted by key (a
    /// stable sort, so equal keys stay in log order and the last one is the
    /// one kept), merged with the current entries, and the tree is
    /// bulk-built from the merged run. Keys written in ascending order, the
    /// common case, make the sort linear.
    pub(crate) fn apply_batch(&mut self, last: Lsn, mut changes: Vec<Change>) {
        debug_assert!(last >= self.last_applied);
        // While a snapshot records what keys held (`undo`), the changes go
        // one by one, through `put` and `delete`, which record it.
        if changes.len() < self.entries.len() / 8 || self.undo.is_some() {
            for change in changes {
                match change {
                    Change::Put(entry) => {
                        self.put(entry);
                    }
                    Change::Delete(entry) => self.delete(entry.key()),
                }
            }
            self.last_applied = last;
            return;
        }
        if changes.is_empty() {
            self.last_applied = last;
            return;
        }
        changes.sort_by(|a, b| a.key().cmp(b.key()));
        let old = std::mem::take(&mut self.entries)
            .into_iter()
            .map(|slot| slot.entry);
        let mut merged = Vec::with_capacity(old.len() + changes.len());
        let mut old = old.peekable();
        let mut changes = changes.into_iter().peekable();
        while let Some(change) = changes.next() {
            // Only the last change of a run of equal keys counts.
            if changes
                .peek()
                .is_some_and(|next| next.key() == change.key())
            {
                continue;
            }
            // Old entries before this key stay as they are.
            while let Some(entry) = old.next_if(|e| e.key() < change.key()) {
                merged.push(entry);
            }
            // An old entry with this key is replaced or deleted.
            old.next_if(|e| e.key() == change.key());
            if let Change::Put(entry) = change {
                merged.push(entry);
            }
        }
        merged.extend(old);
        *self = State {
            last_applied: last,
            clock_ms: self.clock_ms,
            ..State::from_sorted(merged)
        };
    }

    /// [`State::apply_batch`] for puts of strictly ascending keys onto an
    /// empty state, replay's common case: the entries are then the new
    /// state as they are, and the tree is bulk-built from them without a
    /// sort or a merge. `bytes` is the sum of their
    /// [`Entry::payload_len`], which replay has already counted.
    pub(crate) fn apply_ascending_puts(&mut self, last: Lsn, entries: Vec<Entry>, bytes: u64) {
        if self.len() != 0 || self.undo.is_some() {
            // Not the case this is for: the generic way gives the same state
            // (and records what a running snapshot needs).
            self.apply_batch(last, entries.into_iter().map(Change::Put).collect());
            return;
        }
        debug_assert!(entries.windows(2).all(|w| w[0].key() < w[1].key()));
        if entries.is_empty() {
            self.last_applied = self.last_applied.max(last);
            return;
        }
        debug_assert!(last > self.last_applied);
        *self = State {
            last_applied: last,
            clock_ms: self.clock_ms,
            ..State::from_sorted_with_bytes(entries, bytes)
        };
    }

    /// Records that every write up to `lsn` is in the state: for a state
    /// loaded from a snapshot of LSN `lsn`. LSNs only grow.
    pub(crate) fn set_applied(&mut self, lsn: Lsn) {
        debug_assert!(lsn >= self.last_applied);
        self.last_applied = lsn;
    }

    /// The LSN of the last applied write (0 if none).
    pub(crate) fn last_applied(&self) -> Lsn {
        self.last_applied
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.entries
            .get(&Probe::new(key) as &dyn TreeKey)
            .map(|slot| &slot.entry)
    }

    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.entries.contains(&Probe::new(key) as &dyn TreeKey)
    }

    pub(crate) fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Entries with keys within the bounds, ascending (reversible). The
    /// caller makes sure the bounds are not inverted.
    /// Starts recording what each key holds before its first change (see
    /// `undo`), for an exact snapshot of the state as of now copied in
    /// pieces with [`State::copy_as_of_undo`]; returns the last applied
    /// LSN, the position that snapshot holds. Restarts a recording already
    /// running.
    pub(crate) fn begin_undo(&mut self) -> Lsn {
        self.undo = Some(Undo {
            at: self.last_applied,
            held: BTreeMap::new(),
        });
        self.last_applied
    }

    /// Stops recording (the snapshot is written, or abandoned).
    pub(crate) fn end_undo(&mut self) {
        self.undo = None;
    }

    /// If it is recording: the LSN [`State::begin_undo`] returned, and the
    /// keys recorded since.
    pub(crate) fn undo_status(&self) -> Option<(Lsn, usize)> {
        self.undo.as_ref().map(|u| (u.at, u.held.len()))
    }

    /// One piece of an exact snapshot: hands `emit`, in key order, the
    /// entries after `after` as they were when [`State::begin_undo`] was
    /// called, covering the keys up to the `max`-th current entry after
    /// `after`. A key changed since then gives what it held (nothing if it
    /// was absent), including one deleted since. Returns the last key of
    /// the piece, from which the next one goes on, or `None` once the
    /// piece reached the end. Fails with [`Error::Unavailable`] if nothing
    /// is recording (the recording was ended, or the state replaced).
    pub(crate) fn copy_as_of_undo(
        &self,
        after: Option<&[u8]>,
        max: usize,
        mut emit: impl FnMut(&Entry) -> crate::Result<()>,
    ) -> crate::Result<Option<Box<[u8]>>> {
        let Some(undo) = &self.undo else {
            return Err(crate::Error::Unavailable(
                "the snapshot's recording of changes ended before its copy did".to_string(),
            ));
        };
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let current: Vec<&Entry> = self
            .range(lower, Bound::Unbounded)
            .take(max.max(1))
            .collect();
        let end = (current.len() == max.max(1))
            .then(|| current.last().map(|e| e.key()))
            .flatten();
        let upper = end.map_or(Bound::Unbounded, Bound::Included);
        let mut before = undo.held.range::<[u8], _>((lower, upper)).peekable();
        let mut now = current.into_iter().peekable();
        loop {
            let from_undo = match (now.peek(), before.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(e), Some((key, _))) => key.as_ref() <= e.key(),
            };
            if from_undo {
                let Some((key, held)) = before.next() else {
                    break;
                };
                if now.peek().is_some_and(|e| e.key() == key.as_ref()) {
                    now.next();
                }
                if let Some(held) = held {
                    emit(held)?;
                }
            } else if let Some(e) = now.next() {
                emit(e)?;
            }
        }
        Ok(end.map(Box::from))
    }

    pub(crate) fn range<'a>(
        &'a self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> impl DoubleEndedIterator<Item = &'a Entry> + 'a {
        let (lower, upper) = (probe_bound(lower), probe_bound(upper));
        let bounds: (Bound<&dyn TreeKey>, Bound<&dyn TreeKey>) = (
            lower.as_ref().map(|p| p as &dyn TreeKey),
            upper.as_ref().map(|p| p as &dyn TreeKey),
        );
        self.entries
            .range::<dyn TreeKey, _>(bounds)
            .map(|slot| &slot.entry)
    }

    /// Entries with keys >= `from` (or > `from` when `exclusive`), ascending.
    pub(crate) fn range_from<'a>(
        &'a self,
        from: &'a [u8],
        exclusive: bool,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        let lower = if exclusive {
            Bound::Excluded(from)
        } else {
            Bound::Included(from)
        };
        self.range(lower, Bound::Unbounded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_layout_and_ordering() {
        let e = Entry::new(b"abc", b"value", 7, None);
        assert_eq!(e.key(), b"abc");
        assert_eq!(e.value(), b"value");
        assert_eq!((e.seq(), e.deadline()), (7, None));
        let expiring = Entry::new(b"abc", b"value", 8, Some(1_000));
        assert_eq!(expiring.key(), b"abc");
        assert_eq!(expiring.value(), b"value");
        assert_eq!((expiring.seq(), expiring.deadline()), (8, Some(1_000)));
        assert!(!expiring.expired_at(999));
        assert!(expiring.expired_at(1_000));
        assert!(!e.expired_at(u64::MAX));
        let empty_value = Entry::new(b"k", b"", 1, None);
        assert_eq!(empty_value.value(), b"");
        assert!(Entry::new(b"a", b"zzz", 1, None) < Entry::new(b"ab", b"", 1, None));
    }

    #[test]
    fn the_tree_orders_keys_as_their_bytes() {
        // Keys around the head's length, with zero bytes (which the head
        // pads with), 0xff and shared prefixes.
        let alphabet = [0u8, 1, b'a', 0xff];
        let mut keys: Vec<Vec<u8>> = vec![Vec::new()];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..3000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            let mut key = vec![0u8; HEAD_BYTES.min(len)];
            for i in key.len()..len {
                key.push(alphabet[((seed >> (i % 60)) % 4) as usize]);
            }
            if seed.is_multiple_of(3) {
                // A random prefix instead of zeros.
                for (i, b) in key.iter_mut().enumerate().take(HEAD_BYTES) {
                    *b = alphabet[((seed >> (i * 2)) % 4) as usize];
                }
            }
            keys.push(key);
        }
        for k in [
            &b"a"[..],
            b"a\0",
            b"a\0\0",
            &[0u8; 16],
            &[0u8; 17],
            &[0u8; 15],
        ] {
            keys.push(k.to_vec());
        }
        let mut state = State::default();
        for (i, key) in keys.iter().enumerate() {
            state.apply(
                Op::Put(Entry::new(key, b"v", i as u64 + 1, None)),
                i as u64 + 1,
            );
        }
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        let walked: Vec<&[u8]> = state.range_from(b"", false).map(Entry::key).collect();
        assert_eq!(walked, sorted.iter().map(Vec::as_slice).collect::<Vec<_>>());
        for key in &sorted {
            assert_eq!(state.get(key).map(Entry::key), Some(&key[..]));
            // Exclusive range from a key starts at the next one.
            let next = state.range_from(key, true).next().map(Entry::key);
            let want = sorted.iter().find(|k| k.as_slice() > key.as_slice());
            assert_eq!(next, want.map(Vec::as_slice));
        }
        assert!(state.get(b"not a key").is_none());
        assert!(!state.contains(&[0u8; 18]) || sorted.contains(&vec![0u8; 18]));
    }

    #[test]
    fn apply_tracks_bytes_lsn_and_replaces() {
        let mut s = State::default();
        s.apply(Op::Put(Entry::new(b"a", b"12345", 1, None)), 1);
        s.apply(Op::Put(Entry::new(b"b", b"1", 2, Some(50))), 2);
        assert_eq!((s.len(), s.bytes(), s.last_applied()), (2, 8, 2));
        assert_eq!(s.expiring(), 1);
        s.apply(Op::Put(Entry::new(b"a", b"1", 3, None)), 3);
        assert_eq!((s.len(), s.bytes()), (2, 4));
        assert_eq!(s.get(b"a").map(|e| e.value()), Some(&b"1"[..]));
        s.apply(Op::Delete(b"a"), 4);
        assert!(!s.contains(b"a"));
        // A delete of a missing key changes nothing but the LSN.
        s.apply(Op::of(OpRef::Delete { key: b"a" }, 5).unwrap(), 5);
        assert_eq!((s.len(), s.bytes(), s.last_applied()), (1, 2, 5));
        let keys: Vec<&[u8]> = s.range_from(b"", false).map(|e| e.key()).collect();
        assert_eq!(keys, vec![&b"b"[..]]);
        assert_eq!(s.range_from(b"b", true).count(), 0);
        s.apply(
            Op::of(
                OpRef::Put {
                    key: b"c",
                    value: b"xy",
                    deadline: None,
                },
                6,
            )
            .unwrap(),
            6,
        );
        assert_eq!(
            s.get(b"c").map(|e| (e.value(), e.seq())),
            Some((&b"xy"[..], 6))
        );
        // Deleting the expiring key drops it from the deadline index.
        s.apply(Op::Delete(b"b"), 7);
        assert_eq!(s.expiring(), 0);
    }

    /// Key, value, seq, deadline.
    type Row = (Vec<u8>, Vec<u8>, Lsn, Option<u64>);

    fn dump(s: &State) -> Vec<Row> {
        s.range_from(b"", false)
            .map(|e| (e.key().to_vec(), e.value().to_vec(), e.seq(), e.deadline()))
            .collect()
    }

    /// A state of `n` keys `k00`, `k01`, ... at LSNs 1..=n.
    fn initial(n: u64) -> State {
        let mut s = State::default();
        for i in 0..n {
            let key = format!("k{i:02}");
            s.apply(
                Op::Put(Entry::new(key.as_bytes(), b"old", i + 1, None)),
                i + 1,
            );
        }
        s
    }

    /// `apply_batch` ends in the same state as `apply` on one change at a
    /// time, on both of its paths (merge, and one by one for a batch small
    /// next to the state), with repeated keys and deletes of missing keys.
    #[test]
    fn apply_batch_matches_apply_one_at_a_time() {
        // A small deterministic generator: keys from a range of 40 so that
        // they repeat, values of varying length, about a third deletes.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (initial_keys, batch) in [(0, 200), (30, 200), (40, 3), (0, 0), (40, 0)] {
            let mut one_by_one = initial(initial_keys);
            let mut batched = initial(initial_keys);
            let mut changes = Vec::new();
            for lsn in initial_keys + 1..=initial_keys + batch {
                let r = next();
                let key = format!("k{:02}", r % 40);
                let value = vec![b'v'; (r >> 8) as usize % 9];
                if (r >> 16) % 3 == 0 {
                    one_by_one.apply(Op::Delete(key.as_bytes()), lsn);
                    changes.push(Change::Delete(Entry::new(key.as_bytes(), b"", lsn, None)));
                } else {
                    let deadline = (r % 5 == 0).then_some(r >> 40);
                    let entry = Entry::new(key.as_bytes(), &value, lsn, deadline);
                    one_by_one.apply(Op::Put(entry.clone()), lsn);
                    changes.push(Change::Put(entry));
                }
            }
            batched.apply_batch(initial_keys + batch, changes);
            assert_eq!(batched.expiring(), one_by_one.expiring());
            assert_eq!(dump(&batched), dump(&one_by_one));
            assert_eq!(batched.len(), one_by_one.len());
            assert_eq!(batched.bytes(), one_by_one.bytes());
            assert_eq!(batched.last_applied(), initial_keys + batch);
            assert_eq!(batched.last_applied(), one_by_one.last_applied());
        }
    }

    /// `apply_ascending_puts` ends in the same state as `apply` on each put,
    /// onto an empty state and (by its fallback) onto a non-empty one.
    #[test]
    fn apply_ascending_puts_matches_apply_one_at_a_time() {
        for initial_keys in [0, 5] {
            let mut one_by_one = initial(initial_keys);
            let mut bulk = initial(initial_keys);
            let mut entries = Vec::new();
            let mut bytes = 0;
            for (lsn, i) in (initial_keys + 1..).zip(0..20u32) {
                // k00.., interleaved with and replacing the initial keys.
                let key = format!("k{:02}{}", i / 2, if i % 2 == 0 { "" } else { "x" });
                let value = vec![b'v'; i as usize % 5];
                let entry = Entry::new(key.as_bytes(), &value, lsn, None);
                one_by_one.apply(Op::Put(entry.clone()), lsn);
                bytes += entry.payload_len();
                entries.push(entry);
            }
            bulk.apply_ascending_puts(initial_keys + 20, entries, bytes);
            assert_eq!(dump(&bulk), dump(&one_by_one));
            assert_eq!(bulk.bytes(), one_by_one.bytes());
            assert_eq!(bulk.last_applied(), initial_keys + 20);
        }
    }
}
