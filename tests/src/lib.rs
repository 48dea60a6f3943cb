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
use std::net::{SocketAddr, TcpListener};
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

/// Prefix of the environment variables the binaries read (`KV_ADDR`,
/// `KV_TIMEOUT`, ...): none may leak in from the shell running the tests.
const BINARY_ENV_PREFIX: &[u8] = b"KV_";

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

/// A `Command` for a workspace binary with every `KV_*` variable removed
/// from its environment, whichever the binaries read today.
pub fn command(name: &str) -> Command {
    let mut command = Command::new(binary(name));
    for (var, _) in std::env::vars_os() {
        if var.as_encoded_bytes().starts_with(BINARY_ENV_PREFIX) {
            command.env_remove(var);
        }
    }
    command
}

/// A running `kv-server`. Dropping it kills the process (SIGKILL) and reaps
/// it.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    /// The `--addr` it was started with.
    listen: String,
    data_dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
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
        Self::start_on("127.0.0.1:0", data_dir, args)
    }

    /// As [`ServerProcess::start`], listening on `listen` (`--addr`).
    pub fn start_on(listen: &str, data_dir: &Path, args: &[&str]) -> ServerProcess {
        Self::start_with_env(listen, data_dir, args, &[])
    }

    /// As [`ServerProcess::start_on`], with the environment variables
    /// `env` set (the `KV_*` ones of the shell are removed first).
    pub fn start_with_env(
        listen: &str,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> ServerProcess {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::start_owned(listen.to_owned(), data_dir.to_path_buf(), args, env)
    }

    fn start_owned(
        listen: String,
        data_dir: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> ServerProcess {
        let mut child = command("kv-server")
            .arg("--addr")
            .arg(&listen)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k, v)))
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
            listen,
            data_dir,
            args,
            env,
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
        Self::start_owned(
            self.listen.clone(),
            self.data_dir.clone(),
            self.args.clone(),
            self.env.clone(),
        )
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
    // The address ends at a space, or at the quote that closes a JSON
    // log line's message.
    rest.split(|c: char| c.is_whitespace() || c == '"')
        .next()?
        .parse()
        .ok()
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

/// The send and receive queues of one TCP socket as the kernel reports them
/// (Linux, `/proc/net/tcp` and `/proc/net/tcp6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketQueues {
    /// Bytes written by the program that the peer has not acknowledged.
    pub unacked: u64,
    /// Bytes received that the program has not read yet.
    pub unread: u64,
}

/// The queues of the socket from `local` to `remote` on this machine; `None`
/// when there is no such connection.
///
/// # Errors
/// If the kernel's table cannot be read (not Linux).
pub fn socket_queues(
    local: SocketAddr,
    remote: SocketAddr,
) -> std::io::Result<Option<SocketQueues>> {
    let table = if local.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let text = std::fs::read_to_string(table)?;
    Ok(find_socket(&text, local, remote))
}

/// The queues of the `local` → `remote` line in a `/proc/net/tcp` table.
fn find_socket(table: &str, local: SocketAddr, remote: SocketAddr) -> Option<SocketQueues> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (from, to, queues) = (fields.get(1)?, fields.get(2)?, fields.get(4)?);
        if parse_proc_addr(from)? != local || parse_proc_addr(to)? != remote {
            return None;
        }
        let (tx, rx) = queues.split_once(':')?;
        Some(SocketQueues {
            unacked: u64::from_str_radix(tx, 16).ok()?,
            unread: u64::from_str_radix(rx, 16).ok()?,
        })
    })
}

/// An address as `/proc/net/tcp{,6}` prints it: the IP as 32-bit words in
/// the kernel's byte order, in hex, then `:` and the port in hex.
fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for word in 0..ip.len() / 8 {
        let word = u32::from_str_radix(ip.get(word * 8..word * 8 + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip: std::net::IpAddr = match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok()?.into(),
        16 => <[u8; 16]>::try_from(bytes).ok()?.into(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Waits until the server at `server` has read every byte this process
/// sent it on the connection from `client`: the client's socket has nothing
/// unacknowledged, and then the server's socket has nothing unread.
///
/// # Panics
/// If that does not happen within `deadline`, or the kernel's socket table
/// cannot be read.
pub async fn wait_until_server_read_all(
    client: SocketAddr,
    server: SocketAddr,
    deadline: Duration,
) {
    let queues = |local, remote| {
        socket_queues(local, remote)
            .expect("read the kernel's TCP table (/proc/net/tcp; Linux only)")
    };
    // In this order: bytes acknowledged by the server's kernel before the
    // first condition held are all in its socket when the second is checked.
    wait_until(
        "the server to acknowledge every byte sent",
        deadline,
        || queues(client, server).is_some_and(|q| q.unacked == 0),
    )
    .await;
    wait_until("the server to read every byte sent", deadline, || {
        queues(server, client).is_some_and(|q| q.unread == 0)
    })
    .await;
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

/// `n` loopback addresses whose ports were free a moment ago (bound, then
/// released), for servers that must be told each other's addresses before
/// they start, such as the members of a cluster.
pub fn free_addrs(n: usize) -> Vec<String> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("the bound address").to_string())
        .collect()
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
    fn proc_net_tcp_lines_parse() {
        // A listener and both ends of one connection with 5000 bytes unread
        // (little-endian x86 prints 127.0.0.1 as 0100007F).
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:C25B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 33274 1
   2: 0100007F:C25B 0100007F:CFE2 01 00000000:00001388 00:00000000 00000000     0        0 33276 1
   3: 0100007F:CFE2 0100007F:C25B 01 00000010:00000000 00:00000000 00000000     0        0 33275 2
";
        if cfg!(target_endian = "little") {
            let server: SocketAddr = "127.0.0.1:49755".parse().unwrap();
            let client: SocketAddr = "127.0.0.1:53218".parse().unwrap();
            assert_eq!(
                find_socket(table, server, client),
                Some(SocketQueues {
                    unacked: 0,
                    unread: 5000
                })
            );
            assert_eq!(
                find_socket(table, client, server),
                Some(SocketQueues {
                    unacked: 16,
                    unread: 0
                })
            );
            assert_eq!(find_socket(table, client, client), None);
        }
        let v6 = parse_proc_addr("00000000000000000000000001000000:1F90");
        if cfg!(target_endian = "little") {
            assert_eq!(v6, Some("[::1]:8080".parse().unwrap()));
        }
        assert_eq!(parse_proc_addr("zz:1F90"), None);
    }

    #[test]
    fn socket_queues_see_unread_bytes() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let (local, remote) = (server.local_addr().unwrap(), server.peer_addr().unwrap());
        assert_eq!(
            socket_queues(local, remote).unwrap().map(|q| q.unread),
            Some(0)
        );
        client.write_all(&[7; 100]).unwrap();
        // Loopback delivers at once, but poll rather than assume it.
        let until = Instant::now() + Duration::from_secs(10);
        while socket_queues(local, remote).unwrap().map(|q| q.unread) != Some(100) {
            assert!(Instant::now() < until, "100 unread bytes never showed");
            thread::sleep(Duration::from_millis(5));
        }
        let mut got = [0; 100];
        server.read_exact(&mut got).unwrap();
        assert_eq!(
            socket_queues(local, remote).unwrap().map(|q| q.unread),
            Some(0)
        );
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
