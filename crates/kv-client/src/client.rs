//! [`Client`]: a cheap-to-clone handle on one pipelined connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kv_proto::{AuthRequest, DEFAULT_MAX_FRAME_SIZE, request, response};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot};

use crate::connection::{self, Call, Shared};
use crate::error::{ClientError, Result};
use crate::tls::{AuthToken, ClientTls, Stream};

/// How a [`Client`] connects and what it allows.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Largest frame (request sent or response accepted), in bytes. Should
    /// match the server's maximum: a larger request is refused by the
    /// server, which then closes the connection.
    pub max_frame_size: usize,
    /// How long making a connection may take: name lookup, the TCP
    /// connect, the TLS handshake and authentication together.
    pub connect_timeout: Duration,
    /// How long one call may take, from the moment it is made until its
    /// answer arrives (waiting for an in-flight slot included); `None`
    /// waits as long as the connection lives.
    pub request_timeout: Option<Duration>,
    /// Requests that may be queued or awaiting an answer at once; a call
    /// beyond that waits for a slot (backpressure). At least 1.
    pub max_in_flight: usize,
    /// TLS to the server; `None`: plain TCP.
    pub tls: Option<ClientTls>,
    /// The token every new connection authenticates with, before any
    /// call; `None`: none (the server must not need one).
    pub auth_token: Option<AuthToken>,
}

impl ClientOptions {
    /// These options for a connection to `addr` (HOST:PORT): TLS then
    /// checks the server's certificate for HOST (unless a name was fixed
    /// with [`ClientTls::with_server_name`]). Without it, a TLS connection
    /// checks for the IP address it reached.
    pub fn for_addr(&self, addr: &str) -> ClientOptions {
        let mut options = self.clone();
        options.tls = self.tls.as_ref().map(|tls| tls.for_addr(addr));
        options
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Some(Duration::from_secs(30)),
            max_in_flight: 1024,
            tls: None,
            auth_token: None,
        }
    }
}

/// One page of a key listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeysPage {
    /// The matching keys, in ascending byte order.
    pub keys: Vec<Bytes>,
    /// True when more keys matched than the limit allowed.
    pub truncated: bool,
}

/// A connection to a kv-server.
///
/// Cloning is cheap and every clone shares the one connection. Calls take
/// `&self`, so many tasks may call at once: their requests are pipelined on
/// the connection (written without waiting for earlier answers) and each
/// call gets its own answer. When the connection breaks, every call in
/// flight fails with an error, and so does every later call: connect again
/// to go on ([`ClientError::is_connection_lost`] tells when), or use a
/// [`crate::ClusterClient`], which reconnects by itself.
///
/// A client must be created inside a tokio runtime, which runs its
/// background tasks; they stop when the connection closes or the last clone
/// is dropped.
#[derive(Clone)]
pub struct Client {
    calls: mpsc::Sender<Call>,
    shared: Arc<Shared>,
    options: Arc<ClientOptions>,
    peer: SocketAddr,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("peer", &self.peer)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the server at `addr` with default options.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Client> {
        Client::connect_with(addr, ClientOptions::default()).await
    }

    /// Connects to the server at `addr`, trying each address it resolves
    /// to in turn; with [`ClientOptions::tls`], makes the TLS handshake,
    /// and with [`ClientOptions::auth_token`], authenticates, before it
    /// returns. (With TLS and a host name, pass `options.for_addr(addr)`,
    /// so that the certificate is checked for that name.)
    ///
    /// # Errors
    /// [`ClientError::Connect`] (timeout included), [`ClientError::Tls`]
    /// when the handshake fails (an untrusted certificate, a server that
    /// does not speak TLS), or the server's answer to the token
    /// ([`ClientError::Server`] with UNAUTHENTICATED for a wrong one).
    pub async fn connect_with(addr: impl ToSocketAddrs, options: ClientOptions) -> Result<Client> {
        let timeout = options.connect_timeout;
        match tokio::time::timeout(timeout, Client::establish(addr, options)).await {
            Ok(client) => client,
            Err(_) => Err(ClientError::Connect {
                addr: None,
                source: Arc::new(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("timed out after {timeout:?}"),
                )),
            }),
        }
    }

    async fn establish(addr: impl ToSocketAddrs, options: ClientOptions) -> Result<Client> {
        let stream = open_stream(addr).await?;
        let peer = stream.peer_addr().map_err(|e| connect_error(None, e))?;
        // Requests are batched by the writer task before each flush, so
        // Nagle's delay would only add latency.
        stream
            .set_nodelay(true)
            .map_err(|e| connect_error(Some(peer), e))?;
        let stream = match &options.tls {
            None => Stream::Plain(stream),
            Some(tls) => match tls.handshake(stream, peer).await {
                Ok(stream) => Stream::Tls(Box::new(stream)),
                Err(e) => {
                    return Err(ClientError::Tls {
                        addr: peer,
                        source: Arc::new(e),
                    });
                }
            },
        };
        let max_in_flight = options.max_in_flight.max(1);
        let (calls, shared) = connection::start(stream, options.max_frame_size, max_in_flight);
        let token = options.auth_token.clone();
        let client = Client {
            calls,
            shared,
            options: Arc::new(options),
            peer,
        };
        if let Some(token) = token {
            let auth = request::Command::Auth(AuthRequest {
                token: token.bytes(),
            });
            match client.call(auth).await? {
                response::Result::Auth(_) => {}
                other => {
                    return Err(ClientError::Protocol(format!(
                        "auth request answered with {other:?}"
                    )));
                }
            }
        }
        Ok(client)
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// True once the connection has closed; every call then fails.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Sets `key` to `value`; returns the sequence number (LSN) of the
    /// write, which is durable when this returns.
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<u64> {
        ops::put(
            self.call(ops::put_command(key.into(), value.into()))
                .await?,
        )
    }

    /// The value of `key`, or `None` if it does not exist.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>> {
        ops::get(self.call(ops::get_command(key.into())).await?)
    }

    /// Removes `key`. Returns the sequence number of the durable delete, or
    /// `None` if the key did not exist (then nothing was written).
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<Option<u64>> {
        ops::delete(self.call(ops::delete_command(key.into())).await?)
    }

    /// Keys starting with `prefix` (empty: all keys) in ascending byte
    /// order, at most `limit` of them (0: no limit).
    pub async fn keys(&self, prefix: impl Into<Bytes>, limit: u32) -> Result<KeysPage> {
        ops::keys(self.call(ops::keys_command(prefix.into(), limit)).await?)
    }

    /// Makes the server write a snapshot and drop the log it makes
    /// redundant; returns the sequence number the snapshot covers.
    pub async fn checkpoint(&self) -> Result<u64> {
        ops::checkpoint(self.call(ops::checkpoint_command()).await?)
    }

    /// Copies a consistent backup of the server's state (a snapshot, taken
    /// by a checkpoint) into the file at `path`; see the `backup` command
    /// for what the file holds. `path` appears only once the copy is whole
    /// and synced.
    pub async fn backup(&self, path: impl AsRef<std::path::Path>) -> Result<crate::BackupInfo> {
        crate::backup::run(path.as_ref(), |command| self.call(command)).await
    }

    /// Sends any command and returns the server's result. An error result
    /// becomes [`ClientError::Server`]; the result's kind is not checked
    /// against the command.
    pub async fn call(&self, command: request::Command) -> Result<response::Result> {
        self.try_call(command).await.map_err(CallError::into_error)
    }

    /// As [`Client::call`], telling a request that never left this client
    /// from one that may have reached the server.
    pub(crate) async fn try_call(
        &self,
        command: request::Command,
    ) -> Result<response::Result, CallError> {
        match self.options.request_timeout {
            // The answer is late: the request may be queued here still, or
            // applied there already. Nothing says which, so: maybe sent.
            Some(limit) => tokio::time::timeout(limit, self.call_inner(command))
                .await
                .map_err(|_| CallError::MaybeSent(ClientError::Timeout(limit)))?,
            None => self.call_inner(command).await,
        }
    }

    async fn call_inner(&self, command: request::Command) -> Result<response::Result, CallError> {
        if self.shared.is_closed() {
            return Err(CallError::NotSent(self.shared.close_reason()));
        }
        // The semaphore is closed when the connection closes, waking calls
        // that wait here.
        let permit = self
            .shared
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| CallError::NotSent(self.shared.close_reason()))?;
        let (reply, answer) = oneshot::channel();
        self.calls
            .send(Call {
                command,
                reply,
                permit,
            })
            .await
            .map_err(|_| CallError::NotSent(self.shared.close_reason()))?;
        // A reply dropped unanswered means the connection closed before the
        // request was registered, so before it was written; the reason was
        // recorded before anything was dropped. An answered reply, error or
        // not, is about a request that was (or may have been) written; the
        // one exception, RequestTooLarge, is refused before writing, but it
        // is no connection error, so nobody sends it again anyway.
        match answer.await {
            Ok(result) => result.map_err(CallError::MaybeSent),
            Err(_) => Err(CallError::NotSent(self.shared.close_reason())),
        }
    }
}

/// Why a call failed, with whether its request may have reached the server.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The request was never written: the connection was closed before
    /// it was registered. Sending it elsewhere cannot apply it twice.
    NotSent(ClientError),
    /// The request was (or may have been) written: the error is the
    /// server's answer, or the answer was lost.
    MaybeSent(ClientError),
}

impl CallError {
    pub(crate) fn into_error(self) -> ClientError {
        match self {
            CallError::NotSent(err) | CallError::MaybeSent(err) => err,
        }
    }
}

async fn open_stream(addr: impl ToSocketAddrs) -> Result<TcpStream> {
    let addrs = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| connect_error(None, e))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(err) => last = Some(connect_error(Some(addr), err)),
        }
    }
    Err(last.unwrap_or_else(|| {
        connect_error(
            None,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the address resolved to nothing",
            ),
        )
    }))
}

fn connect_error(addr: Option<SocketAddr>, err: io::Error) -> ClientError {
    ClientError::Connect {
        addr,
        source: Arc::new(err),
    }
}

/// Each typed call as a command and the decoding of its result, shared
/// by [`Client`] and [`crate::ClusterClient`].
pub(crate) mod ops {
    use bytes::Bytes;
    use kv_proto::{
        CheckpointRequest, DeleteRequest, GetRequest, KeysRequest, PutRequest, request, response,
    };

    use super::KeysPage;
    use crate::error::{ClientError, Result};

    pub(crate) fn put_command(key: Bytes, value: Bytes) -> request::Command {
        request::Command::Put(PutRequest {
            key,
            value,
            ..Default::default()
        })
    }

    pub(crate) fn put(result: response::Result) -> Result<u64> {
        match result {
            response::Result::Put(put) => Ok(put.seq),
            other => Err(unexpected("put", &other)),
        }
    }

    pub(crate) fn get_command(key: Bytes) -> request::Command {
        request::Command::Get(GetRequest { key })
    }

    pub(crate) fn get(result: response::Result) -> Result<Option<Bytes>> {
        match result {
            response::Result::Get(get) => Ok(get.found.then_some(get.value)),
            other => Err(unexpected("get", &other)),
        }
    }

    pub(crate) fn delete_command(key: Bytes) -> request::Command {
        request::Command::Delete(DeleteRequest {
            key,
            ..Default::default()
        })
    }

    pub(crate) fn delete(result: response::Result) -> Result<Option<u64>> {
        match result {
            response::Result::Delete(delete) => Ok(delete.existed.then_some(delete.seq)),
            other => Err(unexpected("delete", &other)),
        }
    }

    pub(crate) fn keys_command(prefix: Bytes, limit: u32) -> request::Command {
        request::Command::Keys(KeysRequest { prefix, limit })
    }

    pub(crate) fn keys(result: response::Result) -> Result<KeysPage> {
        match result {
            response::Result::Keys(keys) => Ok(KeysPage {
                keys: keys.keys,
                truncated: keys.truncated,
            }),
            other => Err(unexpected("keys", &other)),
        }
    }

    pub(crate) fn checkpoint_command() -> request::Command {
        request::Command::Checkpoint(CheckpointRequest {})
    }

    pub(crate) fn checkpoint(result: response::Result) -> Result<u64> {
        match result {
            response::Result::Checkpoint(checkpoint) => Ok(checkpoint.seq),
            other => Err(unexpected("checkpoint", &other)),
        }
    }

    fn unexpected(command: &str, result: &response::Result) -> ClientError {
        let kind = match result {
            response::Result::Error(_) => "error",
            response::Result::Get(_) => "get",
            response::Result::Put(_) => "put",
            response::Result::Delete(_) => "delete",
            response::Result::Keys(_) => "keys",
            response::Result::Checkpoint(_) => "checkpoint",
            response::Result::ClusterStatus(_) => "cluster status",
            response::Result::Backup(_) => "backup",
            response::Result::Auth(_) => "auth",
            response::Result::Batch(_) => "batch",
            response::Result::Incr(_) => "incr",
            response::Result::Expire(_) => "expire",
            response::Result::Ttl(_) => "ttl",
            response::Result::Scan(_) => "scan",
            response::Result::Mget(_) => "mget",
            response::Result::Stats(_) => "stats",
        };
        ClientError::Protocol(format!("{command} request answered with a {kind} result"))
    }
}
