//! The in-memory state: an ordered set of key/value entries, and the one
//! function that applies a durable log operation to it.
//!
//! Applying (here) is kept apart from producing log records (the commit
//! pipeline), so that the records can later come from somewhere else, such
//! as a consensus log, and be applied the same way.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::ops::Bound;

use wal_core::Lsn;

/// One key and its value in a single heap allocation:
/// `[key length: u32 LE][key][value]`.
///
/// Why not `BTreeMap<Vec<u8>, Vec<u8>>`: two `Vec`s cost 48 bytes of B-tree
/// slot plus two allocations per entry, close to 100% overhead on a 100-byte
/// value. A boxed slice is a 16-byte slot and one allocation, and the length
/// prefix costs 4 bytes. The set is ordered by the key part alone, and
/// `Borrow<[u8]>` lets it be searched with a plain key slice.
#[derive(Clone)]
pub(crate) struct Entry(Box<[u8]>);

const LEN: usize = 4;

impl Entry {
    /// Builds an entry; the caller guarantees `key.len() <= u32::MAX`
    /// (enforced by option validation).
    pub(crate) fn new(key: &[u8], value: &[u8]) -> Entry {
        let mut buf = Vec::with_capacity(LEN + key.len() + value.len());
        buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
        buf.extend_from_slice(key);
        buf.extend_from_slice(value);
        Entry(buf.into_boxed_slice())
    }

    fn key_len(&self) -> usize {
        let mut len = [0u8; LEN];
        len.copy_from_slice(&self.0[..LEN]);
        u32::from_le_bytes(len) as usize
    }

    /// The key.
    pub(crate) fn key(&self) -> &[u8] {
        &self.0[LEN..LEN + self.key_len()]
    }

    /// The value.
    pub(crate) fn value(&self) -> &[u8] {
        &self.0[LEN + self.key_len()..]
    }

    /// Key plus value bytes, as counted in [`Stats::bytes`](crate::Stats).
    pub(crate) fn payload_len(&self) -> u64 {
        (self.0.len() - LEN) as u64
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

/// One change to the state, as [`State::apply_batch`] takes them.
#[derive(Debug)]
pub(crate) enum Change {
    /// Set the entry's key to its value.
    Put(Entry),
    /// Remove the key of the entry (whose value is empty and ignored).
    Delete(Entry),
}

impl Change {
    fn key(&self) -> &[u8] {
        match self {
            Change::Put(e) | Change::Delete(e) => e.key(),
        }
    }
}

/// The state: entries, their byte total, and the LSN of the last applied
/// write.
#[derive(Debug, Default)]
pub(crate) struct State {
    entries: BTreeSet<Entry>,
    bytes: u64,
    last_applied: Lsn,
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
        State {
            entries: entries.into_iter().collect(),
            bytes,
            last_applied: 0,
        }
    }

    /// Sets a key (replacing any old value).
    pub(crate) fn put(&mut self, entry: Entry) {
        self.bytes += entry.payload_len();
        if let Some(old) = self.entries.replace(entry) {
            self.bytes -= old.payload_len();
        }
    }

    /// Removes a key; returns whether it existed.
    pub(crate) fn delete(&mut self, key: &[u8]) -> bool {
        match self.entries.take(key) {
            Some(old) => {
                self.bytes -= old.payload_len();
                true
            }
            None => false,
        }
    }

    /// Applies `changes`, given in log order, as if by [`State::put`] and
    /// [`State::delete`] one after the other: for each key the last change
    /// wins.
    ///
    /// Replay uses this because inserting a million entries one by one into
    /// the B-tree costs a search each. When the batch is not small next to
    /// the state, it is instead sorted by key (a stable sort, so equal keys
    /// stay in log order and the last one is the one kept), merged with the
    /// current entries, and the tree is bulk-built from the merged run. Keys
    /// written in ascending order, the common case, make the sort linear.
    pub(crate) fn apply_batch(&mut self, mut changes: Vec<Change>) {
        if changes.len() < self.entries.len() / 8 {
            for change in changes {
                match change {
                    Change::Put(entry) => self.put(entry),
                    Change::Delete(key) => {
                        self.delete(key.key());
                    }
                }
            }
            return;
        }
        changes.sort_by(|a, b| a.key().cmp(b.key()));
        let old = std::mem::take(&mut self.entries).into_iter();
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
            last_applied: self.last_applied,
            ..State::from_sorted(merged)
        };
    }

    /// Records that every write up to `lsn` has been applied. LSNs only grow.
    pub(crate) fn set_applied(&mut self, lsn: Lsn) {
        debug_assert!(lsn >= self.last_applied);
        self.last_applied = lsn;
    }

    /// The LSN of the last applied write (0 if none).
    pub(crate) fn last_applied(&self) -> Lsn {
        self.last_applied
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.entries.get(key)
    }

    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.entries.contains(key)
    }

    pub(crate) fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
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
        self.entries
            .range::<[u8], (Bound<&[u8]>, Bound<&[u8]>)>((lower, Bound::Unbounded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_layout_and_ordering() {
        let e = Entry::new(b"abc", b"value");
        assert_eq!(e.key(), b"abc");
        assert_eq!(e.value(), b"value");
        let empty_value = Entry::new(b"k", b"");
        assert_eq!(empty_value.value(), b"");
        assert!(Entry::new(b"a", b"zzz") < Entry::new(b"ab", b""));
    }

    #[test]
    fn put_delete_track_bytes_and_replace() {
        let mut s = State::default();
        s.put(Entry::new(b"a", b"12345"));
        s.put(Entry::new(b"b", b"1"));
        assert_eq!((s.len(), s.bytes()), (2, 8));
        s.put(Entry::new(b"a", b"1"));
        assert_eq!((s.len(), s.bytes()), (2, 4));
        assert_eq!(s.get(b"a").map(|e| e.value()), Some(&b"1"[..]));
        assert!(s.delete(b"a"));
        assert!(!s.delete(b"a"));
        assert_eq!((s.len(), s.bytes()), (1, 2));
        let keys: Vec<&[u8]> = s.range_from(b"", false).map(|e| e.key()).collect();
        assert_eq!(keys, vec![&b"b"[..]]);
        assert_eq!(s.range_from(b"b", true).count(), 0);
    }

    /// `apply_batch` ends in the same state as applying one change at a
    /// time, on both of its paths (merge, and one by one for a batch small
    /// next to the state), with repeated keys and deletes of missing keys.
    #[test]
    fn apply_batch_matches_one_at_a_time() {
        // A small deterministic generator: keys from a range of 40 so that
        // they repeat, values of varying length, about a third deletes.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (initial, batch) in [(0, 200), (30, 200), (40, 3), (0, 0), (40, 0)] {
            let mut one_by_one = State::default();
            let mut batched = State::default();
            for i in 0..initial {
                let key = format!("k{:02}", i);
                one_by_one.put(Entry::new(key.as_bytes(), b"old"));
                batched.put(Entry::new(key.as_bytes(), b"old"));
            }
            batched.set_applied(7);
            let mut changes = Vec::new();
            for _ in 0..batch {
                let r = next();
                let key = format!("k{:02}", r % 40);
                let value = vec![b'v'; (r >> 8) as usize % 9];
                if (r >> 16) % 3 == 0 {
                    one_by_one.delete(key.as_bytes());
                    changes.push(Change::Delete(Entry::new(key.as_bytes(), b"")));
                } else {
                    one_by_one.put(Entry::new(key.as_bytes(), &value));
                    changes.push(Change::Put(Entry::new(key.as_bytes(), &value)));
                }
            }
            batched.apply_batch(changes);
            let dump = |s: &State| -> Vec<(Vec<u8>, Vec<u8>)> {
                s.range_from(b"", false)
                    .map(|e| (e.key().to_vec(), e.value().to_vec()))
                    .collect()
            };
            assert_eq!(dump(&batched), dump(&one_by_one));
            assert_eq!(batched.len(), one_by_one.len());
            assert_eq!(batched.bytes(), one_by_one.bytes());
            assert_eq!(batched.last_applied(), 7);
        }
    }
}
