//! The only place where bytes on a socket become frames and frames become
//! bytes: [`FrameReader`] reads requests with the idle and frame timeouts,
//! [`FrameWriter`] batches responses and writes them out.

use std::io;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use kv_proto::{CodecError, ErrorCode, Response, ServerCodec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::codec::{Decoder, Encoder};

use crate::tls::{ReadHalf, WriteHalf};

/// Initial read buffer: enough for many small pipelined requests per read.
const READ_BUFFER: usize = 16 << 10;

/// A buffer that grew past this for one large frame is given back once it
/// is empty, so that a connection that sent one 8 MiB put does not hold
/// 8 MiB for the rest of its life.
const SHRINK_ABOVE: usize = 4 * READ_BUFFER;

/// Replaces `buffer` with a fresh small one if it is empty and grew large,
/// or just gave out a large frame: `BytesMut` would otherwise take the
/// large allocation back at its next `reserve` once the frame is dropped.
/// (Decoded requests may still share the old allocation; it is freed when
/// they are.)
fn shrink_if_grown(buffer: &mut BytesMut, consumed: usize) {
    if buffer.is_empty() && (buffer.capacity() > SHRINK_ABOVE || consumed > SHRINK_ABOVE) {
        *buffer = BytesMut::with_capacity(READ_BUFFER);
    }
}

/// Why a connection stopped delivering requests.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// A frame header declared more than the maximum frame size; the body
    /// was not read.
    TooLarge {
        /// Declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Nothing arrived for the idle timeout.
    Idle,
    /// A started frame did not complete within the frame timeout.
    SlowFrame,
    /// The peer closed in the middle of a frame.
    Truncated,
    /// The socket failed.
    Io(io::Error),
}

/// One decoded item: a request, or a frame whose body is not a `Request`.
pub(crate) type Inbound = <ServerCodec as Decoder>::Item;

/// Reads frames from a connection.
#[derive(Debug)]
pub(crate) struct FrameReader {
    socket: ReadHalf,
    buffer: BytesMut,
    codec: ServerCodec,
    /// When the first byte of the frame now in `buffer` arrived; `None`
    /// while `buffer` holds no partial frame. Bounds how long a frame may
    /// take (a client trickling bytes must not hold a connection forever).
    frame_started: Option<Instant>,
    idle_timeout: Duration,
    frame_timeout: Duration,
}

impl FrameReader {
    pub(crate) fn new(
        socket: ReadHalf,
        max_frame: usize,
        idle_timeout: Duration,
        frame_timeout: Duration,
    ) -> Self {
        FrameReader {
            socket,
            buffer: BytesMut::with_capacity(READ_BUFFER),
            codec: ServerCodec::new(max_frame),
            frame_started: None,
            idle_timeout,
            frame_timeout,
        }
    }

    /// The length of the next frame's body, once its 4-byte header has
    /// arrived, reading the socket only until it has; `Ok(None)` when the
    /// peer closed between frames. A length over the maximum frame is
    /// [`ReadError::TooLarge`], with nothing of the body read. The caller
    /// charges the length to the in-flight budget, then reads the frame with
    /// [`FrameReader::next`].
    ///
    /// Cancel safe, as [`FrameReader::next`].
    pub(crate) async fn next_len(&mut self) -> Result<Option<usize>, ReadError> {
        loop {
            if let Some(len) = self.buffered_len() {
                if len > self.codec.max_frame_size() {
                    return Err(ReadError::TooLarge {
                        len,
                        max: self.codec.max_frame_size(),
                    });
                }
                return Ok(Some(len));
            }
            if !self.read_some().await? {
                return Ok(None);
            }
        }
    }

    /// The body length the next frame's header declares, if the header is
    /// buffered.
    pub(crate) fn buffered_len(&self) -> Option<usize> {
        self.buffer
            .first_chunk::<4>()
            .map(|header| u32::from_be_bytes(*header) as usize)
    }

    /// Whether a whole frame (header and body) is buffered: the next one
    /// needs no read of the socket.
    pub(crate) fn has_whole_frame(&self) -> bool {
        self.buffered_len()
            .is_some_and(|len| self.buffer.len() >= 4 + len)
    }

    /// Restarts the frame timeout of the frame now in the buffer: the time
    /// the server spent waiting for its in-flight budget is not the peer's.
    pub(crate) fn restart_frame_clock(&mut self) {
        if self.frame_started.is_some() {
            self.frame_started = Some(Instant::now());
        }
    }

    /// The next frame; `Ok(None)` when the peer closed between frames.
    ///
    /// Cancel safe: the only await is one socket read into the buffer, so a
    /// caller may drop this future (on shutdown) without losing bytes.
    pub(crate) async fn next(&mut self) -> Result<Option<Inbound>, ReadError> {
        loop {
            if let Some(item) = self.next_buffered()? {
                return Ok(Some(item));
            }
            if !self.read_some().await? {
                return Ok(None);
            }
        }
    }

    /// One socket read into the buffer, within the idle timeout (between
    /// frames) or what is left of the frame timeout (inside one). `false`
    /// when the peer closed between frames.
    ///
    /// The read is bounded: while no header is buffered, to [`READ_BUFFER`]
    /// bytes in the buffer; once one is, to the whole frame (or
    /// [`READ_BUFFER`] if that is more), with room reserved for exactly the
    /// frame. So the buffer holds at most one frame plus [`READ_BUFFER`]
    /// bytes that no one has charged to the in-flight budget yet, whatever
    /// room an earlier, larger frame left in it.
    async fn read_some(&mut self) -> Result<bool, ReadError> {
        let max = self.codec.max_frame_size();
        let frame_end = self
            .buffered_len()
            .map_or(0, |len| len.min(max).saturating_add(4));
        let target = frame_end.max(READ_BUFFER);
        if frame_end > self.buffer.capacity() {
            self.buffer.reserve(frame_end - self.buffer.len());
        }
        // Never 0 here: a call comes only when the buffer lacks a whole
        // frame, so it holds less than `frame_end` (and, with no header,
        // fewer than 4 bytes).
        let room = target.saturating_sub(self.buffer.len()).max(1);
        let mut limited = (&mut self.buffer).limit(room);
        // `timeout` rather than `timeout_at(start + limit)`: a limit too
        // large for the clock means no limit, not an overflow panic.
        let read = match self.frame_started {
            Some(started) => {
                let left = self.frame_timeout.saturating_sub(started.elapsed());
                tokio::time::timeout(left, self.socket.read_buf(&mut limited))
            }
            None => tokio::time::timeout(self.idle_timeout, self.socket.read_buf(&mut limited)),
        };
        match read.await {
            Err(_elapsed) if self.frame_started.is_some() => Err(ReadError::SlowFrame),
            Err(_elapsed) => Err(ReadError::Idle),
            Ok(Ok(0)) if self.buffer.is_empty() => Ok(false),
            Ok(Ok(0)) => Err(ReadError::Truncated),
            // A TLS client that closed without a close_notify (one that
            // exits or drops its connection) between frames has closed as a
            // plain one does; inside a frame, truncated.
            Ok(Err(err)) if err.kind() == io::ErrorKind::UnexpectedEof => {
                if self.buffer.is_empty() {
                    Ok(false)
                } else {
                    Err(ReadError::Truncated)
                }
            }
            Ok(Ok(_)) => {
                if self.frame_started.is_none() {
                    self.frame_started = Some(Instant::now());
                }
                Ok(true)
            }
            Ok(Err(err)) => Err(ReadError::Io(err)),
        }
    }

    /// The next whole frame already in the buffer, without reading the
    /// socket; `Ok(None)` when the buffer holds no whole frame. On shutdown
    /// this drains requests that were read but not yet decoded, so that they
    /// are answered too.
    pub(crate) fn next_buffered(&mut self) -> Result<Option<Inbound>, ReadError> {
        let before = self.buffer.len();
        match self.codec.decode(&mut self.buffer) {
            Ok(Some(item)) => {
                // Bytes already buffered belong to the next frame, which
                // therefore started now.
                self.frame_started = (!self.buffer.is_empty()).then(Instant::now);
                let consumed = before - self.buffer.len();
                shrink_if_grown(&mut self.buffer, consumed);
                Ok(Some(item))
            }
            Ok(None) => Ok(None),
            Err(CodecError::FrameTooLarge { len, max }) => Err(ReadError::TooLarge { len, max }),
            Err(CodecError::Io(err)) => Err(ReadError::Io(err)),
            Err(other) => Err(ReadError::Io(io::Error::other(other.to_string()))),
        }
    }
}

/// Writes responses, batching those that are ready together into one
/// socket write.
#[derive(Debug)]
pub(crate) struct FrameWriter {
    socket: WriteHalf,
    buffer: BytesMut,
    codec: ServerCodec,
    /// Longest one flush may take. A client that stops reading its answers
    /// must not hold a connection (and its permit) forever, nor stall a
    /// graceful shutdown.
    write_timeout: Duration,
}

/// Above this many buffered bytes the writer flushes even if more responses
/// are ready, bounding memory per connection.
pub(crate) const FLUSH_THRESHOLD: usize = 64 << 10;

impl FrameWriter {
    pub(crate) fn new(socket: WriteHalf, max_frame: usize, write_timeout: Duration) -> Self {
        FrameWriter {
            socket,
            buffer: BytesMut::with_capacity(READ_BUFFER),
            codec: ServerCodec::new(max_frame),
            write_timeout,
        }
    }

    /// Appends one response to the buffer (no I/O). A response too large
    /// for a frame (a huge key listing, say) is replaced by a TOO_LARGE
    /// error carrying the same id, so the client still gets one answer per
    /// request.
    pub(crate) fn push(&mut self, response: &Response) -> io::Result<()> {
        match self.codec.encode(response, &mut self.buffer) {
            Ok(()) => Ok(()),
            Err(CodecError::FrameTooLarge { len, max }) => {
                let refusal = Response::error(
                    response.id,
                    ErrorCode::TooLarge,
                    format!("response of {len} bytes exceeds the maximum frame size of {max}"),
                );
                self.codec
                    .encode(&refusal, &mut self.buffer)
                    .map_err(|err| io::Error::other(err.to_string()))
            }
            Err(err) => Err(io::Error::other(err.to_string())),
        }
    }

    /// Bytes waiting to be written.
    pub(crate) fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Writes out everything buffered, failing with `TimedOut` if the peer
    /// does not take it within the write timeout.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let written = self.buffer.len();
        let write = self.socket.write_all_buf(&mut self.buffer);
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(result) => {
                shrink_if_grown(&mut self.buffer, written);
                result
            }
            Err(_elapsed) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "peer is not reading its responses",
            )),
        }
    }

    /// Flushes, then closes the sending side (FIN), so the peer reads every
    /// response before it sees the end.
    pub(crate) async fn finish(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.socket.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_proto::{ClientCodec, PutRequest, Request, request::Command};

    /// The frame of a put of `value_len` bytes.
    fn put_frame(id: u64, value_len: usize) -> Vec<u8> {
        let request = Request::new(
            id,
            Command::Put(PutRequest {
                key: bytes::Bytes::from_static(b"k"),
                value: vec![1u8; value_len].into(),
                ..Default::default()
            }),
        );
        let mut frame = BytesMut::new();
        ClientCodec::new(8 << 20)
            .encode(&request, &mut frame)
            .unwrap();
        frame.to_vec()
    }

    #[tokio::test]
    async fn the_reader_reads_no_further_than_the_frame_it_was_given_room_for() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (read_half, _write_half) = crate::tls::split_plain(server);
        let max = 8 << 20;
        let mut reader = FrameReader::new(
            read_half,
            max,
            Duration::from_secs(30),
            Duration::from_secs(30),
        );
        // Three large frames and a small one, all sent before the server
        // reads any: the socket always has more to give than asked for.
        let big = 1 << 20;
        let mut sent = Vec::new();
        for id in 0..3 {
            sent.extend(put_frame(id, big));
        }
        sent.extend(put_frame(3, 10));
        let writing = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client
        });
        for id in 0..3u64 {
            let len = reader.next_len().await.unwrap().expect("a header");
            assert!(len > big);
            assert!(
                reader.buffer.len() <= READ_BUFFER,
                "{} bytes read before the frame was charged",
                reader.buffer.len()
            );
            let request = reader.next().await.unwrap().unwrap().unwrap();
            assert_eq!(request.id, id);
            assert!(
                reader.buffer.len() <= READ_BUFFER,
                "{} bytes of the next frame read with this one",
                reader.buffer.len()
            );
            assert!(
                reader.buffer.capacity() <= len + 4 + READ_BUFFER,
                "capacity {} for a frame of {len}",
                reader.buffer.capacity()
            );
        }
        let len = reader.next_len().await.unwrap().unwrap();
        assert!(len < 100);
        assert_eq!(reader.next().await.unwrap().unwrap().unwrap().id, 3);
        assert!(
            reader.buffer.capacity() <= SHRINK_ABOVE,
            "the buffer kept {} bytes after the large frames",
            reader.buffer.capacity()
        );
        drop(writing.await.unwrap());
        assert!(reader.next_len().await.unwrap().is_none(), "peer closed");
    }

    #[test]
    fn a_buffer_grown_for_one_frame_shrinks_once_empty() {
        let mut buffer = BytesMut::with_capacity(READ_BUFFER);
        buffer.extend_from_slice(&vec![7u8; 8 << 20]);
        assert!(buffer.capacity() >= 8 << 20);
        shrink_if_grown(&mut buffer, 0);
        assert!(buffer.capacity() >= 8 << 20, "shrunk while it held bytes");
        let frame = buffer.split_to(buffer.len());
        shrink_if_grown(&mut buffer, frame.len());
        drop(frame);
        // Without the fresh buffer, this reserve would take the 8 MiB
        // allocation back.
        buffer.reserve(1);
        assert!(buffer.capacity() <= SHRINK_ABOVE, "{}", buffer.capacity());
        let mut small = BytesMut::with_capacity(READ_BUFFER);
        small.extend_from_slice(b"x");
        let x = small.split_to(1);
        shrink_if_grown(&mut small, x.len());
        assert!(small.capacity() < READ_BUFFER, "a small buffer is kept");
    }
}
