//! The on-disk format: segment header, record framing and segment file
//! names. Pure encode/decode, no I/O. `docs/format.md` draws it byte by byte.
//!
//! All integers are little-endian.
//!
//! Segment header (32 bytes, at offset 0 of every segment file):
//!
//! ```text
//!  0..8   magic            b"WALCORE\0"
//!  8..12  format version   u32 (1)
//! 12..16  reserved         zero
//! 16..24  first LSN        u64, equal to the LSN in the file name
//! 24..28  reserved         zero
//! 28..32  header checksum  crc32 of bytes 0..28
//! ```
//!
//! Record (20-byte header, then the payload):
//!
//! ```text
//!  0..4   checksum  crc32 of bytes 4..20 and the payload
//!  4..8   length    u32, payload bytes
//!  8..16  LSN       u64
//! 16      flags     bit 0: another record of the same batch follows
//! 17..20  reserved  zero
//! 20..    payload
//! ```

use crate::Lsn;

/// Identifies a wal-core segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"WALCORE\0";
/// The format version this build writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Bytes of the segment header.
pub(crate) const SEGMENT_HEADER_LEN: usize = 32;
/// Bytes of a record header.
pub(crate) const RECORD_HEADER_LEN: usize = 20;
/// Record flag: the next record belongs to the same `append_batch` call.
pub(crate) const FLAG_BATCH_CONTINUES: u8 = 1;
/// Flags this version understands; any other bit set is corruption.
const KNOWN_FLAGS: u8 = FLAG_BATCH_CONTINUES;
/// The largest `max_record_size` allowed: a record must be readable into
/// memory in one piece.
pub(crate) const MAX_RECORD_SIZE_LIMIT: u32 = 1 << 30;
/// Suffix of segment file names.
pub(crate) const SEGMENT_SUFFIX: &str = ".wal";
/// Digits in a segment file name: u64::MAX has 20 decimal digits, so
/// zero-padding to 20 makes lexical order equal LSN order.
const SEGMENT_NAME_DIGITS: usize = 20;

/// The file name of the segment whose first LSN is `first_lsn`.
pub(crate) fn segment_file_name(first_lsn: Lsn) -> String {
    format!(
        "{first_lsn:0width$}{SEGMENT_SUFFIX}",
        width = SEGMENT_NAME_DIGITS
    )
}

/// The first LSN encoded in a segment file name, or `None` if `name` is not
/// a segment file name.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Encodes the header of a segment whose first record will have `first_lsn`.
pub(crate) fn encode_segment_header(first_lsn: Lsn) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a segment header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Fewer than [`SEGMENT_HEADER_LEN`] bytes.
    Short,
    /// The magic is wrong: not a wal-core segment, or overwritten.
    BadMagic,
    /// Magic is right but the version is not [`FORMAT_VERSION`]. Checked
    /// before the checksum because another version may lay out (and checksum)
    /// the rest of the header differently: magic and version are the part
    /// every version keeps.
    UnsupportedVersion(u32),
    /// The header checksum does not match.
    BadChecksum,
    /// The checksum matches but a reserved byte is not zero.
    Reserved,
}

impl HeaderError {
    /// Human-readable reason, for errors and warnings.
    pub(crate) fn describe(self) -> String {
        match self {
            HeaderError::Short => "segment header is incomplete".to_string(),
            HeaderError::BadMagic => "segment header has the wrong magic".to_string(),
            HeaderError::UnsupportedVersion(v) => format!("unsupported format version {v}"),
            HeaderError::BadChecksum => "segment header checksum mismatch".to_string(),
            HeaderError::Reserved => "segment header has non-zero reserved bytes".to_string(),
        }
    }
}

/// Decodes a segment header and returns the first LSN it carries.
pub(crate) fn decode_segment_header(bytes: &[u8]) -> Result<Lsn, HeaderError> {
    let h: &[u8; SEGMENT_HEADER_LEN] = bytes
        .get(..SEGMENT_HEADER_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or(HeaderError::Short)?;
    if h[0..8] != SEGMENT_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != FORMAT_VERSION {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    let stored = u32::from_le_bytes([h[28], h[29], h[30], h[31]]);
    if crc32fast::hash(&h[0..28]) != stored {
        return Err(HeaderError::BadChecksum);
    }
    if h[12..16] != [0; 4] || h[24..28] != [0; 4] {
        return Err(HeaderError::Reserved);
    }
    Ok(u64::from_le_bytes(read8(&h[16..24])))
}

fn read8(b: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&b[..8]);
    out
}

/// Bytes a record of `payload_len` takes on disk.
pub(crate) fn framed_len(payload_len: usize) -> u64 {
    RECORD_HEADER_LEN as u64 + payload_len as u64
}

/// Appends one framed record to `out`.
///
/// The caller has checked `payload.len()` against the maximum record size,
/// which is at most [`MAX_RECORD_SIZE_LIMIT`], so it fits the u32 length.
pub(crate) fn encode_record(out: &mut Vec<u8>, lsn: Lsn, flags: u8, payload: &[u8]) {
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[8..16].copy_from_slice(&lsn.to_le_bytes());
    h[16] = flags;
    let crc = record_checksum(&h, payload);
    h[0..4].copy_from_slice(&crc.to_le_bytes());
    out.reserve(RECORD_HEADER_LEN + payload.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
}

/// Rewrites the framed record in `record` (header and payload) so that it
/// ends its batch: clears `BATCH_CONTINUES` and recomputes the checksum.
/// Returns whether anything changed. For `truncate_after` inside a batch:
/// the record it keeps last must not wait for a continuation that is gone.
pub(crate) fn end_batch(record: &mut [u8]) -> bool {
    if record.len() < RECORD_HEADER_LEN || record[16] & FLAG_BATCH_CONTINUES == 0 {
        return false;
    }
    record[16] &= !FLAG_BATCH_CONTINUES;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&record[4..]);
    let crc = hasher.finalize();
    record[0..4].copy_from_slice(&crc.to_le_bytes());
    true
}

/// The checksum of a record: header bytes after the checksum field, then the
/// payload. Covering the length means a flipped length bit is caught.
fn record_checksum(header: &[u8; RECORD_HEADER_LEN], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[4..]);
    hasher.update(payload);
    hasher.finalize()
}

/// A record header as read, not yet verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    /// Stored checksum.
    pub crc: u32,
    /// Claimed payload length: untrusted until the checksum matched.
    pub len: u32,
    /// Claimed LSN.
    pub lsn: Lsn,
    /// Claimed flags.
    pub flags: u8,
    raw: [u8; RECORD_HEADER_LEN],
}

impl RecordHeader {
    /// Splits a raw header into its fields; nothing is checked yet.
    pub(crate) fn parse(raw: &[u8; RECORD_HEADER_LEN]) -> RecordHeader {
        RecordHeader {
            crc: u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]),
            len: u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]),
            lsn: u64::from_le_bytes(read8(&raw[8..16])),
            flags: raw[16],
            raw: *raw,
        }
    }

    /// Checks the claimed length against the maximum. Must pass before the
    /// length is used to size a read.
    pub(crate) fn check_len(&self, max_record_size: u32) -> Result<(), RecordError> {
        if self.len > max_record_size {
            return Err(RecordError::TooLong {
                len: self.len,
                max: max_record_size,
            });
        }
        Ok(())
    }

    /// A checksum over this header's covered bytes, to be fed the payload
    /// piece by piece (for records too large to read into memory at once).
    pub(crate) fn checksum_start(&self) -> crc32fast::Hasher {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.raw[4..]);
        hasher
    }

    /// Whether the flags and reserved bytes are ones this version knows.
    pub(crate) fn flags_known(&self) -> bool {
        self.flags & !KNOWN_FLAGS == 0 && self.raw[17..20] == [0; 3]
    }

    /// Verifies checksum and flags against the payload read for this header.
    pub(crate) fn verify(&self, payload: &[u8]) -> Result<(), RecordError> {
        if payload.len() != self.len as usize || record_checksum(&self.raw, payload) != self.crc {
            return Err(RecordError::BadChecksum);
        }
        if !self.flags_known() {
            return Err(RecordError::UnknownFlags {
                lsn: self.lsn,
                flags: self.flags,
            });
        }
        Ok(())
    }
}

/// Why a record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordError {
    /// The buffer ends before the record does.
    Incomplete,
    /// The length field exceeds the maximum record size.
    TooLong {
        /// Claimed length.
        len: u32,
        /// The maximum.
        max: u32,
    },
    /// The checksum does not match.
    BadChecksum,
    /// The checksum matches but flags or reserved bytes are unknown.
    UnknownFlags {
        /// The record's LSN (trusted: the checksum verified).
        lsn: Lsn,
        /// Its flags byte.
        flags: u8,
    },
    /// The length exceeds the maximum record size, but the record is
    /// intact: its checksum verifies (checked without reading it into
    /// memory at once). Written under a larger limit.
    Oversized {
        /// The record's LSN (trusted: the checksum verified).
        lsn: Lsn,
        /// The record's length.
        len: u32,
        /// The maximum.
        max: u32,
    },
}

impl RecordError {
    /// Human-readable reason.
    pub(crate) fn describe(self) -> String {
        match self {
            RecordError::Incomplete => "record is incomplete (file ends inside it)".to_string(),
            RecordError::TooLong { len, max } => {
                format!("record length {len} exceeds the maximum record size {max}")
            }
            RecordError::BadChecksum => "record checksum mismatch".to_string(),
            RecordError::UnknownFlags { lsn, flags } => {
                format!("intact record {lsn} has unknown flags {flags:#04x}")
            }
            RecordError::Oversized { lsn, len, max } => {
                format!("intact record {lsn} of {len} bytes exceeds the maximum record size {max}")
            }
        }
    }

    /// Whether the record is intact (its checksum verifies) and refused
    /// only because this configuration or build cannot take it: never a
    /// torn write, never to be cut.
    pub(crate) fn is_intact(self) -> bool {
        matches!(
            self,
            RecordError::UnknownFlags { .. } | RecordError::Oversized { .. }
        )
    }
}

/// A record decoded from a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DecodedRecord<'a> {
    /// Its LSN.
    pub lsn: Lsn,
    /// Its flags.
    pub flags: u8,
    /// Its payload.
    pub payload: &'a [u8],
    /// Bytes it took in `buf`, header included.
    pub framed_len: usize,
}

/// Decodes the record at the start of `buf`: length bounded first, then the
/// checksum verified, only then is anything trusted.
pub(crate) fn decode_record(
    buf: &[u8],
    max_record_size: u32,
) -> Result<DecodedRecord<'_>, RecordError> {
    let raw: &[u8; RECORD_HEADER_LEN] = buf
        .get(..RECORD_HEADER_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or(RecordError::Incomplete)?;
    let header = RecordHeader::parse(raw);
    header.check_len(max_record_size)?;
    let end = RECORD_HEADER_LEN + header.len as usize;
    let payload = buf
        .get(RECORD_HEADER_LEN..end)
        .ok_or(RecordError::Incomplete)?;
    header.verify(payload)?;
    Ok(DecodedRecord {
        lsn: header.lsn,
        flags: header.flags,
        payload,
        framed_len: end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_like_lsns_and_round_trip() {
        let lsns = [1u64, 9, 10, 123_456, u64::MAX];
        let names: Vec<String> = lsns.iter().map(|&l| segment_file_name(l)).collect();
        assert_eq!(names[0], "00000000000000000001.wal");
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, names);
        for (name, lsn) in names.iter().zip(lsns) {
            assert_eq!(parse_segment_file_name(name), Some(lsn));
        }
    }

    #[test]
    fn foreign_names_are_not_segments() {
        for name in [
            "LOCK",
            "1.wal",
            "0000000000000000000a.wal",
            "00000000000000000001.wal.tmp",
            "00000000000000000001.log",
        ] {
            assert_eq!(parse_segment_file_name(name), None, "{name}");
        }
    }

    #[test]
    fn segment_header_round_trips() {
        let h = encode_segment_header(42);
        assert_eq!(&h[0..8], b"WALCORE\0");
        assert_eq!(decode_segment_header(&h), Ok(42));
    }

    #[test]
    fn segment_header_errors() {
        let h = encode_segment_header(7);
        assert_eq!(decode_segment_header(&h[..31]), Err(HeaderError::Short));
        let mut bad = h;
        bad[0] ^= 1;
        assert_eq!(decode_segment_header(&bad), Err(HeaderError::BadMagic));
        let mut bad = h;
        bad[8] = 2;
        assert_eq!(
            decode_segment_header(&bad),
            Err(HeaderError::UnsupportedVersion(2))
        );
        let mut bad = h;
        bad[16] ^= 0x80;
        assert_eq!(decode_segment_header(&bad), Err(HeaderError::BadChecksum));
        assert_eq!(
            decode_segment_header(&[0u8; 32]),
            Err(HeaderError::BadMagic)
        );
    }

    #[test]
    fn record_round_trips() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 5, 0, b"hello");
        encode_record(&mut buf, 6, FLAG_BATCH_CONTINUES, b"");
        assert_eq!(buf.len() as u64, framed_len(5) + framed_len(0));
        let first = decode_record(&buf, 100).unwrap();
        assert_eq!(
            (first.lsn, first.flags, first.payload, first.framed_len),
            (5, 0, &b"hello"[..], 25)
        );
        let second = decode_record(&buf[first.framed_len..], 100).unwrap();
        assert_eq!(
            (second.lsn, second.flags, second.payload),
            (6, FLAG_BATCH_CONTINUES, &b""[..])
        );
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 77, 0, b"payload bytes");
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_record(&bad, 1 << 20).is_err(),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn length_is_bounded_before_it_is_used() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 1, 0, b"abc");
        buf[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_record(&buf, 1024),
            Err(RecordError::TooLong {
                len: u32::MAX,
                max: 1024
            })
        );
        // Within the maximum but past the end of the buffer: incomplete, not
        // a read past the end.
        buf[4..8].copy_from_slice(&500u32.to_le_bytes());
        assert_eq!(decode_record(&buf, 1024), Err(RecordError::Incomplete));
    }

    #[test]
    fn a_record_longer_than_the_maximum_is_refused_on_read() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 1, 0, &[7u8; 64]);
        assert_eq!(decode_record(&buf, 64).map(|r| r.lsn), Ok(1));
        assert!(matches!(
            decode_record(&buf, 63),
            Err(RecordError::TooLong { len: 64, max: 63 })
        ));
    }

    #[test]
    fn zeroes_are_not_a_record() {
        assert_eq!(
            decode_record(&[0u8; 64], 1024),
            Err(RecordError::BadChecksum)
        );
    }

    #[test]
    fn unknown_flags_are_refused() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 1, 0x80, b"x");
        assert_eq!(
            decode_record(&buf, 1024),
            Err(RecordError::UnknownFlags {
                lsn: 1,
                flags: 0x80
            })
        );
    }
}
