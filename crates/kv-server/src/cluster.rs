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
    GetResponse, KeysResponse, PutResponse, Response, request::Command, response,
};
use kv_store::replica::{encode_delete, encode_put};

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
    Get {
        id: u64,
        key: Bytes,
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
    Ok(match command {
        Command::Put(put) => {
            check_key(&put.key)?;
            if put.value.len() > backend.max_value_size {
                return Err(Response::error(
                    id,
                    ErrorCode::TooLarge,
                    format!(
                        "value of {} bytes exceeds the maximum of {}",
                        put.value.len(),
                        backend.max_value_size
                    ),
                ));
            }
            ClusterReply::Put {
                id,
                pending: backend.node.submit(encode_put(&put.key, &put.value)),
            }
        }
        Command::Delete(delete) => {
            check_key(&delete.key)?;
            ClusterReply::Delete {
                id,
                pending: backend.node.submit(encode_delete(&delete.key)),
            }
        }
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
        Command::Batch(_)
        | Command::Incr(_)
        | Command::Expire(_)
        | Command::Ttl(_)
        | Command::Scan(_)
        | Command::Mget(_)
        | Command::Stats(_) => {
            return Err(Response::error(
                id,
                ErrorCode::InvalidRequest,
                format!("{} is not supported yet", command.name()),
            ));
        }
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
            ClusterReply::Get { id, key } => match node.read(|s| s.get(&key)).await {
                Ok(value) => Response::new(
                    id,
                    response::Result::Get(GetResponse {
                        found: value.is_some(),
                        value: value.map(Bytes::from).unwrap_or_default(),
                        ..GetResponse::default()
                    }),
                ),
                Err(e) => request_error(id, e, false),
            },
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
