//! The snapshot file: format, writer and reader.
//!
//! A snapshot holds the state as of some LSN `seq`, possibly plus later writes
//! (see the crate docs: checkpoints are fuzzy, and replaying the log after
//! `seq` fixes that up). It lives in `<dir>/snapshots/` as
//! `snapshot-<seq, 20 digits>.snap`; it is written as `snapshot-<seq>.tmp`
//! and renamed only once complete and synced. All integers little-endian.
//!
//! ```text
//! offset 0   header region, 64 bytes:
//!              magic "KVSNAP\0\x01"                       8 bytes
//!              header length H                            u32
//!              crc32 of (H as u32 LE ++ header bytes)     u32
//!              kv.v1.SnapshotHeader {version, seq,
//!                entry_count, created_ms}                 H bytes (H <= 48)
//!              zero padding to 64 bytes
//! offset 64  entries, each:
//!              payload length L                           u32
//!              crc32 of (L as u32 LE ++ payload)          u32
//!              kv.v1.SnapshotEntry {key, value, seq,
//!                expires_at_ms}                           L bytes
//!            keys strictly ascending
//! end - 20   trailer:
//!              magic "KVSNAPND"                           8 bytes
//!              entry count                                u64
//!              crc32 of every byte before this field      u32
//! ```
//!
//! The header region is written last (the entry count is only known at the
//! end of a fuzzy copy), at its fixed place, which is why it is padded to a
//! fixed size. The per-entry checksum pinpoints damage; the file checksum in
//! the trailer also covers lengths, padding and the order of entries, so a
//! snapshot is accepted only if every byte is as written.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use kv_proto::{SnapshotEntry, SnapshotHeader};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use wal_core::{Lsn, Vfs, VfsFile};

use crate::error::{Error, Result};
use crate::state::{Entry, State};

/// First bytes of every snapshot file.
pub(crate) const MAGIC: &[u8; 8] = b"KVSNAP\0\x01";
/// First bytes of the trailer.
pub(crate) const TRAILER_MAGIC: &[u8; 8] = b"KVSNAPND";
/// The `SnapshotHeader.version` this code writes: 2 adds each entry's
/// version and deadline.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// The oldest version this code reads: in format 1 every entry takes the
/// snapshot's seq as its version, and has no deadline.
pub(crate) const OLDEST_FORMAT_VERSION: u32 = 1;
/// Size of the fixed header region.
pub(crate) const HEADER_REGION: usize = 64;
/// Size of the trailer.
pub(crate) const TRAILER_LEN: usize = 8 + 8 + 4;
/// Bytes of the header region before the `SnapshotHeader` message.
const HEADER_PREFIX: usize = 8 + 4 + 4;
/// Entries are written to the file in buffers of about this size, and the
/// checkpoint syncs the file after each one (see [`SnapshotWriter::sync`]).
/// Small enough that one buffer's writeback delays a concurrent log sync by
/// well under a millisecond on a disk that writes a few hundred MB/s.
const WRITE_BUFFER: usize = 256 << 10;
/// The fewest bytes an entry takes in the file: its 8-byte frame header
/// and a `SnapshotEntry` of a one-byte key (tag, length, byte).
const MIN_ENTRY_LEN: u64 = 8 + 3;
/// The reader fetches the file in chunks of this size.
const READ_CHUNK: usize = 8 << 20;

/// Name of the finished snapshot of `seq`.
pub(crate) fn file_name(seq: Lsn) -> String {
    format!("snapshot-{seq:020}.snap")
}

/// Name of the temporary file a snapshot of `seq` is written to.
pub(crate) fn temp_name(seq: Lsn) -> String {
    format!("snapshot-{seq:020}.tmp")
}

/// What a directory entry of the snapshot directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// A finished snapshot of this LSN.
    Snapshot(Lsn),
    /// A leftover of a checkpoint that did not finish.
    Temp(Lsn),
}

/// Parses a file name of the snapshot directory; `None` for foreign files,
/// which the store leaves alone.
pub(crate) fn parse_name(name: &str) -> Option<FileKind> {
    let rest = name.strip_prefix("snapshot-")?;
    let (digits, kind) = if let Some(d) = rest.strip_suffix(".snap") {
        (d, true)
    } else {
        (rest.strip_suffix(".tmp")?, false)
    };
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seq = digits.parse().ok()?;
    Some(if kind {
        FileKind::Snapshot(seq)
    } else {
        FileKind::Temp(seq)
    })
}

/// The snapshot directory's entries that are ours.
pub(crate) fn list(vfs: &dyn Vfs, dir: &Path) -> Result<Vec<FileKind>> {
    let names = vfs
        .list_dir(dir)
        .map_err(|e| Error::io("list snapshot directory", dir, e))?;
    Ok(names.iter().filter_map(|n| parse_name(n)).collect())
}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn read_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Writes one snapshot file. Entries are buffered in memory and written with
/// positional writes; nothing is visible under the final name until the
/// caller renames the finished, synced file.
pub(crate) struct SnapshotWriter {
    file: Box<dyn VfsFile>,
    path: PathBuf,
    /// File offset where the next buffered byte goes.
    offset: u64,
    buf: Vec<u8>,
    /// crc32 of every entry byte written or buffered so far.
    entries_crc: crc32fast::Hasher,
    count: u64,
    /// Last key added, to enforce the ascending order the reader checks.
    last_key: Option<Box<[u8]>>,
}

impl SnapshotWriter {
    /// Creates `path`, which must not exist.
    pub(crate) fn create(vfs: &dyn Vfs, path: &Path) -> Result<SnapshotWriter> {
        let file = vfs
            .create_new(path)
            .map_err(|e| Error::io("create snapshot", path, e))?;
        Ok(SnapshotWriter {
            file,
            path: path.to_path_buf(),
            offset: HEADER_REGION as u64,
            buf: Vec::with_capacity(WRITE_BUFFER + 4096),
            entries_crc: crc32fast::Hasher::new(),
            count: 0,
            last_key: None,
        })
    }

    /// Whether the buffer is due to be written.
    pub(crate) fn buffer_full(&self) -> bool {
        self.buf.len() >= WRITE_BUFFER
    }

    /// Appends one entry to the buffer. Keys must come in strictly ascending
    /// order (the caller copies the ordered map): a violation is a bug, and is
    /// refused here rather than written into a file the reader would reject.
    pub(crate) fn add(&mut self, entry: &Entry) -> Result<()> {
        self.add_parts(entry.key(), entry.value(), entry.seq(), entry.deadline())
    }

    /// [`SnapshotWriter::add`] from the parts of an entry.
    pub(crate) fn add_parts(
        &mut self,
        key: &[u8],
        value: &[u8],
        seq: Lsn,
        deadline: Option<u64>,
    ) -> Result<()> {
        if let Some(last) = &self.last_key
            && **last >= *key
        {
            return Err(Error::Unavailable(
                "internal error: snapshot keys out of order".into(),
            ));
        }
        let start = self.buf.len();
        // Reserve the frame header; fill it in once the payload length is known.
        self.buf.extend_from_slice(&[0u8; 8]);
        encode_key(1, WireType::LengthDelimited, &mut self.buf);
        encode_varint(key.len() as u64, &mut self.buf);
        self.buf.extend_from_slice(key);
        if !value.is_empty() {
            encode_key(2, WireType::LengthDelimited, &mut self.buf);
            encode_varint(value.len() as u64, &mut self.buf);
            self.buf.extend_from_slice(value);
        }
        if seq != 0 {
            encode_key(3, WireType::Varint, &mut self.buf);
            encode_varint(seq, &mut self.buf);
        }
        if let Some(d) = deadline.filter(|&d| d != 0) {
            encode_key(4, WireType::Varint, &mut self.buf);
            encode_varint(d, &mut self.buf);
        }
        let len = (self.buf.len() - start - 8) as u32;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&len.to_le_bytes());
        crc.update(&self.buf[start + 8..]);
        let crc = crc.finalize();
        self.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        self.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        self.entries_crc.update(&self.buf[start..]);
        self.count += 1;
        self.last_key = Some(key.into());
        Ok(())
    }

    /// Writes the buffered entries to the file.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all_at(&self.buf, self.offset)
            .map_err(|e| Error::io("write snapshot", &self.path, e))?;
        self.offset += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Bytes of entries written to the file so far (buffered ones and the
    /// header region not counted).
    pub(crate) fn written(&self) -> u64 {
        self.offset - HEADER_REGION as u64
    }

    /// Syncs what has been written so far. The checkpoint calls this after
    /// every buffer so that the snapshot's dirty data never piles up: one
    /// writeback of the whole file at the end would make every log sync that
    /// runs meanwhile wait behind it (the device queue, and on ext4 the
    /// journal commit, are shared). The file is still a temp file, so this
    /// promises nothing about it; [`SnapshotWriter::finish`] makes it durable.
    pub(crate) fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io("sync snapshot", &self.path, e))
    }

    /// Writes the header and trailer and syncs the file. Returns the number
    /// of entries written.
    pub(crate) fn finish(self, seq: Lsn, created_ms: u64) -> Result<u64> {
        self.finish_unsynced(seq, created_ms)?.sync()
    }

    /// As [`SnapshotWriter::finish`] without the final sync, which the
    /// returned [`UnsyncedSnapshot`] does.
    pub(crate) fn finish_unsynced(mut self, seq: Lsn, created_ms: u64) -> Result<UnsyncedSnapshot> {
        self.flush()?;
        let header = SnapshotHeader {
            version: FORMAT_VERSION,
            seq,
            entry_count: self.count,
            created_ms,
        }
        .encode_to_vec();
        // At most 4 fields of <= 11 bytes each: always fits the region.
        debug_assert!(HEADER_PREFIX + header.len() <= HEADER_REGION);
        let mut region = Vec::with_capacity(HEADER_REGION);
        region.extend_from_slice(MAGIC);
        put_u32(&mut region, header.len() as u32);
        let mut hcrc = crc32fast::Hasher::new();
        hcrc.update(&(header.len() as u32).to_le_bytes());
        hcrc.update(&header);
        put_u32(&mut region, hcrc.finalize());
        region.extend_from_slice(&header);
        region.resize(HEADER_REGION, 0);

        let mut trailer = Vec::with_capacity(TRAILER_LEN);
        trailer.extend_from_slice(TRAILER_MAGIC);
        trailer.extend_from_slice(&self.count.to_le_bytes());
        // File checksum: header region, then entries (hashed as they were
        // produced), then the trailer up to the checksum itself.
        let mut file_crc = crc32fast::Hasher::new();
        file_crc.update(&region);
        file_crc.combine(&self.entries_crc);
        file_crc.update(&trailer);
        put_u32(&mut trailer, file_crc.finalize());

        self.file
            .write_all_at(&trailer, self.offset)
            .map_err(|e| Error::io("write snapshot", &self.path, e))?;
        self.file
            .write_all_at(&region, 0)
            .map_err(|e| Error::io("write snapshot", &self.path, e))?;
        Ok(UnsyncedSnapshot {
            file: self.file,
            path: self.path,
            entries: self.count,
        })
    }
}

/// A snapshot file written in full, not yet durable:
/// [`UnsyncedSnapshot::sync`] makes it so, and only then may it be renamed
/// into place (see [`crate::replica::write_begun_snapshot`]).
#[must_use = "a snapshot is not durable until it is synced"]
pub struct UnsyncedSnapshot {
    file: Box<dyn VfsFile>,
    path: PathBuf,
    entries: u64,
}

impl UnsyncedSnapshot {
    /// Syncs the file; returns the number of entries it holds.
    pub fn sync(self) -> Result<u64> {
        self.file
            .sync_data()
            .map_err(|e| Error::io("sync snapshot", &self.path, e))?;
        Ok(self.entries)
    }
}

impl std::fmt::Debug for UnsyncedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnsyncedSnapshot")
            .field("path", &self.path)
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

/// Reads a file in chunks, handing out `Bytes` slices so that decoded keys
/// and values point into the chunk instead of being copied one by one.
struct ChunkReader<'a> {
    file: &'a dyn VfsFile,
    path: &'a Path,
    /// File offset of `buf[0]`.
    buf_offset: u64,
    buf: Bytes,
    /// Next file offset to read from.
    next_read: u64,
    /// Reading stops here.
    end: u64,
}

impl ChunkReader<'_> {
    /// Makes at least `n` bytes available in `buf`; `false` if fewer than `n`
    /// bytes remain before `end`.
    fn ensure(&mut self, n: usize) -> Result<bool> {
        if self.buf.len() >= n {
            return Ok(true);
        }
        let remaining = self.end - self.next_read;
        let missing = (n - self.buf.len()) as u64;
        if missing > remaining {
            return Ok(false);
        }
        // `n` is bounded by what the file holds, so this never allocates more
        // than the file's size, whatever a damaged length field says.
        let want = missing.max(READ_CHUNK as u64).min(remaining) as usize;
        let old = self.buf.len();
        let mut v = Vec::with_capacity(old + want);
        v.extend_from_slice(&self.buf);
        v.resize(old + want, 0);
        read_exact_at(self.file, &mut v[old..], self.next_read, self.path)?;
        self.next_read += want as u64;
        self.buf = Bytes::from(v);
        Ok(true)
    }

    fn take(&mut self, n: usize) -> Bytes {
        self.buf_offset += n as u64;
        self.buf.split_to(n)
    }
}

fn read_exact_at(
    file: &dyn VfsFile,
    mut buf: &mut [u8],
    mut offset: u64,
    path: &Path,
) -> Result<()> {
    while !buf.is_empty() {
        let n = file
            .read_at(buf, offset)
            .map_err(|e| Error::io("read snapshot", path, e))?;
        if n == 0 {
            return Err(Error::io(
                "read snapshot",
                path,
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            ));
        }
        buf = &mut buf[n..];
        offset += n as u64;
    }
    Ok(())
}

/// Reads and checks the header of the snapshot `file` (at `path`, `len`
/// bytes long): returns the header region as read (it counts in the file
/// checksum) and the decoded header.
pub(crate) fn read_header(
    file: &dyn VfsFile,
    path: &Path,
    len: u64,
) -> Result<([u8; HEADER_REGION], SnapshotHeader)> {
    let corrupt = |offset: u64, reason: String| Error::CorruptSnapshot {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    if len < (HEADER_REGION + TRAILER_LEN) as u64 {
        return Err(corrupt(0, format!("file of {len} bytes is too short")));
    }

    let mut region = [0u8; HEADER_REGION];
    read_exact_at(file, &mut region, 0, path)?;
    if &region[..8] != MAGIC {
        return Err(corrupt(0, "not a snapshot file (bad magic)".into()));
    }
    let hlen = read_u32(&region[8..]) as usize;
    if HEADER_PREFIX + hlen > HEADER_REGION {
        return Err(corrupt(8, format!("header length {hlen} is too large")));
    }
    let header_bytes = &region[HEADER_PREFIX..HEADER_PREFIX + hlen];
    let mut hcrc = crc32fast::Hasher::new();
    hcrc.update(&(hlen as u32).to_le_bytes());
    hcrc.update(header_bytes);
    if hcrc.finalize() != read_u32(&region[12..]) {
        return Err(corrupt(8, "header checksum mismatch".into()));
    }
    let header = SnapshotHeader::decode(header_bytes)
        .map_err(|e| corrupt(HEADER_PREFIX as u64, format!("undecodable header: {e}")))?;
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&header.version) {
        return Err(corrupt(
            HEADER_PREFIX as u64,
            format!(
                "format version {} is not supported (this build reads \
                 {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION})",
                header.version
            ),
        ));
    }
    // The log goes on at `seq + 1`, which must be an LSN: a log never
    // gives `Lsn::MAX` (wal-core's `Error::LsnExhausted`).
    if header.seq == Lsn::MAX {
        return Err(corrupt(
            HEADER_PREFIX as u64,
            format!(
                "header says seq {}, past the last LSN a log gives",
                header.seq
            ),
        ));
    }
    Ok((region, header))
}

/// A snapshot read back and verified.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The state it holds; `last_applied` is the snapshot's seq.
    pub(crate) state: State,
    /// Its entry count.
    pub(crate) entries: u64,
}

/// Reads and verifies the snapshot of `seq` at `path`. Any damage (a bad
/// checksum, a length that runs past the end, unordered keys, a count or seq
/// that disagrees) is [`Error::CorruptSnapshot`]; nothing of a damaged file
/// is returned.
pub(crate) fn load(vfs: &Arc<dyn Vfs>, path: &Path, seq: Lsn) -> Result<Loaded> {
    load_checked(vfs, path, Some(seq))
}

/// As [`load`], for a file whose name says nothing (a backup): the LSN it
/// covers is its header's, in [`Loaded::state`]'s `last_applied`.
pub(crate) fn load_any(vfs: &Arc<dyn Vfs>, path: &Path) -> Result<Loaded> {
    load_checked(vfs, path, None)
}

fn load_checked(vfs: &Arc<dyn Vfs>, path: &Path, expect: Option<Lsn>) -> Result<Loaded> {
    let corrupt = |offset: u64, reason: String| Error::CorruptSnapshot {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let file = vfs
        .open_read(path)
        .map_err(|e| Error::io("open snapshot", path, e))?;
    let len = file
        .len()
        .map_err(|e| Error::io("stat snapshot", path, e))?;
    let (region, header) = read_header(&*file, path, len)?;
    if let Some(seq) = expect
        && header.seq != seq
    {
        return Err(corrupt(
            HEADER_PREFIX as u64,
            format!("header says seq {}, the file name says {seq}", header.seq),
        ));
    }
    let seq = header.seq;
    let mut file_crc = crc32fast::Hasher::new();
    file_crc.update(&region);

    let trailer_at = len - TRAILER_LEN as u64;
    let mut reader = ChunkReader {
        file: &*file,
        path,
        buf_offset: HEADER_REGION as u64,
        buf: Bytes::new(),
        next_read: HEADER_REGION as u64,
        end: trailer_at,
    };
    // The header's count is not trusted until the trailer's checksum
    // agrees: reserve no more entries than the bytes between header and
    // trailer can hold, so a lying count costs nothing.
    let fit = (trailer_at - HEADER_REGION as u64) / MIN_ENTRY_LEN;
    let mut entries: Vec<Entry> = Vec::with_capacity(header.entry_count.min(fit) as usize);
    let mut prev_key = Bytes::new();
    while reader.buf_offset < trailer_at {
        let at = reader.buf_offset;
        if !reader.ensure(8)? {
            return Err(corrupt(at, "partial entry header".into()));
        }
        let plen = read_u32(&reader.buf) as usize;
        let pcrc = read_u32(&reader.buf[4..]);
        if !reader.ensure(8 + plen)? {
            return Err(corrupt(
                at,
                format!("entry length {plen} runs past the end"),
            ));
        }
        let frame = reader.take(8 + plen);
        file_crc.update(&frame);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&frame[..4]);
        crc.update(&frame[8..]);
        if crc.finalize() != pcrc {
            return Err(corrupt(at, "entry checksum mismatch".into()));
        }
        let entry = SnapshotEntry::decode(frame.slice(8..))
            .map_err(|e| corrupt(at, format!("undecodable entry: {e}")))?;
        if entry.key.is_empty() || (!entries.is_empty() && entry.key <= prev_key) {
            return Err(corrupt(at, "keys not strictly ascending".into()));
        }
        let (version, deadline) = if header.version == 1 {
            (seq, None)
        } else {
            (
                entry.seq,
                (entry.expires_at_ms != 0).then_some(entry.expires_at_ms),
            )
        };
        entries.push(Entry::new(&entry.key, &entry.value, version, deadline));
        prev_key = entry.key;
    }
    drop(prev_key);

    let mut trailer = [0u8; TRAILER_LEN];
    read_exact_at(&*file, &mut trailer, trailer_at, path)?;
    if &trailer[..8] != TRAILER_MAGIC {
        return Err(corrupt(trailer_at, "bad trailer magic".into()));
    }
    file_crc.update(&trailer[..16]);
    if file_crc.finalize() != read_u32(&trailer[16..]) {
        return Err(corrupt(trailer_at + 16, "file checksum mismatch".into()));
    }
    let count = read_u64(&trailer[8..]);
    if count != entries.len() as u64 || header.entry_count != count {
        return Err(corrupt(
            trailer_at + 8,
            format!(
                "entry count mismatch: trailer {count}, header {}, found {}",
                header.entry_count,
                entries.len()
            ),
        ));
    }
    let mut state = State::from_sorted(entries);
    state.set_applied(seq);
    Ok(Loaded {
        state,
        entries: count,
    })
}
