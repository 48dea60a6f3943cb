//! The peer transport: openraft's RPCs as our protobuf (`PeerRequest`,
//! `PeerResponse`) in kv-proto frames, over one persistent TCP connection
//! per peer and stream (no connection per RPC), bounded frames, a timeout
//! on every call, and an unreachable peer reported to openraft as
//! [`Unreachable`] so it backs off.
//!
//! Every request carries the cluster id and the shared secret; the
//! receiving side ([`serve_peers`]) checks both (the secret in constant
//! time) before anything reaches Raft, and logs and closes a connection
//! that sends garbage, an oversized frame, or a request of another cluster.
//!
//! With [`PeerTls`] (kv-server's `--peer-tls-*` flags) every link is mutual
//! TLS: a peer whose certificate the cluster's CA did not sign is refused
//! in the handshake, and the refusal is logged with its address.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kv_proto::{
    CodecError, FrameCodec, PeerError, PeerRequest, PeerResponse, RaftAppendOutcome,
    RaftAppendRequest, RaftAppendResponse, RaftEntry, RaftSnapshotChunk, RaftVoteRequest,
    RaftVoteResponse, peer_request::Rpc, peer_response::Result as PeerResult,
};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, SnapshotMismatch,
    Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Raft, SnapshotSegmentId};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

use crate::tls::{PeerStream, PeerTls};
use crate::types::{
    Entry, Node, NodeId, TypeConfig, decode_entry, decode_log_id, decode_vote, encode_entry,
    encode_log_id, encode_vote, payload_bytes,
};

/// Most command bytes one append carries (it carries at least one entry,
/// whatever its size).
///
/// Why: openraft 0.9 gives an append one heartbeat (50 ms by default) to
/// be answered, and a new leader finds where each follower's log stops
/// matching by a binary search whose every probe carries as many entries
/// as `max_payload_entries` allows. Entries are batches of up to 64 KiB,
/// so a probe could be megabytes: on a busy machine it missed its time,
/// was sent again, missed again, and a follower that lacked two entries
/// took seconds to be reached after every election (long enough to stand
/// for election itself and depose the leader). An append cut short here
/// is reported to openraft as a partial success up to its last entry, and
/// openraft sends the rest next; the follower commits no further than what
/// it received.
pub const MAX_APPEND_BYTES: usize = 512 << 10;

/// How many of `entries` one append carries: those that fit in
/// `max_bytes` of commands, and at least one.
fn append_len(entries: &[Entry], max_bytes: usize) -> usize {
    let mut bytes = 0usize;
    let mut n = 0;
    for entry in entries {
        bytes = bytes.saturating_add(payload_bytes(entry));
        if n > 0 && bytes > max_bytes {
            break;
        }
        n += 1;
    }
    n
}

/// What identifies a cluster on the wire: a hash of `--initial-cluster`
/// in a canonical form (members sorted by id), so that a node started with
/// another member list is refused.
pub fn cluster_id(members: &BTreeMap<NodeId, Node>) -> u64 {
    // FNV-1a, 64-bit: stable across releases and platforms, unlike std's
    // hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (id, node) in members {
        let part = format!("{id}={}/{};", node.client_addr, node.peer_addr);
        for byte in part.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// What the sending side of every peer link knows.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// This node.
    pub node_id: NodeId,
    /// [`cluster_id`] of the cluster.
    pub cluster_id: u64,
    /// The shared secret (empty: none, allowed only on loopback).
    pub secret: Vec<u8>,
    /// The largest frame sent or accepted.
    pub max_frame: usize,
    /// Mutual TLS on every peer link; `None`: plain TCP.
    pub tls: Option<PeerTls>,
    /// This node's Redis address, sent with every request (empty: none).
    pub redis_addr: String,
    /// The Redis address each peer sent (filled by the receiving side).
    pub peer_redis: PeerRedisAddrs,
}

/// The Redis address each peer last sent, by node id.
pub type PeerRedisAddrs = Arc<std::sync::Mutex<BTreeMap<NodeId, String>>>;

type PeerClientCodec = FrameCodec<PeerResponse, PeerRequest>;
type PeerServerCodec = FrameCodec<PeerRequest, PeerResponse>;

/// How soon openraft calls an unreachable peer again: `first` after the
/// first failure, doubling with each further one up to `max`, until a call
/// succeeds.
///
/// Why not openraft's default (500 ms, always): a member that was down and
/// restarts starts its own election timer at once, and one that hears no
/// leader within that time (the leader lease plus an election timeout, 450
/// ms with the default timings) stands for election with a stale log. It
/// cannot win, but its higher term deposes the leader, and the cluster
/// elects again. With a retry at most an election timeout apart, the
/// leader reaches a restarted member before that; a retry to a peer that
/// refuses connections costs one refused connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redial {
    /// The wait after the first failure.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Redial {
    /// The waits, one per failed call.
    fn waits(self) -> impl Iterator<Item = Duration> + Send + 'static {
        let max = self.max.max(self.first);
        std::iter::successors(Some(self.first), move |d| Some((*d * 2).min(max)))
    }
}

/// Makes a [`PeerClient`] per target, for openraft.
#[derive(Debug, Clone)]
pub struct Network {
    identity: PeerIdentity,
    redial: Redial,
}

impl Network {
    /// The transport of the node `identity` names, calling an unreachable
    /// peer again as `redial` says.
    pub fn new(identity: PeerIdentity, redial: Redial) -> Network {
        Network { identity, redial }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        PeerClient {
            identity: self.identity.clone(),
            target,
            addr: node.peer_addr.clone(),
            conn: None,
            next_id: 1,
            redial: self.redial,
        }
    }
}

/// One persistent link to a peer; reconnects on the next call after a
/// failure.
#[derive(Debug)]
pub struct PeerClient {
    identity: PeerIdentity,
    target: NodeId,
    addr: String,
    conn: Option<Framed<PeerStream, PeerClientCodec>>,
    next_id: u64,
    redial: Redial,
}

/// Why a call failed, before openraft's error types.
enum CallError {
    Unreachable(io::Error),
    Timeout,
    Remote(PeerError),
}

impl PeerClient {
    async fn call(&mut self, rpc: Rpc, ttl: Duration) -> Result<PeerResult, CallError> {
        let id = self.next_id;
        self.next_id += 1;
        let request = PeerRequest {
            id,
            cluster_id: self.identity.cluster_id,
            secret: self.identity.secret.clone().into(),
            from: self.identity.node_id,
            rpc: Some(rpc),
            redis_addr: self.identity.redis_addr.clone(),
        };
        let reused = self.conn.is_some();
        self.ensure_link().await?;
        let started = tokio::time::Instant::now();
        let mut answer = tokio::time::timeout(ttl, self.exchange(&request)).await;
        // A link that served earlier calls may be dead without our knowing
        // (the peer restarted): its first use fails at once. The request
        // was then never handled by the peer that listens now, and Raft's
        // messages may be delivered twice anyway, so it goes once more on a
        // fresh link within what is left of its time; without this, a
        // vote lost this way costs a whole election round.
        if reused && matches!(answer, Ok(Err(_))) {
            self.conn = None;
            self.ensure_link().await?;
            let left = ttl.saturating_sub(started.elapsed());
            answer = tokio::time::timeout(left, self.exchange(&request)).await;
        }
        match answer {
            Ok(Ok(response)) if response.id == id => match response.result {
                Some(PeerResult::Error(e)) => {
                    if e.fatal {
                        // Its Raft stopped: a restarted member listens
                        // anew, so the next call reconnects.
                        self.conn = None;
                    }
                    Err(CallError::Remote(e))
                }
                Some(result) => Ok(result),
                None => {
                    self.conn = None;
                    Err(CallError::Unreachable(io::Error::other(
                        "empty peer response",
                    )))
                }
            },
            Ok(Ok(_)) => {
                self.conn = None;
                Err(CallError::Unreachable(io::Error::other(
                    "peer response for another request",
                )))
            }
            Ok(Err(e)) => {
                self.conn = None;
                Err(CallError::Unreachable(e))
            }
            Err(_) => {
                // The link may hold a late answer: start a fresh one.
                self.conn = None;
                Err(CallError::Timeout)
            }
        }
    }

    /// Sets up a link if there is none, outside the call's time to live
    /// (openraft gives an append one heartbeat, which a TLS handshake on a
    /// busy machine can exceed), within a bound of its own.
    async fn ensure_link(&mut self) -> Result<(), CallError> {
        if self.conn.is_some() {
            return Ok(());
        }
        match tokio::time::timeout(PEER_CONNECT, self.connect()).await {
            Ok(Ok(conn)) => {
                self.conn = Some(conn);
                Ok(())
            }
            Ok(Err(e)) => Err(CallError::Unreachable(e)),
            Err(_) => Err(CallError::Unreachable(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no link to {} within {PEER_CONNECT:?}", self.addr),
            ))),
        }
    }

    /// A new link to the peer: TCP, then TLS if configured.
    async fn connect(&self) -> io::Result<Framed<PeerStream, PeerClientCodec>> {
        let stream = TcpStream::connect(&self.addr).await?;
        stream.set_nodelay(true)?;
        let stream = match &self.identity.tls {
            Some(tls) => tls.connect(&self.addr, stream).await.map_err(|e| {
                io::Error::new(e.kind(), format!("TLS handshake with {}: {e}", self.addr))
            })?,
            None => tokio_util::either::Either::Left(stream),
        };
        Ok(Framed::new(
            stream,
            PeerClientCodec::new(self.identity.max_frame),
        ))
    }

    /// Sends `request` (by reference: a retry sends it again, and an
    /// append can carry megabytes of entries) and reads the answer.
    async fn exchange(&mut self, request: &PeerRequest) -> io::Result<PeerResponse> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(io::Error::other("no connection"));
        };
        conn.send(request).await.map_err(io::Error::other)?;
        match conn.next().await {
            Some(Ok(Ok(response))) => Ok(response),
            Some(Ok(Err(e))) => Err(io::Error::other(e.to_string())),
            Some(Err(e)) => Err(io::Error::other(e.to_string())),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection",
            )),
        }
    }

    fn rpc_error<E: std::error::Error>(
        &self,
        e: CallError,
        ttl: Duration,
        action: openraft::network::RPCTypes,
    ) -> RPCError<NodeId, Node, E> {
        match e {
            CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Timeout => RPCError::Timeout(Timeout {
                action,
                id: self.identity.node_id,
                target: self.target,
                timeout: ttl,
            }),
            CallError::Remote(e) => RPCError::Network(NetworkError::new(&io::Error::other(
                format!("peer {} refused: {}", self.target, e.message),
            ))),
        }
    }
}

fn unexpected<E: std::error::Error>(what: &str) -> RPCError<NodeId, Node, E> {
    RPCError::Network(NetworkError::new(&io::Error::other(format!(
        "unexpected peer answer to {what}"
    ))))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(self.redial.waits())
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let ttl = option.hard_ttl();
        let sent = append_len(&rpc.entries, MAX_APPEND_BYTES);
        // The last entry sent, when the append is cut short (it then
        // carries at least one).
        let cut = (sent < rpc.entries.len()).then(|| rpc.entries[sent - 1].log_id);
        let request = RaftAppendRequest {
            vote: Some(encode_vote(&rpc.vote)),
            prev_log_id: rpc.prev_log_id.as_ref().map(encode_log_id),
            entries: rpc.entries[..sent].iter().map(encode_entry).collect(),
            leader_commit: rpc.leader_commit.as_ref().map(encode_log_id),
        };
        let answer = self
            .call(Rpc::Append(request), ttl)
            .await
            .map_err(|e| self.rpc_error(e, ttl, openraft::network::RPCTypes::AppendEntries))?;
        let PeerResult::Append(r) = answer else {
            return Err(unexpected("append"));
        };
        Ok(match RaftAppendOutcome::try_from(r.outcome) {
            Ok(RaftAppendOutcome::RaftAppendSuccess) => match cut {
                Some(last) => AppendEntriesResponse::PartialSuccess(Some(last)),
                None => AppendEntriesResponse::Success,
            },
            Ok(RaftAppendOutcome::RaftAppendPartial) => {
                AppendEntriesResponse::PartialSuccess(r.matched.as_ref().map(decode_log_id))
            }
            Ok(RaftAppendOutcome::RaftAppendConflict) => AppendEntriesResponse::Conflict,
            Ok(RaftAppendOutcome::RaftAppendHigherVote) => match &r.vote {
                Some(v) => AppendEntriesResponse::HigherVote(decode_vote(v)),
                None => return Err(unexpected("append (higher vote without a vote)")),
            },
            _ => return Err(unexpected("append (unknown outcome)")),
        })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let ttl = option.hard_ttl();
        let chunk = RaftSnapshotChunk {
            vote: Some(encode_vote(&rpc.vote)),
            // The receiver reads the position from the data's header.
            meta: Some(crate::state_machine::encode_meta(&rpc.meta, 0)),
            offset: rpc.offset,
            data: rpc.data.clone().into(),
            done: rpc.done,
        };
        match self.call(Rpc::Snapshot(chunk), ttl).await {
            Ok(PeerResult::Snapshot(vote)) => Ok(InstallSnapshotResponse {
                vote: decode_vote(&vote),
            }),
            Ok(_) => Err(unexpected("snapshot chunk")),
            Err(CallError::Remote(e)) if !e.expected_snapshot.is_empty() => {
                let mismatch = SnapshotMismatch {
                    expect: SnapshotSegmentId {
                        id: e.expected_snapshot.clone(),
                        offset: e.expected_offset,
                    },
                    got: SnapshotSegmentId {
                        id: rpc.meta.snapshot_id.clone(),
                        offset: rpc.offset,
                    },
                };
                Err(RPCError::RemoteError(RemoteError::new(
                    self.target,
                    RaftError::APIError(InstallSnapshotError::SnapshotMismatch(mismatch)),
                )))
            }
            Err(e) => Err(self.rpc_error(e, ttl, openraft::network::RPCTypes::InstallSnapshot)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let ttl = option.hard_ttl();
        let request = RaftVoteRequest {
            vote: Some(encode_vote(&rpc.vote)),
            last_log_id: rpc.last_log_id.as_ref().map(encode_log_id),
        };
        let answer = self
            .call(Rpc::Vote(request), ttl)
            .await
            .map_err(|e| self.rpc_error(e, ttl, openraft::network::RPCTypes::Vote))?;
        let PeerResult::Vote(r) = answer else {
            return Err(unexpected("vote"));
        };
        let Some(vote) = &r.vote else {
            return Err(unexpected("vote (without a vote)"));
        };
        Ok(VoteResponse {
            vote: decode_vote(vote),
            vote_granted: r.granted,
            last_log_id: r.last_log_id.as_ref().map(decode_log_id),
        })
    }
}

/// Compares secrets in time that depends on their lengths only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How long a peer connection may stay silent before it is closed (the
/// leader's heartbeats keep a live one busy).
const PEER_IDLE: Duration = Duration::from_secs(300);

/// How long setting up a link to a peer (TCP and TLS) may take.
const PEER_CONNECT: Duration = Duration::from_secs(2);

/// How long a peer has to complete the TLS handshake.
const PEER_HANDSHAKE: Duration = Duration::from_secs(10);

/// Accepts peer connections on `listener` and hands their RPCs to `raft`
/// until the task is dropped.
///
/// The connections' tasks live in a `JoinSet` owned by this future, so
/// dropping (aborting) it also ends every open peer connection: a stopped
/// member leaves no connection behind that answers for a dead Raft.
pub async fn serve_peers(listener: TcpListener, raft: Raft<TypeConfig>, identity: PeerIdentity) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Reap finished connections as we go.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "peer accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let raft = raft.clone();
        let identity = identity.clone();
        connections.spawn(async move {
            let stream = match &identity.tls {
                None => tokio_util::either::Either::Left(stream),
                Some(tls) => match tokio::time::timeout(PEER_HANDSHAKE, tls.accept(stream)).await
                {
                    Ok(Ok(stream)) => stream,
                    // Closed before the handshake ended: a dialling member
                    // whose RPC was cancelled (or a port scan), not a
                    // refusal.
                    Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        tracing::debug!(%peer, error = %e, "peer closed during the TLS handshake");
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "peer refused: TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(%peer, "peer refused: no TLS handshake within {PEER_HANDSHAKE:?}");
                        return;
                    }
                },
            };
            if let Err(reason) = serve_peer(stream, raft, &identity).await {
                tracing::warn!(%peer, %reason, "peer connection closed");
            }
        });
    }
}

/// One peer connection: requests in order, each answered.
async fn serve_peer(
    stream: PeerStream,
    raft: Raft<TypeConfig>,
    identity: &PeerIdentity,
) -> Result<(), String> {
    let mut conn = Framed::new(stream, PeerServerCodec::new(identity.max_frame));
    loop {
        let frame = match tokio::time::timeout(PEER_IDLE, conn.next()).await {
            Err(_) => return Err("idle".into()),
            Ok(None) => return Ok(()),
            // A TLS peer that closed between frames without a close_notify
            // (its connection was dropped, as a cancelled RPC does) closed
            // as a plain one does.
            Ok(Some(Err(CodecError::Io(e))))
                if e.kind() == io::ErrorKind::UnexpectedEof && conn.read_buffer().is_empty() =>
            {
                return Ok(());
            }
            Ok(Some(Err(e))) => return Err(format!("refused: {e}")),
            Ok(Some(Ok(Err(e)))) => return Err(format!("refused an undecodable message: {e}")),
            Ok(Some(Ok(Ok(request)))) => request,
        };
        if frame.cluster_id != identity.cluster_id {
            return Err(format!(
                "refused node {} of another cluster (id {:#x}, ours {:#x})",
                frame.from, frame.cluster_id, identity.cluster_id
            ));
        }
        if !same_secret(&frame.secret, &identity.secret) {
            return Err(format!("refused node {}: wrong peer secret", frame.from));
        }
        note_redis_addr(&identity.peer_redis, frame.from, &frame.redis_addr);
        let id = frame.id;
        let result = match frame.rpc {
            None => return Err("refused a request without an RPC".into()),
            Some(rpc) => handle(&raft, rpc).await,
        };
        conn.send(PeerResponse {
            id,
            result: Some(result),
        })
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    }
}

/// Records the Redis address `from` sent, if it changed.
fn note_redis_addr(addrs: &PeerRedisAddrs, from: NodeId, addr: &str) {
    let mut addrs = addrs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if addrs.get(&from).map(String::as_str) != Some(addr) {
        if addr.is_empty() {
            addrs.remove(&from);
        } else {
            addrs.insert(from, addr.to_string());
        }
    }
}

fn peer_error(message: String, fatal: bool) -> PeerResult {
    PeerResult::Error(PeerError {
        message,
        fatal,
        ..PeerError::default()
    })
}

fn decode_entries(entries: &[RaftEntry]) -> Result<Vec<Entry>, String> {
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        match decode_entry(e) {
            Ok(Some(entry)) => out.push(entry),
            Ok(None) => return Err("an entry without payload".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(out)
}

async fn handle(raft: &Raft<TypeConfig>, rpc: Rpc) -> PeerResult {
    match rpc {
        Rpc::Append(r) => {
            let (Some(vote), Ok(entries)) = (&r.vote, decode_entries(&r.entries)) else {
                return peer_error("malformed append".into(), false);
            };
            let request = AppendEntriesRequest {
                vote: decode_vote(vote),
                prev_log_id: r.prev_log_id.as_ref().map(decode_log_id),
                entries,
                leader_commit: r.leader_commit.as_ref().map(decode_log_id),
            };
            match raft.append_entries(request).await {
                Ok(resp) => PeerResult::Append(append_response(resp)),
                Err(e) => peer_error(e.to_string(), true),
            }
        }
        Rpc::Vote(r) => {
            let Some(vote) = &r.vote else {
                return peer_error("malformed vote request".into(), false);
            };
            let request = VoteRequest {
                vote: decode_vote(vote),
                last_log_id: r.last_log_id.as_ref().map(decode_log_id),
            };
            match raft.vote(request).await {
                Ok(resp) => PeerResult::Vote(RaftVoteResponse {
                    vote: Some(encode_vote(&resp.vote)),
                    granted: resp.vote_granted,
                    last_log_id: resp.last_log_id.as_ref().map(encode_log_id),
                }),
                Err(e) => peer_error(e.to_string(), true),
            }
        }
        Rpc::Snapshot(c) => {
            let (Some(vote), Some(meta)) = (&c.vote, &c.meta) else {
                return peer_error("malformed snapshot chunk".into(), false);
            };
            let request = InstallSnapshotRequest {
                vote: decode_vote(vote),
                meta: crate::state_machine::decode_meta(meta),
                offset: c.offset,
                data: c.data.to_vec(),
                done: c.done,
            };
            match raft.install_snapshot(request).await {
                Ok(resp) => PeerResult::Snapshot(encode_vote(&resp.vote)),
                Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m))) => {
                    PeerResult::Error(PeerError {
                        message: m.to_string(),
                        expected_snapshot: m.expect.id.clone(),
                        expected_offset: m.expect.offset,
                        fatal: false,
                    })
                }
                Err(e) => peer_error(e.to_string(), true),
            }
        }
    }
}

fn append_response(resp: AppendEntriesResponse<NodeId>) -> RaftAppendResponse {
    let (outcome, matched, vote) = match resp {
        AppendEntriesResponse::Success => (RaftAppendOutcome::RaftAppendSuccess, None, None),
        AppendEntriesResponse::PartialSuccess(m) => (
            RaftAppendOutcome::RaftAppendPartial,
            m.as_ref().map(encode_log_id),
            None,
        ),
        AppendEntriesResponse::Conflict => (RaftAppendOutcome::RaftAppendConflict, None, None),
        AppendEntriesResponse::HigherVote(v) => (
            RaftAppendOutcome::RaftAppendHigherVote,
            None,
            Some(encode_vote(&v)),
        ),
    };
    RaftAppendResponse {
        outcome: outcome as i32,
        matched,
        vote,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Batch;

    /// An entry at `index` carrying one command of `bytes` bytes (none for
    /// a blank entry: `bytes` 0).
    fn entry(index: u64, bytes: usize) -> Entry {
        Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: if bytes == 0 {
                openraft::EntryPayload::Blank
            } else {
                openraft::EntryPayload::Normal(Batch(vec![vec![7u8; bytes].into()]))
            },
        }
    }

    #[test]
    fn an_append_carries_what_fits_and_at_least_one_entry() {
        let kib = |n: usize| n << 10;
        let entries: Vec<Entry> = (1..=6).map(|i| entry(i, kib(200))).collect();
        // 200 + 200 fit in 512 KiB; a third would not.
        assert_eq!(append_len(&entries, kib(512)), 2);
        assert_eq!(append_len(&entries, kib(600)), 3);
        assert_eq!(append_len(&entries, usize::MAX), 6);
        // An entry larger than the bound still goes, alone.
        assert_eq!(append_len(&entries, kib(100)), 1);
        // Blank entries weigh nothing; nothing to send is nothing sent.
        let blanks: Vec<Entry> = (1..=3).map(|i| entry(i, 0)).collect();
        assert_eq!(append_len(&blanks, 1), 3);
        assert_eq!(append_len(&[], kib(512)), 0);
    }

    #[test]
    fn redial_doubles_from_the_first_wait_up_to_the_longest() {
        let ms = Duration::from_millis;
        let waits: Vec<Duration> = Redial {
            first: ms(50),
            max: ms(150),
        }
        .waits()
        .take(5)
        .collect();
        assert_eq!(waits, [ms(50), ms(100), ms(150), ms(150), ms(150)]);
        // A longest wait below the first one is the first one.
        let flat: Vec<Duration> = Redial {
            first: ms(80),
            max: ms(10),
        }
        .waits()
        .take(3)
        .collect();
        assert_eq!(flat, [ms(80); 3]);
    }
}
