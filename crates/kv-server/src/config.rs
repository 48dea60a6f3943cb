//! Command-line flags (each also an environment variable) and the settings
//! they turn into: [`StoreOptions`] for opening the store and
//! [`ServerConfig`] for [`crate::run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use kv_proto::parse_size;
use kv_store::{RecoveryMode, StoreOptions, SyncPolicy, WalOptions};

use crate::auth::AuthToken;
use crate::tls::ServerTls;

/// The environment variable that may hold the auth token itself (the
/// token is never taken from the command line, where `ps` shows it).
pub const AUTH_TOKEN_ENV: &str = "KV_AUTH_TOKEN";

/// Exit status of a clean shutdown.
pub const EXIT_OK: u8 = 0;
/// Exit status when start-up or serving failed (bad address, port in use,
/// data directory locked or unreadable, recovery refused the log).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for a command-line usage error (clap's own convention).
pub const EXIT_USAGE: u8 = 2;

/// The longest duration any flag accepts: one day. Far beyond any sensible
/// timeout or delay, and far below where `Instant + duration` overflows (a
/// panic in every connection task); a larger value is a usage error.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// Default of `--max-in-flight-bytes`: 64 MiB per connection.
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: usize = 64 << 20;

/// Default of `--max-total-in-flight-bytes`: 1 GiB for the server.
pub const DEFAULT_MAX_TOTAL_IN_FLIGHT_BYTES: usize = 1 << 30;

/// Most runtime worker threads `--worker-threads` accepts.
pub const MAX_WORKER_THREADS: u32 = 1024;

/// Default of `--snapshot-every`: the applied entries between a cluster
/// member's snapshots (kv-cluster's own default).
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 100_000;

/// A flag a single node uses and a cluster member does not, and what a
/// member does instead: given explicitly to a member, it is a usage error.
struct SingleNodeOnly {
    /// clap's id of the flag (the field's name).
    id: &'static str,
    flag: &'static str,
    env: &'static str,
    instead: &'static str,
}

const MEMBER_SYNCS: &str =
    "a cluster member's Raft log always fdatasyncs before a write is acknowledged";

/// The single-node flags a cluster member refuses, in the order of `--help`.
const SINGLE_NODE_ONLY: [SingleNodeOnly; 4] = [
    SingleNodeOnly {
        id: "sync_policy",
        flag: "--sync-policy",
        env: "KV_SYNC_POLICY",
        instead: MEMBER_SYNCS,
    },
    SingleNodeOnly {
        id: "group_commit_delay_us",
        flag: "--group-commit-delay-us",
        env: "KV_GROUP_COMMIT_DELAY_US",
        instead: MEMBER_SYNCS,
    },
    SingleNodeOnly {
        id: "sync_interval_ms",
        flag: "--sync-interval-ms",
        env: "KV_SYNC_INTERVAL_MS",
        instead: MEMBER_SYNCS,
    },
    SingleNodeOnly {
        id: "checkpoint_after",
        flag: "--checkpoint-after",
        env: "KV_CHECKPOINT_AFTER",
        instead: "a cluster member snapshots every --snapshot-every entries",
    },
];

/// The flags with a default whose explicit use (on the command line or in
/// the environment) [`Args::cluster_config`] checks: the single-node ones
/// and `--snapshot-every`.
const RECORDED: [&str; 5] = [
    SINGLE_NODE_ONLY[0].id,
    SINGLE_NODE_ONLY[1].id,
    SINGLE_NODE_ONLY[2].id,
    SINGLE_NODE_ONLY[3].id,
    "snapshot_every",
];

/// A flag of [`RECORDED`] that was given explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Explicit {
    id: &'static str,
    /// Given by its environment variable, not on the command line.
    from_env: bool,
}

const AFTER_HELP: &str = "\
Exit status: 0 after a clean shutdown (SIGINT/SIGTERM), 1 when start-up or \
serving fails (one line on stderr says why: address that does not resolve \
or is in use, data directory locked by another server, unreadable or corrupt \
data) or when the server stops after its write-ahead log failed, 2 for a \
usage error.

Shutdown: on SIGINT or SIGTERM the server stops accepting, answers every \
request it has already read, makes every acknowledged write durable, and \
exits 0. If the write-ahead log had failed, it exits 1 instead, and its \
shutdown lines say that the shutdown was not clean.

Failed fsync (fail-stop): if the write-ahead log cannot sync (or write), \
the writes of the group that hit the failure get OUTCOME_UNKNOWN (they may \
be on disk or not) and every later write gets UNAVAILABLE; no write is ever \
acknowledged that the disk may not hold. The server keeps answering reads \
(which only see acknowledged writes) and logs the failure once at ERROR. \
What to do: after a failed fsync the kernel's page cache may still hold log \
data that the disk never got, so restarting only the process is not a \
clean recovery: it would read that data back from the cache and serve it as \
if it were durable. Stop the server, check the disk (kernel log), then \
restart the machine, or unmount and remount the file system, before \
starting the server again; recovery then reads what is really on disk. \
Writes that got OUTCOME_UNKNOWN may or may not be there afterwards.

Security: by default the server listens on loopback only, clients need no \
token and the listener speaks plain TCP. --auth-token-file FILE (or the \
token itself in the environment variable KV_AUTH_TOKEN; never on the \
command line) makes every connection authenticate before anything else; \
--tls-cert and --tls-key serve clients over TLS 1.3; in a cluster, \
--peer-tls-cert, --peer-tls-key and --peer-tls-ca make every peer link \
mutual TLS. Protected mode: an --addr (or --redis-addr) beyond loopback is \
refused at start unless an auth token is set or --allow-unauthenticated is given.

Full disk: a write that finds the disk full gets UNAVAILABLE with a message \
saying so; nothing of it was written and nothing acknowledged is lost. This \
is not fail-stop: the server keeps serving, and writes succeed again once \
space is freed.

Sizes accept a suffix: 4096, 64KiB, 64MiB, 1GiB (also K, M, G, KB, MB, GB, \
all powers of 1024). Durations accept ms, s, m: 500ms, 10s, 5m (a bare \
number is seconds); every duration flag, --group-commit-delay-us and \
--sync-interval-ms included, is at most one day (1440m).";

/// Flags of the `kv-server` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kv-server",
    version,
    about = "Durable key-value store server: a TCP service over a write-ahead log",
    after_help = AFTER_HELP
)]
pub struct Args {
    /// Address to listen on, HOST:PORT: an IP address (`[::1]:7878` for
    /// IPv6) or a host name, resolved at start-up (the server listens on the
    /// first address it resolves to that it can bind). Port 0 picks a free
    /// port (the log line `ready: listening on ...` gives the real one).
    /// The server binds before it recovers its data and answers clients
    /// UNAVAILABLE until recovery has finished. Only loopback addresses
    /// unless an auth token is set (--auth-token-file, KV_AUTH_TOKEN) or
    /// --allow-unauthenticated is given.
    #[arg(long, env = "KV_ADDR", default_value = "127.0.0.1:7878",
          value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub addr: String,

    /// Serve metrics over HTTP on HOST:PORT: Prometheus text on /metrics
    /// (requests by command and outcome, latencies, fsync latency, group
    /// commit sizes, the log, checkpoints, connections, bytes in flight,
    /// keys and memory; in a cluster the Raft role, term, indexes and
    /// replication lag), /healthz (200 while the process runs) and /readyz
    /// (200 once recovered and, in a cluster, a leader is known; 503 with
    /// the reason otherwise). Plain HTTP without authentication, showing
    /// counts and sizes, never keys or values: bind it where only the
    /// monitoring system reaches it. Port 0 picks a free port (the log line
    /// `metrics: listening on ...` gives it). Off unless given.
    #[arg(long, env = "KV_METRICS_ADDR", value_name = "HOST:PORT",
          value_parser = parse_host_port)]
    pub metrics_addr: Option<String>,

    /// Also serve the Redis protocol (RESP2 and RESP3, inline commands,
    /// pipelining) on HOST:PORT, on the same store, for redis-cli,
    /// redis-benchmark and Redis client libraries. The same limits, auth
    /// token (clients send AUTH, or HELLO ... AUTH), TLS and protected mode
    /// as --addr; --max-frame is the longest bulk string and inline
    /// command. On a cluster member, writes go through Raft and reads are
    /// linearizable; a follower answers -READONLY (writes) or -NOTLEADER
    /// (reads) naming the leader's Redis address. Port 0 picks a free port
    /// (the log line `redis: listening on ...` gives it). Off unless given.
    #[arg(long, env = "KV_REDIS_ADDR", value_name = "HOST:PORT",
          value_parser = parse_host_port)]
    pub redis_addr: Option<String>,

    /// Listen on an address that is not a loopback address although
    /// clients are not authenticated (no auth token). Without it, such an
    /// --addr (0.0.0.0 included) is refused at start-up (protected mode):
    /// whoever reaches it could read and overwrite every key. Give it only
    /// on a network where every client is trusted.
    #[arg(long, env = "KV_ALLOW_UNAUTHENTICATED",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_unauthenticated: bool,

    /// A file holding the token every client must present before anything
    /// else (read at start; one trailing newline is dropped; an empty file
    /// is an error). The token may instead be given in the environment
    /// variable KV_AUTH_TOKEN; never on the command line, where any user
    /// of the machine could read it. Failed attempts are logged with the
    /// client's address and slowed. Without TLS the token crosses the
    /// network in clear: give --tls-cert and --tls-key beyond loopback.
    #[arg(
        long,
        env = "KV_AUTH_TOKEN_FILE",
        value_name = "FILE",
        help_heading = "Security"
    )]
    pub auth_token_file: Option<PathBuf>,

    /// Serve clients over TLS 1.3 with this certificate chain (PEM, the
    /// server's certificate first, then intermediates). Needs --tls-key.
    /// Clients then connect with `kv-client --tls` (trusting the system's
    /// CAs) or `--tls-ca FILE`; a plain-text client gets an error saying
    /// TLS is needed.
    #[arg(
        long,
        env = "KV_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key",
        help_heading = "Security"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "KV_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert",
        help_heading = "Security"
    )]
    pub tls_key: Option<PathBuf>,

    /// Directory of the write-ahead log and snapshots; created if missing.
    /// Only one server may use it at a time.
    #[arg(long, env = "KV_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// When a write is acknowledged relative to durability: `always`
    /// (fdatasync before the reply; concurrent writes share syncs), `group`
    /// (as always, but the store gathers writes for --group-commit-delay-us
    /// after the first of a batch, then syncs them together), `interval`
    /// (synced every --sync-interval-ms; a crash may lose that much), `never`
    /// (left to the OS; a crash may lose anything not yet written back).
    /// Single node only: a cluster member refuses any but `always` (its Raft
    /// log always fdatasyncs before a write is acknowledged); see
    /// --snapshot-every for cluster members.
    #[arg(long, env = "KV_SYNC_POLICY", value_enum, default_value_t = SyncPolicyArg::Always)]
    pub sync_policy: SyncPolicyArg,

    /// With --sync-policy group: how long the store gathers writes after the
    /// first of a batch before syncing them together, in microseconds (at
    /// most one day). Single node only.
    #[arg(long, env = "KV_GROUP_COMMIT_DELAY_US", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(0..=MAX_DURATION.as_micros() as u64))]
    pub group_commit_delay_us: u64,

    /// With --sync-policy interval: time between background syncs, in
    /// milliseconds (0 is taken as 1; at most one day). Single node only.
    #[arg(long, env = "KV_SYNC_INTERVAL_MS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=MAX_DURATION.as_millis() as u64))]
    pub sync_interval_ms: u64,

    /// What start-up may cut from a damaged write-ahead log: `strict` (cut
    /// only what an interrupted write leaves: a torn tail), `absolute` (cut
    /// nothing, not even a torn tail: refuse to start instead), `tolerant`
    /// (also cut real corruption: the log ends at the first bad record and
    /// every record after it is deleted, even intact ones; each cut is a
    /// warning in the log). A refusal names the file, the offset and the
    /// mode that would cut there; `tolerant` is an operator's last resort,
    /// after copying the data directory aside.
    #[arg(long, env = "KV_RECOVERY_MODE", value_enum, default_value_t = RecoveryModeArg::Strict)]
    pub recovery_mode: RecoveryModeArg,

    /// Size at which a write-ahead log segment is closed and a new one
    /// started.
    #[arg(long, env = "KV_SEGMENT_SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub segment_size: u64,

    /// Take a checkpoint (snapshot, then drop the log it covers)
    /// automatically once the log exceeds this many bytes; 0 turns automatic
    /// checkpoints off. One that fails is retried after 0.5 s, then twice as
    /// long each time up to 60 s, with one warning per failure; only the
    /// first failed attempt rotates the log. A checkpoint request while one
    /// runs gets that one's outcome. Single node only; see --snapshot-every
    /// for cluster members.
    #[arg(long, env = "KV_CHECKPOINT_AFTER", default_value = "256MiB", value_parser = parse_size)]
    pub checkpoint_after: u64,

    /// Most bytes per second a checkpoint writes its snapshot at, so that it
    /// does not take the disk and a core away from writers; 0 writes
    /// unpaced.
    #[arg(long, env = "KV_CHECKPOINT_RATE", default_value = "32MiB", value_parser = parse_size)]
    pub checkpoint_rate: u64,

    /// Most expired keys per second the sweeper removes, with ordinary
    /// delete records in batches ten times a second, so that their memory
    /// comes back without a mass expiry taking the log from writers. An
    /// expired key is invisible at once either way; 0 turns the sweeper
    /// off (expired keys then take memory until overwritten or deleted).
    /// In a cluster the leader sweeps, through the Raft log.
    #[arg(long, env = "KV_EXPIRY_SWEEP_RATE", default_value_t = 20_000)]
    pub expiry_sweep_rate: u64,

    /// Most connections served at once. A client over the limit gets an
    /// UNAVAILABLE error ("max number of clients reached") and is closed at
    /// once.
    #[arg(long, env = "KV_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Largest frame (one request) accepted. A longer declared length is
    /// answered TOO_LARGE and the connection is closed without reading it.
    #[arg(long, env = "KV_MAX_FRAME", default_value = "8MiB", value_parser = parse_size)]
    pub max_frame: u64,

    /// Largest key accepted; a larger one is answered TOO_LARGE.
    #[arg(long, env = "KV_MAX_KEY_SIZE", default_value = "64KiB", value_parser = parse_size)]
    pub max_key_size: u64,

    /// Largest value accepted; a larger one is answered TOO_LARGE.
    #[arg(long, env = "KV_MAX_VALUE_SIZE", default_value = "4MiB", value_parser = parse_size)]
    pub max_value_size: u64,

    /// Close a connection that has sent nothing for this long. More than 0,
    /// at most one day.
    #[arg(long, env = "KV_IDLE_TIMEOUT", default_value = "300s", value_parser = parse_timeout)]
    pub idle_timeout: Duration,

    /// Close a connection whose started frame has not fully arrived within
    /// this long, or that does not take a batch of responses within this
    /// long (defends against slow, half-open and non-reading clients). More
    /// than 0, at most one day.
    #[arg(long, env = "KV_FRAME_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub frame_timeout: Duration,

    /// Most requests per connection read but not yet answered; past this the
    /// server stops reading that connection until replies drain.
    #[arg(long, env = "KV_MAX_IN_FLIGHT", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,

    /// Most bytes of requests (their frames) per connection read but not
    /// yet answered; past this the server stops reading that connection
    /// until replies drain. A single request larger than this (up to
    /// --max-frame) is read once the connection has nothing else in flight.
    /// More than 0.
    #[arg(long, env = "KV_MAX_IN_FLIGHT_BYTES", default_value = "64MiB",
          value_parser = parse_nonzero_size)]
    pub max_in_flight_bytes: u64,

    /// Most bytes of requests all connections together may have read but
    /// not yet answered. Past this the server stops reading from the
    /// connections that hold the most (TCP backpressure) until replies
    /// drain; nothing read is dropped or refused. At least --max-frame. The
    /// server's memory is about this plus the map plus per-connection
    /// buffers (see the README).
    #[arg(long, env = "KV_MAX_TOTAL_IN_FLIGHT_BYTES", default_value = "1GiB",
          value_parser = parse_nonzero_size)]
    pub max_total_in_flight_bytes: u64,

    /// On SIGINT/SIGTERM, how long to wait for connections to finish their
    /// in-flight requests before closing the store regardless (0: do not
    /// wait; at most one day).
    #[arg(long, env = "KV_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Worker threads of the async runtime that serves the connections, 1
    /// to 1024; the default is one per CPU. The store's commit thread, which
    /// applies and syncs every write, runs beside them: on a machine that
    /// serves mostly writes, one worker fewer than the CPUs can leave it a
    /// core (measured on 2 cores with the load generator on the same
    /// machine: durable puts within noise of each other, gets at 64
    /// connections x pipeline 16 about 40% faster with 2 workers than 1).
    #[arg(long, env = "KV_WORKER_THREADS", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=MAX_WORKER_THREADS as i64))]
    pub worker_threads: Option<u32>,

    /// Run as member NODE_ID of a replicated cluster (Raft). Without it the
    /// server is a single node. Needs --initial-cluster, which must list
    /// this id.
    #[arg(long, env = "KV_NODE_ID", value_name = "NODE_ID", help_heading = "Cluster",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub node_id: Option<u64>,

    /// Where this member listens for its peers (Raft messages). Default:
    /// its PEER_ADDR in --initial-cluster.
    #[arg(
        long,
        env = "KV_PEER_ADDR",
        value_name = "HOST:PORT",
        help_heading = "Cluster"
    )]
    pub peer_addr: Option<String>,

    /// Every member of the cluster, as ID=CLIENT_ADDR/PEER_ADDR separated
    /// by commas. Started with the same list, the members form the cluster
    /// with no further step; a restarted member rejoins from its data
    /// directory. Clients are told a leader's CLIENT_ADDR.
    #[arg(
        long,
        env = "KV_INITIAL_CLUSTER",
        value_name = "MEMBERS",
        help_heading = "Cluster"
    )]
    pub initial_cluster: Option<String>,

    /// Join a running cluster instead of forming one: this member is not in
    /// --initial-cluster (give the cluster's original list, which names
    /// it), and waits until `kv-client cluster add` on the leader adds it.
    #[arg(long, env = "KV_JOIN", help_heading = "Cluster")]
    pub join: bool,

    /// A file holding the secret peers share (read at start; never give the
    /// secret itself on the command line). Required unless every peer
    /// address is on loopback or peer links use TLS (--peer-tls-cert).
    #[arg(
        long,
        env = "KV_PEER_SECRET_FILE",
        value_name = "FILE",
        help_heading = "Cluster"
    )]
    pub peer_secret_file: Option<PathBuf>,

    /// Mutual TLS on peer links: this member's certificate chain (PEM). It
    /// is presented both to peers that connect and when connecting to
    /// them, so it must allow server and client authentication and name
    /// the host of this member's PEER_ADDR (DNS name or IP address). Needs
    /// --peer-tls-key and --peer-tls-ca. A peer whose certificate the CA
    /// did not sign is refused in the handshake (and logged).
    #[arg(long, env = "KV_PEER_TLS_CERT", value_name = "FILE", help_heading = "Cluster",
          requires_all = ["peer_tls_key", "peer_tls_ca"])]
    pub peer_tls_cert: Option<PathBuf>,

    /// The private key of --peer-tls-cert (PEM).
    #[arg(long, env = "KV_PEER_TLS_KEY", value_name = "FILE", help_heading = "Cluster",
          requires_all = ["peer_tls_cert", "peer_tls_ca"])]
    pub peer_tls_key: Option<PathBuf>,

    /// The cluster's CA (PEM): every peer's certificate must be signed by
    /// it, and this member's is checked against it by its peers.
    #[arg(long, env = "KV_PEER_TLS_CA", value_name = "FILE", help_heading = "Cluster",
          requires_all = ["peer_tls_cert", "peer_tls_key"])]
    pub peer_tls_ca: Option<PathBuf>,

    /// A follower that hears no leader for this long (randomised up to
    /// twice it) starts an election; a new leader serves writes once this
    /// and openraft's leader lease (as long again) have passed after the
    /// old one's death.
    #[arg(long, env = "KV_ELECTION_TIMEOUT_MS", default_value_t = 150, help_heading = "Cluster",
          value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub election_timeout_ms: u64,

    /// How often the leader sends heartbeats; under half of
    /// --election-timeout-ms. It is also how long a peer has to answer an
    /// append (openraft), so it must exceed the round trip between peers,
    /// a follower's fdatasync included.
    #[arg(long, env = "KV_HEARTBEAT_MS", default_value_t = 50, help_heading = "Cluster",
          value_parser = clap::value_parser!(u64).range(10..=20_000))]
    pub heartbeat_ms: u64,

    /// A cluster member builds a snapshot of its store, and purges its Raft
    /// log behind it (keeping the last 1000 entries for followers a little
    /// behind), once it has applied this many entries since its last one;
    /// at least 1. The cluster's counterpart of --checkpoint-after, which a
    /// member refuses; needs --node-id. Fewer entries keep less log on
    /// disk but write more snapshots (each one the whole store).
    #[arg(long, env = "KV_SNAPSHOT_EVERY", value_name = "ENTRIES", help_heading = "Cluster",
          default_value_t = DEFAULT_SNAPSHOT_EVERY, value_parser = parse_snapshot_every)]
    pub snapshot_every: u64,

    /// Format of the log on stderr: `text` for people, `json` (one JSON
    /// object a line: timestamp, level, target, message and fields) for a
    /// log collector. The level comes from RUST_LOG (default info).
    #[arg(long, env = "KV_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Which of the [`RECORDED`] flags were given explicitly: recorded by
    /// [`Args::parse_command_line`] and [`Args::try_parse_command_line_from`]
    /// (clap's own `parse` leaves it empty, as if none were).
    #[arg(skip)]
    explicit: Vec<Explicit>,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    Text,
    /// One JSON object a line.
    Json,
}

/// `--sync-policy` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SyncPolicyArg {
    /// fdatasync before every acknowledgement; concurrent writes share syncs.
    Always,
    /// As `always`, with a short wait to gather larger groups.
    Group,
    /// Background sync every --sync-interval-ms.
    Interval,
    /// No explicit sync.
    Never,
}

/// `--recovery-mode` values: wal-core's [`RecoveryMode`]s, by the same
/// names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecoveryModeArg {
    /// Cut nothing: refuse to start if anything would have to be cut.
    Absolute,
    /// Cut only a torn tail (what an interrupted write leaves).
    Strict,
    /// Also cut corruption, losing every record after it.
    Tolerant,
}

impl From<RecoveryModeArg> for RecoveryMode {
    fn from(arg: RecoveryModeArg) -> RecoveryMode {
        match arg {
            RecoveryModeArg::Absolute => RecoveryMode::Absolute,
            RecoveryModeArg::Strict => RecoveryMode::Strict,
            RecoveryModeArg::Tolerant => RecoveryMode::Tolerant,
        }
    }
}

/// Settings of the network layer, independent of the store.
///
/// The timeouts should be more than zero (zero closes connections at once);
/// a timeout too long for the clock to represent means no timeout. The
/// `kv-server` flags accept more than zero and at most [`MAX_DURATION`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Most connections served at once.
    pub max_connections: usize,
    /// Largest frame accepted, in bytes.
    pub max_frame: usize,
    /// Connections silent this long are closed.
    pub idle_timeout: Duration,
    /// A started frame must complete within this, and a batch of
    /// responses must be taken by the peer within this.
    pub frame_timeout: Duration,
    /// Most unanswered requests per connection.
    pub max_in_flight: usize,
    /// Most bytes of requests one connection may have read and not yet
    /// answered; past it the server reads that connection's next frame once
    /// earlier replies have resolved. A single frame larger than this is
    /// read when the connection holds nothing else.
    pub max_in_flight_bytes: usize,
    /// Most bytes of requests all connections together may have read and not
    /// yet answered; past it the server stops reading from the connections
    /// that hold the most. Raised to `max_frame` if smaller.
    pub max_total_in_flight_bytes: usize,
    /// Longest a graceful shutdown waits for connections to finish.
    pub shutdown_grace: Duration,
    /// The token every connection must present first; `None`: clients are
    /// not authenticated.
    pub auth_token: Option<AuthToken>,
    /// TLS on the client listener; `None`: plain TCP.
    pub tls: Option<ServerTls>,
    /// Where requests and connections are counted (see [`crate::metrics`]);
    /// `None`: not counted.
    pub metrics: Option<std::sync::Arc<crate::Metrics>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 1024,
            max_frame: 8 << 20,
            idle_timeout: Duration::from_secs(300),
            frame_timeout: Duration::from_secs(10),
            max_in_flight: 1024,
            max_in_flight_bytes: DEFAULT_MAX_IN_FLIGHT_BYTES,
            max_total_in_flight_bytes: DEFAULT_MAX_TOTAL_IN_FLIGHT_BYTES,
            shutdown_grace: Duration::from_secs(30),
            auth_token: None,
            tls: None,
            metrics: None,
        }
    }
}

impl Args {
    /// The flags of the process's command line and environment, as
    /// [`Parser::parse`] reads them (a usage error exits 2 with clap's
    /// message), also recording which flags were given explicitly, which
    /// [`Args::cluster_config`] checks. The binary parses its flags with
    /// this, not with `Parser::parse`.
    pub fn parse_command_line() -> Args {
        let matches = Args::command().get_matches();
        Args::from_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// As [`Args::parse_command_line`], from `argv` (its first item is the
    /// program's name), returning a usage error instead of exiting.
    ///
    /// # Errors
    /// clap's usage error.
    pub fn try_parse_command_line_from<I, T>(argv: I) -> Result<Args, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Args::command().try_get_matches_from(argv)?;
        Args::from_matches(&matches)
    }

    fn from_matches(matches: &ArgMatches) -> Result<Args, clap::Error> {
        let mut args =
            Args::from_arg_matches(matches).map_err(|e| e.format(&mut Args::command()))?;
        args.explicit = RECORDED
            .iter()
            .filter_map(|&id| match matches.value_source(id) {
                Some(ValueSource::CommandLine) => Some(Explicit {
                    id,
                    from_env: false,
                }),
                Some(ValueSource::EnvVariable) => Some(Explicit { id, from_env: true }),
                _ => None,
            })
            .collect();
        Ok(args)
    }

    fn given(&self, id: &str) -> Option<Explicit> {
        self.explicit.iter().copied().find(|e| e.id == id)
    }

    /// The sync policy the flags select.
    pub fn sync_policy(&self) -> SyncPolicy {
        match self.sync_policy {
            SyncPolicyArg::Always => SyncPolicy::Always,
            SyncPolicyArg::Group => SyncPolicy::GroupCommit {
                max_delay: Duration::from_micros(self.group_commit_delay_us),
            },
            SyncPolicyArg::Interval => SyncPolicy::Interval {
                period: Duration::from_millis(self.sync_interval_ms.max(1)),
            },
            SyncPolicyArg::Never => SyncPolicy::Never,
        }
    }

    /// The cluster configuration, if `--node-id` was given: the flags
    /// checked together (one line saying what is wrong, for a usage error).
    /// A cluster member refuses the single-node flags given explicitly
    /// (`--sync-policy`, `--checkpoint-after`, ...), and a single node
    /// `--snapshot-every`: as recorded by [`Args::parse_command_line`].
    pub fn cluster_config(&self) -> Result<Option<kv_cluster::ClusterConfig>, String> {
        let Some(node_id) = self.node_id else {
            if self.initial_cluster.is_some() || self.peer_addr.is_some() {
                return Err("--initial-cluster and --peer-addr need --node-id".to_string());
            }
            if let Some(given) = self.given("snapshot_every") {
                let name = if given.from_env {
                    "KV_SNAPSHOT_EVERY (--snapshot-every)"
                } else {
                    "--snapshot-every"
                };
                return Err(format!(
                    "{name} needs --node-id: it is a cluster member's setting (a single node \
                     checkpoints by --checkpoint-after)"
                ));
            }
            return Ok(None);
        };
        // `--sync-policy always` says what a member does: no obstacle.
        let says_what_a_member_does =
            |f: &SingleNodeOnly| f.id == "sync_policy" && self.sync_policy == SyncPolicyArg::Always;
        if let Some((flag, given)) = SINGLE_NODE_ONLY
            .iter()
            .filter(|f| !says_what_a_member_does(f))
            .find_map(|f| self.given(f.id).map(|given| (f, given)))
        {
            let name = if given.from_env {
                format!("{} ({})", flag.env, flag.flag)
            } else {
                flag.flag.to_string()
            };
            return Err(format!(
                "{name} is a single-node setting: {}; drop it to run as a cluster member",
                flag.instead
            ));
        }
        let spec = self
            .initial_cluster
            .as_deref()
            .ok_or("--node-id needs --initial-cluster")?;
        let members = kv_cluster::parse_initial_cluster(spec)
            .map_err(|e| format!("--initial-cluster: {e}"))?;
        match (self.join, members.contains_key(&node_id)) {
            (false, false) => {
                return Err(format!(
                    "--initial-cluster does not list --node-id {node_id} (give --join to \
                     join a running cluster)"
                ));
            }
            (true, true) => {
                return Err(format!(
                    "--join: --node-id {node_id} is already in --initial-cluster"
                ));
            }
            (true, false) if self.peer_addr.is_none() => {
                return Err("--join needs --peer-addr".to_string());
            }
            _ => {}
        }
        if self.heartbeat_ms * 2 >= self.election_timeout_ms {
            return Err(format!(
                "--heartbeat-ms {} must be under half of --election-timeout-ms {}",
                self.heartbeat_ms, self.election_timeout_ms
            ));
        }
        let mut config = kv_cluster::ClusterConfig::new(node_id, members, self.data_dir.clone());
        config.join = self.join;
        config.election_timeout = (
            Duration::from_millis(self.election_timeout_ms),
            Duration::from_millis(self.election_timeout_ms * 2),
        );
        config.heartbeat = Duration::from_millis(self.heartbeat_ms);
        config.snapshot_every = self.snapshot_every;
        config.expiry_sweep_rate = self.expiry_sweep_rate;
        // A peer frame carries up to 64 entries of the largest put.
        let largest_put = self.max_key_size as usize + self.max_value_size as usize + 256;
        config.max_frame = largest_put.saturating_mul(64).max(self.max_frame as usize);
        if let Some(path) = &self.peer_secret_file {
            let secret = std::fs::read(path)
                .map_err(|e| format!("cannot read --peer-secret-file {}: {e}", path.display()))?;
            let secret = secret.trim_ascii().to_vec();
            if secret.is_empty() {
                return Err(format!("--peer-secret-file {} is empty", path.display()));
            }
            config.secret = secret;
        } else if self.peer_tls_cert.is_none()
            && !config
                .members
                .values()
                .all(|m| is_loopback_addr(&m.peer_addr))
        {
            return Err(
                "peers beyond loopback need to authenticate each other: give --peer-tls-cert, \
                 --peer-tls-key and --peer-tls-ca (mutual TLS), or --peer-secret-file"
                    .to_string(),
            );
        }
        Ok(Some(config))
    }

    /// Where this member listens for peers.
    pub fn peer_listen_addr(&self, config: &kv_cluster::ClusterConfig) -> String {
        self.peer_addr.clone().unwrap_or_else(|| {
            config
                .members
                .get(&config.node_id)
                .map(|m| m.peer_addr.clone())
                .unwrap_or_default()
        })
    }

    /// Options for [`kv_store::KeyValueStore::open`].
    pub fn store_options(&self) -> StoreOptions {
        let defaults = StoreOptions::default();
        StoreOptions {
            wal: WalOptions {
                segment_size: self.segment_size,
                sync_policy: self.sync_policy(),
                recovery_mode: self.recovery_mode.into(),
                ..defaults.wal
            },
            max_key_size: usize_saturating(self.max_key_size),
            max_value_size: usize_saturating(self.max_value_size),
            checkpoint_after: (self.checkpoint_after > 0).then_some(self.checkpoint_after),
            checkpoint_write_rate: (self.checkpoint_rate > 0).then_some(self.checkpoint_rate),
            expiry_sweep_rate: self.expiry_sweep_rate,
        }
    }

    /// Settings for [`crate::run`].
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            max_connections: self.max_connections as usize,
            max_frame: usize_saturating(self.max_frame),
            idle_timeout: self.idle_timeout,
            frame_timeout: self.frame_timeout,
            max_in_flight: self.max_in_flight as usize,
            max_in_flight_bytes: usize_saturating(self.max_in_flight_bytes),
            max_total_in_flight_bytes: usize_saturating(self.max_total_in_flight_bytes),
            shutdown_grace: self.shutdown_grace,
            auth_token: None,
            tls: None,
            metrics: None,
        }
    }

    /// The auth token: from `--auth-token-file`, or else from the
    /// environment variable [`AUTH_TOKEN_ENV`]; `None` if neither is set.
    ///
    /// # Errors
    /// One line: both are set, the file cannot be read, or the token is
    /// empty.
    pub fn auth_token(&self) -> Result<Option<AuthToken>, String> {
        let from_env = std::env::var_os(AUTH_TOKEN_ENV);
        match (&self.auth_token_file, from_env) {
            (Some(_), Some(_)) => Err(format!(
                "both --auth-token-file and {AUTH_TOKEN_ENV} are set: give the token one way"
            )),
            (Some(path), None) => AuthToken::from_file(path)
                .map(Some)
                .map_err(|e| e.to_string()),
            (None, Some(token)) => AuthToken::new(token.as_encoded_bytes(), AUTH_TOKEN_ENV)
                .map(Some)
                .map_err(|e| e.to_string()),
            (None, None) => Ok(None),
        }
    }

    /// TLS for the client listener, from `--tls-cert` and `--tls-key`.
    ///
    /// # Errors
    /// One line naming the file at fault.
    pub fn server_tls(&self) -> Result<Option<ServerTls>, String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => ServerTls::from_pem_files(cert, key)
                .map(Some)
                .map_err(|e| format!("--tls-cert/--tls-key: {e}")),
            // clap requires both together.
            _ => Ok(None),
        }
    }

    /// Mutual TLS for peer links, from `--peer-tls-cert`, `--peer-tls-key`
    /// and `--peer-tls-ca`.
    ///
    /// # Errors
    /// One line naming the file at fault.
    pub fn peer_tls(&self) -> Result<Option<kv_cluster::PeerTls>, String> {
        match (&self.peer_tls_cert, &self.peer_tls_key, &self.peer_tls_ca) {
            (Some(cert), Some(key), Some(ca)) => kv_cluster::PeerTls::from_pem_files(cert, key, ca)
                .map(Some)
                .map_err(|e| format!("--peer-tls-*: {e}")),
            // clap requires all three together.
            _ => Ok(None),
        }
    }

    /// Worker threads for the async runtime: `--worker-threads`, or else
    /// [`default_worker_threads`].
    pub fn worker_threads(&self) -> usize {
        match self.worker_threads {
            Some(n) => n as usize,
            None => default_worker_threads(),
        }
    }

    /// Checks the limits that depend on each other; the error is the one
    /// line of a usage error.
    pub fn check_limits(&self) -> Result<(), String> {
        if self.max_total_in_flight_bytes < self.max_frame {
            return Err(format!(
                "--max-total-in-flight-bytes {} is less than --max-frame {}: a frame that \
                 large could never be read",
                self.max_total_in_flight_bytes, self.max_frame
            ));
        }
        Ok(())
    }

    /// Whether a request carrying a key and a value at their maximum sizes
    /// still fits in a frame. If not, such requests are refused as whole
    /// frames (and the connection closed) rather than with a per-request
    /// TOO_LARGE.
    pub fn frame_fits_largest_request(&self) -> bool {
        // Protobuf overhead of a put: id, two nested length prefixes, tags.
        const OVERHEAD: u64 = 64;
        self.max_key_size + self.max_value_size + OVERHEAD <= self.max_frame
    }
}

/// Protected mode: refuses to serve unauthenticated clients beyond
/// loopback unless `allow_unauthenticated`; clients are authenticated when
/// the server has an auth token (`authenticated`). Checks every address
/// `--addr` resolved to, since the server binds the first one it can. The
/// error is the one line the binary prints.
pub fn check_exposure(
    addr: &str,
    resolved: &[SocketAddr],
    authenticated: bool,
    allow_unauthenticated: bool,
) -> Result<(), String> {
    if authenticated || allow_unauthenticated {
        return Ok(());
    }
    match resolved
        .iter()
        .find(|a| !a.ip().to_canonical().is_loopback())
    {
        None => Ok(()),
        Some(open) => Err(format!(
            "refusing to listen on {addr} ({} is not a loopback address): clients are not \
             authenticated, so anyone who can reach it could read and write every key; give \
             an auth token (--auth-token-file or KV_AUTH_TOKEN), or pass \
             --allow-unauthenticated (or KV_ALLOW_UNAUTHENTICATED=true) if every client on \
             that network is trusted",
            open.ip()
        )),
    }
}

fn usize_saturating(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The default number of runtime workers: one per CPU.
pub fn default_worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Checks that `s` has the shape HOST:PORT (a name or an IP address, IPv6
/// in brackets, and a port number) without resolving it: resolving happens
/// at start-up, where a name that does not resolve is a start-up failure.
pub fn parse_host_port(s: &str) -> Result<String, String> {
    let usage =
        || format!("`{s}` is not HOST:PORT (examples: 127.0.0.1:7878, localhost:7878, [::1]:7878)");
    let (host, port) = s.rsplit_once(':').ok_or_else(usage)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(usage());
    }
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.contains(':') && !bracketed {
        return Err(format!(
            "`{s}`: an IPv6 address needs brackets, as in [::1]:7878"
        ));
    }
    Ok(s.to_owned())
}

/// Parses `--snapshot-every`: a count of entries, at least 1.
pub fn parse_snapshot_every(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err(format!(
            "`{s}`: must be at least 1 (a snapshot every ENTRIES applied entries)"
        )),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "`{s}` is not a number of entries (example: 100000)"
        )),
    }
}

/// Parses a size as [`parse_size`] does, more than zero.
pub fn parse_nonzero_size(s: &str) -> Result<u64, String> {
    match parse_size(s)? {
        0 => Err(format!("`{s}`: must be more than 0")),
        n => Ok(n),
    }
}

/// Parses a duration: a number with an optional unit `ms`, `s` or `m`
/// (seconds when there is none), at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (examples: 500ms, 10s, 5m)"))?;
    let duration = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" | "min" => n
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(|| too_long(s))?,
        other => return Err(format!("unknown duration unit `{other}` (use ms, s or m)")),
    };
    if duration > MAX_DURATION {
        return Err(too_long(s));
    }
    Ok(duration)
}

/// Parses a timeout: a duration as [`parse_duration`] reads it, more than
/// zero.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let duration = parse_duration(s)?;
    if duration.is_zero() {
        return Err(format!(
            "`{s}`: a timeout must be more than 0 (0 would close every connection at once)"
        ));
    }
    Ok(duration)
}

fn too_long(s: &str) -> String {
    format!("duration `{s}` is too long: at most one day (86400s, 1440m)")
}

/// Whether `addr` (HOST:PORT) names a loopback address, without a lookup:
/// `localhost`, or a literal loopback IP.
fn is_loopback_addr(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags as the binary parses them.
    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_command_line_from(std::iter::once("kv-server").chain(args.iter().copied()))
    }

    const SPEC: &str = "1=127.0.0.1:7001/127.0.0.1:7101,2=127.0.0.1:7002/127.0.0.1:7102";

    /// The cluster configuration of member 1 of [`SPEC`] with `extra`.
    fn member(extra: &[&str]) -> Result<Option<kv_cluster::ClusterConfig>, String> {
        let mut argv = vec!["--node-id", "1", "--initial-cluster", SPEC];
        argv.extend_from_slice(extra);
        parse(&argv).unwrap().cluster_config()
    }

    #[test]
    fn in_flight_byte_budgets_default_parse_and_must_fit_a_frame() {
        let args = parse(&[]).unwrap();
        let config = args.server_config();
        assert_eq!(config.max_in_flight_bytes, 64 << 20);
        assert_eq!(config.max_total_in_flight_bytes, 1 << 30);
        assert!(args.check_limits().is_ok());
        let args = parse(&[
            "--max-in-flight-bytes",
            "1MiB",
            "--max-total-in-flight-bytes",
            "16MiB",
        ])
        .unwrap();
        let config = args.server_config();
        assert_eq!(
            (config.max_in_flight_bytes, config.max_total_in_flight_bytes),
            (1 << 20, 16 << 20)
        );
        for flag in ["--max-in-flight-bytes", "--max-total-in-flight-bytes"] {
            assert!(parse(&[flag, "0"]).is_err(), "{flag} 0");
        }
        // The server's total must hold the largest frame, or such a frame
        // could never be read.
        let args = parse(&["--max-total-in-flight-bytes", "4MiB"]).unwrap();
        let err = args.check_limits().expect_err("below --max-frame");
        assert!(err.contains("--max-frame"), "{err}");
        let args = parse(&["--max-total-in-flight-bytes", "4MiB", "--max-frame", "4MiB"]).unwrap();
        assert!(args.check_limits().is_ok());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn durations_are_at_most_a_day() {
        assert_eq!(parse_duration("86400s"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("1440m"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("86400000ms"), Ok(MAX_DURATION));
        for long in [
            "86401",
            "1441m",
            "86400001ms",
            "18446744073709551615",
            "18446744073709551615s",
            "18446744073709551615m",
            "99999999999999999999",
        ] {
            let err = parse_duration(long).expect_err(long);
            assert!(
                err.contains("at most one day") || err.contains("not a duration"),
                "{long}: {err}"
            );
        }
        for flag in ["--idle-timeout", "--frame-timeout", "--shutdown-grace"] {
            let err = parse(&[flag, "18446744073709551615"]).expect_err(flag);
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
            assert!(err.to_string().contains("at most one day"), "{err}");
            assert!(parse(&[flag, "1440m"]).is_ok(), "{flag} 1440m");
        }
        assert!(parse(&["--group-commit-delay-us", "86400000000"]).is_ok());
        assert!(parse(&["--group-commit-delay-us", "86400000001"]).is_err());
        assert!(parse(&["--group-commit-delay-us", "18446744073709551615"]).is_err());
        assert!(parse(&["--sync-interval-ms", "86400000"]).is_ok());
        assert!(parse(&["--sync-interval-ms", "86400001"]).is_err());
    }

    #[test]
    fn zero_timeouts_are_usage_errors_but_zero_grace_is_not() {
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("0ms").is_err());
        assert_eq!(parse_timeout("1ms"), Ok(Duration::from_millis(1)));
        for flag in ["--idle-timeout", "--frame-timeout"] {
            let err = parse(&[flag, "0s"]).expect_err(flag);
            assert!(err.to_string().contains("more than 0"), "{err}");
        }
        let args = parse(&["--shutdown-grace", "0"]).unwrap();
        assert_eq!(args.server_config().shutdown_grace, Duration::ZERO);
    }

    #[test]
    fn addr_takes_host_names_and_ip_addresses() {
        for ok in [
            "127.0.0.1:7878",
            "localhost:7878",
            "db.example.com:0",
            "[::1]:7878",
            "0.0.0.0:65535",
        ] {
            assert_eq!(parse_host_port(ok).as_deref(), Ok(ok));
            assert_eq!(parse(&["--addr", ok]).unwrap().addr, ok);
        }
        for bad in [
            "localhost",
            ":7878",
            "localhost:",
            "localhost:http",
            "localhost:65536",
            "::1:7878",
            "",
        ] {
            assert!(parse_host_port(bad).is_err(), "{bad:?} accepted");
            assert!(parse(&["--addr", bad]).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn worker_threads_default_to_one_per_cpu() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let default = parse(&[]).unwrap().worker_threads();
        assert_eq!(default, default_worker_threads());
        assert_eq!(default, cpus);
        assert_eq!(
            parse(&["--worker-threads", "3"]).unwrap().worker_threads(),
            3
        );
        assert_eq!(
            parse(&["--worker-threads", "1024"])
                .unwrap()
                .worker_threads(),
            1024
        );
        for bad in ["0", "1025", "-1", "many"] {
            assert!(parse(&["--worker-threads", bad]).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn max_frame_takes_sizes() {
        let args = parse(&["--max-frame", "16MiB"]).unwrap();
        assert_eq!(args.server_config().max_frame, 16 << 20);
        assert!(parse(&["--max-frame", "16 furlongs"]).is_err());
    }

    #[test]
    fn flags_map_to_store_and_server_settings() {
        let args = Args::try_parse_from([
            "kv-server",
            "--sync-policy",
            "group",
            "--group-commit-delay-us",
            "50",
            "--segment-size",
            "1MiB",
            "--checkpoint-after",
            "0",
            "--checkpoint-rate",
            "0",
            "--max-connections",
            "3",
            "--idle-timeout",
            "2s",
        ])
        .unwrap();
        let store = args.store_options();
        assert_eq!(store.wal.segment_size, 1 << 20);
        assert_eq!(
            store.wal.sync_policy,
            SyncPolicy::GroupCommit {
                max_delay: Duration::from_micros(50)
            }
        );
        assert_eq!(store.checkpoint_after, None);
        assert_eq!(store.checkpoint_write_rate, None);
        let server = args.server_config();
        assert_eq!(server.max_connections, 3);
        assert_eq!(server.idle_timeout, Duration::from_secs(2));
        assert!(args.frame_fits_largest_request());
    }

    #[test]
    fn defaults_are_documented_values() {
        let args = Args::try_parse_from(["kv-server"]).unwrap();
        assert_eq!(args.addr, "127.0.0.1:7878");
        assert_eq!(
            args.server_config().max_frame,
            kv_proto::DEFAULT_MAX_FRAME_SIZE
        );
        assert_eq!(args.server_config().idle_timeout, Duration::from_secs(300));
        assert_eq!(args.server_config().frame_timeout, Duration::from_secs(10));
        assert_eq!(args.data_dir, PathBuf::from("./data"));
        assert_eq!(args.store_options().wal.sync_policy, SyncPolicy::Always);
        assert_eq!(args.store_options().checkpoint_after, Some(256 << 20));
        assert_eq!(args.store_options().checkpoint_write_rate, Some(32 << 20));
    }

    #[test]
    fn recovery_mode_defaults_to_strict_and_takes_wal_cores_names() {
        assert_eq!(
            parse(&[]).unwrap().store_options().wal.recovery_mode,
            RecoveryMode::Strict
        );
        for mode in [
            RecoveryMode::Absolute,
            RecoveryMode::Strict,
            RecoveryMode::Tolerant,
        ] {
            let args = parse(&["--recovery-mode", mode.name()]).unwrap();
            assert_eq!(args.store_options().wal.recovery_mode, mode);
        }
        assert!(parse(&["--recovery-mode", "lenient"]).is_err());
    }

    #[test]
    fn only_loopback_is_served_without_auth_unless_allowed() {
        let addrs = |list: &[&str]| -> Vec<SocketAddr> {
            list.iter().map(|a| a.parse().unwrap()).collect()
        };
        for local in [
            &["127.0.0.1:7878"][..],
            &["[::1]:7878", "127.0.0.1:7878"],
            &["127.9.9.9:0"],
            &["[::ffff:127.0.0.1]:1"],
        ] {
            assert_eq!(
                check_exposure("x", &addrs(local), false, false),
                Ok(()),
                "{local:?}"
            );
        }
        for open in [
            &["0.0.0.0:0"][..],
            &["[::]:7878"],
            &["10.0.0.5:7878"],
            &["127.0.0.1:1", "192.168.1.2:1"],
        ] {
            let err = check_exposure("h:1", &addrs(open), false, false).unwrap_err();
            assert!(err.contains("--allow-unauthenticated"), "{err}");
            assert!(err.contains("--auth-token-file"), "{err}");
            assert!(err.starts_with("refusing to listen on h:1"), "{err}");
            assert_eq!(check_exposure("h:1", &addrs(open), false, true), Ok(()));
            // An auth token satisfies protected mode.
            assert_eq!(check_exposure("h:1", &addrs(open), true, false), Ok(()));
        }
        assert!(!parse(&[]).unwrap().allow_unauthenticated);
        assert!(
            parse(&["--allow-unauthenticated"])
                .unwrap()
                .allow_unauthenticated
        );
    }

    #[test]
    fn zero_connections_is_a_usage_error() {
        assert!(Args::try_parse_from(["kv-server", "--max-connections", "0"]).is_err());
    }

    #[test]
    fn cluster_flags_are_checked_together() {
        let parse = |extra: &[&str]| parse(extra).unwrap().cluster_config();
        assert!(parse(&[]).unwrap().is_none());
        let spec = "1=127.0.0.1:7001/127.0.0.1:7101,2=127.0.0.1:7002/127.0.0.1:7102";
        let config = parse(&["--node-id", "2", "--initial-cluster", spec])
            .unwrap()
            .unwrap();
        assert_eq!(config.node_id, 2);
        assert_eq!(config.members.len(), 2);
        for (extra, says) in [
            (vec!["--node-id", "1"], "needs --initial-cluster"),
            (vec!["--initial-cluster", spec], "need --node-id"),
            (
                vec!["--node-id", "3", "--initial-cluster", spec],
                "does not list",
            ),
            (
                vec![
                    "--node-id",
                    "1",
                    "--initial-cluster",
                    "1=10.0.0.1:1/10.0.0.1:2",
                ],
                "--peer-secret-file",
            ),
            (
                vec![
                    "--node-id",
                    "1",
                    "--initial-cluster",
                    spec,
                    "--heartbeat-ms",
                    "200",
                ],
                "under half",
            ),
        ] {
            let e = parse(&extra).unwrap_err();
            assert!(e.contains(says), "{extra:?}: {e}");
        }
    }

    #[test]
    fn snapshot_every_reaches_the_cluster_config() {
        let config = member(&[]).unwrap().unwrap();
        assert_eq!(config.snapshot_every, DEFAULT_SNAPSHOT_EVERY);
        assert_eq!(DEFAULT_SNAPSHOT_EVERY, 100_000);
        // The documented default is kv-cluster's own.
        let own = kv_cluster::ClusterConfig::new(1, config.members.clone(), PathBuf::new());
        assert_eq!(own.snapshot_every, DEFAULT_SNAPSHOT_EVERY);
        for (given, expected) in [("500", 500), ("1", 1), ("18446744073709551615", u64::MAX)] {
            let config = member(&["--snapshot-every", given]).unwrap().unwrap();
            assert_eq!(config.snapshot_every, expected, "{given}");
        }
    }

    #[test]
    fn snapshot_every_must_be_at_least_one() {
        let err = parse(&[
            "--node-id",
            "1",
            "--initial-cluster",
            SPEC,
            "--snapshot-every",
            "0",
        ])
        .expect_err("0 accepted");
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(err.to_string().contains("must be at least 1"), "{err}");
        for bad in ["-1", "many", "1e5", ""] {
            // `=`: clap would take a bare "-1" for a flag.
            let err = parse(&[&format!("--snapshot-every={bad}")]).expect_err(bad);
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn snapshot_every_needs_the_cluster_flags() {
        let err = parse(&["--snapshot-every", "500"])
            .unwrap()
            .cluster_config()
            .expect_err("a single node took --snapshot-every");
        assert_eq!(
            err,
            "--snapshot-every needs --node-id: it is a cluster member's setting (a single \
             node checkpoints by --checkpoint-after)"
        );
        // Even at its default value: given is given.
        assert!(
            parse(&["--snapshot-every", "100000"])
                .unwrap()
                .cluster_config()
                .is_err()
        );
        // Not given: a single node.
        assert!(parse(&[]).unwrap().cluster_config().unwrap().is_none());
    }

    #[test]
    fn single_node_flags_are_refused_in_a_cluster_when_given() {
        const SYNCS: &str =
            "a cluster member's Raft log always fdatasyncs before a write is acknowledged";
        const SNAPSHOTS: &str = "a cluster member snapshots every --snapshot-every entries";
        for (flag, value, instead) in [
            ("--sync-policy", "group", SYNCS),
            ("--sync-policy", "never", SYNCS),
            ("--group-commit-delay-us", "50", SYNCS),
            ("--sync-interval-ms", "10", SYNCS),
            ("--checkpoint-after", "0", SNAPSHOTS),
            ("--checkpoint-after", "256MiB", SNAPSHOTS),
        ] {
            let err = member(&[flag, value]).expect_err(flag);
            assert_eq!(
                err,
                format!(
                    "{flag} is a single-node setting: {instead}; drop it to run as a cluster \
                     member"
                ),
                "{flag} {value}"
            );
            // A single node takes them.
            assert!(
                parse(&[flag, value])
                    .unwrap()
                    .cluster_config()
                    .unwrap()
                    .is_none()
            );
        }
        // With several, the first in --help order is named.
        let err = member(&["--checkpoint-after", "0", "--sync-policy", "interval"]).unwrap_err();
        assert!(err.starts_with("--sync-policy "), "{err}");
        // `--sync-policy always` is what a member does: taken, and the
        // next one given is named.
        let err = member(&["--checkpoint-after", "0", "--sync-policy", "always"]).unwrap_err();
        assert!(err.starts_with("--checkpoint-after "), "{err}");
        assert!(member(&["--sync-policy", "always"]).unwrap().is_some());
        // Not given, their defaults are no obstacle, beside the cluster's own flags.
        let config = member(&["--snapshot-every", "10", "--heartbeat-ms", "40"])
            .unwrap()
            .unwrap();
        assert_eq!((config.node_id, config.snapshot_every), (1, 10));
        let args = parse(&["--node-id", "1", "--initial-cluster", SPEC]).unwrap();
        assert!(args.cluster_config().unwrap().is_some());
        assert_eq!(args.store_options().wal.sync_policy, SyncPolicy::Always);
    }

    #[test]
    fn secrets_and_keys_are_never_flags() {
        for flag in ["--auth-token", "--token", "--peer-secret"] {
            let err = parse(&[flag, "s3cret"]).expect_err(flag);
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::UnknownArgument,
                "{flag}"
            );
        }
        // TLS files come in sets.
        assert!(parse(&["--tls-cert", "c.pem"]).is_err());
        assert!(parse(&["--tls-key", "k.pem"]).is_err());
        assert!(parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).is_ok());
        assert!(parse(&["--peer-tls-cert", "c.pem", "--peer-tls-key", "k.pem"]).is_err());
        let all = [
            "--peer-tls-cert",
            "c",
            "--peer-tls-key",
            "k",
            "--peer-tls-ca",
            "a",
        ];
        assert!(parse(&all).is_ok());
    }

    #[test]
    fn peer_tls_stands_in_for_the_secret_beyond_loopback() {
        let args = Args::try_parse_from([
            "kv-server",
            "--node-id",
            "1",
            "--initial-cluster",
            "1=10.0.0.1:1/10.0.0.1:2",
            "--peer-tls-cert",
            "c",
            "--peer-tls-key",
            "k",
            "--peer-tls-ca",
            "a",
        ])
        .unwrap();
        assert!(args.cluster_config().unwrap().is_some());
    }

    #[test]
    fn loopback_addresses_are_told_apart() {
        assert!(is_loopback_addr("127.0.0.1:1"));
        assert!(is_loopback_addr("[::1]:1"));
        assert!(is_loopback_addr("localhost:1"));
        assert!(!is_loopback_addr("10.0.0.1:1"));
        assert!(!is_loopback_addr("example.com:1"));
    }
}
