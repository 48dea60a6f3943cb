//! Key listings copied a chunk at a time, so that whoever holds the map's
//! lock for a listing lets writers in between chunks.

use crate::KeysPage;
use crate::checkpoint::CHUNK;
use crate::state::State;
use crate::store::KEY_LISTING_OVERHEAD;

/// A key listing in progress: keys starting with a prefix, ascending, at
/// most `limit` of them (0: no limit) and at most `max_bytes` of listing,
/// counting each key as its length plus [`KEY_LISTING_OVERHEAD`].
///
/// Each step (see [`crate::replica::Replica::list_keys`]) copies up to a
/// thousand or so keys under one hold of the map's read lock and resumes
/// after the last key copied, so a writer waiting for the lock waits for
/// one chunk, never for a whole listing. A listing is therefore not a
/// snapshot: a key written or deleted while it runs may or may not be in
/// it, but every key present throughout is, once, in order.
#[derive(Debug, Clone)]
pub struct KeyListing {
    prefix: Vec<u8>,
    limit: usize,
    max_bytes: usize,
    bytes: usize,
    page: KeysPage,
    done: bool,
    /// The last key looked at (listed, or skipped as expired).
    after: Option<Vec<u8>>,
    /// Keys whose deadline is at or before this (ms since the Unix epoch)
    /// have expired and are left out.
    now_ms: u64,
}

impl KeyListing {
    /// A listing that has copied nothing yet.
    pub fn new(prefix: &[u8], limit: usize, max_bytes: usize) -> KeyListing {
        KeyListing {
            prefix: prefix.to_vec(),
            limit: if limit == 0 { usize::MAX } else { limit },
            max_bytes,
            bytes: 0,
            page: KeysPage::default(),
            done: false,
            after: None,
            now_ms: crate::record::now_ms(),
        }
    }

    /// Whether every matching key has been copied, or the limits reached.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The keys copied, and whether more matched than the limits let in.
    pub fn into_page(self) -> KeysPage {
        self.page
    }

    /// Copies the next chunk from `state`.
    pub(crate) fn step(&mut self, state: &State) {
        if self.done {
            return;
        }
        let entries = match &self.after {
            None => state.range_from(&self.prefix, false),
            Some(last) => state.range_from(last, true),
        };
        let mut copied = Vec::new();
        let mut finished = true;
        let mut last = None;
        let matching = entries.take_while(|e| e.key().starts_with(&self.prefix));
        for (looked, entry) in matching.enumerate() {
            if looked == CHUNK {
                finished = false;
                break;
            }
            if entry.expired_at(self.now_ms) {
                last = Some(entry.key());
                continue;
            }
            let cost = entry.key().len().saturating_add(KEY_LISTING_OVERHEAD);
            if self.page.keys.len() + copied.len() == self.limit
                || self.bytes.saturating_add(cost) > self.max_bytes
            {
                self.page.truncated = true;
                break;
            }
            self.bytes += cost;
            last = Some(entry.key());
            copied.push(entry.key().to_vec());
        }
        if let Some(last) = last {
            self.after = Some(last.to_vec());
        }
        self.page.keys.append(&mut copied);
        self.done = finished;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::{Replica, encode_delete, encode_put};

    fn key(i: usize) -> Vec<u8> {
        format!("k{i:05}").into_bytes()
    }

    fn filled(n: usize) -> Replica {
        let mut replica = Replica::new();
        for i in 0..n {
            replica
                .apply(i as u64 + 1, &encode_put(&key(i), b"v"))
                .unwrap();
        }
        replica
    }

    #[test]
    fn each_step_copies_one_chunk_and_resumes_after_it() {
        let n = 2 * CHUNK + 10;
        let mut replica = filled(n);
        let mut listing = KeyListing::new(b"k", 0, usize::MAX);
        replica.list_keys(&mut listing);
        assert!(!listing.is_done());
        assert_eq!(listing.page.keys.len(), CHUNK);

        // Between steps (the lock released): a key behind the resume point
        // goes unseen, one ahead of it is listed, one deleted ahead is not.
        let mut seq = n as u64;
        let mut apply = |replica: &mut Replica, command: Vec<u8>| {
            seq += 1;
            replica.apply(seq, &command).unwrap();
        };
        apply(&mut replica, encode_delete(&key(0)));
        apply(&mut replica, encode_put(b"k99999", b"v"));
        apply(&mut replica, encode_delete(&key(n - 1)));
        let mut steps = 1;
        while !listing.is_done() {
            replica.list_keys(&mut listing);
            steps += 1;
        }
        assert_eq!(steps, 3);
        let page = listing.into_page();
        assert!(!page.truncated);
        let mut expected: Vec<Vec<u8>> = (0..n - 1).map(key).collect();
        expected.push(b"k99999".to_vec());
        assert_eq!(page.keys.len(), expected.len());
        assert!(page.keys == expected, "keys out of order, lost or repeated");
    }

    #[test]
    fn limits_cut_across_chunks_and_say_so() {
        let replica = filled(CHUNK + 1);
        // Exactly the limit: not truncated only when nothing more matches.
        let (keys, more) = replica.keys_within(b"k", CHUNK + 1, usize::MAX);
        assert_eq!((keys.len(), more), (CHUNK + 1, false));
        let (keys, more) = replica.keys_within(b"k", CHUNK, usize::MAX);
        assert_eq!((keys.len(), more), (CHUNK, true));
        let per = key(0).len() + KEY_LISTING_OVERHEAD;
        let (keys, more) = replica.keys_within(b"k", 0, per * (CHUNK + 1) - 1);
        assert_eq!((keys.len(), more), (CHUNK, true));
        let (keys, more) = replica.keys_within(b"k", 0, per * (CHUNK + 1));
        assert_eq!((keys.len(), more), (CHUNK + 1, false));
        let (keys, more) = replica.keys_within(b"nothing", 0, usize::MAX);
        assert_eq!((keys.len(), more), (0, false));
    }
}
