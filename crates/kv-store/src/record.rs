//! Log records: the `kv.v1.LogEntry` payloads that the store hands to
//! wal-core, and their decoding at replay.
//!
//! Producing a record is split in two so that the expensive part runs in the
//! caller's thread: [`encode_put`]/[`encode_delete`] write every field except
//! `seq` after [`HEADROOM`] spare bytes, and the commit thread, which alone
//! knows the LSN the log will assign, fills `seq` into the headroom with
//! [`fill_seq`]. Field 1 (`seq`) then precedes fields 2..5, which is exactly
//! the byte sequence prost itself would produce for the same `LogEntry`.

use bytes::Bytes;
use kv_proto::{LogEntry, Operation};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use wal_core::Lsn;

use crate::error::{Error, Result};

/// Spare bytes before the encoded body: one tag byte for field 1 plus the
/// longest varint of a u64 (10 bytes).
pub(crate) const HEADROOM: usize = 11;

/// The largest record a key of `key_len` and a value of `value_len` bytes can
/// produce, headroom included.
pub(crate) fn max_encoded_len(key_len: usize, value_len: usize) -> usize {
    // seq: tag + 10; op: tag + 1; key, value: tag + 5-byte length + bytes;
    // timestamp: tag + 10.
    HEADROOM + 2 + (1 + 5 + key_len) + (1 + 5 + value_len) + 11
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn encode(op: Operation, key: &[u8], value: &[u8]) -> Vec<u8> {
    let ts = now_ms();
    let len = HEADROOM
        + 2
        + 1
        + encoded_len_varint(key.len() as u64)
        + key.len()
        + 1
        + encoded_len_varint(value.len() as u64)
        + value.len()
        + 1
        + encoded_len_varint(ts);
    let mut buf = Vec::with_capacity(len);
    buf.resize(HEADROOM, 0);
    // Fields in ascending tag order; proto3 defaults (empty value, zero
    // timestamp) are omitted, as prost omits them.
    encode_key(2, WireType::Varint, &mut buf);
    encode_varint(op as i32 as u64, &mut buf);
    encode_key(3, WireType::LengthDelimited, &mut buf);
    encode_varint(key.len() as u64, &mut buf);
    buf.extend_from_slice(key);
    if !value.is_empty() {
        encode_key(4, WireType::LengthDelimited, &mut buf);
        encode_varint(value.len() as u64, &mut buf);
        buf.extend_from_slice(value);
    }
    if ts != 0 {
        encode_key(5, WireType::Varint, &mut buf);
        encode_varint(ts, &mut buf);
    }
    buf
}

/// Encodes a PUT entry without its `seq`, after [`HEADROOM`] spare bytes.
pub(crate) fn encode_put(key: &[u8], value: &[u8]) -> Vec<u8> {
    encode(Operation::Put, key, value)
}

/// Encodes a DELETE entry without its `seq`, after [`HEADROOM`] spare bytes.
pub(crate) fn encode_delete(key: &[u8]) -> Vec<u8> {
    encode(Operation::Delete, key, &[])
}

/// Writes field 1 (`seq`) into the headroom of `buf`, right before the body,
/// and returns the offset at which the finished record starts.
pub(crate) fn fill_seq(buf: &mut [u8], seq: Lsn) -> usize {
    let mut varint = [0u8; 10];
    let mut n = 0;
    let mut v = seq;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            varint[n] = byte;
            n += 1;
            break;
        }
        varint[n] = byte | 0x80;
        n += 1;
    }
    let start = HEADROOM - 1 - n;
    // Tag of field 1, wire type varint: (1 << 3) | 0.
    buf[start] = 0x08;
    buf[start + 1..HEADROOM].copy_from_slice(&varint[..n]);
    start
}

/// A decoded log entry: what it does to the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Bytes,
    },
}

/// Decodes the record at `lsn`. Decoding from `Bytes` slices key and value out
/// of `data` without copying them. A record whose `seq` differs from its LSN,
/// or whose operation is unknown, is refused rather than guessed at.
pub(crate) fn decode(lsn: Lsn, data: Bytes) -> Result<Op> {
    let entry = LogEntry::decode(data).map_err(|e| Error::CorruptLogEntry {
        lsn,
        reason: format!("undecodable: {e}"),
    })?;
    if entry.seq != lsn {
        return Err(Error::CorruptLogEntry {
            lsn,
            reason: format!("entry says seq {}, the log says {lsn}", entry.seq),
        });
    }
    match Operation::try_from(entry.op) {
        Ok(Operation::Put) => Ok(Op::Put {
            key: entry.key,
            value: entry.value,
        }),
        Ok(Operation::Delete) => Ok(Op::Delete { key: entry.key }),
        _ => Err(Error::CorruptLogEntry {
            lsn,
            reason: format!("unknown operation {}", entry.op),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finish(mut buf: Vec<u8>, seq: Lsn) -> Vec<u8> {
        let start = fill_seq(&mut buf, seq);
        buf.split_off(start)
    }

    #[test]
    fn matches_prost_encoding_for_every_varint_length() {
        let mut seq = 1u64;
        loop {
            for (op, value) in [(Operation::Put, &b"value"[..]), (Operation::Put, &b""[..])] {
                let ours = finish(encode(op, b"key", value), seq);
                let decoded = LogEntry::decode(&ours[..]).unwrap();
                assert_eq!(decoded.seq, seq);
                assert_eq!(decoded.op, op as i32);
                assert_eq!(&decoded.key[..], b"key");
                assert_eq!(&decoded.value[..], value);
                // Same bytes as prost's own encoding of the same entry.
                assert_eq!(decoded.encode_to_vec(), ours);
            }
            if seq > u64::MAX / 128 {
                break;
            }
            seq = seq * 128 + 1;
        }
        let ours = finish(encode_delete(b"k"), u64::MAX);
        assert_eq!(
            decode(u64::MAX, Bytes::from(ours)).unwrap(),
            Op::Delete {
                key: Bytes::from_static(b"k")
            }
        );
    }

    #[test]
    fn max_encoded_len_bounds_real_records() {
        let key = vec![7u8; 300];
        let value = vec![9u8; 70_000];
        let rec = finish(encode_put(&key, &value), u64::MAX);
        assert!(rec.len() + HEADROOM <= max_encoded_len(key.len(), value.len()) + HEADROOM);
        assert!(encode_put(&key, &value).len() <= max_encoded_len(key.len(), value.len()));
    }

    #[test]
    fn decode_refuses_wrong_seq_and_unknown_op() {
        let rec = finish(encode_put(b"a", b"b"), 5);
        assert!(matches!(
            decode(6, Bytes::from(rec)),
            Err(Error::CorruptLogEntry { lsn: 6, .. })
        ));
        let bad = LogEntry {
            seq: 3,
            op: 9,
            key: Bytes::from_static(b"a"),
            value: Bytes::new(),
            timestamp_ms: 0,
        };
        assert!(matches!(
            decode(3, Bytes::from(bad.encode_to_vec())),
            Err(Error::CorruptLogEntry { lsn: 3, .. })
        ));
        assert!(decode(1, Bytes::from_static(&[0xff, 0xff])).is_err());
    }
}
