//! The connection's two background tasks: one writes requests, one reads
//! responses and hands each to the call waiting for it.
//!
//! Writing and reading run in separate tasks so that neither can block the
//! other: a writer stuck on a full socket must not stop us from reading the
//! responses the server is waiting to send, or both sides would wait forever.
//!
//! Invariants:
//! - Ids are assigned by the writer, so they increase in wire order.
//! - A request is registered as pending (sent to the reader) *before* its
//!   bytes are written, so its response can never arrive unregistered.
//! - The server answers in request order, so the reader matches each
//!   response with the oldest pending request and checks the ids agree.
//! - Every call's reply channel is either answered or dropped after the
//!   close reason is recorded, so a call never waits on a dead connection.
//! - A reply is dropped unanswered only for a request that was never
//!   registered as pending, and so never written: a caller can tell "not
//!   sent" (safe to send elsewhere) from "sent, answer lost".

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, OnceLock};

use futures::{SinkExt, StreamExt};
use kv_proto::prost::Message;
use kv_proto::{ClientCodec, CodecError, Request, Response, request, response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use crate::error::{ClientError, Result};
use crate::tls::{ReadHalf, Stream, WriteHalf};

/// Requests written before one flush, at most: a burst of concurrent calls
/// shares one write system call, and the write buffer stays bounded.
const MAX_BATCH: usize = 256;

/// What a call hands to the writer.
pub(crate) struct Call {
    pub(crate) command: request::Command,
    pub(crate) reply: oneshot::Sender<Result<response::Result>>,
    /// Held until the response arrives (or the call fails), so the number
    /// of requests queued or in flight is bounded by the semaphore's size.
    pub(crate) permit: OwnedSemaphorePermit,
}

/// A request written (or about to be) whose response has not arrived.
struct Pending {
    id: u64,
    reply: oneshot::Sender<Result<response::Result>>,
    _permit: OwnedSemaphorePermit,
}

/// State the client and both tasks share.
pub(crate) struct Shared {
    /// Why the connection closed; set once, before anything is cancelled.
    reason: OnceLock<ClientError>,
    /// Cancelled when the connection closes; stops both tasks.
    cancel: CancellationToken,
    /// Permits for requests queued or in flight.
    pub(crate) in_flight: Arc<Semaphore>,
}

impl Shared {
    /// Records why the connection closed (the first reason wins), then
    /// stops both tasks and wakes every call waiting for a permit.
    fn close(&self, reason: ClientError) {
        let _ = self.reason.set(reason);
        self.cancel.cancel();
        self.in_flight.close();
    }

    /// The error for a call on a closed connection.
    pub(crate) fn close_reason(&self) -> ClientError {
        self.reason.get().cloned().unwrap_or(ClientError::Closed)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// Starts the tasks serving `stream`. Calls sent to the returned channel
/// are written in order; each gets its response through its reply channel.
pub(crate) fn start(
    stream: Stream,
    max_frame_size: usize,
    max_in_flight: usize,
) -> (mpsc::Sender<Call>, Arc<Shared>) {
    let shared = Arc::new(Shared {
        reason: OnceLock::new(),
        cancel: CancellationToken::new(),
        in_flight: Arc::new(Semaphore::new(max_in_flight)),
    });
    let (read_half, write_half) = stream.split();
    // Bounded by the permits each call holds, not by this channel.
    let (pending_tx, pending_rx) = mpsc::unbounded_channel();
    let (calls_tx, calls_rx) = mpsc::channel(max_in_flight);

    let writer = Writer {
        sink: FramedWrite::new(write_half, ClientCodec::new(max_frame_size)),
        max_frame_size,
        next_id: 1,
        pending: pending_tx,
        shared: shared.clone(),
    };
    tokio::spawn(writer.run(calls_rx));

    let reader = Reader {
        stream: FramedRead::new(read_half, ClientCodec::new(max_frame_size)),
        pending_rx,
        waiting: VecDeque::new(),
        shared: shared.clone(),
    };
    tokio::spawn(reader.run());

    (calls_tx, shared)
}

struct Writer {
    sink: FramedWrite<WriteHalf, ClientCodec>,
    max_frame_size: usize,
    next_id: u64,
    pending: mpsc::UnboundedSender<Pending>,
    shared: Arc<Shared>,
}

impl Writer {
    async fn run(mut self, mut calls: mpsc::Receiver<Call>) {
        let reason = loop {
            let call = tokio::select! {
                biased;
                _ = self.shared.cancel.cancelled() => break None,
                call = calls.recv() => call,
            };
            // Every Client handle is gone: nobody can be waiting for an
            // answer any more.
            let Some(call) = call else {
                break Some(ClientError::Closed);
            };
            if let Err(reason) = self.write(call).await {
                break Some(reason);
            }
            let mut batched = 1;
            let mut failed = None;
            while batched < MAX_BATCH {
                let Ok(call) = calls.try_recv() else { break };
                batched += 1;
                if let Err(reason) = self.write(call).await {
                    failed = Some(reason);
                    break;
                }
            }
            if let Some(reason) = failed {
                break Some(reason);
            }
            // The sink accepts `&Request`; name it so `flush` knows which sink.
            if let Err(err) = SinkExt::<&Request>::flush(&mut self.sink).await {
                break Some(stream_error(err));
            }
        };
        if let Some(reason) = reason {
            self.shared.close(reason);
        }
        // Dropping `calls` drops the replies of calls still queued; their
        // callers then read the close reason recorded above.
    }

    /// Registers the call as pending and buffers its request. An error is
    /// fatal to the connection.
    async fn write(&mut self, call: Call) -> Result<(), ClientError> {
        let request = Request {
            id: self.next_id,
            command: Some(call.command),
        };
        // Checked here, where the id is known, since the id is part of the
        // encoded size. A request too large is never registered or sent,
        // so the connection is unaffected.
        let len = request.encoded_len();
        if len > self.max_frame_size {
            let _ = call.reply.send(Err(ClientError::RequestTooLarge {
                len,
                max: self.max_frame_size,
            }));
            return Ok(());
        }
        self.next_id += 1;
        let pending = Pending {
            id: request.id,
            reply: call.reply,
            _permit: call.permit,
        };
        if let Err(mpsc::error::SendError(pending)) = self.pending.send(pending) {
            // The reader has stopped, so the connection is closing. The
            // reply is dropped unanswered, which tells the caller that the
            // request was never sent (see `Client::try_call`).
            drop(pending);
            return Err(self.shared.close_reason());
        }
        self.sink.feed(&request).await.map_err(stream_error)
    }
}

struct Reader {
    stream: FramedRead<ReadHalf, ClientCodec>,
    pending_rx: mpsc::UnboundedReceiver<Pending>,
    /// Pending requests taken from `pending_rx`, oldest first.
    waiting: VecDeque<Pending>,
    shared: Arc<Shared>,
}

impl Reader {
    async fn run(mut self) {
        let reason = loop {
            let frame = tokio::select! {
                biased;
                _ = self.shared.cancel.cancelled() => break None,
                frame = self.stream.next() => frame,
            };
            let response = match frame {
                None => break Some(ClientError::Closed),
                Some(Err(err)) => break Some(stream_error(err)),
                Some(Ok(Err(err))) => {
                    break Some(ClientError::Protocol(format!(
                        "undecodable response: {err}"
                    )));
                }
                Some(Ok(Ok(response))) => response,
            };
            if let Err(reason) = self.deliver(response) {
                break Some(reason);
            }
        };
        if let Some(reason) = reason {
            self.shared.close(reason);
        }
        let reason = self.shared.close_reason();
        // Refuse new registrations, then fail everything registered.
        self.pending_rx.close();
        while let Some(pending) = self.pending_rx.recv().await {
            self.waiting.push_back(pending);
        }
        for pending in self.waiting.drain(..) {
            let _ = pending.reply.send(Err(reason.clone()));
        }
    }

    /// Hands `response` to the oldest pending call. An error is fatal to
    /// the connection.
    fn deliver(&mut self, response: Response) -> Result<(), ClientError> {
        // The writer registers a request before writing it, so the request
        // this answers is registered by now.
        while let Ok(pending) = self.pending_rx.try_recv() {
            self.waiting.push_back(pending);
        }
        let expected = self.waiting.front().map(|p| p.id);
        if expected != Some(response.id) {
            // The server answers a frame it could not attribute to a
            // request (an oversized or undecodable frame) with id 0, which
            // we never use: that error is about the connection.
            if let (0, Some(response::Result::Error(error))) = (response.id, &response.result) {
                return Err(server_error(error.clone()));
            }
            return Err(ClientError::Protocol(match expected {
                Some(expected) => format!(
                    "response id {} does not match the oldest outstanding request id {expected}",
                    response.id
                ),
                None => format!("response id {} answers no outstanding request", response.id),
            }));
        }
        if let Some(pending) = self.waiting.pop_front() {
            // The caller may have given up (timeout); its answer is dropped.
            let _ = pending.reply.send(into_result(response));
        }
        Ok(())
    }
}

/// A response's result, with a server error turned into an `Err`.
fn into_result(response: Response) -> Result<response::Result> {
    match response.result {
        Some(response::Result::Error(error)) => Err(server_error(error)),
        Some(result) => Ok(result),
        None => Err(ClientError::Protocol("response without a result".into())),
    }
}

/// A server's `Error` as the caller sees it.
fn server_error(error: kv_proto::Error) -> ClientError {
    let code = error.code();
    if code == kv_proto::ErrorCode::ConditionFailed {
        return ClientError::ConditionFailed {
            current: error.current_exists.then_some(error.current_seq),
            key: error.key,
            message: error.message,
        };
    }
    ClientError::Server {
        code,
        message: error.message,
        leader_addr: Some(error.leader_addr).filter(|addr| !addr.is_empty()),
    }
}

fn stream_error(err: CodecError) -> ClientError {
    match err {
        CodecError::Io(err) => ClientError::Io(Arc::new(err)),
        CodecError::Truncated { .. } => ClientError::Io(Arc::new(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection in the middle of a response",
        ))),
        other => ClientError::Protocol(other.to_string()),
    }
}
