//! `kv-client`: the command line of the key-value store.
//!
//! One-shot commands (`put`, `get`, ...) exit 0 on success, 1 when the key
//! is missing (get, delete, ttl, expire, persist) or a condition failed,
//! 3 when a write's outcome is unknown (the server
//! said so, or the connection failed after the write was sent), 2 on any
//! other failure, with one line on stderr. Without a command, an
//! interactive prompt (`cli::repl`).
//!
//! `--addr` takes one address or several (a cluster's members); either way
//! calls go through a [`ClusterClient`], which follows NOT_LEADER answers
//! to the leader and never sends a write twice.

use std::ffi::OsString;
use std::io::{self, IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use kv_client::kv_proto;
use kv_client::{
    AuthToken, ClientOptions, ClientTls, ClusterClient, ClusterOptions, Condition, PutOptions,
    ScanOptions, Ttl, Write,
};
use kv_proto::{
    ClusterAddRequest, ClusterMember, ClusterRemoveRequest, ClusterStatusRequest,
    ClusterStatusResponse, request, response,
};

mod bench;
mod cli {
    pub mod output;
    pub mod repl;
}

use cli::output::{self, Failure, Format, Json};

/// Command-line client for kv-server, a durable key-value store.
#[derive(Debug, Parser)]
#[command(
    name = "kv-client",
    version,
    long_about = "Command-line client for kv-server, a durable key-value store.\n\n\
        With a command, runs it and exits: 0 on success, 1 when the key does not \
        exist (get, delete, ttl, expire, persist) or a condition failed (the key's \
        current version on stderr), 3 when a write's outcome is unknown (it may or may \
        not have taken effect: the server answered OUTCOME_UNKNOWN, or the \
        connection failed after the write was sent; such a write is never sent \
        again), 2 on any other failure, with one line on stderr.\n\
        With several --addr addresses (a cluster's members), each command goes \
        to the leader: a member that is not the leader names it and the command \
        is sent there, an address that refuses the connection is skipped, and \
        while the cluster elects a leader the command is retried for up to 2 \
        seconds.\n\
        Without a command, starts an interactive prompt (type `help` there); when \
        stdin is not a terminal, reads the same commands line by line.",
    after_help = "Examples:\n  \
        kv-client put greeting hello\n  \
        kv-client get greeting\n  \
        kv-client put photo - < photo.jpg\n  \
        kv-client keys --prefix user: --limit 10\n  \
        kv-client put lock:job me --if-absent --ttl 30s\n  \
        kv-client -o json scan --prefix user: --values\n  \
        KV_ADDR=10.0.0.5:7878 kv-client checkpoint\n  \
        KV_AUTH_TOKEN=$(cat token) kv-client --tls-ca ca.pem --addr db.example:7878 get greeting\n  \
        kv-client --addr 10.0.0.1:7001,10.0.0.2:7001,10.0.0.3:7001 put greeting hello"
)]
struct Cli {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Output format: `text`, or `json` for scripts: one JSON object a
    /// line per result (scan and mget: one per key). Keys and values that
    /// are valid UTF-8 are strings in the fields `key` and `value`; others
    /// are base64 (standard, padded) in `key_base64` and `value_base64`
    /// instead. Errors still go to stderr as one line, with the same exit
    /// codes.
    #[arg(
        short = 'o',
        long,
        value_enum,
        default_value_t = Format::Text,
        global = true,
        help_heading = "Output"
    )]
    output: Format,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Where and how to connect; shared by every command.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection")]
struct ConnectionArgs {
    /// Address of the kv-server; for a cluster, members' addresses
    /// separated by commas (the leader is found and followed).
    #[arg(
        long,
        env = "KV_ADDR",
        default_value = "127.0.0.1:7878",
        value_name = "HOST:PORT[,HOST:PORT...]",
        value_parser = parse_addrs,
        global = true
    )]
    addr: String,
    /// Give up on a request after this many seconds, at most 86400 (one
    /// day); 0: wait as long as the connection lives.
    #[arg(
        long,
        env = "KV_TIMEOUT",
        default_value_t = 30,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(0..=MAX_TIMEOUT_SECS),
        global = true
    )]
    timeout: u64,
    /// Largest frame sent or accepted: bytes, or with a suffix as the
    /// server takes it (64KiB, 8MiB, 1GiB; K, M, G, KB, MB, GB too, all
    /// powers of 1024). Should match the server's --max-frame.
    #[arg(
        long,
        env = "KV_MAX_FRAME",
        default_value = "8MiB",
        value_name = "SIZE",
        value_parser = parse_frame_size,
        global = true
    )]
    max_frame: usize,
    /// Connect over TLS, trusting the system's CA certificates (or only
    /// --tls-ca's). The server's certificate must name the host given in
    /// --addr.
    #[arg(long, env = "KV_TLS", global = true,
          value_parser = clap::builder::BoolishValueParser::new())]
    tls: bool,
    /// Connect over TLS, trusting only the CA certificates in this PEM
    /// file (implies --tls).
    #[arg(long, env = "KV_TLS_CA", value_name = "FILE", global = true)]
    tls_ca: Option<PathBuf>,
    /// A file holding the server's auth token (one trailing newline is
    /// dropped); every connection authenticates with it first. The token
    /// may instead be in the environment variable KV_AUTH_TOKEN; it is
    /// never taken from the command line, where other users could read it.
    #[arg(long, env = "KV_AUTH_TOKEN_FILE", value_name = "FILE", global = true)]
    auth_token_file: Option<PathBuf>,
    /// TLS and token, loaded from the flags above by `load_security`.
    #[arg(skip)]
    security: Security,
}

/// What `--tls`, `--tls-ca` and the auth token turn into, loaded once.
#[derive(Debug, Clone, Default)]
struct Security {
    tls: Option<ClientTls>,
    auth_token: Option<AuthToken>,
}

/// Longest `--timeout`, in seconds: one day, as the server's longest
/// timeout.
const MAX_TIMEOUT_SECS: u64 = 24 * 60 * 60;

/// Checks `--addr`: one or more HOST:PORT separated by commas, none empty.
/// Keeps the text (without spaces around the commas), which is also how
/// messages name the servers.
fn parse_addrs(s: &str) -> Result<String, String> {
    let addrs: Vec<&str> = s.split(',').map(str::trim).collect();
    if let Some(bad) = addrs.iter().find(|a| a.is_empty() || !a.contains(':')) {
        return Err(if bad.is_empty() {
            format!("`{s}` has an empty address; give HOST:PORT[,HOST:PORT...]")
        } else {
            format!("`{bad}` is not HOST:PORT")
        });
    }
    Ok(addrs.join(","))
}

/// Parses `--max-frame` with the server's size syntax ([`kv_proto::parse_size`]).
fn parse_frame_size(s: &str) -> Result<usize, String> {
    let size = kv_proto::parse_size(s)?;
    usize::try_from(size).map_err(|_| format!("size `{s}` is too large for this machine"))
}

impl ConnectionArgs {
    /// Reads the CA file and the auth token the flags name.
    fn load_security(&mut self) -> Result<(), kv_client::SetupError> {
        let tls = match (&self.tls_ca, self.tls) {
            (Some(ca), _) => Some(ClientTls::with_ca_file(ca)?),
            (None, true) => Some(ClientTls::with_system_roots()?),
            (None, false) => None,
        };
        let auth_token = AuthToken::from_file_or_env(self.auth_token_file.as_deref())?;
        self.security = Security { tls, auth_token };
        Ok(())
    }

    fn options(&self) -> ClientOptions {
        ClientOptions {
            max_frame_size: self.max_frame,
            request_timeout: (self.timeout > 0).then(|| Duration::from_secs(self.timeout)),
            tls: self.security.tls.clone(),
            auth_token: self.security.auth_token.clone(),
            ..ClientOptions::default()
        }
    }

    /// The addresses `--addr` lists.
    fn addrs(&self) -> Vec<&str> {
        self.addr.split(',').collect()
    }

    /// A client of the servers `--addr` lists; it connects on its first
    /// call.
    fn client(&self) -> Result<ClusterClient, kv_client::ClientError> {
        let options = ClusterOptions {
            client: self.options(),
            ..ClusterOptions::default()
        };
        ClusterClient::new(self.addrs(), options)
    }
}

/// The commands. Each variant is run by `run_command`.
#[derive(Debug, Subcommand)]
enum Command {
    /// Set KEY to VALUE, durably; prints OK. With a condition, writes only
    /// if it holds (else exit 1, the key's current version on stderr).
    #[command(after_help = "Examples:\n  \
        kv-client put greeting hello\n  \
        kv-client put session:42 data --ttl 30m\n  \
        kv-client put lock:job me --if-absent\n  \
        kv-client put config v2 --if-seq 17\n  \
        kv-client put state done --if-value running")]
    Put {
        /// The key (any bytes but empty).
        key: OsString,
        /// The value; `-` reads it from stdin, byte for byte. (Values like
        /// `-3` are taken as values; use `--` before a key starting with `-`.)
        #[arg(allow_hyphen_values = true)]
        value: OsString,
        /// Expire the key after this long: 500ms, 10s, 5m, 1h, 2d, or a
        /// number of seconds. Without it, a deadline the key had is cleared.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        ttl: Option<Duration>,
        #[command(flatten)]
        condition: PutCondition,
    },
    /// Print the value of KEY (raw bytes unless stdout is a terminal).
    #[command(after_help = "Examples:\n  \
        kv-client get greeting\n  \
        kv-client get greeting --seq\n  \
        kv-client -o json get greeting")]
    Get {
        /// The key.
        key: OsString,
        /// Also print the key's version (the seq of its last write) on a
        /// line of its own before the value: the N of `put --if-seq N`.
        #[arg(long)]
        seq: bool,
    },
    /// Remove KEY, durably; prints OK. Exit 1 if it does not exist.
    #[command(
        visible_alias = "del",
        after_help = "Examples:\n  kv-client delete greeting\n  kv-client delete config --if-seq 17"
    )]
    Delete {
        /// The key.
        key: OsString,
        /// Delete only if the key's version is SEQ (see `get --seq`).
        #[arg(long, value_name = "SEQ")]
        if_seq: Option<u64>,
    },
    /// Set several keys at once, atomically (all or none, at one version);
    /// prints OK.
    #[command(after_help = "Example:\n  kv-client mput user:1 alice user:2 bob")]
    Mput {
        /// KEY VALUE pairs (an even number of arguments).
        #[arg(required = true, value_name = "KEY VALUE", allow_hyphen_values = true)]
        pairs: Vec<OsString>,
    },
    /// Remove several keys at once, atomically; prints OK (missing keys
    /// are no error).
    #[command(after_help = "Example:\n  kv-client mdelete user:1 user:2")]
    Mdelete {
        /// The keys.
        #[arg(required = true)]
        keys: Vec<OsString>,
    },
    /// Print the values of several keys, read at once: one line each, in
    /// order, `(nil)` for a missing key (exit 0 still).
    #[command(
        after_help = "Examples:\n  kv-client mget user:1 user:2\n  kv-client -o json mget user:1 user:2"
    )]
    Mget {
        /// The keys.
        #[arg(required = true)]
        keys: Vec<OsString>,
    },
    /// Add DELTA (default 1, may be negative) to the decimal integer in
    /// KEY (a missing key counts as 0); prints the new value.
    #[command(after_help = "Examples:\n  kv-client incr visits\n  kv-client incr stock:42 -3")]
    Incr {
        /// The key.
        key: OsString,
        /// The signed amount to add.
        #[arg(allow_hyphen_values = true, default_value_t = 1)]
        delta: i64,
    },
    /// Make KEY expire after DURATION; prints OK. Exit 1 if it does not
    /// exist.
    #[command(
        after_help = "Examples:\n  kv-client expire session:42 10s\n  kv-client expire cache:home 1h"
    )]
    Expire {
        /// The key.
        key: OsString,
        /// 500ms, 10s, 5m, 1h, 2d, or a number of seconds.
        #[arg(value_name = "DURATION", value_parser = parse_duration)]
        ttl: Duration,
    },
    /// Clear KEY's deadline: it lives until deleted; prints OK. Exit 1 if
    /// it does not exist.
    #[command(after_help = "Example:\n  kv-client persist session:42")]
    Persist {
        /// The key.
        key: OsString,
    },
    /// Print KEY's remaining time to live in milliseconds (`1500ms`), or
    /// `no expiry`. Exit 1 if it does not exist.
    #[command(after_help = "Example:\n  kv-client ttl session:42")]
    Ttl {
        /// The key.
        key: OsString,
    },
    /// List keys (and values) in byte order, one a line, all of them: the
    /// answer comes in pages, fetched one after another until the range or
    /// --limit ends. With --values, each line is KEY, a tab, VALUE.
    #[command(after_help = "Examples:\n  \
        kv-client scan --prefix user:\n  \
        kv-client scan --start a --end m --limit 100 --values\n  \
        kv-client scan --reverse --limit 10\n  \
        kv-client -o json scan --prefix user: --values")]
    Scan {
        /// Only keys starting with this.
        #[arg(long, short, conflicts_with_all = ["start", "end"])]
        prefix: Option<OsString>,
        /// From this key (inclusive).
        #[arg(long)]
        start: Option<OsString>,
        /// Up to this key (exclusive).
        #[arg(long)]
        end: Option<OsString>,
        /// Print at most this many keys in all (default: every key).
        #[arg(long, short = 'n', value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Also print each key's value.
        #[arg(long)]
        values: bool,
        /// Descending order.
        #[arg(long)]
        reverse: bool,
    },
    /// Print the store's counters and sizes, one `name value` a line.
    #[command(after_help = "Examples:\n  kv-client stats\n  kv-client -o json stats")]
    Stats,
    /// List keys in ascending byte order, one a line.
    Keys {
        /// Only keys starting with this.
        #[arg(long, short, default_value = "")]
        prefix: OsString,
        /// At most this many keys (0: no limit).
        #[arg(long, short = 'n', default_value_t = 0)]
        limit: u32,
    },
    /// Write a snapshot and drop the log it covers; prints the sequence
    /// number the snapshot covers.
    Checkpoint,
    /// Copy a consistent backup of the server's state into FILE: the server
    /// takes a checkpoint and sends the snapshot it wrote. Writes go on
    /// meanwhile; the backup holds every write acknowledged before it
    /// began. FILE appears only once the copy is whole and synced;
    /// `kv-admin restore FILE DIR` makes a data directory of it. Prints the
    /// LSN it covers and its size.
    ///
    /// Example: kv-client backup nightly.snap
    Backup {
        /// The file to write (replaced if it exists).
        file: std::path::PathBuf,
    },
    /// Cluster membership: `status`, `add ID CLIENT_ADDR/PEER_ADDR`,
    /// `remove ID` (on a cluster member; --addr may list several).
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Load generator: many connections, pipelined puts and gets; prints
    /// ops/s and latency percentiles (`--json` for one JSON line). Exits 2
    /// if any request failed.
    Bench(bench::BenchArgs),
}

/// `put`'s condition: at most one.
#[derive(Debug, Clone, Default, Args)]
#[group(multiple = false)]
struct PutCondition {
    /// Write only if the key does not exist (create).
    #[arg(long)]
    if_absent: bool,
    /// Write only if the key exists (update).
    #[arg(long)]
    if_present: bool,
    /// Write only if the key's version is SEQ (see `get --seq`).
    #[arg(long, value_name = "SEQ")]
    if_seq: Option<u64>,
    /// Write only if the key's value is this (compare-and-swap).
    #[arg(long, value_name = "VALUE", allow_hyphen_values = true)]
    if_value: Option<OsString>,
}

impl PutCondition {
    fn condition(self) -> Option<Condition> {
        if self.if_absent {
            Some(Condition::Absent)
        } else if self.if_present {
            Some(Condition::Present)
        } else if let Some(seq) = self.if_seq {
            Some(Condition::SeqEquals(seq))
        } else {
            self.if_value
                .map(|value| Condition::ValueEquals(os_bytes(value)))
        }
    }
}

/// Parses a duration: a number with `ms`, `s`, `m`, `h` or `d`, or a plain
/// number of seconds. Zero is refused: a time to live of nothing is a
/// mistake, not a request.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "`{s}` is not a duration; give a number with ms, s, m, h or d (500ms, 10s, 5m, 1h, 2d), or a number of seconds"
        )
    };
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let ms = number
        .checked_mul(unit_ms)
        .ok_or_else(|| format!("duration `{s}` is too long"))?;
    if ms == 0 {
        return Err(format!("duration `{s}` is zero; give a positive duration"));
    }
    Ok(Duration::from_millis(ms))
}

/// `kv-client cluster ...`.
#[derive(Debug, Subcommand)]
enum ClusterAction {
    /// Print every member's id, addresses, role, term, last log index and
    /// applied index (each as that member sees itself), and the leader.
    Status,
    /// Add member ID (started with `kv-server --join`): a learner first, a
    /// voter once it has caught up. Prints the new membership.
    Add {
        /// Its node id.
        id: u64,
        /// Its addresses, CLIENT_ADDR/PEER_ADDR.
        addrs: String,
    },
    /// Remove member ID. Prints the new membership.
    Remove {
        /// Its node id.
        id: u64,
    },
}

fn main() -> ExitCode {
    // A bug must still end in one line on stderr, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("kv-client: internal error: {info}");
        std::process::exit(2);
    }));
    let mut cli = Cli::parse();
    if let Err(e) = cli.connection.load_security() {
        return Failure::Error(e.to_string()).report();
    }
    let secured =
        cli.connection.security.tls.is_some() || cli.connection.security.auth_token.is_some();
    match cli.command {
        Some(Command::Bench(_)) if secured => Failure::Error(
            "bench speaks plain TCP without authentication: run it against a server without \
             --tls-cert and an auth token"
                .into(),
        )
        .report(),
        // The bench runs many connections on a multi-threaded runtime of its
        // own, not on the one-shot commands' single-threaded one.
        Some(Command::Bench(_)) if cli.connection.addrs().len() > 1 => Failure::Error(
            "bench drives one server: give --addr a single HOST:PORT (the leader's)".into(),
        )
        .report(),
        Some(Command::Bench(args)) => match bench::main(&cli.connection.addr, &args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => Failure::Error(format!("bench: {err:#}")).report(),
        },
        Some(command) => one_shot(&cli.connection, cli.output, command),
        None => cli::repl::run(&cli.connection),
    }
}

/// Runs one command and turns its outcome into the exit code.
fn one_shot(connection: &ConnectionArgs, format: Format, command: Command) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Error(format!("cannot start the runtime: {e}")))
        .and_then(|runtime| runtime.block_on(run_command(connection, format, command)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

async fn run_command(
    connection: &ConnectionArgs,
    format: Format,
    command: Command,
) -> Result<(), Failure> {
    let addr = connection.addr.as_str();
    // The value is read before connecting: a slow stdin must not hold an
    // idle connection open (the server closes idle connections).
    let put_value = match &command {
        Command::Put { value, .. } => read_value(value)?,
        _ => Bytes::new(),
    };
    // A usage error, found before anything is sent.
    if let Command::Mput { pairs } = &command
        && pairs.len() % 2 != 0
    {
        return Err(Failure::Error(format!(
            "mput takes KEY VALUE pairs: got {} arguments, an odd number",
            pairs.len()
        )));
    }
    let client = connection
        .client()
        .map_err(|e| output::client_failure(addr, &e))?;
    let fail = |e| output::client_failure(addr, &e);
    let terminal = io::stdout().is_terminal();
    let json = format == Format::Json;
    match command {
        Command::Put {
            key,
            ttl,
            condition,
            ..
        } => {
            let key = os_bytes(key);
            let options = PutOptions {
                condition: condition.condition(),
                ttl,
                ..PutOptions::default()
            };
            let seq = client
                .put_with(key.clone(), put_value, options)
                .await
                .map_err(fail)?;
            if json {
                output::json_lines(&[Json::new().bytes("key", &key).field("seq", seq)])
            } else {
                output::line("OK")
            }
        }
        Command::Get { key, seq } => {
            let key = os_bytes(key);
            let Some(found) = client.get_versioned(key.clone()).await.map_err(fail)? else {
                return Err(output::not_found(&key));
            };
            if json {
                output::json_lines(&[Json::new()
                    .bytes("key", &key)
                    .bytes("value", &found.value)
                    .field("seq", found.seq)
                    .field("expires_at_ms", found.expires_at_ms)])
            } else {
                if seq {
                    output::line(&found.seq.to_string())?;
                }
                output::value(&found.value, terminal)
            }
        }
        Command::Delete { key, if_seq } => {
            let key = os_bytes(key);
            let deleted = match if_seq {
                Some(seq) => {
                    client
                        .delete_if(key.clone(), Condition::SeqEquals(seq))
                        .await
                }
                None => client.delete(key.clone()).await,
            };
            match deleted.map_err(fail)? {
                Some(seq) if json => {
                    output::json_lines(&[Json::new().bytes("key", &key).field("seq", seq)])
                }
                Some(_) => output::line("OK"),
                None => Err(output::not_found(&key)),
            }
        }
        Command::Mput { pairs } => {
            let writes: Vec<Write> = pairs
                .chunks_exact(2)
                .map(|pair| Write::put(os_bytes(pair[0].clone()), os_bytes(pair[1].clone())))
                .collect();
            let seq = client.batch(writes, []).await.map_err(fail)?;
            batch_done(json, seq)
        }
        Command::Mdelete { keys } => {
            let writes = keys.into_iter().map(|key| Write::delete(os_bytes(key)));
            let seq = client.batch(writes, []).await.map_err(fail)?;
            batch_done(json, seq)
        }
        Command::Mget { keys } => {
            let keys: Vec<Bytes> = keys.into_iter().map(os_bytes).collect();
            let values = client.mget(keys.clone()).await.map_err(fail)?;
            if json {
                let objects: Vec<Json> = keys
                    .iter()
                    .zip(&values)
                    .map(|(key, value)| {
                        let object = Json::new().bytes("key", key);
                        match value {
                            Some(v) => object
                                .field("found", true)
                                .bytes("value", &v.value)
                                .field("seq", v.seq)
                                .field("expires_at_ms", v.expires_at_ms),
                            None => object.field("found", false),
                        }
                    })
                    .collect();
                output::json_lines(&objects)
            } else {
                let lines: Vec<Vec<&[u8]>> = values
                    .iter()
                    .map(|value| match value {
                        Some(v) => vec![&v.value[..]],
                        None => vec![&b"(nil)"[..]],
                    })
                    .collect();
                output::byte_lines(&lines, terminal)
            }
        }
        Command::Incr { key, delta } => {
            let key = os_bytes(key);
            let counter = client.incr(key.clone(), delta).await.map_err(fail)?;
            if json {
                output::json_lines(&[Json::new()
                    .bytes("key", &key)
                    .field("value", counter.value)
                    .field("seq", counter.seq)])
            } else {
                output::line(&counter.value.to_string())
            }
        }
        Command::Expire { key, ttl } => {
            let key = os_bytes(key);
            let change = client.expire(key.clone(), ttl).await.map_err(fail)?;
            deadline_done(json, &key, change)
        }
        Command::Persist { key } => {
            let key = os_bytes(key);
            let change = client.persist(key.clone()).await.map_err(fail)?;
            deadline_done(json, &key, change)
        }
        Command::Ttl { key } => {
            let key = os_bytes(key);
            let Some(ttl) = client.ttl(key.clone()).await.map_err(fail)? else {
                return Err(output::not_found(&key));
            };
            let (remaining_ms, expires_at_ms) = match ttl {
                Ttl::Persistent => (None, None),
                Ttl::Expires {
                    remaining,
                    expires_at_ms,
                } => (
                    Some(u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX)),
                    Some(expires_at_ms),
                ),
            };
            if json {
                output::json_lines(&[Json::new()
                    .bytes("key", &key)
                    .field("remaining_ms", remaining_ms)
                    .field("expires_at_ms", expires_at_ms)])
            } else {
                match remaining_ms {
                    Some(ms) => output::line(&format!("{ms}ms")),
                    None => output::line("no expiry"),
                }
            }
        }
        Command::Scan {
            prefix,
            start,
            end,
            limit,
            values,
            reverse,
        } => {
            let options = ScanOptions {
                prefix: prefix.map(os_bytes).unwrap_or_default(),
                start: start.map(os_bytes).unwrap_or_default(),
                end: end.map(os_bytes).unwrap_or_default(),
                values,
                reverse,
                ..ScanOptions::default()
            };
            scan(&client, options, limit, json, terminal)
                .await
                .map_err(fail)?
        }
        Command::Stats => {
            let stats = client.stats().await.map_err(fail)?;
            let uptime_ms = u64::try_from(stats.uptime.as_millis()).unwrap_or(u64::MAX);
            let fields = [
                ("keys", stats.keys),
                ("bytes", stats.bytes),
                ("last_seq", stats.last_seq),
                ("durable_seq", stats.durable_seq),
                ("wal_bytes", stats.wal_bytes),
                ("wal_segments", stats.wal_segments),
                ("snapshots", stats.snapshots),
                ("expiring_keys", stats.expiring_keys),
                ("expired_keys", stats.expired_keys),
                ("uptime_ms", uptime_ms),
            ];
            if json {
                let object = fields
                    .iter()
                    .fold(Json::new(), |object, (name, n)| object.field(name, *n));
                output::json_lines(&[object])
            } else {
                let text: Vec<String> = fields
                    .iter()
                    .map(|(name, n)| format!("{name} {n}"))
                    .collect();
                output::line(&text.join("\n"))
            }
        }
        Command::Keys { prefix, limit } => {
            let page = client.keys(os_bytes(prefix), limit).await.map_err(fail)?;
            if json {
                let objects: Vec<Json> = page
                    .keys
                    .iter()
                    .map(|key| Json::new().bytes("key", key))
                    .collect();
                output::json_lines(&objects)?;
            } else {
                output::keys(&page.keys, terminal)?;
            }
            if page.truncated {
                eprintln!(
                    "kv-client: more keys match (the listing stops at --limit, or where one \
                     answer would exceed the server's --max-frame); narrow --prefix to see them"
                );
            }
            Ok(())
        }
        Command::Checkpoint => {
            let seq = client.checkpoint().await.map_err(fail)?;
            if json {
                output::json_lines(&[Json::new().field("seq", seq)])
            } else {
                output::line(&seq.to_string())
            }
        }
        Command::Backup { file } => {
            let info = client.backup(&file).await.map_err(fail)?;
            if json {
                return output::json_lines(&[Json::new()
                    .field("seq", info.seq)
                    .field("file", file.display().to_string())
                    .field("bytes", info.bytes)]);
            }
            output::line(&format!(
                "backup of LSN {} written to {} ({} bytes)",
                info.seq,
                file.display(),
                info.bytes
            ))
        }
        Command::Cluster { action } => {
            cluster_command(&client, action, addr, &connection.options(), json).await
        }
        // Dispatched in `main`, on its own runtime.
        Command::Bench(_) => Err(Failure::Error("bench is not a one-shot command".into())),
    }
}

/// What `mput` and `mdelete` print: OK, or the batch's seq.
fn batch_done(json: bool, seq: u64) -> Result<(), Failure> {
    if json {
        output::json_lines(&[Json::new().field("seq", seq)])
    } else {
        output::line("OK")
    }
}

/// What `expire` and `persist` print, and exit 1 for a missing key.
fn deadline_done(
    json: bool,
    key: &[u8],
    change: Option<kv_client::DeadlineChange>,
) -> Result<(), Failure> {
    let Some(change) = change else {
        return Err(output::not_found(key));
    };
    if json {
        output::json_lines(&[Json::new()
            .bytes("key", key)
            .field("changed", change.seq.is_some())
            .field("seq", change.seq)])
    } else {
        output::line("OK")
    }
}

/// Prints every key of the scan `options` describe, page by page (each
/// page printed as it comes), at most `limit` in all.
async fn scan(
    client: &ClusterClient,
    mut options: ScanOptions,
    limit: Option<u64>,
    json: bool,
    terminal: bool,
) -> kv_client::Result<Result<(), Failure>> {
    let mut left = limit.unwrap_or(u64::MAX);
    while left > 0 {
        // Ask for no more than is left to print (0: a full page).
        options.limit = u32::try_from(left).unwrap_or(0);
        let mut page = client.scan(&options).await?;
        page.items
            .truncate(usize::try_from(left).unwrap_or(usize::MAX));
        left -= page.items.len() as u64;
        let printed = if json {
            let objects: Vec<Json> = page
                .items
                .iter()
                .map(|item| {
                    let object = Json::new().bytes("key", &item.key);
                    match &item.value {
                        Some(value) => object.bytes("value", value),
                        None => object,
                    }
                    .field("seq", item.seq)
                })
                .collect();
            output::json_lines(&objects)
        } else {
            let lines: Vec<Vec<&[u8]>> = page
                .items
                .iter()
                .map(|item| match &item.value {
                    Some(value) => vec![&item.key[..], b"\t", &value[..]],
                    None => vec![&item.key[..]],
                })
                .collect();
            output::byte_lines(&lines, terminal)
        };
        if printed.is_err() {
            return Ok(printed);
        }
        match page.resume_after {
            // A server that resumes where it began would page forever.
            Some(after) if after != options.after => options.after = after,
            Some(_) => {
                return Err(kv_client::ClientError::Protocol(
                    "a scan page resumed where it began; the scan would not end".into(),
                ));
            }
            None => break,
        }
    }
    Ok(Ok(()))
}

/// One member's view, as `cluster status` prints it.
fn member_line(member: &ClusterMember, view: Result<&ClusterStatusResponse, String>) -> String {
    let head = format!(
        "{} {} {}",
        member.node_id, member.client_addr, member.peer_addr
    );
    match view {
        Ok(s) if s.has_log => format!(
            "{head} {} term={} last_log_index={} applied_index={}",
            s.role, s.term, s.last_log_index, s.applied_index
        ),
        Ok(s) => format!("{head} {} term={} (empty log)", s.role, s.term),
        Err(e) => format!("{head} unreachable: {e}"),
    }
}

/// One member's view, as `-o json cluster status` prints it.
fn member_json(member: &ClusterMember, view: Result<&ClusterStatusResponse, &String>) -> Json {
    let head = Json::new()
        .field("node_id", member.node_id)
        .field("client_addr", member.client_addr.clone())
        .field("peer_addr", member.peer_addr.clone());
    match view {
        Ok(s) => head
            .field("role", s.role.clone())
            .field("term", s.term)
            .field("last_log_index", s.has_log.then_some(s.last_log_index))
            .field("applied_index", s.has_log.then_some(s.applied_index)),
        Err(e) => head.field("error", e.clone()),
    }
}

async fn cluster_command(
    client: &kv_client::ClusterClient,
    action: ClusterAction,
    addr: &str,
    options: &ClientOptions,
    json: bool,
) -> Result<(), Failure> {
    let fail = |e| output::client_failure(addr, &e);
    let command = match action {
        ClusterAction::Status => request::Command::ClusterStatus(ClusterStatusRequest {}),
        ClusterAction::Add { id, addrs } => {
            let Some((client_addr, peer_addr)) = addrs.split_once('/') else {
                return Err(Failure::Error(format!(
                    "cluster add {id} {addrs}: expected CLIENT_ADDR/PEER_ADDR"
                )));
            };
            request::Command::ClusterAdd(ClusterAddRequest {
                node_id: id,
                client_addr: client_addr.to_string(),
                peer_addr: peer_addr.to_string(),
            })
        }
        ClusterAction::Remove { id } => {
            request::Command::ClusterRemove(ClusterRemoveRequest { node_id: id })
        }
    };
    let status = match client.call(command).await.map_err(fail)? {
        response::Result::ClusterStatus(s) => s,
        other => {
            return Err(Failure::Error(format!(
                "the server answered a cluster request with {other:?}"
            )));
        }
    };
    // Each member is asked for its own view.
    for member in &status.members {
        let member_options = options.for_addr(&member.client_addr);
        let view = match kv_client::Client::connect_with(
            member.client_addr.as_str(),
            member_options,
        )
        .await
        {
            Ok(c) => match c
                .call(request::Command::ClusterStatus(ClusterStatusRequest {}))
                .await
            {
                Ok(response::Result::ClusterStatus(s)) => Ok(s),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        if json {
            output::json_lines(&[member_json(member, view.as_ref())])?;
        } else {
            output::line(&member_line(member, view.as_ref().map_err(Clone::clone)))?;
        }
    }
    if json {
        let leader = (status.leader_id != 0).then_some(status.leader_id);
        return output::json_lines(&[Json::new().field("leader", leader)]);
    }
    match status.leader_id {
        0 => output::line("leader: unknown"),
        id => output::line(&format!("leader: {id}")),
    }
}

/// A put's value: the argument's bytes, or all of stdin for `-`.
fn read_value(value: &OsString) -> Result<Bytes, Failure> {
    if value != "-" {
        return Ok(os_bytes(value.clone()));
    }
    let mut buf = Vec::new();
    io::stdin()
        .lock()
        .read_to_end(&mut buf)
        .map_err(|e| Failure::Error(format!("cannot read stdin: {}", output::io_message(&e))))?;
    Ok(Bytes::from(buf))
}

/// The bytes of a command-line argument, exactly as given (not
/// necessarily UTF-8).
fn os_bytes(arg: OsString) -> Bytes {
    Bytes::from(arg.into_encoded_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kv-client").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn put_takes_key_and_value() {
        let cli = parse(&["put", "k", "v"]).unwrap();
        match cli.command {
            Some(Command::Put { key, value, .. }) => {
                assert_eq!(key, "k");
                assert_eq!(value, "v");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn addr_defaults_and_may_follow_the_command() {
        // Not set in the test environment, so the default applies.
        if std::env::var_os("KV_ADDR").is_none() {
            assert_eq!(
                parse(&["get", "k"]).unwrap().connection.addr,
                "127.0.0.1:7878"
            );
        }
        let cli = parse(&["get", "k", "--addr", "10.1.2.3:9"]).unwrap();
        assert_eq!(cli.connection.addr, "10.1.2.3:9");
        let cli = parse(&["--addr", "h:1", "checkpoint"]).unwrap();
        assert_eq!(cli.connection.addr, "h:1");
        assert!(matches!(cli.command, Some(Command::Checkpoint)));
    }

    #[test]
    fn addr_takes_a_list_of_members() {
        let cli = parse(&["--addr", "a:1, b:2,c:3", "get", "k"]).unwrap();
        assert_eq!(cli.connection.addr, "a:1,b:2,c:3");
        assert_eq!(cli.connection.addrs(), ["a:1", "b:2", "c:3"]);
        assert_eq!(
            cli.connection.client().unwrap().addrs(),
            ["a:1", "b:2", "c:3"]
        );
        for bad in ["", "a:1,", ",a:1", "a:1,,b:2", "a:1,nocolon"] {
            assert!(
                parse(&["--addr", bad, "get", "k"]).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn negative_looking_value_is_a_value() {
        match parse(&["put", "temp", "-3"]).unwrap().command {
            Some(Command::Put { value, .. }) => assert_eq!(value, "-3"),
            other => panic!("unexpected {other:?}"),
        }
        match parse(&["put", "--", "-k", "v"]).unwrap().command {
            Some(Command::Put { key, .. }) => assert_eq!(key, "-k"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn keys_options() {
        let cli = parse(&["keys", "--prefix", "user:", "--limit", "5"]).unwrap();
        match cli.command {
            Some(Command::Keys { prefix, limit }) => {
                assert_eq!(prefix, "user:");
                assert_eq!(limit, 5);
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse(&["keys"]).unwrap().command {
            Some(Command::Keys { prefix, limit }) => {
                assert!(prefix.is_empty());
                assert_eq!(limit, 0);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn no_command_means_the_prompt() {
        assert!(parse(&[]).unwrap().command.is_none());
    }

    #[test]
    fn usage_errors_are_refused() {
        assert!(parse(&["put", "only-key"]).is_err());
        assert!(parse(&["keys", "--limit", "-1"]).is_err());
        assert!(parse(&["frobnicate"]).is_err());
        assert!(parse(&["--timeout", "soon", "checkpoint"]).is_err());
    }

    #[test]
    fn the_token_is_never_a_flag() {
        for flag in ["--auth-token", "--token", "--password"] {
            let err = parse(&[flag, "s3cret", "get", "k"]).expect_err(flag);
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::UnknownArgument,
                "{flag}"
            );
        }
        let cli = parse(&["--tls-ca", "ca.pem", "--auth-token-file", "t", "get", "k"]).unwrap();
        assert_eq!(
            cli.connection.tls_ca.as_deref(),
            Some(std::path::Path::new("ca.pem"))
        );
        assert!(!cli.connection.tls);
    }

    #[test]
    fn timeout_zero_means_none() {
        let cli = parse(&["--timeout", "0", "checkpoint"]).unwrap();
        assert_eq!(cli.connection.options().request_timeout, None);
        let cli = parse(&["--timeout", "7", "checkpoint"]).unwrap();
        assert_eq!(
            cli.connection.options().request_timeout,
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn max_frame_takes_the_servers_size_syntax() {
        // The default is the protocol's, whatever KV_MAX_FRAME says in the
        // environment of the test (it is read only when set).
        if std::env::var_os("KV_MAX_FRAME").is_none() {
            let cli = parse(&["checkpoint"]).unwrap();
            assert_eq!(
                cli.connection.options().max_frame_size,
                kv_proto::DEFAULT_MAX_FRAME_SIZE
            );
        }
        for (flag, bytes) in [
            ("8MiB", 8 << 20),
            ("16mb", 16 << 20),
            ("64KiB", 64 << 10),
            ("1G", 1 << 30),
            ("4096", 4096),
        ] {
            let cli = parse(&["--max-frame", flag, "checkpoint"]).unwrap();
            assert_eq!(cli.connection.options().max_frame_size, bytes, "{flag}");
        }
        for bad in ["8 parsecs", "MiB", "-1", "1.5MiB", "99999999999999G"] {
            assert!(
                parse(&["--max-frame", bad, "checkpoint"]).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn durations_are_at_most_a_day() {
        assert!(parse(&["--timeout", "86400", "checkpoint"]).is_ok());
        assert!(parse(&["--timeout", "86401", "checkpoint"]).is_err());
        assert!(parse(&["--timeout", "18446744073709551615", "checkpoint"]).is_err());
        assert!(parse(&["bench", "--duration", "86400"]).is_ok());
        assert!(parse(&["bench", "--duration", "1e30"]).is_err());
    }

    #[test]
    fn durations_take_units_and_refuse_zero() {
        for (text, ms) in [
            ("10s", 10_000),
            ("500ms", 500),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("2d", 172_800_000),
            ("7", 7_000),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in [
            "0",
            "0s",
            "",
            "s",
            "10 s",
            "1.5s",
            "-1s",
            "10y",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_duration("0ms").unwrap_err().contains("zero"));
    }

    #[test]
    fn put_conditions_are_mutually_exclusive() {
        match parse(&["put", "k", "v", "--ttl", "10s", "--if-seq", "4"])
            .unwrap()
            .command
        {
            Some(Command::Put { ttl, condition, .. }) => {
                assert_eq!(ttl, Some(Duration::from_secs(10)));
                assert_eq!(condition.condition(), Some(Condition::SeqEquals(4)));
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse(&["put", "k", "v", "--if-value", "-old"])
            .unwrap()
            .command
        {
            Some(Command::Put { condition, .. }) => assert_eq!(
                condition.condition(),
                Some(Condition::ValueEquals(Bytes::from_static(b"-old")))
            ),
            other => panic!("unexpected {other:?}"),
        }
        let err = parse(&["put", "k", "v", "--if-absent", "--if-present"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(parse(&["put", "k", "v", "--ttl", "0"]).is_err());
    }

    #[test]
    fn incr_takes_a_negative_delta_and_scan_refuses_prefix_with_range() {
        match parse(&["incr", "n", "-3"]).unwrap().command {
            Some(Command::Incr { delta, .. }) => assert_eq!(delta, -3),
            other => panic!("unexpected {other:?}"),
        }
        match parse(&["incr", "n"]).unwrap().command {
            Some(Command::Incr { delta, .. }) => assert_eq!(delta, 1),
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse(&["scan", "--prefix", "a", "--start", "b"]).is_err());
        assert!(parse(&["scan", "--limit", "0"]).is_err());
        assert!(parse(&["-o", "json", "scan", "--start", "a", "--end", "b"]).is_ok());
        assert!(parse(&["mget"]).is_err());
        assert!(parse(&["-o", "yaml", "stats"]).is_err());
    }

    #[test]
    fn argument_bytes_are_kept_exactly() {
        assert_eq!(&os_bytes(OsString::from("héllo"))[..], "héllo".as_bytes());
    }
}
