//! [`ClusterClient`]: calls that find a cluster's leader and follow it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kv_proto::{ErrorCode, request, response};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::client::{CallError, Client, ClientOptions, KeysPage, ops};
use crate::error::{ClientError, Result};

/// How a [`ClusterClient`] connects and how long it keeps looking for the
/// leader.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Options of each connection it makes.
    pub client: ClientOptions,
    /// How long one call may keep trying members (NOT_LEADER answers,
    /// refused connections, lost reads) before it gives up with
    /// [`ClientError::NoLeader`]. No new attempt starts once this is spent,
    /// but one attempt may take up to the connect or request timeout.
    pub retry_for: Duration,
    /// The pause after a round of attempts in which no member took the
    /// call (an election is likely under way); it doubles each round.
    pub initial_backoff: Duration,
    /// The longest pause between rounds.
    pub max_backoff: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            client: ClientOptions::default(),
            // A new leader serves writes within a second of the old one's
            // death (DESIGN.md); twice that covers a slow election.
            retry_for: Duration::from_secs(2),
            // Short pauses: a call waiting out an election notices the
            // new leader within 50 ms of its taking over, for a few dozen
            // small requests a second per waiting call (a member answers
            // NOT_LEADER without touching its log). With pauses of up to
            // 100 ms, the failover times of `cargo xtask bench --cluster`
            // fell in 100 ms steps (about 470, 570 and 670 ms): the wait
            // for the client's next round, not for the election.
            initial_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(50),
        }
    }
}

/// A client of a replicated cluster, given the client addresses of some or
/// all of its members: it sends each call to the leader, finding it first.
///
/// It holds one connection (a [`Client`]) at a time. When a call is
/// answered NOT_LEADER, the connection is dropped and the call goes to the
/// leader that answer names (`leader_addr`), or, if the member did not know
/// it, to the next address; so do calls whose connection cannot be made.
/// Such calls were never applied (a follower applies nothing it is sent),
/// so trying them elsewhere is safe. When a whole round of addresses has
/// been tried without success, it pauses (25 ms, doubling, at most 50 ms)
/// and tries again, for at most [`ClusterOptions::retry_for`]; then the
/// call fails with [`ClientError::NoLeader`]. If no address even accepted a
/// connection in a round, there is no cluster to wait for, and the call
/// fails at once with that connect error.
///
/// A write (put, delete, conditional or not, batch, incr, expire, persist,
/// a membership change) whose connection fails after it was sent (I/O
/// error, closed, timeout) is *not* sent again: it may have been applied,
/// and sending it again could apply it twice (or, for a conditional write,
/// report a condition failure caused by its own first copy). It fails
/// with [`ClientError::OutcomeUnknown`]. Reads (get, keys, ttl, scan, mget,
/// stats, cluster status) and checkpoints, which change no key, are tried
/// again on another connection. A CONDITION_FAILED answer is final
/// ([`ClientError::ConditionFailed`]).
///
/// Why a type of its own rather than more constructors of [`Client`]: a
/// `Client` is one connection, and its errors say so (after a connection
/// loss every call fails until the caller connects again), which is what a
/// caller that pipelines many requests, or drives one server, wants. The
/// reconnecting, retrying and "outcome unknown" rules live here, on top.
///
/// Cloning is cheap; clones share the connection and the position in the
/// address list. Calls take `&self` and may run concurrently: they share
/// the connection and are pipelined on it. No connection is made before
/// the first call.
///
/// ```no_run
/// use kv_client::{ClusterClient, ClusterOptions};
///
/// # async fn example() -> kv_client::Result<()> {
/// let client = ClusterClient::new(
///     ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"],
///     ClusterOptions::default(),
/// )?;
/// client.put("greeting", "hello").await?; // on the leader, wherever it is
/// assert_eq!(client.get("greeting").await?.as_deref(), Some(&b"hello"[..]));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ClusterClient {
    inner: Arc<Inner>,
}

struct Inner {
    addrs: Vec<String>,
    options: ClusterOptions,
    state: Mutex<State>,
}

/// What the clones share. Connecting happens with the lock held, so that
/// concurrent calls wait for one new connection instead of making many.
struct State {
    current: Option<Live>,
    /// The address (index into `addrs`) to try when there is no connection
    /// and no leader named: the last one that worked, or the next untried.
    cursor: usize,
    next_generation: u64,
}

/// The connection in use.
#[derive(Clone)]
struct Live {
    client: Client,
    /// Where it goes, as given (a configured address or a `leader_addr`).
    addr: String,
    /// Its index in `addrs`, or `None` for a leader named by a follower.
    list_index: Option<usize>,
    /// Tells this connection from a later one to the same address.
    generation: u64,
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("addrs", &self.inner.addrs)
            .finish_non_exhaustive()
    }
}

/// One failed attempt that may be tried elsewhere.
struct Retry {
    error: ClientError,
    /// A server answered (NOT_LEADER, or a connection that then broke), as
    /// opposed to no connection at all: a cluster is there to wait for.
    answered: bool,
    /// The leader a follower named, to try next.
    leader: Option<String>,
}

impl ClusterClient {
    /// A client of the cluster whose members' client addresses (HOST:PORT)
    /// are `addrs`; calls try them in this order. One address is fine too:
    /// NOT_LEADER answers are still followed. Connects on the first call.
    ///
    /// # Errors
    /// [`ClientError::NoAddress`] if `addrs` is empty.
    pub fn new<I, S>(addrs: I, options: ClusterOptions) -> Result<ClusterClient>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let addrs: Vec<String> = addrs.into_iter().map(Into::into).collect();
        if addrs.is_empty() {
            return Err(ClientError::NoAddress);
        }
        Ok(ClusterClient {
            inner: Arc::new(Inner {
                addrs,
                options,
                state: Mutex::new(State {
                    current: None,
                    cursor: 0,
                    next_generation: 0,
                }),
            }),
        })
    }

    /// The addresses it was given.
    pub fn addrs(&self) -> &[String] {
        &self.inner.addrs
    }

    /// The address of the live connection, if there is one: after a
    /// successful call, the leader's (as given, or as a follower named it).
    pub async fn connected_to(&self) -> Option<String> {
        let state = self.inner.state.lock().await;
        state
            .current
            .as_ref()
            .filter(|live| !live.client.is_closed())
            .map(|live| live.addr.clone())
    }

    /// Sets `key` to `value` on the leader; returns the sequence number
    /// (LSN) of the write, which is committed when this returns.
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<u64> {
        ops::put(
            self.call(ops::put_command(key.into(), value.into()))
                .await?,
        )
    }

    /// The value of `key` on the leader, or `None` if it does not exist.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>> {
        ops::get(self.call(ops::get_command(key.into())).await?)
    }

    /// Removes `key`. Returns the sequence number of the delete, or `None`
    /// if the key did not exist (then nothing was written).
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<Option<u64>> {
        ops::delete(self.call(ops::delete_command(key.into())).await?)
    }

    /// Keys starting with `prefix` (empty: all keys) in ascending byte
    /// order, at most `limit` of them (0: no limit).
    pub async fn keys(&self, prefix: impl Into<Bytes>, limit: u32) -> Result<KeysPage> {
        ops::keys(self.call(ops::keys_command(prefix.into(), limit)).await?)
    }

    crate::client::feature_calls!();

    /// Makes the member that takes it write a snapshot; returns the
    /// sequence number the snapshot covers.
    pub async fn checkpoint(&self) -> Result<u64> {
        ops::checkpoint(self.call(ops::checkpoint_command()).await?)
    }

    /// Copies a consistent backup of the leader's state into the file at
    /// `path`, as [`crate::Client::backup`]. Every piece must come from one
    /// member (two members' snapshots of one position differ in their
    /// headers): if the leader changes during the copy, the backup fails
    /// and should be run again.
    pub async fn backup(&self, path: impl AsRef<std::path::Path>) -> Result<crate::BackupInfo> {
        let source: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
        let source = &source;
        crate::backup::run(path.as_ref(), |command| async move {
            let result = self.call(command).await?;
            let now = self.connected_to().await;
            let mut first = source.lock().unwrap_or_else(|e| e.into_inner());
            match (&*first, now) {
                (None, now) => *first = now,
                (Some(a), Some(b)) if *a == b => {}
                (Some(a), b) => {
                    return Err(ClientError::Protocol(format!(
                        "the backup began on {a} and went on to {}; run it again",
                        b.as_deref().unwrap_or("another member")
                    )));
                }
            }
            Ok(result)
        })
        .await
    }

    /// Sends any command to the leader, finding it first, and returns its
    /// result, with the rules of the type's documentation. An error result
    /// other than NOT_LEADER becomes [`ClientError::Server`] at once.
    pub async fn call(&self, command: request::Command) -> Result<response::Result> {
        let resend_after_loss = safe_to_resend(&command);
        let options = &self.inner.options;
        let started = Instant::now();
        let deadline = started + options.retry_for;
        let mut backoff = options.initial_backoff;
        let mut leader: Option<String> = None;
        // Attempts since the last pause, and whether a server answered any.
        let mut attempts = 0;
        let mut answered = false;
        let mut answered_ever = false;
        loop {
            let retry = match self
                .attempt(&command, leader.take(), resend_after_loss)
                .await
            {
                Ok(result) => return result,
                Err(retry) => retry,
            };
            attempts += 1;
            answered |= retry.answered;
            answered_ever |= retry.answered;
            let give_up = |error: ClientError| {
                if answered_ever {
                    ClientError::NoLeader {
                        waited: started.elapsed(),
                        last: Box::new(error),
                    }
                } else {
                    error
                }
            };
            if Instant::now() >= deadline {
                return Err(give_up(retry.error));
            }
            // A named leader is tried at once; otherwise, after a round
            // over every address, pause.
            leader = retry.leader;
            if leader.is_none() && attempts >= self.inner.addrs.len() {
                if !answered {
                    // Nobody accepted a connection: no election to wait for.
                    return Err(retry.error);
                }
                if Instant::now() + backoff >= deadline {
                    return Err(give_up(retry.error));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(options.max_backoff);
                attempts = 0;
                answered = false;
            }
        }
    }

    /// One try: the call's final result (`Ok`), or a failure that may be
    /// tried elsewhere (`Err`).
    async fn attempt(
        &self,
        command: &request::Command,
        leader: Option<String>,
        resend_after_loss: bool,
    ) -> Result<Result<response::Result>, Retry> {
        let live = self.connection(leader).await.map_err(|error| Retry {
            error,
            answered: false,
            leader: None,
        })?;
        let error = match live.client.try_call(command.clone()).await {
            Ok(result) => return Ok(Ok(result)),
            // The connection had closed before the request left: it can go
            // anywhere. Unless the server closed it with an error of its
            // own (too many clients, say): that answer is final whether it
            // came before the request was sent or after.
            Err(CallError::NotSent(error)) => {
                self.discard(&live).await;
                if let ClientError::Server { .. } = error {
                    return Ok(Err(error));
                }
                return Err(Retry {
                    error,
                    answered: true,
                    leader: None,
                });
            }
            Err(CallError::MaybeSent(error)) => error,
        };
        match error {
            ClientError::Server {
                code: ErrorCode::NotLeader,
                ref leader_addr,
                ..
            } => {
                self.discard(&live).await;
                // A leader named by a member we reached through another
                // member's hint is not followed: two stale hints naming each
                // other must not keep us from the rest of the list.
                let leader = leader_addr
                    .clone()
                    .filter(|addr| live.list_index.is_some() && *addr != live.addr);
                Err(Retry {
                    error,
                    answered: true,
                    leader,
                })
            }
            error if error.is_connection_lost() || matches!(error, ClientError::Timeout(_)) => {
                self.discard(&live).await;
                if !resend_after_loss {
                    return Ok(Err(ClientError::OutcomeUnknown {
                        addr: live.addr,
                        source: Box::new(error),
                    }));
                }
                Err(Retry {
                    error,
                    answered: true,
                    leader: None,
                })
            }
            // The server's answer (including OUTCOME_UNKNOWN), or an error
            // about this request alone: final.
            error => Ok(Err(error)),
        }
    }

    /// The live connection, or a new one: to `leader` if given, else to the
    /// address at the cursor (which then moves on if the connect fails).
    async fn connection(&self, leader: Option<String>) -> Result<Live> {
        let mut state = self.inner.state.lock().await;
        if let Some(live) = &state.current {
            if !live.client.is_closed() {
                return Ok(live.clone());
            }
            state.current = None;
        }
        let (addr, list_index) = match leader {
            Some(addr) => (addr, None),
            None => (self.inner.addrs[state.cursor].clone(), Some(state.cursor)),
        };
        let options = self.inner.options.client.for_addr(&addr);
        match Client::connect_with(addr.as_str(), options).await {
            Ok(client) => {
                let live = Live {
                    client,
                    addr,
                    list_index,
                    generation: state.next_generation,
                };
                state.next_generation += 1;
                state.current = Some(live.clone());
                Ok(live)
            }
            Err(error) => {
                self.advance_past(&mut state, list_index);
                Err(error)
            }
        }
    }

    /// Forgets `live` (unless a newer connection replaced it already) and
    /// moves the cursor past its address.
    async fn discard(&self, live: &Live) {
        let mut state = self.inner.state.lock().await;
        if state
            .current
            .as_ref()
            .is_some_and(|current| current.generation == live.generation)
        {
            state.current = None;
        }
        self.advance_past(&mut state, live.list_index);
    }

    /// Moves the cursor to the address after `failed`, if it still points
    /// there (a concurrent call may have moved it already).
    fn advance_past(&self, state: &mut State, failed: Option<usize>) {
        if failed == Some(state.cursor) {
            state.cursor = (state.cursor + 1) % self.inner.addrs.len();
        }
    }
}

/// Whether sending `command` twice is harmless, so that it may be sent
/// again after its connection failed with the answer outstanding. Every
/// command must be classified here: a new one does not compile until it is.
fn safe_to_resend(command: &request::Command) -> bool {
    match command {
        request::Command::Get(_)
        | request::Command::Keys(_)
        | request::Command::Ttl(_)
        | request::Command::Scan(_)
        | request::Command::Mget(_)
        | request::Command::Stats(_)
        | request::Command::ClusterStatus(_) => true,
        // A second snapshot is only a newer snapshot, and a backup piece
        // is a read.
        request::Command::Checkpoint(_) | request::Command::Backup(_) => true,
        // Authenticating twice is authenticating once.
        request::Command::Auth(_) => true,
        // Writes, membership changes included: a second one could be
        // applied on top of the first.
        request::Command::Put(_)
        | request::Command::Delete(_)
        | request::Command::Batch(_)
        | request::Command::Incr(_)
        | request::Command::Expire(_)
        | request::Command::ClusterAdd(_)
        | request::Command::ClusterRemove(_) => false,
    }
}
