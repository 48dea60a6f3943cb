//! Requests on a cluster member: the native protocol mapped onto
//! [`ClusterNode`]. Writes are submitted to Raft the moment they are read
//! (in request order, so a connection's writes commit in its order) and
//! answered once committed by a majority and applied here; reads and key
//! listings wait for their turn, then go through openraft's read index, so
//! they are linearizable; a follower answers NOT_LEADER with the leader's
//! client address. A checkpoint builds a snapshot on this member and lets
//! Raft purge its log behind it.

use std::sync::Arc;

use bytes::Bytes;
use kv_cluster::{ClusterNode, CommandResult, Node, PendingWrite, RequestError};
use kv_proto::{
    CheckpointResponse, ClusterMember, ClusterStatusResponse, DeleteResponse, ErrorCode,
    KeysResponse, PutResponse, Response, StatsResponse, request::Command, response,
};
use kv_store::replica::{encode_delete, encode_put_expiring, encode_txn};

use crate::ops::{self, ScanAsk, TxnKind, WriteAsk};

/// A member and the request limits the single node's store would enforce.
#[derive(Debug, Clone)]
pub struct ClusterBackend {
    /// The member.
    pub node: Arc<ClusterNode>,
    /// Largest key accepted, in bytes.
    pub max_key_size: usize,
    /// Largest value accepted, in bytes.
    pub max_value_size: usize,
}

/// The pending answer to one request on a cluster member.
#[derive(Debug)]
pub(crate) enum ClusterReply {
    Put {
        id: u64,
        pending: PendingWrite,
    },
    Delete {
        id: u64,
        pending: PendingWrite,
    },
    Txn {
        id: u64,
        kind: TxnKind,
        pending: PendingWrite,
    },
    Get {
        id: u64,
        key: Bytes,
    },
    Ttl {
        id: u64,
        key: Bytes,
    },
    Mget {
        id: u64,
        keys: Vec<Bytes>,
    },
    Scan {
        id: u64,
        ask: ScanAsk,
    },
    Stats {
        id: u64,
    },
    Keys {
        id: u64,
        prefix: Bytes,
        limit: u32,
    },
    Checkpoint {
        id: u64,
    },
    Backup {
        id: u64,
        request: kv_proto::BackupRequest,
    },
    Status {
        id: u64,
    },
    Add {
        id: u64,
        node_id: u64,
        node: Node,
    },
    Remove {
        id: u64,
        node_id: u64,
    },
}

/// Starts answering `command`: checks it, submits writes now.
pub(crate) fn start(
    id: u64,
    command: Command,
    backend: &ClusterBackend,
) -> Result<ClusterReply, Response> {
    let check_key = |key: &[u8]| {
        if key.is_empty() {
            Err(Response::error(
                id,
                ErrorCode::InvalidRequest,
                "the key is empty",
            ))
        } else if key.len() > backend.max_key_size {
            Err(Response::error(
                id,
                ErrorCode::TooLarge,
                format!(
                    "key of {} bytes exceeds the maximum of {}",
                    key.len(),
                    backend.max_key_size
                ),
            ))
        } else {
            Ok(())
        }
    };
    let check_value = |value: &[u8]| {
        if value.len() > backend.max_value_size {
            Err(Response::error(
                id,
                ErrorCode::TooLarge,
                format!(
                    "value of {} bytes exceeds the maximum of {}",
                    value.len(),
                    backend.max_value_size
                ),
            ))
        } else {
            Ok(())
        }
    };
    let refused =
        |err: kv_store::Error| ops::error_response(id, crate::command::error_code(&err), &err);
    let write = |ask: kv_store::Result<WriteAsk>| -> Result<ClusterReply, Response> {
        Ok(match ask.map_err(refused)? {
            WriteAsk::Put {
                key,
                value,
                deadline,
            } => {
                check_key(&key)?;
                check_value(&value)?;
                ClusterReply::Put {
                    id,
                    pending: backend
                        .node
                        .submit(encode_put_expiring(&key, &value, deadline)),
                }
            }
            WriteAsk::Delete { key } => {
                check_key(&key)?;
                ClusterReply::Delete {
                    id,
                    pending: backend.node.submit(encode_delete(&key)),
                }
            }
            WriteAsk::Txn(kind, txn) => {
                for w in &txn.writes {
                    check_key(w.key())?;
                    if let kv_store::Write::Put { value, .. } = w {
                        check_value(value)?;
                    }
                }
                for (key, c) in &txn.conditions {
                    check_key(key)?;
                    if let kv_store::Condition::ValueEquals(value) = c {
                        check_value(value)?;
                    }
                }
                ClusterReply::Txn {
                    id,
                    kind,
                    pending: backend.node.submit(encode_txn(&txn)),
                }
            }
        })
    };
    let now = kv_store::now_ms();
    Ok(match command {
        Command::Put(put) => write(ops::put(put, now))?,
        Command::Delete(delete) => write(ops::delete(delete))?,
        Command::Batch(batch) => write(ops::batch(&batch, now))?,
        Command::Incr(incr) => write(Ok(ops::incr(&incr)))?,
        Command::Expire(expire) => write(ops::expire(&expire, now))?,
        Command::Ttl(ttl) => {
            check_key(&ttl.key)?;
            ClusterReply::Ttl {
                id,
                key: Bytes::copy_from_slice(&ttl.key),
            }
        }
        Command::Mget(mget) => {
            mget.keys.iter().try_for_each(|k| check_key(k))?;
            ClusterReply::Mget {
                id,
                keys: mget
                    .keys
                    .iter()
                    .map(|k| Bytes::copy_from_slice(k))
                    .collect(),
            }
        }
        Command::Scan(scan) => ClusterReply::Scan {
            id,
            ask: ops::scan(&scan).map_err(refused)?,
        },
        Command::Stats(_) => ClusterReply::Stats { id },
        // Copied out of the frame, whose buffer a slice would pin while
        // the reply is queued.
        Command::Get(get) => {
            check_key(&get.key)?;
            ClusterReply::Get {
                id,
                key: Bytes::copy_from_slice(&get.key),
            }
        }
        Command::Keys(keys) => ClusterReply::Keys {
            id,
            prefix: Bytes::copy_from_slice(&keys.prefix),
            limit: keys.limit,
        },
        Command::Checkpoint(_) => ClusterReply::Checkpoint { id },
        Command::Backup(request) => ClusterReply::Backup { id, request },
        Command::ClusterStatus(_) => ClusterReply::Status { id },
        Command::ClusterAdd(add) => {
            if add.node_id == 0 || add.client_addr.is_empty() || add.peer_addr.is_empty() {
                return Err(Response::error(
                    id,
                    ErrorCode::InvalidRequest,
                    "cluster add needs a positive id and both addresses",
                ));
            }
            ClusterReply::Add {
                id,
                node_id: add.node_id,
                node: Node {
                    client_addr: add.client_addr,
                    peer_addr: add.peer_addr,
                },
            }
        }
        Command::ClusterRemove(remove) => ClusterReply::Remove {
            id,
            node_id: remove.node_id,
        },
        // The connection's gate answers every auth request before it gets
        // here; one that did get here was let through, so it is accepted.
        Command::Auth(_) => return Err(crate::auth::accepted(id)),
    })
}

/// The response for a request that did not happen here.
fn request_error(id: u64, e: RequestError, write: bool) -> Response {
    match e {
        RequestError::NotLeader { leader } => {
            let mut r = Response::error(id, ErrorCode::NotLeader, "not the leader");
            if let Some(response::Result::Error(err)) = r.result.as_mut() {
                err.leader_addr = leader.unwrap_or_default();
                if !err.leader_addr.is_empty() {
                    err.message = format!("not the leader; the leader is {}", err.leader_addr);
                }
            }
            r
        }
        // A write Raft took but never answered may have been committed.
        RequestError::Unavailable(m) if write => Response::error(id, ErrorCode::OutcomeUnknown, m),
        RequestError::OutcomeUnknown(m) => Response::error(id, ErrorCode::OutcomeUnknown, m),
        RequestError::Unavailable(m) => Response::error(id, ErrorCode::Unavailable, m),
    }
}

fn applied(id: u64, r: CommandResult) -> Result<CommandResult, Response> {
    match &r.error {
        None => Ok(r),
        Some(e) => Err(Response::error(id, ErrorCode::InvalidRequest, e.clone())),
    }
}

impl ClusterReply {
    /// Waits for the outcome and turns it into the response.
    pub(crate) async fn resolve(self, backend: &ClusterBackend, keys_budget: usize) -> Response {
        let node = &backend.node;
        match self {
            ClusterReply::Put { id, pending } => match pending.wait().await {
                Ok(r) => match applied(id, r) {
                    Ok(r) => Response::new(id, response::Result::Put(PutResponse { seq: r.seq })),
                    Err(resp) => resp,
                },
                Err(e) => request_error(id, e, true),
            },
            ClusterReply::Delete { id, pending } => match pending.wait().await {
                Ok(r) => match applied(id, r) {
                    Ok(r) => Response::new(
                        id,
                        response::Result::Delete(DeleteResponse {
                            existed: r.existed,
                            seq: if r.existed { r.seq } else { 0 },
                        }),
                    ),
                    Err(resp) => resp,
                },
                Err(e) => request_error(id, e, true),
            },
            ClusterReply::Txn { id, kind, pending } => match pending.wait().await {
                Ok(r) => match applied(id, r) {
                    Ok(CommandResult {
                        txn: Some(Ok(outcome)),
                        ..
                    }) => Response::new(id, ops::txn_result(kind, &outcome)),
                    Ok(CommandResult {
                        txn: Some(Err(refused)),
                        ..
                    }) => {
                        let err = refused.into_error();
                        ops::error_response(id, crate::command::error_code(&err), &err)
                    }
                    Ok(_) => Response::error(
                        id,
                        ErrorCode::Internal,
                        "internal error: a transaction applied without an outcome",
                    ),
                    Err(resp) => resp,
                },
                Err(e) => request_error(id, e, true),
            },
            ClusterReply::Get { id, key } => match node.read(|s| s.get_versioned(&key)).await {
                Ok(found) => Response::new(id, response::Result::Get(ops::get_response(found))),
                Err(e) => request_error(id, e, false),
            },
            ClusterReply::Ttl { id, key } => match node.read(|s| s.get_versioned(&key)).await {
                Ok(found) => Response::new(
                    id,
                    response::Result::Ttl(ops::ttl_response(found, kv_store::now_ms())),
                ),
                Err(e) => request_error(id, e, false),
            },
            ClusterReply::Mget { id, keys } => match node.read(|s| s.get_many(&keys)).await {
                Ok(found) => match ops::mget_response(id, found, keys_budget) {
                    Ok(mget) => Response::new(id, response::Result::Mget(mget)),
                    Err(resp) => resp,
                },
                Err(e) => request_error(id, e, false),
            },
            ClusterReply::Scan { id, ask } => {
                let page = node
                    .read(|s| {
                        s.scan(
                            &ask.range,
                            ask.after.as_deref(),
                            ask.limit,
                            keys_budget,
                            ask.values,
                        )
                    })
                    .await;
                match page {
                    Ok(page) => Response::new(id, response::Result::Scan(ops::scan_response(page))),
                    Err(e) => request_error(id, e, false),
                }
            }
            ClusterReply::Stats { id } => {
                // After a read barrier, so last_seq is at least every write
                // acknowledged before the request.
                let last = node.read(|s| s.last_applied()).await;
                match last {
                    Ok(last_seq) => {
                        let m = node.metrics();
                        Response::new(
                            id,
                            response::Result::Stats(StatsResponse {
                                keys: m.keys,
                                bytes: m.bytes,
                                last_seq,
                                durable_seq: m.log.durable_lsn,
                                wal_bytes: m.log_bytes,
                                wal_segments: m.log.segments,
                                snapshots: m.snapshots,
                                expiring_keys: m.expiring_keys,
                                uptime_ms: u64::try_from(m.uptime.as_millis()).unwrap_or(u64::MAX),
                                expired_keys: m.expired_swept,
                            }),
                        )
                    }
                    Err(e) => request_error(id, e, false),
                }
            }
            ClusterReply::Keys { id, prefix, limit } => {
                let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                match node.keys(&prefix, limit, keys_budget).await {
                    Ok(page) => Response::new(
                        id,
                        response::Result::Keys(KeysResponse {
                            keys: page.keys.into_iter().map(Bytes::from).collect(),
                            truncated: page.truncated,
                        }),
                    ),
                    Err(e) => request_error(id, e, false),
                }
            }
            ClusterReply::Checkpoint { id } => match node.checkpoint().await {
                Ok(()) => Response::new(
                    id,
                    response::Result::Checkpoint(CheckpointResponse {
                        seq: node.status().applied_index.map_or(0, |i| i + 1),
                    }),
                ),
                Err(e) => request_error(id, e, false),
            },
            ClusterReply::Backup { id, request } => {
                let seq = (!request.start).then_some(request.seq);
                let max = crate::command::backup_chunk_size(keys_budget);
                match node.backup_chunk(seq, request.offset, max).await {
                    Ok(chunk) => Response::new(
                        id,
                        response::Result::Backup(crate::command::backup_response(chunk)),
                    ),
                    Err(e) => request_error(id, e, false),
                }
            }
            ClusterReply::Add {
                id,
                node_id,
                node: member,
            } => match node.add_member(node_id, member).await {
                Ok(()) => status_response(id, node),
                Err(e) => request_error(id, e, false),
            },
            ClusterReply::Remove { id, node_id } => match node.remove_member(node_id).await {
                Ok(()) => status_response(id, node),
                Err(e) => request_error(id, e, false),
            },
            ClusterReply::Status { id } => status_response(id, node),
        }
    }
}

/// This member's view of the cluster, as a response.
fn status_response(id: u64, node: &ClusterNode) -> Response {
    let s = node.status();
    Response::new(
        id,
        response::Result::ClusterStatus(ClusterStatusResponse {
            node_id: s.node_id,
            role: s.role.to_string(),
            term: s.term,
            leader_id: s.leader.unwrap_or(0),
            last_log_index: s.last_log_index.unwrap_or(0),
            applied_index: s.applied_index.unwrap_or(0),
            has_log: s.last_log_index.is_some(),
            members: s
                .members
                .into_iter()
                .map(|(node_id, n)| ClusterMember {
                    node_id,
                    client_addr: n.client_addr,
                    peer_addr: n.peer_addr,
                })
                .collect(),
        }),
    )
}
