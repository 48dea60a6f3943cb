//! One request in, one response out: maps each [`Request`] to the store call
//! that answers it, and each store outcome to a [`Response`].
//!
//! A request becomes a [`Reply`] the moment it is read. Writes are submitted
//! to the store right then, so that on one connection the commit order is
//! the request order even while earlier writes still wait for their sync.
//! Reads and checkpoints are *not* run then: they run when the connection's
//! writer reaches them, after every earlier reply on the connection has
//! resolved, so a pipelined `put k` then `get k` reads its own write. (A
//! read may also see writes pipelined *after* it on the same connection,
//! since those were submitted before its turn came: they are concurrent
//! with it, as its answer had not been sent when they were.)
//!
//! A queued reply owns what it needs and nothing of the request's frame:
//! decoding slices keys and values out of the frame's buffer, and a slice
//! kept in the queue would keep that whole buffer alive, so deferred keys
//! are copied out, and writes are copied by the store before the frame is
//! dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use kv_proto::{
    BackupRequest, BackupResponse, CheckpointResponse, DeleteResponse, ErrorCode, KeysResponse,
    PutResponse, Request, Response, StatsResponse, request::Command, response,
};
use kv_store::{KeyValueStore, Lsn, Pending, TxnOutcome};

use crate::cluster::{ClusterBackend, ClusterReply};
use crate::ops::{self, ScanAsk, TxnKind, WriteAsk};

/// What the server serves: one node's store, or a cluster member. Clones
/// share it.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A single node: the store and its own write-ahead log.
    Single(KeyValueStore),
    /// A member of a replicated cluster.
    Cluster(ClusterBackend),
}

impl From<KeyValueStore> for Backend {
    fn from(store: KeyValueStore) -> Backend {
        Backend::Single(store)
    }
}

impl From<ClusterBackend> for Backend {
    fn from(cluster: ClusterBackend) -> Backend {
        Backend::Cluster(cluster)
    }
}

/// What every connection of one server shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// What every request goes to.
    pub(crate) backend: Backend,
    /// Set once the first write failed because the log is unusable, so that
    /// the failure is logged once at ERROR instead of once per request.
    write_failure_logged: AtomicBool,
    /// Most key bytes one `keys` answer lists: what fits in a frame, so a
    /// listing of a large store is cut short (`truncated`) instead of being
    /// copied whole under the map's lock and then refused as TOO_LARGE.
    keys_budget: usize,
}

/// Room in a frame for the `Response` around a key listing (id, field tags
/// and lengths, `truncated`), with margin.
const KEYS_RESPONSE_OVERHEAD: usize = 64;

impl Shared {
    pub(crate) fn new(backend: Backend, max_frame: usize) -> Arc<Self> {
        Arc::new(Shared {
            backend,
            write_failure_logged: AtomicBool::new(false),
            keys_budget: max_frame.saturating_sub(KEYS_RESPONSE_OVERHEAD),
        })
    }

    /// Logs the first refusal of a write by a failed (fail-stop) log at
    /// ERROR, everything else at debug: a full disk is logged by the store
    /// when it fills, and a closed store is the shutdown, not a failure.
    fn note_write_failure(&self, err: &kv_store::Error) {
        let failed = match &self.backend {
            Backend::Single(store) => store.failure().is_some(),
            Backend::Cluster(_) => false,
        };
        if !failed || self.write_failure_logged.swap(true, Ordering::Relaxed) {
            tracing::debug!(error = %err, "write failed");
        } else {
            tracing::error!(
                error = %err,
                "the write-ahead log failed: writes now get UNAVAILABLE (those of the failed \
                 group OUTCOME_UNKNOWN), reads go on. The page cache may hold log data the \
                 disk never got: stop the server, then restart the machine or remount the \
                 file system before starting it again"
            );
        }
    }
}

/// The pending answer to one request, in the connection's reply queue.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Already known (an error, or a response that needs nothing more).
    Ready(Response),
    /// A put submitted to the store, waiting for durability.
    Put { id: u64, pending: Pending<Lsn> },
    /// A delete submitted to the store, waiting for durability.
    Delete {
        id: u64,
        pending: Pending<Option<Lsn>>,
    },
    /// A transaction (conditional write, batch, counter, deadline change)
    /// submitted to the store, answered as the request of `kind`.
    Txn {
        id: u64,
        kind: TxnKind,
        pending: Pending<TxnOutcome>,
    },
    /// A get, read when its turn comes.
    Get { id: u64, key: Bytes },
    /// A key's remaining time, read when its turn comes.
    Ttl { id: u64, key: Bytes },
    /// A multi-get, read when its turn comes.
    Mget { id: u64, keys: Vec<Bytes> },
    /// A page of a scan, read when its turn comes.
    Scan { id: u64, ask: ScanAsk },
    /// The store's counters, read when their turn comes.
    Stats { id: u64 },
    /// A key listing, read when its turn comes.
    Keys { id: u64, prefix: Bytes, limit: u32 },
    /// A checkpoint, started when its turn comes.
    Checkpoint { id: u64 },
    /// A piece of a backup, read when its turn comes.
    Backup { id: u64, request: BackupRequest },
    /// A request on a cluster member.
    Cluster(ClusterReply),
}

impl Reply {
    /// Starts answering `request`: submits writes now, defers reads.
    /// On a single node, writes go through `hold` if given: sent to the
    /// commit thread when the reader releases it.
    pub(crate) fn start(
        request: Request,
        shared: &Shared,
        mut hold: Option<&mut kv_store::Hold>,
    ) -> Reply {
        let id = request.id;
        let Some(command) = request.command else {
            return Reply::error(id, ErrorCode::InvalidRequest, "request has no command");
        };
        let store = match &shared.backend {
            Backend::Single(store) => store,
            Backend::Cluster(cluster) => {
                return match crate::cluster::start(id, command, cluster) {
                    Ok(reply) => Reply::Cluster(reply),
                    Err(response) => Reply::Ready(response),
                };
            }
        };
        let now = kv_store::now_ms();
        let mut write = |ask: kv_store::Result<WriteAsk>| {
            let held = hold.as_deref_mut();
            let submitted = ask.and_then(|ask| match ask {
                WriteAsk::Put {
                    key,
                    value,
                    deadline,
                } => match held {
                    Some(hold) => hold.submit_put_expiring(&key, &value, deadline),
                    None => store.submit_put_expiring(&key, &value, deadline),
                }
                .map(|pending| Reply::Put { id, pending }),
                WriteAsk::Delete { key } => match held {
                    Some(hold) => hold.submit_delete(&key),
                    None => store.submit_delete(&key),
                }
                .map(|pending| Reply::Delete { id, pending }),
                WriteAsk::Txn(kind, txn) => match held {
                    Some(hold) => hold.submit_txn(txn),
                    None => store.submit_txn(txn),
                }
                .map(|pending| Reply::Txn { id, kind, pending }),
            });
            submitted.unwrap_or_else(|err| Reply::Ready(store_error(id, &err, shared)))
        };
        let check_key = |key: &[u8]| {
            if key.is_empty() {
                Err(kv_store::Error::EmptyKey)
            } else if key.len() > store.max_key_size() {
                Err(kv_store::Error::KeyTooLarge {
                    size: key.len(),
                    max: store.max_key_size(),
                })
            } else {
                Ok(())
            }
        };
        match command {
            Command::Put(put) => write(ops::put(put, now)),
            Command::Delete(delete) => write(ops::delete(delete)),
            Command::Batch(batch) => write(ops::batch(&batch, now)),
            Command::Incr(incr) => write(Ok(ops::incr(&incr))),
            Command::Expire(expire) => write(ops::expire(&expire, now)),
            Command::Get(get) if get.key.len() > store.max_key_size() => {
                let err = kv_store::Error::KeyTooLarge {
                    size: get.key.len(),
                    max: store.max_key_size(),
                };
                Reply::Ready(store_error(id, &err, shared))
            }
            // Copied out: a slice of the frame would pin the whole frame's
            // buffer while the reply waits in the queue.
            Command::Get(get) => Reply::Get {
                id,
                key: Bytes::copy_from_slice(&get.key),
            },
            Command::Keys(keys) => Reply::Keys {
                id,
                prefix: Bytes::copy_from_slice(&keys.prefix),
                limit: keys.limit,
            },
            Command::Checkpoint(_) => Reply::Checkpoint { id },
            Command::Backup(request) => Reply::Backup { id, request },
            // The connection's gate answers every auth request before it
            // gets here; one that did get here was let through.
            Command::Auth(_) => Reply::Ready(crate::auth::accepted(id)),
            Command::Ttl(ttl) => match check_key(&ttl.key) {
                Ok(()) => Reply::Ttl {
                    id,
                    key: Bytes::copy_from_slice(&ttl.key),
                },
                Err(err) => Reply::Ready(store_error(id, &err, shared)),
            },
            Command::Mget(mget) => match mget.keys.iter().try_for_each(|k| check_key(k)) {
                Ok(()) => Reply::Mget {
                    id,
                    keys: mget
                        .keys
                        .iter()
                        .map(|k| Bytes::copy_from_slice(k))
                        .collect(),
                },
                Err(err) => Reply::Ready(store_error(id, &err, shared)),
            },
            Command::Scan(scan) => match ops::scan(&scan) {
                Ok(ask) => Reply::Scan { id, ask },
                Err(err) => Reply::Ready(store_error(id, &err, shared)),
            },
            Command::Stats(_) => Reply::Stats { id },
            Command::ClusterStatus(_) | Command::ClusterAdd(_) | Command::ClusterRemove(_) => {
                Reply::error(
                    id,
                    ErrorCode::InvalidRequest,
                    "this server is a single node, not a cluster member",
                )
            }
        }
    }

    /// An error reply.
    pub(crate) fn error(id: u64, code: ErrorCode, message: impl Into<String>) -> Reply {
        Reply::Ready(error_response(id, code, message))
    }

    /// Waits for the outcome and turns it into the response.
    pub(crate) async fn resolve(self, shared: &Shared) -> Response {
        let (store, reply) = match (&shared.backend, self) {
            (_, Reply::Ready(response)) => return response,
            (Backend::Cluster(cluster), Reply::Cluster(reply)) => {
                return reply.resolve(cluster, shared.keys_budget).await;
            }
            (Backend::Single(store), reply) => (store, reply),
            (Backend::Cluster(_), _) => {
                return error_response(
                    0,
                    ErrorCode::Internal,
                    "internal error: a single-node reply on a cluster member",
                );
            }
        };
        let (id, result) = match reply {
            Reply::Ready(response) => return response,
            Reply::Cluster(_) => {
                return error_response(
                    0,
                    ErrorCode::Internal,
                    "internal error: a cluster reply on a single node",
                );
            }
            Reply::Put { id, pending } => match pending.await {
                Ok(seq) => (id, response::Result::Put(PutResponse { seq })),
                Err(err) => return store_error(id, &err, shared),
            },
            Reply::Delete { id, pending } => match pending.await {
                Ok(seq) => (
                    id,
                    response::Result::Delete(DeleteResponse {
                        existed: seq.is_some(),
                        seq: seq.unwrap_or(0),
                    }),
                ),
                Err(err) => return store_error(id, &err, shared),
            },
            Reply::Txn { id, kind, pending } => match pending.await {
                Ok(outcome) => (id, ops::txn_result(kind, &outcome)),
                Err(err) => return store_error(id, &err, shared),
            },
            Reply::Get { id, key } => (
                id,
                response::Result::Get(ops::get_response(store.get_versioned(&key))),
            ),
            Reply::Ttl { id, key } => (
                id,
                response::Result::Ttl(ops::ttl_response(
                    store.get_versioned(&key),
                    kv_store::now_ms(),
                )),
            ),
            Reply::Mget { id, keys } => {
                match ops::mget_response(id, store.get_many(&keys), shared.keys_budget) {
                    Ok(mget) => (id, response::Result::Mget(mget)),
                    Err(response) => return response,
                }
            }
            Reply::Scan { id, ask } => {
                let page = store.scan(
                    &ask.range,
                    ask.after.as_deref(),
                    ask.limit,
                    shared.keys_budget,
                    ask.values,
                );
                (id, response::Result::Scan(ops::scan_response(page)))
            }
            Reply::Stats { id } => (id, response::Result::Stats(single_stats(store))),
            Reply::Keys { id, prefix, limit } => {
                let page = store.keys_within(
                    &prefix,
                    usize::try_from(limit).unwrap_or(usize::MAX),
                    shared.keys_budget,
                );
                (
                    id,
                    response::Result::Keys(KeysResponse {
                        keys: page.keys.into_iter().map(Bytes::from).collect(),
                        truncated: page.truncated,
                    }),
                )
            }
            Reply::Checkpoint { id } => {
                // A checkpoint writes and syncs a whole snapshot: run it where
                // blocking is allowed, never on a runtime worker.
                let store = store.clone();
                match tokio::task::spawn_blocking(move || store.checkpoint()).await {
                    Ok(Ok(seq)) => (id, response::Result::Checkpoint(CheckpointResponse { seq })),
                    Ok(Err(err)) => return store_error(id, &err, shared),
                    Err(join) => {
                        return error_response(
                            id,
                            ErrorCode::Internal,
                            format!("checkpoint task failed: {join}"),
                        );
                    }
                }
            }
            Reply::Backup { id, request } => {
                let store = store.clone();
                let max = backup_chunk_size(shared.keys_budget);
                let seq = (!request.start).then_some(request.seq);
                match tokio::task::spawn_blocking(move || {
                    store.backup_chunk(seq, request.offset, max)
                })
                .await
                {
                    Ok(Ok(chunk)) => (id, response::Result::Backup(backup_response(chunk))),
                    Ok(Err(err)) => return store_error(id, &err, shared),
                    Err(join) => {
                        return error_response(
                            id,
                            ErrorCode::Internal,
                            format!("backup task failed: {join}"),
                        );
                    }
                }
            }
        };
        Response::new(id, result)
    }
}

/// A single node's counters as their response.
fn single_stats(store: &KeyValueStore) -> StatsResponse {
    let stats = store.stats();
    StatsResponse {
        keys: stats.keys,
        bytes: stats.bytes,
        last_seq: stats.last_lsn,
        durable_seq: stats.wal.durable_lsn,
        wal_bytes: stats.wal_bytes,
        wal_segments: stats.wal.segments,
        snapshots: stats.snapshots_taken,
        expiring_keys: stats.expiring_keys,
        uptime_ms: u64::try_from(stats.uptime.as_millis()).unwrap_or(u64::MAX),
        expired_keys: stats.expired_swept,
    }
}

/// How much of a backup one response carries: 1 MiB, or less if the frame
/// limit is smaller (`budget` is what a response may carry).
pub(crate) fn backup_chunk_size(budget: usize) -> usize {
    budget.clamp(1, 1 << 20)
}

/// A backup chunk as its response.
pub(crate) fn backup_response(chunk: kv_store::inspect::BackupChunk) -> BackupResponse {
    BackupResponse {
        seq: chunk.seq,
        offset: chunk.offset,
        total_size: chunk.total_size,
        data: Bytes::from(chunk.data),
    }
}

/// A response carrying an error.
pub(crate) fn error_response(id: u64, code: ErrorCode, message: impl Into<String>) -> Response {
    Response::error(id, code, message)
}

/// Maps a store error to its wire code. A write that failed in the log is
/// never reported as done: OUTCOME_UNKNOWN when it was in the group whose
/// write or fsync failed (it may be on disk or not), UNAVAILABLE when
/// nothing was written (the log refuses writes, or the disk is full).
fn store_error(id: u64, err: &kv_store::Error, shared: &Shared) -> Response {
    let code = error_code(err);
    if matches!(
        code,
        ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::OutcomeUnknown
    ) {
        shared.note_write_failure(err);
    }
    ops::error_response(id, code, err)
}

/// The wire code of a store error.
pub(crate) fn error_code(err: &kv_store::Error) -> ErrorCode {
    use kv_store::Error;
    match err.cause() {
        Error::EmptyKey | Error::InvalidRequest(_) => ErrorCode::InvalidRequest,
        Error::KeyTooLarge { .. } | Error::ValueTooLarge { .. } | Error::BatchTooLarge { .. } => {
            ErrorCode::TooLarge
        }
        Error::ConditionFailed { .. } => ErrorCode::ConditionFailed,
        Error::OutcomeUnknown(_) => ErrorCode::OutcomeUnknown,
        // Nothing was written, and the server may take it later (space freed)
        // or never (fail-stop, shutting down): the message says which.
        Error::Unavailable(_) | Error::DiskFull(_) | Error::LogFailed(_) => ErrorCode::Unavailable,
        Error::Wal(e) if e.is_disk_full() => ErrorCode::Unavailable,
        Error::Wal(wal_core::Error::Poisoned { .. }) => ErrorCode::Unavailable,
        // A checkpoint's snapshot that did not fit.
        Error::Io { source, .. }
            if matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) =>
        {
            ErrorCode::Unavailable
        }
        _ => ErrorCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_wire_codes() {
        use kv_store::Error;
        assert_eq!(error_code(&Error::EmptyKey), ErrorCode::InvalidRequest);
        assert_eq!(
            error_code(&Error::KeyTooLarge { size: 9, max: 8 }),
            ErrorCode::TooLarge
        );
        assert_eq!(
            error_code(&Error::ValueTooLarge { size: 9, max: 8 }),
            ErrorCode::TooLarge
        );
        assert_eq!(
            error_code(&Error::Unavailable("closed".into())),
            ErrorCode::Unavailable
        );
        assert_eq!(
            error_code(&Error::Wal(wal_core::Error::Poisoned {
                reason: "fsync failed".into()
            })),
            ErrorCode::Unavailable
        );
        assert_eq!(
            error_code(&Error::Wal(wal_core::Error::Io {
                op: "sync",
                path: "x".into(),
                source: std::io::Error::other("EIO"),
            })),
            ErrorCode::Internal
        );
        assert_eq!(
            error_code(&Error::OutcomeUnknown("fsync failed".into())),
            ErrorCode::OutcomeUnknown
        );
        assert_eq!(
            error_code(&Error::DiskFull("ENOSPC".into())),
            ErrorCode::Unavailable
        );
        assert_eq!(
            error_code(&Error::Io {
                op: "write snapshot",
                path: "x".into(),
                source: std::io::ErrorKind::StorageFull.into(),
            }),
            ErrorCode::Unavailable
        );
    }
}
