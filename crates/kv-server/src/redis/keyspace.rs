//! The keyspace commands that walk keys: KEYS and SCAN (with its cursors),
//! and Redis's glob patterns.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use kv_store::ScanRange;

use super::db::Db;

use super::commands::{RedisServer, SYNTAX, err, parse_int, upper};
use super::resp::Frame;

/// Most SCAN cursors remembered, and most resume-key bytes they hold: the
/// oldest are forgotten first (a forgotten cursor gets `ERR invalid
/// cursor`, never a wrong page).
const MAX_CURSORS: usize = 65_536;
const MAX_CURSOR_BYTES: usize = 16 << 20;

/// SCAN cursors: Redis clients (redis-cli, redis-rs) take a cursor to be
/// an unsigned 64-bit number, so a cursor names the key to resume after,
/// kept here, instead of carrying it.
#[derive(Default)]
pub(super) struct Cursors {
    next: u64,
    keys: HashMap<u64, Vec<u8>>,
    order: VecDeque<u64>,
    bytes: usize,
}

impl Cursors {
    pub(super) fn insert(&mut self, key: Vec<u8>) -> u64 {
        self.next += 1;
        let id = self.next;
        self.bytes += key.len();
        self.keys.insert(id, key);
        self.order.push_back(id);
        while self.order.len() > MAX_CURSORS || self.bytes > MAX_CURSOR_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(k) = self.keys.remove(&old) {
                self.bytes -= k.len();
            }
        }
        id
    }

    pub(super) fn get(&self, id: u64) -> Option<Vec<u8>> {
        self.keys.get(&id).cloned()
    }
}

/// What a glob's matches all start with: its bytes before the first
/// special one.
fn literal_prefix(pattern: &[u8]) -> &[u8] {
    let end = pattern
        .iter()
        .position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
        .unwrap_or(pattern.len());
    &pattern[..end]
}

/// Page size of the store scans behind KEYS and SCAN.
const SCAN_PAGE_BYTES: usize = 1 << 20;

pub(super) async fn keys(db: &Db, pattern: &[u8], max: usize) -> Frame {
    let range = ScanRange::prefix(literal_prefix(pattern));
    let mut after: Option<Vec<u8>> = None;
    let mut found = Vec::new();
    let mut bytes = 0usize;
    loop {
        // A read per page: on a member, the state's lock is held for one
        // page at a time, never for a whole listing.
        let page = db
            .read(|view| view.scan(&range, after.as_deref(), 0, SCAN_PAGE_BYTES, false))
            .await;
        let page = match page {
            Ok(page) => page,
            Err(e) => return e,
        };
        for item in page.items {
            if glob_match(pattern, &item.key) {
                bytes += item.key.len() + 16;
                if bytes > max {
                    return err(format!(
                        "ERR the keys matching take more than the maximum reply of {max} \
                         bytes (--max-frame): use SCAN"
                    ));
                }
                found.push(Frame::bulk(item.key));
            }
        }
        if !page.more {
            return Frame::Array(found);
        }
        after = Some(page.resume_after);
    }
}

/// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type].
pub(super) async fn scan(args: &[Bytes], shared: &RedisServer) -> Frame {
    let invalid_cursor = || err("ERR invalid cursor");
    let Some(cursor) = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return invalid_cursor();
    };
    let mut pattern: Option<Bytes> = None;
    let mut count = 10usize;
    let mut string_type = true;
    let mut i = 2;
    while i < args.len() {
        if i + 1 >= args.len() {
            return err(SYNTAX);
        }
        match upper(&args[i]).as_str() {
            "MATCH" => pattern = Some(args[i + 1].clone()),
            "COUNT" => match parse_int(&args[i + 1]) {
                Ok(n) if n >= 1 => count = usize::try_from(n).unwrap_or(usize::MAX),
                Ok(_) => return err(SYNTAX),
                Err(e) => return e,
            },
            "TYPE" => string_type = args[i + 1].eq_ignore_ascii_case(b"string"),
            _ => return err(SYNTAX),
        }
        i += 2;
    }
    let after = if cursor == 0 {
        None
    } else {
        match shared.cursors.lock().map(|c| c.get(cursor)) {
            Ok(Some(key)) => Some(key),
            _ => return invalid_cursor(),
        }
    };
    let range = ScanRange::prefix(pattern.as_deref().map_or(&b""[..], literal_prefix));
    let page = shared
        .db
        .read(|view| view.scan(&range, after.as_deref(), count, SCAN_PAGE_BYTES, false))
        .await;
    let page = match page {
        Ok(page) => page,
        Err(e) => return e,
    };
    let keys = page
        .items
        .into_iter()
        .filter(|item| string_type && pattern.as_deref().is_none_or(|p| glob_match(p, &item.key)))
        .map(|item| Frame::bulk(item.key))
        .collect();
    let next = if page.more {
        match shared.cursors.lock() {
            Ok(mut c) => c.insert(page.resume_after),
            Err(_) => return err("ERR cursor table unavailable"),
        }
    } else {
        0
    };
    Frame::Array(vec![Frame::bulk(next.to_string()), Frame::Array(keys)])
}

/// Redis's glob: `*`, `?`, `[abc]`, `[^a-z]`, `\x`.
pub(super) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: the pattern after it, and the
    // text position it has swallowed up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p + 1, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(pattern, p, text[t])
                        && matched
                    {
                        p = next;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == text[t] {
                        p += 2;
                        t += 1;
                        continue;
                    }
                }
                c => {
                    if c == text[t] {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class `[...]` at `pattern[p]`: whether it
/// matched, and where the pattern goes on after the class.
fn class(pattern: &[u8], p: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = p + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &b = pattern.get(i)?;
        if b == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if b == b'\\' && i + 1 < pattern.len() {
            matched |= pattern[i + 1] == c;
            i += 2;
        } else if pattern.get(i + 1) == Some(&b'-')
            && pattern.get(i + 2).is_some_and(|&e| e != b']')
        {
            let (lo, hi) = (b.min(pattern[i + 2]), b.max(pattern[i + 2]));
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= b == c;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_as_redis_matches() {
        let yes: &[(&[u8], &[u8])] = &[
            (b"*", b""),
            (b"*", b"abc"),
            (b"a*c", b"abbbc"),
            (b"h?llo", b"hello"),
            (b"h[ae]llo", b"hallo"),
            (b"h[^e]llo", b"hallo"),
            (b"h[a-b]llo", b"hbllo"),
            (b"a\\*", b"a*"),
            (b"*b*", b"aabaa"),
        ];
        let no: &[(&[u8], &[u8])] = &[
            (b"a*c", b"abcd"),
            (b"h?llo", b"hllo"),
            (b"h[ae]llo", b"hillo"),
            (b"h[^e]llo", b"hello"),
            (b"a\\*", b"ab"),
            (b"abc", b"ab"),
            (b"[abc", b"a"),
        ];
        for (p, t) in yes {
            assert!(glob_match(p, t), "{p:?} should match {t:?}");
        }
        for (p, t) in no {
            assert!(!glob_match(p, t), "{p:?} should not match {t:?}");
        }
    }
}
