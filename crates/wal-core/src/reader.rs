//! Reading segments: a buffered positional reader shared by recovery and
//! iteration, and [`WalIter`].

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::{self, HeaderError, RecordError, RecordHeader};
use crate::vfs::{Vfs, VfsFile};
use crate::{Lsn, Record};

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
        let offset = self.pos;
        if offset == self.file_len {
            return Ok(Step::End);
        }
        let header = match self.bytes_at(offset, format::RECORD_HEADER_LEN)? {
            Some(raw) => {
                let mut h = [0u8; format::RECORD_HEADER_LEN];
                h.copy_from_slice(raw);
                RecordHeader::parse(&h)
            }
            None => {
                return Ok(Step::Bad {
                    offset,
                    error: RecordError::Incomplete,
                });
            }
        };
        if let Err(error) = header.check_len(self.max_record_size) {
            return Ok(Step::Bad { offset, error });
        }
        let len = header.len as usize;
        let Some(start) = self.fill(offset, format::RECORD_HEADER_LEN + len)? else {
            return Ok(Step::Bad {
                offset,
                error: RecordError::Incomplete,
            });
        };
        let payload_start = start + format::RECORD_HEADER_LEN;
        if let Err(error) = header.verify(&self.buf[payload_start..payload_start + len]) {
            return Ok(Step::Bad { offset, error });
        }
        self.pos = offset + format::framed_len(len);
        Ok(Step::Record {
            offset,
            lsn: header.lsn,
            flags: header.flags,
            payload: &self.buf[payload_start..payload_start + len],
        })
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
        }
    }

    fn corrupt(&mut self, segment: PathBuf, offset: u64, reason: String) -> Error {
        self.done = true;
        Error::Corrupt {
            segment,
            offset,
            reason,
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

    fn step(&mut self) -> Result<Record> {
        loop {
            if self.reader.is_none() {
                self.open_next_segment()?;
            }
            let Some((reader, path)) = self.reader.as_mut() else {
                continue;
            };
            let step = reader
                .next_step()
                .map_err(Error::io("read segment", path.clone()));
            let (offset, lsn, payload) = match step {
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
                Ok(Step::End) => {
                    self.reader = None;
                    continue;
                }
                Ok(Step::Bad { offset, error }) => {
                    let path = path.clone();
                    return Err(self.corrupt(path, offset, error.describe()));
                }
                Ok(Step::Record {
                    offset,
                    lsn,
                    payload,
                    ..
                }) => (offset, lsn, payload.to_vec()),
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
            self.next += 1;
            return Ok(Record { lsn, data: payload });
        }
    }
}

impl Iterator for WalIter {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.next >= self.end {
            return None;
        }
        Some(self.step())
    }
}
