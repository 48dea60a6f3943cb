//! The accept loop, the connection limit, one task per connection, and
//! graceful shutdown.
//!
//! Per connection, a reader turns frames into [`Reply`]s (submitting writes
//! at once) and queues them; a writer resolves them in queue order and writes
//! the responses. The queue is bounded in requests (`max_in_flight`) and, with
//! every other connection's, in bytes (the in-flight byte budget, see
//! `budget`): when a client pipelines faster than its replies drain, or the
//! server holds as many request bytes as it may, the reader stops reading
//! and TCP flow control pushes back on the client.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::FutureExt;
use kv_proto::{ErrorCode, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Error;
use crate::auth::{Admission, Gate};
use crate::budget::{Charge, ConnectionBudget, InflightBudget};
use crate::command::{Backend, Reply, Shared};
use crate::config::ServerConfig;
use crate::connection::{FLUSH_THRESHOLD, FrameReader, FrameWriter, Inbound, ReadError};
use crate::metrics::{Metrics, Started};
use crate::tls::{ServerTls, answer_and_close, split_plain, split_tls};

/// Pause after an accept error that is not about one connection (such as
/// running out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `store` on `listener` until `shutdown` is cancelled.
///
/// On cancellation it stops accepting, stops reading new requests, answers
/// every request already read (writes included: they complete and are
/// acknowledged), then closes the store ([`kv_store::KeyValueStore::close`], which
/// makes every acknowledged write durable) and returns. If the store's log
/// had failed, it returns [`Error::LogFailed`]: the shutdown was not clean. Connections still
/// busy after `config.shutdown_grace` (a client not reading its answers)
/// are left unanswered.
///
/// At most `config.max_connections` connections are served at once. A
/// client over the limit is accepted, answered with an UNAVAILABLE error
/// ("max number of clients reached", request id 0, the id of an error about
/// the connection) and closed at once, rather than left hanging in the
/// kernel's accept queue where it could not tell a full server from a slow
/// one.
pub async fn run(
    listener: TcpListener,
    backend: impl Into<Backend>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    run_with_redis(listener, None, backend, config, shutdown).await
}

/// As [`run`], and with `redis`, also serves the Redis protocol on that
/// listener (see `kv-server --redis-addr`): same store, limits (the
/// connection limit is shared), auth token and TLS, and the same graceful
/// shutdown. On a cluster member, Redis commands go through Raft as
/// native ones do, and a follower's errors name the leader's Redis
/// address.
pub async fn run_with_redis(
    listener: TcpListener,
    redis: Option<TcpListener>,
    backend: impl Into<Backend>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let shared = Shared::new(backend.into(), config.max_frame);
    let budget = InflightBudget::new(
        config.max_total_in_flight_bytes,
        config.max_in_flight_bytes,
        config.max_frame,
    );
    if let Some(metrics) = &config.metrics {
        metrics.serving(&shared, &budget);
    }
    let config = Arc::new(config);
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let connections = TaskTracker::new();
    let refuser = Refuser::new(config.tls.clone());
    if let Some(redis) = redis {
        let db = match &shared.backend {
            Backend::Single(store) => crate::redis::Db::Single(store.clone()),
            Backend::Cluster(member) => crate::redis::Db::Member(member.clone()),
        };
        let cx = crate::redis::Context {
            db,
            config: Arc::clone(&config),
            budget: Arc::clone(&budget),
            permits: Arc::clone(&permits),
            connections: connections.clone(),
            shutdown: shutdown.clone(),
        };
        connections.spawn(crate::redis::serve(redis, cx));
    }
    // Whether the last client was refused for the limit: the warning is
    // logged when the server reaches it, not once per refused client.
    let mut at_limit = false;

    loop {
        let (socket, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = accept(&listener) => accepted,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            if !at_limit {
                tracing::warn!(
                    max_connections = config.max_connections,
                    "max number of clients reached: refusing new connections with UNAVAILABLE \
                     until one closes"
                );
                at_limit = true;
            }
            if let Some(metrics) = &config.metrics {
                metrics.connection_refused();
            }
            refuser.refuse(
                socket,
                peer,
                format!(
                    "max number of clients reached ({}); retry later",
                    config.max_connections
                ),
            );
            continue;
        };
        at_limit = false;
        let shared = Arc::clone(&shared);
        let config = Arc::clone(&config);
        let budget = budget.connection();
        let token = shutdown.child_token();
        connections.spawn(async move {
            if let Some(metrics) = &config.metrics {
                metrics.connection_opened();
            }
            serve_connection(socket, peer, &shared, &config, &budget, token).await;
            if let Some(metrics) = &config.metrics {
                metrics.connection_closed();
            }
            drop(permit);
        });
    }

    if let Some(metrics) = &config.metrics {
        metrics.stopping();
    }
    drop(listener);
    tracing::info!(
        connections = connections.len(),
        "shutting down: no longer accepting; finishing in-flight requests"
    );
    connections.close();
    if tokio::time::timeout(config.shutdown_grace, connections.wait())
        .await
        .is_err()
    {
        // Only connections stuck past every per-connection timeout get
        // here; what they have not answered was never acknowledged.
        tracing::warn!(
            connections = connections.len(),
            grace = ?config.shutdown_grace,
            "connections still busy after the shutdown grace period; closing the store anyway"
        );
    }

    if let Some(metrics) = &config.metrics {
        metrics.stopped();
    }
    let store = match &shared.backend {
        Backend::Single(store) => store.clone(),
        Backend::Cluster(cluster) => {
            // The Raft log is durable entry by entry: nothing to flush.
            tracing::info!(
                node = cluster.node.node_id(),
                "cluster member stopped serving; every acknowledged write was committed by a \
                 majority"
            );
            return Ok(());
        }
    };
    let closed = tokio::task::spawn_blocking(move || store.close())
        .await
        .map_err(|join| Error::Io(io::Error::other(format!("store close task failed: {join}"))))?;
    match closed {
        Ok(()) => {
            tracing::info!("store closed; every acknowledged write is durable");
            Ok(())
        }
        Err(kv_store::Error::LogFailed(reason)) => {
            tracing::error!(
                %reason,
                "store closed after the write-ahead log failed: not a clean shutdown. Writes \
                 were refused since the failure and those of the failed group have an unknown \
                 outcome; under --sync-policy interval or never, writes acknowledged since \
                 the last successful sync may be lost"
            );
            Err(Error::LogFailed(reason))
        }
        Err(err) => {
            tracing::error!(error = %err, "closing the store failed: not a clean shutdown");
            Err(Error::Store(err))
        }
    }
}

/// Answers every client that connects to `listener` with an UNAVAILABLE
/// error ("the server is starting") and closes the connection, until
/// `starting` (typically opening, and so recovering, the store) completes;
/// returns its output. Then hand `listener` to [`run`]. With `tls`, the
/// answer goes over TLS, as [`run`] will serve.
///
/// Binding before recovery makes a taken port fail at once instead of after
/// a long recovery; this makes the clients that connect meanwhile get a
/// clear answer instead of hanging in the accept queue until the store is
/// ready.
pub async fn refuse_until_ready<F: Future>(
    listener: &TcpListener,
    tls: Option<&ServerTls>,
    starting: F,
) -> F::Output {
    let refuser = Refuser::new(tls.cloned());
    let mut starting = pin!(starting);
    loop {
        tokio::select! {
            biased;
            output = &mut starting => return output,
            (socket, peer) = accept(listener) => refuser.refuse(
                socket,
                peer,
                "the server is starting (recovering its data); retry shortly".to_string(),
            ),
        }
    }
}

/// How long a refused client has to take its answer; the connection is
/// closed then at the latest.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Most refusals in progress at once. Past it, a refused connection is
/// closed without an answer: a flood of connections must not cost a task
/// and a socket each for a second.
const MAX_REFUSALS: usize = 64;

/// Turns connections away with one error response and a close.
struct Refuser {
    in_progress: Arc<Semaphore>,
    /// The listener's TLS, which the answer goes over.
    tls: Option<ServerTls>,
}

impl Refuser {
    fn new(tls: Option<ServerTls>) -> Refuser {
        Refuser {
            in_progress: Arc::new(Semaphore::new(MAX_REFUSALS)),
            tls,
        }
    }

    /// Sends `message` as an UNAVAILABLE error with id 0 (the id of an error
    /// about the connection rather than one request), then closes, in a
    /// task of its own. Before closing it reads and drops what the client
    /// sent, for up to [`REFUSAL_LINGER`]: closing a socket with unread
    /// input sends a reset, which can destroy the answer before the client
    /// reads it.
    fn refuse(&self, socket: TcpStream, peer: SocketAddr, message: String) {
        let Ok(permit) = Arc::clone(&self.in_progress).try_acquire_owned() else {
            tracing::debug!(%peer, "too many refusals in progress: closing without an answer");
            return;
        };
        tracing::debug!(%peer, %message, "refusing connection");
        let tls = self.tls.clone();
        tokio::spawn(async move {
            let refusal = Response::error(0, ErrorCode::Unavailable, message);
            match tls {
                None => answer_and_close(socket, &refusal, REFUSAL_LINGER).await,
                Some(tls) => match tls.accept(socket, peer, REFUSAL_LINGER).await {
                    Ok(stream) => answer_and_close(stream, &refusal, REFUSAL_LINGER).await,
                    Err(err) => tracing::debug!(%peer, error = %err, "refusal not delivered"),
                },
            }
            drop(permit);
        });
    }
}

/// Accepts one connection, retrying past errors: per-connection ones
/// (the peer reset before we accepted) at once, resource ones (EMFILE and
/// the like) after a pause.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                ) =>
            {
                tracing::debug!(error = %err, "accept: connection gone before it was accepted");
            }
            Err(err) => {
                tracing::warn!(error = %err, "accept failed; retrying shortly");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Serves one connection to its end: the peer closes, a timeout or a
/// protocol violation closes it, or the server shuts down.
async fn serve_connection(
    socket: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    config: &ServerConfig,
    budget: &ConnectionBudget,
    token: CancellationToken,
) {
    // Responses are batched by the writer; Nagle would only add latency.
    if let Err(err) = socket.set_nodelay(true) {
        tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
    }
    let (read_half, write_half) = match &config.tls {
        None => split_plain(socket),
        Some(tls) => {
            let handshake = tokio::select! {
                () = token.cancelled() => return,
                handshake = tls.accept(socket, peer, config.frame_timeout) => handshake,
            };
            match handshake {
                Ok(stream) => split_tls(stream),
                Err(err) => {
                    tracing::info!(%peer, "connection refused: {err}");
                    return;
                }
            }
        }
    };
    let reader = FrameReader::new(
        read_half,
        config.max_frame,
        config.idle_timeout,
        config.frame_timeout,
    );
    let writer = FrameWriter::new(write_half, config.max_frame, config.frame_timeout);
    let (replies, queue) = mpsc::channel(config.max_in_flight.max(1));
    tracing::debug!(%peer, "connection opened");

    let gate = Gate::new(config.auth_token.as_ref(), peer);
    let read = read_requests(reader, gate, replies, shared, budget, &token);
    let write = async {
        let result = write_replies(writer, queue, shared, config.metrics.as_deref()).await;
        // The peer is gone or the socket failed: stop reading too.
        token.cancel();
        result
    };
    let (end, written) = tokio::join!(read, write);
    match written {
        Ok(()) => tracing::debug!(%peer, reason = end, "connection closed"),
        Err(err) => tracing::debug!(%peer, reason = end, error = %err, "connection closed"),
    }
}

/// A reply in the connection's queue, with the in-flight bytes its request
/// is charged until the reply has resolved, and when it was read.
type Queued = (Reply, Charge, Started);

/// Reads requests and queues their replies until the connection ends;
/// returns why it ended. Dropping `replies` on return tells the writer to
/// finish the queue and close.
///
/// Each frame is charged to the in-flight byte budget once its header has
/// arrived and before its body is read: while the budget is short, the
/// reader waits and reads nothing from the socket (backpressure).
///
/// Once `token` is cancelled it reads nothing more from the socket, but
/// still queues the whole requests already in its buffer: they were read,
/// so they are answered.
async fn read_requests(
    mut reader: FrameReader,
    mut gate: Gate<'_>,
    replies: mpsc::Sender<Queued>,
    shared: &Shared,
    budget: &ConnectionBudget,
    token: &CancellationToken,
) -> &'static str {
    let held = Held::new(shared);
    loop {
        // Every whole request read so far is started: the held writes go
        // to the commit thread together before the socket is read again.
        if !reader.has_whole_frame() {
            held.release();
        }
        let next = tokio::select! {
            biased;
            () = token.cancelled() => {
                held.release();
                return drain_buffered(&mut reader, &mut gate, &replies, shared, budget).await;
            }
            next = next_request(&mut reader, budget, &held) => next,
        };
        let (inbound, charge) = match next {
            Ok(Some(next)) => next,
            Ok(None) => return "peer closed",
            Err(ReadError::TooLarge { len, max }) => {
                // Its body is never read; the writer sends TOO_LARGE after
                // the earlier replies and closes.
                let reply = Reply::error(
                    0,
                    ErrorCode::TooLarge,
                    format!("frame of {len} bytes exceeds the maximum of {max}"),
                );
                held.release();
                let _ = replies
                    .send((reply, budget.nothing(), Started::now(UNKNOWN_COMMAND)))
                    .await;
                return "frame too large";
            }
            Err(ReadError::Idle) => return "idle timeout",
            Err(ReadError::SlowFrame) => return "frame timeout",
            Err(ReadError::Truncated) => return "peer closed mid-frame",
            Err(ReadError::Io(err)) => {
                tracing::debug!(error = %err, "read failed");
                return "read error";
            }
        };
        let (reply, started, delay) = reply_to(inbound, &mut gate, shared, &held);
        if !delay.is_zero() {
            held.release();
            // A failed authentication: read nothing more for a while (the
            // shutdown cuts the wait short).
            tokio::select! {
                () = token.cancelled() => {}
                () = tokio::time::sleep(delay) => {}
            }
        }
        // A full queue waits for the writer, which may be waiting for a
        // held write.
        match replies.try_send((reply, charge, started)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(queued)) => {
                held.release();
                if replies.send(queued).await.is_err() {
                    return "writer stopped";
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return "writer stopped",
        }
    }
}

/// On a single node, the writes a connection's reader has started and not
/// yet handed to the commit thread (a [`kv_store::Hold`]): released
/// together, so that a pipeline shares one sync, before the reader waits
/// for anything. Behind a lock only so that the reader's branches can
/// share it; only the reader takes it.
struct Held(std::sync::Mutex<Option<kv_store::Hold>>);

impl Held {
    fn new(shared: &Shared) -> Held {
        Held(std::sync::Mutex::new(match &shared.backend {
            Backend::Single(store) => Some(store.hold()),
            Backend::Cluster(_) => None,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<kv_store::Hold>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn release(&self) {
        if let Some(hold) = self.lock().as_mut() {
            hold.release();
        }
    }
}

/// The next request and its charge: waits for the frame's header, for room
/// in the budget, then for the body. Cancel safe: what was read stays in
/// the reader's buffer, and a charge not returned is released.
async fn next_request(
    reader: &mut FrameReader,
    budget: &ConnectionBudget,
    held: &Held,
) -> Result<Option<(Inbound, Charge)>, ReadError> {
    let Some(len) = reader.next_len().await? else {
        return Ok(None);
    };
    // Held writes must not wait for a charge that their own replies would
    // give back.
    let charge = match budget.charge(len).now_or_never() {
        Some(charge) => charge,
        None => {
            held.release();
            budget.charge(len).await
        }
    };
    reader.restart_frame_clock();
    match reader.next().await? {
        Some(inbound) => Ok(Some((inbound, charge))),
        // The header had arrived: the peer closed inside the frame.
        None => Err(ReadError::Truncated),
    }
}

/// At shutdown: queues the whole requests already in the buffer (charged
/// like any other), reading nothing more; returns why the reader ended.
async fn drain_buffered(
    reader: &mut FrameReader,
    gate: &mut Gate<'_>,
    replies: &mpsc::Sender<Queued>,
    shared: &Shared,
    budget: &ConnectionBudget,
) -> &'static str {
    // The reader released its hold: what is drained is submitted directly.
    let direct = Held(std::sync::Mutex::new(None));
    loop {
        if replies.is_closed() {
            // The writer is gone: nobody would get these answers.
            return "writer stopped";
        }
        let Some(len) = reader.buffered_len() else {
            return "shutdown";
        };
        let charge = budget.charge(len).await;
        let (reply, started) = match reader.next_buffered() {
            Ok(Some(inbound)) => {
                let (reply, started, _) = reply_to(inbound, gate, shared, &direct);
                (reply, started)
            }
            Ok(None) => return "shutdown",
            Err(ReadError::TooLarge { len, max }) => {
                let reply = Reply::error(
                    0,
                    ErrorCode::TooLarge,
                    format!("frame of {len} bytes exceeds the maximum of {max}"),
                );
                let _ = replies
                    .send((reply, charge, Started::now(UNKNOWN_COMMAND)))
                    .await;
                return "frame too large";
            }
            Err(_) => return "shutdown",
        };
        if replies.send((reply, charge, started)).await.is_err() {
            return "writer stopped";
        }
    }
}

/// The command label of a frame that did not decode into a request.
const UNKNOWN_COMMAND: &str = "unknown";

/// Starts the reply to one decoded frame, through the auth gate; also when
/// and what it asked for, and how long to wait before reading on (after a
/// failed authentication).
fn reply_to(
    inbound: Inbound,
    gate: &mut Gate<'_>,
    shared: &Shared,
    held: &Held,
) -> (Reply, Started, std::time::Duration) {
    match inbound {
        Ok(request) => {
            let command = request
                .command
                .as_ref()
                .map_or(UNKNOWN_COMMAND, |c| c.name());
            let started = Started::now(command);
            match gate.admit(request) {
                Admission::Pass(request) => (
                    Reply::start(request, shared, held.lock().as_mut()),
                    started,
                    std::time::Duration::ZERO,
                ),
                // Unauthenticated, or an auth attempt: answered by the gate,
                // after `delay` when the attempt failed.
                Admission::Answer { response, delay } => (Reply::Ready(response), started, delay),
            }
        }
        // The id is inside the message that failed to decode.
        Err(err) => (
            Reply::error(
                0,
                ErrorCode::InvalidRequest,
                format!("undecodable request: {err}"),
            ),
            Started::now(UNKNOWN_COMMAND),
            std::time::Duration::ZERO,
        ),
    }
}

/// Resolves queued replies in order and writes them. Flushes only when the
/// next reply is not ready yet (or the buffer is large), so a burst of
/// pipelined replies leaves in few writes.
async fn write_replies(
    mut writer: FrameWriter,
    mut queue: mpsc::Receiver<Queued>,
    shared: &Shared,
    metrics: Option<&Metrics>,
) -> io::Result<()> {
    loop {
        let (reply, charge, started) = match queue.try_recv() {
            Ok(queued) => queued,
            Err(mpsc::error::TryRecvError::Empty) => {
                writer.flush().await?;
                match queue.recv().await {
                    Some(queued) => queued,
                    None => break,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        let mut resolving = pin!(reply.resolve(shared));
        let response = match poll_once(resolving.as_mut()).await {
            Poll::Ready(response) => response,
            Poll::Pending => {
                // Waiting (typically for a sync): send what is ready first.
                writer.flush().await?;
                resolving.await
            }
        };
        // Resolved: what the request became is in the map (or answered);
        // the response's own bytes are the writer's buffer's.
        drop(charge);
        if let Some(metrics) = metrics {
            metrics.answered(started, &response);
        }
        writer.push(&response)?;
        if writer.buffered() >= FLUSH_THRESHOLD {
            writer.flush().await?;
        }
    }
    writer.finish().await
}

/// Polls `future` once, reporting whether it was ready.
async fn poll_once<F: Future + Unpin>(mut future: F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut future).poll(cx))).await
}
