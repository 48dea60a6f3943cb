//! Command-line flags (each also an environment variable) and the settings
//! they turn into: [`StoreOptions`] for opening the store and
//! [`ServerConfig`] for [`crate::run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use kv_store::{StoreOptions, SyncPolicy, WalOptions};

/// Exit status of a clean shutdown.
pub const EXIT_OK: u8 = 0;
/// Exit status when start-up or serving failed (bad address, port in use,
/// data directory locked or unreadable, recovery refused the log).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for a command-line usage error (clap's own convention).
pub const EXIT_USAGE: u8 = 2;

const AFTER_HELP: &str = "\
Exit status: 0 after a clean shutdown (SIGINT/SIGTERM), 1 when start-up or \
serving fails (one line on stderr says why: address in use, data directory \
locked by another server, unreadable or corrupt data), 2 for a usage error.

Shutdown: on SIGINT or SIGTERM the server stops accepting, answers every \
request it has already read, makes every acknowledged write durable, and \
exits 0.

Log failure (fail-stop): if the write-ahead log cannot sync, the write that \
hit the failure gets INTERNAL and every later write gets UNAVAILABLE; no \
write is ever acknowledged that the disk may not hold. The server keeps \
running and keeps answering reads (which only ever see durable writes) so \
that clients get a clear answer; it logs the failure once at ERROR. Restart \
it to recover: recovery re-reads what is really on disk.

Sizes accept a suffix: 4096, 64KiB, 64MiB, 1GiB (also K, M, G, KB, MB, GB, \
all powers of 1024). Durations accept ms, s, m: 500ms, 10s, 5m (a bare \
number is seconds).";

/// Flags of the `kv-server` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kv-server",
    version,
    about = "Durable key-value store server: a TCP service over a write-ahead log",
    after_help = AFTER_HELP
)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port (the log line
    /// `listening on ...` gives the real one).
    #[arg(long, env = "KV_ADDR", default_value = "127.0.0.1:7878")]
    pub addr: SocketAddr,

    /// Directory of the write-ahead log and snapshots; created if missing.
    /// Only one server may use it at a time.
    #[arg(long, env = "KV_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// When a write is acknowledged relative to durability: `always`
    /// (fdatasync before the reply; concurrent writes share syncs), `group`
    /// (as always, but a sync leader waits up to --group-commit-delay-us to
    /// gather more writes), `interval` (synced every --sync-interval-ms; a
    /// crash may lose that much), `never` (left to the OS; a crash may lose
    /// anything not yet written back).
    #[arg(long, env = "KV_SYNC_POLICY", value_enum, default_value_t = SyncPolicyArg::Always)]
    pub sync_policy: SyncPolicyArg,

    /// With --sync-policy group: longest a sync leader waits for company, in
    /// microseconds.
    #[arg(long, env = "KV_GROUP_COMMIT_DELAY_US", default_value_t = 200)]
    pub group_commit_delay_us: u64,

    /// With --sync-policy interval: time between background syncs, in
    /// milliseconds.
    #[arg(long, env = "KV_SYNC_INTERVAL_MS", default_value_t = 10)]
    pub sync_interval_ms: u64,

    /// Size at which a write-ahead log segment is closed and a new one
    /// started.
    #[arg(long, env = "KV_SEGMENT_SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub segment_size: u64,

    /// Take a checkpoint (snapshot, then drop the log it covers)
    /// automatically once the log exceeds this many bytes; 0 turns automatic
    /// checkpoints off.
    #[arg(long, env = "KV_CHECKPOINT_AFTER", default_value = "256MiB", value_parser = parse_size)]
    pub checkpoint_after: u64,

    /// Most bytes per second a checkpoint writes its snapshot at, so that it
    /// does not take the disk and a core away from writers; 0 writes
    /// unpaced.
    #[arg(long, env = "KV_CHECKPOINT_RATE", default_value = "32MiB", value_parser = parse_size)]
    pub checkpoint_rate: u64,

    /// Most connections served at once. Further clients wait in the kernel's
    /// accept queue until one closes.
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

    /// Close a connection that has sent nothing for this long.
    #[arg(long, env = "KV_IDLE_TIMEOUT", default_value = "300s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Close a connection whose started frame has not fully arrived within
    /// this long, or that does not take a batch of responses within this
    /// long (defends against slow, half-open and non-reading clients).
    #[arg(long, env = "KV_FRAME_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub frame_timeout: Duration,

    /// Most requests per connection read but not yet answered; past this the
    /// server stops reading that connection until replies drain.
    #[arg(long, env = "KV_MAX_IN_FLIGHT", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,

    /// On SIGINT/SIGTERM, how long to wait for connections to finish their
    /// in-flight requests before closing the store regardless.
    #[arg(long, env = "KV_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
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

/// Settings of the network layer, independent of the store.
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
    /// Longest a graceful shutdown waits for connections to finish.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 1024,
            max_frame: 8 << 20,
            idle_timeout: Duration::from_secs(300),
            frame_timeout: Duration::from_secs(10),
            max_in_flight: 1024,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl Args {
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

    /// Options for [`kv_store::KeyValueStore::open`].
    pub fn store_options(&self) -> StoreOptions {
        let defaults = StoreOptions::default();
        StoreOptions {
            wal: WalOptions {
                segment_size: self.segment_size,
                sync_policy: self.sync_policy(),
                ..defaults.wal
            },
            max_key_size: usize_saturating(self.max_key_size),
            max_value_size: usize_saturating(self.max_value_size),
            checkpoint_after: (self.checkpoint_after > 0).then_some(self.checkpoint_after),
            checkpoint_write_rate: (self.checkpoint_rate > 0).then_some(self.checkpoint_rate),
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
            shutdown_grace: self.shutdown_grace,
        }
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

fn usize_saturating(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Parses a byte size: a number with an optional binary suffix
/// (`K`, `KB`, `KiB`, `M`, ..., `G`..., case-insensitive).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 4096, 64KiB, 64MiB)"))?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => {
            return Err(format!(
                "unknown size suffix `{other}` (use KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size `{s}` is too large"))
}

/// Parses a duration: a number with an optional unit `ms`, `s` or `m`
/// (seconds when there is none).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (examples: 500ms, 10s, 5m)"))?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" | "min" => n
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("duration `{s}` is too large")),
        other => Err(format!("unknown duration unit `{other}` (use ms, s or m)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("64mib"), Ok(64 << 20));
        assert_eq!(parse_size("2 GB"), Ok(2 << 30));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert!(parse_size("").is_err());
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("ms").is_err());
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
        assert_eq!(args.addr.to_string(), "127.0.0.1:7878");
        assert_eq!(args.data_dir, PathBuf::from("./data"));
        assert_eq!(args.store_options().wal.sync_policy, SyncPolicy::Always);
        assert_eq!(args.store_options().checkpoint_after, Some(256 << 20));
        assert_eq!(args.store_options().checkpoint_write_rate, Some(32 << 20));
    }

    #[test]
    fn zero_connections_is_a_usage_error() {
        assert!(Args::try_parse_from(["kv-server", "--max-connections", "0"]).is_err());
    }
}
