//! Reading segments: a buffered positional reader shared by recovery and
//! iteration, and [`WalIter`].

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::format::{self, HeaderError, RecordError, RecordHeader};
use crate::segment::SegmentMeta;
use crate::vfs::{Vfs, VfsFile};
use crate::writer::lock;
use crate::{Lsn, Record};

/// How many `truncate_after` calls [`Truncations`] remembers; a reader
/// older than all of them is told its records may be gone.
const TRUNCATIONS_KEPT: usize = 256;

/// What readers check to notice `truncate_after` under them: an epoch,
/// bumped before a truncation changes any file, and the recent
/// truncations, so that a reader can tell whether a record it read may
/// have been removed (or replaced by a later append).
#[derive(Debug, Default)]
pub(crate) struct Truncations {
    epoch: AtomicU64,
    /// (epoch it started, LSN kept through), oldest first.
    recent: Mutex<VecDeque<(u64, Lsn)>>,
}

impl Truncations {
    /// The current epoch, taken by a reader before it looks at anything.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A `truncate_after(lsn)` is about to change the files.
    pub(crate) fn record(&self, lsn: Lsn) {
        let mut recent = lock(&self.recent);
        let epoch = self.epoch.load(Ordering::Relaxed) + 1;
        recent.push_back((epoch, lsn));
        if recent.len() > TRUNCATIONS_KEPT {
            recent.pop_front();
        }
        self.epoch.store(epoch, Ordering::Release);
    }

    /// Whether a truncation since `epoch` removed `lsn`. Called after the
    /// read, so that a read that saw changed bytes also sees the epoch that
    /// announced them. Conservative when the history is shorter than what
    /// happened since `epoch`.
    pub(crate) fn removed_since(&self, epoch: u64, lsn: Lsn) -> bool {
        if self.epoch.load(Ordering::Acquire) == epoch {
            return false;
        }
        let recent = lock(&self.recent);
        match recent.front() {
            Some(&(oldest, _)) if oldest <= epoch + 1 => {
                recent.iter().any(|&(at, kept)| at > epoch && lsn > kept)
            }
            _ => true,
        }
    }
}

/// Turns a record error met by a reader into the log's error: intact
/// records that this configuration or build cannot take get their own
/// errors, anything else is corruption.
pub(crate) fn record_error(path: &Path, offset: u64, error: RecordError) -> Error {
    match error {
        RecordError::UnknownFlags { lsn, flags } => Error::UnknownRecordFlags {
            segment: path.to_path_buf(),
            offset,
            lsn,
            flags,
        },
        RecordError::Oversized { lsn, len, max } => Error::RecordExceedsLimit {
            segment: path.to_path_buf(),
            offset,
            lsn,
            size: len,
            max,
        },
        other => Error::Corrupt {
            segment: path.to_path_buf(),
            offset,
            reason: other.describe(),
            cut_by: None,
        },
    }
}

/// A contiguous run of records in one segment, found through the index.
#[derive(Debug)]
pub(crate) struct Span {
    path: PathBuf,
    /// LSN of the first record.
    first_lsn: Lsn,
    /// Records in the span.
    count: usize,
    /// File offsets of the first byte and one past the last.
    bytes: Range<u64>,
}

/// Plans the reads of `[from, to)` through the segments' index: one span
/// per segment, stopping before the framed records would exceed
/// `max_bytes` (but with at least one record). Costs nothing but the
/// binary search and the walk over the offsets taken.
pub(crate) fn plan_spans(
    segments: &[SegmentMeta],
    from: Lsn,
    to: Lsn,
    max_bytes: usize,
) -> Vec<Span> {
    let mut spans = Vec::new();
    if from >= to {
        return spans;
    }
    let start = segments.partition_point(|s| s.end_lsn() <= from);
    let mut budget = max_bytes as u64;
    let mut lsn = from;
    for seg in &segments[start..] {
        if lsn >= to || lsn < seg.first_lsn {
            break;
        }
        let first = (lsn - seg.first_lsn) as usize;
        let last = ((to - seg.first_lsn) as usize).min(seg.offsets.len());
        if first >= last {
            break;
        }
        let begin = u64::from(seg.offsets[first]);
        let mut count = 0;
        let mut end = begin;
        for i in first..last {
            let next = seg.offsets.get(i + 1).map_or(seg.len, |&o| u64::from(o));
            let size = next.saturating_sub(u64::from(seg.offsets[i]));
            if size > budget && !(spans.is_empty() && count == 0) {
                break;
            }
            budget = budget.saturating_sub(size);
            end = next;
            count += 1;
        }
        if count == 0 {
            break;
        }
        spans.push(Span {
            path: seg.path.clone(),
            first_lsn: lsn,
            count,
            bytes: begin..end,
        });
        lsn += count as u64;
        if first + count < last || budget == 0 {
            break;
        }
    }
    spans
}

/// Reads planned spans, one positional read each, and verifies every
/// record (checksum, length limit, LSN). A segment that vanished (removed
/// by `truncate_before`) is [`Error::Truncated`].
pub(crate) fn read_spans(
    vfs: &dyn Vfs,
    spans: &[Span],
    max_record_size: u32,
) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for span in spans {
        let file = match vfs.open_read(&span.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::Truncated {
                    lsn: span.first_lsn,
                });
            }
            Err(e) => return Err(Error::io("open segment", &span.path)(e)),
        };
        let len = (span.bytes.end - span.bytes.start) as usize;
        let mut buf = vec![0u8; len];
        let got = read_full_at(file.as_ref(), &mut buf, span.bytes.start)
            .map_err(Error::io("read segment", &span.path))?;
        if got < len {
            // Cut under us since the index was read.
            return Err(Error::Truncated {
                lsn: span.first_lsn,
            });
        }
        let mut at = 0;
        for i in 0..span.count {
            let lsn = span.first_lsn + i as u64;
            let offset = span.bytes.start + at as u64;
            let record = format::decode_record(&buf[at..], max_record_size)
                .map_err(|e| record_error(&span.path, offset, e))?;
            if record.lsn != lsn {
                return Err(Error::Corrupt {
                    segment: span.path.clone(),
                    offset,
                    reason: format!("expected LSN {lsn}, found {}", record.lsn),
                    cut_by: None,
                });
            }
            out.push(Record {
                lsn,
                data: record.payload.to_vec(),
            });
            at += record.framed_len;
        }
    }
    Ok(out)
}

/// Bytes read from the file at a time when records are small.
const READ_CHUNK: usize = 64 << 10;

/// Reads `buf.len()` bytes at `offset` unless the file ends first; returns
/// how many bytes were read.
pub(crate) fn read_full_at(file: &dyn VfsFile, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// One step of reading a segment.
#[derive(Debug)]
pub(crate) enum Step<'a> {
    /// A record whose checksum matched.
    Record {
        /// Offset of its header in the file.
        offset: u64,
        /// Its LSN.
        lsn: Lsn,
        /// Its flags.
        flags: u8,
        /// Its payload.
        payload: &'a [u8],
    },
    /// The file ends exactly after the previous record.
    End,
    /// Something at `offset` is not a valid record.
    Bad {
        /// Offset of the bad record's header.
        offset: u64,
        /// Why.
        error: RecordError,
    },
}

/// [`Step`] with the payload as a range of the reader's buffer.
enum StepAt {
    Record {
        offset: u64,
        lsn: Lsn,
        flags: u8,
        payload: Range<usize>,
    },
    End,
    Bad {
        offset: u64,
        error: RecordError,
    },
}

/// Reads one segment front to back through a buffer.
///
/// The file length is taken once, at open: a reader of the active segment
/// never looks past what was written when it was opened.
pub(crate) struct SegmentReader {
    file: Box<dyn VfsFile>,
    file_len: u64,
    /// Offset of the next record header.
    pos: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_start: u64,
    max_record_size: u32,
}

impl fmt::Debug for SegmentReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentReader")
            .field("file_len", &self.file_len)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl SegmentReader {
    /// Wraps an open segment file; reading starts after the segment header.
    pub(crate) fn new(file: Box<dyn VfsFile>, max_record_size: u32) -> io::Result<SegmentReader> {
        let file_len = file.len()?;
        Ok(SegmentReader {
            file,
            file_len,
            pos: format::SEGMENT_HEADER_LEN as u64,
            buf: Vec::new(),
            buf_start: 0,
            max_record_size,
        })
    }

    /// The file length seen at open.
    pub(crate) fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Decodes the segment header and returns its first LSN.
    pub(crate) fn read_header(&mut self) -> io::Result<Result<Lsn, HeaderError>> {
        let len = format::SEGMENT_HEADER_LEN.min(self.file_len as usize);
        let bytes = self.bytes_at(0, len)?.unwrap_or_default().to_vec();
        Ok(format::decode_segment_header(&bytes))
    }

    /// Makes `n` bytes at `offset` available in the buffer and returns where
    /// they start in it, or `None` if the file (as of open) ends first. `n` is
    /// at most a record header plus the maximum record size, so the buffer
    /// stays bounded whatever the file claims.
    fn fill(&mut self, offset: u64, n: usize) -> io::Result<Option<usize>> {
        if offset + n as u64 > self.file_len {
            return Ok(None);
        }
        let buf_end = self.buf_start + self.buf.len() as u64;
        if offset < self.buf_start || offset + n as u64 > buf_end {
            let available = (self.file_len - offset) as usize;
            let want = n.max(READ_CHUNK).min(available);
            self.buf.resize(want, 0);
            let got = read_full_at(self.file.as_ref(), &mut self.buf, offset)?;
            self.buf.truncate(got);
            self.buf_start = offset;
            if got < n {
                // The file shrank under us since open.
                return Ok(None);
            }
        }
        Ok(Some((offset - self.buf_start) as usize))
    }

    /// `n` bytes at `offset`, as [`SegmentReader::fill`].
    fn bytes_at(&mut self, offset: u64, n: usize) -> io::Result<Option<&[u8]>> {
        Ok(self
            .fill(offset, n)?
            .map(|start| &self.buf[start..start + n]))
    }

    /// Reads the next record. A [`Step::Bad`] leaves the position at the bad
    /// record, so calling again returns the same answer.
    pub(crate) fn next_step(&mut self) -> io::Result<Step<'_>> {
        Ok(match self.next_step_at()? {
            StepAt::Record {
                offset,
                lsn,
                flags,
                payload,
            } => Step::Record {
                offset,
                lsn,
                flags,
                payload: &self.buf[payload],
            },
            StepAt::End => Step::End,
            StepAt::Bad { offset, error } => Step::Bad { offset, error },
        })
    }

    /// As [`SegmentReader::next_step`], but a record's payload is given as
    /// its range in the buffer (see [`SegmentReader::buffered`]), so that a
    /// caller looping over steps can borrow it after the loop.
    fn next_step_at(&mut self) -> io::Result<StepAt> {
        let offset = self.pos;
        if offset == self.file_len {
            return Ok(StepAt::End);
        }
        let header = match self.bytes_at(offset, format::RECORD_HEADER_LEN)? {
            Some(raw) => {
                let mut h = [0u8; format::RECORD_HEADER_LEN];
                h.copy_from_slice(raw);
                RecordHeader::parse(&h)
            }
            None => {
                return Ok(StepAt::Bad {
                    offset,
                    error: RecordError::Incomplete,
                });
            }
        };
        if let Err(error) = header.check_len(self.max_record_size) {
            let error = self.intact_oversized(offset, &header)?.unwrap_or(error);
            return Ok(StepAt::Bad { offset, error });
        }
        let len = header.len as usize;
        let Some(start) = self.fill(offset, format::RECORD_HEADER_LEN + len)? else {
            return Ok(StepAt::Bad {
                offset,
                error: RecordError::Incomplete,
            });
        };
        let payload = start + format::RECORD_HEADER_LEN..start + format::RECORD_HEADER_LEN + len;
        // Every payload handed out, by reference or copied, passed its CRC.
        if let Err(error) = header.verify(&self.buf[payload.clone()]) {
            return Ok(StepAt::Bad { offset, error });
        }
        self.pos = offset + format::framed_len(len);
        Ok(StepAt::Record {
            offset,
            lsn: header.lsn,
            flags: header.flags,
            payload,
        })
    }

    /// Whether the record at `offset`, whose length exceeds the maximum
    /// record size, is nevertheless intact: its checksum is computed over
    /// the file in chunks, so nothing of the claimed size is allocated.
    /// Returns [`RecordError::Oversized`] if so (the log was written under
    /// a larger limit, and the record must not be cut), `None` if it is
    /// damage. A length beyond the format's limit or the file's end is
    /// damage without reading anything.
    fn intact_oversized(
        &mut self,
        offset: u64,
        header: &RecordHeader,
    ) -> io::Result<Option<RecordError>> {
        const CHUNK: usize = 1 << 20;
        let payload_at = offset + format::RECORD_HEADER_LEN as u64;
        if header.len > format::MAX_RECORD_SIZE_LIMIT
            || payload_at + u64::from(header.len) > self.file_len
        {
            return Ok(None);
        }
        let mut hasher = header.checksum_start();
        let mut chunk = vec![0u8; CHUNK.min(header.len as usize)];
        let mut at = payload_at;
        let end = payload_at + u64::from(header.len);
        while at < end {
            let want = CHUNK.min((end - at) as usize);
            let got = read_full_at(self.file.as_ref(), &mut chunk[..want], at)?;
            if got < want {
                return Ok(None);
            }
            hasher.update(&chunk[..got]);
            at += got as u64;
        }
        Ok(
            (hasher.finalize() == header.crc).then_some(RecordError::Oversized {
                lsn: header.lsn,
                len: header.len,
                max: self.max_record_size,
            }),
        )
    }

    /// The buffered bytes in `range`, as returned by the last
    /// [`SegmentReader::next_step_at`] (valid until the next read).
    fn buffered(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Whether `[offset, file_len)` holds only zero bytes (read in chunks,
    /// so a large preallocated tail costs no large buffer).
    pub(crate) fn zeroes_from(&mut self, offset: u64) -> io::Result<bool> {
        const CHUNK: usize = 1 << 20;
        let mut chunk = vec![0u8; CHUNK.min(self.file_len.saturating_sub(offset) as usize)];
        let mut at = offset;
        while at < self.file_len {
            let want = CHUNK.min((self.file_len - at) as usize);
            let got = read_full_at(self.file.as_ref(), &mut chunk[..want], at)?;
            if !is_zero(&chunk[..got]) {
                return Ok(false);
            }
            if got < want {
                // The file shrank since it was opened: what is gone is not
                // a record either.
                break;
            }
            at += got as u64;
        }
        Ok(true)
    }

    /// Reads `[offset, file_len)` into memory (for the tail scan of
    /// recovery).
    pub(crate) fn read_rest(&mut self, offset: u64) -> io::Result<Vec<u8>> {
        let mut out = vec![0u8; self.file_len.saturating_sub(offset) as usize];
        let got = read_full_at(self.file.as_ref(), &mut out, offset)?;
        out.truncate(got);
        Ok(out)
    }
}

/// Whether `bytes` are all zero: compared with a zeroed block, which
/// compiles to `memcmp` (a byte-by-byte loop was the slower part of opening
/// a log whose active segment is tens of MiB of preallocated zeroes).
fn is_zero(bytes: &[u8]) -> bool {
    const ZEROES: [u8; 4096] = [0; 4096];
    bytes.chunks(ZEROES.len()).all(|c| c == &ZEROES[..c.len()])
}

/// A segment as the iterator sees it.
#[derive(Debug, Clone)]
pub(crate) struct SegmentRef {
    pub first_lsn: Lsn,
    pub path: PathBuf,
}

/// Iterator over records from some LSN, returned by [`crate::Wal::iter_from`].
///
/// It sees the records written before it was created and none after. It
/// reads the segment files directly, without holding any lock of the log,
/// so appends go on while it runs.
///
/// If [`crate::Wal::truncate_before`] deletes a segment the iterator has not
/// opened yet, the iterator yields one [`Error::Truncated`] and then ends.
/// A segment it already has open stays readable (the open file outlives
/// its directory entry).
pub struct WalIter {
    vfs: Arc<dyn Vfs>,
    /// Segments still to read, oldest first; the first may be open in
    /// `reader`.
    segments: std::collections::VecDeque<SegmentRef>,
    reader: Option<(SegmentReader, PathBuf)>,
    /// The next LSN to yield.
    next: Lsn,
    /// One past the last LSN to yield.
    end: Lsn,
    max_record_size: u32,
    done: bool,
    /// Made by [`WalIter::split_by_segment`]: `end` is where the next
    /// segment begins, so running out of segments before it is corruption.
    bounded: bool,
    /// Truncations to check each record against, from the epoch the
    /// iterator was made in.
    truncations: Option<(Arc<Truncations>, u64)>,
}

impl fmt::Debug for WalIter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalIter")
            .field("next", &self.next)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl WalIter {
    /// Iterates `[start, end)` over `segments` (oldest first; the first one
    /// holds `start`, if any record does).
    pub(crate) fn new(
        vfs: Arc<dyn Vfs>,
        segments: Vec<SegmentRef>,
        start: Lsn,
        end: Lsn,
        max_record_size: u32,
    ) -> WalIter {
        WalIter {
            vfs,
            segments: segments.into(),
            reader: None,
            next: start,
            end,
            max_record_size,
            done: start >= end,
            bounded: false,
            truncations: None,
        }
    }

    /// Makes the iterator check, after each record, that no
    /// `truncate_after` since `epoch` removed it.
    pub(crate) fn watching(mut self, truncations: Arc<Truncations>, epoch: u64) -> WalIter {
        self.truncations = Some((truncations, epoch));
        self
    }

    fn corrupt(&mut self, segment: PathBuf, offset: u64, reason: String) -> Error {
        self.done = true;
        Error::Corrupt {
            segment,
            offset,
            reason,
            cut_by: None,
        }
    }

    fn open_next_segment(&mut self) -> Result<()> {
        let Some(seg) = self.segments.pop_front() else {
            self.done = true;
            return Err(Error::Truncated { lsn: self.next });
        };
        let file = match self.vfs.open_read(&seg.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.done = true;
                return Err(Error::Truncated { lsn: self.next });
            }
            Err(e) => {
                self.done = true;
                return Err(Error::io("open segment", &seg.path)(e));
            }
        };
        let mut reader = SegmentReader::new(file, self.max_record_size)
            .map_err(Error::io("read segment", &seg.path))?;
        match reader
            .read_header()
            .map_err(Error::io("read segment", &seg.path))?
        {
            Ok(lsn) if lsn == seg.first_lsn => {}
            Ok(lsn) => {
                return Err(self.corrupt(
                    seg.path,
                    0,
                    format!(
                        "header says first LSN {lsn}, file name says {}",
                        seg.first_lsn
                    ),
                ));
            }
            Err(e) => return Err(self.corrupt(seg.path, 0, e.describe())),
        }
        self.reader = Some((reader, seg.path));
        Ok(())
    }

    /// Splits an iterator that has not yielded anything yet into one per
    /// segment, in LSN order, so that segments can be read in parallel.
    ///
    /// Together they yield the same records as `self` would, each
    /// range-checked and checksum-verified the same way; a segment that
    /// ends before the LSN at which the next begins is reported as
    /// [`Error::Corrupt`] by its iterator. An iterator that has started is
    /// returned whole.
    pub fn split_by_segment(self) -> Vec<WalIter> {
        if self.reader.is_some() || self.done || self.segments.len() < 2 {
            return vec![self];
        }
        let segments: Vec<SegmentRef> = self.segments.into();
        let mut parts = Vec::with_capacity(segments.len());
        for (i, seg) in segments.iter().enumerate() {
            let start = self.next.max(seg.first_lsn);
            let end = match segments.get(i + 1) {
                Some(next) => next.first_lsn.min(self.end),
                None => self.end,
            };
            let mut part = WalIter::new(
                Arc::clone(&self.vfs),
                vec![seg.clone()],
                start,
                end,
                self.max_record_size,
            );
            part.bounded = i + 1 < segments.len();
            part.truncations = self.truncations.clone();
            parts.push(part);
        }
        parts
    }

    /// Moves to the next record and returns its LSN and where its payload
    /// lies in the open segment's buffer.
    fn advance(&mut self) -> Result<(Lsn, Range<usize>)> {
        loop {
            if self.reader.is_none() {
                self.open_next_segment()?;
            }
            let Some((reader, path)) = self.reader.as_mut() else {
                continue;
            };
            let step = reader
                .next_step_at()
                .map_err(Error::io("read segment", path.clone()));
            let (offset, lsn, payload) = match step {
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
                Ok(StepAt::End) if self.bounded && self.segments.is_empty() => {
                    let (path, len) = (path.clone(), reader.file_len());
                    let next = self.next;
                    return Err(self.corrupt(
                        path,
                        len,
                        format!(
                            "the segment ends before LSN {next}, but the next one begins at LSN {}",
                            self.end
                        ),
                    ));
                }
                Ok(StepAt::End) => {
                    self.reader = None;
                    continue;
                }
                Ok(StepAt::Bad { offset, error }) => {
                    let path = path.clone();
                    self.done = true;
                    return Err(record_error(&path, offset, error));
                }
                Ok(StepAt::Record {
                    offset,
                    lsn,
                    payload,
                    ..
                }) => (offset, lsn, payload),
            };
            if lsn < self.next {
                // Skipping to the start LSN inside the first segment.
                continue;
            }
            if lsn != self.next {
                let path = path.clone();
                let expected = self.next;
                return Err(self.corrupt(
                    path,
                    offset,
                    format!("expected LSN {expected}, found {lsn}"),
                ));
            }
            if let Some((truncations, epoch)) = &self.truncations
                && truncations.removed_since(*epoch, lsn)
            {
                self.done = true;
                return Err(Error::Truncated { lsn });
            }
            self.next += 1;
            return Ok((lsn, payload));
        }
    }

    /// The payload that [`WalIter::advance`] just returned the range of.
    fn payload(&self, range: Range<usize>) -> &[u8] {
        match &self.reader {
            Some((reader, _)) => reader.buffered(range),
            // `advance` returns a record only from an open segment, and
            // nothing closes it before the next call.
            None => unreachable!("a record was returned with no segment open"),
        }
    }

    /// The next record, borrowed from the iterator's read buffer instead of
    /// copied into a [`Record`]: the zero-copy form of [`Iterator::next`]
    /// for callers that only look at each payload once, such as replay.
    ///
    /// Yields exactly what `next` would (same records, same checks: every
    /// payload's checksum is verified, LSNs must be dense), and the two may
    /// be mixed. The borrow ends before the next call.
    pub fn next_ref(&mut self) -> Option<Result<RecordRef<'_>>> {
        if self.done || self.next >= self.end {
            return None;
        }
        Some(match self.advance() {
            Ok((lsn, range)) => Ok(RecordRef {
                lsn,
                data: self.payload(range),
            }),
            Err(e) => Err(e),
        })
    }
}

/// One record borrowed from a [`WalIter`], returned by
/// [`WalIter::next_ref`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Its LSN.
    pub lsn: Lsn,
    /// Its payload, checksum verified.
    pub data: &'a [u8],
}

impl Iterator for WalIter {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.next >= self.end {
            return None;
        }
        Some(self.advance().map(|(lsn, range)| Record {
            lsn,
            data: self.payload(range).to_vec(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom, Write};

    use crate::{Error, Record, SyncPolicy, Wal, WalOptions};

    fn borrowed_from(wal: &Wal, start: u64) -> Vec<Record> {
        let mut iter = wal.iter_from(start).unwrap();
        let mut out = Vec::new();
        while let Some(rec) = iter.next_ref() {
            let rec = rec.unwrap();
            out.push(Record {
                lsn: rec.lsn,
                data: rec.data.to_vec(),
            });
        }
        out
    }

    #[test]
    fn next_ref_yields_what_next_does_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let options = WalOptions {
            // At most three records of up to 40 bytes a segment.
            segment_size: 32 + 3 * (20 + 40),
            sync_policy: SyncPolicy::Never,
            ..WalOptions::default()
        };
        let wal = Wal::open(dir.path(), options).unwrap();
        for i in 0..20u64 {
            wal.append(&vec![i as u8; (i as usize * 7) % 40]).unwrap();
        }
        for start in [0, 1, 5, 20, 21] {
            let owned: Vec<Record> = wal.iter_from(start).unwrap().map(|r| r.unwrap()).collect();
            assert_eq!(owned.len() as u64, 21 - start.clamp(1, 21));
            assert_eq!(borrowed_from(&wal, start), owned);
            let parts = wal.iter_from(start).unwrap().split_by_segment();
            if start <= 15 {
                assert!(parts.len() > 1, "from {start}: {} parts", parts.len());
            }
            let split: Vec<Record> = parts.into_iter().flatten().map(|r| r.unwrap()).collect();
            assert_eq!(split, owned);
        }
        let mut started = wal.iter_from(1).unwrap();
        assert_eq!(started.next_ref().unwrap().unwrap().lsn, 1);
        let parts = started.split_by_segment();
        assert_eq!(parts.len(), 1);
        let rest: Vec<u64> = parts
            .into_iter()
            .flatten()
            .map(|r| r.unwrap().lsn)
            .collect();
        assert_eq!(rest, (2..=20).collect::<Vec<_>>());
    }

    #[test]
    fn next_ref_verifies_every_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let options = WalOptions {
            sync_policy: SyncPolicy::Never,
            ..WalOptions::default()
        };
        let wal = Wal::open(dir.path(), options).unwrap();
        for i in 1..=3u8 {
            wal.append(&[i; 8]).unwrap();
        }
        wal.sync().unwrap();
        let segment = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "wal"))
            .unwrap();
        // Record 2's header starts after the 32-byte segment header and
        // record 1 (20-byte header + 8 bytes); flip a bit of its payload.
        let at = 32 + 28 + 20 + 3;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&segment)
            .unwrap();
        let mut byte = [0u8];
        file.seek(SeekFrom::Start(at)).unwrap();
        file.read_exact(&mut byte).unwrap();
        byte[0] ^= 0x10;
        file.seek(SeekFrom::Start(at)).unwrap();
        file.write_all(&byte).unwrap();
        drop(file);

        let mut iter = wal.iter_from(1).unwrap();
        let first = iter.next_ref().unwrap().unwrap();
        assert_eq!((first.lsn, first.data), (1, &[1u8; 8][..]));
        match iter.next_ref() {
            Some(Err(Error::Corrupt { offset, .. })) => assert_eq!(offset, 60),
            other => panic!("expected corruption at record 2, got {other:?}"),
        }
        assert!(iter.next_ref().is_none());
    }
}
