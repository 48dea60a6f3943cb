//! Reads beyond one key: versions and deadlines, ranges, pages.
//!
//! The same functions serve a single node's store and a cluster member's
//! [`Replica`](crate::replica::Replica), so both answer alike. Every read
//! leaves out keys whose deadline has passed (by the wall clock), even
//! before the sweeper removes them.

use std::ops::Bound;

use wal_core::Lsn;

use crate::state::{Entry, State};

/// A key's value with its version and deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Vec<u8>,
    /// The LSN (in a cluster, the store position) of the write that set it.
    pub seq: Lsn,
    /// When it expires, ms since the Unix epoch.
    pub expires_at_ms: Option<u64>,
}

impl Versioned {
    fn of(entry: &Entry) -> Versioned {
        Versioned {
            value: entry.value().to_vec(),
            seq: entry.seq(),
            expires_at_ms: entry.deadline(),
        }
    }
}

/// Which keys a scan reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRange {
    /// The lower bound.
    pub start: Bound<Vec<u8>>,
    /// The upper bound.
    pub end: Bound<Vec<u8>>,
    /// Descending order.
    pub reverse: bool,
}

impl ScanRange {
    /// Every key, ascending.
    pub fn all() -> ScanRange {
        ScanRange {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
            reverse: false,
        }
    }

    /// Keys starting with `prefix`, ascending.
    pub fn prefix(prefix: &[u8]) -> ScanRange {
        // The first key after every key with the prefix: the prefix with
        // its last byte below 0xff incremented and what follows dropped;
        // none if it is all 0xff (or empty).
        let end = match prefix.iter().rposition(|&b| b != 0xff) {
            Some(i) => {
                let mut end = prefix[..=i].to_vec();
                end[i] += 1;
                Bound::Excluded(end)
            }
            None => Bound::Unbounded,
        };
        ScanRange {
            start: if prefix.is_empty() {
                Bound::Unbounded
            } else {
                Bound::Included(prefix.to_vec())
            },
            end,
            reverse: false,
        }
    }

    /// Keys from `start` (inclusive; empty: the first) to `end` (exclusive;
    /// empty: past the last), ascending.
    pub fn between(start: &[u8], end: &[u8]) -> ScanRange {
        ScanRange {
            start: if start.is_empty() {
                Bound::Unbounded
            } else {
                Bound::Included(start.to_vec())
            },
            end: if end.is_empty() {
                Bound::Unbounded
            } else {
                Bound::Excluded(end.to_vec())
            },
            reverse: false,
        }
    }

    /// The same range, descending.
    pub fn reversed(self) -> ScanRange {
        ScanRange {
            reverse: true,
            ..self
        }
    }
}

/// One key of a scan page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanItem {
    /// The key.
    pub key: Vec<u8>,
    /// Its value, when the scan asked for values.
    pub value: Option<Vec<u8>>,
    /// Its version.
    pub seq: Lsn,
}

/// One page of a scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// The keys, in the scan's order.
    pub items: Vec<ScanItem>,
    /// Keys of the range may remain: scan again after `resume_after`.
    pub more: bool,
    /// With `more`: the key to resume after (the last one looked at, which
    /// is past the last item when expired keys were skipped).
    pub resume_after: Vec<u8>,
}

/// The most entries one page looks at (listed or skipped as expired), so
/// that a page holds the map's read lock for a bounded time however many
/// expired keys a range holds.
pub(crate) const MAX_LOOKED_AT: usize = 16 * 1024;

/// Bytes a scan item costs in a page beyond its key and value: its
/// protobuf framing in a response (tags, lengths, the seq).
pub const SCAN_ITEM_OVERHEAD: usize = 24;

/// A page of `range` after `after` (in the scan's direction), at most
/// `limit` items (0: no limit) and `max_bytes` of keys, values and
/// [`SCAN_ITEM_OVERHEAD`] (but always the first item, so that paging moves
/// on: a caller's budget is at least its largest key and value), leaving
/// out keys expired at `now_ms`.
pub(crate) fn scan(
    state: &State,
    range: &ScanRange,
    after: Option<&[u8]>,
    limit: usize,
    max_bytes: usize,
    values: bool,
    now_ms: u64,
) -> ScanPage {
    let limit = if limit == 0 { usize::MAX } else { limit };
    let mut lower = range.start.as_ref().map(Vec::as_slice);
    let mut upper = range.end.as_ref().map(Vec::as_slice);
    if let Some(after) = after {
        let side = if range.reverse {
            &mut upper
        } else {
            &mut lower
        };
        // Resume strictly past `after`, unless the range's own bound is
        // already past it.
        let tighter = match (range.reverse, *side) {
            (_, Bound::Unbounded) => true,
            (false, Bound::Included(b) | Bound::Excluded(b)) => after >= b,
            (true, Bound::Included(b) | Bound::Excluded(b)) => after <= b,
        };
        if tighter {
            *side = Bound::Excluded(after);
        }
    }
    let mut page = ScanPage::default();
    // An empty or inverted range: BTreeSet::range would panic on it.
    let empty = match (lower, upper) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b)) => a >= b,
        _ => false,
    };
    if empty {
        return page;
    }
    let entries = state.range(lower, upper);
    let entries: Box<dyn Iterator<Item = &Entry>> = if range.reverse {
        Box::new(entries.rev())
    } else {
        Box::new(entries)
    };
    let mut bytes = 0usize;
    let mut last: Option<&[u8]> = None;
    for (looked, entry) in entries.enumerate() {
        let cost =
            entry.key().len() + if values { entry.value().len() } else { 0 } + SCAN_ITEM_OVERHEAD;
        let full = page.items.len() == limit
            || looked == MAX_LOOKED_AT
            || (!page.items.is_empty() && bytes.saturating_add(cost) > max_bytes);
        if full {
            page.more = true;
            break;
        }
        last = Some(entry.key());
        if entry.expired_at(now_ms) {
            continue;
        }
        bytes += cost;
        page.items.push(ScanItem {
            key: entry.key().to_vec(),
            value: values.then(|| entry.value().to_vec()),
            seq: entry.seq(),
        });
    }
    if page.more {
        page.resume_after = last.map(<[u8]>::to_vec).unwrap_or_default();
    }
    page
}

/// The key's value, version and deadline, if it is there and live at
/// `now_ms`.
pub(crate) fn get(state: &State, key: &[u8], now_ms: u64) -> Option<Versioned> {
    state
        .get(key)
        .filter(|e| !e.expired_at(now_ms))
        .map(Versioned::of)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Op;

    fn state(keys: &[(&str, Option<u64>)]) -> State {
        let mut s = State::default();
        for (i, (k, d)) in keys.iter().enumerate() {
            let lsn = i as u64 + 1;
            s.apply(Op::Put(Entry::new(k.as_bytes(), b"v", lsn, *d)), lsn);
        }
        s
    }

    fn keys(page: &ScanPage) -> Vec<String> {
        page.items
            .iter()
            .map(|i| String::from_utf8(i.key.clone()).unwrap())
            .collect()
    }

    /// Pages through `range` `limit` at a time; the keys in order.
    fn all(s: &State, range: &ScanRange, limit: usize, max_bytes: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        for _ in 0..1000 {
            let page = scan(s, range, after.as_deref(), limit, max_bytes, false, 100);
            out.extend(keys(&page));
            if !page.more {
                return out;
            }
            after = Some(page.resume_after);
        }
        panic!("scan did not end");
    }

    #[test]
    fn ranges_prefixes_and_directions_page_through_everything() {
        let s = state(&[
            ("a", None),
            ("ab", None),
            ("abc", Some(50)),
            ("abd", None),
            ("b", None),
            ("b\u{7f}", None),
            ("c", None),
        ]);
        for limit in [0, 1, 2, 3] {
            assert_eq!(
                all(&s, &ScanRange::prefix(b"ab"), limit, usize::MAX),
                ["ab", "abd"]
            );
            assert_eq!(
                all(&s, &ScanRange::prefix(b"ab").reversed(), limit, usize::MAX),
                ["abd", "ab"]
            );
            assert_eq!(
                all(&s, &ScanRange::between(b"ab", b"b\x7f"), limit, usize::MAX),
                ["ab", "abd", "b"]
            );
            assert_eq!(
                all(&s, &ScanRange::between(b"", b""), limit, usize::MAX),
                ["a", "ab", "abd", "b", "b\u{7f}", "c"]
            );
            assert_eq!(
                all(
                    &s,
                    &ScanRange::between(b"b", b"").reversed(),
                    limit,
                    usize::MAX
                ),
                ["c", "b\u{7f}", "b"]
            );
        }
        assert!(all(&s, &ScanRange::between(b"c", b"a"), 0, usize::MAX).is_empty());
        assert!(all(&s, &ScanRange::prefix(b"zz"), 0, usize::MAX).is_empty());
        // A byte budget for one key at a time still pages through.
        assert_eq!(all(&s, &ScanRange::all(), 0, 1).len(), 6);
    }

    #[test]
    fn prefix_ends_handle_0xff() {
        let s = state(&[("\u{7f}", None)]);
        let mut st = State::default();
        for (i, k) in [&b"a\xff"[..], b"a\xff\xff", b"b", b"\xff", b"\xff\x01"]
            .iter()
            .enumerate()
        {
            let lsn = i as u64 + 1;
            st.apply(Op::Put(Entry::new(k, b"", lsn, None)), lsn);
        }
        let got = |p: &[u8]| {
            scan(&st, &ScanRange::prefix(p), None, 0, usize::MAX, false, 0)
                .items
                .len()
        };
        assert_eq!(got(b"a\xff"), 2);
        assert_eq!(got(b"\xff"), 2);
        assert_eq!(got(b""), 5);
        // A page always carries its first item, whatever the budget, so a
        // scan always moves on.
        let tiny = scan(&s, &ScanRange::prefix(b""), None, 0, 0, false, 0);
        assert_eq!((tiny.items.len(), tiny.more), (1, false));
    }

    #[test]
    fn expired_keys_are_skipped_within_a_bounded_page() {
        let mut s = State::default();
        let n = MAX_LOOKED_AT + 10;
        for i in 0..n {
            let lsn = i as u64 + 1;
            let key = format!("k{i:06}");
            s.apply(Op::Put(Entry::new(key.as_bytes(), b"v", lsn, Some(1))), lsn);
        }
        let live = n as u64 + 1;
        s.apply(Op::Put(Entry::new(b"z", b"v", live, None)), live);
        let first = scan(&s, &ScanRange::all(), None, 10, usize::MAX, true, 100);
        assert!(first.items.is_empty() && first.more);
        let second = scan(
            &s,
            &ScanRange::all(),
            Some(&first.resume_after),
            10,
            usize::MAX,
            true,
            100,
        );
        assert_eq!(keys(&second), ["z"]);
        assert_eq!(second.items[0].value.as_deref(), Some(&b"v"[..]));
        assert_eq!(second.items[0].seq, live);
        assert!(!second.more);
        assert!(get(&s, b"k000000", 100).is_none());
        assert_eq!(
            get(&s, b"k000000", 0).map(|v| v.expires_at_ms),
            Some(Some(1))
        );
    }
}
