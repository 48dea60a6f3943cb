//! The length-prefixed frame codec shared by server and client.

use std::fmt;
use std::io;
use std::marker::PhantomData;

use bytes::{BufMut, BytesMut};
use prost::Message;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use crate::{Request, Response};

/// The largest frame body accepted by default: 8 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 8 * 1024 * 1024;

/// Bytes of the length prefix of a frame.
const HEADER_LEN: usize = 4;

/// While a frame is incomplete, the decoder asks for at most this much room
/// beyond what has arrived. The buffer thus grows with the bytes the peer
/// actually sends, never with the length it merely claims: a peer that
/// announces 8 MiB and then stalls costs about 64 KiB, not 8 MiB. (The
/// buffer may grow to twice what it holds plus this, since `BytesMut`
/// rounds a reservation up by doubling: at most about 2 × (bytes received
/// + 64 KiB).)
const MAX_RESERVE_AHEAD: usize = 64 * 1024;

/// Fatal errors of a frame stream: after one, the connection cannot be
/// resynchronised and must be closed.
///
/// A frame whose body does not decode as the expected message is *not* one
/// of these: [`FrameCodec`] yields it as `Ok(Some(Err(DecodeError)))`, since
/// the framing is intact and the next frame can still be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Reading or writing the underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// A frame's length exceeds the maximum frame size. On decode, nothing
    /// of the body has been read or allocated; on encode, nothing was
    /// written.
    #[error("frame of {len} bytes exceeds the maximum frame size of {max} bytes")]
    FrameTooLarge {
        /// The length of the frame body.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes of an incomplete frame)")]
    Truncated {
        /// How many bytes of the incomplete frame (header included) arrived.
        buffered: usize,
    },
    /// A message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(#[from] prost::EncodeError),
}

/// Reads frames holding `D` messages and writes frames holding `E` messages.
///
/// A frame is a 4-byte big-endian length, then that many bytes of one
/// protobuf message. Lengths above the maximum frame size are refused in
/// both directions.
///
/// As a [`Decoder`], an item is `Result<D, prost::DecodeError>`: a frame
/// whose body is not a valid `D` is reported in the item and the stream goes
/// on with the next frame. The decoder's error ([`CodecError`]) is fatal: an
/// I/O error, an oversized length, or a stream that ends inside a frame.
///
/// As an [`Encoder`], it takes `E` or `&E`. With both, a bare `flush()` or
/// `close()` on a `Framed` cannot tell which sink is meant; name the item
/// type: `SinkExt::<Response>::flush(&mut framed)`. (`send(x)` infers it
/// from `x`.)
pub struct FrameCodec<D, E> {
    /// Splits frames once one is wholly buffered (see `decode`).
    inner: LengthDelimitedCodec,
    max_frame_size: usize,
    // `fn(E) -> D`: the codec owns neither type, so it is Send + Sync and
    // Unpin whatever D and E are.
    _messages: PhantomData<fn(E) -> D>,
}

/// The server's codec: decodes [`Request`]s, encodes [`Response`]s.
pub type ServerCodec = FrameCodec<Request, Response>;

/// The client's codec: decodes [`Response`]s, encodes [`Request`]s.
pub type ClientCodec = FrameCodec<Response, Request>;

impl<D, E> FrameCodec<D, E> {
    /// A codec that refuses frames longer than `max_frame_size` bytes (the
    /// body, not counting the 4-byte length). The limit is capped at
    /// `u32::MAX`, the most a 4-byte length can express.
    pub fn new(max_frame_size: usize) -> Self {
        let max_frame_size = max_frame_size.min(u32::MAX as usize);
        let inner = LengthDelimitedCodec::builder()
            .length_field_offset(0)
            .length_field_length(HEADER_LEN)
            .length_adjustment(0)
            .big_endian()
            .max_frame_length(max_frame_size)
            .new_codec();
        FrameCodec {
            inner,
            max_frame_size,
            _messages: PhantomData,
        }
    }

    /// The maximum frame body size, in bytes.
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }
}

impl<D, E> Default for FrameCodec<D, E> {
    /// A codec with [`DEFAULT_MAX_FRAME_SIZE`].
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_SIZE)
    }
}

impl<D, E> Clone for FrameCodec<D, E> {
    fn clone(&self) -> Self {
        // A fresh codec rather than a copy of the inner decoder state: the
        // inner codec is only ever handed whole frames, so between calls it
        // is always waiting for a header anyway.
        FrameCodec::new(self.max_frame_size)
    }
}

impl<D, E> fmt::Debug for FrameCodec<D, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameCodec")
            .field("max_frame_size", &self.max_frame_size)
            .finish_non_exhaustive()
    }
}

impl<D: Message + Default, E> Decoder for FrameCodec<D, E> {
    type Item = Result<D, prost::DecodeError>;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        let Some(header) = src.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        // The length is checked here, before the inner codec sees it: the
        // inner codec would reserve room for the whole claimed body as soon
        // as it read the header. An oversized length therefore fails with
        // nothing of the body read or allocated.
        let len = u32::from_be_bytes(*header) as usize;
        if len > self.max_frame_size {
            return Err(CodecError::FrameTooLarge {
                len,
                max: self.max_frame_size,
            });
        }
        let buffered = src.len() - HEADER_LEN;
        if buffered < len {
            src.reserve((len - buffered).min(MAX_RESERVE_AHEAD));
            return Ok(None);
        }
        // The whole frame is buffered, so the inner codec splits it off in
        // this one call and reserves nothing for its body.
        match self.inner.decode(src)? {
            // Freezing lets `Bytes` fields of the message share the frame's
            // buffer instead of copying out of it.
            Some(frame) => Ok(Some(D::decode(frame.freeze()))),
            None => Ok(None),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        match self.decode(src)? {
            Some(item) => Ok(Some(item)),
            None if src.is_empty() => Ok(None),
            None => Err(CodecError::Truncated {
                buffered: src.len(),
            }),
        }
    }
}

impl<D, E: Message> Encoder<&E> for FrameCodec<D, E> {
    type Error = CodecError;

    fn encode(&mut self, item: &E, dst: &mut BytesMut) -> Result<(), CodecError> {
        let len = item.encoded_len();
        if len > self.max_frame_size {
            return Err(CodecError::FrameTooLarge {
                len,
                max: self.max_frame_size,
            });
        }
        // Written directly rather than through the inner codec's encoder,
        // which takes a finished body and would cost one more copy of it.
        // The layout is the same: 4-byte big-endian length, then the body.
        dst.reserve(HEADER_LEN + len);
        // `len <= max_frame_size <= u32::MAX`, checked above and in `new`.
        dst.put_u32(len as u32);
        let start = dst.len();
        item.encode(dst)?;
        debug_assert_eq!(dst.len() - start, len);
        Ok(())
    }
}

impl<D, E: Message> Encoder<E> for FrameCodec<D, E> {
    type Error = CodecError;

    fn encode(&mut self, item: E, dst: &mut BytesMut) -> Result<(), CodecError> {
        <Self as Encoder<&E>>::encode(self, &item, dst)
    }
}
