//! One member of a cluster, wired together: the Raft log and state
//! machine under `<data-dir>/raft/`, the peer transport, openraft, and the
//! operations the server calls (write, linearizable read, status).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use openraft::error::{
    ChangeMembershipError, CheckIsLeaderError, ClientWriteError, InitializeError, RaftError,
};
use openraft::{Config, Raft, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::error::{ClusterError, Result};
use crate::log_store::LogStore;
use crate::network::{Network, PeerIdentity, PeerRedisAddrs, Redial, cluster_id, serve_peers};
use crate::state_machine::StateMachine;
use crate::types::{Batch, CommandResult, Node, NodeId, TypeConfig};
use kv_store::replica::Replica;
use kv_store::{KeyListing, KeysPage};

/// How a member is started (kv-server's cluster flags).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This member's id (`--node-id`).
    pub node_id: NodeId,
    /// Every member of the initial cluster (`--initial-cluster`).
    pub members: BTreeMap<NodeId, Node>,
    /// The data directory; the Raft files go under `raft/` in it.
    pub data_dir: PathBuf,
    /// The shared peer secret (empty: none; only for loopback peers or
    /// with `tls`).
    pub secret: Vec<u8>,
    /// Mutual TLS on peer links (`None`: plain TCP).
    pub tls: Option<crate::PeerTls>,
    /// A follower that hears no leader for a random time in this range
    /// starts an election.
    pub election_timeout: (Duration, Duration),
    /// How often the leader sends heartbeats. openraft 0.9 also gives
    /// every append (and every read-index round) this long to be answered,
    /// so it must exceed the peer round trip, a follower's fdatasync
    /// included: with a 100 ms round trip and the 50 ms default, no append
    /// is ever answered in time and nothing commits
    /// (`tests/partitions.rs`). The default suits peers on one network.
    pub heartbeat: Duration,
    /// The largest peer frame.
    pub max_frame: usize,
    /// Build a snapshot (and purge the log) after this many applied
    /// entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot when it is purged, so a
    /// follower a little behind catches up from the log rather than by a
    /// snapshot transfer.
    pub keep_after_snapshot: u64,
    /// Most expired keys per second the leader's sweeper removes (0: no
    /// sweeper); see [`kv_store::StoreOptions::expiry_sweep_rate`].
    pub expiry_sweep_rate: u64,
    /// This member is not in `members`: it joins a running cluster, which
    /// adds it (as a learner, then a voter) with [`ClusterNode::add_member`]
    /// on the leader. It proposes no membership of its own. `members` is
    /// still the initial cluster's list: it names the cluster.
    pub join: bool,
    /// Where this member serves Redis clients, if it does: sent to its
    /// peers, so that a follower can name its leader's Redis address.
    pub redis_addr: Option<String>,
}

impl ClusterConfig {
    /// A configuration with the default timings: elections after 150 to
    /// 300 ms without a leader, heartbeats every 50 ms (so a new leader
    /// is elected once the election timeout and openraft's leader lease,
    /// as long as the longest timeout, have run out after the old one
    /// stops: 450 to 600 ms), snapshots every 100,000 entries.
    pub fn new(node_id: NodeId, members: BTreeMap<NodeId, Node>, data_dir: PathBuf) -> Self {
        ClusterConfig {
            node_id,
            members,
            data_dir,
            secret: Vec::new(),
            tls: None,
            election_timeout: (Duration::from_millis(150), Duration::from_millis(300)),
            heartbeat: Duration::from_millis(50),
            max_frame: 64 << 20,
            snapshot_every: 100_000,
            keep_after_snapshot: 1000,
            expiry_sweep_rate: 20_000,
            join: false,
            redis_addr: None,
        }
    }
}

/// How long a membership change waits for one still in progress (a new
/// leader's first membership not yet committed, or an earlier change)
/// before it gives up.
const MEMBERSHIP_SETTLE: Duration = Duration::from_secs(10);

type MembershipResult<T> =
    std::result::Result<T, RaftError<NodeId, ClientWriteError<NodeId, Node>>>;

/// Runs a membership change, again every 50 ms while openraft refuses it
/// because another is in progress (it commits within a heartbeat or two),
/// for at most [`MEMBERSHIP_SETTLE`]; any other outcome is returned.
async fn settled<T, F: Future<Output = MembershipResult<T>>>(
    mut change: impl FnMut() -> F,
) -> MembershipResult<T> {
    let until = tokio::time::Instant::now() + MEMBERSHIP_SETTLE;
    loop {
        match change().await {
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(_),
            ))) if tokio::time::Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// How long a checkpoint may take before its request gives up waiting.
const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a write or read was not done here.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    /// This member is not the leader; the leader's client address if known.
    #[error("not the leader (leader: {})", leader.as_deref().unwrap_or("unknown"))]
    NotLeader {
        /// The leader's client address.
        leader: Option<String>,
    },
    /// Raft stopped or failed; the outcome of a write is unknown.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// The write was taken by this member while it led, and then it lost
    /// the leadership before the write was committed: the new leader may
    /// or may not commit it.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
}

/// A write submitted with [`ClusterNode::submit`].
#[derive(Debug)]
pub enum PendingWrite {
    /// Waiting for the answer of the entry that carries it.
    Waiting(tokio::sync::oneshot::Receiver<std::result::Result<CommandResult, RequestError>>),
    /// Refused at once.
    Failed(RequestError),
}

impl PendingWrite {
    /// Waits until the write is committed by a majority and applied here,
    /// or refused. A write whose answer never comes (Raft stopped) is
    /// [`RequestError::Unavailable`]: its outcome is unknown.
    pub async fn wait(self) -> std::result::Result<CommandResult, RequestError> {
        match self {
            PendingWrite::Waiting(rx) => rx.await.unwrap_or_else(|_| {
                Err(RequestError::Unavailable(
                    "Raft stopped before answering; the write may or may not have been committed"
                        .to_string(),
                ))
            }),
            PendingWrite::Failed(e) => Err(e),
        }
    }
}

/// Most commands one Raft entry carries.
const MAX_BATCH_COMMANDS: usize = 512;

/// Most command bytes one Raft entry carries; a larger command goes alone.
/// An append carries at most [`MAX_APPEND_BYTES`](crate::network::MAX_APPEND_BYTES)
/// of them (and at least one entry), well under the peer frame limit.
const MAX_BATCH_BYTES: usize = 64 << 10;

/// Entries the proposer has handed to Raft and not yet seen answered, at
/// most (a bound on the writes held, not what forms batches; see
/// [`propose`]).
const MAX_ENTRIES_IN_FLIGHT: usize = 16;

/// Proposes the initial membership from this member, unless it has heard
/// from a candidate or holds a log already (openraft then refuses).
async fn propose_membership(
    raft: &Raft<TypeConfig>,
    node: NodeId,
    members: &BTreeMap<NodeId, Node>,
) -> Result<()> {
    match raft.initialize(members.clone()).await {
        Ok(()) => tracing::info!(node, "proposed the initial membership"),
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
            tracing::info!(node, "another member proposed the initial membership")
        }
        Err(e) => return Err(ClusterError::Corrupt(format!("initialize failed: {e}"))),
    }
    Ok(())
}

/// Waits until the snapshot `snapshot` reads from the metrics reaches
/// `target`, having asked for one with `trigger`, and asks again each time
/// a snapshot is published that falls short: openraft ignores the request
/// while a snapshot is being built (one it started by itself every
/// `--snapshot-every` entries, say), and that build may end before
/// `target`. Without asking again, a checkpoint that came during such a
/// build waited for the next one, up to [`CHECKPOINT_TIMEOUT`].
async fn await_snapshot<M, K, F, Fut>(
    rx: &mut tokio::sync::watch::Receiver<M>,
    target: K,
    snapshot: impl Fn(&M) -> K,
    mut trigger: F,
    deadline: tokio::time::Instant,
) -> std::result::Result<(), RequestError>
where
    K: PartialOrd,
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<(), RequestError>>,
{
    let mut asked_at = snapshot(&rx.borrow_and_update());
    trigger().await?;
    loop {
        let now = snapshot(&rx.borrow_and_update());
        if now >= target {
            return Ok(());
        }
        if now != asked_at {
            asked_at = now;
            trigger().await?;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(RequestError::Unavailable(
                    "Raft stopped before the snapshot was written".to_string(),
                ));
            }
            Err(_) => {
                return Err(RequestError::Unavailable(format!(
                    "the snapshot was not written within {} s",
                    CHECKPOINT_TIMEOUT.as_secs()
                )));
            }
        }
    }
}

/// A write waiting for the proposer.
struct Proposal {
    command: Vec<u8>,
    reply: tokio::sync::oneshot::Sender<std::result::Result<CommandResult, RequestError>>,
}

/// The proposer: takes the writes submitted on this member in order and
/// proposes them as [`Batch`] entries, then hands every write its own
/// command's result. openraft 0.9 appends a client entry and waits for its
/// fdatasync before it takes the next one, so a leader appends at most
/// one entry per sync whatever the load: after proposing an entry, the
/// proposer waits until the log has finished an append (or the entry is
/// answered, as a follower's refusal is at once), and the writes that
/// arrived meanwhile go together as the next entry. Under light load a
/// write goes at once, alone. Submission order is kept: the queue is FIFO
/// and entries reach openraft in the order they are proposed.
async fn propose(
    raft: Raft<TypeConfig>,
    node_id: NodeId,
    mut appends: tokio::sync::watch::Receiver<u64>,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Proposal>,
) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_ENTRIES_IN_FLIGHT));
    let mut held: Option<Proposal> = None;
    loop {
        let first = match held.take() {
            Some(p) => p,
            None => match queue.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let Ok(slot) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let mut bytes = first.command.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_COMMANDS {
            let Ok(next) = queue.try_recv() else { break };
            if bytes + next.command.len() > MAX_BATCH_BYTES {
                held = Some(next);
                break;
            }
            bytes += next.command.len();
            batch.push(next);
        }
        let (commands, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|p| (p.command.into(), p.reply))
            .unzip();
        // Whether this member leads as it proposes: a ForwardToLeader
        // answer then means the entry may have been appended and lost.
        let led = raft.metrics().borrow().current_leader == Some(node_id);
        let appended = *appends.borrow_and_update();
        // openraft's submission only puts the entry on an unbounded
        // channel to its core: the future is ready at the first poll.
        match raft.client_write_ff(Batch(commands)).now_or_never() {
            Some(Ok(answer)) => {
                let (done, answered) = tokio::sync::oneshot::channel::<()>();
                tokio::spawn(async move {
                    let outcome = answer.await;
                    drop(slot);
                    let _ = done.send(());
                    hand_out(replies, outcome, led);
                });
                tokio::select! {
                    _ = appends.wait_for(|n| *n > appended) => {}
                    _ = answered => {}
                }
            }
            Some(Err(fatal)) => {
                let e = RequestError::Unavailable(fatal.to_string());
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
            None => {
                for reply in replies {
                    let _ = reply.send(Err(RequestError::Unavailable(
                        "Raft did not take the write at once".to_string(),
                    )));
                }
            }
        }
    }
}

/// Hands each write of an entry its answer: its own command's result, or
/// the entry's error.
fn hand_out(
    replies: Vec<tokio::sync::oneshot::Sender<std::result::Result<CommandResult, RequestError>>>,
    outcome: std::result::Result<
        std::result::Result<
            openraft::raft::ClientWriteResponse<TypeConfig>,
            ClientWriteError<NodeId, Node>,
        >,
        tokio::sync::oneshot::error::RecvError,
    >,
    led: bool,
) {
    let error = match outcome {
        Ok(Ok(response)) => {
            let mut results = response.data.0.into_iter();
            for reply in replies {
                let _ = reply.send(results.next().ok_or_else(|| {
                    RequestError::Unavailable("the entry's answer lacks this write's".to_string())
                }));
            }
            return;
        }
        // openraft answers ForwardToLeader both for a write it refused as a
        // follower and for one whose entry a leader appended and then lost
        // with its leadership; only the first is known not to have
        // happened.
        Ok(Err(ClientWriteError::ForwardToLeader(_))) if led => RequestError::OutcomeUnknown(
            "the leader lost its leadership before the write was committed".to_string(),
        ),
        Ok(Err(ClientWriteError::ForwardToLeader(f))) => RequestError::NotLeader {
            leader: f.leader_node.map(|n| n.client_addr),
        },
        Ok(Err(e)) => RequestError::Unavailable(e.to_string()),
        Err(_) => RequestError::Unavailable(
            "Raft stopped before answering; the write may or may not have been committed"
                .to_string(),
        ),
    };
    for reply in replies {
        let _ = reply.send(Err(error.clone()));
    }
}

/// A running member.
pub struct ClusterNode {
    raft: Raft<TypeConfig>,
    state: StateMachine,
    log: LogStore,
    config: ClusterConfig,
    peers: JoinHandle<()>,
    sweeper: Option<JoinHandle<()>>,
    swept: Arc<AtomicU64>,
    started: Instant,
    proposals: tokio::sync::mpsc::UnboundedSender<Proposal>,
    proposer: JoinHandle<()>,
    peer_redis: PeerRedisAddrs,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("node_id", &self.config.node_id)
            .finish_non_exhaustive()
    }
}

/// What [`ClusterNode::metrics`] reports about this member.
#[derive(Debug, Clone)]
pub struct MemberMetrics {
    /// Role, term, leader, last log and applied index, members.
    pub status: MemberStatus,
    /// The last index known committed (`None` before the first commit).
    pub committed_index: Option<u64>,
    /// On the leader, each other member's last index known replicated
    /// (`None`: none yet); empty on every other member.
    pub replication: BTreeMap<NodeId, Option<u64>>,
    /// Keys in the state machine.
    pub keys: u64,
    /// Key and value bytes in the state machine.
    pub bytes: u64,
    /// Keys in the state machine with an expiry deadline.
    pub expiring_keys: u64,
    /// The Raft log's wal-core counters.
    pub log: wal_core::WalStats,
    /// Bytes of the Raft log's segment files on disk.
    pub log_bytes: u64,
    /// Snapshots built on this member since it started.
    pub snapshots: u64,
    /// Time since this member started.
    pub uptime: Duration,
    /// Expired keys this member's sweeper removed while it led.
    pub expired_swept: u64,
}

/// What `status` reports about this member.
#[derive(Debug, Clone)]
pub struct MemberStatus {
    /// This member's id.
    pub node_id: NodeId,
    /// "leader", "follower", "candidate" or "learner".
    pub role: &'static str,
    /// The current term.
    pub term: u64,
    /// The leader, if known.
    pub leader: Option<NodeId>,
    /// The last index in its log.
    pub last_log_index: Option<u64>,
    /// The last applied index.
    pub applied_index: Option<u64>,
    /// The members, with their addresses.
    pub members: BTreeMap<NodeId, Node>,
}

impl ClusterNode {
    /// Opens the Raft state, starts openraft and the peer listener, and on
    /// a fresh data directory proposes the initial membership (every member
    /// does; openraft accepts it once and refuses the repeats, so the
    /// cluster forms with no further step and a restarted member simply
    /// rejoins from its log).
    pub async fn start(config: ClusterConfig, peer_listener: TcpListener) -> Result<ClusterNode> {
        let started = Instant::now();
        let dir = config.data_dir.join("raft");
        let (log, state) = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || -> Result<_> {
                Ok((LogStore::open(&dir)?, StateMachine::open(&dir)?))
            })
            .await
            .map_err(|e| ClusterError::Corrupt(format!("open task failed: {e}")))??
        };
        let raft_config = Config {
            cluster_name: format!("kv-{:x}", cluster_id(&config.members)),
            election_timeout_min: config.election_timeout.0.as_millis() as u64,
            election_timeout_max: config.election_timeout.1.as_millis() as u64,
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            // Entries per append: a bound on what the log reads for one;
            // the network cuts an append at MAX_APPEND_BYTES, so that many
            // batches of 64 KiB are about two appends.
            max_payload_entries: 16,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.keep_after_snapshot,
            ..Config::default()
        }
        .validate()
        .map_err(|e| ClusterError::Corrupt(format!("Raft configuration: {e}")))?;
        let identity = PeerIdentity {
            node_id: config.node_id,
            cluster_id: cluster_id(&config.members),
            secret: config.secret.clone(),
            max_frame: config.max_frame,
            tls: config.tls.clone(),
            redis_addr: config.redis_addr.clone().unwrap_or_default(),
            peer_redis: PeerRedisAddrs::default(),
        };
        let peer_redis = Arc::clone(&identity.peer_redis);
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            Network::new(
                identity.clone(),
                Redial {
                    first: config.heartbeat,
                    max: config.election_timeout.0,
                },
            ),
            log.clone(),
            state.clone(),
        )
        .await
        .map_err(|e| ClusterError::Corrupt(format!("Raft failed to start: {e}")))?;
        let peers = tokio::spawn(serve_peers(peer_listener, raft.clone(), identity));
        let swept = Arc::new(AtomicU64::new(0));
        let sweeper = (config.expiry_sweep_rate > 0).then(|| {
            tokio::spawn(sweep_expired(
                raft.clone(),
                state.clone(),
                config.node_id,
                config.expiry_sweep_rate,
                Arc::clone(&swept),
            ))
        });
        let (proposals, queue) = tokio::sync::mpsc::unbounded_channel();
        let proposer = tokio::spawn(propose(raft.clone(), config.node_id, log.appends(), queue));
        if config.join {
            tracing::info!(
                node = config.node_id,
                "waiting to be added to the cluster (cluster add on the leader)"
            );
            return Ok(ClusterNode {
                raft,
                state,
                log,
                config,
                peers,
                sweeper,
                swept,
                started,
                proposals,
                proposer,
                peer_redis,
            });
        }
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Corrupt(format!("Raft stopped at start: {e}")))?;
        let rank = config
            .members
            .keys()
            .position(|id| *id == config.node_id)
            .unwrap_or(0) as u32;
        if initialized {
            tracing::info!(
                node = config.node_id,
                "rejoining: the log already holds a membership"
            );
        } else if rank == 0 {
            propose_membership(&raft, config.node_id, &config.members).await?;
        } else {
            // Every member may form the cluster, but not all at once: the
            // one with the lowest id proposes at once, the others one
            // longest election timeout apart, by rank, and only if no
            // candidate has reached them by then (openraft refuses a node
            // that has voted). Members that all stood at once would split
            // the first votes, and openraft 0.9 keeps a member that lost
            // with a shorter log slower to stand (by twice the longest
            // election timeout) until it next stands: after forming that
            // way, a leader's death took over a second to mend.
            let delay = config.election_timeout.1 * rank;
            let (raft, node, members) = (raft.clone(), config.node_id, config.members.clone());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Err(e) = propose_membership(&raft, node, &members).await {
                    tracing::error!(node, "{e}");
                }
            });
        }
        Ok(ClusterNode {
            raft,
            state,
            log,
            config,
            peers,
            sweeper,
            swept,
            started,
            proposals,
            proposer,
            peer_redis,
        })
    }

    /// This member's id.
    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    /// The member this one takes for the leader, if it knows one.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Where member `id` serves Redis clients, as far as this member
    /// knows: its own `redis_addr`, or what the peer sent with its last
    /// message (a leader sends one every heartbeat). `None`: it has no
    /// Redis listener, or has not said so yet.
    pub fn redis_addr(&self, id: NodeId) -> Option<String> {
        if id == self.config.node_id {
            return self.config.redis_addr.clone();
        }
        self.peer_redis
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// The client address of member `id`, if it is one.
    pub fn client_addr(&self, id: NodeId) -> Option<String> {
        let metrics = self.raft.metrics().borrow().clone();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.client_addr.clone())
            .or_else(|| self.config.members.get(&id).map(|n| n.client_addr.clone()))
    }

    /// Proposes `command` and returns once it is committed by a majority
    /// and applied here, with what applying it did.
    pub async fn write(
        &self,
        command: Vec<u8>,
    ) -> std::result::Result<CommandResult, RequestError> {
        self.submit(command).wait().await
    }

    /// Proposes `command` without waiting, in call order: calls on one
    /// connection are committed in the order they were submitted. The
    /// answer comes from [`PendingWrite::wait`].
    /// Writes submitted together (while earlier ones are on their way)
    /// share a Raft entry, each with its own version.
    pub fn submit(&self, command: Vec<u8>) -> PendingWrite {
        let (reply, answer) = tokio::sync::oneshot::channel();
        match self.proposals.send(Proposal { command, reply }) {
            Ok(()) => PendingWrite::Waiting(answer),
            Err(_) => PendingWrite::Failed(RequestError::Unavailable(
                "the member is shutting down".to_string(),
            )),
        }
    }

    /// Runs `f` on the state once this member has confirmed with a quorum
    /// that it is still the leader and has applied everything committed
    /// before the call (openraft's read index): a linearizable read.
    pub async fn read<T>(
        &self,
        f: impl FnOnce(&Replica) -> T,
    ) -> std::result::Result<T, RequestError> {
        self.linearize().await?;
        Ok(self.state.read(f))
    }

    /// A linearizable key listing (as [`ClusterNode::read`]), copied a
    /// chunk at a time: the state's lock is taken once per chunk, so
    /// applying committed entries waits for one chunk, never for a whole
    /// listing (see [`KeyListing`]).
    pub async fn keys(
        &self,
        prefix: &[u8],
        limit: usize,
        max_bytes: usize,
    ) -> std::result::Result<KeysPage, RequestError> {
        self.linearize().await?;
        let mut listing = KeyListing::new(prefix, limit, max_bytes);
        while !listing.is_done() {
            self.state.read(|replica| replica.list_keys(&mut listing));
        }
        Ok(listing.into_page())
    }

    /// Returns once this member has confirmed with a quorum that it is
    /// still the leader and has applied everything committed before the
    /// call (openraft's read index).
    async fn linearize(&self) -> std::result::Result<(), RequestError> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(fwd))) => {
                Err(RequestError::NotLeader {
                    leader: fwd
                        .leader_node
                        .map(|n| n.client_addr)
                        .or_else(|| fwd.leader_id.and_then(|id| self.client_addr(id))),
                })
            }
            Err(e) => Err(RequestError::Unavailable(e.to_string())),
        }
    }

    /// Adds member `id` (on the leader): first as a learner, waiting until
    /// it has caught up with the log (or a snapshot), then as a voter.
    pub async fn add_member(
        &self,
        id: NodeId,
        node: Node,
    ) -> std::result::Result<(), RequestError> {
        settled(|| self.raft.add_learner(id, node.clone(), true))
            .await
            .map_err(|e| self.membership_error(e))?;
        settled(|| {
            let mut voters = self.voters();
            voters.insert(id);
            self.raft.change_membership(voters, false)
        })
        .await
        .map_err(|e| self.membership_error(e))?;
        Ok(())
    }

    /// Removes member `id` (on the leader): it stops being a voter and is
    /// dropped from the membership.
    pub async fn remove_member(&self, id: NodeId) -> std::result::Result<(), RequestError> {
        let mut voters = self.voters();
        if !voters.remove(&id) {
            return Err(RequestError::Unavailable(format!("{id} is not a voter")));
        }
        if voters.is_empty() {
            return Err(RequestError::Unavailable(
                "the last voter cannot be removed".to_string(),
            ));
        }
        settled(|| self.raft.change_membership(voters.clone(), false))
            .await
            .map_err(|e| self.membership_error(e))?;
        Ok(())
    }

    fn voters(&self) -> std::collections::BTreeSet<NodeId> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    fn membership_error(
        &self,
        e: RaftError<NodeId, ClientWriteError<NodeId, Node>>,
    ) -> RequestError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => RequestError::NotLeader {
                leader: f
                    .leader_node
                    .map(|n| n.client_addr)
                    .or_else(|| f.leader_id.and_then(|id| self.client_addr(id))),
            },
            e => RequestError::Unavailable(e.to_string()),
        }
    }

    /// Builds a snapshot now (the log is purged behind it by openraft).
    pub async fn checkpoint(&self) -> std::result::Result<(), RequestError> {
        // openraft's trigger only asks for a snapshot; the answer waits
        // until one covers everything applied when it was asked.
        let mut rx = self.raft.metrics();
        let target = rx.borrow().last_applied;
        let deadline = tokio::time::Instant::now() + CHECKPOINT_TIMEOUT;
        let trigger = || async {
            self.raft
                .trigger()
                .snapshot()
                .await
                .map_err(|e| RequestError::Unavailable(e.to_string()))
        };
        await_snapshot(&mut rx, target, |m| m.snapshot, trigger, deadline).await
    }

    /// One piece of a backup of this member's state (see
    /// [`kv_store::inspect::read_backup_chunk`]): with `seq` `None`, takes a
    /// checkpoint and starts sending the snapshot it wrote; then reads on
    /// at `offset`. The snapshot is kv-store's format, as of the Raft
    /// position it names, so `kv-admin restore` makes a single node's data
    /// directory of it.
    pub async fn backup_chunk(
        &self,
        seq: Option<u64>,
        offset: u64,
        max_len: usize,
    ) -> std::result::Result<kv_store::inspect::BackupChunk, RequestError> {
        if seq.is_none() {
            self.checkpoint().await?;
        }
        let path = crate::state_machine::snapshot_path(&self.config.data_dir.join("raft"));
        tokio::task::spawn_blocking(move || {
            kv_store::inspect::read_backup_chunk(&path, seq, offset, max_len)
        })
        .await
        .map_err(|e| RequestError::Unavailable(format!("backup task failed: {e}")))?
        .map_err(|e| match e {
            kv_store::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                RequestError::Unavailable("this member has no snapshot to back up yet".to_string())
            }
            other => RequestError::Unavailable(other.to_string()),
        })
    }

    /// Waits until this member knows a leader, up to `timeout`; the leader.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<NodeId> {
        let mut rx = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(leader) = rx.borrow().current_leader {
                return Some(leader);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// This member's view of the cluster.
    pub fn status(&self) -> MemberStatus {
        let m = self.raft.metrics().borrow().clone();
        self.status_from(&m)
    }

    /// What the metrics endpoint shows of this member: its status, how far
    /// the log is committed, the followers' replication (on the leader),
    /// the state machine's size and the Raft log's counters.
    pub fn metrics(&self) -> MemberMetrics {
        let m = self.raft.metrics().borrow().clone();
        let (keys, bytes, expiring_keys) = self
            .state
            .read(|replica| (replica.len(), replica.bytes(), replica.expiring()));
        MemberMetrics {
            status: self.status_from(&m),
            committed_index: self.log.committed_index(),
            replication: m
                .replication
                .iter()
                .flatten()
                .filter(|(id, _)| **id != self.config.node_id)
                .map(|(id, matched)| (*id, matched.map(|l| l.index)))
                .collect(),
            keys,
            bytes,
            expiring_keys,
            log: self.log.wal().stats(),
            log_bytes: self.log.wal().disk_size(),
            snapshots: self.state.snapshots_built(),
            uptime: self.started.elapsed(),
            expired_swept: self.swept.load(Ordering::Relaxed),
        }
    }

    fn status_from(&self, m: &openraft::RaftMetrics<NodeId, Node>) -> MemberStatus {
        MemberStatus {
            node_id: self.config.node_id,
            role: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            },
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            members: m
                .membership_config
                .membership()
                .nodes()
                .map(|(id, n)| (*id, n.clone()))
                .collect(),
        }
    }

    /// The Raft log's wal-core counters.
    pub fn log_stats(&self) -> wal_core::WalStats {
        self.log.wal().stats()
    }

    /// Stops Raft and the peer listener.
    pub async fn shutdown(self) {
        self.peers.abort();
        self.proposer.abort();
        if let Some(sweeper) = &self.sweeper {
            sweeper.abort();
        }
        let _ = self.raft.shutdown().await;
    }
}

/// How often the leader's sweeper looks for expired keys.
const SWEEP_TICK: Duration = Duration::from_millis(100);

/// The expiry sweeper of a cluster: while this member leads, ten times a
/// second it proposes the removal of up to a tenth of `rate` expired keys
/// as one transaction of SWEEP writes, each of which removes its key only
/// if the key still has the version it had when found and has expired by
/// the entry's clock, so that a key written again meanwhile survives and
/// every replica decides alike. Followers only apply what it proposes.
async fn sweep_expired(
    raft: Raft<TypeConfig>,
    state: StateMachine,
    node_id: NodeId,
    rate: u64,
    swept: Arc<AtomicU64>,
) {
    let per_tick = usize::try_from((rate / 10).max(1)).unwrap_or(usize::MAX);
    let mut tick = tokio::time::interval(SWEEP_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if raft.metrics().borrow().current_leader != Some(node_id) {
            continue;
        }
        let expired = state.read(|replica| replica.expired(per_tick));
        if expired.is_empty() {
            continue;
        }
        let txn = kv_store::Txn {
            conditions: Vec::new(),
            writes: expired
                .into_iter()
                .map(|(key, seq)| kv_store::Write::Sweep { key, seq })
                .collect(),
        };
        let command = kv_store::replica::encode_txn(&txn);
        match raft.client_write(Batch(vec![command.into()])).await {
            Ok(response) => {
                let removed = match response.data.0.first().and_then(|r| r.txn.as_ref()) {
                    Some(Ok(outcome)) => outcome
                        .results
                        .iter()
                        .filter(|r| matches!(r, kv_store::WriteResult::Sweep { removed: true }))
                        .count(),
                    _ => 0,
                };
                swept.fetch_add(removed as u64, Ordering::Relaxed);
                tracing::debug!(removed, "expired keys swept");
            }
            // Lost the lead or shutting down: the next leader sweeps.
            Err(e) => tracing::debug!(error = %e, "sweeping expired keys failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_checkpoint_asks_again_when_a_running_snapshot_ends_short() {
        let (published, mut rx) = tokio::sync::watch::channel(Some(5));
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // The member was building a snapshot up to 8 when asked for one
        // up to 10: that build ends at 8 whatever was asked; only the
        // second request, made after 8 is published, gives 10.
        let count = Arc::clone(&asked);
        let trigger = move || {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            published.send_replace(Some(if n == 1 { 8 } else { 10 }));
            async { Ok(()) }
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        await_snapshot(&mut rx, Some(10), |m| *m, trigger, deadline)
            .await
            .expect("the snapshot reaches 10");
        assert_eq!(asked.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_checkpoint_covered_already_asks_once_and_a_stalled_one_times_out() {
        let (_published, mut rx) = tokio::sync::watch::channel(Some(12));
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&asked);
        let trigger = move || {
            count.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        };
        let soon = tokio::time::Instant::now() + Duration::from_secs(10);
        await_snapshot(&mut rx, Some(10), |m| *m, trigger.clone(), soon)
            .await
            .expect("12 covers 10");
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        // Nothing is ever published: the wait ends at its deadline.
        let past = tokio::time::Instant::now() + Duration::from_millis(50);
        let e = await_snapshot(&mut rx, Some(20), |m| *m, trigger, past)
            .await
            .expect_err("no snapshot reaches 20");
        assert!(e.to_string().contains("not written"), "{e}");
    }
}
