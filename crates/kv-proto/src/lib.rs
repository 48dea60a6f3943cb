//! kv-proto: the protocol buffer types of the key-value store and the frame
//! codec that carries them over TCP.
//!
//! `proto/kv.proto` is the one schema: the wire messages ([`Request`],
//! [`Response`]) and the records the store writes to its log and snapshots
//! ([`LogEntry`], [`SnapshotHeader`], [`SnapshotEntry`]). The Rust types are
//! generated at build time (protox + prost-build, no system `protoc`); every
//! `bytes` field is a [`bytes::Bytes`], so decoding slices keys and values
//! out of the received buffer instead of copying them.
//!
//! A frame on the wire is a 4-byte big-endian length followed by that many
//! bytes of one message. [`FrameCodec`] reads and writes frames for
//! `tokio_util::codec::Framed`; [`ServerCodec`] and [`ClientCodec`] are its
//! two directions.
//! [`parse_size`] reads a byte size such as the maximum frame size from a
//! command line (`8MiB`), so that the server's and the client's
//! `--max-frame` accept the same syntax.
//!
//! ```
//! use bytes::BytesMut;
//! use kv_proto::{ClientCodec, PutRequest, Request, ServerCodec, request::Command};
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! let request = Request::new(
//!     7,
//!     Command::Put(PutRequest { key: "greeting".into(), value: "hello".into(), ..Default::default() }),
//! );
//!
//! // The client encodes a frame...
//! let mut wire = BytesMut::new();
//! ClientCodec::default().encode(&request, &mut wire)?;
//! let body_len = u32::from_be_bytes(wire[..4].try_into()?) as usize;
//! assert_eq!(wire.len(), 4 + body_len);
//!
//! // ...and the server decodes it. The outer Result is the stream (fatal
//! // errors); the inner one is this message (an undecodable message is
//! // answered and the connection goes on).
//! let decoded = ServerCodec::default().decode(&mut wire)?.expect("a whole frame");
//! assert_eq!(decoded?, request);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod codec;
mod size;

pub use codec::{ClientCodec, CodecError, DEFAULT_MAX_FRAME_SIZE, FrameCodec, ServerCodec};
pub use size::parse_size;

/// The generated types of package `kv.v1` (`proto/kv.proto`).
///
/// Everything here is re-exported at the crate root, so `kv_proto::Request`
/// and `kv_proto::v1::Request` are the same type.
pub mod v1 {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/kv.v1.rs"));
}

pub use v1::*;

/// The protobuf runtime the generated types use, re-exported so users call
/// `Message::encoded_len` and friends without a version to keep in step.
pub use prost;

impl Request {
    /// A request with the given id and command.
    pub fn new(id: u64, command: request::Command) -> Self {
        Request {
            id,
            command: Some(command),
        }
    }
}

impl request::Command {
    /// The command's name as the protocol spells it (`"get"`, `"put"`, ...),
    /// for logs and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            request::Command::Get(_) => "get",
            request::Command::Put(_) => "put",
            request::Command::Delete(_) => "delete",
            request::Command::Keys(_) => "keys",
            request::Command::Checkpoint(_) => "checkpoint",
            request::Command::ClusterStatus(_) => "cluster_status",
            request::Command::ClusterAdd(_) => "cluster_add",
            request::Command::ClusterRemove(_) => "cluster_remove",
            request::Command::Backup(_) => "backup",
            request::Command::Auth(_) => "auth",
            request::Command::Batch(_) => "batch",
            request::Command::Incr(_) => "incr",
            request::Command::Expire(_) => "expire",
            request::Command::Ttl(_) => "ttl",
            request::Command::Scan(_) => "scan",
            request::Command::Mget(_) => "mget",
            request::Command::Stats(_) => "stats",
        }
    }
}

impl std::fmt::Debug for AuthRequest {
    /// Shows the token's length, never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthRequest")
            .field("token", &format_args!("<{} bytes>", self.token.len()))
            .finish()
    }
}

impl Response {
    /// A response with the given id and result.
    pub fn new(id: u64, result: response::Result) -> Self {
        Response {
            id,
            result: Some(result),
        }
    }

    /// An error response to the request with the given id.
    pub fn error(id: u64, code: ErrorCode, message: impl Into<String>) -> Self {
        Response::new(
            id,
            response::Result::Error(Error {
                code: code as i32,
                message: message.into(),
                ..Error::default()
            }),
        )
    }
}

impl std::fmt::Display for ErrorCode {
    /// Writes the code's protobuf name, e.g. `TOO_LARGE`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str_name())
    }
}
