//! Harness for the end-to-end tests: runs the real `kv-server` and
//! `kv-client` binaries.
//!
//! The binaries must be built first (`cargo build --bins`); `cargo xtask
//! test` does that and then runs every test. [`ServerProcess`] starts a
//! server on a free port and a data directory of the test's choosing, and
//! kills it when dropped, so a failing test never leaks a server.
//! [`RawConnection`] speaks the wire protocol byte by byte, for tests of
//! pipelining and bad input that a well-behaved client cannot express.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kv_proto::{ClientCodec, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

/// How long a server may take to print its listening line.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a server may take to exit after a signal.
pub const EXIT_DEADLINE: Duration = Duration::from_secs(30);
/// How long one CLI invocation may take.
pub const CLI_DEADLINE: Duration = Duration::from_secs(30);

/// Environment variables of the binaries that must not leak in from the
/// shell running the tests.
const BINARY_ENV: &[&str] = &[
    "KV_ADDR",
    "KV_DATA_DIR",
    "KV_SYNC_POLICY",
    "KV_GROUP_COMMIT_DELAY_US",
    "KV_SYNC_INTERVAL_MS",
    "KV_SEGMENT_SIZE",
    "KV_CHECKPOINT_AFTER",
    "KV_MAX_CONNECTIONS",
    "KV_MAX_FRAME",
    "KV_MAX_KEY_SIZE",
    "KV_MAX_VALUE_SIZE",
    "KV_IDLE_TIMEOUT",
    "KV_FRAME_TIMEOUT",
    "KV_MAX_IN_FLIGHT",
    "KV_SHUTDOWN_GRACE",
];

/// The path of a binary of this workspace, next to the test executable's
/// directory: `target/<profile>/deps/<test>` -> `target/<profile>/<name>`.
///
/// # Panics
/// If the binary has not been built.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe.parent().expect("the deps directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --bins` first (or `cargo xtask test`, which does)",
        path.display()
    );
    path
}

/// A `Command` for a workspace binary with the `KV_*` environment cleared.
pub fn command(name: &str) -> Command {
    let mut command = Command::new(binary(name));
    for var in BINARY_ENV {
        command.env_remove(var);
    }
    command
}

/// A running `kv-server`. Dropping it kills the process (SIGKILL) and reaps
/// it.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    data_dir: PathBuf,
    args: Vec<String>,
    stderr: Arc<Mutex<String>>,
    exit: Option<ExitStatus>,
}

impl ServerProcess {
    /// Starts a server on `127.0.0.1:0` with data in `data_dir` and the
    /// extra flags `args`; returns once it listens.
    ///
    /// # Panics
    /// If it exits or does not listen within [`START_DEADLINE`]; the panic
    /// message carries its stderr.
    pub fn start(data_dir: &Path, args: &[&str]) -> ServerProcess {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Self::start_owned(data_dir.to_path_buf(), args)
    }

    fn start_owned(data_dir: PathBuf, args: Vec<String>) -> ServerProcess {
        let mut child = command("kv-server")
            .arg("--addr")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(&args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kv-server");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (lines, listening) = mpsc::channel();
        let pipe = child.stderr.take().expect("piped stderr");
        let captured = Arc::clone(&stderr);
        // Drains stderr for the server's whole life, so it never blocks on
        // a full pipe, and hands each line to the start-up wait below.
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut all) = captured.lock() {
                    all.push_str(&line);
                    all.push('\n');
                }
                let _ = lines.send(line);
            }
        });
        let deadline = Instant::now() + START_DEADLINE;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match listening.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = parse_listening(&line) {
                        break addr;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "kv-server did not listen within {START_DEADLINE:?}; stderr:\n{}",
                        stderr.lock().map(|s| s.clone()).unwrap_or_default()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait();
                    panic!(
                        "kv-server exited before listening ({status:?}); stderr:\n{}",
                        stderr.lock().map(|s| s.clone()).unwrap_or_default()
                    );
                }
            }
        };
        ServerProcess {
            child,
            addr,
            data_dir,
            args,
            stderr,
            exit: None,
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn sigterm(&self) {
        send_signal(self.pid(), "TERM");
    }

    /// Sends SIGINT (graceful shutdown, as Ctrl-C).
    pub fn sigint(&self) {
        send_signal(self.pid(), "INT");
    }

    /// Kills it with SIGKILL, as a crash, and reaps it.
    pub fn kill9(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            self.exit = Some(self.child.wait().expect("wait for kv-server"));
        }
    }

    /// Waits for it to exit on its own.
    ///
    /// # Panics
    /// If it is still running after `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let status = wait_child(&mut self.child, deadline).unwrap_or_else(|| {
            panic!(
                "kv-server still running {deadline:?} after being asked to stop; stderr:\n{}",
                self.stderr()
            )
        });
        self.exit = Some(status);
        status
    }

    /// Starts a new server on the same data directory with the same flags
    /// (on a new port). The old one must have exited.
    pub fn restart(&self) -> ServerProcess {
        assert!(self.exit.is_some(), "restart needs the old server stopped");
        Self::start_owned(self.data_dir.clone(), self.args.clone())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sends `signal` (a name `kill` knows, e.g. `TERM`) to `pid`.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed: {status}");
}

/// The address in a `listening on ADDR` log line.
fn parse_listening(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Waits for `child` to exit, up to `deadline`. Polls: std offers no
/// waiting with a timeout.
fn wait_child(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= until {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a binary to completion with `stdin` as its input, killing it if it
/// outlives `deadline`.
///
/// # Panics
/// If it does not finish in time.
pub fn run_to_exit(mut command: Command, stdin: &[u8], deadline: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_vec();
    let feeder = thread::spawn(move || {
        // The program may exit without reading its input; that is its call.
        let _ = input.write_all(&stdin);
    });
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let Some(status) = wait_child(&mut child, deadline) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{command:?} did not finish within {deadline:?}");
    };
    let _ = feeder.join();
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Runs `kv-client --addr ADDR ARGS...` with `stdin` as input.
pub fn cli(addr: SocketAddr, args: &[&str], stdin: &[u8]) -> Output {
    let mut command = command("kv-client");
    command.arg("--addr").arg(addr.to_string()).args(args);
    run_to_exit(command, stdin, CLI_DEADLINE)
}

/// Total bytes of the regular files under `dir`, recursively.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("read data dir") {
        let entry = entry.expect("dir entry");
        let meta = entry.metadata().expect("metadata");
        if meta.is_dir() {
            total += dir_size(&entry.path());
        } else {
            total += meta.len();
        }
    }
    total
}

/// A seed for randomised tests: `E2E_SEED` if set, else from the clock.
/// Tests print it so that a failure can be replayed.
pub fn seed() -> u64 {
    match std::env::var("E2E_SEED") {
        Ok(s) => s.parse().expect("E2E_SEED must be a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    }
}

/// The durable state a test expects of one key: what it last saw
/// acknowledged, and a write that was sent but never answered (the server
/// died first), which may or may not have become durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyModel {
    /// The last acknowledged state: `None` absent (never written, or
    /// deleted).
    pub acked: Option<Vec<u8>>,
    /// An unanswered write: `Some(None)` a delete, `Some(Some(v))` a put.
    pub attempted: Option<Option<Vec<u8>>>,
}

impl KeyModel {
    /// Whether `found` is a state this key may be in after a crash.
    pub fn allows(&self, found: &Option<Vec<u8>>) -> bool {
        *found == self.acked || self.attempted.as_ref() == Some(found)
    }
}

/// Checks `found` (key -> value read back) against `model`; returns one
/// line per key that breaks it.
pub fn model_violations(
    model: &HashMap<Vec<u8>, KeyModel>,
    found: &HashMap<Vec<u8>, Option<Vec<u8>>>,
) -> Vec<String> {
    let mut bad = Vec::new();
    for (key, expect) in model {
        let got = found.get(key).cloned().unwrap_or(None);
        if !expect.allows(&got) {
            bad.push(format!(
                "key {:?}: found {:?}, acknowledged {:?}, unanswered attempt {:?}",
                String::from_utf8_lossy(key),
                got.as_deref().map(String::from_utf8_lossy),
                expect.acked.as_deref().map(String::from_utf8_lossy),
                expect
                    .attempted
                    .as_ref()
                    .map(|a| a.as_deref().map(String::from_utf8_lossy)),
            ));
        }
    }
    bad.sort();
    bad
}

/// A writer of the crash workloads: one client writing its own keys, one
/// request at a time, recording in its model what was acknowledged and
/// what was sent but never answered.
///
/// Each writer owns its keys (`w{writer}-...`), so the last acknowledged
/// write of a key is well defined. Half the writes go to fresh keys, the
/// rest overwrite (and now and then delete) a small set of hot keys.
#[derive(Debug)]
pub struct Writer {
    /// Which writer this is; its keys start with `w{id}-`.
    pub id: u32,
    /// What each of its keys may hold.
    pub model: HashMap<Vec<u8>, KeyModel>,
    seq: u64,
}

/// Number of hot keys per writer that overwrites and deletes go to.
const HOT_KEYS: u64 = 16;

impl Writer {
    /// A writer with no keys yet.
    pub fn new(id: u32) -> Writer {
        Writer {
            id,
            model: HashMap::new(),
            seq: 0,
        }
    }

    /// Writes until `stop` is set or a call fails (the server died); every
    /// acknowledged write bumps `acks`. `value_size` pads values.
    pub async fn run(
        &mut self,
        client: &kv_client::Client,
        stop: &AtomicBool,
        acks: &AtomicU64,
        value_size: usize,
    ) {
        while !stop.load(Ordering::Relaxed) {
            self.seq += 1;
            let seq = self.seq;
            let writer = self.id;
            let hot = format!("w{writer}-hot{}", seq % HOT_KEYS).into_bytes();
            let mut value = format!("w{writer}-s{seq}-").into_bytes();
            value.resize(value_size.max(value.len()), b'.');
            let (key, write) = match seq % 10 {
                0..=4 => (format!("w{writer}-u{seq}").into_bytes(), Some(value)),
                5..=8 => (hot, Some(value)),
                _ => (hot, None),
            };
            let state = self.model.entry(key.clone()).or_default();
            state.attempted = Some(write.clone());
            let result = match &write {
                Some(value) => client.put(key, value.clone()).await.map(drop),
                None => client.delete(key).await.map(drop),
            };
            if result.is_err() {
                // Unanswered (or refused): may or may not be durable.
                return;
            }
            state.acked = write;
            state.attempted = None;
            acks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads back every key of `writers` from the server at `addr` and checks
/// each against its model; then, since what was found is now durable,
/// makes it the acknowledged state (ready for the next crash cycle).
///
/// # Panics
/// On any violation, listing them (with `context`, e.g. the seed).
pub async fn verify_and_settle(addr: SocketAddr, writers: &mut [Writer], context: &str) {
    use futures::StreamExt;
    let client = kv_client::Client::connect(addr)
        .await
        .expect("connect to verify");
    let keys: Vec<Vec<u8>> = writers
        .iter()
        .flat_map(|w| w.model.keys().cloned())
        .collect();
    let found: HashMap<Vec<u8>, Option<Vec<u8>>> = futures::stream::iter(keys)
        .map(|key| {
            let client = client.clone();
            async move {
                let value = client.get(key.clone()).await.expect("get while verifying");
                (key, value.map(|v| v.to_vec()))
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let mut violations = Vec::new();
    for writer in writers.iter() {
        violations.extend(model_violations(&writer.model, &found));
    }
    assert!(
        violations.is_empty(),
        "{context}: {} keys lost or wrong after restart; first ones:\n{}",
        violations.len(),
        violations
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    for writer in writers.iter_mut() {
        for (key, state) in writer.model.iter_mut() {
            state.acked = found.get(key).cloned().unwrap_or(None);
            state.attempted = None;
        }
    }
}

/// Polls `condition` every few milliseconds until it holds.
///
/// # Panics
/// If it does not hold within `deadline`.
pub async fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !condition() {
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A connection that speaks frames directly, for pipelining and bad input.
#[derive(Debug)]
pub struct RawConnection {
    stream: TcpStream,
    buffer: BytesMut,
    codec: ClientCodec,
}

impl RawConnection {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<RawConnection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(RawConnection {
            stream,
            buffer: BytesMut::new(),
            codec: ClientCodec::new(usize::MAX),
        })
    }

    /// Encodes requests into one buffer of frames (no I/O).
    pub fn encode(requests: &[Request]) -> Vec<u8> {
        let mut codec = ClientCodec::new(usize::MAX);
        let mut out = BytesMut::new();
        for request in requests {
            codec.encode(request, &mut out).expect("encode request");
        }
        out.to_vec()
    }

    /// Sends one request.
    pub async fn send(&mut self, request: &Request) -> std::io::Result<()> {
        self.send_raw(&Self::encode(std::slice::from_ref(request)))
            .await
    }

    /// Sends raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next response, `Ok(None)` if the server closed the connection.
    ///
    /// # Panics
    /// If nothing arrives within `deadline`, or the bytes are not a
    /// response.
    pub async fn recv(&mut self, deadline: Duration) -> std::io::Result<Option<Response>> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            if let Some(item) = self.codec.decode(&mut self.buffer).expect("a valid frame") {
                return Ok(Some(item.expect("a decodable response")));
            }
            let read = tokio::time::timeout_at(until, self.stream.read_buf(&mut self.buffer))
                .await
                .unwrap_or_else(|_| panic!("no response within {deadline:?}"))?;
            if read == 0 {
                assert!(self.buffer.is_empty(), "server closed mid-frame");
                return Ok(None);
            }
        }
    }

    /// Waits until the server closes the connection (end of stream or
    /// reset), discarding anything it sends; returns when it saw the close.
    ///
    /// # Panics
    /// If it is still open after `deadline`.
    pub async fn wait_closed(&mut self, deadline: Duration) -> tokio::time::Instant {
        let start = tokio::time::Instant::now();
        let mut sink = [0u8; 4096];
        loop {
            let read = tokio::time::timeout_at(start + deadline, self.stream.read(&mut sink))
                .await
                .unwrap_or_else(|_| panic!("connection still open after {deadline:?}"));
            match read {
                Ok(0) | Err(_) => return tokio::time::Instant::now(),
                Ok(_) => {}
            }
        }
    }

    /// Splits into the raw stream halves, for a writer and a reader running
    /// at once.
    pub fn into_inner(self) -> TcpStream {
        self.stream
    }
}

/// Reads responses from a stream until `count` have arrived.
///
/// # Panics
/// If the stream ends first or `deadline` passes.
pub async fn read_responses<R: tokio::io::AsyncRead + Unpin>(
    mut stream: R,
    count: usize,
    deadline: Duration,
) -> Vec<Response> {
    let until = tokio::time::Instant::now() + deadline;
    let mut codec = ClientCodec::new(usize::MAX);
    let mut buffer = BytesMut::new();
    let mut responses = Vec::with_capacity(count);
    while responses.len() < count {
        if let Some(item) = codec.decode(&mut buffer).expect("a valid frame") {
            responses.push(item.expect("a decodable response"));
            continue;
        }
        let read = tokio::time::timeout_at(until, stream.read_buf(&mut buffer))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {count} responses within {deadline:?}",
                    responses.len()
                )
            })
            .expect("read responses");
        assert!(
            read > 0,
            "server closed after {} of {count} responses",
            responses.len()
        );
    }
    responses
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line_parses_with_log_prefix() {
        let line = "2026-01-01T00:00:00Z  INFO kv_server: listening on 127.0.0.1:40123";
        assert_eq!(
            parse_listening(line),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(parse_listening("opening the store"), None);
    }

    #[test]
    fn key_model_allows_acked_or_attempted_only() {
        let model = KeyModel {
            acked: Some(b"a".to_vec()),
            attempted: Some(None),
        };
        assert!(model.allows(&Some(b"a".to_vec())));
        assert!(model.allows(&None));
        assert!(!model.allows(&Some(b"b".to_vec())));
        let never_acked = KeyModel::default();
        assert!(never_acked.allows(&None));
        assert!(!never_acked.allows(&Some(b"x".to_vec())));
    }
}
