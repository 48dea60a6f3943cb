//! What Redis commands run on: the single node's store, or a cluster
//! member. The commands are written once, against [`Db`]; here each
//! operation goes to the store directly, or through Raft on a member:
//! writes are proposed and answered once committed by a majority and
//! applied here, reads go through the read index (linearizable), and a
//! member that does not lead answers with an error naming the leader's
//! Redis address (or saying that no leader is known), never with a stale
//! read or an acknowledgement it cannot guarantee.

use kv_cluster::{CommandResult, PendingWrite, RequestError};
use kv_store::replica::{Replica, encode_put_expiring, encode_txn};
use kv_store::{
    Condition, Hold, KeyValueStore, Lsn, Pending, ScanPage, ScanRange, Txn, TxnOutcome, Versioned,
    Write,
};

use super::commands::{err, store_error};
use super::resp::Frame;
use crate::ClusterBackend;

/// The store the Redis commands run on.
#[derive(Clone)]
pub(crate) enum Db {
    /// A single node.
    Single(KeyValueStore),
    /// A cluster member.
    Member(ClusterBackend),
}

/// Why a write was not done.
pub(crate) enum Failed {
    /// A condition of the transaction did not hold: nothing was written.
    Condition,
    /// Any other reason, as the error to answer.
    Reply(Frame),
}

impl Failed {
    /// The error to answer; a failed condition is answered by the caller.
    pub(crate) fn into_frame(self) -> Frame {
        match self {
            Failed::Condition => err("ERR the transaction's condition failed"),
            Failed::Reply(frame) => frame,
        }
    }
}

fn failed(e: &kv_store::Error) -> Failed {
    if matches!(e.cause(), kv_store::Error::ConditionFailed { .. }) {
        Failed::Condition
    } else {
        Failed::Reply(store_error(e))
    }
}

/// What reads see: the store or the member's state, for the time of one
/// call.
pub(crate) enum View<'a> {
    Store(&'a KeyValueStore),
    Replica(&'a Replica),
}

impl View<'_> {
    pub(crate) fn get_versioned(&self, key: &[u8]) -> Option<Versioned> {
        match self {
            View::Store(s) => s.get_versioned(key),
            View::Replica(r) => r.get_versioned(key),
        }
    }

    pub(crate) fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<Option<Versioned>> {
        match self {
            View::Store(s) => s.get_many(keys),
            View::Replica(r) => r.get_many(keys),
        }
    }

    pub(crate) fn scan(
        &self,
        range: &ScanRange,
        after: Option<&[u8]>,
        limit: usize,
        max_bytes: usize,
        values: bool,
    ) -> ScanPage {
        match self {
            View::Store(s) => s.scan(range, after, limit, max_bytes, values),
            View::Replica(r) => r.scan(range, after, limit, max_bytes, values),
        }
    }

    /// Live keys (expired ones not yet swept included, as in Redis).
    pub(crate) fn len(&self) -> u64 {
        match self {
            View::Store(s) => s.stats().keys,
            View::Replica(r) => r.len(),
        }
    }
}

/// A write on its way.
pub(crate) enum Ticket<T> {
    Store(Pending<T>),
    Member(PendingWrite, ClusterBackend),
}

impl Ticket<Lsn> {
    /// Waits until the put is durable (committed and applied on a member).
    pub(crate) async fn done(self) -> Result<(), Failed> {
        match self {
            Ticket::Store(pending) => pending.await.map(|_| ()).map_err(|e| failed(&e)),
            Ticket::Member(pending, backend) => applied(&backend, pending.wait().await).map(|_| ()),
        }
    }
}

impl Ticket<TxnOutcome> {
    /// Waits until the transaction is durable (committed and applied on a
    /// member), with what it did.
    pub(crate) async fn done(self) -> Result<TxnOutcome, Failed> {
        match self {
            Ticket::Store(pending) => pending.await.map_err(|e| failed(&e)),
            Ticket::Member(pending, backend) => match applied(&backend, pending.wait().await)? {
                CommandResult {
                    txn: Some(Ok(outcome)),
                    ..
                } => Ok(outcome),
                CommandResult {
                    txn: Some(Err(refused)),
                    ..
                } => Err(failed(&refused.into_error())),
                _ => Err(Failed::Reply(err(
                    "ERR internal error: a transaction applied without an outcome",
                ))),
            },
        }
    }
}

/// A member's answer to a write, or the error to reply.
fn applied(
    backend: &ClusterBackend,
    answer: Result<CommandResult, RequestError>,
) -> Result<CommandResult, Failed> {
    match answer {
        Ok(CommandResult { error: Some(e), .. }) => Err(Failed::Reply(err(format!("ERR {e}")))),
        Ok(result) => Ok(result),
        Err(e) => Err(Failed::Reply(request_error(backend, e, true))),
    }
}

/// The Redis error for a request a member did not do: a follower names
/// the leader's Redis address (`-READONLY` for a write, as a Redis replica
/// answers, `-NOTLEADER` for a read, which only the leader can answer
/// linearizably); `-CLUSTERDOWN` while no leader is known.
fn request_error(backend: &ClusterBackend, e: RequestError, write: bool) -> Frame {
    match e {
        RequestError::NotLeader { .. } => {
            let node = &backend.node;
            let Some(leader) = node.leader().filter(|&id| id != node.node_id()) else {
                return err(
                    "CLUSTERDOWN no leader is known (an election may be under way); try again",
                );
            };
            let at = match node.redis_addr(leader) {
                Some(addr) => format!("the leader's Redis address is {addr}"),
                None => format!(
                    "the leader (node {leader}, native protocol at {}) has not announced a \
                     Redis address",
                    node.client_addr(leader)
                        .as_deref()
                        .unwrap_or("an unknown address")
                ),
            };
            if write {
                err(format!(
                    "READONLY You can't write against a read only replica: {at}"
                ))
            } else {
                err(format!(
                    "NOTLEADER reads are served by the leader only: {at}"
                ))
            }
        }
        // A write Raft took but never answered may have been committed.
        RequestError::Unavailable(m) if write => err(format!(
            "ERR outcome unknown: the write may or may not have been applied ({m})"
        )),
        RequestError::OutcomeUnknown(m) => err(format!(
            "ERR outcome unknown: the write may or may not have been applied ({m})"
        )),
        RequestError::Unavailable(m) => err(format!("ERR cluster unavailable: {m}")),
    }
}

fn check_key(backend: &ClusterBackend, key: &[u8]) -> Result<(), Failed> {
    if key.is_empty() {
        Err(Failed::Reply(err("ERR invalid request: the key is empty")))
    } else if key.len() > backend.max_key_size {
        Err(Failed::Reply(err(format!(
            "ERR key of {} bytes exceeds the maximum of {}",
            key.len(),
            backend.max_key_size
        ))))
    } else {
        Ok(())
    }
}

fn check_value(backend: &ClusterBackend, value: &[u8]) -> Result<(), Failed> {
    if value.len() > backend.max_value_size {
        Err(Failed::Reply(err(format!(
            "ERR value of {} bytes exceeds the maximum of {}",
            value.len(),
            backend.max_value_size
        ))))
    } else {
        Ok(())
    }
}

/// Refuses what the single node's store would refuse before writing.
fn check(backend: &ClusterBackend, txn: &Txn) -> Result<(), Failed> {
    if txn.writes.is_empty() {
        return Err(Failed::Reply(err(
            "ERR invalid request: a batch needs at least one write",
        )));
    }
    for w in &txn.writes {
        check_key(backend, w.key())?;
        if let Write::Put { value, .. } = w {
            check_value(backend, value)?;
        }
    }
    for (key, c) in &txn.conditions {
        check_key(backend, key)?;
        if let Condition::ValueEquals(value) = c {
            check_value(backend, value)?;
        }
    }
    Ok(())
}

impl Db {
    /// Runs `f` on the data: at once on a single node; on a member, once
    /// it has confirmed that it leads and applied everything committed
    /// before the call (a linearizable read).
    pub(crate) async fn read<T>(&self, f: impl FnOnce(View<'_>) -> T) -> Result<T, Frame> {
        match self {
            Db::Single(store) => Ok(f(View::Store(store))),
            Db::Member(backend) => backend
                .node
                .read(|replica| f(View::Replica(replica)))
                .await
                .map_err(|e| request_error(backend, e, false)),
        }
    }

    /// Submits a put (with an optional absolute deadline) now, or, on a
    /// single node, through `hold` if given (sent when it is released).
    pub(crate) fn submit_put(
        &self,
        hold: Option<&mut Hold>,
        key: &[u8],
        value: &[u8],
        deadline: Option<u64>,
    ) -> Result<Ticket<Lsn>, Failed> {
        match self {
            Db::Single(store) => match hold {
                Some(hold) => hold.submit_put_expiring(key, value, deadline),
                None => store.submit_put_expiring(key, value, deadline),
            }
            .map(Ticket::Store)
            .map_err(|e| failed(&e)),
            Db::Member(backend) => {
                check_key(backend, key)?;
                check_value(backend, value)?;
                let pending = backend
                    .node
                    .submit(encode_put_expiring(key, value, deadline));
                Ok(Ticket::Member(pending, backend.clone()))
            }
        }
    }

    /// Submits a transaction now, or, on a single node, through `hold` if
    /// given (sent when it is released).
    pub(crate) fn submit_txn(
        &self,
        hold: Option<&mut Hold>,
        txn: Txn,
    ) -> Result<Ticket<TxnOutcome>, Failed> {
        match self {
            Db::Single(store) => match hold {
                Some(hold) => hold.submit_txn(txn),
                None => store.submit_txn(txn),
            }
            .map(Ticket::Store)
            .map_err(|e| failed(&e)),
            Db::Member(backend) => {
                check(backend, &txn)?;
                let pending = backend.node.submit(encode_txn(&txn));
                Ok(Ticket::Member(pending, backend.clone()))
            }
        }
    }

    /// A checkpoint: a snapshot of the store (on a member, of its own
    /// state, after which Raft purges its log).
    pub(crate) async fn checkpoint(&self) -> Result<(), Frame> {
        match self {
            Db::Single(store) => {
                let store = store.clone();
                match tokio::task::spawn_blocking(move || store.checkpoint()).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(store_error(&e)),
                    Err(e) => Err(err(format!("ERR checkpoint task failed: {e}"))),
                }
            }
            Db::Member(backend) => backend
                .node
                .checkpoint()
                .await
                .map_err(|e| request_error(backend, e, false)),
        }
    }

    /// What INFO reports of the data (not linearizable: as this node has
    /// it now).
    pub(crate) fn info(&self) -> Info {
        match self {
            Db::Single(store) => {
                let stats = store.stats();
                Info {
                    keys: stats.keys,
                    expiring_keys: stats.expiring_keys,
                    snapshots: stats.snapshots_taken,
                    expired: stats.expired_swept,
                    replication: None,
                }
            }
            Db::Member(backend) => {
                let node = &backend.node;
                let m = node.metrics();
                let leader = m.status.leader;
                let me = node.node_id();
                let replication = if leader == Some(me) {
                    Replication::Leader {
                        followers: m
                            .replication
                            .iter()
                            .filter(|(id, _)| **id != me)
                            .map(|(id, matched)| {
                                (*id, node.redis_addr(*id), matched.map_or(0, |i| i + 1))
                            })
                            .collect(),
                        offset: m.status.last_log_index.map_or(0, |i| i + 1),
                    }
                } else {
                    Replication::Follower {
                        leader: leader.map(|id| (id, node.redis_addr(id))),
                        offset: m.status.applied_index.map_or(0, |i| i + 1),
                    }
                };
                Info {
                    keys: m.keys,
                    expiring_keys: m.expiring_keys,
                    snapshots: m.snapshots,
                    expired: m.expired_swept,
                    replication: Some(replication),
                }
            }
        }
    }
}

/// What INFO reports of the data.
pub(crate) struct Info {
    pub(crate) keys: u64,
    pub(crate) expiring_keys: u64,
    pub(crate) snapshots: u64,
    pub(crate) expired: u64,
    /// `None` on a single node.
    pub(crate) replication: Option<Replication>,
}

/// A member's part in replication, for INFO's replication section.
pub(crate) enum Replication {
    /// It leads: its followers (id, Redis address, entries matched) and
    /// its log's length.
    Leader {
        followers: Vec<(u64, Option<String>, u64)>,
        offset: u64,
    },
    /// It follows `leader` (id, Redis address), if it knows one; `offset`:
    /// entries applied.
    Follower {
        leader: Option<(u64, Option<String>)>,
        offset: u64,
    },
}
