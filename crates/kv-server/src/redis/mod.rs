//! The Redis listener (`--redis-addr`): RESP2 and RESP3 (`HELLO 3`),
//! inline commands and pipelining, beside the native listener and on the
//! same store, so that redis-cli, redis-benchmark and Redis client
//! libraries work unchanged.
//!
//! It keeps the native listener's rules: the same connection limit (shared
//! with it), the same auth token (`AUTH` / `HELLO ... AUTH`; until then
//! `-NOAUTH Authentication required.`), the same TLS, idle and frame
//! timeouts, in-flight bounds (replies queued per connection, and bytes of
//! commands read and not yet answered, in the server's one budget), and
//! `--max-frame` as the longest bulk string, inline line and command. A
//! write is answered only once durable. A protocol error (a bulk over the
//! limit, garbage) is answered `-ERR Protocol error: ...` and the
//! connection closed, as Redis does.
//!
//! On a cluster member the commands run through Raft (`db`): writes are
//! answered once committed by a majority and applied, reads are
//! linearizable, and a follower answers `-READONLY` (writes) or
//! `-NOTLEADER` (reads) naming the leader's Redis address, which each
//! member sends its peers with every Raft message.
//!
//! `resp` parses commands and encodes replies (no I/O); this module is
//! the only one that reads and writes sockets; `commands` answers each
//! command, with the connection's state in `session`, the key walks (KEYS,
//! SCAN) in `keyspace`, the server commands in `admin` and the
//! transactions (MULTI, EXEC, WATCH) in `multi`.

mod admin;
mod commands;
mod db;
pub(crate) use db::Db;
mod keyspace;
mod multi;
mod resp;
mod session;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::budget::{Charge, ConnectionBudget, InflightBudget};
use crate::config::ServerConfig;
use crate::tls::{split_plain, split_tls};
use commands::{Later, Outcome, RedisServer};
use resp::{Frame, Limits};
use session::Session;

/// Flush the reply buffer once it holds this much.
const FLUSH_AT: usize = 64 << 10;

/// Longest a refused client (over the connection limit) has to take its
/// error.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Most refusals (over the connection limit) in progress at once.
const MAX_REFUSALS: usize = 64;

/// What the server hands the Redis listener.
pub(crate) struct Context {
    pub(crate) db: Db,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) budget: Arc<InflightBudget>,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) connections: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

/// Accepts Redis clients on `listener` until shutdown; each connection is
/// tracked in `connections`, so the server's shutdown waits for it.
pub(crate) async fn serve(listener: TcpListener, cx: Context) {
    let port = listener.local_addr().map_or(0, |a| a.port());
    let shared = Arc::new(RedisServer::new(
        cx.db.clone(),
        cx.config.auth_token.clone(),
        port,
        cx.config.max_frame,
        cx.config.max_connections,
        cx.config.idle_timeout,
    ));
    let limits = Limits {
        max_bulk: cx.config.max_frame,
        max_inline: cx.config.max_frame,
    };
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    loop {
        let accepted = tokio::select! {
            biased;
            () = cx.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(error = %e, "Redis accept failed");
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                ) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&cx.permits).try_acquire_owned() else {
            tracing::debug!(%peer, "Redis client refused: max number of clients reached");
            // A flood of refusals must not cost a task and a socket each
            // for a second: past the bound, close without an answer.
            if let Ok(refusing) = Arc::clone(&refusals).try_acquire_owned() {
                cx.connections.spawn(async move {
                    refuse(socket).await;
                    drop(refusing);
                });
            }
            continue;
        };
        let shared = Arc::clone(&shared);
        let config = Arc::clone(&cx.config);
        let budget = cx.budget.connection();
        let token = cx.shutdown.child_token();
        cx.connections.spawn(async move {
            shared.connected.fetch_add(1, Ordering::Relaxed);
            shared.connections_received.fetch_add(1, Ordering::Relaxed);
            connection(socket, peer, &shared, &config, limits, budget, token).await;
            shared.connected.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    tracing::debug!("Redis listener stopped accepting");
}

/// Tells a client over the connection limit so, as Redis does, and closes.
async fn refuse(mut socket: TcpStream) {
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        socket
            .write_all(b"-ERR max number of clients reached\r\n")
            .await?;
        socket.shutdown().await?;
        let mut sink = [0u8; 1024];
        while socket.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
}

/// A reply in the queue: what resolves it, the RESP version to encode it
/// in, the bytes charged for its command, whom to tell once it is written
/// (a barrier), and whether the connection closes after it.
struct Queued {
    reply: Later,
    version: u8,
    charge: Charge,
    done: Option<oneshot::Sender<()>>,
    close: bool,
}

async fn connection(
    socket: TcpStream,
    peer: SocketAddr,
    shared: &Arc<RedisServer>,
    config: &ServerConfig,
    limits: Limits,
    budget: ConnectionBudget,
    token: CancellationToken,
) {
    let _ = socket.set_nodelay(true);
    let (read_half, write_half) = match &config.tls {
        None => split_plain(socket),
        Some(tls) => {
            let handshake = tokio::select! {
                () = token.cancelled() => return,
                handshake = tls.accept(socket, peer, config.frame_timeout) => handshake,
            };
            match handshake {
                Ok(stream) => split_tls(stream),
                Err(e) => {
                    tracing::info!(%peer, "Redis connection refused: {e}");
                    return;
                }
            }
        }
    };
    let (queue, replies) = mpsc::channel::<Queued>(config.max_in_flight.max(1));
    let read = read_commands(read_half, shared, config, limits, &budget, queue, &token);
    let write = async {
        let result = write_replies(write_half, replies, config.frame_timeout).await;
        token.cancel();
        result
    };
    let (end, written) = tokio::join!(read, write);
    match written {
        Ok(()) => tracing::debug!(%peer, reason = end, "Redis connection closed"),
        Err(e) => tracing::debug!(%peer, reason = end, error = %e, "Redis connection closed"),
    }
}

/// Reads and starts commands until the connection ends; returns why.
async fn read_commands<R: AsyncRead + Unpin>(
    mut socket: R,
    shared: &Arc<RedisServer>,
    config: &ServerConfig,
    limits: Limits,
    budget: &ConnectionBudget,
    queue: mpsc::Sender<Queued>,
    token: &CancellationToken,
) -> &'static str {
    let mut session = Session::new(shared);
    let mut buf = BytesMut::with_capacity(16 << 10);
    // When the partial command in `buf` started arriving.
    let mut partial_since: Option<Instant> = None;
    let mut draining = false;
    loop {
        let before = buf.len();
        let args = match resp::parse_command(&mut buf, limits) {
            Ok(Some(args)) => args,
            Ok(None) => {
                // Every command read so far is started: the held writes
                // go to the commit thread together, before the wait.
                session.release();
                if draining {
                    return "shutdown";
                }
                if buf.is_empty() {
                    partial_since = None;
                } else {
                    partial_since.get_or_insert_with(Instant::now);
                }
                let deadline = match partial_since {
                    Some(since) => since + config.frame_timeout,
                    None => Instant::now() + config.idle_timeout,
                };
                buf.reserve(16 << 10);
                let read = tokio::select! {
                    biased;
                    () = token.cancelled() => {
                        draining = true;
                        continue;
                    }
                    read = tokio::time::timeout_at(deadline, socket.read_buf(&mut buf)) => read,
                };
                match read {
                    Err(_) if partial_since.is_some() => return "frame timeout",
                    Err(_) => return "idle timeout",
                    Ok(Ok(0)) if buf.is_empty() => return "peer closed",
                    Ok(Ok(0)) => return "peer closed mid-command",
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "Redis read failed");
                        return "read error";
                    }
                }
            }
            Err(e) => {
                session.release();
                let reply = Frame::error(format!("ERR Protocol error: {}", e.0));
                let _ = queue
                    .send(Queued {
                        reply: Box::pin(async move { reply }),
                        version: session.version,
                        charge: budget.nothing(),
                        done: None,
                        close: true,
                    })
                    .await;
                return "protocol error";
            }
        };
        partial_since = None;
        if args.is_empty() {
            continue;
        }
        let size = before - buf.len();
        // Held writes must not wait for a charge that their own replies
        // would give back.
        let charge = match budget.charge(size).now_or_never() {
            Some(charge) => charge,
            None => {
                session.release();
                budget.charge(size).await
            }
        };
        let outcome = commands::dispatch(args, &mut session, shared);
        let version = session.version;
        let (reply, done, close) = match outcome {
            Outcome::Ready(frame) => (ready(frame), None, false),
            Outcome::Later(later) => (later, None, false),
            Outcome::Close(frame) => (ready(frame), None, true),
            Outcome::Barrier(later) => {
                // Its writes go after the held ones.
                session.release();
                let (tx, rx) = oneshot::channel();
                if queue
                    .send(Queued {
                        reply: later,
                        version,
                        charge,
                        done: Some(tx),
                        close: false,
                    })
                    .await
                    .is_err()
                {
                    return "writer stopped";
                }
                // Until it has written, no later write may be submitted.
                if rx.await.is_err() {
                    return "writer stopped";
                }
                continue;
            }
        };
        let queued = Queued {
            reply,
            version,
            charge,
            done,
            close,
        };
        // A full queue waits for the writer, which may be waiting for a
        // held write.
        match queue.try_send(queued) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(queued)) => {
                session.release();
                if queue.send(queued).await.is_err() {
                    return "writer stopped";
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return "writer stopped",
        }
        if close {
            return "quit";
        }
        if !session.delay.is_zero() {
            session.release();
            let delay = std::mem::take(&mut session.delay);
            tokio::select! {
                () = token.cancelled() => {}
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

fn ready(frame: Frame) -> Later {
    Box::pin(async move { frame })
}

/// Resolves replies in order and writes them, flushing when the next one
/// is not ready or the buffer is large; stops after a closing reply.
async fn write_replies<W: AsyncWrite + Unpin>(
    mut socket: W,
    mut replies: mpsc::Receiver<Queued>,
    frame_timeout: Duration,
) -> io::Result<()> {
    let mut out = BytesMut::with_capacity(16 << 10);
    loop {
        let queued = match replies.try_recv() {
            Ok(queued) => queued,
            Err(mpsc::error::TryRecvError::Empty) => {
                flush(&mut socket, &mut out, frame_timeout).await?;
                match replies.recv().await {
                    Some(queued) => queued,
                    None => break,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        let mut reply = queued.reply;
        let frame = match futures::poll!(reply.as_mut()) {
            std::task::Poll::Ready(frame) => frame,
            std::task::Poll::Pending => {
                flush(&mut socket, &mut out, frame_timeout).await?;
                reply.await
            }
        };
        drop(queued.charge);
        frame.encode(queued.version, &mut out);
        if let Some(done) = queued.done {
            let _ = done.send(());
        }
        if queued.close {
            break;
        }
        if out.len() >= FLUSH_AT {
            flush(&mut socket, &mut out, frame_timeout).await?;
        }
    }
    flush(&mut socket, &mut out, frame_timeout).await?;
    let _ = socket.shutdown().await;
    Ok(())
}

/// Writes what `out` holds, within `timeout`.
async fn flush<W: AsyncWrite + Unpin>(
    socket: &mut W,
    out: &mut BytesMut,
    timeout: Duration,
) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let data = out.split().freeze();
    match tokio::time::timeout(timeout, socket.write_all(&data)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client does not take its replies",
        )),
    }
}
