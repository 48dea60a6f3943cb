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

/// The typed calls of the store's features, the same on [`Client`] and
/// [`crate::ClusterClient`] (both have `call`). A [`crate::ClusterClient`]
/// resends the reads (versioned get, ttl, scan, mget, stats) after a lost
/// connection, never the writes: a write whose connection failed after it
/// was sent fails with [`ClientError::OutcomeUnknown`].
macro_rules! feature_calls {
    () => {
        /// The value of `key` with its version and deadline, or `None` if
        /// it does not exist.
        pub async fn get_versioned(
            &self,
            key: impl Into<bytes::Bytes>,
        ) -> $crate::Result<Option<$crate::Versioned>> {
            ops::get_versioned(self.call(ops::get_command(key.into())).await?)
        }

        /// Sets `key` to `value` as `options` say (a condition, a
        /// deadline); returns the write's seq, the key's new version.
        ///
        /// # Errors
        /// [`ClientError::ConditionFailed`] when the condition did not
        /// hold (nothing was written).
        pub async fn put_with(
            &self,
            key: impl Into<bytes::Bytes>,
            value: impl Into<bytes::Bytes>,
            options: $crate::PutOptions,
        ) -> $crate::Result<u64> {
            let command = ops::put_with_command(key.into(), value.into(), options);
            ops::put(self.call(command).await?)
        }

        /// Removes `key` if `condition` holds of it. Returns the seq of
        /// the delete, or `None` if the key did not exist (possible only
        /// with a condition a missing key meets: [`Condition::Absent`]).
        ///
        /// # Errors
        /// [`ClientError::ConditionFailed`] when the condition did not
        /// hold (nothing was written).
        ///
        /// [`Condition::Absent`]: crate::Condition::Absent
        pub async fn delete_if(
            &self,
            key: impl Into<bytes::Bytes>,
            condition: $crate::Condition,
        ) -> $crate::Result<Option<u64>> {
            ops::delete(
                self.call(ops::delete_if_command(key.into(), condition))
                    .await?,
            )
        }

        /// Applies `writes` in order, all or none, if every one of
        /// `conditions` holds (as etcd's Txn: compare, then write). Returns
        /// the batch's one seq: every key it put has this version.
        ///
        /// # Errors
        /// [`ClientError::ConditionFailed`] naming the first condition that
        /// did not hold; INVALID_REQUEST ([`ClientError::Server`]) for an
        /// empty batch, or an increment of a value that is not an integer.
        pub async fn batch(
            &self,
            writes: impl IntoIterator<Item = $crate::Write>,
            conditions: impl IntoIterator<Item = $crate::KeyCondition>,
        ) -> $crate::Result<u64> {
            ops::batch(self.call(ops::batch_command(writes, conditions)).await?)
        }

        /// Adds `delta` (may be negative) to the decimal integer in `key`,
        /// a missing key counting as 0; the key keeps its deadline.
        ///
        /// # Errors
        /// INVALID_REQUEST ([`ClientError::Server`]) when the value is not
        /// a signed 64-bit decimal integer or the sum overflows; nothing is
        /// written then.
        pub async fn incr(
            &self,
            key: impl Into<bytes::Bytes>,
            delta: i64,
        ) -> $crate::Result<$crate::Counter> {
            ops::incr(self.call(ops::incr_command(key.into(), delta)).await?)
        }

        /// Makes `key` expire `ttl` from now (rounded up to milliseconds).
        /// `None` if the key does not exist.
        ///
        /// # Errors
        /// INVALID_REQUEST ([`ClientError::Server`]) for a zero `ttl`.
        pub async fn expire(
            &self,
            key: impl Into<bytes::Bytes>,
            ttl: std::time::Duration,
        ) -> $crate::Result<Option<$crate::DeadlineChange>> {
            let command = ops::expire_command(key.into(), ops::Deadline::After(ttl));
            ops::expire(self.call(command).await?)
        }

        /// Makes `key` expire at `expires_at_ms` (milliseconds since the
        /// Unix epoch; a time already past removes it at once). `None` if
        /// the key does not exist.
        ///
        /// # Errors
        /// INVALID_REQUEST ([`ClientError::Server`]) for 0 or a time past
        /// the year 9999.
        pub async fn expire_at(
            &self,
            key: impl Into<bytes::Bytes>,
            expires_at_ms: u64,
        ) -> $crate::Result<Option<$crate::DeadlineChange>> {
            let command = ops::expire_command(key.into(), ops::Deadline::At(expires_at_ms));
            ops::expire(self.call(command).await?)
        }

        /// Clears `key`'s deadline: it lives until deleted. `None` if the
        /// key does not exist; [`DeadlineChange::seq`] is `None` if it had
        /// no deadline.
        ///
        /// [`DeadlineChange::seq`]: crate::DeadlineChange::seq
        pub async fn persist(
            &self,
            key: impl Into<bytes::Bytes>,
        ) -> $crate::Result<Option<$crate::DeadlineChange>> {
            let command = ops::expire_command(key.into(), ops::Deadline::Never);
            ops::expire(self.call(command).await?)
        }

        /// `key`'s remaining time to live, or `None` if it does not exist.
        pub async fn ttl(
            &self,
            key: impl Into<bytes::Bytes>,
        ) -> $crate::Result<Option<$crate::Ttl>> {
            ops::ttl(self.call(ops::ttl_command(key.into())).await?)
        }

        /// One page of the scan `options` describe. To read on, call again
        /// with [`ScanOptions::after`] set to the page's
        /// [`ScanPage::resume_after`] while [`ScanPage::more`] holds, or use
        /// `scan_all`.
        ///
        /// [`ScanOptions::after`]: crate::ScanOptions::after
        /// [`ScanPage::resume_after`]: crate::ScanPage::resume_after
        /// [`ScanPage::more`]: crate::ScanPage::more
        pub async fn scan(
            &self,
            options: &$crate::ScanOptions,
        ) -> $crate::Result<$crate::ScanPage> {
            ops::scan(self.call(ops::scan_command(options)).await?, options.values)
        }

        /// Every key of the scan `options` describe, page after page
        /// ([`ScanOptions::limit`] is the page size), collected in memory:
        /// for ranges that fit it; page with `scan` otherwise. Each page is
        /// a consistent view, the whole is not (writes between pages show).
        ///
        /// [`ScanOptions::limit`]: crate::ScanOptions::limit
        pub async fn scan_all(
            &self,
            options: $crate::ScanOptions,
        ) -> $crate::Result<Vec<$crate::ScanItem>> {
            ops::scan_all(options, |command| self.call(command)).await
        }

        /// The values of `keys`, in their order (`None` for a missing key),
        /// read in one request.
        pub async fn mget<K: Into<bytes::Bytes>>(
            &self,
            keys: impl IntoIterator<Item = K>,
        ) -> $crate::Result<Vec<Option<$crate::Versioned>>> {
            let keys: Vec<bytes::Bytes> = keys.into_iter().map(Into::into).collect();
            let asked = keys.len();
            ops::mget(self.call(ops::mget_command(keys)).await?, asked)
        }

        /// The store's counters and sizes.
        pub async fn stats(&self) -> $crate::Result<$crate::Stats> {
            ops::stats(self.call(ops::stats_command()).await?)
        }
    };
}
pub(crate) use feature_calls;

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

    feature_calls!();

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
    use std::time::Duration;

    use kv_proto::{
        BatchRequest, CheckpointRequest, DeleteRequest, ExpireRequest, GetRequest, IncrRequest,
        KeysRequest, MgetRequest, PutRequest, StatsRequest, TtlRequest, request, response,
    };

    use super::KeysPage;
    use crate::error::{ClientError, Result};
    use crate::model::{
        Condition, Counter, DeadlineChange, KeyCondition, PutOptions, ScanItem, ScanOptions,
        ScanPage, Stats, Ttl, Versioned, Write, duration_ms,
    };

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

    pub(crate) fn get_versioned(result: response::Result) -> Result<Option<Versioned>> {
        match result {
            response::Result::Get(get) => Ok(Versioned::from_get(get)),
            other => Err(unexpected("get", &other)),
        }
    }

    pub(crate) fn put_with_command(
        key: Bytes,
        value: Bytes,
        options: PutOptions,
    ) -> request::Command {
        request::Command::Put(PutRequest {
            key,
            value,
            condition: options.condition.map(|c| c.to_proto(Bytes::new())),
            ttl_ms: options.ttl.map_or(0, duration_ms),
            expires_at_ms: options.expires_at_ms.unwrap_or(0),
            keep_ttl: options.keep_ttl,
        })
    }

    pub(crate) fn delete_if_command(key: Bytes, condition: Condition) -> request::Command {
        request::Command::Delete(DeleteRequest {
            key,
            condition: Some(condition.to_proto(Bytes::new())),
        })
    }

    pub(crate) fn batch_command(
        writes: impl IntoIterator<Item = Write>,
        conditions: impl IntoIterator<Item = KeyCondition>,
    ) -> request::Command {
        request::Command::Batch(BatchRequest {
            writes: writes.into_iter().map(Write::into_proto).collect(),
            conditions: conditions
                .into_iter()
                .map(|c| c.condition.to_proto(c.key))
                .collect(),
        })
    }

    pub(crate) fn batch(result: response::Result) -> Result<u64> {
        match result {
            response::Result::Batch(batch) => Ok(batch.seq),
            other => Err(unexpected("batch", &other)),
        }
    }

    pub(crate) fn incr_command(key: Bytes, delta: i64) -> request::Command {
        request::Command::Incr(IncrRequest { key, delta })
    }

    pub(crate) fn incr(result: response::Result) -> Result<Counter> {
        match result {
            response::Result::Incr(incr) => Ok(Counter {
                value: incr.value,
                seq: incr.seq,
            }),
            other => Err(unexpected("incr", &other)),
        }
    }

    /// How an expire request sets or clears the deadline.
    pub(crate) enum Deadline {
        After(Duration),
        At(u64),
        Never,
    }

    pub(crate) fn expire_command(key: Bytes, deadline: Deadline) -> request::Command {
        let (ttl_ms, expires_at_ms, persist) = match deadline {
            Deadline::After(ttl) => (duration_ms(ttl), 0, false),
            Deadline::At(at) => (0, at, false),
            Deadline::Never => (0, 0, true),
        };
        request::Command::Expire(ExpireRequest {
            key,
            ttl_ms,
            expires_at_ms,
            persist,
        })
    }

    pub(crate) fn expire(result: response::Result) -> Result<Option<DeadlineChange>> {
        match result {
            response::Result::Expire(expire) => Ok(expire.found.then_some(DeadlineChange {
                seq: expire.changed.then_some(expire.seq),
            })),
            other => Err(unexpected("expire", &other)),
        }
    }

    pub(crate) fn ttl_command(key: Bytes) -> request::Command {
        request::Command::Ttl(TtlRequest { key })
    }

    pub(crate) fn ttl(result: response::Result) -> Result<Option<Ttl>> {
        match result {
            response::Result::Ttl(ttl) if !ttl.found => Ok(None),
            response::Result::Ttl(ttl) if !ttl.has_deadline => Ok(Some(Ttl::Persistent)),
            response::Result::Ttl(ttl) => Ok(Some(Ttl::Expires {
                remaining: Duration::from_millis(ttl.remaining_ms),
                expires_at_ms: ttl.expires_at_ms,
            })),
            other => Err(unexpected("ttl", &other)),
        }
    }

    pub(crate) fn scan_command(options: &ScanOptions) -> request::Command {
        request::Command::Scan(options.to_proto())
    }

    pub(crate) fn scan(result: response::Result, values: bool) -> Result<ScanPage> {
        match result {
            response::Result::Scan(page) => {
                let items = page
                    .items
                    .into_iter()
                    .map(|item| ScanItem {
                        key: item.key,
                        value: values.then_some(item.value),
                        seq: item.seq,
                    })
                    .collect();
                // A page that says "more" must say where from, or paging
                // would start over and never end.
                let resume_after = match (page.more, page.resume_after) {
                    (false, _) => None,
                    (true, after) if after.is_empty() => {
                        return Err(ClientError::Protocol(
                            "a scan page with more keys to come has no resume_after".into(),
                        ));
                    }
                    (true, after) => Some(after),
                };
                Ok(ScanPage {
                    items,
                    more: page.more,
                    resume_after,
                })
            }
            other => Err(unexpected("scan", &other)),
        }
    }

    /// Every page of the scan `options` describes, through `call`: the
    /// keys of all of them, in order.
    pub(crate) async fn scan_all<F, Fut>(mut options: ScanOptions, call: F) -> Result<Vec<ScanItem>>
    where
        F: Fn(request::Command) -> Fut,
        Fut: std::future::Future<Output = Result<response::Result>>,
    {
        let mut items = Vec::new();
        loop {
            let page = scan(call(scan_command(&options)).await?, options.values)?;
            items.extend(page.items);
            match page.resume_after {
                Some(after) if after != options.after => options.after = after,
                Some(_) => {
                    return Err(ClientError::Protocol(
                        "a scan page resumed where it began; the scan would not end".into(),
                    ));
                }
                None => return Ok(items),
            }
        }
    }

    pub(crate) fn mget_command(keys: Vec<Bytes>) -> request::Command {
        request::Command::Mget(MgetRequest { keys })
    }

    pub(crate) fn mget(result: response::Result, asked: usize) -> Result<Vec<Option<Versioned>>> {
        match result {
            response::Result::Mget(mget) if mget.values.len() == asked => {
                Ok(mget.values.into_iter().map(Versioned::from_get).collect())
            }
            response::Result::Mget(mget) => Err(ClientError::Protocol(format!(
                "a multi-get of {asked} keys answered with {} values",
                mget.values.len()
            ))),
            other => Err(unexpected("mget", &other)),
        }
    }

    pub(crate) fn stats_command() -> request::Command {
        request::Command::Stats(StatsRequest {})
    }

    pub(crate) fn stats(result: response::Result) -> Result<Stats> {
        match result {
            response::Result::Stats(stats) => Ok(stats.into()),
            other => Err(unexpected("stats", &other)),
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
